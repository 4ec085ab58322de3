//! Fuzz target `jsonrpc`: see `sipline::fuzzing::jsonrpc`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sipline::fuzzing::jsonrpc(data));
