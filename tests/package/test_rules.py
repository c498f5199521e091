"""The Prometheus rules and the Grafana dashboard in dist/, on their own (no binary).

- `promtool check rules` accepts dist/prometheus/romulus.rules.yml, and
  `promtool test rules` passes its unit tests (romulus.rules.test.yml: each alert
  firing and not firing); both skip, saying why, without Debian's `prometheus`.
- every alert of the rules file has a test that expects it to fire;
- the dashboard is valid JSON of the shape Grafana imports: unique panel ids,
  every panel on the 24-column grid, every query on the `datasource` variable.

That each metric the rules and the dashboard name is one the binary exports is
checked against a real pair by test_monitoring.py.
"""

import json
import os
import re
import shutil
import subprocess
import unittest

import support

RULES = os.path.join(support.DIST, "prometheus", "romulus.rules.yml")
RULE_TESTS = os.path.join(support.DIST, "prometheus", "romulus.rules.test.yml")
DASHBOARD = os.path.join(support.DIST, "grafana", "romulus.json")


def promtool(*args):
    p = subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120,
                       cwd=os.path.dirname(RULES))
    return p.returncode, p.stdout + p.stderr


def alert_names(path):
    with open(path) as f:
        return re.findall(r"^\s*- alert:\s*(\S+)\s*$", f.read(), re.M)


def dashboard_panels(dashboard):
    for p in dashboard["panels"]:
        yield p
        yield from p.get("panels", [])


@unittest.skipUnless(shutil.which("promtool"),
                     "promtool not installed (Debian package prometheus; scripts/setup)")
class RulesTest(unittest.TestCase):

    def test_promtool_check_rules_accepts_the_rules(self):
        rc, out = promtool("check", "rules", RULES)
        self.assertEqual(rc, 0, out)
        self.assertIn("SUCCESS", out)

    def test_promtool_test_rules_passes_each_alerts_firing_and_quiet_cases(self):
        rc, out = promtool("test", "rules", RULE_TESTS)
        self.assertEqual(rc, 0, out)


class RuleTestCoverageTest(unittest.TestCase):

    def test_every_alert_has_a_test_that_expects_it_to_fire_and_one_that_expects_it_not_to(self):
        with open(RULE_TESTS) as f:
            tests = f.read()
        names = alert_names(RULES)
        self.assertGreaterEqual(len(names), 10)
        self.assertEqual(len(names), len(set(names)), names)
        for name in names:
            # alertname: X followed by a non-empty exp_alerts list.
            firing = re.search(rf"alertname: {name}\n\s+exp_alerts:\n\s+- exp_labels", tests)
            self.assertIsNotNone(firing, f"no test expects {name} to fire")
            quiet = re.search(rf"alertname: {name}\n\s+exp_alerts: \[\]", tests)
            self.assertIsNotNone(quiet, f"no test expects {name} not to fire")


class DashboardTest(unittest.TestCase):

    def setUp(self):
        with open(DASHBOARD) as f:
            self.dashboard = json.load(f)

    def test_the_dashboard_has_unique_panel_ids_on_the_grid_and_queries_on_the_datasource(self):
        d = self.dashboard
        self.assertEqual(d["uid"], "romulus")
        variables = {v["name"]: v for v in d["templating"]["list"]}
        self.assertEqual(variables["datasource"]["type"], "datasource")
        self.assertEqual(variables["datasource"]["query"], "prometheus")
        ids = [p["id"] for p in dashboard_panels(d)]
        self.assertEqual(len(ids), len(set(ids)), ids)
        queries = 0
        for p in dashboard_panels(d):
            g = p["gridPos"]
            self.assertLessEqual(g["x"] + g["w"], 24, p["title"])
            if p["type"] == "row":
                continue
            self.assertEqual(p["datasource"]["uid"], "${datasource}", p["title"])
            self.assertTrue(p["targets"], f"panel {p['title']} has no query")
            refs = [t["refId"] for t in p["targets"]]
            self.assertEqual(len(refs), len(set(refs)), p["title"])
            for t in p["targets"]:
                self.assertEqual(t["datasource"]["uid"], "${datasource}", p["title"])
                self.assertRegex(t["expr"], r"\bromulus_[a-z_]+", p["title"])
                queries += 1
        self.assertGreater(queries, 10)

    def test_the_dashboard_shows_what_the_issue_asks_for(self):
        exprs = " ".join(t["expr"] for p in dashboard_panels(self.dashboard)
                         for t in p.get("targets", []))
        for metric in ["romulus_role", "romulus_state", "romulus_checkpoints_by_trigger_total",
                       "romulus_pause_seconds_bucket", "romulus_output_held_bytes",
                       "romulus_checkpoint_bytes_total", "romulus_failovers_total"]:
            self.assertIn(metric, exprs)


if __name__ == "__main__":
    support.main()
