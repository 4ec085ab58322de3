//! What one call receives, judged as it arrives: loss from the sequence numbers,
//! interarrival jitter as RFC 3550 §6.4.1 defines it, and whether it is our tone coming
//! back. Kept cheap per packet (a few operations and a payload hash; decoding for a
//! fifth of the packets only), so the tool is not what limits a measurement.

use std::collections::{HashSet, VecDeque};
use std::time::Instant;

use sipline_media::audio::AudioDecoder;

use crate::CodecChoice;
use crate::audio::{JUDGE_RATE, ToneMeter, payload_hash};

/// Sequence numbers and arrival times of one incoming stream.
#[derive(Debug, Clone)]
pub struct ReceiveStats {
    clock: f64,
    pub received: u64,
    first_seq: Option<u64>,
    max_seq: u64,
    last: Option<(Instant, u32)>,
    /// RFC 3550's J, in timestamp units.
    jitter: f64,
}

impl ReceiveStats {
    pub fn new(clock_rate: u32) -> ReceiveStats {
        ReceiveStats {
            clock: f64::from(clock_rate),
            received: 0,
            first_seq: None,
            max_seq: 0,
            last: None,
            jitter: 0.0,
        }
    }

    /// A packet with extended sequence number `seq` and RTP timestamp `ts` arrived at `at`.
    pub fn on_packet(&mut self, seq: u64, ts: u32, at: Instant) {
        self.received += 1;
        match self.first_seq {
            None => {
                self.first_seq = Some(seq);
                self.max_seq = seq;
            }
            Some(first) => {
                self.first_seq = Some(first.min(seq));
                self.max_seq = self.max_seq.max(seq);
            }
        }
        if let Some((last_at, last_ts)) = self.last {
            // D(i,j) = (Rj - Ri) - (Sj - Si), both in timestamp units
            let arrival = if at >= last_at {
                (at - last_at).as_secs_f64()
            } else {
                -(last_at - at).as_secs_f64()
            } * self.clock;
            let sent = f64::from(ts.wrapping_sub(last_ts) as i32);
            let d = arrival - sent;
            self.jitter += (d.abs() - self.jitter) / 16.0;
        }
        self.last = Some((at, ts));
    }

    /// Packets the sequence numbers say were sent.
    pub fn expected(&self) -> u64 {
        match self.first_seq {
            Some(first) => self.max_seq - first + 1,
            None => 0,
        }
    }

    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.received)
    }

    pub fn jitter_ms(&self) -> f64 {
        self.jitter / self.clock * 1000.0
    }
}

/// Packets decoded and measured in each window of this many received packets (5 s)…
const WINDOW: u64 = 250;
/// …after this many decoded to let the decoder settle (they are not measured)…
const SETTLE: u64 = 10;
/// …up to this index within the window: 1 s measured out of every 5 s.
const MEASURED_UNTIL: u64 = 60;
/// Sent payloads remembered for the byte-for-byte check (10 s at 50 packets a second).
const REMEMBERED: usize = 500;

/// Whether what comes back is what we sent: byte for byte for a relayed codec (PCMU),
/// and the tone's frequency in the decoded audio either way.
pub struct EchoCheck {
    codec: CodecChoice,
    sent: HashSet<u64>,
    order: VecDeque<u64>,
    /// Received payloads that are one of ours.
    pub matched: u64,
    decoder: Option<AudioDecoder>,
    meter: ToneMeter,
    index: u64,
    pcm: Vec<i16>,
}

/// The outcome of an [`EchoCheck`].
#[derive(Debug, Clone, PartialEq)]
pub struct EchoVerdict {
    pub ok: bool,
    /// Share of the sent payloads that came back unchanged (PCMU only).
    pub matched_share: Option<f64>,
    /// The tone against the rest in what came back, dB.
    pub tone_snr_db: Option<f64>,
    pub reason: Option<String>,
}

/// A relayed call must return this share of its payloads byte for byte…
pub const MIN_MATCHED_SHARE: f64 = 0.8;
/// …a transcoded one this share of its packets, with the tone this far above the rest.
pub const MIN_RECEIVED_SHARE: f64 = 0.5;
pub const MIN_TONE_SNR_DB: f64 = 10.0;

impl EchoCheck {
    pub fn new(codec: CodecChoice, tone_hz: u32) -> EchoCheck {
        EchoCheck {
            codec,
            sent: HashSet::with_capacity(REMEMBERED * 2),
            order: VecDeque::with_capacity(REMEMBERED + 1),
            matched: 0,
            decoder: AudioDecoder::new(codec.codec(), JUDGE_RATE),
            meter: ToneMeter::new(tone_hz, JUDGE_RATE),
            index: 0,
            pcm: Vec::with_capacity(960),
        }
    }

    pub fn on_sent(&mut self, payload: &[u8]) {
        if self.codec != CodecChoice::Pcmu {
            return;
        }
        let h = payload_hash(payload);
        if self.sent.insert(h) {
            self.order.push_back(h);
            if self.order.len() > REMEMBERED
                && let Some(old) = self.order.pop_front()
            {
                self.sent.remove(&old);
            }
        }
    }

    /// A payload of our codec came back.
    pub fn on_received(&mut self, payload: &[u8]) {
        if self.codec == CodecChoice::Pcmu && self.sent.contains(&payload_hash(payload)) {
            self.matched += 1;
        }
        let i = self.index % WINDOW;
        self.index += 1;
        if i >= MEASURED_UNTIL {
            return;
        }
        let Some(dec) = self.decoder.as_mut() else { return };
        self.pcm.clear();
        dec.decode(payload, &mut self.pcm);
        if i == SETTLE {
            self.meter.restart_block();
        }
        if i >= SETTLE {
            self.meter.feed(&self.pcm);
        }
    }

    pub fn verdict(&self, sent: u64, received: u64) -> EchoVerdict {
        let tone_snr_db = self.meter.snr_db();
        if sent == 0 {
            return EchoVerdict {
                ok: false,
                matched_share: None,
                tone_snr_db,
                reason: Some("nothing was sent".into()),
            };
        }
        match self.codec {
            CodecChoice::Pcmu => {
                let share = self.matched as f64 / sent as f64;
                let ok = share >= MIN_MATCHED_SHARE;
                EchoVerdict {
                    ok,
                    matched_share: Some(share),
                    tone_snr_db,
                    reason: (!ok).then(|| {
                        format!(
                            "no echo: {:.0} % of the payloads sent came back unchanged (needs {:.0} %; {received} packets received)",
                            share * 100.0,
                            MIN_MATCHED_SHARE * 100.0
                        )
                    }),
                }
            }
            CodecChoice::Opus => {
                let share = received as f64 / sent as f64;
                let reason = if share < MIN_RECEIVED_SHARE {
                    Some(format!("no echo: {received} packets came back for {sent} sent"))
                } else {
                    match tone_snr_db {
                        None => Some("no echo: too little audio came back to measure".into()),
                        Some(snr) if snr < MIN_TONE_SNR_DB => Some(format!(
                            "the echo is not our tone: {snr:.1} dB at the tone's frequency against the rest (needs {MIN_TONE_SNR_DB} dB)"
                        )),
                        Some(_) => None,
                    }
                };
                EchoVerdict {
                    ok: reason.is_none(),
                    matched_share: None,
                    tone_snr_db,
                    reason,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::audio::{AudioBank, FrameSource};

    #[test]
    fn loss_from_sequence_numbers() {
        let t = Instant::now();
        let mut s = ReceiveStats::new(8000);
        assert_eq!((s.expected(), s.lost()), (0, 0));
        for seq in [100u64, 101, 103, 102, 106, 106] {
            s.on_packet(seq, 0, t);
        }
        // 100..=106 expected; 6 arrived (106 twice, which RFC 3550 counts as received too)
        assert_eq!(s.expected(), 7);
        assert_eq!(s.lost(), 1);
    }

    #[test]
    fn jitter_is_zero_for_perfect_pacing_and_grows_with_variation() {
        let t0 = Instant::now();
        let mut s = ReceiveStats::new(8000);
        for i in 0..100u32 {
            s.on_packet(
                u64::from(i),
                i * 160,
                t0 + Duration::from_millis(u64::from(i) * 20),
            );
        }
        assert!(s.jitter_ms() < 0.01, "{}", s.jitter_ms());
        // every other packet 4 ms late: |D| = 4 ms each time, J converges to 4 ms
        let mut s = ReceiveStats::new(8000);
        for i in 0..400u32 {
            let late = if i % 2 == 1 { 4 } else { 0 };
            let at = t0 + Duration::from_millis(u64::from(i) * 20 + late);
            s.on_packet(
                u64::from(i),
                i.wrapping_mul(160).wrapping_add(u32::MAX - 1000),
                at,
            );
        }
        assert!((s.jitter_ms() - 4.0).abs() < 0.05, "{}", s.jitter_ms());
    }

    #[test]
    fn a_pcmu_echo_passes_byte_for_byte_and_strangers_do_not() {
        let bank = Arc::new(AudioBank::new(CodecChoice::Pcmu, 1000));
        let mut ours = FrameSource::new(Arc::clone(&bank), 1);
        let mut other = FrameSource::new(bank, 2);
        let mut echo = EchoCheck::new(CodecChoice::Pcmu, 1000);
        let mut crossed = EchoCheck::new(CodecChoice::Pcmu, 1000);
        for _ in 0..300 {
            let p = ours.next_payload();
            echo.on_sent(&p);
            crossed.on_sent(&p);
            echo.on_received(&p);
            crossed.on_received(&other.next_payload());
        }
        let v = echo.verdict(300, 300);
        assert!(v.ok, "{v:?}");
        assert_eq!(v.matched_share, Some(1.0));
        assert!(v.tone_snr_db.unwrap() > 20.0);
        // another call's audio is the same tone, but not our bytes
        let v = crossed.verdict(300, 300);
        assert!(!v.ok && v.reason.unwrap().contains("no echo"));
    }

    #[test]
    fn an_opus_echo_is_judged_by_its_tone() {
        let bank = Arc::new(AudioBank::new(CodecChoice::Opus, 1000));
        let mut src = FrameSource::new(bank, 1);
        let mut echo = EchoCheck::new(CodecChoice::Opus, 1000);
        for _ in 0..100 {
            echo.on_received(&src.next_payload());
        }
        assert!(echo.verdict(100, 100).ok);
        assert!(!echo.verdict(100, 20).ok, "too few packets back");
        let wrong = Arc::new(AudioBank::new(CodecChoice::Opus, 2000));
        let mut src = FrameSource::new(wrong, 1);
        let mut echo = EchoCheck::new(CodecChoice::Opus, 1000);
        for _ in 0..100 {
            echo.on_received(&src.next_payload());
        }
        let v = echo.verdict(100, 100);
        assert!(
            !v.ok && v.reason.unwrap().contains("not our tone"),
            "{:?}",
            v.tone_snr_db
        );
    }
}
