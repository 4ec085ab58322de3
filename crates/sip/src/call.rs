//! One phone call on a line (the original example's `Call`), either direction: the
//! INVITE exchange, the confirmed dialog (BYE both ways, INFO, re-INVITE and UPDATE
//! both ways), and the state the browser sees.
//!
//! SDP is opaque here: the call carries bytes between the far end and whoever owns
//! media (the gateway), which supplies offers and answers. Like the registration, a
//! call builds messages and reacts to outcomes; the user agent moves them.
//!
//! This module holds the call's state (its phase, with what only that phase has, and
//! one struct per concern) and its life as callee and in the dialog; each extension
//! has its own module: `invite` (our INVITE as caller, CANCEL, PRACK), `offers`
//! (re-INVITE/UPDATE both ways, glare), `challenge` (401/407 in the dialog),
//! `refresh` (session timers), `reliable` (our reliable 180).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::auth::{Authorization, Challenge, Credentials};
use crate::dialog::Dialog;
use crate::message::{Method, NameAddr, Request, Response, Uri};
use crate::registration::display_addr;
use crate::session_timer::{self, Refresher, Session, UasDecision};
use crate::transaction::{ClientKey, ServerKey};
use crate::transport::Target;
use crate::user_agent::{ALLOW, Account, UaConfig, random_token};

mod challenge;
mod invite;
mod offers;
mod referral;
mod refresh;
mod reliable;
mod transfer;

pub use referral::ReferTarget;
pub(crate) use referral::percent_decode;
use refresh::SessionClock;
use reliable::{Reliability, Reliable};
pub use transfer::TransferState;

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
        /// The INVITE's headers named in [`crate::ExtraHeaders::from_incoming`].
        headers: Vec<(String, String)>,
        /// The INVITE carried `Replaces` naming this established call of the same line
        /// (RFC 3891: an attended transfer whose target we are): the new call takes its
        /// place, answered at once.
        replaces: Option<CallRef>,
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
    /// How our transfer (REFER) is going; `code` is the SIP status it is based on.
    Transfer {
        state: TransferState,
        code: Option<u16>,
    },
    /// The far end asks us to call someone else (its REFER, accepted): tell it how
    /// that goes with [`crate::UserAgent::notify_referral`].
    Referred(ReferTarget),
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Cancel {
    #[default]
    No,
    /// Wanted, but no provisional response yet (RFC 3261 §9.1: wait for one).
    Wanted,
    Sent,
}

#[derive(Debug)]
enum Phase {
    /// Our INVITE is out.
    Inviting,
    /// Their INVITE is ringing here (our 180 reliable when they require it).
    Offered {
        reliable: Reliability,
    },
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
/// How long our re-INVITE may go without a final response (64*T1, like Timer B).
const REINVITE_GIVE_UP: Duration = Duration::from_secs(32);
/// INFO and PRACK requests of one call waiting for a final response at once: the
/// browser's key presses (64 a request) and a far end's reliable 18x could otherwise
/// multiply our client transactions. Beyond it INFO is refused and PRACK not sent
/// (counted: `refused{sip_requests_in_flight}`).
const MAX_MULTIPLIABLE_IN_FLIGHT: usize = 16;
/// In-dialog requests remembered for answering a challenge to them.
const MAX_REMEMBERED_REQUESTS: usize = 16;

#[derive(Debug)]
pub struct Call {
    pub id: CallRef,
    pub line: crate::LineId,
    pub outgoing: bool,
    account: Account,
    phase: Phase,
    /// The confirmed dialog, once answered.
    dialog: Option<Dialog>,
    /// The early dialog (from our INVITE's first 18x with a To tag, or our 180 to
    /// theirs), until the answer: UPDATE and PRACK arrive in it.
    early: Option<Dialog>,
    visible: Option<CallState>,
    /// Our current SDP (offer or answer), re-sent when the far end asks again.
    local_sdp: Vec<u8>,
    /// The INVITE: ours (outgoing), or theirs (incoming).
    invite: Request,
    /// The server transaction of their INVITE (incoming calls).
    invite_server: Option<ServerKey>,
    local_tag: String,
    /// Our INVITE's progress (outgoing calls).
    uac: Invitation,
    /// Offers after the first: ours (re-INVITE) and theirs (re-INVITE, UPDATE).
    offers: Offers,
    /// Answering challenges to our requests.
    auth: Challenges,
    /// The session timer (RFC 4028), when one was agreed.
    refresh: Option<SessionClock>,
    /// The far end accepts UPDATE (its Allow said so): refreshes go as UPDATE.
    peer_allows_update: bool,
    /// Our client transactions still waiting for a final response (the call is not
    /// over while any is).
    outstanding: Vec<ClientKey>,
    timer: Option<(Instant, Timer)>,
    out: Outbox,
    ended: bool,
    /// INFO/PRACK not sent for [`MAX_MULTIPLIABLE_IN_FLIGHT`], since last taken.
    refused_in_flight: u64,
    /// Our blind transfer (REFER) under way.
    transfer: Option<transfer::Transfer>,
    /// A transfer the far end asked of us (its REFER), until we told it the outcome.
    referral: Option<referral::Referral>,
}

/// Our INVITE, from sending it to its final response.
#[derive(Debug, Default)]
struct Invitation {
    /// Its transaction (a new one after each challenge).
    client: Option<ClientKey>,
    /// A provisional response came (a CANCEL may go).
    provisional: bool,
    /// The SDP of the last 18x, so a repeat is not news.
    early_sdp_seen: Option<Vec<u8>>,
    cancel: Cancel,
    /// 401/407 answered so far.
    challenges: u32,
    /// 422 answered so far.
    too_small: u32,
    /// The RSeq of the last reliable provisional response we PRACKed.
    last_rseq: Option<u32>,
}

impl Invitation {
    /// Whether `body` is SDP not already seen in an 18x (a repeat is no news).
    fn is_new_sdp(&self, body: &[u8]) -> bool {
        !body.is_empty() && self.early_sdp_seen.as_deref() != Some(body)
    }
}

/// Offer/answer after the call's first exchange.
#[derive(Debug, Default)]
struct Offers {
    /// Their offer (re-INVITE or UPDATE) waiting for [`Call::answer_offer`].
    theirs: Option<(ServerKey, Request)>,
    /// Our re-INVITE in flight (hold, resume, refresh): its transaction and CSeq.
    ours: Option<(Option<ClientKey>, u32)>,
    /// Our re-INVITE has its final response.
    ours_answered: bool,
    /// Our SDP before the change our re-INVITE offers: back in place if it fails.
    before: Option<Vec<u8>>,
    /// When our re-INVITE in flight counts as unanswered (it may sit in Proceeding).
    give_up: Option<Instant>,
    /// Times our current re-INVITE met glare (491) and was sent again.
    glare_retries: u32,
    /// Our ACKs for 2xx responses by INVITE CSeq (the last few), sent again when a 2xx
    /// is retransmitted.
    acks: VecDeque<(u32, Request, Target)>,
}

/// What answering challenges needs: the nonce count, and our in-dialog requests
/// (BYE, INFO, UPDATE) awaiting a final response, to send again with credentials.
#[derive(Debug, Default)]
struct Challenges {
    nc: u32,
    requests: Vec<Request>,
    /// Challenges to in-dialog requests answered so far.
    answered: u32,
}

/// What the call has for its owner to carry out.
#[derive(Debug, Default)]
struct Outbox {
    requests: Vec<(Request, Target)>,
    responses: Vec<(ServerKey, Response)>,
    events: Vec<CallEvent>,
}

impl Call {
    fn base(id: CallRef, line: crate::LineId, outgoing: bool, account: Account, invite: Request) -> Call {
        Call {
            id,
            line,
            outgoing,
            account,
            phase: if outgoing {
                Phase::Inviting
            } else {
                Phase::Offered {
                    reliable: Reliability::default(),
                }
            },
            dialog: None,
            early: None,
            visible: None,
            local_sdp: Vec::new(),
            invite,
            invite_server: None,
            local_tag: String::new(),
            uac: Invitation::default(),
            offers: Offers::default(),
            auth: Challenges::default(),
            refresh: None,
            peer_allows_update: false,
            outstanding: Vec::new(),
            timer: None,
            out: Outbox::default(),
            ended: false,
            refused_in_flight: 0,
            transfer: None,
            referral: None,
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
        headers: &[(String, String)],
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
        for (name, value) in config.headers.invite.iter().chain(headers) {
            invite.headers.push(name.clone(), value.clone());
        }
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
    /// `replaces`: the call of ours its Replaces header names.
    #[allow(clippy::too_many_arguments)]
    pub fn incoming(
        now: Instant,
        id: CallRef,
        line: crate::LineId,
        account: &Account,
        key: ServerKey,
        (invite, replaces): (Request, Option<CallRef>),
        config: &UaConfig,
        rng: &mut fastrand::Rng,
    ) -> Call {
        let from = invite.headers.from().ok();
        let caller = from.as_ref().map(caller_of).unwrap_or_default();
        let display_name = from
            .as_ref()
            .and_then(|f| f.display.clone())
            .filter(|d| !d.is_empty());
        let offer = (!invite.body.is_empty()).then(|| invite.body.clone());
        let headers = config.headers.pick(&invite.headers);
        let peer_allows_update = invite.headers.lists("Allow", "UPDATE");
        let mut call = Call::base(id, line, false, account.clone(), invite);
        call.peer_allows_update = peer_allows_update;
        call.local_tag = random_token(rng, 12);
        call.invite_server = Some(key.clone());
        call.timer = Some((now + config.no_answer_timeout, Timer::NoAnswer));
        let mut ringing = call.response(180, "Ringing", config);
        if call.invite.headers.lists("Require", "100rel") {
            // RFC 3262: the caller requires our provisional responses to be reliable
            let rseq = rng.u32(1..1 << 30);
            ringing.headers.push("Require", "100rel");
            ringing.headers.push("RSeq", rseq.to_string());
            if let Phase::Offered { reliable } = &mut call.phase {
                reliable.pending = Some(Box::new(Reliable::new(now, rseq, key.clone(), ringing.clone())));
            }
        }
        call.early = Dialog::for_uas(&call.invite, &call.local_tag, 0).ok();
        call.out.responses.push((key, ringing));
        call.out.events.push(CallEvent::Incoming {
            from: caller,
            display_name,
            offer,
            headers,
            replaces,
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

    /// Answered and acknowledged.
    pub fn is_confirmed(&self) -> bool {
        matches!(self.phase, Phase::Confirmed)
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
        if !matches!(self.phase, Phase::Offered { .. }) || self.outgoing {
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
        self.out.responses.push((key, ok));
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
            Phase::Offered { .. } => {
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
            self.out.responses.push((key, resp));
        }
        self.phase = Phase::Closing;
        self.timer = None;
    }

    fn send_bye(&mut self, config: &UaConfig, rng: &mut fastrand::Rng) {
        self.refresh = None;
        if let Some(d) = self.dialog.as_mut() {
            let (mut bye, target) = d.request(Method::Bye, None, config, rng);
            bye.headers.push("User-Agent", config.user_agent.clone());
            self.send(bye, target);
        }
        self.phase = Phase::Closing;
        self.timer = None;
    }

    fn send(&mut self, req: Request, target: Target) {
        let challengeable = matches!(
            req.method,
            Method::Bye | Method::Info | Method::Update | Method::Refer
        );
        if challengeable && self.dialog.is_some() {
            if self.auth.requests.len() >= MAX_REMEMBERED_REQUESTS {
                self.auth.requests.remove(0);
            }
            self.auth.requests.push(req.clone());
        }
        self.out.requests.push((req, target));
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
        if !resp.is_provisional() {
            self.outstanding.retain(|k| k != key);
        }
        match key.method {
            Method::Invite
                if self
                    .offers
                    .ours
                    .as_ref()
                    .is_some_and(|(k, _)| k.as_ref() == Some(key)) =>
            {
                self.on_reinvite_response(now, resp, config, rng)
            }
            Method::Invite => self.on_invite_response(now, key, resp, config, rng),
            _ => {
                if !resp.is_provisional() {
                    if key.method == Method::Update && resp.is_success() {
                        self.on_refresh_answered(now, resp, config);
                    }
                    self.on_dialog_request_response(key, resp, config, rng);
                    if key.method == Method::Refer {
                        self.on_refer_response(resp);
                    }
                    if key.method == Method::Notify {
                        self.on_referral_notify_answered(Some(resp.status), config, rng);
                    }
                }
            }
        }
        self.maybe_end();
    }

    /// A client transaction of this call timed out (Timer B/F or transport error).
    pub fn on_timeout(&mut self, key: &ClientKey) {
        self.outstanding.retain(|k| k != key);
        if key.method == Method::Refer {
            self.on_refer_timeout();
        }
        if key.method == Method::Notify {
            // the transferor does not answer: it hears nothing more
            self.referral = None;
        }
        if self
            .offers
            .ours
            .as_ref()
            .is_some_and(|(k, _)| k.as_ref() == Some(key))
            && !self.offers.ours_answered
        {
            self.fail_reinvite(408);
        }
        if key.method == Method::Invite && self.uac.client.as_ref() == Some(key) {
            // not even a provisional response: the far end is unreachable
            self.finish_invite_as(CallState::Failed, 408, "no response".into());
        }
        self.maybe_end();
    }

    /// The transaction layer sent one of our requests as transaction `key`: the call
    /// waits for its final response (and knows its INVITE or re-INVITE by it).
    pub fn sent(&mut self, key: ClientKey) {
        if key.method == Method::Invite {
            match &mut self.offers.ours {
                Some((k @ None, _)) => *k = Some(key.clone()),
                _ => self.uac.client = Some(key.clone()),
            }
        }
        self.outstanding.push(key);
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
        if !self.room_for_more() {
            return Err(CallError::WrongState("too many key presses wait for the far end"));
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
    pub fn on_request(
        &mut self,
        now: Instant,
        key: Option<ServerKey>,
        req: &Request,
        config: &UaConfig,
        rng: &mut fastrand::Rng,
    ) {
        match (&req.method, key) {
            (Method::Ack, _) => {
                if matches!(self.phase, Phase::Answered) {
                    self.phase = Phase::Confirmed;
                }
                if !req.body.is_empty() {
                    self.out.events.push(CallEvent::RemoteSdp {
                        sdp: req.body.clone(),
                        early: false,
                    });
                }
            }
            (Method::Cancel, Some(key)) => {
                // 200 for the CANCEL, 487 for the INVITE (RFC 3261 §9.2)
                let ok = self.plain_response(req, 200, "OK", config);
                self.out.responses.push((key, ok));
                if matches!(self.phase, Phase::Offered { .. }) {
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
                self.out.responses.push((key, ok));
                match self.phase {
                    // a BYE in the early dialog (RFC 3261 §15): the INVITE still needs
                    // its final response (theirs) or to be cancelled (ours)
                    Phase::Offered { .. } => {
                        self.reject(487, "Request Terminated", config);
                        self.set_status(
                            CallState::Cancelled,
                            Some(487),
                            Some("cancelled by caller".into()),
                        );
                    }
                    Phase::Inviting => {
                        self.request_cancel(now, config);
                        self.set_status(
                            CallState::Failed,
                            None,
                            Some("ended by the far end before the answer".into()),
                        );
                    }
                    Phase::Closing => {}
                    Phase::Answered | Phase::Confirmed => {
                        self.phase = Phase::Closing;
                        self.timer = None;
                        self.transfer_left_by_far_end();
                        self.set_status(CallState::Completed, None, Some("hung up by far end".into()));
                    }
                }
            }
            (Method::Invite, Some(key)) => self.on_reinvite(now, key, req, config),
            (Method::Update, Some(key)) => self.on_update(now, key, req, config),
            (Method::Prack, Some(key)) => self.on_prack(key, req, config),
            (Method::Info, Some(key)) => {
                let ok = self.plain_response(req, 200, "OK", config);
                self.out.responses.push((key, ok));
                self.out.events.push(CallEvent::Info {
                    content_type: req.headers.get("Content-Type").unwrap_or_default().to_owned(),
                    body: req.body.clone(),
                });
            }
            (Method::Notify, Some(key)) => self.on_notify(now, key, req, config, rng),
            (Method::Refer, Some(key)) => self.on_refer(key, req, config, rng),
            (Method::Options, Some(key)) => {
                let mut ok = self.plain_response(req, 200, "OK", config);
                ok.headers.push("Allow", ALLOW);
                self.out.responses.push((key, ok));
            }
            (_, Some(key)) => {
                let mut resp = self.plain_response(req, 405, "Method Not Allowed", config);
                resp.headers.push("Allow", ALLOW);
                self.out.responses.push((key, resp));
            }
            (_, None) => {}
        }
        self.maybe_end();
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
        if self.refresh.is_some_and(|c| c.at <= now) {
            self.on_session_timer(now, config, rng);
        }
        if self.reliable_next().is_some_and(|at| at <= now) {
            self.on_reliable_timer(now, config);
        }
        if self.offers.give_up.is_some_and(|at| at <= now) {
            self.give_up_reinvite();
        }
        self.on_transfer_timeout(now);
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
                Phase::Offered { .. } => {
                    self.reject(480, "Temporarily Unavailable", config);
                    self.set_status(CallState::NoAnswer, Some(480), Some("not answered".into()));
                }
                _ => {}
            },
            Timer::CancelGiveUp => {
                // the INVITE never ended after our CANCEL: forget it
                if let Some(invite) = &self.uac.client {
                    self.outstanding.retain(|k| k != invite);
                }
            }
            Timer::ReinviteRetry if matches!(self.phase, Phase::Confirmed) => {
                if self.offers.theirs.is_some() {
                    // answering their offer: ours goes once that is done
                    self.timer = Some((now + Duration::from_millis(100), Timer::ReinviteRetry));
                } else if !self.send_reinvite(now, config, rng, None) {
                    self.out.events.push(CallEvent::ReinviteFailed { code: 491 });
                }
            }
            Timer::ReinviteRetry => {}
        }
        self.maybe_end();
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.timer.map(|(at, _)| at),
            self.refresh.map(|c| c.at),
            self.reliable_next(),
            self.offers.give_up,
            self.transfer.as_ref().map(|t| t.deadline),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn maybe_end(&mut self) {
        if !self.ended
            && matches!(self.phase, Phase::Closing)
            && self.outstanding.is_empty()
            && self.out.requests.iter().all(|(r, _)| r.method == Method::Ack)
            && self.uac.cancel != Cancel::Wanted
            && self.offers.theirs.is_none()
        {
            self.ended = true;
            self.timer = None;
            self.out.events.push(CallEvent::Ended);
        }
    }

    fn set_status(&mut self, state: CallState, code: Option<u16>, reason: Option<String>) {
        if self.visible == Some(state) || self.visible.is_some_and(CallState::is_final) {
            return;
        }
        self.visible = Some(state);
        self.out
            .events
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

    /// Whether another INFO or PRACK may go (see [`MAX_MULTIPLIABLE_IN_FLIGHT`]);
    /// counts the refusal when not.
    fn room_for_more(&mut self) -> bool {
        let multipliable = |m: &Method| matches!(m, Method::Info | Method::Prack);
        let in_flight = self
            .outstanding
            .iter()
            .filter(|k| multipliable(&k.method))
            .count()
            + self
                .out
                .requests
                .iter()
                .filter(|(r, _)| multipliable(&r.method))
                .count();
        let room = in_flight < MAX_MULTIPLIABLE_IN_FLIGHT;
        if !room {
            self.refused_in_flight += 1;
        }
        room
    }

    /// INFO/PRACK refused for the in-flight limit since the last call (for metrics).
    pub fn take_refused_in_flight(&mut self) -> u64 {
        std::mem::take(&mut self.refused_in_flight)
    }

    pub fn drain_requests(&mut self) -> std::vec::Drain<'_, (Request, Target)> {
        self.out.requests.drain(..)
    }

    pub fn drain_responses(&mut self) -> std::vec::Drain<'_, (ServerKey, Response)> {
        self.out.responses.drain(..)
    }

    pub fn drain_events(&mut self) -> std::vec::Drain<'_, CallEvent> {
        self.out.events.drain(..)
    }
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
