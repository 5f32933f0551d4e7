//! Linux namespaces for podkit's pods: create, pin, open, enter and delete them; bring up `lo`
//! and build links through rtnetlink; make sockets inside a network namespace for use from the
//! host. Every `unsafe` of podkit lives here, in `sys.rs`.
//!
//! ```no_run
//! # async fn demo() -> netns::Result<()> {
//! use std::process::Command;
//! // Equal to `ip netns add web && ip -n web link set lo up`, plus IPC and UTS namespaces.
//! let pod = netns::PodNamespaces::builder("web", "/run/podkit/pods/web/ns").create().await?;
//! let mut child = pod.spawn(Command::new("uname").arg("-n"))?; // prints "web"
//! child.wait().ok();
//! pod.delete()?; // equal to `ip netns del web`
//! # Ok(()) }
//! ```
//!
//! Two rules from the kernel shape the API. `setns(2)` and `unshare(2)` change only the calling
//! thread, so every "inside a namespace" step runs on a short-lived OS thread of this crate,
//! never on a tokio worker. And a socket keeps the namespace it was created in, so sockets are
//! created on such a thread and handed back to the caller's runtime.
//!
//! Layout:
//! - `kind.rs`: [`NsKind`], the namespace kinds and their kernel names;
//! - `namespace.rs`: [`Namespace`], one open namespace (by path, name or pid) and running code
//!   inside it;
//! - `spawn.rs`: [`Namespaces`], a set to start processes in (`Command` + `pre_exec` + `setns`);
//! - `process.rs`: [`Process`], a program started by podkit's own fork (clone3), which can
//!   create it directly in a cgroup;
//! - `pod.rs`: [`PodNamespaces`], a pod's namespaces created, pinned and deleted together;
//! - `setup.rs`: [`Setup`], what a member does between fork and exec (session, mounts, user);
//! - `pin.rs`: the bind mounts that keep a namespace alive with no process in it;
//! - `netlink.rs`: [`Netlink`], `ip link/address/route` through rtnetlink;
//! - `subnet.rs`: [`Subnet`] and [`Subnet6`], an IPv4 and an IPv6 network and prefix, with
//!   their gateway, pod range and a pod's IPv6 address from its IPv4 one;
//! - `bridge.rs`: [`Bridge`], pods on a host bridge with an address and a default route each
//!   (CNI's `bridge` plugin);
//! - `ipam.rs`: [`Ipam`], pod addresses leased from a subnet, one file per lease under a
//!   lock (CNI's `host-local` plugin);
//! - `nat.rs`: [`Nat`], masquerade and hostPorts in an nftables table of podkit's own (CNI's
//!   `bridge` ipMasq and `portmap` plugins); `nat/service.rs` Services' cluster IPs and node ports
//!   in it (kube-proxy's nftables mode); `nat/nftables.rs` its nf_tables netlink messages;
//! - `hook.rs`: [`ConnectHook`], hostPorts for the host's own clients by a BPF program on
//!   connect() (Cilium's socket load balancing), the NAT's fast path;
//! - `socket.rs`: listeners and a [`Dialer`] inside a network namespace;
//! - `tty.rs`: terminal window sizes, for a pty given to a command in a pod;
//! - `sys.rs`: the raw syscalls nix does not wrap, and [`release_free_memory`] (glibc's
//!   `malloc_trim`, for the sidecars that serve bursts);
//! - `error.rs`: [`Error`].

mod bridge;
mod error;
mod hook;
mod ipam;
mod kind;
mod namespace;
mod nat;
mod netlink;
mod pin;
mod pod;
mod process;
mod setup;
mod socket;
mod spawn;
mod subnet;
mod sys;
mod tty;

pub use bridge::{Bridge, POD_INTERFACE};
pub use error::{Error, Result};
pub use hook::ConnectHook;
pub use ipam::{Ipam, IpamLock};
pub use kind::NsKind;
pub use namespace::{NETNS_RUN_DIR, Namespace};
pub use nat::{HostPort, Nat, Protocol, Published, ServicePort};
pub use netlink::{Address, Link, Netlink};
pub use pod::{PodNamespaces, PodNamespacesBuilder};
pub use process::{Pending, PidFd, Process, Started, Stdio};
pub use setup::Setup;
pub use socket::Dialer;
pub use spawn::Namespaces;
pub use subnet::{Subnet, Subnet6};
pub use sys::{die_of_sigpipe, interface_ipv4, release_free_memory, release_start_pages};
pub use tty::{Pty, Winsize, open_pty, receive_console, set_window_size, window_size};

/// Equal to `mount --rbind` of what `src` is open on (an `O_PATH` fd is enough) at `dst`, in
/// the caller's mount namespace: open_tree(2), then move_mount(2), so what is mounted is what
/// was opened, whatever its path became since. For a path an OCI runtime then bind-mounts
/// into a container's own mount namespace (kubelet's subPath bind mounts). Linux 5.2.
pub fn bind_mount_fd_at(
    src: std::os::fd::BorrowedFd<'_>,
    dst: &std::path::Path,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    let tree = sys::clone_tree(src)?;
    let dst = std::ffi::CString::new(dst.as_os_str().as_bytes())?;
    sys::attach_tree(tree.as_raw_fd(), &dst)
}

/// The longest name accepted: a Kubernetes pod name is a DNS subdomain of at most 253 bytes.
pub const MAX_NAME_LEN: usize = 253;

/// Checks that `name` can name a pod's namespaces: a file name under `/run/netns`, so no `/`,
/// no `.` or `..`, and the characters of a Kubernetes object name.
pub fn validate_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("must not be empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("longer than 253 bytes")
    } else if name.contains('/') {
        Some("must not contain '/'")
    } else if name == "." || name == ".." {
        Some("must not be '.' or '..'")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        Some("may contain only letters, digits, '-', '.' and '_'")
    } else if !name.as_bytes()[0].is_ascii_alphanumeric() {
        Some("must start with a letter or digit")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}
