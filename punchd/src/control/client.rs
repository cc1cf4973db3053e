//! The control socket's client side (Unix): one request, one answer line, bounded in size and time.

use super::{Request, Response};
use anyhow::{anyhow, bail, Context, Result};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Longest answer read: a status of every configured peer with all its pairs fits with a wide margin.
const MAX_ANSWER: u64 = 4 << 20;

/// Sends `request` to the daemon on `path` and reads its answer. Refuses a socket another user owns: in a
/// shared directory such as /tmp it could be planted to answer in the daemon's place.
pub fn request(path: &Path, request: &Request, timeout: Duration) -> Result<Response> {
    let shown = path.display();
    let meta = std::fs::symlink_metadata(path).map_err(|e| match e.kind() {
        ErrorKind::NotFound => anyhow!("no punchd is running with control socket {shown} (no such socket)"),
        _ => anyhow!("control socket {shown}: {e}"),
    })?;
    if !meta.file_type().is_socket() {
        bail!("{shown} is not a socket");
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me && me != 0 {
        bail!("control socket {shown} belongs to uid {}, not to you; refusing to trust it", meta.uid());
    }
    let mut stream = UnixStream::connect(path).map_err(|e| match e.kind() {
        ErrorKind::ConnectionRefused => anyhow!("no punchd is running with control socket {shown} (stale socket)"),
        ErrorKind::PermissionDenied => anyhow!("not allowed to use control socket {shown} (another user's daemon?)"),
        _ => anyhow!("cannot connect to control socket {shown}: {e}"),
    })?;
    stream.set_read_timeout(Some(timeout)).context("control socket")?;
    stream.set_write_timeout(Some(timeout)).context("control socket")?;
    let mut line = serde_json::to_string(request).context("encoding the request")?;
    line.push('\n');
    stream.write_all(line.as_bytes()).with_context(|| format!("writing to control socket {shown}"))?;
    let mut answer = Vec::new();
    BufReader::new(stream)
        .take(MAX_ANSWER)
        .read_until(b'\n', &mut answer)
        .map_err(|e| anyhow!("reading from control socket {shown}: {e}"))?;
    if answer.is_empty() {
        bail!("the daemon on {shown} closed the connection without an answer");
    }
    serde_json::from_slice(answer.trim_ascii()).map_err(|e| anyhow!("unreadable answer from {shown}: {e}"))
}
