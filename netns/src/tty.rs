//! Terminal window sizes, which nix wraps only through unsafe ioctl macros: what `podkit exec
//! -t` needs to give a command in a pod a pty the size of the user's terminal, and to keep it
//! so when the terminal is resized; and the ptys of containers with `tty: true` (made here for
//! a host process, or received from an OCI runtime's console socket).

use std::os::fd::{AsFd, OwnedFd};

pub use nix::pty::Winsize;

/// The window size of terminal `fd`: equal to `stty size`. `ENOTTY` when `fd` is no terminal.
pub fn window_size(fd: impl AsFd) -> std::io::Result<Winsize> {
    crate::sys::window_size(fd.as_fd())
}

/// Sets the window size of terminal `fd` (for a pty, its master end): equal to `stty rows R
/// cols C`. The terminal's foreground process group gets SIGWINCH.
pub fn set_window_size(fd: impl AsFd, size: &Winsize) -> std::io::Result<()> {
    crate::sys::set_window_size(fd.as_fd(), size)
}

/// A new pty, both ends close-on-exec (so no other child of a multi-threaded caller inherits
/// one): the master end for the caller, the slave end for the child's stdio (dup'ed onto
/// 0, 1, 2, which clears the flag). Equal to openpty(3), which leaves both inheritable.
#[derive(Debug)]
pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

/// Opens a [`Pty`] of `size` (the kernel's 0x0 when `None`).
pub fn open_pty(size: Option<&Winsize>) -> std::io::Result<Pty> {
    use nix::fcntl::OFlag;
    let flags = OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    let master = nix::pty::posix_openpt(flags)?;
    nix::pty::grantpt(&master)?;
    nix::pty::unlockpt(&master)?;
    let path = nix::pty::ptsname_r(&master)?;
    let slave = nix::fcntl::open(path.as_str(), flags, nix::sys::stat::Mode::empty())?;
    let master = OwnedFd::from(master);
    if let Some(size) = size {
        set_window_size(&master, size)?;
    }
    Ok(Pty { master, slave })
}

/// Receives the pty master an OCI runtime sends to its `--console-socket` (runc's protocol:
/// one message over the accepted unix connection, the pty's path as data and the master as
/// `SCM_RIGHTS`). Blocks until it comes; `None` when the runtime sent none.
pub fn receive_console(connection: impl AsFd) -> std::io::Result<Option<OwnedFd>> {
    crate::sys::recv_fd(connection.as_fd())
}
