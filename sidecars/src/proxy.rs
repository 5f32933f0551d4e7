//! The reverse proxy sidecar (`podkit proxy`): serves HTTP/1.1 and HTTP/2 (h2c with prior
//! knowledge on `--listen`, ALPN on `--listen-tls`) and
//! forwards to an app on localhost (or serves static files), with routes by host and longest
//! path prefix, streamed bodies, an upstream keep-alive pool, an access log and a bounded drain.
//!
//! Layout:
//! - `args`: flags and `PODKIT_PROXY_*` into a [`Config`];
//! - `route`: the route table;
//! - `forward`: one request, from the client to the upstream and back;
//! - `upstream`: the HTTP/1.1 client and keep-alive pool of `http://` and `unix:` upstreams;
//! - `files`: the `file:///DIR` upstream;
//! - `tls`: `--listen-tls` with certificate reload;
//! - `access`: the access log;
//! - `health`: `/healthz`, `/readyz`, `/metrics`;
//! - `cli`: the front shared by `podkit proxy` and `podkit-proxy`.
//!
//! The stale keep-alive race (the app closes an idle connection just as the proxy reuses it)
//! is avoided twice: idle upstream connections are dropped after `--upstream-idle-timeout`
//! (default `1s`, below common app defaults), and a request that found its reused connection
//! closed before any byte of an answer came is sent again once on a fresh one, when that is
//! safe (`upstream`, podkit's HTTP/1.1 client for `http://` and `unix:`; hyper-util's pool does
//! the same for `h2c://` and `https://` when the request was not written yet).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use hyper::http::uri::Authority;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls_pki_types::ServerName;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, debug_span, info, warn};

use crate::client_tls::ClientTls;

mod access;
mod args;
mod conn;
mod files;
mod forward;
mod health;
mod route;
mod tls;
mod upstream;

pub use args::{Args, ArgsError, LoadError};
pub use health::run as run_health;
pub use route::{Route, Scheme, Upstream};
pub use tls::Error as TlsError;

/// Access log format (`--access-log`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AccessLog {
    /// nginx `combined`, then the duration in seconds, the upstream and the response flags.
    Combined,
    /// One JSON object per line.
    Json,
    /// No access log.
    Off,
}

/// Timeouts of the client and upstream sides.
#[derive(Debug, Clone)]
pub struct Timeouts {
    /// Reading a request head: the first from the connection's start (after TLS), later ones
    /// from their first byte; a slow client is disconnected.
    pub header: Duration,
    /// The TLS handshake of `--listen-tls`.
    pub handshake: Duration,
    /// A client connection with no request in flight (HTTP/1.1 keep-alive, HTTP/2 without a
    /// stream) is closed after this long.
    pub keepalive: Duration,
    /// Writing a response to the client may make no progress for this long; then its
    /// connection (HTTP/1.1) or stream (HTTP/2) is closed, and the upstream connection with it.
    pub send: Duration,
    /// Connecting to an upstream (502 `UF` after it).
    pub connect: Duration,
    /// Waiting for an upstream's response head (504 `UT` after it): for `http://` and `unix:`
    /// upstreams any wait without progress, also while the request body is sent and between
    /// reads of the response body; from the request's start for the others.
    pub upstream: Duration,
    /// Keeping an idle upstream connection in the pool.
    pub upstream_idle: Duration,
}

/// Size limits of requests.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request head in bytes (431 above); at least 8 KiB.
    pub max_header_bytes: usize,
    /// Most header fields in an HTTP/1.1 request head (431 above).
    pub max_headers: usize,
    /// Most client connections open at once, over all listeners.
    pub max_connections: usize,
    /// Most requests (HTTP/2 streams) one client connection carries.
    pub max_requests_per_connection: u64,
    /// Largest request body (413 when announced, cut when streamed); `None` is unlimited.
    pub max_body_bytes: Option<u64>,
}

/// The certificate of `--listen-tls`.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: std::path::PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: std::path::PathBuf,
}

/// A validated proxy configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Plain HTTP listen addresses.
    pub listen: Vec<SocketAddr>,
    /// TLS listen addresses.
    pub listen_tls: Vec<SocketAddr>,
    /// Certificate and key, present when `listen_tls` is not empty.
    pub tls: Option<TlsFiles>,
    /// Routes, in any order; `--upstream` is the route `/`.
    pub routes: Vec<Route>,
    /// What `https://` upstreams are trusted by and shown (`--upstream-ca`,
    /// `--upstream-client-cert`); read only when such a route exists.
    pub upstream_tls: ClientTls,
    /// Access log format.
    pub access_log: AccessLog,
    /// Keep client-sent X-Forwarded-* and Forwarded, appending to them.
    pub trust_forwarded: bool,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Limits.
    pub limits: Limits,
    /// Bound on the drain after shutdown.
    pub drain_timeout: Duration,
    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    pub health_addr: Option<SocketAddr>,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Requests received.
    pub requests: AtomicU64,
    /// Responses by class: 1xx..5xx at index 0..4.
    pub responses: [AtomicU64; 5],
    /// Upstream failures (502 and 504).
    pub upstream_errors: AtomicU64,
    /// Client connections accepted.
    pub connections: AtomicU64,
    /// Client connections open now.
    pub open_connections: AtomicU64,
    /// Set once shutdown began: `/readyz` answers 503 so no new traffic is sent here.
    pub draining: AtomicBool,
}

impl Metrics {
    fn count_status(&self, status: u16) {
        if let Some(counter) = self
            .responses
            .get(usize::from(status / 100).wrapping_sub(1))
        {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        out.push_str("# TYPE podkit_proxy_requests_total counter\n");
        out.push_str(&format!(
            "podkit_proxy_requests_total {}\n",
            get(&self.requests)
        ));
        out.push_str("# TYPE podkit_proxy_responses_total counter\n");
        for (i, counter) in self.responses.iter().enumerate() {
            out.push_str(&format!(
                "podkit_proxy_responses_total{{code=\"{}xx\"}} {}\n",
                i + 1,
                get(counter)
            ));
        }
        out.push_str("# TYPE podkit_proxy_upstream_errors_total counter\n");
        out.push_str(&format!(
            "podkit_proxy_upstream_errors_total {}\n",
            get(&self.upstream_errors)
        ));
        out.push_str("# TYPE podkit_proxy_connections_total counter\n");
        out.push_str(&format!(
            "podkit_proxy_connections_total {}\n",
            get(&self.connections)
        ));
        out.push_str("# TYPE podkit_proxy_open_connections gauge\n");
        out.push_str(&format!(
            "podkit_proxy_open_connections {}\n",
            get(&self.open_connections)
        ));
        out
    }
}

/// Why the proxy could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A `--listen` address could not be bound.
    #[error("failed to listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The certificate could not be loaded.
    #[error("failed to set up TLS")]
    Tls(#[source] tls::Error),
    /// The TLS client configuration of `https://` upstreams could not be built.
    #[error("failed to set up TLS for https:// upstreams (--upstream-ca, --upstream-client-cert)")]
    UpstreamTls(#[source] crate::client_tls::Error),
    /// An `https://` upstream's host is not a name a certificate can be checked against.
    #[error("invalid https:// upstream {authority}: its host is not a DNS name or IP address")]
    ServerName {
        /// The upstream.
        authority: Authority,
    },
    /// The `--health-addr` could not be bound.
    #[error("failed to listen on --health-addr {addr}")]
    BindHealth {
        /// The address.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// Binds the configured addresses and serves until `shutdown`, then drains.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    let mut listeners = Vec::new();
    for &addr in &config.listen {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind { addr, source })?;
        // The bound address, so `--listen 127.0.0.1:0` shows its port.
        let bound = listener.local_addr().unwrap_or(addr);
        info!(addr = %bound, "listening");
        listeners.push(listener);
    }
    let mut tls_listeners = Vec::new();
    for &addr in &config.listen_tls {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind { addr, source })?;
        let bound = listener.local_addr().unwrap_or(addr);
        info!(addr = %bound, "listening with TLS");
        tls_listeners.push(listener);
    }
    let metrics = Arc::new(Metrics::default());
    let health = match config.health_addr {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| Error::BindHealth { addr, source })?;
            Some(tokio::spawn(health::run(
                listener,
                metrics.clone(),
                shutdown.clone(),
            )))
        }
        None => None,
    };
    let served = serve(listeners, tls_listeners, config, metrics, shutdown.clone()).await;
    shutdown.cancel();
    if let Some(health) = health {
        let _ = health.await;
    }
    served
}

/// Serves on already bound listeners (plain, and TLS with `config.tls`) until `shutdown`; then
/// stops accepting, lets requests in flight finish within `config.drain_timeout` (HTTP/2
/// clients get GOAWAY) and cuts what is left.
pub async fn serve(
    listeners: Vec<TcpListener>,
    tls_listeners: Vec<TcpListener>,
    config: Config,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let acceptor = match (&config.tls, tls_listeners.is_empty()) {
        (Some(files), false) => Some(tokio_rustls::TlsAcceptor::from(
            tls::server_config(&files.cert, &files.key).map_err(Error::Tls)?,
        )),
        _ => None,
    };
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(config.timeouts.connect));
    connector.set_nodelay(true);
    let pool_options = upstream::Options {
        connect_timeout: config.timeouts.connect,
        idle_timeout: config.timeouts.upstream_idle,
        max_head: config.limits.max_header_bytes.max(8192),
        response_timeout: config.timeouts.upstream,
    };
    let mut http_pools = HashMap::new();
    let mut unix_pools = HashMap::new();
    for route in &config.routes {
        match &route.upstream {
            Upstream::Http {
                scheme: Scheme::Http,
                authority,
            } => {
                http_pools
                    .entry(authority.clone())
                    .or_insert_with(|| upstream::Pool::tcp(authority, pool_options));
            }
            Upstream::Unix(path) => {
                unix_pools
                    .entry(path.clone())
                    .or_insert_with(|| upstream::Pool::unix(path, pool_options));
            }
            _ => {}
        }
    }
    let (h2c_clients, https_clients) = upstream_clients(&config, &connector)?;
    let drain_timeout = config.drain_timeout;
    // Writes the access log's buffered lines; stopped (with a last write) once drained.
    let log_stop = CancellationToken::new();
    let log_flusher = tokio::spawn(access::flusher(log_stop.clone()));
    let trimmer = tokio::spawn(release_memory_when_quiet(metrics.clone(), log_stop.clone()));
    let max_connections = config
        .limits
        .max_connections
        .min(tokio::sync::Semaphore::MAX_PERMITS);
    // Cancelled when the drain timeout is over: connections still open are cut.
    let cut = CancellationToken::new();
    let tunnels = TaskTracker::new();
    let shared = Arc::new(forward::Shared {
        table: route::Table::new(config.routes.clone()),
        config,
        http_pools,
        unix_pools,
        h2c_clients,
        https_clients,
        metrics: metrics.clone(),
        connection_slots: Arc::new(tokio::sync::Semaphore::new(max_connections)),
        tunnels: tunnels.clone(),
        cut: cut.clone(),
    });
    let connections = TaskTracker::new();
    let acceptors = TaskTracker::new();
    let tls_listeners = tls_listeners
        .into_iter()
        .filter_map(|l| Some((l, Some(acceptor.clone()?))));
    let listeners = listeners
        .into_iter()
        .map(|l| (l, None))
        .chain(tls_listeners)
        .collect();
    acceptors.spawn(accept(
        listeners,
        shared.clone(),
        connections.clone(),
        shutdown.clone(),
        cut.clone(),
    ));
    acceptors.close();
    shutdown.cancelled().await;
    metrics.draining.store(true, Ordering::Relaxed);
    acceptors.wait().await;
    connections.close();
    info!(open = connections.len(), tunnels = tunnels.len(), timeout = ?drain_timeout, "draining connections");
    let drained = async {
        connections.wait().await;
        // No connection is left to upgrade: the set of tunnels is final.
        tunnels.close();
        tunnels.wait().await;
    };
    if tokio::time::timeout(drain_timeout, drained).await.is_err() {
        warn!(
            open = connections.len(),
            tunnels = tunnels.len(),
            "connections cut after the drain timeout"
        );
        cut.cancel();
        connections.wait().await;
        tunnels.close();
        tunnels.wait().await;
    }
    log_stop.cancel();
    let _ = log_flusher.await;
    let _ = trimmer.await;
    Ok(())
}

/// How long the proxy must see no request and no connection open or close before it gives the
/// memory of a burst back.
const QUIET: Duration = Duration::from_secs(1);

/// Gives the system back the memory a burst left free (glibc keeps it in each worker thread's
/// arena otherwise: after 100,000 HTTP/2 streams opened and reset, the resident size stayed at
/// its peak, 22-31 MiB from 14), once the proxy has been quiet for [`QUIET`] after some
/// activity: never while requests flow, when trimming would only make the next ones map the
/// pages again, and once per quiet spell.
async fn release_memory_when_quiet(metrics: Arc<Metrics>, stop: CancellationToken) {
    let activity = || {
        (
            metrics.requests.load(Ordering::Relaxed),
            metrics.connections.load(Ordering::Relaxed),
            metrics.open_connections.load(Ordering::Relaxed),
        )
    };
    let mut released_at = activity();
    let mut last = released_at;
    let mut tick = tokio::time::interval(QUIET);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let now = activity();
        if now == last && now != released_at {
            // A blocking call: it walks every arena (well under a millisecond for tens of MiB).
            let released = tokio::task::spawn_blocking(netns::release_free_memory)
                .await
                .unwrap_or(false);
            debug!(released, "gave free memory back after a burst");
            released_at = now;
        }
        last = now;
    }
}

/// The pools of the `h2c://` and `https://` routes, one per upstream, each dialing its upstream
/// through `tcp`. The TLS configuration is read (CA file or system roots) only when an
/// `https://` route exists.
#[allow(clippy::type_complexity)]
fn upstream_clients(
    config: &Config,
    tcp: &HttpConnector,
) -> Result<
    (
        HashMap<Authority, Client<forward::TcpTo, forward::ProxyBody>>,
        HashMap<Authority, Client<HttpsConnector<forward::TcpTo>, forward::ProxyBody>>,
    ),
    Error,
> {
    let builder = |http2_only: bool| {
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_idle_timeout(config.timeouts.upstream_idle)
            .pool_timer(TokioTimer::new())
            .retry_canceled_requests(true)
            .http2_only(http2_only)
            .timer(TokioTimer::new());
        builder
    };
    let to = |authority: &Authority| forward::TcpTo {
        target: hyper::Uri::from_maybe_shared(format!("http://{authority}/"))
            .unwrap_or_else(|_| hyper::Uri::from_static("http://invalid./")),
        http: tcp.clone(),
    };
    let mut h2c = HashMap::new();
    let mut https = HashMap::new();
    let mut tls = None;
    for route in &config.routes {
        let Upstream::Http { scheme, authority } = &route.upstream else {
            continue;
        };
        match scheme {
            Scheme::Http => {}
            Scheme::H2c => {
                h2c.entry(authority.clone())
                    .or_insert_with(|| builder(true).build(to(authority)));
            }
            Scheme::Https => {
                if https.contains_key(authority) {
                    continue;
                }
                let config = match &tls {
                    Some(config) => config,
                    None => tls.insert(
                        config
                            .upstream_tls
                            .config(&[])
                            .map_err(Error::UpstreamTls)?,
                    ),
                };
                let host = authority.host();
                let host = host
                    .strip_prefix('[')
                    .and_then(|h| h.strip_suffix(']'))
                    .unwrap_or(host);
                let name =
                    ServerName::try_from(host.to_owned()).map_err(|_| Error::ServerName {
                        authority: authority.clone(),
                    })?;
                let connector = ClientTls::connector_to(config.clone(), to(authority), name, true);
                https.insert(authority.clone(), builder(false).build(connector));
            }
        }
    }
    Ok((h2c, https))
}

/// Accepts on every listener (one loop, so `--max-connections` counts all of them) until
/// `shutdown`; dropping the listeners then refuses new clients.
async fn accept(
    listeners: Vec<(TcpListener, Option<tokio_rustls::TlsAcceptor>)>,
    shared: Arc<forward::Shared>,
    connections: TaskTracker,
    shutdown: CancellationToken,
    cut: CancellationToken,
) {
    if listeners.is_empty() {
        return;
    }
    loop {
        // At `--max-connections`, stop accepting: new clients wait in the listen backlog.
        let permit = tokio::select! {
            permit = shared.connection_slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                // The semaphore is never closed.
                Err(_) => return,
            },
            _ = shutdown.cancelled() => return,
        };
        let any = futures::future::select_all(listeners.iter().map(|(l, _)| Box::pin(l.accept())));
        let (stream, peer, tls) = tokio::select! {
            (accepted, index, _) = any => match accepted {
                Ok((stream, peer)) => (stream, peer, listeners[index].1.clone()),
                Err(err) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(?err, "failed to accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let _ = stream.set_nodelay(true);
        shared.metrics.connections.fetch_add(1, Ordering::Relaxed);
        let (shared, shutdown, cut) = (shared.clone(), shutdown.clone(), cut.clone());
        connections.spawn(
            async move {
                let _permit = permit;
                shared
                    .metrics
                    .open_connections
                    .fetch_add(1, Ordering::Relaxed);
                let activity =
                    conn::Activity::new(shared.config.limits.max_requests_per_connection);
                let stream = conn::Watched::new(stream, activity.clone());
                match tls {
                    None => {
                        serve_connection(stream, peer, false, &activity, &shared, &shutdown, &cut)
                            .await
                    }
                    Some(tls) => {
                        // The handshake has its own deadline, and ends at shutdown.
                        let timeout = shared.config.timeouts.handshake;
                        let handshake = tokio::select! {
                            r = tokio::time::timeout(timeout, tls.accept(stream)) => r,
                            _ = shutdown.cancelled() => Ok(Err(std::io::ErrorKind::Interrupted.into())),
                        };
                        match handshake {
                            Ok(Ok(stream)) => {
                                activity.opened();
                                serve_connection(
                                    stream, peer, true, &activity, &shared, &shutdown, &cut,
                                )
                                .await
                            }
                            Ok(Err(err)) => debug!(?err, "TLS handshake failed"),
                            Err(_) => debug!(client = %peer, "TLS handshake timed out"),
                        }
                    }
                }
                shared
                    .metrics
                    .open_connections
                    .fetch_sub(1, Ordering::Relaxed);
            }
            // A debug span: an enabled span costs a registry lookup on every poll, which shows
            // in a profile at tens of thousands of requests a second.
            .instrument(debug_span!("conn", %peer)),
        );
    }
}

/// Most HTTP/2 streams open at once on one connection (nginx's `http2_max_concurrent_streams`
/// is 128; hyper's default 200).
const H2_MAX_CONCURRENT_STREAMS: u32 = 128;
/// Streams the client may reset before the proxy took them, at once, before h2 answers GOAWAY
/// ENHANCE_YOUR_CALM (hyper's default, made explicit).
const H2_MAX_PENDING_ACCEPT_RESETS: usize = 20;
/// Streams h2 itself may reset for the client's protocol errors before GOAWAY
/// ENHANCE_YOUR_CALM (hyper's default, made explicit).
const H2_MAX_LOCAL_ERROR_RESETS: usize = 1024;

/// How long a connection told GOAWAY for resetting too many streams may take to close.
const ABUSE_GRACE: Duration = Duration::from_secs(1);

/// Serves one client connection until it ends, a deadline of [`conn`] passes (then it is
/// closed, HTTP/2 after GOAWAY), or the drain cuts it.
async fn serve_connection<I>(
    stream: I,
    peer: SocketAddr,
    tls: bool,
    activity: &Arc<conn::Activity>,
    shared: &Arc<forward::Shared>,
    shutdown: &CancellationToken,
    cut: &CancellationToken,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = {
        let (shared, activity) = (shared.clone(), activity.clone());
        hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let shared = shared.clone();
            let guard = activity.begin(req.version() == hyper::Version::HTTP_2);
            let calm = activity.calm_down();
            async move {
                // Set when this runs as an HTTP/2 stream's task.
                let progress = conn::stream_progress();
                let response = forward::handle(shared, peer, tls, calm, req).await;
                Ok::<_, std::convert::Infallible>(
                    response.map(|body| conn::Tracked::new(body, guard, progress)),
                )
            }
        })
    };
    let timeouts = &shared.config.timeouts;
    let deadlines = conn::Deadlines {
        header: timeouts.header,
        keepalive: timeouts.keepalive,
        send: timeouts.send,
        max_requests: shared.config.limits.max_requests_per_connection,
    };
    let limits = &shared.config.limits;
    let mut builder = hyper_util::server::conn::auto::Builder::new(conn::StreamExecutor {
        send: timeouts.send,
        peer,
    });
    // No header timer of hyper's: it also runs while a keep-alive connection is idle; the
    // watchdog below keeps both deadlines apart.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_headers(limits.max_headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
        .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESETS)
        .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESETS);
    let stream = conn::Calm::new(stream, activity.clone());
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    let far = || tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
    let mut timer = std::pin::pin!(tokio::time::sleep_until(far()));
    // Set once the connection is told to end (drain, GOAWAY): it then has until this instant.
    let mut closing: Option<tokio::time::Instant> = None;
    let mut draining = false;
    let mut told_max = false;
    loop {
        let now = tokio::time::Instant::now();
        let next = match activity.check(&deadlines, now) {
            Ok(next) => next,
            // Already told to go: the closing deadline bounds it.
            Err(expired) if closing.is_some() && expired != conn::Expired::Send => None,
            Err(expired) => {
                match expired {
                    conn::Expired::Send => warn!(
                        client = %peer,
                        timeout = ?deadlines.send,
                        "client read nothing for the send timeout: connection closed, its upstream connections with it"
                    ),
                    conn::Expired::FirstHead | conn::Expired::Head => {
                        debug!(client = %peer, ?expired, "request head not complete in time: connection closed");
                    }
                    conn::Expired::Idle => debug!(client = %peer, "idle connection closed"),
                }
                // An idle HTTP/2 connection is told GOAWAY first; anything else just closes.
                if expired != conn::Expired::Idle || !activity.is_h2() {
                    return;
                }
                conn.as_mut().graceful_shutdown();
                closing = Some(now + deadlines.header);
                None
            }
        };
        if activity.calm_down() && closing.is_none() {
            warn!(client = %peer, "client reset too many HTTP/2 streams before their answer: GOAWAY ENHANCE_YOUR_CALM, connection closed");
            conn.as_mut().graceful_shutdown();
            // An abuser need not wait for the streams it may still have open.
            closing = Some(now + ABUSE_GRACE);
        }
        if !told_max && activity.requests() >= deadlines.max_requests {
            told_max = true;
            debug!(client = %peer, "requests per connection reached: closing after the answers");
            conn.as_mut().graceful_shutdown();
        }
        let wake = match (next, closing) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b).unwrap_or_else(far),
        };
        if timer.deadline() != wake {
            timer.as_mut().reset(wake);
        }
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(err) = result {
                    debug!(?err, "connection ended with an error");
                }
                return;
            }
            () = activity.changed() => {}
            () = &mut timer => {
                if closing.is_some_and(|at| tokio::time::Instant::now() >= at) {
                    debug!(client = %peer, "connection cut: it did not close after GOAWAY");
                    return;
                }
            }
            _ = shutdown.cancelled(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = cut.cancelled() => {
                debug!("connection cut at the drain timeout");
                return;
            }
        }
    }
}

/// Thin entry points for the fuzz targets in `tests/fuzz` (not an API).
#[doc(hidden)]
pub mod fuzz {
    use std::net::SocketAddr;

    pub use hyper::Version;
    use hyper::header::{HeaderMap, HeaderValue};

    pub use super::upstream::FuzzAnswer;

    /// Reads one answer (to a HEAD when `head_only`) from an upstream that sent `bytes` and
    /// closed, through podkit's HTTP/1.1 client, on a runtime of the calling thread.
    pub fn upstream_answer(bytes: &[u8], head_only: bool) -> std::io::Result<FuzzAnswer> {
        thread_local! {
            static RUNTIME: std::io::Result<tokio::runtime::Runtime> =
                tokio::runtime::Builder::new_current_thread().enable_all().build();
        }
        RUNTIME.with(|runtime| match runtime {
            Ok(runtime) => runtime.block_on(super::upstream::fuzz_answer(bytes, head_only)),
            Err(err) => Err(std::io::Error::new(err.kind(), err.to_string())),
        })
    }

    /// What the proxy makes of a request head (bytes as a client sends them).
    #[derive(Debug)]
    pub struct Head {
        /// The status it is refused with, if it is.
        pub refused: Option<u16>,
        /// The Host (or absolute-form authority) it would route by.
        pub host: Option<HeaderValue>,
        /// The headers it would forward (hop-by-hop out, forwarded in).
        pub forwarded: HeaderMap,
    }

    /// Parses `bytes` as hyper's server does (httparse), then runs the proxy's checks and its
    /// header rewriting (`trust`: `--trust-forwarded`) for a client at `peer`.
    pub fn request_head(bytes: &[u8], peer: SocketAddr, trust: bool) -> Option<Head> {
        let mut fields = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Request::new(&mut fields);
        let httparse::Status::Complete(_) = parsed.parse(bytes).ok()? else {
            return None;
        };
        let mut request = hyper::Request::builder()
            .method(parsed.method?)
            .uri(parsed.path?)
            .version(match parsed.version? {
                0 => Version::HTTP_10,
                _ => Version::HTTP_11,
            })
            .body(())
            .ok()?;
        for field in parsed.headers.iter() {
            let name = hyper::header::HeaderName::from_bytes(field.name.as_bytes()).ok()?;
            let value = HeaderValue::from_bytes(field.value).ok()?;
            request.headers_mut().append(name, value);
        }
        let refused = super::forward::refuse(&request).map(|s| s.as_u16());
        let host = request
            .headers()
            .get(hyper::header::HOST)
            .cloned()
            .or_else(|| {
                let authority = request.uri().authority()?;
                HeaderValue::from_str(authority.as_str()).ok()
            });
        let mut forwarded = request.headers().clone();
        super::forward::strip_hop_by_hop(&mut forwarded);
        super::forward::forwarded(&mut forwarded, peer, false, host.as_ref(), trust);
        Some(Head {
            refused,
            host,
            forwarded,
        })
    }

    /// Whether a Host value is accepted.
    pub fn valid_authority(value: &[u8]) -> bool {
        super::forward::valid_authority(value)
    }

    /// `value` as a quoted-string.
    pub fn quote(value: &[u8]) -> String {
        let mut out = String::new();
        super::forward::quote(&mut out, value);
        out
    }

    /// Trailers as passed on.
    pub fn strip_forbidden_trailers(trailers: &mut HeaderMap) {
        super::forward::strip_forbidden_trailers(trailers);
    }

    /// A chunk-size line: its length with the CRLF and the size, `None` while incomplete,
    /// `Err` naming what is wrong when invalid.
    pub fn chunk_size(buf: &[u8]) -> Result<Option<(usize, u64)>, String> {
        super::upstream::chunk_size(buf).map_err(|err| err.to_string())
    }
}

/// Runs the proxy the flags describe until SIGTERM or SIGINT: `podkit proxy` and
/// `podkit-proxy`. The exit code: 0 after a clean shutdown, 2 for bad flags, 1 otherwise. The
/// caller installs tracing.
pub fn main(args: Args) -> std::process::ExitCode {
    crate::cli::raise_open_file_limit();
    let workers = match args.workers {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    crate::cli::main_on("podkit proxy", workers, Config::try_from(args), run)
}
