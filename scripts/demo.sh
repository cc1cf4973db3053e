#!/usr/bin/env bash
# holepunch demo: builds the NAT lab (network namespaces + nftables NATs, one site per preset), runs our
# stund on the lab's public segment and stunclient behind every NAT, and prints a short report; then builds two
# pairs of sites behind different NATs, starts stund's rendezvous and one punchd peer per site, and reports
# per pair the prediction, the path (direct, or "needs relay"), its remote endpoint, RTT and time to path.
# Run as root on a fresh Debian 12:   ./scripts/demo.sh
# (Installs the Debian packages and Rust when missing, builds in release mode: several minutes the first time;
# the demo itself then takes under a minute.)
# (Started as a user, it runs itself again through sudo when sudo is installed.)
# Everything it creates is removed when it ends, fails or is interrupted (Ctrl-C).
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  # Before the cd below, so that a relative $0 still names this script.
  if command -v sudo >/dev/null; then exec sudo -E "$0" "$@"; fi
  echo "demo.sh: run it as root (network namespaces need root); sudo is not installed" >&2
  exit 1
fi
cd "$(dirname "$0")/.."

# Debian packages the lab uses (miniupnpd-nftables gives preset 9, the port-mapping router).
PKGS=(build-essential pkg-config ca-certificates curl iproute2 nftables conntrack iputils-ping miniupnpd-nftables)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
  # The package may start a system-wide miniupnpd where an init system runs; the lab starts its own.
  if command -v systemctl >/dev/null && systemctl is-active --quiet miniupnpd 2>/dev/null; then
    systemctl stop miniupnpd || true
  fi
fi

# shellcheck source=scripts/ensure-rust.sh
. scripts/ensure-rust.sh

echo "== cargo build --release -p holepunch-lab -p stund -p stunclient -p punchd"
cargo build --release -p holepunch-lab -p stund -p stunclient -p punchd

LAB=target/release/holepunch-lab
cleanup() { "$LAB" down --name demo >/dev/null 2>&1 || true; }
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM
# A lab left by an earlier run that was killed hard (kill -9) would block the name.
cleanup
"$LAB" sweep >/dev/null

"$LAB" demo --bin-dir target/release
