//! Peer mode's tunnel (docs/tunnel.md): the TUN device and the data path around the library's sans-IO
//! `tunnel::Tunnel`.
//!
//! Three threads carry it, none of them the node's loop, so bulk traffic never waits behind punching:
//! - the TUN reader: IP packets from the device, encrypted, sent to the peer's current endpoint;
//! - each socket's receiver thread (the driver's, through [`holepunch::io::blocking::Intercept`]): WireGuard
//!   datagrams decrypted and written to the device, handshake answers sent back; STUN goes on to the node;
//! - the timer thread: WireGuard's handshake, rekey and keepalive timers every 250 ms.
//!
//! Buffers live on each thread's stack: nothing is allocated per packet.

use crate::config::TunSettings;
use anyhow::{anyhow, bail, Context, Result};
use holepunch::io::blocking::Intercept;
use holepunch::net::{IpPrefix, Transmit};
use holepunch::tunnel::{packet, Decapsulated, Drop, Encapsulated, Tunnel, TIMER_TICK};
use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tun_rs::SyncDevice;

#[cfg(windows)]
mod coalesce;
#[cfg(target_os = "linux")]
mod offload;

/// Largest datagram or packet handled: the driver's receive buffer (an MTU of at most 1500 plus 32 fits).
const BUF: usize = holepunch::io::RECV_BUF;

/// The sockets tunnel datagrams may leave from: the punching socket and birthday probing's extra sockets,
/// and our TURN relay (a datagram "from" our relayed address goes to the TURN server as ChannelData).
pub struct Sockets {
    pub(crate) main: (SocketAddr, Arc<UdpSocket>),
    extra: RwLock<HashMap<SocketAddr, Arc<UdpSocket>>>,
    pub relay: Arc<RelayRoute>,
}

/// Our TURN allocation as the data path needs it: the server, our relayed address and the bound channels
/// (docs/relay.md, "Client"). The node's engine keeps it current through its relay events.
#[derive(Debug, Default)]
pub struct RelayRoute {
    state: RwLock<RouteState>,
}

#[derive(Debug, Default)]
struct RouteState {
    server: Option<SocketAddr>,
    relayed: Option<SocketAddr>,
    by_peer: HashMap<SocketAddr, u16>,
    by_channel: HashMap<u16, SocketAddr>,
}

impl RelayRoute {
    pub fn allocated(&self, server: SocketAddr, relayed: SocketAddr) {
        let mut s = self.state.write().unwrap_or_else(|p| p.into_inner());
        *s = RouteState { server: Some(server), relayed: Some(relayed), ..RouteState::default() };
    }

    pub fn lost(&self) {
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = RouteState::default();
    }

    pub fn bound(&self, peer: SocketAddr, channel: u16) {
        let mut s = self.state.write().unwrap_or_else(|p| p.into_inner());
        s.by_peer.insert(peer, channel);
        s.by_channel.insert(channel, peer);
    }

    /// The server and channel a datagram from `local` to `dst` goes through, when `local` is our relayed
    /// address; `Some(None)` when it is but no channel is bound yet.
    fn route(&self, local: SocketAddr, dst: SocketAddr) -> Option<Option<(SocketAddr, u16)>> {
        let s = self.state.read().unwrap_or_else(|p| p.into_inner());
        if s.relayed != Some(local) {
            return None;
        }
        Some(s.server.zip(s.by_peer.get(&dst).copied()))
    }

    /// ChannelData from our TURN server on a bound channel: (our relayed address, the peer, the payload).
    fn unwrap<'a>(&self, from: SocketAddr, data: &'a [u8]) -> Option<(SocketAddr, SocketAddr, &'a [u8])> {
        if !holepunch::stun::looks_like_channel_data(data) {
            return None;
        }
        let s = self.state.read().unwrap_or_else(|p| p.into_inner());
        if s.server != Some(from) {
            return None;
        }
        let cd = holepunch::stun::ChannelData::parse(data).ok()?;
        Some((s.relayed?, *s.by_channel.get(&cd.channel)?, cd.data))
    }
}

impl Sockets {
    pub fn new(main: &UdpSocket) -> Result<Arc<Sockets>> {
        let local = main.local_addr().context("local address of the punching socket")?;
        let clone = main.try_clone().context("sharing the punching socket with the tunnel")?;
        Ok(Arc::new(Sockets { main: (local, Arc::new(clone)), extra: RwLock::default(), relay: Arc::default() }))
    }

    /// An extra socket (birthday probing) a path may run from.
    pub fn add(&self, local: SocketAddr, socket: UdpSocket) {
        self.extra.write().unwrap_or_else(|p| p.into_inner()).insert(local, Arc::new(socket));
    }

    pub fn remove(&self, local: SocketAddr) {
        self.extra.write().unwrap_or_else(|p| p.into_inner()).remove(&local);
    }

    fn send(&self, t: Transmit, data: &[u8]) -> std::io::Result<usize> {
        if t.local == self.main.0 {
            return self.main.1.send_to(data, t.dst);
        }
        match self.relay.route(t.local, t.dst) {
            Some(Some((server, channel))) => {
                let mut framed = [0u8; BUF + 2 * packet::DATA_OVERHEAD];
                let n = holepunch::stun::ChannelData::write(channel, data, false, &mut framed)
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                return self.main.1.send_to(&framed[..n], server);
            }
            Some(None) => return Err(std::io::Error::other("no relay channel to the peer yet")),
            None => {}
        }
        let extra = self.extra.read().unwrap_or_else(|p| p.into_inner());
        match extra.get(&t.local) {
            Some(s) => s.send_to(data, t.dst),
            // The path's socket was closed meanwhile: the punching socket is the best guess.
            None => self.main.1.send_to(data, t.dst),
        }
    }
}

/// What the data path counted (read by the status).
#[derive(Debug, Default)]
pub struct Counters {
    pub sent: AtomicU64,
    pub send_errors: AtomicU64,
    pub no_path: AtomicU64,
    pub no_route: AtomicU64,
    pub refused: AtomicU64,
    pub device_errors: AtomicU64,
    /// TCP segments dropped while the receive queue stood (offload.rs; Linux only).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub aqm_drops: AtomicU64,
}

/// The device, the tunnel and the sockets, shared by the data-path threads.
pub struct DataPath {
    pub tunnel: Arc<Tunnel>,
    device: Arc<SyncDevice>,
    /// The device was opened with offloads (Linux IFF_VNET_HDR): every read and write goes through the
    /// batched path (offload.rs). On Windows: the TUN reader batches and segments its sends (coalesce.rs).
    #[cfg_attr(not(any(target_os = "linux", windows)), allow(dead_code))]
    offload: bool,
    #[cfg(target_os = "linux")]
    rx: std::sync::Mutex<offload::RxBatch>,
    sockets: Arc<Sockets>,
    pub counters: Counters,
    /// Log the first refused handshake of a kind once per minute, not per packet.
    last_refusal_log: RwLock<Option<Instant>>,
}

impl DataPath {
    pub fn new(tunnel: Arc<Tunnel>, device: Device, sockets: Arc<Sockets>) -> Arc<DataPath> {
        Arc::new(DataPath {
            tunnel,
            device: Arc::new(device.device),
            offload: device.offload,
            #[cfg(target_os = "linux")]
            rx: std::sync::Mutex::new(offload::RxBatch::new()),
            sockets,
            counters: Counters::default(),
            last_refusal_log: RwLock::new(None),
        })
    }

    fn send(&self, t: Transmit, data: &[u8]) {
        match self.sockets.send(t, &data[..t.len]) {
            Ok(_) => {
                self.counters.sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.counters.send_errors.fetch_add(1, Ordering::Relaxed);
                log::debug!("tunnel: send to {} failed: {e}", t.dst);
            }
        }
    }

    fn refused(&self, from: SocketAddr, why: Drop) {
        self.counters.refused.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut last = self.last_refusal_log.write().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|t| now.duration_since(t) > Duration::from_secs(60)) {
            *last = Some(now);
            log::warn!("tunnel: datagram from {from} refused: {why} (logged once a minute)");
        } else {
            log::debug!("tunnel: datagram from {from} refused: {why}");
        }
    }

    /// The TUN reader (see the module docs); returns when `stop` is set or the device fails.
    pub fn read_device(&self, stop: &AtomicBool) {
        #[cfg(target_os = "linux")]
        if self.offload {
            return self.read_device_batched(stop);
        }
        #[cfg(windows)]
        if self.offload {
            return self.read_device_coalesced(stop);
        }
        let (mut packet, mut out) = ([0u8; BUF], [0u8; BUF + packet::DATA_OVERHEAD]);
        while !stop.load(Ordering::Relaxed) {
            let n = match self.device.recv(&mut packet) {
                Ok(n) => n,
                Err(e) if self.read_failed(&e, stop) => continue,
                Err(_) => return,
            };
            match self.tunnel.encapsulate(&packet[..n], &mut out) {
                Encapsulated::Send(t, _) => self.send(t, &out),
                Encapsulated::Queued(_) => {}
                Encapsulated::Dropped(why) => self.device_packet_dropped(why),
            }
        }
    }

    /// A packet from the device the tunnel did not send: counted (no path, no route) or logged.
    fn device_packet_dropped(&self, why: Drop) {
        match why {
            Drop::NoPath(_) => {
                self.counters.no_path.fetch_add(1, Ordering::Relaxed);
            }
            Drop::NoRoute(_) | Drop::NotIp => {
                self.counters.no_route.fetch_add(1, Ordering::Relaxed);
            }
            why => log::debug!("tunnel: packet from the device dropped: {why}"),
        }
    }

    /// A failed read of the device: true to read on (after a pause for a real error), false when the daemon
    /// is stopping.
    fn read_failed(&self, e: &std::io::Error, stop: &AtomicBool) -> bool {
        if matches!(e.kind(), ErrorKind::Interrupted | ErrorKind::WouldBlock) {
            return true;
        }
        self.counters.device_errors.fetch_add(1, Ordering::Relaxed);
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        log::warn!("tunnel: reading the TUN device failed: {e}");
        std::thread::sleep(Duration::from_millis(100));
        true
    }

    /// WireGuard's timers every [`TIMER_TICK`], the handshake rate limiter every second.
    pub fn run_timers(&self, stop: &AtomicBool) {
        let mut out = [0u8; BUF];
        let mut ticks = 0u32;
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(TIMER_TICK);
            for peer in self.tunnel.peer_ids() {
                if let Some(t) = self.tunnel.update_timers(peer, &mut out) {
                    self.send(t, &out);
                }
            }
            ticks += 1;
            if ticks % 4 == 0 {
                self.tunnel.tick_limiter();
            }
        }
    }

    fn write_device(&self, packet: &[u8]) {
        if let Err(e) = self.device.send(packet) {
            self.counters.device_errors.fetch_add(1, Ordering::Relaxed);
            log::debug!("tunnel: writing to the TUN device failed: {e}");
        }
    }
}

impl Intercept for DataPath {
    /// WireGuard messages (docs/architecture.md, "One socket, demultiplexed"); everything else is the node's.
    fn intercept(&self, _socket: &UdpSocket, local: SocketAddr, from: SocketAddr, data: &[u8]) -> bool {
        // Relayed WireGuard: ChannelData from our TURN server (relayed checks go on to the node).
        if let Some((relayed, peer, payload)) = self.sockets.relay.unwrap(from, data) {
            return packet::wireguard_type(payload).is_some() && self.take_wireguard(relayed, peer, payload);
        }
        self.take_wireguard(local, from, data)
    }

    fn flush(&self) {
        #[cfg(target_os = "linux")]
        if self.offload {
            self.flush_batched();
        }
    }
}

impl DataPath {
    /// A WireGuard datagram that arrived on `local` (a socket, or our relayed address) from `from`: to the
    /// device, or answered; false when it is not WireGuard.
    fn take_wireguard(&self, local: SocketAddr, from: SocketAddr, data: &[u8]) -> bool {
        if packet::wireguard_type(data).is_none() {
            return false;
        }
        let mut out = [0u8; BUF + packet::DATA_OVERHEAD];
        #[cfg(target_os = "linux")]
        if self.offload {
            if let Some(Some(peer)) = self.decapsulate_batched(local, from, data) {
                self.flush_queued(peer, &mut out);
            }
            return true;
        }
        let peer = match self.tunnel.decapsulate(local, from, data, &mut out) {
            Decapsulated::ToTun { offset, len, .. } => {
                self.write_device(&out[offset..offset + len]);
                return true;
            }
            Decapsulated::Reply(t, peer) => {
                // Answers go back out of the socket (or relay) the datagram came in on.
                self.send(t, &out);
                peer
            }
            Decapsulated::Done(peer) => Some(peer),
            Decapsulated::Dropped(why) => {
                self.refused(from, why);
                return true;
            }
        };
        if let Some(peer) = peer {
            self.flush_queued(peer, &mut out);
        }
        true
    }
}

impl DataPath {
    /// Packets that waited for `peer`'s handshake leave now (bounded by boringtun's queue of 256).
    fn flush_queued(&self, peer: holepunch::tunnel::PeerId, out: &mut [u8]) {
        for _ in 0..512 {
            let Some(t) = self.tunnel.flush(peer, out) else { break };
            self.send(t, out);
        }
    }
}

/// Another interface already numbered inside the overlay (a carrier-grade NAT hands out 100.64.0.0/10
/// addresses too): the tunnel's route would hide it.
pub fn check_overlay_clash(settings: &TunSettings) -> Result<()> {
    let Ok(addresses) = holepunch::io::interface_addresses() else { return Ok(()) };
    if let Some(ip) = addresses.iter().find(|ip| settings.overlay.contains(**ip) && **ip != settings.address.addr()) {
        bail!(
            "the overlay {} clashes with local address {ip} (a carrier-grade NAT numbers from 100.64.0.0/10 too): \
             choose another range with --overlay",
            settings.overlay
        );
    }
    Ok(())
}

/// The TUN device, and whether it has offloads.
pub struct Device {
    device: SyncDevice,
    offload: bool,
}

/// Creates the TUN device with our address, the overlay's route and the MTU; on Linux with offloads when the
/// kernel has them, on Windows with the socket's segmentation and receive coalescing where the system has
/// them (`PUNCHD_NO_OFFLOAD=1` turns either off, to compare). Without CAP_NET_ADMIN, a one-line error that
/// says so.
pub fn open_device(settings: &TunSettings) -> Result<Device> {
    let build = |offload: bool| {
        let builder = tun_rs::DeviceBuilder::new().name(&settings.name).mtu(settings.mtu);
        #[cfg(target_os = "linux")]
        let builder = builder.offload(offload);
        #[cfg(not(target_os = "linux"))]
        let _ = offload;
        let builder = match settings.address.addr() {
            IpAddr::V4(a) => builder.ipv4(a, settings.address.len(), None),
            IpAddr::V6(a) => builder.ipv6(a, settings.address.len()),
        };
        builder.build_sync()
    };
    let want = cfg!(target_os = "linux") && std::env::var_os("PUNCHD_NO_OFFLOAD").is_none();
    if want {
        match build(true) {
            Ok(device) => return Ok(Device { device, offload: true }),
            Err(e) if e.kind() == ErrorKind::PermissionDenied => return Err(device_error(&settings.name, e)),
            Err(e) => log::info!("tunnel: no TUN offloads ({e}); one packet per system call"),
        }
    }
    let device = build(false).map_err(|e| device_error(&settings.name, e))?;
    // Wintun has no offloads; the socket's stand in (coalesce.rs, holepunch::io::coalesce).
    #[cfg(windows)]
    let offload = {
        let on = std::env::var_os("PUNCHD_NO_OFFLOAD").is_none();
        if !on {
            holepunch::io::coalesce::disable_receive_coalescing();
        }
        on
    };
    #[cfg(not(windows))]
    let offload = false;
    Ok(Device { device, offload })
}

/// The punching socket's send buffer with the tunnel on: room for a whole batch of encrypted segments.
#[cfg(target_os = "linux")]
const SNDBUF: libc::c_int = 7 << 20;
/// Its receive buffer: deep, to absorb bursts the decrypting thread cannot take at once; the queue management
/// in offload.rs keeps it from standing, so the depth costs no latency under load (docs/performance.md,
/// "Tunnel throughput").
#[cfg(target_os = "linux")]
const RCVBUF: libc::c_int = 7 << 20;

/// Larger socket buffers for the tunnel's bursts (wireguard-go asks for 7 MB); as root past the system's
/// limit (SO_RCVBUFFORCE), else up to it. Best effort.
pub fn grow_socket_buffers(socket: &UdpSocket) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // PUNCHD_SNDBUF / PUNCHD_RCVBUF (bytes, 0 = the system's default) override, to measure the
        // latency/throughput trade (docs/performance.md, "Tunnel throughput").
        let size = |var: &str, default: libc::c_int| -> libc::c_int {
            std::env::var(var).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
        };
        let wanted = [
            (size("PUNCHD_RCVBUF", RCVBUF), libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
            (size("PUNCHD_SNDBUF", SNDBUF), libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
        ];
        for (size, force, plain) in wanted {
            if size == 0 {
                continue;
            }
            for opt in [force, plain] {
                // SAFETY: a plain int option on a socket we own.
                let r = unsafe {
                    libc::setsockopt(
                        socket.as_raw_fd(),
                        libc::SOL_SOCKET,
                        opt,
                        (&size as *const libc::c_int).cast(),
                        std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                    )
                };
                if r == 0 {
                    break;
                }
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = socket;
}

fn device_error(name: &str, e: std::io::Error) -> anyhow::Error {
    // Windows: Wintun's DLL is loaded when the device is made, and making an adapter needs elevation
    // (docs/windows.md); the Linux advice below would mislead.
    #[cfg(windows)]
    {
        if e.to_string().contains("LoadLibrary") {
            return anyhow!(
                "creating the tunnel device {name}: wintun.dll cannot be loaded: put the amd64 wintun.dll next to \
                 punchd.exe, or run without the tunnel (--no-tun)"
            );
        }
        if e.kind() == ErrorKind::PermissionDenied {
            return anyhow!(
                "creating the tunnel device {name} needs administrator rights: run punchd elevated (or as a \
                 service), or run without the tunnel (--no-tun)"
            );
        }
    }
    match e.kind() {
        ErrorKind::PermissionDenied => anyhow!(
            "creating the tunnel device {name} needs CAP_NET_ADMIN: run punchd as root, grant it \
             (setcap cap_net_admin+ep punchd), or run without the tunnel (--no-tun)"
        ),
        ErrorKind::NotFound => {
            anyhow!("creating the tunnel device {name}: no TUN driver ({e}; on Linux: modprobe tun)")
        }
        _ if e.raw_os_error() == Some(16) => {
            anyhow!("creating the tunnel device {name}: an interface of that name is in use (choose --tun-name)")
        }
        _ => anyhow!("creating the tunnel device {name}: {e}"),
    }
}

/// One line for the log: the device and the addresses.
pub fn describe(settings: &TunSettings, peers: &[(String, IpAddr)]) -> String {
    let list: Vec<String> = peers.iter().map(|(n, ip)| format!("{n} {ip}")).collect();
    format!(
        "tunnel {} up: {} (overlay {}), MTU {}; peers: {}",
        settings.name,
        settings.address,
        settings.overlay,
        settings.mtu,
        if list.is_empty() { "none".to_string() } else { list.join(", ") }
    )
}

/// The host prefix of a peer's tunnel address: its allowed IPs.
pub fn allowed(ip: IpAddr) -> Vec<IpPrefix> {
    vec![IpPrefix::host(ip)]
}

/// The Windows data path's socket side on the system it runs on: under Wine (scripts/wine-unit-tests.sh)
/// segmentation and receive coalescing are refused and these prove the fallback; on Linux they run the
/// platform-neutral code.
#[cfg(test)]
mod tests {
    use holepunch::io::blocking::{Driver, Intercept};
    use holepunch::io::coalesce::{self, Offload, SegmentBatch};
    use holepunch::net::{Engine, Received, Transmit};
    use std::net::{SocketAddr, UdpSocket};
    use std::ops::ControlFlow;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    const SIZES: [usize; 5] = [300, 300, 300, 120, 300];

    fn batch_to(dst: SocketAddr) -> SegmentBatch {
        let mut batch = SegmentBatch::new(8, 400);
        for (i, &len) in SIZES.iter().enumerate() {
            batch.next_slot().unwrap()[..len].fill(i as u8 + 1);
            batch.push(len, dst);
        }
        batch
    }

    #[test]
    fn a_batch_arrives_as_separate_datagrams_segmented_or_not() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let batch = batch_to(rx.local_addr().unwrap());
        let offload = Offload::new();
        for _ in 0..2 {
            let sent = coalesce::send_batch(&batch, &tx, &offload, coalesce::max_segments());
            assert_eq!((sent.sent, sent.failed), (SIZES.len(), 0));
            let mut buf = [0u8; 2048];
            for (i, &len) in SIZES.iter().enumerate() {
                let (n, _) = rx.recv_from(&mut buf).unwrap();
                assert_eq!((n, buf[0], buf[n - 1]), (len, i as u8 + 1, i as u8 + 1), "datagram {i}");
            }
        }
    }

    /// Records the datagrams offered to it and stops the driver once it has `want`.
    struct Collect {
        seen: Mutex<Vec<Vec<u8>>>,
        want: usize,
        stop: Arc<AtomicBool>,
    }

    impl Intercept for Collect {
        fn intercept(&self, _: &UdpSocket, _: SocketAddr, _: SocketAddr, data: &[u8]) -> bool {
            let mut seen = self.seen.lock().unwrap();
            seen.push(data.to_vec());
            if seen.len() >= self.want {
                self.stop.store(true, Ordering::Relaxed);
            }
            true
        }
    }

    struct Idle;

    impl Engine for Idle {
        type Event = ();
        fn handle_input(&mut self, _: Instant, _: Received, _: &[u8]) -> bool {
            false
        }
        fn handle_timeout(&mut self, _: Instant) {}
        fn poll_transmit(&mut self, _: &mut [u8]) -> Option<Transmit> {
            None
        }
        fn poll_timeout(&self) -> Option<Instant> {
            None
        }
        fn poll_event(&mut self) -> Option<()> {
            None
        }
    }

    #[test]
    fn the_data_path_receiver_sees_each_datagram_on_its_own() {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let dst = socket.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let collect = Arc::new(Collect { seen: Mutex::default(), want: SIZES.len(), stop: Arc::clone(&stop) });
        let driver = Driver::new(vec![socket])
            .unwrap()
            .intercept(Arc::clone(&collect) as Arc<dyn Intercept>)
            .stop_flag(Arc::clone(&stop))
            .deadline(Instant::now() + Duration::from_secs(5));
        // Queued in the socket before its receiver thread starts.
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let sent = coalesce::send_batch(&batch_to(dst), &tx, &Offload::new(), coalesce::max_segments());
        assert_eq!(sent.sent, SIZES.len());
        let _ = driver.run(&mut Idle, |_| ControlFlow::<()>::Continue(()));
        let seen = collect.seen.lock().unwrap();
        let shape: Vec<(usize, u8)> = seen.iter().map(|d| (d.len(), d[0])).collect();
        let want: Vec<(usize, u8)> = SIZES.iter().enumerate().map(|(i, &len)| (len, i as u8 + 1)).collect();
        assert_eq!(shape, want);
    }
}
