//! Transfer as the transferor (RFC 3515, RFC 5589 §6–7): a REFER in the dialog asks
//! the far end to call someone else (blind), or to call the far end of another of our
//! calls with `Replaces` naming that call's dialog (attended: the other side swaps our
//! call for the transferee's); its NOTIFYs (`Event: refer`, a `message/sipfrag`
//! body holding the status line of that new call) tell how it goes. Once the new call
//! is answered our call has done its job and ends with BYE. A refused REFER, a failed
//! new call, or no final word in time leaves the call as it was. A far end that hangs up
//! on us before its final NOTIFY has gone ahead with the transfer (a transferee keeps
//! the call when it cannot): reported as completed, without a code.

use super::*;

/// How a transfer we asked for is going.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferState {
    /// The far end took the REFER (or said 100 Trying about the new call).
    Trying,
    /// The transfer target is ringing (180/183).
    Ringing,
    /// The target answered: our call ends.
    Completed,
    /// The REFER was refused, or the new call failed, or nothing final came in time.
    Failed,
}

/// Our REFER in progress.
#[derive(Debug)]
pub(super) struct Transfer {
    /// The REFER's CSeq: its NOTIFYs say `Event: refer;id=CSEQ` (RFC 3515 §2.4.6).
    cseq: u32,
    /// The last state reported (none yet: nothing reported).
    reported: Option<TransferState>,
    /// When it counts as failed without a final NOTIFY (moved on by each progress report).
    pub(super) deadline: Instant,
}

/// How long a transfer may take beyond the target's ringing (the REFER, the NOTIFYs).
const TRANSFER_SLACK: Duration = Duration::from_secs(32);

impl Call {
    /// Asks the far end to call `number` (at our account's domain) instead of us: REFER.
    /// With `replaces` (a dialog of ours with `number`: `call-id;to-tag=…;from-tag=…`),
    /// the new call is to replace that one (attended transfer).
    pub fn refer(
        &mut self,
        now: Instant,
        number: &str,
        replaces: Option<&str>,
        config: &UaConfig,
        rng: &mut fastrand::Rng,
    ) -> Result<(), CallError> {
        if !matches!(self.phase, Phase::Confirmed) {
            return Err(CallError::WrongState("the call is not established"));
        }
        if self.transfer.is_some() {
            return Err(CallError::WrongState("a transfer is already under way"));
        }
        let user = escape_user(number).ok_or(CallError::BadNumber)?;
        let Some(d) = self.dialog.as_mut() else {
            return Err(CallError::WrongState("the call is not established"));
        };
        let target = Uri::sip(Some(&user), &self.account.domain, None);
        let us = Uri::sip(Some(&self.account.user), &self.account.domain, None);
        let (mut req, to) = d.request(Method::Refer, None, config, rng);
        let cseq = req.headers.cseq().map(|c| c.seq).unwrap_or_default();
        let replaces = replaces
            .map(|r| format!("?Replaces={}", super::referral::percent_encode(r)))
            .unwrap_or_default();
        req.headers.push("Refer-To", format!("<{target}{replaces}>"));
        req.headers.push("Referred-By", format!("<{us}>"));
        // a REFER creates (here: takes part in) a dialog usage: it must carry a Contact
        req.headers
            .push("Contact", format!("<{}>", self.contact_uri(config)));
        req.headers.push("User-Agent", config.user_agent.clone());
        self.send(req, to);
        self.transfer = Some(Transfer {
            cseq,
            reported: None,
            deadline: now + config.no_answer_timeout + TRANSFER_SLACK,
        });
        Ok(())
    }

    /// The final response to our REFER.
    pub(super) fn on_refer_response(&mut self, resp: &Response) {
        let resent = matches!(resp.status, 401 | 407)
            .then(|| {
                self.out
                    .requests
                    .iter()
                    .rev()
                    .find(|(r, _)| r.method == Method::Refer)
            })
            .flatten()
            .and_then(|(r, _)| r.headers.cseq().ok());
        if let Some(cseq) = resent {
            // answered with credentials: the next response decides, its NOTIFYs carry its CSeq
            if let Some(t) = self.transfer.as_mut() {
                t.cseq = cseq.seq;
            }
            return;
        }
        if resp.is_success() {
            // a NOTIFY may have overtaken the 202: never step back from what it said
            if self.transfer.as_ref().is_some_and(|t| t.reported.is_none()) {
                self.report_transfer(TransferState::Trying, None);
            }
        } else {
            self.end_transfer(TransferState::Failed, Some(resp.status));
        }
    }

    /// Our REFER timed out (no final response).
    pub(super) fn on_refer_timeout(&mut self) {
        self.end_transfer(TransferState::Failed, Some(408));
    }

    /// A NOTIFY in the dialog: the progress of the call our REFER asked for.
    pub(super) fn on_notify(
        &mut self,
        now: Instant,
        key: ServerKey,
        req: &Request,
        config: &UaConfig,
        rng: &mut fastrand::Rng,
    ) {
        let ours = self
            .transfer
            .as_ref()
            .is_some_and(|t| refer_event_of(req).is_some_and(|id| id.is_none_or(|id| id == t.cseq)));
        if !ours {
            let resp = self.plain_response(req, 481, "Subscription Does Not Exist", config);
            self.out.responses.push((key, resp));
            return;
        }
        let ok = self.plain_response(req, 200, "OK", config);
        self.out.responses.push((key, ok));
        let terminated = req
            .headers
            .get("Subscription-State")
            .is_some_and(|s| s.trim_start().to_ascii_lowercase().starts_with("terminated"));
        let status = sipfrag_status(&req.body);
        if let (Some(t), Some(100..=199)) = (self.transfer.as_mut(), status) {
            // the target still rings: give it its ring time again
            t.deadline = now + config.no_answer_timeout + TRANSFER_SLACK;
        }
        match status {
            Some(code @ 200..=299) => {
                self.end_transfer(TransferState::Completed, Some(code));
                // RFC 5589 §6.1: the transferor ends its call once the transfer worked
                if matches!(self.phase, Phase::Confirmed | Phase::Answered) {
                    self.send_bye(config, rng);
                    self.set_status(CallState::Completed, None, Some("transferred".into()));
                }
            }
            Some(code @ 300..) => self.end_transfer(TransferState::Failed, Some(code)),
            _ if terminated => self.end_transfer(TransferState::Failed, None),
            Some(code @ (180 | 183)) => self.report_transfer(TransferState::Ringing, Some(code)),
            Some(code) => self.report_transfer(TransferState::Trying, Some(code)),
            None => {}
        }
    }

    /// The far end hung up on us with our transfer under way: it went ahead with it.
    pub(super) fn transfer_left_by_far_end(&mut self) {
        self.end_transfer(TransferState::Completed, None);
    }

    /// No final word about the transfer in time.
    pub(super) fn on_transfer_timeout(&mut self, now: Instant) {
        if self.transfer.as_ref().is_some_and(|t| t.deadline <= now) {
            self.end_transfer(TransferState::Failed, None);
        }
    }

    /// Reports `state` unless it was the last one reported.
    fn report_transfer(&mut self, state: TransferState, code: Option<u16>) {
        let Some(t) = self.transfer.as_mut() else { return };
        if t.reported == Some(state) {
            return;
        }
        t.reported = Some(state);
        self.out.events.push(CallEvent::Transfer { state, code });
    }

    fn end_transfer(&mut self, state: TransferState, code: Option<u16>) {
        if self.transfer.take().is_some() {
            self.out.events.push(CallEvent::Transfer { state, code });
        }
    }
}

/// For a NOTIFY of the refer event package, `Some(id)` (the `id` parameter, the REFER's
/// CSeq, when given); None for any other event.
fn refer_event_of(req: &Request) -> Option<Option<u32>> {
    let event = req.headers.get("Event")?;
    let mut parts = event.split(';');
    if !parts.next()?.trim().eq_ignore_ascii_case("refer") {
        return None;
    }
    let id = parts.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        // an id that is no number matches no REFER of ours
        k.trim()
            .eq_ignore_ascii_case("id")
            .then(|| v.trim().parse::<u32>().unwrap_or(u32::MAX))
    });
    Some(id)
}

/// The status code of a `message/sipfrag` body's status line (`SIP/2.0 180 Ringing`).
fn sipfrag_status(body: &[u8]) -> Option<u16> {
    let line = body.split(|b| *b == b'\n').next()?;
    let line = String::from_utf8_lossy(&line[..line.len().min(128)]);
    let mut parts = line.split_whitespace();
    if !parts.next()?.eq_ignore_ascii_case("SIP/2.0") {
        return None;
    }
    parts.next()?.parse().ok().filter(|c| (100..700).contains(c))
}

#[cfg(test)]
mod tests {
    use super::sipfrag_status;

    #[test]
    fn sipfrag_status_lines() {
        assert_eq!(sipfrag_status(b"SIP/2.0 180 Ringing\r\n"), Some(180));
        assert_eq!(sipfrag_status(b"SIP/2.0 200 OK"), Some(200));
        assert_eq!(
            sipfrag_status(b"SIP/2.0 486 Busy Here\r\nContent-Length: 0\r\n"),
            Some(486)
        );
        for bad in [
            &b""[..],
            b"HTTP/1.1 200 OK",
            b"SIP/2.0 99 x",
            b"SIP/2.0 abc",
            b"\xff\xfe",
            b"\nSIP/2.0 200 OK",
        ] {
            assert_eq!(sipfrag_status(bad), None, "{bad:?}");
        }
    }
}
