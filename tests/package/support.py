"""Shared by the packaging tests (tests/package/test_*.py): paths, and a main()
that tells CTest when a whole file was skipped.

  SOURCE_DIR, DIST          the source tree and its dist/
  build_dir()               the build tree under test (ROMULUS_BUILD_DIR, else build/release)
  generated(name)           a file dist/generate.py wrote into that tree (man pages, completion)
  generate                  dist/generate.py as a module (parse_options, read_help, ...)
  harness                   tests/e2e/harness.py (Cluster, Pki, free_port, ...)
  main()                    unittest.main, exiting 77 (CTest's SKIP_RETURN_CODE here) when
                            every test of the file was skipped, so `ctest` says "Skipped"
                            and prints the reasons instead of "Passed"
"""

import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.path.dirname(os.path.dirname(HERE))
DIST = os.path.join(SOURCE_DIR, "dist")
SKIPPED = 77

sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "e2e"))
sys.path.insert(0, DIST)
import harness  # noqa: E402
import generate  # noqa: E402


def build_dir():
    return harness.build_dir()


def generated(name):
    return os.path.join(build_dir(), "dist", "generated", name)


def cmake_cache(name):
    """A value from the build tree's CMakeCache.txt, or None."""
    try:
        with open(os.path.join(build_dir(), "CMakeCache.txt")) as f:
            for line in f:
                key, _, value = line.rstrip("\n").partition("=")
                if key.split(":")[0] == name:
                    return value
    except OSError:
        pass
    return None


def main():
    program = unittest.main(exit=False, verbosity=2)
    result = program.result
    if not result.wasSuccessful():
        sys.exit(1)
    if result.testsRun and len(result.skipped) == result.testsRun:
        print("every test of this file was skipped: " + "; ".join(
            sorted({reason for _, reason in result.skipped})), flush=True)
        sys.exit(SKIPPED)
    sys.exit(0)
