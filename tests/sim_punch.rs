//! The punch agent through the simulated network (docs/punchd.md, "Simulated NAT pairs"): two peers, each a
//! reflexive keeper and an agent on one punching socket behind its own RFC 4787 NAT, and the real STUN server.
//! A stand-in for the rendezvous hands each peer the other's introduction in the same instant, built from
//! what the STUN server reported and the NAT's behaviour (what the diagnosis reports). Links delay, jitter,
//! lose and reorder datagrams.

use holepunch::identity::SecretKey;
use holepunch::nat::behaviour::{Allocation, Filtering, Mapping};
use holepunch::punch::{
    Agent, AgentConfig, AgentEvent, Event as KeeperEvent, KeeperConfig, PathKind, Prediction, ReflexiveKeeper,
    RemoteKind,
};
use holepunch::server::ServerConfig;
use holepunch::signal::{Candidate, CandidateKind, Introduction, NatProfile, PeerName};
use holepunch::sim::{EngineId, Fate, Link, NatConfig, NatId, NetId, Sim};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

const SERVER: &str = "192.0.2.1:3478";
const PORT: u16 = 6666;
/// Extra sockets a peer can open for birthday probing: pre-bound, handed out when the agent asks.
const EXTRA_BASE: u16 = 40000;
const EXTRA: u16 = 256;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn name(s: &str) -> PeerName {
    PeerName::new(s).unwrap()
}

/// One peer: keeper and agent on the same wildcard socket (the keeper is offered each datagram first, as in
/// punchd's node), plus the extra sockets.
struct Peer {
    name: PeerName,
    key: SecretKey,
    nat: Option<NatId>,
    lan: IpAddr,
    keeper: EngineId<ReflexiveKeeper>,
    agent: EngineId<Agent>,
    profile: NatProfile,
    events: Vec<AgentEvent>,
}

fn profile_of(c: &NatConfig) -> NatProfile {
    NatProfile {
        mapping: c.mapping,
        filtering: c.filtering,
        allocation: c.allocation,
        hairpin: Some(c.hairpin),
        port_mapping: false,
        no_nat: false,
    }
}

fn local() -> SocketAddr {
    SocketAddr::new(ip("0.0.0.0"), PORT)
}

fn extras(n: u16) -> Vec<SocketAddr> {
    (0..n.min(EXTRA)).map(|i| SocketAddr::new(ip("0.0.0.0"), EXTRA_BASE + i)).collect()
}

fn add_peer(
    sim: &mut Sim,
    net: NetId,
    nat: Option<NatId>,
    lan: &str,
    who: &str,
    seed: u8,
    profile: NatProfile,
) -> Peer {
    let lan = ip(lan);
    let host = sim.add_host(net, &[lan], Link::default()).unwrap();
    let keeper = ReflexiveKeeper::new(KeeperConfig::new(local(), sa(SERVER)), sim.now(), sim.fork_seed());
    let keeper = sim.add_engine(host, &[local()], keeper).unwrap();
    let key = SecretKey::from_seed([seed; 32]);
    let mut config = AgentConfig::new(local(), name(who), SecretKey::from_base64(&key.to_base64()).unwrap());
    config.keepalive = Duration::from_secs(3);
    let mut agent = Agent::new(config, sim.fork_seed());
    agent.set_local_profile(profile);
    let mut locals = vec![local()];
    locals.extend(extras(EXTRA));
    let agent = sim.add_engine(host, &locals, agent).unwrap();
    Peer { name: name(who), key, nat, lan, keeper, agent, profile, events: Vec::new() }
}

struct World {
    sim: Sim,
    a: Peer,
    b: Peer,
}

impl World {
    /// Alice behind a NAT `ca` on 203.0.113.1, Bob behind `cb` on 198.51.100.1 (or both behind one NAT).
    fn new(seed: u64, ca: NatConfig, cb: Option<NatConfig>, uplink: Link) -> World {
        let mut s = [0u8; 32];
        s[..8].copy_from_slice(&seed.to_le_bytes());
        let mut sim = Sim::new(s);
        sim.add_stun_server(Sim::INTERNET, ServerConfig::plain(ip("192.0.2.1"), 3478), Link::new(ms(5))).unwrap();
        let (na, lan_a) = sim.add_nat(Sim::INTERNET, ip("203.0.113.1"), ca, uplink).unwrap();
        let a = add_peer(&mut sim, lan_a, Some(na), "10.0.1.10", "alice", 1, profile_of(&ca));
        let b = match cb {
            Some(cb) => {
                let (nb, lan_b) = sim.add_nat(Sim::INTERNET, ip("198.51.100.1"), cb, uplink).unwrap();
                add_peer(&mut sim, lan_b, Some(nb), "10.0.2.20", "bob", 2, profile_of(&cb))
            }
            None => add_peer(&mut sim, lan_a, Some(na), "10.0.1.20", "bob", 2, profile_of(&ca)),
        };
        let (ka, kb) = (a.key.public(), b.key.public());
        sim.engine_mut(a.agent).add_peer(name("bob"), kb).unwrap();
        sim.engine_mut(b.agent).add_peer(name("alice"), ka).unwrap();
        World { sim, a, b }
    }

    /// Both keepers learn their public endpoint; returns them.
    fn learn(&mut self) -> (SocketAddr, SocketAddr) {
        let (ka, kb) = (self.a.keeper, self.b.keeper);
        let found = |sim: &Sim, k: EngineId<ReflexiveKeeper>| sim.engine(k).public();
        self.sim
            .run_until(Duration::from_secs(10), |sim| found(sim, ka).is_some() && found(sim, kb).is_some())
            .unwrap();
        self.sim.events(ka);
        self.sim.events(kb);
        (found(&self.sim, ka).unwrap(), found(&self.sim, kb).unwrap())
    }

    fn intro(&self, of: &Peer, reflexive: SocketAddr, session: u64) -> Introduction {
        Introduction {
            peer: of.name.clone(),
            key: of.key.public(),
            reflexive,
            candidates: vec![
                Candidate { kind: CandidateKind::Host, addr: SocketAddr::new(of.lan, PORT) },
                Candidate { kind: CandidateKind::Reflexive, addr: reflexive },
            ],
            profile: of.profile,
            session,
        }
    }

    /// The rendezvous stand-in: each peer gets the other's introduction at the same instant.
    fn introduce(&mut self, session: u64) {
        let (ra, rb) = self.learn();
        let now = self.sim.now();
        for (me, other, own, theirs) in [(0, 1, ra, rb), (1, 0, rb, ra)] {
            let p = if me == 0 { &self.a } else { &self.b };
            let o = if other == 0 { &self.a } else { &self.b };
            let intro = self.intro(o, theirs, session);
            let agent = p.agent;
            let a = self.sim.engine_mut(agent);
            a.set_local_candidates(vec![Candidate { kind: CandidateKind::Reflexive, addr: own }]);
            a.introduce(now, intro).unwrap();
        }
    }

    /// Run, answering the agents' socket requests, until `done` or `limit`; keeps every event.
    fn run(&mut self, limit: Duration, mut done: impl FnMut(&[AgentEvent], &[AgentEvent]) -> bool) -> Option<Duration> {
        let (ia, ib) = (self.a.agent, self.b.agent);
        let (mut ea, mut eb) = (std::mem::take(&mut self.a.events), std::mem::take(&mut self.b.events));
        let r = self.sim.run_until(limit, |sim| {
            for (id, log) in [(ia, &mut ea), (ib, &mut eb)] {
                for e in sim.events(id) {
                    if let AgentEvent::OpenSockets { peer, count } = &e {
                        let now = sim.now();
                        sim.engine_mut(id).add_sockets(now, peer, &extras(*count)).unwrap();
                    }
                    log.push(e);
                }
            }
            done(&ea, &eb)
        });
        self.a.events = ea;
        self.b.events = eb;
        r.ok()
    }
}

fn opened(e: &[AgentEvent]) -> bool {
    e.iter().any(|e| matches!(e, AgentEvent::PathOpened { .. }))
}

fn gave_up(e: &[AgentEvent]) -> bool {
    e.iter().any(|e| matches!(e, AgentEvent::NeedsRelay { .. }))
}

fn prediction(e: &[AgentEvent]) -> Option<Prediction> {
    e.iter().find_map(|e| match e {
        AgentEvent::Prediction { prediction, .. } => Some(*prediction),
        _ => None,
    })
}

fn wrong(e: &[AgentEvent]) -> bool {
    e.iter().any(|e| matches!(e, AgentEvent::PredictionWrong { .. }))
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// Both sides opened a path; which kind of remote candidate won on Alice's side; time to both open.
    Direct { via: RemoteKind, took: Duration },
    /// Neither side opened one (both said "needs relay").
    Relay,
    /// Only one side opened (a bug) or nothing concluded in time.
    Stuck,
}

fn via(sim: &Sim, agent: EngineId<Agent>) -> RemoteKind {
    sim.engine(agent).status()[0].remote_kind.unwrap_or(RemoteKind::Reflexive)
}

fn punch(w: &mut World, limit: Duration) -> (Prediction, Outcome) {
    w.introduce(1);
    let started = w.sim.now();
    let took = w.run(limit, |a, b| (opened(a) && opened(b)) || (gave_up(a) && gave_up(b)));
    let p = prediction(&w.a.events).expect("a prediction");
    assert_eq!(Some(p), prediction(&w.b.events), "both sides predict the same");
    let outcome = match took {
        Some(_) if opened(&w.a.events) && opened(&w.b.events) => {
            Outcome::Direct { via: via(&w.sim, w.a.agent), took: w.sim.now() - started }
        }
        Some(_) => Outcome::Relay,
        None => Outcome::Stuck,
    };
    (p, outcome)
}

/// Birthday probing: the hard side opened sockets and asked to close all of them but the one its path runs
/// on (or all of them without a path); the easy side opened none.
fn check_extra_sockets(w: &World, label: &str) {
    for p in [&w.a, &w.b] {
        let opened: u16 = p
            .events
            .iter()
            .filter_map(|e| match e {
                AgentEvent::OpenSockets { count, .. } => Some(*count),
                _ => None,
            })
            .sum();
        let closed: usize = p
            .events
            .iter()
            .filter_map(|e| match e {
                AgentEvent::CloseSockets { sockets, .. } => Some(sockets.len()),
                _ => None,
            })
            .sum();
        let hard = p.profile.mapping != Mapping::EndpointIndependent;
        if !hard {
            assert_eq!(opened, 0, "{label}: the easy side opens no socket");
            continue;
        }
        assert_eq!(opened, EXTRA, "{label}");
        let local = w.sim.engine(p.agent).status()[0].local;
        let on_extra = local.is_some_and(|l| l.port() >= EXTRA_BASE);
        assert_eq!(
            closed + usize::from(on_extra),
            usize::from(EXTRA),
            "{label}: every extra socket but the path's closed"
        );
    }
}

const MAPPINGS: [(Mapping, &str); 3] = [
    (Mapping::EndpointIndependent, "EIM"),
    (Mapping::AddressDependent, "ADM"),
    (Mapping::AddressAndPortDependent, "APDM"),
];
const FILTERINGS: [(Filtering, &str); 3] = [
    (Filtering::EndpointIndependent, "EIF"),
    (Filtering::AddressDependent, "ADF"),
    (Filtering::AddressAndPortDependent, "APDF"),
];
const ALLOCATIONS: [(Allocation, &str); 3] =
    [(Allocation::Preserved, "pres"), (Allocation::Sequential { delta: 1 }, "seq"), (Allocation::Random, "rand")];

fn all_nats() -> Vec<(NatConfig, String)> {
    let mut out = Vec::new();
    for (m, mn) in MAPPINGS {
        for (f, fname) in FILTERINGS {
            for (a, an) in ALLOCATIONS {
                out.push((NatConfig::new(m, f).with_allocation(a), format!("{mn}/{fname}/{an}")));
            }
        }
    }
    out
}

/// A lossy, jittery, reordering access path: 15 ms ± 5 ms on each NAT's uplink, 2 % loss, 5 % reordered by
/// 20 ms.
fn rough() -> Link {
    Link::new(ms(15)).with_jitter(ms(5)).with_loss(0.02).with_reordering(0.05, ms(20))
}

#[test]
fn nat_pair_matrix() {
    let nats = all_nats();
    let mut rows = Vec::new();
    let (mut birthday_cells, mut birthday_ok) = (0, 0);
    let mut failures = Vec::new();
    let mut cell = 0u64;
    for i in 0..nats.len() {
        for j in i..nats.len() {
            cell += 1;
            // Hairpinning alternates; it matters only for peers behind one NAT (tested on its own below).
            let hairpin = cell % 2 == 0;
            let (ca, cb) = (nats[i].0.with_hairpin(hairpin), nats[j].0.with_hairpin(!hairpin));
            // HOLEPUNCH_SIM_SEED shifts every cell's seed, to replay the matrix on other draws.
            let base: u64 = std::env::var("HOLEPUNCH_SIM_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
            let mut w = World::new(cell + base, ca, Some(cb), rough());
            let (p, outcome) = punch(&mut w, Duration::from_secs(20));
            let label = format!("{} vs {}", nats[i].1, nats[j].1);
            let direct = matches!(outcome, Outcome::Direct { .. });
            match p {
                Prediction::Direct | Prediction::DirectViaPrediction if !direct => {
                    failures.push(format!("{label}: predicted {p}, got {outcome:?}"))
                }
                Prediction::DirectViaBirthday { .. } => {
                    birthday_cells += 1;
                    birthday_ok += usize::from(direct);
                    check_extra_sockets(&w, &label);
                }
                Prediction::NeedsRelay if outcome != Outcome::Relay => {
                    failures.push(format!("{label}: predicted {p}, got {outcome:?}"))
                }
                _ => {}
            }
            if outcome == Outcome::Stuck {
                failures.push(format!("{label}: stuck"));
            }
            // The agents say so themselves when the outcome contradicts the prediction.
            let said_wrong = wrong(&w.a.events) || wrong(&w.b.events);
            assert_eq!(said_wrong, !p.holds(direct) && outcome != Outcome::Stuck, "{label}: {p} {outcome:?}");
            rows.push((label, p, outcome));
        }
    }
    for (label, p, outcome) in &rows {
        let shown = match outcome {
            Outcome::Direct { via, took } => format!("direct via {via} in {} ms", took.as_millis()),
            Outcome::Relay => "needs relay".into(),
            Outcome::Stuck => "STUCK".into(),
        };
        println!("| {label} | {} | {shown} |", p.as_str());
    }
    println!("birthday: {birthday_ok}/{birthday_cells}");
    assert!(failures.is_empty(), "{} cells off:\n{}", failures.len(), failures.join("\n"));
    assert!(birthday_ok * 4 >= birthday_cells * 3, "birthday probing worked in {birthday_ok} of {birthday_cells}");
}

fn keeper_changed(sim: &mut Sim, k: EngineId<ReflexiveKeeper>) -> Option<SocketAddr> {
    sim.events(k).into_iter().find_map(|e| match e {
        KeeperEvent::Changed { new, .. } => Some(new),
        _ => None,
    })
}

/// A port-restricted cone with sequential ports (so a reboot moves the mapping), 30 s mapping timeout.
fn moving_cone() -> NatConfig {
    NatConfig::new(Mapping::EndpointIndependent, Filtering::AddressAndPortDependent)
        .with_allocation(Allocation::Sequential { delta: 1 })
        .with_timeout(Duration::from_secs(30))
}

#[test]
fn router_reboot_moves_the_mapping_and_the_path_is_back_within_two_keepalives() {
    let mut w = World::new(11, moving_cone(), Some(moving_cone()), rough());
    let (_, outcome) = punch(&mut w, Duration::from_secs(5));
    assert!(matches!(outcome, Outcome::Direct { .. }), "{outcome:?}");
    w.sim.run_for(Duration::from_secs(20)).unwrap();
    w.run(Duration::from_millis(1), |_, _| false);
    w.a.events.clear();
    w.b.events.clear();

    // Alice's router reboots. Her keeper notices at its next keepalive; the node tells the agent and asks
    // the rendezvous, which introduces both again (the stand-in does that at once).
    w.sim.flush_mappings(w.a.nat.unwrap());
    let (ka, kb) = (w.a.keeper, w.b.keeper);
    let mut moved = None;
    w.sim
        .run_until(Duration::from_secs(5), |sim| {
            moved = keeper_changed(sim, ka);
            moved.is_some()
        })
        .unwrap();
    let new_a = moved.unwrap();
    let now = w.sim.now();
    w.sim.engine_mut(w.a.agent).local_reflexive_changed(now, new_a);
    let rb = w.sim.engine(kb).public().unwrap();
    let (ia, ib) = (w.intro(&w.a, new_a, 2), w.intro(&w.b, rb, 2));
    w.sim.engine_mut(w.a.agent).introduce(now, ib).unwrap();
    w.sim.engine_mut(w.b.agent).introduce(now, ia).unwrap();

    // Both sides end up on a verified path to the other's current endpoint.
    let a_path = |sim: &Sim, id: EngineId<Agent>| sim.engine(id).path(&name("bob"));
    let b_path = |sim: &Sim, id: EngineId<Agent>| sim.engine(id).path(&name("alice"));
    let (ia, ib) = (w.a.agent, w.b.agent);
    w.run(Duration::from_secs(10), |_, _| false);
    let pa = a_path(&w.sim, ia).expect("alice has a path");
    let pb = b_path(&w.sim, ib).expect("bob has a path");
    assert_eq!(pb.1, new_a, "bob sends to alice's new endpoint");
    assert_eq!(pa.1, rb);
    let last_a = w.sim.engine(ia).status()[0].last_keepalive.unwrap();
    let last_b = w.sim.engine(ib).status()[0].last_keepalive.unwrap();
    assert!(w.sim.now() - last_a <= Duration::from_secs(3) && w.sim.now() - last_b <= Duration::from_secs(3));
    // The time to recovery: when bob's path moved to alice's new endpoint.
    let moved_at = w.b.events.iter().any(|e| {
        matches!(e, AgentEvent::PathChanged { remote, .. } | AgentEvent::PathOpened { remote, .. } if *remote == new_a)
    });
    assert!(moved_at, "{:?}", w.b.events);
}

#[test]
fn router_reboot_recovery_time() {
    // The same as above, timed: from the reboot to both sides on the new path, at most two keepalive
    // intervals plus a round trip.
    for seed in 0..8 {
        let mut w = World::new(100 + seed, moving_cone(), Some(moving_cone()), rough());
        let (_, outcome) = punch(&mut w, Duration::from_secs(5));
        assert!(matches!(outcome, Outcome::Direct { .. }));
        // Reboot at a random point of the keepalive cycle.
        w.sim.run_for(Duration::from_millis(10_000 + 371 * seed)).unwrap();
        w.run(Duration::from_millis(1), |_, _| false);
        w.a.events.clear();
        w.b.events.clear();
        let flushed = w.sim.now();
        w.sim.flush_mappings(w.a.nat.unwrap());
        let (ka, kb, ia, ib) = (w.a.keeper, w.b.keeper, w.a.agent, w.b.agent);
        let mut moved = None;
        w.sim
            .run_until(Duration::from_secs(5), |sim| {
                moved = keeper_changed(sim, ka);
                moved.is_some()
            })
            .unwrap();
        let new_a = moved.unwrap();
        let now = w.sim.now();
        w.sim.engine_mut(ia).local_reflexive_changed(now, new_a);
        let rb = w.sim.engine(kb).public().unwrap();
        let (intro_a, intro_b) = (w.intro(&w.a, new_a, 2), w.intro(&w.b, rb, 2));
        w.sim.engine_mut(ia).introduce(now, intro_b).unwrap();
        w.sim.engine_mut(ib).introduce(now, intro_a).unwrap();
        let both = |sim: &Sim| {
            let ok_a = sim.engine(ia).status()[0].last_keepalive.is_some_and(|t| t > now);
            let ok_b = sim.engine(ib).path(&name("alice")).is_some_and(|p| p.1 == new_a);
            ok_a && ok_b && sim.engine(ia).path(&name("bob")).is_some()
        };
        w.sim.run_until(Duration::from_secs(10), |sim| both(sim)).unwrap();
        let took = w.sim.now() - flushed;
        println!("seed {seed}: back after {took:?}");
        // 2 x 3 s keepalive + one round trip (about 80 ms here, 200 ms with jitter and reordering).
        assert!(took <= Duration::from_millis(6200), "seed {seed}: back after {took:?}");
    }
}

#[test]
fn a_path_nobody_repairs_dies_and_a_fresh_introduction_reopens_it() {
    let mut w = World::new(12, moving_cone(), Some(moving_cone()), rough());
    let (_, outcome) = punch(&mut w, Duration::from_secs(5));
    assert!(matches!(outcome, Outcome::Direct { .. }));
    w.a.events.clear();
    w.b.events.clear();
    // Both routers reboot and nobody tells the agents: both paths go silent and die within three keepalive
    // intervals (plus the one in flight); the agents re-punch the stale candidates after a backoff, in vain.
    w.sim.flush_mappings(w.a.nat.unwrap());
    w.sim.flush_mappings(w.b.nat.unwrap());
    let died = w.run(Duration::from_secs(20), |a, b| {
        let d = |e: &[AgentEvent]| e.iter().any(|e| matches!(e, AgentEvent::PathDied { .. }));
        d(a) && d(b)
    });
    let died = died.expect("both paths die");
    assert!(died <= Duration::from_secs(12), "{died:?}");
    w.run(Duration::from_secs(10), |_, _| false);
    assert!(!opened(&w.a.events), "stale candidates do not open");
    assert!(gave_up(&w.a.events), "and the agent says a relay (or a fresh introduction) is needed");
    // The node asks the rendezvous: a fresh introduction with the current endpoints opens the path.
    w.a.events.clear();
    w.b.events.clear();
    w.introduce(2);
    let took = w.run(Duration::from_secs(5), |a, b| opened(a) && opened(b)).expect("reopened");
    assert!(took <= Duration::from_secs(1), "{took:?}");
}

#[test]
fn peers_behind_one_nat_connect_over_the_lan_and_fall_back_to_hairpinning() {
    for (m, mn) in MAPPINGS {
        for (f, fname) in FILTERINGS {
            for hairpin in [false, true] {
                let nat = NatConfig::new(m, f).with_hairpin(hairpin);
                let label = format!("{mn}/{fname} hairpin {hairpin}");
                let mut w = World::new(20, nat, None, rough());
                let (p, outcome) = punch(&mut w, Duration::from_secs(5));
                assert_eq!(p, Prediction::Direct, "{label}");
                assert!(matches!(outcome, Outcome::Direct { via: RemoteKind::Host, .. }), "{label}: {outcome:?}");
                assert_eq!(w.sim.engine(w.a.agent).status()[0].path, PathKind::Lan, "{label}");
            }
        }
    }
    // With the LAN path blocked (a host firewall drops the peers' LAN traffic), hairpinning is the fallback
    // where the router offers it.
    for hairpin in [false, true] {
        let nat =
            NatConfig::new(Mapping::EndpointIndependent, Filtering::AddressAndPortDependent).with_hairpin(hairpin);
        let mut w = World::new(21, nat, None, rough());
        w.sim.set_fault(Box::new(|out| {
            if out.dst.ip().to_string().starts_with("10.0.1.") {
                Fate::Drop
            } else {
                Fate::Deliver
            }
        }));
        let (_, outcome) = punch(&mut w, Duration::from_secs(10));
        if hairpin {
            assert!(matches!(outcome, Outcome::Direct { via: RemoteKind::Reflexive, .. }), "{outcome:?}");
            assert_eq!(w.sim.engine(w.a.agent).status()[0].path, PathKind::Direct);
        } else {
            assert_eq!(outcome, Outcome::Relay);
        }
    }
}

#[test]
fn wrong_key_gets_no_path() {
    let cone = NatConfig::new(Mapping::EndpointIndependent, Filtering::EndpointIndependent);
    let mut w = World::new(30, cone, Some(cone), rough());
    // Bob's configuration has another key for "alice" (a typo, or an impostor registered as alice).
    let mut s = [0u8; 32];
    s[0] = 99;
    let other = SecretKey::from_seed(s).public();
    let ib = w.b.agent;
    // Rebuild Bob's agent's peer list: a fresh agent with the wrong key for alice.
    let mut config = AgentConfig::new(local(), name("bob"), SecretKey::from_base64(&w.b.key.to_base64()).unwrap());
    config.keepalive = Duration::from_secs(3);
    let mut agent = Agent::new(config, [7; 32]);
    agent.add_peer(name("alice"), other).unwrap();
    *w.sim.engine_mut(ib) = agent;
    w.a.key = SecretKey::from_base64(&w.a.key.to_base64()).unwrap();
    let (ra, rb) = w.learn();
    let now = w.sim.now();
    let intro_b = w.intro(&w.b, rb, 1);
    w.sim.engine_mut(w.a.agent).introduce(now, intro_b).unwrap();
    let mut intro_a = w.intro(&w.a, ra, 1);
    // The rendezvous pushes alice's real key: Bob refuses the introduction outright.
    assert!(w.sim.engine_mut(ib).introduce(now, intro_a.clone()).is_err());
    // Pushed with the key Bob expects (a hostile server, or the impostor's registration), his checks carry
    // a key alice's own cannot verify, and hers the same the other way.
    intro_a.key = other;
    w.sim.engine_mut(ib).introduce(now, intro_a).unwrap();
    w.run(Duration::from_secs(10), |_, _| false);
    assert!(!opened(&w.a.events) && !opened(&w.b.events));
    assert!(gave_up(&w.a.events) && gave_up(&w.b.events));
}

#[test]
fn hostile_rendezvous_pointing_at_an_impostor_leads_nowhere() {
    let cone = NatConfig::new(Mapping::EndpointIndependent, Filtering::AddressAndPortDependent);
    let mut w = World::new(40, cone, Some(cone), rough());
    // Mallory on the internet runs an agent of her own and configures alice.
    let mallory = SecretKey::from_seed([66; 32]);
    let mhost = w.sim.add_host(Sim::INTERNET, &[ip("192.0.2.66")], Link::new(ms(5))).unwrap();
    let maddr = sa("192.0.2.66:6666");
    let mut m = Agent::new(
        AgentConfig::new(maddr, name("bob"), SecretKey::from_base64(&mallory.to_base64()).unwrap()),
        [6; 32],
    );
    m.add_peer(name("alice"), w.a.key.public()).unwrap();
    let mid = w.sim.add_engine(mhost, &[maddr], m).unwrap();
    let (ra, _) = w.learn();
    let now = w.sim.now();
    // The server tells alice that bob (with bob's real key) is at Mallory's address, and Mallory that alice
    // is where she is.
    let mut fake = w.intro(&w.b, maddr, 1);
    fake.candidates.retain(|c| c.kind == CandidateKind::Reflexive);
    w.sim.engine_mut(w.a.agent).introduce(now, fake).unwrap();
    let to_alice = w.intro(&w.a, ra, 1);
    w.sim.engine_mut(mid).introduce(now, to_alice).unwrap();
    w.run(Duration::from_secs(10), |_, _| false);
    assert!(!opened(&w.a.events), "nothing Mallory sends verifies with bob's key");
    assert_eq!(w.sim.engine(w.a.agent).path(&name("bob")), None);
    assert!(w.sim.events(mid).iter().all(|e| !matches!(e, AgentEvent::PathOpened { .. })));
}
