//! Workload controllers: one small process per Deployment, with no central daemon, as
//! DESIGN.md fixes it. `apply` keeps the Deployment in the object store and makes sure its
//! controller runs (`podkit controller deployment NAMESPACE NAME`, detached); the controller
//! keeps `replicas` pods of the template running, as the Deployment and ReplicaSet controllers
//! of a cluster do between them, and holds no state a restart would lose: each pass reads the
//! object and the pods it finds (owned through `metadata.ownerReferences`). One controller
//! per object: it holds an exclusive lock on its pid file for its whole life; a second one
//! finds it held and leaves. A controller that died is started again by the next podkit
//! command that looks at Deployments (`apply`, `get`, `scale`, `rollout`, `gc`).
//!
//! Pods are named as Kubernetes names them: `<deployment>-<pod-template-hash>-<5 letters>`,
//! the hash of the template (FNV-32a, encoded as `rand.SafeEncodeString` encodes it) also their
//! `pod-template-hash` label. A changed template rolls the pods: RollingUpdate (new pods up to
//! `maxSurge` over `replicas`, old ones removed while at most `maxUnavailable` are not Ready),
//! or Recreate (every old pod gone before a new one starts). A pod that failed, ended or whose
//! supervisor died is replaced; creations that keep failing back off (1 s doubling to 60 s).

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
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

/// The pods a Deployment owns: those whose controller reference is one of its ReplicaSets
/// (`<deployment>-<hash>`), in its namespace.
pub fn owned_pods(root: &Path, namespace: &str, name: &str) -> Vec<PodState> {
    state::list(root)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| owner_of(&p.manifest, namespace).as_deref() == Some(name))
        .collect()
}

/// The Deployment that owns a pod (by its ReplicaSet's name), if one does.
fn owner_of(manifest: &Value, namespace: &str) -> Option<String> {
    if manifest["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default")
        != namespace
    {
        return None;
    }
    let owner = manifest["metadata"]["ownerReferences"].get(0)?;
    if owner["kind"] != "ReplicaSet" {
        return None;
    }
    let rs = owner["name"].as_str()?;
    Some(rs.rsplit_once('-')?.0.to_owned())
}

/// A pod's template hash (its `pod-template-hash` label).
fn hash_of(pod: &PodState) -> &str {
    pod.manifest["metadata"]["labels"]["pod-template-hash"]
        .as_str()
        .unwrap_or("")
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

/// A count or percentage of `replicas` (`maxSurge` rounds up, `maxUnavailable` down).
fn scaled(value: &Value, replicas: u32, round_up: bool) -> u32 {
    match value {
        Value::Number(n) => n.as_u64().map_or(0, |n| n as u32),
        Value::String(s) => {
            let percent: u32 = s.trim_end_matches('%').parse().unwrap_or(0);
            let exact = replicas * percent;
            if round_up {
                exact.div_ceil(100)
            } else {
                exact / 100
            }
        }
        _ => 0,
    }
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

/// Starts the controller of every kept Deployment that has none running (one died, or the
/// host rebooted).
pub fn ensure_all(root: &Path, storage: &Path) {
    let store = Store::new(storage);
    for d in store.list(ObjectKind::Deployment, None).unwrap_or_default() {
        let (ns, name) = (
            d["metadata"]["namespace"].as_str().unwrap_or("default"),
            d["metadata"]["name"].as_str().unwrap_or(""),
        );
        if let Err(err) = ensure(root, storage, ObjectKind::Deployment, ns, name) {
            eprintln!("warning: {err:#}");
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
        while running(root, kind, namespace, name) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let _ = std::fs::remove_dir_all(controller_dir(root, kind, namespace, name));
}

/// The controller process: reconciles until its object is deleted or it is told to stop.
pub fn run(
    root: &Path,
    storage: &Path,
    kind: ObjectKind,
    namespace: &str,
    name: &str,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        kind == ObjectKind::Deployment,
        "no controller for {}",
        kind.kind()
    );
    let _ = nix::unistd::setsid();
    let dir = controller_dir(root, kind, namespace, name);
    let Some(locked) = lock(&dir)? else {
        // Another controller of the object runs: it is the one.
        return Ok(());
    };
    std::fs::write(dir.join("pid"), std::process::id().to_string())?;
    let store = Store::new(storage);
    let mut watch = Watch::new(root, &store, namespace)?;
    let mut control = Deployment {
        root: root.to_path_buf(),
        storage: storage.to_path_buf(),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        backoff: Duration::ZERO,
        not_before: Instant::now(),
        created: Vec::new(),
    };
    eprintln!(
        "controller of deployment {namespace}/{name}: pid {}",
        std::process::id()
    );
    loop {
        let Some(object) = store.get(kind, namespace, name)? else {
            // The Deployment was deleted: its pods go with it.
            for pod in owned_pods(root, namespace, name) {
                delete_pod(&pod);
            }
            break;
        };
        if let Err(err) = control.reconcile(&object) {
            eprintln!("error: {err:#}");
        }
        if watch.wait(Duration::from_secs(1)) {
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
/// directory (pods made, removed, renamed) and on the namespace's Deployments; a tick for what
/// inotify does not tell (a pod turned Ready: its status file is renamed in its own directory).
/// SIGTERM and SIGINT are read from a signalfd (blocked, so delivered there; the pods'
/// supervisors it starts get an empty mask, as std's spawn resets it).
struct Watch {
    inotify: Option<nix::sys::inotify::Inotify>,
    signals: nix::sys::signalfd::SignalFd,
}

impl Watch {
    fn new(root: &Path, store: &Store, namespace: &str) -> anyhow::Result<Watch> {
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
        let objects = store.make_dir(ObjectKind::Deployment, namespace).ok();
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .ok()
            .inspect(|inotify| {
                let mask = AddWatchFlags::IN_CREATE
                    | AddWatchFlags::IN_DELETE
                    | AddWatchFlags::IN_MOVED_TO
                    | AddWatchFlags::IN_MOVED_FROM
                    | AddWatchFlags::IN_CLOSE_WRITE;
                let _ = inotify.add_watch(&pods, mask);
                if let Some(dir) = &objects {
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
            && inotify.read_events().is_ok_and(|e| !e.is_empty())
        {
            // A burst of changes (a pod being made writes several files): one pass after.
            std::thread::sleep(Duration::from_millis(20));
            while inotify.read_events().is_ok_and(|e| !e.is_empty()) {}
        }
        false
    }
}

/// One Deployment's reconciliation, and what it remembers between passes only to pace itself
/// (nothing a restart must keep).
struct Deployment {
    root: PathBuf,
    storage: PathBuf,
    namespace: String,
    name: String,
    /// Creations that keep failing wait this long (1 s doubling to 60 s).
    backoff: Duration,
    not_before: Instant,
    /// Pods created and not yet seen, with when: counted as there (their supervisors are
    /// still making them) until seen, or taken as failed after [`START_GRACE`].
    created: Vec<(String, Instant)>,
}

/// How long after its creation a pod that is not there counts as failed to start.
const START_GRACE: Duration = Duration::from_secs(2);

impl Deployment {
    fn reconcile(&mut self, object: &Value) -> anyhow::Result<()> {
        let spec = &object["spec"];
        let replicas = spec["replicas"].as_u64().unwrap_or(1) as u32;
        let min_ready = Duration::from_secs(spec["minReadySeconds"].as_u64().unwrap_or(0));
        let hash = template_hash(object);
        let all = owned_pods(&self.root, &self.namespace, &self.name);
        // Pods that ended, failed or lost their supervisor are replaced, as a ReplicaSet
        // replaces them.
        for pod in all.iter().filter(|p| p.deletion().is_none() && leaving(p)) {
            delete_pod(pod);
        }
        let active: Vec<&PodState> = all.iter().filter(|p| !leaving(p)).collect();
        // Did the pods made before come up? A supervisor that failed to start leaves none.
        let mut failed = false;
        self.created.retain(|(n, at)| {
            if all.iter().any(|p| &p.name == n) {
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
            self.not_before = Instant::now() + self.backoff;
            eprintln!(
                "pods of deployment {:?} failed to start (their supervisors' logs are in the pods \
                 directory, .NAME.supervisor.log); next try in {}s",
                self.name,
                self.backoff.as_secs()
            );
        } else if self.created.is_empty() && !active.is_empty() {
            self.backoff = Duration::ZERO;
        }
        // Pods on their way (their supervisors still making them) count as new pods.
        let pending = self.created.len() as u32;
        let (new, old): (Vec<&PodState>, Vec<&PodState>) =
            active.iter().partition(|p| hash_of(p) == hash);
        let new_count = new.len() as u32 + pending;
        let strategy = &spec["strategy"];
        let want_new = if strategy["type"] == "Recreate" {
            if !old.is_empty() || all.iter().any(|p| hash_of(p) != hash) {
                // Every old pod gone, also those still terminating, before a new one starts.
                for pod in &old {
                    delete_pod(pod);
                }
                return Ok(());
            }
            replicas
        } else {
            let surge = scaled(&strategy["rollingUpdate"]["maxSurge"], replicas, true);
            let unavailable = scaled(
                &strategy["rollingUpdate"]["maxUnavailable"],
                replicas,
                false,
            );
            let total = active.len() as u32 + pending;
            // New pods up to replicas, and the whole at most replicas + maxSurge.
            let room = (replicas + surge).saturating_sub(total);
            let wanted = replicas.saturating_sub(new_count).min(room);
            // Old pods down while at least replicas - maxUnavailable stay available: those not
            // available go first (they take nothing away).
            let min_available = replicas.saturating_sub(unavailable);
            let mut available_now =
                active.iter().filter(|p| available(p, min_ready)).count() as u32;
            let mut old_sorted = old.clone();
            old_sorted.sort_by_key(|p| available(p, min_ready));
            for pod in old_sorted {
                let was_available = available(pod, min_ready);
                if was_available {
                    if available_now <= min_available {
                        break;
                    }
                    available_now -= 1;
                }
                delete_pod(pod);
            }
            // Scaled down: the new pods beyond replicas go (below).
            if new_count > replicas {
                replicas
            } else {
                new_count + wanted
            }
        };
        // Too many new pods (scaled down): the not-ready and newest go first.
        if new_count > want_new {
            let mut extra = new.clone();
            extra.sort_by_key(|p| (available(p, min_ready), std::cmp::Reverse(p.created)));
            for pod in extra.iter().take((new_count - want_new) as usize) {
                delete_pod(pod);
            }
        }
        let missing = want_new.saturating_sub(new_count);
        if missing > 0 && Instant::now() >= self.not_before {
            for _ in 0..missing {
                let name = self.create(object, &hash)?;
                self.created.push((name, Instant::now()));
            }
        }
        Ok(())
    }

    /// Starts one pod of the template: its supervisor detached, as `apply` starts one.
    fn create(&self, object: &Value, hash: &str) -> anyhow::Result<String> {
        let rs = format!("{}-{hash}", self.name);
        let pod = format!("{rs}-{}", suffix());
        let owner = serde_json::json!({
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "name": rs,
            "uid": object["metadata"]["uid"],
            "controller": true,
            "blockOwnerDeletion": true,
        });
        let mut plan = spec::template_plan(object, &pod, &[("pod-template-hash", hash)], owner)?;
        crate::cli::pull_secrets_from_store(&self.storage, &mut plan)?;
        crate::cli::start_supervisor(&self.root, &plan)?;
        eprintln!("deployment {:?}: created pod {pod:?}", self.name);
        Ok(pod)
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
