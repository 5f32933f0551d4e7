//! The CLI's client of a pod's API (`api.sock`, served by its supervisor): one HTTP/1.1
//! request on a connection of its own, on a runtime of its own.

use std::path::Path;

use anyhow::Context;
use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response};

/// Sends `method uri` to the API of the pod in `dir` and hands the response to `handle`.
/// The outer error says the API could not be reached (no supervisor, or it does not serve):
/// the caller may fall back to the pod's files. The inner one is `handle`'s, or the request's.
pub fn request<T>(
    dir: &Path,
    method: Method,
    uri: &str,
    handle: impl AsyncFnOnce(Response<Incoming>) -> anyhow::Result<T>,
) -> Result<anyhow::Result<T>, std::io::Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let socket = dir.join(crate::supervisor::API_SOCKET);
    runtime.block_on(async {
        let stream = tokio::net::UnixStream::connect(&socket).await?;
        Ok(async {
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .with_context(|| format!("failed to talk to {}", socket.display()))?;
            tokio::spawn(connection);
            let request = Request::builder()
                .method(method)
                .uri(uri)
                .header(hyper::header::HOST, "podkit")
                .body(Empty::<Bytes>::new())?;
            let response = sender
                .send_request(request)
                .await
                .with_context(|| format!("{} did not answer", socket.display()))?;
            handle(response).await
        }
        .await)
    })
}

/// The body of an error response, as the API words it (one line).
pub async fn error_text(response: Response<Incoming>) -> String {
    use http_body_util::BodyExt;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body).trim().to_owned();
    if text.is_empty() {
        format!("the pod's API answered {status}")
    } else {
        text
    }
}
