//! `punchd genkey` and `punchd pubkey`: a peer's X25519 key pair in WireGuard's text form, so `wg pubkey`
//! reads our secret keys and we read `wg genkey`'s (src/identity.rs).

use anyhow::{anyhow, bail, Context, Result};
use holepunch::identity::SecretKey;
use holepunch::io::keyfile::{protect_stdout, Output, MAX_FILE_LEN};
use std::io::{Read, Write};

/// Prints a new secret key. When standard output is a regular file (`punchd genkey > alice.key`) it is made
/// mode 0600 before the key is written; if that fails, nothing is written.
pub fn genkey() -> Result<()> {
    match protect_stdout() {
        Ok(Output::PrivateFile | Output::NotAFile) => {}
        Err(e) => bail!("cannot restrict the output file to its owner (chmod 600): {e}; no key written"),
    }
    let key = SecretKey::from_seed(holepunch::io::os_seed()?);
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", key.to_base64()).and_then(|()| out.flush()).context("writing the key")?;
    Ok(())
}

/// Reads a secret key on standard input and prints its public key.
pub fn pubkey() -> Result<()> {
    let mut text = Vec::new();
    std::io::stdin()
        .lock()
        .take(MAX_FILE_LEN + 1)
        .read_to_end(&mut text)
        .context("reading the secret key from standard input")?;
    if text.len() as u64 > MAX_FILE_LEN {
        bail!("standard input is longer than {MAX_FILE_LEN} bytes: not a key");
    }
    let text = std::str::from_utf8(&text).map_err(|_| anyhow!("standard input is not a key: not text"))?;
    let key = SecretKey::from_base64(text).map_err(|e| anyhow!("standard input is not a key: {e}"))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", key.public()).and_then(|()| out.flush()).context("writing the public key")?;
    Ok(())
}
