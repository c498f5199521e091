"""Running Romulus as a service: systemd's notify protocol, the unit files, the install.

- A real backup and primary, each started from a --config file (`guest = ...`, as
  the systemd units start them) with NOTIFY_SOCKET pointing at a datagram socket
  this test listens on (one per process): each must send STATUS=<role>: <state>
  lines, READY=1 once (the backup when it holds a consistent image, the primary
  when it is protected, by its backup or by its own --data-dir alone), and
  STOPPING=1 when told to stop.
- `cmake --install` into a DESTDIR puts the binaries, the unit templates, the OCF
  agent and the example configs where they belong, and `systemd-analyze verify`
  accepts the installed units (skipped, saying why, without systemd-analyze or
  without a build tree to install from); installs into different prefixes run at
  once each get units that name their own binary.
"""

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import unittest

import harness
from harness import Cluster


class NotifyListener:
    """A NOTIFY_SOCKET: an AF_UNIX datagram socket; every message received is kept."""

    def __init__(self, path):
        self.path = path
        self.messages = []
        self._cond = threading.Condition()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(path)
        self._sock.settimeout(0.2)
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop:
            try:
                data = self._sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            with self._cond:
                self.messages.append(data.decode(errors="replace"))
                self._cond.notify_all()

    def lines(self):
        """Every assignment received, in order ("STATUS=backup: syncing", "READY=1", ...)."""
        with self._cond:
            return [line for m in self.messages for line in m.split("\n") if line]

    def wait_for(self, line, what):
        def seen():
            return line in self.lines()
        harness.wait_until(seen, lambda: f"{what}: {line!r}; received {self.lines()}")

    def close(self):
        self._stop = True
        self._thread.join(timeout=5)
        self._sock.close()


def write_config(directory, name, lines):
    path = os.path.join(directory, name)
    with open(path, "w") as f:
        f.write("".join(f"{k} = {v}\n" for k, v in lines))
    return path


@harness.require_binaries("romulus", "counter")
class NotifyTest(unittest.TestCase):

    def listener(self, directory, name):
        n = NotifyListener(os.path.join(directory, name))
        self.addCleanup(n.close)
        return n

    def test_backup_and_primary_send_status_lines_ready_once_protected_and_stopping(self):
        c = Cluster(self)
        port = harness.free_port()
        common = [("memory", "32M"), ("interval", "20ms"), ("heartbeat", "50ms"),
                  ("failover-timeout", "1s"), ("stats-period", "0"),
                  ("guest", " ".join(harness.counter_guest()))]
        backup_conf = write_config(c.dir, "backup.conf",
                                   [("listen", f"127.0.0.1:{port}"),
                                    ("control", os.path.join(c.dir, "b.sock"))] + common)
        primary_conf = write_config(c.dir, "primary.conf",
                                    [("backup", f"127.0.0.1:{port}"),
                                     ("control", os.path.join(c.dir, "p.sock"))] + common)
        b_notify = self.listener(c.dir, "backup.notify")
        p_notify = self.listener(c.dir, "primary.notify")

        backup = c.proc("backup", [harness.binary("romulus"), "backup", "--config", backup_conf],
                        env=dict(os.environ, NOTIFY_SOCKET=b_notify.path))
        backup.wait_for(r"backup listening on")
        b_notify.wait_for("STATUS=backup: no_image", "the backup's first state")
        self.assertNotIn("READY=1", b_notify.lines(), "a backup without an image is not ready")

        primary = c.proc("primary",
                         [harness.binary("romulus"), "primary", "--config", primary_conf],
                         env=dict(os.environ, NOTIFY_SOCKET=p_notify.path))
        p_notify.wait_for("READY=1", "the primary's readiness")
        b_notify.wait_for("READY=1", "the backup's readiness")

        # READY=1 comes with the state that earned it, after the states before it.
        p_lines, b_lines = p_notify.lines(), b_notify.lines()
        self.assertEqual(p_lines[p_lines.index("READY=1") - 1], "STATUS=primary: protected",
                         p_lines)
        self.assertLess(p_lines.index("STATUS=primary: syncing"),
                        p_lines.index("STATUS=primary: protected"), p_lines)
        self.assertEqual(b_lines[b_lines.index("READY=1") - 1], "STATUS=backup: protecting",
                         b_lines)
        self.assertLess(b_lines.index("STATUS=backup: syncing"),
                        b_lines.index("STATUS=backup: protecting"), b_lines)

        primary.terminate()
        self.assertEqual(primary.wait(), 0, primary.text())
        p_notify.wait_for("STOPPING=1", "the primary's stop")
        # The backup heard GOODBYE; it stays up, holding its image, not stopping.
        b_notify.wait_for("STATUS=backup: primary_stopped", "the backup's state after GOODBYE")
        self.assertEqual(p_notify.lines().count("READY=1"), 1, p_notify.lines())
        self.assertNotIn("STOPPING=1", b_notify.lines())
        backup.terminate()
        self.assertEqual(backup.wait(), 0, backup.text())
        b_notify.wait_for("STOPPING=1", "the backup's stop")

    def test_a_primary_protected_by_its_own_data_dir_only_is_ready(self):
        # No backup answers: the primary waits to compare durable images (not
        # ready), `romulus failover` starts the guest from its own image, and it
        # protects it to its --data-dir alone (protected_locally): a service
        # that serves protected replies, so its unit must not stay "activating".
        c = Cluster(self)
        config = write_config(c.dir, "primary.conf",
                              [("backup", f"127.0.0.1:{harness.free_port()}"),
                               ("data-dir", os.path.join(c.dir, "data")),
                               ("control", os.path.join(c.dir, "p.sock")),
                               ("memory", "32M"), ("interval", "20ms"), ("stats-period", "0"),
                               ("guest", " ".join(harness.counter_guest()))])
        notify = self.listener(c.dir, "primary.notify")
        primary = c.proc("primary", [harness.binary("romulus"), "primary", "--config", config],
                         env=dict(os.environ, NOTIFY_SOCKET=notify.path))
        primary.wait_for(r"waiting for backup \S+ to compare durable images")
        self.assertNotIn("READY=1", notify.lines(), "ready before the guest is protected")
        rc, out, err = harness.cli("failover", "--control", os.path.join(c.dir, "p.sock"))
        self.assertEqual(rc, 0, out + err)
        notify.wait_for("READY=1", "the readiness of a primary alone with its --data-dir")
        lines = notify.lines()
        self.assertEqual(lines[lines.index("READY=1") - 1], "STATUS=primary: protected_locally",
                         lines)
        primary.terminate()
        self.assertEqual(primary.wait(), 0, primary.text())
        notify.wait_for("STOPPING=1", "the primary's stop")
        self.assertEqual(notify.lines().count("READY=1"), 1, notify.lines())


def cmake():
    return shutil.which("cmake")


@unittest.skipUnless(cmake(), "cmake not found")
@unittest.skipUnless(os.path.exists(os.path.join(harness.build_dir(), "cmake_install.cmake")),
                     f"no build tree to install from at {harness.build_dir()}")
class InstallTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.destdir = tempfile.mkdtemp(prefix="romulus-destdir-")
        env = dict(os.environ, DESTDIR=cls.destdir)
        p = subprocess.run([cmake(), "--install", harness.build_dir(), "--prefix", "/usr"],
                           capture_output=True, text=True, env=env, timeout=120)
        cls.install_output = p.stdout + p.stderr
        cls.install_rc = p.returncode

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.destdir, ignore_errors=True)

    def path(self, relative):
        return os.path.join(self.destdir, relative.lstrip("/"))

    def test_install_into_destdir_puts_binaries_units_agent_and_examples_in_place(self):
        self.assertEqual(self.install_rc, 0, self.install_output)
        for f in ["usr/bin/romulus", "usr/bin/romulus-kvstore", "usr/bin/romulus-kvload",
                  "usr/lib/systemd/system/romulus-primary@.service",
                  "usr/lib/systemd/system/romulus-backup@.service",
                  "usr/lib/ocf/resource.d/romulus/romulus",
                  "usr/share/doc/romulus/examples/primary.conf.example",
                  "usr/share/doc/romulus/examples/backup.conf.example",
                  "usr/share/doc/romulus/operations.md"]:
            self.assertTrue(os.path.exists(self.path(f)), f"{f} not installed:\n"
                            + self.install_output)
        for f in ["usr/bin/romulus", "usr/lib/ocf/resource.d/romulus/romulus"]:
            self.assertTrue(os.access(self.path(f), os.X_OK), f"{f} is not executable")
        p = subprocess.run([self.path("usr/bin/romulus"), "--help"], capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        # The units run the installed binary and read /etc/romulus/NAME.conf.
        with open(self.path("usr/lib/systemd/system/romulus-primary@.service")) as f:
            unit = f.read()
        self.assertIn("ExecStart=/usr/bin/romulus primary --config /etc/romulus/%i.conf", unit)
        self.assertIn("Type=notify", unit)

    def test_example_configs_name_only_options_romulus_knows(self):
        """Reading --config stops at the first unknown option name, even with --help."""
        self.assertEqual(self.install_rc, 0, self.install_output)
        for role in ["primary", "backup"]:
            conf = self.path(f"usr/share/doc/romulus/examples/{role}.conf.example")
            rc, out, err = harness.cli(role, "--config", conf, "--help")
            self.assertEqual(rc, 0, f"{role}.conf.example: {err}")

    @unittest.skipUnless(shutil.which("systemd-analyze"), "systemd-analyze not found (systemd)")
    def test_systemd_analyze_verify_accepts_the_installed_units(self):
        """Installed with a real prefix (not DESTDIR), so that the binary the units
        name exists where verify looks for it; the host's own units satisfy the
        dependencies (sysinit.target, network-online.target)."""
        with tempfile.TemporaryDirectory(prefix="romulus-prefix-") as prefix:
            p = subprocess.run([cmake(), "--install", harness.build_dir(), "--prefix", prefix],
                               capture_output=True, text=True, timeout=120)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            units = os.path.join(prefix, "lib", "systemd", "system")
            for role in ["primary", "backup"]:
                template = os.path.join(units, f"romulus-{role}@.service")
                with open(template) as f:
                    self.assertIn(f"ExecStart={prefix}/bin/romulus {role} --config", f.read())
                env = dict(os.environ, SYSTEMD_UNIT_PATH=units + ":")  # ':' keeps the defaults
                p = subprocess.run(["systemd-analyze", "verify", template,
                                    f"romulus-{role}@kv.service"],
                                   capture_output=True, text=True, timeout=120, env=env)
                self.assertEqual(p.returncode, 0, f"{template}:\n{p.stdout}{p.stderr}")
                self.assertEqual(p.stderr.strip(), "", f"{template}:\n{p.stderr}")

    def test_installs_run_at_once_each_get_units_naming_their_own_binary(self):
        """cpack (prefix /usr, a DESTDIR) and `cmake --install --prefix P` run from one
        build tree at the same time, as this suite and an operator's scripts do. The
        units are configured at install time; each install must get its own prefix's
        binary (the build tree once held one configured copy that concurrent installs
        overwrote in turn: a package shipped a unit naming a temporary prefix)."""
        with tempfile.TemporaryDirectory(prefix="romulus-prefixes-") as top:
            for round_ in range(6):
                prefixes = [os.path.join(top, f"r{round_}p{i}") for i in range(3)]
                procs = [subprocess.Popen([cmake(), "--install", harness.build_dir(),
                                           "--prefix", prefix, "--component", "romulus"],
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          text=True) for prefix in prefixes]
                outputs = [p.communicate(timeout=120)[0] for p in procs]
                for prefix, p, out in zip(prefixes, procs, outputs):
                    self.assertEqual(p.returncode, 0, out)
                    for role in ["primary", "backup"]:
                        unit = os.path.join(prefix, "lib", "systemd", "system",
                                            f"romulus-{role}@.service")
                        with open(unit) as f:
                            self.assertIn(f"ExecStart={prefix}/bin/romulus {role} --config",
                                          f.read(), f"round {round_}: {unit}")


if __name__ == "__main__":
    unittest.main()
