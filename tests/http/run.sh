#!/bin/sh
# The HTTP suite: drives the real daemon on 127.0.0.1.
#   tests/http/run.sh BINARY [TEST]   TEST: a test's name, or a part of names
# Prints `ok NAME` / `FAIL NAME: why` per test and, last, `N passed, N failed`;
# exits non-zero on any failure. Python 3 standard library only.
set -eu
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: $0 BINARY [TEST]" >&2
    exit 2
fi
here=$(dirname "$0")
exec python3 -u -B "$here/runner.py" "$@"
