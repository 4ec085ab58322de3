//! sipline, the gateway: the tokio side that owns sockets and tasks and drives the
//! sans-IO SIP core (`sipline-sip`) for browser sessions.
//!
//! Data path: browser ⇄ WebSocket (`http`, `session`) ⇄ SIP task (`sip_driver`,
//! `sip_transport`) ⇄ PBX. `pool` leases the accounts, `media` the RTP ports,
//! `config` checks the file, `api` holds every JSON-RPC message type.

pub mod api;
pub mod assets;
pub mod cluster;
pub mod config;
pub mod counters;
pub mod descriptors;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod http_accept;
pub mod media;
pub mod media_session;
pub mod pbx_driver;
pub mod peer_log;
pub mod per_ip;
pub mod pool;
pub mod resume;
pub mod services;
pub mod session;
pub mod session_guard;
pub mod sip_driver;
pub mod sip_handle;
pub mod sip_tls;
pub mod sip_transport;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use config::Settings;
use pool::AccountPool;
use session::Gateway;

/// A started gateway.
pub struct Running {
    pub http_addr: SocketAddr,
    pub gateway: Arc<Gateway>,
    server: tokio::task::JoinHandle<io::Result<()>>,
}

/// Binds every socket and starts serving. Errors are bind failures.
pub async fn start(mut settings: Settings) -> io::Result<Running> {
    descriptors::fit(&mut settings);
    // the embedded PBX first, so that the lines can register at once
    let mut extensions = Vec::new();
    let pbx = match &settings.pbx {
        Some(p) => {
            let mut users: Vec<(String, String)> = settings
                .accounts
                .iter()
                .map(|a| (a.auth_user.clone(), a.password.clone()))
                .collect();
            users.extend(p.users.iter().cloned());
            if p.extensions {
                extensions = services::accounts(&p.domain);
                users.extend(
                    extensions
                        .iter()
                        .map(|(a, _)| (a.user.clone(), a.password.clone())),
                );
            }
            let status = pbx_driver::start(p.listen, p.domain.clone(), users)
                .await
                .map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("cannot bind the embedded PBX on {}: {e}", p.listen),
                    )
                })?;
            Some(status)
        }
        None => None,
    };
    let rtp = media::RtpPortPool::new(settings.media_ip, settings.rtp_ports.clone());
    let sockets = sip_transport::SocketSettings {
        listen: settings.sip_listen,
        tcp: settings.sip_tcp.clone(),
        tls: settings.sip_tls.clone(),
    };
    let sip = sip_driver::start(
        settings.ua.clone(),
        sockets,
        Arc::clone(&rtp),
        sip_driver::CallMedia {
            ip: settings.media_ip,
            codecs: settings.sip_codecs.clone(),
            srtp: settings.srtp,
        },
        settings.max_calls,
        settings.dial_pattern.clone(),
    )
    .await
    .map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot bind SIP on {}: {e}", settings.sip_listen),
        )
    })?;
    let listener = tokio::net::TcpListener::bind(settings.http_listen)
        .await
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot bind HTTP on {}: {e}", settings.http_listen),
            )
        })?;
    let http_addr = listener.local_addr()?;
    let pool = match settings.cluster.clone() {
        None => AccountPool::new(settings.accounts.clone()),
        Some(c) => {
            let node = c.node.clone();
            let cluster = cluster::Cluster::start(c, &settings.accounts).map_err(io::Error::other)?;
            tracing::info!(%node, "account pool shared through Redis");
            AccountPool::clustered(settings.accounts.clone(), cluster)
        }
    };
    if !extensions.is_empty() {
        tokio::spawn(services::start(sip.clone(), extensions));
    }
    let acceptor = http_accept::LimitAcceptor::new(settings.http_limits.clone());
    let header_timeout = settings.http_limits.header_timeout;
    let mut gateway = Gateway::new(settings, pool, sip, rtp);
    gateway.pbx = pbx;
    gateway.http_connections = Some(acceptor.clone());
    let gateway = Arc::new(gateway);
    let app = http::router(Arc::clone(&gateway)).into_make_service_with_connect_info::<SocketAddr>();
    let mut server = axum_server::from_tcp(listener.into_std()?)?
        .first_request_timeout(header_timeout)
        .accept_error_handler(|peer, e| {
            let peer = peer.map(ToString::to_string).unwrap_or_default();
            peer_warn!(peer_log::Kind::Http, %peer, error = %e, "HTTP connection not served");
        });
    server
        .http_builder()
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout);
    let server = match gateway.settings.tls.clone() {
        Some((cert, key)) => {
            let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(&cert, &key)
                .await
                .map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot load the TLS certificate or key: {e}"))
                })?;
            let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(tls)
                .handshake_timeout(header_timeout)
                .acceptor(acceptor);
            tokio::spawn(async move { server.acceptor(acceptor).serve(app).await })
        }
        None => tokio::spawn(async move { server.acceptor(acceptor).serve(app).await }),
    };
    Ok(Running {
        http_addr,
        gateway,
        server,
    })
}

impl Running {
    /// Serves until SIGINT/SIGTERM, then unregisters every line and returns.
    pub async fn run_until_signal(mut self) -> io::Result<()> {
        let server = &mut self.server;
        tokio::select! {
            r = server => return r.map_err(io::Error::other)?,
            _ = shutdown_signal() => {}
        }
        let drain = self.gateway.settings.drain_timeout;
        tracing::info!(
            sessions = self.gateway.sessions.load(std::sync::atomic::Ordering::Relaxed),
            drain_s = drain.as_secs_f64(),
            "draining: no new sessions; idle ones close now, calls may go on until they end or the drain timeout"
        );
        self.gateway.start_draining();
        tokio::select! {
            _ = self.drained(drain) => {}
            _ = shutdown_signal() => tracing::warn!("second signal: not waiting for calls to end"),
        }
        tracing::info!("shutting down: ending the remaining calls and unregistering every line");
        self.gateway.sip.shutdown().await;
        if let Some(cluster) = self.gateway.pool.cluster() {
            // the sessions drop their leases as their lines go; then delete them in Redis
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
            while self.gateway.pool.leased() > 0 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            cluster.flush(std::time::Duration::from_secs(2)).await;
        }
        self.server.abort();
        Ok(())
    }

    /// Waits until every session has gone (its line unregistered), or `timeout`.
    async fn drained(&self, timeout: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.gateway.sessions.load(std::sync::atomic::Ordering::Relaxed) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
