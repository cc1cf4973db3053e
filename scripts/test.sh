#!/usr/bin/env bash
# Run every check and test of holepunch: formatting, clippy, the layering check, the Windows type-check, unit,
# integration, interop and NAT-lab tests (among them punchd/tests/lab_wine.rs, which builds punchd.exe and
# stunclient.exe with scripts/build-windows.sh and runs them under Wine, docs/windows.md). Run it as root for the full suite (lab and interop tests need root; with CI=true they must run,
# a skip is a failure). As a user it runs what it can: packages are installed through sudo when sudo exists,
# and the lab tests skip.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -eq 0 ] || command -v sudo >/dev/null; then
  scripts/install-deps.sh # re-runs itself through sudo when not root
else
  echo "test.sh: not root and no sudo: skipping package installation (scripts/install-deps.sh needs root)"
fi
[ "$(id -u)" -eq 0 ] || echo "test.sh: not root: the lab tests will skip (run as root for the full suite)"
# shellcheck source=scripts/ensure-rust.sh
. scripts/ensure-rust.sh
export RUST_BACKTRACE=1
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== layering check (docs/architecture.md, \"Layering\")"
scripts/check-layering.sh
echo "== Windows type-check (x86_64-pc-windows-gnu)"
scripts/check-windows.sh
echo "== punchd's unit tests for Windows, under Wine (docs/windows.md)"
scripts/wine-unit-tests.sh
echo "== cargo test"
cargo build --workspace --locked --bins
cargo test --workspace --locked --no-fail-fast
