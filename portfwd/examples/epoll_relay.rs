//! The second yardstick of `bench/portfwd.sh`: the leanest event-loop TCP relay into a network
//! namespace, to tell what portfwd's runtime (tokio) and its readiness model cost per request.
//!
//! One thread, level-triggered epoll, `splice(2)` through a pipe per direction, pipes reused:
//! a request costs exactly one splice in and one out per direction, no splice that returns
//! EAGAIN (level triggering re-reports a socket that still holds data), and the kernel drops
//! closed sockets from the epoll set without an `epoll_ctl`. Like `splice_relay`, a bench tool:
//! no ::1 fallback, no drain, errors just close the connection.
//!
//! ```text
//! epoll_relay LISTEN_ADDR NETNS_FILE TARGET_ADDR [PIPE_SIZE]
//! ```

use std::fs::File;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};

use anyhow::{Context, bail};
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl, splice};
use nix::sched::{CloneFlags, setns};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use socket2::{Domain, SockAddr, Socket, Type};

/// The epoll token of the listener; a connection's sockets are `2 * slot + side`.
const LISTENER: u64 = u64::MAX;

struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity: usize,
}

/// One direction: from `sockets[side]` to `sockets[1 - side]`.
struct Way {
    pipe: Pipe,
    /// Bytes in the pipe, not yet written to the destination.
    pending: usize,
    /// The source reached end-of-file and everything was passed on.
    done: bool,
}

struct Conn {
    sockets: [Socket; 2],
    ways: [Way; 2],
    /// The epoll interest registered for each socket.
    interest: [EpollFlags; 2],
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, ns, target, rest @ ..] = &args[..] else {
        bail!("usage: epoll_relay LISTEN_ADDR NETNS_FILE TARGET_ADDR [PIPE_SIZE]");
    };
    let pipe_size: i32 = match rest.first() {
        Some(size) => size.parse().context("PIPE_SIZE: bytes")?,
        None => 1 << 20,
    };
    let listen: SocketAddr = listen.parse().context("LISTEN_ADDR")?;
    let target: SocketAddr = target.parse().context("TARGET_ADDR")?;
    // Made on the host, before this thread enters the namespace: sockets keep their namespace.
    let listener = Socket::new(
        Domain::for_address(listen),
        Type::STREAM.nonblocking(),
        None,
    )?;
    listener.set_reuse_address(true)?;
    // Inherited by accepted sockets.
    listener.set_tcp_nodelay(true)?;
    listener.bind(&listen.into())?;
    listener.listen(4096)?;
    let ns = File::open(ns).with_context(|| format!("failed to open {ns}"))?;
    setns(&ns, CloneFlags::CLONE_NEWNET).context("failed to enter the network namespace")?;

    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    epoll.add(&listener, EpollEvent::new(EpollFlags::EPOLLIN, LISTENER))?;
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut pipes: Vec<Pipe> = Vec::new();
    let mut events = vec![EpollEvent::empty(); 256];
    loop {
        let n = epoll.wait(&mut events, EpollTimeout::NONE)?;
        for event in &events[..n] {
            let token = event.data();
            if token == LISTENER {
                accept_all(
                    &listener, &target, &epoll, &mut conns, &mut free, &mut pipes, pipe_size,
                );
                continue;
            }
            let slot = usize::try_from(token / 2)?;
            let Some(conn) = conns[slot].as_mut() else {
                continue;
            };
            let side = (token % 2) as usize;
            let flags = event.events();
            let mut result = Ok(());
            if flags.intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR) {
                result = result.and_then(|()| pump(conn, side));
            }
            if flags.intersects(EpollFlags::EPOLLOUT | EpollFlags::EPOLLERR) {
                result = result.and_then(|()| pump(conn, 1 - side));
            }
            let finished = conn.ways.iter().all(|way| way.done);
            if result.is_err() || finished {
                // Closing the sockets drops them from the epoll set.
                if let Some(conn) = conns[slot].take()
                    && finished
                {
                    // Both pipes were drained to the end: fit for reuse.
                    pipes.extend(conn.ways.into_iter().map(|way| way.pipe));
                }
                free.push(slot);
                continue;
            }
            if let Err(err) = update_interest(&epoll, conn, slot) {
                eprintln!("epoll_relay: epoll_ctl: {err}");
                conns[slot] = None;
                free.push(slot);
            }
        }
    }
}

fn accept_all(
    listener: &Socket,
    target: &SocketAddr,
    epoll: &Epoll,
    conns: &mut Vec<Option<Conn>>,
    free: &mut Vec<usize>,
    pipes: &mut Vec<Pipe>,
    pipe_size: i32,
) {
    loop {
        let client = match listener.accept4(nix::libc::SOCK_NONBLOCK | nix::libc::SOCK_CLOEXEC) {
            Ok((client, _)) => client,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
            Err(err) => {
                eprintln!("epoll_relay: accept: {err}");
                return;
            }
        };
        let conn = (|| -> io::Result<Conn> {
            let upstream = Socket::new(
                Domain::for_address(*target),
                Type::STREAM.nonblocking(),
                None,
            )?;
            upstream.set_tcp_nodelay(true)?;
            match upstream.connect(&SockAddr::from(*target)) {
                Err(err) if err.raw_os_error() != Some(Errno::EINPROGRESS as i32) => {
                    return Err(err);
                }
                // On loopback the handshake is over when connect returns; a splice into a
                // socket still connecting just waits for EPOLLOUT like a full one.
                _ => {}
            }
            let mut way = || -> io::Result<Way> {
                let pipe = match pipes.pop() {
                    Some(pipe) => pipe,
                    None => new_pipe(pipe_size)?,
                };
                Ok(Way {
                    pipe,
                    pending: 0,
                    done: false,
                })
            };
            Ok(Conn {
                ways: [way()?, way()?],
                sockets: [client, upstream],
                interest: [EpollFlags::EPOLLIN; 2],
            })
        })();
        let conn = match conn {
            Ok(conn) => conn,
            Err(err) => {
                eprintln!("epoll_relay: {err}");
                continue;
            }
        };
        let slot = free.pop().unwrap_or_else(|| {
            conns.push(None);
            conns.len() - 1
        });
        let added = (0..2).try_for_each(|side| {
            epoll.add(
                &conn.sockets[side],
                EpollEvent::new(EpollFlags::EPOLLIN, (2 * slot + side) as u64),
            )
        });
        match added {
            Ok(()) => conns[slot] = Some(conn),
            Err(err) => {
                eprintln!("epoll_relay: epoll_ctl: {err}");
                free.push(slot);
            }
        }
    }
}

fn new_pipe(size: i32) -> io::Result<Pipe> {
    let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
    let capacity = fcntl(&write, FcntlArg::F_SETPIPE_SZ(size))
        .or_else(|_| fcntl(&write, FcntlArg::F_GETPIPE_SZ))? as usize;
    Ok(Pipe {
        read,
        write,
        capacity,
    })
}

const FLAGS: SpliceFFlags = SpliceFFlags::SPLICE_F_MOVE.union(SpliceFFlags::SPLICE_F_NONBLOCK);

/// Moves what it can of way `side` (from `sockets[side]` to the other): first what the pipe
/// holds, then, if it emptied, one read from the source and its write.
fn pump(conn: &mut Conn, side: usize) -> io::Result<()> {
    let (src, dst) = (&conn.sockets[side], &conn.sockets[1 - side]);
    let way = &mut conn.ways[side];
    if way.done {
        return Ok(());
    }
    if way.pending == 0 {
        match splice(src, None, &way.pipe.write, None, way.pipe.capacity, FLAGS) {
            Ok(0) => {
                way.done = true;
                return match dst.shutdown(Shutdown::Write) {
                    Err(err) if err.kind() != io::ErrorKind::NotConnected => Err(err),
                    _ => Ok(()),
                };
            }
            Ok(n) => way.pending = n,
            Err(Errno::EAGAIN) => return Ok(()),
            Err(err) => return Err(err.into()),
        }
    }
    while way.pending > 0 {
        match splice(&way.pipe.read, None, dst.as_fd(), None, way.pending, FLAGS) {
            Ok(n) => way.pending -= n,
            Err(Errno::EAGAIN) => return Ok(()),
            Err(err) => return Err(err.into()),
        }
    }
    Ok(())
}

/// Level-triggered interest: read a source whose pipe is empty, wait to write a destination
/// whose pipe is not.
fn update_interest(epoll: &Epoll, conn: &mut Conn, slot: usize) -> io::Result<()> {
    for side in 0..2 {
        let reading = &conn.ways[side];
        let writing = &conn.ways[1 - side];
        let mut want = EpollFlags::empty();
        if !reading.done && reading.pending == 0 {
            want |= EpollFlags::EPOLLIN;
        }
        if writing.pending > 0 {
            want |= EpollFlags::EPOLLOUT;
        }
        if want != conn.interest[side] {
            epoll.modify(
                &conn.sockets[side],
                &mut EpollEvent::new(want, (2 * slot + side) as u64),
            )?;
            conn.interest[side] = want;
        }
    }
    Ok(())
}
