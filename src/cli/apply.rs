//! `podkit apply`: keep a manifest's ConfigMaps and Secrets, start its pods in the background
//! and return once they run.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::fcntl::OFlag;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use crate::spec::{self, PodPlan};
use crate::state;
use crate::supervisor::status::{SCHEDULING_GATED, UNSCHEDULABLE};

use super::parse_duration;

/// Apply a manifest: keep its ConfigMaps and Secrets, start its pods in the background and
/// return once they run.
///
/// ConfigMaps and Secrets are kept first (in podkit's storage, Secrets readable by root only),
/// so the pods that read them find them; a changed one updates the configMap and secret
/// volumes of running pods. Each pod gets its own supervisor, detached (its own session; its
/// output in the pod's directory, supervisor.log). Applying the same manifest again changes
/// nothing; a changed manifest for a pod that exists is refused: pods are immutable, delete
/// the pod first. Kinds that mean nothing on one host (ServiceAccount, NetworkPolicy, ...) are
/// named with the reason they are ignored.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  podkit apply -f web.yaml
  podkit apply -f web.yaml --wait=ready --timeout 60s
  podkit apply -f web.yaml --dry-run
  podkit apply -f manifests/          (every *.yaml, *.yml and *.json file, by name)
  cat web.yaml | podkit apply -f -
  PODKIT_RUNTIME=crun podkit apply -f web.yaml   (crun for pods that name no RuntimeClass)

Environment, read by the supervisors and controllers apply starts: PODKIT_RUNTIME (the OCI
runtime of pods without a runtimeClassName; runc when unset), PODKIT_BRIDGE, PODKIT_POD_SUBNET,
PODKIT_POD_SUBNET6, PODKIT_POD_MTU, PODKIT_SERVICE_SUBNET, PODKIT_CNI_CONF_DIR (see README).

Exit codes: 0 when every pod runs (or is unchanged), 1 when one failed to start.")]
pub struct ApplyArgs {
    /// The manifest: Pods, workloads, ConfigMaps, Secrets, claims and Services, separated by
    /// `---`; a directory of them; `-` for standard input. Several `-f` apply each in turn.
    #[arg(short = 'f', long = "filename", value_name = "FILE", required = true)]
    file: Vec<std::path::PathBuf>,

    /// What to wait for: `running` (every container started) or `ready` (the Ready condition).
    #[arg(long, default_value = "running", value_parser = ["running", "ready"])]
    wait: String,

    /// How long to wait, like 30s or 2m.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    timeout: Duration,

    /// Validate and print what would run; start nothing.
    #[arg(long)]
    dry_run: bool,
}

pub fn apply(
    root: &Path,
    storage: &Path,
    args: ApplyArgs,
) -> anyhow::Result<std::process::ExitCode> {
    let manifest = spec::load_manifests(&args.file)?;
    if args.dry_run {
        for object in &manifest.objects {
            println!(
                "{}/{} (dry run): would be kept",
                object.kind.lower(),
                object.name
            );
        }
        for note in &manifest.ignored {
            println!("{note}");
        }
        for plan in &manifest.pods {
            print_plan(plan);
        }
        return Ok(std::process::ExitCode::SUCCESS);
    }
    if !nix::unistd::geteuid().is_root() {
        bail!("podkit apply needs root: it creates namespaces and mounts (try sudo)");
    }
    for line in keep_objects(storage, &manifest)? {
        println!("{line}");
    }
    // Each workload's controller, started unless it runs; a changed one sees its object.
    for object in &manifest.objects {
        if object.kind.has_controller() {
            crate::controller::ensure(root, storage, object.kind, &object.namespace, &object.name)?;
        }
    }
    let mut plans = manifest.pods;
    for plan in &mut plans {
        pull_secrets_from_store(storage, plan)?;
    }
    let mut started = Vec::new();
    // Pods whose last scheduling gate this apply removed: their status says SchedulingGated
    // until their supervisor has read the change.
    let mut ungated = Vec::new();
    for plan in plans {
        match state::read(root, &plan.namespace, &plan.name) {
            Ok(existing) if same_pod(&existing.manifest, &plan.manifest) => {
                println!("pod/{} unchanged", plan.name);
                continue;
            }
            Ok(existing) => match gates_removed(&existing.manifest, &plan.manifest) {
                Some(Ok(kept)) => {
                    // The supervisor of a gated pod reads its pod.json again.
                    let text = serde_json::to_vec_pretty(&kept)?;
                    crate::supervisor::status::write_atomic(&existing.dir.join("pod.json"), &text)
                        .with_context(|| format!("failed to update pod {:?}", plan.name))?;
                    println!("pod/{} configured", plan.name);
                    if plan.scheduling_gates.is_empty() {
                        ungated.push((plan.namespace.clone(), plan.name.clone()));
                        started.push((plan.namespace, plan.name, None));
                    }
                    continue;
                }
                Some(Err(why)) => bail!("pod {:?} is invalid: {why}", plan.name),
                None => bail!(
                    "pod {:?} exists and the manifest changed: pods are immutable; delete it \
                     first (podkit delete pod {})",
                    plan.name,
                    plan.name
                ),
            },
            Err(state::StateError::NotFound { .. }) => {}
            Err(err) => return Err(err.into()),
        }
        for field in &plan.ignored {
            eprintln!("note: pod {:?}: {field} is ignored on one host", plan.name);
        }
        for warning in &plan.warnings {
            eprintln!("warning: pod {:?}: {warning}", plan.name);
        }
        let notify = start_supervisor(root, &plan, true)?;
        started.push((plan.namespace, plan.name, notify));
    }
    let mut failed = false;
    for (namespace, name, notify) in started {
        let gated = !ungated.contains(&(namespace.clone(), name.clone()));
        match wait_for(
            root,
            &namespace,
            &name,
            &args.wait,
            args.timeout,
            gated,
            notify,
        ) {
            Ok(()) => println!("pod/{name} created"),
            Err(err) => {
                eprintln!("error: pod {name:?}: {err:#}");
                failed = true;
            }
        }
    }
    Ok(if failed {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    })
}

/// Keeps the manifest's ConfigMaps and Secrets (before its pods, which read them) and names
/// the documents that are ignored (on stderr). What each object became, as kubectl says it
/// (`configmap/app created`), for the caller to print.
pub(super) fn keep_objects(
    storage: &Path,
    manifest: &spec::Manifest,
) -> anyhow::Result<Vec<String>> {
    let store = crate::objects::Store::new(storage);
    for note in &manifest.ignored {
        eprintln!("note: {note}");
    }
    let mut said = Vec::new();
    // What pods read (ConfigMaps, Secrets, claims) before the workloads that start pods.
    let mut objects: Vec<&spec::Object> = manifest.objects.iter().collect();
    objects.sort_by_key(|o| o.kind.is_workload());
    for object in objects {
        let change = store
            .put(object)
            .with_context(|| format!("failed to keep {} {:?}", object.kind.lower(), object.name))?;
        said.push(format!(
            "{}/{} {}",
            object.kind.printed(),
            object.name,
            change.word()
        ));
    }
    Ok(said)
}

/// Whether a running pod's manifest is the one applied again: equal but for what the
/// supervisor adds to a pod it makes (a uid the manifest did not give, the creation time).
fn same_pod(kept: &serde_json::Value, applied: &serde_json::Value) -> bool {
    let mut kept = kept.clone();
    if let Some(meta) = kept["metadata"].as_object_mut() {
        meta.remove("creationTimestamp");
        if applied["metadata"].get("uid").is_none() {
            meta.remove("uid");
        }
    }
    &kept == applied
}

/// A re-applied pod whose manifest differs from the kept one only in `spec.schedulingGates`:
/// the kept manifest with the applied gates, or the API server's refusal when a gate is added
/// (an update may only remove them). `None` when anything else changed.
fn gates_removed(
    kept: &serde_json::Value,
    applied: &serde_json::Value,
) -> Option<Result<serde_json::Value, String>> {
    let gates = |pod: &serde_json::Value| -> Vec<String> {
        pod["spec"]["schedulingGates"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|g| g["name"].as_str().map(str::to_owned))
            .collect()
    };
    let without = |pod: &serde_json::Value| {
        let mut pod = pod.clone();
        if let Some(spec) = pod["spec"].as_object_mut() {
            spec.remove("schedulingGates");
        }
        pod
    };
    if !same_pod(&without(kept), &without(applied)) {
        return None;
    }
    let had = gates(kept);
    if let Some(new) = gates(applied).into_iter().find(|g| !had.contains(g)) {
        return Some(Err(format!(
            "spec.schedulingGates: Forbidden: only deletion is allowed, but found new scheduling \
             gate '{new}'"
        )));
    }
    let mut updated = without(kept);
    if !gates(applied).is_empty() {
        updated["spec"]["schedulingGates"] = applied["spec"]["schedulingGates"].clone();
    }
    Some(Ok(updated))
}

/// The credentials of `imagePullSecrets` the manifest does not hold, from Secrets kept before
/// (of type `kubernetes.io/dockerconfigjson` or `dockercfg`), as kubelet reads them from the
/// API server.
pub(crate) fn pull_secrets_from_store(storage: &Path, plan: &mut PodPlan) -> anyhow::Result<()> {
    let store = crate::objects::Store::new(storage);
    for name in &plan.pull_secret_names {
        if plan.pull_secrets.0.iter().any(|(n, _)| n == name) {
            continue;
        }
        let Some(secret) = store.get(spec::ObjectKind::Secret, &plan.namespace, name)? else {
            continue;
        };
        if let Some(config) = spec::registry_credentials(&secret) {
            plan.pull_secrets.0.push((name.clone(), config));
        }
    }
    Ok(())
}

/// Starts `podkit supervise --detach` with the plan on a memfd as its stdin. With `notify`, its
/// stdout is a pipe on which it writes a byte after each write of the pod's status (`--notify`):
/// the read end is returned, for [`Changes`] to wait on.
pub(crate) fn start_supervisor(
    root: &Path,
    plan: &PodPlan,
    notify: bool,
) -> anyhow::Result<Option<std::fs::File>> {
    // The supervisor's own output goes next to the pod's state; the directory does not exist
    // yet (the supervisor makes it), so the log starts in the pods directory.
    let pods = root.join("pods");
    std::fs::create_dir_all(&pods)?;
    let log = std::fs::File::create(pods.join(format!(".{}.supervisor.log", plan.key())))?;
    let mut command = super::supervise_command(plan)?;
    command.args(["--quiet", "--detach"]).stderr(log);
    let read = if notify {
        // Both ends non-blocking: the supervisor never waits on a reader, the reader drains.
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
            .context("failed to make the supervisor's notify pipe")?;
        command.arg("--notify").stdout(write);
        Some(std::fs::File::from(read))
    } else {
        command.stdout(Stdio::null());
        None
    };
    command
        .spawn()
        .with_context(|| format!("failed to start the supervisor of pod {:?}", plan.name))?;
    Ok(read)
}

/// Waits until the pod runs (or is ready), or says why it does not.
fn wait_for(
    root: &Path,
    namespace: &str,
    name: &str,
    wait: &str,
    timeout: Duration,
    may_be_gated: bool,
    notify: Option<std::fs::File>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let key = spec::pod_key(namespace, name);
    let log = root.join("pods").join(format!(".{key}.supervisor.log"));
    // A supervisor that fails to start removes the pod's directory, then says why in its log:
    // while it does, the pod can look Unknown for a moment. The log is the answer; Unknown
    // counts only once it lasts.
    let mut unknown_since: Option<Instant> = None;
    let mut changes = match notify {
        Some(pipe) => Changes::Pipe(pipe),
        None => Changes::new(root, namespace, name),
    };
    loop {
        // A whole line only: the supervisor may be writing it.
        let said = || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.split_inclusive('\n')
                .find(|l| l.starts_with("error:") && l.ends_with('\n'))
                .map(|l| l.trim_start_matches("error: ").trim_end().to_owned())
        };
        match state::read(root, namespace, name) {
            Ok(pod) => {
                let status = pod.status.clone().unwrap_or_default();
                let phase = pod.phase();
                let containers = status.container_statuses.clone().unwrap_or_default();
                let all_running = !containers.is_empty()
                    && containers
                        .iter()
                        .all(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()));
                let ready = status
                    .conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                // A container whose image (or ConfigMap, Secret) is not there waits, retrying,
                // as under kubelet; apply says so at once instead of waiting out its timeout.
                let image_trouble = status
                    .init_container_statuses
                    .iter()
                    .flatten()
                    .chain(&containers)
                    .find_map(|c| {
                        let waiting = c.state.as_ref()?.waiting.as_ref()?;
                        let reason = waiting.reason.as_deref()?;
                        let message = waiting.message.as_deref().unwrap_or("");
                        // The same for a ConfigMap or Secret that is not there yet.
                        let config = reason == "CreateContainerConfigError"
                            || (reason == "ContainerCreating"
                                && message.starts_with("MountVolume.SetUp failed"));
                        (IMAGE_WAITING_REASONS.contains(&reason) || config).then(|| {
                            format!(
                                "container {}: {reason}: {} (the pod keeps trying; podkit delete pod {name} to stop it)",
                                c.name,
                                waiting.message.as_deref().unwrap_or("")
                            )
                        })
                    });
                if let Some(trouble) = image_trouble {
                    bail!("{trouble}");
                }
                // Held by its scheduling gates: kept, and nothing runs until they go.
                if may_be_gated
                    && status.conditions.iter().flatten().any(|c| {
                        c.type_ == "PodScheduled" && c.reason.as_deref() == Some(SCHEDULING_GATED)
                    })
                {
                    eprintln!(
                        "note: pod {name:?} is {SCHEDULING_GATED}: it starts once its \
                         schedulingGates are removed (apply it again without them)"
                    );
                    return Ok(());
                }
                // No room on this host for the extended resources it asks for: Pending, as
                // kube-scheduler leaves it, and started once the devices are free.
                if let Some(held) = status.conditions.iter().flatten().find(|c| {
                    c.type_ == "PodScheduled"
                        && c.status == "False"
                        && c.reason.as_deref() == Some(UNSCHEDULABLE)
                }) {
                    eprintln!(
                        "note: pod {name:?} is Pending ({UNSCHEDULABLE}): {}",
                        held.message.as_deref().unwrap_or("")
                    );
                    if let Some(message) = &status.message {
                        eprintln!("note: {message}");
                    }
                    eprintln!(
                        "note: pod {name:?} starts once the host's CDI specs have the devices \
                         it asks for free (podkit describe pod {name})"
                    );
                    return Ok(());
                }
                match (phase, wait) {
                    ("Unknown", _) => {
                        if let Some(err) = said() {
                            let _ = std::fs::remove_file(&log);
                            bail!("{err}");
                        }
                        let since = *unknown_since.get_or_insert_with(Instant::now);
                        if since.elapsed() > Duration::from_secs(2) {
                            bail!(
                                "its supervisor died (podkit describe pod {name}; podkit gc cleans up)"
                            );
                        }
                    }
                    ("Failed", _) => bail!(
                        "the pod failed: {} (podkit describe pod {name})",
                        status
                            .message
                            .clone()
                            .or(status.reason.clone())
                            .unwrap_or_else(|| failed_containers(&status))
                    ),
                    ("Succeeded", _) => return Ok(()),
                    (_, "ready") if ready => return Ok(()),
                    (_, "running") if all_running => return Ok(()),
                    _ => unknown_since = None,
                }
            }
            Err(state::StateError::NotFound { .. }) => {
                // Not made yet, or the supervisor failed before or while making it.
                if let Some(err) = said() {
                    let _ = std::fs::remove_file(&log);
                    bail!("{err}");
                }
            }
            Err(err) => return Err(err.into()),
        }
        if Instant::now() > deadline {
            bail!(
                "not {wait} after {}s (podkit describe pod {name} says why)",
                timeout.as_secs()
            );
        }
        changes.wait();
    }
}

/// Wakes [`wait_for`] when the pod's state may have changed, instead of a poll every 10 ms that
/// read and parsed its files each time: CPU taken from the runtime while the containers start
/// (two cores here). From a supervisor this command started, its notify pipe: a byte after each
/// write of status.json, end of file when it exits; for `delete`, the supervisor's exit (a
/// pidfd). Otherwise inotify on the pods directory (the
/// supervisor makes the pod's directory and logs its early errors there) and, once it is made,
/// on the pod's own (status.json is renamed into place), with a tick for what inotify does not
/// tell: a supervisor that died.
///
/// The pipe is not only simpler: closing an inotify descriptor that has watches waits for an
/// SRCU grace period of the kernel (fsnotify frees its marks so), which takes 8 to 16 ms while
/// both cores are busy, as they are while a pod's containers start: measured here as the last
/// 15 ms of `apply`, between reading the pod running and exiting. A pipe closes at once.
pub(super) enum Changes {
    /// inotify on the pods directory, and on the pod's own once it is made.
    Inotify {
        inotify: Inotify,
        pod_dir: std::path::PathBuf,
        pod_watched: bool,
    },
    /// The notify pipe of a supervisor started with `--notify` (its read end, not blocking):
    /// readable after each status write, end of file when the supervisor ends.
    Pipe(std::fs::File),
    /// The supervisor, by a pidfd: readable when it has exited (`delete`, which waits for the
    /// supervisor to remove the pod and end).
    Exit(netns::PidFd),
    /// Nothing to wait on (no inotify watch to be had, or the supervisor has ended): a sleep.
    Sleep,
}

/// How long [`Changes::wait`] sleeps without an event.
const TICK: Duration = Duration::from_millis(100);

impl Changes {
    pub(super) fn new(root: &Path, namespace: &str, name: &str) -> Changes {
        let pods = root.join("pods");
        let inotify =
            Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).and_then(|inotify| {
                let mask = AddWatchFlags::IN_CREATE
                    | AddWatchFlags::IN_MODIFY
                    | AddWatchFlags::IN_MOVED_TO
                    | AddWatchFlags::IN_MOVED_FROM
                    | AddWatchFlags::IN_DELETE;
                inotify.add_watch(&pods, mask).map(|_| inotify)
            });
        match inotify {
            Ok(inotify) => Changes::Inotify {
                inotify,
                pod_dir: crate::supervisor::pod_dir(root, namespace, name),
                pod_watched: false,
            },
            Err(_) => Changes::Sleep,
        }
    }

    /// Woken when the supervisor `pid` exits, or at each [`TICK`]: for a wait that ends when
    /// it does. `None` when there is no such process (it has ended).
    pub(super) fn until_exit(pid: u32) -> Option<Changes> {
        netns::PidFd::open(pid).ok().map(Changes::Exit)
    }

    /// Returns after a change, or after [`TICK`]; at once when the pod's directory was only
    /// now watched (what changed in it before is read again first). Without inotify (out of
    /// watches), or once the supervisor has ended, after 10 ms.
    pub(super) fn wait(&mut self) {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use std::io::Read;
        use std::os::fd::AsFd;
        let tick = PollTimeout::try_from(TICK).unwrap_or(PollTimeout::MAX);
        let readable = |fd: std::os::fd::BorrowedFd<'_>| {
            poll(&mut [PollFd::new(fd, PollFlags::POLLIN)], tick).is_ok_and(|n| n > 0)
        };
        let ended = match self {
            Changes::Sleep => {
                std::thread::sleep(Duration::from_millis(10));
                false
            }
            Changes::Exit(pidfd) => readable(pidfd.as_fd()),
            // Drained: how many writes there were does not matter, the state is read again.
            Changes::Pipe(pipe) => {
                readable(pipe.as_fd())
                    && loop {
                        match (&*pipe).read(&mut [0u8; 256]) {
                            Ok(0) => break true,
                            Ok(_) => {}
                            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                            Err(_) => break false,
                        }
                    }
            }
            Changes::Inotify {
                inotify,
                pod_dir,
                pod_watched,
            } => {
                if !*pod_watched {
                    let mask = AddWatchFlags::IN_CLOSE_WRITE
                        | AddWatchFlags::IN_MOVED_TO
                        | AddWatchFlags::IN_DELETE
                        | AddWatchFlags::IN_MOVE_SELF
                        | AddWatchFlags::IN_DELETE_SELF;
                    if inotify.add_watch(&*pod_dir, mask).is_ok() {
                        *pod_watched = true;
                        return;
                    }
                }
                if readable(inotify.as_fd()) {
                    // Drained: which file changed does not matter, the state is read again. A
                    // watch the kernel dropped (the pod's directory renamed away or removed, as
                    // a supervisor that fails to start does) is added again when a directory
                    // of that name is back.
                    while let Ok(events) = inotify.read_events() {
                        if events.is_empty() {
                            break;
                        }
                        if events
                            .iter()
                            .any(|e| e.mask.contains(AddWatchFlags::IN_IGNORED))
                        {
                            *pod_watched = false;
                        }
                    }
                }
                false
            }
        };
        if ended {
            *self = Changes::Sleep;
        }
    }
}

/// kubelet's reasons for a container waiting on its image.
const IMAGE_WAITING_REASONS: [&str; 3] = ["ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull"];

fn print_plan(plan: &PodPlan) {
    println!("pod/{} (dry run): would run", plan.name);
    for m in plan.init_containers.iter().chain(&plan.containers) {
        let kind = if plan.containers.iter().any(|c| c.name == m.name) {
            "container"
        } else if m.sidecar {
            "sidecar"
        } else {
            "init container"
        };
        match &m.runs {
            spec::Runs::Host => println!("  {kind} {}: {}", m.name, m.argv.join(" ")),
            spec::Runs::Image(run) => {
                let pull = match run.pull_policy {
                    spec::PullPolicy::Always => "pulled first (imagePullPolicy Always)",
                    spec::PullPolicy::IfNotPresent => "pulled unless present (IfNotPresent)",
                    spec::PullPolicy::Never => "never pulled (Never): must be present",
                };
                let mut argv = run.command.clone();
                argv.extend(run.args.iter().cloned());
                let what = if argv.is_empty() {
                    "the image's entrypoint".to_owned()
                } else {
                    argv.join(" ")
                };
                println!("  {kind} {}: image {}, {pull}: {what}", m.name, run.image);
            }
        }
    }
    for field in &plan.ignored {
        println!("  ignored: {field}");
    }
    for warning in &plan.warnings {
        println!("  warning: {warning}");
    }
}

/// Which containers failed, for a Failed pod with no reason of its own (an init container that
/// failed under `restartPolicy: Never`, as kubelet leaves it): `init container "setup" exited
/// with 3`.
fn failed_containers(status: &k8s_openapi::api::core::v1::PodStatus) -> String {
    let failed =
        |kind: &str, statuses: &Option<Vec<k8s_openapi::api::core::v1::ContainerStatus>>| {
            statuses
                .iter()
                .flatten()
                .filter_map(|c| {
                    let t = c.state.as_ref()?.terminated.as_ref()?;
                    (t.exit_code != 0)
                        .then(|| format!("{kind} {:?} exited with {}", c.name, t.exit_code))
                })
                .collect::<Vec<_>>()
        };
    let mut said = failed("init container", &status.init_container_statuses);
    said.extend(failed("container", &status.container_statuses));
    if said.is_empty() {
        "its containers failed".to_owned()
    } else {
        said.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use nix::fcntl::OFlag;

    use super::Changes;

    #[test]
    fn the_notify_pipe_wakes_and_its_end_says_the_supervisor_ended() {
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).expect("pipe");
        let mut write = std::fs::File::from(write);
        let mut changes = Changes::Pipe(std::fs::File::from(read));
        write.write_all(b"...").expect("write");
        changes.wait();
        assert!(
            matches!(changes, Changes::Pipe(_)),
            "bytes are a wake-up, not the end"
        );
        drop(write);
        changes.wait();
        assert!(
            matches!(changes, Changes::Sleep),
            "end of file is the supervisor's end"
        );
        // From then on it sleeps (10 ms) instead of polling a closed pipe.
        changes.wait();
    }

    #[test]
    fn a_wait_until_exit_ends_with_the_process() {
        let mut child = std::process::Command::new("sleep")
            .arg("0.2")
            .spawn()
            .expect("sleep");
        let mut changes = Changes::until_exit(child.id()).expect("pidfd");
        // Each wait returns on the exit or after a tick; the exit ends them within 2 s.
        for _ in 0..20 {
            if matches!(changes, Changes::Sleep) {
                break;
            }
            changes.wait();
        }
        assert!(matches!(changes, Changes::Sleep), "the exit was not seen");
        assert!(
            child.try_wait().expect("wait").is_some(),
            "woken before the exit"
        );
    }
}
