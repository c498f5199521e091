"""A two-host lab in network namespaces for the fault-injection tests.

Lab(test) builds, for one test, this topology (k is unique per test run):

        A 10.77.k.1      B 10.77.k.2      E 10.77.k.3      C 10.77.k.4
        (node)           (node)           (etcd)           (clients)
          |eth0            |eth0            |eth0            |eth0
          +--------------+-+----------------+-+--------------+
                         |     bridge br0 in S (switch)      |
                         +-----------------------------------+

Every namespace has its loopback up (the protected guest listens on 127.0.0.1
behind its node's --service proxy). etcd_cluster(3) adds E1..E3 (10.77.k.5..7).

Namespaces are named romf<k>-<pid>-<X>, <pid> being the test process: a run
never touches another run's namespaces, and a Lab deletes the namespaces of runs
whose process is gone (crashed runs) before it builds its own. Veth pairs are
created directly inside their namespaces, so the root namespace never holds
one. Every fault lives inside the lab's own namespaces; the lab is torn down at
cleanup (processes, nft tables and namespaces go with it), even when a test fails.

Faults (all undone by the matching call, and by teardown):
  partition(a, b) / heal(a, b)      a and b drop what they receive from each other
                                    (a silent black hole); both keep everything else
  isolate(a) / unisolate(a)         a's link down: a reaches nobody, nobody reaches a
  loss(a, b, pct) / clear_loss(a,b) a and b each drop pct % of what they receive
                                    from the other (nft numgen random)
  fence_service(node, port, clients) node answers TCP from `clients` to `port` with
                                    a reset (used to steer clients off a node)
  etcd_stop() / etcd_restart()      every etcd member killed / started again on its
                                    own data dir

One thread: the test's. Processes started here are harness.Proc objects.
"""

import fcntl
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

import harness

PREFIX = "romf"
HOSTS = {"A": 1, "B": 2, "E": 3, "C": 4, "E1": 5, "E2": 6, "E3": 7}
ETCD_CLIENT_PORT = 23791  # never etcd's default 2379/2380
ETCD_PEER_PORT = 23801
NFT_TABLE = "romulus_fault"

_NS_RE = re.compile(rf"^{PREFIX}(\d+)-(\d+)-(\w+)$")


def supported():
    """(True, "") if this machine can build a lab, else (False, why)."""
    if os.geteuid() != 0:
        return False, "needs root (network namespaces, nft)"
    for tool in ("ip", "nft", "etcd", "etcdctl"):
        if not shutil.which(tool):
            return False, f"needs `{tool}` on PATH"
    return True, ""


def _run(*argv, check=True, input=None):
    p = subprocess.run([str(a) for a in argv], capture_output=True, text=True, input=input,
                       timeout=harness.DEADLINE)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} failed (rc {p.returncode}): "
                           f"{p.stderr.strip()}")
    return p


def _namespaces():
    p = _run("ip", "netns", "list", check=False)
    return [line.split()[0] for line in p.stdout.splitlines() if line.strip()]


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _delete_namespace(ns):
    """Kills every process left in ns, then deletes it (its veths go with it)."""
    p = _run("ip", "netns", "pids", ns, check=False)
    for pid in p.stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    _run("ip", "netns", "delete", ns, check=False)


def clean_stale():
    """Deletes lab namespaces whose test process is gone; returns their names."""
    stale = []
    for ns in _namespaces():
        m = _NS_RE.match(ns)
        if m and not _pid_alive(int(m.group(2))):
            _delete_namespace(ns)
            stale.append(ns)
    return stale


class Lab:
    """The namespaces, bridge, faults, etcd members and processes of one test."""

    def __init__(self, test, nodes=("A", "B", "E", "C")):
        self._lock = None
        self.dir = tempfile.mkdtemp(prefix="romulus-netns-")
        self.procs = []
        self.etcd = {}  # member namespace -> Proc
        self._etcd_argv = {}
        self._partitions = set()  # frozenset({a, b})
        self._losses = {}  # frozenset({a, b}) -> percent
        self._fences = {}  # node -> [(client node, port)]
        self._created = []
        test.addCleanup(self.close)
        stale = clean_stale()
        if stale:
            harness.log(f"netns: deleted namespaces of crashed runs: {' '.join(stale)}")
        self.k = self._claim_subnet()
        _run("ip", "-n", self.ns("S"), "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", self.ns("S"), "link", "set", "br0", "up")
        _run("ip", "-n", self.ns("S"), "link", "set", "lo", "up")
        for name in nodes:
            self.add_node(name)

    # -- topology

    def _claim_subnet(self):
        """Claims the first free k (1..250) and creates this run's switch namespace.

        A k is held by an flock on /tmp/romulus-netns-k<k>.lock for the lab's life (the
        kernel drops it when the process dies), so concurrent runs never share a k."""
        pid = os.getpid()
        used = {int(m.group(1)) for m in map(_NS_RE.match, _namespaces()) if m}
        for i in range(250):
            k = (pid + i) % 250 + 1
            if k in used:
                continue
            lock = open(os.path.join(tempfile.gettempdir(), f"romulus-netns-k{k}.lock"), "w")
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                lock.close()
                continue
            ns = f"{PREFIX}{k}-{pid}-S"
            if _run("ip", "netns", "add", ns, check=False).returncode == 0:
                self._created.append(ns)
                self._lock = lock
                return k
            lock.close()
        raise RuntimeError("netns: no free 10.77.k.0/24 subnet for a lab")

    def ns(self, name):
        return f"{PREFIX}{self.k}-{os.getpid()}-{name}"

    def ip(self, name):
        return f"10.77.{self.k}.{HOSTS[name]}"

    def add_node(self, name):
        """A namespace `name` with eth0 (its address /24) on the bridge and lo up."""
        ns = self.ns(name)
        _run("ip", "netns", "add", ns)
        self._created.append(ns)
        peer = f"v{name}"
        _run("ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", peer,
             "netns", self.ns("S"))
        _run("ip", "-n", self.ns("S"), "link", "set", peer, "master", "br0")
        _run("ip", "-n", self.ns("S"), "link", "set", peer, "up")
        _run("ip", "-n", ns, "addr", "add", f"{self.ip(name)}/24", "dev", "eth0")
        _run("ip", "-n", ns, "link", "set", "eth0", "up")
        _run("ip", "-n", ns, "link", "set", "lo", "up")
        self._apply_nft(name)

    # -- processes

    def run_in(self, name, argv, proc_name=None):
        """Starts argv in namespace `name`; `ip netns exec` execs it, so the Proc's pid
        is argv's own (signals reach it, not a wrapper). Stopped at teardown."""
        p = harness.Proc(proc_name or f"{name}:{os.path.basename(str(argv[0]))}",
                         ["ip", "netns", "exec", self.ns(name), *argv])
        self.procs.append(p)
        return p

    def node_in(self, name, proc_name, argv, control_path):
        """Like run_in, for a `romulus` node: a harness.Node with its control path."""
        p = harness.Node(proc_name, ["ip", "netns", "exec", self.ns(name), *argv], control_path)
        self.procs.append(p)
        return p

    def exec_in(self, name, *argv, check=False):
        """Runs a short command in namespace `name`; returns the CompletedProcess."""
        return _run("ip", "netns", "exec", self.ns(name), *argv, check=check)

    def can_reach(self, src, dst, port=9):
        """True if a TCP connect from src to dst's address gets an answer within a second:
        accepted, or refused (a reset is an answer: nothing need listen there)."""
        probe = ("import socket, sys\n"
                 "try:\n"
                 "    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1).close()\n"
                 "except ConnectionRefusedError:\n"
                 "    pass\n"
                 "except OSError:\n"
                 "    sys.exit(1)\n")
        return self.exec_in(src, "python3", "-c", probe, self.ip(dst), port).returncode == 0

    # -- faults

    def partition(self, a, b):
        self._partitions.add(frozenset((a, b)))
        self._apply_nft(a)
        self._apply_nft(b)

    def heal(self, a, b):
        self._partitions.discard(frozenset((a, b)))
        self._apply_nft(a)
        self._apply_nft(b)

    def isolate(self, a):
        _run("ip", "-n", self.ns(a), "link", "set", "eth0", "down")

    def unisolate(self, a):
        _run("ip", "-n", self.ns(a), "link", "set", "eth0", "up")

    def loss(self, a, b, percent):
        self._losses[frozenset((a, b))] = int(percent)
        self._apply_nft(a)
        self._apply_nft(b)

    def clear_loss(self, a, b):
        self._losses.pop(frozenset((a, b)), None)
        self._apply_nft(a)
        self._apply_nft(b)

    def fence_service(self, node, port, clients="C"):
        """`node` resets every TCP segment from `clients` to its `port`: connections there
        break at their next request and new ones are refused."""
        self._fences.setdefault(node, []).append((clients, int(port)))
        self._apply_nft(node)

    def _apply_nft(self, name):
        """Rewrites namespace name's table from the faults that involve it, atomically."""
        rules = []
        for pair in self._partitions:
            if name in pair:
                (other,) = pair - {name}
                rules.append(f"ip saddr {self.ip(other)} drop")
        for pair, pct in self._losses.items():
            if name in pair:
                (other,) = pair - {name}
                rules.append(f"ip saddr {self.ip(other)} numgen random mod 100 < {pct} drop")
        for clients, port in self._fences.get(name, []):
            rules.append(f"ip saddr {self.ip(clients)} tcp dport {port} reject with tcp reset")
        body = "".join(f"    {r}\n" for r in rules)
        script = (f"table inet {NFT_TABLE}\n"
                  f"delete table inet {NFT_TABLE}\n"
                  f"table inet {NFT_TABLE} {{\n"
                  f"  chain input {{\n"
                  f"    type filter hook input priority 0; policy accept;\n"
                  f"{body}"
                  f"  }}\n"
                  f"}}\n")
        _run("ip", "netns", "exec", self.ns(name), "nft", "-f", "-", input=script)

    # -- etcd

    def etcd_start(self):
        """One etcd member in E; returns its client URL (http://E:port)."""
        return self._etcd_members(["E"])[0]

    def etcd_cluster(self, n=3):
        """n members in E1..En (created here); returns their client URLs."""
        members = [f"E{i + 1}" for i in range(n)]
        for m in members:
            if m not in self._created_names():
                self.add_node(m)
        return self._etcd_members(members)

    def _created_names(self):
        return {ns.rsplit("-", 1)[1] for ns in self._created}

    def _etcd_members(self, members):
        cluster = ",".join(f"{m}=http://{self.ip(m)}:{ETCD_PEER_PORT}" for m in members)
        for m in members:
            data = os.path.join(self.dir, f"etcd-{m}")
            self._etcd_argv[m] = [
                "etcd", "--name", m, "--data-dir", data,
                "--listen-client-urls", f"http://{self.ip(m)}:{ETCD_CLIENT_PORT}",
                "--advertise-client-urls", f"http://{self.ip(m)}:{ETCD_CLIENT_PORT}",
                "--listen-peer-urls", f"http://{self.ip(m)}:{ETCD_PEER_PORT}",
                "--initial-advertise-peer-urls", f"http://{self.ip(m)}:{ETCD_PEER_PORT}",
                "--initial-cluster", cluster, "--initial-cluster-state", "new",
                "--initial-cluster-token", self.ns("etcd"), "--logger", "zap",
                "--log-level", "warn"]
            self._start_member(m)
        self.etcd_wait_healthy()
        return self.etcd_urls()

    def _start_member(self, m):
        p = self.run_in(m, ["env", *[f"-u{k}" for k in os.environ if k.startswith("ETCD")],
                            *self._etcd_argv[m]], proc_name=f"etcd-{m}")
        self.etcd[m] = p

    def etcd_urls(self):
        return [f"http://{self.ip(m)}:{ETCD_CLIENT_PORT}" for m in self._etcd_argv]

    def etcd_endpoints(self):
        return ",".join(f"{self.ip(m)}:{ETCD_CLIENT_PORT}" for m in self._etcd_argv)

    def etcdctl(self, *args):
        """etcdctl (v3 API) run in the first member's namespace; the CompletedProcess."""
        first = next(iter(self._etcd_argv))
        env = ["env", "ETCDCTL_API=3"]
        return self.exec_in(first, *env, "etcdctl", f"--endpoints={self.etcd_endpoints()}",
                            "--dial-timeout=2s", "--command-timeout=3s", *args)

    def etcd_wait_healthy(self):
        harness.wait_until(lambda: self.etcdctl("endpoint", "health").returncode == 0,
                           lambda: "etcd to be healthy\n" +
                           "\n".join(p.text() for p in self.etcd.values()))

    def etcd_get(self, key):
        """The value of key in etcd, or None (absent, or etcd not answering)."""
        p = self.etcdctl("get", key, "--print-value-only")
        return p.stdout.strip() if p.returncode == 0 and p.stdout.strip() else None

    def etcd_stop(self):
        """Kills every member (SIGKILL: no goodbye to its clients); data dirs stay."""
        for p in self.etcd.values():
            p.stop()

    def etcd_restart(self):
        for m in self._etcd_argv:
            self._start_member(m)
        self.etcd_wait_healthy()

    # -- teardown

    def close(self):
        """Stops every process, deletes every namespace of this lab; idempotent."""
        procs, self.procs = self.procs, []
        for p in procs:
            p.stop()
        created, self._created = self._created, []
        for ns in reversed(created):
            _delete_namespace(ns)
        shutil.rmtree(self.dir, ignore_errors=True)
        lock, self._lock = getattr(self, "_lock", None), None
        if lock:
            lock.close()


def wait_seconds(seconds):
    """Lets a fault last `seconds` (a fault's length, never a check)."""
    time.sleep(seconds)
