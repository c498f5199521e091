// What both writers of a node's durable image share (docs/design.md, "The
// durable image"): the backup (backup_node.cc), which writes every checkpoint
// it commits, and the primary's local log (local_log.h), which writes the
// checkpoints it takes while no backup holds them. Both decode the stream into
// a ReplicaState and hand its verified consistent checkpoints to a
// storage::DurableWriter; these are the pieces of that hand-over that do not
// depend on who drives it.
//
// Plain functions and one small value type; not thread-safe (each is used on
// the thread that drives its ReplicaState).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/status.h"
#include "replica/replica_state.h"
#include "storage/durable_settings.h"

namespace romulus::replica {

// One consistent checkpoint's pages, copied out of the ReplicaState for the
// writer (which owns them from then on).
struct CheckpointPages {
  uint64_t epoch = 0;
  std::vector<uint64_t> pfns;  // strictly increasing
  std::vector<uint8_t> pages;  // pfns.size() pages
};

// The consistent checkpoint in flight of `replica` (verified, not yet
// applied: between ReplicaState::ends_unit() and on_end()), as `epoch`.
CheckpointPages copy_unit_pages(const ReplicaState& replica, uint64_t epoch);

// The line that says the writer of --data-dir failed, with the epoch that
// stays durable; the caller adds what it does about it.
std::string disk_failure_text(const storage::DurableSettings& durable, const Status& why,
                              uint64_t durable_epoch);

// `--durable async`: warns once when the image falls more than
// lag_warning_epochs behind memory, and again only after it caught up to half
// of that.
class LagWarning {
 public:
  void note(uint64_t epoch, uint64_t durable_epoch, const storage::DurableSettings& durable,
            const std::function<void(const std::string&)>& log);

 private:
  bool warned_ = false;
};

}  // namespace romulus::replica
