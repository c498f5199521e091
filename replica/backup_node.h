// BackupNode: receives checkpoints, commits them atomically, watches the
// primary, and decides when to take over.
//
// Listens on --listen; serves one primary at a time (a second one is refused
// while the first is alive). Per connection: handshake (geometry must match:
// page size, word size, arena size), then the chunk stream is fed to a
// CheckpointReader whose sink is the ReplicaState; each verified consistent
// checkpoint is acknowledged with ACK(epoch). A stream that fails
// verification is ended with an ERROR message; the primary reconnects and
// resyncs.
//
// With a TLS identity (BackupConfig::tls) every connection first completes a
// mutual TLS 1.3 handshake: the primary's certificate must verify against
// --tls-ca (and carry --tls-peer-name). A refusal is one log line naming the
// peer and the reason; the connection closes before any protocol byte is
// read, so the image, the primary slot and the failure detector are untouched.
//
// Hostile peers: a connection that has not completed its handshake (TLS and
// Hello) within
// handshake_timeout() is closed; at most kMaxUnauthenticated such
// connections are held at once (more are closed at accept); running out of
// file descriptors pauses accepting for a moment instead of spinning. Each
// of these is logged once per burst.
//
// When to take over is the FailureDetector's verdict (replica/failure_detector.h);
// the role's state is a BackupState (replica/backup_state.h). A backup whose
// image never completed a full sync does not take over; it says so and
// waits. `romulus failover` takes over at once (same rule).
//
// Threading: run() drives everything on the calling thread and returns when
// it is time to take over, or on stop. handle_control() and request_stop()
// may be called from any thread (the control socket's, a signal watcher's).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/endpoint.h"
#include "common/shared_memory.h"
#include "common/status.h"
#include "common/tls.h"
#include "protocol/pair_defaults.h"
#include "replica/backup_metrics.h"
#include "replica/backup_state.h"
#include "storage/durable_settings.h"

namespace romulus::replica {

struct BackupConfig {
  common::Endpoint listen;
  uint64_t memory_bytes = protocol::kDefaultArenaBytes;
  std::chrono::milliseconds heartbeat = protocol::kDefaultHeartbeat;
  std::chrono::milliseconds failover_timeout = protocol::kDefaultFailoverTimeout;
  // Mutual TLS with this identity; nullptr: plaintext.
  std::shared_ptr<common::TlsIdentity> tls;
  // The durable image (--data-dir, --durable): every committed checkpoint is
  // also written there; under `sync` it is acknowledged only once on disk.
  // At start an image found there is read back, verified and committed.
  storage::DurableSettings durable;
  // Names the pair in the data directory (the witness's --pair, or empty):
  // a directory written for another pair is refused.
  std::string pair_id;
  // --vm: the guest is a virtual machine; every checkpoint carries its device
  // state, handed over with the image at activation.
  bool vm = false;
};

// What run() hands over when the backup takes over.
struct Activation {
  common::SharedMemory image;         // the committed image: the guest's arena from now on
  std::vector<uint8_t> device_state;  // a VM's, committed with the image (else empty)
  uint64_t epoch = 0;                 // the epoch it holds
  uint64_t session_id = 0;
  std::string reason;  // "primary lost: connection reset", "manual failover", ...
  std::chrono::steady_clock::time_point last_contact;
};

// What a backup must win before it takes over (docs/design.md, "Ownership",
// rule 3). Implemented over the witness by replica/takeover.cc; without
// --witness there is none and the backup takes over on its own judgement.
// Called on the backup's thread.
class TakeoverGate {
 public:
  enum class Verdict {
    kWaiting,     // not yet (the old owner's lease runs, or the witness is unreachable)
    kWon,         // this node owns the pair: take over
    kOtherOwner,  // another node owns the pair: do not take over; follow it
  };
  virtual ~TakeoverGate() = default;
  // The primary is judged lost: start trying to own the pair. `prompt`: its
  // process left evidence that it is gone (its kernel closed the link, or it
  // handed the pair over), so its lease is about to be given up: look often.
  virtual void request(bool prompt) = 0;
  // Called (from any thread) whenever poll() may answer differently; the
  // node polls at once instead of at its next tick. nullptr: nobody to wake.
  virtual void set_wake(std::function<void()> wake) = 0;
  // Where that stands; `detail` says why, for the log.
  virtual Verdict poll(std::string* detail) = 0;
  // The primary is back (a stream was accepted): stop trying.
  virtual void cancel() = 0;
  // For `status --json` and the metrics: ownership, from one look at the witness.
  virtual WitnessReport report() const = 0;

  // The pair's durable-image record (--data-dir; docs/design.md, "The
  // durable image"): which node the witness names as holding the newest
  // durable image, and from which base epoch.
  struct ImageHolder {
    std::string node;
    uint64_t epoch = 0;
    bool this_node = false;
    std::string key;  // where the witness keeps it, for messages
  };
  // One read at the witness; nullopt: there is no record. Any thread.
  virtual Result<std::optional<ImageHolder>> image_holder() = 0;
  // Records this node as the holder from base `epoch` on, in the background,
  // retrying until the witness takes it (a later call replaces a pending
  // one); `done` is then called once, on another thread. Any thread.
  virtual void record_image(uint64_t epoch, std::function<void()> done) = 0;
  // Drops a pending record_image() and its `done`, which is never called
  // after this returns (the node that asked is going away).
  virtual void forget_image_record() = 0;
};

// Why `romulus failover` may not start the guest from this node's image read
// back from its --data-dir (at `own_epoch`), given the witness's image
// record: empty if it may. Refused while the record names the other node
// (its image has what this one lacks) or cannot be read.
std::string refuse_older_image(const Result<std::optional<TakeoverGate::ImageHolder>>& holder,
                               uint64_t own_epoch);

class BackupNode {
 public:
  // Connections that have not completed a handshake, held at once.
  static constexpr size_t kMaxUnauthenticated = 16;
  // How long accepting pauses when the process is out of file descriptors.
  static constexpr std::chrono::milliseconds kAcceptBackoff{100};

  BackupNode(BackupConfig config, std::function<void(const std::string&)> log);
  ~BackupNode();

  // Ownership to win before taking over (nullptr: none). Call before run().
  void set_takeover_gate(TakeoverGate* gate);
  // Hears every change of state (on the node's thread). Call before run().
  void set_on_state_change(std::function<void(BackupState)> fn);

  // Serves until the primary is lost (returns the Activation), or until
  // request_stop() (returns aborted "stopped").
  Result<Activation> run();
  void request_stop();

  // A control-socket request ("status", "status --json", "failover",
  // "snapshot PATH"): one JSON reply line. Waits briefly for the node's own
  // thread to answer (a snapshot: until its file is written).
  std::string handle_control(const std::string& request);
  // The node's figures (status --json, --metrics), taken on its own thread;
  // unavailable if it does not answer within 2 s (busy or stopping).
  Result<BackupMetrics> metrics();

  struct Impl;  // defined in backup_node.cc (public so its sessions can name it)

 private:
  // "snapshot PATH": the committed image, copied on the node's thread, written
  // to PATH (storage/snapshot_file.h) on the caller's.
  std::string take_snapshot(const std::string& path);

  std::unique_ptr<Impl> impl_;
};

}  // namespace romulus::replica
