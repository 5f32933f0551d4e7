//! The HTTP/1.1 client of `http://` and `unix:` upstreams, and its keep-alive pool.
//!
//! Written here instead of using hyper-util's pooled client, because that client costs about
//! 33 KiB per upstream connection (heaptrack, 320 requests in flight):
//! - a task per connection;
//! - a request channel holding two 6 KiB blocks;
//! - an 8 KiB write buffer;
//! - a read buffer that each response keeps pinned until the client has it, so most
//!   connections hold two.
//!
//! A proxy under h2 load opens one upstream connection per request in flight, so that was
//! 10 MiB of its 25 MiB at 320 streams. Here the request's own task drives its connection: no
//! task, channel or cross-task wakeup per request. A connection owns a read buffer only while a
//! response is read; small bodies and header values are copied out, so the buffer is reused or
//! freed at once. An idle connection in the pool is its socket alone. bench/proxy.sh measures
//! the difference (sidecars/README-proxy.md).
//!
//! Framing follows RFC 9112 section 6:
//! - request bodies go as they came: with their Content-Length, or chunked;
//! - responses end by Content-Length, by the last chunk (trailers passed on), or by close;
//!   HEAD, 204 and 304 responses have no body;
//! - 1xx interim responses are skipped, except 101, which hands the connection over to the
//!   caller for a tunnel.
//!
//! A connection goes back to the pool only when both messages ended cleanly and the response
//! allows it. Idle connections are closed after the pool's idle timeout, by a sweeper task, so
//! an app's shorter keep-alive timeout is never raced. A request that finds its reused
//! connection closed before any byte of the answer came is sent again once on a new
//! connection, when that is safe: the request has no body, and either its method is idempotent
//! or its head could not be written.

use std::future::Future as _;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use hyper::body::{Body as _, Frame, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::request::Parts;
use hyper::http::uri::Authority;
use hyper::{Method, Request, Response, StatusCode, Version};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::Notify;

use crate::proxy::forward::{BoxError, ProxyBody};

/// Most header fields in a response head or trailer section.
const MAX_HEADERS: usize = 128;
/// The first read of a response: a typical head and a small body fit.
const HEAD_READ: usize = 4096;
/// Body reads start at this size and double while they fill the buffer, up to [`MAX_READ`].
const BODY_READ: usize = 8192;
/// Largest body read.
const MAX_READ: usize = 64 * 1024;
/// Body data up to this size is copied out of the read buffer instead of sharing it, so the
/// buffer does not stay pinned until the client has the bytes.
const COPY_MAX: usize = 1024;

/// Why a request to an upstream failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Connecting failed (502 `UF`).
    #[error("failed to connect to {target}")]
    Connect {
        /// `host:port` or the socket path.
        target: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Connecting took longer than the connect timeout (502 `UF`).
    #[error("timed out connecting to {target}")]
    ConnectTimeout {
        /// `host:port` or the socket path.
        target: String,
    },
    /// The connection closed before the response head was complete.
    #[error("upstream closed the connection before a complete response head")]
    Closed,
    /// Reading or writing the connection failed.
    #[error("upstream connection failed")]
    Io(#[source] io::Error),
    /// The response head is larger than allowed.
    #[error("upstream response head larger than {0} bytes")]
    HeadTooLarge(usize),
    /// The exchange made no progress for the response timeout: the request (head or body) was
    /// not taken, or no response head, or no more of the body, came (504 `UT` before the head).
    #[error("upstream made no progress for {0:?}")]
    Timeout(Duration),
    /// The response is not valid HTTP/1.1.
    #[error("invalid upstream response: {0}")]
    Invalid(&'static str),
    /// The request body failed (the client went away, or `--max-body-bytes`).
    #[error("failed to read the request body")]
    RequestBody(#[source] BoxError),
}

impl Error {
    /// Whether no connection could be made.
    pub fn is_connect(&self) -> bool {
        matches!(self, Self::Connect { .. } | Self::ConnectTimeout { .. })
    }
}

/// Where a pool connects.
#[derive(Debug, Clone)]
enum Target {
    /// `host:port`, resolved on each connect.
    Tcp(String),
    /// A unix socket.
    Unix(Arc<Path>),
}

/// An upstream connection.
#[derive(Debug)]
pub enum Io {
    /// TCP.
    Tcp(TcpStream),
    /// Unix socket.
    Unix(UnixStream),
}

impl Io {
    /// Whether an idle connection can take a request: nothing arrived on it, not even its
    /// close. Costs a system call only when the socket was reported readable.
    fn is_idle_open(&self) -> bool {
        let mut byte = [0u8; 1];
        let read = match self {
            Self::Tcp(s) => s.try_read(&mut byte),
            Self::Unix(s) => s.try_read(&mut byte),
        };
        matches!(read, Err(err) if err.kind() == io::ErrorKind::WouldBlock)
    }
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Self::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Self::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_flush(cx),
            Self::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Self::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// An idle connection and when it became idle.
#[derive(Debug)]
struct Idle {
    io: Io,
    since: Instant,
}

/// What the pool and its sweeper share.
#[derive(Debug)]
struct Shared {
    target: Target,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_head: usize,
    response_timeout: Duration,
    /// Newest last: requests take the most recently used connection, whose socket and buffers
    /// are warm, and the oldest ones expire.
    idle: Mutex<Vec<Idle>>,
    /// Wakes the sweeper when the pool stops being empty.
    filled: Notify,
}

/// The keep-alive pool of one upstream, and its client.
#[derive(Debug)]
pub struct Pool {
    shared: Arc<Shared>,
    /// The sweeper task, aborted with the pool.
    sweeper: tokio::task::AbortHandle,
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.sweeper.abort();
    }
}

/// How a pool connects and how long it keeps idle connections.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Bound on connecting.
    pub connect_timeout: Duration,
    /// Idle connections are closed after this long.
    pub idle_timeout: Duration,
    /// Largest response head, in bytes.
    pub max_head: usize,
    /// Bound on any wait without progress, as nginx's `proxy_send_timeout` and
    /// `proxy_read_timeout`: writing the head, each move of the request body, the response
    /// head after the request, each read of the response body. A long upload or download is
    /// not cut by it; a stalled one is.
    pub response_timeout: Duration,
}

impl Pool {
    /// A pool for `host:port` (port 80 when the authority has none). Must be called within a
    /// tokio runtime: it starts the sweeper.
    pub fn tcp(authority: &Authority, options: Options) -> Self {
        let target = format!(
            "{}:{}",
            authority.host(),
            authority.port_u16().unwrap_or(80)
        );
        Self::new(Target::Tcp(target), options)
    }

    /// A pool for a unix socket.
    pub fn unix(path: &Path, options: Options) -> Self {
        Self::new(Target::Unix(path.into()), options)
    }

    fn new(target: Target, options: Options) -> Self {
        let shared = Arc::new(Shared {
            target,
            connect_timeout: options.connect_timeout,
            idle_timeout: options.idle_timeout,
            max_head: options.max_head,
            response_timeout: options.response_timeout,
            idle: Mutex::new(Vec::new()),
            filled: Notify::new(),
        });
        let sweeper = tokio::spawn(sweep(Arc::downgrade(&shared))).abort_handle();
        Self { shared, sweeper }
    }

    /// Idle connections now.
    pub(crate) fn idle_len(&self) -> usize {
        self.shared.idle().len()
    }

    /// Sends `req` (its URI's path and query; Host from its headers, or the URI's authority)
    /// and returns the response once its head arrived; the body streams from the connection.
    pub async fn send(&self, req: Request<ProxyBody>) -> Result<Response<Body>, Error> {
        let (parts, body) = req.into_parts();
        let has_body = !body.is_end_stream();
        let chunked = has_body && !parts.headers.contains_key(header::CONTENT_LENGTH);
        let head = encode_head(&parts, chunked);
        let head_only = parts.method == Method::HEAD;
        let idempotent = matches!(
            parts.method,
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::TRACE
                | Method::PUT
                | Method::DELETE
        );
        let mut upload = has_body.then(|| Upload::new(body, chunked));
        let mut retried = false;
        loop {
            // A retry dials: another pooled connection may be just as stale.
            let pooled = if retried {
                None
            } else {
                self.shared.checkout()
            };
            let (mut io, reused) = match pooled {
                Some(io) => (io, true),
                None => (self.shared.connect().await?, false),
            };
            // Retried at most once, only on a reused connection, and only without a body
            // (which cannot be sent twice).
            let may_retry = reused && !retried && upload.is_none();
            let timeout = self.shared.response_timeout;
            // An app that accepted but does not read cannot hold the request forever.
            match tokio::time::timeout(timeout, io.write_all(&head)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) if may_retry => {
                    retried = true;
                    continue;
                }
                Ok(Err(err)) => return Err(Error::Io(err)),
                Err(_) => return Err(Error::Timeout(timeout)),
            }
            let mut buf = BytesMut::new();
            let mut state = HeadState::default();
            // The upload stopped: the upstream stopped reading, maybe to answer (a 413 before
            // the body); its answer is still read, and the connection not reused.
            let mut cut = None;
            // Any wait without progress is bounded: for the request body to move, then for the
            // head, counted from the end of the request (nginx's proxy_send_timeout and
            // proxy_read_timeout).
            let mut deadline = std::pin::pin!(tokio::time::sleep(timeout));
            let answer = std::future::poll_fn(|cx| {
                if let Some(up) = upload.as_mut() {
                    let mut moved = false;
                    let sent = up.poll_send(cx, &mut io, &mut moved);
                    if moved || sent.is_ready() {
                        deadline.as_mut().reset(later(timeout));
                    }
                    match sent {
                        Poll::Ready(Ok(())) => upload = None,
                        Poll::Ready(Err(Error::Io(err))) => {
                            upload = None;
                            cut = Some(err);
                        }
                        Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                        Poll::Pending => {}
                    }
                }
                let max_head = self.shared.max_head;
                if let Poll::Ready(head) = poll_head(cx, &mut io, &mut buf, &mut state, max_head) {
                    return Poll::Ready(head);
                }
                if deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(Error::Timeout(timeout)));
                }
                Poll::Pending
            })
            .await;
            let (status, version, headers) = match answer {
                Ok(head) => head,
                // Closed or reset before the first byte of an answer: the upstream dropped the
                // connection as it was reused (its keep-alive timeout).
                Err(Error::Closed | Error::Io(_)) if may_retry && !state.seen && idempotent => {
                    retried = true;
                    continue;
                }
                // No answer after the upload failed: the write's error says why.
                Err(err @ (Error::Closed | Error::Io(_))) => return Err(cut.map_or(err, Error::Io)),
                Err(err) => return Err(err),
            };
            let reusable = cut.is_none();
            return self.response(
                io,
                buf,
                (status, version, headers),
                head_only,
                upload,
                reusable,
            );
        }
    }

    /// The response with a body reading from `io`; the connection goes back to the pool after
    /// it if `reusable` and the response allow.
    fn response(
        &self,
        io: Io,
        buf: BytesMut,
        (status, version, mut headers): (StatusCode, Version, HeaderMap),
        head_only: bool,
        upload: Option<Upload>,
        reusable: bool,
    ) -> Result<Response<Body>, Error> {
        let mut reusable = reusable && version == Version::HTTP_11 && !has_token(&headers, "close");
        // Both framings at once is how requests are smuggled: never reuse such a connection,
        // and never pass the length on (RFC 9112 section 6.3), whatever the status (a 204
        // with both, found by the upstream_response fuzz target, kept them).
        if headers.contains_key(header::TRANSFER_ENCODING)
            && headers.remove(header::CONTENT_LENGTH).is_some()
        {
            reusable = false;
        }
        let framing = if status == StatusCode::SWITCHING_PROTOCOLS {
            reusable = false;
            Framing::Done
        } else if head_only
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            Framing::Done
        } else if headers.contains_key(header::TRANSFER_ENCODING) {
            // Any other coding would reach the client still coded once Transfer-Encoding, a
            // hop-by-hop header, is dropped.
            if !only_chunked(&headers) {
                return Err(Error::Invalid("transfer coding other than chunked"));
            }
            Framing::Chunked(Chunk::Size)
        } else {
            match content_length(&headers) {
                Ok(Some(length)) => Framing::Length(length),
                Ok(None) => {
                    reusable = false;
                    Framing::Close
                }
                Err(()) => return Err(Error::Invalid("conflicting or malformed Content-Length")),
            }
        };
        let mut response = Response::new(Body {
            io: None,
            buf,
            framing,
            upload,
            pool: self.shared.clone(),
            reusable,
            read_size: BODY_READ,
            stall: None,
        });
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        let body = response.body_mut();
        if status == StatusCode::SWITCHING_PROTOCOLS {
            let rest = std::mem::take(&mut body.buf).freeze();
            response.extensions_mut().insert(Upgraded::new(io, rest));
        } else {
            body.io = Some(io);
            body.finish_if_done();
        }
        Ok(response)
    }
}

impl Shared {
    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        // A panic while holding the lock leaves a valid Vec.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The newest idle connection that is still open and within the idle timeout.
    fn checkout(&self) -> Option<Io> {
        let mut closed = Vec::new();
        let mut idle = self.idle();
        let found = loop {
            let Some(conn) = idle.pop() else {
                break None;
            };
            if conn.since.elapsed() >= self.idle_timeout {
                // The rest are older still.
                closed.append(&mut idle);
                closed.push(conn);
                break None;
            }
            if conn.io.is_idle_open() {
                break Some(conn.io);
            }
            closed.push(conn);
        };
        drop(idle);
        // Sockets are closed after the lock is released.
        drop(closed);
        found
    }

    fn put(&self, io: Io) {
        let mut idle = self.idle();
        let was_empty = idle.is_empty();
        idle.push(Idle {
            io,
            since: Instant::now(),
        });
        drop(idle);
        if was_empty {
            self.filled.notify_one();
        }
    }

    async fn connect(&self) -> Result<Io, Error> {
        let name = || match &self.target {
            Target::Tcp(addr) => addr.clone(),
            Target::Unix(path) => format!("unix:{}", path.display()),
        };
        let connect = async {
            match &self.target {
                Target::Tcp(addr) => {
                    let stream = TcpStream::connect(addr.as_str()).await?;
                    stream.set_nodelay(true)?;
                    Ok(Io::Tcp(stream))
                }
                Target::Unix(path) => UnixStream::connect(&**path).await.map(Io::Unix),
            }
        };
        match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(Ok(io)) => Ok(io),
            Ok(Err(source)) => Err(Error::Connect {
                target: name(),
                source,
            }),
            Err(_) => Err(Error::ConnectTimeout { target: name() }),
        }
    }
}

/// Closes idle connections once they reach the idle timeout; sleeps while the pool is empty.
async fn sweep(shared: std::sync::Weak<Shared>) {
    loop {
        let Some(pool) = shared.upgrade() else {
            return;
        };
        let (next, expired) = {
            let mut idle = pool.idle();
            let now = Instant::now();
            let expired = idle
                .iter()
                .take_while(|c| now.duration_since(c.since) >= pool.idle_timeout)
                .count();
            let expired: Vec<Idle> = idle.drain(..expired).collect();
            let next = idle.first().map(|c| c.since.checked_add(pool.idle_timeout));
            (next, expired)
        };
        // Closed after the lock is released.
        drop(expired);
        match next {
            Some(Some(at)) => {
                drop(pool);
                tokio::time::sleep_until(at.into()).await;
            }
            // An idle timeout past the end of time: connections stay.
            Some(None) => return,
            None => pool.filled.notified().await,
        }
    }
}

/// The request line and headers, with `Transfer-Encoding: chunked` when the body is sent so.
fn encode_head(parts: &Parts, chunked: bool) -> Vec<u8> {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let size = parts
        .headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum::<usize>();
    let mut head = Vec::with_capacity(size + path.len() + 64);
    head.extend_from_slice(parts.method.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(path.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    if !parts.headers.contains_key(header::HOST)
        && let Some(authority) = parts.uri.authority()
    {
        head.extend_from_slice(b"host: ");
        head.extend_from_slice(authority.as_str().as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    for (name, value) in &parts.headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    if chunked {
        head.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// Most 1xx interim responses before the final one.
const MAX_INTERIM: u8 = 16;

/// What [`poll_head`] keeps between polls.
#[derive(Debug, Default)]
struct HeadState {
    /// Interim (1xx) responses skipped.
    interim: u8,
    /// Some byte of an answer came.
    seen: bool,
}

/// `timeout` from now, or far in the future for a timeout past the end of time.
fn later(timeout: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30))
}

/// Reads until a final response head (up to [`MAX_INTERIM`] 1xx other than 101 skipped) is
/// parsed.
fn poll_head(
    cx: &mut Context<'_>,
    io: &mut Io,
    buf: &mut BytesMut,
    state: &mut HeadState,
    max_head: usize,
) -> Poll<Result<(StatusCode, Version, HeaderMap), Error>> {
    loop {
        if !buf.is_empty() {
            // Uninitialised: 128 initialised fields are a 4 KiB memset per response.
            let mut fields = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
            let mut parsed = httparse::Response::new(&mut []);
            match httparse::ParserConfig::default().parse_response_with_uninit_headers(
                &mut parsed,
                buf,
                &mut fields,
            ) {
                Ok(httparse::Status::Complete(len)) if len > max_head => {
                    return Poll::Ready(Err(Error::HeadTooLarge(max_head)));
                }
                Ok(httparse::Status::Complete(len)) => {
                    let code = parsed.code.ok_or(Error::Invalid("no status code"))?;
                    let status = StatusCode::from_u16(code)
                        .map_err(|_| Error::Invalid("status code out of range"))?;
                    let version = match parsed.version {
                        Some(0) => Version::HTTP_10,
                        _ => Version::HTTP_11,
                    };
                    let headers = header_map(parsed.headers)?;
                    buf.advance(len);
                    if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
                        state.interim += 1;
                        if state.interim > MAX_INTERIM {
                            return Poll::Ready(Err(Error::Invalid("too many 1xx responses")));
                        }
                        continue;
                    }
                    return Poll::Ready(Ok((status, version, headers)));
                }
                Ok(httparse::Status::Partial) => {
                    if buf.len() >= max_head {
                        return Poll::Ready(Err(Error::HeadTooLarge(max_head)));
                    }
                }
                Err(httparse::Error::TooManyHeaders) => {
                    return Poll::Ready(Err(Error::Invalid("too many header fields")));
                }
                Err(_) => return Poll::Ready(Err(Error::Invalid("malformed response head"))),
            }
        }
        let want = if buf.capacity() == 0 {
            HEAD_READ
        } else {
            HEAD_READ.max(buf.len())
        };
        match ready!(poll_read_some(cx, io, buf, want)) {
            Ok(0) => return Poll::Ready(Err(Error::Closed)),
            Ok(_) => state.seen = true,
            Err(err) => return Poll::Ready(Err(Error::Io(err))),
        }
    }
}

/// Reads once into `buf`, with at least `want` bytes of room.
fn poll_read_some(
    cx: &mut Context<'_>,
    io: &mut Io,
    buf: &mut BytesMut,
    want: usize,
) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < want {
        buf.reserve(want);
    }
    tokio_util::io::poll_read_buf(Pin::new(io), cx, buf)
}

/// Header fields as a map; values are copied, so the read buffer is not kept alive by them.
fn header_map(fields: &[httparse::Header<'_>]) -> Result<HeaderMap, Error> {
    let mut headers = HeaderMap::with_capacity(fields.len());
    for field in fields {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| Error::Invalid("invalid header name"))?;
        let value = HeaderValue::from_bytes(field.value)
            .map_err(|_| Error::Invalid("invalid header value"))?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// Whether a comma-separated `Connection` header lists `token`.
fn has_token(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Whether Transfer-Encoding names `chunked` and nothing else.
pub fn only_chunked(headers: &HeaderMap) -> bool {
    let mut codings = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|c| !c.is_empty());
    codings
        .next()
        .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"))
        && codings.next().is_none()
}

/// The Content-Length, when every value (and every list element) agrees; `Err` otherwise.
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ()> {
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for part in value.to_str().map_err(|_| ())?.split(',') {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(());
            }
            let n = part.parse::<u64>().map_err(|_| ())?;
            if length.is_some_and(|l| l != n) {
                return Err(());
            }
            length = Some(n);
        }
    }
    Ok(length)
}

/// Longest chunk-size line, extensions included.
const MAX_CHUNK_LINE: usize = 4096;

/// A chunk-size line (RFC 9112 section 7.1): its length with the CRLF and the size, or `None`
/// while incomplete. Stricter than `httparse::parse_chunk_size`, which takes an empty size as
/// the last chunk and a bare LF inside an extension: at least one and at most 16 hex digits,
/// then only whitespace or `;` extensions without control bytes, then CRLF.
pub(crate) fn chunk_size(buf: &[u8]) -> Result<Option<(usize, u64)>, Error> {
    let Some(lf) = memchr::memchr(b'\n', &buf[..buf.len().min(MAX_CHUNK_LINE)]) else {
        return match buf.len() > MAX_CHUNK_LINE {
            true => Err(Error::Invalid("chunk size line too long")),
            false => Ok(None),
        };
    };
    let line = buf[..lf]
        .strip_suffix(b"\r")
        .ok_or(Error::Invalid("chunk size line not ended by CRLF"))?;
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let zeros = line[..digits].iter().take_while(|&&b| b == b'0').count();
    if digits == 0 || digits - zeros > 16 {
        return Err(Error::Invalid("invalid chunk size"));
    }
    let rest = &line[digits..];
    let extensions = rest.trim_ascii_start();
    let valid = (extensions.is_empty() || extensions.starts_with(b";"))
        && rest
            .iter()
            .all(|&b| b == b'\t' || (b' '..0x7f).contains(&b) || b >= 0x80);
    if !valid {
        return Err(Error::Invalid("invalid chunk extension"));
    }
    let size = line[..digits].iter().fold(0u64, |size, &b| {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => b - b'A' + 10,
        };
        (size << 4) | u64::from(digit)
    });
    Ok(Some((lf + 1, size)))
}

/// How the rest of a response body is delimited.
#[derive(Debug, Clone, Copy)]
enum Framing {
    /// This many bytes are left.
    Length(u64),
    /// Chunked, in this state.
    Chunked(Chunk),
    /// Until the upstream closes.
    Close,
    /// Ended.
    Done,
}

#[derive(Debug, Clone, Copy)]
enum Chunk {
    /// A chunk-size line is next.
    Size,
    /// This many bytes of chunk data are left.
    Data(u64),
    /// The CRLF after chunk data.
    DataEnd,
    /// The trailer section (possibly empty) after the last chunk.
    Trailers,
}

/// The request body being written to the upstream: data frames, framed as chunks when
/// `chunked`, and the trailers.
struct Upload {
    body: ProxyBody,
    chunked: bool,
    /// Bytes queued for the socket: a chunk's size line, its data, its CRLF.
    queue: std::collections::VecDeque<Bytes>,
    /// The body ended; what is queued is the last of it.
    ended: bool,
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upload")
            .field("chunked", &self.chunked)
            .field("queued", &self.queue.len())
            .field("ended", &self.ended)
            .finish()
    }
}

impl Upload {
    fn new(body: ProxyBody, chunked: bool) -> Self {
        Self {
            body,
            chunked,
            queue: std::collections::VecDeque::new(),
            ended: false,
        }
    }

    /// Writes what the body has; `Ready(Ok)` once all of it was written. Sets `moved` when a
    /// byte was written or a frame came from the body.
    fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut Io,
        moved: &mut bool,
    ) -> Poll<Result<(), Error>> {
        loop {
            while !self.queue.is_empty() {
                let mut slices = [io::IoSlice::new(&[]); 4];
                for (slice, bytes) in slices.iter_mut().zip(&self.queue) {
                    *slice = io::IoSlice::new(bytes);
                }
                let slices = &slices[..self.queue.len().min(4)];
                let mut written = match ready!(Pin::new(&mut *io).poll_write_vectored(cx, slices)) {
                    Ok(0) => return Poll::Ready(Err(Error::Io(io::ErrorKind::WriteZero.into()))),
                    Ok(n) => n,
                    Err(err) => return Poll::Ready(Err(Error::Io(err))),
                };
                *moved = true;
                while written > 0 {
                    let Some(front) = self.queue.front_mut() else {
                        break;
                    };
                    if written >= front.len() {
                        written -= front.len();
                        self.queue.pop_front();
                    } else {
                        front.advance(written);
                        written = 0;
                    }
                }
            }
            if self.ended {
                return Poll::Ready(Ok(()));
            }
            let frame = ready!(Pin::new(&mut self.body).poll_frame(cx));
            // An empty frame is no progress: it must not keep the timeout away.
            *moved |= !matches!(&frame, Some(Ok(f)) if f.data_ref().is_some_and(Bytes::is_empty));
            match frame {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if data.is_empty() => {}
                    Ok(data) if self.chunked => {
                        self.queue
                            .push_back(Bytes::from(format!("{:x}\r\n", data.len())));
                        self.queue.push_back(data);
                        self.queue.push_back(Bytes::from_static(b"\r\n"));
                    }
                    Ok(data) => self.queue.push_back(data),
                    Err(frame) => {
                        if let (Ok(trailers), true) = (frame.into_trailers(), self.chunked) {
                            let mut last = b"0\r\n".to_vec();
                            for (name, value) in &trailers {
                                last.extend_from_slice(name.as_str().as_bytes());
                                last.extend_from_slice(b": ");
                                last.extend_from_slice(value.as_bytes());
                                last.extend_from_slice(b"\r\n");
                            }
                            last.extend_from_slice(b"\r\n");
                            self.queue.push_back(Bytes::from(last));
                            self.ended = true;
                        }
                    }
                },
                Some(Err(err)) => return Poll::Ready(Err(Error::RequestBody(err))),
                None => {
                    if self.chunked {
                        self.queue.push_back(Bytes::from_static(b"0\r\n\r\n"));
                    }
                    self.ended = true;
                }
            }
        }
    }
}

/// A response body read from its upstream connection; the connection goes back to the pool
/// when the body ends cleanly (and the request body was all sent).
#[derive(Debug)]
pub struct Body {
    io: Option<Io>,
    buf: BytesMut,
    framing: Framing,
    /// The rest of a request body still being sent while the response arrives.
    upload: Option<Upload>,
    pool: Arc<Shared>,
    reusable: bool,
    read_size: usize,
    /// Armed while a read waits: the response timeout between two reads of the body, as
    /// nginx's `proxy_read_timeout`. Made only once a read has to wait.
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Body {
    /// Ends the body when its framing says so: returns the connection to the pool if clean.
    fn finish_if_done(&mut self) {
        let done = match self.framing {
            Framing::Done => true,
            Framing::Length(0) => {
                self.framing = Framing::Done;
                true
            }
            _ => false,
        };
        if !done {
            return;
        }
        if let Some(io) = self.io.take()
            && self.reusable
            && self.upload.is_none()
            && self.buf.is_empty()
        {
            self.pool.put(io);
        }
        // The buffer is not kept for the next request: an idle connection costs its socket.
        self.buf = BytesMut::new();
    }

    /// Data taken from the front of the buffer: copied when small (the buffer stays free to
    /// reuse), shared when large.
    fn take(&mut self, n: usize) -> Bytes {
        if n <= COPY_MAX {
            let data = Bytes::copy_from_slice(&self.buf[..n]);
            self.buf.advance(n);
            data
        } else {
            self.buf.split_to(n).freeze()
        }
    }

    /// Reads more; `Ok(false)` at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<bool, BoxError>> {
        let Some(io) = self.io.as_mut() else {
            return Poll::Ready(Ok(false));
        };
        let want = self.read_size;
        let n = match poll_read_some(cx, io, &mut self.buf, want) {
            Poll::Ready(n) => n?,
            Poll::Pending => {
                let timeout = self.pool.response_timeout;
                let stall = self
                    .stall
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                ready!(stall.as_mut().poll(cx));
                return Poll::Ready(Err(Error::Timeout(timeout).into()));
            }
        };
        if let Some(stall) = self.stall.as_mut() {
            stall.as_mut().reset(later(self.pool.response_timeout));
        }
        if n == want {
            self.read_size = (self.read_size * 2).min(MAX_READ);
        }
        Poll::Ready(Ok(n > 0))
    }

    /// Up to `left` bytes of body, reading first if none is buffered.
    fn poll_take(&mut self, cx: &mut Context<'_>, left: u64) -> Poll<Result<Bytes, BoxError>> {
        if self.buf.is_empty() {
            ready!(self.poll_more(cx))?;
        }
        let n = usize::try_from(left)
            .unwrap_or(usize::MAX)
            .min(self.buf.len());
        Poll::Ready(Ok(self.take(n)))
    }

    /// Reads more where the framing says more must come: the end of the stream is an error.
    fn poll_more(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match ready!(self.poll_fill(cx))? {
            true => Poll::Ready(Ok(())),
            false => Poll::Ready(Err(Box::new(Error::Io(
                io::ErrorKind::UnexpectedEof.into(),
            )))),
        }
    }

    /// The next frame (`None` at the end), sending the rest of the request body meanwhile.
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Frame<Bytes>>, BoxError>> {
        loop {
            if let (Some(up), Some(io)) = (self.upload.as_mut(), self.io.as_mut())
                && let Poll::Ready(sent) = up.poll_send(cx, io, &mut false)
            {
                self.upload = None;
                match sent {
                    Ok(()) => {}
                    // The upstream stopped reading the request and answers anyway: the answer
                    // is read to its end, and the connection not reused.
                    Err(Error::Io(_)) => self.reusable = false,
                    Err(err) => return Poll::Ready(Err(err.into())),
                }
            }
            match self.framing {
                Framing::Done => {
                    self.finish_if_done();
                    return Poll::Ready(Ok(None));
                }
                Framing::Length(left) => {
                    let data = ready!(self.poll_take(cx, left))?;
                    self.framing = Framing::Length(left - data.len() as u64);
                    self.finish_if_done();
                    return Poll::Ready(Ok(Some(Frame::data(data))));
                }
                Framing::Close => {
                    if self.buf.is_empty() && !ready!(self.poll_fill(cx))? {
                        self.framing = Framing::Done;
                        continue;
                    }
                    let n = self.buf.len();
                    return Poll::Ready(Ok(Some(Frame::data(self.take(n)))));
                }
                Framing::Chunked(Chunk::Size) => match chunk_size(&self.buf)? {
                    Some((len, size)) => {
                        self.buf.advance(len);
                        self.framing = Framing::Chunked(if size == 0 {
                            Chunk::Trailers
                        } else {
                            Chunk::Data(size)
                        });
                    }
                    None => ready!(self.poll_more(cx))?,
                },
                Framing::Chunked(Chunk::Data(left)) => {
                    let data = ready!(self.poll_take(cx, left))?;
                    let left = left - data.len() as u64;
                    self.framing = Framing::Chunked(if left == 0 {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(left)
                    });
                    return Poll::Ready(Ok(Some(Frame::data(data))));
                }
                Framing::Chunked(Chunk::DataEnd) => {
                    if self.buf.len() < 2 {
                        ready!(self.poll_more(cx))?;
                        continue;
                    }
                    if &self.buf[..2] != b"\r\n" {
                        return Poll::Ready(Err(Error::Invalid("chunk not ended by CRLF").into()));
                    }
                    self.buf.advance(2);
                    self.framing = Framing::Chunked(Chunk::Size);
                }
                Framing::Chunked(Chunk::Trailers) => {
                    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    match httparse::parse_headers(&self.buf, &mut fields) {
                        Ok(httparse::Status::Complete((len, fields))) => {
                            let trailers = header_map(fields)?;
                            self.buf.advance(len);
                            self.framing = Framing::Done;
                            self.finish_if_done();
                            if !trailers.is_empty() {
                                return Poll::Ready(Ok(Some(Frame::trailers(trailers))));
                            }
                        }
                        Ok(httparse::Status::Partial) if self.buf.len() > self.pool.max_head => {
                            return Poll::Ready(
                                Err(Error::HeadTooLarge(self.pool.max_head).into()),
                            );
                        }
                        Ok(httparse::Status::Partial) => ready!(self.poll_more(cx))?,
                        Err(_) => {
                            return Poll::Ready(Err(Error::Invalid("malformed trailers").into()));
                        }
                    }
                }
            }
        }
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match ready!(self.poll_next(cx)) {
            Ok(frame) => Poll::Ready(frame.map(Ok)),
            Err(err) => {
                // The connection is in an unknown state: closed, never reused.
                self.io = None;
                self.framing = Framing::Done;
                self.buf = BytesMut::new();
                Poll::Ready(Some(Err(err)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.framing, Framing::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

/// What reading one answer from an upstream gave, for the fuzz target
/// (`proxy::fuzz::upstream_response`).
#[doc(hidden)]
#[derive(Debug)]
pub struct FuzzAnswer {
    /// The head: status, version, headers; or the error.
    pub head: Result<(StatusCode, Version, HeaderMap), Error>,
    /// The body's data frames, and how it ended (an error's text).
    pub data: Vec<Bytes>,
    /// Trailers, if any came.
    pub trailers: Option<HeaderMap>,
    /// How the body ended: `None` cleanly.
    pub body_error: Option<String>,
    /// The connection went back to the pool.
    pub pooled: bool,
}

/// Reads one answer to a request (HEAD when `head_only`) from a connection whose peer sent
/// `bytes` and closed, through the same head parser and body framing as [`Pool::send`].
#[doc(hidden)]
pub async fn fuzz_answer(bytes: &[u8], head_only: bool) -> io::Result<FuzzAnswer> {
    use std::io::Write as _;
    let (mut upstream, ours) = std::os::unix::net::UnixStream::pair()?;
    // Inputs fit the socket's buffer (the fuzzer keeps them small); larger ones are cut.
    upstream.set_nonblocking(true)?;
    let _ = upstream.write_all(bytes);
    drop(upstream);
    ours.set_nonblocking(true)?;
    let mut io = Io::Unix(UnixStream::from_std(ours)?);
    let pool = Pool::unix(
        Path::new("/nonexistent"),
        Options {
            connect_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(60),
            max_head: 8192,
            response_timeout: Duration::from_secs(5),
        },
    );
    let mut buf = BytesMut::new();
    let mut state = HeadState::default();
    let head = std::future::poll_fn(|cx| poll_head(cx, &mut io, &mut buf, &mut state, 8192)).await;
    let mut answer = FuzzAnswer {
        head: Err(Error::Closed),
        data: Vec::new(),
        trailers: None,
        body_error: None,
        pooled: false,
    };
    let (status, version, headers) = match head {
        Ok(head) => head,
        Err(err) => {
            answer.head = Err(err);
            return Ok(answer);
        }
    };
    answer.head = Ok((status, version, headers.clone()));
    let response = match pool.response(io, buf, (status, version, headers), head_only, None, true) {
        Ok(response) => response,
        Err(err) => {
            answer.head = Err(err);
            return Ok(answer);
        }
    };
    if let Ok((_, _, headers)) = &mut answer.head {
        // What the caller sees: the framing headers as the client would get them.
        *headers = response.headers().clone();
    }
    let mut body = response.into_body();
    loop {
        match std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            None => break,
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => answer.data.push(data),
                Err(frame) => answer.trailers = frame.into_trailers().ok(),
            },
            Some(Err(err)) => {
                answer.body_error = Some(err.to_string());
                break;
            }
        }
    }
    drop(body);
    answer.pooled = pool.idle_len() == 1;
    Ok(answer)
}

/// The connection of a `101 Switching Protocols` answer, in the response's extensions, for
/// the caller's tunnel: the socket and the bytes read past the head.
#[derive(Debug, Clone)]
pub struct Upgraded(Arc<Mutex<Option<(Io, Bytes)>>>);

impl Upgraded {
    fn new(io: Io, rest: Bytes) -> Self {
        Self(Arc::new(Mutex::new(Some((io, rest)))))
    }

    /// The connection and the bytes already read from it; `None` after the first call.
    pub fn take(&self) -> Option<(Io, Bytes)> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt as _;
    use http_body_util::BodyExt;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// A pool for an upstream on 127.0.0.1.
    fn local(port: u16, options: Options) -> Pool {
        Pool::tcp(
            &format!("127.0.0.1:{port}").parse().expect("authority"),
            options,
        )
    }

    /// A listener on 127.0.0.1 and its port.
    async fn listen() -> (TcpListener, u16) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        (listener, port)
    }

    /// Options with a 200 ms response timeout.
    fn hasty() -> Options {
        Options {
            response_timeout: Duration::from_millis(200),
            ..options()
        }
    }

    fn options() -> Options {
        Options {
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(5),
            max_head: 64 * 1024,
            response_timeout: Duration::from_secs(5),
        }
    }

    fn get(path: &str) -> Request<ProxyBody> {
        let mut req = Request::new(
            http_body_util::Empty::new()
                .map_err(|e: std::convert::Infallible| -> BoxError { match e {} })
                .boxed(),
        );
        *req.uri_mut() = path.parse().expect("uri");
        req.headers_mut()
            .insert(header::HOST, HeaderValue::from_static("app"));
        req
    }

    /// Serves the canned `answers` in turn, one per request head read, over as many connections
    /// as it takes; returns the port and each request head received.
    async fn server(
        answers: Vec<&'static [u8]>,
        close_after_each: bool,
    ) -> (u16, tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>) {
        let (listener, port) = listen().await;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut answers = answers.into_iter();
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let mut seen = Vec::new();
                loop {
                    let mut chunk = [0u8; 4096];
                    let n = conn.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    seen.extend_from_slice(&chunk[..n]);
                    if !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        continue;
                    }
                    let _ = tx.send(std::mem::take(&mut seen));
                    let Some(answer) = answers.next() else {
                        return;
                    };
                    // The last answer closes, as a close-delimited body needs.
                    let last = answers.as_slice().is_empty();
                    if conn.write_all(answer).await.is_err() || close_after_each || last {
                        break;
                    }
                }
            }
        });
        (port, rx)
    }

    async fn text(response: Response<Body>) -> (StatusCode, String, Option<HeaderMap>) {
        let status = response.status();
        let collected = response.into_body().collect().await.expect("body");
        let trailers = collected.trailers().cloned();
        let bytes = collected.to_bytes();
        (
            status,
            String::from_utf8_lossy(&bytes).into_owned(),
            trailers,
        )
    }

    #[tokio::test]
    async fn keeps_alive_and_frames_by_length_chunks_and_close() {
        let (port, mut seen) = server(
            vec![
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nx-sum: 1\r\n\r\n",
                b"HTTP/1.1 204 No Content\r\n\r\n",
                b"HTTP/1.1 200 OK\r\n\r\nuntil close",
            ],
            false,
        )
        .await;
        let pool = local(port, options());
        let (status, body, _) = text(pool.send(get("/a?b")).await.expect("first")).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "hello"));
        let head = String::from_utf8(seen.recv().await.expect("head")).expect("utf8");
        assert!(
            head.starts_with("GET /a?b HTTP/1.1\r\nhost: app\r\n"),
            "{head}"
        );
        assert_eq!(pool.idle_len(), 1);
        let (_, body, trailers) = text(pool.send(get("/")).await.expect("chunked")).await;
        assert_eq!(body, "abcde");
        assert_eq!(trailers.expect("trailers")["x-sum"], "1");
        let (status, body, _) = text(pool.send(get("/")).await.expect("204")).await;
        assert_eq!((status, body.as_str()), (StatusCode::NO_CONTENT, ""));
        let (_, body, _) = text(pool.send(get("/")).await.expect("close")).await;
        assert_eq!(body, "until close");
        // One connection carried all four; the last one ended by closing, so it is not kept.
        assert_eq!(pool.idle_len(), 0);
    }

    /// Reads one request head from `conn`; false at EOF.
    async fn read_head(conn: &mut TcpStream) -> bool {
        let mut seen = Vec::new();
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            let mut chunk = [0u8; 4096];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => seen.extend_from_slice(&chunk[..n]),
            }
        }
        true
    }

    #[tokio::test]
    async fn a_reused_connection_closed_by_the_upstream_is_retried_once() {
        // The stale keep-alive race: the upstream reads the second request on a kept-alive
        // connection and closes it unanswered; the next connection answers.
        let (listener, port) = listen().await;
        let server = tokio::spawn(async move {
            let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
            let (mut first, _) = listener.accept().await.expect("accept");
            assert!(read_head(&mut first).await);
            first.write_all(ok).await.expect("answer");
            assert!(read_head(&mut first).await);
            drop(first);
            let (mut second, _) = listener.accept().await.expect("accept");
            assert!(read_head(&mut second).await);
            second.write_all(ok).await.expect("answer");
            // A POST is not idempotent: after the same race it is answered 502 by the caller.
            assert!(read_head(&mut second).await);
        });
        let pool = local(port, options());
        for _ in 0..2 {
            let (status, body, _) = text(pool.send(get("/")).await.expect("answered")).await;
            assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
        }
        let mut post = get("/");
        *post.method_mut() = Method::POST;
        let sent = pool.send(post);
        let (sent, served) = tokio::join!(sent, server);
        served.expect("server");
        assert!(matches!(sent, Err(Error::Closed)), "{sent:?}");
    }

    #[tokio::test]
    async fn bad_responses_are_errors() {
        for answer in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nshort"[..],
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
        ] {
            let (port, _seen) = server(vec![answer], true).await;
            let pool = local(port, options());
            let response = pool.send(get("/")).await.expect("head");
            assert!(response.into_body().collect().await.is_err(), "{answer:?}");
        }
        for answer in [
            &b"nonsense\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n\x1f\x8b",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
        ] {
            let (port, _seen) = server(vec![answer], true).await;
            let pool = local(port, options());
            let err = pool.send(get("/")).await.expect_err("malformed");
            assert!(matches!(err, Error::Invalid(_)), "{err:?}");
        }
        let (listener, port) = listen().await;
        drop(listener);
        let pool = local(port, options());
        assert!(pool.send(get("/")).await.expect_err("refused").is_connect());
    }

    #[tokio::test]
    async fn the_response_timeout_counts_from_the_end_of_the_request_body() {
        // The upload takes 400 ms, longer than the 200 ms the upstream has to answer once it
        // has the whole request; it answers at once, then never again.
        let (listener, port) = listen().await;
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.expect("accept");
            let mut seen = Vec::new();
            while !seen.ends_with(b"0\r\n\r\n") {
                let mut chunk = [0u8; 4096];
                let n = conn.read(&mut chunk).await.expect("read");
                assert!(n > 0, "request cut: {}", String::from_utf8_lossy(&seen));
                seen.extend_from_slice(&chunk[..n]);
            }
            let text = String::from_utf8_lossy(&seen);
            assert!(text.contains("transfer-encoding: chunked\r\n"), "{text}");
            assert!(
                text.ends_with("\r\n\r\n3\r\nabc\r\n3\r\nabc\r\n3\r\nabc\r\n3\r\nabc\r\n0\r\n\r\n"),
                "{text}"
            );
            conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .await
                .expect("answer");
            // The next request is read and never answered.
            assert!(read_head(&mut conn).await);
            std::future::pending::<()>().await;
        });
        let pool = local(port, hasty());
        let chunks = futures::stream::unfold(0, |i| async move {
            if i == 4 {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            Some((
                Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"abc"))),
                i + 1,
            ))
        });
        let mut upload = Request::new(BodyExt::boxed(http_body_util::StreamBody::new(chunks)));
        *upload.method_mut() = Method::POST;
        *upload.uri_mut() = "/".parse().expect("uri");
        let (status, _, _) = text(pool.send(upload).await.expect("answered")).await;
        assert_eq!(status, StatusCode::OK);
        let err = pool.send(get("/")).await.expect_err("no answer");
        assert!(matches!(err, Error::Timeout(_)), "{err:?}");
    }

    #[tokio::test]
    async fn ipv6_and_unix_upstreams() {
        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        if let Ok(listener) = TcpListener::bind("[::1]:0").await {
            let port = listener.local_addr().expect("addr").port();
            tokio::spawn(async move {
                let (mut conn, _) = listener.accept().await.expect("accept");
                assert!(read_head(&mut conn).await);
                conn.write_all(answer).await.expect("answer");
            });
            let pool = Pool::tcp(
                &format!("[::1]:{port}").parse().expect("authority"),
                options(),
            );
            let (_, body, _) = text(pool.send(get("/")).await.expect("ipv6")).await;
            assert_eq!(body, "ok");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("app.sock");
        let listener = tokio::net::UnixListener::bind(&path).expect("bind");
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.expect("accept");
            let mut seen = Vec::new();
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                let mut chunk = [0u8; 1024];
                let n = conn.read(&mut chunk).await.expect("read");
                assert!(n > 0);
                seen.extend_from_slice(&chunk[..n]);
            }
            conn.write_all(answer).await.expect("answer");
        });
        let pool = Pool::unix(&path, options());
        let (_, body, _) = text(pool.send(get("/")).await.expect("unix")).await;
        assert_eq!(body, "ok");
        let err = Pool::unix(&dir.path().join("none.sock"), options())
            .send(get("/"))
            .await
            .expect_err("no socket");
        assert!(err.is_connect(), "{err:?}");
    }

    #[test]
    fn chunk_size_lines() {
        assert_eq!(chunk_size(b"1a\r\n").expect("valid"), Some((4, 26)));
        assert_eq!(
            chunk_size(b"0;name=\"v\" \r\nrest").expect("valid"),
            Some((13, 0))
        );
        assert_eq!(
            chunk_size(b"FFFFFFFFFFFFFFFF\r\n").expect("valid"),
            Some((18, u64::MAX))
        );
        assert_eq!(chunk_size(b"1a").expect("partial"), None);
        assert_eq!(
            chunk_size(b"00000000000000001\r\n").expect("zeros"),
            Some((19, 1))
        );
        for bad in [
            &b"\r\n"[..],
            b";x\r\n",
            b"1\n",
            b"1;a\x01\r\n",
            b"1 x\r\n",
            b"10000000000000000\r\n",
            b"g\r\n",
        ] {
            assert!(chunk_size(bad).is_err(), "{bad:?}");
        }
        assert!(chunk_size(&[b'1'; MAX_CHUNK_LINE + 1]).is_err());
    }

    /// A request body that sends one chunk and then never ends.
    fn stalled_upload() -> Request<ProxyBody> {
        let chunks = futures::stream::once(async {
            Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"abc")))
        })
        .chain(futures::stream::pending());
        let mut req = Request::new(BodyExt::boxed(http_body_util::StreamBody::new(chunks)));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = "/".parse().expect("uri");
        req
    }

    #[tokio::test]
    async fn an_answer_before_the_request_body_ended_is_passed_on_and_a_stall_times_out() {
        // Chunked framing and Content-Length both: the length is dropped, the connection too.
        let (port, _seen) = server(
            vec![
                b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 3\r\n\r\nbig",
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 99\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            ],
            false,
        )
        .await;
        let pool = local(port, hasty());
        let response = pool.send(stalled_upload()).await.expect("early answer");
        let (status, body, _) = text(response).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::PAYLOAD_TOO_LARGE, "big")
        );
        // The request body never ended: that connection is not reused.
        assert_eq!(pool.idle_len(), 0);
        let response = pool.send(get("/")).await.expect("both framings");
        assert!(!response.headers().contains_key(header::CONTENT_LENGTH));
        let (_, body, _) = text(response).await;
        assert_eq!(body, "abc");
        assert_eq!(pool.idle_len(), 0);
        // An upload that stalls, to an upstream that waits for it: 504 after the timeout.
        let (listener, port) = listen().await;
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.expect("accept");
            assert!(read_head(&mut conn).await);
            std::future::pending::<()>().await;
        });
        let pool = local(port, hasty());
        let err = pool.send(stalled_upload()).await.expect_err("stalled");
        assert!(matches!(err, Error::Timeout(_)), "{err:?}");
    }

    #[tokio::test]
    async fn a_head_over_the_limit_and_a_stalled_body_are_errors() {
        let big: &'static [u8] = format!("HTTP/1.1 200 OK\r\nx: {}\r\n\r\n", "a".repeat(9000))
            .into_bytes()
            .leak();
        let stalled: &'static [u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nabc";
        // A third answer, never sent, keeps the server from closing after the second.
        let (port, _seen) = server(vec![big, stalled, b""], false).await;
        let pool = local(
            port,
            Options {
                max_head: 8192,
                response_timeout: Duration::from_millis(200),
                ..options()
            },
        );
        let err = pool.send(get("/")).await.expect_err("too large");
        assert!(matches!(err, Error::HeadTooLarge(8192)), "{err:?}");
        // The upstream sends 3 of 9 bytes and stops: the body fails after the timeout.
        let response = pool.send(get("/")).await.expect("head");
        let err = response.into_body().collect().await.expect_err("stalled");
        assert!(
            err.downcast_ref::<Error>()
                .is_some_and(|e| matches!(e, Error::Timeout(_))),
            "{err:?}"
        );
    }

    /// Found by the upstream_response fuzz target: a 204 with both framings kept its
    /// Content-Length and its connection.
    #[tokio::test]
    async fn both_framings_lose_the_length_whatever_the_status() {
        let (port, _seen) = server(
            vec![
                b"HTTP/1.1 204 No Content\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n",
                b"",
            ],
            false,
        )
        .await;
        let pool = local(port, options());
        let response = pool.send(get("/")).await.expect("answered");
        assert!(!response.headers().contains_key(header::CONTENT_LENGTH));
        assert!(response.body().is_end_stream());
        drop(response);
        assert_eq!(pool.idle_len(), 0);
    }

    #[tokio::test]
    async fn endless_interim_responses_are_an_error() {
        let flood: &'static [u8] = b"HTTP/1.1 100 Continue\r\n\r\n".repeat(17).leak();
        let (port, _seen) = server(vec![flood], false).await;
        let pool = local(port, options());
        let err = pool.send(get("/")).await.expect_err("flood");
        assert!(matches!(err, Error::Invalid(_)), "{err:?}");
    }

    #[tokio::test]
    async fn idle_connections_are_closed_after_the_idle_timeout() {
        let (port, _seen) =
            server(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"], false).await;
        let pool = local(
            port,
            Options {
                idle_timeout: Duration::from_millis(50),
                ..options()
            },
        );
        let response = pool.send(get("/")).await.expect("answered");
        assert!(response.body().is_end_stream());
        assert_eq!(pool.idle_len(), 1);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(pool.idle_len(), 0);
    }
}
