//! DTMF as RTP telephone-events (RFC 4733): reading key presses out of a stream (one
//! per press, however many times its end packet is repeated), and generating them,
//! paced in time, for a stream we send.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The event code of a DTMF character (`0-9 * # A-D`).
pub fn event_of(digit: char) -> Option<u8> {
    Some(match digit.to_ascii_uppercase() {
        d @ '0'..='9' => d as u8 - b'0',
        '*' => 10,
        '#' => 11,
        d @ 'A'..='D' => d as u8 - b'A' + 12,
        _ => return None,
    })
}

/// The DTMF character of an event code (other telephone-events have none).
pub fn digit_of(event: u8) -> Option<char> {
    Some(match event {
        0..=9 => (b'0' + event) as char,
        10 => '*',
        11 => '#',
        12..=15 => (b'A' + event - 12) as char,
        _ => return None,
    })
}

/// One telephone-event payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    pub event: u8,
    pub end: bool,
    pub volume: u8,
    /// In units of the stream's RTP clock.
    pub duration: u16,
}

impl TelephoneEvent {
    pub fn parse(payload: &[u8]) -> Option<TelephoneEvent> {
        let b: &[u8; 4] = payload.get(..4)?.try_into().ok()?;
        Some(TelephoneEvent {
            event: b[0],
            end: b[1] & 0x80 != 0,
            volume: b[1] & 0x3f,
            duration: u16::from_be_bytes([b[2], b[3]]),
        })
    }

    pub fn to_bytes(self) -> [u8; 4] {
        let d = self.duration.to_be_bytes();
        [
            self.event,
            (u8::from(self.end) << 7) | (self.volume & 0x3f),
            d[0],
            d[1],
        ]
    }
}

/// Turns a stream of telephone-event packets into key presses.
#[derive(Debug, Default)]
pub struct DtmfDetector {
    /// RTP timestamp of the last event we reported (all its packets share it).
    last: Option<(u32, u8)>,
}

impl DtmfDetector {
    /// A telephone-event packet; returns the digit if it starts a new key press.
    pub fn on_packet(&mut self, rtp_timestamp: u32, payload: &[u8]) -> Option<char> {
        let ev = TelephoneEvent::parse(payload)?;
        if self.last == Some((rtp_timestamp, ev.event)) {
            return None; // continuation or repeated end of the same press
        }
        self.last = Some((rtp_timestamp, ev.event));
        digit_of(ev.event)
    }
}

/// A telephone-event packet to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPacket {
    pub payload: [u8; 4],
    pub marker: bool,
    /// Ticks of the stream's RTP clock from the event's start (the caller adds the
    /// timestamp it froze when the event began).
    pub first: bool,
}

#[derive(Debug, Clone, Copy)]
struct Active {
    event: u8,
    /// Packets sent so far.
    sent: u32,
    /// End packets sent so far (three in all).
    ends: u32,
}

/// Generates key presses: 100 ms tones, a packet every 20 ms, the end packet three
/// times, 60 ms between presses.
#[derive(Debug)]
pub struct DtmfSender {
    clock_rate: u32,
    queue: VecDeque<u8>,
    active: Option<Active>,
    next_at: Option<Instant>,
}

const PACKET_EVERY: Duration = Duration::from_millis(20);
const TONE_PACKETS: u32 = 5;
const END_PACKETS: u32 = 3;
const GAP: Duration = Duration::from_millis(60);

impl DtmfSender {
    pub fn new(clock_rate: u32) -> DtmfSender {
        DtmfSender {
            clock_rate,
            queue: VecDeque::new(),
            active: None,
            next_at: None,
        }
    }

    /// Queues digits; characters that are not DTMF are skipped.
    pub fn push(&mut self, now: Instant, digits: &str) {
        self.queue.extend(digits.chars().filter_map(event_of));
        if self.next_at.is_none() {
            self.next_at = Some(now);
        }
    }

    /// True while a press is being sent (the caller should not send audio then).
    pub fn is_busy(&self) -> bool {
        self.active.is_some()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_at
    }

    /// The next packet, if one is due at `now`.
    pub fn poll(&mut self, now: Instant) -> Option<EventPacket> {
        let due = self.next_at?;
        if now < due {
            return None;
        }
        let step = (self.clock_rate / 50) as u16; // ticks per 20 ms
        let mut a = match self.active {
            Some(a) => a,
            None => match self.queue.pop_front() {
                Some(event) => Active {
                    event,
                    sent: 0,
                    ends: 0,
                },
                None => {
                    self.next_at = None;
                    return None;
                }
            },
        };
        let first = a.sent == 0;
        let tone_done = a.sent + 1 >= TONE_PACKETS;
        let duration = step.saturating_mul((a.sent + 1).min(TONE_PACKETS) as u16);
        let end = tone_done;
        a.sent += 1;
        if end {
            a.ends += 1;
        }
        let packet = EventPacket {
            payload: TelephoneEvent {
                event: a.event,
                end,
                volume: 10,
                duration,
            }
            .to_bytes(),
            marker: first,
            first,
        };
        if end && a.ends >= END_PACKETS {
            self.active = None;
            self.next_at = Some(due + GAP);
        } else {
            self.active = Some(a);
            // the end packet is repeated right away, the tone every 20 ms
            self.next_at = Some(if end { due } else { due + PACKET_EVERY });
        }
        Some(packet)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_and_events() {
        for (c, e) in [('0', 0), ('9', 9), ('*', 10), ('#', 11), ('A', 12), ('d', 15)] {
            assert_eq!(event_of(c), Some(e));
            assert_eq!(digit_of(e), Some(c.to_ascii_uppercase()));
        }
        assert_eq!(event_of('x'), None);
        assert_eq!(digit_of(16), None);
    }

    #[test]
    fn one_press_per_event_however_often_the_end_repeats() {
        let mut d = DtmfDetector::default();
        let press = |ev: u8, dur: u16, end: bool| {
            TelephoneEvent {
                event: ev,
                end,
                volume: 10,
                duration: dur,
            }
            .to_bytes()
        };
        let mut got = Vec::new();
        for (ts, ev) in [(1000u32, 1u8), (2000, 2), (3000, 2)] {
            for dur in [160u16, 320, 480] {
                got.extend(d.on_packet(ts, &press(ev, dur, false)));
            }
            for _ in 0..3 {
                got.extend(d.on_packet(ts, &press(ev, 800, true)));
            }
        }
        assert_eq!(got, vec!['1', '2', '2']);
        assert_eq!(d.on_packet(4000, &[1, 2]), None, "short payload ignored");
    }

    #[test]
    fn sender_paces_presses() {
        let t0 = Instant::now();
        let mut s = DtmfSender::new(8000);
        s.push(t0, "1#");
        let mut packets = Vec::new();
        let mut now = t0;
        while let Some(at) = s.poll_timeout() {
            now = now.max(at);
            while let Some(p) = s.poll(now) {
                packets.push((now - t0, p));
            }
            if now - t0 > Duration::from_secs(2) {
                break;
            }
        }
        // per press: 5 tone packets (the 5th is the first end), then 2 more ends
        assert_eq!(packets.len(), 14);
        let first = TelephoneEvent::parse(&packets[0].1.payload).unwrap();
        assert_eq!((first.event, first.end, first.duration), (1, false, 160));
        assert!(packets[0].1.marker);
        let ends: Vec<_> = packets[..7]
            .iter()
            .map(|(_, p)| TelephoneEvent::parse(&p.payload).unwrap())
            .filter(|e| e.end)
            .collect();
        assert_eq!(ends.len(), 3);
        assert!(ends.iter().all(|e| e.duration == 800));
        let second = &packets[7];
        assert_eq!(TelephoneEvent::parse(&second.1.payload).unwrap().event, 11);
        assert!(second.1.marker);
        assert_eq!(second.0, Duration::from_millis(80 + 60));
        // a detector reads back exactly the two digits (timestamps differ per press)
        let mut d = DtmfDetector::default();
        let mut got = Vec::new();
        for (i, (_, p)) in packets.iter().enumerate() {
            let ts = if i < 7 { 0 } else { 1200 };
            got.extend(d.on_packet(ts, &p.payload));
        }
        assert_eq!(got, vec!['1', '#']);
    }
}
