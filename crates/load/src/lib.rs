//! sipline-load: plays N browsers against a running sipline gateway exactly as the web
//! phone does (WebSocket JSON-RPC on `/api/v1/ws`, a WebRTC offer from the client,
//! ICE, DTLS-SRTP), has each call a number and stream a tone, and measures every call:
//! setup time, first audio, packets, loss, jitter, and whether the echo is our tone.
//! Operators use it to size a box; CI runs it briefly so it never rots.
//!
//! The binary (`src/main.rs`) only parses the command line and prints; the rest lives
//! here, one concept per module, so it can be tested.

pub mod audio;
pub mod cpu;
pub mod options;
pub mod receive;
pub mod report;
pub mod runner;
pub mod session;
pub mod signalling;
pub mod webrtc;

pub use options::{CodecChoice, Options};
pub use report::{CallRecord, Report};
pub use runner::run;
