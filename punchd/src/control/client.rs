//! The control channel's client side (`punchd status`), shared by the Unix socket and the Windows named pipe:
//! one request, one answer line, bounded in size and time. Connecting, and deciding whether the other end can
//! be trusted, is the platform's (`unix.rs`, `pipe.rs`).

use super::{Request, Response};
use anyhow::{anyhow, bail, Context, Result};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::time::Duration;

/// Longest answer read: a status of every configured peer with all its pairs fits with a wide margin.
const MAX_ANSWER: u64 = 4 << 20;

/// Sends `request` to the daemon on `path` (a socket path, or a pipe name on Windows) and reads its answer.
pub fn request(path: &Path, request: &Request, timeout: Duration) -> Result<Response> {
    #[cfg(unix)]
    let stream = super::unix::connect(path, timeout)?;
    #[cfg(windows)]
    let stream = super::pipe::connect(path, timeout)?;
    exchange(&stream, request, &path.display().to_string())
}

/// One request line out, one answer line back.
fn exchange<S>(stream: &S, request: &Request, shown: &str) -> Result<Response>
where
    for<'a> &'a S: Read + Write,
{
    let mut line = serde_json::to_string(request).context("encoding the request")?;
    line.push('\n');
    let mut writer = stream;
    writer.write_all(line.as_bytes()).with_context(|| format!("writing to control channel {shown}"))?;
    let mut answer = Vec::new();
    BufReader::new(stream)
        .take(MAX_ANSWER)
        .read_until(b'\n', &mut answer)
        .map_err(|e| anyhow!("reading from control channel {shown}: {e}"))?;
    if answer.is_empty() {
        bail!("the daemon on {shown} closed the connection without an answer");
    }
    serde_json::from_slice(answer.trim_ascii()).map_err(|e| anyhow!("unreadable answer from {shown}: {e}"))
}
