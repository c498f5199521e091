"""The alert rules and the dashboard against the metrics a real pair exports.

One pair on loopback (counter guest, started once for both tests) with everything that adds metrics: mutual
TLS (harness.Pki), a witness (a one-member etcd, as e2e.witness starts it),
--service on both nodes and --metrics on both. Checked:

- every metric name in an expression of dist/prometheus/romulus.rules.yml and in
  a query of dist/grafana/romulus.json (panels and template variables) is one the
  primary or the backup really exports at /metrics;
- a real Prometheus on loopback, loading the rules and scraping the pair,
  evaluates every rule without an error, and answers every dashboard query (its
  Grafana variables replaced: all jobs and nodes, a short rate window) with at
  least one series.

Without etcd the witness's two metrics cannot be checked and are named in the
output; without Debian's `prometheus` the second part is skipped, saying so.
"""

import json
import os
import re
import shutil
import tempfile
import unittest
import urllib.error
import urllib.parse
import urllib.request

import support
from support import harness

RULES = os.path.join(support.DIST, "prometheus", "romulus.rules.yml")
DASHBOARD = os.path.join(support.DIST, "grafana", "romulus.json")
WITNESS_ONLY = {"romulus_owner", "romulus_lease_remaining_seconds"}
METRIC_RE = re.compile(r"\bromulus_[a-z0-9_]+\b")


def rule_expressions():
    """The `expr:` of each rule, block scalars (`expr: |`) included."""
    with open(RULES) as f:
        exprs, lines = [], f.read().splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)expr:\s*(.*)$", line)
        if not m:
            continue
        if m.group(2) not in ("|", ">", "|-", ">-"):
            exprs.append(m.group(2))
            continue
        indent, body = len(m.group(1)), []
        for follow in lines[i + 1:]:
            if follow.strip() and len(follow) - len(follow.lstrip()) <= indent:
                break
            body.append(follow.strip())
        exprs.append(" ".join(body))
    return exprs


def dashboard_queries():
    with open(DASHBOARD) as f:
        d = json.load(f)
    queries = []

    def walk(panels):
        for p in panels:
            queries.extend(t["expr"] for t in p.get("targets", []))
            walk(p.get("panels", []))
    walk(d["panels"])
    for v in d["templating"]["list"]:
        if v["type"] == "query":
            queries.append(v["definition"])
    return queries


def as_promql(query):
    """A Grafana query as plain PromQL: every job and node, a 2 s rate window (scrapes every 500 ms)."""
    if query.startswith("label_values("):
        inner = query[len("label_values("):-1]
        query = inner.rsplit(",", 1)[0].strip()  # the series selector of label_values(sel, label)
    return (query.replace("$__rate_interval", "2s").replace("$job", ".*")
            .replace("$instance", ".*"))


def exported_names(text):
    return {re.split(r"[{ ]", line, 1)[0] for line in text.splitlines()
            if line and not line.startswith("#")}


def scrape(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return r.read().decode() if r.status == 200 else None
    except (OSError, urllib.error.HTTPError):
        return None


class ClassScope:
    """What harness.Cluster and Etcd ask of a test (addCleanup), for a whole class: the
    pair is started once and stopped after the class's last test."""

    def __init__(self, cls):
        self.addCleanup = cls.addClassCleanup


def value(text, series):
    for line in (text or "").splitlines():
        if line.startswith(series + " "):
            return float(line.split(" ")[1])
    return None


@harness.require_binaries("romulus", "counter")
@unittest.skipUnless(harness.have_openssl(), "openssl not installed (the pair runs mutual TLS)")
class MonitoringTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        """One pair for both tests: stopped when the class is done."""
        scope = ClassScope(cls)
        cls.with_witness = shutil.which("etcd") is not None
        c = harness.Cluster(scope, tls=True)
        witness = []
        if cls.with_witness:
            from test_witness import Etcd  # the same one-member etcd on loopback
            witness = Etcd(scope).witness_args("monitoring")
        else:
            print("etcd not installed (Debian: etcd-server): not checking "
                  + ", ".join(sorted(WITNESS_ONLY)), flush=True)
        guest = harness.counter_guest(200)
        cls.ports = {"backup": harness.free_port(), "primary": harness.free_port()}
        backup = c.backup(guest, service_port=harness.free_port(),
                          extra=witness + ["--metrics", f"127.0.0.1:{cls.ports['backup']}"])
        primary = c.primary(guest, backup.listen_port, service_port=harness.free_port(),
                            extra=witness + ["--metrics", f"127.0.0.1:{cls.ports['primary']}"])
        primary.wait_for(harness.IN_SYNC_RE)
        cls.cluster = c

        def ready(role, predicate):
            text = scrape(cls.ports[role])
            return text if text and predicate(text) else None
        owner = (lambda t: value(t, "romulus_owner") == 1) if cls.with_witness else bool
        cls.primary_text = harness.wait_until(
            lambda: ready("primary", lambda t: value(t, 'romulus_state{state="protected"}') == 1
                          and owner(t)),
            lambda: f"the primary's metrics to say protected\n{c.logs()}")
        cls.backup_text = harness.wait_until(
            lambda: ready("backup", lambda t: value(t, "romulus_seconds_since_contact")
                          is not None and value(t, "romulus_image_consistent") == 1),
            lambda: f"the backup's metrics to show its contact and image\n{c.logs()}")

    def test_rules_and_dashboard_name_only_metrics_the_pair_exports(self):
        exported = exported_names(self.primary_text) | exported_names(self.backup_text)
        used = {}
        for source, exprs in [("romulus.rules.yml", rule_expressions()),
                              ("romulus.json", dashboard_queries())]:
            self.assertTrue(exprs, source)
            for e in exprs:
                for name in METRIC_RE.findall(e):
                    used.setdefault(name, set()).add(source)
        self.assertGreater(len(used), 25)
        if not self.with_witness:
            used = {n: s for n, s in used.items() if n not in WITNESS_ONLY}
        missing = {n: sorted(s) for n, s in used.items() if n not in exported}
        self.assertEqual(missing, {}, "used by the rules or the dashboard but not exported "
                         f"by either role:\n{json.dumps(missing, indent=1)}")

    @unittest.skipUnless(shutil.which("prometheus"),
                         "prometheus not installed (Debian package prometheus; scripts/setup)")
    def test_prometheus_evaluates_every_rule_and_answers_every_dashboard_query(self):
        tmp = tempfile.mkdtemp(prefix="romulus-prometheus-")
        self.addCleanup(shutil.rmtree, tmp, True)
        config = os.path.join(tmp, "prometheus.yml")
        with open(config, "w") as f:
            f.write("global:\n  scrape_interval: 500ms\n  scrape_timeout: 500ms\n"
                    "  evaluation_interval: 500ms\n"
                    f"rule_files: ['{RULES}']\n"
                    "scrape_configs:\n  - job_name: romulus\n    static_configs:\n"
                    f"      - targets: ['127.0.0.1:{self.ports['primary']}', "
                    f"'127.0.0.1:{self.ports['backup']}']\n"
                    "        labels: {pair: monitoring}\n")
        web = harness.free_port()
        prom = self.cluster.proc("prometheus", [
            "prometheus", f"--config.file={config}",
            f"--storage.tsdb.path={os.path.join(tmp, 'data')}",
            f"--web.listen-address=127.0.0.1:{web}"])

        def api(path, **params):
            url = f"http://127.0.0.1:{web}/api/v1/{path}"
            if params:
                url += "?" + urllib.parse.urlencode(params)
            # An HTTP error with a JSON body is Prometheus's answer (a bad query:
            # the caller fails on it); one without is Prometheus not ready yet
            # (a plain-text 503 while it starts, slow on a loaded machine).
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    body = r.read()
            except urllib.error.HTTPError as e:
                body = e.read()
            except OSError:
                return None
            try:
                return json.loads(body.decode())
            except ValueError:
                return None
        deadline = max(harness.DEADLINE, 60)
        logs = lambda: f"{prom.text()}\n{self.cluster.logs()}"  # noqa: E731

        def rules_evaluated():
            reply = api("rules")
            if not reply or reply.get("status") != "success":
                return None
            rules = [r for g in reply["data"]["groups"] for r in g["rules"]]
            if not rules or any(r.get("lastEvaluation", "").startswith("0001") for r in rules):
                return None
            return rules
        rules = harness.wait_until(rules_evaluated, lambda: "Prometheus to evaluate every "
                                   f"rule\n{logs()}", deadline=deadline, poll=0.5)
        self.assertEqual(len(rules), len(rule_expressions()))
        for r in rules:
            self.assertEqual(r["health"], "ok", f"{r['name']}: {r.get('lastError')}")

        for query in dashboard_queries():
            promql = as_promql(query)
            needs_witness = bool(WITNESS_ONLY & set(METRIC_RE.findall(promql)))

            def answered():
                reply = api("query", query=promql)
                if reply is None:
                    return None
                self.assertEqual(reply.get("status"), "success", f"{promql}: {reply}")
                if reply["data"]["result"] or (needs_witness and not self.with_witness):
                    return reply
                return None
            harness.wait_until(answered, lambda: f"a series for {promql}\n{logs()}",
                               deadline=deadline, poll=0.5)


if __name__ == "__main__":
    support.main()
