// The backup's metrics and status members, written from one typed BackupMetrics.
#include "replica/backup_metrics.h"

#include <gtest/gtest.h>

namespace romulus::replica::backup_metrics_test {
namespace {

using namespace std::chrono_literals;

std::string render(const BackupMetrics& m) {
  common::MetricsText t;
  render_backup_metrics(m, t);
  return t.text();
}

TEST(BackupMetrics, RendersTheStatusFigures) {
  BackupMetrics m;
  m.state = BackupState::kProtecting;
  m.peer = "1.2.3.4:5";
  m.last_committed_epoch = 42;
  m.image_consistent = true;
  m.checkpoints_committed = 40;
  m.since_contact = 20ms;
  m.failover_timeout = 500ms;
  const auto text = render(m);
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
  BackupMetrics m;
  m.state = BackupState::kNoImage;
  const auto text = render(m);
  EXPECT_EQ(text.find("romulus_seconds_since_contact"), std::string::npos);
}

TEST(BackupMetrics, WitnessFiguresWhenThereIsOne) {
  BackupMetrics m;
  m.state = BackupState::kProtecting;
  m.witness = WitnessReport{false, 0, boost::json::object{{"state", "follower"}}};
  const auto text = render(m);
  EXPECT_NE(text.find("romulus_owner 0\n"), std::string::npos) << text;
  EXPECT_NE(text.find("romulus_lease_remaining_seconds 0\n"), std::string::npos);
}

TEST(BackupStatus, WritesEveryMemberInItsOrderWithItsJsonType) {
  BackupMetrics m;
  m.state = BackupState::kPrimarySilent;
  m.last_peer = "1.2.3.4:5";
  m.listen = "127.0.0.1:7000";
  m.last_committed_epoch = 42;
  m.image_consistent = true;
  m.checkpoints_committed = 40;
  m.precopy_rounds_applied = 3;
  m.pages_applied = 1000;
  m.streams = 2;
  m.connections_in_handshake = 1;
  m.failover_timeout = 500ms;
  m.since_contact = 120ms;
  m.detector.verdict = FailureDetector::Verdict::kWaiting;
  m.detector.remaining = 380ms;
  m.detector.reason = "connection reset";
  boost::json::object o;
  write_backup_status(m, o);
  EXPECT_EQ(boost::json::serialize(o),
            R"j({"role":"backup","state":"primary_silent","peer":"","last_peer":"1.2.3.4:5",)j"
            R"j("listen":"127.0.0.1:7000","last_committed_epoch":42,"image_consistent":true,)j"
            R"j("checkpoints_committed":40,"precopy_rounds_applied":3,"pages_applied":1000,)j"
            R"j("streams":2,"connections_in_handshake":1,"failover_timeout_ms":500,)j"
            R"j("ms_since_contact":120,"detector":{"verdict":"waiting","remaining_ms":380,)j"
            R"j("reason":"connection reset"},"witness":null,"durable":null})j");
}

TEST(BackupStatus, TheDurableImageHasItsObjectAndItsMetrics) {
  BackupMetrics m;
  m.durable = DurableReport{.data_dir = "/var/lib/romulus/kv",
                            .mode = "async",
                            .durable_epoch = 90,
                            .submitted_epoch = 93,
                            .lag_epochs = 3,
                            .lag = 12ms,
                            .log_bytes = 4096,
                            .bytes_written = 1 << 20,
                            .syncs = 7,
                            .compactions = 1,
                            .error = ""};
  boost::json::object o;
  write_backup_status(m, o);
  EXPECT_EQ(boost::json::serialize(o.at("durable")),
            R"j({"data_dir":"/var/lib/romulus/kv","mode":"async","durable_epoch":90,)j"
            R"j("submitted_epoch":93,"lag_epochs":3,"lag_ms":12,"log_bytes":4096,)j"
            R"j("bytes_written":1048576,"syncs":7,"compactions":1,"error":""})j");
  const auto text = render(m);
  for (const char* line : {"romulus_durable_epoch 90\n", "romulus_durable_lag_epochs 3\n",
                           "romulus_durable_lag_seconds 0.012\n", "romulus_durable_failed 0\n",
                           "romulus_durable_syncs_total 7\n"}) {
    EXPECT_NE(text.find(line), std::string::npos) << line << text;
  }
}

TEST(BackupStatus, BeforeAnyContactSaysMinusOneAndTheWitnessObjectIsPassedOn) {
  BackupMetrics m;
  m.witness = WitnessReport{true, 900, boost::json::object{{"state", "owner"}}};
  boost::json::object o;
  write_backup_status(m, o);
  EXPECT_EQ(o.at("ms_since_contact").as_int64(), -1);
  EXPECT_EQ(o.at("detector").as_object().count("reason"), 0u);
  EXPECT_EQ(boost::json::serialize(o.at("witness")), R"j({"state":"owner"})j");
}

}  // namespace
}  // namespace romulus::replica::backup_metrics_test
