//! Symmetric RTP ("latching", RFC 4961's practice for far ends behind NAT): where to send a
//! call's RTP and RTCP when the far end's packets come from somewhere other than the
//! address in its SDP.
//!
//! Sans-IO: the driver shows it each datagram's source and bytes and asks it for the
//! destinations. Learning is strict, as Asterisk's `strictrtp`: a new address is adopted
//! only after [`PROBATION`] RTP packets in sequence from it, so one spoofed or stray
//! datagram cannot steer a call's audio elsewhere; packets from the signalled address
//! itself confirm it at once. Learning happens once per negotiation (the SDP answer, or a
//! re-INVITE that moves the far end).

use std::net::SocketAddr;

use crate::rtp::{RtpPacket, looks_like_rtcp};

/// In-sequence RTP packets from a new address before it is adopted (80 ms of 20 ms audio).
pub const PROBATION: u8 = 4;

/// Where one call's RTP and RTCP go.
#[derive(Debug, Clone)]
pub struct Latch {
    enabled: bool,
    rtp: SocketAddr,
    rtcp: SocketAddr,
    /// RTP's destination is settled (confirmed or learnt) for this negotiation.
    rtp_settled: bool,
    /// RTP moved away from the signalled address.
    rtp_moved: bool,
    rtcp_learnt: bool,
    /// The address on probation: its last sequence number and how many in a row.
    candidate: Option<(SocketAddr, u16, u8)>,
}

impl Latch {
    /// Sends to the signalled addresses until the far end's own packets say otherwise
    /// (never, when `enabled` is false).
    pub fn new(rtp: SocketAddr, rtcp: SocketAddr, enabled: bool) -> Latch {
        Latch {
            enabled,
            rtp,
            rtcp,
            rtp_settled: false,
            rtp_moved: false,
            rtcp_learnt: false,
            candidate: None,
        }
    }

    /// A new negotiation named these addresses: use them at once, and learn again.
    pub fn renegotiated(&mut self, rtp: SocketAddr, rtcp: SocketAddr) {
        *self = Latch::new(rtp, rtcp, self.enabled);
    }

    pub fn rtp_destination(&self) -> SocketAddr {
        self.rtp
    }

    /// Where RTCP goes: where the far end's RTCP comes from, else beside its latched RTP,
    /// else the signalled address.
    pub fn rtcp_destination(&self) -> SocketAddr {
        if !self.rtcp_learnt && self.rtp_moved {
            let mut a = self.rtp;
            a.set_port(a.port().wrapping_add(1));
            return a;
        }
        self.rtcp
    }

    /// An RTP datagram arrived from `source`. Returns the new RTP destination when it
    /// changes.
    pub fn on_rtp(&mut self, source: SocketAddr, datagram: &[u8]) -> Option<SocketAddr> {
        if !self.enabled || self.rtp_settled || !is_real(source) || looks_like_rtcp(datagram) {
            return None;
        }
        let Ok(packet) = RtpPacket::parse(datagram) else {
            return None;
        };
        if source == self.rtp {
            self.rtp_settled = true;
            self.candidate = None;
            return None;
        }
        let count = match self.candidate {
            Some((a, last, n)) if a == source && packet.sequence == last.wrapping_add(1) => n + 1,
            _ => 1,
        };
        self.candidate = Some((source, packet.sequence, count));
        if count < PROBATION {
            return None;
        }
        self.rtp = source;
        self.rtp_settled = true;
        self.rtp_moved = true;
        self.candidate = None;
        Some(source)
    }

    /// An RTCP datagram arrived from `source`: the first valid one sets where ours go.
    pub fn on_rtcp(&mut self, source: SocketAddr, datagram: &[u8]) {
        if self.enabled && !self.rtcp_learnt && is_real(source) && looks_like_rtcp(datagram) {
            self.rtcp = source;
            self.rtcp_learnt = true;
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

    fn latch() -> Latch {
        Latch::new(at("10.0.0.5:4000"), at("10.0.0.5:4001"), true)
    }

    #[test]
    fn adopts_a_new_address_after_probation() {
        let mut l = latch();
        let nat = at("127.0.0.1:31004");
        for seq in 100..100 + u16::from(PROBATION) - 1 {
            assert_eq!(l.on_rtp(nat, &rtp(seq)), None);
            assert_eq!(l.rtp_destination(), at("10.0.0.5:4000"));
        }
        assert_eq!(l.on_rtp(nat, &rtp(100 + u16::from(PROBATION) - 1)), Some(nat));
        assert_eq!(l.rtp_destination(), nat);
        assert_eq!(l.rtcp_destination(), at("127.0.0.1:31005"), "beside the RTP");
        // settled: nothing else moves it
        for seq in 0..20 {
            assert_eq!(l.on_rtp(at("127.0.0.1:9999"), &rtp(seq)), None);
        }
        assert_eq!(l.rtp_destination(), nat);
    }

    #[test]
    fn packets_from_the_signalled_address_settle_it_at_once() {
        let mut l = latch();
        assert_eq!(l.on_rtp(at("10.0.0.5:4000"), &rtp(1)), None);
        for seq in 2..10 {
            assert_eq!(l.on_rtp(at("127.0.0.1:5000"), &rtp(seq)), None);
        }
        assert_eq!(l.rtp_destination(), at("10.0.0.5:4000"));
    }

    #[test]
    fn a_stray_or_interleaved_sender_does_not_win() {
        let mut l = latch();
        let (a, b) = (at("127.0.0.1:5000"), at("127.0.0.1:6000"));
        for seq in 0..20u16 {
            // two senders taking turns: neither is ever in sequence for long enough
            let from = if seq % 2 == 0 { a } else { b };
            assert_eq!(l.on_rtp(from, &rtp(seq)), None);
        }
        // out-of-order sequence numbers restart the probation
        for seq in [1u16, 2, 5, 6, 7] {
            assert_eq!(l.on_rtp(a, &rtp(seq)), None);
        }
        assert_eq!(l.on_rtp(a, &rtp(8)), Some(a));
    }

    #[test]
    fn only_valid_rtp_from_a_real_address_counts() {
        let mut l = latch();
        for seq in 0..10 {
            assert_eq!(l.on_rtp(at("127.0.0.1:0"), &rtp(seq)), None, "port 0");
            assert_eq!(l.on_rtp(at("0.0.0.0:5000"), &rtp(seq)), None, "unspecified");
            assert_eq!(l.on_rtp(at("127.0.0.1:5000"), &RTCP_RR), None, "RTCP");
            assert_eq!(l.on_rtp(at("127.0.0.1:5000"), b"hello there!"), None, "not RTP");
        }
        assert_eq!(l.rtp_destination(), at("10.0.0.5:4000"));
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut l = latch();
        let a = at("127.0.0.1:5000");
        for seq in [65534u16, 65535, 0] {
            assert_eq!(l.on_rtp(a, &rtp(seq)), None);
        }
        assert_eq!(l.on_rtp(a, &rtp(1)), Some(a));
    }

    #[test]
    fn rtcp_goes_where_the_far_ends_rtcp_comes_from() {
        let mut l = latch();
        assert_eq!(l.rtcp_destination(), at("10.0.0.5:4001"));
        l.on_rtcp(at("127.0.0.1:0"), &RTCP_RR);
        l.on_rtcp(at("127.0.0.1:7001"), &rtp(1));
        assert_eq!(l.rtcp_destination(), at("10.0.0.5:4001"));
        l.on_rtcp(at("127.0.0.1:7001"), &RTCP_RR);
        assert_eq!(l.rtcp_destination(), at("127.0.0.1:7001"));
        l.on_rtcp(at("127.0.0.1:8001"), &RTCP_RR);
        assert_eq!(l.rtcp_destination(), at("127.0.0.1:7001"), "learnt once");
    }

    #[test]
    fn off_means_the_sdp_is_the_law() {
        let mut l = Latch::new(at("10.0.0.5:4000"), at("10.0.0.5:4001"), false);
        for seq in 0..10 {
            assert_eq!(l.on_rtp(at("127.0.0.1:5000"), &rtp(seq)), None);
        }
        l.on_rtcp(at("127.0.0.1:5001"), &RTCP_RR);
        assert_eq!(l.rtp_destination(), at("10.0.0.5:4000"));
        assert_eq!(l.rtcp_destination(), at("10.0.0.5:4001"));
    }

    #[test]
    fn a_re_invite_that_moves_the_far_end_is_followed_at_once_and_learnt_again() {
        let mut l = latch();
        let nat = at("127.0.0.1:31004");
        for seq in 0..u16::from(PROBATION) {
            l.on_rtp(nat, &rtp(seq));
        }
        assert_eq!(l.rtp_destination(), nat);
        l.renegotiated(at("10.0.0.6:6000"), at("10.0.0.6:6001"));
        assert_eq!(l.rtp_destination(), at("10.0.0.6:6000"));
        assert_eq!(l.rtcp_destination(), at("10.0.0.6:6001"));
        for seq in 10..10 + u16::from(PROBATION) {
            l.on_rtp(nat, &rtp(seq));
        }
        assert_eq!(l.rtp_destination(), nat);
    }
}
