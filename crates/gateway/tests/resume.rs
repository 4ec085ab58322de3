//! Issue 15, the gateway's side: a session whose WebSocket went away without a close
//! (lease, line, call) waits `http.resume_window` for its browser to come back with its
//! resume token; the far end notices nothing. Tokens are single use and never lead to
//! another session. WebSocket clients as browsers, a real Kamailio and sipp.
//!
//! Slots 140–149 (Kamailio 17400+, HTTP 18140+), sipp media 35400+.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// Kamailio, a sipline with accounts 880–881 and this resume window, and a sipp far end
/// (1001) that answers, echoes RTP and waits for our BYE.
fn lab(n: u16, window: f64) -> (Slot, Pbx, Sipline, Sipp) {
    lab_with(n, window, "uas_answer_wait_bye", &[])
}

/// The same with another far-end scenario.
fn lab_with(n: u16, window: f64, scenario: &str, args: &[&str]) -> (Slot, Pbx, Sipline, Sipp) {
    let slot = Slot::new(n);
    let pbx = Pbx::start(slot.pbx);
    let sipline = Sipline::start(&config(n, window, ""));
    let (sip, media) = (slot.pbx + 5, 35400 + (n - 140) * 10);
    Sipp::register(slot.pbx, sip, media, "1001", "secret");
    let mut all = vec!["-s", "1001"];
    all.extend_from_slice(args);
    let sipp = Sipp::spawn(scenario, slot.pbx, sip, media, &all);
    (slot, pbx, sipline, sipp)
}

/// sipline of slot `n`: accounts 880–881, this resume window, `media` as extra keys of
/// the [media] section.
fn config(n: u16, window: f64, media: &str) -> String {
    let rtp = 47500 + (n - 140) * 20;
    base_config(Slot::new(n)).replace(
        "[http]\n",
        &format!("[http]\nresume_window = {window}\nws_idle_timeout = 120\nws_ping_interval = 1\n"),
    ) + &format!(
        "\n[pool]\ndomain = \"127.0.0.1\"\nrange = {{ from = 880, to = 881 }}\n\n[media]\n{media}rtp_ports = \"{rtp}-{}\"\n",
        rtp + 19
    )
}

/// Kamailio's location table holds nobody but sipp (1001): no line of ours.
fn only_the_far_end(users: &[String]) -> bool {
    users.iter().all(|u| u == "1001")
}

/// Connects and waits for admission; returns the browser and its first notification.
async fn admitted(url: &str) -> (Browser, Value) {
    let mut b = Browser::connect(url).await;
    let first = b.wait_for("registrationStateChanged", |_| true, WAIT).await;
    (b, first)
}

fn resume_url(sipline: &Sipline, token: &Value) -> String {
    format!("{}?resume={}", sipline.ws_url(), token.as_str().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_websocket_gets_its_line_and_call_back_and_the_far_end_notices_nothing() {
    let (_slot, pbx, sipline, mut sipp) = lab(140, 10.0);
    let (mut b, hello) = admitted(&sipline.ws_url()).await;
    assert_eq!(hello["state"], "accepted");
    assert_eq!(hello["resumeWindow"], 10);
    let token = hello["resumeToken"].clone();
    assert_eq!(token.as_str().map(str::len), Some(64), "{hello}");
    let user = b.wait_for("sipUserNameReceived", |_| true, WAIT).await["user"].clone();
    b.wait_line("registered", WAIT).await;
    let r = b.request("call", json!({"number": "1001"})).await;
    let call_id = r["result"]["callId"].clone();
    wait_call_state(&mut b, "inCall", WAIT).await;

    // the connection dies without a close (a reset): the session waits
    b.reset();
    sipline
        .wait_metrics(WAIT, |m| m["sipline_sessions_away"] == 1.0)
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sipp.received("BYE"), 0, "the far end noticed nothing");
    assert!(
        pbx.registered_users()
            .contains(&user.as_str().unwrap().to_owned()),
        "still registered"
    );

    // the browser comes back with its token
    let mut again = Browser::connect(&resume_url(&sipline, &token)).await;
    let resumed = again.wait_for("registrationStateChanged", |_| true, WAIT).await;
    assert_eq!(resumed["state"], "resumed", "{resumed}");
    let new_token = resumed["resumeToken"].clone();
    assert!(
        new_token.is_string() && new_token != token,
        "a new token: {resumed}"
    );
    let name = again.wait_for("sipUserNameReceived", |_| true, WAIT).await;
    assert_eq!(name["user"], user);
    let line = again.wait_for("phoneLineStateChanged", |_| true, WAIT).await;
    assert_eq!(line["state"], "registered");
    let call = again.wait_for("callStateChanged", |_| true, WAIT).await;
    assert_eq!(call["callId"], call_id);
    assert_eq!(call["state"], "inCall");
    let state = again.request("getState", json!({})).await;
    assert_eq!(state["result"]["call"]["state"], "inCall", "{state}");
    let m = sipline.metrics().await;
    assert_eq!(m["sipline_sessions_resumed_total"], 1.0);
    assert_eq!(m["sipline_sessions_away"], 0.0);

    // once the browser has answered a ping on the new connection (every second here),
    // the used token leads nowhere: an ordinary newcomer, on the other account
    while again.next(Duration::from_millis(1500)).await.is_some() {}
    let (mut other, first) = admitted(&resume_url(&sipline, &token)).await;
    assert_eq!(first["state"], "accepted", "{first}");
    let other_user = other.wait_for("sipUserNameReceived", |_| true, WAIT).await["user"].clone();
    assert_ne!(other_user, user);
    other.close().await;

    // the resumed session is the session: hanging up sends the far end its BYE
    let r = again.request("hangUp", json!({})).await;
    assert!(r.get("error").is_none(), "{r}");
    assert_eq!(sipp.wait_async(WAIT).await, Some(0), "{}", sipp.messages());
    again.close().await;
    pbx.wait_users(WAIT, only_the_far_end);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_reconnect_in_the_window_the_call_ends_and_the_account_is_freed() {
    let (_slot, pbx, sipline, mut sipp) = lab(141, 2.0);
    let (mut b, user) = Browser::registered(&sipline.ws_url()).await;
    let r = b.request("call", json!({"number": "1001"})).await;
    assert!(r["result"]["callId"].is_string(), "{r}");
    wait_call_state(&mut b, "inCall", WAIT).await;
    let t0 = Instant::now();
    b.reset();
    assert_eq!(
        sipp.wait_async(WAIT).await,
        Some(0),
        "the far end got its BYE: {}",
        sipp.messages()
    );
    let ended = t0.elapsed();
    println!("the call ended {ended:?} after the connection dropped (window 2 s)");
    assert!(
        ended >= Duration::from_secs(2),
        "not before the window: {ended:?}"
    );
    pbx.wait_users(WAIT, only_the_far_end);
    sipline
        .wait_metrics(WAIT, |m| {
            m["sipline_sessions"] == 0.0
                && m["sipline_pool_leased"] == 0.0
                && m["sipline_sessions_away"] == 0.0
        })
        .await;
    // and the account is free for the next browser
    let (_next, next_user) = Browser::registered(&sipline.ws_url()).await;
    assert_eq!(next_user, user);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessed_reused_and_expired_tokens_never_yield_another_sessions_line() {
    let (_slot, _pbx, sipline, _sipp) = lab(142, 3.0);
    let (mut a, hello) = admitted(&sipline.ws_url()).await;
    let token_a = hello["resumeToken"].clone();
    let user_a = a.wait_for("sipUserNameReceived", |_| true, WAIT).await["user"].clone();
    a.wait_line("registered", WAIT).await;
    a.reset();
    sipline
        .wait_metrics(WAIT, |m| m["sipline_sessions_away"] == 1.0)
        .await;

    // a guessed token, while A's session waits: an ordinary admission, the other account
    let guess = json!("0123456789abcdef".repeat(4));
    let (mut g, first) = admitted(&resume_url(&sipline, &guess)).await;
    assert_eq!(first["state"], "accepted", "{first}");
    let user_g = g.wait_for("sipUserNameReceived", |_| true, WAIT).await["user"].clone();
    assert_ne!(user_g, user_a, "never A's line");

    // A comes back; until it answers a ping on the new connection its old token still leads back
    // to it (our hello with the new token may have been lost on the way)
    let mut lost_hello = Browser::connect(&resume_url(&sipline, &token_a)).await;
    let resumed = lost_hello
        .wait_for("registrationStateChanged", |_| true, WAIT)
        .await;
    assert_eq!(resumed["state"], "resumed");
    let unused = resumed["resumeToken"].clone();
    let mut a2 = Browser::connect(&resume_url(&sipline, &token_a)).await;
    let resumed = a2.wait_for("registrationStateChanged", |_| true, WAIT).await;
    assert_eq!(resumed["state"], "resumed", "the old token, again: {resumed}");
    assert_eq!(
        a2.wait_for("sipUserNameReceived", |_| true, WAIT).await["user"],
        user_a
    );
    let token_a2 = resumed["resumeToken"].clone();
    // once A answers a ping on it (every second here), the old token is used up: the
    // pool is full, so an ordinary newcomer is refused, and certainly not given A's
    // session; so is the token of the hello A never took
    let r = a2.request("getState", json!({})).await;
    assert!(r.get("error").is_none(), "{r}");
    while a2.next(Duration::from_millis(1500)).await.is_some() {}
    let (_r, first) = admitted(&resume_url(&sipline, &token_a)).await;
    assert_eq!(first["state"], "connectionLimit", "{first}");
    let (_r, first) = admitted(&resume_url(&sipline, &unused)).await;
    assert_eq!(first["state"], "connectionLimit", "{first}");

    // a token presented while its session still has its browser: the newer connection
    // takes the session over (the browser came back before we noticed it had gone)
    let mut a3 = Browser::connect(&resume_url(&sipline, &token_a2)).await;
    let taken = a3.wait_for("registrationStateChanged", |_| true, WAIT).await;
    assert_eq!(taken["state"], "resumed");
    assert_eq!(
        a3.wait_for("sipUserNameReceived", |_| true, WAIT).await["user"],
        user_a
    );
    let t0 = Instant::now();
    while a2.next(WAIT).await.is_some() {}
    assert!(t0.elapsed() < WAIT, "the older connection is closed");
    let token_a3 = taken["resumeToken"].clone();

    // expired: A goes away and stays away past the window; its token then leads nowhere
    a3.reset();
    sipline
        .wait_metrics(Duration::from_secs(20), |m| {
            m["sipline_sessions"] == 1.0 && m["sipline_sessions_away"] == 0.0
        })
        .await;
    let (mut late, first) = admitted(&resume_url(&sipline, &token_a3)).await;
    assert_eq!(first["state"], "accepted", "a new session, not A's: {first}");
    late.wait_line("registered", WAIT).await;
    let state = late.request("getState", json!({})).await;
    assert!(state["result"]["call"].is_null(), "{state}");
    assert!(sipline.metrics().await["sipline_refused_total{limit=\"resume_token\"}"] >= 4.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_ended_while_the_browser_was_away_is_reported_on_its_return() {
    let (_slot, pbx, sipline, mut sipp) = lab_with(143, 20.0, "uas_answer_then_bye", &["-d", "1500"]);
    let (mut b, hello) = admitted(&sipline.ws_url()).await;
    let token = hello["resumeToken"].clone();
    b.wait_line("registered", WAIT).await;
    let r = b.request("call", json!({"number": "1001"})).await;
    let call_id = r["result"]["callId"].clone();
    wait_call_state(&mut b, "inCall", WAIT).await;
    b.reset();
    // the far end hangs up while nobody listens
    assert_eq!(sipp.wait_async(WAIT).await, Some(0), "{}", sipp.messages());
    let mut again = Browser::connect(&resume_url(&sipline, &token)).await;
    let resumed = again.wait_for("registrationStateChanged", |_| true, WAIT).await;
    assert_eq!(resumed["state"], "resumed", "{resumed}");
    let ended = again
        .wait_for("callStateChanged", |p| p["callId"] == call_id, WAIT)
        .await;
    assert_eq!(ended["state"], "completed", "told how the call ended: {ended}");
    let state = again.request("getState", json!({})).await;
    assert!(state["result"]["call"].is_null(), "{state}");
    again.close().await;
    pbx.wait_users(WAIT, only_the_far_end);
}

/// The browser's media leg is silent while it is away: that is no media timeout (the
/// resume window decides), even when the timeout is shorter than the window. Once the
/// browser is back its leg is watched again: this one (a WebSocket client, no WebRTC)
/// stays silent, and the call ends by media timeout a timeout after the return.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_away_is_not_a_media_timeout_but_a_silent_one_back_is() {
    let slot = Slot::new(144);
    let pbx = Pbx::start(slot.pbx);
    let sipline = Sipline::start(&config(144, 20.0, "timeout = 2\n"));
    // a far end that talks all the time (baresip, 1002): only the browser's leg is silent
    let phone = Phone::start(
        "1002",
        "secret",
        slot.pbx + 5,
        slot.pbx,
        (35440, 35449),
        "auto",
        None,
    );
    let (mut b, hello) = admitted(&sipline.ws_url()).await;
    let token = hello["resumeToken"].clone();
    b.wait_line("registered", WAIT).await;
    let r = b.request("call", json!({"number": "1002"})).await;
    let call_id = r["result"]["callId"].clone();
    wait_call_state(&mut b, "inCall", WAIT).await;
    b.reset();
    // away for twice the media timeout
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        !phone.log().contains("session closed"),
        "the call ended while its browser was away"
    );
    let mut again = Browser::connect(&resume_url(&sipline, &token)).await;
    let resumed = again.wait_for("registrationStateChanged", |_| true, WAIT).await;
    assert_eq!(resumed["state"], "resumed", "{resumed}");
    let back = Instant::now();
    let live = again
        .wait_for("callStateChanged", |p| p["callId"] == call_id, WAIT)
        .await;
    assert_eq!(live["state"], "inCall", "the call lived through it: {live}");
    let ended = again
        .wait_for("callStateChanged", |p| p["callId"] == call_id, WAIT)
        .await;
    let after = back.elapsed();
    println!("ended {after:?} after the return: {ended}");
    assert_eq!(ended["state"], "completed", "{ended}");
    let reason = ended["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("the browser's media"), "{ended}");
    assert!(
        after >= Duration::from_millis(1800),
        "counted from the return: {after:?}"
    );
    again.close().await;
    pbx.wait_users(WAIT, |u| u == ["1002"]);
    let log = phone.log();
    assert!(
        log.contains("session closed") || log.contains("terminated (duration"),
        "the far end got no BYE:\n{log}"
    );
}
