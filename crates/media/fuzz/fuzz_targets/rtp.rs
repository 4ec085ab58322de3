//! Fuzzes what the SIP leg's media sockets receive: RTP and RTCP parsing, telephone-event
//! payloads, and SDP, none of which may panic on any input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sipline_media::{dtmf, rtcp, rtp, sdp};

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = rtp::RtpPacket::parse(data) {
        let again = p.to_vec();
        let q = rtp::RtpPacket::parse(&again).expect("our own packet parses");
        assert_eq!((q.sequence, q.timestamp, q.payload), (p.sequence, p.timestamp, p.payload));
        let _ = dtmf::TelephoneEvent::parse(p.payload);
    }
    let _ = rtcp::parse(data);
    let _ = rtp::looks_like_rtcp(data);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(offer) = sdp::Sdp::parse(text) {
            let local = sdp::LocalMedia::new("127.0.0.1".parse().unwrap(), 40000, 1);
            let _ = sdp::answer(&offer, &local);
            let _ = sdp::negotiate_answer(&local, &offer);
        }
    }
});
