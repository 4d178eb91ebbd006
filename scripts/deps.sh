#!/bin/sh
# Installs the Debian packages tcpkit needs for one purpose, skipping those
# already present. Usage: scripts/deps.sh build|test|fuzz|bench
# Shared by the Makefile and .ci/run so both install the same things.
set -eu

build="gcc make pkg-config libjansson-dev libicu-dev libedit-dev libsqlite3-dev libssl-dev libzstd-dev"
# openssl: the test certificates (scripts/certs.sh) and s_client as a peer;
# binutils: readelf for the hardening test; libtsan2: ThreadSanitizer's
# runtime for gcc (the TSan suite).
test="$build libcmocka-dev python3 python3-pytest python3-zstandard openssl netcat-openbsd socat procps util-linux redis-server redis-tools iperf3 nmap iproute2 binutils libtsan2"
fuzz="clang libclang-rt-14-dev"
bench="$build golang-go procps redis-server iperf3 nginx libnginx-mod-stream haproxy nmap iproute2 util-linux curl openssl python3"

case "${1:-build}" in
build) want=$build ;;
test) want="$test $fuzz" ;;
fuzz) want="$build $fuzz" ;;
bench) want=$bench ;;
*) echo "usage: $0 build|test|fuzz|bench" >&2; exit 2 ;;
esac

missing=""
for p in $want; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
        missing="$missing $p"
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ]; then
    echo "tcpkit needs these Debian packages:$missing" >&2
    echo "install them as root: apt-get install$missing" >&2
    exit 1
fi
echo "installing:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
