//! The OCI runtime (runc by default; any runtime with runc's command line: crun, youki, runsc),
//! driven the way containerd's shim and CRI-O's conmon drive it. The supervisor is its own
//! conmon:
//!
//! - `RUNTIME --root ROOT --log LOG --log-format json create --bundle B --pid-file P ID`, started
//!   by podkit's own spawn straight into the container's cgroup, with the container's log pipes
//!   as its stdout and stderr (the runtime hands them to the container's process);
//! - the container's pid, read from P, watched by the reaper before `start`: the process is the
//!   supervisor's child once `create` exits (the supervisor is the child subreaper), and it
//!   cannot exit before `start` but by a signal, which the reaper's memory of orphans covers;
//! - `RUNTIME start ID`; signals go straight to the pid (the supervisor's own child, so the pid
//!   names it until the reaper collects it: no `RUNTIME kill` process for each signal);
//! - for a container whose turn to start has come by the time it is made, `run --detach` in
//!   place of `create` and `start`: one runtime process fewer (runc's `start` alone is a Go
//!   program's start, ~40 ms on the 2-core test machine); its process may exit before P is
//!   read, which the reaper's memory of orphans covers too;
//! - `RUNTIME delete -f ID` once it exited: its state and cgroups go.
//!
//! ROOT is the pod's own (`<pod dir>/runtime/<handler>`), so `podkit gc` finds what a killed
//! supervisor left with the pod. The runtime's own errors go to LOG (JSON lines), where a failed
//! `create` or `start` is explained from.
//!
//! crun refuses a hybrid cgroup host ("cgroups in hybrid mode not supported": v1 controllers
//! with a cgroup2 mount at /sys/fs/cgroup/unified). On one, crun runs in a mount namespace of its
//! own where that mount is gone, with `--cgroup-manager=disabled`: it then treats the host as
//! cgroup v1 and leaves the container in the cgroup podkit spawned it into. [`Invocation`] is
//! that recipe, shared by the supervisor and the CLI (`exec`, `gc`).

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use netns::{Process, Setup, Stdio};
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::sync::oneshot;
use tracing::{debug, warn};

use super::Pod;
use super::reaper::Exit;

/// The runtime podkit uses unless `runtimeClassName` names another or `PODKIT_RUNTIME` is set.
pub const DEFAULT_HANDLER: &str = "runc";

/// The variable that names the runtime of pods whose spec names no RuntimeClass.
pub const RUNTIME_VAR: &str = "PODKIT_RUNTIME";

/// The runtime of pods whose spec names no RuntimeClass when [`RUNTIME_VAR`] names one (`crun`:
/// a program on PATH, as a RuntimeClass's handler), as containerd's `default_runtime_name` and
/// CRI-O's `default_runtime` choose it for a node's pods; `None` when it is unset or empty
/// (then [`DEFAULT_HANDLER`]).
pub fn configured_handler() -> Result<Option<String>, String> {
    match std::env::var(RUNTIME_VAR) {
        Ok(handler) if !handler.is_empty() => match crate::spec::validate_handler(&handler) {
            Ok(()) => Ok(Some(handler)),
            Err(why) => Err(format!(
                "{RUNTIME_VAR}={handler:?} {why}: it names an OCI runtime as a RuntimeClass's \
                 handler does (crun, runc), a program found on PATH"
            )),
        },
        _ => Ok(None),
    }
}

/// Where a hybrid cgroup host mounts its cgroup2 hierarchy.
const UNIFIED: &str = "/sys/fs/cgroup/unified";

/// One OCI runtime program with the pod's state root for it.
#[derive(Debug, Clone)]
pub(crate) struct Runtime {
    /// `runc`, `crun`, ...: the handler a RuntimeClass names.
    pub handler: String,
    program: PathBuf,
    root: PathBuf,
    invocation: Invocation,
}

/// How the runtime program must be started on this host (see the module's comment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Invocation {
    Plain,
    /// crun on a hybrid cgroup host: its own mount namespace without [`UNIFIED`], and
    /// `--cgroup-manager=disabled`.
    WithoutUnified,
}

impl Invocation {
    /// The invocation `program` needs on this host.
    pub fn of(program: &Path) -> Invocation {
        let crun = program.file_name().is_some_and(|n| n == "crun");
        if crun && hybrid_cgroups() {
            Invocation::WithoutUnified
        } else {
            Invocation::Plain
        }
    }

    /// The runtime's global options this invocation adds.
    pub fn global_args(self) -> &'static [&'static str] {
        match self {
            Invocation::Plain => &[],
            Invocation::WithoutUnified => &["--cgroup-manager=disabled"],
        }
    }

    /// The steps before exec that this invocation takes, for podkit's spawn.
    fn setup(self) -> Setup {
        match self {
            Invocation::Plain => Setup::new(),
            Invocation::WithoutUnified => Setup::new()
                .new_mount_namespace()
                .unmount(Path::new(UNIFIED))
                .unwrap_or_default(),
        }
    }

    /// `program --root ROOT` as a std command (for the CLI), started as this invocation says.
    pub fn command(self, program: &Path, root: &Path) -> std::process::Command {
        let mut command = std::process::Command::new(program);
        command.args(self.global_args()).arg("--root").arg(root);
        if self == Invocation::WithoutUnified {
            netns::Namespaces::new(std::iter::empty()).command_with(&mut command, self.setup());
        }
        command
    }
}

/// Whether this host mixes cgroup v1 controllers with a cgroup2 mount at [`UNIFIED`].
fn hybrid_cgroups() -> bool {
    use nix::sys::statfs::{CGROUP2_SUPER_MAGIC, statfs};
    let is_cgroup2 =
        |path: &str| statfs(path).is_ok_and(|s| s.filesystem_type() == CGROUP2_SUPER_MAGIC);
    !is_cgroup2("/sys/fs/cgroup") && is_cgroup2(UNIFIED)
}

/// How the runtime makes a container: `create` leaves it waiting for `start`; `run --detach`
/// also starts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Make {
    Create,
    Run,
}

/// A container made by the runtime: created, or also started (see [`Make`]).
pub(crate) struct Created {
    pub pid: u32,
    pub exit: oneshot::Receiver<Exit>,
    /// The read ends of the container's stdout and stderr (of the runtime alone with a
    /// terminal).
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    /// The pty master of a `terminal: true` container, from the console socket.
    pub console: Option<OwnedFd>,
}

/// The console socket's name in the bundle.
const CONSOLE_SOCKET: &str = "console.sock";

/// How a short runtime (or podkit) command ended, and what it printed on stderr.
pub(crate) struct Output {
    pub exit: Exit,
    pub stderr: Vec<u8>,
}

impl Runtime {
    /// The runtime `handler`, found on the supervisor's `PATH`, with its state under `pod_dir`;
    /// `named_by` says where the name came from when it was not the pod's spec (an
    /// environment variable), for the error.
    pub fn find(handler: &str, named_by: Option<&str>, pod_dir: &Path) -> Result<Runtime, String> {
        let program = find_program(handler).ok_or_else(|| {
            let from = named_by.map_or_else(String::new, |by| format!(", named by {by},"));
            format!(
                "the OCI runtime {handler:?}{from} is not installed (not found on PATH; Debian's \
                 package is named {handler})"
            )
        })?;
        let root = root(pod_dir, handler);
        // Made now, so that `describe` and `gc` see which runtime the pod uses.
        std::fs::create_dir_all(&root)
            .map_err(|e| format!("failed to create {}: {e}", root.display()))?;
        Ok(Runtime {
            handler: handler.to_owned(),
            invocation: Invocation::of(&program),
            program,
            root,
        })
    }

    /// Whether the runtime writes a container's cgroup limits here: not crun on a hybrid host,
    /// which runs with `--cgroup-manager=disabled` (see [`Invocation`]).
    pub fn applies_limits(&self) -> bool {
        self.invocation == Invocation::Plain
    }

    /// The steps the runtime's process takes before exec (see [`Invocation`]).
    pub fn setup(&self) -> Setup {
        self.invocation.setup()
    }

    fn command(&self, log: Option<&Path>) -> Process {
        let mut process = Process::new(&self.program)
            .args(self.invocation.global_args())
            .arg("--root")
            .arg(&self.root)
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            );
        if let Some(log) = log {
            process = process.arg("--log").arg(log).args(["--log-format", "json"]);
        }
        process
    }

    /// `create`: the container's process made and waiting for `start`; or, with [`Make::Run`],
    /// `run --detach`: made and started. `stdin` is passed on to the container; with `console`
    /// (a `terminal: true` bundle) the runtime sends the pty it made to a console socket in the
    /// bundle, and [`Created::console`] holds its master.
    #[allow(clippy::too_many_arguments)]
    pub async fn create(
        &self,
        pod: &Pod,
        id: &str,
        bundle: &Path,
        cgroup: Option<Arc<OwnedFd>>,
        make: Make,
        stdin: Stdio,
        console: bool,
    ) -> Result<Created, String> {
        let log = bundle.join("runtime.log");
        let pid_file = bundle.join("container.pid");
        let verb: &[&str] = match make {
            Make::Create => &["create"],
            Make::Run => &["run", "--detach"],
        };
        let mut process = self
            .command(Some(&log))
            .args(verb)
            .arg("--bundle")
            .arg(bundle)
            .arg("--pid-file")
            .arg(&pid_file);
        let mut setup = self.setup();
        let listener = if console {
            // Named relative to the bundle, the runtime's working directory: a pod's bundle
            // path may be longer than a socket's address can be (108 bytes).
            let listener = console_socket(bundle)?;
            process = process.arg("--console-socket").arg(CONSOLE_SOCKET);
            setup = setup.chdir(bundle).map_err(|e| e.to_string())?;
            Some(listener)
        } else {
            None
        };
        let mut process = process
            .arg(id)
            .stdin(stdin)
            .stdout(Stdio::Pipe)
            .stderr(Stdio::Pipe);
        if let Some(cgroup) = cgroup {
            process = process.cgroup(cgroup);
        }
        let (started, exit) = spawn(pod, process, setup).await?;
        let (Some(stdout), Some(stderr)) = (started.stdout, started.stderr) else {
            return Err("the runtime's pipes were not made".to_owned());
        };
        let exit = exit.await.unwrap_or(Exit::Signal(9));
        if exit != Exit::Code(0) {
            return Err(format!(
                "{} {} failed ({exit}): {}",
                self.handler,
                verb[0],
                log_error(&log).unwrap_or_else(|| "no message in its log".to_owned())
            ));
        }
        let pid = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .ok_or_else(|| {
                format!(
                    "{} {} wrote no pid to {}",
                    self.handler,
                    verb[0],
                    pid_file.display()
                )
            })?;
        let exit = pod.reaper.watch(pid);
        // The runtime sent the pty before it exited: the message waits in the socket.
        let console = match listener {
            Some(listener) => match receive_console(&listener, bundle) {
                Ok(master) => Some(master),
                Err(err) => {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                    let _ = exit.await;
                    return Err(err);
                }
            },
            None => None,
        };
        Ok(Created {
            pid,
            exit,
            stdout,
            stderr,
            console,
        })
    }

    /// `start`: the created container's process execs its program.
    pub async fn start(&self, pod: &Pod, id: &str, bundle: &Path) -> Result<(), String> {
        let log = bundle.join("runtime.log");
        let command = self.command(Some(&log)).arg("start").arg(id);
        let out = output(pod, command, self.setup()).await?;
        if out.exit == Exit::Code(0) {
            return Ok(());
        }
        let message = log_error(&log)
            .or_else(|| text(&out.stderr))
            .unwrap_or_else(|| "no message".to_owned());
        Err(format!(
            "{} start failed ({}): {message}",
            self.handler, out.exit
        ))
    }

    /// `exec ID COMMAND...`: a command in the running container, as its process runs (user,
    /// capabilities, environment, working directory: runc and crun copy the container's).
    pub fn exec(&self, id: &str, command: &[String]) -> Process {
        self.command(None).arg("exec").arg(id).args(command)
    }

    /// `delete -f`: whatever is left of the container (its state, its cgroups, a process that
    /// outlived its first) goes. Failures are logged: there is nothing else to do about them.
    pub async fn delete(&self, pod: &Pod, id: &str) {
        let command = self.command(None).args(["delete", "-f"]).arg(id);
        match output(pod, command, self.setup()).await {
            Ok(out) if out.exit == Exit::Code(0) => debug!(id, "runtime state deleted"),
            Ok(out) => {
                let message = text(&out.stderr).unwrap_or_default();
                // Never created, or already gone: nothing to delete.
                if !message.contains("does not exist") {
                    warn!(id, exit = %out.exit, message, "the runtime failed to delete the container");
                }
            }
            Err(err) => warn!(id, err, "the runtime failed to delete the container"),
        }
    }
}

/// Listens on the bundle's console socket (bound through the directory's fd: the path is
/// short whatever the bundle's).
fn console_socket(bundle: &Path) -> Result<std::os::unix::net::UnixListener, String> {
    use nix::fcntl::OFlag;
    use std::os::fd::AsRawFd;
    let failed = |e: &dyn std::fmt::Display| {
        format!(
            "failed to make the console socket in {}: {e}",
            bundle.display()
        )
    };
    let _ = std::fs::remove_file(bundle.join(CONSOLE_SOCKET));
    let dir = nix::fcntl::open(
        bundle,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| failed(&e))?;
    let path = format!("/proc/self/fd/{}/{CONSOLE_SOCKET}", dir.as_raw_fd());
    std::os::unix::net::UnixListener::bind(path).map_err(|e| failed(&e))
}

/// The pty master the runtime sent to the console socket; the socket is removed.
fn receive_console(
    listener: &std::os::unix::net::UnixListener,
    bundle: &Path,
) -> Result<OwnedFd, String> {
    let received = (|| {
        listener.set_nonblocking(true)?;
        let (connection, _) = listener.accept()?;
        connection.set_nonblocking(false)?;
        // Sent already: a bound on the wait, never a hang.
        connection.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
        netns::receive_console(&connection)
    })();
    let _ = std::fs::remove_file(bundle.join(CONSOLE_SOCKET));
    match received {
        Ok(Some(master)) => Ok(master),
        Ok(None) => Err("the runtime sent no terminal to its console socket".to_owned()),
        Err(err) => Err(format!(
            "failed to receive the container's terminal from the runtime's console socket: {err}"
        )),
    }
}

/// The runtime's state root for `handler` in the pod's directory.
pub(crate) fn root(pod_dir: &Path, handler: &str) -> PathBuf {
    pod_dir.join("runtime").join(handler)
}

/// The container id podkit gives the runtime: `POD_CONTAINER` (neither name can hold `_`).
pub(crate) fn container_id(pod: &str, container: &str) -> String {
    format!("{pod}_{container}")
}

/// `name` searched in the supervisor's `PATH` (or the default one), or a path as given.
fn find_program(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if name.contains('/') {
        return Some(PathBuf::from(name));
    }
    let path = std::env::var("PATH")
        .unwrap_or_else(|_| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    path.split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(name))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Starts `process` on the host (none of the pod's namespaces) as the supervisor's child,
/// watched by the reaper from its birth, after the `setup` steps.
pub(crate) async fn spawn(
    pod: &Pod,
    process: Process,
    setup: Setup,
) -> Result<(netns::Started, oneshot::Receiver<Exit>), String> {
    let program = process.program().to_string_lossy().into_owned();
    let host = netns::Namespaces::new(std::iter::empty());
    let (pending, exit) = pod
        .reaper
        .spawn(|| {
            let pending = host.begin(process, setup)?;
            Ok::<_, netns::Error>((pending.pid(), pending))
        })
        .map_err(|e| format!("failed to start {program}: {e}"))?;
    let started = pending
        .exec()
        .await
        .map_err(|e| format!("failed to start {program}: {e}"))?;
    Ok((started, exit))
}

/// [`output`] (with the stdin `process` was given), unless `stop` comes first: then the process
/// is killed and `None` returned.
pub(crate) async fn output_until(
    pod: &Pod,
    process: Process,
    stop: &tokio_util::sync::CancellationToken,
) -> Result<Option<Output>, String> {
    let process = process.stdout(Stdio::Null).stderr(Stdio::Pipe);
    let (started, exit) = spawn(pod, process, Setup::new()).await?;
    // Opened before the process can be reaped (its exit is only read below): it names this
    // process whatever happens to its pid.
    let pidfd = netns::PidFd::open(started.pid);
    let collect = collect(started, exit);
    tokio::select! {
        out = collect => Ok(Some(out)),
        () = stop.cancelled() => {
            if let Ok(pidfd) = &pidfd {
                let _ = pidfd.signal(nix::sys::signal::Signal::SIGKILL);
            }
            Ok(None)
        }
    }
}

/// Runs `process` on the host to its end, after the `setup` steps, collecting what it prints
/// on stderr.
pub(crate) async fn output(pod: &Pod, process: Process, setup: Setup) -> Result<Output, String> {
    let process = process
        .stdin(Stdio::Null)
        .stdout(Stdio::Null)
        .stderr(Stdio::Pipe);
    let (started, exit) = spawn(pod, process, setup).await?;
    Ok(collect(started, exit).await)
}

/// Reads a started process's stderr to its end, then its exit.
async fn collect(started: netns::Started, exit: oneshot::Receiver<Exit>) -> Output {
    let mut stderr = Vec::new();
    if let Some(fd) = started.stderr
        && let Ok(mut pipe) = pipe::Receiver::from_owned_fd(fd)
    {
        let _ = pipe.read_to_end(&mut stderr).await;
    }
    let exit = exit.await.unwrap_or(Exit::Signal(9));
    Output { exit, stderr }
}

/// The last error the runtime wrote to its JSON log (runc's and crun's
/// `{"level":"error","msg":"..."}` lines).
fn log_error(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .rev()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|entry| entry["level"] == "error" || entry["level"] == "fatal")
        .and_then(|entry| entry["msg"].as_str().map(str::to_owned))
}

/// Printed bytes as one line of text, if any.
fn text(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes).trim().replace('\n', "; ");
    (!text.is_empty()).then_some(text)
}
