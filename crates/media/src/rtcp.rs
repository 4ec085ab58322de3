//! RTCP on the plain SIP leg (RFC 3550 §6): what we learn from the packets we receive
//! (loss and interarrival jitter, per Appendix A.3 and A.8), the Sender and Receiver
//! Reports we send every few seconds, and the round-trip time we read back from the
//! far end's reports (LSR/DLSR).
//!
//! Time comes in as `Instant`s and an NTP wall-clock reading, both from the caller.

use std::time::{Duration, Instant};

/// Receive-side bookkeeping of one RTP source.
#[derive(Debug, Clone, Default)]
pub struct ReceiverStats {
    ssrc: u32,
    started: bool,
    base_seq: u32,
    max_seq: u16,
    cycles: u32,
    received: u64,
    /// At the previous report: expected and received, for the fraction lost.
    expected_prior: u64,
    received_prior: u64,
    /// RFC 3550 A.8, in RTP timestamp units scaled by 16.
    jitter_q4: u64,
    last_transit: Option<i64>,
    clock_rate: u32,
    /// Middle 32 bits of the NTP time of the last SR, and when it arrived.
    last_sr: Option<(u32, Instant)>,
}

impl ReceiverStats {
    pub fn new(clock_rate: u32) -> ReceiverStats {
        ReceiverStats {
            clock_rate: clock_rate.max(1),
            ..ReceiverStats::default()
        }
    }

    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    pub fn clock_rate(&self) -> u32 {
        self.clock_rate
    }

    /// A packet arrived at `arrival` (time since an arbitrary fixed origin).
    pub fn on_packet(&mut self, ssrc: u32, seq: u16, rtp_ts: u32, arrival: Duration) {
        if !self.started || ssrc != self.ssrc {
            // a new source (call change, re-INVITE): start over
            let rate = self.clock_rate;
            *self = ReceiverStats::new(rate);
            self.started = true;
            self.ssrc = ssrc;
            self.base_seq = u32::from(seq);
            self.max_seq = seq;
        } else {
            let delta = seq.wrapping_sub(self.max_seq);
            if delta < 0x8000 {
                if seq < self.max_seq {
                    self.cycles = self.cycles.wrapping_add(1 << 16);
                }
                self.max_seq = seq;
            }
        }
        self.received += 1;
        let arrival_units = (arrival.as_secs_f64() * f64::from(self.clock_rate)) as i64;
        let transit = arrival_units - i64::from(rtp_ts);
        if let Some(last) = self.last_transit {
            let d = (transit - last).unsigned_abs();
            // J += (|D| - J) / 16, kept scaled by 16
            self.jitter_q4 = self.jitter_q4 + d - (self.jitter_q4 + 8) / 16;
        }
        self.last_transit = Some(transit);
    }

    fn extended_max(&self) -> u64 {
        u64::from(self.cycles) + u64::from(self.max_seq)
    }

    /// Packets expected from the first sequence number to the highest.
    pub fn expected(&self) -> u64 {
        if !self.started {
            return 0;
        }
        (self.extended_max() + 1).saturating_sub(u64::from(self.base_seq))
    }

    pub fn received(&self) -> u64 {
        self.received
    }

    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.received)
    }

    /// Interarrival jitter in milliseconds.
    pub fn jitter_ms(&self) -> f64 {
        (self.jitter_q4 as f64 / 16.0) * 1000.0 / f64::from(self.clock_rate)
    }

    /// The far end's Sender Report arrived (for LSR/DLSR in our reports).
    pub fn on_sender_report(&mut self, ntp: u64, now: Instant) {
        self.last_sr = Some(((ntp >> 16) as u32, now));
    }

    /// A report block about this source, closing the interval for the fraction lost.
    pub fn report_block(&mut self, now: Instant) -> Option<ReportBlock> {
        if !self.started {
            return None;
        }
        let expected = self.expected();
        let expected_interval = expected - self.expected_prior.min(expected);
        let received_interval = self.received - self.received_prior.min(self.received);
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = expected_interval.saturating_sub(received_interval);
        let fraction = (lost_interval << 8)
            .checked_div(expected_interval)
            .unwrap_or(0)
            .min(255) as u8;
        let (lsr, dlsr) = match self.last_sr {
            Some((lsr, at)) => (
                lsr,
                (now.saturating_duration_since(at).as_secs_f64() * 65536.0) as u32,
            ),
            None => (0, 0),
        };
        Some(ReportBlock {
            ssrc: self.ssrc,
            fraction_lost: fraction,
            cumulative_lost: self.lost().min(0x7f_ffff) as u32,
            highest_seq: (self.extended_max() & 0xffff_ffff) as u32,
            jitter: (self.jitter_q4 / 16).min(u64::from(u32::MAX)) as u32,
            last_sr: lsr,
            delay_since_last_sr: dlsr,
        })
    }
}

/// One reception report block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlock {
    pub ssrc: u32,
    pub fraction_lost: u8,
    pub cumulative_lost: u32,
    pub highest_seq: u32,
    pub jitter: u32,
    pub last_sr: u32,
    pub delay_since_last_sr: u32,
}

impl ReportBlock {
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        let lost = self.cumulative_lost & 0x00ff_ffff;
        out.extend_from_slice(&(u32::from(self.fraction_lost) << 24 | lost).to_be_bytes());
        out.extend_from_slice(&self.highest_seq.to_be_bytes());
        out.extend_from_slice(&self.jitter.to_be_bytes());
        out.extend_from_slice(&self.last_sr.to_be_bytes());
        out.extend_from_slice(&self.delay_since_last_sr.to_be_bytes());
    }

    fn parse(b: &[u8]) -> Option<ReportBlock> {
        let w = |i: usize| -> Option<u32> { Some(u32::from_be_bytes(b.get(i..i + 4)?.try_into().ok()?)) };
        let second = w(4)?;
        Some(ReportBlock {
            ssrc: w(0)?,
            fraction_lost: (second >> 24) as u8,
            cumulative_lost: second & 0x00ff_ffff,
            highest_seq: w(8)?,
            jitter: w(12)?,
            last_sr: w(16)?,
            delay_since_last_sr: w(20)?,
        })
    }

    /// Round-trip time per RFC 3550 §6.4.1, given the NTP time (middle 32 bits) now.
    pub fn round_trip(&self, ntp_middle_now: u32) -> Option<Duration> {
        if self.last_sr == 0 {
            return None;
        }
        let rtt = ntp_middle_now
            .wrapping_sub(self.last_sr)
            .wrapping_sub(self.delay_since_last_sr);
        (rtt < 0x8000_0000).then(|| Duration::from_secs_f64(f64::from(rtt) / 65536.0))
    }
}

/// Our sending side, for the SR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SenderInfo {
    pub ntp: u64,
    pub rtp_timestamp: u32,
    pub packets: u32,
    pub octets: u32,
}

/// Builds an SR (when we sent since the last report) or an RR, with at most one
/// report block.
pub fn build_report(ssrc: u32, sender: Option<SenderInfo>, block: Option<ReportBlock>) -> Vec<u8> {
    let blocks = usize::from(block.is_some());
    let mut out = Vec::with_capacity(52);
    let (pt, words) = match sender {
        Some(_) => (200u8, 6 + 6 * blocks),
        None => (201u8, 1 + 6 * blocks),
    };
    out.push(0x80 | blocks as u8);
    out.push(pt);
    out.extend_from_slice(&(words as u16).to_be_bytes());
    out.extend_from_slice(&ssrc.to_be_bytes());
    if let Some(s) = sender {
        out.extend_from_slice(&s.ntp.to_be_bytes());
        out.extend_from_slice(&s.rtp_timestamp.to_be_bytes());
        out.extend_from_slice(&s.packets.to_be_bytes());
        out.extend_from_slice(&s.octets.to_be_bytes());
    }
    if let Some(b) = block {
        b.write(&mut out);
    }
    out
}

/// What a compound RTCP packet from the far end told us.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Received {
    /// (SSRC, NTP timestamp) of a Sender Report.
    pub sender_report: Option<(u32, u64)>,
    /// Report blocks about our stream.
    pub blocks: Vec<ReportBlock>,
    /// The far end said BYE.
    pub bye: bool,
}

/// Parses a compound RTCP packet; unknown packet types are skipped, malformed input
/// is an error.
pub fn parse(data: &[u8]) -> Result<Received, &'static str> {
    let mut out = Received::default();
    let mut rest = data;
    if rest.is_empty() {
        return Err("empty RTCP");
    }
    while !rest.is_empty() {
        let h = rest.get(..4).ok_or("truncated RTCP header")?;
        if h[0] >> 6 != 2 {
            return Err("RTCP version is not 2");
        }
        let count = usize::from(h[0] & 0x1f);
        let len = (usize::from(u16::from_be_bytes([h[2], h[3]])) + 1) * 4;
        let pkt = rest.get(..len).ok_or("truncated RTCP packet")?;
        rest = &rest[len..];
        let blocks_at = match h[1] {
            200 => {
                let ssrc = u32::from_be_bytes(pkt.get(4..8).ok_or("short SR")?.try_into().map_err(|_| "SR")?);
                let ntp = u64::from_be_bytes(pkt.get(8..16).ok_or("short SR")?.try_into().map_err(|_| "SR")?);
                out.sender_report = Some((ssrc, ntp));
                28
            }
            201 => 8,
            203 => {
                out.bye = true;
                continue;
            }
            _ => continue,
        };
        for i in 0..count {
            let at = blocks_at + 24 * i;
            let b = pkt.get(at..at + 24).ok_or("truncated report block")?;
            if let Some(block) = ReportBlock::parse(b) {
                out.blocks.push(block);
            }
        }
    }
    Ok(out)
}

/// NTP time (seconds since 1900, 32.32 fixed point) for a UNIX time.
pub fn ntp_from_unix(unix: Duration) -> u64 {
    const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
    let secs = unix.as_secs() + NTP_UNIX_OFFSET;
    let frac = (u64::from(unix.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_loss_and_wraparound() {
        let mut s = ReceiverStats::new(8000);
        let mut seq = 65530u16;
        for i in 0..20u32 {
            if i == 7 || i == 8 {
                seq = seq.wrapping_add(1);
                continue; // two lost across the wrap
            }
            s.on_packet(5, seq, i * 160, Duration::from_millis(u64::from(i) * 20));
            seq = seq.wrapping_add(1);
        }
        assert_eq!(s.expected(), 20);
        assert_eq!(s.received(), 18);
        assert_eq!(s.lost(), 2);
        assert!(s.jitter_ms() < 0.01, "perfectly paced: {}", s.jitter_ms());
        let b = s.report_block(Instant::now()).unwrap();
        assert_eq!(b.cumulative_lost, 2);
        assert_eq!(b.fraction_lost, (2 * 256 / 20) as u8);
        // next interval: nothing lost
        s.on_packet(5, seq, 20 * 160, Duration::from_millis(400));
        assert_eq!(s.report_block(Instant::now()).unwrap().fraction_lost, 0);
    }

    #[test]
    fn jitter_grows_with_uneven_arrivals() {
        let mut s = ReceiverStats::new(8000);
        for i in 0..200u32 {
            let wobble = if i % 2 == 0 { 0 } else { 10 };
            s.on_packet(
                1,
                i as u16,
                i * 160,
                Duration::from_millis(u64::from(i) * 20 + wobble),
            );
        }
        assert!(s.jitter_ms() > 5.0 && s.jitter_ms() < 15.0, "{}", s.jitter_ms());
    }

    #[test]
    fn reports_round_trip() {
        let mut s = ReceiverStats::new(8000);
        s.on_packet(9, 1, 0, Duration::ZERO);
        let sr = build_report(
            7,
            Some(SenderInfo {
                ntp: 0x1111_2222_3333_4444,
                rtp_timestamp: 160,
                packets: 1,
                octets: 160,
            }),
            s.report_block(Instant::now()),
        );
        let r = parse(&sr).unwrap();
        assert_eq!(r.sender_report, Some((7, 0x1111_2222_3333_4444)));
        assert_eq!(r.blocks.len(), 1);
        assert_eq!(r.blocks[0].ssrc, 9);
        let rr = build_report(7, None, None);
        assert_eq!(rr.len(), 8);
        assert!(parse(&rr).unwrap().blocks.is_empty());
    }

    #[test]
    fn rtt_from_lsr_and_dlsr() {
        let b = ReportBlock {
            ssrc: 1,
            fraction_lost: 0,
            cumulative_lost: 0,
            highest_seq: 0,
            jitter: 0,
            last_sr: 0x0001_0000,
            delay_since_last_sr: 0x0000_8000, // 0.5 s
        };
        let rtt = b.round_trip(0x0001_8000 + 0x0000_0666).unwrap(); // 0.5 s + ~25 ms later
        assert!((rtt.as_secs_f64() - 0.025).abs() < 0.001, "{rtt:?}");
    }

    #[test]
    fn rejects_malformed_rtcp() {
        for bad in [
            &[][..],
            &[0x80][..],
            &[0x80, 200, 0, 10, 0, 0][..],
            &[0x40, 201, 0, 1, 0, 0, 0, 0][..],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        // RR claiming two blocks but carrying none
        assert!(parse(&[0x82, 201, 0, 1, 0, 0, 0, 1]).is_err());
    }
}
