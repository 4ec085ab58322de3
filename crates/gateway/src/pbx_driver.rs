//! The tokio driver of the embedded PBX (`sipline-pbx`): one UDP socket on loopback,
//! one task, the sans-IO registrar/proxy inside.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sipline_pbx::{Pbx, PbxConfig};
use sipline_sip::{Target, Transport};
use tokio::net::UdpSocket;

/// What the rest of the gateway may see of the running PBX.
#[derive(Debug, Default)]
pub struct PbxStatus {
    pub registrations: AtomicUsize,
}

/// Binds the PBX's socket and starts its task.
pub async fn start(
    listen: SocketAddr,
    domain: String,
    users: Vec<(String, String)>,
) -> io::Result<Arc<PbxStatus>> {
    if !listen.ip().is_loopback() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the embedded PBX listens on loopback only",
        ));
    }
    let std_socket = std::net::UdpSocket::bind(listen)?;
    std_socket.set_nonblocking(true)?;
    let sender = std_socket.try_clone()?;
    let socket = UdpSocket::from_std(std_socket)?;
    let pbx = Pbx::new(
        PbxConfig {
            addr: listen,
            domain,
            users,
            min_expires: 10,
            max_expires: 3600,
        },
        fastrand::u64(..),
    );
    let status = Arc::new(PbxStatus::default());
    tokio::spawn(run(pbx, socket, sender, Arc::clone(&status)));
    Ok(status)
}

/// `sender` is the same socket as a plain one: sends never wait (see `media::RtpPorts`).
async fn run(mut pbx: Pbx, socket: UdpSocket, sender: std::net::UdpSocket, status: Arc<PbxStatus>) {
    let mut buf = vec![0u8; 65_535];
    loop {
        while let Some(t) = pbx.poll_transmit() {
            if let Err(e) = sender.send_to(&t.data, t.target.addr) {
                tracing::debug!(target = %t.target, error = %e, "PBX send failed");
            }
        }
        status
            .registrations
            .store(pbx.registrations().len(), Ordering::Relaxed);
        let wake = pbx
            .poll_timeout()
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(60));
        tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok((n, from)) => {
                    let source = Target { transport: Transport::Udp, addr: from };
                    if let Err(d) = pbx.handle_receive(Instant::now(), source, &buf[..n]) {
                        tracing::warn!("{d}");
                    }
                }
                Err(e) => tracing::debug!(error = %e, "PBX receive error"),
            },
            _ = tokio::time::sleep_until(wake) => pbx.handle_timeout(Instant::now()),
        }
    }
}
