//! The bodies of the cargo-fuzz targets in `crates/gateway/fuzz`, as plain functions.
//!
//! They live in the library, not in the fuzz crate, so that one body serves two
//! callers: the fuzz target (`fuzz/fuzz_targets/*.rs`, a one-line `fuzz_target!`
//! around each function) and `tests/fuzz_corpus.rs`, which replays every file of the
//! committed corpora with an ordinary `cargo test`, without cargo-fuzz or nightly.
//! Each function panics exactly when the fuzzer must report a crash. Not part of the
//! API: hidden from the documentation, and free to change with the targets.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::json;
use sipline_media::bridge::{Bridge, LegCodec, SipLeg};
use sipline_media::sdp::Codec as MediaCodec;
use str0m::media::{MediaKind, Mid};
use str0m::{Event, Input, Output, Rtc};

use crate::api::{ClientRequest, Incoming, ServerFrame, error_json, result_json};
use crate::media_session::{accept_offer, browser_leg, new_rtc, remote_candidate};

/// Target `jsonrpc`: a WebSocket text frame, read as the gateway reads the browser's
/// ([`Incoming::parse`]) and as the API documentation test reads the gateway's
/// ([`ServerFrame::parse`]). Neither may panic, and what they make of it survives a
/// round trip: an accepted request, written again as a client would write it, parses
/// into the same request; a refused one gets an error frame that parses back into
/// that error; a server frame serialised as the gateway serialises it parses back
/// into the same frame.
pub fn jsonrpc(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Incoming::parse(text) {
        Ok(incoming) => {
            let again = client_frame(&incoming);
            match Incoming::parse(&again) {
                Ok(parsed) => assert_eq!(parsed, incoming, "request round trip through {again}"),
                Err(e) => panic!("{again}, written from {incoming:?}, is refused: {e:?}"),
            }
        }
        Err(rejection) => {
            let frame = error_json(&rejection.id, &rejection.error);
            let expected = ServerFrame::Error {
                id: rejection.id,
                error: rejection.error,
            };
            assert_eq!(ServerFrame::parse(&frame), Ok(expected), "error frame {frame}");
        }
    }
    if let Ok(frame) = ServerFrame::parse(text) {
        let again = match &frame {
            ServerFrame::Notification(n) => n.to_json(),
            ServerFrame::Result { id, result } => result_json(id, result.clone()),
            ServerFrame::Error { id, error } => error_json(id, error),
        };
        assert_eq!(
            ServerFrame::parse(&again),
            Ok(frame),
            "server frame round trip through {again}"
        );
    }
}

/// A request as the browser's client writes it (`static/` and docs/api.md).
fn client_frame(incoming: &Incoming) -> String {
    let (method, params) = match &incoming.request {
        ClientRequest::Ping => ("ping", None),
        ClientRequest::GetState => ("getState", None),
        ClientRequest::Call { number, headers } => {
            ("call", Some(json!({ "number": number, "headers": headers })))
        }
        ClientRequest::Accept => ("accept", None),
        ClientRequest::HangUp { code: None } => ("hangUp", Some(json!({}))),
        ClientRequest::HangUp { code: Some(code) } => ("hangUp", Some(json!({ "code": code }))),
        ClientRequest::Offer { sdp } => ("offer", Some(json!({ "type": "offer", "sdp": sdp }))),
        ClientRequest::Candidate { candidate } => ("candidate", Some(json!({ "candidate": candidate }))),
        ClientRequest::Dtmf { digits } => ("dtmf", Some(json!({ "digits": digits }))),
        ClientRequest::Hold => ("hold", Some(json!({}))),
        ClientRequest::Unhold => ("unhold", None),
        ClientRequest::Transfer {
            to: crate::api::TransferTo::Number(number),
        } => ("transfer", Some(json!({ "number": number }))),
        ClientRequest::Transfer {
            to: crate::api::TransferTo::Call(call),
        } => ("transfer", Some(json!({ "toCallId": call }))),
    };
    let mut frame = json!({ "jsonrpc": "2.0", "method": method });
    if let Some(id) = &incoming.id {
        frame["id"] = id.clone();
    }
    if let Some(params) = params {
        frame["params"] = params;
    }
    if let Some(call) = &incoming.call_id {
        frame["params"]["callId"] = json!(call);
    }
    frame.to_string()
}

/// Target `browser_sdp`: the browser side's SDP, as a session's media task handles
/// the `offer` and `candidate` requests. The input (UTF-8) is split at its first NUL
/// into an offer and an optional re-offer. Each goes to str0m's parser and offer/answer
/// on a peer connection configured as the gateway configures one (`new_rtc`, default
/// codecs); str0m is driven until it waits, and the negotiated codecs are read as the
/// session reads them (`browser_leg`), then bridged to a G.711 SIP leg with one packet
/// per negotiated payload type. Every line that mentions a candidate is also given to
/// the trickle-ICE path (`remote_candidate`). Nothing may panic; the browser leg only
/// names payload types the browser offered, each once.
pub fn browser_sdp(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let local = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 40_000);
    let preference = [
        MediaCodec::Pcmu,
        MediaCodec::Pcma,
        MediaCodec::G722,
        MediaCodec::Opus,
    ];
    let mut rtc = new_rtc(local, &preference);
    let t0 = Instant::now();
    let mut mid = None;
    let mut bridge: Option<Bridge> = None;
    for offer in text.splitn(2, '\0') {
        let _ = accept_offer(&mut rtc, offer);
        drive(&mut rtc, t0, &mut mid);
        let Some(leg) = mid.and_then(|mid| browser_leg(&rtc, mid)) else {
            continue;
        };
        let remote: Vec<u8> = mid
            .and_then(|mid| rtc.media(mid))
            .map(|m| m.remote_pts().iter().map(|p| **p).collect())
            .unwrap_or_default();
        let mut named: Vec<u8> = leg.codecs.iter().map(|c| c.payload_type).collect();
        named.extend(leg.dtmf.iter().map(|(pt, _)| *pt));
        for pt in &named {
            assert!(remote.contains(pt), "payload type {pt} was not offered: {leg:?}");
        }
        named.sort_unstable();
        assert!(
            named.windows(2).all(|w| w[0] != w[1]),
            "a payload type twice: {leg:?}"
        );
        if leg.codecs.is_empty() {
            continue;
        }
        let b = bridge.get_or_insert_with(|| {
            let sip = SipLeg {
                codec: LegCodec {
                    codec: MediaCodec::Pcmu,
                    payload_type: 0,
                },
                dtmf_payload_type: Some(101),
                ptime_ms: 20,
                send: true,
                receive: true,
            };
            Bridge::new(t0, Duration::from_secs(1_700_000_000), leg.clone(), sip, 1)
        });
        b.set_browser(leg.clone());
        for (seq, pt) in (1u16..).zip(
            leg.codecs
                .iter()
                .map(|c| c.payload_type)
                .chain(leg.dtmf.iter().map(|d| d.0)),
        ) {
            b.from_browser(
                t0,
                pt,
                seq,
                u32::from(seq) * 960,
                1,
                &[0xf8, 0xff, 0xfe, 0, 1, 2, 3, 4],
            );
        }
        b.handle_timeout(t0 + Duration::from_millis(20));
        while b.poll_output().is_some() {}
    }
    for line in text.lines().filter(|l| l.contains("candidate")) {
        if let Some(Ok(candidate)) = remote_candidate(line) {
            rtc.add_remote_candidate(candidate);
        }
    }
    drive(&mut rtc, t0 + Duration::from_secs(1), &mut mid);
}

/// Runs str0m as the media task does after a command: every output until it waits
/// (a bounded number, whatever it does), the audio media it announces remembered as
/// the session remembers it; then one timeout.
fn drive(rtc: &mut Rtc, now: Instant, mid: &mut Option<Mid>) {
    for round in 0..2 {
        if round == 1 && rtc.handle_input(Input::Timeout(now)).is_err() {
            return;
        }
        for _ in 0..1000 {
            match rtc.poll_output() {
                Ok(Output::Event(Event::MediaAdded(m))) if m.kind == MediaKind::Audio => {
                    *mid = Some(m.mid);
                }
                Ok(Output::Timeout(_)) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}
