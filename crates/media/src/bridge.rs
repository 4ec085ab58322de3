//! The media bridge (the original example's `MediaGateway` connector), sans-IO: audio
//! between the browser's WebRTC leg and the call's plain RTP leg, in both directions.
//!
//! When both legs use the same codec, payloads pass through untouched; otherwise they
//! are decoded, resampled if needed, and re-encoded. Either way each outgoing stream
//! is ours: its sequence numbers and timestamps continue smoothly across
//! re-negotiations, new far-end streams and lost packets, so neither end ever sees a
//! jump it has to resynchronise on. Nothing is buffered beyond one partial frame, so
//! delay cannot grow over a long call.
//!
//! DTMF: telephone-events from either leg become key presses (reported once each);
//! presses from the browser or the API are sent to the SIP leg as RFC 4733 events.
//! RTCP Sender/Receiver Reports for the SIP leg are produced here too.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::audio::{AudioDecoder, AudioEncoder, Resampler, opus_packet_samples_48k};
use crate::dtmf::{DtmfDetector, DtmfSender};
use crate::rtcp::{self, ReceiverStats, SenderInfo};
use crate::rtp::RtpPacket;
use crate::sdp::Codec;

/// A codec with the payload type a leg uses for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegCodec {
    pub codec: Codec,
    pub payload_type: u8,
}

/// What was negotiated with the browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrowserLeg {
    /// Voice codecs the browser can receive, most preferred first.
    pub codecs: Vec<LegCodec>,
    /// telephone-event payload types with their clock rates.
    pub dtmf: Vec<(u8, u32)>,
}

/// What was negotiated with the far end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SipLeg {
    pub codec: LegCodec,
    pub dtmf_payload_type: Option<u8>,
    /// Packet duration the far end wants, in milliseconds.
    pub ptime_ms: u32,
    /// We may send to it (not on hold by either side).
    pub send: bool,
    /// We accept its media.
    pub receive: bool,
}

impl SipLeg {
    /// The far end's leg as offer/answer decided it; `local_hold`: we hold the far end
    /// (so send nothing however the direction reads).
    pub fn negotiated(n: &crate::sdp::NegotiatedMedia, local_hold: bool) -> SipLeg {
        SipLeg {
            codec: LegCodec {
                codec: n.codec,
                payload_type: n.payload_type,
            },
            dtmf_payload_type: n.dtmf_payload_type,
            ptime_ms: n.ptime.unwrap_or(20),
            send: n.direction.sends() && !local_hold,
            receive: n.direction.receives(),
        }
    }
}

/// Which leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Browser,
    Sip,
}

/// An RTP packet for the browser (str0m adds SSRC and encryption).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrowserRtp {
    pub payload_type: u8,
    pub sequence: u64,
    pub timestamp: u32,
    pub marker: bool,
    pub payload: Vec<u8>,
}

/// What the bridge wants done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// An RTP datagram for the SIP leg.
    Sip(Vec<u8>),
    /// An RTCP datagram for the SIP leg.
    SipRtcp(Vec<u8>),
    Browser(BrowserRtp),
    /// A key press arrived from one leg.
    Dtmf {
        from: Side,
        digit: char,
    },
}

/// Counters of one direction of one leg.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LegCounters {
    pub packets_sent: u64,
    pub packets_received: u64,
    pub packets_lost: u64,
    /// Fraction lost over the last report interval (0–1).
    pub loss: f64,
    pub jitter_ms: f64,
    pub rtt_ms: Option<f64>,
}

const RTCP_INTERVAL: Duration = Duration::from_secs(5);
/// Gaps up to this long are concealed; longer ones are a discontinuity (DTX, hold).
const MAX_CONCEAL: Duration = Duration::from_millis(200);

/// One direction: packets of some codec in, our stream of `out` codec out.
#[derive(Debug)]
struct Path {
    out: LegCodec,
    /// Samples per output frame at the encoder's rate (transcoding only).
    frame_ms: u32,
    in_ssrc: Option<u32>,
    in_codec: Option<Codec>,
    last_in_seq: u16,
    /// Relay: output timestamp = input timestamp + offset.
    ts_offset: u32,
    /// Transcode: where the next input packet should start, in input RTP clock.
    expected_in_ts: u32,
    decoder: Option<AudioDecoder>,
    resampler: Resampler,
    encoder: Option<AudioEncoder>,
    pcm: Vec<i16>,
    /// Our stream.
    next_ts: u32,
    next_seq: u64,
    marker: bool,
    /// How many times the codecs were built (a changing SSRC must not rebuild them).
    coder_builds: u32,
}

impl Path {
    fn new(out: LegCodec, frame_ms: u32, first_ts: u32, first_seq: u64) -> Path {
        Path {
            out,
            frame_ms,
            in_ssrc: None,
            in_codec: None,
            last_in_seq: 0,
            ts_offset: 0,
            expected_in_ts: 0,
            decoder: None,
            resampler: Resampler::new(8000, 8000),
            encoder: None,
            pcm: Vec::new(),
            next_ts: first_ts,
            next_seq: first_seq,
            marker: true,
            coder_builds: 0,
        }
    }

    /// The output codec changed (re-negotiation): keep the stream, rebuild the coder.
    fn set_out(&mut self, out: LegCodec, frame_ms: u32) {
        if out != self.out || frame_ms != self.frame_ms {
            self.out = out;
            self.frame_ms = frame_ms;
            self.in_ssrc = None; // forces a resync on the next packet
            self.in_codec = None; // and new coders for the new output codec
            self.marker = true;
        }
    }

    /// Takes one input packet; returns (payload, timestamp, marker) packets to send.
    fn process(
        &mut self,
        in_codec: Codec,
        seq: u16,
        ts: u32,
        ssrc: u32,
        payload: &[u8],
    ) -> Vec<(Vec<u8>, u32, bool)> {
        let relay = in_codec == self.out.codec;
        let codec_changed = self.in_codec != Some(in_codec);
        let new_stream = self.in_ssrc != Some(ssrc) || codec_changed;
        if !new_stream {
            let delta = seq.wrapping_sub(self.last_in_seq);
            if delta == 0 || delta >= 0x8000 {
                return Vec::new(); // duplicate or late: its moment has passed
            }
            self.next_seq += u64::from(delta - 1); // keep losses visible downstream
        }
        self.last_in_seq = seq;
        if new_stream {
            self.in_ssrc = Some(ssrc);
            self.in_codec = Some(in_codec);
            self.marker = true;
            self.pcm.clear();
            self.ts_offset = self.next_ts.wrapping_sub(ts);
            self.expected_in_ts = ts;
            // a new SSRC alone is a resync: codecs are built only for a new codec, so
            // a sender that changes SSRC on every packet costs no more than one that
            // does not
            if !relay && codec_changed {
                self.build_coders(in_codec);
            }
        }
        if relay {
            let out_ts = ts.wrapping_add(self.ts_offset);
            let marker = std::mem::take(&mut self.marker);
            self.next_ts = out_ts.wrapping_add(duration_ticks(in_codec, payload));
            return vec![(payload.to_vec(), out_ts, marker)];
        }
        self.transcode(in_codec, ts, payload)
    }

    fn build_coders(&mut self, in_codec: Codec) {
        // Opus runs at whatever rate the other side needs, so only G.722 against
        // G.711 needs resampling.
        let out_rate = match self.out.codec {
            Codec::Opus => crate::audio::native_rate(in_codec).min(16_000),
            c => crate::audio::native_rate(c),
        };
        let dec_rate = match in_codec {
            Codec::Opus => out_rate,
            c => crate::audio::native_rate(c),
        };
        self.coder_builds += 1;
        self.decoder = AudioDecoder::new(in_codec, dec_rate);
        self.encoder = AudioEncoder::new(self.out.codec, out_rate);
        self.resampler = Resampler::new(dec_rate, out_rate);
    }

    fn transcode(&mut self, in_codec: Codec, ts: u32, payload: &[u8]) -> Vec<(Vec<u8>, u32, bool)> {
        let (Some(decoder), Some(encoder)) = (self.decoder.as_mut(), self.encoder.as_mut()) else {
            return Vec::new();
        };
        let in_clock = in_codec.clock_rate();
        let dec_rate = decoder.rate();
        let enc_rate = encoder.rate();
        let out_clock = self.out.codec.clock_rate();
        let mut decoded = Vec::with_capacity(960);
        let gap = ts.wrapping_sub(self.expected_in_ts);
        if gap != 0 && gap < 0x8000_0000 {
            let gap_time = Duration::from_secs_f64(f64::from(gap) / f64::from(in_clock));
            if gap_time <= MAX_CONCEAL {
                let samples = (gap_time.as_secs_f64() * f64::from(dec_rate)).round() as usize;
                decoder.conceal(samples, &mut decoded);
            } else {
                // silence or hold on the far side: jump ahead in time, start afresh
                let ticks = (gap_time.as_secs_f64() * f64::from(out_clock)) as u32;
                self.next_ts = self.next_ts.wrapping_add(ticks);
                self.pcm.clear();
                self.marker = true;
            }
        }
        let n = decoder.decode(payload, &mut decoded);
        let consumed_ticks = (n as u64 * u64::from(in_clock) / u64::from(dec_rate)) as u32;
        self.expected_in_ts = ts.wrapping_add(consumed_ticks);
        self.resampler.process(&decoded, &mut self.pcm);
        let frame = (enc_rate * self.frame_ms / 1000) as usize;
        let ticks_per_frame = out_clock * self.frame_ms / 1000;
        let mut out = Vec::new();
        let mut at = 0;
        while self.pcm.len() - at >= frame {
            let bytes = encoder.encode(&self.pcm[at..at + frame]);
            at += frame;
            let marker = std::mem::take(&mut self.marker);
            let ts = self.next_ts;
            self.next_ts = self.next_ts.wrapping_add(ticks_per_frame);
            if !bytes.is_empty() {
                out.push((bytes, ts, marker));
            }
        }
        self.pcm.drain(..at);
        out
    }

    fn take_seq(&mut self) -> u64 {
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }
}

/// How many RTP clock ticks a payload covers.
fn duration_ticks(codec: Codec, payload: &[u8]) -> u32 {
    match codec {
        // one byte per 8 kHz tick (G.722: two 16 kHz samples per byte, 8 kHz clock)
        Codec::Pcmu | Codec::Pcma | Codec::G722 => payload.len() as u32,
        Codec::Opus => opus_packet_samples_48k(payload).unwrap_or(960),
        Codec::TelephoneEvent => 0,
    }
}

/// The bridge between the two legs of one call.
#[derive(Debug)]
pub struct Bridge {
    browser: BrowserLeg,
    sip: SipLeg,
    to_sip: Path,
    to_browser: Path,
    sip_ssrc: u32,
    dtmf_out: DtmfSender,
    /// Timestamp the current outgoing DTMF event started at.
    dtmf_ts: u32,
    dtmf_from_sip: DtmfDetector,
    dtmf_from_browser: DtmfDetector,
    sip_rx: ReceiverStats,
    browser_rx: ReceiverStats,
    sip_sent: (u32, u32),
    browser_sent: u64,
    sent_since_report: bool,
    sip_rtt: Option<Duration>,
    last_sip_loss: f64,
    next_rtcp: Instant,
    /// `(now, time since the UNIX epoch)` at construction, for NTP timestamps.
    epoch: (Instant, Duration),
    outputs: VecDeque<Output>,
}

impl Bridge {
    /// `unix_now` is the wall-clock time matching `now` (for RTCP's NTP timestamps);
    /// `seed` makes our SSRC and initial sequence numbers/timestamps random.
    pub fn new(now: Instant, unix_now: Duration, browser: BrowserLeg, sip: SipLeg, seed: u64) -> Bridge {
        let mut rng = fastrand::Rng::with_seed(seed);
        let to_browser_codec = browser_codec_for(&browser, sip.codec.codec);
        let to_sip = Path::new(
            sip.codec,
            sip.ptime_ms.clamp(10, 60),
            rng.u32(..),
            u64::from(rng.u16(..0x7fff)),
        );
        let to_browser = Path::new(to_browser_codec, 20, rng.u32(..), u64::from(rng.u16(..0x7fff)));
        Bridge {
            dtmf_out: DtmfSender::new(8000),
            dtmf_ts: 0,
            dtmf_from_sip: DtmfDetector::default(),
            dtmf_from_browser: DtmfDetector::default(),
            sip_rx: ReceiverStats::new(sip.codec.codec.clock_rate()),
            browser_rx: ReceiverStats::new(48_000),
            sip_sent: (0, 0),
            browser_sent: 0,
            sent_since_report: false,
            sip_rtt: None,
            last_sip_loss: 0.0,
            next_rtcp: now + RTCP_INTERVAL,
            epoch: (now, unix_now),
            outputs: VecDeque::new(),
            sip_ssrc: rng.u32(..),
            to_sip,
            to_browser,
            browser,
            sip,
        }
    }

    /// True when payloads pass untouched (the two legs share the codec) each way.
    pub fn is_relaying(&self) -> (bool, bool) {
        (
            self.to_sip.in_codec.is_some_and(|c| c == self.to_sip.out.codec),
            self.to_browser.out.codec == self.sip.codec.codec,
        )
    }

    /// The codec we send to the browser.
    pub fn browser_codec(&self) -> LegCodec {
        self.to_browser.out
    }

    /// A new negotiation with the far end (re-INVITE, hold, another codec).
    pub fn set_sip(&mut self, sip: SipLeg) {
        self.to_sip.set_out(sip.codec, sip.ptime_ms.clamp(10, 60));
        let out = browser_codec_for(&self.browser, sip.codec.codec);
        self.to_browser.set_out(out, 20);
        if sip.codec.codec.clock_rate() != self.sip.codec.codec.clock_rate() {
            self.sip_rx = ReceiverStats::new(sip.codec.codec.clock_rate());
        }
        self.sip = sip;
    }

    /// A new negotiation with the browser.
    pub fn set_browser(&mut self, browser: BrowserLeg) {
        let out = browser_codec_for(&browser, self.sip.codec.codec);
        self.to_browser.set_out(out, 20);
        self.browser = browser;
    }

    /// An RTP packet from the browser (decrypted). `arrival` is since any fixed origin.
    pub fn from_browser(&mut self, now: Instant, pt: u8, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) {
        let arrival = now.saturating_duration_since(self.epoch.0);
        if let Some(&(_, _clock)) = self.browser.dtmf.iter().find(|(p, _)| *p == pt) {
            if let Some(digit) = self.dtmf_from_browser.on_packet(ts, payload) {
                self.outputs.push_back(Output::Dtmf {
                    from: Side::Browser,
                    digit,
                });
                if self.sip.dtmf_payload_type.is_some() {
                    self.dtmf_out.push(now, &digit.to_string());
                }
            }
            return;
        }
        let Some(codec) = self
            .browser
            .codecs
            .iter()
            .find(|c| c.payload_type == pt)
            .map(|c| c.codec)
        else {
            return;
        };
        if self.browser_rx.clock_rate() != codec.clock_rate() {
            self.browser_rx = ReceiverStats::new(codec.clock_rate());
        }
        self.browser_rx.on_packet(ssrc, seq, ts, arrival);
        let packets = self.to_sip.process(codec, seq, ts, ssrc, payload);
        if !self.sip.send {
            return;
        }
        for (payload, ts, marker) in packets {
            if self.dtmf_out.is_busy() {
                continue; // a key press is being sent: it replaces the audio
            }
            let seq = self.to_sip.take_seq();
            self.emit_sip(self.sip.codec.payload_type, seq, ts, marker, &payload);
        }
        self.handle_timeout(now);
    }

    /// A datagram from the far end's RTP port.
    pub fn from_sip(&mut self, now: Instant, datagram: &[u8]) -> Result<(), crate::rtp::RtpError> {
        let p = RtpPacket::parse(datagram)?;
        if !self.sip.receive {
            return Ok(());
        }
        let arrival = now.saturating_duration_since(self.epoch.0);
        if Some(p.payload_type) == self.sip.dtmf_payload_type {
            if let Some(digit) = self.dtmf_from_sip.on_packet(p.timestamp, p.payload) {
                self.outputs.push_back(Output::Dtmf {
                    from: Side::Sip,
                    digit,
                });
            }
            return Ok(());
        }
        let codec = if p.payload_type == self.sip.codec.payload_type {
            self.sip.codec.codec
        } else {
            match Codec::from_static_payload_type(p.payload_type) {
                Some(c) if c.is_voice() => c,
                _ => return Ok(()), // comfort noise, unknown dynamic types
            }
        };
        self.sip_rx.on_packet(p.ssrc, p.sequence, p.timestamp, arrival);
        for (payload, ts, marker) in
            self.to_browser
                .process(codec, p.sequence, p.timestamp, p.ssrc, p.payload)
        {
            let sequence = self.to_browser.take_seq();
            self.browser_sent += 1;
            self.outputs.push_back(Output::Browser(BrowserRtp {
                payload_type: self.to_browser.out.payload_type,
                sequence,
                timestamp: ts,
                marker,
                payload,
            }));
        }
        Ok(())
    }

    /// An RTCP datagram from the far end.
    pub fn from_sip_rtcp(&mut self, now: Instant, datagram: &[u8]) -> Result<(), &'static str> {
        let r = rtcp::parse(datagram)?;
        if let Some((_, ntp)) = r.sender_report {
            self.sip_rx.on_sender_report(ntp, now);
        }
        let ntp_now = (self.ntp(now) >> 16) as u32;
        for b in r.blocks.iter().filter(|b| b.ssrc == self.sip_ssrc) {
            if let Some(rtt) = b.round_trip(ntp_now) {
                self.sip_rtt = Some(rtt);
            }
        }
        Ok(())
    }

    /// Key presses to send to the far end as RFC 4733 events. Returns false if it
    /// did not negotiate telephone-event (send SIP INFO instead).
    pub fn send_dtmf(&mut self, now: Instant, digits: &str) -> bool {
        if self.sip.dtmf_payload_type.is_none() {
            return false;
        }
        self.dtmf_out.push(now, digits);
        self.handle_timeout(now);
        true
    }

    fn emit_sip(&mut self, pt: u8, seq: u64, ts: u32, marker: bool, payload: &[u8]) {
        let packet = RtpPacket {
            marker,
            payload_type: pt,
            sequence: seq as u16,
            timestamp: ts,
            ssrc: self.sip_ssrc,
            payload,
        };
        self.sip_sent.0 = self.sip_sent.0.wrapping_add(1);
        self.sip_sent.1 = self.sip_sent.1.wrapping_add(payload.len() as u32);
        self.sent_since_report = true;
        self.outputs.push_back(Output::Sip(packet.to_vec()));
    }

    fn ntp(&self, now: Instant) -> u64 {
        rtcp::ntp_from_unix(self.epoch.1 + now.saturating_duration_since(self.epoch.0))
    }

    /// DTMF pacing and RTCP reports.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(packet) = self.dtmf_out.poll(now) {
            let Some(pt) = self.sip.dtmf_payload_type else {
                break;
            };
            if packet.first {
                self.dtmf_ts = self.to_sip.next_ts;
            }
            let seq = self.to_sip.take_seq();
            if self.sip.send {
                self.emit_sip(pt, seq, self.dtmf_ts, packet.marker, &packet.payload);
            }
        }
        if now >= self.next_rtcp {
            self.next_rtcp = now + RTCP_INTERVAL;
            let sender = self.sent_since_report.then(|| SenderInfo {
                ntp: self.ntp(now),
                rtp_timestamp: self.to_sip.next_ts,
                packets: self.sip_sent.0,
                octets: self.sip_sent.1,
            });
            self.sent_since_report = false;
            let block = self.sip_rx.report_block(now);
            if let Some(b) = &block {
                self.last_sip_loss = f64::from(b.fraction_lost) / 256.0;
            }
            self.outputs
                .push_back(Output::SipRtcp(rtcp::build_report(self.sip_ssrc, sender, block)));
        }
    }

    pub fn poll_timeout(&self) -> Instant {
        match self.dtmf_out.poll_timeout() {
            Some(t) => t.min(self.next_rtcp),
            None => self.next_rtcp,
        }
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Statistics of the SIP leg.
    pub fn sip_counters(&self) -> LegCounters {
        LegCounters {
            packets_sent: u64::from(self.sip_sent.0),
            packets_received: self.sip_rx.received(),
            packets_lost: self.sip_rx.lost(),
            loss: self.last_sip_loss,
            jitter_ms: self.sip_rx.jitter_ms(),
            rtt_ms: self.sip_rtt.map(|d| d.as_secs_f64() * 1000.0),
        }
    }

    /// What the bridge itself sees of the browser leg (str0m knows RTT and the
    /// browser's view of loss).
    pub fn browser_counters(&self) -> LegCounters {
        LegCounters {
            packets_sent: self.browser_sent,
            packets_received: self.browser_rx.received(),
            packets_lost: self.browser_rx.lost(),
            loss: 0.0,
            jitter_ms: self.browser_rx.jitter_ms(),
            rtt_ms: None,
        }
    }
}

/// The codec to send the browser: the far end's, when the browser has it (a relay),
/// else the browser's favourite.
fn browser_codec_for(browser: &BrowserLeg, sip: Codec) -> LegCodec {
    browser
        .codecs
        .iter()
        .find(|c| c.codec == sip)
        .or_else(|| browser.codecs.first())
        .copied()
        .unwrap_or(LegCodec {
            codec: Codec::Pcmu,
            payload_type: 0,
        })
}

#[cfg(test)]
mod tests;
