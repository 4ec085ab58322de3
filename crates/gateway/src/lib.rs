//! sipline, the gateway: the tokio side that owns sockets and tasks and drives the
//! sans-IO SIP core (`sipline-sip`) for browser sessions.
//!
//! Data path: browser ⇄ WebSocket (`http`, `session`) ⇄ SIP task (`sip_driver`,
//! `sip_transport`) ⇄ PBX. `pool` leases the accounts, `media` the RTP ports,
//! `config` checks the file, `api` holds every JSON-RPC message type.

pub mod api;
pub mod assets;
pub mod config;
pub mod http;
pub mod media;
pub mod media_session;
pub mod pbx_driver;
pub mod pool;
pub mod services;
pub mod session;
pub mod sip_driver;
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
pub async fn start(settings: Settings) -> io::Result<Running> {
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
    let sip = sip_driver::start(
        settings.ua.clone(),
        settings.sip_listen,
        Arc::clone(&rtp),
        settings.media_ip,
        settings.sip_codecs.clone(),
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
    let pool = AccountPool::new(settings.accounts.clone());
    if !extensions.is_empty() {
        tokio::spawn(services::start(sip.clone(), extensions));
    }
    let mut gateway = Gateway::new(settings, pool, sip, rtp);
    gateway.pbx = pbx;
    let gateway = Arc::new(gateway);
    let app = http::router(Arc::clone(&gateway)).into_make_service_with_connect_info::<SocketAddr>();
    let server = match gateway.settings.tls.clone() {
        Some((cert, key)) => {
            let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(&cert, &key)
                .await
                .map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot load the TLS certificate or key: {e}"))
                })?;
            let listener = listener.into_std()?;
            tokio::spawn(async move { axum_server::from_tcp_rustls(listener, tls)?.serve(app).await })
        }
        None => tokio::spawn(async move { axum::serve(listener, app).await }),
    };
    Ok(Running {
        http_addr,
        gateway,
        server,
    })
}

impl Running {
    /// Serves until SIGINT/SIGTERM, then unregisters every line and returns.
    pub async fn run_until_signal(self) -> io::Result<()> {
        let server = self.server;
        tokio::select! {
            r = server => return r.map_err(io::Error::other)?,
            _ = shutdown_signal() => {}
        }
        tracing::info!("shutting down");
        self.gateway.sip.shutdown().await;
        Ok(())
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
