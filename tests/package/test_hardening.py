"""What the package ships is hardened as Debian hardens its own packages.

The spec (CMakeLists.txt, ROMULUS_HARDEN; docs/operations.md, "The Debian
package"): in a build that is neither a sanitizer build nor built with
ROMULUS_HARDEN=OFF, every ELF file the package installs (romulus, the example
programs and the two preload libraries) is linked with full RELRO (a
GNU_RELRO segment and BIND_NOW), calls the stack protector's failure handler,
and calls fortified (_chk) variants of libc functions (_FORTIFY_SOURCE). Read
with readelf from binutils, as lintian's hardening checks read them.
"""

import os
import re
import shutil
import subprocess
import unittest

import support

# The ELF files dist/CMakeLists.txt installs, by their place in the build tree.
SHIPPED = ["cli/romulus", "examples/kvstore/romulus-kvstore", "examples/kvload/romulus-kvload",
           "examples/counter/romulus-counter", "guest/sqlite/libromulus_sqlite_preload.so",
           "guest/qemu/libromulus_qemu_preload.so"]


def readelf(*args):
    p = subprocess.run(["readelf", "--wide", *args], capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise AssertionError(f"readelf {' '.join(args)} failed: {p.stderr}")
    return p.stdout


@unittest.skipUnless(shutil.which("readelf"), "readelf not found (binutils)")
class HardeningTest(unittest.TestCase):

    def setUp(self):
        if support.cmake_cache("ROMULUS_SANITIZE") == "ON":
            self.skipTest("a sanitizer build is not what the package ships")
        if support.cmake_cache("ROMULUS_HARDEN") == "OFF":
            self.skipTest("built with ROMULUS_HARDEN=OFF")
        if (support.cmake_cache("CMAKE_BUILD_TYPE") or "").lower() == "debug":
            self.skipTest("a Debug build goes without _FORTIFY_SOURCE")

    def files(self):
        found = [os.path.join(support.build_dir(), f) for f in SHIPPED]
        found = [f for f in found if os.path.exists(f)]
        if not found:
            self.skipTest(f"nothing of the package is built in {support.build_dir()}")
        return found

    def test_every_shipped_file_has_full_relro(self):
        for path in self.files():
            with self.subTest(path=path):
                self.assertRegex(readelf("--program-headers", path), r"\bGNU_RELRO\b",
                                 f"{path}: no RELRO segment")
                dynamic = readelf("--dynamic", path)
                self.assertTrue(re.search(r"\(FLAGS\)\s.*\bBIND_NOW\b", dynamic) or
                                re.search(r"\(FLAGS_1\)\s.*\bNow\b", dynamic),
                                f"{path}: not linked with -z now (lazy binding):\n{dynamic}")

    def test_every_shipped_file_uses_the_stack_protector_and_fortified_functions(self):
        for path in self.files():
            with self.subTest(path=path):
                symbols = readelf("--dyn-syms", path)
                self.assertIn("__stack_chk_fail", symbols, f"{path}: no stack protector")
                fortified = sorted(set(re.findall(r"\b(__\w+_chk)\b", symbols)) -
                                   {"__stack_chk_fail"})
                self.assertTrue(fortified, f"{path}: no fortified libc function (_FORTIFY_SOURCE)")


if __name__ == "__main__":
    support.main()
