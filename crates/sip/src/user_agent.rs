//! The user agent: one SIP endpoint hosting many phone lines (the accounts leased to
//! browsers), the transaction layer they share, and the registrar keepalive.
//!
//! Like str0m's `Rtc`, it is driven from outside: [`UserAgent::handle_receive`] and
//! [`UserAgent::handle_timeout`] put bytes and time in; [`UserAgent::poll_transmit`],
//! [`UserAgent::poll_event`] and [`UserAgent::poll_timeout`] say what to send, what
//! happened and when to call again.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use crate::call::{Call, CallError, CallEvent, CallRef};
use crate::deadlines::Deadlines;
use crate::keepalive::{Keepalive, Reachability, Transition};
use crate::message::{Message, Method, Request, Response, Uri};
use crate::rate::TokenBucket;
use crate::registration::{LineStatus, Registration};
use crate::session_timer;
use crate::transaction::{Incoming, MAGIC_COOKIE, ServerKey, Timers, Transactions, TxEvent};
use crate::transport::{Target, Transmit, Transport};
use crate::trust::TrustedSource;

/// Methods we implement, for Allow headers.
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, PRACK, NOTIFY, REFER";

/// Static settings of the user agent.
#[derive(Debug, Clone)]
pub struct UaConfig {
    pub transport: Transport,
    /// Address and port written into Via and Contact.
    pub advertise_host: String,
    pub advertise_port: u16,
    /// The registrar's URI (OPTIONS keepalives go to it) and where to send to reach it.
    pub registrar_uri: Uri,
    pub registrar: Target,
    /// Optional outbound proxy: requests go to it with a `Route: <uri;lr>`.
    pub outbound_proxy: Option<(Uri, Target)>,
    /// Requested registration expiry, seconds.
    pub expires: u32,
    /// OPTIONS keepalive period to the registrar; `None` disables it.
    pub keepalive_interval: Option<Duration>,
    /// How long a keepalive may go unanswered before the registrar counts as down.
    pub keepalive_timeout: Duration,
    /// Registration retry back-off bounds.
    pub retry_min: Duration,
    pub retry_max: Duration,
    pub user_agent: String,
    /// How long a call may ring (either way) before it counts as not answered.
    pub no_answer_timeout: Duration,
    /// Session timers (RFC 4028) asked for and accepted; `None`: we neither ask for
    /// nor agree to them (a far end may still refresh).
    pub session_timer: Option<crate::session_timer::SessionTimerConfig>,
    pub timers: Timers,
    pub protection: Protection,
    /// Operator headers added to INVITE and REGISTER, and those picked out of incoming INVITEs.
    pub headers: crate::ExtraHeaders,
    /// Calls a line may carry at once (call waiting above 1); an INVITE beyond gets 486.
    pub calls_per_line: usize,
}

/// What the user agent does against peers it has no reason to serve.
#[derive(Debug, Clone)]
pub struct Protection {
    /// Sources besides the registrar and the outbound proxy whose out-of-dialog
    /// requests are served ([`crate::trust`]); everyone else gets a stateless 403.
    pub trusted_sources: Vec<TrustedSource>,
    /// Most server transactions alive at once; requests beyond get a stateless 503.
    pub max_server_transactions: usize,
    /// Stateless answers (403, 481, 400, 503, OPTIONS) a second; beyond that, such
    /// requests are dropped unanswered, so a flood is never answered in kind.
    pub stateless_rate: u32,
}

impl Default for Protection {
    fn default() -> Protection {
        Protection {
            trusted_sources: Vec::new(),
            max_server_transactions: 4096,
            stateless_rate: 200,
        }
    }
}

impl UaConfig {
    /// Where every out-of-dialog request goes first.
    pub fn next_hop(&self) -> Target {
        self.outbound_proxy
            .as_ref()
            .map(|(_, t)| *t)
            .unwrap_or(self.registrar)
    }

    /// A request with Via (fresh branch, rport), Max-Forwards and, with an
    /// outbound proxy, its Route.
    pub(crate) fn new_request(&self, method: Method, uri: Uri, rng: &mut fastrand::Rng) -> Request {
        let mut req = Request::new(method, uri);
        req.headers.push(
            "Via",
            format!(
                "SIP/2.0/{} {}:{};branch={MAGIC_COOKIE}{};rport",
                self.transport.via_name(),
                self.advertise_host,
                self.advertise_port,
                random_token(rng, 20)
            ),
        );
        req.headers.push("Max-Forwards", "70");
        if let Some((proxy, _)) = &self.outbound_proxy {
            let mut route = proxy.clone();
            route.params.set("lr", None);
            req.headers.push("Route", format!("<{route}>"));
        }
        req
    }
}

/// A SIP account. Its password never appears in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Account {
    pub user: String,
    pub auth_user: String,
    pub password: String,
    pub display_name: Option<String>,
    pub domain: String,
}

impl fmt::Debug for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Account")
            .field("user", &self.user)
            .field("auth_user", &self.auth_user)
            .field("password", &"<redacted>")
            .field("display_name", &self.display_name)
            .field("domain", &self.domain)
            .finish()
    }
}

/// Identifies a line hosted by the user agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LineId(pub u64);

impl fmt::Display for LineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line-{}", self.0)
    }
}

/// Who started a client transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Owner {
    Line(LineId),
    Keepalive(u64),
    Call(CallRef),
}

/// A hosted account: its registration and its calls (at most `calls_per_line`).
#[derive(Debug)]
struct Line {
    registration: Registration,
    calls: Vec<CallRef>,
}

impl Line {
    fn is_full(&self, config: &UaConfig) -> bool {
        self.calls.len() >= config.calls_per_line.max(1)
    }
}

/// What happened, for the driver to pass on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A line's registration state changed.
    Line { line: LineId, status: LineStatus },
    /// A stopped line has unregistered and is gone; its account may be reused.
    LineRemoved { line: LineId },
    /// The registrar stopped or resumed answering keepalives.
    Registrar { reachable: bool },
    /// Something happened to a call on a line.
    Call {
        line: LineId,
        call: CallRef,
        event: CallEvent,
    },
}

/// Why received bytes were dropped or refused (for a log line; the UA itself stays
/// usable). The text names the peer and is short: at most [`Dropped::MAX_LEN`] bytes of
/// it come from the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub reason: DropReason,
    pub detail: String,
}

impl Dropped {
    /// Longest piece of peer-supplied text in a detail.
    pub const MAX_LEN: usize = 160;

    fn new(reason: DropReason, detail: String) -> Dropped {
        Dropped { reason, detail }
    }
}

/// The kinds of [`Dropped`], one counter each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Not SIP at all.
    Unparsable,
    /// SIP, but a request missing or garbling a mandatory header (answered 400).
    InvalidRequest,
    /// A response for no transaction of ours.
    StrayResponse,
    /// An out-of-dialog request from a source we do not serve (answered 403).
    Untrusted,
}

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

/// Counts of live state, for metrics and leak tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UaStats {
    pub lines: usize,
    pub calls: usize,
    pub dialogs: usize,
    pub client_transactions: usize,
    pub server_transactions: usize,
    pub counters: UaCounters,
}

/// What the user agent refused or dropped since it started (Prometheus counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UaCounters {
    pub unparsable: u64,
    pub invalid_requests: u64,
    pub stray_responses: u64,
    /// Out-of-dialog requests from untrusted sources (403).
    pub untrusted_refused: u64,
    /// Answers sent without a transaction.
    pub stateless_answers: u64,
    /// Requests left unanswered because stateless answers hit `stateless_rate`.
    pub stateless_rate_limited: u64,
    /// Requests refused because `max_server_transactions` were alive.
    pub transaction_limit: u64,
    /// INFO (key presses) and PRACK not sent because a call had too many in flight.
    pub requests_in_flight: u64,
}

/// The SIP endpoint.
#[derive(Debug)]
pub struct UserAgent {
    config: UaConfig,
    rng: fastrand::Rng,
    transactions: Transactions<Owner>,
    lines: BTreeMap<LineId, Line>,
    calls: BTreeMap<CallRef, Call>,
    keepalive: Option<Keepalive>,
    events: VecDeque<Event>,
    /// Responses sent outside any transaction (400s to malformed requests, 403s to
    /// untrusted sources, 481s to requests for no dialog).
    stateless: VecDeque<Transmit>,
    stateless_budget: TokenBucket,
    counters: UaCounters,
    next_line: u64,
    next_call: u64,
    /// When each line and call next needs the clock.
    timers: Deadlines<Timed>,
    /// Calls by our tag (From of our INVITEs, To of our answers): in-dialog requests
    /// find their call without a scan.
    by_local_tag: HashMap<String, CallRef>,
    /// Incoming calls by the branch of their INVITE: CANCELs and ACK timeouts.
    by_invite_branch: HashMap<String, CallRef>,
    /// Lines by the user part of their Contact (usually one; two while one of the
    /// same user leaves): new INVITEs.
    by_user: HashMap<String, Vec<LineId>>,
    /// Calls an INVITE with Replaces has claimed: a second claim gets 481 (each call is
    /// replaced once; entries go with their call).
    claimed: std::collections::HashSet<CallRef>,
}

/// What has a deadline in the user agent (besides transactions and the keepalive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Timed {
    Line(LineId),
    Call(CallRef),
}

impl UserAgent {
    /// `seed` feeds the generator of branches, tags and Call-IDs (fixed in tests,
    /// random in production).
    pub fn new(now: Instant, config: UaConfig, seed: u64) -> UserAgent {
        let keepalive = config
            .keepalive_interval
            .map(|i| Keepalive::new(now, i, config.keepalive_timeout));
        let stateless_rate = f64::from(config.protection.stateless_rate);
        UserAgent {
            transactions: Transactions::new(config.timers),
            config,
            rng: fastrand::Rng::with_seed(seed),
            lines: BTreeMap::new(),
            calls: BTreeMap::new(),
            keepalive,
            events: VecDeque::new(),
            stateless: VecDeque::new(),
            stateless_budget: TokenBucket::new(stateless_rate, stateless_rate),
            counters: UaCounters::default(),
            next_line: 1,
            next_call: 1,
            timers: Deadlines::default(),
            by_local_tag: HashMap::new(),
            by_invite_branch: HashMap::new(),
            by_user: HashMap::new(),
            claimed: std::collections::HashSet::new(),
        }
    }

    pub fn config(&self) -> &UaConfig {
        &self.config
    }

    /// Adds a line for `account` and starts registering it.
    pub fn add_line(&mut self, now: Instant, account: Account) -> LineId {
        self.add_line_with(now, account, false)
    }

    /// Adds a line for `account` and starts registering it; with `replace_others`,
    /// first removes every binding the registrar holds for the account (those of a
    /// gateway node that died holding it).
    pub fn add_line_with(&mut self, now: Instant, account: Account, replace_others: bool) -> LineId {
        let id = LineId(self.next_line);
        self.next_line += 1;
        let mut registration = Registration::new(account, &self.config, &mut self.rng);
        if replace_others {
            registration.replace_other_bindings();
        }
        registration.start(now, &self.config, &mut self.rng);
        if let Some(user) = &registration.contact().user {
            self.by_user.entry(user.clone()).or_default().push(id);
        }
        self.lines.insert(
            id,
            Line {
                registration,
                calls: Vec::new(),
            },
        );
        self.flush_line(now, id);
        id
    }

    /// Unregisters a line, ending its calls first (BYE, CANCEL or 486);
    /// [`Event::LineRemoved`] follows when all are done.
    pub fn remove_line(&mut self, now: Instant, id: LineId) {
        for call in self.line_calls(id).to_vec() {
            let _ = self.hang_up(now, call, 486);
        }
        let reachable = self.registrar_reachable();
        if let Some(line) = self.lines.get_mut(&id) {
            line.registration
                .stop(now, &self.config, &mut self.rng, reachable);
            self.flush_line(now, id);
        }
    }

    /// The current visible status of a line.
    pub fn line_status(&self, id: LineId) -> Option<&LineStatus> {
        self.lines.get(&id).and_then(|l| l.registration.status())
    }

    /// The line's calls, oldest first.
    pub fn line_calls(&self, id: LineId) -> &[CallRef] {
        self.lines
            .get(&id)
            .map(|l| l.calls.as_slice())
            .unwrap_or_default()
    }

    /// The line's call when it has exactly one.
    pub fn line_call(&self, id: LineId) -> Option<CallRef> {
        match self.line_calls(id) {
            [call] => Some(*call),
            _ => None,
        }
    }

    /// Calls `number` from a line, with our SDP offer.
    pub fn place_call(
        &mut self,
        now: Instant,
        line: LineId,
        number: &str,
        offer: Vec<u8>,
    ) -> Result<CallRef, CallError> {
        self.place_call_with_headers(now, line, number, offer, &[])
    }

    /// The same, with extra headers on the INVITE (after the configured ones; checked by
    /// the caller with [`crate::extra_headers::check_name`] and `check_value`).
    pub fn place_call_with_headers(
        &mut self,
        now: Instant,
        line: LineId,
        number: &str,
        offer: Vec<u8>,
        headers: &[(String, String)],
    ) -> Result<CallRef, CallError> {
        let l = self.lines.get(&line).ok_or(CallError::NoSuchLine)?;
        if l.is_full(&self.config) {
            return Err(CallError::LineBusy);
        }
        if l.registration.is_stopping() {
            return Err(CallError::NoSuchLine);
        }
        let id = CallRef(self.next_call);
        let call = Call::outgoing(
            now,
            id,
            line,
            l.registration.account(),
            l.registration.contact(),
            number,
            offer,
            headers,
            &self.config,
            &mut self.rng,
        )?;
        self.next_call += 1;
        self.insert_call(id, call);
        if let Some(l) = self.lines.get_mut(&line) {
            l.calls.push(id);
        }
        self.flush_call(now, id);
        Ok(id)
    }

    /// Answers a ringing incoming call with our SDP.
    pub fn accept_call(&mut self, now: Instant, call: CallRef, sdp: Vec<u8>) -> Result<(), CallError> {
        let c = self.calls.get_mut(&call).ok_or(CallError::NoSuchCall)?;
        c.accept(now, sdp, &self.config)?;
        self.flush_call(now, call);
        Ok(())
    }

    /// Ends a call: CANCEL (ours, unanswered), `reject_code` (theirs, unanswered) or BYE.
    pub fn hang_up(&mut self, now: Instant, call: CallRef, reject_code: u16) -> Result<(), CallError> {
        self.hang_up_because(now, call, reject_code, None)
    }

    /// As [`UserAgent::hang_up`], telling the browser `why` (a media timeout…).
    pub fn hang_up_because(
        &mut self,
        now: Instant,
        call: CallRef,
        reject_code: u16,
        why: Option<String>,
    ) -> Result<(), CallError> {
        let c = self.calls.get_mut(&call).ok_or(CallError::NoSuchCall)?;
        c.hang_up_because(now, reject_code, why, &self.config, &mut self.rng)?;
        self.flush_call(now, call);
        Ok(())
    }

    /// Sends a new offer for an established call (hold and resume).
    pub fn reinvite(&mut self, now: Instant, call: CallRef, sdp: Vec<u8>) -> Result<(), CallError> {
        let c = self.calls.get_mut(&call).ok_or(CallError::NoSuchCall)?;
        c.reinvite(now, sdp, &self.config, &mut self.rng)?;
        self.flush_call(now, call);
        Ok(())
    }

    /// Blind transfer: asks the far end of an established call to call `number` instead
    /// (REFER); [`CallEvent::Transfer`] reports how it goes.
    pub fn refer(&mut self, now: Instant, call: CallRef, number: &str) -> Result<(), CallError> {
        let c = self.calls.get_mut(&call).ok_or(CallError::NoSuchCall)?;
        let sent = c.refer(now, number, None, &self.config, &mut self.rng);
        self.flush_call(now, call);
        sent
    }

    /// Attended transfer: asks the far end of `call` to call the far end of `other` (an
    /// established call of ours) in our place, replacing `other` (REFER with Replaces,
    /// RFC 5589 §7). [`CallEvent::Transfer`] on `call` reports how it goes; `other` ends
    /// when its far end takes the new call (its BYE).
    pub fn refer_to_call(&mut self, now: Instant, call: CallRef, other: CallRef) -> Result<(), CallError> {
        if call == other {
            return Err(CallError::WrongState("a call cannot be transferred to itself"));
        }
        let o = self.calls.get(&other).ok_or(CallError::NoSuchCall)?;
        let d = o
            .dialog()
            .filter(|_| o.is_confirmed())
            .ok_or(CallError::WrongState("the other call is not established"))?;
        let number = d.remote.uri.user.clone().ok_or(CallError::BadNumber)?;
        let number = crate::call::percent_decode(&number).ok_or(CallError::BadNumber)?;
        // the tags as the other far end sees them: its own (to-tag) and ours (from-tag)
        let replaces = format!(
            "{};to-tag={};from-tag={}",
            d.id.call_id, d.id.remote_tag, d.id.local_tag
        );
        let c = self.calls.get_mut(&call).ok_or(CallError::NoSuchCall)?;
        let sent = c.refer(now, &number, Some(&replaces), &self.config, &mut self.rng);
        self.flush_call(now, call);
        sent
    }

    /// Tells the far end of `call`, which asked us to call someone else
    /// ([`CallEvent::Referred`]), how that call goes: its status (a final one ends the
    /// reports).
    pub fn notify_referral(
        &mut self,
        now: Instant,
        call: CallRef,
        status: u16,
        reason: &str,
    ) -> Result<(), CallError> {
        let c = self.calls.get_mut(&call).ok_or(CallError::NoSuchCall)?;
        let sent = c.notify_referral(status, reason, &self.config, &mut self.rng);
        self.flush_call(now, call);
        sent
    }

    /// Sends an INFO in an established call.
    pub fn send_info(
        &mut self,
        now: Instant,
        call: CallRef,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<(), CallError> {
        let c = self.calls.get_mut(&call).ok_or(CallError::NoSuchCall)?;
        let sent = c.send_info(content_type, body, &self.config, &mut self.rng);
        // also when refused: the refusal is counted there
        self.flush_call(now, call);
        sent
    }

    /// Answers the far end's offer ([`CallEvent::Offer`]) with our SDP, or refuses it.
    pub fn answer_offer(
        &mut self,
        now: Instant,
        call: CallRef,
        answer: Result<Vec<u8>, u16>,
    ) -> Result<(), CallError> {
        let c = self.calls.get_mut(&call).ok_or(CallError::NoSuchCall)?;
        c.answer_offer(now, answer, &self.config)?;
        self.flush_call(now, call);
        Ok(())
    }

    fn registrar_reachable(&self) -> bool {
        self.keepalive
            .as_ref()
            .is_none_or(|k| k.state() != Reachability::Down)
    }

    /// Bytes received from `source`.
    pub fn handle_receive(&mut self, now: Instant, source: Target, data: &[u8]) -> Result<(), Dropped> {
        if data.iter().all(|b| b.is_ascii_whitespace()) {
            return Ok(()); // CRLF keep-alive
        }
        let msg = match Message::parse(data) {
            Ok(m) => m,
            Err(e) => {
                self.counters.unparsable += 1;
                // a trusted peer's broken request is told why (RFC 3261 §8.2, RFC 4475
                // §3.1.2); a stranger's is only dropped (no reflection)
                if self.is_trusted(source)
                    && let Some(resp) = crate::message::answer_to_unparsable(data)
                {
                    self.send_stateless(now, source, &resp);
                }
                return Err(Dropped::new(
                    DropReason::Unparsable,
                    format!("unparsable SIP from {source}: {}", clip(&e.to_string())),
                ));
            }
        };
        let result = match msg {
            Message::Response(resp) => {
                if self.transactions.receive_response(now, resp) {
                    Ok(())
                } else {
                    self.counters.stray_responses += 1;
                    Err(Dropped::new(
                        DropReason::StrayResponse,
                        format!("response from {source} matches no transaction"),
                    ))
                }
            }
            Message::Request(req) => self.handle_request(now, req, source),
        };
        self.process(now);
        result
    }

    /// Whether out-of-dialog requests from `source` are served: the registrar, the
    /// outbound proxy, and the configured trusted sources.
    pub fn is_trusted(&self, source: Target) -> bool {
        // with TLS toward the PBX, its address counts only over TLS (a spoofed datagram
        // from it is a stranger's)
        let from_pbx = |pbx: &Target| {
            pbx.addr == source.addr && (pbx.transport != Transport::Tls || source.transport == Transport::Tls)
        };
        from_pbx(&self.config.registrar)
            || self
                .config
                .outbound_proxy
                .as_ref()
                .is_some_and(|(_, t)| from_pbx(t))
            || self
                .config
                .protection
                .trusted_sources
                .iter()
                .any(|t| t.contains(source.addr))
    }

    fn handle_request(&mut self, now: Instant, req: Request, source: Target) -> Result<(), Dropped> {
        if let Err(e) = req.validate() {
            self.counters.invalid_requests += 1;
            // a malformed Via is answered too when a trusted peer sent it (to where it
            // came from, as every answer); a stranger's only when its Via is sound
            if req.method != Method::Ack && (req.headers.top_via().is_ok() || self.is_trusted(source)) {
                let mut resp = Response::for_request(&req, 400, "Bad Request");
                resp.headers.push(
                    "Warning",
                    format!("399 sipline \"{}\"", clip(&e.to_string()).replace('"', "'")),
                );
                self.send_stateless(now, source, &resp);
            }
            return Err(Dropped::new(
                DropReason::InvalidRequest,
                format!(
                    "bad {} from {source}: {}",
                    clip(req.method.as_str()),
                    clip(&e.to_string())
                ),
            ));
        }
        if req.method != Method::Ack && !self.transactions.is_known(&req) {
            // what needs no transaction of ours is answered without one (or not at all)
            if let Some(refusal) = self.answer_without_transaction(now, &req, source) {
                return refusal;
            }
            if self.transactions.server_count() >= self.config.protection.max_server_transactions {
                self.counters.transaction_limit += 1;
                let mut resp = self.response(&req, 503, "Service Unavailable");
                resp.headers.push("Retry-After", "5");
                self.send_stateless(now, source, &resp);
                return Ok(());
            }
        }
        let incoming = self.transactions.receive_request(now, &req, source);
        if req.method == Method::Ack {
            // an ACK for a 2xx has its own branch and belongs to its dialog
            if incoming == Incoming::Stateless
                && let Some(id) = self.call_in_dialog(&req)
            {
                if let Some(key) = self.calls.get(&id).and_then(Call::invite_server_key) {
                    self.transactions.ack_received(&key);
                }
                if let Some(c) = self.calls.get_mut(&id) {
                    c.on_request(now, None, &req, &self.config, &mut self.rng);
                }
                self.flush_call(now, id);
            }
            return Ok(());
        }
        let key = match incoming {
            Incoming::New(key) => key,
            Incoming::Absorbed | Incoming::Stateless => return Ok(()),
        };
        if req.method == Method::Invite {
            let trying = Response::for_request(&req, 100, "Trying");
            self.transactions.respond(now, &key, &trying);
        }
        if !req.uri.is_sip() {
            self.reply(now, &key, &req, 416, "Unsupported URI Scheme");
            return Ok(());
        }
        if req.method == Method::Cancel {
            // a CANCEL names the INVITE it cancels by branch
            match self.cancel_target(&key) {
                Some(id) => self.call_request(now, id, key, &req),
                None => self.reply(now, &key, &req, 481, "Call/Transaction Does Not Exist"),
            }
            return Ok(());
        }
        if let Some(resp) = self.unacceptable(&req) {
            self.transactions.respond(now, &key, &resp);
            return Ok(());
        }
        if is_in_dialog(&req) {
            match self.call_in_dialog(&req) {
                Some(id) => self.call_request(now, id, key, &req),
                None => self.reply(now, &key, &req, 481, "Call/Transaction Does Not Exist"),
            }
            return Ok(());
        }
        match req.method {
            Method::Options => {
                let resp = self.options_answer(&req);
                self.transactions.respond(now, &key, &resp);
            }
            Method::Invite => self.incoming_invite(now, key, req),
            Method::Bye | Method::Info => self.reply(now, &key, &req, 481, "Call/Transaction Does Not Exist"),
            Method::Other(_) => {
                let mut resp = self.response(&req, 501, "Not Implemented");
                resp.headers.push("Allow", ALLOW);
                self.transactions.respond(now, &key, &resp);
            }
            _ => {
                let mut resp = self.response(&req, 405, "Method Not Allowed");
                resp.headers.push("Allow", ALLOW);
                self.transactions.respond(now, &key, &resp);
            }
        }
        Ok(())
    }

    /// Answers, statelessly, a new request that is for no call of ours (a CANCEL or an
    /// in-dialog request matching nothing: 481), or an out-of-dialog request from a
    /// source we do not serve (OPTIONS: 200, anything else: 403). `None`: the request
    /// is ours to handle in a transaction.
    fn answer_without_transaction(
        &mut self,
        now: Instant,
        req: &Request,
        source: Target,
    ) -> Option<Result<(), Dropped>> {
        let ours = if req.method == Method::Cancel {
            ServerKey::of(req).is_some_and(|k| self.cancel_target(&k).is_some())
        } else if is_in_dialog(req) {
            self.call_in_dialog(req).is_some()
        } else {
            self.is_trusted(source)
        };
        if ours {
            return None;
        }
        if req.method == Method::Cancel || is_in_dialog(req) {
            let resp = self.response(req, 481, "Call/Transaction Does Not Exist");
            self.send_stateless(now, source, &resp);
            return Some(Ok(()));
        }
        if req.method == Method::Options {
            let resp = self.options_answer(req);
            self.send_stateless(now, source, &resp);
            return Some(Ok(()));
        }
        self.counters.untrusted_refused += 1;
        let resp = self.response(req, 403, "Forbidden");
        self.send_stateless(now, source, &resp);
        Some(Err(Dropped::new(
            DropReason::Untrusted,
            format!(
                "refused {} for {} from {source}: not the registrar, the outbound proxy or a trusted source",
                clip(req.method.as_str()),
                clip(&req.uri.to_string())
            ),
        )))
    }

    /// Whether we support the SIP extension `option-tag` (for Require and Supported).
    fn supports(&self, option_tag: &str) -> bool {
        option_tag.eq_ignore_ascii_case("100rel")
            || option_tag.eq_ignore_ascii_case("replaces")
            || (option_tag.eq_ignore_ascii_case("timer") && self.config.session_timer.is_some())
    }

    fn options_answer(&mut self, req: &Request) -> Response {
        let mut resp = self.response(req, 200, "OK");
        resp.headers.push("Allow", ALLOW);
        resp.headers.push(
            "Supported",
            if self.config.session_timer.is_some() {
                "100rel, timer"
            } else {
                "100rel"
            },
        );
        resp.headers.push("Accept", "application/sdp");
        resp
    }

    /// The call whose INVITE a CANCEL with this key cancels.
    fn cancel_target(&self, key: &ServerKey) -> Option<CallRef> {
        let id = *self.by_invite_branch.get(&key.branch)?;
        self.calls.get(&id)?.is_cancel_target(key).then_some(id)
    }

    fn call_in_dialog(&self, req: &Request) -> Option<CallRef> {
        let to = req.headers.to().ok()?;
        let id = *self.by_local_tag.get(to.tag()?)?;
        self.calls.get(&id)?.matches(req).then_some(id)
    }

    /// Adds a call and indexes it.
    fn insert_call(&mut self, id: CallRef, call: Call) {
        self.by_local_tag.insert(call.local_tag().to_owned(), id);
        if let Some(key) = call.invite_server_key() {
            self.by_invite_branch.insert(key.branch, id);
        }
        self.calls.insert(id, call);
    }

    /// Forgets a call, its indexes and its timer.
    fn remove_call(&mut self, id: CallRef) {
        let Some(call) = self.calls.remove(&id) else {
            return;
        };
        self.claimed.remove(&id);
        if self.by_local_tag.get(call.local_tag()) == Some(&id) {
            self.by_local_tag.remove(call.local_tag());
        }
        if let Some(key) = call.invite_server_key()
            && self.by_invite_branch.get(&key.branch) == Some(&id)
        {
            self.by_invite_branch.remove(&key.branch);
        }
        self.timers.set(Timed::Call(id), None);
    }

    fn call_request(&mut self, now: Instant, id: CallRef, key: ServerKey, req: &Request) {
        if let Some(c) = self.calls.get_mut(&id) {
            c.on_request(now, Some(key), req, &self.config, &mut self.rng);
        }
        self.flush_call(now, id);
    }

    /// A new INVITE: ring the line its Request-URI names (our Contact), or refuse.
    fn incoming_invite(&mut self, now: Instant, key: ServerKey, req: Request) {
        let line = req
            .uri
            .user
            .as_ref()
            .and_then(|user| self.by_user.get(user))
            .and_then(|ids| {
                ids.iter().copied().find(|id| {
                    self.lines.get(id).is_some_and(|l| {
                        l.registration.contact().user == req.uri.user && !l.registration.is_stopping()
                    })
                })
            });
        let Some(line) = line else {
            self.reply(now, &key, &req, 404, "Not Found");
            return;
        };
        let replaces = match req.headers.get("Replaces") {
            None => None,
            Some(named) => match self.replaced_call(line, named) {
                Some(call) if self.claimed.insert(call) => Some(call),
                _ => {
                    self.reply(now, &key, &req, 481, "Call/Transaction Does Not Exist");
                    return;
                }
            },
        };
        // a call that replaces another takes its place: no room needed
        if replaces.is_none() && self.lines.get(&line).is_some_and(|l| l.is_full(&self.config)) {
            self.reply(now, &key, &req, 486, "Busy Here");
            return;
        }
        if req.headers.contacts().map(|c| c.is_empty()).unwrap_or(true) {
            self.reply(now, &key, &req, 400, "Bad Request");
            return;
        }
        let Some(account) = self.lines.get(&line).map(|l| l.registration.account().clone()) else {
            return;
        };
        let id = CallRef(self.next_call);
        self.next_call += 1;
        let call = Call::incoming(
            now,
            id,
            line,
            &account,
            key,
            (req, replaces),
            &self.config,
            &mut self.rng,
        );
        self.insert_call(id, call);
        if let Some(l) = self.lines.get_mut(&line) {
            l.calls.push(id);
        }
        self.flush_call(now, id);
    }

    /// The established call of `line` that a Replaces header (`call-id;to-tag=OURS;
    /// from-tag=THEIRS`, RFC 3891 §3) names. Only a call of the line the INVITE is for:
    /// a caller can never take over another line's call.
    fn replaced_call(&self, line: LineId, named: &str) -> Option<CallRef> {
        let mut parts = named.split(';');
        let call_id = parts.next()?.trim();
        let (mut ours, mut theirs) = (None, None);
        for p in parts {
            match p
                .split_once('=')
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim()))
            {
                Some((k, v)) if k == "to-tag" => ours = Some(v),
                Some((k, v)) if k == "from-tag" => theirs = Some(v),
                _ => {}
            }
        }
        let id = *self.by_local_tag.get(ours?)?;
        let call = self.calls.get(&id)?;
        let d = call.dialog()?;
        (call.line == line && call.is_confirmed() && d.id.call_id == call_id && d.id.remote_tag == theirs?)
            .then_some(id)
    }

    /// The refusal of a request we cannot serve as asked (RFC 3261 §8.2.2): an
    /// extension it requires (420, none is supported), or, for an INVITE, a body that
    /// is not SDP (415) or an Accept without SDP (406). CANCEL and ACK never get here.
    fn unacceptable(&mut self, req: &Request) -> Option<Response> {
        let required: Vec<&str> = req
            .headers
            .values("Require")
            .into_iter()
            .filter(|t| !self.supports(t))
            .collect();
        if !required.is_empty() {
            let unsupported = required.join(", ");
            let mut resp = self.response(req, 420, "Bad Extension");
            resp.headers.push("Unsupported", unsupported);
            return Some(resp);
        }
        if req.method != Method::Invite {
            return None;
        }
        if let Some(timer) = &self.config.session_timer
            && let session_timer::UasDecision::TooSmall { min_se } = session_timer::uas_decide(req, timer)
        {
            let mut resp = self.response(req, 422, "Session Interval Too Small");
            resp.headers.push("Min-SE", min_se.to_string());
            return Some(resp);
        }
        let media_type = |v: &str| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        let sdp_body = req
            .headers
            .get("Content-Type")
            .is_some_and(|ct| media_type(ct) == "application/sdp");
        if !req.body.is_empty() && !sdp_body {
            let mut resp = self.response(req, 415, "Unsupported Media Type");
            resp.headers.push("Accept", "application/sdp");
            return Some(resp);
        }
        let accepts = req.headers.values("Accept");
        if !accepts.is_empty()
            && !accepts.iter().any(|range| {
                matches!(
                    media_type(range).as_str(),
                    "application/sdp" | "application/*" | "*/*"
                )
            })
        {
            let mut resp = self.response(req, 406, "Not Acceptable");
            resp.headers.push("Accept", "application/sdp");
            return Some(resp);
        }
        None
    }

    /// A response with a To tag (added when the request had none) and our User-Agent.
    fn response(&mut self, req: &Request, status: u16, reason: &str) -> Response {
        let mut resp = Response::for_request(req, status, reason);
        if status > 100
            && let Ok(to) = req.headers.to()
            && to.tag().is_none()
            && let Some(raw) = req.headers.get("To")
        {
            resp.headers
                .set("To", format!("{raw};tag={}", random_token(&mut self.rng, 12)));
        }
        resp.headers.push("Server", self.config.user_agent.clone());
        resp
    }

    fn reply(&mut self, now: Instant, key: &ServerKey, req: &Request, status: u16, reason: &str) {
        let resp = self.response(req, status, reason);
        self.transactions.respond(now, key, &resp);
    }

    /// Queues a response sent without a transaction, within the stateless budget.
    fn send_stateless(&mut self, now: Instant, target: Target, resp: &Response) {
        if !self.stateless_budget.try_take(now) {
            self.counters.stateless_rate_limited += 1;
            return;
        }
        self.counters.stateless_answers += 1;
        self.stateless.push_back(Transmit {
            target,
            data: resp.to_bytes(),
        });
    }

    /// The transport to `target` failed (e.g. TCP connect refused or reset).
    pub fn handle_transport_error(&mut self, now: Instant, target: Target) {
        self.transactions.transport_error(target);
        self.process(now);
    }

    /// Time has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.transactions.handle_timeout(now);
        let reachable = self.registrar_reachable();
        // lines first, then calls, as they fall due
        let mut due = self.timers.due(now);
        due.sort_unstable();
        for timed in due {
            match timed {
                Timed::Line(id) => {
                    if let Some(l) = self.lines.get_mut(&id) {
                        l.registration
                            .handle_timeout(now, &self.config, &mut self.rng, reachable);
                    }
                    self.flush_line(now, id);
                }
                Timed::Call(id) => {
                    if let Some(c) = self.calls.get_mut(&id) {
                        c.handle_timeout(now, &self.config, &mut self.rng);
                    }
                    self.flush_call(now, id);
                }
            }
        }
        if let Some(k) = &mut self.keepalive {
            let t = k.handle_timeout(now);
            self.on_transition(now, t);
        }
        self.process(now);
    }

    fn send_probe(&mut self, now: Instant) {
        let Some(id) = self.keepalive.as_mut().and_then(|k| k.poll_probe(now)) else {
            return;
        };
        let uri = self.config.registrar_uri.clone();
        let mut req = self
            .config
            .new_request(Method::Options, uri.clone(), &mut self.rng);
        req.headers.push(
            "From",
            format!(
                "<sip:keepalive@{}>;tag={}",
                self.config.advertise_host,
                random_token(&mut self.rng, 12)
            ),
        );
        req.headers.push("To", format!("<{uri}>"));
        req.headers.push("Call-ID", random_token(&mut self.rng, 24));
        req.headers.push("CSeq", "1 OPTIONS");
        req.headers.push("User-Agent", self.config.user_agent.clone());
        let hop = self.config.next_hop();
        self.transactions
            .send_request(now, req, hop, Owner::Keepalive(id));
    }

    fn on_transition(&mut self, now: Instant, t: Option<Transition>) {
        let Some(t) = t else { return };
        self.events.push_back(Event::Registrar {
            reachable: t == Transition::CameBack,
        });
        let ids: Vec<LineId> = self.lines.keys().copied().collect();
        for id in ids {
            if let Some(l) = self.lines.get_mut(&id) {
                match t {
                    Transition::WentDown => l.registration.registrar_down(),
                    Transition::CameBack => l.registration.registrar_up(now, &self.config, &mut self.rng),
                }
            }
            self.flush_line(now, id);
        }
    }

    /// Routes transaction events to their owners, then sends what they produced.
    fn process(&mut self, now: Instant) {
        while let Some(ev) = self.transactions.poll_event() {
            match ev {
                TxEvent::Response { owner, key, response } => match owner {
                    Owner::Line(id) => {
                        if let Some(l) = self.lines.get_mut(&id) {
                            l.registration
                                .on_response(now, &response, &self.config, &mut self.rng);
                        }
                        self.flush_line(now, id);
                    }
                    Owner::Call(id) => {
                        if let Some(c) = self.calls.get_mut(&id) {
                            c.on_response(now, &key, &response, &self.config, &mut self.rng);
                        }
                        self.flush_call(now, id);
                    }
                    Owner::Keepalive(p) => {
                        if !response.is_provisional() {
                            let t = self.keepalive.as_mut().and_then(|k| k.on_answer(p));
                            self.on_transition(now, t);
                        }
                    }
                },
                TxEvent::Timeout { owner, key } => match owner {
                    Owner::Line(id) => {
                        if let Some(l) = self.lines.get_mut(&id) {
                            l.registration.on_timeout(now, &self.config, &mut self.rng);
                        }
                        self.flush_line(now, id);
                    }
                    Owner::Call(id) => {
                        if let Some(c) = self.calls.get_mut(&id) {
                            c.on_timeout(&key);
                        }
                        self.flush_call(now, id);
                    }
                    Owner::Keepalive(p) => {
                        let t = self.keepalive.as_mut().and_then(|k| k.on_lost(p));
                        self.on_transition(now, t);
                    }
                },
                TxEvent::AckTimeout { key } => {
                    let id = self.by_invite_branch.get(&key.branch).copied().filter(|id| {
                        self.calls.get(id).and_then(Call::invite_server_key).as_ref() == Some(&key)
                    });
                    if let Some(id) = id {
                        if let Some(c) = self.calls.get_mut(&id) {
                            c.on_ack_timeout(&key, &self.config, &mut self.rng);
                        }
                        self.flush_call(now, id);
                    }
                }
            }
        }
        self.send_probe(now);
    }

    /// Sends a line's requests, publishes its state changes, and removes it once it
    /// has unregistered and has no call left.
    fn flush_line(&mut self, now: Instant, id: LineId) {
        let Some(line) = self.lines.get_mut(&id) else {
            return;
        };
        let requests: Vec<Request> = line.registration.drain_requests().collect();
        let changes: Vec<LineStatus> = line.registration.drain_changes().collect();
        let done = line.registration.is_done() && line.calls.is_empty();
        let hop = self.config.next_hop();
        for req in requests {
            self.transactions.send_request(now, req, hop, Owner::Line(id));
        }
        for status in changes {
            self.events.push_back(Event::Line { line: id, status });
        }
        if done {
            if let Some(line) = self.lines.remove(&id)
                && let Some(user) = &line.registration.contact().user
                && let Some(ids) = self.by_user.get_mut(user)
            {
                ids.retain(|l| *l != id);
                if ids.is_empty() {
                    self.by_user.remove(user);
                }
            }
            self.timers.set(Timed::Line(id), None);
            self.transactions.forget_owner(|o| *o == Owner::Line(id));
            self.events.push_back(Event::LineRemoved { line: id });
        } else {
            let next = self.lines.get(&id).and_then(|l| l.registration.poll_timeout());
            self.timers.set(Timed::Line(id), next);
        }
    }

    /// Sends a call's messages, publishes its events, frees its line once the call is
    /// over, and forgets the call when nothing more can happen to it.
    fn flush_call(&mut self, now: Instant, id: CallRef) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let line = call.line;
        let requests: Vec<(Request, Target)> = call.drain_requests().collect();
        let responses: Vec<(ServerKey, Response)> = call.drain_responses().collect();
        let events: Vec<CallEvent> = call.drain_events().collect();
        let ended = call.is_ended();
        self.counters.requests_in_flight += call.take_refused_in_flight();
        for (key, resp) in responses {
            self.transactions.respond(now, &key, &resp);
        }
        for (req, target) in requests {
            let key = self.transactions.send_request(now, req, target, Owner::Call(id));
            if let Some(key) = key
                && let Some(c) = self.calls.get_mut(&id)
            {
                c.sent(key);
            }
        }
        let mut over = ended;
        for event in events {
            if let CallEvent::Status(s) = &event {
                over |= s.state.is_final();
            }
            self.events.push_back(Event::Call {
                line,
                call: id,
                event,
            });
        }
        if ended {
            self.remove_call(id);
            self.transactions.forget_owner(|o| *o == Owner::Call(id));
        } else {
            let next = self.calls.get(&id).and_then(Call::poll_timeout);
            self.timers.set(Timed::Call(id), next);
        }
        if over
            && let Some(l) = self.lines.get_mut(&line)
            && let Some(at) = l.calls.iter().position(|c| *c == id)
        {
            l.calls.remove(at);
            // a line waiting to go away may have been waiting for this call only
            self.flush_line(now, line);
        }
    }

    /// Next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.stateless
            .pop_front()
            .or_else(|| self.transactions.poll_transmit())
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When to call [`UserAgent::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.transactions.poll_timeout(),
            self.timers.next(),
            self.keepalive.as_ref().map(Keepalive::poll_timeout),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn stats(&self) -> UaStats {
        UaStats {
            lines: self.lines.len(),
            calls: self.calls.len(),
            dialogs: self.calls.values().filter(|c| c.has_dialog()).count(),
            client_transactions: self.transactions.client_count(),
            server_transactions: self.transactions.server_count(),
            counters: self.counters,
        }
    }
}

/// A configuration for unit tests: UDP to a registrar at 127.0.0.1:5060, us on 5090.
#[cfg(test)]
pub(crate) fn test_config() -> UaConfig {
    let pbx: std::net::SocketAddr = "127.0.0.1:5060".parse().expect("literal");
    UaConfig {
        transport: Transport::Udp,
        advertise_host: "127.0.0.1".into(),
        advertise_port: 5090,
        registrar_uri: Uri::parse("sip:127.0.0.1:5060").expect("literal"),
        registrar: Target {
            transport: Transport::Udp,
            addr: pbx,
        },
        outbound_proxy: None,
        expires: 600,
        keepalive_interval: None,
        keepalive_timeout: Duration::from_secs(2),
        retry_min: Duration::from_secs(5),
        retry_max: Duration::from_secs(300),
        user_agent: "sipline-test".into(),
        no_answer_timeout: Duration::from_secs(120),
        session_timer: Some(crate::session_timer::SessionTimerConfig::default()),
        timers: Timers::default(),
        protection: Protection::default(),
        headers: crate::ExtraHeaders::default(),
        calls_per_line: 1,
    }
}

/// Whether a request belongs to a dialog (its To has a tag).
fn is_in_dialog(req: &Request) -> bool {
    req.headers.to().ok().is_some_and(|t| t.tag().is_some())
}

/// Peer-supplied text cut to [`Dropped::MAX_LEN`] bytes for a log line, control
/// characters escaped (so a peer can neither fill a disk nor forge log lines).
pub fn clip(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if out.len() >= Dropped::MAX_LEN {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A random string of `len` letters and digits (branches, tags, Call-IDs, cnonces).
pub fn random_token(rng: &mut fastrand::Rng, len: usize) -> String {
    (0..len).map(|_| rng.alphanumeric()).collect()
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod call_tests;
