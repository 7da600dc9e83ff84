"""Runs the deployment suite: tests/deploy/runner.py BINARY [FILTER].

Loads tests/deploy/test_*.py and scale.py, runs each test and prints
`ok NAME`, `skip NAME: why` (a tool this machine lacks) or `FAIL NAME: why`
with the logs of the processes it started, then, last, exactly
`N passed, N failed, N skipped`. FILTER runs the test of that name, or every
test whose name contains it.
"""

import glob
import importlib
import os
import shutil
import sys
import tempfile
import time
import traceback

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import deploylib  # noqa: E402
from deploylib import Proc, Skip, TestFailure  # noqa: E402


def load_tests():
    names = [os.path.splitext(os.path.basename(p))[0]
             for p in sorted(glob.glob(os.path.join(HERE, "test_*.py")))]
    for name in names + ["scale"]:
        importlib.import_module(name)
    return deploylib.TESTS


def main(argv):
    if len(argv) not in (2, 3):
        print("usage: %s BINARY [TEST-NAME-OR-SUBSTRING]" % argv[0], file=sys.stderr)
        return 2
    deploylib.BINARY = os.path.abspath(argv[1])
    if not os.access(deploylib.BINARY, os.X_OK):
        print("%s: not an executable" % argv[1], file=sys.stderr)
        return 2
    deploylib.WORKDIR = tempfile.mkdtemp(prefix="predictd-deploy-")
    os.chmod(deploylib.WORKDIR, 0o755)  # nginx's workers (nobody) read below it
    tests = load_tests()
    if len(argv) == 3:
        exact = [t for t in tests if t[0] == argv[2]]
        tests = exact or [t for t in tests if argv[2] in t[0]]
    passed = failed = skipped = 0
    print("YAML read with %s" % deploylib.YAML_READER, flush=True)
    try:
        for name, fn in tests:
            first = Proc._count
            t0 = time.monotonic()
            error = None
            try:
                fn()
            except Skip as e:
                skipped += 1
                print("skip %s: %s" % (name, e), flush=True)
                continue
            except TestFailure as e:
                error = str(e)
            except Exception as e:  # a bug in the test, or an unexpected socket error
                tb = traceback.format_exc().rstrip().splitlines()
                error = "%s: %s\n%s" % (type(e).__name__, e,
                                         "\n".join("    " + l for l in tb[-10:]))
            finally:
                deploylib.kill_all()
            if error is None:
                passed += 1
                print("ok %s (%.1fs)" % (name, time.monotonic() - t0), flush=True)
            else:
                failed += 1
                print("FAIL %s: %s" % (name, error), flush=True)
                logs = sorted(glob.glob(os.path.join(deploylib.WORKDIR, "*.log")))
                for path in logs:
                    n = int(os.path.basename(path).split("-", 1)[0])
                    if n > first:
                        with open(path, "rb") as f:
                            lines = f.read().decode("utf-8", "replace").splitlines()
                        print("  log %s:" % path)
                        print("\n".join("    | " + l for l in lines[-25:]))
                sys.stdout.flush()
    finally:
        deploylib.kill_all()
    if failed:
        print("logs kept in %s" % deploylib.WORKDIR)
    else:
        shutil.rmtree(deploylib.WORKDIR, ignore_errors=True)
    print("%d passed, %d failed, %d skipped" % (passed, failed, skipped), flush=True)
    return 1 if failed or not tests else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
