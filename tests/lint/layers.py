#!/usr/bin/env python3
"""The include graph has no arrow up the layers, and the tree follows its naming rules.

docs/design.md ("Layers") and ../shared/ARCHITECTURE.md draw the layers; this
check reads every #include "dir/file.h" of the tree and fails, naming the file
and line, on an include a layer may not make:

  common/      nothing but common/ (the bottom layer)
  protocol/    common/
  storage/     protocol/, common/
  guest/       common/status.h only (the SDK a guest links: romulus_status alone)
  witness/     common/
  vm/          common/
  checkpoint/  storage/, protocol/, guest/, common/, vm/
  replica/     storage/, protocol/, common/, vm/; takeover and its parts (TAKEOVER_PARTS) also
               checkpoint/ and witness/
  cli/         every layer
  examples/    guest/ and examples/ (a guest sees the SDK only)
  nothing outside tests/ and bench/ includes tests/; nothing but cli/ and tests/ includes cli/

Naming rules (.clang-format's header and STYLE.md): file names are snake_case,
every header starts its code with `#pragma once` (the C header a guest may
include, guest/romulus_guest.h, with include guards).

  tests/lint/layers.py [SOURCE_DIR]      exit 0 when clean, 1 with one line per finding
"""

import os
import re
import sys

ALLOWED = {
    "common": {"common"},
    "protocol": {"common", "protocol"},
    "guest": {"guest", "common/status.h"},
    "storage": {"storage", "protocol", "common"},
    "witness": {"witness", "common"},
    "vm": {"vm", "common"},
    "checkpoint": {"checkpoint", "storage", "protocol", "guest", "common", "vm"},
    "replica": {"replica", "storage", "protocol", "common", "vm"},
    "examples": {"examples", "guest", "common/status.h"},
}
# replica/ files that run the roles over the witness and the primary.
TAKEOVER_PARTS = {"takeover", "witness_link", "link_security", "background_measurements",
                  "node_metrics", "local_log"}
LAYERS = ("common", "protocol", "storage", "guest", "witness", "vm", "checkpoint", "replica",
          "cli",
          "examples", "bench", "tests")
INCLUDE_RE = re.compile(r'^\s*#\s*include\s+"([a-z_]+)/([^"]+)"')
NAME_RE = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)*$")


def allowed(layer, stem, target_dir, target):
    if layer in ("cli", "tests"):
        return True
    if layer == "bench":
        return target_dir != "cli"
    if target_dir == "tests" or target_dir == "cli":
        return False
    rules = set(ALLOWED[layer])
    if layer == "replica" and stem in TAKEOVER_PARTS:
        rules |= {"checkpoint", "witness"}
    return target_dir in rules or f"{target_dir}/{target}" in rules


def main():
    root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else
                           os.path.join(os.path.dirname(__file__), "..", ".."))
    findings, files = [], 0
    for layer in LAYERS:
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, layer)):
            dirnames[:] = [d for d in dirnames if d not in ("corpus", "__pycache__")]
            for name in sorted(filenames):
                if not name.endswith((".h", ".cc")):
                    continue
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, root)
                files += 1
                if not NAME_RE.match(name):
                    findings.append(f"{rel}: file name is not snake_case")
                stem = name.rsplit(".", 1)[0]
                with open(path, encoding="utf-8", errors="replace") as f:
                    lines = f.read().splitlines()
                if name.endswith(".h"):
                    code = [l for l in lines if l.strip() and not l.lstrip().startswith(("//", "/*", "*"))]
                    guard = len(code) > 1 and code[0].startswith("#ifndef") and code[1].startswith(
                        "#define")  # a C header (guest/romulus_guest.h): include guards
                    if not code or (code[0].strip() != "#pragma once" and not guard):
                        findings.append(f"{rel}: a header's first line of code must be "
                                        f"#pragma once")
                for n, line in enumerate(lines, 1):
                    m = INCLUDE_RE.match(line)
                    if not m or m.group(1) not in LAYERS:
                        continue
                    if not allowed(layer, stem, m.group(1), m.group(2)):
                        findings.append(f"{rel}:{n}: {layer}/ may not include "
                                        f"\"{m.group(1)}/{m.group(2)}\" (docs/design.md, Layers)")
    for f in findings:
        print(f)
    print(f"layers: {files} files, {len(findings)} finding(s)")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
