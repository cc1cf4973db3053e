//! Property tests: every public port-mapping parser takes arbitrary input without panicking, and well-formed
//! responses built from the RFC layouts parse back to the fields they were built from. The crate-private HTTP,
//! XML and UPnP readers have the same properties beside them (`src/portmap/proptests.rs`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use holepunch::portmap::{natpmp, pcp, ssdp, Protocol};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn parsers_never_panic(data in proptest::collection::vec(any::<u8>(), 0..1200)) {
        let _ = natpmp::parse_response(&data);
        let _ = pcp::parse_response(&data);
        let _ = ssdp::parse_response(&data);
    }

    #[test]
    fn natpmp_map_response_fields(udp in any::<bool>(), epoch in any::<u32>(), iport in any::<u16>(),
                                  eport in any::<u16>(), life in any::<u32>()) {
        let op = if udp { 1 } else { 2 };
        let mut d = vec![0, 128 + op, 0, 0];
        d.extend_from_slice(&epoch.to_be_bytes());
        d.extend_from_slice(&iport.to_be_bytes());
        d.extend_from_slice(&eport.to_be_bytes());
        d.extend_from_slice(&life.to_be_bytes());
        let protocol = if udp { Protocol::Udp } else { Protocol::Tcp };
        prop_assert_eq!(
            natpmp::parse_response(&d).unwrap().response,
            Some(natpmp::Response::Mapping { epoch, protocol, internal_port: iport, external_port: eport, lifetime: life })
        );
    }

    #[test]
    fn pcp_map_response_fields(nonce in any::<[u8; 12]>(), life in any::<u32>(), epoch in any::<u32>(),
                               iport in any::<u16>(), eport in any::<u16>(), v4 in any::<[u8; 4]>(),
                               v6 in any::<[u8; 16]>(), use_v6 in any::<bool>(), code in 0u8..14) {
        let ip = if use_v6 { IpAddr::V6(Ipv6Addr::from(v6)) } else { IpAddr::V4(Ipv4Addr::from(v4)) };
        let mut d = vec![2, 0x81, 0, code];
        d.extend_from_slice(&life.to_be_bytes());
        d.extend_from_slice(&epoch.to_be_bytes());
        d.extend_from_slice(&[0; 12]);
        d.extend_from_slice(&nonce);
        d.extend_from_slice(&[17, 0, 0, 0]);
        d.extend_from_slice(&iport.to_be_bytes());
        d.extend_from_slice(&eport.to_be_bytes());
        d.extend_from_slice(&pcp::ip_to_wire(ip));
        let r = pcp::parse_response(&d).unwrap();
        prop_assert_eq!((r.result.to_u8(), r.lifetime, r.epoch), (code, life, epoch));
        let m = r.map.unwrap();
        prop_assert_eq!(m.nonce, nonce);
        prop_assert_eq!(m.internal_port, iport);
        // An IPv6 address that happens to be IPv4-mapped comes back as IPv4, by design (§5).
        let want = match ip {
            IpAddr::V6(a) => a.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        prop_assert_eq!(m.external, SocketAddr::new(want, eport));
    }

    #[test]
    fn pcp_request_encodes_layout(nonce in any::<[u8; 12]>(), iport in 1u16.., life in any::<u32>(),
                                  client in any::<[u8; 4]>()) {
        let req = pcp::Request::Map(pcp::MapRequest { nonce, protocol: Protocol::Tcp, internal_port: iport,
                                                     suggested_external: None, lifetime: life });
        let mut b = [0u8; 60];
        let client = IpAddr::V4(Ipv4Addr::from(client));
        prop_assert_eq!(req.encode(client, &mut b).unwrap(), 60);
        prop_assert_eq!(&b[..2], &[2u8, 1][..]);
        prop_assert_eq!(u32::from_be_bytes([b[4], b[5], b[6], b[7]]), life);
        prop_assert_eq!(pcp::ip_from_wire(b[8..24].try_into().unwrap()), client);
        prop_assert_eq!(&b[24..36], &nonce[..]);
        prop_assert_eq!(b[36], 6);
        prop_assert_eq!(u16::from_be_bytes([b[40], b[41]]), iport);
    }
}
