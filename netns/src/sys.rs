//! The crate's only `unsafe`: raw syscalls that nix does not wrap, and the `pre_exec` hook.
//! (Also podkit's terminal ioctls, for `podkit exec -t`: this is podkit's one place for unsafe.)

#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::Arc;

use nix::sched::CloneFlags;

use crate::Setup;

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

/// Makes `cmd` join each namespace in `namespaces` between fork and exec, in order, then take
/// the `setup` steps. See setns(2). The fds were opened before the fork and are close-on-exec.
pub(crate) fn before_exec(
    cmd: &mut Command,
    namespaces: Vec<(Arc<OwnedFd>, CloneFlags)>,
    setup: Setup,
) {
    let hook = move || -> io::Result<()> {
        for (fd, flag) in &namespaces {
            nix::sched::setns(fd.as_ref(), *flag).map_err(io::Error::from)?;
        }
        setup.run()
    };
    // SAFETY: the hook runs in the child between fork and exec, where only async-signal-safe
    // calls are allowed. It reads data it owns, prepared before the fork (fds, C strings), and
    // makes only syscalls (setns(2) here; those of `Setup::run`, which holds to the same rule);
    // a failure becomes an `io::Error` from a raw errno, which does not allocate.
    unsafe {
        cmd.pre_exec(hook);
    }
}

/// A pidfd for `pid`: a handle that keeps naming that process even if the pid is reused.
/// See pidfd_open(2).
pub(crate) fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
    // SAFETY: pidfd_open takes a pid and flags (0) and returns a new fd or -1; it touches no
    // memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Sends SIGKILL to the process behind `pidfd`. See pidfd_send_signal(2).
pub(crate) fn pidfd_kill(pidfd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: a null siginfo is allowed (the kernel fills it as for kill(2)); the fd is
    // borrowed, so open for the duration of the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The window size of terminal `fd`. See TIOCGWINSZ in ioctl_tty(2).
pub(crate) fn window_size(fd: BorrowedFd<'_>) -> io::Result<libc::winsize> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `struct winsize` through the pointer, which points to a
    // live, writable winsize of ours; the fd is borrowed, so open for the call.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(size)
}

/// Sets the window size of terminal `fd` (the kernel sends SIGWINCH to its foreground process
/// group). See TIOCSWINSZ in ioctl_tty(2).
pub(crate) fn set_window_size(fd: BorrowedFd<'_>, size: &libc::winsize) -> io::Result<()> {
    // SAFETY: TIOCSWINSZ reads one `struct winsize` through the pointer, which points to a live
    // winsize borrowed for the call; the fd is borrowed too.
    let ret = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TIOCSWINSZ,
            size as *const libc::winsize,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes terminal `fd` the controlling terminal of the calling process, which must lead a
/// session that has none. Async-signal-safe: called between fork and exec. See TIOCSCTTY in
/// ioctl_tty(2).
pub(crate) fn set_controlling_terminal(fd: RawFd) -> io::Result<()> {
    // SAFETY: TIOCSCTTY takes an int by value (0: do not steal the terminal from another
    // session) and touches no memory of ours; an invalid fd fails with EBADF.
    let ret = unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
