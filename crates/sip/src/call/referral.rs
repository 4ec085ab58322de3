//! Being transferred (RFC 3515, RFC 5589 §6–7 as the transferee): the far end's REFER
//! asks us to call someone else. A REFER that names a number is accepted (202) and
//! answered at once with a NOTIFY saying `100 Trying`; the gateway then places the new
//! call (if its dial policy lets it) and reports each step of that call back to the
//! transferor as a NOTIFY holding its status line (`message/sipfrag`), the final one
//! ending the implicit subscription. What becomes of our call is the transferor's
//! business (it hangs up once the new call is answered, as a rule).
//!
//! A Refer-To carrying `Replaces` (attended transfer) is passed on: the new INVITE must
//! carry it, so that the target swaps its call with the transferor for ours.

use super::*;

/// The far end asked us to call someone else (its REFER).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferTarget {
    /// The user part of the Refer-To URI, unescaped: the number to call.
    pub number: String,
    /// The `Replaces` header of the Refer-To URI, unescaped (attended transfer).
    pub replaces: Option<String>,
    /// The REFER's `Referred-By`, to put on the new INVITE (RFC 3892).
    pub referred_by: Option<String>,
}

/// A transfer the far end asked of us, until its final NOTIFY has been sent.
#[derive(Debug)]
pub(super) struct Referral {
    /// The REFER's CSeq: our NOTIFYs say `Event: refer;id=CSEQ`.
    id: u32,
    /// A NOTIFY of ours waits for its response: the next one waits too (sent back to
    /// back, a proxy's workers can swap them, and the far end would take the
    /// `terminated` one first and refuse the other as out of order).
    in_flight: bool,
    /// The status to report once the NOTIFY in flight is answered: only the latest
    /// counts (a newer status supersedes an older provisional; a final is the last).
    next: Option<(u16, String)>,
}

/// The longest Refer-To we look at, and the longest Replaces we pass on.
const MAX_REFER_TO: usize = 1024;

impl Call {
    /// A REFER in the dialog.
    pub(super) fn on_refer(
        &mut self,
        key: ServerKey,
        req: &Request,
        config: &UaConfig,
        rng: &mut fastrand::Rng,
    ) {
        let refusal = match (&self.phase, &self.referral) {
            (Phase::Confirmed, None) => None,
            (Phase::Confirmed, Some(_)) => Some((403, "A Transfer Is Under Way")),
            _ => Some((403, "Not In A Call")),
        };
        let target = refer_target(req);
        let refusal = refusal.or_else(|| target.is_none().then_some((400, "Bad Refer-To")));
        let (Some(target), None) = (target, refusal) else {
            let (status, reason) = refusal.unwrap_or((400, "Bad Refer-To"));
            let resp = self.plain_response(req, status, reason, config);
            self.out.responses.push((key, resp));
            return;
        };
        let id = req.headers.cseq().map(|c| c.seq).unwrap_or_default();
        let accepted = self.plain_response(req, 202, "Accepted", config);
        self.out.responses.push((key, accepted));
        self.referral = Some(Referral {
            id,
            in_flight: false,
            next: None,
        });
        // RFC 3515 §2.4.4: a NOTIFY follows the 202 at once
        let _ = self.notify_referral(100, "Trying", config, rng);
        self.out.events.push(CallEvent::Referred(target));
    }

    /// Tells the transferor how the call it asked for is going: `status` of that call
    /// (100 Trying, 180 Ringing, 200 OK, 486 Busy Here…). A final status ends the
    /// subscription; nothing more is sent after it. NOTIFYs go one at a time.
    pub fn notify_referral(
        &mut self,
        status: u16,
        reason: &str,
        config: &UaConfig,
        rng: &mut fastrand::Rng,
    ) -> Result<(), CallError> {
        let Some(referral) = self.referral.as_mut() else {
            return Err(CallError::WrongState("no transfer was asked of this call"));
        };
        if !matches!(self.phase, Phase::Confirmed | Phase::Answered) {
            self.referral = None;
            return Err(CallError::WrongState("the call is over"));
        }
        let reason: String = reason.chars().filter(|c| !c.is_control()).take(64).collect();
        if referral.in_flight {
            if referral.next.as_ref().is_none_or(|(queued, _)| *queued < 200) {
                referral.next = Some((status, reason));
            }
            return Ok(());
        }
        self.send_referral_notify(status, &reason, config, rng)
    }

    /// Our NOTIFY was answered (or timed out): the next status, if one waits, goes now.
    /// A transferor that says the subscription is gone (481) hears nothing more.
    pub(super) fn on_referral_notify_answered(
        &mut self,
        status: Option<u16>,
        config: &UaConfig,
        rng: &mut fastrand::Rng,
    ) {
        if matches!(status, Some(401 | 407)) {
            return; // sent again with credentials: its answer decides
        }
        let Some(referral) = self.referral.as_mut() else {
            return;
        };
        referral.in_flight = false;
        if status == Some(481) {
            self.referral = None;
            return;
        }
        if let Some((status, reason)) = referral.next.take()
            && matches!(self.phase, Phase::Confirmed | Phase::Answered)
        {
            let _ = self.send_referral_notify(status, &reason, config, rng);
        }
    }

    fn send_referral_notify(
        &mut self,
        status: u16,
        reason: &str,
        config: &UaConfig,
        rng: &mut fastrand::Rng,
    ) -> Result<(), CallError> {
        let last = status >= 200;
        let contact = self.contact_uri(config);
        let (Some(referral), Some(d)) = (self.referral.as_mut(), self.dialog.as_mut()) else {
            return Err(CallError::WrongState("the call is over"));
        };
        let id = referral.id;
        referral.in_flight = true;
        let (mut req, to) = d.request(Method::Notify, None, config, rng);
        req.headers.push("Event", format!("refer;id={id}"));
        req.headers.push(
            "Subscription-State",
            if last {
                "terminated;reason=noresource"
            } else {
                "active;expires=300"
            },
        );
        req.headers.push("Contact", format!("<{contact}>"));
        req.headers.push("User-Agent", config.user_agent.clone());
        req.headers.push("Content-Type", "message/sipfrag;version=2.0");
        req.body = format!("SIP/2.0 {status} {reason}\r\n").into_bytes();
        if last {
            self.referral = None;
        }
        self.send(req, to);
        Ok(())
    }
}

/// What a REFER asks for, if it names a number: the Refer-To's URI (`sip:`/`sips:` with
/// a user part, or `tel:`), its Replaces header, and the REFER's Referred-By.
fn refer_target(req: &Request) -> Option<ReferTarget> {
    let refer_to = req.headers.get("Refer-To")?;
    if refer_to.len() > MAX_REFER_TO {
        return None;
    }
    let uri = NameAddr::parse(refer_to).ok()?.uri;
    let number = percent_decode(uri.user.as_deref()?)?;
    if number.is_empty() || number.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return None;
    }
    let replaces = uri.headers.as_deref().and_then(|h| {
        h.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            k.eq_ignore_ascii_case("Replaces")
                .then(|| percent_decode(v))
                .flatten()
        })
    });
    let replaces = replaces.filter(|r| !r.is_empty() && !r.chars().any(char::is_control));
    let referred_by = req
        .headers
        .get("Referred-By")
        .filter(|v| v.len() <= MAX_REFER_TO && !v.chars().any(char::is_control))
        .map(str::to_owned);
    Some(ReferTarget {
        number,
        replaces,
        referred_by,
    })
}

/// `%XX` escapes undone (RFC 3261 §19.1.2); None for a broken escape or a result that
/// is not UTF-8.
pub(crate) fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `s` with every character that may not stand in a URI header value escaped (for a
/// Replaces in a Refer-To URI: `;`, `=`, `@`, `%`…).
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3 / 2);
    for b in s.bytes() {
        match b {
            b'0'..=b'9'
            | b'a'..=b'z'
            | b'A'..=b'Z'
            | b'-'
            | b'_'
            | b'.'
            | b'!'
            | b'~'
            | b'*'
            | b'\''
            | b'('
            | b')' => out.push(char::from(b)),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refer(refer_to: &str) -> Request {
        let mut req = Request::new(Method::Refer, Uri::parse("sip:880@127.0.0.1").unwrap());
        req.headers.push("Refer-To", refer_to);
        req
    }

    #[test]
    fn refer_to_names_a_number_and_perhaps_a_call_to_replace() {
        let t = refer_target(&refer("<sip:1002@pbx.example.com>")).unwrap();
        assert_eq!((t.number.as_str(), t.replaces), ("1002", None));
        let t = refer_target(&refer("<sip:%2A72%23@pbx>")).unwrap();
        assert_eq!(t.number, "*72#");
        let t = refer_target(&refer(
            "<sip:1003@pbx?Replaces=abc%40host%3Bto-tag%3D1%3Bfrom-tag%3D2>",
        ))
        .unwrap();
        assert_eq!(t.replaces.as_deref(), Some("abc@host;to-tag=1;from-tag=2"));
        let t = refer_target(&refer("\"Bob\" <tel:+15551234>")).unwrap();
        assert_eq!(t.number, "+15551234");
        for bad in [
            "<sip:pbx.example.com>",
            "<sip:%zz@pbx>",
            "garbage",
            "<sip:%0a@pbx>",
            "",
        ] {
            assert_eq!(refer_target(&refer(bad)), None, "{bad}");
        }
        assert_eq!(
            refer_target(&refer(&format!("<sip:{}@pbx>", "1".repeat(2000)))),
            None
        );
    }

    #[test]
    fn escapes_round_trip() {
        let raw = "a1b2@10.0.0.1;to-tag=x y;from-tag=%z";
        assert_eq!(percent_decode(&percent_encode(raw)).as_deref(), Some(raw));
        assert_eq!(percent_encode("id@h;to-tag=1"), "id%40h%3Bto-tag%3D1");
    }
}
