//! Can the lab run here? Root and the helper programs are needed. Tests call [`skip_unless_available`]:
//! without root they print one line and skip, but with `CI=true` a missing requirement is a failure.

use std::process::{Command, Stdio};

use crate::error::{Error, Result};

/// Programs the lab shells out to.
pub const REQUIRED_TOOLS: &[&str] = &["ip", "nft", "conntrack"];

/// Ok when the lab can be built: running as root and every required tool is on PATH.
pub fn check_available() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(Error::Unavailable("not running as root (network namespaces need root)".into()));
    }
    for tool in REQUIRED_TOOLS {
        let found = Command::new(tool).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
        if !found {
            return Err(Error::Unavailable(format!(
                "`{tool}` not found (apt-get install iproute2 nftables conntrack)"
            )));
        }
    }
    Ok(())
}

/// Whether `CI=true` (or `1`) is set: then a lab that cannot run is a failure, not a skip.
pub fn in_ci() -> bool {
    std::env::var("CI").map(|v| v == "true" || v == "1").unwrap_or(false)
}

/// For tests: returns true when the test should be skipped (after printing one clear line).
/// Panics under `CI=true`, where skipping would hide that nothing was tested.
pub fn skip_unless_available(test: &str) -> bool {
    match check_available() {
        Ok(()) => false,
        Err(e) if in_ci() => panic!("{test}: CI=true but {e}"),
        Err(e) => {
            // Straight to stderr, not `eprintln!`: the test harness captures the macros' output
            // of passing tests, and this line must be seen.
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "SKIP {test}: {e}");
            true
        }
    }
}

/// Returns from the calling test when the lab cannot run here (see [`skip_unless_available`]).
#[macro_export]
macro_rules! require_lab {
    () => {
        // libtest names each test's thread after the test.
        if $crate::skip_unless_available(std::thread::current().name().unwrap_or(module_path!())) {
            return;
        }
    };
}
