//! The punchd lab tests' shared pieces (docs/lab.md): stund with the rendezvous (`--secret-file`) on the lab's
//! server, punchd peers on lab hosts (each with its own port and control socket, so several peers can share a
//! host), and their status read over the control socket with a bounded wait.
//!
//! Log levels: stund and punchd log at `info`; `LAB_STUND_LOG` and `LAB_PUNCHD_LOG` (env_logger filters, e.g.
//! `holepunch::signal=debug,info`) change them when a run needs looking into.

use super::{stund_bin, Scratch, PUNCHD};
use holepunch::identity::{PublicKey, SecretKey};
use holepunch_lab::{Lab, Process};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The network secret of every lab world (stund and the peers).
pub const SECRET: &[u8] = b"the lab's network secret\n";

/// A lab with stund serving STUN (RFC 5780, both server addresses) and the rendezvous on its server.
pub struct World {
    pub lab: Lab,
    pub dir: Scratch,
    /// The rendezvous address the peers use (`--server`).
    pub server: String,
    stund: Option<Process>,
    stund_extra: String,
}

impl World {
    /// Starts stund on `lab`'s server with `stund_extra` flags added, and waits until it is ready.
    pub fn new(lab: Lab, tag: &str, stund_extra: &str) -> World {
        let dir = Scratch::new(&format!("lab-{tag}"));
        dir.private("net.secret", SECRET);
        let (primary, _) = lab.server_ips();
        let mut w =
            World { lab, dir, server: format!("{primary}:3478"), stund: None, stund_extra: stund_extra.to_string() };
        w.start_stund();
        w
    }

    /// The network secret file.
    pub fn secret_file(&self) -> PathBuf {
        self.dir.0.join("net.secret")
    }

    /// (Re)starts stund on the same addresses; its registry starts empty.
    pub fn start_stund(&mut self) {
        let (primary, alternate) = self.lab.server_ips();
        let mut cmd = self.lab.server().command("sh");
        cmd.arg("-c").arg(format!(
            "exec {} --primary {primary} --alternate {alternate} --no-tcp --rate-limit 0 --threads 1 \
             --stats-interval 0 --log-level {} --secret-file {} {} 2>&1",
            stund_bin().display(),
            std::env::var("LAB_STUND_LOG").unwrap_or_else(|_| "info".into()),
            self.secret_file().display(),
            self.stund_extra,
        ));
        let mut p = self.lab.server().spawn_command(cmd).expect("start stund");
        p.wait_for_line(Duration::from_secs(10), |l| l.contains("ready")).expect("stund ready");
        self.stund = Some(p);
    }

    /// Stops stund (SIGKILL: nothing is said to the peers).
    pub fn stop_stund(&mut self) {
        if let Some(mut p) = self.stund.take() {
            p.kill();
        }
    }

    /// What stund printed since the last call.
    pub fn stund_logs(&mut self) -> String {
        self.stund.as_mut().map(|p| p.drain_lines().join("\n")).unwrap_or_default()
    }

    /// The control socket of peer `name` (a path: reachable from outside the namespaces).
    pub fn control(&self, name: &str) -> PathBuf {
        self.dir.0.join(format!("{name}.sock"))
    }

    /// punchd `name` on lab host `host` with the world's secret (see [`World::punchd_with`]).
    pub fn punchd(
        &self,
        host: &str,
        name: &str,
        me: &SecretKey,
        port: u16,
        peer: (&str, &PublicKey),
        extra: &str,
    ) -> Peer {
        self.punchd_with(host, name, me, port, peer, &self.secret_file(), extra)
    }

    /// punchd `name` on lab host `host`, punching socket `port`, accepting `peer`, keepalive 1 s, with `extra`
    /// flags; its stdout and stderr as lines. Without the tunnel unless `extra` gives a tunnel flag (`--tun-name`, `--tun-ip`).
    #[allow(clippy::too_many_arguments)]
    pub fn punchd_with(
        &self,
        host: &str,
        name: &str,
        me: &SecretKey,
        port: u16,
        peer: (&str, &PublicKey),
        secret: &Path,
        extra: &str,
    ) -> Peer {
        let key = self.dir.private(&format!("{name}.key"), format!("{}\n", me.to_base64()).as_bytes());
        let control = self.control(name);
        let no_tun = if extra.contains("--tun-") { "" } else { "--no-tun" };
        let mut cmd = self.lab.host(host).command("sh");
        cmd.env("RUST_LOG", std::env::var("LAB_PUNCHD_LOG").unwrap_or_else(|_| "info".into())).arg("-c").arg(format!(
            "exec {PUNCHD} --peer-id {name} --server {} --port {port} --key {} --secret-file {} --peer {}={} \
             --control {} --keepalive 1s {no_tun} {extra} 2>&1",
            self.server,
            key.display(),
            secret.display(),
            peer.0,
            peer.1.to_base64(),
            control.display(),
        ));
        let proc = self.lab.host(host).spawn_command(cmd).expect("start punchd");
        Peer { name: name.to_string(), control, proc, log: Vec::new() }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.stop_stund();
    }
}

/// A running punchd peer.
pub struct Peer {
    pub name: String,
    pub control: PathBuf,
    pub proc: Process,
    /// Every stdout/stderr line seen so far (see [`Peer::pump`]).
    pub log: Vec<String>,
}

impl Peer {
    /// Takes the lines printed since the last call into `log`.
    pub fn pump(&mut self) {
        self.log.extend(self.proc.drain_lines());
    }

    /// The first line seen that starts with `prefix`.
    pub fn line(&self, prefix: &str) -> Option<&str> {
        self.log.iter().find(|l| l.starts_with(prefix)).map(String::as_str)
    }

    /// The log so far, for failure messages.
    pub fn logs(&mut self) -> String {
        self.pump();
        format!("--- {} ---\n{}", self.name, self.log.join("\n"))
    }

    /// One request on the control socket (the protocol `punchd status` speaks, docs/punchd.md "Protocol"),
    /// without starting a process: the matrix polls dozens of peers every few tens of milliseconds.
    pub fn request(&self, line: &str) -> Option<Value> {
        request(&self.control, line)
    }

    /// The STATUS object (docs/punchd.md, "STATUS schema"), over the control socket.
    pub fn status(&self) -> Option<Value> {
        self.request(r#"{"cmd":"status"}"#).filter(|v| v["ok"] == true).map(|v| v["status"].clone())
    }

    /// The STATUS object as `punchd status --json` prints it.
    pub fn status_cli(&self) -> Option<Value> {
        Peer::status_cli_at(&self.control)
    }

    /// `punchd status --json --control CONTROL`.
    pub fn status_cli_at(control: &Path) -> Option<Value> {
        let path = control.to_str()?;
        let out = Command::new(PUNCHD).args(["status", "--json", "--control", path]).output().ok()?;
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Asks the daemon to connect to `peer` now (`{"cmd":"connect"}`).
    pub fn connect(&self, peer: &str) -> Value {
        self.request(&format!(r#"{{"cmd":"connect","peer":"{peer}"}}"#)).unwrap_or(Value::Null)
    }

    /// Polls the status every 50 ms until `done` holds, at most `limit`; the status that satisfied it, or the
    /// last one seen.
    pub fn wait_status(&mut self, limit: Duration, done: impl Fn(&Value) -> bool) -> Result<Value, String> {
        let deadline = Instant::now() + limit;
        let mut last = None;
        loop {
            if let Some(v) = self.status() {
                if done(&v) {
                    return Ok(v);
                }
                last = Some(v);
            }
            if Instant::now() >= deadline {
                let logs = self.logs();
                return Err(format!("{}: not within {limit:?}; last status {last:?}\n{logs}", self.name));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// One request line on the control socket at `control`, its answer (None: no daemon, or no JSON answer).
pub fn request(control: &Path, line: &str) -> Option<Value> {
    let mut s = UnixStream::connect(control).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(format!("{line}\n").as_bytes()).ok()?;
    let mut answer = String::new();
    BufReader::new(s).read_line(&mut answer).ok()?;
    serde_json::from_str(&answer).ok()
}

/// The (only) configured peer's entry in a STATUS object.
pub fn first_peer(status: &Value) -> &Value {
    &status["peers"][0]
}

/// The configured peer's path (`direct`, `lan`, `relay`, `none`).
pub fn path(status: &Value) -> &str {
    first_peer(status)["path"].as_str().unwrap_or("")
}
