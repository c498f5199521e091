"""The durable image (--data-dir): losing both nodes loses no acknowledged write.

romulus-kvstore runs behind the pair's --service proxies, both nodes with a
--data-dir of their own. The spec (docs/design.md, "The durable image";
docs/operations.md, "Losing both nodes"):

  - under --durable sync (the default), kill -9 of both nodes (and with them their
    guests) under romulus-kvload --check, then both started again with their own
    unchanged commands: the pair comes back from the backup's image (the primary
    finds its backup's image newer and hands the pair to it), kvload's clients
    reconnect, and 0 acknowledged writes are lost;
  - a backup started again alone waits with its image (it never takes over on its
    own: the primary may be alive elsewhere); `romulus failover` resumes the guest
    from it, with every acknowledged key;
  - a primary whose backup cannot be reached waits to compare images; `romulus
    failover` on it starts the guest from its own image;
  - a damaged data directory, or one written for another arena size, is refused
    with one line saying what to do; --force-data-dir starts from what verifies;
  - under --durable async the lag is in status --json, and after it has drained a
    restart finds every write; a kill -9 of both under load loses no more than the
    lag the backup last reported.
"""

import glob
import json
import os
import shutil
import subprocess
import tempfile
import time
import unittest

import harness
from harness import Cluster
from test_output_commit import LineClient, SERVING_RE

READ_BACK_RE = harness.READ_BACK_RE
NEWER_RE = r"holds a newer image \(epoch (\d+); this node's --data-dir holds epoch (\d+)\)"


@harness.require_binaries("romulus", "kvstore", "kvload")
class DurableImageTest(unittest.TestCase):

    def pair(self, c, durable=None, memory=None, backlog=None):
        """harness.durable_pair; its data directories in self.dirs."""
        backup, primary, ports, self.dirs = harness.durable_pair(c, durable, memory, backlog)
        return backup, primary, ports

    def kvload(self, c, ports, seconds, seed):
        return harness.kvload_check(c, ports, seconds, seed)

    def restart(self, c, node, name):
        return harness.restart(c, node, name)

    def test_killing_both_nodes_under_load_loses_no_acknowledged_write(self):
        c = Cluster(self)
        backup, primary, ports = self.pair(c)
        primary.wait_for(harness.IN_SYNC_RE)
        primary.wait_for(SERVING_RE)
        load = self.kvload(c, ports, seconds=4, seed=25)
        time.sleep(1.0)
        # Power lost on both: no goodbye, no last write.
        primary.kill9()
        backup.kill9()
        backup2 = self.restart(c, backup, "backup-again")
        epoch = int(backup2.wait_for(READ_BACK_RE).group(1))
        self.assertGreater(epoch, 0, backup2.text())
        primary2 = self.restart(c, primary, "primary-again")
        newer = primary2.wait_for(NEWER_RE)
        self.assertEqual(int(newer.group(1)), epoch, primary2.text())
        take = backup2.wait_for(harness.TAKEOVER_RE)
        self.assertEqual(int(take.group(2)), epoch, backup2.text())
        # The old primary rejoins as the new primary's backup.
        backup2.wait_for(harness.IN_SYNC_RE)
        rc = load.wait()
        context = f"{primary.text()}\n{backup.text()}\n{primary2.text()}\n{backup2.text()}\n" \
                  f"{load.text()}"
        harness.check_kvload(self, load, rc, context)

    def test_a_backup_started_again_alone_waits_and_failover_resumes_its_image(self):
        c = Cluster(self)
        backup, primary, ports = self.pair(c)
        primary.wait_for(SERVING_RE)
        primary.wait_for(harness.IN_SYNC_RE)
        client = LineClient(ports["p_svc"])
        for i in range(50):
            self.assertEqual(client.request(f"SET durable{i} value{i}"), "OK")
        client.close()
        primary.kill9()
        backup.kill9()
        again = self.restart(c, backup, "backup-again")
        again.wait_for(READ_BACK_RE)
        harness.wait_until(lambda: harness.control(again.control_path, "ping"), "control socket")
        status = again.status()
        self.assertEqual(status["state"], "primary_stopped", again.text())
        self.assertTrue(status["image_consistent"])
        self.assertEqual(status["durable"]["mode"], "sync")
        # It waits: only an operator decides that the primary is gone for good.
        time.sleep(1.5)
        self.assertIsNone(again.find(harness.TAKEOVER_RE), again.text())
        rc, out, err = harness.cli("failover", "--control", again.control_path)
        self.assertEqual(rc, 0, err + again.text())
        again.wait_for(harness.TAKEOVER_RE)
        again.wait_for(SERVING_RE)
        client = LineClient(ports["b_svc"])
        for i in range(50):
            self.assertEqual(client.request(f"GET durable{i}"), f"VALUE value{i}", again.text())
        client.close()

    def test_a_primary_waits_for_its_backup_and_failover_starts_it_from_its_own_image(self):
        c = Cluster(self)
        data = os.path.join(c.dir, "p_data")
        svc = harness.free_port()
        gone = harness.free_port()  # no backup listens there
        primary = c.primary([harness.binary("kvstore")], gone, name="primary", service_port=svc,
                            extra=["--data-dir", data])
        primary.wait_for(r"waiting for backup \S+ to compare durable images")
        self.assertIsNone(primary.find(r"guest pid \d+ attached"), primary.text())
        harness.wait_until(lambda: harness.control(primary.control_path, "ping"), "control socket")
        self.assertEqual(primary.status()["state"], "comparing_images")
        rc, out, err = harness.cli("failover", "--control", primary.control_path)
        self.assertEqual(rc, 0, err + primary.text())
        primary.wait_for(r"starting the guest from this node's own image")
        primary.wait_for(SERVING_RE)

    def test_a_damaged_data_directory_is_refused_and_force_starts_from_what_verifies(self):
        c = Cluster(self)
        backup, primary, ports = self.pair(c)
        primary.wait_for(SERVING_RE)
        primary.wait_for(harness.IN_SYNC_RE)
        client = LineClient(ports["p_svc"])
        self.assertEqual(client.request("SET k v"), "OK")
        client.close()
        primary.kill9()
        backup.kill9()
        # Flip one byte in the middle of every file of the backup's data directory.
        files = [f for f in glob.glob(os.path.join(self.dirs["b_data"], "*"))
                 if os.path.isfile(f) and os.path.getsize(f) > 64]
        self.assertTrue(files, os.listdir(self.dirs["b_data"]))
        for f in files:
            with open(f, "r+b") as fh:
                size = os.path.getsize(f)
                fh.seek(size // 2)
                b = fh.read(1)
                fh.seek(size // 2)
                fh.write(bytes([b[0] ^ 0x5A]))
        again = self.restart(c, backup, "backup-again")
        rc = again.wait()
        self.assertNotEqual(rc, 0, again.text())
        errors = [line for stream, line in again.lines if "--data-dir" in line]
        self.assertTrue(errors, again.text())
        self.assertRegex(again.text(), r"--force-data-dir", "the refusal says what to do")

    def test_a_data_directory_of_another_arena_size_is_refused(self):
        c = Cluster(self)
        backup, primary, ports = self.pair(c)
        primary.wait_for(harness.IN_SYNC_RE)
        primary.stop()
        backup.stop()
        argv = [a for a in backup.argv]
        argv[argv.index("--memory") + 1] = "64M"
        again = c.proc("backup-64M", argv)
        rc = again.wait()
        self.assertNotEqual(rc, 0, again.text())
        self.assertRegex(again.text(), r"--data-dir", again.text())

    def test_async_reports_its_lag_and_a_drained_image_has_every_write(self):
        c = Cluster(self)
        backup, primary, ports = self.pair(c, durable="async")
        primary.wait_for(SERVING_RE)
        primary.wait_for(harness.IN_SYNC_RE)
        client = LineClient(ports["p_svc"])
        for i in range(30):
            self.assertEqual(client.request(f"SET a{i} {i}"), "OK")
        client.close()
        d = backup.status()["durable"]
        self.assertEqual(d["mode"], "async")
        for key in ("durable_epoch", "submitted_epoch", "lag_epochs", "lag_ms"):
            self.assertIn(key, d)
        harness.wait_until(lambda: backup.status()["durable"]["lag_epochs"] == 0,
                           "the durable image to catch up")
        primary.kill9()
        backup.kill9()
        again = self.restart(c, backup, "backup-again")
        again.wait_for(READ_BACK_RE)
        harness.wait_until(lambda: harness.control(again.control_path, "ping"), "control socket")
        rc, out, err = harness.cli("failover", "--control", again.control_path)
        self.assertEqual(rc, 0, err)
        again.wait_for(SERVING_RE)
        client = LineClient(ports["b_svc"])
        for i in range(30):
            self.assertEqual(client.request(f"GET a{i}"), f"VALUE {i}", again.text())
        client.close()

    def test_killing_both_nodes_under_async_loses_no_more_than_the_reported_lag(self):
        # kill -9 of both under load with --durable async: what the pair comes
        # back without must be within the lag the backup last reported. Its
        # status is polled until the power goes; the last answer gives
        # durable_epoch D and lag_ms L, asked at time T (CLOCK_MONOTONIC). Then
        # the image read back holds at least epoch D, and every acknowledged
        # write lost was acknowledged at or after T - L: the checkpoints
        # submitted before that were on disk (the writer works in order), and a
        # write's acknowledgement reaches its client after its checkpoint is
        # handed to the writer, bar the microseconds between the backup's ACK and
        # that hand-off, which SLACK covers (lag_ms is also truncated to whole ms).
        # A kill -9 keeps what the writer had handed to the kernel, so this run
        # usually loses nothing; what a power cut loses (the unsynced writes too)
        # is tested against the lag at the storage layer:
        # DurableWriter.APowerCutLosesNoMoreThanTheReportedLag.
        slack_ns = 50_000_000
        c = Cluster(self)
        backup, primary, ports = self.pair(c, durable="async")
        primary.wait_for(harness.IN_SYNC_RE)
        primary.wait_for(SERVING_RE)
        # The sync's base image on disk first (on a loaded machine it may take a
        # while): before it the backup has no image to come back with at all.
        harness.wait_until(lambda: ((backup.status() or {}).get("durable") or {}).get(
            "durable_epoch", 0) > 0, "the base image on disk", deadline=120)
        load = self.kvload(c, ports, seconds=4, seed=26)
        last = None
        polls = 0
        until = time.monotonic() + 1.0
        while last is None or time.monotonic() < until:
            asked = time.monotonic_ns()
            s = backup.status()
            if s and s.get("durable"):
                last = (asked, s["durable"])
                polls += 1
        primary.kill9()
        backup.kill9()
        asked, d = last
        self.assertEqual(d["mode"], "async")
        backup2 = self.restart(c, backup, "backup-again")
        epoch = int(backup2.wait_for(READ_BACK_RE).group(1))
        self.assertGreaterEqual(epoch, d["durable_epoch"],
                                f"an epoch reported durable was lost: {d}\n{backup2.text()}")
        primary2 = self.restart(c, primary, "primary-again")
        primary2.wait_for(NEWER_RE)
        backup2.wait_for(harness.TAKEOVER_RE)
        backup2.wait_for(harness.IN_SYNC_RE)
        load.wait()
        context = f"{d}\n{primary.text()}\n{backup.text()}\n{primary2.text()}\n" \
                  f"{backup2.text()}\n{load.text()}"
        reports = [line for stream, line in load.lines if stream == "out" and line.startswith("{")]
        self.assertEqual(len(reports), 1, context)
        check = json.loads(reports[0])["check"]
        self.assertGreater(check["acked_writes"], 0, context)
        self.assertEqual(check["corrupt"], 0, context)
        print(f"async kill: {polls} polls; last: durable epoch {d['durable_epoch']}, lag "
              f"{d['lag_epochs']} epochs / {d['lag_ms']} ms; read back epoch {epoch}; "
              f"{check['writes_lost']} acknowledged writes lost ({check['acked_lost']} keys)")
        if check["acked_lost"] > 0:
            bound = asked - d["lag_ms"] * 1_000_000 - 1_000_000 - slack_ns
            self.assertGreaterEqual(
                check["earliest_lost_ack_ns"], bound,
                f"a write acknowledged {(asked - check['earliest_lost_ack_ns']) / 1e6:.1f} ms "
                f"before the last status was lost, beyond its lag of {d['lag_ms']} ms\n" + context)

    def test_a_disk_behind_the_stream_holds_the_primary_back_and_loses_nothing(self):
        # --disk-backlog 4K: nearly every checkpoint exceeds it, so the backup
        # stops reading its primary's stream after each until the writer has
        # caught up (what a disk slower than the stream causes at 256M). The
        # pair goes on protected, slower, with nothing acknowledged lost, and a
        # failover then resumes every key.
        c = Cluster(self)
        backup, primary, ports = self.pair(c, durable="async", backlog="4K")
        primary.wait_for(harness.IN_SYNC_RE)
        primary.wait_for(SERVING_RE)
        load = self.kvload(c, ports, seconds=3, seed=27)
        backup.wait_for(r"is \d+ MiB behind the stream: reading from the primary pauses")
        backup.wait_for(r"the durable image caught up: reading from the primary again")
        rc = load.wait()
        harness.check_kvload(self, load, rc, f"{primary.text()}\n{backup.text()}\n{load.text()}")
        self.assertEqual(len(primary.find_all(harness.IN_SYNC_RE)), 1,
                         "the backup was dropped and synced again:\n" + primary.text())
        primary.kill9()
        backup.wait_for(harness.TAKEOVER_RE)
        backup.wait_for(SERVING_RE)

    def test_a_full_disk_ends_the_stream_with_one_line_and_keeps_what_was_durable(self):
        """The backup's --data-dir on a small tmpfs, filled up under load: under sync the
        backup says so once, stops acknowledging (the primary runs on unprotected) and
        refuses primaries; started again with room, it reads back a verified image."""
        c = Cluster(self)
        mnt = os.path.join(c.dir, "small")
        os.makedirs(mnt)
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", mnt],
                          capture_output=True).returncode != 0:
            self.skipTest("cannot mount a tmpfs here (needs root)")
        self.addCleanup(subprocess.run, ["umount", "-l", mnt], capture_output=True)
        kv = [harness.binary("kvstore")]
        b_svc, p_svc = harness.free_port(), harness.free_port()
        data = os.path.join(mnt, "data")
        backup = c.backup(kv, name="backup", service_port=b_svc, extra=["--data-dir", data])
        primary = c.primary(kv, backup.listen_port, name="primary", service_port=p_svc)
        primary.wait_for(SERVING_RE)
        primary.wait_for(harness.IN_SYNC_RE)
        # Leave the log a few hundred KB to grow into.
        free = os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_frsize
        with open(os.path.join(mnt, "filler"), "wb") as f:
            f.write(b"\0" * max(0, free - 256 * 1024))
        load = c.proc("kvload", [
            harness.binary("kvload"), "--server", f"127.0.0.1:{p_svc}", "--connections", "4",
            "--keys", "2000", "--value-size", "512", "--seconds", "4", "--json", "--quiet"])
        full = backup.wait_for(r"writing the durable image in --data-dir \S+ failed: .*"
                               r"No space left on device.*acknowledges nothing until it is "
                               r"restarted with a working --data-dir")
        self.assertEqual(backup.count(r"backup: writing the durable image in --data-dir"), 1,
                         "said once: " + backup.text())
        primary.wait_for(r"the guest runs UNPROTECTED")
        load.wait()
        # Longer than the failover timeout since the backup stopped acknowledging: the
        # primary ran on unprotected, so the backup must not take over on its own.
        self.assertIsNone(backup.find(harness.TAKEOVER_RE), backup.text())
        self.assertIsNotNone(backup.find(r"stopped acknowledging when its --data-dir failed"),
                             backup.text())
        durable = backup.status()["durable"]
        self.assertIn("No space left on device", durable["error"])
        backup.kill9()
        primary.kill9()
        os.remove(os.path.join(mnt, "filler"))
        again = self.restart(c, backup, "backup-again")
        epoch = int(again.wait_for(READ_BACK_RE).group(1))
        self.assertGreaterEqual(epoch, durable["durable_epoch"], again.text())
        self.assertTrue(full)

    def test_a_snapshot_of_a_running_pair_restores_every_key(self):
        c = Cluster(self)
        kv = [harness.binary("kvstore")]
        b_svc, p_svc = harness.free_port(), harness.free_port()
        backup = c.backup(kv, name="backup", service_port=b_svc)
        primary = c.primary(kv, backup.listen_port, name="primary", service_port=p_svc)
        primary.wait_for(SERVING_RE)
        primary.wait_for(harness.IN_SYNC_RE)
        client = LineClient(p_svc)
        for i in range(40):
            self.assertEqual(client.request(f"SET snap{i} {i * i}"), "OK")
        client.close()
        keep = tempfile.mkdtemp(prefix="romulus-snapshot-")
        self.addCleanup(shutil.rmtree, keep, True)
        file = os.path.join(keep, "pair.snapshot")
        rc, out, err = harness.cli("snapshot", file, "--control", primary.control_path)
        self.assertNotEqual(rc, 0, "a primary refuses: ask the backup")
        self.assertIn("backup", err)
        rc, out, err = harness.cli("snapshot", file, "--control", backup.control_path)
        self.assertEqual(rc, 0, err + backup.text())
        reply = json.loads(out)
        self.assertGreater(reply["epoch"], 0)
        self.assertTrue(os.path.exists(file))
        c.close()

        c2 = Cluster(self)
        svc = harness.free_port()
        # Its backup is not there (yet): it runs unprotected and serves.
        restored = c2.primary(kv, harness.free_port(), name="restored", service_port=svc,
                              extra=["--from-snapshot", file])
        restored.wait_for(r"--from-snapshot \S+: the guest starts from its image at epoch (\d+)")
        restored.wait_for(SERVING_RE)
        client = LineClient(svc)
        for i in range(40):
            self.assertEqual(client.request(f"GET snap{i}"), f"VALUE {i * i}", restored.text())
        client.close()


if __name__ == "__main__":
    unittest.main()
