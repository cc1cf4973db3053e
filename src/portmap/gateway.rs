//! Default IPv4 gateway from the text of the Linux routing table (`/proc/net/route`); the file is read by the
//! I/O layer (`io::default_gateway`).
//!
//! The kernel prints each address as the `%08X` of its network-order 32-bit value read as a native integer,
//! so the bytes come back with `to_ne_bytes`.

use std::net::Ipv4Addr;

use super::PortmapError;

const RTF_UP: u32 = 0x0001;
const RTF_GATEWAY: u32 = 0x0002;

/// A default route found in the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultRoute {
    pub interface: String,
    pub gateway: Ipv4Addr,
    pub metric: u32,
}

/// Parse the text of `/proc/net/route` and return the usable default route with the lowest metric.
/// `Ok(None)` when there is none; an error when the text is not a route table.
pub fn parse_proc_net_route(text: &str) -> Result<Option<DefaultRoute>, PortmapError> {
    let mut lines = text.lines();
    let header = lines.next().ok_or_else(|| PortmapError::Gateway("empty route table".into()))?;
    let cols: Vec<&str> = header.split_whitespace().collect();
    let col = |name: &str| {
        cols.iter()
            .position(|c| *c == name)
            .ok_or_else(|| PortmapError::Gateway(format!("route table has no {name} column")))
    };
    let (i_if, i_dst, i_gw, i_flags, i_metric, i_mask) =
        (col("Iface")?, col("Destination")?, col("Gateway")?, col("Flags")?, col("Metric")?, col("Mask")?);
    let mut best: Option<DefaultRoute> = None;
    for (n, line) in lines.enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        let get =
            |i: usize| f.get(i).copied().ok_or_else(|| PortmapError::Gateway(format!("route line {} is short", n + 2)));
        let hex = |i: usize| -> Result<u32, PortmapError> {
            let s = get(i)?;
            u32::from_str_radix(s, 16)
                .map_err(|_| PortmapError::Gateway(format!("route line {}: bad hex {s:?}", n + 2)))
        };
        let (dst, gw, flags, mask) = (hex(i_dst)?, hex(i_gw)?, hex(i_flags)?, hex(i_mask)?);
        let metric: u32 =
            get(i_metric)?.parse().map_err(|_| PortmapError::Gateway(format!("route line {}: bad metric", n + 2)))?;
        if dst != 0 || mask != 0 || flags & (RTF_UP | RTF_GATEWAY) != (RTF_UP | RTF_GATEWAY) || gw == 0 {
            continue;
        }
        let route =
            DefaultRoute { interface: get(i_if)?.to_string(), gateway: Ipv4Addr::from(gw.to_ne_bytes()), metric };
        if best.as_ref().is_none_or(|b| route.metric < b.metric) {
            best = Some(route);
        }
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(ip: Ipv4Addr) -> String {
        format!("{:08X}", u32::from_ne_bytes(ip.octets()))
    }

    fn table(rows: &[(&str, Ipv4Addr, Ipv4Addr, u32, u32, Ipv4Addr)]) -> String {
        let mut s =
            String::from("Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n");
        for (ifc, dst, gw, flags, metric, mask) in rows {
            s += &format!("{ifc}\t{}\t{}\t{flags:04X}\t0\t0\t{metric}\t{}\t0\t0\t0\n", hex(*dst), hex(*gw), hex(*mask));
        }
        s
    }

    const Z: Ipv4Addr = Ipv4Addr::UNSPECIFIED;

    #[test]
    fn picks_lowest_metric_default() {
        let t = table(&[
            ("eth0", Ipv4Addr::new(192, 168, 1, 0), Z, 1, 0, Ipv4Addr::new(255, 255, 255, 0)),
            ("wlan0", Z, Ipv4Addr::new(10, 0, 0, 1), 3, 600, Z),
            ("eth0", Z, Ipv4Addr::new(192, 168, 1, 1), 3, 100, Z),
            // Down route (no RTF_UP) is skipped even with a better metric.
            ("eth1", Z, Ipv4Addr::new(172, 16, 0, 1), 2, 1, Z),
        ]);
        let r = parse_proc_net_route(&t).unwrap().unwrap();
        assert_eq!(r, DefaultRoute { interface: "eth0".into(), gateway: Ipv4Addr::new(192, 168, 1, 1), metric: 100 });
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn real_kernel_text() {
        let t = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                 eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                 eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(parse_proc_net_route(t).unwrap().unwrap().gateway, Ipv4Addr::new(192, 0, 2, 1));
    }

    #[test]
    fn no_default_and_malformed() {
        let t = table(&[("eth0", Ipv4Addr::new(10, 0, 0, 0), Z, 1, 0, Ipv4Addr::new(255, 0, 0, 0))]);
        assert_eq!(parse_proc_net_route(&t).unwrap(), None);
        assert!(parse_proc_net_route("").is_err());
        assert!(parse_proc_net_route("garbage header\n").is_err());
        let bad = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\neth0\t00000000\tZZ\t0003\t0\t0\t0\t00000000\n";
        assert!(parse_proc_net_route(bad).is_err());
        let short = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\neth0\t00000000\n";
        assert!(parse_proc_net_route(short).is_err());
    }
}
