//! SRTP and SRTCP on the SIP leg (RFC 3711), keyed by SDES (RFC 4568: the keys travel in
//! the SDP, `a=crypto:… AES_CM_128_HMAC_SHA1_80 inline:…`): the suite every PBX and phone
//! that does SRTP offers. A [`SrtpContext`] holds one direction's keys: ours protects
//! what we send, the far end's unprotects what it sends.
//!
//! Sans-IO, like the rest of the crate: packets in, packets out. Hand-written on
//! aws-lc-rs's AES-CTR and HMAC-SHA1 (already in the build for TLS and DTLS), because
//! str0m keeps its SRTP context private and the SRTP crates come with a whole WebRTC
//! stack (webrtc-srtp) or a C library (libsrtp). Checked against RFC 3711 Appendix B.
//!
//! Not supported (refused where the SDP offers them): MKIs, key lifetimes other than
//! the default, a key derivation rate other than 0, other suites.

use std::fmt;

use aws_lc_rs::cipher::{AES_128, EncryptingKey, EncryptionContext, UnboundCipherKey};
use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

/// The one crypto suite we speak.
pub const SUITE: &str = "AES_CM_128_HMAC_SHA1_80";
const KEY_LEN: usize = 16;
const SALT_LEN: usize = 14;
const AUTH_KEY_LEN: usize = 20;
/// HMAC-SHA1 truncated to 80 bits.
pub const TAG_LEN: usize = 10;
/// SSRCs of one far end whose rollover counter and replay window are kept.
const MAX_STREAMS: usize = 4;
/// Packets older than this many behind the newest are replays (RFC 3711 §3.3.2).
const REPLAY_WINDOW: u64 = 64;

/// Why a packet was not protected or unprotected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SrtpError {
    /// Too short, or not RTP/RTCP.
    Malformed,
    /// The authentication tag does not match: forged, corrupted, or another key.
    Auth,
    /// Seen already, or too old to tell.
    Replay,
    /// The crypto library refused (should not happen).
    Crypto,
}

impl fmt::Display for SrtpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SrtpError::Malformed => "not an SRTP packet",
            SrtpError::Auth => "SRTP authentication failed",
            SrtpError::Replay => "SRTP replay",
            SrtpError::Crypto => "SRTP crypto error",
        })
    }
}

impl std::error::Error for SrtpError {}

/// A master key and salt: the key material of one `a=crypto` line.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct MasterKey([u8; KEY_LEN + SALT_LEN]);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    pub fn new(bytes: [u8; KEY_LEN + SALT_LEN]) -> MasterKey {
        MasterKey(bytes)
    }

    /// A fresh key from the operating system's generator.
    pub fn random() -> Result<MasterKey, SrtpError> {
        let mut bytes = [0u8; KEY_LEN + SALT_LEN];
        aws_lc_rs::rand::fill(&mut bytes).map_err(|_| SrtpError::Crypto)?;
        Ok(MasterKey(bytes))
    }

    /// From an SDES key parameter, `inline:BASE64[|LIFETIME]`. None for anything else,
    /// including keys with an MKI (`|1:4`) and lifetimes shorter than 2^31 packets.
    pub fn from_inline(param: &str) -> Option<MasterKey> {
        let mut parts = param.trim().strip_prefix("inline:")?.split('|');
        let bytes = BASE64.decode(parts.next()?).ok()?;
        match (parts.next(), parts.next()) {
            (None, _) => {}
            (Some(lifetime), None) if lifetime_is_default(lifetime) => {}
            _ => return None,
        }
        Some(MasterKey(bytes.try_into().ok()?))
    }

    /// As an SDES key parameter: `inline:BASE64`.
    pub fn to_inline(&self) -> String {
        format!("inline:{}", BASE64.encode(self.0))
    }

    fn key(&self) -> &[u8] {
        &self.0[..KEY_LEN]
    }

    fn salt(&self) -> &[u8] {
        &self.0[KEY_LEN..]
    }
}

/// A lifetime of at least 2^31 packets (`2^31`, `2^48`, or a number that large).
fn lifetime_is_default(lifetime: &str) -> bool {
    match lifetime.strip_prefix("2^") {
        Some(power) => power.parse::<u32>().is_ok_and(|p| p >= 31),
        None => lifetime.parse::<u64>().is_ok_and(|n| n >= 1 << 31),
    }
}

/// The session keys of one kind of traffic (RTP or RTCP).
struct SessionKeys {
    cipher: EncryptingKey,
    auth: hmac::Key,
    salt: [u8; SALT_LEN],
}

impl SessionKeys {
    /// RFC 3711 §4.3 with a key derivation rate of 0: `labels` are (cipher, auth, salt).
    fn derive(master: &MasterKey, labels: [u8; 3]) -> Result<SessionKeys, SrtpError> {
        let master_cipher = ctr_key(master.key())?;
        let mut cipher = [0u8; KEY_LEN];
        let mut auth = [0u8; AUTH_KEY_LEN];
        let mut salt = [0u8; SALT_LEN];
        let out: [&mut [u8]; 3] = [&mut cipher, &mut auth, &mut salt];
        for (label, out) in labels.into_iter().zip(out) {
            let mut iv = [0u8; 16];
            iv[..SALT_LEN].copy_from_slice(master.salt());
            iv[7] ^= label;
            keystream_xor(&master_cipher, iv, out)?;
        }
        Ok(SessionKeys {
            cipher: ctr_key(&cipher)?,
            auth: hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &auth),
            salt,
        })
    }

    /// The counter block of packet `index` of `ssrc` (RFC 3711 §4.1.1).
    fn iv(&self, ssrc: u32, index: u64) -> [u8; 16] {
        let mut iv = [0u8; 16];
        iv[..SALT_LEN].copy_from_slice(&self.salt);
        for (b, s) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
            *b ^= s;
        }
        for (b, i) in iv[8..14].iter_mut().zip(&index.to_be_bytes()[2..]) {
            *b ^= i;
        }
        iv
    }

    fn tag(&self, parts: &[&[u8]]) -> [u8; TAG_LEN] {
        let mut ctx = hmac::Context::with_key(&self.auth);
        for p in parts {
            ctx.update(p);
        }
        let full = ctx.sign();
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&full.as_ref()[..TAG_LEN]);
        tag
    }
}

fn ctr_key(key: &[u8]) -> Result<EncryptingKey, SrtpError> {
    let key = UnboundCipherKey::new(&AES_128, key).map_err(|_| SrtpError::Crypto)?;
    EncryptingKey::ctr(key).map_err(|_| SrtpError::Crypto)
}

/// XORs `data` with the AES-CM keystream that starts at counter block `iv`.
fn keystream_xor(key: &EncryptingKey, iv: [u8; 16], data: &mut [u8]) -> Result<(), SrtpError> {
    if data.is_empty() {
        return Ok(());
    }
    key.less_safe_encrypt(data, EncryptionContext::Iv128(iv.into()))
        .map(|_| ())
        .map_err(|_| SrtpError::Crypto)
}

/// Where the packets of one SSRC stand: the rollover counter, the highest sequence
/// number, and which of the 64 packets below it arrived.
#[derive(Debug, Clone, Copy)]
struct Stream {
    ssrc: u32,
    roc: u32,
    highest_seq: u16,
    seen: u64,
}

impl Stream {
    fn highest(&self) -> u64 {
        (u64::from(self.roc) << 16) | u64::from(self.highest_seq)
    }

    /// The rollover counter a received `seq` most likely belongs to (RFC 3711 App. A).
    fn guess_roc(&self, seq: u16) -> u32 {
        let (s_l, seq) = (i32::from(self.highest_seq), i32::from(seq));
        if s_l < 32768 {
            if seq - s_l > 32768 {
                self.roc.wrapping_sub(1)
            } else {
                self.roc
            }
        } else if s_l - 32768 > seq {
            self.roc.wrapping_add(1)
        } else {
            self.roc
        }
    }

    fn is_replay(&self, index: u64) -> bool {
        let highest = self.highest();
        index <= highest && (highest - index >= REPLAY_WINDOW || self.seen & (1 << (highest - index)) != 0)
    }

    /// Records an authenticated packet.
    fn accept(&mut self, index: u64) {
        let highest = self.highest();
        if index > highest {
            let ahead = index - highest;
            self.seen = if ahead >= REPLAY_WINDOW {
                0
            } else {
                self.seen << ahead
            };
            self.seen |= 1;
            self.roc = (index >> 16) as u32;
            self.highest_seq = index as u16;
        } else {
            self.seen |= 1 << (highest - index);
        }
    }
}

/// One direction's SRTP and SRTCP state.
pub struct SrtpContext {
    rtp: SessionKeys,
    rtcp: SessionKeys,
    /// The stream we protect (one SSRC at a time).
    stream: Option<Stream>,
    /// The streams we unprotect, least recently heard first: a far end may use more
    /// than one SSRC under its key (after a re-INVITE, a transfer); at most
    /// [`MAX_STREAMS`], the oldest forgotten beyond.
    received: Vec<Stream>,
    /// Our SRTCP index (sending), or the far end's highest and window (receiving).
    rtcp_index: u32,
    rtcp_seen: u64,
}

impl fmt::Debug for SrtpContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpContext")
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

impl SrtpContext {
    pub fn new(master: &MasterKey) -> Result<SrtpContext, SrtpError> {
        Ok(SrtpContext {
            rtp: SessionKeys::derive(master, [0, 1, 2])?,
            rtcp: SessionKeys::derive(master, [3, 4, 5])?,
            stream: None,
            received: Vec::new(),
            rtcp_index: 0,
            rtcp_seen: 0,
        })
    }

    /// Encrypts and signs an RTP packet of ours into `out`.
    pub fn protect_rtp(&mut self, packet: &[u8], out: &mut Vec<u8>) -> Result<(), SrtpError> {
        let header = header_len(packet).ok_or(SrtpError::Malformed)?;
        let (seq, ssrc) = seq_and_ssrc(packet);
        let (stream, fresh) = match self.stream {
            Some(s) if s.ssrc == ssrc => (s, false),
            _ => (
                Stream {
                    ssrc,
                    roc: 0,
                    highest_seq: seq,
                    seen: 0,
                },
                true,
            ),
        };
        // what we send only goes forward: a smaller sequence number has wrapped (a
        // keystream is never used twice, however far the numbering jumped)
        let roc = match seq.cmp(&stream.highest_seq) {
            _ if fresh => stream.roc,
            std::cmp::Ordering::Greater => stream.roc,
            std::cmp::Ordering::Less => stream.roc.checked_add(1).ok_or(SrtpError::Crypto)?,
            std::cmp::Ordering::Equal => return Err(SrtpError::Replay),
        };
        let index = (u64::from(roc) << 16) | u64::from(seq);
        out.clear();
        out.extend_from_slice(packet);
        keystream_xor(&self.rtp.cipher, self.rtp.iv(ssrc, index), &mut out[header..])?;
        let tag = self.rtp.tag(&[out, &roc.to_be_bytes()]);
        out.extend_from_slice(&tag);
        self.stream = Some(Stream {
            roc,
            highest_seq: seq,
            ..stream
        });
        Ok(())
    }

    /// Checks and decrypts an SRTP packet of the far end into `out` (plain RTP).
    pub fn unprotect_rtp(&mut self, packet: &[u8], out: &mut Vec<u8>) -> Result<(), SrtpError> {
        let body_len = packet.len().checked_sub(TAG_LEN).ok_or(SrtpError::Malformed)?;
        let (body, tag) = packet.split_at(body_len);
        let header = header_len(body).ok_or(SrtpError::Malformed)?;
        let (seq, ssrc) = seq_and_ssrc(body);
        let at = self.received.iter().position(|s| s.ssrc == ssrc);
        let known = at.and_then(|i| self.received.get(i).copied());
        let roc = known.map_or(0, |s| s.guess_roc(seq));
        let index = (u64::from(roc) << 16) | u64::from(seq);
        if known.is_some_and(|s| s.is_replay(index)) {
            return Err(SrtpError::Replay);
        }
        let expected = self.rtp.tag(&[body, &roc.to_be_bytes()]);
        verify_slices_are_equal(&expected, tag).map_err(|_| SrtpError::Auth)?;
        out.clear();
        out.extend_from_slice(body);
        keystream_xor(&self.rtp.cipher, self.rtp.iv(ssrc, index), &mut out[header..])?;
        let mut stream = known.unwrap_or(Stream {
            ssrc,
            roc,
            highest_seq: seq,
            seen: 0,
        });
        stream.accept(index);
        match at {
            Some(i) => {
                self.received.remove(i);
            }
            None if self.received.len() >= MAX_STREAMS => {
                self.received.remove(0);
            }
            None => {}
        }
        self.received.push(stream);
        Ok(())
    }

    /// Encrypts and signs an RTCP compound packet of ours into `out`.
    pub fn protect_rtcp(&mut self, packet: &[u8], out: &mut Vec<u8>) -> Result<(), SrtpError> {
        if packet.len() < 8 {
            return Err(SrtpError::Malformed);
        }
        let ssrc = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
        let index = self.rtcp_index;
        self.rtcp_index = (index + 1) & 0x7fff_ffff;
        out.clear();
        out.extend_from_slice(packet);
        keystream_xor(
            &self.rtcp.cipher,
            self.rtcp.iv(ssrc, u64::from(index)),
            &mut out[8..],
        )?;
        out.extend_from_slice(&(index | 0x8000_0000).to_be_bytes());
        let tag = self.rtcp.tag(&[out]);
        out.extend_from_slice(&tag);
        Ok(())
    }

    /// Checks and decrypts an SRTCP packet of the far end into `out` (plain RTCP).
    pub fn unprotect_rtcp(&mut self, packet: &[u8], out: &mut Vec<u8>) -> Result<(), SrtpError> {
        let signed_len = packet.len().checked_sub(TAG_LEN).ok_or(SrtpError::Malformed)?;
        let (signed, tag) = packet.split_at(signed_len);
        let body_len = signed
            .len()
            .checked_sub(4)
            .filter(|n| *n >= 8)
            .ok_or(SrtpError::Malformed)?;
        let (body, trailer) = signed.split_at(body_len);
        let e_index = u32::from_be_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
        let (encrypted, index) = (e_index & 0x8000_0000 != 0, e_index & 0x7fff_ffff);
        let highest = self.rtcp_index;
        let replay = self.rtcp_seen != 0
            && index <= highest
            && (highest - index >= REPLAY_WINDOW as u32 || self.rtcp_seen & (1 << (highest - index)) != 0);
        if replay {
            return Err(SrtpError::Replay);
        }
        let expected = self.rtcp.tag(&[signed]);
        verify_slices_are_equal(&expected, tag).map_err(|_| SrtpError::Auth)?;
        let ssrc = u32::from_be_bytes([body[4], body[5], body[6], body[7]]);
        out.clear();
        out.extend_from_slice(body);
        if encrypted {
            keystream_xor(
                &self.rtcp.cipher,
                self.rtcp.iv(ssrc, u64::from(index)),
                &mut out[8..],
            )?;
        }
        if self.rtcp_seen == 0 || index > highest {
            let ahead = if self.rtcp_seen == 0 {
                REPLAY_WINDOW as u32
            } else {
                index - highest
            };
            self.rtcp_seen = if ahead >= REPLAY_WINDOW as u32 {
                0
            } else {
                self.rtcp_seen << ahead
            };
            self.rtcp_seen |= 1;
            self.rtcp_index = index;
        } else {
            self.rtcp_seen |= 1 << (highest - index);
        }
        Ok(())
    }
}

/// The length of an RTP header with its CSRCs and extension; None if it is not RTP.
fn header_len(packet: &[u8]) -> Option<usize> {
    let first = *packet.first()?;
    if packet.len() < 12 || first >> 6 != 2 {
        return None;
    }
    let mut len = 12 + 4 * usize::from(first & 0x0f);
    if first & 0x10 != 0 {
        let ext = packet.get(len..len + 4)?;
        len += 4 + 4 * usize::from(u16::from_be_bytes([ext[2], ext[3]]));
    }
    (len <= packet.len()).then_some(len)
}

/// Sequence number and SSRC of a packet [`header_len`] accepted.
fn seq_and_ssrc(packet: &[u8]) -> (u16, u32) {
    (
        u16::from_be_bytes([packet[2], packet[3]]),
        u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn master(key: &str, salt: &str) -> MasterKey {
        MasterKey::new([hex(key), hex(salt)].concat().try_into().unwrap())
    }

    fn rtp(seq: u16, ssrc: u32, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, 0];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&u32::from(seq).wrapping_mul(160).to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    /// RFC 3711 B.3: the session keys of a master key.
    #[test]
    fn key_derivation_matches_rfc_3711_b3() {
        let m = master("E1F97A0D3E018BE0D64FA32C06DE4139", "0EC675AD498AFEEBB6960B3AABE6");
        let keys = SessionKeys::derive(&m, [0, 1, 2]).unwrap();
        assert_eq!(keys.salt.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE1"));
        // the cipher key: its keystream from a zero IV equals that of the expected key
        let expected = ctr_key(&hex("C61E7A93744F39EE10734AFE3FF7A087")).unwrap();
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        keystream_xor(&keys.cipher, [0; 16], &mut a).unwrap();
        keystream_xor(&expected, [0; 16], &mut b).unwrap();
        assert_eq!(a, b);
        let auth = hmac::Key::new(
            hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            &hex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4"),
        );
        assert_eq!(
            hmac::sign(&keys.auth, b"x").as_ref(),
            hmac::sign(&auth, b"x").as_ref()
        );
    }

    /// RFC 3711 B.2: the AES-CM keystream of a session key and salt.
    #[test]
    fn keystream_matches_rfc_3711_b2() {
        let key = ctr_key(&hex("2B7E151628AED2A6ABF7158809CF4F3C")).unwrap();
        let mut iv = [0u8; 16];
        iv[..14].copy_from_slice(&hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD"));
        let mut block = [0u8; 16];
        keystream_xor(&key, iv, &mut block).unwrap();
        assert_eq!(block.to_vec(), hex("E03EAD0935C95E80E166B16DD92B4EB4"));
    }

    #[test]
    fn what_one_side_protects_the_other_reads_once() {
        let key = MasterKey::random().unwrap();
        let (mut tx, mut rx) = (SrtpContext::new(&key).unwrap(), SrtpContext::new(&key).unwrap());
        let (mut wire, mut plain) = (Vec::new(), Vec::new());
        let late = rtp(65533, 0x1234, b"late");
        let mut late_wire = Vec::new();
        for seq in [65530u16, 65531, 65533, 65535, 0, 1, 2] {
            let packet = rtp(seq, 0x1234, &[seq as u8; 160]);
            if seq == 65533 {
                // sent now, delivered late
                tx.protect_rtp(&late, &mut late_wire).unwrap();
                continue;
            }
            tx.protect_rtp(&packet, &mut wire).unwrap();
            assert_eq!(wire.len(), packet.len() + TAG_LEN);
            assert_ne!(&wire[12..172], &packet[12..], "the payload is encrypted");
            rx.unprotect_rtp(&wire, &mut plain).unwrap();
            assert_eq!(plain, packet, "seq {seq}: through the rollover");
            assert_eq!(rx.unprotect_rtp(&wire, &mut plain), Err(SrtpError::Replay));
        }
        // a late packet within the window is fine once, a forged or damaged one never
        rx.unprotect_rtp(&late_wire, &mut plain).unwrap();
        assert_eq!(plain, late);
        assert_eq!(rx.unprotect_rtp(&late_wire, &mut plain), Err(SrtpError::Replay));
        // a sender whose numbering jumped far ahead (a call parked a long time) or back
        // never uses an index twice
        let mut jumpy = SrtpContext::new(&key).unwrap();
        for seq in [10u16, 40_000, 5] {
            jumpy.protect_rtp(&rtp(seq, 7, b"x"), &mut wire).unwrap();
        }
        assert_eq!(jumpy.stream.map(|s| (s.roc, s.highest_seq)), Some((1, 5)));
        assert_eq!(
            jumpy.protect_rtp(&rtp(5, 7, b"x"), &mut wire),
            Err(SrtpError::Replay)
        );
        tx.protect_rtp(&rtp(4, 0x1234, b"new"), &mut wire).unwrap();
        let mut forged = wire.clone();
        forged[14] ^= 1;
        assert_eq!(rx.unprotect_rtp(&forged, &mut plain), Err(SrtpError::Auth));
        let other = SrtpContext::new(&MasterKey::random().unwrap())
            .unwrap()
            .protect_rtp(&rtp(3, 0x1234, b"x"), &mut wire);
        assert!(other.is_ok());
        assert_eq!(
            rx.unprotect_rtp(&wire, &mut plain),
            Err(SrtpError::Auth),
            "another key"
        );
        for junk in [&b""[..], b"\x80\x00", &[0u8; 30]] {
            assert_eq!(rx.unprotect_rtp(junk, &mut plain), Err(SrtpError::Malformed));
        }
    }

    #[test]
    fn a_far_end_with_two_ssrcs_keeps_both_and_an_old_packet_resets_neither() {
        let key = MasterKey::random().unwrap();
        let mut rx = SrtpContext::new(&key).unwrap();
        let (mut a, mut b) = (SrtpContext::new(&key).unwrap(), SrtpContext::new(&key).unwrap());
        let (mut wire, mut plain, mut first_of_a) = (Vec::new(), Vec::new(), Vec::new());
        // a goes past a rollover, b starts meanwhile, then a goes on
        for (i, seq) in [65_534u16, 65_535, 0, 1].into_iter().enumerate() {
            a.protect_rtp(&rtp(seq, 0xa, b"a"), &mut wire).unwrap();
            if i == 0 {
                first_of_a = wire.clone();
            }
            rx.unprotect_rtp(&wire, &mut plain).unwrap();
            b.protect_rtp(&rtp(100 + i as u16, 0xb, b"b"), &mut wire).unwrap();
            rx.unprotect_rtp(&wire, &mut plain).unwrap();
        }
        // a replayed packet of a is refused and a's state (rollover 1) is intact
        assert_eq!(rx.unprotect_rtp(&first_of_a, &mut plain), Err(SrtpError::Replay));
        a.protect_rtp(&rtp(2, 0xa, b"a"), &mut wire).unwrap();
        rx.unprotect_rtp(&wire, &mut plain).unwrap();
        assert_eq!(plain, rtp(2, 0xa, b"a"));
        // at most MAX_STREAMS are kept
        for ssrc in 0..10u32 {
            let mut c = SrtpContext::new(&key).unwrap();
            c.protect_rtp(&rtp(1, 0x100 + ssrc, b"c"), &mut wire).unwrap();
            rx.unprotect_rtp(&wire, &mut plain).unwrap();
        }
        assert_eq!(rx.received.len(), MAX_STREAMS);
    }

    #[test]
    fn rtcp_is_protected_with_its_index_and_read_once() {
        let key = MasterKey::random().unwrap();
        let (mut tx, mut rx) = (SrtpContext::new(&key).unwrap(), SrtpContext::new(&key).unwrap());
        let report = [
            0x80, 200, 0, 6, 0, 0, 0x12, 0x34, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18,
            19, 20,
        ];
        let (mut wire, mut plain) = (Vec::new(), Vec::new());
        for round in 0..3u32 {
            tx.protect_rtcp(&report, &mut wire).unwrap();
            assert_eq!(wire.len(), report.len() + 4 + TAG_LEN);
            assert_eq!(
                &wire[report.len()..report.len() + 4],
                &(round | 0x8000_0000).to_be_bytes()
            );
            rx.unprotect_rtcp(&wire, &mut plain).unwrap();
            assert_eq!(plain, report);
            assert_eq!(rx.unprotect_rtcp(&wire, &mut plain), Err(SrtpError::Replay));
        }
        tx.protect_rtcp(&report, &mut wire).unwrap();
        wire[9] ^= 0xff;
        assert_eq!(rx.unprotect_rtcp(&wire, &mut plain), Err(SrtpError::Auth));
        assert_eq!(
            rx.unprotect_rtcp(&[0u8; 12], &mut plain),
            Err(SrtpError::Malformed)
        );
    }

    #[test]
    fn sdes_key_parameters() {
        let key = MasterKey::random().unwrap();
        assert_eq!(MasterKey::from_inline(&key.to_inline()), Some(key));
        let b64 = key.to_inline();
        assert_eq!(MasterKey::from_inline(&format!("{b64}|2^31")), Some(key));
        for bad in [
            format!("{b64}|2^20"),
            format!("{b64}|2^31|1:4"),
            "inline:AAAA".to_owned(),
            "inline:!!!".to_owned(),
            b64.replace("inline:", "uri:"),
        ] {
            assert_eq!(MasterKey::from_inline(&bad), None, "{bad}");
        }
        assert_eq!(format!("{key:?}"), "MasterKey(<redacted>)");
    }
}
