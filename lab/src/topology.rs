//! Building a lab: the "internet" bridge, the STUN server host, public hosts and NAT sites.
//!
//! ```text
//!                       ns <p>-net: bridge br0, 203.0.113.1/24 + 198.51.100.1/24, forwarding
//!          ┌──────────────────┬───────────────┴───────────┬───────────────────────────┐
//!   <p>-server             <p>-relay…           <p>-a-nat (pub 198.51.100.10)   <p>-b-isp (pub 198.51.100.11)
//!   203.0.113.10 + .11     203.0.113.20…         lan 192.168.1.1/24 (bridge)     lan 100.64.2.1/24
//!                                                 ├─ <p>-a1 192.168.1.10         <p>-b-nat pub 100.64.2.2
//!                                                 └─ <p>-a2 192.168.1.11          └─ <p>-b1 192.168.2.10
//! ```
//! All veths are created directly inside the lab's namespaces, so interface names (`pub`, `lan`,
//! `eth0`, `p0`…) never meet another lab's and deleting the namespaces removes every link.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::Duration;

use crate::cmd::{run, run_args, run_with_stdin, Process};
use crate::delayline::{DelayLine, Impairment};
use crate::error::{Error, Result};
use crate::portmap::{PortMapConfig, PortMapper};
use crate::preset::{self, Behaviour, Preset, RouterOpts, IMPAIR_TABLE, NAT_TABLE};
use crate::sweep;

/// The internet bridge's stand-in for the routers between two sites: a datagram whose TTL would run out
/// there is dropped (others cross unchanged: nft cannot decrement a TTL in the bridge family).
const INTERNET_HOP_RULES: &str = "table bridge internet_hop {
  chain forward {
    type filter hook forward priority 0; policy accept;
    ip ttl < 2 drop
  }
}
";

/// The server host's two public addresses (RFC 5780 needs two).
pub const SERVER_IPS: (Ipv4Addr, Ipv4Addr) = (Ipv4Addr::new(203, 0, 113, 10), Ipv4Addr::new(203, 0, 113, 11));
/// The internet router's address in 203.0.113.0/24.
pub const GATEWAY_203: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// The internet router's address in 198.51.100.0/24 (site uplinks live here).
pub const GATEWAY_198: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

const MAX_SITES: usize = 16;
const MAX_HOSTS: usize = 9;
const MAX_PUBLIC_HOSTS: usize = 50;
/// New public addresses handed out by [`Lab::change_public_ip`]: 198.51.100.100 and up.
const RENUMBER_FIRST: u8 = 100;
const RENUMBER_LAST: u8 = 250;

/// One-way delay with uniform jitter on a site's access link (both directions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delay {
    pub one_way: Duration,
    pub jitter: Duration,
}

/// Everything about one site: the preset and its options.
#[derive(Clone, Debug)]
pub struct SiteSpec {
    pub preset: Preset,
    hosts: Option<usize>,
    hairpin: Option<bool>,
    loss_up: u8,
    loss_down: u8,
    delay: Option<Delay>,
    port_mapping: bool,
    permissive: bool,
}

impl From<Preset> for SiteSpec {
    fn from(preset: Preset) -> Self {
        SiteSpec::new(preset)
    }
}

impl SiteSpec {
    pub fn new(preset: Preset) -> Self {
        SiteSpec {
            preset,
            hosts: None,
            hairpin: None,
            loss_up: 0,
            loss_down: 0,
            delay: None,
            port_mapping: false,
            permissive: false,
        }
    }
    /// Number of LAN hosts (1–9); default 2 for the hairpin presets, else 1.
    pub fn hosts(mut self, n: usize) -> Self {
        self.hosts = Some(n);
        self
    }
    /// Turn hairpinning on or off on any NAT preset.
    pub fn hairpin(mut self, on: bool) -> Self {
        self.hairpin = Some(on);
        self
    }
    /// Drop `pct` percent of IP packets in each direction of the access link.
    pub fn loss(mut self, pct: u8) -> Self {
        self.loss_up = pct;
        self.loss_down = pct;
        self
    }
    /// Loss per direction: `up` towards the internet, `down` towards the site.
    pub fn loss_each(mut self, up: u8, down: u8) -> Self {
        self.loss_up = up;
        self.loss_down = down;
        self
    }
    /// Delay every frame on the access link by `one_way` ± `jitter` (userspace delay line).
    pub fn delay(mut self, one_way: Duration, jitter: Duration) -> Self {
        self.delay = Some(Delay { one_way, jitter });
        self
    }
    /// Run a port-mapping service (miniupnpd: NAT-PMP, PCP, UPnP IGD) on the router (preset 9).
    pub fn port_mapping(mut self) -> Self {
        self.port_mapping = true;
        self
    }
    /// A router that does not drop unsolicited packets to its own address (adversarial; see docs/lab.md,
    /// "Facts the lab relies on").
    pub fn permissive(mut self) -> Self {
        self.permissive = true;
        self
    }
    fn host_count(&self) -> usize {
        self.hosts.unwrap_or_else(|| self.preset.default_hosts())
    }
    fn hairpin_on(&self) -> bool {
        self.hairpin.unwrap_or(self.preset.behaviour().hairpin)
    }
    /// The behaviour this site should show (the preset's, with the hairpin option applied).
    pub fn behaviour(&self) -> Behaviour {
        Behaviour { hairpin: self.hairpin_on(), ..self.preset.behaviour() }
    }
}

/// What a namespace is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    /// The internet router / bridge.
    Internet,
    /// The STUN server host with two public addresses.
    Server,
    /// Another host on the public segment.
    PublicHost,
    /// A site's (home) NAT router or firewall.
    Router,
    /// The carrier-grade NAT of a double-NAT site.
    Cgnat,
    /// The namespace of a site's delay line.
    DelayLine,
    /// A host on a site's LAN.
    Host,
}

/// A namespace of the lab, with ways to run programs in it.
#[derive(Clone, Debug)]
pub struct Node {
    name: String,
    ns: String,
    kind: NodeKind,
    ips: Vec<Ipv4Addr>,
}

impl Node {
    /// Node name within the lab (`server`, `a1`, `a-nat`, …).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The `ip netns` name.
    pub fn netns(&self) -> &str {
        &self.ns
    }
    pub fn kind(&self) -> NodeKind {
        self.kind
    }
    /// Addresses given at build time (a router: WAN then LAN; the server: primary then alternate).
    pub fn ips(&self) -> &[Ipv4Addr] {
        &self.ips
    }
    /// The first address (see [`Node::ips`]); 0.0.0.0 for a node without one.
    pub fn ip(&self) -> Ipv4Addr {
        self.ips.first().copied().unwrap_or(Ipv4Addr::UNSPECIFIED)
    }
    /// A command that runs `program` inside this namespace; add arguments and spawn or run it.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns]).arg(program);
        c
    }
    fn argv_command(&self, argv: &[&str]) -> Result<Command> {
        let (program, args) = argv.split_first().ok_or_else(|| Error::Config("empty command line".into()))?;
        let mut c = self.command(program);
        c.args(args);
        Ok(c)
    }
    /// Runs `argv` here to completion; returns stdout, or an error with stderr when it fails.
    pub fn run(&self, argv: &[&str]) -> Result<String> {
        let out = run(&mut self.argv_command(argv)?)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
    /// Runs `argv` here to completion and returns its output whatever the exit status.
    pub fn output(&self, argv: &[&str]) -> Result<Output> {
        let mut c = self.argv_command(argv)?;
        let line = crate::cmd::describe(&c);
        c.stdin(std::process::Stdio::null()).output().map_err(|source| Error::Spawn { cmd: line, source })
    }
    /// Starts `argv` here in the background, stdout captured line by line (see
    /// [`Process::wait_for_line`]); killed when the returned handle is dropped.
    pub fn spawn(&self, argv: &[&str]) -> Result<Process> {
        Process::spawn(self.argv_command(argv)?, true)
    }
    /// Starts a command made with [`Node::command`], stdout captured.
    pub fn spawn_command(&self, cmd: Command) -> Result<Process> {
        Process::spawn(cmd, true)
    }
}

/// A built site: its routers, hosts and current public address.
#[derive(Debug)]
pub struct Site {
    name: String,
    spec: SiteSpec,
    /// Home NAT router or firewall (node name).
    router: String,
    /// CGNAT of a double-NAT site.
    isp: Option<String>,
    /// The router on the internet bridge (the CGNAT for a double NAT).
    uplink_router: String,
    hosts: Vec<String>,
    public_ip: Mutex<Ipv4Addr>,
    /// Firewall sites: the routed /28 the hosts live in.
    routed: Option<Ipv4Addr>,
    /// NAT-PMP / PCP server of the port-mapping service, when the site has one.
    natpmp: Option<SocketAddrV4>,
}

impl Site {
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn preset(&self) -> Preset {
        self.spec.preset
    }
    pub fn spec(&self) -> &SiteSpec {
        &self.spec
    }
    /// The behaviour this site is built to show.
    pub fn behaviour(&self) -> Behaviour {
        self.spec.behaviour()
    }
    /// Node names of the LAN hosts (`a1`, `a2`, …).
    pub fn hosts(&self) -> &[String] {
        &self.hosts
    }
    /// Node name of the home router (or firewall).
    pub fn router(&self) -> &str {
        &self.router
    }
    /// Node name of the carrier-grade NAT, for a double-NAT site.
    pub fn isp(&self) -> Option<&str> {
        self.isp.as_deref()
    }
    /// Firewall sites: the routed /28 (network address) the hosts are numbered from.
    pub fn routed_net(&self) -> Option<Ipv4Addr> {
        self.routed
    }
    /// Where the site's port-mapping service (NAT-PMP, PCP; UPnP IGD on the same address) listens:
    /// the router's LAN address, port 5351. `None` without [`SiteSpec::port_mapping`].
    pub fn natpmp_addr(&self) -> Option<SocketAddrV4> {
        self.natpmp
    }
    /// The site's current address on the internet (the outermost router's WAN).
    pub fn public_ip(&self) -> Ipv4Addr {
        *self.public_ip.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Collects what a lab should contain; [`LabBuilder::build`] makes it.
#[derive(Clone, Debug, Default)]
pub struct LabBuilder {
    name: Option<String>,
    server: bool,
    public_hosts: Vec<String>,
    sites: Vec<(String, SiteSpec)>,
}

impl LabBuilder {
    /// A fixed name (prefix `hl-<name>`) instead of a unique automatic one; for the CLI, where other
    /// commands find the lab again by name. Tests should not set it.
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }
    /// Adds the server host with [`SERVER_IPS`] (node `server`).
    pub fn server(mut self) -> Self {
        self.server = true;
        self
    }
    /// Adds another host on the public segment (203.0.113.20 and up).
    pub fn public_host(mut self, name: &str) -> Self {
        self.public_hosts.push(name.to_owned());
        self
    }
    /// Adds a site: a router with the preset and its LAN hosts `<name>1`, `<name>2`, …
    pub fn site(mut self, name: &str, spec: impl Into<SiteSpec>) -> Self {
        self.sites.push((name.to_owned(), spec.into()));
        self
    }
    /// Creates everything. On error, whatever was created is removed again.
    pub fn build(self) -> Result<Lab> {
        self.validate()?;
        let prefix = match &self.name {
            Some(n) => sweep::named_prefix(n),
            None => sweep::auto_prefix(),
        };
        if !sweep::namespaces_with_prefix(&prefix)?.is_empty() {
            return Err(Error::Config(format!(
                "a lab named {prefix} already exists (remove it with `holepunch-lab down`)"
            )));
        }
        let mut lab = Lab {
            prefix,
            namespaces: Vec::new(),
            nodes: BTreeMap::new(),
            sites: Vec::new(),
            net_ports: BTreeMap::new(),
            next_port: 0,
            next_renumber: Mutex::new(RENUMBER_FIRST),
            delay_lines: Mutex::new(Vec::new()),
            port_mappers: Mutex::new(Vec::new()),
            background: Mutex::new(Vec::new()),
            keep: false,
        };
        // `lab` is dropped on any error below, which tears down what exists so far.
        lab.build_internet()?;
        if self.server {
            lab.build_public("server", NodeKind::Server, &[SERVER_IPS.0, SERVER_IPS.1])?;
        }
        for (k, name) in self.public_hosts.iter().enumerate() {
            let ip = Ipv4Addr::new(203, 0, 113, 20 + k as u8);
            lab.build_public(name, NodeKind::PublicHost, &[ip])?;
        }
        for (i, (name, spec)) in self.sites.iter().enumerate() {
            lab.build_site(i, name, spec)?;
        }
        log::info!(target: "lab", "lab {} is up ({} namespaces)", lab.prefix, lab.namespaces.len());
        Ok(lab)
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if let Some(n) = &self.name {
            if n.is_empty() || n.len() > 12 || !n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) {
                return bad(format!("lab name `{n}` must be 1-12 characters a-z, 0-9"));
            }
        }
        if self.sites.len() > MAX_SITES {
            return bad(format!("at most {MAX_SITES} sites"));
        }
        if self.public_hosts.len() > MAX_PUBLIC_HOSTS {
            return bad(format!("at most {MAX_PUBLIC_HOSTS} public hosts"));
        }
        let mut names: Vec<String> = vec!["net".into(), "server".into()];
        for h in &self.public_hosts {
            if h.is_empty() || h.len() > 12 || !h.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) {
                return bad(format!("public host name `{h}` must be 1-12 characters a-z, 0-9"));
            }
            names.push(h.clone());
        }
        for (s, spec) in &self.sites {
            if s.is_empty() || s.len() > 8 || !s.bytes().all(|b| b.is_ascii_lowercase()) {
                return bad(format!("site name `{s}` must be 1-8 letters a-z"));
            }
            let n = spec.host_count();
            if n == 0 || n > MAX_HOSTS {
                return bad(format!("site {s}: 1-{MAX_HOSTS} hosts, not {n}"));
            }
            if spec.loss_up > 100 || spec.loss_down > 100 {
                return bad(format!("site {s}: loss is a percentage (0-100)"));
            }
            if spec.preset == Preset::Firewall && spec.hairpin == Some(true) {
                return bad(format!("site {s}: a firewall without NAT has nothing to hairpin"));
            }
            names.push(s.clone());
            for k in 1..=n {
                names.push(format!("{s}{k}"));
            }
        }
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        if sorted.len() != names.len() {
            return bad("node names clash (site, host and public host names must differ)".into());
        }
        Ok(())
    }
}

/// A running lab. Dropping it removes everything it created.
pub struct Lab {
    prefix: String,
    /// Created namespaces, in creation order.
    namespaces: Vec<String>,
    nodes: BTreeMap<String, Node>,
    sites: Vec<Site>,
    /// Node name → its bridge port in the internet namespace.
    net_ports: BTreeMap<String, String>,
    next_port: usize,
    next_renumber: Mutex<u8>,
    delay_lines: Mutex<Vec<DelayLine>>,
    port_mappers: Mutex<Vec<PortMapper>>,
    background: Mutex<Vec<Process>>,
    keep: bool,
}

impl std::fmt::Debug for Lab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lab").field("prefix", &self.prefix).field("namespaces", &self.namespaces).finish()
    }
}

impl Lab {
    pub fn builder() -> LabBuilder {
        LabBuilder::default()
    }

    /// The prefix of every namespace of this lab.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// All namespaces of this lab.
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }

    /// All nodes, by name.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values()
    }

    /// The node called `name`, or an error.
    pub fn node(&self, name: &str) -> Result<&Node> {
        self.nodes.get(name).ok_or_else(|| Error::Unknown { kind: "node", name: name.to_owned() })
    }

    /// The node called `name`. Panics if there is none: for tests, where a wrong name is a bug in
    /// the test; use [`Lab::node`] otherwise.
    pub fn host(&self, name: &str) -> &Node {
        match self.node(name) {
            Ok(n) => n,
            Err(e) => panic!("{e}"),
        }
    }

    /// The server host (panics if the lab was built without [`LabBuilder::server`]).
    pub fn server(&self) -> &Node {
        self.host("server")
    }

    /// The server's primary and alternate addresses.
    pub fn server_ips(&self) -> (Ipv4Addr, Ipv4Addr) {
        SERVER_IPS
    }

    /// The internet router namespace.
    pub fn internet(&self) -> &Node {
        self.host("net")
    }

    /// All sites, in build order.
    pub fn sites(&self) -> &[Site] {
        &self.sites
    }

    /// The site called `name`, or an error.
    pub fn try_site(&self, name: &str) -> Result<&Site> {
        self.sites.iter().find(|s| s.name == name).ok_or_else(|| Error::Unknown { kind: "site", name: name.to_owned() })
    }

    /// The site called `name` (panics if there is none; see [`Lab::host`]).
    pub fn site(&self, name: &str) -> &Site {
        match self.try_site(name) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        }
    }

    /// A site's home router (or firewall).
    pub fn router(&self, site: &str) -> &Node {
        self.host(&self.site(site).router)
    }

    /// A site's current public address.
    pub fn public_ip(&self, site: &str) -> Ipv4Addr {
        self.site(site).public_ip()
    }

    /// Keeps the lab after this handle is gone (for the CLI's `up`); `holepunch-lab down` or
    /// [`crate::sweep_prefix`] removes it. Delay lines (threads) and port-mapping services (miniupnpd
    /// is tied to this process by PR_SET_PDEATHSIG) stop when this process ends.
    pub fn persist(mut self) -> String {
        self.keep = true;
        std::mem::take(&mut self.prefix)
    }

    /// Keeps `p` running until the lab is torn down (e.g. a server the test does not talk to).
    pub fn adopt(&self, p: Process) {
        self.background.lock().unwrap_or_else(|e| e.into_inner()).push(p);
    }

    /// A readable list of nodes, namespaces and addresses.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        for n in self.nodes.values() {
            let ips: Vec<String> = n.ips.iter().map(|ip| ip.to_string()).collect();
            let _ = writeln!(s, "  {:<10} {:<24} {:?} {}", n.name, n.ns, n.kind, ips.join(" "));
        }
        for site in &self.sites {
            let b = site.behaviour();
            let _ = writeln!(
                s,
                "  site {:<4} preset {} ({}), public {}, translated {}, mapping {}, filtering {}, hosts {}",
                site.name,
                site.preset().number(),
                site.preset(),
                site.public_ip(),
                b.translated,
                b.mapping,
                b.filtering,
                site.hosts.join(" ")
            );
        }
        s
    }

    // ----- faults -----

    fn routers_of(&self, site: &Site) -> Vec<&Node> {
        let mut v = vec![self.host(&site.router)];
        if let Some(isp) = &site.isp {
            v.push(self.host(isp));
        }
        v
    }

    /// Forgets every mapping of a site's NAT(s): flushes conntrack and the learnt mapping tables,
    /// as a router reboot or a mapping timeout does.
    pub fn flush_conntrack(&self, site: &str) -> Result<()> {
        let site = self.try_site(site)?;
        for r in self.routers_of(site) {
            r.run(&["conntrack", "-F"])?;
            if site.preset() != Preset::Firewall {
                flush_maps(r)?;
            }
        }
        Ok(())
    }

    /// Gives the site a new public address (the outermost router's WAN) and returns it. The NAT
    /// forgets all mappings, as it would on a real renumbering.
    pub fn change_public_ip(&self, site: &str) -> Result<Ipv4Addr> {
        let site = self.try_site(site)?;
        if site.preset() == Preset::Firewall {
            return Err(Error::Unsupported(format!(
                "site {}: a firewall site has routed host addresses, no NAT address to change",
                site.name
            )));
        }
        if site.natpmp.is_some() && site.router == site.uplink_router {
            // miniupnpd, its nft tables and its STUN responder are set up for the WAN address at start: after a
            // renumbering NAT-PMP/PCP/UPnP would report the old address. Refused rather than left stale.
            return Err(Error::Unsupported(format!(
                "site {}: its router runs miniupnpd, which keeps the WAN address it started with",
                site.name
            )));
        }
        let new = {
            let mut next = self.next_renumber.lock().unwrap_or_else(|e| e.into_inner());
            if *next > RENUMBER_LAST {
                return Err(Error::Unsupported("no more public addresses to renumber to".into()));
            }
            let ip = Ipv4Addr::new(198, 51, 100, *next);
            *next += 1;
            ip
        };
        let r = self.host(&site.uplink_router);
        let mut cur = site.public_ip.lock().unwrap_or_else(|e| e.into_inner());
        let (old_s, new_s) = (format!("{}/24", *cur), format!("{new}/24"));
        // Deleting the address makes masquerade drop the conntrack entries that use it.
        run_args("ip", &["-n", &r.ns, "addr", "del", &old_s, "dev", "pub"])?;
        run_args("ip", &["-n", &r.ns, "addr", "add", &new_s, "dev", "pub"])?;
        run_args("ip", &["-n", &r.ns, "route", "replace", "default", "via", &GATEWAY_198.to_string()])?;
        r.run(&["conntrack", "-F"])?;
        flush_maps(r)?;
        log::info!(target: "lab", "site {} renumbered {} -> {new}", site.name, *cur);
        *cur = new;
        Ok(new)
    }

    fn uplink_port(&self, name: &str) -> Result<&str> {
        let node = match self.try_site(name) {
            Ok(site) => site.uplink_router.as_str(),
            Err(_) => name,
        };
        self.net_ports
            .get(node)
            .map(String::as_str)
            .ok_or_else(|| Error::Unknown { kind: "site or public host", name: name.to_owned() })
    }

    /// Cuts the access link of a site (or public host): its port on the internet bridge goes down,
    /// like a pulled cable. Mappings on the router survive.
    pub fn cut_link(&self, name: &str) -> Result<()> {
        let port = self.uplink_port(name)?;
        run_args("ip", &["-n", &self.internet().ns, "link", "set", "dev", port, "down"])?;
        Ok(())
    }

    /// Restores a link cut by [`Lab::cut_link`].
    pub fn restore_link(&self, name: &str) -> Result<()> {
        let port = self.uplink_port(name)?;
        run_args("ip", &["-n", &self.internet().ns, "link", "set", "dev", port, "up"])?;
        Ok(())
    }

    /// Sets the loss of a site's access link, per direction in percent (0 removes it).
    pub fn set_loss(&self, site: &str, up: u8, down: u8) -> Result<()> {
        let site = self.try_site(site)?;
        if up > 100 || down > 100 {
            return Err(Error::Config("loss is a percentage (0-100)".into()));
        }
        let r = self.host(&site.uplink_router);
        // Deleting a table that does not exist fails; that is the case we want anyway.
        let _ = r.output(&["nft", "delete", "table", "inet", IMPAIR_TABLE]);
        if up > 0 || down > 0 {
            apply_nft(r, &preset::loss_ruleset(up, down))?;
        }
        Ok(())
    }

    /// Counters of the delay lines (one per site that has a delay), in site order.
    pub fn delay_stats(&self) -> Vec<crate::delayline::Stats> {
        self.delay_lines.lock().unwrap_or_else(|e| e.into_inner()).iter().map(DelayLine::stats).collect()
    }

    // ----- building -----

    fn add_ns(&mut self, node: &str, kind: NodeKind, ips: &[Ipv4Addr]) -> Result<String> {
        let ns = format!("{}-{node}", self.prefix);
        run_args("ip", &["netns", "add", &ns])?;
        self.namespaces.push(ns.clone());
        self.nodes.insert(node.to_owned(), Node { name: node.to_owned(), ns: ns.clone(), kind, ips: ips.to_vec() });
        run_args("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
        let mut sysctls = vec![
            // No IPv6: no router solicitations or DAD chatter on the links, and the lab is IPv4 only.
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ];
        if matches!(kind, NodeKind::Internet | NodeKind::Router | NodeKind::Cgnat) {
            sysctls.extend([
                "net.ipv4.ip_forward=1",
                // The internet router forwards between two subnets on one bridge; redirects would
                // teach hosts a shortcut the lab does not want.
                "net.ipv4.conf.all.send_redirects=0",
                "net.ipv4.conf.default.send_redirects=0",
                // Bridged frames must not go through the IP hooks (br_netfilter may be loaded).
                "net.bridge.bridge-nf-call-iptables=0",
                "net.bridge.bridge-nf-call-arptables=0",
            ]);
        }
        let mut args = vec!["netns", "exec", &ns, "sysctl", "-q", "-e", "-w"];
        args.extend(sysctls);
        run_args("ip", &args)?;
        Ok(ns)
    }

    /// Creates veth `a_if` in namespace `a` and `b_if` in namespace `b`, both up.
    fn veth(a: &str, a_if: &str, b: &str, b_if: &str) -> Result<()> {
        // `name`/`dev` keywords everywhere: `ip` would read a bare `a` or `b` as an abbreviated keyword.
        run_args("ip", &["-n", a, "link", "add", "name", a_if, "type", "veth", "peer", "name", b_if, "netns", b])?;
        run_args("ip", &["-n", a, "link", "set", "dev", a_if, "up"])?;
        run_args("ip", &["-n", b, "link", "set", "dev", b_if, "up"])?;
        Ok(())
    }

    fn addr(ns: &str, cidr: &str, dev: &str) -> Result<()> {
        run_args("ip", &["-n", ns, "addr", "add", cidr, "dev", dev])?;
        Ok(())
    }

    fn default_route(ns: &str, via: Ipv4Addr) -> Result<()> {
        run_args("ip", &["-n", ns, "route", "add", "default", "via", &via.to_string()])?;
        Ok(())
    }

    fn build_internet(&mut self) -> Result<()> {
        let ns = self.add_ns("net", NodeKind::Internet, &[GATEWAY_203, GATEWAY_198])?;
        run_args("ip", &["-n", &ns, "link", "add", "name", "br0", "type", "bridge"])?;
        Self::addr(&ns, &format!("{GATEWAY_203}/24"), "br0")?;
        Self::addr(&ns, &format!("{GATEWAY_198}/24"), "br0")?;
        run_args("ip", &["-n", &ns, "link", "set", "dev", "br0", "up"])?;
        // The internet is a bridge, but between two real home routers there is always a router: it drops
        // what arrives with a TTL of 1 (it would reach 0), as a punching primer's does (docs/lab.md).
        apply_nft(self.host("net"), INTERNET_HOP_RULES)?;
        Ok(())
    }

    /// Connects namespace `ns` (node `node`) to the internet bridge with interface `ifname`, either
    /// directly or through a delay namespace; returns nothing, records the bridge port.
    fn attach(&mut self, node: &str, ifname: &str, delay: Option<(&str, Delay)>) -> Result<()> {
        let net = self.host("net").ns.clone();
        let ns = self.host(node).ns.clone();
        let port = format!("p{}", self.next_port);
        self.next_port += 1;
        match delay {
            None => Self::veth(&net, &port, &ns, ifname)?,
            Some((site, d)) => {
                // router:pub <-> dl:dla ==delay line== dl:dlb <-> net:pN (bridge port)
                let dl_node = format!("{site}-dl");
                let dl = self.add_ns(&dl_node, NodeKind::DelayLine, &[])?;
                Self::veth(&net, &port, &dl, "dlb")?;
                Self::veth(&dl, "dla", &ns, ifname)?;
                let imp = Impairment::delay(d.one_way).with_jitter(d.jitter);
                let line = DelayLine::start(Some(&dl), "dla", "dlb", imp.clone(), imp)
                    .map_err(|e| Error::Unsupported(format!("site {site}: delay line: {e}")))?;
                self.delay_lines.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        }
        run_args("ip", &["-n", &net, "link", "set", "dev", &port, "master", "br0"])?;
        self.net_ports.insert(node.to_owned(), port);
        Ok(())
    }

    fn build_public(&mut self, node: &str, kind: NodeKind, ips: &[Ipv4Addr]) -> Result<()> {
        let ns = self.add_ns(node, kind, ips)?;
        self.attach(node, "eth0", None)?;
        for ip in ips {
            Self::addr(&ns, &format!("{ip}/24"), "eth0")?;
        }
        Self::default_route(&ns, GATEWAY_203)?;
        Ok(())
    }

    /// A router's LAN: bridge `lan` with `lan_cidr`, and `hosts` hosts `<site>1…` with `host_ips`.
    fn build_lan(
        &mut self,
        site: &str,
        router_ns: &str,
        lan_ip: Ipv4Addr,
        prefix_len: u8,
        host_ips: &[Ipv4Addr],
    ) -> Result<Vec<String>> {
        run_args("ip", &["-n", router_ns, "link", "add", "name", "lan", "type", "bridge"])?;
        Self::addr(router_ns, &format!("{lan_ip}/{prefix_len}"), "lan")?;
        run_args("ip", &["-n", router_ns, "link", "set", "dev", "lan", "up"])?;
        let mut hosts = Vec::new();
        for (k, ip) in host_ips.iter().enumerate() {
            let name = format!("{site}{}", k + 1);
            let ns = self.add_ns(&name, NodeKind::Host, &[*ip])?;
            let port = format!("h{}", k + 1);
            Self::veth(router_ns, &port, &ns, "eth0")?;
            run_args("ip", &["-n", router_ns, "link", "set", "dev", &port, "master", "lan"])?;
            Self::addr(&ns, &format!("{ip}/{prefix_len}"), "eth0")?;
            Self::default_route(&ns, lan_ip)?;
            hosts.push(name);
        }
        Ok(hosts)
    }

    fn build_site(&mut self, i: usize, name: &str, spec: &SiteSpec) -> Result<()> {
        let n = (i + 1) as u8;
        let wan = Ipv4Addr::new(198, 51, 100, 10 + i as u8);
        let delay = spec.delay.map(|d| (name, d));
        let count = spec.host_count();
        let opts = |lan_addr| RouterOpts { lan_addr, hairpin: spec.hairpin_on(), permissive: spec.permissive };

        // Besides the names: the home router's WAN address, LAN address and LAN prefix length.
        let (router, isp, uplink, hosts, routed, (r_wan, r_lan, r_len)) = match spec.preset {
            Preset::Firewall => {
                // Hosts get routed addresses from 192.0.2.16i/28; the internet routes them via the WAN.
                let base = 16 * i as u8;
                let lan_ip = Ipv4Addr::new(192, 0, 2, base + 1);
                let router = format!("{name}-fw");
                let ns = self.add_ns(&router, NodeKind::Router, &[wan, lan_ip])?;
                self.attach(&router, "pub", delay)?;
                Self::addr(&ns, &format!("{wan}/24"), "pub")?;
                Self::default_route(&ns, GATEWAY_198)?;
                let ips: Vec<_> = (0..count).map(|k| Ipv4Addr::new(192, 0, 2, base + 2 + k as u8)).collect();
                let hosts = self.build_lan(name, &ns, lan_ip, 28, &ips)?;
                let net = self.host("net").ns.clone();
                let routed = Ipv4Addr::new(192, 0, 2, base);
                run_args("ip", &["-n", &net, "route", "add", &format!("{routed}/28"), "via", &wan.to_string()])?;
                apply_nft(self.host(&router), &preset::firewall_rules(spec.permissive))?;
                (router.clone(), None, router, hosts, Some(routed), (wan, lan_ip, 28))
            }
            Preset::DoubleNat => {
                let isp = format!("{name}-isp");
                let cg_lan = Ipv4Addr::new(100, 64, n, 1);
                let home_wan = Ipv4Addr::new(100, 64, n, 2);
                let isp_ns = self.add_ns(&isp, NodeKind::Cgnat, &[wan, cg_lan])?;
                self.attach(&isp, "pub", delay)?;
                Self::addr(&isp_ns, &format!("{wan}/24"), "pub")?;
                Self::default_route(&isp_ns, GATEWAY_198)?;
                let lan_ip = Ipv4Addr::new(192, 168, n, 1);
                let router = format!("{name}-nat");
                let ns = self.add_ns(&router, NodeKind::Router, &[home_wan, lan_ip])?;
                Self::veth(&isp_ns, "lan", &ns, "pub")?;
                Self::addr(&isp_ns, &format!("{cg_lan}/24"), "lan")?;
                Self::addr(&ns, &format!("{home_wan}/24"), "pub")?;
                Self::default_route(&ns, cg_lan)?;
                let ips: Vec<_> = (0..count).map(|k| Ipv4Addr::new(192, 168, n, 10 + k as u8)).collect();
                let hosts = self.build_lan(name, &ns, lan_ip, 24, &ips)?;
                // The carrier NAT: plain masquerade (EIM/APDF), no hairpin, drops unsolicited.
                let cg = RouterOpts { lan_addr: cg_lan, hairpin: false, permissive: spec.permissive };
                apply_nft(self.host(&isp), &preset::port_restricted_rules(&cg))?;
                apply_nft(self.host(&router), &preset::port_restricted_rules(&opts(lan_ip)))?;
                (router, Some(isp.clone()), isp, hosts, None, (home_wan, lan_ip, 24))
            }
            p => {
                let lan_ip = Ipv4Addr::new(192, 168, n, 1);
                let router = format!("{name}-nat");
                let ns = self.add_ns(&router, NodeKind::Router, &[wan, lan_ip])?;
                self.attach(&router, "pub", delay)?;
                Self::addr(&ns, &format!("{wan}/24"), "pub")?;
                Self::default_route(&ns, GATEWAY_198)?;
                let ips: Vec<_> = (0..count).map(|k| Ipv4Addr::new(192, 168, n, 10 + k as u8)).collect();
                let hosts = self.build_lan(name, &ns, lan_ip, 24, &ips)?;
                let o = opts(lan_ip);
                let rules = match p {
                    Preset::FullCone => preset::full_cone_rules(&o),
                    Preset::AddressRestricted => preset::address_restricted_rules(&o),
                    Preset::Symmetric => preset::symmetric_rules(&o),
                    Preset::PortShift => preset::port_shift_rules(&o),
                    _ => preset::port_restricted_rules(&o),
                };
                apply_nft(self.host(&router), &rules)?;
                (router.clone(), None, router, hosts, None, (wan, lan_ip, 24))
            }
        };
        let site = Site {
            name: name.to_owned(),
            spec: spec.clone(),
            router,
            isp,
            uplink_router: uplink,
            hosts,
            public_ip: Mutex::new(wan),
            routed,
            natpmp: None,
        };
        self.sites.push(site);
        if spec.loss_up > 0 || spec.loss_down > 0 {
            self.set_loss(name, spec.loss_up, spec.loss_down)?;
        }
        if spec.port_mapping {
            let router_ns = self.host(&self.sites[i].router).ns.clone();
            let cfg = PortMapConfig::new(&router_ns, "pub", r_wan, "lan", r_lan, r_len);
            let mapper = PortMapper::start(&cfg)
                .map_err(|e| Error::Unsupported(format!("site {name}: port-mapping service: {e}")))?;
            self.sites[i].natpmp = Some(mapper.natpmp_addr());
            self.port_mappers.lock().unwrap_or_else(|e| e.into_inner()).push(mapper);
        }
        Ok(())
    }

    fn teardown(&mut self) {
        // Delay lines hold sockets in lab namespaces; stop them before the namespaces go.
        drop(std::mem::take(&mut *self.delay_lines.lock().unwrap_or_else(|e| e.into_inner())));
        drop(std::mem::take(&mut *self.port_mappers.lock().unwrap_or_else(|e| e.into_inner())));
        drop(std::mem::take(&mut *self.background.lock().unwrap_or_else(|e| e.into_inner())));
        for ns in self.namespaces.iter().rev() {
            sweep::remove_namespace(ns);
        }
        // Anything else with this prefix (e.g. made by hand while debugging).
        if let Err(e) = sweep::sweep_prefix(&self.prefix) {
            log::warn!(target: "lab", "sweeping {}: {e}", self.prefix);
        }
        log::info!(target: "lab", "lab {} removed", self.prefix);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.keep {
            // Delay-line threads and miniupnpd (parent-death signal) end with this process anyway;
            // forgetting them keeps them working until then.
            std::mem::forget(std::mem::take(&mut *self.delay_lines.lock().unwrap_or_else(|e| e.into_inner())));
            std::mem::forget(std::mem::take(&mut *self.port_mappers.lock().unwrap_or_else(|e| e.into_inner())));
            return;
        }
        self.teardown();
    }
}

fn apply_nft(node: &Node, rules: &str) -> Result<()> {
    run_with_stdin("ip", &["netns", "exec", &node.ns, "nft", "-f", "-"], rules).map_err(|e| match e {
        Error::Command { cmd, status, stderr } => {
            Error::Command { cmd, status, stderr: format!("{stderr}\n--- rule set ---\n{rules}") }
        }
        e => e,
    })?;
    Ok(())
}

fn flush_maps(r: &Node) -> Result<()> {
    for map in ["mapped", "contacted"] {
        r.run(&["nft", "flush", "map", "ip", NAT_TABLE, map])?;
    }
    Ok(())
}
