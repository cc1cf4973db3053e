//! stunclient in the NAT lab (real nftables NATs in network namespaces): every preset must be identified
//! as what it was built to be. Needs root, ip, nft, conntrack (and miniupnpd for the port-mapping preset);
//! without them the tests skip with one line, and under CI=true they fail.

mod common;
use common::{s, stunclient_bin, stund_bin};
use holepunch_lab::{Lab, Preset, SiteSpec};
use serde_json::Value;
use std::time::Duration;

/// A lab with our stund in RFC 5780 mode on the server and one site built from `spec`.
fn lab_with(spec: SiteSpec) -> Lab {
    let lab = Lab::builder().server().site("a", spec).build().expect("build lab");
    let (primary, alternate) = lab.server_ips();
    let stund = stund_bin();
    let mut cmd = lab.server().command("sh");
    cmd.arg("-c").arg(format!(
        "exec {} --primary {primary} --alternate {alternate} --no-tcp --rate-limit 0 --threads 1 \
         --stats-interval 0 --log-level info 2>&1",
        stund.display()
    ));
    let mut p = lab.server().spawn_command(cmd).expect("start stund");
    p.wait_for_line(Duration::from_secs(10), |l| l.contains("ready")).expect("stund ready");
    lab.adopt(p);
    lab
}

/// Run stunclient on `host`; `portmap` false adds --no-portmap. Returns the JSON report.
fn diagnose(lab: &Lab, host: &str, portmap: bool, extra: &[&str]) -> Value {
    let (primary, _) = lab.server_ips();
    let server = format!("{primary}:3478");
    let bin = stunclient_bin();
    let mut argv = vec![bin.to_str().unwrap(), "--json", "--server", &server, "--timeout", "100ms", "--retries", "4"];
    if !portmap {
        argv.push("--no-portmap");
    }
    argv.extend_from_slice(extra);
    let out = lab.host(host).output(&argv).expect("run stunclient");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stunclient on {host} failed: {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("bad JSON ({e}): {stdout}"));
    if std::env::var_os("STUNCLIENT_LAB_PRINT").is_some() {
        eprintln!("{host}: {v:#}");
    }
    v
}

/// Run stunclient on `host` with exactly `args` (no schedule flags: the defaults), timed.
fn run_timed(lab: &Lab, host: &str, args: &[&str]) -> (std::process::Output, Duration) {
    let bin = stunclient_bin();
    let mut argv = vec![bin.to_str().unwrap()];
    argv.extend_from_slice(args);
    let started = std::time::Instant::now();
    let out = lab.host(host).output(&argv).expect("run stunclient");
    (out, started.elapsed())
}

fn check(v: &Value, want: &[(&str, Value)]) {
    let mut wrong = Vec::new();
    for (k, w) in want {
        if &v[*k] != w {
            wrong.push(format!("{k}: got {} want {w} ({})", v[*k], v[&format!("{k}_reason")]));
        }
    }
    assert!(wrong.is_empty(), "{}\nfull report: {v:#}", wrong.join("\n"));
}

fn str_(x: &str) -> Value {
    Value::String(x.into())
}

const EIM: &str = "endpoint-independent";
const APD: &str = "address-and-port-dependent";
const DIRECT: &str = "direct peer-to-peer likely";

#[test]
fn full_cone() {
    holepunch_lab::require_lab!();
    let lab = lab_with(Preset::FullCone.into());
    let v = diagnose(&lab, "a1", false, &[]);
    check(
        &v,
        &[
            ("nat", Value::Bool(true)),
            ("type", str_("full-cone")),
            ("mapping", str_(EIM)),
            ("filtering", str_(EIM)),
            ("port_preserved", Value::Bool(true)),
            ("port_allocation", str_("preserved")),
            ("hairpin", Value::Bool(false)),
            ("verdict", str_(DIRECT)),
        ],
    );
    assert_eq!(s(&v, "public"), format!("{}:6666", lab.public_ip("a")));
}

#[test]
fn address_restricted() {
    holepunch_lab::require_lab!();
    let lab = lab_with(Preset::AddressRestricted.into());
    let v = diagnose(&lab, "a1", false, &[]);
    check(
        &v,
        &[
            ("type", str_("restricted-cone")),
            ("mapping", str_(EIM)),
            ("filtering", str_("address-dependent")),
            ("port_preserved", Value::Bool(true)),
            ("verdict", str_(DIRECT)),
        ],
    );
}

#[test]
fn port_restricted() {
    holepunch_lab::require_lab!();
    let lab = lab_with(Preset::PortRestricted.into());
    let v = diagnose(&lab, "a1", false, &[]);
    check(
        &v,
        &[
            ("type", str_("port-restricted-cone")),
            ("mapping", str_(EIM)),
            ("filtering", str_(APD)),
            ("port_preserved", Value::Bool(true)),
            ("verdict", str_(DIRECT)),
        ],
    );
}

#[test]
fn symmetric_random_ports() {
    holepunch_lab::require_lab!();
    let lab = lab_with(Preset::Symmetric.into());
    let v = diagnose(&lab, "a1", false, &[]);
    check(
        &v,
        &[
            ("type", str_("symmetric")),
            ("mapping", str_(APD)),
            ("filtering", str_(APD)),
            ("port_preserved", Value::Bool(false)),
            ("port_allocation", str_("random")),
            ("verdict", str_("needs a relay")),
        ],
    );
}

#[test]
fn eim_without_port_preservation() {
    holepunch_lab::require_lab!();
    let lab = lab_with(Preset::PortShift.into());
    let v = diagnose(&lab, "a1", false, &[]);
    check(
        &v,
        &[
            ("mapping", str_(EIM)),
            ("filtering", str_(APD)),
            ("port_preserved", Value::Bool(false)),
            ("verdict", str_(DIRECT)),
        ],
    );
    // The lab's rule: public port = local port XOR 0x0101.
    let public_port = s(&v, "public").rsplit(':').next().unwrap().parse::<u16>().unwrap();
    assert_eq!(public_port, 6666 ^ holepunch_lab::preset::PORT_SHIFT_XOR);
}

#[test]
fn hairpin_on_and_off() {
    holepunch_lab::require_lab!();
    for (preset, want) in [(Preset::Hairpin, true), (Preset::NoHairpin, false)] {
        let lab = lab_with(preset.into());
        let v = diagnose(&lab, "a1", false, &[]);
        check(&v, &[("hairpin", Value::Bool(want)), ("mapping", str_(EIM))]);
    }
}

#[test]
fn double_nat() {
    holepunch_lab::require_lab!();
    let lab = lab_with(Preset::DoubleNat.into());
    let v = diagnose(&lab, "a1", false, &[]);
    // Two masquerading NATs in a row still look like one port-restricted cone from outside.
    check(
        &v,
        &[("nat", Value::Bool(true)), ("mapping", str_(EIM)), ("filtering", str_(APD)), ("verdict", str_(DIRECT))],
    );
    assert_eq!(s(&v, "public").split(':').next().unwrap(), lab.public_ip("a").to_string());
}

#[test]
fn firewall_without_nat() {
    holepunch_lab::require_lab!();
    let lab = lab_with(Preset::Firewall.into());
    let v = diagnose(&lab, "a1", false, &[]);
    check(
        &v,
        &[
            ("nat", Value::Bool(false)),
            ("type", str_("firewall-without-nat")),
            ("filtering", str_(APD)),
            ("verdict", str_(DIRECT)),
        ],
    );
    assert_eq!(v["public"], v["local"]);
}

#[test]
fn port_mapping_offered() {
    holepunch_lab::require_lab!();
    let lab = lab_with(SiteSpec::new(Preset::PortRestricted).port_mapping());
    let v = diagnose(&lab, "a1", true, &[]);
    let pm = &v["portmap"];
    assert_eq!(pm["tested"], Value::Bool(true), "{pm:#}");
    let public_ip = lab.public_ip("a").to_string();
    let mut answered = 0;
    for svc in ["natpmp", "pcp", "upnp"] {
        if pm[svc]["answered"] == Value::Bool(true) {
            answered += 1;
            if let Some(ext) = pm[svc]["external_address"].as_str() {
                assert_eq!(ext, public_ip, "{svc}: {pm:#}");
            }
            if !pm[svc]["test_mapping"].is_null() {
                assert_eq!(pm[svc]["test_mapping"]["deleted"], Value::Bool(true), "{svc}: {pm:#}");
            }
        }
    }
    assert!(answered >= 2, "NAT-PMP and PCP at least: {pm:#}");
    assert_eq!(pm["natpmp"]["answered"], Value::Bool(true), "{pm:#}");
    assert_eq!(pm["double_nat"], Value::Bool(false), "{pm:#}");
    // The STUN view is unchanged by the service being there.
    check(&v, &[("mapping", str_(EIM)), ("filtering", str_(APD))]);
}

#[test]
fn port_mapping_not_offered() {
    holepunch_lab::require_lab!();
    let lab = lab_with(Preset::PortRestricted.into());
    let v = diagnose(&lab, "a1", true, &[]);
    let pm = &v["portmap"];
    assert_eq!(pm["tested"], Value::Bool(true), "{pm:#}");
    for svc in ["natpmp", "pcp", "upnp"] {
        assert_eq!(pm[svc]["answered"], Value::Bool(false), "{svc}: {pm:#}");
    }
    assert_eq!(pm["double_nat"], Value::Null);
}

#[test]
fn double_nat_seen_through_port_mapping() {
    holepunch_lab::require_lab!();
    let lab = lab_with(SiteSpec::new(Preset::DoubleNat).port_mapping());
    let v = diagnose(&lab, "a1", true, &[]);
    let pm = &v["portmap"];
    assert_eq!(pm["double_nat"], Value::Bool(true), "{pm:#}");
    assert!(s(pm, "double_nat_reason").contains("double NAT"), "{pm:#}");
}

#[test]
fn mapping_lifetime_in_a_real_nat() {
    holepunch_lab::require_lab!();
    let lab = lab_with(Preset::PortRestricted.into());
    // Plain masquerade: the mapping lives as long as its conntrack entry. Shorten the router's UDP timeouts
    // (per network namespace) so the test takes seconds, not minutes.
    let router = lab.router("a");
    for key in ["net.netfilter.nf_conntrack_udp_timeout", "net.netfilter.nf_conntrack_udp_timeout_stream"] {
        router.run(&["sysctl", "-qw", &format!("{key}=4")]).expect("set conntrack timeout");
    }
    let v = diagnose(&lab, "a1", false, &["--lifetime", "--max-wait", "16s"]);
    let l = &v["lifetime"];
    assert_eq!(l["tested"], Value::Bool(true), "{l}");
    let alive = l["alive_seconds"].as_f64().unwrap_or_else(|| panic!("no lifetime: {l}"));
    let expired = l["expired_seconds"].as_f64().unwrap_or_else(|| panic!("never expired: {l}"));
    // conntrack's garbage collection and our timing add slack around the configured 4 s.
    assert!(alive < 4.5 && (3.5..=8.0).contains(&expired), "{l}");
    assert!(expired - alive <= 2.5, "refined: {l}");
}

#[test]
fn port_restricted_with_the_default_schedule() {
    // RTO 500 ms, Rc 7, Rm 16 as a user runs it. The negative tests (filtering II/III, hairpin) start after the
    // server answered, so they use the learned RTO (floored at 100 ms): (63 + 16) x 100 ms = 7.9 s instead of
    // 39.5 s with the fixed schedule.
    holepunch_lab::require_lab!();
    let lab = lab_with(Preset::PortRestricted.into());
    let (primary, _) = lab.server_ips();
    let server = format!("{primary}:3478");
    let (out, took) = run_timed(&lab, "a1", &["--json", "--no-portmap", "--server", &server]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{:?}\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("bad JSON ({e}): {stdout}"));
    check(
        &v,
        &[
            ("type", str_("port-restricted-cone")),
            ("filtering", str_(APD)),
            ("hairpin", Value::Bool(false)),
            ("verdict", str_(DIRECT)),
        ],
    );
    // The learned RTO follows the measured round trips; on a loaded machine (other labs being built) answers
    // can be slow, and then the RTO rightly rises towards 500 ms. On a quiet path it is the floor, and the whole
    // run takes the 7.9 s of the negative tests plus a few round trips.
    let rto = v["servers"][0]["rto_ms"].as_f64().expect("rto_ms");
    let rtt = v["servers"][0]["rtt_ms"].as_f64().expect("rtt_ms");
    let seen = format!("took {took:?}, rtt {rtt} ms, rto {rto} ms");
    eprintln!("default schedule: {seen}");
    assert!(took >= Duration::from_millis(7900), "a negative test cannot end before its schedule: {seen}");
    assert!(took < Duration::from_millis(39_500), "not faster than the fixed schedule: {seen}");
    if rto <= 100.0 {
        assert!(took < Duration::from_secs(12), "RTO at the floor, yet: {seen}");
    }
}

#[test]
fn wrong_port_through_the_nat_fails_fast() {
    // The server host answers a closed port with ICMP port unreachable; the NAT translates it back (conntrack
    // RELATED) and IP_RECVERR hands it to the engine: exit 4 at once, not after 39.5 s.
    holepunch_lab::require_lab!();
    let lab = lab_with(Preset::PortRestricted.into());
    let (primary, _) = lab.server_ips();
    let wrong = format!("{primary}:3999");
    let (out, took) = run_timed(&lab, "a1", &["--no-portmap", "--server", &wrong]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("port unreachable (ICMP)"), "{stderr}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
}
