//! The control channel's serving side, shared by the Unix socket (`unix.rs`) and the Windows named pipe
//! (`pipe.rs`): an accept loop that serves at most [`MAX_CONNECTIONS`] clients at a time, bounded request
//! lines, `status` answered from the shared snapshot and `connect` passed to the daemon loop. The platform
//! modules only accept connections (with read and write timeouts set) and say who may connect.

use super::{Command, Request, Response, MAX_LINE};
use crate::status::Snapshot;
use holepunch::signal::PeerName;
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

/// Most clients served at once; more get one error line and are closed.
pub const MAX_CONNECTIONS: usize = 4;
/// Most requests on one connection.
const MAX_REQUESTS: usize = 64;
/// A client silent this long is closed.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a `connect` waits for the daemon loop's answer.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the accept loop looks at the stop flag.
pub const ACCEPT_POLL: Duration = Duration::from_millis(50);

/// Runs until `stop`: `accept` returns a client ready to serve (its timeouts set), `None` when none came
/// within about [`ACCEPT_POLL`], or an error (logged, then retried after a pause).
pub fn accept_loop<S, A>(mut accept: A, snapshot: Snapshot, commands: mpsc::Sender<Command>, stop: Arc<AtomicBool>)
where
    A: FnMut() -> std::io::Result<Option<S>>,
    S: Send + 'static,
    for<'a> &'a S: Read + Write,
{
    let active = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::Relaxed) {
        let stream = match accept() {
            Ok(Some(s)) => s,
            Ok(None) => continue,
            Err(e) => {
                log::warn!("control: {e}");
                thread::sleep(ACCEPT_POLL);
                continue;
            }
        };
        if active.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
            let _ = write_line(&mut &stream, &Response::error("too many control connections; try again"));
            continue;
        }
        active.fetch_add(1, Ordering::Relaxed);
        let (snap, cmds, count) = (Arc::clone(&snapshot), commands.clone(), Arc::clone(&active));
        let spawned = thread::Builder::new().name("control-client".into()).spawn(move || {
            if let Err(e) = serve(&stream, &snap, &cmds) {
                log::debug!("control client: {e}");
            }
            count.fetch_sub(1, Ordering::Relaxed);
        });
        if spawned.is_err() {
            active.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// One client: up to [`MAX_REQUESTS`] lines, each answered with one line.
fn serve<S>(stream: &S, snapshot: &Snapshot, commands: &mpsc::Sender<Command>) -> std::io::Result<()>
where
    for<'a> &'a S: Read + Write,
{
    let mut writer = stream;
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

/// One answer line.
pub fn write_line(w: &mut impl Write, response: &Response) -> std::io::Result<()> {
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
