//! The crate's only `unsafe`: raw syscalls that nix does not wrap, and the `pre_exec` hook.
//! (Also podkit's terminal ioctls, for `podkit exec -t`: this is podkit's one place for unsafe.)

#![allow(unsafe_code)]

use std::convert::Infallible;
use std::ffi::{CString, c_char};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::Arc;

use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::sys::stat::Mode;

use crate::Setup;

/// Gives the system back the memory glibc's allocator holds free: `malloc_trim(0)` walks every
/// arena (each thread's, not only the main heap's top, since glibc 2.8) and returns its free
/// pages with `madvise(MADV_DONTNEED)`. Without it a process keeps the resident size of its
/// busiest moment: glibc returns memory by itself only from the top of the main heap. Whether
/// anything was returned; `false` elsewhere than glibc (musl and others return memory
/// themselves). See malloc_trim(3).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn release_free_memory() -> bool {
    // SAFETY: malloc_trim takes no pointer and is MT-safe: glibc locks each arena while it
    // trims it, so other threads may allocate and free meanwhile.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Drops this process's mappings of its own program's pages it has not changed: the code and
/// read-only data of the executable (`/proc/self/exe`) that `/proc/self/smaps` shows mapped
/// with no anonymous (copied-on-write) page, with `madvise(MADV_DONTNEED)`. For a long-lived
/// process once its start is over (podkit's pod supervisor): every page its start touched, and
/// the pages the kernel mapped around each of them (fault-around), stop counting in its
/// resident set; they stay in the page cache, shared with every other process of the program,
/// and a page used again is mapped again by a minor fault. Nothing is lost, as these pages
/// hold what the file holds. Returns the bytes of mappings released.
pub fn release_start_pages() -> io::Result<usize> {
    let exe = std::fs::read_link("/proc/self/exe")?;
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    // Each mapping: its header line ("00460000-00ba5000 r-xp 0025f000 fe:00 10013227   /path"),
    // then its "Key: value" lines.
    let mut candidates: Vec<(usize, usize)> = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        if let Some(anonymous) = line.strip_prefix("Anonymous:") {
            let untouched = anonymous.trim() == "0 kB";
            if let Some(range) = current.take()
                && untouched
            {
                candidates.push(range);
            }
            continue;
        }
        let mut fields = line.splitn(6, ' ');
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) else {
            continue;
        };
        let path = fields.nth(3).map(str::trim_start);
        let own = path.is_some_and(|p| std::path::Path::new(p) == exe);
        current = (own && matches!(perms, "r-xp" | "r--p")).then_some((start, end));
    }
    let mut released = 0;
    for (start, end) in candidates {
        // SAFETY: [start, end) is a whole private mapping of this program's file, read-only
        // (no thread can write to it) and with no copied-on-write page (smaps said so just
        // now): every page holds what the file holds, so dropping it loses nothing, and the
        // next access (an instruction fetch, a read of a constant) maps it again from the
        // page cache. No Rust reference can observe the difference.
        let rc =
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        released += end - start;
    }
    Ok(released)
}

/// The cookie of the calling thread's network namespace (`SO_NETNS_COOKIE`, Linux 5.14): what
/// BPF's `bpf_get_netns_cookie` returns for a socket in it.
pub(crate) fn netns_cookie() -> io::Result<u64> {
    let socket = std::net::UdpSocket::bind((std::net::Ipv4Addr::LOCALHOST, 0))?;
    let mut cookie: u64 = 0;
    let mut len = size_of::<u64>() as libc::socklen_t;
    // SAFETY: the fd is open for the call; cookie and len point to writable memory of the sizes
    // given.
    let done = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&raw mut cookie).cast(),
            &raw mut len,
        )
    };
    if done != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cookie)
}

/// The IPv4 address of the interface `name` in the calling thread's network namespace, as
/// `ioctl(SIOCGIFADDR)` gives it (its primary address): one syscall, where `getifaddrs` dumps
/// every link of the host (each pod's veth among them) and every address. `None` when the
/// interface has no IPv4 address or does not exist.
pub fn interface_ipv4(name: &str) -> io::Result<Option<std::net::Ipv4Addr>> {
    // SAFETY: ifreq is plain old data (a name and a union of plain data): all zeroes is a valid
    // value of it.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= request.ifr_name.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not an interface name"),
        ));
    }
    for (slot, byte) in request.ifr_name.iter_mut().zip(bytes) {
        *slot = *byte as c_char;
    }
    // SAFETY: socket(2) takes no pointer.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2), and nothing else owns it.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: SIOCGIFADDR reads the NUL-terminated name in `request` (zeroed beyond it) and
    // writes a sockaddr into its union, which is large enough; `request` outlives the call.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFADDR, &mut request) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::EADDRNOTAVAIL | libc::ENODEV) => Ok(None),
            _ => Err(err),
        };
    }
    // SAFETY: after a successful SIOCGIFADDR the union holds `ifru_addr`, a sockaddr.
    let address = unsafe { request.ifr_ifru.ifru_addr };
    if i32::from(address.sa_family) != libc::AF_INET {
        return Ok(None);
    }
    // sockaddr_in's layout: family (2 bytes), port (2 bytes), then the address, which
    // sockaddr's sa_data holds from its third byte on.
    let data = address.sa_data;
    Ok(Some(std::net::Ipv4Addr::new(
        data[2] as u8,
        data[3] as u8,
        data[4] as u8,
        data[5] as u8,
    )))
}

/// Does nothing where the allocator is not glibc's.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_memory() -> bool {
    false
}

/// Ends the process as SIGPIPE's default action does (a shell then sees status 141): for a
/// command whose stdout was a pipe its reader closed, as a Go program (kubectl) ends. Rust
/// ignores SIGPIPE, so the default disposition is restored before the signal is raised.
pub fn die_of_sigpipe() -> ! {
    // SAFETY: SIG_DFL installs no handler; the process ends at once, whatever other threads do.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::raise(libc::SIGPIPE);
    }
    std::process::exit(128 + libc::SIGPIPE);
}

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
    let hook = move || enter(&namespaces, &setup);
    // SAFETY: the hook runs in the child between fork and exec, where only async-signal-safe
    // calls are allowed. It reads data it owns, prepared before the fork (fds, C strings), and
    // makes only syscalls (setns(2) here; those of `Setup::run`, which holds to the same rule);
    // a failure becomes an `io::Error` from a raw errno, which does not allocate.
    unsafe {
        cmd.pre_exec(hook);
    }
}

/// The child's steps between fork and exec, for both spawns: join each namespace in order
/// (setns(2)), then take the `setup` steps. Only syscalls on data prepared before the fork.
fn enter(namespaces: &[(Arc<OwnedFd>, CloneFlags)], setup: &Setup) -> io::Result<()> {
    for (fd, flag) in namespaces {
        nix::sched::setns(fd.as_ref(), *flag)?;
    }
    setup.run()
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
    pidfd_signal(pidfd, libc::SIGKILL)
}

/// Sends `signal` to the process behind `pidfd`. See pidfd_send_signal(2).
pub(crate) fn pidfd_signal(pidfd: BorrowedFd<'_>, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: a null siginfo is allowed (the kernel fills it as for kill(2)); the fd is
    // borrowed, so open for the duration of the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
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

/// Receives one file descriptor that a peer sent over unix socket `socket` with `SCM_RIGHTS`
/// (an OCI runtime's console socket: the pty master of a `terminal: true` container), made
/// close-on-exec on arrival (`MSG_CMSG_CLOEXEC`). Blocks until a message comes. `None` when
/// the message carried no descriptor or the peer closed the socket; any further descriptors it
/// carried are closed. See recvmsg(2), unix(7).
pub(crate) fn recv_fd(socket: BorrowedFd<'_>) -> io::Result<Option<OwnedFd>> {
    // The bytes sent along (runc sends the pty's path) are read and dropped.
    let mut data = [0u8; 4096];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // Room for a few descriptors' control message, aligned as cmsghdr needs (8 bytes).
    let mut control = [0u64; 16];
    // SAFETY: an all-zero msghdr is a valid empty one; its pointers are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of_val(&control);
    loop {
        // SAFETY: msg points to live buffers of ours (iov -> data, control), sized as given,
        // for the duration of the call; the socket is borrowed, so open.
        let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    let mut received = Vec::new();
    // SAFETY: the CMSG_* macros walk the control buffer the kernel filled, within
    // msg_controllen; each SCM_RIGHTS message holds (cmsg_len - CMSG_LEN(0)) / 4 descriptors,
    // now open in this process and ours alone, so each is owned exactly once.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let bytes = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let fds = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                for i in 0..bytes / size_of::<RawFd>() {
                    received.push(OwnedFd::from_raw_fd(fds.add(i).read_unaligned()));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    // The first is the one asked for; the rest close when `received` drops.
    Ok(if received.is_empty() {
        None
    } else {
        Some(received.swap_remove(0))
    })
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

/// Drops capability `cap` from the calling thread's bounding set (`PR_CAPBSET_DROP`, which nix
/// does not wrap). Async-signal-safe: called between fork and exec.
pub(crate) fn drop_bounding(cap: u32) -> io::Result<()> {
    // SAFETY: PR_CAPBSET_DROP takes the capability number by value and touches no memory of
    // ours; an unknown number fails with EINVAL.
    let ret = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Everything a child started by [`spawn`] does between fork and exec, prepared before the
/// fork: the child only makes syscalls on it.
pub(crate) struct ChildPlan<'a> {
    /// NULL-terminated pointers into the caller's `CString`s, which outlive the plan.
    argv: Vec<*const c_char>,
    envp: Vec<*const c_char>,
    /// The paths to try to exec, in order (a PATH search made before the fork).
    candidates: &'a [CString],
    /// The fds to put on 0, 1 and 2; `None` keeps the caller's.
    stdio: [Option<RawFd>; 3],
    namespaces: &'a [(Arc<OwnedFd>, CloneFlags)],
    setup: &'a Setup,
    /// The cgroup v2 directory to create the child in.
    cgroup: Option<BorrowedFd<'a>>,
}

impl<'a> ChildPlan<'a> {
    pub(crate) fn new(
        argv: &'a [CString],
        envp: &'a [CString],
        candidates: &'a [CString],
        stdio: [Option<RawFd>; 3],
        namespaces: &'a [(Arc<OwnedFd>, CloneFlags)],
        setup: &'a Setup,
        cgroup: Option<BorrowedFd<'a>>,
    ) -> Self {
        let pointers = |strings: &'a [CString]| {
            strings
                .iter()
                .map(|s| s.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect()
        };
        ChildPlan {
            argv: pointers(argv),
            envp: pointers(envp),
            candidates,
            stdio,
            namespaces,
            setup,
            cgroup,
        }
    }
}

/// `struct clone_args` from `<linux/sched.h>` (version 2, Linux 5.7, with `cgroup`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_CLEAR_SIGHAND: u64 = 0x1_0000_0000;
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Forks a child that follows `plan` and execs. Returns its pid and the read end of a pipe on
/// which it reports an errno if it fails before exec (see [`exec_report`]); exec closes the
/// pipe. With a cgroup, the child is created in it by clone3(2) with CLONE_INTO_CGROUP; before
/// Linux 5.7 it moves itself in instead.
pub(crate) fn spawn(plan: &ChildPlan<'_>) -> io::Result<(u32, OwnedFd)> {
    let (report_read, report_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let mut procs = None;
    let pid = match plan.cgroup {
        None => fork()?,
        Some(dir) => match clone_into_cgroup(dir) {
            Err(err)
                if matches!(
                    err.raw_os_error(),
                    Some(libc::ENOSYS | libc::E2BIG | libc::EINVAL)
                ) =>
            {
                let flags = OFlag::O_WRONLY | OFlag::O_CLOEXEC;
                procs = Some(nix::fcntl::openat(
                    dir,
                    "cgroup.procs",
                    flags,
                    Mode::empty(),
                )?);
                fork()?
            }
            other => other?,
        },
    };
    if pid == 0 {
        let Err(err) = child(plan, procs.as_ref());
        let errno = err.raw_os_error().unwrap_or(libc::EINVAL).to_ne_bytes();
        // SAFETY: in the child, between fork and exec: write(2) and _exit(2) are
        // async-signal-safe; the buffer is a live local array.
        unsafe {
            libc::write(report_write.as_raw_fd(), errno.as_ptr().cast(), errno.len());
            libc::_exit(127);
        }
    }
    Ok((pid as u32, report_read))
}

/// What a child's report pipe says once closed: `Ok` when it exec'd, else the error that
/// stopped it. `bytes` is everything read from the pipe.
pub(crate) fn exec_report(bytes: &[u8]) -> io::Result<()> {
    match <[u8; 4]>::try_from(bytes) {
        _ if bytes.is_empty() => Ok(()),
        Ok(errno) => Err(io::Error::from_raw_os_error(i32::from_ne_bytes(errno))),
        Err(_) => Err(io::Error::other(
            "the child failed before exec and sent a short report",
        )),
    }
}

/// fork(2): 0 in the child, its pid in the parent.
fn fork() -> io::Result<libc::pid_t> {
    // SAFETY: the child only runs `child`, which makes syscalls on data prepared before the
    // fork (see `ChildPlan`), then execs or _exits: no allocation, no locks, as a
    // multi-threaded parent requires.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(pid)
}

/// clone3(2) as a fork, with the child created in cgroup `dir` and its signal handlers reset
/// (a handler of the parent's must not run in the child before exec).
fn clone_into_cgroup(dir: BorrowedFd<'_>) -> io::Result<libc::pid_t> {
    let args = CloneArgs {
        flags: CLONE_INTO_CGROUP | CLONE_CLEAR_SIGHAND,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: dir.as_raw_fd() as u64,
        ..CloneArgs::default()
    };
    // SAFETY: without CLONE_VM and a stack this is fork(2): the child gets a copy of the address
    // space and returns 0 here, then only runs `child` (as for `fork` above). The kernel reads
    // `args`, which lives across the call, and its size is passed.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            size_of::<CloneArgs>(),
        )
    };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(pid as libc::pid_t)
}

/// The child's side: standard streams, namespaces, the cgroup (old kernels), the setup steps,
/// then exec. Only returns on failure.
fn child(plan: &ChildPlan<'_>, procs: Option<&OwnedFd>) -> io::Result<Infallible> {
    // SAFETY: both take values or a live local; the signal mask and dispositions are the
    // child's own. Rust ignores SIGPIPE, and an ignored signal stays ignored across exec.
    unsafe {
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    for (target, src) in (0..).zip(plan.stdio) {
        let Some(src) = src else { continue };
        // SAFETY: both take fds by value and touch no memory of ours; `src` is open (the caller
        // holds it across the fork), and `target` (0, 1 or 2) is replaced, as the caller asked.
        // dup2 onto itself would keep close-on-exec, so that case clears the flag instead.
        let ret = unsafe {
            if src == target {
                libc::fcntl(src, libc::F_SETFD, 0)
            } else {
                libc::dup2(src, target)
            }
        };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    if let Some(procs) = procs {
        // "0" is the writing process itself.
        nix::unistd::write(procs, b"0")?;
    }
    enter(plan.namespaces, plan.setup)?;
    // execvp(3)'s search, on paths made before the fork.
    let mut denied = false;
    for path in plan.candidates {
        // SAFETY: the path and both arrays are NUL-terminated and NULL-terminated, pointing
        // into strings the caller keeps alive; execve only returns on failure.
        unsafe { libc::execve(path.as_ptr(), plan.argv.as_ptr(), plan.envp.as_ptr()) };
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EACCES) => denied = true,
            Some(libc::ENOENT | libc::ENOTDIR) => {}
            _ => return Err(err),
        }
    }
    Err(io::Error::from_raw_os_error(if denied {
        libc::EACCES
    } else {
        libc::ENOENT
    }))
}

/// `OPEN_TREE_CLONE` and `MOVE_MOUNT_F_EMPTY_PATH` from `<linux/mount.h>`.
const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;

/// A detached copy of the mount tree at `fd` (a file or directory opened with `O_PATH` is
/// enough), recursive, close-on-exec: what `mount --rbind` would mount, taken now. It can be
/// attached once, in any mount namespace, with [`attach_tree`]; closed unattached, it is gone.
/// See open_tree(2) (Linux 5.2).
pub(crate) fn clone_tree(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let flags = OPEN_TREE_CLONE
        | libc::O_CLOEXEC as libc::c_uint
        | libc::AT_EMPTY_PATH as libc::c_uint
        | libc::AT_RECURSIVE as libc::c_uint;
    // SAFETY: the path is a static empty C string, the fd is borrowed for the call; the kernel
    // returns a new fd or -1 and writes no memory of ours.
    let ret = unsafe { libc::syscall(libc::SYS_open_tree, fd.as_raw_fd(), c"".as_ptr(), flags) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) })
}

/// Attaches the detached tree `tree` (from [`clone_tree`]) at `dst` in the caller's mount
/// namespace. Called between fork and exec: one system call on data prepared before the fork.
/// See move_mount(2).
pub(crate) fn attach_tree(tree: RawFd, dst: &std::ffi::CStr) -> io::Result<()> {
    // SAFETY: both paths are NUL-terminated C strings that live across the call (a static one
    // and the caller's); the kernel only reads them.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree,
            c"".as_ptr(),
            libc::AT_FDCWD,
            dst.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The credential changes of a child between fork and exec, as raw system calls.
///
/// glibc's `setgroups`/`setgid`/`setuid` wrappers apply the change to every thread of the process
/// (`__nptl_setxid`: they take the thread-list lock and signal each thread, then wait for it).
/// A child made by the raw clone3(2) above inherits glibc's view of the parent's threads and
/// its locks as they were at the clone: the wrapper then waits forever on threads that do not
/// exist in the child, or on a lock a thread of the parent held while creating a thread. The
/// kernel's calls change only the calling thread, which is all a single-threaded child has.
pub(crate) mod cred {
    use std::io;

    fn check(ret: libc::c_long) -> io::Result<()> {
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// setgroups(2) with the given list (empty: no supplementary groups).
    pub(crate) fn setgroups(groups: &[libc::gid_t]) -> io::Result<()> {
        // SAFETY: the kernel reads `len` gids from the pointer, which points into a live slice
        // of that length (a dangling but aligned pointer for an empty one, never read).
        check(unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) })
    }

    /// setresgid(2) with the same gid for the real, effective and saved ids.
    pub(crate) fn setresgid(gid: libc::gid_t) -> io::Result<()> {
        // SAFETY: takes three ids by value and touches no memory of ours.
        check(unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) })
    }

    /// setresuid(2) with the same uid for the real, effective and saved ids.
    pub(crate) fn setresuid(uid: libc::uid_t) -> io::Result<()> {
        // SAFETY: takes three ids by value and touches no memory of ours.
        check(unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) })
    }
}

/// Waits for child `pid` to end; its raw wait status. See waitpid(2).
pub(crate) fn wait(pid: u32) -> io::Result<i32> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ECHILD))?;
    let mut status = 0;
    loop {
        // SAFETY: waitpid writes one int through the pointer, which points to a live local.
        if unsafe { libc::waitpid(pid, &mut status, 0) } >= 0 {
            return Ok(status);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interfaces_address_in_one_call() {
        assert_eq!(
            interface_ipv4("lo").expect("lo"),
            Some(std::net::Ipv4Addr::LOCALHOST)
        );
        assert_eq!(interface_ipv4("podkit-none0").expect("missing"), None);
        assert!(interface_ipv4("").is_err());
        assert!(interface_ipv4("a-name-far-too-long").is_err());
    }

    /// The program's untouched pages are dropped from the resident set, and the code and its
    /// constants work the same after (each page mapped again on use).
    #[test]
    fn start_pages_are_released_and_mapped_again_on_use() {
        let file_rss = || -> u64 {
            let status = std::fs::read_to_string("/proc/self/status").expect("status");
            status
                .lines()
                .find_map(|l| l.strip_prefix("RssFile:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
                .expect("RssFile")
        };
        let before = file_rss();
        let released = release_start_pages().expect("madvise");
        let after = file_rss();
        assert!(released > 0, "nothing of the test program was released");
        assert!(after < before, "RssFile {before} kB -> {after} kB");
        // Code and read-only data of the program, used again.
        assert_eq!(format!("{:?}", interface_ipv4("lo")), "Ok(Some(127.0.0.1))");
    }
}
