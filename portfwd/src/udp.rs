//! UDP: one flow per client address. A flow is a socket inside the target connected to the
//! remote port; datagrams from the client go out through it, its replies come back from the
//! host socket to that client. A flow with no datagram either way for the idle timeout ends.
//!
//! The flow socket is dual-stack and sends to 127.0.0.1 first; when the target answers
//! "port unreachable" it switches to ::1 (and back), so a server on either loopback is found
//! from the client's next datagram on.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use socket2::{Domain, SockAddr, Socket, Type};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span, warn};

use crate::forwarder::{Gauge, Shared};
use crate::{Event, Listening};

/// The largest UDP payload: every datagram fits.
const MAX_DATAGRAM: usize = 65_536;

type Flows = Arc<Mutex<HashMap<SocketAddr, Arc<Flow>>>>;

/// One client's flow.
struct Flow {
    socket: UdpSocket,
    /// Milliseconds since `born` of the last datagram either way, for the idle timeout.
    last_active: AtomicU64,
    born: Instant,
    /// Whether the flow now sends to ::1 rather than 127.0.0.1.
    on_v6: AtomicBool,
    remote: u16,
}

impl Flow {
    fn touch(&self) {
        let now = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_active.store(now, Ordering::Relaxed);
    }

    fn idle_deadline(&self, timeout: std::time::Duration) -> Instant {
        self.born
            + std::time::Duration::from_millis(self.last_active.load(Ordering::Relaxed))
            + timeout
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
            None => match open_flow(&shared, listening.remote).await {
                Ok(flow) => {
                    let flow = Arc::new(flow);
                    lock(&flows).insert(peer, Arc::clone(&flow));
                    shared.emit(Event::UdpFlow {
                        local: listening.local,
                        peer,
                        remote: listening.remote,
                    });
                    let span = info_span!("udp_flow", local = %listening.local, %peer, remote = listening.remote);
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
                    warn!(%peer, %err, "failed to open a UDP flow into the target: datagram dropped");
                    continue;
                }
            },
        };
        flow.touch();
        if let Err(err) = flow.socket.send(&buf[..len]).await {
            debug!(%peer, %err, "failed to pass a datagram into the target");
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
        tokio::select! {
            () = stop.cancelled() => break,
            () = shared.cut.cancelled() => break,
            () = tokio::time::sleep_until(deadline.into()) => {
                // Decide under the lock, so the receive loop either finds this flow live or
                // does not find it at all.
                let mut flows = lock(&flows);
                if flow.idle_deadline(timeout) <= Instant::now() {
                    flows.remove(&peer);
                    debug!(?timeout, "UDP flow idle: ended");
                    break;
                }
            }
            received = flow.socket.recv(&mut buf) => match received {
                Ok(len) => {
                    flow.touch();
                    if let Err(err) = host.send_to(&buf[..len], peer).await {
                        debug!(%err, "failed to pass a datagram back to the client");
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => {
                    let v6 = !flow.on_v6.fetch_xor(true, Ordering::Relaxed);
                    let next = loopback(v6, flow.remote);
                    debug!(%next, "nothing listens on that loopback in the target: switching");
                    if let Err(err) = flow.socket.connect(next).await {
                        debug!(%err, "failed to switch loopbacks");
                    }
                }
                Err(err) => debug!(%err, "failed to receive from the target"),
            },
        }
    }
    lock(&flows).remove(&peer);
}

/// A flow socket made inside the target, sending to its 127.0.0.1.
async fn open_flow(shared: &Shared, remote: u16) -> io::Result<Flow> {
    let socket = shared
        .ns
        .run_async(move || flow_socket(remote))
        .await
        .map_err(io::Error::other)??;
    let flow = Flow {
        socket: UdpSocket::from_std(socket)?,
        last_active: AtomicU64::new(0),
        born: Instant::now(),
        on_v6: AtomicBool::new(false),
        remote,
    };
    Ok(flow)
}

/// Runs inside the target: a dual-stack socket connected to 127.0.0.1 (as `::ffff:127.0.0.1`),
/// or a v4 one where the target has no IPv6.
fn flow_socket(remote: u16) -> io::Result<std::net::UdpSocket> {
    let socket = match Socket::new(Domain::IPV6, Type::DGRAM, None).and_then(|s| {
        s.set_only_v6(false)?;
        s.bind(&SockAddr::from(SocketAddr::from((
            Ipv6Addr::UNSPECIFIED,
            0,
        ))))?;
        s.connect(&SockAddr::from(loopback(false, remote)))?;
        Ok(s)
    }) {
        Ok(socket) => socket,
        Err(_) => {
            let s = Socket::new(Domain::IPV4, Type::DGRAM, None)?;
            s.connect(&SockAddr::from(SocketAddr::from((
                Ipv4Addr::LOCALHOST,
                remote,
            ))))?;
            s
        }
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

fn lock(flows: &Flows) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Arc<Flow>>> {
    // A panic while holding this lock leaves a map that is still consistent: take it anyway.
    flows
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
