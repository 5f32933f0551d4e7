//! Sockets made inside a network namespace and used from anywhere.
//!
//! A socket belongs to the network namespace of the thread that called socket(2), for its whole
//! life, wherever it is used afterwards. So only creation happens on a thread inside the
//! namespace; connect, accept and I/O run on the host's tokio runtime as usual.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use tokio::net::TcpSocket;
use tokio::sync::oneshot;

use crate::{Error, Namespace, NsKind, Result};

impl Namespace {
    /// A TCP listener bound to `addr` inside this network namespace, in non-blocking mode, ready
    /// for `tokio::net::TcpListener::from_std`.
    pub fn listen_tcp(&self, addr: SocketAddr) -> Result<TcpListener> {
        self.expect_kind(NsKind::Net)?;
        let listener = self
            .run(move || TcpListener::bind(addr).and_then(nonblocking))?
            .map_err(|source| Error::Listen {
                addr,
                ns: self.path().to_path_buf(),
                source,
            })?;
        Ok(listener)
    }

    /// A UDP socket bound to `addr` inside this network namespace, in non-blocking mode, ready
    /// for `tokio::net::UdpSocket::from_std`.
    pub fn bind_udp(&self, addr: SocketAddr) -> Result<UdpSocket> {
        self.expect_kind(NsKind::Net)?;
        self.run(move || UdpSocket::bind(addr).and_then(|s| s.set_nonblocking(true).map(|()| s)))?
            .map_err(|source| Error::Listen {
                addr,
                ns: self.path().to_path_buf(),
                source,
            })
    }

    /// A TCP connection to `addr` made inside this network namespace, waiting at most
    /// `timeout`; blocking, for code without a runtime. Async code uses a [`Dialer`].
    pub fn connect_tcp(&self, addr: SocketAddr, timeout: Duration) -> Result<TcpStream> {
        self.expect_kind(NsKind::Net)?;
        self.run(move || TcpStream::connect_timeout(&addr, timeout))?
            .map_err(|source| Error::Connect {
                addr,
                ns: self.path().to_path_buf(),
                source,
            })
    }

    /// A [`Dialer`] for this network namespace: one thread that stays inside it and makes
    /// sockets on request, so each connection costs a channel round trip, not a thread.
    pub fn dialer(&self) -> Result<Dialer> {
        self.expect_kind(NsKind::Net)?;
        let (requests, inbox) = mpsc::channel::<Request>();
        let (entered_tx, entered) = mpsc::sync_channel(1);
        let ns = self.clone();
        let path = self.path().to_path_buf();
        std::thread::Builder::new()
            .name("podkit-dialer".into())
            .spawn(move || {
                let result = ns.enter();
                let ok = result.is_ok();
                // The caller waits for this answer below, so the send cannot fail.
                let _ = entered_tx.send(result);
                if !ok {
                    return;
                }
                // Ends when the last Dialer clone is dropped.
                for request in inbox {
                    let socket = match request.ip {
                        Ip::V4 => TcpSocket::new_v4(),
                        Ip::V6 => TcpSocket::new_v6(),
                    };
                    let _ = request.reply.send(socket);
                }
            })
            .map_err(|source| Error::Thread {
                path: path.clone(),
                source,
            })?;
        entered
            .recv()
            .map_err(|_| Error::ThreadPanicked { path: path.clone() })??;
        Ok(Dialer { requests, ns: path })
    }
}

/// Makes TCP connections inside one network namespace, for async code on the host.
///
/// Cloning shares the thread; it ends when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct Dialer {
    requests: mpsc::Sender<Request>,
    ns: PathBuf,
}

#[derive(Debug)]
struct Request {
    ip: Ip,
    reply: oneshot::Sender<std::io::Result<TcpSocket>>,
}

#[derive(Debug, Clone, Copy)]
enum Ip {
    V4,
    V6,
}

impl Dialer {
    /// Connects to `addr` inside the namespace.
    pub async fn connect(&self, addr: SocketAddr) -> Result<tokio::net::TcpStream> {
        let ip = if addr.is_ipv4() { Ip::V4 } else { Ip::V6 };
        let socket = self.socket(ip).await?;
        socket.connect(addr).await.map_err(|source| Error::Connect {
            addr,
            ns: self.ns.clone(),
            source,
        })
    }

    /// Connects to "localhost" port `port` inside the namespace: 127.0.0.1, then ::1. The name
    /// is never resolved: /etc/hosts is the host's, not the pod's.
    pub async fn connect_localhost(&self, port: u16) -> Result<tokio::net::TcpStream> {
        let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
        let v4_error = match self.connect(v4).await {
            Ok(stream) => return Ok(stream),
            Err(Error::Connect { source, .. }) => source,
            Err(err) => return Err(err),
        };
        match self.connect(v6).await {
            Ok(stream) => Ok(stream),
            Err(Error::Connect { source, .. }) => Err(Error::ConnectLocalhost {
                port,
                ns: self.ns.clone(),
                v4: v4_error,
                v6: source,
            }),
            Err(err) => Err(err),
        }
    }

    /// The namespace this dialer connects in.
    pub fn namespace_path(&self) -> &std::path::Path {
        &self.ns
    }

    async fn socket(&self, ip: Ip) -> Result<TcpSocket> {
        let (reply, answer) = oneshot::channel();
        let gone = || Error::DialerGone {
            ns: self.ns.clone(),
        };
        self.requests
            .send(Request { ip, reply })
            .map_err(|_| gone())?;
        answer
            .await
            .map_err(|_| gone())?
            .map_err(|source| Error::Socket {
                ns: self.ns.clone(),
                source,
            })
    }
}

fn nonblocking(listener: TcpListener) -> std::io::Result<TcpListener> {
    listener.set_nonblocking(true)?;
    Ok(listener)
}
