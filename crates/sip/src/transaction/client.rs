//! Client transactions: INVITE (RFC 3261 §17.1.1, Figure 5, with RFC 6026's
//! Accepted state) and non-INVITE (§17.1.2, Figure 6).

use std::time::{Duration, Instant};

use super::{Timers, ack_for_non_2xx};
use crate::message::{Method, Request, Response};
use crate::transport::{Target, Transmit};

/// Client transaction states (INVITE "Calling" and non-INVITE "Trying" are both
/// `Calling` here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    Calling,
    Proceeding,
    Completed,
    /// INVITE got a 2xx: linger to pass 2xx retransmissions to the dialog (Timer M).
    Accepted,
    Terminated,
}

#[derive(Debug)]
pub(super) struct ClientTransaction<O> {
    pub(super) owner: O,
    pub(super) target: Target,
    invite: bool,
    state: ClientState,
    request: Request,
    data: Vec<u8>,
    timers: Timers,
    /// Timer A (INVITE) / E (non-INVITE): next retransmission and current interval.
    retransmit: Option<(Instant, Duration)>,
    /// Timer B / F: give up.
    give_up_at: Option<Instant>,
    /// Timer D / K / M: end of the lingering state.
    linger_until: Option<Instant>,
}

impl<O> ClientTransaction<O> {
    pub(super) fn new(
        now: Instant,
        request: Request,
        data: Vec<u8>,
        target: Target,
        owner: O,
        timers: Timers,
    ) -> Self {
        let invite = request.method == Method::Invite;
        let retransmit = (!target.transport.is_reliable()).then_some((now + timers.t1, timers.t1));
        ClientTransaction {
            owner,
            target,
            invite,
            state: ClientState::Calling,
            request,
            data,
            timers,
            retransmit,
            give_up_at: Some(now + timers.t1 * 64),
            linger_until: None,
        }
    }

    pub(super) fn state(&self) -> ClientState {
        self.state
    }

    /// Still waiting for a final response.
    pub(super) fn is_pending(&self) -> bool {
        matches!(self.state, ClientState::Calling | ClientState::Proceeding)
    }

    fn reliable(&self) -> bool {
        self.target.transport.is_reliable()
    }

    /// Returns (pass the response to the TU?, something to send).
    pub(super) fn on_response(&mut self, now: Instant, resp: &Response) -> (bool, Option<Transmit>) {
        let t1 = self.timers.t1;
        if self.invite {
            match (self.state, resp.status) {
                (ClientState::Calling | ClientState::Proceeding, 100..=199) => {
                    self.state = ClientState::Proceeding;
                    self.retransmit = None;
                    self.give_up_at = None; // Timer B only runs in Calling
                    (true, None)
                }
                (ClientState::Calling | ClientState::Proceeding, 200..=299) => {
                    self.state = ClientState::Accepted;
                    self.retransmit = None;
                    self.give_up_at = None;
                    self.linger_until = Some(now + t1 * 64);
                    (true, None)
                }
                (ClientState::Accepted, 200..=299) => (true, None),
                (ClientState::Calling | ClientState::Proceeding, _) => {
                    self.state = ClientState::Completed;
                    self.retransmit = None;
                    self.give_up_at = None;
                    let linger = if self.reliable() {
                        Duration::ZERO
                    } else {
                        Duration::from_secs(32)
                    };
                    self.linger_until = Some(now + linger);
                    (true, Some(self.ack(resp)))
                }
                // a retransmitted final response: ACK it again, tell nobody
                (ClientState::Completed, 300..) => (false, Some(self.ack(resp))),
                _ => (false, None),
            }
        } else {
            match (self.state, resp.status) {
                (ClientState::Calling | ClientState::Proceeding, 100..=199) => {
                    if self.state == ClientState::Calling {
                        self.state = ClientState::Proceeding;
                        // in Proceeding, retransmit every T2
                        if let Some((_, _)) = self.retransmit {
                            self.retransmit = Some((now + self.timers.t2, self.timers.t2));
                        }
                    }
                    (true, None)
                }
                (ClientState::Calling | ClientState::Proceeding, _) => {
                    self.state = ClientState::Completed;
                    self.retransmit = None;
                    self.give_up_at = None;
                    let linger = if self.reliable() {
                        Duration::ZERO
                    } else {
                        self.timers.t4
                    };
                    self.linger_until = Some(now + linger);
                    (true, None)
                }
                _ => (false, None),
            }
        }
    }

    fn ack(&self, resp: &Response) -> Transmit {
        Transmit {
            target: self.target,
            data: ack_for_non_2xx(&self.request, resp).to_bytes(),
        }
    }

    /// Returns (timed out without a final response?, something to send).
    pub(super) fn on_timeout(&mut self, now: Instant) -> (bool, Option<Transmit>) {
        if let Some(until) = self.linger_until {
            if now >= until {
                self.state = ClientState::Terminated;
                self.linger_until = None;
            }
            return (false, None);
        }
        if let Some(at) = self.give_up_at
            && now >= at
        {
            self.state = ClientState::Terminated;
            self.retransmit = None;
            self.give_up_at = None;
            return (true, None);
        }
        if let Some((at, interval)) = self.retransmit
            && now >= at
        {
            let next = if self.invite {
                interval * 2
            } else if self.state == ClientState::Proceeding {
                self.timers.t2
            } else {
                (interval * 2).min(self.timers.t2)
            };
            self.retransmit = Some((now + next, next));
            return (
                false,
                Some(Transmit {
                    target: self.target,
                    data: self.data.clone(),
                }),
            );
        }
        (false, None)
    }

    pub(super) fn next_timeout(&self) -> Option<Instant> {
        [
            self.retransmit.map(|(at, _)| at),
            self.give_up_at,
            self.linger_until,
        ]
        .into_iter()
        .flatten()
        .min()
    }
}
