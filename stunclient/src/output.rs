//! Human and JSON renderings of a report. The JSON field names and values are a stable interface
//! (docs/stunclient.md); change them only together with `schema_version`.

use crate::net::{Server, Sockets};
use crate::portmap;
use holepunch::nat::{Allocation, Config, Report, Retransmit};
use holepunch::text::escape_controls;
use holepunch::transaction::check_target;
use serde_json::{json, Value};
use std::net::SocketAddr;

/// Version of the JSON layout below.
pub const SCHEMA_VERSION: u32 = 1;

fn opt<T: ToString>(v: Option<T>) -> Value {
    v.map_or(Value::Null, |v| Value::String(v.to_string()))
}

/// The `--json` object.
pub fn json(r: &Report, servers: &[Server], pm: &portmap::Outcome) -> Value {
    let given = |addr: SocketAddr| {
        servers.iter().find(|s| s.addr == addr).map_or_else(|| addr.to_string(), |s| s.given.clone())
    };
    let delta = match r.allocation {
        Allocation::Sequential { delta } => json!(delta),
        _ => Value::Null,
    };
    let lifetime = match &r.lifetime {
        None => json!({"tested": false, "alive_seconds": null, "expired_seconds": null,
                       "reason": "not requested (--lifetime)"}),
        Some(Ok(l)) => json!({
            "tested": true,
            "alive_seconds": l.alive.as_secs_f64(),
            "expired_seconds": l.expired.map(|e| e.as_secs_f64()),
            "reason": match l.expired {
                Some(e) => format!("alive after {:.1} s idle, gone after {:.1} s (RFC 5780 §4.6)",
                                   l.alive.as_secs_f64(), e.as_secs_f64()),
                None => format!("still alive after {:.1} s idle, the --max-wait bound", l.alive.as_secs_f64()),
            },
        }),
        Some(Err(e)) => json!({"tested": true, "alive_seconds": null, "expired_seconds": null, "reason": e}),
    };
    json!({
        "schema_version": SCHEMA_VERSION,
        "servers": r.servers.iter().map(|s| json!({
            "server": given(s.addr),
            "address": s.addr.to_string(),
            "answered": s.mapped.is_some(),
            "public": opt(s.mapped),
            "alternate": opt(s.alternate),
            "legacy": s.legacy,
            "software": s.software,
            "error": s.error.as_ref().map(ToString::to_string),
            "rtt_ms": s.srtt.map(|d| (d.as_secs_f64() * 1e4).round() / 10.0),
            "rto_ms": (s.rto.as_secs_f64() * 1e4).round() / 10.0,
        })).collect::<Vec<_>>(),
        "reference_server": opt(r.reference),
        "rfc5780": r.rfc5780,
        "legacy": r.legacy,
        "local": r.local.to_string(),
        "public": opt(r.public),
        "nat": r.nat,
        "nat_reason": r.nat_reason,
        "type": r.kind.as_str(),
        "mapping": r.mapping.as_str(),
        "mapping_reason": r.mapping_reason,
        "filtering": r.filtering.as_str(),
        "filtering_reason": r.filtering_reason,
        "port_preserved": r.port_preserved,
        "port_allocation": r.allocation.as_str(),
        "port_allocation_delta": delta,
        "port_allocation_reason": r.allocation_reason,
        "port_allocation_samples": r.allocation_samples.iter()
            .map(|(l, p)| json!({"local": l.to_string(), "public": p.to_string()})).collect::<Vec<_>>(),
        "mappings": r.observations.iter()
            .map(|o| json!({"destination": o.dest.to_string(), "public": o.mapped.to_string()}))
            .collect::<Vec<_>>(),
        "hairpin": r.hairpin,
        "hairpin_reason": r.hairpin_reason,
        "alg": r.alg,
        "alg_reason": r.alg_reason,
        "lifetime": lifetime,
        "portmap": pm.to_json(),
        "verdict": r.verdict.as_str(),
        "verdict_reason": r.verdict_reason,
        "not_tested": r.not_tested,
        "notes": r.notes,
    })
}

/// The first lines, before the tests run (they can take a while when answers are missing).
pub fn print_start(servers: &[Server], sockets: &Sockets, cfg: &Config) {
    let list = servers
        .iter()
        .map(|s| if s.given == s.addr.to_string() { s.given.clone() } else { format!("{} ({})", s.given, s.addr) })
        .collect::<Vec<_>>()
        .join(", ");
    eprintln!("stunclient: testing from {} against {list}", sockets.locals[0]);
    let learned = Retransmit { rto: cfg.min_rto.min(cfg.retransmit.rto), ..cfg.retransmit };
    eprintln!(
        "  (a test with no answer gives up after {:.1} s at most, after as little as {:.1} s once the server's \
         round trip is measured; --timeout, --retries, --rm and --min-rto change that)",
        cfg.retransmit.give_up_after().as_secs_f64(),
        learned.give_up_after().as_secs_f64()
    );
    if let Some(note) = &sockets.fallback_note {
        eprintln!("  note: {note}");
    }
}

fn yes_no(v: Option<bool>, yes: &str, no: &str) -> String {
    match v {
        Some(true) => yes.into(),
        Some(false) => no.into(),
        None => "unknown".into(),
    }
}

/// The human report.
pub fn print_human(r: &Report, pm: &portmap::Outcome) {
    // Values can carry a server's or a router's text (an ERROR-CODE reason phrase, a UPnP description):
    // escaped, so none of it can drive the terminal or forge a line of the report.
    let line = |k: &str, v: &str| println!("  {:<18} {}", escape_controls(k), escape_controls(v));
    println!();
    for s in &r.servers {
        let what = match (&s.mapped, &s.error) {
            (Some(m), _) => {
                let mut t = format!("answered, saw {m}");
                if let Some(rtt) = s.srtt {
                    t.push_str(&format!(" (rtt {:.1} ms)", rtt.as_secs_f64() * 1e3));
                }
                if let Some(a) = s.alternate {
                    t.push_str(&format!(", alternate {a}"));
                    if let Err(why) = check_target(s.addr, a) {
                        t.push_str(&format!(" (not used: {why})"));
                    }
                }
                if s.legacy {
                    t.push_str(" (RFC 3489 legacy)");
                }
                t
            }
            (None, Some(e)) => e.to_string(),
            (None, None) => "no answer".into(),
        };
        line("server", &format!("{}: {what}", s.addr));
    }
    line("local endpoint", &r.local.to_string());
    line("public endpoint", &r.public.map_or("unknown".into(), |p| p.to_string()));
    line("NAT", &format!("{} ({})", yes_no(r.nat, "yes", "no"), r.nat_reason));
    line("type", r.kind.as_str());
    line("mapping", &format!("{} ({})", r.mapping, r.mapping_reason));
    line("filtering", &format!("{} ({})", r.filtering, r.filtering_reason));
    line(
        "port preserved",
        &match (r.port_preserved, r.public) {
            (Some(p), Some(public)) => {
                format!("{} ({} -> {})", if p { "yes" } else { "no" }, r.local.port(), public.port())
            }
            _ => "unknown".into(),
        },
    );
    line(
        "port allocation",
        &match r.allocation {
            Allocation::Sequential { delta } => format!("sequential, delta {delta} ({})", r.allocation_reason),
            a => format!("{} ({})", a.as_str(), r.allocation_reason),
        },
    );
    line("hairpinning", &format!("{} ({})", yes_no(r.hairpin, "yes", "no"), r.hairpin_reason));
    line("ALG", &format!("{} ({})", yes_no(r.alg, "detected", "none seen"), r.alg_reason));
    line(
        "mapping lifetime",
        &match &r.lifetime {
            None => "not tested (--lifetime)".into(),
            Some(Ok(l)) => match l.expired {
                Some(e) => format!("between {:.1} s and {:.1} s idle", l.alive.as_secs_f64(), e.as_secs_f64()),
                None => format!("longer than {:.1} s (--max-wait)", l.alive.as_secs_f64()),
            },
            Some(Err(e)) => format!("unknown ({e})"),
        },
    );
    for (k, v) in pm.human_lines() {
        line(&k, &v);
    }
    if !r.not_tested.is_empty() {
        println!("\nNot tested or no answer:");
        for n in &r.not_tested {
            println!("  - {}", escape_controls(n));
        }
    }
    if !r.notes.is_empty() {
        println!("\nNotes:");
        for n in &r.notes {
            println!("  - {}", escape_controls(n));
        }
    }
    println!("\nVerdict: {}: {}", r.verdict, escape_controls(&r.verdict_reason));
}
