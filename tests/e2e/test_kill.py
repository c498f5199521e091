"""Kill -9 of the primary at many seeded random moments, a fresh pair each time.

Each cycle starts a backup and a primary on loopback, lets the primary run for a
random 0-400 ms from its start (some cycles very early: before or during the initial
sync) or from the end of its initial sync, and records the highest acknowledged epoch
A the primary reported on its control socket. Then the primary is killed with SIGKILL.
The spec:

  - a backup that completed its initial sync takes over and resumes the guest from an
    epoch E >= A (every acknowledged checkpoint survives), and the counter guest finds
    all its counters equal (the image is exactly one checkpoint, never a mix);
  - a backup that never completed its sync says it will not take over, and starts no
    guest.

Some cycles run romulus-dirtier at 20k pages/s over 4000 pages instead, so the kill
lands while big checkpoints are in flight; there the check is the takeover and E >= A.

The cycles run under the default --commit eager (these guests have no --service, so
their checkpoints come from the timer), and a few again under --commit interval.
test_output_commit.py kills primaries whose checkpoints clients' replies trigger.
"""

import os
import time
import unittest

import harness
from harness import Cluster

CYCLES = int(os.environ.get("ROMULUS_E2E_KILL_CYCLES", "56"))
# The same kills with the synchronous write-protect tracker (large-arena tracker).
SYNC_CYCLES = int(os.environ.get("ROMULUS_E2E_KILL_SYNC_CYCLES", "16"))
# The cycles above run under the default --commit eager; these under --commit interval.
INTERVAL_CYCLES = int(os.environ.get("ROMULUS_E2E_KILL_INTERVAL_CYCLES", "6"))
# The same kills with --tracker uffd-hybrid (chunks of the arena moved between the
# guest's two userfaultfds as they turn hot or cold).
HYBRID_CYCLES = int(os.environ.get("ROMULUS_E2E_KILL_HYBRID_CYCLES", "16"))
CONNECTED_RE = r"primary \S+ connected \(session"
RESUMED_FROM_RE = r"guest pid \d+ attached \(.*resumed from epoch (\d+)\)"


def plan(rng, cycles):
    """(delay in seconds, guest kind, measured from) per cycle. Counter cycles count the
    delay from the primary's start (every 8th very early: 0-30 ms), or every third one
    from the end of the initial sync; dirtier cycles (every 4th) from the end of the sync,
    so the kill lands among big checkpoints."""
    out = []
    for i in range(cycles):
        delay = rng.uniform(0.0, 0.03) if i % 8 == 0 else rng.uniform(0.0, 0.4)
        kind = "dirtier" if i % 4 == 3 else "counter"
        after = "sync" if kind == "dirtier" or i % 3 == 2 else "start"
        out.append((delay, kind, after))
    return out


@harness.require_binaries("romulus", "counter", "dirtier")
class KillPrimaryTest(unittest.TestCase):

    def run_cycle(self, i, delay, kind, after, tracker=None, commit=None, tls=False):
        # A failing cycle stops its processes at once, not at the test's end,
        # so the cycles after it (subtests) run on a quiet machine. tls: the pair's
        # link runs mutual TLS (test_tls.py runs these cycles that way).
        c = Cluster(self, commit=commit, tls=tls)
        try:
            return self._run_cycle(c, i, delay, kind, after, tracker)
        finally:
            c.close()

    def _run_cycle(self, c, i, delay, kind, after, tracker):
        if kind == "counter":
            guest = harness.counter_guest(50)
        else:
            guest = [harness.binary("dirtier"), "--pages-per-sec", "20000", "--span", "4000"]
        extra = ["--tracker", tracker] if tracker else []
        backup = c.backup(guest, name=f"backup{i}", extra=extra)
        primary = c.primary(guest, backup.listen_port, name=f"primary{i}", extra=extra)
        if after == "sync":
            primary.wait_for(harness.IN_SYNC_RE)

        # Run for `delay`, remembering the highest acknowledged epoch the primary reported.
        acked = 0
        end = time.monotonic() + delay
        while True:
            a = primary.acked_epoch()
            if a is not None:
                acked = max(acked, a)
            if time.monotonic() >= end:
                break
            time.sleep(0.005)
        if tracker == "uffd-hybrid":
            s = primary.status()
            self.chunk_moves_seen += (s or {}).get("tracker_chunk_moves", 0)
        primary.kill9()

        # Let the backup decide: it takes over, or says it will not, or (killed before
        # it ever saw a stream) stays a backup waiting for a primary. The last needs
        # the backup to be done with every connection the dead primary opened (the
        # kernel may still queue one it has not accepted, or one it has not read to
        # its end): only then can no "connected" line come any more.
        def decided():
            return backup.find(harness.TAKEOVER_RE) or backup.find(harness.REFUSES_RE)

        def settled():
            if decided():
                return True
            if harness.open_connections(backup.listen_port):
                return False
            return backup.find(CONNECTED_RE) is None

        harness.wait_until(settled, lambda: f"cycle {i}: the backup to react to the kill\n" +
                           backup.text())
        if not decided() and backup.find(CONNECTED_RE):
            # The line of a connection it has closed arrived after the look above.
            backup.wait_for(None, any_of=[harness.TAKEOVER_RE, harness.REFUSES_RE])
        synced = backup.find(harness.SYNCED_RE)
        take = backup.find(harness.TAKEOVER_RE)
        context = (f"cycle {i} ({kind}, kill {delay * 1000:.0f} ms after {after}, primary had "
                   f"acked epoch {acked})\n{primary.text()}\n{backup.text()}")
        if synced:
            self.assertIsNotNone(take, "a synced backup did not take over: " + context)
            epoch = int(take.group(2))
            self.assertGreaterEqual(epoch, acked,
                                    "resumed before an acknowledged epoch: " + context)
            self.assertGreaterEqual(epoch, int(synced.group(1)), context)
            m = backup.wait_for(RESUMED_FROM_RE)
            self.assertEqual(int(m.group(1)), epoch, context)
            if kind == "counter":
                resumed_epoch, _ = harness.check_counter_resume(self, backup)
                self.assertEqual(resumed_epoch, epoch, context)
            outcome = f"took over at epoch {epoch} (acked {acked})"
        else:
            # An ack without a completed sync is an acknowledged pre-copy round (a known
            # issue: see test_output_commit's pre-copy test); it is counted, not failed here.
            if acked:
                self.precopy_acks += 1
            self.assertIsNone(take, "a backup without a complete sync took over: " + context)
            if backup.find(CONNECTED_RE):
                # (A wait, not a look: its lines may still be on their way.)
                backup.wait_for(harness.REFUSES_RE)
            s = backup.status()
            self.assertIsNotNone(s, context)
            self.assertEqual(s["role"], "backup", context)
            self.assertFalse(s["image_consistent"], context)
            self.assertEqual(backup.guest_pids(), [], "a guest was started: " + context)
            outcome = "no takeover (never synced)"
        self.assertEqual(backup.count(harness.INCONSISTENT_RE), 0, context)
        c.close()
        return outcome

    def test_kill_at_random_moments_never_loses_an_acknowledged_epoch(self):
        rng, _ = harness.seeded_random("test_kill")
        outcomes = {"took over": 0, "no takeover": 0}
        self.precopy_acks = 0
        for i, (delay, kind, after) in enumerate(plan(rng, CYCLES)):
            with self.subTest(cycle=i, kind=kind, delay_ms=round(delay * 1000), after=after):
                outcome = self.run_cycle(i, delay, kind, after)
                harness.log(f"cycle {i:2d} {kind:7s} kill {delay * 1000:5.1f} ms after "
                            f"{after:5s}: {outcome}")
                outcomes["took over" if outcome.startswith("took") else "no takeover"] += 1
        harness.log(f"{CYCLES} cycles: {outcomes}; cycles where the primary reported an ack "
                    f"before the backup had a consistent image: {self.precopy_acks}")

    def test_kill_with_the_synchronous_tracker_never_loses_an_acknowledged_epoch(self):
        """The same spec with --tracker uffd-sync (first writes fault to the supervisor,
        which logs the page): a kill lands while pages are logged, re-protected, copied."""
        rng, _ = harness.seeded_random("test_kill_sync")
        self.precopy_acks = 0
        for i, (delay, kind, after) in enumerate(plan(rng, SYNC_CYCLES)):
            with self.subTest(cycle=i, kind=kind, delay_ms=round(delay * 1000), after=after):
                outcome = self.run_cycle(i, delay, kind, after, tracker="uffd-sync")
                harness.log(f"uffd-sync cycle {i:2d} {kind:7s} kill {delay * 1000:5.1f} ms "
                            f"after {after:5s}: {outcome}")

    def test_kill_with_the_hybrid_tracker_never_loses_an_acknowledged_epoch(self):
        """The same spec with --tracker uffd-hybrid: the counter's page turns its chunk
        asynchronous within two pauses (a move between the guest's userfaultfds, with the
        guest stopped), and the dirtier's pages theirs; kills land on both sides of those
        moves, and the counter guest's resume checks that no write was lost at a seam."""
        rng, _ = harness.seeded_random("test_kill_hybrid")
        self.precopy_acks = 0
        self.chunk_moves_seen = 0
        for i, (delay, kind, after) in enumerate(plan(rng, HYBRID_CYCLES)):
            with self.subTest(cycle=i, kind=kind, delay_ms=round(delay * 1000), after=after):
                outcome = self.run_cycle(i, delay, kind, after, tracker="uffd-hybrid")
                harness.log(f"uffd-hybrid cycle {i:2d} {kind:7s} kill {delay * 1000:5.1f} ms "
                            f"after {after:5s}: {outcome}")
        self.assertGreater(self.chunk_moves_seen, 0, "no cycle moved a chunk before its kill")

    def test_kill_under_interval_commit_never_loses_an_acknowledged_epoch(self):
        rng, _ = harness.seeded_random("test_kill_interval")
        self.precopy_acks = 0
        for i, (delay, kind, after) in enumerate(plan(rng, INTERVAL_CYCLES)):
            with self.subTest(cycle=i, kind=kind, delay_ms=round(delay * 1000), after=after):
                outcome = self.run_cycle(i, delay, kind, after, commit="interval")
                harness.log(f"interval cycle {i:2d} {kind:7s} kill {delay * 1000:5.1f} ms "
                            f"after {after:5s}: {outcome}")


if __name__ == "__main__":
    unittest.main(verbosity=2)
