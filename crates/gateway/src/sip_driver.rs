//! The tokio driver of the SIP core (the original example's `SoftPhone`): one task
//! owns the [`UserAgent`], the SIP sockets and every call's media state; it feeds the
//! core datagrams and timeouts, sends what it asks, negotiates SDP for its calls, and
//! routes events to the session that owns each line.
//!
//! Sessions talk to it through a cloneable [`SipHandle`]; nothing else touches SIP
//! state, so there are no locks around it.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sipline_media::sdp::{self, LocalMedia, Sdp};
use sipline_sip::{
    Account, CallError, CallEvent, CallRef, CallState, CallStatus, Event, LineId, LineStatus, UaConfig,
    UaStats, UserAgent,
};
use tokio::sync::{mpsc, oneshot};

use crate::api::DtmfMethod;
use crate::counters::{self, Counter};
use crate::media::{CallMedia, RtpPortPool};
use crate::media_session::{MediaCommand, MediaHandle, SipMedia};
use crate::peer_log::Kind;
use crate::peer_warn;
use crate::sip_transport::{Received, SipTransport, TcpLimits};
use sipline_media::bridge::SipLeg;
use sipline_media::sdp::{Direction, NegotiatedMedia};

/// What a session hears about its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineEvent {
    Status(LineStatus),
    Call(CallNotice),
    /// The line is unregistered and gone: its account may be released.
    Removed,
}

/// What a session hears about its line's calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallNotice {
    Incoming {
        call: CallRef,
        from: String,
        display_name: Option<String>,
    },
    State {
        call: CallRef,
        status: CallStatus,
    },
    Error {
        call: Option<CallRef>,
        code: Option<u16>,
        reason: String,
    },
    /// A key press from the far end (SIP INFO; RFC 4733 ones come from the media session).
    Dtmf {
        call: CallRef,
        digit: char,
        method: DtmfMethod,
    },
}

/// A call as the session may ask about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallInfo {
    pub call: CallRef,
    pub peer: String,
    pub incoming: bool,
    pub state: CallState,
}

/// Counts for `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
pub struct DriverStats {
    pub ua: UaStats,
    pub rtp_ports_in_use: usize,
}

enum Command {
    AddLine {
        account: Account,
        events: mpsc::UnboundedSender<LineEvent>,
        media: Option<MediaHandle>,
        reply: oneshot::Sender<LineId>,
    },
    RemoveLine(LineId),
    PlaceCall {
        line: LineId,
        number: String,
        reply: oneshot::Sender<Result<CallRef, String>>,
    },
    Accept {
        line: LineId,
        reply: oneshot::Sender<Result<(), String>>,
    },
    HangUp {
        line: LineId,
        code: u16,
        /// What the browser is told, when not the usual.
        why: Option<String>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    CallInfo {
        line: LineId,
        reply: oneshot::Sender<Option<CallInfo>>,
    },
    Dtmf {
        line: LineId,
        digits: String,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// A key press the browser sent itself, for a far end that needs it as INFO.
    InfoDtmf {
        line: LineId,
        digit: char,
    },
    Hold {
        line: LineId,
        on: bool,
        reply: oneshot::Sender<Result<(), String>>,
    },
    Stats(oneshot::Sender<DriverStats>),
    Shutdown(oneshot::Sender<()>),
}

/// A handle on the SIP task.
#[derive(Clone)]
pub struct SipHandle {
    commands: mpsc::UnboundedSender<Command>,
}

/// The SIP task is gone (only during shutdown).
#[derive(Debug)]
pub struct SipGone;

impl std::fmt::Display for SipGone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the gateway is shutting down")
    }
}

impl SipHandle {
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, SipGone> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).map_err(|_| SipGone)?;
        rx.await.map_err(|_| SipGone)
    }

    /// Starts registering `account`; its events arrive on the returned receiver. Calls
    /// on the line bridge their media through `media` when there is one.
    pub async fn add_line(
        &self,
        account: Account,
        media: Option<MediaHandle>,
    ) -> Result<(LineId, mpsc::UnboundedReceiver<LineEvent>), SipGone> {
        let (events, rx) = mpsc::unbounded_channel();
        let id = self
            .ask(|reply| Command::AddLine {
                account,
                events,
                media,
                reply,
            })
            .await?;
        Ok((id, rx))
    }

    pub async fn dtmf(&self, line: LineId, digits: String) -> Result<Result<(), String>, SipGone> {
        self.ask(|reply| Command::Dtmf { line, digits, reply }).await
    }

    pub fn info_dtmf(&self, line: LineId, digit: char) {
        let _ = self.commands.send(Command::InfoDtmf { line, digit });
    }

    pub async fn hold(&self, line: LineId, on: bool) -> Result<Result<(), String>, SipGone> {
        self.ask(|reply| Command::Hold { line, on, reply }).await
    }

    /// Unregisters a line (ending its call first); [`LineEvent::Removed`] follows.
    pub fn remove_line(&self, line: LineId) {
        let _ = self.commands.send(Command::RemoveLine(line));
    }

    pub async fn place_call(&self, line: LineId, number: String) -> Result<Result<CallRef, String>, SipGone> {
        self.ask(|reply| Command::PlaceCall { line, number, reply }).await
    }

    pub async fn accept(&self, line: LineId) -> Result<Result<(), String>, SipGone> {
        self.ask(|reply| Command::Accept { line, reply }).await
    }

    pub async fn hang_up(&self, line: LineId, code: u16) -> Result<Result<(), String>, SipGone> {
        self.ask(|reply| Command::HangUp {
            line,
            code,
            why: None,
            reply,
        })
        .await
    }

    /// Ends the line's call for a reason of the gateway's own (a media timeout), which
    /// the browser is told in the call's final state.
    pub fn end_call(&self, line: LineId, why: String) {
        let (reply, _) = oneshot::channel();
        let _ = self.commands.send(Command::HangUp {
            line,
            code: 480,
            why: Some(why),
            reply,
        });
    }

    pub async fn call_info(&self, line: LineId) -> Result<Option<CallInfo>, SipGone> {
        self.ask(|reply| Command::CallInfo { line, reply }).await
    }

    pub async fn stats(&self) -> Result<DriverStats, SipGone> {
        self.ask(Command::Stats).await
    }

    /// Unregisters every line (bounded in time) and stops the task.
    pub async fn shutdown(&self) {
        let _ = self.ask(Command::Shutdown).await;
    }
}

/// Binds the SIP sockets and starts the SIP task.
pub async fn start(
    config: UaConfig,
    listen: std::net::SocketAddr,
    tcp_limits: TcpLimits,
    rtp: Arc<RtpPortPool>,
    media_ip: IpAddr,
    sip_codecs: Vec<sipline_media::sdp::Codec>,
    max_calls: Option<usize>,
) -> io::Result<SipHandle> {
    let transport = SipTransport::bind(listen, tcp_limits).await?;
    let ua = UserAgent::new(Instant::now(), config, fastrand::u64(..));
    let (commands, rx) = mpsc::unbounded_channel();
    let driver = Driver {
        ua,
        lines: HashMap::new(),
        calls: HashMap::new(),
        rtp,
        media_ip,
        sip_codecs,
        max_calls,
    };
    tokio::spawn(driver.run(transport, rx));
    Ok(SipHandle { commands })
}

/// Datagrams taken in one go when more are already waiting.
const UDP_BATCH: usize = 64;

/// How long shutdown waits for hang-ups and unregistrations.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

struct LineRecord {
    user: String,
    events: mpsc::UnboundedSender<LineEvent>,
    media: Option<MediaHandle>,
}

struct CallRecord {
    line: LineId,
    peer: String,
    incoming: bool,
    state: CallState,
    /// None only if no RTP ports could be had (the call is being refused).
    media: Option<CallMedia>,
}

struct Driver {
    ua: UserAgent,
    lines: HashMap<LineId, LineRecord>,
    calls: HashMap<CallRef, CallRecord>,
    rtp: Arc<RtpPortPool>,
    media_ip: IpAddr,
    /// Voice codecs we offer the PBX, in order of preference.
    sip_codecs: Vec<sipline_media::sdp::Codec>,
    /// Calls at once on this node, if limited (`calls.max_concurrent`).
    max_calls: Option<usize>,
}

/// Why a call could not be placed: the node is at `calls.max_concurrent`.
pub const CALL_LIMIT: &str = "the gateway is at its limit of concurrent calls";

impl Driver {
    async fn run(mut self, mut transport: SipTransport, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut shutdown: Option<(oneshot::Sender<()>, tokio::time::Instant)> = None;
        loop {
            while let Some(t) = self.ua.poll_transmit() {
                transport.send(t);
            }
            while let Some(ev) = self.ua.poll_event() {
                self.on_event(ev);
            }
            // events may have made the core send (SDP answers): flush again
            while let Some(t) = self.ua.poll_transmit() {
                transport.send(t);
            }
            if let Some((_, deadline)) = &shutdown
                && (self.lines.is_empty() || tokio::time::Instant::now() >= *deadline)
            {
                if !self.lines.is_empty() {
                    tracing::warn!(
                        lines = self.lines.len(),
                        "shutting down before every line unregistered"
                    );
                }
                if let Some((reply, _)) = shutdown.take() {
                    let _ = reply.send(());
                }
                return;
            }
            let mut wake = self
                .ua
                .poll_timeout()
                .map(tokio::time::Instant::from_std)
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            if let Some((_, deadline)) = &shutdown {
                wake = wake.min(*deadline);
            }
            tokio::select! {
                received = transport.recv() => {
                    self.on_received(received);
                    // whatever else already waits on the UDP socket, before timers and
                    // flushes: under a burst, per-packet work stays flat
                    for _ in 0..UDP_BATCH {
                        let Some(more) = transport.try_recv_udp() else { break };
                        self.on_received(more);
                    }
                }
                cmd = commands.recv() => match cmd {
                    Some(Command::Shutdown(reply)) => {
                        tracing::info!(lines = self.lines.len(), "ending calls and unregistering every line before exit");
                        let ids: Vec<LineId> = self.lines.keys().copied().collect();
                        for id in ids {
                            self.ua.remove_line(Instant::now(), id);
                        }
                        shutdown = Some((reply, tokio::time::Instant::now() + SHUTDOWN_GRACE));
                    }
                    Some(cmd) => self.on_command(cmd),
                    None => return,
                },
                _ = tokio::time::sleep_until(wake) => self.ua.handle_timeout(Instant::now()),
            }
        }
    }

    fn on_received(&mut self, received: Received) {
        match received {
            Received::Message(source, data) => {
                if let Err(dropped) = self.ua.handle_receive(Instant::now(), source, &data) {
                    peer_warn!(Kind::Sip, "{dropped}");
                }
            }
            Received::TransportError(target) => self.ua.handle_transport_error(Instant::now(), target),
        }
    }

    fn on_command(&mut self, cmd: Command) {
        let now = Instant::now();
        match cmd {
            Command::AddLine {
                account,
                events,
                media,
                reply,
            } => {
                let user = account.user.clone();
                let id = self.ua.add_line(now, account);
                self.lines.insert(id, LineRecord { user, events, media });
                let _ = reply.send(id);
            }
            Command::RemoveLine(id) => self.ua.remove_line(now, id),
            Command::PlaceCall { line, number, reply } => {
                let _ = reply.send(self.place_call(now, line, number));
            }
            Command::Accept { line, reply } => {
                let _ = reply.send(self.accept(now, line));
            }
            Command::HangUp {
                line,
                code,
                why,
                reply,
            } => {
                let result = match self.ua.line_call(line) {
                    Some(call) => self
                        .ua
                        .hang_up_because(now, call, code, why)
                        .map_err(|e| e.to_string()),
                    None => Err("there is no call to hang up".to_owned()),
                };
                let _ = reply.send(result);
            }
            Command::CallInfo { line, reply } => {
                let info = self.ua.line_call(line).and_then(|call| {
                    self.calls.get(&call).map(|r| CallInfo {
                        call,
                        peer: r.peer.clone(),
                        incoming: r.incoming,
                        state: r.state,
                    })
                });
                let _ = reply.send(info);
            }
            Command::Dtmf { line, digits, reply } => {
                let _ = reply.send(self.dtmf(now, line, &digits));
            }
            Command::InfoDtmf { line, digit } => {
                if let Some(call) = self.ua.line_call(line) {
                    self.send_info_dtmf(now, call, digit);
                }
            }
            Command::Hold { line, on, reply } => {
                let _ = reply.send(self.hold(now, line, on));
            }
            Command::Stats(reply) => {
                let _ = reply.send(DriverStats {
                    ua: self.ua.stats(),
                    rtp_ports_in_use: self.rtp.in_use(),
                });
            }
            Command::Shutdown(_) => {}
        }
    }

    /// Fresh media for a call: a port pair and our SDP parameters.
    fn new_media(&self) -> Result<CallMedia, String> {
        let ports = self.rtp.allocate().map_err(|e| {
            tracing::warn!(error = %e, "no RTP ports for a call");
            "no free media port".to_owned()
        })?;
        let mut local = LocalMedia::new(self.media_ip, ports.port, fastrand::u64(1..u64::MAX / 2));
        local.codecs = self
            .sip_codecs
            .iter()
            .chain([&sipline_media::sdp::Codec::TelephoneEvent])
            .map(|c| sipline_media::sdp::LocalCodec::new(*c))
            .collect();
        Ok(CallMedia::new(ports, local))
    }

    fn place_call(&mut self, now: Instant, line: LineId, number: String) -> Result<CallRef, String> {
        if self.ua.line_call(line).is_some() {
            return Err("already in a call".into());
        }
        if self.at_call_limit() {
            counters::inc(Counter::Calls);
            return Err(CALL_LIMIT.into());
        }
        let media = self.new_media()?;
        let offer = sdp::build_offer(&media.local).into_bytes();
        let call = self
            .ua
            .place_call(now, line, &number, offer)
            .map_err(|e| match e {
                CallError::LineBusy => "already in a call".to_owned(),
                other => other.to_string(),
            })?;
        tracing::info!(user = %self.user(line), %call, %number, "placing call");
        self.calls.insert(
            call,
            CallRecord {
                line,
                peer: number,
                incoming: false,
                state: CallState::Dialing,
                media: Some(media),
            },
        );
        Ok(call)
    }

    fn accept(&mut self, now: Instant, line: LineId) -> Result<(), String> {
        let call = self.ua.line_call(line).ok_or("no incoming call is ringing")?;
        let record = self.calls.get_mut(&call).ok_or("no incoming call is ringing")?;
        if !record.incoming || record.state != CallState::Ringing {
            return Err("no incoming call is ringing".into());
        }
        let Some(media) = record.media.as_mut() else {
            return Err("no free media port".into());
        };
        let sdp = match media.remote_offer.take() {
            Some(offer) => match sdp::answer(&offer, &media.local) {
                Ok(answer) => {
                    media.negotiated = Some(answer.media);
                    answer.sdp
                }
                Err(e) => {
                    tracing::warn!(%call, error = %e, "incoming offer not acceptable");
                    self.refuse_media(
                        now,
                        line,
                        call,
                        format!("the caller's media is not acceptable: {e}"),
                    );
                    return Err(format!("the call cannot be accepted: {e}"));
                }
            },
            // no offer in the INVITE: ours goes in the 200, theirs comes in the ACK
            None => sdp::build_offer(&media.local),
        };
        self.ua
            .accept_call(now, call, sdp.into_bytes())
            .map_err(|e| e.to_string())?;
        self.sync_media(call);
        Ok(())
    }

    /// Sends DTMF into the line's call: RFC 4733 through the media session when the
    /// far end negotiated telephone-event, else one SIP INFO per digit.
    fn dtmf(&mut self, now: Instant, line: LineId, digits: &str) -> Result<(), String> {
        let call = self.ua.line_call(line).ok_or("there is no call")?;
        let record = self.calls.get(&call).ok_or("there is no call")?;
        if !matches!(
            record.state,
            CallState::InCall | CallState::Held | CallState::EarlyMedia
        ) {
            return Err("the call is not established".into());
        }
        let rfc4733 = record.media.as_ref().is_some_and(|m| {
            m.attached
                && m.negotiated
                    .as_ref()
                    .is_some_and(|n| n.dtmf_payload_type.is_some())
        });
        match self.lines.get(&line).and_then(|l| l.media.as_ref()) {
            Some(handle) if rfc4733 => {
                handle.send(MediaCommand::Dtmf {
                    digits: digits.to_owned(),
                });
                tracing::info!(%call, digits, "DTMF as RFC 4733 events");
            }
            _ => {
                for digit in digits.chars() {
                    self.send_info_dtmf(now, call, digit);
                }
                tracing::info!(%call, digits, "DTMF as SIP INFO");
            }
        }
        Ok(())
    }

    fn send_info_dtmf(&mut self, now: Instant, call: CallRef, digit: char) {
        let body = format!("Signal={digit}\r\nDuration=160\r\n");
        if let Err(e) = self
            .ua
            .send_info(now, call, "application/dtmf-relay", body.into_bytes())
        {
            tracing::debug!(%call, error = %e, "DTMF INFO not sent");
        }
    }

    /// Puts the far end on hold (re-INVITE with sendonly) or takes it off.
    fn hold(&mut self, now: Instant, line: LineId, on: bool) -> Result<(), String> {
        let call = self.ua.line_call(line).ok_or("there is no call")?;
        let record = self.calls.get_mut(&call).ok_or("there is no call")?;
        if !matches!(record.state, CallState::InCall | CallState::Held) {
            return Err("the call is not established".into());
        }
        let media = record.media.as_mut().ok_or("the call has no media")?;
        if media.local_hold == on {
            return Ok(());
        }
        media.local.direction = if on {
            Direction::SendOnly
        } else {
            Direction::SendRecv
        };
        media.local.next_version();
        let offer = sdp::build_offer(&media.local).into_bytes();
        match self.ua.reinvite(now, call, offer) {
            Ok(()) => {
                media.local_hold = on;
                tracing::info!(%call, on, "hold");
                Ok(())
            }
            Err(e) => {
                media.local.direction = if on {
                    Direction::SendRecv
                } else {
                    Direction::SendOnly
                };
                Err(e.to_string())
            }
        }
    }

    /// Tells the line's media session what was negotiated for a call: hands it the
    /// ports the first time, updates it afterwards.
    fn sync_media(&mut self, call: CallRef) {
        let Some(record) = self.calls.get_mut(&call) else {
            return;
        };
        let Some(handle) = self.lines.get(&record.line).and_then(|l| l.media.clone()) else {
            return;
        };
        let Some(media) = record.media.as_mut() else {
            return;
        };
        let Some(n) = media.negotiated.as_ref() else {
            return;
        };
        let leg = sip_media(n, media.local_hold);
        match media.take_ports() {
            Some(ports) => handle.send(MediaCommand::Attach {
                call,
                ports: Box::new(ports),
                leg: Box::new(leg),
            }),
            None => handle.send(MediaCommand::Update {
                call,
                leg: Box::new(leg),
            }),
        }
    }

    /// Whether `calls.max_concurrent` calls exist already.
    fn at_call_limit(&self) -> bool {
        self.max_calls.is_some_and(|max| self.calls.len() >= max)
    }

    fn user(&self, line: LineId) -> &str {
        self.lines.get(&line).map(|l| l.user.as_str()).unwrap_or("?")
    }

    /// Ends a call whose media cannot be agreed on (488) and tells the browser why.
    fn refuse_media(&mut self, now: Instant, line: LineId, call: CallRef, reason: String) {
        let _ = self.ua.hang_up(now, call, 488);
        self.notify(
            line,
            CallNotice::Error {
                call: Some(call),
                code: Some(488),
                reason,
            },
        );
    }

    fn notify(&self, line: LineId, notice: CallNotice) {
        if let Some(l) = self.lines.get(&line) {
            let _ = l.events.send(LineEvent::Call(notice));
        }
    }

    fn on_event(&mut self, ev: Event) {
        let now = Instant::now();
        match ev {
            Event::Line { line, status } => {
                if let Some(l) = self.lines.get(&line) {
                    tracing::info!(
                        user = %l.user,
                        state = ?status.state,
                        code = status.code,
                        reason = status.reason.as_deref().unwrap_or(""),
                        "line state changed"
                    );
                    let _ = l.events.send(LineEvent::Status(status));
                }
            }
            Event::LineRemoved { line } => {
                if let Some(l) = self.lines.remove(&line) {
                    let _ = l.events.send(LineEvent::Removed);
                }
            }
            Event::Registrar { reachable: false } => {
                tracing::warn!("PBX unreachable (no answer to OPTIONS keepalive)")
            }
            Event::Registrar { reachable: true } => {
                tracing::info!("PBX reachable again: re-registering every line")
            }
            Event::Call { line, call, event } => self.on_call_event(now, line, call, event),
        }
    }

    fn on_call_event(&mut self, now: Instant, line: LineId, call: CallRef, event: CallEvent) {
        match event {
            CallEvent::Incoming {
                from,
                display_name,
                offer,
            } => {
                if self.at_call_limit() {
                    counters::inc(Counter::Calls);
                    tracing::warn!(user = %self.user(line), %call, %from, "incoming call refused: call limit");
                    self.calls.insert(
                        call,
                        CallRecord {
                            line,
                            peer: from,
                            incoming: true,
                            state: CallState::Ringing,
                            media: None,
                        },
                    );
                    let _ = self.ua.hang_up(now, call, 503);
                    return;
                }
                let media = self.new_media().ok();
                let mut record = CallRecord {
                    line,
                    peer: from.clone(),
                    incoming: true,
                    state: CallState::Ringing,
                    media,
                };
                tracing::info!(user = %self.user(line), %call, %from, "incoming call");
                if record.media.is_none() {
                    self.calls.insert(call, record);
                    let _ = self.ua.hang_up(now, call, 503);
                    return;
                }
                if let (Some(offer), Some(media)) = (offer, record.media.as_mut()) {
                    match parse_sdp(&offer) {
                        Ok(sdp) => media.remote_offer = Some(sdp),
                        Err(e) => {
                            tracing::warn!(%call, error = %e, "unreadable SDP offer");
                            self.calls.insert(call, record);
                            let _ = self.ua.hang_up(now, call, 488);
                            return;
                        }
                    }
                }
                self.calls.insert(call, record);
                self.notify(
                    line,
                    CallNotice::Incoming {
                        call,
                        from,
                        display_name,
                    },
                );
            }
            CallEvent::Status(status) => {
                if let Some(r) = self.calls.get_mut(&call) {
                    r.state = status.state;
                }
                tracing::info!(
                    user = %self.user(line),
                    %call,
                    state = ?status.state,
                    code = status.code,
                    reason = status.reason.as_deref().unwrap_or(""),
                    "call state changed"
                );
                if status.state == CallState::Failed {
                    self.notify(
                        line,
                        CallNotice::Error {
                            call: Some(call),
                            code: status.code,
                            reason: status.reason.clone().unwrap_or_else(|| "call failed".into()),
                        },
                    );
                }
                self.notify(line, CallNotice::State { call, status });
            }
            CallEvent::RemoteSdp { sdp: body, early } => {
                let Some(media) = self.calls.get_mut(&call).and_then(|r| r.media.as_mut()) else {
                    return;
                };
                let negotiated = parse_sdp(&body).and_then(|answer| {
                    sdp::negotiate_answer(&media.local, &answer).map_err(|e| e.to_string())
                });
                match negotiated {
                    Ok(n) => {
                        tracing::debug!(%call, codec = ?n.codec, remote = %n.remote_rtp, early, "media negotiated");
                        media.negotiated = Some(n);
                        self.sync_media(call);
                    }
                    Err(e) if early => tracing::warn!(%call, error = %e, "unusable early media SDP"),
                    Err(e) => {
                        tracing::warn!(%call, error = %e, "unusable SDP answer: ending the call");
                        self.refuse_media(
                            now,
                            line,
                            call,
                            format!("the far end's media is not acceptable: {e}"),
                        );
                    }
                }
            }
            CallEvent::Offer { sdp: offer } => {
                let Some(media) = self.calls.get_mut(&call).and_then(|r| r.media.as_mut()) else {
                    let _ = self.ua.answer_offer(now, call, Err(488));
                    return;
                };
                let answer = match offer {
                    None => Ok((sdp::build_offer(&media.local), None)),
                    Some(offer) => parse_sdp(&offer)
                        .and_then(|o| sdp::answer(&o, &media.local).map_err(|e| e.to_string()))
                        .map(|a| (a.sdp, Some(a.media))),
                };
                let mut hold_change = None;
                let result = match answer {
                    Ok((sdp, negotiated)) => {
                        if let Some(n) = negotiated {
                            let hold = n.remote_on_hold;
                            if std::mem::replace(&mut media.remote_hold, hold) != hold {
                                hold_change = Some(hold);
                            }
                            media.negotiated = Some(n);
                        }
                        Ok(sdp.into_bytes())
                    }
                    Err(e) => {
                        tracing::warn!(%call, error = %e, "re-INVITE offer not acceptable");
                        Err(488)
                    }
                };
                let accepted = result.is_ok();
                let _ = self.ua.answer_offer(now, call, result);
                if accepted {
                    self.sync_media(call);
                }
                if let Some(hold) = hold_change {
                    let state = if hold { CallState::Held } else { CallState::InCall };
                    tracing::info!(%call, held = hold, "the far end changed hold");
                    if let Some(r) = self.calls.get_mut(&call) {
                        r.state = state;
                    }
                    let status = CallStatus {
                        state,
                        code: None,
                        reason: Some(if hold { "held by the far end" } else { "resumed" }.into()),
                    };
                    self.notify(line, CallNotice::State { call, status });
                }
            }
            CallEvent::ReinviteFailed { code } => {
                if let Some(media) = self.calls.get_mut(&call).and_then(|r| r.media.as_mut()) {
                    // the far end kept the old media: so do we
                    media.local_hold = !media.local_hold;
                    media.local.direction = if media.local_hold {
                        Direction::SendOnly
                    } else {
                        Direction::SendRecv
                    };
                }
                self.notify(
                    line,
                    CallNotice::Error {
                        call: Some(call),
                        code: Some(code),
                        reason: format!("the far end refused the change ({code})"),
                    },
                );
            }
            CallEvent::Info { content_type, body } => match dtmf_from_info(&content_type, &body) {
                Some(digit) => {
                    tracing::info!(%call, %digit, "DTMF by SIP INFO");
                    self.notify(
                        line,
                        CallNotice::Dtmf {
                            call,
                            digit,
                            method: DtmfMethod::Info,
                        },
                    );
                }
                None => tracing::debug!(%call, %content_type, "INFO received"),
            },
            CallEvent::Ended => {
                // dropping the record releases the RTP ports (or the media session does)
                if let Some(record) = self.calls.remove(&call)
                    && record.media.as_ref().is_some_and(|m| m.attached)
                    && let Some(handle) = self.lines.get(&line).and_then(|l| l.media.as_ref())
                {
                    handle.send(MediaCommand::Detach { call });
                }
            }
        }
    }
}

/// The SIP side of the bridge, from what offer/answer decided.
fn sip_media(n: &NegotiatedMedia, local_hold: bool) -> SipMedia {
    SipMedia {
        leg: SipLeg::negotiated(n, local_hold),
        remote_rtp: n.remote_rtp,
        remote_rtcp: n.remote_rtcp,
    }
}

/// A digit from an INFO body: `application/dtmf-relay` (`Signal=5`) or `application/dtmf`.
fn dtmf_from_info(content_type: &str, body: &[u8]) -> Option<char> {
    let text = std::str::from_utf8(body).ok()?;
    let ct = content_type.to_ascii_lowercase();
    let value = if ct.starts_with("application/dtmf-relay") {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            k.trim().eq_ignore_ascii_case("signal").then_some(v.trim())
        })?
    } else if ct.starts_with("application/dtmf") {
        text.trim()
    } else {
        return None;
    };
    let digit = match value {
        "10" => '*',
        "11" => '#',
        v if v.chars().count() == 1 => v.chars().next()?.to_ascii_uppercase(),
        _ => return None,
    };
    crate::api::valid_dtmf(&digit.to_string()).then_some(digit)
}

fn parse_sdp(body: &[u8]) -> Result<Sdp, String> {
    let text = std::str::from_utf8(body).map_err(|_| "SDP is not UTF-8".to_owned())?;
    Sdp::parse(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtmf_info_bodies() {
        assert_eq!(
            dtmf_from_info("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n"),
            Some('5')
        );
        assert_eq!(
            dtmf_from_info("application/dtmf-relay", b"Signal= #\r\n"),
            Some('#')
        );
        assert_eq!(
            dtmf_from_info("application/dtmf-relay", b"Signal=11\r\n"),
            Some('#')
        );
        assert_eq!(dtmf_from_info("application/dtmf", b"*"), Some('*'));
        assert_eq!(dtmf_from_info("application/dtmf-relay", b"Signal=Z\r\n"), None);
        assert_eq!(dtmf_from_info("text/plain", b"5"), None);
        assert_eq!(dtmf_from_info("application/dtmf-relay", b"\xff"), None);
    }
}
