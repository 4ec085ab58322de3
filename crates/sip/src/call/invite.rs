//! Our INVITE, as caller: provisional responses (early media, the early dialog,
//! PRACK for reliable ones), challenges and 422 answered by sending it again, CANCEL
//! (waiting for a provisional response first), the answer and its ACK, strays from
//! forks, and the final response that ends it.

use super::*;

impl Call {
    pub(super) fn request_cancel(&mut self, now: Instant, config: &UaConfig) {
        if self.uac.cancel != Cancel::No {
            return;
        }
        if self.uac.provisional {
            self.send_cancel(now, config);
        } else {
            self.uac.cancel = Cancel::Wanted;
        }
        self.phase = Phase::Closing;
    }

    pub(super) fn send_cancel(&mut self, now: Instant, config: &UaConfig) {
        let mut cancel = Request::new(Method::Cancel, self.invite.uri.clone());
        if let Some(via) = self.invite.headers.values("Via").first() {
            cancel.headers.push("Via", *via);
        }
        cancel.headers.push("Max-Forwards", "70");
        for name in ["From", "To", "Call-ID"] {
            if let Some(v) = self.invite.headers.get(name) {
                cancel.headers.push(name, v);
            }
        }
        if let Ok(cseq) = self.invite.headers.cseq() {
            cancel.headers.push("CSeq", format!("{} CANCEL", cseq.seq));
        }
        for r in self.invite.headers.get_all("Route") {
            cancel.headers.push("Route", r);
        }
        cancel.headers.push("User-Agent", config.user_agent.clone());
        self.uac.cancel = Cancel::Sent;
        self.timer = Some((now + CANCEL_GIVE_UP, Timer::CancelGiveUp));
        self.send(cancel, config.next_hop());
    }

    pub(super) fn on_invite_response(
        &mut self,
        now: Instant,
        key: &ClientKey,
        resp: &Response,
        config: &UaConfig,
        rng: &mut fastrand::Rng,
    ) {
        if self.uac.client.as_ref() != Some(key) {
            // a response for an INVITE we already replaced (after a challenge), or a
            // 2xx of an earlier re-INVITE sent again (our ACK got lost)
            if resp.is_success() && !self.ack_again(resp, config, rng) {
                self.ack_and_bye_stray(resp, config, rng);
            }
            return;
        }
        match resp.status {
            100..=199 => {
                self.uac.provisional = true;
                if self.uac.cancel == Cancel::Wanted {
                    self.send_cancel(now, config);
                }
                if self.early.is_none() && resp.status > 100 {
                    self.early = Dialog::for_uac(&self.invite, resp).ok();
                }
                if resp.status > 100 && resp.headers.lists("Require", "100rel") {
                    let Some(rseq) = resp
                        .headers
                        .get("RSeq")
                        .and_then(|v| v.trim().parse::<u32>().ok())
                    else {
                        return;
                    };
                    if self.uac.last_rseq.is_some_and(|last| rseq <= last) {
                        // a retransmission: PRACKed already, nothing new in it
                        return;
                    }
                    self.uac.last_rseq = Some(rseq);
                    self.send_prack(rseq, config, rng);
                }
                if resp.status == 100 || !matches!(self.phase, Phase::Inviting) {
                    return;
                }
                if self.uac.is_new_sdp(&resp.body) {
                    self.uac.early_sdp_seen = Some(resp.body.clone());
                    self.out.events.push(CallEvent::RemoteSdp {
                        sdp: resp.body.clone(),
                        early: true,
                    });
                    self.set_status(
                        CallState::EarlyMedia,
                        Some(resp.status),
                        Some(resp.reason.clone()),
                    );
                } else if self.visible == Some(CallState::Dialing) {
                    self.set_status(CallState::Ringing, Some(resp.status), Some(resp.reason.clone()));
                }
            }
            200..=299 => self.on_invite_success(now, resp, config, rng),
            422 if matches!(self.phase, Phase::Inviting) && self.uac.too_small < MAX_CHALLENGES => {
                // Session Interval Too Small: ask again with at least its Min-SE
                self.uac.too_small += 1;
                match session_timer::min_se(resp) {
                    Some(min) => self.resend_invite(config, rng, |invite| {
                        invite.headers.set("Session-Expires", min.to_string());
                        invite.headers.set("Min-SE", min.to_string());
                    }),
                    None => self.finish_invite(422, resp.reason.clone()),
                }
            }
            401 | 407 if matches!(self.phase, Phase::Inviting) && self.uac.challenges < MAX_CHALLENGES => {
                self.uac.challenges += 1;
                let header = if resp.status == 401 {
                    "WWW-Authenticate"
                } else {
                    "Proxy-Authenticate"
                };
                match Challenge::pick(resp.headers.get_all(header)) {
                    Ok(ch) => self.reinvite_with_credentials(&ch, resp.status == 407, config, rng),
                    Err(e) => self.finish_invite(resp.status, e.to_string()),
                }
            }
            code => {
                self.finish_invite(code, resp.reason.clone());
            }
        }
    }

    pub(super) fn on_invite_success(
        &mut self,
        now: Instant,
        resp: &Response,
        config: &UaConfig,
        rng: &mut fastrand::Rng,
    ) {
        let tag = resp.headers.to().ok().and_then(|t| t.tag().map(str::to_owned));
        let _ = tag;
        if self.dialog.is_some() {
            // retransmitted 2xx (our ACK got lost), or a 2xx from another fork
            if !self.ack_again(resp, config, rng) {
                self.ack_and_bye_stray(resp, config, rng);
            }
            return;
        }
        let Ok(mut dialog) = Dialog::for_uac(&self.invite, resp) else {
            // a 2xx we cannot build a dialog from: nothing sane to do but fail
            self.finish_invite(500, "unusable 2xx response".into());
            return;
        };
        let seq = self.invite.headers.cseq().map(|c| c.seq).unwrap_or(1);
        if let Some(early) = &self.early {
            // PRACKs and UPDATEs already used CSeq numbers in the early dialog
            dialog.local_seq = dialog.local_seq.max(early.local_seq);
        }
        let (ack, target) = dialog.request(Method::Ack, Some(seq), config, rng);
        self.remember_ack(seq, ack.clone(), target);
        self.out.requests.push((ack, target));
        self.dialog = Some(dialog);
        if self.uac.cancel == Cancel::Wanted {
            self.uac.cancel = Cancel::Sent;
        }
        if matches!(self.phase, Phase::Closing) {
            // answered after we gave up (CANCEL race, no-answer timeout): end it
            self.send_bye(config, rng);
            return;
        }
        self.phase = Phase::Confirmed;
        self.timer = None;
        self.early = None;
        self.peer_allows_update = resp.headers.lists("Allow", "UPDATE");
        if let Some(timer) = &config.session_timer {
            // never shorter than we accept (a far end asking 1 s would have us refresh
            // twice a second)
            self.refresh =
                session_timer::uac_agreed(resp).map(|s| SessionClock::new(s.at_least(timer.min_se), now));
        }
        // the same answer as in the 18x is no news (and an UPDATE may have changed the
        // media since)
        if self.uac.is_new_sdp(&resp.body) {
            self.out.events.push(CallEvent::RemoteSdp {
                sdp: resp.body.clone(),
                early: false,
            });
        }
        self.set_status(CallState::InCall, Some(resp.status), Some(resp.reason.clone()));
    }

    /// A 2xx from a second fork (or for a replaced INVITE): ACK it and hang it up.
    pub(super) fn ack_and_bye_stray(&mut self, resp: &Response, config: &UaConfig, rng: &mut fastrand::Rng) {
        let Ok(mut stray) = Dialog::for_uac(&self.invite, resp) else {
            return;
        };
        let seq = resp.headers.cseq().map(|c| c.seq).unwrap_or(1);
        let (ack, target) = stray.request(Method::Ack, Some(seq), config, rng);
        self.out.requests.push((ack, target));
        let (bye, target) = stray.request(Method::Bye, None, config, rng);
        self.send(bye, target);
    }

    pub(super) fn reinvite_with_credentials(
        &mut self,
        ch: &Challenge,
        proxy: bool,
        config: &UaConfig,
        rng: &mut fastrand::Rng,
    ) {
        self.auth.nc += 1;
        let creds = Credentials {
            username: self.account.auth_user.clone(),
            password: self.account.password.clone(),
        };
        let auth = Authorization::answer(
            ch,
            &creds,
            "INVITE",
            &self.invite.uri.to_string(),
            &random_token(rng, 16),
            self.auth.nc,
        );
        let name = if proxy {
            "Proxy-Authorization"
        } else {
            "Authorization"
        };
        self.resend_invite(config, rng, |invite| {
            invite.headers.remove("Authorization");
            invite.headers.remove("Proxy-Authorization");
            invite.headers.push(name, auth.to_string());
        });
    }

    /// Sends our INVITE again after a 401/407/422: a new branch and the next CSeq, the
    /// same Call-ID and tags (RFC 3261 §22.2), changed by `edit`.
    pub(super) fn resend_invite(
        &mut self,
        config: &UaConfig,
        rng: &mut fastrand::Rng,
        edit: impl FnOnce(&mut Request),
    ) {
        if matches!(self.phase, Phase::Closing) {
            return;
        }
        let mut invite = self.invite.clone();
        invite.headers.remove("Via");
        let fresh = config.new_request(Method::Invite, invite.uri.clone(), rng);
        if let Some(via) = fresh.headers.get("Via") {
            invite.headers.push_front("Via", via);
        }
        let seq = invite.headers.cseq().map(|c| c.seq).unwrap_or(1).wrapping_add(1);
        invite.headers.set("CSeq", format!("{seq} INVITE"));
        edit(&mut invite);
        // a new transaction: nothing heard from it yet (no CANCEL before its 1xx)
        self.uac.provisional = false;
        self.uac.early_sdp_seen = None;
        self.uac.last_rseq = None;
        self.early = None;
        self.invite = invite.clone();
        self.uac.client = None;
        self.send(invite, config.next_hop());
    }

    /// The INVITE ended with a final response and no dialog: report why.
    pub(super) fn finish_invite(&mut self, code: u16, reason: String) {
        let state = match code {
            486 | 600 => CallState::Busy,
            603 | 606 | 403 => CallState::Rejected,
            487 => CallState::Cancelled,
            408 | 480 => CallState::NoAnswer,
            _ => CallState::Failed,
        };
        self.finish_invite_as(state, code, reason);
    }

    pub(super) fn finish_invite_as(&mut self, state: CallState, code: u16, reason: String) {
        self.timer = None;
        let cancel_was_wanted = self.uac.cancel == Cancel::Wanted;
        if cancel_was_wanted {
            // it ended before any provisional response: nothing left to cancel
            self.uac.cancel = Cancel::Sent;
        }
        let was_closing = matches!(self.phase, Phase::Closing);
        self.phase = Phase::Closing;
        if was_closing || cancel_was_wanted || self.uac.cancel != Cancel::No {
            // already reported (cancelled, no answer)
            return;
        }
        self.set_status(state, Some(code), Some(reason));
    }

    /// PRACK (RFC 3262) for the reliable provisional response `rseq`, in the early dialog.
    pub(super) fn send_prack(&mut self, rseq: u32, config: &UaConfig, rng: &mut fastrand::Rng) {
        let invite_seq = self.invite.headers.cseq().map(|c| c.seq).unwrap_or(1);
        if !self.room_for_more() {
            // the far end sends reliable 18x faster than it answers our PRACKs
            return;
        }
        let Some(early) = self.early.as_mut() else { return };
        let (mut prack, target) = early.request(Method::Prack, None, config, rng);
        prack.headers.push("RAck", format!("{rseq} {invite_seq} INVITE"));
        prack.headers.push("User-Agent", config.user_agent.clone());
        self.send(prack, target);
    }
}
