//! The embedded PBX, sans-IO: what lets `sipline` work out of the box with no PBX of
//! the user's own. A registrar with digest authentication for the configured users,
//! and a stateless, record-routing proxy (RFC 3261 §16.11) that routes INVITE, CANCEL,
//! BYE, ACK and every other request between registered users.
//!
//! Stateless on purpose: the phones' own transactions retransmit end to end, CANCEL and
//! non-2xx ACK reach the right server transaction because the proxy's branch is a hash
//! of the incoming one, and there is no proxy state to leak. Built on the same SIP core
//! as the gateway (message model, digest arithmetic); no second SIP stack.
//!
//! The built-in extensions (echo, tone, DTMF echo) are not in here: they are ordinary
//! SIP endpoints that register like any phone (the gateway runs them).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use sipline_sip::auth::{Authorization, verify};
use sipline_sip::message::{Message, Method, NameAddr, Request, Response, Uri, Via};
use sipline_sip::{Target, Transmit, Transport};

/// Settings of the embedded PBX.
#[derive(Clone)]
pub struct PbxConfig {
    /// Where it listens (a loopback address).
    pub addr: SocketAddr,
    /// The SIP domain (and digest realm) of its users.
    pub domain: String,
    /// user → password.
    pub users: Vec<(String, String)>,
    pub min_expires: u32,
    pub max_expires: u32,
}

impl fmt::Debug for PbxConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PbxConfig")
            .field("addr", &self.addr)
            .field("domain", &self.domain)
            .field(
                "users",
                &self.users.iter().map(|(u, _)| u.as_str()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// A registered contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub contact: Uri,
    /// Where requests for it go: the address its REGISTER came from (NAT-friendly).
    pub target: Target,
    pub expires_at: Instant,
}

/// Why input was dropped (for a log line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped(pub String);

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How long a nonce stays valid.
const NONCE_LIFETIME: Duration = Duration::from_secs(300);

pub struct Pbx {
    config: PbxConfig,
    passwords: HashMap<String, String>,
    location: HashMap<String, Binding>,
    nonces: HashMap<String, Instant>,
    rng: fastrand::Rng,
    out: VecDeque<Transmit>,
}

impl fmt::Debug for Pbx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pbx")
            .field("config", &self.config)
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl Pbx {
    pub fn new(config: PbxConfig, seed: u64) -> Pbx {
        let passwords = config.users.iter().cloned().collect();
        Pbx {
            config,
            passwords,
            location: HashMap::new(),
            nonces: HashMap::new(),
            rng: fastrand::Rng::with_seed(seed),
            out: VecDeque::new(),
        }
    }

    /// Current registrations: user → binding.
    pub fn registrations(&self) -> &HashMap<String, Binding> {
        &self.location
    }

    /// A datagram from `source`.
    pub fn handle_receive(&mut self, now: Instant, source: Target, data: &[u8]) -> Result<(), Dropped> {
        if data.iter().all(|b| b.is_ascii_whitespace()) {
            return Ok(());
        }
        let msg =
            Message::parse(data).map_err(|e| Dropped(format!("PBX: unparsable SIP from {source}: {e}")))?;
        match msg {
            Message::Request(req) => self.on_request(now, req, source),
            Message::Response(resp) => self.on_response(resp),
        }
    }

    fn is_us(&self, uri: &Uri) -> bool {
        let host = uri.host.trim_start_matches('[').trim_end_matches(']');
        let ours = host.eq_ignore_ascii_case(&self.config.domain)
            || host.parse::<IpAddr>().is_ok_and(|ip| ip == self.config.addr.ip());
        let port_ok = match uri.port {
            None => true,
            Some(p) => p == self.config.addr.port(),
        };
        ours && port_ok
    }

    fn reply(&mut self, source: Target, req: &Request, status: u16, reason: &str, extra: &[(&str, String)]) {
        let mut resp = Response::for_request(req, status, reason);
        if status > 100
            && let Ok(to) = req.headers.to()
            && to.tag().is_none()
            && let Some(raw) = req.headers.get("To")
        {
            let tag: String = (0..10).map(|_| self.rng.alphanumeric()).collect();
            resp.headers.set("To", format!("{raw};tag={tag}"));
        }
        for (n, v) in extra {
            resp.headers.push(*n, v.clone());
        }
        resp.headers.push("Server", "sipline-pbx");
        self.out.push_back(Transmit {
            target: source,
            data: resp.to_bytes(),
        });
    }

    fn new_nonce(&mut self, now: Instant) -> String {
        let nonce: String = (0..24).map(|_| self.rng.alphanumeric()).collect();
        self.nonces.insert(nonce.clone(), now);
        nonce
    }

    /// Checks credentials for `user` in `header`; on failure sends the challenge.
    fn authenticate(&mut self, now: Instant, source: Target, req: &Request, user: &str, proxy: bool) -> bool {
        let (header, challenge_header, code, reason) = if proxy {
            (
                "Proxy-Authorization",
                "Proxy-Authenticate",
                407,
                "Proxy Authentication Required",
            )
        } else {
            ("Authorization", "WWW-Authenticate", 401, "Unauthorized")
        };
        let mut stale = false;
        if let Some(auth) = req.headers.get(header).and_then(|v| Authorization::parse(v).ok()) {
            let fresh = self
                .nonces
                .get(&auth.nonce)
                .is_some_and(|issued| now.saturating_duration_since(*issued) < NONCE_LIFETIME);
            let password = self.passwords.get(&auth.username).cloned();
            if auth.username == user
                && auth.realm == self.config.domain
                && let Some(pw) = password
                && verify(&auth, &pw, req.method.as_str())
            {
                if fresh {
                    return true;
                }
                stale = true;
            }
        }
        let nonce = self.new_nonce(now);
        let value = format!(
            "Digest realm=\"{}\", nonce=\"{nonce}\", qop=\"auth\", algorithm=MD5{}",
            self.config.domain,
            if stale { ", stale=true" } else { "" }
        );
        self.reply(source, req, code, reason, &[(challenge_header, value)]);
        false
    }

    fn on_request(&mut self, now: Instant, mut req: Request, source: Target) -> Result<(), Dropped> {
        if let Err(e) = req.validate() {
            if req.method != Method::Ack && req.headers.top_via().is_ok() {
                self.reply(source, &req, 400, "Bad Request", &[]);
            }
            return Err(Dropped(format!("PBX: bad {} from {source}: {e}", req.method)));
        }
        let max_forwards = req
            .headers
            .u32_value("Max-Forwards")
            .and_then(Result::ok)
            .unwrap_or(70);
        if max_forwards == 0 {
            if req.method != Method::Ack {
                self.reply(source, &req, 483, "Too Many Hops", &[]);
            }
            return Ok(());
        }
        // loose routing: a first Route that names us is ours to remove
        let routes: Vec<String> = req
            .headers
            .values("Route")
            .into_iter()
            .map(str::to_owned)
            .collect();
        let mut remaining = routes.clone();
        if let Some(first) = routes.first()
            && NameAddr::parse(first).is_ok_and(|n| self.is_us(&n.uri))
        {
            remaining.remove(0);
        }
        if remaining.len() != routes.len() {
            req.headers.remove("Route");
            for r in &remaining {
                req.headers.push("Route", r.clone());
            }
        }
        let in_dialog = req.headers.to().ok().is_some_and(|t| t.tag().is_some());
        let for_us = remaining.is_empty() && self.is_us(&req.uri) && req.uri.user.is_none();

        if req.method == Method::Register {
            return self.register(now, req, source);
        }
        if for_us {
            match req.method {
                Method::Options => self.reply(
                    source,
                    &req,
                    200,
                    "OK",
                    &[(
                        "Allow",
                        "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, REGISTER".into(),
                    )],
                ),
                Method::Ack => {}
                _ => self.reply(source, &req, 404, "Not Found", &[]),
            }
            return Ok(());
        }

        let target = if let Some(route) = remaining.first() {
            // another hop was recorded in the dialog's route set
            let Some(uri) = NameAddr::parse(route).ok().map(|n| n.uri) else {
                return Err(Dropped("PBX: unusable Route".into()));
            };
            self.resolve(&uri)
        } else if self.is_us(&req.uri) && req.uri.user.is_some() {
            // an address-of-record of ours: an initial request, or its CANCEL/ACK
            if !in_dialog && !matches!(req.method, Method::Cancel | Method::Ack) {
                let from_user = req.headers.from().ok().and_then(|f| f.uri.user);
                let Some(from_user) = from_user.filter(|u| self.passwords.contains_key(u)) else {
                    self.reply(source, &req, 403, "Forbidden", &[]);
                    return Ok(());
                };
                if !self.authenticate(now, source, &req, &from_user, true) {
                    return Ok(());
                }
                req.headers.remove("Proxy-Authorization");
            }
            let user = req.uri.user.clone().unwrap_or_default();
            match self.location.get(&user).filter(|b| b.expires_at > now) {
                Some(b) => {
                    req.uri = b.contact.clone();
                    Some(b.target)
                }
                None => {
                    if req.method != Method::Ack {
                        let (code, reason) = if self.passwords.contains_key(&user) {
                            (480, "Temporarily Unavailable")
                        } else {
                            (404, "Not Found")
                        };
                        self.reply(source, &req, code, reason, &[]);
                    }
                    return Ok(());
                }
            }
        } else {
            // a contact (remote target of a dialog)
            self.resolve(&req.uri)
        };
        let Some(target) = target else {
            if req.method != Method::Ack {
                self.reply(source, &req, 404, "Not Found", &[]);
            }
            return Ok(());
        };
        if !target.addr.ip().is_loopback() {
            // the embedded PBX only ever talks to this machine
            if req.method != Method::Ack {
                self.reply(source, &req, 403, "Embedded PBX relays to loopback only", &[]);
            }
            return Ok(());
        }
        if req.method == Method::Invite && !in_dialog {
            let rr = format!("<sip:{};lr>", self.config.addr);
            req.headers.push_front("Record-Route", rr);
        }
        self.forward(req, source, target, max_forwards - 1);
        Ok(())
    }

    /// Where a URI leads: a registered contact goes to where that phone registered
    /// from; an IP literal to itself.
    fn resolve(&self, uri: &Uri) -> Option<Target> {
        if let Some(b) = self.location.values().find(|b| {
            b.contact.host.eq_ignore_ascii_case(&uri.host)
                && b.contact.port == uri.port
                && b.contact.user == uri.user
        }) {
            return Some(b.target);
        }
        let host = uri.host.trim_start_matches('[').trim_end_matches(']');
        let ip = host.parse::<IpAddr>().ok()?;
        let transport = uri
            .transport_param()
            .and_then(|t| Transport::parse(&t))
            .unwrap_or(Transport::Udp);
        Some(Target {
            transport,
            addr: SocketAddr::new(ip, uri.port.unwrap_or(5060)),
        })
    }

    fn forward(&mut self, mut req: Request, source: Target, target: Target, max_forwards: u32) {
        let Ok(top) = req.headers.top_via() else { return };
        // stamp where it really came from, so the response finds its way back (RFC 3581)
        let mut stamped = top.clone();
        stamped
            .params
            .set("received", Some(&source.addr.ip().to_string()));
        if stamped.params.contains("rport") {
            stamped.params.set("rport", Some(&source.addr.port().to_string()));
        }
        let mut vias: Vec<String> = req.headers.values("Via").into_iter().map(str::to_owned).collect();
        if let Some(first) = vias.first_mut() {
            *first = stamped.to_string();
        }
        req.headers.remove("Via");
        // a branch derived from the incoming one: retransmissions, CANCEL and the ACK
        // for a negative answer get the same branch as their INVITE (RFC 3261 §16.11)
        let branch = format!(
            "z9hG4bK-spx-{:016x}",
            fnv1a(
                top.branch().unwrap_or_default().as_bytes(),
                top.sent_by().as_bytes()
            )
        );
        req.headers.push(
            "Via",
            format!(
                "SIP/2.0/{} {};branch={branch};rport",
                target.transport.via_name(),
                self.config.addr
            ),
        );
        for v in vias {
            req.headers.push("Via", v);
        }
        req.headers.set("Max-Forwards", max_forwards.to_string());
        self.out.push_back(Transmit {
            target,
            data: req.to_bytes(),
        });
    }

    fn on_response(&mut self, mut resp: Response) -> Result<(), Dropped> {
        let vias: Vec<String> = resp
            .headers
            .values("Via")
            .into_iter()
            .map(str::to_owned)
            .collect();
        let Some(top) = vias.first().and_then(|v| Via::parse(v).ok()) else {
            return Err(Dropped("PBX: response without Via".into()));
        };
        let ours = top
            .host
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip == self.config.addr.ip())
            && top.port == Some(self.config.addr.port())
            && top.branch().is_some_and(|b| b.starts_with("z9hG4bK-spx-"));
        if !ours {
            return Err(Dropped("PBX: response not for us".into()));
        }
        let Some(next) = vias.get(1).and_then(|v| Via::parse(v).ok()) else {
            return Ok(()); // a response to something we originated: nothing to do
        };
        let host = next
            .params
            .get_unquoted("received")
            .unwrap_or(&next.host)
            .to_owned();
        let port = next
            .params
            .get("rport")
            .flatten()
            .and_then(|p| p.parse().ok())
            .or(next.port)
            .unwrap_or(5060);
        let Ok(ip) = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        else {
            return Err(Dropped(format!("PBX: cannot route a response to {host}")));
        };
        if !ip.is_loopback() {
            return Err(Dropped("PBX: relays to loopback only".into()));
        }
        resp.headers.remove("Via");
        for v in &vias[1..] {
            resp.headers.push("Via", v.clone());
        }
        let transport = Transport::parse(&next.transport).unwrap_or(Transport::Udp);
        self.out.push_back(Transmit {
            target: Target {
                transport,
                addr: SocketAddr::new(ip, port),
            },
            data: resp.to_bytes(),
        });
        Ok(())
    }

    fn register(&mut self, now: Instant, req: Request, source: Target) -> Result<(), Dropped> {
        let Some(user) = req.headers.to().ok().and_then(|t| t.uri.user) else {
            self.reply(source, &req, 400, "Bad Request", &[]);
            return Ok(());
        };
        if !self.passwords.contains_key(&user) {
            self.reply(source, &req, 404, "Not Found", &[]);
            return Ok(());
        }
        if !self.authenticate(now, source, &req, &user, false) {
            return Ok(());
        }
        let default_expires = req
            .headers
            .u32_value("Expires")
            .and_then(Result::ok)
            .unwrap_or(self.config.max_expires);
        let contacts = req.headers.values("Contact");
        if contacts.iter().any(|c| c.trim() == "*") {
            if default_expires == 0 {
                self.location.remove(&user);
                self.reply(source, &req, 200, "OK", &[]);
            } else {
                self.reply(source, &req, 400, "Bad Request", &[]);
            }
            return Ok(());
        }
        let parsed: Vec<NameAddr> = contacts
            .into_iter()
            .filter_map(|c| NameAddr::parse(c).ok())
            .collect();
        let mut extra = Vec::new();
        for c in parsed {
            let expires = c
                .params
                .get_unquoted("expires")
                .and_then(|e| e.parse::<u32>().ok())
                .unwrap_or(default_expires);
            if expires == 0 {
                if self.location.get(&user).is_some_and(|b| b.contact == c.uri) {
                    self.location.remove(&user);
                }
                continue;
            }
            if expires < self.config.min_expires {
                self.reply(
                    source,
                    &req,
                    423,
                    "Interval Too Brief",
                    &[("Min-Expires", self.config.min_expires.to_string())],
                );
                return Ok(());
            }
            let granted = expires.min(self.config.max_expires);
            self.location.insert(
                user.clone(),
                Binding {
                    contact: c.uri.clone(),
                    target: source,
                    expires_at: now + Duration::from_secs(u64::from(granted)),
                },
            );
            extra.push(("Contact", format!("<{}>;expires={granted}", c.uri)));
        }
        self.reply(source, &req, 200, "OK", &extra);
        Ok(())
    }

    /// Forgets expired bindings and nonces.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.location.retain(|_, b| b.expires_at > now);
        self.nonces
            .retain(|_, issued| now.saturating_duration_since(*issued) < NONCE_LIFETIME);
    }

    /// When [`Pbx::handle_timeout`] has work next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let binding = self.location.values().map(|b| b.expires_at).min();
        let nonce = self.nonces.values().map(|i| *i + NONCE_LIFETIME).min();
        [binding, nonce].into_iter().flatten().min()
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }
}

fn fnv1a(a: &[u8], b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in a.iter().chain(b"|").chain(b) {
        h ^= u64::from(*byte);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests;
