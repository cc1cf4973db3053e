//! `HOST[:PORT]` parsing and name resolution with a time limit: the one way every binary turns a server name
//! into socket addresses (docs/io.md).
//!
//! IPv6 literals are accepted with or without brackets (RFC 3986 §3.2.2 puts them in brackets when a port
//! follows); the default port is STUN's (RFC 8489 §18.6). The system resolver (getaddrinfo) has no timeout
//! of its own, so it runs in a thread that is abandoned when it takes longer than the caller allows.

use crate::net::DEFAULT_STUN_PORT;
use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// What was wrong with a `HOST[:PORT]` value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("empty host in {0:?}")]
    EmptyHost(String),
    #[error("bad port {port:?} in {given:?}")]
    BadPort { given: String, port: String },
    /// Port 0 means "any port" to the kernel: nothing can be reached there.
    #[error("port 0 in {0:?}: a server cannot listen on port 0")]
    PortZero(String),
}

/// Which addresses a name may resolve to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Family {
    /// Every address, IPv4 ones first: NAT questions are mostly IPv4 questions, so a dual-stack name
    /// behaves the same as with `V4` unless the caller looks further.
    #[default]
    Any,
    V4,
    V6,
}

impl Family {
    /// The family of `ip` (for "the same family as the socket I bind").
    pub fn of(ip: IpAddr) -> Family {
        if ip.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }

    fn admits(self, addr: &SocketAddr) -> bool {
        match self {
            Family::Any => true,
            Family::V4 => addr.is_ipv4(),
            Family::V6 => addr.is_ipv6(),
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Any => "IP",
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// Why a name gave no usable address.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("cannot resolve {host:?}: {source}")]
    Failed {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot resolve {host:?}: no answer from the resolver within {:.1} s", .limit.as_secs_f64())]
    TimedOut { host: String, limit: Duration },
    #[error("{host:?} has no address")]
    NoAddress { host: String },
    #[error("{host:?} has no {family} address")]
    NoAddressOfFamily { host: String, family: Family },
}

/// Splits `HOST[:PORT]`: `name`, `name:port`, `1.2.3.4`, `1.2.3.4:port`, `::1`, `[::1]`, `[::1]:port`.
/// The port defaults to [`DEFAULT_STUN_PORT`]; port 0 is refused. The host is returned without brackets.
pub fn parse_host_port(s: &str) -> Result<(String, u16), ParseError> {
    parse_host_port_or(s, DEFAULT_STUN_PORT)
}

/// [`parse_host_port`] with another default port.
pub fn parse_host_port_or(s: &str, default_port: u16) -> Result<(String, u16), ParseError> {
    let nonzero = |port: u16| if port == 0 { Err(ParseError::PortZero(s.to_string())) } else { Ok(port) };
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Ok((sa.ip().to_string(), nonzero(sa.port())?));
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok((ip.to_string(), default_port));
    }
    if let Some(inner) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        if inner.is_empty() {
            return Err(ParseError::EmptyHost(s.to_string()));
        }
        return Ok((inner.to_string(), default_port));
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => {
            let port =
                p.parse::<u16>().map_err(|_| ParseError::BadPort { given: s.to_string(), port: p.to_string() })?;
            (h.trim_start_matches('[').trim_end_matches(']'), nonzero(port)?)
        }
        None => (s, default_port),
    };
    if host.is_empty() {
        return Err(ParseError::EmptyHost(s.to_string()));
    }
    Ok((host.to_string(), port))
}

/// The addresses of `host` (a name or an IP literal) with `port`, of `family`, in the resolver's order
/// with IPv4 first for [`Family::Any`]. Never empty on success. A literal is returned without asking the
/// resolver; a name is resolved in a thread bounded by `limit`.
pub fn resolve(host: &str, port: u16, family: Family, limit: Duration) -> Result<Vec<SocketAddr>, ResolveError> {
    let mut addrs = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => lookup(host, port, limit)?,
    };
    if addrs.is_empty() {
        return Err(ResolveError::NoAddress { host: host.to_string() });
    }
    addrs.retain(|a| family.admits(a));
    if addrs.is_empty() {
        return Err(ResolveError::NoAddressOfFamily { host: host.to_string(), family });
    }
    // Stable: keeps the resolver's preference within each family.
    addrs.sort_by_key(|a| a.is_ipv6());
    let mut unique = Vec::with_capacity(addrs.len());
    for a in addrs {
        if !unique.contains(&a) {
            unique.push(a);
        }
    }
    Ok(unique)
}

/// [`parse_host_port`] then [`resolve`], for a value given as one string.
pub fn resolve_host_port(s: &str, family: Family, limit: Duration) -> Result<Vec<SocketAddr>, HostPortError> {
    let (host, port) = parse_host_port(s)?;
    Ok(resolve(&host, port, family, limit)?)
}

/// Either step of [`resolve_host_port`].
#[derive(Debug, thiserror::Error)]
pub enum HostPortError {
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error(transparent)]
    Resolve(#[from] ResolveError),
}

fn lookup(host: &str, port: u16, limit: Duration) -> Result<Vec<SocketAddr>, ResolveError> {
    let (tx, rx) = mpsc::channel();
    let name = host.to_string();
    // The thread owns everything it touches, so abandoning it on timeout leaks only itself until
    // getaddrinfo returns.
    let spawned = thread::Builder::new().name("resolve".into()).spawn(move || {
        let _ = tx.send((name.as_str(), port).to_socket_addrs().map(Iterator::collect::<Vec<_>>));
    });
    if let Err(source) = spawned {
        return Err(ResolveError::Failed { host: host.to_string(), source });
    }
    match rx.recv_timeout(limit) {
        Ok(Ok(addrs)) => Ok(addrs),
        Ok(Err(source)) => Err(ResolveError::Failed { host: host.to_string(), source }),
        Err(_) => Err(ResolveError::TimedOut { host: host.to_string(), limit }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_secs(5);

    #[test]
    fn host_port_forms() {
        let hp = |s: &str| parse_host_port(s);
        assert_eq!(hp("stun.example.net:19302").unwrap(), ("stun.example.net".into(), 19302));
        assert_eq!(hp("example.org").unwrap(), ("example.org".into(), 3478));
        assert_eq!(hp("127.0.0.1").unwrap(), ("127.0.0.1".into(), 3478));
        assert_eq!(hp("127.0.0.1:9").unwrap(), ("127.0.0.1".into(), 9));
        assert_eq!(hp("[::1]:5000").unwrap(), ("::1".into(), 5000));
        assert_eq!(hp("::1").unwrap(), ("::1".into(), 3478));
        assert_eq!(hp("[::1]").unwrap(), ("::1".into(), 3478));
        assert_eq!(hp("2001:db8::1").unwrap(), ("2001:db8::1".into(), 3478));
        assert_eq!(hp("[host]:7").unwrap(), ("host".into(), 7));
        assert_eq!(parse_host_port_or("example.org", 5351).unwrap(), ("example.org".into(), 5351));
    }

    #[test]
    fn bad_host_port() {
        let hp = |s: &str| parse_host_port(s);
        assert_eq!(
            hp("host:notaport"),
            Err(ParseError::BadPort { given: "host:notaport".into(), port: "notaport".into() })
        );
        assert_eq!(hp("host:70000"), Err(ParseError::BadPort { given: "host:70000".into(), port: "70000".into() }));
        assert_eq!(hp(":3478"), Err(ParseError::EmptyHost(":3478".into())));
        assert_eq!(hp(""), Err(ParseError::EmptyHost("".into())));
        assert_eq!(hp("[]"), Err(ParseError::EmptyHost("[]".into())));
        // Port 0 is refused in every form, literal or name.
        for s in ["host:0", "127.0.0.1:0", "[::1]:0"] {
            assert_eq!(hp(s), Err(ParseError::PortZero(s.into())), "{s}");
        }
        assert_eq!(hp("host:x").unwrap_err().to_string(), "bad port \"x\" in \"host:x\"");
    }

    #[test]
    fn literals_resolve_without_the_resolver() {
        // A zero limit would time out any real lookup: literals never reach it.
        let z = Duration::ZERO;
        assert_eq!(resolve("127.0.0.1", 9, Family::Any, z).unwrap(), vec!["127.0.0.1:9".parse().unwrap()]);
        assert_eq!(resolve("::1", 9, Family::V6, z).unwrap(), vec!["[::1]:9".parse().unwrap()]);
        let e = resolve("::1", 9, Family::V4, z).unwrap_err();
        assert!(matches!(e, ResolveError::NoAddressOfFamily { family: Family::V4, .. }), "{e:?}");
        assert_eq!(e.to_string(), "\"::1\" has no IPv4 address");
        let all = resolve_host_port("[::1]:7", Family::Any, z).unwrap();
        assert_eq!(all, vec!["[::1]:7".parse().unwrap()]);
        assert!(matches!(resolve_host_port("x:0", Family::Any, z), Err(HostPortError::Parse(_))));
    }

    #[test]
    fn localhost_resolves_ipv4_first() {
        let addrs = resolve("localhost", 3478, Family::Any, LIMIT).unwrap();
        assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 3478), "{addrs:?}");
        let first_v6 = addrs.iter().position(SocketAddr::is_ipv6).unwrap_or(addrs.len());
        assert!(addrs[first_v6..].iter().all(SocketAddr::is_ipv6), "IPv4 first: {addrs:?}");
        let v4 = resolve("localhost", 1, Family::V4, LIMIT).unwrap();
        assert_eq!(v4, vec!["127.0.0.1:1".parse().unwrap()]);
    }

    #[test]
    fn family_of_an_address() {
        assert_eq!(Family::of("10.0.0.1".parse().unwrap()), Family::V4);
        assert_eq!(Family::of("::".parse().unwrap()), Family::V6);
        assert_eq!(Family::default(), Family::Any);
    }

    /// A name that does not resolve, in a namespace without network (nothing leaves the machine): the
    /// resolver answers with an error, which names the host. The child runs this same test binary.
    #[test]
    fn unknown_name_fails_in_an_isolated_namespace() {
        const CHILD: &str = "HOLEPUNCH_RESOLVE_CHILD";
        if std::env::var_os(CHILD).is_some() {
            let e = resolve("no-such-host.invalid", 3478, Family::Any, LIMIT).unwrap_err();
            assert!(matches!(e, ResolveError::Failed { .. } | ResolveError::NoAddress { .. }), "{e:?}");
            assert!(e.to_string().contains("\"no-such-host.invalid\""), "{e}");
            return;
        }
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        let exe = std::env::current_exe().unwrap();
        let probe = std::process::Command::new("unshare").args(["-n", "true"]).status();
        if !probe.is_ok_and(|s| s.success()) {
            assert!(!ci, "unshare -n needs root under CI");
            eprintln!("SKIP: unshare -n not permitted");
            return;
        }
        let out = std::process::Command::new("unshare")
            .arg("-n")
            .arg(exe)
            .args(["--exact", "io::resolve::tests::unknown_name_fails_in_an_isolated_namespace", "--nocapture"])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && stdout.contains("1 passed"), "{stdout}");
    }
}
