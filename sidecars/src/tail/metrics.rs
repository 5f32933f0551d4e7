//! Counters of the tailer, rendered in the Prometheus text format for `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

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
        let rows: [(&str, &str, &str, u64); 11] = [
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
                "Files followed now.",
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
