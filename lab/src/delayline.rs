//! Userspace delay line: delay, jitter and loss on an access link.
//!
//! The lab kernel has neither netem nor NFQUEUE, so delay is made here: two `AF_PACKET` sockets, one bound to each
//! of two interfaces in a "delay" namespace that sits in the middle of a link, relay every Ethernet frame to the
//! other side after holding it for the configured one-way delay. It is a transparent two-port bridge (ARP and
//! everything else pass too), so the hosts on both ends see one plain Ethernet segment.
//!
//! ```text
//!  hostns:eth0 <-veth-> dl:a  ==[delay line]==  dl:b <-veth-> routerns:lan
//! ```
//!
//! # Using it from the lab (for the core helper)
//!
//! ```no_run
//! use holepunch_lab::delayline::{DelayLine, Impairment};
//! use std::time::Duration;
//! // Namespace `dl` holds the veth ends `a` and `b`, both up, with no addresses. Disable IPv6 in `dl`
//! // (`net.ipv6.conf.{all,default}.disable_ipv6=1`) so the namespace itself never talks on the link.
//! let imp = Impairment::delay(Duration::from_millis(20)).with_jitter(Duration::from_millis(2)).with_loss(1.0);
//! let line = DelayLine::start(Some("dl"), "a", "b", imp.clone(), imp)?; // a->b, then b->a
//! // ... run the test ...
//! println!("{:?}", line.stats());
//! drop(line); // stops and joins its threads (also during a panic's unwinding)
//! # Ok::<(), holepunch_lab::delayline::Error>(())
//! ```
//!
//! The line runs in-process: the sockets are opened by a short-lived thread that enters the namespace with
//! `setns(2)` (a network namespace is per thread), then four worker threads (receive + transmit per direction) use
//! them from wherever they are. No child process can leak when a test is killed. For scripts there is the same
//! thing as a command, `delayline --netns dl --a a --b b --delay 20ms --jitter 2ms --loss 1` (binary
//! `lab/src/bin/delayline.rs`; it runs until SIGINT/SIGTERM and prints its counters then).
//!
//! # Timing model
//! - Every frame is stamped with the kernel's receive timestamp (`SO_TIMESTAMPNS`, so a late wake-up of the
//!   receive thread adds no delay); it is due at `stamp + delay + U(-jitter, +jitter)` (uniform, like netem
//!   without a distribution table, never earlier than the stamp).
//! - Without `reorder` (the default) frames leave in arrival order: a frame is never due before the one ahead of
//!   it. When packets are closer together than the jitter span this pushes the mean delay up (at most to
//!   `delay + jitter`), as a FIFO link does. With `reorder`, every frame gets an independent delay.
//! - The transmit thread keeps a min-heap of `(due, frame)` and sleeps until the head is due, with the thread's
//!   timer slack set to 1 ns, and both threads run at SCHED_FIFO priority 10 (by default, when permitted), so
//!   frames leave within tens of microseconds of their due time even while compilers load both cores (measured
//!   in `lab/tests/delayline.rs`: 4000 pps, 20 ms configured, p50 20.03 ms, p90 20.05 ms). A stalled virtual
//!   CPU can still hold frames back; [`DirectionStats::late`] counts frames sent more than 1 ms after due.
//! - Loss drops a frame with the configured percentage on arrival, before it is queued.
//! - The queue per direction is bounded (frames and bytes); frames beyond it are dropped and counted as
//!   `overflow`, like a router's tail drop.
//!
//! Frames are read and written with a `virtio_net_hdr` (`PACKET_VNET_HDR`), so segmentation-offloaded TCP
//! super-frames and frames whose checksum the sender left to "hardware" pass through intact instead of arriving
//! with a bad checksum. Frames the socket itself sent (`PACKET_OUTGOING`) are ignored both with
//! `PACKET_IGNORE_OUTGOING` and by checking `sll_pkttype`, so the line never loops.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

// Linux UAPI values (linux/if_packet.h, linux/socket.h); spelled out because libc does not export all of them
// on every target.
const SOL_PACKET: libc::c_int = 263;
const PACKET_ADD_MEMBERSHIP: libc::c_int = 1;
const PACKET_MR_PROMISC: libc::c_ushort = 1;
const PACKET_OUTGOING: u8 = 4;
const PACKET_VNET_HDR: libc::c_int = 15;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
const ETH_P_ALL: u16 = 0x0003;
/// `struct virtio_net_hdr` without the mergeable-buffers field.
const VNET_HDR_LEN: usize = 10;
const ETH_HDR_LEN: usize = 14;
/// Largest frame a packet socket hands over: a 64 KiB GSO super-frame plus headers.
const MAX_FRAME: usize = VNET_HDR_LEN + 65536 + 64;
/// How often blocked threads look at the stop flag.
const POLL: Duration = Duration::from_millis(50);

#[repr(C)]
struct PacketMreq {
    mr_ifindex: libc::c_int,
    mr_type: libc::c_ushort,
    mr_alen: libc::c_ushort,
    mr_address: [u8; 8],
}

/// What the delay line did wrong or could not do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot enter network namespace {name}: {source}")]
    Netns { name: String, source: io::Error },
    #[error("no interface {0} in the delay line's namespace")]
    NoInterface(String),
    #[error("{what} for interface {ifname}: {source}")]
    Socket { what: &'static str, ifname: String, source: io::Error },
    #[error("invalid impairment: {0}")]
    Invalid(String),
    #[error("cannot start a delay line thread: {0}")]
    Thread(io::Error),
}

/// Impairment of one direction of the link.
#[derive(Clone, Debug, PartialEq)]
pub struct Impairment {
    /// Constant one-way delay added to every frame.
    pub delay: Duration,
    /// Each frame's delay varies uniformly within ±`jitter` (never below zero).
    pub jitter: Duration,
    /// Percentage (0–100) of frames dropped at random.
    pub loss_percent: f64,
    /// Let jitter reorder frames (independent delays) instead of keeping arrival order.
    pub reorder: bool,
    /// Most frames held at once; more are dropped and counted as overflow.
    pub queue_frames: usize,
    /// Most bytes held at once.
    pub queue_bytes: usize,
    /// Seed for loss and jitter; `None` takes one from the clock and the process id.
    pub seed: Option<u64>,
    /// Run this direction's threads at SCHED_FIFO priority 10 (when permitted; root is), so they wake on time on
    /// a busy machine. They sleep between frames; under a flood the kernel's RT throttling still leaves 5% of the
    /// CPU to everything else.
    pub realtime: bool,
}

impl Default for Impairment {
    fn default() -> Self {
        Impairment {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            loss_percent: 0.0,
            reorder: false,
            queue_frames: 10_000,
            queue_bytes: 32 << 20,
            seed: None,
            realtime: true,
        }
    }
}

impl Impairment {
    /// A plain delay with no jitter and no loss.
    pub fn delay(delay: Duration) -> Self {
        Impairment { delay, ..Impairment::default() }
    }
    pub fn with_jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }
    pub fn with_loss(mut self, percent: f64) -> Self {
        self.loss_percent = percent;
        self
    }
    pub fn with_reorder(mut self, reorder: bool) -> Self {
        self.reorder = reorder;
        self
    }
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    fn validate(&self) -> Result<(), Error> {
        if !(0.0..=100.0).contains(&self.loss_percent) {
            return Err(Error::Invalid(format!("loss {}% is not within 0-100", self.loss_percent)));
        }
        if self.delay > Duration::from_secs(60) || self.jitter > Duration::from_secs(60) {
            return Err(Error::Invalid("delay and jitter must stay below 60 s".into()));
        }
        if self.queue_frames == 0 || self.queue_bytes < MAX_FRAME {
            return Err(Error::Invalid(format!("queue must hold at least one frame of {MAX_FRAME} bytes")));
        }
        Ok(())
    }
}

/// Counters of one direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirectionStats {
    /// Frames read from the ingress interface.
    pub received: u64,
    /// Frames written to the egress interface.
    pub delivered: u64,
    /// Frames dropped by the configured loss.
    pub lost: u64,
    /// Frames dropped because the queue was full or the frame was too large to read whole.
    pub overflow: u64,
    /// Receive or send errors (the frame, if any, is dropped).
    pub errors: u64,
    /// Frames written more than 1 ms after they were due (the transmit thread woke late).
    pub late: u64,
    /// Largest lateness of a written frame, in microseconds.
    pub max_late_us: u64,
}

/// Counters of both directions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub a_to_b: DirectionStats,
    pub b_to_a: DirectionStats,
}

#[derive(Default)]
struct Counters {
    received: AtomicU64,
    delivered: AtomicU64,
    lost: AtomicU64,
    overflow: AtomicU64,
    errors: AtomicU64,
    late: AtomicU64,
    max_late_ns: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> DirectionStats {
        DirectionStats {
            received: self.received.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            lost: self.lost.load(Ordering::Relaxed),
            overflow: self.overflow.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            late: self.late.load(Ordering::Relaxed),
            max_late_us: self.max_late_ns.load(Ordering::Relaxed) / 1000,
        }
    }
}

/// A running delay line; dropping it stops it.
pub struct DelayLine {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    a_to_b: Arc<Counters>,
    b_to_a: Arc<Counters>,
}

impl DelayLine {
    /// Relays frames between interfaces `a` and `b` of namespace `netns` (`ip netns` name; `None` is the calling
    /// thread's namespace), impairing frames from `a` to `b` with `a_to_b` and the others with `b_to_a`.
    pub fn start(
        netns: Option<&str>,
        a: &str,
        b: &str,
        a_to_b: Impairment,
        b_to_a: Impairment,
    ) -> Result<DelayLine, Error> {
        a_to_b.validate()?;
        b_to_a.validate()?;
        let (fd_a, fd_b) = in_netns(netns, || Ok((open_port(a)?, open_port(b)?)))?;
        let fd_a = Arc::new(fd_a);
        let fd_b = Arc::new(fd_b);
        let mut line = DelayLine {
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::with_capacity(4),
            a_to_b: Arc::default(),
            b_to_a: Arc::default(),
        };
        let seed = base_seed();
        // On an error here `line` is dropped, which stops the threads already started.
        line.spawn_direction(format!("dl {a}>{b}"), fd_a.clone(), fd_b.clone(), a_to_b, line.a_to_b.clone(), seed)?;
        line.spawn_direction(
            format!("dl {b}>{a}"),
            fd_b,
            fd_a,
            b_to_a,
            line.b_to_a.clone(),
            seed ^ 0x9e37_79b9_7f4a_7c15,
        )?;
        log::info!(target: "lab::delayline", "delay line {a}<->{b} started");
        Ok(line)
    }

    fn spawn_direction(
        &mut self,
        name: String,
        from: Arc<OwnedFd>,
        to: Arc<OwnedFd>,
        imp: Impairment,
        counters: Arc<Counters>,
        seed: u64,
    ) -> Result<(), Error> {
        let (tx, rx) = mpsc::sync_channel(imp.queue_frames);
        let queued = Arc::new(AtomicUsize::new(0));
        let rx_side = Ingress {
            fd: from,
            tx,
            rng: Rng::new(imp.seed.unwrap_or(seed)),
            imp: imp.clone(),
            counters: counters.clone(),
            queued: queued.clone(),
            stop: self.stop.clone(),
        };
        let tx_side = Egress { fd: to, rx, imp, counters, queued, stop: self.stop.clone() };
        let spawn = |suffix: &str| std::thread::Builder::new().name(format!("{name} {suffix}"));
        self.threads.push(spawn("rx").spawn(move || rx_side.run()).map_err(Error::Thread)?);
        self.threads.push(spawn("tx").spawn(move || tx_side.run()).map_err(Error::Thread)?);
        Ok(())
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        Stats { a_to_b: self.a_to_b.snapshot(), b_to_a: self.b_to_a.snapshot() }
    }

    /// Stops relaying (frames still queued are dropped) and returns the final counters.
    pub fn stop(mut self) -> Stats {
        self.shutdown();
        self.stats()
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            // A worker that panicked has nothing left to clean up; its panic was already reported.
            let _ = t.join();
        }
    }
}

impl Drop for DelayLine {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Runs `f` on a fresh thread that has entered network namespace `netns` (`/run/netns/NAME`), so sockets it
/// opens belong there; the caller's threads stay where they are. Errors are those of entering the namespace.
pub(crate) fn run_in_netns<T: Send>(netns: &str, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    if netns.is_empty() || netns.contains('/') || netns.starts_with('.') {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a namespace name"));
    }
    let ns = File::open(format!("/run/netns/{netns}"))?;
    std::thread::scope(|s| {
        let t = std::thread::Builder::new().name("lab setns".into()).spawn_scoped(s, || {
            // SAFETY: plain syscall on a valid descriptor; it changes only this short-lived thread.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(f())
        })?;
        match t.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

fn in_netns<T: Send>(netns: Option<&str>, f: impl FnOnce() -> Result<T, Error> + Send) -> Result<T, Error> {
    match netns {
        None => f(),
        Some(name) => run_in_netns(name, f).map_err(|source| Error::Netns { name: name.to_string(), source })?,
    }
}

fn sockopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a valid, initialised `T` for the duration of the call and its size is passed along.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            value as *const T as *const libc::c_void,
            mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A raw packet socket bound to `ifname`, receiving every frame that arrives there.
fn open_port(ifname: &str) -> Result<OwnedFd, Error> {
    let fail = |what: &'static str| {
        let source = io::Error::last_os_error();
        move || Error::Socket { what, ifname: ifname.to_string(), source }
    };
    let cname = CString::new(ifname).map_err(|_| Error::NoInterface(ifname.to_string()))?;
    // SAFETY: `cname` is a valid NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if ifindex == 0 {
        return Err(Error::NoInterface(ifname.to_string()));
    }
    // Protocol 0: the socket receives nothing until it is bound to the one interface below, so it never sees
    // frames of other interfaces.
    // SAFETY: plain syscall.
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(fail("cannot open a packet socket (needs CAP_NET_RAW)")());
    }
    // SAFETY: `raw` is a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let s = fd.as_raw_fd();
    let one: libc::c_int = 1;
    sockopt(s, SOL_PACKET, PACKET_VNET_HDR, &one).map_err(|e| sock_err("PACKET_VNET_HDR", ifname, e))?;
    // Kernels before 4.20 lack it; the sll_pkttype check in the receive loop covers them.
    if let Err(e) = sockopt(s, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one) {
        log::debug!(target: "lab::delayline", "PACKET_IGNORE_OUTGOING unavailable on {ifname}: {e}");
    }
    let buf: libc::c_int = 8 << 20;
    // FORCE lifts the rmem_max cap for root; a plain SO_RCVBUF is the fallback.
    if sockopt(s, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &buf).is_err() {
        sockopt(s, libc::SOL_SOCKET, libc::SO_RCVBUF, &buf).map_err(|e| sock_err("SO_RCVBUF", ifname, e))?;
    }
    let _ = sockopt(s, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, &buf);
    let tv = libc::timeval { tv_sec: 0, tv_usec: POLL.as_micros() as libc::suseconds_t };
    sockopt(s, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv).map_err(|e| sock_err("SO_RCVTIMEO", ifname, e))?;
    sockopt(s, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, &one).map_err(|e| sock_err("SO_TIMESTAMPNS", ifname, e))?;
    // SAFETY: all-zero is a valid sockaddr_ll.
    let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as libc::c_ushort;
    sll.sll_protocol = ETH_P_ALL.to_be();
    sll.sll_ifindex = ifindex as libc::c_int;
    // SAFETY: `sll` is a valid sockaddr_ll and its size is passed along.
    let rc = unsafe {
        libc::bind(
            s,
            &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
            mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(fail("cannot bind the packet socket")());
    }
    // Promiscuous so that a real NIC (not only veth) hands over frames for other MAC addresses.
    let mreq =
        PacketMreq { mr_ifindex: ifindex as libc::c_int, mr_type: PACKET_MR_PROMISC, mr_alen: 0, mr_address: [0; 8] };
    sockopt(s, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mreq).map_err(|e| sock_err("PACKET_MR_PROMISC", ifname, e))?;
    Ok(fd)
}

fn sock_err(what: &'static str, ifname: &str, source: io::Error) -> Error {
    Error::Socket { what, ifname: ifname.to_string(), source }
}

struct Frame {
    due: Instant,
    seq: u64,
    data: Vec<u8>,
}

impl PartialEq for Frame {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for Frame {}
impl PartialOrd for Frame {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Frame {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Equal due times leave in arrival order.
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

/// The receive half of one direction: reads frames, applies loss, stamps due times.
struct Ingress {
    fd: Arc<OwnedFd>,
    tx: SyncSender<Frame>,
    rng: Rng,
    imp: Impairment,
    counters: Arc<Counters>,
    queued: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Ingress {
    fn run(mut self) {
        set_timer_slack();
        if self.imp.realtime {
            set_realtime();
        }
        let mut buf = vec![0u8; MAX_FRAME];
        let mut seq = 0u64;
        let mut last_due: Option<Instant> = None;
        let jitter_ns = self.imp.jitter.as_nanos() as f64;
        while !self.stop.load(Ordering::Relaxed) {
            let (n, pkttype, age) = match recv_frame(self.fd.as_raw_fd(), &mut buf) {
                Ok(r) => r,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => continue,
                Err(e) => {
                    // The interface may be down or gone (a cut link); try again a bit later.
                    self.counters.errors.fetch_add(1, Ordering::Relaxed);
                    log::debug!(target: "lab::delayline", "receive: {e}");
                    std::thread::sleep(POLL);
                    continue;
                }
            };
            if pkttype == PACKET_OUTGOING {
                continue;
            }
            // The frame arrived `age` ago (kernel timestamp), so a late wake-up of this thread adds no delay.
            let now = Instant::now();
            let now = now.checked_sub(age).unwrap_or(now);
            self.counters.received.fetch_add(1, Ordering::Relaxed);
            if n > buf.len() || n < VNET_HDR_LEN + ETH_HDR_LEN {
                self.counters.overflow.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if self.imp.loss_percent > 0.0 && self.rng.next_f64() * 100.0 < self.imp.loss_percent {
                self.counters.lost.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let mut due = now + self.imp.delay;
            if jitter_ns > 0.0 {
                let offset = (self.rng.next_f64() * 2.0 - 1.0) * jitter_ns;
                let magnitude = Duration::from_nanos(offset.abs() as u64);
                due = if offset >= 0.0 { due + magnitude } else { due.checked_sub(magnitude).unwrap_or(now).max(now) };
            }
            if !self.imp.reorder {
                if let Some(last) = last_due {
                    due = due.max(last);
                }
                last_due = Some(due);
            }
            if self.queued.load(Ordering::Relaxed) + n > self.imp.queue_bytes {
                self.counters.overflow.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            self.queued.fetch_add(n, Ordering::Relaxed);
            let frame = Frame { due, seq, data: buf[..n].to_vec() };
            seq += 1;
            match self.tx.try_send(frame) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    self.queued.fetch_sub(n, Ordering::Relaxed);
                    self.counters.overflow.fetch_add(1, Ordering::Relaxed);
                }
                Err(TrySendError::Disconnected(_)) => return,
            }
        }
    }
}

/// Reads one frame into `buf`: (length, even when larger than `buf`; sll_pkttype; time since the kernel got it).
fn recv_frame(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, u8, Duration)> {
    // SAFETY: all-zero is a valid sockaddr_ll and msghdr.
    let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
    let mut control = [0u64; 16];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr() as *mut libc::c_void, iov_len: buf.len() };
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_name = &mut sll as *mut libc::sockaddr_ll as *mut libc::c_void;
    msg.msg_namelen = mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = mem::size_of_val(&control) as _;
    // SAFETY: every pointer in `msg` refers to a live local buffer of the length given.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_TRUNC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut age = Duration::ZERO;
    // SAFETY: the CMSG macros walk the control buffer the kernel just filled, within msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::timespec);
                age = realtime_age(ts);
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n as usize, sll.sll_pkttype, age))
}

/// How long ago a CLOCK_REALTIME timestamp was; zero if it looks wrong (a clock step), at most one second.
fn realtime_age(ts: libc::timespec) -> Duration {
    let then = Duration::new(ts.tv_sec.max(0) as u64, ts.tv_nsec.clamp(0, 999_999_999) as u32);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    match now.checked_sub(then) {
        Some(age) if age <= Duration::from_secs(1) => age,
        _ => Duration::ZERO,
    }
}

/// The transmit half of one direction: holds frames until due, then writes them out.
struct Egress {
    fd: Arc<OwnedFd>,
    rx: Receiver<Frame>,
    imp: Impairment,
    counters: Arc<Counters>,
    queued: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Egress {
    fn run(self) {
        set_timer_slack();
        if self.imp.realtime {
            set_realtime();
        }
        let mut heap: BinaryHeap<Reverse<Frame>> = BinaryHeap::new();
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
            let now = Instant::now();
            while heap.peek().is_some_and(|f| f.0.due <= now) {
                if let Some(Reverse(frame)) = heap.pop() {
                    self.send(&frame.data);
                    let late = frame.due.elapsed();
                    self.counters.max_late_ns.fetch_max(late.as_nanos() as u64, Ordering::Relaxed);
                    if late > Duration::from_millis(1) {
                        self.counters.late.fetch_add(1, Ordering::Relaxed);
                    }
                    self.queued.fetch_sub(frame.data.len(), Ordering::Relaxed);
                }
            }
            // Sleep until the head is due or a new frame arrives (it may be due earlier when reordering).
            let wait = heap.peek().map_or(POLL, |f| f.0.due.saturating_duration_since(now).min(POLL));
            match self.rx.recv_timeout(wait) {
                Ok(frame) => {
                    heap.push(Reverse(frame));
                    while heap.len() < self.imp.queue_frames {
                        match self.rx.try_recv() {
                            Ok(frame) => heap.push(Reverse(frame)),
                            Err(_) => break,
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    if heap.is_empty() {
                        return;
                    }
                    std::thread::sleep(wait);
                }
            }
        }
    }

    fn send(&self, data: &[u8]) {
        // The socket is bound to the egress interface, so a plain send goes out there.
        // SAFETY: `data` is valid for reads of its length.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), data.as_ptr() as *const libc::c_void, data.len(), 0) };
        if n < 0 {
            self.counters.errors.fetch_add(1, Ordering::Relaxed);
            log::debug!(target: "lab::delayline", "send: {}", io::Error::last_os_error());
        } else {
            self.counters.delivered.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Without this a sleeping thread may wake up to 50 µs late (the default timer slack).
fn set_timer_slack() {
    // SAFETY: plain prctl on the calling thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
}

fn set_realtime() {
    let param = libc::sched_param { sched_priority: 10 };
    // SAFETY: plain call on the calling thread with a valid parameter.
    let rc = unsafe { libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_FIFO, &param) };
    if rc != 0 {
        log::debug!(target: "lab::delayline", "no real-time priority: {}", io::Error::from_raw_os_error(rc));
    }
}

fn base_seed() -> u64 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    t ^ (u64::from(std::process::id()) << 32)
}

/// splitmix64: small, fast, good enough for loss and jitter draws (not for anything secret).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed)
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Parses a duration such as `20ms`, `1.5ms`, `250us`, `2s` or a bare number of milliseconds.
pub fn parse_duration(s: &str) -> Result<Duration, Error> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num.parse().map_err(|_| Error::Invalid(format!("{s:?} is not a duration")))?;
    let scale = match unit.trim() {
        "" | "ms" => 1e-3,
        "s" => 1.0,
        "us" | "µs" => 1e-6,
        "ns" => 1e-9,
        other => return Err(Error::Invalid(format!("unknown duration unit {other:?}"))),
    };
    let secs = value * scale;
    if !secs.is_finite() || !(0.0..=60.0).contains(&secs) {
        return Err(Error::Invalid(format!("{s:?} is not within 0-60 s")));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("20ms").unwrap(), Duration::from_millis(20));
        assert_eq!(parse_duration("1.5ms").unwrap(), Duration::from_micros(1500));
        assert_eq!(parse_duration("250us").unwrap(), Duration::from_micros(250));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_millis(7));
        assert!(parse_duration("ms").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-1ms").is_err());
        assert!(parse_duration("100s").is_err());
    }

    #[test]
    fn rng_is_uniform_enough() {
        let mut r = Rng::new(42);
        let n = 100_000;
        let below = (0..n).filter(|_| r.next_f64() < 0.1).count();
        // 10% ± 5 standard deviations (σ ≈ 95).
        assert!((9_500..=10_500).contains(&below), "{below}");
    }

    #[test]
    fn impairment_is_validated() {
        assert!(Impairment::delay(Duration::from_millis(5)).validate().is_ok());
        assert!(Impairment::default().with_loss(101.0).validate().is_err());
        assert!(Impairment::default().with_loss(f64::NAN).validate().is_err());
        let tiny = Impairment { queue_frames: 0, ..Impairment::default() };
        assert!(tiny.validate().is_err());
    }

    #[test]
    fn frames_order_by_due_then_arrival() {
        let t = Instant::now();
        let f = |due, seq| Reverse(Frame { due, seq, data: Vec::new() });
        let mut heap = BinaryHeap::new();
        heap.push(f(t + Duration::from_millis(2), 0));
        heap.push(f(t + Duration::from_millis(1), 2));
        heap.push(f(t + Duration::from_millis(1), 1));
        let order: Vec<u64> = std::iter::from_fn(|| heap.pop().map(|r| r.0.seq)).collect();
        assert_eq!(order, vec![1, 2, 0]);
    }
}
