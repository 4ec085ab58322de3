//! Which leases this node holds and until when it may trust them: the sans-IO core of
//! the cluster pool. No Redis, no clock: the driver feeds it claim and renewal outcomes
//! with the time each request was *sent*, asks it when to renew next, and is told which
//! leases to give up.
//!
//! The rule that keeps an account from ever serving two browsers: Redis expires a lease
//! `ttl` after the last claim or renewal it executed, which is no earlier than when we
//! sent it. So a lease is ours for sure until `sent + ttl`; we stop using it (fence it)
//! a margin before that, for clock-rate differences and the time it takes to tell the
//! session, and another node can only claim it after Redis has expired it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A lease as Redis stores it: the node's name and its fencing token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseValue(pub String);

impl LeaseValue {
    pub fn new(node: &str, token: u64) -> LeaseValue {
        LeaseValue(format!("{node} {token}"))
    }

    /// The node and the token, from a stored value.
    pub fn parse(s: &str) -> Option<(&str, u64)> {
        let (node, token) = s.rsplit_once(' ')?;
        Some((node, token.parse().ok()?))
    }
}

/// What a renewal found for one lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewed {
    /// Still ours: expiry pushed back.
    Kept,
    /// It was gone (Redis lost its data) and nobody had taken it: written again.
    Restored,
    /// Another node holds it now.
    Lost,
}

/// Why a lease was given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fenced {
    /// Not renewed in time (Redis unreachable or slow).
    Expiring,
    /// Redis says another node holds it.
    Lost,
}

#[derive(Debug)]
struct Held {
    value: LeaseValue,
    /// When the last claim or renewal that Redis confirmed was sent.
    confirmed: Instant,
}

/// A renewal to send: every lease held when it was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewBatch {
    pub leases: Vec<(usize, LeaseValue)>,
    pub sent: Instant,
}

#[derive(Debug)]
pub struct LeaseBook {
    ttl: Duration,
    margin: Duration,
    renew_every: Duration,
    retry_every: Duration,
    held: BTreeMap<usize, Held>,
    next_renew: Instant,
    in_flight: bool,
    fenced: Vec<(usize, Fenced)>,
    /// Renewals that failed in a row.
    pub failures_in_row: u32,
}

impl LeaseBook {
    /// Renews every `ttl / 3`, retries a failed renewal every `ttl / 10` (at most 1 s),
    /// and fences a lease `ttl / 5` before Redis could expire it.
    pub fn new(ttl: Duration, now: Instant) -> LeaseBook {
        LeaseBook {
            ttl,
            margin: ttl / 5,
            renew_every: ttl / 3,
            retry_every: (ttl / 10).min(Duration::from_secs(1)),
            held: BTreeMap::new(),
            next_renew: now,
            in_flight: false,
            fenced: Vec::new(),
            failures_in_row: 0,
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    pub fn holds(&self, index: usize) -> bool {
        self.held.contains_key(&index)
    }

    /// A claim sent at `sent` succeeded. False if it came back too late to be used: with
    /// less than one renewal interval left (a line would register only to stop again).
    pub fn claimed(&mut self, index: usize, value: LeaseValue, sent: Instant, now: Instant) -> bool {
        if now + self.renew_every >= sent + self.ttl - self.margin {
            return false;
        }
        self.held.insert(
            index,
            Held {
                value,
                confirmed: sent,
            },
        );
        true
    }

    /// The lease is released (or being released): no more renewals.
    pub fn released(&mut self, index: usize) -> Option<LeaseValue> {
        self.held.remove(&index).map(|h| h.value)
    }

    /// Until when a lease may be used.
    pub fn valid_until(&self, index: usize) -> Option<Instant> {
        self.held.get(&index).map(|h| self.fence_at(h))
    }

    fn fence_at(&self, h: &Held) -> Instant {
        h.confirmed + self.ttl - self.margin
    }

    /// The next time [`LeaseBook::handle_timeout`] or [`LeaseBook::poll_renew`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let fence = self.held.values().map(|h| self.fence_at(h)).min();
        let renew = (!self.in_flight && !self.held.is_empty()).then_some(self.next_renew);
        match (fence, renew) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Fences every lease that can no longer be trusted.
    pub fn handle_timeout(&mut self, now: Instant) {
        let expiring: Vec<usize> = self
            .held
            .iter()
            .filter(|(_, h)| now >= self.fence_at(h))
            .map(|(i, _)| *i)
            .collect();
        for index in expiring {
            self.held.remove(&index);
            self.fenced.push((index, Fenced::Expiring));
        }
    }

    /// The renewal to send now, if one is due (one at a time).
    pub fn poll_renew(&mut self, now: Instant) -> Option<RenewBatch> {
        if self.in_flight || self.held.is_empty() || now < self.next_renew {
            return None;
        }
        self.in_flight = true;
        let leases = self.held.iter().map(|(i, h)| (*i, h.value.clone())).collect();
        Some(RenewBatch { leases, sent: now })
    }

    /// Redis answered a renewal.
    pub fn on_renewed(&mut self, batch: &RenewBatch, outcomes: &[Renewed], now: Instant) {
        self.in_flight = false;
        self.failures_in_row = 0;
        self.next_renew = batch.sent + self.renew_every;
        for ((index, value), outcome) in batch.leases.iter().zip(outcomes) {
            let Some(held) = self.held.get_mut(index) else {
                continue; // released meanwhile
            };
            if held.value != *value {
                continue; // released and claimed again meanwhile
            }
            match outcome {
                Renewed::Kept | Renewed::Restored => held.confirmed = held.confirmed.max(batch.sent),
                Renewed::Lost => {
                    self.held.remove(index);
                    self.fenced.push((*index, Fenced::Lost));
                }
            }
        }
        self.handle_timeout(now);
    }

    /// A renewal failed (Redis unreachable, timed out, or an error): retry soon.
    pub fn on_renew_failed(&mut self, now: Instant) {
        self.in_flight = false;
        self.failures_in_row += 1;
        self.next_renew = now + self.retry_every;
        self.handle_timeout(now);
    }

    /// The next lease given up, and why.
    pub fn poll_fenced(&mut self) -> Option<(usize, Fenced)> {
        if self.fenced.is_empty() {
            None
        } else {
            Some(self.fenced.remove(0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(15);

    fn s(secs: f64) -> Duration {
        Duration::from_secs_f64(secs)
    }

    fn book() -> (LeaseBook, Instant) {
        let t0 = Instant::now();
        (LeaseBook::new(TTL, t0), t0)
    }

    fn v(token: u64) -> LeaseValue {
        LeaseValue::new("node-a", token)
    }

    #[test]
    fn values_carry_node_and_token() {
        assert_eq!(LeaseValue::new("gw 1:8080", 42).0, "gw 1:8080 42");
        assert_eq!(LeaseValue::parse("gw 1:8080 42"), Some(("gw 1:8080", 42)));
        assert_eq!(LeaseValue::parse("nonsense"), None);
        assert_eq!(LeaseValue::parse("a b"), None);
    }

    #[test]
    fn renews_every_third_of_the_ttl_while_redis_answers() {
        let (mut b, t0) = book();
        assert!(b.claimed(3, v(1), t0, t0));
        let batch = b.poll_renew(t0).expect("first renewal right away");
        assert!(b.poll_renew(t0).is_none(), "one renewal at a time");
        assert_eq!(
            b.poll_timeout(),
            Some(t0 + s(12.0)),
            "only the fence while in flight"
        );
        b.on_renewed(&batch, &[Renewed::Kept], t0 + s(0.01));
        assert_eq!(b.poll_timeout(), Some(t0 + s(5.0)));
        for k in 1..100 {
            let now = t0 + s(5.0) * k;
            let batch = b.poll_renew(now).unwrap();
            b.on_renewed(&batch, &[Renewed::Kept], now + s(0.01));
            b.handle_timeout(now + s(0.01));
        }
        assert!(b.holds(3));
        assert!(b.poll_fenced().is_none());
    }

    #[test]
    fn fences_before_redis_could_expire_the_lease() {
        let (mut b, t0) = book();
        b.claimed(3, v(1), t0, t0 + s(0.2));
        // Redis is unreachable from now on
        let mut now = t0;
        while b.holds(3) {
            now = b.poll_timeout().unwrap();
            b.handle_timeout(now);
            if b.poll_renew(now).is_some() {
                b.on_renew_failed(now + s(0.5));
            }
        }
        assert_eq!(b.poll_fenced(), Some((3, Fenced::Expiring)));
        assert!(now <= t0 + TTL - s(3.0), "fenced at {:?}", now - t0);
        assert!(now >= t0 + s(11.9), "not before it had to: {:?}", now - t0);
        assert!(
            b.failures_in_row > 5,
            "retried while it could: {}",
            b.failures_in_row
        );
    }

    #[test]
    fn validity_counts_from_when_the_request_was_sent_not_answered() {
        let (mut b, t0) = book();
        b.claimed(1, v(1), t0, t0);
        let batch = b.poll_renew(t0 + s(5.0)).unwrap();
        // a slow answer: 6 s in flight
        b.on_renewed(&batch, &[Renewed::Kept], t0 + s(11.0));
        assert_eq!(b.valid_until(1), Some(t0 + s(5.0) + s(12.0)));
    }

    #[test]
    fn a_claim_answered_too_late_is_not_used() {
        let (mut b, t0) = book();
        assert!(
            !b.claimed(1, v(1), t0, t0 + s(7.0)),
            "less than a renewal interval left"
        );
        assert!(!b.holds(1));
        assert!(b.claimed(1, v(1), t0, t0 + s(6.9)));
    }

    #[test]
    fn a_lease_another_node_holds_is_fenced_at_once() {
        let (mut b, t0) = book();
        b.claimed(1, v(1), t0, t0);
        b.claimed(2, v(2), t0, t0);
        let batch = b.poll_renew(t0).unwrap();
        b.on_renewed(&batch, &[Renewed::Lost, Renewed::Restored], t0);
        assert_eq!(b.poll_fenced(), Some((1, Fenced::Lost)));
        assert_eq!(b.poll_fenced(), None);
        assert!(b.holds(2), "restored after Redis lost it");
    }

    #[test]
    fn outcomes_for_leases_released_or_reclaimed_meanwhile_are_ignored() {
        let (mut b, t0) = book();
        b.claimed(1, v(1), t0, t0);
        b.claimed(2, v(2), t0, t0);
        let batch = b.poll_renew(t0 + s(5.0)).unwrap();
        b.released(1);
        b.released(2);
        b.claimed(2, v(7), t0 + s(5.5), t0 + s(5.5));
        b.on_renewed(&batch, &[Renewed::Lost, Renewed::Lost], t0 + s(6.0));
        assert_eq!(b.poll_fenced(), None, "a stale batch fences nothing");
        assert!(b.holds(2));
        assert!(!b.holds(1));
        assert_eq!(b.valid_until(2), Some(t0 + s(5.5) + s(12.0)));
    }

    #[test]
    fn a_lease_claimed_during_a_renewal_keeps_its_own_clock() {
        let (mut b, t0) = book();
        b.claimed(1, v(1), t0, t0);
        let batch = b.poll_renew(t0 + s(5.0)).unwrap();
        b.claimed(2, v(2), t0 + s(5.1), t0 + s(5.1));
        b.on_renewed(&batch, &[Renewed::Kept], t0 + s(5.2));
        assert_eq!(b.valid_until(2), Some(t0 + s(5.1) + s(12.0)));
        let next = b.poll_renew(t0 + s(10.0)).unwrap();
        assert_eq!(next.leases.len(), 2, "both renewed next time");
    }

    #[test]
    fn nothing_to_do_without_leases() {
        let (mut b, t0) = book();
        assert_eq!(b.poll_timeout(), None);
        assert!(b.poll_renew(t0 + s(100.0)).is_none());
    }
}
