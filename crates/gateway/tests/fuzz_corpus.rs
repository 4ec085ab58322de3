//! The committed fuzz corpora of this crate, replayed through `sipline::fuzzing`
//! (the replay itself: tests/fuzz_replay.rs at the top of the repository).

#[path = "../../../tests/fuzz_replay.rs"]
mod fuzz_replay;

/// Replays `fuzz/corpus/<target>` of this crate through `body`.
fn replay(target: &str, body: fn(&[u8])) {
    fuzz_replay::replay(env!("CARGO_MANIFEST_DIR"), target, body);
}

#[test]
fn jsonrpc() {
    replay("jsonrpc", sipline::fuzzing::jsonrpc);
}

#[test]
fn browser_sdp() {
    replay("browser_sdp", sipline::fuzzing::browser_sdp);
}
