//! The access log: one line per request on stdout, written when the response body ends (so
//! the byte count is what the client got), nginx `combined` or JSON. A request cut before it
//! was answered (client gone, drain timeout) is logged as `499` with the flag `DC`.
//!
//! Lines are buffered and written by [`flusher`] once the requests that are ready now have
//! run (it yields to them first): one `write` for every line of a busy moment instead of one
//! per line (a `write` per request was a tenth of the proxy's CPU time per request), and no
//! delay when the proxy is idle. A full buffer is written at once.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use hyper::header::HeaderValue;
use hyper::http::uri::PathAndQuery;
use hyper::{Method, Version};

use crate::proxy::AccessLog;

/// What the log line says about one request, filled while it is handled. The request's parts
/// are kept as they came (cheap reference-counted clones), formatted only when the line is
/// written.
#[derive(Debug)]
pub struct Entry {
    /// `--access-log` format.
    pub format: AccessLog,
    /// The client.
    pub peer: SocketAddr,
    /// Request method.
    pub method: Method,
    /// Request target (path and query).
    pub target: Option<PathAndQuery>,
    /// Request version.
    pub version: Version,
    /// Host header (or `:authority`), for the JSON format.
    pub host: Option<HeaderValue>,
    /// Response status.
    pub status: u16,
    /// Referer header.
    pub referer: Option<HeaderValue>,
    /// User-Agent header.
    pub user_agent: Option<HeaderValue>,
    /// Upstream the request went to, or `-`.
    pub upstream: Arc<str>,
    /// Envoy-style response flags (`UF`, `UT`, `NR`, ...) or `-`.
    pub flags: &'static str,
    /// When the request head was read.
    pub start: Instant,
    /// Body bytes sent so far.
    pub bytes: u64,
    /// Set once a response exists; otherwise the request was cut.
    pub answered: bool,
}

impl Drop for Entry {
    fn drop(&mut self) {
        if !self.answered {
            self.status = 499;
            self.flags = "DC";
        }
        self.write();
    }
}

/// The line being built, and the time of day of the last line (nginx's `$time_local` in UTC),
/// formatted once a second instead of per line.
#[derive(Default)]
struct Scratch {
    second: u64,
    date: String,
    line: String,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Lines not written yet, for every proxy of the process (they share stdout).
static BUFFER: Mutex<Vec<u8>> = Mutex::new(Vec::new());
/// Told when the buffer stops being empty.
static PENDING: tokio::sync::Notify = tokio::sync::Notify::const_new();
/// Above this many bytes the buffer is written by the request that filled it.
const FULL: usize = 32 * 1024;

fn buffer() -> std::sync::MutexGuard<'static, Vec<u8>> {
    // A poisoned lock means a panic mid-append: at worst a cut line, still worth writing.
    BUFFER.lock().unwrap_or_else(|e| e.into_inner())
}

/// Queues one line (or writes it with the rest when the buffer is full).
fn emit(line: &[u8]) {
    let mut buffer = buffer();
    let was_empty = buffer.is_empty();
    buffer.extend_from_slice(line);
    if buffer.len() >= FULL {
        write_out(&mut buffer);
    } else if was_empty {
        PENDING.notify_one();
    }
}

fn write_out(buffer: &mut Vec<u8>) {
    // A full or closed stdout must not fail requests; the lines are lost, not the answers.
    let _ = std::io::stdout().lock().write_all(buffer);
    buffer.clear();
}

/// Writes the buffered lines now.
fn flush() {
    let mut buffer = buffer();
    if !buffer.is_empty() {
        write_out(&mut buffer);
    }
}

/// Writes buffered lines until `stop`, then what is left: each time lines arrive, after the
/// tasks that are ready now (other requests finishing in the same moment) have run.
pub async fn flusher(stop: tokio_util::sync::CancellationToken) {
    loop {
        tokio::select! {
            _ = PENDING.notified() => {}
            _ = stop.cancelled() => break,
        }
        tokio::task::yield_now().await;
        flush();
    }
    flush();
}

impl Entry {
    fn write(&self) {
        match self.format {
            AccessLog::Off => {}
            AccessLog::Combined => SCRATCH.with(|scratch| {
                let scratch = &mut *scratch.borrow_mut();
                let second = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                if second != scratch.second || scratch.date.is_empty() {
                    scratch.second = second;
                    scratch.date.clear();
                    let now = jiff::Timestamp::now();
                    let _ = write!(scratch.date, "{}", now.strftime("%d/%b/%Y:%H:%M:%S +0000"));
                }
                let line = &mut scratch.line;
                line.clear();
                self.combined(line, &scratch.date);
                emit(line.as_bytes());
            }),
            AccessLog::Json => {
                let text = |v: &Option<HeaderValue>| {
                    v.as_ref()
                        .map_or("-".into(), |v| String::from_utf8_lossy(v.as_bytes()))
                        .into_owned()
                };
                let mut line = serde_json::json!({
                    "time": jiff::Timestamp::now().to_string(),
                    "remote_addr": self.peer.ip().to_string(),
                    "request": format!("{} {} {:?}", self.method, self.target(), self.version),
                    "host": text(&self.host),
                    "status": self.status,
                    "body_bytes_sent": self.bytes,
                    "referer": text(&self.referer),
                    "user_agent": text(&self.user_agent),
                    "duration": self.start.elapsed().as_secs_f64(),
                    "upstream": &*self.upstream,
                    "flags": self.flags,
                })
                .to_string();
                line.push('\n');
                emit(line.as_bytes());
            }
        }
    }

    fn target(&self) -> &str {
        self.target.as_ref().map_or("/", PathAndQuery::as_str)
    }

    /// nginx `combined`, then the duration in seconds (millisecond resolution), the upstream
    /// and the flags.
    fn combined(&self, line: &mut String, date: &str) {
        let millis = (self.start.elapsed().as_micros() + 500) / 1000;
        let _ = write!(line, "{} - - [{date}] \"", self.peer.ip());
        escape(line, self.method.as_str().as_bytes());
        line.push(' ');
        escape(line, self.target().as_bytes());
        let _ = write!(
            line,
            " {:?}\" {} {} \"",
            self.version, self.status, self.bytes
        );
        escape_header(line, &self.referer);
        line.push_str("\" \"");
        escape_header(line, &self.user_agent);
        let _ = writeln!(
            line,
            "\" {}.{:03} {} {}",
            millis / 1000,
            millis % 1000,
            self.upstream,
            self.flags
        );
    }
}

fn escape_header(line: &mut String, value: &Option<HeaderValue>) {
    match value {
        Some(value) => escape(line, value.as_bytes()),
        None => line.push('-'),
    }
}

/// Appends `bytes` with `"`, `\\`, control bytes and bytes outside ASCII as `\xHH`, as nginx
/// does, so a line cannot be forged.
fn escape(line: &mut String, bytes: &[u8]) {
    for &b in bytes {
        match b {
            b'"' | b'\\' | 0..0x20 | 0x7f.. => {
                let _ = write!(line, "\\x{b:02X}");
            }
            _ => line.push(char::from(b)),
        }
    }
}

/// A response body that counts what it yields; its entry writes the log line when the body is
/// dropped (ended, or cut by the client or the drain).
#[derive(Debug)]
pub struct Logged<B> {
    inner: B,
    entry: Entry,
}

impl<B> Logged<B> {
    /// Wraps `inner`; the line is written on drop.
    pub fn new(inner: B, mut entry: Entry) -> Self {
        entry.answered = true;
        Self { inner, entry }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Logged<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let poll = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &poll
            && let Some(data) = frame.data_ref()
        {
            self.entry.bytes += data.len() as u64;
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
    use super::*;

    #[test]
    fn combined_line_escapes_like_nginx() {
        // `Off`: dropping it writes nothing.
        let entry = Entry {
            format: AccessLog::Off,
            peer: "[::1]:5000".parse().expect("addr"),
            method: Method::GET,
            target: Some(PathAndQuery::from_static("/a?b=%22")),
            version: Version::HTTP_11,
            host: None,
            status: 200,
            referer: None,
            user_agent: Some(HeaderValue::from_bytes(b"x\"y\\z\xc3\xa9").expect("value")),
            upstream: Arc::from("127.0.0.1:8081"),
            flags: "-",
            start: Instant::now(),
            bytes: 5,
            answered: true,
        };
        let mut line = String::new();
        entry.combined(&mut line, "22/Nov/2026:07:31:00 +0000");
        let (head, tail) = line.split_at(line.rfind("\" ").expect("duration") + 2);
        assert_eq!(
            head,
            "::1 - - [22/Nov/2026:07:31:00 +0000] \"GET /a?b=%22 HTTP/1.1\" 200 5 \"-\" \
             \"x\\x22y\\x5Cz\\xC3\\xA9\" "
        );
        assert!(tail.ends_with(" 127.0.0.1:8081 -\n"), "{tail}");
    }
}
