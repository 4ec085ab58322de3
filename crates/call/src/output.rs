//! What a [`crate::GatewayCall`] asks of the world, as data.

use std::net::SocketAddr;

use sipline_media::bridge::SipLeg;
use sipline_media::sdp::NegotiatedMedia;
use sipline_sip::{CallStatus, TransferState};

use crate::{CallControlError, DtmfMethod};

/// One thing for the driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Tell the browser.
    Notify(Notice),
    /// Have the SIP user agent do it.
    Sip(SipAction),
    /// Have the line's media task do it.
    Media(MediaAction),
    /// The outcome of the browser's `hold`/`unhold`: answer its request now.
    HoldSettled(Result<(), CallControlError>),
    /// Something the operator should see in the log (not the browser).
    Warning(String),
}

/// What the browser hears about the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    Incoming {
        from: String,
        display_name: Option<String>,
        /// Headers of the INVITE the operator chose to pass on.
        headers: Vec<(String, String)>,
    },
    State(CallStatus),
    Error {
        code: Option<u16>,
        reason: String,
    },
    /// A key press from the far end.
    Dtmf {
        digit: char,
        method: DtmfMethod,
    },
    /// We put the far end on hold (`on`) or took it off, and it agreed: on the
    /// browser's request, or because the browser turned to another call.
    Hold {
        on: bool,
    },
    /// How the browser's transfer of this call is going.
    Transfer {
        state: TransferState,
        code: Option<u16>,
    },
}

/// A request to the SIP user agent, for this call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SipAction {
    /// 200 OK to the ringing INVITE with our SDP (an answer, or an offer if theirs had none).
    Accept { sdp: Vec<u8> },
    /// Our answer to their re-INVITE's offer (or our offer when it had none), or the
    /// status refusing it.
    AnswerOffer(Result<Vec<u8>, u16>),
    /// A re-INVITE with our new offer.
    Reinvite { sdp: Vec<u8> },
    /// CANCEL, reject with `code`, or BYE; `why` replaces the usual reason told to the browser.
    HangUp { code: u16, why: Option<String> },
    Info {
        content_type: &'static str,
        body: Vec<u8>,
    },
    /// An attended transfer: REFER the far end to the far end of `other` (another call
    /// of the line), replacing it.
    ReferToCall { other: sipline_sip::CallRef },
    /// A blind transfer: REFER the far end to `number`.
    Refer { number: String },
}

/// A change for the media task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaAction {
    /// The call's media is negotiated for the first time: hand over its RTP ports and bridge.
    Attach(SipMedia),
    /// Negotiated again (re-INVITE, hold, answer after early media).
    Update(SipMedia),
    /// The call is over: stop bridging and give the ports back.
    Detach,
    /// The browser turns to this call (of several on its line): bridge it, park the others.
    Focus,
    /// Send these keys as RFC 4733 events.
    Dtmf(String),
}

/// The SIP side of a call's media, as negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SipMedia {
    pub leg: SipLeg,
    pub remote_rtp: SocketAddr,
    pub remote_rtcp: SocketAddr,
    /// The SDES-SRTP keys, when the leg is encrypted.
    pub srtp: Option<sipline_media::sdp::SrtpKeys>,
}

impl SipMedia {
    /// From what offer/answer decided; `local_hold`: we hold the far end.
    pub fn negotiated(n: &NegotiatedMedia, local_hold: bool) -> SipMedia {
        SipMedia {
            leg: SipLeg::negotiated(n, local_hold),
            remote_rtp: n.remote_rtp,
            remote_rtcp: n.remote_rtcp,
            srtp: n.srtp,
        }
    }

    /// Whether the leg is on hold either way.
    pub fn is_held(&self) -> bool {
        !self.leg.send || !self.leg.receive
    }
}
