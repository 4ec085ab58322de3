//! The floor under the gateway's per-call cost on this machine: what the kernel and a
//! tokio task per call cost when every packet of a call is simply received and sent on,
//! with no SRTP, no str0m and no bridge. It runs as two processes so that the relay's CPU
//! time is its own (scripts/bench.sh `floor:N` measures it like the gateway's):
//!
//!     udp_floor relay --calls 500 --port 52000          # 2 sockets per call
//!     udp_floor peers --calls 500 --port 52000 --secs 60 # 2 peers per call, 50 pps each way
//!
//! Call `i` of the relay owns ports `port + 2i` (the "browser" side) and `port + 2i + 1`
//! (the "far end" side) on 127.0.0.1; what one side receives it sends to whoever last
//! spoke on the other. The peers send 20 ms packets of 182 bytes (an SRTP'd PCMU frame)
//! from both sides of every call and count what comes back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::UdpSocket;

const PACKET: usize = 182;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str, default: u64| -> u64 {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let calls = value("--calls", 50) as u16;
    let port = value("--port", 52000) as u16;
    match args.get(1).map(String::as_str) {
        Some("relay") => relay(calls, port).await,
        Some("peers") => peers(calls, port, value("--secs", 30)).await,
        _ => eprintln!("usage: udp_floor relay|peers --calls N --port P [--secs S]"),
    }
}

async fn bind(port: u16) -> UdpSocket {
    UdpSocket::bind(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| panic!("127.0.0.1:{port}: {e}"))
}

/// One task per call, like a media session: whatever arrives on one side goes out of
/// the other, to whoever spoke there last.
async fn relay(calls: u16, port: u16) {
    let mut tasks = Vec::new();
    for i in 0..calls {
        let a = bind(port + 2 * i).await;
        let b = bind(port + 2 * i + 1).await;
        tasks.push(tokio::spawn(async move {
            let (mut buf_a, mut buf_b) = ([0u8; 2048], [0u8; 2048]);
            let (mut peer_a, mut peer_b): (Option<SocketAddr>, Option<SocketAddr>) = (None, None);
            loop {
                tokio::select! {
                    Ok((n, from)) = a.recv_from(&mut buf_a) => {
                        peer_a = Some(from);
                        if let Some(to) = peer_b { let _ = b.send_to(&buf_a[..n], to).await; }
                    }
                    Ok((n, from)) = b.recv_from(&mut buf_b) => {
                        peer_b = Some(from);
                        if let Some(to) = peer_a { let _ = a.send_to(&buf_b[..n], to).await; }
                    }
                }
            }
        }));
    }
    eprintln!(
        "udp_floor relay: {calls} calls on 127.0.0.1:{port}-{}",
        port + 2 * calls - 1
    );
    for t in tasks {
        let _ = t.await;
    }
}

/// Both ends of every call, sending every 20 ms for `secs` seconds.
async fn peers(calls: u16, port: u16, secs: u64) {
    let sent = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..calls {
        for side in 0..2 {
            let sock = Arc::new(bind(0).await);
            let to: SocketAddr = ([127, 0, 0, 1], port + 2 * i + side).into();
            let (sent, received) = (Arc::clone(&sent), Arc::clone(&received));
            let rx = Arc::clone(&sock);
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                while rx.recv_from(&mut buf).await.is_ok() {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            });
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(20));
                let packet = [0x80u8; PACKET];
                for _ in 0..secs * 50 {
                    tick.tick().await;
                    if sock.send_to(&packet, to).await.is_ok() {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        // spread the calls' clocks over the 20 ms, as real calls are
        tokio::time::sleep(Duration::from_micros(20_000 / u64::from(calls.max(1)))).await;
    }
    for t in tasks {
        let _ = t.await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (s, r) = (sent.load(Ordering::Relaxed), received.load(Ordering::Relaxed));
    println!("udp_floor peers: {calls} calls, {s} packets sent, {r} came back");
}
