//! Fuzzes the whole receive path of the user agent (parse, validate, transaction
//! matching, automatic answers) with a registered line, so responses and requests
//! from a hostile peer reach the registration and transaction code too.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use sipline_sip::message::Uri;
use sipline_sip::transaction::Timers;
use sipline_sip::{Account, Protection, Target, Transport, UaConfig, UserAgent};

fuzz_target!(|data: &[u8]| {
    let pbx = Target { transport: Transport::Udp, addr: "127.0.0.1:5060".parse().unwrap() };
    let config = UaConfig {
        transport: Transport::Udp,
        advertise_host: "127.0.0.1".into(),
        advertise_port: 5090,
        registrar_uri: Uri::parse("sip:127.0.0.1:5060").unwrap(),
        registrar: pbx,
        outbound_proxy: None,
        expires: 600,
        keepalive_interval: Some(Duration::from_secs(1)),
        keepalive_timeout: Duration::from_secs(2),
        retry_min: Duration::from_secs(1),
        retry_max: Duration::from_secs(60),
        user_agent: "fuzz".into(),
        no_answer_timeout: Duration::from_secs(120),
        timers: Timers::default(),
        protection: Protection::default(),
    };
    let t0 = Instant::now();
    let mut ua = UserAgent::new(t0, config, 1);
    ua.add_line(t0, Account {
        user: "880".into(),
        auth_user: "880".into(),
        password: "880".into(),
        display_name: None,
        domain: "127.0.0.1".into(),
    });
    while ua.poll_transmit().is_some() {}
    // the input is split into datagrams at NUL bytes
    for (i, chunk) in data.split(|b| *b == 0).enumerate() {
        let now = t0 + Duration::from_millis(100 * i as u64);
        let _ = ua.handle_receive(now, pbx, chunk);
        ua.handle_timeout(now);
        while ua.poll_transmit().is_some() {}
        while ua.poll_event().is_some() {}
    }
});
