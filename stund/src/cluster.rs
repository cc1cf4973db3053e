//! The rendezvous shared through Redis (`--registry`, docs/signal.md "Cluster", docs/deploy.md): several
//! stund instances, one set of registrations.
//!
//! The engine (`signal::Server` with `cluster` on) keeps a replica of every registration in the cluster, each
//! tagged with its owning instance, and says what the others must learn ([`holepunch::signal::ClusterOut`]).
//! This module carries that through Redis on two threads of their own, so no UDP worker ever waits on Redis:
//!
//! - the **writer** takes what the engine queued in the [`Outbox`] (the latest write per name, capped, and
//!   the introductions owed by other instances) and sends it in one pipeline: `PUBLISH` to the owner's
//!   channel for an introduction (first: its push should leave with ours), `SET reg:NAME PX lifetime` and
//!   `PUBLISH announce` for a registration;
//! - the **subscriber** listens on `announce` and on this instance's channel, and after every (re)connect
//!   loads the registrations stored in Redis (`SCAN`), then feeds each message to the engine.
//!
//! Either losing Redis makes the rendezvous *degraded*: local peers are still registered and introduced,
//! Binding and TURN never notice; the log says so once per transition, the metrics all along; both threads
//! reconnect with a growing backoff and the cluster state comes back by itself (resubscribe, resync, flush).

use crate::rendezvous::Rendezvous;
use holepunch::signal::{ClusterMessage, ClusterOut, InstanceId, PeerName};
use redis::{Client, Connection, RedisError};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const LOG: &str = "stund::cluster";

/// Every key and channel starts with this, so a Redis shared with other uses stays tidy.
const PREFIX: &str = "holepunch:";
/// Registrations waiting for Redis, at most (one per name: a newer write replaces the older one).
pub const MAX_QUEUED_REGISTRATIONS: usize = 65_536;
/// Introductions waiting for Redis, at most.
const MAX_QUEUED_INTRODUCTIONS: usize = 1024;
/// An introduction older than this is dropped: the requester's own push has long been given up on.
const INTRODUCTION_MAX_AGE: Duration = Duration::from_secs(5);
/// Connect, read and write timeout of each Redis call.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a blocked thread looks at the stop flag.
const WAKE: Duration = Duration::from_millis(200);
/// An idle writer PINGs this often, so a Redis that went away is noticed without waiting for a write.
const IDLE_PING: Duration = Duration::from_secs(1);
/// Reconnection backoff: doubles from the first to the last.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));
/// Keys read per SCAN step, and most steps of one resync (bounded even if Redis holds junk).
const SCAN_COUNT: usize = 1000;
const MAX_SCAN_STEPS: usize = 100_000;

/// Where Redis is, for logs: the URL without its password.
pub fn redacted(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
            let auth = if rest.contains('@') { "***@" } else { "" };
            format!("{scheme}://{auth}{host}")
        }
        None => "(invalid URL)".into(),
    }
}

/// Counters and state for metrics.
#[derive(Debug, Default)]
pub struct Status {
    /// The writer's connection works.
    writer_up: AtomicBool,
    /// The subscriber is subscribed and has loaded the registrations.
    subscriber_up: AtomicBool,
    /// The last state logged (so a transition is logged once, whichever thread sees it).
    logged_degraded: Mutex<Option<bool>>,
    /// Failed connects and failed calls.
    pub errors: AtomicU64,
    /// Writes dropped: the queue was full, or an introduction got too old while Redis was away.
    pub dropped: AtomicU64,
    /// Introductions sent to other instances' channels.
    pub forwarded: AtomicU64,
    /// Cluster messages received (announcements and introductions).
    pub received: AtomicU64,
    /// Messages from Redis that did not decode.
    pub malformed: AtomicU64,
    /// Other instances' registrations loaded from Redis at (re)connects.
    pub loaded: AtomicU64,
}

impl Status {
    pub fn degraded(&self) -> bool {
        !(self.writer_up.load(Ordering::Relaxed) && self.subscriber_up.load(Ordering::Relaxed))
    }
}

struct PendingRegistration {
    bytes: Vec<u8>,
    lifetime: Duration,
    queued: Instant,
}

struct PendingIntroduction {
    channel: String,
    bytes: Vec<u8>,
    queued: Instant,
}

/// What the engine queued for Redis.
#[derive(Default)]
struct Outbox {
    registrations: HashMap<PeerName, PendingRegistration>,
    introductions: VecDeque<PendingIntroduction>,
}

/// The link between the rendezvous engine and Redis.
pub struct Link {
    client: Client,
    target: String,
    pub instance: InstanceId,
    outbox: Mutex<Outbox>,
    wake: Condvar,
    pub status: Status,
}

fn key(name: &str) -> String {
    format!("{PREFIX}reg:{name}")
}

fn announce_channel() -> String {
    format!("{PREFIX}announce")
}

fn instance_channel(id: &InstanceId) -> String {
    format!("{PREFIX}instance:{id}")
}

/// One line that says what went wrong, with the hint that fixes the usual causes.
fn describe(e: &RedisError) -> String {
    let text = e.to_string();
    if e.kind() == redis::ErrorKind::AuthenticationFailed || text.contains("WRONGPASS") || text.contains("NOAUTH") {
        format!("authentication refused ({text}): check the user and password in --registry")
    } else {
        text
    }
}

impl Link {
    /// A link to the Redis at `url` (`redis://`, `rediss://`, with `USER:PASS@` or `:PASS@`); nothing is
    /// connected yet.
    pub fn new(url: &str, instance: InstanceId) -> anyhow::Result<Link> {
        let client = Client::open(url).map_err(|e| anyhow::anyhow!("--registry {}: {e}", redacted(url)))?;
        Ok(Link {
            client,
            target: redacted(url),
            instance,
            outbox: Mutex::new(Outbox::default()),
            wake: Condvar::new(),
            status: Status::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes waiting for Redis now.
    pub fn queued(&self) -> usize {
        let o = self.lock();
        o.registrations.len() + o.introductions.len()
    }

    /// Queues what the engine owes the cluster; never waits on Redis.
    pub fn enqueue(&self, now: Instant, out: ClusterOut) {
        let bytes = out.message().encode(&self.instance);
        let mut o = self.lock();
        match out {
            ClusterOut::Registered { registration, lifetime } => {
                let full = o.registrations.len() >= MAX_QUEUED_REGISTRATIONS;
                if full && !o.registrations.contains_key(&registration.name) {
                    self.status.dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                o.registrations.insert(registration.name, PendingRegistration { bytes, lifetime, queued: now });
            }
            ClusterOut::Introduce { owner, .. } => {
                if o.introductions.len() >= MAX_QUEUED_INTRODUCTIONS {
                    self.status.dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                o.introductions.push_back(PendingIntroduction {
                    channel: instance_channel(&owner),
                    bytes,
                    queued: now,
                });
            }
        }
        drop(o);
        self.wake.notify_one();
    }

    /// Records whether one side works, logging the cluster's state when it changes (once per transition).
    fn set_up(&self, side: &AtomicBool, up: bool, cause: Option<&str>) {
        side.store(up, Ordering::Relaxed);
        let degraded = self.status.degraded();
        let mut logged = self.status.logged_degraded.lock().unwrap_or_else(|p| p.into_inner());
        // Up needs both sides: one side coming up while the other is still down changes nothing yet.
        if *logged == Some(degraded) || (degraded && up) {
            return;
        }
        *logged = Some(degraded);
        if degraded {
            log::warn!(
                target: LOG,
                "rendezvous degraded: Redis at {} unavailable ({}); serving peers registered here only, \
                 retrying in the background",
                self.target,
                cause.unwrap_or("connection lost")
            );
        } else {
            log::info!(
                target: LOG,
                "rendezvous: connected to Redis at {}, registrations shared (instance {})",
                self.target,
                self.instance
            );
        }
    }

    fn connect(&self) -> Result<Connection, RedisError> {
        let con = self.client.get_connection_with_timeout(IO_TIMEOUT)?;
        con.set_read_timeout(Some(IO_TIMEOUT))?;
        con.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(con)
    }

    fn failed(&self, side: &AtomicBool, e: &RedisError) {
        self.status.errors.fetch_add(1, Ordering::Relaxed);
        self.set_up(side, false, Some(&describe(e)));
    }
}

/// Sleeps `d` in [`WAKE`] steps; false when `stop` was set meanwhile.
fn pause(d: Duration, stop: &AtomicBool) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        std::thread::sleep(WAKE.min(end.saturating_duration_since(Instant::now())));
    }
    !stop.load(Ordering::Relaxed)
}

fn next_backoff(d: Duration) -> Duration {
    (d * 2).min(BACKOFF.1)
}

/// Starts the writer and the subscriber; they stop when `stop` is set.
pub fn spawn(
    link: Arc<Link>,
    rendezvous: Arc<Rendezvous>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let (l, s) = (link.clone(), stop.clone());
    let writer = std::thread::Builder::new().name("stund-redis-write".into()).spawn(move || run_writer(&l, &s))?;
    let subscriber = std::thread::Builder::new()
        .name("stund-redis-sub".into())
        .spawn(move || run_subscriber(&link, &rendezvous, &stop))?;
    Ok(vec![writer, subscriber])
}

fn run_writer(link: &Link, stop: &AtomicBool) {
    let mut backoff = BACKOFF.0;
    while !stop.load(Ordering::Relaxed) {
        let mut con = match link.connect() {
            Ok(c) => c,
            Err(e) => {
                link.failed(&link.status.writer_up, &e);
                if !pause(backoff, stop) {
                    return;
                }
                backoff = next_backoff(backoff);
                continue;
            }
        };
        // A connection that answers a PING is up (AUTH is checked on connect).
        if let Err(e) = redis::cmd("PING").query::<()>(&mut con) {
            link.failed(&link.status.writer_up, &e);
            if !pause(backoff, stop) {
                return;
            }
            backoff = next_backoff(backoff);
            continue;
        }
        backoff = BACKOFF.0;
        link.set_up(&link.status.writer_up, true, None);
        if let Err(e) = write_until_error(link, &mut con, stop) {
            link.failed(&link.status.writer_up, &e);
            if !pause(backoff, stop) {
                return;
            }
        }
    }
}

/// Sends what is queued as it comes; returns on stop (Ok) or on the first failed call.
fn write_until_error(link: &Link, con: &mut Connection, stop: &AtomicBool) -> Result<(), RedisError> {
    let mut last_call = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let (registrations, introductions) = {
            let mut o = link.lock();
            if o.registrations.is_empty() && o.introductions.is_empty() {
                o = match link.wake.wait_timeout(o, WAKE) {
                    Ok((g, _)) => g,
                    Err(p) => p.into_inner().0,
                };
            }
            (std::mem::take(&mut o.registrations), std::mem::take(&mut o.introductions))
        };
        let now = Instant::now();
        if registrations.is_empty() && introductions.is_empty() {
            if now.saturating_duration_since(last_call) >= IDLE_PING {
                redis::cmd("PING").query::<()>(con)?;
                last_call = now;
            }
            continue;
        }
        last_call = now;
        let mut pipe = redis::pipe();
        let mut forwarded = 0;
        for i in &introductions {
            if now.saturating_duration_since(i.queued) > INTRODUCTION_MAX_AGE {
                link.status.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            pipe.cmd("PUBLISH").arg(&i.channel).arg(&i.bytes).ignore();
            forwarded += 1;
        }
        for (name, r) in &registrations {
            // Time spent queued comes off the lifetime: Redis must not keep a registration past its end.
            let left = r.lifetime.saturating_sub(now.saturating_duration_since(r.queued));
            let ms = u64::try_from(left.as_millis()).unwrap_or(u64::MAX);
            if ms == 0 {
                continue;
            }
            pipe.cmd("SET").arg(key(name.as_str())).arg(&r.bytes).arg("PX").arg(ms).ignore();
            pipe.cmd("PUBLISH").arg(announce_channel()).arg(&r.bytes).ignore();
        }
        if let Err(e) = pipe.query::<()>(con) {
            // Put the registrations back unless newer ones came meanwhile; the introductions are lost (the
            // peers ask again when their punch fails).
            let mut o = link.lock();
            for (name, r) in registrations {
                if o.registrations.len() < MAX_QUEUED_REGISTRATIONS || o.registrations.contains_key(&name) {
                    o.registrations.entry(name).or_insert(r);
                }
            }
            link.status.dropped.fetch_add(forwarded, Ordering::Relaxed);
            return Err(e);
        }
        link.status.forwarded.fetch_add(forwarded, Ordering::Relaxed);
    }
    Ok(())
}

fn run_subscriber(link: &Link, rendezvous: &Rendezvous, stop: &AtomicBool) {
    let mut backoff = BACKOFF.0;
    while !stop.load(Ordering::Relaxed) {
        match subscribe_and_listen(link, rendezvous, stop) {
            Ok(()) => return,
            Err(e) => {
                link.failed(&link.status.subscriber_up, &e);
                if !pause(backoff, stop) {
                    return;
                }
                backoff = next_backoff(backoff);
            }
        }
    }
}

/// Subscribes, loads the registrations in Redis, then feeds every message to the engine until stop (Ok) or
/// an error.
fn subscribe_and_listen(link: &Link, rendezvous: &Rendezvous, stop: &AtomicBool) -> Result<(), RedisError> {
    let mut con = link.connect()?;
    let mut pubsub = con.as_pubsub();
    // Subscribed before the SCAN, so nothing announced in between is missed.
    pubsub.subscribe(announce_channel())?;
    pubsub.subscribe(instance_channel(&link.instance))?;
    pubsub.set_read_timeout(Some(WAKE))?;
    let loaded = resync(link, rendezvous)?;
    link.status.loaded.fetch_add(loaded as u64, Ordering::Relaxed);
    log::debug!(target: LOG, "loaded {loaded} registration(s) of other instances from Redis");
    link.set_up(&link.status.subscriber_up, true, None);
    while !stop.load(Ordering::Relaxed) {
        match pubsub.get_message() {
            Ok(msg) => {
                link.status.received.fetch_add(1, Ordering::Relaxed);
                receive(link, rendezvous, msg.get_payload_bytes(), None);
            }
            Err(e) if e.is_timeout() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Loads every registration stored in Redis into the replica (other instances' only); returns how many.
fn resync(link: &Link, rendezvous: &Rendezvous) -> Result<usize, RedisError> {
    let mut con = link.connect()?;
    let pattern = format!("{PREFIX}reg:*");
    let mut cursor: u64 = 0;
    let mut loaded = 0;
    for _ in 0..MAX_SCAN_STEPS {
        let (next, keys): (u64, Vec<String>) =
            redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(SCAN_COUNT).query(&mut con)?;
        if !keys.is_empty() {
            let mut pipe = redis::pipe();
            for k in &keys {
                pipe.cmd("GET").arg(k).cmd("PTTL").arg(k);
            }
            let values: Vec<(Option<Vec<u8>>, i64)> = pipe.query(&mut con)?;
            for (value, ttl) in values {
                // PTTL: -2 gone meanwhile, -1 no expiry (not ours: skipped).
                if let (Some(bytes), Ok(ms @ 1..)) = (value, u64::try_from(ttl)) {
                    if receive(link, rendezvous, &bytes, Some(Duration::from_millis(ms))) {
                        loaded += 1;
                    }
                }
            }
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    Ok(loaded)
}

/// One cluster message into the engine; `ttl` overrides a registration's lifetime (what Redis has left of
/// it). Returns whether it was another instance's registration, applied.
fn receive(link: &Link, rendezvous: &Rendezvous, bytes: &[u8], ttl: Option<Duration>) -> bool {
    let msg = match ClusterMessage::decode(bytes) {
        Ok(m) => m,
        Err(e) => {
            link.status.malformed.fetch_add(1, Ordering::Relaxed);
            log::debug!(target: LOG, "ignoring a message from Redis: {e}");
            return false;
        }
    };
    match msg {
        ClusterMessage::Registration { registration, lifetime } => {
            // Our own announcements come back to us, and a previous run's entries may still be in Redis.
            if registration.owner.as_ref() == Some(&link.instance) {
                return false;
            }
            rendezvous.apply_remote(&registration, ttl.unwrap_or(lifetime))
        }
        ClusterMessage::Introduction { to, about, session } => {
            rendezvous.introduce_remote(&to, &about, session);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_the_log() {
        assert_eq!(redacted("redis://127.0.0.1:6379/"), "redis://127.0.0.1:6379/");
        assert_eq!(redacted("redis://:hunter2@10.0.0.5/"), "redis://***@10.0.0.5/");
        assert_eq!(redacted("rediss://user:p@ss@redis.example:6380/0"), "rediss://***@redis.example:6380/0");
        assert_eq!(redacted("nonsense"), "(invalid URL)");
    }
}
