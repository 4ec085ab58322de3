//! SDP (RFC 8866) and the offer/answer model (RFC 3264) for the RTP/AVP audio leg of
//! SIP calls (or RTP/SAVP with SDES keys, RFC 4568), sans-IO: SDP text in, SDP text
//! and [`NegotiatedMedia`] out.
//!
//! Hand-written rather than built on `sdp-types` (0.3.1, evaluated for this): that
//! crate is sound (it survived the same mutation test without a panic) but parses
//! every line strictly and fails the whole body on any error, including lines
//! negotiation never reads, so a trailing space after `b=AS:64`, a fractional `b=TIAS`
//! value, a second `s=` line, a whitespace-only line or a BOM would make us refuse a
//! call. Working around that means filtering lines before handing them over, that is,
//! writing the line layer anyway; and its model is string-typed (formats as one
//! string, addresses as strings), so converting it into ours would take about as much
//! code as parsing the few lines we need, with less control over error messages.
//!
//! | module | what it is |
//! |---|---|
//! | `codec` | [`Codec`]: the audio formats we negotiate and their SDP names |
//! | `direction` | [`Direction`]: sendrecv/sendonly/recvonly/inactive and their algebra |
//! | `description` | [`Sdp`]: the parsed model and its tolerant parser |
//! | `local` | [`LocalMedia`]: what we offer, and [`build_offer`] |
//! | `negotiate` | [`answer`] and [`negotiate_answer`]: RFC 3264 for both roles |

// SDP comes from the network: outside tests, nothing here may panic on what it reads.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects
    )
)]

mod codec;
mod description;
mod direction;
mod local;
mod negotiate;
#[cfg(test)]
mod samples;

pub use codec::{Codec, DEFAULT_OPUS_PAYLOAD_TYPE, DEFAULT_TELEPHONE_EVENT_PAYLOAD_TYPE};
pub use description::{Attribute, Connection, Fmtp, Media, MediaKind, Origin, Rtcp, RtpMap, Sdp, SdpError};
pub use direction::Direction;
pub use local::{
    DEFAULT_PTIME, LocalCodec, LocalMedia, LocalSrtp, OFFER_CRYPTO_TAG, SESSION_NAME, build_offer,
};
pub use negotiate::{Answer, NegotiatedMedia, NegotiationError, SrtpKeys, answer, negotiate_answer};
