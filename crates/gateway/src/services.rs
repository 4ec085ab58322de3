//! The embedded PBX's built-in extensions, so a newcomer can test audio alone:
//! 600 echoes what it hears 200 ms later, 601 plays a test signal (and any key pressed,
//! as its DTMF tone), 602 reads back every key pressed as its DTMF tone.
//!
//! Each is an ordinary line of the gateway's SIP user agent, registered at the embedded
//! PBX like a browser's: calls to it are answered through the same SIP and SDP code,
//! and its "media session" is a small task here that plays the part of the browser.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sipline_media::audio::{AudioEncoder, native_rate, opus_packet_samples_48k};
use sipline_media::dtmf::DtmfDetector;
use sipline_media::latch::{Latch, Verdict};
use sipline_media::rtp::RtpPacket;

use crate::counters::{self, Counter};
use sipline_media::sdp::Codec;
use sipline_sip::Account;
use tokio::sync::mpsc;

use crate::media::RtpPorts;
use crate::media_session::{MediaCommand, MediaHandle, SipMedia};
use crate::sip_driver::{CallNotice, LineEvent, SipHandle};

/// What an extension does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extension {
    Echo,
    TestSignal,
    DtmfEcho,
}

impl Extension {
    pub const ALL: [(&'static str, Extension); 3] = [
        ("600", Extension::Echo),
        ("601", Extension::TestSignal),
        ("602", Extension::DtmfEcho),
    ];
}

/// Accounts for the extensions, with fresh random passwords (only the embedded PBX and
/// these lines ever know them).
pub fn accounts(domain: &str) -> Vec<(Account, Extension)> {
    Extension::ALL
        .iter()
        .map(|(user, ext)| {
            let password: String = (0..24).map(|_| fastrand::alphanumeric()).collect();
            (
                Account {
                    user: (*user).to_owned(),
                    auth_user: (*user).to_owned(),
                    password,
                    display_name: Some(
                        match ext {
                            Extension::Echo => "Echo test",
                            Extension::TestSignal => "Test signal",
                            Extension::DtmfEcho => "DTMF echo",
                        }
                        .to_owned(),
                    ),
                    domain: domain.to_owned(),
                },
                *ext,
            )
        })
        .collect()
}

/// Registers the extensions as lines and serves their calls, until the gateway stops.
pub async fn start(sip: SipHandle, extensions: Vec<(Account, Extension)>) {
    for (account, ext) in extensions {
        let (commands, rx) = mpsc::unbounded_channel();
        let (digits_tx, digits_rx) = mpsc::unbounded_channel();
        tokio::spawn(media_task(ext, rx, digits_rx));
        let user = account.user.clone();
        let Ok((line, mut events)) = sip.add_line(account, Some(MediaHandle::new(commands))).await else {
            return;
        };
        tracing::info!(%user, ?ext, "extension ready");
        let sip = sip.clone();
        tokio::spawn(async move {
            // an extension serves one call at a time (its media task has one leg)
            let mut serving: Option<sipline_sip::CallRef> = None;
            while let Some(ev) = events.recv().await {
                match ev {
                    LineEvent::Call(CallNotice::Incoming { call, from, .. }) => {
                        let on = crate::sip_handle::OnCall {
                            line,
                            call: Some(call),
                        };
                        if serving.is_some() {
                            tracing::info!(%user, %from, "extension busy");
                            let _ = sip.hang_up(on, 486).await;
                            continue;
                        }
                        tracing::info!(%user, %from, "extension answers");
                        serving = Some(call);
                        if let Ok(Err(e)) = sip.accept(on).await {
                            tracing::warn!(%user, error = %e, "extension could not answer");
                        }
                    }
                    LineEvent::Call(CallNotice::State { call, status })
                        if status.state.is_final() && serving == Some(call) =>
                    {
                        serving = None;
                    }
                    LineEvent::Call(CallNotice::Dtmf { digit, .. }) => {
                        let _ = digits_tx.send(digit);
                    }
                    LineEvent::Removed => break,
                    _ => {}
                }
            }
        });
    }
}

const FRAME: Duration = Duration::from_millis(20);
const ECHO_DELAY: Duration = Duration::from_millis(200);

async fn media_task(
    ext: Extension,
    mut commands: mpsc::UnboundedReceiver<MediaCommand>,
    mut digits: mpsc::UnboundedReceiver<char>,
) {
    let mut call: Option<ServiceCall> = None;
    let mut tick = tokio::time::interval(FRAME);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = vec![0u8; 2048];
    loop {
        let sock = call.as_ref().map(|c| Arc::clone(&c.ports.rtp));
        tokio::select! {
            cmd = commands.recv() => match cmd {
                Some(MediaCommand::Attach { ports, leg, .. }) => call = Some(ServiceCall::new(ext, *ports, *leg)),
                Some(MediaCommand::Update { leg, .. }) => {
                    if let Some(c) = call.as_mut() {
                        c.update(*leg);
                    }
                }
                Some(MediaCommand::Detach { .. }) => call = None,
                Some(MediaCommand::Offer { reply, .. }) => {
                    let _ = reply.send(Err("an extension has no WebRTC leg".into()));
                }
                Some(
                    MediaCommand::Candidate(_)
                    | MediaCommand::Dtmf { .. }
                    | MediaCommand::Focus { .. }
                    | MediaCommand::BrowserAway(_),
                ) => {}
                None => return,
            },
            Some(d) = digits.recv() => {
                if let Some(c) = call.as_mut() {
                    c.on_digit(d);
                }
            }
            r = async {
                match &sock {
                    Some(s) => s.recv_from(&mut buf).await.ok(),
                    None => std::future::pending().await,
                }
            } => {
                if let (Some((n, from)), Some(c)) = (r, call.as_mut()) {
                    c.on_rtp(Instant::now(), from, &buf[..n]);
                }
            }
            _ = tick.tick() => {
                if let Some(c) = call.as_mut() {
                    c.on_tick(Instant::now());
                }
            }
        }
    }
}

/// One call to an extension.
struct ServiceCall {
    ext: Extension,
    ports: RtpPorts,
    leg: SipMedia,
    /// Where its RTP goes (symmetric RTP, as for calls).
    latch: Latch,
    encoder: Option<AudioEncoder>,
    ssrc: u32,
    seq: u16,
    ts: u32,
    /// Echo: payloads waiting for their moment.
    echo: VecDeque<(Instant, u8, Vec<u8>)>,
    /// Tones to play before anything else (DTMF read-back), as PCM at the encoder rate.
    tones: VecDeque<i16>,
    /// Samples of the test signal played so far.
    played: u64,
    detector: DtmfDetector,
}

impl ServiceCall {
    fn new(ext: Extension, ports: RtpPorts, leg: SipMedia) -> ServiceCall {
        let codec = leg.leg.codec.codec;
        ServiceCall {
            ext,
            ports,
            latch: Latch::new(Instant::now(), leg.remote_rtp, leg.remote_rtcp, true),
            encoder: AudioEncoder::new(codec, rate_for(codec)),
            leg,
            ssrc: fastrand::u32(..),
            seq: fastrand::u16(..),
            ts: fastrand::u32(..),
            echo: VecDeque::new(),
            tones: VecDeque::new(),
            played: 0,
            detector: DtmfDetector::default(),
        }
    }

    fn update(&mut self, leg: SipMedia) {
        if leg.leg.codec != self.leg.leg.codec {
            self.encoder = AudioEncoder::new(leg.leg.codec.codec, rate_for(leg.leg.codec.codec));
        }
        if leg.remote_rtp != self.leg.remote_rtp {
            self.latch
                .renegotiated(Instant::now(), leg.remote_rtp, leg.remote_rtcp);
        }
        self.leg = leg;
    }

    fn on_rtp(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let Ok(p) = RtpPacket::parse(data) else { return };
        if self.latch.on_rtp(now, from, data) == Verdict::Drop {
            counters::inc(Counter::RtpForeignSource);
            return;
        }
        if Some(p.payload_type) == self.leg.leg.dtmf_payload_type {
            if let Some(d) = self.detector.on_packet(p.timestamp, p.payload) {
                self.on_digit(d);
            }
            return;
        }
        if self.ext == Extension::Echo && p.payload_type == self.leg.leg.codec.payload_type {
            self.echo
                .push_back((now + ECHO_DELAY, p.payload_type, p.payload.to_vec()));
        }
    }

    fn on_digit(&mut self, digit: char) {
        if self.ext == Extension::Echo {
            return;
        }
        tracing::info!(ext = ?self.ext, %digit, "extension heard a key");
        let rate = self.encoder.as_ref().map(|e| e.rate()).unwrap_or(8000);
        if let Some((low, high)) = dtmf_pair(digit) {
            let tone = (rate as usize) / 5; // 200 ms
            let gap = (rate as usize) / 10;
            self.tones.extend((0..tone).map(|i| {
                let t = i as f64 / f64::from(rate);
                let v = 0.35
                    * ((2.0 * std::f64::consts::PI * low * t).sin()
                        + (2.0 * std::f64::consts::PI * high * t).sin());
                (v * 32767.0 * 0.8) as i16
            }));
            self.tones.extend(std::iter::repeat_n(0, gap));
        }
    }

    fn send(&mut self, pt: u8, payload: &[u8], ticks: u32) {
        let p = RtpPacket {
            marker: false,
            payload_type: pt,
            sequence: self.seq,
            timestamp: self.ts,
            ssrc: self.ssrc,
            payload,
        };
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(ticks);
        if self.leg.leg.send {
            let _ = self
                .ports
                .rtp_tx
                .send_to(&p.to_vec(), self.latch.rtp_destination());
        }
    }

    fn on_tick(&mut self, now: Instant) {
        let codec = self.leg.leg.codec;
        if self.ext == Extension::Echo {
            while self.echo.front().is_some_and(|(at, _, _)| *at <= now) {
                let Some((_, pt, payload)) = self.echo.pop_front() else {
                    break;
                };
                let ticks = match codec.codec {
                    Codec::Opus => opus_packet_samples_48k(&payload).unwrap_or(960),
                    _ => payload.len() as u32,
                };
                self.send(pt, &payload, ticks);
            }
            return;
        }
        let Some(encoder) = self.encoder.as_mut() else {
            return;
        };
        let rate = encoder.rate();
        let n = (rate / 50) as usize;
        let mut frame = Vec::with_capacity(n);
        while frame.len() < n {
            match self.tones.pop_front() {
                Some(s) => frame.push(s),
                None => break,
            }
        }
        if frame.len() < n {
            match self.ext {
                Extension::TestSignal => {
                    // 0.4 s at 440 Hz, 0.4 s at 880 Hz, 0.2 s of silence, again and again
                    while frame.len() < n {
                        let i = self.played;
                        self.played += 1;
                        let t = i as f64 / f64::from(rate);
                        let phase = t % 1.0;
                        let hz = if phase < 0.4 {
                            440.0
                        } else if phase < 0.8 {
                            880.0
                        } else {
                            0.0
                        };
                        let v = if hz == 0.0 {
                            0.0
                        } else {
                            (2.0 * std::f64::consts::PI * hz * t).sin() * 0.5
                        };
                        frame.push((v * 32767.0) as i16);
                    }
                }
                _ => frame.resize(n, 0),
            }
        }
        let payload = encoder.encode(&frame);
        let ticks = codec.codec.clock_rate() / 50;
        self.send(codec.payload_type, &payload, ticks);
    }
}

/// The PCM rate an extension encodes at.
fn rate_for(codec: Codec) -> u32 {
    match codec {
        Codec::Opus => 16_000,
        c => native_rate(c),
    }
}

/// The two frequencies of a DTMF key.
pub fn dtmf_pair(digit: char) -> Option<(f64, f64)> {
    const ROWS: [f64; 4] = [697.0, 770.0, 852.0, 941.0];
    const COLS: [f64; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
    let (r, c) = match digit.to_ascii_uppercase() {
        '1' => (0, 0),
        '2' => (0, 1),
        '3' => (0, 2),
        'A' => (0, 3),
        '4' => (1, 0),
        '5' => (1, 1),
        '6' => (1, 2),
        'B' => (1, 3),
        '7' => (2, 0),
        '8' => (2, 1),
        '9' => (2, 2),
        'C' => (2, 3),
        '*' => (3, 0),
        '0' => (3, 1),
        '#' => (3, 2),
        'D' => (3, 3),
        _ => return None,
    };
    Some((ROWS[r], COLS[c]))
}
