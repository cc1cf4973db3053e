//! Arbitrary bytes as what an IGD's HTTP server sends back (`http::parse_response`, with and without end of
//! stream), and as URLs from SSDP LOCATION / description text (`Url::parse`, `Url::join`). Any panic is a bug.
#![no_main]

use holepunch::portmap::fuzzing::http::{parse_response, Parsed, Url, MAX_RESPONSE};
use libfuzzer_sys::fuzz_target;

fn check_url(url: &Url) {
    // The path goes verbatim into a request line.
    assert!(url.path.starts_with('/'));
    assert!(!url.path.bytes().any(|b| b <= b' ' || b == 0x7f || b == b'#'));
    // What we print as the authority parses back to the same URL.
    let again = Url::parse(&format!("http://{}{}", url.authority(), url.path)).expect("own URL reparses");
    assert_eq!(&again, url);
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, buf)) = data.split_first() else { return };
    let eof = flags & 1 == 1;
    match parse_response(buf, eof) {
        Ok(Parsed::Complete(resp)) => {
            assert!((100..600).contains(&resp.status));
            assert!(resp.body.len() <= MAX_RESPONSE);
            // More bytes or the end of the stream cannot change a complete answer.
            if !eof {
                assert_eq!(parse_response(buf, true), Ok(Parsed::Complete(resp)));
            }
        }
        Ok(Parsed::Incomplete) => assert!(!eof),
        Err(_) => {}
    }

    let text = String::from_utf8_lossy(buf);
    let (base, reference) = text.split_once('\n').unwrap_or((&text, ""));
    if let Ok(url) = Url::parse(base) {
        check_url(&url);
        if let Ok(joined) = url.join(reference) {
            check_url(&joined);
            let absolute = reference.trim().get(..7).is_some_and(|s| s.eq_ignore_ascii_case("http://"));
            if !absolute {
                assert_eq!(joined.socket_addr(), url.socket_addr());
            }
        }
    }
});
