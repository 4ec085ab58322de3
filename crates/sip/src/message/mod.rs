//! The SIP message model, its parser and its serialiser (RFC 3261 §7, §20).
//!
//! This is the part of sipline that faces the network: every byte a PBX or a stranger
//! sends goes through [`Message::parse`]. It never panics, bounds every length, and
//! reports what was wrong so the caller can answer `400 Bad Request` or log and drop.
//! Written here instead of taken from a crate: the only maintained SIP type crate
//! (ezk-sip-types) is tied to its own stack's buffer and header framework, and what we
//! need (raw headers plus a handful of typed views) is small enough to own and fuzz.

mod headers;
mod params;
mod uri;

use std::fmt;

pub use headers::{CSeq, Headers, NameAddr, Via, canonical_name};
pub(crate) use params::split_outside_quotes;
pub use params::{Params, unquote};
pub use uri::Uri;

/// Largest message we accept (UDP datagrams are smaller; a TCP peer may not make us
/// buffer more than this).
pub const MAX_MESSAGE_SIZE: usize = 65_535;
/// Most header lines we accept in one message, besides its Content-Length.
pub const MAX_HEADERS: usize = 256;

/// Why a message could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(String);

impl ParseError {
    pub fn new(msg: impl Into<String>) -> ParseError {
        ParseError(msg.into())
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}

/// A SIP method.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Register,
    Options,
    Info,
    Update,
    Prack,
    Subscribe,
    Notify,
    Refer,
    Message,
    Publish,
    /// Any other (extension) method, as written.
    Other(String),
}

impl Method {
    pub fn parse(s: &str) -> Result<Method, ParseError> {
        Ok(match s {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "REGISTER" => Method::Register,
            "OPTIONS" => Method::Options,
            "INFO" => Method::Info,
            "UPDATE" => Method::Update,
            "PRACK" => Method::Prack,
            "SUBSCRIBE" => Method::Subscribe,
            "NOTIFY" => Method::Notify,
            "REFER" => Method::Refer,
            "MESSAGE" => Method::Message,
            "PUBLISH" => Method::Publish,
            other => {
                if other.is_empty() || !other.bytes().all(params::is_token_byte) {
                    return Err(ParseError::new(format!("bad method {other:?}")));
                }
                Method::Other(other.to_owned())
            }
        })
    }

    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Register => "REGISTER",
            Method::Options => "OPTIONS",
            Method::Info => "INFO",
            Method::Update => "UPDATE",
            Method::Prack => "PRACK",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Refer => "REFER",
            Method::Message => "MESSAGE",
            Method::Publish => "PUBLISH",
            Method::Other(s) => s,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A SIP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    pub uri: Uri,
    pub headers: Headers,
    pub body: Vec<u8>,
}

/// A SIP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Headers,
    pub body: Vec<u8>,
}

/// A parsed SIP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Request(Request),
    Response(Response),
}

impl Request {
    pub fn new(method: Method, uri: Uri) -> Request {
        Request {
            method,
            uri,
            headers: Headers::new(),
            body: Vec::new(),
        }
    }

    /// Serialises the request; Content-Length is always written from the body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("{} {} SIP/2.0\r\n", self.method, self.uri).into_bytes();
        write_headers_and_body(&mut out, &self.headers, &self.body);
        out
    }

    /// Checks what RFC 3261 §8.2 requires of every request we accept:
    /// Via, From, To, Call-ID and a CSeq whose method matches the Request-Line.
    pub fn validate(&self) -> Result<(), ParseError> {
        for name in ["From", "To", "Call-ID", "CSeq", "Max-Forwards", "Content-Length"] {
            if self.headers.get_all(name).nth(1).is_some() {
                return Err(ParseError::new(format!("more than one {name}")));
            }
        }
        self.headers.top_via()?;
        self.headers.from()?;
        self.headers.to()?;
        self.headers.call_id()?;
        let cseq = self.headers.cseq()?;
        if cseq.method != self.method {
            return Err(ParseError::new(format!(
                "CSeq method {} does not match {}",
                cseq.method, self.method
            )));
        }
        if let Some(Err(e)) = self.headers.u32_value("Max-Forwards") {
            return Err(e);
        }
        Ok(())
    }
}

impl Response {
    /// A response to `req` (RFC 3261 §8.2.6): Via, From, To, Call-ID and CSeq copied.
    /// The caller adds a To tag where one is needed.
    pub fn for_request(req: &Request, status: u16, reason: &str) -> Response {
        let mut headers = Headers::new();
        for v in req.headers.get_all("Via") {
            headers.push("Via", v);
        }
        for name in ["From", "To", "Call-ID", "CSeq"] {
            if let Some(v) = req.headers.get(name) {
                headers.push(name, v);
            }
        }
        Response {
            status,
            reason: reason.to_owned(),
            headers,
            body: Vec::new(),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("SIP/2.0 {} {}\r\n", self.status, self.reason).into_bytes();
        write_headers_and_body(&mut out, &self.headers, &self.body);
        out
    }

    pub fn is_provisional(&self) -> bool {
        self.status < 200
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// What can still be answered of a request that does not parse (RFC 3261 §8.2, RFC
/// 4475 §3.1.2): a bare-bones error response (400, or 505 for another SIP version)
/// carrying the request's Via, From, To, Call-ID and CSeq as they were written, when all
/// five are there and the first line reads as a request. `None` for anything else (a
/// response, or too little to route an answer back): that is dropped.
pub fn answer_to_unparsable(data: &[u8]) -> Option<Response> {
    let data = &data[..data.len().min(MAX_MESSAGE_SIZE)];
    // the header section as the parser cuts it, or all of it when it never ends
    let head_end = find_head_end(data).map_or(data.len(), |(end, _)| end);
    let lines = unfold_lines(std::str::from_utf8(&data[..head_end]).ok()?).ok()?;
    let (start, fields) = lines.split_first()?;
    let mut words = start.split_whitespace();
    let method = words.next()?;
    if method.starts_with("SIP/") || !method.bytes().all(params::is_token_byte) {
        return None;
    }
    let version = words.last()?;
    let (status, reason) = if version.starts_with("SIP/") && version != "SIP/2.0" {
        (505, "Version Not Supported")
    } else {
        (400, "Bad Request")
    };
    let fields: Vec<(String, &str)> = fields
        .iter()
        .take(MAX_HEADERS)
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (canonical_name(name.trim()), value.trim()))
        .collect();
    let mut headers = Headers::new();
    for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
        let mut values = fields.iter().filter(|(n, _)| n == name).map(|(_, v)| *v);
        let first = values.next()?;
        if name == "To" && !first.to_ascii_lowercase().contains("tag=") {
            headers.push(name, format!("{first};tag=unparsable"));
        } else {
            headers.push(name, first);
        }
        if name == "Via" {
            values.for_each(|v| headers.push(name, v));
        }
    }
    Some(Response {
        status,
        reason: reason.to_owned(),
        headers,
        body: Vec::new(),
    })
}

fn is_content_length(name: &str) -> bool {
    name.eq_ignore_ascii_case("Content-Length") || name.eq_ignore_ascii_case("l")
}

fn write_headers_and_body(out: &mut Vec<u8>, headers: &Headers, body: &[u8]) {
    for (n, v) in headers.iter() {
        if n.eq_ignore_ascii_case("Content-Length") {
            continue;
        }
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body);
}

impl Message {
    /// Parses one whole message (a UDP datagram, or a frame cut by [`frame_length`]).
    ///
    /// Without Content-Length the body is the rest of the datagram (allowed on UDP);
    /// a Content-Length larger than what arrived is an error (a truncated message).
    pub fn parse(data: &[u8]) -> Result<Message, ParseError> {
        if data.len() > MAX_MESSAGE_SIZE {
            return Err(ParseError::new("message too large"));
        }
        let (head_end, body_start) =
            find_head_end(data).ok_or_else(|| ParseError::new("no end of headers (truncated message?)"))?;
        let head = std::str::from_utf8(&data[..head_end])
            .map_err(|_| ParseError::new("header section is not UTF-8"))?;
        let mut lines = unfold_lines(head)?.into_iter();
        let start = lines.next().ok_or_else(|| ParseError::new("empty message"))?;
        let mut headers = Headers::new();
        // Content-Length is not counted: there is at most one, and serialising always
        // writes one, so a message at the limit without it still parses once written
        let mut counted = 0;
        for line in lines {
            let colon = line
                .find(':')
                .ok_or_else(|| ParseError::new(format!("header line without ':': {line:?}")))?;
            let name = line[..colon].trim_end();
            if name.is_empty() || !name.bytes().all(params::is_token_byte) {
                return Err(ParseError::new(format!("bad header name {name:?}")));
            }
            headers.push(name, line[colon + 1..].trim());
            if !is_content_length(name) {
                counted += 1;
                if counted > MAX_HEADERS {
                    return Err(ParseError::new("too many header fields"));
                }
            }
        }
        let rest = &data[body_start..];
        let body = match headers.get_all("Content-Length").collect::<Vec<_>>().as_slice() {
            [] => rest.to_vec(),
            [cl] => {
                let len = cl
                    .trim()
                    .parse::<usize>()
                    .map_err(|_| ParseError::new(format!("bad Content-Length {cl:?}")))?;
                if len > rest.len() {
                    return Err(ParseError::new(format!(
                        "Content-Length {len} but only {} body bytes (truncated message)",
                        rest.len()
                    )));
                }
                rest[..len].to_vec()
            }
            _ => return Err(ParseError::new("more than one Content-Length")),
        };
        parse_start_line(&start, headers, body)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Message::Request(r) => r.to_bytes(),
            Message::Response(r) => r.to_bytes(),
        }
    }

    pub fn headers(&self) -> &Headers {
        match self {
            Message::Request(r) => &r.headers,
            Message::Response(r) => &r.headers,
        }
    }
}

fn parse_start_line(start: &str, headers: Headers, body: Vec<u8>) -> Result<Message, ParseError> {
    if let Some(rest) = start.strip_prefix("SIP/2.0 ") {
        let rest = rest.trim_start();
        let (code, reason) = match rest.find(' ') {
            Some(i) => (&rest[..i], rest[i + 1..].trim()),
            None => (rest, ""),
        };
        let status = code
            .parse::<u16>()
            .ok()
            .filter(|c| (100..=699).contains(c))
            .ok_or_else(|| ParseError::new(format!("bad status code {code:?}")))?;
        return Ok(Message::Response(Response {
            status,
            reason: reason.to_owned(),
            headers,
            body,
        }));
    }
    let mut parts = start.split(' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError::new(format!("bad start line {start:?}")));
    };
    if version != "SIP/2.0" {
        return Err(ParseError::new(format!("unsupported version {version:?}")));
    }
    Ok(Message::Request(Request {
        method: Method::parse(method)?,
        uri: Uri::parse(uri)?,
        headers,
        body,
    }))
}

/// Finds the blank line ending the header section: returns (end of headers, start of body).
/// Accepts bare LF line ends, as RFC 3261 §7.5 asks of a tolerant parser.
fn find_head_end(data: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i < data.len() {
        if data[i] == b'\n' {
            if data.get(i + 1) == Some(&b'\n') {
                return Some((i, i + 2));
            }
            if data.get(i + 1) == Some(&b'\r') && data.get(i + 2) == Some(&b'\n') {
                return Some((i, i + 3));
            }
        }
        i += 1;
    }
    None
}

/// Splits the header section into logical lines, joining folded continuation lines.
fn unfold_lines(head: &str) -> Result<Vec<String>, ParseError> {
    // Leading CRLFs before a message are keep-alives (RFC 5626) and must be skipped.
    let head = head.trim_start_matches(['\r', '\n']);
    let mut lines: Vec<String> = Vec::new();
    for raw in head.split('\n') {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        if raw.starts_with([' ', '\t']) {
            let last = lines
                .last_mut()
                .ok_or_else(|| ParseError::new("continuation line before the start line"))?;
            last.push(' ');
            last.push_str(raw.trim());
        } else {
            lines.push(raw.to_owned());
        }
    }
    Ok(lines)
}

/// Stream framing (SIP over TCP, RFC 3261 §18.3): how many bytes at the start of
/// `buf` form one whole message. `Ok(None)`: wait for more data. Leading CRLF
/// keep-alives count as a frame of their own. Errors mean the stream is unusable.
pub fn frame_length(buf: &[u8]) -> Result<Option<usize>, ParseError> {
    let crlfs = buf.iter().take_while(|b| **b == b'\r' || **b == b'\n').count();
    if crlfs > 0 {
        return Ok(Some(crlfs));
    }
    let Some((head_end, body_start)) = find_head_end(buf) else {
        if buf.len() > MAX_MESSAGE_SIZE {
            return Err(ParseError::new("header section too large"));
        }
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let mut len = None;
    for line in head.split('\n') {
        if let Some(colon) = line.find(':') {
            let name = line[..colon].trim();
            if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l") {
                len = Some(
                    line[colon + 1..]
                        .trim()
                        .parse::<usize>()
                        .map_err(|_| ParseError::new("bad Content-Length on stream"))?,
                );
            }
        }
    }
    let len = len.ok_or_else(|| ParseError::new("no Content-Length on stream transport"))?;
    let total = body_start
        .checked_add(len)
        .filter(|t| *t <= MAX_MESSAGE_SIZE)
        .ok_or_else(|| ParseError::new("message too large"))?;
    Ok(if buf.len() >= total { Some(total) } else { None })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request with `n` header fields and no Content-Length.
    fn with_headers(n: usize) -> String {
        let mut m = "OPTIONS sip:a@b SIP/2.0\r\n".to_owned();
        for i in 0..n {
            m.push_str(&format!("X-{i}: v\r\n"));
        }
        m + "\r\n"
    }

    #[test]
    fn unparsable_requests_get_an_answer_when_they_can_be_routed() {
        let bad = "INVITE <sip:a@b> SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\n\
                   f: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\ni: abc\r\nCSeq: 1 INVITE\r\n\
                   Content-Length: 99\r\n\r\nv=0";
        assert!(Message::parse(bad.as_bytes()).is_err());
        let r = answer_to_unparsable(bad.as_bytes()).unwrap();
        assert_eq!((r.status, r.reason.as_str()), (400, "Bad Request"));
        assert_eq!(r.headers.get("Call-ID"), Some("abc"));
        assert_eq!(r.headers.get("From"), Some("<sip:x@y>;tag=1"));
        assert_eq!(r.headers.get("To"), Some("<sip:a@b>;tag=unparsable"));
        assert!(Message::parse(&r.to_bytes()).is_ok());
        let v7 = bad.replacen("SIP/2.0\r\nVia", "SIP/7.0\r\nVia", 1);
        assert_eq!(answer_to_unparsable(v7.as_bytes()).unwrap().status, 505);
        // nothing to route an answer with, or not a request: nothing
        assert!(answer_to_unparsable(b"INVITE sip:a@b SIP/2.0\r\nTo: <sip:a@b>\r\n\r\n").is_none());
        assert!(answer_to_unparsable(b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n").is_none());
        assert!(answer_to_unparsable(b"\xff\xfe").is_none());
    }

    #[test]
    fn header_limit_leaves_room_for_the_content_length_we_write() {
        // found by the `message` fuzz target: at the limit without Content-Length,
        // the serialised message (which always has one) was refused
        let msg = Message::parse(with_headers(MAX_HEADERS).as_bytes()).unwrap();
        let again = Message::parse(&msg.to_bytes()).unwrap();
        assert_eq!(again.headers().len(), MAX_HEADERS + 1);
        assert!(Message::parse(with_headers(MAX_HEADERS + 1).as_bytes()).is_err());
    }

    const INVITE: &str = "INVITE sip:bob@biloxi.com SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@biloxi.com>\r\n\
From: Alice <sip:alice@atlanta.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.atlanta.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@pc33.atlanta.com>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\
\r\n\
v=0\n";

    #[test]
    fn parses_rfc3261_invite() {
        let Message::Request(r) = Message::parse(INVITE.as_bytes()).unwrap() else {
            panic!("not a request")
        };
        assert_eq!(r.method, Method::Invite);
        assert_eq!(r.uri.user.as_deref(), Some("bob"));
        assert_eq!(r.headers.from().unwrap().tag(), Some("1928301774"));
        assert_eq!(r.headers.cseq().unwrap().seq, 314159);
        assert_eq!(r.body, b"v=0\n");
        r.validate().unwrap();
        // round trip
        let again = Message::parse(&r.to_bytes()).unwrap();
        assert_eq!(again, Message::Request(r));
    }

    #[test]
    fn parses_response_and_folding_and_lf_only() {
        let raw = "SIP/2.0 401 Unauthorized\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\nWWW-Authenticate: Digest realm=\"r\",\n  nonce=\"n\"\nContent-Length: 0\n\n";
        let Message::Response(r) = Message::parse(raw.as_bytes()).unwrap() else {
            panic!()
        };
        assert_eq!(r.status, 401);
        assert_eq!(r.reason, "Unauthorized");
        assert_eq!(
            r.headers.get("www-authenticate"),
            Some("Digest realm=\"r\", nonce=\"n\"")
        );
    }

    #[test]
    fn body_without_content_length_is_rest_of_datagram() {
        let raw = "OPTIONS sip:h SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n\r\nabc";
        let Message::Request(r) = Message::parse(raw.as_bytes()).unwrap() else {
            panic!()
        };
        assert_eq!(r.body, b"abc");
    }

    #[test]
    fn rejects_malformed() {
        let cases: &[&[u8]] = &[
            b"",
            b"\r\n\r\n",
            b"garbage",
            b"INVITE sip:a SIP/2.0\r\nVia: x",
            b"INVITE sip:a SIP/3.0\r\n\r\n",
            b"INVITE  sip:a SIP/2.0\r\n\r\n",
            b"INVITE sip:a SIP/2.0\r\nNoColon\r\n\r\n",
            b"INVITE sip:a SIP/2.0\r\nContent-Length: 10\r\n\r\nshort",
            b"INVITE sip:a SIP/2.0\r\nContent-Length: -1\r\n\r\n",
            b"INVITE sip:a SIP/2.0\r\nl: 1\r\nContent-Length: 1\r\n\r\nx",
            b"SIP/2.0 99 Low\r\n\r\n",
            b"SIP/2.0 abc Bad\r\n\r\n",
            b"IN VITE sip:a SIP/2.0\r\n\r\n",
            b"INVITE sip:a SIP/2.0\r\n\xff\xfe: x\r\n\r\n",
        ];
        for c in cases {
            assert!(
                Message::parse(c).is_err(),
                "{:?} should not parse",
                String::from_utf8_lossy(c)
            );
        }
    }

    #[test]
    fn validate_catches_missing_and_mismatched_headers() {
        let base = INVITE.replace("CSeq: 314159 INVITE", "CSeq: 1 BYE");
        let Message::Request(r) = Message::parse(base.as_bytes()).unwrap() else {
            panic!()
        };
        assert!(r.validate().is_err());
        let no_via = INVITE.replace(
            "Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds\r\n",
            "",
        );
        let Message::Request(r) = Message::parse(no_via.as_bytes()).unwrap() else {
            panic!()
        };
        assert!(r.validate().is_err());
    }

    #[test]
    fn response_for_request_copies_dialog_headers() {
        let Message::Request(req) = Message::parse(INVITE.as_bytes()).unwrap() else {
            panic!()
        };
        let resp = Response::for_request(&req, 486, "Busy Here");
        let text = String::from_utf8(resp.to_bytes()).unwrap();
        assert!(text.starts_with("SIP/2.0 486 Busy Here\r\n"));
        assert!(text.contains("CSeq: 314159 INVITE\r\n"));
        assert!(text.ends_with("Content-Length: 0\r\n\r\n"));
    }

    #[test]
    fn frames_a_stream() {
        let two = format!("\r\n\r\n{INVITE}{INVITE}");
        let b = two.as_bytes();
        assert_eq!(frame_length(b).unwrap(), Some(4));
        let n = frame_length(&b[4..]).unwrap().unwrap();
        assert_eq!(n, INVITE.len());
        assert_eq!(frame_length(&b[4..4 + n - 1]).unwrap(), None);
        assert!(frame_length(b"INVITE sip:a SIP/2.0\r\n\r\n").is_err());
    }
}
