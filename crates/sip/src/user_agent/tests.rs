//! The user agent against a scripted registrar, with simulated time.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;
use crate::auth::{Authorization, verify};
use crate::registration::LineState;

const PBX: &str = "127.0.0.1:5060";

fn config() -> UaConfig {
    crate::user_agent::test_config()
}

fn account(user: &str) -> Account {
    Account {
        user: user.into(),
        auth_user: user.into(),
        password: user.into(),
        display_name: Some("Desk \"A\"".into()),
        domain: "127.0.0.1".into(),
    }
}

struct Lab {
    ua: UserAgent,
    now: Instant,
    t0: Instant,
}

impl Lab {
    fn new(config: UaConfig) -> Lab {
        let t0 = Instant::now();
        Lab {
            ua: UserAgent::new(t0, config, 42),
            now: t0,
            t0,
        }
    }

    fn pbx() -> Target {
        Target {
            transport: Transport::Udp,
            addr: PBX.parse().unwrap(),
        }
    }

    /// Everything the UA sent, parsed.
    fn sent(&mut self) -> Vec<Message> {
        std::iter::from_fn(|| self.ua.poll_transmit())
            .map(|t| Message::parse(&t.data).expect("we send parsable SIP"))
            .collect()
    }

    fn sent_requests(&mut self) -> Vec<Request> {
        self.sent()
            .into_iter()
            .filter_map(|m| match m {
                Message::Request(r) => Some(r),
                Message::Response(_) => None,
            })
            .collect()
    }

    fn one_request(&mut self) -> Request {
        let mut reqs = self.sent_requests();
        assert_eq!(reqs.len(), 1, "expected one request, got {reqs:?}");
        reqs.remove(0)
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.ua.poll_event()).collect()
    }

    fn states(&mut self) -> Vec<(LineState, Option<u16>)> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Line { status, .. } => Some((status.state, status.code)),
                _ => None,
            })
            .collect()
    }

    fn reply(&mut self, req: &Request, status: u16, extra: &[(&str, &str)]) {
        let mut resp = Response::for_request(req, status, "Reason");
        let to = req.headers.get("To").unwrap().to_owned();
        resp.headers.set("To", format!("{to};tag=pbx"));
        for (n, v) in extra {
            resp.headers.push(*n, *v);
        }
        self.ua
            .handle_receive(self.now, Lab::pbx(), &resp.to_bytes())
            .unwrap();
    }

    fn challenge(&mut self, req: &Request, nonce: &str, stale: bool) {
        let value = format!(
            "Digest realm=\"127.0.0.1\", nonce=\"{nonce}\", qop=\"auth\"{}",
            if stale { ", stale=true" } else { "" }
        );
        self.reply(req, 401, &[("WWW-Authenticate", &value)]);
    }

    /// Moves time forward to `at` (offset from start), firing every timer on the way.
    fn advance_to(&mut self, at: Duration) {
        let end = self.t0 + at;
        while let Some(t) = self.ua.poll_timeout() {
            if t > end {
                break;
            }
            self.now = self.now.max(t);
            self.ua.handle_timeout(self.now);
        }
        self.now = self.now.max(end);
    }

    fn register(&mut self, user: &str) -> LineId {
        let id = self.ua.add_line(self.now, account(user));
        let r1 = self.one_request();
        self.challenge(&r1, "n1", false);
        let r2 = self.one_request();
        self.reply(
            &r2,
            200,
            &[("Contact", &format!("<sip:{user}@127.0.0.1:5090>;expires=60"))],
        );
        id
    }
}

#[test]
fn registers_with_digest_challenge() {
    let mut lab = Lab::new(config());
    let line = lab.ua.add_line(lab.now, account("880"));
    let r1 = lab.one_request();
    assert_eq!(r1.method, Method::Register);
    assert_eq!(r1.uri.to_string(), "sip:127.0.0.1");
    assert_eq!(r1.headers.get("Expires"), Some("600"));
    assert_eq!(r1.headers.get("Contact"), Some("<sip:880@127.0.0.1:5090>"));
    assert_eq!(
        r1.headers.from().unwrap().display.as_deref(),
        Some("Desk \\\"A\\\"")
    );
    assert!(r1.headers.get("Authorization").is_none());
    lab.challenge(&r1, "n1", false);
    let r2 = lab.one_request();
    assert_eq!(
        r2.headers.call_id().unwrap(),
        r1.headers.call_id().unwrap(),
        "same Call-ID"
    );
    assert_eq!(r2.headers.cseq().unwrap().seq, r1.headers.cseq().unwrap().seq + 1);
    assert_ne!(
        r2.headers.top_via().unwrap().branch(),
        r1.headers.top_via().unwrap().branch()
    );
    let auth = Authorization::parse(r2.headers.get("Authorization").unwrap()).unwrap();
    assert!(verify(&auth, "880", "REGISTER"));
    assert_eq!(auth.qop.as_ref().map(|q| q.1), Some(1));
    lab.reply(&r2, 200, &[("Contact", "<sip:880@127.0.0.1:5090>;expires=60")]);
    assert_eq!(
        lab.states(),
        vec![(LineState::Registering, None), (LineState::Registered, Some(200))]
    );
    assert_eq!(lab.ua.line_status(line).unwrap().state, LineState::Registered);
    assert_eq!(lab.ua.stats().client_transactions, 2, "both linger for Timer K");
    lab.advance_to(Duration::from_secs(6));
    assert_eq!(lab.ua.stats().client_transactions, 0);
}

#[test]
fn refreshes_at_granted_expiry_with_cached_credentials_and_no_new_event() {
    let mut lab = Lab::new(config());
    lab.register("881");
    lab.events();
    lab.advance_to(Duration::from_secs(53));
    assert!(lab.sent_requests().is_empty());
    lab.advance_to(Duration::from_secs(54));
    let r = lab.one_request();
    let auth = Authorization::parse(r.headers.get("Authorization").unwrap()).unwrap();
    assert_eq!(auth.nonce, "n1");
    assert_eq!(auth.qop.as_ref().map(|q| q.1), Some(2), "nc counts up");
    lab.reply(&r, 200, &[("Expires", "120")]);
    assert!(
        lab.states().is_empty(),
        "a refresh does not re-announce registered"
    );
    // Expires header used when no Contact expiry: next refresh 108 s later
    lab.advance_to(Duration::from_secs(54 + 107));
    assert!(lab.sent_requests().is_empty());
    lab.advance_to(Duration::from_secs(54 + 108));
    assert_eq!(lab.sent_requests().len(), 1);
}

#[test]
fn stale_nonce_is_answered_again_without_failing() {
    let mut lab = Lab::new(config());
    lab.register("882");
    lab.events();
    lab.advance_to(Duration::from_secs(54));
    let r = lab.one_request();
    lab.challenge(&r, "n2", true);
    let r2 = lab.one_request();
    assert!(r2.headers.get("Authorization").unwrap().contains("nonce=\"n2\""));
    lab.reply(&r2, 200, &[]);
    assert!(lab.states().is_empty());
}

#[test]
fn wrong_password_fails_with_the_code_and_backs_off() {
    let mut lab = Lab::new(config());
    lab.ua.add_line(lab.now, account("883"));
    let mut retry_times = Vec::new();
    let mut r1 = lab.one_request();
    for round in 0..4 {
        lab.challenge(&r1, &format!("a{round}"), false);
        let r2 = lab.one_request();
        lab.challenge(&r2, &format!("b{round}"), false);
        assert!(
            lab.sent_requests().is_empty(),
            "no storm: nothing sent after the rejection"
        );
        let states = lab.states();
        assert_eq!(states.last(), Some(&(LineState::RegistrationFailed, Some(401))));
        let failed_at = lab.now;
        let retry = loop {
            let step = lab.now - lab.t0 + Duration::from_millis(100);
            lab.advance_to(step);
            let mut sent = lab.sent_requests();
            if let Some(r) = sent.pop() {
                break r;
            }
        };
        retry_times.push(lab.now - failed_at);
        r1 = retry;
    }
    // 5 s, 10 s, 20 s, 40 s nominal, ±20 %
    for (i, d) in retry_times.iter().enumerate() {
        let nominal = 5.0 * 2f64.powi(i as i32);
        let s = d.as_secs_f64();
        assert!(s >= nominal * 0.8 && s <= nominal * 1.2, "retry {i}: {s}");
    }
}

#[test]
fn proxy_challenge_gets_proxy_authorization() {
    let mut lab = Lab::new(config());
    lab.ua.add_line(lab.now, account("884"));
    let r1 = lab.one_request();
    lab.reply(
        &r1,
        407,
        &[(
            "Proxy-Authenticate",
            "Digest realm=\"127.0.0.1\", nonce=\"p\", algorithm=SHA-256",
        )],
    );
    let r2 = lab.one_request();
    let auth = Authorization::parse(r2.headers.get("Proxy-Authorization").unwrap()).unwrap();
    assert!(verify(&auth, "884", "REGISTER"));
    assert!(auth.qop.is_none());
}

#[test]
fn remove_unregisters_with_expires_zero_then_reports_removal() {
    let mut lab = Lab::new(config());
    let line = lab.register("885");
    lab.events();
    lab.ua.remove_line(lab.now, line);
    let r = lab.one_request();
    assert_eq!(r.headers.get("Expires"), Some("0"));
    assert!(
        r.headers.get("Authorization").is_some(),
        "pre-authorised with the cached challenge"
    );
    lab.reply(&r, 200, &[]);
    assert_eq!(
        lab.events(),
        vec![
            Event::Line {
                line,
                status: LineStatus {
                    state: LineState::Unregistering,
                    code: None,
                    reason: None
                }
            },
            Event::Line {
                line,
                status: LineStatus {
                    state: LineState::Unregistered,
                    code: Some(200),
                    reason: None
                }
            },
            Event::LineRemoved { line },
        ]
    );
    assert_eq!(lab.ua.stats().lines, 0);
}

#[test]
fn remove_while_registering_waits_for_the_outcome_then_unregisters() {
    let mut lab = Lab::new(config());
    let line = lab.ua.add_line(lab.now, account("886"));
    let r1 = lab.one_request();
    lab.ua.remove_line(lab.now, line);
    assert!(lab.sent_requests().is_empty(), "one REGISTER at a time");
    lab.challenge(&r1, "n", false);
    let r2 = lab.one_request();
    assert_eq!(r2.headers.get("Expires"), Some("600"));
    lab.reply(&r2, 200, &[]);
    let r3 = lab.one_request();
    assert_eq!(r3.headers.get("Expires"), Some("0"));
    lab.reply(&r3, 200, &[]);
    assert!(lab.events().contains(&Event::LineRemoved { line }));
}

#[test]
fn remove_of_a_never_registered_line_is_immediate() {
    let mut lab = Lab::new(config());
    let line = lab.ua.add_line(lab.now, account("887"));
    let r1 = lab.one_request();
    lab.reply(&r1, 403, &[]);
    lab.events();
    lab.ua.remove_line(lab.now, line);
    assert!(lab.sent_requests().is_empty());
    assert!(lab.events().contains(&Event::LineRemoved { line }));
}

#[test]
fn unanswered_register_fails_with_408_after_timer_f() {
    let mut lab = Lab::new(config());
    lab.ua.add_line(lab.now, account("888"));
    lab.sent();
    lab.advance_to(Duration::from_secs(31));
    assert_eq!(lab.states(), vec![(LineState::Registering, None)]);
    lab.sent();
    lab.advance_to(Duration::from_secs(32));
    assert_eq!(lab.states(), vec![(LineState::RegistrationFailed, Some(408))]);
}

#[test]
fn interval_too_brief_retries_with_min_expires() {
    let mut lab = Lab::new(config());
    lab.ua.add_line(lab.now, account("889"));
    let r1 = lab.one_request();
    lab.reply(&r1, 423, &[("Min-Expires", "1800")]);
    let r2 = lab.one_request();
    assert_eq!(r2.headers.get("Expires"), Some("1800"));
}

#[test]
fn keepalive_outage_fails_every_line_and_return_reregisters_them() {
    let mut cfg = config();
    cfg.keepalive_interval = Some(Duration::from_secs(1));
    let mut lab = Lab::new(cfg);
    // first probe goes out at once
    lab.ua.handle_timeout(lab.now);
    let probe = lab.one_request();
    assert_eq!(probe.method, Method::Options);
    assert_eq!(probe.uri.to_string(), "sip:127.0.0.1:5060");
    lab.reply(&probe, 200, &[]);
    let a = lab.register("890");
    let b = lab.register("891");
    lab.events();
    // the PBX dies: next probe at 1 s goes unanswered for 2 s
    lab.advance_to(Duration::from_millis(2900));
    lab.sent();
    assert!(lab.events().is_empty());
    lab.advance_to(Duration::from_secs(3));
    let events = lab.events();
    assert!(events.contains(&Event::Registrar { reachable: false }));
    for line in [a, b] {
        assert_eq!(
            lab.ua.line_status(line).unwrap().state,
            LineState::RegistrationFailed
        );
        assert_eq!(lab.ua.line_status(line).unwrap().code, Some(503));
    }
    // refresh timers do not fire while the registrar is down
    lab.advance_to(Duration::from_secs(60));
    let sent = lab.sent_requests();
    assert!(
        sent.iter().all(|r| r.method == Method::Options),
        "only probes while down"
    );
    // the PBX is back: the next probe is answered and both lines register at once
    let probe = sent.last().unwrap().clone();
    lab.reply(&probe, 200, &[]);
    let reqs = lab.sent_requests();
    assert_eq!(reqs.iter().filter(|r| r.method == Method::Register).count(), 2);
    assert!(lab.events().contains(&Event::Registrar { reachable: true }));
}

#[test]
fn removing_lines_while_the_registrar_is_down_does_not_wait_for_it() {
    let mut cfg = config();
    cfg.keepalive_interval = Some(Duration::from_secs(1));
    let mut lab = Lab::new(cfg);
    lab.ua.handle_timeout(lab.now);
    lab.sent();
    let line = lab.register("892");
    lab.advance_to(Duration::from_secs(3));
    lab.events();
    lab.ua.remove_line(lab.now, line);
    assert!(lab.sent_requests().iter().all(|r| r.method != Method::Register));
    assert!(lab.events().contains(&Event::LineRemoved { line }));
}

#[test]
fn answers_options_and_refuses_what_it_does_not_do() {
    let mut lab = Lab::new(config());
    let req = |method: &str, extra: &str| {
        format!(
            "{method} sip:880@127.0.0.1:5090 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK{method}\r\n\
             From: <sip:x@127.0.0.1>;tag=1\r\nTo: <sip:880@127.0.0.1>\r\nCall-ID: c{method}\r\nCSeq: 5 {method}\r\n{extra}Content-Length: 0\r\n\r\n"
        )
    };
    let cases = [
        ("OPTIONS", 200),
        ("BYE", 481),
        ("SUBSCRIBE", 405),
        ("FROB", 501),
        ("REGISTER", 405),
    ];
    for (method, code) in cases {
        lab.ua
            .handle_receive(lab.now, Lab::pbx(), req(method, "").as_bytes())
            .unwrap();
        let Some(Message::Response(r)) = lab.sent().pop() else {
            panic!("{method}: no response")
        };
        assert_eq!(r.status, code, "{method}");
        assert!(r.headers.to().unwrap().tag().is_some(), "{method}: To tag");
    }
    // retransmission gets the same answer again, from the transaction
    lab.ua
        .handle_receive(lab.now, Lab::pbx(), req("OPTIONS", "").as_bytes())
        .unwrap();
    assert_eq!(lab.sent().len(), 1);
}

#[test]
fn malformed_input_is_dropped_or_answered_400_and_nothing_breaks() {
    let mut lab = Lab::new(config());
    let garbage: &[&[u8]] = &[
        b"\x00\x01\x02garbage",
        b"INVITE sip:880@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4\r\nContent-Length: 500\r\n\r\ntruncated",
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bKnope\r\nCSeq: 1 REGISTER\r\n\r\n",
        b"\r\n\r\n",
    ];
    for g in garbage {
        let _ = lab.ua.handle_receive(lab.now, Lab::pbx(), g);
    }
    assert!(lab.sent().is_empty());
    // a request with a bad CSeq gets a 400 with a Warning naming the problem
    let bad = "INVITE sip:880@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKbad\r\n\
               From: <sip:x@h>;tag=1\r\nTo: <sip:880@h>\r\nCall-ID: c\r\nCSeq: one INVITE\r\nContent-Length: 0\r\n\r\n";
    assert!(
        lab.ua
            .handle_receive(lab.now, Lab::pbx(), bad.as_bytes())
            .is_err()
    );
    let Some(Message::Response(r)) = lab.sent().pop() else {
        panic!()
    };
    assert_eq!(r.status, 400);
    assert!(r.headers.get("Warning").unwrap().contains("CSeq"));
    // and the UA still registers lines
    lab.register("893");
    assert_eq!(lab.states().last(), Some(&(LineState::Registered, Some(200))));
}

#[test]
fn outbound_proxy_gets_the_request_with_a_route() {
    let mut cfg = config();
    let proxy: SocketAddr = "127.0.0.1:5070".parse().unwrap();
    cfg.outbound_proxy = Some((
        Uri::parse("sip:127.0.0.1:5070").unwrap(),
        Target {
            transport: Transport::Udp,
            addr: proxy,
        },
    ));
    let mut lab = Lab::new(cfg);
    lab.ua.add_line(lab.now, account("894"));
    let t = lab.ua.poll_transmit().unwrap();
    assert_eq!(t.target.addr, proxy);
    let Message::Request(r) = Message::parse(&t.data).unwrap() else {
        panic!()
    };
    assert_eq!(r.headers.get("Route"), Some("<sip:127.0.0.1:5070;lr>"));
}

#[test]
fn password_never_shows_in_debug_output() {
    let a = Account {
        password: "hunter2".into(),
        ..account("895")
    };
    assert!(!format!("{a:?}").contains("hunter2"));
    let mut lab = Lab::new(config());
    lab.ua.add_line(lab.now, a);
    assert!(!format!("{:?}", lab.ua).contains("hunter2"));
}

#[test]
fn a_line_taking_an_account_over_removes_every_binding_first() {
    let mut lab = Lab::new(config());
    let line = lab.ua.add_line_with(lab.now, account("886"), true);
    let clear = lab.one_request();
    assert_eq!(clear.headers.get("Contact"), Some("*"));
    assert_eq!(clear.headers.get("Expires"), Some("0"));
    lab.challenge(&clear, "n1", false);
    let clear2 = lab.one_request();
    assert_eq!(
        clear2.headers.get("Contact"),
        Some("*"),
        "the answer to the challenge still removes"
    );
    assert!(clear2.headers.get("Authorization").is_some());
    lab.reply(&clear2, 200, &[]);
    let ours = lab.one_request();
    assert!(
        ours.headers.get("Contact").unwrap().starts_with("<sip:886@"),
        "then ours"
    );
    assert_ne!(ours.headers.get("Expires"), Some("0"));
    let cseqs: Vec<_> = [&clear, &clear2, &ours]
        .iter()
        .map(|r| {
            r.headers
                .get("CSeq")
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .parse::<u32>()
                .unwrap()
        })
        .collect();
    assert!(cseqs[0] < cseqs[1] && cseqs[1] < cseqs[2], "{cseqs:?}");
    lab.reply(&ours, 200, &[("Contact", "<sip:886@127.0.0.1:5090>;expires=60")]);
    let states = lab.states();
    assert_eq!(
        states,
        vec![(LineState::Registering, None), (LineState::Registered, Some(200))],
        "the removal is not shown to the browser"
    );
    lab.ua.remove_line(lab.now, line);
    assert_eq!(lab.one_request().headers.get("Expires"), Some("0"));
}

#[test]
fn a_refused_removal_still_registers_ours() {
    let mut lab = Lab::new(config());
    lab.ua.add_line_with(lab.now, account("887"), true);
    let clear = lab.one_request();
    lab.reply(&clear, 403, &[]);
    let ours = lab.one_request();
    assert!(ours.headers.get("Contact").unwrap().starts_with("<sip:887@"));
}

#[test]
fn removal_of_a_line_still_clearing_finishes_without_registering() {
    let mut lab = Lab::new(config());
    let line = lab.ua.add_line_with(lab.now, account("888"), true);
    let clear = lab.one_request();
    lab.ua.remove_line(lab.now, line);
    assert!(lab.sent_requests().is_empty(), "waits for the outcome");
    lab.reply(&clear, 200, &[]);
    assert!(
        lab.sent_requests().is_empty(),
        "nothing registered, nothing to remove"
    );
    assert!(lab.events().contains(&Event::LineRemoved { line }));
}

#[test]
fn with_tls_the_pbx_address_is_trusted_only_over_tls() {
    let mut config = config();
    config.transport = Transport::Tls;
    config.registrar = Target {
        transport: Transport::Tls,
        addr: "127.0.0.1:5061".parse().unwrap(),
    };
    let ua = UserAgent::new(Instant::now(), config, 1);
    let from = |transport| Target {
        transport,
        addr: "127.0.0.1:5061".parse().unwrap(),
    };
    assert!(ua.is_trusted(from(Transport::Tls)));
    assert!(
        !ua.is_trusted(from(Transport::Udp)),
        "a spoofed datagram from the PBX's address"
    );
    assert!(!ua.is_trusted(from(Transport::Tcp)));
}
