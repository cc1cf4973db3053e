//! What the finished tests add up to: the [`Report`], built from the transactions' outcomes with the pure
//! inference of [`crate::nat::behaviour`] and [`crate::nat::verdict`].

use super::probe::{Answer, Got, HairpinPath, Probe, Tx};
use super::Diagnosis;
use crate::nat::behaviour::{
    classify_allocation, infer_filtering, infer_mapping, Allocation, FilterOutcome, Filtering, Mapping, Observation,
};
use crate::nat::report::{Report, ServerReport};
use crate::nat::verdict::{nat_kind, verdict};
use crate::transaction::{check_target, FailReason};
use std::net::SocketAddr;

impl Diagnosis {
    fn hairpin_result(&self) -> (Option<bool>, String) {
        if !self.cfg.hairpin {
            return (None, "not run".into());
        }
        if let Some(r) = &self.hairpin_skip {
            return (None, r.clone());
        }
        let paths = [HairpinPath::SelfLoop, HairpinPath::ToPrimary, HairpinPath::ToHelper];
        let txs: Vec<&Tx> = paths.iter().filter_map(|p| self.find(Probe::Hairpin(*p))).collect();
        if txs.is_empty() {
            return (None, "not run: no public endpoint was learned".into());
        }
        for t in &txs {
            if let Some(Ok(Got::Arrived { from, .. })) = self.client.outcome(t.key) {
                let from = *from;
                let how = match t.probe {
                    Probe::Hairpin(HairpinPath::SelfLoop) => "a packet sent to our own public endpoint came back",
                    _ => "a packet sent from one local socket to another's public endpoint arrived",
                };
                let src = if from.ip() == t.dest.ip() {
                    "with the public source address"
                } else {
                    "with the internal source address (not translated)"
                };
                return (Some(true), format!("{how} {src}: {from} (RFC 5780 §4.5)"));
            }
        }
        if txs.iter().all(|t| self.tx_failure(t).is_some_and(FailReason::is_no_answer)) {
            return (Some(false), "packets sent to our own public endpoints never came back (RFC 5780 §4.5)".into());
        }
        (None, txs.iter().map(|t| self.describe_failure(t)).collect::<Vec<_>>().join("; "))
    }

    fn filter_outcome(&self, p: Probe, expected_from: SocketAddr, contacted: SocketAddr) -> FilterOutcome {
        let Some(tx) = self.find(p) else {
            return FilterOutcome::NotRun(match p {
                Probe::FilterII => "the server's alternate address shares its IP or port".into(),
                _ => "the server's alternate address has the same port".into(),
            });
        };
        match self.client.outcome(tx.key) {
            Some(Ok(Got::Answer(a))) if a.from == expected_from => FilterOutcome::Received,
            Some(Ok(Got::Answer(a))) if a.from == contacted => FilterOutcome::Failed(format!(
                "the server ignored CHANGE-REQUEST (the response came from {contacted}, the address contacted)"
            )),
            Some(Ok(Got::Answer(a))) => {
                FilterOutcome::Failed(format!("the response came from {}, expected {expected_from}", a.from))
            }
            Some(Err(FailReason::NoAnswer { .. })) => FilterOutcome::NotReceived,
            Some(Err(r)) if *r != FailReason::Cancelled => FilterOutcome::Failed(r.to_string()),
            _ => FilterOutcome::Failed("did not finish".into()),
        }
    }

    pub(super) fn build_report(&self) -> Report {
        let primary = self.plan.primary;
        let local = self.locals[primary];
        let mut not_tested = Vec::new();
        let mut notes = Vec::new();

        let servers: Vec<ServerReport> = (0..self.cfg.servers.len())
            .map(|i| {
                let tx = self.find(Probe::Basic(i));
                let a = tx.and_then(|t| self.tx_answer(t));
                let ip = self.cfg.servers[i].ip();
                ServerReport {
                    addr: self.cfg.servers[i],
                    mapped: a.and_then(Answer::mapped),
                    alternate: a.and_then(Answer::alternate),
                    legacy: a.is_some_and(Answer::legacy),
                    software: a.and_then(|a| a.software.clone()),
                    error: tx.and_then(|t| self.tx_failure(t)).cloned(),
                    srtt: self.client.rto_cache().estimate(ip).map(|e| e.srtt),
                    rto: self.client.rto_cache().rto(ip),
                }
            })
            .collect();
        for s in &servers {
            if let Some(e) = &s.error {
                notes.push(format!("server {}: {e}", s.addr));
            }
            if let Some(alt) = s.alternate.filter(|a| *a != s.addr) {
                if let Err(why) = check_target(s.addr, alt) {
                    notes.push(format!(
                        "server {} named {alt} as its alternate address, which is {why}: not used, no request \
                         was sent there",
                        s.addr
                    ));
                }
            }
        }

        let reference = self.reference.map(|r| self.cfg.servers[r]);
        let public = self.primary_mapped();
        let Some(public) = public else {
            return Report::unanswered(local, reference, servers, self.cfg.lifetime.is_some(), notes);
        };

        // NAT presence: the public endpoint is the local one or not.
        let nat = public != local;
        let nat_reason = if nat {
            format!("the server saw {public}, the socket is bound to {local}")
        } else {
            format!("the server saw the socket's own address {local}")
        };

        // Mapping from every destination the primary socket reached.
        let mut observations = Vec::new();
        for i in 0..self.cfg.servers.len() {
            if let Some(m) = self.answer(Probe::Basic(i)).and_then(Answer::mapped) {
                observations.push(Observation { dest: self.cfg.servers[i], mapped: m });
            }
        }
        let alt = self.alternate();
        let mut mapping_failures = Vec::new();
        for p in [Probe::MappingII, Probe::MappingIII] {
            if let Some(tx) = self.find(p) {
                match self.tx_answer(tx).and_then(Answer::mapped) {
                    Some(m) => {
                        if !observations.iter().any(|o| o.dest == tx.dest) {
                            observations.push(Observation { dest: tx.dest, mapped: m });
                        }
                    }
                    None => mapping_failures.push(format!(
                        "mapping test {}: {}",
                        if p == Probe::MappingII { "II" } else { "III" },
                        self.describe_failure(tx)
                    )),
                }
            }
        }
        if let (Some(alt), Some(ii)) = (alt, self.find(Probe::MappingII)) {
            if alt.port() != ii.dest.port() && self.find(Probe::MappingIII).is_none() {
                let why = format!("the alternate address {} did not answer test II", alt.ip());
                notes.push(format!(
                    "mapping test III was not run: {why}, and an alternate that never answered gets no second \
                     transaction (a server can name any address as its alternate)"
                ));
                mapping_failures.push(format!("mapping test III: not run, {why}"));
            }
        }
        let (mut mapping, mut mapping_reason) = if nat {
            infer_mapping(&observations)
        } else {
            let destinations = observations.len();
            (
                Mapping::EndpointIndependent,
                format!(
                    "no NAT: the public endpoint is the local address{}",
                    if destinations > 1 {
                        format!(", as {destinations} destinations confirmed")
                    } else {
                        String::new()
                    }
                ),
            )
        };
        if nat && !mapping_failures.is_empty() && mapping == Mapping::Unknown {
            mapping_reason = format!("{mapping_reason}; {}", mapping_failures.join("; "));
        }
        if nat && alt.is_none() && observations.len() < 2 {
            mapping = Mapping::Unknown;
            mapping_reason = "the server does not support RFC 5780 (no OTHER-ADDRESS) and no second server \
                              answered: give two or more --server to compare mappings"
                .into();
        }
        if mapping == Mapping::Unknown {
            not_tested.push(format!("mapping: {mapping_reason}"));
        }
        let mut public_ips: Vec<_> = observations.iter().map(|o| o.mapped.ip()).collect();
        public_ips.sort();
        public_ips.dedup();
        if public_ips.len() > 1 {
            notes.push(format!(
                "the NAT used {} different public IP addresses for different destinations",
                public_ips.len()
            ));
        }

        // Filtering (RFC 5780 §4.4).
        let (filtering, filtering_reason) = match (alt, reference) {
            (None, _) | (_, None) => (
                Filtering::Unknown,
                "not tested: the server does not support RFC 5780 (no OTHER-ADDRESS), so no response can come \
                 from an address we did not contact"
                    .to_string(),
            ),
            (Some(alt), Some(server)) => match self.find(Probe::FilterI) {
                Some(t) if self.tx_answer(t).is_none() => {
                    (Filtering::Unknown, format!("filtering test I failed: {}", self.describe_failure(t)))
                }
                None => (Filtering::Unknown, "not run".to_string()),
                Some(_) => {
                    let t2 = self.filter_outcome(Probe::FilterII, alt, server);
                    let t3 = self.filter_outcome(Probe::FilterIII, SocketAddr::new(server.ip(), alt.port()), server);
                    let alt_ok = self.answer(Probe::MappingIII).is_some() || self.answer(Probe::MappingII).is_some();
                    infer_filtering(&t2, &t3, alt_ok)
                }
            },
        };
        if filtering == Filtering::Unknown {
            not_tested.push(format!("filtering: {filtering_reason}"));
        }

        // Port preservation and allocation.
        let port_preserved = Some(public.port() == local.port());
        let mut samples = Vec::new();
        for i in 0..self.plan.allocation.len() {
            if let Some(m) = self.answer(Probe::Alloc(i)).and_then(Answer::mapped) {
                samples.push((self.locals[self.plan.allocation.start + i], m));
            }
        }
        let ports: Vec<(u16, u16)> = samples.iter().map(|(l, p)| (l.port(), p.port())).collect();
        let (allocation, allocation_reason) = if self.plan.allocation.is_empty() {
            (Allocation::Unknown, "not run (no allocation sockets)".to_string())
        } else {
            classify_allocation(&ports)
        };
        if allocation == Allocation::Unknown {
            not_tested.push(format!("port allocation: {allocation_reason}"));
        }

        // Hairpin.
        let (hairpin, hairpin_reason) = self.hairpin_result();
        if hairpin.is_none() && nat {
            not_tested.push(format!("hairpinning: {hairpin_reason}"));
        }

        // ALG: MAPPED-ADDRESS rewritten while XOR-MAPPED-ADDRESS (obfuscated) was not.
        let both: Vec<(SocketAddr, SocketAddr)> =
            self.txs.iter().filter_map(|t| self.tx_answer(t)).filter_map(|a| Some((a.xor?, a.plain?))).collect();
        let (alg, alg_reason) = match both.iter().find(|(x, p)| x != p) {
            Some((x, p)) => (
                Some(true),
                format!(
                    "MAPPED-ADDRESS said {p} but XOR-MAPPED-ADDRESS said {x}: something on the path rewrites \
                     addresses inside packets"
                ),
            ),
            None if !both.is_empty() => {
                (Some(false), "MAPPED-ADDRESS and XOR-MAPPED-ADDRESS agree in every answer".to_string())
            }
            None => (None, "the servers did not send both MAPPED-ADDRESS and XOR-MAPPED-ADDRESS".to_string()),
        };
        if alg.is_none() {
            not_tested.push(format!("ALG detection: {alg_reason}"));
        }

        let lifetime = self
            .life
            .as_ref()
            .map(|l| l.result.clone().unwrap_or_else(|| Err("the lifetime test did not finish".into())));
        if let Some(Err(e)) = &lifetime {
            not_tested.push(format!("mapping lifetime: {e}"));
        }

        let legacy = self.reference.and_then(|r| self.answer(Probe::Basic(r))).is_some_and(Answer::legacy);
        if legacy {
            notes.push(
                "legacy: the reference server answered like an RFC 3489 server (CHANGED-ADDRESS instead of \
                 OTHER-ADDRESS, or no XOR-MAPPED-ADDRESS); the classic tests I/II/III ran with CHANGED-ADDRESS as \
                 the alternate address, and RESPONSE-PORT (lifetime test) is not available from it"
                    .into(),
            );
        }
        if alt.is_none() && observations.len() >= 2 {
            notes.push(format!(
                "no server supports RFC 5780: mapping was inferred by comparing what {} servers saw from one socket",
                observations.len()
            ));
        }

        let kind = nat_kind(nat, mapping, filtering);
        let (verdict, verdict_reason) = verdict(nat, mapping, filtering, allocation);

        Report {
            local,
            public: Some(public),
            reference,
            nat: Some(nat),
            nat_reason,
            kind,
            mapping,
            mapping_reason,
            filtering,
            filtering_reason,
            port_preserved,
            allocation,
            allocation_reason,
            allocation_samples: samples,
            hairpin,
            hairpin_reason,
            alg,
            alg_reason,
            lifetime,
            rfc5780: alt.is_some(),
            legacy,
            observations,
            servers,
            verdict,
            verdict_reason,
            not_tested,
            notes,
        }
    }
}
