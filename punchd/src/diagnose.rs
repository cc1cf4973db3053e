//! `--diagnose`: a short NAT diagnosis (holepunch::nat::Diagnosis, docs/stunclient.md) from the punching socket
//! before the node starts, so the profile the rendezvous passes on (and the prediction) describes the NAT as
//! it is. No hairpin or lifetime test (they wait out whole schedules); a few extra ephemeral sockets for the
//! allocation test, closed afterwards. Bounded: a silent server ends it at `limit` with an unknown profile.

use anyhow::{Context, Result};
use holepunch::io::{self, blocking, Exit, Notice};
use holepunch::nat::{Config, Diagnosis, Event};
use holepunch::net::{ephemeral_like, Retransmit};
use holepunch::signal::NatProfile;
use std::net::{SocketAddr, UdpSocket};
use std::ops::ControlFlow;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Fresh sockets of the allocation test.
const SAMPLES: usize = 3;

/// Runs the diagnosis on `socket` (handed back) towards `server`; the NAT profile found, UNKNOWN when nothing
/// answered within `limit`.
pub fn profile(
    socket: UdpSocket,
    server: SocketAddr,
    retransmit: Retransmit,
    limit: Duration,
    shutdown: Arc<AtomicBool>,
) -> Result<(UdpSocket, NatProfile)> {
    let mut cfg = Config::new(vec![server], io::os_seed()?);
    cfg.retransmit = retransmit;
    cfg.allocation_samples = SAMPLES;
    cfg.hairpin = false;
    let mut sockets = vec![socket];
    for _ in 1..cfg.plan().count() {
        sockets.push(UdpSocket::bind(ephemeral_like(server)).context("a socket for the NAT diagnosis")?);
    }
    let locals = sockets.iter().map(UdpSocket::local_addr).collect::<std::io::Result<Vec<_>>>()?;
    let start = Instant::now();
    let mut diag = Diagnosis::new(cfg, locals, start).context("the NAT diagnosis")?;
    let driver = blocking::Driver::new(sockets)
        .context("the NAT diagnosis sockets")?
        .stop_flag(shutdown)
        .deadline(start + limit)
        .wake_every(Duration::from_millis(200));
    let exit = driver.run(&mut diag, |notice| match notice {
        Notice::Event(Event::Finished) => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    })?;
    let socket = driver.into_sockets().swap_remove(0);
    let report = match (exit, diag.report()) {
        (Exit::Done(()), Some(r)) => r.clone(),
        _ => {
            log::warn!("NAT diagnosis did not finish within {limit:?}: NAT profile unknown");
            return Ok((socket, NatProfile::UNKNOWN));
        }
    };
    let p = NatProfile {
        mapping: report.mapping,
        filtering: report.filtering,
        allocation: report.allocation,
        hairpin: report.hairpin,
        port_mapping: false,
        no_nat: report.nat == Some(false),
    };
    log::info!(
        "NAT diagnosis in {:.1} s: mapping {}, filtering {}, allocation {}",
        start.elapsed().as_secs_f64(),
        p.mapping.as_str(),
        p.filtering.as_str(),
        p.allocation.as_str()
    );
    Ok((socket, p))
}
