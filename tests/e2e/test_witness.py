"""Ownership by a witness: a real etcd on loopback, real `romulus` nodes.

The rules (docs/design.md, "Ownership: the witness"):
  - nothing starts without the witness: one clear error line;
  - a backup takes over only by winning the key, i.e. after the old owner's lease;
  - a node that finds another owner rejoins it as its backup, on its own;
  - a primary that cannot renew fences (guest stopped, output held) and resumes
    when the witness answers again.
Each test that drives clients checks with romulus-kvload --check that no
acknowledged write was lost, and that the output-release intervals the nodes log
(RELEASED mono_ms=A..B) never overlap between the two nodes.

Two-host faults (partitions, loss) in network namespaces are in test_faults.py.
"""

import contextlib
import json
import os
import re
import shutil
import signal
import tempfile
import unittest
import urllib.request

import harness
from harness import Cluster

RELEASED_RE = r"RELEASED mono_ms=(\d+)\.\.(\d+) deadline_ms=(-?\d+)"


class Etcd:
    """One etcd member on free loopback ports, its data in a temp dir.

    pki (a harness.Pki): etcd serves https with a certificate from it (IP:127.0.0.1) and
    requires client certificates from it (--client-cert-auth); witness_args() is then
    etcds://."""

    def __init__(self, test, pki=None):
        self.dir = tempfile.mkdtemp(prefix="romulus-etcd-")
        self.client_port = harness.free_port()
        self.peer_port = harness.free_port()
        self.pki = pki
        self.url = f"{'https' if pki else 'http'}://127.0.0.1:{self.client_port}"
        tls = []
        if pki:
            cert, key = pki.issue("etcd-server", san="IP:127.0.0.1")
            tls = ["--cert-file", cert, "--key-file", key, "--trusted-ca-file", pki.ca,
                   "--client-cert-auth"]
        self.proc = harness.Proc("etcd", [
            shutil.which("etcd"), "--name", "e2e", "--data-dir", os.path.join(self.dir, "data"),
            "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
            "--listen-peer-urls", f"http://127.0.0.1:{self.peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.peer_port}",
            "--initial-cluster", f"e2e=http://127.0.0.1:{self.peer_port}",
            "--log-level", "warn", *tls])
        test.addCleanup(self.close)
        self._wait_ready()

    def _wait_ready(self):
        context = None
        if self.pki:
            import ssl
            context = ssl.create_default_context(cafile=self.pki.ca)
            context.load_cert_chain(*self.pki.issue("etcd-health"))

        def ok():
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1,
                                            context=context) as r:
                    return json.loads(r.read()).get("health") == "true"
            except Exception:
                return False
        harness.wait_until(ok, "etcd to be healthy\n" + self.proc.text())

    @contextlib.contextmanager
    def stopped(self):
        """etcd SIGSTOPped for the body of a `with`: it answers nothing, as if cut off."""
        os.kill(self.proc.proc.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.proc.proc.pid, signal.SIGCONT)

    def witness_args(self, pair):
        scheme = "etcds" if self.pki else "etcd"
        return ["--witness", f"{scheme}://127.0.0.1:{self.client_port}", "--pair", pair,
                "--lease-ttl", "2s"]

    def close(self):
        self.proc.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def released_intervals(node):
    return [(int(m.group(1)), int(m.group(2))) for m in node.find_all(RELEASED_RE)]


def assert_no_overlap(test, a_node, b_node):
    a = released_intervals(a_node)
    b = released_intervals(b_node)
    for x in a:
        for y in b:
            test.assertFalse(x[0] <= y[1] and y[0] <= x[1],
                             f"both nodes released output at once: {x} and {y}")


@unittest.skipUnless(shutil.which("etcd"), "etcd is not installed (Debian: etcd-server)")
@harness.require_binaries("romulus", "kvstore", "kvload")
class WitnessTest(unittest.TestCase):

    def pair(self, c, etcd, name):
        """A backup B and a primary A with the witness, each knowing the other's address."""
        a_port, b_port = harness.free_port(), harness.free_port()
        a_svc, b_svc = harness.free_port(), harness.free_port()
        kv = [harness.binary("kvstore")]
        w = etcd.witness_args(name)
        b = c.backup(kv, name="B", port=b_port, reprotect=a_port, service_port=b_svc, extra=w)
        a_argv_extra = w + ["--listen", f"127.0.0.1:{a_port}"]
        a = c.primary(kv, b_port, name="A", service_port=a_svc, extra=a_argv_extra)
        a.wait_for(harness.IN_SYNC_RE)
        return a, b, (a_port, b_port, a_svc, b_svc, a_argv_extra)

    def load(self, c, svcs, seconds):
        return c.proc("kvload", [
            harness.binary("kvload"), *sum((["--server", f"127.0.0.1:{p}"] for p in svcs), []),
            "--connections", "4", "--seconds", str(seconds), "--check", "--json", "--quiet",
            "--reconnect-timeout", "60s"])

    def report(self, load):
        self.assertEqual(load.wait(deadline=120), 0, load.text())
        out = [l for s, l in load.lines if s == "out"]
        r = json.loads(out[-1])
        self.assertEqual(r["check"]["acked_lost"], 0, r)
        self.assertEqual(r["check"]["corrupt"], 0, r)
        self.assertGreater(r["check"]["acked_writes"], 0, r)
        return r

    def one_protected_primary(self, nodes):
        def check():
            states = [n.status() for n in nodes if n.alive()]
            prim = [s for s in states if s and s["role"] == "primary"]
            if len(prim) == 1 and prim[0]["state"] == "protected":
                return prim[0]
            return None
        return harness.wait_until(check, "exactly one protected primary\n" +
                                  "\n".join(n.text() for n in nodes), deadline=60)

    def test_an_unreachable_witness_at_start_is_one_error_line(self):
        c = Cluster(self)
        dead = harness.free_port()
        p = c.primary([harness.binary("kvstore")], harness.free_port(), extra=[
            "--witness", f"etcd://127.0.0.1:{dead}", "--pair", "x"])
        self.assertNotEqual(p.wait(), 0)
        errors = [l for s, l in p.lines if s == "err" and "cannot reach the witness" in l]
        self.assertEqual(len(errors), 1, p.text())
        self.assertIn(f"127.0.0.1:{dead}", errors[0])
        self.assertFalse(p.find(r"guest pid \d+ attached"), "started a guest without the witness")

    def test_a_killed_primary_gives_its_lease_up_through_its_guard_and_rejoins_as_backup(self):
        etcd = Etcd(self)
        c = Cluster(self)
        a, b, (a_port, b_port, a_svc, b_svc, a_extra) = self.pair(c, etcd, "kill")
        a.wait_for(r"lease guard started \(pid \d+\)")
        load = self.load(c, [a_svc, b_svc], 8)
        a.wait_for(RELEASED_RE)
        a.kill9()  # the supervisor only: its lease guard outlives it
        # The guard saw it exit and revoked its lease: B need not wait for it to expire.
        a.wait_for(r"romulus \(pid \d+\) has exited holding lease \d+")
        a.wait_for(r"gave lease \d+ up \d+ ms after romulus")
        b.wait_for(harness.TAKEOVER_RE)
        # Its kernel closed the link: a FIN or, with bytes in flight, an RST.
        self.assertTrue(b.find(r"primary lost: connection (closed without GOODBYE|reset)"),
                        b.text())
        self.assertTrue(b.find(r"witness: candidate -> owner"), b.text())
        # The old primary comes back: the other node owns the pair, so it starts as its backup.
        a2 = c.primary([harness.binary("kvstore")], b_port, name="A2", service_port=a_svc,
                       extra=a_extra)
        a2.wait_for(r"owns the pair: starting as its backup")
        primary = self.one_protected_primary([a2, b])
        self.assertEqual(primary["witness"]["state"], "owner")
        self.report(load)
        self.assertFalse(a2.find(r"guest pid \d+ attached"), "A2 ran a guest as a second primary")

    def test_a_primary_killed_with_its_guard_is_taken_over_once_its_lease_expires(self):
        etcd = Etcd(self)
        c = Cluster(self)
        a, b, (a_port, b_port, a_svc, b_svc, a_extra) = self.pair(c, etcd, "killall")
        load = self.load(c, [a_svc, b_svc], 8)
        a.wait_for(RELEASED_RE)
        os.killpg(a.pid, signal.SIGKILL)  # supervisor and guard together (the guest follows)
        b.wait_for(harness.TAKEOVER_RE)
        # Nobody gave the lease up: B won the key only once it expired, as for a silent host.
        self.assertFalse(a.find(r"gave lease \d+ up"), a.text())
        self.assertTrue(b.find(r"witness: candidate -> owner"), b.text())
        self.report(load)

    def test_release_lease_gives_up_a_dead_nodes_lease_from_its_lease_file_only(self):
        """What the systemd units' ExecStopPost does after a crash in which the lease
        guard died with its node: `romulus release-lease` gives up the lease the node
        left in $ROMULUS_LEASE_FILE, and refuses while the node still runs."""
        etcd = Etcd(self)
        c = Cluster(self)
        a_port, b_port = harness.free_port(), harness.free_port()
        a_svc, b_svc = harness.free_port(), harness.free_port()
        kv = [harness.binary("kvstore")]
        w = etcd.witness_args("leasefile")
        lease_file = os.path.join(c.dir, "a.lease")
        b = c.backup(kv, name="B", port=b_port, reprotect=a_port, service_port=b_svc, extra=w)
        os.environ["ROMULUS_LEASE_FILE"] = lease_file
        try:
            a = c.primary(kv, b_port, name="A", service_port=a_svc,
                          extra=w + ["--listen", f"127.0.0.1:{a_port}"])
        finally:
            del os.environ["ROMULUS_LEASE_FILE"]
        a.wait_for(harness.IN_SYNC_RE)

        def lease_in_file():
            try:
                with open(lease_file) as f:
                    return re.search(r"^lease ([1-9]\d*)$", f.read(), re.M)
            except OSError:
                return None
        harness.wait_until(lease_in_file, "A's lease in its lease file\n" + a.text())
        release = [harness.binary("romulus"), "release-lease", "primary", "--lease-file",
                   lease_file, "--backup", f"127.0.0.1:{b_port}", *w, "--", *kv]
        # While A runs, its lease stays its own.
        early = c.proc("release-early", release)
        self.assertEqual(early.wait(), 0, early.text())
        self.assertTrue(early.find(r"romulus \(pid \d+\) is still running"), early.text())
        self.assertEqual(a.status()["witness"]["state"], "owner", a.text())
        load = self.load(c, [a_svc, b_svc], 8)
        a.wait_for(RELEASED_RE)
        os.killpg(a.pid, signal.SIGKILL)  # node and guard together, as systemd does
        a.proc.wait()
        late = c.proc("release", release)
        self.assertEqual(late.wait(), 0, late.text())
        self.assertTrue(late.find(r"romulus \(pid \d+\) has exited: gave its lease \d+ up"),
                        late.text())
        b.wait_for(harness.TAKEOVER_RE)
        self.assertTrue(re.search(r"^lease 0$", open(lease_file).read(), re.M))
        self.report(load)

    def test_a_stopped_primary_hands_the_pair_over_and_the_backup_takes_over(self):
        etcd = Etcd(self)
        c = Cluster(self)
        a, b, (a_port, b_port, a_svc, b_svc, a_extra) = self.pair(c, etcd, "stop")
        load = self.load(c, [a_svc, b_svc], 8)
        a.wait_for(RELEASED_RE)
        a.terminate()
        self.assertEqual(a.wait(), 0, a.text())
        self.assertTrue(a.find(r"gave the pair's lease up in the witness"), a.text())
        self.assertTrue(a.find(r"handing the pair over to the backup \(HANDOVER\)"), a.text())
        b.wait_for(harness.TAKEOVER_RE)
        self.assertTrue(b.find(r"primary handed over: .*HANDOVER"), b.text())
        # A started again rejoins the new owner as its backup.
        a2 = c.primary([harness.binary("kvstore")], b_port, name="A2", service_port=a_svc,
                       extra=a_extra)
        a2.wait_for(r"owns the pair: starting as its backup")
        self.one_protected_primary([a2, b])
        self.report(load)
        assert_no_overlap(self, a, b)

    def test_a_paused_primary_demotes_itself_and_rejoins_without_an_operator(self):
        etcd = Etcd(self)
        c = Cluster(self)
        a, b, (a_port, b_port, a_svc, b_svc, a_extra) = self.pair(c, etcd, "pause")
        load = self.load(c, [a_svc, b_svc], 10)
        a.wait_for(RELEASED_RE)
        os.kill(a.proc.pid, signal.SIGSTOP)   # the supervisor, not the guest
        try:
            b.wait_for(harness.TAKEOVER_RE)
        finally:
            os.kill(a.proc.pid, signal.SIGCONT)
        a.wait_for(r"DEMOTING")
        a.wait_for(r"backup listening on")
        primary = self.one_protected_primary([a, b])
        self.assertEqual(primary["peer"], f"127.0.0.1:{a_port}")
        self.report(load)
        assert_no_overlap(self, a, b)

    def test_an_unprotected_primary_fences_while_the_witness_is_away_and_resumes_after(self):
        etcd = Etcd(self)
        c = Cluster(self)
        p = c.primary([harness.binary("kvstore")], harness.free_port(), name="A",
                      extra=etcd.witness_args("fence"))
        p.wait_for(r"runs UNPROTECTED")
        with etcd.stopped():
            p.wait_for(r"FENCED: ")
            self.assertEqual(p.status()["state"], "fenced")
        p.wait_for(r"ownership of the pair confirmed: the guest runs again")
        harness.wait_until(lambda: p.status()["state"] == "unprotected", "unprotected again")


if __name__ == "__main__":
    unittest.main(verbosity=2)
