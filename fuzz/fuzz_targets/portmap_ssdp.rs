//! Arbitrary bytes as an SSDP search response (UDA 1.1 §1.3.3): `ssdp::parse_response`, then the datagram into
//! an `ssdp::Search`. Any panic is a bug.
#![no_main]

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use holepunch::net::{Engine, Received};
use holepunch::portmap::ssdp::{self, parse_response, Search, SearchConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(resp) = parse_response(data) {
        // Values come from one header line each, trimmed: never empty, never spanning lines.
        for v in [&resp.st, &resp.location] {
            assert!(!v.is_empty() && v.trim() == v.as_str() && !v.contains('\n'));
        }
        for v in [&resp.usn, &resp.server].into_iter().flatten() {
            assert!(v.trim() == v.as_str() && !v.contains('\n'));
        }
    }
    let now = Instant::now();
    let device = SocketAddr::from((Ipv4Addr::new(192, 168, 1, 1), 1900));
    let local = SocketAddr::from((Ipv4Addr::new(192, 168, 1, 2), 40000));
    let config =
        SearchConfig { wait: Duration::from_secs(1), rounds: 1, destination: device, ..SearchConfig::default() };
    let mut search = Search::new(now, local, config);
    let mut buf = [0u8; ssdp::MAX_REQUEST_LEN];
    while search.poll_transmit(&mut buf).is_some() {}
    // The same answer twice counts once.
    search.handle_input(now, Received::udp(local, device), data);
    search.handle_input(now, Received::udp(local, device), data);
    search.handle_timeout(now + Duration::from_secs(2));
    let mut found = 0;
    for _ in 0..4 {
        match search.poll_event() {
            Some(ssdp::Event::Found { from, response }) => {
                assert_eq!(from, device);
                assert_eq!(Ok(&response), parse_response(data).as_ref());
                found += 1;
            }
            Some(ssdp::Event::Finished { found: n, .. }) => {
                assert_eq!(n, found);
                assert!(search.is_finished());
                assert!(found <= 1);
                return;
            }
            None => break,
        }
    }
    panic!("search did not finish after its wait");
});
