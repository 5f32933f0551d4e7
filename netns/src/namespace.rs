//! One open namespace, and running code inside it on a dedicated OS thread.
//!
//! `setns(2)` changes only the calling thread, and a socket keeps the network namespace of the
//! thread that created it. So code that must run "inside" a namespace runs on a fresh thread
//! that enters it and then ends: never on a tokio worker, whose next task would inherit it.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::sched::CloneFlags;

use crate::{Error, NsKind, Result, sys};

/// Where `ip netns add NAME` pins network namespaces; `ip netns list` reads it.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// An open namespace: a file descriptor on its nsfs inode, which keeps it alive while open.
///
/// Cloning is cheap and shares the descriptor.
#[derive(Debug, Clone)]
pub struct Namespace {
    kind: NsKind,
    /// Where it was opened from, for error messages and `ip netns exec`.
    path: PathBuf,
    fd: Arc<OwnedFd>,
}

impl Namespace {
    /// Opens the namespace file at `path` (a pin, or `/proc/PID/ns/KIND`) and checks that it is a
    /// namespace of `kind`.
    pub fn open(kind: NsKind, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|source| Error::Open {
            path: path.clone(),
            source,
        })?;
        let found = match sys::ns_type(file.as_fd()) {
            Ok(found) => found,
            // ENOTTY: the file does not answer namespace ioctls.
            Err(err) if err.raw_os_error() == Some(libc::ENOTTY) => {
                return Err(Error::NotANamespace { path, kind });
            }
            Err(source) => return Err(Error::Open { path, source }),
        };
        if found != kind.clone_flag().bits() {
            let found = NsKind::from_clone_flag(found)
                .map_or_else(|| format!("{found:#x}"), |k| k.to_string());
            return Err(Error::WrongKind {
                path,
                expected: kind,
                found,
            });
        }
        Ok(Namespace {
            kind,
            path,
            fd: Arc::new(file.into()),
        })
    }

    /// Opens the `kind` namespace of process `pid`. Equal to opening `/proc/PID/ns/KIND`.
    pub fn from_pid(kind: NsKind, pid: u32) -> Result<Self> {
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        if pid == 0 || !proc_dir.exists() {
            return Err(Error::NoSuchProcess { pid });
        }
        Namespace::open(kind, proc_dir.join("ns").join(kind.proc_name())).map_err(|err| match err {
            // The process exited between the two steps, or is a zombie (no ns links left).
            Error::Open { .. } if !proc_dir.join("exe").exists() => Error::NoSuchProcess { pid },
            err => err,
        })
    }

    /// Opens the network namespace that `ip netns add NAME` (or a pod named NAME) pinned at
    /// `/run/netns/NAME`.
    pub fn named_netns(name: &str) -> Result<Self> {
        crate::validate_name(name)?;
        Namespace::open(NsKind::Net, Path::new(NETNS_RUN_DIR).join(name))
    }

    /// The `kind` namespace of the calling thread.
    pub fn current(kind: NsKind) -> Result<Self> {
        Namespace::open(kind, format!("/proc/thread-self/ns/{}", kind.proc_name()))
    }

    /// Which kind of namespace this is.
    pub fn kind(&self) -> NsKind {
        self.kind
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The namespace's inode number: two handles name the same namespace when these are equal
    /// (as `ls -i /proc/PID/ns/net` or `lsns` show).
    pub fn inode(&self) -> u64 {
        // fstat(2) on an open namespace fd cannot fail short of a kernel bug; 0 is never a valid
        // inode, so it cannot compare equal by accident.
        nix::sys::stat::fstat(self.fd.as_fd()).map_or(0, |st| st.st_ino)
    }

    /// Runs `f` on a new OS thread that has entered this namespace, and returns what it returns.
    /// Blocks the caller until `f` is done: from async code, use [`Namespace::run_async`].
    pub fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        run_in(std::slice::from_ref(self), CloneFlags::empty(), f)
    }

    /// [`Namespace::run`] for async callers: the thread does the work, the task awaits it.
    pub async fn run_async<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        run_in_async(vec![self.clone()], f).await
    }

    /// [`Error::WrongKind`] unless this is a namespace of `kind`.
    pub(crate) fn expect_kind(&self, kind: NsKind) -> Result<()> {
        if self.kind == kind {
            return Ok(());
        }
        Err(Error::WrongKind {
            path: self.path.clone(),
            expected: kind,
            found: self.kind.to_string(),
        })
    }

    pub(crate) fn shared_fd(&self) -> Arc<OwnedFd> {
        Arc::clone(&self.fd)
    }

    /// Makes the calling thread join this namespace. Only for threads this crate started.
    pub(crate) fn enter(&self) -> Result<()> {
        nix::sched::setns(self.fd.as_fd(), self.kind.clone_flag()).map_err(|source| Error::Setns {
            kind: self.kind,
            path: self.path.clone(),
            source,
        })
    }
}

impl AsFd for Namespace {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Runs `f` on a new thread that has entered `namespaces` (in order), after `unshare(extra)`.
/// The thread ends with `f`, taking its namespace membership with it.
pub(crate) fn run_in<T, F>(namespaces: &[Namespace], extra: CloneFlags, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let label = label(namespaces);
    let namespaces = namespaces.to_vec();
    let thread = std::thread::Builder::new()
        .name("podkit-ns".into())
        .spawn(move || -> Result<T> {
            enter_all(&namespaces, extra)?;
            Ok(f())
        })
        .map_err(|source| Error::Thread {
            path: label.clone(),
            source,
        })?;
    thread
        .join()
        .map_err(|_| Error::ThreadPanicked { path: label })?
}

/// [`run_in`] for async callers.
pub(crate) async fn run_in_async<T, F>(namespaces: Vec<Namespace>, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let label = label(&namespaces);
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("podkit-ns".into())
        .spawn(move || {
            let result = enter_all(&namespaces, CloneFlags::empty()).map(|()| f());
            // The receiver is gone only if the caller stopped waiting; then nobody wants `f`'s
            // result and dropping it here is right.
            let _ = tx.send(result);
        })
        .map_err(|source| Error::Thread {
            path: label.clone(),
            source,
        })?;
    rx.await
        .map_err(|_| Error::ThreadPanicked { path: label })?
}

fn enter_all(namespaces: &[Namespace], extra: CloneFlags) -> Result<()> {
    // A thread shares its filesystem context (root, cwd) with its siblings, and setns(2) refuses
    // to move such a thread into a mount namespace: give this one its own copy first.
    let mut unshare = extra;
    if namespaces.iter().any(|ns| ns.kind == NsKind::Mnt) {
        unshare |= CloneFlags::CLONE_FS;
    }
    if !unshare.is_empty() {
        nix::sched::unshare(unshare).map_err(|source| Error::Unshare {
            kinds: format!("{unshare:?}"),
            source,
        })?;
    }
    namespaces.iter().try_for_each(Namespace::enter)
}

fn label(namespaces: &[Namespace]) -> PathBuf {
    namespaces
        .first()
        .map_or_else(|| PathBuf::from("(none)"), |ns| ns.path.clone())
}
