//! `ping` (iputils) in lab namespaces, with the per-packet round-trip times parsed into percentiles: the
//! latency figures of the tunnel benchmark (docs/performance.md, "Tunnel throughput"), under load and idle.

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::cmd::Process;
use crate::error::{Error, Result};
use crate::topology::Node;

/// What a ping run saw.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PingStats {
    pub sent: u32,
    pub received: u32,
    /// Round-trip times of the answered echoes, ms, sorted.
    pub rtts_ms: Vec<f64>,
}

impl PingStats {
    /// The `p`-th percentile (0–100) of the round-trip times by nearest rank; `None` without answers.
    pub fn percentile(&self, p: f64) -> Option<f64> {
        let n = self.rtts_ms.len();
        if n == 0 {
            return None;
        }
        let rank = ((p / 100.0) * n as f64).ceil().clamp(1.0, n as f64) as usize;
        Some(self.rtts_ms[rank - 1])
    }
    pub fn p50(&self) -> Option<f64> {
        self.percentile(50.0)
    }
    pub fn p99(&self) -> Option<f64> {
        self.percentile(99.0)
    }
    /// Echoes without an answer, percent of those sent.
    pub fn loss_percent(&self) -> f64 {
        if self.sent == 0 {
            return 0.0;
        }
        100.0 * f64::from(self.sent.saturating_sub(self.received)) / f64::from(self.sent)
    }
}

/// Parses iputils ping output: `… icmp_seq=N ttl=64 time=0.325 ms` lines and the
/// `N packets transmitted, M received` summary.
pub fn parse(text: &str) -> PingStats {
    let mut s = PingStats::default();
    for line in text.lines() {
        if let Some(t) = line.split_whitespace().find_map(|w| w.strip_prefix("time=")) {
            // Usually a separate "ms" follows; below 1 ms iputils may print "time=0.0512".
            if let Ok(ms) = t.trim_end_matches("ms").parse::<f64>() {
                s.rtts_ms.push(ms);
            }
        } else if line.contains("packets transmitted") {
            let num = |key: &str| {
                line.split(',')
                    .find(|part| part.contains(key))
                    .and_then(|part| part.split_whitespace().next())
                    .and_then(|n| n.parse().ok())
            };
            s.sent = num("transmitted").unwrap_or(0);
            s.received = num("received").unwrap_or(0);
        }
    }
    s.rtts_ms.sort_by(f64::total_cmp);
    s
}

fn argv(dst: Ipv4Addr, count: u32, interval: Duration) -> Vec<String> {
    // -n: no name lookups; -W 1: after the last echo, wait at most 1 s for outstanding answers. No -w: with a
    // deadline ping would keep sending until `count` answers came and count the echoes in flight at the
    // deadline as lost. Bounded anyway: `count` echoes, `interval` apart, then at most 1 s.
    [
        "ping".to_owned(),
        "-n".into(),
        "-c".into(),
        count.to_string(),
        "-i".into(),
        format!("{:.3}", interval.as_secs_f64()),
        "-W".into(),
        "1".into(),
        dst.to_string(),
    ]
    .into()
}

/// Runs `count` pings from `node` to `dst`, `interval` apart (below 0.2 s needs root, which the lab has), and
/// returns what came back; lost echoes are not an error.
pub fn run(node: &Node, dst: Ipv4Addr, count: u32, interval: Duration) -> Result<PingStats> {
    let a = argv(dst, count, interval);
    let refs: Vec<&str> = a.iter().map(String::as_str).collect();
    let out = node.output(&refs)?;
    let stats = parse(&String::from_utf8_lossy(&out.stdout));
    if stats.sent == 0 {
        return Err(Error::Command {
            cmd: a.join(" "),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(stats)
}

/// A ping run in the background (e.g. while iperf3 loads the path).
pub struct PingRun {
    process: Process,
    limit: Duration,
}

/// Starts `count` pings from `node` to `dst`, `interval` apart, in the background.
pub fn spawn(node: &Node, dst: Ipv4Addr, count: u32, interval: Duration) -> Result<PingRun> {
    let a = argv(dst, count, interval);
    let refs: Vec<&str> = a.iter().map(String::as_str).collect();
    // ping's own end plus slack for a starved scheduler; past it the run is cut short.
    let limit = interval * count * 2 + Duration::from_secs(5);
    Ok(PingRun { process: node.spawn(&refs)?, limit })
}

impl PingRun {
    /// Waits for the run to end (bounded by its own deadline) and returns what it saw.
    pub fn finish(mut self) -> PingStats {
        let lines = self.process.lines_until_eof(self.limit);
        self.process.kill();
        parse(&lines.join("\n"))
    }
}

/// Pings `dst` from `node` once every 100 ms until one answer comes, at most for `limit`: waits for a path (a
/// tunnel's first handshake) without a fixed sleep. Returns the time it took.
pub fn wait_reachable(node: &Node, dst: Ipv4Addr, limit: Duration) -> Result<Duration> {
    let start = std::time::Instant::now();
    let target = dst.to_string();
    while start.elapsed() < limit {
        let out = node.output(&["ping", "-n", "-c", "1", "-W", "1", &target])?;
        if out.status.success() {
            return Ok(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(Error::Timeout { what: format!("an answer from {dst}"), ms: limit.as_millis() })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: &str = "PING 100.64.0.2 (100.64.0.2) 56(84) bytes of data.
64 bytes from 100.64.0.2: icmp_seq=1 ttl=64 time=0.425 ms
64 bytes from 100.64.0.2: icmp_seq=2 ttl=64 time=0.325 ms
64 bytes from 100.64.0.2: icmp_seq=4 ttl=64 time=12.5 ms
64 bytes from 100.64.0.2: icmp_seq=5 ttl=64 time=0.0512

--- 100.64.0.2 ping statistics ---
5 packets transmitted, 4 received, 20% packet loss, time 404ms
rtt min/avg/max/mdev = 0.051/3.326/12.500/5.300 ms
";

    #[test]
    fn parses_times_and_counts() {
        let s = parse(OUT);
        assert_eq!((s.sent, s.received), (5, 4));
        assert_eq!(s.rtts_ms, vec![0.0512, 0.325, 0.425, 12.5]);
        assert_eq!(s.p50(), Some(0.325));
        assert_eq!(s.p99(), Some(12.5));
        assert!((s.loss_percent() - 20.0).abs() < 1e-9);
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let s = PingStats { sent: 100, received: 100, rtts_ms: (1..=100).map(f64::from).collect() };
        assert_eq!(s.p50(), Some(50.0));
        assert_eq!(s.p99(), Some(99.0));
        assert_eq!(s.percentile(100.0), Some(100.0));
        assert_eq!(s.percentile(0.0), Some(1.0));
        assert_eq!(PingStats::default().p50(), None);
    }
}
