//! NAT presets in RFC 4787 terms and the nftables rule sets that give them.
//!
//! Linux conntrack NAT has no mapping table of its own: plain `masquerade` keeps the source port when it
//! is free, which *is* endpoint-independent mapping (the same internal endpoint gets the same public
//! port towards every destination), and lets in only packets of an existing conntrack entry, which is
//! address-and-port-dependent filtering. The other behaviours are built on top:
//! - endpoint-independent / address-dependent filtering: outbound UDP packets are recorded, after SNAT,
//!   in the dynamic maps `mapped` (public port → internal endpoint) and `contacted`
//!   (public port . remote address → internal endpoint); new inbound packets are DNATed through them.
//! - address-and-port-dependent mapping: `masquerade fully-random` picks a random port per conntrack
//!   entry, i.e. per destination.
//! - endpoint-independent mapping without port preservation: the mapped port is a fixed function of the
//!   source port (`sport ^ 0x0101`), so it is the same towards every destination but never the local port.
//!
//! Every router drops unsolicited packets to its own public address in its `input` hook (docs/lab.md, "Facts
//! the lab relies on"): a real home router does, and without it a peer's early punch packet leaves a
//! conntrack entry on the router that makes the router's next mapping for that pair clash).

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::str::FromStr;

use crate::error::Error;

/// A site preset, numbered as in docs/lab.md, "Presets" (the port-mapping service, preset 9, is
/// [`crate::SiteSpec::port_mapping`] on any of these).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Preset {
    /// 1. Full cone: endpoint-independent mapping and filtering, port preserving.
    FullCone,
    /// 2. Endpoint-independent mapping, address-dependent filtering ("restricted cone").
    AddressRestricted,
    /// 3. Endpoint-independent mapping, address-and-port-dependent filtering ("port-restricted cone";
    ///    plain `masquerade`).
    PortRestricted,
    /// 4. Symmetric: address-and-port-dependent mapping with random ports (`masquerade fully-random`).
    Symmetric,
    /// 5. Endpoint-independent mapping that does not preserve the port: public port = local port XOR 0x0101.
    PortShift,
    /// 6. Two hosts behind one port-restricted NAT that hairpins (a host can reach the other through
    ///    the shared public address).
    Hairpin,
    /// 6. Two hosts behind one port-restricted NAT without hairpinning.
    NoHairpin,
    /// 7. Double NAT: home router (masquerade) behind a carrier-grade NAT (masquerade) whose inside is
    ///    100.64.0.0/10.
    DoubleNat,
    /// 8. No NAT: the host has a routed public address (192.0.2.0/24) behind a stateful firewall that
    ///    lets only replies in.
    Firewall,
}

// RFC 4787 behaviour names are the library's own (`holepunch::nat`), so a preset, the lab probe and the
// diagnosis speak one vocabulary. "No translation at all" (preset 8) is `Behaviour::translated == false`.
pub use holepunch::nat::{Filtering, Mapping};

/// What a preset is meant to do, for tests that compare a verdict (ours or stunclient's) with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Behaviour {
    /// The router rewrites source addresses (false: a routed address behind a firewall, preset 8).
    pub translated: bool,
    /// Mapping behaviour; endpoint-independent when nothing is translated.
    pub mapping: Mapping,
    pub filtering: Filtering,
    /// The public port equals the local port (when nothing else holds it).
    pub port_preserving: bool,
    /// Two hosts of the site can reach each other through the public address.
    pub hairpin: bool,
}

impl Preset {
    /// All presets, in issue order.
    pub const ALL: [Preset; 9] = [
        Preset::FullCone,
        Preset::AddressRestricted,
        Preset::PortRestricted,
        Preset::Symmetric,
        Preset::PortShift,
        Preset::Hairpin,
        Preset::NoHairpin,
        Preset::DoubleNat,
        Preset::Firewall,
    ];

    /// Name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Preset::FullCone => "full-cone",
            Preset::AddressRestricted => "address-restricted",
            Preset::PortRestricted => "port-restricted",
            Preset::Symmetric => "symmetric",
            Preset::PortShift => "port-shift",
            Preset::Hairpin => "hairpin",
            Preset::NoHairpin => "no-hairpin",
            Preset::DoubleNat => "double-nat",
            Preset::Firewall => "firewall",
        }
    }

    /// Number in docs/lab.md, "Presets" (6 covers both hairpin variants).
    pub fn number(self) -> u8 {
        match self {
            Preset::FullCone => 1,
            Preset::AddressRestricted => 2,
            Preset::PortRestricted => 3,
            Preset::Symmetric => 4,
            Preset::PortShift => 5,
            Preset::Hairpin | Preset::NoHairpin => 6,
            Preset::DoubleNat => 7,
            Preset::Firewall => 8,
        }
    }

    /// Hosts a site of this preset gets unless told otherwise.
    pub fn default_hosts(self) -> usize {
        match self {
            Preset::Hairpin | Preset::NoHairpin => 2,
            _ => 1,
        }
    }

    /// The behaviour the preset is built to show.
    pub fn behaviour(self) -> Behaviour {
        use Filtering as F;
        use Mapping as M;
        let (mapping, filtering, port_preserving, hairpin) = match self {
            Preset::FullCone => (M::EndpointIndependent, F::EndpointIndependent, true, false),
            Preset::AddressRestricted => (M::EndpointIndependent, F::AddressDependent, true, false),
            Preset::PortRestricted | Preset::NoHairpin | Preset::DoubleNat => {
                (M::EndpointIndependent, F::AddressAndPortDependent, true, false)
            }
            Preset::Hairpin => (M::EndpointIndependent, F::AddressAndPortDependent, true, true),
            Preset::Symmetric => (M::AddressAndPortDependent, F::AddressAndPortDependent, false, false),
            Preset::PortShift => (M::EndpointIndependent, F::AddressAndPortDependent, false, false),
            Preset::Firewall => (M::EndpointIndependent, F::AddressAndPortDependent, true, false),
        };
        Behaviour { translated: self != Preset::Firewall, mapping, filtering, port_preserving, hairpin }
    }
}

impl std::fmt::Display for Preset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Preset {
    type Err = Error;

    /// Accepts a name (`full-cone`) or the issue number (`1`; `6` is the hairpinning variant).
    fn from_str(s: &str) -> Result<Self, Error> {
        let p = match s {
            "1" | "full-cone" => Preset::FullCone,
            "2" | "address-restricted" => Preset::AddressRestricted,
            "3" | "port-restricted" => Preset::PortRestricted,
            "4" | "symmetric" => Preset::Symmetric,
            "5" | "port-shift" => Preset::PortShift,
            "6" | "hairpin" => Preset::Hairpin,
            "no-hairpin" => Preset::NoHairpin,
            "7" | "double-nat" => Preset::DoubleNat,
            "8" | "firewall" => Preset::Firewall,
            _ => {
                return Err(Error::Config(format!(
                    "unknown preset `{s}` (1-8 or one of: {})",
                    Preset::ALL.map(Preset::name).join(", ")
                )))
            }
        };
        Ok(p)
    }
}

/// How a NAT router picks the public port (the SNAT statement on its WAN).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MappingRule {
    /// `masquerade`: keeps the source port when free → endpoint-independent, port preserving.
    Masquerade,
    /// `masquerade fully-random`: a random port per conntrack entry → address-and-port-dependent.
    FullyRandom,
    /// UDP port = source port XOR the value → endpoint-independent, never port preserving.
    PortXor(u16),
}

/// The XOR used by [`Preset::PortShift`]: maps 1024..=65535 onto itself, never to the same port or 0.
pub const PORT_SHIFT_XOR: u16 = 0x0101;

/// The inside of one NAT router's rule set.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NatRouter {
    pub mapping: MappingRule,
    pub filtering: Filtering,
    pub hairpin: bool,
    /// Leave out the `input` drop (an adversarial router that answers / tracks unsolicited packets).
    pub permissive: bool,
    /// The router's own LAN address (excluded from hairpin DNAT).
    pub lan_addr: Ipv4Addr,
    /// The LAN's /24 network address.
    pub lan_net: Ipv4Addr,
}

/// Seconds a learnt mapping stays usable without outbound traffic (RFC 4787 REQ-5 asks ≥ 2 min).
pub const MAPPING_TIMEOUT_S: u32 = 120;

fn net24(a: Ipv4Addr) -> Ipv4Addr {
    let o = a.octets();
    Ipv4Addr::new(o[0], o[1], o[2], 0)
}

/// Name of the nftables table holding a router's NAT rules.
pub const NAT_TABLE: &str = "holepunch_nat";
/// Name of the nftables table holding loss impairments.
pub const IMPAIR_TABLE: &str = "holepunch_impair";

/// Per-router options that every preset's rule set takes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RouterOpts {
    /// The router's LAN address (its LAN is the /24 around it).
    pub lan_addr: Ipv4Addr,
    /// DNAT LAN packets to the router's public address back into the LAN (hairpin / NAT loopback).
    pub hairpin: bool,
    /// Leave out the `input` drop of unsolicited packets (adversarial router).
    pub permissive: bool,
}

/// Preset 1, full cone: masquerade (EIM, port preserving) plus inbound DNAT of any new packet to a
/// mapped public port, from anyone (EIF).
pub(crate) fn full_cone_rules(o: &RouterOpts) -> String {
    nat_ruleset(&NatRouter {
        mapping: MappingRule::Masquerade,
        filtering: Filtering::EndpointIndependent,
        hairpin: o.hairpin,
        permissive: o.permissive,
        lan_addr: o.lan_addr,
        lan_net: net24(o.lan_addr),
    })
}

/// Preset 2: masquerade (EIM) plus inbound DNAT only from addresses the mapping has sent to (ADF).
pub(crate) fn address_restricted_rules(o: &RouterOpts) -> String {
    nat_ruleset(&NatRouter {
        mapping: MappingRule::Masquerade,
        filtering: Filtering::AddressDependent,
        hairpin: o.hairpin,
        permissive: o.permissive,
        lan_addr: o.lan_addr,
        lan_net: net24(o.lan_addr),
    })
}

/// Preset 3 (and 6, 7): plain masquerade. EIM by port preservation; APDF because only packets of an
/// existing conntrack entry (same remote address and port) get back in.
pub(crate) fn port_restricted_rules(o: &RouterOpts) -> String {
    nat_ruleset(&NatRouter {
        mapping: MappingRule::Masquerade,
        filtering: Filtering::AddressAndPortDependent,
        hairpin: o.hairpin,
        permissive: o.permissive,
        lan_addr: o.lan_addr,
        lan_net: net24(o.lan_addr),
    })
}

/// Preset 4: `masquerade fully-random`. Each new destination gets its own random port (APDM), and
/// conntrack filters by remote address and port (APDF).
pub(crate) fn symmetric_rules(o: &RouterOpts) -> String {
    nat_ruleset(&NatRouter {
        mapping: MappingRule::FullyRandom,
        filtering: Filtering::AddressAndPortDependent,
        hairpin: o.hairpin,
        permissive: o.permissive,
        lan_addr: o.lan_addr,
        lan_net: net24(o.lan_addr),
    })
}

/// Preset 5: UDP source port XOR [`PORT_SHIFT_XOR`]. The mapping depends only on the internal
/// endpoint (EIM) but is not the local port, a pattern a predictor can learn; filtering APDF.
pub(crate) fn port_shift_rules(o: &RouterOpts) -> String {
    nat_ruleset(&NatRouter {
        mapping: MappingRule::PortXor(PORT_SHIFT_XOR),
        filtering: Filtering::AddressAndPortDependent,
        hairpin: o.hairpin,
        permissive: o.permissive,
        lan_addr: o.lan_addr,
        lan_net: net24(o.lan_addr),
    })
}

/// Preset 8: no translation; forwarding lets in only packets of flows the inside started (a stateful
/// firewall's APDF), and the router itself takes nothing unsolicited.
pub(crate) fn firewall_rules(permissive: bool) -> String {
    let mut s = format!("table ip {NAT_TABLE} {{\n");
    s.push_str(
        "  chain forward {\n    type filter hook forward priority filter; policy accept;\n    \
         iifname \"pub\" ct state established,related accept\n    \
         iifname \"pub\" ct status dnat accept\n    iifname \"pub\" drop\n  }\n",
    );
    if !permissive {
        s.push_str(INPUT_CHAIN);
    }
    s.push_str("}\n");
    s
}

const INPUT_CHAIN: &str = "  chain input {\n    type filter hook input priority filter; policy accept;\n    \
     iifname \"pub\" ct state new drop\n  }\n";

/// The rule set of a NAT router with WAN `pub` and LAN `lan` (see the module comment for why each
/// part is there).
pub(crate) fn nat_ruleset(r: &NatRouter) -> String {
    let t = MAPPING_TIMEOUT_S;
    let mut s = String::new();
    let _ = writeln!(s, "table ip {NAT_TABLE} {{");
    // Learnt after SNAT from outbound UDP, refreshed by every outbound packet (RFC 4787 REQ-6).
    let _ = writeln!(
        s,
        "  map mapped {{\n    type inet_service : ipv4_addr . inet_service\n    flags timeout\n    timeout {t}s\n  }}"
    );
    let _ = writeln!(
        s,
        "  map contacted {{\n    type inet_service . ipv4_addr : ipv4_addr . inet_service\n    flags timeout\n    timeout {t}s\n  }}"
    );

    // Only the LAN is translated, never the router's own traffic (miniupnpd's STUN check must see
    // its real local ports; see portmap.rs).
    let lan = format!("ip saddr {}/24", r.lan_net);
    let snat = match r.mapping {
        MappingRule::Masquerade => format!("oifname \"pub\" {lan} masquerade"),
        MappingRule::FullyRandom => format!("oifname \"pub\" {lan} masquerade fully-random"),
        // TCP keeps plain masquerade: the shift is about UDP mappings, which is what is probed.
        MappingRule::PortXor(x) => format!(
            "oifname \"pub\" {lan} meta l4proto udp masquerade to :udp sport ^ {x:#06x}\n    oifname \"pub\" {lan} masquerade"
        ),
    };
    let _ = writeln!(
        s,
        "  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    {snat}"
    );
    if r.hairpin {
        // Hairpinned packets must come back through the router, so their source becomes the
        // router's public address (the address the peer used), as on a hairpinning CPE.
        let _ =
            writeln!(s, "    oifname \"lan\" ip saddr {}/24 ct status dnat snat ip to ct original ip daddr", r.lan_net);
    }
    s.push_str("  }\n");

    // Priority srcnat + 10: after masquerade, so `udp sport` is the public port.
    let _ = writeln!(
        s,
        "  chain learn {{\n    type filter hook postrouting priority srcnat + 10; policy accept;\n    \
         oifname \"pub\" ct original ip saddr {net}/24 meta l4proto udp update @mapped {{ udp sport : ct original ip saddr . ct original proto-src }}\n    \
         oifname \"pub\" ct original ip saddr {net}/24 meta l4proto udp update @contacted {{ udp sport . ip daddr : ct original ip saddr . ct original proto-src }}\n  }}",
        net = r.lan_net
    );

    let mut pre = String::new();
    match r.filtering {
        Filtering::EndpointIndependent => {
            pre.push_str("    iifname \"pub\" meta l4proto udp dnat ip to udp dport map @mapped\n")
        }
        Filtering::AddressDependent => {
            pre.push_str("    iifname \"pub\" meta l4proto udp dnat ip to udp dport . ip saddr map @contacted\n")
        }
        // Conntrack alone lets in only replies from the exact remote endpoint. A rule set is always built
        // from a preset's own filtering, which is never `Unknown`: the strictest is the safe reading.
        Filtering::AddressAndPortDependent | Filtering::Unknown => {}
    }
    if r.hairpin {
        let _ = writeln!(
            pre,
            "    iifname \"lan\" ip daddr != {} fib daddr type local meta l4proto udp dnat ip to udp dport map @mapped",
            r.lan_addr
        );
    }
    let _ =
        writeln!(s, "  chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n{pre}  }}");
    if !r.permissive {
        s.push_str(INPUT_CHAIN);
    }
    s.push_str("}\n");
    s
}

/// Loss on a router's WAN `pub`, per direction, in percent. Only IP packets are dropped (ARP stays).
pub(crate) fn loss_ruleset(up_pct: u8, down_pct: u8) -> String {
    let mut s = format!("table inet {IMPAIR_TABLE} {{\n");
    if down_pct > 0 {
        let _ = writeln!(
            s,
            "  chain down {{\n    type filter hook prerouting priority raw; policy accept;\n    \
             iifname \"pub\" numgen random mod 100 < {down_pct} drop\n  }}"
        );
    }
    if up_pct > 0 {
        let _ = writeln!(
            s,
            "  chain up {{\n    type filter hook postrouting priority 300; policy accept;\n    \
             oifname \"pub\" numgen random mod 100 < {up_pct} drop\n  }}"
        );
    }
    s.push_str("}\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_parse_by_name_and_number() {
        for p in Preset::ALL {
            assert_eq!(p.name().parse::<Preset>().unwrap(), p);
        }
        assert_eq!("4".parse::<Preset>().unwrap(), Preset::Symmetric);
        assert!("9".parse::<Preset>().is_err());
        assert!("cone".parse::<Preset>().is_err());
    }

    #[test]
    fn port_shift_never_preserves_and_stays_unprivileged() {
        for p in 1024u16..=65535 {
            let m = p ^ PORT_SHIFT_XOR;
            assert_ne!(m, p);
            assert!(m >= 1024);
        }
    }

    #[test]
    fn rulesets_have_the_input_drop_unless_permissive() {
        let o = RouterOpts { lan_addr: Ipv4Addr::new(192, 168, 1, 1), hairpin: false, permissive: false };
        let permissive = RouterOpts { permissive: true, ..o };
        let hairpin = RouterOpts { hairpin: true, ..o };
        assert!(full_cone_rules(&o).contains("ct state new drop"));
        assert!(!full_cone_rules(&permissive).contains("ct state new drop"));
        assert!(symmetric_rules(&o).contains("fully-random"));
        assert!(port_shift_rules(&o).contains("sport ^ 0x0101"));
        assert!(address_restricted_rules(&o).contains("map @contacted"));
        assert!(!port_restricted_rules(&o).contains("dnat"));
        assert!(port_restricted_rules(&hairpin).contains("iifname \"lan\""));
        assert!(firewall_rules(false).contains("established,related accept"));
    }
}
