"""romulus(1) and romulus.conf(5), as the build generated them (dist/generate.py).

- the build's pages are what the binary's --help makes now (generated again into a
  temp dir and compared byte for byte: a page cannot be stale);
- romulus(1) names every command of `romulus --help` and every option of
  `romulus primary --help` and `romulus backup --help`, and no other option;
- romulus.conf(5) names every option a config file takes (all of them but help and
  config), and the real binary accepts each of them in a --config file for the
  role(s) the page lists it under, and refuses a name it does not know;
- `man --warnings` renders both pages without a groff warning (skipped without man).
"""

import filecmp
import os
import re
import shutil
import subprocess
import tempfile
import unittest

import support
from support import generate, harness

MAN1 = support.generated("romulus.1")
MAN5 = support.generated("romulus.conf.5")


def unroff(text):
    return text.replace("\\-", "-").replace("\\e", "\\").replace("\\&", "")


def tp_heads(page, section):
    """The .TP/.TQ heads (the line after each) of one .SH or .SS section, unroffed."""
    heads, lines, inside = [], page.splitlines(), False
    for i, line in enumerate(lines):
        if line.startswith((".SH", ".SS")):
            inside = line.split(" ", 1)[1].strip('"') == section
            continue
        if inside and line in (".TP", ".TQ") and i + 1 < len(lines):
            heads.append(unroff(lines[i + 1]))
    return heads


def names_in(heads, pattern):
    return {m.group(1) for h in heads for m in [re.search(pattern, h)] if m}


@harness.require_binaries("romulus")
@unittest.skipUnless(os.path.exists(MAN1) and os.path.exists(MAN5),
                     f"no generated man pages in {os.path.dirname(MAN1)} (python3 at build time; "
                     "cmake --build --target romulus-docs)")
class ManPagesTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.help = generate.read_help(harness.binary("romulus"))
        with open(MAN1) as f:
            cls.man1 = f.read()
        with open(MAN5) as f:
            cls.man5 = f.read()

    def option_names(self, role=None):
        roles = [role] if role else ["primary", "backup"]
        return {o.name for r in roles for o in getattr(self.help, r)}

    def test_the_built_pages_are_what_the_binary_generates_now(self):
        version = re.search(r'"romulus ([^"]+)"', self.man1).group(1)
        date = re.search(r'^\.TH ROMULUS 1 "([^"]+)"', self.man1, re.M).group(1)
        with tempfile.TemporaryDirectory(prefix="romulus-man-") as out:
            p = subprocess.run(["python3", os.path.join(support.DIST, "generate.py"),
                                "--romulus", harness.binary("romulus"), "--version", version,
                                "--date", date, "--out", out],
                               capture_output=True, text=True, timeout=120)
            self.assertEqual(p.returncode, 0, p.stderr)
            for name in ["romulus.1", "romulus.1.gz", "romulus.conf.5", "romulus.conf.5.gz",
                         "romulus"]:
                self.assertTrue(filecmp.cmp(os.path.join(out, name), support.generated(name),
                                            shallow=False),
                                f"{support.generated(name)} is stale: rebuild romulus-docs")

    def test_romulus_1_lists_every_command_and_exactly_the_options_of_help(self):
        commands = {c.name for c in self.help.commands}
        self.assertEqual(commands, {"primary", "backup", "status", "set", "failover", "snapshot",
                                    "sqlite-export", "release-lease", "lease-guard"})
        command_heads = tp_heads(self.man1, "COMMANDS")
        self.assertEqual(names_in(command_heads, r"^\\fBromulus ([\w-]+)"), commands)
        heads = (tp_heads(self.man1, "Both roles") + tp_heads(self.man1, "Primary only")
                 + tp_heads(self.man1, "Backup only"))
        self.assertEqual(names_in(heads, r"--([a-z0-9-]+)"), self.option_names())
        self.assertEqual(names_in(tp_heads(self.man1, "Primary only"), r"--([a-z0-9-]+)"),
                         self.option_names("primary") - self.option_names("backup"))
        self.assertEqual(names_in(tp_heads(self.man1, "Backup only"), r"--([a-z0-9-]+)"),
                         self.option_names("backup") - self.option_names("primary"))
        for o in self.help.primary + self.help.backup:
            self.assertIn(generate.roff(o.help), self.man1, o.name)

    def test_romulus_1_lists_each_run_time_setting(self):
        heads = tp_heads(self.man1, "SETTINGS")
        self.assertEqual(names_in(heads, r"^\\fBset ([a-z-]+)"),
                         {st.name for st in self.help.settings})

    def test_romulus_conf_5_lists_every_option_a_config_file_takes(self):
        heads = (tp_heads(self.man5, "OPTIONS OF BOTH ROLES") + tp_heads(self.man5, "PRIMARY ONLY")
                 + tp_heads(self.man5, "BACKUP ONLY"))
        listed = names_in(heads, r"^\\fB([a-z0-9-]+)\\fR")
        self.assertEqual(listed, self.option_names() - set(generate.NOT_IN_CONFIG))

    def config_rc(self, role, lines):
        with tempfile.NamedTemporaryFile("w", suffix=".conf", prefix="romulus-") as f:
            f.write("\n".join(lines) + "\n")
            f.flush()
            rc, out, err = harness.cli(role, "--config", f.name, "--help")
            return rc, err

    def test_the_binary_accepts_each_option_romulus_conf_5_lists_for_a_role(self):
        sections = {"primary": ["OPTIONS OF BOTH ROLES", "PRIMARY ONLY"],
                    "backup": ["OPTIONS OF BOTH ROLES", "BACKUP ONLY"]}
        for role, titles in sections.items():
            heads = [h for t in titles for h in tp_heads(self.man5, t)]
            lines = []
            for h in heads:
                m = re.match(r"^\\fB([a-z0-9-]+)\\fR = \\f[BI]([^\\]+)", h)
                self.assertIsNotNone(m, h)
                name, value = m.groups()
                # Parsing stores values (numbers must be numbers); --help stops before
                # they are checked further, so "1" serves every option with a value.
                lines.append(f"{name} = {'true' if value == 'true' else '1'}")
            self.assertGreater(len(lines), 30)
            rc, err = self.config_rc(role, lines)
            self.assertEqual(rc, 0, f"{role}: {err}\n" + "\n".join(lines))
            rc, err = self.config_rc(role, ["no-such-option = 1"])
            self.assertEqual(rc, 2, err)
            self.assertIn("no-such-option", err)

    @unittest.skipUnless(shutil.which("man"), "man not installed (Debian package man-db)")
    def test_man_renders_both_pages_without_a_warning(self):
        for page in [MAN1, MAN5]:
            p = subprocess.run(["man", "--warnings", "-E", "UTF-8", "-l", page],
                               capture_output=True, text=True, timeout=60,
                               env=dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8",
                                        MAN_DISABLE_SECCOMP="1"))
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertEqual(p.stderr.strip(), "", page)
            self.assertIn("romulus", p.stdout)


if __name__ == "__main__":
    support.main()
