//! How a key press crosses to the SIP side: the one place that chooses between RFC 4733
//! telephone-events and SIP INFO, and that reads INFO bodies from the far end.

use sipline_media::sdp::NegotiatedMedia;

/// How DTMF travels on the SIP leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtmfMethod {
    /// RTP telephone-events (RFC 4733), in the media task.
    Rfc4733,
    /// One SIP INFO (`application/dtmf-relay`) per key.
    Info,
}

impl DtmfMethod {
    /// Telephone-events when the far end negotiated them (and the media task has the
    /// call), INFO otherwise.
    pub fn for_media(negotiated: Option<&NegotiatedMedia>, attached: bool) -> DtmfMethod {
        if attached && negotiated.is_some_and(|n| n.dtmf_payload_type.is_some()) {
            DtmfMethod::Rfc4733
        } else {
            DtmfMethod::Info
        }
    }

    /// For a leg whose telephone-event payload type is `dtmf_payload_type`.
    pub fn for_leg(dtmf_payload_type: Option<u8>) -> DtmfMethod {
        match dtmf_payload_type {
            Some(_) => DtmfMethod::Rfc4733,
            None => DtmfMethod::Info,
        }
    }
}

/// The INFO body we send for one key.
pub(crate) const INFO_CONTENT_TYPE: &str = "application/dtmf-relay";

pub(crate) fn info_body(digit: char) -> Vec<u8> {
    format!("Signal={digit}\r\nDuration=160\r\n").into_bytes()
}

/// Whether `digits` is what the API accepts: `0-9 * # A-D`, 1 to 64 of them.
pub fn valid_dtmf(digits: &str) -> bool {
    !digits.is_empty() && digits.len() <= 64 && digits.chars().all(|c| "0123456789*#ABCDabcd".contains(c))
}

/// A digit from an INFO body: `application/dtmf-relay` (`Signal=5`) or `application/dtmf`.
pub fn dtmf_from_info(content_type: &str, body: &[u8]) -> Option<char> {
    let text = std::str::from_utf8(body).ok()?;
    let ct = content_type.to_ascii_lowercase();
    let value = if ct.starts_with("application/dtmf-relay") {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            k.trim().eq_ignore_ascii_case("signal").then_some(v.trim())
        })?
    } else if ct.starts_with("application/dtmf") {
        text.trim()
    } else {
        return None;
    };
    let digit = match value {
        "10" => '*',
        "11" => '#',
        v if v.chars().count() == 1 => v.chars().next()?.to_ascii_uppercase(),
        _ => return None,
    };
    valid_dtmf(&digit.to_string()).then_some(digit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtmf_info_bodies() {
        assert_eq!(
            dtmf_from_info("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n"),
            Some('5')
        );
        assert_eq!(
            dtmf_from_info("application/dtmf-relay", b"Signal= #\r\n"),
            Some('#')
        );
        assert_eq!(
            dtmf_from_info("application/dtmf-relay", b"Signal=11\r\n"),
            Some('#')
        );
        assert_eq!(dtmf_from_info("application/dtmf", b"*"), Some('*'));
        assert_eq!(dtmf_from_info("application/dtmf-relay", b"Signal=Z\r\n"), None);
        assert_eq!(dtmf_from_info("text/plain", b"5"), None);
        assert_eq!(dtmf_from_info("application/dtmf-relay", b"\xff"), None);
        assert_eq!(
            dtmf_from_info(INFO_CONTENT_TYPE, &info_body('7')),
            Some('7'),
            "what we send, we read"
        );
    }
}
