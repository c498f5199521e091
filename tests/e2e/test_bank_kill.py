"""The bank over the romulus SQLite VFS: kill -9 of the primary under concurrent
transfers, in both journal modes (WAL and rollback journal), never loses an
acknowledged transfer and never leaves a partial one.

Each cycle starts a backup and a primary protecting romulus-bank (its database in
the arena), runs romulus-bankload --check against the primary's service address
with the backup's as failover, kills the primary with SIGKILL at a seeded random
moment of the load, and waits for the backup to take over and the load to finish.
The spec, every cycle:

  - the backup takes over, and the bank resumes on its image (SQLite's own hot
    journal rollback or WAL recovery runs there);
  - bankload's check: every transfer acknowledged OK is in the log with its
    accounts and amount (acked_lost 0, mismatched 0), and AUDIT is ok: PRAGMA
    integrity_check ok, the total unchanged, every balance equal to what the log
    says (no partial transaction survived).

ROMULUS_E2E_BANK_CYCLES cycles per journal mode (default 3: CI's short variant);
scripts/bank-kill runs the long one (30+ per mode).
"""

import json
import os
import socket
import subprocess
import time
import unittest

import harness
from harness import Cluster

CYCLES = int(os.environ.get("ROMULUS_E2E_BANK_CYCLES", "3"))
MODES = [m for m in os.environ.get("ROMULUS_E2E_BANK_MODES", "wal,delete").split(",") if m]
SERVING_RE = r"serving clients on"
BANK_RESUMED_RE = r"romulus-bank: resumed at epoch (\d+) with (\d+) transfers"


@harness.require_binaries("romulus", "bank", "bankload")
class BankKillTest(unittest.TestCase):

    def test_kill_under_transfers_never_loses_an_acknowledged_transfer(self):
        rng, _ = harness.seeded_random("test_bank_kill")
        totals = {}
        for mode in MODES:
            totals[mode] = {"cycles": 0, "acked": 0, "unacked": 0, "unacked_found": 0,
                            "lost": 0}
        for i in range(CYCLES * len(MODES)):
            mode = MODES[i % len(MODES)]
            delay = rng.uniform(0.05, 1.2)
            seed = rng.randrange(1 << 31)
            with self.subTest(cycle=i, mode=mode, delay_ms=round(delay * 1000),
                              bankload_seed=seed):
                report = self.kill_cycle(i, mode, delay, seed)
                chk = report["check"]
                t = totals[mode]
                t["cycles"] += 1
                t["acked"] += report["transfers"]
                t["unacked"] += report["unacked"]
                t["unacked_found"] += chk["unacked_found"]
                t["lost"] += chk["acked_lost"]
                harness.log(f"cycle {i:2d} {mode:6s} kill {delay * 1000:6.1f} ms into the load: "
                            f"{report['transfers']} acked, {report['unacked']} unacked "
                            f"({chk['unacked_found']} found), lost {chk['acked_lost']}; "
                            f"{chk['audit']}")
        harness.log(f"bank kill totals: {json.dumps(totals)}")

    def kill_cycle(self, i, mode, delay, seed):
        c = Cluster(self, memory="64M")
        try:
            return self._kill_cycle(c, i, mode, delay, seed)
        finally:
            c.close()

    def _kill_cycle(self, c, i, mode, delay, seed):
        bank = [harness.binary("bank"), "--journal-mode", mode, "--accounts", "50"]
        backup_svc, primary_svc = harness.free_port(), harness.free_port()
        backup = c.backup(bank, name=f"backup{i}", service_port=backup_svc)
        primary = c.primary(bank, backup.listen_port, name=f"primary{i}",
                            service_port=primary_svc)
        primary.wait_for(harness.IN_SYNC_RE)
        primary.wait_for(SERVING_RE)
        load = c.proc(f"bankload{i}", [
            harness.binary("bankload"), "--server", f"127.0.0.1:{primary_svc}", "--server",
            f"127.0.0.1:{backup_svc}", "--connections", "8", "--accounts", "50",
            "--seconds", "1.5", "--check", "--json", "--seed", str(seed),
            "--reconnect-timeout", "30s", "--request-timeout", "20s"])
        time.sleep(delay)
        primary.kill9()
        take = backup.wait_for(harness.TAKEOVER_RE)
        try:
            rc = load.wait(deadline=120)
        except subprocess.TimeoutExpired:
            self.fail(f"bankload did not finish\n{load.text()}\n{backup.text()}")
        context = f"cycle {i} ({mode})\n{primary.text()}\n{backup.text()}\n{load.text()}"
        reports = [line for stream, line in load.lines if stream == "out" and line.startswith("{")]
        self.assertEqual(len(reports), 1, context)
        report = json.loads(reports[0])
        chk = report["check"]
        self.assertEqual(chk["acked_lost"], 0, "acknowledged transfers lost: " + context)
        self.assertEqual(chk["mismatched"], 0, context)
        self.assertTrue(chk["audit"].startswith("AUDIT ok"), context)
        self.assertEqual(report["errors"], 0, context)
        self.assertEqual(rc, 0, context)
        # Transactions never hold the gate: an Update covers one VFS call.
        self.assertEqual(primary.count(r"checkpoint postponed"), 0, context)
        resumed = backup.wait_for(BANK_RESUMED_RE)
        self.assertEqual(int(resumed.group(1)), int(take.group(2)), context)
        c.close()
        return report


@harness.require_binaries("bank")
class BankProtocolTest(unittest.TestCase):
    """romulus-bank alone (a private arena): hostile input gets one error reply per
    line, or the connection closed after "ERROR line too long"; never a crash."""

    def test_hostile_lines_get_errors_and_the_bank_keeps_serving(self):
        c = Cluster(self)
        bank = c.proc("bank", [harness.binary("bank"), "--port", "0", "--accounts", "10"])
        port = int(bank.wait_for(r"romulus-bank: listening on [0-9.]+:(\d+)").group(1))
        rng, _ = harness.seeded_random("test_bank_kill protocol")

        def session(payload, lines):
            with socket.create_connection(("127.0.0.1", port), timeout=harness.DEADLINE) as s:
                s.sendall(payload)
                data = b""
                while data.count(b"\n") < lines:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                return data.decode(errors="replace").splitlines()

        garbage = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))).replace(
            b"\n", b"") for _ in range(200)]
        replies = session(b"".join(g + b"\n" for g in garbage), len(garbage))
        self.assertEqual(len(replies), len(garbage))
        self.assertTrue(all(r.startswith(("ERROR", "PONG", "TOTAL", "AUDIT", "BALANCE",
                                          "NOT_FOUND", "OK", "REFUSED", "DUPLICATE", "FOUND"))
                            for r in replies), replies)
        self.assertEqual(session(b"TRANSFER 1 2 3 x\x00y\nTRANSFER 1 2 3 " + b"9" * 100 + b"\n",
                                 2),
                         ["ERROR bad id (1-64 of A-Z a-z 0-9 - _ . :)"] * 2)
        self.assertEqual(session(b"A" * 5000, 1), ["ERROR line too long"])
        self.assertEqual(session(b"TRANSFER 0 1 5 ok-1\nAUDIT\n", 2),
                         ["OK ok-1", "AUDIT ok total=10000 transfers=1"])
        self.assertTrue(bank.alive(), bank.text())


if __name__ == "__main__":
    unittest.main(verbosity=2)
