//! The REGISTER client (RFC 3261 §10) for one account: registers, answers digest
//! challenges (401 and 407), refreshes before the granted expiry, backs off after
//! failures, and unregisters (`Expires: 0`) when told to stop. A line that takes an
//! account over from a gateway node that died first removes every binding of the
//! account (`Contact: *`, RFC 3261 §10.2.2), so the PBX does not keep ringing the dead one.
//!
//! It builds requests and reacts to their outcomes; the [`crate::UserAgent`] carries
//! them through the transaction layer. Only one REGISTER is in flight at a time
//! (RFC 3261 §10.2: a UA must not send a new registration until the previous one
//! has completed), so a stop that arrives mid-flight waits for the outcome.

use std::time::{Duration, Instant};

use crate::auth::{Authorization, Challenge, Credentials};
use crate::message::{Method, Request, Response, Uri};
use crate::user_agent::{Account, UaConfig, random_token};

/// What the browser sees of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineState {
    Registering,
    Registered,
    RegistrationFailed,
    Unregistering,
    Unregistered,
}

/// A visible state change with the SIP status that caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineStatus {
    pub state: LineState,
    pub code: Option<u16>,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Goal {
    Registered,
    Unregistered,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimerKind {
    Refresh,
    Retry,
}

/// How many challenges in a row we answer before giving up (stale nonces etc.).
const MAX_CHALLENGES: u32 = 3;

/// One account's registration.
#[derive(Debug)]
pub struct Registration {
    account: Account,
    aor: Uri,
    contact: Uri,
    call_id: String,
    from_tag: String,
    cseq: u32,
    goal: Goal,
    visible: Option<LineStatus>,
    /// Expires value of the REGISTER in flight (0 = an unregister).
    in_flight: Option<u32>,
    /// The registrar holds a binding for us (as far as we know).
    bound: bool,
    expires: u32,
    timer: Option<(Instant, TimerKind)>,
    failures: u32,
    /// Last challenge and whether it came as 407 (proxy) rather than 401.
    challenge: Option<(Challenge, bool)>,
    nc: u32,
    /// Our last request answered a challenge received for the request before it
    /// (so another plain challenge means the credentials are wrong). Credentials
    /// sent pre-emptively from a cached challenge do not count.
    answered_challenge: bool,
    /// A challenge just arrived and the next request answers it.
    fresh_challenge: bool,
    challenges_in_row: u32,
    /// Remove every binding of the account before registering ours.
    replace_others: bool,
    /// The REGISTER in flight is that removal (`Contact: *`).
    clearing: bool,
    outbox: Vec<Request>,
    changes: Vec<LineStatus>,
    done: bool,
}

impl Registration {
    pub fn new(account: Account, config: &UaConfig, rng: &mut fastrand::Rng) -> Registration {
        let aor = Uri::sip(Some(&account.user), &account.domain, None);
        let mut contact = Uri::sip(
            Some(&account.user),
            &config.advertise_host,
            Some(config.advertise_port),
        );
        if config.transport.is_reliable() {
            contact
                .params
                .set("transport", Some(config.transport.param_name()));
        }
        Registration {
            aor,
            contact,
            call_id: random_token(rng, 24),
            from_tag: random_token(rng, 12),
            cseq: rng.u32(1..10_000),
            goal: Goal::Unregistered,
            visible: None,
            in_flight: None,
            bound: false,
            expires: config.expires,
            timer: None,
            failures: 0,
            challenge: None,
            nc: 0,
            answered_challenge: false,
            fresh_challenge: false,
            challenges_in_row: 0,
            replace_others: false,
            clearing: false,
            outbox: Vec::new(),
            changes: Vec::new(),
            done: false,
            account,
        }
    }

    pub fn account(&self) -> &Account {
        &self.account
    }

    /// The Contact URI we register; requests to it are for this line.
    pub fn contact(&self) -> &Uri {
        &self.contact
    }

    /// The last visible state.
    pub fn status(&self) -> Option<&LineStatus> {
        self.visible.as_ref()
    }

    /// True once [`Registration::stop`] was called.
    pub fn is_stopping(&self) -> bool {
        self.goal == Goal::Unregistered
    }

    /// True once the line has unregistered after [`Registration::stop`].
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// On [`Registration::start`], first remove every binding the registrar holds for
    /// the account (another holder's, which is gone), then register ours.
    pub fn replace_other_bindings(&mut self) {
        self.replace_others = true;
    }

    /// Begin registering.
    pub fn start(&mut self, now: Instant, config: &UaConfig, rng: &mut fastrand::Rng) {
        self.goal = Goal::Registered;
        if self.in_flight.is_none() {
            self.clearing = std::mem::take(&mut self.replace_others);
            let expires = if self.clearing { 0 } else { self.expires };
            self.send(now, config, rng, expires);
            self.set_visible(LineState::Registering, None, None);
        }
    }

    /// Unregister and finish. Without a reachable registrar there is nothing to
    /// remove, so the line finishes at once.
    pub fn stop(
        &mut self,
        now: Instant,
        config: &UaConfig,
        rng: &mut fastrand::Rng,
        registrar_reachable: bool,
    ) {
        self.goal = Goal::Unregistered;
        self.timer = None;
        if self.in_flight.is_some() {
            return; // decided when the outcome arrives
        }
        if self.bound && registrar_reachable {
            self.send(now, config, rng, 0);
            self.set_visible(LineState::Unregistering, None, None);
        } else {
            self.finish(None, None);
        }
    }

    /// The registrar stopped answering keepalives: the binding is probably gone.
    pub fn registrar_down(&mut self) {
        if self.goal == Goal::Registered {
            self.timer = None;
            self.bound = false;
            if self.in_flight.is_none() {
                self.set_visible(
                    LineState::RegistrationFailed,
                    Some(503),
                    Some("PBX unreachable".into()),
                );
            }
        }
    }

    /// The registrar answers again: register at once (it may have lost our binding).
    pub fn registrar_up(&mut self, now: Instant, config: &UaConfig, rng: &mut fastrand::Rng) {
        if self.goal == Goal::Registered && self.in_flight.is_none() {
            self.failures = 0;
            self.timer = None;
            self.send(now, config, rng, self.expires);
            self.set_visible(LineState::Registering, None, None);
        }
    }

    /// A final (or provisional) response to our REGISTER.
    pub fn on_response(&mut self, now: Instant, resp: &Response, config: &UaConfig, rng: &mut fastrand::Rng) {
        let Some(sent_expires) = self.in_flight else {
            return;
        };
        if resp.is_provisional() {
            return;
        }
        self.in_flight = None;
        match resp.status {
            200..=299 if self.clearing => {
                self.challenges_in_row = 0;
                self.cleared(now, config, rng);
            }
            200..=299 => {
                self.challenges_in_row = 0;
                if sent_expires == 0 {
                    self.bound = false;
                    self.finish(Some(resp.status), None);
                    return;
                }
                let granted = self.granted_expiry(resp).unwrap_or(sent_expires);
                self.bound = granted > 0;
                if self.goal == Goal::Unregistered {
                    self.send(now, config, rng, 0);
                    self.set_visible(LineState::Unregistering, None, None);
                    return;
                }
                if granted == 0 {
                    self.fail(
                        now,
                        rng,
                        config,
                        resp.status,
                        "registrar granted no binding".into(),
                    );
                    return;
                }
                self.failures = 0;
                self.timer = Some((now + refresh_delay(granted), TimerKind::Refresh));
                self.set_visible(
                    LineState::Registered,
                    Some(resp.status),
                    Some(resp.reason.clone()),
                );
            }
            401 | 407 => {
                let header = if resp.status == 401 {
                    "WWW-Authenticate"
                } else {
                    "Proxy-Authenticate"
                };
                let picked = Challenge::pick(resp.headers.get_all(header));
                match picked {
                    Ok(ch)
                        if (!self.answered_challenge || ch.stale)
                            && self.challenges_in_row < MAX_CHALLENGES =>
                    {
                        self.challenges_in_row += 1;
                        self.challenge = Some((ch, resp.status == 407));
                        self.fresh_challenge = true;
                        self.nc = 0;
                        self.send(now, config, rng, sent_expires);
                    }
                    Ok(_) => {
                        self.challenges_in_row = 0;
                        self.outcome_failed(
                            now,
                            rng,
                            config,
                            sent_expires,
                            resp.status,
                            "credentials rejected".into(),
                        );
                    }
                    Err(e) => {
                        self.challenges_in_row = 0;
                        self.outcome_failed(now, rng, config, sent_expires, resp.status, e.to_string());
                    }
                }
            }
            423 => {
                let min = resp.headers.u32_value("Min-Expires").and_then(Result::ok);
                match min {
                    Some(min) if min > self.expires && sent_expires != 0 => {
                        self.expires = min;
                        self.send(now, config, rng, min);
                    }
                    _ => self.outcome_failed(now, rng, config, sent_expires, 423, resp.reason.clone()),
                }
            }
            code => self.outcome_failed(now, rng, config, sent_expires, code, resp.reason.clone()),
        }
    }

    /// The REGISTER transaction timed out (or hit a transport error).
    pub fn on_timeout(&mut self, now: Instant, config: &UaConfig, rng: &mut fastrand::Rng) {
        let Some(sent_expires) = self.in_flight.take() else {
            return;
        };
        self.outcome_failed(
            now,
            rng,
            config,
            sent_expires,
            408,
            "no response from registrar".into(),
        );
    }

    /// Refresh or retry time.
    pub fn handle_timeout(
        &mut self,
        now: Instant,
        config: &UaConfig,
        rng: &mut fastrand::Rng,
        registrar_reachable: bool,
    ) {
        let Some((at, kind)) = self.timer else { return };
        if now < at {
            return;
        }
        self.timer = None;
        if self.goal != Goal::Registered || self.in_flight.is_some() || !registrar_reachable {
            return;
        }
        self.send(now, config, rng, self.expires);
        if kind == TimerKind::Retry {
            self.set_visible(LineState::Registering, None, None);
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timer.map(|(at, _)| at)
    }

    /// Requests to send, in order.
    pub fn drain_requests(&mut self) -> std::vec::Drain<'_, Request> {
        self.outbox.drain(..)
    }

    /// Visible state changes, in order.
    pub fn drain_changes(&mut self) -> std::vec::Drain<'_, LineStatus> {
        self.changes.drain(..)
    }

    fn outcome_failed(
        &mut self,
        now: Instant,
        rng: &mut fastrand::Rng,
        config: &UaConfig,
        sent_expires: u32,
        code: u16,
        reason: String,
    ) {
        if self.clearing {
            // could not remove them: register ours anyway (the others expire in time)
            self.cleared(now, config, rng);
            return;
        }
        if sent_expires == 0 || self.goal == Goal::Unregistered {
            // the unregister failed, or we were stopping anyway: the binding expires
            // on its own at the registrar
            self.bound = false;
            self.finish(Some(code), Some(reason));
            return;
        }
        self.fail(now, rng, config, code, reason);
    }

    /// The removal of every binding is over: register ours (or finish if stopping).
    fn cleared(&mut self, now: Instant, config: &UaConfig, rng: &mut fastrand::Rng) {
        self.clearing = false;
        self.bound = false;
        if self.goal == Goal::Registered {
            self.send(now, config, rng, self.expires);
        } else {
            self.finish(None, None);
        }
    }

    fn fail(&mut self, now: Instant, rng: &mut fastrand::Rng, config: &UaConfig, code: u16, reason: String) {
        self.failures += 1;
        let delay = backoff(config.retry_min, config.retry_max, self.failures, rng);
        self.timer = Some((now + delay, TimerKind::Retry));
        self.set_visible(LineState::RegistrationFailed, Some(code), Some(reason));
    }

    fn finish(&mut self, code: Option<u16>, reason: Option<String>) {
        self.timer = None;
        self.done = true;
        self.set_visible(LineState::Unregistered, code, reason);
    }

    fn set_visible(&mut self, state: LineState, code: Option<u16>, reason: Option<String>) {
        let status = LineStatus { state, code, reason };
        if self.visible.as_ref().map(|s| s.state) == Some(state) && state != LineState::RegistrationFailed {
            // refreshes do not re-announce "registered"
            self.visible = Some(status);
            return;
        }
        self.visible = Some(status.clone());
        self.changes.push(status);
    }

    /// The expiry the registrar granted to our Contact (RFC 3261 §10.2.4).
    fn granted_expiry(&self, resp: &Response) -> Option<u32> {
        let contacts = resp.headers.contacts().ok().unwrap_or_default();
        let ours = contacts.iter().find(|c| {
            c.uri.user == self.contact.user
                && c.uri.host.eq_ignore_ascii_case(&self.contact.host)
                && c.uri.port.unwrap_or(5060) == self.contact.port.unwrap_or(5060)
        });
        if let Some(e) = ours.and_then(|c| c.params.get_unquoted("expires")) {
            return e.parse().ok();
        }
        resp.headers.u32_value("Expires").and_then(Result::ok)
    }

    fn send(&mut self, _now: Instant, config: &UaConfig, rng: &mut fastrand::Rng, expires: u32) {
        self.cseq = self.cseq.wrapping_add(1);
        let uri = Uri::sip(None, &self.account.domain, None);
        let mut req = config.new_request(Method::Register, uri.clone(), rng);
        let from = display_addr(&self.account.display_name, &self.aor);
        req.headers.push("From", format!("{from};tag={}", self.from_tag));
        req.headers.push("To", from);
        req.headers.push("Call-ID", self.call_id.clone());
        req.headers.push("CSeq", format!("{} REGISTER", self.cseq));
        if self.clearing {
            req.headers.push("Contact", "*");
        } else {
            req.headers.push("Contact", format!("<{}>", self.contact));
        }
        req.headers.push("Expires", expires.to_string());
        req.headers.push("Allow", crate::user_agent::ALLOW);
        req.headers.push("User-Agent", config.user_agent.clone());
        for (name, value) in &config.headers.register {
            req.headers.push(name.clone(), value.clone());
        }
        self.answered_challenge = self.challenge.is_some() && std::mem::take(&mut self.fresh_challenge);
        if let Some((ch, proxy)) = &self.challenge {
            self.nc += 1;
            let creds = Credentials {
                username: self.account.auth_user.clone(),
                password: self.account.password.clone(),
            };
            let cnonce = random_token(rng, 16);
            let auth = Authorization::answer(ch, &creds, "REGISTER", &uri.to_string(), &cnonce, self.nc);
            let name = if *proxy {
                "Proxy-Authorization"
            } else {
                "Authorization"
            };
            req.headers.push(name, auth.to_string());
        }
        self.in_flight = Some(expires);
        self.outbox.push(req);
    }
}

/// `"Display" <uri>` or `<uri>`.
pub(crate) fn display_addr(display: &Option<String>, uri: &Uri) -> String {
    match display {
        Some(d) if !d.is_empty() => {
            format!("\"{}\" <{uri}>", d.replace('\\', "\\\\").replace('"', "\\\""))
        }
        _ => format!("<{uri}>"),
    }
}

/// Refresh a little before the binding expires: 10 % early, at least 5 s early for
/// short expiries, but never before half of it.
fn refresh_delay(granted: u32) -> Duration {
    let early = (granted / 10).max(5).min(granted / 2);
    Duration::from_secs(u64::from(granted - early).max(1))
}

/// Exponential back-off with ±20 % jitter so that a pool of lines does not retry in
/// lock-step after a PBX outage.
fn backoff(min: Duration, max: Duration, failures: u32, rng: &mut fastrand::Rng) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    let base = min.saturating_mul(1 << exp).min(max);
    base.mul_f64(0.8 + 0.4 * rng.f64())
        .min(max)
        .max(Duration::from_millis(100))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refreshes_before_expiry() {
        assert_eq!(refresh_delay(3600), Duration::from_secs(3240));
        assert_eq!(refresh_delay(600), Duration::from_secs(540));
        assert_eq!(refresh_delay(60), Duration::from_secs(54));
        assert_eq!(refresh_delay(10), Duration::from_secs(5));
        assert_eq!(refresh_delay(1), Duration::from_secs(1));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let mut rng = fastrand::Rng::with_seed(1);
        let (min, max) = (Duration::from_secs(2), Duration::from_secs(60));
        for failures in 1..40 {
            let d = backoff(min, max, failures, &mut rng);
            let nominal = min.saturating_mul(1 << (failures - 1).min(16)).min(max);
            assert!(
                d >= nominal.mul_f64(0.8) && d <= nominal.mul_f64(1.2).min(max),
                "{failures}: {d:?}"
            );
        }
    }
}
