//! The zero-copy relay of one TCP connection: `splice(2)` from one socket into a pipe and from
//! the pipe into the other socket, for each direction, so payload bytes stay in the kernel.
//!
//! A direction that reads end-of-file passes it on as a half-close (`shutdown(SHUT_WR)`) and
//! the other direction goes on until its own end-of-file: a client that shuts its write side
//! still gets the reply. An error in either direction ends both, and the peers see a reset.

use std::io;
use std::net::Shutdown;
use std::os::fd::OwnedFd;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl, splice};
use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// What [`relay`] moved, per direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Moved {
    /// From the client to the target.
    pub(crate) up: u64,
    /// From the target to the client.
    pub(crate) down: u64,
}

/// Relays `client` and `upstream` both ways until both directions reached end-of-file, or one
/// failed, with a pipe from `pipes` for each direction.
pub(crate) async fn relay(
    client: &TcpStream,
    upstream: &TcpStream,
    pipes: &Pipes,
) -> io::Result<Moved> {
    let up_pipe = pipes.take()?;
    let down_pipe = pipes.take()?;
    // Whether one direction has finished: the second to finish leaves its FIN to close(2).
    let done = AtomicBool::new(false);
    let result = tokio::try_join!(
        one_way(client, upstream, &up_pipe, &done),
        one_way(upstream, client, &down_pipe, &done)
    );
    match result {
        Ok((up, down)) => {
            // Both directions drained their pipe to the end: they are empty, fit for reuse.
            pipes.give(up_pipe);
            pipes.give(down_pipe);
            Ok(Moved { up, down })
        }
        Err(err) => {
            // Pass the failure on as a reset, not as an orderly end that would pass for
            // complete data.
            for stream in [client, upstream] {
                let _ = SockRef::from(stream).set_linger(Some(std::time::Duration::ZERO));
            }
            Err(err)
        }
    }
}

/// Idle pipes, kept for the next connections: a pipe costs four syscalls to make and close.
#[derive(Debug)]
pub(crate) struct Pipes {
    size: usize,
    idle: Mutex<Vec<Pipe>>,
}

/// The most idle pipes kept (two per connection).
const MAX_IDLE_PIPES: usize = 512;

impl Pipes {
    /// A pool of pipes of `size` bytes (asked of the kernel with `F_SETPIPE_SZ`).
    pub(crate) fn new(size: usize) -> Self {
        Pipes {
            size,
            idle: Mutex::new(Vec::new()),
        }
    }

    fn take(&self) -> io::Result<Pipe> {
        match self.idle().pop() {
            Some(pipe) => Ok(pipe),
            None => Pipe::new(self.size),
        }
    }

    /// Takes back an empty pipe.
    fn give(&self, pipe: Pipe) {
        let mut idle = self.idle();
        if idle.len() < MAX_IDLE_PIPES {
            idle.push(pipe);
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Pipe>> {
        // A plain list, consistent after any panic: take it anyway.
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A pipe for one direction: bytes spliced in from the source socket, out to the destination.
#[derive(Debug)]
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Its capacity: each splice into it asks for at most this much, so it never blocks on a
    /// full pipe (the pipe is drained before the next fill).
    capacity: usize,
}

impl Pipe {
    fn new(size: usize) -> io::Result<Self> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        // A larger pipe means fewer syscalls per byte; the kernel may refuse (pipe-max-size,
        // or the user's pipe page quota), and then the default 64 KiB does.
        let capacity = i32::try_from(size)
            .ok()
            .and_then(|size| fcntl(&write, FcntlArg::F_SETPIPE_SZ(size)).ok())
            .or_else(|| fcntl(&write, FcntlArg::F_GETPIPE_SZ).ok())
            .and_then(|c| usize::try_from(c).ok())
            .unwrap_or(64 * 1024);
        Ok(Pipe {
            read,
            write,
            capacity,
        })
    }
}

const FLAGS: SpliceFFlags = SpliceFFlags::SPLICE_F_MOVE.union(SpliceFFlags::SPLICE_F_NONBLOCK);

/// Moves `src` to `dst` through `pipe` until end-of-file, then half-closes `dst`. Returns the
/// bytes moved.
async fn one_way(
    src: &TcpStream,
    dst: &TcpStream,
    pipe: &Pipe,
    other_done: &AtomicBool,
) -> io::Result<u64> {
    let mut total = 0u64;
    loop {
        // The pipe is empty here, so EAGAIN can only mean that `src` has nothing to read:
        // `try_io` then clears its readiness and `readable` waits for more.
        let filled = loop {
            match src.try_io(Interest::READABLE, || {
                splice(src, None, &pipe.write, None, pipe.capacity, FLAGS).map_err(io::Error::from)
            }) {
                Ok(n) => break n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => src.readable().await?,
                Err(err) => return Err(err),
            }
        };
        if filled == 0 {
            break;
        }
        // The pipe holds `left` bytes, so EAGAIN can only mean that `dst` is full.
        let mut left = filled;
        while left > 0 {
            match dst.try_io(Interest::WRITABLE, || {
                splice(&pipe.read, None, dst, None, left, FLAGS).map_err(io::Error::from)
            }) {
                Ok(n) => left -= n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => dst.writable().await?,
                Err(err) => return Err(err),
            }
        }
        total += filled as u64;
    }
    if other_done.swap(true, Ordering::Relaxed) {
        // Both directions are done: the sockets close right after, which sends this FIN.
        return Ok(total);
    }
    match SockRef::from(dst).shutdown(Shutdown::Write) {
        // The peer has closed already: nothing left to tell it.
        Err(err) if err.kind() != io::ErrorKind::NotConnected => Err(err),
        _ => Ok(total),
    }
}
