//! The puller's counters and its health server: `/healthz` (and `/readyz`) answer `503` until
//! the first successful sync, `200` after it, and `503` again once `--max-failures` consecutive
//! syncs failed; `/metrics` is Prometheus text.
//!
//! The server loop is the one of `sidecars::tail`'s health server; it is not shared because
//! tail's is bound to tail's counters and always healthy.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

/// How long open connections get to finish after shutdown.
const DRAIN: Duration = Duration::from_secs(5);

/// Counters shared by the sync loop and the health server.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Syncs finished (successful or not).
    pub syncs: AtomicU64,
    /// Syncs that failed.
    pub failures: AtomicU64,
    /// Consecutive failures now.
    pub consecutive_failures: AtomicU64,
    /// `--max-failures`, 0 when unset (then failures never make `/healthz` fail).
    pub max_failures: AtomicU64,
    /// Versions published.
    pub publishes: AtomicU64,
    /// `304 Not Modified` answers.
    pub not_modified: AtomicU64,
    /// Bytes downloaded.
    pub bytes: AtomicU64,
    /// Failed `--exec` hooks.
    pub hook_failures: AtomicU64,
    /// Unix seconds of the last successful sync, 0 before the first.
    pub last_success: AtomicU64,
}

impl Metrics {
    pub(crate) fn record_success(&self) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(1)
            .max(1);
        self.last_success.store(now, Ordering::Relaxed);
    }

    pub(crate) fn record_failure(&self, consecutive: u32) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.consecutive_failures
            .store(consecutive.into(), Ordering::Relaxed);
    }

    /// Healthy: synced at least once and not past `--max-failures`.
    pub fn healthy(&self) -> bool {
        let max = self.max_failures.load(Ordering::Relaxed);
        self.last_success.load(Ordering::Relaxed) > 0
            && (max == 0 || self.consecutive_failures.load(Ordering::Relaxed) < max)
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let counter = |name: &str, help: &str, value: &AtomicU64, kind: &str| {
            format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}\n",
                value.load(Ordering::Relaxed)
            )
        };
        [
            counter(
                "podkit_puller_syncs_total",
                "Syncs finished.",
                &self.syncs,
                "counter",
            ),
            counter(
                "podkit_puller_failures_total",
                "Syncs failed.",
                &self.failures,
                "counter",
            ),
            counter(
                "podkit_puller_consecutive_failures",
                "Consecutive failed syncs.",
                &self.consecutive_failures,
                "gauge",
            ),
            counter(
                "podkit_puller_publishes_total",
                "Versions published.",
                &self.publishes,
                "counter",
            ),
            counter(
                "podkit_puller_not_modified_total",
                "304 Not Modified answers.",
                &self.not_modified,
                "counter",
            ),
            counter(
                "podkit_puller_bytes_total",
                "Bytes downloaded.",
                &self.bytes,
                "counter",
            ),
            counter(
                "podkit_puller_hook_failures_total",
                "Failed --exec hooks.",
                &self.hook_failures,
                "counter",
            ),
            counter(
                "podkit_puller_last_success_timestamp_seconds",
                "Unix time of the last successful sync.",
                &self.last_success,
                "gauge",
            ),
        ]
        .concat()
    }
}

fn respond(req: &Request<hyper::body::Incoming>, metrics: &Metrics) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match req.uri().path() {
        "/healthz" | "/readyz" if metrics.healthy() => {
            (StatusCode::OK, "text/plain", "ok\n".to_owned())
        }
        "/healthz" | "/readyz" => {
            let why = if metrics.last_success.load(Ordering::Relaxed) == 0 {
                "not synced yet\n"
            } else {
                "too many consecutive failures\n"
            };
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                why.to_owned(),
            )
        }
        "/metrics" => (
            StatusCode::OK,
            "text/plain; version=0.0.4",
            metrics.render(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_owned(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

/// Serves until `shutdown`, then lets open connections finish (bounded).
pub async fn run(listener: TcpListener, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    let connections = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    warn!(?err, "failed to accept a health connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let (metrics, shutdown) = (metrics.clone(), shutdown.clone());
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let response = respond(&req, &metrics);
                async move { Ok::<_, Infallible>(response) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(err) = result {
                        debug!(?err, %peer, "health connection failed");
                    }
                    return;
                }
                _ = shutdown.cancelled() => conn.as_mut().graceful_shutdown(),
            }
            if let Err(err) = conn.await {
                debug!(?err, %peer, "health connection failed while draining");
            }
        });
    }
    connections.close();
    if tokio::time::timeout(DRAIN, connections.wait())
        .await
        .is_err()
    {
        warn!(
            open = connections.len(),
            "health connections cut after the drain timeout"
        );
    }
}
