//! Every path of a gateway call, fed as SIP events and browser commands.

use std::net::SocketAddr;

use sipline_media::sdp::{Codec, LocalMedia};
use sipline_sip::{CallEvent, CallState, CallStatus, TransferState};

use crate::{CallControlError, DtmfMethod, GatewayCall, MediaAction, Notice, Output, SipAction, SipMedia};

fn local() -> LocalMedia {
    LocalMedia::new("127.0.0.1".parse().unwrap(), 40000, 7)
}

/// The far end's SDP: audio at `ip:port` with `codecs` ("0 101" for PCMU + events),
/// in `direction`.
fn far_sdp(ip: &str, port: u16, codecs: &str, direction: &str) -> Vec<u8> {
    let mut s = format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP {codecs}\r\n"
    );
    for pt in codecs.split(' ') {
        let map = match pt {
            "0" => "PCMU/8000",
            "8" => "PCMA/8000",
            "18" => "G729/8000",
            "101" => "telephone-event/8000",
            _ => unreachable!(),
        };
        s += &format!("a=rtpmap:{pt} {map}\r\n");
    }
    s += &format!("a={direction}\r\n");
    s.into_bytes()
}

fn drain(call: &mut GatewayCall) -> Vec<Output> {
    std::iter::from_fn(|| call.poll_output()).collect()
}

fn status(state: CallState, code: Option<u16>) -> CallEvent {
    CallEvent::Status(CallStatus {
        state,
        code,
        reason: None,
    })
}

fn answer_sdp(direction: &str) -> CallEvent {
    CallEvent::RemoteSdp {
        sdp: far_sdp("10.0.0.1", 5000, "0 101", direction),
        early: false,
    }
}

fn media_of(outputs: &[Output]) -> Vec<&MediaAction> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Media(m) => Some(m),
            _ => None,
        })
        .collect()
}

fn sip_of(outputs: &[Output]) -> Vec<&SipAction> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Sip(s) => Some(s),
            _ => None,
        })
        .collect()
}

fn states_of(outputs: &[Output]) -> Vec<CallState> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Notify(Notice::State(s)) => Some(s.state),
            _ => None,
        })
        .collect()
}

fn settled(outputs: &[Output]) -> Vec<&Result<(), CallControlError>> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::HoldSettled(r) => Some(r),
            _ => None,
        })
        .collect()
}

fn leg(action: &MediaAction) -> &SipMedia {
    match action {
        MediaAction::Attach(m) | MediaAction::Update(m) => m,
        other => panic!("not a media change: {other:?}"),
    }
}

fn text(sdp: &[u8]) -> &str {
    std::str::from_utf8(sdp).unwrap()
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// An outgoing call answered with PCMU + telephone-event, outputs drained.
fn established_outgoing() -> GatewayCall {
    let (mut call, _) = GatewayCall::outgoing("1001".into(), local());
    call.on_sip_event(status(CallState::Dialing, None));
    call.on_sip_event(answer_sdp("sendrecv"));
    call.on_sip_event(status(CallState::InCall, Some(200)));
    let out = drain(&mut call);
    assert!(matches!(media_of(&out)[..], [MediaAction::Attach(_)]), "{out:?}");
    call
}

/// An outgoing call with early media (183, PCMU + telephone-event), outputs drained.
fn early_media_outgoing() -> GatewayCall {
    let (mut call, _) = GatewayCall::outgoing("1001".into(), local());
    call.on_sip_event(CallEvent::RemoteSdp {
        sdp: far_sdp("10.0.0.1", 5000, "0 101", "sendrecv"),
        early: true,
    });
    call.on_sip_event(status(CallState::EarlyMedia, Some(183)));
    drain(&mut call);
    call
}

#[test]
fn outgoing_call_offers_our_codecs_and_attaches_early_media_then_updates_on_answer() {
    let (mut call, offer) = GatewayCall::outgoing("1001".into(), local());
    assert!(
        text(&offer).contains("m=audio 40000 RTP/AVP 0 8 101"),
        "{}",
        text(&offer)
    );
    assert_eq!(call.state(), CallState::Dialing);
    call.on_sip_event(status(CallState::Dialing, None));
    call.on_sip_event(CallEvent::RemoteSdp {
        sdp: far_sdp("10.0.0.1", 5000, "0", "sendrecv"),
        early: true,
    });
    call.on_sip_event(status(CallState::EarlyMedia, Some(183)));
    let out = drain(&mut call);
    assert_eq!(states_of(&out), [CallState::Dialing, CallState::EarlyMedia]);
    let early = media_of(&out);
    assert!(matches!(early[..], [MediaAction::Attach(_)]), "{out:?}");
    assert_eq!(leg(early[0]).remote_rtp, addr("10.0.0.1:5000"));
    // the 200 moves the media elsewhere: the bridge follows, the ports stay
    call.on_sip_event(CallEvent::RemoteSdp {
        sdp: far_sdp("10.0.0.9", 7000, "8 101", "sendrecv"),
        early: false,
    });
    call.on_sip_event(status(CallState::InCall, Some(200)));
    let out = drain(&mut call);
    let update = media_of(&out);
    assert!(matches!(update[..], [MediaAction::Update(_)]), "{out:?}");
    assert_eq!(leg(update[0]).remote_rtp, addr("10.0.0.9:7000"));
    assert_eq!(leg(update[0]).leg.codec.codec, Codec::Pcma);
    assert_eq!(states_of(&out), [CallState::InCall]);
    assert_eq!(call.state(), CallState::InCall);
}

#[test]
fn unusable_early_media_is_only_logged_but_an_unusable_answer_ends_the_call() {
    let (mut call, _) = GatewayCall::outgoing("1001".into(), local());
    call.on_sip_event(CallEvent::RemoteSdp {
        sdp: far_sdp("10.0.0.1", 5000, "18", "sendrecv"),
        early: true,
    });
    let out = drain(&mut call);
    assert!(matches!(out[..], [Output::Warning(_)]), "{out:?}");
    call.on_sip_event(CallEvent::RemoteSdp {
        sdp: far_sdp("10.0.0.1", 5000, "18", "sendrecv"),
        early: false,
    });
    let out = drain(&mut call);
    assert_eq!(sip_of(&out), [&SipAction::HangUp { code: 488, why: None }]);
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Notify(Notice::Error { code: Some(488), .. }))),
        "{out:?}"
    );
    assert!(media_of(&out).is_empty());
}

#[test]
fn incoming_call_rings_then_accept_answers_the_offer_and_attaches() {
    let offer = far_sdp("10.0.0.1", 5000, "8 0 101", "sendrecv");
    let mut call = GatewayCall::incoming(
        "1000".into(),
        Some("Reception".into()),
        vec![],
        Some(&offer),
        local(),
    )
    .unwrap();
    call.on_sip_event(status(CallState::Ringing, None));
    let out = drain(&mut call);
    assert_eq!(
        out[0],
        Output::Notify(Notice::Incoming {
            from: "1000".into(),
            display_name: Some("Reception".into()),
            headers: vec![],
        })
    );
    assert_eq!(states_of(&out), [CallState::Ringing]);
    assert!(media_of(&out).is_empty(), "no media before the answer");
    call.accept().unwrap();
    let out = drain(&mut call);
    let [SipAction::Accept { sdp }] = sip_of(&out)[..] else {
        panic!("{out:?}")
    };
    // the offerer's preference is kept only among our codecs: ours (PCMU) first
    assert!(text(sdp).contains("m=audio 40000 RTP/AVP 0 101"), "{}", text(sdp));
    let attach = media_of(&out);
    assert!(matches!(attach[..], [MediaAction::Attach(_)]), "{out:?}");
    assert_eq!(leg(attach[0]).remote_rtp, addr("10.0.0.1:5000"));
    assert_eq!(call.accept(), Err(CallControlError::NotRinging), "only once");
}

#[test]
fn an_unreadable_incoming_offer_is_refused_with_488() {
    assert_eq!(
        GatewayCall::incoming("1000".into(), None, vec![], Some(b"\xff\xfe"), local()).unwrap_err(),
        488
    );
}

#[test]
fn an_incoming_offer_without_common_codec_is_refused_on_accept() {
    let offer = far_sdp("10.0.0.1", 5000, "18", "sendrecv");
    let mut call = GatewayCall::incoming("1000".into(), None, vec![], Some(&offer), local()).unwrap();
    drain(&mut call);
    assert!(matches!(
        call.accept(),
        Err(CallControlError::MediaNotAcceptable(_))
    ));
    let out = drain(&mut call);
    assert_eq!(sip_of(&out), [&SipAction::HangUp { code: 488, why: None }]);
    assert!(media_of(&out).is_empty());
}

#[test]
fn offerless_incoming_invite_gets_our_offer_and_takes_the_answer_from_the_ack() {
    let mut call = GatewayCall::incoming("1000".into(), None, vec![], None, local()).unwrap();
    drain(&mut call);
    call.accept().unwrap();
    let out = drain(&mut call);
    let [SipAction::Accept { sdp }] = sip_of(&out)[..] else {
        panic!("{out:?}")
    };
    assert!(text(sdp).contains("RTP/AVP 0 8 101"), "our whole offer");
    assert!(media_of(&out).is_empty(), "nothing agreed yet");
    // the ACK's answer
    call.on_sip_event(answer_sdp("sendrecv"));
    let out = drain(&mut call);
    assert!(matches!(media_of(&out)[..], [MediaAction::Attach(_)]), "{out:?}");
}

#[test]
fn hold_is_settled_only_when_the_far_end_accepts_and_resume_undoes_it() {
    let mut call = established_outgoing();
    assert!(call.is_talking());
    call.hold(true).unwrap();
    assert!(!call.is_talking(), "about to be held");
    let out = drain(&mut call);
    let [SipAction::Reinvite { sdp }] = sip_of(&out)[..] else {
        panic!("{out:?}")
    };
    assert!(text(sdp).contains("a=sendonly"), "{}", text(sdp));
    assert!(
        text(sdp).contains("o=- 7 2 IN IP4"),
        "version bumped: {}",
        text(sdp)
    );
    assert!(settled(&out).is_empty(), "not before the far end answers");
    assert_eq!(call.hold(false), Err(CallControlError::OfferInProgress));
    // the 200's answer
    call.on_sip_event(answer_sdp("recvonly"));
    let out = drain(&mut call);
    assert_eq!(settled(&out), [&Ok(())]);
    assert!(
        out.contains(&Output::Notify(Notice::Hold { on: true })),
        "{out:?}"
    );
    assert!(!call.is_talking());
    let update = media_of(&out);
    assert!(matches!(update[..], [MediaAction::Update(_)]), "{out:?}");
    assert!(!leg(update[0]).leg.send, "we hold: nothing sent");
    assert_eq!(call.state(), CallState::InCall, "our hold is not the far end's");
    // already on hold: settled at once, nothing sent
    call.hold(true).unwrap();
    let out = drain(&mut call);
    assert_eq!(out, [Output::HoldSettled(Ok(()))]);
    // resume
    call.hold(false).unwrap();
    let out = drain(&mut call);
    let [SipAction::Reinvite { sdp }] = sip_of(&out)[..] else {
        panic!("{out:?}")
    };
    assert!(text(sdp).contains("a=sendrecv"));
    assert!(call.is_talking(), "about to talk again");
    call.on_sip_event(answer_sdp("sendrecv"));
    let out = drain(&mut call);
    assert_eq!(settled(&out), [&Ok(())]);
    assert!(
        out.contains(&Output::Notify(Notice::Hold { on: false })),
        "{out:?}"
    );
    assert!(leg(media_of(&out)[0]).leg.send);
}

#[test]
fn a_refused_hold_is_rolled_back_and_reported_to_the_browser() {
    let mut call = established_outgoing();
    call.hold(true).unwrap();
    drain(&mut call);
    call.on_sip_event(CallEvent::ReinviteFailed { code: 488 });
    let out = drain(&mut call);
    assert_eq!(settled(&out), [&Err(CallControlError::Refused { code: 488 })]);
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Notify(Notice::Error { code: Some(488), .. }))),
        "{out:?}"
    );
    assert!(media_of(&out).is_empty(), "the media stays as it was");
    // our side is back to sendrecv: an offerless re-INVITE gets it
    call.on_sip_event(CallEvent::Offer { sdp: None });
    let out = drain(&mut call);
    let [SipAction::AnswerOffer(Ok(sdp))] = sip_of(&out)[..] else {
        panic!("{out:?}")
    };
    assert!(text(sdp).contains("a=sendrecv"), "{}", text(sdp));
    // and hold can be tried again
    call.hold(true).unwrap();
    assert!(matches!(
        sip_of(&drain(&mut call))[..],
        [SipAction::Reinvite { .. }]
    ));
}

#[test]
fn a_hold_the_user_agent_cannot_send_is_rolled_back() {
    let mut call = established_outgoing();
    call.hold(true).unwrap();
    let out = drain(&mut call);
    call.sip_refused(sip_of(&out)[0], "another offer is in progress".into());
    let out = drain(&mut call);
    assert_eq!(
        settled(&out),
        [&Err(CallControlError::Sip("another offer is in progress".into()))]
    );
    call.hold(true).unwrap();
}

#[test]
fn hold_needs_an_answered_call() {
    let (mut call, _) = GatewayCall::outgoing("1001".into(), local());
    assert_eq!(call.hold(true), Err(CallControlError::NotEstablished));
    let mut call = established_outgoing();
    call.on_sip_event(status(CallState::Completed, None));
    assert_eq!(call.hold(true), Err(CallControlError::CallEnded));
}

#[test]
fn the_far_end_holding_us_is_shown_as_held_and_its_resume_as_in_call() {
    let mut call = established_outgoing();
    call.on_sip_event(CallEvent::Offer {
        sdp: Some(far_sdp("10.0.0.1", 5000, "0 101", "sendonly")),
    });
    let out = drain(&mut call);
    let [SipAction::AnswerOffer(Ok(sdp))] = sip_of(&out)[..] else {
        panic!("{out:?}")
    };
    assert!(text(sdp).contains("a=recvonly"), "{}", text(sdp));
    assert!(
        !leg(media_of(&out)[0]).leg.send,
        "nothing to a far end that holds"
    );
    assert_eq!(states_of(&out), [CallState::Held]);
    assert_eq!(call.state(), CallState::Held);
    // a refresh with the same hold changes nothing the browser sees
    call.on_sip_event(CallEvent::Offer {
        sdp: Some(far_sdp("10.0.0.1", 5000, "0 101", "sendonly")),
    });
    assert!(states_of(&drain(&mut call)).is_empty());
    call.on_sip_event(CallEvent::Offer {
        sdp: Some(far_sdp("10.0.0.1", 5000, "0 101", "sendrecv")),
    });
    let out = drain(&mut call);
    assert_eq!(states_of(&out), [CallState::InCall]);
    assert!(leg(media_of(&out)[0]).leg.send);
}

#[test]
fn a_reinvite_that_moves_the_far_end_and_changes_codec_updates_the_bridge() {
    let mut call = established_outgoing();
    call.on_sip_event(CallEvent::Offer {
        sdp: Some(far_sdp("10.0.0.2", 6000, "8", "sendrecv")),
    });
    let out = drain(&mut call);
    assert!(matches!(sip_of(&out)[..], [SipAction::AnswerOffer(Ok(_))]));
    let update = media_of(&out);
    assert!(matches!(update[..], [MediaAction::Update(_)]), "{out:?}");
    let media = leg(update[0]);
    assert_eq!(media.remote_rtp, addr("10.0.0.2:6000"));
    assert_eq!(media.remote_rtcp, addr("10.0.0.2:6001"));
    assert_eq!(media.leg.codec.codec, Codec::Pcma);
    assert_eq!(media.leg.dtmf_payload_type, None);
    assert_eq!(
        call.dtmf_method(),
        DtmfMethod::Info,
        "no telephone-event any more"
    );
    assert!(states_of(&out).is_empty());
}

#[test]
fn an_unacceptable_reinvite_offer_is_refused_and_the_media_kept() {
    let mut call = established_outgoing();
    call.on_sip_event(CallEvent::Offer {
        sdp: Some(far_sdp("10.0.0.2", 6000, "18", "sendrecv")),
    });
    let out = drain(&mut call);
    assert_eq!(sip_of(&out), [&SipAction::AnswerOffer(Err(488))]);
    assert!(media_of(&out).is_empty());
    assert_eq!(call.dtmf_method(), DtmfMethod::Rfc4733, "still as before");
}

#[test]
fn offerless_reinvite_gets_our_offer_and_its_answer_updates_the_media() {
    let mut call = established_outgoing();
    call.on_sip_event(CallEvent::Offer { sdp: None });
    let out = drain(&mut call);
    assert!(matches!(sip_of(&out)[..], [SipAction::AnswerOffer(Ok(_))]));
    call.on_sip_event(CallEvent::RemoteSdp {
        sdp: far_sdp("10.0.0.3", 6100, "0", "sendrecv"),
        early: false,
    });
    let out = drain(&mut call);
    assert_eq!(leg(media_of(&out)[0]).remote_rtp, addr("10.0.0.3:6100"));
}

#[test]
fn dtmf_goes_as_telephone_events_when_negotiated_and_as_info_otherwise() {
    let (mut call, _) = GatewayCall::outgoing("1001".into(), local());
    assert_eq!(call.dtmf("1"), Err(CallControlError::NotEstablished));
    let mut call = established_outgoing();
    assert_eq!(call.dtmf("12#"), Ok(DtmfMethod::Rfc4733));
    assert_eq!(drain(&mut call), [Output::Media(MediaAction::Dtmf("12#".into()))]);
    // a far end without telephone-event
    let (mut call, _) = GatewayCall::outgoing("1001".into(), local());
    call.on_sip_event(CallEvent::RemoteSdp {
        sdp: far_sdp("10.0.0.1", 5000, "0", "sendrecv"),
        early: false,
    });
    call.on_sip_event(status(CallState::InCall, Some(200)));
    drain(&mut call);
    assert_eq!(call.dtmf("12"), Ok(DtmfMethod::Info));
    let out = drain(&mut call);
    let infos = sip_of(&out);
    assert_eq!(infos.len(), 2, "one INFO per key");
    assert_eq!(
        infos[0],
        &SipAction::Info {
            content_type: "application/dtmf-relay",
            body: b"Signal=1\r\nDuration=160\r\n".to_vec()
        }
    );
    // a key from the browser's own audio
    call.browser_key('5');
    assert!(matches!(sip_of(&drain(&mut call))[..], [SipAction::Info { .. }]));
}

#[test]
fn dtmf_is_allowed_during_early_media() {
    let mut call = early_media_outgoing();
    assert_eq!(
        call.dtmf("1"),
        Ok(DtmfMethod::Rfc4733),
        "IVR menus before the answer"
    );
}

#[test]
fn info_dtmf_from_the_far_end_reaches_the_browser() {
    let mut call = established_outgoing();
    call.on_sip_event(CallEvent::Info {
        content_type: "application/dtmf-relay".into(),
        body: b"Signal=9\r\n".to_vec(),
    });
    call.on_sip_event(CallEvent::Info {
        content_type: "application/x-custom".into(),
        body: b"9".to_vec(),
    });
    assert_eq!(
        drain(&mut call),
        [Output::Notify(Notice::Dtmf {
            digit: '9',
            method: DtmfMethod::Info
        })]
    );
}

#[test]
fn cancel_crossing_the_200_does_not_bring_media_up() {
    let (mut call, _) = GatewayCall::outgoing("1001".into(), local());
    call.on_sip_event(status(CallState::Ringing, Some(180)));
    drain(&mut call);
    call.hang_up(487, None).unwrap();
    assert_eq!(
        drain(&mut call),
        [Output::Sip(SipAction::HangUp { code: 487, why: None })]
    );
    // the SIP call reports the cancel, then the 200 that crossed it arrives (the SIP
    // side ACKs and BYEs it)
    call.on_sip_event(status(CallState::Cancelled, None));
    call.on_sip_event(answer_sdp("sendrecv"));
    call.on_sip_event(CallEvent::Ended);
    let out = drain(&mut call);
    assert_eq!(states_of(&out), [CallState::Cancelled]);
    assert!(media_of(&out).is_empty(), "{out:?}");
    assert_eq!(call.hang_up(487, None), Err(CallControlError::CallEnded));
}

#[test]
fn bye_crossing_our_reinvite_settles_the_hold_as_ended_and_detaches() {
    let mut call = established_outgoing();
    call.hold(true).unwrap();
    drain(&mut call);
    call.on_sip_event(CallEvent::Status(CallStatus {
        state: CallState::Completed,
        code: None,
        reason: Some("hung up by far end".into()),
    }));
    // the 491/481 to our re-INVITE comes after the BYE
    call.on_sip_event(CallEvent::ReinviteFailed { code: 481 });
    call.on_sip_event(CallEvent::Ended);
    let out = drain(&mut call);
    assert_eq!(settled(&out), [&Err(CallControlError::CallEnded)]);
    assert_eq!(states_of(&out), [CallState::Completed]);
    assert_eq!(media_of(&out), [&MediaAction::Detach]);
    assert!(
        !out.iter()
            .any(|o| matches!(o, Output::Notify(Notice::Error { .. }))),
        "no refusal to report for an ended call: {out:?}"
    );
}

#[test]
fn a_failed_call_reports_an_error_before_its_final_state() {
    let (mut call, _) = GatewayCall::outgoing("999".into(), local());
    call.on_sip_event(CallEvent::Status(CallStatus {
        state: CallState::Failed,
        code: Some(404),
        reason: Some("Not Found".into()),
    }));
    let out = drain(&mut call);
    assert_eq!(
        out[0],
        Output::Notify(Notice::Error {
            code: Some(404),
            reason: "Not Found".into()
        })
    );
    assert_eq!(states_of(&out), [CallState::Failed]);
}

#[test]
fn a_media_timeout_hangs_up_with_its_reason() {
    let mut call = established_outgoing();
    call.hang_up(480, Some("media timeout".into())).unwrap();
    assert_eq!(
        drain(&mut call),
        [Output::Sip(SipAction::HangUp {
            code: 480,
            why: Some("media timeout".into())
        })]
    );
}

#[test]
fn an_update_during_early_media_moves_the_media_before_the_answer() {
    let mut call = early_media_outgoing();
    call.on_sip_event(CallEvent::Offer {
        sdp: Some(far_sdp("10.0.0.1", 5002, "0 101", "sendrecv")),
    });
    let out = drain(&mut call);
    assert!(
        matches!(sip_of(&out)[..], [SipAction::AnswerOffer(Ok(_))]),
        "{out:?}"
    );
    let update = media_of(&out);
    assert!(matches!(update[..], [MediaAction::Update(_)]), "{out:?}");
    assert_eq!(leg(update[0]).remote_rtp, addr("10.0.0.1:5002"));
    call.on_sip_event(status(CallState::InCall, Some(200)));
    let out = drain(&mut call);
    assert!(media_of(&out).is_empty());
    assert_eq!(states_of(&out), [CallState::InCall]);
}

#[test]
fn the_sdp_version_goes_up_only_when_our_sdp_changes() {
    let version = |sdp: &[u8]| {
        text(sdp)
            .lines()
            .find(|l| l.starts_with("o="))
            .and_then(|o| o.split(' ').nth(2))
            .unwrap()
            .to_owned()
    };
    let mut call = established_outgoing();
    // asked for our offer again, unchanged: same version
    call.on_sip_event(CallEvent::Offer { sdp: None });
    let out = drain(&mut call);
    let [SipAction::AnswerOffer(Ok(sdp))] = sip_of(&out)[..] else {
        panic!("{out:?}")
    };
    assert_eq!(version(sdp), "1");
    // the far end holds us: our answer says recvonly, a change
    call.on_sip_event(CallEvent::Offer {
        sdp: Some(far_sdp("10.0.0.1", 5000, "0 101", "sendonly")),
    });
    let out = drain(&mut call);
    let [SipAction::AnswerOffer(Ok(sdp))] = sip_of(&out)[..] else {
        panic!("{out:?}")
    };
    assert_eq!(version(sdp), "2", "{}", text(sdp));
    // the same again: no change
    call.on_sip_event(CallEvent::Offer {
        sdp: Some(far_sdp("10.0.0.1", 5000, "0 101", "sendonly")),
    });
    let out = drain(&mut call);
    let [SipAction::AnswerOffer(Ok(sdp))] = sip_of(&out)[..] else {
        panic!("{out:?}")
    };
    assert_eq!(version(sdp), "2");
}

#[test]
fn without_a_media_task_nothing_is_attached_and_dtmf_goes_as_info() {
    let (call, _) = GatewayCall::outgoing("1001".into(), local());
    let mut call = call.without_media_task();
    call.on_sip_event(answer_sdp("sendrecv"));
    call.on_sip_event(status(CallState::InCall, Some(200)));
    assert!(media_of(&drain(&mut call)).is_empty());
    assert_eq!(call.dtmf("1"), Ok(DtmfMethod::Info));
}

#[test]
fn a_transfer_is_a_refer_and_its_progress_reaches_the_browser() {
    let mut call = GatewayCall::outgoing("1001".into(), local()).0;
    drain(&mut call);
    assert_eq!(call.transfer("1002"), Err(CallControlError::NotEstablished));
    let mut call = established_outgoing();
    call.transfer("1002").unwrap();
    let out = drain(&mut call);
    assert_eq!(
        sip_of(&out),
        [&SipAction::Refer {
            number: "1002".into()
        }]
    );
    call.on_sip_event(CallEvent::Transfer {
        state: TransferState::Ringing,
        code: Some(180),
    });
    assert_eq!(
        drain(&mut call),
        [Output::Notify(Notice::Transfer {
            state: TransferState::Ringing,
            code: Some(180)
        })]
    );
    call.on_sip_event(status(CallState::Completed, None));
    drain(&mut call);
    assert_eq!(call.transfer("1002"), Err(CallControlError::CallEnded));
}
