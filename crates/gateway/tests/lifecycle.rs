//! Issue 11: the gateway's life with real peers: page reloads on a full pool, calls whose
//! media dies, overload and drain, and peers that die mid-call.

mod common;

use std::time::Duration;

use common::*;

fn pool_range(from: u32, to: u32) -> String {
    format!("\n[pool]\ndomain = \"127.0.0.1\"\nrange = {{ from = {from}, to = {to} }}\n")
}

/// Kamailio and the config for a sipline on slot `n` with accounts `from..=to`; `media`
/// are extra keys of the [media] section.
fn lab(n: u16, from: u32, to: u32, media: &str) -> (Slot, Pbx, String) {
    let slot = Slot::new(n);
    let pbx = Pbx::start(slot.pbx);
    let rtp = 49000 + (n - 90) * 20;
    let config = base_config(slot)
        + &pool_range(from, to)
        + &format!("\n[media]\nrtp_ports = \"{rtp}-{}\"\n{media}", rtp + 19);
    // a reload's new page here comes without a resume token (resuming: tests/resume.rs)
    (slot, pbx, no_resume(&config))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_reload_on_a_full_pool_gets_its_line_back() {
    let (_slot, pbx, config) = lab(90, 890, 890, "");
    let sipline = Sipline::start(&config);
    for i in 0..20 {
        let (b, user) = Browser::registered(&sipline.ws_url()).await;
        assert_eq!(user, "890");
        // a reload: the old page goes, the new one comes at once, while the line of the
        // old one is still unregistering
        if i % 2 == 0 {
            b.close().await;
        } else {
            b.reset();
        }
        let mut again = Browser::connect(&sipline.ws_url()).await;
        let admitted = again.wait_for("registrationStateChanged", |_| true, WAIT).await;
        assert_eq!(admitted["state"], "accepted", "reload {i} was refused");
        again.wait_line("registered", WAIT).await;
        again.close().await;
    }
    pbx.wait_users(WAIT, |u| u.is_empty());
    // with the account held by a live session, a newcomer is refused at once
    let (_held, _) = Browser::registered(&sipline.ws_url()).await;
    let t0 = std::time::Instant::now();
    let mut late = Browser::connect(&sipline.ws_url()).await;
    let refused = late.wait_for("registrationStateChanged", |_| true, WAIT).await;
    assert_eq!(refused["state"], "connectionLimit");
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "refused after a moment, not the whole wait"
    );
}

/// sipp's SIP and media ports on this slot.
fn sipp_ports(slot: Slot) -> (u16, u16) {
    (slot.pbx + 5, 34000 + (slot.http - 18000 - 90) * 10)
}

/// A sipp far end as 1001, answering and waiting for our BYE; `echo` false: it never
/// sends a single RTP packet.
fn far_end(slot: Slot, echo: bool) -> Sipp {
    let (sip, media) = sipp_ports(slot);
    Sipp::register(slot.pbx, sip, media, "1001", "secret");
    let env: &[(&str, &str)] = if echo { &[] } else { &[("SIPP_ECHO", "0")] };
    Sipp::spawn_with_env("uas_answer_wait_bye", slot.pbx, sip, media, &["-s", "1001"], env)
}

/// Waits until nothing of any call is left and only connected browsers hold ports.
async fn settled(sipline: &Sipline, timeout: Duration) {
    sipline
        .wait_metrics(timeout, |m| {
            m["sipline_rtp_ports_in_use"] == m["sipline_sessions"]
                && m["sipline_sip_calls"] == 0.0
                && m["sipline_sip_dialogs"] == 0.0
                && m["sipline_sip_client_transactions"] == 0.0
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_far_end_is_hung_up_by_the_media_timeout() {
    if !netns::inside() {
        return netns::rerun("a_silent_far_end_is_hung_up_by_the_media_timeout");
    }
    let (slot, _pbx, config) = lab(91, 880, 881, "timeout = 3\n");
    let sipline = Sipline::start(&config);
    let mut sipp = far_end(slot, false);
    let env = [
        ("SIPLINE_URL", format!("http://{}/", sipline.http)),
        ("ROLE", "caller".into()),
        ("NUMBER", "1001".into()),
        ("LISTEN_MS", "300".into()),
        ("HANGUP", "0".into()),
        ("END_WITHIN_MS", "20000".into()),
    ];
    let (code, out, result) = run_browser_script("audio.mjs", &env, Duration::from_secs(90)).await;
    assert_eq!(code, Some(0), "{out}\n{}", sipline.log());
    let ended = &result.unwrap()["ended"];
    println!("the call ended: {ended}");
    assert_eq!(ended["state"], "completed");
    let reason = ended["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("no audio from the far end for 3 s"), "{reason}");
    let after = ended["afterAnswerMs"].as_f64().unwrap();
    assert!(
        (2500.0..10_000.0).contains(&after),
        "ended {after} ms after the answer"
    );
    assert_eq!(
        sipp.wait_async(WAIT).await,
        Some(0),
        "sipp got its BYE: {}",
        sipp.messages()
    );
    settled(&sipline, WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_whose_browser_media_is_gone_is_hung_up_while_the_websocket_lives() {
    // a WebSocket-only client: its WebRTC leg never says a word
    let (slot, _pbx, config) = lab(92, 880, 881, "timeout = 3\n");
    let sipline = Sipline::start(&config);
    let mut sipp = far_end(slot, true);
    let (mut b, _) = Browser::registered(&sipline.ws_url()).await;
    let r = b.request("call", serde_json::json!({"number": "1001"})).await;
    assert!(r["result"]["callId"].is_string(), "{r}");
    wait_call_state(&mut b, "inCall", WAIT).await;
    let t0 = std::time::Instant::now();
    let ended = wait_call_state(&mut b, "completed", WAIT).await;
    println!("ended after {:?}: {ended}", t0.elapsed());
    let reason = ended["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("the browser's media has been gone for 3 s"),
        "{reason}"
    );
    assert_eq!(
        sipp.wait_async(WAIT).await,
        Some(0),
        "sipp got its BYE: {}",
        sipp.messages()
    );
    // the session itself lives on
    assert_eq!(
        b.request("ping", serde_json::json!({})).await["result"],
        serde_json::json!({})
    );
    settled(&sipline, WAIT).await;
}

/// Reads until the server's close frame: its code and reason.
async fn close_frame(b: &mut Browser, within: Duration) -> Option<(u16, String)> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
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
async fn sessions_and_calls_per_node_are_limited_with_a_clear_refusal() {
    let (slot, _pbx, config) = lab(93, 880, 883, "");
    let config = config.replace("[http]\n", "[http]\nmax_sessions = 2\n") + "\n[calls]\nmax_concurrent = 1\n";
    let sipline = Sipline::start(&config);
    let mut sipp = far_end(slot, true);
    let (mut a, _) = Browser::registered(&sipline.ws_url()).await;
    let (mut b, _) = Browser::registered(&sipline.ws_url()).await;
    assert_eq!(
        sipline.get("/readyz").await.0,
        503,
        "at the session limit: not ready"
    );
    let mut c = Browser::connect(&sipline.ws_url()).await;
    let refused = c.wait_for("registrationStateChanged", |_| true, WAIT).await;
    assert_eq!(refused["state"], "connectionLimit");
    let (code, reason) = close_frame(&mut c, WAIT).await.expect("closed");
    assert_eq!((code, reason.as_str()), (1013, "session limit of this gateway"));
    // one call at a time on this node
    let r = a.request("call", serde_json::json!({"number": "1001"})).await;
    assert!(r["result"]["callId"].is_string(), "{r}");
    wait_call_state(&mut a, "inCall", WAIT).await;
    let r = b.request("call", serde_json::json!({"number": "1001"})).await;
    assert_eq!(r["error"]["code"], -32001, "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("limit of concurrent calls"),
        "{r}"
    );
    let_the_ack_through().await;
    a.request("hangUp", serde_json::json!({})).await;
    assert_eq!(sipp.wait_async(WAIT).await, Some(0), "{}", sipp.messages());
    let m = sipline.metrics().await;
    assert_eq!(m["sipline_refused_total{limit=\"sessions\"}"], 1.0);
    assert_eq!(m["sipline_refused_total{limit=\"calls\"}"], 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_idle_sessions_at_once_and_busy_ones_after_their_call() {
    let (slot, pbx, config) = lab(94, 880, 883, "");
    let mut sipline = Sipline::start(&config);
    let mut sipp = far_end(slot, true);
    let (mut idle, _) = Browser::registered(&sipline.ws_url()).await;
    let (mut busy, _) = Browser::registered(&sipline.ws_url()).await;
    let r = busy.request("call", serde_json::json!({"number": "1001"})).await;
    assert!(r["result"]["callId"].is_string(), "{r}");
    wait_call_state(&mut busy, "inCall", WAIT).await;
    assert_eq!(sipline.get("/readyz").await, (200, "ready\n".into()));

    sipline.signal("TERM");
    let (code, reason) = close_frame(&mut idle, WAIT)
        .await
        .expect("the idle session closed");
    assert_eq!((code, reason.as_str()), (1012, "draining: connect again"));
    assert_eq!(sipline.get("/readyz").await, (503, "draining\n".into()));
    assert_eq!(sipline.get("/healthz").await.0, 200);
    let mut late = Browser::connect(&sipline.ws_url()).await;
    let (code, _) = close_frame(&mut late, WAIT)
        .await
        .expect("a newcomer is turned away");
    assert_eq!(code, 1012);
    // the call goes on, and its session goes when it ends
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        busy.request("ping", serde_json::json!({})).await["result"],
        serde_json::json!({})
    );
    busy.request("hangUp", serde_json::json!({})).await;
    let (code, _) = close_frame(&mut busy, WAIT).await.expect("closed after the call");
    assert_eq!(code, 1012);
    assert_eq!(sipp.wait_async(WAIT).await, Some(0), "{}", sipp.messages());
    let status = sipline.wait_exit(WAIT).expect("the gateway exited by itself");
    assert!(status.success(), "{status}");
    pbx.wait_users(WAIT, |u| u.iter().all(|u| u == "1001"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_timeout_ends_the_calls_that_remain() {
    let (slot, pbx, config) = lab(95, 880, 883, "");
    let config = config.replace("[http]\n", "[http]\ndrain_timeout = 2\n");
    let mut sipline = Sipline::start(&config);
    let mut sipp = far_end(slot, true);
    let (mut busy, _) = Browser::registered(&sipline.ws_url()).await;
    let r = busy.request("call", serde_json::json!({"number": "1001"})).await;
    assert!(r["result"]["callId"].is_string(), "{r}");
    wait_call_state(&mut busy, "inCall", WAIT).await;
    let t0 = std::time::Instant::now();
    sipline.signal("TERM");
    // nobody hangs up: the drain timeout does it, sipp gets its BYE, the lines go
    assert_eq!(sipp.wait_async(WAIT).await, Some(0), "{}", sipp.messages());
    let status = sipline.wait_exit(WAIT).expect("the gateway exited by itself");
    println!("exited {:?} after SIGTERM", t0.elapsed());
    assert!(status.success(), "{status}");
    assert!(t0.elapsed() >= Duration::from_secs(2));
    pbx.wait_users(WAIT, |u| u.iter().all(|u| u == "1001"));
}
