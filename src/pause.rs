//! `podkit pause`: PID 1 of a pod's PID namespace. It holds the namespace open, reaps every
//! orphan the pod's processes leave (the kernel hands them to PID 1), and exits on SIGTERM or
//! SIGINT, which ends the namespace and every process in it. Single-threaded, no runtime:
//! signals are taken synchronously with sigwait(2).

use std::process::ExitCode;

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus};

/// Runs until SIGTERM or SIGINT.
pub fn run() -> anyhow::Result<ExitCode> {
    let mut signals = SigSet::empty();
    for signal in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT] {
        signals.add(signal);
    }
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&signals), None)?;
    loop {
        match signals.wait()? {
            Signal::SIGCHLD => reap(),
            _ => return Ok(ExitCode::SUCCESS),
        }
    }
}

fn reap() {
    loop {
        match nix::sys::wait::waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => {}
        }
    }
}
