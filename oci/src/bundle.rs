//! The OCI runtime bundle of one container: `config.json` built from what kubelet asks for (a
//! [`Container`], already mapped from the pod spec) and the image's config, as containerd's CRI
//! plugin builds it (`pkg/cri/opts/spec_linux.go`, `internal/cri/server/container_create_linux.go`).
//!
//! What is merged and how:
//! - the process: `command`/`args` against the image's `Entrypoint`/`Cmd` (the four cases of
//!   Kubernetes' "Define a command and arguments"); the environment `HOSTNAME`, then the image's,
//!   then the container's (a later name replaces an earlier one in place); the working directory
//!   the container's, else the image's, else `/`;
//! - the user: `runAsUser`/`runAsGroup`, else the image's `User` (`name`, `uid`, `name:group`,
//!   `uid:gid`) resolved in the image's own `/etc/passwd` and `/etc/group` (read inside the root
//!   filesystem: a symlink there cannot reach the host's), plus the groups that list the user and
//!   `supplementalGroups`; `runAsNonRoot` verified against the result as kubelet verifies it;
//! - the defaults of containerd for Kubernetes: Docker's 14 capabilities, kubelet's masked and
//!   read-only paths, its own mount namespace, `/proc`, `/dev`, `/dev/pts`, `/dev/mqueue`, `/sys`
//!   and the cgroup filesystem read-only, no seccomp unless asked, `no_new_privs` only for
//!   `allowPrivilegeEscalation: false`; the runtime's rlimits are left alone (inherited from the
//!   supervisor, as containerd's CRI plugin leaves them).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use oci_spec::image::Config as ImageConfig;
use oci_spec::runtime::{
    Capability, Hooks, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxDevice, LinuxDeviceCgroup,
    LinuxDeviceCgroupBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxResources,
    LinuxSeccomp, Mount, MountBuilder, ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

/// What one container asks of its runtime, as kubelet gives it to a CRI runtime (the pod spec
/// already resolved: env values expanded, volumes mounted on the host).
#[derive(Debug, Clone, Default)]
pub struct Container {
    /// The container's name, for errors.
    pub name: String,
    /// The root filesystem: the mounted overlay of the image's layers.
    pub rootfs: PathBuf,
    /// `command` (replaces the image's Entrypoint).
    pub command: Vec<String>,
    /// `args` (replace the image's Cmd).
    pub args: Vec<String>,
    /// `env`, in order, `$(VAR)` references already expanded.
    pub env: Vec<(String, String)>,
    /// `workingDir`.
    pub working_dir: Option<String>,
    /// The pod's hostname: the `HOSTNAME` variable.
    pub hostname: String,
    /// Who the process runs as.
    pub user: UserRequest,
    /// The namespaces joined; the mount namespace is always the container's own.
    pub namespaces: Namespaces,
    /// Bind mounts, in order: the pod's `/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf`,
    /// `/dev/shm`, then the volumes.
    pub mounts: Vec<BindMount>,
    /// securityContext.
    pub security: Security,
    /// The pod's namespaced sysctls.
    pub sysctls: BTreeMap<String, String>,
    /// The container's cgroup (absolute, as runc's `linux.cgroupsPath`).
    pub cgroups_path: Option<PathBuf>,
    /// CPU, memory and pids limits.
    pub resources: Option<LinuxResources>,
    /// `process.oomScoreAdj`: kubelet's score for the pod's QoS class.
    pub oom_score_adj: Option<i32>,
    /// Whether the container gets a cgroup namespace of its own (containerd gives one on
    /// cgroup v2 hosts only).
    pub cgroup_namespace: bool,
    /// `stdin`+`tty`: a terminal.
    pub terminal: bool,
    /// Device nodes made in the container (`linux.devices`; a CDI device's `deviceNodes`). One
    /// without a uid or gid gets the process's when that is not root, as the CDI library
    /// gives it.
    pub devices: Vec<LinuxDevice>,
    /// Device cgroup rules after the default deny-all (the CDI devices' allow rules).
    pub device_rules: Vec<LinuxDeviceCgroup>,
    /// Mounts of their own type and options (a CDI device's `mounts`), after [`Self::mounts`];
    /// each replaces an earlier mount at its destination.
    pub extra_mounts: Vec<Mount>,
    /// OCI hooks the runtime runs (a CDI device's `hooks`).
    pub hooks: Option<Hooks>,
    /// Groups added to the process's (a CDI device's `additionalGids`).
    pub additional_gids: Vec<u32>,
}

/// `runAsUser`, `runAsGroup`, `supplementalGroups`, `runAsNonRoot` (container over pod).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserRequest {
    /// `runAsUser`.
    pub uid: Option<u32>,
    /// `runAsGroup`.
    pub gid: Option<u32>,
    /// `supplementalGroups` (and `fsGroup`, which kubelet adds to them).
    pub supplemental_groups: Vec<u32>,
    /// `supplementalGroupsPolicy: Strict`: the user's groups in the image's /etc/group are not
    /// added.
    pub strict_groups: bool,
    /// `runAsNonRoot`.
    pub run_as_non_root: bool,
}

/// The pod's namespaces, by their pin paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Namespaces {
    /// Network.
    pub net: Option<PathBuf>,
    /// IPC.
    pub ipc: Option<PathBuf>,
    /// UTS.
    pub uts: Option<PathBuf>,
    /// PID, with `shareProcessNamespace`; else a new one.
    pub pid: Option<PathBuf>,
    /// `hostPID`: no PID namespace of its own, the host's.
    pub host_pid: bool,
}

/// A host path bind-mounted into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    /// On the host.
    pub source: PathBuf,
    /// In the container (absolute).
    pub destination: String,
    /// `readOnly`.
    pub read_only: bool,
}

/// securityContext, as the runtime applies it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Security {
    /// `privileged`: every capability, no masked or read-only paths, the host's devices,
    /// `/sys` writable.
    pub privileged: bool,
    /// `capabilities.add`, with or without `CAP_`; `ALL` for every one.
    pub add_capabilities: Vec<String>,
    /// `capabilities.drop`; `ALL` for every one (adds are applied after drops).
    pub drop_capabilities: Vec<String>,
    /// `readOnlyRootFilesystem`.
    pub read_only_root: bool,
    /// `allowPrivilegeEscalation: false`.
    pub no_new_privileges: bool,
    /// `procMount: Unmasked`: `/proc` without masked or read-only paths.
    pub unmasked_proc: bool,
    /// The seccomp filter (`seccompProfile`); none when unconfined.
    pub seccomp: Option<LinuxSeccomp>,
}

/// Why a bundle could not be made.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// Neither the container nor the image says what to run.
    #[error("container {container}: no command specified: the image has no Entrypoint or Cmd")]
    NoCommand {
        /// The container.
        container: String,
    },
    /// The image's `User` names a user or group its `/etc/passwd` or `/etc/group` lacks.
    #[error("container {container}: unable to find {what} {name}: no matching entries in {file}")]
    UnknownUser {
        /// The container.
        container: String,
        /// `user` or `group`.
        what: &'static str,
        /// The name.
        name: String,
        /// `passwd file` or `group file`.
        file: &'static str,
    },
    /// `runAsNonRoot` with a process that would run as root, worded as kubelet's.
    #[error("container {container}: {reason}")]
    RunsAsRoot {
        /// The container.
        container: String,
        /// Kubelet's words.
        reason: String,
    },
    /// A capability name that is none.
    #[error("container {container}: unknown capability {name:?} in securityContext.capabilities")]
    UnknownCapability {
        /// The container.
        container: String,
        /// The name as given.
        name: String,
    },
    /// Reading the image's user database.
    #[error("container {container}: reading {path} in the image: {source}")]
    Read {
        /// The container.
        container: String,
        /// The file in the image.
        path: &'static str,
        /// Why.
        source: io::Error,
    },
    /// oci-spec refused a value.
    #[error("container {container}: {source}")]
    Spec {
        /// The container.
        container: String,
        /// Why.
        source: oci_spec::OciSpecError,
    },
    /// Writing `config.json`.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// Docker's default capabilities, which containerd gives Kubernetes containers.
pub const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Kubelet's masked paths (`k8s.io/kubernetes/pkg/securitycontext`, `defaultMaskedPaths`).
pub const MASKED_PATHS: [&str; 11] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Kubelet's read-only paths (`defaultReadonlyPaths`).
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The process's user once resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    /// uid.
    pub uid: u32,
    /// gid.
    pub gid: u32,
    /// Supplementary groups: the image's groups that list the user, then `supplementalGroups`.
    pub additional_gids: Vec<u32>,
}

/// The runtime spec of `container` running from an image with `image` config.
pub fn spec(container: &Container, image: Option<&ImageConfig>) -> Result<Spec, BundleError> {
    let name = &container.name;
    let spec_err = |source| BundleError::Spec {
        container: name.clone(),
        source,
    };
    let args = process_args(container, image)?;
    let user = resolve_user(container, image)?;
    verify_non_root(container, image, &user)?;
    let capabilities = capabilities(container)?;
    let capabilities: std::collections::HashSet<Capability> = capabilities.into_iter().collect();
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(capabilities.clone())
        .effective(capabilities.clone())
        .permitted(capabilities)
        .inheritable(std::collections::HashSet::new())
        .ambient(std::collections::HashSet::new())
        .build()
        .map_err(spec_err)?;
    let cwd = container
        .working_dir
        .clone()
        .filter(|d| !d.is_empty())
        .or_else(|| image.and_then(|i| i.working_dir().clone()))
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "/".to_owned());
    let mut additional_gids = user.additional_gids.clone();
    for gid in &container.additional_gids {
        if *gid != 0 && !additional_gids.contains(gid) {
            additional_gids.push(*gid);
        }
    }
    // The CDI library's rule: a device node without an owner is the process's, unless root.
    let devices: Vec<LinuxDevice> = container
        .devices
        .iter()
        .cloned()
        .map(|mut device| {
            if device.uid().is_none() && user.uid > 0 {
                device.set_uid(Some(user.uid));
            }
            if device.gid().is_none() && user.gid > 0 {
                device.set_gid(Some(user.gid));
            }
            device
        })
        .collect();
    let user = UserBuilder::default()
        .uid(user.uid)
        .gid(user.gid)
        .additional_gids(additional_gids)
        .build()
        .map_err(spec_err)?;
    let mut process = ProcessBuilder::default()
        .terminal(container.terminal)
        .args(args)
        .env(environment(container, image))
        .cwd(cwd)
        .user(user)
        .capabilities(capabilities)
        .no_new_privileges(container.security.no_new_privileges)
        .build()
        .map_err(spec_err)?;
    // No rlimits: the runtime then leaves the supervisor's (oci-spec's default sets 1024 files).
    process.set_rlimits(None);
    process.set_oom_score_adj(container.oom_score_adj);

    let security = &container.security;
    let mut namespaces = Vec::new();
    let mut namespace = |typ, path: Option<&PathBuf>| -> Result<(), BundleError> {
        let mut builder = LinuxNamespaceBuilder::default().typ(typ);
        if let Some(path) = path {
            builder = builder.path(path.clone());
        }
        namespaces.push(builder.build().map_err(spec_err)?);
        Ok(())
    };
    namespace(LinuxNamespaceType::Mount, None)?;
    // None listed: the runtime leaves the process in its own (the host's) PID namespace.
    if !container.namespaces.host_pid {
        namespace(LinuxNamespaceType::Pid, container.namespaces.pid.as_ref())?;
    }
    for (typ, path) in [
        (LinuxNamespaceType::Network, &container.namespaces.net),
        (LinuxNamespaceType::Ipc, &container.namespaces.ipc),
        (LinuxNamespaceType::Uts, &container.namespaces.uts),
    ] {
        namespace(typ, path.as_ref())?;
    }
    if container.cgroup_namespace {
        namespace(LinuxNamespaceType::Cgroup, None)?;
    }
    let masked = !(security.privileged || security.unmasked_proc);
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .masked_paths(if masked {
            MASKED_PATHS.map(String::from).to_vec()
        } else {
            Vec::new()
        })
        .readonly_paths(if masked {
            READONLY_PATHS.map(String::from).to_vec()
        } else {
            Vec::new()
        })
        .build()
        .map_err(spec_err)?;
    if !container.sysctls.is_empty() {
        linux.set_sysctl(Some(container.sysctls.clone().into_iter().collect()));
    }
    linux.set_cgroups_path(container.cgroups_path.clone());
    // Devices: none but the runtime's defaults (null, zero, full, random, urandom, tty, ptmx,
    // which runc and crun allow after this rule), every one when privileged.
    let mut resources = container.resources.clone().unwrap_or_default();
    let mut rules = vec![
        LinuxDeviceCgroupBuilder::default()
            .allow(security.privileged)
            .access("rwm")
            .build()
            .map_err(spec_err)?,
    ];
    rules.extend(container.device_rules.iter().cloned());
    resources.set_devices(Some(rules));
    linux.set_resources(Some(resources));
    if !devices.is_empty() {
        linux.set_devices(Some(devices));
    }
    if !security.privileged {
        linux.set_seccomp(security.seccomp.clone());
    }

    let root = RootBuilder::default()
        .path(container.rootfs.clone())
        .readonly(security.read_only_root)
        .build()
        .map_err(spec_err)?;
    let mut spec = SpecBuilder::default()
        .version("1.0.2")
        .root(root)
        .mounts(mounts(container).map_err(spec_err)?)
        .process(process)
        .linux(linux)
        .build()
        .map_err(spec_err)?;
    // The UTS namespace is the pod's: its hostname is set there once (runc refuses a hostname
    // without a UTS namespace of the container's own).
    spec.set_hostname(None);
    spec.set_annotations(None);
    spec.set_hooks(container.hooks.clone());
    Ok(spec)
}

/// Writes `spec` as `dir/config.json` (written aside and renamed: the runtime never reads a
/// half-written one).
pub fn write(dir: &Path, spec: &Spec) -> Result<PathBuf, BundleError> {
    let path = dir.join("config.json");
    let tmp = dir.join(".config.json.tmp");
    let write = || -> io::Result<()> {
        let json = serde_json::to_vec_pretty(spec)?;
        // Not synced: a bundle is read by the runtime right after and made anew for every run;
        // one a crash cut short is removed with the pod's containers (podkit gc). An fsync
        // here cost each container start 1-5 ms on this machine's disk.
        let mut file = File::create(&tmp)?;
        file.write_all(&json)?;
        std::fs::rename(&tmp, &path)
    };
    write().map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        BundleError::Write {
            path: path.clone(),
            source,
        }
    })?;
    Ok(path)
}

/// Kubernetes' rules (`Define a Command and Arguments for a Container`), as containerd's
/// `WithProcessArgs` applies them: `command` replaces Entrypoint and drops Cmd; `args` alone
/// replace Cmd.
fn process_args(
    container: &Container,
    image: Option<&ImageConfig>,
) -> Result<Vec<String>, BundleError> {
    let entrypoint = image
        .and_then(|i| i.entrypoint().clone())
        .unwrap_or_default();
    let cmd = image.and_then(|i| i.cmd().clone()).unwrap_or_default();
    let args = match (container.command.is_empty(), container.args.is_empty()) {
        (false, _) => [&container.command[..], &container.args[..]].concat(),
        (true, false) => [&entrypoint[..], &container.args[..]].concat(),
        (true, true) => [entrypoint, cmd].concat(),
    };
    if args.is_empty() {
        return Err(BundleError::NoCommand {
            container: container.name.clone(),
        });
    }
    Ok(args)
}

/// The default `PATH` (containerd's, for an image that sets none).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The default `PATH`, `HOSTNAME`, the image's variables, the container's: each name once, at
/// the place it first appeared, with the value given last (containerd's `WithEnv`).
fn environment(container: &Container, image: Option<&ImageConfig>) -> Vec<String> {
    let mut env: Vec<(String, String)> = vec![
        ("PATH".to_owned(), DEFAULT_PATH.to_owned()),
        ("HOSTNAME".to_owned(), container.hostname.clone()),
    ];
    let mut set = |name: &str, value: &str| match env.iter_mut().find(|(n, _)| n == name) {
        Some(slot) => slot.1 = value.to_owned(),
        None => env.push((name.to_owned(), value.to_owned())),
    };
    for pair in image.and_then(|i| i.env().clone()).unwrap_or_default() {
        let (name, value) = pair.split_once('=').unwrap_or((&pair, ""));
        set(name, value);
    }
    for (name, value) in &container.env {
        set(name, value);
    }
    env.into_iter().map(|(n, v)| format!("{n}={v}")).collect()
}

/// The capabilities of the process: Docker's defaults, minus drops, plus adds (`ALL` in drop
/// empties the set first; `ALL` in add gives every capability); every one when privileged.
/// The set a seccomp profile's capability conditions are decided by (see [`crate::seccomp`]).
pub fn capabilities(container: &Container) -> Result<Vec<Capability>, BundleError> {
    let security = &container.security;
    if security.privileged {
        return Ok(all_capabilities());
    }
    add_and_drop(
        DEFAULT_CAPABILITIES.to_vec(),
        &security.add_capabilities,
        &security.drop_capabilities,
    )
    .map_err(|name| BundleError::UnknownCapability {
        container: container.name.clone(),
        name,
    })
}

/// For a host process: the numbers of the capabilities to drop from its bounding set so that
/// it keeps the host root's full set less `drop` (`ALL`: every one), plus `add`. An unknown
/// name is the error.
pub fn bounding_drops(add: &[String], drop: &[String]) -> Result<Vec<u32>, String> {
    let all = all_capabilities();
    let kept = add_and_drop(all.clone(), add, drop)
        .map_err(|name| format!("unknown capability {name:?}"))?;
    Ok(all
        .iter()
        .enumerate()
        .filter(|(_, cap)| !kept.contains(cap))
        .map(|(number, _)| number as u32)
        .collect())
}

/// `base` less `drop` (`ALL` empties it first), plus `add` (`ALL` gives every capability), as
/// containerd applies a securityContext's capabilities. The error is an unknown name.
fn add_and_drop(
    mut caps: Vec<Capability>,
    add: &[String],
    drop: &[String],
) -> Result<Vec<Capability>, String> {
    let parse = |name: &String| parse_capability(name).map_err(|_| name.clone());
    for name in drop {
        match parse(name)? {
            None => caps.clear(),
            Some(cap) => caps.retain(|c| *c != cap),
        }
    }
    for name in add {
        match parse(name)? {
            None => caps = all_capabilities(),
            Some(cap) if !caps.contains(&cap) => caps.push(cap),
            Some(_) => {}
        }
    }
    Ok(caps)
}

/// A capability by name, any case, with or without `CAP_`; `None` for `ALL`.
fn parse_capability(name: &str) -> Result<Option<Capability>, String> {
    let upper = name.to_ascii_uppercase();
    if upper == "ALL" {
        return Ok(None);
    }
    upper
        .strip_prefix("CAP_")
        .unwrap_or(&upper)
        .parse::<Capability>()
        .map(Some)
        .map_err(|_| format!("unknown capability {name:?}"))
}

/// A capability's number (`<linux/capability.h>`); `None` for `ALL`.
pub fn capability_number(name: &str) -> Result<Option<u32>, String> {
    Ok(parse_capability(name)?
        .and_then(|cap| ALL_CAPABILITIES.iter().position(|c| *c == cap))
        .map(|n| n as u32))
}

/// Every capability this kernel knows (`/proc/sys/kernel/cap_last_cap`), as runc grants them
/// to a privileged container.
fn all_capabilities() -> Vec<Capability> {
    ALL_CAPABILITIES
        .iter()
        .take(last_capability() as usize + 1)
        .copied()
        .collect()
}

/// The highest capability number this kernel knows (`/proc/sys/kernel/cap_last_cap`).
pub fn last_capability() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// The capabilities by number (`<linux/capability.h>`).
const ALL_CAPABILITIES: [Capability; 41] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::DacReadSearch,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setpcap,
    Capability::LinuxImmutable,
    Capability::NetBindService,
    Capability::NetBroadcast,
    Capability::NetAdmin,
    Capability::NetRaw,
    Capability::IpcLock,
    Capability::IpcOwner,
    Capability::SysModule,
    Capability::SysRawio,
    Capability::SysChroot,
    Capability::SysPtrace,
    Capability::SysPacct,
    Capability::SysAdmin,
    Capability::SysBoot,
    Capability::SysNice,
    Capability::SysResource,
    Capability::SysTime,
    Capability::SysTtyConfig,
    Capability::Mknod,
    Capability::Lease,
    Capability::AuditWrite,
    Capability::AuditControl,
    Capability::Setfcap,
    Capability::MacOverride,
    Capability::MacAdmin,
    Capability::Syslog,
    Capability::WakeAlarm,
    Capability::BlockSuspend,
    Capability::AuditRead,
    Capability::Perfmon,
    Capability::Bpf,
    Capability::CheckpointRestore,
];

/// The container's mounts: the system ones as containerd's default spec has them (`/sys` and
/// the cgroup filesystem writable only when privileged; a privileged container gets the host's
/// `/dev`), then the caller's binds in order.
fn mounts(container: &Container) -> Result<Vec<Mount>, oci_spec::OciSpecError> {
    let privileged = container.security.privileged;
    let ro = if privileged { "rw" } else { "ro" };
    let mount = |destination: &str, typ: &str, source: &str, options: &[&str]| {
        MountBuilder::default()
            .destination(destination)
            .typ(typ)
            .source(source)
            .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
            .build()
    };
    let mut mounts = vec![mount(
        "/proc",
        "proc",
        "proc",
        &["nosuid", "noexec", "nodev"],
    )?];
    if privileged {
        mounts.push(mount("/dev", "bind", "/dev", &["rbind", "nosuid"])?);
    } else {
        mounts.push(mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?);
    }
    mounts.extend([
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount("/sys", "sysfs", "sysfs", &["nosuid", "noexec", "nodev", ro])?,
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", ro],
        )?,
    ]);
    for bind in &container.mounts {
        let mut options = vec!["rbind", "rprivate"];
        options.push(if bind.read_only { "ro" } else { "rw" });
        let source = bind.source.to_string_lossy();
        mounts.push(mount(&bind.destination, "bind", &source, &options)?);
    }
    for extra in &container.extra_mounts {
        mounts.retain(|m| m.destination() != extra.destination());
        mounts.push(extra.clone());
    }
    Ok(mounts)
}

/// The process's uid, gid and groups (containerd's `WithUser`, `WithUserID` and
/// `WithAdditionalGIDs`).
pub fn resolve_user(
    container: &Container,
    image: Option<&ImageConfig>,
) -> Result<ResolvedUser, BundleError> {
    let request = &container.user;
    let db = UserDb::new(container);
    let image_user = image
        .and_then(|i| i.user().clone())
        .unwrap_or_default()
        .trim()
        .to_owned();
    let (uid, mut gid, name) = match request.uid {
        Some(uid) => {
            let entry = db.passwd()?.into_iter().find(|e| e.uid == uid);
            (
                uid,
                entry.as_ref().map_or(0, |e| e.gid),
                entry.map(|e| e.name),
            )
        }
        None => {
            let (user, group) = match image_user.split_once(':') {
                Some((user, group)) => (user, Some(group)),
                None => (image_user.as_str(), None),
            };
            let (uid, gid, name) = if user.is_empty() {
                (0, 0, Some("root".to_owned()))
            } else if let Ok(uid) = user.parse::<u32>() {
                let entry = db.passwd()?.into_iter().find(|e| e.uid == uid);
                (
                    uid,
                    entry.as_ref().map_or(0, |e| e.gid),
                    entry.map(|e| e.name),
                )
            } else {
                let entry = db
                    .passwd()?
                    .into_iter()
                    .find(|e| e.name == user)
                    .ok_or_else(|| db.unknown("user", user, "passwd file"))?;
                (entry.uid, entry.gid, Some(entry.name))
            };
            let gid = match group.filter(|g| !g.is_empty()) {
                None => gid,
                Some(group) => match group.parse::<u32>() {
                    Ok(gid) => gid,
                    Err(_) => {
                        db.group()?
                            .into_iter()
                            .find(|g| g.name == group)
                            .ok_or_else(|| db.unknown("group", group, "group file"))?
                            .gid
                    }
                },
            };
            (uid, gid, name)
        }
    };
    if let Some(run_as_group) = request.gid {
        gid = run_as_group;
    }
    let mut additional_gids = vec![gid];
    if let Some(name) = name.as_ref().filter(|_| !request.strict_groups) {
        for group in db.group()? {
            if group.members.iter().any(|m| m == name) && !additional_gids.contains(&group.gid) {
                additional_gids.push(group.gid);
            }
        }
    }
    for g in &request.supplemental_groups {
        if !additional_gids.contains(g) {
            additional_gids.push(*g);
        }
    }
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
    })
}

/// Kubelet's `verifyRunAsNonRoot`: with `runAsNonRoot`, the uid must be known and not 0.
fn verify_non_root(
    container: &Container,
    image: Option<&ImageConfig>,
    user: &ResolvedUser,
) -> Result<(), BundleError> {
    if !container.user.run_as_non_root {
        return Ok(());
    }
    let fail = |reason: String| {
        Err(BundleError::RunsAsRoot {
            container: container.name.clone(),
            reason,
        })
    };
    if container.user.uid == Some(0) {
        return fail("container's runAsUser breaks non-root policy".to_owned());
    }
    if container.user.uid.is_some() {
        return Ok(());
    }
    let image_user = image.and_then(|i| i.user().clone()).unwrap_or_default();
    let user_part = image_user.split(':').next().unwrap_or("").trim();
    if !user_part.is_empty() && user_part.parse::<u32>().is_err() {
        return fail(format!(
            "container has runAsNonRoot and image has non-numeric user ({user_part}), cannot \
             verify user is non-root"
        ));
    }
    if user.uid == 0 {
        return fail("container has runAsNonRoot and image will run as root".to_owned());
    }
    Ok(())
}

/// `/etc/passwd` and `/etc/group` of the image, read inside its root filesystem.
struct UserDb<'a> {
    container: &'a Container,
}

/// One line of `/etc/passwd`.
#[derive(Debug)]
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
}

/// One line of `/etc/group`.
#[derive(Debug)]
struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// The largest user database read (a bigger file is a hostile image, not a real one).
const MAX_USER_DB: u64 = 4 << 20;

impl<'a> UserDb<'a> {
    fn new(container: &'a Container) -> Self {
        Self { container }
    }

    fn unknown(&self, what: &'static str, name: &str, file: &'static str) -> BundleError {
        BundleError::UnknownUser {
            container: self.container.name.clone(),
            what,
            name: name.to_owned(),
            file,
        }
    }

    /// The file's text, empty when the image has none. Opened with `RESOLVE_IN_ROOT`: a
    /// symlink in the image resolves inside the image.
    fn read(&self, path: &'static str) -> Result<String, BundleError> {
        let read = || -> io::Result<Option<String>> {
            let root = File::open(&self.container.rootfs)?;
            let how = OpenHow::new()
                .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY | OFlag::O_NONBLOCK)
                .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
            let fd = match openat2(root.as_fd(), path, how) {
                Ok(fd) => fd,
                Err(nix::errno::Errno::ENOENT) => return Ok(None),
                Err(err) => return Err(err.into()),
            };
            let file = File::from(fd);
            if !file.metadata()?.is_file() {
                return Err(io::Error::other("not a regular file"));
            }
            let mut text = String::new();
            file.take(MAX_USER_DB).read_to_string(&mut text)?;
            Ok(Some(text))
        };
        read()
            .map(Option::unwrap_or_default)
            .map_err(|source| BundleError::Read {
                container: self.container.name.clone(),
                path,
                source,
            })
    }

    fn passwd(&self) -> Result<Vec<PasswdEntry>, BundleError> {
        Ok(self
            .read("etc/passwd")?
            .lines()
            .filter_map(|line| {
                let mut fields = line.split(':');
                let name = fields.next()?.to_owned();
                let _password = fields.next()?;
                let uid = fields.next()?.parse().ok()?;
                let gid = fields.next()?.parse().ok()?;
                Some(PasswdEntry { name, uid, gid })
            })
            .collect())
    }

    fn group(&self) -> Result<Vec<GroupEntry>, BundleError> {
        Ok(self
            .read("etc/group")?
            .lines()
            .filter_map(|line| {
                let mut fields = line.split(':');
                let name = fields.next()?.to_owned();
                let _password = fields.next()?;
                let gid = fields.next()?.parse().ok()?;
                let members = fields
                    .next()
                    .unwrap_or("")
                    .split(',')
                    .filter(|m| !m.is_empty())
                    .map(str::to_owned)
                    .collect();
                Some(GroupEntry { name, gid, members })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::image::ConfigBuilder;

    fn image(entrypoint: &[&str], cmd: &[&str]) -> ImageConfig {
        let mut builder = ConfigBuilder::default();
        if !entrypoint.is_empty() {
            builder =
                builder.entrypoint(entrypoint.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        }
        if !cmd.is_empty() {
            builder = builder.cmd(cmd.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        }
        builder.build().expect("config")
    }

    fn strings(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    /// The four cases of "Define a Command and Arguments for a Container".
    #[test]
    fn command_and_args_against_entrypoint_and_cmd() {
        let img = image(&["/ep-1"], &["foo", "bar"]);
        let case = |command: &[&str], args: &[&str]| {
            let c = Container {
                command: strings(command),
                args: strings(args),
                ..Default::default()
            };
            process_args(&c, Some(&img)).expect("args")
        };
        assert_eq!(case(&[], &[]), ["/ep-1", "foo", "bar"]);
        assert_eq!(case(&["/ep-2"], &[]), ["/ep-2"]);
        assert_eq!(case(&[], &["zoo", "boo"]), ["/ep-1", "zoo", "boo"]);
        assert_eq!(case(&["/ep-2"], &["zoo", "boo"]), ["/ep-2", "zoo", "boo"]);
        let none = Container {
            name: "app".into(),
            ..Default::default()
        };
        let err = process_args(&none, Some(&image(&[], &[]))).expect_err("an error");
        assert!(err.to_string().contains("no command specified"), "{err}");
    }

    #[test]
    fn environment_hostname_then_image_then_container() {
        let img = ConfigBuilder::default()
            .env(strings(&[
                "PATH=/bin",
                "A=image",
                "HOSTNAME=image",
                "EMPTY",
            ]))
            .build()
            .expect("config");
        let c = Container {
            hostname: "web".into(),
            env: vec![("A".into(), "pod".into()), ("B".into(), "b".into())],
            ..Default::default()
        };
        assert_eq!(
            environment(&c, Some(&img)),
            ["PATH=/bin", "HOSTNAME=image", "A=pod", "EMPTY=", "B=b"]
        );
    }

    #[test]
    fn a_host_process_drops_from_the_full_set() {
        let names = |list: &[&str]| strings(list);
        assert_eq!(
            bounding_drops(&[], &names(&["NET_RAW", "chown"])),
            Ok(vec![0, 13])
        );
        let last = all_capabilities().len() as u32 - 1;
        let all_but_bind: Vec<u32> = (0..=last).filter(|n| *n != 10).collect();
        assert_eq!(
            bounding_drops(&names(&["CAP_NET_BIND_SERVICE"]), &names(&["ALL"])),
            Ok(all_but_bind)
        );
        assert_eq!(
            bounding_drops(&names(&["ALL"]), &names(&["ALL"])),
            Ok(vec![])
        );
        assert_eq!(
            bounding_drops(&[], &names(&["WARP_DRIVE"])),
            Err("unknown capability \"WARP_DRIVE\"".to_owned())
        );
        assert_eq!(capability_number("sys_admin"), Ok(Some(21)));
        assert_eq!(capability_number("all"), Ok(None));
    }

    #[test]
    fn capabilities_add_after_drop() {
        let caps = |add: &[&str], drop: &[&str]| {
            let c = Container {
                security: Security {
                    add_capabilities: strings(add),
                    drop_capabilities: strings(drop),
                    ..Default::default()
                },
                ..Default::default()
            };
            capabilities(&c)
        };
        assert_eq!(caps(&[], &[]).expect("default").len(), 14);
        assert_eq!(
            caps(&["NET_ADMIN"], &["ALL"]).expect("one"),
            [Capability::NetAdmin]
        );
        let some = caps(&["CAP_SYS_TIME"], &["NET_RAW", "chown"]).expect("some");
        assert!(!some.contains(&Capability::NetRaw));
        assert!(!some.contains(&Capability::Chown));
        assert!(some.contains(&Capability::SysTime));
        assert!(caps(&["ALL"], &[]).expect("all").len() > 30);
        let err = caps(&["NET_FLY"], &[]).expect_err("an error");
        assert!(err.to_string().contains("NET_FLY"), "{err}");
    }

    fn rootfs(passwd: &str, group: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("etc")).expect("etc");
        std::fs::write(dir.path().join("etc/passwd"), passwd).expect("passwd");
        std::fs::write(dir.path().join("etc/group"), group).expect("group");
        dir
    }

    fn user_image(user: &str) -> ImageConfig {
        ConfigBuilder::default()
            .user(user.to_owned())
            .build()
            .expect("config")
    }

    #[test]
    fn users_resolved_in_the_image() {
        let root = rootfs(
            "root:x:0:0:root:/root:/bin/sh\nnginx:x:101:102:nginx:/:/bin/false\n",
            "root:x:0:\nnginx:x:102:\nwww:x:33:nginx,other\n",
        );
        let resolve = |image_user: &str, request: UserRequest| {
            let c = Container {
                name: "app".into(),
                rootfs: root.path().to_owned(),
                user: request,
                ..Default::default()
            };
            resolve_user(&c, Some(&user_image(image_user)))
        };
        let got = resolve("nginx", UserRequest::default()).expect("nginx");
        assert_eq!(
            (got.uid, got.gid, got.additional_gids),
            (101, 102, vec![102, 33])
        );
        let got = resolve("", UserRequest::default()).expect("root");
        assert_eq!((got.uid, got.gid), (0, 0));
        let got = resolve("nginx:www", UserRequest::default()).expect("nginx:www");
        assert_eq!((got.uid, got.gid), (101, 33));
        let got = resolve("1000:2000", UserRequest::default()).expect("numeric");
        assert_eq!(
            (got.uid, got.gid, got.additional_gids),
            (1000, 2000, vec![2000])
        );
        let got = resolve(
            "nginx",
            UserRequest {
                uid: Some(101),
                gid: Some(7),
                supplemental_groups: vec![9, 7],
                run_as_non_root: true,
                strict_groups: false,
            },
        )
        .expect("runAsUser");
        assert_eq!(
            (got.uid, got.gid, got.additional_gids),
            (101, 7, vec![7, 33, 9])
        );
        // supplementalGroupsPolicy: Strict: not the image's `www` group of nginx.
        let got = resolve(
            "nginx",
            UserRequest {
                supplemental_groups: vec![9],
                strict_groups: true,
                ..UserRequest::default()
            },
        )
        .expect("strict");
        assert_eq!(
            (got.uid, got.gid, got.additional_gids),
            (101, 102, vec![102, 9])
        );
        let err = resolve("ghost", UserRequest::default()).expect_err("an error");
        assert_eq!(
            err.to_string(),
            "container app: unable to find user ghost: no matching entries in passwd file"
        );
    }

    /// A symlinked /etc/passwd resolves inside the image, never to the host's.
    #[test]
    fn the_user_database_is_read_inside_the_image() {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(root.path().join("etc")).expect("etc");
        std::os::unix::fs::symlink("/../../../../etc/hostname", root.path().join("etc/passwd"))
            .expect("symlink");
        let c = Container {
            name: "app".into(),
            rootfs: root.path().to_owned(),
            ..Default::default()
        };
        // The host has root; the image has no passwd file at all.
        let err = resolve_user(&c, Some(&user_image("root"))).expect_err("an error");
        assert!(
            err.to_string().contains("unable to find user root"),
            "{err}"
        );
    }

    #[test]
    fn run_as_non_root_as_kubelet_checks_it() {
        let root = rootfs("root:x:0:0::/:/bin/sh\napp:x:1000:1000::/:/bin/sh\n", "");
        let check = |image_user: &str, uid: Option<u32>| {
            let c = Container {
                name: "app".into(),
                rootfs: root.path().to_owned(),
                command: strings(&["/app"]),
                user: UserRequest {
                    uid,
                    run_as_non_root: true,
                    ..Default::default()
                },
                ..Default::default()
            };
            spec(&c, Some(&user_image(image_user))).map(|_| ())
        };
        let err = check("", None).expect_err("an error").to_string();
        assert!(err.contains("image will run as root"), "{err}");
        let err = check("app", None).expect_err("an error").to_string();
        assert!(err.contains("non-numeric user (app)"), "{err}");
        let err = check("1000", Some(0)).expect_err("an error").to_string();
        assert!(err.contains("runAsUser breaks non-root policy"), "{err}");
        check("1000", None).expect("numeric non-root");
        check("", Some(1000)).expect("runAsUser non-root");
    }

    #[test]
    fn the_spec_joins_the_pods_namespaces() {
        let root = rootfs("", "");
        let c = Container {
            name: "app".into(),
            rootfs: root.path().to_owned(),
            command: strings(&["/app"]),
            hostname: "web".into(),
            namespaces: Namespaces {
                net: Some("/run/podkit/pods/web/ns/net".into()),
                ipc: Some("/run/podkit/pods/web/ns/ipc".into()),
                uts: Some("/run/podkit/pods/web/ns/uts".into()),
                pid: None,
                host_pid: false,
            },
            mounts: vec![BindMount {
                source: "/run/podkit/pods/web/hosts".into(),
                destination: "/etc/hosts".into(),
                read_only: false,
            }],
            security: Security {
                read_only_root: true,
                no_new_privileges: true,
                ..Default::default()
            },
            ..Default::default()
        };
        let spec = spec(&c, None).expect("spec");
        let json = serde_json::to_value(&spec).expect("json");
        assert_eq!(json["hostname"], serde_json::Value::Null);
        assert_eq!(json["root"]["readonly"], true);
        assert_eq!(json["process"]["noNewPrivileges"], true);
        assert_eq!(json["process"]["user"]["uid"], 0);
        let namespaces = json["linux"]["namespaces"].as_array().expect("namespaces");
        assert!(namespaces.contains(
            &serde_json::json!({"type": "network", "path": "/run/podkit/pods/web/ns/net"})
        ));
        assert!(namespaces.contains(&serde_json::json!({"type": "pid"})));
        assert!(namespaces.contains(&serde_json::json!({"type": "mount"})));
        assert_eq!(
            json["linux"]["maskedPaths"]
                .as_array()
                .expect("masked")
                .len(),
            11
        );
        let mounts = json["mounts"].as_array().expect("mounts");
        assert_eq!(mounts.last().expect("bind")["destination"], "/etc/hosts");
        assert!(json["process"].get("rlimits").is_none());
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(dir.path(), &spec).expect("write");
        assert_eq!(Spec::load(path).expect("load"), spec);
    }
}
