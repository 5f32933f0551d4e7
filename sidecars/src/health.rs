//! The health server the sidecars share: HTTP/1.1 on `--health-addr`, answered by each sidecar's
//! own `respond` (its `/healthz`, `/readyz` and `/metrics`); it stops accepting on shutdown and
//! gives open connections a bounded drain.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

/// How long open connections get to finish after shutdown.
const DRAIN: Duration = Duration::from_secs(5);

/// A sidecar's answer to one health request, from its metrics.
pub(crate) type Respond<M> = fn(&Request<hyper::body::Incoming>, &M) -> Response<Full<Bytes>>;

/// A response with `body` as `content_type`: how every sidecar's `respond` answers.
pub(crate) fn reply(
    status: hyper::StatusCode,
    content_type: &str,
    body: String,
) -> Response<Full<Bytes>> {
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
pub(crate) async fn serve<M>(
    listener: TcpListener,
    metrics: Arc<M>,
    shutdown: CancellationToken,
    respond: Respond<M>,
) where
    M: Send + Sync + 'static,
{
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
