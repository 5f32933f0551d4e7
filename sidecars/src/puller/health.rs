//! The puller's counters and its health server: `/healthz` (and `/readyz`) answer `503` until
//! the first successful sync, `200` after it, and `503` again once `--max-failures` consecutive
//! syncs failed; `/metrics` is Prometheus text.
//!
//! The server loop is the one of `sidecars::tail`'s health server; it is not shared because
//! tail's is bound to tail's counters and always healthy.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

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
    crate::health::reply(status, content_type, body)
}

/// Serves until `shutdown`, then lets open connections finish (bounded).
pub async fn run(listener: TcpListener, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    crate::health::serve(listener, metrics, shutdown, respond).await;
}
