//! Reaping. The supervisor is a child subreaper (`PR_SET_CHILD_SUBREAPER`): every process of the
//! pod that loses its parent becomes its child. One task reaps all children on SIGCHLD, hands a
//! member's exit to whoever watches it, and lets orphans go with a log line: no zombie stays.
//!
//! Nothing else may wait for children (no `Child::wait`, no `tokio::process`): the reaper would
//! race it for the status. A library call that must ([`Reaper::paused`]) holds the reaper off.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use nix::sys::wait::{WaitPidFlag, WaitStatus};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::oneshot;
use tracing::debug;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    /// The exit code as Kubernetes reports it: 128 + the signal for a killed process.
    pub fn code(self) -> i32 {
        match self {
            Exit::Code(code) => code,
            Exit::Signal(signal) => 128 + signal,
        }
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(code) => write!(f, "exit code {code}"),
            Exit::Signal(signal) => {
                let name = nix::sys::signal::Signal::try_from(*signal)
                    .map_or_else(|_| signal.to_string(), |s| s.as_str().to_owned());
                write!(f, "killed by {name}")
            }
        }
    }
}

/// How many exits of orphans the reaper remembers for [`Reaper::watch`].
const ORPHANS_KEPT: usize = 64;

/// The reaper's handle; cheap to clone.
#[derive(Debug, Clone)]
pub struct Reaper {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    /// pid -> who waits for its exit. Locked around spawn + register, and around waitpid, so a
    /// child is never reaped before its watcher is in place.
    watchers: HashMap<i32, oneshot::Sender<Exit>>,
    /// The last orphans reaped, oldest first: a container's process becomes the supervisor's
    /// child when the runtime that created it exits, and may be reaped before
    /// [`Reaper::watch`] names it.
    orphans: std::collections::VecDeque<(i32, Exit)>,
}

impl Reaper {
    /// Makes this process a child subreaper and starts reaping. Needs a tokio runtime.
    pub fn start() -> std::io::Result<Reaper> {
        nix::sys::prctl::set_child_subreaper(true)?;
        let mut sigchld = signal(SignalKind::child())?;
        let reaper = Reaper {
            inner: Arc::default(),
        };
        let task = reaper.clone();
        tokio::spawn(async move {
            loop {
                task.reap_all();
                if sigchld.recv().await.is_none() {
                    break;
                }
            }
        });
        Ok(reaper)
    }

    /// Runs `spawn` (which starts a process and returns its pid with anything else it made)
    /// and watches that pid, with no window for the reaper in between.
    pub fn spawn<T, E>(
        &self,
        spawn: impl FnOnce() -> Result<(u32, T), E>,
    ) -> Result<(T, oneshot::Receiver<Exit>), E> {
        let mut inner = self.lock();
        let (pid, made) = spawn()?;
        let (tx, rx) = oneshot::channel();
        inner.watchers.insert(pid as i32, tx);
        Ok((made, rx))
    }

    /// Watches `pid`, a process that is (or was) the supervisor's child without being spawned
    /// by it: a container's first process, inherited when the OCI runtime's `create` exits.
    /// An exit reaped before this call is found among the orphans remembered.
    pub fn watch(&self, pid: u32) -> oneshot::Receiver<Exit> {
        let mut inner = self.lock();
        let (tx, rx) = oneshot::channel();
        let pid = pid as i32;
        if let Some(at) = inner.orphans.iter().position(|(p, _)| *p == pid) {
            if let Some((_, exit)) = inner.orphans.remove(at) {
                let _ = tx.send(exit);
            }
        } else {
            inner.watchers.insert(pid, tx);
        }
        rx
    }

    /// Runs `f`, which starts a child and waits for it itself (a library's `Command::output`:
    /// `netns::Nat::ensure` running `nft`), with reaping held off meanwhile: the reaper would
    /// otherwise take the child's exit first and leave `f`'s wait with ECHILD (seen in a
    /// benchmark: "failed to start nft", one pod start in twenty). Holds the reaper (and
    /// spawns) for as long as `f` runs: only for short calls, off the runtime's threads.
    pub fn paused<T>(&self, f: impl FnOnce() -> T) -> T {
        let _held = self.lock();
        f()
    }

    fn reap_all(&self) {
        let mut inner = self.lock();
        loop {
            let (pid, exit) = match nix::sys::wait::waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, Exit::Code(code)),
                Ok(WaitStatus::Signaled(pid, signal, _)) => (pid, Exit::Signal(signal as i32)),
                Ok(WaitStatus::StillAlive) | Err(nix::Error::ECHILD) => break,
                Ok(_) => continue,
                Err(nix::Error::EINTR) => continue,
                Err(err) => {
                    debug!(%err, "waitpid failed");
                    break;
                }
            };
            match inner.watchers.remove(&pid.as_raw()) {
                // A watcher that stopped listening no longer cares; that is fine.
                Some(tx) => {
                    let _ = tx.send(exit);
                }
                None => {
                    debug!(pid = pid.as_raw(), %exit, "reaped an orphan");
                    if inner.orphans.len() == ORPHANS_KEPT {
                        inner.orphans.pop_front();
                    }
                    inner.orphans.push_back((pid.as_raw(), exit));
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves the maps consistent (inserts and removes are
        // single steps), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}
