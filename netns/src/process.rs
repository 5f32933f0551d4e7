//! A process to start in a set of namespaces: built like `std::process::Command`, but started
//! by podkit's own fork (`sys::spawn`), because `Command` cannot create a process directly in a
//! cgroup. With `clone3(CLONE_INTO_CGROUP)` the child is born in its container's cgroup; a child
//! that moves itself there after the fork (`echo 0 > cgroup.procs`) takes the cgroup core's
//! thread-group lock for writing, which waits for an RCU grace period: 5-20 ms per container
//! start measured on the development VM, about as long as the rest of a pod's start. crun, and
//! glibc's posix_spawn since 2.39 (`posix_spawnattr_setcgroup_np`), create processes this way.

use std::ffi::{CString, OsStr, OsString};
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::Arc;

use nix::fcntl::{OFlag, open};
use nix::sched::CloneFlags;
use nix::sys::stat::Mode;
use tokio::io::AsyncReadExt;

use crate::{Error, Result, Setup, sys};

/// The PATH a process gets when its environment has none: runc's and kubelet's default.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What one of a process's standard streams is connected to.
#[derive(Debug, Default)]
pub enum Stdio {
    /// `/dev/null`.
    #[default]
    Null,
    /// The same file as the caller's.
    Inherit,
    /// A new pipe; the caller gets the other end in [`Started`].
    Pipe,
    /// This file (a pipe end, a pty's slave end, ...).
    Fd(OwnedFd),
}

/// A program, its arguments, environment, standard streams and cgroup. The environment starts
/// empty, as a container's does: only what [`Process::env`] adds is passed.
#[derive(Debug)]
pub struct Process {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    stdio: [Stdio; 3],
    cgroup: Option<Arc<OwnedFd>>,
}

/// A started process: its pid and the caller's ends of the pipes asked for.
#[derive(Debug)]
pub struct Started {
    pub pid: u32,
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

impl Process {
    /// `program` is a path, or a name searched in the `PATH` of the process's environment (or,
    /// without one, in /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin).
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        Process {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            env: Vec::new(),
            stdio: Default::default(),
            cgroup: None,
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args(mut self, args: impl IntoIterator<Item = impl AsRef<OsStr>>) -> Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets variable `key`; a later value for the same key wins.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        let key = key.as_ref().to_owned();
        self.env.retain(|(k, _)| *k != key);
        self.env.push((key, value.as_ref().to_owned()));
        self
    }

    pub fn envs(
        self,
        vars: impl IntoIterator<Item = (impl AsRef<OsStr>, impl AsRef<OsStr>)>,
    ) -> Self {
        vars.into_iter().fold(self, |p, (k, v)| p.env(k, v))
    }

    pub fn stdin(mut self, stdio: Stdio) -> Self {
        self.stdio[0] = stdio;
        self
    }

    pub fn stdout(mut self, stdio: Stdio) -> Self {
        self.stdio[1] = stdio;
        self
    }

    pub fn stderr(mut self, stdio: Stdio) -> Self {
        self.stdio[2] = stdio;
        self
    }

    /// Equal to starting it from a shell in `CGROUP/cgroup.procs`: the process is created in
    /// the cgroup v2 whose directory `dir` is open (read-only), so everything it starts is in
    /// that cgroup too, also what leaves its session. Kernels before 5.7 lack
    /// CLONE_INTO_CGROUP: there the child moves itself in before it execs.
    pub fn cgroup(mut self, dir: Arc<OwnedFd>) -> Self {
        self.cgroup = Some(dir);
        self
    }

    /// The value of variable `key` in the process's environment, if set.
    pub fn get_env(&self, key: impl AsRef<OsStr>) -> Option<&OsStr> {
        let key = key.as_ref();
        self.env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_os_str())
    }

    /// The program, as given: for error messages.
    pub fn program(&self) -> &OsStr {
        &self.program
    }

    /// Forks the process, which joins `namespaces` (not a PID one: the caller forks on a
    /// thread that joined it), takes the `setup` steps and execs. Returns once forked.
    pub(crate) fn fork(
        self,
        namespaces: Vec<(Arc<OwnedFd>, CloneFlags)>,
        setup: &Setup,
    ) -> io::Result<(Started, OwnedFd)> {
        let argv = std::iter::once(&self.program)
            .chain(&self.args)
            .map(|a| c_string(a))
            .collect::<io::Result<Vec<_>>>()?;
        let envp = self
            .env
            .iter()
            .map(|(k, v)| {
                let mut kv = k.clone();
                kv.push("=");
                kv.push(v);
                c_string(&kv)
            })
            .collect::<io::Result<Vec<_>>>()?;
        let candidates = self.candidates()?;

        // The child's ends (dup'ed onto 0, 1, 2) and the caller's; all close-on-exec.
        let mut child_ends: [Option<OwnedFd>; 3] = Default::default();
        let mut ours: [Option<OwnedFd>; 3] = Default::default();
        for (i, stdio) in self.stdio.into_iter().enumerate() {
            match stdio {
                Stdio::Inherit => {}
                Stdio::Null => {
                    let flags = OFlag::O_RDWR | OFlag::O_CLOEXEC;
                    child_ends[i] = Some(open("/dev/null", flags, Mode::empty())?);
                }
                Stdio::Pipe => {
                    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
                    let (child, parent) = if i == 0 { (read, write) } else { (write, read) };
                    child_ends[i] = Some(child);
                    ours[i] = Some(parent);
                }
                Stdio::Fd(fd) => child_ends[i] = Some(fd),
            }
        }
        let stdio: [Option<RawFd>; 3] =
            std::array::from_fn(|i| child_ends[i].as_ref().map(AsRawFd::as_raw_fd));
        let plan = sys::ChildPlan::new(
            &argv,
            &envp,
            &candidates,
            stdio,
            &namespaces,
            setup,
            self.cgroup.as_deref().map(AsFd::as_fd),
        );
        let (pid, report) = sys::spawn(&plan)?;
        let [stdin, stdout, stderr] = ours;
        let started = Started {
            pid,
            stdin,
            stdout,
            stderr,
        };
        Ok((started, report))
    }

    /// The paths the child tries to exec, in order, made here: the child must not allocate.
    fn candidates(&self) -> io::Result<Vec<CString>> {
        if self.program.as_bytes().contains(&b'/') {
            return Ok(vec![c_string(&self.program)?]);
        }
        let path = self
            .env
            .iter()
            .rev()
            .find(|(k, _)| k == "PATH")
            .map_or(OsStr::new(DEFAULT_PATH), |(_, v)| v.as_os_str());
        path.as_bytes()
            .split(|b| *b == b':')
            // An empty entry is the current directory, as for execvp(3).
            .map(|dir| if dir.is_empty() { b"." } else { dir })
            .map(|dir| {
                let mut full = OsStr::from_bytes(dir).to_owned();
                full.push("/");
                full.push(&self.program);
                c_string(&full)
            })
            .collect()
    }
}

/// A process forked in its namespaces that may not have exec'd yet: see
/// [`Namespaces::begin`](crate::Namespaces::begin).
#[derive(Debug)]
pub struct Pending {
    started: Started,
    /// Closed by the child's exec; an errno comes through it if the child fails before.
    report: OwnedFd,
    /// For the error: the program and the namespaces' path.
    label: (String, PathBuf),
}

impl Pending {
    pub(crate) fn new(started: Started, report: OwnedFd, program: String, path: PathBuf) -> Self {
        Pending {
            started,
            report,
            label: (program, path),
        }
    }

    pub fn pid(&self) -> u32 {
        self.started.pid
    }

    /// Waits, without blocking the thread (on a tokio runtime), until the program was exec'd;
    /// or returns the error that stopped the child, which then exits with 127 and is left for
    /// the caller's reaper.
    pub async fn exec(self) -> Result<Started> {
        let Pending {
            started,
            report,
            label,
        } = self;
        let mut bytes = Vec::new();
        let read = async {
            let mut pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(report)?;
            pipe.read_to_end(&mut bytes).await
        };
        let done = read.await.and_then(|_| sys::exec_report(&bytes));
        finish(started, done, label)
    }

    /// [`Pending::exec`], blocking the thread, and reaping a child that failed.
    pub fn wait_exec(self) -> Result<Started> {
        let Pending {
            started,
            report,
            label,
        } = self;
        let mut bytes = Vec::new();
        let read = std::fs::File::from(report).read_to_end(&mut bytes);
        let done = read.and_then(|_| sys::exec_report(&bytes));
        if done.is_err() {
            let _ = sys::wait(started.pid);
        }
        finish(started, done, label)
    }
}

fn finish(started: Started, done: io::Result<()>, label: (String, PathBuf)) -> Result<Started> {
    let (program, path) = label;
    done.map(|()| started).map_err(|source| Error::Spawn {
        program,
        path,
        source,
    })
}

impl Started {
    /// Waits for the process to end. Not for a process whose children another reaper waits
    /// for (podkit's supervisor): that one would take the status first.
    pub fn wait(&self) -> io::Result<ExitStatus> {
        sys::wait(self.pid).map(ExitStatus::from_raw)
    }
}

/// A handle on a process that keeps naming it after it exits, even once its pid is reused
/// (a pidfd, see pidfd_open(2)): a signal sent through it never reaches another process. Open
/// it while the process cannot have been reaped (before its parent can wait for it).
#[derive(Debug)]
pub struct PidFd {
    fd: OwnedFd,
    pid: u32,
}

impl PidFd {
    /// Equal to `pidfd_open(pid, 0)`.
    pub fn open(pid: u32) -> io::Result<PidFd> {
        Ok(PidFd {
            fd: sys::pidfd_open(pid)?,
            pid,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends `signal` to the process; `Ok` also when it has exited already (there is nothing
    /// left to signal). Equal to `kill -SIGNAL PID`, without the race on the pid.
    pub fn signal(&self, signal: nix::sys::signal::Signal) -> io::Result<()> {
        match sys::pidfd_signal(self.fd.as_fd(), signal as libc::c_int) {
            Err(err) if err.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            other => other,
        }
    }
}

/// Readable (POLLIN) once the process has exited: poll(2) on a pidfd waits for an exit
/// without being the process's parent.
impl AsFd for PidFd {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn c_string(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{s:?} contains a NUL byte"),
        )
    })
}
