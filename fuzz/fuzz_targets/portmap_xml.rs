//! Arbitrary text into the UPnP XML reader (`xml::parse`, `xml::decode_text`), and an escape round trip through
//! the parser. Any panic is a bug.
#![no_main]

use holepunch::portmap::fuzzing::xml::{decode_text, escape, parse, Element};
use libfuzzer_sys::fuzz_target;

fn check(el: &Element, depth: usize) {
    assert!(depth <= 64, "nesting beyond the documented bound");
    for c in &el.children {
        check(c, depth + 1);
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(root) = parse(text) {
        check(&root, 1);
        let _ = (root.find("UPnPError"), root.descendants("service").len(), root.child_text("URLBase"));
    }
    let _ = decode_text(text);
    // Whatever we escape, the reader gives back unchanged (SOAP arguments are written with `escape`).
    assert_eq!(decode_text(&escape(text)).as_deref(), Ok(text));
    let doc = format!("<u:Arg xmlns:u=\"x\">{}</u:Arg>", escape(text));
    let el = parse(&doc).expect("escaped text inside one element parses");
    assert_eq!((el.name.as_str(), el.text.as_str()), ("Arg", text));
    assert!(el.children.is_empty());
});
