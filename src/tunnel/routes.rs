//! Cryptokey routing (the WireGuard whitepaper §2): each peer owns a set of allowed IP prefixes. A packet from
//! the TUN device goes to the peer owning its destination (longest prefix wins); a packet decrypted from a
//! peer is delivered only when its source lies in that peer's prefixes, so one peer cannot speak for another.

use crate::net::IpPrefix;
use std::net::IpAddr;

/// Prefixes and their owners, longest first. A small mesh holds a handful, so a sorted list beats a trie.
#[derive(Clone, Debug)]
pub struct AllowedIps<T> {
    entries: Vec<(IpPrefix, T)>,
}

impl<T> Default for AllowedIps<T> {
    fn default() -> Self {
        AllowedIps { entries: Vec::new() }
    }
}

impl<T: Copy + PartialEq> AllowedIps<T> {
    /// Adds `prefix` for `owner`; a prefix already owned keeps its first owner (returned as the error).
    pub fn insert(&mut self, prefix: IpPrefix, owner: T) -> Result<(), T> {
        let net = IpPrefix::new(prefix.network(), prefix.len()).unwrap_or(prefix);
        if let Some((_, o)) = self.entries.iter().find(|(p, _)| *p == net) {
            return Err(*o);
        }
        let at = self.entries.iter().position(|(p, _)| p.len() < net.len()).unwrap_or(self.entries.len());
        self.entries.insert(at, (net, owner));
        Ok(())
    }

    /// The owner of the longest prefix containing `ip`.
    pub fn lookup(&self, ip: IpAddr) -> Option<T> {
        self.entries.iter().find(|(p, _)| p.contains(ip)).map(|(_, o)| *o)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every prefix with its owner, longest first.
    pub fn iter(&self) -> impl Iterator<Item = &(IpPrefix, T)> {
        self.entries.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins() {
        let mut r = AllowedIps::default();
        r.insert("100.64.0.0/10".parse().unwrap(), 1).unwrap();
        r.insert("100.64.1.2/32".parse().unwrap(), 2).unwrap();
        r.insert("fd00::/64".parse().unwrap(), 3).unwrap();
        assert_eq!(r.lookup("100.64.1.2".parse().unwrap()), Some(2));
        assert_eq!(r.lookup("100.64.1.3".parse().unwrap()), Some(1));
        assert_eq!(r.lookup("10.0.0.1".parse().unwrap()), None);
        assert_eq!(r.lookup("fd00::9".parse().unwrap()), Some(3));
        assert_eq!(r.insert("100.64.1.2/32".parse().unwrap(), 4), Err(2));
        assert_eq!(r.insert("100.64.9.9/10".parse().unwrap(), 4), Err(1), "same network, other host bits");
    }
}
