//! File descriptors: the one resource every peer-driven thing (an HTTP connection, a
//! SIP-TCP connection, a call's RTP ports) draws from. At start the soft limit is raised
//! to the hard one (many systems start processes at 1024), and the HTTP and SIP-TCP
//! connection caps are fitted below it with room left for every RTP port and a reserve,
//! so that no flood of connections can leave a call without its sockets.

use crate::config::Settings;

/// Descriptors kept for everything else: log files, the epoll instance, the SIP and
/// PBX sockets, the listeners, name resolution.
pub const RESERVE: u64 = 256;

/// Raises the soft descriptor limit as far as allowed; returns the limit in force.
pub fn raise_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read or raise the file descriptor limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
        }
    }
}

/// Raises the limit, then shrinks the HTTP and SIP-TCP connection caps (in proportion)
/// if they would not leave room for every RTP port and the reserve.
pub fn fit(settings: &mut Settings) {
    let limit = raise_limit();
    let rtp = u64::from(settings.rtp_ports.end() - settings.rtp_ports.start()) + 1;
    let http = settings.http_limits.max_connections as u64;
    let sip = settings.sip_tcp.max_connections as u64;
    let Some((http_fit, sip_fit)) = fitted(limit, rtp, http, sip) else {
        tracing::debug!(limit, rtp, http, sip, "file descriptor budget fits");
        return;
    };
    tracing::warn!(
        limit,
        rtp_ports = rtp,
        "the file descriptor limit is too low for the configured connection caps: \
         http.max_connections {http} -> {http_fit}, sip.tcp_max_connections {sip} -> {sip_fit} \
         (raise the hard limit, e.g. LimitNOFILE in a systemd unit)"
    );
    settings.http_limits.max_connections = http_fit as usize;
    settings.http_limits.max_connections_per_ip =
        settings.http_limits.max_connections_per_ip.min(http_fit as usize);
    settings.sip_tcp.max_connections = sip_fit as usize;
    settings.sip_tcp.max_per_ip = settings.sip_tcp.max_per_ip.min(sip_fit as usize);
}

/// The caps shrunk to fit, or None if they fit as they are. Each keeps at least 16.
fn fitted(limit: u64, rtp: u64, http: u64, sip: u64) -> Option<(u64, u64)> {
    let room = limit.saturating_sub(rtp + RESERVE);
    if http + sip <= room {
        return None;
    }
    let http_fit = (room * http / (http + sip).max(1)).max(16);
    let sip_fit = room.saturating_sub(http_fit).max(16);
    Some((http_fit, sip_fit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_that_fit_are_left_alone() {
        assert_eq!(fitted(65_536, 1000, 2048, 1024), None);
    }

    #[test]
    fn caps_shrink_in_proportion_to_leave_room_for_rtp() {
        // 4096 descriptors, 1000 RTP ports, 256 reserved: 2840 for connections
        let (http, sip) = fitted(4096, 1000, 2048, 1024).unwrap();
        assert_eq!(http + sip, 2840);
        assert_eq!(http, 1893);
        // a hopeless limit still leaves a little of each
        assert_eq!(fitted(1024, 1000, 2048, 1024), Some((16, 16)));
    }

    #[test]
    fn raising_the_limit_never_lowers_it() {
        let before = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap().0;
        assert!(raise_limit() >= before);
    }
}
