//! HTTPS: the server's certificate, loaded from PEM files and reloadable without a restart.
//!
//! rustls on the ring provider (ring is built for the JWT code already), TLS 1.3 and 1.2 only
//! (rustls has nothing older), HTTP/1.1 announced by ALPN. h2 is not offered: the router is
//! built without axum's `http2` feature and every client of this API speaks HTTP/1.1.
//!
//! Rotation: [`ServerTls::reload`] reads the files again and swaps the configuration in; a
//! handshake takes the configuration current when it starts, so connections opened before a
//! reload keep their session and new ones get the new certificate. Processes reload on
//! `SIGHUP` ([`reload_on_hangup`]); a file that does not parse leaves the old certificate in
//! place (logged), so a half-written rotation never takes the listener down.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// The certificate or key files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The certificate file holds no PEM certificate.
    #[error("{0}: no PEM certificate found")]
    NoCertificate(PathBuf),
    /// The key file holds no PEM private key (PKCS#8, PKCS#1 or SEC1).
    #[error("{0}: no PEM private key found")]
    NoKey(PathBuf),
    /// rustls refused the pair (the key does not match the certificate, an unsupported key).
    #[error("the certificate and key cannot be used")]
    Invalid(#[source] rustls::Error),
}

/// The crypto provider of every TLS connection this process makes or accepts.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes ring the process's default provider, for the libraries that build their TLS client
/// from the default (the Redis client). Two providers are compiled in (the AWS SDK brings
/// aws-lc), and then rustls has no default of its own. Idempotent.
pub fn install_default_provider() {
    if CryptoProvider::get_default().is_none() {
        // Fails only when another thread installed one in between: that one is kept.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// The server side of TLS: the files it was loaded from and the configuration in force.
pub struct ServerTls {
    cert: PathBuf,
    key: PathBuf,
    /// Replaced whole by a reload; a handshake clones the `Arc` out and holds no lock.
    current: RwLock<Arc<rustls::ServerConfig>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").field("cert", &self.cert).field("key", &self.key).finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Loads the certificate chain (`cert`, PEM, leaf first) and its private key (`key`, PEM).
    pub fn load(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Result<Self, TlsError> {
        let (cert, key) = (cert.into(), key.into());
        let config = server_config(&cert, &key)?;
        Ok(Self { cert, key, current: RwLock::new(Arc::new(config)) })
    }

    /// Reads the files again and uses them for every handshake from now on. On an error the
    /// certificate in force stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = Arc::new(server_config(&self.cert, &self.key)?);
        match self.current.write() {
            Ok(mut current) => *current = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
        Ok(())
    }

    /// An acceptor with the configuration in force now.
    pub fn acceptor(&self) -> TlsAcceptor {
        let config = match self.current.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        TlsAcceptor::from(config)
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_owned(), source })
}

fn server_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(cert)?)
        .collect::<Result<_, _>>()
        .map_err(|_| TlsError::NoCertificate(cert.to_owned()))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert.to_owned()));
    }
    let key_der = PrivateKeyDer::from_pem_slice(&read(key)?).map_err(|_| TlsError::NoKey(key.to_owned()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Invalid)?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(TlsError::Invalid)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Reloads `tls` on every `SIGHUP` for the rest of the process (a no-op off Unix).
pub fn reload_on_hangup(tls: Arc<ServerTls>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(e) => {
                tracing::warn!(error = %e, "SIGHUP handler not installed: certificate reload needs a restart");
                return;
            }
        };
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                match tls.reload() {
                    Ok(()) => tracing::info!(cert = %tls.cert.display(), "TLS certificate reloaded"),
                    Err(e) => {
                        let error = format!("{:#}", anyhow::Error::from(e));
                        tracing::error!(%error, "TLS reload failed: the old certificate stays");
                    }
                }
            }
        });
    }
    #[cfg(not(unix))]
    drop(tls);
}
