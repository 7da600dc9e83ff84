#!/bin/sh
# The deployment suite: the systemd unit, the container image, Compose, nginx,
# the Kubernetes manifests, and a real nginx in front of predictd replicas.
#   tests/deploy/run.sh [BINARY [TEST]]   BINARY defaults to build/predictd;
#                                         TEST: a test's name, or a part of names
# Prints `ok NAME` / `skip NAME: why` / `FAIL NAME: why` per test and, last,
# `N passed, N failed, N skipped`; exits non-zero on any failure. Talks to
# 127.0.0.1 only. Python 3 standard library only; uses systemd-analyze, nginx,
# wrk, dpkg and shellcheck when installed and skips what needs a missing one.
set -eu
here=$(dirname "$0")
if [ $# -gt 2 ]; then
    echo "usage: $0 [BINARY [TEST]]" >&2
    exit 2
fi
binary=${1:-$here/../../build/predictd}
[ $# -gt 0 ] && shift
exec python3 -u -B "$here/runner.py" "$binary" "$@"
