// The Prometheus text builder: HELP and TYPE once per family, escaped label
// values and help text, histograms with cumulative buckets, +Inf, _sum, _count.
#include "common/metrics_text.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

namespace romulus::common::metrics_text_test {
namespace {

TEST(MetricsText, ACounterHasHelpTypeAndValue) {
  MetricsText t;
  t.counter("romulus_checkpoints_total", "Consistent checkpoints sent.", 42);
  EXPECT_EQ(t.text(),
            "# HELP romulus_checkpoints_total Consistent checkpoints sent.\n"
            "# TYPE romulus_checkpoints_total counter\n"
            "romulus_checkpoints_total 42\n");
}

TEST(MetricsText, LabelValuesEscapeBackslashQuoteAndNewline) {
  MetricsText t;
  t.family("romulus_x", "gauge", "x");
  t.sample("romulus_x", 1, {{"peer", "a\\b\"c\nd"}});
  EXPECT_NE(t.text().find(R"(romulus_x{peer="a\\b\"c\nd"} 1)"), std::string::npos) << t.text();
}

TEST(MetricsText, HelpTextEscapesBackslashAndNewline) {
  MetricsText t;
  t.gauge("romulus_x", "one\\two\nthree", 0);
  EXPECT_NE(t.text().find("# HELP romulus_x one\\\\two\\nthree\n"), std::string::npos) << t.text();
}

TEST(MetricsText, AnInvalidNameIsDroppedNotEmitted) {
  MetricsText t;
  t.gauge("romulus-bad name", "x", 1);
  t.gauge("1romulus", "x", 1);
  EXPECT_EQ(t.text(), "");
  EXPECT_TRUE(MetricsText::valid_name("romulus_a:b_1"));
}

TEST(MetricsText, ValuesRoundTripAndInfinitiesAreSpelledAsPrometheusReadsThem) {
  EXPECT_EQ(MetricsText::format_value(0.1), "0.1");
  EXPECT_EQ(MetricsText::format_value(12345678901234.0), "12345678901234");
  EXPECT_EQ(MetricsText::format_value(1.0 / 0.0), "+Inf");
  EXPECT_EQ(MetricsText::format_value(-1.0 / 0.0), "-Inf");
  EXPECT_EQ(MetricsText::format_value(0.0 / 0.0), "NaN");
}

TEST(MetricsText, OneHotGaugeHasOneSeriesPerValueAndOneForTheCurrent) {
  MetricsText t;
  t.one_hot("romulus_state", "State.", "state", {"syncing", "protected"}, "protected");
  EXPECT_EQ(t.text(),
            "# HELP romulus_state State.\n"
            "# TYPE romulus_state gauge\n"
            "romulus_state{state=\"syncing\"} 0\n"
            "romulus_state{state=\"protected\"} 1\n");
}

TEST(MetricsText, HistogramBucketsAreCumulativeWithInfSumAndCount) {
  Histogram h({0.001, 0.01});
  h.observe(0.0005);
  h.observe(0.001);  // on the bound: le="0.001"
  h.observe(0.005);
  h.observe(3);
  MetricsText t;
  t.histogram("romulus_pause_seconds", "Pause.", h.snapshot());
  EXPECT_EQ(t.text(),
            "# HELP romulus_pause_seconds Pause.\n"
            "# TYPE romulus_pause_seconds histogram\n"
            "romulus_pause_seconds_bucket{le=\"0.001\"} 2\n"
            "romulus_pause_seconds_bucket{le=\"0.01\"} 3\n"
            "romulus_pause_seconds_bucket{le=\"+Inf\"} 4\n"
            "romulus_pause_seconds_sum 3.0065\n"
            "romulus_pause_seconds_count 4\n");
}

TEST(Histogram, ConcurrentObserversLoseNoSample) {
  Histogram h;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&h] {
      for (int i = 0; i < 10000; ++i) h.observe(0.002);
    });
  }
  for (auto& t : threads) t.join();
  const auto s = h.snapshot();
  EXPECT_EQ(s.count(), 40000u);
  EXPECT_NEAR(s.sum_seconds, 80.0, 1e-6);
}

}  // namespace
}  // namespace romulus::common::metrics_text_test
