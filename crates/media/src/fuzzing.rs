//! The bodies of the cargo-fuzz targets in `crates/media/fuzz`, as plain functions.
//!
//! They live in the library, not in the fuzz crate, so that one body serves two
//! callers: the fuzz target (`fuzz/fuzz_targets/*.rs`, a one-line `fuzz_target!`
//! around each function) and `tests/fuzz_corpus.rs`, which replays every file of the
//! committed corpora with an ordinary `cargo test`, without cargo-fuzz or nightly.
//! Each function panics exactly when the fuzzer must report a crash. Not part of the
//! API: hidden from the documentation, and free to change with the targets.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use crate::bridge::{Bridge, BrowserLeg, LegCodec, SipLeg};
use crate::sdp::{Codec, Direction, LocalCodec, LocalMedia, NegotiatedMedia, Sdp};
use crate::{dtmf, rtcp, rtp, sdp as sdp_mod};

/// Target `rtp`: what the SIP leg's media sockets receive. RTP and RTCP parsing,
/// telephone-event payloads, and SDP, none of which may panic on any input; a parsed
/// RTP packet serialises into one that parses the same.
pub fn rtp(data: &[u8]) {
    if let Ok(p) = rtp::RtpPacket::parse(data) {
        let again = p.to_vec();
        let q = rtp::RtpPacket::parse(&again).expect("our own packet parses");
        assert_eq!(
            (q.sequence, q.timestamp, q.payload),
            (p.sequence, p.timestamp, p.payload)
        );
        let _ = dtmf::TelephoneEvent::parse(p.payload);
    }
    let _ = rtcp::parse(data);
    let _ = rtp::looks_like_rtcp(data);
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(offer) = Sdp::parse(text)
    {
        let local = LocalMedia::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 40000, 1);
        let _ = sdp_mod::answer(&offer, &local);
        let _ = sdp_mod::negotiate_answer(&local, &offer);
    }
}

/// Target `bridge`: the media bridge with hostile packets from both legs, in both
/// relay and transcoding set-ups (so the Opus, G.722 and G.711 decoders see garbage
/// too). The first byte picks the two legs' codecs; the rest is split at 0xff into
/// chunks 20 ms apart: even-numbered ones go to the SIP leg as datagrams, odd ones to
/// the browser leg as payloads with header fields from their first bytes.
pub fn bridge(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let codecs = [
        LegCodec {
            codec: Codec::Pcmu,
            payload_type: 0,
        },
        LegCodec {
            codec: Codec::Pcma,
            payload_type: 8,
        },
        LegCodec {
            codec: Codec::G722,
            payload_type: 9,
        },
        LegCodec {
            codec: Codec::Opus,
            payload_type: 111,
        },
    ];
    let browser = codecs[usize::from(selector & 3)];
    let sip = codecs[usize::from((selector >> 2) & 3)];
    let t0 = Instant::now();
    let mut b = Bridge::new(
        t0,
        Duration::from_secs(1_700_000_000),
        BrowserLeg {
            codecs: vec![browser],
            dtmf: vec![(126, 8000)],
        },
        SipLeg {
            codec: sip,
            dtmf_payload_type: Some(101),
            ptime_ms: 20,
            send: true,
            receive: true,
        },
        u64::from(selector),
    );
    for (i, chunk) in rest.split(|b| *b == 0xff).enumerate() {
        let now = t0 + Duration::from_millis(20 * i as u64);
        if i % 2 == 0 {
            let _ = b.from_sip(now, chunk);
            let _ = b.from_sip_rtcp(now, chunk);
        } else if chunk.len() >= 7 {
            let pt = if chunk[0] & 1 == 0 {
                browser.payload_type
            } else {
                126
            };
            let seq = u16::from_be_bytes([chunk[1], chunk[2]]);
            let ts = u32::from_be_bytes([chunk[3], chunk[4], chunk[5], chunk[6]]);
            b.from_browser(now, pt, seq, ts, 1, &chunk[7..]);
        }
        if chunk.first() == Some(&b'#') {
            b.send_dtmf(now, "1#");
        }
        b.handle_timeout(now);
        while b.poll_output().is_some() {}
    }
}

/// Target `sdp`: the SIP side's SDP, as the gateway's SIP driver uses it. The input,
/// if it is UTF-8 and parses, is the far end's SDP in both roles, for two of our
/// set-ups (G.711 only; every codec, on hold, RTCP mux, IPv6):
///
/// - as an offer (INVITE, re-INVITE) that we [`answer`](sdp_mod::answer): our answer
///   must parse, keep one `m=` line per offered one (RFC 3264 §6), and accept exactly
///   one stream, in the payload type it negotiated;
/// - as the answer to our [`build_offer`](sdp_mod::build_offer) (our INVITE, or our
///   offer in the 200 to an INVITE without one), read by
///   [`negotiate_answer`](sdp_mod::negotiate_answer).
///
/// Whatever is negotiated then sets up a media bridge, as a call's media session does
/// (the far end's SDP picks the SIP leg's codec, payload types and packet time), and
/// one packet crosses each way.
pub fn sdp(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(theirs) = Sdp::parse(text) else {
        return;
    };
    for local in local_set_ups() {
        let offer = sdp_mod::build_offer(&local);
        assert!(Sdp::parse(&offer).is_ok(), "our offer parses:\n{offer}");
        if let Ok(answer) = sdp_mod::answer(&theirs, &local) {
            let ours = match Sdp::parse(&answer.sdp) {
                Ok(ours) => ours,
                Err(e) => panic!("our answer does not parse: {e}\n{}", answer.sdp),
            };
            assert_eq!(
                ours.media.len(),
                theirs.media.len(),
                "one m= line in the answer per offered one:\n{}",
                answer.sdp
            );
            let accepted: Vec<_> = ours.media.iter().filter(|m| !m.is_rejected()).collect();
            assert_eq!(accepted.len(), 1, "one stream accepted:\n{}", answer.sdp);
            assert_eq!(
                accepted[0].payload_types().next(),
                Some(answer.media.payload_type),
                "the accepted stream's first payload type is the negotiated one:\n{}",
                answer.sdp
            );
            bridge_from(&answer.media, local.direction);
        }
        if let Ok(negotiated) = sdp_mod::negotiate_answer(&local, &theirs) {
            bridge_from(&negotiated, local.direction);
        }
    }
}

/// What the gateway's SIP driver offers: G.711 only (`LocalMedia::new`), and its
/// default codec list with telephone-event, here put on hold, RTCP-muxed, on IPv6.
fn local_set_ups() -> [LocalMedia; 2] {
    let g711 = LocalMedia::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 50)), 40_000, 4242);
    let mut all = LocalMedia::new(
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x50)),
        50_000,
        u64::MAX / 2,
    );
    all.codecs = [
        Codec::Pcmu,
        Codec::Pcma,
        Codec::G722,
        Codec::Opus,
        Codec::TelephoneEvent,
    ]
    .into_iter()
    .map(LocalCodec::new)
    .collect();
    all.direction = Direction::SendOnly;
    all.rtcp_mux = true;
    all.next_version();
    [g711, all]
}

/// A bridge for negotiated media, with the SIP leg as the gateway's call controller
/// builds it (`SipLeg::negotiated`, via `sipline_call::SipMedia`) and a browser that
/// has every codec; one packet of the negotiated payload type from the far end, one of
/// audio from the browser.
fn bridge_from(n: &NegotiatedMedia, ours: Direction) {
    let sip = SipLeg::negotiated(n, !ours.receives());
    let browser = BrowserLeg {
        codecs: [
            (Codec::Pcmu, 0),
            (Codec::Pcma, 8),
            (Codec::G722, 9),
            (Codec::Opus, 111),
        ]
        .into_iter()
        .map(|(codec, payload_type)| LegCodec { codec, payload_type })
        .collect(),
        dtmf: vec![(101, 8000)],
    };
    let t0 = Instant::now();
    let mut b = Bridge::new(t0, Duration::from_secs(1_700_000_000), browser, sip, 7);
    let mut packet = vec![0x80, n.payload_type, 0, 1, 0, 0, 0, 160, 0, 0, 0, 9];
    packet.extend_from_slice(&[0xd5; 160]);
    let _ = b.from_sip(t0, &packet);
    b.from_browser(t0, 0, 1, 160, 1, &[0xff; 160]);
    if let Some(dtmf) = n.dtmf_payload_type {
        packet[1] = dtmf;
        let _ = b.from_sip(t0, &packet);
        b.send_dtmf(t0, "5");
    }
    b.handle_timeout(t0 + Duration::from_millis(20));
    while b.poll_output().is_some() {}
}
