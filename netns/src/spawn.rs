//! A set of namespaces to start processes in: a pod's, or another process's.

use std::path::Path;
use std::process::{Child, Command};

use crate::{Error, Namespace, NsKind, Pending, Process, Result, Setup, Started, sys};

/// Namespaces a process joins together, kept in the order it enters them.
#[derive(Debug, Clone, Default)]
pub struct Namespaces {
    members: Vec<Namespace>,
}

impl Namespaces {
    /// A set of the given namespaces (at most one of each kind: a later one replaces an
    /// earlier one of the same kind).
    pub fn new(namespaces: impl IntoIterator<Item = Namespace>) -> Self {
        let mut set = Namespaces::default();
        for ns in namespaces {
            set.insert(ns);
        }
        set
    }

    /// The `kinds` namespaces of process `pid`: equal to what `nsenter --target PID` joins.
    pub fn from_pid(pid: u32, kinds: &[NsKind]) -> Result<Self> {
        kinds
            .iter()
            .map(|&kind| Namespace::from_pid(kind, pid))
            .collect::<Result<Vec<_>>>()
            .map(Namespaces::new)
    }

    /// The net, IPC and UTS pins in `dir` (and the PID one when `pid`).
    pub(crate) fn open_dir(dir: &Path, pid: bool) -> Result<Self> {
        let mut kinds = vec![NsKind::Net, NsKind::Ipc, NsKind::Uts];
        if pid {
            kinds.push(NsKind::Pid);
        }
        kinds
            .into_iter()
            .map(|kind| Namespace::open(kind, dir.join(kind.proc_name())))
            .collect::<Result<Vec<_>>>()
            .map(Namespaces::new)
    }

    /// Adds `ns`, replacing one of the same kind.
    pub fn insert(&mut self, ns: Namespace) {
        self.members.retain(|m| m.kind() != ns.kind());
        self.members.push(ns);
        self.members.sort_by_key(|m| m.kind());
    }

    /// The namespace of `kind`, if the set has one.
    pub fn get(&self, kind: NsKind) -> Option<&Namespace> {
        self.members.iter().find(|m| m.kind() == kind)
    }

    /// Every namespace in the set, in the order a process enters them.
    pub fn iter(&self) -> impl Iterator<Item = &Namespace> {
        self.members.iter()
    }

    /// Makes `cmd` join the set's namespaces between fork and exec: a `pre_exec` hook doing
    /// `setns` on fds opened now. Equal to `nsenter --net=... --ipc=... --uts=... CMD`.
    ///
    /// A PID namespace is left out: joining one moves only the process's future children. Use
    /// [`Namespaces::spawn`], which handles it.
    ///
    /// `pre_exec` hooks run in the order they were added: call this before adding hooks that
    /// must act inside the namespaces (sethostname, mount), after those that must not.
    pub fn command<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        self.command_with(cmd, Setup::new())
    }

    /// [`Namespaces::command`], then the `setup` steps (session, mounts, user) in the child.
    pub fn command_with<'a>(&self, cmd: &'a mut Command, setup: Setup) -> &'a mut Command {
        sys::before_exec(cmd, self.setns_list(), setup);
        cmd
    }

    /// Starts `cmd` inside every namespace of the set, the PID one included: equal to
    /// `nsenter --target ... --pid --net --ipc --uts CMD`.
    ///
    /// With a PID namespace, the fork happens on a short-lived thread that has joined it, so the
    /// same advice as for [`PodNamespacesBuilder::pid_namespace`](crate::PodNamespacesBuilder::pid_namespace)
    /// holds: no `PR_SET_PDEATHSIG` in `cmd`.
    pub fn spawn(&self, cmd: &mut Command) -> Result<Child> {
        self.spawn_with(cmd, Setup::new())
    }

    /// [`Namespaces::spawn`], with the `setup` steps taken in the child after it joined the
    /// namespaces (a `/proc` mount then shows the pod's PID namespace).
    pub fn spawn_with(&self, cmd: &mut Command, setup: Setup) -> Result<Child> {
        self.command_with(cmd, setup);
        let program = cmd_label(cmd);
        self.fork_in_pid_namespace(&program, || cmd.spawn())
    }

    /// Starts `process` inside every namespace of the set, the PID one included, after the
    /// `setup` steps: [`Namespaces::spawn_with`] for a [`Process`], which can be created
    /// directly in a cgroup ([`Process::cgroup`]). Returns once the program was exec'd.
    pub fn start(&self, process: Process, setup: Setup) -> Result<Started> {
        self.begin(process, setup)?.wait_exec()
    }

    /// [`Namespaces::start`] without waiting for the exec: returns once the child is forked,
    /// and [`Pending::exec`] waits for the rest without blocking, so that several processes
    /// (a pod's containers) exec at once.
    pub fn begin(&self, process: Process, setup: Setup) -> Result<Pending> {
        let program = process.program().to_string_lossy().into_owned();
        let namespaces = self.setns_list();
        let (started, report) =
            self.fork_in_pid_namespace(&program, move || process.fork(namespaces, &setup))?;
        Ok(Pending::new(started, report, program, self.label()))
    }

    /// The fds and flags a child `setns`es to, in order: all but a PID namespace, which only
    /// the forking thread can join.
    fn setns_list(&self) -> Vec<(std::sync::Arc<std::os::fd::OwnedFd>, nix::sched::CloneFlags)> {
        self.members
            .iter()
            .filter(|m| m.kind() != NsKind::Pid)
            .map(|m| (m.shared_fd(), m.kind().clone_flag()))
            .collect()
    }

    /// Runs `fork`, on a short-lived thread that joined the set's PID namespace if it has one,
    /// so the child is born in it.
    fn fork_in_pid_namespace<T: Send>(
        &self,
        program: &str,
        fork: impl FnOnce() -> std::io::Result<T> + Send,
    ) -> Result<T> {
        let spawn_error = |source| Error::Spawn {
            program: program.to_owned(),
            path: self.label(),
            source,
        };
        let Some(pid_ns) = self.get(NsKind::Pid) else {
            return fork().map_err(spawn_error);
        };
        let result = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    pid_ns.enter()?;
                    fork().map_err(|source| match source.raw_os_error() {
                        // fork(2) says ENOMEM when the PID namespace's init has exited.
                        Some(libc::ENOMEM) => Error::PidNamespaceDead {
                            path: pid_ns.path().to_path_buf(),
                        },
                        _ => spawn_error(source),
                    })
                })
                .join()
        });
        result.map_err(|_| Error::ThreadPanicked { path: self.label() })?
    }

    fn label(&self) -> std::path::PathBuf {
        self.members
            .first()
            .map(|m| m.path().to_path_buf())
            .unwrap_or_default()
    }
}

fn cmd_label(cmd: &Command) -> String {
    cmd.get_program().to_string_lossy().into_owned()
}
