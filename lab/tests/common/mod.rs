//! Shared bits of the lab self-tests.
#![allow(dead_code)]

use std::path::Path;

/// The `holepunch-lab` binary: the independent probe runs as `holepunch-lab probe …` in namespaces.
pub fn probe_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_holepunch-lab"))
}

/// Parses `ok mapped=… from=…` / `timeout` lines of `probe query`.
pub fn answered(line: &str) -> bool {
    line.starts_with("ok ")
}
