//! One container of the pod: start it, log it, restart it by policy with kubelet's backoff, and
//! stop it gracefully.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use netns::{Process, Setup, Stdio};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::net::unix::pipe;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::reaper::Exit;
use super::status::{State, Terminated};
use super::{Pod, logs, probe, volumes};
use crate::spec::{self, EnvValue, Member, RestartPolicy};

/// The exit code kubelet reports for a container that could not be started.
const START_ERROR: i32 = 128;

/// After this long running cleanly, a container's backoff starts again from zero.
const BACKOFF_RESET: Duration = Duration::from_secs(600);
const BACKOFF_FIRST: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// kubelet gives a container at least this long between its preStop hook and SIGKILL.
const PRE_STOP_MIN_GRACE: Duration = Duration::from_secs(2);

/// How long a container's output is still read after its main process exited.
const LOG_DRAIN: Duration = Duration::from_secs(2);

/// How a member's loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Its last run exited with this code and the policy does not restart it.
    Exited(i32),
    /// It was told to stop.
    Stopped,
}

/// Runs `member` until its policy says it is done or `stop` is cancelled. `started` hears once
/// the first run is up (for native sidecars, which gate the next init container). Log
/// followers hear when it is done: no run of it comes after.
pub async fn run(
    pod: Arc<Pod>,
    member: Member,
    policy: RestartPolicy,
    stop: CancellationToken,
    started: Option<oneshot::Sender<()>>,
) -> End {
    let name = member.name.clone();
    let end = runs(pod.clone(), member, policy, stop, started).await;
    pod.member_done(&name);
    end
}

async fn runs(
    pod: Arc<Pod>,
    member: Member,
    policy: RestartPolicy,
    stop: CancellationToken,
    mut started: Option<oneshot::Sender<()>>,
) -> End {
    let object = format!(
        "{}{{{}}}",
        member.path.split('[').next().unwrap_or(""),
        member.name
    );
    let mut restarts = 0;
    let mut next_delay = Duration::ZERO;
    loop {
        let began = Instant::now();
        let started_at = Timestamp::now();
        let (exit, stopped) = match start(&pod, &member, restarts, &stop).await {
            Ok(mut run) => {
                pod.update(|s| {
                    if let Some(r) = s.record(&member.name) {
                        r.restarts = restarts as i32;
                        r.state = State::Running { since: started_at };
                        r.started = false;
                        r.ready = false;
                    }
                    let message = format!("Started container {} (pid {})", member.name, run.pid);
                    s.event("Normal", "Started", &object, message);
                });
                // postStart and the probes: they mark it started and ready, or ask for a restart.
                let kill = CancellationToken::new();
                let probes = tokio::spawn(probe::watch(
                    pod.clone(),
                    member.clone(),
                    run.pid,
                    object.clone(),
                    started.take(),
                    kill.clone(),
                ));
                let (exit, stopped) = tokio::select! {
                    exit = &mut run.exit => (exit.ok(), false),
                    () = stop.cancelled() => {
                        (terminate(&pod, &member, &object, &mut run, pod.deadline()).await, true)
                    }
                    () = kill.cancelled() => {
                        let deadline = Instant::now() + pod.plan.termination_grace_period;
                        (terminate(&pod, &member, &object, &mut run, deadline).await, false)
                    }
                };
                probes.abort();
                let _ = probes.await;
                // A container ends with its main process, as under a container runtime: what it
                // left in its process group goes too.
                let _ = killpg(Pid::from_raw(run.pid as i32), Signal::SIGKILL);
                if let Some(cgroup) = &pod.cgroup {
                    cgroup.kill(&member.name);
                }
                let _ = std::fs::remove_file(
                    pod.dir.join("members").join(format!("{}.pid", member.name)),
                );
                // Every line the run wrote is in its log before its exit is reported. Without a
                // cgroup, a process that left the group (setsid) may hold the pipes open: drain
                // for a bounded time only (that process is killed with the pod).
                if tokio::time::timeout(LOG_DRAIN, &mut run.logs)
                    .await
                    .is_err()
                {
                    warn!(container = %member.name, "a process the container left behind still holds its output; no longer logging it");
                    run.logs.abort();
                }
                (
                    exit.unwrap_or(Exit::Signal(Signal::SIGKILL as i32)),
                    stopped,
                )
            }
            Err(StartFailed::Error(message)) => {
                pod.update(|s| s.event("Warning", "Failed", &object, format!("Error: {message}")));
                (Exit::Code(START_ERROR), stop.is_cancelled())
            }
            Err(StartFailed::Stopped(exit)) => {
                let message = format!(
                    "Container {} was stopped before it started (it never reached exec)",
                    member.name
                );
                pod.update(|s| s.event("Warning", "Killing", &object, message));
                (exit, true)
            }
        };
        let code = exit.code();
        pod.update(|s| {
            let end = Terminated {
                exit_code: code,
                signal: match exit {
                    Exit::Signal(sig) => Some(sig),
                    Exit::Code(_) => None,
                },
                reason: match code {
                    0 => "Completed",
                    START_ERROR if matches!(exit, Exit::Code(_)) => "StartError",
                    _ => "Error",
                }
                .to_owned(),
                started: started_at,
                finished: Timestamp::now(),
            };
            if let Some(r) = s.record(&member.name) {
                r.state = State::Terminated(end);
                r.ready = false;
            }
            s.event(
                "Normal",
                "Exited",
                &object,
                format!("Container {} exited: {exit}", member.name),
            );
        });
        if stopped || stop.is_cancelled() {
            return End::Stopped;
        }
        if !policy.restarts(code) {
            return End::Exited(code);
        }

        // kubelet: the first restart is at once, then 10 s doubling to 300 s; ten minutes of
        // clean running forgets the history.
        if began.elapsed() >= BACKOFF_RESET {
            next_delay = Duration::ZERO;
        }
        let delay = next_delay;
        next_delay = if delay.is_zero() {
            BACKOFF_FIRST
        } else {
            (delay * 2).min(BACKOFF_MAX)
        };
        pod.update(|s| {
            if let Some(r) = s.record(&member.name) {
                let State::Terminated(last) = r.state.clone() else {
                    return;
                };
                r.last = Some(last);
                r.state = State::Waiting {
                    reason: if delay.is_zero() {
                        "ContainerCreating"
                    } else {
                        "CrashLoopBackOff"
                    }
                    .to_owned(),
                    message: (!delay.is_zero()).then(|| {
                        format!(
                            "back-off {}s restarting failed container={}",
                            delay.as_secs(),
                            member.name
                        )
                    }),
                };
            }
            if !delay.is_zero() {
                s.event(
                    "Warning",
                    "BackOff",
                    &object,
                    format!(
                        "Back-off {}s restarting failed container {}",
                        delay.as_secs(),
                        member.name
                    ),
                );
            }
        });
        restarts += 1;
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stop.cancelled() => return End::Stopped,
        }
    }
}

/// A started run of a container.
struct Run {
    pid: u32,
    exit: oneshot::Receiver<Exit>,
    logs: tokio::task::JoinHandle<()>,
}

/// Why a run did not start.
enum StartFailed {
    /// The message for the event and status.
    Error(String),
    /// The pod was stopped while the run's process was still on its way to exec (a setup step
    /// that hangs: a mount, a frozen cgroup); it was killed, and ended so.
    Stopped(Exit),
}

impl From<String> for StartFailed {
    fn from(message: String) -> Self {
        StartFailed::Error(message)
    }
}

/// Starts one run, unless `stop` comes first.
async fn start(
    pod: &Pod,
    member: &Member,
    restart: u32,
    stop: &CancellationToken,
) -> Result<Run, StartFailed> {
    let env = environment(pod, member);
    let lookup = |name: &str| {
        env.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let argv: Vec<String> = member
        .argv
        .iter()
        .map(|a| spec::expand(a, lookup))
        .collect();

    let dir = pod.dir.join("logs").join(&member.name);
    std::fs::create_dir_all(&dir)
        .map_err(|e| format!("failed to create {}: {e}", dir.display()))?;
    let log_path = dir.join(format!("{restart}.log"));

    let mounts = pod
        .volumes()
        .mounts_for(member)
        .map_err(|e| e.to_string())?;
    let mut setup = Setup::new().new_session();
    if !mounts.is_empty() || pod.plan.share_process_namespace {
        setup = setup.new_mount_namespace();
    }
    for mount in mounts {
        setup = match mount.source {
            volumes::Source::Path(src) => setup.bind_mount(&src, &mount.target, mount.read_only),
            volumes::Source::Fd(fd) => {
                setup.bind_mount_fd(fd.as_fd(), &mount.target, mount.read_only)
            }
        }
        .map_err(|e| e.to_string())?;
    }
    if pod.plan.share_process_namespace {
        setup = setup.mount_proc();
    }
    // Without workingDir a container starts in `/` (an image's default), not wherever the
    // supervisor happened to be started.
    let dir = member
        .working_dir
        .as_deref()
        .unwrap_or(std::path::Path::new("/"));
    setup = setup.chdir(dir).map_err(|e| e.to_string())?;
    setup = setup.user(member.run_as_user, member.run_as_group);

    let mut process = Process::new(resolve(&argv[0], &env))
        .args(&argv[1..])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::Null)
        .stdout(Stdio::Pipe)
        .stderr(Stdio::Pipe);
    if let Some(cgroup) = &pod.cgroup {
        let dir = cgroup
            .container(&member.name)
            .map_err(|e| format!("failed to make the container's cgroup: {e}"))?;
        process = process.cgroup(dir);
    }
    let failed = |e: netns::Error| format!("failed to start {:?}: {}", argv[0], error_chain(&e));
    // Forked here, exec'd meanwhile: the pod's other containers fork while this one execs.
    // The pidfd is opened while the reaper's lock is held, so before the child can be reaped:
    // it names this child whatever happens to its pid.
    let ((pending, pidfd), exit) = pod
        .reaper
        .spawn(|| {
            let pending = pod.ns.begin(process, setup)?;
            let pidfd = netns::PidFd::open(pending.pid());
            Ok::<_, netns::Error>((pending.pid(), (pending, pidfd)))
        })
        .map_err(failed)?;
    let started = tokio::select! {
        biased;
        started = pending.exec() => started.map_err(failed)?,
        () = stop.cancelled() => {
            warn!(container = %member.name, "stopped before it reached exec: killing it");
            if let Ok(pidfd) = &pidfd {
                let _ = pidfd.signal(Signal::SIGKILL);
            }
            if let Some(cgroup) = &pod.cgroup {
                cgroup.kill(&member.name);
            }
            let exit = exit.await.unwrap_or(Exit::Signal(Signal::SIGKILL as i32));
            return Err(StartFailed::Stopped(exit));
        }
    };
    let (pid, stdout, stderr) = (started.pid, started.stdout, started.stderr);
    let pipe = |fd: Option<OwnedFd>| {
        fd.ok_or_else(|| "no pipe".to_owned())
            .and_then(|fd| pipe::Receiver::from_owned_fd(fd).map_err(|e| e.to_string()))
    };
    let stdout = pipe(stdout)?;
    let stderr = pipe(stderr)?;
    let echo = pod.echo.then(|| member.name.clone());
    let logs = logs::capture(&log_path, stdout, stderr, echo, pod.logs_written.clone())
        .map_err(|e| format!("failed to open {}: {e}", log_path.display()))?;
    // Where `podkit exec` finds the container's current process.
    let members = pod.dir.join("members");
    let recorded = std::fs::create_dir_all(&members).and_then(|()| {
        super::status::write_atomic(
            &members.join(format!("{}.pid", member.name)),
            pid.to_string().as_bytes(),
        )
    });
    if let Err(err) = recorded {
        warn!(container = %member.name, %err, "failed to record the container's pid");
    }
    Ok(Run { pid, exit, logs })
}

/// The program to exec: `name` searched in the container's `PATH` here, before the fork, so
/// the child makes one execve instead of one per PATH entry while the supervisor waits for it.
/// A name not found on the host is left for the child to search (its mounts may differ), except
/// `podkit` itself: the sidecars are podkit, so a pod can run `podkit tail ...` even when podkit
/// is not installed on the PATH (run from a build tree), as the podkit its supervisor came from.
fn resolve(name: &str, env: &[(String, String)]) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    if name.contains('/') {
        return name.into();
    }
    let path = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map_or("", |(_, v)| v.as_str());
    path.split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| std::path::Path::new(dir).join(name))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .or_else(|| (name == "podkit").then(own_podkit).flatten())
        .unwrap_or_else(|| name.into())
}

/// The `podkit` this supervisor came from: itself, or the `podkit` beside the lean
/// `podkit-supervise` binary.
fn own_podkit() -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    if exe.file_name() == Some(crate::cli::SUPERVISOR_BIN.as_ref()) {
        let podkit = exe.with_file_name("podkit");
        return podkit.is_file().then_some(podkit);
    }
    Some(exe)
}

/// Stops a run as kubelet does: its preStop hook, then the stop signal to its whole process
/// group (and every process in its cgroup), then SIGKILL at `deadline` (but at least 2 s after the preStop hook ended).
async fn terminate(
    pod: &Pod,
    member: &Member,
    object: &str,
    run: &mut Run,
    mut deadline: Instant,
) -> Option<Exit> {
    let message = format!("Stopping container {}", member.name);
    pod.update(|s| s.event("Normal", "Killing", object, message));
    if let Some(hook) = &member.pre_stop {
        let budget = deadline.saturating_duration_since(Instant::now());
        let hook_run = probe::run_handler(pod, member, run.pid, hook, budget);
        // The container may exit during its hook; then there is nothing left to stop.
        tokio::select! {
            result = hook_run => {
                if let Err(err) = result {
                    let message = format!("PreStopHook failed: {err}");
                    pod.update(|s| s.event("Warning", "FailedPreStopHook", object, message));
                }
            }
            exit = &mut run.exit => return exit.ok(),
        }
        deadline = deadline.max(Instant::now() + PRE_STOP_MIN_GRACE);
    }
    let group = Pid::from_raw(run.pid as i32);
    if let Err(err) = killpg(group, Signal::SIGTERM) {
        warn!(container = %member.name, %err, "failed to signal the container");
    }
    if let Some(cgroup) = &pod.cgroup {
        cgroup.signal(&member.name, Signal::SIGTERM);
    }
    let exit = match tokio::time::timeout_at(deadline.into(), &mut run.exit).await {
        Ok(exit) => exit.ok(),
        Err(_) => {
            pod.update(|s| {
                s.event(
                    "Warning",
                    "Killing",
                    object,
                    format!(
                        "Container {} did not stop within the grace period: SIGKILL",
                        member.name
                    ),
                )
            });
            let _ = killpg(group, Signal::SIGKILL);
            if let Some(cgroup) = &pod.cgroup {
                cgroup.kill(&member.name);
            }
            (&mut run.exit).await.ok()
        }
    };
    // Whatever the leader left behind in its group goes with it.
    let _ = killpg(group, Signal::SIGKILL);
    exit
}

/// The container's environment: `PATH` and `HOSTNAME` as container runtimes set them, then the
/// manifest's variables in order, each value expanded against those before it.
pub(crate) fn environment(pod: &Pod, member: &Member) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        (
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ),
        ("HOSTNAME".into(), pod.plan.hostname.clone()),
    ];
    for var in &member.env {
        let value = match &var.value {
            EnvValue::Literal(text) => {
                let lookup = |name: &str| {
                    env.iter()
                        .rev()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v.as_str())
                };
                spec::expand(text, lookup)
            }
            EnvValue::FieldRef(field) => pod.field(field),
        };
        env.retain(|(k, _)| k != &var.name);
        env.push((var.name.clone(), value));
    }
    env
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
