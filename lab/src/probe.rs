//! A tiny UDP probe, independent of the holepunch library, to check that each preset behaves as
//! named. Plain `std::net::UdpSocket` and a text protocol, one request per datagram:
//!
//! | request            | answer (to the sender)                                                   |
//! |--------------------|--------------------------------------------------------------------------|
//! | `Q <nonce>`        | `S <nonce> <sender ip:port>` from the socket that got the request        |
//! | `Q <nonce> R <a>`  | the same, but sent from the responder's socket bound to `<a>` (filtering)|
//! | `C <tag> <seq>`    | nothing; counts the datagram under `<tag>` (loss upstream)               |
//! | `T <tag>`          | `N <tag> <count>`                                                        |
//! | `B <tag> <n>`      | `n` datagrams `b <tag> <i>` (loss downstream; once per tag)             |
//!
//! The CLI exposes it as `holepunch-lab probe serve|query|listen|send|count|burst`.

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const MAX_TAGS: usize = 4096;
const MAX_BURST: u32 = 100_000;
const POLL: Duration = Duration::from_millis(50);

static NONCE: AtomicU64 = AtomicU64::new(0);

/// A nonce unlikely to repeat across processes (time, pid and a counter; no crypto needed).
fn nonce() -> u64 {
    let t = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    t ^ (u64::from(std::process::id()) << 40)
        ^ NONCE.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

#[derive(Default)]
struct Counts {
    counts: HashMap<String, u64>,
    bursts: HashSet<String>,
}

/// Answers requests on every socket in `binds` until `stop` is set or `limit` has passed.
pub fn serve(binds: &[SocketAddr], limit: Option<Duration>, stop: &AtomicBool) -> io::Result<()> {
    let mut socks = Vec::new();
    for b in binds {
        let s = UdpSocket::bind(b).map_err(|e| io::Error::new(e.kind(), format!("bind {b}: {e}")))?;
        s.set_read_timeout(Some(POLL))?;
        socks.push(s);
    }
    let socks = Arc::new(socks);
    let counts = Arc::new(Mutex::new(Counts::default()));
    let deadline = limit.map(|l| Instant::now() + l);
    std::thread::scope(|scope| {
        for i in 0..socks.len() {
            let socks = socks.clone();
            let counts = counts.clone();
            scope.spawn(move || {
                let mut buf = [0u8; 1500];
                while !stop.load(Ordering::Relaxed) && deadline.is_none_or(|d| Instant::now() < d) {
                    let Ok((n, from)) = socks[i].recv_from(&mut buf) else { continue };
                    let Ok(text) = std::str::from_utf8(&buf[..n]) else { continue };
                    answer(&socks, i, from, text, &counts);
                }
            });
        }
    });
    Ok(())
}

fn answer(socks: &[UdpSocket], i: usize, from: SocketAddr, text: &str, counts: &Mutex<Counts>) {
    let mut w = text.split_whitespace();
    match (w.next(), w.next()) {
        (Some("Q"), Some(nonce)) => {
            let reply = format!("S {nonce} {from}");
            let sock = match (w.next(), w.next().and_then(|a| a.parse::<SocketAddr>().ok())) {
                (Some("R"), Some(addr)) => socks.iter().find(|s| s.local_addr().ok() == Some(addr)),
                _ => Some(&socks[i]),
            };
            match sock {
                Some(s) => {
                    let _ = s.send_to(reply.as_bytes(), from);
                }
                None => {
                    let _ = socks[i].send_to(format!("E {nonce} no-such-socket").as_bytes(), from);
                }
            }
        }
        (Some("C"), Some(tag)) if tag.len() <= 32 => {
            let mut c = counts.lock().unwrap_or_else(|e| e.into_inner());
            if c.counts.len() < MAX_TAGS || c.counts.contains_key(tag) {
                *c.counts.entry(tag.to_owned()).or_default() += 1;
            }
        }
        (Some("T"), Some(tag)) => {
            let n = counts.lock().unwrap_or_else(|e| e.into_inner()).counts.get(tag).copied().unwrap_or(0);
            let _ = socks[i].send_to(format!("N {tag} {n}").as_bytes(), from);
        }
        (Some("B"), Some(tag)) if tag.len() <= 32 => {
            let Some(n) = w.next().and_then(|n| n.parse::<u32>().ok()) else { return };
            {
                let mut c = counts.lock().unwrap_or_else(|e| e.into_inner());
                if c.bursts.len() >= MAX_TAGS || !c.bursts.insert(tag.to_owned()) {
                    return;
                }
            }
            for k in 0..n.min(MAX_BURST) {
                let _ = socks[i].send_to(format!("b {tag} {k}").as_bytes(), from);
                // Paced so the receiver's socket buffer never overflows: only the lab's loss counts.
                if k % 5 == 4 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        _ => {}
    }
}

/// What the responder saw of one query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueryReply {
    /// The sender address the responder saw: the mapping.
    pub mapped: SocketAddr,
    /// Where the answer came from.
    pub from: SocketAddr,
}

/// Sends `Q` to `to` (asking for the answer from `reply_from`, if given) up to three times within
/// `timeout`; `None` when no answer came: it was filtered (or lost).
pub fn query(
    sock: &UdpSocket,
    to: SocketAddr,
    reply_from: Option<SocketAddr>,
    timeout: Duration,
) -> io::Result<Option<QueryReply>> {
    let nonce = nonce().to_string();
    let req = match reply_from {
        Some(r) => format!("Q {nonce} R {r}"),
        None => format!("Q {nonce}"),
    };
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 1500];
    for attempt in 0..3u32 {
        sock.send_to(req.as_bytes(), to)?;
        let until = (Instant::now() + timeout / 3).min(deadline);
        while let Some(left) = until.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
            sock.set_read_timeout(Some(left))?;
            let (n, from) = match sock.recv_from(&mut buf) {
                Ok(x) => x,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => break,
                // An ICMP error from an earlier send; keep waiting.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(e) => return Err(e),
            };
            let Ok(text) = std::str::from_utf8(&buf[..n]) else { continue };
            let mut w = text.split_whitespace();
            if let (Some("S"), Some(n), Some(addr)) = (w.next(), w.next(), w.next()) {
                if n == nonce {
                    if let Ok(mapped) = addr.parse() {
                        return Ok(Some(QueryReply { mapped, from }));
                    }
                }
            }
        }
        log::debug!(target: "lab::probe", "query {to} attempt {attempt} unanswered");
    }
    Ok(None)
}

/// Listens on `sock` for `limit`, writing `got <from> <first word>` per datagram to `out` and
/// answering `Q` requests like the responder (so a host behind a NAT can be probed, e.g. through a
/// hairpin). With `hello`, first queries that responder and writes `mapped <addr>` (or
/// `mapped none`), which also opens the mapping.
pub fn listen(sock: &UdpSocket, hello: Option<SocketAddr>, limit: Duration, out: &mut dyn Write) -> io::Result<()> {
    let deadline = Instant::now() + limit;
    if let Some(h) = hello {
        match query(sock, h, None, Duration::from_secs(2))? {
            Some(r) => writeln!(out, "mapped {}", r.mapped)?,
            None => writeln!(out, "mapped none")?,
        }
        out.flush()?;
    }
    let mut buf = [0u8; 1500];
    while let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
        sock.set_read_timeout(Some(left.min(POLL)))?;
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::ConnectionRefused
                ) =>
            {
                continue
            }
            Err(e) => return Err(e),
        };
        let text = String::from_utf8_lossy(&buf[..n]);
        let mut w = text.split_whitespace();
        let first = w.next().unwrap_or("-");
        writeln!(out, "got {from} {first}")?;
        out.flush()?;
        if first == "Q" {
            if let Some(nonce) = w.next() {
                let _ = sock.send_to(format!("S {nonce} {from}").as_bytes(), from);
            }
        }
    }
    Ok(())
}

/// Round-trip times of `n` sequential queries to `to` (each waits up to a second; unanswered ones
/// are left out).
pub fn rtt(sock: &UdpSocket, to: SocketAddr, n: u32) -> io::Result<Vec<Duration>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 1500];
    for _ in 0..n {
        let nonce = nonce().to_string();
        let start = Instant::now();
        sock.send_to(format!("Q {nonce}").as_bytes(), to)?;
        let deadline = start + Duration::from_secs(1);
        while let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
            sock.set_read_timeout(Some(left))?;
            let Ok((len, _)) = sock.recv_from(&mut buf) else { break };
            let text = String::from_utf8_lossy(&buf[..len]);
            if text.split_whitespace().nth(1) == Some(nonce.as_str()) {
                out.push(start.elapsed());
                break;
            }
        }
        // Spaced out so the answers of a delayed line do not overlap.
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(out)
}

/// Asks a NAT-PMP server (RFC 6886 §3.3) to map UDP `internal` (suggesting `external`) for
/// `lifetime` seconds. Returns the granted external port and lifetime, `Err` on a result code other
/// than success, `None` when the gateway never answered (4 tries, 250 ms doubling as in §3.1).
pub fn natpmp_map_udp(
    sock: &UdpSocket,
    gateway: SocketAddr,
    internal: u16,
    external: u16,
    lifetime: u32,
) -> io::Result<Option<(u16, u32)>> {
    let mut req = vec![0u8, 1, 0, 0];
    req.extend_from_slice(&internal.to_be_bytes());
    req.extend_from_slice(&external.to_be_bytes());
    req.extend_from_slice(&lifetime.to_be_bytes());
    let mut buf = [0u8; 64];
    let mut wait = Duration::from_millis(250);
    for _ in 0..4 {
        sock.send_to(&req, gateway)?;
        sock.set_read_timeout(Some(wait))?;
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            // Version 0, opcode 128 + 1, from the gateway we asked.
            if from != gateway || n < 16 || buf[0] != 0 || buf[1] != 129 {
                continue;
            }
            let result = u16::from_be_bytes([buf[2], buf[3]]);
            if result != 0 {
                return Err(io::Error::other(format!("NAT-PMP result code {result}")));
            }
            let ext = u16::from_be_bytes([buf[10], buf[11]]);
            let life = u32::from_be_bytes([buf[12], buf[13], buf[14], buf[15]]);
            return Ok(Some((ext, life)));
        }
        wait *= 2;
    }
    Ok(None)
}

/// Sends `n` datagrams `X <i>` to `to` (an unsolicited sender for filtering tests).
pub fn send(sock: &UdpSocket, to: SocketAddr, n: u32) -> io::Result<()> {
    for i in 0..n {
        sock.send_to(format!("X {i}").as_bytes(), to)?;
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// Sends `n` counted datagrams to the responder and asks how many arrived. Returns the count, or
/// `None` if the responder never answered the question (20 tries).
pub fn count(sock: &UdpSocket, to: SocketAddr, n: u32) -> io::Result<Option<u64>> {
    let tag = format!("c{}", nonce());
    for i in 0..n {
        sock.send_to(format!("C {tag} {i}").as_bytes(), to)?;
        if i % 5 == 4 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    // Let stragglers arrive before asking.
    std::thread::sleep(Duration::from_millis(100));
    let mut buf = [0u8; 1500];
    for _ in 0..20 {
        sock.send_to(format!("T {tag}").as_bytes(), to)?;
        sock.set_read_timeout(Some(Duration::from_millis(200)))?;
        while let Ok((len, _)) = sock.recv_from(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..len]);
            let w: Vec<&str> = text.split_whitespace().collect();
            if w.len() == 3 && w[0] == "N" && w[1] == tag {
                if let Ok(c) = w[2].parse() {
                    return Ok(Some(c));
                }
            }
        }
    }
    Ok(None)
}

/// Asks the responder for `n` datagrams and counts the distinct ones that arrive.
pub fn burst(sock: &UdpSocket, to: SocketAddr, n: u32) -> io::Result<u64> {
    let tag = format!("b{}", nonce());
    let mut seen = HashSet::new();
    let mut buf = [0u8; 1500];
    // The request itself may be lost: repeat it until the first datagram comes (the responder
    // bursts once per tag).
    for _ in 0..20 {
        sock.send_to(format!("B {tag} {n}").as_bytes(), to)?;
        sock.set_read_timeout(Some(Duration::from_millis(200)))?;
        if collect(sock, &tag, &mut seen, &mut buf) {
            break;
        }
    }
    // Then wait until the line is quiet for half a second.
    sock.set_read_timeout(Some(Duration::from_millis(500)))?;
    while collect(sock, &tag, &mut seen, &mut buf) && seen.len() < n as usize {}
    Ok(seen.len() as u64)
}

/// Receives until a timeout; true if anything of `tag` arrived.
fn collect(sock: &UdpSocket, tag: &str, seen: &mut HashSet<u32>, buf: &mut [u8]) -> bool {
    let mut any = false;
    while let Ok((len, _)) = sock.recv_from(buf) {
        let text = String::from_utf8_lossy(&buf[..len]);
        let w: Vec<&str> = text.split_whitespace().collect();
        if w.len() == 3 && w[0] == "b" && w[1] == tag {
            if let Ok(i) = w[2].parse() {
                seen.insert(i);
                any = true;
            }
        }
    }
    any
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responder_answers_query_count_and_burst_on_loopback() {
        let a: SocketAddr = "127.0.0.1:0".parse().unwrap();
        // Find two free ports by binding and releasing.
        let p1 = UdpSocket::bind(a).unwrap().local_addr().unwrap();
        let p2 = UdpSocket::bind(a).unwrap().local_addr().unwrap();
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| serve(&[p1, p2], Some(Duration::from_secs(10)), &stop).unwrap());
            std::thread::sleep(Duration::from_millis(100));
            let c = UdpSocket::bind(a).unwrap();
            let me = c.local_addr().unwrap();
            let r = query(&c, p1, None, Duration::from_secs(1)).unwrap().unwrap();
            assert_eq!(r.mapped, me);
            assert_eq!(r.from, p1);
            let r = query(&c, p1, Some(p2), Duration::from_secs(1)).unwrap().unwrap();
            assert_eq!(r.from, p2);
            assert_eq!(count(&c, p1, 200).unwrap(), Some(200));
            assert_eq!(burst(&c, p1, 300).unwrap(), 300);
            stop.store(true, Ordering::Relaxed);
        });
    }
}
