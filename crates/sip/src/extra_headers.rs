//! Headers that are not ours: what an operator adds to every INVITE and REGISTER, what a
//! browser adds to its call (from an allow-list), and which headers of an incoming INVITE
//! are passed on with the call. Integrations (a CRM's customer id, a campaign, a
//! tenant) need them; the core owns every header that drives the protocol, so those can
//! never be set or overridden from outside ([`check_name`]).

use crate::message::Headers;

/// Longest value accepted from an operator or a browser, and passed on from an INVITE.
pub const MAX_VALUE_LEN: usize = 256;
/// Longest name.
pub const MAX_NAME_LEN: usize = 64;

/// What the user agent adds and picks out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtraHeaders {
    /// Added to every INVITE that starts a call.
    pub invite: Vec<(String, String)>,
    /// Added to every REGISTER.
    pub register: Vec<(String, String)>,
    /// Headers of an incoming INVITE reported with the call, by these names.
    pub from_incoming: Vec<String>,
}

impl ExtraHeaders {
    /// The configured headers present in `headers` (an incoming INVITE's), named as
    /// configured; several fields of one name are joined with ", ". Each value is cut to
    /// [`MAX_VALUE_LEN`] bytes.
    pub fn pick(&self, headers: &Headers) -> Vec<(String, String)> {
        self.from_incoming
            .iter()
            .filter_map(|name| {
                let values: Vec<&str> = headers.get_all(name).map(str::trim).collect();
                (!values.is_empty()).then(|| (name.clone(), cut(&values.join(", "))))
            })
            .collect()
    }
}

/// Headers the core writes or interprets itself (with their compact forms): an extra
/// header of one of these names could break or hijack the dialog, so none is accepted.
const RESERVED: &[&str] = &[
    "via",
    "v",
    "from",
    "f",
    "to",
    "t",
    "call-id",
    "i",
    "cseq",
    "contact",
    "m",
    "max-forwards",
    "content-length",
    "l",
    "content-type",
    "c",
    "content-encoding",
    "e",
    "route",
    "record-route",
    "authorization",
    "proxy-authorization",
    "www-authenticate",
    "proxy-authenticate",
    "require",
    "proxy-require",
    "supported",
    "k",
    "allow",
    "session-expires",
    "x",
    "min-se",
    "rseq",
    "rack",
    "expires",
    "event",
    "o",
    "refer-to",
    "r",
    "referred-by",
    "b",
    "replaces",
    "subscription-state",
    "user-agent",
    "accept",
    "allow-events",
    "u",
    "unsupported",
];

/// Whether `name` may be an extra header: a SIP token (RFC 3261 §25.1) of at most
/// [`MAX_NAME_LEN`] characters, not one the core owns.
pub fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err("a header name has 1 to 64 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
    {
        return Err("a header name is letters, digits and -.!%*_+`'~");
    }
    if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(name)) {
        return Err("sipline writes this header itself");
    }
    Ok(())
}

/// Whether `value` may be sent: one line of at most [`MAX_VALUE_LEN`] bytes without
/// control characters.
pub fn check_value(value: &str) -> Result<(), &'static str> {
    if value.len() > MAX_VALUE_LEN {
        return Err("a header value has at most 256 bytes");
    }
    if value.chars().any(char::is_control) {
        return Err("a header value is one line without control characters");
    }
    Ok(())
}

/// `value` cut to [`MAX_VALUE_LEN`] bytes (on a character boundary), control
/// characters dropped.
fn cut(value: &str) -> String {
    let mut out = String::new();
    for c in value.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > MAX_VALUE_LEN {
            break;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_core_owns_are_refused_in_any_case_or_form() {
        assert!(check_name("X-Customer-Id").is_ok());
        assert!(check_name("P-Asserted-Identity").is_ok());
        for bad in [
            "Via",
            "CALL-ID",
            "i",
            "Contact",
            "m",
            "Content-Length",
            "Route",
            "Replaces",
            "user-agent",
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        for bad in ["", "X Y", "X:Y", "X-\r\nVia", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn values_are_one_short_line() {
        assert!(check_value("42; campaign=spring").is_ok());
        assert!(check_value("").is_ok());
        assert!(check_value("a\r\nVia: SIP/2.0/UDP evil").is_err());
        assert!(check_value("a\0b").is_err());
        assert!(check_value(&"é".repeat(129)).is_err());
    }

    #[test]
    fn incoming_headers_are_picked_by_their_configured_names_and_cut() {
        let extra = ExtraHeaders {
            from_incoming: vec!["X-Customer-Id".into(), "X-Absent".into(), "X-Long".into()],
            ..ExtraHeaders::default()
        };
        let mut h = Headers::default();
        h.push("x-customer-id", "77");
        h.push("X-Customer-Id", " 78 ");
        h.push("X-Secret", "no");
        h.push("X-Long", "é".repeat(300));
        let picked = extra.pick(&h);
        assert_eq!(picked[0], ("X-Customer-Id".to_owned(), "77, 78".to_owned()));
        assert_eq!(picked.len(), 2, "{picked:?}");
        assert_eq!(picked[1].0, "X-Long");
        assert_eq!(picked[1].1.len(), 256);
    }
}
