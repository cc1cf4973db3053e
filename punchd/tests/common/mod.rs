//! Helpers shared by the tests that run stund and punchd as processes: the binaries, a scratch directory
//! with private files; `lab`: stund and punchd peers in the NAT lab.
#![allow(dead_code)]

#[cfg(unix)]
pub mod lab;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const PUNCHD: &str = env!("CARGO_BIN_EXE_punchd");

/// stund next to punchd in the target directory, built when missing or older than its sources (stund's own
/// and the library's): `cargo test -p punchd` does not build other packages' binaries, and a stale stund
/// would test today's punchd against yesterday's rendezvous.
pub fn stund_bin() -> PathBuf {
    let dir = Path::new(PUNCHD).parent().unwrap().to_path_buf();
    let p = dir.join("stund");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let built = std::fs::metadata(&p).and_then(|m| m.modified()).ok();
    let sources = [root.join("stund"), root.join("src"), root.join("Cargo.lock")];
    if built.is_none_or(|b| sources.iter().any(|s| newer_than(s, b))) {
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args(["build", "-p", "stund", "--manifest-path"]).arg(root.join("Cargo.toml"));
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        assert!(cmd.status().expect("cargo build -p stund").success(), "cargo build -p stund failed");
    }
    p
}

/// Whether `path` (a file, or any file under a directory; bounded depth) was modified after `t`.
fn newer_than(path: &Path, t: std::time::SystemTime) -> bool {
    fn walk(p: &Path, t: std::time::SystemTime, depth: u32) -> bool {
        let Ok(m) = std::fs::symlink_metadata(p) else { return false };
        if m.is_dir() {
            depth < 8
                && std::fs::read_dir(p).map(|rd| rd.flatten().any(|e| walk(&e.path(), t, depth + 1))).unwrap_or(false)
        } else {
            m.modified().is_ok_and(|m| m > t)
        }
    }
    walk(path, t, 0)
}

/// A fresh directory for one test, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("punchd-two-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }

    pub fn private(&self, name: &str, content: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, content).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
