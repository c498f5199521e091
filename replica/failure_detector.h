// FailureDetector: when does the backup judge its primary lost?
//
// Pure: no sockets, no clocks, no threads. The backup's event loop reports
// what happened on the replication connection, with the time (`now`), and
// asks for a verdict on every tick. A fake clock drives it in tests.
//
// What counts:
//   - Only an *accepted stream* (a connection whose handshake the backup
//     accepted) is contact with a primary. A connection that never completes
//     its handshake changes nothing here, above all it does not restart the
//     wait for a lost primary to reconnect.
//   - A live stream with no bytes for longer than the failover timeout:
//     lost ("silent").
//   - GOODBYE: the primary stopped on purpose. Never lost afterwards (whether
//     or not it then closes the socket), until a new stream starts.
//   - DROPPED: the primary gave up on this backup and runs on without it, so
//     this image falls behind: never lost afterwards either (taking over
//     would resurrect a stale state), until a new stream starts.
//   - HANDOVER: the primary stopped on purpose and hands the pair to this
//     backup: lost at once (take over), with evidence that it is gone.
//   - The connection closed or reset without GOODBYE or DROPPED: lost at once
//     (a crashed primary's kernel closes its sockets), with evidence that the
//     primary's process is gone (a FIN or a reset came from its host; a
//     silent, paused or cut-off primary sends neither). Any other socket
//     error: lost at once, without that evidence.
//
// The evidence (Judgement::exited) changes only how often a backup with a
// witness looks for the old owner's lease to be given up (witness/
// ownership.h, kPromptRetry); never whether it may take over.
//   - The backup ended the stream itself (it refused a checkpoint): the
//     primary is alive and resyncs; lost only if no new stream starts within
//     the failover timeout.
//
// Not thread-safe: one thread (the backup's event loop) owns it.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace romulus::replica {

class FailureDetector {
 public:
  using Clock = std::chrono::steady_clock;

  enum class StreamEnd {
    kClosed,         // EOF without GOODBYE or DROPPED (a FIN from the primary's host)
    kReset,          // the primary's host reset the connection (an RST)
    kSocketError,    // any other socket error (a timeout, an unreachable host)
    kEndedByBackup,  // this backup refused the stream (it sent ERROR and closed)
    kSilent,         // this backup closed it after the failover timeout of silence
    kGoodbye,        // ended after GOODBYE
    kDropped,        // ended after DROPPED
    kHandover,       // ended after HANDOVER
  };

  enum class Verdict {
    kNoPrimary,  // no stream yet (or the last one ended with GOODBYE/DROPPED)
    kAlive,      // a live stream with recent contact
    kWaiting,    // no live stream; waiting for the primary to reconnect
    kStopped,    // GOODBYE: stopped on purpose
    kDroppedUs,  // DROPPED: the primary goes on without this backup
    kLost,       // judge the primary lost
  };

  struct Judgement {
    Verdict verdict = Verdict::kNoPrimary;
    std::string reason;                      // for kLost / kWaiting: why, for the log
    std::chrono::milliseconds remaining{0};  // kWaiting / kAlive: until judged lost
    // kLost: the primary's process left evidence that it is gone (a FIN or
    // an RST from its host, or HANDOVER), not only silence.
    bool exited = false;
  };

  explicit FailureDetector(std::chrono::milliseconds failover_timeout);

  void on_stream_started(Clock::time_point now);
  void on_contact(Clock::time_point now);  // bytes of an accepted stream
  void on_goodbye(Clock::time_point now);  // the socket may stay open after it
  void on_dropped(Clock::time_point now);
  void on_handover(Clock::time_point now);  // judged lost at once, with evidence
  void on_stream_ended(StreamEnd how, Clock::time_point now, std::string detail = {});

  Judgement judge(Clock::time_point now) const;

  bool streaming() const { return phase_ == Phase::kStreaming; }
  Clock::time_point last_contact() const { return last_contact_; }
  std::chrono::milliseconds failover_timeout() const { return timeout_; }

 private:
  enum class Phase { kIdle, kStreaming, kGone, kAwaitReconnect, kStopped, kDropped };

  std::chrono::milliseconds timeout_;
  Phase phase_ = Phase::kIdle;
  bool said_goodbye_ = false, said_dropped_ = false;
  Clock::time_point last_contact_{};
  Clock::time_point ended_at_{};
  std::string gone_reason_;
  bool gone_exited_ = false;  // kGone: with evidence that the process is gone
};

const char* to_string(FailureDetector::Verdict v);

}  // namespace romulus::replica
