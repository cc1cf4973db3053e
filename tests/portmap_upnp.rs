//! UPnP IGD client against a fake IGD on loopback: SSDP (unicast search to a loopback responder), device
//! description (served chunked), SOAP actions with faults. Loopback only.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use holepunch::io::portmap::IgdClient;
use holepunch::portmap::ssdp::SearchConfig;
use holepunch::portmap::upnp::{self, DiscoverOptions, PortMapping};
use holepunch::portmap::{PortmapError, Protocol};

const ST: &str = "urn:schemas-upnp-org:service:WANIPConnection:1";

fn description() -> String {
    format!(
        "<?xml version=\"1.0\"?>\r\n<root xmlns=\"urn:schemas-upnp-org:device-1-0\"><specVersion><major>1</major>\
         <minor>0</minor></specVersion><device><deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:1</deviceType>\
         <deviceList><device><deviceType>urn:schemas-upnp-org:device:WANDevice:1</deviceType><deviceList><device>\
         <deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:1</deviceType><serviceList><service>\
         <serviceType>{ST}</serviceType><serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId>\
         <controlURL>ctl/IPConn</controlURL></service></serviceList></device></deviceList></device></deviceList>\
         </device></root>"
    )
}

fn envelope(inner: &str) -> String {
    format!(
        "<?xml version=\"1.0\"?>\r\n<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" \
         s:encodingStyle=\"http://schemas.xmlsoap.org/soap/encoding/\"><s:Body>{inner}</s:Body></s:Envelope>\r\n"
    )
}

fn fault(code: u16, desc: &str) -> String {
    envelope(&format!(
        "<s:Fault><faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail>\
         <UPnPError xmlns=\"urn:schemas-upnp-org:control-1-0\"><errorCode>{code}</errorCode>\
         <errorDescription>{desc}</errorDescription></UPnPError></detail></s:Fault>"
    ))
}

fn arg(body: &str, name: &str) -> String {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    match (body.find(&open), body.find(&close)) {
        (Some(a), Some(b)) if b >= a + open.len() => body[a + open.len()..b].to_string(),
        _ => String::new(),
    }
}

#[derive(Default)]
struct IgdState {
    /// external port -> (client, internal port, lease)
    mappings: HashMap<u16, (String, u16, u32)>,
    actions: Vec<String>,
}

/// A fake IGD: HTTP on loopback plus a unicast SSDP responder.
struct FakeIgd {
    http: SocketAddr,
    ssdp: SocketAddr,
    state: Arc<Mutex<IgdState>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl FakeIgd {
    fn start(location_host: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let http = listener.local_addr().unwrap();
        let ssdp_sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        ssdp_sock.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let ssdp = ssdp_sock.local_addr().unwrap();
        let state = Arc::new(Mutex::new(IgdState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let end = Instant::now() + Duration::from_secs(60);
        let (st, stop1) = (state.clone(), stop.clone());
        let t1 = std::thread::spawn(move || {
            while !stop1.load(Ordering::Relaxed) && Instant::now() < end {
                match listener.accept() {
                    Ok((conn, _)) => serve(conn, &st),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        let location = format!("http://{location_host}:{}/rootDesc.xml", http.port());
        let stop2 = stop.clone();
        let t2 = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop2.load(Ordering::Relaxed) && Instant::now() < end {
                let Ok((n, from)) = ssdp_sock.recv_from(&mut buf) else { continue };
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let st = req.lines().find_map(|l| l.strip_prefix("ST: ")).unwrap_or("").to_string();
                if st != ST {
                    continue;
                }
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nST: {st}\r\nUSN: uuid:x::{st}\r\nEXT:\r\n\
                     SERVER: Fake/1 UPnP/1.1 FakeIGD/1\r\nLOCATION: {location}\r\n\r\n"
                );
                let _ = ssdp_sock.send_to(resp.as_bytes(), from);
            }
        });
        FakeIgd { http, ssdp, state, stop, threads: vec![t1, t2] }
    }
}

impl Drop for FakeIgd {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn serve(mut conn: TcpStream, state: &Mutex<IgdState>) {
    conn.set_nonblocking(false).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let (head, body) = loop {
        let Ok(n) = conn.read(&mut chunk) else { return };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(i) = text.find("\r\n\r\n") {
            let head = text[..i].to_string();
            let cl = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if text.len() >= i + 4 + cl {
                break (head, text[i + 4..i + 4 + cl].to_string());
            }
        }
    };
    let line = head.lines().next().unwrap_or("");
    let resp = if line.starts_with("GET /rootDesc.xml ") {
        // Chunked, in odd sizes, to exercise the decoder.
        let d = description();
        let mut out = String::from("HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nTransfer-Encoding: chunked\r\n\r\n");
        for part in d.as_bytes().chunks(77) {
            out += &format!("{:x}\r\n{}\r\n", part.len(), String::from_utf8_lossy(part));
        }
        out += "0\r\n\r\n";
        out
    } else if line.starts_with("POST /ctl/IPConn ") {
        let action = head
            .lines()
            .find_map(|l| l.strip_prefix("SOAPAction: "))
            .and_then(|v| v.trim_matches('"').split('#').nth(1))
            .unwrap_or("")
            .to_string();
        let mut s = state.lock().unwrap();
        s.actions.push(action.clone());
        let (status, xml) = match action.as_str() {
            "GetExternalIPAddress" => (
                200,
                envelope(&format!(
                    "<u:GetExternalIPAddressResponse xmlns:u=\"{ST}\"><NewExternalIPAddress>203.0.113.77</NewExternalIPAddress>\
                     </u:GetExternalIPAddressResponse>"
                )),
            ),
            "AddPortMapping" => {
                let ext: u16 = arg(&body, "NewExternalPort").parse().unwrap_or(0);
                let client = arg(&body, "NewInternalClient");
                let iport: u16 = arg(&body, "NewInternalPort").parse().unwrap_or(0);
                let lease: u32 = arg(&body, "NewLeaseDuration").parse().unwrap_or(0);
                match s.mappings.get(&ext) {
                    Some((c, _, _)) if *c != client => (500, fault(718, "ConflictInMappingEntry")),
                    _ => {
                        s.mappings.insert(ext, (client, iport, lease));
                        (200, envelope(&format!("<u:AddPortMappingResponse xmlns:u=\"{ST}\"/>")))
                    }
                }
            }
            "GetSpecificPortMappingEntry" => {
                let ext: u16 = arg(&body, "NewExternalPort").parse().unwrap_or(0);
                match s.mappings.get(&ext) {
                    Some((c, p, l)) => (
                        200,
                        envelope(&format!(
                            "<u:GetSpecificPortMappingEntryResponse xmlns:u=\"{ST}\"><NewInternalPort>{p}</NewInternalPort>\
                             <NewInternalClient>{c}</NewInternalClient><NewEnabled>1</NewEnabled>\
                             <NewPortMappingDescription>x</NewPortMappingDescription><NewLeaseDuration>{l}</NewLeaseDuration>\
                             </u:GetSpecificPortMappingEntryResponse>"
                        )),
                    ),
                    None => (500, fault(714, "NoSuchEntryInArray")),
                }
            }
            "DeletePortMapping" => {
                let ext: u16 = arg(&body, "NewExternalPort").parse().unwrap_or(0);
                match s.mappings.remove(&ext) {
                    Some(_) => (200, envelope(&format!("<u:DeletePortMappingResponse xmlns:u=\"{ST}\"/>"))),
                    None => (500, fault(714, "NoSuchEntryInArray")),
                }
            }
            _ => (500, fault(401, "Invalid Action")),
        };
        let reason = if status == 200 { "OK" } else { "Internal Server Error" };
        format!("HTTP/1.1 {status} {reason}\r\nContent-Type: text/xml; charset=\"utf-8\"\r\nContent-Length: {}\r\n\r\n{xml}", xml.len())
    } else {
        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_string()
    };
    let _ = conn.write_all(resp.as_bytes());
}

fn discover_options(igd: &FakeIgd) -> DiscoverOptions {
    DiscoverOptions {
        gateway: Some(IpAddr::from([127, 0, 0, 1])),
        local_ip: Some([127, 0, 0, 1].into()),
        search: SearchConfig { destination: igd.ssdp, wait: Duration::from_secs(3), ..SearchConfig::default() },
        http_timeout: Duration::from_secs(2),
    }
}

#[test]
fn discover_map_verify_delete() {
    let fake = FakeIgd::start("127.0.0.1");
    let t = Instant::now();
    let igd = IgdClient::discover(&discover_options(&fake)).unwrap();
    // Found on the first answer, without waiting out the 3 s window.
    assert!(t.elapsed() < Duration::from_millis(2500), "{:?}", t.elapsed());
    assert_eq!(igd.igd.service.service_type, ST);
    assert_eq!(igd.igd.service.control_url.path, "/ctl/IPConn");
    assert_eq!(igd.igd.service.control_url.port, fake.http.port());
    assert_eq!(igd.igd.server.as_deref(), Some("Fake/1 UPnP/1.1 FakeIGD/1"));
    assert_eq!(igd.external_ip().unwrap(), IpAddr::from([203, 0, 113, 77]));

    let m = PortMapping {
        protocol: Protocol::Udp,
        external_port: 6666,
        internal_client: IpAddr::from([127, 0, 0, 1]),
        internal_port: 6666,
        description: "test".into(),
        lease_duration: 120,
    };
    igd.add_port_mapping(&m).unwrap();
    let e = igd.get_port_mapping(Protocol::Udp, 6666).unwrap();
    assert_eq!(
        (e.internal_port, e.internal_client.as_str(), e.enabled, e.lease_duration),
        (6666, "127.0.0.1", true, 120)
    );
    // Someone else's client on the same external port: 718.
    let other = PortMapping { internal_client: IpAddr::from([127, 0, 0, 9]), ..m.clone() };
    let err = igd.add_port_mapping(&other).unwrap_err();
    assert!(upnp::is_fault(&err, upnp::ERR_CONFLICT_IN_MAPPING_ENTRY), "{err}");
    igd.delete_port_mapping(Protocol::Udp, 6666).unwrap();
    let err = igd.get_port_mapping(Protocol::Udp, 6666).unwrap_err();
    assert_eq!(
        err,
        PortmapError::UpnpFault {
            action: "GetSpecificPortMappingEntry",
            code: 714,
            description: "NoSuchEntryInArray".into()
        }
    );
    assert!(fake.state.lock().unwrap().mappings.is_empty());
}

#[test]
fn forged_location_elsewhere_is_refused() {
    // The answer comes from 127.0.0.1 but points at 127.0.0.2: not followed.
    let fake = FakeIgd::start("127.0.0.2");
    let err = IgdClient::discover(&discover_options(&fake)).unwrap_err();
    match err {
        PortmapError::UpnpProtocol(m) => assert!(m.contains("not on the answering host"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(fake.state.lock().unwrap().actions.is_empty());
}

#[test]
fn answers_from_other_hosts_are_ignored() {
    let fake = FakeIgd::start("127.0.0.1");
    let mut opts = discover_options(&fake);
    opts.gateway = Some(IpAddr::from([127, 0, 0, 3]));
    let t = Instant::now();
    match IgdClient::discover(&opts) {
        Err(PortmapError::UpnpNotFound { others, .. }) => assert!(others >= 1),
        other => panic!("{other:?}"),
    }
    // Bounded by the search window.
    assert!(t.elapsed() >= Duration::from_secs(3) && t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}
