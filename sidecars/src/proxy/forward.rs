//! One request: pick the route, rewrite the head (hop-by-hop headers out, X-Forwarded-* and
//! Forwarded in), send it upstream over the pool with a response timeout, and turn failures
//! into short 502/504/404 answers with Envoy-style flags.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::Frame;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::uri::Authority;
use hyper::{Method, Request, Response, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::proxy::access::{Entry, Logged};
use crate::proxy::route::{Scheme, Table, Upstream};
use crate::proxy::{Config, Metrics, files, upstream};

/// Errors of bodies flowing through the proxy.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// A body the proxy sends (to the client or the upstream).
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// What every request handler shares.
#[derive(Debug)]
pub struct Shared {
    /// The configuration the proxy runs with.
    pub config: Config,
    /// Routes in match order.
    pub table: Table,
    /// A keep-alive pool per `http://` upstream.
    pub http_pools: std::collections::HashMap<Authority, upstream::Pool>,
    /// A keep-alive pool per `unix:` upstream socket.
    pub unix_pools: std::collections::HashMap<std::path::PathBuf, upstream::Pool>,
    /// A pool per `h2c://` upstream (HTTP/2 only: one connection carries every request).
    pub h2c_clients: std::collections::HashMap<Authority, Client<TcpTo, ProxyBody>>,
    /// A pool per `https://` upstream, HTTP/2 or HTTP/1.1 as ALPN decides per connection.
    pub https_clients:
        std::collections::HashMap<Authority, Client<HttpsConnector<TcpTo>, ProxyBody>>,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// One permit per open client connection (`--max-connections`).
    pub connection_slots: Arc<tokio::sync::Semaphore>,
    /// Upgraded connections (WebSocket) being spliced; the drain waits for them too.
    pub tunnels: TaskTracker,
    /// Cancelled at the drain timeout: what is still open is cut.
    pub cut: CancellationToken,
}

/// Dials one upstream whatever host the request URI names: the URIs sent to `h2c://` and
/// `https://` upstreams carry the client's Host, which HTTP/2 sends as `:authority`.
#[derive(Debug, Clone)]
pub struct TcpTo {
    /// `http://HOST:PORT` of the upstream, what `http` dials.
    pub target: hyper::Uri,
    /// Connect timeout and TCP_NODELAY.
    pub http: HttpConnector,
}

impl tower_service::Service<hyper::Uri> for TcpTo {
    type Response = <HttpConnector as tower_service::Service<hyper::Uri>>::Response;
    type Error = <HttpConnector as tower_service::Service<hyper::Uri>>::Error;
    type Future = <HttpConnector as tower_service::Service<hyper::Uri>>::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.http.poll_ready(cx)
    }

    fn call(&mut self, _uri: hyper::Uri) -> Self::Future {
        self.http.call(self.target.clone())
    }
}

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// Headers that describe one connection, never forwarded (RFC 9110 section 7.6.1); names
/// made once, not parsed per request.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, also the ones `Connection` names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most heads have none: one pass over the names is cheaper than hashing six of them.
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

fn short(status: StatusCode) -> Response<ProxyBody> {
    let body = format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let mut response = Response::new(Full::new(Bytes::from(body)).map_err(Into::into).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Adds X-Forwarded-For/-Proto/-Host and Forwarded for a request from `peer`.
pub(crate) fn forwarded(
    headers: &mut HeaderMap,
    peer: SocketAddr,
    tls: bool,
    host: Option<&HeaderValue>,
    trust: bool,
) {
    use std::fmt::Write as _;

    let proto = if tls { "https" } else { "http" };
    let (xff_previous, forwarded_previous) = if trust {
        (headers.remove(&X_FORWARDED_FOR), headers.remove(&FORWARDED))
    } else {
        let names = [
            &X_FORWARDED_FOR,
            &X_FORWARDED_PROTO,
            &X_FORWARDED_HOST,
            &FORWARDED,
        ];
        // Usually none was sent: one pass over the names instead of four lookups.
        if headers.keys().any(|name| names.contains(&name)) {
            for name in names {
                headers.remove(name);
            }
        }
        (None, None)
    };
    // Each value is built in one buffer and handed over without a copy.
    let value = |s: String| HeaderValue::from_maybe_shared(Bytes::from(s)).ok();
    let mut xff = String::with_capacity(64);
    if let Some(previous) = xff_previous.as_ref().and_then(|v| v.to_str().ok()) {
        xff.push_str(previous);
        xff.push_str(", ");
    }
    let _ = write!(xff, "{}", peer.ip());
    if let Some(xff) = value(xff) {
        headers.insert(X_FORWARDED_FOR, xff);
    }
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    if let Some(host) = host
        && !headers.contains_key(&X_FORWARDED_HOST)
    {
        headers.insert(X_FORWARDED_HOST, host.clone());
    }
    let mut element = String::with_capacity(96);
    if let Some(previous) = forwarded_previous.as_ref().and_then(|v| v.to_str().ok()) {
        element.push_str(previous);
        element.push_str(", ");
    }
    let _ = match peer {
        SocketAddr::V4(peer) => write!(element, "for={};proto={proto}", peer.ip()),
        SocketAddr::V6(peer) => {
            element.push_str("for=");
            quote(
                &mut element,
                format_args!("[{}]", peer.ip()).to_string().as_bytes(),
            );
            write!(element, ";proto={proto}")
        }
    };
    if let Some(host) = host {
        element.push_str(";host=");
        quote(&mut element, host.as_bytes());
    }
    if let Some(element) = value(element) {
        headers.insert(FORWARDED, element);
    }
}

/// Appends `value` as an RFC 9110 quoted-string (section 5.6.4), as `Forwarded` takes its
/// values (RFC 7239 section 4): `"` and `\\` escaped with a backslash; bytes no quoted-string
/// can hold (controls other than HTAB, DEL) are dropped. The callers pass validated values, so
/// this is the second of two guards against a client adding elements of its own.
pub fn quote(out: &mut String, value: &[u8]) {
    out.push('"');
    for &b in value {
        match b {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(char::from(b));
            }
            b'\t' | b' '..=b'~' => out.push(char::from(b)),
            // obs-text: kept as the Latin-1 character a HeaderValue's byte stands for would
            // not be the same byte; dropped instead.
            _ => {}
        }
    }
    out.push('"');
}

/// Whether `value` is a valid `Host`: `uri-host [ ":" port ]` (RFC 9110 section 7.2, RFC 3986
/// section 3.2.2): an IP literal in brackets, or a reg-name of unreserved characters,
/// percent-encodings and sub-delimiters, then an optional port of digits. An empty host is
/// refused, as nginx does.
pub fn valid_authority(value: &[u8]) -> bool {
    let (host, port) = if let Some(rest) = value.strip_prefix(b"[") {
        let Some(close) = rest.iter().position(|&b| b == b']') else {
            return false;
        };
        let literal = &rest[..close];
        let valid = std::str::from_utf8(literal)
            .ok()
            .and_then(|l| l.parse::<std::net::Ipv6Addr>().ok())
            .is_some();
        if !valid {
            return false;
        }
        match &rest[close + 1..] {
            [] => return true,
            [b':', port @ ..] => (&b""[..], Some(port)),
            _ => return false,
        }
    } else {
        match value.iter().position(|&b| b == b':') {
            Some(colon) => (&value[..colon], Some(&value[colon + 1..])),
            None => (value, None),
        }
    };
    if let Some(port) = port
        && (port.len() > 5 || !port.iter().all(u8::is_ascii_digit))
    {
        return false;
    }
    if value.starts_with(b"[") {
        return true;
    }
    if host.is_empty() {
        return false;
    }
    let mut i = 0;
    while i < host.len() {
        match host[i] {
            b'%' => {
                if !(host.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                    && host.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
                {
                    return false;
                }
                i += 3;
                continue;
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {}
            b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' => {}
            _ => return false,
        }
        i += 1;
    }
    true
}

/// Fields a trailer section must not carry (RFC 9110 section 6.5.1): framing, routing,
/// authentication, request modifiers, response control and content metadata. Dropped from
/// the trailers passed on, both ways.
const FORBIDDEN_TRAILERS: [&str; 30] = [
    "content-length",
    "transfer-encoding",
    "host",
    "trailer",
    "te",
    "connection",
    "keep-alive",
    "upgrade",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "proxy-authentication-info",
    "authorization",
    "www-authenticate",
    "authentication-info",
    "cookie",
    "set-cookie",
    "content-encoding",
    "content-type",
    "content-range",
    "cache-control",
    "expect",
    "max-forwards",
    "pragma",
    "range",
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
    "age",
];

/// Removes what [`FORBIDDEN_TRAILERS`] names, and any `proxy-*` field.
pub fn strip_forbidden_trailers(trailers: &mut HeaderMap) {
    let forbidden: Vec<HeaderName> = trailers
        .keys()
        .filter(|name| {
            let name = name.as_str();
            FORBIDDEN_TRAILERS.contains(&name) || name.starts_with("proxy-")
        })
        .cloned()
        .collect();
    for name in forbidden {
        trailers.remove(name);
    }
}

/// A body's frames with the forbidden trailer fields dropped.
fn filter_trailers(frame: Frame<Bytes>) -> Frame<Bytes> {
    match frame.into_trailers() {
        Ok(mut trailers) => {
            strip_forbidden_trailers(&mut trailers);
            Frame::trailers(trailers)
        }
        Err(frame) => frame,
    }
}

/// A failure of the client's request body (malformed chunked framing, the client gone): the
/// client's fault, answered 400, never counted as the upstream's.
#[derive(Debug, thiserror::Error)]
#[error("failed to read the client's request body")]
pub struct ClientBody(#[source] hyper::Error);

/// Whether a request failed because of the client's own body.
fn client_body_failed(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(err) = source {
        if err.is::<ClientBody>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// Why a request is refused before routing: its status and the access log's flags.
pub(crate) fn refuse<B>(req: &Request<B>) -> Option<StatusCode> {
    if req.method() == Method::CONNECT {
        return Some(StatusCode::METHOD_NOT_ALLOWED);
    }
    // The asterisk-form is for OPTIONS alone (RFC 9112 section 3.2.4).
    if req.uri().path() == "*" && req.method() != Method::OPTIONS {
        return Some(StatusCode::BAD_REQUEST);
    }
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    // RFC 9112 section 3.2: more than one Host, none in HTTP/1.1, or an invalid one: 400.
    if hosts.next().is_some() {
        return Some(StatusCode::BAD_REQUEST);
    }
    match host {
        Some(host) if !valid_authority(host.as_bytes()) => return Some(StatusCode::BAD_REQUEST),
        None if req.version() == hyper::Version::HTTP_11 => {
            return Some(StatusCode::BAD_REQUEST);
        }
        _ => {}
    }
    // The request target's authority (absolute- or authority-form, HTTP/2's `:authority`)
    // stands in for a missing Host: it must be as valid (hyper's URI parsing lets a user name
    // through, `GET* HT@* HTTP/1.0` as the fuzzer found).
    if let Some(authority) = req.uri().authority()
        && !valid_authority(authority.as_str().as_bytes())
    {
        return Some(StatusCode::BAD_REQUEST);
    }
    // HTTP/2's `:authority` must agree with a Host.
    if let (Some(host), Some(authority)) = (host, req.uri().authority())
        && req.version() == hyper::Version::HTTP_2
        && !host
            .as_bytes()
            .eq_ignore_ascii_case(authority.as_str().as_bytes())
    {
        return Some(StatusCode::BAD_REQUEST);
    }
    // A transfer coding the proxy does not apply would be lost (chunked is undone by hyper
    // and made anew): 501, as RFC 9112 section 6.1 asks.
    if req.headers().contains_key(header::TRANSFER_ENCODING)
        && !upstream::only_chunked(req.headers())
    {
        return Some(StatusCode::NOT_IMPLEMENTED);
    }
    None
}

/// The `Upgrade` an HTTP/1.1 request asks for with `Connection: upgrade`.
fn upgrade_protocol<B>(req: &Request<B>) -> Option<HeaderValue> {
    if req.version() != hyper::Version::HTTP_11 {
        return None;
    }
    let asks = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        });
    asks.then(|| req.headers().get(header::UPGRADE).cloned())
        .flatten()
}

/// A socket a tunnel copies to and from.
trait Duplex: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Duplex for T {}

/// The upstream side of a 101 answer.
enum Switched {
    /// From hyper-util's client (`https://` upstreams).
    Hyper(hyper::upgrade::OnUpgrade),
    /// From podkit's own client: the connection, and what was read past the 101's head.
    Own(Option<upstream::Upgraded>),
}

/// Answers the client with the upstream's 101 and, once both sides have switched, copies bytes
/// both ways until either closes or the drain timeout cuts the tunnel.
fn tunnel(
    shared: &Shared,
    client_upgrade: hyper::upgrade::OnUpgrade,
    mut parts: hyper::http::response::Parts,
    upstream: Switched,
) -> Response<ProxyBody> {
    let protocol = parts.headers.get(header::UPGRADE).cloned();
    strip_hop_by_hop(&mut parts.headers);
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Some(protocol) = protocol {
        parts.headers.insert(header::UPGRADE, protocol);
    }
    let cut = shared.cut.clone();
    shared.tunnels.spawn(async move {
        let (mut upstream, early): (Box<dyn Duplex>, Bytes) = match upstream {
            Switched::Hyper(on) => match on.await {
                Ok(io) => (Box::new(TokioIo::new(io)), Bytes::new()),
                Err(err) => {
                    debug!(?err, "upstream upgrade failed");
                    return;
                }
            },
            Switched::Own(upgraded) => match upgraded.and_then(|u| u.take()) {
                Some((io, early)) => (Box::new(io), early),
                None => return,
            },
        };
        let mut client = match client_upgrade.await {
            Ok(client) => TokioIo::new(client),
            Err(err) => {
                debug!(?err, "client upgrade failed");
                return;
            }
        };
        // Bytes the upstream sent right after its 101, read with the head.
        if !early.is_empty()
            && let Err(err) = client.write_all(&early).await
        {
            debug!(?err, "tunnel failed");
            return;
        }
        tokio::select! {
            copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => match copied {
                Ok((up, down)) => debug!(up, down, "tunnel closed"),
                Err(err) => debug!(?err, "tunnel failed"),
            },
            _ = cut.cancelled() => debug!("tunnel cut at the drain timeout"),
        }
    });
    Response::from_parts(parts, Empty::new().map_err(Into::into).boxed())
}

/// Which pool a request goes through.
enum Via<'a> {
    Own(&'a upstream::Pool),
    H2c(&'a Client<TcpTo, ProxyBody>),
    Https(&'a Client<HttpsConnector<TcpTo>, ProxyBody>),
}

/// Whether a request failed because its streamed body went over `--max-body-bytes`.
fn body_too_large(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// Handles one request from `peer`; never fails (errors become responses).
/// `calm`: the connection was told GOAWAY for resetting too many streams; streams it still
/// opens get 503 and reach no upstream.
pub async fn handle(
    shared: Arc<Shared>,
    peer: SocketAddr,
    tls: bool,
    calm: bool,
    req: Request<hyper::body::Incoming>,
) -> Response<Logged<ProxyBody>> {
    let start = Instant::now();
    shared.metrics.requests.fetch_add(1, Ordering::Relaxed);
    // Host as the client sent it, or HTTP/2's `:authority`.
    let host = match req.headers().get(header::HOST) {
        Some(host) => Some(host.clone()),
        None => req
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
    };
    let log = shared.config.access_log != crate::proxy::AccessLog::Off;
    let header = |name| log.then(|| req.headers().get(name).cloned()).flatten();
    let mut entry = Entry {
        format: shared.config.access_log,
        peer,
        method: req.method().clone(),
        target: req.uri().path_and_query().cloned(),
        version: req.version(),
        host: host.clone(),
        status: 0,
        referer: header(header::REFERER),
        user_agent: header(header::USER_AGENT),
        upstream: Arc::from("-"),
        flags: "-",
        start,
        bytes: 0,
        answered: false,
    };
    let refused = match calm {
        true => Some(StatusCode::SERVICE_UNAVAILABLE),
        false => refuse(&req),
    };
    let response = match refused {
        Some(status) => {
            // The client's fault (Envoy's "downstream protocol error"); nothing was forwarded.
            entry.flags = "DPE";
            debug!(client = %peer, %status, "request refused");
            let mut response = short(status);
            if status == StatusCode::METHOD_NOT_ALLOWED
                && let Ok(allow) =
                    HeaderValue::from_str("GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH, TRACE")
            {
                response.headers_mut().insert(header::ALLOW, allow);
            }
            response
        }
        None => route(&shared, peer, tls, host, req, &mut entry).await,
    };
    entry.status = response.status().as_u16();
    shared.metrics.count_status(entry.status);
    response.map(|body| Logged::new(body, entry))
}

async fn route(
    shared: &Shared,
    peer: SocketAddr,
    tls: bool,
    host: Option<HeaderValue>,
    mut req: Request<hyper::body::Incoming>,
    entry: &mut Entry,
) -> Response<ProxyBody> {
    let host_str = host.as_ref().and_then(|h| h.to_str().ok());
    let Some((route, label)) = shared.table.find_labeled(host_str, req.uri().path()) else {
        entry.flags = "NR";
        return short(StatusCode::NOT_FOUND);
    };
    entry.upstream = label.clone();
    // An HTTP/2 stream the client reset right after its HEADERS is dropped by hyper as soon as
    // this future waits: waiting once here lets hyper see the RST_STREAM before anything is
    // dialled or sent upstream (rapid reset).
    if req.version() == hyper::Version::HTTP_2 {
        tokio::task::yield_now().await;
    }
    // The URI's authority picks the pool. HTTP/1.1 upstreams get the client's Host in the Host
    // header and pool by upstream; HTTP/2 sends the URI's authority as `:authority`, which must
    // agree with Host, so those URIs carry the client's host and their connectors ignore it.
    let client_authority = || {
        host_str
            .and_then(|h| h.parse::<Authority>().ok())
            .filter(|a| !a.as_str().contains('@'))
    };
    let (scheme, authority, via) = match &route.upstream {
        Upstream::Http {
            scheme: Scheme::Http,
            authority,
        } => match shared.http_pools.get(authority) {
            Some(pool) => ("http", authority.clone(), Via::Own(pool)),
            None => return short(StatusCode::BAD_GATEWAY),
        },
        Upstream::Http {
            scheme: Scheme::H2c,
            authority,
        } => match shared.h2c_clients.get(authority) {
            Some(client) => (
                "http",
                client_authority().unwrap_or_else(|| authority.clone()),
                Via::H2c(client),
            ),
            None => return short(StatusCode::BAD_GATEWAY),
        },
        Upstream::Http {
            scheme: Scheme::Https,
            authority,
        } => match shared.https_clients.get(authority) {
            Some(client) => (
                "https",
                client_authority().unwrap_or_else(|| authority.clone()),
                Via::Https(client),
            ),
            None => return short(StatusCode::BAD_GATEWAY),
        },
        Upstream::Unix(path) => match shared.unix_pools.get(path) {
            Some(pool) => ("http", Authority::from_static("localhost"), Via::Own(pool)),
            None => return short(StatusCode::BAD_GATEWAY),
        },
        Upstream::File(dir) => return files::serve(dir, &req).await,
    };
    if let Some(max) = shared.config.limits.max_body_bytes
        && let Some(length) = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
        && length > max
    {
        return short(StatusCode::PAYLOAD_TOO_LARGE);
    }

    // An HTTP/1.1 Upgrade (WebSocket): the two hop-by-hop headers that ask for it are sent on,
    // and after a 101 both connections are spliced.
    let upgrade = upgrade_protocol(&req);
    let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let wants_trailers = parts
        .headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
    strip_hop_by_hop(&mut parts.headers);
    if wants_trailers {
        parts
            .headers
            .insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if let Some(protocol) = &upgrade {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, protocol.clone());
    }
    forwarded(
        &mut parts.headers,
        peer,
        tls,
        host.as_ref(),
        shared.config.trust_forwarded,
    );
    // Host stays as the client sent it; HTTP/2 clients send :authority instead.
    if !parts.headers.contains_key(header::HOST)
        && let Some(host) = host
    {
        parts.headers.insert(header::HOST, host);
    }
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| hyper::http::uri::PathAndQuery::from_static("/"));
    parts.uri = match hyper::Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query(path)
        .build()
    {
        Ok(uri) => uri,
        Err(_) => return short(StatusCode::BAD_REQUEST),
    };
    parts.version = hyper::Version::HTTP_11;
    let body = body
        .map_frame(filter_trailers)
        .map_err(|err| -> BoxError { Box::new(ClientBody(err)) });
    let body: ProxyBody = match shared.config.limits.max_body_bytes {
        Some(max) => Limited::new(body, usize::try_from(max).unwrap_or(usize::MAX)).boxed(),
        None => body.boxed(),
    };
    let request = Request::from_parts(parts, body);

    // podkit's client bounds every wait without progress itself; hyper's is bounded here, from
    // the request's start.
    let timeout = shared.config.timeouts.upstream;
    let hyper_sent = |sent: Result<Result<_, hyper_util::client::legacy::Error>, _>| match sent {
        Ok(Ok(response)) => Sent::Answer(Answer::Hyper(response)),
        Ok(Err(err)) => Sent::Failed {
            connect: err.is_connect(),
            err: err.into(),
        },
        Err(_elapsed) => Sent::TimedOut,
    };
    let sent = match via {
        Via::Own(pool) => match pool.send(request).await {
            Ok(response) => Sent::Answer(Answer::Own(response)),
            Err(upstream::Error::Timeout(_)) => Sent::TimedOut,
            Err(err) => Sent::Failed {
                connect: err.is_connect(),
                err: err.into(),
            },
        },
        Via::H2c(client) => {
            hyper_sent(tokio::time::timeout(timeout, client.request(request)).await)
        }
        Via::Https(client) => {
            hyper_sent(tokio::time::timeout(timeout, client.request(request)).await)
        }
    };
    match sent {
        Sent::Answer(answer) => {
            let switched = answer.status() == StatusCode::SWITCHING_PROTOCOLS;
            if switched && let Some(client_upgrade) = client_upgrade {
                let (parts, upstream) = match answer {
                    Answer::Own(response) => {
                        let (mut parts, _) = response.into_parts();
                        let upgraded = parts.extensions.remove::<upstream::Upgraded>();
                        (parts, Switched::Own(upgraded))
                    }
                    Answer::Hyper(mut response) => {
                        let on = hyper::upgrade::on(&mut response);
                        (response.into_parts().0, Switched::Hyper(on))
                    }
                };
                return tunnel(shared, client_upgrade, parts, upstream);
            }
            let (mut parts, body) = match answer {
                Answer::Own(response) => {
                    let (parts, body) = response.into_parts();
                    (parts, body.map_frame(filter_trailers).boxed())
                }
                Answer::Hyper(response) => {
                    let (parts, body) = response.into_parts();
                    let body = body.map_frame(filter_trailers).map_err(Into::into);
                    (parts, body.boxed())
                }
            };
            strip_hop_by_hop(&mut parts.headers);
            // The client's connection decides; an HTTP/2 upstream's answer says HTTP/2.
            parts.version = hyper::Version::HTTP_11;
            Response::from_parts(parts, body)
        }
        Sent::Failed { err, .. } if body_too_large(&*err) => {
            entry.flags = "BL";
            short(StatusCode::PAYLOAD_TOO_LARGE)
        }
        Sent::Failed { err, .. } if client_body_failed(&*err) => {
            // Malformed chunked framing or a client gone mid-body: the client's fault.
            debug!(client = %peer, error = %crate::cli::error_chain(&*err), "client's request body failed");
            entry.flags = "DPE";
            short(StatusCode::BAD_REQUEST)
        }
        Sent::Failed { err, connect } => {
            shared
                .metrics
                .upstream_errors
                .fetch_add(1, Ordering::Relaxed);
            // As nginx's error log: why, per request (a refused connection, an untrusted
            // certificate, a reset).
            warn!(client = %peer, upstream = %entry.upstream, error = %crate::cli::error_chain(&*err), "upstream request failed");
            entry.flags = if connect { "UF" } else { "UC" };
            short(StatusCode::BAD_GATEWAY)
        }
        Sent::TimedOut => {
            shared
                .metrics
                .upstream_errors
                .fetch_add(1, Ordering::Relaxed);
            entry.flags = "UT";
            short(StatusCode::GATEWAY_TIMEOUT)
        }
    }
}

/// How sending to an upstream ended. A local of one request, matched at once: boxing the
/// answer would cost an allocation per request to save stack.
#[allow(clippy::large_enum_variant)]
enum Sent {
    /// A response head came.
    Answer(Answer),
    /// It failed; `connect` when no connection could be made (`UF`).
    Failed { err: BoxError, connect: bool },
    /// `--upstream-timeout` passed (`UT`).
    TimedOut,
}

/// An upstream's answer, from either client.
enum Answer {
    Own(Response<upstream::Body>),
    Hyper(Response<hyper::body::Incoming>),
}

impl Answer {
    fn status(&self) -> StatusCode {
        match self {
            Self::Own(response) => response.status(),
            Self::Hyper(response) => response.status(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named() {
        let mut headers = HeaderMap::new();
        for (k, v) in [
            ("connection", "close, x-private"),
            ("keep-alive", "timeout=5"),
            ("x-private", "1"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("x-kept", "1"),
        ] {
            headers.insert(k, HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1, "{headers:?}");
        assert!(headers.contains_key("x-kept"));
    }

    #[test]
    fn authorities() {
        for good in [
            "a",
            "shop.example",
            "shop.example:8080",
            "10.0.0.1:80",
            "[::1]",
            "[2001:db8::1]:443",
            "x_y.local",
            "caf%C3%A9.example",
            "a:",
        ] {
            assert!(valid_authority(good.as_bytes()), "{good}");
        }
        for bad in [
            "",
            ":80",
            "t\", for=6.6.6.6, for=\"x",
            "a b",
            "a/b",
            "a@b",
            "a\\b",
            "[::1",
            "[::1]x",
            "[zz]",
            "a:8o",
            "a:123456",
            "%zz",
            "a%4",
        ] {
            assert!(!valid_authority(bad.as_bytes()), "{bad}");
        }
    }

    /// Found by the `proxy_head` fuzz target: an authority-form target with a user name and
    /// no Host (HTTP/1.0) was routed by, and put into Forwarded as, that authority.
    #[test]
    fn a_target_authority_is_validated_like_a_host() {
        let request = Request::builder()
            .method("GET*")
            .uri("HT@*")
            .version(hyper::Version::HTTP_10)
            .body(())
            .expect("request");
        assert_eq!(refuse(&request), Some(StatusCode::BAD_REQUEST));
        let request = Request::builder()
            .uri("http://shop.example:8080/x")
            .version(hyper::Version::HTTP_10)
            .body(())
            .expect("request");
        assert_eq!(refuse(&request), None);
    }

    #[test]
    fn quoted_strings() {
        let mut out = String::new();
        quote(&mut out, b"a\"b\\c\x01\td\xff");
        assert_eq!(out, "\"a\\\"b\\\\c\td\"");
    }

    #[test]
    fn forbidden_trailers_are_dropped() {
        let mut trailers = HeaderMap::new();
        for (k, v) in [
            ("content-length", "5"),
            ("host", "evil"),
            ("proxy-foo", "1"),
            ("set-cookie", "a=b"),
            ("x-checksum", "2"),
            ("grpc-status", "0"),
        ] {
            trailers.insert(k, HeaderValue::from_static(v));
        }
        strip_forbidden_trailers(&mut trailers);
        let mut left: Vec<&str> = trailers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["grpc-status", "x-checksum"]);
    }

    #[test]
    fn forwarded_headers() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        let peer: SocketAddr = "[::1]:5000".parse().expect("addr");
        let host = HeaderValue::from_static("example.com");
        forwarded(&mut headers, peer, false, Some(&host), false);
        assert_eq!(headers["x-forwarded-for"], "::1");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers["x-forwarded-host"], "example.com");
        assert_eq!(
            headers["forwarded"],
            "for=\"[::1]\";proto=http;host=\"example.com\""
        );
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        forwarded(
            &mut headers,
            "127.0.0.1:1".parse().expect("addr"),
            true,
            None,
            true,
        );
        assert_eq!(headers["x-forwarded-for"], "6.6.6.6, 127.0.0.1");
        assert_eq!(headers["x-forwarded-proto"], "https");
    }
}
