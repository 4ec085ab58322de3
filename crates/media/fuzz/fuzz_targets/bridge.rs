//! Fuzzes the media bridge with hostile packets from both legs, in both relay and
//! transcoding set-ups (so the Opus, G.722 and G.711 decoders see garbage too).
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use sipline_media::bridge::{Bridge, BrowserLeg, LegCodec, SipLeg};
use sipline_media::sdp::Codec;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let codecs = [
        LegCodec { codec: Codec::Pcmu, payload_type: 0 },
        LegCodec { codec: Codec::Pcma, payload_type: 8 },
        LegCodec { codec: Codec::G722, payload_type: 9 },
        LegCodec { codec: Codec::Opus, payload_type: 111 },
    ];
    let browser = codecs[usize::from(selector & 3)];
    let sip = codecs[usize::from((selector >> 2) & 3)];
    let t0 = Instant::now();
    let mut b = Bridge::new(
        t0,
        Duration::from_secs(1_700_000_000),
        BrowserLeg { codecs: vec![browser], dtmf: vec![(126, 8000)] },
        SipLeg { codec: sip, dtmf_payload_type: Some(101), ptime_ms: 20, send: true, receive: true },
        u64::from(selector),
    );
    // chunks separated by 0xff 0x00: even-numbered go to the SIP leg as datagrams, odd ones
    // to the browser leg as payloads with header fields from their first bytes
    for (i, chunk) in rest.split(|b| *b == 0xff).enumerate() {
        let now = t0 + Duration::from_millis(20 * i as u64);
        if i % 2 == 0 {
            let _ = b.from_sip(now, chunk);
            let _ = b.from_sip_rtcp(now, chunk);
        } else if chunk.len() >= 7 {
            let pt = if chunk[0] & 1 == 0 { browser.payload_type } else { 126 };
            let seq = u16::from_be_bytes([chunk[1], chunk[2]]);
            let ts = u32::from_be_bytes([chunk[3], chunk[4], chunk[5], chunk[6]]);
            b.from_browser(now, pt, seq, ts, 1, &chunk[7..]);
        }
        if chunk.first() == Some(&b'#') {
            b.send_dtmf(now, "1#");
        }
        b.handle_timeout(now);
        while b.poll_output().is_some() {}
    }
});
