#!/usr/bin/env bash
# Build punchd's unit tests for x86_64-pc-windows-gnu (the recipe of scripts/check-windows.sh) and run them
# under Wine: the control pipe's own test (control/pipe.rs) and every platform-neutral one run on the Windows
# code paths (docs/windows.md, "How CI runs the builds under Wine"). Needs wine64 (scripts/install-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
WINE=/usr/lib/wine/wine64
if [ ! -x "$WINE" ]; then
  echo "wine-unit-tests: no Wine ($WINE); scripts/install-deps.sh installs wine64; skipped" >&2
  [ "${CI:-}" = "true" ] && exit 1
  exit 0
fi
# shellcheck source=scripts/windows-toolchain.sh
. scripts/windows-toolchain.sh
windows_toolchain wine-unit-tests || { [ "${CI:-}" = "true" ] && exit 1; exit 0; }
EXE=$(RUSTC_BOOTSTRAP=1 cargo "+$TC" test --no-run --locked -Zbuild-std=std,panic_abort \
  --target x86_64-pc-windows-gnu --target-dir target/win -p punchd --bins --message-format=json 2>/dev/null |
  sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
[ -n "$EXE" ] || { echo "wine-unit-tests: no test executable built" >&2; exit 1; }
# Wine 8.0 lacks ProcessPrng, which Rust's std takes randomness from: the shim goes next to the .exe.
x86_64-w64-mingw32-gcc -O2 -shared -s -o "$(dirname "$EXE")/bcryptprimitives.dll" scripts/wine/bcryptprimitives.c -ladvapi32
PREFIX=$(mktemp -d /tmp/holepunch-wine-units.XXXXXX)
cleanup() {
  WINEPREFIX="$PREFIX/p" /usr/lib/wine/wineserver -k 2>/dev/null || true
  WINEPREFIX="$PREFIX/p" /usr/lib/wine/wineserver -w 2>/dev/null || true
  # The server's socket directory (named after the prefix's device and inode) outlives it in /tmp/wine-*.
  if [ -d "$PREFIX/p" ]; then
    id=$(stat -c 'server-%D-%i' "$PREFIX/p" | awk -F- '{printf "server-%s-%x", $2, $3}')
    for d in /tmp/wine-*/"$id"; do [ -d "$d" ] && rm -rf "$d" && rmdir "$(dirname "$d")" 2>/dev/null; done
  fi
  rm -rf "$PREFIX"
}
trap cleanup EXIT
WINEPREFIX="$PREFIX/p" WINEDEBUG=-all WINEDLLOVERRIDES="mscoree,mshtml=" timeout 300 "$WINE" "$EXE" 2>&1 |
  grep -v '^wine: \(created the configuration\|failed to open L"C:\\\\windows\\\\syswow64\|configuration in\)'
exit "${PIPESTATUS[0]}"
