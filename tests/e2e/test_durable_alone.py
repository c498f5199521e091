"""A primary without its backup keeps a durable log of its own (issue 25).

The spec (docs/design.md, "The durable image"; docs/operations.md, "Keeping the
state on disk"): with --data-dir and --durable sync, a primary whose backup is
lost protects the guest to its own --data-dir (state protected_locally) and
releases a reply only once its checkpoint is there; so after kill -9 of the
backup, then of the primary (and with them their guests), both started again
with their own unchanged commands, the pair comes back from the primary's
newer image and romulus-kvload --check finds every acknowledged write, those
acknowledged while the primary was alone included. A backup that comes back
while the primary is alone is synced as usual (epochs keep increasing), the
local log stops, and nothing acknowledged is lost. With a witness, the
primary records in it that it serves what no backup has before its local log
releases anything, and fences while the witness is away.
"""

import os
import shutil
import time
import unittest

import harness
from harness import Cluster
from test_output_commit import LineClient, SERVING_RE
from test_witness import Etcd

ALONE_RE = (r"backup \S+ (unreachable|refused): .*; the guest is protected by this node's "
            r"--data-dir \S+ only \(--durable sync: replies wait for its fdatasync\); retrying")
OWN_NEWER_RE = (r"backup \S+ holds epoch (\d+); this node's --data-dir holds epoch (\d+): the "
                r"guest starts from this node's image")


@harness.require_binaries("romulus", "kvstore", "kvload")
class DurableAloneTest(unittest.TestCase):

    def local_log(self, node):
        s = node.status()
        return s.get("local_log") if s else None

    def test_writes_acknowledged_while_alone_survive_losing_both_nodes(self):
        c = Cluster(self)
        backup, primary, ports, dirs = harness.durable_pair(c, durable="sync")
        primary.wait_for(harness.IN_SYNC_RE)
        primary.wait_for(SERVING_RE)
        load = harness.kvload_check(c, ports, seconds=8, seed=2501)
        harness.wait_until(lambda: (primary.acked_epoch() or 0) > 0, "writes acknowledged")
        backup.kill9()
        primary.wait_for(ALONE_RE)
        self.assertEqual(primary.count(ALONE_RE), 1, "said once:\n" + primary.text())
        harness.wait_until(lambda: (primary.status() or {}).get("state") == "protected_locally",
                           "status says protected_locally")
        # The local log acknowledges checkpoints taken while alone: kvload's writes
        # are answered from them (under sync, once on disk).
        harness.wait_until(lambda: (self.local_log(primary) or {}).get("acked_epoch", 0) > 0,
                           "a checkpoint acknowledged by the local log")
        log = self.local_log(primary)
        first = log["acked_epoch"]
        self.assertEqual(log["mode"], "sync")
        self.assertEqual(log["error"], "")
        harness.wait_until(lambda: (self.local_log(primary) or {}).get("acked_epoch", 0) > first + 5,
                           "more checkpoints acknowledged while alone")
        log = self.local_log(primary)
        self.assertLessEqual(log["acked_epoch"], log["durable_epoch"],
                             "acknowledged past what is on disk under sync")
        # Now the primary is lost too.
        primary.kill9()
        backup2 = harness.restart(c, backup, "backup-again")
        backup_epoch = int(backup2.wait_for(harness.READ_BACK_RE).group(1))
        primary2 = harness.restart(c, primary, "primary-again")
        own = primary2.wait_for(OWN_NEWER_RE)
        self.assertEqual(int(own.group(1)), backup_epoch, primary2.text())
        self.assertGreaterEqual(int(own.group(2)), log["acked_epoch"],
                                "an epoch acknowledged while alone is not on disk\n" +
                                primary2.text())
        primary2.wait_for(harness.IN_SYNC_RE)
        rc = load.wait()
        context = f"{primary.text()}\n{backup.text()}\n{primary2.text()}\n{backup2.text()}\n" \
                  f"{load.text()}"
        harness.check_kvload(self, load, rc, context)

    def test_a_backup_that_comes_back_is_synced_and_the_local_log_stops(self):
        c = Cluster(self)
        backup, primary, ports, dirs = harness.durable_pair(c, durable="sync")
        primary.wait_for(harness.IN_SYNC_RE)
        primary.wait_for(SERVING_RE)
        self.assertIsNone(primary.status()["local_log"], "no local log while protected")
        load = harness.kvload_check(c, ports, seconds=5, seed=2502)
        harness.wait_until(lambda: (primary.acked_epoch() or 0) > 0, "writes acknowledged")
        mark = primary.mark()
        backup.kill9()
        primary.wait_for(ALONE_RE, start=mark)
        harness.wait_until(lambda: (self.local_log(primary) or {}).get("acked_epoch", 0) > 0,
                           "a checkpoint acknowledged by the local log")
        # The backup comes back (its own command again): the primary goes back to it
        # without a pause in its checkpoints, with a full sync.
        backup2 = harness.restart(c, backup, "backup-again")
        stopped = primary.wait_for(r"this node's own log stopped at epoch (\d+) \(durable in "
                                   r"--data-dir \S+\): protecting to backup \S+ again",
                                   start=mark)
        synced = primary.wait_for(harness.IN_SYNC_RE, start=mark)
        self.assertGreater(int(synced.group(1)), int(stopped.group(1)),
                           "epochs keep increasing across streams\n" + primary.text())
        harness.wait_until(lambda: (primary.status() or {}).get("state") == "protected",
                           "protected by the backup again")
        self.assertIsNone(primary.status()["local_log"])
        rc = load.wait()
        context = f"{primary.text()}\n{backup.text()}\n{backup2.text()}\n{load.text()}"
        harness.check_kvload(self, load, rc, context)
        self.assertIsNone(backup2.find(harness.TAKEOVER_RE), context)

    @unittest.skipUnless(shutil.which("etcd"), "etcd is not installed (Debian: etcd-server)")
    def test_with_a_witness_output_leaves_once_recorded_and_fences_while_it_is_away(self):
        etcd = Etcd(self)
        c = Cluster(self)
        svc = harness.free_port()
        data = os.path.join(c.dir, "p_data")
        p = c.primary([harness.binary("kvstore")], harness.free_port(), name="A",
                      service_port=svc, extra=etcd.witness_args("alone") + ["--data-dir", data])
        # A fresh primary with a data directory waits to compare images with its
        # backup, which is not there: the operator lets it go on alone.
        p.wait_for(r"waiting for backup \S+ to compare durable images")
        rc, out, err = harness.cli("failover", "--control", p.control_path)
        self.assertEqual(rc, 0, err + p.text())
        p.wait_for(ALONE_RE)
        p.wait_for(SERVING_RE)
        client = LineClient(svc)
        self.assertEqual(client.request("SET alone 1"), "OK", p.text())
        replied = time.time()
        # Both records were logged (in local time, as the node logs) before the reply left:
        # the other node's image is older than what this one serves, and this one's
        # disk holds the pair's newest durable image.
        for key in ("unprotected", "image"):
            line = p.wait_for(rf"(\d\d):(\d\d):(\d\d\.\d+) romulus primary: recorded "
                              rf"/romulus/alone/{key} in the witness")
            logged = int(line.group(1)) * 3600 + int(line.group(2)) * 60 + float(line.group(3))
            local = time.localtime(replied)
            now = local.tm_hour * 3600 + local.tm_min * 60 + local.tm_sec + replied % 1
            ahead = (logged - now + 43200) % 86400 - 43200  # across midnight too
            self.assertLessEqual(ahead, 0.002,
                                 f"output left before the witness recorded {key}:\n" + p.text())
        self.assertEqual(p.status()["state"], "protected_locally")
        with etcd.stopped():
            p.wait_for(r"FENCED: ")
            self.assertEqual(p.status()["state"], "fenced")
        p.wait_for(r"ownership of the pair confirmed: the guest runs again")
        harness.wait_until(lambda: (p.status() or {}).get("state") == "protected_locally",
                           "protected by its own log again")
        self.assertEqual(client.request("GET alone"), "VALUE 1", p.text())
        client.close()


if __name__ == "__main__":
    unittest.main()
