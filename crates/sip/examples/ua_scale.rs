//! How the user agent's per-message and per-timer costs grow with the number of lines
//! and calls: N registered lines, each with a confirmed incoming call, then
//! - `route`: an in-dialog INFO to one call (parse, find the call, answer 200),
//! - `poll_timeout`: the next deadline, asked once per loop of the SIP task,
//! - `idle tick`: `handle_timeout` with nothing due.
//!
//! `cargo run --release -p sipline-sip --example ua_scale -- 100 1000 10000`
//! Figures: docs/performance.md ("SIP core with many lines").

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sipline_sip::message::{Message, Response, Uri};
use sipline_sip::transaction::Timers;
use sipline_sip::{Account, Event, Protection, Target, Transport, UaConfig, UserAgent};

const PBX: &str = "127.0.0.1:5060";

fn config() -> UaConfig {
    UaConfig {
        transport: Transport::Udp,
        advertise_host: "127.0.0.1".into(),
        advertise_port: 5090,
        registrar_uri: Uri::parse("sip:127.0.0.1:5060").expect("a URI"),
        registrar: pbx(),
        outbound_proxy: None,
        expires: 3600,
        keepalive_interval: None,
        keepalive_timeout: Duration::from_secs(2),
        retry_min: Duration::from_secs(1),
        retry_max: Duration::from_secs(60),
        user_agent: "ua-scale".into(),
        no_answer_timeout: Duration::from_secs(120),
        session_timer: Some(Default::default()),
        timers: Timers::default(),
        protection: Protection {
            max_server_transactions: 1_000_000,
            ..Protection::default()
        },
        headers: Default::default(),
        calls_per_line: 1,
    }
}

fn pbx() -> Target {
    Target {
        transport: Transport::Udp,
        addr: PBX.parse::<SocketAddr>().expect("an address"),
    }
}

/// Answers every REGISTER with 200 and drops everything else sent.
fn answer_registers(ua: &mut UserAgent, now: Instant) {
    let mut sent = Vec::new();
    while let Some(t) = ua.poll_transmit() {
        sent.push(t.data);
    }
    for data in sent {
        if let Ok(Message::Request(req)) = Message::parse(&data)
            && req.method.as_str() == "REGISTER"
        {
            let mut ok = Response::for_request(&req, 200, "OK");
            let contact = req.headers.get("Contact").unwrap_or_default().to_owned();
            ok.headers.set(
                "To",
                format!("{};tag=reg", req.headers.get("To").unwrap_or_default()),
            );
            ok.headers.push("Contact", format!("{contact};expires=3600"));
            let _ = ua.handle_receive(now, pbx(), &ok.to_bytes());
        }
    }
}

fn request(method: &str, user: u32, branch: &str, call_id: &str, cseq: u32, to_tag: Option<&str>) -> String {
    let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    let body = if method == "INVITE" {
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 20000 RTP/AVP 0\r\n"
    } else {
        ""
    };
    let ct = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    };
    format!(
        "{method} sip:{user}@127.0.0.1:5090 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK{branch}\r\n\
         Max-Forwards: 69\r\nFrom: <sip:1000@127.0.0.1>;tag=far{user}\r\nTo: <sip:{user}@127.0.0.1>{to_tag}\r\n\
         Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContact: <sip:1000@127.0.0.1:5070>\r\n{ct}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn drain(ua: &mut UserAgent) -> Vec<Vec<u8>> {
    while ua.poll_event().is_some() {}
    std::iter::from_fn(|| ua.poll_transmit().map(|t| t.data)).collect()
}

fn run(n: u32) {
    let t0 = Instant::now();
    let mut ua = UserAgent::new(t0, config(), 7);
    for user in 0..n {
        let name = (100_000 + user).to_string();
        ua.add_line(
            t0,
            Account {
                user: name.clone(),
                auth_user: name.clone(),
                password: name,
                display_name: None,
                domain: "127.0.0.1".into(),
            },
        );
    }
    answer_registers(&mut ua, t0);
    // one confirmed incoming call per line
    let mut tags = Vec::new();
    for user in 0..n {
        let u = 100_000 + user;
        let call_id = format!("c{u}");
        let _ = ua.handle_receive(
            t0,
            pbx(),
            request("INVITE", u, &format!("i{u}"), &call_id, 1, None).as_bytes(),
        );
        let mut call = None;
        while let Some(ev) = ua.poll_event() {
            if let Event::Call { call: c, .. } = ev {
                call = Some(c);
            }
        }
        let call = call.expect("the INVITE rang");
        let sent = drain(&mut ua);
        let tag = sent
            .iter()
            .filter_map(|d| match Message::parse(d) {
                Ok(Message::Response(r)) => r.headers.to().ok()?.tag().map(str::to_owned),
                _ => None,
            })
            .next()
            .expect("a tag");
        ua.accept_call(t0, call, b"v=0\r\n".to_vec()).expect("accepted");
        let _ = ua.handle_receive(
            t0,
            pbx(),
            request("ACK", u, &format!("a{u}"), &call_id, 1, Some(&tag)).as_bytes(),
        );
        drain(&mut ua);
        tags.push((u, call_id, tag));
    }
    let stats = ua.stats();
    assert_eq!(stats.calls, n as usize);

    let rounds = 20_000u32;
    let now = t0 + Duration::from_millis(10);
    let start = Instant::now();
    for i in 0..rounds {
        let (u, call_id, tag) = &tags[(i as usize * 7919) % tags.len()];
        let info = request("INFO", *u, &format!("n{i}"), call_id, 2 + i, Some(tag));
        let _ = ua.handle_receive(now, pbx(), info.as_bytes());
        while ua.poll_transmit().is_some() {}
        while ua.poll_event().is_some() {}
    }
    let route = start.elapsed() / rounds;

    let start = Instant::now();
    let mut next = None;
    for _ in 0..rounds {
        next = std::hint::black_box(ua.poll_timeout());
    }
    let poll = start.elapsed() / rounds;
    assert!(next.is_some());

    let start = Instant::now();
    for _ in 0..rounds {
        ua.handle_timeout(now);
    }
    let tick = start.elapsed() / rounds;
    println!(
        "{n:>6} lines+calls   route INFO {:>9.2} us   poll_timeout {:>9.3} us   idle tick {:>9.3} us",
        route.as_secs_f64() * 1e6,
        poll.as_secs_f64() * 1e6,
        tick.as_secs_f64() * 1e6
    );
}

fn main() {
    let sizes: Vec<u32> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("a number of lines"))
        .collect();
    for n in if sizes.is_empty() {
        vec![100, 1000, 10_000]
    } else {
        sizes
    } {
        run(n);
    }
}
