//! UDP: one flow per client address. A flow is a socket inside the target connected to the
//! remote port; datagrams from the client go out through it, its replies come back from the
//! host socket to that client. A flow with no datagram either way for the idle timeout ends.
//!
//! A flow sends to 127.0.0.1 first. When the target answers "port unreachable", it moves to
//! ::1 (and back on the next one), with a new socket: a socket once connected to an IPv4
//! address cannot be connected to an IPv6 one. A server on either loopback is so found from the
//! client's next datagram on (the one that met the closed port is lost, as UDP allows).
//!
//! Each flow holds a socket (a file descriptor): a mapping keeps at most `udp_max_flows` on one
//! host address, and a new client when it is full ends the flow idle the longest (as conntrack
//! drops its oldest entries), so a spray of source addresses cannot take every descriptor and
//! stall the TCP accepts. Failures per datagram are logged a few per window.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use netns::Namespace;
use socket2::{Domain, SockAddr, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{Instrument, debug, info_span, warn};

use crate::forwarder::{Gauge, Shared};
use crate::throttle::Throttle;
use crate::{Event, Listening};

/// The largest UDP payload: every datagram fits.
const MAX_DATAGRAM: usize = 65_536;

type Flows = Arc<Mutex<HashMap<SocketAddr, Arc<Flow>>>>;

/// One client's flow.
struct Flow {
    /// The socket inside the target; replaced when the flow moves to the other loopback.
    socket: Mutex<Arc<UdpSocket>>,
    /// Nanoseconds since `born` of the last datagram either way: for the idle timeout, and to
    /// find the least recently active flow (nanoseconds: flows touched one after the other
    /// are told apart).
    last_active: AtomicU64,
    born: Instant,
    /// Whether the flow now sends to ::1 rather than 127.0.0.1.
    on_v6: AtomicBool,
    remote: u16,
    /// Cancelled when the flow is ended to make room for a new client.
    evicted: CancellationToken,
    /// Cancelled once the flow is dropped, its socket closed: an eviction waits for it, so the
    /// descriptor it frees is free before the new flow's socket is made.
    closed: CancellationToken,
    /// Cancels `closed`. Declared after `socket`: fields drop in order, the socket first.
    _closing: DropGuard,
}

impl Flow {
    /// A flow to 127.0.0.1:`remote` inside `ns`.
    async fn open(ns: &Namespace, remote: u16) -> io::Result<Flow> {
        let socket = target_socket(ns, loopback(false, remote)).await?;
        let closed = CancellationToken::new();
        Ok(Flow {
            socket: Mutex::new(Arc::new(socket)),
            last_active: AtomicU64::new(0),
            born: Instant::now(),
            on_v6: AtomicBool::new(false),
            remote,
            evicted: CancellationToken::new(),
            _closing: closed.clone().drop_guard(),
            closed,
        })
    }

    fn socket(&self) -> Arc<UdpSocket> {
        Arc::clone(&lock(&self.socket))
    }

    /// When the last datagram either way passed.
    fn last_active_at(&self) -> Instant {
        self.born + Duration::from_nanos(self.last_active.load(Ordering::Relaxed))
    }

    fn touch(&self) {
        // u64 nanoseconds: 584 years.
        let now = u64::try_from(self.born.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_active.store(now, Ordering::Relaxed);
    }

    fn idle_deadline(&self, timeout: Duration) -> Instant {
        self.last_active_at() + timeout
    }

    /// The flow socket reported `err`: a "port unreachable" moves the flow to the other
    /// loopback.
    async fn failed(&self, err: io::Error, ns: &Namespace) {
        if err.kind() != io::ErrorKind::ConnectionRefused {
            debug!(%err, "the flow socket reported an error");
            return;
        }
        let v6 = !self.on_v6.fetch_xor(true, Ordering::Relaxed);
        let next = loopback(v6, self.remote);
        debug!(%next, "port unreachable on that loopback in the target: switching");
        match target_socket(ns, next).await {
            Ok(socket) => *lock(&self.socket) = Arc::new(socket),
            Err(err) => debug!(%err, "failed to switch loopbacks"),
        }
    }
}

/// Serves the host UDP socket `socket` until `stop`, then ends every flow.
pub(crate) async fn serve(
    socket: UdpSocket,
    listening: Listening,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let socket = Arc::new(socket);
    let flows: Flows = Arc::default();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let warnings = Throttle::default();
    loop {
        let received = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            received = socket.recv_from(&mut buf) => received,
        };
        let (len, peer) = match received {
            Ok(received) => received,
            Err(err) => {
                debug!(local = %listening.local, %err, "failed to receive a datagram");
                continue;
            }
        };
        let existing = lock(&flows).get(&peer).cloned();
        let flow = match existing {
            Some(flow) => flow,
            None => match open_flow(&flows, &shared, listening.remote).await {
                Ok(flow) => {
                    let flow = Arc::new(flow);
                    lock(&flows).insert(peer, Arc::clone(&flow));
                    shared.emit(Event::UdpFlow {
                        local: listening.local,
                        peer,
                        remote: listening.remote,
                    });
                    let span = info_span!(
                        "udp_flow",
                        local = %listening.local,
                        %peer,
                        remote = listening.remote
                    );
                    let task = run_flow(
                        Arc::clone(&flow),
                        peer,
                        Arc::clone(&socket),
                        Arc::clone(&flows),
                        Arc::clone(&shared),
                        stop.clone(),
                        shared.stats.udp_flow_opened(),
                    );
                    shared.tracker.spawn(task.instrument(span));
                    flow
                }
                Err(err) => {
                    if let Some(suppressed) = warnings.allow() {
                        warn!(%peer, %err, suppressed, "failed to open a UDP flow into the target: datagram dropped");
                    } else {
                        debug!(%peer, %err, "failed to open a UDP flow into the target: datagram dropped");
                    }
                    continue;
                }
            },
        };
        flow.touch();
        if let Err(err) = flow.socket().send(&buf[..len]).await {
            // A "port unreachable" for an earlier datagram can surface here: switch, and
            // send this one again, once.
            let refused = err.kind() == io::ErrorKind::ConnectionRefused;
            flow.failed(err, &shared.ns).await;
            if refused && let Err(err) = flow.socket().send(&buf[..len]).await {
                debug!(%peer, %err, "failed to pass a datagram into the target");
            }
        }
    }
    debug!(local = %listening.local, "stopped serving UDP");
}

/// Passes the target's replies back to `peer` until the flow is idle or the forward stops.
async fn run_flow(
    flow: Arc<Flow>,
    peer: SocketAddr,
    host: Arc<UdpSocket>,
    flows: Flows,
    shared: Arc<Shared>,
    stop: CancellationToken,
    _open: Gauge,
) {
    let timeout = shared.udp_idle_timeout;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let deadline = flow.idle_deadline(timeout);
        let socket = flow.socket();
        tokio::select! {
            () = stop.cancelled() => break,
            () = shared.cut.cancelled() => break,
            () = flow.evicted.cancelled() => {
                debug!("UDP flow ended to make room for a new client");
                break;
            }
            () = tokio::time::sleep_until(deadline.into()) => {
                // Decide under the lock, so the receive loop either finds this flow live or
                // does not find it at all.
                let mut flows = lock(&flows);
                if flow.idle_deadline(timeout) <= Instant::now() {
                    remove_if_same(&mut flows, peer, &flow);
                    debug!(?timeout, "UDP flow idle: ended");
                    break;
                }
            }
            // Not `recv`: tokio wakes readers on readable, not on the error that a "port
            // unreachable" leaves on the socket (EPOLLERR alone), and that error is the sign
            // to switch loopbacks.
            ready = socket.ready(Interest::READABLE | Interest::ERROR) => {
                let ready = match ready {
                    Ok(ready) => ready,
                    Err(err) => {
                        debug!(%err, "failed to wait on the flow socket");
                        break;
                    }
                };
                if ready.is_error() {
                    // The error is taken: clear tokio's note of it, or `ready` would spin.
                    let _ = socket.try_io(Interest::ERROR, || {
                        Err::<(), _>(io::Error::from(io::ErrorKind::WouldBlock))
                    });
                    if let Ok(Some(err)) = socket.take_error() {
                        flow.failed(err, &shared.ns).await;
                        continue;
                    }
                }
                if ready.is_readable() {
                    loop {
                        match socket.try_recv(&mut buf) {
                            Ok(len) => {
                                flow.touch();
                                if let Err(err) = host.send_to(&buf[..len], peer).await {
                                    debug!(%err, "failed to pass a datagram back to the client");
                                }
                            }
                            Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                            Err(err) => {
                                flow.failed(err, &shared.ns).await;
                                break;
                            }
                        }
                    }
                }
            }
        }
    }
    // Only this flow: after an eviction the client may have a new one already.
    remove_if_same(&mut lock(&flows), peer, &flow);
}

/// A new flow into the target, ending the least recently active one first when the mapping
/// has `udp_max_flows` (or when the process is out of descriptors, once).
async fn open_flow(flows: &Flows, shared: &Shared, remote: u16) -> io::Result<Flow> {
    if lock(flows).len() >= shared.udp_max_flows {
        evict_oldest(flows, shared).await;
    }
    match Flow::open(&shared.ns, remote).await {
        Err(err) if is_out_of_fds(&err) && evict_oldest(flows, shared).await => {
            Flow::open(&shared.ns, remote).await
        }
        other => other,
    }
}

/// Ends the flow idle the longest and waits until its socket is closed; false if there is
/// none.
async fn evict_oldest(flows: &Flows, shared: &Shared) -> bool {
    let closed = {
        let mut flows = lock(flows);
        let oldest = flows
            .iter()
            .min_by_key(|(_, flow)| flow.last_active_at())
            .map(|(peer, _)| *peer);
        let Some(flow) = oldest.and_then(|peer| flows.remove(&peer)) else {
            return false;
        };
        // Its task ends on this and drops the flow; the map no longer sends it datagrams.
        flow.evicted.cancel();
        flow.closed.clone()
    };
    shared.stats.udp_flow_evicted();
    // Promptly: the task waits on `evicted`; its other awaits are a send or a socket made.
    closed.cancelled().await;
    true
}

fn remove_if_same(flows: &mut HashMap<SocketAddr, Arc<Flow>>, peer: SocketAddr, flow: &Arc<Flow>) {
    if flows.get(&peer).is_some_and(|f| Arc::ptr_eq(f, flow)) {
        flows.remove(&peer);
    }
}

fn is_out_of_fds(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error().map(nix::errno::Errno::from_raw),
        Some(nix::errno::Errno::EMFILE | nix::errno::Errno::ENFILE)
    )
}

/// A UDP socket made inside `ns`, connected to `target`.
async fn target_socket(ns: &Namespace, target: SocketAddr) -> io::Result<UdpSocket> {
    let socket = ns
        .run_async(move || connected_socket(target))
        .await
        .map_err(io::Error::other)??;
    UdpSocket::from_std(socket)
}

/// Runs inside the target: a dual-stack socket connected to `target` (an IPv4 loopback given
/// as `::ffff:127.0.0.1`), or an IPv4 one where the target has no IPv6.
fn connected_socket(target: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let dual_stack = Socket::new(Domain::IPV6, Type::DGRAM, None).and_then(|s| {
        s.set_only_v6(false)?;
        s.connect(&SockAddr::from(target))?;
        Ok(s)
    });
    let socket = match (dual_stack, target) {
        (Ok(socket), _) => socket,
        (Err(_), SocketAddr::V6(v6)) if v6.ip().to_ipv4_mapped().is_some() => {
            let s = Socket::new(Domain::IPV4, Type::DGRAM, None)?;
            s.connect(&SockAddr::from(SocketAddr::from((
                Ipv4Addr::LOCALHOST,
                target.port(),
            ))))?;
            s
        }
        (Err(err), _) => return Err(err),
    };
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// The target's loopback as a dual-stack socket names it.
fn loopback(v6: bool, port: u16) -> SocketAddr {
    if v6 {
        SocketAddr::from((Ipv6Addr::LOCALHOST, port))
    } else {
        SocketAddr::from((Ipv4Addr::LOCALHOST.to_ipv6_mapped(), port))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded values stay consistent after any panic: take them anyway.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
