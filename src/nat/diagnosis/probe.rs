//! The diagnosis's requests: which test each one is ([`Probe`]), how it is sent ([`ProbeSpec`]: socket,
//! destination, CHANGE-REQUEST of RFC 5780 §7.2, RESPONSE-PORT of §7.5, where the answer must land), and what
//! its answer said ([`Answer`]).

use crate::stun::{Attribute, ChangeRequest, Message, MessageWriter};
use crate::transaction::{check_target, TxKey};
use std::net::SocketAddr;
use std::time::Duration;

/// Hairpin paths (RFC 5780 §4.5), tried together; any arrival proves hairpinning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum HairpinPath {
    /// primary -> its own public endpoint.
    SelfLoop,
    /// hairpin socket -> primary's public endpoint.
    ToPrimary,
    /// primary -> hairpin socket's public endpoint (opens the primary's filter for the path above).
    ToHelper,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Probe {
    /// Test I from the primary socket to server `i`.
    Basic(usize),
    MappingII,
    MappingIII,
    FilterI,
    FilterII,
    FilterIII,
    Alloc(usize),
    HairpinMap,
    Hairpin(HairpinPath),
    LifeMap(usize),
    LifeCheck(usize),
}

/// One request of the diagnosis, before it becomes a transaction.
#[derive(Clone, Copy, Debug)]
pub(super) struct ProbeSpec {
    pub probe: Probe,
    /// Socket index the request leaves from.
    pub socket: usize,
    pub dest: SocketAddr,
    pub change: Option<ChangeRequest>,
    pub response_port: Option<u16>,
    /// Socket index the answer (or, for hairpin, the request itself) must arrive on.
    pub expect: usize,
    /// How long after now the first request goes out.
    pub delay: Duration,
}

impl ProbeSpec {
    /// `probe` from socket `socket` to `dest`, answered on the same socket, sent at once.
    pub fn new(probe: Probe, socket: usize, dest: SocketAddr) -> Self {
        ProbeSpec { probe, socket, dest, change: None, response_port: None, expect: socket, delay: Duration::ZERO }
    }

    pub fn change(mut self, change_ip: bool, change_port: bool) -> Self {
        self.change = Some(ChangeRequest { change_ip, change_port });
        self
    }

    /// RESPONSE-PORT `port`, which sends the answer to socket `expect`.
    pub fn response_port(mut self, port: u16, expect: usize) -> Self {
        self.response_port = Some(port);
        self.expect = expect;
        self
    }

    pub fn answer_on(mut self, expect: usize) -> Self {
        self.expect = expect;
        self
    }

    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    pub fn is_hairpin(&self) -> bool {
        matches!(self.probe, Probe::Hairpin(_))
    }

    /// The request's attributes.
    pub fn write(&self, w: &mut MessageWriter<'_>) -> Result<(), crate::stun::Error> {
        if let Some(c) = self.change {
            w.add(&Attribute::ChangeRequest(c))?;
        }
        if let Some(p) = self.response_port {
            w.add(&Attribute::ResponsePort(p))?;
        }
        Ok(())
    }
}

/// A started probe: its transaction and where it went.
#[derive(Clone, Copy, Debug)]
pub(super) struct Tx {
    pub probe: Probe,
    pub key: TxKey,
    pub dest: SocketAddr,
    pub expect: usize,
}

/// How a transaction of the diagnosis succeeded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Got {
    /// A Binding success response.
    Answer(Answer),
    /// A hairpin request reached socket `socket` from `from`.
    Arrived { socket: usize, from: SocketAddr },
}

/// A decoded Binding success response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Answer {
    pub from: SocketAddr,
    pub xor: Option<SocketAddr>,
    pub plain: Option<SocketAddr>,
    pub other: Option<SocketAddr>,
    pub changed: Option<SocketAddr>,
    pub software: Option<String>,
    pub rfc3489: bool,
}

impl Answer {
    pub fn mapped(&self) -> Option<SocketAddr> {
        self.xor.or(self.plain)
    }
    pub fn alternate(&self) -> Option<SocketAddr> {
        self.other.or(self.changed)
    }
    pub fn legacy(&self) -> bool {
        self.rfc3489 || self.xor.is_none() || (self.other.is_none() && self.changed.is_some())
    }
}

/// The transaction layer's decoder for Binding success responses.
pub(super) fn decode_answer(msg: &Message<'_>, from: SocketAddr) -> Result<Got, String> {
    let a = Answer {
        from,
        xor: msg.xor_mapped_address(),
        plain: msg.mapped_address(),
        other: msg.other_address(),
        changed: msg.changed_address(),
        software: msg.software().map(|s| s.trim_end_matches(char::from(0)).to_owned()),
        rfc3489: msg.is_rfc3489(),
    };
    let Some(mapped) = a.mapped() else {
        return Err("no XOR-MAPPED-ADDRESS or MAPPED-ADDRESS".into());
    };
    // Later tests send to the mapped address (hairpinning): it must be one a client of this server can
    // plausibly have, never a broadcast address or a third party's private one.
    if let Err(why) = check_target(from, mapped) {
        return Err(format!("mapped address {mapped} is {why}"));
    }
    Ok(Got::Answer(a))
}
