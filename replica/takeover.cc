#include "replica/takeover.h"

#include <fmt/format.h>

#include <cstdlib>

namespace romulus::replica {
using Clock = std::chrono::steady_clock;

Status run_primary(checkpoint::PrimaryConfig config, NodeHost& host,
                   std::optional<common::SharedMemory> image, std::function<void()> on_started) {
  checkpoint::PrimaryNode node(std::move(config), host.log);
  if (image) node.adopt_arena(std::move(*image));
  if (on_started) node.set_on_started(std::move(on_started));
  if (host.control) {
    host.control->set_handler([&node](const std::string& r) { return node.handle_control(r); });
  }
  if (host.on_stop) host.on_stop([&node] { node.request_stop(); });
  Status st = node.run();
  if (host.on_stop) host.on_stop(nullptr);
  if (host.control) host.control->set_handler(nullptr);
  return st;
}

Status run_backup(const BackupConfig& backup, TakeoverOptions takeover, NodeHost& host) {
  auto activation = [&]() {
    BackupNode node(backup, host.log);
    if (host.control) {
      host.control->set_handler([&node](const std::string& r) { return node.handle_control(r); });
    }
    if (host.on_stop) host.on_stop([&node] { node.request_stop(); });
    auto result = node.run();
    if (host.on_stop) host.on_stop(nullptr);
    if (host.control) host.control->set_handler(nullptr);
    return result;
  }();
  if (!activation.is_ok()) {
    if (activation.status().code() == StatusCode::kAborted) return Status::ok();  // stopped
    return activation.status();
  }

  // Take over: the committed image becomes the guest's arena.
  auto a = std::move(activation).value();
  if (host.set_role) host.set_role("primary (took over)");
  host.log(fmt::format("TAKING OVER ({}): resuming the guest from epoch {}", a.reason, a.epoch));
  checkpoint::PrimaryConfig pc = std::move(takeover.primary);
  pc.resumed_epoch = a.epoch;
  pc.session_id = a.session_id;
  const auto last_contact = a.last_contact;
  const auto hook = takeover.on_failover;
  const uint64_t epoch = a.epoch;
  auto log = host.log;
  auto on_started = [last_contact, hook, epoch, log] {
    const auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - last_contact).count();
    log(fmt::format(
        "guest running from epoch {}: {} ms from last contact with the primary to guest running",
        epoch, ms));
    if (hook) {
      const std::string cmd = fmt::format("ROMULUS_EPOCH={} {}", epoch, *hook);
      const int rc = std::system(cmd.c_str());
      if (rc != 0) log(fmt::format("--on-failover command exited with {}", rc));
    }
  };
  return run_primary(std::move(pc), host, std::move(a.image), on_started);
}

}  // namespace romulus::replica
