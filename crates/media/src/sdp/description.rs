//! The session description model and its parser (RFC 8866, which replaced RFC 4566).
//!
//! [`Sdp::parse`] reads what PBXs, softphones and test tools actually send: CRLF or
//! bare LF line endings, surrounding whitespace, lines in a lax order, attributes
//! nobody has heard of. The lines that carry what negotiation needs (`v=`, `o=`, `c=`,
//! `m=`) are parsed strictly, and an error names the line and what is wrong with it;
//! every other line type (`b=`, `t=`, `i=`, `k=`, …) is skipped whatever it contains,
//! so a malformed bandwidth line cannot fail a call. Attributes sipline understands
//! become typed fields; all others, and understood ones that did not parse, are kept
//! in order so nothing is lost.

use std::fmt;
use std::net::IpAddr;

use super::{Codec, Direction};

/// Why an SDP body could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdpError {
    line: Option<usize>,
    reason: String,
}

impl SdpError {
    fn at(line: usize, reason: impl Into<String>) -> SdpError {
        SdpError {
            line: Some(line),
            reason: reason.into(),
        }
    }

    fn whole(reason: impl Into<String>) -> SdpError {
        SdpError {
            line: None,
            reason: reason.into(),
        }
    }

    /// The 1-based line the problem is on, when it is on one line.
    pub fn line(&self) -> Option<usize> {
        self.line
    }

    /// What is wrong, without the line number.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for SdpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "invalid SDP, line {line}: {}", self.reason),
            None => write!(f, "invalid SDP: {}", self.reason),
        }
    }
}

impl std::error::Error for SdpError {}

/// A parsed session description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sdp {
    /// The `o=` line.
    pub origin: Origin,
    /// The `s=` line (empty if there was none).
    pub session_name: String,
    /// The session-level `c=` line, which applies to media lines without their own.
    pub connection: Option<Connection>,
    /// The session-level direction attribute, if any; already folded into each
    /// [`Media::direction`].
    pub direction: Option<Direction>,
    /// Session-level attributes other than the direction, in order.
    pub attributes: Vec<Attribute>,
    /// The `m=` sections, in order (their positions matter in offer/answer).
    pub media: Vec<Media>,
}

/// The `o=` line: who made the session and which revision of it this is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The originator's user name, `-` when it has none.
    pub username: String,
    /// Identifies the session; opaque (some peers use numbers wider than 64 bits).
    pub session_id: String,
    /// Incremented by the writer on every change (RFC 3264 §8), so an unchanged
    /// version in a re-offer means an unchanged session.
    pub session_version: u64,
    /// `IN` for the Internet.
    pub network_type: String,
    /// `IP4` or `IP6`.
    pub address_type: String,
    /// The originating host, as written.
    pub address: String,
}

/// A `c=` line: where media goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// `IN` for the Internet.
    pub network_type: String,
    /// `IP4` or `IP6`.
    pub address_type: String,
    /// As written: an IP address, or a host name or multicast `addr/ttl` that sipline
    /// cannot use.
    pub address: String,
}

impl Connection {
    /// The address as an IP address, if it is a plain Internet unicast address as
    /// sipline can use one (no DNS names, no multicast TTL suffixes).
    pub fn ip(&self) -> Option<IpAddr> {
        if !self.network_type.eq_ignore_ascii_case("IN") {
            return None;
        }
        self.address.parse().ok()
    }

    /// Whether this is `0.0.0.0` (or `::`): the RFC 2543 way of saying "send me
    /// nothing", still used for hold by older equipment (RFC 3264 §8.4).
    pub fn is_unspecified(&self) -> bool {
        self.ip().is_some_and(|ip| ip.is_unspecified())
    }
}

/// The media type of an `m=` line.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MediaKind {
    Audio,
    Video,
    /// Anything else (`application`, `text`, `message`, …), as written.
    Other(String),
}

impl MediaKind {
    fn parse(token: &str) -> MediaKind {
        if token.eq_ignore_ascii_case("audio") {
            MediaKind::Audio
        } else if token.eq_ignore_ascii_case("video") {
            MediaKind::Video
        } else {
            MediaKind::Other(token.to_owned())
        }
    }
}

impl fmt::Display for MediaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MediaKind::Audio => f.write_str("audio"),
            MediaKind::Video => f.write_str("video"),
            MediaKind::Other(kind) => f.write_str(kind),
        }
    }
}

/// One `m=` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    pub kind: MediaKind,
    /// The RTP port; 0 means the stream is rejected or disabled (RFC 3264 §6, §8.2).
    pub port: u16,
    /// The `/count` after the port, for layered encodings; rare.
    pub port_count: Option<u16>,
    /// The transport protocol as written, e.g. `RTP/AVP` or `UDP/TLS/RTP/SAVPF`.
    pub protocol: String,
    /// The formats as written; for RTP, payload type numbers (see
    /// [`Media::payload_types`]).
    pub formats: Vec<String>,
    /// This section's own `c=` line, which overrides the session-level one.
    pub connection: Option<Connection>,
    /// `a=rtpmap` lines, in order, first one per payload type.
    pub rtpmaps: Vec<RtpMap>,
    /// `a=fmtp` lines, in order, first one per payload type.
    pub fmtps: Vec<Fmtp>,
    /// `a=ptime`: the packet duration in milliseconds the writer wants to receive.
    pub ptime: Option<u32>,
    /// The media-level direction attribute, else the session-level one, else
    /// [`Direction::SendRecv`].
    pub direction: Direction,
    /// `a=rtcp` (RFC 3605): where RTCP goes when it is not RTP port + 1.
    pub rtcp: Option<Rtcp>,
    /// `a=rtcp-mux` (RFC 5761): the writer wants RTCP on the RTP port.
    pub rtcp_mux: bool,
    /// Every other attribute of the section, in order, including understood ones
    /// that did not parse.
    pub attributes: Vec<Attribute>,
}

impl Media {
    /// Whether the port is 0: a rejected or disabled stream.
    pub fn is_rejected(&self) -> bool {
        self.port == 0
    }

    /// Whether the protocol is plain `RTP/AVP`, the one this gateway's SIP leg speaks
    /// (no SRTP, no AVPF feedback).
    pub fn is_plain_rtp(&self) -> bool {
        self.protocol.eq_ignore_ascii_case("RTP/AVP")
    }

    /// The formats that are RTP payload type numbers (0–127), in order.
    pub fn payload_types(&self) -> impl Iterator<Item = u8> + '_ {
        self.formats
            .iter()
            .filter_map(|format| format.parse::<u8>().ok())
            .filter(|payload_type| *payload_type <= MAX_PAYLOAD_TYPE)
    }

    /// The `a=rtpmap` for a payload type.
    pub fn rtpmap(&self, payload_type: u8) -> Option<&RtpMap> {
        self.rtpmaps
            .iter()
            .find(|rtpmap| rtpmap.payload_type == payload_type)
    }

    /// The `a=fmtp` parameters for a payload type.
    pub fn fmtp(&self, payload_type: u8) -> Option<&str> {
        self.fmtps
            .iter()
            .find(|fmtp| fmtp.payload_type == payload_type)
            .map(|fmtp| fmtp.parameters.as_str())
    }

    /// The codec a payload type stands for here: what its `a=rtpmap` says, or for a
    /// static type without one, what RFC 3551 says.
    pub fn codec(&self, payload_type: u8) -> Option<Codec> {
        match self.rtpmap(payload_type) {
            Some(rtpmap) => rtpmap.codec(),
            None => Codec::from_static_payload_type(payload_type),
        }
    }

    /// A payload type as a person would want it in a log or error: `18 G729/8000`,
    /// `0 PCMU/8000`, `34` when nothing names it.
    pub fn describe_payload_type(&self, payload_type: u8) -> String {
        match (self.rtpmap(payload_type), self.codec(payload_type)) {
            (Some(rtpmap), _) => format!("{payload_type} {}", rtpmap.value()),
            (None, Some(codec)) => format!("{payload_type} {codec}"),
            (None, None) => payload_type.to_string(),
        }
    }
}

/// Payload types are 7 bits (RFC 3550 §5.1).
const MAX_PAYLOAD_TYPE: u8 = 127;

/// An `a=rtpmap:<pt> <name>/<clock>[/<parameters>]` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMap {
    pub payload_type: u8,
    pub encoding_name: String,
    pub clock_rate: u32,
    /// For audio, the channel count.
    pub encoding_parameters: Option<String>,
}

impl RtpMap {
    /// The codec this describes, if sipline has it.
    pub fn codec(&self) -> Option<Codec> {
        Codec::from_rtpmap(
            &self.encoding_name,
            self.clock_rate,
            self.encoding_parameters.as_deref(),
        )
    }

    /// The part after the payload type, as in `PCMU/8000`.
    pub fn value(&self) -> String {
        match &self.encoding_parameters {
            Some(parameters) => format!("{}/{}/{parameters}", self.encoding_name, self.clock_rate),
            None => format!("{}/{}", self.encoding_name, self.clock_rate),
        }
    }

    fn parse(value: &str) -> Option<RtpMap> {
        let (payload_type, encoding) = value.trim().split_once(|c: char| c.is_ascii_whitespace())?;
        let payload_type = parse_payload_type(payload_type)?;
        let mut parts = encoding.trim().splitn(3, '/');
        let encoding_name = parts.next().filter(|name| !name.is_empty())?;
        let clock_rate = parts.next()?.trim().parse().ok()?;
        Some(RtpMap {
            payload_type,
            encoding_name: encoding_name.to_owned(),
            clock_rate,
            encoding_parameters: parts.next().map(str::to_owned),
        })
    }
}

/// An `a=fmtp:<pt> <parameters>` line; the parameters are codec-specific and kept as
/// written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fmtp {
    pub payload_type: u8,
    pub parameters: String,
}

impl Fmtp {
    fn parse(value: &str) -> Option<Fmtp> {
        let value = value.trim();
        let (payload_type, parameters) = value
            .split_once(|c: char| c.is_ascii_whitespace())
            .unwrap_or((value, ""));
        Some(Fmtp {
            payload_type: parse_payload_type(payload_type)?,
            parameters: parameters.trim().to_owned(),
        })
    }
}

/// An `a=rtcp:<port>[ <nettype> <addrtype> <address>]` line (RFC 3605).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rtcp {
    pub port: u16,
    /// Where RTCP goes if not to the media's connection address.
    pub connection: Option<Connection>,
}

impl Rtcp {
    fn parse(value: &str) -> Option<Rtcp> {
        let mut fields = value.split_ascii_whitespace();
        let port = fields.next()?.parse().ok()?;
        let connection = match (fields.next(), fields.next(), fields.next()) {
            (None, _, _) => None,
            (Some(network_type), Some(address_type), Some(address)) => Some(Connection {
                network_type: network_type.to_owned(),
                address_type: address_type.to_owned(),
                address: address.to_owned(),
            }),
            _ => return None,
        };
        if fields.next().is_some() {
            return None;
        }
        Some(Rtcp { port, connection })
    }
}

/// An `a=` line: `a=name` (a property) or `a=name:value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    pub name: String,
    pub value: Option<String>,
}

impl fmt::Display for Attribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(value) => write!(f, "a={}:{value}", self.name),
            None => write!(f, "a={}", self.name),
        }
    }
}

fn parse_payload_type(s: &str) -> Option<u8> {
    s.trim()
        .parse::<u8>()
        .ok()
        .filter(|payload_type| *payload_type <= MAX_PAYLOAD_TYPE)
}

/// How much of an offending value an error quotes: enough to recognise it, not so
/// much that a hostile body floods the logs.
const EXCERPT_CHARS: usize = 60;

/// `s` quoted and shortened for an error message.
pub(super) fn excerpt(s: &str) -> String {
    match s.char_indices().nth(EXCERPT_CHARS) {
        Some((cut, _)) => format!("{:?}…", s.get(..cut).unwrap_or_default()),
        None => format!("{s:?}"),
    }
}

impl Sdp {
    /// Parses an SDP body. See the module documentation for what is tolerated.
    pub fn parse(text: &str) -> Result<Sdp, SdpError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut lines = text
            .split('\n')
            .enumerate()
            .map(|(index, line)| (index.saturating_add(1), line.trim_matches([' ', '\t', '\r'])))
            .filter(|(_, line)| !line.is_empty());

        match lines.next() {
            None => return Err(SdpError::whole("the body is empty")),
            Some((_, "v=0")) => {}
            Some((number, line)) if line.starts_with("v=") => {
                return Err(SdpError::at(
                    number,
                    format!("unsupported SDP version {}, expected v=0", excerpt(line)),
                ));
            }
            Some((number, line)) => {
                return Err(SdpError::at(
                    number,
                    format!("SDP must start with v=0, found {}", excerpt(line)),
                ));
            }
        }

        let mut session = SessionBuilder::default();
        let mut current: Option<MediaBuilder> = None;
        for (number, line) in lines {
            let (kind, value) = split_line(number, line)?;
            match (kind, current.as_mut()) {
                ('v', _) => {
                    return Err(SdpError::at(number, "a second v= line"));
                }
                ('m', _) => {
                    if let Some(done) = current.take() {
                        session.media.push(done.finish(session.direction));
                    }
                    current = Some(MediaBuilder::new(parse_media_line(number, value)?));
                }
                ('a', Some(media)) => media.add_attribute(parse_attribute(value)),
                ('a', None) => session.add_attribute(parse_attribute(value)),
                ('c', Some(media)) => {
                    let connection = parse_connection(number, value)?;
                    media.media.connection.get_or_insert(connection);
                }
                ('c', None) => {
                    let connection = parse_connection(number, value)?;
                    session.connection.get_or_insert(connection);
                }
                ('o', None) if session.origin.is_none() => {
                    session.origin = Some(parse_origin(number, value)?);
                }
                ('s', None) if session.session_name.is_none() => {
                    session.session_name = Some(value.to_owned());
                }
                // b=, t=, r=, z=, k=, i=, u=, e=, p=, repeated o= and s=, and line
                // types from the future: nothing negotiation needs.
                _ => {}
            }
        }
        if let Some(done) = current.take() {
            session.media.push(done.finish(session.direction));
        }

        let origin = session
            .origin
            .ok_or_else(|| SdpError::whole("no o= line before the first m= line"))?;
        Ok(Sdp {
            origin,
            session_name: session.session_name.unwrap_or_default(),
            connection: session.connection,
            direction: session.direction,
            attributes: session.attributes,
            media: session.media,
        })
    }

    /// The connection that applies to a media section: its own `c=`, else the
    /// session's.
    pub fn connection_for<'a>(&'a self, media: &'a Media) -> Option<&'a Connection> {
        media.connection.as_ref().or(self.connection.as_ref())
    }
}

/// Splits `x=value` into its type letter and value.
fn split_line(number: usize, line: &str) -> Result<(char, &str), SdpError> {
    if let Some(control) = line.chars().find(|c| c.is_control() && *c != '\t') {
        return Err(SdpError::at(
            number,
            format!(
                "control character U+{:04X} in {}",
                u32::from(control),
                excerpt(line)
            ),
        ));
    }
    let mut chars = line.chars();
    match (chars.next(), chars.next()) {
        (Some(kind), Some('=')) if kind.is_ascii_alphabetic() => Ok((kind, chars.as_str())),
        _ => Err(SdpError::at(
            number,
            format!("expected <letter>=<value>, found {}", excerpt(line)),
        )),
    }
}

/// `o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>`
fn parse_origin(number: usize, value: &str) -> Result<Origin, SdpError> {
    let fields: Vec<&str> = value.split_ascii_whitespace().collect();
    let [
        username,
        session_id,
        session_version,
        network_type,
        address_type,
        address,
    ] = fields.as_slice()
    else {
        return Err(SdpError::at(
            number,
            format!(
                "o= needs 6 fields (username, session id, version, network type, address \
                 type, address), found {} in {}",
                fields.len(),
                excerpt(value)
            ),
        ));
    };
    let session_version = session_version.parse().map_err(|_| {
        SdpError::at(
            number,
            format!(
                "o= session version {} is not a number below 2^64",
                excerpt(session_version)
            ),
        )
    })?;
    Ok(Origin {
        username: (*username).to_owned(),
        session_id: (*session_id).to_owned(),
        session_version,
        network_type: (*network_type).to_owned(),
        address_type: (*address_type).to_owned(),
        address: (*address).to_owned(),
    })
}

/// `c=<nettype> <addrtype> <connection-address>`
fn parse_connection(number: usize, value: &str) -> Result<Connection, SdpError> {
    let fields: Vec<&str> = value.split_ascii_whitespace().collect();
    let [network_type, address_type, address] = fields.as_slice() else {
        return Err(SdpError::at(
            number,
            format!(
                "c= needs 3 fields (network type, address type, address), found {} in {}",
                fields.len(),
                excerpt(value)
            ),
        ));
    };
    Ok(Connection {
        network_type: (*network_type).to_owned(),
        address_type: (*address_type).to_owned(),
        address: (*address).to_owned(),
    })
}

/// `m=<media> <port>[/<count>] <proto> <fmt> ...`; the formats may be missing, as some
/// peers write rejected streams.
fn parse_media_line(number: usize, value: &str) -> Result<Media, SdpError> {
    let mut fields = value.split_ascii_whitespace();
    let (Some(kind), Some(port), Some(protocol)) = (fields.next(), fields.next(), fields.next()) else {
        return Err(SdpError::at(
            number,
            format!(
                "m= needs a media type, a port and a protocol, found {}",
                excerpt(value)
            ),
        ));
    };
    let (port, port_count) = match port.split_once('/') {
        Some((port, count)) => (port, Some(count)),
        None => (port, None),
    };
    let port = port
        .parse()
        .map_err(|_| SdpError::at(number, format!("m= port {} is not a port number", excerpt(port))))?;
    let port_count = port_count
        .map(|count| {
            count.parse().map_err(|_| {
                SdpError::at(
                    number,
                    format!("m= port count {} is not a number", excerpt(count)),
                )
            })
        })
        .transpose()?;
    Ok(Media {
        kind: MediaKind::parse(kind),
        port,
        port_count,
        protocol: protocol.to_owned(),
        formats: fields.map(str::to_owned).collect(),
        connection: None,
        rtpmaps: Vec::new(),
        fmtps: Vec::new(),
        ptime: None,
        direction: Direction::SendRecv,
        rtcp: None,
        rtcp_mux: false,
        attributes: Vec::new(),
    })
}

fn parse_attribute(value: &str) -> Attribute {
    match value.split_once(':') {
        Some((name, value)) => Attribute {
            name: name.to_owned(),
            value: Some(value.to_owned()),
        },
        None => Attribute {
            name: value.to_owned(),
            value: None,
        },
    }
}

#[derive(Default)]
struct SessionBuilder {
    origin: Option<Origin>,
    session_name: Option<String>,
    connection: Option<Connection>,
    direction: Option<Direction>,
    attributes: Vec<Attribute>,
    media: Vec<Media>,
}

impl SessionBuilder {
    fn add_attribute(&mut self, attribute: Attribute) {
        if attribute.value.is_none()
            && let Some(direction) = Direction::from_attribute_name(&attribute.name)
        {
            self.direction.get_or_insert(direction);
            return;
        }
        self.attributes.push(attribute);
    }
}

struct MediaBuilder {
    media: Media,
    direction: Option<Direction>,
}

impl MediaBuilder {
    fn new(media: Media) -> MediaBuilder {
        MediaBuilder {
            media,
            direction: None,
        }
    }

    /// Files an attribute under its typed field, or keeps it as written if it is
    /// unknown, repeated or malformed.
    fn add_attribute(&mut self, attribute: Attribute) {
        let media = &mut self.media;
        let name = attribute.name.to_ascii_lowercase();
        let understood = match (name.as_str(), attribute.value.as_deref()) {
            ("rtpmap", Some(value)) => match RtpMap::parse(value) {
                Some(rtpmap) if media.rtpmap(rtpmap.payload_type).is_none() => {
                    media.rtpmaps.push(rtpmap);
                    true
                }
                _ => false,
            },
            ("fmtp", Some(value)) => match Fmtp::parse(value) {
                Some(fmtp) if media.fmtp(fmtp.payload_type).is_none() => {
                    media.fmtps.push(fmtp);
                    true
                }
                _ => false,
            },
            ("ptime", Some(value)) if media.ptime.is_none() => {
                // A zero packet time would make a packetiser spin; treat it as unparsed.
                media.ptime = value.trim().parse().ok().filter(|ptime| *ptime > 0);
                media.ptime.is_some()
            }
            ("rtcp", Some(value)) if media.rtcp.is_none() => {
                media.rtcp = Rtcp::parse(value);
                media.rtcp.is_some()
            }
            ("rtcp-mux", None) => {
                media.rtcp_mux = true;
                true
            }
            (name, None) if self.direction.is_none() => {
                self.direction = Direction::from_attribute_name(name);
                self.direction.is_some()
            }
            _ => false,
        };
        if !understood {
            media.attributes.push(attribute);
        }
    }

    fn finish(self, session_direction: Option<Direction>) -> Media {
        Media {
            direction: self.direction.or(session_direction).unwrap_or_default(),
            ..self.media
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::samples;
    use super::*;
    use std::net::Ipv4Addr;

    fn parse(text: &str) -> Sdp {
        match Sdp::parse(text) {
            Ok(sdp) => sdp,
            Err(error) => panic!("{error}\n{text}"),
        }
    }

    fn error(text: &str) -> SdpError {
        match Sdp::parse(text) {
            Ok(sdp) => panic!("parsed, expected an error: {sdp:?}"),
            Err(error) => error,
        }
    }

    #[test]
    fn asterisk_answer() {
        let sdp = parse(samples::ASTERISK_ANSWER);
        assert_eq!(sdp.origin.username, "-");
        assert_eq!(sdp.origin.session_id, "1894798170");
        assert_eq!(sdp.origin.session_version, 1894798172);
        assert_eq!(sdp.origin.address, "192.0.2.10");
        assert_eq!(sdp.session_name, "Asterisk");
        assert_eq!(
            sdp.connection.as_ref().and_then(Connection::ip),
            Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)))
        );
        let [audio] = sdp.media.as_slice() else {
            panic!("one m= line expected: {:?}", sdp.media);
        };
        assert_eq!(audio.kind, MediaKind::Audio);
        assert_eq!(audio.port, 12345);
        assert_eq!(audio.protocol, "RTP/AVP");
        assert!(audio.is_plain_rtp());
        assert_eq!(audio.formats, ["0", "8", "101"]);
        assert!(audio.payload_types().eq([0, 8, 101]));
        assert_eq!(audio.codec(0), Some(Codec::Pcmu));
        assert_eq!(audio.codec(8), Some(Codec::Pcma));
        assert_eq!(audio.codec(101), Some(Codec::TelephoneEvent));
        assert_eq!(audio.fmtp(101), Some("0-16"));
        assert_eq!(audio.ptime, Some(20));
        assert_eq!(audio.direction, Direction::SendRecv);
        assert_eq!(audio.rtcp, None);
        assert!(!audio.rtcp_mux);
        // maxptime is not interpreted, but kept.
        assert_eq!(
            audio.attributes,
            [Attribute {
                name: "maxptime".into(),
                value: Some("150".into())
            }]
        );
    }

    #[test]
    fn freeswitch_offer() {
        let sdp = parse(samples::FREESWITCH_OFFER);
        assert_eq!(sdp.origin.username, "FreeSWITCH");
        assert_eq!(sdp.media.len(), 2);
        let audio = &sdp.media[0];
        assert!(audio.payload_types().eq([9, 0, 8, 101, 13]));
        assert_eq!(audio.codec(9), Some(Codec::G722));
        // Comfort noise is listed but not a codec we have.
        assert_eq!(audio.codec(13), None);
        assert_eq!(audio.describe_payload_type(13), "13 CN/8000");
        assert_eq!(
            audio.rtcp,
            Some(Rtcp {
                port: 16385,
                connection: Some(Connection {
                    network_type: "IN".into(),
                    address_type: "IP4".into(),
                    address: "198.51.100.20".into(),
                }),
            })
        );
        let video = &sdp.media[1];
        assert_eq!(video.kind, MediaKind::Video);
        assert!(video.is_rejected());
        assert_eq!(video.formats, ["31"]);
    }

    #[test]
    fn baresip_offer() {
        let sdp = parse(samples::BARESIP_OFFER);
        assert_eq!(
            sdp.attributes,
            [Attribute {
                name: "tool".into(),
                value: Some("baresip 1.0.0".into())
            }]
        );
        let audio = &sdp.media[0];
        assert!(audio.payload_types().eq([0, 8, 101]));
        assert_eq!(audio.fmtp(101), Some("0-15"));
        assert_eq!(
            audio.rtcp,
            Some(Rtcp {
                port: 10109,
                connection: None
            })
        );
        let names: Vec<&str> = audio.attributes.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["label", "ssrc", "rtcp-rsize"]);
        assert_eq!(
            audio.attributes[1].value.as_deref(),
            Some("1226585478 cname:2bd8ed5c-2dc4-4cb0-a28a-1ba0f3c1c9c0")
        );
    }

    #[test]
    fn sipp_offer_with_lf_line_endings() {
        assert!(!samples::SIPP_OFFER.contains('\r'));
        let sdp = parse(samples::SIPP_OFFER);
        assert_eq!(sdp.origin.username, "user1");
        assert_eq!(sdp.origin.session_version, 2353687637);
        let audio = &sdp.media[0];
        assert_eq!(audio.port, 6000);
        assert!(audio.payload_types().eq([0]));
        assert_eq!(audio.codec(0), Some(Codec::Pcmu));
    }

    #[test]
    fn sipp_template_without_substitution_says_which_field() {
        let template = samples::SIPP_OFFER.replace("6000", "[media_port]");
        let error = error(&template);
        assert_eq!(error.line(), Some(6));
        assert_eq!(
            error.to_string(),
            "invalid SDP, line 6: m= port \"[media_port]\" is not a port number"
        );
    }

    #[test]
    fn media_level_connection_overrides_session_level() {
        let sdp = parse(samples::MEDIA_LEVEL_CONNECTION_OFFER);
        let audio = &sdp.media[0];
        assert_eq!(
            sdp.connection_for(audio).and_then(Connection::ip),
            Some(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)))
        );
        assert_eq!(
            sdp.connection.as_ref().and_then(Connection::ip),
            Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1)))
        );
    }

    #[test]
    fn hold_offer_direction() {
        let sdp = parse(samples::HOLD_OFFER);
        assert_eq!(sdp.media[0].direction, Direction::SendOnly);
    }

    #[test]
    fn session_level_direction_applies_unless_media_overrides() {
        let sdp = parse(
            "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
             a=inactive\r\nm=audio 4000 RTP/AVP 0\r\nm=audio 4002 RTP/AVP 0\r\na=recvonly\r\n",
        );
        assert_eq!(sdp.direction, Some(Direction::Inactive));
        assert_eq!(sdp.media[0].direction, Direction::Inactive);
        assert_eq!(sdp.media[1].direction, Direction::RecvOnly);
        assert!(sdp.attributes.is_empty());
    }

    #[test]
    fn old_style_hold_address() {
        let sdp = parse(&samples::SIPP_OFFER.replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0"));
        let connection = sdp.connection_for(&sdp.media[0]);
        assert!(connection.is_some_and(Connection::is_unspecified));
        assert!(
            !parse(samples::SIPP_OFFER)
                .connection
                .is_some_and(|c| c.is_unspecified())
        );
    }

    #[test]
    fn chrome_offer_parses() {
        let sdp = parse(samples::CHROME_OFFER);
        let audio = &sdp.media[0];
        assert_eq!(audio.protocol, "RTP/SAVPF");
        assert!(!audio.is_plain_rtp());
        assert!(audio.rtcp_mux);
        assert_eq!(audio.codec(111), Some(Codec::Opus));
        assert_eq!(audio.fmtp(111), Some("minptime=10;useinbandfec=1"));
        assert_eq!(audio.codec(126), Some(Codec::TelephoneEvent));
        // telephone-event at 48 kHz is WebRTC's, not ours.
        assert_eq!(audio.codec(110), None);
        assert!(sdp.connection_for(audio).is_some_and(Connection::is_unspecified));
    }

    #[test]
    fn tolerates_what_real_peers_send() {
        let sdp = parse(
            "\u{feff}v=0 \n\
             o=- 1 2 IN IP4 192.0.2.1\n\
             s=\n\
             s=second session name\n\
             i=information\n\
             c=IN IP4 192.0.2.1\n\
             b=AS:64 \n\
             b=TIAS:64000.5\n\
             t=0\n\
             z=nonsense\n\
             x=a line type from the future\n\
             \x20\n\
             \n\
             m=audio 4000 RTP/AVP 0 8\n\
             b=RR:0\n\
             a=rtpmap:0 PCMU/8000\n\
             a=rtpmap:8 not a valid rtpmap\n\
             a=ptime:twenty\n\
             a=ptime:0\n\
             a=X-custom\n\
             a=\n\
             m=video 0 RTP/AVP\n\
             m=application 0 UDP/DTLS/SCTP webrtc-datachannel\n",
        );
        assert_eq!(sdp.session_name, "");
        assert_eq!(sdp.origin.session_version, 2);
        let audio = &sdp.media[0];
        assert!(audio.payload_types().eq([0, 8]));
        // The broken rtpmap for 8 is kept as written, and 8 falls back to its static meaning.
        assert_eq!(audio.rtpmaps.len(), 1);
        assert_eq!(audio.codec(8), Some(Codec::Pcma));
        assert_eq!(audio.ptime, None);
        let kept: Vec<String> = audio.attributes.iter().map(ToString::to_string).collect();
        assert_eq!(
            kept,
            [
                "a=rtpmap:8 not a valid rtpmap",
                "a=ptime:twenty",
                "a=ptime:0",
                "a=X-custom",
                "a="
            ]
        );
        assert!(sdp.media[1].formats.is_empty());
        assert_eq!(sdp.media[2].kind, MediaKind::Other("application".into()));
        assert!(sdp.media[2].payload_types().next().is_none());
    }

    #[test]
    fn first_of_repeated_attributes_wins_and_repeats_are_kept() {
        let sdp = parse(
            "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
             m=audio 4000 RTP/AVP 96\r\na=rtpmap:96 opus/48000/2\r\na=rtpmap:96 PCMU/8000\r\n\
             a=ptime:20\r\na=ptime:30\r\na=sendonly\r\na=recvonly\r\nc=IN IP4 192.0.2.2\r\n\
             c=IN IP4 192.0.2.3\r\n",
        );
        let audio = &sdp.media[0];
        assert_eq!(audio.codec(96), Some(Codec::Opus));
        assert_eq!(audio.ptime, Some(20));
        assert_eq!(audio.direction, Direction::SendOnly);
        assert_eq!(
            audio.connection.as_ref().map(|c| c.address.as_str()),
            Some("192.0.2.2")
        );
        assert_eq!(audio.attributes.len(), 3);
    }

    #[test]
    fn attribute_values_are_parsed_leniently() {
        let rtpmap = RtpMap::parse("101  telephone-event/8000").unwrap();
        assert_eq!(rtpmap.codec(), Some(Codec::TelephoneEvent));
        assert_eq!(rtpmap.value(), "telephone-event/8000");
        assert_eq!(RtpMap::parse("128 PCMU/8000"), None);
        assert_eq!(RtpMap::parse("0 PCMU"), None);
        assert_eq!(RtpMap::parse("0 /8000"), None);
        assert_eq!(RtpMap::parse("0"), None);
        assert_eq!(
            Fmtp::parse("101"),
            Some(Fmtp {
                payload_type: 101,
                parameters: String::new()
            })
        );
        assert_eq!(Fmtp::parse("x 0-16"), None);
        assert_eq!(Rtcp::parse("53020 IN IP4"), None);
        assert_eq!(Rtcp::parse("53020 IN IP4 192.0.2.1 extra"), None);
        assert_eq!(Rtcp::parse("70000"), None);
    }

    #[test]
    fn connection_addresses_sipline_cannot_use() {
        let connection = |address: &str| Connection {
            network_type: "IN".into(),
            address_type: "IP4".into(),
            address: address.into(),
        };
        assert_eq!(connection("pbx.example.com").ip(), None);
        assert_eq!(connection("233.252.0.1/127").ip(), None);
        assert!(connection("192.0.2.1").ip().is_some());
        assert!(connection("::").is_unspecified());
        let other_network = Connection {
            network_type: "ATM".into(),
            ..connection("192.0.2.1")
        };
        assert_eq!(other_network.ip(), None);
    }

    #[test]
    fn errors_name_the_line_and_the_problem() {
        let cases: &[(&str, Option<usize>, &str)] = &[
            ("", None, "the body is empty"),
            ("\r\n \r\n", None, "the body is empty"),
            (
                "v=1\r\n",
                Some(1),
                "unsupported SDP version \"v=1\", expected v=0",
            ),
            (
                "INVITE sip:a@b SIP/2.0\r\n",
                Some(1),
                "SDP must start with v=0, found \"INVITE sip:a@b SIP/2.0\"",
            ),
            (
                "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\nhello\r\n",
                Some(3),
                "expected <letter>=<value>, found \"hello\"",
            ),
            (
                "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\nab=1\r\n",
                Some(3),
                "expected <letter>=<value>, found \"ab=1\"",
            ),
            (
                "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=a\0b\r\n",
                Some(3),
                "control character U+0000 in \"s=a\\0b\"",
            ),
            (
                "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=a\rb\r\n",
                Some(3),
                "control character U+000D in \"s=a\\rb\"",
            ),
            ("v=0\r\nv=0\r\n", Some(2), "a second v= line"),
            (
                "v=0\r\no=- 1 IN IP4 192.0.2.1\r\n",
                Some(2),
                "o= needs 6 fields (username, session id, version, network type, address \
                 type, address), found 5 in \"- 1 IN IP4 192.0.2.1\"",
            ),
            (
                "v=0\r\no=- 1 99999999999999999999 IN IP4 192.0.2.1\r\n",
                Some(2),
                "o= session version \"99999999999999999999\" is not a number below 2^64",
            ),
            (
                "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\nc=IN IP4\r\n",
                Some(3),
                "c= needs 3 fields (network type, address type, address), found 2 in \"IN IP4\"",
            ),
            (
                "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\nm=audio 4000\r\n",
                Some(3),
                "m= needs a media type, a port and a protocol, found \"audio 4000\"",
            ),
            (
                "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\nm=audio 70000 RTP/AVP 0\r\n",
                Some(3),
                "m= port \"70000\" is not a port number",
            ),
            (
                "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\nm=audio 4000/x RTP/AVP 0\r\n",
                Some(3),
                "m= port count \"x\" is not a number",
            ),
            (
                "v=0\r\ns=-\r\nm=audio 4000 RTP/AVP 0\r\n",
                None,
                "no o= line before the first m= line",
            ),
        ];
        for (text, line, reason) in cases {
            let error = error(text);
            assert_eq!((error.line(), error.reason()), (*line, *reason), "{text:?}");
        }
    }

    #[test]
    fn error_excerpts_are_bounded() {
        let long = format!("v=0\r\n{}\r\n", "x".repeat(10_000));
        let error = error(&long);
        assert!(error.to_string().len() < 120, "{error}");
        assert!(error.reason().ends_with("xxx\"…"));
        // Cutting never splits a multi-byte character.
        assert_eq!(excerpt(&"é".repeat(100)).chars().count(), EXCERPT_CHARS + 3);
    }

    #[test]
    fn mutated_samples_never_panic() {
        let mut rng = fastrand::Rng::with_seed(0x5d9_0ffe4);
        let mut parsed = 0;
        for round in 0..20_000 {
            let sample = samples::ALL[round % samples::ALL.len()];
            let mut bytes = sample.as_bytes().to_vec();
            for _ in 0..rng.usize(1..6) {
                mutate(&mut rng, &mut bytes);
            }
            let text = String::from_utf8_lossy(&bytes);
            if let Ok(sdp) = Sdp::parse(&text) {
                parsed += 1;
                // Whatever parses must also be safe to negotiate with.
                let local = samples::local_media();
                let _ = super::super::answer(&sdp, &local);
                let _ = super::super::negotiate_answer(&local, &sdp);
                for media in &sdp.media {
                    for payload_type in media.payload_types() {
                        let _ = media.describe_payload_type(payload_type);
                    }
                }
            }
        }
        // The mutations must leave enough intact to exercise more than the error paths.
        assert!(parsed > 2_000, "only {parsed} of 20000 mutated samples parsed");
    }

    fn mutate(rng: &mut fastrand::Rng, bytes: &mut Vec<u8>) {
        let at = rng.usize(..=bytes.len());
        match rng.u8(..6) {
            0 => {
                if let Some(byte) = bytes.get_mut(at) {
                    *byte ^= 1 << rng.u8(..8);
                }
            }
            1 => {
                if let Some(byte) = bytes.get_mut(at) {
                    *byte = rng.u8(..);
                }
            }
            2 => bytes.truncate(at),
            3 => {
                bytes.splice(at..at, *b"\r\n");
            }
            4 => bytes.insert(at, b'='),
            _ => bytes.insert(at, b':'),
        }
    }
}
