//! The proxy's health server: `/healthz`, `/readyz` (503 while draining) and `/metrics`
//! (Prometheus text) over HTTP/1.1.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::proxy::Metrics;

fn respond(req: &Request<hyper::body::Incoming>, metrics: &Metrics) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match req.uri().path() {
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        "/readyz" if metrics.draining.load(Ordering::Relaxed) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "draining\n".to_owned(),
        ),
        "/readyz" => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
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
