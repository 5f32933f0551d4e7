//! The crate's only `unsafe`: raw syscalls that nix does not wrap, and the `pre_exec` hook.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::Arc;

use nix::sched::CloneFlags;

/// `NS_GET_NSTYPE`, `_IO(0xb7, 0x3)` from `<linux/nsfs.h>`.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// The `CLONE_NEW*` type of the namespace behind `fd`; `ENOTTY` when `fd` is not a namespace.
/// See ioctl_ns(2).
pub(crate) fn ns_type(fd: BorrowedFd<'_>) -> io::Result<i32> {
    // SAFETY: NS_GET_NSTYPE takes no argument; the kernel only reads the open fd, which the
    // borrow keeps alive for the duration of the call.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_NSTYPE) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ret)
}

/// Makes `cmd` join each namespace in `namespaces` between fork and exec, in order.
/// See setns(2). The fds were opened before the fork and are close-on-exec.
pub(crate) fn setns_before_exec(cmd: &mut Command, namespaces: Vec<(Arc<OwnedFd>, CloneFlags)>) {
    let hook = move || -> io::Result<()> {
        for (fd, flag) in &namespaces {
            nix::sched::setns(fd.as_ref(), *flag).map_err(io::Error::from)?;
        }
        Ok(())
    };
    // SAFETY: the hook runs in the child between fork and exec, where only async-signal-safe
    // calls are allowed. It reads the vector it owns (no allocation, no lock) and calls setns(2),
    // which is async-signal-safe; a failure becomes an `io::Error` from a raw errno, which does
    // not allocate either.
    unsafe {
        cmd.pre_exec(hook);
    }
}
