//! The bodies of the cargo-fuzz targets in `crates/sip/fuzz`, as plain functions.
//!
//! They live in the library, not in the fuzz crate, so that one body serves two
//! callers: the fuzz target (`fuzz/fuzz_targets/*.rs`, a one-line `fuzz_target!`
//! around each function) and `tests/fuzz_corpus.rs`, which replays every file of the
//! committed corpora with an ordinary `cargo test`, without cargo-fuzz or nightly.
//! Each function panics exactly when the fuzzer must report a crash. Not part of the
//! API: hidden from the documentation, and free to change with the targets.

use std::time::{Duration, Instant};

use crate::message::{Message, Uri, frame_length};
use crate::transaction::Timers;
use crate::{Account, Protection, Target, Transport, UaConfig, UserAgent};

/// Target `message`: the SIP parser. Any bytes must parse or fail cleanly, a parsed
/// message must serialise into something that parses again, and the typed header
/// views and stream framing must not panic on whatever the parser accepted. What does
/// not parse goes through `answer_to_unparsable`, whose answer must parse.
pub fn message(data: &[u8]) {
    let _ = frame_length(data);
    let Ok(msg) = Message::parse(data) else {
        // what a trusted peer's unparsable request is answered with must itself parse
        if let Some(answer) = crate::message::answer_to_unparsable(data) {
            Message::parse(&answer.to_bytes()).expect("our answer to an unparsable request parses");
        }
        return;
    };
    let h = msg.headers();
    let _ = h.vias();
    let _ = h.cseq();
    let _ = h.from();
    let _ = h.to();
    let _ = h.contacts();
    let _ = h.call_id();
    if let Message::Request(r) = &msg {
        let _ = r.validate();
    }
    for v in h
        .get_all("WWW-Authenticate")
        .chain(h.get_all("Proxy-Authenticate"))
    {
        let _ = crate::auth::Challenge::parse(v);
    }
    for v in h.get_all("Authorization") {
        let _ = crate::auth::Authorization::parse(v);
    }
    let bytes = msg.to_bytes();
    let again = Message::parse(&bytes).expect("a serialised message parses again");
    assert_eq!(again.to_bytes(), bytes, "serialising is stable");
}

/// Target `user_agent`: the whole receive path of the user agent (parse, validate,
/// transaction matching, automatic answers) with a registered line, so responses and
/// requests from a hostile peer reach the registration and transaction code too. The
/// input is split into datagrams at NUL bytes, 100 ms apart.
pub fn user_agent(data: &[u8]) {
    let pbx = Target {
        transport: Transport::Udp,
        addr: "127.0.0.1:5060".parse().expect("an address"),
    };
    let config = UaConfig {
        transport: Transport::Udp,
        advertise_host: "127.0.0.1".into(),
        advertise_port: 5090,
        registrar_uri: Uri::parse("sip:127.0.0.1:5060").expect("a URI"),
        registrar: pbx,
        outbound_proxy: None,
        expires: 600,
        keepalive_interval: Some(Duration::from_secs(1)),
        keepalive_timeout: Duration::from_secs(2),
        retry_min: Duration::from_secs(1),
        retry_max: Duration::from_secs(60),
        user_agent: "fuzz".into(),
        no_answer_timeout: Duration::from_secs(120),
        session_timer: Some(crate::session_timer::SessionTimerConfig::default()),
        timers: Timers::default(),
        protection: Protection::default(),
        headers: Default::default(),
        calls_per_line: 1,
    };
    let t0 = Instant::now();
    let mut ua = UserAgent::new(t0, config, 1);
    ua.add_line(
        t0,
        Account {
            user: "880".into(),
            auth_user: "880".into(),
            password: "880".into(),
            display_name: None,
            domain: "127.0.0.1".into(),
        },
    );
    while ua.poll_transmit().is_some() {}
    for (i, chunk) in data.split(|b| *b == 0).enumerate() {
        let now = t0 + Duration::from_millis(100 * i as u64);
        let _ = ua.handle_receive(now, pbx, chunk);
        ua.handle_timeout(now);
        while ua.poll_transmit().is_some() {}
        while ua.poll_event().is_some() {}
    }
}
