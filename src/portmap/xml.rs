//! A small, strict XML reader for UPnP device descriptions and SOAP replies: elements, text, CDATA, the five
//! predefined entities and character references. No DTDs, no namespaces beyond stripping prefixes (UPnP
//! documents are matched by local name). Bounded depth and size; malformed input is an error, never a panic.

use std::fmt;

/// Deepest nesting accepted (device descriptions nest about 8 deep).
const MAX_DEPTH: usize = 64;
/// Most elements accepted in one document.
const MAX_NODES: usize = 20_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmlError(pub String);

impl fmt::Display for XmlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed XML: {}", self.0)
    }
}

fn err<T>(msg: impl Into<String>) -> Result<T, XmlError> {
    Err(XmlError(msg.into()))
}

/// An element: local name (prefix stripped), its decoded direct text, its child elements.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Element {
    pub name: String,
    pub text: String,
    pub children: Vec<Element>,
}

impl Element {
    /// First direct child with this local name.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Trimmed text of the first direct child with this local name.
    pub fn child_text(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.trim())
    }

    /// Every descendant (self included) with this local name, document order.
    pub fn descendants<'a>(&'a self, name: &'a str) -> Vec<&'a Element> {
        let mut out = Vec::new();
        let mut stack = vec![self];
        while let Some(e) = stack.pop() {
            if e.name == name {
                out.push(e);
            }
            stack.extend(e.children.iter().rev());
        }
        out
    }

    /// First descendant (self included) with this local name.
    pub fn find(&self, name: &str) -> Option<&Element> {
        let mut stack = vec![self];
        while let Some(e) = stack.pop() {
            if e.name == name {
                return Some(e);
            }
            stack.extend(e.children.iter().rev());
        }
        None
    }
}

fn local(qname: &str) -> &str {
    qname.rsplit(':').next().unwrap_or(qname)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
        && !name.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '.')
}

/// Decode entities and character references in text or attribute content.
pub fn decode_text(raw: &str) -> Result<String, XmlError> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let Some(semi) = after.find(';') else { return err("unterminated entity") };
        let ent = &after[..semi];
        let ch = match ent {
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(h) = ent.strip_prefix("#x").or_else(|| ent.strip_prefix("#X")) {
                    u32::from_str_radix(h, 16).ok()
                } else if let Some(d) = ent.strip_prefix('#') {
                    d.parse::<u32>().ok()
                } else {
                    None
                };
                match code.and_then(char::from_u32) {
                    Some(c) => c,
                    None => return err(format!("unknown entity &{};", ent.chars().take(16).collect::<String>())),
                }
            }
        };
        out.push(ch);
        rest = &after[semi + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Escape text for element content.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// Parse a whole document and return its root element.
pub fn parse(doc: &str) -> Result<Element, XmlError> {
    let doc = doc.strip_prefix('\u{feff}').unwrap_or(doc);
    // Open elements: (qualified name, element).
    let mut stack: Vec<(String, Element)> = Vec::new();
    let mut root: Option<Element> = None;
    let mut nodes = 0usize;
    let mut rest = doc;
    while !rest.is_empty() {
        let Some(lt) = rest.find('<') else {
            text(&mut stack, root.is_some(), rest, false)?;
            break;
        };
        if lt > 0 {
            text(&mut stack, root.is_some(), &rest[..lt], false)?;
        }
        rest = &rest[lt..];
        if let Some(r) = rest.strip_prefix("<?") {
            let Some(end) = r.find("?>") else { return err("unterminated processing instruction") };
            rest = &r[end + 2..];
        } else if let Some(r) = rest.strip_prefix("<!--") {
            let Some(end) = r.find("-->") else { return err("unterminated comment") };
            rest = &r[end + 3..];
        } else if let Some(r) = rest.strip_prefix("<![CDATA[") {
            let Some(end) = r.find("]]>") else { return err("unterminated CDATA") };
            text(&mut stack, root.is_some(), &r[..end], true)?;
            rest = &r[end + 3..];
        } else if let Some(r) = rest.strip_prefix("<!") {
            // DOCTYPE without an internal subset; anything else is refused.
            if r.starts_with("DOCTYPE") && !stack.is_empty() {
                return err("DOCTYPE inside an element");
            }
            let Some(end) = r.find('>') else { return err("unterminated declaration") };
            if r[..end].contains('[') {
                return err("DTD internal subsets are not supported");
            }
            rest = &r[end + 1..];
        } else if let Some(r) = rest.strip_prefix("</") {
            let Some(end) = r.find('>') else { return err("unterminated end tag") };
            let name = r[..end].trim_end();
            let Some((open, mut el)) = stack.pop() else { return err(format!("stray end tag </{name}>")) };
            if open != name {
                return err(format!("</{name}> closes <{open}>"));
            }
            el.text = decode_text(&el.text)?;
            match stack.last_mut() {
                Some((_, parent)) => parent.children.push(el),
                None => root = Some(el),
            }
            rest = &r[end + 1..];
        } else {
            let r = &rest[1..];
            let end = tag_end(r)?;
            let inner = &r[..end];
            let (inner, self_closing) = match inner.strip_suffix('/') {
                Some(i) => (i, true),
                None => (inner, false),
            };
            let qname = inner.split(|c: char| c.is_whitespace()).next().unwrap_or("");
            if !valid_name(qname) {
                return err(format!("bad element name {:?}", qname.chars().take(32).collect::<String>()));
            }
            if root.is_some() {
                return err("content after the root element");
            }
            nodes += 1;
            if nodes > MAX_NODES || stack.len() >= MAX_DEPTH {
                return err("document too large or too deep");
            }
            let el = Element { name: local(qname).to_string(), ..Element::default() };
            if self_closing {
                match stack.last_mut() {
                    Some((_, parent)) => parent.children.push(el),
                    None => root = Some(el),
                }
            } else {
                stack.push((qname.to_string(), el));
            }
            rest = &r[end + 1..];
        }
    }
    if let Some((open, _)) = stack.last() {
        return err(format!("<{open}> never closed"));
    }
    root.ok_or_else(|| XmlError("no root element".into()))
}

/// Append raw text to the open element (decoded when the element closes); outside elements only
/// whitespace is allowed.
fn text(stack: &mut [(String, Element)], after_root: bool, raw: &str, cdata: bool) -> Result<(), XmlError> {
    match stack.last_mut() {
        Some((_, el)) => {
            if cdata {
                // Escape so the decode at close time restores it verbatim.
                el.text.push_str(&escape(raw));
            } else {
                if raw.contains('<') {
                    return err("'<' in text");
                }
                el.text.push_str(raw);
            }
            Ok(())
        }
        None if raw.trim().is_empty() && !cdata => Ok(()),
        None if after_root => err("text after the root element"),
        None => err("text before the root element"),
    }
}

/// Index of the `>` closing a start tag, skipping quoted attribute values.
fn tag_end(s: &str) -> Result<usize, XmlError> {
    let mut quote: Option<char> = None;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '>') => return Ok(i),
            (None, '<') => return err("'<' inside a tag"),
            _ => {}
        }
    }
    err("unterminated start tag")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nested_with_prefixes_entities_cdata() {
        let doc = r#"<?xml version="1.0"?>
<!-- c --><s:Envelope xmlns:s="x" a='1>2'><s:Body><u:R xmlns:u="y"><A>1 &lt; 2 &amp; &#65;&#x42;</A><B/><C><![CDATA[<raw&>]]></C></u:R></s:Body></s:Envelope>
"#;
        let root = parse(doc).unwrap();
        assert_eq!(root.name, "Envelope");
        let r = root.find("R").unwrap();
        assert_eq!(r.child_text("A"), Some("1 < 2 & AB"));
        assert_eq!(r.child_text("B"), Some(""));
        assert_eq!(r.child_text("C"), Some("<raw&>"));
        assert_eq!(root.descendants("A").len(), 1);
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "text",
            "<a>",
            "<a></b>",
            "</a>",
            "<a><b></a></b>",
            "<a>&bogus;</a>",
            "<a>&#xFFFFFFFF;</a>",
            "<a>&amp</a>",
            "<a></a><b></b>",
            "<a></a>trailing",
            "<a x=\"1></a>",
            "<1a></1a>",
            "<a><!-- x </a>",
            "<a><![CDATA[ x </a>",
            "<!DOCTYPE a [<!ENTITY x \"y\">]><a/>",
            "<a <b>></a>",
        ] {
            assert!(parse(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn depth_is_bounded() {
        let deep = "<a>".repeat(100) + &"</a>".repeat(100);
        assert!(parse(&deep).is_err());
        let ok = "<a>".repeat(10) + &"</a>".repeat(10);
        assert!(parse(&ok).is_ok());
    }

    #[test]
    fn escape_roundtrip() {
        let s = "a<b>&\"'c";
        assert_eq!(decode_text(&escape(s)).unwrap(), s);
    }

    #[test]
    fn truncations_never_panic() {
        let doc = "<?xml version=\"1.0\"?><root><device><serviceList><service><serviceType>urn:x</serviceType>\
                   <controlURL>/ctl?a=1&amp;b=2</controlURL></service></serviceList></device></root>";
        for (i, _) in doc.char_indices() {
            let _ = parse(&doc[..i]);
        }
        assert!(parse(doc).is_ok());
    }
}
