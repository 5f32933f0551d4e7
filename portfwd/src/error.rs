//! The crate's one error type: a variant per operation that can fail, each naming what it
//! worked on.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can stop a forward from starting or running. Failures of one connection or
/// one UDP flow are not here: they are logged, and forwarding goes on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("invalid port mapping {spec:?}: {reason} (expected [LOCAL:]REMOTE[/tcp|/udp])")]
    InvalidPortMapping { spec: String, reason: &'static str },

    #[error("invalid listen address {address:?}: expected localhost or an IP address")]
    InvalidAddress { address: String },

    #[error("invalid duration {text:?}: expected a number and a unit (200ms, 10s, 5m, 1h)")]
    InvalidDuration { text: String },

    #[error("invalid PROXY protocol version {text:?}: expected v1 or v2")]
    InvalidProxyProtocol { text: String },

    #[error("nothing to forward: give at least one port mapping")]
    NoPorts,

    #[error("nothing to listen on: give at least one address")]
    NoAddresses,

    #[error("failed to open the network namespace of {target}")]
    OpenTarget {
        target: String,
        #[source]
        source: Box<netns::Error>,
    },

    #[error("failed to start dialing into the network namespace of {target}")]
    Dialer {
        target: String,
        #[source]
        source: Box<netns::Error>,
    },

    #[error("failed to start making sockets inside the network namespace of {target}")]
    SocketThread {
        target: String,
        #[source]
        source: DialError,
    },

    #[error(
        "port {port} ({protocol}) on {ip} is already in use: pick another local port, or stop \
         what listens there",
        port = addr.port(),
        ip = addr.ip()
    )]
    PortInUse {
        addr: SocketAddr,
        protocol: crate::Protocol,
    },

    #[error("failed to listen on {addr} ({protocol})")]
    Listen {
        addr: SocketAddr,
        protocol: crate::Protocol,
        #[source]
        source: io::Error,
    },
}

/// Why dialing into the target failed for one connection: that connection is closed, and
/// forwarding goes on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DialError {
    #[error("failed to create a socket inside network namespace {ns:?}")]
    Socket {
        ns: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "failed to connect to localhost port {port} in network namespace {ns:?}: \
         127.0.0.1: {v4}; [::1]: {v6}"
    )]
    Connect {
        port: u16,
        ns: PathBuf,
        v4: io::Error,
        v6: io::Error,
    },

    #[error("failed to dial inside network namespace {ns:?}")]
    Netns {
        ns: PathBuf,
        #[source]
        source: Box<netns::Error>,
    },
}
