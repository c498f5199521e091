"""Output commit: a client sees a reply only once the state behind it is on the backup.

romulus-kvstore runs behind the primary's --service proxy. The spec:

  - while the backup's ACKs are held (by a relay on the backup->primary direction), a
    `SET` gets no reply; once they flow again, the reply arrives;
  - no reply is released before the backup holds a consistent image: a reply that
    arrives during the initial sync means that image exists by then (acks of pre-copy
    rounds are not commits);
  - kill -9 of the primary at 30+ seeded random moments under romulus-kvload --check
    (which fails over to the backup's --service address): no acknowledged write is
    ever lost, and nothing read back is corrupt;
  - under --commit eager (the default), a held reply starts a checkpoint at once
    (output-triggered checkpoints are counted in status), and a guest waiting for its
    next request waits for no --min-gap (status counts those checkpoints).
Every test runs under eager (OutputCommitTest) and again under --commit interval
(OutputCommitIntervalTest, with fewer kill cycles).
"""

import json
import os
import socket
import subprocess
import time
import unittest

import harness
from harness import Cluster

CYCLES = int(os.environ.get("ROMULUS_E2E_KV_CYCLES", "32"))
# The same tests under --commit interval (the default is eager): fewer kill cycles.
INTERVAL_CYCLES = int(os.environ.get("ROMULUS_E2E_KV_INTERVAL_CYCLES", "6"))
SERVING_RE = r"serving clients on"
# The primary's proxy serves before the guest listens (it holds a client that
# comes between the two, for a while); tests that time their first request
# wait for the guest too.
GUEST_LISTENING_RE = r"romulus-kvstore: listening on"


class LineClient:
    """A blocking line-protocol client for romulus-kvstore."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=harness.DEADLINE)
        self.buf = b""

    def send(self, line):
        self.sock.sendall(line.encode() + b"\n")

    def reply(self, timeout=harness.DEADLINE):
        """The next reply line, or None if none arrives within `timeout`."""
        self.sock.settimeout(timeout)
        end = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = end - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return None
            if not chunk:
                raise AssertionError("the server closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode().rstrip("\r")

    def request(self, line):
        self.send(line)
        r = self.reply()
        if r is None:
            raise AssertionError(f"no reply to {line!r}")
        return r

    def close(self):
        self.sock.close()


@harness.require_binaries("romulus", "kvstore", "kvload")
class OutputCommitTest(unittest.TestCase):
    COMMIT = "eager"
    KILL_CYCLES = CYCLES
    REPLIES = 50  # sequential requests in the waiting-guest test

    def cluster(self, **kw):
        return Cluster(self, commit=self.COMMIT, **kw)

    def client(self, port):
        cl = LineClient(port)
        self.addCleanup(cl.close)
        return cl

    def test_reply_is_held_while_acks_are_held_and_released_with_them(self):
        # A long failover timeout, so held acks never make the primary give up on its
        # backup (which would release output at once, unprotected).
        c = self.cluster(heartbeat="50ms", failover_timeout="10s")
        kv = [harness.binary("kvstore")]
        backup = c.backup(kv, service_port=harness.free_port())
        relay = c.relay(backup.listen_port)
        svc = harness.free_port()
        primary = c.primary(kv, relay.port, service_port=svc)
        primary.wait_for(harness.IN_SYNC_RE)
        primary.wait_for(SERVING_RE)
        primary.wait_for(GUEST_LISTENING_RE)
        cl = self.client(svc)
        self.assertEqual(cl.request("SET before hold"), "OK")

        relay.hold_acks()
        cl.send("SET during hold")
        # Wait for the events that make the silence mean something: the guest answered
        # (the proxy holds the reply), and the backup committed the checkpoint that
        # covers it, so only its ack, held in the relay, is missing. (The reply's epoch
        # is at most sent_epoch + 2 once the proxy holds it: one checkpoint may be
        # between its pause and its end.)
        harness.wait_until(lambda: primary.status()["output"]["bytes_held"] > 0,
                           lambda: "the proxy to hold the reply\n" + c.logs())
        covering = primary.status()["primary"]["sent_epoch"] + 2
        harness.wait_until(lambda: backup.status()["last_committed_epoch"] >= covering,
                           lambda: f"the backup to commit epoch {covering}\n" + c.logs())
        self.assertIsNone(cl.reply(timeout=1.5), "a reply came out before its checkpoint "
                          "was acknowledged\n" + c.logs())
        self.assertEqual(primary.status()["state"], "protected")

        relay.release_acks()
        self.assertEqual(cl.reply(), "OK", c.logs())
        self.assertEqual(cl.request("GET during"), "VALUE hold")
        self.assertEqual(primary.status()["state"], "protected")

    def test_status_shows_the_output_held_while_acks_are_held(self):
        c = self.cluster(heartbeat="50ms", failover_timeout="10s")
        kv = [harness.binary("kvstore")]
        backup = c.backup(kv)
        relay = c.relay(backup.listen_port)
        svc = harness.free_port()
        primary = c.primary(kv, relay.port, service_port=svc)
        primary.wait_for(harness.IN_SYNC_RE)
        cl = self.client(svc)
        self.assertEqual(cl.request("SET a 1"), "OK")
        relay.hold_acks()
        cl.send("SET b 2")
        out = harness.wait_until(
            lambda: (lambda o: o if o["bytes_held"] > 0 and o["oldest_held_ms"] > 0 else None)(
                primary.status()["output"]),
            "status to show the held reply (output.bytes_held, output.oldest_held_ms)")
        self.assertEqual(out["bytes_held"], len("OK\n"))
        relay.release_acks()
        self.assertEqual(cl.reply(), "OK")

    def test_no_reply_is_released_before_the_backup_holds_a_consistent_image(self):
        """A reply read during the initial sync waits for the sync's first consistent
        checkpoint: the ack of a pre-copy round (whose image is not a state of the guest,
        so the backup would not take over on it) must not release it."""
        c = self.cluster(heartbeat="50ms", failover_timeout="20s")
        kv = [harness.binary("kvstore")]
        backup = c.backup(kv)
        relay_port = harness.free_port()
        svc = harness.free_port()
        # No backup yet: the primary runs unprotected while we give the guest ~12 MiB of
        # data, more than the socket buffers hold, so round 0 of the sync blocks.
        primary = c.primary(kv, relay_port, service_port=svc)
        primary.wait_for(r"unreachable: .*UNPROTECTED")
        primary.wait_for(SERVING_RE)
        primary.wait_for(GUEST_LISTENING_RE)
        cl = self.client(svc)
        value = "x" * 8000
        for i in range(0, 1500, 100):
            cl.send("\n".join(f"SET fill{j} {value}" for j in range(i, i + 100)))
            for _ in range(100):
                self.assertEqual(cl.reply(), "OK")

        # The relay lets the handshake through, then holds the stream: round 0 blocks.
        relay = c.relay(backup.listen_port, port=relay_port)
        relay.limit(64 * 1024)
        mark = primary.mark()
        primary.wait_for(r"connected to backup .* full live sync", start=mark)
        cl.send("SET during sync")  # read while round 0 is in flight
        harness.wait_until(lambda: primary.status()["output"]["bytes_to_guest"] > 0 and
                           backup.status()["precopy_rounds_applied"] == 0,
                           "the SET to reach the guest during round 0\n" + c.logs())
        # The guest answers; the proxy reads the reply (tagged with this sync) and holds it.
        harness.wait_until(lambda: primary.status()["output"]["bytes_held"] > 0,
                           lambda: "the proxy to hold the reply during round 0\n" + c.logs())
        self.assertEqual(primary.status()["state"], "syncing", c.logs())
        self.assertEqual(backup.status()["precopy_rounds_applied"], 0, c.logs())

        # Now let the pre-copy rounds through, but not the first consistent checkpoint.
        relay.stop_before_consistent_checkpoint()
        relay.unlimit()
        harness.wait_until(relay.stopped_at_consistent.is_set,
                           "the stream to reach its first consistent checkpoint\n" + c.logs())
        s = harness.wait_until(
            lambda: (lambda s: s if s["precopy_rounds_applied"] >= 2 else None)(backup.status()),
            "the backup to apply the pre-copy rounds\n" + c.logs())
        harness.log(f"stream held before the first consistent checkpoint; backup: {s}")
        self.assertFalse(s["image_consistent"])
        self.assertIsNone(
            cl.reply(timeout=1.5),
            "a reply was released while the backup had no consistent image (the ack of a "
            f"pre-copy round released it); backup status {backup.status()}, primary acked "
            f"epoch {primary.status()['primary']['acked_epoch']}\n" + c.logs())
        relay.unlimit()
        self.assertEqual(cl.reply(), "OK", c.logs())
        self.assertTrue(backup.status()["image_consistent"])

    def test_kill_under_load_never_loses_an_acknowledged_write(self):
        rng, _ = harness.seeded_random(f"test_output_commit kill {self.COMMIT}")
        totals = {"acked_writes": 0, "unacked_writes": 0, "unacked_found": 0, "reconnects": 0}
        for i in range(self.KILL_CYCLES):
            delay = rng.uniform(0.05, 0.8)
            seed = rng.randrange(1 << 31)
            # Odd cycles pipeline: several writes of a connection in flight
            # when the primary dies, answered (and released) in one batch.
            pipeline = 1 if i % 2 == 0 else rng.choice([4, 16])
            with self.subTest(cycle=i, delay_ms=round(delay * 1000), kvload_seed=seed,
                              pipeline=pipeline):
                report = self.kill_cycle(i, delay, seed, pipeline)
                chk = report["check"]
                for k in ("acked_writes", "unacked_writes", "unacked_found"):
                    totals[k] += chk[k]
                totals["reconnects"] += report["reconnects"]
                harness.log(f"cycle {i:2d} pipeline {pipeline:2d}, kill {delay * 1000:5.1f} ms into the load: "
                            f"ops {report['ops']}, check {chk}")
        harness.log(f"{self.KILL_CYCLES} cycles (--commit {self.COMMIT}): {totals}")

    def kill_cycle(self, i, delay, seed, pipeline, tls=False):
        # A failing cycle stops its processes at once, not at the test's end,
        # so the cycles after it (subtests) run on a quiet machine. tls: the
        # link runs mutual TLS (test_tls.py runs cycles that way).
        c = self.cluster(tls=tls)
        try:
            return self._kill_cycle(c, i, delay, seed, pipeline)
        finally:
            c.close()

    def _kill_cycle(self, c, i, delay, seed, pipeline):
        kv = [harness.binary("kvstore")]
        backup_svc, primary_svc = harness.free_port(), harness.free_port()
        backup = c.backup(kv, name=f"backup{i}", service_port=backup_svc)
        primary = c.primary(kv, backup.listen_port, name=f"primary{i}", service_port=primary_svc)
        primary.wait_for(harness.IN_SYNC_RE)
        primary.wait_for(SERVING_RE)
        load = c.proc(f"kvload{i}", [
            harness.binary("kvload"), "--server", f"127.0.0.1:{primary_svc}", "--server",
            f"127.0.0.1:{backup_svc}", "--connections", "4", "--pipeline", str(pipeline), "--keys", "200", "--seconds", "1.2",
            "--check", "--json", "--quiet", "--seed", str(seed), "--reconnect-timeout", "20s",
            "--request-timeout", "10s"])
        time.sleep(delay)
        primary.kill9()
        take = backup.wait_for(harness.TAKEOVER_RE)
        try:
            rc = load.wait()
        except subprocess.TimeoutExpired:
            self.fail(f"kvload did not finish\n{load.text()}\n{backup.text()}")
        reports = [line for stream, line in load.lines if stream == "out" and line.startswith("{")]
        context = f"cycle {i}\n{primary.text()}\n{backup.text()}\n{load.text()}"
        self.assertEqual(len(reports), 1, context)
        report = json.loads(reports[0])
        self.assertEqual(report["check"]["acked_lost"], 0, "acknowledged writes lost: " + context)
        self.assertEqual(report["check"]["corrupt"], 0, context)
        self.assertEqual(rc, 0, context)
        self.assertGreater(int(take.group(2)), 0)
        c.close()
        return report

    def test_replies_trigger_checkpoints_and_a_waiting_guest_waits_for_no_gap(self):
        """Sequential requests, one in flight, under a 60 s interval and the longest
        --min-gap (1 s): under eager each held reply starts a checkpoint (counted as
        output-triggered in status), so every reply comes within one interval. Between
        requests kvstore is blocked waiting for the next one, so the primary sees it
        waiting and takes each checkpoint without the gap: status counts every output
        checkpoint as taken while the guest waited. Counts, not timings: each reply
        needs a checkpoint of its own (the next request goes out only after the reply
        to the one before, released by a finished checkpoint), and the timer fires at
        most once while they run. (The gap and the stopped-fraction budget of a
        runnable guest are checked on a fake clock: tests/checkpoint/commit_trigger_test.cc.)"""
        if self.COMMIT != "eager":
            self.skipTest("eager only")
        c = self.cluster(interval="60s")
        kv = [harness.binary("kvstore")]
        backup = c.backup(kv)
        svc = harness.free_port()
        primary = c.primary(kv, backup.listen_port, service_port=svc,
                            extra=["--min-gap", "1s", "--max-stopped-fraction", "0.25"])
        primary.wait_for(harness.IN_SYNC_RE)
        cl = self.client(svc)
        self.assertEqual(cl.request("SET warm 1"), "OK")
        before = primary.status()["primary"]["checkpoints"]
        start = time.monotonic()
        for i in range(self.REPLIES):
            # Each waits for its reply (a deadline only a hang reaches, well inside
            # the interval): a reply that waited for the timer fails here.
            self.assertEqual(cl.request(f"SET k{i} {i}"), "OK")
        elapsed = time.monotonic() - start
        # The engine counts a checkpoint after sending it, and the backup's ack can
        # release the last reply before that: wait for the count (a deadline only a
        # hang reaches), then check it.
        deadline = time.monotonic() + 20
        while True:
            after = primary.status()["primary"]["checkpoints"]
            output = after["output"] - before["output"]
            timer = after["timer"] - before["timer"]
            if output + timer >= self.REPLIES or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        waiting = after["output_guest_waiting"] - before["output_guest_waiting"]
        harness.log(f"{self.REPLIES} replies, {output} output ({waiting} with the guest "
                    f"waiting) and {timer} timer checkpoints in {elapsed:.2f} s")
        # At most one timer checkpoint fits (60 s interval): the replies were released
        # by checkpoints their own output started.
        self.assertLessEqual(timer, 1, c.logs())
        self.assertGreaterEqual(output, self.REPLIES - timer, "replies waited for the timer\n"
                                + c.logs())
        # A runnable guest's output would have waited for the 1 s gap. Two may
        # have found kvstore runnable after the gap had passed anyway (more than
        # a second from one pause to the next request's reply: a machine that
        # slow); a primary that never saw it waiting counts none.
        self.assertGreaterEqual(waiting, output - 2, "output checkpoints that found kvstore "
                                "runnable\n" + c.logs())
        s = primary.status()
        # Where the replies' time went: every hop of the path is reported, in order
        # p50 <= p99 <= max (values, not timings, are checked).
        path = s["primary"]["output_path_ms"]
        self.assertGreater(path["checkpoints"], 0, json.dumps(path))
        for hop in ("wait", "pause", "send", "ack", "release"):
            d = path[hop]
            self.assertTrue(0 <= d["p50"] <= d["p99"] <= d["max"], f"{hop}: {d}")
        self.assertEqual(s["output"]["release_after_ack_ms"], path["release"])
        self.assertEqual(s["commit"], "eager")
        self.assertGreater(s["checkpoints_per_sec"]["output"], 0)
        self.assertGreater(s["guest_stopped_fraction"], 0)
        self.assertLess(s["guest_stopped_fraction"], 1)

    def test_set_commit_switches_the_mode_at_run_time(self):
        if self.COMMIT != "eager":
            self.skipTest("eager only")
        c = self.cluster(interval="1s")
        kv = [harness.binary("kvstore")]
        backup = c.backup(kv)
        svc = harness.free_port()
        primary = c.primary(kv, backup.listen_port, service_port=svc)
        primary.wait_for(harness.IN_SYNC_RE)
        cl = self.client(svc)
        def outputs():
            return primary.status()["primary"]["checkpoints"]["output"]

        first = outputs()
        self.assertEqual(cl.request("SET a 1"), "OK")
        # The ack can release the reply before the engine has counted the checkpoint
        # that carried it: wait for the count, so that it is not counted below.
        deadline = time.monotonic() + 20
        while outputs() <= first and time.monotonic() < deadline:
            time.sleep(0.01)
        rc, _, err = harness.cli("set", "commit", "interval", "--control", primary.control_path)
        self.assertEqual(rc, 0, err)
        self.assertEqual(primary.status()["commit"], "interval")
        before = primary.status()["primary"]["checkpoints"]["output"]
        for i in range(3):
            self.assertEqual(cl.request(f"SET b{i} 1"), "OK")
        self.assertEqual(primary.status()["primary"]["checkpoints"]["output"], before,
                         "an output-triggered checkpoint under --commit interval")
        rc, out, err = harness.cli("set", "commit", "sometimes", "--control",
                                   primary.control_path)
        self.assertNotEqual(rc, 0)
        self.assertIn("eager or interval", out + err)
        rc, out, err = harness.cli("primary", "--backup", "null", "--commit", "sometimes", "--",
                                   "true")
        self.assertNotEqual(rc, 0)
        self.assertIn("--commit 'sometimes': use eager or interval", err)


class OutputCommitIntervalTest(OutputCommitTest):
    COMMIT = "interval"
    KILL_CYCLES = INTERVAL_CYCLES


if __name__ == "__main__":
    unittest.main(verbosity=2)
