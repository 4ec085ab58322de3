//! Fuzzes the SIP parser: any bytes must parse or fail cleanly, a parsed message must
//! serialise into something that parses again, and the typed header views and stream
//! framing must not panic on whatever the parser accepted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sipline_sip::message::{Message, frame_length};

fuzz_target!(|data: &[u8]| {
    let _ = frame_length(data);
    let Ok(msg) = Message::parse(data) else { return };
    let h = msg.headers();
    let _ = h.vias();
    let _ = h.cseq();
    let _ = h.from();
    let _ = h.to();
    let _ = h.contacts();
    let _ = h.call_id();
    if let Message::Request(r) = &msg {
        let _ = r.validate();
    }
    for v in h.get_all("WWW-Authenticate").chain(h.get_all("Proxy-Authenticate")) {
        let _ = sipline_sip::auth::Challenge::parse(v);
    }
    for v in h.get_all("Authorization") {
        let _ = sipline_sip::auth::Authorization::parse(v);
    }
    let bytes = msg.to_bytes();
    let again = Message::parse(&bytes).expect("a serialised message parses again");
    assert_eq!(again.to_bytes(), bytes, "serialising is stable");
});
