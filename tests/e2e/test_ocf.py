"""The Pacemaker resource agent dist/ocf/romulus against real romulus processes.

Pacemaker itself is not needed: `ocf-tester` (Debian's resource-agents package,
installed by scripts/setup) runs every action in the order Pacemaker would, and
the other tests call the agent the way Pacemaker does (OCF_RESKEY_* in the
environment, the action as the argument). Each test starts a real peer node
(a backup, or a primary) so that start, promote and demote mean what they mean
in a two-node pair. Skipped, saying why, without ocf-tester or the OCF shell
library.
"""

import os
import shutil
import subprocess
import tempfile
import unittest
import xml.dom.minidom

import harness
from harness import Cluster

AGENT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "dist", "ocf", "romulus")
OCF_ROOT = "/usr/lib/ocf"
HAVE_SHELLFUNCS = os.path.exists(os.path.join(OCF_ROOT, "lib", "heartbeat", "ocf-shellfuncs"))

OCF_SUCCESS, OCF_ERR_GENERIC, OCF_NOT_RUNNING, OCF_RUNNING_PROMOTED = 0, 1, 7, 8


def write_config(path, lines):
    with open(path, "w") as f:
        f.write("".join(f"{k} = {v}\n" for k, v in lines))
    return path


@unittest.skipUnless(HAVE_SHELLFUNCS, f"no OCF shell library under {OCF_ROOT} "
                     "(apt-get install resource-agents: scripts/setup)")
@harness.require_binaries("romulus", "counter")
class OcfAgentTest(unittest.TestCase):

    def node_a(self, c, peer_port, failover_timeout="1s"):
        """This node's configs (the agent's instance): listens on a free port, its
        primary config protects to the peer at peer_port."""
        self.a_port = harness.free_port()
        common = [("memory", "32M"), ("interval", "20ms"), ("heartbeat", "50ms"),
                  ("failover-timeout", failover_timeout), ("stats-period", "0"),
                  ("guest", " ".join(harness.counter_guest()))]
        self.params = {
            "backup_config": write_config(os.path.join(c.dir, "a-backup.conf"),
                                          [("listen", f"127.0.0.1:{self.a_port}")] + common),
            "primary_config": write_config(os.path.join(c.dir, "a-primary.conf"),
                                           [("backup", f"127.0.0.1:{peer_port}")] + common),
            "control": os.path.join(c.dir, "a.sock"),
            "log": os.path.join(c.dir, "a.log"),
            "binary": harness.binary("romulus"),
        }
        self.instance = f"romulus-e2e-{os.getpid()}"
        self.rsctmp = os.path.join(c.dir, "rsctmp")
        os.makedirs(self.rsctmp, exist_ok=True)
        # Whatever a test leaves running is stopped through the agent, then killed.
        self.addCleanup(self.agent, "stop")

    def env(self, **extra):
        e = dict(os.environ, OCF_ROOT=OCF_ROOT, OCF_RESOURCE_INSTANCE=self.instance,
                 HA_RSCTMP=self.rsctmp, OCF_RESKEY_CRM_meta_timeout="20000")
        e.update({f"OCF_RESKEY_{k}": v for k, v in self.params.items()})
        e.update(extra)
        return e

    def agent(self, action, **extra):
        """Runs one action the way Pacemaker does; returns (rc, output)."""
        p = subprocess.run([AGENT, action], env=self.env(**extra), capture_output=True,
                           text=True, timeout=120)
        return p.returncode, p.stdout + p.stderr

    def a_log(self):
        try:
            with open(self.params["log"]) as f:
                return f.read()
        except OSError:
            return "(no log)"

    def assert_action(self, action, expected, **extra):
        rc, out = self.agent(action, **extra)
        self.assertEqual(rc, expected, f"{action}: rc {rc}\n{out}\n--- node A's log:\n"
                         f"{self.a_log()[-4000:]}")

    def test_meta_data_is_valid_xml_for_the_ocf_dtd(self):
        p = subprocess.run([AGENT, "meta-data"], env=dict(os.environ, OCF_ROOT=OCF_ROOT),
                           capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, p.stderr)
        text = p.stdout
        doc = xml.dom.minidom.parseString(text)
        actions = {a.getAttribute("name") for a in doc.getElementsByTagName("action")}
        self.assertTrue({"start", "stop", "monitor", "promote", "demote", "meta-data",
                         "validate-all"} <= actions, actions)
        if shutil.which("xmllint") and os.path.exists("/usr/share/resource-agents/ra-api-1.dtd"):
            p = subprocess.run(["xmllint", "--noout", "--valid", "-"], input=text, text=True,
                               capture_output=True, cwd="/usr/share/resource-agents")
            self.assertEqual(p.returncode, 0, p.stderr)

    @unittest.skipUnless(shutil.which("ocf-tester"), "ocf-tester not found (apt-get install "
                         "resource-agents: scripts/setup)")
    def test_ocf_tester_passes_with_a_real_peer_backup(self):
        """ocf-tester starts the instance (a backup), promotes it (no image here: the
        guest starts fresh as the primary, protected by the peer), demotes it (the
        primary says GOODBYE, a backup starts in its place), promotes it again, and
        stops and restarts it: every exit code as the OCF spec says."""
        c = Cluster(self)
        peer = c.backup(harness.counter_guest(), name="peer")
        self.node_a(c, peer.listen_port)
        args = ["ocf-tester", "-v", "-n", self.instance]
        for k, v in self.params.items():
            args += ["-o", f"{k}={v}"]
        # ocf-tester runs meta-data as `nobody`: a copy the checkout's permissions
        # (a home directory of mode 700, say) cannot hide.
        agent_dir = tempfile.mkdtemp(prefix="romulus-ocf-")
        self.addCleanup(shutil.rmtree, agent_dir, True)
        os.chmod(agent_dir, 0o755)
        agent = shutil.copy(AGENT, os.path.join(agent_dir, "romulus"))
        os.chmod(agent, 0o755)
        p = subprocess.run(args + [agent], capture_output=True, text=True, timeout=600,
                           env=dict(os.environ, HA_RSCTMP=self.rsctmp))
        out = p.stdout + p.stderr
        self.assertEqual(p.returncode, 0, f"{out}\n--- node A's log:\n{self.a_log()[-4000:]}")
        self.assertIn("passed all tests", out)
        # Both promotions really protected a fresh guest to the peer.
        self.assertGreaterEqual(peer.count(r"primary \S+ connected \(session"), 2, peer.text())
        self.assertEqual(peer.count(r"TAKING OVER"), 0, peer.text())

    def test_promote_without_an_image_starts_a_fresh_primary_that_the_peer_protects(self):
        c = Cluster(self)
        peer = c.backup(harness.counter_guest(), name="peer")
        self.node_a(c, peer.listen_port)
        self.assert_action("start", OCF_SUCCESS)
        self.assert_action("monitor", OCF_SUCCESS)
        self.assert_action("promote", OCF_SUCCESS)
        self.assert_action("monitor", OCF_RUNNING_PROMOTED)
        # promote returns only once the new primary is protected by the peer
        # (a Pacemaker user may demote or move it the next moment).
        status = harness.control(self.params["control"])
        self.assertEqual(status.get("state"), "protected", f"{status}\n{peer.text()}")
        self.assertEqual(status.get("resumed"), False)
        # Demote: the primary says GOODBYE; the peer keeps its image and waits.
        self.assert_action("demote", OCF_SUCCESS)
        self.assert_action("monitor", OCF_SUCCESS)
        harness.wait_until(lambda: harness.control(peer.control_path)["state"]
                           == "primary_stopped", lambda: peer.text())
        self.assertEqual(peer.count(r"TAKING OVER"), 0, peer.text())

    def test_promote_of_a_backup_with_an_image_takes_over_and_demote_rejoins_as_backup(self):
        c = Cluster(self)
        self.node_a(c, harness.free_port(), failover_timeout="3600s")  # only promote takes over
        self.assert_action("monitor", OCF_NOT_RUNNING, OCF_RESKEY_CRM_meta_interval="0")
        self.assert_action("start", OCF_SUCCESS)
        primary = c.primary(harness.counter_guest(), self.a_port, name="peer")
        primary.wait_for(harness.IN_SYNC_RE)
        self.assert_action("monitor", OCF_SUCCESS)
        primary.kill9()

        self.assert_action("promote", OCF_SUCCESS)
        self.assert_action("monitor", OCF_RUNNING_PROMOTED)
        status = harness.control(self.params["control"])
        self.assertEqual(status["role"], "primary", status)
        self.assertTrue(status.get("resumed"), status)
        harness.wait_until(lambda: "resumed at epoch" in self.a_log(),
                           lambda: f"the counter resumed on A\n{self.a_log()[-4000:]}")
        self.assertNotRegex(self.a_log(), harness.INCONSISTENT_RE)

        self.assert_action("demote", OCF_SUCCESS)
        self.assert_action("monitor", OCF_SUCCESS)
        self.assertEqual(harness.control(self.params["control"])["role"], "backup")
        self.assert_action("stop", OCF_SUCCESS)
        self.assert_action("monitor", OCF_NOT_RUNNING)

    def test_a_backup_that_took_over_by_itself_is_reported_running_until_promoted(self):
        c = Cluster(self)
        self.node_a(c, harness.free_port())
        self.assert_action("start", OCF_SUCCESS)
        primary = c.primary(harness.counter_guest(), self.a_port, name="peer")
        primary.wait_for(harness.IN_SYNC_RE)
        primary.kill9()
        harness.wait_until(lambda: "guest running from epoch" in self.a_log(),
                           lambda: f"A's takeover\n{self.a_log()[-4000:]}")
        self.assert_action("monitor", OCF_SUCCESS, OCF_RESKEY_CRM_meta_role="Unpromoted")
        self.assert_action("promote", OCF_SUCCESS)
        self.assert_action("monitor", OCF_RUNNING_PROMOTED, OCF_RESKEY_CRM_meta_role="Promoted")

    def test_monitor_reports_a_crashed_process_as_failed_not_stopped(self):
        c = Cluster(self)
        self.node_a(c, harness.free_port())
        self.assert_action("start", OCF_SUCCESS)
        with open(os.path.join(self.rsctmp, f"romulus-{self.instance}.pid")) as f:
            pid = int(f.read())
        os.kill(pid, 9)
        harness.wait_until(lambda: self.agent("monitor")[0] != OCF_SUCCESS, "the kill to be seen")
        self.assert_action("monitor", OCF_ERR_GENERIC)
        self.assert_action("stop", OCF_SUCCESS)
        self.assert_action("monitor", OCF_NOT_RUNNING)

    def test_validate_all_names_a_missing_config_file(self):
        c = Cluster(self)
        self.node_a(c, harness.free_port())
        self.params["backup_config"] = os.path.join(c.dir, "missing.conf")
        rc, out = self.agent("validate-all")
        self.assertEqual(rc, 6, out)  # OCF_ERR_CONFIGURED
        self.assertIn("missing.conf", out)


if __name__ == "__main__":
    unittest.main()
