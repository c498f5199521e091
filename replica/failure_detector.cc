#include "replica/failure_detector.h"

#include <fmt/format.h>

namespace romulus::replica {
using std::chrono::duration_cast;
using std::chrono::milliseconds;

FailureDetector::FailureDetector(milliseconds failover_timeout) : timeout_(failover_timeout) {}

void FailureDetector::on_stream_started(Clock::time_point now) {
  phase_ = Phase::kStreaming;
  said_goodbye_ = said_dropped_ = false;
  last_contact_ = now;
  gone_reason_.clear();
  gone_exited_ = false;
}

void FailureDetector::on_contact(Clock::time_point now) {
  if (phase_ == Phase::kStreaming) last_contact_ = now;
}

void FailureDetector::on_goodbye(Clock::time_point now) {
  if (phase_ != Phase::kStreaming) return;
  said_goodbye_ = true;
  last_contact_ = now;
  phase_ = Phase::kStopped;  // whether or not the socket closes next
}

void FailureDetector::on_dropped(Clock::time_point now) {
  if (phase_ != Phase::kStreaming) return;
  said_dropped_ = true;
  last_contact_ = now;
  phase_ = Phase::kDropped;
}

void FailureDetector::on_handover(Clock::time_point now) {
  if (phase_ != Phase::kStreaming) return;
  last_contact_ = now;
  ended_at_ = now;
  phase_ = Phase::kGone;
  gone_reason_ = "the primary stopped and handed the pair over (HANDOVER)";
  gone_exited_ = true;
}

void FailureDetector::on_stream_ended(StreamEnd how, Clock::time_point now, std::string detail) {
  if (phase_ != Phase::kStreaming) return;  // after GOODBYE/DROPPED the end changes nothing
  ended_at_ = now;
  const std::string suffix = detail.empty() ? "" : fmt::format(" ({})", detail);
  switch (how) {
    case StreamEnd::kGoodbye:
      phase_ = Phase::kStopped;
      return;
    case StreamEnd::kDropped:
      phase_ = Phase::kDropped;
      return;
    case StreamEnd::kHandover:  // on_handover() came first; this is its socket closing
      phase_ = Phase::kGone;
      gone_reason_ = "the primary stopped and handed the pair over (HANDOVER)";
      gone_exited_ = true;
      return;
    case StreamEnd::kClosed:
      phase_ = Phase::kGone;
      gone_reason_ = "connection closed without GOODBYE" + suffix;
      gone_exited_ = true;
      return;
    case StreamEnd::kReset:
      phase_ = Phase::kGone;
      gone_reason_ = "connection reset" + suffix;
      gone_exited_ = true;
      return;
    case StreamEnd::kSocketError:
      phase_ = Phase::kGone;
      gone_reason_ = "connection failed" + suffix;
      return;
    case StreamEnd::kSilent:
      phase_ = Phase::kGone;
      gone_exited_ = false;
      gone_reason_ =
          fmt::format("silent for {} ms", duration_cast<milliseconds>(now - last_contact_).count());
      return;
    case StreamEnd::kEndedByBackup:
      phase_ = Phase::kAwaitReconnect;
      gone_reason_ = "this backup ended the stream" + suffix;
      return;
  }
}

FailureDetector::Judgement FailureDetector::judge(Clock::time_point now) const {
  Judgement j;
  switch (phase_) {
    case Phase::kIdle:
      j.verdict = Verdict::kNoPrimary;
      return j;
    case Phase::kStopped:
      j.verdict = Verdict::kStopped;
      return j;
    case Phase::kDropped:
      j.verdict = Verdict::kDroppedUs;
      return j;
    case Phase::kGone:
      j.verdict = Verdict::kLost;
      j.reason = gone_reason_;
      j.exited = gone_exited_;
      return j;
    case Phase::kStreaming: {
      const auto silent = duration_cast<milliseconds>(now - last_contact_);
      if (silent > timeout_) {
        j.verdict = Verdict::kLost;
        j.reason = fmt::format("silent for {} ms", silent.count());
      } else {
        j.verdict = Verdict::kAlive;
        j.remaining = timeout_ - silent;
      }
      return j;
    }
    case Phase::kAwaitReconnect: {
      const auto waited = duration_cast<milliseconds>(now - ended_at_);
      if (waited > timeout_) {
        j.verdict = Verdict::kLost;
        j.reason = fmt::format("{}, and it did not reconnect within {} ms", gone_reason_,
                               timeout_.count());
      } else {
        j.verdict = Verdict::kWaiting;
        j.reason = gone_reason_;
        j.remaining = timeout_ - waited;
      }
      return j;
    }
  }
  return j;
}

const char* to_string(FailureDetector::Verdict v) {
  switch (v) {
    case FailureDetector::Verdict::kNoPrimary:
      return "no_primary";
    case FailureDetector::Verdict::kAlive:
      return "alive";
    case FailureDetector::Verdict::kWaiting:
      return "waiting";
    case FailureDetector::Verdict::kStopped:
      return "stopped";
    case FailureDetector::Verdict::kDroppedUs:
      return "dropped_us";
    case FailureDetector::Verdict::kLost:
      return "lost";
  }
  return "?";
}

}  // namespace romulus::replica
