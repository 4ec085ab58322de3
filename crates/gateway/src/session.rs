//! One browser connection (the original example's server-side `SIPClient`): leases an
//! account, registers it as a line, answers the browser's JSON-RPC requests, pushes
//! line events as notifications, and on disconnect (clean close, reset, or silence
//! past the idle timeout) unregisters the line and only then frees the account.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use sipline_sip::{LineState, LineStatus};
use tokio::time::{Instant, sleep_until};

use crate::api::{
    CallSnapshot, ClientRequest, Incoming, Notification, PhoneLineState, RegistrationState, RpcError,
    StateSnapshot, codes, error_json, result_json,
};
use crate::api::{DtmfMethod, LegStats, TransferTo};
use crate::config::Settings;
use crate::counters::{self, Counter};
use crate::media_session::{self, CallStats, MediaCommand, MediaEvent, MediaHandle, MediaSettings};
use crate::peer_log::{Kind, clip};
use crate::peer_warn;
use crate::per_ip::{Exceeded, PerIpLimit};
use crate::pool::{AccountPool, LeaseLost, Refusal};
use crate::resume::Rejoin;
use crate::session_guard::{CLOSE_GOING_AWAY, CLOSE_MESSAGE_TOO_BIG, SessionGuard, Verdict};
use crate::sip_driver::{CallNotice, LineEvent, OnCall, SipHandle, TransferTarget};
use futures_util::stream::SplitSink;
use sipline_media::bridge::Side;
use tokio::sync::mpsc;

/// WebSocket close code "Try Again Later" (RFC 6455 registry), sent with `connectionLimit`.
pub const CLOSE_TRY_AGAIN_LATER: u16 = 1013;
/// WebSocket close code "Service Restart": the node drains; connect again (elsewhere).
pub const CLOSE_SERVICE_RESTART: u16 = 1012;

/// The close code sipline.js sends when its pings go unanswered (it will resume).
pub const CLOSE_NO_ANSWER_TO_PING: u16 = 4001;

/// Replies a session may have waiting for the far end at once.
const MAX_WAITING_REPLIES: usize = 4;

/// Longest wait for a line to unregister after its browser left (beyond the 32 s a
/// SIP transaction may take), so a lease is always returned.
const UNREGISTER_GRACE: std::time::Duration = std::time::Duration::from_secs(40);

/// What every session shares.
pub struct Gateway {
    pub settings: Settings,
    pub pool: Arc<AccountPool>,
    pub sip: SipHandle,
    /// Ports for calls and for each session's WebRTC leg.
    pub rtp: Arc<crate::media::RtpPortPool>,
    /// The embedded PBX, when it runs.
    pub pbx: Option<Arc<crate::pbx_driver::PbxStatus>>,
    /// HTTP connections open (for `/metrics`), once serving.
    pub http_connections: Option<crate::http_accept::LimitAcceptor>,
    pub sessions: AtomicUsize,
    /// Sessions in all and per IP address (`http.max_sessions`, `http.max_sessions_per_ip`).
    pub session_places: PerIpLimit,
    /// True once the node drains (SIGTERM): no new sessions, the others go when idle.
    pub draining: tokio::sync::watch::Sender<bool>,
    /// Resume tokens of the live sessions.
    pub resumes: crate::resume::Resumes,
    /// Sessions whose browser is away, waiting to be resumed; and how many were resumed.
    pub away: AtomicUsize,
    pub resumed: AtomicU64,
    next_conn: AtomicU64,
}

impl Gateway {
    pub fn new(
        settings: Settings,
        pool: Arc<AccountPool>,
        sip: SipHandle,
        rtp: Arc<crate::media::RtpPortPool>,
    ) -> Gateway {
        let limits = &settings.session_limits;
        let session_places = PerIpLimit::new(limits.max_sessions, limits.max_sessions_per_ip);
        Gateway {
            settings,
            pool,
            sip,
            rtp,
            pbx: None,
            http_connections: None,
            sessions: AtomicUsize::new(0),
            session_places,
            draining: tokio::sync::watch::Sender::new(false),
            resumes: crate::resume::Resumes::default(),
            away: AtomicUsize::new(0),
            resumed: AtomicU64::new(0),
            next_conn: AtomicU64::new(1),
        }
    }
}

impl Gateway {
    /// Stops admitting sessions and asks the idle ones to go (SIGTERM).
    pub fn start_draining(&self) {
        self.draining.send_replace(true);
    }

    pub fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }

    /// Whether a new browser would be admitted now (for `/readyz`).
    pub fn admitting(&self) -> bool {
        !self.is_draining()
            && self.session_places.open() < self.settings.session_limits.max_sessions
            && self.pool.may_lease()
    }
}

/// Counts a live session for as long as it exists.
struct SessionCount<'a>(&'a AtomicUsize);

impl<'a> SessionCount<'a> {
    fn new(c: &'a AtomicUsize) -> Self {
        c.fetch_add(1, Ordering::Relaxed);
        SessionCount(c)
    }
}

impl Drop for SessionCount<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn text(s: String) -> Message {
    Message::Text(s.into())
}

type Sink = SplitSink<WebSocket, Message>;
type Stream = futures_util::stream::SplitStream<WebSocket>;

/// Runs one browser session to its end.
pub async fn run(socket: WebSocket, gw: Arc<Gateway>, peer: SocketAddr) {
    let conn = gw.next_conn.fetch_add(1, Ordering::Relaxed);
    let _count = SessionCount::new(&gw.sessions);
    tracing::info!(conn, %peer, "browser connected");
    let (mut sink, stream) = socket.split();
    let Some((place, mut lease)) = admit(&gw, &mut sink, conn, peer).await else {
        return;
    };
    let account = lease.account().clone();
    tracing::info!(conn, user = %account.user, "account leased");
    let (rejoin_tx, rejoins) = mpsc::channel(1);
    let token = gw
        .settings
        .resume_window
        .and_then(|_| gw.resumes.issue(&rejoin_tx));
    say_hello(&gw, &mut sink, &account, token.clone()).await;
    // the browser's media leg, negotiated as soon as it sends its offer
    let (media_tx, media_events) = mpsc::unbounded_channel();
    let media = start_media(&gw, conn, media_tx);
    if lease.is_lost() {
        // the browser took so long to take its hello that the lease could not be kept
        if let Some(t) = &token {
            gw.resumes.revoke(t);
        }
        tracing::warn!(conn, user = %account.user, "account lease lost before registering");
        close_with(
            &mut sink,
            CLOSE_TRY_AGAIN_LATER,
            "account lease lost: connect again",
        )
        .await;
        return;
    }
    let replace_others = lease.is_takeover();
    let Ok((line, events)) = gw
        .sip
        .add_line_with(account.clone(), media.clone(), replace_others)
        .await
    else {
        if let Some(t) = &token {
            gw.resumes.revoke(t);
        }
        tracing::error!(conn, "SIP task gone");
        return;
    };
    let fence_watch = stop_line_when_lost(&gw, &lease, line, conn);
    let mut session = Session {
        guard: SessionGuard::new(&gw.settings.session_limits, std::time::Instant::now()),
        gw: Arc::clone(&gw),
        conn,
        account,
        line,
        media,
        sink,
        stream,
        status: None,
        answered_at: None,
        later: futures_util::stream::FuturesUnordered::new(),
        leaving: None,
        close: None,
        removed: false,
        lost: lease.lost(),
        rejoins,
        rejoin_tx,
        token,
        presented: None,
        missed: std::collections::VecDeque::new(),
    };
    let mut events = events;
    let why = session.serve(&mut events, media_events).await;
    fence_watch.abort();
    // no resuming a session that ends: its tokens go, later rejoins get a new session
    for t in [session.token.take(), session.presented.take()]
        .into_iter()
        .flatten()
    {
        gw.resumes.revoke(&t);
    }
    session.rejoins.close();
    while let Ok(late) = session.rejoins.try_recv() {
        tokio::spawn(async move {
            let (mut sink, _) = late.socket.split();
            close_with(
                &mut sink,
                CLOSE_SERVICE_RESTART,
                "that session has ended: connect again",
            )
            .await;
        });
    }
    let removed = session.removed;
    let user = session.account.user.clone();
    tracing::info!(conn, %user, reason = %why, "browser disconnected");
    session.close().await;
    drop(place);
    // Unregister, and free the account only once the PBX has forgotten the binding;
    // a newcomer may wait for it meanwhile.
    lease.releasing();
    if removed || unregister(&gw, line, &mut events, conn, &user).await {
        lease.unregistered();
    }
    drop(lease);
    tracing::info!(conn, %user, "account released");
}

/// A place among the sessions and an account, or the browser told why not (and None).
async fn admit(
    gw: &Gateway,
    sink: &mut Sink,
    conn: u64,
    peer: SocketAddr,
) -> Option<(crate::per_ip::Place, crate::pool::Lease)> {
    if gw.is_draining() {
        counters::inc(Counter::Draining);
        tracing::info!(conn, "draining: not admitted");
        close_with(sink, CLOSE_SERVICE_RESTART, "draining: connect again").await;
        return None;
    }
    let place = match gw.session_places.take(peer.ip()) {
        Ok(place) => place,
        Err(exceeded) => {
            let (counter, reason) = match exceeded {
                Exceeded::Total => (Counter::Sessions, "session limit of this gateway"),
                Exceeded::PerIp => (Counter::SessionsPerIp, "too many sessions from this address"),
            };
            counters::inc(counter);
            peer_warn!(Kind::Browser, conn, %peer, "{reason}: connection limit");
            refuse_admission(sink, reason).await;
            return None;
        }
    };
    match gw.pool.lease_or_wait(gw.settings.admission_wait).await {
        Ok(lease) => Some((place, lease)),
        Err(Refusal::Full) => {
            tracing::info!(conn, "no free account: connection limit");
            refuse_admission(sink, "connection limit").await;
            tracing::info!(conn, "browser disconnected (connection limit)");
            None
        }
        Err(Refusal::Unavailable(why)) => {
            counters::inc(Counter::PoolUnavailable);
            tracing::warn!(conn, why, "account pool unavailable: not admitted");
            refuse_admission(sink, why).await;
            None
        }
    }
}

/// `registrationStateChanged` (accepted, with the resume token) and `sipUserNameReceived`.
async fn say_hello(gw: &Gateway, sink: &mut Sink, account: &sipline_sip::Account, token: Option<String>) {
    let hello = [
        Notification::RegistrationStateChanged {
            state: RegistrationState::Accepted,
            resume_window: token.as_ref().and(gw.settings.resume_window).map(|w| w.as_secs()),
            resume_token: token,
        },
        Notification::SipUserNameReceived {
            user: account.user.clone(),
            display_name: account.display_name.clone(),
            dial_pattern: Some(gw.settings.dial_pattern.as_str().to_owned()),
        },
    ];
    for n in hello {
        if sink.send(text(n.to_json())).await.is_err() {
            break;
        }
    }
}

/// The session's media task on its own port (None, and calls without audio, when no
/// port is free).
fn start_media(gw: &Gateway, conn: u64, events: mpsc::UnboundedSender<MediaEvent>) -> Option<MediaHandle> {
    match gw.rtp.allocate() {
        Ok(ports) => Some(media_session::spawn(
            gw.settings.media_ip,
            ports,
            MediaSettings {
                symmetric_rtp: gw.settings.symmetric_rtp,
                codecs: gw.settings.browser_codecs.clone(),
                timeouts: gw.settings.media_timeouts,
            },
            events,
        )),
        Err(e) => {
            tracing::warn!(conn, error = %e, "no port for the browser's media: calls without audio");
            None
        }
    }
}

/// With a shared pool, a lease given up must stop the line at once (BYE, unregister),
/// before another node can claim the account, whatever the session task is busy with
/// (a browser that does not read can hold it up in a send).
fn stop_line_when_lost(
    gw: &Gateway,
    lease: &crate::pool::Lease,
    line: sipline_sip::LineId,
    conn: u64,
) -> tokio::task::JoinHandle<()> {
    let (sip, mut lost) = (gw.sip.clone(), lease.lost());
    tokio::spawn(async move {
        let why = lost.wait().await;
        tracing::warn!(
            conn,
            ?why,
            "account lease lost: ending the line's call and unregistering"
        );
        sip.remove_line(line);
    })
}

/// Asks the SIP task to remove the line and waits (bounded) until it is unregistered;
/// false if it did not say so in time.
async fn unregister(
    gw: &Gateway,
    line: sipline_sip::LineId,
    events: &mut mpsc::UnboundedReceiver<LineEvent>,
    conn: u64,
    user: &str,
) -> bool {
    gw.sip.remove_line(line);
    let deadline = Instant::now() + UNREGISTER_GRACE;
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Some(LineEvent::Removed) => return true,
                None => return false,
                Some(LineEvent::Status(_) | LineEvent::Call(_)) => {}
            },
            _ = sleep_until(deadline) => {
                tracing::warn!(conn, %user, "line did not unregister in time");
                return false;
            }
        }
    }
}

/// Whether the session goes on after an input.
enum Flow {
    Go,
    /// The browser's connection is gone without a close: resumable.
    Lost(String),
    /// Over, for this reason (logged).
    Stop(String),
}

/// One admitted browser: its socket, its line and what it may still do.
struct Session {
    gw: Arc<Gateway>,
    conn: u64,
    account: sipline_sip::Account,
    line: sipline_sip::LineId,
    media: Option<MediaHandle>,
    sink: Sink,
    stream: Stream,
    guard: SessionGuard,
    status: Option<LineStatus>,
    /// The current call and when it was answered (to log the first audio's delay).
    answered_at: Option<(sipline_sip::CallRef, Instant)>,
    /// Replies waiting for the far end (`hold`).
    later: futures_util::stream::FuturesUnordered<LaterReply>,
    /// Told to go (session length, draining): now if no call runs, else when it ends.
    leaving: Option<(u16, &'static str)>,
    /// The close frame to send, if the session ends with one.
    close: Option<(u16, &'static str)>,
    /// The SIP task already removed the line.
    removed: bool,
    /// The shared pool gave the account's lease up: stop at once.
    lost: LeaseLost,
    /// New WebSockets for this session (resume tokens lead here).
    rejoins: mpsc::Receiver<Rejoin>,
    rejoin_tx: mpsc::Sender<Rejoin>,
    /// The current resume token (None when resuming is off).
    token: Option<String>,
    /// The token the current connection presented: it still leads here until the browser
    /// answers a ping on that connection (if our hello with the new token was lost, the
    /// browser only knows this one).
    presented: Option<String>,
    /// Call notifications that happened while the browser was away (the latest few).
    missed: std::collections::VecDeque<Notification>,
}

/// What a browser that comes back must still be told about its calls.
fn is_call_news(n: &Notification) -> bool {
    matches!(
        n,
        Notification::CallStateChanged { .. }
            | Notification::IncomingCall { .. }
            | Notification::TransferStateChanged { .. }
            | Notification::CallHoldChanged { .. }
            | Notification::CallReferred { .. }
    )
}

/// Call notifications kept for a browser that is away.
const MAX_MISSED: usize = 32;

impl Session {
    /// Serves the browser until the session ends; returns why.
    async fn serve(
        &mut self,
        events: &mut mpsc::UnboundedReceiver<LineEvent>,
        mut media_events: mpsc::UnboundedReceiver<MediaEvent>,
    ) -> String {
        let ping_every = self.gw.settings.ws_ping_interval;
        let idle = self.gw.settings.ws_idle_timeout;
        let mut next_ping = Instant::now() + ping_every;
        let mut silent_until = Instant::now() + idle;
        let ends_at = self.guard.ends_at().map(Instant::from_std);
        let mut time_up = false;
        let mut draining = self.gw.draining.subscribe();
        loop {
            let mut must_leave = false;
            let flow = tokio::select! {
                frame = self.stream.next() => {
                    silent_until = Instant::now() + idle;
                    self.on_frame(frame).await
                }
                Some(reply) = self.later.next(), if !self.later.is_empty() => match reply {
                    Some(r) => self.send(r).await,
                    None => Flow::Go,
                },
                ev = events.recv() => self.on_line_event(ev).await,
                Some(ev) = media_events.recv() => self.on_media_event(ev).await,
                _ = sleep_until(next_ping) => {
                    next_ping = Instant::now() + ping_every;
                    match self.sink.send(Message::Ping(Default::default())).await {
                        Ok(()) => Flow::Go,
                        Err(_) => Flow::Lost("ping failed".to_owned()),
                    }
                }
                _ = sleep_until(silent_until) => Flow::Lost(format!("silent for {} s (no pong)", idle.as_secs_f64())),
                Some(rejoin) = self.rejoins.recv() => {
                    // the browser is back before we noticed it had gone
                    self.attach(rejoin).await;
                    silent_until = Instant::now() + idle;
                    Flow::Go
                }
                _ = sleep_until(ends_at.unwrap_or_else(Instant::now)), if ends_at.is_some() && !time_up => {
                    time_up = true;
                    counters::inc(Counter::SessionLength);
                    self.leaving.get_or_insert((CLOSE_GOING_AWAY, "session length limit reached"));
                    must_leave = true;
                    Flow::Go
                }
                why = self.lost.wait() => {
                    tracing::warn!(conn = self.conn, user = %self.account.user, ?why, "account lease lost: closing");
                    // stop the line now, not after the close handshake (the watcher task
                    // does the same when this loop is stuck; it is aborted right after)
                    self.gw.sip.remove_line(self.line);
                    self.close = Some((CLOSE_TRY_AGAIN_LATER, "account lease lost: connect again"));
                    Flow::Stop("account lease lost".to_owned())
                }
                Ok(()) = draining.changed() => {
                    if *draining.borrow() {
                        self.leaving.get_or_insert((CLOSE_SERVICE_RESTART, "draining: connect again"));
                        must_leave = true;
                    }
                    Flow::Go
                }
            };
            match flow {
                Flow::Go => {}
                Flow::Stop(why) => return why,
                Flow::Lost(why) => {
                    self.set_browser_away(true);
                    let Some(rejoin) = self.away(&why, events, &mut media_events).await else {
                        return why;
                    };
                    self.set_browser_away(false);
                    self.attach(rejoin).await;
                    silent_until = Instant::now() + idle;
                    next_ping = Instant::now() + ping_every;
                    if self.leaving.is_some()
                        && let Some(why) = self.leave_if_idle().await
                    {
                        return why;
                    }
                }
            }
            if must_leave && let Some(why) = self.leave_if_idle().await {
                return why;
            }
        }
    }

    /// Told to go: now if no call runs (the reason), else when it ends.
    async fn leave_if_idle(&mut self) -> Option<String> {
        let (code, reason) = self.leaving?;
        if matches!(self.gw.sip.calls(self.line).await.as_deref(), Ok([]) | Err(_)) {
            self.close = Some((code, reason));
            return Some(reason.to_owned());
        }
        tracing::info!(conn = self.conn, user = %self.account.user, reason, "closing when the call ends");
        None
    }

    /// The browser's connection went away without a close: keep the session (lease,
    /// line, call) for `http.resume_window` and wait for the browser to come back with
    /// its token. None: it did not (or resuming is off), the session ends.
    async fn away(
        &mut self,
        why: &str,
        events: &mut mpsc::UnboundedReceiver<LineEvent>,
        media_events: &mut mpsc::UnboundedReceiver<MediaEvent>,
    ) -> Option<Rejoin> {
        let window = self.gw.settings.resume_window?;
        self.token.as_ref()?;
        tracing::info!(conn = self.conn, user = %self.account.user, reason = why, window_s = window.as_secs_f64(), "browser away: keeping the session for it");
        let gw = Arc::clone(&self.gw);
        let _away = SessionCount::new(&gw.away);
        let deadline = Instant::now() + window;
        let mut draining = self.gw.draining.subscribe();
        if *draining.borrow_and_update() {
            return None;
        }
        loop {
            tokio::select! {
                Some(rejoin) = self.rejoins.recv() => return Some(rejoin),
                ev = events.recv() => match ev {
                    Some(LineEvent::Status(s)) => self.status = Some(s),
                    Some(LineEvent::Call(notice)) => {
                        let over = matches!(&notice, CallNotice::State { status, .. } if status.state.is_final());
                        self.remember(call_notification(notice));
                        if over && self.leaving.is_some() && self.leave_if_idle().await.is_some() {
                            return None; // it was to go once its calls ended
                        }
                    }
                    Some(LineEvent::Removed) | None => {
                        self.removed = true;
                        return None;
                    }
                },
                Some(ev) = media_events.recv() => match ev {
                    // a dead far end is hung up, the browser's keys still go out as INFO
                    MediaEvent::MediaTimeout { .. } | MediaEvent::Dtmf { from: Side::Browser, .. } => {
                        let _ = self.on_media_event(ev).await;
                    }
                    // statistics and the far end's keys are for a browser that listens
                    _ => {}
                },
                _ = sleep_until(deadline) => {
                    tracing::info!(conn = self.conn, user = %self.account.user, "browser did not come back in time");
                    return None;
                }
                _ = self.lost.wait() => {
                    self.gw.sip.remove_line(self.line);
                    return None;
                }
                Ok(()) = draining.changed() => if *draining.borrow() {
                    return None;
                },
            }
        }
    }

    /// Tells the media session whether its browser is away (its leg's silence is then
    /// no media timeout: the resume window decides).
    fn set_browser_away(&self, away: bool) {
        if let Some(m) = &self.media {
            m.send(MediaCommand::BrowserAway(away));
        }
    }

    /// A new WebSocket for this session: it replaces the old one and is told where
    /// things stand (`resumed` with a new token, the account, the line, the call).
    async fn attach(&mut self, rejoin: Rejoin) {
        let replaced = CloseFrame {
            code: CLOSE_GOING_AWAY,
            reason: "replaced by a resumed connection".into(),
        };
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            self.sink.send(Message::Close(Some(replaced))),
        )
        .await;
        let (sink, stream) = rejoin.socket.split();
        (self.sink, self.stream) = (sink, stream);
        self.gw.resumed.fetch_add(1, Ordering::Relaxed);
        // the token presented (taken) stays a way back until the browser pongs; the
        // others it could have presented lead nowhere now
        for t in [self.token.take(), self.presented.take()].into_iter().flatten() {
            self.gw.resumes.revoke(&t);
        }
        self.gw.resumes.restore(rejoin.token.clone(), &self.rejoin_tx);
        self.presented = Some(rejoin.token);
        self.token = self.gw.resumes.issue(&self.rejoin_tx);
        tracing::info!(conn = self.conn, user = %self.account.user, peer = %rejoin.peer, "browser back: session resumed");
        let mut hello = vec![
            Notification::RegistrationStateChanged {
                state: RegistrationState::Resumed,
                resume_window: self
                    .token
                    .as_ref()
                    .and(self.gw.settings.resume_window)
                    .map(|w| w.as_secs()),
                resume_token: self.token.clone(),
            },
            Notification::SipUserNameReceived {
                user: self.account.user.clone(),
                display_name: self.account.display_name.clone(),
                dial_pattern: Some(self.gw.settings.dial_pattern.as_str().to_owned()),
            },
        ];
        if let Some(s) = &self.status {
            hello.push(Notification::PhoneLineStateChanged {
                state: s.state.into(),
                code: s.code,
                reason: s.reason.clone(),
            });
        }
        hello.extend(self.missed.drain(..));
        for call in self.gw.sip.calls(self.line).await.unwrap_or_default() {
            hello.push(Notification::CallStateChanged {
                call_id: call_id(call.call),
                state: call.state.into(),
                code: None,
                reason: None,
            });
            if call.on_hold {
                hello.push(Notification::CallHoldChanged {
                    call_id: call_id(call.call),
                    on_hold: true,
                });
            }
        }
        let mut hello = hello.into_iter();
        while let Some(n) = hello.next() {
            if !matches!(self.notify(n.clone()).await, Flow::Go) {
                // gone again (the next read says so): keep the call news for next time
                std::iter::once(n)
                    .chain(hello)
                    .filter(is_call_news)
                    .for_each(|n| self.remember(n));
                return;
            }
        }
    }

    /// A call notification the browser could not be told now (the latest few are kept).
    fn remember(&mut self, n: Notification) {
        if self.missed.len() == MAX_MISSED {
            self.missed.pop_front();
        }
        self.missed.push_back(n);
    }

    async fn send(&mut self, frame: String) -> Flow {
        match self.sink.send(text(frame)).await {
            Ok(()) => Flow::Go,
            Err(_) => Flow::Lost("send failed".to_owned()),
        }
    }

    async fn notify(&mut self, n: Notification) -> Flow {
        self.send(n.to_json()).await
    }

    /// A frame from the browser (or the end of its connection).
    async fn on_frame(&mut self, frame: Option<Result<Message, axum::Error>>) -> Flow {
        let msg = match frame {
            Some(Ok(m)) => {
                // a pong answers a ping sent after our hello: the hello with the new token
                // reached the browser, so the one it presented is used up now
                if matches!(m, Message::Pong(_))
                    && let Some(t) = self.presented.take()
                {
                    self.gw.resumes.revoke(&t);
                }
                m
            }
            Some(Err(e)) if is_too_big(&e) => {
                counters::inc(Counter::FrameTooBig);
                peer_warn!(
                    Kind::Browser,
                    conn = self.conn,
                    "frame over the API's limit: closing"
                );
                self.close = Some((CLOSE_MESSAGE_TOO_BIG, "frame too big: at most 64 KiB"));
                return Flow::Stop("sent a frame over the limit".to_owned());
            }
            Some(Err(e)) => return Flow::Lost(format!("connection error: {e}")),
            None => return Flow::Lost("connection lost".to_owned()),
        };
        let reply = match msg {
            Message::Text(t) => match self.guard.on_request(std::time::Instant::now()) {
                Verdict::Serve => self.serve_request(t.as_str()).await,
                Verdict::Refuse(error) => Some(error_json(&request_id(t.as_str()), &error)),
                Verdict::Close(code, reason) => {
                    peer_warn!(Kind::Browser, conn = self.conn, user = %self.account.user, "{reason}: closing");
                    self.close = Some((code, reason));
                    return Flow::Stop(reason.to_owned());
                }
            },
            Message::Binary(_) => Some(error_json(
                &Value::Null,
                &RpcError::new(
                    codes::INVALID_REQUEST,
                    "Invalid Request: binary frames are not supported",
                ),
            )),
            // sipline.js closes with 4001 when its pings go unanswered: the link is bad,
            // the browser wants its session back
            Message::Close(Some(f)) if f.code == CLOSE_NO_ANSWER_TO_PING => {
                return Flow::Lost("the browser's pings went unanswered".to_owned());
            }
            Message::Close(_) => return Flow::Stop("closed by browser".to_owned()),
            Message::Ping(_) | Message::Pong(_) => None,
        };
        match reply {
            Some(r) => self.send(r).await,
            None => Flow::Go,
        }
    }

    /// One JSON-RPC request: its reply now, or later (queued) when it waits for the far end.
    async fn serve_request(&mut self, frame: &str) -> Option<String> {
        let ctx = LineContext {
            gw: &self.gw,
            line: self.line,
            account: &self.account,
            status: self.status.as_ref(),
            media: self.media.as_ref(),
            waiting_replies: self.later.len(),
        };
        match handle_text(frame, &ctx, &mut self.guard).await {
            Reply::Now(reply) => reply,
            Reply::Later(reply) => {
                self.later.push(reply);
                None
            }
        }
    }

    /// What the SIP task says of the line and its calls.
    async fn on_line_event(&mut self, ev: Option<LineEvent>) -> Flow {
        match ev {
            Some(LineEvent::Call(notice)) => {
                if let CallNotice::State { call, status } = &notice
                    && status.state == sipline_sip::CallState::InCall
                {
                    self.answered_at = Some((*call, Instant::now()));
                }
                let over = matches!(&notice, CallNotice::State { status, .. } if status.state.is_final());
                let n = call_notification(notice);
                let sent = self.notify(n.clone()).await;
                if !matches!(sent, Flow::Go) {
                    // the connection is gone: told again if the browser comes back
                    self.remember(n);
                    return sent;
                }
                if over && self.leaving.is_some() {
                    // it was to go once its calls ended
                    return self.leave_if_idle().await.map_or(Flow::Go, Flow::Stop);
                }
                Flow::Go
            }
            Some(LineEvent::Status(s)) => {
                let n = Notification::PhoneLineStateChanged {
                    state: s.state.into(),
                    code: s.code,
                    reason: s.reason.clone(),
                };
                self.status = Some(s);
                self.notify(n).await
            }
            Some(LineEvent::Removed) | None => {
                self.removed = true;
                Flow::Stop("line removed".to_owned())
            }
        }
    }

    /// What the media task says: DTMF, statistics, timeouts, connection changes.
    async fn on_media_event(&mut self, ev: MediaEvent) -> Flow {
        let (conn, line) = (self.conn, self.line);
        let n = match ev {
            MediaEvent::Dtmf {
                call,
                digit,
                from: Side::Sip,
                ..
            } => Some(Notification::DtmfReceived {
                call_id: call_id(call),
                digit: digit.to_string(),
                method: DtmfMethod::Rfc4733,
            }),
            MediaEvent::Dtmf {
                call,
                digit,
                needs_info,
                ..
            } => {
                if needs_info {
                    self.gw.sip.info_dtmf(line, call, digit);
                }
                None
            }
            MediaEvent::Stats(stats) => {
                let CallStats {
                    call,
                    browser,
                    browser_codec,
                    sip,
                    sip_codec,
                } = *stats;
                Some(Notification::CallStats {
                    call_id: call_id(call),
                    browser: leg_stats(browser, browser_codec),
                    sip: leg_stats(sip, sip_codec),
                })
            }
            MediaEvent::FirstAudio { call, far_end_at } => {
                if let Some((c, at)) = self.answered_at
                    && c == call
                {
                    // how long the far end took to send, and what sipline added
                    let far_end = far_end_at.saturating_duration_since(at.into_std());
                    tracing::info!(
                        conn,
                        %call,
                        ms = at.elapsed().as_secs_f64() * 1000.0,
                        far_end_ms = far_end.as_secs_f64() * 1000.0,
                        "first audio to the browser after the answer"
                    );
                }
                None
            }
            MediaEvent::MediaTimeout { call, reason } => {
                tracing::info!(conn, user = %self.account.user, %call, %reason, "ending the call");
                self.gw.sip.end_call(line, call, reason);
                None
            }
            MediaEvent::Connected => {
                tracing::info!(conn, "browser media connected");
                None
            }
            MediaEvent::Disconnected => {
                tracing::info!(conn, "browser media disconnected");
                None
            }
        };
        match n {
            Some(n) => self.notify(n).await,
            None => Flow::Go,
        }
    }

    /// Sends the close frame (if any) and lets the browser finish the handshake.
    async fn close(mut self) {
        if let Some((code, reason)) = self.close {
            let frame = CloseFrame {
                code,
                reason: reason.into(),
            };
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(1),
                self.sink.send(Message::Close(Some(frame))),
            )
            .await;
            // Read (and drop) what the browser still sends until its own close: closing a
            // socket with unread data resets it, and the browser would lose our last frames.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
                while let Some(Ok(m)) = self.stream.next().await {
                    if matches!(m, Message::Close(_)) {
                        break;
                    }
                }
            })
            .await;
        }
        // completes the closing handshake when the browser started one
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), self.sink.close()).await;
    }
}

/// Tells a browser it was not admitted (`connectionLimit`) and closes with 1013.
async fn refuse_admission(sink: &mut Sink, reason: &str) {
    let n = Notification::RegistrationStateChanged {
        state: RegistrationState::ConnectionLimit,
        resume_token: None,
        resume_window: None,
    };
    let _ = sink.send(text(n.to_json())).await;
    close_with(sink, CLOSE_TRY_AGAIN_LATER, reason).await;
}

async fn close_with(sink: &mut Sink, code: u16, reason: &str) {
    let _ = sink
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await;
}

/// Whether a WebSocket error is a frame or message over the configured maximum.
fn is_too_big(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(tungstenite::Error::Capacity(_)) = err.downcast_ref::<tungstenite::Error>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// The id of a request frame, to answer it with an error without carrying it out
/// (null when the frame has none or is not JSON-RPC).
fn request_id(frame: &str) -> Value {
    match Incoming::parse(frame) {
        Ok(incoming) => incoming.id.unwrap_or(Value::Null),
        Err(rejection) => rejection.id,
    }
}

/// What a request may need to know about its session.
struct LineContext<'a> {
    gw: &'a Gateway,
    line: sipline_sip::LineId,
    account: &'a sipline_sip::Account,
    status: Option<&'a LineStatus>,
    media: Option<&'a MediaHandle>,
    /// Replies already waiting for the far end.
    waiting_replies: usize,
}

fn leg_stats(c: sipline_media::bridge::LegCounters, codec: String) -> LegStats {
    LegStats {
        codec: Some(codec),
        packets_sent: c.packets_sent,
        packets_received: c.packets_received,
        packets_lost: c.packets_lost,
        loss: (c.loss * 1000.0).round() / 1000.0,
        jitter_ms: (c.jitter_ms * 10.0).round() / 10.0,
        rtt_ms: c.rtt_ms.map(|r| (r * 10.0).round() / 10.0),
    }
}

/// The browser-facing id of a call.
pub fn call_id(call: sipline_sip::CallRef) -> String {
    call.0.to_string()
}

/// The call a request is for: the one its `callId` names, else the line's only one.
/// A `callId` that cannot be a call of ours is refused here; whether the line has the
/// call is the SIP task's to say, where it acts.
fn on_call(line: sipline_sip::LineId, wanted: Option<&str>) -> Result<OnCall, RpcError> {
    let Some(wanted) = wanted else {
        return Ok(OnCall::only(line));
    };
    match wanted.parse().map(sipline_sip::CallRef) {
        Ok(call) if call_id(call) == wanted => Ok(OnCall {
            line,
            call: Some(call),
        }),
        _ => Err(RpcError::new(
            codes::INVALID_PARAMS,
            format!("Invalid params: there is no call {:?}", clip(wanted)),
        )),
    }
}

/// `number` trimmed, if the dial policy lets the browser reach it (for `method`).
fn dialable(ctx: &LineContext<'_>, method: &str, number: &str) -> Result<String, RpcError> {
    let number = number.trim();
    if ctx.gw.settings.dial_pattern.is_match(number) {
        return Ok(number.to_owned());
    }
    counters::inc(Counter::DialPolicy);
    peer_warn!(Kind::Browser, user = %ctx.account.user, number = %clip(number), "number refused by the dial policy");
    Err(RpcError::new(
        codes::INVALID_PARAMS,
        format!("Invalid params for {method}: {number:?} is not a number this gateway may dial"),
    ))
}

/// The headers a browser asked for on its call, checked: at most
/// [`MAX_BROWSER_HEADERS`], each named in `headers.from_browser` (spelt as configured
/// there), each value one short line.
fn browser_headers(
    allowed: &[String],
    asked: std::collections::BTreeMap<String, String>,
) -> Result<Vec<(String, String)>, String> {
    if asked.len() > MAX_BROWSER_HEADERS {
        return Err(format!("at most {MAX_BROWSER_HEADERS} headers"));
    }
    asked
        .into_iter()
        .map(|(name, value)| {
            let Some(name) = allowed.iter().find(|a| a.eq_ignore_ascii_case(&name)) else {
                return Err(format!("header {:?} is not in headers.from_browser", clip(&name)));
            };
            sipline_sip::extra_headers::check_value(&value).map_err(|e| format!("{name}: {e}"))?;
            Ok((name.clone(), value))
        })
        .collect()
}

/// Most headers a browser may put on one call.
const MAX_BROWSER_HEADERS: usize = 8;

fn call_notification(notice: CallNotice) -> Notification {
    match notice {
        CallNotice::Incoming {
            call,
            from,
            display_name,
            headers,
            replaces,
        } => Notification::IncomingCall {
            call_id: call_id(call),
            from,
            display_name,
            headers: headers.into_iter().collect(),
            replaces: replaces.map(call_id),
        },
        CallNotice::State { call, status } => Notification::CallStateChanged {
            call_id: call_id(call),
            state: status.state.into(),
            code: status.code,
            reason: status.reason,
        },
        CallNotice::Error { call, code, reason } => Notification::CallErrorOccurred {
            call_id: call.map(call_id),
            code,
            reason,
        },
        CallNotice::Referred {
            call,
            new_call,
            number,
        } => Notification::CallReferred {
            call_id: call_id(call),
            new_call_id: call_id(new_call),
            number,
        },
        CallNotice::Hold { call, on } => Notification::CallHoldChanged {
            call_id: call_id(call),
            on_hold: on,
        },
        CallNotice::Transfer { call, state, code } => Notification::TransferStateChanged {
            call_id: call_id(call),
            state: state.into(),
            code,
        },
        CallNotice::Dtmf { call, digit, method } => Notification::DtmfReceived {
            call_id: call_id(call),
            digit: digit.to_string(),
            method,
        },
    }
}

fn invalid_state(message: impl Into<String>) -> RpcError {
    RpcError::new(codes::INVALID_STATE, message)
}

/// Carries out one request: a result, or an error for the browser.
async fn execute(
    request: ClientRequest,
    on: OnCall,
    ctx: &LineContext<'_>,
    guard: &mut SessionGuard,
) -> Result<Value, RpcError> {
    let gone = |e: crate::sip_driver::SipGone| invalid_state(e.to_string());
    match request.clone() {
        ClientRequest::Ping => Ok(json!({})),
        ClientRequest::GetState => {
            let calls: Vec<CallSnapshot> = ctx
                .gw
                .sip
                .calls(ctx.line)
                .await
                .map_err(gone)?
                .into_iter()
                .map(|c| CallSnapshot {
                    call_id: call_id(c.call),
                    state: c.state.into(),
                    peer: c.peer,
                    incoming: c.incoming,
                    on_hold: c.on_hold,
                })
                .collect();
            let current = calls.iter().rev().find(|c| !c.on_hold).or(calls.last()).cloned();
            let snapshot = StateSnapshot {
                user: ctx.account.user.clone(),
                display_name: ctx.account.display_name.clone(),
                line: PhoneLineState::from(ctx.status.map(|s| s.state).unwrap_or(LineState::Registering)),
                code: ctx.status.and_then(|s| s.code),
                reason: ctx.status.and_then(|s| s.reason.clone()),
                call: current,
                calls,
            };
            Ok(serde_json::to_value(snapshot).unwrap_or(Value::Null))
        }
        ClientRequest::Call { number, headers } => {
            let number = dialable(ctx, "call", &number)?;
            if ctx.status.map(|s| s.state) != Some(LineState::Registered) {
                return Err(invalid_state("the line is not registered"));
            }
            let headers = browser_headers(&ctx.gw.settings.headers_from_browser, headers).map_err(|why| {
                counters::inc(Counter::CallHeaders);
                peer_warn!(Kind::Browser, user = %ctx.account.user, "call headers refused: {why}");
                RpcError::new(codes::INVALID_PARAMS, format!("Invalid params for call: {why}"))
            })?;
            match ctx
                .gw
                .sip
                .place_call(ctx.line, number, headers)
                .await
                .map_err(gone)?
            {
                Ok(call) => Ok(json!({ "callId": call_id(call) })),
                Err(e) => Err(RpcError::for_call("call", &e)),
            }
        }
        ClientRequest::Accept => match ctx.gw.sip.accept(on).await.map_err(gone)? {
            Ok(()) => Ok(json!({})),
            Err(e) => Err(RpcError::for_call("accept", &e)),
        },
        ClientRequest::Offer { sdp } => {
            let media = ctx.media.ok_or_else(|| invalid_state("no media port is free"))?;
            match media.offer(sdp).await {
                Ok(answer) => Ok(json!({ "sdp": answer })),
                Err(e) => Err(RpcError::new(
                    codes::INVALID_PARAMS,
                    format!("Invalid params for offer: {e}"),
                )),
            }
        }
        ClientRequest::Candidate { candidate } => {
            guard.on_candidate()?;
            if let Some(m) = ctx.media {
                m.send(MediaCommand::Candidate(candidate));
            }
            Ok(json!({}))
        }
        ClientRequest::Dtmf { digits } => match ctx.gw.sip.dtmf(on, digits).await.map_err(gone)? {
            Ok(()) => Ok(json!({})),
            Err(e) => Err(RpcError::for_call("send DTMF", &e)),
        },
        // answered when the far end has: `handle_text` sends them to `hold_reply`
        ClientRequest::Hold | ClientRequest::Unhold => Err(invalid_state("hold is answered by the far end")),
        ClientRequest::Transfer { to } => {
            let to = match to {
                TransferTo::Number(number) => TransferTarget::Number(dialable(ctx, "transfer", &number)?),
                TransferTo::Call(other) => match on_call(ctx.line, Some(&other))?.call {
                    Some(other) => TransferTarget::Call(other),
                    None => return Err(invalid_state("no call to transfer to")),
                },
            };
            match ctx.gw.sip.transfer(on, to).await.map_err(gone)? {
                Ok(()) => Ok(json!({})),
                Err(e) => Err(RpcError::for_call("transfer", &e)),
            }
        }
        ClientRequest::HangUp { code } => {
            let code = code.unwrap_or(ctx.gw.settings.reject_code);
            match ctx.gw.sip.hang_up(on, code).await.map_err(gone)? {
                Ok(()) => Ok(json!({})),
                Err(e) => Err(RpcError::for_call("hang up", &e)),
            }
        }
    }
}

/// The reply to a request: now, or once something outside the gateway has answered.
enum Reply {
    Now(Option<String>),
    Later(LaterReply),
}

/// A reply that waits for the far end (`hold`, `unhold`): the session keeps serving
/// while it does. The SIP task refuses a second hold at once while one waits, and a
/// session holds at most [`MAX_WAITING_REPLIES`] (`refused{waiting_replies}`).
type LaterReply = std::pin::Pin<Box<dyn std::future::Future<Output = Option<String>> + Send>>;

/// `hold`/`unhold`: the re-INVITE leaves now; the browser is answered when the far end
/// accepted it (`{}`) or refused it (an error with its status: the call keeps its media).
fn hold_reply(id: Option<Value>, call: OnCall, on: bool, ctx: &LineContext<'_>) -> LaterReply {
    let answered = ctx.gw.sip.hold(call, on);
    Box::pin(async move {
        let outcome = match answered.await {
            Ok(Ok(())) => Ok(json!({})),
            Ok(Err(e)) => Err(RpcError::for_call(if on { "hold" } else { "unhold" }, &e)),
            Err(gone) => Err(invalid_state(gone.to_string())),
        };
        let id = id?;
        Some(match outcome {
            Ok(result) => result_json(&id, result),
            Err(error) => error_json(&id, &error),
        })
    })
}

/// Answers one text frame (no reply for JSON-RPC notifications).
async fn handle_text(text: &str, ctx: &LineContext<'_>, guard: &mut SessionGuard) -> Reply {
    let incoming = match Incoming::parse(text) {
        Ok(i) => i,
        Err(rejection) => return Reply::Now(Some(error_json(&rejection.id, &rejection.error))),
    };
    let on = match on_call(ctx.line, incoming.call_id.as_deref()) {
        Ok(on) => on,
        Err(error) => return Reply::Now(incoming.id.map(|id| error_json(&id, &error))),
    };
    if let ClientRequest::Hold | ClientRequest::Unhold = incoming.request {
        if ctx.waiting_replies >= MAX_WAITING_REPLIES {
            counters::inc(Counter::WaitingReplies);
            let error = RpcError::new(
                codes::LIMIT,
                "Limit: earlier hold requests still wait for the far end",
            );
            return Reply::Now(incoming.id.map(|id| error_json(&id, &error)));
        }
        let hold = incoming.request == ClientRequest::Hold;
        return Reply::Later(hold_reply(incoming.id, on, hold, ctx));
    }
    let outcome = execute(incoming.request, on, ctx, guard).await;
    let Some(id) = incoming.id else {
        return Reply::Now(None);
    };
    Reply::Now(Some(match outcome {
        Ok(result) => result_json(&id, result),
        Err(error) => error_json(&id, &error),
    }))
}
