//! Issue 3 against real peers: browsers drive calls through /api/v1/ws; Kamailio
//! record-routes and challenges; sipp plays the far end. Each case is judged from both
//! sides: sipline's notifications and what sipp saw (its exit code and messages).

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// Ports of one call test: the lab slot plus sipp's.
struct CallLab {
    slot: Slot,
    pbx: Pbx,
    sipline: Sipline,
}

impl CallLab {
    fn start(n: u16) -> CallLab {
        CallLab::start_with(n, "")
    }

    /// `extra` goes into the [sip] section.
    fn start_with(n: u16, extra_sip: &str) -> CallLab {
        CallLab::start_with_sections(n, extra_sip, "")
    }

    /// `extra_sip` and `extra_http` go into those sections.
    fn start_with_sections(n: u16, extra_sip: &str, extra_http: &str) -> CallLab {
        CallLab::start_with_config(n, extra_sip, extra_http, "")
    }

    /// As above, and `more` (whole sections) at the end of the file.
    fn start_with_config(n: u16, extra_sip: &str, extra_http: &str, more: &str) -> CallLab {
        let slot = Slot::new(n);
        let pbx = Pbx::start(slot.pbx);
        let rtp = 40000 + n * 20;
        let config = base_config(slot)
            .replace("[sip]\n", &format!("[sip]\n{extra_sip}"))
            .replace("[http]\n", &format!("[http]\n{extra_http}\n"))
            + &format!(
                "\n[pool]\ndomain = \"127.0.0.1\"\nrange = {{ from = 880, to = 881 }}\n\n[media]\nrtp_ports = \"{rtp}-{}\"\n",
                rtp + 19
            )
            + more;
        // a browser that vanishes ends its session at once here (resuming: tests/resume.rs)
        let sipline = Sipline::start(&no_resume(&config));
        CallLab { slot, pbx, sipline }
    }

    /// sipp's SIP port and media port for far end `i` (0, 1 or 2; sipp binds the media
    /// port and the next three).
    fn far(&self, i: u16) -> (u16, u16) {
        let media = match i {
            0 | 1 => 30000 + self.slot.http % 1000 * 10 + i * 4,
            _ => 33000 + self.slot.http % 1000 * 10 + (i - 2) * 4,
        };
        (self.slot.pbx + 5 + i * 2, media)
    }

    /// A sipp UAS registered as `user`, running `scenario`.
    fn uas(&self, scenario: &str, user: &str, args: &[&str]) -> Sipp {
        self.uas_at(0, scenario, user, args)
    }

    /// The same as far end `i` (0 or 1).
    fn uas_at(&self, i: u16, scenario: &str, user: &str, args: &[&str]) -> Sipp {
        let (sip, media) = self.far(i);
        Sipp::register(self.slot.pbx, sip, media, user, "secret");
        let mut all = vec!["-s", user];
        all.extend_from_slice(args);
        Sipp::spawn(scenario, self.slot.pbx, sip, media, &all)
    }

    /// A sipp UAC calling `callee` as lab user 1000.
    fn uac(&self, i: u16, scenario: &str, callee: &str, args: &[&str]) -> Sipp {
        self.uac_as(i, scenario, callee, "1000", args)
    }

    /// A sipp UAC calling `callee` as lab user `caller` (1000 to 1003).
    fn uac_as(&self, i: u16, scenario: &str, callee: &str, caller: &str, args: &[&str]) -> Sipp {
        let (sip, media) = self.far(i);
        let mut all = vec![
            "-s", callee, "-key", "caller", caller, "-au", caller, "-ap", "secret",
        ];
        all.extend_from_slice(args);
        Sipp::spawn(scenario, self.slot.pbx, sip, media, &all)
    }

    async fn browser(&self) -> (Browser, String) {
        Browser::registered(&self.sipline.ws_url()).await
    }

    /// Waits until nothing of any call is left (ports, dialogs, calls, transactions):
    /// the only RTP ports still held are the connected browsers' own WebRTC legs.
    async fn settled(&self) {
        self.sipline
            .wait_metrics(Duration::from_secs(15), |m| {
                m["sipline_rtp_ports_in_use"] == m["sipline_sessions"]
                    && m["sipline_sip_calls"] == 0.0
                    && m["sipline_sip_dialogs"] == 0.0
                    && m["sipline_sip_client_transactions"] == 0.0
            })
            .await;
    }
}

/// Hangs the browser's call up and checks the sipp far end finished its scenario;
/// returns what it exchanged.
async fn hang_up_and_check(b: &mut Browser, far: &mut Sipp) -> String {
    b.request("hangUp", json!({})).await;
    wait_call_state(b, "completed", WAIT).await;
    assert_eq!(
        far.wait_async(WAIT).await,
        Some(0),
        "sipp: {}\n{}",
        far.errors(),
        far.messages()
    );
    far.messages()
}

/// Waits (at most WAIT) until sipp has received `n` messages starting with `start_line`.
async fn wait_received(far: &Sipp, start_line: &str, n: usize) {
    let t0 = std::time::Instant::now();
    while far.received(start_line) < n && t0.elapsed() < WAIT {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn call(b: &mut Browser, number: &str) -> String {
    let r = b.request("call", json!({ "number": number })).await;
    r["result"]["callId"]
        .as_str()
        .unwrap_or_else(|| panic!("call refused: {r}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn far_end_answers_then_hangs_up() {
    let lab = CallLab::start(20);
    let mut uas = lab.uas("uas_answer_then_bye", "1001", &["-d", "1500"]);
    let (mut b, _) = lab.browser().await;
    let id = call(&mut b, "1001").await;
    let dialing = wait_call_state(&mut b, "dialing", WAIT).await;
    assert_eq!(dialing["callId"], id.as_str());
    wait_call_state(&mut b, "ringing", WAIT).await;
    wait_call_state(&mut b, "inCall", WAIT).await;
    wait_call_state(&mut b, "completed", WAIT).await;
    assert_eq!(uas.wait_async(WAIT).await, Some(0), "sipp: {}", uas.messages());
    assert_eq!(uas.received("ACK "), 1);
    lab.settled().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_hangs_up_an_established_call() {
    // one call per line: no call waiting
    let lab = CallLab::start_with_config(21, "", "", "\n[calls]\nper_line = 1\n");
    let mut uas = lab.uas("uas_answer_wait_bye", "1001", &[]);
    let (mut b, _) = lab.browser().await;
    call(&mut b, "1001").await;
    wait_call_state(&mut b, "inCall", WAIT).await;
    let state = b.request("getState", json!({})).await;
    assert_eq!(state["result"]["call"]["state"], "inCall");
    assert_eq!(state["result"]["call"]["peer"], "1001");
    // one call per line
    let again = b.request("call", json!({"number": "1002"})).await;
    assert_eq!(again["error"]["code"], -32000, "{again}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(b.request("hangUp", json!({})).await["result"], json!({}));
    wait_call_state(&mut b, "completed", WAIT).await;
    assert_eq!(uas.wait_async(WAIT).await, Some(0), "sipp: {}", uas.messages());
    assert_eq!(uas.received("BYE "), 1);
    let none = b.request("hangUp", json!({})).await;
    assert_eq!(none["error"]["code"], -32000, "hang up with no call: {none}");
    lab.settled().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_and_declined_far_ends() {
    let lab = CallLab::start(22);
    let (mut b, _) = lab.browser().await;
    for (scenario, state, code) in [("uas_busy", "busy", 486), ("uas_decline", "rejected", 603)] {
        let mut uas = lab.uas(scenario, "1001", &[]);
        call(&mut b, "1001").await;
        let p = wait_call_state(&mut b, state, WAIT).await;
        assert_eq!(p["code"], code);
        assert_eq!(
            uas.wait_async(WAIT).await,
            Some(0),
            "{scenario}: {}",
            uas.messages()
        );
        assert_eq!(uas.received("ACK "), 1, "{scenario}: the final response is ACKed");
    }
    lab.settled().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_cancels_while_the_far_end_rings() {
    let lab = CallLab::start(23);
    let mut uas = lab.uas("uas_ring_until_cancel", "1001", &[]);
    let (mut b, _) = lab.browser().await;
    call(&mut b, "1001").await;
    wait_call_state(&mut b, "ringing", WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(b.request("hangUp", json!({})).await["result"], json!({}));
    wait_call_state(&mut b, "cancelled", WAIT).await;
    assert_eq!(uas.wait_async(WAIT).await, Some(0), "sipp: {}", uas.messages());
    assert_eq!(uas.received("CANCEL "), 1);
    lab.settled().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ringing_then_early_media_then_answer() {
    let lab = CallLab::start(24);
    let mut uas = lab.uas("uas_early_media", "1001", &["-d", "1000"]);
    let (mut b, _) = lab.browser().await;
    call(&mut b, "1001").await;
    wait_call_state(&mut b, "ringing", WAIT).await;
    let early = wait_call_state(&mut b, "earlyMedia", WAIT).await;
    assert_eq!(early["code"], 183);
    wait_call_state(&mut b, "inCall", WAIT).await;
    let_the_ack_through().await;
    hang_up_and_check(&mut b, &mut uas).await;
    lab.settled().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_numbers_and_the_dial_policy() {
    let lab = CallLab::start(25);
    let (mut b, _) = lab.browser().await;
    // nobody registered as 1003: Kamailio says 404
    call(&mut b, "1003").await;
    let failed = wait_call_state(&mut b, "failed", WAIT).await;
    assert_eq!(failed["code"], 404);
    // numbers outside the policy never leave sipline
    for bad in [
        "1000@evil.example",
        "sip:1000@127.0.0.1",
        "12345678901234567890123456789012345",
        "",
    ] {
        let r = b.request("call", json!({ "number": bad })).await;
        assert_eq!(r["error"]["code"], -32602, "{bad}: {r}");
    }
    assert_eq!(
        lab.sipline.log().matches("placing call").count(),
        1,
        "only the 1003 call left sipline"
    );
    lab.settled().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_pbx_fails_the_call_after_timer_b() {
    let mut lab = CallLab::start_with(26, "keepalive_interval = 0\n");
    let (mut b, _) = lab.browser().await;
    lab.pbx.stop();
    call(&mut b, "1001").await;
    let failed = wait_call_state(&mut b, "failed", Duration::from_secs(40)).await;
    assert_eq!(failed["code"], 408);
    lab.settled().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incoming_call_accepted_then_caller_hangs_up() {
    let lab = CallLab::start(27);
    let (mut b, user) = lab.browser().await;
    // nothing rings yet
    let r = b.request("accept", json!({})).await;
    assert_eq!(r["error"]["code"], -32000);
    let mut uac = lab.uac(0, "uac_call_then_bye", &user, &["-d", "1500"]);
    let incoming = b.wait_for("incomingCall", |_| true, WAIT).await;
    assert_eq!(incoming["from"], "1000");
    wait_call_state(&mut b, "ringing", WAIT).await;
    assert_eq!(b.request("accept", json!({})).await["result"], json!({}));
    wait_call_state(&mut b, "inCall", WAIT).await;
    wait_call_state(&mut b, "completed", WAIT).await;
    assert_eq!(uac.wait_async(WAIT).await, Some(0), "sipp: {}", uac.messages());
    assert_eq!(uac.received("SIP/2.0 180"), 1);
    lab.settled().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incoming_call_rejected_and_cancelled() {
    let lab = CallLab::start(28);
    let (mut b, user) = lab.browser().await;

    let mut uac = lab.uac(0, "uac_call_expect_reject", &user, &[]);
    b.wait_for("incomingCall", |_| true, WAIT).await;
    assert_eq!(
        b.request("hangUp", json!({"code": 603})).await["result"],
        json!({})
    );
    wait_call_state(&mut b, "rejected", WAIT).await;
    assert_eq!(uac.wait_async(WAIT).await, Some(0), "sipp: {}", uac.messages());
    assert_eq!(uac.received("SIP/2.0 603"), 1);

    let mut uac = lab.uac(1, "uac_cancel", &user, &["-d", "800"]);
    b.wait_for("incomingCall", |_| true, WAIT).await;
    let cancelled = wait_call_state(&mut b, "cancelled", WAIT).await;
    assert_eq!(cancelled["code"], 487);
    assert_eq!(uac.wait_async(WAIT).await, Some(0), "sipp: {}", uac.messages());
    lab.settled().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_incoming_call_while_busy_gets_486() {
    // one call per line: no call waiting
    let lab = CallLab::start_with_config(29, "", "", "\n[calls]\nper_line = 1\n");
    let (mut b, user) = lab.browser().await;
    let mut first = lab.uac(0, "uac_call_wait_bye", &user, &[]);
    b.wait_for("incomingCall", |_| true, WAIT).await;
    b.request("accept", json!({})).await;
    wait_call_state(&mut b, "inCall", WAIT).await;
    let mut second = lab.uac(1, "uac_call_expect_reject", &user, &[]);
    assert_eq!(
        second.wait_async(WAIT).await,
        Some(0),
        "sipp: {}",
        second.messages()
    );
    assert_eq!(second.received("SIP/2.0 486"), 1);
    b.request("hangUp", json!({})).await;
    wait_call_state(&mut b, "completed", WAIT).await;
    assert_eq!(
        first.wait_async(WAIT).await,
        Some(0),
        "sipp: {}",
        first.messages()
    );
    lab.settled().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn far_end_reinvites_mid_call() {
    let lab = CallLab::start(30);
    let mut uas = lab.uas("uas_reinvite", "1001", &["-d", "500"]);
    let (mut b, _) = lab.browser().await;
    call(&mut b, "1001").await;
    wait_call_state(&mut b, "inCall", WAIT).await;
    // the re-INVITE comes after -d; its 200 must carry our SDP
    wait_received(&uas, "SIP/2.0 200", 2).await;
    hang_up_and_check(&mut b, &mut uas).await;
    let msgs = uas.messages();
    assert!(msgs.contains("m=audio"), "our re-INVITE answer has SDP");
    lab.settled().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_reset_mid_call_ends_the_call_then_unregisters() {
    let lab = CallLab::start(31);
    let mut uas = lab.uas("uas_answer_wait_bye", "1001", &[]);
    let (mut b, user) = lab.browser().await;
    call(&mut b, "1001").await;
    wait_call_state(&mut b, "inCall", WAIT).await;
    b.reset();
    assert_eq!(
        uas.wait_async(WAIT).await,
        Some(0),
        "sipp got its BYE: {}",
        uas.messages()
    );
    lab.pbx.wait_users(WAIT, |u| !u.contains(&user));
    lab.settled().await;
    // the account and the browser's own media port are returned with the connection
    lab.sipline
        .wait_metrics(WAIT, |m| {
            m["sipline_pool_leased"] == 0.0 && m["sipline_rtp_ports_in_use"] == 0.0
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_over_tcp() {
    let lab = CallLab::start_with(32, "transport = \"tcp\"\n");
    let (mut b, user) = lab.browser().await;
    // outgoing, far end on UDP (Kamailio bridges with a double Record-Route)
    let mut uas = lab.uas("uas_answer_then_bye", "1001", &["-d", "800"]);
    call(&mut b, "1001").await;
    wait_call_state(&mut b, "inCall", WAIT).await;
    wait_call_state(&mut b, "completed", WAIT).await;
    assert_eq!(uas.wait_async(WAIT).await, Some(0), "sipp: {}", uas.messages());
    // incoming, reaching sipline over its TCP connection
    let mut uac = lab.uac(1, "uac_call_wait_bye", &user, &[]);
    b.wait_for("incomingCall", |_| true, WAIT).await;
    b.request("accept", json!({})).await;
    wait_call_state(&mut b, "inCall", WAIT).await;
    let_the_ack_through().await;
    hang_up_and_check(&mut b, &mut uac).await;
    lab.settled().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_calls_leave_no_port_dialog_or_transaction() {
    // a machine placing calls back to back: more requests a second than a person sends
    let lab = CallLab::start_with_sections(33, "", "requests_per_second = 1000");
    // sipp runs on until dropped: it counts a late retransmission (of an INVITE or an
    // ACK, after a call it already ended) as a call of its own, so `-m 100` would make it
    // quit a call early under load; what this test checks is sipline's side
    let uas = lab.uas("uas_answer_wait_bye", "1001", &["-m", "1000"]);
    let (mut b, _) = lab.browser().await;
    for i in 0..100 {
        call(&mut b, "1001").await;
        wait_call_state(&mut b, "inCall", WAIT).await;
        let r = b.request("hangUp", json!({})).await;
        assert_eq!(r["result"], json!({}), "call {i}: {r}");
        wait_call_state(&mut b, "completed", WAIT).await;
    }
    lab.settled().await;
    drop(uas);
    let m = lab.sipline.metrics().await;
    assert_eq!(m["sipline_sip_server_transactions"], 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_the_right_sip_error() {
    let lab = CallLab::start(34);
    let (_b, _) = lab.browser().await;
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let lp = sock.local_addr().unwrap().port();
    let target = ("127.0.0.1", lab.sipline.sip_port);
    let request = |method: &str, cseq: &str, extra: &str| {
        format!(
            "{method} sip:880@127.0.0.1:{} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{lp};branch=z9hG4bK{}\r\n\
             From: <sip:1000@127.0.0.1>;tag=x\r\nTo: <sip:880@127.0.0.1>{extra}\r\nCall-ID: {}\r\nCSeq: {cseq}\r\n\
             Contact: <sip:1000@127.0.0.1:{lp}>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            lab.sipline.sip_port,
            fastrand::u32(..),
            fastrand::u32(..)
        )
    };
    let ask = |msg: String| -> String {
        sock.send_to(msg.as_bytes(), target).unwrap();
        let mut buf = [0u8; 4096];
        loop {
            let n = sock.recv(&mut buf).expect("an answer");
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            if !text.starts_with("SIP/2.0 100") {
                return text;
            }
        }
    };
    // bad CSeq, CSeq method mismatch, bad Max-Forwards
    assert!(ask(request("INVITE", "abc INVITE", "")).starts_with("SIP/2.0 400"));
    assert!(ask(request("INVITE", "1 BYE", "")).starts_with("SIP/2.0 400"));
    // BYE for a dialog that does not exist
    assert!(ask(request("BYE", "2 BYE", ";tag=nosuchdialog")).starts_with("SIP/2.0 481"));
    // a bad Via has nowhere to send a response to: dropped and logged
    let bad_via = request("INVITE", "1 INVITE", "").replace("SIP/2.0/UDP 127.0.0.1", "SIP/9.9/UDP 127.0.0.1");
    sock.send_to(bad_via.as_bytes(), target).unwrap();
    // a Content-Length beyond the datagram: a truncated message, dropped and logged
    let truncated = request("INVITE", "1 INVITE", "").replace("Content-Length: 0", "Content-Length: 300");
    sock.send_to(truncated.as_bytes(), target).unwrap();
    // and sipline still answers OPTIONS
    assert!(ask(request("OPTIONS", "1 OPTIONS", "")).starts_with("SIP/2.0 200"));
    let log = lab.sipline.log();
    assert!(log.contains("truncated"), "truncated message logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_answers_our_call_and_calls_us() {
    let lab = CallLab::start(35);
    let (sip, media) = lab.far(0);
    let phone = Phone::start(
        "1002",
        "secret",
        sip,
        lab.slot.pbx,
        (media + 100, media + 119),
        "auto",
        None,
    );
    let (mut b, user) = lab.browser().await;
    // we call baresip: it answers; we hang up
    call(&mut b, "1002").await;
    wait_call_state(&mut b, "inCall", WAIT).await;
    assert!(phone.wait("established", 5).await, "baresip established the call");
    tokio::time::sleep(Duration::from_millis(500)).await;
    b.request("hangUp", json!({})).await;
    wait_call_state(&mut b, "completed", WAIT).await;
    assert!(phone.wait("closed", 5).await, "baresip saw the BYE");
    drop(phone);

    // baresip calls us; we answer; baresip hangs up (caller.sh quits after 3 s)
    let (sip, media) = lab.far(1);
    let dir = tempfile::tempdir().unwrap();
    let mut caller = std::process::Command::new(repo_root().join("lab/phones/caller.sh"))
        .arg(dir.path())
        .args(["1003", "secret", &sip.to_string(), &lab.slot.pbx.to_string()])
        .arg(format!("{}-{}", media + 100, media + 119))
        .args([user.as_str(), "3"])
        .spawn()
        .unwrap();
    let incoming = b.wait_for("incomingCall", |_| true, WAIT).await;
    assert_eq!(incoming["from"], "1003");
    b.request("accept", json!({})).await;
    wait_call_state(&mut b, "inCall", WAIT).await;
    wait_call_state(&mut b, "completed", WAIT).await;
    let status = tokio::task::spawn_blocking(move || caller.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "baresip's call was established");
    lab.settled().await;
}

/// Sends `method` and reads until its reply: the reply, and the notifications seen
/// meanwhile.
async fn request_watching(b: &mut Browser, method: &str) -> (serde_json::Value, Vec<serde_json::Value>) {
    let frame = json!({"jsonrpc": "2.0", "id": 9000, "method": method, "params": {}});
    b.send_text(&frame.to_string()).await;
    let mut seen = Vec::new();
    loop {
        let v = b.next(WAIT).await.expect("a reply");
        if v.get("id") == Some(&json!(9000)) {
            return (v, seen);
        }
        seen.push(v);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_hold_is_answered_with_the_refusal_and_the_call_goes_on() {
    let lab = CallLab::start(38);
    let mut uas = lab.uas("uas_refuse_reinvite", "1001", &[]);
    let (mut b, _) = lab.browser().await;
    call(&mut b, "1001").await;
    wait_call_state(&mut b, "inCall", WAIT).await;
    let_the_ack_through().await;
    // the reply waits for the far end: an error carrying its refusal
    let (r, seen) = request_watching(&mut b, "hold").await;
    assert_eq!(r["error"]["code"], -32000, "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("refused the change (488)"),
        "{r}"
    );
    if !seen.iter().any(|n| n["method"] == "callErrorOccurred") {
        b.wait_for("callErrorOccurred", |p| p["code"] == 488, WAIT).await;
    }
    assert!(
        !seen.iter().any(|n| n["method"] == "callStateChanged"),
        "no state change for a refused hold: {seen:?}"
    );
    // the call is as it was: hold may be asked again (refused again), and it hangs up
    let r = b.request("hangUp", json!({})).await;
    assert_eq!(r["result"], json!({}), "{r}");
    wait_call_state(&mut b, "completed", WAIT).await;
    assert_eq!(uas.wait_async(WAIT).await, Some(0), "sipp: {}", uas.messages());
    lab.settled().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_that_meets_glare_is_sent_again_after_the_back_off() {
    let lab = CallLab::start(39);
    let mut uas = lab.uas("uas_glare", "1001", &[]);
    let (mut b, _) = lab.browser().await;
    call(&mut b, "1001").await;
    wait_call_state(&mut b, "inCall", WAIT).await;
    let_the_ack_through().await;
    let t0 = std::time::Instant::now();
    let (r, seen) = request_watching(&mut b, "hold").await;
    assert_eq!(r["result"], json!({}), "{r} {seen:?}");
    // we placed the call, so we chose the Call-ID: 2.1 to 4 s (RFC 3261 §14.1)
    let waited = t0.elapsed();
    assert!(waited >= Duration::from_millis(2100), "answered after {waited:?}");
    assert!(
        !seen.iter().any(|n| n["method"] == "callErrorOccurred"),
        "glare is not an error: {seen:?}"
    );
    hang_up_and_check(&mut b, &mut uas).await;
    assert!(uas.messages().contains("491 Request Pending"));
    lab.settled().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bye_challenged_by_the_far_end_is_sent_again_with_credentials() {
    let lab = CallLab::start(40);
    let mut uas = lab.uas("uas_challenge_bye", "1001", &[]);
    let (mut b, _) = lab.browser().await;
    call(&mut b, "1001").await;
    wait_call_state(&mut b, "inCall", WAIT).await;
    let_the_ack_through().await;
    hang_up_and_check(&mut b, &mut uas).await;
    assert!(uas.messages().contains("Proxy-Authorization: Digest"));
    lab.settled().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offerless_invite_gets_our_offer_in_the_200_and_its_answer_from_the_ack() {
    let lab = CallLab::start(41);
    let (mut b, user) = lab.browser().await;
    let mut uac = lab.uac(0, "uac_offerless", &user, &["-d", "1500"]);
    b.wait_for("incomingCall", |_| true, WAIT).await;
    assert_eq!(b.request("accept", json!({})).await["result"], json!({}));
    wait_call_state(&mut b, "inCall", WAIT).await;
    wait_call_state(&mut b, "completed", WAIT).await;
    assert_eq!(uac.wait_async(WAIT).await, Some(0), "sipp: {}", uac.messages());
    let msgs = uac.messages();
    assert!(
        msgs.contains("a=rtpmap:0 PCMU/8000"),
        "our offer in the 200: {msgs}"
    );
    lab.settled().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offerless_reinvite_gets_our_offer_and_its_answer_from_the_ack() {
    let lab = CallLab::start(42);
    let mut uas = lab.uas("uas_offerless_reinvite", "1001", &["-d", "500"]);
    let (mut b, _) = lab.browser().await;
    call(&mut b, "1001").await;
    wait_call_state(&mut b, "inCall", WAIT).await;
    let t0 = std::time::Instant::now();
    // the re-INVITE comes after -d, and our 200 carries the offer
    while uas.received("SIP/2.0 200") < 1 && t0.elapsed() < WAIT {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(uas.received("SIP/2.0 200"), 1, "sipp: {}", uas.messages());
    let_the_ack_through().await;
    hang_up_and_check(&mut b, &mut uas).await;
    lab.settled().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_changes_the_media_before_and_after_the_answer() {
    let lab = CallLab::start(43);
    let mut uas = lab.uas("uas_update", "1001", &["-d", "500"]);
    let (mut b, _) = lab.browser().await;
    call(&mut b, "1001").await;
    wait_call_state(&mut b, "earlyMedia", WAIT).await;
    wait_call_state(&mut b, "inCall", WAIT).await;
    // three UPDATEs answered: the early offer, the refresh, the late offer
    wait_received(&uas, "SIP/2.0 200", 3).await;
    hang_up_and_check(&mut b, &mut uas).await;
    lab.settled().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_timer_we_refresh_when_the_far_end_makes_us_the_refresher() {
    // the far end asks for 4 s: accept it (we never go below our own Min-SE)
    let lab = CallLab::start_with_config(54, "", "", "\n[calls]\nsession_min_se = 2\n");
    let mut uas = lab.uas("uas_timer_caller_refreshes", "1001", &[]);
    let (mut b, _) = lab.browser().await;
    call(&mut b, "1001").await;
    wait_call_state(&mut b, "inCall", WAIT).await;
    // a 4 s session: refreshes at 2 s and 4 s
    wait_received(&uas, "UPDATE", 2).await;
    let_the_ack_through().await;
    hang_up_and_check(&mut b, &mut uas).await;
    lab.settled().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_timer_a_session_the_far_end_stops_refreshing_ends_with_bye() {
    // the far end asks for 6 s: accept it
    let lab = CallLab::start_with_config(55, "", "", "\n[calls]\nsession_min_se = 2\n");
    let mut uas = lab.uas("uas_timer_callee_refreshes", "1001", &[]);
    let (mut b, _) = lab.browser().await;
    call(&mut b, "1001").await;
    wait_call_state(&mut b, "inCall", WAIT).await;
    // refreshed at 2 s (6 s more), then nothing: over 4 s after the refresh
    let over = b
        .wait_for(
            "callStateChanged",
            |p| p["state"] == "completed",
            Duration::from_secs(15),
        )
        .await;
    assert!(
        over["reason"].as_str().unwrap_or("").contains("session expired"),
        "{over}"
    );
    assert_eq!(uas.wait_async(WAIT).await, Some(0), "sipp: {}", uas.messages());
    lab.settled().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reliable_early_media_is_pracked_then_answered() {
    let lab = CallLab::start(56);
    let mut uas = lab.uas("uas_100rel_early_media", "1001", &["-d", "500"]);
    let (mut b, _) = lab.browser().await;
    call(&mut b, "1001").await;
    wait_call_state(&mut b, "earlyMedia", WAIT).await;
    wait_call_state(&mut b, "inCall", WAIT).await;
    let_the_ack_through().await;
    hang_up_and_check(&mut b, &mut uas).await;
    assert_eq!(uas.received("PRACK "), 1, "one PRACK: {}", uas.messages());
    lab.settled().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_requiring_100rel_gets_a_reliable_180() {
    let lab = CallLab::start(57);
    let (mut b, user) = lab.browser().await;
    let mut uac = lab.uac(0, "uac_require_100rel", &user, &["-d", "1000"]);
    b.wait_for("incomingCall", |_| true, WAIT).await;
    // ring a little: the 180 is PRACKed meanwhile
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(b.request("accept", json!({})).await["result"], json!({}));
    wait_call_state(&mut b, "inCall", WAIT).await;
    wait_call_state(&mut b, "completed", WAIT).await;
    assert_eq!(uac.wait_async(WAIT).await, Some(0), "sipp: {}", uac.messages());
    lab.settled().await;
}

/// Issue 16, headers: `[headers]` adds fixed headers to our INVITE, lets the browser add
/// the allowed ones to its call (and refuses the others, and header injection), and
/// passes the chosen headers of an incoming INVITE on in `incomingCall`.
const HEADERS: &str = "\n[headers]\ninvite = { \"X-Origin\" = \"sipline\" }\n\
    from_browser = [\"X-Campaign\", \"X-Customer-Id\"]\n\
    to_browser = [\"X-Customer-Id\", \"X-Campaign\", \"X-Absent\"]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_go_out_on_our_invite_as_configured_and_allowed() {
    let lab = CallLab::start_with_config(58, "", "", HEADERS);
    let mut uas = lab.uas("uas_answer_wait_bye", "1001", &[]);
    let (mut b, _) = lab.browser().await;
    // not allowed, a core header, and an injection attempt: refused, no call placed
    for bad in [
        json!({"X-Secret": "1"}),
        json!({"Via": "SIP/2.0/UDP 10.0.0.1"}),
        json!({"X-Campaign": "a\r\nVia: SIP/2.0/UDP 10.0.0.1"}),
    ] {
        let r = b.request("call", json!({"number": "1001", "headers": bad})).await;
        assert_eq!(r["error"]["code"], -32602, "{bad}: {r}");
    }
    let r = b
        .request(
            "call",
            json!({"number": "1001", "headers": {"x-campaign": "spring sale", "X-Customer-Id": "77"}}),
        )
        .await;
    assert!(r["result"]["callId"].is_string(), "{r}");
    wait_call_state(&mut b, "inCall", WAIT).await;
    let msgs = hang_up_and_check(&mut b, &mut uas).await;
    let invite = msgs.split("INVITE sip:").nth(1).expect("sipp logged the INVITE");
    let invite = &invite[..invite.find("\n\n").unwrap_or(invite.len())];
    for h in [
        "X-Origin: sipline",
        "X-Campaign: spring sale",
        "X-Customer-Id: 77",
    ] {
        assert!(invite.contains(h), "{h} missing from the INVITE:\n{invite}");
    }
    assert!(!msgs.contains("X-Secret") && !msgs.contains("10.0.0.1"), "{msgs}");
    assert_eq!(uas.received("INVITE"), 1, "the refused calls never left");
    let m = lab.sipline.metrics().await;
    assert_eq!(m["sipline_refused_total{limit=\"call_headers\"}"], 3.0);
    lab.settled().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chosen_headers_of_an_incoming_invite_reach_the_browser() {
    let lab = CallLab::start_with_config(59, "", "", HEADERS);
    let (mut b, user) = lab.browser().await;
    let mut uac = lab.uac(0, "uac_call_with_headers", &user, &[]);
    let incoming = b.wait_for("incomingCall", |_| true, WAIT).await;
    assert_eq!(
        incoming["headers"],
        json!({"X-Customer-Id": "77, 78", "X-Campaign": "spring sale"}),
        "{incoming}"
    );
    b.request("accept", json!({})).await;
    wait_call_state(&mut b, "inCall", WAIT).await;
    b.request("hangUp", json!({})).await;
    wait_call_state(&mut b, "completed", WAIT).await;
    assert_eq!(uac.wait_async(WAIT).await, Some(0), "sipp: {}", uac.messages());
    lab.settled().await;
}

/// Issue 16, blind transfer: `transfer` sends REFER through Kamailio; the far end's
/// NOTIFYs reach the browser as `transferStateChanged` trying → ringing → completed,
/// and the transferred call ends with our BYE. (Slots 81–82: calls.rs's own are full.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blind_transfer_is_reported_and_ends_the_call() {
    let lab = CallLab::start(81);
    let mut uas = lab.uas("uas_transfer", "1001", &["-key", "final", "200 OK"]);
    let (mut b, _) = lab.browser().await;
    let id = call(&mut b, "1001").await;
    wait_call_state(&mut b, "inCall", WAIT).await;
    // the dial policy applies to the transfer target too
    let r = b
        .request("transfer", json!({"number": "sip:evil@example.com"}))
        .await;
    assert_eq!(r["error"]["code"], -32602, "{r}");
    let r = b
        .request("transfer", json!({"callId": "999", "number": "1002"}))
        .await;
    assert_eq!(r["error"]["code"], -32602, "another call: {r}");
    let r = b
        .request("transfer", json!({"callId": id, "number": "1002"}))
        .await;
    assert_eq!(r["result"], json!({}), "{r}");
    let mut states = Vec::new();
    while states.last().map(String::as_str) != Some("completed") {
        let t = b
            .wait_for("transferStateChanged", |p| p["callId"] == id.as_str(), WAIT)
            .await;
        states.push(t["state"].as_str().unwrap_or_default().to_owned());
        if t["state"] == "completed" {
            assert_eq!(t["code"], 200, "{t}");
        }
    }
    assert_eq!(states, ["trying", "ringing", "completed"]);
    let ended = wait_call_state(&mut b, "completed", WAIT).await;
    assert_eq!(ended["reason"], "transferred", "{ended}");
    assert_eq!(uas.wait_async(WAIT).await, Some(0), "sipp: {}", uas.messages());
    let msgs = uas.messages();
    assert!(msgs.contains("Refer-To: <sip:1002@127.0.0.1>"), "{msgs}");
    assert_eq!(uas.received("REFER"), 1, "the refused transfers sent nothing");
    lab.settled().await;
}

/// A transfer that fails (the REFER refused, or the new call busy) says so with the
/// status and leaves the call as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_transfer_leaves_the_call_up() {
    let lab = CallLab::start(82);
    for (scenario, args, code) in [
        ("uas_refuse_refer", vec![], 603),
        ("uas_transfer", vec!["-key", "final", "486 Busy Here"], 486),
    ] {
        let mut uas = lab.uas(scenario, "1001", &args);
        let (mut b, _) = lab.browser().await;
        let id = call(&mut b, "1001").await;
        wait_call_state(&mut b, "inCall", WAIT).await;
        let r = b.request("transfer", json!({"number": "1002"})).await;
        assert_eq!(r["result"], json!({}), "{r}");
        let failed = b
            .wait_for(
                "transferStateChanged",
                |p| p["callId"] == id.as_str() && p["state"] == "failed",
                WAIT,
            )
            .await;
        assert_eq!(failed["code"], code, "{scenario}: {failed}");
        // still in the call: hang up as usual
        hang_up_and_check(&mut b, &mut uas).await;
        b.close().await;
        lab.settled().await;
    }
}

/// Sends request `id` and reads until its response and every notification of `expected`
/// (a method and params it must include) arrived, in whatever order; returns the
/// response. (Hold and unhold are answered after the far end, and the notifications
/// they cause can come before their reply.)
async fn request_expecting(
    b: &mut Browser,
    id: &str,
    method: &str,
    params: Value,
    expected: &[(&str, Value)],
) -> Value {
    let frame = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    b.send_text(&frame.to_string()).await;
    wait_all(b, Some(id), expected).await.unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_call_waits_and_the_browser_swaps_between_the_two() {
    let lab = CallLab::start(86);
    let (mut b, user) = lab.browser().await;
    let mut first = lab.uac(0, "uac_call_wait_bye", &user, &[]);
    let a = b.wait_for("incomingCall", |_| true, WAIT).await["callId"].clone();
    let r = request_expecting(
        &mut b,
        "1",
        "accept",
        json!({"callId": a}),
        &[("callStateChanged", json!({"callId": a, "state": "inCall"}))],
    )
    .await;
    assert_eq!(r["result"], json!({}), "{r}");
    let_the_ack_through().await;

    // a second call during the first rings at the browser with its own callId
    let mut second = lab.uac(1, "uac_call_wait_bye", &user, &[]);
    let waiting = b.wait_for("incomingCall", |_| true, WAIT).await;
    let w = waiting["callId"].clone();
    assert_ne!(w, a);
    assert_eq!(waiting["from"], "1000");
    // with two calls, a request must say which
    let r = b.request("hangUp", json!({})).await;
    assert_eq!(r["error"]["code"], -32602, "{r}");
    assert!(
        first.messages().matches("INVITE sip:").count() == 2,
        "nothing sent to the first: {}",
        first.messages()
    );

    // accepting it holds the first (re-INVITE sendonly), which the browser is told
    let r = request_expecting(
        &mut b,
        "2",
        "accept",
        json!({"callId": w}),
        &[
            ("callStateChanged", json!({"callId": w, "state": "inCall"})),
            ("callHoldChanged", json!({"callId": a, "onHold": true})),
        ],
    )
    .await;
    assert_eq!(r["result"], json!({}), "{r}");
    assert!(first.messages().contains("a=sendonly"), "{}", first.messages());
    let state = b.request("getState", json!({})).await["result"].clone();
    assert_eq!(state["call"]["callId"], w, "{state}");
    assert_eq!(state["calls"].as_array().map(Vec::len), Some(2), "{state}");
    assert_eq!(state["calls"][0]["callId"], a, "{state}");
    assert_eq!(state["calls"][0]["onHold"], true, "{state}");
    assert_eq!(state["calls"][1]["onHold"], false, "{state}");

    // the line is full (calls.per_line = 2): a third call is busy
    let mut third = lab.uac(2, "uac_call_expect_reject", &user, &[]);
    assert_eq!(
        third.wait_async(WAIT).await,
        Some(0),
        "sipp: {}",
        third.messages()
    );
    assert_eq!(third.received("SIP/2.0 486"), 1);

    // back to the first: the second is held, then the first resumed
    let r = request_expecting(
        &mut b,
        "3",
        "unhold",
        json!({"callId": a}),
        &[
            ("callHoldChanged", json!({"callId": w, "onHold": true})),
            ("callHoldChanged", json!({"callId": a, "onHold": false})),
        ],
    )
    .await;
    assert_eq!(r["result"], json!({}), "{r}");
    assert!(second.messages().contains("a=sendonly"), "{}", second.messages());

    // each hung up by its callId; the other goes on until its own turn
    for (id, far) in [(&w, &mut second), (&a, &mut first)] {
        let r = request_expecting(
            &mut b,
            "bye",
            "hangUp",
            json!({"callId": id}),
            &[("callStateChanged", json!({"callId": id, "state": "completed"}))],
        )
        .await;
        assert_eq!(r["result"], json!({}), "{r}");
        assert_eq!(
            far.wait_async(WAIT).await,
            Some(0),
            "sipp: {}\n{}",
            far.errors(),
            far.messages()
        );
    }
    lab.settled().await;
}

/// Reads until every notification of `expected` (a method and params it must include)
/// arrived, in whatever order, and the response to request `id` if one is awaited;
/// returns that response.
async fn wait_all(b: &mut Browser, id: Option<&str>, expected: &[(&str, Value)]) -> Option<Value> {
    let mut missing: Vec<&(&str, Value)> = expected.iter().collect();
    let mut response = None;
    while (id.is_some() && response.is_none()) || !missing.is_empty() {
        let v = b
            .next(WAIT)
            .await
            .unwrap_or_else(|| panic!("no reply to {id:?} ({response:?}) or still missing {missing:?}"));
        if id.is_some_and(|id| v["id"] == id) {
            response = Some(v);
            continue;
        }
        let includes = |(m, p): &&(&str, Value)| {
            v["method"] == *m
                && p.as_object()
                    .is_some_and(|p| p.iter().all(|(k, x)| v["params"][k] == *x))
        };
        missing.retain(|e| !includes(e));
    }
    response
}

/// The value of the first `name:` header line in a sipp message log.
fn header_in(log: &str, name: &str) -> String {
    log.lines()
        .find_map(|l| l.trim().strip_prefix(name)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {name} in:\n{log}"))
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_asked_by_the_far_end_places_the_new_call() {
    let lab = CallLab::start(87);
    let mut target = lab.uas_at(1, "uas_answer_wait_bye", "1002", &[]);
    let mut transferor = lab.uas("uas_refers_us", "1001", &["-key", "target", "1002"]);
    let (mut b, _) = lab.browser().await;
    let old = call(&mut b, "1001").await;
    // its REFER: sipline calls 1002 for this browser, holds the first call, says so
    let referred = b
        .wait_for("callReferred", |p| p["callId"] == old.as_str(), WAIT)
        .await;
    assert_eq!(referred["number"], "1002", "{referred}");
    let new = referred["newCallId"].clone();
    assert_ne!(new, json!(old));
    wait_all(
        &mut b,
        None,
        &[
            ("callStateChanged", json!({"callId": new, "state": "inCall"})),
            // told the outcome, the transferor hangs up
            ("callStateChanged", json!({"callId": old, "state": "completed"})),
        ],
    )
    .await;
    assert_eq!(
        transferor.wait_async(WAIT).await,
        Some(0),
        "sipp: {}\n{}",
        transferor.errors(),
        transferor.messages()
    );
    let msgs = transferor.messages();
    assert!(msgs.contains("SIP/2.0 202 Accepted"), "{msgs}");
    assert!(msgs.contains("Event: refer;id=1"), "{msgs}");
    for frag in ["SIP/2.0 100 Trying", "SIP/2.0 180 Ringing", "SIP/2.0 200 OK"] {
        assert!(msgs.contains(frag), "NOTIFY {frag:?} missing: {msgs}");
    }
    assert!(msgs.contains("Subscription-State: terminated"), "{msgs}");
    let invite = target.messages();
    assert!(invite.contains("Referred-By: <sip:1001@127.0.0.1>"), "{invite}");
    let r = request_expecting(
        &mut b,
        "bye",
        "hangUp",
        json!({"callId": new}),
        &[("callStateChanged", json!({"callId": new, "state": "completed"}))],
    )
    .await;
    assert_eq!(r["result"], json!({}), "{r}");
    assert_eq!(
        target.wait_async(WAIT).await,
        Some(0),
        "sipp: {}",
        target.messages()
    );
    lab.settled().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_to_a_number_the_dial_policy_refuses_is_not_placed() {
    let lab = CallLab::start(88);
    let mut transferor = lab.uas("uas_refers_us", "1001", &["-key", "target", "premium"]);
    let (mut b, _) = lab.browser().await;
    let old = call(&mut b, "1001").await;
    // the transferor is told 403 at once and hangs up; nothing was placed
    let ended = b
        .wait_for(
            "callStateChanged",
            |p| p["callId"] == old.as_str() && p["state"] == "completed",
            WAIT,
        )
        .await;
    assert_eq!(ended["reason"], "hung up by far end", "{ended}");
    assert_eq!(
        transferor.wait_async(WAIT).await,
        Some(0),
        "sipp: {}",
        transferor.messages()
    );
    let msgs = transferor.messages();
    assert!(msgs.contains("SIP/2.0 403 Forbidden"), "{msgs}");
    assert_eq!(
        transferor.received("INVITE sip:"),
        1,
        "no hold: nothing else was placed\n{msgs}"
    );
    let m = lab.sipline.metrics().await;
    assert!(m["sipline_refused_total{limit=\"dial_policy\"}"] >= 1.0, "{m:?}");
    lab.settled().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attended_transfer_refers_the_held_call_to_the_other() {
    let lab = CallLab::start(89);
    let mut held = lab.uas("uas_transfer", "1001", &["-key", "final", "200 OK"]);
    let mut target = lab.uas_at(1, "uas_answer_wait_bye", "1002", &[]);
    let (mut b, _) = lab.browser().await;
    let a = call(&mut b, "1001").await;
    wait_call_state(&mut b, "inCall", WAIT).await;
    // consulting the target holds the first call
    let r = request_expecting(
        &mut b,
        "c",
        "call",
        json!({"number": "1002"}),
        &[("callHoldChanged", json!({"callId": a, "onHold": true}))],
    )
    .await;
    let c = r["result"]["callId"].clone();
    wait_all(
        &mut b,
        None,
        &[("callStateChanged", json!({"callId": c, "state": "inCall"}))],
    )
    .await;
    // not to itself, nor to a call that does not exist
    let r = b.request("transfer", json!({"callId": a, "toCallId": a})).await;
    assert_eq!(r["error"]["code"], -32000, "{r}");
    let r = b
        .request("transfer", json!({"callId": a, "toCallId": "999"}))
        .await;
    assert_eq!(r["error"]["code"], -32602, "{r}");
    let r = request_expecting(
        &mut b,
        "t",
        "transfer",
        json!({"callId": a, "toCallId": c}),
        &[
            (
                "transferStateChanged",
                json!({"callId": a, "state": "completed", "code": 200}),
            ),
            (
                "callStateChanged",
                json!({"callId": a, "state": "completed", "reason": "transferred"}),
            ),
        ],
    )
    .await;
    assert_eq!(r["result"], json!({}), "{r}");
    assert_eq!(
        held.wait_async(WAIT).await,
        Some(0),
        "sipp: {}\n{}",
        held.errors(),
        held.messages()
    );
    // the REFER named the target's dialog, as the target knows it
    let (to_target, from_held) = (target.messages(), held.messages());
    let call_id = header_in(&to_target, "Call-ID");
    let refer_to = from_held
        .lines()
        .find(|l| l.starts_with("Refer-To:"))
        .unwrap_or_default();
    let escaped = call_id.replace('@', "%40");
    assert!(
        refer_to.starts_with("Refer-To: <sip:1002@127.0.0.1?Replaces=") && refer_to.contains(&escaped),
        "{refer_to} (call {call_id})"
    );
    assert!(
        refer_to.contains("%3Bto-tag%3D") && refer_to.contains("%3Bfrom-tag%3D"),
        "{refer_to}"
    );
    // here the target's far end never gets the transferee's INVITE (sipp): hang it up
    let r = request_expecting(
        &mut b,
        "bye",
        "hangUp",
        json!({"callId": c}),
        &[("callStateChanged", json!({"callId": c, "state": "completed"}))],
    )
    .await;
    assert_eq!(r["result"], json!({}), "{r}");
    assert_eq!(
        target.wait_async(WAIT).await,
        Some(0),
        "sipp: {}",
        target.messages()
    );
    lab.settled().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_with_replaces_takes_the_place_of_the_call_it_names() {
    let lab = CallLab::start(96);
    let (mut b, user) = lab.browser().await;
    let mut first = lab.uac(0, "uac_call_wait_bye", &user, &[]);
    let a = b.wait_for("incomingCall", |_| true, WAIT).await["callId"].clone();
    let r = request_expecting(
        &mut b,
        "1",
        "accept",
        json!({"callId": a}),
        &[("callStateChanged", json!({"callId": a, "state": "inCall"}))],
    )
    .await;
    assert_eq!(r["result"], json!({}), "{r}");
    let_the_ack_through().await;
    // the dialog as sipline knows it: Call-ID, its tag (To of the 200), the caller's
    let log = first.messages();
    let ok = &log[log.find("SIP/2.0 200 OK").expect("a 200 OK")..];
    let to = header_in(ok, "To");
    let ours = to.split(";tag=").nth(1).expect("our tag").to_owned();
    let invite = &log[log.rfind("INVITE sip:").expect("the INVITE")..];
    let theirs = header_in(invite, "From")
        .split(";tag=")
        .nth(1)
        .expect("their tag")
        .to_owned();
    let replaces = format!("{};to-tag={ours};from-tag={theirs}", header_in(invite, "Call-ID"));
    // a call that names it: answered without accept, the first ended
    let mut second = lab.uac_as(
        1,
        "uac_call_replacing",
        &user,
        "1002",
        &["-key", "replaces", &replaces],
    );
    let incoming = b.wait_for("incomingCall", |p| p["replaces"] == a, WAIT).await;
    let w = incoming["callId"].clone();
    wait_all(
        &mut b,
        None,
        &[
            ("callStateChanged", json!({"callId": w, "state": "inCall"})),
            (
                "callStateChanged",
                json!({"callId": a, "state": "completed", "reason": "replaced by a transferred call"}),
            ),
        ],
    )
    .await;
    assert_eq!(
        first.wait_async(WAIT).await,
        Some(0),
        "sipp: {}",
        first.messages()
    );
    let_the_ack_through().await;
    let r = request_expecting(
        &mut b,
        "2",
        "hangUp",
        json!({"callId": w}),
        &[("callStateChanged", json!({"callId": w, "state": "completed"}))],
    )
    .await;
    assert_eq!(r["result"], json!({}), "{r}");
    assert_eq!(
        second.wait_async(WAIT).await,
        Some(0),
        "sipp: {}\n{}",
        second.errors(),
        second.messages()
    );
    // one that names no call of ours: 481
    let mut stray = lab.uac_as(
        1,
        "uac_call_replacing",
        &user,
        "1002",
        &["-key", "replaces", "nope;to-tag=x;from-tag=y"],
    );
    assert_ne!(stray.wait_async(WAIT).await, Some(0));
    assert!(stray.received("SIP/2.0 481") >= 1, "{}", stray.messages());
    assert_eq!(stray.received("SIP/2.0 200"), 0, "{}", stray.messages());
    lab.settled().await;
}
