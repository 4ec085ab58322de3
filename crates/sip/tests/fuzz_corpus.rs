//! The committed fuzz corpora of this crate, replayed through `sipline_sip::fuzzing`
//! (the replay itself: tests/fuzz_replay.rs at the top of the repository).

#[path = "../../../tests/fuzz_replay.rs"]
mod fuzz_replay;

/// Replays `fuzz/corpus/<target>` of this crate through `body`.
fn replay(target: &str, body: fn(&[u8])) {
    fuzz_replay::replay(env!("CARGO_MANIFEST_DIR"), target, body);
}

#[test]
fn message() {
    replay("message", sipline_sip::fuzzing::message);
}

#[test]
fn user_agent() {
    replay("user_agent", sipline_sip::fuzzing::user_agent);
}
