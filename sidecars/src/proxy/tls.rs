//! TLS for `--listen-tls`: rustls with the ring provider, ALPN `h2` and `http/1.1`, and the
//! certificate reloaded when `--cert` or `--key` change on disk (cert-manager, certbot), checked
//! at most once a second on a handshake. A reload that fails keeps the previous certificate.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tracing::{info, warn};

/// How often a handshake may look at the files' modification times.
const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// Why the certificate could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `--cert` does not read as PEM certificates.
    #[error("failed to read certificates from --cert {path:?}")]
    Cert {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// `--cert` holds no certificate.
    #[error("--cert {path:?} holds no PEM certificate")]
    NoCert {
        /// The file.
        path: PathBuf,
    },
    /// `--key` does not read as a PEM private key.
    #[error("failed to read a private key from --key {path:?}")]
    Key {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// The key is of a type ring cannot sign with, or does not match.
    #[error("unusable private key in --key {path:?}")]
    Sign {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: rustls::Error,
    },
    /// rustls refused the configuration.
    #[error("failed to build the TLS configuration")]
    Config(#[source] rustls::Error),
}

fn load(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, Error> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|source| Error::Cert {
            path: cert.to_owned(),
            source,
        })?;
    if chain.is_empty() {
        return Err(Error::NoCert {
            path: cert.to_owned(),
        });
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|source| Error::Key {
        path: key.to_owned(),
        source,
    })?;
    let signer =
        rustls::crypto::ring::sign::any_supported_type(&private).map_err(|source| Error::Sign {
            path: key.to_owned(),
            source,
        })?;
    Ok(Arc::new(CertifiedKey::new(chain, signer)))
}

fn mtimes(cert: &Path, key: &Path) -> Option<(SystemTime, SystemTime)> {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some((m(cert)?, m(key)?))
}

/// The current certificate and when its files were last looked at.
#[derive(Debug)]
struct Current {
    key: Arc<CertifiedKey>,
    mtimes: Option<(SystemTime, SystemTime)>,
    checked: Instant,
}

/// Serves the certificate of `--cert`/`--key`, reloading it when the files change.
#[derive(Debug)]
struct Reloading {
    cert: PathBuf,
    key: PathBuf,
    current: Mutex<Current>,
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // A poisoned lock only means a panic elsewhere mid-update; the value is still whole.
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.checked.elapsed() >= RELOAD_CHECK {
            current.checked = Instant::now();
            let now = mtimes(&self.cert, &self.key);
            if now.is_some() && now != current.mtimes {
                match load(&self.cert, &self.key) {
                    Ok(key) => {
                        info!(cert = ?self.cert, "certificate reloaded");
                        current.key = key;
                        current.mtimes = now;
                    }
                    Err(err) => warn!(
                        ?err,
                        "failed to reload the certificate, keeping the old one"
                    ),
                }
            }
        }
        Some(current.key.clone())
    }
}

/// The server configuration for `--listen-tls`.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, Error> {
    let resolver = Reloading {
        cert: cert.to_owned(),
        key: key.to_owned(),
        current: Mutex::new(Current {
            mtimes: mtimes(cert, key),
            key: load(cert, key)?,
            checked: Instant::now(),
        }),
    };
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()
        .map_err(Error::Config)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // The server's order: AES-128-GCM even when the client lists AES-256-GCM first.
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}

/// ring with the AES-128-GCM suites first, as Go's and Caddy's servers choose: their key
/// schedule runs on SHA-256, which x86 (SHA-NI) and ARMv8 compute in hardware, where the
/// AES-256-GCM suites' SHA-384 is software (perf: its SHA-512 blocks were about 10% of the CPU
/// of a handshake; preferring AES-128-GCM took 12% off it, bench/proxy.sh's TLS load). AES-128
/// matches the 128-bit strength of the X25519 and P-256 key exchanges. The rest keep the
/// provider's order.
fn provider() -> rustls::crypto::CryptoProvider {
    use rustls::CipherSuite;

    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.sort_by_key(|suite| {
        !matches!(
            suite.suite(),
            CipherSuite::TLS13_AES_128_GCM_SHA256
                | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        )
    });
    provider
}
