"""A protected virtual machine (--vm) with a witness (--witness): ownership decides
the VM's failover as any guest's (docs/operations.md, "Protecting a virtual machine"
and "Running with a witness").

  - kill -9 of the primary's supervisor under romulus-kvload --check: its lease guard
    gives the lease up, the backup wins the key, starts QEMU over the committed image
    with the committed devices, and the VM goes on (no second boot): 0 acknowledged
    writes lost;
  - the old primary started again with its unchanged command finds the other node
    owning the pair and starts as its backup: the VM is protected again, with exactly
    one primary, the witness's owner.

This pair tracks the VM's RAM with --tracker compare (QEMU runs without the preload
library), so that the compare path of a VM is run end to end too; test_vm runs the
default, the uffd tracker inside QEMU.

Skipped, with the reason, when QEMU, the example image or etcd is missing.
"""

import json
import shutil
import time
import unittest

import harness
from harness import Cluster
from test_vm import IMAGE, WHY, TAKEOVER_VM_RE, VM_RUNNING_RE, qemu_command, wait_for_service
from test_witness import Etcd


@unittest.skipIf(IMAGE is None, WHY)
@unittest.skipUnless(shutil.which("etcd"), "etcd is not installed (Debian: etcd-server)")
@harness.require_binaries("romulus", "kvload")
class VmWitnessTest(unittest.TestCase):

    def test_a_killed_vm_primary_is_taken_over_by_the_owner_and_rejoins_as_its_backup(self):
        etcd = Etcd(self)
        c = Cluster(self, memory="256M", interval="50ms")
        qemu = qemu_command(IMAGE)
        a_port, b_port = harness.free_port(), harness.free_port()
        a_svc, b_svc = harness.free_port(), harness.free_port()
        w = etcd.witness_args("vm") + ["--tracker", "compare"]
        b = c.backup(qemu, name="B", port=b_port, reprotect=a_port, service_port=b_svc,
                     extra=["--vm", *w])
        a_extra = ["--vm", *w, "--listen", f"127.0.0.1:{a_port}"]
        a = c.primary(qemu, b_port, name="A", service_port=a_svc, extra=a_extra)
        a.wait_for(VM_RUNNING_RE + r" \(256 MiB of guest RAM in the arena, compare tracker")
        a.wait_for(harness.IN_SYNC_RE)
        a.wait_for(r"lease guard started \(pid \d+\)")
        wait_for_service(a_svc)
        load = c.proc("kvload", [
            harness.binary("kvload"), "--server", f"127.0.0.1:{a_svc}", "--server",
            f"127.0.0.1:{b_svc}", "--connections", "4", "--keys", "200", "--seconds", "5",
            "--check", "--json", "--quiet", "--seed", "28", "--reconnect-timeout", "60s",
            "--request-timeout", "30s"])
        time.sleep(2.0)
        a.kill9()  # the supervisor only: its lease guard gives the lease up
        a.wait_for(r"gave lease \d+ up \d+ ms after romulus")
        take = b.wait_for(harness.TAKEOVER_RE)
        self.assertTrue(b.find(r"witness: candidate -> owner"), b.text())
        resumed = b.wait_for(TAKEOVER_VM_RE)
        self.assertEqual(resumed.group(1), take.group(2), b.text())
        rc = load.wait(deadline=180)
        harness.check_kvload(self, load, rc, f"{a.text()}\n{b.text()}\n{load.text()}")
        self.assertIsNone(b.find(r"SeaBIOS"), "the backup's VM booted again instead of going on")
        # The old primary comes back with its own command: B owns the pair, so A
        # starts as its backup (no second VM), and the VM is protected again.
        mark = b.mark()
        a2 = c.primary(qemu, b_port, name="A2", service_port=a_svc, extra=a_extra)
        a2.wait_for(r"owns the pair: starting as its backup")
        b.wait_for(harness.IN_SYNC_RE, start=mark)
        a2.wait_for(harness.SYNCED_RE)
        s = b.status()
        self.assertEqual((s["role"], s["witness"]["state"]), ("primary", "owner"),
                         json.dumps(s)[:2000])
        self.assertFalse(a2.find(VM_RUNNING_RE), "A2 ran the VM as a second primary\n" + a2.text())


if __name__ == "__main__":
    unittest.main()
