//! [`Forwarder`]: binds the host sockets of a [`Config`], then forwards until shutdown or until
//! the target is gone.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use netns::Namespace;
use socket2::{Domain, SockAddr, Socket, Type};
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::dial::Dialer;
use crate::splice::Pipes;
use crate::throttle::Throttle;
use crate::{Config, DialError, Error, ListenAddress, Protocol, Result};

/// The listen backlog of host TCP sockets: bursts of thousands of connections must not overflow
/// it (the kernel caps it at `net.core.somaxconn`).
const BACKLOG: i32 = 4096;

/// One host socket a [`Forwarder`] listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listening {
    /// The host address, with the port chosen when the mapping asked for 0.
    pub local: SocketAddr,
    /// The port inside the target.
    pub remote: u16,
    /// TCP or UDP.
    pub protocol: Protocol,
}

/// kubectl's line: `Forwarding from 127.0.0.1:8080 -> 80`.
impl fmt::Display for Listening {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Forwarding from {} -> {}", self.local, self.remote)?;
        if self.protocol == Protocol::Udp {
            f.write_str("/udp")?;
        }
        Ok(())
    }
}

/// Something a user of the CLI wants to see as it happens; see [`Forwarder::on_event`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Event<'a> {
    /// A TCP connection was accepted on `local`; kubectl prints `Handling connection for PORT`.
    Connection {
        local: SocketAddr,
        peer: SocketAddr,
        remote: u16,
    },
    /// Dialing into the target failed: that connection was closed, forwarding goes on.
    DialFailed {
        local: SocketAddr,
        remote: u16,
        error: &'a DialError,
    },
    /// A new UDP flow started for a client.
    UdpFlow {
        local: SocketAddr,
        peer: SocketAddr,
        remote: u16,
    },
}

/// Why [`Forwarder::run`] returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stopped {
    /// The shutdown token was cancelled.
    Shutdown,
    /// The target's network namespace was deleted (or its process exited): nothing is left to
    /// forward to.
    TargetGone {
        /// The target, as in messages: `pod web`, `netns /run/netns/x`, `pid 42`.
        target: String,
    },
}

/// Counters of a running forward, for tests, health endpoints and metrics.
#[derive(Debug, Default)]
pub struct Stats {
    connections_open: AtomicUsize,
    connections_total: AtomicU64,
    dial_failures: AtomicU64,
    udp_flows_open: AtomicUsize,
    udp_flows_evicted: AtomicU64,
}

impl Stats {
    /// TCP connections being handled now (dialing or relaying).
    pub fn connections_open(&self) -> usize {
        self.connections_open.load(Ordering::Relaxed)
    }

    /// TCP connections accepted so far.
    pub fn connections_total(&self) -> u64 {
        self.connections_total.load(Ordering::Relaxed)
    }

    /// Dials into the target that failed so far.
    pub fn dial_failures(&self) -> u64 {
        self.dial_failures.load(Ordering::Relaxed)
    }

    /// UDP flows open now.
    pub fn udp_flows_open(&self) -> usize {
        self.udp_flows_open.load(Ordering::Relaxed)
    }

    /// UDP flows ended early to make room for a new client ([`Config::udp_max_flows`]).
    pub fn udp_flows_evicted(&self) -> u64 {
        self.udp_flows_evicted.load(Ordering::Relaxed)
    }

    pub(crate) fn udp_flow_evicted(&self) {
        self.udp_flows_evicted.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn connection_opened(self: &Arc<Self>) -> Gauge {
        self.connections_total.fetch_add(1, Ordering::Relaxed);
        Gauge::new(Arc::clone(self), |s| &s.connections_open)
    }

    pub(crate) fn dial_failed(&self) {
        self.dial_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn udp_flow_opened(self: &Arc<Self>) -> Gauge {
        Gauge::new(Arc::clone(self), |s| &s.udp_flows_open)
    }
}

/// One unit of a gauge of [`Stats`], given back when dropped, however the task ends.
pub(crate) struct Gauge {
    stats: Arc<Stats>,
    field: fn(&Stats) -> &AtomicUsize,
}

impl Gauge {
    fn new(stats: Arc<Stats>, field: fn(&Stats) -> &AtomicUsize) -> Self {
        field(&stats).fetch_add(1, Ordering::Relaxed);
        Gauge { stats, field }
    }
}

impl Drop for Gauge {
    fn drop(&mut self) {
        (self.field)(&self.stats).fetch_sub(1, Ordering::Relaxed);
    }
}

type EventHook = Arc<dyn Fn(&Event<'_>) + Send + Sync>;

/// What every connection and flow task of one forward shares.
pub(crate) struct Shared {
    pub(crate) ns: Namespace,
    /// Connects inside the target.
    pub(crate) dialer: Dialer,
    /// Idle relay pipes, reused across connections.
    pub(crate) pipes: Pipes,
    pub(crate) stats: Arc<Stats>,
    on_event: Option<EventHook>,
    pub(crate) udp_idle_timeout: std::time::Duration,
    /// [`Config::udp_max_flows`].
    pub(crate) udp_max_flows: usize,
    /// [`Config::proxy_protocol`].
    pub(crate) proxy_protocol: Option<crate::ProxyProtocol>,
    /// Failed dials are logged a few per window (a target that refuses every connection must
    /// not cost a log line per client).
    pub(crate) dial_warnings: Throttle,
    /// Cancelled to cut every connection and flow at once (drain timeout, target gone).
    pub(crate) cut: CancellationToken,
    /// Every task, so that shutdown can wait for them.
    pub(crate) tracker: TaskTracker,
}

impl Shared {
    pub(crate) fn emit(&self, event: Event<'_>) {
        if let Some(hook) = &self.on_event {
            hook(&event);
        }
    }
}

/// A forward with its host sockets bound: ports in use and bad addresses are reported by
/// [`Forwarder::bind`], before anything runs.
pub struct Forwarder {
    config: Config,
    ns: Namespace,
    /// Connects inside the target; its threads are ready before anything listens.
    dialer: Dialer,
    tcp: Vec<(TcpListener, Listening)>,
    udp: Vec<(UdpSocket, Listening)>,
    /// Every host socket in binding order (config order), for the "Forwarding from" lines.
    listening: Vec<Listening>,
    stats: Arc<Stats>,
    on_event: Option<EventHook>,
}

impl fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Forwarder")
            .field("target", &self.config.target)
            .field("listeners", &self.listeners())
            .finish_non_exhaustive()
    }
}

impl Forwarder {
    /// Opens the target's network namespace and binds every mapping on every address. Needs a
    /// tokio runtime.
    ///
    /// A mapping with local port 0 gets a free port, the same one on each address. `localhost`
    /// works if either 127.0.0.1 or ::1 binds; any other address must bind. A port taken by
    /// someone else is [`Error::PortInUse`], naming it.
    pub async fn bind(config: Config) -> Result<Forwarder> {
        if config.ports.is_empty() {
            return Err(Error::NoPorts);
        }
        if config.addresses.is_empty() {
            return Err(Error::NoAddresses);
        }
        let ns = config.target.open()?;
        let v6 = ns.dialer().map_err(|source| Error::Dialer {
            target: config.target.to_string(),
            source: Box::new(source),
        })?;
        let dialer = Dialer::new(&ns, v6).map_err(|source| Error::SocketThread {
            target: config.target.to_string(),
            source,
        })?;
        let mut tcp = Vec::new();
        let mut udp = Vec::new();
        let mut listening_all = Vec::new();
        for mapping in &config.ports {
            let mut port = mapping.local;
            for address in &config.addresses {
                let mut first_error = None;
                let mut bound_any = false;
                for ip in address.ips() {
                    let addr = SocketAddr::new(ip, port);
                    match bind(addr, mapping.protocol) {
                        Ok(bound) => {
                            let local = bound.local_addr();
                            port = local.port();
                            bound_any = true;
                            let listening = Listening {
                                local,
                                remote: mapping.remote,
                                protocol: mapping.protocol,
                            };
                            listening_all.push(listening);
                            match bound {
                                Bound::Tcp(l) => tcp.push((l, listening)),
                                Bound::Udp(s) => udp.push((s, listening)),
                            }
                        }
                        Err(err) if *address == ListenAddress::Localhost => {
                            warn!(%addr, %err, "failed to listen on one loopback address");
                            first_error.get_or_insert(err);
                        }
                        Err(err) => return Err(err),
                    }
                }
                if let (false, Some(err)) = (bound_any, first_error) {
                    return Err(err);
                }
            }
        }
        Ok(Forwarder {
            config,
            ns,
            dialer,
            tcp,
            udp,
            listening: listening_all,
            stats: Arc::default(),
            on_event: None,
        })
    }

    /// The host sockets, in the order of the config's mappings and addresses.
    pub fn listeners(&self) -> Vec<Listening> {
        self.listening.clone()
    }

    /// The forward's counters; they stay readable after [`Forwarder::run`] returns.
    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.stats)
    }

    /// Calls `hook` for each [`Event`], on the task handling it: keep it short.
    pub fn on_event(mut self, hook: impl Fn(&Event<'_>) + Send + Sync + 'static) -> Self {
        self.on_event = Some(Arc::new(hook));
        self
    }

    /// Forwards until `shutdown` is cancelled or the target is gone.
    ///
    /// On shutdown the host sockets close at once and open connections get
    /// [`Config::drain_timeout`] to finish before they are cut; when the target is gone they
    /// are cut at once (there is nothing left to talk to).
    pub async fn run(self, shutdown: CancellationToken) -> Result<Stopped> {
        let Forwarder {
            config,
            ns,
            dialer,
            tcp,
            udp,
            listening: _,
            stats,
            on_event,
        } = self;
        let tracker = TaskTracker::new();
        let shared = Arc::new(Shared {
            dialer,
            pipes: Pipes::new(config.pipe_size),
            ns: ns.clone(),
            stats: Arc::clone(&stats),
            on_event,
            udp_idle_timeout: config.udp_idle_timeout,
            udp_max_flows: config.udp_max_flows.max(1),
            proxy_protocol: config.proxy_protocol,
            dial_warnings: Throttle::default(),
            cut: CancellationToken::new(),
            tracker: tracker.clone(),
        });
        let accepting = CancellationToken::new();
        for (listener, listening) in tcp {
            let task = crate::tcp::accept_loop(
                listener,
                listening,
                Arc::clone(&shared),
                accepting.clone(),
            );
            tracker.spawn(task);
        }
        for (socket, listening) in udp {
            let task = crate::udp::serve(socket, listening, Arc::clone(&shared), accepting.clone());
            tracker.spawn(task);
        }

        let stopped = tokio::select! {
            () = shutdown.cancelled() => Stopped::Shutdown,
            () = crate::watch::gone(&ns, config.watch_interval) => Stopped::TargetGone {
                target: config.target.to_string(),
            },
        };
        accepting.cancel();
        tracker.close();
        match &stopped {
            Stopped::Shutdown => {
                info!(
                    open = stats.connections_open(),
                    "shutting down: draining connections"
                );
                if tokio::time::timeout(config.drain_timeout, tracker.wait())
                    .await
                    .is_err()
                {
                    warn!(
                        cut = stats.connections_open(),
                        timeout = ?config.drain_timeout,
                        "drain timed out: cutting the connections still open"
                    );
                }
            }
            Stopped::TargetGone { target } => {
                warn!(%target, open = stats.connections_open(), "the target's network namespace is gone: stopping");
            }
        }
        shared.cut.cancel();
        drop(shared);
        tracker.wait().await;
        Ok(stopped)
    }
}

/// [`Forwarder::bind`] then [`Forwarder::run`]: the whole forward in one call.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<Stopped> {
    Forwarder::bind(config).await?.run(shutdown).await
}

enum Bound {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

impl Bound {
    fn local_addr(&self) -> SocketAddr {
        let addr = match self {
            Bound::Tcp(l) => l.local_addr(),
            Bound::Udp(s) => s.local_addr(),
        };
        // getsockname(2) on a bound socket fails only on a bad fd, which an owned socket is not.
        addr.unwrap_or_else(|err| unreachable!("getsockname on a bound socket: {err}"))
    }
}

/// A host socket on `addr`: v6 sockets are v6-only, so `0.0.0.0` and `::` can both be asked for.
fn bind(addr: SocketAddr, protocol: Protocol) -> Result<Bound> {
    let fail = |source: io::Error| {
        if source.kind() == io::ErrorKind::AddrInUse {
            Error::PortInUse { addr, protocol }
        } else {
            Error::Listen {
                addr,
                protocol,
                source,
            }
        }
    };
    let domain = Domain::for_address(addr);
    let socket = match protocol {
        Protocol::Tcp => Socket::new(domain, Type::STREAM, None),
        Protocol::Udp => Socket::new(domain, Type::DGRAM, None),
    }
    .map_err(fail)?;
    if addr.ip().is_ipv6() {
        socket.set_only_v6(true).map_err(fail)?;
    }
    socket.set_nonblocking(true).map_err(fail)?;
    match protocol {
        Protocol::Tcp => {
            // As every server does: a restarted forward can take its port back at once, even
            // with old connections in TIME_WAIT.
            socket.set_reuse_address(true).map_err(fail)?;
            // Accepted sockets inherit it: a relay must not hold back small writes (the peers
            // chose their own batching), and setting it here spares a syscall per connection.
            socket.set_tcp_nodelay(true).map_err(fail)?;
            socket.bind(&SockAddr::from(addr)).map_err(fail)?;
            socket.listen(BACKLOG).map_err(fail)?;
            TcpListener::from_std(socket.into())
                .map(Bound::Tcp)
                .map_err(fail)
        }
        Protocol::Udp => {
            socket.bind(&SockAddr::from(addr)).map_err(fail)?;
            UdpSocket::from_std(socket.into())
                .map(Bound::Udp)
                .map_err(fail)
        }
    }
}

/// An error with its causes, as one line: log lines should say why, all the way down.
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
