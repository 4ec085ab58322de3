//! Audio codecs behind one interface, for transcoding between the legs: G.711 µ-law
//! and A-law and G.722 (the `audio-codec` crate), Opus (`opus-rs`, a pure-Rust port of
//! libopus, so the build needs no cmake and no system library), and a 2:1 resampler
//! for G.722 (16 kHz) against G.711 (8 kHz). Opus encodes natively at 8 or 16 kHz;
//! it is decoded at 16 kHz at least and taken down to 8 kHz by that resampler, because
//! opus-rs's own downsampling of fullband streams is poor (see `AudioDecoder`).
//!
//! Decoders conceal lost packets (Opus with its PLC, the others by fading the last
//! frame out). The Opus port is young: a packet that makes it panic is caught, the
//! decoder rebuilt, and the frame replaced by silence, so hostile input cannot take
//! the gateway down.

use std::panic::{AssertUnwindSafe, catch_unwind};

use audio_codec::{Decoder as _, Encoder as _};

use crate::sdp::Codec;

/// PCM sample rate a codec decodes to by default (Opus: what the caller asks).
pub fn native_rate(codec: Codec) -> u32 {
    match codec {
        Codec::G722 => 16_000,
        Codec::Opus => 48_000,
        _ => 8_000,
    }
}

/// RTP clock ticks per PCM sample at `pcm_rate` (G.722's RTP clock is 8 kHz, RFC 3551).
pub fn rtp_clock(codec: Codec) -> u32 {
    codec.clock_rate()
}

/// Samples per channel in an Opus packet, from its TOC byte (RFC 6716 §3.1), at 48 kHz.
pub fn opus_packet_samples_48k(packet: &[u8]) -> Option<u32> {
    let toc = *packet.first()?;
    let config = toc >> 3;
    let frame = match config {
        0..=11 => [480, 960, 1920, 2880][usize::from(config % 4)],
        12..=15 => [480, 960][usize::from(config % 2)],
        _ => [120, 240, 480, 960][usize::from(config % 4)],
    };
    let frames = match toc & 3 {
        0 => 1,
        1 | 2 => 2,
        _ => u32::from(*packet.get(1)? & 0x3f),
    };
    Some(frame * frames)
}

/// Decodes one codec to mono PCM.
pub struct AudioDecoder {
    codec: Codec,
    rate: u32,
    inner: DecoderImpl,
    last_frame: Vec<i16>,
    /// Consecutive concealed frames (the fade-out factor for non-Opus codecs).
    concealed: u32,
    /// Opus asked for below 16 kHz: opus-rs decodes at 16 kHz and this takes it down.
    /// opus-rs resampling a fullband (CELT) stream to 8 kHz itself leaves a tone at
    /// 17 dB SNR, against 39 dB this way (crates/media/opus-compare).
    down: Option<(Resampler, Vec<i16>)>,
}

/// The lowest rate opus-rs is asked to decode at (see `AudioDecoder::down`).
const OPUS_MIN_DECODE_RATE: u32 = 16_000;

enum DecoderImpl {
    Pcmu(audio_codec::pcmu::PcmuDecoder),
    Pcma(audio_codec::pcma::PcmaDecoder),
    G722(Box<audio_codec::g722::G722Decoder>),
    Opus(Box<opus_rs::OpusDecoder>),
}

impl std::fmt::Debug for AudioDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AudioDecoder({:?} at {} Hz)", self.codec, self.rate)
    }
}

impl AudioDecoder {
    /// A decoder producing PCM at `rate` (only Opus can choose; others use their own).
    pub fn new(codec: Codec, rate: u32) -> Option<AudioDecoder> {
        let (inner, rate) = match codec {
            Codec::Pcmu => (DecoderImpl::Pcmu(audio_codec::pcmu::PcmuDecoder::new()), 8000),
            Codec::Pcma => (DecoderImpl::Pcma(audio_codec::pcma::PcmaDecoder::new()), 8000),
            Codec::G722 => (DecoderImpl::G722(Box::default()), 16_000),
            Codec::Opus => (
                DecoderImpl::Opus(Box::new(
                    opus_rs::OpusDecoder::new(rate.max(OPUS_MIN_DECODE_RATE) as i32, 1).ok()?,
                )),
                rate,
            ),
            Codec::TelephoneEvent => return None,
        };
        let down = (codec == Codec::Opus && rate < OPUS_MIN_DECODE_RATE)
            .then(|| (Resampler::new(OPUS_MIN_DECODE_RATE, rate), Vec::new()));
        Some(AudioDecoder {
            codec,
            rate,
            inner,
            last_frame: Vec::new(),
            concealed: 0,
            down,
        })
    }

    /// The rate opus-rs itself runs at.
    fn opus_rate(&self) -> u32 {
        self.rate.max(OPUS_MIN_DECODE_RATE)
    }

    /// Opus PCM at [`AudioDecoder::opus_rate`] into `out` at our rate.
    fn put_opus(down: &mut Option<(Resampler, Vec<i16>)>, pcm: &[f32], out: &mut Vec<i16>) {
        match down {
            None => out.extend(pcm.iter().map(|s| to_i16(*s))),
            Some((resampler, wide)) => {
                wide.clear();
                wide.extend(pcm.iter().map(|s| to_i16(*s)));
                resampler.process(wide, out);
            }
        }
    }

    pub fn rate(&self) -> u32 {
        self.rate
    }

    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Decodes a payload, appending samples to `out`; returns how many.
    pub fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) -> usize {
        let start = out.len();
        match &mut self.inner {
            DecoderImpl::Pcmu(d) => out.extend(d.decode(payload)),
            DecoderImpl::Pcma(d) => out.extend(d.decode(payload)),
            DecoderImpl::G722(d) => out.extend(d.decode(payload)),
            DecoderImpl::Opus(d) => {
                let opus_rate = self.rate.max(OPUS_MIN_DECODE_RATE);
                let max = (opus_rate as usize) * 120 / 1000;
                let mut pcm = vec![0f32; max];
                let result = catch_unwind(AssertUnwindSafe(|| d.decode(payload, max, &mut pcm)));
                match result {
                    Ok(Ok(n)) => Self::put_opus(&mut self.down, &pcm[..n.min(max)], out),
                    Ok(Err(_)) => {}
                    Err(_) => {
                        // the decoder's state is suspect after a panic: start afresh
                        if let Ok(fresh) = opus_rs::OpusDecoder::new(opus_rate as i32, 1) {
                            **d = fresh;
                        }
                        let n = opus_packet_samples_48k(payload).unwrap_or(960) as usize * self.rate as usize
                            / 48_000;
                        out.extend(std::iter::repeat_n(0, n.min(max)));
                    }
                }
            }
        }
        let n = out.len() - start;
        if n > 0 {
            self.last_frame.clear();
            self.last_frame.extend_from_slice(&out[start..]);
            self.concealed = 0;
        }
        n
    }

    /// Makes up `samples` of audio for lost packets.
    pub fn conceal(&mut self, samples: usize, out: &mut Vec<i16>) {
        let opus_samples = samples * self.opus_rate() as usize / self.rate as usize;
        if let DecoderImpl::Opus(d) = &mut self.inner {
            let mut pcm = vec![0f32; opus_samples];
            if let Ok(Ok(n)) = catch_unwind(AssertUnwindSafe(|| d.decode(&[], opus_samples, &mut pcm))) {
                let start = out.len();
                Self::put_opus(&mut self.down, &pcm[..n.min(opus_samples)], out);
                let made = out.len() - start;
                out.extend(std::iter::repeat_n(0, samples.saturating_sub(made)));
                return;
            }
        }
        // repeat the last frame, fading it out over three frames
        self.concealed += 1;
        let gain = match self.concealed {
            1 => 0.7,
            2 => 0.4,
            3 => 0.15,
            _ => 0.0,
        };
        if self.last_frame.is_empty() || gain == 0.0 {
            out.extend(std::iter::repeat_n(0, samples));
            return;
        }
        out.extend(
            self.last_frame
                .iter()
                .cycle()
                .take(samples)
                .map(|s| (f32::from(*s) * gain) as i16),
        );
    }
}

fn to_i16(s: f32) -> i16 {
    (s * 32768.0).clamp(-32768.0, 32767.0) as i16
}

/// Encodes mono PCM frames into one codec.
pub struct AudioEncoder {
    codec: Codec,
    rate: u32,
    inner: EncoderImpl,
}

enum EncoderImpl {
    Pcmu(audio_codec::pcmu::PcmuEncoder),
    Pcma(audio_codec::pcma::PcmaEncoder),
    G722(Box<audio_codec::g722::G722Encoder>),
    Opus(Box<opus_rs::OpusEncoder>),
}

impl std::fmt::Debug for AudioEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AudioEncoder({:?} at {} Hz)", self.codec, self.rate)
    }
}

impl AudioEncoder {
    /// An encoder taking PCM at `rate` (only Opus can choose; others use their own).
    pub fn new(codec: Codec, rate: u32) -> Option<AudioEncoder> {
        let (inner, rate) = match codec {
            Codec::Pcmu => (EncoderImpl::Pcmu(audio_codec::pcmu::PcmuEncoder::new()), 8000),
            Codec::Pcma => (EncoderImpl::Pcma(audio_codec::pcma::PcmaEncoder::new()), 8000),
            Codec::G722 => (EncoderImpl::G722(Box::default()), 16_000),
            Codec::Opus => {
                let mut e = opus_rs::OpusEncoder::new(rate as i32, 1, opus_rs::Application::Voip).ok()?;
                // wideband voice: transparent for telephone audio, light on CPU
                e.bitrate_bps = if rate <= 8000 { 24_000 } else { 32_000 };
                e.complexity = 5;
                (EncoderImpl::Opus(Box::new(e)), rate)
            }
            Codec::TelephoneEvent => return None,
        };
        Some(AudioEncoder { codec, rate, inner })
    }

    pub fn rate(&self) -> u32 {
        self.rate
    }

    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Encodes one frame (10, 20, 40 or 60 ms of samples at [`AudioEncoder::rate`]).
    pub fn encode(&mut self, frame: &[i16]) -> Vec<u8> {
        match &mut self.inner {
            EncoderImpl::Pcmu(e) => e.encode(frame),
            EncoderImpl::Pcma(e) => e.encode(frame),
            EncoderImpl::G722(e) => e.encode(frame),
            EncoderImpl::Opus(e) => {
                let mut out = vec![0u8; 1276];
                match catch_unwind(AssertUnwindSafe(|| e.encode_i16(frame, frame.len(), &mut out))) {
                    Ok(Ok(n)) => {
                        out.truncate(n);
                        out
                    }
                    _ => Vec::new(),
                }
            }
        }
    }
}

/// Converts mono PCM between 8 and 16 kHz (or passes it through).
pub struct Resampler {
    inner: Option<audio_codec::BoxedResampler>,
}

impl std::fmt::Debug for Resampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Resampler({})",
            if self.inner.is_some() {
                "active"
            } else {
                "pass-through"
            }
        )
    }
}

impl Resampler {
    pub fn new(from: u32, to: u32) -> Resampler {
        let inner = (from != to)
            .then(|| audio_codec::BoxedResampler::new(from as usize, to as usize).ok())
            .flatten();
        Resampler { inner }
    }

    /// Converts `input`, appending to `out`.
    pub fn process(&mut self, input: &[i16], out: &mut Vec<i16>) {
        match &mut self.inner {
            None => out.extend_from_slice(input),
            Some(r) => out.extend(r.resample(input)),
        }
    }
}

/// How clean a tone came through: the power of `hz` in `samples` against everything
/// else, in dB (a Goertzel filter against the total energy). For tests and benchmarks
/// (crates/media/opus-compare) that send a tone through a codec.
pub fn tone_snr_db(samples: &[i16], rate: u32, hz: f32) -> f64 {
    let n = samples.len() as f64;
    let k = (0.5 + n * f64::from(hz) / f64::from(rate)).floor();
    let w = 2.0 * std::f64::consts::PI * k / n;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2, mut total) = (0.0f64, 0.0f64, 0.0f64);
    for x in samples {
        let x = f64::from(*x);
        total += x * x;
        let s0 = x + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let tone_power = (s1 * s1 + s2 * s2 - coeff * s1 * s2) * 2.0 / n;
    10.0 * (tone_power / (total - tone_power).max(1e-9)).log10()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn tone(rate: u32, hz: f32, samples: usize, amplitude: f32) -> Vec<i16> {
        (0..samples)
            .map(|i| {
                ((i as f32 * hz * 2.0 * std::f32::consts::PI / rate as f32).sin() * amplitude * 32767.0)
                    as i16
            })
            .collect()
    }

    fn round_trip(codec: Codec, rate: u32, frame: usize) -> f64 {
        let mut enc = AudioEncoder::new(codec, rate).unwrap();
        let mut dec = AudioDecoder::new(codec, rate).unwrap();
        let input = tone(rate, 1000.0, frame * 50, 0.5);
        let mut out = Vec::new();
        for chunk in input.chunks(frame) {
            let payload = enc.encode(chunk);
            assert!(!payload.is_empty(), "{codec:?} produced nothing");
            dec.decode(&payload, &mut out);
        }
        assert_eq!(out.len(), input.len(), "{codec:?}");
        // skip the codec delay at the start
        tone_snr_db(&out[out.len() / 4..], rate, 1000.0)
    }

    #[test]
    fn codecs_carry_a_tone() {
        for (codec, rate, frame, min_db) in [
            (Codec::Pcmu, 8000, 160, 30.0),
            (Codec::Pcma, 8000, 160, 30.0),
            (Codec::G722, 16000, 320, 25.0),
            (Codec::Opus, 8000, 160, 15.0),
            (Codec::Opus, 16000, 320, 15.0),
        ] {
            let snr = round_trip(codec, rate, frame);
            assert!(snr > min_db, "{codec:?} at {rate}: {snr:.1} dB");
        }
    }

    #[test]
    fn opus_frame_sizes_from_toc() {
        assert_eq!(opus_packet_samples_48k(&[8 << 3]), Some(480)); // SILK WB 10 ms
        assert_eq!(opus_packet_samples_48k(&[9 << 3]), Some(960)); // SILK WB 20 ms
        assert_eq!(opus_packet_samples_48k(&[(1 << 3) | 1]), Some(1920));
        assert_eq!(opus_packet_samples_48k(&[(31 << 3) | 3, 3]), Some(2880));
        assert_eq!(opus_packet_samples_48k(&[]), None);
    }

    #[test]
    fn concealment_fills_the_gap() {
        for codec in [Codec::Pcmu, Codec::Opus] {
            let mut dec = AudioDecoder::new(codec, 8000).unwrap();
            let mut enc = AudioEncoder::new(codec, 8000).unwrap();
            let mut out = Vec::new();
            dec.decode(&enc.encode(&tone(8000, 440.0, 160, 0.5)), &mut out);
            dec.conceal(160, &mut out);
            assert_eq!(out.len(), 320, "{codec:?}");
        }
    }

    #[test]
    fn garbage_opus_does_not_panic() {
        let mut dec = AudioDecoder::new(Codec::Opus, 8000).unwrap();
        let mut rng = fastrand::Rng::with_seed(3);
        let mut out = Vec::new();
        for _ in 0..3000 {
            let len = rng.usize(0..200);
            let junk: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            out.clear();
            dec.decode(&junk, &mut out);
        }
    }

    #[test]
    fn resamples_2_to_1() {
        let mut up = Resampler::new(8000, 16000);
        let mut out = Vec::new();
        let input = tone(8000, 1000.0, 1600, 0.5);
        for chunk in input.chunks(160) {
            up.process(chunk, &mut out);
        }
        assert!((out.len() as i64 - 3200).abs() <= 64, "{}", out.len());
        let snr = tone_snr_db(&out[800..], 16000, 1000.0);
        assert!(snr > 25.0, "{snr}");
    }
}
