//! RFC 3264 offer/answer for the audio stream of a call: answering the far end's
//! offers (the initial INVITE's and every re-INVITE's), and reading the far end's
//! answer to ours.
//!
//! The SIP leg carries one audio stream. Of an offer we accept the first audio line
//! that is plain RTP/AVP, enabled and shares a voice codec with us, and reject every
//! other line with port 0, keeping their number and order (RFC 3264 §6). We pick one
//! voice codec, ours by preference, and telephone-event if offered, in the offerer's
//! payload type numbers.

use std::fmt;
use std::net::SocketAddr;

use super::description::excerpt;
use super::local::{AVP, OFFER_CRYPTO_TAG, SAVP, Transport, write_audio, write_line, write_session};
use super::{Codec, Connection, Direction, LocalMedia, Media, MediaKind, Sdp};
use crate::srtp::{MasterKey, SUITE};

/// What the RTP leg of a call uses, once offer and answer are both known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NegotiatedMedia {
    /// Where to send RTP: the media's `c=` address (else the session's) and port.
    /// `0.0.0.0` when the far end holds RFC 2543 style; `direction` then forbids
    /// sending.
    pub remote_rtp: SocketAddr,
    /// Where to send RTCP: `a=rtcp` if given, the RTP address when muxed, else RTP
    /// port + 1.
    pub remote_rtcp: SocketAddr,
    /// Whether both sides agreed to carry RTCP on the RTP ports (RFC 5761).
    pub rtcp_mux: bool,
    /// The voice codec.
    pub codec: Codec,
    /// The payload type of `codec`, in both directions.
    pub payload_type: u8,
    /// The payload type of telephone-event, if both sides do RFC 4733 DTMF.
    pub dtmf_payload_type: Option<u8>,
    /// What we may do: send if it [`Direction::sends`], expect media if it
    /// [`Direction::receives`].
    pub direction: Direction,
    /// The packet duration the far end wants to receive, in milliseconds.
    pub ptime: Option<u32>,
    /// Whether the far end has put us on hold: it does not want to receive (its
    /// direction is sendonly or inactive, or its address is `0.0.0.0`).
    pub remote_on_hold: bool,
    /// SDES-SRTP keys, when the leg is encrypted.
    pub srtp: Option<SrtpKeys>,
}

/// The two keys of an SRTP leg (RFC 4568: each side encrypts with its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SrtpKeys {
    /// What we encrypt with (our `a=crypto`).
    pub ours: MasterKey,
    /// What the far end encrypts with (its `a=crypto`).
    pub theirs: MasterKey,
}

/// Our answer to an offer: the SDP to send, and what the RTP leg then uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub sdp: String,
    pub media: NegotiatedMedia,
}

/// Why no audio stream could be agreed. Answering an offer, the caller rejects it
/// with `488 Not Acceptable Here`; reading an answer, it ends the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NegotiationError {
    /// No audio line we could use (all video, secured RTP, disabled, or none at all).
    NoUsableAudio { reason: String },
    /// The offer's audio has no voice codec we have.
    NoCommonCodec { offered: String, supported: String },
    /// The audio stream has no IP address to send to.
    NoRemoteAddress { reason: String },
    /// The answer rejected our audio stream with port 0.
    AudioRejected,
    /// The answer's audio names no voice codec that we offered.
    CodecNotOffered { answered: String, offered: String },
}

impl fmt::Display for NegotiationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NegotiationError::NoUsableAudio { reason } => {
                write!(f, "no usable audio stream: {reason}")
            }
            NegotiationError::NoCommonCodec { offered, supported } => write!(
                f,
                "no voice codec in common: offered {offered}; we support {supported}"
            ),
            NegotiationError::NoRemoteAddress { reason } => {
                write!(f, "no address to send audio to: {reason}")
            }
            NegotiationError::AudioRejected => f.write_str("the answer rejected the audio stream (port 0)"),
            NegotiationError::CodecNotOffered { answered, offered } => write!(
                f,
                "the answer's codecs ({answered}) include none of the voice codecs we \
                 offered ({offered})"
            ),
        }
    }
}

impl std::error::Error for NegotiationError {}

/// Answers an offer, initial or in a re-INVITE (RFC 3264 §6, §8).
pub fn answer(offer: &Sdp, local: &LocalMedia) -> Result<Answer, NegotiationError> {
    let mut unusable = Vec::new();
    let mut without_common_codec: Option<&Media> = None;
    let mut accepted = None;
    for (index, media) in offer.media.iter().enumerate() {
        if let Err(reason) = check_usable_audio(media, local) {
            unusable.push(format!("m-line {} {reason}", index.saturating_add(1)));
            continue;
        }
        match choose_codecs(media, local) {
            Some(choice) => {
                accepted = Some((index, media, choice));
                break;
            }
            None => {
                without_common_codec.get_or_insert(media);
            }
        }
    }

    let Some((accepted_index, media, choice)) = accepted else {
        return Err(match without_common_codec {
            Some(media) => NegotiationError::NoCommonCodec {
                offered: describe_payload_types(media),
                supported: describe_codecs(local.voice_codecs()),
            },
            None if offer.media.is_empty() => NegotiationError::NoUsableAudio {
                reason: "the offer has no m= lines".into(),
            },
            None => NegotiationError::NoUsableAudio {
                reason: unusable.join("; "),
            },
        });
    };

    let remote = RemoteEndpoint::of(offer, media, local)?;
    // SRTP when we do it and the offer has a key we can use (check_usable_audio made
    // sure an RTP/SAVP line has one, and that we need not insist on a plain one)
    let srtp = local.srtp.as_ref().zip(sdes_keys(media).next());
    let transport = Transport {
        profile: if is_savp(media) { SAVP } else { AVP },
        crypto: srtp.map(|(ours, (tag, _))| (tag, &ours.key)),
    };
    let keys = srtp.map(|(ours, (_, theirs))| SrtpKeys {
        ours: ours.key,
        theirs,
    });
    let mut sdp = String::with_capacity(512);
    write_session(&mut sdp, local);
    for (index, media) in offer.media.iter().enumerate() {
        if index == accepted_index {
            let mut codecs = vec![(choice.payload_type, choice.codec)];
            if let Some(dtmf) = choice.dtmf_payload_type {
                codecs.push((dtmf, Codec::TelephoneEvent));
            }
            write_audio(
                &mut sdp,
                local,
                &codecs,
                (remote.direction, remote.rtcp_mux),
                &transport,
            );
        } else {
            write_rejected(&mut sdp, media);
        }
    }
    Ok(Answer {
        sdp,
        media: remote.negotiated(choice, keys),
    })
}

/// Reads the far end's answer to the offer we built from `offer_we_sent`
/// (RFC 3264 §7).
pub fn negotiate_answer(
    offer_we_sent: &LocalMedia,
    their_answer: &Sdp,
) -> Result<NegotiatedMedia, NegotiationError> {
    let mut audio = their_answer
        .media
        .iter()
        .filter(|media| media.kind == MediaKind::Audio);
    let Some(media) = audio.clone().find(|media| !media.is_rejected()) else {
        return Err(match audio.next() {
            Some(_) => NegotiationError::AudioRejected,
            None => NegotiationError::NoUsableAudio {
                reason: "the answer has no audio m= line".into(),
            },
        });
    };
    if !(media.is_plain_rtp() || is_savp(media) && offer_we_sent.srtp.is_some()) {
        return Err(NegotiationError::NoUsableAudio {
            reason: format!(
                "the answer's audio uses protocol {}, but we offered {}",
                excerpt(&media.protocol),
                if offer_we_sent.srtp.as_ref().is_some_and(|s| s.required) {
                    SAVP
                } else {
                    AVP
                }
            ),
        });
    }
    // their key, answering ours (the tag of our offer's line)
    let keys = offer_we_sent.srtp.as_ref().and_then(|ours| {
        sdes_keys(media)
            .find(|(tag, _)| *tag == OFFER_CRYPTO_TAG)
            .map(|(_, theirs)| SrtpKeys {
                ours: ours.key,
                theirs,
            })
    });
    // a key we cannot use (another tag, session parameters): the far end would encrypt
    // while we did not
    let unusable_key = offer_we_sent.srtp.is_some()
        && media
            .attributes
            .iter()
            .any(|a| a.name.eq_ignore_ascii_case("crypto"));
    if keys.is_none()
        && (unusable_key || is_savp(media) || offer_we_sent.srtp.as_ref().is_some_and(|s| s.required))
    {
        return Err(NegotiationError::NoUsableAudio {
            reason:
                "the answer has no SRTP key for our offer (AES_CM_128_HMAC_SHA1_80), and SRTP is required"
                    .into(),
        });
    }
    // The answerer lists what it accepts, most preferred first (RFC 3264 §6.1).
    let voice = media.payload_types().find_map(|payload_type| {
        media
            .codec(payload_type)
            .filter(|codec| codec.is_voice() && offer_we_sent.supports(*codec))
            .map(|codec| (codec, payload_type))
    });
    let Some((codec, payload_type)) = voice else {
        return Err(NegotiationError::CodecNotOffered {
            answered: describe_payload_types(media),
            offered: describe_codecs(offer_we_sent.voice_codecs()),
        });
    };
    let choice = CodecChoice {
        codec,
        payload_type,
        dtmf_payload_type: dtmf_payload_type(media, offer_we_sent),
    };
    Ok(RemoteEndpoint::of(their_answer, media, offer_we_sent)?.negotiated(choice, keys))
}

/// Why an offered media line is not one we accept, if it is not.
fn check_usable_audio(media: &Media, local: &LocalMedia) -> Result<(), String> {
    if media.kind != MediaKind::Audio {
        return Err(format!("is {}, not audio", excerpt(&media.kind.to_string())));
    }
    let savp = is_savp(media);
    if !(media.is_plain_rtp() || savp && local.srtp.is_some()) {
        let supported = if local.srtp.is_some() {
            "RTP/AVP and RTP/SAVP are"
        } else {
            "RTP/AVP is"
        };
        return Err(format!(
            "(audio) uses protocol {}; only {supported} supported",
            excerpt(&media.protocol)
        ));
    }
    if media.is_rejected() {
        return Err("(audio) is disabled (port 0)".into());
    }
    let has_key = sdes_keys(media).next().is_some();
    if savp && !has_key {
        return Err(format!(
            "(audio) is RTP/SAVP without a key we can use ({SUITE}, inline, no MKI)"
        ));
    }
    if !has_key && local.srtp.as_ref().is_some_and(|s| s.required) {
        return Err("(audio) is not encrypted, and SRTP is required".into());
    }
    Ok(())
}

fn is_savp(media: &Media) -> bool {
    media.protocol.eq_ignore_ascii_case(SAVP)
}

/// The SDES keys of a media line we can use (RFC 4568 §9.1: `a=crypto:TAG SUITE
/// inline:KEY`, our suite, one key, no session parameters), in order.
fn sdes_keys(media: &Media) -> impl Iterator<Item = (u32, MasterKey)> + '_ {
    media
        .attributes
        .iter()
        .filter(|a| a.name.eq_ignore_ascii_case("crypto"))
        .filter_map(|a| {
            let mut fields = a.value.as_deref()?.split_whitespace();
            let tag = fields.next()?.parse::<u32>().ok()?;
            if !fields.next()?.eq_ignore_ascii_case(SUITE) {
                return None;
            }
            let key = MasterKey::from_inline(fields.next()?)?;
            fields.next().is_none().then_some((tag, key))
        })
}

/// The voice codec and DTMF payload type we use on a stream.
struct CodecChoice {
    codec: Codec,
    payload_type: u8,
    dtmf_payload_type: Option<u8>,
}

/// Our most preferred voice codec that the offer also has, in the offer's numbering.
fn choose_codecs(offer: &Media, local: &LocalMedia) -> Option<CodecChoice> {
    let (codec, payload_type) = local.voice_codecs().find_map(|codec| {
        offer
            .payload_types()
            .find(|payload_type| offer.codec(*payload_type) == Some(codec))
            .map(|payload_type| (codec, payload_type))
    })?;
    Some(CodecChoice {
        codec,
        payload_type,
        dtmf_payload_type: dtmf_payload_type(offer, local),
    })
}

/// The far end's telephone-event payload type, if we both do RFC 4733 DTMF.
fn dtmf_payload_type(remote: &Media, local: &LocalMedia) -> Option<u8> {
    if !local.supports(Codec::TelephoneEvent) {
        return None;
    }
    remote
        .payload_types()
        .find(|payload_type| remote.codec(*payload_type) == Some(Codec::TelephoneEvent))
}

/// Where the far end's audio stream is, and what it lets us do.
struct RemoteEndpoint {
    rtp: SocketAddr,
    rtcp: SocketAddr,
    rtcp_mux: bool,
    /// Ours: what we may do.
    direction: Direction,
    ptime: Option<u32>,
    on_hold: bool,
}

impl RemoteEndpoint {
    fn of(sdp: &Sdp, media: &Media, local: &LocalMedia) -> Result<RemoteEndpoint, NegotiationError> {
        let connection = sdp
            .connection_for(media)
            .ok_or_else(|| NegotiationError::NoRemoteAddress {
                reason: "the audio stream has no c= line, and neither has the session".into(),
            })?;
        let ip = connection.ip().ok_or_else(|| NegotiationError::NoRemoteAddress {
            reason: format!("c= address {} is not an IP address", excerpt(&connection.address)),
        })?;
        // RFC 3264 §8.4: at 0.0.0.0 "neither RTP nor RTCP should be sent to the peer",
        // whatever its direction attribute says.
        let theirs = if ip.is_unspecified() {
            Direction::from_capabilities(media.direction.sends(), false)
        } else {
            media.direction
        };
        let rtp = SocketAddr::new(ip, media.port);
        let rtcp_mux = local.rtcp_mux && media.rtcp_mux;
        let rtcp = match (&media.rtcp, rtcp_mux) {
            (_, true) => rtp,
            (Some(rtcp), false) => SocketAddr::new(
                rtcp.connection.as_ref().and_then(Connection::ip).unwrap_or(ip),
                rtcp.port,
            ),
            (None, false) => {
                let port = media
                    .port
                    .checked_add(1)
                    .ok_or_else(|| NegotiationError::NoRemoteAddress {
                        reason: format!("RTP port {} leaves no port for RTCP", media.port),
                    })?;
                SocketAddr::new(ip, port)
            }
        };
        Ok(RemoteEndpoint {
            rtp,
            rtcp,
            rtcp_mux,
            direction: local.direction.intersection(theirs.reversed()),
            ptime: media.ptime,
            on_hold: !theirs.receives(),
        })
    }

    fn negotiated(self, choice: CodecChoice, srtp: Option<SrtpKeys>) -> NegotiatedMedia {
        NegotiatedMedia {
            remote_rtp: self.rtp,
            remote_rtcp: self.rtcp,
            rtcp_mux: self.rtcp_mux,
            codec: choice.codec,
            payload_type: choice.payload_type,
            dtmf_payload_type: choice.dtmf_payload_type,
            direction: self.direction,
            ptime: self.ptime,
            remote_on_hold: self.on_hold,
            srtp,
        }
    }
}

/// A rejected stream: the offered line with port 0 (RFC 3264 §6). Its tokens were
/// split on whitespace and checked for control characters by the parser, so they
/// cannot break our SDP's lines.
fn write_rejected(sdp: &mut String, media: &Media) {
    let mut line = format!("m={} 0 {}", media.kind, media.protocol);
    for format in &media.formats {
        line.push(' ');
        line.push_str(format);
    }
    write_line(sdp, format_args!("{line}"));
}

/// At most this many payload types are listed in an error message.
const DESCRIBED_PAYLOAD_TYPES: usize = 16;

/// `9 G722/8000, 13 CN/8000, 34` for an error message.
fn describe_payload_types(media: &Media) -> String {
    let mut described: Vec<String> = media
        .payload_types()
        .take(DESCRIBED_PAYLOAD_TYPES)
        .map(|payload_type| media.describe_payload_type(payload_type))
        .collect();
    let more = media.payload_types().skip(DESCRIBED_PAYLOAD_TYPES).count();
    if more > 0 {
        described.push(format!("and {more} more"));
    }
    if described.is_empty() {
        return "no RTP payload types".into();
    }
    described.join(", ")
}

/// `PCMU/8000, PCMA/8000` for an error message.
fn describe_codecs(codecs: impl Iterator<Item = Codec>) -> String {
    let described: Vec<String> = codecs.map(|codec| codec.to_string()).collect();
    if described.is_empty() {
        return "no voice codecs".into();
    }
    described.join(", ")
}

#[cfg(test)]
mod tests {
    use super::super::{LocalCodec, build_offer, samples};
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn parse(text: &str) -> Sdp {
        match Sdp::parse(text) {
            Ok(sdp) => sdp,
            Err(error) => panic!("{error}\n{text}"),
        }
    }

    fn answer_ok(offer: &str, local: &LocalMedia) -> Answer {
        match answer(&parse(offer), local) {
            Ok(answer) => answer,
            Err(error) => panic!("{error}\n{offer}"),
        }
    }

    fn addr(a: u8, b: u8, c: u8, d: u8, port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(a, b, c, d)), port)
    }

    /// G.711 only, as `LocalMedia::new` makes it.
    fn g711_local() -> LocalMedia {
        LocalMedia::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 50)), 40_000, 4242)
    }

    #[test]
    fn answering_freeswitch_prefers_our_codec_and_rejects_video() {
        let answer = answer_ok(samples::FREESWITCH_OFFER, &g711_local());
        // FreeSWITCH prefers G.722, which we lack; of ours, PCMU comes first.
        assert_eq!(
            answer.media,
            NegotiatedMedia {
                remote_rtp: addr(198, 51, 100, 20, 16384),
                remote_rtcp: addr(198, 51, 100, 20, 16385),
                rtcp_mux: false,
                codec: Codec::Pcmu,
                payload_type: 0,
                dtmf_payload_type: Some(101),
                direction: Direction::SendRecv,
                ptime: Some(20),
                remote_on_hold: false,
                srtp: None,
            }
        );
        assert_eq!(
            answer.sdp,
            "v=0\r\n\
             o=- 4242 1 IN IP4 192.0.2.50\r\n\
             s=sipline\r\n\
             c=IN IP4 192.0.2.50\r\n\
             t=0 0\r\n\
             m=audio 40000 RTP/AVP 0 101\r\n\
             a=rtpmap:0 PCMU/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\n\
             a=fmtp:101 0-16\r\n\
             a=ptime:20\r\n\
             a=sendrecv\r\n\
             m=video 0 RTP/AVP 31\r\n"
        );
    }

    #[test]
    fn answering_freeswitch_with_g722_picks_g722() {
        let answer = answer_ok(samples::FREESWITCH_OFFER, &samples::local_media());
        assert_eq!(answer.media.codec, Codec::G722);
        assert_eq!(answer.media.payload_type, 9);
        assert!(
            answer
                .sdp
                .contains("m=audio 40000 RTP/AVP 9 101\r\na=rtpmap:9 G722/8000\r\n")
        );
    }

    #[test]
    fn local_preference_beats_offer_order() {
        let mut local = g711_local();
        local.codecs = vec![LocalCodec::new(Codec::Pcma), LocalCodec::new(Codec::Pcmu)];
        let answer = answer_ok(samples::BARESIP_OFFER, &local);
        assert_eq!((answer.media.codec, answer.media.payload_type), (Codec::Pcma, 8));
        // We did not list telephone-event, so no DTMF is negotiated.
        assert_eq!(answer.media.dtmf_payload_type, None);
        assert!(
            answer.sdp.contains("m=audio 40000 RTP/AVP 8\r\n"),
            "{}",
            answer.sdp
        );
        assert!(!answer.sdp.contains("telephone-event"));
    }

    #[test]
    fn answering_baresip_uses_its_rtcp_port() {
        let answer = answer_ok(samples::BARESIP_OFFER, &g711_local());
        assert_eq!(answer.media.remote_rtp, addr(192, 0, 2, 77, 10108));
        assert_eq!(answer.media.remote_rtcp, addr(192, 0, 2, 77, 10109));
        assert_eq!(answer.media.dtmf_payload_type, Some(101));
        assert_eq!(answer.media.ptime, None);
    }

    #[test]
    fn answering_sipp() {
        let answer = answer_ok(samples::SIPP_OFFER, &g711_local());
        assert_eq!(answer.media.remote_rtp, addr(127, 0, 0, 1, 6000));
        assert_eq!(answer.media.remote_rtcp, addr(127, 0, 0, 1, 6001));
        assert_eq!(answer.media.codec, Codec::Pcmu);
        assert_eq!(answer.media.dtmf_payload_type, None);
        assert!(answer.sdp.contains("m=audio 40000 RTP/AVP 0\r\n"));
    }

    #[test]
    fn media_level_connection_is_where_rtp_goes() {
        let answer = answer_ok(samples::MEDIA_LEVEL_CONNECTION_OFFER, &g711_local());
        assert_eq!(answer.media.remote_rtp, addr(198, 51, 100, 7, 54400));
        assert_eq!(answer.media.remote_rtcp, addr(198, 51, 100, 7, 54401));
    }

    #[test]
    fn answering_a_hold_with_recvonly() {
        let answer = answer_ok(samples::HOLD_OFFER, &g711_local());
        assert!(answer.media.remote_on_hold);
        assert_eq!(answer.media.direction, Direction::RecvOnly);
        assert!(answer.sdp.contains("a=recvonly\r\n"));

        // Holding them while they hold us: nothing flows either way.
        let mut local = g711_local();
        local.direction = Direction::SendOnly;
        let answer = answer_ok(samples::HOLD_OFFER, &local);
        assert_eq!(answer.media.direction, Direction::Inactive);
        assert!(answer.sdp.contains("a=inactive\r\n"));
    }

    #[test]
    fn old_style_hold_forbids_sending() {
        let offer = samples::SIPP_OFFER.replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0");
        let answer = answer_ok(&offer, &g711_local());
        assert!(answer.media.remote_on_hold);
        assert_eq!(answer.media.direction, Direction::RecvOnly);
        assert_eq!(answer.media.remote_rtp, addr(0, 0, 0, 0, 6000));
    }

    #[test]
    fn far_end_inactive_and_recvonly() {
        let inactive = samples::HOLD_OFFER.replace("a=sendonly", "a=inactive");
        let answer = answer_ok(&inactive, &g711_local());
        assert!(answer.media.remote_on_hold);
        assert_eq!(answer.media.direction, Direction::Inactive);

        // recvonly is a far end that will not send (a muted or listening peer), not a
        // hold: it still wants our media.
        let recvonly = samples::HOLD_OFFER.replace("a=sendonly", "a=recvonly");
        let answer = answer_ok(&recvonly, &g711_local());
        assert!(!answer.media.remote_on_hold);
        assert_eq!(answer.media.direction, Direction::SendOnly);
    }

    #[test]
    fn re_offer_resuming_from_hold() {
        let local = g711_local();
        let held = answer_ok(samples::HOLD_OFFER, &local);
        let resumed = answer_ok(&samples::HOLD_OFFER.replace("a=sendonly", "a=sendrecv"), &local);
        assert!(held.media.remote_on_hold);
        assert!(!resumed.media.remote_on_hold);
        assert_eq!(resumed.media.direction, Direction::SendRecv);
        assert_eq!(held.media.codec, resumed.media.codec);
    }

    #[test]
    fn offer_with_only_codecs_we_lack_is_refused() {
        let error = answer(&parse(samples::UNSUPPORTED_CODECS_OFFER), &g711_local()).unwrap_err();
        assert_eq!(
            error,
            NegotiationError::NoCommonCodec {
                offered: "18 G729/8000, 3 GSM/8000, 97 iLBC/8000, 101 telephone-event/8000".into(),
                supported: "PCMU/8000, PCMA/8000".into(),
            }
        );
        assert_eq!(
            error.to_string(),
            "no voice codec in common: offered 18 G729/8000, 3 GSM/8000, 97 iLBC/8000, \
             101 telephone-event/8000; we support PCMU/8000, PCMA/8000"
        );
    }

    #[test]
    fn telephone_event_alone_is_not_a_voice_codec() {
        let offer = samples::SIPP_OFFER
            .replace("RTP/AVP 0", "RTP/AVP 101")
            .replace("a=rtpmap:0 PCMU/8000", "a=rtpmap:101 telephone-event/8000");
        let error = answer(&parse(&offer), &g711_local()).unwrap_err();
        assert!(matches!(error, NegotiationError::NoCommonCodec { .. }), "{error}");
    }

    #[test]
    fn chrome_offer_is_refused_as_secured_rtp() {
        let error = answer(&parse(samples::CHROME_OFFER), &samples::local_media()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "no usable audio stream: m-line 1 (audio) uses protocol \"RTP/SAVPF\"; only \
             RTP/AVP is supported"
        );
    }

    #[test]
    fn only_the_first_usable_audio_line_is_accepted() {
        let offer = "v=0\r\no=- 7 7 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\n\
                     m=video 5000 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n\
                     m=audio 6000 RTP/SAVP 0\r\n\
                     m=audio 0 RTP/AVP 0\r\n\
                     m=audio 7000 RTP/AVP 18\r\n\
                     m=audio 8000 RTP/AVP 8 0\r\n\
                     m=audio 9000 RTP/AVP 0\r\n\
                     m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n";
        let answer = answer_ok(offer, &g711_local());
        assert_eq!(answer.media.remote_rtp, addr(192, 0, 2, 9, 8000));
        assert_eq!((answer.media.codec, answer.media.payload_type), (Codec::Pcmu, 0));
        let m_lines: Vec<&str> = answer.sdp.lines().filter(|l| l.starts_with("m=")).collect();
        assert_eq!(
            m_lines,
            [
                "m=video 0 RTP/AVP 96",
                "m=audio 0 RTP/SAVP 0",
                "m=audio 0 RTP/AVP 0",
                "m=audio 0 RTP/AVP 18",
                "m=audio 40000 RTP/AVP 0",
                "m=audio 0 RTP/AVP 0",
                "m=application 0 UDP/DTLS/SCTP webrtc-datachannel",
            ]
        );
        // The answer is valid SDP with the same number of m-lines.
        assert_eq!(parse(&answer.sdp).media.len(), 7);
    }

    #[test]
    fn dynamic_payload_types_follow_the_offerer() {
        let offer = "v=0\r\no=- 7 7 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\n\
                     m=audio 6000 RTP/AVP 96 0 97\r\na=rtpmap:96 OPUS/48000/2\r\n\
                     a=rtpmap:97 telephone-event/8000\r\na=fmtp:97 0-15\r\n";
        let answer = answer_ok(offer, &samples::local_media());
        assert_eq!((answer.media.codec, answer.media.payload_type), (Codec::Opus, 96));
        assert_eq!(answer.media.dtmf_payload_type, Some(97));
        assert!(answer.sdp.contains(
            "m=audio 40000 RTP/AVP 96 97\r\na=rtpmap:96 opus/48000/2\r\n\
             a=rtpmap:97 telephone-event/8000\r\na=fmtp:97 0-16\r\n"
        ));
    }

    #[test]
    fn rtcp_mux_only_when_both_want_it() {
        let offer = samples::SIPP_OFFER.replace("a=rtpmap", "a=rtcp-mux\na=rtpmap");
        let plain = answer_ok(&offer, &g711_local());
        assert!(!plain.media.rtcp_mux);
        assert_eq!(plain.media.remote_rtcp, addr(127, 0, 0, 1, 6001));
        assert!(!plain.sdp.contains("rtcp-mux"));

        let mut local = g711_local();
        local.rtcp_mux = true;
        let muxed = answer_ok(&offer, &local);
        assert!(muxed.media.rtcp_mux);
        assert_eq!(muxed.media.remote_rtcp, muxed.media.remote_rtp);
        assert!(muxed.sdp.contains("a=rtcp-mux\r\n"));

        // Wanting mux does not impose it on a peer that did not offer it.
        let unmuxed = answer_ok(samples::SIPP_OFFER, &local);
        assert!(!unmuxed.media.rtcp_mux);
        assert!(!unmuxed.sdp.contains("rtcp-mux"));
    }

    #[test]
    fn unusable_addresses_are_errors() {
        let no_connection = samples::SIPP_OFFER.replace("c=IN IP4 127.0.0.1\n", "");
        let error = answer(&parse(&no_connection), &g711_local()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "no address to send audio to: the audio stream has no c= line, and neither has \
             the session"
        );

        let host_name = samples::SIPP_OFFER.replace("c=IN IP4 127.0.0.1", "c=IN IP4 pbx.example");
        let error = answer(&parse(&host_name), &g711_local()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "no address to send audio to: c= address \"pbx.example\" is not an IP address"
        );

        let last_port = samples::SIPP_OFFER.replace("6000", "65535");
        let error = answer(&parse(&last_port), &g711_local()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "no address to send audio to: RTP port 65535 leaves no port for RTCP"
        );
    }

    #[test]
    fn offers_without_audio() {
        let no_media = "v=0\r\no=- 7 7 IN IP4 192.0.2.9\r\ns=-\r\nt=0 0\r\n";
        assert_eq!(
            answer(&parse(no_media), &g711_local()).unwrap_err().to_string(),
            "no usable audio stream: the offer has no m= lines"
        );
        let video_only = format!("{no_media}m=video 5000 RTP/AVP 96\r\nm=audio 0 RTP/AVP 0\r\n");
        assert_eq!(
            answer(&parse(&video_only), &g711_local())
                .unwrap_err()
                .to_string(),
            "no usable audio stream: m-line 1 is \"video\", not audio; m-line 2 (audio) is \
             disabled (port 0)"
        );
    }

    #[test]
    fn uac_reads_asterisk_answer() {
        let local = g711_local();
        let negotiated = negotiate_answer(&local, &parse(samples::ASTERISK_ANSWER)).unwrap();
        assert_eq!(
            negotiated,
            NegotiatedMedia {
                remote_rtp: addr(192, 0, 2, 10, 12345),
                remote_rtcp: addr(192, 0, 2, 10, 12346),
                rtcp_mux: false,
                codec: Codec::Pcmu,
                payload_type: 0,
                dtmf_payload_type: Some(101),
                direction: Direction::SendRecv,
                ptime: Some(20),
                remote_on_hold: false,
                srtp: None,
            }
        );
    }

    #[test]
    fn uac_takes_the_answerers_first_codec_we_offered() {
        let mut local = g711_local();
        local.codecs.insert(0, LocalCodec::new(Codec::G722));
        let their_answer = samples::ASTERISK_ANSWER
            .replace("RTP/AVP 0 8 101", "RTP/AVP 18 8 0 101")
            .replace(
                "a=rtpmap:0 PCMU/8000",
                "a=rtpmap:18 G729/8000\r\na=rtpmap:0 PCMU/8000",
            );
        let negotiated = negotiate_answer(&local, &parse(&their_answer)).unwrap();
        assert_eq!((negotiated.codec, negotiated.payload_type), (Codec::Pcma, 8));
    }

    #[test]
    fn uac_uses_the_answers_dynamic_numbers() {
        let mut local = g711_local();
        local.codecs = vec![
            LocalCodec::new(Codec::Opus),
            LocalCodec::new(Codec::TelephoneEvent),
        ];
        let their_answer = "v=0\r\no=- 7 8 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\n\
                            t=0 0\r\nm=audio 6000 RTP/AVP 98 99\r\na=rtpmap:98 opus/48000/2\r\n\
                            a=rtpmap:99 telephone-event/8000\r\na=sendonly\r\n";
        let negotiated = negotiate_answer(&local, &parse(their_answer)).unwrap();
        assert_eq!((negotiated.codec, negotiated.payload_type), (Codec::Opus, 98));
        assert_eq!(negotiated.dtmf_payload_type, Some(99));
        // They only send: we receive, and they are holding us.
        assert_eq!(negotiated.direction, Direction::RecvOnly);
        assert!(negotiated.remote_on_hold);
    }

    #[test]
    fn uac_errors() {
        let local = g711_local();
        let rejected = samples::ASTERISK_ANSWER.replace("m=audio 12345", "m=audio 0");
        assert_eq!(
            negotiate_answer(&local, &parse(&rejected)),
            Err(NegotiationError::AudioRejected)
        );

        let video_only = samples::ASTERISK_ANSWER.replace("m=audio", "m=video");
        assert_eq!(
            negotiate_answer(&local, &parse(&video_only))
                .unwrap_err()
                .to_string(),
            "no usable audio stream: the answer has no audio m= line"
        );

        let secured = samples::ASTERISK_ANSWER.replace("RTP/AVP", "RTP/SAVP");
        assert_eq!(
            negotiate_answer(&local, &parse(&secured))
                .unwrap_err()
                .to_string(),
            "no usable audio stream: the answer's audio uses protocol \"RTP/SAVP\", but we \
             offered RTP/AVP"
        );

        let not_offered = samples::ASTERISK_ANSWER
            .replace("RTP/AVP 0 8 101", "RTP/AVP 9 101")
            .replace(
                "a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000",
                "a=rtpmap:9 G722/8000",
            );
        assert_eq!(
            negotiate_answer(&local, &parse(&not_offered))
                .unwrap_err()
                .to_string(),
            "the answer's codecs (9 G722/8000, 101 telephone-event/8000) include none of the \
             voice codecs we offered (PCMU/8000, PCMA/8000)"
        );
    }

    #[test]
    fn our_offer_answered_by_our_answer() {
        // Two siplines talking: an offer from one, answered by the other, read back.
        let alice = samples::local_media();
        let mut bob = LocalMedia::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 60)), 50_000, 9);
        bob.codecs = vec![
            LocalCodec::new(Codec::Pcma),
            LocalCodec::new(Codec::Opus),
            LocalCodec::with_payload_type(Codec::TelephoneEvent, 96),
        ];
        let offer = parse(&build_offer(&alice));
        let bobs = answer(&offer, &bob).unwrap();
        let alices = negotiate_answer(&alice, &parse(&bobs.sdp)).unwrap();
        assert_eq!(bobs.media.codec, Codec::Pcma);
        assert_eq!(alices.codec, Codec::Pcma);
        assert_eq!(alices.payload_type, bobs.media.payload_type);
        assert_eq!(alices.dtmf_payload_type, Some(101));
        assert_eq!(bobs.media.dtmf_payload_type, Some(101));
        assert_eq!(alices.remote_rtp, addr(192, 0, 2, 60, 50_000));
        assert_eq!(
            bobs.media.remote_rtp,
            SocketAddr::new(alice.address, alice.rtp_port)
        );
    }

    #[test]
    fn long_payload_type_lists_are_cut_in_errors() {
        let formats: Vec<String> = (30..=90).map(|pt| pt.to_string()).collect();
        let offer = format!(
            "v=0\r\no=- 7 7 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\n\
             m=audio 6000 RTP/AVP {}\r\n",
            formats.join(" ")
        );
        let error = answer(&parse(&offer), &g711_local()).unwrap_err().to_string();
        assert!(error.contains("45, and 45 more;"), "{error}");
    }

    fn with_srtp(required: bool) -> LocalMedia {
        let mut local = g711_local();
        local.srtp = Some(super::super::LocalSrtp {
            key: MasterKey::new([7; 30]),
            required,
        });
        local
    }

    fn srtp_offer(profile: &str, crypto: &str) -> String {
        format!(
            "v=0\r\no=- 1 1 IN IP4 198.51.100.9\r\ns=-\r\nc=IN IP4 198.51.100.9\r\nt=0 0\r\n\
             m=audio 7000 {profile} 0 101\r\na=rtpmap:101 telephone-event/8000\r\n{crypto}"
        )
    }

    const THEIR_KEY: [u8; 30] = [9; 30];

    fn their_crypto(tag: u32) -> String {
        format!(
            "a=crypto:{tag} AES_CM_128_HMAC_SHA1_80 {}\r\n",
            MasterKey::new(THEIR_KEY).to_inline()
        )
    }

    #[test]
    fn srtp_offers_say_whether_we_insist() {
        let ours = MasterKey::new([7; 30]).to_inline();
        let offer = build_offer(&with_srtp(true));
        assert!(offer.contains("m=audio 40000 RTP/SAVP 0 8 101\r\n"), "{offer}");
        assert!(
            offer.contains(&format!("a=crypto:1 AES_CM_128_HMAC_SHA1_80 {ours}\r\n")),
            "{offer}"
        );
        let offer = build_offer(&with_srtp(false));
        assert!(
            offer.contains("m=audio 40000 RTP/AVP 0 8 101\r\n"),
            "best effort: {offer}"
        );
        assert!(offer.contains("a=crypto:1 "), "{offer}");
        assert!(!build_offer(&g711_local()).contains("crypto"));
    }

    #[test]
    fn an_srtp_offer_is_answered_with_our_key_under_its_tag_or_refused() {
        let theirs = MasterKey::new(THEIR_KEY);
        let keys = SrtpKeys {
            ours: MasterKey::new([7; 30]),
            theirs,
        };
        // RTP/SAVP, with a second line we cannot use first
        let offer = srtp_offer(
            "RTP/SAVP",
            &format!(
                "a=crypto:1 AES_256_CM_HMAC_SHA1_80 inline:AAAA\r\n{}",
                their_crypto(2)
            ),
        );
        for required in [true, false] {
            let answer = answer_ok(&offer, &with_srtp(required));
            assert!(
                answer.sdp.contains("m=audio 40000 RTP/SAVP 0 101\r\n"),
                "{}",
                answer.sdp
            );
            assert!(
                answer.sdp.contains("a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:"),
                "{}",
                answer.sdp
            );
            assert_eq!(answer.media.srtp, Some(keys));
        }
        // best effort: a plain line with a key is encrypted, one without is not
        let answer = answer_ok(&srtp_offer("RTP/AVP", &their_crypto(1)), &with_srtp(false));
        assert!(
            answer.sdp.contains("m=audio 40000 RTP/AVP 0 101\r\n"),
            "{}",
            answer.sdp
        );
        assert_eq!(answer.media.srtp, Some(keys));
        let answer = answer_ok(&srtp_offer("RTP/AVP", ""), &with_srtp(false));
        assert!(!answer.sdp.contains("crypto"), "{}", answer.sdp);
        assert_eq!(answer.media.srtp, None);
        // off: a plain line's key is ignored, RTP/SAVP refused; mandatory: plain refused
        let plain = answer_ok(&srtp_offer("RTP/AVP", &their_crypto(1)), &g711_local());
        assert_eq!(plain.media.srtp, None);
        for (offer, local) in [
            (srtp_offer("RTP/SAVP", &their_crypto(1)), g711_local()),
            (srtp_offer("RTP/AVP", ""), with_srtp(true)),
            (
                srtp_offer(
                    "RTP/SAVP",
                    "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:AAAA|2^31|1:4\r\n",
                ),
                with_srtp(true),
            ),
        ] {
            assert!(
                matches!(
                    super::answer(&parse(&offer), &local),
                    Err(NegotiationError::NoUsableAudio { .. })
                ),
                "{offer}"
            );
        }
    }

    #[test]
    fn an_answer_to_our_srtp_offer_gives_their_key_or_fails_when_we_insist() {
        let theirs = MasterKey::new(THEIR_KEY);
        for required in [true, false] {
            let n = negotiate_answer(
                &with_srtp(required),
                &parse(&srtp_offer(
                    if required { "RTP/SAVP" } else { "RTP/AVP" },
                    &their_crypto(1),
                )),
            )
            .unwrap();
            assert_eq!(n.srtp.map(|k| k.theirs), Some(theirs));
        }
        // best effort answered in clear: plain RTP
        let n = negotiate_answer(&with_srtp(false), &parse(&srtp_offer("RTP/AVP", ""))).unwrap();
        assert_eq!(n.srtp, None);
        // insisting, or an RTP/SAVP answer, without a key for our tag: no call
        for (local, answer) in [
            (with_srtp(true), srtp_offer("RTP/AVP", "")),
            (with_srtp(true), srtp_offer("RTP/SAVP", &their_crypto(2))),
            (with_srtp(false), srtp_offer("RTP/SAVP", "")),
            // best effort, but answered with a key for another line: it would encrypt
            (with_srtp(false), srtp_offer("RTP/AVP", &their_crypto(2))),
        ] {
            assert!(negotiate_answer(&local, &parse(&answer)).is_err(), "{answer}");
        }
    }
}
