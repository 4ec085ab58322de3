//! Our side of the negotiation: the media parameters sipline offers, and the SDP text
//! it writes for offers and answers.
//!
//! The text follows what Asterisk writes, since that is what SIP peers are tested
//! against: CRLF line endings, one `c=` at session level, an `a=rtpmap` for every
//! payload type (static ones too), the `a=fmtp` for telephone-event, `a=ptime`, and an
//! explicit direction attribute.

use std::fmt::{self, Write as _};
use std::net::IpAddr;

use super::{Codec, Direction};
use crate::srtp::{MasterKey, SUITE};

/// The `s=` line of every SDP sipline writes.
pub const SESSION_NAME: &str = "sipline";
/// The packet duration sipline asks for, in milliseconds.
pub const DEFAULT_PTIME: u32 = 20;

/// A codec we offer, with the payload type we use for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LocalCodec {
    pub codec: Codec,
    /// The static payload type, or for Opus and telephone-event a dynamic one
    /// (96–127).
    pub payload_type: u8,
}

impl LocalCodec {
    /// The codec with its usual payload type (see [`Codec::default_payload_type`]).
    pub const fn new(codec: Codec) -> LocalCodec {
        LocalCodec {
            codec,
            payload_type: codec.default_payload_type(),
        }
    }

    /// The codec with a chosen (dynamic) payload type.
    pub const fn with_payload_type(codec: Codec, payload_type: u8) -> LocalCodec {
        LocalCodec { codec, payload_type }
    }
}

/// What sipline offers, or answers with, for the audio stream of one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalMedia {
    /// Where we receive RTP; also written as the `o=` address.
    pub address: IpAddr,
    /// Where we receive RTP; RTCP is on the next port unless muxed.
    pub rtp_port: u16,
    /// In order of preference, voice codecs and telephone-event together. Payload
    /// types must be distinct.
    pub codecs: Vec<LocalCodec>,
    /// The packet duration we want to receive, in milliseconds.
    pub ptime: u32,
    /// What we want to do: [`Direction::SendOnly`] to hold the far end.
    pub direction: Direction,
    /// Whether we offer, and accept, RTCP on the RTP port (RFC 5761). Off by default:
    /// plain SIP peers expect RTCP on RTP port + 1.
    pub rtcp_mux: bool,
    /// SDES-SRTP (RFC 4568) on this leg, if we do it: our key, and whether we insist.
    pub srtp: Option<LocalSrtp>,
    /// The `o=` session id, fixed for the call.
    pub session_id: u64,
    /// The `o=` session version: the caller increments it (see
    /// [`LocalMedia::next_version`]) every time it sends an SDP that differs from
    /// the previous one (RFC 3264 §8).
    pub session_version: u64,
}

impl LocalMedia {
    /// G.711 µ-law and A-law plus DTMF events, 20 ms, sendrecv, no RTCP mux, version 1:
    /// what every SIP peer supports. Add Opus or G.722 to `codecs` where the media
    /// path can handle them.
    pub fn new(address: IpAddr, rtp_port: u16, session_id: u64) -> LocalMedia {
        LocalMedia {
            address,
            rtp_port,
            codecs: vec![
                LocalCodec::new(Codec::Pcmu),
                LocalCodec::new(Codec::Pcma),
                LocalCodec::new(Codec::TelephoneEvent),
            ],
            ptime: DEFAULT_PTIME,
            direction: Direction::SendRecv,
            rtcp_mux: false,
            srtp: None,
            session_id,
            session_version: 1,
        }
    }

    /// Increments the session version, as required before sending a changed SDP.
    pub fn next_version(&mut self) {
        self.session_version = self.session_version.wrapping_add(1);
    }

    /// Whether we offer this codec.
    pub fn supports(&self, codec: Codec) -> bool {
        self.codecs.iter().any(|local| local.codec == codec)
    }

    /// Our voice codecs, most preferred first.
    pub fn voice_codecs(&self) -> impl Iterator<Item = Codec> + '_ {
        self.codecs
            .iter()
            .map(|local| local.codec)
            .filter(|codec| codec.is_voice())
    }
}

/// SRTP as we do it on a leg (the key stays for the whole call: re-offers repeat it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalSrtp {
    /// Our master key: what we encrypt with, sent in our `a=crypto`.
    pub key: MasterKey,
    /// Offer `RTP/SAVP` and refuse plain RTP (`media.srtp = "mandatory"`); else offer
    /// `RTP/AVP` with `a=crypto` and take SRTP when the far end answers with a key
    /// ("best effort", `"optional"`).
    pub required: bool,
}

/// The `a=crypto` tag of our key in offers (answers use the tag of the line chosen).
pub const OFFER_CRYPTO_TAG: u32 = 1;

/// How an `m=` line is carried: its profile and our `a=crypto`, if any.
pub(super) struct Transport<'a> {
    pub profile: &'static str,
    pub crypto: Option<(u32, &'a MasterKey)>,
}

impl Transport<'_> {
    /// What we offer with `local`.
    fn offered(local: &LocalMedia) -> Transport<'_> {
        Transport {
            profile: if local.srtp.as_ref().is_some_and(|s| s.required) {
                SAVP
            } else {
                AVP
            },
            crypto: local.srtp.as_ref().map(|s| (OFFER_CRYPTO_TAG, &s.key)),
        }
    }
}

pub(super) const AVP: &str = "RTP/AVP";
pub(super) const SAVP: &str = "RTP/SAVP";

/// Our SDP offer: one `m=audio` line with every codec of `local`.
pub fn build_offer(local: &LocalMedia) -> String {
    let mut sdp = String::with_capacity(512);
    write_session(&mut sdp, local);
    let codecs: Vec<(u8, Codec)> = local
        .codecs
        .iter()
        .map(|local| (local.payload_type, local.codec))
        .collect();
    let transport = Transport::offered(local);
    write_audio(
        &mut sdp,
        local,
        &codecs,
        (local.direction, local.rtcp_mux),
        &transport,
    );
    sdp
}

/// Appends one SDP line and its CRLF.
pub(super) fn write_line(sdp: &mut String, line: fmt::Arguments<'_>) {
    // Writing to a String cannot fail.
    let _ = sdp.write_fmt(line);
    sdp.push_str("\r\n");
}

/// `IP4` or `IP6`, as `o=` and `c=` write the address type.
fn address_type(address: IpAddr) -> &'static str {
    match address {
        IpAddr::V4(_) => "IP4",
        IpAddr::V6(_) => "IP6",
    }
}

/// `v=`, `o=`, `s=`, `c=` and `t=`.
pub(super) fn write_session(sdp: &mut String, local: &LocalMedia) {
    let address_type = address_type(local.address);
    write_line(sdp, format_args!("v=0"));
    write_line(
        sdp,
        format_args!(
            "o=- {} {} IN {address_type} {}",
            local.session_id, local.session_version, local.address
        ),
    );
    write_line(sdp, format_args!("s={SESSION_NAME}"));
    write_line(sdp, format_args!("c=IN {address_type} {}", local.address));
    write_line(sdp, format_args!("t=0 0"));
}

/// An accepted `m=audio` section on our RTP port with these payload types.
pub(super) fn write_audio(
    sdp: &mut String,
    local: &LocalMedia,
    codecs: &[(u8, Codec)],
    (direction, rtcp_mux): (Direction, bool),
    transport: &Transport<'_>,
) {
    let mut m_line = format!("m=audio {} {}", local.rtp_port, transport.profile);
    for (payload_type, _) in codecs {
        let _ = write!(m_line, " {payload_type}");
    }
    write_line(sdp, format_args!("{m_line}"));
    for (payload_type, codec) in codecs {
        write_line(sdp, format_args!("a=rtpmap:{payload_type} {codec}"));
        if let Some(parameters) = codec.fmtp() {
            write_line(sdp, format_args!("a=fmtp:{payload_type} {parameters}"));
        }
    }
    write_line(sdp, format_args!("a=ptime:{}", local.ptime));
    if rtcp_mux {
        write_line(sdp, format_args!("a=rtcp-mux"));
    }
    write_line(sdp, format_args!("a={}", direction.attribute_name()));
    if let Some((tag, key)) = transport.crypto {
        write_line(sdp, format_args!("a=crypto:{tag} {SUITE} {}", key.to_inline()));
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Connection, MediaKind, Sdp};
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn local() -> LocalMedia {
        LocalMedia::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 50)), 40_000, 4242)
    }

    #[test]
    fn default_offer_is_written_exactly_like_this() {
        assert_eq!(
            build_offer(&local()),
            "v=0\r\n\
             o=- 4242 1 IN IP4 192.0.2.50\r\n\
             s=sipline\r\n\
             c=IN IP4 192.0.2.50\r\n\
             t=0 0\r\n\
             m=audio 40000 RTP/AVP 0 8 101\r\n\
             a=rtpmap:0 PCMU/8000\r\n\
             a=rtpmap:8 PCMA/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\n\
             a=fmtp:101 0-16\r\n\
             a=ptime:20\r\n\
             a=sendrecv\r\n"
        );
    }

    #[test]
    fn offer_round_trips_through_the_parser() {
        let mut local = local();
        local.codecs = vec![
            LocalCodec::with_payload_type(Codec::Opus, 96),
            LocalCodec::new(Codec::G722),
            LocalCodec::new(Codec::Pcmu),
            LocalCodec::new(Codec::Pcma),
            LocalCodec::with_payload_type(Codec::TelephoneEvent, 100),
        ];
        local.direction = Direction::SendOnly;
        local.rtcp_mux = true;
        local.next_version();

        let sdp = Sdp::parse(&build_offer(&local)).unwrap();
        assert_eq!(sdp.origin.session_id, "4242");
        assert_eq!(sdp.origin.session_version, 2);
        assert_eq!(sdp.origin.address, "192.0.2.50");
        assert_eq!(sdp.session_name, SESSION_NAME);
        assert_eq!(
            sdp.connection.as_ref().and_then(Connection::ip),
            Some(local.address)
        );
        let [audio] = sdp.media.as_slice() else {
            panic!("one m= line expected");
        };
        assert_eq!(audio.kind, MediaKind::Audio);
        assert_eq!(audio.port, 40_000);
        assert!(audio.is_plain_rtp());
        assert!(audio.payload_types().eq([96, 9, 0, 8, 100]));
        for codec in &local.codecs {
            assert_eq!(audio.codec(codec.payload_type), Some(codec.codec));
            assert!(audio.rtpmap(codec.payload_type).is_some(), "{codec:?}");
        }
        assert_eq!(audio.fmtp(100), Some("0-16"));
        assert_eq!(audio.fmtp(96), None);
        assert_eq!(audio.ptime, Some(DEFAULT_PTIME));
        assert_eq!(audio.direction, Direction::SendOnly);
        assert!(audio.rtcp_mux);
        assert_eq!(audio.rtcp, None);
        assert!(audio.attributes.is_empty(), "{:?}", audio.attributes);
    }

    #[test]
    fn ipv6_offer() {
        let mut local = local();
        local.address = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 5));
        let text = build_offer(&local);
        assert!(text.contains("o=- 4242 1 IN IP6 2001:db8::5\r\n"), "{text}");
        assert!(text.contains("c=IN IP6 2001:db8::5\r\n"), "{text}");
        let sdp = Sdp::parse(&text).unwrap();
        assert_eq!(
            sdp.connection.as_ref().and_then(Connection::ip),
            Some(local.address)
        );
    }

    #[test]
    fn every_line_ends_in_crlf() {
        let text = build_offer(&local());
        assert!(text.ends_with("\r\n"));
        assert_eq!(text.matches('\n').count(), text.matches("\r\n").count());
    }

    #[test]
    fn version_increments_and_wraps_without_panicking() {
        let mut local = local();
        local.session_version = u64::MAX;
        local.next_version();
        assert_eq!(local.session_version, 0);
    }

    #[test]
    fn voice_codecs_leave_out_telephone_event() {
        assert!(local().voice_codecs().eq([Codec::Pcmu, Codec::Pcma]));
        assert!(local().supports(Codec::TelephoneEvent));
        assert!(!local().supports(Codec::Opus));
    }
}
