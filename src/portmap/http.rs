//! Just enough HTTP/1.1 (RFC 9112) for UPnP: `http://` URLs with an IP-literal host, one request per
//! connection (`Connection: close`), responses framed by Content-Length, chunked coding or end of stream.
//!
//! URLs come from LAN datagrams, so host names are refused rather than resolved: the probe only ever talks to
//! the address that answered the search (see `upnp`). Building and parsing only; the TCP exchange is the
//! I/O layer's (`io::portmap`).

use std::net::{IpAddr, SocketAddr};

use super::PortmapError;

/// Largest response accepted (device descriptions are a few KiB).
pub const MAX_RESPONSE: usize = 1 << 20;
pub const MAX_HEAD: usize = 16 * 1024;

pub(crate) fn herr<T>(msg: impl Into<String>) -> Result<T, PortmapError> {
    Err(PortmapError::Http(msg.into()))
}

/// An absolute `http://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub host: IpAddr,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Url {
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }

    /// Value of the Host header.
    pub fn authority(&self) -> String {
        match self.host {
            IpAddr::V4(v4) => format!("{v4}:{}", self.port),
            IpAddr::V6(v6) => format!("[{v6}]:{}", self.port),
        }
    }

    /// Parse `http://host[:port][/path]`; the host must be an IP literal.
    pub fn parse(s: &str) -> Result<Url, PortmapError> {
        let s = s.trim();
        let rest = match s.get(..7) {
            Some(scheme) if scheme.eq_ignore_ascii_case("http://") => &s[7..],
            _ => return herr(format!("not an http:// URL: {}", clip(s))),
        };
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return herr("URL with user info");
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let Some(close) = v6.find(']') else { return herr("unterminated [IPv6] host") };
            let port = match &v6[close + 1..] {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(|| PortmapError::Http("junk after ]".into()))?),
            };
            (&v6[..close], port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        let host: IpAddr =
            host.parse().map_err(|_| PortmapError::Http(format!("URL host {:?} is not an IP address", clip(host))))?;
        let port = match port {
            None | Some("") => 80,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n != 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => return herr(format!("bad port {:?}", clip(p))),
            },
        };
        let path = strip_fragment(path);
        let path = if path.starts_with('/') { path.to_string() } else { format!("/{path}") };
        let path = request_target(&path)?;
        Ok(Url { host, port, path })
    }

    /// Resolve a reference found in a document fetched from `self` (RFC 3986 §5.2, the cases UPnP uses).
    pub fn join(&self, reference: &str) -> Result<Url, PortmapError> {
        let r = reference.trim();
        if r.is_empty() {
            return herr("empty URL reference");
        }
        if r.get(..7).is_some_and(|s| s.eq_ignore_ascii_case("http://")) {
            return Url::parse(r);
        }
        if r.contains("://") || r.starts_with("//") {
            return herr(format!("unsupported URL {}", clip(r)));
        }
        let r = strip_fragment(r);
        let path = if r.starts_with('/') {
            r.to_string()
        } else if r.starts_with('?') {
            let base = self.path.split('?').next().unwrap_or("/");
            format!("{base}{r}")
        } else {
            let base = self.path.split('?').next().unwrap_or("/");
            let dir = &base[..base.rfind('/').map_or(0, |i| i + 1)];
            format!("{}{}", if dir.is_empty() { "/" } else { dir }, r)
        };
        let path = request_target(&path)?;
        Ok(Url { host: self.host, port: self.port, path })
    }
}

fn strip_fragment(s: &str) -> &str {
    s.split('#').next().unwrap_or("")
}

/// The path goes into a request line verbatim: no whitespace or control bytes may reach it. Non-ASCII, fine in
/// an IRI from a description but not in a request-target (RFC 9112 §3.2), is percent-encoded the way RFC 3987
/// §3.1 maps an IRI to a URI; sent raw it broke the request line (U+00A0 is whitespace to `trim`).
fn request_target(p: &str) -> Result<String, PortmapError> {
    if p.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return herr("URL path contains spaces or control characters");
    }
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(p.len());
    for b in p.bytes() {
        if b.is_ascii() {
            out.push(char::from(b));
        } else {
            out.extend(['%', char::from(HEX[usize::from(b >> 4)]), char::from(HEX[usize::from(b & 0xf)])]);
        }
    }
    Ok(out)
}

fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

/// A parsed response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Result of looking at the bytes received so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Complete(Response),
    Incomplete,
}

/// Parse a response from the bytes received so far; `eof` says the peer closed. Never panics.
pub fn parse_response(buf: &[u8], eof: bool) -> Result<Parsed, PortmapError> {
    let Some((head_len, body_start)) = find_head_end(buf) else {
        if buf.len() > MAX_HEAD {
            return herr("response header too large");
        }
        return if eof { herr("connection closed inside the response header") } else { Ok(Parsed::Incomplete) };
    };
    let head = std::str::from_utf8(&buf[..head_len]).map_err(|_| PortmapError::Http("header is not UTF-8".into()))?;
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return herr(format!("bad status line {:?}", clip(status_line)));
    }
    let status = match parts.next().map(|c| (c, c.parse::<u16>())) {
        Some((c, Ok(n))) if c.len() == 3 && (100..600).contains(&n) => n,
        _ => return herr(format!("bad status line {:?}", clip(status_line))),
    };
    let mut headers = Vec::new();
    for line in lines {
        let Some((k, v)) = line.split_once(':') else { return herr(format!("bad header line {:?}", clip(line))) };
        if k.is_empty() || k.bytes().any(|b| b <= b' ' || b >= 0x7f) {
            return herr(format!("bad header name {:?}", clip(k)));
        }
        headers.push((k.to_string(), v.trim().to_string()));
    }
    let mut resp = Response { status, headers, body: Vec::new() };
    let body = &buf[body_start..];
    let chunked = resp.header("Transfer-Encoding").is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
    if chunked {
        return match dechunk(body)? {
            Some(b) => {
                resp.body = b;
                Ok(Parsed::Complete(resp))
            }
            None if eof => herr("connection closed inside a chunked body"),
            None => Ok(Parsed::Incomplete),
        };
    }
    if let Some(cl) = resp.header("Content-Length") {
        let n: usize = match cl.parse() {
            Ok(n) if cl.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return herr(format!("bad Content-Length {:?}", clip(cl))),
        };
        if n > MAX_RESPONSE {
            return herr("response too large");
        }
        if body.len() >= n {
            resp.body = body[..n].to_vec();
            return Ok(Parsed::Complete(resp));
        }
        return if eof {
            herr(format!("connection closed after {} of {n} body bytes", body.len()))
        } else {
            Ok(Parsed::Incomplete)
        };
    }
    if status == 204 || status == 304 || (100..200).contains(&status) {
        return Ok(Parsed::Complete(resp));
    }
    if eof {
        resp.body = body.to_vec();
        Ok(Parsed::Complete(resp))
    } else {
        Ok(Parsed::Incomplete)
    }
}

/// (end of header text, start of body): the first empty line, CRLF or bare LF.
fn find_head_end(buf: &[u8]) -> Option<(usize, usize)> {
    let limit = buf.len().min(MAX_HEAD + 4);
    for i in 0..limit {
        if buf[i] != b'\n' {
            continue;
        }
        if buf.get(i + 1) == Some(&b'\n') {
            return Some((i, i + 2));
        }
        if buf.get(i + 1) == Some(&b'\r') && buf.get(i + 2) == Some(&b'\n') {
            let end = if i > 0 && buf[i - 1] == b'\r' { i - 1 } else { i };
            return Some((end, i + 3));
        }
    }
    None
}

/// Decode a chunked body (RFC 9112 §7.1). `Ok(None)` while incomplete.
fn dechunk(mut data: &[u8]) -> Result<Option<Vec<u8>>, PortmapError> {
    let mut out = Vec::new();
    loop {
        let Some(nl) = data.iter().position(|&b| b == b'\n') else {
            if data.len() > 1024 {
                return herr("chunk size line too long");
            }
            return Ok(None);
        };
        let line = std::str::from_utf8(&data[..nl]).map_err(|_| PortmapError::Http("bad chunk size line".into()))?;
        let line = line.strip_suffix('\r').unwrap_or(line);
        let size_hex = line.split(';').next().unwrap_or("").trim();
        let size = match usize::from_str_radix(size_hex, 16) {
            Ok(n) if !size_hex.is_empty() && size_hex.len() <= 8 => n,
            _ => return herr(format!("bad chunk size {:?}", clip(size_hex))),
        };
        data = &data[nl + 1..];
        if size == 0 {
            // Trailer section ends with an empty line.
            let mut rest = data;
            loop {
                let Some(nl) = rest.iter().position(|&b| b == b'\n') else { return Ok(None) };
                let line = &rest[..nl];
                if line.is_empty() || line == b"\r" {
                    return Ok(Some(out));
                }
                rest = &rest[nl + 1..];
            }
        }
        if out.len() + size > MAX_RESPONSE {
            return herr("response too large");
        }
        if data.len() < size {
            return Ok(None);
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size..];
        match data {
            [b'\r', b'\n', rest @ ..] | [b'\n', rest @ ..] => data = rest,
            [] | [b'\r'] => return Ok(None),
            _ => return herr("chunk not followed by CRLF"),
        }
    }
}

/// Build a request with `Connection: close`.
pub fn build_request(method: &str, url: &Url, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut req = format!("{method} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n", url.path, url.authority());
    for (k, v) in headers {
        req += &format!("{k}: {v}\r\n");
    }
    if !body.is_empty() || method == "POST" {
        req += &format!("Content-Length: {}\r\n", body.len());
    }
    req += "\r\n";
    let mut out = req.into_bytes();
    out.extend_from_slice(body);
    out
}

/// The reading side of one exchange, sans-IO: the bytes of the connection go in as they arrive, the
/// response comes out once it is complete. The driver owns the socket and the deadline.
#[derive(Debug, Default)]
pub struct ResponseReader {
    buf: Vec<u8>,
}

impl ResponseReader {
    pub fn new() -> Self {
        ResponseReader { buf: Vec::with_capacity(4096) }
    }

    /// `data` arrived; empty `data` means the peer closed the connection. `Ok(Some(_))` once the response
    /// is complete, `Ok(None)` while more is needed.
    pub fn handle_data(&mut self, data: &[u8]) -> Result<Option<Response>, PortmapError> {
        let eof = data.is_empty();
        self.buf.extend_from_slice(data);
        if self.buf.len() > MAX_RESPONSE + MAX_HEAD {
            return herr("response too large");
        }
        match parse_response(&self.buf, eof)? {
            Parsed::Complete(r) => Ok(Some(r)),
            Parsed::Incomplete if eof => herr("connection closed early"),
            Parsed::Incomplete => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parse() {
        let u = Url::parse("http://192.168.1.1:5000/rootDesc.xml").unwrap();
        assert_eq!((u.host.to_string(), u.port, u.path.as_str()), ("192.168.1.1".into(), 5000, "/rootDesc.xml"));
        assert_eq!(u.authority(), "192.168.1.1:5000");
        let u = Url::parse("HTTP://10.0.0.1").unwrap();
        assert_eq!((u.port, u.path.as_str()), (80, "/"));
        let u = Url::parse("http://[fe80::1]:49152/a?b=c#frag").unwrap();
        assert_eq!((u.port, u.path.as_str(), u.authority().as_str()), (49152, "/a?b=c", "[fe80::1]:49152"));
        for bad in [
            "https://1.2.3.4/",
            "http://router.lan/desc.xml",
            "http://1.2.3.4:0/",
            "http://1.2.3.4:99999/",
            "http://1.2.3.4:+80/",
            "http://u@1.2.3.4/",
            "http://[::1/",
            "http://1.2.3.4/a b",
            "http://1.2.3.4/a\r\nX: y",
            "ftp://x",
            "",
        ] {
            assert!(Url::parse(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn url_join() {
        let base = Url::parse("http://192.168.1.1:5000/dev/rootDesc.xml?x=1").unwrap();
        assert_eq!(base.join("/ctl/IPConn").unwrap().path, "/ctl/IPConn");
        assert_eq!(base.join("ctl/IPConn").unwrap().path, "/dev/ctl/IPConn");
        assert_eq!(base.join("?y=2").unwrap().path, "/dev/rootDesc.xml?y=2");
        let abs = base.join("http://192.168.1.1:6000/x").unwrap();
        assert_eq!((abs.port, abs.path.as_str()), (6000, "/x"));
        assert!(base.join("").is_err());
        assert!(base.join("//evil/x").is_err());
        assert!(base.join("https://1.2.3.4/").is_err());
        let root = Url::parse("http://192.168.1.1:5000").unwrap();
        assert_eq!(root.join("ctl").unwrap().path, "/ctl");
    }

    /// Found by `fuzz/fuzz_targets/portmap_http.rs`: non-ASCII path bytes went raw into the request line, and
    /// a path ending in U+00A0 did not survive printing and parsing again.
    #[test]
    fn url_non_ascii_path_is_percent_encoded() {
        let base = Url::parse("http://[fe60::1]/2rD1").unwrap();
        let joined = base.join("c\u{fffd}j0n\u{a0}\u{a0}#\u{a0}").unwrap();
        assert_eq!(joined.path, "/c%EF%BF%BDj0n%C2%A0%C2%A0");
        let again = Url::parse(&format!("http://{}{}", joined.authority(), joined.path)).unwrap();
        assert_eq!(again, joined);
        let u = Url::parse("http://10.0.0.1/caf\u{e9}?q=\u{e9}").unwrap();
        assert_eq!(u.path, "/caf%C3%A9?q=%C3%A9");
        let req = build_request("GET", &u, &[], b"");
        assert!(req.is_ascii());
        assert!(Url::parse("http://10.0.0.1/a\u{a0}b").unwrap().path.is_ascii());
    }

    #[test]
    fn response_content_length() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: 5\r\n\r\nhello";
        match parse_response(r, false).unwrap() {
            Parsed::Complete(resp) => {
                assert_eq!(resp.status, 200);
                assert_eq!(resp.body, b"hello");
                assert_eq!(resp.header("content-type"), Some("text/xml"));
            }
            Parsed::Incomplete => panic!("incomplete"),
        }
        assert_eq!(parse_response(&r[..r.len() - 1], false).unwrap(), Parsed::Incomplete);
        assert!(parse_response(&r[..r.len() - 1], true).is_err());
    }

    #[test]
    fn response_chunked_and_eof_framed() {
        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nX-T: 1\r\n\r\n";
        match parse_response(r, false).unwrap() {
            Parsed::Complete(resp) => assert_eq!(resp.body, b"Wikipedia"),
            Parsed::Incomplete => panic!("incomplete"),
        }
        for n in 0..r.len() {
            assert_eq!(parse_response(&r[..n], false).unwrap(), Parsed::Incomplete, "at {n}");
        }
        let r = b"HTTP/1.0 500 Internal Server Error\nServer: x\n\n<body/>";
        assert_eq!(parse_response(r, false).unwrap(), Parsed::Incomplete);
        match parse_response(r, true).unwrap() {
            Parsed::Complete(resp) => assert_eq!((resp.status, resp.body.as_slice()), (500, &b"<body/>"[..])),
            Parsed::Incomplete => panic!("incomplete"),
        }
    }

    #[test]
    fn response_malformed() {
        for bad in [
            &b"HTTP/2 200 OK\r\n\r\n"[..],
            b"HTTP/1.1 20 OK\r\n\r\n",
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"ICY 200 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nNoColon\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabX",
        ] {
            assert!(parse_response(bad, true).is_err(), "accepted {:?}", String::from_utf8_lossy(bad));
        }
        assert!(parse_response(&vec![b'a'; MAX_HEAD + 10], false).is_err());
    }

    #[test]
    fn reader_takes_pieces_and_end_of_stream() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        let mut reader = ResponseReader::new();
        assert_eq!(reader.handle_data(&r[..10]).unwrap(), None);
        let resp = reader.handle_data(&r[10..]).unwrap().unwrap();
        assert_eq!((resp.status, resp.body.as_slice()), (200, &b"hello"[..]));
        let mut reader = ResponseReader::new();
        assert_eq!(reader.handle_data(b"HTTP/1.0 200 OK\r\n\r\nbody").unwrap(), None);
        assert_eq!(reader.handle_data(b"").unwrap().unwrap().body, b"body");
        let mut reader = ResponseReader::new();
        reader.handle_data(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhal").unwrap();
        assert!(reader.handle_data(b"").is_err(), "closed before the whole body");
    }

    #[test]
    fn request_bytes() {
        let u = Url::parse("http://192.168.1.1:5000/ctl/IPConn").unwrap();
        let r = build_request("POST", &u, &[("SOAPAction", "\"urn:x#A\"")], b"<x/>");
        assert_eq!(
            String::from_utf8(r).unwrap(),
            "POST /ctl/IPConn HTTP/1.1\r\nHost: 192.168.1.1:5000\r\nConnection: close\r\nSOAPAction: \"urn:x#A\"\r\n\
             Content-Length: 4\r\n\r\n<x/>"
        );
    }
}
