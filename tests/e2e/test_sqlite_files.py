"""SQLite files in and out of the arena: an existing database brought under
protection, and a database taken out of a running pair as a plain file.

The guest is examples/pyledger/ledger.py (standard-library Python, no Romulus in it)
under the SQLite preload library. The spec (docs/operations.md, "Protecting a SQLite
program"):

  - a database file that exists on disk when the protected program first opens it
    (a fresh start, not a resume) is copied into the arena whole: the program finds
    its rows, and from then on the arena's copy is the database (the file on disk
    is left as it was); a failover keeps the imported rows and what was added;
  - a database with a WAL beside it on disk is refused (its open fails, one line says
    how to recover it first), never imported half;
  - `romulus sqlite-export DATABASE OUT --control BACKUP` (and `--snapshot FILE`)
    writes the database as the backup's committed image holds it, as a plain file:
    the `sqlite3` shell opens it, `PRAGMA integrity_check` says ok, and the rows are
    the ones acknowledged.
"""

import os
import sqlite3
import subprocess
import sys
import unittest

import harness
from harness import Cluster
from test_output_commit import LineClient
from test_sqlite_preload import APP, LEDGER_RE, sanitizer_build

IMPORTED_RE = r"romulus sqlite: imported (\S+) \((\d+) bytes\) into the arena"


def make_ledger_db(path, entries, journal_mode="delete"):
    """A ledger database written by plain SQLite, as the program would have left it."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute(f"PRAGMA journal_mode={journal_mode}")
    db.executescript("""
        CREATE TABLE entries(id TEXT PRIMARY KEY, account TEXT NOT NULL, amount INTEGER NOT NULL);
        CREATE TABLE balances(account TEXT PRIMARY KEY, balance INTEGER NOT NULL);""")
    db.execute("BEGIN")
    for i in range(entries):
        db.execute("INSERT INTO entries VALUES(?, 'old', ?)", (f"old{i}", i))
    db.execute("INSERT INTO balances VALUES('old', ?)", (sum(range(entries)),))
    db.execute("COMMIT")
    return db


@unittest.skipIf(sanitizer_build(), "sanitizer build: the preload library is not built there; "
                 "the release build runs this test")
@harness.require_binaries("romulus", "sqlite_preload")
class SqliteFilesTest(unittest.TestCase):

    def ledger(self, db_path):
        return ["env", f"LD_PRELOAD={harness.binary('sqlite_preload')}", "sh", "-c",
                f'exec "{sys.executable}" -u "{APP}" --port "$ROMULUS_SERVICE_PORT" '
                f'--db "{db_path}"']

    def test_an_existing_database_is_imported_survives_failover_and_exports_whole(self):
        c = Cluster(self, memory="64M")
        db_path = os.path.join(c.dir, "ledger.db")
        make_ledger_db(db_path, 300).close()
        before = os.path.getsize(db_path)
        guest = self.ledger(db_path)
        b_svc, p_svc = harness.free_port(), harness.free_port()
        backup = c.backup(guest, name="backup", service_port=b_svc)
        primary = c.primary(guest, backup.listen_port, name="primary", service_port=p_svc)
        imported = primary.wait_for(IMPORTED_RE)
        self.assertEqual(int(imported.group(2)), before)
        m = primary.wait_for(LEDGER_RE)
        self.assertEqual(int(m.group(1)), 300, primary.text())
        primary.wait_for(harness.IN_SYNC_RE)
        client = LineClient(p_svc)
        for i in range(20):
            self.assertEqual(client.request(f"ADD new {i} new{i}"), f"OK new{i}")
        client.close()

        # Out, from the running pair: the backup's committed image.
        out = os.path.join(c.dir, "exported.db")
        rc, stdout, err = harness.cli("sqlite-export", db_path, out, "--control",
                                      backup.control_path)
        self.assertEqual(rc, 0, err + backup.text())
        self.assertIn("integrity ok", stdout)
        check = subprocess.run(["sqlite3", out, "PRAGMA integrity_check;",
                                "SELECT count(*) FROM entries;",
                                "SELECT balance FROM balances WHERE account='new';"],
                               capture_output=True, text=True, timeout=30)
        self.assertEqual(check.returncode, 0, check.stderr)
        self.assertEqual(check.stdout.split(), ["ok", "320", str(sum(range(20)))])
        # The file on disk was never written.
        self.assertEqual(os.path.getsize(db_path), before)

        # A failover keeps both the imported rows and the new ones (no second import:
        # the resumed guest finds the database in the arena).
        primary.kill9()
        backup.wait_for(harness.TAKEOVER_RE)
        m = backup.wait_for(LEDGER_RE)
        self.assertEqual(int(m.group(1)), 320, backup.text())
        self.assertIsNone(backup.find(IMPORTED_RE), backup.text())

    def test_a_database_with_a_wal_beside_it_is_refused_not_half_imported(self):
        c = Cluster(self, memory="64M")
        db_path = os.path.join(c.dir, "walled.db")
        keep = make_ledger_db(db_path, 10, journal_mode="wal")
        keep.execute("INSERT INTO entries VALUES('in-wal', 'old', 1)")  # stays in the WAL
        self.assertGreater(os.path.getsize(db_path + "-wal"), 0)
        primary = c.primary(self.ledger(db_path), harness.free_port(), name="primary",
                            service_port=harness.free_port())
        primary.wait_for(r"not importing \S+: \S+-wal beside it holds changes not in the "
                         r"database; open it once with sqlite3 to recover them")
        keep.close()

    def test_export_from_a_snapshot_lists_and_refuses_unknown_names(self):
        c = Cluster(self, memory="64M")
        db_path = os.path.join(c.dir, "fresh.db")  # not on disk: created in the arena
        guest = self.ledger(db_path)
        backup = c.backup(guest, name="backup", service_port=harness.free_port())
        p_svc = harness.free_port()
        primary = c.primary(guest, backup.listen_port, name="primary", service_port=p_svc)
        primary.wait_for(LEDGER_RE)
        primary.wait_for(harness.IN_SYNC_RE)
        client = LineClient(p_svc)
        self.assertEqual(client.request("ADD a 5 e1"), "OK e1")
        client.close()
        snap = os.path.join(c.dir, "pair.snapshot")
        rc, out, err = harness.cli("snapshot", snap, "--control", backup.control_path)
        self.assertEqual(rc, 0, err)
        rc, out, err = harness.cli("sqlite-export", "--list", "--snapshot", snap)
        self.assertEqual(rc, 0, err)
        self.assertIn(db_path, out.split())
        rc, out, err = harness.cli("sqlite-export", "nope.db", os.path.join(c.dir, "x.db"),
                                   "--snapshot", snap)
        self.assertEqual(rc, 1)
        self.assertIn("no database 'nope.db'", err)
        exported = os.path.join(c.dir, "fresh-out.db")
        rc, out, err = harness.cli("sqlite-export", db_path, exported, "--snapshot", snap)
        self.assertEqual(rc, 0, err)
        db = sqlite3.connect(exported)
        self.assertEqual(db.execute("SELECT account, amount FROM entries").fetchall(),
                         [("a", 5)])
        db.close()


if __name__ == "__main__":
    unittest.main()
