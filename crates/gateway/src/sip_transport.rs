//! SIP's sockets: one UDP socket and a TCP listener on `sip.listen`, plus TCP
//! connections made on demand to whoever the core wants to reach (and reused for
//! whatever comes back on them). Streams are cut into messages with the core's
//! framing; everything else about SIP happens in the sans-IO core.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sipline_sip::message::{MAX_MESSAGE_SIZE, frame_length};
use sipline_sip::{Target, Transmit, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

/// What the sockets produced.
#[derive(Debug)]
pub enum Received {
    /// One datagram, or one framed message from a stream.
    Message(Target, Vec<u8>),
    /// A TCP connection failed or broke; what was in flight to it has failed.
    TransportError(Target),
}

#[derive(Debug)]
enum StreamEvent {
    Message(SocketAddr, Vec<u8>),
    Closed(SocketAddr, u64),
}

pub struct SipTransport {
    udp: Arc<UdpSocket>,
    /// The UDP socket again, for sending: a UDP send never waits, and tokio's
    /// `try_send_to` refuses until its reactor has seen the socket writable.
    udp_tx: std::net::UdpSocket,
    listener: TcpListener,
    /// Open connections by peer, with an id so a late close of an old connection
    /// does not remove its replacement.
    connections: HashMap<SocketAddr, (u64, mpsc::UnboundedSender<Vec<u8>>)>,
    next_id: u64,
    events_tx: mpsc::UnboundedSender<StreamEvent>,
    events_rx: mpsc::UnboundedReceiver<StreamEvent>,
    buf: Vec<u8>,
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

impl SipTransport {
    pub async fn bind(addr: SocketAddr) -> io::Result<SipTransport> {
        let std_udp = std::net::UdpSocket::bind(addr)?;
        std_udp.set_nonblocking(true)?;
        let udp_tx = std_udp.try_clone()?;
        let udp = UdpSocket::from_std(std_udp)?;
        let listener = TcpListener::bind(addr).await?;
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        Ok(SipTransport {
            udp: Arc::new(udp),
            udp_tx,
            listener,
            connections: HashMap::new(),
            next_id: 0,
            events_tx,
            events_rx,
            buf: vec![0; MAX_MESSAGE_SIZE],
        })
    }

    /// Sends without waiting: UDP datagrams go out at once, stream data is queued
    /// on the connection (opened if needed).
    pub fn send(&mut self, t: Transmit) {
        match t.target.transport {
            Transport::Udp => {
                if let Err(e) = self.udp_tx.send_to(&t.data, t.target.addr) {
                    tracing::warn!(target = %t.target, error = %e, "SIP send failed");
                }
            }
            Transport::Tcp => {
                let addr = t.target.addr;
                if !self.connections.contains_key(&addr) {
                    self.next_id += 1;
                    let tx = spawn_connection(None, addr, self.next_id, self.events_tx.clone());
                    self.connections.insert(addr, (self.next_id, tx));
                }
                let Some((_, conn)) = self.connections.get(&addr) else {
                    return;
                };
                if conn.send(t.data).is_err() {
                    // the connection task just ended; its Closed event is on the way
                    tracing::debug!(%addr, "SIP TCP connection closed while sending");
                }
            }
        }
    }

    /// Waits for the next message or transport failure.
    pub async fn recv(&mut self) -> Received {
        loop {
            tokio::select! {
                r = self.udp.recv_from(&mut self.buf) => match r {
                    Ok((n, from)) => {
                        return Received::Message(
                            Target { transport: Transport::Udp, addr: from },
                            self.buf[..n].to_vec(),
                        );
                    }
                    // ICMP errors for earlier sends surface here on some systems
                    Err(e) => tracing::debug!(error = %e, "SIP UDP receive error"),
                },
                Some(ev) = self.events_rx.recv() => match ev {
                    StreamEvent::Message(addr, data) => {
                        return Received::Message(Target { transport: Transport::Tcp, addr }, data);
                    }
                    StreamEvent::Closed(addr, id) => {
                        if self.connections.get(&addr).is_some_and(|(cid, _)| *cid == id) {
                            self.connections.remove(&addr);
                        }
                        return Received::TransportError(Target { transport: Transport::Tcp, addr });
                    }
                },
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, addr)) => {
                        tracing::debug!(%addr, "SIP TCP connection accepted");
                        self.next_id += 1;
                        let tx = spawn_connection(Some(stream), addr, self.next_id, self.events_tx.clone());
                        self.connections.insert(addr, (self.next_id, tx));
                    }
                    Err(e) => tracing::warn!(error = %e, "SIP TCP accept failed"),
                },
            }
        }
    }
}

/// Runs one TCP connection: connects (unless accepted), writes what is queued, and
/// reads framed messages until either side fails.
fn spawn_connection(
    stream: Option<TcpStream>,
    addr: SocketAddr,
    id: u64,
    events: mpsc::UnboundedSender<StreamEvent>,
) -> mpsc::UnboundedSender<Vec<u8>> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    tokio::spawn(async move {
        let stream = match stream {
            Some(s) => s,
            None => match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => {
                    tracing::debug!(%addr, "SIP TCP connected");
                    s
                }
                Ok(Err(e)) => {
                    tracing::warn!(%addr, error = %e, "SIP TCP connect failed");
                    let _ = events.send(StreamEvent::Closed(addr, id));
                    return;
                }
                Err(_) => {
                    tracing::warn!(%addr, "SIP TCP connect timed out");
                    let _ = events.send(StreamEvent::Closed(addr, id));
                    return;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (mut reader, mut writer) = stream.into_split();
        let read_events = events.clone();
        let read = async move {
            let mut buf: Vec<u8> = Vec::with_capacity(8192);
            let mut chunk = vec![0u8; 16384];
            loop {
                let n = reader.read(&mut chunk).await?;
                if n == 0 {
                    return Ok::<(), io::Error>(());
                }
                buf.extend_from_slice(&chunk[..n]);
                loop {
                    match frame_length(&buf) {
                        Ok(Some(len)) => {
                            let msg: Vec<u8> = buf.drain(..len).collect();
                            if !msg.iter().all(|b| *b == b'\r' || *b == b'\n') {
                                let _ = read_events.send(StreamEvent::Message(addr, msg));
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            tracing::warn!(%addr, error = %e, "closing SIP TCP connection: unframeable stream");
                            return Ok(());
                        }
                    }
                }
            }
        };
        let write = async move {
            while let Some(data) = rx.recv().await {
                writer.write_all(&data).await?;
            }
            Ok::<(), io::Error>(())
        };
        tokio::select! {
            r = read => if let Err(e) = r { tracing::debug!(%addr, error = %e, "SIP TCP read failed") },
            r = write => if let Err(e) = r { tracing::debug!(%addr, error = %e, "SIP TCP write failed") },
        }
        tracing::debug!(%addr, "SIP TCP connection closed");
        let _ = events.send(StreamEvent::Closed(addr, id));
    });
    tx
}
