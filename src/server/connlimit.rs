//! Caps on concurrent stream connections (STUN over TCP, RFC 8489 §6.2.2): a total, and a cap per source
//! (IPv4 address or IPv6 /64, see [`Source`]), so that one source reconnecting whenever a slot frees cannot
//! end up holding every slot and keep every other client out.
//!
//! Sans-IO: the caller asks before it keeps an accepted connection and reports when the connection is gone.
//! Memory is bounded by the total cap: a source with no open connection has no entry.

use super::source::Source;
use std::collections::HashMap;
use std::net::IpAddr;

/// Why a connection was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Every slot is taken.
    #[error("connection limit reached")]
    Full,
    /// This source already holds its share of the slots.
    #[error("per-source connection limit reached")]
    SourceFull,
}

/// Open-connection bookkeeping for one listener group.
#[derive(Debug)]
pub struct ConnectionLimit {
    max_total: usize,
    max_per_source: usize,
    open: usize,
    per_source: HashMap<Source, usize>,
}

impl ConnectionLimit {
    /// At most `max_total` connections, at most `max_per_source` from one source.
    pub fn new(max_total: usize, max_per_source: usize) -> Self {
        ConnectionLimit { max_total, max_per_source, open: 0, per_source: HashMap::new() }
    }

    /// Admits a connection from `ip`, or says why not. Every admitted connection must be [`closed`](Self::close).
    pub fn try_open(&mut self, ip: IpAddr) -> Result<(), Refused> {
        if self.open >= self.max_total {
            return Err(Refused::Full);
        }
        let n = self.per_source.entry(Source::of(ip)).or_insert(0);
        if *n >= self.max_per_source {
            return Err(Refused::SourceFull);
        }
        *n += 1;
        self.open += 1;
        Ok(())
    }

    /// A connection admitted for `ip` has ended.
    pub fn close(&mut self, ip: IpAddr) {
        let key = Source::of(ip);
        if let Some(n) = self.per_source.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&key);
            }
            self.open -= 1;
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open
    }

    /// Sources holding at least one connection.
    pub fn sources(&self) -> usize {
        self.per_source.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_source_cannot_take_every_slot() {
        let mut l = ConnectionLimit::new(10, 3);
        for _ in 0..3 {
            assert_eq!(l.try_open(ip("192.0.2.1")), Ok(()));
        }
        // Reconnecting as slots free does not help the hog: its own cap stays.
        assert_eq!(l.try_open(ip("192.0.2.1")), Err(Refused::SourceFull));
        l.close(ip("192.0.2.1"));
        assert_eq!(l.try_open(ip("192.0.2.1")), Ok(()));
        assert_eq!(l.try_open(ip("192.0.2.1")), Err(Refused::SourceFull));
        // Everyone else still gets in.
        for i in 2..9 {
            assert_eq!(l.try_open(ip(&format!("192.0.2.{i}"))), Ok(()));
        }
        assert_eq!(l.open(), 10);
        assert_eq!(l.try_open(ip("192.0.2.99")), Err(Refused::Full));
    }

    #[test]
    fn ipv6_counted_per_slash64() {
        let mut l = ConnectionLimit::new(100, 2);
        assert!(l.try_open(ip("2001:db8:1:2::1")).is_ok());
        assert!(l.try_open(ip("2001:db8:1:2::2")).is_ok());
        assert_eq!(l.try_open(ip("2001:db8:1:2:ffff::3")), Err(Refused::SourceFull));
        assert!(l.try_open(ip("2001:db8:1:3::1")).is_ok());
    }

    #[test]
    fn closing_forgets_the_source_and_unknown_close_is_harmless() {
        let mut l = ConnectionLimit::new(4, 4);
        l.close(ip("192.0.2.7"));
        assert_eq!(l.open(), 0);
        l.try_open(ip("192.0.2.7")).unwrap();
        l.try_open(ip("192.0.2.8")).unwrap();
        assert_eq!(l.sources(), 2);
        l.close(ip("192.0.2.7"));
        l.close(ip("192.0.2.8"));
        assert_eq!((l.open(), l.sources()), (0, 0));
    }
}
