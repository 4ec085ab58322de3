//! HTTP Digest authentication as SIP uses it (RFC 2617, RFC 7616, RFC 8760):
//! parsing a `WWW-Authenticate`/`Proxy-Authenticate` challenge and computing the
//! `Authorization`/`Proxy-Authorization` answer, with MD5, SHA-256 and SHA-512/256,
//! their `-sess` variants, and `qop=auth` (or no qop, RFC 2069 style).
//!
//! The server side ([`verify`]) is here too, so the embedded PBX and the tests use
//! the same arithmetic.

use std::fmt;

use md5::{Digest as _, Md5};
use sha2::{Sha256, Sha512_256};

use crate::message::{Params, ParseError};

/// Digest algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Md5,
    Md5Sess,
    Sha256,
    Sha256Sess,
    Sha512_256,
    Sha512_256Sess,
}

impl Algorithm {
    pub fn parse(s: &str) -> Option<Algorithm> {
        Some(match s.to_ascii_uppercase().as_str() {
            "MD5" => Algorithm::Md5,
            "MD5-SESS" => Algorithm::Md5Sess,
            "SHA-256" => Algorithm::Sha256,
            "SHA-256-SESS" => Algorithm::Sha256Sess,
            "SHA-512-256" => Algorithm::Sha512_256,
            "SHA-512-256-SESS" => Algorithm::Sha512_256Sess,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Md5Sess => "MD5-sess",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha256Sess => "SHA-256-sess",
            Algorithm::Sha512_256 => "SHA-512-256",
            Algorithm::Sha512_256Sess => "SHA-512-256-sess",
        }
    }

    fn is_sess(self) -> bool {
        matches!(
            self,
            Algorithm::Md5Sess | Algorithm::Sha256Sess | Algorithm::Sha512_256Sess
        )
    }

    fn hash(self, data: &str) -> String {
        match self {
            Algorithm::Md5 | Algorithm::Md5Sess => hex(&Md5::digest(data.as_bytes())),
            Algorithm::Sha256 | Algorithm::Sha256Sess => hex(&Sha256::digest(data.as_bytes())),
            Algorithm::Sha512_256 | Algorithm::Sha512_256Sess => hex(&Sha512_256::digest(data.as_bytes())),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// A Digest challenge from a 401 or 407.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    pub algorithm: Algorithm,
    /// The server offered `qop=auth` (we never use `auth-int`).
    pub qop_auth: bool,
    pub stale: bool,
}

/// Why a challenge cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChallengeError {
    Malformed(String),
    /// Not Digest, or an algorithm/qop we do not implement.
    Unsupported(String),
}

impl fmt::Display for ChallengeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChallengeError::Malformed(m) => write!(f, "malformed challenge: {m}"),
            ChallengeError::Unsupported(m) => write!(f, "unsupported challenge: {m}"),
        }
    }
}

impl Challenge {
    /// Parses one challenge header value (`Digest realm="…", nonce="…", …`).
    pub fn parse(value: &str) -> Result<Challenge, ChallengeError> {
        let value = value.trim();
        let (scheme, rest) = value
            .split_once(|c: char| c.is_ascii_whitespace())
            .ok_or_else(|| ChallengeError::Malformed(value.to_owned()))?;
        if !scheme.eq_ignore_ascii_case("Digest") {
            return Err(ChallengeError::Unsupported(format!("scheme {scheme}")));
        }
        let params = auth_params(rest).map_err(|e| ChallengeError::Malformed(e.to_string()))?;
        let get = |n: &str| params.get_unquoted(n).map(str::to_owned);
        let realm = get("realm").ok_or_else(|| ChallengeError::Malformed("no realm".into()))?;
        let nonce = get("nonce").ok_or_else(|| ChallengeError::Malformed("no nonce".into()))?;
        let algorithm = match params.get_unquoted("algorithm") {
            None => Algorithm::Md5,
            Some(a) => {
                Algorithm::parse(a).ok_or_else(|| ChallengeError::Unsupported(format!("algorithm {a}")))?
            }
        };
        let qop_auth = match params.get_unquoted("qop") {
            None => false,
            Some(q) => {
                if q.split(',').any(|o| o.trim().eq_ignore_ascii_case("auth")) {
                    true
                } else {
                    return Err(ChallengeError::Unsupported(format!("qop {q}")));
                }
            }
        };
        Ok(Challenge {
            realm,
            nonce,
            opaque: get("opaque"),
            algorithm,
            qop_auth,
            stale: params
                .get_unquoted("stale")
                .is_some_and(|s| s.eq_ignore_ascii_case("true")),
        })
    }

    /// Picks the best challenge we support among several header values
    /// (RFC 8760: prefer SHA-512/256, then SHA-256, then MD5).
    pub fn pick<'a>(values: impl IntoIterator<Item = &'a str>) -> Result<Challenge, ChallengeError> {
        let mut best: Option<Challenge> = None;
        let mut last_err = ChallengeError::Malformed("no challenge".into());
        for v in values {
            match Challenge::parse(v) {
                Ok(c) => {
                    let rank = |a: Algorithm| match a {
                        Algorithm::Sha512_256 | Algorithm::Sha512_256Sess => 3,
                        Algorithm::Sha256 | Algorithm::Sha256Sess => 2,
                        Algorithm::Md5 | Algorithm::Md5Sess => 1,
                    };
                    if best
                        .as_ref()
                        .is_none_or(|b| rank(c.algorithm) > rank(b.algorithm))
                    {
                        best = Some(c);
                    }
                }
                Err(e) => last_err = e,
            }
        }
        best.ok_or(last_err)
    }
}

/// Parses comma-separated `name=value` auth-params (values may be quoted and hold commas).
fn auth_params(s: &str) -> Result<Params, ParseError> {
    let mut out = Params::default();
    for part in crate::message::split_outside_quotes(s, b',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (n, v) = part
            .split_once('=')
            .ok_or_else(|| ParseError::new(format!("bad auth-param {part:?}")))?;
        out.0.push((n.trim().to_owned(), Some(v.trim().to_owned())));
    }
    Ok(out)
}

/// What a client needs to answer a challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// The computed answer to a challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    pub algorithm: Algorithm,
    pub opaque: Option<String>,
    /// `(cnonce, nc)` when qop=auth was used.
    pub qop: Option<(String, u32)>,
}

impl Authorization {
    /// Answers `challenge` for a request `method` to `uri`. `cnonce` and `nc` are used
    /// when the server asked for qop=auth (or for a -sess algorithm).
    pub fn answer(
        challenge: &Challenge,
        creds: &Credentials,
        method: &str,
        uri: &str,
        cnonce: &str,
        nc: u32,
    ) -> Authorization {
        let qop = challenge.qop_auth.then(|| (cnonce.to_owned(), nc));
        let response = compute_response(
            challenge.algorithm,
            &creds.username,
            &challenge.realm,
            &creds.password,
            &challenge.nonce,
            method,
            uri,
            cnonce,
            qop.as_ref().map(|(_, nc)| *nc),
        );
        Authorization {
            username: creds.username.clone(),
            realm: challenge.realm.clone(),
            nonce: challenge.nonce.clone(),
            uri: uri.to_owned(),
            response,
            algorithm: challenge.algorithm,
            opaque: challenge.opaque.clone(),
            qop,
        }
    }

    /// Parses an `Authorization` header value (server side).
    pub fn parse(value: &str) -> Result<Authorization, ParseError> {
        let value = value.trim();
        let (scheme, rest) = value
            .split_once(|c: char| c.is_ascii_whitespace())
            .ok_or_else(|| ParseError::new("bad Authorization"))?;
        if !scheme.eq_ignore_ascii_case("Digest") {
            return Err(ParseError::new("not a Digest Authorization"));
        }
        let p = auth_params(rest)?;
        let need = |n: &str| {
            p.get_unquoted(n)
                .map(str::to_owned)
                .ok_or_else(|| ParseError::new(format!("Authorization without {n}")))
        };
        let algorithm = match p.get_unquoted("algorithm") {
            None => Algorithm::Md5,
            Some(a) => Algorithm::parse(a).ok_or_else(|| ParseError::new("unknown algorithm"))?,
        };
        let qop = match p.get_unquoted("qop") {
            None => None,
            Some(_) => {
                let nc = need("nc")?;
                let nc = u32::from_str_radix(&nc, 16).map_err(|_| ParseError::new("bad nc"))?;
                Some((need("cnonce")?, nc))
            }
        };
        Ok(Authorization {
            username: need("username")?,
            realm: need("realm")?,
            nonce: need("nonce")?,
            uri: need("uri")?,
            response: need("response")?,
            algorithm,
            opaque: p.get_unquoted("opaque").map(str::to_owned),
            qop,
        })
    }
}

impl fmt::Display for Authorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\", response=\"{}\", algorithm={}",
            self.username,
            self.realm,
            self.nonce,
            self.uri,
            self.response,
            self.algorithm.as_str()
        )?;
        if let Some(o) = &self.opaque {
            write!(f, ", opaque=\"{o}\"")?;
        }
        if let Some((cnonce, nc)) = &self.qop {
            // qop is a token in RFC 2617's Authorization grammar: unquoted.
            write!(f, ", qop=auth, nc={nc:08x}, cnonce=\"{cnonce}\"")?;
        }
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)]
fn compute_response(
    alg: Algorithm,
    username: &str,
    realm: &str,
    password: &str,
    nonce: &str,
    method: &str,
    uri: &str,
    cnonce: &str,
    nc: Option<u32>,
) -> String {
    let mut ha1 = alg.hash(&format!("{username}:{realm}:{password}"));
    if alg.is_sess() {
        ha1 = alg.hash(&format!("{ha1}:{nonce}:{cnonce}"));
    }
    let ha2 = alg.hash(&format!("{method}:{uri}"));
    match nc {
        Some(nc) => alg.hash(&format!("{ha1}:{nonce}:{nc:08x}:{cnonce}:auth:{ha2}")),
        None => alg.hash(&format!("{ha1}:{nonce}:{ha2}")),
    }
}

/// Server side: does `auth` prove knowledge of `password` for a request `method`?
/// (Nonce freshness and replay are the caller's business.)
pub fn verify(auth: &Authorization, password: &str, method: &str) -> bool {
    let cnonce = auth.qop.as_ref().map(|(c, _)| c.as_str()).unwrap_or("");
    let expected = compute_response(
        auth.algorithm,
        &auth.username,
        &auth.realm,
        password,
        &auth.nonce,
        method,
        &auth.uri,
        cnonce,
        auth.qop.as_ref().map(|(_, nc)| *nc),
    );
    // constant-time comparison
    expected.len() == auth.response.len()
        && expected
            .bytes()
            .zip(auth.response.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b.to_ascii_lowercase()))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 2617 §3.5 example (HTTP, but the arithmetic is the same).
    #[test]
    fn rfc2617_example() {
        let ch = Challenge::parse(
            "Digest realm=\"testrealm@host.com\", qop=\"auth,auth-int\", nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"",
        )
        .unwrap();
        assert!(ch.qop_auth);
        let creds = Credentials {
            username: "Mufasa".into(),
            password: "Circle Of Life".into(),
        };
        let a = Authorization::answer(&ch, &creds, "GET", "/dir/index.html", "0a4f113b", 1);
        assert_eq!(a.response, "6629fae49393a05397450978507c4ef1");
        let text = a.to_string();
        assert!(text.contains("nc=00000001"));
        assert!(text.contains("opaque=\"5ccc069c403ebaf9f0171e9517f40e41\""));
        let parsed = Authorization::parse(&text).unwrap();
        assert_eq!(parsed, a);
        assert!(verify(&parsed, "Circle Of Life", "GET"));
        assert!(!verify(&parsed, "wrong", "GET"));
    }

    /// RFC 7616 §3.9.1: the same request answered with SHA-256 and with MD5.
    #[test]
    fn rfc7616_examples() {
        let creds = Credentials {
            username: "Mufasa".into(),
            password: "Circle of Life".into(),
        };
        let base = "realm=\"http-auth@example.org\", qop=\"auth, auth-int\", nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\"";
        let cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
        let sha = Challenge::parse(&format!("Digest {base}, algorithm=SHA-256")).unwrap();
        let a = Authorization::answer(&sha, &creds, "GET", "/dir/index.html", cnonce, 1);
        assert_eq!(
            a.response,
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
        let md5 = Challenge::parse(&format!("Digest {base}, algorithm=MD5")).unwrap();
        let a = Authorization::answer(&md5, &creds, "GET", "/dir/index.html", cnonce, 1);
        assert_eq!(a.response, "8ca523f5e9506fed4657c9700eebdbec");
        // with both offered, SHA-256 wins
        let picked = Challenge::pick([
            format!("Digest {base}, algorithm=MD5").as_str(),
            format!("Digest {base}, algorithm=SHA-256").as_str(),
        ])
        .unwrap();
        assert_eq!(picked.algorithm, Algorithm::Sha256);
    }

    /// Kamailio-style challenge and the no-qop (RFC 2069) form.
    #[test]
    fn sip_register_without_qop() {
        let ch = Challenge::parse("Digest realm=\"127.0.0.1\", nonce=\"abc\"").unwrap();
        assert!(!ch.qop_auth);
        let creds = Credentials {
            username: "880".into(),
            password: "880".into(),
        };
        let a = Authorization::answer(&ch, &creds, "REGISTER", "sip:127.0.0.1", "x", 1);
        // HA1 = md5("880:127.0.0.1:880"), HA2 = md5("REGISTER:sip:127.0.0.1")
        let ha1 = Algorithm::Md5.hash("880:127.0.0.1:880");
        let ha2 = Algorithm::Md5.hash("REGISTER:sip:127.0.0.1");
        assert_eq!(a.response, Algorithm::Md5.hash(&format!("{ha1}:abc:{ha2}")));
        assert!(!a.to_string().contains("qop"));
        assert!(verify(
            &Authorization::parse(&a.to_string()).unwrap(),
            "880",
            "REGISTER"
        ));
    }

    #[test]
    fn rejects_unsupported_and_malformed() {
        assert!(matches!(
            Challenge::parse("Basic realm=\"x\""),
            Err(ChallengeError::Unsupported(_))
        ));
        assert!(matches!(
            Challenge::parse("Digest realm=\"x\", nonce=\"n\", qop=\"auth-int\""),
            Err(ChallengeError::Unsupported(_))
        ));
        assert!(matches!(
            Challenge::parse("Digest realm=\"x\""),
            Err(ChallengeError::Malformed(_))
        ));
        assert!(Challenge::parse("Digest").is_err());
        assert!(Challenge::parse("").is_err());
        assert!(Authorization::parse("Digest username=\"a\"").is_err());
    }

    #[test]
    fn sess_algorithms_round_trip() {
        let creds = Credentials {
            username: "u".into(),
            password: "p".into(),
        };
        for alg in ["MD5-sess", "SHA-256-sess", "SHA-512-256", "SHA-512-256-sess"] {
            let ch = Challenge::parse(&format!(
                "Digest realm=\"r\", nonce=\"n\", qop=auth, algorithm={alg}"
            ))
            .unwrap();
            let a = Authorization::answer(&ch, &creds, "INVITE", "sip:x", "c", 7);
            let parsed = Authorization::parse(&a.to_string()).unwrap();
            assert!(verify(&parsed, "p", "INVITE"), "{alg}");
        }
    }
}
