"""Runs the HTTP suite: tests/http/runner.py BINARY [FILTER].

Loads every tests/http/test_*.py, runs their tests grouped by the daemon
configuration they share, and prints one line per test (`ok name` or
`FAIL name: reason`, then the relevant daemon's stderr) and, last, exactly
`N passed, N failed`. Each shared daemon's shutdown (SIGTERM, exit 0, no
sanitizer report) is a test of its own, `shutdown[config]`.

FILTER runs only the test of that name, or if none has it, every test whose
name contains it. PREDICTD_TEST_TIMES=1 shows how long each test took;
PREDICTD_TEST_SLOW=F stretches every deadline F times (4 by default for an
ASan build, found by its __asan_init symbol; 20 under a wrapper).

PREDICTD_TEST_WRAPPER="valgrind ..." runs every daemon under that command;
harness.py checks valgrind's log of each run.
"""

import glob
import importlib
import os
import shutil
import signal
import sys
import time
import traceback

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import harness  # noqa: E402
from harness import Daemon, TestFailure  # noqa: E402

# PREDICTD_TEST_TIMES=1 adds each passing test's duration to its line.
TIMES = bool(os.environ.get("PREDICTD_TEST_TIMES"))


class Runner:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def report(self, name, error, daemons, seconds):
        if error is None:
            self.passed += 1
            print("ok %s%s" % (name, " (%.2fs)" % seconds if TIMES else ""), flush=True)
            return
        self.failed += 1
        first, *rest = error.splitlines() or [""]
        print("FAIL %s: %s" % (name, first))
        for line in rest:
            print("    " + line)
        for d in daemons:
            print("  stderr of %s (%s):" % (d.label, d.log_path))
            print(d.stderr_tail())
        sys.stdout.flush()

    def run_one(self, name, fn, args, shared=None):
        """Runs fn(*args) and reports it. It fails on an assertion or an
        exception, and also when a daemon it used died or wrote a sanitizer
        report meanwhile; daemons it started itself are killed after it."""
        first = len(Daemon.started)
        t0 = time.monotonic()
        error = None
        try:
            fn(*args)
        except TestFailure as e:
            error = str(e)
        except Exception as e:  # a bug in the test or an unexpected socket error
            tb = traceback.format_exc().rstrip().splitlines()
            error = "%s: %s\n%s" % (type(e).__name__, e, "\n".join(tb[-8:]))
        own = Daemon.started[first:]
        for d in own:  # a self-managed test must not leave a daemon behind
            if d.alive():
                d.kill()
        daemons = ([shared] if shared else []) + own
        if error is None:
            for d in daemons:
                if d is shared and not d.alive():
                    error = "the daemon died (exit %s)" % d.proc.poll()
                    break
                try:
                    d.check_clean()
                except TestFailure as e:
                    error = str(e)
                    break
        self.report(name, error, daemons, time.monotonic() - t0)

    def run_group(self, config, tests):
        if config is None:
            for name, _, fn in tests:
                self.run_one(name, fn, ())
            return
        daemon = None
        for name, _, fn in tests:
            if daemon is None or not daemon.alive():
                if daemon is not None:
                    daemon.kill()
                daemon = Daemon(harness.CONFIGS[config], label=config)
                try:
                    daemon.start()
                except TestFailure as e:
                    self.report(name, "cannot start the %s daemon: %s" % (config, e), [daemon], 0)
                    daemon.kill()
                    daemon = None
                    continue
            self.run_one(name, fn, (daemon,), shared=daemon)
        if daemon is not None:
            self.run_one("shutdown[%s]" % config, lambda: daemon.stop(), (), shared=None)


def load_tests():
    for path in sorted(glob.glob(os.path.join(HERE, "test_*.py"))):
        importlib.import_module(os.path.splitext(os.path.basename(path))[0])
    return harness.TESTS


def select(tests, pattern):
    if not pattern:
        return tests
    exact = [t for t in tests if t[0] == pattern]
    return exact or [t for t in tests if pattern in t[0]]


def is_asan(binary):
    with open(binary, "rb") as f:
        return b"__asan_init" in f.read()


def match_valgrind_cpu():
    """valgrind's virtual CPU offers AVX2 at most, so the daemon runs the
    AVX2 kernels (and OpenBLAS its Haswell ones) under it; the CLI oracle,
    run bare, must run the same ones or their answers differ in the last
    bits. Values the caller set are kept."""
    os.environ.setdefault("PREDICTD_KERNELS", "avx2")  # clamped down on an older CPU
    with open("/proc/cpuinfo") as f:
        flags = next((line.split() for line in f if line.startswith("flags")), [])
    if "avx2" in flags and "fma" in flags:
        os.environ.setdefault("OPENBLAS_CORETYPE", "Haswell")


def main(argv):
    if len(argv) not in (2, 3):
        print("usage: %s BINARY [TEST-NAME-OR-SUBSTRING]" % argv[0], file=sys.stderr)
        return 2
    harness.BINARY = os.path.abspath(argv[1])
    if not os.access(harness.BINARY, os.X_OK):
        print("%s: not an executable" % argv[1], file=sys.stderr)
        return 2
    if "PREDICTD_TEST_SLOW" not in os.environ:
        if harness.WRAPPER:
            harness.SLOW = 20.0
        elif is_asan(harness.BINARY):
            harness.SLOW = 4.0
    if harness.VALGRIND:
        match_valgrind_cpu()
    harness.WORKDIR = harness.make_workdir()
    # Killed from outside (make's timeout, a CI job), still stop our daemons.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    tests = select(load_tests(), argv[2] if len(argv) == 3 else None)
    runner = Runner()
    groups = {}
    for t in tests:
        groups.setdefault(t[1], []).append(t)
    if None in groups:  # self-managed tests last: they reuse the oracle's cache
        groups[None] = groups.pop(None)
    try:
        for config, group in groups.items():
            runner.run_group(config, group)
    finally:
        harness.kill_all()
    if runner.failed:
        print("daemon logs kept in %s" % harness.WORKDIR)
    else:
        shutil.rmtree(harness.WORKDIR, ignore_errors=True)
    print("%d passed, %d failed" % (runner.passed, runner.failed), flush=True)
    return 1 if runner.failed or not tests else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
