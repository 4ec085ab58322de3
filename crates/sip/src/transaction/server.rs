//! Server transactions: INVITE (RFC 3261 §17.2.1, Figure 7, with RFC 6026's
//! Accepted state) and non-INVITE (§17.2.2, Figure 8).
//!
//! One deliberate simplification of the RFC split: in Accepted, the transaction
//! itself retransmits the 2xx until the dialog reports the ACK (or Timer L fires),
//! instead of leaving that loop to the transaction user.

use std::time::{Duration, Instant};

use super::Timers;
use crate::message::Request;
use crate::message::Response;
use crate::transport::{Target, Transmit};

/// Server transaction states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    /// Non-INVITE: nothing sent yet.
    Trying,
    Proceeding,
    Completed,
    /// INVITE: ACK for a non-2xx final response received.
    Confirmed,
    /// INVITE: 2xx sent.
    Accepted,
    Terminated,
}

#[derive(Debug)]
pub(super) struct ServerTransaction {
    invite: bool,
    state: ServerState,
    source: Target,
    timers: Timers,
    last_response: Option<Vec<u8>>,
    /// Timer G (non-2xx) or the 2xx retransmission loop.
    retransmit: Option<(Instant, Duration)>,
    /// Timer H / L: waiting for an ACK gives up.
    ack_deadline: Option<Instant>,
    /// Timer I / J (and end of L): linger, then terminate.
    linger_until: Option<Instant>,
    /// The dialog reported the ACK for our 2xx.
    acked: bool,
}

impl ServerTransaction {
    pub(super) fn new(invite: bool, source: Target, timers: Timers) -> Self {
        ServerTransaction {
            invite,
            state: if invite {
                ServerState::Proceeding
            } else {
                ServerState::Trying
            },
            source,
            timers,
            last_response: None,
            retransmit: None,
            ack_deadline: None,
            linger_until: None,
            acked: false,
        }
    }

    pub(super) fn state(&self) -> ServerState {
        self.state
    }

    fn reliable(&self) -> bool {
        self.source.transport.is_reliable()
    }

    fn resend(&self) -> Option<Transmit> {
        self.last_response.as_ref().map(|data| Transmit {
            target: self.source,
            data: data.clone(),
        })
    }

    /// A retransmitted request (or the ACK) matched this transaction.
    pub(super) fn on_request(&mut self, now: Instant, req: &Request) -> Option<Transmit> {
        if req.method == crate::message::Method::Ack {
            if self.invite && self.state == ServerState::Completed {
                self.state = ServerState::Confirmed;
                self.retransmit = None;
                self.ack_deadline = None;
                let linger = if self.reliable() {
                    Duration::ZERO
                } else {
                    self.timers.t4
                };
                self.linger_until = Some(now + linger);
            }
            return None;
        }
        match self.state {
            ServerState::Proceeding | ServerState::Completed => self.resend(),
            _ => None,
        }
    }

    /// The transaction user sends a response.
    pub(super) fn respond(&mut self, now: Instant, resp: &Response) -> Option<Transmit> {
        if !matches!(self.state, ServerState::Trying | ServerState::Proceeding) {
            return None; // a final response was already sent
        }
        let data = resp.to_bytes();
        let t1 = self.timers.t1;
        if resp.is_provisional() {
            self.state = ServerState::Proceeding;
        } else if self.invite && resp.is_success() {
            self.state = ServerState::Accepted;
            if !self.reliable() {
                self.retransmit = Some((now + t1, t1));
            }
            self.ack_deadline = Some(now + t1 * 64);
        } else if self.invite {
            self.state = ServerState::Completed;
            if !self.reliable() {
                self.retransmit = Some((now + t1, t1));
            }
            self.ack_deadline = Some(now + t1 * 64);
        } else {
            self.state = ServerState::Completed;
            let linger = if self.reliable() { Duration::ZERO } else { t1 * 64 };
            self.linger_until = Some(now + linger);
        }
        self.last_response = Some(data.clone());
        Some(Transmit {
            target: self.source,
            data,
        })
    }

    /// The dialog saw the ACK for our 2xx.
    pub(super) fn confirm_2xx(&mut self) {
        if self.state == ServerState::Accepted {
            self.retransmit = None;
            self.acked = true;
            // keep absorbing INVITE retransmissions for a while (Timer L)
        }
    }

    /// Returns (gave up waiting for an ACK?, something to send).
    pub(super) fn on_timeout(&mut self, now: Instant) -> (bool, Option<Transmit>) {
        if let Some(until) = self.linger_until
            && now >= until
        {
            self.state = ServerState::Terminated;
            self.linger_until = None;
            return (false, None);
        }
        if let Some(at) = self.ack_deadline
            && now >= at
        {
            self.state = ServerState::Terminated;
            self.ack_deadline = None;
            self.retransmit = None;
            return (!self.acked, None);
        }
        if let Some((at, interval)) = self.retransmit
            && now >= at
        {
            let next = (interval * 2).min(self.timers.t2);
            self.retransmit = Some((now + next, next));
            return (false, self.resend());
        }
        (false, None)
    }

    pub(super) fn next_timeout(&self) -> Option<Instant> {
        [
            self.retransmit.map(|(at, _)| at),
            self.ack_deadline,
            self.linger_until,
        ]
        .into_iter()
        .flatten()
        .min()
    }
}
