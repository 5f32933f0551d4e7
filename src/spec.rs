//! Pod manifests: YAML in, a validated [`PodPlan`] out.
//!
//! Manifests are parsed into the `k8s-openapi` v1 `Pod` type, so they are the same files a
//! cluster takes. Then every field is accounted for: honoured (it becomes part of the plan),
//! accepted and ignored (it means nothing on one host: listed in [`PodPlan::ignored`]), or
//! refused with an error naming its path ("not supported by podkit"). A field the `Pod` type does
//! not know at all (a typo) is refused too, as `kubectl apply` with strict validation does.

mod expand;
mod objects;
pub use objects::NETWORK_POLICY_NOT_ENFORCED;
pub mod quantity;
pub mod resources;
mod validate;
pub mod workloads;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use expand::expand;
pub use resources::{Qos, Resources};
pub(crate) use validate::parse_quantity;

/// A manifest podkit cannot run, with where and why.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("failed to read {path:?}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{file}: invalid YAML: {message}")]
    Yaml { file: String, message: String },

    #[error("{file}: {}", format_problems(.problems))]
    Invalid {
        file: String,
        /// Each problem as `field.path: what is wrong`.
        problems: Vec<String>,
    },

    #[error("{file}: no Pod in the file")]
    Empty { file: String },

    /// A pod names a RuntimeClass that neither its file nor podkit's configuration defines.
    #[error(
        "{file}: pod {pod:?}: spec.runtimeClassName: RuntimeClass {class:?} not found: define it \
         (apiVersion: node.k8s.io/v1, kind: RuntimeClass, with its handler) in the same file or \
         in {dir}"
    )]
    RuntimeClassNotFound {
        file: String,
        pod: String,
        class: String,
        dir: String,
    },
}

fn format_problems(problems: &[String]) -> String {
    match problems {
        [one] => one.clone(),
        many => format!("{} problems:\n  {}", many.len(), many.join("\n  ")),
    }
}

/// A pod that passed validation: everything the supervisor needs, nothing it must re-check.
///
/// It is serializable with podkit's own small types only: `podkit run` hands it to the
/// supervisor it execs, which so never loads the YAML and Kubernetes deserializers (their code
/// is most of a process's memory).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodPlan {
    /// The manifest as validated (a v1 Pod as JSON), for `get -o yaml` and for comparing a
    /// re-apply.
    pub manifest: serde_json::Value,
    pub name: String,
    pub namespace: String,
    pub uid: Option<String>,
    pub hostname: String,
    /// `shareProcessNamespace`: one PID namespace for the pod, with podkit's pause as PID 1.
    pub share_process_namespace: bool,
    /// `hostNetwork`: the host's network namespace (and with it its UTS namespace, as containerd
    /// gives it): the pod's hostname is the host's, its ports are the host's own.
    #[serde(default)]
    pub host_network: bool,
    /// An address of its own on podkit's host bridge (the default), or only its loopback
    /// ([`NETWORK_ANNOTATION`] `none`); never with `hostNetwork`.
    #[serde(default)]
    pub pod_network: bool,
    /// Its NAT'd hostPorts also on the connect-time hook for the host's own clients (the
    /// default; [`HOST_PORTS_ANNOTATION`] `nat` is the DNAT alone).
    #[serde(default)]
    pub host_port_hook: bool,
    /// The pod's addresses on the pod network (`status.podIPs`), set by its supervisor once
    /// the pod has joined: at most one per family (a dual-stack CNI network gives two), the
    /// first its [`PodPlan::pod_ip`].
    #[serde(default)]
    pub pod_ips: Vec<std::net::IpAddr>,
    /// `hostIPC`: the host's IPC namespace and its `/dev/shm`.
    #[serde(default)]
    pub host_ipc: bool,
    /// `hostPID`: image containers in the host's PID namespace (host processes are there
    /// already).
    #[serde(default)]
    pub host_pid: bool,
    pub restart_policy: RestartPolicy,
    pub termination_grace_period: Duration,
    pub active_deadline: Option<Duration>,
    /// Init containers in order; native sidecars among them have `sidecar: true`.
    pub init_containers: Vec<Member>,
    pub containers: Vec<Member>,
    pub volumes: Vec<Volume>,
    /// Field paths that were accepted but mean nothing on one host.
    pub ignored: Vec<String>,
    /// What the user should know before running the pod (said by `apply`, `run`, `describe`):
    /// a hostPort open to other hosts whose app sees every client as 127.0.0.1, ...
    #[serde(default)]
    pub warnings: Vec<String>,
    /// `spec.runtimeClassName`.
    #[serde(default)]
    pub runtime_class: Option<String>,
    /// The OCI runtime that runs the pod's image containers: the RuntimeClass's `handler`
    /// (`crun`, `runsc`, ...), or `None` for podkit's default (runc). Filled in by [`load`] (or
    /// [`parse`] when the class is in the same text).
    #[serde(default)]
    pub runtime_handler: Option<String>,
    /// `spec.schedulingGates`' names: while there are any, the pod stays Pending
    /// (`SchedulingGated`) and nothing of it runs; a re-apply may only remove them.
    #[serde(default)]
    pub scheduling_gates: Vec<String>,
    /// `spec.hostAliases`: `(ip, hostnames)`, appended to the pod's `/etc/hosts` as kubelet does.
    #[serde(default)]
    pub host_aliases: Vec<(String, Vec<String>)>,
    /// `dnsPolicy` and `dnsConfig`: the pod's `/etc/resolv.conf`.
    #[serde(default)]
    pub dns: Dns,
    /// `imagePullSecrets`: the Secrets' names, and the registry credentials of those the
    /// manifest's file holds (a Secret it does not hold is reported when pulling, as kubelet
    /// reports a Secret it cannot read).
    #[serde(default)]
    pub pull_secret_names: Vec<String>,
    #[serde(default)]
    pub pull_secrets: PullSecrets,
    /// `securityContext.fsGroup`: the group of the pod's emptyDir volumes (setgid, group
    /// writable), and a supplementary group of its image containers.
    #[serde(default)]
    pub fs_group: Option<u32>,
    /// `securityContext.sysctls`, namespaced ones (`net.*`, IPC's): set in the pod's namespaces
    /// before its first container starts.
    #[serde(default)]
    pub sysctls: Vec<(String, String)>,
    /// The pod's QoS class, from its containers' `resources` (`status.qosClass`).
    #[serde(default)]
    pub qos: Qos,
}

impl PodPlan {
    /// `status.podIP`: the pod's first address on the pod network, if it has one.
    pub fn pod_ip(&self) -> Option<std::net::IpAddr> {
        self.pod_ips.first().copied()
    }

    /// The pod's key on this host: `<namespace>_<name>` (neither may hold `_`), what its state
    /// directory, network namespace, cgroups and runtime containers are named by, as kubelet
    /// names a pod's log directory.
    pub fn key(&self) -> String {
        pod_key(&self.namespace, &self.name)
    }

    /// The huge pages the pod holds, bytes by page size ([`resources::pod_huge_pages`]).
    pub fn huge_pages(&self) -> BTreeMap<u64, u64> {
        resources::pod_huge_pages(
            self.init_containers
                .iter()
                .chain(&self.containers)
                .map(|m| (m.is_plain_init(), m.sidecar, &m.hugepages)),
        )
    }
}

/// A pod's key on this host from its namespace and name: `<namespace>_<name>`.
pub fn pod_key(namespace: &str, name: &str) -> String {
    format!("{namespace}_{name}")
}

/// The registry credentials of a pod's `imagePullSecrets`: each Secret's docker config JSON
/// (`{"auths": {...}}`), by name. Its `Debug` shows the names only.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullSecrets(pub Vec<(String, serde_json::Value)>);

impl std::fmt::Debug for PullSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(name, _)| name))
            .finish()
    }
}

/// How an image container's `/etc/resolv.conf` is made, as kubelet makes it: the host's
/// resolvers (`dnsPolicy` `Default`, and `ClusterFirst` while podkit has no cluster DNS, which is
/// kubelet's fallback too) or nothing (`None`), then `dnsConfig` merged in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    /// `dnsPolicy: None`: nothing from the host.
    pub policy_none: bool,
    /// `dnsConfig.nameservers`, `searches` and `options` (`name`, `value`).
    pub nameservers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<(String, Option<String>)>,
}

/// `spec.restartPolicy` (for native sidecars: always `Always`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    /// Whether a container that exited with `code` is started again.
    pub fn restarts(self, code: i32) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => code != 0,
            RestartPolicy::Never => false,
        }
    }
}

/// The pod annotation that runs containers as host processes in the pod's namespaces instead
/// of from their images: `"true"` for every container, or a comma-separated list of container
/// names (a podkit sidecar beside an image app). Harmless on a cluster, which ignores it and
/// runs every container from its image.
pub const HOST_PROCESS_ANNOTATION: &str = "podkit.io/host-process";

/// How a container runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Runs {
    /// A host command in the pod's namespaces ([`HOST_PROCESS_ANNOTATION`]): [`Member::argv`].
    Host,
    /// From its image, by the OCI runtime.
    Image(ImageRun),
}

/// What running a container from its image takes beyond the host-process fields of [`Member`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRun {
    /// The image as the manifest names it (`nginx:1.14.2`); checked to be a valid reference.
    pub image: String,
    /// `command` and `args`, with `$(VAR)` references in place: merged with the image's
    /// Entrypoint and Cmd at start, as Kubernetes does.
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub pull_policy: PullPolicy,
    /// `runAsNonRoot: true` without a `runAsUser`: checked against the image's user at start.
    pub run_as_non_root: bool,
    /// The pod's `supplementalGroups`.
    pub supplemental_groups: Vec<u32>,
    /// `supplementalGroupsPolicy: Strict`: the groups the pod names only, none from the
    /// image's /etc/group (Merge, the default, adds the user's groups there).
    #[serde(default)]
    pub strict_groups: bool,
    pub add_capabilities: Vec<String>,
    pub drop_capabilities: Vec<String>,
    pub privileged: bool,
    pub read_only_root: bool,
    /// `allowPrivilegeEscalation: false`.
    pub no_new_privileges: bool,
    /// `seccompProfile`, the container's or else the pod's.
    #[serde(default)]
    pub seccomp: Seccomp,
}

/// `seccompProfile.type`, as the runtime applies it (a privileged container gets no filter).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Seccomp {
    /// No filter: Kubernetes' default (kubelet's `--seccomp-default` is off by default).
    #[default]
    Unconfined,
    /// containerd's default profile (`oci::seccomp::runtime_default`).
    RuntimeDefault,
    /// `localhostProfile`: a file relative to podkit's seccomp directory
    /// (`<storage>/seccomp/`, as kubelet's is `<root-dir>/seccomp/`).
    Localhost(PathBuf),
}

/// `imagePullPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

/// One container of the pod: run from its image, or a host command.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Member {
    pub name: String,
    /// As the manifest names it: for the status, and the image to run.
    pub image: Option<String>,
    /// From its image, or as a host process.
    pub runs: Runs,
    /// Where it sits in the manifest, for messages: `spec.containers[1]`.
    pub path: String,
    /// An init container with `restartPolicy: Always`.
    pub sidecar: bool,
    /// A host process's `command` + `args`, with `$(VAR)` references still in place: they are
    /// expanded at start, when the environment (pod IP, ...) is known. Empty for an image
    /// container (see [`ImageRun`]).
    pub argv: Vec<String>,
    pub env: Vec<EnvVar>,
    pub working_dir: Option<PathBuf>,
    pub run_as_user: Option<u32>,
    pub run_as_group: Option<u32>,
    pub mounts: Vec<Mount>,
    pub startup_probe: Option<Probe>,
    pub liveness_probe: Option<Probe>,
    pub readiness_probe: Option<Probe>,
    pub post_start: Option<Handler>,
    pub pre_stop: Option<Handler>,
    /// `ports[]` with a `hostPort`: published on the host for the pod's whole life.
    pub host_ports: Vec<HostPort>,
    /// `terminationMessagePath` and `terminationMessagePolicy`.
    #[serde(default)]
    pub termination_message: TerminationMessage,
    /// `resources`: cpu and memory requests and limits (requests defaulted from limits).
    #[serde(default)]
    pub resources: Resources,
    /// A host process's `capabilities` and `allowPrivilegeEscalation` (an image container's
    /// are in [`ImageRun`]).
    #[serde(default)]
    pub host_security: HostSecurity,
    /// `envFrom`, in order; [`Member::env`] comes after and wins.
    #[serde(default)]
    pub env_from: Vec<EnvFrom>,
    /// Extended resources (`vendor.com/class: N` in `resources.limits`): N devices of CDI kind
    /// `vendor.com/class` from the host's CDI specs, the container's alone while the pod runs.
    #[serde(default)]
    pub devices: Vec<(String, u32)>,
    /// `stdin`, `stdinOnce` and `tty`: what `podkit attach` reaches.
    #[serde(default)]
    pub stdio: Stdio,
    /// `hugepages-<size>` (a request is its limit): bytes of huge pages by page size, the
    /// container's hugetlb cgroup limit and what the pod holds of the host's pages.
    #[serde(default)]
    pub hugepages: BTreeMap<u64, u64>,
}

/// A container's `stdin`, `stdinOnce` and `tty`, as the CRI runtime honours them: with `stdin`
/// its stdin stays open (a pipe the supervisor holds, or the pty) for `podkit attach` to write
/// to; with `stdinOnce` it is closed once the first attach's stdin ends (a pipe only: containerd
/// leaves a pty open); with `tty` a pty is its stdin, stdout and stderr, logged as stdout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stdio {
    pub stdin: bool,
    pub stdin_once: bool,
    pub tty: bool,
}

/// What a host process's securityContext asks of it: capabilities added to or dropped from the
/// host root's full set (its bounding set: a process run as root keeps only those), and no
/// privilege escalation (no_new_privs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostSecurity {
    pub add_capabilities: Vec<String>,
    pub drop_capabilities: Vec<String>,
    pub no_new_privileges: bool,
}

impl Member {
    /// An init container that runs to completion (not a native sidecar).
    pub fn is_plain_init(&self) -> bool {
        !self.sidecar && self.path.starts_with("spec.initContainers")
    }
}

/// kubelet's default `terminationMessagePath`.
pub const DEFAULT_TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";

/// Where a container's termination message comes from, read into
/// `status...terminated.message` when it ends.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminationMessage {
    /// A file of the pod's mounted at this path in an image container (a host process gets
    /// none: it sees the host's filesystem).
    pub file: Option<PathBuf>,
    /// `FallbackToLogsOnError`: the end of the log when the file is empty and the container
    /// failed.
    pub from_logs: bool,
}

/// A container port published on the host (`ports[].hostPort`), as `docker run -p` does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPort {
    pub host_port: u16,
    pub container_port: u16,
    /// `TCP` or `UDP`.
    pub udp: bool,
    /// `hostIP`: the host address to listen on; all of them (0.0.0.0) when unset.
    pub host_ip: Option<std::net::IpAddr>,
    /// A PROXY protocol header with the client's address, sent to the app before the client's
    /// bytes (the pod's annotation [`PROXY_PROTOCOL_ANNOTATION`]); TCP only.
    #[serde(default)]
    pub proxy_protocol: Option<ProxyProtocol>,
    /// Relayed into the pod's loopback by podkit's relay instead of NAT to the pod's IP (see
    /// [`HOST_PORTS_ANNOTATION`]).
    #[serde(default)]
    pub relay: bool,
}

/// The pod annotation that makes podkit's hostPort relay tell the app each client's real
/// address with a PROXY protocol header (HAProxy's): `v1` or `v2` for every TCP hostPort, or
/// `HOSTPORT=v1|v2,...` for some. Harmless on a cluster, where hostPorts are NAT and the app
/// sees the client's address anyway (but an app expecting the header would then not get it).
pub const PROXY_PROTOCOL_ANNOTATION: &str = "podkit.io/proxy-protocol";

/// The pod annotation that chooses how its hostPorts reach it: unset (the default for a pod with
/// an IP: DNAT to the pod's IP, as a cluster's CNI portmap plugin does, so the app sees each
/// client's address, and for clients on the host itself a BPF hook on connect() that skips the
/// NAT where the kernel allows it), `nat` (the DNAT alone) or `relay` (podkit's relay into the
/// pod's loopback, for an app that listens on 127.0.0.1 only; it sees every client as
/// 127.0.0.1). A pod without an IP, and a port with a PROXY protocol header, are always relayed.
pub const HOST_PORTS_ANNOTATION: &str = "podkit.io/host-ports";

/// The pod annotation that chooses the pod's network: `pod` (the default: an IP address of its
/// own on podkit's host bridge, reachable from the host and other pods) or `none` (only its
/// loopback, as `podman run --network none`; hostPorts still reach it through the relay).
/// Harmless on a cluster, which gives every pod an IP.
pub const NETWORK_ANNOTATION: &str = "podkit.io/network";

/// A PROXY protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ProxyProtocol {
    /// The text header: `PROXY TCP4 SRC DST SPORT DPORT\r\n`.
    V1,
    /// The binary header.
    V2,
}

/// An environment variable: a literal, or a field of the pod filled in at start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvVar {
    pub name: String,
    pub value: EnvValue,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EnvValue {
    Literal(String),
    /// `valueFrom.fieldRef.fieldPath`, one of [`validate::FIELD_REFS`].
    FieldRef(String),
    /// `valueFrom.resourceFieldRef`: the container's own unless it names another.
    ResourceRef(ResourceRef),
    /// `valueFrom.configMapKeyRef` or `.secretKeyRef`: read from podkit's object store when the
    /// container starts (each start, as kubelet does), never expanded.
    Key(KeyRef),
}

/// The objects podkit keeps: ConfigMaps and Secrets (which pods read data from),
/// PersistentVolumeClaims (whose volumes pods mount), and the workloads, each kept by a
/// controller process of its own (`crate::controller`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ObjectKind {
    ConfigMap,
    Secret,
    PersistentVolumeClaim,
    /// Kept, listed and described, and NOT ENFORCED: podkit filters no traffic between pods
    /// (said by `apply`, `get`, and `describe` of the policy and of each pod it selects).
    NetworkPolicy,
    /// Kept and listed; what it does (an IP, a name, endpoints) is the pod network's work.
    Service,
    Deployment,
    ReplicaSet,
    ReplicationController,
    StatefulSet,
    DaemonSet,
    Job,
    CronJob,
}

impl ObjectKind {
    /// Every kind, in the order `apply` keeps them: what pods read before the workloads.
    pub const ALL: [ObjectKind; 12] = [
        ObjectKind::ConfigMap,
        ObjectKind::Secret,
        ObjectKind::PersistentVolumeClaim,
        ObjectKind::NetworkPolicy,
        ObjectKind::Service,
        ObjectKind::Deployment,
        ObjectKind::ReplicaSet,
        ObjectKind::ReplicationController,
        ObjectKind::StatefulSet,
        ObjectKind::DaemonSet,
        ObjectKind::Job,
        ObjectKind::CronJob,
    ];

    /// The workloads: the kinds after the Services in [`ObjectKind::ALL`].
    pub const WORKLOADS: &[ObjectKind] = ObjectKind::ALL.split_at(5).1;

    /// The kinds a controller process keeps: the Services and the workloads.
    pub const CONTROLLED: &[ObjectKind] = ObjectKind::ALL.split_at(4).1;

    /// The kind as the API names it: `ConfigMap`, `Secret`.
    pub fn kind(self) -> &'static str {
        match self {
            ObjectKind::ConfigMap => "ConfigMap",
            ObjectKind::Secret => "Secret",
            ObjectKind::PersistentVolumeClaim => "PersistentVolumeClaim",
            ObjectKind::NetworkPolicy => "NetworkPolicy",
            ObjectKind::Service => "Service",
            ObjectKind::Deployment => "Deployment",
            ObjectKind::ReplicaSet => "ReplicaSet",
            ObjectKind::ReplicationController => "ReplicationController",
            ObjectKind::StatefulSet => "StatefulSet",
            ObjectKind::DaemonSet => "DaemonSet",
            ObjectKind::Job => "Job",
            ObjectKind::CronJob => "CronJob",
        }
    }

    /// The kind named as `kind:` names it.
    pub fn from_kind(kind: &str) -> Option<ObjectKind> {
        ObjectKind::ALL.into_iter().find(|k| k.kind() == kind)
    }

    /// The apiVersion of the kind.
    pub fn api_version(self) -> &'static str {
        match self {
            ObjectKind::ConfigMap
            | ObjectKind::Secret
            | ObjectKind::PersistentVolumeClaim
            | ObjectKind::Service
            | ObjectKind::ReplicationController => "v1",
            ObjectKind::Deployment
            | ObjectKind::ReplicaSet
            | ObjectKind::StatefulSet
            | ObjectKind::DaemonSet => "apps/v1",
            ObjectKind::Job | ObjectKind::CronJob => "batch/v1",
            ObjectKind::NetworkPolicy => "networking.k8s.io/v1",
        }
    }

    /// Whether the kind is a workload (it owns pods).
    pub fn is_workload(self) -> bool {
        ObjectKind::WORKLOADS.contains(&self)
    }

    /// Whether a controller process keeps objects of the kind: the workloads, and Services
    /// (their endpoints and rules).
    pub fn has_controller(self) -> bool {
        self.is_workload() || self == ObjectKind::Service
    }

    /// As kubectl prints an object of the kind: `configmap/app`, `deployment.apps/web`.
    pub fn printed(self) -> &'static str {
        match self {
            ObjectKind::Deployment => "deployment.apps",
            ObjectKind::ReplicaSet => "replicaset.apps",
            ObjectKind::StatefulSet => "statefulset.apps",
            ObjectKind::DaemonSet => "daemonset.apps",
            ObjectKind::Job => "job.batch",
            ObjectKind::CronJob => "cronjob.batch",
            ObjectKind::NetworkPolicy => "networkpolicy.networking.k8s.io",
            other => other.lower(),
        }
    }

    /// As kubectl and kubelet's messages name it: `configmap "x" not found`.
    pub fn lower(self) -> &'static str {
        match self {
            ObjectKind::ConfigMap => "configmap",
            ObjectKind::Secret => "secret",
            ObjectKind::PersistentVolumeClaim => "persistentvolumeclaim",
            ObjectKind::NetworkPolicy => "networkpolicy",
            ObjectKind::Service => "service",
            ObjectKind::Deployment => "deployment",
            ObjectKind::ReplicaSet => "replicaset",
            ObjectKind::ReplicationController => "replicationcontroller",
            ObjectKind::StatefulSet => "statefulset",
            ObjectKind::DaemonSet => "daemonset",
            ObjectKind::Job => "job",
            ObjectKind::CronJob => "cronjob",
        }
    }

    /// The API's resource (plural) name: the store's directory of the kind.
    pub fn resource(self) -> &'static str {
        match self {
            ObjectKind::ConfigMap => "configmaps",
            ObjectKind::Secret => "secrets",
            ObjectKind::PersistentVolumeClaim => "persistentvolumeclaims",
            ObjectKind::NetworkPolicy => "networkpolicies",
            ObjectKind::Service => "services",
            ObjectKind::Deployment => "deployments",
            ObjectKind::ReplicaSet => "replicasets",
            ObjectKind::ReplicationController => "replicationcontrollers",
            ObjectKind::StatefulSet => "statefulsets",
            ObjectKind::DaemonSet => "daemonsets",
            ObjectKind::Job => "jobs",
            ObjectKind::CronJob => "cronjobs",
        }
    }
}

/// One key of a ConfigMap or Secret in the pod's namespace (`configMapKeyRef`, `secretKeyRef`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRef {
    pub kind: ObjectKind,
    pub name: String,
    pub key: String,
    /// A missing object or key leaves the variable out instead of failing the start.
    pub optional: bool,
}

/// `envFrom[]`: every key of a ConfigMap's `data` (or a Secret's), prefixed, before `env`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvFrom {
    pub kind: ObjectKind,
    pub name: String,
    pub prefix: String,
    pub optional: bool,
}

/// `resourceFieldRef`: a container's cpu or memory request or limit, counted in `divisor`s and
/// rounded up (a limit not set is the host's allocatable amount, as kubelet gives it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceRef {
    pub container: String,
    /// `limits.cpu`, `limits.memory`, `requests.cpu` or `requests.memory`.
    pub resource: String,
    /// In millicores for cpu (1 or 1000), in bytes for memory; never 0.
    pub divisor: u64,
}

/// One file of a `downwardAPI` volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DownwardFile {
    /// Relative, without `..`.
    pub path: PathBuf,
    /// The item's `mode`, else the volume's `defaultMode` (0644).
    pub mode: u32,
    pub value: DownwardValue,
}

/// What a `downwardAPI` file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DownwardValue {
    /// `fieldRef.fieldPath`: `metadata.name`, `.namespace`, `.uid`, `.labels`, `.annotations`,
    /// or one label or annotation (`metadata.labels['app']`).
    Field(String),
    Resource(ResourceRef),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    pub volume: String,
    pub mount_path: PathBuf,
    pub read_only: bool,
    /// Relative to the volume's root; never contains `..`.
    pub sub_path: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    pub name: String,
    pub source: VolumeSource,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum VolumeSource {
    /// A directory in the pod's state dir; on tmpfs (with a size limit) for `medium: Memory`.
    EmptyDir {
        memory: bool,
        size_limit: Option<u64>,
    },
    /// `medium: HugePages` or `HugePages-<size>`: a hugetlbfs of that page size (kubelet's
    /// `pagesize=` mount), which pages are the pod's huge pages.
    HugePages {
        page_size: u64,
    },
    HostPath {
        path: PathBuf,
        kind: HostPathType,
    },
    /// `downwardAPI`: files of the pod's fields and its containers' resources, written as
    /// kubelet's atomic writer writes them, and mounted read-only.
    DownwardApi {
        files: Vec<DownwardFile>,
    },
    /// `configMap`, `secret` and `projected`: files of ConfigMaps, Secrets (and, projected, of
    /// the pod's fields) in kubelet's atomic-writer layout, rewritten when an object changes,
    /// mounted read-only. `memory`: on a tmpfs of its own, as kubelet keeps secret and projected
    /// volumes off the disk.
    Projected {
        sources: Vec<Projection>,
        memory: bool,
    },
    /// `persistentVolumeClaim`: the claim's directory in podkit's storage, which outlives the
    /// pod (until the claim is deleted); read-only when `readOnly`.
    Claim {
        name: String,
        read_only: bool,
    },
}

/// One source of a [`VolumeSource::Projected`] volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Projection {
    /// The keys of a ConfigMap or Secret: all of them, or `items` only.
    Data {
        kind: ObjectKind,
        name: String,
        /// `items`: (key, relative path, mode); `None`: every key, at its own name.
        items: Option<Vec<KeyItem>>,
        /// `defaultMode` (0644 unless given).
        default_mode: u32,
        /// A missing object (or item key) is no error: the volume is written without it.
        optional: bool,
    },
    Downward(Vec<DownwardFile>),
}

/// An `items[]` entry of a configMap, secret or projected volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyItem {
    pub key: String,
    /// Relative, without `..`.
    pub path: PathBuf,
    pub mode: Option<u32>,
}

/// `hostPath.type`: what must (or will) be at the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostPathType {
    /// `""`: no check.
    Unset,
    DirectoryOrCreate,
    Directory,
    FileOrCreate,
    File,
    Socket,
    CharDevice,
    BlockDevice,
}

/// A probe with kubelet's defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    pub handler: Handler,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
    /// `terminationGracePeriodSeconds`: the grace period for stopping the container when this
    /// (liveness or startup) probe fails, instead of the pod's.
    #[serde(default)]
    pub termination_grace_period: Option<Duration>,
}

/// What a probe or lifecycle hook does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Handler {
    Exec {
        command: Vec<String>,
    },
    HttpGet {
        host: Option<String>,
        port: u16,
        path: String,
        https: bool,
        headers: Vec<(String, String)>,
    },
    TcpSocket {
        host: Option<String>,
        port: u16,
    },
    /// A probe's `grpc`: the gRPC Health Checking Protocol's `Check` for `service` (empty: the
    /// server as a whole) on the pod's `port`.
    Grpc {
        port: u16,
        service: String,
    },
    Sleep {
        duration: Duration,
    },
}

/// Where podkit's configuration lives: `PODKIT_CONFIG`, or /etc/podkit. RuntimeClasses that
/// pods in other files may name are read from its `runtimeclasses` directory.
pub fn config_dir() -> PathBuf {
    std::env::var_os("PODKIT_CONFIG").map_or_else(|| PathBuf::from("/etc/podkit"), PathBuf::from)
}

/// A ConfigMap or Secret of a manifest, validated, as podkit's object store keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    pub kind: ObjectKind,
    pub namespace: String,
    pub name: String,
    /// The object as the API server would keep it (a Secret's `stringData` merged into its
    /// base64 `data`, its type defaulted, the namespace filled in), without the server's own
    /// metadata (uid, creationTimestamp), which the store adds.
    pub value: serde_json::Value,
    /// `immutable: true`: the store refuses a changed one.
    pub immutable: bool,
}

/// Everything a manifest file holds: pods, the objects they read, and what is ignored.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub pods: Vec<PodPlan>,
    /// ConfigMaps and Secrets, in file order.
    pub objects: Vec<Object>,
    /// `Kind/name: ignored: why`, for each document of a kind that means nothing on one host.
    pub ignored: Vec<String>,
}

/// Parses every Pod in `text` (YAML, documents separated by `---`) and validates each.
/// `file` names the source in messages. RuntimeClass documents in the text give the pods'
/// `runtimeClassName`s their handlers; a class the text does not define is left unresolved
/// (`runtime_handler: None`) for [`load`] to find in podkit's configuration. A file with no Pod
/// is refused ([`parse_manifest`] takes one of ConfigMaps only).
pub fn parse(file: &str, text: &str) -> Result<Vec<PodPlan>, SpecError> {
    let manifest = parse_manifest(file, text)?;
    if manifest.pods.is_empty() {
        return Err(SpecError::Empty {
            file: file.to_owned(),
        });
    }
    Ok(manifest.pods)
}

/// Parses and validates every document of `text`: Pods, RuntimeClasses, ConfigMaps, Secrets
/// and the kinds that are ignored on one host; any other kind is refused.
pub fn parse_manifest(file: &str, text: &str) -> Result<Manifest, SpecError> {
    let documents = documents(file, text)?;
    let many = documents.len() > 1;
    let mut plans = Vec::new();
    let mut classes = BTreeMap::new();
    let mut secrets = BTreeMap::new();
    let mut objects: Vec<Object> = Vec::new();
    let mut ignored = Vec::new();
    let mut problems = Vec::new();
    for (index, raw) in documents.into_iter().enumerate() {
        // With several documents, say which one a problem is in.
        let prefix = if many {
            format!("document {}: ", index + 1)
        } else {
            String::new()
        };
        let found = if validate::is_runtime_class(&raw) {
            validate::runtime_class(&raw).map(|(name, class)| {
                classes.insert(name, class);
            })
        } else if raw.get("kind").and_then(serde_json::Value::as_str) == Some("Pod") {
            validate::document(raw).map(|plan| plans.push(plan))
        } else if let Some(other) = objects::other(&raw) {
            other.and_then(|other| match other {
                objects::Other::Ignored(note) => {
                    ignored.push(note);
                    Ok(())
                }
                objects::Other::Object(object) => {
                    // Kept, and said what of it does not work yet.
                    if object.kind == ObjectKind::NetworkPolicy {
                        ignored.push(format!(
                            "NetworkPolicy/{}: kept, NOT ENFORCED: {}",
                            object.name, NETWORK_POLICY_NOT_ENFORCED
                        ));
                    }
                    if object.kind == ObjectKind::Service {
                        let spec = &object.value["spec"];
                        if spec["type"].as_str() == Some("LoadBalancer") {
                            ignored.push(format!(
                                "Service/{}: type LoadBalancer: one host has no load \
                                 balancer, so EXTERNAL-IP stays <pending> (as on a cluster \
                                 without one); its node ports and cluster IP work",
                                object.name
                            ));
                        }
                    }
                    // A registry's credentials, for the pods' imagePullSecrets.
                    if validate::is_pull_secret(&raw) {
                        let (name, config) = validate::pull_secret(&raw)?;
                        secrets.insert(name, config);
                    }
                    objects.push(object);
                    Ok(())
                }
            })
        } else {
            validate::document(raw).map(|plan| plans.push(plan))
        };
        if let Err(found) = found {
            problems.extend(found.into_iter().map(|p| format!("{prefix}{p}")));
        }
    }
    for plan in &mut plans {
        plan.pull_secrets = PullSecrets(
            plan.pull_secret_names
                .iter()
                .filter_map(|name| Some((name.clone(), secrets.get(name)?.clone())))
                .collect(),
        );
    }
    if plans.is_empty() && objects.is_empty() && ignored.is_empty() && problems.is_empty() {
        return Err(SpecError::Empty {
            file: file.to_owned(),
        });
    }
    let mut names: Vec<(&str, &str)> = plans
        .iter()
        .map(|p| (p.namespace.as_str(), p.name.as_str()))
        .collect();
    names.sort_unstable();
    if let Some(pair) = names.windows(2).find(|w| w[0] == w[1]) {
        problems.push(format!(
            "metadata.name: pod {:?} is defined twice in the file (namespace {:?})",
            pair[0].1, pair[0].0
        ));
    }
    for (i, o) in objects.iter().enumerate() {
        if objects[..i]
            .iter()
            .any(|p| (p.kind, &p.namespace, &p.name) == (o.kind, &o.namespace, &o.name))
        {
            problems.push(format!(
                "metadata.name: {} {:?} is defined twice in the file",
                o.kind.kind(),
                o.name
            ));
        }
    }
    if !problems.is_empty() {
        return Err(SpecError::Invalid {
            file: file.to_owned(),
            problems,
        });
    }
    for plan in &mut plans {
        resolve_class(plan, &classes);
    }
    Ok(Manifest {
        pods: plans,
        objects,
        ignored,
    })
}

/// A RuntimeClass: its handler, and what of it podkit does not use.
#[derive(Debug, Clone)]
struct RuntimeClass {
    handler: String,
    /// `overhead`, `scheduling`: for a cluster's scheduler, nothing on one host.
    ignored: Vec<String>,
}

fn resolve_class(plan: &mut PodPlan, classes: &BTreeMap<String, RuntimeClass>) {
    let Some(class) = plan
        .runtime_class
        .as_ref()
        .and_then(|name| classes.get(name))
    else {
        return;
    };
    plan.runtime_handler = Some(class.handler.clone());
    let name = plan.runtime_class.clone().unwrap_or_default();
    plan.ignored.extend(
        class
            .ignored
            .iter()
            .map(|field| format!("RuntimeClass {name:?}: {field}")),
    );
}

/// The non-empty YAML documents of `text`. A number with a leading zero is octal, as YAML 1.1
/// reads it and so kubectl (`defaultMode: 0644` is 420): file modes in manifests are written so.
fn documents(file: &str, text: &str) -> Result<Vec<serde_json::Value>, SpecError> {
    let mut options = serde_saphyr::Options::default();
    options.legacy_octal_numbers = true;
    let documents: Vec<serde_json::Value> = serde_saphyr::from_multiple_with_options(text, options)
        .map_err(|err| SpecError::Yaml {
            file: file.to_owned(),
            message: err.to_string(),
        })?;
    Ok(documents.into_iter().filter(|d| !d.is_null()).collect())
}

/// Reads and parses the manifest at `path`; a `runtimeClassName` its file does not define is
/// looked up in podkit's configuration ([`config_dir`]`/runtimeclasses/*.yaml`).
pub fn load(path: &std::path::Path) -> Result<Vec<PodPlan>, SpecError> {
    let manifest = load_manifest(path)?;
    if manifest.pods.is_empty() {
        return Err(SpecError::Empty {
            file: path.display().to_string(),
        });
    }
    Ok(manifest.pods)
}

/// Reads every manifest of `paths` (as `kubectl apply -f A -f B` takes several), in order,
/// into one.
pub fn load_manifests(paths: &[PathBuf]) -> Result<Manifest, SpecError> {
    let mut all = Manifest {
        pods: Vec::new(),
        objects: Vec::new(),
        ignored: Vec::new(),
    };
    for path in paths {
        let one = load_manifest(path)?;
        all.pods.extend(one.pods);
        all.objects.extend(one.objects);
        all.ignored.extend(one.ignored);
    }
    Ok(all)
}

/// Reads and parses everything in the manifest at `path` ([`parse_manifest`]): a file, `-` for
/// standard input, or a directory (its `*.yaml`, `*.yml` and `*.json` files in name order, as
/// `kubectl apply -f DIR` reads them). A `runtimeClassName` no file defines is looked up in
/// podkit's configuration.
pub fn load_manifest(path: &std::path::Path) -> Result<Manifest, SpecError> {
    let read = |path: &std::path::Path| {
        std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    let mut manifest = if path == std::path::Path::new("-") {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map_err(|source| {
            SpecError::Read {
                path: path.to_path_buf(),
                source,
            }
        })?;
        parse_manifest("<stdin>", &text)?
    } else if path.is_dir() {
        let files = manifest_files(path).map_err(|source| SpecError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut all = Manifest {
            pods: Vec::new(),
            objects: Vec::new(),
            ignored: Vec::new(),
        };
        for file in files {
            let one = parse_manifest(&file.display().to_string(), &read(&file)?)?;
            all.pods.extend(one.pods);
            all.objects.extend(one.objects);
            all.ignored.extend(one.ignored);
        }
        if all.pods.is_empty() && all.objects.is_empty() && all.ignored.is_empty() {
            return Err(SpecError::Empty {
                file: path.display().to_string(),
            });
        }
        all
    } else {
        parse_manifest(&path.display().to_string(), &read(path)?)?
    };
    let file = path.display().to_string();
    let plans = &mut manifest.pods;
    if plans
        .iter()
        .all(|p| p.runtime_class.is_none() || p.runtime_handler.is_some())
    {
        return Ok(manifest);
    }
    let dir = config_dir().join("runtimeclasses");
    let classes = configured_classes(&dir)?;
    for plan in plans.iter_mut() {
        resolve_class(plan, &classes);
        if let (Some(class), None) = (&plan.runtime_class, &plan.runtime_handler) {
            return Err(SpecError::RuntimeClassNotFound {
                file,
                pod: plan.name.clone(),
                class: class.clone(),
                dir: dir.display().to_string(),
            });
        }
    }
    Ok(manifest)
}

/// Whether `name` is a valid object name (a DNS subdomain, as the API server checks names);
/// the reason when not.
pub fn validate_name(name: &str) -> Result<(), &'static str> {
    validate::dns_subdomain(name)
}

/// Whether `handler` can name an OCI runtime as a RuntimeClass's `handler` does (a DNS label:
/// `crun`, `runc`); the reason when not.
pub fn validate_handler(handler: &str) -> Result<(), &'static str> {
    validate::dns_label(handler)
}

/// The registry credentials (docker config JSON, `{"auths": {...}}`) of a Secret of type
/// `kubernetes.io/dockerconfigjson` or `dockercfg`, as a manifest's or the object store's
/// Secret holds them; `None` for another type or unreadable credentials.
pub fn registry_credentials(secret: &serde_json::Value) -> Option<serde_json::Value> {
    validate::is_pull_secret(secret)
        .then(|| validate::pull_secret(secret).ok().map(|(_, config)| config))
        .flatten()
}

/// The pod a workload's controller makes from the workload's template: named `name`, with
/// `labels` added to the template's (`pod-template-hash`) and `owner` as its controller
/// reference; validated as any Pod, its `runtimeClassName` resolved as [`load`] resolves one.
pub fn template_plan(
    workload: &serde_json::Value,
    name: &str,
    labels: &[(&str, &str)],
    owner: serde_json::Value,
) -> Result<PodPlan, SpecError> {
    let mut workload = workload.clone();
    let template_labels = workload
        .pointer_mut("/spec/template/metadata")
        .and_then(serde_json::Value::as_object_mut)
        .map(|meta| {
            meta.entry("labels")
                .or_insert_with(|| serde_json::json!({}))
        });
    if let Some(map) = template_labels.and_then(serde_json::Value::as_object_mut) {
        for (k, v) in labels {
            map.insert((*k).to_owned(), (*v).into());
        }
    }
    let what = format!(
        "{} {:?}",
        workload["kind"].as_str().unwrap_or("workload"),
        workload["metadata"]["name"].as_str().unwrap_or("")
    );
    let mut plan =
        workloads::template_pod(&workload, "/spec/template", name).map_err(|problems| {
            SpecError::Invalid {
                file: what.clone(),
                problems,
            }
        })?;
    plan.manifest["metadata"]["ownerReferences"] = serde_json::json!([owner]);
    if let (Some(class), None) = (plan.runtime_class.clone(), &plan.runtime_handler) {
        let dir = config_dir().join("runtimeclasses");
        resolve_class(&mut plan, &configured_classes(&dir)?);
        if plan.runtime_handler.is_none() {
            return Err(SpecError::RuntimeClassNotFound {
                file: what,
                pod: name.to_owned(),
                class,
                dir: dir.display().to_string(),
            });
        }
    }
    Ok(plan)
}

/// The manifests of a directory: its `*.yaml`, `*.yml` and `*.json` files, by name.
fn manifest_files(dir: &std::path::Path) -> std::io::Result<Vec<PathBuf>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
        })
        .collect();
    paths.sort();
    Ok(paths)
}

/// The RuntimeClasses in the `*.yaml`, `*.yml` and `*.json` files of `dir` (none when it does
/// not exist): podkit's configured runtimes, as a cluster keeps RuntimeClass objects.
fn configured_classes(dir: &std::path::Path) -> Result<BTreeMap<String, RuntimeClass>, SpecError> {
    let mut classes = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(classes);
    };
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
        })
        .collect();
    paths.sort();
    for path in paths {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|source| SpecError::Read {
            path: path.clone(),
            source,
        })?;
        let mut problems = Vec::new();
        for (index, raw) in documents(&file, &text)?.into_iter().enumerate() {
            let found = if validate::is_runtime_class(&raw) {
                validate::runtime_class(&raw).map(|(name, class)| {
                    classes.insert(name, class);
                })
            } else {
                Err(vec![
                    "kind: only RuntimeClasses belong in this directory".to_owned(),
                ])
            };
            if let Err(found) = found {
                let prefix = format!("document {}: ", index + 1);
                problems.extend(found.into_iter().map(|p| format!("{prefix}{p}")));
            }
        }
        if !problems.is_empty() {
            return Err(SpecError::Invalid { file, problems });
        }
    }
    Ok(classes)
}
