//! The control channel on Unix: a Unix domain socket of mode 0600 in a 0700 directory, each client's user
//! checked (Linux SO_PEERCRED); the client refuses a socket another user owns. Serving is shared
//! (`serve.rs`).

use super::serve::{self, ACCEPT_POLL, READ_TIMEOUT, WRITE_TIMEOUT};
use super::{Command, Response};
use crate::status::Snapshot;
use anyhow::{anyhow, bail, Context, Result};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// A running control socket. Dropping it stops the thread and removes the socket file (if it is still ours).
pub struct ControlServer {
    path: PathBuf,
    /// Device and inode of the socket we bound: the file removed on exit must be that one.
    id: (u64, u64),
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ControlServer {
    /// Binds `path` (mode 0600) after removing a stale socket there, and starts serving. Refuses when a live
    /// daemon answers on it, or when the path is not a socket or belongs to another user.
    pub fn start(path: &Path, snapshot: Snapshot, commands: mpsc::Sender<Command>) -> Result<ControlServer> {
        let listener = claim(path)?;
        let meta = std::fs::symlink_metadata(path).with_context(|| format!("control socket {}", path.display()))?;
        listener.set_nonblocking(true).context("control socket")?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::Builder::new()
            .name("control".into())
            .spawn(move || serve::accept_loop(move || accept(&listener), snapshot, commands, flag))
            .context("starting the control thread")?;
        log::info!("control socket {}", path.display());
        Ok(ControlServer { path: path.to_path_buf(), id: (meta.dev(), meta.ino()), stop, thread: Some(thread) })
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // Another daemon may have replaced a socket we lost track of: remove only the file we bound.
        if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
            if (meta.dev(), meta.ino()) == self.id {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// The next client of our own user, blocking with timeouts; `None` when none is waiting.
fn accept(listener: &UnixListener) -> std::io::Result<Option<UnixStream>> {
    let mut stream = match listener.accept() {
        Ok((s, _)) => s,
        Err(e) if e.kind() == ErrorKind::WouldBlock => {
            thread::sleep(ACCEPT_POLL);
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let me = euid();
    if let Some(uid) = peer_uid(&stream).filter(|&uid| uid != me && uid != 0) {
        // Mode 0600 already keeps other users out; this holds even if someone loosens the mode.
        log::warn!("control socket: refused a client of uid {uid}");
        let _ = serve::write_line(&mut stream, &Response::error("not this daemon's user"));
        return Ok(None);
    }
    Ok(Some(stream))
}

/// The listening socket at `path`, created with mode 0600.
fn claim(path: &Path) -> Result<UnixListener> {
    let shown = path.display();
    match std::fs::symlink_metadata(path) {
        Ok(meta) => {
            if !meta.file_type().is_socket() {
                bail!("{shown} exists and is not a socket; refusing to replace it (choose --control)");
            }
            let me = euid();
            if meta.uid() != me {
                bail!("control socket {shown} belongs to uid {}, not to uid {me}; refusing to use it", meta.uid());
            }
            match UnixStream::connect(path) {
                Ok(_) => bail!("another punchd is running on control socket {shown}"),
                Err(e) if matches!(e.kind(), ErrorKind::ConnectionRefused | ErrorKind::NotFound) => {
                    log::info!("removing stale control socket {shown}");
                    std::fs::remove_file(path).with_context(|| format!("removing stale control socket {shown}"))?;
                }
                Err(e) => bail!("control socket {shown}: {e}"),
            }
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => bail!("control socket {shown}: {e}"),
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    // The socket file takes its mode from the umask at bind(2): 0177 leaves 0600, with no moment at which
    // another user could connect. The umask is process-wide; the daemon binds before it starts any thread
    // that creates files.
    // SAFETY: umask has no preconditions and cannot fail.
    let old = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    bound.map_err(|e| match e.kind() {
        ErrorKind::AddrInUse => anyhow!("control socket {shown} is in use (another punchd?)"),
        _ => anyhow!("cannot create control socket {shown}: {e}"),
    })
}

/// The client's connection to the daemon on `path`, with `timeout` on reads and writes. Refuses a socket
/// another user owns: in a shared directory such as /tmp it could be planted to answer in the daemon's place.
pub fn connect(path: &Path, timeout: Duration) -> Result<UnixStream> {
    let shown = path.display();
    let meta = std::fs::symlink_metadata(path).map_err(|e| match e.kind() {
        ErrorKind::NotFound => anyhow!("no punchd is running with control socket {shown} (no such socket)"),
        _ => anyhow!("control socket {shown}: {e}"),
    })?;
    if !meta.file_type().is_socket() {
        bail!("{shown} is not a socket");
    }
    let me = euid();
    if meta.uid() != me && me != 0 {
        bail!("control socket {shown} belongs to uid {}, not to you; refusing to trust it", meta.uid());
    }
    let stream = UnixStream::connect(path).map_err(|e| match e.kind() {
        ErrorKind::ConnectionRefused => anyhow!("no punchd is running with control socket {shown} (stale socket)"),
        ErrorKind::PermissionDenied => anyhow!("not allowed to use control socket {shown} (another user's daemon?)"),
        _ => anyhow!("cannot connect to control socket {shown}: {e}"),
    })?;
    stream.set_read_timeout(Some(timeout)).context("control socket")?;
    stream.set_write_timeout(Some(timeout)).context("control socket")?;
    Ok(stream)
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The user id of the process at the other end (Linux SO_PEERCRED); `None` where unknown.
#[cfg(target_os = "linux")]
fn peer_uid(stream: &UnixStream) -> Option<u32> {
    use std::os::fd::AsRawFd;
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the size `len` says, and the descriptor is open for
    // the duration of the call.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(cred.uid)
}

#[cfg(not(target_os = "linux"))]
fn peer_uid(_stream: &UnixStream) -> Option<u32> {
    None
}

#[cfg(test)]
mod tests {
    use super::super::serve::MAX_CONNECTIONS;
    use super::*;
    use crate::status::Status;
    use std::io::{BufRead, BufReader, Write};
    use std::sync::Mutex;

    #[cfg(target_os = "linux")]
    #[test]
    fn peer_credentials_name_our_user() {
        let (a, _b) = UnixStream::pair().unwrap();
        assert_eq!(peer_uid(&a), Some(euid()));
    }

    /// Clients beyond the bound get one error line; those within it are served; the socket is 0600 and is
    /// gone after the server is dropped.
    #[test]
    fn connections_are_bounded() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("punchd-control-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("sub").join("t.sock");
        let snap: Snapshot = Arc::new(Mutex::new(Status::default()));
        let (tx, _rx) = mpsc::channel();
        let server = ControlServer::start(&path, snap, tx).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
        let read_line = |s: &UnixStream| {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut line = String::new();
            BufReader::new(s).read_line(&mut line).unwrap();
            serde_json::from_str::<Response>(&line).unwrap()
        };
        let idle: Vec<UnixStream> = (0..MAX_CONNECTIONS).map(|_| UnixStream::connect(&path).unwrap()).collect();
        // The accept loop takes connections in order: the idle ones are counted before this one.
        let extra = UnixStream::connect(&path).unwrap();
        assert_eq!(read_line(&extra).error.as_deref(), Some("too many control connections; try again"));
        let mut first = &idle[0];
        first.write_all(b"{\"cmd\":\"status\"}\n").unwrap();
        assert!(read_line(first).ok);
        drop(server);
        assert!(std::fs::symlink_metadata(&path).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
