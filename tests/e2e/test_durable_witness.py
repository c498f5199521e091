"""The durable image with a witness: the witness records which node holds the pair's
newest durable image (/romulus/<pair>/image; docs/design.md, "The durable image";
docs/operations.md, "Losing both nodes").

Two nodes A (`romulus primary`) and B (`romulus backup`), each with a --data-dir of its
own, --listen and the other as --reprotect, with a real etcd as the witness:

  - a backup records itself in the witness once a stream's base is on its disk, before
    it acknowledges anything of that stream (--durable sync);
  - kill -9 of both under romulus-kvload --check; the node the record does not name,
    started again alone, waits for its peer, and `romulus failover` on it is refused
    with one line naming the holder; once the holder is started too, it takes the pair
    over from its image and the other rejoins it as its backup, recording itself in
    turn: 0 acknowledged writes lost;
  - kill -9 of both again; the node the record names, started again alone, starts the
    guest from its own image at once, without its peer: 0 acknowledged writes lost; the
    peer started later becomes its backup.
"""

import base64
import json
import os
import shutil
import time
import unittest
import urllib.request

import harness
from harness import Cluster
from test_output_commit import SERVING_RE
from test_witness import Etcd

RECORDED_RE = r"recorded (\S+) in the witness: this node holds the newest durable image " \
              r"\(from epoch (\d+)\)"
STARTS_AT_ONCE_RE = r"the witness records this node as holding the newest durable image " \
                    r"\(from epoch (\d+); its --data-dir holds epoch (\d+)\): the guest " \
                    r"starts from it without asking backup"
WAITING_RE = r"waiting for backup \S+ to compare durable images"


def image_record(etcd, pair):
    """The record's value at the witness (a dict), or None."""
    body = json.dumps({"key": base64.b64encode(f"/romulus/{pair}/image".encode()).decode()})
    req = urllib.request.Request(etcd.url + "/v3/kv/range", data=body.encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        kvs = json.loads(r.read()).get("kvs", [])
    return json.loads(base64.b64decode(kvs[0]["value"])) if kvs else None


@unittest.skipUnless(shutil.which("etcd"), "etcd is not installed (Debian: etcd-server)")
@harness.require_binaries("romulus", "kvstore", "kvload")
class DurableWitnessTest(unittest.TestCase):

    def kvload(self, c, svcs, seconds, seed):
        return c.proc("kvload", [
            harness.binary("kvload"), *sum((["--server", f"127.0.0.1:{p}"] for p in svcs), []),
            "--connections", "4", "--keys", "200", "--seconds", str(seconds), "--check",
            "--json", "--quiet", "--seed", str(seed), "--reconnect-timeout", "60s",
            "--request-timeout", "30s"])

    def test_the_recorded_holder_starts_alone_and_the_other_waits_for_it(self):
        etcd = Etcd(self)
        c = Cluster(self)
        pair = "durable"
        a_port, b_port = harness.free_port(), harness.free_port()
        a_svc, b_svc = harness.free_port(), harness.free_port()
        kv = [harness.binary("kvstore")]
        w = etcd.witness_args(pair)
        b = c.backup(kv, name="B", port=b_port, reprotect=a_port, service_port=b_svc,
                     extra=[*w, "--node-id", "B", "--data-dir", os.path.join(c.dir, "b_data")])
        a = c.primary(kv, b_port, name="A", service_port=a_svc,
                      extra=[*w, "--node-id", "A", "--data-dir", os.path.join(c.dir, "a_data"),
                             "--listen", f"127.0.0.1:{a_port}"])
        a.wait_for(harness.IN_SYNC_RE)
        a.wait_for(SERVING_RE)
        # The backup names itself before its first ACK of the stream.
        recorded = b.wait_for(RECORDED_RE)
        self.assertEqual(recorded.group(1), f"/romulus/{pair}/image", b.text())
        self.assertEqual(image_record(etcd, pair),
                         {"node": "B", "epoch": int(recorded.group(2))})

        load = self.kvload(c, (a_svc, b_svc), seconds=8, seed=31)
        time.sleep(1.5)
        a.kill9()
        b.kill9()
        # A comes back alone: B holds the newest image, so A waits for it, and an
        # operator's failover is refused.
        a2 = harness.restart(c, a, "A2")
        a2.wait_for(WAITING_RE)
        harness.wait_until(lambda: harness.control(a2.control_path, "ping"), "control socket")
        rc, out, err = harness.cli("failover", "--control", a2.control_path)
        self.assertNotEqual(rc, 0, out + a2.text())
        self.assertIn("the witness records node B as holding the newest durable image",
                      out + err)
        self.assertEqual(a2.status()["state"], "comparing_images")
        self.assertIsNone(a2.find(r"guest pid \d+ attached"), a2.text())
        # B comes back: A hands the pair to it; A rejoins as its backup and now holds
        # the newest durable image in turn.
        mark = a2.mark()
        b2 = harness.restart(c, b, "B2")
        b2.wait_for(harness.TAKEOVER_RE)
        a2.wait_for(harness.SYNCED_RE, start=mark)
        recorded = a2.wait_for(RECORDED_RE, start=mark)
        harness.wait_until(lambda: (image_record(etcd, pair) or {}).get("node") == "A",
                           "the record to name A")
        harness.check_kvload(self, load, load.wait(deadline=120),
                             f"{a.text()}\n{b.text()}\n{a2.text()}\n{b2.text()}")

        # Both lost again: A, named by the record, starts alone without waiting for B.
        load = self.kvload(c, (a_svc, b_svc), seconds=6, seed=32)
        time.sleep(1.5)
        a2.kill9()
        b2.kill9()
        a3 = harness.restart(c, a2, "A3")
        alone = a3.wait_for(STARTS_AT_ONCE_RE)
        self.assertGreaterEqual(int(alone.group(2)), int(alone.group(1)), a3.text())
        a3.wait_for(SERVING_RE)
        self.assertIsNone(a3.find(WAITING_RE), a3.text())
        harness.check_kvload(self, load, load.wait(deadline=120),
                             f"{a2.text()}\n{b2.text()}\n{a3.text()}")
        # B started again becomes A3's backup, and records itself once its base is on disk.
        mark = a3.mark()
        b3 = harness.restart(c, b2, "B3")
        a3.wait_for(harness.IN_SYNC_RE, start=mark)
        b3.wait_for(RECORDED_RE)
        self.assertEqual(a3.status()["role"], "primary")


if __name__ == "__main__":
    unittest.main()
