//! `;name=value` parameter lists, shared by URIs and header values (Via, From, Contact…).

use std::fmt;

use super::ParseError;

/// An ordered list of parameters; names compare case-insensitively.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(pub Vec<(String, Option<String>)>);

impl Params {
    /// Parses `;a=1;b;c="quoted;value"` (the leading `;` is optional).
    pub fn parse(s: &str) -> Result<Params, ParseError> {
        let mut out = Vec::new();
        let parts = split_outside_quotes(s, b';');
        for (i, part) in parts.iter().enumerate() {
            let part = part.trim();
            if part.is_empty() {
                // before the first ';', or one stray ';' at the end; an empty parameter
                // between two is malformed (RFC 4475 badinv01: `;;,;,,`)
                if i == 0 || i + 1 == parts.len() {
                    continue;
                }
                return Err(ParseError::new("empty parameter"));
            }
            let (name, value) = match part.find('=') {
                Some(i) => (part[..i].trim(), Some(part[i + 1..].trim().to_owned())),
                None => (part, None),
            };
            if name.is_empty() || !name.bytes().all(is_token_byte) {
                return Err(ParseError::new(format!("bad parameter name {name:?}")));
            }
            out.push((name.to_owned(), value));
        }
        Ok(Params(out))
    }

    /// `Some(Some(v))` for `name=v`, `Some(None)` for a bare `name`, `None` if absent.
    /// Quotes around the value are kept; use [`Params::get_unquoted`] to strip them.
    pub fn get(&self, name: &str) -> Option<Option<&str>> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref())
    }

    /// The value of `name` with surrounding quotes removed.
    pub fn get_unquoted(&self, name: &str) -> Option<&str> {
        self.get(name).flatten().map(unquote)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Sets (replacing) a parameter.
    pub fn set(&mut self, name: &str, value: Option<&str>) {
        self.remove(name);
        self.0.push((name.to_owned(), value.map(str::to_owned)));
    }

    pub fn remove(&mut self, name: &str) {
        self.0.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }
}

impl fmt::Display for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, value) in &self.0 {
            match value {
                Some(v) => write!(f, ";{name}={v}")?,
                None => write!(f, ";{name}")?,
            }
        }
        Ok(())
    }
}

/// RFC 3261 `token` characters (plus `[]:` seen in IPv6 `received=` values).
pub(crate) fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// Removes one pair of surrounding double quotes and un-escapes `\x`.
pub fn unquote(s: &str) -> &str {
    let s = s.trim();
    if s.len() >= 2 && s.starts_with('"') && s.ends_with('"') {
        &s[1..s.len() - 1]
    } else {
        s
    }
}

/// Splits at `sep` where it is not inside double quotes or `<…>`.
pub(crate) fn split_outside_quotes(s: &str, sep: u8) -> Vec<&str> {
    let bytes = s.as_bytes();
    let mut parts = Vec::new();
    let mut start = 0;
    let mut in_quotes = false;
    let mut angle = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if in_quotes {
            if b == b'\\' {
                i += 1;
            } else if b == b'"' {
                in_quotes = false;
            }
        } else if b == b'"' {
            in_quotes = true;
        } else if b == b'<' {
            angle += 1;
        } else if b == b'>' {
            angle = angle.saturating_sub(1);
        } else if b == sep && angle == 0 {
            parts.push(&s[start..i]);
            start = i + 1;
        }
        i += 1;
    }
    if start <= s.len() {
        parts.push(&s[start.min(s.len())..]);
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_parameters_between_semicolons_are_malformed() {
        assert!(Params::parse(";a=1;;b").is_err());
        assert!(Params::parse(";;").is_err());
        assert_eq!(Params::parse(";a=1;").unwrap().get("a"), Some(Some("1")));
        assert_eq!(Params::parse("").unwrap(), Params::default());
    }

    #[test]
    fn parses_and_prints() {
        let p = Params::parse(";branch=z9hG4bK1;rport;x=\"a;b\"").unwrap();
        assert_eq!(p.get("BRANCH"), Some(Some("z9hG4bK1")));
        assert_eq!(p.get("rport"), Some(None));
        assert_eq!(p.get_unquoted("x"), Some("a;b"));
        assert_eq!(p.get("none"), None);
        assert_eq!(p.to_string(), ";branch=z9hG4bK1;rport;x=\"a;b\"");
    }

    #[test]
    fn rejects_bad_names() {
        assert!(Params::parse(";a b=1").is_err());
        assert!(Params::parse(";=1").is_err());
    }

    #[test]
    fn splits_outside_quotes_and_angles() {
        assert_eq!(
            split_outside_quotes("\"a,b\" <sip:x;a,b>, <sip:y>", b','),
            vec!["\"a,b\" <sip:x;a,b>", " <sip:y>"]
        );
        assert_eq!(
            split_outside_quotes("\"unterminated,", b','),
            vec!["\"unterminated,"]
        );
    }
}
