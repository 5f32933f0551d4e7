//! Workload controllers: one small process per Deployment, ReplicaSet, ReplicationController,
//! StatefulSet, DaemonSet, Job and CronJob, with no central daemon, as DESIGN.md fixes it.
//! `apply` keeps the object in the object store and makes sure its controller runs
//! (`podkit controller KIND NAMESPACE NAME`, detached); the controller keeps the object's pods
//! (a CronJob's: its Jobs) as the controllers of a cluster keep them, and holds no state a
//! restart would lose: each pass reads the object and what it owns (pods and Jobs whose
//! `metadata.ownerReferences` name its uid); what it reports it writes into the object's
//! `status`. One controller per object: it holds an exclusive lock on its pid file for its
//! whole life; a second one finds it held and leaves. A controller that died is started again
//! by the next podkit command that looks at workloads (`apply`, `get`, `scale`, `rollout`,
//! `gc`).
//!
//! Layout: `replicas.rs` (Deployment, ReplicaSet, ReplicationController, DaemonSet: a count of
//! interchangeable pods), `stateful_set.rs` (ordered pods with stable names and claims),
//! `job.rs` (pods run to completion), `cron_job.rs` (Jobs on a schedule).

mod cron_job;
mod job;
mod replicas;
pub mod service;
mod stateful_set;

pub use job::finished as job_finished;

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::Value;

use crate::objects::Store;
use crate::spec::{self, ObjectKind};
use crate::state::{self, PodState};

/// The alphabet of Kubernetes' generated names (`rand.SafeEncodeString`): no vowels, no
/// look-alikes.
const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Where a controller keeps its pid (locked while it runs) and its log.
pub fn controller_dir(root: &Path, kind: ObjectKind, namespace: &str, name: &str) -> PathBuf {
    root.join("controllers")
        .join(namespace)
        .join(kind.lower())
        .join(name)
}

/// The pod-template-hash of a workload's template: FNV-32a of the template as JSON (keys in
/// order), its decimal digits mapped onto [`ALPHANUMS`] as `rand.SafeEncodeString` maps them.
pub fn template_hash(workload: &Value) -> String {
    let text = serde_json::to_string(&workload["spec"]["template"]).unwrap_or_default();
    let mut hash: u32 = 0x811c_9dc5;
    for b in text.bytes() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash.to_string()
        .bytes()
        .map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char)
        .collect()
}

/// Five letters of [`ALPHANUMS`] for a pod's name, from the kernel's random source.
fn suffix() -> String {
    let bytes = std::fs::read_to_string("/proc/sys/kernel/random/uuid").unwrap_or_default();
    let mut seed: u64 = bytes.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    (0..5)
        .map(|_| {
            let c = ALPHANUMS[(seed % ALPHANUMS.len() as u64) as usize] as char;
            seed /= ALPHANUMS.len() as u64;
            c
        })
        .collect()
}

/// The uid of the object that controls `manifest` (its controller owner reference).
pub fn owner_uid(manifest: &Value) -> Option<&str> {
    manifest["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|o| o["controller"] == true)?["uid"]
        .as_str()
}

/// The pods the object with `uid` controls.
pub fn owned_pods(root: &Path, uid: &str) -> Vec<PodState> {
    if uid.is_empty() {
        return Vec::new();
    }
    state::list(root)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| owner_uid(&p.manifest) == Some(uid))
        .collect()
}

/// The Jobs the CronJob with `uid` controls, in its namespace.
pub fn owned_jobs(storage: &Path, namespace: &str, uid: &str) -> Vec<Value> {
    Store::new(storage)
        .list(ObjectKind::Job, Some(namespace))
        .unwrap_or_default()
        .into_iter()
        .filter(|j| !uid.is_empty() && owner_uid(j) == Some(uid))
        .collect()
}

/// The owner reference an object gives what it makes.
fn owner_ref(object: &Value, kind: &str, api_version: &str, name: &str) -> Value {
    serde_json::json!({
        "apiVersion": api_version,
        "kind": kind,
        "name": name,
        "uid": object["metadata"]["uid"],
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// Whether the pod is Ready (its Ready condition True) for at least `min_ready`.
fn available(pod: &PodState, min_ready: Duration) -> bool {
    pod.status.as_ref().is_some_and(|s| {
        s.conditions.iter().flatten().any(|c| {
            c.type_ == "Ready"
                && c.status == "True"
                && c.last_transition_time.as_ref().is_none_or(|t| {
                    std::time::SystemTime::from(t.0)
                        .elapsed()
                        .is_ok_and(|e| e >= min_ready)
                })
        })
    })
}

/// Whether a pod is on its way out or over: being deleted, ended, or its supervisor gone.
fn leaving(pod: &PodState) -> bool {
    pod.deletion().is_some() || matches!(pod.phase(), "Succeeded" | "Failed" | "Unknown")
}

/// Now as the API writes times: `2026-12-02T10:00:00Z`.
fn now_text() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// A time the API wrote (`status.startTime`, `creationTimestamp`).
fn parse_time(value: &Value) -> Option<jiff::Timestamp> {
    value.as_str()?.parse().ok()
}

/// Takes the controller's lock, or `None` when another controller of the object holds it.
fn lock(dir: &Path) -> anyhow::Result<Option<nix::fcntl::Flock<std::fs::File>>> {
    std::fs::create_dir_all(dir).with_context(|| format!("failed to create {dir:?}"))?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("pid"))?;
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(locked) => Ok(Some(locked)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, err)) => Err(err).context("failed to lock the controller's pid file"),
    }
}

/// Whether a controller of the object runs (holds its lock).
pub fn running(root: &Path, kind: ObjectKind, namespace: &str, name: &str) -> bool {
    let dir = controller_dir(root, kind, namespace, name);
    let Ok(file) = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("pid"))
    else {
        return false;
    };
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(_unlocked_on_drop) => false,
        Err(_) => true,
    }
}

/// The pid of the object's controller, when one runs.
pub fn pid(root: &Path, kind: ObjectKind, namespace: &str, name: &str) -> Option<i32> {
    if !running(root, kind, namespace, name) {
        return None;
    }
    let dir = controller_dir(root, kind, namespace, name);
    std::fs::read_to_string(dir.join("pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Starts the object's controller unless one runs: `podkit controller KIND NAMESPACE NAME`,
/// detached, its output in its directory's `controller.log`.
pub fn ensure(
    root: &Path,
    storage: &Path,
    kind: ObjectKind,
    namespace: &str,
    name: &str,
) -> anyhow::Result<()> {
    if running(root, kind, namespace, name) {
        return Ok(());
    }
    let dir = controller_dir(root, kind, namespace, name);
    std::fs::create_dir_all(&dir).with_context(|| format!("failed to create {dir:?}"))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("controller.log"))?;
    let exe = std::env::current_exe().context("failed to find the podkit binary")?;
    std::process::Command::new(exe)
        .args(["controller", kind.lower(), namespace, name])
        .env("PODKIT_ROOT", root)
        .env("PODKIT_STORAGE", storage)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("failed to start the controller of {} {name:?}", kind.kind()))?;
    Ok(())
}

/// Starts the controller of every kept workload that has none running (one died, or the host
/// rebooted). A finished Job's controller has nothing to do but its TTL: it is started too,
/// and leaves when there is none.
pub fn ensure_all(root: &Path, storage: &Path) {
    let store = Store::new(storage);
    for &kind in ObjectKind::CONTROLLED {
        for d in store.list(kind, None).unwrap_or_default() {
            let (ns, name) = (
                d["metadata"]["namespace"].as_str().unwrap_or("default"),
                d["metadata"]["name"].as_str().unwrap_or(""),
            );
            if kind == ObjectKind::Job
                && job::finished(&d)
                && d["spec"]["ttlSecondsAfterFinished"].is_null()
            {
                continue;
            }
            if let Err(err) = ensure(root, storage, kind, ns, name) {
                eprintln!("warning: {err:#}");
            }
        }
    }
}

/// Stops the object's controller (SIGTERM) and waits, bounded, until it is gone.
pub fn stop(root: &Path, kind: ObjectKind, namespace: &str, name: &str) {
    if let Some(pid) = pid(root, kind, namespace, name) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        // It exits at once on SIGTERM (read from its signalfd): a short poll of its lock.
        while running(root, kind, namespace, name) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let _ = std::fs::remove_dir_all(controller_dir(root, kind, namespace, name));
}

/// What removing a workload left to wait for.
#[derive(Debug, Default)]
pub struct Removed {
    /// Whether the object was there.
    pub found: bool,
    /// Its pods (a CronJob's: its Jobs' pods), each told to stop.
    pub pods: Vec<PodState>,
    /// Claims to delete once the pods are gone (a StatefulSet's, `whenDeleted: Delete`).
    pub claims: Vec<String>,
}

/// Removes a workload as `kubectl delete` with the default (background) propagation does,
/// here at once: the object, its controller (stopped first: it would replace the pods), and
/// what it owns: its pods told to stop, a CronJob's Jobs removed the same way.
pub fn remove(
    root: &Path,
    storage: &Path,
    kind: ObjectKind,
    namespace: &str,
    name: &str,
) -> anyhow::Result<Removed> {
    let store = Store::new(storage);
    let Some(object) = store.get(kind, namespace, name)? else {
        return Ok(Removed::default());
    };
    stop(root, kind, namespace, name);
    store.delete(kind, namespace, name)?;
    if kind == ObjectKind::Service {
        service::clean_up(root, storage, namespace, name);
    }
    let uid = object["metadata"]["uid"].as_str().unwrap_or("");
    let mut removed = Removed {
        found: true,
        ..Removed::default()
    };
    if kind == ObjectKind::CronJob {
        for job in owned_jobs(storage, namespace, uid) {
            let job_name = job["metadata"]["name"].as_str().unwrap_or("");
            let more = remove(root, storage, ObjectKind::Job, namespace, job_name)?;
            removed.pods.extend(more.pods);
        }
    }
    if kind == ObjectKind::StatefulSet {
        removed.claims = stateful_set::claims_deleted_with(&object);
    }
    // Each pod told at once, side by side: a request to a pod's API costs a few ms (the
    // answer comes once its supervisor has started to stop it).
    let pods = owned_pods(root, uid);
    std::thread::scope(|scope| {
        for pod in &pods {
            scope.spawn(|| delete_pod(pod));
        }
    });
    removed.pods.extend(pods);
    Ok(removed)
}

/// One workload's reconciliation; what it keeps between passes only paces it (nothing a
/// restart must keep).
trait Control {
    /// Makes what runs match the object; the longest wait until the next pass (`None`: the
    /// usual tick, or sooner on a change).
    fn reconcile(&mut self, object: &Value) -> anyhow::Result<Option<Duration>>;
}

/// What every controller knows of its object.
struct Workload {
    kind: ObjectKind,
    root: PathBuf,
    storage: PathBuf,
    namespace: String,
    name: String,
}

impl Workload {
    fn store(&self) -> Store {
        Store::new(&self.storage)
    }

    /// Starts one pod of `workload`'s template (its `spec.template`) named `pod`: its
    /// supervisor detached, as `apply` starts one.
    fn create(
        &self,
        workload: &Value,
        pod: &str,
        labels: &[(&str, &str)],
        owner: Value,
    ) -> anyhow::Result<()> {
        let mut plan = spec::template_plan(workload, pod, labels, owner)?;
        crate::cli::pull_secrets_from_store(&self.storage, &mut plan)?;
        crate::cli::start_supervisor(&self.root, &plan, false)?;
        eprintln!(
            "{} {:?}: created pod {pod:?}",
            workload["kind"].as_str().unwrap_or("").to_lowercase(),
            self.name
        );
        Ok(())
    }
}

/// Pods a controller made and has not seen yet: counted as there (their supervisors are still
/// making them) until seen, or taken as failed to start after [`START_GRACE`]; creations that
/// keep failing back off (1 s doubling to 60 s).
#[derive(Default)]
struct Creations {
    made: Vec<(String, Instant)>,
    backoff: Duration,
    not_before: Option<Instant>,
}

/// How long after its creation a pod that is not there counts as failed to start.
const START_GRACE: Duration = Duration::from_secs(2);

impl Creations {
    /// Updates from the pods there are; how many made ones are still on their way.
    fn seen(&mut self, pods: &[PodState], what: &str) -> u32 {
        let mut failed = false;
        self.made.retain(|(n, at)| {
            if pods.iter().any(|p| &p.name == n) {
                return false;
            }
            if at.elapsed() > START_GRACE {
                failed = true;
                return false;
            }
            true
        });
        if failed {
            self.backoff =
                (self.backoff * 2).clamp(Duration::from_secs(1), Duration::from_secs(60));
            self.not_before = Some(Instant::now() + self.backoff);
            eprintln!(
                "pods of {what} failed to start (their supervisors' logs are in the pods \
                 directory, .NAME.supervisor.log); next try in {}s",
                self.backoff.as_secs()
            );
        } else if self.made.is_empty() && !pods.is_empty() {
            self.backoff = Duration::ZERO;
        }
        self.made.len() as u32
    }

    /// Whether a creation may be tried now.
    fn may_create(&self) -> bool {
        self.not_before.is_none_or(|t| Instant::now() >= t)
    }

    fn made(&mut self, pod: String) {
        self.made.push((pod, Instant::now()));
    }

    /// Whether the pod is on its way.
    fn pending(&self, pod: &str) -> bool {
        self.made.iter().any(|(n, _)| n == pod)
    }

    /// Whether a pod whose name starts so is on its way.
    fn pending_prefix(&self, prefix: &str) -> bool {
        self.made.iter().any(|(n, _)| n.starts_with(prefix))
    }
}

/// The controller process: reconciles until its object is deleted or it is told to stop.
pub fn run(
    root: &Path,
    storage: &Path,
    kind: ObjectKind,
    namespace: &str,
    name: &str,
) -> anyhow::Result<()> {
    anyhow::ensure!(kind.has_controller(), "no controller for {}", kind.kind());
    let _ = nix::unistd::setsid();
    let dir = controller_dir(root, kind, namespace, name);
    let Some(locked) = lock(&dir)? else {
        // Another controller of the object runs: it is the one.
        return Ok(());
    };
    std::fs::write(dir.join("pid"), std::process::id().to_string())?;
    let store = Store::new(storage);
    // A CronJob also wakes when one of its Jobs changes (ends).
    let watched = match kind {
        ObjectKind::CronJob => vec![kind, ObjectKind::Job],
        _ => vec![kind],
    };
    let mut watch = Watch::new(root, &store, namespace, &watched)?;
    let context = Workload {
        kind,
        root: root.to_path_buf(),
        storage: storage.to_path_buf(),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    };
    let mut control: Box<dyn Control> = match kind {
        ObjectKind::StatefulSet => Box::new(stateful_set::StatefulSet::new(context)),
        ObjectKind::Job => Box::new(job::Job::new(context)),
        ObjectKind::CronJob => Box::new(cron_job::CronJob::new(context)),
        ObjectKind::Service => Box::new(service::Service::new(context)),
        _ => Box::new(replicas::Replicas::new(context)),
    };
    eprintln!(
        "controller of {} {namespace}/{name}: pid {}",
        kind.lower(),
        std::process::id()
    );
    let mut uid = String::new();
    loop {
        let Some(object) = store.get(kind, namespace, name)? else {
            // Deleted (not by `podkit delete`, which stops the controller first: a CronJob's
            // history limit, a Job's TTL): what it owns goes with it.
            if kind == ObjectKind::CronJob {
                for job in owned_jobs(storage, namespace, &uid) {
                    let job_name = job["metadata"]["name"].as_str().unwrap_or("");
                    let _ = remove(root, storage, ObjectKind::Job, namespace, job_name);
                }
            }
            for pod in owned_pods(root, &uid) {
                delete_pod(&pod);
            }
            if kind == ObjectKind::Service {
                service::clean_up(root, storage, namespace, name);
            }
            // Nothing of the controller stays: its object is gone.
            let _ = std::fs::remove_dir_all(&dir);
            break;
        };
        if object["metadata"]["uid"].as_str() != Some(uid.as_str()) {
            if !uid.is_empty() {
                // Deleted and made again between two passes: the old one's pods go.
                for pod in owned_pods(root, &uid) {
                    delete_pod(&pod);
                }
            }
            uid = object["metadata"]["uid"].as_str().unwrap_or("").to_owned();
        }
        let tick = match control.reconcile(&object) {
            Ok(next) => next
                .unwrap_or(Duration::from_secs(1))
                .min(Duration::from_secs(1)),
            Err(err) => {
                eprintln!("error: {err:#}");
                Duration::from_secs(1)
            }
        };
        // A finished Job has nothing left to do but its TTL, if it has one: its pods stay,
        // its controller goes (`ensure_all` does not start it again).
        if kind == ObjectKind::Job
            && job::finished(&object)
            && object["spec"]["ttlSecondsAfterFinished"].is_null()
        {
            break;
        }
        if watch.wait(tick) {
            break;
        }
        reap();
    }
    reap();
    drop(locked);
    Ok(())
}

/// Reaps the controller's children that ended: the pods' supervisors it started are its
/// children (they stay so when they detach), and one that ended must not linger as a zombie,
/// which `get` would take for a running supervisor.
fn reap() {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
}

/// Wakes the controller when a pod or its object may have changed: inotify on the pods
/// directory (pods made, removed, renamed) and on the namespace's objects of the watched
/// kinds; a tick for what inotify does not tell (a pod turned Ready: its status file is
/// renamed in its own directory). SIGTERM and SIGINT are read from a signalfd (blocked, so
/// delivered there; the pods' supervisors it starts get an empty mask, as std's spawn resets
/// it).
struct Watch {
    inotify: Option<nix::sys::inotify::Inotify>,
    signals: nix::sys::signalfd::SignalFd,
}

impl Watch {
    fn new(
        root: &Path,
        store: &Store,
        namespace: &str,
        kinds: &[ObjectKind],
    ) -> anyhow::Result<Watch> {
        use nix::sys::signal::{SigSet, Signal};
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGTERM);
        mask.add(Signal::SIGINT);
        mask.thread_block().context("failed to block SIGTERM")?;
        let signals = nix::sys::signalfd::SignalFd::with_flags(
            &mask,
            nix::sys::signalfd::SfdFlags::SFD_NONBLOCK | nix::sys::signalfd::SfdFlags::SFD_CLOEXEC,
        )
        .context("failed to read signals (signalfd)")?;
        use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
        let pods = root.join("pods");
        let _ = std::fs::create_dir_all(&pods);
        let dirs: Vec<PathBuf> = kinds
            .iter()
            .filter_map(|k| store.make_dir(*k, namespace).ok())
            .collect();
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .ok()
            .inspect(|inotify| {
                let mask = AddWatchFlags::IN_CREATE
                    | AddWatchFlags::IN_DELETE
                    | AddWatchFlags::IN_MOVED_TO
                    | AddWatchFlags::IN_MOVED_FROM
                    | AddWatchFlags::IN_CLOSE_WRITE;
                let _ = inotify.add_watch(&pods, mask);
                for dir in &dirs {
                    let _ = inotify.add_watch(dir, mask);
                }
            });
        Ok(Watch { inotify, signals })
    }

    /// Waits for a change or `tick`; true when told to stop.
    fn wait(&mut self, tick: Duration) -> bool {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let timeout = PollTimeout::try_from(tick).unwrap_or(PollTimeout::MAX);
        let mut fds = vec![PollFd::new(self.signals.as_fd(), PollFlags::POLLIN)];
        if let Some(inotify) = &self.inotify {
            fds.push(PollFd::new(inotify.as_fd(), PollFlags::POLLIN));
        }
        let _ = poll(&mut fds, timeout);
        drop(fds);
        if self.signals.read_signal().is_ok_and(|s| s.is_some()) {
            return true;
        }
        if let Some(inotify) = &self.inotify
            && inotify
                .read_events()
                .is_ok_and(|events| events.iter().any(crate::objects::changes))
        {
            // A burst of changes (a pod being made writes several files): one pass after. The
            // pause listens for SIGTERM, not to hold up a `delete` that waits for this
            // process to go.
            let mut fds = [PollFd::new(self.signals.as_fd(), PollFlags::POLLIN)];
            let _ = poll(&mut fds, PollTimeout::from(20u8));
            if self.signals.read_signal().is_ok_and(|s| s.is_some()) {
                return true;
            }
            while inotify.read_events().is_ok_and(|e| !e.is_empty()) {}
        }
        false
    }
}

/// Asks a pod's supervisor to delete it (its grace period, not waited for); a pod whose
/// supervisor is gone is cleaned up at once.
pub fn delete_pod(pod: &PodState) {
    if pod.supervisor.is_none() {
        for line in state::clean_up(pod) {
            eprintln!("{line}");
        }
        return;
    }
    if let Err(err) = crate::cli::request_delete(pod, None) {
        eprintln!("warning: pod {:?}: {err:#}", pod.name);
    }
}
