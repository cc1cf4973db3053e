#!/usr/bin/env bash
# Quick start on a fresh Debian 12 machine: install what is needed, build, start stund on loopback as a
# two-address RFC 5780 server, ask it with our stunclient and punchd and with third-party clients (coturn's
# turnutils_stunclient, Vovida's stun), then stop it. Traffic stays on 127.0.0.1/127.0.0.2.
#   ./scripts/quickstart.sh     as root, or as a user with sudo (sudo is used for apt-get only; the build and
#                               the servers run as you; without root or sudo the packages must be installed)
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${STUN_PORT:-3478}
ALT_PORT=${STUN_ALT_PORT:-3479}

if [ "$(id -u)" -eq 0 ]; then
  scripts/install-deps.sh
elif command -v sudo >/dev/null; then
  sudo scripts/install-deps.sh
else
  echo "quickstart: not root and no sudo: assuming the Debian packages are installed (scripts/install-deps.sh)"
fi
# shellcheck source=scripts/ensure-rust.sh
. scripts/ensure-rust.sh

echo "== cargo build --release"
cargo build --release -p stund -p stunclient -p punchd

STUND_PID=
cleanup() { [ -n "$STUND_PID" ] && kill "$STUND_PID" 2>/dev/null && wait "$STUND_PID" 2>/dev/null; true; }
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== starting stund on 127.0.0.1 and 127.0.0.2, ports $PORT and $ALT_PORT (RFC 5780 mode)"
RUST_LOG=${RUST_LOG:-info} target/release/stund --primary 127.0.0.1 --alternate 127.0.0.2 \
  --port "$PORT" --alt-port "$ALT_PORT" --threads 1 &
STUND_PID=$!
for _ in $(seq 50); do
  if target/release/punchd --server "127.0.0.1:$PORT" --port 0 --bind 127.0.0.1 --once --rto 100ms --retries 2 \
      >/dev/null 2>&1; then break; fi
  kill -0 "$STUND_PID" 2>/dev/null || { echo "quickstart: stund exited (port $PORT in use? set STUN_PORT)" >&2; exit 1; }
  sleep 0.1
done

echo; echo "== stunclient --server 127.0.0.1:$PORT"
target/release/stunclient --server "127.0.0.1:$PORT" --local-port 0 --no-portmap
echo; echo "== punchd --once (public endpoint of the punching socket)"
target/release/punchd --server "127.0.0.1:$PORT" --port 0 --bind 127.0.0.1 --once
echo; echo "== coturn's turnutils_stunclient -f (RFC 5780 client) against our stund"
turnutils_stunclient -f -p "$PORT" 127.0.0.1 || echo "(turnutils_stunclient failed)"
echo; echo "== Vovida's stun (RFC 3489 client) against our stund"
stun "127.0.0.1:$PORT" -v 2>&1 | tail -n 12 || true
echo; echo "quickstart: done; stund stops now."
