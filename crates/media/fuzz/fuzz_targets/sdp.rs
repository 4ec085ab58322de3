//! Fuzz target `sdp`: see `sipline_media::fuzzing::sdp`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sipline_media::fuzzing::sdp(data));
