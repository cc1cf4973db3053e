#!/usr/bin/env bash
# Install the Debian packages holepunch's build, tests, lab and benchmarks use. Idempotent; needs root.
# Usage: scripts/install-deps.sh            (everything the tests need)
set -euo pipefail
PKGS=(
  build-essential pkg-config ca-certificates curl
  iproute2 nftables conntrack iputils-ping iperf3 tcpdump procps psmisc util-linux
  coturn stun-client stun-server miniupnpd-nftables
  redis-server openssl  # stund --registry tests (stund/tests/cluster.rs: own Redis on a free port, TLS certificates)
  wireguard-go wireguard-tools
  wine64 gcc-mingw-w64-x86-64
)
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then exec sudo -E "$0" "$@"; fi
  echo "install-deps: needs root to apt-get install: ${PKGS[*]}" >&2
  exit 1
fi
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# miniupnpd asks debconf questions and coturn may try to start a service: neither must block or run here.
apt-get install -y -q --no-install-recommends "${missing[@]}"
# Debian's packages may start services on install where an init system runs; the tests start their own.
for svc in coturn miniupnpd; do
  if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then systemctl stop "$svc" || true; fi
done
pkill -x turnserver 2>/dev/null || true
pkill -x miniupnpd 2>/dev/null || true
