//! The committed fuzz corpora of this crate, replayed through `sipline_media::fuzzing`
//! (the replay itself: tests/fuzz_replay.rs at the top of the repository).

#[path = "../../../tests/fuzz_replay.rs"]
mod fuzz_replay;

/// Replays `fuzz/corpus/<target>` of this crate through `body`.
fn replay(target: &str, body: fn(&[u8])) {
    fuzz_replay::replay(env!("CARGO_MANIFEST_DIR"), target, body);
}

#[test]
fn rtp() {
    replay("rtp", sipline_media::fuzzing::rtp);
}

#[test]
fn bridge() {
    replay("bridge", sipline_media::fuzzing::bridge);
}

#[test]
fn sdp() {
    replay("sdp", sipline_media::fuzzing::sdp);
}
