# Sourced by scripts/check-windows.sh and scripts/build-windows.sh: sets TC to the Debian rustc linked into
# rustup (`debian-1.*`), installing it once (root) when missing. Debian ships a rustc whose std source matches
# it exactly, so -Zbuild-std works for x86_64-pc-windows-gnu (docs/windows.md, docs/dependencies.md).
# Returns 2 (after one line on stderr) when it cannot be installed as a user.
windows_toolchain() {
  if ! rustup toolchain list | grep -q '^debian-1\.'; then
    if [ "$(id -u)" -ne 0 ]; then
      echo "$1: needs root once to install Debian's rustc-web toolchain; skipped" >&2
      return 2
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends rustc-web cargo-web rust-web-src rust-web-clippy gcc-mingw-w64-x86-64
    mkdir -p /opt/rust-debian/bin /opt/rust-debian/lib
    for b in rustc rustdoc cargo cargo-clippy clippy-driver; do ln -sf "/usr/bin/$b" "/opt/rust-debian/bin/$b"; done
    rustup toolchain link debian-1.96 /opt/rust-debian
  fi
  TC=$(rustup toolchain list | grep -o '^debian-1\.[0-9]*' | head -n 1)
}
