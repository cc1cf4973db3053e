//! `io::portmap::probe` and the blocking clients (`io::portmap`) against Debian's miniupnpd (nftables build) serving NAT-PMP, PCP
//! and UPnP IGD in a router namespace; the client runs in a host namespace behind it.
//!
//! ```text
//!   <p>-i (203.0.113.1, wan0) ── pub 203.0.113.10  <p>-r  lan 192.168.1.1 ── eth0 192.168.1.10  <p>-h
//!                                 miniupnpd + Vovida stund (203.0.113.10 / 192.168.1.1, 3478/3479)
//! ```
//! miniupnpd takes a documentation-range WAN address only when STUN confirms it (docs/portmap.md, "Testing
//! against miniupnpd"), and its RFC 3489 check needs answers from a second address: Vovida's stund inside the
//! router, on the WAN and LAN addresses, gives it that without any traffic leaving the namespaces. Its nft table and chains are created
//! here because the package's helper scripts are incomplete.
//!
//! Root only. Without root or tools it prints one line and passes, unless CI=true, where that is a failure.
//! Everything (processes, namespaces, temp dir) is removed on drop, also when an assertion fails.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use holepunch::io::default_gateway;
use holepunch::io::portmap::{probe, IgdClient, NatPmpSession, PcpSession};
use holepunch::net::Retransmit;
use holepunch::portmap::{DiscoverOptions, PortMapping, PortmapError, ProbeOptions, Protocol, ServiceStatus};

const WAN: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const LAN_GW: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 1);
const HOST: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 10);
const MINIUPNPD: &str = "/usr/sbin/miniupnpd";
const VOVIDA_STUND: &str = "/usr/sbin/stund";

/// Root and tools present? Otherwise skip (one line), or fail under CI=true.
fn preconditions() -> bool {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mut missing: Vec<&str> = [MINIUPNPD, VOVIDA_STUND].into_iter().filter(|p| !Path::new(p).exists()).collect();
    for tool in ["ip", "nft"] {
        let found = Command::new(tool).arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
        if !found {
            missing.push(tool);
        }
    }
    let why = match (root, missing.is_empty()) {
        (true, true) => return true,
        (false, _) => "needs root".to_string(),
        (true, false) => format!("missing {}", missing.join(", ")),
    };
    assert!(!ci, "portmap_miniupnpd: {why} (CI=true makes this a failure)");
    println!("skipping portmap_miniupnpd: {why}");
    false
}

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// SIGTERM (miniupnpd removes its rules on it), up to 3 s to exit, then SIGKILL; reaped either way.
fn terminate(c: &mut Child) {
    if let Ok(pid) = libc::pid_t::try_from(c.id()) {
        // SAFETY: signalling our own child, not yet reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    let _ = c.wait();
}

/// Namespaces and processes of one test run; removed on drop.
struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    children: Vec<Child>,
    dir: PathBuf,
}

impl Lab {
    fn ns(&self, n: &str) -> String {
        format!("{}-{n}", self.prefix)
    }

    /// Namespaces left by an earlier run that was killed (its pid is gone); drop cannot run after SIGKILL.
    fn sweep_stale() {
        let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else { return };
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            let Some(pid) = name.strip_prefix("hppm").and_then(|r| r.split('-').next()) else { continue };
            if pid.parse::<u32>().is_ok() && !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = Command::new("ip").args(["netns", "del", name]).stderr(Stdio::null()).status();
            }
        }
    }

    fn build() -> Lab {
        Lab::sweep_stale();
        let prefix = format!("hppm{}", std::process::id());
        let dir = std::env::temp_dir().join(format!("holepunch-portmap-{}", std::process::id()));
        let mut lab = Lab { prefix, namespaces: vec![], children: vec![], dir };
        std::fs::create_dir_all(&lab.dir).unwrap();
        for n in ["i", "r", "h"] {
            let name = lab.ns(n);
            let _ = Command::new("ip").args(["netns", "del", &name]).stderr(Stdio::null()).status();
            sh(&["ip", "netns", "add", &name]);
            lab.namespaces.push(name);
        }
        let (i, r, h) = (lab.ns("i"), lab.ns("r"), lab.ns("h"));
        // Links are created inside the lab's namespaces, so names never meet the root namespace.
        sh(&["ip", "-n", &r, "link", "add", "pub", "type", "veth", "peer", "name", "wan0", "netns", &i]);
        sh(&["ip", "-n", &r, "link", "add", "lan", "type", "veth", "peer", "name", "eth0", "netns", &h]);
        sh(&["ip", "-n", &r, "addr", "add", "203.0.113.10/24", "dev", "pub"]);
        sh(&["ip", "-n", &r, "addr", "add", "192.168.1.1/24", "dev", "lan"]);
        sh(&["ip", "-n", &i, "addr", "add", "203.0.113.1/24", "dev", "wan0"]);
        sh(&["ip", "-n", &h, "addr", "add", "192.168.1.10/24", "dev", "eth0"]);
        for (ns, dev) in [(&i, "lo"), (&i, "wan0"), (&r, "lo"), (&r, "pub"), (&r, "lan"), (&h, "lo"), (&h, "eth0")] {
            sh(&["ip", "-n", ns, "link", "set", "dev", dev, "up"]);
        }
        sh(&["ip", "-n", &r, "route", "add", "default", "via", "203.0.113.1"]);
        sh(&["ip", "-n", &h, "route", "add", "default", "via", "192.168.1.1"]);
        sh(&["ip", "netns", "exec", &r, "sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        lab
    }

    fn spawn(&mut self, ns: &str, argv: &[&str], log: &Path) {
        let f = File::create(log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        self.children.push(child);
    }

    fn start_router(&mut self) {
        let r = self.ns("r");
        self.spawn(
            &r,
            &[VOVIDA_STUND, "-h", "203.0.113.10", "-a", "192.168.1.1", "-p", "3478", "-o", "3479"],
            &self.dir.join("stund.log"),
        );
        let rules = "table inet upnp_filter {\n\
             chain forward { type filter hook forward priority filter - 10; policy accept; jump miniupnpd; }\n\
             chain miniupnpd { }\n}\n\
             table inet upnp_nat {\n\
             chain prerouting { type nat hook prerouting priority dstnat - 10; policy accept; jump prerouting_miniupnpd; }\n\
             chain postrouting { type nat hook postrouting priority srcnat - 10; policy accept; jump postrouting_miniupnpd; }\n\
             chain prerouting_miniupnpd { }\n chain postrouting_miniupnpd { }\n}\n";
        let rules_path = self.dir.join("upnp.nft");
        std::fs::write(&rules_path, rules).unwrap();
        sh(&["ip", "netns", "exec", &r, "nft", "-f", rules_path.to_str().unwrap()]);
        let conf = format!(
            "ext_ifname=pub\nlistening_ip=lan\nhttp_port=0\nenable_natpmp=yes\nenable_upnp=yes\n\
             ext_perform_stun=yes\next_stun_host=203.0.113.10\next_stun_port=3478\n\
             upnp_table_name=upnp_filter\nupnp_nat_table_name=upnp_nat\nupnp_forward_chain=miniupnpd\n\
             upnp_nat_chain=prerouting_miniupnpd\nupnp_nat_postrouting_chain=postrouting_miniupnpd\n\
             lease_file={}/leases\nmin_lifetime=120\nmax_lifetime=86400\nsecure_mode=yes\nsystem_uptime=no\n\
             uuid=3f0c1b2a-0000-4000-8000-{:012x}\n\
             allow 1024-65535 192.168.1.0/24 1024-65535\ndeny 0-65535 0.0.0.0/0 0-65535\n",
            self.dir.display(),
            std::process::id()
        );
        let conf_path = self.dir.join("miniupnpd.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let pid_path = self.dir.join("miniupnpd.pid");
        self.spawn(
            &r,
            &[MINIUPNPD, "-d", "-f", conf_path.to_str().unwrap(), "-P", pid_path.to_str().unwrap()],
            &self.dir.join("miniupnpd.log"),
        );
        // Ready when STUN confirmed the WAN address and the NAT-PMP/PCP socket is open.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let log = self.miniupnpd_log();
            if log.contains("Port forwarding is now enabled") && log.contains("Listening for NAT-PMP/PCP traffic") {
                return;
            }
            if let Some(c) = self.children.last_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!("miniupnpd exited ({status}):\n{log}");
                }
            }
            assert!(Instant::now() < deadline, "miniupnpd not ready in 20 s:\n{log}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stop miniupnpd (the last process started) and wait for it.
    fn stop_miniupnpd(&mut self) {
        if let Some(mut c) = self.children.pop() {
            terminate(&mut c);
        }
    }

    fn miniupnpd_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("miniupnpd.log")).unwrap_or_default()
    }

    /// miniupnpd's DNAT rules, one line each.
    fn dnat_rules(&self) -> Vec<String> {
        let out = sh(&[
            "ip",
            "netns",
            "exec",
            &self.ns("r"),
            "nft",
            "list",
            "chain",
            "inet",
            "upnp_nat",
            "prerouting_miniupnpd",
        ]);
        out.lines().filter(|l| l.contains("dnat")).map(|l| l.trim().to_string()).collect()
    }

    /// Run `f` on a thread inside namespace `ns` (sockets it opens live there).
    fn in_ns<T: Send>(&self, ns: &str, f: impl FnOnce() -> T + Send) -> T {
        let file = File::open(format!("/run/netns/{ns}")).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: setns on a valid descriptor; affects only this scoped thread.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // miniupnpd last started, stopped first: SIGTERM lets it remove its rules; SIGKILL if it lingers.
        for c in self.children.iter_mut().rev() {
            terminate(c);
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).stderr(Stdio::null()).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn probe_against_miniupnpd() {
    if !preconditions() {
        return;
    }
    let mut lab = Lab::build();
    lab.start_router();
    let host = lab.ns("h");

    // Gateway discovery sees the host namespace's table from a thread that entered it.
    let route = lab.in_ns(&host, || default_gateway().unwrap());
    assert_eq!((route.gateway, route.interface.as_str()), (LAN_GW, "eth0"));

    let t = Instant::now();
    let report = lab.in_ns(&host, || probe(IpAddr::V4(route.gateway), 6666, &ProbeOptions::default()));
    let took = t.elapsed();
    println!("{report}\nprobe took {} ms", took.as_millis());
    assert_eq!(report.local_address, Some(IpAddr::V4(HOST)));
    for (name, svc) in [("NAT-PMP", &report.natpmp), ("PCP", &report.pcp), ("UPnP", &report.upnp)] {
        assert_eq!(svc.status, ServiceStatus::Answered, "{name}: {svc}");
        assert_eq!(svc.external_address, Some(IpAddr::V4(WAN)), "{name}: {svc}");
        assert_eq!(svc.error, None, "{name}");
        assert_eq!(svc.mapping_error, None, "{name}");
        let m = svc.test_mapping.as_ref().unwrap_or_else(|| panic!("{name}: no test mapping"));
        assert_eq!((m.internal_port, m.external_port), (6666, 6666), "{name}");
        assert!(m.deleted && m.delete_error.is_none(), "{name}: {svc}");
    }
    assert_eq!(report.upnp.test_mapping.as_ref().and_then(|m| m.verified), Some(true));
    assert!(report.upnp.detail.as_deref().unwrap_or("").contains("WANIPConnection"), "{:?}", report.upnp.detail);
    assert!(report.mappings_left_behind().is_empty());
    assert!(took < Duration::from_secs(10), "probe took {took:?}");
    // Nothing left in the router, and miniupnpd saw each mapping come and go.
    assert_eq!(lab.dnat_rules(), Vec::<String>::new());
    let log = lab.miniupnpd_log();
    for needle in [
        "NAT-PMP port mapping request : 6666->192.168.1.10:6666 udp lifetime=120",
        "NAT-PMP UDP port 6666 mapping removed",
    ] {
        assert!(log.contains(needle), "miniupnpd log lacks {needle:?}:\n{log}");
    }

    // Each protocol on its own: the mapping shows up as a DNAT rule, and is gone after the delete.
    let want = "192.168.1.10:6666";
    let natpmp_rules = lab.in_ns(&host, || {
        let mut s = NatPmpSession::new(LAN_GW, Retransmit::diagnostic()).unwrap();
        let m = s.map(Protocol::Udp, 6666, 0, 300).unwrap();
        assert_eq!((m.external_port, m.lifetime), (6666, 300));
        let during = lab.dnat_rules();
        s.delete(Protocol::Udp, 6666).unwrap();
        (during, lab.dnat_rules())
    });
    assert!(natpmp_rules.0.iter().any(|r| r.contains(want)), "NAT-PMP: {:?}", natpmp_rules.0);
    assert!(natpmp_rules.1.is_empty(), "NAT-PMP left {:?}", natpmp_rules.1);

    let pcp_rules = lab.in_ns(&host, || {
        let mut s = PcpSession::new(IpAddr::V4(LAN_GW), Retransmit::diagnostic()).unwrap();
        s.announce().unwrap();
        let m = s.map(Protocol::Udp, 6667, None, 300).unwrap();
        assert_eq!(m.external, (WAN, 6667).into());
        let during = lab.dnat_rules();
        s.delete(&m).unwrap();
        (during, lab.dnat_rules())
    });
    assert!(pcp_rules.0.iter().any(|r| r.contains("192.168.1.10:6667")), "PCP: {:?}", pcp_rules.0);
    assert!(pcp_rules.1.is_empty(), "PCP left {:?}", pcp_rules.1);

    let upnp_rules = lab.in_ns(&host, || {
        let igd = IgdClient::discover(&DiscoverOptions {
            gateway: Some(IpAddr::V4(LAN_GW)),
            local_ip: Some(HOST),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(igd.external_ip().unwrap(), IpAddr::V4(WAN));
        let m = PortMapping {
            protocol: Protocol::Udp,
            external_port: 40000,
            internal_client: IpAddr::V4(HOST),
            internal_port: 6668,
            description: "holepunch test".into(),
            lease_duration: 300,
        };
        igd.add_port_mapping(&m).unwrap();
        let entry = igd.get_port_mapping(Protocol::Udp, 40000).unwrap();
        assert_eq!((entry.internal_port, entry.internal_client.as_str()), (6668, "192.168.1.10"));
        let during = lab.dnat_rules();
        igd.delete_port_mapping(Protocol::Udp, 40000).unwrap();
        (during, lab.dnat_rules())
    });
    assert!(upnp_rules.0.iter().any(|r| r.contains("192.168.1.10:6668")), "UPnP: {:?}", upnp_rules.0);
    assert!(upnp_rules.1.is_empty(), "UPnP left {:?}", upnp_rules.1);

    // The same router without a port-mapping service: every protocol says "no answer" within the bound,
    // NAT-PMP and PCP at once (ICMP port unreachable), UPnP after its search window; nothing is mapped.
    lab.stop_miniupnpd();
    let t = Instant::now();
    let report = lab.in_ns(&host, || probe(IpAddr::V4(LAN_GW), 6666, &ProbeOptions::default()));
    let took = t.elapsed();
    println!("{report}\nprobe without a service took {} ms", took.as_millis());
    for (name, svc) in [("NAT-PMP", &report.natpmp), ("PCP", &report.pcp), ("UPnP", &report.upnp)] {
        assert_eq!(svc.status, ServiceStatus::NoAnswer, "{name}: {svc}");
        assert!(svc.error.is_some() && svc.test_mapping.is_none() && svc.external_address.is_none(), "{name}: {svc}");
    }
    assert!(matches!(report.natpmp.error, Some(PortmapError::Refused { .. })), "{:?}", report.natpmp.error);
    assert!(matches!(report.upnp.error, Some(PortmapError::UpnpNotFound { .. })), "{:?}", report.upnp.error);
    let bound = ProbeOptions::default().upnp_wait + Duration::from_secs(2);
    assert!(took < bound, "probe took {took:?}");
}
