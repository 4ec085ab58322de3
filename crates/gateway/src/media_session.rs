//! One browser's media (the original example's media bridge, per client): the WebRTC
//! peer connection, sans-IO in str0m, negotiated right after admission and kept up for
//! the whole session; and, while a call has media, that call's plain RTP/RTCP ports
//! and the [`Bridge`] between the two. One task owns all of it, so packets cross from
//! one leg to the other without locks or channels.
//!
//! Each session's WebRTC leg has its own UDP port from the RTP range (ICE-lite, one
//! host candidate on the advertised address). One port per session keeps the
//! demultiplexing in the kernel; a shared port would need our own STUN-ufrag routing
//! for no gain at the session counts one gateway serves.
//!
//! A line with several calls (call waiting) has one call bridged to the browser: the
//! last one attached or turned to ([`MediaCommand::Focus`]). The others are parked:
//! their ports stay ours, nothing is read or sent on them (the far ends are on hold).
//! The bridge moves with the focus, so the browser hears one continuous stream.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use sipline_media::bridge::{Bridge, BrowserLeg, LegCodec, LegCounters, Output as BridgeOutput, Side};
use sipline_media::latch::{Latch, Verdict};
use sipline_media::sdp::{Codec as MediaCodec, SrtpKeys};
use sipline_media::srtp::SrtpContext;
use sipline_media::watchdog::{Timeouts, Watchdog};
use sipline_sip::CallRef;
use str0m::change::SdpOffer;
use str0m::format::{Codec, FormatParams};
use str0m::media::{Frequency, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::RtpWrite;
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use crate::counters::{self, Counter};
use crate::media::RtpPorts;
use crate::peer_log::Kind;
use crate::peer_warn;

/// What the SIP driver and the session ask of a media session.
pub enum MediaCommand {
    /// The browser's SDP offer; the reply is our answer.
    Offer {
        sdp: String,
        reply: oneshot::Sender<Result<String, String>>,
    },
    /// A trickled ICE candidate of the browser.
    Candidate(String),
    /// A call's RTP leg is negotiated: bridge it. (The large fields are boxed: every
    /// session's command channel allocates blocks of 32 commands.)
    Attach {
        call: CallRef,
        ports: Box<RtpPorts>,
        leg: Box<SipMedia>,
        /// Bridge it to the browser now; else it waits parked (the browser talks in
        /// another call of its line) until [`MediaCommand::Focus`].
        focus: bool,
    },
    /// The call's media was negotiated again (re-INVITE, hold).
    Update { call: CallRef, leg: Box<SipMedia> },
    /// The call is over: stop and give its ports back.
    Detach { call: CallRef },
    /// The browser turns to this call (of several on its line): bridge it instead of
    /// the one bridged now, which is parked.
    Focus { call: CallRef },
    /// Key presses to send into the call as RFC 4733 events.
    Dtmf { call: CallRef, digits: String },
    /// The browser's WebSocket dropped and its session waits for it (`true`), or it came
    /// back (`false`): the silence of its WebRTC leg meanwhile is no media timeout.
    BrowserAway(bool),
}

pub use sipline_call::SipMedia;

/// What a media session tells its browser session.
#[derive(Debug, Clone)]
pub enum MediaEvent {
    /// ICE and DTLS are up.
    Connected,
    /// The browser's connection went away.
    Disconnected,
    /// A key press from a leg. From the browser it has already been sent on as an
    /// RFC 4733 event when the far end takes those; otherwise `needs_info` asks the
    /// SIP side to send it as INFO.
    Dtmf {
        call: CallRef,
        digit: char,
        from: Side,
        needs_info: bool,
    },
    /// Statistics every 5 s during a call (boxed, as the rarest and largest event:
    /// every session's event channel allocates blocks of 32 events).
    Stats(Box<CallStats>),
    /// The first packet of a call's audio went to the browser (for latency figures);
    /// `far_end_at` is when the far end's first RTP packet arrived.
    FirstAudio { call: CallRef, far_end_at: Instant },
    /// A leg of the call went silent past `media.timeout`: the call must end.
    MediaTimeout { call: CallRef, reason: String },
}

/// A call's statistics, both legs.
#[derive(Debug, Clone)]
pub struct CallStats {
    pub call: CallRef,
    pub browser: LegCounters,
    pub browser_codec: String,
    pub sip: LegCounters,
    pub sip_codec: String,
}

/// Settings of media sessions.
#[derive(Debug, Clone)]
pub struct MediaSettings {
    /// Send RTP to where the far end's RTP comes from, not to what its SDP says.
    pub symmetric_rtp: bool,
    /// Voice codecs accepted from the browser, in order of preference.
    pub codecs: Vec<MediaCodec>,
    /// How long a call's legs may stay silent before it is ended.
    pub timeouts: Timeouts,
}

/// A handle on a media session task; dropping every handle ends it.
#[derive(Clone)]
pub struct MediaHandle {
    commands: mpsc::UnboundedSender<MediaCommand>,
}

impl MediaHandle {
    /// A handle for whatever task serves these commands (a media session, or an
    /// extension of the embedded PBX).
    pub fn new(commands: mpsc::UnboundedSender<MediaCommand>) -> MediaHandle {
        MediaHandle { commands }
    }

    pub fn send(&self, cmd: MediaCommand) {
        let _ = self.commands.send(cmd);
    }

    /// Negotiates the WebRTC leg: the browser's offer in, our answer out.
    pub async fn offer(&self, sdp: String) -> Result<String, String> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(MediaCommand::Offer { sdp, reply })
            .map_err(|_| "media session is gone".to_owned())?;
        rx.await.map_err(|_| "media session is gone".to_owned())?
    }
}

/// Starts the media session of one browser on `ports` (its WebRTC port).
pub fn spawn(
    ip: IpAddr,
    ports: RtpPorts,
    settings: MediaSettings,
    events: mpsc::UnboundedSender<MediaEvent>,
) -> MediaHandle {
    let (commands, rx) = mpsc::unbounded_channel();
    let local = SocketAddr::new(ip, ports.port);
    // boxed: an async fn keeps its `self` argument and its moved copy apart, so a
    // session held inline took twice its ~12 KB in every task (print-type-sizes)
    let session = Box::new(MediaSession {
        rtc: new_rtc(local, &settings.codecs),
        local,
        socket: Arc::clone(&ports.rtp),
        socket_tx: Arc::clone(&ports.rtp_tx),
        _webrtc_ports: ports,
        mid: None,
        browser: None,
        call: None,
        parked: Vec::new(),
        browser_seen: Instant::now(),
        remote_fingerprint: None,
        browser_away: false,
        events,
        settings,
    });
    tokio::spawn(session.run(rx));
    MediaHandle { commands }
}

/// The WebRTC leg's peer connection as every session configures it: ICE-lite, RTP
/// mode, our voice codecs in order of preference plus telephone-event at 8 and
/// 48 kHz, one host candidate on `local`. str0m is sans-IO: nothing is bound here, so
/// the `browser_sdp` fuzz target (`crate::fuzzing`) builds the same one.
pub(crate) fn new_rtc(local: SocketAddr, preference: &[MediaCodec]) -> Rtc {
    str0m::crypto::from_feature_flags().install_process_default();
    let mut config = RtcConfig::new()
        .set_ice_lite(true)
        .set_rtp_mode(true)
        .set_stats_interval(Some(Duration::from_secs(5)))
        .clear_codecs();
    // the order is our preference in answers (by default G.711 first, so that with the
    // usual PBX codecs audio is relayed, not transcoded)
    for codec in preference {
        config = match codec {
            MediaCodec::Pcmu => config.enable_pcmu(true, false),
            MediaCodec::Pcma => config.enable_pcma(true, false),
            MediaCodec::G722 => config.enable_g722(true, false),
            MediaCodec::Opus => config.enable_opus(true, false),
            MediaCodec::TelephoneEvent => config,
        };
    }
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
    if let Ok(c) = Candidate::host(local, "udp") {
        rtc.add_local_candidate(c);
    }
    rtc
}

/// SDES-SRTP on a call's RTP leg: our context encrypts what we send, theirs decrypts
/// what the far end sends.
struct SrtpLeg {
    keys: SrtpKeys,
    ours: SrtpContext,
    theirs: SrtpContext,
    /// Where packets are encrypted or decrypted into (one per leg, reused).
    buf: Vec<u8>,
}

impl SrtpLeg {
    /// A new offer/answer: a direction whose key changed starts over, the other keeps
    /// its counters (restarting them under the same key would reuse its keystream).
    fn renegotiated(srtp: &mut Option<SrtpLeg>, keys: Option<SrtpKeys>) {
        let kept = match (srtp.as_mut(), keys) {
            (Some(s), Some(k)) => s.rekey(k).is_ok(),
            _ => false,
        };
        if !kept {
            *srtp = SrtpLeg::new(keys);
        }
    }

    fn rekey(&mut self, keys: SrtpKeys) -> Result<(), sipline_media::srtp::SrtpError> {
        if self.keys.ours != keys.ours {
            self.ours = SrtpContext::new(&keys.ours)?;
        }
        if self.keys.theirs != keys.theirs {
            self.theirs = SrtpContext::new(&keys.theirs)?;
        }
        self.keys = keys;
        Ok(())
    }

    fn new(keys: Option<SrtpKeys>) -> Option<SrtpLeg> {
        let keys = keys?;
        match (SrtpContext::new(&keys.ours), SrtpContext::new(&keys.theirs)) {
            (Ok(ours), Ok(theirs)) => Some(SrtpLeg {
                keys,
                ours,
                theirs,
                buf: Vec::with_capacity(2048),
            }),
            _ => {
                tracing::warn!("SRTP keys could not be set up: the leg stays silent");
                None
            }
        }
    }
}

/// A call's RTP leg inside the media session.
struct CallLeg {
    call: CallRef,
    ports: RtpPorts,
    media: SipMedia,
    /// Its SRTP, when the leg is encrypted.
    srtp: Option<SrtpLeg>,
    /// Where RTP and RTCP actually go (symmetric RTP).
    latch: Latch,
    bridge: Option<Bridge>,
    first_audio_sent: bool,
    /// When the far end's first RTP packet arrived.
    first_rtp_at: Option<Instant>,
    next_stats: Instant,
    browser_stats: (Option<f32>, Option<Duration>),
    watchdog: Watchdog,
    /// Our sequence numbers toward this far end: the bridge's, shifted so that they
    /// continue where they stopped when the call was parked (the bridge went on
    /// counting for another call meanwhile).
    seq: SeqContinuity,
}

/// Keeps the sequence numbers a far end sees continuous across parking.
#[derive(Debug, Default)]
struct SeqContinuity {
    shift: u16,
    last: Option<u16>,
    /// The next packet picks up where `last` left off.
    resync: bool,
}

impl SeqContinuity {
    /// The sequence number to send for the bridge's `seq`.
    fn map(&mut self, seq: u16) -> u16 {
        if std::mem::take(&mut self.resync) {
            self.shift = self.last.map_or(0, |last| last.wrapping_add(1).wrapping_sub(seq));
        }
        let out = seq.wrapping_add(self.shift);
        self.last = Some(out);
        out
    }
}

struct MediaSession {
    rtc: Rtc,
    local: SocketAddr,
    socket: Arc<UdpSocket>,
    /// The same socket, for sending (see [`RtpPorts`]).
    socket_tx: Arc<std::net::UdpSocket>,
    /// Held for the session's lifetime so the WebRTC port stays ours.
    _webrtc_ports: RtpPorts,
    mid: Option<Mid>,
    browser: Option<BrowserLeg>,
    /// The call bridged to the browser.
    call: Option<CallLeg>,
    /// The line's other calls with media (at most `calls.per_line` - 1, the SIP task's limit).
    parked: Vec<CallLeg>,
    /// When the browser's WebRTC leg last sent anything (ICE checks included).
    browser_seen: Instant,
    /// The DTLS fingerprint of the browser's peer connection, once negotiated.
    remote_fingerprint: Option<String>,
    /// The browser's session waits for it to come back ([`MediaCommand::BrowserAway`]).
    browser_away: bool,
    events: mpsc::UnboundedSender<MediaEvent>,
    settings: MediaSettings,
}

const STATS_EVERY: Duration = Duration::from_secs(5);

/// Datagrams a parked call's far end sent meanwhile, thrown away when it is bridged
/// again (a socket buffer's worth; the rest is too old to matter either way).
const MAX_STALE_DATAGRAMS: usize = 512;

impl MediaSession {
    async fn run(mut self: Box<Self>, mut commands: mpsc::UnboundedReceiver<MediaCommand>) {
        let mut buf = vec![0u8; 2048];
        let mut rtp_buf = vec![0u8; 2048];
        let mut rtcp_buf = vec![0u8; 2048];
        loop {
            let mut wake = self.settle();
            if let Some(leg) = &self.call {
                wake = wake.min(leg.next_stats);
                if let Some(b) = &leg.bridge {
                    wake = wake.min(b.poll_timeout());
                }
                if let Some(t) = leg.watchdog.poll_timeout() {
                    wake = wake.min(t);
                }
            }
            let (rtp_sock, rtcp_sock) = match &self.call {
                Some(leg) => (
                    Some(Arc::clone(&leg.ports.rtp)),
                    Some(Arc::clone(&leg.ports.rtcp)),
                ),
                None => (None, None),
            };
            tokio::select! {
                r = self.socket.recv_from(&mut buf) => {
                    if let Ok((n, source)) = r {
                        self.on_browser_datagram(source, &buf[..n]);
                    }
                }
                r = recv_opt(rtp_sock.as_deref(), &mut rtp_buf) => {
                    if let Some((n, source)) = r {
                        self.on_sip_rtp(source, n, &rtp_buf);
                    }
                }
                r = recv_opt(rtcp_sock.as_deref(), &mut rtcp_buf) => {
                    if let Some((n, source)) = r
                        && let Some(leg) = self.call.as_mut()
                    {
                        leg.on_rtcp(source, &rtcp_buf[..n]);
                    }
                }
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    None => return,
                },
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {
                    let now = Instant::now();
                    let _ = self.rtc.handle_input(Input::Timeout(now));
                    self.on_tick(now);
                }
            }
        }
    }

    /// Carries out everything the last input caused, both ways, until str0m and the
    /// bridge are quiet: a browser packet becomes an str0m event, the event a bridge
    /// output, the output a datagram to the far end, all before the task sleeps again
    /// (sending only on the next wake held each packet back by one packet time).
    /// Returns when str0m wants to be woken next.
    fn settle(&mut self) -> Instant {
        // bounded: a peer cannot keep the task here (what is left waits for the next wake)
        for _ in 0..16 {
            let wake = self.drive_rtc();
            if !self.flush_bridge() {
                return wake;
            }
        }
        Instant::now()
    }

    /// Runs str0m until it has nothing more to say; returns when to wake it next.
    fn drive_rtc(&mut self) -> Instant {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Transmit(t)) => {
                    let _ = self.socket_tx.send_to(&t.contents, t.destination);
                }
                Ok(Output::Timeout(t)) => return t,
                Ok(Output::Event(e)) => self.on_rtc_event(e),
                Err(e) => {
                    tracing::warn!(error = %e, "WebRTC session failed");
                    return Instant::now() + Duration::from_secs(1);
                }
            }
        }
    }

    fn on_rtc_event(&mut self, e: Event) {
        match e {
            Event::Connected => {
                tracing::info!(local = %self.local, "WebRTC connected");
                let _ = self.events.send(MediaEvent::Connected);
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                let _ = self.events.send(MediaEvent::Disconnected);
            }
            Event::MediaAdded(m) if m.kind == MediaKind::Audio => {
                self.mid = Some(m.mid);
                self.refresh_browser_leg();
            }
            Event::MediaChanged(_) => self.refresh_browser_leg(),
            Event::RtpPacket(p) => {
                let now = Instant::now();
                if let Some(b) = self.call.as_mut().and_then(|l| l.bridge.as_mut()) {
                    b.from_browser(
                        now,
                        *p.header.payload_type,
                        p.header.sequence_number,
                        p.header.timestamp,
                        *p.header.ssrc,
                        &p.payload,
                    );
                }
            }
            Event::MediaIngressStats(s) => {
                if let Some(leg) = self.call.as_mut() {
                    leg.browser_stats.0 = s.loss;
                    leg.browser_stats.1 = s.rtt.or(leg.browser_stats.1);
                }
            }
            Event::MediaEgressStats(s) => {
                if let Some(leg) = self.call.as_mut() {
                    leg.browser_stats.1 = s.rtt.or(leg.browser_stats.1);
                }
            }
            _ => {}
        }
    }

    /// The browser offers from a new peer connection (its page came back after its
    /// WebSocket dropped): start the WebRTC leg over on the same port; the call's leg
    /// stays and is bridged again once the new one is negotiated.
    fn new_peer_connection(&mut self, rtc: Rtc) {
        tracing::info!("a new peer connection from the browser: WebRTC leg started over");
        self.rtc = rtc;
        self.mid = None;
        self.browser = None;
        if let Some(leg) = self.call.as_mut() {
            leg.bridge = None;
        }
    }

    /// The browser's codecs as negotiated, our preference first.
    fn refresh_browser_leg(&mut self) {
        let Some(mid) = self.mid else { return };
        let Some(leg) = browser_leg(&self.rtc, mid) else {
            return;
        };
        tracing::debug!(codecs = ?leg.codecs, dtmf = ?leg.dtmf, "browser leg negotiated");
        if let Some(b) = self.call.as_mut().and_then(|l| l.bridge.as_mut()) {
            b.set_browser(leg.clone());
        }
        self.browser = Some(leg);
        self.ensure_bridge();
    }

    fn on_browser_datagram(&mut self, source: SocketAddr, data: &[u8]) {
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
        if !self.rtc.accepts(&input) {
            return;
        }
        let now = Instant::now();
        self.browser_seen = now;
        if let Some(leg) = self.call.as_mut() {
            leg.watchdog.on_browser(now);
        }
        if let Err(e) = self.rtc.handle_input(input) {
            tracing::debug!(error = %e, %source, "WebRTC datagram dropped");
        }
    }

    fn on_sip_rtp(&mut self, source: SocketAddr, n: usize, buf: &[u8]) {
        let Some(leg) = self.call.as_mut() else { return };
        let now = Instant::now();
        // an encrypted leg takes only what authenticates, before anything else looks at it
        let packet = match leg.srtp.as_mut() {
            None => &buf[..n],
            Some(s) => match s.theirs.unprotect_rtp(&buf[..n], &mut s.buf) {
                Ok(()) => &s.buf[..],
                Err(e) => {
                    counters::inc(Counter::Srtp);
                    peer_warn!(Kind::Media, call = %leg.call, %source, "SRTP dropped: {e}");
                    return;
                }
            },
        };
        let before = leg.latch.rtp_destination();
        match leg.latch.on_rtp(now, source, packet) {
            Verdict::Accept => {}
            Verdict::Moved { to } => {
                tracing::info!(call = %leg.call, from = %before, %to, "sending RTP where the far end's comes from");
            }
            Verdict::Drop => {
                counters::inc(Counter::RtpForeignSource);
                peer_warn!(Kind::Media, call = %leg.call, %source, far_end = %before, "RTP from a source other than the far end dropped");
                return;
            }
        }
        leg.first_rtp_at.get_or_insert(now);
        leg.watchdog.on_far_end(now);
        if let Some(b) = leg.bridge.as_mut()
            && let Err(e) = b.from_sip(Instant::now(), packet)
        {
            tracing::debug!(error = %e, %source, "RTP from the far end dropped");
        }
    }

    fn on_command(&mut self, cmd: MediaCommand) {
        match cmd {
            MediaCommand::Offer { sdp, reply } => {
                let fingerprint = dtls_fingerprint(&sdp);
                let another_peer = fingerprint.is_some()
                    && self.remote_fingerprint.is_some()
                    && fingerprint != self.remote_fingerprint;
                let answer = if another_peer {
                    // negotiated on a fresh leg, taken only if it works: a bad offer
                    // leaves the working one alone
                    let mut fresh = new_rtc(self.local, &self.settings.codecs);
                    let answer = accept_offer(&mut fresh, &sdp);
                    if answer.is_ok() {
                        self.new_peer_connection(fresh);
                    }
                    answer
                } else {
                    accept_offer(&mut self.rtc, &sdp)
                };
                if answer.is_ok() {
                    self.remote_fingerprint = fingerprint.or(self.remote_fingerprint.take());
                }
                let _ = reply.send(answer);
                self.refresh_browser_leg();
            }
            MediaCommand::Candidate(c) => match remote_candidate(&c) {
                None => {}
                Some(Ok(cand)) => self.rtc.add_remote_candidate(cand),
                Some(Err(e)) => tracing::debug!(error = %e, "unusable ICE candidate"),
            },
            MediaCommand::Attach {
                call,
                ports,
                leg,
                focus,
            } => {
                let (ports, leg) = (*ports, *leg);
                tracing::debug!(%call, remote = %leg.remote_rtp, "bridging the call's media");
                let now = Instant::now();
                let next = CallLeg {
                    call,
                    ports,
                    media: leg,
                    srtp: SrtpLeg::new(leg.srtp),
                    latch: Latch::new(now, leg.remote_rtp, leg.remote_rtcp, self.settings.symmetric_rtp),
                    bridge: None,
                    first_audio_sent: false,
                    first_rtp_at: None,
                    next_stats: now + STATS_EVERY,
                    browser_stats: (None, None),
                    watchdog: self.watchdog_for(&leg),
                    seq: SeqContinuity::default(),
                };
                match focus || self.call.is_none() {
                    true => self.bridge_to(next),
                    // answered while the browser talks in another call: it waits
                    false => self.parked.push(next),
                }
            }
            MediaCommand::Update { call, leg } => {
                let leg = *leg;
                let watched = self.call.as_mut().filter(|l| l.call == call);
                let is_bridged = watched.is_some();
                let parked = self.parked.iter_mut().find(|l| l.call == call);
                if let Some(l) = watched.or(parked) {
                    if leg.remote_rtp != l.media.remote_rtp {
                        // the far end moved: use the new address at once
                        l.latch
                            .renegotiated(Instant::now(), leg.remote_rtp, leg.remote_rtcp);
                    }
                    SrtpLeg::renegotiated(&mut l.srtp, leg.srtp);
                    l.media = leg;
                    if is_bridged {
                        l.watchdog.set_held(Instant::now(), SipMedia::is_held(&leg));
                    }
                    if let Some(b) = l.bridge.as_mut() {
                        b.set_sip(leg.leg);
                    }
                }
            }
            MediaCommand::Detach { call } => {
                self.parked.retain(|l| l.call != call);
                if self.call.as_ref().is_some_and(|l| l.call == call) {
                    match self.parked.pop() {
                        // the line's other call is all the browser has left: bridge it
                        Some(next) => {
                            self.bridge_to(next);
                            self.parked.retain(|l| l.call != call);
                        }
                        None => self.call = None,
                    }
                }
            }
            MediaCommand::Focus { call } => {
                if let Some(at) = self.parked.iter().position(|l| l.call == call) {
                    let next = self.parked.swap_remove(at);
                    tracing::debug!(%call, "the browser turns to another call");
                    self.bridge_to(next);
                }
            }
            MediaCommand::BrowserAway(away) => {
                self.browser_away = away;
                if let Some(leg) = self.call.as_mut() {
                    leg.watchdog.set_browser_away(Instant::now(), away);
                }
            }
            MediaCommand::Dtmf { call, digits } => {
                let now = Instant::now();
                if let Some(b) = self
                    .call
                    .as_mut()
                    .filter(|l| l.call == call)
                    .and_then(|l| l.bridge.as_mut())
                    && !b.send_dtmf(now, &digits)
                {
                    tracing::debug!("DTMF asked of a call without telephone-event");
                }
            }
        }
    }

    /// Bridges `next` to the browser. The call bridged until now (if any) is parked, and
    /// its bridge, which holds the browser's one outgoing stream, carries on with `next`.
    fn bridge_to(&mut self, mut next: CallLeg) {
        next.seq.resync = true;
        // what a parked far end sent meanwhile is stale: not played now
        for _ in 0..MAX_STALE_DATAGRAMS {
            let mut scratch = [0u8; 1500];
            if next.ports.rtp.try_recv_from(&mut scratch).is_err() {
                break;
            }
        }
        if let Some(mut previous) = self.call.take() {
            if let Some(mut bridge) = previous.bridge.take() {
                bridge.set_sip(next.media.leg);
                next.bridge = Some(bridge);
            }
            self.parked.push(previous);
        }
        // a parked call's silence was nobody's business: counted from now
        next.watchdog = self.watchdog_for(&next.media);
        self.call = Some(next);
        self.ensure_bridge();
    }

    /// A fresh silence watch for a call's leg.
    fn watchdog_for(&self, leg: &SipMedia) -> Watchdog {
        let now = Instant::now();
        let mut w = Watchdog::new(now, self.browser_seen, self.settings.timeouts);
        w.set_held(now, leg.is_held());
        w.set_browser_away(now, self.browser_away);
        w
    }

    /// A bridge needs both legs negotiated.
    fn ensure_bridge(&mut self) {
        let (Some(browser), Some(leg)) = (self.browser.as_ref(), self.call.as_mut()) else {
            return;
        };
        if leg.bridge.is_none() && !browser.codecs.is_empty() {
            let now = Instant::now();
            let unix = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            let bridge = Bridge::new(now, unix, browser.clone(), leg.media.leg, fastrand::u64(..));
            tracing::info!(
                call = %leg.call,
                browser = ?bridge.browser_codec().codec,
                sip = ?leg.media.leg.codec.codec,
                relay = bridge.browser_codec().codec == leg.media.leg.codec.codec,
                srtp = leg.srtp.is_some(),
                "media bridge up"
            );
            leg.bridge = Some(bridge);
        }
    }

    fn on_tick(&mut self, now: Instant) {
        let Some(leg) = self.call.as_mut() else { return };
        if let Some(silent) = leg.watchdog.handle_timeout(now) {
            tracing::info!(call = %leg.call, reason = %silent.reason(), "ending the call");
            let _ = self.events.send(MediaEvent::MediaTimeout {
                call: leg.call,
                reason: silent.reason(),
            });
        }
        if let Some(b) = leg.bridge.as_mut() {
            b.handle_timeout(now);
        }
        if now >= leg.next_stats {
            leg.next_stats = now + STATS_EVERY;
            if let Some(b) = &leg.bridge {
                let mut browser = b.browser_counters();
                browser.loss = f64::from(leg.browser_stats.0.unwrap_or(0.0));
                browser.rtt_ms = leg.browser_stats.1.map(|d| d.as_secs_f64() * 1000.0);
                let _ = self.events.send(MediaEvent::Stats(Box::new(CallStats {
                    call: leg.call,
                    browser,
                    browser_codec: codec_name(b.browser_codec().codec),
                    sip: b.sip_counters(),
                    sip_codec: codec_name(leg.media.leg.codec.codec),
                })));
            }
        }
    }

    /// Carries out what the bridge produced (and what that provoked, a few rounds);
    /// says whether there was anything.
    fn flush_bridge(&mut self) -> bool {
        let mut any = false;
        for _ in 0..8 {
            let outs: Vec<BridgeOutput> = match self.call.as_mut().and_then(|l| l.bridge.as_mut()) {
                Some(b) => std::iter::from_fn(|| b.poll_output()).collect(),
                None => return any,
            };
            if outs.is_empty() {
                return any;
            }
            any = true;
            let mut events = Vec::new();
            for out in outs {
                self.carry_out(out, &mut events);
            }
            for e in events {
                self.on_rtc_event(e);
            }
        }
        any
    }

    fn carry_out(&mut self, out: BridgeOutput, events: &mut Vec<Event>) {
        let Some(leg) = self.call.as_mut() else { return };
        match out {
            BridgeOutput::Sip(d) => leg.send(&d, false),
            BridgeOutput::SipRtcp(d) => leg.send(&d, true),
            BridgeOutput::Browser(p) => {
                let Some(mid) = self.mid else { return };
                let now = Instant::now();
                let mut api = self.rtc.direct_api();
                let Some(tx) = api.stream_tx_by_mid(mid, None) else {
                    return;
                };
                tx.write_rtp(
                    RtpWrite::new(
                        p.payload_type.into(),
                        p.sequence.into(),
                        p.timestamp,
                        now,
                        p.payload,
                    )
                    .marker(p.marker),
                );
                // str0m loses a packet written before the previous one was polled
                // out: drive it once per write
                let _ = self.rtc.handle_input(Input::Timeout(now));
                loop {
                    match self.rtc.poll_output() {
                        Ok(Output::Transmit(t)) => {
                            let _ = self.socket_tx.send_to(&t.contents, t.destination);
                        }
                        Ok(Output::Event(e)) => events.push(e),
                        _ => break,
                    }
                }
                if !leg.first_audio_sent {
                    leg.first_audio_sent = true;
                    let far_end_at = leg.first_rtp_at.unwrap_or_else(Instant::now);
                    let _ = self.events.send(MediaEvent::FirstAudio {
                        call: leg.call,
                        far_end_at,
                    });
                }
            }
            BridgeOutput::Dtmf { from, digit } => {
                let needs_info = from == Side::Browser
                    && sipline_call::DtmfMethod::for_leg(leg.media.leg.dtmf_payload_type)
                        == sipline_call::DtmfMethod::Info;
                let _ = self.events.send(MediaEvent::Dtmf {
                    call: leg.call,
                    digit,
                    from,
                    needs_info,
                });
            }
        }
    }
}

impl CallLeg {
    /// Sends a packet of ours to the far end (RTP, or RTCP), encrypted if the leg is.
    fn send(&mut self, packet: &[u8], rtcp: bool) {
        let mut renumbered;
        let mut packet = packet;
        if !rtcp && let Some(seq) = packet.get(2..4) {
            let seq = u16::from_be_bytes([seq[0], seq[1]]);
            let out = self.seq.map(seq);
            if out != seq {
                renumbered = packet.to_vec();
                renumbered[2..4].copy_from_slice(&out.to_be_bytes());
                packet = &renumbered;
            }
        }
        let packet = match self.srtp.as_mut() {
            None => packet,
            Some(s) => {
                let protected = match rtcp {
                    false => s.ours.protect_rtp(packet, &mut s.buf),
                    true => s.ours.protect_rtcp(packet, &mut s.buf),
                };
                if let Err(e) = protected {
                    tracing::debug!(call = %self.call, error = %e, "not sent: SRTP refused it");
                    return;
                }
                &s.buf[..]
            }
        };
        let _ = match rtcp {
            false => self.ports.rtp_tx.send_to(packet, self.latch.rtp_destination()),
            true => self.ports.rtcp_tx.send_to(packet, self.latch.rtcp_destination()),
        };
    }

    /// RTCP from the far end (SRTCP on an encrypted leg).
    fn on_rtcp(&mut self, source: SocketAddr, data: &[u8]) {
        let data = match self.srtp.as_mut() {
            None => data,
            Some(s) => match s.theirs.unprotect_rtcp(data, &mut s.buf) {
                Ok(()) => &s.buf[..],
                Err(e) => {
                    counters::inc(Counter::Srtp);
                    let plain = is_plain_rtcp(data);
                    peer_warn!(Kind::Media, call = %self.call, %source, len = data.len(), plain, "SRTCP dropped: {e}");
                    return;
                }
            },
        };
        if !self.latch.on_rtcp(source, data) {
            counters::inc(Counter::RtcpForeignSource);
            peer_warn!(Kind::Media, call = %self.call, %source, "RTCP from a stranger dropped");
        } else if let Some(b) = self.bridge.as_mut()
            && let Err(e) = b.from_sip_rtcp(Instant::now(), data)
        {
            tracing::debug!(error = e, "RTCP from the far end dropped");
        }
    }
}

/// Whether `data` reads as a whole compound of plain RTCP (its packets' lengths add up
/// exactly): on an SRTP leg, a far end sending in clear (baresip does with its first APP
/// packet and, at times, its last BYE), not a forgery; said in the drop's log line.
fn is_plain_rtcp(data: &[u8]) -> bool {
    let mut at = 0usize;
    while let Some(header) = data.get(at..at + 4) {
        if header[0] >> 6 != 2 {
            return false;
        }
        at += (usize::from(u16::from_be_bytes([header[2], header[3]])) + 1) * 4;
    }
    at == data.len() && at > 0
}

/// The `a=fingerprint` of an SDP (one per peer connection: its DTLS certificate).
fn dtls_fingerprint(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix("a=fingerprint:"))
        .map(|f| f.trim().to_ascii_lowercase())
}

/// Negotiates the WebRTC leg: the browser's offer in, our answer out.
pub(crate) fn accept_offer(rtc: &mut Rtc, sdp: &str) -> Result<String, String> {
    let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| format!("unreadable offer: {e}"))?;
    rtc.sdp_api()
        .accept_offer(offer)
        .map(|a| a.to_sdp_string())
        .map_err(|e| format!("offer not acceptable: {e}"))
}

/// The browser's codecs as negotiated on its audio media `mid`, our preference first
/// (the order of the codec config), with its telephone-event payload types apart.
pub(crate) fn browser_leg(rtc: &Rtc, mid: Mid) -> Option<BrowserLeg> {
    let media = rtc.media(mid)?;
    let remote: Vec<u8> = media.remote_pts().iter().map(|p| **p).collect();
    let mut codecs = Vec::new();
    let mut dtmf = Vec::new();
    for p in rtc.codec_config().params() {
        let pt = *p.pt();
        if !remote.contains(&pt) {
            continue;
        }
        let spec = p.spec();
        let codec = match spec.codec {
            Codec::PCMU => MediaCodec::Pcmu,
            Codec::PCMA => MediaCodec::Pcma,
            Codec::G722 => MediaCodec::G722,
            Codec::Opus => MediaCodec::Opus,
            Codec::Tele => {
                dtmf.push((pt, spec.clock_rate.get()));
                continue;
            }
            _ => continue,
        };
        codecs.push(LegCodec {
            codec,
            payload_type: pt,
        });
    }
    Some(BrowserLeg { codecs, dtmf })
}

/// A trickled ICE candidate as the API carries it (`candidate:…`, perhaps with
/// `a=`), parsed; `None` for the empty end-of-candidates marker.
pub(crate) fn remote_candidate(c: &str) -> Option<Result<Candidate, String>> {
    let c = c.trim();
    let c = c.strip_prefix("a=").unwrap_or(c);
    if c.is_empty() {
        return None;
    }
    Some(Candidate::from_sdp_string(c).map_err(|e| e.to_string()))
}

fn codec_name(c: MediaCodec) -> String {
    match c {
        MediaCodec::Pcmu => "PCMU",
        MediaCodec::Pcma => "PCMA",
        MediaCodec::G722 => "G722",
        MediaCodec::Opus => "opus",
        MediaCodec::TelephoneEvent => "telephone-event",
    }
    .to_owned()
}

/// Receives on an optional socket (pending forever without one).
async fn recv_opt(sock: Option<&UdpSocket>, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
    match sock {
        Some(s) => s.recv_from(buf).await.ok(),
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::SeqContinuity;

    #[test]
    fn a_far_end_sees_its_numbering_go_on_across_parking() {
        let mut seq = SeqContinuity::default();
        assert_eq!(
            [100, 101, 102].map(|s| seq.map(s)),
            [100, 101, 102],
            "untouched at first"
        );
        // parked while the bridge counted 40 000 packets for another call
        seq.resync = true;
        assert_eq!([40_103, 40_104].map(|s| seq.map(s)), [103, 104]);
        // and again, across the wrap
        seq.resync = true;
        assert_eq!([65_535, 0, 1].map(|s| seq.map(s)), [105, 106, 107]);
    }

    #[test]
    fn plain_rtcp_is_told_from_srtcp() {
        // an RR (8 bytes) and an SDES (12 bytes): lengths add up
        let plain = [
            [0x80, 201, 0, 1, 0, 0, 0, 1].as_slice(),
            &[0x81, 202, 0, 2, 0, 0, 0, 1, 1, 0, 0, 0],
        ]
        .concat();
        assert!(super::is_plain_rtcp(&plain));
        // the same with an SRTCP trailer and tag: they do not
        let srtcp = [plain.as_slice(), &[0x80, 0, 0, 1], &[7; 10]].concat();
        assert!(!super::is_plain_rtcp(&srtcp));
        assert!(!super::is_plain_rtcp(&[]));
        assert!(!super::is_plain_rtcp(&[0x80, 201]));
    }
}
