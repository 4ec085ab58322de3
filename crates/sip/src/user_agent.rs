//! The user agent: one SIP endpoint hosting many phone lines (the accounts leased to
//! browsers), the transaction layer they share, and the registrar keepalive.
//!
//! Like str0m's `Rtc`, it is driven from outside: [`UserAgent::handle_receive`] and
//! [`UserAgent::handle_timeout`] put bytes and time in; [`UserAgent::poll_transmit`],
//! [`UserAgent::poll_event`] and [`UserAgent::poll_timeout`] say what to send, what
//! happened and when to call again.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use crate::keepalive::{Keepalive, Reachability, Transition};
use crate::message::{Message, Method, Request, Response, Uri};
use crate::registration::{LineStatus, Registration};
use crate::transaction::{Incoming, MAGIC_COOKIE, ServerKey, Timers, Transactions, TxEvent};
use crate::transport::{Target, Transmit, Transport};

/// Methods we implement, for Allow headers.
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO";

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
    pub timers: Timers,
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
}

/// Why received bytes were dropped (for a log line; the UA itself stays usable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped(pub String);

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Counts of live state, for metrics and leak tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UaStats {
    pub lines: usize,
    pub client_transactions: usize,
    pub server_transactions: usize,
}

/// The SIP endpoint.
#[derive(Debug)]
pub struct UserAgent {
    config: UaConfig,
    rng: fastrand::Rng,
    transactions: Transactions<Owner>,
    lines: BTreeMap<LineId, Registration>,
    keepalive: Option<Keepalive>,
    events: VecDeque<Event>,
    /// Responses sent outside any transaction (400s to malformed requests).
    stateless: VecDeque<Transmit>,
    next_line: u64,
}

impl UserAgent {
    /// `seed` feeds the generator of branches, tags and Call-IDs (fixed in tests,
    /// random in production).
    pub fn new(now: Instant, config: UaConfig, seed: u64) -> UserAgent {
        let keepalive = config
            .keepalive_interval
            .map(|i| Keepalive::new(now, i, config.keepalive_timeout));
        UserAgent {
            transactions: Transactions::new(config.timers),
            config,
            rng: fastrand::Rng::with_seed(seed),
            lines: BTreeMap::new(),
            keepalive,
            events: VecDeque::new(),
            stateless: VecDeque::new(),
            next_line: 1,
        }
    }

    pub fn config(&self) -> &UaConfig {
        &self.config
    }

    /// Adds a line for `account` and starts registering it.
    pub fn add_line(&mut self, now: Instant, account: Account) -> LineId {
        let id = LineId(self.next_line);
        self.next_line += 1;
        let mut reg = Registration::new(account, &self.config, &mut self.rng);
        reg.start(now, &self.config, &mut self.rng);
        self.lines.insert(id, reg);
        self.flush_line(now, id);
        id
    }

    /// Unregisters a line; [`Event::LineRemoved`] follows when it is gone.
    pub fn remove_line(&mut self, now: Instant, id: LineId) {
        let reachable = self.registrar_reachable();
        if let Some(reg) = self.lines.get_mut(&id) {
            reg.stop(now, &self.config, &mut self.rng, reachable);
            self.flush_line(now, id);
        }
    }

    /// The current visible status of a line.
    pub fn line_status(&self, id: LineId) -> Option<&LineStatus> {
        self.lines.get(&id).and_then(|r| r.status())
    }

    fn registrar_reachable(&self) -> bool {
        self.keepalive
            .as_ref()
            .is_none_or(|k| k.state() != Reachability::Down)
    }

    /// Bytes received from `source`.
    pub fn handle_receive(
        &mut self,
        now: Instant,
        source: Target,
        data: &[u8],
    ) -> Result<(), Dropped> {
        if data.iter().all(|b| b.is_ascii_whitespace()) {
            return Ok(()); // CRLF keep-alive
        }
        let msg = Message::parse(data)
            .map_err(|e| Dropped(format!("unparsable SIP from {source}: {e}")))?;
        let result = match msg {
            Message::Response(resp) => {
                if self.transactions.receive_response(now, resp) {
                    Ok(())
                } else {
                    Err(Dropped(format!(
                        "response from {source} matches no transaction"
                    )))
                }
            }
            Message::Request(req) => self.handle_request(now, req, source),
        };
        self.process(now);
        result
    }

    fn handle_request(
        &mut self,
        now: Instant,
        req: Request,
        source: Target,
    ) -> Result<(), Dropped> {
        if let Err(e) = req.validate() {
            if req.method != Method::Ack && req.headers.top_via().is_ok() {
                let mut resp = Response::for_request(&req, 400, "Bad Request");
                resp.headers.push(
                    "Warning",
                    format!("399 siphon \"{}\"", e.to_string().replace('"', "'")),
                );
                self.send_stateless(source, &resp);
            }
            return Err(Dropped(format!("bad {} from {source}: {e}", req.method)));
        }
        let key = match self.transactions.receive_request(now, &req, source) {
            Incoming::New(key) => key,
            Incoming::Absorbed | Incoming::Stateless => return Ok(()),
        };
        if !req.uri.is_sip() {
            self.reply(now, &key, &req, 416, "Unsupported URI Scheme");
            return Ok(());
        }
        match req.method {
            Method::Options => {
                let mut resp = self.response(&req, 200, "OK");
                resp.headers.push("Allow", ALLOW);
                resp.headers.push("Accept", "application/sdp");
                self.transactions.respond(now, &key, &resp);
            }
            Method::Invite => self.reply(now, &key, &req, 480, "Temporarily Unavailable"),
            Method::Bye | Method::Cancel | Method::Info => {
                self.reply(now, &key, &req, 481, "Call/Transaction Does Not Exist")
            }
            Method::Other(_) => self.reply(now, &key, &req, 501, "Not Implemented"),
            _ => {
                let mut resp = self.response(&req, 405, "Method Not Allowed");
                resp.headers.push("Allow", ALLOW);
                self.transactions.respond(now, &key, &resp);
            }
        }
        Ok(())
    }

    /// A response with a To tag (added when the request had none) and our User-Agent.
    fn response(&mut self, req: &Request, status: u16, reason: &str) -> Response {
        let mut resp = Response::for_request(req, status, reason);
        if status > 100
            && let Ok(to) = req.headers.to()
            && to.tag().is_none()
            && let Some(raw) = req.headers.get("To")
        {
            resp.headers.set(
                "To",
                format!("{raw};tag={}", random_token(&mut self.rng, 12)),
            );
        }
        resp.headers.push("Server", self.config.user_agent.clone());
        resp
    }

    fn reply(&mut self, now: Instant, key: &ServerKey, req: &Request, status: u16, reason: &str) {
        let resp = self.response(req, status, reason);
        self.transactions.respond(now, key, &resp);
    }

    fn send_stateless(&mut self, target: Target, resp: &Response) {
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
        let ids: Vec<LineId> = self
            .lines
            .iter()
            .filter(|(_, r)| r.poll_timeout().is_some_and(|t| t <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some(reg) = self.lines.get_mut(&id) {
                reg.handle_timeout(now, &self.config, &mut self.rng, reachable);
            }
            self.flush_line(now, id);
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
        req.headers
            .push("User-Agent", self.config.user_agent.clone());
        let hop = self.config.next_hop();
        self.transactions
            .send_request(now, req, hop, Owner::Keepalive(id));
    }

    fn on_transition(&mut self, now: Instant, t: Option<Transition>) {
        match t {
            Some(Transition::WentDown) => {
                self.events.push_back(Event::Registrar { reachable: false });
                let ids: Vec<LineId> = self.lines.keys().copied().collect();
                for id in ids {
                    if let Some(reg) = self.lines.get_mut(&id) {
                        reg.registrar_down();
                    }
                    self.flush_line(now, id);
                }
            }
            Some(Transition::CameBack) => {
                self.events.push_back(Event::Registrar { reachable: true });
                let ids: Vec<LineId> = self.lines.keys().copied().collect();
                for id in ids {
                    if let Some(reg) = self.lines.get_mut(&id) {
                        reg.registrar_up(now, &self.config, &mut self.rng);
                    }
                    self.flush_line(now, id);
                }
            }
            None => {}
        }
    }

    /// Routes transaction events to their owners, then sends what they produced.
    fn process(&mut self, now: Instant) {
        while let Some(ev) = self.transactions.poll_event() {
            match ev {
                TxEvent::Response {
                    owner: Owner::Line(id),
                    response,
                    ..
                } => {
                    if let Some(reg) = self.lines.get_mut(&id) {
                        reg.on_response(now, &response, &self.config, &mut self.rng);
                    }
                    self.flush_line(now, id);
                }
                TxEvent::Timeout {
                    owner: Owner::Line(id),
                    ..
                } => {
                    if let Some(reg) = self.lines.get_mut(&id) {
                        reg.on_timeout(now, &self.config, &mut self.rng);
                    }
                    self.flush_line(now, id);
                }
                TxEvent::Response {
                    owner: Owner::Keepalive(p),
                    response,
                    ..
                } => {
                    if !response.is_provisional() {
                        let t = self.keepalive.as_mut().and_then(|k| k.on_answer(p));
                        self.on_transition(now, t);
                    }
                }
                TxEvent::Timeout {
                    owner: Owner::Keepalive(p),
                    ..
                } => {
                    let t = self.keepalive.as_mut().and_then(|k| k.on_lost(p));
                    self.on_transition(now, t);
                }
                TxEvent::AckTimeout { .. } => {}
            }
        }
        self.send_probe(now);
    }

    /// Sends a line's requests, publishes its state changes, and removes it when done.
    fn flush_line(&mut self, now: Instant, id: LineId) {
        let Some(reg) = self.lines.get_mut(&id) else {
            return;
        };
        let requests: Vec<Request> = reg.drain_requests().collect();
        let changes: Vec<LineStatus> = reg.drain_changes().collect();
        let done = reg.is_done();
        let hop = self.config.next_hop();
        for req in requests {
            self.transactions
                .send_request(now, req, hop, Owner::Line(id));
        }
        for status in changes {
            self.events.push_back(Event::Line { line: id, status });
        }
        if done {
            self.lines.remove(&id);
            self.transactions.forget_owner(|o| *o == Owner::Line(id));
            self.events.push_back(Event::LineRemoved { line: id });
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
        let lines = self.lines.values().filter_map(|r| r.poll_timeout()).min();
        [
            self.transactions.poll_timeout(),
            lines,
            self.keepalive.as_ref().map(|k| k.poll_timeout()),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn stats(&self) -> UaStats {
        UaStats {
            lines: self.lines.len(),
            client_transactions: self.transactions.client_count(),
            server_transactions: self.transactions.server_count(),
        }
    }
}

/// A random string of `len` letters and digits (branches, tags, Call-IDs, cnonces).
pub fn random_token(rng: &mut fastrand::Rng, len: usize) -> String {
    (0..len).map(|_| rng.alphanumeric()).collect()
}

#[cfg(test)]
mod tests;
