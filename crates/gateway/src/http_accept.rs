//! Accepting HTTP connections within limits: at most `http.max_connections` open at
//! once and `http.max_connections_per_ip` from one address (beyond: closed at once),
//! each holding its place for as long as its socket lives, WebSocket included. The
//! server around it (axum-server) bounds the TLS handshake and the first request's
//! headers by `http.header_timeout`, hyper bounds every later request's headers and the
//! idle time between them by the same, and accept errors (out of descriptors) make it
//! back off instead of spinning. Together they keep a flood of half-open connections
//! from taking the descriptors that calls and WebSockets need. A connection that sent
//! something but never one whole request (a half-sent header cut off by the timeout) is
//! counted in `sipline_dropped_total{what="http_unfinished_request"}` when it closes.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};

use axum_server::accept::Accept;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::config::HttpLimits;
use crate::counters::{self, Counter};
use crate::per_ip::{Exceeded, PerIpLimit, Place};

/// Takes each accepted connection's place in the counts, or refuses it.
#[derive(Debug, Clone)]
pub struct LimitAcceptor {
    places: PerIpLimit,
}

impl LimitAcceptor {
    pub fn new(limits: HttpLimits) -> LimitAcceptor {
        LimitAcceptor {
            places: PerIpLimit::new(limits.max_connections, limits.max_connections_per_ip),
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.places.open()
    }
}

/// How far a connection got: nothing read, something read, a request served.
const SILENT: u8 = 0;
const BEGUN: u8 = 1;
const SERVED: u8 = 2;

impl<S> Accept<TcpStream, S> for LimitAcceptor {
    type Stream = Limited;
    type Service = Served<S>;
    type Future = std::future::Ready<io::Result<(Limited, Served<S>)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let result = match stream.peer_addr() {
            Ok(peer) => match self.places.take(peer.ip()) {
                Ok(place) => {
                    let _ = stream.set_nodelay(true);
                    let progress = Arc::new(AtomicU8::new(SILENT));
                    Ok((
                        Limited {
                            stream,
                            _place: place,
                            progress: Arc::clone(&progress),
                        },
                        Served {
                            inner: service,
                            progress,
                        },
                    ))
                }
                Err(exceeded) => {
                    let limit = match exceeded {
                        Exceeded::Total => Counter::HttpConnections,
                        Exceeded::PerIp => Counter::HttpConnectionsPerIp,
                    };
                    counters::inc(limit);
                    Err(io::Error::other(format!(
                        "connection from {peer} refused: {} reached",
                        limit.name().1
                    )))
                }
            },
            Err(e) => Err(e),
        };
        std::future::ready(result)
    }
}

/// The connection's service, noting that a request got through.
#[derive(Debug, Clone)]
pub struct Served<S> {
    inner: S,
    progress: Arc<AtomicU8>,
}

impl<S, R> tower_service::Service<R> for Served<S>
where
    S: tower_service::Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> S::Future {
        self.progress.store(SERVED, Ordering::Relaxed);
        self.inner.call(request)
    }
}

/// An accepted stream holding its place in the counts.
#[derive(Debug)]
pub struct Limited {
    stream: TcpStream,
    _place: Place,
    progress: Arc<AtomicU8>,
}

impl AsyncRead for Limited {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            let _ = this
                .progress
                .compare_exchange(SILENT, BEGUN, Ordering::Relaxed, Ordering::Relaxed);
        }
        polled
    }
}

impl Drop for Limited {
    fn drop(&mut self) {
        if self.progress.load(Ordering::Relaxed) == BEGUN {
            counters::inc(Counter::HttpUnfinishedRequest);
        }
    }
}

impl AsyncWrite for Limited {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
