//! Names of lab namespaces, and the sweeper that removes leftovers.
//!
//! Every namespace of a lab is named `<prefix>-<node>`. An automatic prefix is `hl<pid>-<n>` (pid of the
//! process that built the lab, n a per-process counter), so labs in parallel tests never clash and a
//! lab whose process died (SIGKILL, abort) can be recognised as stale. Named labs (the CLI) use
//! `hl-<name>`. All interfaces are created inside the lab's namespaces, never in the caller's, so
//! deleting the namespaces removes every veth and bridge too.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::cmd::run_args;
use crate::error::Result;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh prefix unique to this process and call.
pub(crate) fn auto_prefix() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("hl{}-{}", std::process::id(), n)
}

/// The prefix of a named lab (`holepunch-lab up --name demo` gives `hl-demo`).
pub fn named_prefix(name: &str) -> String {
    format!("hl-{name}")
}

/// All network namespaces on this machine (names only).
pub fn list_namespaces() -> Result<Vec<String>> {
    let out = run_args("ip", &["netns", "list"])?;
    Ok(out.lines().filter_map(|l| l.split_whitespace().next()).map(str::to_owned).collect())
}

/// Namespaces that belong to the lab with `prefix`.
pub fn namespaces_with_prefix(prefix: &str) -> Result<Vec<String>> {
    let start = format!("{prefix}-");
    Ok(list_namespaces()?.into_iter().filter(|n| n.starts_with(&start)).collect())
}

/// Pids of processes whose network namespace is `ns`.
pub fn namespace_pids(ns: &str) -> Vec<i32> {
    run_args("ip", &["netns", "pids", ns])
        .map(|out| out.split_whitespace().filter_map(|p| p.parse().ok()).collect())
        .unwrap_or_default()
}

/// Kills every process in namespace `ns` and deletes it. Errors are logged, not returned: teardown
/// must go on with the other namespaces.
pub(crate) fn remove_namespace(ns: &str) {
    // A process keeps its namespace alive after `ip netns del`, so kill first. Retry briefly
    // because a dying process may have just forked.
    for _ in 0..20 {
        let pids = namespace_pids(ns);
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            // SAFETY: kill(2) with a pid read from the kernel; at worst the process is already gone.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    if let Err(e) = run_args("ip", &["netns", "del", ns]) {
        log::warn!(target: "lab", "cannot delete namespace {ns}: {e}");
    }
}

/// Removes every namespace (and the processes in it) of the lab with `prefix`. Returns the names removed.
pub fn sweep_prefix(prefix: &str) -> Result<Vec<String>> {
    let names = namespaces_with_prefix(prefix)?;
    for ns in &names {
        remove_namespace(ns);
    }
    Ok(names)
}

/// Parses the pid out of an automatic lab namespace name (`hl<pid>-<n>-<node>`).
fn owner_pid(ns: &str) -> Option<i32> {
    let rest = ns.strip_prefix("hl")?;
    let (pid, tail) = rest.split_once('-')?;
    let (counter, _node) = tail.split_once('-')?;
    counter.parse::<u32>().ok()?;
    pid.parse().ok()
}

fn alive(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes the namespaces of automatic labs whose building process no longer exists (a test run that
/// was killed before its `Drop` could run). Returns the names removed.
pub fn sweep_stale() -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for ns in list_namespaces()? {
        if let Some(pid) = owner_pid(&ns) {
            if !alive(pid) {
                remove_namespace(&ns);
                removed.push(ns);
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_parses_auto_names_only() {
        assert_eq!(owner_pid("hl1234-0-net"), Some(1234));
        assert_eq!(owner_pid("hl1234-17-a1"), Some(1234));
        assert_eq!(owner_pid("hl-demo-net"), None);
        assert_eq!(owner_pid("hlx-1-net"), None);
        assert_eq!(owner_pid("other"), None);
    }

    #[test]
    fn auto_prefixes_are_unique() {
        assert_ne!(auto_prefix(), auto_prefix());
    }
}
