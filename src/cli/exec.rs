//! `podkit exec`: a command inside a running container, with a terminal (`-t`) or stdin
//! (`-i`) as kubectl gives them.

use std::io::{IsTerminal, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use netns::{Namespace, Namespaces, NsKind, Process, Setup, Started, Stdio};
use nix::sys::termios::{self, SetArg, Termios};

use crate::state;

/// Run a command inside a container of a pod.
///
/// The command joins the container's namespaces (network, IPC, UTS, PID, mount: it sees the
/// container's volumes and processes), with its environment and working directory. Its exit code
/// is podkit's.
///
/// With -it the command gets a terminal of its own (a pty, the size of yours, resized with it)
/// as its controlling terminal, and your terminal is in raw mode until it ends: for shells and
/// full-screen programs. With -i alone it reads your stdin; without -i its stdin is empty.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  podkit exec web -- cat /etc/hostname
  podkit exec web -c proxy -- sh -c 'ls /content'
  podkit exec -it web -- sh                       (a shell in the pod; exit to leave)
  tar c site | podkit exec -i web -- tar x -C /content

Exit codes: the command's own; 128+N when a signal N ended it; 127 when the command was not
found and 126 when it could not be run (as shells give them); 1 when podkit failed (pod or
container not found or not running).")]
pub struct ExecArgs {
    /// The pod.
    pod: String,

    /// Pass stdin to the command.
    #[arg(short = 'i', long)]
    stdin: bool,

    /// Give the command a terminal (with -i, when stdin is a terminal).
    #[arg(short = 't', long)]
    tty: bool,

    /// The container (default: the pod's first container).
    #[arg(short, long)]
    container: Option<String>,

    /// The pod's namespace.
    #[arg(short = 'n', long, value_name = "NAMESPACE", default_value = "default")]
    namespace: String,

    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

pub fn exec(root: &Path, args: ExecArgs) -> anyhow::Result<ExitCode> {
    let pod = state::read(root, &args.namespace, &args.pod)?;
    let containers: Vec<String> = pod.manifest["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(
            pod.manifest["spec"]["initContainers"]
                .as_array()
                .into_iter()
                .flatten(),
        )
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect();
    let container = match args.container {
        Some(name) if containers.contains(&name) => name,
        Some(name) => bail!(
            "container {name:?} is not valid for pod {:?}: choose one of: {}",
            pod.name,
            containers.join(", ")
        ),
        None => containers
            .first()
            .context("the pod has no containers")?
            .clone(),
    };
    // An image container: through its OCI runtime, as `kubectl exec` goes through the CRI
    // runtime: in its root filesystem and namespaces, as its user, with its capabilities.
    let id = crate::supervisor::runtime::container_id(&pod.key(), &container);
    for (handler, root) in crate::supervisor::image::runtime_roots(&pod.dir) {
        if !root.join(&id).exists() {
            continue;
        }
        let program = Path::new(&handler);
        let mut command =
            crate::supervisor::runtime::Invocation::of(program).command(program, &root);
        command.arg("exec");
        if args.tty && args.stdin && std::io::stdin().is_terminal() {
            command.arg("--tty");
        }
        if !args.stdin {
            command.stdin(std::process::Stdio::null());
        }
        let status = command
            .arg(&id)
            .args(&args.command)
            .status()
            .with_context(|| format!("failed to run the OCI runtime {handler}"))?;
        return Ok(exit_code(status));
    }
    let pid_file = pod.dir.join("members").join(format!("{container}.pid"));
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .with_context(|| {
            format!(
                "container {container:?} of pod {:?} is not running",
                pod.name
            )
        })?;

    let mut kinds = vec![NsKind::Net, NsKind::Ipc, NsKind::Uts, NsKind::Mnt];
    if pod.dir.join("ns/pid").exists() {
        kinds.push(NsKind::Pid);
    }
    let namespaces = Namespaces::new(
        kinds
            .into_iter()
            .map(|kind| Namespace::from_pid(kind, pid))
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| {
                format!(
                    "container {container:?} of pod {:?} is not running",
                    pod.name
                )
            })?,
    );
    // The container's own environment and directory, as it has them now.
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    let env: Vec<(String, String)> = environ
        .split(|b| *b == 0)
        .filter_map(|kv| {
            let kv = String::from_utf8(kv.to_vec()).ok()?;
            let (k, v) = kv.split_once('=')?;
            Some((k.to_owned(), v.to_owned()))
        })
        .collect();
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_else(|_| "/".into());
    // Who it runs as, its bounding set and no_new_privs, as its main process has them (a host
    // process's securityContext): the command gets no capability the container lacks.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
    };
    let id = |name: &str| field(name).and_then(|v| v.parse::<u32>().ok());
    let (uid, gid) = (id("Uid:"), id("Gid:"));
    let drops: Vec<u32> = match crate::supervisor::member::bounding_set(&status) {
        Some(bits) => (0..=oci::bundle::last_capability())
            .filter(|cap| bits & (1 << cap) == 0)
            .collect(),
        None => Vec::new(),
    };
    let no_new_privs = field("NoNewPrivs:") == Some("1");
    // kubectl's rules: a terminal only with stdin, and only when stdin is one.
    let tty = match (args.tty, args.stdin) {
        (true, true) if std::io::stdin().is_terminal() => true,
        (true, true) => {
            eprintln!("Unable to use a TTY - input is not a terminal or the right kind of file");
            false
        }
        (true, false) => {
            eprintln!("Unable to use a TTY without -i (stdin): running without one");
            false
        }
        _ => false,
    };
    let mut setup = Setup::new();
    if tty {
        setup = setup.controlling_terminal();
    }
    setup = setup.drop_bounding(drops);
    if no_new_privs {
        setup = setup.no_new_privileges();
    }
    let setup = setup
        .chdir(&cwd)?
        .user(uid.filter(|u| *u != 0), gid.filter(|g| *g != 0));

    let mut process = Process::new(&args.command[0])
        .args(&args.command[1..])
        .envs(env);
    // In the container's cgroup, as `kubectl exec` is: it ends with the container.
    if let Some(cgroup) = crate::supervisor::cgroup::open_container(&pod.dir, &container) {
        process = process.cgroup(cgroup);
    }
    let failed = || {
        format!(
            "failed to run {:?} in container {container:?}",
            args.command[0]
        )
    };
    let status = match run_command(process, setup, &namespaces, tty, args.stdin, failed) {
        Ok(status) => status,
        Err(err) => {
            let Some(code) = cannot_run_code(&err) else {
                return Err(err);
            };
            eprintln!("error: {err:#}");
            return Ok(ExitCode::from(code));
        }
    };
    Ok(exit_code(status))
}

/// The command's exit status as this process's: 128 + the signal for a killed one, as shells
/// report it.
fn exit_code(status: std::process::ExitStatus) -> ExitCode {
    match status.code() {
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => {
            let signal = std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0);
            ExitCode::from(u8::try_from(128 + signal).unwrap_or(1))
        }
    }
}

/// Starts the command (on a terminal with `tty`) and waits for it.
fn run_command(
    mut process: Process,
    setup: Setup,
    namespaces: &Namespaces,
    tty: bool,
    stdin: bool,
    failed: impl Fn() -> String,
) -> anyhow::Result<std::process::ExitStatus> {
    let has_term = process.get_env("TERM").is_some();
    Ok(if tty {
        // What the command draws depends on the terminal: tell it which one, as docker does.
        if !has_term && let Some(term) = std::env::var_os("TERM") {
            process = process.env("TERM", term);
        }
        with_terminal(process, |process| {
            namespaces.start(process, setup).with_context(failed)
        })?
    } else {
        let stdin = if stdin { Stdio::Inherit } else { Stdio::Null };
        let process = process
            .stdin(stdin)
            .stdout(Stdio::Inherit)
            .stderr(Stdio::Inherit);
        let child = namespaces.start(process, setup).with_context(failed)?;
        child.wait()?
    })
}

/// The exit code for a command that could not be run, as shells (and docker exec) give it:
/// 127 when it was not found, 126 when it could not be run; `None` for other failures.
fn cannot_run_code(err: &anyhow::Error) -> Option<u8> {
    err.chain()
        .find_map(|e| match e.downcast_ref::<netns::Error>()? {
            netns::Error::Spawn { source, .. } => match source.raw_os_error() {
                Some(nix::libc::ENOENT) => Some(127),
                _ => Some(126),
            },
            _ => None,
        })
}

/// Runs `process` (started by `spawn`) on a new pty whose slave end is its stdin, stdout and stderr
/// (the child makes it its controlling terminal), relaying this terminal to the master end in
/// raw mode, and window size changes with it. The terminal is restored however this ends.
fn with_terminal(
    process: Process,
    spawn: impl FnOnce(Process) -> anyhow::Result<Started>,
) -> anyhow::Result<std::process::ExitStatus> {
    let stdin = std::io::stdin();
    let size = netns::window_size(stdin.as_fd()).ok();
    let pty = nix::pty::openpty(size.as_ref(), None).context("failed to open a pty")?;
    let slave = |what| {
        pty.slave
            .try_clone()
            .with_context(|| format!("failed to hand the pty to the command's {what}"))
    };
    let process = process
        .stdin(Stdio::Fd(slave("stdin")?))
        .stdout(Stdio::Fd(slave("stdout")?))
        .stderr(Stdio::Fd(slave("stderr")?));
    // Only the child holds the slave end once `spawn` returns: when it (and what it started)
    // is gone, reading the master fails with EIO.
    let child = spawn(process)?;
    drop(pty.slave);
    let master = pty.master;

    let _raw = RawMode::enter(&stdin)?;
    // SIGWINCH is taken by a thread of its own (sigwait); blocked here before the threads start,
    // so every thread inherits the block and the signal waits for that one.
    let winch = nix::sys::signal::SigSet::from(nix::sys::signal::Signal::SIGWINCH);
    winch.thread_block().context("failed to block SIGWINCH")?;
    let resize_master = master.try_clone()?;
    std::thread::spawn(move || {
        while winch.wait().is_ok() {
            if let Ok(size) = netns::window_size(std::io::stdin().as_fd()) {
                let _ = netns::set_window_size(&resize_master, &size);
            }
        }
    });
    // Keys to the command, as they come (the local terminal is raw: Ctrl-C is a byte too).
    let mut to_master = std::fs::File::from(master.try_clone()?);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut stdin = std::io::stdin().lock();
        while let Ok(n) = stdin.read(&mut buf) {
            if n == 0 || to_master.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    // The child's end is told through a pipe, so the relay below can wait on both.
    let (woken, wake) = nix::unistd::pipe().context("failed to make a pipe")?;
    let waiter = std::thread::spawn(move || {
        let status = child.wait();
        drop(wake);
        status
    });
    relay(&master, &woken)?;
    let status = waiter
        .join()
        .map_err(|_| anyhow::anyhow!("the thread waiting for the command panicked"))??;
    Ok(status)
}

/// Copies the pty's output to stdout until the pty is closed (EIO) or, once the command ended
/// (`woken` readable), what it wrote is drained.
fn relay(master: &OwnedFd, woken: &OwnedFd) -> anyhow::Result<()> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut out = std::io::stdout().lock();
    let mut buf = [0u8; 16 * 1024];
    let mut ended = false;
    loop {
        if !ended {
            let mut fds = [
                PollFd::new(master.as_fd(), PollFlags::POLLIN),
                PollFd::new(woken.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::Error::EINTR) => continue,
                Err(err) => return Err(err).context("failed to wait on the pty"),
            }
            ended = fds[1].any().unwrap_or(false);
            let readable = fds[0].any().unwrap_or(false);
            if !readable && !ended {
                continue;
            }
            if ended {
                // Drain without blocking: what the command wrote before it ended.
                nix::fcntl::fcntl(
                    master.as_fd(),
                    nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
                )?;
            }
        }
        match nix::unistd::read(master.as_fd(), &mut buf) {
            // Every holder of the slave end closed it: nothing more comes.
            Ok(0) | Err(nix::Error::EIO) => return Ok(()),
            // Drained (non-blocking once the command ended).
            Err(nix::Error::EAGAIN) if ended => return Ok(()),
            Err(nix::Error::EAGAIN | nix::Error::EINTR) => {}
            Ok(n) => {
                out.write_all(&buf[..n])?;
                out.flush()?;
            }
            Err(err) => return Err(err).context("failed to read the pty"),
        }
    }
}

/// The local terminal (stdin) in raw mode, as `stty raw -echo` makes it, until dropped: then
/// as it was, also when podkit fails or panics on the way.
pub(super) struct RawMode {
    saved: Termios,
}

impl RawMode {
    pub(super) fn enter(stdin: &std::io::Stdin) -> anyhow::Result<RawMode> {
        let saved =
            termios::tcgetattr(stdin.as_fd()).context("failed to read the terminal's mode")?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw)
            .context("failed to put the terminal in raw mode")?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSADRAIN, &self.saved);
    }
}
