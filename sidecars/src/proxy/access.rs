//! The access log: one line per request on stdout, written when the response body ends (so
//! the byte count is what the client got), nginx `combined` or JSON. A request cut before it
//! was answered (client gone, drain timeout) is logged as `499` with the flag `DC`.

use std::io::Write;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use crate::proxy::AccessLog;

/// What the log line says about one request, filled while it is handled.
#[derive(Debug)]
pub struct Entry {
    /// `--access-log` format.
    pub format: AccessLog,
    /// The client.
    pub peer: SocketAddr,
    /// `GET /path HTTP/1.1`.
    pub request_line: String,
    /// Host header, for the JSON format.
    pub host: String,
    /// Response status.
    pub status: u16,
    /// Referer header or `-`.
    pub referer: String,
    /// User-Agent header or `-`.
    pub user_agent: String,
    /// Upstream the request went to, or `-`.
    pub upstream: String,
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

impl Entry {
    fn write(&self) {
        let bytes = self.bytes;
        let duration = self.start.elapsed().as_secs_f64();
        let now = jiff::Timestamp::now();
        let line = match self.format {
            AccessLog::Off => return,
            AccessLog::Combined => format!(
                "{} - - [{}] \"{}\" {} {} \"{}\" \"{}\" {:.3} {} {}\n",
                self.peer.ip(),
                now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
                escape(&self.request_line),
                self.status,
                bytes,
                escape(&self.referer),
                escape(&self.user_agent),
                duration,
                self.upstream,
                self.flags,
            ),
            AccessLog::Json => {
                let mut line = serde_json::json!({
                    "time": now.to_string(),
                    "remote_addr": self.peer.ip().to_string(),
                    "request": self.request_line,
                    "host": self.host,
                    "status": self.status,
                    "body_bytes_sent": bytes,
                    "referer": self.referer,
                    "user_agent": self.user_agent,
                    "duration": duration,
                    "upstream": self.upstream,
                    "flags": self.flags,
                })
                .to_string();
                line.push('\n');
                line
            }
        };
        // A full or closed stdout must not fail the request; the line is lost, not the answer.
        let _ = std::io::stdout().lock().write_all(line.as_bytes());
    }
}

/// Escapes `"` and control bytes as nginx does, so a line cannot be forged.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' | '\\' => out.push_str(&format!("\\x{:02X}", c as u32)),
            c if c.is_control() => out.push_str(&format!("\\x{:02X}", c as u32)),
            c => out.push(c),
        }
    }
    out
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
