#include "vm/qemu_command.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <initializer_list>
#include <limits>

#include <fmt/format.h>
#include <boost/json.hpp>

namespace romulus::vm {

namespace {

namespace json = boost::json;

// QEMU 7.2's options that take no argument (qemu-options.hx, HAS_ARG 0).
// clang-format off
constexpr std::array<std::string_view, 37> kFlags = {
    "h", "help", "version", "S", "s", "snapshot", "nographic", "daemonize", "no-reboot",
    "no-shutdown", "enable-kvm", "nodefaults", "no-user-config", "preconfig", "only-migratable",
    "usb", "portrait", "full-screen", "win2k-hack", "no-fd-bootchk", "no-acpi", "no-hpet",
    "singlestep", "xen-attach", "xen-domid-restrict", "mem-prealloc", "audio-help",
    "enable-sync-profile", "curses", "alt-grab", "ctrl-grab", "no-quit", "semihosting",
    "rtc-td-hack", "no-kvm", "no-kvm-irqchip", "old-param"};
// clang-format on

// Disk options that name an image QEMU opens read-write.
constexpr std::array<std::string_view, 9> kWritableDiskOptions = {
    "hda", "hdb", "hdc", "hdd", "fda", "fdb", "mtdblock", "sd", "pflash"};

constexpr std::string_view kDisksHelp =
    "Romulus replicates RAM and devices, not disks, so a disk QEMU writes would not match the "
    "RAM after a failover";

bool is_flag(std::string_view name) {
  return std::find(kFlags.begin(), kFlags.end(), name) != kFlags.end();
}

bool is_true(std::string_view v) { return v == "on" || v == "yes" || v == "true" || v == "y"; }

// The value of `key` among parts ("key=value"); a part without '=' is the
// implied key's value when it comes first, or "on" (QEMU's bare boolean).
std::optional<std::string> part_value(const std::vector<std::string>& parts, std::string_view key,
                                      std::string_view implied_first_key = {}) {
  std::optional<std::string> found;
  for (size_t i = 0; i < parts.size(); ++i) {
    const std::string& p = parts[i];
    size_t eq = p.find('=');
    if (eq == std::string::npos) {
      if (i == 0 && !implied_first_key.empty()) {
        if (key == implied_first_key) found = p;
      } else if (p == key) {
        found = "on";
      }
      continue;
    }
    if (std::string_view(p).substr(0, eq) == key) found = p.substr(eq + 1);  // the last one wins
  }
  return found;
}

Status refuse(std::string_view option, std::string_view what) {
  return Status::invalid_argument(fmt::format("QEMU argument {}: {}", option, what));
}

// QEMU's size syntax: digits, then an optional unit B/K/M/G/T (default MiB).
std::optional<uint64_t> parse_size_mib_default(std::string_view text) {
  uint64_t n = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc() || end == text.data()) return std::nullopt;
  std::string_view unit(end, text.data() + text.size() - end);
  int shift = 20;
  if (unit.size() > 1) return std::nullopt;
  if (unit.size() == 1) {
    constexpr std::string_view kUnits = "BKMGT";  // 2^0, 2^10, 2^20, ...
    char u = unit[0] >= 'a' && unit[0] <= 'z' ? static_cast<char>(unit[0] - 'a' + 'A') : unit[0];
    size_t i = kUnits.find(u);
    if (i == std::string_view::npos) return std::nullopt;
    shift = static_cast<int>(10 * i);
  }
  if (n > (std::numeric_limits<uint64_t>::max() >> shift)) return std::nullopt;
  return n << shift;
}

// "unix:PATH,server=on,..." or "unix:PATH" -> PATH; nullopt for other backends.
std::optional<std::string> unix_socket_path(std::string_view chardev) {
  if (!chardev.starts_with("unix:")) return std::nullopt;
  auto parts = split_qemu_options(chardev.substr(5));
  if (parts.empty()) return std::string();
  return parts[0];
}

std::string escape_commas(std::string_view s) {
  std::string out;
  for (char c : s) {
    out += c;
    if (c == ',') out += ',';
  }
  return out;
}

std::string size_text(uint64_t bytes) { return fmt::format("{} MiB", bytes >> 20); }

Status check_drive(std::string_view value) {
  auto parts = split_qemu_options(value);
  auto file = part_value(parts, "file");
  if (!file || file->empty()) return Status::ok();  // an empty drive: nothing to write
  auto readonly = part_value(parts, "readonly");
  auto snapshot = part_value(parts, "snapshot");
  auto media = part_value(parts, "media");
  if ((readonly && is_true(*readonly)) || (snapshot && is_true(*snapshot)) ||
      (media && *media == "cdrom")) {
    return Status::ok();
  }
  return refuse("-drive",
                fmt::format("file={} is writable: {}; add readonly=on (or snapshot=on, whose "
                            "writes are lost at a failover)",
                            *file, kDisksHelp));
}

Status check_blockdev(std::string_view value) {
  bool read_only = false;
  std::string name;
  if (value.starts_with("{")) {
    boost::system::error_code ec;
    json::value v = json::parse(value, ec);
    const json::object* o = ec ? nullptr : v.if_object();
    if (o == nullptr) return refuse("-blockdev", "its JSON could not be read; give a JSON object");
    if (const json::value* ro = o->if_contains("read-only")) {
      read_only = ro->is_bool() ? ro->get_bool() : (ro->is_string() && is_true(ro->get_string()));
    }
    if (const json::value* n = o->if_contains("node-name"); n != nullptr && n->is_string()) {
      name = n->get_string();
    }
  } else {
    auto parts = split_qemu_options(value);
    auto ro = part_value(parts, "read-only", "driver");
    read_only = ro && is_true(*ro);
    name = part_value(parts, "node-name").value_or("");
  }
  if (read_only) return Status::ok();
  return refuse("-blockdev",
                fmt::format("{}is writable: {}; add read-only=on",
                            name.empty() ? "" : "node-name=" + name + " ", kDisksHelp));
}

// QEMU's object-style value: JSON ({"key": ...}) or key=value parts with
// `implied` as the first part's key; the string members named in `keys`
// ("" when absent). nullopt for JSON that Boost.JSON cannot read (QEMU's own
// parser also takes single quotes: what it reads, this check must read too).
std::optional<std::vector<std::string>> object_members(
    std::string_view value, std::string_view implied,
    std::initializer_list<std::string_view> keys) {
  std::vector<std::string> out;
  if (value.starts_with("{")) {
    boost::system::error_code ec;
    json::value v = json::parse(value, ec);
    const json::object* o = ec ? nullptr : v.if_object();
    if (o == nullptr) return std::nullopt;
    for (std::string_view key : keys) {
      const json::value* m = o->if_contains(key);
      out.push_back(m != nullptr && m->is_string() ? std::string(m->get_string()) : "");
    }
    return out;
  }
  auto parts = split_qemu_options(value);
  for (std::string_view key : keys) out.push_back(part_value(parts, key, implied).value_or(""));
  return out;
}

Status check_device(std::string_view value) {
  auto members = object_members(value, "driver", {"driver"});
  if (!members) return refuse("-device", "its JSON could not be read; give a JSON object");
  const std::string& driver = (*members)[0];
  if (driver.starts_with("virtio-balloon")) {
    return refuse("-device", fmt::format("{} gives guest pages back by punching holes in the "
                                         "arena, which write tracking does not see; remove it",
                                         driver));
  }
  return Status::ok();
}

Status check_object(std::string_view value) {
  auto members = object_members(value, "qom-type", {"qom-type", "id"});
  if (!members) return refuse("-object", "its JSON could not be read; give a JSON object");
  const std::string& type = (*members)[0];
  const std::string& id = (*members)[1];
  if (type.starts_with("memory-backend")) {
    return refuse("-object", fmt::format("{} is a RAM backend of your own: Romulus puts all guest "
                                         "RAM in its arena; remove it (and -numa memdev=, "
                                         "memory devices that use it)",
                                         type));
  }
  if (id == kRamBackendId) {
    return refuse("-object", fmt::format("id={} is Romulus's own; rename it", id));
  }
  return Status::ok();
}

Status check_machine(std::string_view value) {
  auto parts = split_qemu_options(value);
  if (part_value(parts, "memory-backend", "type")) {
    return refuse("-machine",
                  "memory-backend= puts guest RAM in a backend of your own: Romulus puts it in "
                  "its arena; remove memory-backend=");
  }
  return Status::ok();
}

// -m's size in bytes; errors name what is wrong.
Result<uint64_t> parse_m(std::string_view value) {
  auto parts = split_qemu_options(value);
  if (part_value(parts, "slots", "size") || part_value(parts, "maxmem", "size")) {
    return refuse("-m",
                  "slots= and maxmem= are memory hotplug, whose memory would live outside "
                  "the arena; remove them");
  }
  auto size = part_value(parts, "size", "size");
  if (!size) return refuse("-m", fmt::format("'{}' has no size; give e.g. -m 256M", value));
  auto bytes = parse_size_mib_default(*size);
  if (!bytes || *bytes == 0) {
    return refuse("-m", fmt::format("cannot read the size '{}'; give e.g. -m 256M", *size));
  }
  return *bytes;
}

Status check_socket(std::string_view option, std::string_view value, const QemuLaunch& launch) {
  std::optional<std::string> path;
  if (option == "chardev") {
    auto parts = split_qemu_options(value);
    if (part_value(parts, "backend", "backend").value_or("") == "socket") {
      path = part_value(parts, "path");
    }
  } else {
    path = unix_socket_path(value);
  }
  if (path && *path == launch.qmp_socket) {
    return refuse(fmt::format("-{}", option),
                  fmt::format("{} is Romulus's own QMP socket; give yours another path", *path));
  }
  return Status::ok();
}

// Calls visit(name, value) for each option of argv[1..] (value empty for a
// flag); a bare argument (an image name) and a missing value are errors.
template <typename Visit>
Status for_each_option(std::span<const std::string> argv, Visit visit) {
  if (argv.empty() || argv[0].empty() || argv[0].starts_with("-")) {
    return Status::invalid_argument(
        "no QEMU program: give it after --, e.g. -- qemu-system-x86_64 -machine q35 ...");
  }
  for (size_t i = 1; i < argv.size(); ++i) {
    std::string_view arg = argv[i];
    if (!arg.starts_with("-") || arg == "-") {
      return refuse(arg, fmt::format("a bare image name is a writable disk: {}; use -drive "
                                     "file={},readonly=on (or snapshot=on)",
                                     kDisksHelp, arg));
    }
    std::string_view name = arg.substr(arg.starts_with("--") ? 2 : 1);
    if (is_flag(name)) {
      ROMULUS_RETURN_IF_ERROR(visit(name, std::string_view(), i, i));
      continue;
    }
    if (i + 1 >= argv.size()) {
      return refuse(arg, "needs a value (QEMU would refuse it)");
    }
    ROMULUS_RETURN_IF_ERROR(visit(name, std::string_view(argv[i + 1]), i, i + 1));
    ++i;
  }
  return Status::ok();
}

Status check_launch(const QemuLaunch& launch) {
  if (launch.arena_fd < 0) return Status::invalid_argument("QEMU launch: no arena fd");
  if (launch.arena_bytes == 0 || launch.arena_bytes % kRamGranule != 0) {
    return Status::invalid_argument(
        fmt::format("the arena for a VM must be a positive whole number of MiB (it is {} bytes)",
                    launch.arena_bytes));
  }
  if (launch.qmp_socket.empty()) return Status::invalid_argument("QEMU launch: no QMP socket");
  return Status::ok();
}

}  // namespace

std::vector<std::string> split_qemu_options(std::string_view value) {
  std::vector<std::string> parts(1);
  for (size_t i = 0; i < value.size(); ++i) {
    if (value[i] != ',') {
      parts.back() += value[i];
    } else if (i + 1 < value.size() && value[i + 1] == ',') {
      parts.back() += ',';
      ++i;
    } else {
      parts.emplace_back();
    }
  }
  return parts;
}

Result<std::optional<uint64_t>> qemu_ram_bytes(std::span<const std::string> user_argv) {
  std::optional<uint64_t> bytes;
  Status s = for_each_option(
      user_argv, [&](std::string_view name, std::string_view value, size_t, size_t) -> Status {
        if (name != "m") return Status::ok();
        auto b = parse_m(value);
        if (!b.is_ok()) return b.status();
        bytes = *b;
        return Status::ok();
      });
  if (!s.is_ok()) return s;
  return bytes;
}

Status check_qemu_argv(std::span<const std::string> user_argv, const QemuLaunch& launch) {
  ROMULUS_RETURN_IF_ERROR(check_launch(launch));
  return for_each_option(
      user_argv, [&](std::string_view name, std::string_view value, size_t, size_t) -> Status {
        const std::string option = fmt::format("-{}", name);
        if (name == "snapshot") {
          return refuse(option,
                        "sends every disk's writes to a throwaway overlay without saying so; "
                        "remove it, and mark each disk readonly=on (or snapshot=on, whose "
                        "writes are lost at a failover)");
        }
        if (name == "loadvm") {
          return refuse(option, "would restore a snapshot over the replicated RAM; remove it");
        }
        if (name == "incoming") {
          return refuse(option,
                        "Romulus starts the backup's QEMU with -incoming itself; remove it");
        }
        if (name == "S" || name == "preconfig") {
          return refuse(option, "Romulus starts and resumes the VM itself; remove it");
        }
        if (name == "daemonize") {
          return refuse(option,
                        "Romulus supervises QEMU as its child; remove it (run romulus "
                        "itself as a service instead)");
        }
        if (name == "mem-path") {
          return refuse(option,
                        "puts guest RAM in a file of your own: Romulus puts it in its "
                        "arena; remove it");
        }
        if (name == "readconfig") {
          return refuse(option,
                        "Romulus cannot check a configuration file's options; give them "
                        "on the command line");
        }
        if (std::find(kWritableDiskOptions.begin(), kWritableDiskOptions.end(), name) !=
            kWritableDiskOptions.end()) {
          return refuse(option, fmt::format("{} is a writable disk: {}; use -drive "
                                            "file={},readonly=on (or snapshot=on)",
                                            value, kDisksHelp, value));
        }
        if (name == "drive") return check_drive(value);
        if (name == "blockdev") return check_blockdev(value);
        if (name == "object") return check_object(value);
        if (name == "device") return check_device(value);
        if (name == "machine" || name == "M") return check_machine(value);
        if (name == "qmp" || name == "qmp-pretty" || name == "monitor" || name == "chardev") {
          return check_socket(name, value, launch);
        }
        if (name == "m") {
          ROMULUS_ASSIGN_OR_RETURN(uint64_t bytes, parse_m(value));
          if (bytes > launch.arena_bytes) {
            return refuse(option, fmt::format("{} is bigger than the arena ({}): give the arena "
                                              "the VM's size",
                                              value, size_text(launch.arena_bytes)));
          }
          if (bytes != launch.arena_bytes) {
            return refuse(option, fmt::format("{} is not the arena's size ({}), and QEMU needs "
                                              "them equal: give both the same size, or drop -m",
                                              value, size_text(launch.arena_bytes)));
          }
        }
        return Status::ok();
      });
}

Result<std::vector<std::string>> build_qemu_argv(std::span<const std::string> user_argv,
                                                 const QemuLaunch& launch) {
  ROMULUS_RETURN_IF_ERROR(check_qemu_argv(user_argv, launch));
  std::vector<std::string> argv{user_argv[0]};
  Status s = for_each_option(
      user_argv, [&](std::string_view name, std::string_view, size_t first, size_t last) -> Status {
        if (name == "m") return Status::ok();
        for (size_t i = first; i <= last; ++i) argv.push_back(user_argv[i]);
        return Status::ok();
      });
  if (!s.is_ok()) return s;
  argv.insert(
      argv.end(),
      {"-object",
       fmt::format("memory-backend-file,id={},mem-path={},size={},share=on", kRamBackendId,
                   escape_commas(fmt::format("/proc/self/fd/{}", launch.arena_fd)),
                   launch.arena_bytes),
       "-machine", fmt::format("memory-backend={},suppress-vmdesc=on", kRamBackendId), "-m",
       fmt::format("{}M", launch.arena_bytes >> 20), "-global", "migration.send-configuration=off",
       "-qmp", fmt::format("unix:{},server=on,wait=off", escape_commas(launch.qmp_socket))});
  if (launch.incoming) argv.insert(argv.end(), {"-incoming", "defer", "-S"});
  return argv;
}

}  // namespace romulus::vm
