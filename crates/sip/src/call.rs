//! One phone call on a line (the original example's `Call`), either direction: the
//! INVITE exchange (with digest challenges, provisional responses, early media,
//! CANCEL both ways, ACK for 2xx), the confirmed dialog (BYE both ways, re-INVITEs
//! and INFO from the far end), and the state the browser sees.
//!
//! SDP is opaque here: the call carries bytes between the far end and whoever owns
//! media (the gateway), which supplies offers and answers. Like the registration, a
//! call builds messages and reacts to outcomes; the user agent moves them.

use std::time::{Duration, Instant};

use crate::auth::{Authorization, Challenge, Credentials};
use crate::dialog::Dialog;
use crate::message::{Method, NameAddr, Request, Response, Uri};
use crate::registration::display_addr;
use crate::session_timer::{self, Refresher, Session, UasDecision};
use crate::transaction::{ClientKey, ServerKey};
use crate::transport::Target;
use crate::user_agent::{ALLOW, Account, UaConfig, random_token};

/// Identifies a call within the user agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallRef(pub u64);

impl std::fmt::Display for CallRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "call-{}", self.0)
    }
}

/// What the browser sees of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallState {
    Dialing,
    Ringing,
    EarlyMedia,
    InCall,
    /// In call, and the far end has put us on hold.
    Held,
    Busy,
    Rejected,
    Cancelled,
    NoAnswer,
    Completed,
    Failed,
}

impl CallState {
    /// The call is over (the line is free for another).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            CallState::Busy
                | CallState::Rejected
                | CallState::Cancelled
                | CallState::NoAnswer
                | CallState::Completed
                | CallState::Failed
        )
    }
}

/// A visible state change with the SIP status behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallStatus {
    pub state: CallState,
    pub code: Option<u16>,
    pub reason: Option<String>,
}

/// What a call tells its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallEvent {
    /// A new incoming call (already ringing at the far end's side: 180 sent).
    Incoming {
        /// The caller's user part (their number), or the whole URI if it has none.
        from: String,
        display_name: Option<String>,
        /// The SDP offer of the INVITE, if it had one.
        offer: Option<Vec<u8>>,
    },
    Status(CallStatus),
    /// The far end's SDP answer (or offer, for an INVITE we answer), to point media
    /// at. `early` for SDP in a provisional response.
    RemoteSdp {
        sdp: Vec<u8>,
        early: bool,
    },
    /// The far end sent a new offer (re-INVITE; `None` when it asks for ours): answer
    /// it with [`crate::UserAgent::answer_offer`].
    Offer {
        sdp: Option<Vec<u8>>,
    },
    /// An INFO request in the dialog (DTMF relay and friends).
    Info {
        content_type: String,
        body: Vec<u8>,
    },
    /// Our re-INVITE was refused or got no answer; the previous media stays.
    ReinviteFailed {
        code: u16,
    },
    /// The call's resources may be released; nothing more will come for it.
    Ended,
}

/// Why a call request cannot be carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    NoSuchLine,
    NoSuchCall,
    /// The line already has a call.
    LineBusy,
    /// The operation does not fit the call's state (accept an outgoing call…).
    WrongState(&'static str),
    /// The number cannot be turned into a SIP URI.
    BadNumber,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::NoSuchLine => write!(f, "no such line"),
            CallError::NoSuchCall => write!(f, "no such call"),
            CallError::LineBusy => write!(f, "the line already has a call"),
            CallError::WrongState(s) => write!(f, "{s}"),
            CallError::BadNumber => write!(f, "the number cannot be dialled"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cancel {
    No,
    /// Wanted, but no provisional response yet (RFC 3261 §9.1: wait for one).
    Wanted,
    Sent,
}

#[derive(Debug)]
enum Phase {
    /// Our INVITE is out.
    Inviting,
    /// Their INVITE is ringing here.
    Offered,
    /// We sent 2xx, waiting for the ACK.
    Answered,
    Confirmed,
    /// Over from the browser's point of view; waiting for transactions to finish.
    Closing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    /// Nobody answered (or accepted) in time.
    NoAnswer,
    /// A CANCEL got no final response for the INVITE: give up on it.
    CancelGiveUp,
    /// Our re-INVITE met the far end's (491 Request Pending): send it again now.
    ReinviteRetry,
}

/// How long a CANCELled INVITE may take to end (64*T1).
const CANCEL_GIVE_UP: Duration = Duration::from_secs(32);
/// How many challenges in a row an INVITE answers.
const MAX_CHALLENGES: u32 = 2;
/// How many challenges the requests within one dialog answer in all (BYE, INFO,
/// re-INVITE): a far end that keeps challenging gets no more.
const MAX_DIALOG_CHALLENGES: u32 = 8;
/// How many times a re-INVITE is sent again after 491 Request Pending.
const MAX_GLARE_RETRIES: u32 = 3;
/// In-dialog requests remembered for answering a challenge to them.
const MAX_REMEMBERED_REQUESTS: usize = 16;

#[derive(Debug)]
pub struct Call {
    pub id: CallRef,
    pub line: crate::LineId,
    pub outgoing: bool,
    account: Account,
    phase: Phase,
    dialog: Option<Dialog>,
    /// The early dialog of our INVITE (from its first 18x with a To tag), until the
    /// answer: the far end may send UPDATE in it.
    early: Option<Dialog>,
    visible: Option<CallState>,
    /// Our current SDP (offer or answer), re-sent when the far end asks again.
    local_sdp: Vec<u8>,
    /// The INVITE: ours (outgoing), or theirs (incoming).
    invite: Request,
    invite_client: Option<ClientKey>,
    invite_server: Option<ServerKey>,
    local_tag: String,
    provisional: bool,
    early_sdp_seen: Option<Vec<u8>>,
    cancel: Cancel,
    challenges: u32,
    nc: u32,
    /// Client transactions of this call still running.
    pending: usize,
    /// The last ACK for a 2xx, re-sent when the 2xx is retransmitted.
    last_ack: Option<(Request, Target)>,
    /// A re-INVITE waiting for [`Call::answer_offer`].
    pending_offer: Option<(ServerKey, Request)>,
    /// Our re-INVITE in flight (hold, resume): its transaction and CSeq.
    reinvite: Option<(Option<ClientKey>, u32)>,
    reinvite_answered: bool,
    /// Times our current re-INVITE met glare (491) and was sent again.
    glare_retries: u32,
    /// Our in-dialog BYE and INFO requests awaiting a final response, to send again
    /// with credentials if challenged.
    dialog_requests: Vec<Request>,
    dialog_challenges: u32,
    /// The session timer agreed (RFC 4028), and when it next fires: our refresh is
    /// due, or the far end's is overdue.
    session: Option<(Session, Instant)>,
    /// Our refresh is out (a second firing then means the session expired).
    refresh_sent: bool,
    /// 422 answers followed for our INVITE.
    too_small: u32,
    /// The far end accepts UPDATE (its Allow said so): refreshes go as UPDATE.
    peer_allows_update: bool,
    /// As caller: the RSeq of the last reliable provisional response we PRACKed.
    last_rseq: Option<u32>,
    /// As callee: our reliable 180 (the caller requires 100rel), until PRACKed.
    reliable: Option<Reliable>,
    /// As callee: the RSeq the caller PRACKed (a retransmitted PRACK is answered 200).
    acked_rseq: Option<u32>,
    timer: Option<(Instant, Timer)>,
    requests: Vec<(Request, Target)>,
    responses: Vec<(ServerKey, Response)>,
    events: Vec<CallEvent>,
    ended: bool,
}

impl Call {
    fn base(id: CallRef, line: crate::LineId, outgoing: bool, account: Account, invite: Request) -> Call {
        Call {
            id,
            line,
            outgoing,
            account,
            phase: if outgoing { Phase::Inviting } else { Phase::Offered },
            dialog: None,
            early: None,
            visible: None,
            local_sdp: Vec::new(),
            invite,
            invite_client: None,
            invite_server: None,
            local_tag: String::new(),
            provisional: false,
            early_sdp_seen: None,
            cancel: Cancel::No,
            challenges: 0,
            nc: 0,
            pending: 0,
            last_ack: None,
            pending_offer: None,
            reinvite: None,
            reinvite_answered: false,
            glare_retries: 0,
            dialog_requests: Vec::new(),
            dialog_challenges: 0,
            session: None,
            refresh_sent: false,
            too_small: 0,
            peer_allows_update: false,
            last_rseq: None,
            reliable: None,
            acked_rseq: None,
            timer: None,
            requests: Vec::new(),
            responses: Vec::new(),
            events: Vec::new(),
            ended: false,
        }
    }

    /// Places a call to `number` (a user part at the account's domain) with our offer.
    #[allow(clippy::too_many_arguments)]
    pub fn outgoing(
        now: Instant,
        id: CallRef,
        line: crate::LineId,
        account: &Account,
        contact: &Uri,
        number: &str,
        offer: Vec<u8>,
        config: &UaConfig,
        rng: &mut fastrand::Rng,
    ) -> Result<Call, CallError> {
        let user = escape_user(number).ok_or(CallError::BadNumber)?;
        let uri = Uri::sip(Some(&user), &account.domain, None);
        let mut invite = config.new_request(Method::Invite, uri.clone(), rng);
        let from = display_addr(
            &account.display_name,
            &Uri::sip(Some(&account.user), &account.domain, None),
        );
        let local_tag = random_token(rng, 12);
        invite.headers.push("From", format!("{from};tag={local_tag}"));
        invite.headers.push("To", format!("<{uri}>"));
        invite.headers.push("Call-ID", random_token(rng, 24));
        invite
            .headers
            .push("CSeq", format!("{} INVITE", rng.u32(1..10_000)));
        invite.headers.push("Contact", format!("<{contact}>"));
        invite.headers.push("Allow", ALLOW);
        match &config.session_timer {
            Some(timer) => {
                invite.headers.push("Supported", "100rel, timer");
                invite.headers.push("Session-Expires", timer.expires.to_string());
                invite.headers.push("Min-SE", timer.min_se.to_string());
            }
            None => invite.headers.push("Supported", "100rel"),
        }
        invite.headers.push("User-Agent", config.user_agent.clone());
        invite.headers.push("Content-Type", "application/sdp");
        invite.body = offer.clone();
        let mut call = Call::base(id, line, true, account.clone(), invite.clone());
        call.local_sdp = offer;
        call.local_tag = local_tag;
        call.timer = Some((now + config.no_answer_timeout, Timer::NoAnswer));
        call.send(invite, config.next_hop());
        call.set_status(CallState::Dialing, None, None);
        Ok(call)
    }

    /// Takes an incoming INVITE (100 Trying already sent): rings (180) and reports it.
    #[allow(clippy::too_many_arguments)]
    pub fn incoming(
        now: Instant,
        id: CallRef,
        line: crate::LineId,
        account: &Account,
        key: ServerKey,
        invite: Request,
        config: &UaConfig,
        rng: &mut fastrand::Rng,
    ) -> Call {
        let from = invite.headers.from().ok();
        let caller = from
            .as_ref()
            .map(|f| f.uri.user.clone().unwrap_or_else(|| f.uri.to_string()))
            .unwrap_or_default();
        let display_name = from
            .as_ref()
            .and_then(|f| f.display.clone())
            .filter(|d| !d.is_empty());
        let offer = (!invite.body.is_empty()).then(|| invite.body.clone());
        let peer_allows_update = allows_update(&invite.headers);
        let mut call = Call::base(id, line, false, account.clone(), invite);
        call.peer_allows_update = peer_allows_update;
        call.local_tag = random_token(rng, 12);
        call.invite_server = Some(key.clone());
        call.timer = Some((now + config.no_answer_timeout, Timer::NoAnswer));
        let mut ringing = call.response(180, "Ringing", config);
        if requires(&call.invite.headers, "100rel") {
            // RFC 3262: the caller requires our provisional responses to be reliable
            let rseq = rng.u32(1..1 << 30);
            ringing.headers.push("Require", "100rel");
            ringing.headers.push("RSeq", rseq.to_string());
            call.reliable = Some(Reliable::new(now, rseq, key.clone(), ringing.clone()));
        }
        call.early = Dialog::for_uas(&call.invite, &call.local_tag, 0).ok();
        call.responses.push((key, ringing));
        call.events.push(CallEvent::Incoming {
            from: caller,
            display_name,
            offer,
        });
        call.set_status(CallState::Ringing, None, None);
        call
    }

    /// The visible state, once there is one.
    pub fn state(&self) -> Option<CallState> {
        self.visible
    }

    /// The call is over and its record can go.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    pub fn has_dialog(&self) -> bool {
        self.dialog.is_some() && !matches!(self.phase, Phase::Closing)
    }

    /// The dialog, once there is one.
    pub fn dialog(&self) -> Option<&Dialog> {
        self.dialog.as_ref()
    }

    /// Our tag in the call's dialogs (From of our INVITE, To of our answers).
    pub fn local_tag(&self) -> &str {
        &self.local_tag
    }

    /// The server transaction of the INVITE we received.
    pub fn invite_server_key(&self) -> Option<ServerKey> {
        self.invite_server.clone()
    }

    /// Is `req` an in-dialog request of this call?
    pub fn matches(&self, req: &Request) -> bool {
        self.dialog
            .as_ref()
            .or(self.early.as_ref())
            .is_some_and(|d| d.matches_request(req))
    }

    /// Is `key` (of a CANCEL) aimed at our ringing INVITE?
    pub fn is_cancel_target(&self, cancel_key: &ServerKey) -> bool {
        self.invite_server
            .as_ref()
            .is_some_and(|k| k.branch == cancel_key.branch && k.sent_by == cancel_key.sent_by)
    }

    /// Accepts an incoming call with our SDP (an answer, or an offer if theirs had none).
    pub fn accept(&mut self, now: Instant, sdp: Vec<u8>, config: &UaConfig) -> Result<(), CallError> {
        if !matches!(self.phase, Phase::Offered) || self.outgoing {
            return Err(CallError::WrongState("no incoming call is ringing"));
        }
        let key = self
            .invite_server
            .clone()
            .ok_or(CallError::WrongState("no INVITE"))?;
        self.local_sdp = sdp;
        let mut ok = self.response(200, "OK", config);
        let invite = self.invite.clone();
        self.agree_as_uas(now, &invite, &mut ok, config);
        let dialog = Dialog::for_uas(&self.invite, &self.local_tag, 1)
            .map_err(|_| CallError::WrongState("bad INVITE"))?;
        self.dialog = Some(dialog);
        self.early = None;
        self.reliable = None;
        self.responses.push((key, ok));
        self.phase = Phase::Answered;
        self.timer = None;
        self.set_status(CallState::InCall, Some(200), None);
        Ok(())
    }

    /// Ends the call from our side: CANCEL, reject with `reject_code`, or BYE.
    pub fn hang_up(
        &mut self,
        now: Instant,
        reject_code: u16,
        config: &UaConfig,
        rng: &mut fastrand::Rng,
    ) -> Result<(), CallError> {
        self.hang_up_because(now, reject_code, None, config, rng)
    }

    /// As [`Call::hang_up`], with the reason the browser is told (a media timeout…)
    /// in place of the usual one.
    pub fn hang_up_because(
        &mut self,
        now: Instant,
        reject_code: u16,
        why: Option<String>,
        config: &UaConfig,
        rng: &mut fastrand::Rng,
    ) -> Result<(), CallError> {
        match self.phase {
            Phase::Inviting => {
                self.request_cancel(now, config);
                let why = why.unwrap_or_else(|| "cancelled by caller".into());
                self.set_status(CallState::Cancelled, None, Some(why));
            }
            Phase::Offered => {
                let (code, reason) = match reject_code {
                    603 => (603, "Decline"),
                    486 => (486, "Busy Here"),
                    480 => (480, "Temporarily Unavailable"),
                    c if (400..700).contains(&c) => (c, "Rejected"),
                    _ => (486, "Busy Here"),
                };
                self.reject(code, reason, config);
                let why = why.unwrap_or_else(|| reason.into());
                self.set_status(CallState::Rejected, Some(code), Some(why));
            }
            Phase::Answered | Phase::Confirmed => {
                self.send_bye(config, rng);
                let why = why.unwrap_or_else(|| "hung up".into());
                self.set_status(CallState::Completed, None, Some(why));
            }
            Phase::Closing => return Err(CallError::WrongState("the call is already ending")),
        }
        self.maybe_end();
        Ok(())
    }

    fn reject(&mut self, code: u16, reason: &str, config: &UaConfig) {
        if let Some(key) = self.invite_server.clone() {
            let resp = self.response(code, reason, config);
            self.responses.push((key, resp));
        }
        self.phase = Phase::Closing;
        self.timer = None;
    }

    fn request_cancel(&mut self, now: Instant, config: &UaConfig) {
        if self.cancel != Cancel::No {
            return;
        }
        if self.provisional {
            self.send_cancel(now, config);
        } else {
            self.cancel = Cancel::Wanted;
        }
        self.phase = Phase::Closing;
    }

    fn send_cancel(&mut self, now: Instant, config: &UaConfig) {
        let mut cancel = Request::new(Method::Cancel, self.invite.uri.clone());
        if let Some(via) = self.invite.headers.values("Via").first() {
            cancel.headers.push("Via", *via);
        }
        cancel.headers.push("Max-Forwards", "70");
        for name in ["From", "To", "Call-ID"] {
            if let Some(v) = self.invite.headers.get(name) {
                cancel.headers.push(name, v);
            }
        }
        if let Ok(cseq) = self.invite.headers.cseq() {
            cancel.headers.push("CSeq", format!("{} CANCEL", cseq.seq));
        }
        for r in self.invite.headers.get_all("Route") {
            cancel.headers.push("Route", r);
        }
        cancel.headers.push("User-Agent", config.user_agent.clone());
        self.cancel = Cancel::Sent;
        self.timer = Some((now + CANCEL_GIVE_UP, Timer::CancelGiveUp));
        self.send(cancel, config.next_hop());
    }

    fn send_bye(&mut self, config: &UaConfig, rng: &mut fastrand::Rng) {
        self.session = None;
        if let Some(d) = self.dialog.as_mut() {
            let (mut bye, target) = d.request(Method::Bye, None, config, rng);
            bye.headers.push("User-Agent", config.user_agent.clone());
            self.send(bye, target);
        }
        self.phase = Phase::Closing;
        self.timer = None;
    }

    fn send(&mut self, req: Request, target: Target) {
        if req.method != Method::Ack {
            self.pending += 1;
        }
        if matches!(req.method, Method::Bye | Method::Info | Method::Update) && self.dialog.is_some() {
            if self.dialog_requests.len() >= MAX_REMEMBERED_REQUESTS {
                self.dialog_requests.remove(0);
            }
            self.dialog_requests.push(req.clone());
        }
        self.requests.push((req, target));
    }

    /// A final response to our BYE or INFO: a challenge is answered with credentials
    /// (RFC 3261 §22.2, a new CSeq in the dialog); anything else ends the request.
    fn on_dialog_request_response(
        &mut self,
        key: &ClientKey,
        resp: &Response,
        config: &UaConfig,
        rng: &mut fastrand::Rng,
    ) {
        let sent = self
            .dialog_requests
            .iter()
            .position(|r| branch_of(r).as_deref() == Some(key.branch.as_str()))
            .map(|i| self.dialog_requests.remove(i));
        if !matches!(resp.status, 401 | 407) || self.dialog_challenges >= MAX_DIALOG_CHALLENGES {
            return;
        }
        let (Some(mut req), Some(d)) = (sent, self.dialog.as_mut()) else {
            return;
        };
        // a fresh branch and the next CSeq, the rest as it was
        let (fresh, target) = d.request(req.method.clone(), None, config, rng);
        for name in ["Via", "CSeq"] {
            if let Some(v) = fresh.headers.get(name) {
                req.headers.set(name, v);
            }
        }
        if self.authorize(&mut req, resp, rng) {
            self.send(req, target);
        }
    }

    /// Adds our answer to `resp`'s challenge to `req`. False when it cannot be answered.
    fn authorize(&mut self, req: &mut Request, resp: &Response, rng: &mut fastrand::Rng) -> bool {
        let (challenge_header, answer_header) = if resp.status == 401 {
            ("WWW-Authenticate", "Authorization")
        } else {
            ("Proxy-Authenticate", "Proxy-Authorization")
        };
        let Ok(challenge) = Challenge::pick(resp.headers.get_all(challenge_header)) else {
            return false;
        };
        self.dialog_challenges += 1;
        self.nc += 1;
        let creds = Credentials {
            username: self.account.auth_user.clone(),
            password: self.account.password.clone(),
        };
        let auth = Authorization::answer(
            &challenge,
            &creds,
            req.method.as_str(),
            &req.uri.to_string(),
            &random_token(rng, 16),
            self.nc,
        );
        req.headers.remove("Authorization");
        req.headers.remove("Proxy-Authorization");
        req.headers.push(answer_header, auth.to_string());
        true
    }

    /// A response to one of our requests.
    pub fn on_response(
        &mut self,
        now: Instant,
        key: &ClientKey,
        resp: &Response,
        config: &UaConfig,
        rng: &mut fastrand::Rng,
    ) {
        match key.method {
            Method::Invite
                if self
                    .reinvite
                    .as_ref()
                    .is_some_and(|(k, _)| k.as_ref() == Some(key)) =>
            {
                self.on_reinvite_response(now, resp, config, rng)
            }
            Method::Invite => self.on_invite_response(now, key, resp, config, rng),
            _ => {
                if !resp.is_provisional() {
                    self.pending = self.pending.saturating_sub(1);
                    if key.method == Method::Update && resp.is_success() {
                        self.on_refresh_answered(now, resp);
                    }
                    self.on_dialog_request_response(key, resp, config, rng);
                }
            }
        }
        self.maybe_end();
    }

    fn on_invite_response(
        &mut self,
        now: Instant,
        key: &ClientKey,
        resp: &Response,
        config: &UaConfig,
        rng: &mut fastrand::Rng,
    ) {
        if self.invite_client.as_ref() != Some(key) {
            // a response for an INVITE we already replaced (after a challenge)
            if resp.is_success() {
                self.ack_and_bye_stray(resp, config, rng);
            }
            return;
        }
        match resp.status {
            100..=199 => {
                self.provisional = true;
                if self.cancel == Cancel::Wanted {
                    self.send_cancel(now, config);
                }
                if self.early.is_none() && resp.status > 100 {
                    self.early = Dialog::for_uac(&self.invite, resp).ok();
                }
                if resp.status > 100 && requires(&resp.headers, "100rel") {
                    let Some(rseq) = resp
                        .headers
                        .get("RSeq")
                        .and_then(|v| v.trim().parse::<u32>().ok())
                    else {
                        return;
                    };
                    if self.last_rseq.is_some_and(|last| rseq <= last) {
                        // a retransmission: PRACKed already, nothing new in it
                        return;
                    }
                    self.last_rseq = Some(rseq);
                    self.send_prack(rseq, config, rng);
                }
                if resp.status == 100 || !matches!(self.phase, Phase::Inviting) {
                    return;
                }
                if !resp.body.is_empty() && self.early_sdp_seen.as_deref() != Some(&resp.body[..]) {
                    self.early_sdp_seen = Some(resp.body.clone());
                    self.events.push(CallEvent::RemoteSdp {
                        sdp: resp.body.clone(),
                        early: true,
                    });
                    self.set_status(
                        CallState::EarlyMedia,
                        Some(resp.status),
                        Some(resp.reason.clone()),
                    );
                } else if self.visible == Some(CallState::Dialing) {
                    self.set_status(CallState::Ringing, Some(resp.status), Some(resp.reason.clone()));
                }
            }
            200..=299 => self.on_invite_success(now, resp, config, rng),
            422 if matches!(self.phase, Phase::Inviting) && self.too_small < MAX_CHALLENGES => {
                // Session Interval Too Small: ask again with at least its Min-SE
                self.pending = self.pending.saturating_sub(1);
                self.too_small += 1;
                match session_timer::min_se(resp) {
                    Some(min) => self.resend_invite(config, rng, |invite| {
                        invite.headers.set("Session-Expires", min.to_string());
                        invite.headers.set("Min-SE", min.to_string());
                    }),
                    None => self.finish_invite(422, resp.reason.clone()),
                }
            }
            401 | 407 if matches!(self.phase, Phase::Inviting) && self.challenges < MAX_CHALLENGES => {
                self.pending = self.pending.saturating_sub(1);
                self.challenges += 1;
                let header = if resp.status == 401 {
                    "WWW-Authenticate"
                } else {
                    "Proxy-Authenticate"
                };
                match Challenge::pick(resp.headers.get_all(header)) {
                    Ok(ch) => self.reinvite_with_credentials(&ch, resp.status == 407, config, rng),
                    Err(e) => self.finish_invite(resp.status, e.to_string()),
                }
            }
            code => {
                self.pending = self.pending.saturating_sub(1);
                self.finish_invite(code, resp.reason.clone());
            }
        }
    }

    fn on_invite_success(
        &mut self,
        now: Instant,
        resp: &Response,
        config: &UaConfig,
        rng: &mut fastrand::Rng,
    ) {
        let tag = resp.headers.to().ok().and_then(|t| t.tag().map(str::to_owned));
        if let Some(d) = &self.dialog {
            if tag.as_deref() == Some(d.id.remote_tag.as_str()) {
                // retransmitted 2xx: our ACK got lost
                if let Some((ack, target)) = self.last_ack.clone() {
                    self.requests.push((ack, target));
                }
            } else {
                self.ack_and_bye_stray(resp, config, rng);
            }
            return;
        }
        self.pending = self.pending.saturating_sub(1);
        let Ok(mut dialog) = Dialog::for_uac(&self.invite, resp) else {
            // a 2xx we cannot build a dialog from: nothing sane to do but fail
            self.finish_invite(500, "unusable 2xx response".into());
            return;
        };
        let seq = self.invite.headers.cseq().map(|c| c.seq).unwrap_or(1);
        if let Some(early) = &self.early {
            // PRACKs and UPDATEs already used CSeq numbers in the early dialog
            dialog.local_seq = dialog.local_seq.max(early.local_seq);
        }
        let (ack, target) = dialog.request(Method::Ack, Some(seq), config, rng);
        self.last_ack = Some((ack.clone(), target));
        self.requests.push((ack, target));
        self.dialog = Some(dialog);
        if self.cancel == Cancel::Wanted {
            self.cancel = Cancel::Sent;
        }
        if matches!(self.phase, Phase::Closing) {
            // answered after we gave up (CANCEL race, no-answer timeout): end it
            self.send_bye(config, rng);
            return;
        }
        self.phase = Phase::Confirmed;
        self.timer = None;
        self.early = None;
        self.peer_allows_update = allows_update(&resp.headers);
        if config.session_timer.is_some() {
            self.session = session_timer::uac_agreed(resp).map(|s| (s, s.deadline(now)));
        }
        // the same answer as in the 18x is no news (and an UPDATE may have changed the
        // media since)
        if !resp.body.is_empty() && self.early_sdp_seen.as_deref() != Some(&resp.body[..]) {
            self.events.push(CallEvent::RemoteSdp {
                sdp: resp.body.clone(),
                early: false,
            });
        }
        self.set_status(CallState::InCall, Some(resp.status), Some(resp.reason.clone()));
    }

    /// A 2xx from a second fork (or for a replaced INVITE): ACK it and hang it up.
    fn ack_and_bye_stray(&mut self, resp: &Response, config: &UaConfig, rng: &mut fastrand::Rng) {
        let Ok(mut stray) = Dialog::for_uac(&self.invite, resp) else {
            return;
        };
        let seq = resp.headers.cseq().map(|c| c.seq).unwrap_or(1);
        let (ack, target) = stray.request(Method::Ack, Some(seq), config, rng);
        self.requests.push((ack, target));
        let (bye, target) = stray.request(Method::Bye, None, config, rng);
        self.send(bye, target);
    }

    fn reinvite_with_credentials(
        &mut self,
        ch: &Challenge,
        proxy: bool,
        config: &UaConfig,
        rng: &mut fastrand::Rng,
    ) {
        self.nc += 1;
        let creds = Credentials {
            username: self.account.auth_user.clone(),
            password: self.account.password.clone(),
        };
        let auth = Authorization::answer(
            ch,
            &creds,
            "INVITE",
            &self.invite.uri.to_string(),
            &random_token(rng, 16),
            self.nc,
        );
        let name = if proxy {
            "Proxy-Authorization"
        } else {
            "Authorization"
        };
        self.resend_invite(config, rng, |invite| {
            invite.headers.remove("Authorization");
            invite.headers.remove("Proxy-Authorization");
            invite.headers.push(name, auth.to_string());
        });
    }

    /// Sends our INVITE again after a 401/407/422: a new branch and the next CSeq, the
    /// same Call-ID and tags (RFC 3261 §22.2), changed by `edit`.
    fn resend_invite(&mut self, config: &UaConfig, rng: &mut fastrand::Rng, edit: impl FnOnce(&mut Request)) {
        if matches!(self.phase, Phase::Closing) {
            return;
        }
        let mut invite = self.invite.clone();
        invite.headers.remove("Via");
        let fresh = config.new_request(Method::Invite, invite.uri.clone(), rng);
        if let Some(via) = fresh.headers.get("Via") {
            invite.headers.push_front("Via", via);
        }
        let seq = invite.headers.cseq().map(|c| c.seq).unwrap_or(1).wrapping_add(1);
        invite.headers.set("CSeq", format!("{seq} INVITE"));
        edit(&mut invite);
        self.invite = invite.clone();
        self.invite_client = None;
        self.send(invite, config.next_hop());
    }

    /// The INVITE ended with a final response and no dialog: report why.
    fn finish_invite(&mut self, code: u16, reason: String) {
        let state = match code {
            486 | 600 => CallState::Busy,
            603 | 606 | 403 => CallState::Rejected,
            487 => CallState::Cancelled,
            408 | 480 => CallState::NoAnswer,
            _ => CallState::Failed,
        };
        self.finish_invite_as(state, code, reason);
    }

    fn finish_invite_as(&mut self, state: CallState, code: u16, reason: String) {
        self.timer = None;
        let cancel_was_wanted = self.cancel == Cancel::Wanted;
        if cancel_was_wanted {
            // it ended before any provisional response: nothing left to cancel
            self.cancel = Cancel::Sent;
        }
        let was_closing = matches!(self.phase, Phase::Closing);
        self.phase = Phase::Closing;
        if was_closing || cancel_was_wanted || self.cancel != Cancel::No {
            // already reported (cancelled, no answer)
            return;
        }
        self.set_status(state, Some(code), Some(reason));
    }

    /// A client transaction of this call timed out (Timer B/F or transport error).
    pub fn on_timeout(&mut self, key: &ClientKey) {
        self.pending = self.pending.saturating_sub(1);
        if self
            .reinvite
            .as_ref()
            .is_some_and(|(k, _)| k.as_ref() == Some(key))
            && !self.reinvite_answered
        {
            self.reinvite_answered = true;
            self.events.push(CallEvent::ReinviteFailed { code: 408 });
        }
        if key.method == Method::Invite && self.invite_client.as_ref() == Some(key) {
            // not even a provisional response: the far end is unreachable
            self.finish_invite_as(CallState::Failed, 408, "no response".into());
        }
        self.maybe_end();
    }

    /// Records the key the transaction layer gave our INVITE (or re-INVITE).
    pub fn set_invite_key(&mut self, key: ClientKey) {
        match &mut self.reinvite {
            Some((k @ None, _)) => *k = Some(key),
            _ => self.invite_client = Some(key),
        }
    }

    /// Sends a new offer in the dialog (hold, resume). The answer arrives as
    /// [`CallEvent::RemoteSdp`], a refusal as [`CallEvent::ReinviteFailed`].
    pub fn reinvite(
        &mut self,
        sdp: Vec<u8>,
        config: &UaConfig,
        rng: &mut fastrand::Rng,
    ) -> Result<(), CallError> {
        if !matches!(self.phase, Phase::Confirmed) {
            return Err(CallError::WrongState("the call is not established"));
        }
        if self.reinvite_in_flight() || self.reinvite_waiting() || self.pending_offer.is_some() {
            return Err(CallError::WrongState("another offer is in progress"));
        }
        let previous = std::mem::replace(&mut self.local_sdp, sdp);
        self.glare_retries = 0;
        if !self.send_reinvite(config, rng, None) {
            self.local_sdp = previous;
            return Err(CallError::WrongState("the call is not established"));
        }
        Ok(())
    }

    fn reinvite_in_flight(&self) -> bool {
        self.reinvite.is_some() && !self.reinvite_answered
    }

    /// Waiting to send our re-INVITE again after glare.
    fn reinvite_waiting(&self) -> bool {
        matches!(self.timer, Some((_, Timer::ReinviteRetry)))
    }

    /// RFC 3261 §14.1: 2.1 to 4 s when we chose the Call-ID (we placed the call), up
    /// to 2 s otherwise, in 10 ms steps; so the two sides do not collide again.
    fn glare_backoff(&self, rng: &mut fastrand::Rng) -> Duration {
        let steps = if self.outgoing {
            rng.u64(210..=400)
        } else {
            rng.u64(0..=200)
        };
        Duration::from_millis(steps * 10)
    }

    /// Sends our re-INVITE (again) with the current SDP: a new CSeq and branch, with our
    /// answer to `challenge` when there is one. False when there is no dialog or the
    /// challenge cannot be answered.
    fn send_reinvite(
        &mut self,
        config: &UaConfig,
        rng: &mut fastrand::Rng,
        challenge: Option<&Response>,
    ) -> bool {
        let contact = self.contact_uri(config);
        let Some(d) = self.dialog.as_mut() else {
            return false;
        };
        let (mut req, target) = d.request(Method::Invite, None, config, rng);
        let seq = d.local_seq;
        req.headers.push("Contact", format!("<{contact}>"));
        req.headers.push("Allow", ALLOW);
        self.ask_session_timer(&mut req, config);
        req.headers.push("User-Agent", config.user_agent.clone());
        req.headers.push("Content-Type", "application/sdp");
        req.body = self.local_sdp.clone();
        if let Some(resp) = challenge
            && !self.authorize(&mut req, resp, rng)
        {
            return false;
        }
        self.reinvite = Some((None, seq));
        self.reinvite_answered = false;
        self.send(req, target);
        true
    }

    fn on_reinvite_response(
        &mut self,
        now: Instant,
        resp: &Response,
        config: &UaConfig,
        rng: &mut fastrand::Rng,
    ) {
        let Some((_, seq)) = self.reinvite else { return };
        match resp.status {
            491 if !self.reinvite_answered && self.glare_retries < MAX_GLARE_RETRIES => {
                // glare: both sides offered at once; try again after the back-off
                self.reinvite_answered = true;
                self.pending = self.pending.saturating_sub(1);
                self.glare_retries += 1;
                self.timer = Some((now + self.glare_backoff(rng), Timer::ReinviteRetry));
            }
            401 | 407 if !self.reinvite_answered && self.dialog_challenges < MAX_DIALOG_CHALLENGES => {
                self.reinvite_answered = true;
                self.pending = self.pending.saturating_sub(1);
                if !self.send_reinvite(config, rng, Some(resp)) {
                    self.events.push(CallEvent::ReinviteFailed { code: resp.status });
                }
            }
            100..=199 => {}
            200..=299 => {
                if !self.reinvite_answered {
                    self.reinvite_answered = true;
                    self.pending = self.pending.saturating_sub(1);
                    self.on_refresh_answered(now, resp);
                    if let Some(d) = self.dialog.as_mut() {
                        let (ack, target) = d.request(Method::Ack, Some(seq), config, rng);
                        self.last_ack = Some((ack, target));
                    }
                    if !resp.body.is_empty() {
                        self.events.push(CallEvent::RemoteSdp {
                            sdp: resp.body.clone(),
                            early: false,
                        });
                    }
                }
                // (re-)ACK: retransmitted 2xx means our ACK was lost
                if let Some((ack, target)) = self.last_ack.clone() {
                    self.requests.push((ack, target));
                }
            }
            code => {
                if !self.reinvite_answered {
                    self.reinvite_answered = true;
                    self.pending = self.pending.saturating_sub(1);
                    self.events.push(CallEvent::ReinviteFailed { code });
                }
            }
        }
    }

    /// Sends an INFO in the dialog (DTMF when the far end has no telephone-event).
    pub fn send_info(
        &mut self,
        content_type: &str,
        body: Vec<u8>,
        config: &UaConfig,
        rng: &mut fastrand::Rng,
    ) -> Result<(), CallError> {
        if !matches!(self.phase, Phase::Confirmed | Phase::Answered) {
            return Err(CallError::WrongState("the call is not established"));
        }
        let Some(d) = self.dialog.as_mut() else {
            return Err(CallError::WrongState("the call is not established"));
        };
        let (mut req, target) = d.request(Method::Info, None, config, rng);
        req.headers.push("User-Agent", config.user_agent.clone());
        req.headers.push("Content-Type", content_type.to_owned());
        req.body = body;
        self.send(req, target);
        Ok(())
    }

    /// A request from the far end within this call (in-dialog, or a CANCEL/ACK for
    /// our incoming INVITE). Returns true if handled.
    pub fn on_request(&mut self, now: Instant, key: Option<ServerKey>, req: &Request, config: &UaConfig) {
        match (&req.method, key) {
            (Method::Ack, _) => {
                if matches!(self.phase, Phase::Answered) {
                    self.phase = Phase::Confirmed;
                }
                if !req.body.is_empty() {
                    self.events.push(CallEvent::RemoteSdp {
                        sdp: req.body.clone(),
                        early: false,
                    });
                }
            }
            (Method::Cancel, Some(key)) => {
                // 200 for the CANCEL, 487 for the INVITE (RFC 3261 §9.2)
                let ok = self.plain_response(req, 200, "OK", config);
                self.responses.push((key, ok));
                if matches!(self.phase, Phase::Offered) {
                    self.reject(487, "Request Terminated", config);
                    self.set_status(
                        CallState::Cancelled,
                        Some(487),
                        Some("cancelled by caller".into()),
                    );
                }
            }
            (Method::Bye, Some(key)) => {
                let ok = self.plain_response(req, 200, "OK", config);
                self.responses.push((key, ok));
                if !matches!(self.phase, Phase::Closing) {
                    self.phase = Phase::Closing;
                    self.timer = None;
                    self.set_status(CallState::Completed, None, Some("hung up by far end".into()));
                }
            }
            (Method::Invite, Some(key)) => self.on_reinvite(now, key, req, config),
            (Method::Update, Some(key)) => self.on_update(now, key, req, config),
            (Method::Prack, Some(key)) => self.on_prack(key, req, config),
            (Method::Info, Some(key)) => {
                let ok = self.plain_response(req, 200, "OK", config);
                self.responses.push((key, ok));
                self.events.push(CallEvent::Info {
                    content_type: req.headers.get("Content-Type").unwrap_or_default().to_owned(),
                    body: req.body.clone(),
                });
            }
            (Method::Options, Some(key)) => {
                let mut ok = self.plain_response(req, 200, "OK", config);
                ok.headers.push("Allow", ALLOW);
                self.responses.push((key, ok));
            }
            (_, Some(key)) => {
                let mut resp = self.plain_response(req, 405, "Method Not Allowed", config);
                resp.headers.push("Allow", ALLOW);
                self.responses.push((key, resp));
            }
            (_, None) => {}
        }
        self.maybe_end();
    }

    fn on_reinvite(&mut self, _now: Instant, key: ServerKey, req: &Request, config: &UaConfig) {
        let in_dialog = matches!(self.phase, Phase::Confirmed | Phase::Answered);
        if !in_dialog {
            let resp = self.plain_response(req, 481, "Call/Transaction Does Not Exist", config);
            self.responses.push((key, resp));
            return;
        }
        if self.pending_offer.is_some() {
            let mut resp = self.plain_response(req, 500, "Server Internal Error", config);
            resp.headers.push("Retry-After", "1");
            self.responses.push((key, resp));
            return;
        }
        if self.reinvite_in_flight() {
            // glare: our offer is out; the far end tries again after its back-off
            let resp = self.plain_response(req, 491, "Request Pending", config);
            self.responses.push((key, resp));
            return;
        }
        if let Some(d) = self.dialog.as_mut() {
            let seq = req.headers.cseq().map(|c| c.seq).unwrap_or(0);
            if d.remote_seq.is_some_and(|r| seq <= r) {
                let resp = self.plain_response(req, 500, "Server Internal Error", config);
                self.responses.push((key, resp));
                return;
            }
            d.remote_seq = Some(seq);
            // target refresh (RFC 3261 §12.2.2)
            if let Some(c) = req.headers.contacts().ok().and_then(|c| c.into_iter().next()) {
                d.remote_target = c.uri;
            }
        }
        self.pending_offer = Some((key, req.clone()));
        self.events.push(CallEvent::Offer {
            sdp: (!req.body.is_empty()).then(|| req.body.clone()),
        });
    }

    /// UPDATE (RFC 3311) from the far end, in the early dialog of our INVITE or in the
    /// confirmed one: a target refresh, and a new offer when it has a body.
    fn on_update(&mut self, now: Instant, key: ServerKey, req: &Request, config: &UaConfig) {
        let refuse = if matches!(self.phase, Phase::Closing) {
            Some((481, "Call/Transaction Does Not Exist"))
        } else if self.pending_offer.is_some()
            || (matches!(self.phase, Phase::Offered) && !req.body.is_empty())
        {
            // an offer of theirs is still unanswered (a re-INVITE's, or the ringing
            // INVITE's, answered only in our 200): RFC 3311 §5.2
            Some((500, "Server Internal Error"))
        } else if !req.body.is_empty() && (self.reinvite_in_flight() || self.awaiting_answer()) {
            // our offer is out: theirs crosses it (RFC 3311 §5.2)
            Some((491, "Request Pending"))
        } else {
            None
        };
        if let Some((code, reason)) = refuse {
            let mut resp = self.plain_response(req, code, reason, config);
            if code == 500 {
                resp.headers.push("Retry-After", "1");
            }
            self.responses.push((key, resp));
            return;
        }
        let confirmed = self.dialog.as_ref().is_some_and(|d| d.matches_request(req));
        let dialog = if confirmed {
            self.dialog.as_mut()
        } else {
            self.early.as_mut()
        };
        if let Some(d) = dialog {
            let seq = req.headers.cseq().map(|c| c.seq).unwrap_or(0);
            if d.remote_seq.is_some_and(|r| seq <= r) {
                let resp = self.plain_response(req, 500, "Server Internal Error", config);
                self.responses.push((key, resp));
                return;
            }
            d.remote_seq = Some(seq);
            if let Some(c) = req.headers.contacts().ok().and_then(|c| c.into_iter().next()) {
                d.remote_target = c.uri;
            }
        }
        if req.body.is_empty() {
            let mut ok = self.plain_response(req, 200, "OK", config);
            ok.headers
                .push("Contact", format!("<{}>", self.contact_uri(config)));
            self.agree_as_uas(now, req, &mut ok, config);
            self.responses.push((key, ok));
            return;
        }
        self.pending_offer = Some((key, req.clone()));
        self.events.push(CallEvent::Offer {
            sdp: Some(req.body.clone()),
        });
    }

    /// As the UAS of `req` (their INVITE or refresh): agree to its session timer in
    /// `ok` and arm ours. A refresh without Session-Expires turns the timer off.
    fn agree_as_uas(&mut self, now: Instant, req: &Request, ok: &mut Response, config: &UaConfig) {
        let Some(timer) = &config.session_timer else {
            return;
        };
        match session_timer::uas_decide(req, timer) {
            UasDecision::Agreed { session, refresher } => {
                ok.headers.push("Session-Expires", session.header(refresher));
                if refresher == Refresher::Uac {
                    ok.headers.push("Require", "timer");
                }
                self.session = Some((session, session.deadline(now)));
                self.refresh_sent = false;
            }
            // a 422 is answered before any of this; below our minimum here means a
            // refresh that shrank it: keep the interval agreed, refreshed now
            UasDecision::TooSmall { .. } => {
                if let Some((session, _)) = self.session {
                    self.session = Some((session, session.deadline(now)));
                    self.refresh_sent = false;
                }
            }
            UasDecision::Off => self.session = None,
        }
    }

    /// Our request (re-INVITE, UPDATE) refreshes the session when there is a timer.
    fn ask_session_timer(&self, req: &mut Request, config: &UaConfig) {
        let (Some(timer), Some((session, _))) = (&config.session_timer, &self.session) else {
            return;
        };
        let refresher = if session.we_refresh {
            Refresher::Uac
        } else {
            Refresher::Uas
        };
        req.headers.push("Supported", "timer");
        req.headers.push("Session-Expires", session.header(refresher));
        req.headers.push("Min-SE", timer.min_se.to_string());
    }

    /// A 2xx to our re-INVITE or UPDATE: what it agreed, from now.
    fn on_refresh_answered(&mut self, now: Instant, resp: &Response) {
        if self.session.is_none() {
            return;
        }
        self.session = session_timer::uac_agreed(resp).map(|s| (s, s.deadline(now)));
        self.refresh_sent = false;
    }

    /// The session timer fired: refresh it, or end a session the far end let expire.
    fn on_session_timer(&mut self, now: Instant, config: &UaConfig, rng: &mut fastrand::Rng) {
        let Some((session, _)) = self.session else { return };
        match self.phase {
            Phase::Confirmed => {}
            Phase::Answered => {
                // no request may go before the ACK
                self.session = Some((session, now + Duration::from_secs(1)));
                return;
            }
            _ => {
                self.session = None;
                return;
            }
        }
        if !session.we_refresh || self.refresh_sent {
            self.session = None;
            self.send_bye(config, rng);
            let why = if session.we_refresh {
                "session expired: our refresh was not answered"
            } else {
                "session expired: the far end did not refresh it"
            };
            self.set_status(CallState::Completed, Some(408), Some(why.into()));
            return;
        }
        if self.reinvite_in_flight() || self.reinvite_waiting() || self.pending_offer.is_some() {
            // an offer is being exchanged: it refreshes the session when it succeeds
            self.session = Some((session, now + Duration::from_secs(1)));
            return;
        }
        self.refresh_sent = true;
        // if this refresh is not answered in time, the session is over
        let give_up = Session {
            we_refresh: false,
            ..session
        }
        .deadline(now - Duration::from_secs(u64::from(session.interval) / 2));
        self.session = Some((session, give_up.max(now + Duration::from_secs(1))));
        if self.peer_allows_update {
            let contact = self.contact_uri(config);
            if let Some(d) = self.dialog.as_mut() {
                let (mut req, target) = d.request(Method::Update, None, config, rng);
                req.headers.push("Contact", format!("<{contact}>"));
                self.ask_session_timer(&mut req, config);
                req.headers.push("User-Agent", config.user_agent.clone());
                self.send(req, target);
            }
        } else {
            self.glare_retries = 0;
            self.send_reinvite(config, rng, None);
        }
    }

    /// PRACK (RFC 3262) for the reliable provisional response `rseq`, in the early dialog.
    fn send_prack(&mut self, rseq: u32, config: &UaConfig, rng: &mut fastrand::Rng) {
        let invite_seq = self.invite.headers.cseq().map(|c| c.seq).unwrap_or(1);
        let Some(early) = self.early.as_mut() else { return };
        let (mut prack, target) = early.request(Method::Prack, None, config, rng);
        prack.headers.push("RAck", format!("{rseq} {invite_seq} INVITE"));
        prack.headers.push("User-Agent", config.user_agent.clone());
        self.send(prack, target);
    }

    /// The caller's PRACK for our reliable 180: stop sending it.
    fn on_prack(&mut self, key: ServerKey, req: &Request, config: &UaConfig) {
        let rack = req
            .headers
            .get("RAck")
            .and_then(|v| v.split_whitespace().next()?.parse::<u32>().ok());
        let ours = self.reliable.as_ref().map(|r| r.rseq).or(self.acked_rseq);
        let (code, reason) = if rack.is_some() && rack == ours {
            if self.reliable.take().is_some() {
                self.acked_rseq = rack;
            }
            (200, "OK")
        } else {
            (481, "Call/Transaction Does Not Exist")
        };
        let resp = self.plain_response(req, code, reason, config);
        self.responses.push((key, resp));
    }

    /// Our INVITE's offer has no answer yet (none came in an 18x).
    fn awaiting_answer(&self) -> bool {
        matches!(self.phase, Phase::Inviting) && self.early_sdp_seen.is_none()
    }

    /// Answers the far end's re-INVITE with `Ok(sdp)`, or refuses it with a status
    /// (488 when the offer is unacceptable).
    pub fn answer_offer(
        &mut self,
        now: Instant,
        answer: Result<Vec<u8>, u16>,
        config: &UaConfig,
    ) -> Result<(), CallError> {
        let (key, req) = self
            .pending_offer
            .take()
            .ok_or(CallError::WrongState("no offer to answer"))?;
        let resp = match answer {
            Ok(sdp) => {
                self.local_sdp = sdp;
                let mut ok = self.plain_response(&req, 200, "OK", config);
                ok.headers
                    .push("Contact", format!("<{}>", self.contact_uri(config)));
                ok.headers.push("Allow", ALLOW);
                ok.headers.push("Content-Type", "application/sdp");
                ok.body = self.local_sdp.clone();
                self.agree_as_uas(now, &req, &mut ok, config);
                ok
            }
            Err(code) => self.plain_response(&req, code, "Not Acceptable Here", config),
        };
        self.responses.push((key, resp));
        Ok(())
    }

    /// The 2xx we sent for their INVITE never got an ACK (RFC 3261 §13.3.1.4): end it.
    pub fn on_ack_timeout(&mut self, key: &ServerKey, config: &UaConfig, rng: &mut fastrand::Rng) {
        if self.invite_server.as_ref() == Some(key) && matches!(self.phase, Phase::Answered) {
            self.send_bye(config, rng);
            self.set_status(CallState::Failed, Some(408), Some("no ACK".into()));
        }
        self.maybe_end();
    }

    /// Call timers.
    pub fn handle_timeout(&mut self, now: Instant, config: &UaConfig, rng: &mut fastrand::Rng) {
        if self.session.is_some_and(|(_, at)| at <= now) {
            self.on_session_timer(now, config, rng);
        }
        if self.reliable.as_ref().is_some_and(|r| r.next <= now) {
            self.on_reliable_timer(now, config);
        }
        let Some((at, timer)) = self.timer else {
            self.maybe_end();
            return;
        };
        if now < at {
            return;
        }
        self.timer = None;
        match timer {
            Timer::NoAnswer => match self.phase {
                Phase::Inviting => {
                    self.request_cancel(now, config);
                    self.set_status(CallState::NoAnswer, Some(408), Some("no answer".into()));
                }
                Phase::Offered => {
                    self.reject(480, "Temporarily Unavailable", config);
                    self.set_status(CallState::NoAnswer, Some(480), Some("not answered".into()));
                }
                _ => {}
            },
            Timer::CancelGiveUp => {
                // the INVITE never ended after our CANCEL: forget it
                self.pending = 0;
            }
            Timer::ReinviteRetry if matches!(self.phase, Phase::Confirmed) => {
                if self.pending_offer.is_some() {
                    // answering their offer: ours goes once that is done
                    self.timer = Some((now + Duration::from_millis(100), Timer::ReinviteRetry));
                } else if !self.send_reinvite(config, rng, None) {
                    self.events.push(CallEvent::ReinviteFailed { code: 491 });
                }
            }
            Timer::ReinviteRetry => {}
        }
        self.maybe_end();
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.timer.map(|(at, _)| at),
            self.session.map(|(_, at)| at),
            self.reliable.as_ref().map(|r| r.next),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Sends our reliable 180 again, or refuses the INVITE when it was never PRACKed.
    fn on_reliable_timer(&mut self, now: Instant, config: &UaConfig) {
        let Some(r) = self.reliable.as_mut() else { return };
        if now >= r.give_up {
            self.reliable = None;
            if matches!(self.phase, Phase::Offered) {
                self.reject(504, "Server Time-out", config);
                self.set_status(
                    CallState::Failed,
                    Some(504),
                    Some("no PRACK from the caller".into()),
                );
            }
            return;
        }
        r.interval = (r.interval * 2).min(Duration::from_secs(4));
        r.next = (now + r.interval).min(r.give_up);
        let again = (r.key.clone(), r.response.clone());
        self.responses.push(again);
    }

    fn maybe_end(&mut self) {
        if !self.ended
            && matches!(self.phase, Phase::Closing)
            && self.pending == 0
            && self.cancel != Cancel::Wanted
            && self.pending_offer.is_none()
        {
            self.ended = true;
            self.timer = None;
            self.events.push(CallEvent::Ended);
        }
    }

    fn set_status(&mut self, state: CallState, code: Option<u16>, reason: Option<String>) {
        if self.visible == Some(state) || self.visible.is_some_and(CallState::is_final) {
            return;
        }
        self.visible = Some(state);
        self.events
            .push(CallEvent::Status(CallStatus { state, code, reason }));
    }

    fn contact_uri(&self, config: &UaConfig) -> Uri {
        let mut c = Uri::sip(
            Some(&self.account.user),
            &config.advertise_host,
            Some(config.advertise_port),
        );
        if config.transport.is_reliable() {
            c.params.set("transport", Some(config.transport.param_name()));
        }
        c
    }

    /// A response to their INVITE, with our To tag and Contact.
    fn response(&self, status: u16, reason: &str, config: &UaConfig) -> Response {
        let mut resp = self.plain_response(&self.invite, status, reason, config);
        if status < 300 {
            // dialog-creating responses carry the Record-Route set back (RFC 3261 §12.1.1)
            for rr in self.invite.headers.get_all("Record-Route") {
                resp.headers.push("Record-Route", rr);
            }
            resp.headers
                .push("Contact", format!("<{}>", self.contact_uri(config)));
            resp.headers.push("Allow", ALLOW);
        }
        if status == 200 {
            resp.headers.push("Content-Type", "application/sdp");
            resp.body = self.local_sdp.clone();
        }
        resp
    }

    /// A response to `req` with our To tag.
    fn plain_response(&self, req: &Request, status: u16, reason: &str, config: &UaConfig) -> Response {
        let mut resp = Response::for_request(req, status, reason);
        if let Ok(mut to) = req.headers.to()
            && to.tag().is_none()
            && !self.local_tag.is_empty()
        {
            to.params.set("tag", Some(&self.local_tag));
            resp.headers.set("To", to.to_string());
        }
        resp.headers.push("Server", config.user_agent.clone());
        resp
    }

    pub fn drain_requests(&mut self) -> std::vec::Drain<'_, (Request, Target)> {
        self.requests.drain(..)
    }

    pub fn drain_responses(&mut self) -> std::vec::Drain<'_, (ServerKey, Response)> {
        self.responses.drain(..)
    }

    pub fn drain_events(&mut self) -> std::vec::Drain<'_, CallEvent> {
        self.events.drain(..)
    }
}

/// A reliable provisional response of ours (RFC 3262 §3): sent again at T1, 2*T1…
/// until PRACKed; after 64*T1 without one, the INVITE is refused.
#[derive(Debug)]
struct Reliable {
    rseq: u32,
    key: ServerKey,
    response: Response,
    next: Instant,
    interval: Duration,
    give_up: Instant,
}

impl Reliable {
    const T1: Duration = Duration::from_millis(500);

    fn new(now: Instant, rseq: u32, key: ServerKey, response: Response) -> Reliable {
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

/// Whether a message's Require lists `option_tag`.
fn requires(headers: &crate::message::Headers, option_tag: &str) -> bool {
    headers
        .get_all("Require")
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(option_tag))
}

/// Whether a message's Allow lists UPDATE.
fn allows_update(headers: &crate::message::Headers) -> bool {
    headers
        .get_all("Allow")
        .flat_map(|v| v.split(','))
        .any(|m| m.trim().eq_ignore_ascii_case("UPDATE"))
}

/// The branch of a request's top Via.
fn branch_of(req: &Request) -> Option<String> {
    req.headers.top_via().ok()?.branch().map(str::to_owned)
}

/// Escapes a dialled number for the user part of a SIP URI (`#` must be `%23`).
/// Returns None for characters that have no business in a number.
pub fn escape_user(number: &str) -> Option<String> {
    if number.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(number.len());
    for c in number.chars() {
        match c {
            '0'..='9' | 'a'..='z' | 'A'..='Z' | '*' | '+' | '-' | '.' | '_' | '!' | '~' => out.push(c),
            '#' => out.push_str("%23"),
            _ => return None,
        }
    }
    Some(out)
}

/// The caller shown for an incoming INVITE's From.
pub fn caller_of(from: &NameAddr) -> String {
    from.uri.user.clone().unwrap_or_else(|| from.uri.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_numbers() {
        assert_eq!(escape_user("*97#").as_deref(), Some("*97%23"));
        assert_eq!(escape_user("+4930123").as_deref(), Some("+4930123"));
        assert_eq!(escape_user("a@b"), None);
        assert_eq!(escape_user(""), None);
    }
}
