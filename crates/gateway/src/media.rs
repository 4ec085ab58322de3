//! The RTP side of calls, as far as signalling needs it: a pool of RTP/RTCP port pairs
//! over `media.rtp_ports` (each lease holds its two bound UDP sockets and returns the
//! ports when dropped), and a call's ports while they wait for the media session
//! ([`ParkedPorts`]).

use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// Even/odd port pairs for calls.
#[derive(Debug)]
pub struct RtpPortPool {
    ip: IpAddr,
    range: RangeInclusive<u16>,
    state: Mutex<PoolState>,
}

#[derive(Debug)]
struct PoolState {
    in_use: BTreeSet<u16>,
    /// Where the next search starts: ports are handed out round-robin so a port just
    /// released is not reused at once (late packets of the old call).
    cursor: u16,
}

impl RtpPortPool {
    pub fn new(ip: IpAddr, range: RangeInclusive<u16>) -> Arc<RtpPortPool> {
        let first = even_at_or_after(*range.start());
        Arc::new(RtpPortPool {
            ip,
            state: Mutex::new(PoolState {
                in_use: BTreeSet::new(),
                cursor: first,
            }),
            range,
        })
    }

    fn state(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Pairs the range can hold.
    pub fn capacity(&self) -> usize {
        let first = even_at_or_after(*self.range.start()) as usize;
        let last = *self.range.end() as usize;
        if last < first + 1 {
            0
        } else {
            (last - first).div_ceil(2)
        }
    }

    pub fn in_use(&self) -> usize {
        self.state().in_use.len()
    }

    /// Binds the next free pair (skipping ports something else holds).
    pub fn allocate(self: &Arc<Self>) -> io::Result<RtpPorts> {
        let first = even_at_or_after(*self.range.start());
        let last = *self.range.end();
        let pairs = self.capacity();
        let mut state = self.state();
        for _ in 0..pairs {
            let port = state.cursor;
            state.cursor = if port.saturating_add(3) > last {
                first
            } else {
                port + 2
            };
            if state.in_use.contains(&port) {
                continue;
            }
            let Ok(rtp) = std::net::UdpSocket::bind(SocketAddr::new(self.ip, port)) else {
                continue;
            };
            let Ok(rtcp) = std::net::UdpSocket::bind(SocketAddr::new(self.ip, port + 1)) else {
                continue;
            };
            rtp.set_nonblocking(true)?;
            rtcp.set_nonblocking(true)?;
            let rtp_tx = rtp.try_clone()?;
            let rtcp_tx = rtcp.try_clone()?;
            state.in_use.insert(port);
            return Ok(RtpPorts {
                rtp: Arc::new(UdpSocket::from_std(rtp)?),
                rtcp: Arc::new(UdpSocket::from_std(rtcp)?),
                rtp_tx: Arc::new(rtp_tx),
                rtcp_tx: Arc::new(rtcp_tx),
                port,
                pool: Arc::clone(self),
            });
        }
        Err(io::Error::new(io::ErrorKind::AddrInUse, "no free RTP port pair"))
    }
}

fn even_at_or_after(p: u16) -> u16 {
    if p.is_multiple_of(2) {
        p
    } else {
        p.saturating_add(1)
    }
}

/// A bound RTP/RTCP pair, returned to the pool on drop. Receive with the tokio
/// sockets; send with the plain ones (a UDP send never waits, and tokio's `try_send`
/// refuses until the reactor has seen the socket writable, which loses first packets).
#[derive(Debug)]
pub struct RtpPorts {
    pub rtp: Arc<UdpSocket>,
    pub rtcp: Arc<UdpSocket>,
    pub rtp_tx: Arc<std::net::UdpSocket>,
    pub rtcp_tx: Arc<std::net::UdpSocket>,
    pub port: u16,
    pool: Arc<RtpPortPool>,
}

impl Drop for RtpPorts {
    fn drop(&mut self) {
        self.pool.state().in_use.remove(&self.port);
    }
}

/// Packets received on calls' RTP ports, for metrics.
pub static RTP_PACKETS_RECEIVED: AtomicU64 = AtomicU64::new(0);

/// A call's RTP ports while only the SIP task has them (from the INVITE to the first
/// negotiated SDP): drained by a small task, so the far end's early packets have
/// somewhere to go, until the media session takes them.
#[derive(Debug)]
pub struct ParkedPorts {
    ports: RtpPorts,
    _drain: AbortOnDrop,
}

/// A task that stops with its owner.
#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl ParkedPorts {
    pub fn new(ports: RtpPorts) -> ParkedPorts {
        let (rtp, rtcp) = (Arc::clone(&ports.rtp), Arc::clone(&ports.rtcp));
        let drain = tokio::spawn(async move {
            let mut a = [0u8; 2048];
            let mut b = [0u8; 2048];
            loop {
                tokio::select! {
                    r = rtp.recv_from(&mut a) => if r.is_ok() { RTP_PACKETS_RECEIVED.fetch_add(1, Ordering::Relaxed); },
                    _ = rtcp.recv_from(&mut b) => {}
                }
            }
        });
        ParkedPorts {
            ports,
            _drain: AbortOnDrop(drain),
        }
    }

    /// The ports, for the media session; the drain stops.
    pub fn hand_over(self) -> RtpPorts {
        self.ports
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hands_out_pairs_round_robin_and_takes_them_back() {
        let pool = RtpPortPool::new("127.0.0.1".parse().unwrap(), 41001..=41006);
        assert_eq!(pool.capacity(), 2, "41002/41003 and 41004/41005");
        let a = pool.allocate().unwrap();
        let b = pool.allocate().unwrap();
        assert_eq!((a.port, b.port), (41002, 41004));
        assert!(pool.allocate().is_err(), "exhausted");
        assert_eq!(pool.in_use(), 2);
        drop(a);
        assert_eq!(pool.allocate().unwrap().port, 41002);
        drop(b);
        assert_eq!(pool.in_use(), 0);
    }

    #[tokio::test]
    async fn skips_ports_held_by_others() {
        let _squatter = std::net::UdpSocket::bind("127.0.0.1:41013").unwrap();
        let pool = RtpPortPool::new("127.0.0.1".parse().unwrap(), 41012..=41015);
        assert_eq!(pool.allocate().unwrap().port, 41014);
    }
}
