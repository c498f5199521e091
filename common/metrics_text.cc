#include "common/metrics_text.h"

#include <fmt/format.h>

#include <charconv>
#include <cmath>

namespace romulus::common {

bool MetricsText::valid_name(std::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
    const bool digit = c >= '0' && c <= '9';
    if (!alpha && !(digit && i > 0)) return false;
  }
  return true;
}

std::string MetricsText::escape_label_value(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (const char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string MetricsText::escape_help(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (const char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string MetricsText::format_value(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, v);  // shortest round-trip form
  return std::string(buf, r.ptr);
}

void MetricsText::family(std::string_view name, std::string_view type, std::string_view help) {
  if (!valid_name(name)) return;
  out_ += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, escape_help(help), name, type);
}

void MetricsText::sample(std::string_view name, double value, const Labels& labels) {
  if (!valid_name(name)) return;
  out_ += name;
  if (!labels.empty()) {
    out_ += '{';
    bool first = true;
    for (const auto& [k, v] : labels) {
      if (!valid_name(k) || k.find(':') != std::string::npos) continue;
      if (!first) out_ += ',';
      first = false;
      out_ += fmt::format("{}=\"{}\"", k, escape_label_value(v));
    }
    out_ += '}';
  }
  out_ += ' ';
  out_ += format_value(value);
  out_ += '\n';
}

void MetricsText::counter(std::string_view name, std::string_view help, double value) {
  family(name, "counter", help);
  sample(name, value);
}

void MetricsText::gauge(std::string_view name, std::string_view help, double value) {
  family(name, "gauge", help);
  sample(name, value);
}

void MetricsText::one_hot(std::string_view name, std::string_view help, std::string_view label,
                          const std::vector<std::string>& values, std::string_view current) {
  family(name, "gauge", help);
  for (const auto& v : values) {
    sample(name, v == current ? 1 : 0, {{std::string(label), v}});
  }
}

void MetricsText::histogram(std::string_view name, std::string_view help,
                            const Histogram::Snapshot& h) {
  family(name, "histogram", help);
  histogram_series(name, {}, h);
}

void MetricsText::histogram_series(std::string_view name, const Labels& labels,
                                   const Histogram::Snapshot& h) {
  const std::string bucket = fmt::format("{}_bucket", name);
  auto with = [&labels](std::string le) {
    Labels l = labels;
    l.emplace_back("le", std::move(le));
    return l;
  };
  for (size_t i = 0; i < h.bounds.size(); ++i) {
    sample(bucket, static_cast<double>(h.cumulative[i]), with(format_value(h.bounds[i])));
  }
  sample(bucket, static_cast<double>(h.count()), with("+Inf"));
  sample(fmt::format("{}_sum", name), h.sum_seconds, labels);
  sample(fmt::format("{}_count", name), static_cast<double>(h.count()), labels);
}

}  // namespace romulus::common
