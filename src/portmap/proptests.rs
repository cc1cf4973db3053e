//! Property tests of the crate-private readers of IGD input (HTTP, XML, device descriptions, SOAP replies):
//! arbitrary input never panics. The public parsers have theirs in `tests/portmap_props.rs`.

use proptest::prelude::*;

use super::{http, upnp, xml};

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn parsers_never_panic(data in proptest::collection::vec(any::<u8>(), 0..1200)) {
        let _ = http::parse_response(&data, false);
        let _ = http::parse_response(&data, true);
        let text = String::from_utf8_lossy(&data);
        let _ = xml::parse(&text);
        let loc = http::Url::parse("http://10.0.0.1:5000/rootDesc.xml").unwrap();
        let _ = upnp::find_wan_services(&text, &loc);
        let _ = upnp::parse_soap_response("AddPortMapping", 200, &text);
        let _ = upnp::parse_soap_response("AddPortMapping", 500, &text);
        let _ = http::Url::parse(&text);
        let _ = loc.join(&text);
    }

    #[test]
    fn xmlish_input_never_panics(s in "[<>/a-z:!\\[\\]CDAT?&#;x0-9 \"'=-]{0,200}") {
        let _ = xml::parse(&s);
        let _ = xml::decode_text(&s);
    }
}
