#!/usr/bin/env python3
"""Generates romulus(1), romulus.conf(5) and the bash completion from the binary's own --help.

The option lists in all three come from running the built `romulus`:

  romulus --help            the usage lines: the commands and their flags (SYNOPSIS)
  romulus primary --help    every option of a primary (Boost.Program_options' table)
  romulus backup --help     every option of a backup
  romulus set --help        the settings `romulus set` changes at run time

so a man page or a completion cannot name an option the binary lacks, or miss
one it has (tests/package checks the installed files against --help again).
What --help does not say is written here once: the prose of the man pages
(dist/man/*.in). The run-time settings come from `romulus set --help` (checked
against a running primary by tests/package/test_completion.py).

  dist/generate.py --romulus build/release/cli/romulus --version 0.1.0 \
      --date 2026-12-05 --out DIR

writes DIR/romulus.1, DIR/romulus.conf.5, their .gz (gzip -9n: no name, no
time stamp, as Debian wants them) and DIR/romulus (the completion). Imported
by the tests for parse_options() and read_help(). Standard library only.
"""

import argparse
import gzip
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))

# `romulus set NAME VALUE`: "  interval DURATION    the checkpoint interval (1ms to 60s)",
# one line each in `romulus set --help` (from the table kRunTimeSettings,
# checkpoint/run_time_settings.cc).
SETTING_RE = re.compile(r"^  (?P<name>[a-z][a-z0-9-]*) (?P<value>\S+)\s+(?P<what>\S.*)$")


@dataclass
class Setting:
    name: str
    value: str      # a placeholder (DURATION, SIZE, ADDR:PORT) or the choices a|b|c
    what: str       # what it changes, with its range

    def fixed_choices(self):
        """The values it takes from a list ("eager|interval", "reload"), or []."""
        return self.value.split("|") if self.value[:1].islower() else []


def parse_settings(text):
    """The settings of `romulus set --help`, in order. Raises ValueError if none."""
    out, in_table = [], False
    for line in text.splitlines():
        if line.startswith("settings:"):
            in_table = True
        elif in_table and line.strip():
            m = SETTING_RE.match(line)
            if not m:
                raise ValueError(f"a line of `romulus set --help` this parser does not know: {line!r}")
            out.append(Setting(m.group("name"), m.group("value"), m.group("what")))
    if not out:
        raise ValueError("no setting found in `romulus set --help` (has its format changed?)")
    return out


# Options whose value is a file name (the completion offers files).
FILE_OPTION_RE = re.compile(r"\(PEM\)|\bFILE\b|socket path|private key")
# A choice list in an option's help: "eager|interval", "auto|uffd|uffd-sync|compare".
CHOICES_RE = re.compile(r"(?<![\w:/.-])([a-z][a-z0-9-]*(?:\|[a-z][a-z0-9-]*)+)(?![\w/|])")


@dataclass
class Option:
    name: str                 # long name, without the dashes
    takes_value: bool
    help: str
    short: str = ""           # one letter, or ""

    def choices(self):
        m = CHOICES_RE.search(self.help)
        return m.group(1).split("|") if m else []

    def takes_file(self):
        return self.takes_value and bool(FILE_OPTION_RE.search(self.help))


@dataclass
class Command:
    name: str
    usage: list = field(default_factory=list)   # its usage lines, without "romulus "
    flags: list = field(default_factory=list)   # --flags the usage lines name


# "  -h [ --help ]   text", "  --interval arg   text", "  --x arg (=5)  text",
# "  --insecure   text": Boost.Program_options' options_description layout.
OPTION_RE = re.compile(
    r"^  (?:-(?P<short>\w) \[ )?--(?P<name>[A-Za-z0-9][A-Za-z0-9-]*)(?: \])?"
    r"(?P<arg> \[?=?arg\b[^ ]*(?: \(=[^)]*\))?)?(?:\s+(?P<help>\S.*))?$")


def parse_options(text):
    """The options of one `romulus ROLE --help` text, in order (from every group).

    Continuation lines (indented, not starting with '-') extend the previous
    option's help. Raises ValueError if no option is found (the format changed)."""
    options = []
    in_table = False
    in_group = 0          # options read under the current caption
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line.startswith(" "):
            # A caption ("romulus primary options:") may open a table.
            in_table = line.rstrip().endswith(":") and not line.startswith("usage")
            in_group = 0
            continue
        if not in_table:
            continue
        m = OPTION_RE.match(line)
        if m:
            options.append(Option(m.group("name"), bool(m.group("arg")),
                                  (m.group("help") or "").strip(), m.group("short") or ""))
            in_group += 1
        elif in_group and line.startswith("    ") and not line.lstrip().startswith("-"):
            options[-1].help = (options[-1].help + " " + line.strip()).strip()
        elif in_group:
            raise ValueError(f"an option line of --help this parser does not know: {line!r}")
        else:
            in_table = False  # prose that ends with ':' (an example follows), not a table
    if not options:
        raise ValueError("no option found in --help (has its format changed?)")
    return options


def parse_usage(text):
    """The commands of `romulus --help`'s usage block, in order: Command per name."""
    commands = {}
    for line in text.splitlines():
        if not line.strip():
            if commands:
                break       # the usage block ends at its first blank line
            continue
        m = re.match(r"^\s+romulus\s+([a-z][a-z-]*[a-z])\b(.*)$", line)
        if not m:
            continue
        cmd = commands.setdefault(m.group(1), Command(m.group(1)))
        cmd.usage.append((m.group(1) + m.group(2)).rstrip())
        for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", m.group(2)):
            if flag not in cmd.flags:
                cmd.flags.append(flag)
    if not commands:
        raise ValueError("no 'romulus COMMAND' usage line in romulus --help")
    return list(commands.values())


def run_help(romulus, *args):
    p = subprocess.run([romulus, *args, "--help"], capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise RuntimeError(f"{romulus} {' '.join(args)} --help exited {p.returncode}: {p.stderr}")
    return p.stdout


@dataclass
class Help:
    commands: list       # Command
    primary: list        # Option
    backup: list         # Option
    settings: list       # Setting

    def role_options(self):
        """(name, takes_value, {role: help}) over both roles, in first-seen order."""
        merged = {}
        for role, opts in (("primary", self.primary), ("backup", self.backup)):
            for o in opts:
                entry = merged.setdefault(o.name, [o.name, o.takes_value, {}, o])
                entry[2][role] = o.help
        return [(n, v, h, o) for n, v, h, o in merged.values()]

    def option(self, name):
        for o in self.primary + self.backup:
            if o.name == name:
                return o
        return None

    def setting_choices(self, name):
        """The values `romulus set NAME` takes from a fixed list, or []."""
        for st in self.settings:
            if st.name == name:
                if st.fixed_choices():
                    return st.fixed_choices()
                o = self.option(name)
                return o.choices() if o else []
        return []


def role_table(role_help, top_help):
    """A role's --help without the usage text it repeats from `romulus --help` (whose
    example lines would look like options): Boost.Program_options' tables only."""
    if top_help.strip() and role_help.startswith(top_help):
        return role_help[len(top_help):]
    return role_help


def read_help(romulus):
    top = run_help(romulus)
    return Help(parse_usage(top), parse_options(role_table(run_help(romulus, "primary"), top)),
                parse_options(role_table(run_help(romulus, "backup"), top)),
                parse_settings(run_help(romulus, "set")))


# Options that make no sense in a config file (accepted by its parser all the same).
NOT_IN_CONFIG = ("help", "config")


# ---------------------------------------------------------------------------
# roff


def roff(text):
    """Plain text as roff: backslashes, hyphens as minus signs, no leading dot."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    if text.startswith((".", "'")):
        text = "\\&" + text
    return text


def roff_option_list(entries, prefix="\\-\\-", sep=" ", switch_value=None):
    """.TP paragraphs: entries of (name, takes_value, {role: help}, Option).

    switch_value: what an option without a value is written with (a config file's
    "true"), or None to write the name alone (a command line's switch)."""
    out = []
    for name, takes_value, helps, opt in entries:
        head = f"\\fB{prefix}{roff(name)}\\fR"
        if opt.short and prefix:
            head = f"\\fB\\-{opt.short}\\fR, " + head
        if takes_value:
            head += f"{sep}\\fI{value_name(name, helps)}\\fR"
        elif switch_value:
            head += f"{sep}\\fB{switch_value}\\fR"
        out.append(".TP")
        out.append(head)
        texts = list(dict.fromkeys(helps.values()))
        if len(texts) == 1:
            out.append(roff(texts[0]))
        else:
            for role in ("primary", "backup"):
                if role in helps:
                    out.append(f"({role}) {roff(helps[role])}")
                    out.append(".br")
            out.pop()
    return "\n".join(out)


def value_name(name, helps):
    """A placeholder for an option's value, read from what its help says."""
    text = " ".join(helps.values())
    choices = CHOICES_RE.search(text)
    if text.startswith("ADDR:PORT"):
        return "ADDR:PORT"
    if choices:
        return roff(choices.group(1))
    rules = [
        (r"socket path", "PATH"), (FILE_OPTION_RE.pattern, "FILE"), (r"etcd://", "URL"),
        (r"default \d+(\.\d+)?(us|ms|s|m)\b", "DURATION"), (r"default \d+[KMGT]\b|size", "SIZE"),
        (r"fraction", "FRACTION"), (r"threads", "N"), (r"command", "COMMAND"), (r"name", "NAME"),
    ]
    for regex, placeholder in rules:
        if re.search(regex, name + " " + text):
            return placeholder
    return "VALUE"


def man_commands(h):
    out = []
    for c in h.commands:
        for i, usage in enumerate(c.usage):
            args = " ".join(usage[len(c.name):].split())
            out.append(".TP" if i == 0 else ".TQ")
            out.append(f"\\fBromulus {c.name}\\fR {roff(args)}")
        out.append(COMMAND_TEXT.get(c.name, ""))
    return "\n".join(out)


COMMAND_TEXT = {
    "backup": "Start a backup: listen for a primary's checkpoint stream, keep the last "
              "committed image of its guest, and take over (start the guest from that "
              "image) when the primary is lost. Takes every option below; \\-\\-listen "
              "is required. The guest command follows \\-\\- (or \\fBguest =\\fR in the "
              "configuration file) and must be the primary's.",
    "primary": "Start the guest and protect it: checkpoint its arena to the backup many "
               "times a second and hold its output until the backup has acknowledged "
               "the checkpoint that produced it. Takes every option below; \\-\\-backup is "
               "required.",
    "status": "Show each node on this machine (or the one at \\-\\-control): role, state, "
              "epochs, pauses, compression, output held, TLS. \\-\\-json prints the full "
              "status object.",
    "set": "Change a running node's setting (see \\fBSETTINGS\\fR); \\-\\-control "
           "names the node.",
    "failover": "On a backup holding a consistent image: take over now.",
}


def man_settings(h):
    out = []
    for st in h.settings:
        choices = h.setting_choices(st.name)
        value = "|".join(choices) if choices else st.value
        out.append(".TP")
        out.append(f"\\fBset {roff(st.name)}\\fR \\fI{roff(value)}\\fR")
        out.append(roff(st.what[:1].upper() + st.what[1:]) + ".")
    return "\n".join(out)


def fill(template_path, values):
    with open(template_path) as f:
        text = f.read()
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    left = re.findall(r"@[A-Z_]+@", text)
    if left:
        raise ValueError(f"{template_path}: unfilled {left}")
    return text


def split_by_role(h):
    both, primary_only, backup_only = [], [], []
    for entry in h.role_options():
        roles = entry[2].keys()
        (both if len(roles) == 2 else primary_only if "primary" in roles else backup_only).append(
            entry)
    return both, primary_only, backup_only


def man1(h, version, date):
    both, primary_only, backup_only = split_by_role(h)
    return fill(os.path.join(HERE, "man", "romulus.1.in"), {
        "VERSION": version, "DATE": date,
        "COMMANDS": man_commands(h),
        "OPTIONS_BOTH": roff_option_list(both),
        "OPTIONS_PRIMARY": roff_option_list(primary_only),
        "OPTIONS_BACKUP": roff_option_list(backup_only),
        "SETTINGS": man_settings(h),
    })


def man5(h, version, date):
    entries = [e for e in h.role_options() if e[0] not in NOT_IN_CONFIG]
    both = [e for e in entries if len(e[2]) == 2]
    primary_only = [e for e in entries if list(e[2]) == ["primary"]]
    backup_only = [e for e in entries if list(e[2]) == ["backup"]]
    switches = ", ".join(f"\\fB{roff(e[0])}\\fR" for e in entries if not e[1])
    examples = []
    for role in ("primary", "backup"):
        with open(os.path.join(HERE, "examples", f"{role}.conf.example")) as f:
            body = "\n".join(roff(line) for line in f.read().rstrip("\n").splitlines())
        examples.append(f".SS \"A {role}\"\n.nf\n.RS 4\n{body}\n.RE\n.fi")
    return fill(os.path.join(HERE, "man", "romulus.conf.5.in"), {
        "VERSION": version, "DATE": date,
        "SWITCHES": switches,
        "OPTIONS_BOTH": roff_option_list(both, prefix="", sep=" = ", switch_value="true"),
        "OPTIONS_PRIMARY": roff_option_list(primary_only, prefix="", sep=" = ",
                                            switch_value="true"),
        "OPTIONS_BACKUP": roff_option_list(backup_only, prefix="", sep=" = ",
                                           switch_value="true"),
        "EXAMPLES": "\n".join(examples),
    })


# ---------------------------------------------------------------------------
# bash completion


def completion(h):
    def words(opts):
        out = []
        for o in opts:
            out.append("--" + o.name)
            if o.short:
                out.append("-" + o.short)
        return " ".join(out)

    def case_arms(pairs, indent):
        return "\n".join(f"{' ' * indent}{pattern}) {action} ;;" for pattern, action in pairs)

    value_arms = []
    seen = set()
    for o in h.primary + h.backup:
        if o.name in seen or not o.takes_value:
            continue
        seen.add(o.name)
        if o.choices():
            value_arms.append((f"--{o.name}", f"words='{' '.join(o.choices())}'"))
        elif o.takes_file():
            value_arms.append((f"--{o.name}", "files=1"))
        else:
            value_arms.append((f"--{o.name}", "words=''"))
    setting_arms = []
    for st in h.settings:
        setting_arms.append((st.name, f"values='{' '.join(h.setting_choices(st.name))}'"))
    commands = [c.name for c in h.commands]
    flags = {c.name: " ".join(c.flags) for c in h.commands}
    return fill(os.path.join(HERE, "bash-completion", "romulus.in"), {
        "COMMANDS": " ".join(commands),
        "PRIMARY_OPTIONS": words(h.primary),
        "BACKUP_OPTIONS": words(h.backup),
        "VALUE_ARMS": case_arms(value_arms, 8),
        "TAKES_VALUE": " ".join(sorted({"--" + o.name for o in h.primary + h.backup
                                        if o.takes_value})),
        "STATUS_FLAGS": flags.get("status", ""),
        "FAILOVER_FLAGS": flags.get("failover", ""),
        "SETTING_NAMES": " ".join(st.name for st in h.settings),
        "SETTING_ARMS": case_arms(setting_arms, 12),
    })


def write(path, text, gz=False):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    if gz:
        with open(path + ".gz.tmp", "wb") as raw:
            # No file name and mtime 0 in the header: the same bytes on every build.
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9,
                               mtime=0) as z:
                z.write(text.encode())
        os.replace(path + ".gz.tmp", path + ".gz")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--romulus", required=True, help="the built romulus binary")
    ap.add_argument("--version", required=True)
    ap.add_argument("--date", required=True, help="the man pages' date (YYYY-MM-DD)")
    ap.add_argument("--out", required=True, help="output directory")
    args = ap.parse_args()
    h = read_help(args.romulus)
    os.makedirs(args.out, exist_ok=True)
    write(os.path.join(args.out, "romulus.1"), man1(h, args.version, args.date), gz=True)
    write(os.path.join(args.out, "romulus.conf.5"), man5(h, args.version, args.date), gz=True)
    write(os.path.join(args.out, "romulus"), completion(h))
    return 0


if __name__ == "__main__":
    sys.exit(main())
