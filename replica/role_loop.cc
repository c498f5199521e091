#include "replica/role_loop.h"

#include <fmt/format.h>

namespace romulus::replica {

RoleLoop::RoleLoop(RoleLoopConfig config, std::function<void(const std::string&)> log)
    : config_(config), log_(std::move(log)), state_(NodeRole::kStarting, log_) {}

NodeRole RoleLoop::move(NodeRole to) {
  if (!state_.transition(to)) {
    return stop(Status::invalid_argument(fmt::format("BUG: the process cannot go from {} to {}",
                                                     common::StateTraits<NodeRole>::name(state()),
                                                     common::StateTraits<NodeRole>::name(to))));
  }
  return state();
}

NodeRole RoleLoop::stop(Status result) {
  result_ = std::move(result);
  state_.transition(NodeRole::kStopped);
  return state();
}

NodeRole RoleLoop::misplaced(std::string_view event) {
  const std::string why = fmt::format("BUG: {} in the process role {}", event, name());
  if (log_) log_(why);
  if (stopped()) return state();  // the first result stands
  return stop(Status::invalid_argument(why));
}

NodeRole RoleLoop::start(StartAs as) {
  if (state() != NodeRole::kStarting) return misplaced("start");
  if (as == StartAs::kBackup) return move(NodeRole::kBackup);
  return move(config_.witness ? NodeRole::kAcquiring : NodeRole::kPrimary);
}

NodeRole RoleLoop::ownership_decided(bool owner) {
  if (state() != NodeRole::kAcquiring) return misplaced("ownership decided");
  if (owner) return move(NodeRole::kPrimary);
  if (!config_.can_rejoin) {
    return stop(Status::invalid_argument(
        "another node owns the pair and this node has no --listen address to rejoin it "
        "as a backup; give the primary --listen ADDR:PORT"));
  }
  return move(NodeRole::kBackup);
}

NodeRole RoleLoop::primary_ended(const Status& status, bool demoted) {
  if (state() != NodeRole::kPrimary && state() != NodeRole::kTookOver) {
    return misplaced("primary ended");
  }
  if (!demoted) return stop(status);
  // A node that took over was a backup a moment ago: it has its --listen.
  if (state() == NodeRole::kPrimary && !config_.can_rejoin) {
    return stop(
        Status::aborted("demoted: another node owns the pair, and without --listen this "
                        "node cannot rejoin it as a backup; restart it as a backup"));
  }
  return move(NodeRole::kBackup);  // rejoin the owner as its backup
}

NodeRole RoleLoop::backup_ended(const Status& status) {
  if (state() != NodeRole::kBackup) return misplaced("backup ended");
  if (status.is_ok()) return move(NodeRole::kTookOver);
  if (status.code() == StatusCode::kAborted) return stop(Status::ok());  // stopped on request
  return stop(status);
}

NodeRole RoleLoop::failed(Status error) {
  if (stopped()) return misplaced("failed");
  return stop(std::move(error));
}

}  // namespace romulus::replica
