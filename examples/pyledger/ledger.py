#!/usr/bin/env python3
"""A small ledger service: Python's standard library only (sqlite3, socketserver).

Nothing in it knows about Romulus. Protected, its database lives in the
replicated arena because the romulus preload library makes the `romulus` SQLite
VFS the default (see README.md):

    romulus primary --backup B:7000 --service 0.0.0.0:7300 -- \\
        env LD_PRELOAD=.../libromulus_sqlite_preload.so \\
        sh -c 'exec python3 ledger.py --port "$ROMULUS_SERVICE_PORT"'

Protocol, one line per request, one reply line each:
    ADD <account> <amount> <id>   -> OK <id> | DUPLICATE <id>   (one transaction)
    BALANCE <account>             -> BALANCE <n>
    HAS <id>                      -> YES <account> <amount> | NO
    COUNT                         -> COUNT <entries>
anything else                     -> ERROR <what>
A line longer than 200 bytes gets "ERROR line too long" and the connection closes.
A reply is written only after the transaction committed.

One thread per connection (ThreadingTCPServer), each with its own sqlite3
connection: the threads' transactions are serialized by SQLite's locks.
"""

import argparse
import re
import socketserver
import sqlite3
import sys

MAX_LINE = 200
ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
ACCOUNT_RE = re.compile(r"^[A-Za-z0-9_]{1,32}$")
SCHEMA = """
CREATE TABLE IF NOT EXISTS entries(id TEXT PRIMARY KEY, account TEXT NOT NULL,
                                   amount INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS balances(account TEXT PRIMARY KEY, balance INTEGER NOT NULL);
"""


def connect(path, journal_mode):
    db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    db.execute(f"PRAGMA journal_mode={journal_mode}")
    return db


class Ledger:
    def __init__(self, db):
        self.db = db

    def execute(self, line):
        parts = line.split(" ")
        cmd, args = parts[0], parts[1:]
        if cmd == "ADD" and len(args) == 3:
            account, amount, entry_id = args
            if not ACCOUNT_RE.match(account) or not ID_RE.match(entry_id):
                return "ERROR bad account or id"
            try:
                amount = int(amount)
            except ValueError:
                return "ERROR bad amount"
            if not -10**12 < amount < 10**12:
                return "ERROR bad amount"
            return self.add(account, amount, entry_id)
        if cmd == "BALANCE" and len(args) == 1 and ACCOUNT_RE.match(args[0]):
            row = self.db.execute("SELECT balance FROM balances WHERE account = ?",
                                  (args[0],)).fetchone()
            return f"BALANCE {row[0] if row else 0}"
        if cmd == "HAS" and len(args) == 1 and ID_RE.match(args[0]):
            row = self.db.execute("SELECT account, amount FROM entries WHERE id = ?",
                                  (args[0],)).fetchone()
            return f"YES {row[0]} {row[1]}" if row else "NO"
        if cmd == "COUNT" and not args:
            return f"COUNT {self.db.execute('SELECT count(*) FROM entries').fetchone()[0]}"
        return "ERROR unknown command or wrong arguments"

    def add(self, account, amount, entry_id):
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            if db.execute("SELECT 1 FROM entries WHERE id = ?", (entry_id,)).fetchone():
                db.execute("ROLLBACK")
                return f"DUPLICATE {entry_id}"
            db.execute("INSERT INTO entries VALUES(?, ?, ?)", (entry_id, account, amount))
            db.execute("INSERT INTO balances VALUES(?, ?) ON CONFLICT(account) DO UPDATE "
                       "SET balance = balance + excluded.balance", (account, amount))
            db.execute("COMMIT")
        except sqlite3.Error as e:
            if db.in_transaction:
                db.execute("ROLLBACK")
            return f"ERROR {e}"
        return f"OK {entry_id}"


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        ledger = Ledger(connect(self.server.db_path, self.server.journal_mode))
        try:
            while True:
                raw = self.rfile.readline(MAX_LINE + 2)
                if not raw:
                    return
                if not raw.endswith(b"\n") and len(raw) > MAX_LINE:
                    self.wfile.write(b"ERROR line too long\n")
                    return
                try:
                    line = raw.decode("ascii").rstrip("\r\n")
                except UnicodeDecodeError:
                    reply = "ERROR not ASCII"
                else:
                    reply = ledger.execute(line)
                self.wfile.write(reply.encode() + b"\n")
        except (ConnectionError, OSError):
            return
        finally:
            ledger.db.close()


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=7300)
    p.add_argument("--listen", default="127.0.0.1")
    p.add_argument("--db", default="ledger.db")
    p.add_argument("--journal-mode", default="delete",
                   choices=["delete", "truncate", "persist", "wal"])
    a = p.parse_args()
    db = connect(a.db, a.journal_mode)
    db.executescript(SCHEMA)
    count = db.execute("SELECT count(*) FROM entries").fetchone()[0]
    check = db.execute("PRAGMA integrity_check").fetchone()[0]
    db.close()
    with Server((a.listen, a.port), Handler) as server:
        server.db_path, server.journal_mode = a.db, a.journal_mode
        print(f"ledger: {count} entries, integrity {check}, journal mode {a.journal_mode}; "
              f"listening on {a.listen}:{server.server_address[1]}", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
