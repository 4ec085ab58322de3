//! Chaos with real peers (issue 11): Kamailio killed (-9) in the middle of a call and
//! started again, the far end (baresip) killed mid-call, the browser gone mid-call. Each
//! time the call ends cleanly and nothing is left behind: no call, dialog, transaction,
//! RTP port, lease or contact.
//!
//!   cargo test -p sipline --test chaos -- --nocapture

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

/// Kamailio and the config for sipline on slot `n` (accounts 880–881); `sip` and `media`
/// are extra keys for those sections.
fn lab(n: u16, sip: &str, media: &str) -> (Slot, Pbx, String) {
    let slot = Slot::new(n);
    let pbx = Pbx::start(slot.pbx);
    let rtp = 49200 + (n - 100) * 20;
    let config = base_config(slot).replace("[sip]\n", &format!("[sip]\n{sip}\n"))
        + "\n[pool]\ndomain = \"127.0.0.1\"\nrange = { from = 880, to = 881 }\n"
        + &format!("\n[media]\nrtp_ports = \"{rtp}-{}\"\n{media}\n", rtp + 19);
    // a browser that vanishes ends its session at once here (resuming: tests/resume.rs)
    (slot, pbx, no_resume(&config))
}

/// A sipp far end as 1001 (echoing RTP), answering and waiting for our BYE.
fn sipp_far_end(slot: Slot) -> Sipp {
    let (sip, media) = (slot.pbx + 5, 34000 + (slot.http - 18000 - 90) * 10);
    Sipp::register(slot.pbx, sip, media, "1001", "secret");
    Sipp::spawn("uas_answer_wait_bye", slot.pbx, sip, media, &["-s", "1001"])
}

/// Nothing of any call left, and only the connected browsers' own ports in use.
async fn no_call_left(sipline: &Sipline, timeout: Duration) {
    sipline
        .wait_metrics(timeout, |m| {
            m["sipline_rtp_ports_in_use"] == m["sipline_sessions"]
                && m["sipline_sip_calls"] == 0.0
                && m["sipline_sip_dialogs"] == 0.0
                && m["sipline_sip_client_transactions"] == 0.0
                && m["sipline_sip_server_transactions"] == 0.0
        })
        .await;
}

async fn in_call_with(b: &mut Browser, number: &str) {
    let r = b.request("call", json!({ "number": number })).await;
    assert!(r["result"]["callId"].is_string(), "{r}");
    wait_call_state(b, "inCall", WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kamailio_killed_mid_call_and_started_again() {
    // a WebSocket-only browser has no media leg: no media timeout for this one
    let (slot, mut pbx, config) = lab(
        100,
        "keepalive_interval = 1\nkeepalive_timeout = 1",
        "timeout = 0",
    );
    let sipline = Sipline::start(&config);
    let mut sipp = sipp_far_end(slot);
    let (mut b, user) = Browser::registered(&sipline.ws_url()).await;
    in_call_with(&mut b, "1001").await;

    pbx.kill9();
    b.wait_for("phoneLineStateChanged", |p| p["code"] == 503, WAIT)
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    pbx.start_again();
    // the keepalive sees it back and the line registers again, its call untouched
    b.wait_line("registered", Duration::from_secs(15)).await;
    pbx.wait_users(WAIT, |u| u.contains(&user));
    assert_eq!(b.request("ping", json!({})).await["result"], json!({}));

    // the call ends through the restarted proxy (record-routed, so no lookup needed)
    b.request("hangUp", json!({})).await;
    wait_call_state(&mut b, "completed", WAIT).await;
    assert_eq!(sipp.wait_async(WAIT).await, Some(0), "sipp: {}", sipp.messages());
    // (OPTIONS keepalives every second always leave a few client transactions)
    sipline
        .wait_metrics(WAIT, |m| {
            m["sipline_sip_calls"] == 0.0
                && m["sipline_sip_dialogs"] == 0.0
                && m["sipline_sip_server_transactions"] == 0.0
                && m["sipline_rtp_ports_in_use"] == m["sipline_sessions"]
        })
        .await;
    b.close().await;
    sipline
        .wait_metrics(WAIT, |m| {
            m["sipline_pool_leased"] == 0.0 && m["sipline_rtp_ports_in_use"] == 0.0
        })
        .await;
    pbx.wait_users(WAIT, |u| !u.contains(&user));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_far_end_killed_mid_call_ends_it_by_media_timeout() {
    if !netns::inside() {
        return netns::rerun("the_far_end_killed_mid_call_ends_it_by_media_timeout");
    }
    let (slot, pbx, config) = lab(101, "", "timeout = 3");
    let sipline = Sipline::start(&config);
    let phone = Phone::start(
        "1002",
        "secret",
        slot.pbx + 5,
        slot.pbx,
        (49400, 49419),
        "auto",
        None,
    );
    let env = [
        ("SIPLINE_URL", format!("http://{}/", sipline.http)),
        ("ROLE", "caller".into()),
        ("NUMBER", "1002".into()),
        ("LISTEN_MS", "500".into()),
        ("HANGUP", "0".into()),
        ("END_WITHIN_MS", "30000".into()),
    ];
    let page =
        tokio::spawn(async move { run_browser_script("audio.mjs", &env, Duration::from_secs(90)).await });
    assert!(
        phone.wait("established", 40).await,
        "baresip answered: {}",
        phone.log()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    phone.kill9();
    let (code, out, result) = page.await.unwrap();
    assert_eq!(code, Some(0), "{out}\n{}", sipline.log());
    let ended = &result.unwrap()["ended"];
    println!("with baresip killed the call ended: {ended}");
    let reason = ended["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("no audio from the far end for 3 s"), "{reason}");
    // the BYE to the dead phone times out; then nothing is left
    no_call_left(&sipline, Duration::from_secs(45)).await;
    sipline
        .wait_metrics(WAIT, |m| {
            m["sipline_pool_leased"] == 0.0 && m["sipline_rtp_ports_in_use"] == 0.0
        })
        .await;
    pbx.wait_users(WAIT, |u| !u.iter().any(|u| u.starts_with("88")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_gone_mid_call_ends_it() {
    let (slot, pbx, config) = lab(102, "", "");
    let sipline = Sipline::start(&config);
    let mut sipp = sipp_far_end(slot);
    let (mut b, user) = Browser::registered(&sipline.ws_url()).await;
    in_call_with(&mut b, "1001").await;
    let_the_ack_through().await;
    // the browser process dies: its socket is reset, no close frame, no hang-up
    b.reset();
    assert_eq!(
        sipp.wait_async(WAIT).await,
        Some(0),
        "sipp got its BYE: {}",
        sipp.messages()
    );
    no_call_left(&sipline, WAIT).await;
    sipline
        .wait_metrics(WAIT, |m| {
            m["sipline_pool_leased"] == 0.0 && m["sipline_sessions"] == 0.0
        })
        .await;
    pbx.wait_users(WAIT, |u| !u.contains(&user));
}
