//! The load generator: per socket a fixed window of Binding requests in flight, refilled as answers come
//! back, batched with recvmmsg/sendmmsg. Every slot of the window owns its request bytes and send time,
//! and the slot index is carried in the low bits of the transaction id, so matching an answer is an
//! array lookup plus a 12-byte compare: no allocation and no hashing per request.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use holepunch::io::batch::{self, RecvBatch, SendBatch, Wait};

use crate::hist::Histogram;
use crate::sys;
use crate::wire::{self, Rng, Verdict, HEADER_LEN};

/// Largest answer we read; anything bigger is truncated by the kernel and counted invalid.
const RECV_SIZE: usize = 1500;

#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub target: SocketAddr,
    pub sockets: usize,
    pub inflight: usize,
    pub threads: usize,
    pub batch: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// Stop once this many answers were counted in the measured phase (all threads together).
    pub count: Option<u64>,
    pub timeout: Duration,
    pub check: bool,
    pub accept_echo: bool,
    /// Sleep in poll(2) when no socket has anything, instead of spinning.
    pub block: bool,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Counters {
    pub sent: u64,
    /// Valid answers: STUN success responses, plus echoed requests under --accept-echo.
    pub completed: u64,
    /// Of `completed`, how many were our request echoed back.
    pub echoed: u64,
    pub timeouts: u64,
    /// Answers for a request that had already timed out and been replaced.
    pub stale: u64,
    pub invalid: u64,
    pub error_responses: u64,
    pub check_failed: u64,
    /// ICMP port unreachable reported on the socket: nobody listens on the target.
    pub refused: u64,
}

impl Counters {
    fn add(&mut self, o: &Counters) {
        self.sent += o.sent;
        self.completed += o.completed;
        self.echoed += o.echoed;
        self.timeouts += o.timeouts;
        self.stale += o.stale;
        self.invalid += o.invalid;
        self.error_responses += o.error_responses;
        self.check_failed += o.check_failed;
        self.refused += o.refused;
    }
}

pub struct Report {
    pub counters: Counters,
    pub hist: Histogram,
    /// Mean measured wall time of the threads.
    pub elapsed: Duration,
    /// Sum over threads of their answers per second in their measured window.
    pub rps: f64,
    /// Valid answers over the whole run, warm-up included.
    pub total_completed: u64,
}

#[derive(Clone, Copy)]
struct Slot {
    req: [u8; HEADER_LEN],
    sent_ns: u64,
    in_flight: bool,
}

struct Sock {
    sock: UdpSocket,
    local: SocketAddr,
    slots: Vec<Slot>,
    /// Slots whose request is ready but not yet accepted by the kernel, in order.
    pending: Vec<u16>,
    mask: u16,
    recv: RecvBatch,
    send: SendBatch,
}

impl Sock {
    fn open(target: SocketAddr, inflight: usize, batch: usize) -> Result<Sock> {
        let bind: SocketAddr = match target.ip() {
            IpAddr::V4(_) => (Ipv4Addr::LOCALHOST, 0).into(),
            IpAddr::V6(_) => (Ipv6Addr::LOCALHOST, 0).into(),
        };
        let sock = sys::bind_udp(bind, false, None).with_context(|| format!("binding a UDP socket on {bind}"))?;
        // Connected: the kernel filters out datagrams from anyone but the target, and reports ICMP errors.
        sock.connect(target).with_context(|| format!("connecting a UDP socket to {target}"))?;
        sock.set_nonblocking(true)?;
        let local = sock.local_addr()?;
        let window = inflight.next_power_of_two();
        Ok(Sock {
            sock,
            local,
            slots: vec![Slot { req: [0; HEADER_LEN], sent_ns: 0, in_flight: false }; inflight],
            pending: Vec::with_capacity(inflight),
            mask: (window - 1) as u16,
            recv: RecvBatch::new(batch, RECV_SIZE),
            send: SendBatch::new(batch, HEADER_LEN),
        })
    }

    /// Gives slot `i` a fresh random transaction id and queues it for sending.
    fn arm(&mut self, i: usize, rng: &mut Rng) {
        let a = rng.next_u64().to_ne_bytes();
        let b = rng.next_u64().to_ne_bytes();
        let mut tid = [0u8; 12];
        tid[2..10].copy_from_slice(&a);
        tid[10..12].copy_from_slice(&b[..2]);
        // Low bits of the first two bytes name the slot; the rest of the id is random.
        let head = (u16::from_ne_bytes([b[2], b[3]]) & !self.mask) | i as u16;
        tid[0..2].copy_from_slice(&head.to_be_bytes());
        let slot = &mut self.slots[i];
        wire::write_binding_request(&mut slot.req, &tid);
        slot.in_flight = false;
        self.pending.push(i as u16);
    }

    /// Hands queued requests to the kernel, a batch at a time, stamping each with `now_ns`.
    fn flush(&mut self, now_ns: u64, c: &mut Counters) -> Result<()> {
        while !self.pending.is_empty() {
            let n = self.pending.len().min(self.send.capacity());
            // Copying the 20-byte requests into the batch's slots costs less than a system call.
            self.send.clear();
            for &i in &self.pending[..n] {
                self.send.push_copy(&self.slots[usize::from(i)].req, None);
            }
            match self.send.send_from(&self.sock, 0) {
                Ok(sent) => {
                    for &i in &self.pending[..sent] {
                        let s = &mut self.slots[usize::from(i)];
                        s.in_flight = true;
                        s.sent_ns = now_ns;
                    }
                    c.sent += sent as u64;
                    self.pending.drain(..sent);
                    if sent < n {
                        return Ok(()); // the queue is full: try again next round
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
                    c.refused += 1;
                    return Ok(());
                }
                Err(e) if batch::is_transient(&e) || e.kind() == io::ErrorKind::Interrupted => return Ok(()),
                Err(e) => return Err(e).with_context(|| format!("sendmmsg from {}", self.local)),
            }
        }
        Ok(())
    }
}

struct Thread<'a> {
    cfg: &'a LoadConfig,
    socks: Vec<Sock>,
    rng: Rng,
    base: Instant,
    counters: Counters,
    hist: Histogram,
    total_completed: u64,
    /// While false the run is still warming up; answers are counted and then discarded.
    measuring: bool,
}

impl Thread<'_> {
    fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    /// Handles one received datagram on socket `si` at `now_ns`.
    fn answer(&mut self, si: usize, k: usize, now_ns: u64) {
        let s = &mut self.socks[si];
        let d = s.recv.get(k);
        let (msg, truncated) = (d.data, d.truncated);
        let verdict = if truncated { Verdict::Invalid } else { wire::classify(msg) };
        let verdict = match verdict {
            Verdict::Echo if !self.cfg.accept_echo => Verdict::Invalid,
            v => v,
        };
        if verdict == Verdict::Invalid {
            self.counters.invalid += 1;
            return;
        }
        let Some(tid) = wire::transaction_id(msg) else {
            self.counters.invalid += 1;
            return;
        };
        let i = usize::from(u16::from_be_bytes([tid[0], tid[1]]) & s.mask);
        let Some(slot) = s.slots.get(i) else {
            self.counters.invalid += 1;
            return;
        };
        if !slot.in_flight || slot.req[8..20] != tid[..] {
            self.counters.stale += 1;
            return;
        }
        let latency = now_ns.saturating_sub(slot.sent_ns);
        match verdict {
            Verdict::ErrorResponse => self.counters.error_responses += 1,
            Verdict::Success if self.cfg.check && wire::xor_mapped_address(msg) != Some(s.local) => {
                self.counters.check_failed += 1;
            }
            _ => {
                self.counters.completed += 1;
                self.total_completed += 1;
                if verdict == Verdict::Echo {
                    self.counters.echoed += 1;
                }
                self.hist.record(latency);
            }
        }
        s.arm(i, &mut self.rng);
    }

    /// Re-issues every request older than the timeout so a lost datagram never stalls its slot.
    fn expire(&mut self, now_ns: u64) {
        let timeout = self.cfg.timeout.as_nanos() as u64;
        for s in &mut self.socks {
            for i in 0..s.slots.len() {
                let slot = &s.slots[i];
                if slot.in_flight && now_ns.saturating_sub(slot.sent_ns) >= timeout {
                    self.counters.timeouts += 1;
                    s.arm(i, &mut self.rng);
                }
            }
        }
    }

    fn run(&mut self, warmup_end: u64, end: u64, count: Option<u64>) -> Result<(u64, u64)> {
        for s in &mut self.socks {
            for i in 0..s.slots.len() {
                s.arm(i, &mut self.rng);
            }
        }
        let timeout_ns = self.cfg.timeout.as_nanos() as u64;
        // Scanning for timeouts every quarter timeout bounds detection delay at 1.25× the timeout.
        let scan_every = (timeout_ns / 4).max(1_000_000);
        let mut next_scan = self.now_ns() + scan_every;
        let mut pollfds: Vec<libc::pollfd> = self
            .socks
            .iter()
            .map(|s| libc::pollfd { fd: s.sock.as_raw_fd(), events: libc::POLLIN, revents: 0 })
            .collect();
        let mut measure_start = 0;
        if warmup_end == 0 {
            self.measuring = true;
        }
        loop {
            let now = self.now_ns();
            if !self.measuring && now >= warmup_end {
                self.counters = Counters::default();
                self.hist.reset();
                self.measuring = true;
                measure_start = now;
            }
            if now >= end || (self.measuring && count.is_some_and(|n| self.counters.completed >= n)) {
                return Ok((measure_start, now));
            }
            let mut progressed = false;
            for si in 0..self.socks.len() {
                let s = &mut self.socks[si];
                let cap = s.recv.capacity();
                match s.recv.recv(&s.sock, cap, Wait::Never) {
                    Ok(n) if n > 0 => {
                        progressed = true;
                        let t = self.now_ns();
                        for k in 0..n {
                            self.answer(si, k, t);
                        }
                    }
                    Ok(_) => {}
                    Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => self.counters.refused += 1,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e).with_context(|| format!("recvmmsg on {}", self.socks[si].local)),
                }
                if !self.socks[si].pending.is_empty() {
                    progressed = true;
                    let t = self.now_ns();
                    self.socks[si].flush(t, &mut self.counters)?;
                }
            }
            let now = self.now_ns();
            if now >= next_scan {
                self.expire(now);
                next_scan = now + scan_every;
            }
            if !progressed && self.cfg.block {
                // Nothing arrived on any socket: sleep briefly in poll rather than spin on empty queues.
                // Off by default: on a VM, waking a sleeping vCPU costs hundreds of microseconds, which
                // would make the load generator, not the server, the bottleneck.
                sys::poll_readable(&mut pollfds, 1).context("poll")?;
            }
        }
    }
}

/// Runs the whole load: opens every socket first (so setup errors surface before any traffic), then one
/// thread per `threads` drives its share of the sockets.
pub fn run(cfg: &LoadConfig) -> Result<Report> {
    let base = Instant::now();
    let warmup_end = cfg.warmup.as_nanos() as u64;
    let end = warmup_end + cfg.duration.as_nanos() as u64;
    let mut per_thread: Vec<Vec<Sock>> = (0..cfg.threads).map(|_| Vec::new()).collect();
    for i in 0..cfg.sockets {
        per_thread[i % cfg.threads].push(Sock::open(cfg.target, cfg.inflight, cfg.batch)?);
    }
    let counts: Vec<Option<u64>> = (0..cfg.threads as u64)
        .map(|t| cfg.count.map(|n| n / cfg.threads as u64 + u64::from(t < n % cfg.threads as u64)))
        .collect();
    let results: Vec<Result<(Counters, Histogram, u64, Duration)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = per_thread
            .into_iter()
            .zip(counts)
            .enumerate()
            .map(|(t, (socks, count))| {
                scope.spawn(move || {
                    let mut th = Thread {
                        cfg,
                        socks,
                        rng: Rng::from_entropy(t as u64 + 1),
                        base,
                        counters: Counters::default(),
                        hist: Histogram::new(),
                        total_completed: 0,
                        measuring: false,
                    };
                    let (start, stop) = th.run(warmup_end, end, count)?;
                    Ok((th.counters, th.hist, th.total_completed, Duration::from_nanos(stop - start)))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a load thread panicked"))))
            .collect()
    });
    let mut report = Report {
        counters: Counters::default(),
        hist: Histogram::new(),
        elapsed: Duration::ZERO,
        rps: 0.0,
        total_completed: 0,
    };
    let threads = results.len() as u32;
    let mut elapsed_sum = Duration::ZERO;
    for r in results {
        let (c, h, total, elapsed) = r?;
        report.counters.add(&c);
        report.hist.merge(&h);
        report.total_completed += total;
        if !elapsed.is_zero() {
            report.rps += c.completed as f64 / elapsed.as_secs_f64();
        }
        elapsed_sum += elapsed;
    }
    report.elapsed = elapsed_sum / threads.max(1);
    Ok(report)
}
