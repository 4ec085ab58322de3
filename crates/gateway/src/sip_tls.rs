//! SIP over TLS toward the PBX (RFC 3261 §26.2): the client side of the trunk. The
//! PBX's certificate is verified (rustls, with webpki) against the system's roots or a
//! CA file from the config, for the name the registrar is known by (SNI and the
//! certificate check: a DNS name, or an IP address in the certificate's SAN). sipline
//! only connects out; the PBX reaches the lines over the connection they registered on.

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Why a TLS client could not be set up: its CAs, or the server name.
#[derive(Debug)]
pub enum TlsError {
    Ca(String),
    Name(String),
}

/// How sipline opens TLS connections to the PBX.
#[derive(Clone)]
pub struct TlsClient {
    connector: TlsConnector,
    server_name: ServerName<'static>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl TlsClient {
    /// Trusting the certificates in `ca` (PEM), or the system's roots without one;
    /// `server_name` is what the PBX's certificate must be for.
    pub fn new(ca: Option<&Path>, server_name: &str) -> Result<TlsClient, TlsError> {
        let roots = roots(ca).map_err(TlsError::Ca)?;
        let server_name = ServerName::try_from(server_name.to_owned())
            .map_err(|e| TlsError::Name(format!("{server_name:?} is no DNS name or IP address: {e}")))?;
        // the provider named, not the process default: another crate enabling a second
        // provider must not make this ambiguous
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Ca(format!("TLS setup: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(TlsClient {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }

    /// The TLS handshake over a connected TCP stream; fails when the certificate does
    /// not check out.
    pub async fn connect(&self, tcp: TcpStream) -> io::Result<TlsStream<TcpStream>> {
        self.connector.connect(self.server_name.clone(), tcp).await
    }
}

/// The CAs in `ca` (PEM), or the system's.
fn roots(ca: Option<&Path>) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    let Some(path) = ca else {
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert); // an odd system certificate is skipped
        }
        if roots.is_empty() {
            return Err("no CA certificates found on this system: set sip.tls_ca".into());
        }
        return Ok(roots);
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no certificate", path.display()));
    }
    for cert in certs {
        roots.add(cert).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(roots)
}
