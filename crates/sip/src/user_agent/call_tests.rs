//! Calls through the user agent, against a scripted far end, with simulated time.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;
use crate::call::{CallState, CallStatus, TransferState};

const PBX: &str = "127.0.0.1:5060";
const OFFER: &[u8] =
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n";
const FAR_SDP: &[u8] =
    b"v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 20000 RTP/AVP 0\r\n";

fn pbx() -> Target {
    Target {
        transport: Transport::Udp,
        addr: PBX.parse::<SocketAddr>().unwrap(),
    }
}

struct Lab {
    ua: UserAgent,
    now: Instant,
    line: LineId,
}

impl Lab {
    /// A UA with one registered line, 880.
    fn new() -> Lab {
        Lab::with_config(test_config()).0
    }

    /// The same with `config`; and the REGISTER it sent.
    fn with_config(config: UaConfig) -> (Lab, Request) {
        let t0 = Instant::now();
        let mut ua = UserAgent::new(t0, config, 7);
        let line = ua.add_line(
            t0,
            Account {
                user: "880".into(),
                auth_user: "880".into(),
                password: "880".into(),
                display_name: Some("Desk".into()),
                domain: "127.0.0.1".into(),
            },
        );
        let mut lab = Lab { ua, now: t0, line };
        let reg = lab.one_request();
        lab.respond(
            &reg,
            200,
            &[("Contact", "<sip:880@127.0.0.1:5090>;expires=600")],
            b"",
        );
        lab.events();
        (lab, reg)
    }

    fn sent(&mut self) -> Vec<Message> {
        std::iter::from_fn(|| self.ua.poll_transmit())
            .map(|t| Message::parse(&t.data).unwrap())
            .collect()
    }

    fn requests(&mut self) -> Vec<Request> {
        self.sent()
            .into_iter()
            .filter_map(|m| match m {
                Message::Request(r) => Some(r),
                _ => None,
            })
            .collect()
    }

    fn one_request(&mut self) -> Request {
        let mut r = self.requests();
        assert_eq!(r.len(), 1, "{r:#?}");
        r.remove(0)
    }

    fn responses(&mut self) -> Vec<Response> {
        self.sent()
            .into_iter()
            .filter_map(|m| match m {
                Message::Response(r) => Some(r),
                _ => None,
            })
            .collect()
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.ua.poll_event()).collect()
    }

    fn call_events(&mut self) -> Vec<CallEvent> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Call { event, .. } => Some(event),
                _ => None,
            })
            .collect()
    }

    fn states(&mut self) -> Vec<CallState> {
        self.call_events()
            .into_iter()
            .filter_map(|e| match e {
                CallEvent::Status(CallStatus { state, .. }) => Some(state),
                _ => None,
            })
            .collect()
    }

    fn feed(&mut self, data: &[u8]) {
        let _ = self.ua.handle_receive(self.now, pbx(), data);
    }

    /// The far end answers our request.
    fn respond(&mut self, req: &Request, status: u16, extra: &[(&str, &str)], body: &[u8]) {
        let mut resp = Response::for_request(req, status, "Far");
        if status > 100 {
            let to = req.headers.get("To").unwrap().to_owned();
            if !to.contains("tag=") {
                resp.headers.set("To", format!("{to};tag=far"));
            }
        }
        for (n, v) in extra {
            resp.headers.push(*n, *v);
        }
        resp.body = body.to_vec();
        self.feed(&resp.to_bytes());
    }

    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while let Some(t) = self.ua.poll_timeout() {
            if t > end {
                break;
            }
            self.now = self.now.max(t);
            self.ua.handle_timeout(self.now);
        }
        self.now = end;
    }

    /// Places a call and gets it to 200 OK (with Record-Route and Contact); returns the INVITE.
    fn call_answered(&mut self) -> (CallRef, Request) {
        let call = self
            .ua
            .place_call(self.now, self.line, "1000", OFFER.to_vec())
            .unwrap();
        let invite = self.one_request();
        self.respond(&invite, 180, &[], b"");
        self.respond(
            &invite,
            200,
            &[
                ("Record-Route", "<sip:127.0.0.1:5060;lr>"),
                ("Contact", "<sip:1000@127.0.0.1:5070>"),
            ],
            FAR_SDP,
        );
        (call, invite)
    }

    /// An answered outgoing call, with what it sent and reported so far drained.
    fn established(&mut self) -> CallRef {
        let (call, _) = self.call_answered();
        self.requests();
        self.events();
        call
    }

    /// A request from the far end (`from_tag` "far"); `to_tag` for in-dialog ones.
    fn far_request(
        method: &str,
        branch: &str,
        call_id: &str,
        cseq: u32,
        to_tag: Option<&str>,
        body: &[u8],
    ) -> String {
        let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
        let ct = if body.is_empty() {
            ""
        } else {
            "Content-Type: application/sdp\r\n"
        };
        let mut s = format!(
            "{method} sip:880@127.0.0.1:5090 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK{branch}\r\n\
             Record-Route: <sip:127.0.0.1:5060;lr>\r\nMax-Forwards: 69\r\nFrom: \"Alice\" <sip:1000@127.0.0.1>;tag=far\r\n\
             To: <sip:880@127.0.0.1>{to_tag}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n\
             Contact: <sip:1000@127.0.0.1:5070>\r\n{ct}Content-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        s.extend_from_slice(body);
        String::from_utf8(s).unwrap()
    }
}

fn status_of(resps: &[Response]) -> Vec<u16> {
    resps.iter().map(|r| r.status).collect()
}

#[test]
fn outgoing_call_authenticates_rings_answers_and_hangs_up() {
    let mut lab = Lab::new();
    let call = lab
        .ua
        .place_call(lab.now, lab.line, "1000", OFFER.to_vec())
        .unwrap();
    let invite = lab.one_request();
    assert_eq!(invite.uri.to_string(), "sip:1000@127.0.0.1");
    assert_eq!(invite.body, OFFER);
    assert_eq!(lab.states(), vec![CallState::Dialing]);
    lab.respond(
        &invite,
        407,
        &[(
            "Proxy-Authenticate",
            "Digest realm=\"127.0.0.1\", nonce=\"x\", qop=\"auth\"",
        )],
        b"",
    );
    let mut sent = lab.requests();
    assert_eq!(sent[0].method, Method::Ack, "the 407 is ACKed by the transaction");
    let invite2 = sent.remove(1);
    assert!(invite2.headers.get("Proxy-Authorization").is_some());
    assert_eq!(
        invite2.headers.call_id().unwrap(),
        invite.headers.call_id().unwrap()
    );
    assert_eq!(
        invite2.headers.cseq().unwrap().seq,
        invite.headers.cseq().unwrap().seq + 1
    );
    lab.respond(&invite2, 100, &[], b"");
    lab.respond(&invite2, 180, &[], b"");
    assert_eq!(lab.states(), vec![CallState::Ringing]);
    lab.respond(&invite2, 183, &[], FAR_SDP);
    let ev = lab.call_events();
    assert!(ev.contains(&CallEvent::RemoteSdp {
        sdp: FAR_SDP.to_vec(),
        early: true
    }));
    assert!(matches!(&ev[..], [_, CallEvent::Status(s)] if s.state == CallState::EarlyMedia));
    let ok_headers = [
        ("Record-Route", "<sip:127.0.0.1:5060;lr>"),
        ("Contact", "<sip:1000@127.0.0.1:5070>"),
    ];
    lab.respond(&invite2, 200, &ok_headers, FAR_SDP);
    let ack = lab.one_request();
    assert_eq!(ack.method, Method::Ack);
    assert_eq!(ack.uri.to_string(), "sip:1000@127.0.0.1:5070");
    assert_eq!(ack.headers.get("Route"), Some("<sip:127.0.0.1:5060;lr>"));
    assert_eq!(
        ack.headers.cseq().unwrap().seq,
        invite2.headers.cseq().unwrap().seq
    );
    assert_eq!(lab.states(), vec![CallState::InCall]);
    assert_eq!(lab.ua.stats().dialogs, 1);
    // the 200 again (our ACK was lost): ACK again
    lab.respond(&invite2, 200, &ok_headers, FAR_SDP);
    assert_eq!(lab.one_request().method, Method::Ack);
    // hang up: BYE in the dialog
    lab.ua.hang_up(lab.now, call, 486).unwrap();
    let bye = lab.one_request();
    assert_eq!(bye.method, Method::Bye);
    assert_eq!(bye.headers.to().unwrap().tag(), Some("far"));
    assert_eq!(
        bye.headers.cseq().unwrap().seq,
        invite2.headers.cseq().unwrap().seq + 1
    );
    assert_eq!(lab.states(), vec![CallState::Completed]);
    assert_eq!(lab.ua.line_call(lab.line), None, "the line is free at once");
    lab.respond(&bye, 200, &[], b"");
    assert!(lab.call_events().contains(&CallEvent::Ended));
    assert_eq!(lab.ua.stats().calls, 0);
}

#[test]
fn far_end_hangs_up() {
    let mut lab = Lab::new();
    lab.established();
    // BYE from the far end: From/To swapped relative to our dialog
    let bye = far_bye(&lab, "bye", 1);
    lab.feed(bye.as_bytes());
    assert_eq!(status_of(&lab.responses()), vec![200]);
    let ev = lab.call_events();
    assert!(matches!(&ev[0], CallEvent::Status(s) if s.state == CallState::Completed));
    assert!(ev.contains(&CallEvent::Ended));
    // the same BYE again is answered again by the transaction
    lab.feed(bye.as_bytes());
    assert_eq!(status_of(&lab.responses()), vec![200]);
}

#[test]
fn busy_declined_and_unreachable_map_to_states() {
    for (code, state) in [
        (486, CallState::Busy),
        (600, CallState::Busy),
        (603, CallState::Rejected),
        (404, CallState::Failed),
        (480, CallState::NoAnswer),
        (500, CallState::Failed),
    ] {
        let mut lab = Lab::new();
        lab.ua
            .place_call(lab.now, lab.line, "1000", OFFER.to_vec())
            .unwrap();
        let invite = lab.one_request();
        lab.events();
        lab.respond(&invite, code, &[], b"");
        assert_eq!(lab.one_request().method, Method::Ack);
        let ev = lab.call_events();
        assert!(
            matches!(&ev[0], CallEvent::Status(s) if s.state == state && s.code == Some(code)),
            "{code}: {ev:?}"
        );
        assert!(ev.contains(&CallEvent::Ended), "{code}");
        assert_eq!(lab.ua.line_call(lab.line), None);
    }
}

#[test]
fn unanswered_invite_times_out_with_timer_b() {
    let mut lab = Lab::new();
    lab.ua
        .place_call(lab.now, lab.line, "1000", OFFER.to_vec())
        .unwrap();
    lab.events();
    lab.advance(Duration::from_secs(31));
    assert_eq!(
        lab.requests().len(),
        6,
        "INVITE retransmitted at 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s"
    );
    assert!(lab.states().is_empty());
    lab.advance(Duration::from_secs(1));
    let ev = lab.call_events();
    assert!(
        matches!(&ev[0], CallEvent::Status(s) if s.state == CallState::Failed && s.code == Some(408)),
        "{ev:?}"
    );
    assert!(ev.contains(&CallEvent::Ended));
}

#[test]
fn cancel_while_ringing() {
    let mut lab = Lab::new();
    let call = lab
        .ua
        .place_call(lab.now, lab.line, "1000", OFFER.to_vec())
        .unwrap();
    let invite = lab.one_request();
    lab.respond(&invite, 180, &[], b"");
    lab.events();
    lab.ua.hang_up(lab.now, call, 486).unwrap();
    let cancel = lab.one_request();
    assert_eq!(cancel.method, Method::Cancel);
    assert_eq!(
        cancel.headers.top_via().unwrap().branch(),
        invite.headers.top_via().unwrap().branch()
    );
    assert_eq!(
        cancel.headers.cseq().unwrap().seq,
        invite.headers.cseq().unwrap().seq
    );
    assert_eq!(lab.states(), vec![CallState::Cancelled]);
    lab.respond(&cancel, 200, &[], b"");
    assert!(lab.call_events().is_empty(), "waiting for the 487");
    lab.respond(&invite, 487, &[], b"");
    assert_eq!(lab.one_request().method, Method::Ack);
    assert_eq!(lab.call_events(), vec![CallEvent::Ended]);
}

#[test]
fn cancel_waits_for_a_provisional_response() {
    let mut lab = Lab::new();
    let call = lab
        .ua
        .place_call(lab.now, lab.line, "1000", OFFER.to_vec())
        .unwrap();
    let invite = lab.one_request();
    lab.ua.hang_up(lab.now, call, 486).unwrap();
    assert!(
        lab.requests().is_empty(),
        "no CANCEL before a provisional response (RFC 3261 §9.1)"
    );
    lab.respond(&invite, 100, &[], b"");
    assert_eq!(lab.one_request().method, Method::Cancel);
}

#[test]
fn a_200_that_crosses_our_cancel_is_acked_and_hung_up() {
    let mut lab = Lab::new();
    let call = lab
        .ua
        .place_call(lab.now, lab.line, "1000", OFFER.to_vec())
        .unwrap();
    let invite = lab.one_request();
    lab.respond(&invite, 180, &[], b"");
    lab.ua.hang_up(lab.now, call, 486).unwrap();
    let cancel = lab.one_request();
    lab.respond(&cancel, 200, &[], b"");
    lab.respond(&invite, 200, &[("Contact", "<sip:1000@127.0.0.1:5070>")], FAR_SDP);
    let sent: Vec<Method> = lab.requests().into_iter().map(|r| r.method).collect();
    assert_eq!(sent, vec![Method::Ack, Method::Bye]);
}

#[test]
fn no_answer_timeout_cancels() {
    let mut lab = Lab::new();
    lab.ua
        .place_call(lab.now, lab.line, "1000", OFFER.to_vec())
        .unwrap();
    let invite = lab.one_request();
    lab.respond(&invite, 180, &[], b"");
    lab.events();
    lab.advance(Duration::from_secs(121));
    assert_eq!(lab.requests()[0].method, Method::Cancel);
    let ev = lab.call_events();
    assert!(matches!(&ev[0], CallEvent::Status(s) if s.state == CallState::NoAnswer));
}

#[test]
fn incoming_call_rings_is_accepted_acked_and_ended_by_the_caller() {
    let mut lab = Lab::new();
    let invite = Lab::far_request("INVITE", "inv1", "in-1", 1, None, FAR_SDP);
    lab.feed(invite.as_bytes());
    let resps = lab.responses();
    assert_eq!(status_of(&resps), vec![100, 180]);
    assert_eq!(
        resps[1].headers.get("Record-Route"),
        Some("<sip:127.0.0.1:5060;lr>"),
        "RFC 3261 §12.1.1"
    );
    let local_tag = resps[1].headers.to().unwrap().tag().unwrap().to_owned();
    assert!(resps[1].headers.get("Contact").is_some());
    let ev = lab.call_events();
    let call = lab.ua.line_call(lab.line).unwrap();
    assert_eq!(
        ev[0],
        CallEvent::Incoming {
            from: "1000".into(),
            display_name: Some("Alice".into()),
            offer: Some(FAR_SDP.to_vec()),
            headers: vec![],
            replaces: None,
        }
    );
    assert!(matches!(&ev[1], CallEvent::Status(s) if s.state == CallState::Ringing));
    // a retransmitted INVITE gets the 180 again, not a second call
    lab.feed(invite.as_bytes());
    assert_eq!(status_of(&lab.responses()), vec![180]);
    lab.ua.accept_call(lab.now, call, OFFER.to_vec()).unwrap();
    let ok = lab.responses().remove(0);
    assert_eq!(ok.status, 200);
    assert_eq!(ok.body, OFFER);
    assert_eq!(ok.headers.to().unwrap().tag(), Some(local_tag.as_str()));
    assert_eq!(lab.states(), vec![CallState::InCall]);
    // the 200 is retransmitted until the ACK comes
    lab.advance(Duration::from_millis(500));
    assert_eq!(status_of(&lab.responses()), vec![200]);
    let ack = Lab::far_request("ACK", "ack1", "in-1", 1, Some(&local_tag), b"");
    lab.feed(ack.as_bytes());
    lab.advance(Duration::from_secs(2));
    assert!(lab.responses().is_empty(), "no retransmission after the ACK");
    // our BYE goes through the caller's Record-Route to their Contact
    lab.ua.hang_up(lab.now, call, 486).unwrap();
    let bye = lab.one_request();
    assert_eq!(bye.uri.to_string(), "sip:1000@127.0.0.1:5070");
    assert_eq!(bye.headers.to().unwrap().tag(), Some("far"));
    assert_eq!(bye.headers.from().unwrap().tag(), Some(local_tag.as_str()));
    assert_eq!(bye.headers.get("Route"), Some("<sip:127.0.0.1:5060;lr>"));
}

#[test]
fn incoming_call_rejected_cancelled_or_busy() {
    // rejected by the browser
    let mut lab = Lab::new();
    lab.feed(Lab::far_request("INVITE", "r1", "rej", 1, None, FAR_SDP).as_bytes());
    lab.sent();
    lab.events();
    let call = lab.ua.line_call(lab.line).unwrap();
    lab.ua.hang_up(lab.now, call, 603).unwrap();
    assert_eq!(status_of(&lab.responses()), vec![603]);
    assert_eq!(lab.states(), vec![CallState::Rejected]);

    // cancelled by the caller
    let mut lab = Lab::new();
    lab.feed(Lab::far_request("INVITE", "c1", "can", 1, None, FAR_SDP).as_bytes());
    lab.sent();
    lab.events();
    lab.feed(Lab::far_request("CANCEL", "c1", "can", 1, None, b"").as_bytes());
    let mut statuses = status_of(&lab.responses());
    statuses.sort();
    assert_eq!(statuses, vec![200, 487]);
    let ev = lab.call_events();
    assert!(matches!(&ev[0], CallEvent::Status(s) if s.state == CallState::Cancelled));
    assert!(ev.contains(&CallEvent::Ended));

    // a second call while the line has one: 486
    let mut lab = Lab::new();
    lab.feed(Lab::far_request("INVITE", "b1", "first", 1, None, FAR_SDP).as_bytes());
    lab.sent();
    lab.feed(Lab::far_request("INVITE", "b2", "second", 1, None, FAR_SDP).as_bytes());
    assert_eq!(status_of(&lab.responses()), vec![100, 486]);

    // a call for nobody: 404
    let mut lab = Lab::new();
    let other = Lab::far_request("INVITE", "n1", "nobody", 1, None, FAR_SDP).replace("sip:880@", "sip:999@");
    lab.feed(other.as_bytes());
    assert_eq!(status_of(&lab.responses()), vec![100, 404]);
}

#[test]
fn a_line_carries_calls_per_line_calls_and_refuses_the_next() {
    let mut config = test_config();
    config.calls_per_line = 2;
    let mut lab = Lab::with_config(config).0;
    lab.feed(Lab::far_request("INVITE", "w1", "first", 1, None, FAR_SDP).as_bytes());
    let first = lab.ua.line_call(lab.line).expect("one call");
    lab.ua.accept_call(lab.now, first, OFFER.to_vec()).unwrap();
    lab.sent();
    lab.events();
    // a second call rings during the first (call waiting)
    lab.feed(Lab::far_request("INVITE", "w2", "second", 1, None, FAR_SDP).as_bytes());
    assert_eq!(status_of(&lab.responses()), vec![100, 180]);
    let calls = lab.ua.line_calls(lab.line).to_vec();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0], first);
    assert_eq!(
        lab.ua.line_call(lab.line),
        None,
        "no single call to pick any more"
    );
    assert!(matches!(
        lab.call_events().first(),
        Some(CallEvent::Incoming { .. })
    ));
    // the line is full: a third call gets 486, and so does placing one
    lab.feed(Lab::far_request("INVITE", "w3", "third", 1, None, FAR_SDP).as_bytes());
    assert_eq!(status_of(&lab.responses()), vec![100, 486]);
    assert_eq!(
        lab.ua.place_call(lab.now, lab.line, "1001", OFFER.to_vec()),
        Err(CallError::LineBusy)
    );
    // the first ends: the line has room again, for an outgoing call too
    lab.ua.hang_up(lab.now, first, 486).unwrap();
    lab.sent();
    assert_eq!(lab.ua.line_calls(lab.line), &calls[1..]);
    let placed = lab
        .ua
        .place_call(lab.now, lab.line, "1001", OFFER.to_vec())
        .unwrap();
    assert_eq!(lab.ua.line_calls(lab.line), &[calls[1], placed]);
}

#[test]
fn reinvite_from_the_far_end_is_answered_with_our_sdp() {
    let mut lab = Lab::new();
    lab.feed(Lab::far_request("INVITE", "i1", "re", 1, None, FAR_SDP).as_bytes());
    let tag = lab.responses()[1].headers.to().unwrap().tag().unwrap().to_owned();
    let call = lab.ua.line_call(lab.line).unwrap();
    lab.ua.accept_call(lab.now, call, OFFER.to_vec()).unwrap();
    lab.feed(Lab::far_request("ACK", "a1", "re", 1, Some(&tag), b"").as_bytes());
    lab.sent();
    lab.events();
    lab.feed(Lab::far_request("INVITE", "i2", "re", 2, Some(&tag), FAR_SDP).as_bytes());
    assert_eq!(status_of(&lab.responses()), vec![100]);
    assert_eq!(
        lab.call_events(),
        vec![CallEvent::Offer {
            sdp: Some(FAR_SDP.to_vec())
        }]
    );
    lab.ua.answer_offer(lab.now, call, Ok(OFFER.to_vec())).unwrap();
    let ok = lab.responses().remove(0);
    assert_eq!((ok.status, ok.body.as_slice()), (200, OFFER));
    lab.feed(Lab::far_request("ACK", "a2", "re", 2, Some(&tag), b"").as_bytes());
    assert_eq!(lab.ua.line_call(lab.line), Some(call));
}

#[test]
fn missing_ack_ends_the_call_with_timer_h() {
    let mut lab = Lab::new();
    lab.feed(Lab::far_request("INVITE", "h1", "noack", 1, None, FAR_SDP).as_bytes());
    let call = lab.ua.line_call(lab.line).unwrap();
    lab.ua.accept_call(lab.now, call, OFFER.to_vec()).unwrap();
    lab.sent();
    lab.events();
    lab.advance(Duration::from_secs(33));
    let bye = lab.requests().into_iter().find(|r| r.method == Method::Bye);
    assert!(bye.is_some(), "BYE after 64*T1 without ACK");
    let ev = lab.call_events();
    assert!(matches!(&ev[0], CallEvent::Status(s) if s.state == CallState::Failed));
}

#[test]
fn requests_for_unknown_dialogs_get_481() {
    let mut lab = Lab::new();
    lab.feed(Lab::far_request("BYE", "u1", "unknown", 1, Some("nope"), b"").as_bytes());
    lab.feed(Lab::far_request("INFO", "u2", "unknown", 2, Some("nope"), b"").as_bytes());
    lab.feed(Lab::far_request("CANCEL", "u3", "unknown", 1, None, b"").as_bytes());
    assert_eq!(status_of(&lab.responses()), vec![481, 481, 481]);
}

#[test]
fn removing_a_line_mid_call_sends_bye_before_unregistering() {
    let mut lab = Lab::new();
    lab.call_answered();
    lab.requests();
    lab.events();
    lab.ua.remove_line(lab.now, lab.line);
    let sent = lab.requests();
    let methods: Vec<Method> = sent.iter().map(|r| r.method.clone()).collect();
    assert_eq!(methods, vec![Method::Bye, Method::Register]);
    assert_eq!(sent[1].headers.get("Expires"), Some("0"));
    lab.respond(&sent[1], 200, &[], b"");
    lab.respond(&sent[0], 200, &[], b"");
    assert!(lab.events().contains(&Event::LineRemoved { line: lab.line }));
    assert_eq!(lab.ua.stats().calls, 0);
}

#[test]
fn hundred_calls_leave_nothing_behind() {
    let mut lab = Lab::new();
    for _ in 0..100 {
        let (call, _) = lab.call_answered();
        lab.ua.hang_up(lab.now, call, 486).unwrap();
        let bye = lab
            .requests()
            .into_iter()
            .find(|r| r.method == Method::Bye)
            .unwrap();
        lab.respond(&bye, 200, &[], b"");
        lab.events();
    }
    lab.advance(Duration::from_secs(40));
    let s = lab.ua.stats();
    assert_eq!(
        (s.calls, s.dialogs, s.client_transactions, s.server_transactions),
        (0, 0, 0, 0)
    );
}

#[test]
fn our_reinvite_and_info_travel_in_the_dialog() {
    let mut lab = Lab::new();
    let (call, invite) = lab.call_answered();
    lab.requests();
    lab.events();
    lab.ua.reinvite(lab.now, call, b"v=0 hold".to_vec()).unwrap();
    let re = lab.one_request();
    assert_eq!(re.method, Method::Invite);
    assert_eq!(re.uri.to_string(), "sip:1000@127.0.0.1:5070");
    assert_eq!(
        re.headers.cseq().unwrap().seq,
        invite.headers.cseq().unwrap().seq + 1
    );
    assert_eq!(re.body, b"v=0 hold");
    assert!(
        lab.ua.reinvite(lab.now, call, b"again".to_vec()).is_err(),
        "one offer at a time"
    );
    lab.respond(&re, 200, &[("Contact", "<sip:1000@127.0.0.1:5070>")], FAR_SDP);
    let ack = lab.one_request();
    assert_eq!(
        (ack.method.clone(), ack.headers.cseq().unwrap().seq),
        (Method::Ack, re.headers.cseq().unwrap().seq)
    );
    assert!(lab.call_events().contains(&CallEvent::RemoteSdp {
        sdp: FAR_SDP.to_vec(),
        early: false
    }));
    // a retransmitted 200 is ACKed again, and reported no more
    lab.respond(&re, 200, &[("Contact", "<sip:1000@127.0.0.1:5070>")], FAR_SDP);
    assert_eq!(lab.one_request().method, Method::Ack);
    assert!(lab.call_events().is_empty());
    // a refused one is reported
    lab.ua.reinvite(lab.now, call, b"v=0 again".to_vec()).unwrap();
    let re2 = lab.one_request();
    lab.respond(&re2, 488, &[], b"");
    assert!(
        lab.call_events()
            .contains(&CallEvent::ReinviteFailed { code: 488 })
    );
    // INFO
    lab.ua
        .send_info(
            lab.now,
            call,
            "application/dtmf-relay",
            b"Signal=5\r\nDuration=160\r\n".to_vec(),
        )
        .unwrap();
    let info = lab
        .requests()
        .into_iter()
        .find(|r| r.method == Method::Info)
        .unwrap();
    assert_eq!(info.headers.get("Content-Type"), Some("application/dtmf-relay"));
    assert_eq!(lab.ua.line_call(lab.line), Some(call));
}

/// Feeds `data` as if sent from `source` (not the PBX).
fn feed_from(lab: &mut Lab, source: &str, data: &str) -> Result<(), Dropped> {
    let source = Target {
        transport: Transport::Udp,
        addr: source.parse().unwrap(),
    };
    lab.ua.handle_receive(lab.now, source, data.as_bytes())
}

#[test]
fn an_invite_straight_from_an_untrusted_source_is_refused_without_ringing() {
    let mut lab = Lab::new();
    let forged = Lab::far_request("INVITE", "f1", "forged", 1, None, FAR_SDP)
        .replace("\"Alice\" <sip:1000", "\"Your Bank Security\" <sip:1000");
    let dropped = feed_from(&mut lab, "127.0.0.1:40404", &forged).unwrap_err();
    assert_eq!(dropped.reason, DropReason::Untrusted);
    assert!(dropped.detail.contains("127.0.0.1:40404"), "{dropped}");
    assert_eq!(
        status_of(&lab.responses()),
        vec![403],
        "no 100, no 180: a stateless 403"
    );
    assert!(lab.events().is_empty(), "nobody rings");
    assert_eq!(lab.ua.line_call(lab.line), None);
    let s = lab.ua.stats();
    assert_eq!((s.server_transactions, s.counters.untrusted_refused), (0, 1));
    // the same INVITE through the registrar rings
    lab.feed(Lab::far_request("INVITE", "f2", "real", 1, None, FAR_SDP).as_bytes());
    assert_eq!(status_of(&lab.responses()), vec![100, 180]);
}

#[test]
fn trusted_sources_and_the_outbound_proxy_may_call_in() {
    let mut config = test_config();
    config.protection.trusted_sources = vec!["10.1.0.0/16".parse().unwrap()];
    config.outbound_proxy = Some((
        Uri::parse("sip:127.0.0.1:5070").unwrap(),
        Target {
            transport: Transport::Udp,
            addr: "127.0.0.1:5070".parse().unwrap(),
        },
    ));
    let ua = UserAgent::new(Instant::now(), config, 1);
    for (source, trusted) in [
        ("127.0.0.1:5060", true),
        ("127.0.0.1:5070", true),
        ("10.1.7.9:5060", true),
        ("10.2.0.1:5060", false),
        ("127.0.0.1:5061", false),
    ] {
        let t = Target {
            transport: Transport::Udp,
            addr: source.parse().unwrap(),
        };
        assert_eq!(ua.is_trusted(t), trusted, "{source}");
    }
}

#[test]
fn untrusted_options_and_unknown_dialogs_are_answered_statelessly() {
    let mut lab = Lab::new();
    let options = Lab::far_request("OPTIONS", "o1", "ping", 1, None, b"");
    feed_from(&mut lab, "127.0.0.1:40404", &options).unwrap();
    let bye = Lab::far_request("BYE", "b1", "nope", 2, Some("nope"), b"");
    feed_from(&mut lab, "127.0.0.1:40404", &bye).unwrap();
    let cancel = Lab::far_request("CANCEL", "c1", "nope", 1, None, b"");
    feed_from(&mut lab, "127.0.0.1:40404", &cancel).unwrap();
    assert_eq!(status_of(&lab.responses()), vec![200, 481, 481]);
    assert_eq!(lab.ua.stats().server_transactions, 0, "no state for any of them");
}

#[test]
fn a_flood_of_invites_is_answered_once_each_at_most_and_within_the_budget() {
    let mut lab = Lab::new();
    let budget = test_config().protection.stateless_rate as usize;
    for i in 0..10_000 {
        let junk = Lab::far_request(
            "INVITE",
            &format!("fl{i}"),
            &format!("flood{i}"),
            1,
            None,
            FAR_SDP,
        )
        .replace("sip:880@", &format!("sip:{i}@"));
        let _ = feed_from(&mut lab, "127.0.0.1:40404", &junk);
    }
    let answers = lab.responses();
    assert_eq!(answers.len(), budget, "a burst's worth of 403s, the rest dropped");
    assert!(answers.iter().all(|r| r.status == 403));
    let s = lab.ua.stats();
    assert_eq!(s.server_transactions, 0);
    assert_eq!(s.counters.stateless_rate_limited, (10_000 - budget) as u64);
    // nothing is ever retransmitted
    lab.advance(Duration::from_secs(40));
    assert!(lab.sent().is_empty());
    // a second later, the budget is back
    let junk = Lab::far_request("INVITE", "late", "late", 1, None, FAR_SDP);
    let _ = feed_from(&mut lab, "127.0.0.1:40404", &junk);
    assert_eq!(status_of(&lab.responses()), vec![403]);
}

#[test]
fn server_transactions_are_capped() {
    let mut config = test_config();
    config.protection.max_server_transactions = 50;
    let t0 = Instant::now();
    let mut lab = Lab {
        ua: UserAgent::new(t0, config, 7),
        now: t0,
        line: LineId(0),
    };
    // OPTIONS from the registrar itself (or someone spoofing it) each take a transaction
    for i in 0..200 {
        lab.feed(Lab::far_request("OPTIONS", &format!("o{i}"), &format!("o{i}"), 1, None, b"").as_bytes());
    }
    let statuses = status_of(&lab.responses());
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 50);
    assert_eq!(statuses.iter().filter(|s| **s == 503).count(), 150);
    let s = lab.ua.stats();
    assert_eq!((s.server_transactions, s.counters.transaction_limit), (50, 150));
    // they end on their own (Timer J), and room comes back
    lab.advance(Duration::from_secs(40));
    assert_eq!(lab.ua.stats().server_transactions, 0);
}

#[test]
fn peer_text_in_drop_reasons_is_short_and_escaped() {
    let mut lab = Lab::new();
    let mut junk = String::from("INVITE sip:880@127.0.0.1 SIP/2.0\r\nVia: ");
    junk.push_str(&"\u{1b}[31mX".repeat(20_000));
    junk.push_str("\r\n\r\n");
    let dropped = feed_from(&mut lab, "127.0.0.1:40404", &junk).unwrap_err();
    assert!(dropped.detail.len() < 400, "{} bytes", dropped.detail.len());
    assert!(!dropped.detail.contains('\u{1b}'), "{dropped}");
}

#[test]
fn ten_thousand_live_transactions_keep_timeouts_exact() {
    let mut lab = Lab::new();
    lab.sent();
    let t0 = lab.now;
    for i in 0..10_000 {
        lab.now = t0 + Duration::from_micros(i);
        lab.feed(Lab::far_request("OPTIONS", &format!("m{i}"), &format!("m{i}"), 1, None, b"").as_bytes());
    }
    assert_eq!(lab.ua.stats().server_transactions, 4096, "capped at the default");
    // Timer J (32 s) ends them in the order they came, each at its own time
    lab.now = t0;
    lab.advance(Duration::from_secs(32) - Duration::from_micros(1));
    assert_eq!(lab.ua.stats().server_transactions, 4096);
    lab.advance(Duration::from_micros(2000));
    assert_eq!(lab.ua.stats().server_transactions, 4096 - 2000);
    lab.advance(Duration::from_secs(1));
    assert_eq!(lab.ua.stats().server_transactions, 0);
}

/// The far end's in-dialog INVITE/ACK for a call it placed to us and we accepted:
/// returns the call and our To tag.
fn incoming_call_confirmed(lab: &mut Lab) -> (CallRef, String) {
    lab.feed(Lab::far_request("INVITE", "i1", "in", 1, None, FAR_SDP).as_bytes());
    let tag = lab.responses()[1].headers.to().unwrap().tag().unwrap().to_owned();
    let call = lab.ua.line_call(lab.line).unwrap();
    lab.ua.accept_call(lab.now, call, OFFER.to_vec()).unwrap();
    lab.feed(Lab::far_request("ACK", "a1", "in", 1, Some(&tag), b"").as_bytes());
    lab.sent();
    lab.events();
    (call, tag)
}

const CHALLENGE: &str = "Digest realm=\"127.0.0.1\", nonce=\"n0nce\", qop=\"auth\", algorithm=MD5";

fn branch(req: &Request) -> String {
    req.headers.top_via().unwrap().branch().unwrap().to_owned()
}

#[test]
fn glare_their_reinvite_crossing_ours_gets_491_and_ours_goes_again_within_2_s() {
    let mut lab = Lab::new();
    let (call, tag) = incoming_call_confirmed(&mut lab);
    lab.ua.reinvite(lab.now, call, b"v=0 hold".to_vec()).unwrap();
    let ours = lab.one_request();
    // theirs crosses ours
    lab.feed(Lab::far_request("INVITE", "i2", "in", 2, Some(&tag), FAR_SDP).as_bytes());
    assert_eq!(status_of(&lab.responses()), vec![100, 491]);
    assert!(lab.call_events().is_empty(), "no offer to answer: it was refused");
    // and ours meets theirs: 491 too
    lab.respond(&ours, 491, &[], b"");
    let acks = lab.requests();
    assert!(acks.iter().all(|r| r.method == Method::Ack), "{acks:#?}");
    assert!(lab.call_events().is_empty(), "not a failure yet");
    // we did not choose the Call-ID: back off at most 2 s (RFC 3261 §14.1)
    lab.advance(Duration::from_millis(2010));
    let sent = lab.requests();
    assert!(
        !sent.is_empty() && sent.iter().all(|r| branch(r) == branch(&sent[0])),
        "{sent:#?}"
    );
    let again = sent[0].clone();
    assert_eq!(again.method, Method::Invite);
    assert_eq!(again.body, b"v=0 hold");
    assert!(again.headers.cseq().unwrap().seq > ours.headers.cseq().unwrap().seq);
    assert_ne!(branch(&again), branch(&ours));
    lab.respond(&again, 200, &[("Contact", "<sip:1000@127.0.0.1:5070>")], FAR_SDP);
    assert!(lab.call_events().contains(&CallEvent::RemoteSdp {
        sdp: FAR_SDP.to_vec(),
        early: false
    }));
}

#[test]
fn glare_on_a_call_we_placed_backs_off_2_1_to_4_s_and_gives_up_after_three_tries() {
    let mut lab = Lab::new();
    let call = lab.established();
    lab.ua.reinvite(lab.now, call, b"v=0 hold".to_vec()).unwrap();
    let mut re = lab.one_request();
    for _ in 0..3 {
        lab.respond(&re, 491, &[], b"");
        lab.requests();
        lab.advance(Duration::from_millis(2090));
        assert!(lab.requests().is_empty(), "not before 2.1 s");
        assert!(
            lab.ua.reinvite(lab.now, call, b"other".to_vec()).is_err(),
            "one offer at a time, also while backing off"
        );
        lab.advance(Duration::from_millis(1920));
        // the new INVITE (and its retransmissions: one branch)
        let sent = lab.requests();
        assert!(
            !sent.is_empty() && sent.iter().all(|r| branch(r) == branch(&sent[0])),
            "{sent:#?}"
        );
        re = sent[0].clone();
        assert_eq!(re.body, b"v=0 hold");
    }
    lab.respond(&re, 491, &[], b"");
    assert!(
        lab.call_events()
            .contains(&CallEvent::ReinviteFailed { code: 491 })
    );
    lab.advance(Duration::from_secs(5));
    assert!(lab.requests().iter().all(|r| r.method == Method::Ack));
}

#[test]
fn a_bye_challenged_with_407_is_sent_again_with_credentials() {
    let mut lab = Lab::new();
    let call = lab.established();
    lab.ua.hang_up(lab.now, call, 486).unwrap();
    let bye = lab.one_request();
    assert_eq!(bye.method, Method::Bye);
    lab.respond(&bye, 407, &[("Proxy-Authenticate", CHALLENGE)], b"");
    let again = lab.one_request();
    assert_eq!(again.method, Method::Bye);
    assert_eq!(
        again.headers.cseq().unwrap().seq,
        bye.headers.cseq().unwrap().seq + 1
    );
    assert_ne!(branch(&again), branch(&bye));
    let auth = again.headers.get("Proxy-Authorization").expect("credentials");
    assert!(
        auth.contains("username=\"880\"") && auth.contains("nonce=\"n0nce\""),
        "{auth}"
    );
    assert!(
        !lab.call_events().contains(&CallEvent::Ended),
        "not over while the BYE is unanswered"
    );
    lab.respond(&again, 200, &[], b"");
    assert!(lab.call_events().contains(&CallEvent::Ended));
}

#[test]
fn a_reinvite_and_an_info_challenged_with_401_are_sent_again_with_credentials() {
    let mut lab = Lab::new();
    let call = lab.established();
    lab.ua.reinvite(lab.now, call, b"v=0 hold".to_vec()).unwrap();
    let re = lab.one_request();
    lab.respond(&re, 401, &[("WWW-Authenticate", CHALLENGE)], b"");
    let again: Vec<Request> = lab
        .requests()
        .into_iter()
        .filter(|r| r.method == Method::Invite)
        .collect();
    assert_eq!(again.len(), 1, "{again:#?}");
    assert!(again[0].headers.get("Authorization").is_some());
    assert_eq!(again[0].body, b"v=0 hold");
    lab.respond(
        &again[0],
        200,
        &[("Contact", "<sip:1000@127.0.0.1:5070>")],
        FAR_SDP,
    );
    assert!(lab.call_events().contains(&CallEvent::RemoteSdp {
        sdp: FAR_SDP.to_vec(),
        early: false
    }));
    lab.requests();
    lab.ua
        .send_info(lab.now, call, "application/dtmf-relay", b"Signal=1\r\n".to_vec())
        .unwrap();
    let info = lab.one_request();
    lab.respond(&info, 401, &[("WWW-Authenticate", CHALLENGE)], b"");
    let again = lab.one_request();
    assert_eq!(
        (again.method.clone(), again.body.as_slice()),
        (Method::Info, &b"Signal=1\r\n"[..])
    );
    assert!(again.headers.get("Authorization").is_some());
    // a far end that challenges without end gets no more answers
    let mut last = again;
    let mut sent = 0;
    for _ in 0..20 {
        lab.respond(&last, 401, &[("WWW-Authenticate", CHALLENGE)], b"");
        match lab.requests().into_iter().find(|r| r.method == Method::Info) {
            Some(r) => {
                sent += 1;
                last = r;
            }
            None => break,
        }
    }
    assert!(sent < 8, "answered {sent} challenges");
}

#[test]
fn update_is_answered_in_the_early_dialog_and_after_the_answer() {
    let mut lab = Lab::new();
    let call = lab
        .ua
        .place_call(lab.now, lab.line, "1000", OFFER.to_vec())
        .unwrap();
    let invite = lab.one_request();
    let call_id = invite.headers.call_id().unwrap().to_owned();
    let ours = invite.headers.from().unwrap().tag().unwrap().to_owned();
    lab.respond(&invite, 183, &[("Contact", "<sip:1000@127.0.0.1:5070>")], FAR_SDP);
    lab.events();
    // a new offer in the early dialog (RFC 3311)
    let moved = b"v=0\r\no=- 2 3 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 20002 RTP/AVP 0\r\n";
    lab.feed(Lab::far_request("UPDATE", "u1", &call_id, 10, Some(&ours), moved).as_bytes());
    assert_eq!(
        lab.call_events(),
        vec![CallEvent::Offer {
            sdp: Some(moved.to_vec())
        }]
    );
    lab.ua.answer_offer(lab.now, call, Ok(OFFER.to_vec())).unwrap();
    let ok = lab.responses().remove(0);
    assert_eq!((ok.status, ok.body.as_slice()), (200, OFFER));
    assert!(ok.headers.get("Contact").is_some());
    // the 200 repeats the 18x's answer: not news, the UPDATE's media stays
    lab.respond(&invite, 200, &[("Contact", "<sip:1000@127.0.0.1:5070>")], FAR_SDP);
    let events = lab.call_events();
    assert!(
        !events.iter().any(|e| matches!(e, CallEvent::RemoteSdp { .. })),
        "{events:?}"
    );
    // UPDATE in the confirmed dialog; one without a body is just a target refresh
    lab.feed(Lab::far_request("UPDATE", "u2", &call_id, 11, Some(&ours), b"").as_bytes());
    assert_eq!(status_of(&lab.responses()), vec![200]);
    assert!(lab.call_events().is_empty());
    lab.feed(Lab::far_request("UPDATE", "u3", &call_id, 12, Some(&ours), moved).as_bytes());
    assert!(matches!(lab.call_events()[..], [CallEvent::Offer { .. }]));
    // a second offer while the first waits for our answer
    lab.feed(Lab::far_request("UPDATE", "u4", &call_id, 13, Some(&ours), moved).as_bytes());
    assert_eq!(status_of(&lab.responses()), vec![500]);
    lab.ua.answer_offer(lab.now, call, Ok(OFFER.to_vec())).unwrap();
    assert_eq!(status_of(&lab.responses()), vec![200]);
    // an old CSeq
    lab.feed(Lab::far_request("UPDATE", "u5", &call_id, 12, Some(&ours), moved).as_bytes());
    assert_eq!(status_of(&lab.responses()), vec![500]);
}

#[test]
fn an_update_offer_crossing_our_reinvite_gets_491() {
    let mut lab = Lab::new();
    let (call, tag) = incoming_call_confirmed(&mut lab);
    lab.ua.reinvite(lab.now, call, b"v=0 hold".to_vec()).unwrap();
    lab.requests();
    lab.feed(Lab::far_request("UPDATE", "u1", "in", 2, Some(&tag), FAR_SDP).as_bytes());
    assert_eq!(status_of(&lab.responses()), vec![491]);
}

/// Places a call answered with `Session-Expires: se` and `allow` as the far end's Allow.
fn call_answered_with_timer(lab: &mut Lab, se: &str, allow: &str) -> (CallRef, Request) {
    let call = lab
        .ua
        .place_call(lab.now, lab.line, "1000", OFFER.to_vec())
        .unwrap();
    let invite = lab.one_request();
    assert_eq!(invite.headers.get("Supported"), Some("100rel, timer"));
    assert_eq!(invite.headers.get("Session-Expires"), Some("1800"));
    lab.respond(
        &invite,
        200,
        &[
            ("Contact", "<sip:1000@127.0.0.1:5070>"),
            ("Session-Expires", se),
            ("Require", "timer"),
            ("Allow", allow),
        ],
        FAR_SDP,
    );
    lab.requests();
    lab.events();
    (call, invite)
}

#[test]
fn as_refresher_we_refresh_at_half_the_interval_with_update_or_reinvite() {
    let mut lab = Lab::new();
    call_answered_with_timer(&mut lab, "120;refresher=uac", "INVITE, ACK, BYE, CANCEL, UPDATE");
    lab.advance(Duration::from_secs(59));
    assert!(lab.requests().is_empty(), "not before half the interval");
    lab.advance(Duration::from_secs(1));
    let refresh = lab.one_request();
    assert_eq!(refresh.method, Method::Update);
    assert_eq!(refresh.headers.get("Session-Expires"), Some("120;refresher=uac"));
    assert!(refresh.body.is_empty());
    lab.respond(&refresh, 200, &[("Session-Expires", "120;refresher=uac")], b"");
    lab.advance(Duration::from_secs(60));
    assert_eq!(
        lab.one_request().method,
        Method::Update,
        "again, 60 s after the last"
    );
    // a far end without UPDATE is refreshed with a re-INVITE carrying our SDP
    let mut lab = Lab::new();
    call_answered_with_timer(&mut lab, "120;refresher=uac", "INVITE, ACK, BYE, CANCEL");
    lab.advance(Duration::from_secs(60));
    let refresh = lab.one_request();
    assert_eq!(refresh.method, Method::Invite);
    assert_eq!(refresh.body, OFFER);
    assert_eq!(refresh.headers.get("Session-Expires"), Some("120;refresher=uac"));
}

#[test]
fn an_unanswered_refresh_ends_the_call() {
    let mut lab = Lab::new();
    call_answered_with_timer(&mut lab, "120;refresher=uac", "UPDATE");
    lab.advance(Duration::from_secs(60));
    let refresh = lab.one_request();
    assert_eq!(refresh.method, Method::Update);
    // the UPDATE times out (Timer F) and nothing else refreshes: over before 120 s
    lab.advance(Duration::from_secs(40));
    let sent = lab.requests();
    assert!(sent.iter().any(|r| r.method == Method::Bye), "{sent:#?}");
    assert!(lab.states().contains(&CallState::Completed));
}

#[test]
fn when_the_far_end_refreshes_we_watch_and_end_a_session_it_let_expire() {
    let mut lab = Lab::new();
    let (_, invite) = call_answered_with_timer(&mut lab, "120;refresher=uas", "UPDATE");
    let call_id = invite.headers.call_id().unwrap().to_owned();
    let ours = invite.headers.from().unwrap().tag().unwrap().to_owned();
    lab.advance(Duration::from_secs(50));
    assert!(lab.requests().is_empty(), "they refresh, not us");
    // their refresh: we answer with the timer and start counting again
    let mut update = Lab::far_request("UPDATE", "r1", &call_id, 5, Some(&ours), b"");
    update = update.replace(
        "Content-Length: 0",
        "Session-Expires: 120;refresher=uac\r\nContent-Length: 0",
    );
    lab.feed(update.as_bytes());
    let ok = lab.responses().remove(0);
    assert_eq!(ok.status, 200);
    assert_eq!(ok.headers.get("Session-Expires"), Some("120;refresher=uac"));
    lab.advance(Duration::from_secs(87));
    assert!(lab.requests().is_empty(), "120 s less 32 s after their refresh");
    lab.advance(Duration::from_secs(1));
    assert_eq!(lab.one_request().method, Method::Bye);
    let states = lab.states();
    assert_eq!(states, vec![CallState::Completed]);
}

#[test]
fn a_422_makes_us_ask_again_with_its_min_se() {
    let mut lab = Lab::new();
    lab.ua
        .place_call(lab.now, lab.line, "1000", OFFER.to_vec())
        .unwrap();
    let invite = lab.one_request();
    lab.respond(&invite, 422, &[("Min-SE", "3600")], b"");
    let again: Vec<Request> = lab
        .requests()
        .into_iter()
        .filter(|r| r.method == Method::Invite)
        .collect();
    assert_eq!(again.len(), 1, "{again:#?}");
    assert_eq!(again[0].headers.get("Session-Expires"), Some("3600"));
    assert_eq!(again[0].headers.get("Min-SE"), Some("3600"));
    assert_eq!(
        again[0].headers.cseq().unwrap().seq,
        invite.headers.cseq().unwrap().seq + 1
    );
    assert!(!lab.states().iter().any(|s| s.is_final()));
}

#[test]
fn as_uas_we_refuse_short_intervals_and_agree_to_the_callers_timer() {
    let mut lab = Lab::new();
    let short = Lab::far_request("INVITE", "s1", "short", 1, None, FAR_SDP)
        .replace("Content-Type", "Session-Expires: 60\r\nContent-Type");
    lab.feed(short.as_bytes());
    let resps = lab.responses();
    assert_eq!(status_of(&resps), vec![100, 422]);
    assert_eq!(resps[1].headers.get("Min-SE"), Some("90"));
    assert!(lab.events().is_empty(), "nothing rang");

    let invite = Lab::far_request("INVITE", "s2", "timed", 1, None, FAR_SDP).replace(
        "Content-Type",
        "Session-Expires: 120\r\nSupported: timer\r\nContent-Type",
    );
    lab.feed(invite.as_bytes());
    let tag = lab.responses()[1].headers.to().unwrap().tag().unwrap().to_owned();
    let call = lab.ua.line_call(lab.line).unwrap();
    lab.ua.accept_call(lab.now, call, OFFER.to_vec()).unwrap();
    let ok = lab.responses().remove(0);
    assert_eq!(ok.headers.get("Session-Expires"), Some("120;refresher=uac"));
    assert_eq!(ok.headers.get("Require"), Some("timer"));
    lab.feed(Lab::far_request("ACK", "a2", "timed", 1, Some(&tag), b"").as_bytes());
    lab.events();
    lab.advance(Duration::from_secs(89));
    let sent = lab.requests();
    assert!(
        sent.iter().any(|r| r.method == Method::Bye),
        "the caller never refreshed: {sent:#?}"
    );
}

#[test]
fn require_timer_is_served_and_unknown_extensions_still_get_420() {
    let mut lab = Lab::new();
    let invite = Lab::far_request("INVITE", "q1", "req", 1, None, FAR_SDP).replace(
        "Content-Type",
        "Require: timer\r\nSession-Expires: 1800\r\nContent-Type",
    );
    lab.feed(invite.as_bytes());
    assert_eq!(status_of(&lab.responses()), vec![100, 180]);
    let other = Lab::far_request("INVITE", "q2", "req2", 1, None, FAR_SDP)
        .replace("Content-Type", "Require: timer, foo\r\nContent-Type");
    lab.feed(other.as_bytes());
    let resps = lab.responses();
    assert_eq!(status_of(&resps), vec![100, 420]);
    assert_eq!(resps[1].headers.get("Unsupported"), Some("foo"));
}

#[test]
fn as_caller_reliable_provisional_responses_are_pracked_once() {
    let mut lab = Lab::new();
    let call = lab
        .ua
        .place_call(lab.now, lab.line, "1000", OFFER.to_vec())
        .unwrap();
    let invite = lab.one_request();
    assert!(invite.headers.get("Supported").unwrap().contains("100rel"));
    let reliable = [
        ("Contact", "<sip:1000@127.0.0.1:5070>"),
        ("Record-Route", "<sip:127.0.0.1:5060;lr>"),
        ("Require", "100rel"),
        ("RSeq", "7"),
    ];
    lab.respond(&invite, 183, &reliable, FAR_SDP);
    let prack = lab.one_request();
    assert_eq!(prack.method, Method::Prack);
    assert_eq!(
        prack.uri.to_string(),
        "sip:1000@127.0.0.1:5070",
        "to the early dialog's target"
    );
    let invite_seq = invite.headers.cseq().unwrap().seq;
    assert_eq!(
        prack.headers.get("RAck"),
        Some(format!("7 {invite_seq} INVITE").as_str())
    );
    assert!(lab.call_events().contains(&CallEvent::RemoteSdp {
        sdp: FAR_SDP.to_vec(),
        early: true
    }));
    // a retransmission (our PRACK crossed it) is neither PRACKed nor reported again
    lab.respond(&invite, 183, &reliable, FAR_SDP);
    assert!(lab.requests().is_empty());
    assert!(lab.call_events().is_empty());
    lab.respond(&prack, 200, &[], b"");
    lab.respond(&invite, 200, &[("Contact", "<sip:1000@127.0.0.1:5070>")], FAR_SDP);
    lab.requests();
    lab.ua.hang_up(lab.now, call, 486).unwrap();
    let bye = lab.one_request();
    assert!(
        bye.headers.cseq().unwrap().seq > prack.headers.cseq().unwrap().seq,
        "CSeq goes on from the early dialog's PRACK"
    );
}

fn invite_requiring_100rel(branch: &str, call_id: &str) -> String {
    Lab::far_request("INVITE", branch, call_id, 1, None, FAR_SDP).replace(
        "Content-Type",
        "Supported: 100rel\r\nRequire: 100rel\r\nContent-Type",
    )
}

#[test]
fn as_callee_our_180_is_reliable_when_the_caller_requires_it() {
    let mut lab = Lab::new();
    lab.feed(invite_requiring_100rel("r1", "rel").as_bytes());
    let resps = lab.responses();
    assert_eq!(status_of(&resps), vec![100, 180]);
    let ringing = &resps[1];
    assert_eq!(ringing.headers.get("Require"), Some("100rel"));
    let rseq: u32 = ringing.headers.get("RSeq").unwrap().parse().unwrap();
    let tag = ringing.headers.to().unwrap().tag().unwrap().to_owned();
    assert!(matches!(lab.call_events()[0], CallEvent::Incoming { .. }));
    // sent again until PRACKed
    lab.advance(Duration::from_millis(500));
    assert_eq!(status_of(&lab.responses()), vec![180]);
    lab.advance(Duration::from_millis(1000));
    assert_eq!(status_of(&lab.responses()), vec![180]);
    let prack = Lab::far_request("PRACK", "p1", "rel", 2, Some(&tag), b"").replace(
        "Content-Length",
        &format!("RAck: {rseq} 1 INVITE\r\nContent-Length"),
    );
    lab.feed(prack.as_bytes());
    assert_eq!(status_of(&lab.responses()), vec![200]);
    lab.advance(Duration::from_secs(5));
    assert!(lab.responses().is_empty(), "no more 180s");
    // a PRACK for something we never sent
    let wrong = Lab::far_request("PRACK", "p2", "rel", 3, Some(&tag), b"").replace(
        "Content-Length",
        &format!("RAck: {} 1 INVITE\r\nContent-Length", rseq + 1),
    );
    lab.feed(wrong.as_bytes());
    assert_eq!(status_of(&lab.responses()), vec![481]);
    let call = lab.ua.line_call(lab.line).unwrap();
    lab.ua.accept_call(lab.now, call, OFFER.to_vec()).unwrap();
    assert_eq!(status_of(&lab.responses()), vec![200]);
}

#[test]
fn as_callee_a_reliable_180_never_pracked_fails_the_call_after_64_t1() {
    let mut lab = Lab::new();
    lab.feed(invite_requiring_100rel("r1", "norack").as_bytes());
    lab.responses();
    lab.events();
    lab.advance(Duration::from_secs(33));
    let resps = lab.responses();
    assert!(
        resps.iter().filter(|r| r.status == 180).count() >= 6,
        "{:?}",
        status_of(&resps)
    );
    assert_eq!(resps.last().unwrap().status, 504);
    assert!(lab.states().contains(&CallState::Failed));
}

#[test]
fn a_refused_reinvite_puts_our_previous_sdp_back_for_the_next_refresh() {
    let mut lab = Lab::new();
    let (call, _) = call_answered_with_timer(&mut lab, "120;refresher=uac", "INVITE, ACK, BYE");
    lab.ua.reinvite(lab.now, call, b"v=0 hold".to_vec()).unwrap();
    let re = lab.one_request();
    lab.respond(&re, 488, &[], b"");
    assert!(
        lab.call_events()
            .contains(&CallEvent::ReinviteFailed { code: 488 })
    );
    lab.requests();
    lab.advance(Duration::from_secs(60));
    let refresh = lab
        .requests()
        .into_iter()
        .find(|r| r.method == Method::Invite)
        .expect("a refresh re-INVITE");
    assert_eq!(refresh.body, OFFER, "the refused hold SDP is not sent again");
}

#[test]
fn a_reinvite_left_in_proceeding_is_given_up_and_the_call_can_still_end() {
    let mut lab = Lab::new();
    let call = lab.established();
    lab.ua.reinvite(lab.now, call, b"v=0 hold".to_vec()).unwrap();
    let re = lab.one_request();
    lab.respond(&re, 100, &[], b"");
    lab.advance(Duration::from_secs(33));
    assert!(
        lab.call_events()
            .contains(&CallEvent::ReinviteFailed { code: 408 })
    );
    lab.requests();
    lab.ua.hang_up(lab.now, call, 486).unwrap();
    let bye = lab
        .requests()
        .into_iter()
        .find(|r| r.method == Method::Bye)
        .unwrap();
    lab.respond(&bye, 200, &[], b"");
    assert!(
        lab.call_events().contains(&CallEvent::Ended),
        "not held up by the dead re-INVITE"
    );
}

#[test]
fn a_2xx_without_sdp_to_our_reinvite_is_acked_and_counts_as_failed() {
    let mut lab = Lab::new();
    let call = lab.established();
    lab.ua.reinvite(lab.now, call, b"v=0 hold".to_vec()).unwrap();
    let re = lab.one_request();
    lab.respond(&re, 200, &[("Contact", "<sip:1000@127.0.0.1:5070>")], b"");
    assert_eq!(lab.one_request().method, Method::Ack);
    assert!(
        lab.call_events()
            .contains(&CallEvent::ReinviteFailed { code: 200 })
    );
}

#[test]
fn a_2xx_of_an_earlier_reinvite_sent_again_is_acked_with_its_cseq_not_hung_up() {
    let mut lab = Lab::new();
    let call = lab.established();
    lab.ua.reinvite(lab.now, call, b"v=0 hold".to_vec()).unwrap();
    let first = lab.one_request();
    lab.respond(&first, 200, &[("Contact", "<sip:1000@127.0.0.1:5070>")], FAR_SDP);
    lab.requests();
    lab.ua.reinvite(lab.now, call, b"v=0 resume".to_vec()).unwrap();
    let second = lab.one_request();
    lab.respond(&second, 200, &[("Contact", "<sip:1000@127.0.0.1:5070>")], FAR_SDP);
    lab.requests();
    // the first one's 200 again (our ACK to it was lost)
    lab.respond(&first, 200, &[("Contact", "<sip:1000@127.0.0.1:5070>")], FAR_SDP);
    let sent = lab.requests();
    assert_eq!(sent.len(), 1, "{sent:#?}");
    assert_eq!(sent[0].method, Method::Ack);
    assert_eq!(
        sent[0].headers.cseq().unwrap().seq,
        first.headers.cseq().unwrap().seq
    );
    assert!(lab.states().is_empty(), "the call goes on");
}

#[test]
fn a_bye_in_the_early_dialog_of_a_ringing_call_ends_its_invite_with_487() {
    let mut lab = Lab::new();
    lab.feed(Lab::far_request("INVITE", "e1", "early", 1, None, FAR_SDP).as_bytes());
    let tag = lab.responses()[1].headers.to().unwrap().tag().unwrap().to_owned();
    lab.events();
    lab.feed(Lab::far_request("BYE", "b1", "early", 2, Some(&tag), b"").as_bytes());
    let resps = lab.responses();
    assert_eq!(status_of(&resps), vec![200, 487]);
    assert_eq!(lab.states(), vec![CallState::Cancelled]);
    assert_eq!(lab.ua.line_call(lab.line), None);
}

#[test]
fn after_a_challenge_no_cancel_goes_before_the_new_invite_has_a_provisional_response() {
    let mut lab = Lab::new();
    let call = lab
        .ua
        .place_call(lab.now, lab.line, "1000", OFFER.to_vec())
        .unwrap();
    let invite = lab.one_request();
    lab.respond(&invite, 180, &[], b"");
    lab.respond(&invite, 407, &[("Proxy-Authenticate", CHALLENGE)], b"");
    let again: Vec<Request> = lab
        .requests()
        .into_iter()
        .filter(|r| r.method == Method::Invite)
        .collect();
    assert_eq!(again.len(), 1);
    lab.ua.hang_up(lab.now, call, 487).unwrap();
    assert!(
        !lab.requests().iter().any(|r| r.method == Method::Cancel),
        "RFC 3261 §9.1: not before a provisional response"
    );
    lab.respond(&again[0], 100, &[], b"");
    assert!(lab.requests().iter().any(|r| r.method == Method::Cancel));
}

#[test]
fn key_presses_waiting_for_the_far_end_are_capped_per_call() {
    let mut lab = Lab::new();
    let call = lab.established();
    let info = |lab: &mut Lab| {
        lab.ua
            .send_info(lab.now, call, "application/dtmf-relay", b"Signal=1\r\n".to_vec())
    };
    for _ in 0..16 {
        info(&mut lab).unwrap();
    }
    assert!(info(&mut lab).is_err(), "the 17th INFO in flight");
    assert_eq!(lab.ua.stats().counters.requests_in_flight, 1);
    // one answered: room for one more
    let sent = lab.requests();
    lab.respond(&sent[0], 200, &[], b"");
    info(&mut lab).unwrap();
}

#[test]
fn operator_and_call_headers_go_out_and_chosen_incoming_ones_are_reported() {
    let mut config = test_config();
    config.headers = crate::ExtraHeaders {
        invite: vec![("X-Origin".into(), "sipline".into())],
        register: vec![("X-Tenant".into(), "acme".into())],
        from_incoming: vec!["X-Customer-Id".into()],
    };
    let (mut lab, register) = Lab::with_config(config);
    assert_eq!(register.headers.get("X-Tenant"), Some("acme"));
    assert_eq!(register.headers.get("X-Origin"), None, "INVITE only");

    let headers = [("X-Campaign".to_owned(), "spring".to_owned())];
    lab.ua
        .place_call_with_headers(lab.now, lab.line, "1001", OFFER.to_vec(), &headers)
        .unwrap();
    let invite = lab.one_request();
    assert_eq!(invite.headers.get("X-Origin"), Some("sipline"));
    assert_eq!(invite.headers.get("X-Campaign"), Some("spring"));
    assert_eq!(invite.headers.get("X-Tenant"), None, "REGISTER only");

    let mut lab = Lab::with_config(lab.ua.config().clone()).0;
    let far = Lab::far_request("INVITE", "inv9", "in-9", 1, None, FAR_SDP).replacen(
        "Max-Forwards: 69\r\n",
        "Max-Forwards: 69\r\nX-Customer-Id: 77\r\nX-Secret: no\r\n",
        1,
    );
    lab.feed(far.as_bytes());
    let ev = lab.call_events();
    assert!(
        matches!(&ev[0], CallEvent::Incoming { headers, .. }
            if headers == &[("X-Customer-Id".to_owned(), "77".to_owned())]),
        "{ev:?}"
    );
}

/// An answered outgoing call's Call-ID and our tag.
fn dialog_ids(lab: &Lab) -> (String, String) {
    let d = lab.ua.calls.values().next().unwrap().dialog().unwrap();
    (d.id.call_id.clone(), d.id.local_tag.clone())
}

/// A BYE from the far end in the answered outgoing call (From/To swapped to ours).
fn far_bye(lab: &Lab, branch: &str, cseq: u32) -> String {
    let (call_id, local_tag) = dialog_ids(lab);
    format!(
        "BYE sip:880@127.0.0.1:5090 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK{branch}\r\n\
         From: <sip:1000@127.0.0.1>;tag=far\r\nTo: <sip:880@127.0.0.1>;tag={local_tag}\r\nCall-ID: {call_id}\r\n\
         CSeq: {cseq} BYE\r\nContent-Length: 0\r\n\r\n"
    )
}

/// A NOTIFY from the far end about our REFER: `frag` is the new call's status line.
fn refer_notify(lab: &Lab, cseq: u32, state: &str, frag: &str) -> String {
    refer_notify_event(lab, cseq, "refer", state, frag)
}

fn refer_notify_event(lab: &Lab, cseq: u32, event: &str, state: &str, frag: &str) -> String {
    let (call_id, local_tag) = dialog_ids(lab);
    format!(
        "NOTIFY sip:880@127.0.0.1:5090 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKn{cseq}\r\n\
         From: <sip:1000@127.0.0.1>;tag=far\r\nTo: <sip:880@127.0.0.1>;tag={local_tag}\r\nCall-ID: {call_id}\r\n\
         CSeq: {cseq} NOTIFY\r\nEvent: {event}\r\nSubscription-State: {state}\r\n\
         Content-Type: message/sipfrag;version=2.0\r\nContent-Length: {}\r\n\r\n{frag}",
        frag.len()
    )
}

fn transfers(events: &[CallEvent]) -> Vec<(TransferState, Option<u16>)> {
    events
        .iter()
        .filter_map(|e| match e {
            CallEvent::Transfer { state, code } => Some((*state, *code)),
            _ => None,
        })
        .collect()
}

#[test]
fn blind_transfer_reports_progress_then_ends_the_call() {
    let mut lab = Lab::new();
    let call = lab.established();
    lab.ua.refer(lab.now, call, "1002").unwrap();
    let refer = lab.one_request();
    assert_eq!(refer.method, Method::Refer);
    assert_eq!(refer.headers.get("Refer-To"), Some("<sip:1002@127.0.0.1>"));
    assert_eq!(refer.headers.get("Referred-By"), Some("<sip:880@127.0.0.1>"));
    assert_eq!(refer.headers.get("Contact"), Some("<sip:880@127.0.0.1:5090>"));
    assert!(refer.headers.get("Route").is_some(), "in the dialog's route set");
    assert!(
        matches!(lab.ua.refer(lab.now, call, "1003"), Err(CallError::WrongState(_))),
        "one transfer at a time"
    );
    lab.respond(&refer, 202, &[], b"");
    for (cseq, frag) in [(1, "SIP/2.0 100 Trying"), (2, "SIP/2.0 180 Ringing")] {
        lab.feed(refer_notify(&lab, cseq, "active;expires=60", frag).as_bytes());
        assert_eq!(status_of(&lab.responses()), vec![200]);
    }
    assert_eq!(
        transfers(&lab.call_events()),
        [(TransferState::Trying, None), (TransferState::Ringing, Some(180))],
        "100 Trying after the 202 is no news"
    );
    lab.feed(refer_notify(&lab, 3, "terminated;reason=noresource", "SIP/2.0 200 OK\r\n").as_bytes());
    let sent = lab.sent();
    assert!(
        matches!(&sent[0], Message::Response(r) if r.status == 200),
        "{sent:?}"
    );
    assert!(
        matches!(&sent[1], Message::Request(r) if r.method == Method::Bye),
        "our call has done its job: {sent:?}"
    );
    let ev = lab.call_events();
    assert_eq!(transfers(&ev), [(TransferState::Completed, Some(200))]);
    assert!(
        ev.iter().any(|e| matches!(e, CallEvent::Status(s)
            if s.state == CallState::Completed && s.reason.as_deref() == Some("transferred"))),
        "{ev:?}"
    );
}

#[test]
fn a_refused_refer_or_a_failed_new_call_leaves_the_call_up() {
    // the REFER refused
    let mut lab = Lab::new();
    let call = lab.established();
    lab.ua.refer(lab.now, call, "1002").unwrap();
    let refer = lab.one_request();
    lab.respond(&refer, 603, &[], b"");
    assert_eq!(
        transfers(&lab.call_events()),
        [(TransferState::Failed, Some(603))]
    );
    assert!(lab.requests().is_empty(), "no BYE");
    // a NOTIFY for no transfer of ours: 481
    lab.feed(refer_notify(&lab, 1, "active", "SIP/2.0 180 Ringing").as_bytes());
    assert_eq!(status_of(&lab.responses()), vec![481]);

    // the new call busy: failed with its code, our call goes on; a second try may go
    lab.ua.refer(lab.now, call, "1002").unwrap();
    let refer = lab.one_request();
    lab.respond(&refer, 202, &[], b"");
    lab.feed(refer_notify(&lab, 2, "terminated", "SIP/2.0 486 Busy Here").as_bytes());
    assert_eq!(status_of(&lab.responses()), vec![200]);
    assert_eq!(
        transfers(&lab.call_events()),
        [(TransferState::Trying, None), (TransferState::Failed, Some(486))]
    );
    assert!(lab.requests().is_empty(), "no BYE");
    assert_eq!(
        lab.ua.calls.values().next().unwrap().state(),
        Some(CallState::InCall)
    );

    // nothing final in time: failed
    lab.ua.refer(lab.now, call, "1002").unwrap();
    let refer = lab.one_request();
    lab.respond(&refer, 202, &[], b"");
    lab.call_events();
    lab.advance(Duration::from_secs(120 + 33));
    assert_eq!(transfers(&lab.call_events()), [(TransferState::Failed, None)]);
}

#[test]
fn transfer_edge_cases_a_notify_first_a_stale_one_a_far_end_leaving() {
    // a NOTIFY overtaking the 202: no step back to trying
    let mut lab = Lab::new();
    let call = lab.established();
    lab.ua.refer(lab.now, call, "1002").unwrap();
    let refer = lab.one_request();
    let id = refer.headers.cseq().unwrap().seq;
    // a NOTIFY about another REFER (its id): not ours
    let stale = refer_notify_event(
        &lab,
        1,
        &format!("refer;id={}", id + 7),
        "active",
        "SIP/2.0 200 OK",
    );
    lab.feed(stale.as_bytes());
    assert_eq!(status_of(&lab.responses()), vec![481]);
    let ringing = refer_notify_event(
        &lab,
        2,
        &format!("refer;id={id}"),
        "active",
        "SIP/2.0 180 Ringing",
    );
    lab.feed(ringing.as_bytes());
    assert_eq!(status_of(&lab.responses()), vec![200]);
    lab.respond(&refer, 202, &[], b"");
    assert_eq!(
        transfers(&lab.call_events()),
        [(TransferState::Ringing, Some(180))]
    );
    // the far end hangs up on us before its final NOTIFY: it went ahead
    lab.feed(far_bye(&lab, "bye9", 9).as_bytes());
    assert_eq!(transfers(&lab.call_events()), [(TransferState::Completed, None)]);

    // the final NOTIFY after we hung up: answered, but no second BYE
    let mut lab = Lab::new();
    let (call, _) = lab.call_answered();
    lab.requests();
    lab.ua.refer(lab.now, call, "1002").unwrap();
    let refer = lab.one_request();
    lab.respond(&refer, 202, &[], b"");
    let notify = refer_notify(&lab, 1, "terminated", "SIP/2.0 200 OK");
    lab.ua.hang_up(lab.now, call, 486).unwrap();
    assert_eq!(lab.one_request().method, Method::Bye);
    lab.feed(notify.as_bytes());
    let sent = lab.sent();
    assert!(
        sent.iter()
            .all(|m| !matches!(m, Message::Request(r) if r.method == Method::Bye)),
        "{sent:?}"
    );
}

/// A REFER from the far end in the answered outgoing call.
fn far_refer(lab: &Lab, cseq: u32, refer_to: &str) -> String {
    let (call_id, local_tag) = dialog_ids(lab);
    format!(
        "REFER sip:880@127.0.0.1:5090 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKr{cseq}\r\n\
         From: <sip:1000@127.0.0.1>;tag=far\r\nTo: <sip:880@127.0.0.1>;tag={local_tag}\r\nCall-ID: {call_id}\r\n\
         CSeq: {cseq} REFER\r\nContact: <sip:1000@127.0.0.1:5070>\r\nRefer-To: {refer_to}\r\n\
         Referred-By: <sip:1000@127.0.0.1>\r\nContent-Length: 0\r\n\r\n"
    )
}

#[test]
fn a_refer_from_the_far_end_is_accepted_and_followed_by_notifies_until_the_outcome() {
    let mut lab = Lab::new();
    let call = lab.established();
    lab.feed(far_refer(&lab, 7, "<sip:1002@127.0.0.1>").as_bytes());
    let sent = lab.sent();
    let statuses: Vec<u16> = sent
        .iter()
        .filter_map(|m| match m {
            Message::Response(r) => Some(r.status),
            _ => None,
        })
        .collect();
    assert_eq!(statuses, [202]);
    let notifies: Vec<&Request> = sent
        .iter()
        .filter_map(|m| match m {
            Message::Request(r) if r.method == Method::Notify => Some(r),
            _ => None,
        })
        .collect();
    let [trying] = notifies[..] else {
        panic!("one NOTIFY at once: {sent:#?}")
    };
    assert_eq!(trying.headers.get("Event"), Some("refer;id=7"));
    assert_eq!(
        trying.headers.get("Subscription-State"),
        Some("active;expires=300")
    );
    assert_eq!(
        trying.headers.get("Content-Type"),
        Some("message/sipfrag;version=2.0")
    );
    assert_eq!(trying.body, b"SIP/2.0 100 Trying\r\n");
    assert_eq!(
        lab.call_events(),
        [CallEvent::Referred(crate::ReferTarget {
            number: "1002".into(),
            replaces: None,
            referred_by: Some("<sip:1000@127.0.0.1>".into()),
        })]
    );
    // one transfer at a time
    lab.feed(far_refer(&lab, 8, "<sip:1003@127.0.0.1>").as_bytes());
    assert_eq!(status_of(&lab.responses()), [403]);
    assert!(lab.call_events().is_empty());
    // the new call's progress, then its outcome, which ends the reports; one NOTIFY at
    // a time: those asked for meanwhile wait, only the latest is sent
    let trying = trying.clone();
    lab.ua
        .notify_referral(lab.now, call, 183, "Session Progress")
        .unwrap();
    lab.ua.notify_referral(lab.now, call, 180, "Ringing").unwrap();
    assert!(lab.requests().is_empty(), "waits for the answer to the first");
    lab.respond(&trying, 200, &[], b"");
    let ringing = lab.one_request();
    assert_eq!(
        (ringing.method.clone(), ringing.body.as_slice()),
        (Method::Notify, &b"SIP/2.0 180 Ringing\r\n"[..])
    );
    lab.ua.notify_referral(lab.now, call, 200, "OK").unwrap();
    lab.respond(&ringing, 200, &[], b"");
    let done = lab.one_request();
    assert_eq!(
        done.headers.get("Subscription-State"),
        Some("terminated;reason=noresource")
    );
    assert_eq!(done.body, b"SIP/2.0 200 OK\r\n");
    assert!(
        lab.ua.notify_referral(lab.now, call, 200, "OK").is_err(),
        "nothing after the outcome"
    );
    // a Refer-To without a number, and a REFER before the answer, are refused
    lab.feed(far_refer(&lab, 9, "<sip:127.0.0.1>").as_bytes());
    assert_eq!(status_of(&lab.responses()), [400]);
    let mut ringing_lab = Lab::new();
    ringing_lab.feed(Lab::far_request("INVITE", "e1", "early", 1, None, FAR_SDP).as_bytes());
    let tag = ringing_lab.responses()[1]
        .headers
        .to()
        .unwrap()
        .tag()
        .unwrap()
        .to_owned();
    let early_refer = Lab::far_request("REFER", "e2", "early", 2, Some(&tag), b"").replace(
        "Content-Length",
        "Refer-To: <sip:1002@127.0.0.1>\r\nContent-Length",
    );
    ringing_lab.feed(early_refer.as_bytes());
    assert_eq!(status_of(&ringing_lab.responses()), [403]);
}

/// An INVITE from the far end that names a dialog to replace (RFC 3891).
fn replacing_invite(branch: &str, call_id: &str, replaces: &str) -> String {
    Lab::far_request("INVITE", branch, call_id, 1, None, FAR_SDP).replace(
        "Content-Length",
        &format!("Replaces: {replaces}\r\nRequire: replaces\r\nContent-Length"),
    )
}

#[test]
fn an_invite_with_replaces_takes_the_place_of_an_established_call_of_its_line() {
    // one call per line: the replacing call needs no room
    let mut lab = Lab::new();
    lab.feed(Lab::far_request("INVITE", "x1", "first", 1, None, FAR_SDP).as_bytes());
    let tag = lab.responses()[1].headers.to().unwrap().tag().unwrap().to_owned();
    let first = lab.ua.line_call(lab.line).unwrap();
    lab.ua.accept_call(lab.now, first, OFFER.to_vec()).unwrap();
    lab.feed(Lab::far_request("ACK", "x2", "first", 1, Some(&tag), b"").as_bytes());
    lab.sent();
    lab.events();
    // a dialog of nobody's, or ours with a wrong tag or Call-ID: 481, nothing rings
    for (branch, named) in [
        ("x3", "first;to-tag=nope;from-tag=far".to_owned()),
        ("x4", format!("first;to-tag={tag};from-tag=someone")),
        ("x5", format!("other;to-tag={tag};from-tag=far")),
        ("x6", "first".to_owned()),
    ] {
        lab.feed(replacing_invite(branch, "second", &named).as_bytes());
        assert_eq!(status_of(&lab.responses()), [100, 481], "{named}");
        assert!(lab.call_events().is_empty(), "{named}");
    }
    // the right one: a new call that says which it replaces
    lab.feed(replacing_invite("x7", "second", &format!("first;to-tag={tag};from-tag=far")).as_bytes());
    assert_eq!(status_of(&lab.responses()), [100, 180]);
    let events = lab.call_events();
    assert!(
        matches!(&events[0], CallEvent::Incoming { replaces: Some(c), .. } if *c == first),
        "{events:?}"
    );
    assert_eq!(lab.ua.line_calls(lab.line).len(), 2);
    // a second claim on the same call, before the first has taken it: 481
    lab.feed(replacing_invite("x8", "third", &format!("first;to-tag={tag};from-tag=far")).as_bytes());
    assert_eq!(status_of(&lab.responses()), [100, 481]);
    assert_eq!(lab.ua.line_calls(lab.line).len(), 2);
}

#[test]
fn an_attended_transfer_refers_with_replaces_naming_the_other_dialog() {
    let mut config = test_config();
    config.calls_per_line = 2;
    let mut lab = Lab::with_config(config).0;
    let held = lab.established();
    let other = lab.established();
    let d = lab.ua.calls[&other].dialog().unwrap().id.clone();
    assert!(
        lab.ua.refer_to_call(lab.now, held, held).is_err(),
        "not to itself"
    );
    lab.ua.refer_to_call(lab.now, held, other).unwrap();
    let refer = lab.one_request();
    assert_eq!(refer.method, Method::Refer);
    let expected = format!(
        "<sip:1000@127.0.0.1?Replaces={}%3Bto-tag%3Dfar%3Bfrom-tag%3D{}>",
        d.call_id.replace('@', "%40"),
        d.local_tag
    );
    assert_eq!(refer.headers.get("Refer-To"), Some(expected.as_str()));
    // the dialog sent is the other call's, not the held one's
    assert_ne!(refer.headers.call_id().unwrap(), d.call_id);
}
