//! Transaction state machines driven with simulated time.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;
use crate::message::{Message, Uri};
use crate::transport::Transport;

fn target(transport: Transport) -> Target {
    Target {
        transport,
        addr: "127.0.0.1:5060".parse::<SocketAddr>().unwrap(),
    }
}

fn request(method: Method, branch: &str) -> Request {
    let mut r = Request::new(method.clone(), Uri::parse("sip:1000@127.0.0.1").unwrap());
    r.headers
        .push("Via", format!("SIP/2.0/UDP 127.0.0.1:5090;branch={branch};rport"));
    r.headers.push("From", "<sip:880@127.0.0.1>;tag=f1");
    r.headers.push("To", "<sip:1000@127.0.0.1>");
    r.headers.push("Call-ID", "call-1");
    r.headers.push("CSeq", format!("1 {method}"));
    r
}

fn response(req: &Request, status: u16) -> Response {
    let mut r = Response::for_request(req, status, "Whatever");
    if status > 100 {
        r.headers.set("To", "<sip:1000@127.0.0.1>;tag=t1");
    }
    r
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Runs the layer until `until`, firing timers exactly when due; returns the
/// offsets (from `t0`) of every transmission and all events.
fn run(tx: &mut Transactions<u32>, t0: Instant, until: Duration) -> (Vec<Duration>, Vec<TxEvent<u32>>) {
    let mut sent = Vec::new();
    let mut events = Vec::new();
    while tx.poll_transmit().is_some() {}
    loop {
        while let Some(e) = tx.poll_event() {
            events.push(e);
        }
        let Some(at) = tx.poll_timeout() else { break };
        if at > t0 + until {
            break;
        }
        tx.handle_timeout(at);
        while tx.poll_transmit().is_some() {
            sent.push(at - t0);
        }
    }
    (sent, events)
}

#[test]
fn non_invite_over_udp_retransmits_with_backoff_capped_at_t2_then_times_out() {
    let t0 = Instant::now();
    let mut tx = Transactions::<u32>::new(Timers::default());
    let key = tx
        .send_request(
            t0,
            request(Method::Register, "z9hG4bKa"),
            target(Transport::Udp),
            7,
        )
        .unwrap();
    assert!(tx.poll_transmit().is_some());
    let (sent, events) = run(&mut tx, t0, Duration::from_secs(40));
    let expect: Vec<Duration> = [500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
        .into_iter()
        .map(ms)
        .collect();
    assert_eq!(sent, expect);
    assert_eq!(events, vec![TxEvent::Timeout { key, owner: 7 }]);
    assert_eq!(tx.client_count(), 0);
}

#[test]
fn non_invite_over_tcp_never_retransmits() {
    let t0 = Instant::now();
    let mut tx = Transactions::<u32>::new(Timers::default());
    tx.send_request(
        t0,
        request(Method::Options, "z9hG4bKb"),
        target(Transport::Tcp),
        1,
    )
    .unwrap();
    tx.poll_transmit().unwrap();
    assert_eq!(tx.poll_timeout(), Some(t0 + Duration::from_secs(32)));
    let (sent, events) = run(&mut tx, t0, Duration::from_secs(40));
    assert!(sent.is_empty());
    assert!(matches!(events[..], [TxEvent::Timeout { .. }]));
}

#[test]
fn non_invite_final_response_completes_and_absorbs_retransmissions() {
    let t0 = Instant::now();
    let mut tx = Transactions::<u32>::new(Timers::default());
    let req = request(Method::Register, "z9hG4bKc");
    tx.send_request(t0, req.clone(), target(Transport::Udp), 1)
        .unwrap();
    tx.poll_transmit().unwrap();
    // 100 Trying: retransmissions continue every T2
    assert!(tx.receive_response(t0 + ms(100), response(&req, 100)));
    assert!(matches!(tx.poll_event(), Some(TxEvent::Response { .. })));
    tx.handle_timeout(t0 + ms(500));
    assert!(
        tx.poll_transmit().is_none(),
        "no retransmission at T1 once proceeding"
    );
    assert_eq!(tx.poll_timeout(), Some(t0 + ms(100) + Duration::from_secs(4)));
    assert!(tx.receive_response(t0 + ms(200), response(&req, 200)));
    match tx.poll_event() {
        Some(TxEvent::Response { response, .. }) => assert_eq!(response.status, 200),
        e => panic!("{e:?}"),
    }
    // retransmitted 200 is absorbed
    assert!(tx.receive_response(t0 + ms(300), response(&req, 200)));
    assert!(tx.poll_event().is_none());
    // Timer K = T4
    tx.handle_timeout(t0 + ms(200) + Duration::from_secs(5));
    assert_eq!(tx.client_count(), 0);
    // a stray response matches nothing
    assert!(!tx.receive_response(t0 + Duration::from_secs(6), response(&req, 200)));
}

#[test]
fn invite_retransmits_doubling_until_timer_b() {
    let t0 = Instant::now();
    let mut tx = Transactions::<u32>::new(Timers::default());
    tx.send_request(t0, request(Method::Invite, "z9hG4bKd"), target(Transport::Udp), 3)
        .unwrap();
    tx.poll_transmit().unwrap();
    let (sent, events) = run(&mut tx, t0, Duration::from_secs(40));
    assert_eq!(sent, [500, 1500, 3500, 7500, 15500, 31500].map(ms).to_vec());
    assert!(matches!(events[..], [TxEvent::Timeout { owner: 3, .. }]));
}

#[test]
fn invite_provisional_stops_retransmission_and_timer_b() {
    let t0 = Instant::now();
    let mut tx = Transactions::<u32>::new(Timers::default());
    let req = request(Method::Invite, "z9hG4bKe");
    tx.send_request(t0, req.clone(), target(Transport::Udp), 3)
        .unwrap();
    tx.poll_transmit().unwrap();
    tx.receive_response(t0 + ms(50), response(&req, 180));
    assert_eq!(
        tx.poll_timeout(),
        None,
        "waits for the final response as long as it takes"
    );
    assert_eq!(tx.client_count(), 1);
}

#[test]
fn invite_non_2xx_is_acked_and_retransmissions_reacked() {
    let t0 = Instant::now();
    let mut tx = Transactions::<u32>::new(Timers::default());
    let req = request(Method::Invite, "z9hG4bKf");
    tx.send_request(t0, req.clone(), target(Transport::Udp), 3)
        .unwrap();
    tx.poll_transmit().unwrap();
    tx.receive_response(t0 + ms(10), response(&req, 486));
    let ack = tx.poll_transmit().expect("ACK");
    let Ok(Message::Request(ack)) = Message::parse(&ack.data) else {
        panic!("ACK does not parse")
    };
    assert_eq!(ack.method, Method::Ack);
    assert_eq!(ack.headers.cseq().unwrap().seq, 1);
    assert_eq!(ack.headers.top_via().unwrap().branch(), Some("z9hG4bKf"));
    assert_eq!(ack.headers.to().unwrap().tag(), Some("t1"));
    assert!(matches!(tx.poll_event(), Some(TxEvent::Response { .. })));
    // retransmitted 486: ACK again, no event
    tx.receive_response(t0 + ms(510), response(&req, 486));
    assert!(tx.poll_transmit().is_some());
    assert!(tx.poll_event().is_none());
    // Timer D = 32 s
    tx.handle_timeout(t0 + ms(10) + Duration::from_secs(31));
    assert_eq!(tx.client_count(), 1);
    tx.handle_timeout(t0 + ms(10) + Duration::from_secs(32));
    assert_eq!(tx.client_count(), 0);
}

#[test]
fn invite_2xx_retransmissions_reach_the_dialog_until_timer_m() {
    let t0 = Instant::now();
    let mut tx = Transactions::<u32>::new(Timers::default());
    let req = request(Method::Invite, "z9hG4bKg");
    tx.send_request(t0, req.clone(), target(Transport::Udp), 3)
        .unwrap();
    tx.poll_transmit().unwrap();
    tx.receive_response(t0 + ms(10), response(&req, 200));
    tx.receive_response(t0 + ms(510), response(&req, 200));
    assert!(
        tx.poll_transmit().is_none(),
        "the dialog ACKs a 2xx, not the transaction"
    );
    assert_eq!(
        std::iter::from_fn(|| tx.poll_event()).count(),
        2,
        "both 2xx reach the dialog"
    );
    tx.handle_timeout(t0 + ms(10) + Duration::from_secs(32));
    assert_eq!(tx.client_count(), 0);
}

#[test]
fn server_non_invite_resends_final_response_for_retransmitted_requests() {
    let t0 = Instant::now();
    let mut tx = Transactions::<u32>::new(Timers::default());
    let req = request(Method::Options, "z9hG4bKh");
    let Incoming::New(key) = tx.receive_request(t0, &req, target(Transport::Udp)) else {
        panic!()
    };
    // retransmission before we answered: absorbed silently
    assert_eq!(
        tx.receive_request(t0 + ms(1), &req, target(Transport::Udp)),
        Incoming::Absorbed
    );
    assert!(tx.poll_transmit().is_none());
    assert!(tx.respond(t0 + ms(2), &key, &response(&req, 200)));
    assert!(tx.poll_transmit().is_some());
    assert_eq!(
        tx.receive_request(t0 + ms(500), &req, target(Transport::Udp)),
        Incoming::Absorbed
    );
    assert!(tx.poll_transmit().is_some(), "200 resent");
    // Timer J = 64*T1
    tx.handle_timeout(t0 + ms(2) + Duration::from_secs(32));
    assert_eq!(tx.server_count(), 0);
}

#[test]
fn server_invite_non_2xx_retransmits_until_ack_then_confirmed() {
    let t0 = Instant::now();
    let mut tx = Transactions::<u32>::new(Timers::default());
    let req = request(Method::Invite, "z9hG4bKi");
    let Incoming::New(key) = tx.receive_request(t0, &req, target(Transport::Udp)) else {
        panic!()
    };
    tx.respond(t0, &key, &response(&req, 486));
    tx.poll_transmit().unwrap();
    tx.handle_timeout(t0 + ms(500));
    assert!(tx.poll_transmit().is_some(), "Timer G");
    tx.handle_timeout(t0 + ms(1500));
    assert!(tx.poll_transmit().is_some(), "Timer G doubled");
    let mut ack = request(Method::Ack, "z9hG4bKi");
    ack.headers.set("CSeq", "1 ACK");
    assert_eq!(
        tx.receive_request(t0 + ms(1600), &ack, target(Transport::Udp)),
        Incoming::Absorbed
    );
    assert_eq!(tx.server_state(&key), Some(ServerState::Confirmed));
    tx.handle_timeout(t0 + ms(3500));
    assert!(tx.poll_transmit().is_none(), "no more retransmissions after ACK");
    tx.handle_timeout(t0 + ms(1600) + Duration::from_secs(5));
    assert_eq!(tx.server_count(), 0);
    assert!(tx.poll_event().is_none());
}

#[test]
fn server_invite_without_ack_fires_timer_h() {
    let t0 = Instant::now();
    let mut tx = Transactions::<u32>::new(Timers::default());
    let req = request(Method::Invite, "z9hG4bKj");
    let Incoming::New(key) = tx.receive_request(t0, &req, target(Transport::Udp)) else {
        panic!()
    };
    tx.respond(t0, &key, &response(&req, 603));
    let (sent, events) = run(&mut tx, t0, Duration::from_secs(40));
    // G: 0.5, 1.5, 3.5, 7.5, then every T2 until H at 32 s
    assert_eq!(sent[..5], [500, 1500, 3500, 7500, 11500].map(ms));
    assert_eq!(events, vec![TxEvent::AckTimeout { key }]);
    assert_eq!(tx.server_count(), 0);
}

#[test]
fn server_invite_2xx_is_retransmitted_until_the_dialog_sees_the_ack() {
    let t0 = Instant::now();
    let mut tx = Transactions::<u32>::new(Timers::default());
    let req = request(Method::Invite, "z9hG4bKk");
    let Incoming::New(key) = tx.receive_request(t0, &req, target(Transport::Udp)) else {
        panic!()
    };
    tx.respond(t0, &key, &response(&req, 100));
    tx.respond(t0, &key, &response(&req, 200));
    assert_eq!(std::iter::from_fn(|| tx.poll_transmit()).count(), 2);
    tx.handle_timeout(t0 + ms(500));
    assert!(tx.poll_transmit().is_some(), "2xx retransmitted");
    // an ACK for a 2xx has its own branch: it is the dialog's, not the transaction's
    let mut ack = request(Method::Ack, "z9hG4bKother");
    ack.headers.set("CSeq", "1 ACK");
    assert_eq!(
        tx.receive_request(t0 + ms(600), &ack, target(Transport::Udp)),
        Incoming::Stateless
    );
    tx.ack_received(&key);
    tx.handle_timeout(t0 + ms(1500));
    assert!(tx.poll_transmit().is_none());
    // INVITE retransmissions are still absorbed during Timer L
    assert_eq!(
        tx.receive_request(t0 + ms(1600), &req, target(Transport::Udp)),
        Incoming::Absorbed
    );
    let (_, events) = run(&mut tx, t0, Duration::from_secs(40));
    assert!(events.is_empty(), "acked: no AckTimeout");
    assert_eq!(tx.server_count(), 0);
}

#[test]
fn transport_error_fails_pending_transactions_to_that_target() {
    let t0 = Instant::now();
    let mut tx = Transactions::<u32>::new(Timers::default());
    tx.send_request(
        t0,
        request(Method::Register, "z9hG4bKl"),
        target(Transport::Tcp),
        9,
    )
    .unwrap();
    tx.transport_error(target(Transport::Tcp));
    assert!(matches!(tx.poll_event(), Some(TxEvent::Timeout { owner: 9, .. })));
    assert_eq!(tx.client_count(), 0);
}

#[test]
fn requests_without_rfc3261_branch_still_match_their_retransmissions() {
    let t0 = Instant::now();
    let mut tx = Transactions::<u32>::new(Timers::default());
    let mut req = request(Method::Options, "oldstyle");
    req.headers.set("Via", "SIP/2.0/UDP 127.0.0.1:5090");
    assert!(matches!(
        tx.receive_request(t0, &req, target(Transport::Udp)),
        Incoming::New(_)
    ));
    assert_eq!(
        tx.receive_request(t0, &req, target(Transport::Udp)),
        Incoming::Absorbed
    );
}
