//! The tokio driver of the SIP core (the original example's `SoftPhone`): one task
//! owns the [`UserAgent`], the SIP sockets and one [`GatewayCall`] per call; it feeds
//! the core datagrams and timeouts, feeds each call's controller its SIP events and
//! its browser's commands, carries out what they ask (SIP requests, media changes),
//! and routes events to the session that owns each line. Every decision about a call
//! is the controller's (crates/call); this module is I/O and dispatch.
//!
//! Sessions talk to it through a cloneable [`SipHandle`] (`sip_handle`); nothing else
//! touches SIP state, so there are no locks around it.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sipline_call::{CallControlError, GatewayCall, MediaAction, Notice, Output, SipAction};
use sipline_media::sdp::{LocalMedia, LocalSrtp};
use sipline_media::srtp::MasterKey;
use sipline_sip::{
    CallError, CallEvent, CallRef, CallState, CallStatus, Event, LineId, ReferTarget, UaConfig, UserAgent,
};
use tokio::sync::{mpsc, oneshot};

use crate::config::SrtpMode;
use crate::counters::{self, Counter};
use crate::media::{ParkedPorts, RtpPortPool};
use crate::media_session::{MediaCommand, MediaHandle};
use crate::peer_log::Kind;
use crate::peer_warn;
use crate::sip_handle::Command;
pub use crate::sip_handle::{
    CallInfo, CallNotice, DriverStats, LineEvent, OnCall, SipGone, SipHandle, TransferTarget,
};
use crate::sip_transport::{Received, SipTransport, SocketSettings};

/// Binds the SIP sockets and starts the SIP task.
pub async fn start(
    config: UaConfig,
    sockets: SocketSettings,
    rtp: Arc<RtpPortPool>,
    media: CallMedia,
    max_calls: Option<usize>,
    dial_pattern: regex::Regex,
) -> io::Result<SipHandle> {
    let transport = SipTransport::bind(sockets).await?;
    let ua = UserAgent::new(Instant::now(), config, fastrand::u64(..));
    let (commands, rx) = mpsc::unbounded_channel();
    let driver = Driver {
        ua,
        lines: HashMap::new(),
        calls: HashMap::new(),
        rtp,
        media,
        max_calls,
        dial_pattern,
        referrals: HashMap::new(),
    };
    tokio::spawn(driver.run(transport, rx));
    Ok(SipHandle { commands })
}

/// What calls' SIP legs offer and accept.
#[derive(Debug, Clone)]
pub struct CallMedia {
    /// Where RTP is received, as SDP says.
    pub ip: IpAddr,
    /// Voice codecs we offer the PBX, in order of preference.
    pub codecs: Vec<sipline_media::sdp::Codec>,
    pub srtp: SrtpMode,
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
    call: GatewayCall,
    /// The call's RTP ports, until the line's media session takes them.
    ports: Option<ParkedPorts>,
    /// The browser's `hold`/`unhold`, answered once the far end has.
    hold_reply: Option<oneshot::Sender<Result<(), CallControlError>>>,
    /// The call of the line this one replaces (an INVITE with Replaces).
    replaces: Option<CallRef>,
}

impl CallRecord {
    fn new(line: LineId, call: GatewayCall, ports: ParkedPorts) -> CallRecord {
        CallRecord {
            line,
            call,
            ports: Some(ports),
            hold_reply: None,
            replaces: None,
        }
    }
}

struct Driver {
    ua: UserAgent,
    lines: HashMap<LineId, LineRecord>,
    calls: HashMap<CallRef, CallRecord>,
    rtp: Arc<RtpPortPool>,
    media: CallMedia,
    /// Calls at once on this node, if limited (`calls.max_concurrent`).
    max_calls: Option<usize>,
    /// Numbers a browser may have called (`calls.dial_pattern`): also where a far end
    /// may transfer it.
    dial_pattern: regex::Regex,
    /// Calls placed because a far end transferred us (REFER), and that far end's call:
    /// it hears how they go. At most one per call (the SIP core refuses a second REFER
    /// while one is under way); an entry goes when its call's final state is told.
    referrals: HashMap<CallRef, CallRef>,
}

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
                replace_others,
                events,
                media,
                reply,
            } => {
                let user = account.user.clone();
                let id = self.ua.add_line_with(now, account, replace_others);
                self.lines.insert(id, LineRecord { user, events, media });
                let _ = reply.send(id);
            }
            Command::RemoveLine(id) => self.ua.remove_line(now, id),
            Command::PlaceCall {
                line,
                number,
                headers,
                reply,
            } => {
                let _ = reply.send(self.place_call(now, line, number, &headers));
            }
            Command::Accept { on, reply } => {
                let _ = reply.send(self.accept(now, on));
            }
            Command::HangUp { on, code, why, reply } => {
                let _ = reply.send(self.command(now, on, |r| r.call.hang_up(code, why)));
            }
            Command::Calls { line, reply } => {
                let _ = reply.send(self.calls_of(line));
            }
            Command::Dtmf { on, digits, reply } => {
                let result = self.command(now, on, |r| r.call.dtmf(&digits));
                if let Ok(method) = result {
                    tracing::info!(user = %self.user(on.line), digits, ?method, "DTMF");
                }
                let _ = reply.send(result.map(|_| ()));
            }
            Command::InfoDtmf { line, call, digit } => {
                let on = OnCall {
                    line,
                    call: Some(call),
                };
                let _ = self.command(now, on, |r| {
                    r.call.browser_key(digit);
                    Ok(())
                });
            }
            Command::Hold { on, hold, reply } => self.hold(now, on, hold, reply),
            Command::Transfer { on, to, reply } => {
                let _ = reply.send(self.transfer(now, on, to));
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

    /// Our SDP parameters for a new call, on a fresh port pair.
    fn new_media(&self) -> Result<(ParkedPorts, LocalMedia), CallControlError> {
        let ports = self.rtp.allocate().map_err(|e| {
            tracing::warn!(error = %e, "no RTP ports for a call");
            CallControlError::NoMediaPort
        })?;
        let mut local = LocalMedia::new(self.media.ip, ports.port, fastrand::u64(1..u64::MAX / 2));
        local.srtp = match self.media.srtp {
            SrtpMode::Off => None,
            mode => Some(LocalSrtp {
                key: MasterKey::random()
                    .map_err(|_| CallControlError::Sip("no random key for SRTP".into()))?,
                required: mode == SrtpMode::Mandatory,
            }),
        };
        local.codecs = self
            .media
            .codecs
            .iter()
            .chain([&sipline_media::sdp::Codec::TelephoneEvent])
            .map(|c| sipline_media::sdp::LocalCodec::new(*c))
            .collect();
        Ok((ParkedPorts::new(ports), local))
    }

    fn place_call(
        &mut self,
        now: Instant,
        line: LineId,
        number: String,
        headers: &[(String, String)],
    ) -> Result<CallRef, CallControlError> {
        if self.ua.line_calls(line).len() >= self.ua.config().calls_per_line {
            return Err(CallControlError::LineBusy);
        }
        if self.at_call_limit() {
            counters::inc(Counter::Calls);
            return Err(CallControlError::CallLimit);
        }
        let (ports, local) = self.new_media()?;
        let (call, offer) = GatewayCall::outgoing(number.clone(), local);
        let call = self.fit_to_line(line, call);
        let id = self
            .ua
            .place_call_with_headers(now, line, &number, offer, headers)
            .map_err(|e| match e {
                CallError::LineBusy => CallControlError::LineBusy,
                other => CallControlError::Sip(other.to_string()),
            })?;
        tracing::info!(user = %self.user(line), call = %id, %number, "placing call");
        self.calls.insert(id, CallRecord::new(line, call, ports));
        self.hold_others(now, line, id);
        Ok(id)
    }

    /// Answers a ringing call; the browser turns to it, so the line's others are held.
    fn accept(&mut self, now: Instant, on: OnCall) -> Result<(), CallControlError> {
        let id = self.resolve(on)?;
        let rings = self
            .calls
            .get(&id)
            .is_some_and(|r| r.call.is_incoming() && r.call.state() == CallState::Ringing);
        if !rings {
            return Err(CallControlError::NotRinging);
        }
        self.hold_others(now, on.line, id);
        self.command(now, on, |r| r.call.accept())
    }

    /// Puts on hold every call of `line` but `keep` that the browser talks in: it turns
    /// to `keep` (it answered it, placed it, or took it off hold). The far ends are told
    /// by re-INVITE; the browser by `callHoldChanged` once each agreed. A far end that
    /// refuses stays off hold at the SIP level, but its audio no longer reaches the
    /// browser, which now hears `keep`.
    fn hold_others(&mut self, now: Instant, line: LineId, keep: CallRef) {
        let others: Vec<CallRef> = self
            .ua
            .line_calls(line)
            .iter()
            .copied()
            .filter(|c| *c != keep)
            .collect();
        for other in others {
            let Some(record) = self.calls.get_mut(&other) else {
                continue;
            };
            if record.call.is_talking() {
                tracing::info!(call = %other, turned_to = %keep, "holding the call the browser leaves");
                let _ = record.call.hold(true);
                self.carry_out(now, other);
            }
        }
    }

    /// Transfers a call: blind to a number, or attended to another call of the line.
    fn transfer(&mut self, now: Instant, on: OnCall, to: TransferTarget) -> Result<(), CallControlError> {
        match to {
            TransferTarget::Number(number) => self.command(now, on, |r| r.call.transfer(&number)),
            TransferTarget::Call(other) => {
                let other = self.resolve(OnCall {
                    line: on.line,
                    call: Some(other),
                })?;
                self.command(now, on, |r| r.call.transfer_to_call(other))
            }
        }
    }

    /// Whether a call of `line` other than `call` is the one the browser talks in.
    fn another_talks(&self, line: LineId, call: CallRef) -> bool {
        self.ua
            .line_calls(line)
            .iter()
            .filter(|c| **c != call)
            .any(|c| self.calls.get(c).is_some_and(|r| r.call.is_talking()))
    }

    /// What the session may know of its line's calls, oldest first.
    fn calls_of(&self, line: LineId) -> Vec<CallInfo> {
        self.ua
            .line_calls(line)
            .iter()
            .filter_map(|id| {
                let r = self.calls.get(id)?;
                Some(CallInfo {
                    call: *id,
                    peer: r.call.peer().to_owned(),
                    incoming: r.call.is_incoming(),
                    state: r.call.state(),
                    on_hold: r.call.is_held_by_us(),
                })
            })
            .collect()
    }

    /// Asks a call to hold or resume; `reply` is answered once the far end has. Taking
    /// a call off hold turns the browser to it: the line's others are held first.
    fn hold(
        &mut self,
        now: Instant,
        on: OnCall,
        hold: bool,
        reply: oneshot::Sender<Result<(), CallControlError>>,
    ) {
        let id = match self.resolve(on) {
            Ok(id) => id,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        if self.calls.get(&id).is_some_and(|r| r.hold_reply.is_some()) {
            let _ = reply.send(Err(CallControlError::OfferInProgress));
            return;
        }
        let Some(record) = self.calls.get_mut(&id) else {
            let _ = reply.send(Err(CallControlError::CallEnded));
            return;
        };
        record.hold_reply = Some(reply);
        let asked = record.call.hold(hold);
        tracing::info!(call = %id, hold, "hold");
        if !hold && asked.is_ok() {
            // the browser turns to this call: the others wait, their audio parked
            self.hold_others(now, on.line, id);
            self.media_action(on.line, id, MediaAction::Focus);
        }
        let refused = self.carry_out(now, id);
        if let Some(e) = asked.err().or(refused)
            && let Some(reply) = self.calls.get_mut(&id).and_then(|r| r.hold_reply.take())
        {
            let _ = reply.send(Err(e));
        }
    }

    /// The call a browser's request is for: the one it named, if the line has it; else
    /// the line's only call.
    fn resolve(&self, on: OnCall) -> Result<CallRef, CallControlError> {
        let calls = self.ua.line_calls(on.line);
        match on.call {
            Some(id) if calls.contains(&id) && self.calls.contains_key(&id) => Ok(id),
            Some(id) => Err(CallControlError::NoSuchCall(crate::session::call_id(id))),
            None => match calls {
                [] => Err(CallControlError::NoCall),
                [id] if self.calls.contains_key(id) => Ok(*id),
                [_] => Err(CallControlError::NoCall),
                _ => Err(CallControlError::WhichCall),
            },
        }
    }

    /// Runs a browser command on the call it is for and carries out what it asks.
    fn command<T>(
        &mut self,
        now: Instant,
        on: OnCall,
        run: impl FnOnce(&mut CallRecord) -> Result<T, CallControlError>,
    ) -> Result<T, CallControlError> {
        let id = self.resolve(on)?;
        let record = self.calls.get_mut(&id).ok_or(CallControlError::NoCall)?;
        let result = run(record);
        let refused = self.carry_out(now, id);
        let value = result?;
        refused.map_or(Ok(value), Err)
    }

    /// Carries out everything the call's controller asks, in order. Returns the first
    /// action the user agent refused.
    fn carry_out(&mut self, now: Instant, id: CallRef) -> Option<CallControlError> {
        let mut refused = None;
        while let Some((line, replaces, output)) = self
            .calls
            .get_mut(&id)
            .and_then(|r| Some((r.line, r.replaces, r.call.poll_output()?)))
        {
            match output {
                Output::Notify(notice) => self.notify(line, call_notice(id, notice, replaces)),
                Output::Sip(action) => {
                    if let Err(e) = self.sip_action(now, id, &action) {
                        tracing::debug!(call = %id, error = %e, ?action, "not carried out");
                        if let Some(r) = self.calls.get_mut(&id) {
                            r.call.sip_refused(&action, e.to_string());
                        }
                        refused.get_or_insert(CallControlError::Sip(e.to_string()));
                    }
                }
                Output::Media(action) => self.media_action(line, id, action),
                Output::HoldSettled(outcome) => {
                    tracing::info!(call = %id, ?outcome, "hold change settled");
                    if let Some(reply) = self.calls.get_mut(&id).and_then(|r| r.hold_reply.take()) {
                        let _ = reply.send(outcome);
                    }
                }
                Output::Warning(what) => peer_warn!(Kind::Sip, call = %id, "{what}"),
            }
        }
        refused
    }

    fn sip_action(&mut self, now: Instant, id: CallRef, action: &SipAction) -> Result<(), CallError> {
        match action {
            SipAction::Accept { sdp } => self.ua.accept_call(now, id, sdp.clone()),
            SipAction::AnswerOffer(answer) => self.ua.answer_offer(now, id, answer.clone()),
            SipAction::Reinvite { sdp } => self.ua.reinvite(now, id, sdp.clone()),
            SipAction::HangUp { code, why } => self.ua.hang_up_because(now, id, *code, why.clone()),
            SipAction::Info { content_type, body } => self.ua.send_info(now, id, content_type, body.clone()),
            SipAction::Refer { number } => self.ua.refer(now, id, number),
            SipAction::ReferToCall { other } => self.ua.refer_to_call(now, id, *other),
        }
    }

    fn media_action(&mut self, line: LineId, call: CallRef, action: MediaAction) {
        let Some(handle) = self.lines.get(&line).and_then(|l| l.media.clone()) else {
            return;
        };
        let command = match action {
            MediaAction::Attach(leg) => {
                let Some(ports) = self.calls.get_mut(&call).and_then(|r| r.ports.take()) else {
                    return;
                };
                // answered while the browser talks in another call (it turned back to
                // that one meanwhile): parked, and put on hold
                let focus = !self.another_talks(line, call);
                if !focus && let Some(r) = self.calls.get_mut(&call) {
                    tracing::info!(%call, "answered while the browser talks in another call: holding it");
                    let _ = r.call.hold(true);
                }
                MediaCommand::Attach {
                    call,
                    ports: Box::new(ports.hand_over()),
                    leg: Box::new(leg),
                    focus,
                }
            }
            MediaAction::Update(leg) => MediaCommand::Update {
                call,
                leg: Box::new(leg),
            },
            MediaAction::Detach => MediaCommand::Detach { call },
            MediaAction::Focus => MediaCommand::Focus { call },
            MediaAction::Dtmf(digits) => MediaCommand::Dtmf { call, digits },
        };
        handle.send(command);
    }

    /// A new call as its line can carry it: without a media task (no WebRTC port for
    /// the session), its media is negotiated but never attached.
    fn fit_to_line(&self, line: LineId, call: GatewayCall) -> GatewayCall {
        match self.lines.get(&line).is_some_and(|l| l.media.is_some()) {
            true => call,
            false => call.without_media_task(),
        }
    }

    /// Whether `calls.max_concurrent` calls exist already.
    fn at_call_limit(&self) -> bool {
        self.max_calls.is_some_and(|max| self.calls.len() >= max)
    }

    fn user(&self, line: LineId) -> &str {
        self.lines.get(&line).map(|l| l.user.as_str()).unwrap_or("?")
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
            Event::Call {
                line,
                call,
                event:
                    CallEvent::Incoming {
                        from,
                        display_name,
                        offer,
                        headers,
                        replaces,
                    },
            } => self.on_incoming(now, line, call, (from, display_name, headers), offer, replaces),
            Event::Call {
                line,
                call,
                event: CallEvent::Referred(target),
            } => self.on_referred(now, line, call, target),
            Event::Call { line, call, event } => {
                if let CallEvent::Status(status) = &event {
                    self.report_referral(now, call, status);
                    tracing::info!(
                        user = %self.user(line),
                        %call,
                        state = ?status.state,
                        code = status.code,
                        reason = status.reason.as_deref().unwrap_or(""),
                        "call state changed"
                    );
                }
                let ended = event == CallEvent::Ended;
                let Some(record) = self.calls.get_mut(&call) else {
                    // a call refused on arrival: nothing to tell
                    return;
                };
                record.call.on_sip_event(event);
                self.carry_out(now, call);
                if ended {
                    // dropping the record frees the ports unless the media session has them
                    self.calls.remove(&call);
                    self.referrals.remove(&call);
                }
            }
        }
    }

    /// The far end of `call` asks us to call someone else (its REFER, accepted): the new
    /// call is placed on the same line (the dial policy applies, and `call` is put on
    /// hold as for any call placed during another), and the transferor hears how it goes.
    fn on_referred(&mut self, now: Instant, line: LineId, call: CallRef, target: ReferTarget) {
        let number = target.number.trim().to_owned();
        tracing::info!(user = %self.user(line), %call, %number, "the far end transfers the call");
        let placed = if self.dial_pattern.is_match(&number) {
            let headers: Vec<(String, String)> = [
                target.replaces.map(|r| ("Replaces".to_owned(), r)),
                target.referred_by.map(|r| ("Referred-By".to_owned(), r)),
            ]
            .into_iter()
            .flatten()
            .collect();
            self.place_call(now, line, number.clone(), &headers)
                .map_err(|e| match e {
                    CallControlError::LineBusy => (486, "Busy Here"),
                    CallControlError::CallLimit | CallControlError::NoMediaPort => {
                        (503, "Service Unavailable")
                    }
                    _ => (500, "Server Internal Error"),
                })
        } else {
            counters::inc(Counter::DialPolicy);
            peer_warn!(Kind::Sip, %call, number = %crate::peer_log::clip(&number), "transfer to a number the dial policy refuses");
            Err((403, "Forbidden"))
        };
        match placed {
            Ok(new_call) => {
                self.referrals.insert(new_call, call);
                self.notify(
                    line,
                    CallNotice::Referred {
                        call,
                        new_call,
                        number,
                    },
                );
            }
            Err((code, reason)) => {
                tracing::info!(%call, code, "transfer not carried out");
                let _ = self.ua.notify_referral(now, call, code, reason);
            }
        }
    }

    /// `new` takes the place of `old` (RFC 3891): `old` ends, `new` is answered without
    /// ringing, and the browser hears it.
    fn replace(&mut self, now: Instant, line: LineId, old: CallRef, new: CallRef) {
        tracing::info!(user = %self.user(line), %old, %new, "a transferred call replaces ours");
        let why = Some("replaced by a transferred call".to_owned());
        let ended = self.command(
            now,
            OnCall {
                line,
                call: Some(old),
            },
            |r| r.call.hang_up(480, why),
        );
        if let Err(e) = ended {
            // already ending: the new call is refused like any that names no live call
            tracing::info!(%old, %new, error = %e, "nothing to replace any more");
            let _ = self.command(
                now,
                OnCall {
                    line,
                    call: Some(new),
                },
                |r| r.call.hang_up(481, None),
            );
            return;
        }
        // the browser turns to the new call: any other it talks in waits on hold
        self.hold_others(now, line, new);
        let answered = self.command(
            now,
            OnCall {
                line,
                call: Some(new),
            },
            |r| r.call.accept(),
        );
        if let Err(e) = answered {
            tracing::warn!(%old, %new, error = %e, "the replacement did not go through");
        }
    }

    /// Tells a transferor how the call it asked for goes (NOTIFY), until its final state.
    fn report_referral(&mut self, now: Instant, new_call: CallRef, status: &CallStatus) {
        let Some(&transferor) = self.referrals.get(&new_call) else {
            return;
        };
        let reason = status.reason.as_deref();
        let (code, reason) = match status.state {
            CallState::Dialing | CallState::Held => return,
            CallState::Ringing => (180, "Ringing"),
            CallState::EarlyMedia => (183, "Session Progress"),
            CallState::InCall | CallState::Completed => (200, "OK"),
            CallState::Busy => (status.code.unwrap_or(486), reason.unwrap_or("Busy Here")),
            CallState::Rejected => (status.code.unwrap_or(603), reason.unwrap_or("Decline")),
            CallState::Cancelled => (487, "Request Terminated"),
            CallState::NoAnswer => (status.code.unwrap_or(408), reason.unwrap_or("Request Timeout")),
            CallState::Failed => (
                status.code.filter(|c| *c >= 300).unwrap_or(500),
                reason.unwrap_or("Server Internal Error"),
            ),
        };
        if code >= 200 {
            self.referrals.remove(&new_call);
        }
        let _ = self.ua.notify_referral(now, transferor, code, reason);
    }

    /// An INVITE on a line: refused at the call limit, without ports or with an offer
    /// that cannot be read; else it rings at the browser. One that replaces a call of the
    /// line (an attended transfer to us) is answered at once and the other call ended.
    fn on_incoming(
        &mut self,
        now: Instant,
        line: LineId,
        call: CallRef,
        (from, display_name, headers): (String, Option<String>, Vec<(String, String)>),
        offer: Option<Vec<u8>>,
        replaces: Option<CallRef>,
    ) {
        tracing::info!(user = %self.user(line), %call, %from, "incoming call");
        let refuse = if self.at_call_limit() {
            counters::inc(Counter::Calls);
            tracing::warn!(user = %self.user(line), %call, %from, "incoming call refused: call limit");
            Err(503)
        } else {
            self.new_media().map_err(|_| 503).and_then(|(ports, local)| {
                GatewayCall::incoming(from, display_name, headers, offer.as_deref(), local)
                    .map(|c| (self.fit_to_line(line, c), ports))
            })
        };
        match refuse {
            Ok((gateway_call, ports)) => {
                let mut record = CallRecord::new(line, gateway_call, ports);
                record.replaces = replaces;
                self.calls.insert(call, record);
                self.carry_out(now, call);
                if let Some(old) = replaces {
                    self.replace(now, line, old, call);
                }
            }
            Err(code) => {
                tracing::info!(%call, code, "incoming call refused");
                let _ = self.ua.hang_up(now, call, code);
            }
        }
    }
}

/// What the session hears, from what the controller says (`replaces`: the call this
/// one takes the place of).
fn call_notice(call: CallRef, notice: Notice, replaces: Option<CallRef>) -> CallNotice {
    match notice {
        Notice::Incoming {
            from,
            display_name,
            headers,
        } => CallNotice::Incoming {
            call,
            from,
            display_name,
            headers,
            replaces,
        },
        Notice::State(status) => CallNotice::State { call, status },
        Notice::Error { code, reason } => CallNotice::Error {
            call: Some(call),
            code,
            reason,
        },
        Notice::Dtmf { digit, method } => CallNotice::Dtmf {
            call,
            digit,
            method: method.into(),
        },
        Notice::Transfer { state, code } => CallNotice::Transfer { call, state, code },
        Notice::Hold { on } => CallNotice::Hold { call, on },
    }
}
