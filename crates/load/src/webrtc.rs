//! The WebRTC side of one simulated browser: str0m as the offerer, as a browser is.
//!
//! A full ICE agent (controlling; the gateway is ICE-lite and gives its host candidate
//! in its answer) on one UDP socket of its own with one host candidate, DTLS-SRTP, one
//! `sendrecv` audio m-line with the chosen codec and telephone-event. Media goes
//! through str0m's direct API in RTP mode, as the gateway's side does: we write each
//! 20 ms packet ourselves (our sequence numbers and timestamps) and read
//! `Event::RtpPacket`s, with no depacketising or jitter buffer in between.
//!
//! One task per session owns the `Rtc` and its socket ([`spawn`]); the session's
//! signalling task starts and stops the tone and asks for the figures at the end.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::{Codec, FormatParams};
use str0m::media::{Direction, Frequency, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpPacket, RtpWrite};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use crate::CodecChoice;
use crate::audio::{AudioBank, FrameSource};
use crate::receive::{EchoCheck, EchoVerdict, ReceiveStats};

const FRAME: Duration = Duration::from_millis(20);
/// Behind schedule by more than this, the sender skips frames instead of bursting them
/// (counted as `late_frames`: the tool could not keep up).
const MAX_LAG: Duration = Duration::from_millis(200);

/// A peer connection whose offer is out, waiting for the answer.
pub struct Offerer {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    mid: Mid,
    codec: CodecChoice,
    pending: SdpPendingOffer,
}

impl Offerer {
    /// Binds a socket on `bind`, and creates the offer (returned as SDP text).
    pub async fn new(bind: IpAddr, codec: CodecChoice) -> io::Result<(Offerer, String)> {
        static CRYPTO: Once = Once::new();
        CRYPTO.call_once(|| str0m::crypto::from_feature_flags().install_process_default());
        let socket = UdpSocket::bind((bind, 0)).await?;
        let local = socket.local_addr()?;
        let mut config = RtcConfig::new().set_rtp_mode(true).clear_codecs();
        config = match codec {
            CodecChoice::Pcmu => config.enable_pcmu(true, false),
            CodecChoice::Opus => config.enable_opus(true, false),
        };
        // telephone-event at both clocks, as browsers offer it
        let codecs = config.codec_config();
        codecs.add_config(
            101.into(),
            None,
            Codec::Tele,
            Frequency::EIGHT_KHZ,
            None,
            FormatParams::parse_line("0-16"),
        );
        codecs.add_config(
            110.into(),
            None,
            Codec::Tele,
            Frequency::FORTY_EIGHT_KHZ,
            None,
            FormatParams::parse_line("0-16"),
        );
        let mut rtc = config.build(Instant::now());
        let candidate = Candidate::host(local, "udp").map_err(|e| io::Error::other(e.to_string()))?;
        rtc.add_local_candidate(candidate);
        let mut api = rtc.sdp_api();
        let mid = api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
        let (offer, pending) = api
            .apply()
            .ok_or_else(|| io::Error::other("str0m made no offer"))?;
        let sdp = offer.to_sdp_string();
        Ok((
            Offerer {
                rtc,
                socket,
                local,
                mid,
                codec,
                pending,
            },
            sdp,
        ))
    }

    /// Takes the gateway's answer: ICE and DTLS start once the task runs.
    pub fn accept_answer(mut self, sdp: &str) -> Result<Negotiated, String> {
        let answer = SdpAnswer::from_sdp_string(sdp).map_err(|e| format!("unreadable answer: {e}"))?;
        self.rtc
            .sdp_api()
            .accept_answer(self.pending, answer)
            .map_err(|e| format!("answer not acceptable: {e}"))?;
        let wanted = match self.codec {
            CodecChoice::Pcmu => Codec::PCMU,
            CodecChoice::Opus => Codec::Opus,
        };
        let remote: Vec<Pt> = self
            .rtc
            .media(self.mid)
            .map(|m| m.remote_pts().to_vec())
            .unwrap_or_default();
        let ours: Vec<Pt> = self
            .rtc
            .codec_config()
            .params()
            .iter()
            .filter(|p| p.spec().codec == wanted)
            .map(|p| p.pt())
            .collect();
        let pt = ours
            .iter()
            .copied()
            .find(|pt| remote.contains(pt))
            .or_else(|| remote.is_empty().then(|| ours.first().copied()).flatten())
            .ok_or_else(|| format!("the gateway did not accept {}", self.codec.name()))?;
        Ok(Negotiated {
            rtc: self.rtc,
            socket: self.socket,
            local: self.local,
            mid: self.mid,
            pt,
            peer: single_host_candidate(sdp),
        })
    }
}

/// A negotiated peer connection, ready to be driven.
pub struct Negotiated {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    mid: Mid,
    pt: Pt,
    /// The gateway's only candidate (it is ICE-lite), when the answer has exactly one.
    peer: Option<SocketAddr>,
}

/// The address of the one UDP host candidate of an SDP, if it has exactly one. The
/// socket is then connected to it: the kernel keeps the route, and the sends are cheaper.
fn single_host_candidate(sdp: &str) -> Option<SocketAddr> {
    let mut found = None;
    for line in sdp.lines() {
        let Some(c) = line.trim().strip_prefix("a=candidate:") else {
            continue;
        };
        // foundation component transport priority address port typ kind ...
        let f: Vec<&str> = c.split_whitespace().collect();
        if f.len() < 8 || !f[2].eq_ignore_ascii_case("udp") || f[6] != "typ" || f[7] != "host" {
            return None;
        }
        let addr = SocketAddr::new(f[4].parse().ok()?, f[5].parse().ok()?);
        if found.replace(addr).is_some_and(|a| a != addr) {
            return None;
        }
    }
    found
}

/// What the media task tells the session.
#[derive(Debug, Clone, PartialEq)]
pub enum MediaEvent {
    /// ICE and DTLS are up (str0m's `Event::Connected`).
    Connected,
    /// ICE lost the gateway, or str0m gave up.
    Failed(String),
}

enum Command {
    /// The call is up: stream the tone (and measure what comes back) from now.
    Start,
    /// Stop sending (what is still on its way back keeps being counted).
    Stop,
    Report(oneshot::Sender<MediaReport>),
}

/// One call's media, as this end saw it.
#[derive(Debug, Clone)]
pub struct MediaReport {
    pub started_at: Option<Instant>,
    pub packets_sent: u64,
    /// Frames skipped because the tool fell behind its 20 ms schedule.
    pub late_frames: u64,
    /// Packets the socket refused (a full send buffer).
    pub send_errors: u64,
    pub receive: ReceiveStats,
    pub first_rtp_at: Option<Instant>,
    /// Packets of another payload type (telephone-event, comfort noise…).
    pub other_payload_types: u64,
    pub echo: EchoVerdict,
}

/// The session's handle on its media task; dropping it ends the task.
pub struct MediaHandle {
    commands: mpsc::UnboundedSender<Command>,
    events: Option<mpsc::UnboundedReceiver<MediaEvent>>,
}

impl MediaHandle {
    /// The task's events (once).
    pub fn take_events(&mut self) -> Option<mpsc::UnboundedReceiver<MediaEvent>> {
        self.events.take()
    }

    pub fn start(&self) {
        let _ = self.commands.send(Command::Start);
    }

    pub fn stop(&self) {
        let _ = self.commands.send(Command::Stop);
    }

    pub async fn report(&self) -> Option<MediaReport> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::Report(tx)).ok()?;
        rx.await.ok()
    }
}

/// Starts the media task of a negotiated connection; `seed` makes its audio unique.
pub fn spawn(neg: Negotiated, bank: Arc<AudioBank>, tone_hz: u32, seed: u64) -> MediaHandle {
    let (commands, rx) = mpsc::unbounded_channel();
    let (events_tx, events) = mpsc::unbounded_channel();
    let codec = bank.codec();
    let task = MediaTask {
        peer: neg.peer,
        rtc: neg.rtc,
        socket: neg.socket,
        local: neg.local,
        mid: neg.mid,
        pt: neg.pt,
        events: events_tx,
        dead: false,
        source: FrameSource::new(bank, seed),
        sending: None,
        started_at: None,
        seq: u64::from(fastrand::u16(..8192)),
        ts: fastrand::u32(..),
        packets_sent: 0,
        late_frames: 0,
        send_errors: 0,
        receive: ReceiveStats::new(codec.clock_rate()),
        echo: EchoCheck::new(codec, tone_hz),
        first_rtp_at: None,
        other_payload_types: 0,
    };
    tokio::spawn(task.run(rx));
    MediaHandle {
        commands,
        events: Some(events),
    }
}

struct MediaTask {
    /// Where the socket is connected (everything goes there once ICE is done).
    peer: Option<SocketAddr>,
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    mid: Mid,
    pt: Pt,
    events: mpsc::UnboundedSender<MediaEvent>,
    dead: bool,
    source: FrameSource,
    /// When the next frame is due, while the tone plays.
    sending: Option<Instant>,
    started_at: Option<Instant>,
    seq: u64,
    ts: u32,
    packets_sent: u64,
    late_frames: u64,
    send_errors: u64,
    receive: ReceiveStats,
    echo: EchoCheck,
    first_rtp_at: Option<Instant>,
    other_payload_types: u64,
}

impl MediaTask {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut buf = vec![0u8; 2048];
        if let Some(peer) = self.peer
            && self.socket.connect(peer).await.is_err()
        {
            self.peer = None;
        }
        let sleep = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(sleep);
        loop {
            let mut wake = self.drive();
            if let Some(next) = self.sending {
                wake = wake.min(next);
            }
            let wake = tokio::time::Instant::from_std(wake);
            if sleep.deadline() != wake {
                sleep.as_mut().reset(wake);
            }
            tokio::select! {
                r = self.socket.recv_from(&mut buf) => {
                    if let Ok((n, source)) = r {
                        self.receive_datagram(source, &buf[..n]);
                        // take whatever else is queued before going round again
                        while let Ok((n, source)) = self.socket.try_recv_from(&mut buf) {
                            self.drive();
                            self.receive_datagram(source, &buf[..n]);
                        }
                    }
                }
                cmd = commands.recv() => match cmd {
                    None => return,
                    Some(Command::Start) => {
                        let now = Instant::now();
                        self.started_at.get_or_insert(now);
                        self.sending = Some(now);
                    }
                    Some(Command::Stop) => self.sending = None,
                    Some(Command::Report(reply)) => {
                        let _ = reply.send(self.report());
                    }
                },
                _ = &mut sleep => {
                    let now = Instant::now();
                    // writing a frame drives str0m's clock too
                    if !self.send_due(now) && !self.dead {
                        let _ = self.rtc.handle_input(Input::Timeout(now));
                    }
                }
            }
        }
    }

    /// Runs str0m until it has nothing more to say; returns when it wants to be woken.
    fn drive(&mut self) -> Instant {
        let idle = Instant::now() + Duration::from_secs(3600);
        if self.dead {
            return idle;
        }
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Transmit(t)) => {
                    let sent = if Some(t.destination) == self.peer {
                        self.socket.try_send(&t.contents)
                    } else {
                        self.socket.try_send_to(&t.contents, t.destination)
                    };
                    if sent.is_err() {
                        self.send_errors += 1;
                    }
                }
                Ok(Output::Timeout(t)) => return t,
                Ok(Output::Event(e)) => self.on_event(e),
                Err(e) => {
                    self.fail(format!("WebRTC failed: {e}"));
                    return idle;
                }
            }
        }
    }

    fn fail(&mut self, why: String) {
        if !self.dead {
            self.dead = true;
            self.sending = None;
            let _ = self.events.send(MediaEvent::Failed(why));
        }
    }

    fn on_event(&mut self, e: Event) {
        match e {
            Event::Connected => {
                let _ = self.events.send(MediaEvent::Connected);
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                self.fail("ICE disconnected".into());
            }
            Event::RtpPacket(p) => self.on_rtp(&p),
            _ => {}
        }
    }

    fn on_rtp(&mut self, p: &RtpPacket) {
        if self.started_at.is_none() {
            // nothing is expected before the call; not part of any call's figures
            return;
        }
        self.receive.on_packet(*p.seq_no, p.header.timestamp, p.timestamp);
        if p.header.payload_type == self.pt {
            self.first_rtp_at.get_or_insert(p.timestamp);
            self.echo.on_received(&p.payload);
        } else {
            self.other_payload_types += 1;
        }
    }

    fn receive_datagram(&mut self, source: SocketAddr, data: &[u8]) {
        if self.dead {
            return;
        }
        let Ok(contents) = data.try_into() else { return };
        let input = Input::Receive(
            Instant::now(),
            Receive {
                proto: Protocol::Udp,
                source,
                destination: self.local,
                contents,
            },
        );
        if self.rtc.accepts(&input) {
            let _ = self.rtc.handle_input(input);
        }
    }

    /// Writes every frame that is due by `now`; false when none was.
    fn send_due(&mut self, now: Instant) -> bool {
        let Some(mut next) = self.sending else {
            return false;
        };
        if next > now {
            return false;
        }
        let ticks = self.source.ticks_per_frame();
        if now.saturating_duration_since(next) > MAX_LAG {
            while next + FRAME <= now {
                next += FRAME;
                self.late_frames += 1;
                self.ts = self.ts.wrapping_add(ticks);
            }
        }
        while next <= now && !self.dead {
            let payload = self.source.next_payload();
            self.echo.on_sent(&payload);
            let mut api = self.rtc.direct_api();
            if let Some(tx) = api.stream_tx_by_mid(self.mid, None) {
                tx.write_rtp(RtpWrite::new(self.pt, self.seq.into(), self.ts, now, payload));
                self.packets_sent += 1;
            }
            self.seq += 1;
            self.ts = self.ts.wrapping_add(ticks);
            next += FRAME;
            // str0m loses a packet written before the previous one was polled out
            let _ = self.rtc.handle_input(Input::Timeout(now));
            self.drive();
        }
        if self.sending.is_some() {
            self.sending = Some(next);
        }
        true
    }

    fn report(&self) -> MediaReport {
        MediaReport {
            started_at: self.started_at,
            packets_sent: self.packets_sent,
            late_frames: self.late_frames,
            send_errors: self.send_errors,
            receive: self.receive.clone(),
            first_rtp_at: self.first_rtp_at,
            other_payload_types: self.other_payload_types,
            echo: self.echo.verdict(self.packets_sent, self.receive.received),
        }
    }
}
