//! UPnP Internet Gateway Device client: SSDP discovery, device description, and the WANIPConnection actions
//! GetExternalIPAddress, AddPortMapping, GetSpecificPortMappingEntry, DeletePortMapping (UPnP IGD:1/IGD:2,
//! WANIPConnection:1/:2 service specs), over SOAP 1.1 on HTTP/1.1.
//!
//! Everything here is sans-IO: [`ssdp::Search`] finds devices, [`Candidates`] decides which answers to follow,
//! [`Igd::description_request`] / [`Igd::from_description`] build and read the description fetch, and
//! [`Igd::request`] / [`Action::parse_reply`] build and read each SOAP exchange. The blocking driver that
//! carries them over UDP and TCP is `io::portmap::IgdClient`.
//!
//! Trust: SSDP answers are unauthenticated LAN datagrams. The description must come from the address that
//! answered, and the control URL must point to the same host, so a forged answer cannot steer the probe into
//! connecting somewhere else; when a gateway is given, only its answers are used.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::http;
pub use super::http::Url;
use super::ssdp::{self, SearchConfig};
use super::xml;
use super::{PortmapError, Protocol};

fn perr<T>(msg: impl Into<String>) -> Result<T, PortmapError> {
    Err(PortmapError::UpnpProtocol(msg.into()))
}

/// A port-mapping service found in a device description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgdService {
    /// e.g. `urn:schemas-upnp-org:service:WANIPConnection:1`.
    pub service_type: String,
    pub control_url: Url,
}

fn service_rank(st: &str) -> Option<u8> {
    // Newer WANIPConnection first; PPP last (DSL routers).
    if let Some(v) = st.strip_prefix("urn:schemas-upnp-org:service:WANIPConnection:") {
        return v.parse::<u8>().ok().filter(|v| *v >= 1).map(|v| 100u8.saturating_sub(v));
    }
    if let Some(v) = st.strip_prefix("urn:schemas-upnp-org:service:WANPPPConnection:") {
        return v.parse::<u8>().ok().filter(|v| *v >= 1).map(|_| 200);
    }
    None
}

/// Find the WAN connection services in a device description fetched from `location`, best first.
pub(crate) fn find_wan_services(description: &str, location: &Url) -> Result<Vec<IgdService>, PortmapError> {
    let root = xml::parse(description).map_err(|e| PortmapError::UpnpProtocol(format!("device description: {e}")))?;
    if root.name != "root" {
        return perr(format!("device description root is <{}>, not <root>", root.name));
    }
    // UDA 1.0 URLBase; UDA 1.1 dropped it in favour of the description's own URL.
    let base = match root.child_text("URLBase") {
        Some(b) if !b.is_empty() => Url::parse(b)?,
        _ => location.clone(),
    };
    let mut found = Vec::new();
    for svc in root.descendants("service") {
        let (Some(st), Some(ctl)) = (svc.child_text("serviceType"), svc.child_text("controlURL")) else { continue };
        let Some(rank) = service_rank(st) else { continue };
        let control_url = base.join(ctl)?;
        found.push((rank, IgdService { service_type: st.to_string(), control_url }));
    }
    found.sort_by_key(|(r, _)| *r);
    Ok(found.into_iter().map(|(_, s)| s).collect())
}

/// SOAP 1.1 request body for `action` of `service_type`.
pub(crate) fn soap_envelope(service_type: &str, action: &str, args: &[(&str, String)]) -> String {
    let mut body = String::from(
        "<?xml version=\"1.0\"?>\r\n<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" \
         s:encodingStyle=\"http://schemas.xmlsoap.org/soap/encoding/\"><s:Body>",
    );
    body += &format!("<u:{action} xmlns:u=\"{}\">", xml::escape(service_type));
    for (k, v) in args {
        body += &format!("<{k}>{}</{k}>", xml::escape(v));
    }
    body += &format!("</u:{action}></s:Body></s:Envelope>\r\n");
    body
}

/// Output arguments of a SOAP reply, or the UPnP error it carries.
pub(crate) fn parse_soap_response(
    action: &'static str,
    status: u16,
    body: &str,
) -> Result<Vec<(String, String)>, PortmapError> {
    let parsed = xml::parse(body);
    if status == 200 {
        let root = parsed.map_err(|e| PortmapError::UpnpProtocol(format!("{action} reply: {e}")))?;
        let want = format!("{action}Response");
        let Some(resp) = root.child("Body").and_then(|b| b.child(&want)) else {
            return perr(format!("{action} reply has no <{want}> in its SOAP body"));
        };
        return Ok(resp.children.iter().map(|c| (c.name.clone(), c.text.trim().to_string())).collect());
    }
    // UPnP errors come as HTTP 500 with a SOAP fault carrying <UPnPError> (UDA 1.1 §3.2.2).
    if let Ok(root) = parsed {
        if let Some(err) = root.find("UPnPError") {
            let code = err.child_text("errorCode").and_then(|c| c.parse::<u16>().ok());
            if let Some(code) = code {
                let description = err.child_text("errorDescription").unwrap_or("").to_string();
                return Err(PortmapError::UpnpFault { action, code, description });
            }
        }
    }
    Err(PortmapError::Http(format!("{action}: HTTP status {status}")))
}

fn arg<'a>(args: &'a [(String, String)], name: &str) -> Option<&'a str> {
    args.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn protocol_str(p: Protocol) -> &'static str {
    match p {
        Protocol::Udp => "UDP",
        Protocol::Tcp => "TCP",
    }
}

/// A port mapping to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    pub protocol: Protocol,
    pub external_port: u16,
    pub internal_client: IpAddr,
    pub internal_port: u16,
    pub description: String,
    /// Seconds; 0 asks for a permanent mapping (IGD:1 devices may only support that, error 725).
    pub lease_duration: u32,
}

/// A mapping as the device reports it (GetSpecificPortMappingEntry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMappingEntry {
    pub internal_port: u16,
    pub internal_client: String,
    pub enabled: bool,
    pub description: String,
    pub lease_duration: u32,
}

/// How to look for an IGD.
#[derive(Debug, Clone)]
pub struct DiscoverOptions {
    /// Only this host's answers are used (normally the default gateway).
    pub gateway: Option<IpAddr>,
    /// Local IPv4 address to search from (its interface carries the multicast); unspecified: the OS picks.
    pub local_ip: Option<Ipv4Addr>,
    pub search: SearchConfig,
    /// Bound on each HTTP exchange.
    pub http_timeout: Duration,
}

impl Default for DiscoverOptions {
    fn default() -> Self {
        DiscoverOptions {
            gateway: None,
            local_ip: None,
            search: SearchConfig::default(),
            http_timeout: Duration::from_secs(3),
        }
    }
}

/// A discovered Internet Gateway Device and its WAN connection service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Igd {
    /// Where the device description was fetched.
    pub location: Url,
    pub service: IgdService,
    /// SSDP SERVER header, when sent.
    pub server: Option<String>,
}

impl Igd {
    /// The GET request for a device description (UDA 1.1 §2.1).
    pub fn description_request(location: &Url) -> Vec<u8> {
        http::build_request("GET", location, &[], &[])
    }

    /// The device behind a description fetched from `location` (HTTP `status` and `body` of the reply to
    /// [`Igd::description_request`]): its best WAN connection service on the description's own host.
    /// `server` is the SSDP SERVER header, kept for reports.
    pub fn from_description(
        location: Url,
        status: u16,
        body: &[u8],
        server: Option<String>,
    ) -> Result<Igd, PortmapError> {
        if status != 200 {
            return Err(PortmapError::Http(format!("GET {}: status {status}", location.path)));
        }
        let text = std::str::from_utf8(body).map_err(|_| PortmapError::Http("body is not UTF-8".into()))?;
        let services = find_wan_services(text, &location)?;
        let Some(service) = services.into_iter().find(|s| s.control_url.host == location.host) else {
            return perr(format!(
                "{} offers no WANIPConnection/WANPPPConnection service on its own host",
                location.authority()
            ));
        };
        log::debug!(
            "upnp: {} at {}{}",
            service.service_type,
            service.control_url.authority(),
            service.control_url.path
        );
        Ok(Igd { location, service, server })
    }

    /// Where SOAP requests go (the control URL's host and port).
    pub fn control_addr(&self) -> SocketAddr {
        self.service.control_url.socket_addr()
    }

    /// The HTTP request (SOAP 1.1 POST to the control URL, UDA 1.1 §3.2.1) that performs `action`.
    pub fn request(&self, action: &Action) -> Result<Vec<u8>, PortmapError> {
        let args = action.args()?;
        let body = soap_envelope(&self.service.service_type, action.name(), &args);
        let soap_action = format!("\"{}#{}\"", self.service.service_type, action.name());
        let headers = [("Content-Type", "text/xml; charset=\"utf-8\""), ("SOAPAction", soap_action.as_str())];
        Ok(http::build_request("POST", &self.service.control_url, &headers, body.as_bytes()))
    }
}

/// The WANIPConnection actions this client performs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    GetExternalIpAddress,
    /// AddPortMapping (any remote host).
    AddPortMapping(PortMapping),
    GetSpecificPortMappingEntry {
        protocol: Protocol,
        external_port: u16,
    },
    DeletePortMapping {
        protocol: Protocol,
        external_port: u16,
    },
}

/// What an action's successful reply says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionReply {
    ExternalIp(IpAddr),
    Entry(PortMappingEntry),
    /// AddPortMapping and DeletePortMapping carry nothing back.
    Done,
}

impl Action {
    /// The SOAP action name.
    pub fn name(&self) -> &'static str {
        match self {
            Action::GetExternalIpAddress => "GetExternalIPAddress",
            Action::AddPortMapping(_) => "AddPortMapping",
            Action::GetSpecificPortMappingEntry { .. } => "GetSpecificPortMappingEntry",
            Action::DeletePortMapping { .. } => "DeletePortMapping",
        }
    }

    fn args(&self) -> Result<Vec<(&'static str, String)>, PortmapError> {
        let key = |protocol: Protocol, external_port: u16| {
            vec![
                ("NewRemoteHost", String::new()),
                ("NewExternalPort", external_port.to_string()),
                ("NewProtocol", protocol_str(protocol).to_string()),
            ]
        };
        Ok(match self {
            Action::GetExternalIpAddress => vec![],
            Action::AddPortMapping(m) => {
                if m.external_port == 0 || m.internal_port == 0 {
                    return Err(PortmapError::InvalidRequest("port 0"));
                }
                let mut args = key(m.protocol, m.external_port);
                args.extend([
                    ("NewInternalPort", m.internal_port.to_string()),
                    ("NewInternalClient", m.internal_client.to_string()),
                    ("NewEnabled", "1".to_string()),
                    ("NewPortMappingDescription", m.description.clone()),
                    ("NewLeaseDuration", m.lease_duration.to_string()),
                ]);
                args
            }
            Action::GetSpecificPortMappingEntry { protocol, external_port }
            | Action::DeletePortMapping { protocol, external_port } => key(*protocol, *external_port),
        })
    }

    /// Read the HTTP reply (`status`, `body`) to this action: its result, or the UPnP fault it carries.
    pub fn parse_reply(&self, status: u16, body: &[u8]) -> Result<ActionReply, PortmapError> {
        let out = parse_soap_response(self.name(), status, std::str::from_utf8(body).unwrap_or(""))?;
        match self {
            Action::GetExternalIpAddress => {
                let text = arg(&out, "NewExternalIPAddress").unwrap_or("");
                if text.is_empty() {
                    return perr("the IGD reports no external address (WAN not connected)");
                }
                let ip =
                    text.parse().map_err(|_| PortmapError::UpnpProtocol(format!("bad external address {:?}", text)))?;
                Ok(ActionReply::ExternalIp(ip))
            }
            Action::GetSpecificPortMappingEntry { .. } => {
                let num = |name: &str| -> Result<u32, PortmapError> {
                    arg(&out, name).and_then(|v| v.parse().ok()).ok_or_else(|| {
                        PortmapError::UpnpProtocol(format!("GetSpecificPortMappingEntry: bad or missing {name}"))
                    })
                };
                Ok(ActionReply::Entry(PortMappingEntry {
                    internal_port: u16::try_from(num("NewInternalPort")?)
                        .map_err(|_| PortmapError::UpnpProtocol("internal port out of range".into()))?,
                    internal_client: arg(&out, "NewInternalClient").unwrap_or("").to_string(),
                    enabled: matches!(arg(&out, "NewEnabled"), Some("1") | Some("true") | Some("yes")),
                    description: arg(&out, "NewPortMappingDescription").unwrap_or("").to_string(),
                    lease_duration: num("NewLeaseDuration")?,
                }))
            }
            Action::AddPortMapping(_) | Action::DeletePortMapping { .. } => Ok(ActionReply::Done),
        }
    }
}

/// Which SSDP answers are worth a device description (the trust rule in the module docs): only the gateway's
/// when one is given, only port-mapping services, each LOCATION once, and only a LOCATION on the host that
/// answered.
#[derive(Debug, Clone, Default)]
pub struct Candidates {
    gateway: Option<IpAddr>,
    tried: Vec<String>,
    others: usize,
}

impl Candidates {
    pub fn new(gateway: Option<IpAddr>) -> Self {
        Candidates { gateway, tried: Vec::new(), others: 0 }
    }

    /// `Ok(Some(location))`: fetch the description there. `Ok(None)`: skip this answer. `Err`: the answer is
    /// unusable (a LOCATION elsewhere than the answering host, or not a URL we follow).
    pub fn consider(&mut self, from: SocketAddr, response: &ssdp::SearchResponse) -> Result<Option<Url>, PortmapError> {
        if self.gateway.is_some_and(|g| g != from.ip()) {
            self.others += 1;
            return Ok(None);
        }
        if service_rank(&response.st).is_none() || self.tried.contains(&response.location) {
            return Ok(None);
        }
        self.tried.push(response.location.clone());
        let location = Url::parse(&response.location)?;
        if location.host != from.ip() {
            return perr(format!("LOCATION {} is not on the answering host {}", response.location, from.ip()));
        }
        Ok(Some(location))
    }

    /// The error of a search that found nothing usable after `waited`.
    pub fn not_found(&self, waited: Duration) -> PortmapError {
        PortmapError::UpnpNotFound { waited, others: self.others }
    }
}

/// UPnP error codes the probe reacts to (IGD WANIPConnection:1 §2.4.16).
pub const ERR_CONFLICT_IN_MAPPING_ENTRY: u16 = 718;
pub const ERR_ONLY_PERMANENT_LEASES_SUPPORTED: u16 = 725;
pub const ERR_NO_SUCH_ENTRY_IN_ARRAY: u16 = 714;

/// Is this SOAP fault `code`?
pub fn is_fault(e: &PortmapError, code: u16) -> bool {
    matches!(e, PortmapError::UpnpFault { code: c, .. } if *c == code)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DESC: &str = r#"<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0" configId="1337">
<specVersion><major>1</major><minor>1</minor></specVersion>
<device><deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:1</deviceType>
<serviceList><service><serviceType>urn:schemas-upnp-org:service:Layer3Forwarding:1</serviceType>
<serviceId>urn:upnp-org:serviceId:L3Forwarding1</serviceId><controlURL>/ctl/L3F</controlURL></service></serviceList>
<deviceList><device><deviceType>urn:schemas-upnp-org:device:WANDevice:1</deviceType>
<deviceList><device><deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:1</deviceType>
<serviceList><service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType>
<serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId><controlURL>/ctl/IPConn</controlURL>
<eventSubURL>/evt/IPConn</eventSubURL><SCPDURL>/WANIPCn.xml</SCPDURL></service></serviceList>
</device></deviceList></device></deviceList></device></root>"#;

    #[test]
    fn finds_control_url_in_miniupnpd_description() {
        let loc = Url::parse("http://10.0.0.1:5000/rootDesc.xml").unwrap();
        let s = find_wan_services(DESC, &loc).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].service_type, ssdp::WAN_IP_CONNECTION_1);
        assert_eq!(s[0].control_url, Url::parse("http://10.0.0.1:5000/ctl/IPConn").unwrap());
    }

    #[test]
    fn prefers_v2_and_honours_urlbase() {
        let d = "<root><URLBase>http://10.0.0.1:6000/base/</URLBase><device><serviceList>\
                 <service><serviceType>urn:schemas-upnp-org:service:WANPPPConnection:1</serviceType><controlURL>ppp</controlURL></service>\
                 <service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType><controlURL>ip1</controlURL></service>\
                 <service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:2</serviceType><controlURL>ip2</controlURL></service>\
                 </serviceList></device></root>";
        let loc = Url::parse("http://10.0.0.1:5000/rootDesc.xml").unwrap();
        let s = find_wan_services(d, &loc).unwrap();
        let paths: Vec<&str> = s.iter().map(|s| s.control_url.path.as_str()).collect();
        assert_eq!(paths, ["/base/ip2", "/base/ip1", "/base/ppp"]);
        assert_eq!(s[0].control_url.port, 6000);
    }

    #[test]
    fn malformed_descriptions() {
        let loc = Url::parse("http://10.0.0.1:5000/rootDesc.xml").unwrap();
        assert!(find_wan_services("", &loc).is_err());
        assert!(find_wan_services("<html></html>", &loc).is_err());
        assert!(find_wan_services("<root><URLBase>ftp://x</URLBase></root>", &loc).is_err());
        assert_eq!(find_wan_services("<root/>", &loc).unwrap(), vec![]);
        for (i, _) in DESC.char_indices() {
            let _ = find_wan_services(&DESC[..i], &loc);
        }
    }

    #[test]
    fn soap_request_body() {
        let b = soap_envelope(
            ssdp::WAN_IP_CONNECTION_1,
            "DeletePortMapping",
            &[("NewRemoteHost", String::new()), ("NewExternalPort", "6666".into()), ("NewProtocol", "UDP".into())],
        );
        assert!(b.contains(
            "<s:Body><u:DeletePortMapping xmlns:u=\"urn:schemas-upnp-org:service:WANIPConnection:1\">\
             <NewRemoteHost></NewRemoteHost><NewExternalPort>6666</NewExternalPort><NewProtocol>UDP</NewProtocol>\
             </u:DeletePortMapping></s:Body>"
        ));
        let b = soap_envelope("x", "A", &[("D", "a<b&c".into())]);
        assert!(b.contains("<D>a&lt;b&amp;c</D>"));
        assert!(xml::parse(&b).is_ok());
    }

    #[test]
    fn soap_replies() {
        let ok = "<?xml version=\"1.0\"?>\r\n<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" \
                  s:encodingStyle=\"http://schemas.xmlsoap.org/soap/encoding/\"><s:Body>\
                  <u:GetExternalIPAddressResponse xmlns:u=\"urn:schemas-upnp-org:service:WANIPConnection:1\">\
                  <NewExternalIPAddress>203.0.113.1</NewExternalIPAddress></u:GetExternalIPAddressResponse></s:Body></s:Envelope>\r\n";
        let out = parse_soap_response("GetExternalIPAddress", 200, ok).unwrap();
        assert_eq!(out, vec![("NewExternalIPAddress".to_string(), "203.0.113.1".to_string())]);
        assert!(parse_soap_response("AddPortMapping", 200, ok).is_err());
        let fault = "<?xml version=\"1.0\"?>\r\n<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" \
                     s:encodingStyle=\"http://schemas.xmlsoap.org/soap/encoding/\"><s:Body><s:Fault>\
                     <faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail>\
                     <UPnPError xmlns=\"urn:schemas-upnp-org:control-1-0\"><errorCode>718</errorCode>\
                     <errorDescription>ConflictInMappingEntry</errorDescription></UPnPError></detail></s:Fault></s:Body></s:Envelope>\r\n";
        let e = parse_soap_response("AddPortMapping", 500, fault).unwrap_err();
        assert!(is_fault(&e, ERR_CONFLICT_IN_MAPPING_ENTRY), "{e}");
        assert_eq!(e.to_string(), "UPnP AddPortMapping failed: error 718 ConflictInMappingEntry");
        assert!(matches!(parse_soap_response("X", 500, "garbage"), Err(PortmapError::Http(_))));
        assert!(matches!(parse_soap_response("X", 401, ""), Err(PortmapError::Http(_))));
        for (i, _) in ok.char_indices() {
            let _ = parse_soap_response("GetExternalIPAddress", 200, &ok[..i]);
        }
    }

    fn found(st: &str, location: &str) -> ssdp::SearchResponse {
        ssdp::SearchResponse { st: st.into(), location: location.into(), usn: None, server: None }
    }

    #[test]
    fn candidates_follow_the_trust_rule() {
        let gw: SocketAddr = "10.0.0.1:1900".parse().unwrap();
        let other: SocketAddr = "10.0.0.9:1900".parse().unwrap();
        let mut c = Candidates::new(Some(gw.ip()));
        let desc = "http://10.0.0.1:5000/rootDesc.xml";
        assert_eq!(c.consider(other, &found(ssdp::WAN_IP_CONNECTION_1, desc)), Ok(None), "not the gateway");
        assert_eq!(c.consider(gw, &found("upnp:rootdevice", desc)), Ok(None), "not a port-mapping service");
        assert_eq!(c.consider(gw, &found(ssdp::WAN_IP_CONNECTION_1, desc)), Ok(Some(Url::parse(desc).unwrap())));
        assert_eq!(c.consider(gw, &found(ssdp::WAN_IP_CONNECTION_2, desc)), Ok(None), "each LOCATION once");
        let elsewhere = c.consider(gw, &found(ssdp::WAN_IP_CONNECTION_1, "http://10.0.0.2:5000/d.xml"));
        assert!(matches!(elsewhere, Err(PortmapError::UpnpProtocol(m)) if m.contains("not on the answering host")));
        assert!(c.consider(gw, &found(ssdp::WAN_IP_CONNECTION_1, "http://router.lan/d.xml")).is_err());
        let waited = Duration::from_secs(2);
        assert_eq!(c.not_found(waited), PortmapError::UpnpNotFound { waited, others: 1 });
        let mut any = Candidates::new(None);
        assert!(any.consider(other, &found(ssdp::WAN_IP_CONNECTION_1, "http://10.0.0.9/d.xml")).unwrap().is_some());
    }

    fn igd() -> Igd {
        let loc = Url::parse("http://10.0.0.1:5000/rootDesc.xml").unwrap();
        Igd::from_description(loc, 200, DESC.as_bytes(), Some("MiniUPnPd/2.3.1".into())).unwrap()
    }

    #[test]
    fn description_fetch() {
        let loc = Url::parse("http://10.0.0.1:5000/rootDesc.xml").unwrap();
        let req = String::from_utf8(Igd::description_request(&loc)).unwrap();
        assert_eq!(req, "GET /rootDesc.xml HTTP/1.1\r\nHost: 10.0.0.1:5000\r\nConnection: close\r\n\r\n");
        let igd = igd();
        assert_eq!(igd.control_addr(), "10.0.0.1:5000".parse().unwrap());
        assert_eq!(igd.server.as_deref(), Some("MiniUPnPd/2.3.1"));
        assert!(matches!(Igd::from_description(loc.clone(), 404, DESC.as_bytes(), None), Err(PortmapError::Http(_))));
        assert!(matches!(Igd::from_description(loc.clone(), 200, b"\xff", None), Err(PortmapError::Http(_))));
        // A control URL on another host is not followed.
        let away = DESC.replace("<controlURL>/ctl/IPConn</controlURL>", "<controlURL>http://10.0.0.2/c</controlURL>");
        assert!(matches!(Igd::from_description(loc, 200, away.as_bytes(), None), Err(PortmapError::UpnpProtocol(_))));
    }

    #[test]
    fn actions_build_and_read() {
        let igd = igd();
        let m = PortMapping {
            protocol: Protocol::Udp,
            external_port: 6666,
            internal_client: "10.0.0.2".parse().unwrap(),
            internal_port: 6667,
            description: "t".into(),
            lease_duration: 120,
        };
        let req = String::from_utf8(igd.request(&Action::AddPortMapping(m.clone())).unwrap()).unwrap();
        assert!(req.starts_with("POST /ctl/IPConn HTTP/1.1\r\nHost: 10.0.0.1:5000\r\n"), "{req}");
        assert!(req.contains("SOAPAction: \"urn:schemas-upnp-org:service:WANIPConnection:1#AddPortMapping\"\r\n"));
        assert!(req.contains(
            "<NewExternalPort>6666</NewExternalPort><NewProtocol>UDP</NewProtocol>\
                              <NewInternalPort>6667</NewInternalPort><NewInternalClient>10.0.0.2</NewInternalClient>"
        ));
        let zero = PortMapping { internal_port: 0, ..m };
        assert_eq!(igd.request(&Action::AddPortMapping(zero)), Err(PortmapError::InvalidRequest("port 0")));

        let reply = |inner: &str| {
            format!("<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body>{inner}</s:Body></s:Envelope>")
        };
        let ip = reply("<u:GetExternalIPAddressResponse><NewExternalIPAddress>203.0.113.1</NewExternalIPAddress></u:GetExternalIPAddressResponse>");
        assert_eq!(
            Action::GetExternalIpAddress.parse_reply(200, ip.as_bytes()),
            Ok(ActionReply::ExternalIp("203.0.113.1".parse().unwrap()))
        );
        let empty = reply("<u:GetExternalIPAddressResponse><NewExternalIPAddress></NewExternalIPAddress></u:GetExternalIPAddressResponse>");
        assert!(Action::GetExternalIpAddress.parse_reply(200, empty.as_bytes()).is_err(), "WAN not connected");
        let entry = reply(
            "<u:GetSpecificPortMappingEntryResponse><NewInternalPort>6667</NewInternalPort>\
             <NewInternalClient>10.0.0.2</NewInternalClient><NewEnabled>1</NewEnabled>\
             <NewPortMappingDescription>t</NewPortMappingDescription><NewLeaseDuration>99</NewLeaseDuration>\
             </u:GetSpecificPortMappingEntryResponse>",
        );
        let get = Action::GetSpecificPortMappingEntry { protocol: Protocol::Udp, external_port: 6666 };
        assert_eq!(
            get.parse_reply(200, entry.as_bytes()),
            Ok(ActionReply::Entry(PortMappingEntry {
                internal_port: 6667,
                internal_client: "10.0.0.2".into(),
                enabled: true,
                description: "t".into(),
                lease_duration: 99
            }))
        );
        let del = Action::DeletePortMapping { protocol: Protocol::Tcp, external_port: 1 };
        let done = reply("<u:DeletePortMappingResponse/>");
        assert_eq!(del.parse_reply(200, done.as_bytes()), Ok(ActionReply::Done));
        assert!(del.parse_reply(500, b"").is_err());
    }
}
