"""`--metrics ADDR:PORT`: Prometheus text at /metrics on both roles.

Each test starts its own pair (counter guest, 32 MiB arena, 20 ms epochs) with
--metrics on free loopback ports. promtool (Debian's `prometheus` package,
installed by scripts/setup) checks the real output of both roles; a real
Prometheus on loopback scrapes the pair and a value is read back through its
HTTP API. Tests that need promtool or prometheus skip, saying so, without them.
"""

import json
import os
import re
import shutil
import subprocess
import tempfile
import unittest
import urllib.error
import urllib.parse
import urllib.request

import harness
from harness import Cluster


def scrape(port, path="/metrics"):
    """(status, body) of GET http://127.0.0.1:port/path; (None, error) if unreachable."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return None, str(e)


def value(text, series):
    """The value of one series (`name` or `name{labels}`) in exposition text, or None."""
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split(" ")[1])
    return None


PRIMARY_FAMILIES = [
    "romulus_role", "romulus_failovers_total", "romulus_state", "romulus_checkpoints_total",
    "romulus_last_committed_epoch", "romulus_pause_seconds", "romulus_pause_phase_seconds",
    "romulus_checkpoint_bytes_total",
    "romulus_page_cache_hits_total", "romulus_output_held_bytes",
    "romulus_output_added_latency_seconds", "romulus_output_path_seconds",
    "romulus_tls_reloads_total",
]
BACKUP_FAMILIES = [
    "romulus_role", "romulus_failovers_total", "romulus_state", "romulus_last_committed_epoch",
    "romulus_checkpoints_committed_total", "romulus_primary_connected",
    "romulus_tls_reloads_total",
]


@harness.require_binaries("romulus", "counter")
class MetricsTest(unittest.TestCase):

    def pair(self):
        c = Cluster(self)
        guest = harness.counter_guest(50)
        self.backup_metrics = harness.free_port()
        self.primary_metrics = harness.free_port()
        backup = c.backup(guest, extra=["--metrics", f"127.0.0.1:{self.backup_metrics}"],
                          service_port=harness.free_port())
        primary = c.primary(guest, backup.listen_port, service_port=harness.free_port(),
                            extra=["--metrics", f"127.0.0.1:{self.primary_metrics}"])
        primary.wait_for(harness.IN_SYNC_RE)
        backup.wait_for(harness.SYNCED_RE)
        return c, backup, primary

    def metrics_when(self, port, predicate, what, c):
        def ready():
            status, body = scrape(port)
            return body if status == 200 and predicate(body) else None
        return harness.wait_until(ready, lambda: f"{what}\n{c.logs()}")

    def test_both_roles_serve_their_families_with_help_and_type(self):
        c, backup, primary = self.pair()
        p = self.metrics_when(self.primary_metrics,
                              lambda t: (value(t, "romulus_last_committed_epoch") or 0) > 0,
                              "a committed epoch in the primary's metrics", c)
        for name in PRIMARY_FAMILIES:
            self.assertIn(f"# TYPE {name} ", p, name)
            self.assertIn(f"# HELP {name} ", p, name)
        self.assertEqual(value(p, 'romulus_role{role="primary"}'), 1)
        self.assertEqual(value(p, 'romulus_state{state="protected"}'), 1)
        self.assertEqual(value(p, 'romulus_state{state="syncing"}'), 0)
        self.assertGreater(value(p, 'romulus_pause_seconds_count'), 0)
        b = self.metrics_when(self.backup_metrics,
                              lambda t: (value(t, "romulus_last_committed_epoch") or 0) > 0,
                              "a committed epoch in the backup's metrics", c)
        for name in BACKUP_FAMILIES:
            self.assertIn(f"# TYPE {name} ", b, name)
        self.assertEqual(value(b, 'romulus_role{role="backup"}'), 1)
        self.assertEqual(value(b, 'romulus_state{state="protecting"}'), 1)
        self.assertEqual(scrape(self.primary_metrics, "/")[0], 404)

    @unittest.skipUnless(shutil.which("etcd"), "etcd is not installed (Debian: etcd-server)")
    def test_with_a_witness_the_owner_reports_its_lease_and_the_backup_does_not_own(self):
        from test_witness import Etcd  # the same one-member etcd on loopback
        etcd = Etcd(self)
        c = Cluster(self)
        guest = harness.counter_guest(50)
        w = etcd.witness_args("metrics")
        bm, pm = harness.free_port(), harness.free_port()
        backup = c.backup(guest, extra=w + ["--metrics", f"127.0.0.1:{bm}"])
        primary = c.primary(guest, backup.listen_port,
                            extra=w + ["--metrics", f"127.0.0.1:{pm}"])
        primary.wait_for(harness.IN_SYNC_RE)
        p = self.metrics_when(pm, lambda t: value(t, "romulus_owner") == 1,
                              "the primary's metrics to say it owns the pair", c)
        self.assertGreater(value(p, "romulus_lease_remaining_seconds"), 0)
        b = self.metrics_when(bm, lambda t: value(t, "romulus_owner") is not None,
                              "the backup's metrics to report ownership", c)
        self.assertEqual(value(b, "romulus_owner"), 0)
        self.assertEqual(value(b, "romulus_lease_remaining_seconds"), 0)

    @unittest.skipUnless(shutil.which("promtool"),
                         "promtool not installed (Debian package prometheus; scripts/setup)")
    def test_promtool_accepts_both_roles_output(self):
        c, backup, primary = self.pair()
        for port in (self.primary_metrics, self.backup_metrics):
            text = self.metrics_when(port,
                                     lambda t: (value(t, "romulus_last_committed_epoch") or 0) > 0,
                                     f"a committed epoch in the metrics on port {port}", c)
            r = subprocess.run(["promtool", "check", "metrics"], input=text, text=True,
                               capture_output=True, timeout=30)
            self.assertEqual(r.returncode, 0, f"promtool: {r.stdout}{r.stderr}\n{text}")

    def test_a_backup_that_takes_over_serves_primary_metrics_on_the_same_port(self):
        c, backup, primary = self.pair()
        primary.kill9()
        backup.wait_for(harness.TAKEOVER_RE)
        text = self.metrics_when(
            self.backup_metrics, lambda t: value(t, 'romulus_role{role="primary"}') == 1,
            "the took-over node's metrics to say primary", c)
        self.assertEqual(value(text, "romulus_failovers_total"), 1)
        self.assertIn("# TYPE romulus_pause_seconds histogram", text)

    @unittest.skipUnless(shutil.which("prometheus"),
                         "prometheus not installed (Debian package prometheus; scripts/setup)")
    def test_a_real_prometheus_scrapes_the_pair_and_answers_a_query(self):
        c, backup, primary = self.pair()
        tmp = tempfile.mkdtemp(prefix="romulus-prometheus-")
        self.addCleanup(shutil.rmtree, tmp, True)
        config = os.path.join(tmp, "prometheus.yml")
        with open(config, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                    "scrape_configs:\n  - job_name: romulus\n    static_configs:\n"
                    f"      - targets: ['127.0.0.1:{self.primary_metrics}', "
                    f"'127.0.0.1:{self.backup_metrics}']\n")
        web = harness.free_port()
        prom = c.proc("prometheus", ["prometheus", f"--config.file={config}",
                                     f"--storage.tsdb.path={os.path.join(tmp, 'data')}",
                                     f"--web.listen-address=127.0.0.1:{web}"])

        def query(q):
            url = f"http://127.0.0.1:{web}/api/v1/query?" + urllib.parse.urlencode({"query": q})
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    reply = json.loads(r.read().decode())
            except (OSError, ValueError):
                return None
            if reply.get("status") != "success":
                return None
            return {s["metric"].get("instance"): float(s["value"][1])
                    for s in reply["data"]["result"]}

        # Each answer is from Prometheus's latest scrape of each node; a scrape that
        # missed its 1 s scrape_timeout on a loaded machine says up 0 until the next
        # one, so the three answers are awaited together.
        def both_scraped():
            epochs, up, roles = (query("romulus_last_committed_epoch"), query("up"),
                                 query("romulus_role == 1"))
            if (epochs and len(epochs) == 2 and all(v > 0 for v in epochs.values()) and
                    up and set(up.values()) == {1.0} and roles and len(roles) == 2):
                return epochs, up, roles
            return None
        epochs, up, roles = harness.wait_until(
            both_scraped, lambda: "Prometheus to report both nodes up, a committed epoch "
            f"and a role for each\n{prom.text()}\n{c.logs()}",
            deadline=max(harness.DEADLINE, 60), poll=0.5)
        self.assertEqual(set(epochs), {f"127.0.0.1:{self.primary_metrics}",
                                       f"127.0.0.1:{self.backup_metrics}"})
        self.assertEqual(set(up), set(epochs), up)
        self.assertEqual(set(roles), set(epochs), roles)


if __name__ == "__main__":
    unittest.main()
