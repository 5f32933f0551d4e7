//! Real parts for the puller tests: an HTTP origin on 127.0.0.1 that honours `ETag` and can be
//! taken down and brought back, tar builders (including hostile archives), and waits with
//! deadlines.

#![allow(dead_code)]

use std::convert::Infallible;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;

/// Waits for `cond` with a deadline; the error says what did not happen.
pub async fn wait_until(
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bail!("timed out after {timeout:?} waiting for {what}")
}

/// A connection, plain or TLS.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// A CA made at test time (rcgen), and leaf certificates it issues for `localhost`.
pub struct TestCa {
    /// The CA certificate (PEM).
    pub ca: std::path::PathBuf,
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

/// A leaf certificate and its key, as files and as rustls values.
pub struct Leaf {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    pub der: rustls::pki_types::CertificateDer<'static>,
    pub key_der: rustls::pki_types::PrivateKeyDer<'static>,
}

impl TestCa {
    pub fn new(dir: &Path, name: &str) -> anyhow::Result<Self> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("podkit test CA {name}"));
        let issuer = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate()?)?;
        let ca = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&ca, issuer.pem())?;
        Ok(Self { ca, issuer })
    }

    /// A leaf for `localhost` and 127.0.0.1, written to `<name>-cert.pem` and `<name>-key.pem`.
    pub fn issue(&self, dir: &Path, name: &str) -> anyhow::Result<Leaf> {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let leaf = Leaf {
            cert: dir.join(format!("{name}-cert.pem")),
            key: dir.join(format!("{name}-key.pem")),
            der: cert.der().clone(),
            key_der: rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der())
                .map_err(|e| anyhow::anyhow!("leaf key: {e}"))?,
        };
        std::fs::write(&leaf.cert, cert.pem())?;
        std::fs::write(&leaf.key, key.serialize_pem())?;
        Ok(leaf)
    }

    /// A server configuration presenting `leaf`; with `client_ca`, a client certificate
    /// issued by that CA is required (rustls' WebPkiClientVerifier).
    pub fn server_config(
        leaf: &Leaf,
        client_ca: Option<&TestCa>,
    ) -> anyhow::Result<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(ca.issuer.der().clone())?;
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config =
            builder.with_single_cert(vec![leaf.der.clone()], leaf.key_der.clone_key())?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// What the origin serves for every path.
#[derive(Debug, Clone)]
pub struct Resource {
    pub status: StatusCode,
    pub body: Bytes,
    pub etag: Option<String>,
    /// Sent as `Last-Modified` when set (hyper adds `Date` to every answer).
    pub last_modified: Option<String>,
}

/// The origin's shared state.
#[derive(Debug)]
pub struct OriginState {
    pub resource: Mutex<Resource>,
    /// When false, accepted connections are closed at once (a crashed server).
    pub up: AtomicBool,
    /// When true, accepted connections are held open without an answer (a hung server).
    pub hang: AtomicBool,
    pub requests: AtomicU64,
    /// Requests that carried `If-Modified-Since`.
    pub if_modified_since: AtomicU64,
    pub ok: AtomicU64,
    pub not_modified: AtomicU64,
    /// Bodies of POST requests (webhook calls) answered 200.
    pub posts: Mutex<Vec<String>>,
    /// POSTs still to answer 500 before accepting.
    pub fail_posts: AtomicU64,
    /// The last `Authorization` header seen.
    pub authorization: Mutex<Option<String>>,
    /// TLS handshakes that failed (e.g. no client certificate).
    pub handshake_failures: AtomicU64,
}

/// An HTTP/1.1 origin on 127.0.0.1:0, stopped on drop.
#[derive(Debug)]
pub struct Origin {
    pub addr: std::net::SocketAddr,
    pub state: Arc<OriginState>,
    stop: CancellationToken,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Origin {
    pub async fn start(body: impl Into<Bytes>, etag: Option<&str>) -> anyhow::Result<Self> {
        Self::start_with(body, etag, None).await
    }

    /// The same origin behind TLS: `https://` URLs; a failed handshake is counted in
    /// `handshake_failures`.
    pub async fn start_tls(
        body: impl Into<Bytes>,
        etag: Option<&str>,
        tls: rustls::ServerConfig,
    ) -> anyhow::Result<Self> {
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        Self::start_with(body, etag, Some(acceptor)).await
    }

    async fn start_with(
        body: impl Into<Bytes>,
        etag: Option<&str>,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(OriginState {
            resource: Mutex::new(Resource {
                status: StatusCode::OK,
                body: body.into(),
                etag: etag.map(str::to_owned),
                last_modified: None,
            }),
            up: AtomicBool::new(true),
            hang: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            if_modified_since: AtomicU64::new(0),
            ok: AtomicU64::new(0),
            not_modified: AtomicU64::new(0),
            authorization: Mutex::new(None),
            posts: Mutex::new(Vec::new()),
            fail_posts: AtomicU64::new(0),
            handshake_failures: AtomicU64::new(0),
        });
        let stop = CancellationToken::new();
        let (st, sp) = (state.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(_) => continue,
                    },
                    _ = sp.cancelled() => return,
                };
                if !st.up.load(Ordering::SeqCst) {
                    drop(stream);
                    continue;
                }
                if st.hang.load(Ordering::SeqCst) {
                    let sp = sp.clone();
                    tokio::spawn(async move {
                        sp.cancelled().await;
                        drop(stream);
                    });
                    continue;
                }
                let st = st.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let stream: Box<dyn Io> = match tls {
                        None => Box::new(stream),
                        Some(acceptor) => match acceptor.accept(stream).await {
                            Ok(stream) => Box::new(stream),
                            Err(_) => {
                                st.handshake_failures.fetch_add(1, Ordering::SeqCst);
                                return;
                            }
                        },
                    };
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let st = st.clone();
                        async move {
                            if req.method() == hyper::Method::POST {
                                let body = req.into_body().collect().await;
                                let body = body.map(|b| b.to_bytes()).unwrap_or_default();
                                return Ok::<_, Infallible>(post(&st, &body));
                            }
                            Ok(respond(&st, &req))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self { addr, state, stop })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// An `https://` URL naming `localhost`, as the test certificates do.
    pub fn https_url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    pub fn set(&self, body: impl Into<Bytes>, etag: Option<&str>) {
        let mut resource = self.state.resource.lock().expect("origin lock");
        resource.body = body.into();
        resource.etag = etag.map(str::to_owned);
    }

    pub fn set_last_modified(&self, value: Option<String>) {
        self.state
            .resource
            .lock()
            .expect("origin lock")
            .last_modified = value;
    }

    pub fn set_status(&self, status: StatusCode) {
        self.state.resource.lock().expect("origin lock").status = status;
    }

    pub fn set_up(&self, up: bool) {
        self.state.up.store(up, Ordering::SeqCst);
    }

    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }

    pub fn not_modified(&self) -> u64 {
        self.state.not_modified.load(Ordering::SeqCst)
    }
}

fn post(state: &OriginState, body: &[u8]) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    let fail = state
        .fail_posts
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if fail {
        *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    } else {
        let body = String::from_utf8_lossy(body).into_owned();
        state.posts.lock().expect("origin lock").push(body);
    }
    response
}

fn respond(state: &OriginState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    state.requests.fetch_add(1, Ordering::SeqCst);
    *state.authorization.lock().expect("origin lock") = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if req.headers().contains_key("if-modified-since") {
        state.if_modified_since.fetch_add(1, Ordering::SeqCst);
    }
    let resource = state.resource.lock().expect("origin lock").clone();
    let mut response = Response::new(Full::new(Bytes::new()));
    if let Some(modified) = &resource.last_modified {
        response.headers_mut().insert(
            "last-modified",
            modified.parse().expect("last-modified header"),
        );
    }
    if let Some(etag) = &resource.etag {
        response
            .headers_mut()
            .insert("etag", etag.parse().expect("etag header"));
        if req
            .headers()
            .get("if-none-match")
            .and_then(|v| v.to_str().ok())
            == Some(etag)
        {
            state.not_modified.fetch_add(1, Ordering::SeqCst);
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            return response;
        }
    }
    state.ok.fetch_add(1, Ordering::SeqCst);
    *response.status_mut() = resource.status;
    *response.body_mut() = Full::new(resource.body);
    response
}

/// A gzip-compressed tar of `(path, content)` files.
pub fn tar_gz(files: &[(&str, &[u8])]) -> anyhow::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (path, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        builder.append_data(&mut header, path, *content)?;
    }
    Ok(builder.into_inner()?.finish()?)
}

/// A tar entry written byte by byte, so hostile names get in.
pub struct RawEntry<'a> {
    pub name: &'a str,
    pub kind: tar::EntryType,
    pub link: Option<&'a str>,
    pub content: &'a [u8],
}

/// A plain tar of raw entries: no validation of names or link targets.
pub fn raw_tar(entries: &[RawEntry<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in entries {
        let mut header = tar::Header::new_old();
        {
            let old = header.as_old_mut();
            old.name[..entry.name.len()].copy_from_slice(entry.name.as_bytes());
            if let Some(link) = entry.link {
                old.linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
        }
        header.set_entry_type(entry.kind);
        header.set_mode(0o644);
        header.set_size(entry.content.len() as u64);
        header.set_cksum();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(entry.content);
        let pad = (512 - entry.content.len() % 512) % 512;
        out.extend(std::iter::repeat_n(0u8, pad));
    }
    out.extend(std::iter::repeat_n(0u8, 1024));
    out
}

/// Names of the version directories (no staging leftovers expected).
pub fn versions(dest: &Path) -> anyhow::Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(dest.join(".versions"))?
        .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
        .collect::<anyhow::Result<_>>()?;
    names.sort();
    Ok(names)
}

/// A free loopback port for a server the puller binds itself.
pub fn free_addr() -> anyhow::Result<std::net::SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// `GET path` over a fresh connection; the status code.
pub async fn http_status(addr: std::net::SocketAddr, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    response.split(' ').nth(1)?.parse().ok()
}

/// A zip of `(path, content)` files and `(path, target)` symlinks; names are not checked.
pub fn zip(files: &[(&str, &[u8])], symlinks: &[(&str, &str)]) -> anyhow::Result<Vec<u8>> {
    use std::io::Write;
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (path, content) in files {
        writer.start_file(*path, options)?;
        writer.write_all(content)?;
    }
    for (path, target) in symlinks {
        writer.add_symlink(*path, *target, options)?;
    }
    Ok(writer.finish()?.into_inner())
}

/// One entry of a hand-made zip: names and link targets are not checked, and the same path may
/// be written twice under two spellings (`f` and `./f`).
pub enum ZipItem<'a> {
    File(&'a str, &'a [u8], u32),
    Dir(&'a str, u32),
    Symlink(&'a str, &'a str),
}

/// A zip of `items`, in order, with unix modes (so symlinks are symlinks).
pub fn zip_items(items: &[ZipItem<'_>]) -> anyhow::Result<Vec<u8>> {
    use std::io::Write;
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for item in items {
        match *item {
            // External attributes rather than `unix_permissions`, which drops setuid and the like.
            ZipItem::File(name, content, mode) => {
                writer.start_file(name, options.external_attributes((0o100000 | mode) << 16))?;
                writer.write_all(content)?;
            }
            ZipItem::Dir(name, mode) => {
                writer.add_directory(name, options.external_attributes((0o040000 | mode) << 16))?;
            }
            ZipItem::Symlink(name, target) => writer.add_symlink(name, target, options)?,
        }
    }
    Ok(writer.finish()?.into_inner())
}

/// A raw deflate stream of `prefix`, `chunks` times `chunk` zero bytes, then `suffix`: one chunk
/// is compressed after a full flush and its bytes repeated, so a stream as dense as `gzip -9`
/// makes of zeros is built in milliseconds whatever its size.
fn deflate_zeros(
    prefix: &[u8],
    chunk: usize,
    chunks: u64,
    suffix: &[u8],
) -> anyhow::Result<Vec<u8>> {
    use flate2::{Compress, Compression, FlushCompress, Status};
    anyhow::ensure!(chunks >= 2, "at least two chunks");
    let mut compress = Compress::new(Compression::best(), false);
    let mut run = |input: &[u8], flush: FlushCompress| -> anyhow::Result<Vec<u8>> {
        let mut out = Vec::new();
        let start = compress.total_in();
        loop {
            out.reserve(64 * 1024);
            let consumed = (compress.total_in() - start) as usize;
            let status = compress.compress_vec(&input[consumed..], &mut out, flush)?;
            let all_in = (compress.total_in() - start) as usize == input.len();
            let done = match flush {
                FlushCompress::Finish => status == Status::StreamEnd,
                // A flush is complete when output space is left over.
                _ => all_in && out.len() < out.capacity(),
            };
            if done {
                return Ok(out);
            }
        }
    };
    let mut stream = run(prefix, FlushCompress::Full)?;
    // After a full flush the compressor forgets what came before, so every chunk of zeros
    // compresses to the same bytes.
    let zeros = vec![0u8; chunk];
    let first = run(&zeros, FlushCompress::Full)?;
    let second = run(&zeros, FlushCompress::Full)?;
    anyhow::ensure!(first == second, "a fully flushed chunk is not reproducible");
    stream.extend_from_slice(&first);
    stream.extend_from_slice(&second);
    for _ in 2..chunks {
        stream.extend_from_slice(&first);
    }
    stream.extend(run(suffix, FlushCompress::Finish)?);
    Ok(stream)
}

/// The CRC-32 of `chunks * chunk` zeros between `prefix` and `suffix`, by combining.
fn crc_zeros(prefix: &[u8], chunk: usize, chunks: u64, suffix: &[u8]) -> flate2::Crc {
    let mut crc = flate2::Crc::new();
    crc.update(prefix);
    let mut one = flate2::Crc::new();
    one.update(&vec![0u8; chunk]);
    for _ in 0..chunks {
        crc.combine(&one);
    }
    let mut tail = flate2::Crc::new();
    tail.update(suffix);
    crc.combine(&tail);
    crc
}

/// A .tar.gz holding one file `name` of `size` zero bytes (a multiple of 1 MiB): a 4 GiB file
/// is about 4 MiB of gzip, as with `gzip -9`.
pub fn tar_gz_bomb(name: &str, size: u64) -> anyhow::Result<Vec<u8>> {
    const CHUNK: usize = 1 << 20;
    anyhow::ensure!(size.is_multiple_of(CHUNK as u64) && size > 0);
    let mut header = tar::Header::new_gnu();
    header.set_path(name)?;
    header.set_size(size);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    // Two zero blocks end the archive; the file is a multiple of 512, so no padding.
    let suffix = [0u8; 1024];
    let chunks = size / CHUNK as u64;
    let deflate = deflate_zeros(header.as_bytes(), CHUNK, chunks, &suffix)?;
    let crc = crc_zeros(header.as_bytes(), CHUNK, chunks, &suffix);
    let total = 512 + size + 1024;
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 3];
    out.extend_from_slice(&deflate);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&(total as u32).to_le_bytes());
    Ok(out)
}

/// A zip bomb of overlapping entries (David Fifield's construction, the kind `unzip` 6.0
/// refuses since CVE-2019-13232): one deflated file of `size` zeros, and `copies` central
/// directory records named `0`, `1`, ... that all point at it. 64 x 64 MiB is about 69 KB.
pub fn zip_overlap_bomb(copies: usize, size: u64) -> anyhow::Result<Vec<u8>> {
    const CHUNK: usize = 1 << 20;
    anyhow::ensure!(size.is_multiple_of(CHUNK as u64) && size > 0 && size < u32::MAX as u64);
    let chunks = size / CHUNK as u64;
    let data = deflate_zeros(&[], CHUNK, chunks, &[])?;
    let crc = crc_zeros(&[], CHUNK, chunks, &[]).sum();
    let mut out = Vec::new();
    let u16le = |out: &mut Vec<u8>, v: u16| out.extend_from_slice(&v.to_le_bytes());
    let u32le = |out: &mut Vec<u8>, v: u32| out.extend_from_slice(&v.to_le_bytes());
    // The one local file header, named "0".
    u32le(&mut out, 0x0403_4b50);
    u16le(&mut out, 20);
    u16le(&mut out, 0);
    u16le(&mut out, 8);
    u16le(&mut out, 0);
    u16le(&mut out, 0x21);
    u32le(&mut out, crc);
    u32le(&mut out, data.len() as u32);
    u32le(&mut out, size as u32);
    u16le(&mut out, 1);
    u16le(&mut out, 0);
    out.push(b'0');
    out.extend_from_slice(&data);
    let directory = out.len() as u32;
    for n in 0..copies {
        let name = n.to_string();
        u32le(&mut out, 0x0201_4b50);
        u16le(&mut out, (3 << 8) | 20);
        u16le(&mut out, 20);
        u16le(&mut out, 0);
        u16le(&mut out, 8);
        u16le(&mut out, 0);
        u16le(&mut out, 0x21);
        u32le(&mut out, crc);
        u32le(&mut out, data.len() as u32);
        u32le(&mut out, size as u32);
        u16le(&mut out, name.len() as u16);
        u16le(&mut out, 0);
        u16le(&mut out, 0);
        u16le(&mut out, 0);
        u16le(&mut out, 0);
        u32le(&mut out, 0o100644 << 16);
        u32le(&mut out, 0);
        out.extend_from_slice(name.as_bytes());
    }
    let directory_size = out.len() as u32 - directory;
    u32le(&mut out, 0x0605_4b50);
    u16le(&mut out, 0);
    u16le(&mut out, 0);
    u16le(&mut out, copies as u16);
    u16le(&mut out, copies as u16);
    u32le(&mut out, directory_size);
    u32le(&mut out, directory);
    u16le(&mut out, 0);
    Ok(out)
}

/// A .tar.gz of `count` empty files `f/<n>`.
pub fn many_files_tar_gz(count: usize) -> anyhow::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for n in 0..count {
        let mut header = tar::Header::new_gnu();
        header.set_size(0);
        header.set_mode(0o644);
        builder.append_data(&mut header, format!("f/{n}"), std::io::empty())?;
    }
    Ok(builder.into_inner()?.finish()?)
}

/// Every path under `root` with its kind and size (links with their target), without following
/// links: two snapshots differ when anything was created, removed or rewritten.
pub fn tree_snapshot(root: &Path) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path)?;
            let what = if meta.file_type().is_symlink() {
                format!("link -> {}", std::fs::read_link(&path)?.display())
            } else if meta.is_dir() {
                stack.push(path.clone());
                "dir".to_owned()
            } else {
                format!("file {} bytes", meta.len())
            };
            let rel = path.strip_prefix(root)?.display().to_string();
            out.insert(rel, what);
        }
    }
    Ok(out)
}

/// A tmpfs of `size` (as mount's `size=`) mounted on `dir`, unmounted on drop (lazily, so a
/// failing test cannot leave it behind because a file is still open).
pub struct Tmpfs {
    dir: std::path::PathBuf,
}

impl Tmpfs {
    pub fn mount(dir: &Path, size: &str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let status = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir)
            .status()?;
        anyhow::ensure!(
            status.success(),
            "mount tmpfs on {dir:?} failed (root needed): {status}"
        );
        Ok(Self {
            dir: dir.to_owned(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .status();
    }
}

/// An HTTP server on 127.0.0.1 that answers every request with 200 and a body that never ends
/// (chunked, 64 KiB of `x` per chunk); counts the bytes it sent.
pub struct Endless {
    pub addr: std::net::SocketAddr,
    pub sent: Arc<AtomicU64>,
    stop: CancellationToken,
}

impl Drop for Endless {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Endless {
    pub async fn start() -> anyhow::Result<Self> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let sent = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        let (counter, token) = (sent.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let mut stream = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(_) => continue,
                    },
                    _ = token.cancelled() => return,
                };
                let (counter, token) = (counter.clone(), token.clone());
                tokio::spawn(async move {
                    let mut head = [0u8; 4096];
                    let _ = stream.read(&mut head).await;
                    let chunk = {
                        let mut c = format!("{:x}\r\n", 64 * 1024).into_bytes();
                        c.extend(std::iter::repeat_n(b'x', 64 * 1024));
                        c.extend_from_slice(b"\r\n");
                        c
                    };
                    let head = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n";
                    if stream.write_all(head).await.is_err() {
                        return;
                    }
                    loop {
                        tokio::select! {
                            written = stream.write_all(&chunk) => if written.is_err() { return },
                            _ = token.cancelled() => return,
                        }
                        counter.fetch_add(64 * 1024, Ordering::SeqCst);
                    }
                });
            }
        });
        Ok(Self { addr, sent, stop })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// `python3 -m http.server` serving `dir` on 127.0.0.1 (a port it picks), killed on drop: the
/// origin most people try first, with one-second `Last-Modified` and no `ETag`.
pub struct PythonServer {
    child: std::process::Child,
    pub port: u16,
}

impl PythonServer {
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        use std::io::BufRead;
        let mut child = std::process::Command::new("python3")
            .args([
                "-u",
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                "0",
                "--directory",
            ])
            .arg(dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take();
        let mut server = Self { child, port: 0 };
        // "Serving HTTP on 127.0.0.1 port 41234 (http://127.0.0.1:41234/) ..."
        let mut line = String::new();
        if let Some(stdout) = stdout {
            std::io::BufReader::new(stdout).read_line(&mut line)?;
        }
        server.port = line
            .split_whitespace()
            .skip_while(|w| *w != "port")
            .nth(1)
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("python3 -m http.server said {line:?}"))?;
        Ok(server)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for PythonServer {
    fn drop(&mut self) {
        // Our own child, by its handle.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
