//! Observing a site's NAT behaviour with the independent probe ([`crate::probe`]), run as the
//! `holepunch-lab probe` command inside the lab's namespaces. Used by the self-tests and the demo.
//!
//! The method is RFC 4787's, with our own probe rather than STUN: one local socket queries three
//! responder sockets (same address other port, other address) to classify the mapping; a fresh
//! socket then asks the responder to answer from another port or another address to classify the
//! filtering.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::time::Duration;

use crate::cmd::Process;
use crate::error::{Error, Result};
use crate::preset::{Filtering, Mapping};
use crate::topology::{Lab, SERVER_IPS};

/// Port of the probe responder on both server addresses (it also listens on `PROBE_PORT + 1`).
pub const PROBE_PORT: u16 = 4000;

/// The responder sockets: primary address two ports, alternate address two ports.
pub fn responder_addrs() -> [SocketAddr; 4] {
    let (a, b) = SERVER_IPS;
    [
        SocketAddrV4::new(a, PROBE_PORT).into(),
        SocketAddrV4::new(a, PROBE_PORT + 1).into(),
        SocketAddrV4::new(b, PROBE_PORT).into(),
        SocketAddrV4::new(b, PROBE_PORT + 1).into(),
    ]
}

/// Starts the probe responder on the lab's server (`probe_bin` is the `holepunch-lab` binary) and
/// waits until it listens. The process is killed when the handle is dropped.
pub fn start_responder(lab: &Lab, probe_bin: &Path) -> Result<Process> {
    let mut cmd = lab.server().command(probe_bin);
    cmd.args(["probe", "serve", "--secs", "3600"]);
    for a in responder_addrs() {
        cmd.args(["--bind", &a.to_string()]);
    }
    let mut p = lab.server().spawn_command(cmd)?;
    p.wait_for_line(Duration::from_secs(5), |l| l == "ready")?;
    Ok(p)
}

/// What the probe saw of one host's NAT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observed {
    /// The mapped address differs from the host's own (a NAT rewrote it).
    pub translated: bool,
    pub mapping: Mapping,
    pub filtering: Filtering,
    /// The first mapped port equalled the local port.
    pub port_preserved: bool,
    /// The mapped address towards the primary responder socket.
    pub mapped: SocketAddr,
    /// The mapped addresses towards the three responder sockets (primary, other port, other address).
    pub mappings: [SocketAddr; 3],
}

/// Runs `probe query` in `host` from `local_port` with the given `--q` specs; returns one answer
/// per query (`None`: no answer, i.e. filtered or lost).
pub fn query(
    lab: &Lab,
    probe_bin: &Path,
    host: &str,
    local_port: u16,
    queries: &[String],
    timeout: Duration,
) -> Result<Vec<Option<(SocketAddr, SocketAddr)>>> {
    let node = lab.node(host)?;
    let mut cmd = node.command(probe_bin);
    cmd.args(["probe", "query", "--bind", &format!("0.0.0.0:{local_port}"), "--timeout-ms"])
        .arg(timeout.as_millis().to_string());
    for q in queries {
        cmd.args(["--q", q]);
    }
    let out = crate::cmd::run(&mut cmd)?;
    let text = String::from_utf8_lossy(&out.stdout);
    let answers: Vec<_> = text.lines().map(parse_query_line).collect();
    if answers.len() != queries.len() {
        return Err(Error::Command {
            cmd: "probe query".into(),
            status: "unexpected output".into(),
            stderr: text.into_owned(),
        });
    }
    Ok(answers)
}

/// Parses `ok mapped=<a> from=<b>` (or `timeout`).
fn parse_query_line(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let mut w = line.split_whitespace();
    if w.next()? != "ok" {
        return None;
    }
    let mapped = w.next()?.strip_prefix("mapped=")?.parse().ok()?;
    let from = w.next()?.strip_prefix("from=")?.parse().ok()?;
    Some((mapped, from))
}

/// Classifies the mapping and filtering `host` sees, using local ports `port` and `port + 1`.
/// Needs [`start_responder`] running.
pub fn observe(lab: &Lab, probe_bin: &Path, host: &str, port: u16) -> Result<Observed> {
    let [s1, s2, s3, _] = responder_addrs();
    let t = Duration::from_millis(600);
    let m = query(lab, probe_bin, host, port, &[s1.to_string(), s2.to_string(), s3.to_string()], t)?;
    let mut mappings = [SocketAddr::from(([0, 0, 0, 0], 0)); 3];
    for (k, a) in m.iter().enumerate() {
        mappings[k] = a.ok_or_else(|| Error::Unsupported(format!("{host}: the responder did not answer query {k}")))?.0;
    }
    let host_ip = lab.node(host)?.ip();
    let translated = mappings[0].ip() != std::net::IpAddr::V4(host_ip);
    let mapping = if mappings[0] == mappings[1] && mappings[0] == mappings[2] {
        Mapping::EndpointIndependent
    } else if mappings[0] == mappings[1] {
        Mapping::AddressDependent
    } else {
        Mapping::AddressAndPortDependent
    };
    // A fresh socket has contacted only s1; ask for answers from another address, then another port.
    let fresh =
        port.checked_add(1).ok_or_else(|| Error::Config("observe needs two local ports: port < 65535".into()))?;
    let f = query(lab, probe_bin, host, fresh, &[format!("{s1}@{s3}"), format!("{s1}@{s2}")], t)?;
    let filtering = match (f[0].is_some(), f[1].is_some()) {
        (true, _) => Filtering::EndpointIndependent,
        (false, true) => Filtering::AddressDependent,
        (false, false) => Filtering::AddressAndPortDependent,
    };
    Ok(Observed {
        translated,
        mapping,
        filtering,
        port_preserved: mappings[0].port() == port,
        mapped: mappings[0],
        mappings,
    })
}

/// Whether `from_host` reaches `to_host` (same site) through the site's public address: `to_host`
/// opens a mapping from `to_port` by querying the responder, then `from_host` queries that mapping.
pub fn hairpin_works(
    lab: &Lab,
    probe_bin: &Path,
    from_host: &str,
    to_host: &str,
    to_port: u16,
    from_port: u16,
) -> Result<bool> {
    let [s1, ..] = responder_addrs();
    let node = lab.node(to_host)?;
    let mut cmd = node.command(probe_bin);
    cmd.args(["probe", "listen", "--bind", &format!("0.0.0.0:{to_port}"), "--hello", &s1.to_string(), "--secs", "5"]);
    let mut listener = node.spawn_command(cmd)?;
    let line = listener.wait_for_line(Duration::from_secs(4), |l| l.starts_with("mapped "))?;
    let mapped: SocketAddr = line
        .trim_start_matches("mapped ")
        .parse()
        .map_err(|_| Error::Unsupported(format!("{to_host}: no mapping from the responder ({line})")))?;
    let r = query(lab, probe_bin, from_host, from_port, &[mapped.to_string()], Duration::from_millis(600))?;
    Ok(r[0].is_some())
}

/// An address in the lab's public ranges (a sanity check on what the probe reports).
pub fn is_lab_public(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    (o[0] == 203 && o[1] == 0 && o[2] == 113)
        || (o[0] == 198 && o[1] == 51 && o[2] == 100)
        || (o[0] == 192 && o[1] == 0 && o[2] == 2)
}
