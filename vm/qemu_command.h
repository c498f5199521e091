// QemuCommand: from the user's QEMU command line (what follows `--`) to the
// one Romulus runs. Pure functions over strings; no process is started here.
//
// Romulus adds, after the user's arguments:
//
//   -object memory-backend-file,id=romulus-ram,mem-path=/proc/self/fd/FD,size=BYTES,share=on
//   -machine memory-backend=romulus-ram,suppress-vmdesc=on
//   -m MIB M
//   -global migration.send-configuration=off
//   -qmp unix:SOCKET,server=on,wait=off
//   -incoming defer -S                          (the backup: load a device state, then cont)
//
// so that all guest RAM is the arena (a memfd QEMU inherits at fd number FD;
// QEMU 7.2 requires -m to equal the backend's size), the device state saved by
// xen-save-devices-state carries no description of the machine (it loads into
// a QEMU started with the same arguments), and Romulus drives QEMU over its
// own QMP socket. The user's -m, if any, is dropped for ours (it must equal
// the arena).
//
// Refused, one line each saying what is wrong and what to do: anything that
// puts guest RAM outside the arena (-mem-path, a memory-backend-* object, the
// machine's memory-backend=, -m with slots/maxmem) or changes it unseen by
// write tracking (a virtio-balloon device punches holes), that restores or discards
// state behind Romulus's back (-loadvm, -snapshot, -incoming, -S, -preconfig),
// that takes QEMU away from its supervisor (-daemonize), a -qmp/-monitor/
// -chardev on Romulus's QMP socket, a -m other than the arena's size, a
// configuration file (-readconfig: its options cannot be checked), and a disk
// QEMU could write: a -drive without readonly=on or snapshot=on (media=cdrom
// is read-only), a -blockdev without read-only=on, -hda/-hdb/-hdc/-hdd/-fda/
// -fdb/-mtdblock/-sd/-pflash and a bare image name. Romulus replicates RAM and
// devices, not disks: a writable disk would not match the RAM after a
// failover. (snapshot=on is accepted: QEMU sends that disk's writes to a
// throwaway overlay, so the image never changes; the writes are lost at a
// failover, which the guest must tolerate.)
//
// Options are read as QEMU reads them: "-opt" or "--opt"; a value's
// comma-separated parts with ",," as a literal comma; an option not known to
// take no argument takes one (QEMU refuses an unknown option itself).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace romulus::vm {

// The id of the memory backend Romulus adds.
inline constexpr std::string_view kRamBackendId = "romulus-ram";
// The arena must be a whole number of MiB (what -m can say).
inline constexpr uint64_t kRamGranule = uint64_t{1} << 20;

struct QemuLaunch {
  int arena_fd = -1;         // the arena's memfd, inherited by QEMU at this number
  uint64_t arena_bytes = 0;  // its size, the guest's RAM: a positive multiple of kRamGranule
  std::string qmp_socket;    // the Unix socket QEMU creates for Romulus's QmpClient
  bool incoming = false;     // the backup: add -incoming defer -S
};

// The size the user's -m asks for, in bytes (QEMU's units: a bare number is
// MiB; suffixes B, K, M, G, T); nullopt without -m (QEMU's default is 128 MiB).
// For sizing the arena before the argv is built. Errors: an unreadable -m,
// slots= or maxmem= (memory hotplug).
Result<std::optional<uint64_t>> qemu_ram_bytes(std::span<const std::string> user_argv);

// OK, or the first refusal of the user's argv (argv[0] is the QEMU program).
Status check_qemu_argv(std::span<const std::string> user_argv, const QemuLaunch& launch);

// check_qemu_argv(), then the argv to exec: the user's (without its -m) and
// Romulus's additions.
Result<std::vector<std::string>> build_qemu_argv(std::span<const std::string> user_argv,
                                                 const QemuLaunch& launch);

// A value's comma-separated parts as QEMU splits them (",," is a literal
// comma). Exposed for tests.
std::vector<std::string> split_qemu_options(std::string_view value);

}  // namespace romulus::vm
