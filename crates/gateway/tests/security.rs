//! Issue 10: what a hostile network or browser can do to the gateway, tried against the
//! real binary as an attacker would, on loopback. Each test names the attack; each fails
//! on a gateway without the defence (see docs/security.md for the threat model).

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn pool_range(from: u32, to: u32) -> String {
    format!("\n[pool]\ndomain = \"127.0.0.1\"\nrange = {{ from = {from}, to = {to} }}\n")
}

/// A lab: Kamailio and sipline with accounts 880–883 and this slot's RTP ports; `sip`
/// and `http` are extra keys for those sections.
fn lab(n: u16, sip: &str, http: &str) -> (Slot, Pbx, String) {
    let slot = Slot::new(n);
    let pbx = Pbx::start(slot.pbx);
    let rtp = 48000 + (n - 70) * 20;
    let config = base_config(slot)
        .replace("[sip]\n", &format!("[sip]\n{sip}\n"))
        .replace("[http]\n", &format!("[http]\n{http}\n"))
        + &pool_range(880, 883)
        + &format!("\n[media]\nrtp_ports = \"{rtp}-{}\"\n", rtp + 19);
    (slot, pbx, config)
}

fn counter(m: &HashMap<String, f64>, family: &str, label: &str) -> f64 {
    let key = match family {
        "refused" => format!("sipline_refused_total{{limit=\"{label}\"}}"),
        _ => format!("sipline_dropped_total{{what=\"{label}\"}}"),
    };
    *m.get(&key).unwrap_or_else(|| panic!("no {key} in /metrics"))
}

/// Browser `a` calls browser `b` (user `b_user`) through Kamailio; both reach inCall.
async fn call_between(a: &mut Browser, b: &mut Browser, b_user: &str) {
    let r = a.request("call", json!({"number": b_user})).await;
    assert!(r["result"]["callId"].is_string(), "call refused: {r}");
    b.wait_for("incomingCall", |_| true, WAIT).await;
    let r = b.request("accept", json!({})).await;
    assert_eq!(r["result"], json!({}), "accept: {r}");
    wait_call_state(a, "inCall", WAIT).await;
    let_the_ack_through().await;
    let r = a.request("hangUp", json!({})).await;
    assert_eq!(r["result"], json!({}), "hang up: {r}");
    wait_call_state(b, "completed", WAIT).await;
}

// ---- 1. dial policy -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dial_pattern_with_its_own_anchors_is_anchored_as_a_whole() {
    let (_slot, _pbx, config) = lab(70, "", "");
    let config = config + "\n[calls]\ndial_pattern = \"^1000|9.*$\"\n";
    let sipline = Sipline::start(&config);
    let mut b = Browser::connect(&sipline.ws_url()).await;
    let hello = b.wait_for("sipUserNameReceived", |_| true, WAIT).await;
    assert_eq!(
        hello["dialPattern"], "^(?:^1000|9.*$)$",
        "the page gets the policy it must follow"
    );
    b.wait_line("registered", WAIT).await;
    for number in ["x9", "55519", "1000abc", "abc9def", "0900-premium"] {
        let r = b.request("call", json!({"number": number})).await;
        assert_eq!(r["error"]["code"], -32602, "{number} must be refused: {r}");
    }
    let m = sipline.metrics().await;
    assert_eq!(counter(&m, "refused", "dial_policy"), 5.0);
    assert_eq!(m["sipline_sip_calls"], 0.0, "no INVITE left for any of them");
    // what the pattern does allow still goes out
    let r = b.request("call", json!({"number": "9123"})).await;
    assert!(r["result"]["callId"].is_string(), "{r}");
}

// ---- 3. forged incoming calls -----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_sent_straight_to_a_line_is_refused_and_rings_nobody() {
    let (_slot, _pbx, config) = lab(71, "", "");
    let sipline = Sipline::start(&config);
    let (mut victim, user) = Browser::registered(&sipline.ws_url()).await;
    let (mut caller, _) = Browser::registered(&sipline.ws_url()).await;

    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let lp = sock.local_addr().unwrap().port();
    let sip = sipline.sip_port;
    let sdp =
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\n";
    let forged = format!(
        "INVITE sip:{user}@127.0.0.1:{sip} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{lp};branch=z9hG4bKforged{lp}\r\n\
         Max-Forwards: 70\r\nFrom: \"Your Bank Security\" <sip:1000@127.0.0.1>;tag=evil\r\n\
         To: <sip:{user}@127.0.0.1>\r\nCall-ID: forged-{lp}\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:1000@127.0.0.1:{lp}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    sock.send_to(forged.as_bytes(), ("127.0.0.1", sip)).unwrap();
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).expect("an answer to the forged INVITE");
    let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(answer.starts_with("SIP/2.0 403"), "{answer}");
    // nobody rang
    let rang = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match victim.next(Duration::from_secs(2)).await {
                Some(v) if v["method"] == "incomingCall" => return v,
                Some(_) => continue,
                None => std::future::pending::<()>().await,
            }
        }
    })
    .await;
    assert!(rang.is_err(), "the browser rang for a forged INVITE: {rang:?}");
    let m = sipline.metrics().await;
    assert_eq!(counter(&m, "refused", "sip_untrusted_source"), 1.0);
    assert!(sipline.log().contains("refused INVITE"), "the refusal is logged");

    // a real call through the PBX still rings
    let r = caller.request("call", json!({"number": user})).await;
    assert!(r["result"]["callId"].is_string(), "{r}");
    let incoming = victim.wait_for("incomingCall", |_| true, WAIT).await;
    assert_eq!(incoming["from"], "881");
}

// ---- 4. descriptor exhaustion -------------------------------------------------------------

/// Opens up to `n` TCP connections to `port` as fast as it can; keeps what it got.
fn open_many(port: u16, n: usize, first_bytes: &[u8]) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for _ in 0..n {
        match TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)) {
            Ok(mut s) => {
                let _ = s.write_all(first_bytes);
                held.push(s);
            }
            Err(_) => continue,
        }
    }
    held
}

/// How many of these connections the gateway has closed (EOF or reset).
fn closed_by_peer(conns: &mut [TcpStream]) -> usize {
    let mut closed = 0;
    let mut buf = [0u8; 512];
    for c in conns.iter_mut() {
        c.set_nonblocking(true).unwrap();
        match c.read(&mut buf) {
            Ok(0) => closed += 1,
            Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => closed += 1,
            _ => {}
        }
    }
    closed
}

fn raise_own_descriptor_limit() {
    let (_, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
    rlimit::setrlimit(rlimit::Resource::NOFILE, hard, hard).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_sip_tcp_connections_leave_the_gateway_serving() {
    raise_own_descriptor_limit();
    let (_slot, _pbx, config) = lab(72, "tcp_idle_timeout = 2", "");
    let sipline = Sipline::start_with_1024_descriptors(&config);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", sipline.pid())).unwrap();
    let (mut a, _) = Browser::registered(&sipline.ws_url()).await;
    let sip_port = sipline.sip_port;
    let log_before = sipline.log_len();

    let mut flood = tokio::task::spawn_blocking(move || open_many(sip_port, 5000, b""))
        .await
        .unwrap();
    println!("the attacker holds {} connections", flood.len());
    let fds = sipline.open_descriptors();
    println!("the gateway holds {fds} descriptors");
    assert!(fds < 512, "{fds} descriptors held during the flood");
    // HTTP, WebSockets and calls still work
    let (mut b, b_user) = Browser::registered(&sipline.ws_url()).await;
    call_between(&mut a, &mut b, &b_user).await;
    let m = sipline.metrics().await;
    let refused = counter(&m, "refused", "sip_tcp_connections_per_ip");
    assert!(refused >= 4000.0, "only {refused} refused");
    // accepted but silent connections are reaped after tcp_idle_timeout
    tokio::time::sleep(Duration::from_secs(4)).await;
    let closed = closed_by_peer(&mut flood);
    assert_eq!(
        closed,
        flood.len(),
        "every flood connection was closed by the gateway"
    );
    assert!(counter(&sipline.metrics().await, "dropped", "sip_tcp_idle") >= 1.0);
    let logged = sipline.log_len() - log_before;
    assert!(logged < 64 * 1024, "{logged} bytes of log for one flood");
    // started at 1024 (prlimit), the gateway raised its own soft limit to the hard one
    assert!(
        limits.contains("Max open files            4096                 4096"),
        "{limits}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_http_headers_time_out_and_leave_room_for_calls() {
    raise_own_descriptor_limit();
    let (_slot, _pbx, config) = lab(73, "", "header_timeout = 2");
    let sipline = Sipline::start_with_1024_descriptors(&config);
    let (mut a, _) = Browser::registered(&sipline.ws_url()).await;
    let (mut b, b_user) = Browser::registered(&sipline.ws_url()).await;
    let port = sipline.http.port();

    let mut flood = tokio::task::spawn_blocking(move || {
        open_many(port, 1100, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    })
    .await
    .unwrap();
    println!("the attacker holds {} connections", flood.len());
    let fds = sipline.open_descriptors();
    assert!(fds < 512, "{fds} descriptors held during the flood");
    // sessions already open keep calling
    call_between(&mut a, &mut b, &b_user).await;
    // the half-sent requests are cut off after http.header_timeout, and room comes back
    tokio::time::sleep(Duration::from_secs(3)).await;
    let closed = closed_by_peer(&mut flood);
    assert_eq!(closed, flood.len(), "every half-sent request was cut off");
    let m = sipline.metrics().await;
    assert!(counter(&m, "refused", "http_connections_per_ip") >= 800.0);
    let cut_off = counter(&m, "dropped", "http_unfinished_request");
    assert!(cut_off >= 200.0, "{cut_off} unfinished requests counted");
    let (_c, _) = Browser::registered(&sipline.ws_url()).await;
}

// ---- 5. a peer that never reads ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sip_tcp_peer_that_never_reads_is_dropped_without_growing_memory() {
    // a trusted source, so every OPTIONS gets a full answer: the worst case
    let (_slot, _pbx, config) = lab(74, "trusted_sources = [\"127.0.0.1\"]", "");
    let sipline = Sipline::start(&config);
    let (_a, _) = Browser::registered(&sipline.ws_url()).await;
    let rss_before = sipline.rss_kib();
    let port = sipline.sip_port;
    let sent = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        // never read; a small receive buffer, so the gateway's answers pile up on its side
        socket2::SockRef::from(&s).set_recv_buffer_size(4096).unwrap();
        let lp = s.local_addr().unwrap().port();
        let t0 = Instant::now();
        let mut sent = 0usize;
        let mut batch = String::new();
        while t0.elapsed() < Duration::from_secs(15) && sent < 400_000 {
            batch.clear();
            for _ in 0..100 {
                sent += 1;
                batch.push_str(&format!(
                    "OPTIONS sip:127.0.0.1:{port};transport=tcp SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:{lp};branch=z9hG4bKp{sent}\r\n\
                     Max-Forwards: 70\r\nFrom: <sip:p@127.0.0.1>;tag=p\r\nTo: <sip:127.0.0.1>\r\nCall-ID: pipe{sent}\r\n\
                     CSeq: {sent} OPTIONS\r\nContent-Length: 0\r\n\r\n"
                ));
            }
            if s.write_all(batch.as_bytes()).is_err() {
                return (sent, true);
            }
        }
        (sent, false)
    });
    let (sent, cut_off) = sent.await.unwrap();
    let rss_after = sipline.rss_kib();
    let grown = rss_after.saturating_sub(rss_before);
    println!("{sent} OPTIONS pipelined, cut off: {cut_off}; RSS {rss_before} -> {rss_after} KiB");
    assert!(grown < 64 * 1024, "the gateway grew by {grown} KiB");
    assert!(cut_off, "the gateway dropped the peer that would not read");
    // by its write timeout or send queue limit, or (when TCP itself stalls the peer's
    // sending) by the time a begun message may take
    let m = sipline.metrics().await;
    let dropped = counter(&m, "dropped", "sip_tcp_slow_reader") + counter(&m, "dropped", "sip_tcp_idle");
    assert!(dropped >= 1.0, "{m:?}");
}

// ---- 6. UDP floods -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_flood_is_answered_once_at_most_and_calls_still_connect() {
    let (_slot, _pbx, config) = lab(75, "", "");
    let sipline = Sipline::start(&config);
    let (mut a, _) = Browser::registered(&sipline.ws_url()).await;
    let (mut b, b_user) = Browser::registered(&sipline.ws_url()).await;
    let sip = sipline.sip_port;
    let flood = std::thread::spawn(move || {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_nonblocking(true).unwrap();
        let lp = sock.local_addr().unwrap().port();
        let mut answers: HashMap<String, usize> = HashMap::new();
        let mut buf = [0u8; 4096];
        let mut drain = |answers: &mut HashMap<String, usize>| {
            while let Ok(n) = sock.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                let branch = text
                    .split("branch=")
                    .nth(1)
                    .and_then(|b| b.split([';', '\r']).next())
                    .unwrap_or_default()
                    .to_owned();
                let status = text.get(8..11).unwrap_or_default().to_owned();
                *answers.entry(format!("{branch} {status}")).or_default() += 1;
            }
        };
        let t0 = Instant::now();
        for i in 0..20_000u32 {
            let invite = format!(
                "INVITE sip:nobody{i}@127.0.0.1:{sip} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{lp};branch=z9hG4bKfl{i}\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:x@127.0.0.1>;tag=f{i}\r\nTo: <sip:nobody{i}@127.0.0.1>\r\n\
                 Call-ID: flood{i}\r\nCSeq: 1 INVITE\r\nContact: <sip:x@127.0.0.1:{lp}>\r\nContent-Length: 0\r\n\r\n"
            );
            let _ = sock.send_to(invite.as_bytes(), ("127.0.0.1", sip));
            if i % 200 == 199 {
                drain(&mut answers);
                // 2,000 a second
                let due = Duration::from_millis(u64::from(i + 1) / 2);
                std::thread::sleep(due.saturating_sub(t0.elapsed()));
            }
        }
        // retransmissions, if any, come within seconds
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until {
            drain(&mut answers);
            std::thread::sleep(Duration::from_millis(20));
        }
        answers
    });
    // a real call during the flood
    tokio::time::sleep(Duration::from_secs(2)).await;
    call_between(&mut a, &mut b, &b_user).await;
    let answers = tokio::task::spawn_blocking(move || flood.join().unwrap())
        .await
        .unwrap();
    let total: usize = answers.values().sum();
    let repeated = answers.values().filter(|n| **n > 1).count();
    println!("{total} answers to 20000 INVITEs, {repeated} repeated");
    assert_eq!(repeated, 0, "an answer was sent more than once");
    assert!(total <= 20_000);
    let m = sipline.metrics().await;
    assert!(m["sipline_sip_server_transactions"] <= 4096.0);
    assert!(counter(&m, "refused", "sip_untrusted_source") >= 1000.0);
}

// ---- 8. log flooding -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_on_the_sip_port_cannot_flood_the_log() {
    let (_slot, _pbx, config) = lab(76, "", "");
    let sipline = Sipline::start(&config);
    let (_a, _) = Browser::registered(&sipline.ws_url()).await;
    let before = sipline.log_len();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let junk: Vec<u8> = format!(
        "JUNK sip:x SIP/2.0\r\nVia: {}\r\n\r\n",
        "\u{1b}[31mA".repeat(9_000)
    )
    .into_bytes();
    for i in 0..2000 {
        sock.send_to(&junk, ("127.0.0.1", sipline.sip_port)).unwrap();
        if i % 10 == 9 {
            std::thread::sleep(Duration::from_millis(3));
        }
    }
    sipline
        .wait_metrics(WAIT, |m| {
            counter(m, "dropped", "sip_invalid_request") + counter(m, "dropped", "sip_unparsable") >= 100.0
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log = sipline.log();
    let grown = sipline.log_len() - before;
    println!(
        "2000 junk datagrams of {} bytes: {grown} bytes of log",
        junk.len()
    );
    assert!(grown < 32 * 1024, "{grown} bytes of log");
    assert!(log.lines().all(|l| l.len() < 1024), "a log line over 1 KiB");
    assert!(!log.contains('\u{1b}'), "peer control characters reached the log");
    let m = sipline.metrics().await;
    assert!(counter(&m, "dropped", "log_lines") >= 100.0);
    // and the next line that passes says how many were left out
    tokio::time::sleep(Duration::from_secs(1)).await;
    sock.send_to(&junk, ("127.0.0.1", sipline.sip_port)).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(sipline.log().contains("suppressed="), "{}", sipline.log());
}

// ---- 7. browser-side abuse ------------------------------------------------------------------

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

/// Sends `frames` without waiting, then reads what comes back until the socket closes or
/// `answers` responses came: (results, errors by code, close frame code and reason).
async fn pipeline(
    b: &mut Browser,
    frames: impl Iterator<Item = String>,
    answers: usize,
) -> (usize, HashMap<i64, usize>, Option<(u16, String)>) {
    let mut sent = 0;
    for f in frames {
        if b.ws.feed(Message::Text(f.into())).await.is_err() {
            break;
        }
        sent += 1;
    }
    let _ = b.ws.flush().await;
    let (mut ok, mut errors, mut close) = (0, HashMap::new(), None);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while ok + errors.values().sum::<usize>() < answers.min(sent) {
        let Ok(Some(frame)) = tokio::time::timeout_at(deadline, b.ws.next()).await else {
            break;
        };
        match frame {
            Ok(Message::Text(t)) => {
                let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                if v.get("result").is_some() {
                    ok += 1;
                } else if let Some(code) = v["error"]["code"].as_i64() {
                    *errors.entry(code).or_default() += 1;
                }
            }
            Ok(Message::Close(Some(f))) => {
                close = Some((u16::from(f.code), f.reason.to_string()));
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    (ok, errors, close)
}

/// Reads until the server's close frame: its code and reason.
async fn close_frame(b: &mut Browser, within: Duration) -> Option<(u16, String)> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, b.ws.next()).await.ok()?? {
            Ok(Message::Close(Some(f))) => return Some((u16::from(f.code), f.reason.to_string())),
            Ok(Message::Close(None)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_over_its_request_rate_is_refused_then_closed() {
    let (_slot, _pbx, config) = lab(77, "", "requests_per_second = 20\nrequest_burst = 50");
    let sipline = Sipline::start(&config);
    let (mut b, _) = Browser::registered(&sipline.ws_url()).await;
    // let the bucket fill up again after the registration's own requests (none: but be fair)
    tokio::time::sleep(Duration::from_millis(100)).await;
    let pings =
        (0..2000).map(|i| json!({"jsonrpc": "2.0", "id": i, "method": "ping", "params": {}}).to_string());
    let (ok, errors, close) = pipeline(&mut b, pings, 2000).await;
    println!("2000 pings at once: {ok} answered, errors {errors:?}, close {close:?}");
    // the burst, and what the bucket refilled while they were being answered
    assert!((50..200).contains(&ok), "{ok} served");
    assert!(errors.get(&-32001).copied().unwrap_or(0) >= 40, "{errors:?}");
    let (code, reason) = close.expect("a close frame");
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.contains("rate"), "{reason}");
    let m = sipline.metrics().await;
    assert!(counter(&m, "refused", "request_rate") >= 50.0);
    // the session is gone and its account free again
    sipline
        .wait_metrics(WAIT, |m| {
            m["sipline_sessions"] == 0.0 && m["sipline_pool_leased"] == 0.0
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candidates_beyond_the_cap_are_refused_and_big_frames_closed_with_1009() {
    let (_slot, _pbx, config) = lab(78, "", "requests_per_second = 100000\nrequest_burst = 100000");
    let sipline = Sipline::start(&config);
    let (mut b, _) = Browser::registered(&sipline.ws_url()).await;
    let candidates = (0..200).map(|i| {
        json!({"jsonrpc": "2.0", "id": i, "method": "candidate",
               "params": {"candidate": format!("candidate:{i} 1 udp 2122260223 127.0.0.1 {} typ host", 50000 + i)}})
        .to_string()
    });
    let (ok, errors, close) = pipeline(&mut b, candidates, 200).await;
    println!("200 candidates: {ok} taken, errors {errors:?}");
    assert_eq!(ok, 64, "http.max_candidates");
    assert_eq!(errors.get(&-32001), Some(&136));
    assert_eq!(close, None);
    assert_eq!(counter(&sipline.metrics().await, "refused", "candidates"), 136.0);

    // a 10 MB frame: closed with 1009 Message Too Big, not dropped
    let big = "x".repeat(10 << 20);
    let (mut sink, mut stream) = b.ws.split();
    let sender = tokio::spawn(async move {
        let _ = sink.send(Message::Text(big.into())).await;
        sink
    });
    let mut got = None;
    while let Ok(Some(frame)) = tokio::time::timeout(WAIT, stream.next()).await {
        if let Ok(Message::Close(Some(f))) = frame {
            got = Some((u16::from(f.code), f.reason.to_string()));
            break;
        }
        if frame.is_err() {
            break;
        }
    }
    sender.abort();
    let (code, reason) = got.expect("a close frame for the big frame");
    assert_eq!(code, 1009, "{reason}");
    assert_eq!(counter(&sipline.metrics().await, "refused", "frame_too_big"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_hold_the_whole_pool() {
    let (_slot, _pbx, config) = lab(79, "", "max_sessions_per_ip = 2");
    let sipline = Sipline::start(&config);
    let (_a, _) = Browser::registered(&sipline.ws_url()).await;
    let (_b, _) = Browser::registered(&sipline.ws_url()).await;
    // two of four accounts are free, but not for a third session from this address
    let mut c = Browser::connect(&sipline.ws_url()).await;
    let first = c.next(WAIT).await.unwrap();
    assert_eq!(first["params"]["state"], "connectionLimit", "{first}");
    let (code, reason) = close_frame(&mut c, WAIT).await.expect("a close frame");
    assert_eq!(code, 1013);
    assert!(reason.contains("address"), "{reason}");
    let m = sipline.metrics().await;
    assert_eq!(counter(&m, "refused", "sessions_per_ip"), 1.0);
    assert_eq!(m["sipline_pool_leased"], 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_end_at_their_maximum_length_but_not_mid_call() {
    let (_slot, _pbx, config) = lab(80, "", "max_session_length = 3");
    let sipline = Sipline::start(&config);
    let t0 = Instant::now();
    let (mut a, _) = Browser::registered(&sipline.ws_url()).await;
    let (mut b, b_user) = Browser::registered(&sipline.ws_url()).await;
    let (mut idle, _) = Browser::registered(&sipline.ws_url()).await;
    let r = a.request("call", json!({"number": b_user})).await;
    assert!(r["result"]["callId"].is_string(), "{r}");
    b.wait_for("incomingCall", |_| true, WAIT).await;
    b.request("accept", json!({})).await;
    wait_call_state(&mut a, "inCall", WAIT).await;
    // the idle session goes at its time
    let (code, reason) = close_frame(&mut idle, WAIT)
        .await
        .expect("the idle session closed");
    assert_eq!(code, 1001, "{reason}");
    assert!(t0.elapsed() >= Duration::from_secs(3));
    // the call goes on past it, and both sessions close when it ends
    tokio::time::sleep(Duration::from_secs(1)).await;
    let r = a.request("ping", json!({})).await;
    assert_eq!(r["result"], json!({}), "the calling session is still there");
    a.request("hangUp", json!({})).await;
    for s in [&mut a, &mut b] {
        let (code, reason) = close_frame(s, WAIT).await.expect("closed after the call");
        assert_eq!((code, reason.as_str()), (1001, "session length limit reached"));
    }
    assert!(counter(&sipline.metrics().await, "refused", "session_length") >= 3.0);
}
