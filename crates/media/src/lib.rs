//! sipline's media negotiation, sans-IO: SDP text in, SDP text and negotiated media
//! parameters out.
//!
//! The SIP leg of a call carries its media description in SDP bodies. This crate reads
//! the far end's offers and answers, writes ours, and decides what the RTP leg uses
//! (address, codec, payload types, direction). It opens no socket and reads no clock;
//! the gateway's driver carries the SDP text in and out of SIP messages and hands the
//! [`sdp::NegotiatedMedia`] to whatever moves the RTP.

pub mod audio;
pub mod bridge;
pub mod dtmf;
#[doc(hidden)]
pub mod fuzzing;
pub mod latch;
pub mod rtcp;
pub mod rtp;
pub mod sdp;
pub mod srtp;
pub mod watchdog;
