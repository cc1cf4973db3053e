//! Helpers shared by the tests that run stund and punchd as processes: the binaries, a scratch directory
//! with private files; `lab`: stund and punchd peers in the NAT lab.
#![allow(dead_code)]

#[cfg(unix)]
pub mod lab;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const PUNCHD: &str = env!("CARGO_BIN_EXE_punchd");

/// stund next to punchd in the target directory, built when missing.
pub fn stund_bin() -> PathBuf {
    let dir = Path::new(PUNCHD).parent().unwrap().to_path_buf();
    let p = dir.join("stund");
    if !p.exists() {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args(["build", "-p", "stund", "--manifest-path"]).arg(manifest);
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        assert!(cmd.status().expect("cargo build -p stund").success(), "cargo build -p stund failed");
    }
    p
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
