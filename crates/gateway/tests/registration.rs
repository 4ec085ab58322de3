//! Issue 2 against the real peers: browsers on /api/v1/ws, sipline as a process,
//! Kamailio as the registrar. Registrations are checked on Kamailio's side
//! (`kamcmd ul.dump`), not only on sipline's word.

mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

/// All these browsers come from 127.0.0.1: lift the per-address session limit.
fn many_sessions(config: String) -> String {
    config.replace("[http]\n", "[http]\nmax_sessions_per_ip = 100\n")
}

fn pool_range(from: u32, to: u32) -> String {
    format!("\n[pool]\ndomain = \"127.0.0.1\"\nrange = {{ from = {from}, to = {to} }}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nineteen_browsers_get_lines_and_the_twentieth_is_refused() {
    let slot = Slot::new(1);
    let pbx = Pbx::start(slot.pbx);
    let sipline = Sipline::start(&(many_sessions(base_config(slot)) + &pool_range(880, 898)));
    let url = sipline.ws_url();

    let mut browsers = Vec::new();
    let mut users = Vec::new();
    for _ in 0..19 {
        let (b, user) = Browser::registered(&url).await;
        browsers.push(b);
        users.push(user);
    }
    users.sort();
    users.dedup();
    assert_eq!(users.len(), 19, "each browser got its own account");
    let expected: Vec<String> = (880..=898).map(|u| u.to_string()).collect();
    pbx.wait_users(WAIT, |u| u == expected.as_slice());

    // the 20th: connectionLimit, then close code 1013
    let mut twentieth = Browser::connect(&url).await;
    let first = twentieth.next(WAIT).await.unwrap();
    assert_eq!(first["method"], "registrationStateChanged");
    assert_eq!(first["params"]["state"], "connectionLimit");
    let close = tokio::time::timeout(WAIT, twentieth.ws.next()).await.unwrap();
    match close {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1013),
        other => panic!("expected close 1013, got {other:?}"),
    }

    // everyone leaves cleanly: every contact is gone within 2 s
    for b in browsers {
        b.close().await;
    }
    let took = pbx.wait_users(Duration::from_secs(2), |u| u.is_empty());
    println!("19 contacts removed {took:?} after the last close");
    sipline
        .wait_metrics(WAIT, |m| {
            m["sipline_pool_leased"] == 0.0 && m["sipline_sip_lines"] == 0.0
        })
        .await;
    let log = sipline.log();
    for needle in [
        "browser connected",
        "account leased",
        "line state changed",
        "account released",
        "browser disconnected",
    ] {
        assert!(log.contains(needle), "log has no {needle:?} line");
    }
    assert!(!log.contains("password"), "no password in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_reset_and_silent_browsers_free_their_accounts() {
    let slot = Slot::new(2);
    let pbx = Pbx::start(slot.pbx);
    // one account, so "leased again" is observable
    // resuming off: a vanished browser ends its session at once (resuming: tests/resume.rs)
    let sipline = Sipline::start(&no_resume(&(base_config(slot) + &pool_range(890, 890))));
    let url = sipline.ws_url();

    // clean close: contact gone within 2 s, account leased again
    let (b, user) = Browser::registered(&url).await;
    assert_eq!(user, "890");
    pbx.wait_users(WAIT, |u| u == ["890"]);
    let t0 = Instant::now();
    b.close().await;
    pbx.wait_users(Duration::from_secs(2), |u| u.is_empty());
    println!("clean close: unregistered after {:?}", t0.elapsed());
    sipline
        .wait_metrics(WAIT, |m| m["sipline_pool_leased"] == 0.0)
        .await;

    // TCP reset, no close frame: detected at once (the read fails)
    let (b, user) = Browser::registered(&url).await;
    assert_eq!(user, "890", "leased again to the next client");
    let t0 = Instant::now();
    b.reset();
    pbx.wait_users(Duration::from_secs(35), |u| u.is_empty());
    println!("reset: unregistered after {:?}", t0.elapsed());
    sipline
        .wait_metrics(WAIT, |m| m["sipline_pool_leased"] == 0.0)
        .await;

    // silent: the TCP connection stays up but nothing answers pings
    let (b, user) = Browser::registered(&url).await;
    assert_eq!(user, "890");
    let t0 = Instant::now();
    let frozen = b; // never polled again: pings go unanswered
    pbx.wait_users(Duration::from_secs(35), |u| u.is_empty());
    let took = t0.elapsed();
    println!("silent browser: unregistered after {took:?}");
    assert!(
        took >= Duration::from_secs(20),
        "a live-but-quiet connection is not cut early"
    );
    sipline
        .wait_metrics(WAIT, |m| m["sipline_pool_leased"] == 0.0)
        .await;
    drop(frozen);

    // and the account works for the next browser
    let (_b, user) = Browser::registered(&url).await;
    assert_eq!(user, "890");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_reports_the_sip_code_and_backs_off() {
    let slot = Slot::new(4);
    let _pbx = Pbx::start(slot.pbx);
    let config = base_config(slot).replace("[sip]\n", "[sip]\nretry_min = 1\nretry_max = 8\n")
        + "\n[pool]\naccounts = [{ user = \"1000\", password = \"wrong\" }]\n";
    let sipline = Sipline::start(&config);
    let mut b = Browser::connect(&sipline.ws_url()).await;
    let failed = b.wait_line("registrationFailed", WAIT).await;
    assert_eq!(failed["code"], 401);
    // over 8 s with back-off 1, 2, 4 s (+-20 %) there are at most 4 more attempts
    let t0 = Instant::now();
    let mut attempts = 0;
    while t0.elapsed() < Duration::from_secs(8) {
        match b.next(Duration::from_secs(8).saturating_sub(t0.elapsed())).await {
            Some(v) if v["params"]["state"] == "registering" => attempts += 1,
            Some(v) if v["params"]["state"] == "registrationFailed" => {
                assert_eq!(v["params"]["code"], 401)
            }
            Some(_) => {}
            None => break,
        }
    }
    assert!((2..=4).contains(&attempts), "{attempts} retries in 8 s");
    let log = sipline.log();
    assert!(
        log.contains("RegistrationFailed") && log.contains("401"),
        "a clear log line"
    );
    assert!(!log.contains("wrong"), "the password stays out of the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pbx_outage_is_noticed_and_every_line_comes_back() {
    let slot = Slot::new(5);
    let mut pbx = Pbx::start(slot.pbx);
    let config = base_config(slot).replace(
        "[sip]\n",
        "[sip]\nkeepalive_interval = 1\nkeepalive_timeout = 2\n",
    ) + &pool_range(880, 884);
    let sipline = Sipline::start(&config);
    let url = sipline.ws_url();
    let mut browsers = Vec::new();
    for _ in 0..5 {
        browsers.push(Browser::registered(&url).await.0);
    }
    pbx.wait_users(WAIT, |u| u.len() == 5);

    pbx.stop();
    let t_down = Instant::now();
    for b in &mut browsers {
        let p = b.wait_line("registrationFailed", Duration::from_secs(8)).await;
        assert_eq!(p["code"], 503);
    }
    println!("outage reported after {:?}", t_down.elapsed());
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(t_down.elapsed())).await;

    // Kamailio keeps its location table in memory (usrloc db_mode 0): the restarted one
    // has no bindings, and each line's own "registered" below is a fresh REGISTER.
    // (Asking Kamailio at once whether it is empty races sipline's retries.)
    pbx.restart();
    let t_up = Instant::now();
    for b in &mut browsers {
        b.wait_line("registered", Duration::from_secs(10)).await;
    }
    let took = pbx.wait_users(Duration::from_secs(10), |u| u.len() == 5);
    println!(
        "all lines registered at Kamailio {:?} after its return",
        t_up.elapsed()
    );
    assert!(took < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_rpc_errors_leave_the_connection_usable() {
    let slot = Slot::new(6);
    let _pbx = Pbx::start(slot.pbx);
    let sipline = Sipline::start(&(base_config(slot) + &pool_range(880, 880)));
    let (mut b, user) = Browser::registered(&sipline.ws_url()).await;

    b.send_text("{this is not json").await;
    let v = b.response_to(json!(null)).await;
    assert_eq!(v["error"]["code"], -32700);

    let v = b.request("dance", json!({})).await;
    assert_eq!(v["error"]["code"], -32601);

    let v = b.request("ping", json!("now")).await;
    assert_eq!(v["error"]["code"], -32602);

    b.send_text(r#"{"jsonrpc":"1.0","id":"x","method":"ping"}"#).await;
    assert_eq!(b.response_to(json!("x")).await["error"]["code"], -32600);

    b.ws.send(Message::Binary(vec![1u8, 2, 3].into())).await.unwrap();
    assert_eq!(b.response_to(json!(null)).await["error"]["code"], -32600);

    // still usable
    assert_eq!(b.request("ping", json!({})).await["result"], json!({}));
    let state = b.request("getState", json!({})).await;
    assert_eq!(state["result"]["user"], user.as_str());
    assert_eq!(state["result"]["line"], "registered");
}

use futures_util::SinkExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_sip_port_is_logged_and_dropped() {
    let slot = Slot::new(7);
    let pbx = Pbx::start(slot.pbx);
    let mut sipline = Sipline::start(&(base_config(slot) + &pool_range(880, 881)));
    let (mut first, _) = Browser::registered(&sipline.ws_url()).await;

    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = ("127.0.0.1", sipline.sip_port);
    let mut rng = fastrand::Rng::with_seed(7);
    for i in 0..500 {
        let len = rng.usize(0..1500);
        let junk: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        sock.send_to(&junk, target).unwrap();
        if i % 50 == 0 {
            sock.send_to(b"INVITE sip:880@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bKx\r\nContent-Length: 900\r\n\r\nv=0", target).unwrap();
        }
    }
    // a request with a bad CSeq gets a 400
    let lp = sock.local_addr().unwrap().port();
    let bad = format!(
        "OPTIONS sip:880@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{lp};branch=z9hG4bKbad\r\nFrom: <sip:a@b>;tag=1\r\n\
         To: <sip:880@127.0.0.1>\r\nCall-ID: bad\r\nCSeq: x OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    sock.send_to(bad.as_bytes(), target).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).unwrap();
    assert!(
        buf[..n].starts_with(b"SIP/2.0 400"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    // garbage over TCP too
    {
        use std::io::Write;
        let mut tcp = std::net::TcpStream::connect(target).unwrap();
        let _ = tcp.write_all(b"\x16\x03\x01garbage without any structure\r\n\r\n");
    }

    assert!(sipline.is_running());
    assert!(sipline.log().contains("unparsable SIP"), "garbage is logged");
    // the other lines keep working: the existing one answers, a new one registers
    assert_eq!(first.request("ping", json!({})).await["result"], json!({}));
    let (_second, _) = Browser::registered(&sipline.ws_url()).await;
    pbx.wait_users(WAIT, |u| u.len() == 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_over_tcp() {
    let slot = Slot::new(8);
    let pbx = Pbx::start(slot.pbx);
    let config = base_config(slot).replace("[sip]\n", "[sip]\ntransport = \"tcp\"\n") + &pool_range(885, 885);
    let sipline = Sipline::start(&config);
    let (b, _) = Browser::registered(&sipline.ws_url()).await;
    pbx.wait_users(WAIT, |u| u == ["885"]);
    assert!(pbx.dump().contains("transport=tcp"), "{}", pbx.dump());
    b.close().await;
    pbx.wait_users(Duration::from_secs(2), |u| u.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_enforced_when_configured() {
    let slot = Slot::new(9);
    let _pbx = Pbx::start(slot.pbx);
    let config = base_config(slot) + &pool_range(886, 886);
    let sipline = Sipline::start_with_env(&config, &[("SIPLINE_HTTP_TOKENS", "a-long-enough-token")]);
    let err = tokio_tungstenite::connect_async(sipline.ws_url())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
    let url = format!("{}?token=a-long-enough-token", sipline.ws_url());
    Browser::registered(&url).await;
}

#[test]
fn refuses_non_loopback_without_tokens_and_bad_configs() {
    let run = |config: &str, args: &[&str]| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, config).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sipline"))
            .arg("--config")
            .arg(&path)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run("[http]\nlisten = \"0.0.0.0:18099\"\n", &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("tokens"), "{err}");
    let (code, err) = run("[sip]\ntransport = \"carrier-pigeon\"\n", &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("sip.transport"), "{err}");
    let (code, _) = run(
        "[http]\nlisten = \"0.0.0.0:18099\"\n",
        &["--insecure", "--check-config"],
    );
    assert_eq!(code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_https_when_a_certificate_is_configured() {
    let slot = Slot::new(10);
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let ok = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap()
        .status
        .success();
    assert!(ok, "openssl made a certificate");
    let config = base_config(slot).replace(
        "[sip]\n",
        &format!(
            "tls_cert = \"{}\"\ntls_key = \"{}\"\n\n[sip]\n",
            cert.display(),
            key.display()
        ),
    );
    let sipline = Sipline::start(&config);
    let https = std::process::Command::new("curl")
        .args(["-sk", "-D", "-", &format!("https://{}/", sipline.http)])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&https.stdout);
    assert!(text.starts_with("HTTP/") && text.contains("200"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("content-security-policy"),
        "{text}"
    );
    assert!(text.contains("<!doctype html>"), "the phone page over TLS");
    let plain = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://{}/", sipline.http),
        ])
        .output()
        .unwrap();
    assert_ne!(
        String::from_utf8_lossy(&plain.stdout),
        "200",
        "no plain HTTP on a TLS listener"
    );
}
