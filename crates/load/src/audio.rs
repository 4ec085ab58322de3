//! The audio the sessions send, and the judge of what comes back.
//!
//! Each call streams a sine tone in 20 ms frames. PCMU frames get a little noise from a
//! generator seeded per call, so that every payload is unique: a relayed echo can then
//! be recognised byte for byte, and audio crossed between calls would not pass. Opus
//! frames are encoded once per run and shared, since encoding is the expensive part
//! and the gateway's work does not depend on it. [`ToneMeter`] (a Goertzel filter) says
//! how much of a decoded signal is the tone, for what is transcoded on the way back.

use std::f64::consts::PI;
use std::sync::Arc;

use sipline_media::audio::AudioEncoder;
use sipline_media::sdp::Codec;

use crate::CodecChoice;

/// Samples per second of the PCMU tone table (and of the decoders that judge echoes).
pub const JUDGE_RATE: u32 = 8000;
/// Opus frames encoded once per run and cycled through (5 s of tone).
const OPUS_BANK_FRAMES: usize = 250;
/// Amplitude of the tone (-12 dBFS) and of the noise added to PCMU frames.
const AMPLITUDE: f64 = 8192.0;
const NOISE: i16 = 192;

/// What every session of a run sends, prepared once.
pub struct AudioBank {
    codec: CodecChoice,
    /// One second of the tone at 8 kHz (a whole number of cycles: the tone is in Hz).
    tone_8k: Vec<i16>,
    /// Pre-encoded Opus frames (empty for PCMU).
    opus: Vec<Arc<[u8]>>,
}

impl AudioBank {
    pub fn new(codec: CodecChoice, tone_hz: u32) -> AudioBank {
        let tone_8k = sine(tone_hz, JUDGE_RATE, JUDGE_RATE as usize);
        let opus = match codec {
            CodecChoice::Pcmu => Vec::new(),
            CodecChoice::Opus => {
                let pcm = sine(tone_hz, 48_000, 48_000);
                let mut enc = AudioEncoder::new(Codec::Opus, 48_000).expect("an Opus encoder");
                // one second (the tone's period in frames) encoded first and dropped, so
                // that the encoder's state where the bank wraps round is the state it
                // had at its start: the loop has no seam a decoder would stumble on
                (0..OPUS_BANK_FRAMES + 50)
                    .map(|i| {
                        let start = i * 960 % pcm.len();
                        Arc::from(enc.encode(&pcm[start..start + 960]))
                    })
                    .skip(50)
                    .collect()
            }
        };
        AudioBank { codec, tone_8k, opus }
    }

    pub fn codec(&self) -> CodecChoice {
        self.codec
    }
}

fn sine(hz: u32, rate: u32, len: usize) -> Vec<i16> {
    (0..len)
        .map(|n| (AMPLITUDE * (2.0 * PI * f64::from(hz) * n as f64 / f64::from(rate)).sin()) as i16)
        .collect()
}

/// One call's frames: the next payload every 20 ms.
pub struct FrameSource {
    bank: Arc<AudioBank>,
    frame: usize,
    rng: fastrand::Rng,
    encoder: Option<AudioEncoder>,
    pcm: Vec<i16>,
}

impl FrameSource {
    /// Frames starting at a random point of the tone, with noise seeded by `seed`.
    pub fn new(bank: Arc<AudioBank>, seed: u64) -> FrameSource {
        let mut rng = fastrand::Rng::with_seed(seed);
        let encoder = match bank.codec {
            CodecChoice::Pcmu => AudioEncoder::new(Codec::Pcmu, 8000),
            CodecChoice::Opus => None,
        };
        FrameSource {
            frame: rng.usize(..OPUS_BANK_FRAMES),
            bank,
            rng,
            encoder,
            pcm: Vec::with_capacity(160),
        }
    }

    /// RTP timestamp ticks per frame.
    pub fn ticks_per_frame(&self) -> u32 {
        self.bank.codec.clock_rate() / 50
    }

    pub fn next_payload(&mut self) -> Arc<[u8]> {
        self.frame += 1;
        match &mut self.encoder {
            Some(enc) => {
                let table = &self.bank.tone_8k;
                let start = self.frame % 50 * 160;
                self.pcm.clear();
                for s in &table[start..start + 160] {
                    let noise = self.rng.i16(-NOISE..=NOISE);
                    self.pcm.push(s.saturating_add(noise));
                }
                Arc::from(enc.encode(&self.pcm))
            }
            None => Arc::clone(&self.bank.opus[self.frame % self.bank.opus.len()]),
        }
    }
}

/// How much of a signal is one tone: the Goertzel filter's power at the tone against
/// everything else, per 100 ms block. The verdict is the median block, so that a
/// glitch (a concealed packet, a codec settling) does not outweigh seconds of tone.
pub struct ToneMeter {
    coeff: f64,
    block: usize,
    s1: f64,
    s2: f64,
    filled: usize,
    block_total: f64,
    /// Each block's tone-to-rest ratio, dB (bounded: the first blocks are plenty).
    blocks: Vec<f32>,
}

const MAX_BLOCKS: usize = 10_000;

impl ToneMeter {
    pub fn new(hz: u32, rate: u32) -> ToneMeter {
        let w = 2.0 * PI * f64::from(hz) / f64::from(rate);
        ToneMeter {
            coeff: 2.0 * w.cos(),
            block: (rate / 10) as usize,
            s1: 0.0,
            s2: 0.0,
            filled: 0,
            block_total: 0.0,
            blocks: Vec::new(),
        }
    }

    /// Drops a partly filled block (the signal is about to jump).
    pub fn restart_block(&mut self) {
        self.s1 = 0.0;
        self.s2 = 0.0;
        self.filled = 0;
        self.block_total = 0.0;
    }

    pub fn feed(&mut self, samples: &[i16]) {
        for x in samples {
            let x = f64::from(*x);
            self.block_total += x * x;
            let s0 = x + self.coeff * self.s1 - self.s2;
            self.s2 = self.s1;
            self.s1 = s0;
            self.filled += 1;
            if self.filled == self.block {
                let power = (self.s1 * self.s1 + self.s2 * self.s2 - self.coeff * self.s1 * self.s2) * 2.0
                    / self.block as f64;
                let tone = power.clamp(0.0, self.block_total);
                let rest = self.block_total - tone;
                if self.blocks.len() < MAX_BLOCKS {
                    self.blocks
                        .push((10.0 * (tone.max(1e-9) / rest.max(1e-3)).log10()) as f32);
                }
                self.restart_block();
            }
        }
    }

    /// Whole blocks measured so far.
    pub fn measured(&self) -> usize {
        self.blocks.len()
    }

    /// The median block's tone against the rest, in dB (None before a whole block).
    pub fn snr_db(&self) -> Option<f64> {
        let mut b = self.blocks.clone();
        b.sort_by(f32::total_cmp);
        b.get(b.len() / 2).map(|m| f64::from(*m))
    }
}

/// FNV-1a: a payload's identity for the echo check (cheap, and good enough to tell
/// 160 noisy bytes apart).
pub fn payload_hash(payload: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in payload {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use sipline_media::audio::AudioDecoder;

    use super::*;

    #[test]
    fn pcmu_frames_are_the_tone_and_all_different() {
        let bank = Arc::new(AudioBank::new(CodecChoice::Pcmu, 1000));
        let mut a = FrameSource::new(Arc::clone(&bank), 1);
        let mut b = FrameSource::new(bank, 2);
        let mut seen = HashSet::new();
        let mut dec = AudioDecoder::new(Codec::Pcmu, 8000).unwrap();
        let mut meter = ToneMeter::new(1000, 8000);
        let mut pcm = Vec::new();
        for _ in 0..500 {
            let p = a.next_payload();
            assert_eq!(p.len(), 160);
            assert!(seen.insert(payload_hash(&p)), "a repeated payload");
            assert!(
                seen.insert(payload_hash(&b.next_payload())),
                "the same payload in two calls"
            );
            pcm.clear();
            dec.decode(&p, &mut pcm);
            meter.feed(&pcm);
        }
        let snr = meter.snr_db().unwrap();
        assert!(snr > 20.0, "tone SNR {snr} dB");
        assert_eq!(a.ticks_per_frame(), 160);
    }

    #[test]
    fn opus_frames_decode_to_the_tone_and_others_do_not_pass() {
        let bank = Arc::new(AudioBank::new(CodecChoice::Opus, 1000));
        let mut src = FrameSource::new(bank, 7);
        assert_eq!(src.ticks_per_frame(), 960);
        let mut dec = AudioDecoder::new(Codec::Opus, 8000).unwrap();
        let mut meter = ToneMeter::new(1000, 8000);
        let mut wrong = ToneMeter::new(1400, 8000);
        let mut pcm = Vec::new();
        for i in 0..100 {
            pcm.clear();
            dec.decode(&src.next_payload(), &mut pcm);
            assert_eq!(pcm.len(), 160);
            if i >= 10 {
                meter.feed(&pcm);
                wrong.feed(&pcm);
            }
        }
        let (snr, other) = (meter.snr_db().unwrap(), wrong.snr_db().unwrap());
        assert!(snr > 15.0, "tone SNR {snr} dB");
        assert!(other < 0.0, "another frequency measured {other} dB");
    }

    #[test]
    fn the_opus_bank_loops_without_a_seam() {
        let bank = AudioBank::new(CodecChoice::Opus, 1000);
        let mut dec = AudioDecoder::new(Codec::Opus, 8000).unwrap();
        let mut meter = ToneMeter::new(1000, 8000);
        let mut pcm = Vec::new();
        let n = bank.opus.len();
        for (i, k) in (n - 60..n).chain(0..40).enumerate() {
            pcm.clear();
            dec.decode(&bank.opus[k], &mut pcm);
            if i >= 10 {
                meter.feed(&pcm);
            }
        }
        let snr = meter.snr_db().unwrap();
        assert!(snr > 20.0, "tone SNR across the wrap {snr} dB");
    }

    #[test]
    fn silence_and_noise_are_not_a_tone() {
        let mut m = ToneMeter::new(1000, 8000);
        assert_eq!(m.snr_db(), None);
        let mut rng = fastrand::Rng::with_seed(3);
        let noise: Vec<i16> = (0..8000).map(|_| rng.i16(-8000..8000)).collect();
        m.feed(&noise);
        assert!(m.snr_db().unwrap() < -10.0);
    }
}
