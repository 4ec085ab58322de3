//! sipline's SIP core, sans-IO: bytes and instants in, bytes, events and deadlines out.
//!
//! Nothing here opens a socket, reads a clock or spawns a task. The gateway's tokio
//! driver feeds datagrams and timeouts into a [`UserAgent`] and carries out what it
//! asks for, so every protocol edge case is a fast, deterministic unit test.

pub mod auth;
pub mod call;
pub mod deadlines;
pub mod dialog;
pub mod extra_headers;
#[doc(hidden)]
pub mod fuzzing;
pub mod keepalive;
pub mod message;
pub mod rate;
pub mod registration;
pub mod session_timer;
pub mod transaction;
pub mod transport;
pub mod trust;
pub mod user_agent;

pub use call::{CallError, CallEvent, CallRef, CallState, CallStatus, ReferTarget, TransferState};
pub use extra_headers::ExtraHeaders;
pub use registration::{LineState, LineStatus};
pub use transport::{Target, Transmit, Transport};
pub use user_agent::{
    Account, DropReason, Dropped, Event, LineId, Protection, UaConfig, UaCounters, UaStats, UserAgent,
};
