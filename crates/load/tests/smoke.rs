//! The load generator against the real lab, briefly, so that it never rots: Kamailio,
//! a sipp far end that answers and echoes RTP, the `sipline` binary with a pool of
//! accounts, and the built `sipline-load` binary placing calls through it. Judged only
//! from its JSON: every call connected and its echo came back (relayed PCMU byte for
//! byte; Opus transcoded to the far end's PCMU and back, by its tone). No timed
//! assertions: setup times and jitter are reported, not judged.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Pbx, Sipline, Sipp};
use serde_json::Value;

/// Ports no other test uses: Kamailio, sipline SIP and HTTP, sipp SIP and media (+1, +2).
const PBX: u16 = 17200;
const SIP: u16 = 17202;
const HTTP: u16 = 18120;
const SIPP_SIP: u16 = 17205;
const SIPP_MEDIA: u16 = 33200;

/// Runs sipline-load with `args` (plus the URL and --json); its exit code and JSON.
fn load(url: &str, args: &[&str]) -> (Option<i32>, Value, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sipline-load"))
        .args(["--url", url, "--json", "--progress-secs", "1"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sipline-load");
    // every step of a session has its own deadline: this only keeps a hang from
    // blocking CI forever
    let t0 = Instant::now();
    while child.try_wait().ok().flatten().is_none() {
        if t0.elapsed() > Duration::from_secs(300) {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("sipline-load printed no JSON ({e}):\n{stderr}"));
    (out.status.code(), json, stderr)
}

/// Every call of a run connected, completed, and echoed.
fn assert_all_echoed(report: &Value, calls: u64, stderr: &str) {
    let summary = || {
        let mut r = report.clone();
        r["calls"] = Value::Null;
        format!("{r:#}\n{stderr}")
    };
    assert_eq!(report["sessions"], calls, "{}", summary());
    assert_eq!(report["connected"], calls, "{}", summary());
    assert_eq!(report["echo_ok"], calls, "{}", summary());
    assert_eq!(report["failed"], 0, "{}", summary());
    for c in report["calls"].as_array().unwrap() {
        assert_eq!(c["ok"], true, "{c:#}");
        assert!(c["setup_ms"].is_number(), "{c:#}");
        assert!(c["first_audio_ms"].is_number(), "{c:#}");
        assert!(c["packets_sent"].as_u64().unwrap() > 0, "{c:#}");
        assert!(c["packets_received"].as_u64().unwrap() > 0, "{c:#}");
        let fin = c["final_state"].as_str().unwrap_or_default();
        assert!(fin.starts_with("completed"), "{c:#}");
    }
}

#[test]
fn calls_through_the_gateway_come_back_as_our_tone() {
    let _pbx = Pbx::start(PBX);
    Sipp::register(PBX, SIPP_SIP, SIPP_MEDIA, "1001", "secret");
    // one far end for both runs (5 + 2 calls); -nr: under load sipp may retransmit a 200
    // whose ACK is on its way and count the late ACK as a call of its own
    let _far = Sipp::spawn(
        "uas_answer_wait_bye",
        PBX,
        SIPP_SIP,
        SIPP_MEDIA,
        &["-s", "1001", "-m", "7", "-nr", "-timeout", "600s"],
    );
    let http: SocketAddr = ([127, 0, 0, 1], HTTP).into();
    let config = format!(
        "[http]\nlisten = \"{http}\"\nmax_sessions_per_ip = 100\n\n\
         [sip]\nlisten = \"127.0.0.1:{SIP}\"\nregistrar = \"sip:127.0.0.1:{PBX}\"\n\n\
         [pool]\ndomain = \"127.0.0.1\"\nrange = {{ from = 880, to = 898 }}\n\n\
         [media]\nrtp_ports = \"50000-50099\"\n"
    );
    let gateway = Sipline::start(&config, http);
    let url = gateway.ws_url();

    // PCMU both ways: relayed untouched, so the echo is our payloads byte for byte
    let (code, report, stderr) = load(
        &url,
        &[
            "--calls",
            "5",
            "--hold-secs",
            "5",
            "--ramp",
            "5",
            "--codec",
            "pcmu",
        ],
    );
    assert_all_echoed(&report, 5, &stderr);
    assert_eq!(code, Some(0), "{stderr}");
    for c in report["calls"].as_array().unwrap() {
        assert!(c["matched_share"].as_f64().unwrap() >= 0.8, "{c:#}");
    }

    // Opus from the browsers, PCMU at the far end: transcoded both ways
    let (code, report, stderr) = load(
        &url,
        &[
            "--calls",
            "2",
            "--hold-secs",
            "5",
            "--ramp",
            "5",
            "--codec",
            "opus",
        ],
    );
    assert_all_echoed(&report, 2, &stderr);
    assert_eq!(code, Some(0), "{stderr}");
    for c in report["calls"].as_array().unwrap() {
        assert!(c["tone_snr_db"].as_f64().unwrap() >= 10.0, "{c:#}");
    }
    eprintln!("{stderr}");
}
