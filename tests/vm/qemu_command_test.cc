// QemuCommand: what Romulus adds to the user's QEMU command line, and what it refuses.
#include "vm/qemu_command.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/support/status_matchers.h"

namespace romulus::vm::qemu_command_test {
namespace {

using Argv = std::vector<std::string>;

constexpr uint64_t kMiB = uint64_t{1} << 20;

QemuLaunch launch(bool incoming = false) {
  QemuLaunch l;
  l.arena_fd = 7;
  l.arena_bytes = 256 * kMiB;
  l.qmp_socket = "/run/romulus/qmp.sock";
  l.incoming = incoming;
  return l;
}

// The user's command line of the example VM, with `extra` appended.
Argv user(Argv extra = {}) {
  Argv a{"qemu-system-x86_64", "-machine", "q35,accel=tcg",       "-kernel",   "vmlinuz", "-initrd",
         "initrd.img",         "-append",  "console=ttyS0 quiet", "-nographic"};
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

// The refusal's message (empty if accepted).
std::string refusal(const Argv& argv, const QemuLaunch& l = launch()) {
  Status s = check_qemu_argv(argv, l);
  EXPECT_TRUE(s.is_ok() || s.code() == StatusCode::kInvalidArgument) << s.to_string();
  return s.message();
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(BuildQemuArgv, AppendsTheArenaBackendQmpAndMigrationSettings) {
  auto argv = build_qemu_argv(user({"-m", "256M"}), launch());
  ASSERT_OK(argv);
  Argv expected = user();
  expected.insert(expected.end(),
                  {"-object",
                   "memory-backend-file,id=romulus-ram,mem-path=/proc/self/fd/7,size=268435456,"
                   "share=on",
                   "-machine", "memory-backend=romulus-ram,suppress-vmdesc=on", "-m", "256M",
                   "-global", "migration.send-configuration=off", "-qmp",
                   "unix:/run/romulus/qmp.sock,server=on,wait=off"});
  EXPECT_EQ(*argv, expected);
}

TEST(BuildQemuArgv, TheBackupWaitsForItsDeviceStateStopped) {
  auto argv = build_qemu_argv(user(), launch(/*incoming=*/true));
  ASSERT_OK(argv);
  ASSERT_GE(argv->size(), 3u);
  EXPECT_EQ(Argv(argv->end() - 3, argv->end()), (Argv{"-incoming", "defer", "-S"}));
}

TEST(BuildQemuArgv, WithoutMTheArenaGivesTheSize) {
  auto argv = build_qemu_argv(user(), launch());
  ASSERT_OK(argv);
  auto m = std::find(argv->begin(), argv->end(), "-m");
  ASSERT_NE(m, argv->end());
  EXPECT_EQ(*(m + 1), "256M");
}

TEST(BuildQemuArgv, EscapesCommasInTheSocketPath) {
  QemuLaunch l = launch();
  l.qmp_socket = "/tmp/a,b/qmp.sock";
  auto argv = build_qemu_argv(user(), l);
  ASSERT_OK(argv);
  EXPECT_EQ(argv->back(), "unix:/tmp/a,,b/qmp.sock,server=on,wait=off");
}

TEST(BuildQemuArgv, KeepsOptionsWhoseValuesLookLikeOptions) {
  // -append's value starts with '-': it is a value, not -snapshot.
  Argv a = user({"-name", "-snapshot"});
  auto argv = build_qemu_argv(a, launch());
  ASSERT_OK(argv);
  EXPECT_EQ(Argv(argv->begin(), argv->begin() + static_cast<long>(a.size())), a);
}

TEST(BuildQemuArgv, AcceptsDoubleDashOptions) {
  EXPECT_OK(build_qemu_argv(user({"--no-reboot", "--m", "256"}), launch()));
}

TEST(QemuRamBytes, ReadsQemusUnits) {
  EXPECT_EQ(*qemu_ram_bytes(user({"-m", "256"})), 256 * kMiB);
  EXPECT_EQ(*qemu_ram_bytes(user({"-m", "1G"})), 1024 * kMiB);
  EXPECT_EQ(*qemu_ram_bytes(user({"-m", "size=512M"})), 512 * kMiB);
  EXPECT_EQ(*qemu_ram_bytes(user({"-m", "268435456B"})), 256 * kMiB);
  EXPECT_FALSE(qemu_ram_bytes(user())->has_value());
  EXPECT_FALSE(qemu_ram_bytes(user({"-m", "lots"})).is_ok());
}

TEST(CheckQemuArgv, AcceptsTheExampleVm) {
  EXPECT_OK(
      check_qemu_argv(user({"-netdev", "user,id=n0,hostfwd=tcp:127.0.0.1:6380-:6379", "-device",
                            "virtio-net-pci,netdev=n0", "-m", "256", "-no-reboot"}),
                      launch()));
}

TEST(CheckQemuArgv, RefusesSnapshot) {
  EXPECT_TRUE(contains(refusal(user({"-snapshot"})), "QEMU argument -snapshot:"));
}

TEST(CheckQemuArgv, RefusesLoadvm) {
  EXPECT_TRUE(contains(refusal(user({"-loadvm", "tag"})), "-loadvm: would restore a snapshot"));
}

TEST(CheckQemuArgv, RefusesIncoming) {
  EXPECT_TRUE(contains(refusal(user({"-incoming", "defer"})), "-incoming"));
}

TEST(CheckQemuArgv, RefusesFreezingAtStart) {
  EXPECT_TRUE(contains(refusal(user({"-S"})), "-S: Romulus starts and resumes the VM"));
}

TEST(CheckQemuArgv, RefusesDaemonize) {
  EXPECT_TRUE(contains(refusal(user({"-daemonize"})), "-daemonize"));
}

TEST(CheckQemuArgv, RefusesMemPath) {
  EXPECT_TRUE(contains(refusal(user({"-mem-path", "/dev/hugepages"})), "-mem-path"));
}

TEST(CheckQemuArgv, RefusesARamBackendOfTheUsersOwn) {
  std::string r = refusal(user({"-object", "memory-backend-ram,id=m0,size=256M"}));
  EXPECT_TRUE(contains(r, "memory-backend-ram is a RAM backend of your own")) << r;
  r = refusal(user({"-object", "{\"qom-type\": \"memory-backend-memfd\", \"id\": \"m\"}"}));
  EXPECT_TRUE(contains(r, "memory-backend-memfd")) << r;
}

TEST(CheckQemuArgv, RefusesTheMachinesOwnMemoryBackend) {
  EXPECT_TRUE(contains(refusal(user({"-machine", "q35,memory-backend=m0"})), "memory-backend="));
  EXPECT_TRUE(contains(refusal(user({"-M", "memory-backend=m0"})), "memory-backend="));
}

TEST(CheckQemuArgv, RefusesABalloon) {
  EXPECT_TRUE(contains(refusal(user({"-device", "virtio-balloon-pci,id=b"})),
                       "-device: virtio-balloon-pci gives guest pages back"));
  EXPECT_TRUE(contains(refusal(user({"-device", "{\"driver\": \"virtio-balloon-pci\"}"})),
                       "virtio-balloon-pci"));
  EXPECT_OK(check_qemu_argv(user({"-device", "virtio-net-pci,netdev=n0"}), launch()));
}

TEST(CheckQemuArgv, RefusesJsonItCannotRead) {
  // QEMU's parser takes single quotes; a check that cannot read it must not pass it.
  EXPECT_TRUE(contains(refusal(user({"-object", "{'qom-type': 'memory-backend-ram'}"})),
                       "could not be read"));
}

TEST(CheckQemuArgv, RefusesAnObjectNamedLikeRomulusRam) {
  EXPECT_TRUE(contains(refusal(user({"-object", "iothread,id=romulus-ram"})), "rename it"));
}

TEST(CheckQemuArgv, RefusesAMonitorOnRomulusQmpSocket) {
  std::string ours = "unix:/run/romulus/qmp.sock,server=on,wait=off";
  EXPECT_TRUE(contains(refusal(user({"-qmp", ours})), "Romulus's own QMP socket"));
  EXPECT_TRUE(contains(refusal(user({"-monitor", ours})), "Romulus's own QMP socket"));
  EXPECT_TRUE(
      contains(refusal(user({"-chardev", "socket,id=c,path=/run/romulus/qmp.sock,server=on"})),
               "Romulus's own QMP socket"));
  EXPECT_OK(check_qemu_argv(user({"-qmp", "unix:/tmp/mine.sock,server=on,wait=off"}), launch()));
}

TEST(CheckQemuArgv, RefusesMBiggerThanTheArena) {
  std::string r = refusal(user({"-m", "512M"}));
  EXPECT_TRUE(contains(r, "-m: 512M is bigger than the arena (256 MiB)")) << r;
}

TEST(CheckQemuArgv, RefusesMSmallerThanTheArena) {
  EXPECT_TRUE(contains(refusal(user({"-m", "128"})), "QEMU needs them equal"));
}

TEST(CheckQemuArgv, RefusesMemoryHotplug) {
  EXPECT_TRUE(contains(refusal(user({"-m", "256M,slots=2,maxmem=1G"})), "memory hotplug"));
}

TEST(CheckQemuArgv, RefusesAWritableDrive) {
  std::string r = refusal(user({"-drive", "file=disk.img,if=virtio"}));
  EXPECT_TRUE(contains(r, "-drive: file=disk.img is writable")) << r;
  EXPECT_TRUE(contains(r, "readonly=on")) << r;
  EXPECT_TRUE(contains(r, "not disks")) << r;
}

TEST(CheckQemuArgv, AcceptsAReadOnlyOrSnapshotDrive) {
  EXPECT_OK(check_qemu_argv(user({"-drive", "file=disk.img,if=virtio,readonly=on"}), launch()));
  EXPECT_OK(check_qemu_argv(user({"-drive", "file=disk.img,readonly"}), launch()));
  EXPECT_OK(check_qemu_argv(user({"-drive", "file=disk.img,snapshot=on"}), launch()));
  EXPECT_OK(check_qemu_argv(user({"-drive", "file=d.iso,media=cdrom"}), launch()));
  EXPECT_OK(check_qemu_argv(user({"-cdrom", "d.iso"}), launch()));
  EXPECT_OK(check_qemu_argv(user({"-drive", "if=none,id=empty"}), launch()));
}

TEST(CheckQemuArgv, AFileNameWithACommaIsOneValue) {
  // file=a,,readonly=on is the file "a,readonly=on", still writable.
  EXPECT_TRUE(contains(refusal(user({"-drive", "file=a,,readonly=on"})), "is writable"));
}

TEST(CheckQemuArgv, RefusesAWritableBlockdev) {
  EXPECT_TRUE(contains(refusal(user({"-blockdev", "driver=file,node-name=f,filename=d.img"})),
                       "-blockdev: node-name=f is writable"));
  EXPECT_TRUE(
      contains(refusal(user({"-blockdev", "{\"driver\": \"file\", \"filename\": \"d.img\"}"})),
               "read-only=on"));
  EXPECT_OK(check_qemu_argv(
      user({"-blockdev", "driver=file,node-name=f,filename=d.img,read-only=on"}), launch()));
  EXPECT_OK(check_qemu_argv(
      user({"-blockdev", "{\"driver\": \"file\", \"filename\": \"d\", \"read-only\": true}"}),
      launch()));
}

TEST(CheckQemuArgv, RefusesLegacyDiskOptionsAndBareImages) {
  EXPECT_TRUE(contains(refusal(user({"-hda", "disk.img"})), "-hda: disk.img is a writable disk"));
  EXPECT_TRUE(contains(refusal(user({"disk.img"})), "a bare image name is a writable disk"));
  EXPECT_TRUE(contains(refusal(user({"-pflash", "vars.fd"})), "writable disk"));
}

TEST(CheckQemuArgv, RefusesReadconfig) {
  EXPECT_TRUE(contains(refusal(user({"-readconfig", "vm.cfg"})), "configuration file"));
}

TEST(CheckQemuArgv, RefusesAnOptionWithoutItsValue) {
  EXPECT_TRUE(contains(refusal(user({"-kernel"})), "needs a value"));
}

TEST(CheckQemuArgv, RefusesAMissingProgram) {
  EXPECT_TRUE(contains(refusal(Argv{}), "no QEMU program"));
  EXPECT_TRUE(contains(refusal(Argv{"-m", "256"}), "no QEMU program"));
}

TEST(CheckQemuArgv, RefusesAnArenaThatIsNotWholeMebibytes) {
  QemuLaunch l = launch();
  l.arena_bytes = 256 * kMiB + 4096;
  EXPECT_TRUE(contains(refusal(user(), l), "whole number of MiB"));
}

TEST(SplitQemuOptions, DoubledCommasAreLiteral) {
  EXPECT_EQ(split_qemu_options("a,b=c,,d,e"), (std::vector<std::string>{"a", "b=c,d", "e"}));
  EXPECT_EQ(split_qemu_options(""), (std::vector<std::string>{""}));
}

}  // namespace
}  // namespace romulus::vm::qemu_command_test
