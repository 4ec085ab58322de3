//! SIP's sockets: one UDP socket and a TCP listener on `sip.listen`, plus TCP (or TLS,
//! [`crate::sip_tls`]) connections made on demand to whoever the core wants to reach (and
//! reused for whatever comes back on them). Streams are cut into messages with the core's
//! framing; everything else about SIP happens in the sans-IO core.
//!
//! Everything a peer can grow here is bounded ([`TcpLimits`]): accepted connections in
//! all and per address (beyond: closed at once), how long an accepted connection may
//! stay silent or take to finish a message, and how many bytes may wait to be written
//! to a peer that does not read (beyond: the connection is dropped). Messages read from
//! streams reach the SIP task through a bounded queue, so a fast sender is slowed down
//! by TCP itself instead of growing memory. Accept errors (out of descriptors) pause
//! accepting with a growing back-off instead of spinning.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sipline_sip::message::{MAX_MESSAGE_SIZE, frame_length};
use sipline_sip::{Target, Transmit, Transport};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::counters::{self, Counter};
use crate::peer_log::Kind;
use crate::peer_warn;
use crate::per_ip::{Exceeded, PerIpLimit, Place};
use crate::sip_tls::TlsClient;

/// What the sockets produced.
#[derive(Debug)]
pub enum Received {
    /// One datagram, or one framed message from a stream.
    Message(Target, Vec<u8>),
    /// A TCP connection failed or broke; what was in flight to it has failed.
    TransportError(Target),
}

/// Bounds on what SIP-TCP peers can hold.
#[derive(Debug, Clone)]
pub struct TcpLimits {
    /// Accepted connections open at once.
    pub max_connections: usize,
    /// Accepted connections open at once from one IP address.
    pub max_per_ip: usize,
    /// An accepted connection that sends nothing for this long is closed.
    pub idle_timeout: Duration,
    /// A message begun must be complete within this long; a write must finish too.
    pub message_timeout: Duration,
    /// Bytes that may wait to be written to one peer.
    pub send_queue_bytes: usize,
}

impl Default for TcpLimits {
    fn default() -> TcpLimits {
        TcpLimits {
            max_connections: 1024,
            max_per_ip: 64,
            idle_timeout: Duration::from_secs(180),
            message_timeout: Duration::from_secs(10),
            send_queue_bytes: 1 << 20,
        }
    }
}

/// Where and how SIP's sockets are set up.
#[derive(Debug, Clone)]
pub struct SocketSettings {
    /// UDP and the TCP listener (`sip.listen`).
    pub listen: SocketAddr,
    pub tcp: TcpLimits,
    /// TLS toward the PBX, when `sip.transport = "tls"`.
    pub tls: Option<TlsClient>,
}

#[derive(Debug)]
enum StreamEvent {
    Message(Target, Vec<u8>),
    Closed(Target, u64),
}

/// Messages read from streams that may wait for the SIP task.
const STREAM_QUEUE: usize = 256;
/// The first pause after a failed accept; it doubles up to a second.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Kernel receive buffer asked for the UDP socket, so a burst (or a flood) does not
/// push the PBX's own datagrams out.
const UDP_RECEIVE_BUFFER: usize = 4 << 20;

/// One open TCP connection, as the SIP task sees it.
struct Connection {
    id: u64,
    queue: mpsc::UnboundedSender<Vec<u8>>,
    /// Bytes queued and not yet written.
    queued: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

pub struct SipTransport {
    udp: Arc<UdpSocket>,
    /// The UDP socket again, for sending: a UDP send never waits, and tokio's
    /// `try_send_to` refuses until its reactor has seen the socket writable.
    udp_tx: std::net::UdpSocket,
    listener: TcpListener,
    limits: TcpLimits,
    /// Open connections by peer (TCP or TLS), with an id so a late close of an old
    /// connection does not remove its replacement.
    connections: HashMap<Target, Connection>,
    /// How TLS connections to the PBX are made (`sip.transport = "tls"`).
    tls: Option<TlsClient>,
    /// Accepted connections, in all and per address; each task holds its place.
    accepted: PerIpLimit,
    accept_backoff: Duration,
    accept_paused_until: Option<Instant>,
    /// Connections dropped by us (peers that would not read), to report as failed.
    dropped: VecDeque<Target>,
    next_id: u64,
    events_tx: mpsc::Sender<StreamEvent>,
    events_rx: mpsc::Receiver<StreamEvent>,
    buf: Vec<u8>,
}

impl SipTransport {
    pub async fn bind(settings: SocketSettings) -> io::Result<SipTransport> {
        let SocketSettings {
            listen: addr,
            tcp: limits,
            tls,
        } = settings;
        let std_udp = std::net::UdpSocket::bind(addr)?;
        std_udp.set_nonblocking(true)?;
        let sock = socket2::SockRef::from(&std_udp);
        if let Err(e) = sock.set_recv_buffer_size(UDP_RECEIVE_BUFFER) {
            tracing::debug!(error = %e, "cannot enlarge the SIP UDP receive buffer");
        }
        let udp_tx = std_udp.try_clone()?;
        let udp = UdpSocket::from_std(std_udp)?;
        let listener = TcpListener::bind(addr).await?;
        let (events_tx, events_rx) = mpsc::channel(STREAM_QUEUE);
        Ok(SipTransport {
            accepted: PerIpLimit::new(limits.max_connections, limits.max_per_ip),
            limits,
            udp: Arc::new(udp),
            udp_tx,
            listener,
            connections: HashMap::new(),
            tls,
            accept_backoff: ACCEPT_BACKOFF_MIN,
            accept_paused_until: None,
            dropped: VecDeque::new(),
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
                    tracing::debug!(target = %t.target, error = %e, "SIP send failed");
                }
            }
            Transport::Tcp | Transport::Tls => self.send_stream(t.target, t.data),
        }
    }

    fn send_stream(&mut self, target: Target, data: Vec<u8>) {
        let addr = target.addr;
        if !self.connections.contains_key(&target) {
            let tls = match target.transport {
                Transport::Tls => match &self.tls {
                    Some(tls) => Some(tls.clone()),
                    None => {
                        // the core only asks for TLS when configured; a Via or Record-Route
                        // saying TLS with no TLS set up fails like an unreachable peer
                        self.dropped.push_back(target);
                        return;
                    }
                },
                _ => None,
            };
            self.next_id += 1;
            let conn = spawn_connection(
                None,
                target,
                self.next_id,
                self.events_tx.clone(),
                self.limits.clone(),
                (None, tls),
            );
            self.connections.insert(target, conn);
        }
        let Some(conn) = self.connections.get(&target) else {
            return;
        };
        let len = data.len();
        if conn.queued.load(Ordering::Relaxed) + len > self.limits.send_queue_bytes {
            counters::inc(Counter::SipTcpSlowReader);
            peer_warn!(Kind::SipTcp, %addr, "closing a SIP TCP connection whose peer does not read");
            if let Some(conn) = self.connections.remove(&target) {
                conn.task.abort();
            }
            self.dropped.push_back(target);
            return;
        }
        conn.queued.fetch_add(len, Ordering::Relaxed);
        if conn.queue.send(data).is_err() {
            // the connection task just ended; its Closed event is on the way
            tracing::debug!(%addr, "SIP TCP connection closed while sending");
        }
    }

    /// A datagram already waiting on the UDP socket, without waiting for one.
    pub fn try_recv_udp(&mut self) -> Option<Received> {
        let (n, from) = self.udp.try_recv_from(&mut self.buf).ok()?;
        Some(Received::Message(
            Target {
                transport: Transport::Udp,
                addr: from,
            },
            self.buf[..n].to_vec(),
        ))
    }

    /// Waits for the next message or transport failure.
    pub async fn recv(&mut self) -> Received {
        loop {
            if let Some(target) = self.dropped.pop_front() {
                return Received::TransportError(target);
            }
            let paused = self.accept_paused_until;
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
                    StreamEvent::Message(target, data) => return Received::Message(target, data),
                    StreamEvent::Closed(target, id) => {
                        if self.connections.get(&target).is_some_and(|c| c.id == id) {
                            self.connections.remove(&target);
                        }
                        return Received::TransportError(target);
                    }
                },
                accepted = self.listener.accept(), if paused.is_none() => match accepted {
                    Ok((stream, addr)) => {
                        self.accept_backoff = ACCEPT_BACKOFF_MIN;
                        self.admit(stream, addr);
                    }
                    Err(e) => {
                        peer_warn!(Kind::SipTcp, error = %e, pause_ms = self.accept_backoff.as_millis() as u64, "SIP TCP accept failed");
                        self.accept_paused_until = Some(Instant::now() + self.accept_backoff);
                        self.accept_backoff = (self.accept_backoff * 2).min(ACCEPT_BACKOFF_MAX);
                    }
                },
                _ = tokio::time::sleep_until(paused.unwrap_or_else(Instant::now)), if paused.is_some() => {
                    self.accept_paused_until = None;
                }
            }
        }
    }

    /// Takes an accepted connection on, or closes it at once when a limit is reached.
    fn admit(&mut self, stream: TcpStream, addr: SocketAddr) {
        let place = match self.accepted.take(addr.ip()) {
            Ok(place) => place,
            Err(exceeded) => {
                let limit = match exceeded {
                    Exceeded::Total => Counter::SipTcpConnections,
                    Exceeded::PerIp => Counter::SipTcpConnectionsPerIp,
                };
                counters::inc(limit);
                peer_warn!(Kind::SipTcp, %addr, limit = limit.name().1, "SIP TCP connection refused");
                return; // dropping the stream closes it
            }
        };
        tracing::debug!(%addr, "SIP TCP connection accepted");
        self.next_id += 1;
        let target = Target {
            transport: Transport::Tcp,
            addr,
        };
        let conn = spawn_connection(
            Some(stream),
            target,
            self.next_id,
            self.events_tx.clone(),
            self.limits.clone(),
            (Some(place), None),
        );
        if let Some(old) = self.connections.insert(target, conn) {
            old.task.abort();
        }
    }
}

/// Runs one stream connection: connects (unless accepted; with TLS when `tls` is given),
/// writes what is queued, and reads framed messages until either side fails or a limit
/// is hit. `accepted` is the place an accepted connection holds in the counts; it goes
/// with the task.
fn spawn_connection(
    stream: Option<TcpStream>,
    target: Target,
    id: u64,
    events: mpsc::Sender<StreamEvent>,
    limits: TcpLimits,
    (accepted, tls): (Option<Place>, Option<TlsClient>),
) -> Connection {
    let (tx, rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let queued = Arc::new(AtomicUsize::new(0));
    let written = Arc::clone(&queued);
    let task = tokio::spawn(async move {
        let addr = target.addr;
        let stream = match stream {
            Some(s) => {
                let _ = s.set_nodelay(true);
                let (r, w) = s.into_split();
                Ok((Box::new(r) as Reader, Box::new(w) as Writer))
            }
            None => connect(target, tls.as_ref()).await,
        };
        let (reader, writer) = match stream {
            Ok(s) => s,
            Err(e) => {
                // a route or Contact may point anywhere: the log line is rate-limited
                counters::inc(Counter::SipConnectFailed);
                peer_warn!(Kind::SipTcp, %target, error = %e, "SIP connection failed");
                let _ = events.send(StreamEvent::Closed(target, id)).await;
                return;
            }
        };
        // only connections others opened to us are reaped when idle: ours live as
        // long as the core uses them
        let idle = accepted.is_some().then_some(limits.idle_timeout);
        tokio::select! {
            r = read_messages(reader, target, &events, idle, limits.message_timeout) => {
                if let Err(e) = r { tracing::debug!(%addr, error = %e, "SIP stream read ended") }
            }
            r = write_queue(writer, rx, &written, limits.message_timeout) => {
                if let Err(e) = r { tracing::debug!(%addr, error = %e, "SIP stream write failed") }
            }
        }
        tracing::debug!(%target, "SIP connection closed");
        let _ = events.send(StreamEvent::Closed(target, id)).await;
    });
    Connection {
        id,
        queue: tx,
        queued,
        task,
    }
}

type Reader = Box<dyn AsyncRead + Unpin + Send>;
type Writer = Box<dyn AsyncWrite + Unpin + Send>;

/// Opens a connection to `target` (TCP, then the TLS handshake for TLS), within
/// [`CONNECT_TIMEOUT`] for each.
async fn connect(target: Target, tls: Option<&TlsClient>) -> io::Result<(Reader, Writer)> {
    let timed_out = |what: &str| io::Error::new(io::ErrorKind::TimedOut, format!("{what} timed out"));
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target.addr))
        .await
        .map_err(|_| timed_out("connect"))??;
    let _ = tcp.set_nodelay(true);
    match tls {
        None => {
            tracing::debug!(%target, "SIP TCP connected");
            let (r, w) = tcp.into_split();
            Ok((Box::new(r), Box::new(w)))
        }
        Some(tls) => {
            let stream = tokio::time::timeout(CONNECT_TIMEOUT, tls.connect(tcp))
                .await
                .map_err(|_| timed_out("TLS handshake"))??;
            tracing::info!(%target, "SIP TLS connected, the server's certificate verified");
            let (r, w) = tokio::io::split(stream);
            Ok((Box::new(r), Box::new(w)))
        }
    }
}

/// Reads and frames messages; ends on EOF, on an unframeable stream, when the peer
/// stays silent past `idle`, or leaves a message unfinished past `message_timeout`.
async fn read_messages(
    mut reader: impl AsyncRead + Unpin,
    target: Target,
    events: &mpsc::Sender<StreamEvent>,
    idle: Option<Duration>,
    message_timeout: Duration,
) -> io::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut chunk = vec![0u8; 16384];
    let mut last_read = Instant::now();
    let mut partial_since: Option<Instant> = None;
    loop {
        let idle_deadline = idle.map(|d| last_read + d);
        let message_deadline = partial_since.map(|t| t + message_timeout);
        let deadline = idle_deadline.into_iter().chain(message_deadline).min();
        let addr = target.addr;
        let read = reader.read(&mut chunk);
        let n = match deadline {
            Some(d) => match tokio::time::timeout_at(d, read).await {
                Ok(r) => r?,
                Err(_) => {
                    let idle_hit = idle_deadline.is_some_and(|i| Instant::now() >= i);
                    counters::inc(Counter::SipTcpIdle);
                    peer_warn!(
                        Kind::SipTcp,
                        %addr,
                        pending = buf.len(),
                        last_read_ms = last_read.elapsed().as_millis() as u64,
                        "closing SIP TCP connection: {}",
                        if idle_hit { "idle" } else { "message not finished in time" }
                    );
                    return Ok(());
                }
            },
            None => read.await?,
        };
        if n == 0 {
            return Ok(());
        }
        last_read = Instant::now();
        buf.extend_from_slice(&chunk[..n]);
        let mut framed = false;
        loop {
            match frame_length(&buf) {
                Ok(Some(len)) => {
                    framed = true;
                    let msg: Vec<u8> = buf.drain(..len).collect();
                    if !msg.iter().all(|b| *b == b'\r' || *b == b'\n')
                        && events.send(StreamEvent::Message(target, msg)).await.is_err()
                    {
                        return Ok(());
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    peer_warn!(Kind::SipTcp, %addr, error = %e, "closing SIP TCP connection: unframeable stream");
                    return Ok(());
                }
            }
        }
        // the clock runs from when the first unfinished message began to arrive, not
        // from time spent waiting for room in the queue to the SIP task
        partial_since = match (buf.is_empty(), partial_since) {
            (true, _) => None,
            (false, Some(since)) if !framed => Some(since),
            (false, _) => Some(Instant::now()),
        };
    }
}

/// Writes what the SIP task queues; a write that cannot finish in `timeout` (a peer
/// that does not read) ends the connection.
async fn write_queue(
    mut writer: impl AsyncWrite + Unpin,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    queued: &AtomicUsize,
    timeout: Duration,
) -> io::Result<()> {
    while let Some(data) = rx.recv().await {
        // flushed too: TLS takes bytes into its buffer before they reach the socket
        let write = async {
            writer.write_all(&data).await?;
            writer.flush().await
        };
        match tokio::time::timeout(timeout, write).await {
            Ok(written) => written?,
            Err(_) => {
                counters::inc(Counter::SipTcpSlowReader);
                return Err(io::Error::new(io::ErrorKind::TimedOut, "the peer does not read"));
            }
        }
        queued.fetch_sub(data.len(), Ordering::Relaxed);
    }
    Ok(())
}
