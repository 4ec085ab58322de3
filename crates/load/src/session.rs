//! One simulated browser from connect to close, in the order the web phone does it:
//! WebSocket, admission, account, registration, WebRTC offer and connection; then the
//! call, the tone for the hold time, the hang-up; and the figures of that call. Every
//! step has a generous deadline (a loaded gateway is slow, not broken), and a failed
//! step ends the session with the reason in its record.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::Options;
use crate::audio::AudioBank;
use crate::report::{CallRecord, GatewayLeg};
use crate::signalling::{LineState, Signalling, Wait};
use crate::webrtc::{self, MediaHandle, Offerer};

/// Deadlines of the steps.
const ADMISSION: Duration = Duration::from_secs(30);
const REGISTRATION: Duration = Duration::from_secs(30);
const WEBRTC: Duration = Duration::from_secs(30);
const REQUEST: Duration = Duration::from_secs(15);
const ANSWER: Duration = Duration::from_secs(30);
const HANGUP: Duration = Duration::from_secs(15);
/// After the last frame, how long echoes still on their way are waited for.
const DRAIN: Duration = Duration::from_millis(300);

/// Sessions in each phase, for the progress lines.
#[derive(Debug, Default)]
pub struct Gauges {
    /// WebSocket open and admitted.
    pub up: AtomicUsize,
    pub registered: AtomicUsize,
    pub in_call: AtomicUsize,
    pub done: AtomicUsize,
    pub failed: AtomicUsize,
}

/// Holds one count of a gauge while alive.
struct Held<'a>(&'a AtomicUsize);

impl<'a> Held<'a> {
    fn new(g: &'a AtomicUsize) -> Held<'a> {
        g.fetch_add(1, Ordering::Relaxed);
        Held(g)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What every session of a run shares.
pub struct Shared {
    pub options: Options,
    pub bank: Arc<AudioBank>,
    pub gauges: Gauges,
}

/// Runs session `index` to its end; its record says how far it got and why it stopped.
pub async fn run(index: usize, shared: Arc<Shared>) -> CallRecord {
    let mut record = CallRecord::new(index);
    let outcome = drive(&shared, &mut record).await;
    if let Err(why) = outcome {
        record.error = Some(why);
    }
    record.ok = record.error.is_none();
    let g = &shared.gauges;
    if record.ok {
        g.done.fetch_add(1, Ordering::Relaxed);
    } else {
        g.failed.fetch_add(1, Ordering::Relaxed);
    }
    record
}

fn deadline(d: Duration) -> Instant {
    Instant::now() + d
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e4).round() / 10.0
}

async fn drive(shared: &Shared, record: &mut CallRecord) -> Result<(), String> {
    let o = &shared.options;
    let t0 = Instant::now();
    let mut sig = Signalling::connect(&o.url, o.token.as_deref()).await?;
    let result = admitted(shared, record, &mut sig, t0).await;
    // a clean close whatever happened (a connectionLimit socket is closed already)
    sig.close().await;
    result
}

/// From the WebSocket's opening to the end of the session.
async fn admitted(
    shared: &Shared,
    record: &mut CallRecord,
    sig: &mut Signalling,
    t0: Instant,
) -> Result<(), String> {
    let o = &shared.options;
    let g = &shared.gauges;
    // admission, as the page sees it first
    match sig
        .wait_until(deadline(ADMISSION), |s| s.admission.is_some())
        .await
    {
        Wait::Met => {}
        Wait::Deadline => return Err("not admitted: no registrationStateChanged".into()),
        Wait::Closed(why) => return Err(format!("not admitted: {why}")),
    }
    if sig.state.admission.as_deref() != Some("accepted") {
        let mut why = sig.state.admission.clone().unwrap_or_default();
        // the close that follows says which limit
        if let Wait::Closed(c) = sig.wait_until(deadline(Duration::from_secs(2)), |_| false).await {
            why = format!("{why}: {c}");
        }
        return Err(why);
    }
    let _up = Held::new(&g.up);

    // the WebRTC offer right away, while the line registers (as sipline.js does)
    let (offerer, offer) = Offerer::new(o.bind, o.codec)
        .await
        .map_err(|e| format!("UDP socket on {}: {e}", o.bind))?;
    let answer = sig
        .request("offer", json!({"type": "offer", "sdp": offer}), deadline(REQUEST))
        .await;
    record.user = sig.state.user.clone();
    let answer = answer?;
    let answer = answer["sdp"].as_str().ok_or("offer: the result has no sdp")?;
    let negotiated = offerer.accept_answer(answer)?;
    let seed = fastrand::u64(..);
    let mut media = webrtc::spawn(negotiated, Arc::clone(&shared.bank), o.tone_hz, seed);
    if let Some(events) = media.take_events() {
        sig.attach_media(events);
    }

    let registered = sig
        .wait_until(deadline(REGISTRATION), |s| {
            s.line.as_deref() == Some("registered")
        })
        .await;
    record.user = record.user.take().or_else(|| sig.state.user.clone());
    match registered {
        Wait::Met => record.register_ms = Some(ms(t0.elapsed())),
        Wait::Deadline => {
            let line = sig.state.line.as_deref().unwrap_or("unknown");
            let status = sig.state.line_status.as_deref().unwrap_or("");
            return Err(format!("not registered: line {line} {status}")
                .trim_end()
                .to_owned());
        }
        Wait::Closed(why) => return Err(format!("not registered: {why}")),
    }
    let _registered = Held::new(&g.registered);
    match sig.wait_until(deadline(WEBRTC), |s| s.webrtc.is_some()).await {
        Wait::Met => {}
        Wait::Deadline => return Err("WebRTC did not connect (ICE/DTLS)".into()),
        Wait::Closed(why) => return Err(why),
    }
    if let Some(Err(why)) = &sig.state.webrtc {
        return Err(why.clone());
    }
    record.webrtc_ms = Some(ms(t0.elapsed()));
    if o.idle {
        stay_idle(o.hold_secs, sig).await
    } else {
        call(shared, record, sig, &media).await
    }
}

/// An idle session: registered, WebRTC up, no call and no media, for the hold time.
async fn stay_idle(hold_secs: f64, sig: &mut Signalling) -> Result<(), String> {
    let broke = |s: &LineState| s.line.as_deref() != Some("registered") || matches!(s.webrtc, Some(Err(_)));
    match sig
        .wait_until(deadline(Duration::from_secs_f64(hold_secs)), broke)
        .await
    {
        Wait::Deadline => Ok(()),
        Wait::Met => Err(match &sig.state.webrtc {
            Some(Err(why)) => why.clone(),
            _ => format!(
                "line went {} while idle",
                sig.state.line.as_deref().unwrap_or("away")
            ),
        }),
        Wait::Closed(why) => Err(why),
    }
}

/// The call: placed, answered, the tone for the hold time, hung up; then its figures.
async fn call(
    shared: &Shared,
    record: &mut CallRecord,
    sig: &mut Signalling,
    media: &MediaHandle,
) -> Result<(), String> {
    let o = &shared.options;
    let asked = Instant::now();
    let result = sig
        .request("call", json!({"number": o.number}), deadline(REQUEST))
        .await?;
    record.call_id = result["callId"].as_str().map(str::to_owned);
    let answered = sig
        .wait_until(deadline(ANSWER), |s| {
            s.in_call_at.is_some() || s.call_final.is_some()
        })
        .await;
    let in_call_at = match (answered, sig.state.in_call_at) {
        (_, Some(at)) => at,
        (Wait::Closed(why), None) => return Err(format!("call: {why}")),
        (Wait::Deadline, None) => {
            let state = sig.state.call_state.as_deref().unwrap_or("without a state");
            return Err(format!("not answered: call still {state}"));
        }
        (Wait::Met, None) => {
            let fin = sig.state.call_final.as_deref().unwrap_or("ended");
            return Err(format!("call {fin}"));
        }
    };
    record.connected = true;
    record.setup_ms = Some(ms(in_call_at.saturating_duration_since(asked)));
    let in_call = Held::new(&shared.gauges.in_call);
    media.start();

    // the hold time: the call must neither end nor lose its media
    let hold_end = in_call_at + Duration::from_secs_f64(o.hold_secs);
    let broke = |s: &LineState| s.call_final.is_some() || matches!(s.webrtc, Some(Err(_)));
    let held = sig.wait_until(hold_end, broke).await;
    media.stop();
    let mut error = match held {
        Wait::Deadline => None,
        Wait::Met => Some(match (&sig.state.webrtc, &sig.state.call_final) {
            (Some(Err(why)), _) => why.clone(),
            (_, Some(f)) => format!(
                "call ended early, {:.1} s into it: {f}",
                in_call_at.elapsed().as_secs_f64()
            ),
            _ => "call ended early".into(),
        }),
        Wait::Closed(why) => Some(why),
    };
    if error.is_none() {
        error = hang_up(sig).await.err();
    }
    drop(in_call);

    record.final_state = sig.state.call_final.clone();
    record.call_stats_received = sig.state.call_stats_count;
    if let Some(stats) = &sig.state.call_stats {
        record.gateway_browser_leg = GatewayLeg::from_json(&stats["browser"]);
        record.gateway_sip_leg = GatewayLeg::from_json(&stats["sip"]);
    }
    let Some(m) = media.report().await else {
        return Err(error.unwrap_or_else(|| "the media task stopped".into()));
    };
    record.packets_sent = m.packets_sent;
    record.packets_received = m.receive.received;
    record.packets_lost = m.receive.lost();
    let expected = m.receive.expected();
    record.loss_pct = (expected > 0).then(|| m.receive.lost() as f64 * 100.0 / expected as f64);
    record.jitter_ms = (m.receive.received > 1).then(|| (m.receive.jitter_ms() * 100.0).round() / 100.0);
    record.first_audio_ms = m
        .first_rtp_at
        .map(|t| ms(t.saturating_duration_since(in_call_at)));
    record.late_frames = m.late_frames;
    record.send_errors = m.send_errors;
    record.matched_share = m.echo.matched_share.map(|s| (s * 1000.0).round() / 1000.0);
    record.tone_snr_db = m.echo.tone_snr_db.map(|s| (s * 10.0).round() / 10.0);
    record.echo_ok = m.echo.ok;
    match error.or(m.echo.reason) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Lets the last echoes come back, hangs up and waits for the call to complete.
async fn hang_up(sig: &mut Signalling) -> Result<(), String> {
    let _ = sig.wait_until(deadline(DRAIN), |s| s.call_final.is_some()).await;
    if sig.state.call_final.is_some() {
        return Ok(());
    }
    sig.request("hangUp", json!({}), deadline(REQUEST)).await?;
    match sig.wait_until(deadline(HANGUP), |s| s.call_final.is_some()).await {
        Wait::Met => Ok(()),
        Wait::Deadline => Err("hung up, but the call never completed".into()),
        Wait::Closed(why) => Err(why),
    }
}
