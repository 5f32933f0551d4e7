//! The pod's API: HTTP/1.1 over `api.sock` in the pod's directory, served by its supervisor.
//! The socket is 0600 in a 0700 directory: root and the owner only.
//!
//! - `GET /status`: the pod's v1 PodStatus;
//! - `GET /events`: its events;
//! - `DELETE /pod[?gracePeriodSeconds=N]`: delete it, with the manifest's grace period or N.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::{Pod, lock};

/// Serves the pod's API on `listener` until `stop`. A delete request cancels `delete`.
pub async fn serve(
    pod: Arc<Pod>,
    listener: UnixListener,
    delete: CancellationToken,
    stop: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    debug!(%err, "api: accept failed");
                    continue;
                }
            },
            () = stop.cancelled() => return,
        };
        let (pod, delete, stop) = (pod.clone(), delete.clone(), stop.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let (pod, delete) = (pod.clone(), delete.clone());
                async move { Ok::<_, Infallible>(handle(&pod, &delete, req)) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = &mut connection => {}
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
}

fn handle(
    pod: &Pod,
    delete: &CancellationToken,
    req: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/status") => json(StatusCode::OK, &lock(&pod.status).to_pod_status()),
        (&Method::GET, "/events") => json(StatusCode::OK, &lock(&pod.status).events),
        (&Method::DELETE, "/pod") => {
            let grace = req
                .uri()
                .query()
                .unwrap_or("")
                .split('&')
                .find_map(|kv| kv.strip_prefix("gracePeriodSeconds=")?.parse::<u64>().ok());
            if let Some(seconds) = grace {
                *lock(&pod.grace_override) = Some(Duration::from_secs(seconds));
            }
            delete.cancel();
            json(
                StatusCode::ACCEPTED,
                &serde_json::json!({"deleting": pod.plan.name}),
            )
        }
        (_, "/status" | "/events" | "/pod") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /status, /events or DELETE /pod\n",
        ),
    }
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Full<Bytes>> {
    match serde_json::to_vec(value) {
        Ok(body) => response(status, "application/json", body),
        Err(err) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{err}\n")),
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    response(status, "text/plain", body.as_bytes().to_vec())
}

fn response(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}
