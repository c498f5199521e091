// WitnessLink: this process's side of the witness (docs/design.md,
// "Ownership: the witness"), as its roles see it.
//
// It owns the LeaseKeeper (witness/lease_keeper.h) for the process's whole
// life, across role changes, and shows it to each role through the small
// interface that role knows: checkpoint::Ownership to a primary (may output
// leave, may the guest run, the lease's deadline; rules 1 and 2) and
// TakeoverGate to a backup (take over only by winning the key; rule 3). The
// keeper's change callback lands here and goes on to the attached primary:
// ownership_changed(), or demote() when another node owns the pair (rule 4).
//
// It also keeps the pair's "unprotected" record (/romulus/<pair>/unprotected,
// docs/design.md, "Unprotected output and the takeover"): written, only while
// the owner key is under this node's lease, before a primary releases output
// that no backup holds; cleared once a backup is in sync again. Every acquire
// of this node is guarded by it, so no backup takes over from an image older
// than what was served.
//
// It also keeps the pair's durable-image record (/romulus/<pair>/image,
// witness::ImageRecord; docs/design.md, "The durable image"): read by a
// node with --data-dir before it starts from its own disk or takes over from
// it by hand, and written (TakeoverGate::record_image) on the same thread as
// the "unprotected" record, retried until the witness takes it.
//
// It also starts the node's lease guard (witness/lease_guard.h: `romulus
// lease-guard`, when WitnessSettings::guard_program is set) and tells it
// every lease the keeper holds, so that if this process dies its lease is
// given up at once instead of expiring; a clean end gives the lease up here
// (give_up()) and tells the guard to exit.
//
// Threads: start(), keeper() and attach() on the main thread (start() once,
// before any role runs). The checkpoint::Ownership methods from the primary's
// threads (may_release() reads atomics only, on the common path); the
// TakeoverGate methods on the backup's thread; the change callback on the
// keeper's thread. The record is cleared on a thread of its own, started by
// start() and joined by the destructor.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "checkpoint/primary.h"
#include "common/status.h"
#include "common/tls.h"
#include "replica/backup_node.h"
#include "replica/takeover.h"
#include "witness/etcd_client.h"
#include "witness/lease_guard.h"
#include "witness/lease_keeper.h"

namespace romulus::replica {

class WitnessLink final : public checkpoint::Ownership, public TakeoverGate {
 public:
  using Clock = std::chrono::steady_clock;

  // After fencing, acknowledged output may leave again only once the keeper
  // has had time to ask the witness at least once more (its calls are bounded
  // by 500 ms): if the lease were gone there, the keeper would have left
  // kFenced by then. docs/design.md, "Ownership", rule 2.
  static constexpr std::chrono::milliseconds kFencedAckGrace{1000};
  // How often a waiting backup looks up the "unprotected" record, at most.
  static constexpr std::chrono::milliseconds kMarkerLookEvery{500};
  // How long the record's thread waits before it tries to clear it again.
  static constexpr std::chrono::seconds kMarkerClearRetry{1};

  // `settings.node_id` must be set; `replication` is this node's own address
  // (stored in the key; empty for a primary without --listen).
  WitnessLink(const WitnessSettings& settings, std::string replication,
              std::function<void(const std::string&)> log);
  ~WitnessLink() override;
  WitnessLink(const WitnessLink&) = delete;
  WitnessLink& operator=(const WitnessLink&) = delete;

  // Opens the witness (etcds://: loads the TLS files first), starts the
  // record's thread and the keeper; an unreachable witness is one error line.
  Status start();
  witness::LeaseKeeper& keeper() { return *keeper_; }
  // The identity shown to etcds:// (nullptr for etcd://), for LinkSecurity
  // to reload with the link's.
  std::shared_ptr<common::TlsIdentity> tls() const { return tls_; }

  // Who hears about ownership changes: the running primary (nullptr: none).
  void attach(checkpoint::PrimaryNode* primary);

  // ---- checkpoint::Ownership (the primary)
  bool may_release(Clock::time_point now, bool acked) const override;
  bool may_run(Clock::time_point now) const override;
  std::optional<Clock::time_point> deadline() const override;
  std::string why_not() const override;
  boost::json::object status(Clock::time_point now) const override;
  Status record_unprotected() override;
  void record_protected() override;
  Status record_image(uint64_t base_epoch) override;
  Status give_up() override;

  // ---- TakeoverGate (the backup)
  void request(bool prompt) override;
  void set_wake(std::function<void()> wake) override;
  Verdict poll(std::string* detail) override;
  void cancel() override;
  WitnessReport report() const override;
  Result<std::optional<ImageHolder>> image_holder() override;
  void record_image(uint64_t epoch, std::function<void()> done) override;
  void forget_image_record() override;

 private:
  // The records' thread: clears this node's "unprotected" record once a
  // backup is in sync, and writes the image record asked for, each retried
  // until the witness answers. Ordered with record_unprotected() by marker_mu_.
  void records_loop();
  // One attempt each (marker_mu_ held); false if the witness did not answer.
  bool clear_marker();
  bool write_image_record();
  // Writes the image record naming this node (marker_mu_ held) and logs it.
  Status put_image_record(uint64_t epoch);
  // Whether another node's "unprotected" record stands (looked up at most
  // every kMarkerLookEvery).
  bool blocked_by_marker();
  void on_change(const witness::OwnershipChange& c);
  // Starts `romulus lease-guard` when settings_.guard_program is set; a guard
  // that cannot start is one warning (the lease then expires by itself).
  void start_guard();

  WitnessSettings settings_;
  std::string replication_;
  std::function<void(const std::string&)> log_;
  std::optional<witness::LeaseKeeper> keeper_;
  std::atomic<int64_t> fenced_since_{0};  // steady_clock ticks; 0: not fenced
  Clock::time_point next_marker_look_{};
  bool last_marker_blocks_ = false;
  std::atomic<bool> takeover_requested_{false};
  std::mutex mu_;
  checkpoint::PrimaryNode* primary_ = nullptr;  // guarded by mu_
  std::function<void()> wake_;                  // guarded by mu_
  // The lease guard, told each lease on the keeper's thread (nullptr: none).
  std::unique_ptr<witness::LeaseGuardLink> guard_;

  // The "unprotected" record (its own client: the keeper's is its thread's).
  std::string marker_key_, owner_key_;
  std::optional<witness::etcd::EtcdClient> marker_client_;
  std::shared_ptr<common::TlsIdentity> tls_;  // etcds:// only
  std::mutex marker_mu_;
  std::condition_variable marker_cv_;
  bool marked_ = false, clear_pending_ = false, marker_stop_ = false;  // guarded by marker_mu_
  // The image record to write (epoch 0: none) and whom to tell. marker_mu_.
  std::string image_key_;
  uint64_t image_pending_ = 0;
  std::function<void()> image_done_;
  bool image_failure_logged_ = false;
  std::thread marker_thread_;
};

}  // namespace romulus::replica
