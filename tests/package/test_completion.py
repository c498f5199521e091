"""The bash completion the build generated (dist/generate.py), driven as bash drives it.

Each case sources the completion in a fresh `bash --norc`, finds its function with
`complete -p romulus`, sets COMP_WORDS / COMP_CWORD / COMP_LINE / COMP_POINT as
bash does for a command line with the cursor at its end (words split at blanks and
at COMP_WORDBREAKS characters such as '='), calls the function and reads
COMPREPLY. Checked:

- commands, option prefixes, option values (choices from --help, file names,
  `--name=value`), the guest command after `--`, status/failover flags, and
  `set` names and values (with `--control PATH` anywhere);
- against the live binary: `romulus primary --` and `romulus backup --` offer
  exactly the options of their --help, and each option with choices in its help
  offers exactly those;
- against a running primary (a TLS pair on loopback): the names `romulus set`
  offers are exactly those the node lists for an unknown setting (plus `tls`),
  and the node accepts each name with each value the completion offers (or a
  sample value for names without a list).
"""

import os
import re
import shlex
import stat
import subprocess
import tempfile
import unittest

import support
from support import generate, harness

COMPLETION = support.generated("romulus")
BREAKS = "\"'><=;|&(:"


def bash_words(line):
    """COMP_WORDS for `line` as bash splits it: at blanks, and at each
    COMP_WORDBREAKS character (its own word). A trailing blank starts an empty word."""
    words = []
    for raw in line.split(" "):
        if raw == "":
            continue
        current = ""
        for ch in raw:
            if ch in BREAKS:
                if current:
                    words.append(current)
                words.append(ch)
                current = ""
            else:
                current += ch
        if current:
            words.append(current)
    if line.endswith(" "):
        words.append("")
    return words


def complete(line, path=None):
    """The sorted COMPREPLY of the completion for `line`, the cursor at its end."""
    words = bash_words(line)
    script = f"""
source {shlex.quote(COMPLETION)}
spec=$(complete -p romulus) || exit 3
[[ $spec == *" -F "* ]] || exit 4
fn=${{spec##* -F }}; fn=${{fn%% *}}
COMP_WORDS=({' '.join(shlex.quote(w) for w in words)})
COMP_CWORD={len(words) - 1}
COMP_LINE={shlex.quote(line)}
COMP_POINT=${{#COMP_LINE}}
COMP_TYPE=9 COMP_KEY=9
"$fn" romulus "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}" 2>/dev/null
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    env = dict(os.environ)
    if path:
        env["PATH"] = path + os.pathsep + env.get("PATH", "")
    p = subprocess.run(["bash", "--norc", "--noprofile", "-c", script], capture_output=True,
                       text=True, timeout=30, env=env)
    if p.returncode != 0:
        raise AssertionError(f"bash exited {p.returncode} completing {line!r}: {p.stderr}")
    return sorted(w for w in p.stdout.split("\n") if w)


def have_completion():
    return os.path.exists(COMPLETION)


NO_COMPLETION = (f"no generated completion at {COMPLETION} (python3 at build time; "
                 "cmake --build --target romulus-docs)")


@unittest.skipUnless(have_completion(), NO_COMPLETION)
class CompletionTest(unittest.TestCase):

    def test_complete_p_names_the_function_for_romulus(self):
        p = subprocess.run(["bash", "--norc", "-c", f"source {shlex.quote(COMPLETION)}; "
                            "complete -p romulus"], capture_output=True, text=True, timeout=30)
        self.assertEqual(p.stdout.strip(), "complete -F _romulus romulus", p.stderr)

    def test_commands(self):
        self.assertEqual(complete("romulus "),
                         sorted(["backup", "primary", "status", "set", "failover", "snapshot",
                                 "sqlite-export", "release-lease", "lease-guard", "--help"]))
        self.assertEqual(complete("romulus pr"), ["primary"])
        self.assertEqual(complete("romulus f"), ["failover"])

    def test_option_prefixes_per_role(self):
        self.assertEqual(complete("romulus primary --tls-"),
                         ["--tls-ca", "--tls-cert", "--tls-key", "--tls-peer-name"])
        self.assertEqual(complete("romulus backup --rep"), ["--reprotect"])
        self.assertEqual(complete("romulus primary --rep"), [])
        self.assertEqual(complete("romulus primary --interval 25ms --co"),
                         ["--codec", "--commit", "--config", "--control"])

    def test_option_values(self):
        self.assertEqual(complete("romulus primary --commit "), ["eager", "interval"])
        self.assertEqual(complete("romulus backup --codec x"), ["xbzrle"])
        self.assertEqual(complete("romulus primary --on-backup-loss "), ["continue", "stall"])
        # Bash replaces what follows the '=' (the word "=" is a COMP_WORDBREAKS word).
        self.assertEqual(complete("romulus primary --commit="), ["eager", "interval"])
        self.assertEqual(complete("romulus primary --tracker=uffd"),
                         ["uffd", "uffd-hybrid", "uffd-sync"])
        self.assertEqual(complete("romulus primary --interval "), [])

    def test_file_options_complete_file_names(self):
        with tempfile.TemporaryDirectory(prefix="romulus-compl-") as d:
            for name in ["ca.crt", "ca.key", "node.crt"]:
                open(os.path.join(d, name), "w").close()
            self.assertEqual(complete(f"romulus primary --tls-ca {d}/ca"),
                             [f"{d}/ca.crt", f"{d}/ca.key"])
            self.assertEqual(complete(f"romulus backup --config {d}/n"), [f"{d}/node.crt"])
            self.assertEqual(complete(f"romulus status --control {d}/node"), [f"{d}/node.crt"])

    def test_the_guest_command_after_the_double_dash(self):
        with tempfile.TemporaryDirectory(prefix="romulus-compl-") as d:
            guest = os.path.join(d, "romulus-guest-for-completion")
            with open(guest, "w") as f:
                f.write("#!/bin/sh\n")
            os.chmod(guest, stat.S_IRWXU)
            self.assertEqual(complete("romulus primary --memory 256M -- romulus-guest-for",
                                      path=d), ["romulus-guest-for-completion"])
            # After the guest command, no romulus option is offered.
            self.assertNotIn("--memory", complete("romulus backup -- guest --me"))

    def test_status_and_failover_flags(self):
        self.assertEqual(complete("romulus status --"), ["--control", "--help", "--json"])
        self.assertEqual(complete("romulus failover --"), ["--control", "--help"])

    def test_set_names_and_values(self):
        settings = generate.read_help(harness.binary("romulus")).settings
        names = sorted(st.name for st in settings)
        self.assertEqual(complete("romulus set "), names)
        self.assertEqual(complete("romulus set co"), ["codec", "commit"])
        self.assertEqual(complete("romulus set codec "), ["none", "runskip", "xbzrle"])
        self.assertEqual(complete("romulus set tls "), ["reload"])
        self.assertEqual(complete("romulus set --control /run/romulus/kv.sock on-backup-loss "),
                         ["continue", "stall"])
        self.assertEqual(complete("romulus set commit eager "), [])


@harness.require_binaries("romulus")
@unittest.skipUnless(have_completion(), NO_COMPLETION)
class CompletionMatchesTheBinaryTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.help = generate.read_help(harness.binary("romulus"))

    def test_each_role_offers_exactly_the_options_of_its_help(self):
        for role in ["primary", "backup"]:
            options = getattr(self.help, role)
            expected = {"--" + o.name for o in options} | {"--"}
            self.assertEqual(set(complete(f"romulus {role} --")), expected, role)
            self.assertGreater(len(options), 30)

    def test_each_option_with_choices_in_its_help_offers_exactly_those(self):
        with_choices = [o for o in self.help.primary + self.help.backup if o.choices()]
        self.assertGreaterEqual(len({o.name for o in with_choices}), 5)
        for o in with_choices:
            role = "primary" if o in self.help.primary else "backup"
            self.assertEqual(complete(f"romulus {role} --{o.name} "), sorted(o.choices()), o.name)


# A value each `romulus set` name without a list of values is tried with; a new
# setting the completion offers needs one here.
SAMPLE_VALUES = {"interval": ["20ms"], "min-gap": ["1ms"], "max-stopped-fraction": ["0.25"],
                 "cache": ["64M"]}


@harness.require_binaries("romulus", "counter")
@unittest.skipUnless(have_completion(), NO_COMPLETION)
@unittest.skipUnless(harness.have_openssl(), "openssl not installed (for `set tls reload`)")
class SetNamesAcceptedByARunningPrimaryTest(unittest.TestCase):

    def test_the_node_knows_each_name_and_value_the_completion_offers(self):
        c = harness.Cluster(self, tls=True)
        guest = harness.counter_guest(200)
        backup = c.backup(guest)
        primary = c.primary(guest, backup.listen_port)
        primary.wait_for(harness.IN_SYNC_RE)
        ctl = ["--control", primary.control_path]

        rc, out, err = harness.cli("set", "no-such-setting", "1", *ctl)
        self.assertNotEqual(rc, 0)
        m = re.search(r"unknown setting 'no-such-setting' \(([^)]*)\)", err)
        self.assertIsNotNone(m, err)
        node_names = {n.strip() for n in m.group(1).split(",")}
        offered = set(complete("romulus set "))
        # `tls` is answered by the process (replica/takeover.cc) before the primary
        # sees the request, so the primary's list does not name it.
        self.assertEqual(offered - {"tls"}, node_names)
        self.assertIn("tls", offered)

        samples = dict(SAMPLE_VALUES, backup=[f"127.0.0.1:{backup.listen_port}"])
        # `backup` last: it drops the backup and reconnects to it.
        for name in sorted(offered, key=lambda n: n == "backup"):
            values = complete(f"romulus set {name} ") or samples.get(name)
            self.assertTrue(values, f"no value to try `romulus set {name}` with: add a sample")
            for value in values:
                rc, out, err = harness.cli("set", name, value, *ctl)
                self.assertEqual(rc, 0, f"romulus set {name} {value}: {err}\n{primary.text()}")


if __name__ == "__main__":
    support.main()
