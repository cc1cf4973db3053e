#!/usr/bin/env bash
# Time to a direct path: punchd against a standard ICE agent (aioice), in the NAT lab with a one-way delay on
# every access link (docs/performance.md, "punchd: time to a direct path, against an ICE agent").
#
# Builds punchd, stund and the lab's `punchbench` in release mode, makes a Python venv under /tmp with aioice
# from PyPI (removed at the end), then runs `punchbench` (lab/src/bin/punchbench.rs): per preset pair a lab
# with stund's rendezvous, N runs of punchd (connect request on the control socket -> first verified round
# trip) and N runs of the ICE agent (scripts/ice_peer.py, same stund as its STUN server), medians, ratio and
# the goals. Run as root (network namespaces). Everything it starts or creates is removed when it ends, fails
# or is interrupted.
#
# Usage: scripts/bench-punch.sh [--no-ice] [punchbench options: --runs N --delay-ms MS --pairs 1/1,3/3 --verbose]
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "bench-punch.sh: run it as root (network namespaces need root)" >&2
    exit 1
fi
cd "$(dirname "$0")/.."

ICE=1
ARGS=()
for a in "$@"; do
    case "$a" in
        --no-ice) ICE=0 ;;
        *) ARGS+=("$a") ;;
    esac
done

VENV=""
cleanup() {
    [ -n "$VENV" ] && rm -rf "$VENV"
    # The lab removes itself when punchbench ends; this catches a punchbench killed before it could.
    if [ -x target/release/holepunch-lab ]; then
        target/release/holepunch-lab down --name pbench >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== cargo build --release -p punchd -p stund -p holepunch-lab" >&2
cargo build --release -q -p punchd -p stund -p holepunch-lab

PY=()
if [ "$ICE" = 1 ]; then
    VENV=$(mktemp -d /tmp/bench-punch-venv.XXXXXX)
    echo "== python3 -m venv $VENV; pip install aioice" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check aioice
    echo "== aioice $("$VENV/bin/pip" show aioice | sed -n 's/^Version: //p') on $("$VENV/bin/python" --version)" >&2
    PY=(--python "$VENV/bin/python")
fi

target/release/punchbench --bin-dir target/release "${PY[@]}" "${ARGS[@]}"
