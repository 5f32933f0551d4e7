//! Dialing inside the target: connections from sockets made inside its network namespace.
//!
//! A socket belongs to the namespace of the thread that created it, and only creation needs
//! such a thread; connecting and relaying run on the runtime. So a thread that stays inside the
//! namespace keeps a pool of fresh sockets filled, in batches, and a new connection takes one
//! without waiting for that thread: no thread round trip on the way to `connect`.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::mpsc::{self, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use netns::Namespace;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Notify;
use tracing::warn;

use crate::DialError;

/// The pool is filled up to this many sockets...
const HIGH: usize = 64;
/// ...once it falls below this many, so the thread wakes once per batch, not per connection.
const LOW: usize = 32;

/// Makes TCP connections to the target's localhost.
#[derive(Debug)]
pub(crate) struct Dialer {
    ns: PathBuf,
    pool: Arc<Pool>,
    /// Asks the pool's thread for a refill; a full channel means one is already asked for. The
    /// thread ends when this is dropped.
    refill: mpsc::SyncSender<()>,
    /// For the ::1 fallback, rare enough to take the round trip.
    v6: netns::Dialer,
}

#[derive(Debug, Default)]
struct Pool {
    /// Unconnected IPv4 sockets made inside the namespace.
    sockets: Mutex<Vec<TcpSocket>>,
    /// Why the last refill failed, for the next connection that finds the pool empty.
    error: Mutex<Option<io::Error>>,
    /// Wakes connections waiting on an empty pool after each refill.
    refilled: Notify,
}

impl Dialer {
    /// Starts the thread that makes sockets inside `ns`.
    pub(crate) fn new(ns: &Namespace, v6: netns::Dialer) -> Result<Self, DialError> {
        let pool = Arc::new(Pool::default());
        let (refill, requests) = mpsc::sync_channel(1);
        let (thread_ns, thread_pool) = (ns.clone(), Arc::clone(&pool));
        std::thread::Builder::new()
            .name("portfwd-sockets".into())
            .spawn(move || {
                let path = thread_ns.path().to_path_buf();
                // `run` enters the namespace on a thread of its own and returns when the
                // refill loop ends: when the Dialer is dropped.
                let pool = Arc::clone(&thread_pool);
                if let Err(err) = thread_ns.run(move || fill(&pool, &requests)) {
                    warn!(ns = ?path, %err, "the socket thread could not enter the namespace");
                    *lock(&thread_pool.error) = Some(io::Error::other(err));
                    thread_pool.refilled.notify_waiters();
                }
            })
            .map_err(|source| DialError::Socket {
                ns: ns.path().to_path_buf(),
                source,
            })?;
        let dialer = Dialer {
            ns: ns.path().to_path_buf(),
            pool,
            refill,
            v6,
        };
        dialer.ask_refill();
        Ok(dialer)
    }

    /// Connects to localhost `port` inside the namespace: 127.0.0.1, then ::1. The name is never
    /// resolved (the host's /etc/hosts is not the pod's).
    pub(crate) async fn connect_localhost(&self, port: u16) -> Result<TcpStream, DialError> {
        let socket = self.take().await.map_err(|source| DialError::Socket {
            ns: self.ns.clone(),
            source,
        })?;
        let v4 = match socket
            .connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
            .await
        {
            Ok(stream) => return Ok(stream),
            Err(err) => err,
        };
        match self
            .v6
            .connect(SocketAddr::from((Ipv6Addr::LOCALHOST, port)))
            .await
        {
            Ok(stream) => {
                // Best effort, as for the pooled sockets: Nagle only delays.
                let _ = stream.set_nodelay(true);
                Ok(stream)
            }
            Err(netns::Error::Connect { source: v6, .. }) => Err(DialError::Connect {
                port,
                ns: self.ns.clone(),
                v4,
                v6,
            }),
            Err(source) => Err(DialError::Netns {
                ns: self.ns.clone(),
                source: Box::new(source),
            }),
        }
    }

    /// A socket from the pool, waiting for a refill if it is empty.
    async fn take(&self) -> io::Result<TcpSocket> {
        loop {
            // Registered before looking, so a refill between the look and the wait is not missed.
            let refilled = self.pool.refilled.notified();
            tokio::pin!(refilled);
            refilled.as_mut().enable();
            let (socket, low) = {
                let mut sockets = lock(&self.pool.sockets);
                let socket = sockets.pop();
                (socket, sockets.len() < LOW)
            };
            if low && !self.ask_refill() {
                return Err(io::Error::other(
                    "the socket thread of the namespace has stopped",
                ));
            }
            if let Some(socket) = socket {
                return Ok(socket);
            }
            if let Some(err) = lock(&self.pool.error).take() {
                return Err(err);
            }
            refilled.await;
        }
    }

    /// Asks for a refill; false if the thread is gone.
    fn ask_refill(&self) -> bool {
        !matches!(
            self.refill.try_send(()),
            Err(TrySendError::Disconnected(()))
        )
    }
}

/// The thread's loop, inside the namespace: fill the pool to [`HIGH`] on each request.
fn fill(pool: &Pool, requests: &mpsc::Receiver<()>) {
    for () in requests {
        let missing = HIGH.saturating_sub(lock(&pool.sockets).len());
        let mut batch = Vec::with_capacity(missing);
        for _ in 0..missing {
            match TcpSocket::new_v4() {
                Ok(socket) => {
                    // A relay must not hold back small writes (the peers chose their own
                    // batching); set here, off the path of a new connection. Best effort: Nagle
                    // only delays.
                    let _ = socket.set_nodelay(true);
                    batch.push(socket);
                }
                Err(err) => {
                    *lock(&pool.error) = Some(err);
                    break;
                }
            }
        }
        lock(&pool.sockets).extend(batch);
        pool.refilled.notify_waiters();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Both guarded values are plain data, consistent after any panic: take them anyway.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
