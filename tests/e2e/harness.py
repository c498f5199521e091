"""Shared helpers for the Romulus end-to-end tests: real processes on loopback.

What is here:
  binary(name) / have(name)   paths of the built `romulus` command and example guests
  free_port()                 a loopback TCP port nobody listens on (bind to port 0)
  Proc                        a child process in its own process group whose stdout and
                              stderr are read line by line into memory; wait_for(regex)
  Cluster                     starts `romulus backup` / `romulus primary` nodes in a temp
                              dir with explicit --control paths and free ports, and stops
                              every process it started when the test ends (addCleanup)
  control(path, request)      one control-socket request, reply parsed as JSON
  open_connections(port)      connections to a local port that its listener has not closed
                              yet, queued ones included (the kernel's view)
  cli(args)                   runs the `romulus` command, returns (rc, stdout, stderr)
  Relay                       a TCP relay that can flip bits (primary->backup) and hold
                              the backup->primary direction (ACKs)
  seeded_random(name)         random.Random with a printed seed (ROMULUS_E2E_SEED wins)
  Pki                         a throwaway certificate authority made with the `openssl`
                              command: CA, node certificates (expired ones too), --tls-* args

Nothing here asserts on timing: waits are for conditions, with generous deadlines
that only bound how long a broken run hangs.

Threads: each Proc has two reader threads, each Relay an accept thread and two pump
threads per connection; all are daemons and are joined (with a bound) on close.
"""

import atexit
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

# How long a wait for a condition may take before the test fails. Generous: the
# ASan build on a loaded 2-core machine is several times slower than release.
DEADLINE = float(os.environ.get("ROMULUS_E2E_DEADLINE", "30"))

_HERE = os.path.dirname(os.path.abspath(__file__))
_SOURCE_DIR = os.path.dirname(os.path.dirname(_HERE))


def build_dir():
    """The build tree holding cli/romulus (ROMULUS_BUILD_DIR, else build/release)."""
    env = os.environ.get("ROMULUS_BUILD_DIR")
    if env:
        return env
    return os.path.join(_SOURCE_DIR, "build", "release")


_BINARIES = {
    "romulus": os.path.join("cli", "romulus"),
    "counter": os.path.join("examples", "counter", "romulus-counter"),
    "dirtier": os.path.join("examples", "dirtier", "romulus-dirtier"),
    "kvstore": os.path.join("examples", "kvstore", "romulus-kvstore"),
    "kvload": os.path.join("examples", "kvload", "romulus-kvload"),
    "bank": os.path.join("examples", "bank", "romulus-bank"),
    "bankload": os.path.join("examples", "bankload", "romulus-bankload"),
    "sqlite_preload": os.path.join("guest", "sqlite", "libromulus_sqlite_preload.so"),
    "qemu_preload": os.path.join("guest", "qemu", "libromulus_qemu_preload.so"),
}


def binary(name):
    return os.path.join(build_dir(), _BINARIES[name])


def have(*names):
    return all(os.access(binary(n), os.R_OK if n.endswith("preload") else os.X_OK)
               for n in names)


def require_binaries(*names):
    """unittest.skipUnless decorator for tests that need built executables."""
    missing = [binary(n) for n in names if not have(n)]
    return unittest.skipUnless(not missing, "not built: " + ", ".join(missing))


def seeded_random(name):
    """A Random whose seed is printed, so a failing run can be repeated."""
    seed = os.environ.get("ROMULUS_E2E_SEED")
    seed = int(seed) if seed else random.SystemRandom().randrange(1 << 32)
    print(f"{name}: seed {seed} (repeat with ROMULUS_E2E_SEED={seed})", flush=True)
    return random.Random(seed), seed


def _port_pool():
    """Ports for the tests' listeners: outside the kernel's ephemeral range
    (net.ipv4.ip_local_port_range), which outgoing connections draw their local
    ports from. A port from that range can be free when it is picked and be a
    client's local port by the time a node binds it (a backup binds --service
    only when it takes over, seconds later): "Address already in use". Not the
    10,000 ports just below that range either: romulus picks its guests' service
    ports there (common::free_loopback_port), without knowing these reservations."""
    low, high = 32768, 60999
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
    except (OSError, ValueError):
        pass
    if low - 20000 >= 1024:
        return range(low - 20000, low - 10000)
    return range(high + 1, 65536)


# Per user: another user's directory would not be writable.
_PORT_LOCKS = os.path.join(tempfile.gettempdir(), f"romulus-test-ports-{os.getuid()}")
_reserved_ports = {}  # port -> open lock file, held until this process exits


def _release_ports():
    for f in _reserved_ports.values():
        f.close()


atexit.register(_release_ports)


def free_port():
    """A loopback port no other test process has (each port is reserved with a
    lock on a file in $TMPDIR/romulus-test-ports for the life of the process that
    took it: the kernel drops the lock when that process ends, however it ends;
    per user),
    that is bindable now, and that no outgoing connection will take meanwhile
    (_port_pool)."""
    import fcntl
    os.makedirs(_PORT_LOCKS, exist_ok=True)
    pool = _port_pool()
    start = random.randrange(len(pool))
    for i in range(len(pool)):
        port = pool[(start + i) % len(pool)]
        if port in _reserved_ports:
            continue
        f = open(os.path.join(_PORT_LOCKS, str(port)), "a")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                f.close()  # in use by something that is not a test (or TIME_WAIT)
                continue
        _reserved_ports[port] = f
        return port
    raise RuntimeError(f"no free loopback port in {pool}")


# TCP states (include/net/tcp_states.h) in which a connection to a listening port is
# still the listener's business: queued or open (ESTABLISHED, SYN_RECV), or ended by
# the peer and not yet closed by the listener (CLOSE_WAIT).
_OPEN_TCP_STATES = {"01", "03", "08"}


def open_connections(port):
    """How many TCP connections to local `port` (this network namespace, IPv4 and IPv6)
    the listener has not closed yet, counting those still in its accept queue: the
    kernel's view, so it includes a connection whose peer is dead and that the listening
    process has not looked at yet."""
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            local, state = fields[1], fields[3]
            if int(local.rsplit(":", 1)[1], 16) == port and state in _OPEN_TCP_STATES:
                n += 1
    return n


def wait_until(predicate, what, deadline=DEADLINE, poll=0.02):
    """Polls predicate() until it returns a true value, which is returned.

    `what` names what is awaited; it may be a callable returning that text, called
    only on a timeout (so logs put in it are the logs at that moment)."""
    end = time.monotonic() + deadline
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            if callable(what):
                what = what()
            raise AssertionError(f"timed out after {deadline:.0f} s waiting for {what}")
        time.sleep(poll)


# ---------------------------------------------------------------------------
# Control socket and command line


def control(path, request="status --json", timeout=5.0):
    """One request on a node's control socket; the reply as a dict, or None if the
    socket is not there (yet, or any more). A status request answered with the
    node's "changing role; try again" error (it is between roles) is None too:
    callers poll status and read "role" and "state" from it."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(path)
            s.sendall(request.encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None
    if not data.strip():
        return None
    reply = json.loads(data)
    if request.startswith("status") and "error" in reply and "role" not in reply:
        return None
    return reply


def cli(*args, timeout=DEADLINE):
    """Runs `romulus ARGS...`; returns (returncode, stdout, stderr)."""
    p = subprocess.run([binary("romulus"), *map(str, args)], capture_output=True, text=True,
                       timeout=timeout)
    return p.returncode, p.stdout, p.stderr


# ---------------------------------------------------------------------------
# Processes


class Proc:
    """A child process (its own process group) with its output kept in memory.

    lines: every line read so far, as (stream, text), stream "out" or "err", in the
    order the reader threads saw them. wait_for() blocks until a line matches.
    """

    def __init__(self, name, argv, cwd=None, env=None):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.lines = []
        self._cond = threading.Condition()
        self._eof = 0
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, cwd=cwd, env=env,
                                     start_new_session=True)
        self.pid = self.proc.pid
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, "out"), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, "err"), daemon=True),
        ]
        for t in self._readers:
            t.start()

    def _read(self, pipe, stream):
        try:
            for raw in iter(pipe.readline, b""):
                with self._cond:
                    self.lines.append((stream, raw.decode(errors="replace").rstrip("\n")))
                    self._cond.notify_all()
        except (OSError, ValueError):
            pass
        finally:
            with self._cond:
                self._eof += 1
                self._cond.notify_all()

    # -- reading the output

    def count(self, regex):
        with self._cond:
            return sum(1 for _, line in self.lines if re.search(regex, line))

    def find(self, regex, start=0):
        """The first match at or after line index `start`, or None."""
        with self._cond:
            for _, line in self.lines[start:]:
                m = re.search(regex, line)
                if m:
                    return m
        return None

    def find_all(self, regex):
        with self._cond:
            return [m for m in (re.search(regex, line) for _, line in self.lines) if m]

    def mark(self):
        """An index for find()/wait_for(start=...): only lines after now."""
        with self._cond:
            return len(self.lines)

    def wait_for(self, regex, deadline=DEADLINE, start=0, any_of=None):
        """Waits until a line at index >= start matches regex (or one of any_of, a list);
        returns the match. Fails with the log if the deadline passes or the output ends."""
        patterns = [regex] if any_of is None else list(any_of)
        end = time.monotonic() + deadline
        with self._cond:
            i = start
            while True:
                while i < len(self.lines):
                    for p in patterns:
                        m = re.search(p, self.lines[i][1])
                        if m:
                            return m
                    i += 1
                if self._eof >= 2:
                    raise AssertionError(f"{self.name} ended (rc {self.proc.poll()}) without "
                                         f"printing /{' | '.join(patterns)}/\n{self.text()}")
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {deadline:.0f} s waiting for "
                                         f"{self.name} to print /{' | '.join(patterns)}/\n"
                                         f"{self.text()}")
                self._cond.wait(min(left, 0.5))

    def text(self, last=80):
        with self._cond:
            lines = self.lines[-last:]
        return "\n".join(f"  [{self.name} {s}] {line}" for s, line in lines)

    # -- lifetime

    def alive(self):
        return self.proc.poll() is None

    def guest_pids(self):
        return [int(m.group(1)) for m in self.find_all(r"guest pid (\d+) attached")]

    def kill9(self):
        """SIGKILL to this process only, as a crash would be (its guest dies with it
        through PDEATHSIG); reaps it."""
        try:
            self.proc.send_signal(signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=DEADLINE)

    def terminate(self):
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, deadline=DEADLINE):
        """Waits for the process to exit and for its output to be read to the end, so
        self.lines holds everything it printed."""
        rc = self.proc.wait(timeout=deadline)
        for t in self._readers:
            t.join(timeout=deadline)
        return rc

    def stop(self):
        """Kills the process group, then any guest it started that outlived it (a guest
        dies with its supervisor through PDEATHSIG, so normally none); joins the readers."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            pass
        for pid in self.guest_pids():
            if _is_romulus_guest(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        for t in self._readers:
            t.join(timeout=5)
        for pipe in (self.proc.stdout, self.proc.stderr):
            try:
                pipe.close()
            except OSError:
                pass


def _is_romulus_guest(pid):
    """True if pid runs a romulus guest (one that outlived its supervisor)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return b"ROMULUS_ARENA_FD=" in f.read()
    except OSError:
        return False


class Node(Proc):
    """A `romulus backup` or `romulus primary` process."""

    def __init__(self, name, argv, control_path, listen_port=None, service_port=None):
        self.control_path = control_path
        self.listen_port = listen_port
        self.service_port = service_port
        super().__init__(name, argv)

    def status(self):
        return control(self.control_path)

    def acked_epoch(self):
        s = self.status()
        if not s or s.get("role") != "primary":
            return None
        return s["primary"]["acked_epoch"]


def have_openssl():
    return shutil.which("openssl") is not None


class Pki:
    """A throwaway certificate authority in `directory`, made with the `openssl` command
    (EC P-256 keys). issue(name) signs a certificate whose CN and subjectAltName DNS are
    `name`; days < 0 makes one that expired already (notAfter in the past)."""

    def __init__(self, directory, ca_name="Romulus test CA"):
        os.makedirs(directory, exist_ok=True)
        self.dir = directory
        slug = re.sub(r"[^A-Za-z0-9]+", "-", ca_name).strip("-").lower()
        self.ca_key = os.path.join(directory, slug + ".key")
        self.ca = os.path.join(directory, slug + ".crt")
        self._run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                  "-nodes", "-keyout", self.ca_key, "-out", self.ca, "-days", "30",
                  "-subj", f"/CN={ca_name}")
        self._issued = {}

    @staticmethod
    def _run(*args):
        r = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"openssl {' '.join(args)}: {r.stderr.strip()}")

    def issue(self, name, days=30, san=None):
        """(certificate path, key path) for `name`, signed by this CA; its subjectAltName
        is `san` if given (e.g. "IP:127.0.0.1"), else DNS:name."""
        if (name, days) in self._issued:
            return self._issued[(name, days)]
        base = os.path.join(self.dir, f"{name}{'' if days == 30 else f'.{days}d'}")
        self._run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                  "-keyout", base + ".key", "-out", base + ".csr", "-subj", f"/CN={name}")
        with open(base + ".ext", "w") as f:
            f.write(f"subjectAltName={san or 'DNS:' + name}\n")
        self._run("x509", "-req", "-in", base + ".csr", "-CA", self.ca, "-CAkey", self.ca_key,
                  "-CAcreateserial", "-out", base + ".crt", "-days", str(days),
                  "-extfile", base + ".ext")
        self._issued[(name, days)] = (base + ".crt", base + ".key")
        return self._issued[(name, days)]

    def args(self, name, peer=None, days=30, ca=None):
        """The --tls-* options of a node named `name` (requiring the peer to be `peer`)."""
        cert, key = self.issue(name, days)
        out = ["--tls-cert", cert, "--tls-key", key, "--tls-ca", ca or self.ca]
        if peer:
            out += ["--tls-peer-name", peer]
        return out


class Cluster:
    """Romulus nodes for one test, in one temp dir; all stopped at cleanup.

    Defaults make a cycle quick: a 32 MiB arena, 20 ms epochs, 50 ms heartbeats and a
    1 s failover timeout (kills are seen at once, by the connection reset; the timeout
    only has to survive scheduling delays on a loaded 2-core machine).

    tls=True: every node gets a certificate from one throwaway CA (self.pki), named
    after the node, and the link runs mutual TLS.
    """

    def __init__(self, test, memory="32M", interval="20ms", heartbeat="50ms",
                 failover_timeout="1s", commit=None, tls=False):
        self.dir = tempfile.mkdtemp(prefix="romulus-e2e-")
        self.pki = Pki(os.path.join(self.dir, "pki")) if tls else None
        self.memory = memory
        self.commit = commit  # --commit eager|interval; None: the default (eager)
        self.interval = interval
        self.heartbeat = heartbeat
        self.failover_timeout = failover_timeout
        self.procs = []
        self.relays = []
        self._n = 0
        test.addCleanup(self.close)

    def _common(self, control_path, service_port, memory, interval, heartbeat, failover_timeout,
                extra, name=None):
        args = self.pki.args(name) if self.pki and name else []
        args += ["--memory", memory or self.memory, "--control", control_path,
                "--interval", interval or self.interval,
                "--heartbeat", heartbeat or self.heartbeat,
                "--failover-timeout", failover_timeout or self.failover_timeout,
                "--stats-period", "0"]
        if self.commit:
            args += ["--commit", self.commit]
        if service_port:
            args += ["--service", f"127.0.0.1:{service_port}"]
        return args + list(extra)

    def _control_path(self, name):
        self._n += 1
        return os.path.join(self.dir, f"{self._n}-{name}.sock")

    def backup(self, guest, name="backup", port=None, reprotect=None, service_port=None,
               memory=None, interval=None, heartbeat=None, failover_timeout=None, extra=(),
               wait_listening=True):
        """Starts `romulus backup` listening on a free port (or `port`); waits until it
        listens. reprotect: the port of the next backup, protected to after a takeover."""
        port = port or free_port()
        ctl = self._control_path(name)
        argv = [binary("romulus"), "backup", "--listen", f"127.0.0.1:{port}"]
        argv += self._common(ctl, service_port, memory, interval, heartbeat, failover_timeout,
                             extra, name)
        if reprotect:
            argv += ["--reprotect", f"127.0.0.1:{reprotect}"]
        node = Node(name, argv + ["--", *guest], ctl, listen_port=port, service_port=service_port)
        self.procs.append(node)
        if wait_listening:
            node.wait_for(r"backup listening on")
            # The control socket opens just after the "listening" line.
            wait_until(lambda: control(ctl, "ping"), f"{name}'s control socket\n{node.text()}")
        return node

    def primary(self, guest, backup_port, name="primary", service_port=None, memory=None,
                interval=None, heartbeat=None, failover_timeout=None, extra=()):
        ctl = self._control_path(name)
        argv = [binary("romulus"), "primary", "--backup", f"127.0.0.1:{backup_port}"]
        argv += self._common(ctl, service_port, memory, interval, heartbeat, failover_timeout,
                             extra, name)
        node = Node(name, argv + ["--", *guest], ctl, service_port=service_port)
        self.procs.append(node)
        return node

    def proc(self, name, argv, env=None):
        p = Proc(name, argv, env=env)
        self.procs.append(p)
        return p

    def relay(self, target_port, rng=None, port=0):
        r = Relay(target_port, rng, port)
        self.relays.append(r)
        return r

    def logs(self):
        return "\n".join(p.text() for p in self.procs)

    def close(self):
        """Stops every process and relay started so far; may be called more than once."""
        relays, self.relays = self.relays, []
        procs, self.procs = self.procs, []
        for r in relays:
            r.close()
        for p in procs:
            p.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def counter_guest(sleep_us=50):
    return [binary("counter"), "--sleep-us", str(sleep_us)]


RESUMED_RE = (r"romulus-counter: resumed at epoch (\d+) with value (\d+) "
              r"\(all (\d+) counters equal\)")
INCONSISTENT_RE = r"romulus-counter: INCONSISTENT"
TAKEOVER_RE = r"TAKING OVER \((.*)\): resuming the guest from epoch (\d+)"
SYNCED_RE = r"initial sync complete: image consistent at epoch (\d+)"
REFUSES_RE = r"will not take over"
IN_SYNC_RE = r"in sync at epoch (\d+)"


def pings(port, timeout=2.0):
    """True if a kvstore-protocol service on 127.0.0.1:port answers PING with PONG."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(b"PING\n")
            return s.recv(16).startswith(b"PONG")
    except OSError:
        return False


def check_kvload(test, load, rc, context):
    """romulus-kvload --check --json ran to its end: one report, acknowledged writes
    checked and none lost or corrupt, exit status 0. Returns the report."""
    reports = [line for stream, line in load.lines if stream == "out" and line.startswith("{")]
    test.assertEqual(len(reports), 1, context)
    report = json.loads(reports[0])
    test.assertGreater(report["check"]["acked_writes"], 0, context)
    test.assertEqual(report["check"]["acked_lost"], 0, "acknowledged writes lost: " + context)
    test.assertEqual(report["check"]["corrupt"], 0, context)
    test.assertEqual(rc, 0, context)
    return report


# The durable image (--data-dir): the pair and load its tests share.
READ_BACK_RE = r"image read back from --data-dir \S+ at epoch (\d+)"


def durable_pair(c, durable=None, memory=None, backlog=None):
    """A backup and a primary, each with its own --data-dir and --listen, each the
    other's --reprotect target; both serving kvstore. Returns (backup, primary, ports,
    dirs)."""
    ports = {k: free_port() for k in ("b_listen", "p_listen", "b_svc", "p_svc")}
    dirs = {k: os.path.join(c.dir, k) for k in ("b_data", "p_data")}
    mode = ["--durable", durable] if durable else []
    if backlog:
        mode += ["--disk-backlog", backlog]
    kv = [binary("kvstore")]
    backup = c.backup(kv, name="backup", port=ports["b_listen"], service_port=ports["b_svc"],
                      reprotect=ports["p_listen"], memory=memory,
                      extra=["--data-dir", dirs["b_data"], *mode])
    primary = c.primary(kv, ports["b_listen"], name="primary", service_port=ports["p_svc"],
                        memory=memory,
                        extra=["--data-dir", dirs["p_data"], "--listen",
                               f"127.0.0.1:{ports['p_listen']}", *mode])
    return backup, primary, ports, dirs


def kvload_check(c, ports, seconds, seed):
    """romulus-kvload --check on a durable_pair's two service ports (the primary's
    first), reconnecting through a failover or a restart of both."""
    return c.proc("kvload", [
        binary("kvload"), "--server", f"127.0.0.1:{ports['p_svc']}", "--server",
        f"127.0.0.1:{ports['b_svc']}", "--connections", "4", "--keys", "200",
        "--seconds", str(seconds), "--check", "--json", "--quiet", "--seed", str(seed),
        "--reconnect-timeout", "30s", "--request-timeout", "20s"])


def restart(c, node, name):
    """The same command again (what systemd does after a reboot)."""
    again = Node(name, node.argv, node.control_path, listen_port=node.listen_port,
                 service_port=node.service_port)
    c.procs.append(again)
    return again


def check_counter_resume(test, node, start=0):
    """Waits for the counter guest on a took-over node to report its resume; asserts it
    was consistent and at the takeover epoch. Returns (epoch, value)."""
    m = node.wait_for(None, start=start, any_of=[RESUMED_RE, INCONSISTENT_RE])
    test.assertNotRegex(m.group(0), INCONSISTENT_RE, node.text())
    take = node.find(TAKEOVER_RE, start)
    test.assertIsNotNone(take, node.text())
    test.assertEqual(int(m.group(1)), int(take.group(2)),
                     "the guest resumed at another epoch than the takeover's\n" + node.text())
    return int(m.group(1)), int(m.group(2))


# ---------------------------------------------------------------------------
# TCP relay


class Relay:
    """Listens on a free loopback port and forwards each connection to target_port.

    flip_probability: chance, per segment read from the client (primary->backup), of
    flipping one random bit in it. throttle = (n, s): forward primary->backup bytes n at
    a time, s seconds apart. limit(n)/grant(n): forward only so many primary->backup
    bytes (the primary blocks once the socket buffers are full). hold_acks(): stop forwarding backup->primary bytes
    (they are kept, in order) until release_acks(). A connection that ends on one side
    is closed on the other.
    """

    def __init__(self, target_port, rng=None, port=0):
        self.target_port = target_port
        self.rng = rng or random.Random(0)
        self.flip_probability = 0.0
        self.flips = 0
        self.throttle = None  # (piece bytes, seconds between pieces) for primary->backup
        self.budget = None  # primary->backup bytes still allowed (None: no limit); grant()
        self.forwarded_up = 0
        self._stop_at_consistent = False
        self._scan_tail = b""
        self.stopped_at_consistent = threading.Event()
        self.connections = 0
        self._lock = threading.Lock()
        self._held = False
        self._release = threading.Condition(self._lock)
        self._socks = []
        self._closed = False
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", port))
        self._listener.listen(16)
        self.port = self._listener.getsockname()[1]
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def set_flip_probability(self, p):
        with self._lock:
            self.flip_probability = p

    def hold_acks(self):
        with self._lock:
            self._held = True

    def release_acks(self):
        with self._lock:
            self._held = False
            self._release.notify_all()

    def limit(self, budget):
        """From now on forward at most `budget` more primary->backup bytes until grant()."""
        with self._lock:
            self.budget = budget
            self._release.notify_all()

    def grant(self, n):
        with self._lock:
            self.budget = (self.budget or 0) + n
            self._release.notify_all()

    def unlimit(self):
        with self._lock:
            self.budget = None
            self._release.notify_all()

    # CHECKPOINT_BEGIN (int32 -100), a u64 epoch below 2^32, flags == kBeginConsistent.
    _CONSISTENT_BEGIN = re.compile(rb"\x9c\xff\xff\xff....\x00\x00\x00\x00\x01\x00\x00\x00",
                                   re.DOTALL)

    def stop_before_consistent_checkpoint(self):
        """Forwards primary->backup bytes only up to the next CHECKPOINT_BEGIN of a
        consistent (paused) checkpoint, then holds the rest (limit(0)) and sets
        stopped_at_consistent; unlimit() lets it through. (A byte pattern search: the
        pattern is 16 specific bytes, which page data in these tests does not contain.)"""
        with self._lock:
            self._stop_at_consistent = True
            self._scan_tail = b""

    def flip_next_consistent_epoch_bit(self, bit):
        """Flips bit `bit` (0..31) of the epoch in the next consistent CHECKPOINT_BEGIN
        that arrives whole in one segment from the primary."""
        with self._lock:
            self._flip_epoch_bit = bit

    def _maybe_flip_epoch(self, data):
        with self._lock:
            bit = getattr(self, "_flip_epoch_bit", None)
            if bit is None:
                return data
            m = self._CONSISTENT_BEGIN.search(data)
            if not m:
                return data
            self._flip_epoch_bit = None
            out = bytearray(data)
            out[m.start() + 4 + bit // 8] ^= 1 << (bit % 8)
            self.flips += 1
            return bytes(out)

    def _cut_at_consistent_begin(self, data):
        """Called by the upstream pump: sends nothing itself; when the pattern is in
        `data`, sets the budget so that only the bytes before it go out."""
        with self._lock:
            window = self._scan_tail + data
            m = self._CONSISTENT_BEGIN.search(window)
            if not m:
                self._scan_tail = window[-15:]
                return data
            self._stop_at_consistent = False
            cut = max(0, m.start() - len(self._scan_tail))
            self.budget = cut
            self.stopped_at_consistent.set()
            return data

    def _send_within_budget(self, dst, data):
        while data:
            with self._lock:
                while self.budget is not None and self.budget == 0 and not self._closed:
                    self._release.wait()
                if self._closed:
                    return
                n = len(data) if self.budget is None else min(self.budget, len(data))
                if self.budget is not None:
                    self.budget -= n
                self.forwarded_up += n
            dst.sendall(data[:n])
            data = data[n:]

    def _accept(self):
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                if self._closed:
                    client.close()
                    server.close()
                    return
                self.connections += 1
                self._socks += [client, server]
            for src, dst, up in ((client, server, True), (server, client, False)):
                t = threading.Thread(target=self._pump, args=(src, dst, up), daemon=True)
                t.start()
                self._threads.append(t)

    def _pump(self, src, dst, upstream):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                with self._lock:
                    if upstream:
                        if self.flip_probability and self.rng.random() < self.flip_probability:
                            data = bytearray(data)
                            data[self.rng.randrange(len(data))] ^= 1 << self.rng.randrange(8)
                            data = bytes(data)
                            self.flips += 1
                    else:
                        while self._held and not self._closed:
                            self._release.wait()
                    throttle = self.throttle if upstream else None
                if upstream:
                    data = self._maybe_flip_epoch(data)
                if upstream and self._stop_at_consistent:
                    data = self._cut_at_consistent_begin(data)
                if upstream and self.budget is not None:
                    self._send_within_budget(dst, data)
                    continue
                if throttle is None:
                    dst.sendall(data)
                    if upstream:
                        with self._lock:
                            self.forwarded_up += len(data)
                    continue
                piece, pause = throttle
                for at in range(0, len(data), piece):
                    dst.sendall(data[at:at + piece])
                    time.sleep(pause)
        except OSError:
            pass
        finally:
            # One side ended: end both (a killed primary looks the same to the backup).
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        with self._lock:
            self._closed = True
            self._held = False
            self._release.notify_all()
            socks = list(self._socks)
        try:
            self._listener.close()
        except OSError:
            pass
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        for t in self._threads:
            t.join(timeout=5)


def log(msg):
    print(msg, file=sys.stderr, flush=True)
