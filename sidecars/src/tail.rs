//! The log tailer sidecar: follows log files through rotation and ships every line.
//!
//! An app writes log files into a shared volume; `podkit tail` follows the files that match
//! `--path` globs (also ones that appear later) and ships every line to its own stdout or to a log
//! store (HTTP JSON lines, Loki, Elasticsearch).
//!
//! Guarantees: a line is lost neither through rotation (rename + create, copytruncate, deletion)
//! nor across a restart. Offsets are checkpointed only after the sink accepted the lines, so after
//! a crash the tailer resumes at the last accepted line (at least once); within one run each line
//! is shipped exactly once.
//!
//! Layout:
//! - `args.rs`: the clap flags ([`Args`]) and their conversion into the typed [`Config`].
//! - `discover.rs`: globs, the directories to watch and the scan for matching files.
//! - `open.rs`: opening a matched path safely (regular files only, no links out of the base
//!   directories, no FIFO or device ever opened for reading).
//! - `reader.rs`: the reader thread: tracks files by device, inode and fingerprint, reads them,
//!   detects rotation and truncation.
//! - `lines.rs`: bytes to records: partial lines, long lines, `raw|json|cri`, multiline joining.
//! - `checkpoint.rs`: the state file (offsets), written atomically.
//! - `sink.rs` + `sink/`: batching, retry with backoff, and the stdout/HTTP/Loki/Elasticsearch
//!   encoders.
//! - `metrics.rs`, `health.rs`: counters, the reader's progress, and the `/healthz` +
//!   `/metrics` server.
//! - `throttle.rs`: rate-limited warnings.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

mod args;
mod checkpoint;
mod discover;
mod health;
mod lines;
mod metrics;
mod open;
mod reader;
mod sink;
mod throttle;

pub use args::{Args, ArgsError};
pub use health::run as run_health;
pub use metrics::Metrics;

/// Where reading starts in a file found at startup that has no checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReadFrom {
    /// From the first byte.
    Head,
    /// From the current end: only lines written from now on.
    Tail,
}

/// How each input line is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The line as it is.
    Raw,
    /// A JSON object per line; `message`, `msg` or `log` becomes the message.
    Json,
    /// The CRI log format: `<RFC3339Nano> stdout|stderr F|P <line>`; `P` parts are joined.
    Cri,
}

/// How the stdout sink prints records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// The message alone, one per line.
    Raw,
    /// One JSON object per line with `file`, `offset`, `time` and `message`.
    Json,
}

/// Where records go.
#[derive(Debug, Clone)]
pub enum SinkConfig {
    /// The tailer's own stdout.
    Stdout {
        /// Raw messages or JSON objects.
        output: Output,
    },
    /// POST of gzip-compressed JSON lines (one object per record) to `url`.
    Http {
        /// Full URL, `http://` or `https://` (see [`Config::tls`]).
        url: hyper::Uri,
    },
    /// The Loki push API (`/loki/api/v1/push`, JSON).
    Loki {
        /// Push URL; a URL without a path gets `/loki/api/v1/push`.
        url: hyper::Uri,
        /// Stream labels added to every record, besides `filename`.
        labels: Vec<(String, String)>,
    },
    /// The Elasticsearch `_bulk` API (NDJSON).
    Elasticsearch {
        /// The `_bulk` URL; a URL without a path gets `/_bulk`.
        url: hyper::Uri,
        /// Index every document goes to.
        index: String,
    },
}

/// Batching: a batch is sent when it holds `max_lines` records or `max_bytes` bytes, or when
/// `timeout` has passed since its first record.
#[derive(Debug, Clone)]
pub struct BatchConfig {
    /// Most records in one batch.
    pub max_lines: usize,
    /// Most message bytes in one batch (a batch may exceed it by one read chunk).
    pub max_bytes: usize,
    /// How long a batch waits for more records.
    pub timeout: Duration,
}

/// Retry of a failed send: exponential backoff from `initial` doubling up to `max`, forever
/// (lines are never dropped; reading pauses meanwhile).
#[derive(Debug, Clone)]
pub struct RetryConfig {
    /// First wait.
    pub initial: Duration,
    /// Longest wait.
    pub max: Duration,
}

/// The typed configuration of the tailer. Build it from [`Args`] with `Config::try_from(args)`.
#[derive(Debug, Clone)]
pub struct Config {
    /// Globs of files to follow (absolute).
    pub paths: Vec<String>,
    /// Globs of files never to follow.
    pub exclude: Vec<String>,
    /// Start of files found at startup without a checkpoint.
    pub read_from: ReadFrom,
    /// Checkpoint file; `None` keeps no state across restarts.
    pub state: Option<PathBuf>,
    /// Ship a pending partial line or multiline event once it has not grown for this long.
    /// `None`: partial lines wait for their newline, multiline events wait 1s.
    pub flush_after: Option<Duration>,
    /// A line matching this starts a new record; other lines join the previous one.
    pub multiline_start: Option<regex::Regex>,
    /// Longer lines are split into parts of at most this many bytes.
    pub max_line_bytes: usize,
    /// Input parsing.
    pub format: Format,
    /// Destination.
    pub sink: SinkConfig,
    /// Trust and client identity for an `https://` sink.
    pub tls: crate::client_tls::ClientTls,
    /// Batching.
    pub batch: BatchConfig,
    /// Retry.
    pub retry: RetryConfig,
    /// A full rescan and read of every file this often (inotify is the fast path).
    pub poll_interval: Duration,
    /// A file that left the globs (renamed or deleted) is read for this long after its last
    /// growth before it is closed.
    pub rotate_wait: Duration,
    /// A followed file at its end that has not grown for this long has its descriptor closed;
    /// it is opened again when it changes.
    pub close_inactive: Duration,
    /// Follow symbolic links, only to files inside a base directory of the `paths` globs.
    pub follow_symlinks: bool,
    /// `/healthz` fails when one step of reading (an open, a read, a directory listing) has not
    /// ended for this long.
    pub stall_timeout: Duration,
    /// How often the state file is written (also on shutdown).
    pub checkpoint_interval: Duration,
    /// On shutdown, how long buffered records may take to reach the sink.
    pub drain_timeout: Duration,
    /// Timeout of one HTTP request to a sink.
    pub request_timeout: Duration,
    /// Address of the `/healthz` + `/metrics` server.
    pub health_addr: Option<SocketAddr>,
    /// Read chunks that may wait for the sink: with `max_lines`/`max_bytes` it bounds memory.
    pub buffer_chunks: usize,
}

/// Why the tailer stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The state file exists but cannot be read.
    #[error("failed to load checkpoints from {path:?}")]
    LoadState {
        /// The `--state` file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: checkpoint::Error,
    },
    /// The final checkpoint could not be written.
    #[error("failed to write checkpoints to {path:?}")]
    SaveState {
        /// The `--state` file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: checkpoint::Error,
    },
    /// The globs could not be compiled.
    #[error("failed to compile the path globs")]
    Globs(#[source] discover::Error),
    /// The health server's address could not be bound.
    #[error("failed to bind the health server to {addr}")]
    BindHealth {
        /// `--health-addr`.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The sink could not be built (e.g. a bad URL).
    #[error("failed to set up the sink")]
    Sink(#[source] sink::Error),
    /// The reader thread could not be started.
    #[error("failed to start the reader thread")]
    SpawnReader(#[source] std::io::Error),
    /// The reader thread panicked.
    #[error("the reader thread panicked")]
    ReaderPanicked,
}

/// Runs the tailer until `shutdown` is cancelled, then ships what was read (bounded by
/// `drain_timeout`), writes the final checkpoint and returns.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    run_with_metrics(config, Arc::new(Metrics::default()), shutdown).await
}

/// [`run`] with the caller's counters, e.g. to read them in a test.
pub async fn run_with_metrics(
    config: Config,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let config = Arc::new(config);
    let tracker = TaskTracker::new();
    metrics.progress.set_stall_timeout(config.stall_timeout);

    let state = match &config.state {
        Some(path) => checkpoint::load(path).map_err(|source| Error::LoadState {
            path: path.clone(),
            source,
        })?,
        None => checkpoint::State::default(),
    };
    let matcher = discover::Matcher::new(&config.paths, &config.exclude).map_err(Error::Globs)?;
    let sink = sink::Sink::new(&config).map_err(Error::Sink)?;

    if let Some(addr) = config.health_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| Error::BindHealth { addr, source })?;
        info!(addr = %listener.local_addr().unwrap_or(addr), "health server listening");
        let (metrics, shutdown) = (metrics.clone(), shutdown.clone());
        tracker.spawn(async move { health::run(listener, metrics, shutdown).await });
    }

    // `drain_abort` fires `drain_timeout` after shutdown: the sink then gives up on what it
    // could not deliver (it stays un-checkpointed, so nothing is lost across the restart).
    let drain_abort = CancellationToken::new();
    {
        let (shutdown, drain_abort, timeout) =
            (shutdown.clone(), drain_abort.clone(), config.drain_timeout);
        tracker.spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    tokio::select! {
                        _ = tokio::time::sleep(timeout) => {
                            warn!(?timeout, "drain timeout: lines not yet accepted stay un-checkpointed");
                            drain_abort.cancel();
                        }
                        _ = drain_abort.cancelled() => {}
                    }
                }
                _ = drain_abort.cancelled() => {}
            }
        });
    }

    let (tx, rx) = tokio::sync::mpsc::channel(config.buffer_chunks.max(1));
    let reader = reader::spawn(
        config.clone(),
        matcher,
        state,
        tx,
        metrics.clone(),
        shutdown.clone(),
    )
    .map_err(Error::SpawnReader)?;

    let checkpoints = checkpoint::Checkpoints::new(config.state.clone());
    let result = sink::run(
        config.clone(),
        sink,
        rx,
        checkpoints,
        metrics.clone(),
        drain_abort.clone(),
    )
    .await;

    // The sink returns when the reader is gone (shutdown) or after `drain_abort`; make sure
    // the reader thread stops either way.
    shutdown.cancel();
    drain_abort.cancel();
    let joined = tokio::task::spawn_blocking(move || reader.join()).await;
    tracker.close();
    tracker.wait().await;
    if !matches!(joined, Ok(Ok(()))) {
        warn!("reader thread panicked");
        result?;
        return Err(Error::ReaderPanicked);
    }
    result
}

/// Runs the tailer the flags describe until SIGTERM or SIGINT: `podkit tail` and
/// `podkit-tail`. The exit code: 0 after a clean shutdown, 2 for bad flags, 1 otherwise. The
/// caller installs tracing.
pub fn main(args: Args) -> std::process::ExitCode {
    crate::cli::raise_open_file_limit();
    crate::cli::main("podkit tail", Config::try_from(args), run)
}

/// For the fuzz targets in `tests/fuzz` only: the line splitter driven the way the reader
/// drives it. Not a stable API.
#[doc(hidden)]
pub mod fuzz {
    use std::time::Instant;

    use clap::Parser;

    use crate::tail::lines::LineReader;

    /// One shipped line, as the sink would see it: the message, its file offsets (`None` for
    /// lines of a fast-path block, which carries offsets per block), and its CRI stream.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Line {
        /// The message.
        pub message: String,
        /// File offsets of the first byte and just after the last (`None` in a block).
        pub span: Option<(u64, u64)>,
        /// `stdout` or `stderr` for CRI input.
        pub source: Option<&'static str>,
    }

    /// The splitter's options: `--format`, `--multiline-start`, `--max-line-bytes`, and whether
    /// the raw stdout fast path is on (raw output, raw input, no multiline).
    #[derive(Debug, Clone)]
    pub struct Options {
        /// `raw`, `json` or `cri`.
        pub format: &'static str,
        /// A `--multiline-start` regex.
        pub multiline: Option<&'static str>,
        /// `--max-line-bytes`.
        pub max_line_bytes: usize,
        /// Raw stdout output (fast-path blocks when the input is raw without multiline).
        pub raw_output: bool,
    }

    /// Splits `chunks` (consecutive reads of one file) into lines, then finishes the file
    /// (as on rotation). Returns the lines and the committed offset at the end.
    pub fn split(options: &Options, chunks: &[&[u8]]) -> (Vec<Line>, u64) {
        let max = options.max_line_bytes.to_string();
        let mut argv = vec![
            "podkit-tail",
            "--path",
            "/x/*.log",
            "--format",
            options.format,
            "--max-line-bytes",
            &max,
            "--output",
            if options.raw_output { "raw" } else { "json" },
        ];
        if let Some(regex) = options.multiline {
            argv.extend(["--multiline-start", regex]);
        }
        // The options above are all valid.
        let config = crate::tail::Config::try_from(crate::tail::Args::parse_from(argv))
            .unwrap_or_else(|err| unreachable!("fuzz options: {err}"));
        let mut reader = LineReader::new(1, "/x/a.log".into(), 0, &config);
        let (mut lines, mut records) = (Vec::new(), Vec::new());
        let now = Instant::now();
        for chunk in chunks {
            if reader.blocks() {
                // As `reader.rs` does: the partial line in front of the read.
                let mut data = reader.partial().to_vec();
                reader.clear_partial();
                data.extend_from_slice(chunk);
                if let Some(block) = reader.push_bytes(&data, now, &mut records) {
                    assert_eq!(block.end - block.offset, {
                        let complete = data.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
                        complete as u64
                    });
                    let text = String::from_utf8(block.bytes.to_vec())
                        .unwrap_or_else(|_| unreachable!("blocks are UTF-8"));
                    let mut count = 0;
                    for line in text.split_terminator('\n') {
                        lines.push(Line {
                            message: line.to_owned(),
                            span: None,
                            source: None,
                        });
                        count += 1;
                    }
                    assert_eq!(count, block.count, "newline count of a block");
                }
            } else {
                reader.push(chunk, now, &mut records);
            }
            lines.extend(records.drain(..).map(|r| Line {
                span: (!reader.blocks()).then_some((r.offset, r.end)),
                message: r.message,
                source: r.source,
            }));
        }
        reader.finish(now, &mut records);
        lines.extend(records.drain(..).map(|r| Line {
            span: (!reader.blocks()).then_some((r.offset, r.end)),
            message: r.message,
            source: r.source,
        }));
        (lines, reader.committed())
    }
}
