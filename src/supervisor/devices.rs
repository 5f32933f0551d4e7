//! Extended resources (`vendor.com/class: N` in a container's limits) served by the host's CDI
//! devices ([`crate::cdi`]): N distinct devices of CDI kind `vendor.com/class` for the
//! container, each held by one container of one pod on the host at a time, as a device plugin
//! allocates them.
//!
//! The allocations are leases as the pod network's IPAM keeps them (`netns::Ipam`): one file
//! per allocated device under [`LEASES_DIR`], `<vendor>+<class>=<name>`, holding its owner
//! (the pod's state directory, which tells `gc` whether the pod still has a supervisor),
//! written to a temporary name and renamed into place; an exclusive `flock(2)` on
//! `LEASES_DIR/lock` serialises every change between supervisors. Devices mean nothing after
//! a reboot, so the leases are on `/run`. A pod whose devices are not all free gets none and
//! waits, Pending as kube-scheduler leaves a pod no node fits ([`wait`]).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::cdi::{Offered, Registry};
use crate::spec::PodPlan;

/// Where every podkit root's pods lease their devices.
pub const LEASES_DIR: &str = "/run/podkit/devices";

/// The file whose lock serialises changes.
const LOCK_FILE: &str = "lock";

/// Temporary files start with this, so no listing takes them for leases.
const TMP_PREFIX: &str = ".tmp-";

/// The file in a pod's state directory naming the devices each container got (for
/// `describe`).
pub const ALLOCATED: &str = "devices.json";

/// How often a waiting pod looks again when nothing told it of a change.
const RECHECK: Duration = Duration::from_secs(3);

/// The devices of each container of a pod, by container name.
pub type Allocation = BTreeMap<String, Vec<Offered>>;

/// Why a pod's devices cannot all be had now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortfall {
    /// The kinds with too few free devices (or none at all), sorted.
    pub kinds: Vec<String>,
    /// Spec files not used, and why (a kind they held may be among `kinds`).
    pub spec_errors: Vec<String>,
}

impl Shortfall {
    /// What kube-scheduler writes on a pod no node has room for, on one node.
    pub fn message(&self) -> String {
        let reasons: Vec<String> = self
            .kinds
            .iter()
            .map(|k| format!("1 Insufficient {k}"))
            .collect();
        format!(
            "0/1 nodes are available: {}. preemption: 0/1 nodes are available: 1 No preemption \
             victims found for incoming pod.",
            reasons.join(", ")
        )
    }
}

/// The lease file name of a device: `vendor.com+class=name` (no part of a CDI name has `+`
/// or `=`).
fn lease_name(device: &Offered) -> String {
    format!("{}={}", device.kind.replace('/', "+"), device.name)
}

/// The device leases under `dir`, with their lock held until dropped.
struct Leases {
    dir: PathBuf,
    _lock: Flock<File>,
}

impl Leases {
    /// Takes the lock (blocking while another process holds it), making `dir` if missing.
    fn lock(dir: &Path) -> std::io::Result<Leases> {
        std::fs::create_dir_all(dir)?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_FILE))?;
        let lock = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| errno)?;
        Ok(Leases {
            dir: dir.to_owned(),
            _lock: lock,
        })
    }

    /// Every lease: file name -> owner. Temporary files a crash left are removed.
    fn read(&self) -> std::io::Result<BTreeMap<String, String>> {
        let mut leases = BTreeMap::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if name.starts_with(TMP_PREFIX) {
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            if name == LOCK_FILE || !name.contains('=') {
                continue;
            }
            match std::fs::read_to_string(entry.path()) {
                Ok(owner) => {
                    leases.insert(name, owner.trim().to_owned());
                }
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => return Err(err),
            }
        }
        Ok(leases)
    }

    fn write(&self, name: &str, owner: &str) -> std::io::Result<()> {
        let tmp = self.dir.join(format!("{TMP_PREFIX}{name}"));
        std::fs::write(&tmp, owner)
            .and_then(|()| std::fs::rename(&tmp, self.dir.join(name)))
            .inspect_err(|_| {
                let _ = std::fs::remove_file(&tmp);
            })
    }

    /// Removes the leases whose owner `gone` names; their names.
    fn release(&self, gone: impl Fn(&str) -> bool) -> std::io::Result<Vec<String>> {
        let mut released = Vec::new();
        for (name, owner) in self.read()? {
            if gone(&owner) {
                match std::fs::remove_file(self.dir.join(&name)) {
                    Ok(()) => released.push(name),
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                    Err(err) => return Err(err),
                }
            }
        }
        Ok(released)
    }
}

/// Each container's wanted `(kind, count)`, for the containers that want any.
fn wanted(plan: &PodPlan) -> Vec<(&str, &[(String, u32)])> {
    plan.init_containers
        .iter()
        .chain(&plan.containers)
        .filter(|m| m.devices.iter().any(|(_, n)| *n > 0))
        .map(|m| (m.name.as_str(), m.devices.as_slice()))
        .collect()
}

/// Whether any container of `plan` asks for devices or huge pages.
pub fn wants_devices(plan: &PodPlan) -> bool {
    !wanted(plan).is_empty() || !plan.huge_pages().is_empty()
}

/// The lease of a pod's huge pages of one size: `hugepages-2Mi=<bytes>@<owner, / as +>` (a
/// name per pod and size, the bytes in it so one listing sums what pods hold).
fn huge_lease_name(size: u64, bytes: u64, owner: &str) -> String {
    format!(
        "{}={bytes}@{}",
        crate::spec::resources::huge_page_name(size),
        owner.replace('/', "+")
    )
}

/// The bytes of huge pages of resource `name` (`hugepages-2Mi`) the leases hold.
fn huge_held(held: &BTreeMap<String, String>, name: &str) -> u64 {
    held.keys()
        .filter_map(|lease| lease.strip_prefix(name)?.strip_prefix('='))
        .filter_map(|rest| rest.split_once('@')?.0.parse::<u64>().ok())
        .sum()
}

/// Leases, under `dir`, to `owner` the devices each container of `plan` asks for, from those
/// `registry` offers that no one holds: all of them, or none and what is short.
pub fn allocate(
    dir: &Path,
    owner: &str,
    plan: &PodPlan,
    registry: &Registry,
    host_pages: &BTreeMap<u64, u64>,
) -> std::io::Result<Result<Allocation, Shortfall>> {
    let leases = Leases::lock(dir)?;
    let held = leases.read()?;
    let mut taken: Vec<String> = Vec::new();
    let mut short = Vec::new();
    // Huge pages as kube-scheduler fits them: the node's allocatable `hugepages-<size>` (the
    // pages set aside, `nr_hugepages` of the size, times the size; kubelet reserves none by
    // default) less what the pods on it ask.
    for (size, bytes) in plan.huge_pages() {
        let name = crate::spec::resources::huge_page_name(size);
        let allocatable = host_pages
            .get(&size)
            .copied()
            .unwrap_or(0)
            .saturating_mul(size);
        if huge_held(&held, &name).saturating_add(bytes) > allocatable {
            short.push(name);
        } else {
            taken.push(huge_lease_name(size, bytes, owner));
        }
    }
    let mut allocation = Allocation::new();
    for (container, wants) in wanted(plan) {
        for (kind, count) in wants {
            let free: Vec<&Offered> = registry
                .units(kind)
                .into_iter()
                .filter(|d| {
                    let name = lease_name(d);
                    !held.contains_key(&name) && !taken.contains(&name)
                })
                .take(*count as usize)
                .collect();
            if free.len() < *count as usize {
                if !short.contains(kind) {
                    short.push(kind.clone());
                }
                continue;
            }
            for device in free {
                taken.push(lease_name(device));
                allocation
                    .entry(container.to_owned())
                    .or_default()
                    .push(device.clone());
            }
        }
    }
    if !short.is_empty() {
        short.sort();
        return Ok(Err(Shortfall {
            kinds: short,
            spec_errors: registry.errors.iter().map(|e| e.to_string()).collect(),
        }));
    }
    for (i, name) in taken.iter().enumerate() {
        if let Err(err) = leases.write(name, owner) {
            // All or nothing: what was written goes back.
            for name in &taken[..i] {
                let _ = std::fs::remove_file(dir.join(name));
            }
            return Err(err);
        }
    }
    Ok(Ok(allocation))
}

/// Gives back, under `dir`, every device leased to `owner`; their lease names.
pub fn release(dir: &Path, owner: &str) -> std::io::Result<Vec<String>> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    Leases::lock(dir)?.release(|o| o == owner)
}

/// Gives back the devices (under [`LEASES_DIR`]) of pods that `gone` names, by their state
/// directories: for `delete` and `gc` of pods whose supervisor died. One line each.
pub fn release_gone(gone: impl Fn(&Path) -> bool) -> Vec<String> {
    let dir = Path::new(LEASES_DIR);
    if !dir.exists() {
        return Vec::new();
    }
    match Leases::lock(dir).and_then(|l| l.release(|owner| gone(Path::new(owner)))) {
        Ok(names) => names
            .into_iter()
            .map(|n| match n.split_once('@') {
                Some((huge, _)) if n.starts_with("hugepages-") => {
                    let (name, bytes) = huge.split_once('=').unwrap_or((huge, "?"));
                    format!("released {bytes} bytes of {name}")
                }
                _ => format!("released device {}", n.replacen('+', "/", 1)),
            })
            .collect(),
        Err(err) => vec![format!(
            "failed to release devices under {LEASES_DIR}: {err}"
        )],
    }
}

/// What `describe` shows: the qualified CDI names of each container's devices.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Allocated(pub BTreeMap<String, Vec<String>>);

/// Reads what [`wait`] wrote in a pod's state directory.
pub fn allocated(pod_dir: &Path) -> Allocated {
    std::fs::read(pod_dir.join(ALLOCATED))
        .ok()
        .and_then(|text| serde_json::from_slice(&text).ok())
        .unwrap_or_default()
}

/// Gets the pod's devices: at once when they are free; else the pod is Pending
/// (`PodScheduled` false, `Unschedulable`, kube-scheduler's message) with nothing of it made,
/// and looks again when a lease is given back or a spec directory changes (or every few
/// seconds). `None` when the pod is deleted meanwhile; the error when the leases cannot be
/// kept (not root: `/run/podkit` is root's).
pub async fn wait(
    plan: &PodPlan,
    dir: &Path,
    shutdown: &CancellationToken,
) -> std::io::Result<Option<Allocation>> {
    if !wants_devices(plan) {
        return Ok(Some(Allocation::new()));
    }
    let leases_dir = PathBuf::from(LEASES_DIR);
    let owner = dir.to_string_lossy().into_owned();
    let mut said = None;
    let spec_dirs = crate::cdi::spec_dirs();
    // Watched before the first look, so a change between a look and the wait is not missed.
    let watch = watch(&leases_dir, &spec_dirs);
    loop {
        let attempt = {
            let (leases_dir, owner, plan, spec_dirs) = (
                leases_dir.clone(),
                owner.clone(),
                plan.clone(),
                spec_dirs.clone(),
            );
            tokio::task::spawn_blocking(move || {
                let registry = Registry::load(&spec_dirs);
                let host_pages = crate::spec::resources::host_huge_pages();
                allocate(&leases_dir, &owner, &plan, &registry, &host_pages)
            })
            .await
        };
        match attempt {
            Ok(Ok(Ok(allocation))) => {
                let names = Allocated(
                    allocation
                        .iter()
                        .map(|(c, d)| (c.clone(), d.iter().map(Offered::qualified).collect()))
                        .collect(),
                );
                if let Ok(text) = serde_json::to_vec_pretty(&names) {
                    let _ = super::status::write_atomic(&dir.join(ALLOCATED), &text);
                }
                info!(devices = ?names.0, "leased the pod's devices");
                return Ok(Some(allocation));
            }
            Ok(Ok(Err(short))) => {
                if said.as_ref() != Some(&short) {
                    let message = short.message();
                    info!(%message, spec_errors = ?short.spec_errors, "the pod waits for devices");
                    let status = super::status::unschedulable(
                        plan.qos.as_str(),
                        &message,
                        &short.spec_errors,
                    );
                    // Events first, as a running pod's are: whoever sees the status finds them.
                    super::status::failed_scheduling(dir, &message);
                    if let Ok(text) = serde_json::to_vec_pretty(&status)
                        && super::status::write_atomic(&dir.join("status.json"), &text).is_ok()
                    {
                        super::status::notify();
                    }
                    said = Some(short);
                }
            }
            Ok(Err(err)) => return Err(err),
            Err(err) => return Err(std::io::Error::other(err)),
        }
        let changed = async {
            match &watch {
                Some(watch) => super::next_events(watch).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return Ok(None),
            () = changed => {}
            () = tokio::time::sleep(RECHECK) => {}
        }
    }
}

/// Makes `container` what its devices' edits ask (the CDI library's `ContainerEdits.Apply`, as
/// containerd and podman apply it): env appended; each device node a `linux.devices` entry
/// (type and numbers read from its host path when the spec does not give them) allowed by the
/// device cgroup with its permissions; mounts appended, each replacing one at its path; hooks
/// added at their stage; non-zero additional gids added to the process's.
pub fn apply(devices: &[Offered], container: &mut oci::bundle::Container) -> Result<(), String> {
    use oci_spec::runtime::{
        HookBuilder, Hooks, LinuxDeviceBuilder, LinuxDeviceCgroupBuilder, LinuxDeviceType,
        MountBuilder,
    };
    // As the library's `InjectDevices` gathers them: a spec's edits once, before its first
    // device's.
    let mut edits = crate::cdi::ContainerEdits::default();
    let mut specs: Vec<&Path> = Vec::new();
    for device in devices {
        if !specs.contains(&device.spec.as_path()) {
            specs.push(&device.spec);
            edits.append(&device.spec_edits);
        }
        edits.append(&device.edits);
    }
    let err = |e: oci_spec::OciSpecError| e.to_string();
    for pair in &edits.env {
        // Checked when the spec was read: `NAME=value`.
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        container.env.push((name.to_owned(), value.to_owned()));
    }
    for node in &edits.device_nodes {
        let node = filled(node)?;
        let typ = match node.r#type.as_str() {
            "b" => LinuxDeviceType::B,
            "u" => LinuxDeviceType::U,
            "p" => LinuxDeviceType::P,
            _ => LinuxDeviceType::C,
        };
        let mut device = LinuxDeviceBuilder::default()
            .path(&node.path)
            .typ(typ)
            .major(node.major)
            .minor(node.minor)
            .build()
            .map_err(err)?;
        device.set_file_mode(node.file_mode);
        device.set_uid(node.uid);
        device.set_gid(node.gid);
        container
            .devices
            .retain(|d| d.path().as_path() != Path::new(&node.path));
        container.devices.push(device);
        if matches!(node.r#type.as_str(), "b" | "c") {
            let access = match node.permissions.as_str() {
                "" => "rwm",
                "none" => "",
                other => other,
            };
            container.device_rules.push(
                LinuxDeviceCgroupBuilder::default()
                    .allow(true)
                    .typ(typ)
                    .major(node.major)
                    .minor(node.minor)
                    .access(access)
                    .build()
                    .map_err(err)?,
            );
        }
    }
    for m in &edits.mounts {
        let mut mount = MountBuilder::default()
            .destination(&m.container_path)
            .source(&m.host_path)
            .options(m.options.clone())
            .build()
            .map_err(err)?;
        mount.set_typ((!m.r#type.is_empty()).then(|| m.r#type.clone()));
        container
            .extra_mounts
            .retain(|x| x.destination() != mount.destination());
        container.extra_mounts.push(mount);
    }
    for h in &edits.hooks {
        let mut hook = HookBuilder::default().path(&h.path).build().map_err(err)?;
        hook.set_args((!h.args.is_empty()).then(|| h.args.clone()));
        hook.set_env((!h.env.is_empty()).then(|| h.env.clone()));
        hook.set_timeout(h.timeout);
        let hooks = container.hooks.get_or_insert_with(Hooks::default);
        #[allow(deprecated)] // prestart: what a spec names is what the runtime gets
        let stage = match h.hook_name.as_str() {
            "prestart" => hooks.prestart_mut(),
            "createRuntime" => hooks.create_runtime_mut(),
            "createContainer" => hooks.create_container_mut(),
            "startContainer" => hooks.start_container_mut(),
            "poststart" => hooks.poststart_mut(),
            "poststop" => hooks.poststop_mut(),
            other => return Err(format!("unknown hook name {other:?}")),
        };
        stage.get_or_insert_with(Vec::new).push(hook);
    }
    container
        .additional_gids
        .extend(edits.additional_gids.iter().copied().filter(|g| *g != 0));
    Ok(())
}

/// A device node with what its spec leaves out read from its host path (the CDI library's
/// `fillMissingInfo`): a node the spec gives fully (a type and a major, or a fifo) may have
/// no host node.
fn filled(node: &crate::cdi::DeviceNode) -> Result<crate::cdi::DeviceNode, String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut node = node.clone();
    let minimal = !node.r#type.is_empty() && (node.major != 0 || node.r#type == "p");
    if node.host_path.is_empty() {
        node.host_path.clone_from(&node.path);
    }
    let meta = match std::fs::symlink_metadata(&node.host_path) {
        Ok(meta) => meta,
        Err(_) if minimal => return Ok(node),
        Err(err) => {
            return Err(format!(
                "failed to stat CDI host device {:?}: {err}",
                node.host_path
            ));
        }
    };
    let file_type = meta.file_type();
    let host_type = if file_type.is_block_device() {
        "b"
    } else if file_type.is_char_device() {
        "c"
    } else if file_type.is_fifo() {
        "p"
    } else if minimal {
        return Ok(node);
    } else {
        return Err(format!(
            "failed to stat CDI host device {:?}: not a device node",
            node.host_path
        ));
    };
    if node.file_mode.is_none() {
        node.file_mode = Some(meta.mode() & 0o7777);
    }
    if minimal {
        return Ok(node);
    }
    if node.r#type.is_empty() {
        node.r#type = host_type.to_owned();
    }
    if node.r#type != host_type {
        return Err(format!(
            "CDI device ({:?}, {:?}), host type mismatch ({}, {host_type})",
            node.path, node.host_path, node.r#type
        ));
    }
    if node.r#type != "p" && node.major == 0 {
        let rdev = meta.rdev();
        node.major = nix::sys::stat::major(rdev) as i64;
        node.minor = nix::sys::stat::minor(rdev) as i64;
    }
    Ok(node)
}

/// Tells of a lease given back or a spec file changed (the directories that exist now; one
/// made later is seen by the periodic look).
fn watch(
    leases: &Path,
    spec_dirs: &[PathBuf],
) -> Option<tokio::io::unix::AsyncFd<super::ObjectsWatch>> {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    let _ = std::fs::create_dir_all(leases);
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).ok()?;
    inotify.add_watch(leases, AddWatchFlags::IN_DELETE).ok()?;
    for dir in spec_dirs {
        let _ = inotify.add_watch(
            dir.as_path(),
            AddWatchFlags::IN_CLOSE_WRITE
                | AddWatchFlags::IN_MOVED_TO
                | AddWatchFlags::IN_MOVED_FROM
                | AddWatchFlags::IN_DELETE,
        );
    }
    #[allow(deprecated)] // see objects_watch
    tokio::io::unix::AsyncFd::new(super::ObjectsWatch(inotify)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_become_devices_rules_mounts_hooks_and_groups() {
        let specs = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            specs.path().join("x.yaml"),
            "cdiVersion: 0.7.0
kind: example.com/dev
devices:
- name: a
  containerEdits:
    env: [A=1, SHARED=a]
    deviceNodes:
    - {path: /dev/ex0, hostPath: /dev/null}
    - {path: /dev/ex1, hostPath: /dev/zero, permissions: r, uid: 7}
    - {path: /dev/ex2, type: c, major: 240, minor: 1, permissions: none}
    mounts: [{hostPath: /etc/hostname, containerPath: /etc/ex, options: [ro, bind]}]
    hooks: [{hookName: createContainer, path: /bin/true, args: [true, x], timeout: 3}]
    additionalGids: [0, 44]
containerEdits:
  env: [SHARED=spec]
  mounts: [{hostPath: tmpfs, containerPath: /data, type: tmpfs, options: [size=1m]}]
",
        )
        .expect("spec");
        let registry = Registry::load(&[specs.path().to_owned()]);
        assert!(registry.errors.is_empty(), "{:?}", registry.errors);
        let mut container = oci::bundle::Container {
            env: vec![("SHARED".into(), "manifest".into())],
            ..Default::default()
        };
        apply(
            &[registry.units("example.com/dev")[0].clone()],
            &mut container,
        )
        .expect("apply");
        assert_eq!(
            container.env,
            [
                ("SHARED", "manifest"),
                ("SHARED", "spec"),
                ("A", "1"),
                ("SHARED", "a")
            ]
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
        );
        let devices = serde_json::to_value(&container.devices).expect("json");
        assert_eq!(devices[0]["path"], "/dev/ex0");
        assert_eq!(devices[0]["type"], "c");
        assert_eq!(
            (devices[0]["major"].as_i64(), devices[0]["minor"].as_i64()),
            (Some(1), Some(3))
        );
        assert_eq!(devices[0]["fileMode"], 0o666);
        assert_eq!(
            (devices[1]["minor"].as_i64(), devices[1]["uid"].as_u64()),
            (Some(5), Some(7))
        );
        // Given fully: no host node needed.
        assert_eq!(
            (devices[2]["major"].as_i64(), devices[2]["minor"].as_i64()),
            (Some(240), Some(1))
        );
        let rules = serde_json::to_value(&container.device_rules).expect("json");
        assert_eq!(
            rules,
            serde_json::json!([
                {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
                {"allow": true, "type": "c", "major": 1, "minor": 5, "access": "r"},
                {"allow": true, "type": "c", "major": 240, "minor": 1, "access": ""},
            ])
        );
        let mounts = serde_json::to_value(&container.extra_mounts).expect("json");
        assert_eq!(
            mounts,
            serde_json::json!([
                {"destination": "/data", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]},
                {"destination": "/etc/ex", "source": "/etc/hostname", "options": ["ro", "bind"]},
            ])
        );
        let hooks = serde_json::to_value(&container.hooks).expect("json");
        assert_eq!(
            hooks,
            serde_json::json!({"createContainer": [{"path": "/bin/true", "args": ["true", "x"], "timeout": 3}]})
        );
        assert_eq!(container.additional_gids, [44]);

        // In config.json, as runc reads it; a node without an owner is the process's.
        let rootfs = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(rootfs.path().join("etc")).expect("etc");
        std::fs::write(rootfs.path().join("etc/passwd"), "root:x:0:0::/:/bin/sh\n")
            .expect("passwd");
        std::fs::write(rootfs.path().join("etc/group"), "root:x:0:\n").expect("group");
        container.rootfs = rootfs.path().to_owned();
        container.command = vec!["/bin/sh".into()];
        container.user.uid = Some(1000);
        container.user.gid = Some(1000);
        let spec =
            serde_json::to_value(oci::bundle::spec(&container, None).expect("spec")).expect("json");
        assert_eq!(spec["linux"]["devices"][1]["path"], "/dev/ex1");
        assert_eq!(spec["linux"]["devices"][0]["uid"], 1000);
        assert_eq!(spec["linux"]["devices"][0]["gid"], 1000);
        assert_eq!(spec["linux"]["devices"][1]["uid"], 7);
        assert_eq!(spec["linux"]["resources"]["devices"][0]["allow"], false);
        assert_eq!(spec["linux"]["resources"]["devices"][1]["minor"], 3);
        assert_eq!(spec["hooks"]["createContainer"][0]["path"], "/bin/true");
        assert_eq!(
            spec["process"]["user"]["additionalGids"],
            // After the user's own (containerd lists the primary group too).
            serde_json::json!([1000, 44])
        );
        let last = spec["mounts"].as_array().expect("mounts").last().cloned();
        assert_eq!(last.expect("a mount")["destination"], "/etc/ex");

        // A host node that is missing, or no device, is refused when not given fully.
        for path in ["/nonexistent/dev", "/etc/hostname"] {
            let mut offered = registry.units("example.com/dev")[0].clone();
            offered.spec_edits = crate::cdi::ContainerEdits::default();
            offered.edits = crate::cdi::ContainerEdits {
                device_nodes: vec![crate::cdi::DeviceNode {
                    path: "/dev/x".into(),
                    host_path: path.into(),
                    ..Default::default()
                }],
                ..Default::default()
            };
            let err =
                apply(&[offered], &mut oci::bundle::Container::default()).expect_err("refused");
            assert!(err.contains("failed to stat CDI host device"), "{err}");
        }
    }

    fn registry(dir: &Path, kind: &str, names: &[&str]) -> Registry {
        let devices: Vec<String> = names
            .iter()
            .map(|n| format!("- {{name: {n}, containerEdits: {{env: [DEV={n}]}}}}"))
            .collect();
        std::fs::write(
            dir.join("spec.yaml"),
            format!(
                "cdiVersion: 0.6.0\nkind: {kind}\ndevices:\n{}\n",
                devices.join("\n")
            ),
        )
        .expect("spec");
        Registry::load(&[dir.to_owned()])
    }

    fn plan(wants: &[(&str, &str, u32)]) -> PodPlan {
        let mut containers = String::new();
        for (name, kind, n) in wants {
            containers.push_str(&format!(
                "  - name: {name}\n    image: busybox\n    resources: {{limits: {{{kind}: {n}}}}}\n"
            ));
        }
        let text = format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n  containers:\n{containers}"
        );
        crate::spec::parse("pod.yaml", &text)
            .expect("valid")
            .remove(0)
    }

    #[test]
    fn devices_are_exclusive_until_released() {
        let specs = tempfile::tempdir().expect("tempdir");
        let leases = tempfile::tempdir().expect("tempdir");
        let registry = registry(specs.path(), "example.com/dev", &["a", "b", "all"]);
        let one = plan(&[("c", "example.com/dev", 1)]);
        let two = plan(&[("c", "example.com/dev", 1), ("d", "example.com/dev", 1)]);
        let none = BTreeMap::new();

        let first = allocate(leases.path(), "/pods/one", &one, &registry, &none)
            .expect("io")
            .expect("free");
        assert_eq!(first["c"][0].qualified(), "example.com/dev=a");
        assert_eq!(first["c"][0].edits.env, ["DEV=a"]);
        // `all` is no unit: one device is left, the pod of two gets none.
        let short = allocate(leases.path(), "/pods/two", &two, &registry, &none)
            .expect("io")
            .expect_err("short");
        assert_eq!(short.kinds, ["example.com/dev"]);
        assert_eq!(
            short.message(),
            "0/1 nodes are available: 1 Insufficient example.com/dev. preemption: 0/1 nodes \
             are available: 1 No preemption victims found for incoming pod."
        );
        let held: Vec<String> = Leases::lock(leases.path())
            .and_then(|l| l.read())
            .expect("read")
            .into_keys()
            .collect();
        assert_eq!(held, ["example.com+dev=a"]);

        assert_eq!(
            release(leases.path(), "/pods/one").expect("release"),
            ["example.com+dev=a"]
        );
        let second = allocate(leases.path(), "/pods/two", &two, &registry, &none)
            .expect("io")
            .expect("free now");
        assert_ne!(second["c"][0].name, second["d"][0].name);
        let missing = plan(&[("c", "example.com/none", 1)]);
        let short = allocate(leases.path(), "/pods/three", &missing, &registry, &none)
            .expect("io")
            .expect_err("no such kind");
        assert_eq!(short.kinds, ["example.com/none"]);
        assert!(
            release(leases.path(), "/pods/three")
                .expect("release")
                .is_empty()
        );
        assert_eq!(
            release(leases.path(), "/pods/two").expect("release").len(),
            2
        );
    }

    #[test]
    fn huge_pages_fit_what_is_set_aside_less_what_pods_hold() {
        let leases = tempfile::tempdir().expect("tempdir");
        let specs = tempfile::tempdir().expect("tempdir");
        let registry = registry(specs.path(), "example.com/dev", &["a"]);
        let pod = |mib: u32| {
            let text = format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n  containers:\n  - \
                 name: c\n    image: busybox\n    resources: {{limits: {{hugepages-2Mi: {mib}Mi, \
                 memory: 64Mi}}}}\n"
            );
            crate::spec::parse("pod.yaml", &text)
                .expect("valid")
                .remove(0)
        };
        // Three 2 MiB pages set aside.
        let host = BTreeMap::from([(2u64 << 20, 3u64), (1u64 << 30, 0)]);
        allocate(leases.path(), "/pods/one", &pod(4), &registry, &host)
            .expect("io")
            .expect("fits");
        let short = allocate(leases.path(), "/pods/two", &pod(4), &registry, &host)
            .expect("io")
            .expect_err("one page left");
        assert_eq!(
            short.message(),
            "0/1 nodes are available: 1 Insufficient hugepages-2Mi. preemption: 0/1 nodes \
             are available: 1 No preemption victims found for incoming pod."
        );
        allocate(leases.path(), "/pods/three", &pod(2), &registry, &host)
            .expect("io")
            .expect("the last page");
        assert_eq!(
            release(leases.path(), "/pods/one").expect("release"),
            ["hugepages-2Mi=4194304@+pods+one"]
        );
        allocate(leases.path(), "/pods/two", &pod(4), &registry, &host)
            .expect("io")
            .expect("fits once the first is gone");
    }
}
