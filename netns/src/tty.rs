//! Terminal window sizes, which nix wraps only through unsafe ioctl macros: what `podkit exec
//! -t` needs to give a command in a pod a pty the size of the user's terminal, and to keep it
//! so when the terminal is resized.

use std::os::fd::AsFd;

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
