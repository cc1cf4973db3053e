//! Text from the network, made safe to print on a terminal. A server's ERROR-CODE reason phrase (RFC 8489
//! §14.8) and SOFTWARE (§14.14) are free text it chooses: printed raw, escape sequences and newlines in them
//! could rewrite the screen or forge whole lines of a report. Human output passes every such string through
//! [`escape_controls`]; JSON output is escaped by the serializer.

use std::borrow::Cow;
use std::fmt::Write as _;

/// True for characters that change how a terminal shows what follows: C0 and C1 controls (including newline,
/// carriage return, escape and DEL) and the Unicode bidirectional formatting characters, which can reorder
/// the rest of a line.
fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `s` with every control or bidirectional formatting character written as a Rust-style escape (`\n`, `\r`,
/// `\t`, `\u{1b}`), so it stays one line and cannot drive the terminal. Idempotent (backslashes are kept as
/// they are), so escaping twice is harmless; borrowed when nothing needs escaping.
pub fn escape_controls(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed() {
        assert!(matches!(escape_controls("Bad Request ünïcode"), Cow::Borrowed(_)));
    }

    #[test]
    fn controls_newlines_and_bidi_are_escaped() {
        let forged = "Bad\x1b[2K\r\nVerdict: direct peer-to-peer likely\x07\u{9b}\u{202e}x\t";
        let out = escape_controls(forged);
        assert_eq!(out, "Bad\\u{1b}[2K\\r\\nVerdict: direct peer-to-peer likely\\u{7}\\u{9b}\\u{202e}x\\t");
        assert!(!out.chars().any(needs_escape));
        assert_eq!(escape_controls(&out), out, "idempotent");
    }
}
