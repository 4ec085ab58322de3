//! Fuzz target `browser_sdp`: see `sipline::fuzzing::browser_sdp`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sipline::fuzzing::browser_sdp(data));
