"""`romulus status`, `set` and `failover`, and the command's own error lines.

Each test starts its own pair (counter guest, 32 MiB arena, 20 ms epochs) and talks to
it with the real `romulus` command through explicit --control paths.
"""

import json
import os
import socket
import time
import unittest

import harness
from harness import Cluster


def one_line(text):
    lines = [line for line in text.splitlines() if line.strip()]
    return len(lines) == 1


@harness.require_binaries("romulus", "counter")
class ControlTest(unittest.TestCase):

    def synced_pair(self, **kw):
        c = Cluster(self, **kw)
        guest = harness.counter_guest(50)
        backup = c.backup(guest)
        primary = c.primary(guest, backup.listen_port)
        primary.wait_for(harness.IN_SYNC_RE)
        backup.wait_for(harness.SYNCED_RE)
        return c, backup, primary

    def status(self, node):
        rc, out, err = harness.cli("status", "--json", "--control", node.control_path)
        self.assertEqual(rc, 0, err)
        self.assertTrue(one_line(out), out)
        return json.loads(out)

    def wait_epoch_beyond(self, node, epoch, c):
        return harness.wait_until(
            lambda: (lambda s: s if s["last_committed_epoch"] > epoch else None)(
                self.status(node)), f"{node.name} to commit beyond epoch {epoch}\n" + c.logs())

    def test_status_reports_role_state_and_advancing_epochs_on_both_nodes(self):
        c, backup, primary = self.synced_pair()
        p = self.status(primary)
        self.assertEqual(p["role"], "primary")
        self.assertEqual(p["state"], "protected")
        self.assertEqual(p["interval_ms"], 20.0)
        self.assertEqual(p["peer"], f"127.0.0.1:{backup.listen_port}")
        self.assertFalse(p["resumed"])
        self.assertGreater(p["guest_pid"], 0)
        b = self.status(backup)
        self.assertEqual(b["role"], "backup")
        self.assertEqual(b["state"], "protecting")
        self.assertTrue(b["image_consistent"])
        self.assertEqual(b["listen"], f"127.0.0.1:{backup.listen_port}")
        self.assertEqual(b["failover_timeout_ms"], 1000)

        p2 = self.wait_epoch_beyond(primary, p["last_committed_epoch"] + 3, c)
        b2 = self.wait_epoch_beyond(backup, b["last_committed_epoch"] + 3, c)
        self.assertGreater(p2["primary"]["epochs"], p["primary"]["epochs"])
        self.assertGreaterEqual(p2["primary"]["sent_epoch"], p2["primary"]["acked_epoch"])
        self.assertEqual(p2["last_committed_epoch"], p2["primary"]["acked_epoch"])
        self.assertGreater(p2["primary"]["pause_ms"]["p99"], 0)
        self.assertGreater(p2["primary"]["compression_ratio"], 0)
        self.assertGreater(p2["primary"]["dirty_pages_total"], 0)
        self.assertGreater(b2["checkpoints_committed"], b["checkpoints_committed"])
        # The backup commits before it acknowledges.
        b3 = self.status(backup)
        p3 = self.status(primary)
        self.assertLessEqual(p2["primary"]["acked_epoch"], b3["last_committed_epoch"])
        self.assertLessEqual(b2["last_committed_epoch"], p3["primary"]["sent_epoch"])

    def test_set_interval_changes_the_reported_interval_and_epochs_keep_advancing(self):
        c, backup, primary = self.synced_pair()
        rc, out, err = harness.cli("set", "interval", "25ms", "--control", primary.control_path)
        self.assertEqual(rc, 0, out + err)
        self.assertEqual(json.loads(out), {"ok": True})
        primary.wait_for(r"interval set to 25\.0 ms")
        s = self.status(primary)
        self.assertEqual(s["interval_ms"], 25.0)
        self.wait_epoch_beyond(primary, s["last_committed_epoch"] + 5, c)
        self.wait_epoch_beyond(backup, s["last_committed_epoch"] + 5, c)
        self.assertEqual(self.status(primary)["state"], "protected")

    def test_bad_requests_give_one_clear_error_line_and_a_nonzero_exit(self):
        c, backup, primary = self.synced_pair()
        cases = [
            # (args, what the one line must say)
            (["set", "interval", "banana", "--control", primary.control_path],
             "'banana' is not a duration"),
            (["set", "interval", "5parsecs", "--control", primary.control_path], "unknown unit"),
            (["set", "interval", "0ms", "--control", primary.control_path],
             "interval must be between 1ms and 60s"),
            (["set", "warp", "9", "--control", primary.control_path], "unknown setting 'warp'"),
            (["set", "interval", "--control", primary.control_path], "usage: romulus set"),
            (["set", "interval", "25ms", "--control", backup.control_path],
             "a backup has no run-time settings"),
            (["failover", "--control", primary.control_path], "this node is the primary"),
            (["status", "extra", "--control", primary.control_path], "status takes no arguments"),
            (["status", "--control", os.path.join(c.dir, "nobody.sock")], "nobody.sock"),
            (["frobnicate"], "unknown command 'frobnicate'"),
        ]
        for args, expected in cases:
            with self.subTest(args=args):
                rc, out, err = harness.cli(*args)
                self.assertNotEqual(rc, 0, out + err)
                text = out + err
                self.assertTrue(one_line(text), f"not one line: {text!r}")
                self.assertIn(expected, text)
        # Nothing of that disturbed the pair.
        self.assertEqual(self.status(primary)["interval_ms"], 20.0)
        self.assertEqual(self.status(primary)["state"], "protected")

    def test_failover_is_refused_by_a_backup_without_a_complete_sync(self):
        c = Cluster(self)
        backup = c.backup(harness.counter_guest(50))
        rc, out, err = harness.cli("failover", "--control", backup.control_path)
        self.assertNotEqual(rc, 0)
        self.assertTrue(one_line(out + err), out + err)
        self.assertIn("refusing to take over", out + err)
        s = self.status(backup)
        self.assertEqual(s["role"], "backup")
        self.assertFalse(s["image_consistent"])
        self.assertIsNone(backup.find(harness.TAKEOVER_RE))

    def test_clean_primary_stop_is_not_a_failure_and_manual_failover_takes_over(self):
        c, backup, primary = self.synced_pair()
        acked = primary.acked_epoch()
        primary.terminate()  # SIGTERM: the primary says GOODBYE
        self.assertEqual(primary.wait(), 0, primary.text())
        primary.wait_for(r"stopped")
        backup.wait_for(r"primary shut down cleanly \(goodbye\); not taking over")
        # Well past the failover timeout (1 s), the backup is still a backup: watched
        # until the backup itself reports twice that long without contact.
        def silent_for_two_timeouts():
            self.assertIsNone(backup.find(harness.TAKEOVER_RE), backup.text())
            s = self.status(backup)
            return s["ms_since_contact"] > 2 * s["failover_timeout_ms"]

        harness.wait_until(silent_for_two_timeouts,
                           lambda: "two failover timeouts without contact\n" + backup.text())
        self.assertIsNone(backup.find(harness.TAKEOVER_RE), backup.text())
        s = self.status(backup)
        self.assertEqual(s["role"], "backup")
        self.assertEqual(s["state"], "primary_stopped")
        committed = s["last_committed_epoch"]
        self.assertGreaterEqual(committed, acked)

        rc, out, err = harness.cli("failover", "--control", backup.control_path)
        self.assertEqual(rc, 0, out + err)
        self.assertEqual(json.loads(out), {"ok": True, "epoch": committed})
        take = backup.wait_for(harness.TAKEOVER_RE)
        self.assertEqual(take.group(1), "manual failover")
        self.assertEqual(int(take.group(2)), committed)
        epoch, _ = harness.check_counter_resume(self, backup)
        self.assertEqual(epoch, committed)
        s = harness.wait_until(lambda: (lambda s: s if s and s["role"] == "primary" else None)(
            backup.status()), "the new primary's control socket")
        self.assertTrue(s["resumed"])

    def test_primary_without_a_guest_command_says_so_in_one_line(self):
        for extra in ([], ["--"]):
            with self.subTest(extra=extra):
                rc, out, err = harness.cli("primary", "--backup", "127.0.0.1:9", "--memory",
                                           "32M", *extra)
                self.assertEqual(rc, 2)
                self.assertTrue(one_line(out + err), out + err)
                self.assertIn("no guest command", err)

    def test_unreachable_backup_leaves_the_guest_running_unprotected(self):
        c = Cluster(self)
        nobody = harness.free_port()
        primary = c.primary(harness.counter_guest(50), nobody)
        primary.wait_for(rf"backup 127\.0\.0\.1:{nobody} unreachable: .*UNPROTECTED")
        s = harness.wait_until(
            lambda: (lambda s: s if s and s["state"].startswith("unprotected") else None)(
                primary.status()), "the primary to report it is unprotected")
        pid = s["guest_pid"]
        self.assertIn(pid, primary.guest_pids())
        # The guest keeps running: its counter pages keep being written (still alive,
        # and not stopped, a while later).
        time.sleep(1.0)
        self.assertTrue(primary.alive(), primary.text())
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        self.assertIn(state, "RSD", f"guest state {state}")
        self.assertEqual(primary.count(r"unreachable"), 1, "said more than once")

    def test_backup_on_a_port_in_use_fails_with_a_line_naming_the_port(self):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            s.listen(1)
            port = s.getsockname()[1]
            c = Cluster(self)
            backup = c.backup(harness.counter_guest(50), port=port, wait_listening=False)
            rc = backup.wait()
            self.assertNotEqual(rc, 0)
            # One line for the error (the start-up lines about running without a
            # witness and about the link's plaintext aside).
            errors = [line for stream, line in backup.lines
                      if stream == "err" and "WARNING: no --witness" not in line
                      and "replication link: plaintext on loopback" not in line]
            self.assertEqual(len(errors), 1, backup.text())
            self.assertIn(f"127.0.0.1:{port}", errors[0])
            self.assertIn("cannot listen", errors[0])

    def test_idle_connections_to_the_backup_are_capped_timed_out_and_do_not_block_the_primary(self):
        c = Cluster(self, failover_timeout="1s")
        backup = c.backup(harness.counter_guest(50))
        idle = []
        try:
            # A truncated hello: 15 bytes of a valid header and body start.
            trunc = socket.create_connection(("127.0.0.1", backup.listen_port))
            trunc.sendall(b"RMLS\x01\x00\x1b\x00\x00\x00\x00\x10\x00\x00\x04")
            idle.append(trunc)
            for _ in range(40):
                s = socket.create_connection(("127.0.0.1", backup.listen_port))
                idle.append(s)
            backup.wait_for(r"more than 16 connections without a completed handshake")
            # Each is closed after the handshake timeout (500 ms here): reads end.
            trunc.settimeout(harness.DEADLINE)
            self.assertEqual(trunc.recv(1), b"")
            primary = c.primary(harness.counter_guest(50), backup.listen_port)
            primary.wait_for(harness.IN_SYNC_RE)
            self.assertEqual(backup.count(r"more than 16 connections"), 1, "logged once per burst")
            self.assertIsNotNone(harness.control(backup.control_path, "status --json"))
        finally:
            for s in idle:
                s.close()


if __name__ == "__main__":
    unittest.main(verbosity=2)
