//! SSDP search (UPnP Device Architecture 1.1 §1.3.2, §1.3.3) as a sans-IO engine: M-SEARCH requests out,
//! search responses in. IPv4 only (239.255.255.250:1900), which is where Internet Gateway Devices answer.

use std::collections::HashSet;
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use crate::net::{Engine, Received, Transmit, Transport};

/// The SSDP multicast group and port.
pub const MULTICAST: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(239, 255, 255, 250)), 1900);
/// Service types an IGD offers for port mapping; any of them has the actions we use.
pub const WAN_IP_CONNECTION_1: &str = "urn:schemas-upnp-org:service:WANIPConnection:1";
pub const WAN_IP_CONNECTION_2: &str = "urn:schemas-upnp-org:service:WANIPConnection:2";
pub const WAN_PPP_CONNECTION_1: &str = "urn:schemas-upnp-org:service:WANPPPConnection:1";
/// Default search targets, the newest first.
pub const IGD_SERVICES: [&str; 3] = [WAN_IP_CONNECTION_2, WAN_IP_CONNECTION_1, WAN_PPP_CONNECTION_1];
/// Largest datagram we build.
pub const MAX_REQUEST_LEN: usize = 512;

/// Build an M-SEARCH for `st` with response delay `mx` seconds (1–5 per UDA 1.1).
pub fn build_msearch(st: &str, mx: u8, host: SocketAddr, buf: &mut [u8]) -> Option<usize> {
    let msg = format!(
        "M-SEARCH * HTTP/1.1\r\nHOST: {host}\r\nMAN: \"ssdp:discover\"\r\nMX: {}\r\nST: {st}\r\n\
         USER-AGENT: Linux/1 UPnP/1.1 holepunch/{}\r\n\r\n",
        mx.clamp(1, 5),
        env!("CARGO_PKG_VERSION")
    );
    let out = buf.get_mut(..msg.len())?;
    out.copy_from_slice(msg.as_bytes());
    Some(msg.len())
}

/// A search response (UDA 1.1 §1.3.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchResponse {
    pub st: String,
    pub location: String,
    pub usn: Option<String>,
    pub server: Option<String>,
}

/// Why a datagram is not a search response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("not UTF-8 text")]
    NotText,
    #[error("not an HTTP/1.x 200 response")]
    NotOk,
    #[error("bad header line")]
    BadHeader,
    #[error("missing {0} header")]
    Missing(&'static str),
    #[error("no empty line ends the header")]
    Unterminated,
}

/// Parse a search response. Never panics.
pub fn parse_response(data: &[u8]) -> Result<SearchResponse, ParseError> {
    let text = std::str::from_utf8(data).map_err(|_| ParseError::NotText)?;
    // The header must end with a real empty line; a datagram cut short must not pass as complete.
    let head_end = match (text.find("\r\n\r\n"), text.find("\n\n")) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b).unwrap_or(text.len()),
    };
    let terminated = head_end < text.len();
    let mut lines = text[..head_end].split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let status = lines.next().unwrap_or("");
    let mut parts = status.split(' ');
    let (Some(ver), Some("200")) = (parts.next(), parts.next()) else { return Err(ParseError::NotOk) };
    if !terminated {
        return Err(ParseError::Unterminated);
    }
    if ver != "HTTP/1.1" && ver != "HTTP/1.0" {
        return Err(ParseError::NotOk);
    }
    let (mut st, mut location, mut usn, mut server) = (None, None, None, None);
    for line in lines {
        let Some((k, v)) = line.split_once(':') else { return Err(ParseError::BadHeader) };
        let v = v.trim().to_string();
        match k.trim().to_ascii_uppercase().as_str() {
            "ST" => st = Some(v),
            "LOCATION" => location = Some(v),
            "USN" => usn = Some(v),
            "SERVER" => server = Some(v),
            _ => {}
        }
    }
    let st = st.filter(|s| !s.is_empty()).ok_or(ParseError::Missing("ST"))?;
    let location = location.filter(|s| !s.is_empty()).ok_or(ParseError::Missing("LOCATION"))?;
    Ok(SearchResponse { st, location, usn, server })
}

/// Search parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchConfig {
    /// Search targets (ST values), one M-SEARCH each per round.
    pub targets: Vec<String>,
    /// MX value sent (seconds the devices may wait before answering).
    pub mx: u8,
    /// How long to collect answers.
    pub wait: Duration,
    /// Rounds of M-SEARCH (UDP may lose one), spread over the first half of `wait`.
    pub rounds: u32,
    /// Where the requests go (the multicast group, or a device for a unicast search).
    pub destination: SocketAddr,
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig {
            targets: IGD_SERVICES.iter().map(|s| s.to_string()).collect(),
            mx: 1,
            wait: Duration::from_secs(2),
            rounds: 2,
            destination: MULTICAST,
        }
    }
}

/// What the search tells its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A device answered (each (responder, ST, LOCATION) once).
    Found { from: SocketAddr, response: SearchResponse },
    /// The wait is over.
    Finished { found: usize, malformed: usize },
}

/// Sans-IO SSDP search, a [`net::Engine`](Engine): M-SEARCH rounds out of the socket bound to `local`, search
/// responses in, `Event::Finished` when the wait is over.
#[derive(Debug)]
pub struct Search {
    local: SocketAddr,
    config: SearchConfig,
    start: Instant,
    now: Instant,
    round: u32,
    next_target: usize,
    seen: HashSet<(SocketAddr, String, String)>,
    malformed: usize,
    finished: bool,
    events: VecDeque<Event>,
}

impl Search {
    pub fn new(now: Instant, local: SocketAddr, config: SearchConfig) -> Self {
        Search {
            local,
            config,
            start: now,
            now,
            round: 0,
            next_target: 0,
            seen: HashSet::new(),
            malformed: 0,
            finished: false,
            events: VecDeque::new(),
        }
    }

    fn round_at(&self, round: u32) -> Instant {
        let spread = self.config.wait / 2;
        self.start + spread * round / self.config.rounds.max(1)
    }

    fn end(&self) -> Instant {
        self.start + self.config.wait
    }

    pub fn is_finished(&self) -> bool {
        self.finished
    }
}

impl Engine for Search {
    type Event = Event;

    /// Consumes search responses (from any host: devices answer a multicast search from their own address)
    /// until the wait is over. Anything else is not ours, but it is counted in `Finished { malformed }`.
    fn handle_input(&mut self, now: Instant, input: Received, data: &[u8]) -> bool {
        self.now = now;
        if self.finished || input.transport != Transport::Udp {
            return false;
        }
        let from = input.source;
        match parse_response(data) {
            Ok(response) => {
                if self.seen.insert((from, response.st.clone(), response.location.clone())) {
                    log::debug!("ssdp: {from} offers {} at {}", response.st, response.location);
                    self.events.push_back(Event::Found { from, response });
                }
                true
            }
            Err(e) => {
                self.malformed += 1;
                log::debug!("ssdp: ignoring datagram from {from}: {e}");
                false
            }
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        if !self.finished && now >= self.end() {
            self.finished = true;
            self.events.push_back(Event::Finished { found: self.seen.len(), malformed: self.malformed });
        }
    }

    fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        if self.finished || self.round >= self.config.rounds.max(1) || self.now < self.round_at(self.round) {
            return None;
        }
        let Some(st) = self.config.targets.get(self.next_target) else {
            self.round = self.config.rounds;
            return None;
        };
        let len = build_msearch(st, self.config.mx, self.config.destination, buf)?;
        self.next_target += 1;
        if self.next_target >= self.config.targets.len() {
            self.next_target = 0;
            self.round += 1;
        }
        Some(Transmit { local: self.local, dst: self.config.destination, len, ttl: None })
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if self.finished {
            return None;
        }
        if self.round < self.config.rounds.max(1) && !self.config.targets.is_empty() {
            return Some(self.round_at(self.round).min(self.end()));
        }
        Some(self.end())
    }

    fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msearch_bytes() {
        let mut b = [0u8; MAX_REQUEST_LEN];
        let n = build_msearch(WAN_IP_CONNECTION_1, 2, MULTICAST, &mut b).unwrap();
        let s = std::str::from_utf8(&b[..n]).unwrap();
        assert!(s.starts_with(
            "M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\nMX: 2\r\n\
             ST: urn:schemas-upnp-org:service:WANIPConnection:1\r\n"
        ));
        assert!(s.ends_with("\r\n\r\n"));
        assert!(build_msearch(WAN_IP_CONNECTION_1, 2, MULTICAST, &mut b[..10]).is_none());
    }

    const MINIUPNPD: &[u8] = b"HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\n\
        ST: urn:schemas-upnp-org:service:WANIPConnection:1\r\n\
        USN: uuid:12345678-0000-0000-0000-000000000000::urn:schemas-upnp-org:service:WANIPConnection:1\r\n\
        EXT:\r\nSERVER: Debian/12 UPnP/1.1 MiniUPnPd/2.3.1\r\nLOCATION: http://10.0.0.1:5000/rootDesc.xml\r\n\
        OPT: \"http://schemas.upnp.org/upnp/1/0/\"; ns=01\r\n01-NLS: 1\r\nBOOTID.UPNP.ORG: 1\r\n\r\n";

    #[test]
    fn parses_miniupnpd_response() {
        let r = parse_response(MINIUPNPD).unwrap();
        assert_eq!(r.st, WAN_IP_CONNECTION_1);
        assert_eq!(r.location, "http://10.0.0.1:5000/rootDesc.xml");
        assert_eq!(r.server.as_deref(), Some("Debian/12 UPnP/1.1 MiniUPnPd/2.3.1"));
    }

    #[test]
    fn malformed_responses() {
        assert_eq!(parse_response(b"\xff\xfe"), Err(ParseError::NotText));
        assert_eq!(parse_response(b"NOTIFY * HTTP/1.1\r\n\r\n"), Err(ParseError::NotOk));
        assert_eq!(parse_response(b"HTTP/1.1 404 Not Found\r\n\r\n"), Err(ParseError::NotOk));
        assert_eq!(parse_response(b"HTTP/1.1 200 OK\r\nST: x\r\n\r\n"), Err(ParseError::Missing("LOCATION")));
        assert_eq!(parse_response(b"HTTP/1.1 200 OK\r\nLOCATION: y\r\n\r\n"), Err(ParseError::Missing("ST")));
        assert_eq!(parse_response(b"HTTP/1.1 200 OK\r\nbroken\r\n\r\n"), Err(ParseError::BadHeader));
        assert_eq!(parse_response(b""), Err(ParseError::NotOk));
        for n in 0..MINIUPNPD.len() - 2 {
            assert!(parse_response(&MINIUPNPD[..n]).is_err(), "accepted truncation at {n}");
        }
    }

    #[test]
    fn engine_rounds_dedup_and_finish() {
        let t0 = Instant::now();
        let cfg = SearchConfig { wait: Duration::from_secs(2), rounds: 2, ..SearchConfig::default() };
        let local: SocketAddr = "10.0.0.2:40000".parse().unwrap();
        let mut s = Search::new(t0, local, cfg);
        let mut buf = [0u8; MAX_REQUEST_LEN];
        let mut sent = 0;
        while let Some(t) = s.poll_transmit(&mut buf) {
            assert_eq!((t.local, t.dst), (local, MULTICAST));
            sent += 1;
        }
        assert_eq!(sent, 3);
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_millis(500)));
        let gw: SocketAddr = "10.0.0.1:1900".parse().unwrap();
        let from_gw = Received::udp(local, gw);
        assert!(s.handle_input(t0 + Duration::from_millis(10), from_gw, MINIUPNPD));
        assert!(s.handle_input(t0 + Duration::from_millis(20), from_gw, MINIUPNPD));
        assert!(!s.handle_input(t0 + Duration::from_millis(30), from_gw, b"junk"));
        assert!(matches!(s.poll_event(), Some(Event::Found { from, .. }) if from == gw));
        assert!(s.poll_event().is_none());
        s.handle_timeout(t0 + Duration::from_millis(500));
        while s.poll_transmit(&mut buf).is_some() {
            sent += 1;
        }
        assert_eq!(sent, 6);
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(2)));
        s.handle_timeout(t0 + Duration::from_secs(2));
        assert_eq!(s.poll_event(), Some(Event::Finished { found: 1, malformed: 1 }));
        assert!(s.is_finished());
        assert_eq!(s.poll_timeout(), None);
    }
}
