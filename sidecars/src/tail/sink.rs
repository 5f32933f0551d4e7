//! The sink side: batches the reader's records, delivers them with retry, and advances the
//! checkpoints only for what the destination accepted.
//!
//! A batch is sent when it is full (`--batch-lines`, `--batch-bytes`) or its time is up
//! (`--batch-timeout`). A failed send is retried with exponential backoff, forever: lines are
//! never dropped. Meanwhile the bounded channel from the reader fills up and the reader pauses,
//! so memory stays bounded while the destination is down.
//!
//! Destinations live in `sink/`: `stdout.rs` and `http.rs` (JSON lines, Loki, Elasticsearch).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::sync::mpsc::Receiver;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use crate::tail::checkpoint::Checkpoints;
use crate::tail::lines::Record;
use crate::tail::reader::{Chunk, Event};
use crate::tail::{Config, Metrics, SinkConfig};

mod encode;
mod http;
mod stdout;

/// Why the sink could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The stdout sink writes to its own copy of fd 1 (no line buffering).
    #[error("failed to duplicate stdout (fd 1) for the stdout sink")]
    Stdout(#[source] std::io::Error),
    /// Only `http://` and `https://` URLs are supported.
    #[error("failed to use {flag} {url}: only http:// and https:// URLs are supported")]
    Scheme {
        /// The flag that gave the URL.
        flag: &'static str,
        /// The URL.
        url: String,
    },
    /// The TLS client configuration (`--ca-file`, `--client-cert`, `--client-key`) is unusable.
    #[error("failed to set up TLS for {url}")]
    Tls {
        /// The sink URL.
        url: String,
        /// Cause, naming the file.
        #[source]
        source: crate::client_tls::Error,
    },
}

/// Why one delivery failed (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Writing to stdout failed.
    #[error("failed to write to stdout")]
    Stdout(#[source] std::io::Error),
    /// The request did not get a response.
    #[error("failed to send the request to {url}")]
    Request {
        /// Destination.
        url: String,
        /// Cause.
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// The response body could not be read.
    #[error("failed to read the response of {url}")]
    Response {
        /// Destination.
        url: String,
        /// Cause.
        #[source]
        source: hyper::Error,
    },
    /// No response within `--request-timeout`.
    #[error("failed to get a response from {url} within {timeout:?}")]
    Timeout {
        /// Destination.
        url: String,
        /// The timeout.
        timeout: std::time::Duration,
    },
    /// The destination refused the batch.
    #[error("failed to deliver to {url}: HTTP {status}: {body}")]
    Status {
        /// Destination.
        url: String,
        /// Status code.
        status: hyper::StatusCode,
        /// Start of the response body.
        body: String,
    },
    /// Elasticsearch answered `"errors": true`.
    #[error("failed to index some documents at {url}: {body}")]
    Bulk {
        /// Destination.
        url: String,
        /// Start of the response body.
        body: String,
    },
    /// The request could not be built.
    #[error("failed to build the request to {url}")]
    Build {
        /// Destination.
        url: String,
        /// Cause.
        #[source]
        source: hyper::http::Error,
    },
    /// Compressing the body failed.
    #[error("failed to gzip the request body")]
    Gzip(#[source] std::io::Error),
}

/// A destination.
#[derive(Debug)]
pub(crate) enum Sink {
    Stdout(stdout::Stdout),
    Http(Box<http::Http>),
}

impl Sink {
    pub(crate) fn new(config: &Config) -> Result<Self, Error> {
        Ok(match &config.sink {
            SinkConfig::Stdout { output } => {
                Sink::Stdout(stdout::Stdout::new(*output).map_err(Error::Stdout)?)
            }
            other => Sink::Http(Box::new(http::Http::new(
                other,
                &config.tls,
                config.request_timeout,
            )?)),
        })
    }

    /// Delivers the records and lines of `batch`.
    async fn send(&mut self, batch: &[Event]) -> Result<(), SendError> {
        match self {
            Sink::Stdout(s) => s.send(batch).await,
            Sink::Http(s) => {
                // `Lines` come only with the raw stdout sink (see `LineReader::blocks`).
                debug_assert!(!batch.iter().any(|e| matches!(e, Event::Lines(_))));
                let records: Vec<&Record> = batch
                    .iter()
                    .filter_map(|e| match e {
                        Event::Record(r) => Some(r),
                        _ => None,
                    })
                    .collect();
                s.send(&records).await
            }
        }
    }
}

/// Runs the sink until the reader is gone and the channel is drained, or until `abort`.
/// Writes the checkpoints at `checkpoint_interval` and once more at the end.
pub(crate) async fn run(
    config: Arc<Config>,
    mut sink: Sink,
    mut rx: Receiver<Chunk>,
    mut checkpoints: Checkpoints,
    metrics: Arc<Metrics>,
    abort: CancellationToken,
) -> Result<(), crate::tail::Error> {
    let mut last_save = Instant::now();
    let mut tick = tokio::time::interval(config.checkpoint_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut batch = tokio::select! {
            biased;
            _ = abort.cancelled() => break,
            chunk = rx.recv() => match chunk {
                Some(chunk) => chunk,
                None => break,
            },
            _ = tick.tick() => {
                save(&mut checkpoints, &metrics);
                last_save = Instant::now();
                continue;
            }
        };
        let (mut lines, mut bytes) = size(&batch);
        let deadline = tokio::time::Instant::now() + config.batch.timeout;
        while lines < config.batch.max_lines && bytes < config.batch.max_bytes {
            let more = if config.batch.timeout.is_zero() {
                rx.try_recv().ok()
            } else {
                tokio::select! {
                    chunk = rx.recv() => chunk,
                    _ = tokio::time::sleep_until(deadline) => None,
                    _ = abort.cancelled() => None,
                }
            };
            let Some(more) = more else { break };
            let (l, b) = size(&more);
            lines += l;
            bytes += b;
            batch.extend(more);
        }
        let shipped = batch
            .iter()
            .any(|e| matches!(e, Event::Record(_) | Event::Lines(_)));
        if shipped && !deliver(&config, &mut sink, &batch, &metrics, &abort).await {
            break;
        }
        let mut sent_bytes = 0;
        // Offsets advance once per run of records of one stream, not once per record.
        let mut run: Option<(u64, u64)> = None;
        for event in batch {
            let (rec_stream, rec_offset, rec_end) = match &event {
                Event::Record(rec) => (rec.stream, rec.offset, rec.end),
                Event::Lines(lines) => (lines.stream, lines.offset, lines.end),
                Event::Open { .. } | Event::Close { .. } => {
                    if let Some((stream, end)) = run.take() {
                        checkpoints.advance(stream, end);
                    }
                    match event {
                        Event::Open { id, entry } => checkpoints.open(id, entry),
                        Event::Close { id } => checkpoints.close(id),
                        Event::Record(_) | Event::Lines(_) => {}
                    }
                    continue;
                }
            };
            sent_bytes += rec_end - rec_offset;
            match &mut run {
                Some((stream, end)) if *stream == rec_stream => *end = rec_end,
                _ => {
                    if let Some((stream, end)) = run.replace((rec_stream, rec_end)) {
                        checkpoints.advance(stream, end);
                    }
                }
            }
        }
        if let Some((stream, end)) = run {
            checkpoints.advance(stream, end);
        }
        metrics
            .lines_sent
            .fetch_add(lines as u64, Ordering::Relaxed);
        metrics.bytes_sent.fetch_add(sent_bytes, Ordering::Relaxed);
        if last_save.elapsed() >= config.checkpoint_interval {
            save(&mut checkpoints, &metrics);
            last_save = Instant::now();
        }
    }
    debug!("sink stopped; writing the final checkpoint");
    checkpoints
        .save()
        .map_err(|source| crate::tail::Error::SaveState {
            path: checkpoints
                .path()
                .unwrap_or_else(|| std::path::Path::new(""))
                .to_owned(),
            source,
        })?;
    Ok(())
}

fn size(chunk: &Chunk) -> (usize, usize) {
    chunk.iter().fold((0, 0), |(l, b), e| match e {
        Event::Record(r) => (l + 1, b + r.message.len()),
        Event::Lines(lines) => (l + lines.count as usize, b + lines.bytes.len()),
        Event::Open { .. } | Event::Close { .. } => (l, b),
    })
}

/// A failed periodic save is logged and tried again at the next tick (the final one is not
/// forgiven).
fn save(checkpoints: &mut Checkpoints, metrics: &Metrics) {
    match checkpoints.save() {
        Ok(()) => {
            metrics.checkpoints.fetch_add(1, Ordering::Relaxed);
        }
        Err(err) => error!(error = %err, "failed to write checkpoints; will retry"),
    }
}

/// Sends until accepted; false if `abort` came first.
async fn deliver(
    config: &Config,
    sink: &mut Sink,
    batch: &[Event],
    metrics: &Metrics,
    abort: &CancellationToken,
) -> bool {
    let mut backoff = config.retry.initial;
    loop {
        let result = tokio::select! {
            result = sink.send(batch) => result,
            _ = abort.cancelled() => return false,
        };
        match result {
            Ok(()) => return true,
            Err(err) => {
                metrics.retries.fetch_add(1, Ordering::Relaxed);
                warn!(error = %ErrorChain(&err), events = batch.len(), retry_in = ?backoff, "failed to ship batch; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = abort.cancelled() => return false,
                }
                backoff = (backoff * 2).min(config.retry.max);
            }
        }
    }
}

/// Displays an error with its sources, `a: b: c`.
struct ErrorChain<'a>(&'a dyn std::error::Error);

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(err) = source {
            write!(f, ": {err}")?;
            source = err.source();
        }
        Ok(())
    }
}
