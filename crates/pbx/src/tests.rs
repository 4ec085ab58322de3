//! The embedded PBX with scripted phones.

use std::time::{Duration, Instant};

use sipline_sip::auth::{Authorization, Challenge, Credentials};

use super::*;

const PBX: &str = "127.0.0.1:5080";

fn pbx() -> Pbx {
    Pbx::new(
        PbxConfig {
            addr: PBX.parse().unwrap(),
            domain: "127.0.0.1".into(),
            users: vec![
                ("880".into(), "880".into()),
                ("881".into(), "881".into()),
                ("1000".into(), "pw".into()),
            ],
            min_expires: 10,
            max_expires: 3600,
        },
        1,
    )
}

fn phone(port: u16) -> Target {
    Target {
        transport: Transport::Udp,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    }
}

fn parse(t: &Transmit) -> Message {
    Message::parse(&t.data).unwrap()
}

fn sent(p: &mut Pbx) -> Vec<Transmit> {
    std::iter::from_fn(|| p.poll_transmit()).collect()
}

fn response(t: &Transmit) -> Response {
    match parse(t) {
        Message::Response(r) => r,
        m => panic!("expected a response, got {m:?}"),
    }
}

fn request_of(t: &Transmit) -> Request {
    match parse(t) {
        Message::Request(r) => r,
        m => panic!("expected a request, got {m:?}"),
    }
}

fn register_req(user: &str, port: u16, auth: Option<String>, expires: u32) -> Request {
    let mut r = Request::new(Method::Register, Uri::parse("sip:127.0.0.1").unwrap());
    r.headers.push(
        "Via",
        format!(
            "SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKreg{port}{};rport",
            auth.is_some()
        ),
    );
    r.headers.push("Max-Forwards", "70");
    r.headers
        .push("From", format!("<sip:{user}@127.0.0.1>;tag=r{port}"));
    r.headers.push("To", format!("<sip:{user}@127.0.0.1>"));
    r.headers.push("Call-ID", format!("reg-{port}"));
    r.headers
        .push("CSeq", format!("{} REGISTER", if auth.is_some() { 2 } else { 1 }));
    r.headers
        .push("Contact", format!("<sip:{user}@127.0.0.1:{port}>"));
    r.headers.push("Expires", expires.to_string());
    if let Some(a) = auth {
        r.headers.push("Authorization", a);
    }
    r
}

fn answer(challenge: &str, user: &str, pw: &str, method: &str, uri: &str) -> String {
    let ch = Challenge::parse(challenge).unwrap();
    let creds = Credentials {
        username: user.into(),
        password: pw.into(),
    };
    Authorization::answer(&ch, &creds, method, uri, "cn", 1).to_string()
}

/// Registers `user` (password = user name) from 127.0.0.1:`port`.
fn register(p: &mut Pbx, now: Instant, user: &str, port: u16) {
    p.handle_receive(now, phone(port), &register_req(user, port, None, 600).to_bytes())
        .unwrap();
    let r = response(&sent(p)[0]);
    assert_eq!(r.status, 401);
    let auth = answer(
        r.headers.get("WWW-Authenticate").unwrap(),
        user,
        user,
        "REGISTER",
        "sip:127.0.0.1",
    );
    p.handle_receive(
        now,
        phone(port),
        &register_req(user, port, Some(auth), 600).to_bytes(),
    )
    .unwrap();
    let ok = response(&sent(p)[0]);
    assert_eq!(ok.status, 200);
    assert!(ok.headers.get("Contact").unwrap().contains("expires=600"));
}

fn invite(from: &str, from_port: u16, to: &str, auth: Option<String>) -> Request {
    let mut r = Request::new(
        Method::Invite,
        Uri::parse(&format!("sip:{to}@127.0.0.1")).unwrap(),
    );
    r.headers.push(
        "Via",
        format!(
            "SIP/2.0/UDP 127.0.0.1:{from_port};branch=z9hG4bKinv{};rport",
            auth.is_some()
        ),
    );
    r.headers.push("Max-Forwards", "70");
    r.headers.push("From", format!("<sip:{from}@127.0.0.1>;tag=a"));
    r.headers.push("To", format!("<sip:{to}@127.0.0.1>"));
    r.headers.push("Call-ID", "call-1");
    r.headers
        .push("CSeq", format!("{} INVITE", if auth.is_some() { 2 } else { 1 }));
    r.headers
        .push("Contact", format!("<sip:{from}@127.0.0.1:{from_port}>"));
    if let Some(a) = auth {
        r.headers.push("Proxy-Authorization", a);
    }
    r.body = b"v=0\r\n".to_vec();
    r
}

#[test]
fn registers_with_digest_and_refuses_wrong_passwords() {
    let t0 = Instant::now();
    let mut p = pbx();
    register(&mut p, t0, "880", 5090);
    let b = &p.registrations()["880"];
    assert_eq!(b.contact.to_string(), "sip:880@127.0.0.1:5090");
    assert_eq!(b.target, phone(5090));
    // wrong password: challenged again
    p.handle_receive(t0, phone(5091), &register_req("881", 5091, None, 600).to_bytes())
        .unwrap();
    let r = response(&sent(&mut p)[0]);
    let bad = answer(
        r.headers.get("WWW-Authenticate").unwrap(),
        "881",
        "nope",
        "REGISTER",
        "sip:127.0.0.1",
    );
    p.handle_receive(
        t0,
        phone(5091),
        &register_req("881", 5091, Some(bad), 600).to_bytes(),
    )
    .unwrap();
    assert_eq!(response(&sent(&mut p)[0]).status, 401);
    assert!(!p.registrations().contains_key("881"));
    // unknown user
    p.handle_receive(t0, phone(5092), &register_req("999", 5092, None, 600).to_bytes())
        .unwrap();
    assert_eq!(response(&sent(&mut p)[0]).status, 404);
    // expiry
    p.handle_timeout(t0 + Duration::from_secs(601));
    assert!(p.registrations().is_empty());
}

#[test]
fn unregister_removes_the_binding() {
    let t0 = Instant::now();
    let mut p = pbx();
    register(&mut p, t0, "880", 5090);
    p.handle_receive(t0, phone(5090), &register_req("880", 5090, None, 0).to_bytes())
        .unwrap();
    let r = response(&sent(&mut p)[0]);
    let auth = answer(
        r.headers.get("WWW-Authenticate").unwrap(),
        "880",
        "880",
        "REGISTER",
        "sip:127.0.0.1",
    );
    p.handle_receive(
        t0,
        phone(5090),
        &register_req("880", 5090, Some(auth), 0).to_bytes(),
    )
    .unwrap();
    assert_eq!(response(&sent(&mut p)[0]).status, 200);
    assert!(p.registrations().is_empty());
}

#[test]
fn proxies_a_call_with_auth_record_route_and_responses_back() {
    let t0 = Instant::now();
    let mut p = pbx();
    register(&mut p, t0, "880", 5090);
    register(&mut p, t0, "881", 6000);
    // first INVITE is challenged with 407
    p.handle_receive(t0, phone(5090), &invite("880", 5090, "881", None).to_bytes())
        .unwrap();
    let r = response(&sent(&mut p)[0]);
    assert_eq!(r.status, 407);
    let auth = answer(
        r.headers.get("Proxy-Authenticate").unwrap(),
        "880",
        "880",
        "INVITE",
        "sip:881@127.0.0.1",
    );
    let inv = invite("880", 5090, "881", Some(auth));
    p.handle_receive(t0, phone(5090), &inv.to_bytes()).unwrap();
    let out = sent(&mut p);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].target, phone(6000), "to where 881 registered from");
    let fwd = request_of(&out[0]);
    assert_eq!(
        fwd.uri.to_string(),
        "sip:881@127.0.0.1:6000",
        "Request-URI is the contact"
    );
    assert_eq!(fwd.headers.get("Record-Route"), Some("<sip:127.0.0.1:5080;lr>"));
    assert!(
        fwd.headers.get("Proxy-Authorization").is_none(),
        "credentials consumed"
    );
    assert_eq!(fwd.headers.get("Max-Forwards"), Some("69"));
    let vias = fwd.headers.vias().unwrap();
    assert_eq!(vias.len(), 2);
    assert_eq!(vias[0].sent_by(), "127.0.0.1:5080");
    assert_eq!(vias[1].params.get_unquoted("received"), Some("127.0.0.1"));
    assert_eq!(vias[1].params.get("rport"), Some(Some("5090")));
    // the same INVITE again gets the same branch (retransmission)
    p.handle_receive(t0, phone(5090), &inv.to_bytes()).unwrap();
    let again = request_of(&sent(&mut p)[0]);
    assert_eq!(again.headers.top_via().unwrap().branch(), vias[0].branch());
    // a 180 from 881 goes back to 880
    let mut ringing = Response::for_request(&fwd, 180, "Ringing");
    ringing.headers.set("To", "<sip:881@127.0.0.1>;tag=b");
    p.handle_receive(t0, phone(6000), &ringing.to_bytes()).unwrap();
    let back = sent(&mut p);
    assert_eq!(back[0].target, phone(5090));
    assert_eq!(
        response(&back[0]).headers.vias().unwrap().len(),
        1,
        "our Via is gone"
    );
    // CANCEL: same branch as the INVITE downstream
    let mut cancel = Request::new(Method::Cancel, inv.uri.clone());
    cancel.headers.push("Via", inv.headers.get("Via").unwrap());
    cancel.headers.push("Max-Forwards", "70");
    for h in ["From", "To", "Call-ID"] {
        cancel.headers.push(h, inv.headers.get(h).unwrap());
    }
    cancel.headers.push("CSeq", "2 CANCEL");
    p.handle_receive(t0, phone(5090), &cancel.to_bytes()).unwrap();
    let c = sent(&mut p);
    assert_eq!(c[0].target, phone(6000));
    assert_eq!(
        request_of(&c[0]).headers.top_via().unwrap().branch(),
        vias[0].branch()
    );
}

#[test]
fn in_dialog_requests_follow_the_route_set() {
    let t0 = Instant::now();
    let mut p = pbx();
    register(&mut p, t0, "881", 6000);
    let mut bye = Request::new(Method::Bye, Uri::parse("sip:881@127.0.0.1:6000").unwrap());
    bye.headers
        .push("Via", "SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bKbye;rport");
    bye.headers.push("Route", "<sip:127.0.0.1:5080;lr>");
    bye.headers.push("Max-Forwards", "70");
    bye.headers.push("From", "<sip:880@127.0.0.1>;tag=a");
    bye.headers.push("To", "<sip:881@127.0.0.1>;tag=b");
    bye.headers.push("Call-ID", "call-1");
    bye.headers.push("CSeq", "3 BYE");
    p.handle_receive(t0, phone(5090), &bye.to_bytes()).unwrap();
    let out = sent(&mut p);
    assert_eq!(out[0].target, phone(6000));
    let fwd = request_of(&out[0]);
    assert!(fwd.headers.get("Route").is_none(), "our route is consumed");
    assert!(fwd.headers.get("Proxy-Authorization").is_none());
}

#[test]
fn refuses_what_it_cannot_route() {
    let t0 = Instant::now();
    let mut p = pbx();
    register(&mut p, t0, "880", 5090);
    let creds = |p: &mut Pbx, to: &str| {
        p.handle_receive(t0, phone(5090), &invite("880", 5090, to, None).to_bytes())
            .unwrap();
        let r = response(&sent(p)[0]);
        answer(
            r.headers.get("Proxy-Authenticate").unwrap(),
            "880",
            "880",
            "INVITE",
            &format!("sip:{to}@127.0.0.1"),
        )
    };
    let a = creds(&mut p, "999");
    p.handle_receive(t0, phone(5090), &invite("880", 5090, "999", Some(a)).to_bytes())
        .unwrap();
    assert_eq!(response(&sent(&mut p)[0]).status, 404, "nobody");
    let a = creds(&mut p, "1000");
    p.handle_receive(t0, phone(5090), &invite("880", 5090, "1000", Some(a)).to_bytes())
        .unwrap();
    assert_eq!(
        response(&sent(&mut p)[0]).status,
        480,
        "a user who is not registered"
    );
    // Max-Forwards exhausted
    let mut looped = invite("880", 5090, "880", None);
    looped.headers.set("Max-Forwards", "0");
    p.handle_receive(t0, phone(5090), &looped.to_bytes()).unwrap();
    assert_eq!(response(&sent(&mut p)[0]).status, 483);
    // strangers may not call through it
    p.handle_receive(t0, phone(7000), &invite("stranger", 7000, "880", None).to_bytes())
        .unwrap();
    assert_eq!(response(&sent(&mut p)[0]).status, 403);
    // nothing leaves loopback
    let mut off = Request::new(Method::Bye, Uri::parse("sip:x@192.0.2.1:5060").unwrap());
    off.headers
        .push("Via", "SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bKoff");
    off.headers.push("From", "<sip:880@127.0.0.1>;tag=a");
    off.headers.push("To", "<sip:x@127.0.0.1>;tag=b");
    off.headers.push("Call-ID", "c");
    off.headers.push("CSeq", "1 BYE");
    p.handle_receive(t0, phone(5090), &off.to_bytes()).unwrap();
    assert_eq!(response(&sent(&mut p)[0]).status, 403);
    // garbage
    assert!(p.handle_receive(t0, phone(5090), b"\x00garbage").is_err());
    assert!(sent(&mut p).is_empty());
}
