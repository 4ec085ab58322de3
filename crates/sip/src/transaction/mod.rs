//! The transaction layer (RFC 3261 §17, with RFC 6026's Accepted states): matches
//! responses to client transactions and requests to server transactions, absorbs
//! retransmissions, retransmits over UDP, and times out.
//!
//! Every client transaction carries an owner tag `O` chosen by the transaction user
//! (a registration, a call, the keepalive), so that events go straight back to
//! whoever started it. Time only moves when the caller says so.

mod client;
mod server;

use std::collections::{HashMap, VecDeque};
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

/// All client and server transactions of one SIP endpoint.
#[derive(Debug)]
pub struct Transactions<O> {
    timers: Timers,
    client: HashMap<ClientKey, ClientTransaction<O>>,
    server: HashMap<ServerKey, ServerTransaction>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<TxEvent<O>>,
}

impl<O: Clone> Transactions<O> {
    pub fn new(timers: Timers) -> Transactions<O> {
        Transactions {
            timers,
            client: HashMap::new(),
            server: HashMap::new(),
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
                key,
                owner: tx.owner.clone(),
                response: resp,
            });
        }
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
            return Incoming::Absorbed;
        }
        if req.method == Method::Ack {
            return Incoming::Stateless;
        }
        let tx = ServerTransaction::new(req.method == Method::Invite, source, self.timers);
        self.server.insert(key.clone(), tx);
        Incoming::New(key)
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
        true
    }

    /// The dialog got the ACK for a 2xx sent through `key`: stop retransmitting it.
    pub fn ack_received(&mut self, key: &ServerKey) {
        if let Some(tx) = self.server.get_mut(key) {
            tx.confirm_2xx();
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
    }

    /// Advances every timer to `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut dead = Vec::new();
        for (key, tx) in self.client.iter_mut() {
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
                dead.push(key.clone());
            }
        }
        for k in dead {
            self.client.remove(&k);
        }
        let mut dead = Vec::new();
        for (key, tx) in self.server.iter_mut() {
            let (ack_timeout, transmit) = tx.on_timeout(now);
            if let Some(t) = transmit {
                self.transmits.push_back(t);
            }
            if ack_timeout {
                self.events.push_back(TxEvent::AckTimeout { key: key.clone() });
            }
            if tx.state() == ServerState::Terminated {
                dead.push(key.clone());
            }
        }
        for k in dead {
            self.server.remove(&k);
        }
    }

    /// The earliest instant at which [`Transactions::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let c = self.client.values().filter_map(|t| t.next_timeout());
        let s = self.server.values().filter_map(|t| t.next_timeout());
        c.chain(s).min()
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
