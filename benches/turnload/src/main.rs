//! turnload: relayed packets per second through a TURN server on loopback (docs/performance.md, "TURN relay").
//!
//! `--pairs` client pairs; each client of a pair holds an allocation on the server and a channel to the other's
//! relayed address (RFC 8656 §11). Client A keeps `--window` ChannelData messages of `--size` bytes in flight
//! towards B; B echoes each back. Every message is relayed twice by the server per direction (client -> its
//! relay -> the other relay, which is the peer -> the other client), so one round trip is two relayed
//! messages, four relay hops. A pair that sees nothing for 100 ms counts a stall and refills its window (lost
//! messages are not re-sent). Reports relayed messages/s, payload Mbit/s and stalls, after a warm-up.

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use holepunch::stun::attr::{self, Attribute};
use holepunch::stun::integrity::long_term_key_md5;
use holepunch::stun::{ChannelData, Class, Message, MessageType, MessageWriter, Method};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(name = "turnload", about = "Loopback-only TURN relay load generator")]
struct Cli {
    /// The TURN server (127.0.0.0/8 or ::1 only).
    #[arg(long)]
    server: SocketAddr,
    #[arg(long, default_value = "alice")]
    user: String,
    #[arg(long, default_value = "secret")]
    password: String,
    /// Client pairs (two allocations each).
    #[arg(long, default_value_t = 4)]
    pairs: usize,
    /// Messages in flight per pair.
    #[arg(long, default_value_t = 16)]
    window: usize,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 1000)]
    size: usize,
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Print one JSON line instead of text.
    #[arg(long)]
    json: bool,
}

const CHANNEL: u16 = 0x4000;
const STALL: Duration = Duration::from_millis(100);

/// One TURN client: its socket, credentials learnt from the 401, its relayed address.
struct Client {
    sock: UdpSocket,
    server: SocketAddr,
    realm: String,
    nonce: String,
    user: String,
    password: String,
    relay: SocketAddr,
    n: u32,
}

impl Client {
    fn new(server: SocketAddr, user: &str, password: &str) -> Result<Client> {
        let sock = UdpSocket::bind(SocketAddr::new(server.ip(), 0))?;
        sock.set_read_timeout(Some(Duration::from_millis(500)))?;
        let _ = set_buffers(&sock);
        Ok(Client {
            sock,
            server,
            realm: String::new(),
            nonce: String::new(),
            user: user.into(),
            password: password.into(),
            relay: server,
            n: 0,
        })
    }

    fn request(&mut self, method: Method, signed: bool, fill: &dyn Fn(&mut MessageWriter<'_>)) -> Result<Vec<u8>> {
        self.n += 1;
        let mut tid = [7u8; 12];
        tid[..4].copy_from_slice(&self.n.to_be_bytes());
        let mut buf = [0u8; 512];
        let mut w = MessageWriter::new(&mut buf, MessageType::new(method, Class::Request), &tid)?;
        fill(&mut w);
        if signed {
            w.add(&Attribute::Username(&self.user))?;
            w.add(&Attribute::Realm(&self.realm))?;
            w.add(&Attribute::Nonce(&self.nonce))?;
            w.add_message_integrity(&long_term_key_md5(&self.user, &self.realm, &self.password))?;
        }
        let n = w.finish();
        let mut resp = [0u8; 1500];
        for _ in 0..5 {
            self.sock.send_to(&buf[..n], self.server)?;
            while let Ok((len, _)) = self.sock.recv_from(&mut resp) {
                if resp[8..20] == tid {
                    return Ok(resp[..len].to_vec());
                }
            }
        }
        bail!("no answer from {} to {method:?}", self.server)
    }

    fn allocate(&mut self) -> Result<()> {
        let rt = |w: &mut MessageWriter<'_>| w.add(&Attribute::RequestedTransport(17)).unwrap();
        let r = self.request(Method::ALLOCATE, false, &rt)?;
        let m = Message::parse(&r)?;
        match (m.get(attr::REALM)?, m.get(attr::NONCE)?) {
            (Some(Attribute::Realm(realm)), Some(Attribute::Nonce(nonce))) => {
                self.realm = realm.into();
                self.nonce = nonce.into();
            }
            _ => bail!("the first Allocate got no REALM and NONCE: {:?}", m.error_code()),
        }
        let r = self.request(Method::ALLOCATE, true, &rt)?;
        let m = Message::parse(&r)?;
        match m.get(attr::XOR_RELAYED_ADDRESS)? {
            Some(Attribute::XorRelayedAddress(a)) => self.relay = a,
            _ => bail!("Allocate refused: {:?}", m.error_code()),
        }
        Ok(())
    }

    fn bind(&mut self, peer: SocketAddr) -> Result<()> {
        let r = self.request(Method::CHANNEL_BIND, true, &|w| {
            w.add(&Attribute::ChannelNumber(CHANNEL)).unwrap();
            w.add(&Attribute::XorPeerAddress(peer)).unwrap();
        })?;
        match Message::parse(&r)?.error_code() {
            None => Ok(()),
            Some(e) => bail!("ChannelBind refused: {} {}", e.code, e.reason),
        }
    }
}

fn set_buffers(sock: &UdpSocket) -> std::io::Result<()> {
    let size: libc::c_int = 4 << 20;
    for opt in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        // SAFETY: setsockopt with a pointer to a live c_int and its size.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
    }
    Ok(())
}

struct Pair {
    a: Client,
    b: Client,
    in_flight: usize,
    last_progress: Instant,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if !cli.server.ip().is_loopback() {
        bail!("--server {} is not a loopback address: turnload only works on 127.0.0.0/8 and ::1", cli.server);
    }
    if cli.size < 8 || cli.size > 1400 {
        bail!("--size must be 8 to 1400 bytes");
    }
    let mut pairs = Vec::with_capacity(cli.pairs);
    for _ in 0..cli.pairs {
        let mut a = Client::new(cli.server, &cli.user, &cli.password)?;
        let mut b = Client::new(cli.server, &cli.user, &cli.password)?;
        a.allocate().context("client A")?;
        b.allocate().context("client B")?;
        a.bind(b.relay)?;
        b.bind(a.relay)?;
        a.sock.set_nonblocking(true)?;
        b.sock.set_nonblocking(true)?;
        pairs.push(Pair { a, b, in_flight: 0, last_progress: Instant::now() });
    }
    let mut msg = vec![0u8; 4 + cli.size + 3];
    let payload = vec![0x5au8; cli.size];
    let len = ChannelData::write(CHANNEL, &payload, false, &mut msg).map_err(|e| anyhow!("{e}"))?;
    let mut fds: Vec<libc::pollfd> = pairs
        .iter()
        .flat_map(|p| [p.a.sock.as_raw_fd(), p.b.sock.as_raw_fd()])
        .map(|fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 })
        .collect();
    let start = Instant::now();
    let measure_from = start + Duration::from_secs(cli.warmup);
    let end = measure_from + Duration::from_secs(cli.duration);
    let (mut round_trips, mut stalls) = (0u64, 0u64);
    let mut buf = [0u8; 2048];
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let measuring = now >= measure_from;
        for p in pairs.iter_mut() {
            if now.duration_since(p.last_progress) > STALL {
                if measuring {
                    stalls += 1;
                }
                p.in_flight = 0;
                p.last_progress = now;
            }
            while p.in_flight < cli.window {
                if p.a.sock.send_to(&msg[..len], cli.server).is_err() {
                    break;
                }
                p.in_flight += 1;
            }
        }
        // SAFETY: poll over a slice of live pollfds.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 10) };
        for (i, p) in pairs.iter_mut().enumerate() {
            if fds[2 * i + 1].revents != 0 {
                // B echoes what arrives back through its own channel.
                while let Ok((n, _)) = p.b.sock.recv_from(&mut buf) {
                    if ChannelData::parse(&buf[..n]).is_ok() {
                        let _ = p.b.sock.send_to(&buf[..n], cli.server);
                    }
                }
            }
            if fds[2 * i].revents != 0 {
                while let Ok((n, _)) = p.a.sock.recv_from(&mut buf) {
                    if ChannelData::parse(&buf[..n]).is_ok() {
                        p.in_flight = p.in_flight.saturating_sub(1);
                        p.last_progress = Instant::now();
                        if measuring {
                            round_trips += 1;
                        }
                    }
                }
            }
        }
    }
    // Give the allocations back (Refresh with LIFETIME 0), so runs do not pile up against the user's quota.
    for p in pairs.iter_mut() {
        for c in [&mut p.a, &mut p.b] {
            let _ = c.sock.set_nonblocking(false);
            let _ = c.request(Method::REFRESH, true, &|w| w.add(&Attribute::Lifetime(0)).unwrap());
        }
    }
    let secs = cli.duration as f64;
    let messages = 2.0 * round_trips as f64 / secs;
    let mbit = messages * cli.size as f64 * 8.0 / 1e6;
    if cli.json {
        println!(
            "{{\"relayed_messages_per_s\":{messages:.0},\"payload_mbit_per_s\":{mbit:.1},\"round_trips\":{round_trips},\"stalls\":{stalls},\"pairs\":{},\"window\":{},\"size\":{}}}",
            cli.pairs, cli.window, cli.size
        );
    } else {
        println!(
            "relayed {messages:.0} messages/s ({mbit:.1} Mbit/s of {}-byte payloads), {round_trips} round trips, {stalls} stalls; {} pairs x {} in flight",
            cli.size, cli.pairs, cli.window
        );
    }
    Ok(())
}
