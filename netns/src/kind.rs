//! The kinds of namespace a pod uses, and how the kernel names them.

use std::fmt;

use nix::sched::CloneFlags;

/// One kind of Linux namespace. See namespaces(7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NsKind {
    /// Network: links, addresses, routes, sockets, ports.
    Net,
    /// System V IPC and POSIX message queues.
    Ipc,
    /// Hostname and NIS domain name.
    Uts,
    /// Process IDs. Entering one affects only the children started afterwards.
    Pid,
    /// Mount table.
    Mnt,
}

impl NsKind {
    /// Every kind, in the order a process enters them (mount last: it changes the root).
    pub const ALL: [NsKind; 5] = [
        NsKind::Net,
        NsKind::Ipc,
        NsKind::Uts,
        NsKind::Pid,
        NsKind::Mnt,
    ];

    /// The file name under `/proc/PID/ns/`, also used for pins.
    pub const fn proc_name(self) -> &'static str {
        match self {
            NsKind::Net => "net",
            NsKind::Ipc => "ipc",
            NsKind::Uts => "uts",
            NsKind::Pid => "pid",
            NsKind::Mnt => "mnt",
        }
    }

    pub(crate) const fn clone_flag(self) -> CloneFlags {
        match self {
            NsKind::Net => CloneFlags::CLONE_NEWNET,
            NsKind::Ipc => CloneFlags::CLONE_NEWIPC,
            NsKind::Uts => CloneFlags::CLONE_NEWUTS,
            NsKind::Pid => CloneFlags::CLONE_NEWPID,
            NsKind::Mnt => CloneFlags::CLONE_NEWNS,
        }
    }

    /// The kind whose `CLONE_NEW*` value the kernel's `NS_GET_NSTYPE` returned; `None` for kinds
    /// podkit does not use (user, cgroup, time).
    pub(crate) fn from_clone_flag(flag: i32) -> Option<Self> {
        let flag = CloneFlags::from_bits_truncate(flag);
        NsKind::ALL
            .into_iter()
            .find(|kind| kind.clone_flag() == flag)
    }
}

impl fmt::Display for NsKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.proc_name())
    }
}
