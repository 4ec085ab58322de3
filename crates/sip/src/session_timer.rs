//! Session timers (RFC 4028): how long a call lives without a refresh, and who
//! refreshes it. Asterisk and FreeSWITCH turn them on by default; a gateway that
//! ignores them has its calls cut after the interval, and one that neither refreshes
//! nor watches keeps calls whose far end is long gone.
//!
//! Per transaction (an INVITE, re-INVITE or UPDATE) the `refresher` parameter names
//! its UAC or its UAS; this module turns that into "we refresh" or "they do" and says
//! when the next refresh is due or the session has expired. Pure arithmetic on
//! headers and instants; `call` applies it.

use std::time::{Duration, Instant};

use crate::message::{Request, Response};

/// What we ask for and accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimerConfig {
    /// The interval we request, seconds (RFC 4028 recommends 1800).
    pub expires: u32,
    /// The shortest interval we accept, seconds (at least 90 by the RFC; lower only
    /// for tests).
    pub min_se: u32,
}

impl Default for SessionTimerConfig {
    fn default() -> Self {
        SessionTimerConfig {
            expires: 1800,
            min_se: 90,
        }
    }
}

/// Which side of a transaction refreshes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresher {
    Uac,
    Uas,
}

impl Refresher {
    fn as_str(self) -> &'static str {
        match self {
            Refresher::Uac => "uac",
            Refresher::Uas => "uas",
        }
    }
}

/// A session with a timer: its interval and whether we refresh it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    pub interval: u32,
    pub we_refresh: bool,
}

impl Session {
    /// When, counted from the last refresh, we must refresh (half the interval), or
    /// give up on a far end that did not (the interval less a third, at most 32 s).
    pub fn deadline(&self, refreshed_at: Instant) -> Instant {
        let interval = Duration::from_secs(u64::from(self.interval));
        if self.we_refresh {
            refreshed_at + interval / 2
        } else {
            refreshed_at + interval - (interval / 3).min(Duration::from_secs(32))
        }
    }

    /// Never shorter than `floor` seconds (a far end asking for 1 s would have us
    /// refresh twice a second).
    pub fn at_least(self, floor: u32) -> Session {
        Session {
            interval: self.interval.max(floor),
            ..self
        }
    }

    /// The header value for a request or response in which `refresher` refreshes.
    pub fn header(&self, refresher: Refresher) -> String {
        format!("{};refresher={}", self.interval, refresher.as_str())
    }
}

/// `Session-Expires` (or its compact form `x`): the interval and the refresher, if named.
pub fn session_expires(headers: &crate::message::Headers) -> Option<(u32, Option<Refresher>)> {
    let value = headers.get("Session-Expires")?;
    let mut parts = value.split(';');
    let interval = parts.next()?.trim().parse::<u32>().ok().filter(|&i| i > 0)?;
    let refresher = parts.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        if !k.trim().eq_ignore_ascii_case("refresher") {
            return None;
        }
        match v.trim().to_ascii_lowercase().as_str() {
            "uac" => Some(Refresher::Uac),
            "uas" => Some(Refresher::Uas),
            _ => None,
        }
    });
    Some((interval, refresher))
}

/// Whether a message lists `timer` in Supported (or Require).
pub fn supports_timer(headers: &crate::message::Headers) -> bool {
    headers.lists("Supported", "timer") || headers.lists("Require", "timer")
}

/// What a UAS does with a request's session timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UasDecision {
    /// No session timer asked for.
    Off,
    /// The interval is below our minimum: 422 with `Min-SE: min_se`.
    TooSmall { min_se: u32 },
    /// Agreed: answer with `Session-Expires: interval;refresher=…`.
    Agreed { session: Session, refresher: Refresher },
}

/// As the UAS of `req` (an INVITE, re-INVITE or UPDATE).
pub fn uas_decide(req: &Request, config: &SessionTimerConfig) -> UasDecision {
    let Some((interval, refresher)) = session_expires(&req.headers) else {
        return UasDecision::Off;
    };
    if interval < config.min_se {
        return UasDecision::TooSmall {
            min_se: config.min_se,
        };
    }
    // the UAC names the refresher, or lets us: it then refreshes if it can
    let refresher = refresher.unwrap_or(if supports_timer(&req.headers) {
        Refresher::Uac
    } else {
        Refresher::Uas
    });
    UasDecision::Agreed {
        session: Session {
            interval,
            we_refresh: refresher == Refresher::Uas,
        },
        refresher,
    }
}

/// As the UAC of a transaction: what its 2xx agreed (`None`: no session timer).
pub fn uac_agreed(resp: &Response) -> Option<Session> {
    let (interval, refresher) = session_expires(&resp.headers)?;
    Some(Session {
        interval,
        // a 2xx without a refresher leaves it to us (RFC 4028 §7.2)
        we_refresh: refresher != Some(Refresher::Uas),
    })
}

/// The `Min-SE` of a 422 (the interval to ask for next).
pub fn min_se(resp: &Response) -> Option<u32> {
    resp.headers.get("Min-SE")?.split(';').next()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Method, Uri};

    fn request(headers: &[(&str, &str)]) -> Request {
        let mut r = Request::new(Method::Invite, Uri::sip(Some("880"), "127.0.0.1", None));
        for (n, v) in headers {
            r.headers.push(*n, *v);
        }
        r
    }

    #[test]
    fn reads_session_expires_and_its_refresher() {
        let r = request(&[("Session-Expires", "1800;refresher=uas")]);
        assert_eq!(session_expires(&r.headers), Some((1800, Some(Refresher::Uas))));
        let r = request(&[("x", "90")]);
        assert_eq!(session_expires(&r.headers), Some((90, None)));
        assert_eq!(
            session_expires(&request(&[("Session-Expires", "soon")]).headers),
            None
        );
        assert_eq!(
            session_expires(&request(&[("Session-Expires", "0")]).headers),
            None
        );
    }

    #[test]
    fn the_uas_refuses_short_intervals_and_lets_a_capable_uac_refresh() {
        let config = SessionTimerConfig::default();
        assert_eq!(uas_decide(&request(&[]), &config), UasDecision::Off);
        assert_eq!(
            uas_decide(&request(&[("Session-Expires", "60")]), &config),
            UasDecision::TooSmall { min_se: 90 }
        );
        let d = uas_decide(
            &request(&[("Session-Expires", "1800"), ("Supported", "100rel, timer")]),
            &config,
        );
        assert_eq!(
            d,
            UasDecision::Agreed {
                session: Session {
                    interval: 1800,
                    we_refresh: false
                },
                refresher: Refresher::Uac
            }
        );
        let d = uas_decide(&request(&[("Session-Expires", "1800")]), &config);
        assert!(matches!(
            d,
            UasDecision::Agreed {
                refresher: Refresher::Uas,
                session: Session { we_refresh: true, .. }
            }
        ));
    }

    #[test]
    fn refresh_at_half_the_interval_give_up_a_third_before_its_end() {
        let t0 = Instant::now();
        let ours = Session {
            interval: 1800,
            we_refresh: true,
        };
        assert_eq!(ours.deadline(t0), t0 + Duration::from_secs(900));
        let theirs = Session {
            interval: 1800,
            we_refresh: false,
        };
        assert_eq!(theirs.deadline(t0), t0 + Duration::from_secs(1768));
        let short = Session {
            interval: 6,
            we_refresh: false,
        };
        assert_eq!(short.deadline(t0), t0 + Duration::from_secs(4));
        assert_eq!(ours.header(Refresher::Uac), "1800;refresher=uac");
    }
}
