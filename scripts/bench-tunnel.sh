#!/usr/bin/env bash
# Tunnel throughput: punchd's WireGuard tunnel against Debian's wireguard-go and the bare path, in the NAT lab
# (docs/performance.md, "Tunnel throughput").
#
# Builds punchd, stund and the lab's `tunnelbench` in release mode, then runs `tunnelbench`
# (lab/src/bin/tunnelbench.rs): one lab with two public hosts on the internet bridge (one veth-bridge-veth path,
# no NAT) and stund on the server; per round the raw path, a wireguard-go pair (MTU 1400) and a punchd pair
# (tunnel on, MTU 1400), each measured with iperf3 TCP for N seconds while pings run every 10 ms; medians, a
# markdown table and the punchd / wireguard-go ratios. punchd's row says "tunnel not available in this build"
# when its binary has no `--tun-ip`. Run as root (network namespaces). Everything it starts or creates is
# removed when it ends, fails or is interrupted.
#
# Usage: scripts/bench-tunnel.sh [tunnelbench options: --rounds N --duration S --mtu M --streams P
#                                 --ping-interval-ms MS --only raw,wireguard-go,punchd]
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "bench-tunnel.sh: run it as root (network namespaces need root)" >&2
    exit 1
fi
cd "$(dirname "$0")/.."

for tool in wireguard-go wg iperf3 ping; do
    if ! command -v "$tool" >/dev/null; then
        echo "bench-tunnel.sh: $tool is missing: run scripts/install-deps.sh" >&2
        exit 1
    fi
done

cleanup() {
    # The lab removes itself when tunnelbench ends; this catches a tunnelbench killed before it could.
    if [ -x target/release/holepunch-lab ]; then
        target/release/holepunch-lab down --name tbench >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== cargo build --release -p punchd -p stund -p holepunch-lab" >&2
cargo build --release -q -p punchd -p stund -p holepunch-lab
echo "== wireguard-go $(dpkg-query -W -f='${Version}' wireguard-go 2>/dev/null || echo '?'), iperf3 $(iperf3 --version | head -1 | cut -d' ' -f2)" >&2

target/release/tunnelbench --bin-dir target/release "$@"
