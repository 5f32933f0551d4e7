//! TCP: the accept loop of one host socket, and the life of one connection: dial inside the
//! target, write the PROXY protocol header if the forward asks for one, then relay.
//!
//! Out of descriptors, the accept loop backs off instead of retrying at once; errors that
//! repeat per connection (accept, dial) are logged a few per window (`throttle.rs`), the rest
//! at debug level with the per-connection lines.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;
use socket2::SockRef;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span, warn};

use crate::forwarder::{Shared, chain};
use crate::throttle::Throttle;
use crate::{Event, Listening};

/// After an accept error that says the process is out of something (file descriptors,
/// memory), the next accept waits this long, doubling up to [`MAX_ACCEPT_BACKOFF`], as Go's
/// `net/http` and hyper's servers do: the connection stays in the kernel's backlog until a
/// descriptor is free, and the loop neither spins on it nor logs per attempt.
const MIN_ACCEPT_BACKOFF: Duration = Duration::from_millis(5);
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Accepts connections on `listener` until `stop`, each handled on its own task.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    listening: Listening,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let local = listening.local;
    let warnings = Throttle::default();
    let mut backoff = Duration::ZERO;
    loop {
        let accepted = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::ZERO;
                let span = info_span!("connection", %local, %peer, remote = listening.remote);
                let task = connection(stream, peer, listening, Arc::clone(&shared));
                shared.tracker.spawn(task.instrument(span));
            }
            Err(err) => {
                let exhausted = is_resource_exhaustion(&err);
                if exhausted {
                    backoff = (backoff * 2).clamp(MIN_ACCEPT_BACKOFF, MAX_ACCEPT_BACKOFF);
                }
                if let Some(suppressed) = warnings.allow() {
                    warn!(%local, %err, suppressed, retry_in = ?backoff, "failed to accept a connection");
                } else {
                    debug!(%local, %err, "failed to accept a connection");
                }
                if exhausted {
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                }
            }
        }
    }
    debug!(%local, "stopped listening");
}

/// One connection: dial the remote port inside the target, then relay until both sides are
/// done, or until the forward cuts it.
async fn connection(
    client: TcpStream,
    peer: SocketAddr,
    listening: Listening,
    shared: Arc<Shared>,
) {
    let _open = shared.stats.connection_opened();
    shared.emit(Event::Connection {
        local: listening.local,
        peer,
        remote: listening.remote,
    });
    let dialed = tokio::select! {
        () = shared.cut.cancelled() => return,
        dialed = shared.dialer.connect_localhost(listening.remote) => dialed,
    };
    let mut upstream = match dialed {
        Ok(upstream) => upstream,
        Err(error) => {
            // A target whose app is down meets every client: a few warnings per window, with
            // the count of the others, which are debug lines.
            if let Some(suppressed) = shared.dial_warnings.allow() {
                warn!(
                    error = %chain(&error),
                    suppressed,
                    "failed to dial into the target: closing this connection, forwarding goes on"
                );
            } else {
                debug!(error = %chain(&error), "failed to dial into the target: closing this connection");
            }
            shared.stats.dial_failed();
            shared.emit(Event::DialFailed {
                local: listening.local,
                remote: listening.remote,
                error: &error,
            });
            // A reset, as the client would have got from a refused port itself.
            let _ = SockRef::from(&client).set_linger(Some(Duration::ZERO));
            return;
        }
    };
    if let Some(version) = shared.proxy_protocol {
        // The host address the client reached (with a wildcard listener, the real one).
        let local = client.local_addr().unwrap_or(listening.local);
        let header = version.header(peer, local);
        let written = tokio::select! {
            () = shared.cut.cancelled() => return,
            written = upstream.write_all(&header) => written,
        };
        if let Err(err) = written {
            debug!(%err, "failed to write the PROXY protocol header: closing this connection");
            let _ = SockRef::from(&client).set_linger(Some(Duration::ZERO));
            return;
        }
    }
    // `client` has TCP_NODELAY from the listener, `upstream` from the dialer.
    tokio::select! {
        () = shared.cut.cancelled() => debug!("connection cut"),
        moved = crate::splice::relay(&client, &upstream, &shared.pipes) => match moved {
            Ok(moved) => debug!(up = moved.up, down = moved.down, "connection closed"),
            Err(err) => debug!(%err, "connection ended with an error"),
        },
    }
}

fn is_resource_exhaustion(err: &io::Error) -> bool {
    err.raw_os_error()
        .map(Errno::from_raw)
        .is_some_and(|errno| {
            matches!(
                errno,
                Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM
            )
        })
}
