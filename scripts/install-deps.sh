#!/bin/sh
# Installs the Debian packages predictd needs to build and test, when missing.
# Run as root (or with sudo available); prints what it installs and why.
set -eu

# Build: the first two lines. Tests: python3 and curl drive the daemon; nginx
# and wrk the scale-out test; python3-yaml reads the deployment manifests.
need="make gcc pkg-config libmicrohttpd-dev libjansson-dev libopenblas-dev libuv1-dev
libutf8proc-dev libpng-dev libjpeg62-turbo-dev
python3 python3-yaml curl nginx wrk clang"
# libFuzzer's runtime (make fuzz-smoke): its own package on Debian 12, part of
# clang's on older Ubuntu.
if apt-cache show libclang-rt-dev > /dev/null 2>&1; then
    need="$need libclang-rt-dev"
fi

missing=""
for p in $need; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
[ -z "$missing" ] && exit 0

# Ubuntu names the libjpeg-turbo package differently.
if ! apt-cache show libjpeg62-turbo-dev >/dev/null 2>&1; then
    missing=$(echo "$missing" | sed 's/libjpeg62-turbo-dev/libjpeg-turbo8-dev/')
fi

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
