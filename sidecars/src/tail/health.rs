//! The health server: `/healthz`, `/readyz` and `/metrics` (Prometheus text) over HTTP/1.1.
//! `/healthz` and `/readyz` fail (503) while the reader is stuck in a file system call for
//! longer than `--stall-timeout` (see `Progress` in `metrics.rs`).

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::tail::Metrics;

fn respond(req: &Request<hyper::body::Incoming>, metrics: &Metrics) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match req.uri().path() {
        "/healthz" | "/readyz" => match metrics.progress.stalled() {
            None => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
            Some(stuck) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!(
                    "reader stuck: a file system call (open, read or directory listing) has not returned for {}s\n",
                    stuck.as_secs()
                ),
            ),
        },
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
