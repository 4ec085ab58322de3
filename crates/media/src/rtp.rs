//! RTP packets (RFC 3550 §5) on the plain SIP leg: parsing what the far end sends and
//! writing what we send. Only the fixed header matters to a relay; CSRCs, header
//! extensions and padding are skipped on input and never produced.
//!
//! Hand-written: the header is twelve bytes, and the crates that parse it come with a
//! whole WebRTC stack around them. Every length is checked; bad packets are errors.

use std::fmt;

/// A parsed RTP packet (borrowing the datagram).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    pub marker: bool,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub payload: &'a [u8],
}

/// Why a datagram is not an RTP packet we can use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpError(&'static str);

impl fmt::Display for RtpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad RTP packet: {}", self.0)
    }
}

impl std::error::Error for RtpError {}

/// Is this datagram RTCP rather than RTP (RFC 5761 §4: PT 64–95 of the second byte)?
pub fn looks_like_rtcp(data: &[u8]) -> bool {
    data.len() >= 2 && data[0] >> 6 == 2 && (192..=223).contains(&data[1])
}

impl<'a> RtpPacket<'a> {
    pub fn parse(data: &'a [u8]) -> Result<RtpPacket<'a>, RtpError> {
        let header: &[u8; 12] = data
            .get(..12)
            .and_then(|h| h.try_into().ok())
            .ok_or(RtpError("shorter than 12 bytes"))?;
        if header[0] >> 6 != 2 {
            return Err(RtpError("version is not 2"));
        }
        let padding = header[0] & 0x20 != 0;
        let extension = header[0] & 0x10 != 0;
        let csrc_count = usize::from(header[0] & 0x0f);
        let mut offset = 12 + 4 * csrc_count;
        if extension {
            let ext = data
                .get(offset..offset + 4)
                .ok_or(RtpError("truncated header extension"))?;
            let words = usize::from(u16::from_be_bytes([ext[2], ext[3]]));
            offset += 4 + 4 * words;
        }
        let mut end = data.len();
        if padding {
            let pad = usize::from(*data.last().ok_or(RtpError("empty"))?);
            if pad == 0 || pad > end.saturating_sub(offset) {
                return Err(RtpError("bad padding"));
            }
            end -= pad;
        }
        let payload = data
            .get(offset..end)
            .ok_or(RtpError("header longer than packet"))?;
        Ok(RtpPacket {
            marker: header[1] & 0x80 != 0,
            payload_type: header[1] & 0x7f,
            sequence: u16::from_be_bytes([header[2], header[3]]),
            timestamp: u32::from_be_bytes([header[4], header[5], header[6], header[7]]),
            ssrc: u32::from_be_bytes([header[8], header[9], header[10], header[11]]),
            payload,
        })
    }

    /// Serialises into `out` (cleared first): a 12-byte header and the payload.
    pub fn write_into(&self, out: &mut Vec<u8>) {
        out.clear();
        out.reserve(12 + self.payload.len());
        out.push(0x80);
        out.push((u8::from(self.marker) << 7) | (self.payload_type & 0x7f));
        out.extend_from_slice(&self.sequence.to_be_bytes());
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        out.extend_from_slice(self.payload);
    }

    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.write_into(&mut v);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let p = RtpPacket {
            marker: true,
            payload_type: 101,
            sequence: 65535,
            timestamp: 0xdead_beef,
            ssrc: 42,
            payload: &[1, 2, 3],
        };
        let bytes = p.to_vec();
        assert_eq!(bytes.len(), 15);
        assert_eq!(RtpPacket::parse(&bytes).unwrap(), p);
        assert!(!looks_like_rtcp(&bytes));
    }

    #[test]
    fn skips_csrcs_extensions_and_padding() {
        let mut b = vec![0xb1, 0x00, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3]; // P, X, CC=1
        b.extend_from_slice(&[9, 9, 9, 9]); // CSRC
        b.extend_from_slice(&[0xbe, 0xde, 0, 1, 7, 7, 7, 7]); // one-word extension
        b.extend_from_slice(&[0xaa, 0xbb]); // payload
        b.extend_from_slice(&[0, 0, 3]); // padding of 3
        let p = RtpPacket::parse(&b).unwrap();
        assert_eq!(p.payload, &[0xaa, 0xbb]);
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            &[][..],
            &[0x80; 11][..],
            &[0x40, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0][..],
            &[0x8f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0][..],
            &[0x90, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xbe, 0xde][..],
            &[0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5][..],
            &[0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0][..],
        ] {
            assert!(RtpPacket::parse(bad).is_err(), "{bad:?}");
        }
        assert!(looks_like_rtcp(&[0x80, 200, 0, 6]));
    }
}
