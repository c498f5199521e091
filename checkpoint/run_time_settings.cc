#include "checkpoint/run_time_settings.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>

#include "checkpoint/epoch_engine.h"
#include "checkpoint/primary.h"
#include "common/endpoint.h"
#include "common/enum_names.h"

namespace romulus::checkpoint {
namespace {

using common::duration_text;
using common::size_text;

// Each reader's error starts with the setting's name.
Status named(std::string_view name, const Status& st) {
  return Status::invalid_argument(fmt::format("{} {}", name, st.message()));
}

Status duration_in(const DurationRange& range, std::string_view text,
                   std::chrono::microseconds& out) {
  auto d = common::parse_duration(text);
  if (!d.is_ok()) return named(range.name, d.status());
  ROMULUS_RETURN_IF_ERROR(range.check(*d));
  out = *d;
  return Status::ok();
}

Status fraction_in(const FractionRange& range, std::string_view text, double& out) {
  // The whole text, as strtod reads it: "0.5", "5e-1"; not "", " 0.5" or "0.5x".
  const std::string s(text);
  char* end = nullptr;
  const double f = s.empty() || std::isspace(static_cast<unsigned char>(s[0]))
                       ? 0
                       : std::strtod(s.c_str(), &end);
  if (end == nullptr || end == s.c_str() || *end != '\0')
    return Status::invalid_argument(fmt::format("{} '{}' is not a number", range.name, text));
  ROMULUS_RETURN_IF_ERROR(range.check(f));
  out = f;
  return Status::ok();
}

Status size_in(std::string_view name, std::string_view text, size_t& out) {
  auto bytes = common::parse_size(text);
  if (!bytes.is_ok()) return named(name, bytes.status());
  out = static_cast<size_t>(*bytes);
  return Status::ok();
}

template <typename E, size_t N>
Status choice_in(std::string_view name, const EnumName<E> (&table)[N], std::string_view text,
                 E& out) {
  auto v = parse_enum(table, text);
  if (!v.is_ok()) return named(name, v.status());
  out = *v;
  return Status::ok();
}

// A duration in the log line: "25.0 ms".
std::string ms_text(std::chrono::microseconds d, int decimals) {
  return fmt::format("{:.{}f} ms", static_cast<double>(d.count()) / 1000.0, decimals);
}

constexpr RunTimeSetting kRunTimeSettings[] = {
    {
        .name = "interval",
        .value = "DURATION",
        .what = "the checkpoint interval",
        .parse = [](std::string_view t,
                    PrimaryConfig& c) { return duration_in(kIntervalRange, t, c.engine.interval); },
        .text = [](const PrimaryConfig& c) { return duration_text(c.engine.interval); },
        .logged = [](const PrimaryConfig& c) { return ms_text(c.engine.interval, 1); },
        .to_engine = [](EpochEngine& e, const EngineSettings& s) { e.set_interval(s.interval); },
        .duration = &kIntervalRange,
    },
    {
        .name = "commit",
        .value = "eager|interval",
        .what = "checkpoint as soon as output waits, or only every interval",
        .parse =
            [](std::string_view t, PrimaryConfig& c) {
              return choice_in("commit", kCommitModeNames, t, c.engine.commit);
            },
        .text =
            [](const PrimaryConfig& c) {
              return std::string(enum_name(kCommitModeNames, c.engine.commit));
            },
        .to_engine = [](EpochEngine& e, const EngineSettings& s) { e.set_commit(s.commit); },
    },
    {
        .name = "min-gap",
        .value = "DURATION",
        .what = "eager: shortest time from the end of a pause to the next while the guest is "
                "runnable; a guest waiting for input is checkpointed at once",
        .parse = [](std::string_view t,
                    PrimaryConfig& c) { return duration_in(kMinGapRange, t, c.engine.min_gap); },
        .text = [](const PrimaryConfig& c) { return duration_text(c.engine.min_gap); },
        .logged = [](const PrimaryConfig& c) { return ms_text(c.engine.min_gap, 2); },
        .to_engine = [](EpochEngine& e, const EngineSettings& s) { e.set_min_gap(s.min_gap); },
        .duration = &kMinGapRange,
    },
    {
        .name = "max-stopped-fraction",
        .value = "FRACTION",
        .what = "eager: widen the gap so that pauses (and the write faults tracking costs) "
                "keep a runnable guest at most this fraction of the time",
        .parse =
            [](std::string_view t, PrimaryConfig& c) {
              return fraction_in(kMaxStoppedFractionRange, t, c.engine.max_stopped_fraction);
            },
        .text =
            [](const PrimaryConfig& c) { return fmt::format("{}", c.engine.max_stopped_fraction); },
        .to_engine =
            [](EpochEngine& e, const EngineSettings& s) {
              e.set_max_stopped_fraction(s.max_stopped_fraction);
            },
        .fraction = &kMaxStoppedFractionRange,
    },
    {
        .name = "cache",
        .value = "SIZE",
        .what = "the sender page cache size",
        .parse = [](std::string_view t,
                    PrimaryConfig& c) { return size_in("cache", t, c.engine.cache_bytes); },
        .text = [](const PrimaryConfig& c) { return size_text(c.engine.cache_bytes); },
        .to_engine = [](EpochEngine& e,
                        const EngineSettings& s) { e.set_cache_bytes(s.cache_bytes); },
    },
    {
        .name = "codec",
        .value = "runskip|xbzrle|none",
        .what = "the page codec of the checkpoints",
        .parse =
            [](std::string_view t, PrimaryConfig& c) {
              return choice_in("codec", protocol::kCodecNames, t, c.engine.encode.codec);
            },
        .text =
            [](const PrimaryConfig& c) {
              return std::string(enum_name(protocol::kCodecNames, c.engine.encode.codec));
            },
        .to_engine = [](EpochEngine& e, const EngineSettings& s) { e.set_codec(s.encode.codec); },
    },
    {
        .name = "on-backup-loss",
        .value = "continue|stall",
        .what = "what the primary does without a backup",
        .parse =
            [](std::string_view t, PrimaryConfig& c) {
              return choice_in("on-backup-loss", kBackupLossNames, t, c.on_backup_loss);
            },
        .text =
            [](const PrimaryConfig& c) {
              return std::string(enum_name(kBackupLossNames, c.on_backup_loss));
            },
        .to_primary = [](PrimaryNode& p,
                         const PrimaryConfig& c) { p.set_on_backup_loss(c.on_backup_loss); },
    },
    {
        .name = "backup",
        .value = "ADDR:PORT",
        .what = "protect to another backup: the current one is dropped (it does not take over)",
        .parse = [](std::string_view t, PrimaryConfig& c) -> Status {
          auto ep = common::Endpoint::parse(t);
          if (!ep.is_ok()) return named("backup", ep.status());
          c.backup = *ep;
          return Status::ok();
        },
        .text =
            [](const PrimaryConfig& c) {
              return c.backup ? c.backup->to_string() : std::string("null");
            },
        .to_primary = [](PrimaryNode& p, const PrimaryConfig& c) { p.set_backup(*c.backup); },
        .startup = false,
    },
    {
        .name = "tls",
        .value = "reload",
        .what = "either role: re-read the TLS files (--tls-*, --witness-*) for new connections; as "
                "SIGHUP does",
        .startup = false,
        .process = true,
    },
};

}  // namespace

std::span<const RunTimeSetting> run_time_settings() { return kRunTimeSettings; }

const RunTimeSetting* find_run_time_setting(std::string_view name) {
  for (const auto& s : kRunTimeSettings) {
    if (s.name == name) return &s;
  }
  return nullptr;
}

std::string describe(const RunTimeSetting& s) {
  if (s.duration != nullptr)
    return fmt::format("{} ({} to {})", s.what, duration_text(s.duration->min),
                       duration_text(s.duration->max));
  if (s.fraction != nullptr)
    return fmt::format("{} ({} to {})", s.what, s.fraction->min, s.fraction->max);
  return std::string(s.what);
}

std::string primary_setting_names() {
  std::string out;
  for (const auto& s : kRunTimeSettings) {
    if (s.process) continue;
    if (!out.empty()) out += ", ";
    out += s.name;
  }
  return out;
}

namespace {

bool bare_number(std::string_view text) {
  return !text.empty() && std::all_of(text.begin(), text.end(), [](char c) {
    return std::isdigit(static_cast<unsigned char>(c)) || c == '.';
  });
}

}  // namespace

std::string value_to_send(const RunTimeSetting& s, std::string_view typed) {
  if (s.duration != nullptr && bare_number(typed)) return std::string(typed) + "ms";
  return std::string(typed);
}

std::string value_received(const RunTimeSetting& s, std::string_view sent) {
  if (s.duration != nullptr && bare_number(sent)) return std::string(sent) + "us";
  return std::string(sent);
}

}  // namespace romulus::checkpoint
