//! The bridge with synthetic streams and simulated time.

use std::time::{Duration, Instant};

use super::*;
use crate::audio::{AudioDecoder, AudioEncoder, tone_snr_db as snr_db};
use crate::dtmf::TelephoneEvent;

fn tone(rate: u32, hz: f32, samples: usize, offset: usize) -> Vec<i16> {
    (offset..offset + samples)
        .map(|i| ((i as f32 * hz * 2.0 * std::f32::consts::PI / rate as f32).sin() * 0.5 * 32767.0) as i16)
        .collect()
}

const PCMU: LegCodec = LegCodec {
    codec: Codec::Pcmu,
    payload_type: 0,
};
const PCMA: LegCodec = LegCodec {
    codec: Codec::Pcma,
    payload_type: 8,
};
const G722: LegCodec = LegCodec {
    codec: Codec::G722,
    payload_type: 9,
};
const OPUS: LegCodec = LegCodec {
    codec: Codec::Opus,
    payload_type: 111,
};

fn browser(codecs: &[LegCodec]) -> BrowserLeg {
    BrowserLeg {
        codecs: codecs.to_vec(),
        dtmf: vec![(126, 8000)],
    }
}

fn sip(codec: LegCodec) -> SipLeg {
    SipLeg {
        codec,
        dtmf_payload_type: Some(101),
        ptime_ms: 20,
        send: true,
        receive: true,
    }
}

fn outputs(b: &mut Bridge) -> Vec<Output> {
    std::iter::from_fn(|| b.poll_output()).collect()
}

fn sip_rtp(out: &[Output]) -> Vec<(u8, u16, u32, bool, u32, Vec<u8>)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Sip(d) => {
                let p = RtpPacket::parse(d).unwrap();
                Some((
                    p.payload_type,
                    p.sequence,
                    p.timestamp,
                    p.marker,
                    p.ssrc,
                    p.payload.to_vec(),
                ))
            }
            _ => None,
        })
        .collect()
}

fn browser_rtp(out: &[Output]) -> Vec<BrowserRtp> {
    out.iter()
        .filter_map(|o| match o {
            Output::Browser(p) => Some(p.clone()),
            _ => None,
        })
        .collect()
}

fn far_packet(pt: u8, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    RtpPacket {
        marker: false,
        payload_type: pt,
        sequence: seq,
        timestamp: ts,
        ssrc,
        payload,
    }
    .to_vec()
}

#[test]
fn relays_pcmu_untouched_with_our_own_stream_numbering() {
    let t0 = Instant::now();
    let mut b = Bridge::new(
        t0,
        Duration::from_secs(1_700_000_000),
        browser(&[PCMU, OPUS]),
        sip(PCMU),
        1,
    );
    for i in 0..5u16 {
        let payload = vec![i as u8; 160];
        b.from_browser(t0, 0, 1000 + i, 5000 + u32::from(i) * 160, 77, &payload);
    }
    let out = sip_rtp(&outputs(&mut b));
    assert_eq!(out.len(), 5);
    for (i, (pt, seq, ts, marker, ssrc, payload)) in out.iter().enumerate() {
        assert_eq!(*pt, 0);
        assert_eq!(payload, &vec![i as u8; 160], "payload untouched");
        assert_eq!(*seq, out[0].1.wrapping_add(i as u16));
        assert_eq!(*ts, out[0].2.wrapping_add(i as u32 * 160));
        assert_eq!(*marker, i == 0);
        assert_ne!(*ssrc, 77, "our SSRC, not the browser's");
    }
    assert_eq!(b.is_relaying(), (true, true));
    // the far end's PCMU goes to the browser untouched too, in our numbering
    for i in 0..3u16 {
        b.from_sip(
            t0,
            &far_packet(0, 50 + i, 90_000 + u32::from(i) * 160, 9, &[7; 160]),
        )
        .unwrap();
    }
    let to_browser = browser_rtp(&outputs(&mut b));
    assert_eq!(to_browser.len(), 3);
    assert!(
        to_browser
            .iter()
            .all(|p| p.payload == vec![7; 160] && p.payload_type == 0)
    );
    assert_eq!(to_browser[1].sequence, to_browser[0].sequence + 1);
}

#[test]
fn a_new_far_end_stream_continues_our_timeline() {
    let t0 = Instant::now();
    let mut b = Bridge::new(t0, Duration::ZERO, browser(&[PCMU]), sip(PCMU), 2);
    for i in 0..3u16 {
        b.from_sip(t0, &far_packet(0, i, u32::from(i) * 160, 1, &[1; 160]))
            .unwrap();
    }
    // re-INVITE to another media server: new SSRC, sequence and timestamps
    for i in 0..3u16 {
        b.from_sip(
            t0,
            &far_packet(0, 40_000 + i, 3_000_000 + u32::from(i) * 160, 2, &[2; 160]),
        )
        .unwrap();
    }
    let p = browser_rtp(&outputs(&mut b));
    assert_eq!(p.len(), 6);
    for w in p.windows(2) {
        assert_eq!(w[1].sequence, w[0].sequence + 1, "no jump in sequence");
        assert_eq!(
            w[1].timestamp,
            w[0].timestamp.wrapping_add(160),
            "no jump in time"
        );
    }
    assert!(p[3].marker, "the new talk spurt is marked");
}

#[test]
fn losses_stay_visible_and_late_packets_are_dropped() {
    let t0 = Instant::now();
    let mut b = Bridge::new(t0, Duration::ZERO, browser(&[PCMU]), sip(PCMU), 3);
    for seq in [1u16, 2, 4, 3, 5] {
        b.from_sip(
            t0,
            &far_packet(0, seq, u32::from(seq) * 160, 1, &[seq as u8; 160]),
        )
        .unwrap();
    }
    let p = browser_rtp(&outputs(&mut b));
    let seqs: Vec<u64> = p.iter().map(|x| x.sequence - p[0].sequence).collect();
    assert_eq!(
        seqs,
        vec![0, 1, 3, 4],
        "3 is missing downstream too; its late copy is dropped"
    );
    assert_eq!(b.sip_counters().packets_received, 5);
}

#[test]
fn transcodes_browser_opus_to_pcmu_and_back() {
    let t0 = Instant::now();
    let mut b = Bridge::new(t0, Duration::ZERO, browser(&[OPUS]), sip(PCMU), 4);
    // the browser sends Opus (48 kHz clock) carrying 1 kHz
    let mut enc = AudioEncoder::new(Codec::Opus, 48_000).unwrap();
    for i in 0..50u16 {
        let frame = tone(48_000, 1000.0, 960, usize::from(i) * 960);
        b.from_browser(t0, 111, i, u32::from(i) * 960, 5, &enc.encode(&frame));
    }
    let out = sip_rtp(&outputs(&mut b));
    assert!(out.len() >= 48, "{} PCMU packets", out.len());
    let mut dec = AudioDecoder::new(Codec::Pcmu, 8000).unwrap();
    let mut pcm = Vec::new();
    for (i, (pt, _, ts, _, _, payload)) in out.iter().enumerate() {
        assert_eq!(*pt, 0);
        assert_eq!(payload.len(), 160);
        assert_eq!(*ts, out[0].2.wrapping_add(i as u32 * 160));
        dec.decode(payload, &mut pcm);
    }
    let snr = snr_db(&pcm[2000..], 8000, 1000.0);
    assert!(snr > 30.0, "browser→SIP {snr:.1} dB");
    assert!(!b.is_relaying().0);

    // the far end's PCMU (440 Hz) reaches the browser as Opus
    let mut pcmu = AudioEncoder::new(Codec::Pcmu, 8000).unwrap();
    for i in 0..50u16 {
        let frame = tone(8000, 440.0, 160, usize::from(i) * 160);
        b.from_sip(t0, &far_packet(0, i, u32::from(i) * 160, 9, &pcmu.encode(&frame)))
            .unwrap();
    }
    let to_browser = browser_rtp(&outputs(&mut b));
    assert_eq!(to_browser.len(), 50);
    let mut opus = AudioDecoder::new(Codec::Opus, 48_000).unwrap();
    let mut pcm = Vec::new();
    for (i, p) in to_browser.iter().enumerate() {
        assert_eq!(p.payload_type, 111);
        assert_eq!(
            p.timestamp,
            to_browser[0].timestamp.wrapping_add(i as u32 * 960),
            "48 kHz clock"
        );
        opus.decode(&p.payload, &mut pcm);
    }
    let snr = snr_db(&pcm[12_000..], 48_000, 440.0);
    assert!(snr > 28.0, "SIP→browser {snr:.1} dB");
}

/// 100 packets of a 1 kHz tone as a browser's libopus sends them (48 kHz, 32 kbit/s),
/// written by crates/media/opus-compare (`--write-fixture`): u16 length, packet.
const BROWSER_OPUS: &[u8] = include_bytes!("../../tests/data/browser-opus-1khz.bin");

#[test]
fn browser_opus_reaches_pcmu_clean() {
    // opus-rs decoding libopus's fullband packets straight to 8 kHz left the tone at 17 dB
    let t0 = Instant::now();
    let mut b = Bridge::new(t0, Duration::ZERO, browser(&[OPUS]), sip(PCMU), 4);
    let mut rest = BROWSER_OPUS;
    let mut i = 0u16;
    while let [hi, lo, tail @ ..] = rest {
        let (packet, tail) = tail.split_at(usize::from(u16::from_be_bytes([*hi, *lo])));
        b.from_browser(t0, 111, i, u32::from(i) * 960, 5, packet);
        rest = tail;
        i += 1;
    }
    assert_eq!(i, 100);
    let mut dec = AudioDecoder::new(Codec::Pcmu, 8000).unwrap();
    let mut pcm = Vec::new();
    for (_, _, _, _, _, payload) in sip_rtp(&outputs(&mut b)) {
        dec.decode(&payload, &mut pcm);
    }
    let snr = snr_db(&pcm[2000..], 8000, 1000.0);
    assert!(snr > 30.0, "browser→SIP {snr:.1} dB");
}

#[test]
fn transcodes_g722_against_pcma() {
    let t0 = Instant::now();
    let mut b = Bridge::new(t0, Duration::ZERO, browser(&[G722]), sip(PCMA), 5);
    let mut enc = AudioEncoder::new(Codec::G722, 16_000).unwrap();
    for i in 0..50u16 {
        let frame = tone(16_000, 1000.0, 320, usize::from(i) * 320);
        b.from_browser(t0, 9, i, u32::from(i) * 160, 5, &enc.encode(&frame));
    }
    let out = sip_rtp(&outputs(&mut b));
    let mut dec = AudioDecoder::new(Codec::Pcma, 8000).unwrap();
    let mut pcm = Vec::new();
    for (_, _, _, _, _, payload) in &out {
        assert_eq!(payload.len(), 160);
        dec.decode(payload, &mut pcm);
    }
    assert!(out.len() >= 48);
    let snr = snr_db(&pcm[2000..], 8000, 1000.0);
    assert!(snr > 20.0, "{snr:.1} dB");
}

#[test]
fn relays_to_the_browser_in_the_far_ends_codec_when_it_can() {
    let t0 = Instant::now();
    let b = Bridge::new(t0, Duration::ZERO, browser(&[OPUS, PCMA, PCMU]), sip(PCMA), 6);
    assert_eq!(b.browser_codec(), PCMA);
    let b = Bridge::new(t0, Duration::ZERO, browser(&[OPUS, PCMA]), sip(G722), 6);
    assert_eq!(b.browser_codec(), OPUS);
}

#[test]
fn lost_opus_packets_are_concealed_on_the_way_to_pcmu() {
    let t0 = Instant::now();
    let mut b = Bridge::new(t0, Duration::ZERO, browser(&[OPUS]), sip(PCMU), 7);
    let mut enc = AudioEncoder::new(Codec::Opus, 48_000).unwrap();
    for i in 0..20u16 {
        let payload = enc.encode(&tone(48_000, 1000.0, 960, usize::from(i) * 960));
        if i == 10 || i == 11 {
            continue; // lost
        }
        b.from_browser(t0, 111, i, u32::from(i) * 960, 5, &payload);
    }
    let out = sip_rtp(&outputs(&mut b));
    let span = out.last().unwrap().2.wrapping_sub(out[0].2);
    assert_eq!(out.len() as u32, span / 160 + 1, "no hole in the outgoing stream");
    assert!(out.len() >= 19);
}

#[test]
fn long_silence_is_a_jump_in_time_not_a_burst_of_concealment() {
    let t0 = Instant::now();
    let mut b = Bridge::new(t0, Duration::ZERO, browser(&[OPUS]), sip(PCMU), 8);
    let mut enc = AudioEncoder::new(Codec::Opus, 48_000).unwrap();
    b.from_browser(t0, 111, 1, 0, 5, &enc.encode(&[0; 960]));
    b.from_browser(t0, 111, 2, 960, 5, &enc.encode(&[0; 960]));
    let before = sip_rtp(&outputs(&mut b));
    // 3 s of DTX, then speech again
    b.from_browser(t0, 111, 3, 960 * 151, 5, &enc.encode(&[0; 960]));
    let after = sip_rtp(&outputs(&mut b));
    assert_eq!(after.len(), 1, "no 3 s of made-up audio");
    let jump = after[0].2.wrapping_sub(before.last().unwrap().2);
    assert!(
        (23_900..=24_200).contains(&jump),
        "timestamp follows the 3 s: {jump}"
    );
    assert!(after[0].3, "marked as a new talk spurt");
}

#[test]
fn dtmf_from_the_browser_is_reported_and_sent_as_events() {
    let t0 = Instant::now();
    let mut b = Bridge::new(t0, Duration::ZERO, browser(&[PCMU]), sip(PCMU), 9);
    let ev = |end| {
        TelephoneEvent {
            event: 5,
            end,
            volume: 10,
            duration: 400,
        }
        .to_bytes()
    };
    b.from_browser(t0, 126, 1, 1000, 5, &ev(false));
    b.from_browser(t0, 126, 2, 1000, 5, &ev(true));
    b.from_browser(t0, 126, 3, 1000, 5, &ev(true));
    let mut all = outputs(&mut b);
    let mut now = t0;
    for _ in 0..20 {
        now += Duration::from_millis(20);
        b.handle_timeout(now);
        all.extend(outputs(&mut b));
    }
    let presses: Vec<_> = all.iter().filter(|o| matches!(o, Output::Dtmf { .. })).collect();
    assert_eq!(
        presses,
        vec![&Output::Dtmf {
            from: Side::Browser,
            digit: '5'
        }]
    );
    let events: Vec<_> = sip_rtp(&all).into_iter().filter(|p| p.0 == 101).collect();
    assert_eq!(events.len(), 7, "5 tone packets + 2 repeated ends");
    assert!(
        events.iter().all(|e| e.2 == events[0].2),
        "one timestamp per event"
    );
    assert!(events[0].3, "marker on the first");
    assert_eq!(TelephoneEvent::parse(&events[6].5).unwrap().event, 5);
}

#[test]
fn dtmf_from_the_far_end_is_reported_once_and_not_played() {
    let t0 = Instant::now();
    let mut b = Bridge::new(t0, Duration::ZERO, browser(&[PCMU]), sip(PCMU), 10);
    for (seq, end) in [(1u16, false), (2, false), (3, true), (4, true), (5, true)] {
        let ev = TelephoneEvent {
            event: 11,
            end,
            volume: 10,
            duration: 160 * seq,
        }
        .to_bytes();
        b.from_sip(t0, &far_packet(101, seq, 8000, 3, &ev)).unwrap();
    }
    let out = outputs(&mut b);
    assert_eq!(
        out,
        vec![Output::Dtmf {
            from: Side::Sip,
            digit: '#'
        }]
    );
}

#[test]
fn api_dtmf_needs_telephone_event() {
    let t0 = Instant::now();
    let mut no_te = sip(PCMU);
    no_te.dtmf_payload_type = None;
    let mut b = Bridge::new(t0, Duration::ZERO, browser(&[PCMU]), no_te, 11);
    assert!(!b.send_dtmf(t0, "1"), "the caller must use SIP INFO");
    let mut b = Bridge::new(t0, Duration::ZERO, browser(&[PCMU]), sip(PCMU), 11);
    assert!(b.send_dtmf(t0, "12"));
    let mut now = t0;
    let mut all = Vec::new();
    for _ in 0..40 {
        b.handle_timeout(now);
        all.extend(outputs(&mut b));
        now += Duration::from_millis(10);
    }
    let mut d = crate::dtmf::DtmfDetector::default();
    let digits: String = sip_rtp(&all)
        .iter()
        .filter(|p| p.0 == 101)
        .filter_map(|p| d.on_packet(p.2, &p.5))
        .collect();
    assert_eq!(digits, "12");
}

#[test]
fn hold_stops_what_should_stop() {
    let t0 = Instant::now();
    let mut held = sip(PCMU);
    held.send = false;
    held.receive = false;
    let mut b = Bridge::new(t0, Duration::ZERO, browser(&[PCMU]), held, 12);
    b.from_browser(t0, 0, 1, 0, 5, &[0; 160]);
    b.from_sip(t0, &far_packet(0, 1, 0, 9, &[0; 160])).unwrap();
    assert!(outputs(&mut b).is_empty());
    b.set_sip(sip(PCMU));
    b.from_browser(t0, 0, 2, 160, 5, &[0; 160]);
    assert_eq!(sip_rtp(&outputs(&mut b)).len(), 1);
}

#[test]
fn rtcp_reports_every_five_seconds_and_reads_rtt() {
    let t0 = Instant::now();
    let mut b = Bridge::new(
        t0,
        Duration::from_secs(1_700_000_000),
        browser(&[PCMU]),
        sip(PCMU),
        13,
    );
    b.from_browser(t0, 0, 1, 0, 5, &[0; 160]);
    b.from_sip(t0, &far_packet(0, 1, 0, 9, &[0; 160])).unwrap();
    outputs(&mut b);
    assert_eq!(b.poll_timeout(), t0 + Duration::from_secs(5));
    b.handle_timeout(t0 + Duration::from_secs(5));
    let sr = match outputs(&mut b).pop() {
        Some(Output::SipRtcp(d)) => d,
        other => panic!("{other:?}"),
    };
    let parsed = rtcp::parse(&sr).unwrap();
    let (our_ssrc, ntp) = parsed.sender_report.unwrap();
    assert_eq!(parsed.blocks[0].ssrc, 9);
    // the far end answers with a report about us, 40 ms later, having held it 10 ms
    let block = rtcp::ReportBlock {
        ssrc: our_ssrc,
        fraction_lost: 0,
        cumulative_lost: 0,
        highest_seq: 1,
        jitter: 0,
        last_sr: (ntp >> 16) as u32,
        delay_since_last_sr: 655, // 10 ms
    };
    let rr = rtcp::build_report(9, None, Some(block));
    b.from_sip_rtcp(t0 + Duration::from_millis(5040), &rr).unwrap();
    let rtt = b.sip_counters().rtt_ms.unwrap();
    assert!((rtt - 30.0).abs() < 1.0, "{rtt}");
}

#[test]
fn garbage_from_the_far_end_is_an_error_not_a_panic() {
    let t0 = Instant::now();
    let mut b = Bridge::new(t0, Duration::ZERO, browser(&[OPUS]), sip(PCMU), 14);
    let mut rng = fastrand::Rng::with_seed(1);
    for _ in 0..5000 {
        let len = rng.usize(0..300);
        let mut junk: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        if len > 12 && rng.bool() {
            junk[0] = 0x80; // make some of it look like RTP
            junk[1] = *rng.choice(&[0u8, 8, 9, 101, 111, 13]).unwrap();
        }
        let _ = b.from_sip(t0, &junk);
        let _ = b.from_sip_rtcp(t0, &junk);
        b.from_browser(
            t0,
            *rng.choice(&[0u8, 111, 126, 9]).unwrap(),
            rng.u16(..),
            rng.u32(..),
            rng.u32(..),
            &junk,
        );
    }
    outputs(&mut b);
}

#[test]
fn ten_minutes_of_transcoding_keep_time_exactly() {
    // G.722 from the browser (16 kHz, resampled) to PCMU: after 10 minutes of 20 ms
    // packets the far end's stream covers exactly 10 minutes, with no packet missing
    let t0 = Instant::now();
    let mut b = Bridge::new(t0, Duration::ZERO, browser(&[G722]), sip(PCMU), 15);
    let mut enc = AudioEncoder::new(Codec::G722, 16_000).unwrap();
    let frame = enc.encode(&tone(16_000, 1000.0, 320, 0));
    let packets = 10 * 60 * 50u32;
    let mut first = None;
    let mut last = 0u32;
    let mut count = 0u32;
    for i in 0..packets {
        let now = t0 + Duration::from_millis(u64::from(i) * 20);
        b.from_browser(now, 9, i as u16, i.wrapping_mul(160), 5, &frame);
        while let Some(o) = b.poll_output() {
            if let Output::Sip(d) = o {
                let p = RtpPacket::parse(&d).unwrap();
                if p.payload_type == 0 {
                    first.get_or_insert(p.timestamp);
                    last = p.timestamp;
                    count += 1;
                }
            }
        }
    }
    let span = last.wrapping_sub(first.unwrap()) + 160;
    assert!(count >= packets - 2, "{count} of {packets} packets");
    assert!(
        (i64::from(span) - i64::from(packets) * 160).abs() <= 320,
        "span {span} ticks for {packets} packets"
    );
}

#[test]
fn a_sender_changing_ssrc_on_every_packet_does_not_rebuild_the_codecs() {
    let t0 = Instant::now();
    let mut b = Bridge::new(t0, Duration::ZERO, browser(&[OPUS]), sip(PCMU), 7);
    let mut enc = AudioEncoder::new(Codec::Opus, 48_000).unwrap();
    for i in 0..200u16 {
        let payload = enc.encode(&tone(48_000, 1000.0, 960, usize::from(i) * 960));
        // a new SSRC each time, as a hostile (or broken) sender might
        b.from_browser(t0, 111, i, u32::from(i) * 960, 1000 + u32::from(i), &payload);
    }
    assert_eq!(b.to_sip.coder_builds, 1, "built once, for the one codec");
    assert!(
        sip_rtp(&outputs(&mut b)).len() >= 190,
        "and the audio still flows"
    );
    // a new codec does get new coders
    let g722 = AudioEncoder::new(Codec::G722, 16_000).unwrap().encode(&[0; 320]);
    b.set_browser(browser(&[OPUS, G722]));
    b.from_browser(t0, 9, 500, 0, 1, &g722);
    assert_eq!(b.to_sip.coder_builds, 2);
}
