//! One client connection's deadlines and budgets, as nginx and Envoy bound theirs:
//! - the TLS handshake (`--handshake-timeout`, in `proxy::accept`);
//! - the first request head, from the connection's start (`--header-timeout`): a connection
//!   that sends nothing, one byte, or only the HTTP/2 preface is closed;
//! - each later HTTP/1.1 head, from its first byte (`--header-timeout`);
//! - no request in flight (`--keepalive-timeout`): HTTP/1.1 between requests, HTTP/2 without a
//!   stream (GOAWAY first);
//! - no progress writing to the client (`--send-timeout`): at the socket for the connection,
//!   and per HTTP/2 stream (a stream whose flow-control window stays at 0) through
//!   [`StreamExecutor`]; what is cut drops its upstream connection unpooled;
//! - requests per connection (`--max-requests-per-connection`), then GOAWAY or `close`;
//! - HTTP/2 streams the client resets before their answer ended (rapid reset), a token bucket
//!   of [`RESET_BURST`] refilled at [`RESET_RATE`] a second, then GOAWAY `ENHANCE_YOUR_CALM`
//!   ([`Calm`]) and the close.
//!
//! hyper's own HTTP/1.1 header timer is not used: it also runs while a keep-alive connection
//! waits for the next head, so it cannot tell a slow head from an idle connection.
//!
//! The watchdog is a loop in the connection's task ([`Activity::check`] says what is due);
//! what it watches is set by the connection's IO ([`Watched`]), each request's guard
//! ([`InFlight`], carried by the answer's body, [`Tracked`]) and, for HTTP/2, each stream's
//! progress ([`StreamProgress`]). Timestamps are milliseconds since the connection opened,
//! plus one, so that 0 means "none"; the clock is read only when a state changes.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::warn;

/// HTTP/2 streams a client may reset before their answer ended, at once.
pub const RESET_BURST: f64 = 100.0;
/// ... and per second after that.
pub const RESET_RATE: f64 = 10.0;

/// The deadlines of a connection (from [`crate::proxy::Timeouts`]).
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// A request head: the first from the start, later ones from their first byte.
    pub header: Duration,
    /// No request in flight.
    pub keepalive: Duration,
    /// No progress writing to the client.
    pub send: Duration,
    /// Requests one connection carries.
    pub max_requests: u64,
}

/// Why the watchdog ends a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// No complete first head within the header timeout.
    FirstHead,
    /// A later head not complete within the header timeout from its first byte.
    Head,
    /// No request in flight for the keep-alive timeout.
    Idle,
    /// A write to the client made no progress for the send timeout.
    Send,
}

/// What the connection's watchdog knows, shared with its IO and its requests.
#[derive(Debug)]
pub struct Activity {
    start: Instant,
    /// The watchdog is told when this many requests began.
    max_requests: u64,
    /// When the header clock started (after the TLS handshake).
    opened: AtomicU64,
    in_flight: AtomicUsize,
    requests: AtomicU64,
    /// When `in_flight` last became 0.
    idle_since: AtomicU64,
    /// The first read after `in_flight` became 0 (HTTP/1.1: a head begins).
    read_since_idle: AtomicU64,
    /// A write returned Pending and none made progress since.
    write_blocked: AtomicU64,
    h2: AtomicBool,
    /// Token bucket of early resets: tokens left and when it was last filled.
    resets: Mutex<(f64, Instant)>,
    /// Set once the client reset too many streams early.
    calm: AtomicBool,
    /// Told on the changes that bring a deadline nearer.
    changed: Notify,
}

impl Activity {
    /// A connection opened now, that may carry `max_requests`.
    pub fn new(max_requests: u64) -> Arc<Self> {
        let start = Instant::now();
        Arc::new(Self {
            start,
            max_requests,
            opened: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            read_since_idle: AtomicU64::new(0),
            write_blocked: AtomicU64::new(0),
            h2: AtomicBool::new(false),
            resets: Mutex::new((RESET_BURST, start)),
            calm: AtomicBool::new(false),
            changed: Notify::new(),
        })
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }

    fn at(&self, stamp: u64) -> Instant {
        self.start + Duration::from_millis(stamp.saturating_sub(1))
    }

    /// The TLS handshake ended: the first head's clock starts now.
    pub fn opened(&self) {
        self.opened.store(self.now(), Ordering::Relaxed);
    }

    /// A request's head arrived (`h2`: an HTTP/2 stream); the guard ends it when dropped.
    pub fn begin(self: &Arc<Self>, h2: bool) -> InFlight {
        if h2 && !self.h2.load(Ordering::Relaxed) {
            self.h2.store(true, Ordering::Relaxed);
        }
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let requests = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        if requests == self.max_requests {
            self.changed.notify_one();
        }
        InFlight {
            activity: self.clone(),
            h2,
            done: false,
        }
    }

    fn end(&self, h2: bool, done: bool) {
        if h2 && !done && self.reset_early() {
            self.calm.store(true, Ordering::Relaxed);
            self.changed.notify_one();
        }
        self.idle_since.fetch_max(self.now(), Ordering::Release);
        self.read_since_idle.store(0, Ordering::Relaxed);
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.changed.notify_one();
        }
    }

    /// Counts a stream reset before its answer ended; true once the budget is spent.
    fn reset_early(&self) -> bool {
        let mut bucket = self.resets.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let refill = now.duration_since(bucket.1).as_secs_f64() * RESET_RATE;
        bucket.0 = (bucket.0 + refill).min(RESET_BURST) - 1.0;
        bucket.1 = now;
        bucket.0 < 0.0
    }

    fn on_read(&self) {
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self.requests.load(Ordering::Relaxed) > 0
            && self.read_since_idle.load(Ordering::Relaxed) == 0
        {
            self.read_since_idle.store(self.now(), Ordering::Relaxed);
            self.changed.notify_one();
        }
    }

    fn on_write(&self, blocked: bool) {
        let was = self.write_blocked.load(Ordering::Relaxed);
        match (blocked, was) {
            (true, 0) => {
                self.write_blocked.store(self.now(), Ordering::Relaxed);
                self.changed.notify_one();
            }
            (false, 1..) => self.write_blocked.store(0, Ordering::Relaxed),
            _ => {}
        }
    }

    /// Requests begun so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Whether the client reset more streams early than the budget allows.
    pub fn calm_down(&self) -> bool {
        self.calm.load(Ordering::Relaxed)
    }

    /// Whether the connection speaks HTTP/2 (known from its first request).
    pub fn is_h2(&self) -> bool {
        self.h2.load(Ordering::Relaxed)
    }

    /// Waits until something changed that may bring a deadline nearer.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// The nearest deadline still ahead, or the one that passed.
    pub fn check(&self, deadlines: &Deadlines, now: Instant) -> Result<Option<Instant>, Expired> {
        let mut next: Option<Instant> = None;
        let mut due = |at: Instant, why: Expired| {
            if now >= at {
                return Err(why);
            }
            next = Some(next.map_or(at, |n| n.min(at)));
            Ok(())
        };
        let blocked = self.write_blocked.load(Ordering::Relaxed);
        if blocked != 0 {
            due(self.at(blocked) + deadlines.send, Expired::Send)?;
        }
        if self.in_flight.load(Ordering::Acquire) == 0 {
            if self.requests.load(Ordering::Relaxed) == 0 {
                let opened = self.opened.load(Ordering::Relaxed).max(1);
                due(self.at(opened) + deadlines.header, Expired::FirstHead)?;
            } else {
                let idle = self.idle_since.load(Ordering::Acquire);
                due(self.at(idle) + deadlines.keepalive, Expired::Idle)?;
                let read = self.read_since_idle.load(Ordering::Relaxed);
                if read != 0 && !self.is_h2() {
                    due(self.at(read) + deadlines.header, Expired::Head)?;
                }
            }
        }
        Ok(next)
    }
}

/// One request in flight; ends when dropped (with its answer's body, or the request's future
/// when the client reset it first).
#[derive(Debug)]
pub struct InFlight {
    activity: Arc<Activity>,
    h2: bool,
    /// The answer was sent whole (or failed on the upstream's side): not a reset.
    done: bool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.activity.end(self.h2, self.done);
    }
}

/// The client connection's socket, telling its [`Activity`] of reads and of writes that wait.
#[derive(Debug)]
pub struct Watched<I> {
    io: I,
    activity: Arc<Activity>,
}

impl<I> Watched<I> {
    /// Wraps `io`.
    pub fn new(io: I, activity: Arc<Activity>) -> Self {
        Self { io, activity }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.on_read();
        }
        poll
    }
}

impl<I: AsyncWrite + Unpin> Watched<I> {
    fn track(&self, poll: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        match &poll {
            Poll::Pending => self.activity.on_write(true),
            Poll::Ready(Ok(n)) if *n > 0 => self.activity.on_write(false),
            Poll::Ready(_) => {}
        }
        poll
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_write(cx, buf);
        this.track(poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.track(poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// GOAWAY's frame type (RFC 9113 section 6.8).
const GOAWAY: u8 = 0x7;
/// Where a GOAWAY payload's error code sits (after the last stream identifier).
const GOAWAY_CODE: std::ops::Range<usize> = 4..8;
/// The last byte of `ENHANCE_YOUR_CALM` (0xb); `NO_ERROR`'s is 0, their others are too.
const ENHANCE_YOUR_CALM: u8 = 0xb;

/// The client connection as hyper writes to it (above TLS). Once the client spent its budget
/// of early resets, the GOAWAY frames h2 sends with `NO_ERROR` carry `ENHANCE_YOUR_CALM`
/// instead, as h2's own bounds do: hyper can only shut a connection down gracefully. The
/// frames are followed as they are written; an HTTP/1.1 connection is passed through.
#[derive(Debug)]
pub struct Calm<I> {
    io: I,
    activity: Arc<Activity>,
    /// Where the bytes written so far ended.
    frames: FrameCursor,
}

impl<I> Calm<I> {
    /// Wraps `io`.
    pub fn new(io: I, activity: Arc<Activity>) -> Self {
        Self {
            io,
            activity,
            frames: FrameCursor::Unknown,
        }
    }
}

/// A position in the HTTP/2 frames a server writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FrameCursor {
    /// Nothing written yet. An HTTP/2 server starts with its SETTINGS frame, whose length's
    /// first byte is 0; an HTTP/1.1 answer starts with `H`.
    Unknown,
    /// Not HTTP/2.
    Other,
    /// In a frame's 9-byte header, `have` bytes of it written.
    Header { header: [u8; 9], have: usize },
    /// In a payload of `len` bytes, `at` of them written; for a GOAWAY frame, whether a byte
    /// of its error code written so far was not 0.
    Payload {
        len: usize,
        at: usize,
        goaway: bool,
        coded: bool,
    },
}

impl FrameCursor {
    const START: Self = Self::Header {
        header: [0; 9],
        have: 0,
    };

    /// The cursor once `bytes` are written from here.
    fn advance(mut self, mut bytes: &[u8]) -> Self {
        while let Some(&first) = bytes.first() {
            let n;
            (self, n) = match self {
                Self::Unknown if first == 0 => (Self::START, 0),
                Self::Unknown | Self::Other => return Self::Other,
                Self::Header { mut header, have } => {
                    let n = bytes.len().min(9 - have);
                    header[have..have + n].copy_from_slice(&bytes[..n]);
                    if have + n < 9 {
                        let have = have + n;
                        (Self::Header { header, have }, n)
                    } else {
                        let len = usize::from(header[0]) << 16
                            | usize::from(header[1]) << 8
                            | usize::from(header[2]);
                        let goaway = header[3] == GOAWAY;
                        let next = match len {
                            0 => Self::START,
                            _ => Self::Payload {
                                len,
                                at: 0,
                                goaway,
                                coded: false,
                            },
                        };
                        (next, n)
                    }
                }
                Self::Payload {
                    len,
                    at,
                    goaway,
                    mut coded,
                } => {
                    let n = bytes.len().min(len - at);
                    if goaway {
                        coded |= (at..at + n)
                            .zip(bytes)
                            .any(|(i, &b)| GOAWAY_CODE.contains(&i) && b != 0);
                    }
                    let next = match at + n == len {
                        true => Self::START,
                        false => Self::Payload {
                            len,
                            at: at + n,
                            goaway,
                            coded,
                        },
                    };
                    (next, n)
                }
            };
            bytes = &bytes[n..];
        }
        self
    }

    /// Where in `bytes`, written from here, the last byte of a `NO_ERROR` GOAWAY's error
    /// code is.
    fn no_error_code(mut self, bytes: &[u8]) -> Option<usize> {
        let last = GOAWAY_CODE.end - 1;
        let mut offset = 0;
        while offset < bytes.len() {
            let step = match self {
                Self::Payload {
                    len,
                    at,
                    goaway: true,
                    coded,
                } if len >= GOAWAY_CODE.end && at <= last => match at == last {
                    true if !coded && bytes[offset] == 0 => return Some(offset),
                    true => len - at,
                    false => last - at,
                },
                Self::Payload { len, at, .. } => len - at,
                Self::Header { have, .. } => 9 - have,
                // One byte tells.
                Self::Unknown => 1,
                Self::Other => return None,
            };
            let end = bytes.len().min(offset + step);
            self = self.advance(&bytes[offset..end]);
            offset = end;
        }
        None
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Calm<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Calm<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let mut out = buf;
        if this.activity.calm_down()
            && let Some(at) = this.frames.no_error_code(buf)
        {
            // Up to the code's last byte; that byte, patched, alone.
            out = match at {
                0 => std::slice::from_ref(&ENHANCE_YOUR_CALM),
                _ => &buf[..at],
            };
        }
        let n = ready!(Pin::new(&mut this.io).poll_write(cx, out))?;
        this.frames = this.frames.advance(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // A connection told to calm down is about to close: one slice at a time is enough.
        if this.activity.calm_down() {
            let first = bufs
                .iter()
                .find(|b| !b.is_empty())
                .map_or(&[][..], |b| &b[..]);
            return Pin::new(this).poll_write(cx, first);
        }
        let mut n = ready!(Pin::new(&mut this.io).poll_write_vectored(cx, bufs))?;
        let written = n;
        for buf in bufs {
            if n == 0 {
                break;
            }
            let part = &buf[..n.min(buf.len())];
            this.frames = this.frames.advance(part);
            n -= part.len();
        }
        Poll::Ready(Ok(written))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Whether an HTTP/2 stream's answer waits for the client: its body handed data that was not
/// taken since (the stream's window is at 0).
#[derive(Debug)]
pub struct StreamProgress {
    start: Instant,
    /// When data was handed and not taken since (milliseconds since `start`, plus one).
    waiting_since: AtomicU64,
}

impl StreamProgress {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            waiting_since: AtomicU64::new(0),
        }
    }

    fn handed(&self) {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1;
        self.waiting_since.store(now, Ordering::Relaxed);
    }

    fn pulled(&self) {
        self.waiting_since.store(0, Ordering::Relaxed);
    }

    /// Ends once the stream waited for the client for `timeout` in one go.
    async fn stalled(&self, timeout: Duration) {
        loop {
            let since = self.waiting_since.load(Ordering::Relaxed);
            if since == 0 {
                tokio::time::sleep(timeout).await;
                continue;
            }
            let at = self.start + Duration::from_millis(since - 1) + timeout;
            if Instant::now() >= at {
                return;
            }
            tokio::time::sleep_until(at).await;
        }
    }
}

tokio::task_local! {
    /// The progress of the HTTP/2 stream whose task this is (set by [`StreamExecutor`]).
    static STREAM: Arc<StreamProgress>;
}

/// The progress of the HTTP/2 stream being served on this task, if any.
pub fn stream_progress() -> Option<Arc<StreamProgress>> {
    STREAM.try_with(Arc::clone).ok()
}

/// Spawns hyper's HTTP/2 stream tasks (tokio's executor otherwise), each ended (the stream
/// reset, its answer's body and upstream connection dropped) once its answer waited for the
/// client for the send timeout in one go: a window the client keeps at 0 holds nothing.
#[derive(Debug, Clone)]
pub struct StreamExecutor {
    /// The send timeout.
    pub send: Duration,
    /// The client, for the log.
    pub peer: SocketAddr,
}

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        let (timeout, peer) = (self.send, self.peer);
        let progress = Arc::new(StreamProgress::new());
        tokio::spawn(async move {
            let served = STREAM.scope(progress.clone(), fut);
            tokio::select! {
                biased;
                _ = served => {}
                () = progress.stalled(timeout) => {
                    warn!(client = %peer, ?timeout, "client took none of an HTTP/2 answer for the send timeout: stream reset, upstream connection closed");
                }
            }
        });
    }
}

/// An answer's body that ends its request's [`InFlight`] when dropped, and tells its HTTP/2
/// stream's [`StreamProgress`] when it waits for the client.
#[derive(Debug)]
pub struct Tracked<B> {
    inner: B,
    guard: InFlight,
    progress: Option<Arc<StreamProgress>>,
}

impl<B: Body> Tracked<B> {
    /// Wraps the answer's body.
    pub fn new(inner: B, mut guard: InFlight, progress: Option<Arc<StreamProgress>>) -> Self {
        // An answer without a body may never be polled: it is sent whole with its head.
        guard.done = inner.is_end_stream();
        Self {
            inner,
            guard,
            progress,
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(progress) = &self.progress {
            progress.pulled();
        }
        let poll = Pin::new(&mut self.inner).poll_frame(cx);
        match &poll {
            Poll::Ready(Some(Ok(frame))) if frame.is_data() => {
                if self.inner.is_end_stream() {
                    self.guard.done = true;
                } else if let Some(progress) = &self.progress {
                    progress.handed();
                }
            }
            // The end, or an upstream failure: not the client's reset.
            Poll::Ready(_) => self.guard.done = true,
            Poll::Pending => {}
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn frame(kind: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = u32::try_from(payload.len()).expect("small");
        let mut out = len.to_be_bytes()[1..].to_vec();
        out.extend([kind, 0]);
        out.extend(stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// What the peer reads after `bytes` went through a [`Calm`] in pieces of `piece` bytes:
    /// the first `before` as vectored writes of two slices, then the rest, after the client
    /// spent its budget when `calm`.
    async fn through(bytes: &[u8], before: usize, piece: usize, calm: bool) -> Vec<u8> {
        let activity = Activity::new(u64::MAX);
        let (ours, mut theirs) = tokio::io::duplex(64 * 1024);
        let mut ours = Calm::new(ours, activity.clone());
        let mut rest = &bytes[..before];
        while !rest.is_empty() {
            let (a, b) = rest[..rest.len().min(piece)].split_at(piece.min(rest.len()) / 2);
            let n = ours
                .write_vectored(&[io::IoSlice::new(a), io::IoSlice::new(b)])
                .await
                .expect("write");
            rest = &rest[n..];
        }
        activity.calm.store(calm, Ordering::Relaxed);
        for chunk in bytes[before..].chunks(piece) {
            ours.write_all(chunk).await.expect("write");
        }
        drop(ours);
        let mut seen = Vec::new();
        theirs.read_to_end(&mut seen).await.expect("read");
        seen
    }

    #[tokio::test]
    async fn goaway_says_enhance_your_calm_once_calm() {
        let goaway = |code: u32| {
            let mut payload = 7u32.to_be_bytes().to_vec();
            payload.extend(code.to_be_bytes());
            payload.extend(b"debug");
            frame(GOAWAY, 0, &payload)
        };
        let mut h2 = frame(0x4, 0, &[0, 3, 0, 0, 0, 128]);
        h2.extend(frame(0x0, 1, &[0; 300]));
        let before = h2.len();
        // A DATA frame whose payload looks like a GOAWAY is left alone.
        h2.extend(frame(0x0, 3, &goaway(0)));
        h2.extend(goaway(0));
        h2.extend(frame(0x6, 0, &[0; 8]));
        h2.extend(goaway(0));
        h2.extend(goaway(1));
        let mut calm = h2.clone();
        let at = |nth: usize| {
            let mut offset = 0;
            let mut seen = 0;
            loop {
                let len = usize::from(h2[offset + 2]) | usize::from(h2[offset + 1]) << 8;
                if h2[offset + 3] == GOAWAY {
                    if seen == nth {
                        return offset + 9 + GOAWAY_CODE.start;
                    }
                    seen += 1;
                }
                offset += 9 + len;
            }
        };
        for nth in [0, 1] {
            calm[at(nth) + 3] = ENHANCE_YOUR_CALM;
        }
        for piece in [1, 2, 3, 5, 7, 9, 13, 4096] {
            assert_eq!(
                through(&h2, before, piece, true).await,
                calm,
                "pieces of {piece}"
            );
            assert_eq!(
                through(&h2, before, piece, false).await,
                h2,
                "pieces of {piece}"
            );
        }
        let http1 = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(through(http1, 0, 3, true).await, http1);
    }
}
