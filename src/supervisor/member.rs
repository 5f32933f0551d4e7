//! One container of the pod: start it, log it, restart it by policy with kubelet's backoff, and
//! stop it gracefully.

use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use netns::{Process, Setup};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::image::error_chain;
use super::reaper::Exit;
use super::status::{State, Terminated};
use super::{Pod, attach, image, logs, probe, runtime, termination, volumes};
use crate::spec::{self, EnvValue, ImageRun, Member, ObjectKind, RestartPolicy, Runs};

/// The exit code kubelet reports for a container that could not be started.
const START_ERROR: i32 = 128;

/// After this long running cleanly, a container's backoff starts again from zero.
const BACKOFF_RESET: Duration = Duration::from_secs(600);
const BACKOFF_FIRST: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// kubelet gives every container at least this long between its stop signal and SIGKILL
/// (`minimumGracePeriodInSeconds`), also once the pod's grace period is spent.
const MIN_STOP_GRACE: Duration = Duration::from_secs(2);

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

/// Lets the lifecycle start the pod's next container, as kubelet starts them one by one. A
/// main container passes its turn once its first start is over: its postStart hook done, or
/// the start failed, or the run ended (kubelet goes on to the next container either way). A
/// native sidecar passes it once its startup probe has passed, in whichever run: until then
/// the pod waits.
#[derive(Debug, Clone)]
pub struct Turn {
    passed: Arc<tokio::sync::watch::Sender<bool>>,
    sidecar: bool,
}

impl Turn {
    pub fn new(sidecar: bool) -> (Turn, tokio::sync::watch::Receiver<bool>) {
        let (passed, receiver) = tokio::sync::watch::channel(false);
        let turn = Turn {
            passed: Arc::new(passed),
            sidecar,
        };
        (turn, receiver)
    }

    /// The container is started: past postStart and its startup probe.
    pub fn started(&self) {
        self.passed.send_replace(true);
    }

    /// A main container's start is over, whichever way it went.
    pub fn tried(&self) {
        if !self.sidecar {
            self.passed.send_replace(true);
        }
    }
}

/// The turn of the container started before this one: this one's first run starts only once
/// it is passed (an image container is created before that, so the runtime's slow part
/// overlaps; only its start waits).
pub type Gate = tokio::sync::watch::Receiver<bool>;

/// Waits for `gate` (taken: only a first run waits); false when `stop` came first.
async fn wait_turn(gate: &mut Option<Gate>, stop: &CancellationToken) -> bool {
    let Some(mut previous) = gate.take() else {
        return true;
    };
    tokio::select! {
        // An error: the previous container's task is over, which passes its turn too.
        _ = previous.wait_for(|passed| *passed) => true,
        () = stop.cancelled() => false,
    }
}

/// Runs `member` until its policy says it is done or `stop` is cancelled, starting only once
/// `gate` is passed and then passing its own `turn` (see [`Turn`]). Log followers and
/// containers waiting to stop after it hear when it is done: no run of it comes after.
pub async fn run(
    pod: Arc<Pod>,
    member: Member,
    policy: RestartPolicy,
    stop: CancellationToken,
    turn: Turn,
    gate: Option<Gate>,
) -> End {
    let name = member.name.clone();
    let end = runs(pod.clone(), member, policy, stop, turn.clone(), gate).await;
    // A main container that never got to start (stopped while pulling) is done trying too.
    turn.tried();
    pod.member_done(&name);
    end
}

async fn runs(
    pod: Arc<Pod>,
    member: Member,
    policy: RestartPolicy,
    stop: CancellationToken,
    turn: Turn,
    mut gate: Option<Gate>,
) -> End {
    let object = format!(
        "{}{{{}}}",
        member.path.split('[').next().unwrap_or(""),
        member.name
    );
    let mut restarts = 0;
    let mut next_delay = Duration::ZERO;
    loop {
        // An image container's image first, as kubelet makes it present before each start.
        let image = match &member.runs {
            Runs::Host => None,
            Runs::Image(run) => match pull(&pod, &member, run, &object, &stop, &turn).await {
                Some(image) => Some(image),
                None => return End::Stopped,
            },
        };
        // Its volumes' and env's ConfigMaps and Secrets, read now as kubelet reads them at
        // each start; missing ones are waited for.
        if !configure(&pod, &member, &object, &stop, &turn).await {
            return End::Stopped;
        }
        let began = Instant::now();
        let started_at = Timestamp::now();
        // A host process waits for its turn before it forks; an image container is created
        // first and waits before its start.
        if image.is_none() && !wait_turn(&mut gate, &stop).await {
            return End::Stopped;
        }
        // The container's OOM kills so far: its cgroup may outlive a run (on cgroup v2).
        let oom_kills = || pod.cgroup.as_ref().and_then(|c| c.oom_kills(&member.name));
        let oom_before = oom_kills().unwrap_or(0);
        let starting = start(&pod, &member, image.as_ref(), restarts, &stop, &mut gate);
        let (exit, stopped, message, oom) = match starting.await {
            Ok(mut run) => {
                super::lock(&pod.attachable).insert(member.name.clone(), run.io.clone());
                pod.update(|s| {
                    if let Some(r) = s.record(&member.name) {
                        r.restarts = restarts as i32;
                        r.state = State::Running { since: started_at };
                        r.started = false;
                        r.ready = false;
                    }
                    // kubelet's pair: the container made by the runtime, then started.
                    s.event(
                        "Normal",
                        "Created",
                        &object,
                        format!("Created container: {}", member.name),
                    );
                    let message = format!("Started container {} (pid {})", member.name, run.pid);
                    s.event("Normal", "Started", &object, message);
                });
                // postStart and the probes: they mark it started and ready, or ask for a restart.
                let kill = Arc::new(probe::Kill::default());
                let probes = tokio::spawn(probe::watch(
                    pod.clone(),
                    member.clone(),
                    run.pid,
                    object.clone(),
                    turn.clone(),
                    kill.clone(),
                ));
                let exit = tokio::select! {
                    exit = &mut run.exit => Some(exit.ok()),
                    () = stop.cancelled() => None,
                    () = kill.token.cancelled() => None,
                };
                // No probe or postStart runs while the container stops, as kubelet stops its
                // liveness and startup probes for a terminating pod.
                probes.abort();
                let _ = probes.await;
                let stopped = exit.is_none() && stop.is_cancelled();
                let exit = match exit {
                    Some(exit) => exit,
                    None if stopped => {
                        terminate(&pod, &member, &object, &mut run, pod.deadline()).await
                    }
                    // A failed probe's own grace period, else the pod's.
                    None => {
                        let grace = kill.grace().unwrap_or(pod.plan.termination_grace_period);
                        terminate(&pod, &member, &object, &mut run, Instant::now() + grace).await
                    }
                };
                turn.tried();
                // No attach to a run that ended; its stdin closed, its pty's master closed once
                // the log has read the last of it.
                super::lock(&pod.attachable).remove(&member.name);
                run.io.close();
                // Read before the runtime removes the cgroup with its counters.
                let oom = oom_kills().is_some_and(|n| n > oom_before);
                // A container ends with its main process, as under a container runtime: what it
                // left in its process group goes too.
                let _ = killpg(Pid::from_raw(run.pid as i32), Signal::SIGKILL);
                if let Some(cgroup) = &pod.cgroup {
                    cgroup.kill(&member.name);
                }
                let _ = std::fs::remove_file(
                    pod.dir.join("members").join(format!("{}.pid", member.name)),
                );
                // The runtime ends whatever is left in the container and forgets it.
                if let (Some(made), Some(rt)) = (&run.image, &pod.runtime) {
                    rt.delete(&pod, &made.id).await;
                }
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
                if let Some(made) = run.image.take() {
                    image::remove_run(&pod.dir, &member.name, made.rootfs);
                }
                let exit = exit.unwrap_or(Exit::Signal(Signal::SIGKILL as i32));
                let message = termination::message(&pod.dir, &pod.plan.name, &member, exit.code());
                (exit, stopped, message, oom)
            }
            Err(StartFailed::Error(message)) => {
                turn.tried();
                pod.update(|s| s.event("Warning", "Failed", &object, format!("Error: {message}")));
                (
                    Exit::Code(START_ERROR),
                    stop.is_cancelled(),
                    Some(message),
                    false,
                )
            }
            // Stopped while it waited for its turn: it never started, and stays Waiting.
            Err(StartFailed::BeforeItsTurn) => return End::Stopped,
            Err(StartFailed::Stopped(exit)) => {
                let message = format!(
                    "Container {} was stopped before it started (it never reached exec)",
                    member.name
                );
                pod.update(|s| s.event("Warning", "Killing", &object, message));
                (exit, true, None, false)
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
                // containerd's rule: killed (137) after its memory cgroup saw an OOM kill.
                reason: match code {
                    0 => "Completed",
                    START_ERROR if matches!(exit, Exit::Code(_)) => "StartError",
                    137 if oom => "OOMKilled",
                    _ => "Error",
                }
                .to_owned(),
                started: started_at,
                finished: Timestamp::now(),
                message,
            };
            if let Some(r) = s.record(&member.name) {
                r.state = State::Terminated(end);
                // kubelet: a completed init container is ready; nothing stopped is started.
                r.ready = code == 0 && member.is_plain_init();
                r.started = false;
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
    /// An image container's runtime state and root filesystem, removed after the run.
    image: Option<ImageMade>,
    /// Its stdin and pty, for `podkit attach`; closed when the run ends.
    io: Arc<attach::RunIo>,
}

/// What the runtime made for one run of an image container.
struct ImageMade {
    id: String,
    rootfs: oci::Rootfs,
}

/// kubelet's back-off for image pulls: 10 s doubling to 300 s.
const PULL_BACKOFF_FIRST: Duration = Duration::from_secs(10);

/// Makes `run`'s image present, retrying with kubelet's back-off and reasons (`ErrImagePull`,
/// `ImagePullBackOff`, `ErrImageNeverPull`) until it is or `stop` comes (`None`).
async fn pull(
    pod: &Pod,
    member: &Member,
    run: &ImageRun,
    object: &str,
    stop: &CancellationToken,
    turn: &Turn,
) -> Option<oci::Image> {
    let mut delay = PULL_BACKOFF_FIRST;
    loop {
        let missing = match image::ensure(pod, run, object, stop).await {
            Ok(Some(found)) => {
                let id = image::image_id(run, &found);
                pod.update(|s| {
                    if let Some(r) = s.record(&member.name) {
                        r.image_id = id;
                    }
                });
                return Some(found);
            }
            Ok(None) => return None,
            Err(missing) => missing,
        };
        pod.update(|s| {
            if let Some(r) = s.record(&member.name) {
                r.state = State::Waiting {
                    reason: missing.reason.to_owned(),
                    message: Some(missing.message.clone()),
                };
            }
            let event = if missing.reason == "ErrImageNeverPull" {
                "ErrImageNeverPull"
            } else {
                "Failed"
            };
            s.event("Warning", event, object, missing.message.clone());
            s.event(
                "Warning",
                "Failed",
                object,
                format!("Error: {}", missing.reason),
            );
        });
        // kubelet pulls within the container's start, and goes on to the next container when
        // the pull failed.
        turn.tried();
        if missing.reason == "ErrImagePull" {
            // As kubelet (1.30 and later) words it: the back-off with the error behind it.
            let message = format!(
                "Back-off pulling image {:?}: ErrImagePull: {}",
                run.image, missing.message
            );
            pod.update(|s| {
                if let Some(r) = s.record(&member.name) {
                    r.state = State::Waiting {
                        reason: "ImagePullBackOff".to_owned(),
                        message: Some(message.clone()),
                    };
                }
                s.event("Normal", "BackOff", object, message.clone());
            });
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stop.cancelled() => return None,
        }
        delay = (delay * 2).min(BACKOFF_MAX);
    }
}

/// How long a container waiting for a ConfigMap or Secret waits before it looks again, when
/// no change of the store woke it: kubelet's pod worker back-off.
const CONFIG_RETRY: Duration = Duration::from_secs(10);

/// What a container's env read from ConfigMaps and Secrets when it last started.
#[derive(Debug, Clone, Default)]
pub(crate) struct ObjectEnv {
    /// `envFrom`, in order, each name prefixed.
    from: Vec<(String, String)>,
    /// The value of each `env` entry (by index) that is a key reference; `None` when it is
    /// optional and missing (the variable is left out).
    keys: std::collections::HashMap<usize, Option<String>>,
}

/// Reads what `member`'s env takes from ConfigMaps and Secrets (kubelet's
/// `makeEnvironmentVariables`), or the message of its `CreateContainerConfigError`.
fn object_env(pod: &Pod, member: &Member) -> Result<ObjectEnv, String> {
    let store = crate::objects::Store::new(&image::storage());
    let ns = &pod.plan.namespace;
    let mut cache: std::collections::HashMap<(ObjectKind, String), Option<crate::objects::Data>> =
        std::collections::HashMap::new();
    let mut read = |kind: ObjectKind, name: &str| -> Result<Option<crate::objects::Data>, String> {
        if let Some(found) = cache.get(&(kind, name.to_owned())) {
            return Ok(found.clone());
        }
        let found = store
            .get(kind, ns, name)
            .map_err(|e| format!("{e:#}"))?
            .map(|v| crate::objects::data(kind, &v));
        cache.insert((kind, name.to_owned()), found.clone());
        Ok(found)
    };
    let mut env = ObjectEnv::default();
    for from in &member.env_from {
        match read(from.kind, &from.name)? {
            Some(data) => env.from.extend(
                data.env
                    .into_iter()
                    .map(|(k, v)| (format!("{}{k}", from.prefix), v)),
            ),
            None if from.optional => {}
            None => return Err(format!("{} {:?} not found", from.kind.lower(), from.name)),
        }
    }
    for (i, var) in member.env.iter().enumerate() {
        let EnvValue::Key(key) = &var.value else {
            continue;
        };
        let value = match read(key.kind, &key.name)? {
            Some(data) => match data.env.get(&key.key) {
                Some(value) => Some(value.clone()),
                None if key.optional => None,
                None => {
                    return Err(format!(
                        "couldn't find key {} in {} {ns}/{}",
                        key.key,
                        key.kind.kind(),
                        key.name
                    ));
                }
            },
            None if key.optional => None,
            None => return Err(format!("{} {:?} not found", key.kind.lower(), key.name)),
        };
        env.keys.insert(i, value);
    }
    Ok(env)
}

/// Before each start: the pod's configMap, secret and projected volumes written (kubelet
/// waits for every volume of the pod before it starts a container) and the ConfigMaps and
/// Secrets of the container's env read. While one is missing, the container waits as under
/// kubelet (`ContainerCreating` with a `FailedMount` event for a volume,
/// `CreateContainerConfigError` for env), looking again when an object changes or after
/// [`CONFIG_RETRY`]. False when stopped meanwhile.
async fn configure(
    pod: &Pod,
    member: &Member,
    object: &str,
    stop: &CancellationToken,
    turn: &Turn,
) -> bool {
    let env_reads = !member.env_from.is_empty()
        || member
            .env
            .iter()
            .any(|e| matches!(e.value, EnvValue::Key(_)));
    let mut changes = pod.objects_changed.subscribe();
    let mut said: Option<String> = None;
    loop {
        if !env_reads && !pod.volumes().has_objects() {
            return true;
        }
        changes.borrow_and_update();
        let render = |value: &spec::DownwardValue| super::downward(&pod.plan, value);
        let synced = pod.volumes().sync_objects(&render);
        let failure = match synced {
            Err(err) => ("ContainerCreating", "FailedMount", err.to_string()),
            Ok(()) if !env_reads => return true,
            Ok(()) => match object_env(pod, member) {
                Ok(env) => {
                    super::lock(&pod.object_env).insert(member.name.clone(), env);
                    return true;
                }
                Err(message) => ("CreateContainerConfigError", "Failed", message),
            },
        };
        let (reason, event, message) = failure;
        pod.update(|s| {
            if let Some(r) = s.record(&member.name) {
                r.state = State::Waiting {
                    reason: reason.to_owned(),
                    message: Some(message.clone()),
                };
            }
            // Said once for each new reason: the retries would fill the events.
            if said.as_deref() != Some(message.as_str()) {
                let (on, text) = if event == "FailedMount" {
                    ("pod", message.clone())
                } else {
                    (object, format!("Error: {message}"))
                };
                s.event("Warning", event, on, text);
            }
        });
        said = Some(message);
        // kubelet goes on to the next container when one cannot be configured.
        turn.tried();
        tokio::select! {
            () = tokio::time::sleep(CONFIG_RETRY) => {}
            _ = changes.changed() => {}
            () = stop.cancelled() => return false,
        }
    }
}

/// Why a run did not start.
enum StartFailed {
    /// The message for the event and status.
    Error(String),
    /// The pod was stopped while the run's process was still on its way to exec (a setup step
    /// that hangs: a mount, a frozen cgroup); it was killed, and ended so.
    Stopped(Exit),
    /// The pod was stopped while the created container waited for its turn to start; what was
    /// made for it is removed.
    BeforeItsTurn,
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
    image: Option<&oci::Image>,
    restart: u32,
    stop: &CancellationToken,
    gate: &mut Option<Gate>,
) -> Result<Run, StartFailed> {
    if let (Runs::Image(run), Some(image)) = (&member.runs, image) {
        return start_image(pod, member, run, image, restart, stop, gate).await;
    }
    let env = environment(pod, member, true);
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

    let log_path = log_path(pod, member, restart)?;

    let mounts = pod
        .volumes()
        .mounts_for(member)
        .map_err(|e| e.to_string())?;
    // A terminal's process leads the session the pty is the controlling terminal of.
    let mut setup = if member.stdio.tty {
        Setup::new().controlling_terminal()
    } else {
        Setup::new().new_session()
    };
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
    setup = host_security(setup, member)?;
    setup = setup.user(member.run_as_user, member.run_as_group);

    let ([stdin, stdout, stderr], plumbing) = attach::host_stdio(member.stdio)
        .map_err(|e| format!("failed to make the container's stdio: {e}"))?;
    let mut process = Process::new(resolve(&argv[0], &env))
        .args(&argv[1..])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(stdin)
        .stdout(stdout)
        .stderr(stderr);
    if let Some(cgroup) = &pod.cgroup {
        cgroup.set_container_huge_pages(&member.name, &member.hugepages)?;
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
    let pid = started.pid;
    let streams = plumbing.start(started.stdout, started.stderr)?;
    let echo = pod.echo.then(|| member.name.clone());
    let written = pod.logs_written.clone();
    let (stdout, stderr, tee) = (streams.stdout, streams.stderr, Some(streams.tee));
    let logs = logs::capture(&log_path, stdout, stderr, echo, written, tee)
        .map_err(|e| format!("failed to open {}: {e}", log_path.display()))?;
    let io = streams.io;
    record_pid(pod, member, pid);
    Ok(Run {
        pid,
        exit,
        logs,
        image: None,
        io,
    })
}

/// Where a run's CRI log goes: `logs/NAME/RESTART.log`.
fn log_path(pod: &Pod, member: &Member, restart: u32) -> Result<std::path::PathBuf, String> {
    let dir = pod.dir.join("logs").join(&member.name);
    std::fs::create_dir_all(&dir)
        .map_err(|e| format!("failed to create {}: {e}", dir.display()))?;
    Ok(dir.join(format!("{restart}.log")))
}

/// Records where `podkit exec` finds the container's current process.
fn record_pid(pod: &Pod, member: &Member, pid: u32) {
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
}

/// Starts one run of an image container through the OCI runtime: a fresh root filesystem,
/// the bundle, `create` (the log pipes as its stdio), the pid watched, `start` once its turn
/// comes (or `run --detach` when it had come already).
async fn start_image(
    pod: &Pod,
    member: &Member,
    run: &ImageRun,
    image: &oci::Image,
    restart: u32,
    stop: &CancellationToken,
    gate: &mut Option<Gate>,
) -> Result<Run, StartFailed> {
    let env = environment(pod, member, false);
    let log_path = log_path(pod, member, restart)?;
    let rt = pod
        .runtime
        .as_ref()
        .ok_or_else(|| "no OCI runtime: the pod was planned without image containers".to_owned())?;
    let prepared = image::prepare(pod, member, run, image, rt, &env, gate.as_ref()).await?;
    let image::Prepared {
        id,
        bundle,
        rootfs,
        created,
        made,
        plumbing,
    } = prepared;
    let streams = plumbing.start(Some(created.stdout), Some(created.stderr));
    let logs = streams.and_then(|streams| {
        let echo = pod.echo.then(|| member.name.clone());
        let written = pod.logs_written.clone();
        let (stdout, stderr, tee) = (streams.stdout, streams.stderr, Some(streams.tee));
        logs::capture(&log_path, stdout, stderr, echo, written, tee)
            .map(|logs| (logs, streams.io))
            .map_err(|e| format!("failed to open {}: {e}", log_path.display()))
    });
    let started = match logs {
        // Its turn had come: `run --detach` started it.
        Ok(logs) if made == runtime::Make::Run => {
            gate.take();
            Ok(logs)
        }
        Ok(logs) if wait_turn(gate, stop).await => rt
            .start(pod, &id, &bundle)
            .await
            .map(|()| logs)
            .map_err(StartFailed::Error),
        Ok(_) => Err(StartFailed::BeforeItsTurn),
        Err(err) => Err(StartFailed::Error(err)),
    };
    let (logs, io) = match started {
        Ok(started) => started,
        Err(failed) => {
            // Never started (or started by `run --detach` with no log to write to): its
            // process goes with the runtime's state.
            let _ = nix::sys::signal::kill(Pid::from_raw(created.pid as i32), Signal::SIGKILL);
            let _ = created.exit.await;
            rt.delete(pod, &id).await;
            image::remove_run(&pod.dir, &member.name, rootfs);
            return Err(failed);
        }
    };
    record_pid(pod, member, created.pid);
    Ok(Run {
        pid: created.pid,
        exit: created.exit,
        logs,
        image: Some(ImageMade { id, rootfs }),
        io,
    })
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
pub(super) fn own_podkit() -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    if exe.file_name() == Some(crate::cli::SUPERVISOR_BIN.as_ref()) {
        let podkit = exe.with_file_name("podkit");
        return podkit.is_file().then_some(podkit);
    }
    Some(exe)
}

/// Stops a run as kubelet does (`killContainer`): not ready from now on; its preStop hook; a
/// native sidecar then waits for its turn (the main containers and the sidecars after it
/// stopped); then the stop signal to its main process (as a runtime's `kill` sends it; the
/// process passes it on or not), then SIGKILL to everything in the container at `deadline`,
/// but never less than 2 s after the stop signal.
async fn terminate(
    pod: &Pod,
    member: &Member,
    object: &str,
    run: &mut Run,
    mut deadline: Instant,
) -> Option<Exit> {
    let message = format!("Stopping container {}", member.name);
    pod.update(|s| {
        if let Some(r) = s.record(&member.name) {
            r.ready = false;
        }
        s.event("Normal", "Killing", object, message);
    });
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
    }
    if member.sidecar {
        tokio::select! {
            _ = tokio::time::timeout_at(deadline.into(), pod.turn_to_stop(member)) => {}
            exit = &mut run.exit => return exit.ok(),
        }
    }
    deadline = deadline.max(Instant::now() + MIN_STOP_GRACE);
    let main = Pid::from_raw(run.pid as i32);
    if let Err(err) = nix::sys::signal::kill(main, Signal::SIGTERM) {
        warn!(container = %member.name, %err, "failed to signal the container");
    }
    match tokio::time::timeout_at(deadline.into(), &mut run.exit).await {
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
            kill_all(pod, member, run);
            (&mut run.exit).await.ok()
        }
    }
}

/// SIGKILL to everything in a run: an image container's first process (PID 1 of its PID
/// namespace, or the runtime's child), a host process's whole process group, and every
/// process in the container's cgroup.
fn kill_all(pod: &Pod, member: &Member, run: &Run) {
    let main = Pid::from_raw(run.pid as i32);
    let _ = nix::sys::signal::kill(main, Signal::SIGKILL);
    if run.image.is_none() {
        let _ = killpg(main, Signal::SIGKILL);
    }
    if let Some(cgroup) = &pod.cgroup {
        cgroup.kill(&member.name);
    }
}

/// The container's environment: for a host process, `PATH` and `HOSTNAME` as container
/// runtimes set them (`defaults`; an image container gets its image's and the runtime's), then
/// the manifest's variables in order, each value expanded against those before it.
pub(crate) fn environment(pod: &Pod, member: &Member, defaults: bool) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    if defaults {
        env.push((
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ));
        env.push(("HOSTNAME".into(), pod.plan.hostname.clone()));
    }
    // The Services of the pod's namespace, as kubelet gives them (`enableServiceLinks`);
    // the container's own variables override them and may refer to them.
    if pod.plan.manifest["spec"]["enableServiceLinks"] != false {
        for (name, value) in
            crate::controller::service::service_env(&image::storage(), &pod.plan.namespace)
        {
            env.retain(|(k, _)| k != &name);
            env.push((name, value));
        }
    }
    let objects = super::lock(&pod.object_env)
        .get(&member.name)
        .cloned()
        .unwrap_or_default();
    for (name, value) in objects.from {
        env.retain(|(k, _)| k != &name);
        env.push((name, value));
    }
    for (i, var) in member.env.iter().enumerate() {
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
            EnvValue::ResourceRef(r) => super::resource_field(&pod.plan, r),
            EnvValue::Key(_) => match objects.keys.get(&i) {
                Some(Some(value)) => value.clone(),
                _ => continue,
            },
        };
        env.retain(|(k, _)| k != &var.name);
        env.push((var.name.clone(), value));
    }
    env
}

/// A host process's securityContext as steps before its exec: the capabilities it does not keep
/// dropped from its bounding set, no_new_privs. Its exec probes and hooks get the same.
pub(crate) fn host_security(setup: Setup, member: &Member) -> Result<Setup, String> {
    let security = &member.host_security;
    let field = || format!("{}.securityContext.capabilities", member.path);
    let drops =
        oci::bundle::bounding_drops(&security.add_capabilities, &security.drop_capabilities)
            .map_err(|e| format!("{}: {e}", field()))?;
    // What the supervisor lacks it cannot give: an added capability outside its own bounding
    // set fails the start, as a runtime fails to grant it. (Read once, and only when asked.)
    static OWN: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let own = || {
        *OWN.get_or_init(|| {
            std::fs::read_to_string("/proc/self/status")
                .ok()
                .and_then(|s| bounding_set(&s))
                .unwrap_or(u64::MAX)
        })
    };
    for name in &security.add_capabilities {
        let number =
            oci::bundle::capability_number(name).map_err(|e| format!("{}: {e}", field()))?;
        if number.is_some_and(|n| own() & (1 << n) == 0) {
            return Err(format!(
                "{}: {name} cannot be added: podkit's supervisor does not have it (not in its \
                 capability bounding set)",
                field()
            ));
        }
    }
    let setup = setup.drop_bounding(drops);
    Ok(if security.no_new_privileges {
        setup.no_new_privileges()
    } else {
        setup
    })
}

/// `CapBnd` of a /proc/PID/status text: the process's capability bounding set.
pub(crate) fn bounding_set(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}
