//! Fuzz target `bridge`: see `sipline_media::fuzzing::bridge`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sipline_media::fuzzing::bridge(data));
