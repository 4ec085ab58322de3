//! `sipline-call`: what one *gateway call* is, as a sans-IO state machine.
//!
//! A gateway call has two halves that the other cores keep apart: the SIP call
//! (`sipline-sip`: dialog, transactions, SDP as opaque bytes) and its RTP media
//! (`sipline-media`: offer/answer, the bridge). Between them sit the decisions that
//! make it one call: which offer to send and how to answer theirs, when the media task
//! gets the call's ports and when it only hears of a change, hold and resume with
//! their rollback, the far end holding us, how DTMF is sent, and what the browser is
//! told at each step.
//!
//! [`GatewayCall`] takes SIP call events, browser commands and SDP, and gives out
//! [`Output`]s: notices for the browser, actions for the SIP user agent, and changes
//! for the media task. It owns no socket, task or clock, so every path is a unit test
//! (`tests.rs`); the gateway's SIP task is a thin loop around it, the way quinn is
//! around quinn-proto.

mod controller;
mod dtmf;
mod error;
mod output;
#[cfg(test)]
mod tests;

pub use controller::GatewayCall;
pub use dtmf::{DtmfMethod, dtmf_from_info, valid_dtmf};
pub use error::CallControlError;
pub use output::{MediaAction, Notice, Output, SipAction, SipMedia};
