//! Issue 16, the secure trunk: SIP over TLS to the PBX. Kamailio's tls module with a
//! certificate from a lab CA (lab/pbx/kamailio.sh, LAB_TLS_PORT); sipline verifies it
//! (rustls) against the configured CA and the registrar's name, registers its lines over
//! TLS and calls a baresip phone (on UDP: Kamailio bridges the transports). A
//! certificate that does not verify gets no registration, and nothing goes in clear.
//!
//! Slots 83–85 (Kamailio 16830+, its TLS listener on the PBX port + 1), baresip RTP
//! 35830+.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

/// sipline of slot `n` registering with the TLS listener of `pbx`; `tls` is the rest
/// of the [sip] section's TLS keys.
fn tls_config(n: u16, pbx: &Pbx, tls: &str) -> String {
    let slot = Slot::new(n);
    let tls_port = pbx.tls_port.expect("a PBX with TLS");
    let rtp = 40000 + n * 20;
    let config = base_config(slot).replace(
        &format!("registrar = \"sip:127.0.0.1:{}\"\n", slot.pbx),
        &format!("registrar = \"sip:127.0.0.1:{tls_port};transport=tls\"\ntransport = \"tls\"\n{tls}"),
    ) + &format!(
        "\n[pool]\ndomain = \"127.0.0.1\"\nrange = {{ from = 880, to = 881 }}\n\n[media]\nrtp_ports = \"{rtp}-{}\"\n",
        rtp + 19
    );
    no_resume(&config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_register_and_call_over_tls_with_the_pbx_certificate_verified() {
    let slot = Slot::new(83);
    let pbx = Pbx::start_tls(slot.pbx, slot.pbx + 1);
    let ca = format!("tls_ca = \"{}\"\n", pbx.tls_ca().display());
    let sipline = Sipline::start(&tls_config(83, &pbx, &ca));
    let phone = Phone::start(
        "1002",
        "secret",
        slot.pbx + 5,
        slot.pbx,
        (35830, 35839),
        "auto",
        None,
    );
    let (mut b, user) = Browser::registered(&sipline.ws_url()).await;
    // Kamailio holds the line's contact on its TLS socket
    let dump = pbx.dump();
    let tls_socket = format!("tls:127.0.0.1:{}", slot.pbx + 1);
    assert!(
        dump.contains(&tls_socket),
        "{user} not registered over TLS:\n{dump}"
    );
    let r = b.request("call", json!({"number": "1002"})).await;
    assert!(r["result"]["callId"].is_string(), "{r}");
    wait_call_state(&mut b, "inCall", WAIT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    b.request("hangUp", json!({})).await;
    wait_call_state(&mut b, "completed", WAIT).await;
    // baresip 1.0 says a BYE ended the call with "session closed"
    let ended = || phone.log().contains("session closed");
    let t0 = std::time::Instant::now();
    while !ended() && t0.elapsed() < WAIT {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ended(), "the far end saw no BYE:\n{}", phone.log());
    // and a call in: Kamailio reaches the line over the connection it registered on
    let mut uac = Sipp::spawn(
        "uac_call_wait_bye",
        slot.pbx,
        slot.pbx + 7,
        35840,
        &[
            "-s", &user, "-key", "caller", "1000", "-au", "1000", "-ap", "secret",
        ],
    );
    b.wait_for("incomingCall", |_| true, WAIT).await;
    b.request("accept", json!({})).await;
    wait_call_state(&mut b, "inCall", WAIT).await;
    b.request("hangUp", json!({})).await;
    wait_call_state(&mut b, "completed", WAIT).await;
    assert_eq!(uac.wait_async(WAIT).await, Some(0), "sipp: {}", uac.messages());
    assert!(sipline.log().contains("SIP TLS connected"), "{}", sipline.log());
}

/// The PBX's certificate does not check out: for another name than the one configured,
/// or from a CA the system does not trust (the default, without `tls_ca`). No line
/// registers (the handshake fails before any SIP is sent) and the browser hears so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pbx_certificate_that_does_not_verify_gets_no_registration() {
    let slot = Slot::new(84);
    let pbx = Pbx::start_tls(slot.pbx, slot.pbx + 1);
    let wrong_name = format!(
        "tls_ca = \"{}\"\ntls_server_name = \"pbx.example.com\"\n",
        pbx.tls_ca().display()
    );
    for (n, tls) in [(84, wrong_name), (85, String::new())] {
        let sipline = Sipline::start(&tls_config(n, &pbx, &tls));
        let mut b = Browser::connect(&sipline.ws_url()).await;
        let failed = b.wait_line("registrationFailed", WAIT).await;
        println!("{tls:?}: {failed}");
        let log = sipline.log();
        assert!(log.contains("SIP connection failed"), "{log}");
        assert!(!log.contains("SIP TLS connected"), "{log}");
        assert!(pbx.registered_users().is_empty(), "{}", pbx.dump());
        let failed = sipline.metrics().await["sipline_dropped_total{what=\"sip_connect_failed\"}"];
        assert!(failed >= 1.0, "counted: {failed}");
        b.close().await;
    }
}
