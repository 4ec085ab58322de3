//! Why a browser's request on a call was not carried out, as a type: the tasks pass it
//! along unchanged and the API maps it to a JSON-RPC error in one place.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallControlError {
    /// The line has no call.
    NoCall,
    /// The call the request named is not one of the line's (perhaps it just ended).
    NoSuchCall(String),
    /// The line has several calls and the request named none.
    WhichCall,
    /// The line already has a call.
    LineBusy,
    /// No incoming call is ringing.
    NotRinging,
    /// The call is not answered yet (or is already ending).
    NotEstablished,
    /// An earlier offer (ours or the far end's) is still being negotiated.
    OfferInProgress,
    /// The far end refused our re-INVITE (or never answered it): the call keeps the
    /// media it had.
    Refused { code: u16 },
    /// No media could be agreed with the far end.
    MediaNotAcceptable(String),
    /// The call ended before the request could be carried out.
    CallEnded,
    /// This node is at `calls.max_concurrent`.
    CallLimit,
    /// No RTP port pair is free.
    NoMediaPort,
    /// The SIP core refused the request (a number that cannot be dialled…).
    Sip(String),
}

impl fmt::Display for CallControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallControlError::NoCall => f.write_str("there is no call"),
            CallControlError::NoSuchCall(id) => write!(f, "there is no call {id:?}"),
            CallControlError::WhichCall => f.write_str("the line has several calls: name one with callId"),
            CallControlError::LineBusy => f.write_str("already in a call"),
            CallControlError::NotRinging => f.write_str("no incoming call is ringing"),
            CallControlError::NotEstablished => f.write_str("the call is not established"),
            CallControlError::OfferInProgress => f.write_str("another offer is in progress"),
            CallControlError::Refused { code } => write!(f, "the far end refused the change ({code})"),
            CallControlError::MediaNotAcceptable(why) => write!(f, "the media is not acceptable: {why}"),
            CallControlError::CallEnded => f.write_str("the call ended"),
            CallControlError::CallLimit => f.write_str("the gateway is at its limit of concurrent calls"),
            CallControlError::NoMediaPort => f.write_str("no free media port"),
            CallControlError::Sip(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for CallControlError {}
