//! HTTPS and WSS with rustls (`server.tls`): HTTP/1.1 and HTTP/2 (ALPN), the certificate reloaded
//! on SIGHUP or when its files change, without dropping a connection; and optionally client
//! certificates for devices (`server.tls.client_ca_file`): a certificate the CA signed, whose
//! fingerprint is registered on an API key, authenticates as that key (see `auth::principal`).
//!
//! A reload that fails (a half-written file, a key that does not match) keeps the certificate in
//! use and says why in the log.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;

use crate::config::TlsSettings;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("`{}` cannot be read as PEM {what}: {reason}", path.display())]
    Read { path: PathBuf, what: &'static str, reason: String },
    #[error("`{}` holds no {what}", path.display())]
    Empty { path: PathBuf, what: &'static str },
    #[error("the TLS key `{}` cannot be used: {reason}", path.display())]
    Key { path: PathBuf, reason: String },
    #[error("TLS cannot be set up: {0}")]
    Setup(String),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certificates(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read = |reason: String| TlsError::Read { path: path.to_owned(), what, reason };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| read(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Empty { path: path.to_owned(), what });
    }
    Ok(certs)
}

/// The certificate chain and key, checked to belong together.
fn certified_key(settings: &TlsSettings) -> Result<CertifiedKey, TlsError> {
    let chain = certificates(&settings.cert_file, "certificates")?;
    let key = PrivateKeyDer::from_pem_file(&settings.key_file).map_err(|e| TlsError::Read {
        path: settings.key_file.clone(),
        what: "private key",
        reason: e.to_string(),
    })?;
    let key_error = |reason: String| TlsError::Key { path: settings.key_file.clone(), reason };
    let signing = provider().key_provider.load_private_key(key).map_err(|e| key_error(e.to_string()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| key_error(format!("it does not match the certificate: {e}")))?;
    Ok(certified)
}

/// The server's certificate, swapped in place when it is reloaded.
#[derive(Debug)]
pub struct CertStore {
    settings: TlsSettings,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.clone())
    }
}

impl CertStore {
    /// Reads the files again; keeps the certificate in use if they cannot be used.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = Arc::new(certified_key(&self.settings)?);
        if let Ok(mut current) = self.current.write() {
            *current = fresh;
        }
        Ok(())
    }

    fn stamp(&self) -> Option<(SystemTime, SystemTime)> {
        let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        Some((modified(&self.settings.cert_file)?, modified(&self.settings.key_file)?))
    }
}

/// The server's TLS configuration and its certificate store (for [`watch`]).
pub fn server_config(settings: &TlsSettings) -> Result<(rustls::ServerConfig, Arc<CertStore>), TlsError> {
    let store =
        Arc::new(CertStore { settings: settings.clone(), current: RwLock::new(Arc::new(certified_key(settings)?)) });
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    let builder = match &settings.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates(ca, "CA certificates")? {
                roots.add(cert).map_err(|e| TlsError::Read {
                    path: ca.clone(),
                    what: "CA certificates",
                    reason: e.to_string(),
                })?;
            }
            // Optional: people sign in with tokens; devices may show a certificate instead.
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError::Setup(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(store.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((config, store))
}

/// How often the certificate files are checked for changes.
const WATCH_EVERY: Duration = Duration::from_secs(2);

/// Reloads the certificate on SIGHUP, and when its files change.
pub async fn watch(store: Arc<CertStore>) {
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(err) => {
            tracing::warn!(error = %err, "SIGHUP cannot be watched; the certificate is reloaded when its files change");
            None
        }
    };
    let mut seen = store.stamp();
    let mut ticker = tokio::time::interval(WATCH_EVERY);
    loop {
        let why = tokio::select! {
            Some(()) = async { match hangup.as_mut() { Some(s) => s.recv().await, None => std::future::pending().await } } => "SIGHUP",
            _ = ticker.tick() => {
                let now = store.stamp();
                if now == seen || now.is_none() {
                    continue;
                }
                seen = now;
                "its files changed"
            }
        };
        match store.reload() {
            Ok(()) => tracing::info!(why, cert_file = %store.settings.cert_file.display(), "TLS certificate reloaded"),
            Err(err) => tracing::error!(why, error = %err, "TLS certificate not reloaded; the one in use stays"),
        }
    }
}

/// The SHA-256 fingerprint of a client certificate, as hex (how it is registered on a key).
pub fn fingerprint(cert: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(cert).iter().map(|b| format!("{b:02x}")).collect()
}
