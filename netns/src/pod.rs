//! A pod's namespaces: created together, pinned under one directory, deleted together.

use std::fs;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;
use nix::sys::wait::{WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use rtnetlink::sys::{AsyncSocket, TokioSocket, protocols::NETLINK_ROUTE};
use tracing::debug;

use crate::namespace::NETNS_RUN_DIR;
use crate::pin::{ensure_netns_run_dir, pin, unpin};
use crate::{Error, Namespace, Namespaces, Netlink, NsKind, Result, sys};

/// The kinds every pod has; PID is added on request.
const POD_KINDS: [NsKind; 3] = [NsKind::Net, NsKind::Ipc, NsKind::Uts];

/// Where the pid of the PID namespace's init is kept, so a later delete can end it.
const INIT_PID_FILE: &str = "init.pid";

/// How long delete waits for the init of a PID namespace to die after SIGKILL.
const INIT_EXIT_TIMEOUT: Duration = Duration::from_secs(5);

/// The namespaces of one pod: network (with `lo` up), IPC, UTS (with the pod's hostname) and
/// optionally PID, each pinned at `DIR/<kind>`, the network one also at `/run/netns/NAME`.
///
/// Dropping the handle leaves the pod in place (the pins keep it); [`PodNamespaces::delete`]
/// removes it, and [`PodNamespaces::remove`] removes one whose creator is gone.
#[derive(Debug)]
pub struct PodNamespaces {
    name: String,
    dir: PathBuf,
    namespaces: Namespaces,
    /// Pid (in the host's PID namespace) of PID 1 of the pod's PID namespace, if it has one.
    init_pid: Option<u32>,
    /// That same process when this handle started it: kept so that delete can reap it.
    init: Option<Child>,
}

/// What to create: see [`PodNamespaces::builder`].
#[derive(Debug)]
pub struct PodNamespacesBuilder {
    name: String,
    dir: PathBuf,
    hostname: Option<String>,
    pid_init: Option<Command>,
    run_netns: bool,
    /// Kinds the pod shares with the host (`hostNetwork`, `hostIPC`): pinned, not made.
    host: Vec<NsKind>,
}

impl PodNamespacesBuilder {
    /// Shares the host's namespace of `kind` (net, IPC or UTS) instead of making one: its pin
    /// is the host's, as `hostNetwork` and `hostIPC` pods see the host's. A pod sharing the
    /// host's UTS namespace keeps the host's hostname (none is set); one sharing its network
    /// gets no `/run/netns/NAME` and touches no link.
    pub fn share_host(mut self, kind: NsKind) -> Self {
        if !self.host.contains(&kind) {
            self.host.push(kind);
        }
        self
    }

    /// The hostname seen inside the pod (`uname -n`); defaults to the pod's name.
    pub fn hostname(mut self, hostname: impl Into<String>) -> Self {
        self.hostname = Some(hostname.into());
        self
    }

    /// Gives the pod its own PID namespace, with `init` started as its PID 1. Once `init` exits,
    /// no process can start in that namespace any more, so `init` should be a process that lives
    /// as long as the pod and reaps orphans (a pause process).
    ///
    /// `init` is started from a thread that ends right after: do not give it
    /// `PR_SET_PDEATHSIG`, which fires when that thread ends.
    pub fn pid_namespace(mut self, init: Command) -> Self {
        self.pid_init = Some(init);
        self
    }

    /// Whether to also pin the network namespace at `/run/netns/NAME`, so that
    /// `ip netns exec NAME ...` works (default: yes).
    pub fn run_netns(mut self, enabled: bool) -> Self {
        self.run_netns = enabled;
        self
    }

    /// Creates the namespaces, pins them and brings `lo` up. Needs a tokio runtime (for netlink)
    /// and CAP_SYS_ADMIN. On failure nothing is left behind, or [`Error::Cleanup`] names what
    /// is.
    pub async fn create(self) -> Result<PodNamespaces> {
        crate::validate_name(&self.name)?;
        let hostname = match self.hostname {
            Some(hostname) => hostname,
            None => default_hostname(&self.name),
        };
        if !self.host.contains(&NsKind::Uts) {
            validate_hostname(&hostname)?;
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        if self.run_netns {
            ensure_netns_run_dir()?;
        }

        let (name, dir) = (self.name.clone(), self.dir.clone());
        let host_net = self.host.contains(&NsKind::Net);
        let plan = Plan {
            name: self.name,
            dir: self.dir,
            hostname,
            pid_init: self.pid_init,
            run_netns: self.run_netns && !host_net,
            host: self.host,
        };
        // unshare(2) moves only the calling thread: do it on a thread of our own, which ends
        // once the namespaces are pinned. The caller awaits it without blocking a worker.
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (thread_name, thread_dir) = (name.clone(), dir.clone());
        std::thread::Builder::new()
            .name("podkit-ns-create".into())
            .spawn(move || {
                let _runtime = runtime.enter();
                // The pod travels inside its guard: if the caller stopped waiting (its future
                // was dropped), before or after this send, dropping the result undoes the pod.
                let result = plan.execute().map(|(socket, init)| {
                    (socket, Unfinished::new(&thread_name, &thread_dir, init))
                });
                drop(tx.send(result));
            })
            .map_err(|source| Error::Thread {
                path: dir.clone(),
                source,
            })?;
        // From here on, a failure or a dropped future removes the pod again (`unfinished`).
        let (socket, unfinished) = rx
            .await
            .map_err(|_| Error::ThreadPanicked { path: dir.clone() })??;
        let finish = async {
            if !host_net {
                Netlink::from_socket(socket, dir.join("net"))
                    .link_up("lo")
                    .await?;
            }
            Namespaces::open_dir(&dir, unfinished.init.is_some())
        };
        match finish.await {
            Ok(namespaces) => {
                let init = unfinished.keep();
                Ok(PodNamespaces {
                    name,
                    dir,
                    namespaces,
                    init_pid: init.as_ref().map(Child::id),
                    init,
                })
            }
            Err(error) => Err(undo(error, unfinished.undo())),
        }
    }
}

/// The part of creation that runs on the dedicated thread.
struct Plan {
    name: String,
    dir: PathBuf,
    hostname: String,
    pid_init: Option<Command>,
    run_netns: bool,
    host: Vec<NsKind>,
}

impl Plan {
    fn execute(mut self) -> Result<(TokioSocket, Option<Child>)> {
        let mut made = Made::default();
        match self.steps(&mut made) {
            Ok(socket) => Ok((socket, made.init)),
            Err(error) => Err(undo(error, made.undo(&self.dir))),
        }
    }

    fn steps(&mut self, made: &mut Made) -> Result<TokioSocket> {
        if !self.dir.exists() {
            fs::create_dir_all(&self.dir).map_err(|source| Error::CreateDir {
                path: self.dir.clone(),
                source,
            })?;
            made.dir = true;
        }
        let mut flags = CloneFlags::empty();
        for kind in POD_KINDS {
            if !self.host.contains(&kind) {
                flags |= kind.clone_flag();
            }
        }
        if self.pid_init.is_some() {
            flags |= CloneFlags::CLONE_NEWPID;
        }
        nix::sched::unshare(flags).map_err(|source| Error::Unshare {
            kinds: kinds_label(flags),
            source,
        })?;
        // Never in the host's UTS namespace: that would rename the host.
        if !self.host.contains(&NsKind::Uts) {
            nix::unistd::sethostname(&self.hostname).map_err(|source| Error::Sethostname {
                hostname: self.hostname.clone(),
                source,
            })?;
        }

        // A kind shared with the host was not unshared: this thread's is the host's.
        for kind in POD_KINDS {
            let path = self.dir.join(kind.proc_name());
            pin(&thread_ns(kind), &path)?;
            made.files.push(path);
        }
        if self.run_netns {
            let path = Path::new(NETNS_RUN_DIR).join(&self.name);
            pin(&thread_ns(NsKind::Net), &path)?;
            made.files.push(path);
        }

        // The socket belongs to the namespace of the thread that creates it: this one.
        let socket = TokioSocket::new(NETLINK_ROUTE).map_err(|source| Error::NetlinkSocket {
            path: self.dir.join("net"),
            source,
        })?;

        if let Some(mut cmd) = self.pid_init.take() {
            // The first child of a thread after unshare(CLONE_NEWPID) is PID 1 of the new
            // namespace; it also inherits this thread's net, IPC and UTS namespaces.
            let child = cmd.spawn().map_err(|source| Error::SpawnInit {
                program: cmd.get_program().to_string_lossy().into_owned(),
                source,
            })?;
            let pid = child.id();
            made.init = Some(child);
            // Recorded before anything else, so a crash from here on leaves a findable init.
            let pid_file = self.dir.join(INIT_PID_FILE);
            write_atomic(&pid_file, &pid.to_string())?;
            made.files.push(pid_file);
            let path = self.dir.join("pid");
            pin(Path::new(&format!("/proc/{pid}/ns/pid")), &path)?;
            made.files.push(path);
        }
        Ok(socket)
    }
}

/// What one create made so far, so that a failure undoes exactly that: a file that existed
/// already (a pin of a pod of the same name) is someone else's.
#[derive(Default)]
struct Made {
    dir: bool,
    files: Vec<PathBuf>,
    init: Option<Child>,
}

impl Made {
    /// Undoes every step, also after one of them failed; reports the first failure.
    fn undo(&mut self, dir: &Path) -> Result<()> {
        let mut results = vec![kill_init(self.init.take())];
        results.extend(self.files.iter().rev().map(|path| unpin(path).map(drop)));
        if self.dir {
            results.push(fs::remove_dir(dir).map_err(|source| Error::Remove {
                path: dir.to_path_buf(),
                source,
            }));
        }
        results.into_iter().collect()
    }
}

/// A pod whose creation has not finished: dropped (a failure, or the caller's future dropped),
/// it removes the pod again.
struct Unfinished {
    name: String,
    dir: PathBuf,
    init: Option<Child>,
    done: bool,
}

impl Unfinished {
    fn new(name: &str, dir: &Path, init: Option<Child>) -> Self {
        Unfinished {
            name: name.to_owned(),
            dir: dir.to_path_buf(),
            init,
            done: false,
        }
    }

    /// Creation succeeded: keep the pod, hand over its init.
    fn keep(mut self) -> Option<Child> {
        self.done = true;
        self.init.take()
    }

    fn undo(mut self) -> Result<()> {
        self.done = true;
        let killed = kill_init(self.init.take());
        PodNamespaces::remove(&self.name, &self.dir)
            .map(drop)
            .and(killed)
    }
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if !self.done {
            let _ = kill_init(self.init.take());
            let _ = PodNamespaces::remove(&self.name, &self.dir);
        }
    }
}

impl PodNamespaces {
    /// Starts describing a pod named `name` whose pins go in `dir` (created if missing; it
    /// should be the pod's own, such as `/run/podkit/pods/NAME/ns`).
    pub fn builder(name: impl Into<String>, dir: impl Into<PathBuf>) -> PodNamespacesBuilder {
        PodNamespacesBuilder {
            name: name.into(),
            dir: dir.into(),
            hostname: None,
            host: Vec::new(),
            pid_init: None,
            run_netns: true,
        }
    }

    /// Opens the namespaces of an existing pod from its pin directory.
    pub fn open(name: impl Into<String>, dir: impl Into<PathBuf>) -> Result<Self> {
        let name = name.into();
        crate::validate_name(&name)?;
        let dir = dir.into();
        let has_pid = dir.join("pid").exists();
        let namespaces = Namespaces::open_dir(&dir, has_pid)?;
        let init_pid = has_pid
            .then(|| fs::read_to_string(dir.join(INIT_PID_FILE)).ok())
            .flatten()
            .and_then(|s| s.trim().parse().ok());
        Ok(PodNamespaces {
            name,
            dir,
            namespaces,
            init_pid,
            init: None,
        })
    }

    /// The pod's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The directory holding the pins.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// All of the pod's namespaces, to spawn into or run code in.
    pub fn namespaces(&self) -> &Namespaces {
        &self.namespaces
    }

    /// The pod's network namespace.
    pub fn net(&self) -> &Namespace {
        self.namespaces
            .get(NsKind::Net)
            .unwrap_or_else(|| unreachable!("every pod has a network namespace"))
    }

    /// The host pid of PID 1 of the pod's PID namespace, if the pod has one.
    pub fn init_pid(&self) -> Option<u32> {
        self.init_pid
    }

    /// Starts `cmd` inside the pod: see [`Namespaces::spawn`].
    pub fn spawn(&self, cmd: &mut Command) -> Result<Child> {
        self.namespaces.spawn(cmd)
    }

    /// Starts `cmd` inside the pod after the `setup` steps: see [`Namespaces::spawn_with`].
    pub fn spawn_with(&self, cmd: &mut Command, setup: crate::Setup) -> Result<Child> {
        self.namespaces.spawn_with(cmd, setup)
    }

    /// Starts `process` inside the pod after the `setup` steps: see [`Namespaces::start`].
    pub fn start(&self, process: crate::Process, setup: crate::Setup) -> Result<crate::Started> {
        self.namespaces.start(process, setup)
    }

    /// Forks `process` inside the pod, not waiting for its exec: see [`Namespaces::begin`].
    pub fn begin(&self, process: crate::Process, setup: crate::Setup) -> Result<crate::Pending> {
        self.namespaces.begin(process, setup)
    }

    /// A netlink handle inside the pod's network namespace: see [`Namespace::netlink`].
    pub async fn netlink(&self) -> Result<Netlink> {
        self.net().netlink().await
    }

    /// Deletes the pod's namespaces: ends its PID 1 (and so every process of its PID namespace),
    /// unmounts and removes the pins. The namespaces themselves go away once the last process
    /// and socket in them is gone. Returns a line for each thing removed.
    pub fn delete(mut self) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        if let Some(child) = self.init.take() {
            removed.push(format!("killed pid {} (PID 1 of the pod)", child.id()));
            kill_init(Some(child))?;
        }
        let (name, dir) = (
            std::mem::take(&mut self.name),
            std::mem::take(&mut self.dir),
        );
        drop(self);
        removed.extend(PodNamespaces::remove(&name, &dir)?);
        Ok(removed)
    }

    /// Deletes the pod named `name` pinned in `dir` without a handle: after its creator
    /// crashed, or to finish a delete that was cut short. Idempotent: a pod that is already
    /// gone is not an error. Returns a line for each thing removed.
    ///
    /// `/run/netns/NAME` is removed unless it pins another namespace than `DIR/net` (then it
    /// is someone else's, made by `ip netns add` perhaps).
    pub fn remove(name: &str, dir: &Path) -> Result<Vec<String>> {
        crate::validate_name(name)?;
        let mut removed = Vec::new();
        if !dir.exists() {
            return Ok(removed);
        }
        if let Some(pid) = end_pinned_init(dir)? {
            removed.push(format!("killed pid {pid} (PID 1 of the pod)"));
        }
        let run_netns = Path::new(NETNS_RUN_DIR).join(name);
        if owns_run_netns(dir, &run_netns) && unpin(&run_netns)? {
            removed.push(format!("unmounted and removed {}", run_netns.display()));
        }
        for kind in [
            NsKind::Pid,
            NsKind::Uts,
            NsKind::Ipc,
            NsKind::Net,
            NsKind::Mnt,
        ] {
            let path = dir.join(kind.proc_name());
            if unpin(&path)? {
                removed.push(format!("unmounted and removed {}", path.display()));
            }
        }
        remove_file_if_exists(&dir.join(INIT_PID_FILE))?;
        match fs::remove_dir(dir) {
            Ok(()) => removed.push(format!("removed {}", dir.display())),
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(Error::Remove {
                    path: dir.to_path_buf(),
                    source,
                });
            }
        }
        debug!(pod = %name, ?removed, "deleted pod namespaces");
        Ok(removed)
    }
}

/// Checks a hostname as sethostname(2) and RFC 1123 want it.
fn validate_hostname(hostname: &str) -> Result<()> {
    let reason = if hostname.is_empty() {
        Some("must not be empty")
    } else if hostname.len() > 64 {
        Some("longer than 64 bytes (HOST_NAME_MAX)")
    } else if !hostname
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        Some("may contain only letters, digits, '-' and '.' (RFC 1123)")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidHostname {
            hostname: hostname.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

fn thread_ns(kind: NsKind) -> PathBuf {
    PathBuf::from(format!("/proc/thread-self/ns/{}", kind.proc_name()))
}

fn kinds_label(flags: CloneFlags) -> String {
    NsKind::ALL
        .iter()
        .filter(|kind| flags.contains(kind.clone_flag()))
        .map(|kind| kind.proc_name())
        .collect::<Vec<_>>()
        .join("+")
}

/// The error that made us undo, plus the undo's own error if it failed too.
pub(crate) fn undo<T>(error: Error, cleanup: Result<T>) -> Error {
    match cleanup {
        Ok(_) => error,
        Err(cleanup) => Error::Cleanup {
            error: Box::new(error),
            cleanup: Box::new(cleanup),
        },
    }
}

/// Kills the pod's PID 1, which makes the kernel kill every other process of its namespace.
/// Reaps it if it is gone at once; otherwise a thread reaps it later: the kernel holds a dying
/// PID 1 until the caller has reaped the members it started, which may come after delete.
fn kill_init(init: Option<Child>) -> Result<()> {
    let Some(mut child) = init else {
        return Ok(());
    };
    let pid = child.id();
    // std's Child::kill is kill(2) on a pid that cannot be reused before we reap it.
    if let Err(err) = child.kill()
        && err.kind() != io::ErrorKind::InvalidInput
    {
        let errno = err.raw_os_error().unwrap_or(libc::EIO);
        return Err(Error::Kill {
            pid,
            source: nix::Error::from_raw(errno),
        });
    }
    if !matches!(child.try_wait(), Ok(Some(_))) {
        let reaper = std::thread::Builder::new().name("podkit-ns-reap".into());
        // Without a thread the init stays a zombie until this process exits: harmless.
        let _ = reaper.spawn(move || child.wait());
    }
    Ok(())
}

/// Ends the PID 1 recorded in `DIR/init.pid`, if that pid still names a process inside the
/// pod (its network namespace, and its PID namespace when pinned): a pid may have been reused
/// by an unrelated process, which must not be killed.
fn end_pinned_init(dir: &Path) -> Result<Option<u32>> {
    let Ok(text) = fs::read_to_string(dir.join(INIT_PID_FILE)) else {
        return Ok(None);
    };
    let Ok(pid) = text.trim().parse::<u32>() else {
        return Ok(None);
    };
    // Hold the process by pidfd first, then check it: the check and the kill then name the
    // same process even if it exits and its pid is reused in between.
    let Ok(pidfd) = sys::pidfd_open(pid) else {
        return Ok(None);
    };
    let Ok(net) = Namespace::open(NsKind::Net, dir.join("net")) else {
        return Ok(None);
    };
    let pinned_pid = Namespace::open(NsKind::Pid, dir.join("pid")).ok();
    let inside = |pid: u32| {
        let same = |kind, want: &Namespace| {
            Namespace::from_pid(kind, pid).is_ok_and(|ns| ns.inode() == want.inode())
        };
        same(NsKind::Net, &net) && pinned_pid.as_ref().is_none_or(|p| same(NsKind::Pid, p))
    };
    if !inside(pid) {
        return Ok(None);
    }
    match sys::pidfd_kill(pidfd.as_fd()) {
        Ok(()) => {}
        Err(err) if err.raw_os_error() == Some(libc::ESRCH) => return Ok(None),
        Err(err) => {
            let errno = err.raw_os_error().unwrap_or(libc::EIO);
            return Err(Error::Kill {
                pid,
                source: nix::Error::from_raw(errno),
            });
        }
    }
    // Reap it if it is our child; otherwise its parent (or a subreaper) will, and we only wait
    // until it has left the pod's namespaces, which happens before it becomes a zombie.
    let target = Pid::from_raw(pid as i32);
    let deadline = Instant::now() + INIT_EXIT_TIMEOUT;
    while Instant::now() < deadline {
        match nix::sys::wait::waitpid(target, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) if !inside(pid) => break,
            Ok(WaitStatus::StillAlive) => {}
            Ok(_) => break,
            Err(_) if !inside(pid) => break,
            Err(_) => {}
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(Some(pid))
}

/// Whether `/run/netns/NAME` belongs to the pod pinned in `dir`: it pins the same namespace as
/// `DIR/net`, or it is an empty file that a create cut short left (while `DIR/net`, pinned
/// first, still exists). With `DIR/net` gone, it is not provably ours, so it is left alone.
fn owns_run_netns(dir: &Path, run_netns: &Path) -> bool {
    let Ok(ours) = Namespace::open(NsKind::Net, dir.join("net")) else {
        return false;
    };
    match Namespace::open(NsKind::Net, run_netns) {
        Ok(theirs) => ours.inode() == theirs.inode(),
        Err(Error::NotANamespace { .. }) => true,
        Err(_) => false,
    }
}

/// The hostname kubelet gives a pod: its name cut to 63 bytes, without a trailing '-' or '.'
/// (and '_', which pod names may not have but podkit's names may, becomes '-').
fn default_hostname(name: &str) -> String {
    let mut hostname: String = name
        .chars()
        .take(63)
        .map(|c| if c == '_' { '-' } else { c })
        .collect();
    while hostname.ends_with(['-', '.']) {
        hostname.pop();
    }
    hostname
}

fn remove_file_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::Remove {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Writes `text` to `path` through a temporary file and a rename, so a reader (or a crash) sees
/// the old content or the new, never a part.
fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, text)
        .and_then(|()| fs::rename(&tmp, path))
        .map_err(|source| {
            let _ = fs::remove_file(&tmp);
            Error::Write {
                path: path.to_path_buf(),
                source,
            }
        })
}
