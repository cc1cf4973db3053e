//! The memory the settings imply: checked against the host before anything starts, logged at start.
//!
//! Counted: what stund allocates up front or per connection (each UDP worker's rate-limiter table and its
//! recvmmsg/sendmmsg buffers, the TCP listener's table and each TCP connection's two buffers, and with
//! `--secret-file` the rendezvous registry at full capacity, its introductions in flight and its rate-limiter
//! table, and with TURN on every allocation at its bound and the relay queue). Not counted: thread stacks
//! (reserved, mostly never touched) and the kernel's socket buffers.

use crate::config::Settings;
use anyhow::{bail, Result};
use holepunch::signal::registry::{MEMORY_CANDIDATE_BYTES, MEMORY_SLOT_BYTES};
use holepunch::signal::MAX_CANDIDATES;

/// Used when the host's memory cannot be read.
const FALLBACK_LIMIT: u64 = 4 << 30;

/// Memory per part of the server, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub threads: usize,
    pub sockets: usize,
    /// Rate-limiter table of one UDP worker (0 without a limiter).
    pub table: u64,
    /// recvmmsg/sendmmsg buffers of one UDP worker.
    pub buffers: u64,
    /// TCP connections allowed (0 without TCP).
    pub tcp_connections: usize,
    /// Buffers of one TCP connection.
    pub per_connection: u64,
    /// The TCP listener's rate-limiter table (0 without TCP or limiter).
    pub tcp_table: u64,
    /// The rendezvous at `--rendezvous-capacity` (0 without `--secret-file`).
    pub rendezvous: u64,
    /// The TURN relay at `--max-allocations` (0 when TURN is off).
    pub turn: u64,
}

/// The TURN relay at full capacity: every allocation at its bound (`Allocation::MAX_BYTES`: permissions and
/// channels full), the relay thread's queue, its rate-limiter table and buffers. The relay sockets' kernel
/// buffers are not counted (like the listening sockets').
pub fn turn_bytes(t: &crate::config::Turn, rate: Option<holepunch::server::RateLimitConfig>) -> u64 {
    let allocations = t.max_allocations as u64 * holepunch::relay::Allocation::MAX_BYTES as u64;
    allocations + crate::turn::QUEUE_BYTES as u64 + rate.map_or(0, |r| r.memory_bytes() as u64)
}

/// Bytes of one PUSH in flight (the message, at most ~610 bytes, and its transaction's state).
const PUSH_BYTES: u64 = 768;

/// The rendezvous at full capacity: the registry's table (a hash table has a power of two of slots, at most
/// 7/8 full, docs/signal.md "Registry"), every peer with [`MAX_CANDIDATES`] candidates, the pushes in flight
/// (at most twice the introductions remembered, a tenth of the capacity) and the rate-limiter table.
pub fn rendezvous_bytes(r: &crate::config::Rendezvous) -> u64 {
    let cap = r.capacity as u64;
    let slots = (cap * 8 / 7).max(1).next_power_of_two();
    let table = slots * MEMORY_SLOT_BYTES as u64;
    let candidates = cap * (MAX_CANDIDATES * MEMORY_CANDIDATE_BYTES) as u64;
    let pushes = 2 * (cap / 10).max(64) * PUSH_BYTES;
    table + candidates + pushes + r.rate_limit.memory_bytes() as u64 + redis_queue_bytes(r)
}

/// With `--registry`, the writes waiting for Redis at their bound: one encoded registration (at most about
/// 400 bytes with every candidate) and its map slot per queued name.
fn redis_queue_bytes(r: &crate::config::Rendezvous) -> u64 {
    const QUEUED_REGISTRATION_BYTES: u64 = 512;
    r.registry.as_ref().map_or(0, |_| crate::cluster::MAX_QUEUED_REGISTRATIONS as u64 * QUEUED_REGISTRATION_BYTES)
}

impl Plan {
    pub fn of(s: &Settings) -> Plan {
        let table = s.rate_limit.map_or(0, |rl| rl.memory_bytes() as u64);
        Plan {
            threads: s.threads,
            sockets: s.server.local_sockets().len(),
            table,
            buffers: crate::udp::WORKER_BUFFER_BYTES as u64,
            tcp_connections: if s.tcp { s.tcp_max_connections } else { 0 },
            per_connection: crate::tcp::CONNECTION_BUFFER_BYTES as u64,
            tcp_table: if s.tcp { table } else { 0 },
            rendezvous: s.rendezvous.as_ref().map_or(0, rendezvous_bytes),
            turn: s.turn.as_ref().map_or(0, |t| turn_bytes(t, s.rate_limit)),
        }
    }

    /// UDP workers: threads × local sockets.
    pub fn workers(&self) -> u64 {
        self.threads as u64 * self.sockets as u64
    }

    pub fn udp(&self) -> u64 {
        self.workers().saturating_mul(self.table + self.buffers)
    }

    pub fn tcp(&self) -> u64 {
        (self.tcp_connections as u64).saturating_mul(self.per_connection).saturating_add(self.tcp_table)
    }

    pub fn total(&self) -> u64 {
        self.udp().saturating_add(self.tcp()).saturating_add(self.rendezvous).saturating_add(self.turn)
    }

    /// How the total is made up, naming the settings.
    pub fn describe(&self) -> String {
        let mut d = format!(
            "--threads {} x {} socket(s) x ({} rate-limit table (--rate-limit-slots) + {} buffers)",
            self.threads,
            self.sockets,
            human(self.table),
            human(self.buffers)
        );
        if self.tcp_connections > 0 {
            d += &format!(
                " + --tcp-max-connections {} x {} + {} TCP rate-limit table",
                self.tcp_connections,
                human(self.per_connection),
                human(self.tcp_table)
            );
        }
        if self.rendezvous > 0 {
            d += &format!(" + {} rendezvous (--rendezvous-capacity)", human(self.rendezvous));
        }
        if self.turn > 0 {
            d += &format!(" + {} TURN relay (--max-allocations)", human(self.turn));
        }
        d
    }

    /// Refuses settings that need more than `limit` bytes, in one line naming them.
    pub fn check(&self, limit: u64) -> Result<()> {
        if self.total() > limit {
            bail!(
                "the settings need {} of memory, more than the {} allowed (half of this host's memory): {}; \
                 lower --threads, --rate-limit-slots, --tcp-max-connections, --rendezvous-capacity or --max-allocations",
                human(self.total()),
                human(limit),
                self.describe()
            );
        }
        Ok(())
    }
}

/// Half of the memory this process may use: the host's RAM or its cgroup's limit, whichever is smaller.
/// The other half stays for the kernel's socket buffers and everything else on the host.
pub fn host_limit() -> u64 {
    // SAFETY: sysconf reads a system constant.
    let (pages, size) = unsafe { (libc::sysconf(libc::_SC_PHYS_PAGES), libc::sysconf(libc::_SC_PAGESIZE)) };
    let ram = (pages > 0 && size > 0).then(|| pages as u64 * size as u64);
    // cgroup v2: "max" or a number of bytes.
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok().and_then(|s| s.trim().parse::<u64>().ok());
    match (ram, cgroup) {
        (Some(r), Some(c)) => r.min(c) / 2,
        (Some(m), None) | (None, Some(m)) => m / 2,
        (None, None) => FALLBACK_LIMIT,
    }
}

/// Bytes in binary units with one decimal (1.5 MiB).
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Cli, FileConfig};
    use clap::Parser;

    fn settings(args: &[&str]) -> Settings {
        let cli =
            Cli::try_parse_from(["stund", "--primary", "127.0.0.1", "--alternate", "127.0.0.2"].iter().chain(args))
                .unwrap();
        Settings::merge(cli, FileConfig::default()).unwrap()
    }

    #[test]
    fn defaults_are_small_and_a_terabyte_is_refused() {
        let p = Plan::of(&settings(&["--threads", "2"]));
        // 2 threads x 4 sockets x (1 MiB + 128 KiB) + 1024 x 4 KiB + 1 MiB.
        assert_eq!(p.total(), 8 * ((1 << 20) + (128 << 10)) + 1024 * 4096 + (1 << 20));
        assert!(p.check(1 << 30).is_ok());

        let p = Plan::of(&settings(&["--threads", "1024", "--rate-limit-slots", "16777216"]));
        assert!(p.total() >= 1 << 40, "{}", human(p.total()));
        let e = p.check(16 << 30).unwrap_err().to_string();
        assert!(!e.contains('\n'), "{e}");
        for setting in ["--threads 1024", "--rate-limit-slots", "1.0 TiB"] {
            assert!(e.contains(setting), "{e}");
        }
        // Without the limiter the tables are gone.
        let p = Plan::of(&settings(&["--threads", "1", "--rate-limit", "0", "--no-tcp"]));
        assert_eq!(p.total(), 4 * (128 << 10));
    }

    #[test]
    fn rendezvous_capacity_is_counted() {
        let off = Plan::of(&settings(&["--threads", "1", "--no-tcp"]));
        let on = Plan::of(&settings(&["--threads", "1", "--no-tcp", "--secret-file", "s"]));
        assert_eq!(off.rendezvous, 0);
        // 100 000 peers: 131 072 table slots, 16 candidates each, 20 000 pushes, 256 KiB limiter.
        let want = 131_072 * MEMORY_SLOT_BYTES as u64
            + 100_000 * 16 * MEMORY_CANDIDATE_BYTES as u64
            + 20_000 * PUSH_BYTES
            + 16384 * 16;
        assert_eq!(on.rendezvous, want);
        assert_eq!(on.total(), off.total() + want);
        assert!(on.describe().contains("rendezvous (--rendezvous-capacity)"), "{}", on.describe());
        let shared =
            Plan::of(&settings(&["--threads", "1", "--no-tcp", "--secret-file", "s", "--registry", "redis://h/"]));
        assert_eq!(shared.rendezvous, want + 65_536 * 512, "with --registry, the Redis queue at its bound");
        let huge = Plan::of(&settings(&["--secret-file", "s", "--rendezvous-capacity", "16777216"]));
        let e = huge.check(1 << 30).unwrap_err().to_string();
        assert!(e.contains("--rendezvous-capacity"), "{e}");
    }

    #[test]
    fn human_units() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(1 << 40), "1.0 TiB");
        assert!(host_limit() > 0);
    }
}
