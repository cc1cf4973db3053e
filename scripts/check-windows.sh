#!/usr/bin/env bash
# Type-check and lint the platform-neutral crates for Windows (x86_64-pc-windows-gnu) with Debian's rustc and
# -Zbuild-std (docs/windows.md). stund is Linux-only (recvmmsg/sendmmsg, SO_REUSEPORT) and is not checked.
# scripts/build-windows.sh builds the .exe files the same way; the Wine lab test runs them.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/windows-toolchain.sh
. scripts/windows-toolchain.sh
windows_toolchain check-windows || { [ "${CI:-}" = "true" ] && exit 1; exit 0; }
RUSTC_BOOTSTRAP=1 cargo "+$TC" clippy -Zbuild-std=std,panic_abort --target x86_64-pc-windows-gnu \
  --target-dir target/win -p holepunch -p stunclient -p punchd -- -D warnings
echo "check-windows: holepunch, stunclient, punchd type-check and lint clean for x86_64-pc-windows-gnu"
