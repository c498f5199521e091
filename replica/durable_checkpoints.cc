#include "replica/durable_checkpoints.h"

#include <fmt/format.h>

#include <algorithm>

#include "protocol/page.h"

namespace romulus::replica {

CheckpointPages copy_unit_pages(const ReplicaState& replica, uint64_t epoch) {
  const auto pfns = replica.unit_pfns();
  const uint8_t* pages = replica.unit_pages();
  return CheckpointPages{epoch, std::vector<uint64_t>(pfns.begin(), pfns.end()),
                         std::vector<uint8_t>(pages, pages + pfns.size() * protocol::kPageSize)};
}

std::string disk_failure_text(const storage::DurableSettings& durable, const Status& why,
                              uint64_t durable_epoch) {
  return fmt::format(
      "writing the durable image in --data-dir {} failed: {}; what is already on disk stays "
      "(epoch {})",
      durable.data_dir, why.message(), durable_epoch);
}

void LagWarning::note(uint64_t epoch, uint64_t durable_epoch,
                      const storage::DurableSettings& durable,
                      const std::function<void(const std::string&)>& log) {
  const uint64_t lag = epoch - std::min(epoch, durable_epoch);
  if (lag > durable.lag_warning_epochs && !warned_) {
    log(
        fmt::format("WARNING: the durable image lags {} checkpoints behind memory (--durable "
                    "async): losing both nodes now would lose them; is the disk slow?",
                    lag));
    warned_ = true;
  } else if (lag <= durable.lag_warning_epochs / 2) {
    warned_ = false;
  }
}

}  // namespace romulus::replica
