// The backup's metrics, rendered from its `status --json` object.
#include "replica/backup_metrics.h"

#include <gtest/gtest.h>

namespace romulus::replica {
namespace {

std::string render(const char* status_json) {
  common::MetricsText t;
  render_backup_metrics(boost::json::parse(status_json).as_object(), t);
  return t.text();
}

TEST(BackupMetrics, RendersTheStatusFigures) {
  const auto text = render(R"({"ok":true,"role":"backup","state":"protecting","peer":"1.2.3.4:5",
      "last_committed_epoch":42,"image_consistent":true,"checkpoints_committed":40,
      "ms_since_contact":20,"failover_timeout_ms":500,"witness":null})");
  EXPECT_NE(text.find("romulus_state{state=\"protecting\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("romulus_state{state=\"no_image\"} 0\n"), std::string::npos);
  EXPECT_NE(text.find("romulus_last_committed_epoch 42\n"), std::string::npos);
  EXPECT_NE(text.find("romulus_image_consistent 1\n"), std::string::npos);
  EXPECT_NE(text.find("romulus_checkpoints_committed_total 40\n"), std::string::npos);
  EXPECT_NE(text.find("romulus_primary_connected 1\n"), std::string::npos);
  EXPECT_NE(text.find("romulus_seconds_since_contact 0.02\n"), std::string::npos);
  EXPECT_EQ(text.find("romulus_owner"), std::string::npos);  // no witness
}

TEST(BackupMetrics, BeforeAnyContactTheSinceContactGaugeIsAbsent) {
  const auto text = render(R"({"state":"no_image","ms_since_contact":-1})");
  EXPECT_EQ(text.find("romulus_seconds_since_contact"), std::string::npos);
}

TEST(BackupMetrics, WitnessFiguresWhenThereIsOne) {
  const auto text =
      render(R"({"state":"protecting","witness":{"state":"follower","remaining_ms":0}})");
  EXPECT_NE(text.find("romulus_owner 0\n"), std::string::npos) << text;
  EXPECT_NE(text.find("romulus_lease_remaining_seconds 0\n"), std::string::npos);
}

}  // namespace
}  // namespace romulus::replica
