"""Failover, then re-protection, twice.

Three backups in a chain: B1 protects to B2 after taking over, B2 to B3. The spec:

  - kill -9 of the primary P: B1 takes over, resumes the counter guest consistently
    and protects it again by syncing to B2 ("in sync at epoch");
  - kill -9 of B1 (now the primary): B2 takes over from what B1 checkpointed, syncs to
    B3;
  - kill -9 of B2: B3 takes over;
  - every resume is consistent, and each resumes at a later epoch and a larger counter
    value than the one before (the guest's progress survives every hop).
"""

import unittest

import harness
from harness import Cluster


@harness.require_binaries("romulus", "counter")
class ReprotectTest(unittest.TestCase):

    def wait_protected(self, node, c):
        """Waits until `node` (a primary) is in sync and has acked a few checkpoints;
        returns the last acknowledged epoch it reported."""
        node.wait_for(harness.IN_SYNC_RE)
        first = harness.wait_until(lambda: node.acked_epoch(), "a first ack\n" + c.logs())
        return harness.wait_until(
            lambda: (lambda a: a if a and a >= first + 3 else None)(node.acked_epoch()),
            "acknowledged checkpoints\n" + c.logs())

    def test_failover_then_reprotection_twice(self):
        c = Cluster(self)
        guest = harness.counter_guest(50)
        b3 = c.backup(guest, name="B3")
        b2 = c.backup(guest, name="B2", reprotect=b3.listen_port)
        b1 = c.backup(guest, name="B1", reprotect=b2.listen_port)
        p = c.primary(guest, b1.listen_port, name="P")

        acked = self.wait_protected(p, c)
        resumes = []
        for victim, heir, next_backup in ((p, b1, b2), (b1, b2, b3), (b2, b3, None)):
            victim.kill9()
            heir.wait_for(harness.TAKEOVER_RE)
            epoch, value = harness.check_counter_resume(self, heir)
            self.assertGreaterEqual(epoch, acked, c.logs())
            harness.log(f"{heir.name} took over from {victim.name} at epoch {epoch} with "
                        f"counter value {value} (the last ack seen was {acked})")
            if resumes:
                self.assertGreater(epoch, resumes[-1][0], c.logs())
                self.assertGreater(value, resumes[-1][1], c.logs())
            resumes.append((epoch, value))
            if next_backup is not None:
                m = heir.wait_for(
                    rf"backup 127\.0\.0\.1:{next_backup.listen_port} in sync at epoch (\d+)")
                self.assertGreater(int(m.group(1)), epoch, c.logs())
                next_backup.wait_for(harness.SYNCED_RE)
                s = heir.status()
                self.assertEqual(s["role"], "primary", s)
                self.assertTrue(s["resumed"], s)
                acked = self.wait_protected(heir, c)
        self.assertEqual(len(resumes), 3)


if __name__ == "__main__":
    unittest.main(verbosity=2)
