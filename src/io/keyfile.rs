//! Key and secret files: a peer's X25519 secret key (the `wg genkey` format, src/identity.rs) and the
//! rendezvous network secret. Both are secrets, so a file that other users can read or write is refused
//! rather than used, the way ssh refuses a private key with a loose mode (docs/punchd.md, "Keys and secrets").
//!
//! On Unix the mode is checked on the opened file (fstat, not the path, so the file checked is the file read):
//! any group or other permission bit (`mode & 0o077`) is refused. Windows has no mode bits; its ACLs are not
//! checked here (a key file there is as private as the directory it lives in).

use crate::identity::{KeyError, SecretKey};
use crate::signal::NetworkSecret;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Longest file read: a key is 44 characters, a secret a few dozen bytes. A bound keeps a path such as
/// `/dev/zero` from filling memory.
pub const MAX_FILE_LEN: u64 = 4096;

/// Shortest network secret (bytes, after trimming text): 128 bits.
pub const MIN_SECRET_LEN: usize = 16;

/// Why a key or secret file could not be used. Each is one line naming the file.
#[derive(Debug, Error)]
pub enum KeyFileError {
    #[error("{} does not exist", .0.display())]
    Missing(PathBuf),
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{} is not a regular file", .0.display())]
    NotAFile(PathBuf),
    #[error("{} is longer than {MAX_FILE_LEN} bytes: not a key or secret file", .0.display())]
    TooLong(PathBuf),
    /// Group or other users may read or write it (Unix).
    #[error("{path} is {what} by others (mode {mode:04o}); chmod 600 {path}", path = .path.display(), what = access_word(*.mode))]
    Exposed { path: PathBuf, mode: u32 },
    #[error("{} does not hold a key: {source}", path.display())]
    Malformed { path: PathBuf, source: KeyError },
    #[error("{} holds {len} bytes; a network secret is at least {MIN_SECRET_LEN}", path.display())]
    ShortSecret { path: PathBuf, len: usize },
}

fn access_word(mode: u32) -> &'static str {
    match (mode & 0o044 != 0, mode & 0o022 != 0) {
        (true, true) => "readable and writable",
        (false, true) => "writable",
        _ => "readable",
    }
}

/// Reads a peer's secret key file (base64 as `wg genkey` writes it). Refuses a file other users can read
/// or write (Unix), a missing file and malformed text, each with one line naming the file.
pub fn read_secret_key(path: &Path) -> Result<SecretKey, KeyFileError> {
    let bytes = read_private(path)?;
    let text = String::from_utf8_lossy(&bytes);
    SecretKey::from_base64(&text).map_err(|source| KeyFileError::Malformed { path: path.to_path_buf(), source })
}

/// Reads the rendezvous network secret: raw bytes or text (trimmed), at least [`MIN_SECRET_LEN`] bytes,
/// with the same permission rule as [`read_secret_key`].
pub fn read_network_secret(path: &Path) -> Result<NetworkSecret, KeyFileError> {
    let secret = NetworkSecret::from_file_bytes(&read_private(path)?);
    if secret.len() < MIN_SECRET_LEN {
        return Err(KeyFileError::ShortSecret { path: path.to_path_buf(), len: secret.len() });
    }
    Ok(secret)
}

/// A password or shared secret file (a TURN password, a TURN REST secret): its text, surrounding whitespace
/// trimmed, with the same permission rule as [`read_secret_key`]; an empty file is refused.
pub fn read_private_text(path: &Path) -> Result<String, KeyFileError> {
    let bytes = read_private(path)?;
    let text = String::from_utf8_lossy(&bytes).trim().to_string();
    if text.is_empty() {
        return Err(KeyFileError::ShortSecret { path: path.to_path_buf(), len: 0 });
    }
    Ok(text)
}

/// The whole content of a regular file only its owner may access, at most [`MAX_FILE_LEN`] bytes.
fn read_private(path: &Path) -> Result<Vec<u8>, KeyFileError> {
    let read_err = |source: io::Error| match source.kind() {
        io::ErrorKind::NotFound => KeyFileError::Missing(path.to_path_buf()),
        _ => KeyFileError::Read { path: path.to_path_buf(), source },
    };
    let file = File::open(path).map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    if !meta.is_file() {
        return Err(KeyFileError::NotAFile(path.to_path_buf()));
    }
    check_private(path, &meta)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_LEN + 1).read_to_end(&mut bytes).map_err(read_err)?;
    if bytes.len() as u64 > MAX_FILE_LEN {
        return Err(KeyFileError::TooLong(path.to_path_buf()));
    }
    Ok(bytes)
}

#[cfg(unix)]
fn check_private(path: &Path, meta: &std::fs::Metadata) -> Result<(), KeyFileError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::Exposed { path: path.to_path_buf(), mode });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path, _meta: &std::fs::Metadata) -> Result<(), KeyFileError> {
    Ok(())
}

/// What [`protect_stdout`] found standard output to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// A regular file (`punchd genkey > alice.key`): now mode 0600.
    PrivateFile,
    /// A terminal, a pipe or anything but a regular file: left as it is.
    NotAFile,
}

/// Before a secret is written to standard output: when it is a regular file, restricts it to its owner
/// (fchmod 0600), as a careful `wg genkey` user does with `umask 077`. An error means the file could not be
/// restricted, and the secret must not be written.
#[cfg(unix)]
pub fn protect_stdout() -> io::Result<Output> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::PermissionsExt;
    let file = File::from(io::stdout().as_fd().try_clone_to_owned()?);
    if !file.metadata()?.is_file() {
        return Ok(Output::NotAFile);
    }
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(Output::PrivateFile)
}

/// Windows has no mode bits: the output is left as it is (see the module docs).
#[cfg(not(unix))]
pub fn protect_stdout() -> io::Result<Output> {
    Ok(Output::NotAFile)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn file_with(dir: &Path, name: &str, content: &[u8], mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, content).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("holepunch-keyfile-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn reads_a_private_key_and_refuses_loose_modes() {
        let d = tempdir("key");
        let key = SecretKey::from_seed([3; 32]);
        let p = file_with(&d, "alice.key", format!("{}\n", key.to_base64()).as_bytes(), 0o600);
        assert_eq!(read_secret_key(&p).unwrap().public(), key.public());
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_secret_key(&p).unwrap_err().to_string();
        let shown = p.display();
        assert_eq!(e, format!("{shown} is readable by others (mode 0644); chmod 600 {shown}"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o620)).unwrap();
        assert!(read_secret_key(&p).unwrap_err().to_string().contains("is writable by others (mode 0620)"));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn missing_malformed_and_odd_files_are_one_line() {
        let d = tempdir("bad");
        let e = read_secret_key(&d.join("nope.key")).unwrap_err().to_string();
        assert!(e.ends_with("nope.key does not exist"), "{e}");
        let p = file_with(&d, "bad.key", b"hello\n", 0o600);
        let e = read_secret_key(&p).unwrap_err().to_string();
        assert!(e.contains("bad.key does not hold a key: "), "{e}");
        assert!(!e.contains('\n'));
        let e = read_secret_key(&d).unwrap_err().to_string();
        assert!(e.ends_with("is not a regular file"), "{e}");
        let big = file_with(&d, "big.key", &[b'A'; 5000], 0o600);
        assert!(read_secret_key(&big).unwrap_err().to_string().contains("longer than 4096 bytes"));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn network_secret_is_trimmed_text_or_raw_bytes() {
        let d = tempdir("secret");
        let p = file_with(&d, "net.secret", b"  correct horse battery staple\n", 0o600);
        // Compared through a derived key: the secret type has no `==` (it would not be constant-time).
        let name = crate::signal::PeerName::new("alice").unwrap();
        let same = |a: NetworkSecret, b: NetworkSecret| a.peer_key(&name) == b.peer_key(&name);
        assert!(same(read_network_secret(&p).unwrap(), NetworkSecret::new(b"correct horse battery staple".to_vec())));
        let raw: Vec<u8> = (0..32u8).map(|i| i.wrapping_mul(37) | 0x80).collect();
        let p = file_with(&d, "raw.secret", &raw, 0o400);
        assert!(same(read_network_secret(&p).unwrap(), NetworkSecret::new(raw.to_vec())));
        let p = file_with(&d, "short.secret", b"tooshort\n", 0o600);
        let e = read_network_secret(&p).unwrap_err().to_string();
        assert!(e.ends_with("short.secret holds 8 bytes; a network secret is at least 16"), "{e}");
        let p = file_with(&d, "open.secret", b"0123456789abcdef0123", 0o604);
        assert!(read_network_secret(&p).unwrap_err().to_string().contains("readable by others (mode 0604)"));
        assert!(!format!("{:?}", NetworkSecret::from_file_bytes(b"0123456789abcdef")).contains("0123"));
        let _ = std::fs::remove_dir_all(&d);
    }
}
