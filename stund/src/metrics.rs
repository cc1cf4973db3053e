//! Counter totals: the Prometheus text endpoint (`--metrics ADDR`) and the periodic log summary.
//!
//! The endpoint is for one scraper and the odd curl: it holds at most [`MAX_CONNECTIONS`] connections (more
//! are closed at once) and gives each [`READ_TIMEOUT`] to send its request and [`WRITE_TIMEOUT`] to take the
//! answer, so idle or slow clients cannot use up the file descriptors STUN over TCP needs.

use holepunch::server::{Counters, SharedCounters};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::rendezvous::{self, Rendezvous, REFUSAL_LABELS};
use crate::tcp::TcpShared;
use crate::turn::TurnShared;

/// Concurrent connections the endpoint serves.
pub const MAX_CONNECTIONS: usize = 8;
/// Time a client has to send its request head.
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Time a client has to read the answer.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(3);

/// Everything the reports read.
pub struct Stats {
    pub blocks: Vec<Arc<SharedCounters>>,
    pub tcp: Option<Arc<TcpShared>>,
    pub start: Instant,
    pub mode: &'static str,
    pub workers: usize,
    pub rendezvous: RendezvousStats,
    /// The TURN relay, when on.
    pub turn: Option<Arc<TurnShared>>,
    /// Metrics connections closed at once because [`MAX_CONNECTIONS`] were open.
    pub metrics_refused: AtomicU64,
}

/// The rendezvous: its server when on, stund's own counters always.
pub struct RendezvousStats {
    pub server: Option<Arc<Rendezvous>>,
    pub counters: Arc<rendezvous::Counters>,
}

impl Stats {
    pub fn totals(&self) -> Counters {
        SharedCounters::sum(self.blocks.iter().map(|b| &**b))
    }

    /// Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let c = self.totals();
        let mut s = String::with_capacity(2048);
        let mut family = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in samples {
                let _ = writeln!(s, "{name}{labels} {v}");
            }
        };
        family(
            "stund_requests_total",
            "counter",
            "Binding requests received, by form (rfc5389: with magic cookie; rfc3489: classic).",
            &[("{form=\"rfc5389\"}", c.requests_binding), ("{form=\"rfc3489\"}", c.requests_rfc3489)],
        );
        family("stund_requests_tcp_total", "counter", "Binding requests received over TCP.", &[("", c.requests_tcp)]);
        family(
            "stund_requests_with_attribute_total",
            "counter",
            "Requests using an RFC 5780 attribute (change_request counts only requests with a flag set).",
            &[
                ("{attribute=\"change_request\"}", c.requests_change_request),
                ("{attribute=\"response_port\"}", c.requests_response_port),
                ("{attribute=\"padding\"}", c.requests_padding),
            ],
        );
        family(
            "stund_responses_total",
            "counter",
            "Responses produced, by class.",
            &[("{class=\"success\"}", c.responses_success), ("{class=\"error\"}", c.responses_error)],
        );
        family(
            "stund_dropped_total",
            "counter",
            "Messages not answered, by reason.",
            &[
                ("{reason=\"rate_limited\"}", c.dropped_rate_limited),
                ("{reason=\"malformed\"}", c.dropped_malformed),
                ("{reason=\"not_request\"}", c.dropped_not_request),
            ],
        );
        family("stund_send_errors_total", "counter", "Responses the kernel refused to send.", &[("", c.send_errors)]);
        if let Some(t) = &self.tcp {
            family("stund_tcp_connections_open", "gauge", "TCP connections open now.", &[("", t.open() as u64)]);
            family(
                "stund_tcp_connections_total",
                "counter",
                "TCP connections, by outcome (refused: over --tcp-max-connections; refused_per_ip: over \
                 --tcp-max-connections-per-ip).",
                &[
                    ("{outcome=\"accepted\"}", t.accepted.load(Ordering::Relaxed)),
                    ("{outcome=\"refused\"}", t.refused.load(Ordering::Relaxed)),
                    ("{outcome=\"refused_per_ip\"}", t.refused_per_ip.load(Ordering::Relaxed)),
                ],
            );
        }
        family(
            "stund_metrics_connections_refused_total",
            "counter",
            "Connections to this endpoint closed at once because 8 were open.",
            &[("", self.metrics_refused.load(Ordering::Relaxed))],
        );
        family(
            "stund_udp_workers",
            "gauge",
            "UDP worker threads (threads x local sockets).",
            &[("", self.workers as u64)],
        );
        self.render_rendezvous(&mut family);
        self.render_turn(&mut family);
        let mode = format!("{{mode=\"{}\",version=\"{}\"}}", self.mode, env!("CARGO_PKG_VERSION"));
        family("stund_info", "gauge", "Server mode and version.", &[(&mode, 1)]);
        family("stund_uptime_seconds", "gauge", "Seconds since start.", &[("", self.start.elapsed().as_secs())]);
        s
    }

    fn render_rendezvous(&self, family: &mut impl FnMut(&str, &str, &str, &[(&str, u64)])) {
        let rc = &self.rendezvous.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        family(
            "stund_rendezvous_enabled",
            "gauge",
            "1 when the rendezvous is on (--secret-file), else 0.",
            &[("", u64::from(self.rendezvous.server.is_some()))],
        );
        let Some(server) = &self.rendezvous.server else {
            family(
                "stund_rendezvous_ignored_total",
                "counter",
                "Rendezvous messages dropped because the rendezvous is off (no --secret-file).",
                &[("", load(&rc.ignored))],
            );
            return;
        };
        let snap = server.snapshot();
        let st = snap.stats;
        family(
            "stund_rendezvous_requests_total",
            "counter",
            "Rendezvous requests received (UDP).",
            &[("", st.requests)],
        );
        family(
            "stund_rendezvous_registrations_total",
            "counter",
            "Registrations by kind (new: a name registered or moved to a new endpoint; refresh: a keepalive).",
            &[("{kind=\"new\"}", st.registrations), ("{kind=\"refresh\"}", st.refreshes)],
        );
        family(
            "stund_rendezvous_peers",
            "gauge",
            "Peers registered now (with --registry: in the whole cluster, as this instance's replica knows them).",
            &[("", snap.peers as u64)],
        );
        family(
            "stund_rendezvous_registry_bytes",
            "gauge",
            "Memory of the registry now (table and candidates).",
            &[("", snap.registry_bytes as u64)],
        );
        family("stund_rendezvous_expired_total", "counter", "Registrations that expired.", &[("", load(&rc.expired))]);
        family(
            "stund_rendezvous_introductions_total",
            "counter",
            "Introductions: both peers pushed each other's candidates.",
            &[("", st.introductions)],
        );
        family(
            "stund_rendezvous_pushes_total",
            "counter",
            "PUSH transactions by outcome (failed: unanswered or refused by the peer).",
            &[("{outcome=\"acked\"}", st.pushes_acked), ("{outcome=\"failed\"}", st.pushes_failed)],
        );
        family(
            "stund_rendezvous_pushes_in_flight",
            "gauge",
            "PUSH transactions in flight.",
            &[("", snap.pushes_in_flight as u64)],
        );
        let labels: Vec<String> = REFUSAL_LABELS.iter().map(|r| format!("{{reason=\"{r}\"}}")).collect();
        let refused: Vec<(&str, u64)> = labels.iter().map(String::as_str).zip(rc.refused.iter().map(load)).collect();
        family(
            "stund_rendezvous_refused_total",
            "counter",
            "Requests refused with an error answer, by reason.",
            &refused,
        );
        family(
            "stund_rendezvous_challenged_total",
            "counter",
            "Requests answered 438 with a fresh nonce (normal once per peer per nonce lifetime).",
            &[("", st.challenged)],
        );
        family(
            "stund_rendezvous_dropped_total",
            "counter",
            "Rendezvous messages not answered, by reason (overflow: the server's queues were full).",
            &[
                ("{reason=\"rate_limited\"}", st.rate_limited),
                ("{reason=\"malformed\"}", st.dropped),
                ("{reason=\"overflow\"}", st.overflow),
            ],
        );
        family(
            "stund_rendezvous_send_errors_total",
            "counter",
            "Rendezvous datagrams the kernel refused to send.",
            &[("", load(&rc.send_errors))],
        );
        self.render_cluster(server, &st, family);
    }

    /// The registrations shared through Redis (`--registry`, docs/deploy.md).
    fn render_cluster(
        &self,
        server: &Rendezvous,
        st: &holepunch::signal::Stats,
        family: &mut impl FnMut(&str, &str, &str, &[(&str, u64)]),
    ) {
        let link = server.cluster.as_ref();
        family(
            "stund_rendezvous_shared",
            "gauge",
            "1 when the registrations are shared with other instances through Redis (--registry), else 0.",
            &[("", u64::from(link.is_some()))],
        );
        let Some(link) = link else { return };
        let status = &link.status;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        family(
            "stund_rendezvous_degraded",
            "gauge",
            "1 while Redis is unreachable or not yet synced: only peers registered here can be introduced.",
            &[("", u64::from(status.degraded()))],
        );
        family(
            "stund_rendezvous_redis_errors_total",
            "counter",
            "Failed Redis connects and calls.",
            &[("", load(&status.errors))],
        );
        family(
            "stund_rendezvous_redis_queued_writes",
            "gauge",
            "Registrations and introductions waiting for Redis (at most one per name).",
            &[("", link.queued() as u64)],
        );
        family(
            "stund_rendezvous_redis_dropped_total",
            "counter",
            "Writes for Redis dropped: queue full, or an introduction too old by the time Redis was back.",
            &[("", load(&status.dropped))],
        );
        family(
            "stund_rendezvous_redis_received_total",
            "counter",
            "Messages received from the other instances (registrations announced, introductions asked for).",
            &[("", load(&status.received))],
        );
        family(
            "stund_rendezvous_redis_loaded_total",
            "counter",
            "Other instances' registrations loaded from Redis when (re)connecting.",
            &[("", load(&status.loaded))],
        );
        family(
            "stund_rendezvous_remote_registrations_total",
            "counter",
            "Registrations of other instances applied to this one's replica.",
            &[("", st.remote_registrations)],
        );
        family(
            "stund_rendezvous_remote_introductions_total",
            "counter",
            "Introductions across instances, by direction (sent: pushes asked of the peer's owner; served: \
             pushes made here for another instance; lost: asked for a peer no longer registered here).",
            &[
                ("{direction=\"sent\"}", load(&status.forwarded)),
                ("{direction=\"served\"}", st.remote_introductions),
                ("{direction=\"lost\"}", st.remote_introductions_lost),
            ],
        );
    }

    fn render_turn(&self, family: &mut impl FnMut(&str, &str, &str, &[(&str, u64)])) {
        family(
            "stund_turn_enabled",
            "gauge",
            "1 when the TURN relay is on (--user or --auth-secret), else 0.",
            &[("", u64::from(self.turn.is_some()))],
        );
        let Some(t) = &self.turn else { return };
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let st = *t.stats.lock().unwrap_or_else(|p| p.into_inner());
        family("stund_turn_allocations", "gauge", "TURN allocations now.", &[("", st.allocations)]);
        family("stund_turn_relay_sockets", "gauge", "Relay sockets open now.", &[("", load(&t.relay_sockets))]);
        family(
            "stund_turn_allocations_total",
            "counter",
            "TURN allocations by event (created; expired: lifetime ran out; deleted: Refresh with lifetime 0).",
            &[
                ("{event=\"created\"}", st.allocations_created),
                ("{event=\"expired\"}", st.allocations_expired),
                ("{event=\"deleted\"}", st.allocations_deleted),
            ],
        );
        family("stund_turn_requests_total", "counter", "TURN requests handled.", &[("", st.requests)]);
        family(
            "stund_turn_refused_total",
            "counter",
            "TURN requests answered with an error, by reason (challenge: the normal first 401).",
            &[
                ("{reason=\"challenge\"}", st.challenges),
                ("{reason=\"auth\"}", st.auth_failures),
                ("{reason=\"stale_nonce\"}", st.stale_nonces),
                ("{reason=\"quota\"}", st.quota_refused),
                ("{reason=\"capacity\"}", st.capacity_refused),
                ("{reason=\"peer_denied\"}", st.peer_denied),
                ("{reason=\"other\"}", st.other_errors),
            ],
        );
        family(
            "stund_turn_relayed_packets_total",
            "counter",
            "Datagrams relayed, by direction.",
            &[("{direction=\"to_peer\"}", st.to_peer_packets), ("{direction=\"to_client\"}", st.to_client_packets)],
        );
        family(
            "stund_turn_relayed_bytes_total",
            "counter",
            "Application bytes relayed (without TURN framing), by direction.",
            &[("{direction=\"to_peer\"}", st.to_peer_bytes), ("{direction=\"to_client\"}", st.to_client_bytes)],
        );
        family(
            "stund_turn_dropped_total",
            "counter",
            "TURN datagrams dropped, by reason (queue_full: the relay thread's queue; rate_limited: requests per \
             source; amplification: an unauthenticated answer would exceed 4x the request).",
            &[
                ("{reason=\"no_permission\"}", st.dropped_no_permission),
                ("{reason=\"bandwidth\"}", st.dropped_bandwidth),
                ("{reason=\"malformed\"}", st.dropped_malformed),
                ("{reason=\"rate_limited\"}", st.rate_limited),
                ("{reason=\"queue_full\"}", load(&t.queue_full) + st.dropped_queue_full),
                ("{reason=\"amplification\"}", st.dropped_amplification),
            ],
        );
        family(
            "stund_turn_errors_total",
            "counter",
            "Relay errors (open: no relay socket could be bound; send: the kernel refused a datagram).",
            &[("{kind=\"open\"}", load(&t.open_failures)), ("{kind=\"send\"}", load(&t.send_errors))],
        );
    }

    /// The TURN part of the log summary ("" when off).
    fn turn_summary(&self) -> String {
        let Some(t) = &self.turn else { return String::new() };
        let st = *t.stats.lock().unwrap_or_else(|p| p.into_inner());
        format!(
            "; turn: {} allocations, relayed {} / {} packets to peers / clients, {} refused for quota, {} peers denied",
            st.allocations, st.to_peer_packets, st.to_client_packets, st.quota_refused, st.peer_denied
        )
    }

    /// The rendezvous part of the log summary ("" when off and nothing was dropped).
    fn rendezvous_summary(&self) -> String {
        match &self.rendezvous.server {
            Some(server) => {
                let snap = server.snapshot();
                let shared = match &server.cluster {
                    Some(link) if link.status.degraded() => {
                        format!(", Redis unavailable ({} writes queued)", link.queued())
                    }
                    Some(link) => format!(", shared through Redis (instance {})", link.instance),
                    None => String::new(),
                };
                format!(
                    "; rendezvous: {} peers, {} registrations, {} introductions, {} pushes failed{shared}",
                    snap.peers, snap.stats.registrations, snap.stats.introductions, snap.stats.pushes_failed
                )
            }
            None => match self.rendezvous.counters.ignored.load(Ordering::Relaxed) {
                0 => String::new(),
                n => format!("; rendezvous off, {n} rendezvous messages dropped"),
            },
        }
    }

    /// One log line of totals, with the request rate since `prev`.
    pub fn summary(&self, prev: &Counters, interval: Duration) -> (String, Counters) {
        let c = self.totals();
        let reqs = c.requests_binding + c.requests_rfc3489;
        let prev_reqs = prev.requests_binding + prev.requests_rfc3489;
        let rate = reqs.saturating_sub(prev_reqs) as f64 / interval.as_secs_f64().max(0.001);
        let line = format!(
            "requests {reqs} ({:.0}/s; rfc3489 {}, tcp {}), responses {} ok / {} error, dropped {} rate-limited / \
             {} malformed / {} not-request, send errors {}",
            rate,
            c.requests_rfc3489,
            c.requests_tcp,
            c.responses_success,
            c.responses_error,
            c.dropped_rate_limited,
            c.dropped_malformed,
            c.dropped_not_request,
            c.send_errors
        ) + &self.rendezvous_summary()
            + &self.turn_summary();
        (line, c)
    }
}

/// Serves `GET /metrics` (any other path: 404) until the runtime stops.
pub async fn serve(listener: TcpListener, stats: Arc<Stats>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            stats.metrics_refused.fetch_add(1, Ordering::Relaxed);
            continue; // dropping the stream closes it
        };
        let stats = stats.clone();
        tokio::spawn(async move {
            answer(stream, &stats).await;
            drop(permit);
        });
    }
}

/// Reads one request head (bounded in size and time), answers, closes.
async fn answer(mut stream: tokio::net::TcpStream, stats: &Stats) {
    let mut req = [0u8; 1024];
    let mut n = 0;
    let read = tokio::time::timeout(READ_TIMEOUT, async {
        while n < req.len() {
            match stream.read(&mut req[n..]).await {
                Ok(0) | Err(_) => break,
                Ok(k) => n += k,
            }
            if req[..n].windows(4).any(|w| w == b"\r\n\r\n") || req[..n].windows(2).any(|w| w == b"\n\n") {
                break;
            }
        }
    })
    .await;
    if read.is_err() {
        return;
    }
    let head = String::from_utf8_lossy(&req[..n]);
    let mut parts = head.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let response = if method == "GET" && (path == "/metrics" || path == "/") {
        let body = stats.render();
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    } else {
        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
    };
    let _ = tokio::time::timeout(WRITE_TIMEOUT, async {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}
