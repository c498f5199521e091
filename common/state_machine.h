// StateMachine<State>: the one place where a role's state changes.
//
// A role (the primary, the backup) declares an `enum class` of its states,
// the table of legal transitions (drawn in its header), and a name for each
// state (the names `romulus status --json` reports). Every change goes
// through transition(): a legal one is applied; an illegal one is a bug in
// the caller, refused, and logged once with both states, so it shows up in
// tests and in the field instead of silently corrupting the role.
//
// Thread-safe: state() may be read from any thread (an atomic); transition()
// may be called from any thread and is linearised by the atomic's CAS.
// An observer (set_observer(), before the first transition) hears every
// applied change on the thread that made it: how a service manager learns of
// them (common/service_notify.h) without a call at each transition site.
#pragma once

#include <atomic>
#include <functional>
#include <string>
#include <string_view>

#include <fmt/format.h>

namespace romulus::common {

template <typename State>
struct StateTraits {
  // Specialise with:
  //   static bool legal(State from, State to);
  //   static std::string_view name(State s);
  //   static constexpr std::string_view kRole = "...";
};

template <typename State>
class StateMachine {
 public:
  using Traits = StateTraits<State>;
  using LogFn = std::function<void(const std::string&)>;
  using ObserverFn = std::function<void(State from, State to)>;

  StateMachine(State initial, LogFn log) : state_(initial), log_(std::move(log)) {}

  State state() const { return state_.load(std::memory_order_acquire); }
  std::string_view name() const { return Traits::name(state()); }

  // Called after each applied change (not for no-ops or refusals). Set it
  // before any thread may call transition(); it must not call transition().
  void set_observer(ObserverFn fn) { observer_ = std::move(fn); }

  // Moves to `to` if the table allows it from the current state; returns
  // whether it did. Staying in the same state is always allowed (no-op).
  bool transition(State to) {
    State from = state_.load(std::memory_order_acquire);
    while (true) {
      if (from == to) return true;
      if (!Traits::legal(from, to)) {
        if (log_) {
          log_(fmt::format("BUG: illegal {} state transition {} -> {} refused", Traits::kRole,
                           Traits::name(from), Traits::name(to)));
        }
        return false;
      }
      if (state_.compare_exchange_weak(from, to, std::memory_order_acq_rel)) {
        if (observer_) observer_(from, to);
        return true;
      }
    }
  }

 private:
  std::atomic<State> state_;
  LogFn log_;
  ObserverFn observer_;
};

}  // namespace romulus::common
