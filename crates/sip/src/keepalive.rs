//! Watches the registrar with OPTIONS pings so that an outage is noticed when it
//! happens, not at the next registration refresh minutes later, and so that every
//! line re-registers the moment the PBX is back (a restarted registrar has usually
//! lost its bindings).

use std::time::{Duration, Instant};

/// What we believe about the registrar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reachability {
    Unknown,
    Up,
    Down,
}

/// A change the user agent must act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    WentDown,
    CameBack,
}

/// The probe schedule and the verdict.
#[derive(Debug)]
pub struct Keepalive {
    interval: Duration,
    timeout: Duration,
    state: Reachability,
    next_probe: Instant,
    /// Probe in flight: its id and the deadline after which it counts as lost.
    pending: Option<(u64, Instant)>,
    next_id: u64,
}

impl Keepalive {
    /// A probe goes out every `interval`; one unanswered for `timeout` means down.
    pub fn new(now: Instant, interval: Duration, timeout: Duration) -> Keepalive {
        Keepalive {
            interval,
            timeout,
            state: Reachability::Unknown,
            next_probe: now,
            pending: None,
            next_id: 1,
        }
    }

    pub fn state(&self) -> Reachability {
        self.state
    }

    /// If a probe is due, returns its id; the caller sends an OPTIONS tagged with it.
    pub fn poll_probe(&mut self, now: Instant) -> Option<u64> {
        if self.pending.is_some() || now < self.next_probe {
            return None;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.pending = Some((id, now + self.timeout));
        self.next_probe = now + self.interval;
        Some(id)
    }

    /// Any response to probe `id`, even an error status, proves the registrar is alive.
    pub fn on_answer(&mut self, id: u64) -> Option<Transition> {
        if self.pending.is_some_and(|(p, _)| p == id) {
            self.pending = None;
        }
        let was = self.state;
        self.state = Reachability::Up;
        (was == Reachability::Down).then_some(Transition::CameBack)
    }

    /// Probe `id` got no answer (transaction timeout or transport error).
    pub fn on_lost(&mut self, id: u64) -> Option<Transition> {
        if self.pending.is_some_and(|(p, _)| p == id) {
            self.pending = None;
            return self.went_down();
        }
        None
    }

    /// Checks the deadline of the probe in flight.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Transition> {
        if let Some((_, deadline)) = self.pending
            && now >= deadline
        {
            self.pending = None;
            return self.went_down();
        }
        None
    }

    fn went_down(&mut self) -> Option<Transition> {
        let was = self.state;
        self.state = Reachability::Down;
        (was != Reachability::Down).then_some(Transition::WentDown)
    }

    pub fn poll_timeout(&self) -> Instant {
        match self.pending {
            Some((_, deadline)) => deadline,
            None => self.next_probe,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_outage_and_return() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut k = Keepalive::new(t0, s, 2 * s);
        let p1 = k.poll_probe(t0).unwrap();
        assert_eq!(k.poll_probe(t0), None, "one probe at a time");
        assert_eq!(k.on_answer(p1), None, "unknown -> up is no transition");
        assert_eq!(k.state(), Reachability::Up);
        assert_eq!(k.poll_timeout(), t0 + s);
        let p2 = k.poll_probe(t0 + s).unwrap();
        assert_eq!(k.handle_timeout(t0 + 2 * s), None);
        assert_eq!(k.handle_timeout(t0 + 3 * s), Some(Transition::WentDown));
        // the late transaction timeout of the same probe changes nothing
        assert_eq!(k.on_lost(p2), None);
        let p3 = k.poll_probe(t0 + 3 * s).unwrap();
        assert_eq!(k.handle_timeout(t0 + 5 * s), None, "already down");
        let p4 = k.poll_probe(t0 + 5 * s).unwrap();
        assert_eq!(k.on_answer(p4), Some(Transition::CameBack));
        assert_eq!(k.on_answer(p3), None);
        assert_eq!(k.state(), Reachability::Up);
    }
}
