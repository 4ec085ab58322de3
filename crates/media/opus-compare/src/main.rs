//! opus-rs (the pure-Rust Opus sipline transcodes with, through `sipline_media::audio`)
//! against libopus (the system library, through the `opus` crate), the way the gateway
//! uses Opus when the browser speaks Opus and the far end G.711:
//!
//! - toward the browser: 8 kHz PCM encoded to Opus (VoIP, 24 kbit/s, complexity 5);
//! - from the browser: Opus as a browser sends it (libopus at 48 kHz, 32 kbit/s)
//!   decoded for an 8 kHz far end (sipline's `AudioDecoder`: opus-rs at 16 kHz, then
//!   its 2:1 resampler).
//!
//! For each it prints the CPU time per 20 ms frame (this thread's own, from
//! /proc/thread-self/schedstat) and the SNR of a 1 kHz tone after the trip, so the
//! choice of library rests on numbers (docs/performance.md).
//!
//!     cargo run --release              # from crates/media/opus-compare; needs libopus-dev

use std::time::Duration;

use sipline_media::audio::{AudioDecoder, AudioEncoder, tone_snr_db};
use sipline_media::sdp::Codec;

const FRAMES: usize = 3000; // 60 s of audio
const TONE_HZ: f64 = 1000.0;

fn main() {
    // `--write-fixture FILE`: 100 packets of browser Opus (as `browser_opus` makes them),
    // each a big-endian u16 length and the packet, for sipline-media's tests
    let args: Vec<String> = std::env::args().collect();
    if let Some(path) = args
        .iter()
        .position(|a| a == "--write-fixture")
        .and_then(|i| args.get(i + 1))
    {
        let mut out = Vec::new();
        for p in browser_opus().iter().take(100) {
            out.extend_from_slice(&(p.len() as u16).to_be_bytes());
            out.extend_from_slice(p);
        }
        std::fs::write(path, out).expect("the fixture is written");
        return;
    }
    println!(
        "libopus {}; {FRAMES} frames of 20 ms; CPU per frame, tone SNR after the trip\n",
        opus::version()
    );
    println!("| direction | library | µs per frame | share of one core per call | tone SNR dB |");
    println!("|---|---|---|---|---|");
    let pcm8 = tone(8000, FRAMES * 160);
    let (rs_us, rs_out) = encode_opus_rs(&pcm8);
    let (lib_us, lib_out) = encode_libopus(&pcm8);
    row(
        "to browser: encode 8 kHz",
        "opus-rs",
        rs_us,
        snr_after_decode(&rs_out),
    );
    row(
        "to browser: encode 8 kHz",
        "libopus",
        lib_us,
        snr_after_decode(&lib_out),
    );
    let browser_packets = browser_opus();
    let (rs_us, rs_pcm) = decode_opus_rs(&browser_packets);
    let (lib_us, lib_pcm) = decode_libopus(&browser_packets);
    row(
        "from browser: decode to 8 kHz",
        "opus-rs (16 kHz, resampled)",
        rs_us,
        snr(&rs_pcm[800..], 8000),
    );
    row(
        "from browser: decode to 8 kHz",
        "libopus",
        lib_us,
        snr(&lib_pcm[800..], 8000),
    );

    println!("\nOther settings (not what sipline runs), to see where the costs and the losses are:\n");
    println!("| direction | library | µs per frame | share of one core per call | tone SNR dB |");
    println!("|---|---|---|---|---|");
    for complexity in [0, 1, 3, 5, 8, 10] {
        let (us, out) = encode_opus_rs_with(&pcm8, complexity);
        row(
            &format!("encode 8 kHz, complexity {complexity}"),
            "opus-rs",
            us,
            snr_after_decode(&out),
        );
        let (us, out) = encode_libopus_with(&pcm8, complexity);
        row(
            &format!("encode 8 kHz, complexity {complexity}"),
            "libopus",
            us,
            snr_after_decode(&out),
        );
    }
    for rate in [8000, 16_000, 48_000] {
        let (us, pcm) = decode_opus_rs_raw(&browser_packets, rate);
        let skip = rate as usize / 10;
        row(
            &format!("decode browser Opus to {} kHz", rate / 1000),
            "opus-rs",
            us,
            snr(&pcm[skip..], rate),
        );
        let (us, pcm) = decode_libopus_at(&browser_packets, rate);
        row(
            &format!("decode browser Opus to {} kHz", rate / 1000),
            "libopus",
            us,
            snr(&pcm[skip..], rate),
        );
    }
}

fn encode_opus_rs_with(pcm: &[i16], complexity: i32) -> (f64, Vec<Vec<u8>>) {
    let mut enc = opus_rs::OpusEncoder::new(8000, 1, opus_rs::Application::Voip).expect("opus-rs");
    enc.bitrate_bps = 24_000;
    enc.complexity = complexity;
    let mut out = Vec::with_capacity(FRAMES);
    let us = per_frame(|| {
        for frame in pcm.chunks(160) {
            let mut buf = vec![0u8; 1276];
            let n = enc
                .encode_i16(frame, frame.len(), &mut buf)
                .expect("opus-rs encodes");
            buf.truncate(n);
            out.push(buf);
        }
    });
    (us, out)
}

fn encode_libopus_with(pcm: &[i16], complexity: i32) -> (f64, Vec<Vec<u8>>) {
    let mut enc = opus::Encoder::new(8000, opus::Channels::Mono, opus::Application::Voip).expect("libopus");
    enc.set_bitrate(opus::Bitrate::Bits(24_000)).expect("bitrate");
    enc.set_complexity(complexity).expect("complexity");
    let mut out = Vec::with_capacity(FRAMES);
    let us = per_frame(|| {
        for frame in pcm.chunks(160) {
            out.push(enc.encode_vec(frame, 1276).expect("libopus encodes"));
        }
    });
    (us, out)
}

/// sipline's Opus decoder (`AudioDecoder`) at `rate`.
fn decode_opus_rs_at(packets: &[Vec<u8>], rate: u32) -> (f64, Vec<i16>) {
    let mut dec = AudioDecoder::new(Codec::Opus, rate).expect("an opus-rs decoder");
    let mut pcm = Vec::with_capacity(packets.len() * rate as usize / 50);
    let us = per_frame(|| {
        for p in packets {
            dec.decode(p, &mut pcm);
        }
    });
    (us, pcm)
}

/// opus-rs itself at `rate`, without what `AudioDecoder` adds below 16 kHz.
fn decode_opus_rs_raw(packets: &[Vec<u8>], rate: u32) -> (f64, Vec<i16>) {
    let mut dec = opus_rs::OpusDecoder::new(rate as i32, 1).expect("an opus-rs decoder");
    let mut pcm = Vec::with_capacity(packets.len() * rate as usize / 50);
    let mut buf = vec![0f32; 5760];
    let us = per_frame(|| {
        for p in packets {
            let n = dec.decode(p, 5760, &mut buf).expect("opus-rs decodes");
            pcm.extend(
                buf[..n]
                    .iter()
                    .map(|s| (s * 32768.0).clamp(-32768.0, 32767.0) as i16),
            );
        }
    });
    (us, pcm)
}

fn decode_libopus_at(packets: &[Vec<u8>], rate: u32) -> (f64, Vec<i16>) {
    let mut dec = opus::Decoder::new(rate, opus::Channels::Mono).expect("libopus");
    let mut pcm = Vec::with_capacity(packets.len() * rate as usize / 50);
    let mut buf = [0i16; 5760];
    let us = per_frame(|| {
        for p in packets {
            let n = dec.decode(p, &mut buf, false).expect("libopus decodes");
            pcm.extend_from_slice(&buf[..n]);
        }
    });
    (us, pcm)
}

fn row(direction: &str, lib: &str, us: f64, snr_db: f64) {
    // one call sends 50 frames a second each way
    let share = us * 50.0 / 1e6 * 100.0;
    println!("| {direction} | {lib} | {us:.1} | {share:.3} % | {snr_db:.1} |");
}

fn encode_opus_rs(pcm: &[i16]) -> (f64, Vec<Vec<u8>>) {
    let mut enc = AudioEncoder::new(Codec::Opus, 8000).expect("an opus-rs encoder");
    let mut out = Vec::with_capacity(FRAMES);
    let us = per_frame(|| {
        for frame in pcm.chunks(160) {
            out.push(enc.encode(frame));
        }
    });
    (us, out)
}

fn encode_libopus(pcm: &[i16]) -> (f64, Vec<Vec<u8>>) {
    let mut enc = opus::Encoder::new(8000, opus::Channels::Mono, opus::Application::Voip).expect("libopus");
    enc.set_bitrate(opus::Bitrate::Bits(24_000)).expect("bitrate");
    enc.set_complexity(5).expect("complexity");
    let mut out = Vec::with_capacity(FRAMES);
    let us = per_frame(|| {
        for frame in pcm.chunks(160) {
            out.push(enc.encode_vec(frame, 1276).expect("libopus encodes"));
        }
    });
    (us, out)
}

/// What a browser sends: libopus at 48 kHz, 32 kbit/s (Chrome's default for voice).
fn browser_opus() -> Vec<Vec<u8>> {
    let pcm = tone(48_000, FRAMES * 960);
    let mut enc = opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip).expect("libopus");
    enc.set_bitrate(opus::Bitrate::Bits(32_000)).expect("bitrate");
    pcm.chunks(960)
        .map(|f| enc.encode_vec(f, 1276).expect("libopus encodes"))
        .collect()
}

fn decode_opus_rs(packets: &[Vec<u8>]) -> (f64, Vec<i16>) {
    decode_opus_rs_at(packets, 8000)
}

fn decode_libopus(packets: &[Vec<u8>]) -> (f64, Vec<i16>) {
    let mut dec = opus::Decoder::new(8000, opus::Channels::Mono).expect("libopus");
    let mut pcm = Vec::with_capacity(packets.len() * 160);
    let mut buf = [0i16; 960];
    let us = per_frame(|| {
        for p in packets {
            let n = dec.decode(p, &mut buf, false).expect("libopus decodes");
            pcm.extend_from_slice(&buf[..n]);
        }
    });
    (us, pcm)
}

/// The SNR of encoded 8 kHz packets decoded by the same decoder (libopus), so both
/// encoders are judged by one ear.
fn snr_after_decode(packets: &[Vec<u8>]) -> f64 {
    let mut dec = opus::Decoder::new(8000, opus::Channels::Mono).expect("libopus");
    let mut pcm = Vec::new();
    let mut buf = [0i16; 960];
    for p in packets {
        let n = dec.decode(p, &mut buf, false).expect("libopus decodes");
        pcm.extend_from_slice(&buf[..n]);
    }
    snr(&pcm[800..], 8000) // past the codec's start-up
}

/// Runs `work` (FRAMES frames) and returns this thread's CPU time per frame, in µs.
fn per_frame(work: impl FnOnce()) -> f64 {
    let t0 = thread_cpu();
    work();
    (thread_cpu() - t0).as_secs_f64() * 1e6 / FRAMES as f64
}

/// This thread's time on a CPU (the first field of /proc/thread-self/schedstat, in ns).
fn thread_cpu() -> Duration {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").expect("/proc/thread-self/schedstat");
    let ns: u64 = s
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .expect("a number");
    Duration::from_nanos(ns)
}

fn tone(rate: u32, samples: usize) -> Vec<i16> {
    (0..samples)
        .map(|i| {
            let t = i as f64 / f64::from(rate);
            ((t * TONE_HZ * 2.0 * std::f64::consts::PI).sin() * 0.5 * 32767.0) as i16
        })
        .collect()
}

/// The tone against everything else, in dB.
fn snr(samples: &[i16], rate: u32) -> f64 {
    tone_snr_db(samples, rate, TONE_HZ as f32)
}
