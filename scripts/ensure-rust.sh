# Sourced by the set-up scripts: put cargo on PATH, installing the Rust toolchain with rustup (minimal profile)
# on a machine that has none. Debian 12's own rustc is too old for the crates this project uses.
if ! command -v cargo >/dev/null; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "== installing the Rust toolchain (rustup, minimal profile)"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
fi
