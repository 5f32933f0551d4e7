//! Real parts for the tail tests: a writer of numbered lines, `logrotate` runs, the
//! `podkit-tail` binary as a child process, a Loki-compatible receiver on loopback, a recorder of
//! HTTP requests (plain or TLS) and a test CA made at test time.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;

/// Waits for `cond` with a deadline; the error says what did not happen.
pub fn wait_until(
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("timed out after {timeout:?} waiting for {what}")
}

/// Async flavour of [`wait_until`].
pub async fn wait_until_async(
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("timed out after {timeout:?} waiting for {what}")
}

/// The line the writer writes for number `n`.
pub fn line(n: u64) -> String {
    format!("line {n:08} the quick brown fox jumps over the lazy dog")
}

/// Parses the number back out of a shipped line.
pub fn number(line: &str) -> Option<u64> {
    line.strip_prefix("line ")?.get(..8)?.parse().ok()
}

/// Asserts every number below `count` was received, exactly once if `exact`.
pub fn check_numbers(lines: &[String], count: u64, exact: bool) -> anyhow::Result<()> {
    let mut seen = vec![0u32; count as usize];
    for l in lines {
        let n = number(l).with_context(|| format!("unexpected line {l:?}"))?;
        ensure!(n < count, "number {n} was never written");
        seen[n as usize] += 1;
    }
    let missing: Vec<_> = (0..count).filter(|n| seen[*n as usize] == 0).collect();
    ensure!(
        missing.is_empty(),
        "{} numbers lost, first {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    if exact {
        let dups: Vec<_> = (0..count).filter(|n| seen[*n as usize] > 1).collect();
        ensure!(
            dups.is_empty(),
            "{} numbers duplicated, first {:?}",
            dups.len(),
            &dups[..dups.len().min(10)]
        );
    }
    Ok(())
}

/// An app writing numbered lines to `path`, reopening it when it was rotated away (as an app
/// does on SIGHUP) unless `copytruncate` is used.
pub struct Writer {
    pub written: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    /// Set: the writer waits before its next line; `idle` says it is waiting.
    paused: Arc<AtomicBool>,
    idle: Arc<AtomicBool>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Writer {
    pub fn start(path: &Path, from: u64, count: u64, pause_every: u64, reopen: bool) -> Self {
        let written = Arc::new(AtomicU64::new(from));
        let stop = Arc::new(AtomicBool::new(false));
        let paused = Arc::new(AtomicBool::new(false));
        let idle = Arc::new(AtomicBool::new(false));
        let (path, w, s) = (path.to_owned(), written.clone(), stop.clone());
        let (p, i) = (paused.clone(), idle.clone());
        let thread = std::thread::spawn(move || -> anyhow::Result<()> {
            let open = |p: &Path| OpenOptions::new().create(true).append(true).open(p);
            let mut file = open(&path)?;
            for n in from..from + count {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                while p.load(Ordering::Acquire) && !s.load(Ordering::Relaxed) {
                    i.store(true, Ordering::Release);
                    std::thread::sleep(Duration::from_millis(1));
                }
                i.store(false, Ordering::Release);
                // Reopen once the path names a new file (as an app does on SIGHUP from
                // logrotate's postrotate); never create it ourselves mid-rotation.
                if reopen
                    && let Ok(meta) = std::fs::metadata(&path)
                    && meta.ino() != file.metadata()?.ino()
                {
                    file = open(&path)?;
                }
                file.write_all(format!("{}\n", line(n)).as_bytes())?;
                w.store(n + 1, Ordering::Release);
                if pause_every > 0 && n % pause_every == 0 {
                    // Pacing, so rotations happen in the middle of writing.
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            Ok(())
        });
        Writer {
            written,
            stop,
            paused,
            idle,
            thread: Some(thread),
        }
    }

    /// Pauses (and waits until the writer is idle) or resumes the writer.
    pub fn pause(&self, on: bool) {
        self.paused.store(on, Ordering::Release);
        if on {
            while !self.idle.load(Ordering::Acquire)
                && self.thread.as_ref().is_some_and(|t| !t.is_finished())
            {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    pub fn finish(mut self) -> anyhow::Result<u64> {
        if let Some(t) = self.thread.take() {
            t.join().map_err(|_| anyhow::anyhow!("writer panicked"))??;
        }
        Ok(self.written())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `logrotate -f` with a config for `log` in `mode` (`create` or `copytruncate`).
pub struct Logrotate {
    conf: PathBuf,
    state: PathBuf,
}

impl Logrotate {
    pub fn new(dir: &Path, log: &Path, mode: &str) -> anyhow::Result<Self> {
        ensure!(
            Command::new("logrotate").arg("--version").output().is_ok(),
            "logrotate is missing: apt-get install -y logrotate"
        );
        let conf = dir.join("logrotate.conf");
        std::fs::write(
            &conf,
            format!(
                "{} {{\n  rotate 3\n  {mode}\n  missingok\n  nocompress\n}}\n",
                log.display()
            ),
        )?;
        Ok(Logrotate {
            conf,
            state: dir.join("logrotate.state"),
        })
    }

    pub fn rotate(&self) -> anyhow::Result<()> {
        let out = Command::new("logrotate")
            .arg("-f")
            .arg("-s")
            .arg(&self.state)
            .arg(&self.conf)
            .output()
            .context("failed to run logrotate")?;
        ensure!(
            out.status.success(),
            "logrotate failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }
}

/// The `podkit-tail` binary, its stdout collected line by line. Killed on drop.
pub struct Tailer {
    child: Child,
    stderr: PathBuf,
    pub lines: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl Tailer {
    pub fn spawn(args: &[&str], stderr: &Path) -> anyhow::Result<Self> {
        let mut command = Command::new(env!("CARGO_BIN_EXE_podkit-tail"));
        command.args(args);
        Self::spawn_command(command, stderr)
    }

    /// Starts `command` (the binary, possibly behind a shell that sets limits), with
    /// `PODKIT_LOG=debug` and its stdout collected.
    pub fn spawn_command(mut command: Command, stderr: &Path) -> anyhow::Result<Self> {
        let mut child = command
            .env("PODKIT_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(File::create(stderr)?)
            .spawn()
            .context("failed to start podkit-tail")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                l.lock().expect("lines lock").push(line);
            }
        });
        Ok(Tailer {
            child,
            stderr: stderr.to_owned(),
            lines,
            reader: Some(reader),
        })
    }

    /// Waits until it follows its first file: files found at startup are read from their head,
    /// so a test that rotates must not race the startup scan.
    pub fn wait_following(&self) -> anyhow::Result<()> {
        wait_until(
            "podkit-tail following a file",
            Duration::from_secs(60),
            || std::fs::read_to_string(&self.stderr).is_ok_and(|s| s.contains("following file")),
        )
    }

    pub fn count(&self) -> usize {
        self.lines.lock().expect("lines lock").len()
    }

    pub fn snapshot(&self) -> Vec<String> {
        self.lines.lock().expect("lines lock").clone()
    }

    /// The child's pid (for SIGSTOP/SIGCONT).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub fn signal(&self, sig: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()?;
        ensure!(status.success(), "kill -{sig} failed");
        Ok(())
    }

    /// SIGTERM, wait for the exit, return the exit code and every line.
    pub fn terminate(mut self) -> anyhow::Result<(Option<i32>, Vec<String>)> {
        self.signal("TERM")?;
        let status = self.child.wait()?;
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        Ok((status.code(), self.snapshot()))
    }

    /// SIGKILL, wait, return every line it printed.
    pub fn kill(mut self) -> anyhow::Result<Vec<String>> {
        self.signal("KILL")?;
        self.child.wait()?;
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        Ok(self.snapshot())
    }
}

impl Drop for Tailer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What the Loki receiver got.
#[derive(Debug, Default)]
pub struct LokiState {
    /// (labels, timestamp in ns, line), in arrival order.
    pub entries: Vec<(BTreeMap<String, String>, String, String)>,
    /// Pushes that did not follow the Loki push API.
    pub invalid: Vec<String>,
    /// Pushes refused while down.
    pub refused: u64,
}

/// A Loki-compatible push receiver (`POST /loki/api/v1/push`, JSON) that checks the body
/// against the API and can be switched "down" (503).
#[derive(Clone, Default)]
pub struct Loki {
    pub state: Arc<Mutex<LokiState>>,
    pub down: Arc<AtomicBool>,
}

impl Loki {
    pub fn lines(&self) -> Vec<String> {
        self.state
            .lock()
            .expect("loki lock")
            .entries
            .iter()
            .map(|e| e.2.clone())
            .collect()
    }

    fn accept(&self, path: &str, body: &[u8]) -> Result<(), String> {
        if path != "/loki/api/v1/push" {
            return Err(format!("wrong path {path}"));
        }
        let v: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
        let streams = v
            .get("streams")
            .and_then(|s| s.as_array())
            .ok_or("no streams array")?;
        let mut got = Vec::new();
        for s in streams {
            let labels = s
                .get("stream")
                .and_then(|l| l.as_object())
                .ok_or("no stream labels")?;
            let mut map = BTreeMap::new();
            for (k, v) in labels {
                map.insert(
                    k.clone(),
                    v.as_str().ok_or("label value not a string")?.to_owned(),
                );
            }
            for value in s
                .get("values")
                .and_then(|v| v.as_array())
                .ok_or("no values")?
            {
                let pair = value
                    .as_array()
                    .filter(|p| p.len() == 2)
                    .ok_or("value not a pair")?;
                let ts = pair[0].as_str().ok_or("timestamp not a string")?;
                ts.parse::<u128>()
                    .map_err(|_| "timestamp not nanoseconds")?;
                let line = pair[1].as_str().ok_or("line not a string")?;
                got.push((map.clone(), ts.to_owned(), line.to_owned()));
            }
        }
        self.state.lock().expect("loki lock").entries.extend(got);
        Ok(())
    }

    /// Serves on `listener` until `shutdown`.
    pub async fn run(self, listener: tokio::net::TcpListener, shutdown: CancellationToken) {
        loop {
            let (stream, _) = tokio::select! {
                a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                _ = shutdown.cancelled() => return,
            };
            let loki = self.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let loki = loki.clone();
                        async move {
                            let path = req.uri().path().to_owned();
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let status = if loki.down.load(Ordering::Acquire) {
                                loki.state.lock().expect("loki lock").refused += 1;
                                StatusCode::SERVICE_UNAVAILABLE
                            } else {
                                match loki.accept(&path, &body) {
                                    Ok(()) => StatusCode::NO_CONTENT,
                                    Err(e) => {
                                        loki.state.lock().expect("loki lock").invalid.push(e);
                                        StatusCode::BAD_REQUEST
                                    }
                                }
                            };
                            let mut resp = Response::new(Full::new(Bytes::new()));
                            *resp.status_mut() = status;
                            Ok::<_, Infallible>(resp)
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }
}

/// A plain HTTP GET over loopback; returns (status, body).
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr)?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let status = resp.get(9..12).context("short response")?.parse()?;
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// A receiver that keeps every request (path, content-encoding, decoded body) and answers
/// `reply` (for Elasticsearch, a `_bulk` answer without errors).
#[derive(Clone, Default)]
pub struct Recorder {
    pub requests: Arc<Mutex<Vec<Recorded>>>,
}

/// Path, `Content-Encoding` and decoded body of one request.
pub type Recorded = (String, Option<String>, Vec<u8>);

impl Recorder {
    pub async fn run(
        self,
        listener: tokio::net::TcpListener,
        reply: &'static str,
        shutdown: CancellationToken,
    ) {
        loop {
            let (stream, _) = tokio::select! {
                a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                _ = shutdown.cancelled() => return,
            };
            tokio::spawn(self.clone().serve(stream, reply));
        }
    }

    /// HTTPS: each connection gets the TLS configuration `tls` holds at that moment (so a test
    /// can switch certificates); a failed handshake is counted in `handshake_errors`.
    pub async fn run_tls(
        self,
        listener: tokio::net::TcpListener,
        tls: Arc<Mutex<Arc<rustls::ServerConfig>>>,
        handshake_errors: Arc<Mutex<Vec<String>>>,
        reply: &'static str,
        shutdown: CancellationToken,
    ) {
        loop {
            let (stream, _) = tokio::select! {
                a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                _ = shutdown.cancelled() => return,
            };
            let config = tls.lock().expect("tls lock").clone();
            let (rec, errors) = (self.clone(), handshake_errors.clone());
            tokio::spawn(async move {
                match tokio_rustls::TlsAcceptor::from(config).accept(stream).await {
                    Ok(stream) => rec.serve(stream, reply).await,
                    Err(err) => errors.lock().expect("errors lock").push(err.to_string()),
                }
            });
        }
    }

    async fn serve<S>(self, stream: S, reply: &'static str)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let rec = self;
        let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
            let rec = rec.clone();
            async move {
                let path = req.uri().path().to_owned();
                let encoding = req
                    .headers()
                    .get(hyper::header::CONTENT_ENCODING)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let body = req
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let body = if encoding.as_deref() == Some("gzip") {
                    let mut out = Vec::new();
                    let _ = std::io::Read::read_to_end(
                        &mut flate2::read::GzDecoder::new(&body[..]),
                        &mut out,
                    );
                    out
                } else {
                    body.to_vec()
                };
                rec.requests
                    .lock()
                    .expect("recorder lock")
                    .push((path, encoding, body));
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                    reply.as_bytes(),
                ))))
            }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .await;
    }

    /// Every body line that parses as JSON.
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.requests
            .lock()
            .expect("recorder lock")
            .iter()
            .flat_map(|(_, _, body)| {
                body.split(|b| *b == b'\n')
                    .filter_map(|l| serde_json::from_slice(l).ok())
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

/// A CA made at test time, and leaf certificates it issues for 127.0.0.1 and `localhost`.
pub struct TestCa {
    /// The CA certificate, PEM.
    pub pem: String,
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> anyhow::Result<Self> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let issuer = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate()?)?;
        Ok(TestCa {
            pem: issuer.pem(),
            issuer,
        })
    }

    /// A leaf certificate (PEM) and its key (PEM).
    pub fn issue(&self, common_name: &str) -> anyhow::Result<(String, String)> {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        let key = rcgen::KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// A server configuration presenting a leaf of this CA; with `clients`, it requires a
    /// client certificate issued by that CA.
    pub fn server_config(
        &self,
        clients: Option<&TestCa>,
    ) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        use rustls_pki_types::pem::PemObject;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (cert, key) = self.issue("receiver")?;
        let chain = vec![rustls_pki_types::CertificateDer::from_pem_slice(
            cert.as_bytes(),
        )?];
        let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes())?;
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let builder = match clients {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(rustls_pki_types::CertificateDer::from_pem_slice(
                    ca.pem.as_bytes(),
                )?)?;
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        Ok(Arc::new(builder.with_single_cert(chain, key)?))
    }
}
