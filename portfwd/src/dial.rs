//! Dialing inside the target: connections from sockets made inside its network namespace.
//!
//! A socket belongs to the namespace of the thread that created it, and only creation needs
//! that thread; so sockets are made there in batches and kept in a pool, and a connection takes
//! one and connects it from the runtime. That spares each connection a round trip to a thread
//! in the namespace, the largest cost of a new connection after the kernel's own.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Mutex;

use netns::Namespace;
use tokio::net::{TcpSocket, TcpStream};

use crate::DialError;

/// Sockets made per trip into the namespace.
const BATCH: usize = 64;

/// The most idle sockets kept; a burst that made more closes the rest.
const MAX_POOLED: usize = 4 * BATCH;

/// Makes TCP connections to the target's localhost.
#[derive(Debug)]
pub(crate) struct Dialer {
    ns: Namespace,
    /// Unconnected IPv4 sockets made inside the namespace, ready for `connect`.
    v4: Mutex<Vec<TcpSocket>>,
    /// For the ::1 fallback, rare enough to take the round trip.
    v6: netns::Dialer,
}

impl Dialer {
    pub(crate) fn new(ns: Namespace, v6: netns::Dialer) -> Self {
        Dialer {
            ns,
            v4: Mutex::new(Vec::new()),
            v6,
        }
    }

    /// Connects to localhost `port` inside the namespace: 127.0.0.1, then ::1. The name is never
    /// resolved (the host's /etc/hosts is not the pod's).
    pub(crate) async fn connect_localhost(&self, port: u16) -> Result<TcpStream, DialError> {
        let socket = self.take_v4().await.map_err(|source| DialError::Socket {
            ns: self.path(),
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
            Ok(stream) => Ok(stream),
            Err(netns::Error::Connect { source: v6, .. }) => Err(DialError::Connect {
                port,
                ns: self.path(),
                v4,
                v6,
            }),
            Err(source) => Err(DialError::Netns {
                ns: self.path(),
                source: Box::new(source),
            }),
        }
    }

    async fn take_v4(&self) -> io::Result<TcpSocket> {
        if let Some(socket) = self.pool().pop() {
            return Ok(socket);
        }
        let mut batch = self
            .ns
            .run_async(|| {
                (0..BATCH)
                    .map(|_| TcpSocket::new_v4())
                    .collect::<io::Result<Vec<_>>>()
            })
            .await
            .map_err(io::Error::other)??;
        // The batch is never empty: BATCH > 0.
        let socket = batch
            .pop()
            .ok_or_else(|| io::Error::other("empty socket batch"))?;
        let mut pool = self.pool();
        let room = MAX_POOLED.saturating_sub(pool.len());
        pool.extend(batch.into_iter().take(room));
        Ok(socket)
    }

    fn pool(&self) -> std::sync::MutexGuard<'_, Vec<TcpSocket>> {
        // The pool is a plain list, consistent after any panic: take it anyway.
        self.v4
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn path(&self) -> PathBuf {
        self.ns.path().to_path_buf()
    }
}
