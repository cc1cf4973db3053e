//! iperf3 in lab namespaces: a one-test server and a client whose JSON report (`iperf3 -J`) is parsed into the
//! figures the tunnel benchmark prints (docs/performance.md, "Tunnel throughput"). iperf3 is the third-party
//! yardstick: neither side of it is ours.

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::cmd::Process;
use crate::error::{Error, Result};
use crate::topology::Node;

/// Longest wait for the server to listen.
const LISTEN_LIMIT: Duration = Duration::from_secs(5);
/// Time a client may take beyond its test duration (connect, the final exchange of results) before it is killed.
const CLIENT_SLACK: Duration = Duration::from_secs(15);

/// `iperf3 -s -1 -B bind -p port` in `node`: serves exactly one test, then exits; killed when the handle drops.
pub fn server(node: &Node, bind: Ipv4Addr, port: u16) -> Result<Process> {
    let (bind, port) = (bind.to_string(), port.to_string());
    // --forceflush: the "Server listening" line must reach the pipe at once, not at exit.
    let mut p = node.spawn(&["iperf3", "-s", "-1", "-B", &bind, "-p", &port, "--forceflush"])?;
    p.wait_for_line(LISTEN_LIMIT, |l| l.contains("Server listening"))?;
    Ok(p)
}

/// What one client run reported.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct IperfResult {
    /// Receiver's goodput, bits per second.
    pub bits_per_second: f64,
    /// Bytes the receiver got.
    pub bytes: u64,
    /// Length of the test, seconds (as the receiver measured it).
    pub seconds: f64,
    /// TCP retransmissions of the sender (0 when not reported).
    pub retransmits: u64,
    /// CPU of the client process, percent of one core over the test (user + system).
    pub host_cpu_percent: f64,
    /// CPU of the server process, likewise.
    pub remote_cpu_percent: f64,
}

impl IperfResult {
    /// CPU seconds both iperf3 processes used over the test.
    pub fn cpu_seconds(&self) -> f64 {
        (self.host_cpu_percent + self.remote_cpu_percent) / 100.0 * self.seconds
    }
}

/// Options of a client run.
#[derive(Clone, Copy, Debug)]
pub struct ClientOpts {
    pub duration: Duration,
    /// Parallel streams (`-P`).
    pub streams: u32,
    /// Server sends, client receives (`-R`).
    pub reverse: bool,
}

impl Default for ClientOpts {
    fn default() -> Self {
        ClientOpts { duration: Duration::from_secs(2), streams: 1, reverse: false }
    }
}

/// Runs `iperf3 -c dst -p port -J` (TCP) in `node` and parses its report; bounded by the duration plus slack.
pub fn client(node: &Node, dst: Ipv4Addr, port: u16, opts: ClientOpts) -> Result<IperfResult> {
    let secs = opts.duration.as_secs().max(1).to_string();
    let limit = (opts.duration + CLIENT_SLACK).as_secs().to_string();
    let (dst, port, streams) = (dst.to_string(), port.to_string(), opts.streams.to_string());
    let mut argv = vec!["timeout", "-s", "KILL", &limit, "iperf3", "-c", &dst, "-p", &port, "-t", &secs];
    argv.extend(["-P", &streams, "-J", "--connect-timeout", "5000"]);
    if opts.reverse {
        argv.push("-R");
    }
    let out = node.output(&argv)?;
    let text = String::from_utf8_lossy(&out.stdout);
    let parsed = parse_json(&text);
    match parsed {
        Ok(r) if out.status.success() => Ok(r),
        // iperf3 -J reports its own errors in the JSON ("error": "..."), which says more than the status.
        Err(e) => Err(e),
        Ok(_) => Err(Error::Command {
            cmd: argv.join(" "),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        }),
    }
}

/// Parses an `iperf3 -J` report of a TCP test.
pub fn parse_json(text: &str) -> Result<IperfResult> {
    let bad = |what: &str| Error::Config(format!("iperf3 report: {what}"));
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| bad(&format!("not JSON ({e})")))?;
    if let Some(err) = v.get("error").and_then(|e| e.as_str()) {
        return Err(bad(err));
    }
    let end = &v["end"];
    let recv = &end["sum_received"];
    let cpu = &end["cpu_utilization_percent"];
    let f = |x: &serde_json::Value, name: &str| x[name].as_f64().ok_or_else(|| bad(&format!("no {name}")));
    Ok(IperfResult {
        bits_per_second: f(recv, "bits_per_second")?,
        bytes: recv["bytes"].as_u64().ok_or_else(|| bad("no bytes"))?,
        seconds: f(recv, "seconds")?,
        retransmits: end["sum_sent"]["retransmits"].as_u64().unwrap_or(0),
        host_cpu_percent: f(cpu, "host_total")?,
        remote_cpu_percent: f(cpu, "remote_total")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parts of a real iperf3 3.12 report that are read.
    const REPORT: &str = r#"{"start":{},"intervals":[],"end":{
        "sum_sent":{"start":0,"end":2.0,"seconds":2.0,"bytes":157900000,"bits_per_second":631600000,"retransmits":12,"sender":true},
        "sum_received":{"start":0,"end":2.0004,"seconds":2.0004,"bytes":157832672,"bits_per_second":628745913.5,"sender":true},
        "cpu_utilization_percent":{"host_total":2.1163,"host_user":0,"host_system":2.1163,"remote_total":8.3759,"remote_user":1.44,"remote_system":6.93}}}"#;

    #[test]
    fn parses_a_tcp_report() {
        let r = parse_json(REPORT).unwrap();
        assert_eq!(r.bytes, 157_832_672);
        assert!((r.bits_per_second - 628_745_913.5).abs() < 1.0);
        assert_eq!(r.retransmits, 12);
        assert!((r.host_cpu_percent - 2.1163).abs() < 1e-9);
        assert!((r.cpu_seconds() - (2.1163 + 8.3759) / 100.0 * 2.0004).abs() < 1e-9);
    }

    #[test]
    fn an_error_report_is_an_error() {
        let e = parse_json(r#"{"start":{},"end":{},"error":"unable to connect to server: Connection refused"}"#);
        assert!(e.unwrap_err().to_string().contains("Connection refused"));
        assert!(parse_json("not json").is_err());
        assert!(parse_json("{}").is_err());
    }
}
