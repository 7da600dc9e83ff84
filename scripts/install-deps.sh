#!/bin/sh
# Installs the Debian packages predictd needs to build and test, when missing.
# Run as root (or with sudo available); prints what it installs and why.
set -eu

need="make gcc pkg-config libmicrohttpd-dev libjansson-dev libopenblas-dev libuv1-dev
libutf8proc-dev libpng-dev libjpeg62-turbo-dev python3 curl"

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
