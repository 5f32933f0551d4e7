//! Test parts: an HTTP/1.1 backend on 127.0.0.1, the proxy in-process, curl and raw sockets.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, ensure};
use bytes::Bytes;
use clap::Parser;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use sidecars::proxy::{Args, Config, Metrics};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub const DEADLINE: Duration = Duration::from_secs(20);

type Body = BoxBody<Bytes, hyper::Error>;

fn full(s: impl Into<Bytes>) -> Body {
    Full::new(s.into()).map_err(|never| match never {}).boxed()
}

/// How a [`Backend`] speaks.
#[derive(Debug, Clone)]
pub enum Serve {
    /// HTTP/1.1 only, with upgrades.
    Http1,
    /// HTTP/2 with prior knowledge only (an HTTP/1.1 request fails).
    H2c,
    /// TLS with this configuration (its ALPN list decides HTTP/2 or HTTP/1.1).
    Tls(Arc<rustls::ServerConfig>),
}

/// A TLS server configuration from PEM files, offering `alpn`.
pub fn tls_server(
    cert: &Path,
    key: &Path,
    alpn: &[&[u8]],
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    use rustls_pki_types::pem::PemObject;
    let chain =
        rustls_pki_types::CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(key)?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, key)?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// [`tls_server`] that asks for a client certificate chaining to `client_ca` and refuses
/// clients without one.
pub fn tls_server_verifying(
    cert: &Path,
    key: &Path,
    client_ca: &Path,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    use rustls_pki_types::pem::PemObject;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in rustls_pki_types::CertificateDer::pem_file_iter(client_ca)? {
        roots.add(ca?)?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()?;
    let chain =
        rustls_pki_types::CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(key)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A backend app: `/big` streams 1 GiB (counting bodies cut in [`Backend::cut`]), `/trailers` ends its body with a `grpc-status` trailer, `/ws` upgrades and echoes bytes, `/headers` answers the request headers as JSON (with `:version` and `:authority`), `/echo` streams the body
/// back, `/sink` reads the body and answers its length, `/trailers-seen` answers the request's trailers as JSON, `/hold` waits for [`Backend::release`], `/slow` never answers, anything else answers
/// the backend's name.
#[derive(Debug, Clone)]
pub struct Backend {
    pub addr: SocketAddr,
    pub name: &'static str,
    /// Requests to `/hold` received so far.
    pub held: Arc<AtomicUsize>,
    pub release: CancellationToken,
    /// Requests received so far, on any path.
    pub requests: Arc<AtomicUsize>,
    /// `/big` bodies dropped before their end (the proxy closed the connection).
    pub cut: Arc<AtomicUsize>,
}

impl Backend {
    pub async fn start(name: &'static str) -> anyhow::Result<Self> {
        Self::start_with(name, Serve::Http1).await
    }

    /// The app on 127.0.0.1, speaking as `serve` says.
    pub async fn start_with(name: &'static str, serve: Serve) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let backend = Self {
            addr: listener.local_addr()?,
            name,
            held: Arc::default(),
            release: CancellationToken::new(),
            requests: Arc::default(),
            cut: Arc::default(),
        };
        let this = backend.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (this, serve) = (this.clone(), serve.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let this = this.clone();
                        async move { Ok::<_, Infallible>(this.respond(req).await) }
                    });
                    let executor = hyper_util::rt::TokioExecutor::new();
                    let _ = match serve {
                        Serve::Http1 => hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .with_upgrades()
                            .await
                            .map_err(anyhow::Error::from),
                        Serve::H2c => hyper::server::conn::http2::Builder::new(executor)
                            .serve_connection(TokioIo::new(stream), service)
                            .await
                            .map_err(anyhow::Error::from),
                        Serve::Tls(config) => {
                            match tokio_rustls::TlsAcceptor::from(config).accept(stream).await {
                                Ok(stream) => {
                                    hyper_util::server::conn::auto::Builder::new(executor)
                                        .serve_connection_with_upgrades(
                                            TokioIo::new(stream),
                                            service,
                                        )
                                        .await
                                        .map_err(|err| anyhow::anyhow!(err))
                                }
                                Err(err) => Err(err.into()),
                            }
                        }
                    };
                });
            }
        });
        Ok(backend)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The same app on a unix socket at `path` (its `addr` is unused).
    pub async fn start_unix(name: &'static str, path: &Path) -> anyhow::Result<Self> {
        let listener = tokio::net::UnixListener::bind(path)?;
        let backend = Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            name,
            held: Arc::default(),
            release: CancellationToken::new(),
            requests: Arc::default(),
            cut: Arc::default(),
        };
        let this = backend.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let this = this.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let this = this.clone();
                        async move { Ok::<_, Infallible>(this.respond(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(backend)
    }

    async fn respond(&self, mut req: Request<hyper::body::Incoming>) -> Response<Body> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        match req.uri().path() {
            "/big" => {
                // 1 GiB in 64 KiB chunks, made as they are read; counted in `cut` when dropped
                // before the end.
                struct Chunks {
                    left: usize,
                    chunk: Bytes,
                    cut: Arc<AtomicUsize>,
                }
                impl Drop for Chunks {
                    fn drop(&mut self) {
                        if self.left > 0 {
                            self.cut.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
                impl futures::Stream for Chunks {
                    type Item = Result<hyper::body::Frame<Bytes>, hyper::Error>;
                    fn poll_next(
                        mut self: std::pin::Pin<&mut Self>,
                        _: &mut std::task::Context<'_>,
                    ) -> std::task::Poll<Option<Self::Item>> {
                        if self.left == 0 {
                            return std::task::Poll::Ready(None);
                        }
                        self.left -= 1;
                        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(
                            self.chunk.clone(),
                        ))))
                    }
                }
                let chunks = Chunks {
                    left: 16 * 1024,
                    chunk: Bytes::from(vec![b'x'; 64 * 1024]),
                    cut: self.cut.clone(),
                };
                Response::new(BodyExt::boxed(http_body_util::StreamBody::new(chunks)))
            }
            "/ws" => {
                let Some(protocol) = req.headers().get("upgrade").cloned() else {
                    return Response::new(full("no upgrade"));
                };
                let upgrade = hyper::upgrade::on(&mut req);
                tokio::spawn(async move {
                    if let Ok(upgraded) = upgrade.await {
                        let (mut read, mut write) = tokio::io::split(TokioIo::new(upgraded));
                        let _ = tokio::io::copy(&mut read, &mut write).await;
                    }
                });
                Response::builder()
                    .status(101)
                    .header("connection", "upgrade")
                    .header("upgrade", protocol)
                    .body(full(""))
                    .unwrap_or_else(|_| Response::new(full("")))
            }
            "/headers" => {
                let mut headers: BTreeMap<String, String> = req
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").to_owned()))
                    .collect();
                headers.insert(":version".into(), format!("{:?}", req.version()));
                if let Some(authority) = req.uri().authority() {
                    headers.insert(":authority".into(), authority.to_string());
                }
                let body = serde_json::to_string(&headers).unwrap_or_default();
                Response::builder()
                    .header("connection", "x-resp-private")
                    .header("x-resp-private", "1")
                    .header("keep-alive", "timeout=5")
                    .body(full(body))
                    .unwrap_or_else(|_| Response::new(full("")))
            }
            "/echo" => Response::new(req.into_body().boxed()),
            "/trailers" => {
                let mut trailers = hyper::HeaderMap::new();
                trailers.insert("grpc-status", hyper::header::HeaderValue::from_static("0"));
                let frames = [
                    Ok(hyper::body::Frame::data(Bytes::from_static(b"data"))),
                    Ok(hyper::body::Frame::trailers(trailers)),
                ];
                let body = http_body_util::StreamBody::new(futures::stream::iter(frames));
                // HTTP/1.1 peers (hyper too) send only the trailers `Trailer` announces.
                Response::builder()
                    .header("trailer", "grpc-status")
                    .body(BodyExt::boxed(body))
                    .unwrap_or_else(|_| Response::new(full("")))
            }
            "/trailers-seen" => match req.into_body().collect().await {
                Ok(body) => {
                    let trailers: BTreeMap<String, String> = body
                        .trailers()
                        .into_iter()
                        .flatten()
                        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").to_owned()))
                        .collect();
                    Response::new(full(serde_json::to_string(&trailers).unwrap_or_default()))
                }
                Err(_) => Response::new(full("cut")),
            },
            "/sink" => match req.into_body().collect().await {
                Ok(body) => Response::new(full(body.to_bytes().len().to_string())),
                Err(_) => Response::new(full("cut")),
            },
            "/hold" => {
                self.held.fetch_add(1, Ordering::SeqCst);
                self.release.cancelled().await;
                Response::new(full("released\n"))
            }
            "/slow" => {
                std::future::pending::<()>().await;
                Response::new(full(""))
            }
            _ => Response::new(full(self.name)),
        }
    }
}

/// The proxy served in-process on 127.0.0.1:0.
#[derive(Debug)]
pub struct Proxy {
    pub addr: SocketAddr,
    pub tls_addr: Option<SocketAddr>,
    pub shutdown: CancellationToken,
    pub metrics: Arc<Metrics>,
    task: tokio::task::JoinHandle<Result<(), sidecars::proxy::Error>>,
}

impl Proxy {
    /// Serves plain HTTP, and also TLS on [`Proxy::tls_addr`] when `flags` has `--cert`.
    pub async fn start(flags: &[&str]) -> anyhow::Result<Self> {
        let mut argv = vec![
            "podkit-proxy",
            "--listen",
            "127.0.0.1:0",
            "--access-log",
            "off",
        ];
        let tls = flags.contains(&"--cert");
        if tls {
            argv.extend(["--listen-tls", "127.0.0.1:0"]);
        }
        argv.extend_from_slice(flags);
        let config = Config::try_from(Args::try_parse_from(argv)?)?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mut tls_listeners = Vec::new();
        let mut tls_addr = None;
        if tls {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            tls_addr = Some(listener.local_addr()?);
            tls_listeners.push(listener);
        }
        let shutdown = CancellationToken::new();
        let metrics = Arc::new(Metrics::default());
        let task = tokio::spawn(sidecars::proxy::serve(
            vec![listener],
            tls_listeners,
            config,
            metrics.clone(),
            shutdown.clone(),
        ));
        Ok(Self {
            addr,
            tls_addr,
            shutdown,
            metrics,
            task,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .context("the proxy did not stop")???;
        Ok(())
    }
}

/// A CA made at test time and the files of the leaf certificate it issued last.
pub struct TestCa {
    pub ca: std::path::PathBuf,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    pub fn new(dir: &Path) -> anyhow::Result<Self> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "podkit test CA");
        let issuer = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate()?)?;
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, issuer.pem())?;
        let this = Self {
            ca,
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            issuer,
        };
        this.issue("first")?;
        Ok(this)
    }

    /// Issues a client certificate (extended key usage clientAuth) into `cert` and `key`.
    pub fn issue_client(&self, cert: &Path, key: &Path) -> anyhow::Result<()> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "podkit-proxy");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let pair = rcgen::KeyPair::generate()?;
        let issued = params.signed_by(&pair, &self.issuer)?;
        std::fs::write(cert, issued.pem())?;
        std::fs::write(key, pair.serialize_pem())?;
        Ok(())
    }

    /// Issues a leaf for `localhost` and 127.0.0.1 with this common name and replaces the
    /// files (each by rename, as cert-manager does).
    pub fn issue(&self, common_name: &str) -> anyhow::Result<()> {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        let key = rcgen::KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        for (path, pem) in [(&self.key, key.serialize_pem()), (&self.cert, cert.pem())] {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, pem)?;
            std::fs::rename(&tmp, path)?;
        }
        Ok(())
    }
}

/// The `podkit-proxy` binary, its stderr (tracing) in a file; killed when dropped.
pub struct Binary {
    pub child: tokio::process::Child,
    /// The address of its first `--listen` (`127.0.0.1:0` given).
    pub addr: String,
    pub stderr: std::path::PathBuf,
}

impl Binary {
    /// Starts `podkit-proxy --listen 127.0.0.1:0 ARGS` with its access log on a pipe and its
    /// stderr in a file under `dir`.
    pub async fn start(args: &[&str], dir: &Path) -> anyhow::Result<Self> {
        let stderr = dir.join(format!("stderr-{}", fastrand::u64(..)));
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_podkit-proxy"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env(
                "PODKIT_LOG",
                std::env::var("PODKIT_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(&stderr)?)
            .kill_on_drop(true)
            .spawn()
            .context("failed to start podkit-proxy")?;
        let mut addr = None;
        wait_until("the proxy listens", || {
            let log = std::fs::read_to_string(&stderr).unwrap_or_default();
            addr = log
                .lines()
                .find(|l| l.contains("listening"))
                .and_then(|l| l.split("addr=").nth(1))
                .and_then(|a| a.split_whitespace().next())
                .map(str::to_owned);
            addr.is_some()
        })
        .await?;
        Ok(Self {
            child,
            addr: addr.context("no address")?,
            stderr,
        })
    }

    /// What it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// SIGTERM, then its exit status and stdout (the access log).
    pub async fn stop(self) -> anyhow::Result<(std::process::ExitStatus, String)> {
        let pid = self.child.id().context("no pid")?;
        let kill = tokio::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await?;
        ensure!(kill.success(), "kill -TERM {pid} failed");
        let output = tokio::time::timeout(DEADLINE, self.child.wait_with_output())
            .await
            .context("the proxy did not exit")??;
        Ok((output.status, String::from_utf8(output.stdout)?))
    }
}

/// What curl got.
#[derive(Debug)]
pub struct Curl {
    pub status: u16,
    pub headers: String,
    pub body: Vec<u8>,
}

/// Runs curl with `args` and the URL; the response head goes to `headers`.
pub async fn curl(args: &[&str], url: &str) -> anyhow::Result<Curl> {
    let dir = tempfile::tempdir()?;
    let head = dir.path().join("head");
    let output = tokio::time::timeout(
        DEADLINE,
        tokio::process::Command::new("curl")
            .args(["-sS", "--max-time", "20", "-D"])
            .arg(&head)
            .args(["-w", "\n%{http_code}"])
            .args(args)
            .arg(url)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .context("curl timed out")?
    .context("failed to run curl (Debian package curl)")?;
    ensure!(
        output.status.success(),
        "curl {args:?} {url} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut body = output.stdout;
    let newline = body
        .iter()
        .rposition(|&b| b == b'\n')
        .context("no status from curl")?;
    let status = std::str::from_utf8(&body[newline + 1..])?.trim().parse()?;
    body.truncate(newline);
    Ok(Curl {
        status,
        headers: std::fs::read_to_string(&head).unwrap_or_default(),
        body,
    })
}

/// A header's value from curl's `-D` output (last response), lower-cased name.
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// FNV-1a of a file, to compare large bodies.
pub fn checksum(path: &Path) -> anyhow::Result<(u64, usize)> {
    let data = std::fs::read(path)?;
    Ok((fnv(&data), data.len()))
}

pub fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Waits until `check` holds, failing after [`DEADLINE`].
pub async fn wait_until(what: &str, mut check: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !check() {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
