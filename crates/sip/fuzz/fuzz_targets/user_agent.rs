//! Fuzzes the user agent's receive path: see `sipline_sip::fuzzing::user_agent`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sipline_sip::fuzzing::user_agent(data));
