//! What the gateway refused or dropped to protect itself, counted for `/metrics`: every
//! limit a peer can run into has a counter here, so an operator sees an attack (or a
//! limit set too low) instead of guessing. Two families: `sipline_refused_total{limit}`
//! for requests and connections turned away by a limit, and `sipline_dropped_total{what}`
//! for traffic thrown away. Counts the SIP core keeps itself (untrusted INVITEs,
//! stateless answers) are added at scrape time from its stats.

use std::sync::atomic::{AtomicU64, Ordering};

/// One counter: its family, its label value and what it counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    HttpConnections,
    HttpConnectionsPerIp,
    HttpUnfinishedRequest,
    SipTcpConnections,
    SipTcpConnectionsPerIp,
    SipTcpIdle,
    SipTcpSlowReader,
    /// An outgoing SIP connection (TCP, or TLS: a certificate that did not verify) failed.
    SipConnectFailed,
    Sessions,
    SessionsPerIp,
    SessionLength,
    Calls,
    Draining,
    PoolUnavailable,
    ResumeToken,
    RequestRate,
    Candidates,
    FrameTooBig,
    DialPolicy,
    /// `call {headers}` with a header not allowed, or a bad value.
    CallHeaders,
    WaitingReplies,
    RtpForeignSource,
    RtcpForeignSource,
    /// SRTP/SRTCP from the far end that failed authentication or replayed.
    Srtp,
    LogLines,
}

impl Counter {
    pub const ALL: [Counter; 25] = [
        Counter::HttpConnections,
        Counter::HttpConnectionsPerIp,
        Counter::HttpUnfinishedRequest,
        Counter::SipTcpConnections,
        Counter::SipTcpConnectionsPerIp,
        Counter::SipTcpIdle,
        Counter::SipTcpSlowReader,
        Counter::SipConnectFailed,
        Counter::Sessions,
        Counter::SessionsPerIp,
        Counter::SessionLength,
        Counter::Calls,
        Counter::Draining,
        Counter::PoolUnavailable,
        Counter::ResumeToken,
        Counter::RequestRate,
        Counter::Candidates,
        Counter::FrameTooBig,
        Counter::DialPolicy,
        Counter::CallHeaders,
        Counter::WaitingReplies,
        Counter::RtpForeignSource,
        Counter::RtcpForeignSource,
        Counter::Srtp,
        Counter::LogLines,
    ];

    /// (family, label value).
    pub fn name(self) -> (Family, &'static str) {
        use Family::{Dropped, Refused};
        match self {
            Counter::HttpConnections => (Refused, "http_connections"),
            Counter::HttpConnectionsPerIp => (Refused, "http_connections_per_ip"),
            Counter::HttpUnfinishedRequest => (Dropped, "http_unfinished_request"),
            Counter::SipTcpConnections => (Refused, "sip_tcp_connections"),
            Counter::SipTcpConnectionsPerIp => (Refused, "sip_tcp_connections_per_ip"),
            Counter::SipTcpIdle => (Dropped, "sip_tcp_idle"),
            Counter::SipTcpSlowReader => (Dropped, "sip_tcp_slow_reader"),
            Counter::SipConnectFailed => (Dropped, "sip_connect_failed"),
            Counter::Sessions => (Refused, "sessions"),
            Counter::SessionsPerIp => (Refused, "sessions_per_ip"),
            Counter::Calls => (Refused, "calls"),
            Counter::Draining => (Refused, "draining"),
            Counter::PoolUnavailable => (Refused, "pool_unavailable"),
            Counter::ResumeToken => (Refused, "resume_token"),
            Counter::SessionLength => (Refused, "session_length"),
            Counter::RequestRate => (Refused, "request_rate"),
            Counter::Candidates => (Refused, "candidates"),
            Counter::FrameTooBig => (Refused, "frame_too_big"),
            Counter::DialPolicy => (Refused, "dial_policy"),
            Counter::CallHeaders => (Refused, "call_headers"),
            Counter::WaitingReplies => (Refused, "waiting_replies"),
            Counter::RtpForeignSource => (Dropped, "rtp_foreign_source"),
            Counter::Srtp => (Dropped, "srtp"),
            Counter::RtcpForeignSource => (Dropped, "rtcp_foreign_source"),
            Counter::LogLines => (Dropped, "log_lines"),
        }
    }
}

/// The two counter families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    Refused,
    Dropped,
}

impl Family {
    pub fn metric(self) -> &'static str {
        match self {
            Family::Refused => "sipline_refused_total",
            Family::Dropped => "sipline_dropped_total",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Family::Refused => "limit",
            Family::Dropped => "what",
        }
    }

    pub fn help(self) -> &'static str {
        match self {
            Family::Refused => "Connections and requests refused by a limit (see docs/security.md).",
            Family::Dropped => "Traffic dropped to protect the gateway (see docs/security.md).",
        }
    }
}

static VALUES: [AtomicU64; Counter::ALL.len()] = [const { AtomicU64::new(0) }; Counter::ALL.len()];

fn index(c: Counter) -> usize {
    Counter::ALL.iter().position(|x| *x == c).unwrap_or(0)
}

pub fn add(c: Counter, n: u64) {
    VALUES[index(c)].fetch_add(n, Ordering::Relaxed);
}

pub fn inc(c: Counter) {
    add(c, 1);
}

pub fn get(c: Counter) -> u64 {
    VALUES[index(c)].load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_has_its_own_label() {
        let mut seen = std::collections::HashSet::new();
        for c in Counter::ALL {
            assert!(seen.insert(c.name()), "{c:?} shares its name");
            assert_eq!(Counter::ALL[index(c)], c);
        }
    }
}
