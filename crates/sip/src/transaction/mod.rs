//! The transaction layer (RFC 3261 §17, with RFC 6026's Accepted states): matches
//! responses to client transactions and requests to server transactions, absorbs
//! retransmissions, retransmits over UDP, and times out.
//!
//! Every client transaction carries an owner tag `O` chosen by the transaction user
//! (a registration, a call, the keepalive), so that events go straight back to
//! whoever started it. Time only moves when the caller says so.
//!
//! Deadlines sit in a min-heap (entries are refreshed whenever a transaction is touched
//! and stale ones are skipped when they come up), so the cost of a packet or a timeout
//! does not grow with the number of live transactions.

mod client;
mod server;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::message::{Method, Request, Response};
use crate::transport::{Target, Transmit};

pub use client::ClientState;
pub use server::ServerState;

use client::ClientTransaction;
use server::ServerTransaction;

/// RFC 3261 timer base values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// RTT estimate (500 ms).
    pub t1: Duration,
    /// Maximum retransmit interval for non-INVITE requests and INVITE responses (4 s).
    pub t2: Duration,
    /// Maximum time a message stays in the network (5 s).
    pub t4: Duration,
}

impl Default for Timers {
    fn default() -> Timers {
        Timers {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

/// Identifies a client transaction: top Via branch and CSeq method.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientKey {
    pub branch: String,
    pub method: Method,
}

/// Identifies a server transaction (RFC 3261 §17.2.3): branch, sent-by and method,
/// with ACK folded onto INVITE.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerKey {
    pub branch: String,
    pub sent_by: String,
    pub method: Method,
}

impl ServerKey {
    /// The key of a request; requests without an RFC 3261 branch get one derived from
    /// Call-ID, CSeq number and From tag, which is what an RFC 2543 peer keeps stable.
    pub fn of(req: &Request) -> Option<ServerKey> {
        let via = req.headers.top_via().ok()?;
        let method = match req.method {
            Method::Ack => Method::Invite,
            ref m => m.clone(),
        };
        let branch = match via.branch() {
            Some(b) if b.starts_with(MAGIC_COOKIE) => b.to_owned(),
            _ => {
                let cseq = req.headers.cseq().ok()?;
                let from_tag = req.headers.from().ok()?.tag().unwrap_or_default().to_owned();
                format!(
                    "rfc2543:{}:{}:{}",
                    req.headers.call_id().ok()?,
                    cseq.seq,
                    from_tag
                )
            }
        };
        Some(ServerKey {
            branch,
            sent_by: via.sent_by(),
            method,
        })
    }
}

/// RFC 3261 branch prefix.
pub const MAGIC_COOKIE: &str = "z9hG4bK";

/// What the transaction layer tells its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxEvent<O> {
    /// A response for a client transaction (provisional, final, or a 2xx
    /// retransmission of an INVITE, which the dialog must ACK again).
    Response {
        key: ClientKey,
        owner: O,
        response: Response,
    },
    /// Timer B or F fired: no final response (treat as 408).
    Timeout { key: ClientKey, owner: O },
    /// A server INVITE transaction never got its ACK (Timer H, or L after a 2xx).
    AckTimeout { key: ServerKey },
}

/// How an incoming request relates to the transactions we have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A new request for the transaction user, with its server transaction created.
    New(ServerKey),
    /// A retransmission or an ACK for a non-2xx final response: handled here.
    Absorbed,
    /// A request that creates no transaction: an ACK that matches none (an ACK for a
    /// 2xx belongs to the dialog) or a request without a usable Via.
    Stateless,
}

/// A transaction in the deadline heap.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TxKey {
    Client(ClientKey),
    Server(ServerKey),
}

/// One deadline: ordered by time, then by when it was set.
#[derive(Debug)]
struct Deadline {
    at: Instant,
    seq: u64,
    key: TxKey,
}

impl PartialEq for Deadline {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Deadline {}

impl PartialOrd for Deadline {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Deadline {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// All client and server transactions of one SIP endpoint.
#[derive(Debug)]
pub struct Transactions<O> {
    timers: Timers,
    client: HashMap<ClientKey, ClientTransaction<O>>,
    server: HashMap<ServerKey, ServerTransaction>,
    /// Every deadline a transaction has had since it was last touched; an entry is
    /// acted on only if its transaction still exists and is due.
    deadlines: BinaryHeap<Reverse<Deadline>>,
    next_seq: u64,
    transmits: VecDeque<Transmit>,
    events: VecDeque<TxEvent<O>>,
}

impl<O: Clone> Transactions<O> {
    pub fn new(timers: Timers) -> Transactions<O> {
        Transactions {
            timers,
            client: HashMap::new(),
            server: HashMap::new(),
            deadlines: BinaryHeap::new(),
            next_seq: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    pub fn timers(&self) -> Timers {
        self.timers
    }

    /// Starts a client transaction for `req` (whose top Via must carry a branch) and
    /// sends it. An ACK is sent without a transaction.
    pub fn send_request(
        &mut self,
        now: Instant,
        req: Request,
        target: Target,
        owner: O,
    ) -> Option<ClientKey> {
        let data = req.to_bytes();
        self.transmits.push_back(Transmit {
            target,
            data: data.clone(),
        });
        if req.method == Method::Ack {
            return None;
        }
        let branch = req.headers.top_via().ok()?.branch()?.to_owned();
        let key = ClientKey {
            branch,
            method: req.method.clone(),
        };
        let tx = ClientTransaction::new(now, req, data, target, owner, self.timers);
        self.client.insert(key.clone(), tx);
        self.schedule(TxKey::Client(key.clone()));
        self.prune();
        Some(key)
    }

    /// Feeds a response from the network. Returns false if no transaction matched
    /// (a stray or late response, which the caller may log).
    pub fn receive_response(&mut self, now: Instant, resp: Response) -> bool {
        let Some(key) = client_key_of(&resp) else {
            return false;
        };
        let Some(tx) = self.client.get_mut(&key) else {
            return false;
        };
        let (pass_up, transmit) = tx.on_response(now, &resp);
        if let Some(t) = transmit {
            self.transmits.push_back(t);
        }
        if pass_up {
            self.events.push_back(TxEvent::Response {
                key: key.clone(),
                owner: tx.owner.clone(),
                response: resp,
            });
        }
        self.schedule(TxKey::Client(key));
        self.prune();
        true
    }

    /// Feeds a request from the network, received from `source`.
    pub fn receive_request(&mut self, now: Instant, req: &Request, source: Target) -> Incoming {
        let Some(key) = ServerKey::of(req) else {
            return Incoming::Stateless;
        };
        if let Some(tx) = self.server.get_mut(&key) {
            if let Some(t) = tx.on_request(now, req) {
                self.transmits.push_back(t);
            }
            self.schedule(TxKey::Server(key));
            self.prune();
            return Incoming::Absorbed;
        }
        if req.method == Method::Ack {
            return Incoming::Stateless;
        }
        let tx = ServerTransaction::new(req.method == Method::Invite, source, self.timers);
        self.server.insert(key.clone(), tx);
        Incoming::New(key)
    }

    /// Whether `req` is a retransmission (or the ACK of a non-2xx answer) of a server
    /// transaction we have: such requests must reach [`Transactions::receive_request`]
    /// whoever sent them.
    pub fn is_known(&self, req: &Request) -> bool {
        ServerKey::of(req).is_some_and(|k| self.server.contains_key(&k))
    }

    /// Sends a response through a server transaction. Returns false if the
    /// transaction is gone (it timed out, or the key is wrong).
    pub fn respond(&mut self, now: Instant, key: &ServerKey, resp: &Response) -> bool {
        let Some(tx) = self.server.get_mut(key) else {
            return false;
        };
        if let Some(t) = tx.respond(now, resp) {
            self.transmits.push_back(t);
        }
        self.schedule(TxKey::Server(key.clone()));
        self.prune();
        true
    }

    /// The dialog got the ACK for a 2xx sent through `key`: stop retransmitting it.
    pub fn ack_received(&mut self, key: &ServerKey) {
        if let Some(tx) = self.server.get_mut(key) {
            tx.confirm_2xx();
            self.schedule(TxKey::Server(key.clone()));
            self.prune();
        }
    }

    /// The server transaction for an INVITE, if it is still around (used to find the
    /// transaction a CANCEL targets: same branch and sent-by, method INVITE).
    pub fn server_state(&self, key: &ServerKey) -> Option<ServerState> {
        self.server.get(key).map(|t| t.state())
    }

    /// A transport error for everything in flight to `target` (a TCP connection
    /// refused or reset): such client transactions fail now, as with a timeout.
    pub fn transport_error(&mut self, target: Target) {
        let keys: Vec<ClientKey> = self
            .client
            .iter()
            .filter(|(_, t)| t.target == target && t.is_pending())
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            if let Some(tx) = self.client.remove(&key) {
                self.events.push_back(TxEvent::Timeout { key, owner: tx.owner });
            }
        }
        self.prune();
    }

    /// Advances every due timer to `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while self.deadlines.peek().is_some_and(|Reverse(d)| d.at <= now) {
            let Some(Reverse(d)) = self.deadlines.pop() else {
                break;
            };
            match d.key {
                TxKey::Client(key) => self.client_timeout(now, key),
                TxKey::Server(key) => self.server_timeout(now, key),
            }
        }
        self.prune();
    }

    fn client_timeout(&mut self, now: Instant, key: ClientKey) {
        // several timers can be due at once: run them all (a few at most)
        for _ in 0..4 {
            let Some(tx) = self.client.get_mut(&key) else {
                return; // gone since this deadline was set
            };
            if tx.next_timeout().is_none_or(|t| t > now) {
                break; // not (or no longer) due: a later entry stands for it
            }
            let (timed_out, transmit) = tx.on_timeout(now);
            if let Some(t) = transmit {
                self.transmits.push_back(t);
            }
            if timed_out {
                self.events.push_back(TxEvent::Timeout {
                    key: key.clone(),
                    owner: tx.owner.clone(),
                });
            }
            if tx.state() == ClientState::Terminated {
                self.client.remove(&key);
                return;
            }
        }
        self.schedule_after(now, TxKey::Client(key));
    }

    fn server_timeout(&mut self, now: Instant, key: ServerKey) {
        for _ in 0..4 {
            let Some(tx) = self.server.get_mut(&key) else {
                return;
            };
            if tx.next_timeout().is_none_or(|t| t > now) {
                break;
            }
            let (ack_timeout, transmit) = tx.on_timeout(now);
            if let Some(t) = transmit {
                self.transmits.push_back(t);
            }
            if ack_timeout {
                self.events.push_back(TxEvent::AckTimeout { key: key.clone() });
            }
            if tx.state() == ServerState::Terminated {
                self.server.remove(&key);
                return;
            }
        }
        self.schedule_after(now, TxKey::Server(key));
    }

    /// Puts a transaction's next deadline in the heap (after anything touched it).
    fn schedule(&mut self, key: TxKey) {
        if let Some(at) = self.next_timeout_of(&key) {
            self.push_deadline(at, key);
        }
    }

    /// As [`Self::schedule`] right after a timeout at `now`: a deadline that did not
    /// move on is pushed past `now`, so that one transaction can never spin the loop.
    fn schedule_after(&mut self, now: Instant, key: TxKey) {
        if let Some(at) = self.next_timeout_of(&key) {
            self.push_deadline(at.max(now + Duration::from_millis(1)), key);
        }
    }

    fn next_timeout_of(&self, key: &TxKey) -> Option<Instant> {
        match key {
            TxKey::Client(k) => self.client.get(k).and_then(|t| t.next_timeout()),
            TxKey::Server(k) => self.server.get(k).and_then(|t| t.next_timeout()),
        }
    }

    /// Drops stale deadlines from the top of the heap (transactions gone, or moved on to
    /// a later deadline, which has an entry of its own), so that
    /// [`Transactions::poll_timeout`] is exact.
    fn prune(&mut self) {
        while let Some(Reverse(d)) = self.deadlines.peek() {
            if self.next_timeout_of(&d.key).is_some_and(|t| t <= d.at) {
                return;
            }
            self.deadlines.pop();
        }
    }

    fn push_deadline(&mut self, at: Instant, key: TxKey) {
        self.next_seq += 1;
        self.deadlines.push(Reverse(Deadline {
            at,
            seq: self.next_seq,
            key,
        }));
    }

    /// The earliest instant at which [`Transactions::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.peek().map(|Reverse(d)| d.at)
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<TxEvent<O>> {
        self.events.pop_front()
    }

    /// Live client transactions (for metrics and leak tests).
    pub fn client_count(&self) -> usize {
        self.client.len()
    }

    /// Live server transactions.
    pub fn server_count(&self) -> usize {
        self.server.len()
    }

    /// Forgets every client transaction owned by `owner` (its user is gone).
    pub fn forget_owner(&mut self, is_owner: impl Fn(&O) -> bool) {
        self.client.retain(|_, t| !is_owner(&t.owner));
        self.prune();
    }
}

fn client_key_of(resp: &Response) -> Option<ClientKey> {
    let via = resp.headers.top_via().ok()?;
    let cseq = resp.headers.cseq().ok()?;
    Some(ClientKey {
        branch: via.branch()?.to_owned(),
        method: cseq.method,
    })
}

/// Builds the ACK for a non-2xx final response (RFC 3261 §17.1.1.3).
pub(crate) fn ack_for_non_2xx(invite: &Request, resp: &Response) -> Request {
    let mut ack = Request::new(Method::Ack, invite.uri.clone());
    if let Some(via) = invite.headers.get_all("Via").next() {
        // only the top Via value (the one with our branch)
        let top = crate::message::split_outside_quotes(via, b',')
            .first()
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        ack.headers.push("Via", top);
    }
    ack.headers.push("Max-Forwards", "70");
    for name in ["From", "Call-ID"] {
        if let Some(v) = invite.headers.get(name) {
            ack.headers.push(name, v);
        }
    }
    if let Some(to) = resp.headers.get("To") {
        ack.headers.push("To", to);
    }
    if let Ok(cseq) = invite.headers.cseq() {
        ack.headers.push("CSeq", format!("{} ACK", cseq.seq));
    }
    for r in invite.headers.get_all("Route") {
        ack.headers.push("Route", r);
    }
    ack
}

#[cfg(test)]
mod tests;
