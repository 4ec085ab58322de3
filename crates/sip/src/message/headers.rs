//! Header fields: an ordered list of raw `name: value` pairs plus typed views
//! (Via, name-addr for From/To/Contact/Route, CSeq) parsed on demand.
//!
//! Keeping the raw text means a message we relay or answer loses nothing we did not
//! understand, and parsing a header we never look at costs nothing.

use std::fmt;

use super::params::{Params, split_outside_quotes, unquote};
use super::uri::{Uri, split_host_port};
use super::{Method, ParseError};

/// Compact header forms (RFC 3261 §7.3.3) and their canonical names, plus the
/// canonical spelling of the headers we set ourselves.
const CANONICAL: &[(&str, &str)] = &[
    ("i", "Call-ID"),
    ("m", "Contact"),
    ("e", "Content-Encoding"),
    ("l", "Content-Length"),
    ("c", "Content-Type"),
    ("f", "From"),
    ("s", "Subject"),
    ("k", "Supported"),
    ("t", "To"),
    ("v", "Via"),
    ("x", "Session-Expires"),
    ("r", "Refer-To"),
    ("b", "Referred-By"),
    ("call-id", "Call-ID"),
    ("contact", "Contact"),
    ("content-length", "Content-Length"),
    ("content-type", "Content-Type"),
    ("from", "From"),
    ("to", "To"),
    ("via", "Via"),
    ("cseq", "CSeq"),
    ("max-forwards", "Max-Forwards"),
    ("expires", "Expires"),
    ("www-authenticate", "WWW-Authenticate"),
    ("proxy-authenticate", "Proxy-Authenticate"),
    ("authorization", "Authorization"),
    ("proxy-authorization", "Proxy-Authorization"),
    ("route", "Route"),
    ("record-route", "Record-Route"),
];

/// The canonical name for `name` (expanding compact forms).
pub fn canonical_name(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    CANONICAL
        .iter()
        .find(|(k, _)| *k == lower)
        .map(|(_, v)| (*v).to_owned())
        .unwrap_or_else(|| name.to_owned())
}

/// The header fields of a message, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    pub fn new() -> Headers {
        Headers::default()
    }

    /// Appends a header field.
    pub fn push(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = canonical_name(&name.into());
        self.0.push((name, value.into()));
    }

    /// Inserts a header field before all others (used for Via).
    pub fn push_front(&mut self, name: &str, value: impl Into<String>) {
        self.0.insert(0, (canonical_name(name), value.into()));
    }

    /// Replaces every field called `name` by one with `value`, keeping its position.
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        let name = canonical_name(name);
        match self.0.iter().position(|(n, _)| n.eq_ignore_ascii_case(&name)) {
            Some(i) => {
                self.0[i].1 = value.into();
                let mut idx = 0;
                self.0.retain(|(n, _)| {
                    let keep = idx <= i || !n.eq_ignore_ascii_case(&name);
                    idx += 1;
                    keep
                });
            }
            None => self.0.push((name, value.into())),
        }
    }

    pub fn remove(&mut self, name: &str) {
        let name = canonical_name(name);
        self.0.retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
    }

    /// The first field called `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.get_all(name).next()
    }

    /// Every field called `name`, in order (one per header line).
    pub fn get_all<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> + 'a {
        let name = canonical_name(name);
        self.0
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(&name))
            .map(|(_, v)| v.as_str())
    }

    /// Every comma-separated value of `name` across all its lines (Via, Route, Contact…).
    pub fn values<'a>(&'a self, name: &str) -> Vec<&'a str> {
        self.get_all(name)
            .flat_map(|v| split_outside_quotes(v, b','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect()
    }

    /// Whether the comma-separated values of `name` include `token` (an option tag
    /// in Require or Supported, a method in Allow), compared without case.
    pub fn lists(&self, name: &str, token: &str) -> bool {
        self.values(name).iter().any(|v| v.eq_ignore_ascii_case(token))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The top Via, parsed.
    pub fn top_via(&self) -> Result<Via, ParseError> {
        let v = self
            .values("Via")
            .into_iter()
            .next()
            .ok_or_else(|| ParseError::new("missing Via"))?;
        Via::parse(v)
    }

    /// Every Via, parsed, top first.
    pub fn vias(&self) -> Result<Vec<Via>, ParseError> {
        self.values("Via").into_iter().map(Via::parse).collect()
    }

    pub fn cseq(&self) -> Result<CSeq, ParseError> {
        CSeq::parse(self.get("CSeq").ok_or_else(|| ParseError::new("missing CSeq"))?)
    }

    pub fn call_id(&self) -> Result<&str, ParseError> {
        match self.get("Call-ID").map(str::trim) {
            Some(id) if !id.is_empty() => Ok(id),
            _ => Err(ParseError::new("missing Call-ID")),
        }
    }

    pub fn from(&self) -> Result<NameAddr, ParseError> {
        NameAddr::parse(self.get("From").ok_or_else(|| ParseError::new("missing From"))?)
    }

    pub fn to(&self) -> Result<NameAddr, ParseError> {
        NameAddr::parse(self.get("To").ok_or_else(|| ParseError::new("missing To"))?)
    }

    /// All Contact values (a `*` Contact yields an error; only REGISTER may use it).
    pub fn contacts(&self) -> Result<Vec<NameAddr>, ParseError> {
        self.values("Contact").into_iter().map(NameAddr::parse).collect()
    }

    /// A header holding a non-negative integer (Expires, Max-Forwards, Min-Expires…).
    pub fn u32_value(&self, name: &str) -> Option<Result<u32, ParseError>> {
        self.get(name).map(|v| {
            v.trim()
                .parse::<u32>()
                .map_err(|_| ParseError::new(format!("bad {name} value {v:?}")))
        })
    }
}

impl fmt::Display for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, v) in &self.0 {
            write!(f, "{n}: {v}\r\n")?;
        }
        Ok(())
    }
}

/// A Via header value: `SIP/2.0/UDP host:port;branch=…;rport`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// Upper-case transport: `UDP`, `TCP`, `TLS`, `WS`, …
    pub transport: String,
    pub host: String,
    pub port: Option<u16>,
    pub params: Params,
}

impl Via {
    pub fn parse(s: &str) -> Result<Via, ParseError> {
        let s = s.trim();
        let bad = || ParseError::new(format!("bad Via {s:?}"));
        // sent-protocol: SIP / 2.0 / UDP (whitespace allowed around slashes)
        let mut rest = s;
        let mut proto = Vec::with_capacity(3);
        for i in 0..3 {
            rest = rest.trim_start();
            let end = if i < 2 {
                rest.find('/').ok_or_else(bad)?
            } else {
                rest.find(|c: char| c.is_ascii_whitespace()).ok_or_else(bad)?
            };
            proto.push(rest[..end].trim());
            rest = &rest[end..];
            if i < 2 {
                rest = &rest[1..];
            }
        }
        if !proto[0].eq_ignore_ascii_case("SIP") || proto[1] != "2.0" || proto[2].is_empty() {
            return Err(bad());
        }
        let rest = rest.trim();
        let (sent_by, params) = match rest.find(';') {
            Some(i) => (&rest[..i], Params::parse(&rest[i..])?),
            None => (rest, Params::default()),
        };
        let (host, port) = split_host_port(sent_by)?;
        Ok(Via {
            transport: proto[2].to_ascii_uppercase(),
            host,
            port,
            params,
        })
    }

    pub fn branch(&self) -> Option<&str> {
        self.params.get("branch").flatten()
    }

    /// `sent-by` as text, used in transaction keys.
    pub fn sent_by(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{p}", self.host.to_ascii_lowercase()),
            None => self.host.to_ascii_lowercase(),
        }
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIP/2.0/{} {}", self.transport, self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        write!(f, "{}", self.params)
    }
}

/// `"Display" <uri>;params` as used by From, To, Contact, Route, Record-Route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    pub display: Option<String>,
    pub uri: Uri,
    pub params: Params,
}

impl NameAddr {
    pub fn new(uri: Uri) -> NameAddr {
        NameAddr {
            display: None,
            uri,
            params: Params::default(),
        }
    }

    pub fn parse(s: &str) -> Result<NameAddr, ParseError> {
        let s = s.trim();
        if let Some(lt) = find_unquoted(s, b'<') {
            let display = s[..lt].trim();
            let display = if display.is_empty() {
                None
            } else {
                Some(unquote(display).to_owned())
            };
            let gt = s[lt..]
                .find('>')
                .ok_or_else(|| ParseError::new(format!("missing '>' in {s:?}")))?
                + lt;
            let uri = Uri::parse(&s[lt + 1..gt])?;
            let params = Params::parse(&s[gt + 1..])?;
            Ok(NameAddr { display, uri, params })
        } else {
            // addr-spec without brackets: parameters belong to the header, not the URI.
            // (LWS may come before the ';', RFC 3261 §25.1 SEMI)
            let (uri, params) = match s.find(';') {
                Some(i) => (s[..i].trim_end(), Params::parse(&s[i..])?),
                None => (s, Params::default()),
            };
            if uri.contains(|c: char| c.is_ascii_whitespace()) {
                return Err(ParseError::new(format!("bad address {s:?}")));
            }
            Ok(NameAddr {
                display: None,
                uri: Uri::parse(uri)?,
                params,
            })
        }
    }

    pub fn tag(&self) -> Option<&str> {
        self.params.get("tag").flatten()
    }
}

fn find_unquoted(s: &str, needle: u8) -> Option<usize> {
    let mut in_quotes = false;
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if in_quotes => i += 1,
            b'"' => in_quotes = !in_quotes,
            b if b == needle && !in_quotes => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.display {
            let escaped = d.replace('\\', "\\\\").replace('"', "\\\"");
            write!(f, "\"{escaped}\" ")?;
        }
        write!(f, "<{}>{}", self.uri, self.params)
    }
}

/// `CSeq: 42 INVITE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: Method,
}

impl CSeq {
    pub fn parse(s: &str) -> Result<CSeq, ParseError> {
        let mut it = s.split_ascii_whitespace();
        let bad = || ParseError::new(format!("bad CSeq {s:?}"));
        let seq = it.next().ok_or_else(bad)?.parse::<u32>().map_err(|_| bad())?;
        let method = Method::parse(it.next().ok_or_else(bad)?)?;
        if it.next().is_some() {
            return Err(bad());
        }
        Ok(CSeq { seq, method })
    }
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addr_spec_may_have_space_before_its_parameters() {
        // RFC 4475 wsinv's To
        let a = NameAddr::parse("sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n").unwrap();
        assert_eq!(a.uri.host, "chair-dnrc.example.com");
        assert_eq!(a.tag(), Some("1918181833n"));
    }

    #[test]
    fn via_parses_with_spaces_and_params() {
        let v = Via::parse("SIP / 2.0 / udp 10.0.0.1:5060 ;branch=z9hG4bKx;rport;received=1.2.3.4").unwrap();
        assert_eq!(v.transport, "UDP");
        assert_eq!(v.host, "10.0.0.1");
        assert_eq!(v.port, Some(5060));
        assert_eq!(v.branch(), Some("z9hG4bKx"));
        assert_eq!(v.params.get("rport"), Some(None));
        assert_eq!(
            v.to_string(),
            "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx;rport;received=1.2.3.4"
        );
        for bad in [
            "",
            "SIP/2.0",
            "SIP/3.0/UDP h",
            "SIP/2.0/UDP",
            "HTTP/2.0/UDP h",
            "SIP/2.0/UDP h:x",
        ] {
            assert!(Via::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn name_addr_forms() {
        let n = NameAddr::parse("\"Bob \\\"B\\\"\" <sip:bob@h;transport=tcp>;tag=abc").unwrap();
        assert_eq!(n.display.as_deref(), Some("Bob \\\"B\\\""));
        assert_eq!(n.uri.transport_param().as_deref(), Some("tcp"));
        assert_eq!(n.tag(), Some("abc"));
        let n = NameAddr::parse("sip:bob@h;tag=1").unwrap();
        assert_eq!(n.tag(), Some("1"));
        assert!(n.uri.params.0.is_empty());
        let n = NameAddr::parse("Anonymous <sip:anonymous@anonymous.invalid>").unwrap();
        assert_eq!(n.display.as_deref(), Some("Anonymous"));
        assert!(NameAddr::parse("<sip:x@h").is_err());
        assert!(NameAddr::parse("not an address").is_err());
    }

    #[test]
    fn headers_compact_and_multi() {
        let mut h = Headers::new();
        h.push(
            "v",
            "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2",
        );
        h.push("Via", "SIP/2.0/TCP c;branch=z9hG4bK3");
        h.push("i", "abc");
        assert_eq!(h.vias().unwrap().len(), 3);
        assert_eq!(h.top_via().unwrap().host, "a");
        assert_eq!(h.call_id().unwrap(), "abc");
        h.set("Call-ID", "def");
        assert_eq!(h.get_all("call-id").count(), 1);
        assert_eq!(h.get("CALL-ID"), Some("def"));
        h.push("X-A", "1");
        h.push("x-a", "2");
        h.set("X-A", "3");
        assert_eq!(h.get_all("X-A").collect::<Vec<_>>(), vec!["3"]);
    }

    #[test]
    fn cseq() {
        let c = CSeq::parse(" 42  INVITE ").unwrap();
        assert_eq!((c.seq, c.method), (42, Method::Invite));
        assert!(CSeq::parse("x INVITE").is_err());
        assert!(CSeq::parse("1").is_err());
        assert!(CSeq::parse("1 INVITE x").is_err());
        assert!(CSeq::parse("99999999999 INVITE").is_err());
    }
}
