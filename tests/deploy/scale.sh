#!/bin/sh
# The scale-out tests alone (tests/deploy/scale.py): a real nginx running
# docker/nginx.conf in front of three predictd replicas on 127.0.0.1; one is
# SIGKILLed under load and brought back; requests/s with 1, 2 and 3 replicas.
#   tests/deploy/scale.sh [BINARY]       BINARY defaults to build/predictd
set -eu
here=$(dirname "$0")
exec "$here/run.sh" "${1:-$here/../../build/predictd}" scale_
