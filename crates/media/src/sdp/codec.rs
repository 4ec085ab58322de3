//! The audio codecs sipline can negotiate, and how SDP names them.
//!
//! An SDP media line lists payload type numbers; what a number means comes from an
//! `a=rtpmap` line, or for the static types of RFC 3551 from the number itself. This
//! module is the one table that maps both ways between [`Codec`] and those names.

use std::fmt;

/// An audio format sipline can send and receive on the RTP leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// G.711 µ-law, static payload type 0.
    Pcmu,
    /// G.711 A-law, static payload type 8.
    Pcma,
    /// G.722, static payload type 9. Its RTP clock is 8000 Hz although it samples at
    /// 16 kHz: an error in RFC 1890 that RFC 3551 §4.5.2 kept for compatibility.
    G722,
    /// Opus (RFC 7587), dynamic payload type, always written `opus/48000/2`.
    Opus,
    /// DTMF digits as RTP events (RFC 4733), dynamic payload type,
    /// `telephone-event/8000`. Not a voice codec: it rides along with one.
    TelephoneEvent,
}

/// The dynamic payload type sipline uses for Opus unless configured otherwise (as
/// Chrome and Asterisk do).
pub const DEFAULT_OPUS_PAYLOAD_TYPE: u8 = 111;
/// The dynamic payload type sipline uses for telephone-event unless configured
/// otherwise (as Asterisk and FreeSWITCH do).
pub const DEFAULT_TELEPHONE_EVENT_PAYLOAD_TYPE: u8 = 101;

impl Codec {
    /// Every codec, for lookups.
    pub const ALL: [Codec; 5] = [
        Codec::Pcmu,
        Codec::Pcma,
        Codec::G722,
        Codec::Opus,
        Codec::TelephoneEvent,
    ];

    /// The encoding name as sipline writes it in `a=rtpmap` (compared case-insensitively
    /// when reading).
    pub const fn encoding_name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
            Codec::G722 => "G722",
            Codec::Opus => "opus",
            Codec::TelephoneEvent => "telephone-event",
        }
    }

    /// The RTP timestamp clock rate in Hz (which for G.722 is not its sampling rate).
    pub const fn clock_rate(self) -> u32 {
        match self {
            Codec::Pcmu | Codec::Pcma | Codec::G722 | Codec::TelephoneEvent => 8000,
            Codec::Opus => 48_000,
        }
    }

    /// Audio channels as signalled in SDP (Opus is always signalled as 2, RFC 7587 §7).
    pub const fn channels(self) -> u8 {
        match self {
            Codec::Opus => 2,
            _ => 1,
        }
    }

    /// The RFC 3551 static payload type, for codecs that have one.
    pub const fn static_payload_type(self) -> Option<u8> {
        match self {
            Codec::Pcmu => Some(0),
            Codec::Pcma => Some(8),
            Codec::G722 => Some(9),
            Codec::Opus | Codec::TelephoneEvent => None,
        }
    }

    /// The payload type sipline uses in its own offers: the static one, or the default
    /// dynamic one.
    pub const fn default_payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
            Codec::G722 => 9,
            Codec::Opus => DEFAULT_OPUS_PAYLOAD_TYPE,
            Codec::TelephoneEvent => DEFAULT_TELEPHONE_EVENT_PAYLOAD_TYPE,
        }
    }

    /// The `a=fmtp` parameters sipline writes for this codec, if any. For
    /// telephone-event they list the events we can receive: the 16 DTMF digits and
    /// flash (RFC 4733 §7.1.1).
    pub const fn fmtp(self) -> Option<&'static str> {
        match self {
            Codec::TelephoneEvent => Some("0-16"),
            _ => None,
        }
    }

    /// Whether this codec carries speech (every one but telephone-event).
    pub const fn is_voice(self) -> bool {
        !matches!(self, Codec::TelephoneEvent)
    }

    /// The codec a static payload type stands for when no `a=rtpmap` names it.
    pub fn from_static_payload_type(payload_type: u8) -> Option<Codec> {
        Codec::ALL
            .into_iter()
            .find(|codec| codec.static_payload_type() == Some(payload_type))
    }

    /// The codec an `a=rtpmap` value describes: the encoding name (any case) and clock
    /// rate must match, and the channel count if given (Opus without one is accepted,
    /// as some implementations write it).
    pub fn from_rtpmap(
        encoding_name: &str,
        clock_rate: u32,
        encoding_parameters: Option<&str>,
    ) -> Option<Codec> {
        let codec = Codec::ALL.into_iter().find(|codec| {
            codec.encoding_name().eq_ignore_ascii_case(encoding_name) && codec.clock_rate() == clock_rate
        })?;
        match encoding_parameters {
            None => Some(codec),
            Some(channels) => match channels.trim().parse::<u8>() {
                Ok(channels) if channels == codec.channels() => Some(codec),
                _ => None,
            },
        }
    }
}

/// As the value of an `a=rtpmap` after the payload type: `PCMU/8000`, `opus/48000/2`.
impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.encoding_name(), self.clock_rate())?;
        if self.channels() != 1 {
            write!(f, "/{}", self.channels())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_payload_types_are_recognised_without_rtpmap() {
        assert_eq!(Codec::from_static_payload_type(0), Some(Codec::Pcmu));
        assert_eq!(Codec::from_static_payload_type(8), Some(Codec::Pcma));
        assert_eq!(Codec::from_static_payload_type(9), Some(Codec::G722));
        // GSM (3) and G.729 (18) are static types we do not support.
        assert_eq!(Codec::from_static_payload_type(3), None);
        assert_eq!(Codec::from_static_payload_type(18), None);
        assert_eq!(Codec::from_static_payload_type(101), None);
    }

    #[test]
    fn rtpmap_names_are_case_insensitive() {
        assert_eq!(Codec::from_rtpmap("pcmu", 8000, None), Some(Codec::Pcmu));
        assert_eq!(Codec::from_rtpmap("PCMA", 8000, Some("1")), Some(Codec::Pcma));
        assert_eq!(Codec::from_rtpmap("g722", 8000, None), Some(Codec::G722));
        assert_eq!(Codec::from_rtpmap("OPUS", 48_000, Some("2")), Some(Codec::Opus));
        assert_eq!(
            Codec::from_rtpmap("Telephone-Event", 8000, None),
            Some(Codec::TelephoneEvent)
        );
    }

    #[test]
    fn rtpmap_clock_rate_and_channels_must_match() {
        // G.722's RTP clock is 8000; a 16000 rtpmap is some other stream.
        assert_eq!(Codec::from_rtpmap("G722", 16_000, None), None);
        // WebRTC's wideband DTMF clock is not ours.
        assert_eq!(Codec::from_rtpmap("telephone-event", 48_000, None), None);
        // Stereo G.711 is a different format.
        assert_eq!(Codec::from_rtpmap("PCMU", 8000, Some("2")), None);
        assert_eq!(Codec::from_rtpmap("opus", 48_000, Some("1")), None);
        assert_eq!(Codec::from_rtpmap("opus", 48_000, None), Some(Codec::Opus));
        assert_eq!(Codec::from_rtpmap("opus", 48_000, Some("x")), None);
        assert_eq!(Codec::from_rtpmap("G729", 8000, None), None);
    }

    #[test]
    fn displays_as_rtpmap_value() {
        assert_eq!(Codec::Pcmu.to_string(), "PCMU/8000");
        assert_eq!(Codec::G722.to_string(), "G722/8000");
        assert_eq!(Codec::Opus.to_string(), "opus/48000/2");
        assert_eq!(Codec::TelephoneEvent.to_string(), "telephone-event/8000");
    }

    #[test]
    fn default_payload_types() {
        assert_eq!(Codec::Pcmu.default_payload_type(), 0);
        assert_eq!(Codec::Pcma.default_payload_type(), 8);
        assert_eq!(Codec::G722.default_payload_type(), 9);
        assert_eq!(Codec::Opus.default_payload_type(), 111);
        assert_eq!(Codec::TelephoneEvent.default_payload_type(), 101);
        assert!(
            Codec::ALL
                .iter()
                .filter(|c| !c.is_voice())
                .eq([&Codec::TelephoneEvent])
        );
    }
}
