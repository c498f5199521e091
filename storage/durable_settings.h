// DurableSettings: what an operator sets for a node's durable image
// (--data-dir, --durable, --force-data-dir), for both roles.
//
// Defined once here, below checkpoint/ and replica/, which both read it: the
// backup keeps every committed checkpoint in the directory; a primary reads
// its own image there at start and compares it with its backup's before it
// serves (docs/design.md, "The durable image"). Plain values, no behaviour.
#pragma once

#include <cstdint>
#include <string>

#include "common/enum_names.h"

namespace romulus::storage {

// When the backup acknowledges a checkpoint.
enum class DurableMode : uint8_t {
  kSync,   // once it is on disk (fdatasync): an acknowledged reply survives losing both nodes
  kAsync,  // once it is verified in memory, as without a data directory; written behind
};
inline constexpr EnumName<DurableMode> kDurableModeNames[] = {{DurableMode::kSync, "sync"},
                                                              {DurableMode::kAsync, "async"}};

struct DurableSettings {
  std::string data_dir;                   // --data-dir DIR; empty: memory only
  DurableMode mode = DurableMode::kSync;  // --durable
  // --force-data-dir: start from what verifies of a damaged image (or over
  // one of another pair), dropping the rest, instead of refusing.
  bool force = false;
  // --durable async: a lag above this many epochs is a warning in the log.
  uint64_t lag_warning_epochs = 100;
  // --disk-backlog: bytes of checkpoint pages waiting for the disk above which
  // the backup stops reading its primary's stream until half of them are
  // written (a disk slower than the stream holds the primary back instead of
  // filling this node's memory).
  uint64_t max_backlog_bytes = uint64_t{256} << 20;

  bool enabled() const { return !data_dir.empty(); }
};

}  // namespace romulus::storage
