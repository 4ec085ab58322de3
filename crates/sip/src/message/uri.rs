//! SIP URIs (RFC 3261 §19.1): `sip:user:password@host:port;params?headers`.
//!
//! `sip`/`sips` URIs are parsed into their parts, because routing, registration and
//! dialog matching look at them. Other schemes (`tel:`, `urn:`) keep their text in
//! `user` so that a far end using them still gets a sensible answer.

use std::fmt;

use super::ParseError;
use super::params::Params;

/// A parsed SIP URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uri {
    /// Lower-case scheme: `sip`, `sips`, `tel`, …
    pub scheme: String,
    pub user: Option<String>,
    pub password: Option<String>,
    /// Host as written (IPv6 references keep their brackets); empty for non-SIP schemes.
    pub host: String,
    pub port: Option<u16>,
    pub params: Params,
    /// Raw `?headers` part, if any.
    pub headers: Option<String>,
}

impl Uri {
    /// A `sip:` URI for `user@host:port`.
    pub fn sip(user: Option<&str>, host: &str, port: Option<u16>) -> Uri {
        Uri {
            scheme: "sip".into(),
            user: user.map(str::to_owned),
            password: None,
            host: host.to_owned(),
            port,
            params: Params::default(),
            headers: None,
        }
    }

    /// True for `sip:` and `sips:` URIs.
    pub fn is_sip(&self) -> bool {
        self.scheme == "sip" || self.scheme == "sips"
    }

    /// Parses a URI as it appears in a Request-Line or inside `<…>`.
    pub fn parse(s: &str) -> Result<Uri, ParseError> {
        let s = s.trim();
        let colon = s
            .find(':')
            .ok_or_else(|| ParseError::new(format!("URI without scheme: {s:?}")))?;
        let scheme = s[..colon].to_ascii_lowercase();
        if scheme.is_empty()
            || !scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        {
            return Err(ParseError::new(format!("bad URI scheme in {s:?}")));
        }
        let rest = &s[colon + 1..];
        if scheme != "sip" && scheme != "sips" {
            // tel:+1234;phone-context=… and friends: keep the number, parse params.
            let (number, params) = match rest.find(';') {
                Some(i) => (&rest[..i], Params::parse(&rest[i..])?),
                None => (rest, Params::default()),
            };
            if number.is_empty() {
                return Err(ParseError::new(format!("empty {scheme} URI")));
            }
            return Ok(Uri {
                scheme,
                user: Some(number.to_owned()),
                password: None,
                host: String::new(),
                port: None,
                params,
                headers: None,
            });
        }
        // userinfo ends at the first '@': no other part of a SIP URI may hold one
        // unescaped, while the user part may hold '?', ';' and '/' (RFC 3261 §25.1
        // user-unreserved; RFC 4475 intmeth)
        let (userinfo, rest) = match rest.find('@') {
            Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
            None => (None, rest),
        };
        let (hostpart, headers) = match rest.find('?') {
            Some(i) => (&rest[..i], Some(rest[i + 1..].to_owned())),
            None => (rest, None),
        };
        let (user, password) = match userinfo {
            Some(ui) => match ui.find(':') {
                Some(i) => (Some(ui[..i].to_owned()), Some(ui[i + 1..].to_owned())),
                None => (Some(ui.to_owned()), None),
            },
            None => (None, None),
        };
        if user.as_deref() == Some("") {
            return Err(ParseError::new(format!("empty user in URI {s:?}")));
        }
        let (hostport, params) = match hostpart.find(';') {
            Some(i) => (&hostpart[..i], Params::parse(&hostpart[i..])?),
            None => (hostpart, Params::default()),
        };
        let (host, port) = split_host_port(hostport)?;
        Ok(Uri {
            scheme,
            user,
            password,
            host,
            port,
            params,
            headers,
        })
    }

    /// `host` or `host:port`.
    pub fn host_port(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{p}", self.host),
            None => self.host.clone(),
        }
    }

    /// The `transport` URI parameter, lower-cased.
    pub fn transport_param(&self) -> Option<String> {
        self.params
            .get("transport")
            .flatten()
            .map(|t| t.to_ascii_lowercase())
    }
}

/// Splits `host[:port]` (with `[v6]` support) and checks the host's characters.
pub(crate) fn split_host_port(s: &str) -> Result<(String, Option<u16>), ParseError> {
    let s = s.trim();
    let (host, port) = if let Some(stripped) = s.strip_prefix('[') {
        let end = stripped
            .find(']')
            .ok_or_else(|| ParseError::new(format!("unterminated IPv6 reference {s:?}")))?;
        let host = &s[..end + 2];
        let after = &stripped[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(ParseError::new(format!("junk after IPv6 host {s:?}"))),
        };
        (host, port)
    } else {
        match s.rfind(':') {
            Some(i) => (&s[..i], Some(&s[i + 1..])),
            None => (s, None),
        }
    };
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._[]:".contains(&b))
    {
        return Err(ParseError::new(format!("bad host {host:?}")));
    }
    let port = match port {
        Some(p) => Some(
            p.parse::<u16>()
                .map_err(|_| ParseError::new(format!("bad port {p:?}")))?,
        ),
        None => None,
    };
    Ok((host.to_owned(), port))
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.scheme)?;
        if !self.is_sip() {
            write!(f, "{}", self.user.as_deref().unwrap_or_default())?;
            return write!(f, "{}", self.params);
        }
        if let Some(user) = &self.user {
            write!(f, "{user}")?;
            if let Some(pw) = &self.password {
                write!(f, ":{pw}")?;
            }
            write!(f, "@")?;
        }
        write!(f, "{}", self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        write!(f, "{}", self.params)?;
        if let Some(h) = &self.headers {
            write!(f, "?{h}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Uri {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uri::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_part_may_hold_question_marks_and_semicolons() {
        // RFC 4475 intmeth's Request-URI
        let u = Uri::parse("sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,;=.@example.com").unwrap();
        assert_eq!(
            u.user.as_deref(),
            Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,;=.")
        );
        assert_eq!(u.host, "example.com");
        let h = Uri::parse("sip:bob@example.com?subject=hi").unwrap();
        assert_eq!(h.headers.as_deref(), Some("subject=hi"));
    }

    #[test]
    fn parses_full_sip_uri() {
        let u = Uri::parse("sip:alice:pw@example.com:5070;transport=tcp;lr?subject=x").unwrap();
        assert_eq!(u.scheme, "sip");
        assert_eq!(u.user.as_deref(), Some("alice"));
        assert_eq!(u.password.as_deref(), Some("pw"));
        assert_eq!(u.host, "example.com");
        assert_eq!(u.port, Some(5070));
        assert_eq!(u.transport_param().as_deref(), Some("tcp"));
        assert!(u.params.contains("lr"));
        assert_eq!(u.headers.as_deref(), Some("subject=x"));
        assert_eq!(
            u.to_string(),
            "sip:alice:pw@example.com:5070;transport=tcp;lr?subject=x"
        );
    }

    #[test]
    fn parses_host_only_and_ipv6() {
        let u = Uri::parse("SIP:127.0.0.1").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.user), ("127.0.0.1", None, None));
        let u = Uri::parse("sip:1000@[::1]:5060").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("[::1]", Some(5060)));
    }

    #[test]
    fn keeps_tel_uris() {
        let u = Uri::parse("tel:+4930123;phone-context=x").unwrap();
        assert_eq!(u.user.as_deref(), Some("+4930123"));
        assert_eq!(u.to_string(), "tel:+4930123;phone-context=x");
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "nocolon",
            "sip:",
            "sip:@host",
            "sip:host:99999",
            "sip:ho st",
            "sip:[::1",
            ":x",
        ] {
            assert!(Uri::parse(bad).is_err(), "{bad:?} should not parse");
        }
    }
}
