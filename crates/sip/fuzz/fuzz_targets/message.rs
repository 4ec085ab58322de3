//! Fuzzes the SIP parser: see `sipline_sip::fuzzing::message`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sipline_sip::fuzzing::message(data));
