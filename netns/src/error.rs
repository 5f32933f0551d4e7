//! The crate's one error type: a variant per operation that can fail, each naming what it worked on.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use crate::NsKind;

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong creating, entering, using or deleting namespaces.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("invalid namespace name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },

    #[error("invalid hostname {hostname:?}: {reason}")]
    InvalidHostname {
        hostname: String,
        reason: &'static str,
    },

    #[error("{path:?} already exists: a namespace of that name is in use (delete it first)")]
    AlreadyExists { path: PathBuf },

    #[error("failed to create directory {path:?}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("failed to create mount point {path:?}")]
    CreatePin {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("failed to create new {kinds} namespaces{hint}", hint = root_hint(*.source))]
    Unshare {
        kinds: String,
        #[source]
        source: nix::Error,
    },

    #[error("failed to set hostname {hostname:?} in the new UTS namespace")]
    Sethostname {
        hostname: String,
        #[source]
        source: nix::Error,
    },

    #[error("failed to bind-mount {src:?} on {dst:?}{hint}", hint = root_hint(*.source))]
    BindMount {
        src: PathBuf,
        dst: PathBuf,
        #[source]
        source: nix::Error,
    },

    #[error("failed to make {path:?} a shared mount (as `ip netns add` does)")]
    MakeShared {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },

    #[error("failed to unmount {path:?}")]
    Unmount {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },

    #[error("failed to remove {path:?}")]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("failed to open namespace {path:?}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("path {path:?} contains a NUL byte")]
    InvalidPath { path: PathBuf },

    #[error("failed to copy the mount tree to bind-mount at {dst:?} (open_tree, Linux 5.2)")]
    CloneTree {
        dst: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("no process with pid {pid} (it exited, or never existed)")]
    NoSuchProcess { pid: u32 },

    #[error("{path:?} is not a namespace file (expected a pin or /proc/PID/ns/{kind})")]
    NotANamespace { path: PathBuf, kind: NsKind },

    #[error("{path:?} is a namespace of kind {found}, not {expected}")]
    WrongKind {
        path: PathBuf,
        expected: NsKind,
        found: String,
    },

    #[error("failed to enter {kind} namespace {path:?}{hint}", hint = root_hint(*.source))]
    Setns {
        kind: NsKind,
        path: PathBuf,
        #[source]
        source: nix::Error,
    },

    #[error("failed to start a thread to work inside namespace {path:?}")]
    Thread {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("the thread working inside namespace {path:?} panicked")]
    ThreadPanicked { path: PathBuf },

    #[error("failed to start {program:?} as PID 1 of the new PID namespace")]
    SpawnInit {
        program: String,
        #[source]
        source: io::Error,
    },

    #[error("failed to start {program:?} in the namespaces of {path:?}")]
    Spawn {
        program: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("PID namespace {path:?} has no init process any more (its PID 1 exited)")]
    PidNamespaceDead { path: PathBuf },

    #[error("failed to write {path:?}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("failed to kill {pid} (PID 1 of the pod's PID namespace)")]
    Kill {
        pid: u32,
        #[source]
        source: nix::Error,
    },

    #[error("failed to open a netlink socket in namespace {path:?}")]
    NetlinkSocket {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("`{op}` failed in network namespace {ns:?}")]
    Netlink {
        op: String,
        ns: PathBuf,
        #[source]
        source: rtnetlink::Error,
    },

    #[error("no link named {name:?} in network namespace {ns:?}")]
    LinkNotFound { name: String, ns: PathBuf },

    #[error("failed to listen on {addr} in network namespace {ns:?}")]
    Listen {
        addr: SocketAddr,
        ns: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("failed to connect to {addr} in network namespace {ns:?}")]
    Connect {
        addr: SocketAddr,
        ns: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "failed to connect to localhost port {port} in network namespace {ns:?}: \
         127.0.0.1: {v4}; [::1]: {v6}"
    )]
    ConnectLocalhost {
        port: u16,
        ns: PathBuf,
        v4: io::Error,
        v6: io::Error,
    },

    #[error("failed to create a socket in network namespace {ns:?}")]
    Socket {
        ns: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("the socket thread of network namespace {ns:?} has stopped")]
    DialerGone { ns: PathBuf },

    #[error("this needs a tokio runtime: call it from inside one")]
    NoRuntime,

    #[error("invalid link name {name:?}: {reason}")]
    InvalidLinkName { name: String, reason: &'static str },

    #[error("invalid subnet {subnet}: {reason}")]
    InvalidSubnet { subnet: String, reason: String },

    #[error("invalid MTU {mtu} for bridge {bridge:?}: must be 68 to 65535")]
    InvalidMtu { bridge: String, mtu: u32 },

    #[error("{ip} cannot be a pod's address on subnet {subnet}: {reason}")]
    InvalidPodAddress {
        ip: std::net::IpAddr,
        subnet: String,
        reason: &'static str,
    },

    #[error(
        "link {name:?} in network namespace {ns:?} is a {kind}, not a bridge: \
         rename or delete it, or configure another bridge name"
    )]
    NotABridge {
        name: String,
        ns: PathBuf,
        kind: String,
    },

    #[error(
        "link {name:?} in network namespace {ns:?} is not a pod's veth on bridge {bridge:?} \
         ({reason}): refusing to delete it"
    )]
    NotAPort {
        name: String,
        bridge: String,
        ns: PathBuf,
        reason: String,
    },

    #[error("invalid owner {owner:?}: {reason}")]
    InvalidOwner { owner: String, reason: &'static str },

    #[error(
        "subnet {subnet} has no free address left ({leases} leases in {dir:?}): \
         delete pods, or use a larger subnet"
    )]
    SubnetFull {
        subnet: String,
        leases: usize,
        dir: PathBuf,
    },

    #[error("failed to lock {path:?}")]
    Lock {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },

    #[error("failed to read {path:?}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "the `nft` program was not found (looked in PATH and /usr/sbin): install nftables \
         (Debian's `nftables` package)"
    )]
    NftMissing,

    #[error("`nft -f -` failed in network namespace {ns:?} ({status}): {stderr}")]
    Nft {
        ns: PathBuf,
        status: String,
        stderr: String,
    },

    #[error("nf_tables `{op}` failed in network namespace {ns:?}")]
    Nftables {
        op: String,
        ns: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("connect hook: {what}")]
    Hook {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    #[error(
        "nftables table `ip {table}` is not set up in network namespace {ns:?}: \
         call Nat::ensure first"
    )]
    NatNotReady { table: String, ns: PathBuf },

    #[error(
        "host port {port} of {owner:?} is published already, by {holder:?}, in network \
         namespace {ns:?}: choose another hostPort, or delete that pod first"
    )]
    PortInUse {
        port: String,
        owner: String,
        holder: String,
        ns: PathBuf,
    },

    #[error("invalid hostPort mapping {port} of {owner:?}: {reason}")]
    InvalidHostPort {
        port: String,
        owner: String,
        reason: &'static str,
    },

    #[error(
        "Service port {port} of {owner:?} is taken already, by {holder:?}, in network \
         namespace {ns:?}: two Services cannot share a cluster IP, protocol and port; delete \
         the other Service or give this one another cluster IP"
    )]
    ServicePortInUse {
        port: String,
        owner: String,
        holder: String,
        ns: PathBuf,
    },

    #[error(
        "node port {port} of Service {owner:?} is taken already, by {holder:?}, in network \
         namespace {ns:?}: two Services cannot share a node port and protocol; delete the \
         other Service or give this one another nodePort"
    )]
    NodePortInUse {
        port: String,
        owner: String,
        holder: String,
        ns: PathBuf,
    },

    #[error("invalid Service {owner:?} on cluster IP {ip}: {reason}")]
    InvalidService {
        owner: String,
        ip: Ipv4Addr,
        reason: String,
    },

    #[error("invalid nftables table name {name:?}: {reason}")]
    InvalidTableName { name: String, reason: &'static str },

    #[error("failed to set sysctl {name}=1 in network namespace {ns:?}")]
    Sysctl {
        name: String,
        ns: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A step failed, and undoing what had been done failed too: both are reported so that the
    /// leftover (named in `cleanup`) can be removed by hand or by a later delete.
    #[error("{}; cleaning up failed as well: {}", chain(error), chain(cleanup))]
    Cleanup {
        error: Box<Error>,
        cleanup: Box<Error>,
    },
}

impl Error {
    /// The errno the kernel answered a netlink request with, if that is what failed.
    pub fn netlink_errno(&self) -> Option<i32> {
        match self {
            Error::Netlink {
                source: rtnetlink::Error::NetlinkError(message),
                ..
            } => Some(-message.raw_code()),
            _ => None,
        }
    }
}

/// An error with its causes, as one line: both halves of [`Error::Cleanup`] need theirs.
fn chain(error: &Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Most of these syscalls need CAP_SYS_ADMIN: say so when the kernel says EPERM.
fn root_hint(err: nix::Error) -> &'static str {
    match err {
        nix::Error::EPERM => " (operation not permitted: run as root, or with CAP_SYS_ADMIN)",
        _ => "",
    }
}
