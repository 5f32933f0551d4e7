//! The pod's API: HTTP/1.1 over `api.sock` in the pod's directory, served by its supervisor.
//! The socket is 0600 in a 0700 directory: root and the owner only.
//!
//! - `GET /status`: the pod's v1 PodStatus;
//! - `GET /events`: its events;
//! - `GET /logs?container=NAME[&follow=true][&previous=true][&tailLines=N][&sinceSeconds=N]
//!   [&sinceTime=RFC3339][&timestamps=true]`: a container's log as kubectl's `PodLogOptions`
//!   select it (`crate::logs`), streamed (chunked); following goes across restarts and ends
//!   once the container runs no more;
//! - `DELETE /pod[?gracePeriodSeconds=N]`: delete it, with the manifest's grace period or N;
//! - `POST /attach?container=NAME[&stdin=true]` with `Upgrade: podkit-attach`: a session on the
//!   running container's stdin and output (`super::attach`), as `kubectl attach` has one.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Bytes, Frame};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::UnixListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::{Pod, lock};
use crate::logs::{Query, Reader};

/// Every response's body: whole, or a stream of log chunks.
pub(crate) type Body = BoxBody<Bytes, std::io::Error>;

/// How often a log follower looks at its file even when it was not told of a write (a safety
/// net: every write tells it).
const FOLLOW_RECHECK: Duration = Duration::from_secs(1);

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
            let service = {
                let stop = stop.clone();
                hyper::service::service_fn(move |req| {
                    let (pod, delete, stop) = (pod.clone(), delete.clone(), stop.clone());
                    async move { Ok::<_, Infallible>(handle(&pod, &delete, &stop, req)) }
                })
            };
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
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
    pod: &Arc<Pod>,
    delete: &CancellationToken,
    stop: &CancellationToken,
    req: Request<hyper::body::Incoming>,
) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/logs") => logs(pod, req.uri().query().unwrap_or(""), stop),
        (&Method::POST, "/attach") => match super::attach::request(pod, req, stop) {
            Ok(response) => response,
            Err((status, message)) => text(status, &format!("{message}\n")),
        },
        (&Method::GET, "/status") => json(StatusCode::OK, &lock(&pod.status).to_pod_status()),
        (&Method::GET, "/events") => json(StatusCode::OK, &lock(&pod.status).events),
        (&Method::DELETE, "/pod") => {
            let grace = match delete_query(req.uri().query().unwrap_or("")) {
                Ok(grace) => grace,
                Err(message) => return text(StatusCode::BAD_REQUEST, &format!("{message}\n")),
            };
            if let Some(seconds) = grace {
                *lock(&pod.grace_override) = Some(Duration::from_secs(seconds));
            }
            delete.cancel();
            json(
                StatusCode::ACCEPTED,
                &serde_json::json!({"deleting": pod.plan.name}),
            )
        }
        (_, "/status" | "/events" | "/logs" | "/pod" | "/attach") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /status, /events, /logs?container=NAME, DELETE /pod or POST /attach\n",
        ),
    }
}

/// `DELETE /pod`'s query: its `gracePeriodSeconds`, if given. Anything it cannot read is an
/// error (the API server answers 400 too), never a delete with the manifest's grace period.
fn delete_query(query: &str) -> Result<Option<u64>, String> {
    let mut grace = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("gracePeriodSeconds", value)) => match value.parse::<u64>() {
                Ok(seconds) => grace = Some(seconds),
                Err(_) => {
                    return Err(format!(
                        "gracePeriodSeconds={value:?}: must be a whole number of seconds"
                    ));
                }
            },
            _ => {
                return Err(format!(
                    "unknown parameter {pair:?} (DELETE /pod takes gracePeriodSeconds=N)"
                ));
            }
        }
    }
    Ok(grace)
}

/// `GET /logs`: checks the query and the container, then streams what a [`Reader`] returns
/// from a task of its own.
fn logs(pod: &Arc<Pod>, query: &str, stop: &CancellationToken) -> Response<Body> {
    let mut query = match Query::parse(query) {
        Ok(query) => query,
        Err(err) => return text(StatusCode::BAD_REQUEST, &format!("{err}\n")),
    };
    let container = match find_container(pod, query.container.take()) {
        Ok(member) => member.name.clone(),
        Err((status, message)) => return text(status, &format!("{message}\n")),
    };
    let reader = match Reader::open(&pod.dir, &pod.plan.name, &container, &query) {
        Ok(reader) => reader,
        Err(err) => return text(StatusCode::NOT_FOUND, &format!("{err}\n")),
    };
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(stream_logs(
        pod.clone(),
        container,
        query.follow,
        reader,
        tx,
        stop.clone(),
    ));
    let mut response = Response::new(Streamed(rx).boxed());
    if let Ok(value) = hyper::header::HeaderValue::from_str("text/plain; charset=utf-8") {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

/// Sends `reader`'s chunks to `tx` until the log is read to its end, and when following, until
/// the container runs no more (and its file is read to its end), the client left, or the API
/// stops. Files are read on the blocking pool: a big log must not stall the pod's probes.
async fn stream_logs(
    pod: Arc<Pod>,
    container: String,
    follow: bool,
    mut reader: Reader,
    tx: mpsc::Sender<std::io::Result<Bytes>>,
    stop: CancellationToken,
) {
    let mut written = pod.logs_written.subscribe();
    loop {
        written.borrow_and_update();
        // Asked before the read: if it was final then, this read gets every last line.
        let last = !follow || pod.logs_final(&container);
        let read = tokio::task::spawn_blocking(move || {
            let chunk = reader.read();
            (reader, chunk)
        })
        .await;
        let chunk = match read {
            Ok((back, chunk)) => {
                reader = back;
                chunk.map_err(|err| err.to_string())
            }
            // The reader panicked and is gone with its task.
            Err(err) => {
                let message = format!("failed to read the log of {container:?}: {err}");
                let _ = tx.send(Err(std::io::Error::other(message))).await;
                return;
            }
        };
        match chunk {
            Ok(chunk) if !chunk.is_empty() => {
                if tx.send(Ok(Bytes::from(chunk))).await.is_err() {
                    return; // the client left
                }
                continue;
            }
            Ok(_) if last => return,
            Ok(_) => {}
            Err(err) => {
                // The status line is sent: cutting the body is how the client learns.
                debug!(%err, "api: failed to read a log");
                let _ = tx.send(Err(std::io::Error::other(err))).await;
                return;
            }
        }
        tokio::select! {
            _ = written.changed() => {}
            () = tokio::time::sleep(FOLLOW_RECHECK) => {}
            () = tx.closed() => return,
            () = stop.cancelled() => return,
        }
    }
}

/// The container a request names, or the pod's only one; else the error to answer, as the API
/// server words it.
pub(crate) fn find_container(
    pod: &Pod,
    name: Option<String>,
) -> Result<&crate::spec::Member, (StatusCode, String)> {
    let members: Vec<&crate::spec::Member> = pod
        .plan
        .init_containers
        .iter()
        .chain(&pod.plan.containers)
        .collect();
    let names = || {
        members
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match (name, members.as_slice()) {
        (Some(name), _) => match members.iter().find(|m| m.name == name) {
            Some(member) => Ok(member),
            None => Err((
                StatusCode::NOT_FOUND,
                format!(
                    "container {name:?} is not valid for pod {:?}: choose one of: {}",
                    pod.plan.name,
                    names()
                ),
            )),
        },
        (None, [only]) => Ok(only),
        (None, _) => Err((
            StatusCode::BAD_REQUEST,
            format!(
                "a container name must be specified for pod {:?}: choose one of: {}",
                pod.plan.name,
                names()
            ),
        )),
    }
}

/// An empty body.
pub(crate) fn empty() -> Body {
    Full::new(Bytes::new())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// A body fed through a channel, chunk by chunk.
struct Streamed(mpsc::Receiver<std::io::Result<Bytes>>);

impl hyper::body::Body for Streamed {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|chunk| chunk.map(Frame::data)))
    }
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(body) => response(status, "application/json", body),
        Err(err) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{err}\n")),
    }
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    response(status, "text/plain", body.as_bytes().to_vec())
}

fn response(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Body> {
    let body = Full::new(Bytes::from(body)).map_err(|never: Infallible| match never {});
    let mut response = Response::new(body.boxed());
    *response.status_mut() = status;
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}
