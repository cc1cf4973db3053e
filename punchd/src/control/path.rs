//! Where a daemon's control socket lives when `--control` does not say: one path per peer id, so two daemons
//! of one user (two peer ids) never share a socket.
//!
//! 1. `$XDG_RUNTIME_DIR/punchd-NAME.sock` when that variable names an absolute directory (a per-user, mode
//!    0700 directory on systemd hosts);
//! 2. `/run/punchd/NAME.sock` for root;
//! 3. `/tmp/punchd-UID-NAME.sock` otherwise (the socket itself is mode 0600, and `punchd status` refuses a
//!    socket another user owns, so a planted file in /tmp cannot answer in the daemon's place).
//!
//! On Windows it is the named pipe `\\.\pipe\punchd-NAME` (pipe names are one machine-wide namespace; the
//! pipe's DACL and first-instance creation keep it the daemon user's, control/pipe.rs).

use holepunch::signal::PeerName;
use std::path::PathBuf;

/// The default control pipe of peer `name` (Windows).
#[cfg(windows)]
pub fn default_path(name: &PeerName) -> PathBuf {
    PathBuf::from(format!(r"\\.\pipe\punchd-{name}"))
}

/// The default control socket of peer `name`.
#[cfg(not(windows))]
pub fn default_path(name: &PeerName) -> PathBuf {
    let xdg = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from).filter(|p| p.is_absolute());
    choose(name, xdg, uid())
}

#[cfg_attr(windows, allow(dead_code))]
fn choose(name: &PeerName, xdg: Option<PathBuf>, uid: Option<u32>) -> PathBuf {
    match (xdg, uid) {
        (Some(dir), _) => dir.join(format!("punchd-{name}.sock")),
        (None, Some(0)) => PathBuf::from(format!("/run/punchd/{name}.sock")),
        (None, Some(uid)) => std::env::temp_dir().join(format!("punchd-{uid}-{name}.sock")),
        (None, None) => std::env::temp_dir().join(format!("punchd-{name}.sock")),
    }
}

#[cfg(unix)]
fn uid() -> Option<u32> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    Some(unsafe { libc::geteuid() })
}

#[cfg(all(not(unix), not(windows)))]
fn uid() -> Option<u32> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_path_per_peer_id() {
        let alice = PeerName::new("alice").unwrap();
        let xdg = Some(PathBuf::from("/run/user/1000"));
        assert_eq!(choose(&alice, xdg, Some(1000)), PathBuf::from("/run/user/1000/punchd-alice.sock"));
        assert_eq!(choose(&alice, None, Some(0)), PathBuf::from("/run/punchd/alice.sock"));
        let tmp = choose(&alice, None, Some(1000));
        assert!(tmp.ends_with("punchd-1000-alice.sock"), "{tmp:?}");
        assert_ne!(tmp, choose(&PeerName::new("bob").unwrap(), None, Some(1000)));
    }
}
