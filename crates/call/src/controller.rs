//! [`GatewayCall`]: one call of the gateway, from the first INVITE to the last event.

use std::collections::VecDeque;

use sipline_media::sdp::{self, Direction, LocalMedia, NegotiatedMedia, Sdp};
use sipline_sip::{CallEvent, CallState, CallStatus};

use crate::dtmf::{INFO_CONTENT_TYPE, info_body};
use crate::{CallControlError, DtmfMethod, MediaAction, Notice, Output, SipAction, SipMedia, dtmf_from_info};

/// Where the call is. Each phase carries what only it has.
#[derive(Debug)]
enum Phase {
    /// Our INVITE is out with our offer; the far end's answer may come early (18x).
    Calling,
    /// Their INVITE rings here. `offer` is theirs, or None: they want ours in the 200.
    Ringing { offer: Option<Box<Sdp>> },
    /// Answered.
    Established {
        /// We hold the far end (our last accepted offer was sendonly).
        local_hold: bool,
        /// The far end holds us (its last offer was sendonly or inactive).
        remote_hold: bool,
        /// Our re-INVITE in flight: hold (`true`) or resume.
        hold_change: Option<bool>,
    },
    /// Hung up by either side, or refused; the SIP side is finishing.
    Ending,
}

/// One gateway call: the SIP call's events and the browser's commands in, [`Output`]s
/// out (poll them with [`GatewayCall::poll_output`] after every input).
#[derive(Debug)]
pub struct GatewayCall {
    peer: String,
    incoming: bool,
    /// What the browser last saw.
    visible: CallState,
    phase: Phase,
    /// Our side of offer/answer: address, codecs, direction, SDP version.
    local: LocalMedia,
    /// What offer/answer last agreed.
    negotiated: Option<NegotiatedMedia>,
    /// The media task has the call's RTP ports.
    attached: bool,
    /// There is a media task to hand them to (a line may have none).
    media_task: bool,
    /// The SDP we last sent, to tell whether the next one changed (its version).
    last_sdp: Option<String>,
    outputs: VecDeque<Output>,
}

impl GatewayCall {
    fn new(peer: String, incoming: bool, phase: Phase, local: LocalMedia) -> GatewayCall {
        GatewayCall {
            peer,
            incoming,
            visible: if incoming {
                CallState::Ringing
            } else {
                CallState::Dialing
            },
            phase,
            local,
            negotiated: None,
            attached: false,
            media_task: true,
            last_sdp: None,
            outputs: VecDeque::new(),
        }
    }

    /// A call we place to `peer`: the call and the offer for its INVITE.
    pub fn outgoing(peer: String, local: LocalMedia) -> (GatewayCall, Vec<u8>) {
        let mut call = GatewayCall::new(peer, false, Phase::Calling, local);
        let offer = call.stamp(sdp::build_offer).into_bytes();
        (call, offer)
    }

    /// For a line without a media task: media is negotiated but never attached (DTMF
    /// then goes as INFO).
    pub fn without_media_task(mut self) -> GatewayCall {
        self.media_task = false;
        self
    }

    /// An INVITE from `peer` with `offer` (None when it had no body). Tells the browser
    /// it rings. Refused with the status to answer when the offer cannot be read.
    pub fn incoming(
        peer: String,
        display_name: Option<String>,
        headers: Vec<(String, String)>,
        offer: Option<&[u8]>,
        local: LocalMedia,
    ) -> Result<GatewayCall, u16> {
        let offer = offer
            .map(parse_sdp)
            .transpose()
            .map_err(|_| 488u16)?
            .map(Box::new);
        let mut call = GatewayCall::new(peer.clone(), true, Phase::Ringing { offer }, local);
        call.notify(Notice::Incoming {
            from: peer,
            display_name,
            headers,
        });
        Ok(call)
    }

    /// The other party's number.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    pub fn is_incoming(&self) -> bool {
        self.incoming
    }

    /// The state the browser was last told.
    pub fn state(&self) -> CallState {
        self.visible
    }

    /// Answered and not on hold by us, nor about to be: the call the browser talks in.
    pub fn is_talking(&self) -> bool {
        matches!(
            self.phase,
            Phase::Established {
                local_hold: false,
                hold_change: None,
                ..
            } | Phase::Established {
                hold_change: Some(false),
                ..
            }
        )
    }

    /// We hold the far end (it agreed).
    pub fn is_held_by_us(&self) -> bool {
        matches!(self.phase, Phase::Established { local_hold: true, .. })
    }

    /// How keys pressed now would reach the far end.
    pub fn dtmf_method(&self) -> DtmfMethod {
        DtmfMethod::for_media(self.negotiated.as_ref(), self.attached)
    }

    /// The next thing to do, in order.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    // ---- browser commands ----

    /// Answers the ringing call: our answer to their offer, or our offer when they made
    /// none (their answer then comes in the ACK).
    pub fn accept(&mut self) -> Result<(), CallControlError> {
        let Phase::Ringing { offer } = &mut self.phase else {
            return Err(CallControlError::NotRinging);
        };
        let sdp = match offer.take() {
            None => self.stamp(sdp::build_offer),
            Some(offer) => match sdp::answer(&offer, &self.local) {
                Ok(answer) => {
                    self.negotiated = Some(answer.media);
                    self.stamp(|l| {
                        sdp::answer(&offer, l)
                            .map(|a| a.sdp)
                            .unwrap_or(answer.sdp.clone())
                    })
                }
                Err(e) => {
                    let why = format!("the caller's media is not acceptable: {e}");
                    self.refuse_media(why.clone());
                    return Err(CallControlError::MediaNotAcceptable(e.to_string()));
                }
            },
        };
        self.phase = Phase::Established {
            local_hold: false,
            remote_hold: false,
            hold_change: None,
        };
        self.sip(SipAction::Accept {
            sdp: sdp.into_bytes(),
        });
        self.sync_media();
        Ok(())
    }

    /// Puts the far end on hold (`on`) or takes it off, with a re-INVITE. The browser's
    /// request is answered by [`Output::HoldSettled`] once the far end has answered.
    pub fn hold(&mut self, on: bool) -> Result<(), CallControlError> {
        let Phase::Established {
            local_hold,
            hold_change,
            ..
        } = &mut self.phase
        else {
            return Err(match self.phase {
                Phase::Ending => CallControlError::CallEnded,
                _ => CallControlError::NotEstablished,
            });
        };
        if hold_change.is_some() {
            return Err(CallControlError::OfferInProgress);
        }
        if *local_hold == on {
            self.outputs.push_back(Output::HoldSettled(Ok(())));
            return Ok(());
        }
        *hold_change = Some(on);
        self.local.direction = hold_direction(on);
        let sdp = self.stamp(sdp::build_offer).into_bytes();
        self.sip(SipAction::Reinvite { sdp });
        Ok(())
    }

    /// Sends keys to the far end, by the method its media allows.
    pub fn dtmf(&mut self, digits: &str) -> Result<DtmfMethod, CallControlError> {
        if !matches!(
            self.visible,
            CallState::InCall | CallState::Held | CallState::EarlyMedia
        ) || matches!(self.phase, Phase::Ending)
        {
            return Err(CallControlError::NotEstablished);
        }
        let method = self.dtmf_method();
        match method {
            DtmfMethod::Rfc4733 => self.media(MediaAction::Dtmf(digits.to_owned())),
            DtmfMethod::Info => digits.chars().for_each(|d| self.info_dtmf(d)),
        }
        Ok(method)
    }

    /// A key the browser sent in its own audio (`RTCDTMFSender`), which the far end can
    /// only take as INFO.
    pub fn browser_key(&mut self, digit: char) {
        if !matches!(self.phase, Phase::Ending) {
            self.info_dtmf(digit);
        }
    }

    /// Blind transfer: asks the far end to call `number` instead of us (REFER). The
    /// progress comes back as [`Notice::Transfer`]; once it worked, the call ends.
    pub fn transfer(&mut self, number: &str) -> Result<(), CallControlError> {
        match self.phase {
            Phase::Established { .. } => {
                self.sip(SipAction::Refer {
                    number: number.to_owned(),
                });
                Ok(())
            }
            Phase::Ending => Err(CallControlError::CallEnded),
            _ => Err(CallControlError::NotEstablished),
        }
    }

    /// Attended transfer: asks the far end to call the far end of `other` (an
    /// established call of the line) in our place, replacing it (REFER with Replaces).
    pub fn transfer_to_call(&mut self, other: sipline_sip::CallRef) -> Result<(), CallControlError> {
        match self.phase {
            Phase::Established { .. } => {
                self.sip(SipAction::ReferToCall { other });
                Ok(())
            }
            Phase::Ending => Err(CallControlError::CallEnded),
            _ => Err(CallControlError::NotEstablished),
        }
    }

    /// Ends the call: CANCEL, reject with `code`, or BYE. `why` replaces the reason the
    /// browser is told (a media timeout…).
    pub fn hang_up(&mut self, code: u16, why: Option<String>) -> Result<(), CallControlError> {
        if matches!(self.phase, Phase::Ending) {
            return Err(CallControlError::CallEnded);
        }
        self.sip(SipAction::HangUp { code, why });
        Ok(())
    }

    /// The user agent could not carry out `action` (the call changed under it).
    pub fn sip_refused(&mut self, action: &SipAction, why: String) {
        if let SipAction::Reinvite { .. } = action {
            self.roll_back_hold(Err(CallControlError::Sip(why)));
        }
    }

    // ---- SIP events ----

    /// An event of the SIP call.
    pub fn on_sip_event(&mut self, event: CallEvent) {
        match event {
            // reported by `incoming`
            CallEvent::Incoming { .. } => {}
            CallEvent::Status(status) => self.on_status(status),
            CallEvent::RemoteSdp { sdp, early } => self.on_remote_sdp(&sdp, early),
            CallEvent::Offer { sdp } => self.on_offer(sdp.as_deref()),
            CallEvent::Info { content_type, body } => {
                if let Some(digit) = dtmf_from_info(&content_type, &body) {
                    self.notify(Notice::Dtmf {
                        digit,
                        method: DtmfMethod::Info,
                    });
                }
            }
            CallEvent::Transfer { state, code } => self.notify(Notice::Transfer { state, code }),
            // the new call is the driver's to place (another call of the line)
            CallEvent::Referred(_) => {}
            CallEvent::ReinviteFailed { code } => {
                if self.roll_back_hold(Err(CallControlError::Refused { code })) {
                    self.notify(Notice::Error {
                        code: Some(code),
                        reason: format!("the far end refused the change ({code})"),
                    });
                }
            }
            CallEvent::Ended => {
                if std::mem::take(&mut self.attached) {
                    self.media(MediaAction::Detach);
                }
                self.end();
            }
        }
    }

    fn on_status(&mut self, status: CallStatus) {
        self.visible = status.state;
        if status.state.is_final() {
            self.end();
            if status.state == CallState::Failed {
                self.notify(Notice::Error {
                    code: status.code,
                    reason: status.reason.clone().unwrap_or_else(|| "call failed".into()),
                });
            }
        } else if status.state == CallState::InCall && matches!(self.phase, Phase::Calling) {
            self.phase = Phase::Established {
                local_hold: false,
                remote_hold: false,
                hold_change: None,
            };
        }
        self.notify(Notice::State(status));
    }

    /// The far end's answer to our offer: in a 18x (`early`), the 200, or the ACK.
    fn on_remote_sdp(&mut self, body: &[u8], early: bool) {
        if matches!(self.phase, Phase::Ending) {
            // answered after we hung up (CANCEL crossing the 200): the SIP side BYEs it
            return;
        }
        let negotiated = parse_sdp(body)
            .and_then(|answer| sdp::negotiate_answer(&self.local, &answer).map_err(|e| e.to_string()));
        match negotiated {
            Ok(n) => {
                self.negotiated = Some(n);
                if let Phase::Established {
                    local_hold,
                    hold_change,
                    ..
                } = &mut self.phase
                    && let Some(on) = hold_change.take()
                {
                    *local_hold = on;
                    self.sync_media();
                    self.notify(Notice::Hold { on });
                    self.outputs.push_back(Output::HoldSettled(Ok(())));
                } else {
                    self.sync_media();
                }
            }
            Err(e) if early => self.warn(format!("unusable early media SDP: {e}")),
            Err(e) => {
                self.roll_back_hold(Err(CallControlError::MediaNotAcceptable(e.clone())));
                self.refuse_media(format!("the far end's media is not acceptable: {e}"));
            }
        }
    }

    /// A new offer from the far end (re-INVITE), or a request for ours (`None`).
    fn on_offer(&mut self, offer: Option<&[u8]>) {
        let Some(offer) = offer else {
            // offerless re-INVITE: our current offer in the 200, their answer in the ACK
            let sdp = self.stamp(sdp::build_offer).into_bytes();
            self.sip(SipAction::AnswerOffer(Ok(sdp)));
            return;
        };
        let offer = match parse_sdp(offer) {
            Ok(o) => o,
            Err(e) => {
                self.warn(format!("re-INVITE offer not acceptable: {e}"));
                self.sip(SipAction::AnswerOffer(Err(488)));
                return;
            }
        };
        let answer = match sdp::answer(&offer, &self.local).map_err(|e| e.to_string()) {
            Ok(a) => a,
            Err(e) => {
                self.warn(format!("re-INVITE offer not acceptable: {e}"));
                self.sip(SipAction::AnswerOffer(Err(488)));
                return;
            }
        };
        let held = answer.media.remote_on_hold;
        self.negotiated = Some(answer.media);
        let sdp = self.stamp(|l| {
            sdp::answer(&offer, l)
                .map(|a| a.sdp)
                .unwrap_or(answer.sdp.clone())
        });
        self.sip(SipAction::AnswerOffer(Ok(sdp.into_bytes())));
        self.sync_media();
        if let Phase::Established { remote_hold, .. } = &mut self.phase
            && std::mem::replace(remote_hold, held) != held
        {
            let state = if held { CallState::Held } else { CallState::InCall };
            self.visible = state;
            self.notify(Notice::State(CallStatus {
                state,
                code: None,
                reason: Some(if held { "held by the far end" } else { "resumed" }.into()),
            }));
        }
    }

    // ---- helpers ----

    /// Our re-INVITE failed: the call keeps the media it had, and the browser's request
    /// gets `outcome`. Returns whether a change was in flight.
    fn roll_back_hold(&mut self, outcome: Result<(), CallControlError>) -> bool {
        let Phase::Established {
            local_hold,
            hold_change,
            ..
        } = &mut self.phase
        else {
            return false;
        };
        if hold_change.take().is_none() {
            return false;
        }
        self.local.direction = hold_direction(*local_hold);
        self.outputs.push_back(Output::HoldSettled(outcome));
        true
    }

    /// Tells the media task what offer/answer agreed: hands it the ports the first
    /// time, updates it afterwards.
    fn sync_media(&mut self) {
        if !self.media_task {
            return;
        }
        let Some(n) = &self.negotiated else { return };
        let local_hold = matches!(self.phase, Phase::Established { local_hold: true, .. });
        let media = SipMedia::negotiated(n, local_hold);
        let action = if std::mem::replace(&mut self.attached, true) {
            MediaAction::Update(media)
        } else {
            MediaAction::Attach(media)
        };
        self.media(action);
    }

    /// Ends a call whose media cannot be agreed on (488) and tells the browser why.
    fn refuse_media(&mut self, reason: String) {
        self.sip(SipAction::HangUp { code: 488, why: None });
        self.notify(Notice::Error {
            code: Some(488),
            reason,
        });
        self.end();
    }

    fn end(&mut self) {
        if !matches!(self.phase, Phase::Ending) {
            self.roll_back_hold(Err(CallControlError::CallEnded));
            self.phase = Phase::Ending;
        }
    }

    /// Our SDP to send, built by `make` from our media; its o= version goes up exactly
    /// when it differs from the SDP we last sent (RFC 3264 §8: peers that see the same
    /// version ignore the rest).
    fn stamp(&mut self, make: impl Fn(&LocalMedia) -> String) -> String {
        let mut sdp = make(&self.local);
        if self
            .last_sdp
            .as_deref()
            .is_some_and(|last| !same_but_version(last, &sdp))
        {
            self.local.next_version();
            sdp = make(&self.local);
        }
        self.last_sdp = Some(sdp.clone());
        sdp
    }

    fn info_dtmf(&mut self, digit: char) {
        self.sip(SipAction::Info {
            content_type: INFO_CONTENT_TYPE,
            body: info_body(digit),
        });
    }

    fn notify(&mut self, notice: Notice) {
        self.outputs.push_back(Output::Notify(notice));
    }

    fn sip(&mut self, action: SipAction) {
        self.outputs.push_back(Output::Sip(action));
    }

    fn media(&mut self, action: MediaAction) {
        self.outputs.push_back(Output::Media(action));
    }

    fn warn(&mut self, what: String) {
        self.outputs.push_back(Output::Warning(what));
    }
}

/// Whether two of our SDPs say the same but for the `o=` line (where the version is).
fn same_but_version(a: &str, b: &str) -> bool {
    let body = |s| str::lines(s).filter(|l| !l.starts_with("o="));
    body(a).eq(body(b))
}

fn hold_direction(on: bool) -> Direction {
    if on {
        Direction::SendOnly
    } else {
        Direction::SendRecv
    }
}

fn parse_sdp(body: &[u8]) -> Result<Sdp, String> {
    let text = std::str::from_utf8(body).map_err(|_| "SDP is not UTF-8".to_owned())?;
    Sdp::parse(text).map_err(|e| e.to_string())
}
