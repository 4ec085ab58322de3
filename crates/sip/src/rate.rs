//! A token bucket that takes the time from its caller: how often something a peer can
//! provoke (a stateless answer, a log line, a browser request) may happen. Hand-written
//! because the crates of the field (governor) read their own clock, and a sans-IO core
//! must not.

use std::time::{Duration, Instant};

/// `rate` events a second on average, bursts of up to `burst`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket. A `rate` of 0 allows nothing beyond the first `burst`.
    pub fn new(rate: f64, burst: f64) -> TokenBucket {
        let burst = burst.max(1.0);
        TokenBucket {
            rate: rate.max(0.0),
            burst,
            tokens: burst,
            last: None,
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn refill(&mut self, now: Instant) {
        if let Some(last) = self.last {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        }
        self.last = Some(self.last.map_or(now, |l| l.max(now)));
    }

    /// When the next token will be there (now, if there is one).
    pub fn next_token_at(&mut self, now: Instant) -> Instant {
        self.refill(now);
        if self.tokens >= 1.0 || self.rate == 0.0 {
            return now;
        }
        now + Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 5.0);
        let taken = (0..100).filter(|_| b.try_take(t0)).count();
        assert_eq!(taken, 5, "the burst");
        // one second later: ten more
        let t1 = t0 + Duration::from_secs(1);
        let taken = (0..100).filter(|_| b.try_take(t1)).count();
        assert_eq!(taken, 5, "refilled to the burst, not beyond");
        let mut allowed = 0;
        for ms in 0..2000u64 {
            if b.try_take(t1 + Duration::from_millis(ms)) {
                allowed += 1;
            }
        }
        assert!((19..=21).contains(&allowed), "{allowed} in 2 s at 10/s");
    }

    #[test]
    fn time_going_backwards_gives_nothing() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut b = TokenBucket::new(1.0, 1.0);
        assert!(b.try_take(t0));
        assert!(!b.try_take(t0 - Duration::from_secs(5)));
        assert!(!b.try_take(t0));
        assert!(b.try_take(t0 + Duration::from_secs(1)));
    }

    #[test]
    fn says_when_the_next_token_comes() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(4.0, 1.0);
        assert_eq!(b.next_token_at(t0), t0);
        assert!(b.try_take(t0));
        let next = b.next_token_at(t0);
        assert_eq!(next, t0 + Duration::from_millis(250));
        assert!(b.try_take(next));
    }
}
