// MetricsText: builds the Prometheus text exposition format (version 0.0.4)
// that `--metrics` serves at /metrics.
//
//   # HELP romulus_checkpoints_total Consistent checkpoints sent to the backup.
//   # TYPE romulus_checkpoints_total counter
//   romulus_checkpoints_total 1234
//
// Each family is written once with its HELP and TYPE lines, then its samples;
// a family's samples must be added together (the format forbids a family
// split in two). Label values are escaped (backslash, double quote, newline),
// HELP text too (backslash, newline); names are the caller's constants and
// must match [a-zA-Z_:][a-zA-Z0-9_:]* (checked: a bad name is a bug, and is
// dropped rather than emitted). Values are printed so that Prometheus parses
// them back exactly (shortest round-trip form; +Inf, -Inf, NaN).
//
// A plain value: one thread builds it, then takes the text.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/histogram.h"

namespace romulus::common {

using Labels = std::vector<std::pair<std::string, std::string>>;

class MetricsText {
 public:
  // Starts a family: HELP and TYPE lines. `type`: counter, gauge, histogram.
  void family(std::string_view name, std::string_view type, std::string_view help);
  // One sample of the current family (or of its _bucket/_sum/_count series).
  void sample(std::string_view name, double value, const Labels& labels = {});

  // A family with one sample.
  void counter(std::string_view name, std::string_view help, double value);
  void gauge(std::string_view name, std::string_view help, double value);
  // A gauge family with one series per possible value of `label`, 1 for `current`.
  void one_hot(std::string_view name, std::string_view help, std::string_view label,
               const std::vector<std::string>& values, std::string_view current);
  // A histogram family: _bucket{le=...} (cumulative, +Inf last), _sum, _count.
  void histogram(std::string_view name, std::string_view help, const Histogram::Snapshot& h);
  // One series of a histogram family started with family(name, "histogram",
  // help): its buckets, sum and count, each with `labels` (a family with one
  // series per label value).
  void histogram_series(std::string_view name, const Labels& labels, const Histogram::Snapshot& h);

  // Appends text built elsewhere (another MetricsText's).
  void append(const std::string& text) { out_ += text; }
  const std::string& text() const { return out_; }

  static bool valid_name(std::string_view name);
  static std::string escape_label_value(std::string_view v);
  static std::string escape_help(std::string_view v);
  static std::string format_value(double v);

 private:
  std::string out_;
};

// The Content-Type of the text format.
inline constexpr std::string_view kMetricsContentType = "text/plain; version=0.0.4; charset=utf-8";

}  // namespace romulus::common
