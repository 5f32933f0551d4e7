//! Containers' logs as kubectl shows them: which run (the current one or `--previous`), which
//! lines (`tailLines`, `sinceSeconds`/`sinceTime`), how (`timestamps`), and following a
//! container across its restarts.
//!
//! One implementation behind both ways `podkit logs` gets a log: the supervisor's
//! `GET /logs` (which streams what a [`Reader`] returns) and, when the supervisor is gone, the
//! CLI reading the files itself with the same [`Reader`]. The files are the CRI logs the
//! supervisor writes (`supervisor/logs.rs`): `logs/CONTAINER/RUN.log`, one record a line,
//! `<RFC 3339 time> <stdout|stderr> <F|P> <text>`, `P` records joined to the line they start.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use jiff::Timestamp;

/// How much a [`Reader::read`] returns at most (a little more: whole lines), and reads from a
/// file at once.
const CHUNK: usize = 64 * 1024;

/// What to show of a container's log: kubectl's `PodLogOptions`, the query of `GET /logs`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// The container; the API defaults it only when the pod has just one.
    pub container: Option<String>,
    /// Keep streaming new lines, across restarts, until the container runs no more.
    pub follow: bool,
    /// The run before the current one.
    pub previous: bool,
    /// Only the last N lines of what is there (following goes on from there).
    pub tail_lines: Option<u64>,
    /// Only lines written in the last N seconds.
    pub since_seconds: Option<u64>,
    /// Only lines written at or after this time.
    pub since_time: Option<Timestamp>,
    /// Start each line with the time it was written (RFC 3339, nanoseconds).
    pub timestamps: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("invalid log option {key}={value:?}: {expected}")]
    BadValue {
        key: String,
        value: String,
        expected: &'static str,
    },

    #[error(
        "unknown log option {key:?}: use container, follow, previous, tailLines, sinceSeconds, \
         sinceTime or timestamps"
    )]
    UnknownOption { key: String },

    #[error("sinceSeconds and sinceTime exclude each other: give one")]
    TwoSinces,

    #[error("previous terminated container {container:?} in pod {pod:?} not found")]
    NoPrevious { container: String, pod: String },

    #[error("failed to read the log {path:?}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Query {
    /// Parses the query of `GET /logs`: `container=NAME&follow=true&tailLines=10...`
    /// (percent-encoding decoded; booleans as `true`/`false`/`1`/`0`).
    pub fn parse(query: &str) -> Result<Query, LogError> {
        let mut parsed = Query::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, "true"));
            let value = percent_decode(value);
            let bad = |expected| LogError::BadValue {
                key: key.to_owned(),
                value: value.clone(),
                expected,
            };
            let flag = || match value.as_str() {
                "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                _ => Err(bad("true or false")),
            };
            let number = || value.parse::<u64>().map_err(|_| bad("a whole number"));
            match key {
                "container" => parsed.container = Some(value.clone()),
                "follow" => parsed.follow = flag()?,
                "previous" => parsed.previous = flag()?,
                "timestamps" => parsed.timestamps = flag()?,
                "tailLines" => parsed.tail_lines = Some(number()?),
                "sinceSeconds" => parsed.since_seconds = Some(number()?),
                "sinceTime" => {
                    parsed.since_time = Some(
                        value
                            .parse()
                            .map_err(|_| bad("an RFC 3339 time like 2025-01-02T15:04:05Z"))?,
                    )
                }
                _ => {
                    return Err(LogError::UnknownOption {
                        key: key.to_owned(),
                    });
                }
            }
        }
        if parsed.since_seconds.is_some() && parsed.since_time.is_some() {
            return Err(LogError::TwoSinces);
        }
        Ok(parsed)
    }

    /// The query string [`Query::parse`] reads back (`sinceTime` in UTC, so it needs no
    /// escaping; container names are DNS labels).
    pub fn to_query_string(&self) -> String {
        let mut pairs = Vec::new();
        if let Some(container) = &self.container {
            pairs.push(format!("container={container}"));
        }
        for (key, on) in [
            ("follow", self.follow),
            ("previous", self.previous),
            ("timestamps", self.timestamps),
        ] {
            if on {
                pairs.push(format!("{key}=true"));
            }
        }
        if let Some(n) = self.tail_lines {
            pairs.push(format!("tailLines={n}"));
        }
        if let Some(n) = self.since_seconds {
            pairs.push(format!("sinceSeconds={n}"));
        }
        if let Some(time) = self.since_time {
            pairs.push(format!("sinceTime={time}"));
        }
        pairs.join("&")
    }
}

/// `%XX` escapes decoded (and `+` as a space, as forms send it); anything malformed is kept.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push((hi * 16 + lo) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads one container's log, as a [`Query`] selects it, in chunks of whole lines: the first
/// calls return what is there, later ones what was written since (moving on to the next run's
/// file after a restart, unless reading the previous run).
#[derive(Debug)]
pub struct Reader {
    /// `POD/logs/CONTAINER`.
    dir: PathBuf,
    /// The run being read and its open file; `None` before the container's first run.
    run: Option<u32>,
    file: Option<File>,
    /// Go on to later runs at the end of this one (not for `previous`).
    next_runs: bool,
    since: Option<Timestamp>,
    timestamps: bool,
    /// The last lines of the first file, while it is read up to its end (`tailLines`); they
    /// are returned once it is.
    tail: Option<(VecDeque<Vec<u8>>, usize)>,
    /// The bytes of a record not yet written to its end (no newline yet).
    raw: Vec<u8>,
    /// A line whose `P` records came but not yet its `F` one, and its first record's time.
    line: Option<(Vec<u8>, Vec<u8>)>,
    /// Without `follow`, the end of the log once reached: what is written after that is not
    /// this request's (`--tail 1` is one line, whatever the container writes meanwhile).
    follow: bool,
    ended: bool,
}

impl Reader {
    /// A reader of `container`'s log in the pod whose state directory is `pod_dir`.
    pub fn open(
        pod_dir: &Path,
        pod: &str,
        container: &str,
        query: &Query,
    ) -> Result<Reader, LogError> {
        let dir = pod_dir.join("logs").join(container);
        let runs = runs(&dir);
        let run = if query.previous {
            match runs.len() {
                0 | 1 => {
                    return Err(LogError::NoPrevious {
                        container: container.to_owned(),
                        pod: pod.to_owned(),
                    });
                }
                n => Some(runs[n - 2]),
            }
        } else {
            runs.last().copied()
        };
        let since = query.since_time.or_else(|| {
            let seconds = i64::try_from(query.since_seconds?).ok()?;
            Timestamp::now()
                .checked_sub(jiff::SignedDuration::from_secs(seconds))
                .ok()
        });
        let tail = query
            .tail_lines
            .map(|n| (VecDeque::new(), usize::try_from(n).unwrap_or(usize::MAX)));
        Ok(Reader {
            dir,
            run,
            file: None,
            next_runs: !query.previous,
            since,
            timestamps: query.timestamps,
            tail,
            raw: Vec::new(),
            line: None,
            follow: query.follow,
            ended: false,
        })
    }

    /// The next lines, formatted: empty when there is nothing more for now (or, for a
    /// container that runs no more, at all).
    pub fn read(&mut self) -> Result<Vec<u8>, LogError> {
        let mut out = Vec::new();
        if self.ended {
            return Ok(out);
        }
        let mut chunk = vec![0u8; CHUNK];
        loop {
            let Some(run) = self.run else {
                // Not started when opened: its first run, once there is one.
                match runs(&self.dir).first() {
                    Some(first) if self.next_runs => {
                        self.run = Some(*first);
                        continue;
                    }
                    _ => return Ok(out),
                }
            };
            let path = self.dir.join(format!("{run}.log"));
            let read_error = |source| LogError::Read {
                path: path.clone(),
                source,
            };
            if self.file.is_none() {
                match File::open(&path) {
                    Ok(file) => self.file = Some(file),
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(out),
                    Err(err) => return Err(read_error(err)),
                }
            }
            let Some(file) = self.file.as_mut() else {
                return Ok(out);
            };
            let n = file.read(&mut chunk).map_err(read_error)?;
            if n > 0 {
                self.raw.extend_from_slice(&chunk[..n]);
                self.records(&mut out);
                if out.len() >= CHUNK {
                    return Ok(out);
                }
                continue;
            }
            // The end of this file, for now: the last lines of the first one are due.
            if let Some((lines, _)) = self.tail.take() {
                lines.into_iter().for_each(|line| out.extend(line));
            }
            let later = runs(&self.dir).into_iter().find(|r| *r > run);
            match later {
                Some(next) if self.next_runs => {
                    // The run ended before the next one started: what it left unfinished ends.
                    if let Some((text, time)) = self.line.take() {
                        self.emit(&time, &text, &mut out);
                    }
                    self.raw.clear();
                    self.run = Some(next);
                    self.file = None;
                }
                // The file stays open at its end: a follower reads on from there.
                _ => {
                    self.ended = !self.follow;
                    return Ok(out);
                }
            }
        }
    }

    /// Formats the complete records in `raw` into `out`, keeping the rest.
    fn records(&mut self, out: &mut Vec<u8>) {
        let Some(end) = self.raw.iter().rposition(|b| *b == b'\n') else {
            return;
        };
        let complete: Vec<u8> = self.raw.drain(..=end).collect();
        for record in complete.split(|b| *b == b'\n') {
            let mut fields = record.splitn(4, |b| *b == b' ');
            let (Some(time), Some(_stream), Some(tag)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue; // the empty piece after the last newline, or a damaged record
            };
            let text = fields.next().unwrap_or_default();
            let (line, first_time) = self.line.get_or_insert_with(|| (Vec::new(), time.to_vec()));
            line.extend_from_slice(text);
            if tag == b"F" {
                let (line, first_time) = (std::mem::take(line), std::mem::take(first_time));
                self.line = None;
                self.emit(&first_time, &line, out);
            }
        }
    }

    /// One line, if it is recent enough, with its time when asked; into the tail while the
    /// first file is read.
    fn emit(&mut self, time: &[u8], text: &[u8], out: &mut Vec<u8>) {
        if let Some(since) = self.since {
            let written = std::str::from_utf8(time)
                .ok()
                .and_then(|t| t.parse::<Timestamp>().ok());
            if written.is_some_and(|written| written < since) {
                return;
            }
        }
        let mut line = Vec::with_capacity(time.len() + text.len() + 2);
        if self.timestamps {
            line.extend_from_slice(time);
            line.push(b' ');
        }
        line.extend_from_slice(text);
        line.push(b'\n');
        match self.tail.as_mut() {
            Some((lines, max)) => {
                if *max == 0 {
                    return;
                }
                if lines.len() == *max {
                    lines.pop_front();
                }
                lines.push_back(line);
            }
            None => out.extend(line),
        }
    }
}

/// The run numbers that have a log file in `dir`, in order.
fn runs(dir: &Path) -> Vec<u32> {
    let mut runs: Vec<u32> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".log")?.parse().ok())
        .collect();
    runs.sort_unstable();
    runs
}

/// Puts `prefix` before every line of a stream that arrives in pieces (`--prefix`).
#[derive(Debug)]
pub struct Prefixer {
    prefix: Vec<u8>,
    at_line_start: bool,
}

impl Prefixer {
    pub fn new(prefix: Option<String>) -> Prefixer {
        Prefixer {
            prefix: prefix.map(String::into_bytes).unwrap_or_default(),
            at_line_start: true,
        }
    }

    /// `piece`, with the prefix at the start of each line.
    pub fn apply(&mut self, piece: &[u8]) -> Vec<u8> {
        if self.prefix.is_empty() {
            return piece.to_vec();
        }
        let mut out = Vec::with_capacity(piece.len() + self.prefix.len());
        for byte in piece {
            if self.at_line_start {
                out.extend_from_slice(&self.prefix);
            }
            out.push(*byte);
            self.at_line_start = *byte == b'\n';
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_run(dir: &Path, run: u32, records: &[&str]) {
        std::fs::create_dir_all(dir).expect("dir");
        let text: String = records.iter().map(|r| format!("{r}\n")).collect();
        std::fs::write(dir.join(format!("{run}.log")), text).expect("write");
    }

    fn read_all(reader: &mut Reader) -> String {
        let mut text = Vec::new();
        loop {
            let chunk = reader.read().expect("read");
            if chunk.is_empty() {
                return String::from_utf8(text).expect("utf-8");
            }
            text.extend(chunk);
        }
    }

    #[test]
    fn query_round_trips_and_names_what_is_wrong() {
        let query = Query {
            container: Some("web".into()),
            follow: true,
            previous: false,
            tail_lines: Some(5),
            since_seconds: None,
            since_time: Some("2025-01-02T03:04:05.5Z".parse().expect("time")),
            timestamps: true,
        };
        assert_eq!(
            Query::parse(&query.to_query_string()).expect("parse"),
            query
        );
        let q = Query::parse("sinceTime=2025-01-02T03%3A04%3A05%2B01%3A00").expect("escaped");
        assert_eq!(
            q.since_time,
            Some("2025-01-02T02:04:05Z".parse().expect("time"))
        );
        let err = Query::parse("tailLines=x").expect_err("bad").to_string();
        assert_eq!(err, "invalid log option tailLines=\"x\": a whole number");
        let err = Query::parse("tail=3").expect_err("unknown").to_string();
        assert!(err.contains("unknown log option \"tail\""), "{err}");
        assert!(Query::parse("sinceSeconds=1&sinceTime=2025-01-02T03:04:05Z").is_err());
        assert_eq!(percent_decode("a%2"), "a%2");
    }

    #[test]
    fn without_follow_the_log_ends_where_it_ended_when_reached() {
        let pod = tempfile::tempdir().expect("tmp");
        let dir = pod.path().join("logs/c");
        write_run(
            &dir,
            0,
            &[
                "2025-01-01T00:00:00Z stdout F one",
                "2025-01-01T00:00:01Z stdout F two",
            ],
        );
        let tail = Query {
            tail_lines: Some(1),
            ..Query::default()
        };
        let mut reader = Reader::open(pod.path(), "p", "c", &tail).expect("open");
        assert_eq!(reader.read().expect("read"), b"two\n");
        // The container writes on; `--tail 1` already got its one line.
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join("0.log"))
            .expect("open the log");
        std::io::Write::write_all(&mut file, b"2025-01-01T00:00:02Z stdout F three\n")
            .expect("append");
        assert_eq!(read_all(&mut reader), "");
    }

    #[test]
    fn joins_partial_records_and_selects_tail_since_and_runs() {
        let pod = tempfile::tempdir().expect("tmp");
        let dir = pod.path().join("logs/c");
        write_run(
            &dir,
            0,
            &[
                "2025-01-01T00:00:00Z stdout F old",
                "2025-01-01T00:00:01Z stdout P par",
                "2025-01-01T00:00:02Z stderr F tial",
            ],
        );
        write_run(
            &dir,
            1,
            &[
                "2025-01-01T00:01:00Z stdout F one",
                "2025-01-01T00:01:01Z stdout F two",
                "2025-01-01T00:01:02Z stdout F ",
                "2025-01-01T00:01:03Z stdout F three",
            ],
        );
        let open = |query: &Query| Reader::open(pod.path(), "p", "c", query).expect("open");
        assert_eq!(
            read_all(&mut open(&Query::default())),
            "one\ntwo\n\nthree\n"
        );
        let previous = Query {
            previous: true,
            timestamps: true,
            ..Query::default()
        };
        assert_eq!(
            read_all(&mut open(&previous)),
            "2025-01-01T00:00:00Z old\n2025-01-01T00:00:01Z partial\n"
        );
        let tail = Query {
            tail_lines: Some(2),
            ..Query::default()
        };
        assert_eq!(read_all(&mut open(&tail)), "\nthree\n");
        let since = Query {
            since_time: Some("2025-01-01T00:01:01Z".parse().expect("time")),
            ..Query::default()
        };
        assert_eq!(read_all(&mut open(&since)), "two\n\nthree\n");
        let err = Reader::open(pod.path(), "p", "nope", &previous).expect_err("no previous");
        assert_eq!(
            err.to_string(),
            "previous terminated container \"nope\" in pod \"p\" not found"
        );
    }

    #[test]
    fn a_follower_reads_what_is_appended_and_moves_on_to_the_next_run() {
        use std::io::Write;
        let pod = tempfile::tempdir().expect("tmp");
        let dir = pod.path().join("logs/c");
        let query = Query {
            follow: true,
            tail_lines: Some(0),
            ..Query::default()
        };
        let mut reader = Reader::open(pod.path(), "p", "c", &query).expect("open");
        assert_eq!(read_all(&mut reader), "", "not started yet");
        write_run(&dir, 0, &["2025-01-01T00:00:00Z stdout F before"]);
        assert_eq!(
            read_all(&mut reader),
            "",
            "tailLines=0: nothing of what was there"
        );
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join("0.log"))
            .expect("open");
        file.write_all(b"2025-01-01T00:00:01Z stdout F after\n2025-01-01T00:00:02Z stdout F hal")
            .expect("append");
        assert_eq!(read_all(&mut reader), "after\n", "whole records only");
        file.write_all(b"f\n").expect("append");
        write_run(&dir, 1, &["2025-01-01T00:00:03Z stdout F restarted"]);
        assert_eq!(read_all(&mut reader), "half\nrestarted\n");
    }

    #[test]
    fn prefixes_lines_that_arrive_in_pieces() {
        let mut prefixer = Prefixer::new(Some("[p] ".into()));
        let mut out = prefixer.apply(b"a\nb");
        out.extend(prefixer.apply(b"c\n"));
        assert_eq!(out, b"[p] a\n[p] bc\n");
    }
}
