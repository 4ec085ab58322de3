//! Session timers at the call (RFC 4028; the arithmetic is `crate::session_timer`):
//! agreeing as UAS, asking in our requests, refreshing when we are the refresher, and
//! ending a session nobody refreshed.

use super::*;

/// The agreed session timer and when it next fires: our refresh is due, or the far
/// end's is overdue.
#[derive(Debug, Clone, Copy)]
pub(super) struct SessionClock {
    pub(super) session: Session,
    pub(super) at: Instant,
    /// Our refresh is out (the next firing means the session expired).
    pub(super) refresh_sent: bool,
}

impl SessionClock {
    /// Agreed (or refreshed) at `now`.
    pub(super) fn new(session: Session, now: Instant) -> SessionClock {
        SessionClock {
            session,
            at: session.deadline(now),
            refresh_sent: false,
        }
    }
}

impl Call {
    /// As the UAS of `req` (their INVITE or refresh): agree to its session timer in
    /// `ok` and arm ours. A refresh without Session-Expires turns the timer off.
    pub(super) fn agree_as_uas(&mut self, now: Instant, req: &Request, ok: &mut Response, config: &UaConfig) {
        let Some(timer) = &config.session_timer else {
            return;
        };
        match session_timer::uas_decide(req, timer) {
            UasDecision::Agreed { session, refresher } => {
                ok.headers.push("Session-Expires", session.header(refresher));
                if refresher == Refresher::Uac {
                    ok.headers.push("Require", "timer");
                }
                self.refresh = Some(SessionClock::new(session, now));
            }
            // a 422 is answered before any of this; below our minimum here means a
            // refresh that shrank it: keep the interval agreed, refreshed now
            UasDecision::TooSmall { .. } => {
                if let Some(clock) = self.refresh {
                    self.refresh = Some(SessionClock::new(clock.session, now));
                }
            }
            UasDecision::Off => self.refresh = None,
        }
    }

    /// Our request (re-INVITE, UPDATE) refreshes the session when there is a timer.
    pub(super) fn ask_session_timer(&self, req: &mut Request, config: &UaConfig) {
        let (Some(timer), Some(SessionClock { session, .. })) = (&config.session_timer, &self.refresh) else {
            return;
        };
        let refresher = if session.we_refresh {
            Refresher::Uac
        } else {
            Refresher::Uas
        };
        req.headers.push("Supported", "timer");
        req.headers.push("Session-Expires", session.header(refresher));
        req.headers.push("Min-SE", timer.min_se.to_string());
    }

    /// A 2xx to our re-INVITE or UPDATE: what it agreed, from now.
    pub(super) fn on_refresh_answered(&mut self, now: Instant, resp: &Response, config: &UaConfig) {
        if self.refresh.is_none() {
            return;
        }
        let floor = config.session_timer.map_or(1, |t| t.min_se);
        self.refresh = session_timer::uac_agreed(resp).map(|s| SessionClock::new(s.at_least(floor), now));
    }

    /// The session timer fired: refresh it, or end a session the far end let expire.
    pub(super) fn on_session_timer(&mut self, now: Instant, config: &UaConfig, rng: &mut fastrand::Rng) {
        let Some(clock) = self.refresh else { return };
        let later = |at: Instant| Some(SessionClock { at, ..clock });
        match self.phase {
            Phase::Confirmed => {}
            Phase::Answered => {
                // no request may go before the ACK
                self.refresh = later(now + Duration::from_secs(1));
                return;
            }
            _ => {
                self.refresh = None;
                return;
            }
        }
        let session = clock.session;
        if !session.we_refresh || clock.refresh_sent {
            self.refresh = None;
            self.send_bye(config, rng);
            let why = if session.we_refresh {
                "session expired: our refresh was not answered"
            } else {
                "session expired: the far end did not refresh it"
            };
            self.set_status(CallState::Completed, Some(408), Some(why.into()));
            return;
        }
        if self.reinvite_in_flight() || self.reinvite_waiting() || self.offers.theirs.is_some() {
            // an offer is being exchanged: it refreshes the session when it succeeds
            self.refresh = later(now + Duration::from_secs(1));
            return;
        }
        // if this refresh is not answered in time, the session is over
        let give_up = Session {
            we_refresh: false,
            ..session
        }
        .deadline(now - Duration::from_secs(u64::from(session.interval) / 2));
        self.refresh = Some(SessionClock {
            session,
            at: give_up.max(now + Duration::from_secs(1)),
            refresh_sent: true,
        });
        if self.peer_allows_update {
            let contact = self.contact_uri(config);
            if let Some(d) = self.dialog.as_mut() {
                let (mut req, target) = d.request(Method::Update, None, config, rng);
                req.headers.push("Contact", format!("<{contact}>"));
                self.ask_session_timer(&mut req, config);
                req.headers.push("User-Agent", config.user_agent.clone());
                self.send(req, target);
            }
        } else {
            self.offers.glare_retries = 0;
            self.send_reinvite(now, config, rng, None);
        }
    }
}
