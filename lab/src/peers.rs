//! Files a lab run of punchd peers needs, made the way a user would make them: a private scratch directory,
//! keys through `punchd genkey` / `punchd pubkey`, and a network secret of mode 0600 (docs/punchd.md, "Keys
//! and secrets"). Shared by the demo and the punching benchmark.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// A private directory (mode 0700) for keys, the secret, control sockets and logs; removed when dropped.
pub struct Scratch(PathBuf);

impl Scratch {
    /// `$TMPDIR/holepunch-<purpose>-<pid>`; a leftover of an earlier process with the same pid is replaced.
    pub fn new(purpose: &str) -> Result<Scratch> {
        let dir = std::env::temp_dir().join(format!("holepunch-{purpose}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::DirBuilder::new().mode(0o700).create(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Scratch(dir))
    }

    /// The directory itself.
    pub fn dir(&self) -> &Path {
        &self.0
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// `punchd genkey > path` (punchd makes the file mode 0600 itself).
pub fn genkey(punchd: &Path, path: &Path) -> Result<PathBuf> {
    let file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    let st = Command::new(punchd).arg("genkey").stdout(file).status().context("running punchd genkey")?;
    if !st.success() {
        bail!("punchd genkey failed ({st})");
    }
    Ok(path.to_owned())
}

/// `punchd pubkey < path`.
pub fn pubkey(punchd: &Path, path: &Path) -> Result<String> {
    let out = Command::new(punchd)
        .arg("pubkey")
        .stdin(File::open(path)?)
        .stderr(Stdio::inherit())
        .output()
        .context("running punchd pubkey")?;
    let key = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || key.is_empty() {
        bail!("punchd pubkey failed ({})", out.status);
    }
    Ok(key)
}

/// 32 bytes from the OS's randomness, hex, in a file created mode 0600.
pub fn network_secret(path: &Path) -> Result<PathBuf> {
    let mut bytes = [0u8; 32];
    File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).context("reading /dev/urandom")?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    writeln!(f, "{hex}")?;
    Ok(path.to_owned())
}
