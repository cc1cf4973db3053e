//! The ceiling of the rig: a bare batched UDP echo loop. It does what any UDP server on this kernel must do
//! at least (one recvmmsg and one sendmmsg per batch, per thread) and nothing else, so a STUN server's
//! requests/s divided by this loop's is the share of the machine its own work leaves on the table.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use holepunch::io::batch::{self, RecvBatch, Wait};

use crate::sys;

/// Datagrams larger than this are echoed truncated; the rig only sends 20-byte requests.
const BUF_SIZE: usize = 2048;
/// How often a blocked thread wakes to look at the stop flag and its deadline.
const WAKE: Duration = Duration::from_millis(100);

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe. No SA_RESTART, so a
        // blocked recvmmsg returns EINTR at once.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

pub struct EchoConfig {
    pub bind: SocketAddr,
    pub threads: usize,
    pub batch: usize,
    pub max_time: Duration,
}

/// Datagrams echoed and recvmmsg calls that returned some.
fn serve(sock: UdpSocket, batch: usize, deadline: Instant) -> Result<(u64, u64)> {
    let mut rb = RecvBatch::new(batch, BUF_SIZE);
    let cap = rb.capacity();
    let mut echoed = 0u64;
    let mut batches = 0u64;
    while !STOP.load(Ordering::Relaxed) && Instant::now() < deadline {
        // MSG_WAITFORONE: block for the first datagram, then take whatever else is already queued.
        let n = match rb.recv(&sock, cap, Wait::ForFirst) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted) => continue,
            Err(e) if batch::is_transient(&e) => continue,
            Err(e) => return Err(e).context("recvmmsg"),
        };
        batches += 1;
        echoed += rb.echo_back(&sock, n).context("sendmmsg")? as u64;
    }
    Ok((echoed, batches))
}

pub fn run(cfg: &EchoConfig) -> Result<()> {
    sys::require_loopback(cfg.bind, "bind address")?;
    install_signal_handlers();
    let reuse = cfg.threads > 1;
    let first = sys::bind_udp(cfg.bind, reuse, Some(WAKE)).with_context(|| format!("binding {}", cfg.bind))?;
    // With port 0 the kernel picks one; every other thread joins that same port.
    let addr = first.local_addr()?;
    let mut socks = vec![first];
    for _ in 1..cfg.threads {
        socks.push(sys::bind_udp(addr, true, Some(WAKE)).with_context(|| format!("binding {addr}"))?);
    }
    println!("stunload echo: listening on {addr}, {} thread(s), batch {}", cfg.threads, cfg.batch);
    let deadline = Instant::now() + cfg.max_time;
    let results: Vec<Result<(u64, u64)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = socks.into_iter().map(|s| scope.spawn(move || serve(s, cfg.batch, deadline))).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("an echo thread panicked"))))
            .collect()
    });
    let (mut total, mut batches) = (0, 0);
    for r in results {
        let (n, b) = r?;
        total += n;
        batches += b;
    }
    // A mean batch near the maximum means the echo loop was the bottleneck; near 1, its clients were.
    println!(
        "stunload echo: stopped after echoing {total} datagrams in {batches} batches (mean {:.1})",
        total as f64 / batches.max(1) as f64
    );
    Ok(())
}
