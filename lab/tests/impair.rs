//! Impairments of an access link: loss (nftables) and delay with jitter (the userspace delay line).

mod common;

use std::time::Duration;

use common::probe_bin;
use holepunch_lab::check::{responder_addrs, start_responder};
use holepunch_lab::{require_lab, Lab, Preset, SiteSpec};

fn count_line(out: &str, key: &str) -> u64 {
    let w: Vec<&str> = out.split_whitespace().collect();
    let i = w.iter().position(|x| *x == key).unwrap_or_else(|| panic!("no {key} in {out:?}"));
    w[i + 1].parse().unwrap()
}

/// 20 % loss each way: 1000 datagrams up and 1000 down each arrive 800 ± 60 times (±4.7 σ).
#[test]
fn loss_rate_is_within_tolerance_each_way() {
    require_lab!();
    let lab = Lab::builder().server().site("a", SiteSpec::new(Preset::PortRestricted).loss(20)).build().unwrap();
    let _responder = start_responder(&lab, probe_bin()).unwrap();
    let to = responder_addrs()[0].to_string();
    let bin = probe_bin().to_str().unwrap();
    let up = lab.host("a1").run(&[bin, "probe", "count", "--to", &to, "--n", "1000"]).unwrap();
    let counted = count_line(&up, "counted");
    assert!((740..=860).contains(&counted), "upstream: {up}");
    let down = lab.host("a1").run(&[bin, "probe", "burst", "--to", &to, "--n", "1000"]).unwrap();
    let received = count_line(&down, "received");
    assert!((740..=860).contains(&received), "downstream: {down}");

    // Loss can be changed at run time; 0 removes it.
    lab.set_loss("a", 0, 0).unwrap();
    let up = lab.host("a1").run(&[bin, "probe", "count", "--to", &to, "--n", "500"]).unwrap();
    assert_eq!(count_line(&up, "counted"), 500, "{up}");
}

fn rtts_ms(lab: &Lab, host: &str, n: u32) -> Vec<f64> {
    let to = responder_addrs()[0].to_string();
    let n = (n + 1).to_string();
    let out = lab.host(host).run(&[probe_bin().to_str().unwrap(), "probe", "rtt", "--to", &to, "--n", &n]).unwrap();
    // The first round trip also waits for ARP through the delay line: leave it out.
    let mut v: Vec<f64> = out.split_whitespace().skip(2).map(|us| us.parse::<f64>().unwrap() / 1000.0).collect();
    v.sort_by(f64::total_cmp);
    v
}

/// 20 ms one way on the access link: round trips take 40 ms (+ a little for the rest of the path),
/// within ±2 ms per direction (median; the delay line's own precision is tested in delayline.rs).
#[test]
fn delay_line_adds_the_configured_delay() {
    require_lab!();
    let lab = Lab::builder()
        .server()
        .site("a", SiteSpec::new(Preset::PortRestricted).delay(Duration::from_millis(20), Duration::ZERO))
        .site("b", SiteSpec::new(Preset::FullCone).delay(Duration::from_millis(10), Duration::from_millis(5)))
        .build()
        .unwrap();
    let _responder = start_responder(&lab, probe_bin()).unwrap();
    let a = rtts_ms(&lab, "a1", 30);
    assert!(a.len() >= 28, "answers: {a:?}");
    let median = a[a.len() / 2];
    assert!((40.0..=44.0).contains(&median), "median rtt {median} ms: {a:?}");
    assert!(a[0] >= 39.5, "an answer came back too fast: {a:?}");

    // Jitter ±5 ms each way: every RTT within 20 ± 10 ms (+ path), and not all equal.
    let b = rtts_ms(&lab, "b1", 40);
    assert!(b.len() >= 38, "answers: {b:?}");
    // Nothing can come back faster than 2 × (10 − 5) ms; the upper bound is checked on the 90th
    // percentile so that a scheduling hiccup on a loaded 2-core machine does not fail the test.
    assert!(b[0] >= 9.5 && b[b.len() * 9 / 10] <= 32.0, "rtts {b:?}");
    assert!(b[b.len() - 1] - b[0] > 2.0, "no jitter visible: {b:?}");
    let stats = lab.delay_stats();
    assert_eq!(stats.len(), 2);
    assert!(stats[0].a_to_b.delivered >= 30 && stats[0].b_to_a.delivered >= 30, "{stats:?}");
}
