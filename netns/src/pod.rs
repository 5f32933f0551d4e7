//! A pod's namespaces: created together, pinned under one directory, deleted together.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use rtnetlink::sys::{AsyncSocket, TokioSocket, protocols::NETLINK_ROUTE};
use tracing::debug;

use crate::namespace::{NETNS_RUN_DIR, run_in};
use crate::pin::{ensure_netns_run_dir, pin, unpin};
use crate::{Error, Namespace, Namespaces, Netlink, NsKind, Result};

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
}

impl PodNamespacesBuilder {
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
        let hostname = self.hostname.unwrap_or_else(|| self.name.clone());
        validate_hostname(&hostname)?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        if self.run_netns {
            ensure_netns_run_dir()?;
        }
        fs::create_dir_all(&self.dir).map_err(|source| Error::CreateDir {
            path: self.dir.clone(),
            source,
        })?;

        let name = self.name.clone();
        let dir = self.dir.clone();
        let plan = Plan {
            name: self.name,
            dir: self.dir,
            hostname,
            pid_init: self.pid_init,
            run_netns: self.run_netns,
        };
        // unshare(2) moves only the calling thread: do it on a thread of our own, which ends
        // once the namespaces are pinned.
        let (socket, init) = run_in(&[], CloneFlags::empty(), move || {
            let _runtime = runtime.enter();
            plan.execute()
        })??;

        let pod = async {
            Netlink::from_socket(socket, dir.join("net"))
                .link_up("lo")
                .await?;
            let init_pid = init.as_ref().map(Child::id);
            let namespaces = Namespaces::open_dir(&dir, init_pid.is_some())?;
            Ok(PodNamespaces {
                name: name.clone(),
                dir: dir.clone(),
                namespaces,
                init_pid,
                init,
            })
        };
        match pod.await {
            Ok(pod) => Ok(pod),
            Err(error) => Err(undo(error, PodNamespaces::remove(&name, &dir))),
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
}

impl Plan {
    fn execute(mut self) -> Result<(TokioSocket, Option<Child>)> {
        let mut made = Vec::new();
        let mut init = None;
        match self.steps(&mut made, &mut init) {
            Ok(socket) => Ok((socket, init)),
            Err(error) => {
                // Undo only what this call made: a pin that existed already is someone else's.
                let cleanup = kill_init(init.take())
                    .and_then(|()| made.iter().rev().try_for_each(|path| unpin(path).map(drop)))
                    .and_then(|()| remove_file_if_exists(&self.dir.join(INIT_PID_FILE)));
                Err(undo(error, cleanup))
            }
        }
    }

    fn steps(&mut self, made: &mut Vec<PathBuf>, init: &mut Option<Child>) -> Result<TokioSocket> {
        let mut flags = CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWIPC;
        flags |= CloneFlags::CLONE_NEWUTS;
        if self.pid_init.is_some() {
            flags |= CloneFlags::CLONE_NEWPID;
        }
        nix::sched::unshare(flags).map_err(|source| Error::Unshare {
            kinds: kinds_label(flags),
            source,
        })?;
        nix::unistd::sethostname(&self.hostname).map_err(|source| Error::Sethostname {
            hostname: self.hostname.clone(),
            source,
        })?;

        for kind in POD_KINDS {
            let path = self.dir.join(kind.proc_name());
            pin(&thread_ns(kind), &path)?;
            made.push(path);
        }
        if self.run_netns {
            let path = Path::new(NETNS_RUN_DIR).join(&self.name);
            pin(&thread_ns(NsKind::Net), &path)?;
            made.push(path);
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
            *init = Some(child);
            let path = self.dir.join("pid");
            pin(Path::new(&format!("/proc/{pid}/ns/pid")), &path)?;
            made.push(path);
            write_atomic(&self.dir.join(INIT_PID_FILE), &pid.to_string())?;
        }
        Ok(socket)
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
fn undo<T>(error: Error, cleanup: Result<T>) -> Error {
    match cleanup {
        Ok(_) => error,
        Err(cleanup) => Error::Cleanup {
            error: Box::new(error),
            cleanup: Box::new(cleanup),
        },
    }
}

fn kill_init(init: Option<Child>) -> Result<()> {
    let Some(mut child) = init else {
        return Ok(());
    };
    let pid = child.id();
    match child.kill() {
        Ok(()) => {}
        // Already exited: reaped below.
        Err(err) if err.kind() == io::ErrorKind::InvalidInput => {}
        Err(err) => {
            return Err(Error::Kill {
                pid,
                source: nix::Error::from_raw(err.raw_os_error().unwrap_or(libc::EIO)),
            });
        }
    }
    // Reaping PID 1 also waits for the kernel to have killed the rest of its namespace.
    let _ = child.wait();
    Ok(())
}

/// Ends the PID 1 recorded in `DIR/init.pid`, if it is still the init of the pinned PID
/// namespace (a pid can be reused by an unrelated process: never kill that one).
fn end_pinned_init(dir: &Path) -> Result<Option<u32>> {
    let Ok(text) = fs::read_to_string(dir.join(INIT_PID_FILE)) else {
        return Ok(None);
    };
    let Ok(pid) = text.trim().parse::<u32>() else {
        return Ok(None);
    };
    let Ok(pinned) = Namespace::open(NsKind::Pid, dir.join("pid")) else {
        return Ok(None);
    };
    let same = |pid: u32| {
        Namespace::from_pid(NsKind::Pid, pid).is_ok_and(|ns| ns.inode() == pinned.inode())
    };
    if !same(pid) {
        return Ok(None);
    }
    let target = Pid::from_raw(pid as i32);
    match nix::sys::signal::kill(target, Signal::SIGKILL) {
        Ok(()) | Err(nix::Error::ESRCH) => {}
        Err(source) => return Err(Error::Kill { pid, source }),
    }
    // Reap it if it is our child; otherwise its parent (or the subreaper) will, and we only wait
    // until it has left the namespace.
    let deadline = Instant::now() + INIT_EXIT_TIMEOUT;
    while Instant::now() < deadline {
        match nix::sys::wait::waitpid(target, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(_) => break,
            Err(_) if !same(pid) => break,
            Err(_) => {}
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(Some(pid))
}

/// Whether `/run/netns/NAME` belongs to the pod pinned in `dir`: yes unless both are live
/// namespaces and differ.
fn owns_run_netns(dir: &Path, run_netns: &Path) -> bool {
    match (
        Namespace::open(NsKind::Net, dir.join("net")),
        Namespace::open(NsKind::Net, run_netns),
    ) {
        (Ok(ours), Ok(theirs)) => ours.inode() == theirs.inode(),
        _ => true,
    }
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
