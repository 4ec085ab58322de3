//! Offer/answer after the first: our re-INVITEs (hold, resume, refresh) with glare
//! handled (RFC 3261 §14.1), and the far end's re-INVITEs and UPDATEs (RFC 3311),
//! which the owner answers with [`Call::answer_offer`].

use super::*;

impl Call {
    /// Sends a new offer in the dialog (hold, resume). The answer arrives as
    /// [`CallEvent::RemoteSdp`], a refusal as [`CallEvent::ReinviteFailed`].
    pub fn reinvite(
        &mut self,
        now: Instant,
        sdp: Vec<u8>,
        config: &UaConfig,
        rng: &mut fastrand::Rng,
    ) -> Result<(), CallError> {
        if !matches!(self.phase, Phase::Confirmed) {
            return Err(CallError::WrongState("the call is not established"));
        }
        if self.reinvite_in_flight() || self.reinvite_waiting() || self.offers.theirs.is_some() {
            return Err(CallError::WrongState("another offer is in progress"));
        }
        let previous = std::mem::replace(&mut self.local_sdp, sdp);
        self.offers.glare_retries = 0;
        if !self.send_reinvite(now, config, rng, None) {
            self.local_sdp = previous;
            return Err(CallError::WrongState("the call is not established"));
        }
        self.offers.before = Some(previous);
        Ok(())
    }

    pub(super) fn reinvite_in_flight(&self) -> bool {
        self.offers.ours.is_some() && !self.offers.ours_answered
    }

    /// Waiting to send our re-INVITE again after glare.
    pub(super) fn reinvite_waiting(&self) -> bool {
        matches!(self.timer, Some((_, Timer::ReinviteRetry)))
    }

    /// RFC 3261 §14.1: 2.1 to 4 s when we chose the Call-ID (we placed the call), up
    /// to 2 s otherwise, in 10 ms steps; so the two sides do not collide again.
    pub(super) fn glare_backoff(&self, rng: &mut fastrand::Rng) -> Duration {
        let steps = if self.outgoing {
            rng.u64(210..=400)
        } else {
            rng.u64(0..=200)
        };
        Duration::from_millis(steps * 10)
    }

    /// Sends our re-INVITE (again) with the current SDP: a new CSeq and branch, with our
    /// answer to `challenge` when there is one. False when there is no dialog or the
    /// challenge cannot be answered.
    pub(super) fn send_reinvite(
        &mut self,
        now: Instant,
        config: &UaConfig,
        rng: &mut fastrand::Rng,
        challenge: Option<&Response>,
    ) -> bool {
        let contact = self.contact_uri(config);
        let Some(d) = self.dialog.as_mut() else {
            return false;
        };
        let (mut req, target) = d.request(Method::Invite, None, config, rng);
        let seq = d.local_seq;
        req.headers.push("Contact", format!("<{contact}>"));
        req.headers.push("Allow", ALLOW);
        self.ask_session_timer(&mut req, config);
        req.headers.push("User-Agent", config.user_agent.clone());
        req.headers.push("Content-Type", "application/sdp");
        req.body = self.local_sdp.clone();
        if let Some(resp) = challenge
            && !self.authorize(&mut req, resp, rng)
        {
            return false;
        }
        self.offers.ours = Some((None, seq));
        self.offers.ours_answered = false;
        self.offers.give_up = Some(now + REINVITE_GIVE_UP);
        self.send(req, target);
        true
    }

    /// Our re-INVITE failed (refused, timed out, never answered): the previous SDP is
    /// ours again, and the owner hears it.
    pub(super) fn fail_reinvite(&mut self, code: u16) {
        self.offers.ours_answered = true;
        self.offers.give_up = None;
        if let Some(before) = self.offers.before.take() {
            self.local_sdp = before;
        }
        self.out.events.push(CallEvent::ReinviteFailed { code });
    }

    /// Our re-INVITE sat unanswered past [`REINVITE_GIVE_UP`] (an INVITE in Proceeding
    /// has no timer of its own): stop waiting for it.
    pub(super) fn give_up_reinvite(&mut self) {
        self.offers.give_up = None;
        if !self.reinvite_in_flight() {
            return;
        }
        if let Some((Some(key), _)) = &self.offers.ours {
            let key = key.clone();
            self.outstanding.retain(|k| *k != key);
        }
        self.fail_reinvite(408);
        self.maybe_end();
    }

    /// Keeps our ACK for the 2xx to INVITE `seq` (the last few).
    pub(super) fn remember_ack(&mut self, seq: u32, ack: Request, target: Target) {
        if self.offers.acks.len() >= 4 {
            self.offers.acks.pop_front();
        }
        self.offers.acks.push_back((seq, ack, target));
    }

    /// A 2xx in our dialog sent again (our ACK was lost): ACK it again, with its CSeq.
    /// False when it is not from our dialog's far end (another fork).
    pub(super) fn ack_again(&mut self, resp: &Response, config: &UaConfig, rng: &mut fastrand::Rng) -> bool {
        let tag = resp.headers.to().ok().and_then(|t| t.tag().map(str::to_owned));
        let Some(d) = self.dialog.as_mut() else {
            return false;
        };
        if tag.as_deref() != Some(d.id.remote_tag.as_str()) {
            return false;
        }
        let Ok(seq) = resp.headers.cseq().map(|c| c.seq) else {
            return true;
        };
        let ack = match self.offers.acks.iter().find(|(s, _, _)| *s == seq) {
            Some((_, ack, target)) => (ack.clone(), *target),
            None => d.request(Method::Ack, Some(seq), config, rng),
        };
        self.out.requests.push(ack);
        true
    }

    pub(super) fn on_reinvite_response(
        &mut self,
        now: Instant,
        resp: &Response,
        config: &UaConfig,
        rng: &mut fastrand::Rng,
    ) {
        let Some((_, seq)) = self.offers.ours else { return };
        match resp.status {
            491 if !self.offers.ours_answered && self.offers.glare_retries < MAX_GLARE_RETRIES => {
                // glare: both sides offered at once; try again after the back-off
                self.offers.ours_answered = true;
                self.offers.glare_retries += 1;
                self.timer = Some((now + self.glare_backoff(rng), Timer::ReinviteRetry));
            }
            401 | 407 if !self.offers.ours_answered && self.auth.answered < MAX_DIALOG_CHALLENGES => {
                self.offers.ours_answered = true;
                if !self.send_reinvite(now, config, rng, Some(resp)) {
                    self.fail_reinvite(resp.status);
                }
            }
            100..=199 => {}
            200..=299 => {
                if !self.offers.ours_answered {
                    self.offers.ours_answered = true;
                    self.offers.give_up = None;
                    self.on_refresh_answered(now, resp, config);
                    if let Some(d) = self.dialog.as_mut() {
                        let (ack, target) = d.request(Method::Ack, Some(seq), config, rng);
                        self.remember_ack(seq, ack, target);
                    }
                    if resp.body.is_empty() {
                        // an offer must be answered: without one, the change did not happen
                        // as far as we can tell
                        self.fail_reinvite(resp.status);
                    } else {
                        self.offers.before = None;
                        self.out.events.push(CallEvent::RemoteSdp {
                            sdp: resp.body.clone(),
                            early: false,
                        });
                    }
                }
                // (re-)ACK: retransmitted 2xx means our ACK was lost
                self.ack_again(resp, config, rng);
            }
            code => {
                if !self.offers.ours_answered {
                    self.fail_reinvite(code);
                }
            }
        }
    }

    pub(super) fn on_reinvite(&mut self, _now: Instant, key: ServerKey, req: &Request, config: &UaConfig) {
        let in_dialog = matches!(self.phase, Phase::Confirmed | Phase::Answered);
        if !in_dialog {
            let resp = self.plain_response(req, 481, "Call/Transaction Does Not Exist", config);
            self.out.responses.push((key, resp));
            return;
        }
        if self.offers.theirs.is_some() {
            let mut resp = self.plain_response(req, 500, "Server Internal Error", config);
            resp.headers.push("Retry-After", "1");
            self.out.responses.push((key, resp));
            return;
        }
        if self.reinvite_in_flight() {
            // glare: our offer is out; the far end tries again after its back-off
            let resp = self.plain_response(req, 491, "Request Pending", config);
            self.out.responses.push((key, resp));
            return;
        }
        if let Some(d) = self.dialog.as_mut()
            && !d.take_remote_request(req)
        {
            let resp = self.plain_response(req, 500, "Server Internal Error", config);
            self.out.responses.push((key, resp));
            return;
        }
        self.offers.theirs = Some((key, req.clone()));
        self.out.events.push(CallEvent::Offer {
            sdp: (!req.body.is_empty()).then(|| req.body.clone()),
        });
    }

    /// UPDATE (RFC 3311) from the far end, in the early dialog of our INVITE or in the
    /// confirmed one: a target refresh, and a new offer when it has a body.
    pub(super) fn on_update(&mut self, now: Instant, key: ServerKey, req: &Request, config: &UaConfig) {
        let refuse = if matches!(self.phase, Phase::Closing) {
            Some((481, "Call/Transaction Does Not Exist"))
        } else if self.offers.theirs.is_some()
            || (matches!(self.phase, Phase::Offered { .. }) && !req.body.is_empty())
        {
            // an offer of theirs is still unanswered (a re-INVITE's, or the ringing
            // INVITE's, answered only in our 200): RFC 3311 §5.2
            Some((500, "Server Internal Error"))
        } else if !req.body.is_empty() && (self.reinvite_in_flight() || self.awaiting_answer()) {
            // our offer is out: theirs crosses it (RFC 3311 §5.2)
            Some((491, "Request Pending"))
        } else {
            None
        };
        if let Some((code, reason)) = refuse {
            let mut resp = self.plain_response(req, code, reason, config);
            if code == 500 {
                resp.headers.push("Retry-After", "1");
            }
            self.out.responses.push((key, resp));
            return;
        }
        let confirmed = self.dialog.as_ref().is_some_and(|d| d.matches_request(req));
        let dialog = if confirmed {
            self.dialog.as_mut()
        } else {
            self.early.as_mut()
        };
        if let Some(d) = dialog
            && !d.take_remote_request(req)
        {
            let resp = self.plain_response(req, 500, "Server Internal Error", config);
            self.out.responses.push((key, resp));
            return;
        }
        if req.body.is_empty() {
            let mut ok = self.plain_response(req, 200, "OK", config);
            ok.headers
                .push("Contact", format!("<{}>", self.contact_uri(config)));
            self.agree_as_uas(now, req, &mut ok, config);
            self.out.responses.push((key, ok));
            return;
        }
        self.offers.theirs = Some((key, req.clone()));
        self.out.events.push(CallEvent::Offer {
            sdp: Some(req.body.clone()),
        });
    }

    /// Our INVITE's offer has no answer yet (none came in an 18x).
    pub(super) fn awaiting_answer(&self) -> bool {
        matches!(self.phase, Phase::Inviting) && self.uac.early_sdp_seen.is_none()
    }

    /// Answers the far end's re-INVITE with `Ok(sdp)`, or refuses it with a status
    /// (488 when the offer is unacceptable).
    pub fn answer_offer(
        &mut self,
        now: Instant,
        answer: Result<Vec<u8>, u16>,
        config: &UaConfig,
    ) -> Result<(), CallError> {
        let (key, req) = self
            .offers
            .theirs
            .take()
            .ok_or(CallError::WrongState("no offer to answer"))?;
        let resp = match answer {
            Ok(sdp) => {
                self.local_sdp = sdp;
                let mut ok = self.plain_response(&req, 200, "OK", config);
                ok.headers
                    .push("Contact", format!("<{}>", self.contact_uri(config)));
                ok.headers.push("Allow", ALLOW);
                ok.headers.push("Content-Type", "application/sdp");
                ok.body = self.local_sdp.clone();
                self.agree_as_uas(now, &req, &mut ok, config);
                ok
            }
            Err(code) => self.plain_response(&req, code, "Not Acceptable Here", config),
        };
        self.out.responses.push((key, resp));
        Ok(())
    }
}
