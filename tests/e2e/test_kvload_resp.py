"""romulus-kvload --protocol resp against a scripted RESP server (no Redis needed).

The server (a thread here) speaks just enough RESP2 to answer SET, GET and WAIT,
so these tests pin down how kvload counts writes under `WAIT 1 0` and that a
server sending malformed replies gets one line on stderr and a closed
connection, never a crash, a hang or unbounded memory.
"""

import json
import socket
import subprocess
import threading
import unittest

import harness


class RespServer:
    """Accepts connections; parses RESP arrays of bulk strings; answers each
    command with reply(args) (bytes). Records every command it got."""

    def __init__(self, reply):
        self.reply = reply
        self.commands = []
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self):
        self.closing = True
        self.sock.close()

    def _accept(self):
        while not self.closing:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        buf = b""
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                buf += data
                out = b""
                while True:
                    cmd, buf = self._parse(buf)
                    if cmd is None:
                        break
                    with self.lock:
                        self.commands.append(cmd[0])
                    out += self.reply(cmd)
                if out:
                    try:
                        conn.sendall(out)
                    except OSError:
                        return

    @staticmethod
    def _parse(buf):
        """One command (list of bytes) from buf, or (None, buf) if incomplete."""
        if not buf.startswith(b"*") or b"\r\n" not in buf:
            return None, buf
        head, rest = buf.split(b"\r\n", 1)
        args = []
        for _ in range(int(head[1:])):
            if b"\r\n" not in rest:
                return None, buf
            length, rest2 = rest.split(b"\r\n", 1)
            n = int(length[1:])
            if len(rest2) < n + 2:
                return None, buf
            args.append(rest2[:n])
            rest = rest2[n + 2:]
        return args, rest


def kvload(port, *extra):
    cmd = [harness.binary("kvload"), "--server", f"127.0.0.1:{port}", "--protocol", "resp",
           "--mix", "set=100", "--json", "--quiet", "--reconnect-timeout", "2s",
           "--request-timeout", "5s", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=harness.DEADLINE * 2)


def report(out):
    lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
    return json.loads(lines[-1]) if lines else None


@harness.require_binaries("kvload")
class KvloadRespTest(unittest.TestCase):

    def server(self, reply):
        s = RespServer(reply)
        self.addCleanup(s.close)
        return s

    def test_each_write_counts_once_its_wait_says_a_replica_has_it(self):
        s = self.server(lambda cmd: b"+OK\r\n" if cmd[0] == b"SET" else b":1\r\n")
        out = kvload(s.port, "--connections", "2", "--ops", "100", "--pipeline", "4")
        self.assertEqual(out.returncode, 0, out.stderr)
        r = report(out)
        self.assertEqual(r["ops"], 100)
        self.assertEqual(r["errors"], 0)
        with s.lock:
            self.assertEqual(s.commands.count(b"SET"), 100)
            self.assertEqual(s.commands.count(b"WAIT"), 100)  # --wait each: one per SET

    def test_wait_batch_sends_one_wait_per_batch(self):
        s = self.server(lambda cmd: b"+OK\r\n" if cmd[0] == b"SET" else b":1\r\n")
        out = kvload(s.port, "--connections", "1", "--ops", "64", "--pipeline", "16",
                     "--wait", "batch")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(report(out)["ops"], 64)
        with s.lock:
            self.assertEqual(s.commands.count(b"SET"), 64)
            self.assertEqual(s.commands.count(b"WAIT"), 4)

    def test_a_write_no_replica_acknowledged_is_not_counted(self):
        # WAIT answers 0: the primary has the write, no replica does.
        s = self.server(lambda cmd: b"+OK\r\n" if cmd[0] == b"SET" else b":0\r\n")
        out = kvload(s.port, "--connections", "1", "--ops", "10")
        r = report(out)
        self.assertEqual(r["ops"], 0)
        self.assertGreaterEqual(r["errors"], 10)

    def test_malformed_replies_close_the_connection_without_a_crash(self):
        for bad in (b"$99999999999999999999\r\n",   # a bulk length far past the limit
                    b"*1\r\n+OK\r\n",                # an array: no reply kvload asks for is one
                    b"+OK\n",                        # bare LF
                    b"\x00\xff garbage\r\n"):
            with self.subTest(reply=bad):
                s = self.server(lambda cmd, bad=bad: bad)
                out = kvload(s.port, "--connections", "1", "--ops", "5")
                self.assertGreaterEqual(out.returncode, 0, f"kvload died of a signal: {out.stderr}")
                self.assertIn("bad RESP reply", out.stderr)
                self.assertEqual(report(out)["ops"], 0)

    def test_a_reply_that_never_ends_is_cut_off_at_the_limit(self):
        # "+" then 1 MiB without CRLF: kvload must stop at its reply limit
        # (128 KiB), not buffer all of it or wait for the end.
        s = self.server(lambda cmd: b"+" + b"x" * (1 << 20))
        out = kvload(s.port, "--connections", "1", "--ops", "3")
        self.assertGreaterEqual(out.returncode, 0, out.stderr)
        self.assertIn("longer than the reply limit", out.stderr)


if __name__ == "__main__":
    unittest.main()
