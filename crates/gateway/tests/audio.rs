//! Issue 4 against real peers: headless Chromium (fake microphone: a 1 kHz tone)
//! talks through siphon to baresip (plays 440 Hz, records what it hears) via Kamailio.
//! Both ends are measured: the browser's WebAudio analyser and baresip's recording.
//!
//! Each test re-runs itself inside a loopback-only network namespace, so Chromium can
//! reach nothing but 127.0.0.1 (this needs root, as CI has).

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

struct AudioLab {
    slot: Slot,
    _pbx: Pbx,
    siphon: Siphon,
}

impl AudioLab {
    fn start(n: u16) -> AudioLab {
        let slot = Slot::new(n);
        let pbx = Pbx::start(slot.pbx);
        let rtp = 42000 + n * 20;
        let config = base_config(slot)
            + &format!(
                "\n[pool]\ndomain = \"127.0.0.1\"\nrange = {{ from = 880, to = 881 }}\n\n[media]\nrtp_ports = \"{rtp}-{}\"\n",
                rtp + 19
            );
        AudioLab {
            slot,
            _pbx: pbx,
            siphon: Siphon::start(&config),
        }
    }

    /// A baresip phone as user 1002 playing `tone` Hz, with these codecs.
    fn phone(&self, codecs: &str, tone: u32, dial: Option<&str>) -> Phone {
        // SAFETY of the environment: each test runs alone in its own process here
        let sip = self.slot.pbx + 5;
        let rtp = 43000 + (self.slot.http % 1000) * 20;
        Phone::start_with_env(
            "1002",
            "secret",
            sip,
            self.slot.pbx,
            (rtp, rtp + 19),
            "auto",
            dial,
            &[("BS_CODECS", codecs), ("BS_TONE", &tone.to_string())],
        )
    }

    async fn browser(&self, env: &[(&str, &str)]) -> Value {
        let mut all: Vec<(&str, String)> = vec![("SIPHON_URL", format!("http://{}/", self.siphon.http))];
        all.extend(env.iter().map(|(k, v)| (*k, v.to_string())));
        let (code, out, result) = run_browser_script("audio.mjs", &all, Duration::from_secs(90)).await;
        println!("{out}");
        assert_eq!(
            code,
            Some(0),
            "browser script failed:\n{out}\n---- siphon ----\n{}",
            self.siphon.log()
        );
        result.expect("a @result line")
    }
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// The browser calls baresip; both directions carry their tone.
async fn browser_calls_baresip(n: u16, phone_codecs: &str, browser_codec: &str, relay: bool) {
    let lab = AudioLab::start(n);
    let phone = lab.phone(phone_codecs, 440, None);
    let r = lab
        .browser(&[
            ("ROLE", "caller"),
            ("NUMBER", "1002"),
            ("CODEC", browser_codec),
            ("MIC_HZ", "1000"),
            ("EXPECT_HZ", "440"),
        ])
        .await;
    let snr = f(&r["snrDb"]);
    let hz = f(&r["dominantHz"]);
    let latency = f(&r["firstAudioMs"]);
    println!(
        "{browser_codec} <-> {phone_codecs}: browser heard {hz:.0} Hz at {snr:.1} dB SNR, first audio {latency:.0} ms after 200 OK; codecs {}",
        r["codecs"]
    );
    assert!(snr >= 25.0, "the browser heard 440 Hz at only {snr:.1} dB");
    assert!((hz - 440.0).abs() < 30.0, "dominant {hz} Hz");
    assert!(latency < 100.0, "first audio {latency} ms after the answer");
    // baresip's recording of what it received
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rec = phone.last_recording().expect("baresip recorded the call");
    let (rate, samples) = read_wav(&rec);
    let skip = (rate as usize / 2).min(samples.len());
    let far_snr = tone_snr_db(&samples[skip..], rate, 1000.0);
    println!(
        "baresip heard 1 kHz at {far_snr:.1} dB SNR ({} samples at {rate} Hz)",
        samples.len()
    );
    assert!(far_snr >= 25.0, "baresip heard 1 kHz at only {far_snr:.1} dB");
    let log = lab.siphon.log();
    assert!(
        log.contains(&format!("relay={relay}")),
        "bridge mode relay={relay} expected:\n{log}"
    );
}

#[tokio::test]
async fn pcmu_relay() {
    if !netns::inside() {
        return netns::rerun("pcmu_relay");
    }
    browser_calls_baresip(40, "PCMU/8000/1", "PCMU", true).await;
}

#[tokio::test]
async fn pcma_relay() {
    if !netns::inside() {
        return netns::rerun("pcma_relay");
    }
    browser_calls_baresip(41, "PCMA/8000/1", "PCMA", true).await;
}

#[tokio::test]
async fn g722_relay() {
    if !netns::inside() {
        return netns::rerun("g722_relay");
    }
    browser_calls_baresip(42, "G722/16000/1", "G722", true).await;
}

#[tokio::test]
async fn opus_pcmu_transcoding() {
    if !netns::inside() {
        return netns::rerun("opus_pcmu_transcoding");
    }
    browser_calls_baresip(43, "PCMU/8000/1", "opus", false).await;
}
