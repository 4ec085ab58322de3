//! Media direction (RFC 3264 §5.1, §6.1): who may send to whom on a stream.
//!
//! Directions are always seen from the side that wrote them: an offer's `sendonly`
//! means "I will send, not receive", so the answer says `recvonly`. Hold is expressed
//! this way too, which is why both sides of a negotiation reason in terms of
//! [`Direction::reversed`] and [`Direction::intersection`].

/// The direction attribute of a media stream, from the writer's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Direction {
    /// `a=sendrecv`, also what a stream without a direction attribute means.
    #[default]
    SendRecv,
    /// `a=sendonly`: the writer sends and does not want to receive (e.g. it holds).
    SendOnly,
    /// `a=recvonly`: the writer receives and will not send.
    RecvOnly,
    /// `a=inactive`: neither.
    Inactive,
}

impl Direction {
    /// The direction that allows exactly these capabilities.
    pub const fn from_capabilities(sends: bool, receives: bool) -> Direction {
        match (sends, receives) {
            (true, true) => Direction::SendRecv,
            (true, false) => Direction::SendOnly,
            (false, true) => Direction::RecvOnly,
            (false, false) => Direction::Inactive,
        }
    }

    /// Whether the writer may send media.
    pub const fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether the writer wants to receive media.
    pub const fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    /// The same stream seen from the other end: the far end's `sendonly` is our
    /// `recvonly`.
    pub const fn reversed(self) -> Direction {
        Direction::from_capabilities(self.receives(), self.sends())
    }

    /// What both allow: sending only if both allow sending, receiving likewise. Used
    /// as `ours.intersection(theirs.reversed())` to find what we may do.
    pub const fn intersection(self, other: Direction) -> Direction {
        Direction::from_capabilities(self.sends() && other.sends(), self.receives() && other.receives())
    }

    /// The attribute as written in SDP, `a=` excluded.
    pub const fn attribute_name(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// The direction an attribute name stands for (any case), if it is one.
    pub fn from_attribute_name(name: &str) -> Option<Direction> {
        [
            Direction::SendRecv,
            Direction::SendOnly,
            Direction::RecvOnly,
            Direction::Inactive,
        ]
        .into_iter()
        .find(|direction| direction.attribute_name().eq_ignore_ascii_case(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Direction; 4] = [
        Direction::SendRecv,
        Direction::SendOnly,
        Direction::RecvOnly,
        Direction::Inactive,
    ];

    #[test]
    fn reversed_swaps_send_and_receive() {
        assert_eq!(Direction::SendRecv.reversed(), Direction::SendRecv);
        assert_eq!(Direction::SendOnly.reversed(), Direction::RecvOnly);
        assert_eq!(Direction::RecvOnly.reversed(), Direction::SendOnly);
        assert_eq!(Direction::Inactive.reversed(), Direction::Inactive);
        for direction in ALL {
            assert_eq!(direction.reversed().reversed(), direction);
        }
    }

    #[test]
    fn answering_a_hold() {
        // RFC 3264 §8.4: the far end holds with sendonly; willing to do anything, we
        // answer recvonly. Had we held too, the stream becomes inactive.
        let offer = Direction::SendOnly;
        assert_eq!(
            Direction::SendRecv.intersection(offer.reversed()),
            Direction::RecvOnly
        );
        assert_eq!(
            Direction::SendOnly.intersection(offer.reversed()),
            Direction::Inactive
        );
        assert_eq!(
            Direction::SendRecv.intersection(Direction::Inactive.reversed()),
            Direction::Inactive
        );
    }

    #[test]
    fn intersection_is_symmetric_and_sendrecv_is_neutral() {
        for a in ALL {
            assert_eq!(a.intersection(Direction::SendRecv), a);
            assert_eq!(a.intersection(Direction::Inactive), Direction::Inactive);
            for b in ALL {
                assert_eq!(a.intersection(b), b.intersection(a));
            }
        }
    }

    #[test]
    fn attribute_names_round_trip_in_any_case() {
        for direction in ALL {
            assert_eq!(
                Direction::from_attribute_name(direction.attribute_name()),
                Some(direction)
            );
            assert_eq!(
                Direction::from_attribute_name(&direction.attribute_name().to_uppercase()),
                Some(direction)
            );
            assert_eq!(
                Direction::from_capabilities(direction.sends(), direction.receives()),
                direction
            );
        }
        assert_eq!(Direction::from_attribute_name("rtcp-mux"), None);
        assert_eq!(Direction::default(), Direction::SendRecv);
    }
}
