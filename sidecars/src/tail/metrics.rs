//! Counters of the tailer, rendered in the Prometheus text format for `/metrics`, and the
//! reader thread's progress, which `/healthz` reports.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Counters and gauges shared by the reader, the sink and the health server.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Records read from files.
    pub lines_read: AtomicU64,
    /// Bytes read from files.
    pub bytes_read: AtomicU64,
    /// Records accepted by the sink.
    pub lines_sent: AtomicU64,
    /// File bytes covered by records accepted by the sink.
    pub bytes_sent: AtomicU64,
    /// Failed sends that were retried.
    pub retries: AtomicU64,
    /// Files open now.
    pub files_open: AtomicU64,
    /// Bytes on disk not read yet (as of the last read pass).
    pub unread_bytes: AtomicU64,
    /// Rotations seen (a followed file renamed away or deleted).
    pub rotations: AtomicU64,
    /// Truncations seen (copytruncate).
    pub truncations: AtomicU64,
    /// State file writes.
    pub checkpoints: AtomicU64,
    /// Whether the reader thread is stuck in a file system call.
    pub(crate) progress: Progress,
}

/// The reader thread's progress: it marks the start of each step of work on the file system
/// (an open, a read, a directory listing) and when it waits (for events or for the sink). A
/// step that has not ended for the stall timeout is a call that does not return: a hung
/// network file system, a FUSE server or a permission hook that does not answer. Waiting for
/// the sink is not a stall (that is backpressure, with its own retries and metrics).
#[derive(Debug)]
pub(crate) struct Progress {
    epoch: Instant,
    /// Milliseconds since `epoch`, plus one, at the start of the current step; 0 while waiting.
    busy_since: AtomicU64,
    /// The stall timeout, in milliseconds.
    stall_after: AtomicU64,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            epoch: Instant::now(),
            busy_since: AtomicU64::new(0),
            stall_after: AtomicU64::new(30_000),
        }
    }
}

impl Progress {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A step of work starts (the previous one, if any, ended).
    pub(crate) fn step(&self) {
        self.busy_since
            .store(self.now_ms().saturating_add(1), Ordering::Relaxed);
    }

    /// The reader waits (for an event, a timer or the sink).
    pub(crate) fn idle(&self) {
        self.busy_since.store(0, Ordering::Relaxed);
    }

    pub(crate) fn set_stall_timeout(&self, timeout: Duration) {
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self.stall_after.store(ms, Ordering::Relaxed);
    }

    /// How long the current step has run, if longer than the stall timeout.
    pub(crate) fn stalled(&self) -> Option<Duration> {
        let since = self.busy_since.load(Ordering::Relaxed);
        let running = self.now_ms().saturating_sub(since.checked_sub(1)?);
        (running > self.stall_after.load(Ordering::Relaxed)).then(|| Duration::from_millis(running))
    }
}

impl Metrics {
    fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Bytes written to files but not yet accepted by the sink.
    pub fn lag_bytes(&self) -> u64 {
        (Self::get(&self.bytes_read) + Self::get(&self.unread_bytes))
            .saturating_sub(Self::get(&self.bytes_sent))
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let stalled = self.progress.stalled().map_or(0, |d| d.as_secs());
        let rows: [(&str, &str, &str, u64); 12] = [
            (
                "podkit_tail_lines_read_total",
                "counter",
                "Records read from files.",
                Self::get(&self.lines_read),
            ),
            (
                "podkit_tail_bytes_read_total",
                "counter",
                "Bytes read from files.",
                Self::get(&self.bytes_read),
            ),
            (
                "podkit_tail_lines_sent_total",
                "counter",
                "Records accepted by the sink.",
                Self::get(&self.lines_sent),
            ),
            (
                "podkit_tail_bytes_sent_total",
                "counter",
                "File bytes accepted by the sink.",
                Self::get(&self.bytes_sent),
            ),
            (
                "podkit_tail_retries_total",
                "counter",
                "Failed sends that were retried.",
                Self::get(&self.retries),
            ),
            (
                "podkit_tail_rotations_total",
                "counter",
                "Followed files renamed away or deleted.",
                Self::get(&self.rotations),
            ),
            (
                "podkit_tail_truncations_total",
                "counter",
                "Followed files truncated.",
                Self::get(&self.truncations),
            ),
            (
                "podkit_tail_checkpoints_total",
                "counter",
                "State file writes.",
                Self::get(&self.checkpoints),
            ),
            (
                "podkit_tail_files_open",
                "gauge",
                "Descriptors of log files held now (inactive files are closed).",
                Self::get(&self.files_open),
            ),
            (
                "podkit_tail_unread_bytes",
                "gauge",
                "Bytes on disk not read yet.",
                Self::get(&self.unread_bytes),
            ),
            (
                "podkit_tail_lag_bytes",
                "gauge",
                "Bytes on disk not yet accepted by the sink.",
                self.lag_bytes(),
            ),
            (
                "podkit_tail_reader_stalled_seconds",
                "gauge",
                "How long a file system call of the reader has not returned, past the stall timeout (0: none).",
                stalled,
            ),
        ];
        for (name, kind, help, value) in rows {
            // Writing to a String cannot fail.
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        out
    }
}
