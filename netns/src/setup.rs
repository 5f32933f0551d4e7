//! What a pod member does to itself between fork and exec, after joining the pod's namespaces:
//! its own session, a private mount namespace with the pod's volumes bound in,
//! `/proc` for the pod's PID namespace, its working directory and its user. As youki's container
//! init does, but as a list of steps decided before the fork, so the child only makes syscalls.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use nix::unistd::{Gid, Uid};

use crate::sys::cred;
use crate::{Error, Result};

/// Steps for the child to take, in order, after it joined the namespaces. Paths are converted
/// to C strings here, before the fork: the child must not allocate.
#[derive(Debug, Clone, Default)]
pub struct Setup {
    steps: Vec<Step>,
}

#[derive(Debug, Clone)]
enum Step {
    NewSession,
    ControllingTerminal,
    NewMountNamespace,
    BindMount {
        src: CString,
        dst: CString,
        read_only: bool,
    },
    /// A detached mount tree (open_tree(2)) to attach at `dst`.
    AttachTree {
        tree: Arc<OwnedFd>,
        dst: CString,
        read_only: bool,
    },
    MountProc,
    Unmount(CString),
    Chdir(CString),
    User {
        uid: Option<Uid>,
        gid: Option<Gid>,
    },
    DropBounding(Vec<u32>),
    NoNewPrivileges,
}

impl Setup {
    /// No steps: the child only joins the namespaces.
    pub fn new() -> Self {
        Setup::default()
    }

    /// Equal to `setsid`: the child leads a new session and process group, so that a signal to
    /// the group reaches everything it starts (that stays in the group).
    pub fn new_session(mut self) -> Self {
        self.steps.push(Step::NewSession);
        self
    }

    /// Equal to `setsid --ctty`: the child leads a new session whose controlling terminal is its
    /// stdin (a pty's slave end), as a shell under `script` or `docker exec -t` has one: job
    /// control works and Ctrl-C reaches its foreground job.
    pub fn controlling_terminal(mut self) -> Self {
        self.steps.push(Step::ControllingTerminal);
        self
    }

    /// Equal to `unshare --mount --propagation slave`: the child gets its own mount table, in
    /// which its mounts stay, and into which the host's later mounts still propagate.
    pub fn new_mount_namespace(mut self) -> Self {
        self.steps.push(Step::NewMountNamespace);
        self
    }

    /// Equal to `mount --rbind SRC DST` (then `mount -o remount,bind,ro DST` when `read_only`),
    /// in the child's mount namespace: call [`Setup::new_mount_namespace`] first, or the host
    /// sees the mount.
    pub fn bind_mount(mut self, src: &Path, dst: &Path, read_only: bool) -> Result<Self> {
        self.steps.push(Step::BindMount {
            src: c_path(src)?,
            dst: c_path(dst)?,
            read_only,
        });
        Ok(self)
    }

    /// [`Setup::bind_mount`] of the file or directory `src` is open on (an `O_PATH` fd is
    /// enough): the tree there is copied now (open_tree(2)) and attached in the child
    /// (move_mount(2)), so the mount is of what was opened, whatever happened to its path since
    /// (a component swapped for a symbolic link by a pod member). A bind mount of the
    /// `/proc/self/fd/N` of an fd opened in the host's mount namespace would be refused in the
    /// child's own namespace (EINVAL); a detached copy may be attached in any. Linux 5.2.
    pub fn bind_mount_fd(
        mut self,
        src: BorrowedFd<'_>,
        dst: &Path,
        read_only: bool,
    ) -> Result<Self> {
        let tree = crate::sys::clone_tree(src).map_err(|source| Error::CloneTree {
            dst: dst.to_path_buf(),
            source,
        })?;
        self.steps.push(Step::AttachTree {
            tree: Arc::new(tree),
            dst: c_path(dst)?,
            read_only,
        });
        Ok(self)
    }

    /// Equal to `mount -t proc proc /proc`: a `/proc` that shows the child's PID namespace, so
    /// `ps` in a pod with a shared PID namespace lists the pod's processes.
    pub fn mount_proc(mut self) -> Self {
        self.steps.push(Step::MountProc);
        self
    }

    /// Equal to `umount --lazy DIR` in the child's mount namespace (call
    /// [`Setup::new_mount_namespace`] first): a filesystem the child's program must not see,
    /// such as the cgroup2 mount of a hybrid cgroup host, which crun refuses to run on.
    pub fn unmount(mut self, dir: &Path) -> Result<Self> {
        self.steps.push(Step::Unmount(c_path(dir)?));
        Ok(self)
    }

    /// Equal to `cd DIR`, done after the mounts, so DIR may be inside a volume.
    pub fn chdir(mut self, dir: &Path) -> Result<Self> {
        self.steps.push(Step::Chdir(c_path(dir)?));
        Ok(self)
    }

    /// Equal to `setpriv --reuid UID --regid GID --clear-groups`, done last: the mounts above
    /// need root.
    pub fn user(mut self, uid: Option<u32>, gid: Option<u32>) -> Self {
        if uid.is_some() || gid.is_some() {
            self.steps.push(Step::User {
                uid: uid.map(Uid::from_raw),
                gid: gid.map(Gid::from_raw),
            });
        }
        self
    }

    /// Drops the capabilities numbered `caps` from the child's bounding set (`capsh --drop`),
    /// while it is still root: what it execs as root has the rest only, and no exec can give
    /// them back. Before [`Setup::user`], which needs none of them.
    pub fn drop_bounding(mut self, caps: Vec<u32>) -> Self {
        if !caps.is_empty() {
            self.steps.push(Step::DropBounding(caps));
        }
        self
    }

    /// `prctl(PR_SET_NO_NEW_PRIVS)`: no exec grants privileges (setuid bits, file capabilities),
    /// as `allowPrivilegeEscalation: false` asks.
    pub fn no_new_privileges(mut self) -> Self {
        self.steps.push(Step::NoNewPrivileges);
        self
    }

    /// Runs the steps. Called in the child between fork and exec: only syscalls on data
    /// prepared before the fork, no allocation, no locks.
    pub(crate) fn run(&self) -> io::Result<()> {
        for step in &self.steps {
            match step {
                Step::NewSession => {
                    nix::unistd::setsid()?;
                }
                Step::ControllingTerminal => {
                    nix::unistd::setsid()?;
                    crate::sys::set_controlling_terminal(0)?;
                }
                Step::NewMountNamespace => {
                    nix::sched::unshare(CloneFlags::CLONE_NEWNS)?;
                    let slave = MsFlags::MS_REC | MsFlags::MS_SLAVE;
                    nix::mount::mount(None::<&CStr>, ROOT, None::<&CStr>, slave, None::<&CStr>)?;
                }
                Step::BindMount {
                    src,
                    dst,
                    read_only,
                } => {
                    let bind = MsFlags::MS_BIND | MsFlags::MS_REC;
                    nix::mount::mount(
                        Some(src.as_c_str()),
                        dst.as_c_str(),
                        None::<&CStr>,
                        bind,
                        None::<&CStr>,
                    )?;
                    if *read_only {
                        remount_read_only(dst)?;
                    }
                }
                Step::AttachTree {
                    tree,
                    dst,
                    read_only,
                } => {
                    crate::sys::attach_tree(tree.as_raw_fd(), dst)?;
                    if *read_only {
                        remount_read_only(dst)?;
                    }
                }
                Step::MountProc => {
                    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
                    nix::mount::mount(Some(PROC), PROC_DIR, Some(PROC), flags, None::<&CStr>)?;
                }
                Step::Unmount(dir) => {
                    nix::mount::umount2(dir.as_c_str(), nix::mount::MntFlags::MNT_DETACH)?;
                }
                Step::Chdir(dir) => nix::unistd::chdir(dir.as_c_str())?,
                Step::DropBounding(caps) => {
                    for cap in caps {
                        crate::sys::drop_bounding(*cap)?;
                    }
                }
                Step::NoNewPrivileges => nix::sys::prctl::set_no_new_privs()?,
                // Raw system calls, not glibc's wrappers: see `sys::cred`.
                Step::User { uid, gid } => {
                    if let Some(gid) = gid {
                        cred::setgroups(&[gid.as_raw()])?;
                        cred::setresgid(gid.as_raw())?;
                    }
                    if let Some(uid) = uid {
                        cred::setresuid(uid.as_raw())?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Equal to `mount -o remount,bind,ro DST`: the bind mount at `dst` becomes read-only.
fn remount_read_only(dst: &CStr) -> io::Result<()> {
    let ro = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    nix::mount::mount(None::<&CStr>, dst, None::<&CStr>, ro, None::<&CStr>)?;
    Ok(())
}

const ROOT: &CStr = c"/";
const PROC: &CStr = c"proc";
const PROC_DIR: &CStr = c"/proc";

fn c_path(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| Error::InvalidPath {
        path: path.to_path_buf(),
    })
}
