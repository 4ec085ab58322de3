//! What one browser session may do, decided without I/O: how many requests a second
//! (a token bucket; a session that keeps going past its refusals is closed), how many
//! ICE candidates, and how long it may last. The session task asks before it acts.

use std::time::Instant;

use sipline_sip::rate::TokenBucket;

use crate::api::{RpcError, codes};
use crate::config::SessionLimits;
use crate::counters::{self, Counter};

/// WebSocket close code "Policy Violation" (RFC 6455): sent to a session that keeps
/// sending past its request rate.
pub const CLOSE_POLICY_VIOLATION: u16 = 1008;
/// WebSocket close code "Message Too Big": a frame over the API's limit.
pub const CLOSE_MESSAGE_TOO_BIG: u16 = 1009;
/// WebSocket close code "Going Away": the session reached `http.max_session_length`.
pub const CLOSE_GOING_AWAY: u16 = 1001;

/// What to do with a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Serve,
    /// Answer it with this error.
    Refuse(RpcError),
    /// Close the session with this code and reason.
    Close(u16, &'static str),
}

#[derive(Debug)]
pub struct SessionGuard {
    requests: TokenBucket,
    rate: f64,
    /// Requests refused since the last one served.
    refused_in_a_row: u32,
    burst: u32,
    candidates: usize,
    max_candidates: usize,
    ends_at: Option<Instant>,
}

impl SessionGuard {
    pub fn new(limits: &SessionLimits, now: Instant) -> SessionGuard {
        SessionGuard {
            requests: TokenBucket::new(limits.requests_per_second, f64::from(limits.request_burst)),
            rate: limits.requests_per_second,
            refused_in_a_row: 0,
            burst: limits.request_burst,
            candidates: 0,
            max_candidates: limits.max_candidates,
            ends_at: limits.max_session_length.map(|d| now + d),
        }
    }

    /// A request arrived: within the rate, refused, or one too many refused in a row.
    pub fn on_request(&mut self, now: Instant) -> Verdict {
        if self.requests.try_take(now) {
            self.refused_in_a_row = 0;
            return Verdict::Serve;
        }
        counters::inc(Counter::RequestRate);
        self.refused_in_a_row += 1;
        if self.refused_in_a_row > self.burst {
            return Verdict::Close(CLOSE_POLICY_VIOLATION, "request rate limit exceeded");
        }
        Verdict::Refuse(RpcError::new(
            codes::LIMIT,
            format!(
                "Limit: at most {} requests a second; this one was not carried out",
                self.rate
            ),
        ))
    }

    /// A `candidate` request: within the session's allowance, or refused.
    pub fn on_candidate(&mut self) -> Result<(), RpcError> {
        if self.candidates >= self.max_candidates {
            counters::inc(Counter::Candidates);
            return Err(RpcError::new(
                codes::LIMIT,
                format!("Limit: at most {} ICE candidates a session", self.max_candidates),
            ));
        }
        self.candidates += 1;
        Ok(())
    }

    /// When the session's time is up (`http.max_session_length`), if it has a limit.
    pub fn ends_at(&self) -> Option<Instant> {
        self.ends_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits() -> SessionLimits {
        SessionLimits {
            max_sessions: 100,
            max_sessions_per_ip: 8,
            max_session_length: Some(Duration::from_secs(60)),
            requests_per_second: 10.0,
            request_burst: 5,
            max_candidates: 3,
        }
    }

    #[test]
    fn a_burst_is_served_then_refused_then_the_session_closed() {
        let t0 = Instant::now();
        let mut g = SessionGuard::new(&limits(), t0);
        for _ in 0..5 {
            assert_eq!(g.on_request(t0), Verdict::Serve);
        }
        for _ in 0..5 {
            assert!(matches!(g.on_request(t0), Verdict::Refuse(e) if e.code == codes::LIMIT));
        }
        assert_eq!(
            g.on_request(t0),
            Verdict::Close(CLOSE_POLICY_VIOLATION, "request rate limit exceeded")
        );
    }

    #[test]
    fn a_session_that_slows_down_is_served_again_and_forgiven() {
        let t0 = Instant::now();
        let mut g = SessionGuard::new(&limits(), t0);
        for _ in 0..8 {
            g.on_request(t0); // 5 served, 3 refused
        }
        let later = t0 + Duration::from_millis(200); // two tokens back
        assert_eq!(g.on_request(later), Verdict::Serve);
        assert_eq!(g.on_request(later), Verdict::Serve);
        // the count of refusals in a row started over
        for _ in 0..5 {
            assert!(matches!(g.on_request(later), Verdict::Refuse(_)));
        }
        assert!(matches!(g.on_request(later), Verdict::Close(..)));
    }

    #[test]
    fn candidates_are_capped_and_the_length_is_known() {
        let t0 = Instant::now();
        let mut g = SessionGuard::new(&limits(), t0);
        for _ in 0..3 {
            g.on_candidate().unwrap();
        }
        assert_eq!(g.on_candidate().unwrap_err().code, codes::LIMIT);
        assert_eq!(g.ends_at(), Some(t0 + Duration::from_secs(60)));
    }
}
