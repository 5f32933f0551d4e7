//! The yardstick of `bench/portfwd.sh`: the simplest fast TCP relay into a network namespace
//! that user space allows, to tell what a relay costs on this machine from what portfwd adds.
//!
//! Blocking sockets, two OS threads per connection (one per direction), each a bare `splice(2)`
//! loop through its own pipe: no readiness, no event loop, no EAGAIN. It has none of portfwd's
//! duties (no ::1 fallback, no drain, no limits), so it is a bench tool, not a forward.
//!
//! ```text
//! splice_relay LISTEN_ADDR NETNS_FILE TARGET_ADDR [PIPE_SIZE]
//! splice_relay 127.0.0.1:35201 /run/netns/pfbench 127.0.0.1:5201
//! ```

use std::fs::File;
use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::thread;

use anyhow::{Context, bail};
use nix::fcntl::{FcntlArg, SpliceFFlags, fcntl, splice};
use nix::sched::{CloneFlags, setns};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, ns, target, rest @ ..] = &args[..] else {
        bail!("usage: splice_relay LISTEN_ADDR NETNS_FILE TARGET_ADDR [PIPE_SIZE]");
    };
    let pipe_size: i32 = match rest.first() {
        Some(size) => size.parse().context("PIPE_SIZE: bytes")?,
        None => 1 << 20,
    };
    // Bound on the host, before this thread enters the namespace: a socket keeps the
    // namespace it was made in. Every thread started afterwards starts inside it.
    let listener = TcpListener::bind(listen).with_context(|| format!("failed to bind {listen}"))?;
    let ns = File::open(ns).with_context(|| format!("failed to open {ns}"))?;
    setns(&ns, CloneFlags::CLONE_NEWNET).context("failed to enter the network namespace")?;
    for client in listener.incoming() {
        let client = match client {
            Ok(client) => client,
            Err(err) => {
                eprintln!("splice_relay: accept: {err}");
                continue;
            }
        };
        let target = target.clone();
        thread::spawn(move || {
            if let Err(err) = connection(client, &target, pipe_size) {
                eprintln!("splice_relay: {err:#}");
            }
        });
    }
    Ok(())
}

fn connection(client: TcpStream, target: &str, pipe_size: i32) -> anyhow::Result<()> {
    let upstream = TcpStream::connect(target).with_context(|| format!("connect {target}"))?;
    client.set_nodelay(true)?;
    upstream.set_nodelay(true)?;
    let (client2, upstream2) = (client.try_clone()?, upstream.try_clone()?);
    let up = thread::spawn(move || one_way(&client2, &upstream2, pipe_size));
    let down = one_way(&upstream, &client, pipe_size);
    // A thread that panicked has nothing more to report than its panic message.
    let up = up.join().unwrap_or(Ok(()));
    down.and(up).context("relay")
}

/// `src` to `dst` until end-of-file, then a half-close.
fn one_way(src: &TcpStream, dst: &TcpStream, pipe_size: i32) -> io::Result<()> {
    let (read, write): (OwnedFd, OwnedFd) = nix::unistd::pipe()?;
    let capacity = fcntl(&write, FcntlArg::F_SETPIPE_SZ(pipe_size))
        .or_else(|_| fcntl(&write, FcntlArg::F_GETPIPE_SZ))? as usize;
    loop {
        let n = splice(
            src,
            None,
            &write,
            None,
            capacity,
            SpliceFFlags::SPLICE_F_MOVE,
        )?;
        if n == 0 {
            break;
        }
        let mut left = n;
        while left > 0 {
            left -= splice(&read, None, dst, None, left, SpliceFFlags::SPLICE_F_MOVE)?;
        }
    }
    match dst.shutdown(Shutdown::Write) {
        Err(err) if err.kind() != io::ErrorKind::NotConnected => Err(err),
        _ => Ok(()),
    }
}
