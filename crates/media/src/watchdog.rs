//! Media timeouts, as rtpengine and LiveKit have them: a call whose far end has sent no
//! RTP for `timeout` (longer while the call is on hold, when silence is normal), or whose
//! browser leg has sent nothing at all for as long, is dead and must be ended, or it
//! holds its ports, its account and the PBX's channel forever. Sans-IO: the driver tells
//! it when packets arrive and asks it when to wake.

use std::time::{Duration, Instant};

/// Which leg went silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Silent {
    /// No RTP from the far end for this long.
    FarEnd(Duration),
    /// Nothing from the browser's WebRTC leg (not even ICE checks) for this long.
    Browser(Duration),
}

impl Silent {
    /// Why the call ends, for the browser and the log.
    pub fn reason(self) -> String {
        match self {
            Silent::FarEnd(d) => format!("media timeout: no audio from the far end for {} s", d.as_secs()),
            Silent::Browser(d) => format!(
                "media timeout: the browser's media has been gone for {} s",
                d.as_secs()
            ),
        }
    }
}

/// Limits; `None` turns a check off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub active: Option<Duration>,
    /// While the call is on hold (either way).
    pub held: Option<Duration>,
}

/// One call's media liveness.
#[derive(Debug, Clone)]
pub struct Watchdog {
    timeouts: Timeouts,
    held: bool,
    last_far_end: Instant,
    last_browser: Instant,
    /// The browser's session is waiting for it to come back (resume): its leg's silence
    /// is expected and does not count; the session ends the call if it never returns.
    browser_away: bool,
    fired: bool,
}

impl Watchdog {
    /// The call's media starts at `now`; the browser leg last showed life at
    /// `browser_seen` (it outlives calls).
    pub fn new(now: Instant, browser_seen: Instant, timeouts: Timeouts) -> Watchdog {
        Watchdog {
            timeouts,
            held: false,
            last_far_end: now,
            last_browser: browser_seen.min(now),
            browser_away: false,
            fired: false,
        }
    }

    pub fn on_far_end(&mut self, now: Instant) {
        self.last_far_end = self.last_far_end.max(now);
    }

    pub fn on_browser(&mut self, now: Instant) {
        self.last_browser = self.last_browser.max(now);
    }

    /// The browser went away (its WebSocket dropped, the session waits for it) or came
    /// back at `now`: while away its leg's silence is not a timeout; once back, it counts
    /// from the return.
    pub fn set_browser_away(&mut self, now: Instant, away: bool) {
        if away != self.browser_away {
            self.browser_away = away;
            self.on_browser(now);
        }
    }

    /// The call went on or off hold at `now`: the far end's silence counts from here.
    pub fn set_held(&mut self, now: Instant, held: bool) {
        if held != self.held {
            self.held = held;
            self.on_far_end(now);
        }
    }

    fn limit(&self) -> Option<Duration> {
        if self.held {
            self.timeouts.held
        } else {
            self.timeouts.active
        }
    }

    /// When to call [`Watchdog::handle_timeout`] next (None: nothing to watch).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.fired {
            return None;
        }
        let limit = self.limit()?;
        let far_end = self.last_far_end + limit;
        Some(match self.browser_away {
            true => far_end,
            false => far_end.min(self.last_browser + limit),
        })
    }

    /// Whether a leg has gone silent past its limit (said once).
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Silent> {
        if self.fired {
            return None;
        }
        let limit = self.limit()?;
        let silent = if !self.browser_away && now >= self.last_browser + limit {
            Silent::Browser(limit)
        } else if now >= self.last_far_end + limit {
            Silent::FarEnd(limit)
        } else {
            return None;
        };
        self.fired = true;
        Some(silent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timeouts = Timeouts {
        active: Some(Duration::from_secs(30)),
        held: Some(Duration::from_secs(600)),
    };

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_silent_far_end_times_out_once() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(t0, t0, T);
        for s in 1..=20 {
            w.on_browser(t0 + secs(s));
        }
        w.on_far_end(t0 + secs(10));
        assert_eq!(w.poll_timeout(), Some(t0 + secs(40)));
        assert_eq!(w.handle_timeout(t0 + secs(39)), None);
        w.on_browser(t0 + secs(39));
        assert_eq!(w.handle_timeout(t0 + secs(40)), Some(Silent::FarEnd(secs(30))));
        assert_eq!(w.handle_timeout(t0 + secs(80)), None, "said once");
        assert_eq!(w.poll_timeout(), None);
        assert!(Silent::FarEnd(secs(30)).reason().contains("30 s"));
    }

    #[test]
    fn a_browser_leg_gone_times_out_even_if_the_far_end_talks() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(t0, t0 - secs(5), T);
        for s in 0..40 {
            w.on_far_end(t0 + secs(s));
        }
        assert_eq!(
            w.poll_timeout(),
            Some(t0 + secs(25)),
            "it was already quiet before the call"
        );
        assert_eq!(w.handle_timeout(t0 + secs(25)), Some(Silent::Browser(secs(30))));
    }

    #[test]
    fn hold_allows_a_longer_silence_counted_from_the_hold() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(t0, t0, T);
        w.set_held(t0 + secs(20), true);
        for s in 0..700 {
            w.on_browser(t0 + secs(s));
        }
        assert_eq!(w.handle_timeout(t0 + secs(100)), None);
        assert_eq!(w.handle_timeout(t0 + secs(620)), Some(Silent::FarEnd(secs(600))));
        // resuming restarts the count under the short limit
        let mut w = Watchdog::new(t0, t0, T);
        w.set_held(t0 + secs(20), true);
        w.set_held(t0 + secs(100), false);
        w.on_browser(t0 + secs(129));
        assert_eq!(w.handle_timeout(t0 + secs(129)), None);
        assert_eq!(w.poll_timeout(), Some(t0 + secs(130)));
    }

    #[test]
    fn a_browser_away_for_a_resume_is_not_a_timeout_until_it_is_back() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(t0, t0, T);
        w.set_browser_away(t0 + secs(10), true);
        for s in 0..100 {
            w.on_far_end(t0 + secs(s));
        }
        assert_eq!(
            w.poll_timeout(),
            Some(t0 + secs(129)),
            "only the far end is watched"
        );
        assert_eq!(w.handle_timeout(t0 + secs(99)), None, "away for 89 s");
        // back at 99 s: its silence counts from there
        w.set_browser_away(t0 + secs(99), false);
        assert_eq!(w.poll_timeout(), Some(t0 + secs(129)));
        assert_eq!(w.handle_timeout(t0 + secs(128)), None);
        w.on_far_end(t0 + secs(129));
        assert_eq!(w.handle_timeout(t0 + secs(129)), Some(Silent::Browser(secs(30))));
        // the far end going silent while the browser is away still ends the call
        let mut w = Watchdog::new(t0, t0, T);
        w.set_browser_away(t0, true);
        assert_eq!(w.handle_timeout(t0 + secs(30)), Some(Silent::FarEnd(secs(30))));
    }

    #[test]
    fn off_means_never() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(
            t0,
            t0,
            Timeouts {
                active: None,
                held: None,
            },
        );
        assert_eq!(w.poll_timeout(), None);
        assert_eq!(w.handle_timeout(t0 + secs(100_000)), None);
    }
}
