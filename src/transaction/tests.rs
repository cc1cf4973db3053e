//! The transaction table on its own: schedule, Karn's rule, matching, ICMP, RFC 8489 §6.3.3, outside
//! completion.

use super::*;
use crate::net::{Received, Retransmit, DEFAULT_MIN_RTO};
use crate::stun::{Attribute, Class, ErrorCode, Message, MessageType, MessageWriter, Method};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const LOCAL: &str = "192.168.1.10:6666";
const SERVER: &str = "192.0.2.1:3478";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn table() -> Transactions<SocketAddr> {
    Transactions::new(Retransmit::default(), DEFAULT_MIN_RTO, [9; 32])
}

fn start(t: &mut Transactions<SocketAddr>, now: Instant, spec: Spec) -> TxKey {
    let key = t.start(now, spec, Method::BINDING, |_| Ok(())).unwrap();
    t.handle_timeout(now);
    key
}

fn decode(m: &Message<'_>, _: SocketAddr) -> Result<SocketAddr, String> {
    m.xor_mapped_address().ok_or_else(|| "no XOR-MAPPED-ADDRESS".to_string())
}

/// Drain one transmit; return its bytes.
fn sent(t: &mut Transactions<SocketAddr>) -> Vec<u8> {
    let mut buf = [0u8; 1500];
    let tx = t.poll_transmit(&mut buf).expect("a request is due");
    assert_eq!((tx.local, tx.dst), (addr(LOCAL), addr(SERVER)));
    buf[..tx.len].to_vec()
}

fn response(req: &[u8], class: Class, add: impl FnOnce(&mut MessageWriter<'_>)) -> Vec<u8> {
    let m = Message::parse(req).unwrap();
    let mut out = [0u8; 256];
    let mut w = MessageWriter::new(&mut out, MessageType::new(Method::BINDING, class), m.transaction_id()).unwrap();
    add(&mut w);
    let n = w.finish();
    out[..n].to_vec()
}

fn success(req: &[u8]) -> Vec<u8> {
    response(req, Class::Success, |w| w.add(&Attribute::XorMappedAddress(addr("203.0.113.1:6666"))).unwrap())
}

fn from_server() -> Received {
    Received::udp(addr(LOCAL), addr(SERVER))
}

#[test]
fn silent_server_gets_the_rfc8489_schedule_then_no_answer() {
    let t0 = Instant::now();
    let mut t = table();
    let key = start(&mut t, t0, Spec::new(addr(LOCAL), addr(SERVER)));
    let mut sends = Vec::new();
    let mut now = t0;
    for _ in 0..20 {
        while t.poll_transmit(&mut [0u8; 1500]).is_some() {
            sends.push((now - t0).as_millis() as u64);
        }
        let Some(next) = t.poll_timeout() else { break };
        now = next;
        t.handle_timeout(now);
    }
    assert_eq!(sends, [0, 500, 1500, 3500, 7500, 15500, 31500]);
    assert_eq!(now - t0, ms(39_500));
    assert_eq!(t.poll_completed(), Some(key));
    let r = t.outcome(key).unwrap().clone().unwrap_err();
    assert_eq!(r, FailReason::NoAnswer { dst: addr(SERVER), sends: 7, waited: ms(39_500) });
    assert_eq!(r.to_string(), "no answer from 192.0.2.1:3478 after 7 requests over 39.5 s");
    assert!(r.is_no_answer());
}

#[test]
fn answer_to_a_once_sent_request_is_sampled_karn() {
    let t0 = Instant::now();
    let mut t = table();
    let key = start(&mut t, t0, Spec::new(addr(LOCAL), addr(SERVER)));
    let req = sent(&mut t);
    assert_eq!(t.handle_input(t0 + ms(20), from_server(), &success(&req), decode), Handled::Completed(key));
    assert_eq!(t.outcome(key), Some(&Ok(addr("203.0.113.1:6666"))));
    let ip = addr(SERVER).ip();
    assert_eq!(t.rto_cache().estimate(ip).unwrap().srtt, ms(20));
    assert_eq!(t.rto_cache().rto(ip), ms(100), "60 ms, floored");

    // A retransmitted request's answer is ambiguous: no sample.
    let key = start(&mut t, t0 + ms(100), Spec::new(addr(LOCAL), addr(SERVER)));
    sent(&mut t);
    t.handle_timeout(t0 + ms(200));
    let req = sent(&mut t);
    assert_eq!(t.handle_input(t0 + ms(900), from_server(), &success(&req), decode), Handled::Completed(key));
    assert_eq!(t.rto_cache().estimate(ip).unwrap().srtt, ms(20));
    assert_eq!(t.handle_input(t0 + ms(901), from_server(), &success(&req), decode), Handled::Ignored, "duplicate");
}

#[test]
fn answers_match_by_id_socket_and_source() {
    let t0 = Instant::now();
    let mut t = table();
    let key = start(&mut t, t0, Spec::new(addr(LOCAL), addr(SERVER)));
    let req = sent(&mut t);
    let ok = success(&req);
    let stranger = Received::udp(addr(LOCAL), addr("192.0.2.99:3478"));
    let other_socket = Received::udp(addr("192.168.1.10:7777"), addr(SERVER));
    assert_eq!(t.handle_input(t0, stranger, &ok, decode), Handled::NotOurs, "wrong source");
    assert_eq!(t.handle_input(t0, other_socket, &ok, decode), Handled::NotOurs, "wrong socket");
    let mut forged = ok.clone();
    forged[19] ^= 1;
    assert_eq!(t.handle_input(t0, from_server(), &forged, decode), Handled::NotOurs, "wrong id");
    assert_eq!(t.handle_input(t0, from_server(), &req, decode), Handled::NotOurs, "a request is never an answer");
    assert_eq!(t.handle_input(t0, from_server(), b"junk", decode), Handled::NotOurs);
    let mut other_method = ok.clone();
    other_method[1] = 0x03; // ALLOCATE success: same id, another method (RFC 8489 §6.3)
    assert_eq!(t.handle_input(t0, from_server(), &other_method, decode), Handled::NotOurs, "wrong method");
    assert!(t.is_waiting(key));
    // Any source when asked (RFC 5780 CHANGE-REQUEST answers come from elsewhere).
    let key = start(&mut t, t0, Spec::new(addr(LOCAL), addr(SERVER)).any_source());
    let req = sent(&mut t);
    assert_eq!(t.handle_input(t0, stranger, &success(&req), decode), Handled::Completed(key));
}

#[test]
fn error_unusable_and_unknown_comprehension_required() {
    let t0 = Instant::now();
    let mut t = table();
    let k1 = start(&mut t, t0, Spec::new(addr(LOCAL), addr(SERVER)));
    let k2 = start(&mut t, t0, Spec::new(addr(LOCAL), addr(SERVER)));
    let k3 = start(&mut t, t0, Spec::new(addr(LOCAL), addr(SERVER)));
    let (r1, r2, r3) = (sent(&mut t), sent(&mut t), sent(&mut t));
    let err = response(&r1, Class::Error, |w| {
        w.add(&Attribute::ErrorCode(ErrorCode { code: 420, reason: "Unknown Attribute" })).unwrap()
    });
    t.handle_input(t0, from_server(), &err, decode);
    t.handle_input(t0, from_server(), &response(&r2, Class::Success, |_| {}), decode);
    let unknown = response(&r3, Class::Success, |w| {
        w.add(&Attribute::XorMappedAddress(addr("203.0.113.1:6666"))).unwrap();
        w.add_raw(0x7f01, &[0; 4]).unwrap();
    });
    t.handle_input(t0, from_server(), &unknown, decode);
    let text = |k| t.outcome(k).unwrap().as_ref().unwrap_err().to_string();
    assert_eq!(text(k1), "192.0.2.1:3478 answered with error 420 Unknown Attribute");
    assert_eq!(text(k2), "unusable answer from 192.0.2.1:3478: no XOR-MAPPED-ADDRESS");
    assert_eq!(
        t.outcome(k3).unwrap().as_ref().unwrap_err(),
        &FailReason::UnknownComprehensionRequired { from: addr(SERVER), attributes: vec![0x7f01] }
    );
    assert!(text(k3).contains("0x7f01"), "{}", text(k3));
    assert_eq!([t.poll_completed(), t.poll_completed(), t.poll_completed()], [Some(k1), Some(k2), Some(k3)]);
}

#[test]
fn icmp_fails_fast_unless_ignored() {
    let t0 = Instant::now();
    let mut t = table();
    let fast = start(&mut t, t0, Spec::new(addr(LOCAL), addr(SERVER)));
    let slow = start(&mut t, t0, Spec::new(addr(LOCAL), addr(SERVER)).ignore_unreachable());
    assert!(!t.handle_unreachable(addr(LOCAL), addr("192.0.2.1:9999")), "another destination");
    assert!(t.handle_unreachable(addr(LOCAL), addr(SERVER)));
    assert_eq!(t.outcome(fast), Some(&Err(FailReason::Unreachable { dst: addr(SERVER) })));
    assert!(t.is_waiting(slow));
    assert_eq!(
        FailReason::Unreachable { dst: addr(SERVER) }.to_string(),
        "nothing listens on 192.0.2.1:3478: port unreachable (ICMP)"
    );
}

#[test]
fn external_completion_cancel_and_remove() {
    let t0 = Instant::now();
    let mut t = table();
    let hairpin = start(&mut t, t0, Spec::new(addr(LOCAL), addr("203.0.113.1:6666")).completed_externally());
    let mut buf = [0u8; 1500];
    let n = t.poll_transmit(&mut buf).unwrap().len;
    let req = buf[..n].to_vec();
    let answer = Received::udp(addr(LOCAL), addr("203.0.113.1:6666"));
    assert_eq!(t.handle_input(t0, answer, &success(&req), decode), Handled::Ignored);
    assert_eq!(t.find(Message::parse(&req).unwrap().transaction_id()), Some(hairpin));
    assert!(t.complete(hairpin, Ok(addr("203.0.113.1:6666"))));
    assert!(!t.complete(hairpin, Err(FailReason::Cancelled)), "already over");
    let other = start(&mut t, t0, Spec::new(addr(LOCAL), addr(SERVER)));
    let req = sent(&mut t);
    assert!(t.cancel(other));
    assert_eq!(t.outcome(other), Some(&Err(FailReason::Cancelled)));
    assert!(!t.any_waiting());
    assert_eq!(t.poll_timeout(), None);
    assert_eq!(t.remove(other), Some(Err(FailReason::Cancelled)));
    assert_eq!(t.handle_input(t0, from_server(), &success(&req), decode), Handled::NotOurs);
}

#[test]
fn delayed_first_send_and_chosen_rto_address() {
    let t0 = Instant::now();
    let mut t = table();
    let alt = addr("192.0.2.2:3479");
    t.rto_cache_mut().sample(addr(SERVER).ip(), ms(20));
    t.rto_cache_mut().seed(alt.ip(), addr(SERVER).ip());
    let key =
        t.start(t0 + ms(1000), Spec::new(addr(LOCAL), alt).rto_of(alt.ip()), Method::BINDING, |_| Ok(())).unwrap();
    assert_eq!(t.poll_timeout(), Some(t0 + ms(1000)));
    t.handle_timeout(t0 + ms(999));
    assert!(t.poll_transmit(&mut [0u8; 1500]).is_none());
    t.handle_timeout(t0 + ms(1000));
    assert!(t.poll_transmit(&mut [0u8; 1500]).is_some());
    assert_eq!(t.poll_timeout(), Some(t0 + ms(1100)), "the seeded 100 ms RTO");
    assert_eq!(t.sends(key), 1);
}

#[test]
fn error_reason_is_escaped_for_people_and_kept_raw_in_the_value() {
    let t0 = Instant::now();
    let mut t = table();
    let key = start(&mut t, t0, Spec::new(addr(LOCAL), addr(SERVER)));
    let req = sent(&mut t);
    let forged = "Bad\x1b[2J\nVerdict: direct peer-to-peer likely";
    let err = response(&req, Class::Error, |w| {
        w.add(&Attribute::ErrorCode(ErrorCode { code: 400, reason: forged })).unwrap()
    });
    assert_eq!(t.handle_input(t0, from_server(), &err, decode), Handled::Completed(key));
    let r = t.outcome(key).unwrap().clone().unwrap_err();
    assert!(matches!(&r, FailReason::ErrorResponse { reason, .. } if reason == forged));
    let line = r.to_string();
    assert_eq!(line, "192.0.2.1:3478 answered with error 400 Bad\\u{1b}[2J\\nVerdict: direct peer-to-peer likely");
    assert!(!line.chars().any(char::is_control), "{line:?}");
}
