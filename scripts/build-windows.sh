#!/usr/bin/env bash
# Build punchd.exe and stunclient.exe for x86_64-pc-windows-gnu (release) with Debian's rustc and -Zbuild-std,
# the recipe of scripts/check-windows.sh, plus the ProcessPrng shim DLL Wine 8.0 needs next to them
# (docs/windows.md). Prints the directory holding the three files on its last line.
# Usage: scripts/build-windows.sh [--quiet]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/windows-toolchain.sh
. scripts/windows-toolchain.sh
windows_toolchain build-windows || exit 1
OUT=target/win/x86_64-pc-windows-gnu/release
# Optimized, but without the release profile's thin LTO and single codegen unit: those would more than
# double a cold build (std included) on two cores for no difference the tests can see. Line tables stay, for
# backtraces. A build to ship: `cargo build --release` on Windows, or unset these.
export CARGO_PROFILE_RELEASE_LTO=${CARGO_PROFILE_RELEASE_LTO:-false}
export CARGO_PROFILE_RELEASE_CODEGEN_UNITS=${CARGO_PROFILE_RELEASE_CODEGEN_UNITS:-16}
QUIET=()
[ "${1:-}" = "--quiet" ] && QUIET=(-q)
RUSTC_BOOTSTRAP=1 cargo "+$TC" build --release --locked -Zbuild-std=std,panic_abort \
  --target x86_64-pc-windows-gnu --target-dir target/win -p stunclient -p punchd "${QUIET[@]}"
# Only for Wine: Windows has the real bcryptprimitives.dll (scripts/wine/bcryptprimitives.c says why).
SHIM=$OUT/bcryptprimitives.dll
if [ ! -e "$SHIM" ] || [ scripts/wine/bcryptprimitives.c -nt "$SHIM" ]; then
  x86_64-w64-mingw32-gcc -O2 -shared -s -o "$SHIM" scripts/wine/bcryptprimitives.c -ladvapi32
fi
echo "$PWD/$OUT"
