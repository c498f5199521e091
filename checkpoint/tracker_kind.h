// TrackerKind: which dirty tracker protects a guest (--tracker), and its names.
//
// Below primary.h and tracker_choice.h, which both use it: the decision rule is
// in tracker_choice.h, the trackers in dirty_tracker.h and its neighbours. The
// three single-userfaultfd kinds are named as the guest is told them
// (ROMULUS_TRACKER, guest/guest.h), so a name means the same on both sides;
// uffd-hybrid runs a guest told "uffd-switchable" (hybrid_tracker.h).
#pragma once

#include <cstdint>
#include <string_view>

#include "common/enum_names.h"
#include "guest/guest.h"

namespace romulus::checkpoint {

enum class TrackerKind : uint8_t { kAuto, kUffd, kUffdSync, kCompare, kUffdHybrid };

// The names of --tracker and of `status`, in the order help texts list them.
inline constexpr EnumName<TrackerKind> kTrackerKindNames[] = {
    {TrackerKind::kAuto, "auto"},
    {TrackerKind::kUffd, guest::kTrackerUffd},
    {TrackerKind::kUffdSync, guest::kTrackerUffdSync},
    {TrackerKind::kCompare, guest::kTrackerCompare},
    {TrackerKind::kUffdHybrid, "uffd-hybrid"}};

inline std::string_view tracker_kind_name(TrackerKind k) { return enum_name(kTrackerKindNames, k); }

}  // namespace romulus::checkpoint
