//! TLS for HTTPS and WSS (everything the HTTP port serves) and for RTMPS, with rustls: the
//! certificate chain and private key of `[tls] cert_file` and `key_file` (PEM).
//!
//! Both listeners share one certificate, resolved for each new connection: a new pair of
//! files takes effect on `SIGHUP` or within [`WATCH_INTERVAL`] of the files changing on disk,
//! for connections made from then on. Connections already open keep the certificate they
//! were made with. A pair that cannot be read (a half-written file, a key that does not fit)
//! is logged and the previous certificate is kept.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// How often the certificate files are looked at for changes.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// Why a certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("{path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        error: io::Error,
    },
    /// A file holds no certificate or key, or one rustls does not take.
    #[error("{path}: {what}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
}

/// The certificate in force, shared by every listener's TLS configuration.
#[derive(Debug)]
pub struct Certificates {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// When the files last changed, as last loaded.
    loaded: RwLock<(Option<SystemTime>, Option<SystemTime>)>,
}

/// What rustls asks for each connection: the certificate in force.
struct Resolver(Arc<Certificates>);

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self
                .0
                .current
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        ))
    }
}

impl Certificates {
    /// Loads the pair of files.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Arc<Self>, TlsError> {
        let key = certified_key(cert_file, key_file)?;
        Ok(Arc::new(Self {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            current: RwLock::new(Arc::new(key)),
            loaded: RwLock::new((modified(cert_file), modified(key_file))),
        }))
    }

    /// An acceptor for HTTPS (HTTP/1.1 over TLS, as ALPN says).
    pub fn https_acceptor(self: &Arc<Self>) -> TlsAcceptor {
        self.acceptor(vec![b"http/1.1".to_vec()])
    }

    /// An acceptor for RTMPS (no ALPN protocol).
    pub fn rtmps_acceptor(self: &Arc<Self>) -> TlsAcceptor {
        self.acceptor(Vec::new())
    }

    fn acceptor(self: &Arc<Self>, alpn: Vec<Vec<u8>>) -> TlsAcceptor {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        // TLS 1.2 and 1.3, which ring's provider always has.
        let builder = match ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
        {
            Ok(b) => b,
            Err(_) => ServerConfig::builder(),
        };
        let mut config = builder
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(Arc::clone(self))));
        config.alpn_protocols = alpn;
        TlsAcceptor::from(Arc::new(config))
    }

    /// Loads the files again; on failure the certificate in force stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let stamps = (modified(&self.cert_file), modified(&self.key_file));
        let key = certified_key(&self.cert_file, &self.key_file)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(key);
        *self.loaded.write().unwrap_or_else(PoisonError::into_inner) = stamps;
        Ok(())
    }

    /// Whether either file changed since it was last loaded.
    fn changed(&self) -> bool {
        let now = (modified(&self.cert_file), modified(&self.key_file));
        *self.loaded.read().unwrap_or_else(PoisonError::into_inner) != now
    }

    /// Reloads on `SIGHUP` and when the files change, until `shutdown`.
    pub async fn watch(self: Arc<Self>, shutdown: CancellationToken) {
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "no SIGHUP handler: certificates reload when their files change only");
                None
            }
        };
        let mut tick = tokio::time::interval(WATCH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let why = tokio::select! {
                () = shutdown.cancelled() => return,
                Some(()) = async {
                    match hangup.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                } => "SIGHUP",
                _ = tick.tick() => {
                    if !self.changed() {
                        continue;
                    }
                    "the files changed"
                }
            };
            match self.reload() {
                Ok(()) => {
                    tracing::info!(cert = %self.cert_file.display(), "TLS certificate reloaded ({why})")
                }
                Err(e) => {
                    // Not retried until the files change again.
                    *self.loaded.write().unwrap_or_else(PoisonError::into_inner) =
                        (modified(&self.cert_file), modified(&self.key_file));
                    tracing::warn!(error = %e, "TLS certificate not reloaded ({why}); the previous one stays");
                }
            }
        }
    }
}

/// When `path` last changed.
fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The chain of `cert_file` with the key of `key_file`.
fn certified_key(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|error| TlsError::Read {
            path: path.to_owned(),
            error,
        })
    };
    let invalid = |path: &Path, what: String| TlsError::Invalid {
        path: path.to_owned(),
        what,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(cert_file)?)
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(cert_file, e.to_string()))?;
    if certs.is_empty() {
        return Err(invalid(cert_file, "no certificate in PEM form".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(&read(key_file)?)
        .map_err(|e| invalid(key_file, e.to_string()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| invalid(key_file, e.to_string()))?;
    let certified = CertifiedKey::new(certs, signing);
    certified
        .keys_match()
        .map_err(|e| invalid(key_file, format!("does not fit the certificate: {e}")))?;
    Ok(certified)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for `name` and its key, as PEM.
    fn pair(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn serial(c: &Certificates) -> Vec<u8> {
        c.current.read().unwrap().cert[0].to_vec()
    }

    #[test]
    fn a_new_pair_replaces_the_old_and_a_broken_one_is_refused() {
        let dir = std::env::temp_dir().join(format!("streamgate-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
        let (cert, key) = pair("one.test");
        std::fs::write(&cert_file, &cert).unwrap();
        std::fs::write(&key_file, &key).unwrap();
        let c = Certificates::load(&cert_file, &key_file).unwrap();
        let first = serial(&c);
        assert!(!c.changed());

        let (cert2, key2) = pair("two.test");
        std::fs::write(&cert_file, &cert2).unwrap();
        // The new certificate with the old key: refused, the old one stays.
        assert!(matches!(c.reload(), Err(TlsError::Invalid { .. })));
        assert_eq!(serial(&c), first);
        std::fs::write(&key_file, &key2).unwrap();
        c.reload().unwrap();
        assert_ne!(serial(&c), first);

        std::fs::write(&cert_file, "not a certificate").unwrap();
        assert!(matches!(c.reload(), Err(TlsError::Invalid { .. })));
        std::fs::write(&cert_file, &cert2).unwrap();
        std::fs::remove_file(&key_file).unwrap();
        assert!(matches!(c.reload(), Err(TlsError::Read { .. })));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
