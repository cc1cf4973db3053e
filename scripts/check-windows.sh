#!/usr/bin/env bash
# Type-check and lint the platform-neutral crates for Windows (x86_64-pc-windows-gnu). Windows cannot run here,
# but Debian ships a rustc whose std source matches it, so -Zbuild-std works (see docs/dependencies.md).
# stund is Linux-only (recvmmsg/sendmmsg, SO_REUSEPORT) and is not checked.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! rustup toolchain list | grep -q '^debian-1\.'; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "check-windows: needs root once to install Debian's rustc-web toolchain; skipped" >&2
    [ "${CI:-}" = "true" ] && exit 1
    exit 0
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends rustc-web cargo-web rust-web-src rust-web-clippy gcc-mingw-w64-x86-64
  mkdir -p /opt/rust-debian/bin /opt/rust-debian/lib
  for b in rustc rustdoc cargo cargo-clippy clippy-driver; do ln -sf "/usr/bin/$b" "/opt/rust-debian/bin/$b"; done
  rustup toolchain link debian-1.96 /opt/rust-debian
fi
TC=$(rustup toolchain list | grep -o '^debian-1\.[0-9]*' | head -n 1)
RUSTC_BOOTSTRAP=1 cargo "+$TC" clippy -Zbuild-std=std,panic_abort --target x86_64-pc-windows-gnu \
  --target-dir target/win -p holepunch -p stunclient -p punchd -- -D warnings
echo "check-windows: holepunch, stunclient, punchd type-check and lint clean for x86_64-pc-windows-gnu"
