//! Accepting HTTP connections within limits: at most `http.max_connections` open at
//! once and `http.max_connections_per_ip` from one address (beyond: closed at once),
//! each holding its place for as long as its socket lives, WebSocket included. The
//! server around it (axum-server) bounds the TLS handshake and the first request's
//! headers by `http.header_timeout`, hyper bounds every later request's headers and the
//! idle time between them by the same, and accept errors (out of descriptors) make it
//! back off instead of spinning. Together they keep a flood of half-open connections
//! from taking the descriptors that calls and WebSockets need.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum_server::accept::Accept;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::config::HttpLimits;
use crate::counters::{self, Counter};

#[derive(Debug, Default)]
struct Open {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Takes each accepted connection's place in the counts, or refuses it.
#[derive(Debug, Clone)]
pub struct LimitAcceptor {
    limits: HttpLimits,
    open: Arc<Mutex<Open>>,
}

impl LimitAcceptor {
    pub fn new(limits: HttpLimits) -> LimitAcceptor {
        LimitAcceptor {
            limits,
            open: Arc::default(),
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.lock().total
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn admit(&self, ip: IpAddr) -> Result<Place, Counter> {
        let mut open = self.lock();
        if open.total >= self.limits.max_connections {
            return Err(Counter::HttpConnections);
        }
        let from_ip = open.per_ip.entry(ip).or_default();
        if *from_ip >= self.limits.max_connections_per_ip {
            return Err(Counter::HttpConnectionsPerIp);
        }
        *from_ip += 1;
        open.total += 1;
        Ok(Place {
            open: Arc::clone(&self.open),
            ip,
        })
    }
}

/// A connection's place in the counts, given back when it is dropped.
#[derive(Debug)]
struct Place {
    open: Arc<Mutex<Open>>,
    ip: IpAddr,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.per_ip.remove(&self.ip);
            }
        }
    }
}

impl<S> Accept<TcpStream, S> for LimitAcceptor {
    type Stream = Limited;
    type Service = S;
    type Future = std::future::Ready<io::Result<(Limited, S)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let result = match stream.peer_addr() {
            Ok(peer) => match self.admit(peer.ip()) {
                Ok(place) => {
                    let _ = stream.set_nodelay(true);
                    Ok((
                        Limited {
                            stream,
                            _place: place,
                        },
                        service,
                    ))
                }
                Err(limit) => {
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

/// An accepted stream holding its place in the counts.
#[derive(Debug)]
pub struct Limited {
    stream: TcpStream,
    _place: Place,
}

impl AsyncRead for Limited {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn places_are_counted_in_all_and_per_address_and_given_back() {
        let acceptor = LimitAcceptor::new(HttpLimits {
            max_connections: 3,
            max_connections_per_ip: 2,
            header_timeout: Duration::from_secs(1),
        });
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let p1 = acceptor.admit(a).unwrap();
        let p2 = acceptor.admit(a).unwrap();
        assert_eq!(acceptor.admit(a).unwrap_err(), Counter::HttpConnectionsPerIp);
        let p3 = acceptor.admit(b).unwrap();
        assert_eq!(acceptor.admit(b).unwrap_err(), Counter::HttpConnections);
        assert_eq!(acceptor.open(), 3);
        drop(p1);
        let _p4 = acceptor.admit(a).unwrap();
        drop((p2, p3));
        assert_eq!(acceptor.open(), 1);
        assert!(
            !acceptor.lock().per_ip.contains_key(&b),
            "no entry left for a gone address"
        );
    }
}
