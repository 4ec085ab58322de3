//! Reliable provisional responses as callee (RFC 3262 §3): our 180 when the caller
//! requires 100rel, sent again until PRACKed, and the PRACK that stops it.

use super::*;

/// Our reliable provisional responses to a ringing INVITE (RFC 3262).
#[derive(Debug, Default)]
pub(super) struct Reliability {
    /// The one not PRACKed yet (boxed: it holds a whole response).
    pub(super) pending: Option<Box<Reliable>>,
    /// The RSeq the caller PRACKed (a PRACK sent again is answered 200 too).
    pub(super) acked: Option<u32>,
}

/// A reliable provisional response of ours (RFC 3262 §3): sent again at T1, 2*T1…
/// until PRACKed; after 64*T1 without one, the INVITE is refused.
#[derive(Debug)]
pub(super) struct Reliable {
    pub(super) rseq: u32,
    pub(super) key: ServerKey,
    pub(super) response: Response,
    pub(super) next: Instant,
    pub(super) interval: Duration,
    pub(super) give_up: Instant,
}

impl Reliable {
    const T1: Duration = Duration::from_millis(500);

    pub(super) fn new(now: Instant, rseq: u32, key: ServerKey, response: Response) -> Reliable {
        Reliable {
            rseq,
            key,
            response,
            next: now + Self::T1,
            interval: Self::T1,
            give_up: now + Self::T1 * 64,
        }
    }
}

impl Call {
    /// The caller's PRACK for our reliable 180: stop sending it.
    pub(super) fn on_prack(&mut self, key: ServerKey, req: &Request, config: &UaConfig) {
        let rack = req
            .headers
            .get("RAck")
            .and_then(|v| v.split_whitespace().next()?.parse::<u32>().ok());
        let acked = match &mut self.phase {
            Phase::Offered { reliable } => {
                let ours = reliable.pending.as_ref().map(|r| r.rseq).or(reliable.acked);
                let matches = rack.is_some() && rack == ours;
                if matches && reliable.pending.take().is_some() {
                    reliable.acked = rack;
                }
                matches
            }
            _ => false,
        };
        let (code, reason) = if acked {
            (200, "OK")
        } else {
            (481, "Call/Transaction Does Not Exist")
        };
        let resp = self.plain_response(req, code, reason, config);
        self.out.responses.push((key, resp));
    }

    /// When our reliable 180 is due again.
    pub(super) fn reliable_next(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Offered { reliable } => reliable.pending.as_ref().map(|r| r.next),
            _ => None,
        }
    }

    /// Sends our reliable 180 again, or refuses the INVITE when it was never PRACKed.
    pub(super) fn on_reliable_timer(&mut self, now: Instant, config: &UaConfig) {
        let Phase::Offered { reliable } = &mut self.phase else {
            return;
        };
        let Some(r) = reliable.pending.as_mut() else {
            return;
        };
        if now >= r.give_up {
            reliable.pending = None;
            self.reject(504, "Server Time-out", config);
            self.set_status(
                CallState::Failed,
                Some(504),
                Some("no PRACK from the caller".into()),
            );
            return;
        }
        r.interval = (r.interval * 2).min(Duration::from_secs(4));
        r.next = (now + r.interval).min(r.give_up);
        let again = (r.key.clone(), r.response.clone());
        self.out.responses.push(again);
    }
}
