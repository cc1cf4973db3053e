//! Overlay addressing (docs/tunnel.md, "Addresses"): the overlay range (default 100.64.0.0/10, the shared
//! address space of RFC 6598), a peer's tunnel address derived from its public key when none is configured,
//! and the check that the range does not clash with an address the host already has (carrier-grade NATs
//! number their customers from the same range).

use crate::identity::PublicKey;
use crate::net::IpPrefix;
use sha2::{Digest, Sha256};
use std::net::{IpAddr, Ipv4Addr};

/// RFC 6598 §7: 100.64.0.0/10.
pub const DEFAULT_OVERLAY: IpPrefix = match IpPrefix::const_v4(Ipv4Addr::new(100, 64, 0, 0), 10) {
    Some(p) => p,
    None => panic!("valid prefix"),
};

/// The tunnel address of the peer with `key` inside `overlay`: a hash of the key picks the host number, never
/// the network's first or (IPv4) last address. Every peer computes the same address for the same key, so a
/// mesh agrees without configuration; two keys may collide (≈ n²/2²³ for n peers in a /10), which
/// [`check_unique`] reports; configure the address then.
pub fn derived_address(key: &PublicKey, overlay: IpPrefix) -> Option<IpAddr> {
    let digest = Sha256::new().chain_update(b"holepunch tunnel address").chain_update(key.0).finalize();
    let bits = u32::from(overlay.host_bits());
    let reserved: u128 = if overlay.addr().is_ipv4() { 2 } else { 1 };
    let hosts: u128 = if bits >= 128 { u128::MAX } else { 1u128 << bits };
    if hosts <= reserved {
        return None;
    }
    let mut n = [0u8; 16];
    n.copy_from_slice(&digest[..16]);
    let host = u128::from_be_bytes(n) % (hosts - reserved) + 1;
    overlay.nth(host)
}

/// The first pair of peers given the same address, if any.
pub fn check_unique<'a>(
    addresses: impl IntoIterator<Item = (&'a str, IpAddr)>,
) -> Result<(), (String, String, IpAddr)> {
    let mut seen: Vec<(&str, IpAddr)> = Vec::new();
    for (name, ip) in addresses {
        if let Some((other, _)) = seen.iter().find(|(_, a)| *a == ip) {
            return Err((other.to_string(), name.to_string(), ip));
        }
        seen.push((name, ip));
    }
    Ok(())
}

/// The first local interface address (name, prefix) whose network overlaps `overlay`, other than the tunnel's
/// own address.
pub fn clash<'a>(
    overlay: IpPrefix,
    own: IpAddr,
    interfaces: impl IntoIterator<Item = (&'a str, IpPrefix)>,
) -> Option<(&'a str, IpPrefix)> {
    interfaces.into_iter().find(|(_, p)| p.addr() != own && p.overlaps(&overlay))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::SecretKey;

    #[test]
    fn derived_addresses_are_stable_and_inside() {
        let key = SecretKey::from_seed([7; 32]).public();
        let a = derived_address(&key, DEFAULT_OVERLAY).unwrap();
        assert_eq!(a, derived_address(&key, DEFAULT_OVERLAY).unwrap());
        assert!(DEFAULT_OVERLAY.contains(a));
        assert_ne!(a, DEFAULT_OVERLAY.network());
        let other = derived_address(&SecretKey::from_seed([8; 32]).public(), DEFAULT_OVERLAY).unwrap();
        assert_ne!(a, other);
        // A /30 has two usable hosts; a /31 none.
        let small: IpPrefix = "10.0.0.0/30".parse().unwrap();
        let h = derived_address(&key, small).unwrap().to_string();
        assert!(h == "10.0.0.1" || h == "10.0.0.2", "{h}");
        assert_eq!(derived_address(&key, "10.0.0.0/31".parse().unwrap()), None);
        let v6 = derived_address(&key, "fd7a:115c:a1e0::/48".parse().unwrap()).unwrap();
        assert!("fd7a:115c:a1e0::/48".parse::<IpPrefix>().unwrap().contains(v6));
    }

    #[test]
    fn uniqueness_and_clashes() {
        let ip: IpAddr = "100.64.0.1".parse().unwrap();
        assert!(check_unique([("a", ip), ("b", "100.64.0.2".parse().unwrap())]).is_ok());
        assert_eq!(check_unique([("a", ip), ("b", ip)]), Err(("a".into(), "b".into(), ip)));
        let ifs = [("eth0", "192.168.1.5/24".parse().unwrap()), ("wwan0", "100.72.3.4/10".parse().unwrap())];
        assert_eq!(clash(DEFAULT_OVERLAY, ip, ifs).map(|(n, _)| n), Some("wwan0"));
        let own = [("hp0", "100.64.0.1/10".parse().unwrap())];
        assert_eq!(clash(DEFAULT_OVERLAY, ip, own), None, "the tunnel's own address is no clash");
    }
}
