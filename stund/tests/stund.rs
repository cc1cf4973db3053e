//! End-to-end tests of the stund binary on loopback: UDP, TCP, IPv6, RFC 5780 with 127.0.0.1 + 127.0.0.2,
//! RESPONSE-PORT, the rate limiter, a malformed flood, metrics, config file, errors, and shutdown.

mod common;

use common::*;
use holepunch::stun::{ErrorCode, Message};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

fn addr(ip: &str, port: u16) -> SocketAddr {
    format!("{ip}:{port}").parse().unwrap()
}

#[test]
fn udp_binding_ipv4() {
    let s = Server::start(&["--primary", "127.0.0.1", "--threads", "2"]);
    let c = client(false);
    let req = binding_request(1, None, None);
    let (resp, from) = transact(&c, addr("127.0.0.1", s.port), &req).expect("answer");
    assert_eq!(from, addr("127.0.0.1", s.port));
    let m = expect_success(&resp, &req);
    assert_eq!(m.xor_mapped_address(), Some(c.local_addr().unwrap()));
    // Plain server: no RFC 5780 attributes.
    assert_eq!(m.other_address(), None);
    assert_eq!(m.response_origin(), None);
    assert!(s.log().contains("plain RFC 5389"), "{}", s.log());
}

#[test]
fn tcp_binding_ipv4() {
    let s = Server::start(&["--primary", "127.0.0.1"]);
    let mut t = TcpStream::connect(addr("127.0.0.1", s.port)).unwrap();
    t.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // Two transactions on one connection, the second split across writes to exercise stream framing.
    for n in 0..2u8 {
        let req = binding_request(n, None, None);
        let resp = if n == 0 {
            tcp_transact(&mut t, &req)
        } else {
            use std::io::Write;
            t.write_all(&req[..7]).unwrap();
            std::thread::sleep(Duration::from_millis(50));
            tcp_transact(&mut t, &req[7..])
        };
        let m = expect_success(&resp, &req);
        assert_eq!(m.xor_mapped_address(), Some(t.local_addr().unwrap()));
    }
}

#[test]
fn ipv6_binding_udp_and_tcp() {
    let s = Server::start(&["--primary", "::1"]);
    let c = client(true);
    let req = binding_request(3, None, None);
    let server = addr("[::1]", s.port);
    let (resp, from) = transact(&c, server, &req).expect("answer over IPv6");
    assert_eq!(from, server);
    assert_eq!(expect_success(&resp, &req).xor_mapped_address(), Some(c.local_addr().unwrap()));
    let mut t = TcpStream::connect(server).unwrap();
    t.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let resp = tcp_transact(&mut t, &req);
    assert_eq!(expect_success(&resp, &req).xor_mapped_address(), Some(t.local_addr().unwrap()));
}

/// RFC 5780 §6.1 Table 1 with real sockets: each answer must come from the right IP and port.
#[test]
fn rfc5780_change_request_answers_from_the_right_socket() {
    let s = Server::start(&["--primary", "127.0.0.1", "--alternate", "127.0.0.2"]);
    assert!(s.log().contains("RFC 5780"), "{}", s.log());
    let (p1, p2) = (s.port, s.alt_port);
    let c = client(false);
    let me = c.local_addr().unwrap();
    let cases = [
        (addr("127.0.0.1", p1), None, addr("127.0.0.1", p1), addr("127.0.0.2", p2)),
        (addr("127.0.0.1", p1), Some((false, true)), addr("127.0.0.1", p2), addr("127.0.0.2", p2)),
        (addr("127.0.0.1", p1), Some((true, false)), addr("127.0.0.2", p1), addr("127.0.0.2", p2)),
        (addr("127.0.0.1", p1), Some((true, true)), addr("127.0.0.2", p2), addr("127.0.0.2", p2)),
        (addr("127.0.0.2", p2), Some((true, true)), addr("127.0.0.1", p1), addr("127.0.0.1", p1)),
        (addr("127.0.0.2", p1), Some((false, true)), addr("127.0.0.2", p2), addr("127.0.0.1", p2)),
        (addr("127.0.0.1", p2), Some((true, false)), addr("127.0.0.2", p2), addr("127.0.0.2", p1)),
    ];
    for (i, (to, change, want_from, want_other)) in cases.into_iter().enumerate() {
        let req = binding_request(10 + i as u8, change, None);
        let (resp, from) = transact(&c, to, &req).unwrap_or_else(|| panic!("no answer for case {i}"));
        assert_eq!(from, want_from, "case {i}: answer source");
        let m = expect_success(&resp, &req);
        assert_eq!(m.response_origin(), Some(want_from), "case {i}: RESPONSE-ORIGIN");
        assert_eq!(m.other_address(), Some(want_other), "case {i}: OTHER-ADDRESS");
        assert_eq!(m.xor_mapped_address(), Some(me));
        assert_eq!(m.mapped_address(), Some(me));
    }
}

#[test]
fn plain_server_answers_change_request_with_420() {
    let s = Server::start(&["--primary", "127.0.0.1"]);
    let c = client(false);
    let req = binding_request(20, Some((true, true)), None);
    let (resp, from) = transact(&c, addr("127.0.0.1", s.port), &req).expect("answer");
    assert_eq!(from, addr("127.0.0.1", s.port));
    let m = Message::parse(&resp).unwrap();
    assert_eq!(m.error_code().map(|e| e.code), Some(ErrorCode::UNKNOWN_ATTRIBUTE));
}

#[test]
fn response_port_goes_to_the_other_port_of_the_same_ip() {
    let s = Server::start(&["--primary", "127.0.0.1"]);
    let a = client(false);
    let b = client(false);
    let req = binding_request(30, None, Some(b.local_addr().unwrap().port()));
    let mut buf = [0u8; 1024];
    let mut got = None;
    for _ in 0..5 {
        a.send_to(&req, addr("127.0.0.1", s.port)).unwrap();
        if let Ok((n, from)) = b.recv_from(&mut buf) {
            got = Some((buf[..n].to_vec(), from));
            break;
        }
    }
    let (resp, from) = got.expect("answer on the RESPONSE-PORT socket");
    assert_eq!(from, addr("127.0.0.1", s.port));
    // XOR-MAPPED-ADDRESS is the request's source, not the socket the answer went to.
    assert_eq!(expect_success(&resp, &req).xor_mapped_address(), Some(a.local_addr().unwrap()));
    a.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    assert!(a.recv_from(&mut buf).is_err(), "the requesting socket must get nothing");
}

#[test]
fn rate_limit_drops_excess_and_counts_it() {
    let mport = free_tcp_port();
    let maddr = addr("127.0.0.1", mport);
    let s = Server::start(&[
        "--primary",
        "127.0.0.1",
        "--threads",
        "1",
        "--rate-limit",
        "1",
        "--rate-burst",
        "5",
        "--metrics",
        &maddr.to_string(),
    ]);
    let c = client(false);
    c.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    for n in 0..30u8 {
        c.send_to(&binding_request(n, None, None), addr("127.0.0.1", s.port)).unwrap();
    }
    let mut answers = 0;
    let mut buf = [0u8; 1024];
    while c.recv_from(&mut buf).is_ok() {
        answers += 1;
    }
    // Burst of 5, plus at most one refill token if the sends straddled a second.
    assert!((5..=6).contains(&answers), "{answers} answers");
    let limited = "stund_dropped_total{reason=\"rate_limited\"}";
    assert_eq!(wait_metric(maddr, limited, |v| v == 30 - answers), 30 - answers);
    assert_eq!(wait_metric(maddr, "stund_requests_total{form=\"rfc5389\"}", |v| v == 30), 30);
}

#[test]
fn malformed_flood_does_not_kill_it() {
    let mport = free_tcp_port();
    let maddr = addr("127.0.0.1", mport);
    let s = Server::start(&["--primary", "127.0.0.1", "--rate-limit", "0", "--metrics", &maddr.to_string()]);
    let mut s = s;
    let target = addr("127.0.0.1", s.port);
    let good = binding_request(1, None, None);
    // Deterministic junk: random bytes, truncations and bit flips of a valid request, huge datagrams.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut rnd = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let socks: Vec<_> = (0..4).map(|_| client(false)).collect();
    let sent = 20_000;
    for i in 0..sent {
        let pkt: Vec<u8> = match i % 4 {
            0 => (0..(rnd() % 200) as usize).map(|_| rnd() as u8).collect(),
            1 => good[..(rnd() as usize % good.len())].to_vec(),
            2 => {
                let mut p = good.clone();
                let k = rnd() as usize % p.len();
                p[k] ^= 1 << (rnd() % 8);
                p
            }
            _ => vec![0u8; 3000 + (rnd() % 5000) as usize],
        };
        let _ = socks[i % 4].send_to(&pkt, target);
        if i % 2000 == 0 {
            // Pace a little so the loopback queue is not just overflowing.
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    assert!(s.is_running(), "stund died: {}", s.log());
    let c = client(false);
    let (resp, _) = transact(&c, target, &good).expect("still answers after the flood");
    expect_success(&resp, &good);
    let malformed = wait_metric(maddr, "stund_dropped_total{reason=\"malformed\"}", |v| v > 1_000);
    assert!(malformed > 1_000, "{malformed} malformed counted");
}

#[test]
fn sigterm_and_sigint_exit_cleanly_and_quickly() {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let mut s = Server::start(&["--primary", "127.0.0.1", "--alternate", "127.0.0.2", "--threads", "2"]);
        let t0 = Instant::now();
        let status = s.signal_and_wait(sig, Duration::from_secs(5)).expect("exits within 5 s");
        assert!(status.success(), "exit status {status}: {}", s.log());
        assert!(t0.elapsed() < Duration::from_secs(3), "took {:?}", t0.elapsed());
        std::thread::sleep(Duration::from_millis(100));
        assert!(s.log().contains("shutting down"), "{}", s.log());
    }
}

#[test]
fn metrics_endpoint_serves_prometheus_text() {
    let mport = free_tcp_port();
    let maddr = addr("127.0.0.1", mport);
    let s = Server::start(&["--primary", "127.0.0.1", "--metrics", &maddr.to_string()]);
    let c = client(false);
    let req = binding_request(1, None, None);
    transact(&c, addr("127.0.0.1", s.port), &req).expect("answer");
    assert!(wait_metric(maddr, "stund_responses_total{class=\"success\"}", |v| v >= 1) >= 1);
    let text = http_get(maddr, "/metrics");
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(text.contains("# TYPE stund_requests_total counter"));
    assert!(text.contains("stund_info{mode=\"rfc5389\""));
    assert!(http_get(maddr, "/nope").starts_with("HTTP/1.1 404"));
}

#[test]
fn config_file_sets_options() {
    let dir = std::env::temp_dir().join(format!("stund-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("stund.toml");
    std::fs::write(&path, "primary = \"127.0.0.1\"\nalternate = \"127.0.0.2\"\nlog_level = \"debug\"\ntcp = false\n")
        .unwrap();
    let s = Server::start(&["--config", path.to_str().unwrap()]);
    let log = s.log();
    assert!(log.contains("RFC 5780"), "{log}");
    assert!(!log.contains("TCP: listening"), "tcp = false ignored: {log}");
    let c = client(false);
    let req = binding_request(2, Some((true, false)), None);
    let (_, from) = transact(&c, addr("127.0.0.1", s.port), &req).expect("answer");
    assert_eq!(from, addr("127.0.0.2", s.port));
    assert!(TcpStream::connect(addr("127.0.0.1", s.port)).is_err(), "TCP should be off");
    let _ = std::fs::remove_dir_all(&dir);
}

fn run_to_exit(args: &[&str]) -> (i32, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
            return (status.code().unwrap_or(-1), text);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("stund {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn clear_errors_and_nonzero_exit() {
    // Port in use (by a plain socket, so SO_REUSEPORT cannot share it).
    let holder = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port().to_string();
    let cases: [(&[&str], &str); 5] = [
        (&["--primary", "127.0.0.1", "--port", &port], "already in use"),
        // An address this host does not have (TEST-NET-1; the bind fails locally, nothing is sent).
        (&["--primary", "192.0.2.1", "--port", "3478"], "not an address of this host"),
        (&["--primary", "not-an-ip"], "invalid"),
        (&[], "--primary IP is required"),
        (&["--primary", "127.0.0.1", "--alternate", "::1"], "same address family"),
    ];
    for (args, want) in cases {
        let (code, text) = run_to_exit(args);
        assert_ne!(code, 0, "{args:?}");
        assert!(text.contains(want), "{args:?}: {text}");
        // clap adds a usage hint to its own errors; ours are exactly one line, the last one.
        if !want.contains("invalid") {
            let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("stund: ")).collect();
            assert_eq!(errors.len(), 1, "{args:?}: {text}");
            assert!(errors[0].contains(want) && text.trim_end().ends_with(errors[0]), "{args:?}: {text}");
        }
    }
    let (code, text) = run_to_exit(&["--help"]);
    assert_eq!(code, 0);
    assert!(text.contains("Examples:") && text.contains("--alternate"), "{text}");
}

#[test]
fn second_instance_on_same_port_is_refused() {
    let s = Server::start(&["--primary", "127.0.0.1"]);
    let (code, text) = run_to_exit(&["--primary", "127.0.0.1", "--port", &s.port.to_string()]);
    assert_ne!(code, 0, "a second stund must not share the port through SO_REUSEPORT");
    assert!(text.contains("already in use"), "{text}");
}

/// Every numeric setting is checked before anything starts: one line, exit code 2 (as for other usage
/// errors), no worker started. A huge --tcp-max-connections used to panic (exit 101) after the UDP workers
/// had started; a huge --rate-limit used to be reported as a bad burst, which the user never set; settings
/// adding up to a terabyte used to be accepted.
#[test]
fn numeric_settings_are_refused_before_starting() {
    let huge = u64::MAX.to_string();
    let cases: [(&[&str], &[&str], &str); 4] = [
        (&["--tcp-max-connections", &huge], &["--tcp-max-connections 18446744073709551615"], ""),
        (&["--rate-limit", "4294967295"], &["--rate-limit 4294967295"], "burst"),
        (&["--tcp-idle-timeout", &huge], &["--tcp-idle-timeout"], ""),
        (
            &["--alternate", "127.0.0.2", "--threads", "1024", "--rate-limit-slots", "16777216"],
            &["--threads 1024", "--rate-limit-slots", "1.0 TiB"],
            "",
        ),
    ];
    for (extra, wants, unwanted) in cases {
        let args: Vec<&str> = ["--primary", "127.0.0.1", "--port", "1"].iter().chain(extra).copied().collect();
        let t0 = Instant::now();
        let (code, text) = run_to_exit(&args);
        assert_eq!(code, 2, "{args:?}: {text}");
        assert!(t0.elapsed() < Duration::from_secs(5), "{args:?} took {:?}", t0.elapsed());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: one line, nothing started: {text}");
        assert!(lines[0].starts_with("stund: "), "{text}");
        for want in wants {
            assert!(text.contains(want), "{args:?}: {text}");
        }
        if !unwanted.is_empty() {
            assert!(!text.contains(unwanted), "{args:?}: names a setting the user did not give: {text}");
        }
    }
}

#[test]
fn memory_the_settings_imply_is_logged() {
    let s = Server::start(&["--primary", "127.0.0.1", "--threads", "2"]);
    let log = s.log();
    let line = log.lines().find(|l| l.contains("memory: ")).unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains("MiB for these settings") && line.contains("--threads 2"), "{line}");
}

/// A TCP stream from 127.0.0.2 (any 127/8 address is local), so the server sees another source IP.
fn tcp_from(source: &str, to: SocketAddr) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&addr(source, 0).into()).unwrap();
    s.connect_timeout(&to.into(), Duration::from_secs(2)).unwrap();
    let t: TcpStream = s.into();
    t.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    t
}

/// One source reconnecting as slots free used to be able to hold every TCP slot; now it gets at most
/// --tcp-max-connections-per-ip (default 16) and everyone else still gets in.
#[test]
fn one_source_cannot_hold_every_tcp_slot() {
    let maddr = addr("127.0.0.1", free_tcp_port());
    let s = Server::start(&["--primary", "127.0.0.1", "--tcp-max-connections", "32", "--metrics", &maddr.to_string()]);
    let server = addr("127.0.0.1", s.port);
    let hog: Vec<TcpStream> = (0..40).map(|_| tcp_from("127.0.0.1", server)).collect();
    // Wait until the server has judged all 40.
    let deadline = Instant::now() + Duration::from_secs(5);
    let text = loop {
        let text = http_get(maddr, "/metrics");
        let seen: u64 = ["accepted", "refused", "refused_per_ip"]
            .iter()
            .filter_map(|o| {
                let name = format!("stund_tcp_connections_total{{outcome=\"{o}\"}} ");
                text.lines().find_map(|l| l.strip_prefix(&name)?.trim().parse::<u64>().ok())
            })
            .sum();
        if seen >= 40 || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // Another source is served while the hog holds its share.
    let mut other = tcp_from("127.0.0.2", server);
    let req = binding_request(40, None, None);
    let resp = tcp_transact(&mut other, &req);
    assert_eq!(expect_success(&resp, &req).xor_mapped_address(), Some(other.local_addr().unwrap()));
    assert_eq!(metric(&text, "stund_tcp_connections_total{outcome=\"accepted\"}"), 16, "{text}");
    assert_eq!(metric(&text, "stund_tcp_connections_total{outcome=\"refused_per_ip\"}"), 24, "{text}");
    assert_eq!(metric(&text, "stund_tcp_connections_open"), 16, "{text}");
    drop(hog);
}

/// ~1100 idle connections to the metrics endpoint used to take that many file descriptors until STUN over
/// TCP failed; now it holds at most 8 and drops clients that send nothing within 2 s.
#[test]
fn metrics_endpoint_holds_few_connections_and_drops_idle_ones() {
    let maddr = addr("127.0.0.1", free_tcp_port());
    let s = Server::start(&["--primary", "127.0.0.1", "--metrics", &maddr.to_string()]);
    let pid = s.pid();
    let fds = || std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
    let before = fds();
    let idle: Vec<TcpStream> = (0..200).map(|_| TcpStream::connect(maddr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(500));
    let during = fds();
    assert!(during <= before + 8, "{during} descriptors open, {before} before 200 idle metrics clients");
    // STUN over TCP is unaffected.
    let mut t = TcpStream::connect(addr("127.0.0.1", s.port)).unwrap();
    t.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let req = binding_request(41, None, None);
    expect_success(&tcp_transact(&mut t, &req), &req);
    drop(t);
    // The eight idle ones are dropped after the 2 s read timeout.
    let deadline = Instant::now() + Duration::from_secs(5);
    while fds() > before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(fds() <= before, "idle metrics clients still held: {} > {before}", fds());
    let text = http_get(maddr, "/metrics");
    // 200 - 8; a few fewer if a held slot timed out before the last connections were accepted.
    let refused = metric(&text, "stund_metrics_connections_refused_total");
    assert!((180..=192).contains(&refused), "{refused} refused: {text}");
    drop(idle);
}
