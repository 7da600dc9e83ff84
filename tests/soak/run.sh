#!/bin/sh
# The soak test: tests/soak/run.sh BINARY [SECONDS [CONNECTIONS]]
# (make test runs 60 s; make soak 600 s). See soak.py.
set -eu
exec python3 -u -B "$(dirname "$0")/soak.py" "$1" "${2:-60}" "${3:-128}"
