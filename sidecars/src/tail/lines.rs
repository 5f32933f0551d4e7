//! Bytes to records.
//!
//! Three stages per file: physical lines (a partial last line waits for its newline, a line
//! longer than `max_line_bytes` is cut into parts at UTF-8 boundaries, nothing is dropped), then
//! the input format (`cri` joins `P` parts up to the `F` part), then multiline joining (a line
//! that does not match `--multiline-start` continues the previous record).
//!
//! Every record carries `end`, the file offset just after its last byte: the checkpoint may
//! advance there once the sink accepted it. Pending data is never checkpointed.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::tail::Format;

/// How long a multiline record waits for continuation lines when `--flush-after` is not set.
const MULTILINE_WAIT: Duration = Duration::from_secs(1);

/// One shipped log record.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    /// Stream (file content) it came from, for checkpoints.
    pub(crate) stream: u64,
    /// Path of the file when the record was read.
    pub(crate) path: Arc<str>,
    /// File offset of its first byte.
    pub(crate) offset: u64,
    /// File offset just after its last byte.
    pub(crate) end: u64,
    /// CRI timestamp, else the time it was read.
    pub(crate) time: SystemTime,
    /// `stdout` or `stderr` for CRI input.
    pub(crate) source: Option<&'static str>,
    /// The message (invalid UTF-8 replaced).
    pub(crate) message: String,
    /// The parsed object for `--format json`.
    pub(crate) fields: Option<serde_json::Map<String, serde_json::Value>>,
    /// Lines in `message`: more than 1 only on the raw-to-stdout fast path, where contiguous
    /// lines of one read travel as one record joined by `\n` (the output is the same).
    pub(crate) lines: u32,
}

/// Most bytes in one block record of the fast path.
const BLOCK_MAX: usize = 64 * 1024;

/// Per-file state of the three stages.
#[derive(Debug)]
pub(crate) struct LineReader {
    stream: u64,
    path: Arc<str>,
    format: Format,
    max_line_bytes: usize,
    multiline: Option<regex::Regex>,
    flush_after: Option<Duration>,
    /// The unfinished physical line and the offset of its first byte.
    buf: Vec<u8>,
    buf_start: u64,
    buf_since: Option<Instant>,
    /// CRI `P` parts waiting for their `F` part.
    cri_partial: Option<Record>,
    /// The multiline record waiting for continuation lines.
    pending: Option<Record>,
    pending_since: Option<Instant>,
    /// When the bytes being split were read.
    read_time: SystemTime,
    /// Raw input, no multiline, raw stdout: lines may be blocked together (see `Record::lines`).
    block: bool,
}

impl LineReader {
    pub(crate) fn new(
        stream: u64,
        path: Arc<str>,
        start: u64,
        config: &crate::tail::Config,
    ) -> Self {
        LineReader {
            stream,
            path,
            format: config.format,
            max_line_bytes: config.max_line_bytes.max(4),
            multiline: config.multiline_start.clone(),
            flush_after: config.flush_after,
            buf: Vec::new(),
            buf_start: start,
            buf_since: None,
            cri_partial: None,
            pending: None,
            pending_since: None,
            read_time: SystemTime::now(),
            block: config.format == Format::Raw
                && config.multiline_start.is_none()
                && matches!(
                    config.sink,
                    crate::tail::SinkConfig::Stdout {
                        output: crate::tail::Output::Raw
                    }
                ),
        }
    }

    /// The offset before which every byte is in an emitted record: a checkpoint may not go past
    /// it (pending partial, CRI or multiline data is read again after a restart).
    pub(crate) fn committed(&self) -> u64 {
        [
            self.cri_partial.as_ref().map(|r| r.offset),
            self.pending.as_ref().map(|r| r.offset),
        ]
        .into_iter()
        .flatten()
        .fold(self.buf_start, u64::min)
    }

    /// A renamed file keeps its stream; its records name the new path.
    pub(crate) fn set_path(&mut self, path: Arc<str>) {
        self.path = path;
    }

    /// Feeds bytes read at the current end of the stream.
    pub(crate) fn push(&mut self, mut data: &[u8], now: Instant, out: &mut Vec<Record>) {
        // One clock read per read call, not per line.
        self.read_time = SystemTime::now();
        if self.block && self.buf.is_empty() {
            data = self.push_block(data, out);
        }
        while !data.is_empty() {
            let room = self.max_line_bytes - self.buf.len();
            let window = &data[..data.len().min(room + 1)];
            match memchr::memchr(b'\n', window) {
                Some(i) if i <= room && self.block && self.buf.is_empty() => {
                    let start = self.buf_start;
                    self.buf_start = start + i as u64 + 1;
                    self.buf_since = None;
                    self.block_line(&data[..i], start, out);
                    data = &data[i + 1..];
                }
                Some(i) if i <= room => {
                    self.buf.extend_from_slice(&data[..i]);
                    let len = self.buf.len() as u64;
                    let line = std::mem::take(&mut self.buf);
                    let start = self.buf_start;
                    self.buf_start = start + len + 1;
                    self.buf_since = None;
                    self.physical(line, start, start + len + 1, now, out);
                    data = &data[i + 1..];
                }
                _ => {
                    let take = data.len().min(room);
                    self.buf.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if self.buf.len() >= self.max_line_bytes {
                        self.cut_long_line(now, out);
                    } else {
                        self.buf_since.get_or_insert(now);
                    }
                }
            }
        }
    }

    /// Fast path: every complete line of `data` at once, when none is longer than
    /// `max_line_bytes`. Returns what is left (a partial last line, or everything if a line is
    /// too long and has to be cut by the line-by-line path).
    fn push_block<'a>(&mut self, data: &'a [u8], out: &mut Vec<Record>) -> &'a [u8] {
        let Some(last) = memchr::memrchr(b'\n', data) else {
            return data;
        };
        let region = &data[..last];
        let (mut prev, mut count) = (0, 1u32);
        for nl in memchr::memchr_iter(b'\n', region) {
            if nl - prev > self.max_line_bytes {
                return data;
            }
            prev = nl + 1;
            count += 1;
        }
        if region.len() - prev > self.max_line_bytes {
            return data;
        }
        let start = self.buf_start;
        self.buf_start = start + last as u64 + 1;
        self.buf_since = None;
        self.block_lines(region, count, start, out);
        &data[last + 1..]
    }

    /// Fast path: appends complete lines `[start, buf_start)` to the last record when contiguous.
    fn block_line(&mut self, line: &[u8], start: u64, out: &mut Vec<Record>) {
        self.block_lines(line, 1, start, out);
    }

    fn block_lines(&mut self, lines: &[u8], count: u32, start: u64, out: &mut Vec<Record>) {
        let text = String::from_utf8_lossy(lines);
        if let Some(last) = out.last_mut()
            && last.end == start
            && last.message.len() + text.len() < BLOCK_MAX
        {
            last.message.push('\n');
            last.message.push_str(&text);
            last.end = self.buf_start;
            last.lines += count;
            return;
        }
        out.push(Record {
            stream: self.stream,
            path: self.path.clone(),
            offset: start,
            end: self.buf_start,
            time: self.read_time,
            source: None,
            message: text.into_owned(),
            fields: None,
            lines: count,
        });
    }

    /// Emits the first part of an over-long line, cut at a UTF-8 boundary.
    fn cut_long_line(&mut self, now: Instant, out: &mut Vec<Record>) {
        let mut cut = self.buf.len();
        // Back up over UTF-8 continuation bytes so no character is split (at most 3).
        let mut back = cut;
        while back > cut.saturating_sub(4) && back > 0 && (self.buf[back - 1] & 0xc0) == 0x80 {
            back -= 1;
        }
        if back > 0 && back < cut && self.buf[back - 1] >= 0xc0 {
            let lead = self.buf[back - 1];
            let width = if lead >= 0xf0 {
                4
            } else if lead >= 0xe0 {
                3
            } else {
                2
            };
            if cut - (back - 1) < width {
                cut = back - 1;
            }
        }
        if cut == 0 {
            cut = self.buf.len();
        }
        let rest = self.buf.split_off(cut);
        let part = std::mem::replace(&mut self.buf, rest);
        let start = self.buf_start;
        self.buf_start = start + part.len() as u64;
        self.buf_since = if self.buf.is_empty() { None } else { Some(now) };
        self.physical(part, start, self.buf_start, now, out);
    }

    /// One physical line `[start, end)` (`end` includes its newline, if any).
    fn physical(
        &mut self,
        line: Vec<u8>,
        start: u64,
        end: u64,
        now: Instant,
        out: &mut Vec<Record>,
    ) {
        let mut rec = Record {
            stream: self.stream,
            path: self.path.clone(),
            offset: start,
            end,
            time: self.read_time,
            source: None,
            message: String::new(),
            fields: None,
            lines: 1,
        };
        match self.format {
            Format::Raw => rec.message = into_string(line),
            Format::Json => {
                rec.message = into_string(line);
                if let Ok(serde_json::Value::Object(map)) =
                    serde_json::from_str::<serde_json::Value>(&rec.message)
                {
                    if let Some(msg) = ["message", "msg", "log"]
                        .iter()
                        .find_map(|k| map.get(*k).and_then(|v| v.as_str()))
                    {
                        rec.message = msg.to_owned();
                    }
                    rec.fields = Some(map);
                }
            }
            Format::Cri => {
                let text = into_string(line);
                match parse_cri(&text) {
                    Some((time, source, partial, content)) => {
                        rec.time = time.unwrap_or(rec.time);
                        rec.source = Some(source);
                        rec.message = content.to_owned();
                        let joined = match self.cri_partial.take() {
                            Some(mut prev) => {
                                prev.message.push_str(&rec.message);
                                prev.end = rec.end;
                                prev
                            }
                            None => rec,
                        };
                        if partial && joined.message.len() < self.max_line_bytes {
                            self.cri_partial = Some(joined);
                            return;
                        }
                        rec = joined;
                    }
                    // Not CRI: ship the line as it is rather than drop it.
                    None => rec.message = text,
                }
            }
        }
        self.logical(rec, now, out);
    }

    /// Multiline stage.
    fn logical(&mut self, rec: Record, now: Instant, out: &mut Vec<Record>) {
        let Some(start) = &self.multiline else {
            out.push(rec);
            return;
        };
        let starts = start.is_match(&rec.message);
        match self.pending.take() {
            Some(mut pending)
                if !starts && pending.message.len() + rec.message.len() < self.max_line_bytes =>
            {
                pending.message.push('\n');
                pending.message.push_str(&rec.message);
                pending.end = rec.end;
                self.pending = Some(pending);
            }
            Some(pending) => {
                out.push(pending);
                self.pending = Some(rec);
            }
            None => self.pending = Some(rec),
        }
        self.pending_since = Some(now);
    }

    /// When the earliest pending data is due to be flushed, if any.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        let pending = self
            .pending_since
            .filter(|_| self.pending.is_some())
            .map(|t| t + self.flush_after.unwrap_or(MULTILINE_WAIT));
        let partial = self
            .flush_after
            .and_then(|after| self.buf_since.map(|t| t + after));
        match (pending, partial) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Ships pending data whose wait is over.
    pub(crate) fn flush_due(&mut self, now: Instant, out: &mut Vec<Record>) {
        if let Some(after) = self.flush_after
            && self.buf_since.is_some_and(|t| now >= t + after)
            && !self.buf.is_empty()
        {
            let line = std::mem::take(&mut self.buf);
            let start = self.buf_start;
            self.buf_start += line.len() as u64;
            self.buf_since = None;
            self.physical(line, start, self.buf_start, now, out);
        }
        let wait = self.flush_after.unwrap_or(MULTILINE_WAIT);
        if self.pending_since.is_some_and(|t| now >= t + wait)
            && let Some(rec) = self.pending.take()
        {
            self.pending_since = None;
            out.push(rec);
        }
    }

    /// The file is done (closed after rotation or truncated): ship everything pending.
    pub(crate) fn finish(&mut self, now: Instant, out: &mut Vec<Record>) {
        if !self.buf.is_empty() {
            let line = std::mem::take(&mut self.buf);
            let start = self.buf_start;
            self.buf_start += line.len() as u64;
            self.physical(line, start, self.buf_start, now, out);
        }
        if let Some(rec) = self.cri_partial.take() {
            self.logical(rec, now, out);
        }
        if let Some(rec) = self.pending.take() {
            out.push(rec);
        }
        self.pending_since = None;
        self.buf_since = None;
    }
}

fn into_string(line: Vec<u8>) -> String {
    String::from_utf8(line).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Parses `<RFC3339Nano> stdout|stderr F|P <content>`.
fn parse_cri(line: &str) -> Option<(Option<SystemTime>, &'static str, bool, &str)> {
    let mut parts = line.splitn(4, ' ');
    let time = parts.next()?;
    let source = match parts.next()? {
        "stdout" => "stdout",
        "stderr" => "stderr",
        _ => return None,
    };
    let partial = match parts.next()? {
        "P" => true,
        "F" => false,
        _ => return None,
    };
    let content = parts.next().unwrap_or("");
    // Offsets other than `Z` are not parsed: the record then keeps its read time.
    let time = humantime::parse_rfc3339_weak(time).ok();
    Some((time, source, partial, content))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tail::args::Args;
    use clap::Parser;

    fn config(extra: &[&str]) -> crate::tail::Config {
        // `--output json`: one record per line (no fast-path blocks).
        let mut argv = vec!["podkit-tail", "--path", "/x/*.log", "--output", "json"];
        argv.extend_from_slice(extra);
        crate::tail::Config::try_from(Args::parse_from(argv)).expect("config")
    }

    fn run(cfg: &crate::tail::Config, chunks: &[&[u8]]) -> (Vec<Record>, LineReader) {
        let mut lr = LineReader::new(1, "/x/a.log".into(), 0, cfg);
        let mut out = Vec::new();
        for c in chunks {
            lr.push(c, Instant::now(), &mut out);
        }
        (out, lr)
    }

    fn messages(recs: &[Record]) -> Vec<&str> {
        recs.iter().map(|r| r.message.as_str()).collect()
    }

    #[test]
    fn partial_line_waits_for_its_newline() {
        let cfg = config(&[]);
        let (out, mut lr) = run(&cfg, &[b"one\ntw", b"o\nthr"]);
        assert_eq!(messages(&out), ["one", "two"]);
        assert_eq!(out[1].offset, 4);
        assert_eq!(out[1].end, 8);
        let mut more = Vec::new();
        lr.finish(Instant::now(), &mut more);
        assert_eq!(messages(&more), ["thr"]);
        assert_eq!(more[0].end, 11);
    }

    #[test]
    fn raw_stdout_blocks_contiguous_lines() {
        let cfg =
            crate::tail::Config::try_from(Args::parse_from(["podkit-tail", "--path", "/x/*.log"]))
                .expect("config");
        let (out, _) = run(&cfg, &[b"one\ntwo\nthr", b"ee\nfour\n"]);
        assert_eq!(messages(&out), ["one\ntwo", "three\nfour"]);
        assert_eq!(out.iter().map(|r| r.lines).sum::<u32>(), 4);
        assert_eq!(out[1].offset, 8);
        assert_eq!(out[1].end, 19);
    }

    #[test]
    fn long_lines_are_split_without_loss() {
        let cfg = config(&["--max-line-bytes", "10"]);
        let line = "0123456789abcdefghijéklmnop";
        let data = format!("{line}\nshort\n");
        let (out, _) = run(&cfg, &[data.as_bytes()]);
        let parts = messages(&out);
        assert!(parts.iter().all(|p| p.len() <= 10), "{parts:?}");
        assert_eq!(parts[..parts.len() - 1].concat(), line);
        assert_eq!(parts.last().copied(), Some("short"));
        assert_eq!(out.last().map(|r| r.end), Some(data.len() as u64));
    }

    #[test]
    fn multiline_joins_continuations() {
        let cfg = config(&["--multiline-start", r"^\d"]);
        let (out, mut lr) = run(
            &cfg,
            &[b"1 Exception\n  at a\n  at b\n2 ok\n3 next\n  at c\n"],
        );
        assert_eq!(messages(&out), ["1 Exception\n  at a\n  at b", "2 ok"]);
        let mut more = Vec::new();
        lr.flush_due(Instant::now() + Duration::from_secs(2), &mut more);
        assert_eq!(messages(&more), ["3 next\n  at c"]);
    }

    #[test]
    fn cri_partials_are_joined() {
        let cfg = config(&["--format", "cri"]);
        let (out, _) = run(
            &cfg,
            &[b"2024-01-02T03:04:05.123456789Z stdout P hel\n2024-01-02T03:04:05.2Z stdout F lo\n2024-01-02T03:04:06Z stderr F oops\n"],
        );
        assert_eq!(messages(&out), ["hello", "oops"]);
        assert_eq!(out[1].source, Some("stderr"));
    }

    #[test]
    fn json_message_field() {
        let cfg = config(&["--format", "json"]);
        let (out, _) = run(&cfg, &[b"{\"msg\":\"hi\",\"level\":\"info\"}\nnot json\n"]);
        assert_eq!(messages(&out), ["hi", "not json"]);
        assert!(out[0].fields.is_some());
    }
}
