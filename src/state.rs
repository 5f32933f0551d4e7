//! Pods as the CLI finds them: one directory per pod under the state root, written by its
//! supervisor (`pod.json`, `status.json`, `events.json`, `supervisor.pid`, `logs/`, `ns/`,
//! `volumes/`). There is no daemon to ask: listing the directory is listing the pods.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use serde_json::Value;

use crate::supervisor::pod_dir;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("pod {name:?} not found in namespace {namespace:?}")]
    NotFound { namespace: String, name: String },

    #[error("failed to read {path:?}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path:?} is damaged")]
    Damaged {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// A pod's state directory, read at one moment.
#[derive(Debug, Clone)]
pub struct PodState {
    pub name: String,
    /// `metadata.namespace` (`default` when the manifest leaves it out).
    pub namespace: String,
    pub dir: PathBuf,
    /// The manifest as validated (a v1 Pod, JSON).
    pub manifest: Value,
    /// The last status the supervisor wrote; `None` before its first write.
    pub status: Option<PodStatus>,
    /// The supervisor's pid, when it is alive.
    pub supervisor: Option<u32>,
    /// When the pod's directory was made: its age.
    pub created: std::time::SystemTime,
}

impl PodState {
    /// The pod's key on this host (`spec::pod_key`): what its directory, network namespace
    /// and cgroups are named by.
    pub fn key(&self) -> String {
        crate::spec::pod_key(&self.namespace, &self.name)
    }

    /// The pod's phase (one of the API's five): the supervisor's, `Unknown` when the
    /// supervisor died before the pod ended.
    pub fn phase(&self) -> &str {
        let phase = self
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .unwrap_or("Pending");
        let ended = matches!(phase, "Succeeded" | "Failed");
        match self.supervisor {
            None if !ended => "Unknown",
            _ => phase,
        }
    }

    /// When a delete began stopping the pod (its `deletionTimestamp`), while the supervisor
    /// stops it. kubectl shows such a pod as `Terminating`; its phase stays what it is.
    pub fn deletion(&self) -> Option<std::time::SystemTime> {
        self.supervisor?;
        let marker = std::fs::metadata(self.dir.join(TERMINATING)).ok()?;
        marker.modified().ok()
    }

    /// A v1 Pod: the manifest with the status, as `kubectl get -o yaml` shows one.
    pub fn to_pod(&self) -> Pod {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let mut pod: Pod = serde_json::from_value(self.manifest.clone()).unwrap_or_default();
        let mut status = self.status.clone().unwrap_or_default();
        status.phase = Some(self.phase().to_owned());
        pod.status = Some(status);
        if let Some(since) = self.deletion()
            && let Ok(time) = jiff::Timestamp::try_from(since)
        {
            pod.metadata.deletion_timestamp = Some(Time(time));
        }
        pod
    }

    pub fn age(&self) -> Duration {
        self.created.elapsed().unwrap_or_default()
    }
}

/// The marker a delete leaves while the supervisor stops the pod.
pub const TERMINATING: &str = "terminating";

/// Every pod under `root`, of every namespace, by namespace and name.
pub fn list(root: &Path) -> Result<Vec<PodState>, StateError> {
    let pods = root.join("pods");
    let entries = match std::fs::read_dir(&pods) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(StateError::Read { path: pods, source }),
    };
    // Hidden names are not pods: pods being made (supervisor::make_state_dir) and the logs of
    // detached supervisors that have not started yet (podkit apply).
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| !name.starts_with('.'))
        .collect();
    names.sort();
    let mut found = Vec::new();
    for key in names {
        // `<namespace>_<name>` (spec::pod_key); anything else is not a pod's.
        let Some((namespace, name)) = key.split_once('_') else {
            continue;
        };
        match read(root, namespace, name) {
            Ok(pod) => found.push(pod),
            // Gone between the listing and the read: deleted meanwhile.
            Err(StateError::NotFound { .. }) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(found)
}

/// The pods of `namespace` (of every namespace when `None`).
pub fn list_in(root: &Path, namespace: Option<&str>) -> Result<Vec<PodState>, StateError> {
    Ok(list(root)?
        .into_iter()
        .filter(|p| namespace.is_none_or(|ns| p.namespace == ns))
        .collect())
}

/// The pid of the live supervisor of the pod whose state directory is `dir`, if it has one.
pub fn supervisor_of(dir: &Path) -> Option<u32> {
    std::fs::read_to_string(dir.join("supervisor.pid"))
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .filter(|pid| is_supervisor(*pid))
}

/// The pod `name` of `namespace` under `root`.
pub fn read(root: &Path, namespace: &str, name: &str) -> Result<PodState, StateError> {
    let dir = pod_dir(root, namespace, name);
    let meta = std::fs::metadata(&dir).map_err(|_| StateError::NotFound {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    })?;
    let manifest = read_json(&dir.join("pod.json"))?.unwrap_or(Value::Null);
    let status = read_json(&dir.join("status.json"))?;
    let supervisor = supervisor_of(&dir);
    // A supervisor removing its pod renames the directory away first: if that happened while
    // the files above were read, what was read (no supervisor.pid, say) is not this pod.
    if !dir.exists() {
        return Err(StateError::NotFound {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        });
    }
    Ok(PodState {
        name: name.to_owned(),
        namespace: namespace.to_owned(),
        dir,
        manifest,
        status,
        supervisor,
        created: meta.modified().unwrap_or(std::time::UNIX_EPOCH),
    })
}

/// Events as the supervisor recorded them.
pub fn events(pod: &PodState) -> Vec<crate::supervisor::EventRecord> {
    read_json(&pod.dir.join("events.json"))
        .ok()
        .flatten()
        .unwrap_or_default()
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, StateError> {
    match std::fs::read(path) {
        Ok(data) => serde_json::from_slice(&data)
            .map(Some)
            .map_err(|source| StateError::Damaged {
                path: path.to_path_buf(),
                source,
            }),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StateError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The images pods use, by image id, with the names of the pods using each: what `podkit rmi`
/// refuses to remove and `podkit image prune` keeps.
///
/// An image is in use while a pod whose container status records it exists, in any phase:
/// also a pod whose supervisor died (Unknown), whose containers may still run until
/// `podkit gc`, as podman keeps the image of a stopped container. A status's `imageID` is read
/// as the runtimes write it: an image id (`sha256:<config digest>`, containerd's imageRef
/// without a repo digest) or a repo digest (`NAME@sha256:<manifest digest>`, with or without
/// Docker's `docker-pullable://`), found in `store` for its image id.
pub fn images_in_use(
    root: &Path,
    store: &oci::Store,
) -> Result<BTreeMap<oci::Digest, Vec<String>>, StateError> {
    let mut in_use: BTreeMap<oci::Digest, Vec<String>> = BTreeMap::new();
    for pod in list(root)? {
        let Some(status) = &pod.status else { continue };
        let statuses = [
            &status.init_container_statuses,
            &status.container_statuses,
            &status.ephemeral_container_statuses,
        ];
        for container in statuses.into_iter().flatten().flatten() {
            let Some(id) = image_id(&container.image_id, store) else {
                continue;
            };
            let pods = in_use.entry(id).or_default();
            if !pods.contains(&pod.name) {
                pods.push(pod.name.clone());
            }
        }
    }
    Ok(in_use)
}

/// The image id a container status's `imageID` names, if any.
fn image_id(recorded: &str, store: &oci::Store) -> Option<oci::Digest> {
    let recorded = recorded.trim_start_matches("docker-pullable://");
    if recorded.is_empty() {
        return None;
    }
    if let Ok(id) = oci::Digest::parse(recorded) {
        return Some(id);
    }
    let (_, manifest) = recorded.rsplit_once('@')?;
    let manifest = oci::Digest::parse(manifest).ok()?;
    // An image no longer in the store cannot be removed anyway.
    store.image(&manifest).ok().map(|image| image.id)
}

/// Whether `pid` is alive and is a podkit supervisor (a pid can be reused).
fn is_supervisor(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
        let mut args = cmdline.split(|b| *b == 0);
        args.nth(1) == Some(b"supervise".as_slice())
    })
}

/// Removes everything a pod whose supervisor is gone left behind: its processes (found by
/// their network namespace, so nothing else is touched, and by its cgroups), its tmpfs volumes, its namespace pins
/// and `/run/netns` entry, the mount points podkit created, and its state directory. Returns a
/// line for each thing removed.
pub fn clean_up(pod: &PodState) -> Vec<String> {
    let mut removed = Vec::new();
    if let Ok(net) = netns::Namespace::open(netns::NsKind::Net, pod.dir.join("ns/net")) {
        for _ in 0..50 {
            let pids = processes_in(&net);
            if pids.is_empty() {
                break;
            }
            for (pid, command) in pids {
                let target = nix::unistd::Pid::from_raw(pid as i32);
                if nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGKILL).is_ok() {
                    removed.push(format!("killed pid {pid} ({command})"));
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        removed.dedup();
    }
    if let Ok(cgroup) = std::fs::read_to_string(pod.dir.join(crate::supervisor::cgroup::RECORD)) {
        let cgroup = Path::new(cgroup.trim());
        // Only what the supervisor made: a `podkit-NAME` cgroup.
        if cgroup.file_name() == Some(format!("podkit-{}", pod.key()).as_ref()) {
            removed.extend(crate::supervisor::cgroup::remove_tree(cgroup));
        }
    }
    // Image containers: the runtime ends what is left of each and deletes its state; their
    // overlays are among the mounts below.
    for (handler, root) in crate::supervisor::image::runtime_roots(&pod.dir) {
        let Ok(containers) = std::fs::read_dir(&root) else {
            continue;
        };
        for id in containers.flatten().map(|e| e.file_name()) {
            let program = Path::new(&handler);
            let deleted = crate::supervisor::runtime::Invocation::of(program)
                .command(program, &root)
                .args(["delete", "-f"])
                .arg(&id)
                .stdin(std::process::Stdio::null())
                .output();
            match deleted {
                Ok(out) if out.status.success() => removed.push(format!(
                    "deleted container {} ({handler})",
                    id.to_string_lossy()
                )),
                Ok(out) => removed.push(format!(
                    "failed to delete container {} ({handler}): {}",
                    id.to_string_lossy(),
                    String::from_utf8_lossy(&out.stderr).trim()
                )),
                Err(err) => removed.push(format!("failed to run {handler}: {err}")),
            }
        }
    }
    removed.extend(crate::supervisor::cgroup::remove_v1_leftovers(&pod.key()));
    // Its CNI network's DEL (from the attachment cached with the pod), while its network
    // namespace is still pinned.
    removed.extend(crate::supervisor::cni::release(&pod.dir));
    for mount in mounts_under(&pod.dir) {
        if nix::mount::umount2(&mount, nix::mount::MntFlags::MNT_DETACH).is_ok() {
            removed.push(format!("unmounted {}", mount.display()));
        }
    }
    // Image containers' writable layers on the store's disk.
    removed.extend(crate::supervisor::image::remove_containers_dir(&pod.dir));
    match netns::PodNamespaces::remove(&pod.key(), &pod.dir.join("ns")) {
        Ok(lines) => removed.extend(lines),
        Err(err) => removed.push(format!("failed to remove the namespaces: {err}")),
    }
    let journal = pod.dir.join(crate::supervisor::volumes::MOUNT_POINTS);
    if let Ok(text) = std::fs::read_to_string(&journal) {
        let created: Vec<PathBuf> = text.lines().map(PathBuf::from).collect();
        let left = crate::supervisor::volumes::remove_mount_points(created.clone());
        for path in created.iter().filter(|p| !left.contains(p)) {
            removed.push(format!("removed mount point {}", path.display()));
        }
    }
    // Its address on the pod network, now that its namespace (and veth pair) is gone.
    let dir = pod.dir.clone();
    removed.extend(crate::supervisor::network::release_gone(move |owner| {
        owner == dir
    }));
    // Its devices, for pods waiting for them.
    removed.extend(crate::supervisor::devices::release_gone(|owner| {
        owner == pod.dir
    }));
    match std::fs::remove_dir_all(&pod.dir) {
        Ok(()) => removed.push(format!("removed {}", pod.dir.display())),
        // Its supervisor, still ending, removed it meanwhile.
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => removed.push(format!("failed to remove {}: {err}", pod.dir.display())),
    }
    removed
}

/// Live processes in network namespace `net`, with their command names.
fn processes_in(net: &netns::Namespace) -> Vec<(u32, String)> {
    let inode = net.inode();
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|&pid| {
            netns::Namespace::from_pid(netns::NsKind::Net, pid).is_ok_and(|ns| ns.inode() == inode)
        })
        .map(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            (pid, comm.trim().to_owned())
        })
        .collect()
}

/// Mount points at or below `dir` in this process's mount table, deepest first; not the
/// namespace pins in `dir/ns`, which `PodNamespaces::remove` handles (it checks ownership).
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let pins = dir.join("ns");
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = table
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir) && !p.starts_with(&pins))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}
