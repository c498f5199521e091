"""scripts/demo with binaries already built: it says where it left its logs, and
--plot draws the failover's timeline from its own kill (kill, stream end seen,
takeover, guest running, first reply to a probe client) into a PNG next to them.

(scripts/test runs the plain `scripts/demo --short` in a fresh clone; this test
covers what the demo leaves behind.) --plot needs matplotlib, which the demo sets
up itself through bench/plot_setup (root, or sudo); skipped, saying why, when it
cannot.
"""
import csv
import os
import re
import shutil
import subprocess
import unittest

import harness

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def can_set_up_matplotlib():
    pydeps = os.path.join(harness.build_dir(), "pydeps", "usr", "lib", "python3", "dist-packages")
    env = dict(os.environ, PYTHONPATH=pydeps)
    if subprocess.run(["/usr/bin/python3", "-c", "import matplotlib"], env=env,
                      capture_output=True).returncode == 0:
        return True
    return os.geteuid() == 0 or shutil.which("sudo") is not None


@harness.require_binaries("romulus", "kvstore", "kvload")
class DemoTest(unittest.TestCase):

    @unittest.skipUnless(can_set_up_matplotlib(),
                         "matplotlib is missing and cannot be installed (not root, no sudo)")
    def test_plot_leaves_the_logs_and_a_timeline_of_its_own_failover(self):
        p = subprocess.run([os.path.join(ROOT, "scripts", "demo"), "--short", "--no-build",
                            "--build-dir", harness.build_dir(), "--plot"],
                           capture_output=True, text=True, timeout=600)
        out = p.stdout + p.stderr
        self.assertEqual(p.returncode, 0, out)
        self.assertIn("acknowledged writes LOST: 0", out)
        logs = re.search(r"demo: logs in (\S+) \(", out)
        self.assertIsNotNone(logs, out)
        self.addCleanup(shutil.rmtree, logs.group(1), True)
        for f in ["backup.log", "primary.log", "kvload.json"]:
            self.assertTrue(os.path.getsize(os.path.join(logs.group(1), f)) > 0, f)
        png = re.search(r"plot: (\S+\.png)", out)
        self.assertIsNotNone(png, out)
        with open(png.group(1), "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
        with open(os.path.join(logs.group(1), "timeline.csv")) as f:
            (row,) = list(csv.DictReader(f))
        # Each moment after the one before it, all after the kill. The backup's log
        # stamps are whole milliseconds (truncated), so an end of stream seen within
        # the kill's millisecond reads up to 1 ms before it.
        moments = [float(row[k]) for k in ("detected_ms", "takeover_ms", "running_ms",
                                           "reply_ms")]
        self.assertGreater(moments[0], -1.0, row)
        self.assertEqual(moments, sorted(moments), row)


if __name__ == "__main__":
    unittest.main()
