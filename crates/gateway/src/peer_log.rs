//! Log lines that peers can provoke (junk on the SIP port, refused connections, a
//! browser breaking the rules) go through a gate: a few a second per kind, then
//! silence, and the next line that passes says how many were suppressed. Peer text in
//! them is cut short and escaped ([`clip`]), so nobody can fill the disk or forge log
//! lines through the gateway. Suppressed lines are counted in
//! `sipline_dropped_total{what="log_lines"}`.

use std::sync::{LazyLock, Mutex};
use std::time::Instant;

use sipline_sip::rate::TokenBucket;

use crate::counters::{self, Counter};

/// The kinds of peer-driven log lines, each with its own budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Junk, strays and refusals on the SIP port.
    Sip,
    /// SIP-TCP connections refused, idle or not reading.
    SipTcp,
    /// HTTP connections refused or timed out.
    Http,
    /// What browsers send against the rules.
    Browser,
    /// RTP from somewhere it should not come from.
    Media,
}

const KINDS: usize = 5;

fn slot(kind: Kind) -> usize {
    match kind {
        Kind::Sip => 0,
        Kind::SipTcp => 1,
        Kind::Http => 2,
        Kind::Browser => 3,
        Kind::Media => 4,
    }
}

/// Lines a second per kind, and the burst allowed before that.
const RATE: f64 = 5.0;
const BURST: f64 = 20.0;

struct Gate {
    bucket: TokenBucket,
    suppressed: u64,
}

static GATES: LazyLock<[Mutex<Gate>; KINDS]> = LazyLock::new(|| {
    std::array::from_fn(|_| {
        Mutex::new(Gate {
            bucket: TokenBucket::new(RATE, BURST),
            suppressed: 0,
        })
    })
});

/// Whether a line of `kind` may be written now: `Some(n)` with the number suppressed
/// since the last one written, `None` to stay silent.
pub fn admit(kind: Kind) -> Option<u64> {
    let mut gate = GATES[slot(kind)].lock().unwrap_or_else(|p| p.into_inner());
    if gate.bucket.try_take(Instant::now()) {
        Some(std::mem::take(&mut gate.suppressed))
    } else {
        gate.suppressed += 1;
        counters::inc(Counter::LogLines);
        None
    }
}

/// Writes a peer-driven warning through the gate of its kind.
#[macro_export]
macro_rules! peer_warn {
    ($kind:expr, $($arg:tt)+) => {
        if let Some(suppressed) = $crate::peer_log::admit($kind) {
            if suppressed > 0 {
                tracing::warn!(suppressed, $($arg)+);
            } else {
                tracing::warn!($($arg)+);
            }
        }
    };
}

pub use sipline_sip::user_agent::clip;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_silence_then_a_count() {
        // Media's gate is used by no other unit test
        let passed = (0..1000).filter(|_| admit(Kind::Media).is_some()).count();
        assert_eq!(passed, BURST as usize);
        std::thread::sleep(std::time::Duration::from_millis(250));
        assert_eq!(admit(Kind::Media), Some(1000 - BURST as u64));
    }

    #[test]
    fn clipped_text_is_short_and_has_no_control_characters() {
        let long = "\u{1b}[2J\r\nfake: line ".repeat(1000);
        let c = clip(&long);
        assert!(c.len() <= 170, "{}", c.len());
        assert!(c.len() >= 150, "{}", c.len());
        assert!(!c.chars().any(char::is_control));
        assert_eq!(clip("INVITE"), "INVITE");
    }
}
