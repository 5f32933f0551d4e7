//! Client TLS, shared by the proxy's `https://` upstreams, the puller's `https://` sources and the
//! tailer's `https://` sinks: rustls with the ring provider (as the proxy's listeners), trusting
//! the system's roots (read from /etc/ssl/certs by rustls-native-certs) or, as `curl --cacert`
//! does, only the certificates of a given CA file; optionally with a client certificate.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// Why a client TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A PEM file could not be read or parsed.
    #[error("failed to read {what} from {path:?}")]
    Pem {
        /// `CA certificates`, `a client certificate`, ...
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// A PEM file held none of what it should.
    #[error("{path:?} holds no PEM {what}")]
    Empty {
        /// `certificate`, ...
        what: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// A CA certificate was refused as a trust anchor.
    #[error("unusable CA certificate in {path:?}")]
    Anchor {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: rustls::Error,
    },
    /// The system has no CA certificates to trust.
    #[error(
        "no system CA certificates found (install the ca-certificates package, or give a CA file)"
    )]
    NoSystemRoots,
    /// rustls refused the client certificate or the configuration.
    #[error("failed to build the TLS client configuration")]
    Config(#[source] rustls::Error),
}

/// What a TLS client trusts and how it identifies itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// PEM CA certificates trusted instead of the system's roots.
    pub ca_file: Option<PathBuf>,
    /// A PEM certificate chain and its private key, for servers that ask for a client certificate.
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl ClientTls {
    /// The rustls configuration; `alpn` lists the protocols offered (`h2`, `http/1.1`), empty for
    /// none.
    pub fn config(&self, alpn: &[&[u8]]) -> Result<ClientConfig, Error> {
        let roots = match &self.ca_file {
            Some(path) => ca_roots(path)?,
            None => system_roots()?,
        };
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(Error::Config)?
                .with_root_certificates(roots);
        let mut config = match &self.identity {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = read_certs(cert, "a client certificate")?;
                let key = PrivateKeyDer::from_pem_file(key).map_err(|source| Error::Pem {
                    what: "a private key",
                    path: key.clone(),
                    source,
                })?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(Error::Config)?
            }
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }

    /// A connector for hyper's client that speaks TLS to `https://` and plain TCP to `http://`
    /// URIs, over `http` (which must not enforce the `http` scheme). With `http2`, TLS
    /// connections offer h2 by ALPN and use it when the server agrees.
    pub fn connector(
        &self,
        mut http: HttpConnector,
        http2: bool,
    ) -> Result<HttpsConnector<HttpConnector>, Error> {
        http.enforce_http(false);
        // hyper-rustls sets the ALPN list itself (and refuses a configuration that has one).
        let builder = HttpsConnectorBuilder::new()
            .with_tls_config(self.config(&[])?)
            .https_or_http()
            .enable_http1();
        Ok(if http2 {
            builder.enable_http2().wrap_connector(http)
        } else {
            builder.wrap_connector(http)
        })
    }

    /// A TLS-only connector over `tcp` (any connector of hyper's client, e.g. one that always
    /// dials the same address) that sends `server_name` as SNI and checks the certificate
    /// against it whatever host the request URI names, for a proxy whose URIs carry the
    /// client's Host. `config` comes from [`ClientTls::config`] with no ALPN; with `http2` h2 is
    /// offered by ALPN besides HTTP/1.1.
    pub fn connector_to<T>(
        config: ClientConfig,
        tcp: T,
        server_name: ServerName<'static>,
        http2: bool,
    ) -> HttpsConnector<T> {
        let builder = HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_only()
            .with_server_name_resolver(FixedServerNameResolver::new(server_name))
            .enable_http1();
        if http2 {
            builder.enable_http2().wrap_connector(tcp)
        } else {
            builder.wrap_connector(tcp)
        }
    }
}

/// The certificates of a PEM file, at least one.
pub(crate) fn read_certs(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|source| Error::Pem {
            what,
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(Error::Empty {
            what: "certificate",
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

fn ca_roots(path: &Path) -> Result<RootCertStore, Error> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path, "CA certificates")? {
        roots.add(cert).map_err(|source| Error::Anchor {
            path: path.to_owned(),
            source,
        })?;
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, Error> {
    let found = rustls_native_certs::load_native_certs();
    for err in &found.errors {
        tracing::debug!(%err, "skipped a system CA certificate");
    }
    let mut roots = RootCertStore::empty();
    // A distribution bundle holds a few certificates rustls cannot parse; skip them as curl does.
    let (_added, _ignored) = roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        return Err(Error::NoSystemRoots);
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_file_errors_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").expect("write");
        let tls = ClientTls {
            ca_file: Some(empty.clone()),
            identity: None,
        };
        let err = tls.config(&[]).expect_err("empty CA file");
        assert_eq!(
            err.to_string(),
            format!("{empty:?} holds no PEM certificate")
        );

        let missing = dir.path().join("missing.pem");
        let tls = ClientTls {
            ca_file: Some(missing.clone()),
            identity: None,
        };
        let err = tls.config(&[]).expect_err("missing CA file");
        assert_eq!(
            err.to_string(),
            format!("failed to read CA certificates from {missing:?}")
        );
    }

    #[test]
    fn a_test_ca_is_trusted_with_a_client_identity() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .expect("params")
            .self_signed(&key)
            .expect("self-signed");
        let (cert_path, key_path) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&cert_path, cert.pem()).expect("write cert");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        let tls = ClientTls {
            ca_file: Some(cert_path.clone()),
            identity: Some((cert_path, key_path)),
        };
        let config = tls.config(&[b"h2"]).expect("config");
        assert_eq!(config.alpn_protocols, vec![b"h2".to_vec()]);
        // hyper-rustls refuses (panics on) a configuration that already lists ALPN protocols.
        for http2 in [false, true] {
            tls.connector(HttpConnector::new(), http2)
                .expect("connector");
        }
    }
}
