#!/usr/bin/env bash
# Installs the Debian packages mtlsgw builds with and tests against (only what is missing).
set -euo pipefail
PKGS="build-essential cmake pkg-config android-libboringssl-dev libc-ares-dev libconfig-dev libjansson-dev libp11-kit-dev libcmocka-dev clang clang-format libclang-rt-14-dev valgrind
      nginx libnginx-mod-stream haproxy redis-server redis-tools proxychains4 dnsmasq-base curl wget iproute2 systemd openssl python3 nftables
      scdoc lintian bash-completion man-db python3-yaml podman runc catatonit adduser softhsm2 opensc procps pebble faketime squid dante-server chromium"
missing=()
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    echo "installing: ${missing[*]}"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
