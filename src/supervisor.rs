//! The supervisor: one per pod, the pod's pause process and its kubelet.
//!
//! It makes the pod's state directory and namespaces, reaps every orphan (it is a child
//! subreaper), runs init containers one by one, starts native sidecars and then the main
//! containers, restarts them by policy, keeps `status.json` current, and on delete (or when the
//! pod is done) stops the main containers and then the sidecars in reverse order within the
//! grace period, and removes what the pod made.
//!
//! Layout:
//! - `api.rs`: the pod's HTTP API on `api.sock`;
//! - `attach.rs`: containers' stdin and ptys, and `podkit attach`'s sessions;
//! - `reaper.rs`: child subreaper, one loop reaping every child;
//! - `member.rs`: one container's runs, restarts and stop;
//! - `image.rs`: an image container's image (pulled by policy), root filesystem and bundle;
//! - `runtime.rs`: the OCI runtime (runc, crun) driven as containerd's shim drives it;
//! - `probe.rs`: probes and lifecycle hooks;
//! - `logs.rs`: CRI-format log files;
//! - `volumes.rs`: emptyDir, hostPath and mount points;
//! - `status.rs`: v1 PodStatus, events, `status.json`;
//! - `network.rs`: podkit's own pod network (a bridge of the host); `cni.rs`: the CNI path,
//!   a CNI network's plugins run as kubelet's runtime runs them.

mod api;
pub(crate) mod attach;
pub(crate) mod cgroup;
pub(crate) mod cni;
pub(crate) mod devices;
mod host_ports;
pub(crate) mod image;
mod logs;
pub(crate) mod member;
pub(crate) mod network;
mod probe;
mod reaper;
pub(crate) mod runtime;
pub(crate) mod status;
mod termination;
pub(crate) mod volumes;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::{Duration, Instant};

use netns::PodNamespaces;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use self::cgroup::PodCgroup;
use self::member::End;
pub use self::reaper::Exit;
use self::reaper::Reaper;
use self::runtime::Runtime;
pub use self::status::Event as EventRecord;
use self::status::Status;
use self::volumes::{VolumeError, Volumes};
use crate::spec::{PodPlan, RestartPolicy};

/// Where pods keep their state when `PODKIT_ROOT` does not say otherwise.
pub const DEFAULT_ROOT: &str = "/run/podkit";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("pod {name:?} already exists ({dir:?}): delete it first")]
    Exists { name: String, dir: PathBuf },

    #[error("failed to create the pod's state directory {dir:?}")]
    StateDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("failed to start reaping children")]
    Reaper(#[source] std::io::Error),

    #[error("failed to create the namespaces of pod {name:?}")]
    Namespaces {
        name: String,
        #[source]
        source: Box<netns::Error>,
    },

    #[error(transparent)]
    Volume(#[from] VolumeError),

    #[error("failed to publish the pod's hostPorts")]
    HostPort(#[source] portfwd::Error),

    /// What image containers need and could not be had: the runtime, the pod's shared files.
    #[error("{0}")]
    ImageContainers(String),

    #[error("{0}")]
    Sysctl(String),

    /// The watch on the pod's ConfigMaps and Secrets could not be set.
    #[error("{0}")]
    Objects(String),

    /// The pod network is misconfigured, or the pod could not join it.
    #[error("{0}")]
    Network(String),

    /// The pod's huge pages cannot be limited here.
    #[error("{0}")]
    HugePages(String),

    #[error("failed to lease the pod's devices under {dir}", dir = devices::LEASES_DIR)]
    Devices(#[source] std::io::Error),
}

/// Sets the pod's sysctls in its namespaces (net.* in the network one, the rest in the IPC one),
/// each from a thread that joined the namespace: `/proc/sys` shows the writer's namespaces. As
/// the runtime would for each container, but once for the pod whose namespaces they share (and
/// for host processes too).
async fn set_sysctls(ns: &PodNamespaces, sysctls: &[(String, String)]) -> Result<(), String> {
    let (net, ipc): (Vec<_>, Vec<_>) = sysctls
        .iter()
        .cloned()
        .partition(|(name, _)| name.starts_with("net."));
    for (kind, list) in [(netns::NsKind::Net, net), (netns::NsKind::Ipc, ipc)] {
        if list.is_empty() {
            continue;
        }
        let namespace = ns
            .namespaces()
            .get(kind)
            .ok_or_else(|| format!("the pod has no {kind} namespace for its sysctls"))?;
        let written = namespace.run_async(move || {
            for (name, value) in &list {
                // `net.ipv4.conf.eth0/100.forwarding` is /proc/sys/net/ipv4/conf/eth0.100/forwarding.
                let file: String = name
                    .chars()
                    .map(|c| match c {
                        '.' => '/',
                        '/' => '.',
                        c => c,
                    })
                    .collect();
                let path = Path::new("/proc/sys").join(file);
                std::fs::write(&path, value).map_err(|e| {
                    let why = if e.kind() == std::io::ErrorKind::NotFound {
                        "this kernel has no such sysctl".to_owned()
                    } else {
                        e.to_string()
                    };
                    format!("failed to set sysctl {name}={value:?}: {why}")
                })?;
            }
            Ok::<(), String>(())
        });
        written
            .await
            .map_err(|e| format!("failed to enter the pod's {kind} namespace: {e}"))??;
    }
    Ok(())
}

/// Where the supervisor keeps state, and how it starts the pod's PID 1.
#[derive(Debug)]
pub struct Options {
    /// The state root: pods live in `ROOT/pods/NAME/`.
    pub root: PathBuf,
    /// The command that becomes PID 1 of a pod with `shareProcessNamespace: true`: podkit's
    /// own `pause`.
    pub pause: Command,
    /// Also print the containers' output on stdout, each line prefixed with its container.
    pub echo: bool,
}

/// How the pod ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// `Succeeded` or `Failed` when the pod ran to its end; the phase it was in when deleted.
    pub phase: String,
    /// Whether it ended because it was deleted (the shutdown token).
    pub deleted: bool,
}

/// What every part of a running pod shares.
pub(crate) struct Pod {
    plan: PodPlan,
    dir: PathBuf,
    ns: PodNamespaces,
    /// Makes the sockets of httpGet and tcpSocket handlers inside the pod's network namespace;
    /// made on first use (its thread is not worth starting for a pod without such probes).
    dialer: Mutex<Option<netns::Dialer>>,
    /// Wakes the task that writes status.json; writes of a burst of changes are merged.
    saver: tokio::sync::Notify,
    reaper: Reaper,
    status: Mutex<Status>,
    volumes: Mutex<Volumes>,
    /// When the running termination's grace period ends; set before members are told to stop.
    deadline: Mutex<Option<Instant>>,
    /// Options::echo.
    echo: bool,
    /// A grace period a delete asked for (`podkit delete --grace-period`), instead of the
    /// manifest's.
    grace_override: Mutex<Option<Duration>>,
    /// The containers' cgroups, where cgroup v2 is mounted.
    cgroup: Option<PodCgroup>,
    /// The OCI runtime image containers run by; `None` in a pod of host processes only.
    runtime: Option<Runtime>,
    /// Told whenever a log file got new lines or a member is done: wakes `GET /logs` followers.
    logs_written: tokio::sync::watch::Sender<()>,
    /// What log followers wait for: a follower stops at the end of a finished member's file.
    finished: Mutex<Finished>,
    /// What each container's env read from ConfigMaps and Secrets at its last start (by
    /// container name): its exec probes and hooks get the same.
    object_env: Mutex<std::collections::HashMap<String, member::ObjectEnv>>,
    /// Bumped when a ConfigMap or Secret of the pod's namespace changed: wakes containers
    /// waiting for one.
    objects_changed: tokio::sync::watch::Sender<u64>,
    /// The CDI devices leased to each container (by name) for the pod's life.
    devices: devices::Allocation,
    /// The stdio of each running container's current run, for `POST /attach`.
    attachable: attach::Attachable,
}

/// Members that will not run again, and whether the pod's whole lifecycle is over.
#[derive(Debug, Default)]
struct Finished {
    members: std::collections::HashSet<String>,
    pod: bool,
}

impl Pod {
    /// Changes the status; the saver task writes it out soon after.
    pub(crate) fn update(&self, change: impl FnOnce(&mut Status)) {
        let mut status = lock(&self.status);
        change(&mut status);
        status.refresh();
        status.unsaved = true;
        self.saver.notify_one();
    }

    /// The pod's dialer, made on first use.
    pub(crate) fn dialer(&self) -> Result<netns::Dialer, String> {
        let mut dialer = lock(&self.dialer);
        if let Some(dialer) = dialer.as_ref() {
            return Ok(dialer.clone());
        }
        let made = self.ns.net().dialer().map_err(|e| e.to_string())?;
        *dialer = Some(made.clone());
        Ok(made)
    }

    /// `name` will not run again (its loop ended).
    pub(crate) fn member_done(&self, name: &str) {
        lock(&self.finished).members.insert(name.to_owned());
        self.logs_written.send_replace(());
    }

    /// Whether `container` will write no more log lines: it is done, or the whole pod is.
    pub(crate) fn logs_final(&self, container: &str) -> bool {
        let finished = lock(&self.finished);
        finished.pod || finished.members.contains(container)
    }

    /// Waits until the containers that stop before `member` have stopped: for a native
    /// sidecar, every main container and every sidecar after it in the manifest (kubelet's
    /// termination ordering: sidecars stop in reverse order, after the main containers).
    pub(crate) async fn turn_to_stop(&self, member: &crate::spec::Member) {
        let before: Vec<&str> = self
            .plan
            .init_containers
            .iter()
            .skip_while(|m| m.name != member.name)
            .skip(1)
            .filter(|m| m.sidecar)
            .chain(&self.plan.containers)
            .map(|m| m.name.as_str())
            .collect();
        // Subscribed before the check: a member that finishes in between is still seen.
        let mut changes = self.logs_written.subscribe();
        loop {
            {
                let finished = lock(&self.finished);
                if before.iter().all(|name| finished.members.contains(*name)) {
                    return;
                }
            }
            if changes.changed().await.is_err() {
                return;
            }
        }
    }

    pub(crate) fn volumes(&self) -> MutexGuard<'_, Volumes> {
        lock(&self.volumes)
    }

    pub(crate) fn deadline(&self) -> Instant {
        lock(&self.deadline).unwrap_or_else(|| Instant::now() + self.grace())
    }

    /// The grace period for stopping the pod: a delete's, or the manifest's.
    pub(crate) fn grace(&self) -> Duration {
        lock(&self.grace_override).unwrap_or(self.plan.termination_grace_period)
    }

    /// The value of a `fieldRef`.
    pub(crate) fn field(&self, path: &str) -> String {
        field(&self.plan, path)
    }
}

/// A `fieldRef`'s value (env or downwardAPI volume).
fn field(plan: &PodPlan, path: &str) -> String {
    let map = |key: &str| {
        plan.manifest["metadata"][key]
            .as_object()
            .cloned()
            .unwrap_or_default()
    };
    let one = |key: &str| {
        path.strip_prefix(&format!("metadata.{key}['"))
            .and_then(|rest| rest.strip_suffix("']"))
    };
    match path {
        "metadata.name" => plan.name.clone(),
        "metadata.namespace" => plan.namespace.clone(),
        "metadata.uid" => plan.uid.clone().unwrap_or_default(),
        "metadata.labels" | "metadata.annotations" => {
            format_map(&map(path.trim_start_matches("metadata.")))
        }
        "spec.nodeName" => node_name(),
        // The API server's default: the namespace's `default` service account.
        "spec.serviceAccountName" => ["serviceAccountName", "serviceAccount"]
            .iter()
            .find_map(|k| plan.manifest["spec"][k].as_str().filter(|s| !s.is_empty()))
            .unwrap_or("default")
            .to_owned(),
        "status.hostIP" | "status.hostIPs" => host_ip().unwrap_or_default(),
        // A pod on the host's network has the host's address; one with only its loopback has
        // none.
        "status.podIP" => pod_ips(plan).into_iter().next().unwrap_or_default(),
        // kubelet: every address, joined with commas.
        "status.podIPs" => pod_ips(plan).join(","),
        _ => {
            for key in ["labels", "annotations"] {
                if let Some(name) = one(key) {
                    return map(key)
                        .get(name)
                        .and_then(|v| v.as_str())
                        .unwrap_or_default()
                        .to_owned();
                }
            }
            // A field the downward API does not give (validation refused it before).
            String::new()
        }
    }
}

/// The host's name, which is its node's name.
pub(crate) fn node_name() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `status.podIPs`: the pod's addresses on the pod network; the host's with `hostNetwork`;
/// none with only its loopback.
pub(crate) fn pod_ips(plan: &PodPlan) -> Vec<String> {
    if plan.host_network {
        return host_ip().into_iter().collect();
    }
    plan.pod_ips.iter().map(|ip| ip.to_string()).collect()
}

/// The host's address, as a node's InternalIP: the IPv4 address of the interface the
/// default route leaves by (from /proc/net/route), else the first address that is not
/// loopback. `None` on a host without one.
pub(crate) fn host_ip() -> Option<String> {
    static HOST_IP: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    HOST_IP.get_or_init(find_host_ip).clone()
}

/// [`host_ip`], looked up: the default route's interface's address through one ioctl (a
/// `getifaddrs` dump grows with every pod's veth on the host), else the first address of an
/// interface that is not loopback.
fn find_host_ip() -> Option<String> {
    let route = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    let default_dev = route.lines().skip(1).find_map(|line| {
        let mut cols = line.split_whitespace();
        let dev = cols.next()?;
        (cols.next()? == "00000000").then(|| dev.to_owned())
    });
    if let Some(dev) = &default_dev
        && let Ok(Some(ip)) = netns::interface_ipv4(dev)
    {
        return Some(ip.to_string());
    }
    nix::ifaddrs::getifaddrs()
        .ok()?
        .find_map(|a| {
            let ip = a.address?.as_sockaddr_in()?.ip();
            (!ip.is_loopback()).then_some(ip)
        })
        .map(|ip| ip.to_string())
}

/// Labels or annotations as the downward API writes them (`fieldpath.FormatMap`): `key="value"`
/// lines sorted by key, each value quoted as Go's `%q` quotes it, no newline after the last.
fn format_map(map: &serde_json::Map<String, serde_json::Value>) -> String {
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    let lines: Vec<String> = keys
        .into_iter()
        .map(|k| {
            let value = map[k].as_str().unwrap_or_default();
            let mut quoted = String::from("\"");
            for c in value.chars() {
                match c {
                    '"' => quoted.push_str("\\\""),
                    '\\' => quoted.push_str("\\\\"),
                    '\n' => quoted.push_str("\\n"),
                    '\t' => quoted.push_str("\\t"),
                    '\r' => quoted.push_str("\\r"),
                    c if c.is_control() => quoted.push_str(&format!("\\x{:02x}", c as u32)),
                    c => quoted.push(c),
                }
            }
            quoted.push('"');
            format!("{k}={quoted}")
        })
        .collect();
    lines.join("\n")
}

/// What a downwardAPI file holds.
fn downward(plan: &PodPlan, value: &crate::spec::DownwardValue) -> String {
    match value {
        crate::spec::DownwardValue::Field(path) => field(plan, path),
        crate::spec::DownwardValue::Resource(r) => resource_field(plan, r),
    }
}

/// A `resourceFieldRef`'s value: its container's request or limit (see
/// [`crate::spec::resources::field_value`]).
pub(crate) fn resource_field(plan: &PodPlan, r: &crate::spec::ResourceRef) -> String {
    let resources = plan
        .init_containers
        .iter()
        .chain(&plan.containers)
        .find(|m| m.name == r.container)
        .map(|m| m.resources)
        .unwrap_or_default();
    crate::spec::resources::field_value(
        &r.resource,
        r.divisor,
        &resources,
        crate::spec::resources::Allocatable::host(),
    )
}

/// A poisoned lock still holds consistent data here: every change is one assignment.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// The state directory of pod `name` under `root`.
pub fn pod_dir(root: &Path, namespace: &str, name: &str) -> PathBuf {
    root.join("pods")
        .join(crate::spec::pod_key(namespace, name))
}

/// Runs the pod in `plan` until it ends or `shutdown` is cancelled (then deletes it). Returns
/// once everything the pod made is gone, except its state directory (logs and status) when the
/// pod ended by itself.
pub async fn run(
    mut plan: PodPlan,
    options: Options,
    shutdown: CancellationToken,
) -> Result<Outcome, Error> {
    // What the API server gives every pod it keeps: a uid (unless the manifest has one) and
    // its creation time. `get -o yaml` shows them, the downward API reads the uid, and a pod
    // made again under the same name (a StatefulSet's) is told apart by them.
    let uid = plan.uid.get_or_insert_with(crate::objects::new_uid).clone();
    if let Some(meta) = plan.manifest["metadata"].as_object_mut() {
        meta.insert("uid".into(), uid.into());
        meta.insert(
            "creationTimestamp".into(),
            jiff::Timestamp::now()
                .strftime("%Y-%m-%dT%H:%M:%SZ")
                .to_string()
                .into(),
        );
    }
    // A bridge and veth pairs need root (CAP_NET_ADMIN on the host): without it the pod keeps
    // only its loopback, as `podkit.io/network: none` asks.
    if plan.pod_network && !nix::unistd::geteuid().is_root() {
        warn!("not root: the pod gets no address of its own, only its loopback");
        plan.pod_network = false;
    }
    let network = if plan.pod_network {
        Some(match cni::Cni::from_env() {
            Ok(Some(cni)) => PodNetwork::Cni(cni),
            Ok(None) => PodNetwork::Bridge(network::Network::from_env().map_err(Error::Network)?),
            Err(err) => return Err(Error::Network(image::error_chain(&err))),
        })
    } else {
        None
    };
    let dir = pod_dir(&options.root, &plan.namespace, &plan.name);
    make_state_dir(&plan, &dir)?;
    let key = plan.key();
    let wants_devices = devices::wants_devices(&plan);
    // Held by its scheduling gates, then until the devices it asks for are free.
    let devices = match ungated(&mut plan, &dir, &shutdown).await {
        true => devices::wait(&plan, &dir, &shutdown)
            .await
            .map_err(Error::Devices),
        false => Ok(None),
    };
    let ran = matches!(devices, Ok(Some(_)));
    let result = match devices {
        Ok(Some(devices)) => run_in(plan, options, &dir, network.as_ref(), devices, shutdown).await,
        Ok(None) => {
            // Deleted before it started: the log a detached supervisor keeps beside the pod's
            // directory until then goes with it.
            let _ = std::fs::remove_file(dir.with_file_name(format!(".{key}.supervisor.log")));
            Ok(Outcome {
                phase: "Pending".to_owned(),
                deleted: true,
            })
        }
        Err(err) => Err(err),
    };
    // Its devices go back, for the pods waiting for them (before its directory, as its
    // address below).
    if wants_devices
        && let Err(err) = devices::release(Path::new(devices::LEASES_DIR), &dir.to_string_lossy())
    {
        warn!(%err, "failed to give back the pod's devices");
    }
    // The pod's network namespace, and with it its veth pair, is gone: its hostPorts and
    // address go back (0.3 ms; before its directory, so `gc` never takes a supervisor that is
    // still ending for a dead one and releases the lease itself).
    if ran
        && let Some(PodNetwork::Bridge(network)) = &network
        && let Err(err) = network.leave(&dir).await
    {
        warn!(%err, "failed to leave the pod network");
    }
    match &result {
        Ok(outcome) if !outcome.deleted => {}
        // Deleted, or never started: nothing of the pod is kept. Renamed to a hidden name
        // first, so `get`, `delete` and `gc` never see a half-removed pod (which, without its
        // supervisor.pid, would look like a crashed one).
        _ => {
            let hidden = dir.with_file_name(format!(
                ".{}.removing.{}",
                plan_name(&dir),
                std::process::id()
            ));
            let gone =
                std::fs::rename(&dir, &hidden).and_then(|()| std::fs::remove_dir_all(&hidden));
            if let Err(err) = gone {
                warn!(dir = %dir.display(), %err, "failed to remove the pod's state directory");
            }
        }
    }
    result
}

/// Holds a pod while it has `schedulingGates` (kube-scheduler binds no gated pod): nothing of it
/// is made until `apply` rewrites its pod.json with every gate removed (the API server lets an
/// update only remove gates). Returns false when the pod is deleted meanwhile.
async fn ungated(plan: &mut PodPlan, dir: &Path, shutdown: &CancellationToken) -> bool {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    if plan.scheduling_gates.is_empty() {
        return true;
    }
    info!(gates = ?plan.scheduling_gates, "the pod waits for its scheduling gates to be removed");
    // pod.json is renamed into place; without inotify (out of watches) it is read each second.
    #[allow(deprecated)] // see objects_watch
    let watch = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
        .and_then(|inotify| {
            inotify
                .add_watch(
                    dir,
                    AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_CLOSE_WRITE,
                )
                .map(|_| inotify)
        })
        .ok()
        .and_then(|inotify| tokio::io::unix::AsyncFd::new(ObjectsWatch(inotify)).ok());
    loop {
        let kept = std::fs::read(dir.join("pod.json"))
            .ok()
            .and_then(|text| serde_json::from_slice::<serde_json::Value>(&text).ok());
        if let Some(kept) = kept {
            let gates: Vec<String> = kept["spec"]["schedulingGates"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|g| g["name"].as_str().map(str::to_owned))
                .collect();
            if gates.is_empty() {
                info!("scheduling gates removed: the pod starts");
                if let Some(spec) = plan.manifest["spec"].as_object_mut() {
                    spec.remove("schedulingGates");
                }
                plan.scheduling_gates.clear();
                return true;
            }
            plan.scheduling_gates = gates;
        }
        let changed = async {
            match &watch {
                Some(watch) => next_events(watch).await,
                None => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return false,
            () = changed => {}
        }
    }
}

fn plan_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

async fn run_in(
    mut plan: PodPlan,
    mut options: Options,
    dir: &Path,
    network: Option<&PodNetwork>,
    devices: devices::Allocation,
    shutdown: CancellationToken,
) -> Result<Outcome, Error> {
    let reaper = Reaper::start().map_err(Error::Reaper)?;
    let mut builder = PodNamespaces::builder(plan.key(), dir.join("ns")).hostname(&plan.hostname);
    if plan.host_network {
        builder = builder
            .share_host(netns::NsKind::Net)
            .share_host(netns::NsKind::Uts);
    }
    if plan.host_ipc {
        builder = builder.share_host(netns::NsKind::Ipc);
    }
    if plan.share_process_namespace {
        // Its own process group: a Ctrl-C at the terminal must not reach the pod's PID 1.
        std::os::unix::process::CommandExt::process_group(&mut options.pause, 0);
        builder = builder.pid_namespace(options.pause);
    }
    // netns makes the namespaces on a thread of its own: set it going, make the pod's cgroup
    // and bind its API socket meanwhile (on another CPU when one is free), then wait for it.
    let mut creating = std::pin::pin!(builder.create());
    let early = std::future::poll_fn(|cx| Poll::Ready(creating.as_mut().poll(cx))).await;
    let cgroup = PodCgroup::create(&plan_name(dir), dir);
    let api_listener = bind_api(dir);
    let ns = match early {
        Poll::Ready(created) => created,
        Poll::Pending => creating.await,
    };
    // What the pod made so far, undone when its start fails.
    let undo = |ns: Option<PodNamespaces>, cgroup: &Option<PodCgroup>| {
        // The image containers' /dev/shm, if it was mounted (image::pod_files), and their
        // directory on disk (image::containers_on_disk).
        let _ = nix::mount::umount2(&dir.join("shm"), nix::mount::MntFlags::MNT_DETACH);
        image::remove_containers_dir(dir);
        // A CNI network's DEL, while the namespace is still there.
        cni_leave(dir, &reaper);
        if let Some(ns) = ns {
            delete_namespaces(ns);
        }
        if let Some(cgroup) = cgroup {
            cgroup.remove();
        }
    };
    let ns = match ns {
        Ok(ns) => ns,
        Err(source) => {
            undo(None, &cgroup);
            return Err(Error::Namespaces {
                name: plan.name.clone(),
                source: Box::new(source),
            });
        }
    };
    if let Err(err) = set_sysctls(&ns, &plan.sysctls).await {
        undo(Some(ns), &cgroup);
        return Err(Error::Sysctl(err));
    }
    // Huge pages are limited in the pod's cgroup as kubelet limits them in its pod cgroup.
    let huge_pages = plan.huge_pages();
    let limited = match &cgroup {
        Some(cgroup) => cgroup.set_pod_huge_pages(&huge_pages),
        None if !huge_pages.is_empty() => Err("huge pages need the pod's cgroup with the \
             hugetlb controller, and none could be made (no cgroup v2 mounted, or not \
             writable: see the supervisor's log)"
            .to_owned()),
        None => Ok(()),
    };
    if let Err(err) = limited {
        undo(Some(ns), &cgroup);
        return Err(Error::HugePages(err));
    }
    let joined = match network {
        Some(PodNetwork::Bridge(network)) => network.join(ns.net(), dir, &reaper).await,
        Some(PodNetwork::Cni(cni)) => cni_join(cni, &plan, dir, &reaper).await,
        None => Ok(Vec::new()),
    };
    match joined {
        Ok(ips) => plan.pod_ips = ips,
        Err(err) => {
            undo(Some(ns), &cgroup);
            return Err(Error::Network(err));
        }
    }
    let render = |value: &crate::spec::DownwardValue| downward(&plan, value);
    let source = volumes::ObjectSource {
        store: crate::objects::Store::new(&image::storage()),
        namespace: plan.namespace.clone(),
    };
    let mut volumes = match Volumes::prepare(
        &plan.volumes,
        &dir.join("volumes"),
        plan.fs_group,
        source.clone(),
        &render,
    ) {
        Ok(volumes) => volumes,
        Err(err) => {
            undo(Some(ns), &cgroup);
            return Err(err.into());
        }
    };
    // A pod that reads ConfigMaps or Secrets hears of their changes: its volumes are updated,
    // its waiting containers woken.
    let watcher = if volumes.has_objects() || reads_objects(&plan) {
        match objects_watch(&source) {
            Ok(watcher) => Some(watcher),
            Err(err) => {
                volumes.cleanup();
                undo(Some(ns), &cgroup);
                return Err(Error::Objects(err));
            }
        }
    } else {
        None
    };
    // For image containers: the OCI runtime, found once, and the files they share (/etc/hosts,
    // /etc/resolv.conf, /dev/shm, ...).
    let images = plan
        .init_containers
        .iter()
        .chain(&plan.containers)
        .any(|m| matches!(m.runs, crate::spec::Runs::Image(_)));
    let runtime = images
        .then(|| {
            let (handler, named_by) = match (&plan.runtime_class, &plan.runtime_handler) {
                (_, Some(handler)) => (handler.clone(), None),
                (None, None) => match runtime::configured_handler()? {
                    Some(handler) => (handler, Some(runtime::RUNTIME_VAR)),
                    None => (runtime::DEFAULT_HANDLER.to_owned(), None),
                },
                (Some(class), None) => {
                    return Err(format!(
                        "RuntimeClass {class:?} was not resolved to a handler"
                    ));
                }
            };
            let runtime = Runtime::find(&handler, named_by, dir)?;
            let limited = plan
                .init_containers
                .iter()
                .chain(&plan.containers)
                .any(|m| m.resources != crate::spec::Resources::default());
            if limited {
                if !runtime.applies_limits() {
                    return Err(format!(
                        "the OCI runtime {handler:?} runs with --cgroup-manager=disabled on this \
                         hybrid cgroup host and would apply no cpu or memory limit: run the pod \
                         with runc, or leave out the containers' `resources`"
                    ));
                }
                match &cgroup {
                    Some(cgroup) => cgroup.enable_controllers()?,
                    None => {
                        return Err("cpu and memory limits need the pod's cgroup, and none \
                                    could be made (no cgroup v2 mounted, or not writable: see \
                                    the supervisor's log)"
                            .to_owned());
                    }
                }
            }
            image::pod_files(dir, &plan, &options.root)?;
            image::containers_on_disk(dir, &plan.key())?;
            Ok(runtime)
        })
        .transpose();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(err) => {
            volumes.cleanup();
            undo(Some(ns), &cgroup);
            return Err(Error::ImageContainers(err));
        }
    };
    // hostPorts are bound before any container starts: one in use fails the start, naming it.
    let ports_stop = CancellationToken::new();
    // On a CNI network whose plugins publish hostPorts (portmap), podkit publishes none of
    // its own: only those that ask for the relay.
    let (bridge, cni_ports) = match network {
        Some(PodNetwork::Bridge(network)) => (Some(network), false),
        Some(PodNetwork::Cni(cni)) => (None, cni.publishes_ports()),
        None => (None, false),
    };
    let published = host_ports::publish(&plan, dir, ns.net(), bridge, cni_ports, &ports_stop);
    let ports = match published.await {
        Ok(ports) => ports,
        Err(err) => {
            volumes.cleanup();
            undo(Some(ns), &cgroup);
            return Err(err);
        }
    };
    let pod = Arc::new(Pod {
        status: Mutex::new(Status::new(&plan, dir)),
        plan,
        dir: dir.to_path_buf(),
        ns,
        dialer: Mutex::new(None),
        saver: tokio::sync::Notify::new(),
        reaper,
        volumes: Mutex::new(volumes),
        deadline: Mutex::new(None),
        echo: options.echo,
        grace_override: Mutex::new(None),
        cgroup,
        runtime,
        logs_written: tokio::sync::watch::Sender::new(()),
        finished: Mutex::new(Finished::default()),
        object_env: Mutex::new(std::collections::HashMap::new()),
        objects_changed: tokio::sync::watch::Sender::new(0),
        devices,
        attachable: Mutex::new(std::collections::HashMap::new()),
    });
    let watching = watcher.map(|w| tokio::spawn(follow_objects(pod.clone(), w)));
    // Image containers read the Services' names from the pod's /etc/hosts: kept current.
    if pod.runtime.is_some() && !pod.plan.host_network {
        tokio::spawn(image::keep_service_names(
            dir.to_path_buf(),
            pod.plan.clone(),
            options.root.clone(),
        ));
    }
    pod.update(|s| {
        s.event(
            "Normal",
            "Scheduled",
            "pod",
            "Pod namespaces created, lo up".to_owned(),
        )
    });

    // A detached supervisor (podkit apply) logs to a file beside the pod's directory, where
    // apply reads why a start failed; now that the pod has started, the log moves in with it.
    let early_log = dir.with_file_name(format!(".{}.supervisor.log", pod.plan.key()));
    if early_log.exists() {
        let _ = std::fs::rename(&early_log, dir.join("supervisor.log"));
    }
    let saver = tokio::spawn(save_on_change(pod.clone()));
    let api_stop = CancellationToken::new();
    let api = match api_listener {
        Ok(listener) => Some(tokio::spawn(api::serve(
            pod.clone(),
            listener,
            shutdown.clone(),
            api_stop.clone(),
        ))),
        Err(err) => {
            warn!(%err, "failed to serve the pod's API; the CLI falls back to status.json and signals");
            None
        }
    };
    let deleted = lifecycle(&pod, &shutdown).await;
    if let Some(watching) = watching {
        watching.abort();
        let _ = watching.await;
    }
    lock(&pod.finished).pod = true;
    pod.logs_written.send_replace(());
    ports_stop.cancel();
    ports.stop().await;
    api_stop.cancel();
    if let Some(api) = api {
        let _ = api.await;
    }
    let _ = std::fs::remove_file(dir.join(API_SOCKET));
    saver.abort();
    // An aborted task lets go of the pod once it is dropped: wait for that.
    let _ = saver.await;
    lock(&pod.status).save();
    let phase = lock(&pod.status).phase.to_owned();
    teardown(pod);
    Ok(Outcome { phase, deleted })
}

/// Whether a container of the pod reads env from a ConfigMap or Secret.
fn reads_objects(plan: &PodPlan) -> bool {
    plan.init_containers
        .iter()
        .chain(&plan.containers)
        .any(|m| {
            !m.env_from.is_empty()
                || m.env
                    .iter()
                    .any(|e| matches!(e.value, crate::spec::EnvValue::Key(_)))
        })
}

/// An inotify watch on the pod namespace's ConfigMaps, Secrets and PersistentVolumeClaims (their
/// directories made if missing): objects are renamed into place or removed there.
fn objects_watch(
    source: &volumes::ObjectSource,
) -> Result<tokio::io::unix::AsyncFd<ObjectsWatch>, String> {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
        .map_err(|e| format!("failed to watch the pod's ConfigMaps and Secrets: inotify: {e}"))?;
    for kind in [
        crate::spec::ObjectKind::ConfigMap,
        crate::spec::ObjectKind::Secret,
        crate::spec::ObjectKind::PersistentVolumeClaim,
    ] {
        let dir = source
            .store
            .make_dir(kind, &source.namespace)
            .map_err(|e| format!("{e:#}"))?;
        let mask = AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_MOVED_FROM;
        inotify
            .add_watch(&dir, mask)
            .map_err(|e| format!("failed to watch {}: {e}", dir.display()))?;
    }
    // `new` is deprecated as unsound for a type whose fd may change or close while tokio has
    // it registered; ObjectsWatch owns its inotify fd for its whole life and always returns
    // it, the condition `register` asks its callers to uphold (without `unsafe`, which podkit
    // keeps to the netns crate).
    #[allow(deprecated)]
    tokio::io::unix::AsyncFd::new(ObjectsWatch(inotify))
        .map_err(|e| format!("failed to watch the pod's ConfigMaps and Secrets: {e}"))
}

/// Waits for events on `watch`, then reads every one queued (which does not matter: what they
/// watch is read again).
async fn next_events(watch: &tokio::io::unix::AsyncFd<ObjectsWatch>) {
    if let Ok(mut ready) = watch.readable().await {
        while watch.get_ref().0.read_events().is_ok_and(|e| !e.is_empty()) {}
        ready.clear_ready();
    }
}

/// An inotify instance as tokio's `AsyncFd` takes it (nix's has no `AsRawFd`).
struct ObjectsWatch(nix::sys::inotify::Inotify);

impl std::os::fd::AsRawFd for ObjectsWatch {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsFd;
        self.0.as_fd().as_raw_fd()
    }
}

/// While the pod runs: on each change of an object of its namespace, its configMap, secret
/// and projected volumes are brought up to date and the containers waiting for an object are
/// woken. kubelet finds changes by a periodic sync (up to a minute late); the store's
/// directory tells at once.
async fn follow_objects(pod: Arc<Pod>, watch: tokio::io::unix::AsyncFd<ObjectsWatch>) {
    loop {
        let Ok(mut ready) = watch.readable().await else {
            return;
        };
        // Drained: which object changed does not matter, every volume is compared.
        let mut any = false;
        while let Ok(events) = watch.get_ref().0.read_events() {
            if events.is_empty() {
                break;
            }
            any |= events.iter().any(crate::objects::changes);
        }
        ready.clear_ready();
        if !any {
            continue;
        }
        let render = |value: &crate::spec::DownwardValue| downward(&pod.plan, value);
        if let Err(err) = pod.volumes().sync_objects(&render) {
            tracing::debug!(%err, "a volume still waits for its objects");
        }
        pod.objects_changed.send_modify(|n| *n += 1);
    }
}

/// Makes the pod's state directory, complete with `pod.json` and `supervisor.pid`, under a
/// hidden name first and then renamed into place: `get` and `gc` never see a pod directory
/// without the pid of its supervisor (which they would take for a crashed pod).
fn make_state_dir(plan: &PodPlan, dir: &Path) -> Result<(), Error> {
    let exists = || Error::Exists {
        name: plan.name.clone(),
        dir: dir.to_path_buf(),
    };
    if dir.exists() {
        return Err(exists());
    }
    let parent = dir.parent().unwrap_or(Path::new("/"));
    let tmp = parent.join(format!(".{}.{}", plan.key(), std::process::id()));
    let make = || -> std::io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)?;
        std::fs::DirBuilder::new().mode(0o700).create(&tmp)?;
        std::fs::create_dir(tmp.join("logs"))?;
        std::fs::create_dir(tmp.join("volumes"))?;
        let manifest = serde_json::to_vec_pretty(&plan.manifest).map_err(std::io::Error::other)?;
        status::write_atomic(&tmp.join("pod.json"), &manifest)?;
        status::write_atomic(
            &tmp.join("supervisor.pid"),
            std::process::id().to_string().as_bytes(),
        )?;
        // A gated pod is seen Pending (SchedulingGated) from its first moment.
        if !plan.scheduling_gates.is_empty() {
            let gated = serde_json::to_vec_pretty(&status::gated(plan.qos.as_str()))
                .map_err(std::io::Error::other)?;
            status::write_atomic(&tmp.join("status.json"), &gated)?;
        }
        // rename(2) onto an existing non-empty directory fails: two pods of one name cannot
        // both get here.
        std::fs::rename(&tmp, dir)?;
        status::notify();
        Ok(())
    };
    make().map_err(|source| {
        let _ = std::fs::remove_dir_all(&tmp);
        let taken = [nix::Error::ENOTEMPTY, nix::Error::EEXIST].map(|e| Some(e as i32));
        match source.raw_os_error() {
            code if taken.contains(&code) => exists(),
            _ => Error::StateDir {
                dir: dir.to_path_buf(),
                source,
            },
        }
    })
}

/// Runs init containers, sidecars and main containers, one by one as kubelet starts them (see
/// [`member::Turn`]); stops them all at the end. Returns whether the pod was deleted (rather
/// than ending by itself).
async fn lifecycle(pod: &Arc<Pod>, shutdown: &CancellationToken) -> bool {
    let init_policy = match pod.plan.restart_policy {
        RestartPolicy::Never => RestartPolicy::Never,
        _ => RestartPolicy::OnFailure,
    };
    let deadline = async {
        match pod.plan.active_deadline {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);

    // Every member started, with its stop token. A handle is taken out once awaited: a
    // JoinHandle must not be polled after it completed.
    let mut sidecars: Vec<(CancellationToken, Option<JoinHandle<End>>)> = Vec::new();
    let mut mains: Vec<(CancellationToken, Option<JoinHandle<End>>)> = Vec::new();
    let mut spawned: Vec<&str> = Vec::new();
    let mut deleted = false;
    // Deleted, past its deadline, or an init container failed: no main container starts.
    let mut over = false;
    for member in &pod.plan.init_containers {
        let stop = CancellationToken::new();
        if member.sidecar {
            let (turn, mut passed) = member::Turn::new(true);
            let task = tokio::spawn(member::run(
                pod.clone(),
                member.clone(),
                RestartPolicy::Always,
                stop.clone(),
                turn,
                None,
            ));
            sidecars.push((stop, Some(task)));
            spawned.push(&member.name);
            tokio::select! {
                () = started(&mut passed) => continue,
                () = shutdown.cancelled() => deleted = true,
                () = &mut deadline => deadline_exceeded(pod),
            }
            over = true;
            break;
        }
        let (turn, _) = member::Turn::new(false);
        let task = member::run(
            pod.clone(),
            member.clone(),
            init_policy,
            stop.clone(),
            turn,
            None,
        );
        tokio::pin!(task);
        let end = tokio::select! {
            end = &mut task => end,
            () = shutdown.cancelled() => { deleted = true; stop.cancel(); task.await; over = true; break; }
            () = &mut deadline => { deadline_exceeded(pod); stop.cancel(); task.await; over = true; break; }
        };
        if end != End::Exited(0) {
            // The phase says so (Failed, with no reason, as kubelet's getPhase leaves it).
            over = true;
            break;
        }
    }

    if !over {
        // All at once: their images pulled and image containers created side by side, each
        // started once the one before passed its turn.
        let mut previous: Option<member::Gate> = None;
        for member in &pod.plan.containers {
            let stop = CancellationToken::new();
            let (turn, passed) = member::Turn::new(false);
            let task = tokio::spawn(member::run(
                pod.clone(),
                member.clone(),
                pod.plan.restart_policy,
                stop.clone(),
                turn,
                previous.replace(passed),
            ));
            mains.push((stop, Some(task)));
            spawned.push(&member.name);
        }

        // Once the last container has started, the pages the start used are given back (see
        // `release_start_pages`): the supervisor lives as long as the pod, and keeps mapped
        // only what it uses again.
        if let Some(mut last) = previous.take() {
            tokio::spawn(async move {
                started(&mut last).await;
                let released = tokio::task::spawn_blocking(|| {
                    netns::release_free_memory();
                    netns::release_start_pages()
                })
                .await;
                match released {
                    Ok(Ok(bytes)) => debug!(bytes, "released the start's program pages"),
                    Ok(Err(err)) => debug!(%err, "failed to release the start's program pages"),
                    Err(_) => {}
                }
            });
        }
        let all_done = join_all(mains.iter_mut().map(|(_, t)| t));
        tokio::select! {
            () = all_done => {}
            () = shutdown.cancelled() => deleted = true,
            () = &mut deadline => deadline_exceeded(pod),
        }
    }

    // Termination: one grace period for the pod. Every container is told at once: each runs
    // its preStop hook at once; the main containers then get their stop signal, the sidecars
    // theirs in reverse order once the containers after them stopped (kubelet's termination
    // ordering). Members that never started count as stopped.
    *lock(&pod.deadline) = Some(Instant::now() + pod.grace());
    if deleted {
        // The pod's deletionTimestamp for `get` (a `podkit delete` wrote it already; Ctrl-C on
        // `podkit run` and the API's DELETE did not).
        let _ = std::fs::write(pod.dir.join(crate::state::TERMINATING), "");
    }
    for member in pod
        .plan
        .init_containers
        .iter()
        .chain(&pod.plan.containers)
        .filter(|m| !spawned.contains(&m.name.as_str()))
    {
        pod.member_done(&member.name);
    }
    for (stop, _) in mains.iter().chain(&sidecars) {
        stop.cancel();
    }
    join_all(mains.iter_mut().chain(sidecars.iter_mut()).map(|(_, t)| t)).await;
    pod.update(Status::finish);
    deleted
}

/// Waits until a sidecar's turn is passed: once it has started. A sidecar's task ends only when
/// it is stopped, so an ended task never passes it.
async fn started(passed: &mut tokio::sync::watch::Receiver<bool>) {
    if passed.wait_for(|passed| *passed).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The pod's API socket, in its directory.
pub const API_SOCKET: &str = "api.sock";

/// Binds `DIR/api.sock`, readable and writable by its owner only (the directory is 0700 too).
fn bind_api(dir: &Path) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(API_SOCKET);
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Writes status.json whenever the status changed; a burst of changes costs one write.
async fn save_on_change(pod: Arc<Pod>) {
    loop {
        pod.saver.notified().await;
        // After the tasks that are ready to run: a container's start and its readiness (at once
        // without a probe), or several containers' exits, then make one write, not several.
        tokio::task::yield_now().await;
        let mut status = lock(&pod.status);
        if status.unsaved {
            status.save();
        }
    }
}

fn deadline_exceeded(pod: &Pod) {
    pod.update(|s| {
        s.phase = "Failed";
        s.reason = Some("DeadlineExceeded".into());
        s.message = Some("Pod was active on the node longer than the specified deadline".into());
        s.event(
            "Normal",
            "DeadlineExceeded",
            "pod",
            "Pod was active longer than activeDeadlineSeconds".into(),
        );
    });
}

/// Awaits every handle still there (in order; the tasks run concurrently anyway), taking each
/// out once done, so that this can be cancelled and called again.
async fn join_all<'a>(tasks: impl Iterator<Item = &'a mut Option<JoinHandle<End>>>) {
    for slot in tasks {
        if let Some(task) = slot.as_mut() {
            let _ = task.await;
            *slot = None;
        }
    }
}

/// What image containers leave at the pod's end: the v1 cgroup parents runc makes on a hybrid
/// host, the pod's /dev/shm, whatever a run's failed removal left (never removed through a
/// mount), and the runtime's state roots (each container's state was deleted after its run).
fn remove_image_leftovers(pod: &Pod) {
    let leftovers = cgroup::remove_v1_leftovers(&pod.plan.key());
    if !leftovers.is_empty() {
        info!(removed = ?leftovers, "removed the runtime's cgroup v1 directories");
    }
    match nix::mount::umount2(&pod.dir.join("shm"), nix::mount::MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::ENOENT | nix::Error::EINVAL) => {}
        Err(err) => warn!(%err, "failed to unmount the pod's /dev/shm"),
    }
    // Each run removed its own; what a failed removal left goes now, never through a mount.
    for member in pod.plan.init_containers.iter().chain(&pod.plan.containers) {
        image::unstage(&pod.dir, &member.name);
        let rootfs = pod.dir.join("containers").join(&member.name);
        if rootfs.exists()
            && let Err(err) = oci::remove_rootfs(&rootfs)
        {
            warn!(dir = %rootfs.display(), err = %image::error_chain(&err), "failed to remove a container's root filesystem");
        }
    }
    let _ = std::fs::remove_dir(pod.dir.join("subpaths"));
    for line in image::remove_containers_dir(&pod.dir) {
        info!(line, "the containers' directory on disk");
    }
    for dir in ["runtime", "containers"] {
        let path = pod.dir.join(dir);
        if let Err(err) = std::fs::remove_dir_all(&path)
            && err.kind() != std::io::ErrorKind::NotFound
        {
            warn!(dir = %path.display(), %err, "failed to remove");
        }
    }
}

/// Removes what the pod made: processes left over, volumes, namespaces.
fn teardown(pod: Arc<Pod>) {
    kill_descendants();
    if let Some(cgroup) = &pod.cgroup {
        info!(removed = ?cgroup.remove(), "removed the pod's cgroups");
    }
    if pod.runtime.is_some() {
        remove_image_leftovers(&pod);
    }
    lock(&pod.volumes).cleanup();
    // A CNI network's DEL, before the namespace goes (as kubelet tears a sandbox's network
    // down before removing it).
    cni_leave(&pod.dir, &pod.reaper);
    match Arc::try_unwrap(pod) {
        Ok(pod) => delete_namespaces(pod.ns),
        Err(pod) => {
            // A task still holds the pod (it cannot: all were awaited); remove by name.
            warn!("pod still referenced at teardown; removing its namespaces by name");
            if let Err(err) = PodNamespaces::remove(&pod.plan.key(), &pod.dir.join("ns")) {
                warn!(%err, "failed to delete the pod's namespaces");
            }
        }
    }
}

/// The network a pod with an address of its own is on.
pub(crate) enum PodNetwork {
    /// podkit's own bridge of the host.
    Bridge(network::Network),
    /// The CNI network `PODKIT_CNI_CONF_DIR` points at.
    Cni(cni::Cni),
}

/// ADD of the pod to CNI network `cni`; its address. The attachment is cached in `dir` before
/// the first plugin runs (a supervisor killed during ADD leaves its DEL to `gc`) and again with
/// the result. A failed ADD has run its DEL; any later failure of the pod's start runs it in
/// `undo` (from the cache).
async fn cni_join(
    cni: &cni::Cni,
    plan: &PodPlan,
    dir: &Path,
    reaper: &Reaper,
) -> Result<Vec<std::net::IpAddr>, String> {
    let ports: Vec<cni::PortMapping> = if cni.publishes_ports() {
        plan.init_containers
            .iter()
            .chain(&plan.containers)
            .flat_map(|m| &m.host_ports)
            .filter(|p| !p.relay)
            .map(|p| cni::PortMapping {
                host_port: p.host_port,
                container_port: p.container_port,
                udp: p.udp,
                host_ip: p.host_ip,
            })
            .collect()
    } else {
        Vec::new()
    };
    let pod = cni::PodRef {
        namespace: &plan.namespace,
        name: &plan.name,
        uid: plan.uid.as_deref().unwrap_or_default(),
        dir,
        netns: Path::new("/run/netns").join(plan.key()),
        annotations: plan.manifest["metadata"]["annotations"].as_object(),
    };
    let error = |err: &cni::Error| image::error_chain(err);
    let mut attachment = cni::Attachment::new(cni, &pod, &ports).map_err(|e| error(&e))?;
    attachment.save(dir).map_err(|e| error(&e))?;
    let reaper = reaper.clone();
    // Plugins are children the reaper must leave to their own wait; off the runtime's threads.
    let (attachment, added) = tokio::task::spawn_blocking(move || {
        let added = reaper.paused(|| attachment.add().map(drop));
        (attachment, added)
    })
    .await
    .map_err(|e| format!("the CNI ADD task failed: {e}"))?;
    if let Err(err) = added {
        // Its DEL ran.
        cni::Attachment::forget(dir);
        return Err(error(&err));
    }
    attachment.save(dir).map_err(|e| error(&e))?;
    let ips = attachment.addresses().map_err(|e| error(&e))?;
    info!(
        network = %attachment.list.name,
        file = %attachment.list.file.display(),
        ?ips,
        "pod added to the CNI network"
    );
    // kubelet keeps one address per family (its `sortPodIPs`), the host's family first: IPv4
    // here, as `addresses` sorts them.
    let mut pod_ips: Vec<std::net::IpAddr> = Vec::new();
    for ip in ips {
        if !pod_ips.iter().any(|kept| kept.is_ipv6() == ip.is_ipv6()) {
            pod_ips.push(ip);
        }
    }
    Ok(pod_ips)
}

/// DEL of the pod's CNI attachment cached in `dir`, if it has one; the cache goes with a DEL
/// that succeeded; one that failed is logged and its cache kept for `gc` to try again (the pod's
/// plugins tolerate what is missing, so a failure is one the user must look at).
fn cni_leave(dir: &Path, reaper: &Reaper) {
    let attachment = match cni::Attachment::load(dir) {
        Ok(Some(attachment)) => attachment,
        Ok(None) => return,
        Err(err) => {
            warn!(err = %image::error_chain(&err), "no CNI DEL");
            return;
        }
    };
    match reaper.paused(|| attachment.del()) {
        Ok(()) => {
            cni::Attachment::forget(dir);
            info!(network = %attachment.list.name, "pod deleted from the CNI network");
        }
        Err(err) => {
            warn!(err = %image::error_chain(&err), "CNI DEL failed: kept for gc to try again");
            if let Err(err) = cni::keep_for_retry(dir, &attachment) {
                warn!(%err, "the failed CNI DEL could not be kept for gc");
            }
        }
    }
}

fn delete_namespaces(ns: PodNamespaces) {
    let name = ns.name().to_owned();
    match ns.delete() {
        Ok(removed) => info!(pod = %name, ?removed, "deleted the pod's namespaces"),
        Err(err) => warn!(pod = %name, %err, "failed to delete the pod's namespaces"),
    }
}

/// Kills every process below this one: orphans the members left (they were reparented to us,
/// the subreaper) must not outlive the pod. The reaper collects them.
fn kill_descendants() {
    for _ in 0..5 {
        let pids = descendants(std::process::id());
        if pids.is_empty() {
            return;
        }
        cgroup::sigkill(pids);
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn descendants(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut queue = vec![pid];
    while let Some(parent) = queue.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{parent}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let Ok(children) = std::fs::read_to_string(task.path().join("children")) else {
                continue;
            };
            for child in children
                .split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok())
            {
                // Zombies are the reaper's; only live processes need a signal.
                let zombie =
                    std::fs::read_to_string(format!("/proc/{child}/stat")).is_ok_and(|stat| {
                        stat.rsplit(')')
                            .next()
                            .is_some_and(|rest| rest.trim_start().starts_with('Z'))
                    });
                if !zombie {
                    found.push(child);
                }
                queue.push(child);
            }
        }
    }
    found
}
