//! Arbitrary text as a UPnP device description (`upnp::find_wan_services`) and as a SOAP reply with an
//! arbitrary HTTP status (`upnp::parse_soap_response`). Any panic is a bug.
#![no_main]

use holepunch::portmap::fuzzing::upnp::{find_wan_services, parse_soap_response};
use holepunch::portmap::upnp::Url;
use holepunch::portmap::PortmapError;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((status, body)) = data.split_first_chunk::<2>() else { return };
    let Ok(text) = std::str::from_utf8(body) else { return };
    let location = Url::parse("http://192.168.1.1:5000/rootDesc.xml").expect("fixed URL");
    if let Ok(services) = find_wan_services(text, &location) {
        for s in &services {
            assert!(s.service_type.starts_with("urn:schemas-upnp-org:service:WAN"));
            assert!(s.control_url.path.starts_with('/'));
        }
    }
    let status = u16::from_be_bytes(*status);
    for action in ["GetExternalIPAddress", "GetSpecificPortMappingEntry"] {
        match parse_soap_response(action, status, text) {
            Ok(_) => assert_eq!(status, 200),
            Err(PortmapError::UpnpFault { action: a, .. }) => assert!(status != 200 && a == action),
            Err(_) => {}
        }
    }
});
