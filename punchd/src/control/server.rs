//! The control socket's listener (Unix): a thread that accepts at most [`MAX_CONNECTIONS`] clients at a time,
//! reads bounded lines with timeouts, answers `status` from the shared snapshot and passes `connect` to the
//! daemon loop.

use super::{Command, Request, Response, MAX_LINE};
use crate::status::Snapshot;
use anyhow::{bail, Context, Result};
use holepunch::signal::PeerName;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Most clients served at once; more get one error line and are closed.
pub const MAX_CONNECTIONS: usize = 4;
/// Most requests on one connection.
const MAX_REQUESTS: usize = 64;
/// A client silent this long is closed.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a `connect` waits for the daemon loop's answer.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the accept loop looks at the stop flag.
const ACCEPT_POLL: Duration = Duration::from_millis(50);

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
            .spawn(move || accept_loop(listener, snapshot, commands, flag))
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
        ErrorKind::AddrInUse => anyhow::anyhow!("control socket {shown} is in use (another punchd?)"),
        _ => anyhow::anyhow!("cannot create control socket {shown}: {e}"),
    })
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

fn accept_loop(listener: UnixListener, snapshot: Snapshot, commands: mpsc::Sender<Command>, stop: Arc<AtomicBool>) {
    let active = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((mut stream, _)) => {
                let me = euid();
                if let Some(uid) = peer_uid(&stream).filter(|&uid| uid != me && uid != 0) {
                    // Mode 0600 already keeps other users out; this holds even if someone loosens the mode.
                    log::warn!("control socket: refused a client of uid {uid}");
                    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
                    let _ = write_line(&mut stream, &Response::error("not this daemon's user"));
                    continue;
                }
                if active.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
                    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
                    let _ = write_line(&mut stream, &Response::error("too many control connections; try again"));
                    continue;
                }
                active.fetch_add(1, Ordering::Relaxed);
                let (snap, cmds, count) = (Arc::clone(&snapshot), commands.clone(), Arc::clone(&active));
                let spawned = thread::Builder::new().name("control-client".into()).spawn(move || {
                    if let Err(e) = serve(stream, &snap, &cmds) {
                        log::debug!("control client: {e}");
                    }
                    count.fetch_sub(1, Ordering::Relaxed);
                });
                if spawned.is_err() {
                    active.fetch_sub(1, Ordering::Relaxed);
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(ACCEPT_POLL),
            Err(e) => {
                log::warn!("control socket: {e}");
                thread::sleep(ACCEPT_POLL);
            }
        }
    }
}

/// One client: up to [`MAX_REQUESTS`] lines, each answered with one line.
fn serve(stream: UnixStream, snapshot: &Snapshot, commands: &mpsc::Sender<Command>) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    for _ in 0..MAX_REQUESTS {
        let mut line = Vec::new();
        let n = (&mut reader).take(MAX_LINE as u64).read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(());
        }
        if !line.ends_with(b"\n") && line.len() >= MAX_LINE {
            return write_line(&mut writer, &Response::error(format!("request longer than {MAX_LINE} bytes")));
        }
        write_line(&mut writer, &answer(&line, snapshot, commands))?;
    }
    Ok(())
}

fn write_line(w: &mut impl Write, response: &Response) -> std::io::Result<()> {
    let mut text = serde_json::to_string(response).map_err(std::io::Error::other)?;
    text.push('\n');
    w.write_all(text.as_bytes())
}

/// The answer to one request line.
pub(super) fn answer(line: &[u8], snapshot: &Snapshot, commands: &mpsc::Sender<Command>) -> Response {
    let request: Request = match serde_json::from_slice(line.trim_ascii()) {
        Ok(r) => r,
        Err(e) => return Response::error(format!("bad request: {e}")),
    };
    let status = || snapshot.lock().unwrap_or_else(|p| p.into_inner()).at(Instant::now());
    match request {
        Request::Status => Response::status(status()),
        Request::Connect { peer } => {
            let peer = match PeerName::new(&peer) {
                Ok(p) => p,
                Err(e) => return Response::error(format!("bad peer name: {e}")),
            };
            if !status().peers.iter().any(|p| p.name == peer.as_str()) {
                return Response::error(format!("{peer} is not a configured peer"));
            }
            let (reply, answer) = mpsc::sync_channel(1);
            if commands.send(Command::Connect { peer, reply }).is_err() {
                return Response::error("the daemon is not taking commands");
            }
            match answer.recv_timeout(COMMAND_TIMEOUT) {
                Ok(Ok(())) => Response::ok(),
                Ok(Err(text)) => Response::error(text),
                Err(_) => Response::error(format!("the daemon did not answer within {COMMAND_TIMEOUT:?}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{PeerStatus, Status};
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

    #[test]
    fn answers() {
        let snap: Snapshot = Arc::new(Mutex::new(Status {
            name: Some("alice".into()),
            peers: vec![PeerStatus::configured("bob".into(), "K".into())],
            ..Status::default()
        }));
        let (tx, rx) = mpsc::channel();
        let r = answer(b"{\"cmd\":\"status\"}\n", &snap, &tx);
        assert_eq!(r.status.unwrap().name.as_deref(), Some("alice"));
        assert!(answer(b"{\"cmd\":\"reboot\"}", &snap, &tx).error.unwrap().starts_with("bad request"));
        let e = answer(b"{\"cmd\":\"connect\",\"peer\":\"carol\"}", &snap, &tx).error.unwrap();
        assert_eq!(e, "carol is not a configured peer");
        let loop_side = thread::spawn(move || match rx.recv().unwrap() {
            Command::Connect { peer, reply } => reply.send(Err(format!("no route to {peer}"))).unwrap(),
            other => panic!("{other:?}"),
        });
        let e = answer(b"{\"cmd\":\"connect\",\"peer\":\"bob\"}", &snap, &tx).error.unwrap();
        assert_eq!(e, "no route to bob");
        loop_side.join().unwrap();
    }
}
