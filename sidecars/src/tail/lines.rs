//! Bytes to records.
//!
//! Three stages per file: physical lines (a partial last line waits for its newline, a line
//! longer than `max_line_bytes` is cut into parts at UTF-8 boundaries, nothing is dropped), then
//! the input format (`cri` joins `P` parts up to the `F` part), then multiline joining (a line
//! that does not match `--multiline-start` continues the previous record).
//!
//! Every record carries `end`, the file offset just after its last byte: the checkpoint may
//! advance there once the sink accepted it. Pending data is never checkpointed.
//!
//! Raw input to the raw stdout sink takes a fast path (`LineReader::push_bytes`): the complete
//! lines of a read travel to the sink as one [`Lines`] slice, not split into records, so the
//! tailer moves bytes about as cheaply as `tail -F` does.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;

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
}

/// Complete lines of one read, as they are in the file (each ends with `\n`): the fast path of
/// raw input to the raw stdout sink.
#[derive(Debug, Clone)]
pub(crate) struct Lines {
    /// Stream (file content) they came from, for checkpoints.
    pub(crate) stream: u64,
    /// File offset of the first byte.
    pub(crate) offset: u64,
    /// File offset just after the last newline.
    pub(crate) end: u64,
    /// How many lines.
    pub(crate) count: u64,
    /// The lines, valid UTF-8 (invalid sequences replaced, as in [`Record::message`]).
    pub(crate) bytes: Bytes,
}

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
    /// Raw input, no multiline, raw stdout: complete lines go out as [`Lines`].
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

    /// Whether complete lines may go out as [`Lines`] (see [`LineReader::push_bytes`]).
    pub(crate) fn blocks(&self) -> bool {
        self.block
    }

    /// Fast path: the pending partial line. The reader puts it in front of the next read (and
    /// calls [`clear_partial`](Self::clear_partial)) so that complete lines are one slice.
    pub(crate) fn partial(&self) -> &[u8] {
        &self.buf
    }

    /// See [`partial`](Self::partial); the partial line is given back by the next push.
    pub(crate) fn clear_partial(&mut self) {
        self.buf.clear();
    }

    /// Fast path: `data` is the partial line taken with [`partial`](Self::partial) followed by
    /// the bytes read after it. Every complete line of `data` goes out as one [`Lines`] (one
    /// copy, no per-line work but a newline count); the rest waits as the partial line. Falls
    /// back to [`push`](Self::push) when a line is longer than `max_line_bytes` (it has to be
    /// cut). Records the fallback makes follow the returned lines.
    pub(crate) fn push_bytes(
        &mut self,
        data: &[u8],
        now: Instant,
        out: &mut Vec<Record>,
    ) -> Option<Lines> {
        debug_assert!(self.block && self.buf.is_empty());
        self.read_time = SystemTime::now();
        let Some(last) = memchr::memrchr(b'\n', data) else {
            self.push(data, now, out);
            return None;
        };
        if longest_line_exceeds(&data[..last], self.max_line_bytes) {
            self.push(data, now, out);
            return None;
        }
        let (complete, rest) = data.split_at(last + 1);
        let bytes = match std::str::from_utf8(complete) {
            Ok(_) => Bytes::copy_from_slice(complete),
            Err(_) => Bytes::from(String::from_utf8_lossy(complete).into_owned()),
        };
        let offset = self.buf_start;
        self.buf_start = offset + complete.len() as u64;
        self.buf_since = None;
        let lines = Lines {
            stream: self.stream,
            offset,
            end: self.buf_start,
            count: count_newlines(complete) as u64,
            bytes,
        };
        if !rest.is_empty() {
            self.push(rest, now, out);
        }
        Some(lines)
    }

    /// Feeds bytes read at the current end of the stream, line by line.
    pub(crate) fn push(&mut self, mut data: &[u8], now: Instant, out: &mut Vec<Record>) {
        // One clock read per read call, not per line.
        self.read_time = SystemTime::now();
        while !data.is_empty() {
            let room = self.max_line_bytes - self.buf.len();
            let window = &data[..data.len().min(room + 1)];
            match memchr::memchr(b'\n', window) {
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
                    // Cut only once the next byte is known not to be the newline: a line of
                    // exactly `max_line_bytes` whose newline comes in the next read is one
                    // line, not a line and an empty one (the result must not depend on where
                    // reads end; found by the `tail_lines` fuzz target).
                    if self.buf.len() >= self.max_line_bytes && !data.is_empty() {
                        self.cut_long_line(now, out);
                    } else {
                        self.buf_since.get_or_insert(now);
                    }
                }
            }
        }
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
                    // Not CRI: ship the line as it is rather than drop it, after a `P` part
                    // still waiting for its `F` (records leave in file order: a checkpoint
                    // past this line must not skip the part before it; found by the
                    // `tail_lines` fuzz target).
                    None => {
                        if let Some(partial) = self.cri_partial.take() {
                            self.logical(partial, now, out);
                        }
                        rec.message = text;
                    }
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

/// Whether a line of `region` (lines separated by `\n`, the last one without it) is longer than
/// `max` bytes. One `memrchr` per `max` bytes, not one search per line.
fn longest_line_exceeds(region: &[u8], max: usize) -> bool {
    let mut start = 0;
    while region.len() - start > max {
        // A line starting at `start` fits if its newline is among the next `max + 1` bytes.
        match memchr::memrchr(b'\n', &region[start..start + max + 1]) {
            Some(i) => start += i + 1,
            None => return true,
        }
    }
    false
}

/// Number of `\n` in `data`, counted in byte lanes the compiler vectorizes (a search per line
/// costs more than the lines are long).
fn count_newlines(data: &[u8]) -> usize {
    const LANES: usize = 32;
    let mut total = 0;
    let mut blocks = data.chunks_exact(LANES);
    loop {
        // At most 255 blocks per round, so a lane cannot overflow.
        let mut lanes = [0u8; LANES];
        let mut rounds = 0;
        for block in blocks.by_ref().take(255) {
            for (lane, byte) in lanes.iter_mut().zip(block) {
                *lane += u8::from(*byte == b'\n');
            }
            rounds += 1;
        }
        total += lanes.iter().map(|&n| usize::from(n)).sum::<usize>();
        if rounds < 255 {
            break;
        }
    }
    total + blocks.remainder().iter().filter(|&&b| b == b'\n').count()
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

    /// The fast path the way the reader drives it: the partial line moved in front of each read.
    fn run_blocks(
        cfg: &crate::tail::Config,
        reads: &[&[u8]],
    ) -> (Vec<Lines>, Vec<Record>, LineReader) {
        let mut lr = LineReader::new(1, "/x/a.log".into(), 0, cfg);
        assert!(lr.blocks());
        let (mut lines, mut records) = (Vec::new(), Vec::new());
        for read in reads {
            let mut buf = lr.partial().to_vec();
            lr.clear_partial();
            buf.extend_from_slice(read);
            lines.extend(lr.push_bytes(&buf, Instant::now(), &mut records));
        }
        (lines, records, lr)
    }

    fn raw_stdout(extra: &[&str]) -> crate::tail::Config {
        let mut argv = vec!["podkit-tail", "--path", "/x/*.log"];
        argv.extend_from_slice(extra);
        crate::tail::Config::try_from(Args::parse_from(argv)).expect("config")
    }

    #[test]
    fn raw_stdout_ships_complete_lines_as_slices() {
        let cfg = raw_stdout(&[]);
        let (lines, records, mut lr) = run_blocks(&cfg, &[b"one\ntwo\nthr", b"ee\nfour\n", b"fi"]);
        assert!(records.is_empty());
        assert_eq!(lines.len(), 2);
        assert_eq!(&lines[0].bytes[..], b"one\ntwo\n");
        assert_eq!((lines[0].offset, lines[0].end, lines[0].count), (0, 8, 2));
        assert_eq!(&lines[1].bytes[..], b"three\nfour\n");
        assert_eq!((lines[1].offset, lines[1].end, lines[1].count), (8, 19, 2));
        // The partial line is not committed.
        assert_eq!(lr.committed(), 19);
        let mut rest = Vec::new();
        lr.finish(Instant::now(), &mut rest);
        assert_eq!(messages(&rest), ["fi"]);
        assert_eq!(rest[0].end, 21);
    }

    #[test]
    fn raw_stdout_replaces_invalid_utf8_and_cuts_long_lines() {
        let cfg = raw_stdout(&["--max-line-bytes", "10"]);
        let (lines, _, _) = run_blocks(&cfg, &[b"ok\n\xffbad\n"]);
        assert_eq!(
            std::str::from_utf8(&lines[0].bytes),
            Ok("ok\n\u{fffd}bad\n")
        );
        assert_eq!(lines[0].end, 8);

        // A line over 10 bytes: that read goes line by line, cut, nothing lost.
        let (lines, records, _) = run_blocks(&cfg, &[b"short\n0123456789abcdef\nx\n", b"y\n"]);
        assert_eq!(messages(&records), ["short", "0123456789", "abcdef", "x"]);
        assert_eq!(records.last().map(|r| r.end), Some(25));
        assert_eq!(&lines[0].bytes[..], b"y\n");
        assert_eq!(lines[0].offset, 25);
    }

    #[test]
    fn newline_count_and_long_line_check() {
        let data: Vec<u8> = (0..20_000u32)
            .flat_map(|i| {
                let mut l = vec![b'a'; (i % 97) as usize];
                l.push(b'\n');
                l
            })
            .collect();
        assert_eq!(count_newlines(&data), 20_000);
        assert_eq!(count_newlines(&data[..data.len() - 1]), 19_999);
        assert_eq!(count_newlines(b""), 0);
        let region = &data[..data.len() - 1];
        assert!(!longest_line_exceeds(region, 96));
        assert!(longest_line_exceeds(region, 95));
        assert!(longest_line_exceeds(&[b'a'; 11], 10));
        assert!(!longest_line_exceeds(&[b'a'; 10], 10));
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
    fn a_full_line_whose_newline_comes_in_the_next_read_is_one_line() {
        // Fuzz crash `tail_lines` d113acbf: "line one\n" at --max-line-bytes 4, read byte by
        // byte, gave "line", " one" and an empty line; read at once, "line" and " one".
        let cfg = config(&["--max-line-bytes", "4"]);
        let whole = b"line one\nline two\npartial";
        let (out, mut lr) = run(&cfg, &[whole]);
        let mut rest = Vec::new();
        lr.finish(Instant::now(), &mut rest);
        let bytes: Vec<&[u8]> = whole.chunks(1).collect();
        let (single, mut lr1) = run(&cfg, &bytes);
        let mut rest1 = Vec::new();
        lr1.finish(Instant::now(), &mut rest1);
        assert_eq!(messages(&out), ["line", " one", "line", " two", "part"]);
        assert_eq!(messages(&single), messages(&out));
        assert_eq!(messages(&rest1), messages(&rest));
        let spans = |r: &[Record]| r.iter().map(|r| (r.offset, r.end)).collect::<Vec<_>>();
        assert_eq!(spans(&single), spans(&out));
        assert_eq!(out[1].end, 9);
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
    fn a_line_that_is_not_cri_does_not_overtake_a_waiting_partial() {
        // Fuzz crash `tail_lines` f7623690: the `P` part was shipped after the line that
        // followed it, and with multiline joining, a record ended before it started.
        let data = b"2024-01-02T03:04:05Z stdout P hel\nnot cri\n";
        for extra in [&[][..], &["--multiline-start", "^n"][..]] {
            let mut argv = vec!["--format", "cri"];
            argv.extend_from_slice(extra);
            let cfg = config(&argv);
            let (mut out, mut lr) = run(&cfg, &[data]);
            lr.finish(Instant::now(), &mut out);
            assert_eq!(messages(&out), ["hel", "not cri"], "{extra:?}");
            assert!(out.windows(2).all(|w| w[0].end <= w[1].offset), "{out:?}");
            assert!(out.iter().all(|r| r.offset <= r.end), "{out:?}");
        }
    }

    #[test]
    fn json_message_field() {
        let cfg = config(&["--format", "json"]);
        let (out, _) = run(&cfg, &[b"{\"msg\":\"hi\",\"level\":\"info\"}\nnot json\n"]);
        assert_eq!(messages(&out), ["hi", "not json"]);
        assert!(out[0].fields.is_some());
    }
}
