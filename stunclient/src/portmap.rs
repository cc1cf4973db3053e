//! Router port mapping services (NAT-PMP, PCP, UPnP IGD) through `holepunch::io::portmap::probe`, and the double-NAT
//! check that compares the router's external address with what the STUN servers saw.

use holepunch::io::portmap::probe_default_gateway;
use holepunch::nat::behaviour::double_nat;
use holepunch::portmap::{PortmapReport, ProbeOptions, ServiceReport, ServiceStatus};
use serde_json::{json, Value};
use std::net::SocketAddr;

/// What the port mapping check found.
pub enum Outcome {
    /// Not run, and why.
    Skipped(String),
    /// The default gateway could not be found.
    NoGateway(String),
    Probed {
        report: Box<PortmapReport>,
        double_nat: Option<bool>,
        double_nat_reason: String,
    },
}

/// Probe the default gateway for UDP `local` (the primary socket's port); every test mapping is deleted
/// before this returns (the portmap module guarantees it, on error paths too).
pub fn check(local: SocketAddr, public: Option<SocketAddr>) -> Outcome {
    if local.ip().is_loopback() {
        // The servers are on this host: no router is in the path, and probing the real gateway would test a
        // network the user did not ask about.
        return Outcome::Skipped("the servers are on loopback; no router in the path".into());
    }
    if !local.is_ipv4() {
        return Outcome::Skipped("NAT-PMP, PCP and UPnP IGD are checked over IPv4 only".into());
    }
    let report = match probe_default_gateway(local.port(), &ProbeOptions::default()) {
        Ok(r) => r,
        Err(e) => return Outcome::NoGateway(format!("no default gateway: {e}")),
    };
    let external = [&report.natpmp, &report.pcp, &report.upnp].into_iter().find_map(|s| s.external_address);
    let (double_nat, double_nat_reason) = match (external, public) {
        (Some(ext), Some(p)) => double_nat(ext, p.ip()),
        (None, _) => (None, "no port mapping service reported an external address".to_string()),
        (_, None) => (None, "no public address from STUN to compare with".to_string()),
    };
    Outcome::Probed { report: Box::new(report), double_nat, double_nat_reason }
}

fn status(s: ServiceStatus) -> &'static str {
    match s {
        ServiceStatus::NotTried => "not-tried",
        ServiceStatus::NoAnswer => "no-answer",
        ServiceStatus::Answered => "answered",
    }
}

fn service_json(s: &ServiceReport) -> Value {
    json!({
        "status": status(s.status),
        "answered": s.answered(),
        "external_address": s.external_address.map(|a| a.to_string()),
        "error": s.error.as_ref().map(|e| e.to_string()),
        "test_mapping": s.test_mapping.as_ref().map(|m| json!({
            "internal_port": m.internal_port,
            "external_port": m.external_port,
            "lifetime_seconds": m.lifetime,
            "deleted": m.deleted,
            "delete_error": m.delete_error.as_ref().map(|e| e.to_string()),
        })),
        "mapping_error": s.mapping_error.as_ref().map(|e| e.to_string()),
    })
}

impl Outcome {
    /// The `portmap` object of the JSON output.
    pub fn to_json(&self) -> Value {
        match self {
            Outcome::Skipped(r) | Outcome::NoGateway(r) => json!({
                "tested": false, "reason": r, "gateway": null, "natpmp": null, "pcp": null, "upnp": null,
                "double_nat": null, "double_nat_reason": r,
            }),
            Outcome::Probed { report, double_nat, double_nat_reason } => json!({
                "tested": true,
                "reason": if report.any_answered() { "a port mapping service answered" }
                          else { "no port mapping service answered" },
                "gateway": report.gateway.to_string(),
                "natpmp": service_json(&report.natpmp),
                "pcp": service_json(&report.pcp),
                "upnp": service_json(&report.upnp),
                "double_nat": double_nat,
                "double_nat_reason": double_nat_reason,
            }),
        }
    }

    /// (label, text) lines of the human report.
    pub fn human_lines(&self) -> Vec<(String, String)> {
        match self {
            Outcome::Skipped(r) => vec![("port mapping".into(), format!("not checked ({r})"))],
            Outcome::NoGateway(r) => vec![("port mapping".into(), format!("not checked ({r})"))],
            Outcome::Probed { report, double_nat, double_nat_reason } => {
                let mut v = vec![
                    ("gateway".into(), report.gateway.to_string()),
                    ("NAT-PMP".into(), report.natpmp.to_string()),
                    ("PCP".into(), report.pcp.to_string()),
                    ("UPnP IGD".into(), report.upnp.to_string()),
                ];
                let d = match double_nat {
                    Some(true) => "yes",
                    Some(false) => "no",
                    None => "unknown",
                };
                v.push(("double NAT".into(), format!("{d} ({double_nat_reason})")));
                let left = report.mappings_left_behind();
                if !left.is_empty() {
                    v.push((
                        "WARNING".into(),
                        format!("test mapping not deleted with {} (it expires by itself)", left.join(", ")),
                    ));
                }
                v
            }
        }
    }
}
