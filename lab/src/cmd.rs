//! Running helper programs (`ip`, `nft`, `conntrack`) and processes inside namespaces.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Renders a command line for error messages and logs.
pub(crate) fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` to completion and returns its output; a non-zero exit is an error carrying stderr.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let line = describe(cmd);
    log::debug!(target: "lab::cmd", "{line}");
    let out = cmd.stdin(Stdio::null()).output().map_err(|source| Error::Spawn { cmd: line.clone(), source })?;
    if !out.status.success() {
        return Err(Error::Command {
            cmd: line,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(out)
}

/// Runs `program args...` and returns its stdout as text.
pub fn run_args(program: &str, args: &[&str]) -> Result<String> {
    let out = run(Command::new(program).args(args))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Feeds `input` to `program args...` on stdin (used for `nft -f -`).
pub fn run_with_stdin(program: &str, args: &[&str], input: &str) -> Result<String> {
    use std::io::Write;
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let line = describe(&cmd);
    log::debug!(target: "lab::cmd", "{line} <<< {} bytes", input.len());
    let mut child = cmd.spawn().map_err(|source| Error::Spawn { cmd: line.clone(), source })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(Error::Command {
            cmd: line,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A process started inside a namespace. Killed (SIGKILL) and reaped when dropped, so a failing test
/// leaves nothing running.
pub struct Process {
    child: Child,
    name: String,
    lines: Option<Receiver<String>>,
    seen: Vec<String>,
}

impl Process {
    pub(crate) fn spawn(mut cmd: Command, capture_stdout: bool) -> Result<Process> {
        let name = describe(&cmd);
        cmd.stdin(Stdio::null());
        if capture_stdout {
            cmd.stdout(Stdio::piped());
        }
        log::debug!(target: "lab::cmd", "spawn {name}");
        let mut child = cmd.spawn().map_err(|source| Error::Spawn { cmd: name.clone(), source })?;
        let lines = child.stdout.take().map(|out| {
            let (tx, rx) = mpsc::channel();
            // A reader thread so callers can wait for a line with a deadline; it ends at EOF,
            // which comes at the latest when the process is killed.
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            rx
        });
        Ok(Process { child, name, lines, seen: Vec::new() })
    }

    /// The process id (the program itself: `ip netns exec` execs it in place).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Waits until the process prints a line on stdout for which `pred` holds, and returns it.
    /// Needs the process to have been spawned with captured stdout.
    pub fn wait_for_line(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Result<String> {
        let deadline = Instant::now() + timeout;
        let Some(rx) = &self.lines else {
            return Err(Error::Config(format!("stdout of `{}` is not captured", self.name)));
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return Ok(line);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(Error::Timeout {
                        what: format!("a line from `{}`", self.name),
                        ms: timeout.as_millis(),
                    })
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(Error::Command {
                        cmd: self.name.clone(),
                        status: "exited".into(),
                        stderr: "stdout closed before the expected line".into(),
                    })
                }
            }
        }
    }

    /// Lines printed so far that are not yet consumed, without waiting.
    pub fn drain_lines(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(rx) = &self.lines {
            while let Ok(line) = rx.try_recv() {
                self.seen.push(line.clone());
                out.push(line);
            }
        }
        out
    }

    /// Lines not yet consumed, up to the end of stdout (waiting at most `timeout` for it): after the process
    /// has exited its reader thread may still be passing on the last lines, which `drain_lines` would miss.
    pub fn lines_until_eof(&mut self, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        if let Some(rx) = &self.lines {
            while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                self.seen.push(line.clone());
                out.push(line);
            }
        }
        out
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills the process and waits for it.
    pub fn kill(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }

    /// Asks the process to stop (SIGTERM) so it can clean up after itself; kills it (SIGKILL) when it has not
    /// ended within `grace`.
    pub fn terminate(&mut self, grace: Duration) {
        if let Ok(None) = self.child.try_wait() {
            if let Ok(pid) = i32::try_from(self.child.id()) {
                // SAFETY: kill(2) on our own child, which is not reaped yet, so the pid is still ours.
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if !matches!(self.child.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        self.kill();
    }

    /// The underlying child, e.g. to wait for a normal exit.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process").field("pid", &self.child.id()).field("cmd", &self.name).finish()
    }
}

/// Waits (bounded) until the file `log` holds a line containing `word` (a process started with its output in a
/// file); the error names the word and shows the log's last lines.
pub fn wait_for_log(log: &std::path::Path, word: &str, limit: Duration) -> std::result::Result<(), String> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if std::fs::read_to_string(log).is_ok_and(|s| s.contains(word)) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("no `{word}` within {limit:?}; its log:\n{}", tail(log)))
}

/// The last 15 lines of a log file (empty when it cannot be read).
pub fn tail(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}
