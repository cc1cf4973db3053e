//! Shared bits of the lab self-tests.
#![allow(dead_code)]

use std::net::{SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use holepunch_lab::Node;

/// The `holepunch-lab` binary: the independent probe runs as `holepunch-lab probe …` in namespaces.
pub fn probe_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_holepunch-lab"))
}

/// Parses `ok mapped=… from=…` / `timeout` lines of `probe query`.
pub fn answered(line: &str) -> bool {
    line.starts_with("ok ")
}

/// `probe send`: `count` datagrams from `bind` (an address of `node`) to `to`; panics when the probe fails.
pub fn probe_send(node: &Node, bind: &str, to: &str, count: u32) {
    let count = count.to_string();
    node.run(&[probe_bin().to_str().unwrap(), "probe", "send", "--bind", bind, "--to", to, "--count", &count])
        .unwrap_or_else(|e| panic!("probe send {bind} -> {to}: {e}"));
}

/// Runs `args` to completion and returns its stdout; panics with its stderr when it fails.
pub fn run(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("cannot run {}: {e}", args[0]));
    assert!(out.status.success(), "`{}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace of the tests that build their own topology, deleted on drop (also while a failing
/// test unwinds).
pub struct Netns(pub String);

impl Netns {
    /// Adds `<prefix>-<pid>-<n>-<role>`; nothing is configured in it yet (not even `lo`).
    pub fn add(prefix: &str, role: &str) -> Netns {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!("{prefix}-{}-{}-{role}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        run(&["ip", "netns", "add", &name]);
        Netns(name)
    }

    /// Runs `args` inside the namespace; returns stdout.
    pub fn exec(&self, args: &[&str]) -> String {
        let mut all = vec!["ip", "netns", "exec", &self.0];
        all.extend_from_slice(args);
        run(&all)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Opens a UDP socket inside namespace `ns` (the socket stays there; the calling thread does not move).
pub fn udp_in(ns: &str, addr: SocketAddrV4) -> UdpSocket {
    let path = format!("/run/netns/{ns}");
    std::thread::scope(|s| {
        s.spawn(|| {
            let f = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // SAFETY: plain syscall on a valid descriptor; only this scoped thread changes namespace.
            assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
            UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind {addr} in {ns}: {e}"))
        })
        .join()
        .expect("socket thread panicked")
    })
}
