//! Real-world SDP bodies, as the peers sipline meets write them, shared by the tests.
//! Addresses are moved to the documentation ranges; everything else is as captured
//! or as the tool's documentation shows it.

use std::net::{IpAddr, Ipv4Addr};

use super::{Codec, LocalCodec, LocalMedia};

/// Asterisk (chan_pjsip) answering an offer of PCMU, PCMA and telephone-event.
pub const ASTERISK_ANSWER: &str = "v=0\r
o=- 1894798170 1894798172 IN IP4 192.0.2.10\r
s=Asterisk\r
c=IN IP4 192.0.2.10\r
t=0 0\r
m=audio 12345 RTP/AVP 0 8 101\r
a=rtpmap:0 PCMU/8000\r
a=rtpmap:8 PCMA/8000\r
a=rtpmap:101 telephone-event/8000\r
a=fmtp:101 0-16\r
a=ptime:20\r
a=maxptime:150\r
a=sendrecv\r
";

/// FreeSWITCH 1.10 offering G.722 first, comfort noise, an explicit RTCP address, and
/// a disabled video stream.
pub const FREESWITCH_OFFER: &str = "v=0\r
o=FreeSWITCH 1700000000 1700000001 IN IP4 198.51.100.20\r
s=FreeSWITCH\r
c=IN IP4 198.51.100.20\r
t=0 0\r
m=audio 16384 RTP/AVP 9 0 8 101 13\r
a=rtpmap:9 G722/8000\r
a=rtpmap:0 PCMU/8000\r
a=rtpmap:8 PCMA/8000\r
a=rtpmap:101 telephone-event/8000\r
a=fmtp:101 0-16\r
a=rtpmap:13 CN/8000\r
a=ptime:20\r
a=sendrecv\r
a=rtcp:16385 IN IP4 198.51.100.20\r
m=video 0 RTP/AVP 31\r
";

/// baresip 1.0: a bandwidth line, a tool attribute, a port-only `a=rtcp`, SSRC and
/// label attributes.
pub const BARESIP_OFFER: &str = "v=0\r
o=- 1883963183 3069282213 IN IP4 192.0.2.77\r
s=-\r
c=IN IP4 192.0.2.77\r
t=0 0\r
a=tool:baresip 1.0.0\r
m=audio 10108 RTP/AVP 0 8 101\r
b=AS:64\r
a=rtpmap:0 PCMU/8000\r
a=rtpmap:8 PCMA/8000\r
a=rtpmap:101 telephone-event/8000\r
a=fmtp:101 0-15\r
a=rtcp:10109\r
a=sendrecv\r
a=label:1\r
a=ssrc:1226585478 cname:2bd8ed5c-2dc4-4cb0-a28a-1ba0f3c1c9c0\r
a=rtcp-rsize\r
";

/// SIPp's built-in uac scenario after keyword substitution (`[media_port]` is on line
/// 6), with the bare LF line endings of its XML source.
pub const SIPP_OFFER: &str = "v=0
o=user1 53655765 2353687637 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio 6000 RTP/AVP 0
a=rtpmap:0 PCMU/8000
";

/// A media-level `c=` that differs from the session-level one (media relays, SBCs).
pub const MEDIA_LEVEL_CONNECTION_OFFER: &str = "v=0\r
o=- 20518 0 IN IP4 203.0.113.1\r
s=-\r
c=IN IP4 203.0.113.1\r
t=0 0\r
m=audio 54400 RTP/AVP 0 101\r
c=IN IP4 198.51.100.7\r
a=rtpmap:0 PCMU/8000\r
a=rtpmap:101 telephone-event/8000\r
a=fmtp:101 0-16\r
";

/// Asterisk's re-INVITE putting the call on hold: same session, next version,
/// sendonly.
pub const HOLD_OFFER: &str = "v=0\r
o=- 1894798170 1894798173 IN IP4 192.0.2.10\r
s=Asterisk\r
c=IN IP4 192.0.2.10\r
t=0 0\r
m=audio 12345 RTP/AVP 0 8 101\r
a=rtpmap:0 PCMU/8000\r
a=rtpmap:8 PCMA/8000\r
a=rtpmap:101 telephone-event/8000\r
a=fmtp:101 0-16\r
a=ptime:20\r
a=sendonly\r
";

/// A peer that only has codecs sipline lacks (G.729, GSM, iLBC).
pub const UNSUPPORTED_CODECS_OFFER: &str = "v=0\r
o=- 3344 3344 IN IP4 203.0.113.40\r
s=-\r
c=IN IP4 203.0.113.40\r
t=0 0\r
m=audio 30000 RTP/AVP 18 3 97 101\r
a=rtpmap:18 G729/8000\r
a=fmtp:18 annexb=no\r
a=rtpmap:3 GSM/8000\r
a=rtpmap:97 iLBC/8000\r
a=fmtp:97 mode=30\r
a=rtpmap:101 telephone-event/8000\r
a=fmtp:101 0-16\r
a=sendrecv\r
";

/// A browser's offer: ICE, DTLS-SRTP, feedback profile, RTCP mux, Opus first.
pub const CHROME_OFFER: &str = "v=0\r
o=- 4611731400430051336 2 IN IP4 127.0.0.1\r
s=-\r
t=0 0\r
a=group:BUNDLE 0\r
a=extmap-allow-mixed\r
a=msid-semantic: WMS stream\r
m=audio 9 RTP/SAVPF 111 63 9 0 8 13 110 126\r
c=IN IP4 0.0.0.0\r
a=rtcp:9 IN IP4 0.0.0.0\r
a=ice-ufrag:2pWx\r
a=ice-pwd:KzFqG5bO1NEWc5cB0fE2kLi4\r
a=ice-options:trickle\r
a=fingerprint:sha-256 6B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r
a=setup:actpass\r
a=mid:0\r
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r
a=sendrecv\r
a=msid:stream track\r
a=rtcp-mux\r
a=rtpmap:111 opus/48000/2\r
a=rtcp-fb:111 transport-cc\r
a=fmtp:111 minptime=10;useinbandfec=1\r
a=rtpmap:63 red/48000/2\r
a=fmtp:63 111/111\r
a=rtpmap:9 G722/8000\r
a=rtpmap:0 PCMU/8000\r
a=rtpmap:8 PCMA/8000\r
a=rtpmap:13 CN/8000\r
a=rtpmap:110 telephone-event/48000\r
a=rtpmap:126 telephone-event/8000\r
a=ssrc:3735928559 cname:YZcxBwerFFm6GH69\r
";

/// Every sample, for tests that go through them all.
pub const ALL: [&str; 8] = [
    ASTERISK_ANSWER,
    FREESWITCH_OFFER,
    BARESIP_OFFER,
    SIPP_OFFER,
    MEDIA_LEVEL_CONNECTION_OFFER,
    HOLD_OFFER,
    UNSUPPORTED_CODECS_OFFER,
    CHROME_OFFER,
];

/// Our side with every codec: Opus, G.722, PCMU, PCMA, telephone-event.
pub fn local_media() -> LocalMedia {
    let mut local = LocalMedia::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 50)), 40_000, 4242);
    local.codecs = [
        Codec::Opus,
        Codec::G722,
        Codec::Pcmu,
        Codec::Pcma,
        Codec::TelephoneEvent,
    ]
    .into_iter()
    .map(LocalCodec::new)
    .collect();
    local
}
