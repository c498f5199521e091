"""An unmodified Python program (examples/pyledger/ledger.py: sqlite3 and
socketserver from the standard library, no Romulus in it) protected through
LD_PRELOAD of libromulus_sqlite_preload.so, killed with -9 under load.

Each cycle (one per journal mode: rollback journal, WAL) starts a backup and a
primary whose guest is `env LD_PRELOAD=... sh -c 'exec python3 ledger.py ...'`;
three client threads each ADD entries to their own account with unique ids
(the primary's service address, the backup's after a failure); the primary is
killed at a seeded random moment. The spec:

  - the backup takes over and the program, restarted from main() on the
    committed image, finds its database there (integrity ok);
  - every entry acknowledged OK is present with its amount; each account's
    balance equals the sum of the entries present (an entry and its balance
    change are one transaction: never one without the other).

And a program holding one big transaction open for seconds (its cache spilled
into the arena): checkpoints go on meanwhile, none postponed, and a kill -9 in
the middle resumes to the state before the transaction.

Skipped, with the reason printed, when the preload library is not built (the
sanitizer build does not build it: an ASan-instrumented library cannot be
preloaded into an uninstrumented python3).
"""

import os
import socket
import sys
import threading
import time
import unittest

import harness
from harness import Cluster

APP = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                   "examples", "pyledger", "ledger.py")
LEDGER_RE = r"ledger: (\d+) entries, integrity (\S+), journal mode (\S+); listening"
SERVING_RE = r"serving clients on"


class Client:
    """One connection that fails over between ports; records what was acknowledged."""

    def __init__(self, ports, account):
        self.ports = ports
        self.account = account
        self.acked = {}    # id -> amount
        self.unacked = {}  # id -> amount (no reply: may or may not have committed)
        self.errors = []
        self.sock = None
        self.buf = b""

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def connect(self, deadline=60):
        self.close()
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            for port in self.ports:
                try:
                    self.sock = socket.create_connection(("127.0.0.1", port), timeout=2)
                    self.sock.settimeout(20)
                    self.buf = b""
                    # The proxy may accept before the program listens: a round trip proves it.
                    self.sock.sendall(b"COUNT\n")
                    if self.read_line() is not None:
                        return True
                    self.close()
                except OSError:
                    self.close()
            time.sleep(0.05)
        return False

    def read_line(self):
        while b"\n" not in self.buf:
            try:
                chunk = self.sock.recv(4096)
            except OSError:
                return None
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()

    def request(self, line):
        try:
            self.sock.sendall(line.encode() + b"\n")
        except OSError:
            return None
        return self.read_line()

    def run(self, stop, rng_seed):
        import random
        rng = random.Random(rng_seed)
        if not self.connect():
            self.errors.append("could not connect")
            return
        seq = 0
        while not stop.is_set():
            seq += 1
            entry_id = f"{self.account}-{seq}"
            amount = rng.randrange(1, 1000)
            reply = self.request(f"ADD {self.account} {amount} {entry_id}")
            if reply is None:
                self.unacked[entry_id] = amount
                if not self.connect():
                    self.errors.append("lost the service and could not reconnect")
                    return
                continue
            if reply in (f"OK {entry_id}", f"DUPLICATE {entry_id}"):
                self.acked[entry_id] = amount
            else:
                self.errors.append(reply)


def sanitizer_build():
    """True when ROMULUS_BUILD_DIR was configured with ROMULUS_SANITIZE=ON."""
    try:
        with open(os.path.join(harness.build_dir(), "CMakeCache.txt")) as f:
            return any(line.strip() == "ROMULUS_SANITIZE:BOOL=ON" for line in f)
    except OSError:
        return False


@unittest.skipIf(sanitizer_build(), "sanitizer build: the preload library is not built there (an "
                 "ASan-instrumented library cannot be preloaded into an uninstrumented python3); "
                 "the release build runs this test")
@harness.require_binaries("romulus", "sqlite_preload")
class SqlitePreloadTest(unittest.TestCase):

    def test_unmodified_python_program_survives_kill_without_losing_an_acknowledged_entry(self):
        rng, _ = harness.seeded_random("test_sqlite_preload")
        for i, mode in enumerate(["delete", "wal"]):
            delay = rng.uniform(0.2, 1.0)
            with self.subTest(cycle=i, mode=mode, delay_ms=round(delay * 1000)):
                self.kill_cycle(i, mode, delay, rng.randrange(1 << 31))

    def kill_cycle(self, i, mode, delay, seed):
        c = Cluster(self, memory="64M")
        try:
            self._kill_cycle(c, i, mode, delay, seed)
        finally:
            c.close()

    def _kill_cycle(self, c, i, mode, delay, seed):
        guest = ["env", f"LD_PRELOAD={harness.binary('sqlite_preload')}", "sh", "-c",
                 f'exec "{sys.executable}" -u "{APP}" --port "$ROMULUS_SERVICE_PORT" '
                 f"--journal-mode {mode}"]
        backup_svc, primary_svc = harness.free_port(), harness.free_port()
        backup = c.backup(guest, name=f"backup{i}", service_port=backup_svc)
        primary = c.primary(guest, backup.listen_port, name=f"primary{i}",
                            service_port=primary_svc)
        primary.wait_for(harness.IN_SYNC_RE)
        primary.wait_for(LEDGER_RE)
        clients = [Client([primary_svc, backup_svc], f"acct{k}") for k in range(3)]
        stop = threading.Event()
        threads = [threading.Thread(target=cl.run, args=(stop, seed + k), daemon=True)
                   for k, cl in enumerate(clients)]
        for t in threads:
            t.start()
        time.sleep(delay)
        primary.kill9()
        take = backup.wait_for(harness.TAKEOVER_RE)
        resumed = backup.wait_for(LEDGER_RE)
        time.sleep(0.3)  # some load on the survivor too
        stop.set()
        for t in threads:
            t.join(timeout=120)
        for cl in clients:
            cl.close()
        context = f"cycle {i} ({mode})\n{primary.text()}\n{backup.text()}"
        self.assertEqual(resumed.group(2), "ok", context)
        for cl in clients:
            self.assertEqual(cl.errors, [], context)

        checker = Client([backup_svc], "check")
        self.addCleanup(checker.close)
        self.assertTrue(checker.connect(), context)
        lost = found_unacked = acked = 0
        for cl in clients:
            present = {}
            for entry_id, amount in cl.acked.items():
                acked += 1
                reply = checker.request(f"HAS {entry_id}")
                if reply != f"YES {cl.account} {amount}":
                    lost += 1
                else:
                    present[entry_id] = amount
            for entry_id, amount in cl.unacked.items():
                reply = checker.request(f"HAS {entry_id}")
                if reply == f"YES {cl.account} {amount}":
                    found_unacked += 1
                    present[entry_id] = amount
            balance = checker.request(f"BALANCE {cl.account}")
            self.assertEqual(balance, f"BALANCE {sum(present.values())}",
                             f"{cl.account}: balance disagrees with its entries\n" + context)
        self.assertEqual(lost, 0, "acknowledged entries lost\n" + context)
        harness.log(f"cycle {i} {mode:6s} kill {delay * 1000:5.0f} ms: took over at epoch "
                    f"{take.group(2)}, program restarted with {resumed.group(1)} entries; "
                    f"{acked} acknowledged, lost {lost}, unacknowledged found {found_unacked}")
        c.close()


    def test_long_transaction_neither_postpones_checkpoints_nor_survives_a_kill_half_done(self):
        """A Python program holds one big transaction open for seconds (its cache
        spilled to the database file, so a hot journal or WAL frames are in the
        arena); checkpoints keep being taken and acknowledged meanwhile, none is
        postponed, and a kill -9 in the middle resumes to the state before it."""
        script = (
            "import sqlite3, sys, time\n"
            "db = sqlite3.connect('long.db', isolation_level=None)\n"
            "db.execute('PRAGMA journal_mode=' + sys.argv[1])\n"
            "db.execute('PRAGMA cache_size=8')\n"
            "db.execute('CREATE TABLE IF NOT EXISTS t(x)')\n"
            "n = db.execute('SELECT count(*) FROM t').fetchone()[0]\n"
            "print('long: start with', n, 'rows,', db.execute('PRAGMA integrity_check')"
            ".fetchone()[0], flush=True)\n"
            "if n == 0:\n"
            "    db.execute('INSERT INTO t VALUES(1)')\n"
            "    print('long: committed 1 row', flush=True)\n"
            "db.execute('BEGIN IMMEDIATE')\n"
            "for i in range(400):\n"
            "    db.execute('INSERT INTO t VALUES(zeroblob(4000))')\n"
            "print('long: holding a transaction of 400 rows', flush=True)\n"
            "time.sleep(600)\n")
        for mode in ("delete", "wal"):
            with self.subTest(mode=mode):
                c = Cluster(self, memory="64M")
                guest = ["env", f"LD_PRELOAD={harness.binary('sqlite_preload')}",
                         sys.executable, "-u", "-c", script, mode]
                backup = c.backup(guest, name=f"backup-{mode}")
                primary = c.primary(guest, backup.listen_port, name=f"primary-{mode}")
                primary.wait_for(harness.IN_SYNC_RE)
                primary.wait_for(r"long: holding a transaction")
                a0 = harness.wait_until(primary.acked_epoch, "an acknowledged epoch")
                # Checkpoints go on while the transaction stays open (the Updates
                # are per VFS call, never per transaction).
                harness.wait_until(lambda: (primary.acked_epoch() or 0) >= a0 + 10,
                                   "10 more acknowledged checkpoints during the transaction\n"
                                   + c.logs())
                self.assertEqual(primary.count(r"postponed"), 0, c.logs())
                self.assertEqual(primary.status()["primary"]["postponed_pauses"], 0, c.logs())
                primary.kill9()
                backup.wait_for(harness.TAKEOVER_RE)
                m = backup.wait_for(r"long: start with (\d+) rows, (\S+)")
                self.assertEqual((m.group(1), m.group(2)), ("1", "ok"),
                                 "the half-done transaction survived (or the database is "
                                 "damaged)\n" + c.logs())
                harness.log(f"{mode}: checkpoints went on during the open transaction "
                            f"(acked epoch {a0} -> at least {a0 + 10}); resumed with "
                            f"{m.group(1)} row, integrity {m.group(2)}")
                c.close()

if __name__ == "__main__":
    unittest.main(verbosity=2)
