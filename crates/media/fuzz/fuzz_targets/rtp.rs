//! Fuzz target `rtp`: see `sipline_media::fuzzing::rtp`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sipline_media::fuzzing::rtp(data));
