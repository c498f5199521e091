// The environment a supervisor gives its guest (guest/guest.h reads it; the
// QEMU preload, guest/qemu/preload.cc, too): variable names and the values
// of ROMULUS_TRACKER. Constants only, so that a library preloaded into a
// program that is not ours can include it without the SDK.
#pragma once

#include <string_view>

namespace romulus::guest {

// Environment variables the supervisor sets for its guest.
inline constexpr const char* kEnvArenaFd = "ROMULUS_ARENA_FD";
inline constexpr const char* kEnvArenaSize = "ROMULUS_ARENA_SIZE";
inline constexpr const char* kEnvControlFd = "ROMULUS_CONTROL_FD";
inline constexpr const char* kEnvTracker = "ROMULUS_TRACKER";
inline constexpr const char* kEnvResumedEpoch = "ROMULUS_RESUMED_EPOCH";
inline constexpr const char* kEnvServicePort = "ROMULUS_SERVICE_PORT";
// The values of ROMULUS_TRACKER: who tracks the guest's writes, and how
// ("none", or no variable, is read as compare).
inline constexpr std::string_view kTrackerUffd = "uffd";
inline constexpr std::string_view kTrackerUffdSync = "uffd-sync";
// Both: async write-protect armed, and a synchronous userfaultfd ready for the
// supervisor to move the arena to (TrackerState::kUffdSwitchable).
inline constexpr std::string_view kTrackerUffdSwitchable = "uffd-switchable";
inline constexpr std::string_view kTrackerCompare = "compare";

}  // namespace romulus::guest
