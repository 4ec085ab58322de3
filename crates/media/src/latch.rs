//! Which packets on a call's RTP/RTCP ports come from the far end, and where ours go.
//!
//! Anything can send to a call's ports. Taking audio from whoever sends it lets anyone
//! inject sound into a call, and following whoever sends lets anyone steal the
//! browser's microphone ("RTP Bleed", Asterisk CVE-2017-14099). Sans-IO, the driver
//! shows this module each datagram's source (and the time) and forwards only what it
//! accepts; the rules, after rtpengine's delayed learning and Asterisk's `strictrtp`:
//!
//! - The far end is the address its SDP names. RTP from there is always taken, and the
//!   first packet from there settles the call on it for good: anything that was learnt
//!   instead (someone who raced the far end) loses the call's media at once.
//! - Only while nothing has come from the signalled address, and not before
//!   [`LEARN_DELAY`] has passed since the media was negotiated, may another address be
//!   learnt (a far end behind NAT, whose packets come from a mapped address): it must
//!   first send [`PROBATION`] valid RTP packets in sequence. Until then its packets are
//!   dropped. Learning happens once per negotiation (the answer, or a re-INVITE that
//!   moves the far end).
//! - Everything else is dropped (and counted by the driver).
//! - RTCP is taken from the signalled RTCP address, or from the learnt far end's host;
//!   ours goes to the signalled RTCP address, or, for a learnt far end, to where its RTCP
//!   comes from (else beside its RTP).
//!
//! Residual risk: an attacker who sends from the signalled address itself (spoofing it,
//! or on its path), or who wins the learning race against a far end that stays silent
//! for over a second, still gets in; only SRTP toward the PBX (SDES, a later issue)
//! closes that. With symmetric RTP off, nothing is ever learnt.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::rtp::{RtpPacket, looks_like_rtcp};

/// In-sequence RTP packets from a new address before it is learnt (80 ms of 20 ms audio).
pub const PROBATION: u8 = 4;

/// How long after negotiation learning may start: the far end's own packets normally
/// arrive first, and a racer gets nothing in the meantime.
pub const LEARN_DELAY: Duration = Duration::from_secs(1);

/// What to do with an RTP datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// From the far end: bridge it.
    Accept,
    /// From the far end, which now sends from `to`: bridge it, and send there.
    Moved { to: SocketAddr },
    /// Not from the far end: drop it.
    Drop,
}

/// Where one call's RTP and RTCP come from and go.
#[derive(Debug, Clone)]
pub struct Latch {
    enabled: bool,
    signalled_rtp: SocketAddr,
    signalled_rtcp: SocketAddr,
    /// Learning may start at this instant.
    learn_from: Instant,
    /// The signalled address has sent: nothing else will ever be taken.
    confirmed: bool,
    /// The address learnt in place of the signalled one (a far end behind NAT).
    learnt: Option<SocketAddr>,
    /// Where a learnt far end's RTCP comes from.
    learnt_rtcp: Option<SocketAddr>,
    /// The address on probation: its last sequence number and how many in a row.
    candidate: Option<(SocketAddr, u16, u8)>,
}

impl Latch {
    /// Media was negotiated at `now` with these addresses; with `enabled` false only the
    /// signalled addresses are ever used.
    pub fn new(now: Instant, rtp: SocketAddr, rtcp: SocketAddr, enabled: bool) -> Latch {
        Latch {
            enabled,
            signalled_rtp: rtp,
            signalled_rtcp: rtcp,
            learn_from: now + LEARN_DELAY,
            confirmed: false,
            learnt: None,
            learnt_rtcp: None,
            candidate: None,
        }
    }

    /// A new negotiation named these addresses: use them at once, and learn again.
    pub fn renegotiated(&mut self, now: Instant, rtp: SocketAddr, rtcp: SocketAddr) {
        *self = Latch::new(now, rtp, rtcp, self.enabled);
    }

    /// Where our RTP goes.
    pub fn rtp_destination(&self) -> SocketAddr {
        self.learnt.unwrap_or(self.signalled_rtp)
    }

    /// Where our RTCP goes.
    pub fn rtcp_destination(&self) -> SocketAddr {
        match (self.learnt, self.learnt_rtcp) {
            (None, _) => self.signalled_rtcp,
            (Some(_), Some(rtcp)) => rtcp,
            (Some(rtp), None) => {
                let mut a = rtp;
                a.set_port(a.port().wrapping_add(1));
                a
            }
        }
    }

    /// An RTP datagram arrived from `source` at `now`.
    pub fn on_rtp(&mut self, now: Instant, source: SocketAddr, datagram: &[u8]) -> Verdict {
        if source == self.signalled_rtp {
            self.confirmed = true;
            self.candidate = None;
            return match self.learnt.take() {
                Some(_) => Verdict::Moved { to: source },
                None => Verdict::Accept,
            };
        }
        if self.learnt == Some(source) {
            return Verdict::Accept;
        }
        if !self.enabled || self.confirmed || self.learnt.is_some() || !is_real(source) {
            return Verdict::Drop;
        }
        self.learn(now, source, datagram)
    }

    /// Probation of a source other than the signalled one.
    fn learn(&mut self, now: Instant, source: SocketAddr, datagram: &[u8]) -> Verdict {
        if looks_like_rtcp(datagram) {
            return Verdict::Drop;
        }
        let Ok(packet) = RtpPacket::parse(datagram) else {
            return Verdict::Drop;
        };
        let count = match self.candidate {
            Some((a, last, n)) if a == source && packet.sequence == last.wrapping_add(1) => {
                n.saturating_add(1)
            }
            _ => 1,
        };
        self.candidate = Some((source, packet.sequence, count));
        if count < PROBATION || now < self.learn_from {
            return Verdict::Drop;
        }
        self.learnt = Some(source);
        self.candidate = None;
        Verdict::Moved { to: source }
    }

    /// An RTCP datagram arrived from `source`: whether it is the far end's (to take in).
    pub fn on_rtcp(&mut self, source: SocketAddr, datagram: &[u8]) -> bool {
        if !looks_like_rtcp(datagram) {
            return false;
        }
        if source == self.signalled_rtcp || source == self.signalled_rtp {
            return true;
        }
        match self.learnt {
            Some(rtp) if rtp.ip() == source.ip() && is_real(source) => {
                self.learnt_rtcp.get_or_insert(source);
                self.learnt_rtcp == Some(source)
            }
            _ => false,
        }
    }
}

/// A raw-socket sender can show source port 0; nothing can be sent back there.
fn is_real(source: SocketAddr) -> bool {
    source.port() != 0 && !source.ip().is_unspecified()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn rtp(seq: u16) -> Vec<u8> {
        let mut p = vec![0x80, 0];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 160, 0, 0, 0, 7, 0xff, 0xff]);
        p
    }

    const RTCP_RR: [u8; 8] = [0x80, 201, 0, 1, 0, 0, 0, 7];
    const FAR: &str = "10.0.0.5:4000";
    const FAR_RTCP: &str = "10.0.0.5:4001";

    fn latch(t0: Instant) -> Latch {
        Latch::new(t0, at(FAR), at(FAR_RTCP), true)
    }

    /// `n` in-sequence packets from `from` starting at `seq`, at `now`.
    fn send(l: &mut Latch, now: Instant, from: &str, seq: u16, n: u16) -> Vec<Verdict> {
        (seq..seq + n).map(|s| l.on_rtp(now, at(from), &rtp(s))).collect()
    }

    #[test]
    fn the_far_end_is_taken_and_everyone_else_dropped() {
        let t0 = Instant::now();
        let mut l = latch(t0);
        assert_eq!(l.on_rtp(t0, at(FAR), &rtp(1)), Verdict::Accept);
        let later = t0 + Duration::from_secs(5);
        for v in send(&mut l, later, "127.0.0.1:6666", 100, 50) {
            assert_eq!(v, Verdict::Drop, "an injector after the far end spoke");
        }
        assert_eq!(l.rtp_destination(), at(FAR));
        assert_eq!(l.on_rtp(later, at(FAR), &rtp(2)), Verdict::Accept);
    }

    #[test]
    fn a_racer_gets_nothing_in_the_first_second() {
        let t0 = Instant::now();
        let mut l = latch(t0);
        let racer = "127.0.0.1:6666";
        for (i, v) in send(&mut l, t0 + Duration::from_millis(10), racer, 100, 45)
            .into_iter()
            .enumerate()
        {
            assert_eq!(v, Verdict::Drop, "packet {i} before the learning delay");
        }
        assert_eq!(l.rtp_destination(), at(FAR), "our audio never went to the racer");
    }

    #[test]
    fn a_racer_that_was_learnt_loses_the_call_when_the_far_end_speaks() {
        let t0 = Instant::now();
        let mut l = latch(t0);
        let racer = "127.0.0.1:6666";
        let late = t0 + LEARN_DELAY;
        let verdicts = send(&mut l, late, racer, 100, u16::from(PROBATION));
        assert_eq!(verdicts.last(), Some(&Verdict::Moved { to: at(racer) }));
        assert_eq!(l.rtp_destination(), at(racer));
        // the far end's first packet takes the call back, for good
        assert_eq!(l.on_rtp(late, at(FAR), &rtp(1)), Verdict::Moved { to: at(FAR) });
        assert_eq!(l.rtp_destination(), at(FAR));
        assert_eq!(l.rtcp_destination(), at(FAR_RTCP));
        for v in send(&mut l, late + Duration::from_secs(10), racer, 200, 50) {
            assert_eq!(v, Verdict::Drop);
        }
        assert_eq!(l.rtp_destination(), at(FAR));
    }

    #[test]
    fn a_far_end_behind_nat_is_learnt_after_the_delay_and_probation() {
        let t0 = Instant::now();
        let mut l = latch(t0);
        let nat = "127.0.0.1:31004";
        // its first second of audio is dropped: that is the price of not being fooled
        for v in send(&mut l, t0 + Duration::from_millis(500), nat, 0, 25) {
            assert_eq!(v, Verdict::Drop);
        }
        let late = t0 + LEARN_DELAY;
        assert_eq!(l.on_rtp(late, at(nat), &rtp(25)), Verdict::Moved { to: at(nat) });
        assert_eq!(l.on_rtp(late, at(nat), &rtp(26)), Verdict::Accept);
        assert_eq!(l.rtp_destination(), at(nat));
        assert_eq!(l.rtcp_destination(), at("127.0.0.1:31005"), "beside its RTP");
        // learnt once: another sender cannot take over
        for v in send(&mut l, late + Duration::from_secs(3), "127.0.0.1:9999", 0, 20) {
            assert_eq!(v, Verdict::Drop);
        }
        assert_eq!(l.rtp_destination(), at(nat));
    }

    #[test]
    fn a_stray_or_interleaved_sender_is_never_learnt() {
        let t0 = Instant::now();
        let mut l = latch(t0);
        let late = t0 + LEARN_DELAY;
        for seq in 0..20u16 {
            // two senders taking turns: neither is ever in sequence for long enough
            let from = if seq % 2 == 0 {
                "127.0.0.1:5000"
            } else {
                "127.0.0.1:6000"
            };
            assert_eq!(l.on_rtp(late, at(from), &rtp(seq)), Verdict::Drop);
        }
        // out-of-order sequence numbers restart the probation
        for seq in [1u16, 2, 5, 6, 7] {
            assert_eq!(l.on_rtp(late, at("127.0.0.1:5000"), &rtp(seq)), Verdict::Drop);
        }
        assert_eq!(
            l.on_rtp(late, at("127.0.0.1:5000"), &rtp(8)),
            Verdict::Moved {
                to: at("127.0.0.1:5000")
            }
        );
    }

    #[test]
    fn only_valid_rtp_from_a_real_address_is_learnt() {
        let t0 = Instant::now();
        let mut l = latch(t0);
        let late = t0 + LEARN_DELAY;
        for seq in 0..10 {
            assert_eq!(
                l.on_rtp(late, at("127.0.0.1:0"), &rtp(seq)),
                Verdict::Drop,
                "port 0"
            );
            assert_eq!(l.on_rtp(late, at("0.0.0.0:5000"), &rtp(seq)), Verdict::Drop);
            assert_eq!(
                l.on_rtp(late, at("127.0.0.1:5000"), &RTCP_RR),
                Verdict::Drop,
                "RTCP"
            );
            assert_eq!(
                l.on_rtp(late, at("127.0.0.1:5000"), b"hello there!"),
                Verdict::Drop
            );
        }
        assert_eq!(l.rtp_destination(), at(FAR));
    }

    #[test]
    fn sequence_numbers_wrap() {
        let t0 = Instant::now();
        let mut l = latch(t0);
        let late = t0 + LEARN_DELAY;
        let a = at("127.0.0.1:5000");
        for seq in [65534u16, 65535, 0] {
            assert_eq!(l.on_rtp(late, a, &rtp(seq)), Verdict::Drop);
        }
        assert_eq!(l.on_rtp(late, a, &rtp(1)), Verdict::Moved { to: a });
    }

    #[test]
    fn rtcp_is_taken_only_from_the_far_end_and_never_redirected_by_others() {
        let t0 = Instant::now();
        let mut l = latch(t0);
        assert!(l.on_rtcp(at(FAR_RTCP), &RTCP_RR));
        assert!(!l.on_rtcp(at("127.0.0.1:7001"), &RTCP_RR), "a stranger's RTCP");
        assert!(
            !l.on_rtcp(at("10.0.0.5:9999"), &RTCP_RR),
            "the far end's host, another port"
        );
        assert!(!l.on_rtcp(at(FAR_RTCP), &rtp(1)), "not RTCP");
        assert_eq!(l.rtcp_destination(), at(FAR_RTCP));
        // a learnt far end's RTCP comes from its host: the first port it uses is kept
        let late = t0 + LEARN_DELAY;
        let mut l = latch(t0);
        send(&mut l, late, "192.0.2.9:31004", 0, u16::from(PROBATION));
        assert!(!l.on_rtcp(at("198.51.100.1:31005"), &RTCP_RR), "another host");
        assert!(l.on_rtcp(at("192.0.2.9:40001"), &RTCP_RR));
        assert!(!l.on_rtcp(at("192.0.2.9:40003"), &RTCP_RR), "kept the first");
        assert_eq!(l.rtcp_destination(), at("192.0.2.9:40001"));
    }

    #[test]
    fn off_means_the_sdp_is_the_law() {
        let t0 = Instant::now();
        let mut l = Latch::new(t0, at(FAR), at(FAR_RTCP), false);
        for v in send(&mut l, t0 + Duration::from_secs(5), "127.0.0.1:5000", 0, 10) {
            assert_eq!(v, Verdict::Drop);
        }
        assert_eq!(l.rtp_destination(), at(FAR));
        assert_eq!(l.rtcp_destination(), at(FAR_RTCP));
    }

    #[test]
    fn a_re_invite_that_moves_the_far_end_is_followed_at_once_and_learnt_again() {
        let t0 = Instant::now();
        let mut l = latch(t0);
        let nat = "127.0.0.1:31004";
        send(&mut l, t0 + LEARN_DELAY, nat, 0, u16::from(PROBATION));
        assert_eq!(l.rtp_destination(), at(nat));
        let t1 = t0 + Duration::from_secs(30);
        l.renegotiated(t1, at("10.0.0.6:6000"), at("10.0.0.6:6001"));
        assert_eq!(l.rtp_destination(), at("10.0.0.6:6000"));
        assert_eq!(l.rtcp_destination(), at("10.0.0.6:6001"));
        assert_eq!(
            send(&mut l, t1, nat, 10, 10),
            vec![Verdict::Drop; 10],
            "the delay again"
        );
        // its probation ran during the delay: it is learnt with its first packet after
        let verdicts = send(&mut l, t1 + LEARN_DELAY, nat, 20, 2);
        assert_eq!(verdicts, vec![Verdict::Moved { to: at(nat) }, Verdict::Accept]);
    }
}
