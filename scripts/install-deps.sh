#!/bin/sh
# Installs the Debian/Ubuntu packages predictd needs, when missing:
#   install-deps.sh build   what building and running need (make run)
#   install-deps.sh test    that and what the tests need (make test; the default)
# Run as root (or with sudo available); prints what it installs.
set -eu

# libjpeg-dev pulls in libjpeg-turbo's headers under either distribution's
# name (libjpeg62-turbo-dev on Debian, libjpeg-turbo8-dev on Ubuntu).
build="make gcc pkg-config libmicrohttpd-dev libjansson-dev libopenblas-dev libuv1-dev
libutf8proc-dev libpng-dev libjpeg-dev"
# python3 and curl drive the daemon; nginx and wrk the scale-out test;
# python3-yaml reads the deployment manifests; clang builds the fuzzers.
test="python3 python3-yaml curl nginx wrk clang"

case "${1:-test}" in
build) need="$build" ;;
test)
    need="$build $test"
    # libFuzzer's runtime (make fuzz-smoke): its own package on Debian 12,
    # part of clang's on older Ubuntu.
    if apt-cache show libclang-rt-dev > /dev/null 2>&1; then
        need="$need libclang-rt-dev"
    fi
    ;;
*) echo "usage: install-deps.sh [build|test]" >&2; exit 2 ;;
esac

missing=""
for p in $need; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
[ -z "$missing" ] && exit 0

echo "install-deps: installing:$missing"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing
# The tests start their own nginx on loopback; Debian's package would also
# start the default site on port 80 where systemd runs: stop it if we installed it.
case " $missing " in
*" nginx "*) $SUDO systemctl disable --now nginx > /dev/null 2>&1 || true ;;
esac
