//! Issue 6: sipline with no PBX of its own. The embedded PBX registers the pool's
//! accounts and extra users and routes calls between them; 600/601/602 answer with
//! echo, a test signal and DTMF read-back. Browsers are headless Chromium, run (with
//! everything else of the test) in a loopback-only network namespace.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// sipline with the embedded PBX on slot `n`'s PBX port, and extra user 1000/secret.
fn embedded(n: u16) -> (Sipline, Slot) {
    let slot = Slot::new(n);
    let rtp = 45000 + n * 40;
    let config = format!(
        "[http]\nlisten = \"127.0.0.1:{}\"\n\n[sip]\nlisten = \"127.0.0.1:{}\"\n\n[pbx]\nlisten = \"127.0.0.1:{}\"\n\
         users = [{{ user = \"1000\", password = \"secret\" }}]\n\n[media]\nrtp_ports = \"{rtp}-{}\"\n",
        slot.http,
        slot.sip,
        slot.pbx,
        rtp + 39
    );
    (Sipline::start(&config), slot)
}

fn env_of(url: &str, pairs: &[(&str, &str)]) -> Vec<(&'static str, String)> {
    let mut v: Vec<(&'static str, String)> = vec![("SIPLINE_URL", url.to_owned())];
    for (k, val) in pairs {
        let k: &'static str = Box::leak(k.to_string().into_boxed_str());
        v.push((k, val.to_string()));
    }
    v
}

async fn browse(url: &str, pairs: &[(&str, &str)]) -> Value {
    let (code, out, result) =
        run_browser_script("audio.mjs", &env_of(url, pairs), Duration::from_secs(90)).await;
    println!("{out}");
    assert_eq!(code, Some(0), "browser script failed:\n{out}");
    result.expect("a @result line")
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// Waits until the embedded PBX holds `n` registrations.
async fn registrations(sipline: &Sipline, n: f64) {
    sipline
        .wait_metrics(Duration::from_secs(15), |m| {
            m.get("sipline_pbx_registrations") == Some(&n)
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extensions_echo_play_and_read_back_digits() {
    if !netns::inside() {
        return netns::rerun("extensions_echo_play_and_read_back_digits");
    }
    let (sipline, _) = embedded(50);
    registrations(&sipline, 3.0).await;
    let url = format!("http://{}/", sipline.http);

    let echo = browse(
        &url,
        &[("NUMBER", "600"), ("MIC_HZ", "1000"), ("EXPECT_HZ", "1000")],
    )
    .await;
    let snr = f(&echo["snrDb"]);
    println!("600: the browser heard its own 1 kHz back at {snr:.1} dB");
    assert!(snr >= 25.0, "echo at {snr:.1} dB");

    let signal = browse(
        &url,
        &[("NUMBER", "601"), ("PEAKS", "440,880"), ("LISTEN_MS", "3000")],
    )
    .await;
    println!("601: {}", signal["peaks"]);
    assert!(
        f(&signal["peaks"]["440"]) > 0.2 && f(&signal["peaks"]["880"]) > 0.2,
        "test signal: {}",
        signal["peaks"]
    );

    let dtmf = browse(
        &url,
        &[
            ("NUMBER", "602"),
            ("DTMF", "1234"),
            ("LISTEN_DTMF_MS", "2500"),
            ("LISTEN_MS", "300"),
        ],
    )
    .await;
    println!("602: pressed 1234, heard {}", dtmf["heardDigits"]);
    assert_eq!(dtmf["heardDigits"], "1234");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_browsers_call_each_other() {
    if !netns::inside() {
        return netns::rerun("two_browsers_call_each_other");
    }
    let (sipline, _) = embedded(51);
    registrations(&sipline, 3.0).await;
    let url = format!("http://{}/", sipline.http);
    // the first page gets 880 and waits; the second (881) calls it
    let callee = {
        let env = env_of(
            &url,
            &[("ROLE", "callee"), ("MIC_HZ", "600"), ("EXPECT_HZ", "1000")],
        );
        tokio::spawn(async move { run_browser_script("audio.mjs", &env, Duration::from_secs(90)).await })
    };
    registrations(&sipline, 4.0).await;
    let caller = browse(
        &url,
        &[
            ("ROLE", "caller"),
            ("NUMBER", "880"),
            ("MIC_HZ", "1000"),
            ("EXPECT_HZ", "600"),
        ],
    )
    .await;
    let (code, out, callee) = callee.await.unwrap();
    println!("{out}");
    assert_eq!(code, Some(0), "callee page failed:\n{out}");
    let callee = callee.unwrap();
    let (a, b) = (f(&caller["snrDb"]), f(&callee["snrDb"]));
    println!("caller heard the callee's 600 Hz at {a:.1} dB; callee heard the caller's 1 kHz at {b:.1} dB");
    assert!(a >= 25.0 && b >= 25.0, "{a} / {b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sip_phone_registers_and_calls_a_browser() {
    if !netns::inside() {
        return netns::rerun("a_sip_phone_registers_and_calls_a_browser");
    }
    let (sipline, slot) = embedded(52);
    registrations(&sipline, 3.0).await;
    let url = format!("http://{}/", sipline.http);
    let page = {
        let env = env_of(
            &url,
            &[("ROLE", "callee"), ("MIC_HZ", "1000"), ("EXPECT_HZ", "440")],
        );
        tokio::spawn(async move { run_browser_script("audio.mjs", &env, Duration::from_secs(90)).await })
    };
    registrations(&sipline, 4.0).await;
    let phone = Phone::start_with_env(
        "1000",
        "secret",
        slot.pbx + 5,
        slot.pbx,
        (46000, 46019),
        "auto",
        Some("880"),
        0,
        &[("BS_TONE", "440")],
    );
    let (code, out, result) = page.await.unwrap();
    println!("{out}");
    assert_eq!(code, Some(0), "page failed:\n{out}\n{}", phone.log());
    let r = result.unwrap();
    let snr = f(&r["snrDb"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rec = phone.last_recording().expect("baresip recorded the call");
    let (rate, samples) = read_wav(&rec);
    let far = tone_snr_db(&samples[(rate as usize / 2).min(samples.len())..], rate, 1000.0);
    println!(
        "baresip 1000 via the embedded PBX: the browser heard 440 Hz at {snr:.1} dB, baresip heard 1 kHz at {far:.1} dB"
    );
    assert!(snr >= 25.0 && far >= 25.0, "{snr} / {far}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_command_needs_no_configuration() {
    if !netns::inside() {
        return netns::rerun("the_run_command_needs_no_configuration");
    }
    // exactly `sipline` with no file, in this namespace's own 127.0.0.1
    let sipline = Sipline::start_default();
    registrations(&sipline, 3.0).await;
    assert!(
        sipline.log().contains("call 600"),
        "it says what to do:\n{}",
        sipline.log()
    );
    let echo = browse(
        "http://127.0.0.1:8080/",
        &[("NUMBER", "600"), ("MIC_HZ", "1000"), ("EXPECT_HZ", "1000")],
    )
    .await;
    let snr = f(&echo["snrDb"]);
    println!("default run: 600 echoed 1 kHz at {snr:.1} dB");
    assert!(snr >= 25.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_registrar_turns_the_embedded_pbx_off() {
    let slot = Slot::new(53);
    let config = base_config(slot) + &format!("\n[pbx]\nlisten = \"127.0.0.1:{}\"\n", slot.pbx + 9);
    let sipline = Sipline::start(&config);
    // nothing listens where the embedded PBX would
    assert!(
        UdpSocket::bind(("127.0.0.1", slot.pbx + 9)).is_ok(),
        "the PBX port is free"
    );
    let m = sipline.metrics().await;
    assert!(!m.contains_key("sipline_pbx_registrations"));
    assert!(!sipline.log().contains("embedded"), "{}", sipline.log());
}

#[test]
fn the_embedded_pbx_never_leaves_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "[pbx]\nlisten = \"0.0.0.0:5060\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sipline"))
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pbx.listen"));
}
