//! From a parsed YAML document to a [`PodPlan`], collecting every problem with its field path.
//!
//! Each object's keys are sorted into three lists: honoured (read below), ignored (they mean
//! nothing on one host) and everything else, which is refused. A field that a later Kubernetes
//! version adds is therefore refused until podkit decides what it means, never dropped silently.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar as K8sEnvVar, HTTPGetAction, LifecycleHandler, Pod,
    Probe as K8sProbe, Volume as K8sVolume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use super::{
    DEFAULT_TERMINATION_MESSAGE_PATH, Dns, DownwardFile, DownwardValue, EnvFrom, EnvValue, EnvVar,
    HOST_PORTS_ANNOTATION, HOST_PROCESS_ANNOTATION, Handler, HostPathType, HostPort, HostSecurity,
    ImageRun, KeyItem, KeyRef, Member, Mount, NETWORK_ANNOTATION, ObjectKind,
    PROXY_PROTOCOL_ANNOTATION, PodPlan, Probe, Projection, ProxyProtocol, PullPolicy, PullSecrets,
    Qos, ResourceRef, Resources, RestartPolicy, Runs, Seccomp, Stdio, TerminationMessage, Volume,
    VolumeSource, quantity::Quantity, resources::huge_page_size,
};

/// The `fieldRef.fieldPath`s podkit fills in (and one label or annotation,
/// `metadata.labels['key']`), as kubelet's `podFieldSelectorRuntimeValue` does.
pub(crate) const FIELD_REFS: [&str; 11] = [
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "metadata.labels",
    "metadata.annotations",
    "status.podIP",
    "status.podIPs",
    "status.hostIP",
    "status.hostIPs",
    "spec.nodeName",
    "spec.serviceAccountName",
];

/// Whether `path` names one label or annotation: `metadata.labels['app']`.
fn one_label_or_annotation(path: &str) -> bool {
    ["metadata.labels", "metadata.annotations"]
        .iter()
        .any(|prefix| {
            path.strip_prefix(prefix)
                .and_then(|rest| rest.strip_prefix("['"))
                .and_then(|rest| rest.strip_suffix("']"))
                .is_some_and(|key| !key.is_empty())
        })
}

const METADATA_HONOURED: &[&str] = &["name", "namespace", "uid", "labels", "annotations"];
const METADATA_IGNORED: &[&str] = &[
    "creationTimestamp",
    "resourceVersion",
    "generation",
    "managedFields",
    "ownerReferences",
    "finalizers",
    "selfLink",
];

const SPEC_HONOURED: &[&str] = &[
    "containers",
    "initContainers",
    "volumes",
    "restartPolicy",
    "terminationGracePeriodSeconds",
    "activeDeadlineSeconds",
    "shareProcessNamespace",
    "hostname",
    "subdomain",
    "securityContext",
    "nodeName",
    "runtimeClassName",
    "hostAliases",
    "dnsPolicy",
    "dnsConfig",
    "imagePullSecrets",
    "hostNetwork",
    "hostPID",
    "hostIPC",
    "schedulingGates",
];
const SPEC_IGNORED: &[&str] = &[
    "affinity",
    "automountServiceAccountToken",
    "enableServiceLinks",
    "nodeSelector",
    "os",
    "preemptionPolicy",
    "priority",
    "priorityClassName",
    "schedulerName",
    "serviceAccount",
    "serviceAccountName",
    "tolerations",
    "topologySpreadConstraints",
];

const CONTAINER_HONOURED: &[&str] = &[
    "name",
    "image",
    "command",
    "args",
    "env",
    "envFrom",
    "workingDir",
    "volumeMounts",
    "ports",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "lifecycle",
    "securityContext",
    "restartPolicy",
    "imagePullPolicy",
    "terminationMessagePath",
    "terminationMessagePolicy",
    "resources",
    "stdin",
    "stdinOnce",
    "tty",
];
const CONTAINER_IGNORED: &[&str] = &["resizePolicy"];

/// Security settings podkit applies: to the pod (defaults) and to a container. `appArmorProfile`
/// is checked on its own (see [`Validator::app_armor`]).
const SECURITY_HONOURED: &[&str] = &["runAsUser", "runAsGroup", "runAsNonRoot", "appArmorProfile"];
/// A host process's, beyond [`SECURITY_HONOURED`]: the supervisor applies them between fork and
/// exec (the capability bounding set, no_new_privs).
const SECURITY_HOST: &[&str] = &["capabilities", "allowPrivilegeEscalation"];
/// The pod's, beyond [`SECURITY_HONOURED`]: for image containers only.
const POD_SECURITY_IMAGE: &[&str] = &[
    "supplementalGroups",
    "seccompProfile",
    "fsGroup",
    "fsGroupChangePolicy",
];
/// A container's, beyond [`SECURITY_HONOURED`]: the OCI runtime applies them to an image
/// container; a host process refuses them unless set to their defaults.
const SECURITY_IMAGE: &[&str] = &[
    "seccompProfile",
    "procMount",
    "capabilities",
    "privileged",
    "readOnlyRootFilesystem",
    "allowPrivilegeEscalation",
];

const PROBE_HONOURED: &[&str] = &[
    "exec",
    "grpc",
    "httpGet",
    "tcpSocket",
    "initialDelaySeconds",
    "periodSeconds",
    "timeoutSeconds",
    "successThreshold",
    "failureThreshold",
    "terminationGracePeriodSeconds",
];

/// The pod's securityContext, the defaults of its containers'.
struct PodSecurity {
    run_as_user: Option<i64>,
    run_as_group: Option<i64>,
    run_as_non_root: Option<bool>,
    supplemental_groups: Vec<u32>,
    /// `supplementalGroupsPolicy: Strict`: no groups from the image's /etc/group.
    strict_groups: bool,
    seccomp: Option<Seccomp>,
    /// `fsGroup`: the volumes' group, and a supplementary group of every container.
    fs_group: Option<u32>,
}

/// The checks every object other than a Pod gets: its `apiVersion`, its keys (`fields` beyond
/// apiVersion, kind and metadata honoured, `ignored` listed), its metadata and its name. The
/// validator (with what it found) and the name.
pub(super) fn object(
    raw: &Value,
    api_version: &str,
    what: &str,
    fields: &[&str],
    ignored: &[&str],
) -> (Validator, String) {
    let mut v = Validator::default();
    match raw.get("apiVersion").and_then(Value::as_str) {
        Some(version) if version == api_version => {}
        Some(other) => v.bad(
            "apiVersion",
            format!("{other:?} is not supported for {what}: use {api_version:?}"),
        ),
        None => v.bad("apiVersion", format!("required: {api_version:?}")),
    }
    let honoured = [&["apiVersion", "kind", "metadata"][..], fields].concat();
    v.keys(raw, "", &honoured, ignored);
    v.keys(
        raw.get("metadata").unwrap_or(&Value::Null),
        "metadata",
        METADATA_HONOURED,
        METADATA_IGNORED,
    );
    nul_bytes(raw, "", &mut v.problems);
    let name = raw
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if let Err(why) = dns_subdomain(&name) {
        v.bad("metadata.name", format!("{name:?} {why}"));
    }
    (v, name)
}

/// Whether `raw` is a Secret of registry credentials (for `imagePullSecrets`).
pub(super) fn is_pull_secret(raw: &Value) -> bool {
    raw.get("kind").and_then(Value::as_str) == Some("Secret")
        && matches!(
            raw.get("type").and_then(Value::as_str),
            Some("kubernetes.io/dockerconfigjson" | "kubernetes.io/dockercfg")
        )
}

/// A v1 Secret holding registry credentials for `imagePullSecrets`: its name and its docker
/// config JSON (`{"auths": {...}}`; a legacy `kubernetes.io/dockercfg` one is wrapped so).
pub(super) fn pull_secret(raw: &Value) -> Result<(String, Value), Vec<String>> {
    let (mut v, name) = object(
        raw,
        "v1",
        "a Secret",
        &["type", "data", "stringData"],
        &["immutable"],
    );
    let (key, legacy) = match raw.get("type").and_then(Value::as_str) {
        Some("kubernetes.io/dockerconfigjson") => (".dockerconfigjson", false),
        Some("kubernetes.io/dockercfg") => (".dockercfg", true),
        other => {
            v.bad(
                "type",
                format!(
                    "{}: podkit reads Secrets in a manifest only as imagePullSecrets so far \
                     (kubernetes.io/dockerconfigjson or kubernetes.io/dockercfg)",
                    other.map_or("none".to_owned(), |t| format!("{t:?}"))
                ),
            );
            return Err(v.problems);
        }
    };
    // stringData wins over data for the same key, as the API server merges them.
    let text = match (
        raw.pointer(&format!("/stringData/{key}"))
            .and_then(Value::as_str),
        raw.pointer(&format!("/data/{key}")).and_then(Value::as_str),
    ) {
        (Some(text), _) => Some(text.to_owned()),
        (None, Some(encoded)) => {
            use base64::Engine as _;
            match base64::engine::general_purpose::STANDARD.decode(encoded.trim()) {
                Ok(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
                Err(err) => {
                    v.bad(&format!("data[{key:?}]"), format!("not base64: {err}"));
                    None
                }
            }
        }
        (None, None) => {
            v.bad(
                &format!("data[{key:?}]"),
                "required for this type of Secret",
            );
            None
        }
    };
    let config = text.and_then(|text| match serde_json::from_str::<Value>(&text) {
        Ok(config) if config.is_object() => Some(config),
        Ok(_) | Err(_) => {
            v.bad(
                &format!("data[{key:?}]"),
                "is not a docker config JSON object",
            );
            None
        }
    });
    if !v.problems.is_empty() {
        return Err(v.problems);
    }
    let config = config.unwrap_or_default();
    let config = if legacy {
        serde_json::json!({ "auths": config })
    } else {
        config
    };
    Ok((name, config))
}

/// Whether `raw` is a RuntimeClass document (of any apiVersion: [`runtime_class`] checks it).
pub(super) fn is_runtime_class(raw: &Value) -> bool {
    raw.get("kind").and_then(Value::as_str) == Some("RuntimeClass")
}

/// A `node.k8s.io/v1` RuntimeClass: its name and handler.
pub(super) fn runtime_class(raw: &Value) -> Result<(String, super::RuntimeClass), Vec<String>> {
    let (mut v, name) = object(
        raw,
        "node.k8s.io/v1",
        "a RuntimeClass",
        &["handler"],
        &["overhead", "scheduling"],
    );
    let handler = raw
        .get("handler")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if handler.is_empty() {
        v.bad(
            "handler",
            "required: the OCI runtime that runs the pods (runc, crun, runsc, youki, ...)",
        );
    } else if let Err(why) = dns_label(&handler) {
        v.bad("handler", format!("{handler:?} {why}"));
    }
    if !v.problems.is_empty() {
        return Err(v.problems);
    }
    let ignored = std::mem::take(&mut v.ignored);
    Ok((name, super::RuntimeClass { handler, ignored }))
}

pub(super) fn document(raw: Value) -> Result<PodPlan, Vec<String>> {
    let mut v = Validator::default();
    match raw.get("apiVersion").and_then(Value::as_str) {
        Some("v1") => {}
        Some(other) => v.bad(
            "apiVersion",
            format!("{other:?} is not supported: use \"v1\""),
        ),
        None => v.bad("apiVersion", "required: \"v1\""),
    }
    match raw.get("kind").and_then(Value::as_str) {
        Some("Pod") => {}
        Some(other) => v.bad("kind", format!("{other:?}: not a Pod")),
        None => v.bad("kind", "required: \"Pod\""),
    }
    if !v.problems.is_empty() {
        return Err(v.problems);
    }
    let pod: Pod = serde_path_to_error::deserialize(&raw).map_err(|err| {
        let path = err.path().to_string();
        vec![format!("{path}: {}", err.inner())]
    })?;
    // A key the typed Pod dropped is one it does not know: most often a typo.
    let typed = serde_json::to_value(&pod).unwrap_or(Value::Null);
    unknown_fields(&raw, &typed, "", &mut v.problems);
    nul_bytes(&raw, "", &mut v.problems);
    let plan = v.pod(pod);
    if v.problems.is_empty() {
        Ok(plan)
    } else {
        Err(v.problems)
    }
}

#[derive(Default)]
pub(super) struct Validator {
    pub(super) problems: Vec<String>,
    ignored: Vec<String>,
    warnings: Vec<String>,
    /// Volumes refused already: a mount of one is not refused again.
    refused_volumes: Vec<String>,
    /// Every container's name: what a `resourceFieldRef` may name.
    containers: Vec<String>,
    /// `hostNetwork`: a container port is the host's own, never relayed.
    host_network: bool,
}

impl Validator {
    pub(super) fn bad(&mut self, path: &str, what: impl std::fmt::Display) {
        self.problems.push(format!("{path}: {what}"));
    }

    /// Refuses `value` at `path` as the API server refuses a value outside an enum
    /// (`Unsupported value: "x": supported values: "a", "b"`).
    pub(super) fn unsupported(&mut self, path: &str, value: &str, allowed: &[&str]) {
        let supported: Vec<String> = allowed.iter().map(|a| format!("{a:?}")).collect();
        self.bad(
            path,
            format!(
                "Unsupported value: {value:?}: supported values: {}",
                supported.join(", ")
            ),
        );
    }

    /// Sorts the keys of `object` (at `path`) into honoured, ignored and refused.
    pub(super) fn keys(&mut self, object: &Value, path: &str, honoured: &[&str], ignored: &[&str]) {
        let Some(map) = object.as_object() else {
            return;
        };
        for (key, value) in map {
            let field = join(path, key);
            if honoured.contains(&key.as_str()) || asks_for_nothing(key, value) {
            } else if ignored.contains(&key.as_str()) {
                self.ignored.push(field);
            } else {
                self.bad(&field, "not supported by podkit");
            }
        }
    }

    fn pod(&mut self, pod: Pod) -> PodPlan {
        let value = serde_json::to_value(&pod).unwrap_or(Value::Null);
        let empty = Value::Null;
        self.keys(
            &value["metadata"],
            "metadata",
            METADATA_HONOURED,
            METADATA_IGNORED,
        );
        self.keys(&value["spec"], "spec", SPEC_HONOURED, SPEC_IGNORED);
        let pod_security_keys = [
            SECURITY_HONOURED,
            POD_SECURITY_IMAGE,
            &["sysctls", "supplementalGroupsPolicy"],
        ]
        .concat();
        // Windows-only settings kubelet on Linux leaves alone.
        self.keys(
            value["spec"].get("securityContext").unwrap_or(&empty),
            "spec.securityContext",
            &pod_security_keys,
            &["windowsOptions"],
        );

        let name = pod.metadata.name.clone().unwrap_or_default();
        if name.is_empty() {
            let hint = if pod.metadata.generate_name.is_some() {
                " (generateName is not supported: give the pod a name)"
            } else {
                ""
            };
            self.bad("metadata.name", format!("required{hint}"));
        } else if let Err(why) = dns_subdomain(&name) {
            self.bad("metadata.name", format!("{name:?} {why}"));
        }
        let namespace = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());

        let Some(spec) = pod.spec.clone() else {
            self.bad("spec", "required");
            return self.plan(pod, name, namespace);
        };

        let restart_policy = match spec.restart_policy.as_deref() {
            None | Some("Always") => RestartPolicy::Always,
            Some("OnFailure") => RestartPolicy::OnFailure,
            Some("Never") => RestartPolicy::Never,
            Some(other) => {
                self.bad(
                    "spec.restartPolicy",
                    format!("{other:?}: must be Always, OnFailure or Never"),
                );
                RestartPolicy::Always
            }
        };
        let grace = spec.termination_grace_period_seconds.unwrap_or(30);
        if grace < 0 {
            self.bad(
                "spec.terminationGracePeriodSeconds",
                format!("{grace}: must be >= 0"),
            );
        }
        let deadline = spec.active_deadline_seconds;
        if let Some(d) = deadline.filter(|d| *d <= 0) {
            self.bad("spec.activeDeadlineSeconds", format!("{d}: must be > 0"));
        }
        let hostname = match &spec.hostname {
            Some(h) => {
                if let Err(why) = dns_label(h) {
                    self.bad("spec.hostname", format!("{h:?} {why}"));
                }
                h.clone()
            }
            None => kubelet_hostname(&name),
        };
        if let Some(sub) = spec.subdomain.as_deref().filter(|s| !s.is_empty())
            && let Err(why) = dns_label(sub)
        {
            self.bad("spec.subdomain", format!("{sub:?} {why}"));
        }

        self.containers = spec
            .init_containers
            .iter()
            .flatten()
            .chain(&spec.containers)
            .map(|c| c.name.clone())
            .collect();
        let volumes: Vec<Volume> = spec
            .volumes
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, vol)| self.volume(vol, &format!("spec.volumes[{i}]")))
            .collect();
        let mut seen = Vec::new();
        for (i, vol) in volumes.iter().enumerate() {
            if seen.contains(&&vol.name) {
                self.bad(
                    &format!("spec.volumes[{i}].name"),
                    format!("duplicate name {:?}", vol.name),
                );
            }
            seen.push(&vol.name);
        }

        let pod_security = spec.security_context.clone().unwrap_or_default();
        let supplemental_groups: Vec<u32> = pod_security
            .supplemental_groups
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, g)| {
                self.id(
                    Some(*g),
                    &format!("spec.securityContext.supplementalGroups[{i}]"),
                )
            })
            .collect();
        let seccomp = pod_security
            .seccomp_profile
            .as_ref()
            .map(|p| self.seccomp(p, "spec.securityContext.seccompProfile"));
        let fs_group = self.id(pod_security.fs_group, "spec.securityContext.fsGroup");
        if let Some(policy) = pod_security.fs_group_change_policy.as_deref()
            && !matches!(policy, "Always" | "OnRootMismatch")
        {
            self.bad(
                "spec.securityContext.fsGroupChangePolicy",
                format!("{policy:?}: must be Always or OnRootMismatch"),
            );
        }
        let host_network = spec.host_network == Some(true);
        let host_ipc = spec.host_ipc == Some(true);
        let host_pid = spec.host_pid == Some(true);
        self.host_network = host_network;
        if host_pid && spec.share_process_namespace == Some(true) {
            self.bad(
                "spec.shareProcessNamespace",
                "may not be true together with hostPID",
            );
        }
        let mut sysctls = self.sysctls(pod_security.sysctls.as_deref().unwrap_or_default());
        // kubelet refuses a pod whose sysctls would be set in a namespace it shares with the
        // host: they would change the host's.
        sysctls.retain(|(name, _)| {
            let (shared, field) = if name.starts_with("net.") {
                (host_network, "hostNetwork")
            } else {
                (host_ipc, "hostIPC")
            };
            if shared {
                self.bad(
                    "spec.securityContext.sysctls",
                    format!("{name:?} is not allowed with {field}: it would change the host's"),
                );
            }
            !shared
        });
        let strict_groups = match pod_security.supplemental_groups_policy.as_deref() {
            None | Some("Merge") => false,
            Some("Strict") => true,
            Some(other) => {
                self.bad(
                    "spec.securityContext.supplementalGroupsPolicy",
                    format!("{other:?}: must be Merge or Strict"),
                );
                false
            }
        };
        let defaults = PodSecurity {
            run_as_user: pod_security.run_as_user,
            run_as_group: pod_security.run_as_group,
            run_as_non_root: pod_security.run_as_non_root,
            supplemental_groups,
            strict_groups,
            seccomp,
            fs_group,
        };
        let all_names: Vec<&str> = spec
            .init_containers
            .iter()
            .flatten()
            .chain(&spec.containers)
            .map(|c| c.name.as_str())
            .collect();
        let host = self.host_process(pod.metadata.annotations.as_ref(), &all_names);
        let pod_network = self.pod_network(pod.metadata.annotations.as_ref(), host_network);
        self.app_armor(&pod, &all_names);

        if spec.containers.is_empty() {
            self.bad("spec.containers", "at least one container is required");
        }
        let mut names: Vec<String> = Vec::new();
        let mut members = |v: &mut Self, list: &[Container], field: &str, init: bool| {
            list.iter()
                .enumerate()
                .map(|(i, c)| {
                    let path = format!("spec.{field}[{i}]");
                    if names.contains(&c.name) {
                        v.bad(
                            &format!("{path}.name"),
                            format!("duplicate name {:?}", c.name),
                        );
                    }
                    names.push(c.name.clone());
                    let runs_on_host = host.contains(&c.name);
                    v.container(c, &path, init, &volumes, &defaults, runs_on_host)
                })
                .collect::<Vec<_>>()
        };
        let init_containers = members(
            self,
            spec.init_containers.as_deref().unwrap_or_default(),
            "initContainers",
            true,
        );
        let mut containers = members(self, &spec.containers, "containers", false);
        let mut init_containers = init_containers;
        let mut volumes = volumes;
        self.huge_page_volumes(&mut volumes, &containers, &init_containers);
        let host_port_hook;
        {
            let mut all: Vec<&mut Member> = init_containers
                .iter_mut()
                .chain(containers.iter_mut())
                .collect();
            let (nat, hook) = self.host_ports_mode(pod.metadata.annotations.as_ref());
            let nat = pod_network && nat;
            host_port_hook = nat && hook;
            self.proxy_protocol(pod.metadata.annotations.as_ref(), &mut all, nat);
        }

        let mut seen_ports = Vec::new();
        for (member, port) in init_containers
            .iter()
            .chain(&containers)
            .flat_map(|m| m.host_ports.iter().map(move |p| (m, p)))
        {
            let key = (port.host_ip, port.host_port, port.udp);
            if seen_ports.contains(&key) {
                self.bad(
                    &format!("{}.ports", member.path),
                    format!(
                        "hostPort {} ({}) is published twice in the pod",
                        port.host_port,
                        if port.udp { "UDP" } else { "TCP" }
                    ),
                );
            }
            seen_ports.push(key);
        }
        let mut plan = self.plan(pod, name, namespace);
        // The host's UTS namespace comes with its network, and so its hostname.
        plan.hostname = if host_network {
            if spec.hostname.is_some() {
                plan.ignored
                    .push("spec.hostname (hostNetwork: the pod has the host's hostname)".into());
            }
            nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or(hostname)
        } else {
            hostname
        };
        plan.host_network = host_network;
        plan.pod_network = pod_network;
        plan.host_port_hook = host_port_hook;
        plan.host_ipc = host_ipc;
        plan.host_pid = host_pid;
        plan.share_process_namespace = spec.share_process_namespace.unwrap_or(false);
        plan.restart_policy = restart_policy;
        plan.termination_grace_period = Duration::from_secs(grace.max(0) as u64);
        plan.active_deadline = deadline
            .filter(|d| *d > 0)
            .map(|d| Duration::from_secs(d as u64));
        let images = init_containers
            .iter()
            .chain(&containers)
            .any(|m| matches!(m.runs, Runs::Image(_)));
        plan.runtime_class = self.runtime_class_name(&spec, images);
        plan.host_aliases = self.host_aliases(&spec, images);
        plan.scheduling_gates = self.scheduling_gates(&spec);
        plan.dns = self.dns(&spec, images);
        plan.init_containers = init_containers;
        plan.containers = containers;
        plan.volumes = volumes;
        plan.fs_group = defaults.fs_group;
        plan.pull_secret_names = self.pull_secret_names(&spec, images);
        plan.sysctls = sysctls;
        plan.qos = Qos::of(
            &plan
                .init_containers
                .iter()
                .chain(&plan.containers)
                .map(|m| m.resources)
                .collect::<Vec<_>>(),
        );
        plan
    }

    /// The pod's `sysctls`: namespaced ones only (they are set in the pod's network and IPC
    /// namespaces, for every container, before the first starts). One outside kubelet's safe
    /// set is accepted with a warning: a cluster's kubelet refuses the pod unless its
    /// `--allowed-unsafe-sysctls` names it.
    fn sysctls(&mut self, list: &[k8s_openapi::api::core::v1::Sysctl]) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for (i, sysctl) in list.iter().enumerate() {
            let path = format!("spec.securityContext.sysctls[{i}]");
            // kubelet takes `net/ipv4/ip_forward` for `net.ipv4.ip_forward`.
            let name = if sysctl.name.contains('/') {
                sysctl
                    .name
                    .replace('.', "\0")
                    .replace('/', ".")
                    .replace('\0', "/")
            } else {
                sysctl.name.clone()
            };
            let well_formed = !name.is_empty()
                && name.len() <= 253
                && name.split('.').all(|part| {
                    let bytes = part.as_bytes();
                    !bytes.is_empty()
                        && bytes.iter().all(|b| {
                            b.is_ascii_lowercase()
                                || b.is_ascii_digit()
                                || matches!(b, b'-' | b'_' | b'/')
                        })
                        && bytes[0].is_ascii_alphanumeric()
                        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
                });
            if !well_formed {
                self.bad(
                    &format!("{path}.name"),
                    format!("{:?} is not a sysctl name", sysctl.name),
                );
                continue;
            }
            if !namespaced_sysctl(&name) {
                self.bad(
                    &format!("{path}.name"),
                    format!(
                        "{name:?} is not namespaced: setting it would change the host (only \
                         net.*, kernel.shm*, kernel.msg*, kernel.sem and fs.mqueue.* are the pod's)"
                    ),
                );
                continue;
            }
            if out.iter().any(|(n, _)| *n == name) {
                self.bad(&format!("{path}.name"), format!("{name:?} is set twice"));
                continue;
            }
            if sysctl.value.contains(['\n', '\0']) {
                self.bad(&format!("{path}.value"), "must be one line");
                continue;
            }
            if !SAFE_SYSCTLS.contains(&name.as_str()) {
                self.warnings.push(format!(
                    "{path}: {name} is not in kubelet's safe set: a cluster's kubelet refuses \
                     the pod unless its --allowed-unsafe-sysctls names it"
                ));
            }
            out.push((name, sysctl.value.clone()));
        }
        out
    }

    /// `runtimeClassName`: resolved to a handler by the caller, from the file's RuntimeClasses
    /// or podkit's configuration.
    fn runtime_class_name(
        &mut self,
        spec: &k8s_openapi::api::core::v1::PodSpec,
        images: bool,
    ) -> Option<String> {
        let name = spec.runtime_class_name.clone()?;
        if let Err(why) = dns_subdomain(&name) {
            self.bad("spec.runtimeClassName", format!("{name:?} {why}"));
        } else if !images {
            self.bad(
                "spec.runtimeClassName",
                format!(
                    "{name:?}: every container of the pod is a host process \
                     ({HOST_PROCESS_ANNOTATION}), which no OCI runtime runs"
                ),
            );
        }
        Some(name)
    }

    /// `imagePullSecrets`: the names (a pod of host processes pulls nothing: ignored there).
    fn pull_secret_names(
        &mut self,
        spec: &k8s_openapi::api::core::v1::PodSpec,
        images: bool,
    ) -> Vec<String> {
        let Some(list) = spec.image_pull_secrets.as_ref().filter(|l| !l.is_empty()) else {
            return Vec::new();
        };
        if !images {
            self.ignored.push("spec.imagePullSecrets".to_owned());
            return Vec::new();
        }
        let mut names = Vec::new();
        for (i, secret) in list.iter().enumerate() {
            match dns_subdomain(&secret.name) {
                Ok(()) => names.push(secret.name.clone()),
                Err(why) => self.bad(
                    &format!("spec.imagePullSecrets[{i}].name"),
                    format!("{:?} {why}", secret.name),
                ),
            }
        }
        names
    }

    /// `spec.schedulingGates`, checked as the API server checks them (`validateSchedulingGates`:
    /// qualified names, none twice) and with `nodeName`, which a gated pod must not have.
    fn scheduling_gates(&mut self, spec: &k8s_openapi::api::core::v1::PodSpec) -> Vec<String> {
        let gates = spec.scheduling_gates.as_deref().unwrap_or_default();
        let mut names: Vec<String> = Vec::new();
        for (i, gate) in gates.iter().enumerate() {
            let path = format!("spec.schedulingGates[{i}].name");
            if let Err(why) = qualified_name(&gate.name) {
                self.bad(&path, format!("{:?}: {why}", gate.name));
            } else if names.contains(&gate.name) {
                self.bad(&path, format!("Duplicate value: {:?}", gate.name));
            } else {
                names.push(gate.name.clone());
            }
        }
        if !gates.is_empty() && spec.node_name.as_deref().is_some_and(|n| !n.is_empty()) {
            self.bad(
                "spec.nodeName",
                "Forbidden: cannot be set until all schedulingGates have been removed",
            );
        }
        names
    }

    /// `hostAliases`: lines of the pod's `/etc/hosts`, which only image containers see (a host
    /// process reads the host's).
    fn host_aliases(
        &mut self,
        spec: &k8s_openapi::api::core::v1::PodSpec,
        images: bool,
    ) -> Vec<(String, Vec<String>)> {
        let Some(aliases) = spec.host_aliases.as_ref().filter(|a| !a.is_empty()) else {
            return Vec::new();
        };
        if !images {
            self.bad(
                "spec.hostAliases",
                "host processes read the host's /etc/hosts: hostAliases need an image container",
            );
            return Vec::new();
        }
        let mut out = Vec::new();
        for (i, alias) in aliases.iter().enumerate() {
            let path = format!("spec.hostAliases[{i}]");
            if alias.ip.parse::<std::net::IpAddr>().is_err() {
                self.bad(
                    &format!("{path}.ip"),
                    format!("{:?} is not an IP address", alias.ip),
                );
            }
            let names = alias.hostnames.clone().unwrap_or_default();
            for (j, name) in names.iter().enumerate() {
                if let Err(why) = dns_subdomain(name) {
                    self.bad(&format!("{path}.hostnames[{j}]"), format!("{name:?} {why}"));
                }
            }
            out.push((alias.ip.clone(), names));
        }
        out
    }

    /// `dnsPolicy` and `dnsConfig`, with the API server's limits (3 nameservers, 32 search
    /// domains of 2048 characters in all).
    fn dns(&mut self, spec: &k8s_openapi::api::core::v1::PodSpec, images: bool) -> Dns {
        let mut dns = Dns::default();
        match spec.dns_policy.as_deref() {
            None | Some("ClusterFirst" | "ClusterFirstWithHostNet" | "Default") => {}
            Some("None") => dns.policy_none = true,
            Some(other) => self.bad(
                "spec.dnsPolicy",
                format!(
                    "{other:?}: must be ClusterFirst, ClusterFirstWithHostNet, Default or None"
                ),
            ),
        }
        let Some(config) = &spec.dns_config else {
            if dns.policy_none {
                self.bad(
                    "spec.dnsConfig",
                    "required when dnsPolicy is None (with at least one nameserver)",
                );
            }
            return dns;
        };
        if !images {
            self.bad(
                "spec.dnsConfig",
                "host processes read the host's /etc/resolv.conf: dnsConfig needs an image \
                 container",
            );
            return dns;
        }
        dns.nameservers = config.nameservers.clone().unwrap_or_default();
        for (i, ns) in dns.nameservers.iter().enumerate() {
            if ns.parse::<std::net::IpAddr>().is_err() {
                self.bad(
                    &format!("spec.dnsConfig.nameservers[{i}]"),
                    format!("{ns:?} is not an IP address"),
                );
            }
        }
        if dns.nameservers.len() > 3 {
            self.bad(
                "spec.dnsConfig.nameservers",
                format!("{} given: at most 3", dns.nameservers.len()),
            );
        }
        if dns.policy_none && dns.nameservers.is_empty() {
            self.bad(
                "spec.dnsConfig.nameservers",
                "at least one is required when dnsPolicy is None",
            );
        }
        dns.searches = config.searches.clone().unwrap_or_default();
        for (i, search) in dns.searches.iter().enumerate() {
            if let Err(why) = dns_subdomain(search.trim_end_matches('.')) {
                self.bad(
                    &format!("spec.dnsConfig.searches[{i}]"),
                    format!("{search:?} {why}"),
                );
            }
        }
        let length: usize = dns.searches.iter().map(|s| s.len() + 1).sum();
        if dns.searches.len() > 32 || length > 2048 {
            self.bad(
                "spec.dnsConfig.searches",
                "at most 32 search domains of 2048 characters in all",
            );
        }
        for (i, option) in config.options.iter().flatten().enumerate() {
            match option.name.as_deref() {
                Some(name) if !name.is_empty() && !name.contains(char::is_whitespace) => {
                    dns.options.push((name.to_owned(), option.value.clone()))
                }
                _ => self.bad(
                    &format!("spec.dnsConfig.options[{i}].name"),
                    "required, without spaces",
                ),
            }
        }
        dns
    }

    fn plan(&mut self, pod: Pod, name: String, namespace: String) -> PodPlan {
        PodPlan {
            manifest: serde_json::to_value(&pod).unwrap_or(Value::Null),
            uid: pod.metadata.uid.clone(),
            hostname: kubelet_hostname(&name),
            name,
            namespace,
            share_process_namespace: false,
            host_network: false,
            pod_network: false,
            host_port_hook: false,
            pod_ips: Vec::new(),
            host_ipc: false,
            host_pid: false,
            restart_policy: RestartPolicy::Always,
            termination_grace_period: Duration::from_secs(30),
            active_deadline: None,
            init_containers: Vec::new(),
            containers: Vec::new(),
            volumes: Vec::new(),
            ignored: std::mem::take(&mut self.ignored),
            warnings: std::mem::take(&mut self.warnings),
            runtime_class: None,
            runtime_handler: None,
            fs_group: None,
            sysctls: Vec::new(),
            qos: Qos::default(),
            pull_secret_names: Vec::new(),
            pull_secrets: PullSecrets::default(),
            host_aliases: Vec::new(),
            scheduling_gates: Vec::new(),
            dns: Dns::default(),
        }
    }

    fn container(
        &mut self,
        c: &Container,
        path: &str,
        init: bool,
        volumes: &[Volume],
        pod_security: &PodSecurity,
        host: bool,
    ) -> Member {
        let (pod_user, pod_group, pod_non_root) = (
            pod_security.run_as_user,
            pod_security.run_as_group,
            pod_security.run_as_non_root,
        );
        let value = serde_json::to_value(c).unwrap_or(Value::Null);
        self.keys(&value, path, CONTAINER_HONOURED, CONTAINER_IGNORED);
        if let Err(why) = dns_label(&c.name) {
            self.bad(&format!("{path}.name"), format!("{:?} {why}", c.name));
        }

        let sidecar = match c.restart_policy.as_deref() {
            None => false,
            Some("Always") if init => true,
            Some(other) if init => {
                self.bad(
                    &format!("{path}.restartPolicy"),
                    format!("{other:?}: only \"Always\" (a native sidecar) is allowed"),
                );
                false
            }
            Some(_) => {
                self.bad(
                    &format!("{path}.restartPolicy"),
                    "only init containers may set it (native sidecars)",
                );
                false
            }
        };

        let mut argv = Vec::new();
        if host {
            argv = c.command.clone().unwrap_or_default();
            if argv.is_empty() {
                self.bad(
                    &format!("{path}.command"),
                    format!(
                        "required for a host-process container ({HOST_PROCESS_ANNOTATION}): \
                         it runs no image, so it has no entrypoint"
                    ),
                );
            }
            argv.extend(c.args.iter().flatten().cloned());
            // A host process pulls no image.
            if c.image_pull_policy.is_some() {
                self.ignored.push(format!("{path}.imagePullPolicy"));
            }
            if !pod_security.supplemental_groups.is_empty() {
                self.bad(
                    "spec.securityContext.supplementalGroups",
                    format!("not supported for host-process container {:?}", c.name),
                );
            }
            if pod_security.fs_group.is_some() {
                self.bad(
                    "spec.securityContext.fsGroup",
                    format!(
                        "not supported for host-process container {:?}: a host process gets no \
                         supplementary groups",
                        c.name
                    ),
                );
            }
            let own = c
                .security_context
                .as_ref()
                .and_then(|s| s.seccomp_profile.as_ref());
            if own.is_none()
                && pod_security
                    .seccomp
                    .as_ref()
                    .is_some_and(|s| *s != Seccomp::Unconfined)
            {
                self.bad(
                    "spec.securityContext.seccompProfile",
                    format!(
                        "not supported for host-process container {:?}: a host process runs \
                         without a seccomp filter (give it seccompProfile: {{type: Unconfined}})",
                        c.name
                    ),
                );
            }
        }

        let env = c
            .env
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, e)| self.env(e, &format!("{path}.env[{i}]"), &c.name))
            .collect();

        let env_from = c
            .env_from
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, e)| self.env_from(e, &format!("{path}.envFrom[{i}]")))
            .collect();

        let security = c.security_context.clone().unwrap_or_default();
        if let Some(sc) = value.get("securityContext") {
            let mut sc = sc.clone();
            let honoured = if host {
                // A field set to its default asks for nothing: accepted everywhere.
                if let Some(map) = sc.as_object_mut() {
                    map.retain(|key, value| !is_default_security(key, value));
                }
                [SECURITY_HONOURED, SECURITY_HOST].concat()
            } else {
                [SECURITY_HONOURED, SECURITY_IMAGE].concat()
            };
            self.keys(
                &sc,
                &format!("{path}.securityContext"),
                &honoured,
                &["windowsOptions"],
            );
        }
        let host_security = if host {
            let capabilities = security.capabilities.clone().unwrap_or_default();
            HostSecurity {
                add_capabilities: self.capability_names(capabilities.add, path, "add"),
                drop_capabilities: self.capability_names(capabilities.drop, path, "drop"),
                no_new_privileges: security.allow_privilege_escalation == Some(false),
            }
        } else {
            HostSecurity::default()
        };
        let user = security.run_as_user.or(pod_user);
        let group = security.run_as_group.or(pod_group);
        let run_as_user = self.id(user, &format!("{path}.securityContext.runAsUser"));
        let run_as_group = self.id(group, &format!("{path}.securityContext.runAsGroup"));
        let non_root = security.run_as_non_root.or(pod_non_root) == Some(true);
        // A host process runs as root unless told otherwise; an image's user is known only once
        // the image is (checked at start, as kubelet does).
        let root = if host {
            run_as_user.unwrap_or(0) == 0
        } else {
            run_as_user == Some(0)
        };
        if non_root && root {
            self.bad(
                &format!("{path}.securityContext.runAsNonRoot"),
                "true, but the container would run as root: set runAsUser to a non-zero uid",
            );
        }
        let runs = if host {
            Runs::Host
        } else {
            match self.image_run(c, path, &security, pod_security) {
                Some(run) => Runs::Image(ImageRun {
                    run_as_non_root: non_root && run_as_user.is_none(),
                    ..run
                }),
                None => Runs::Host,
            }
        };

        let working_dir = c.working_dir.as_ref().map(PathBuf::from);
        if let Some(dir) = working_dir.as_ref().filter(|d| !d.is_absolute()) {
            self.bad(
                &format!("{path}.workingDir"),
                format!("{dir:?} must be an absolute path"),
            );
        }

        let mounts = c
            .volume_mounts
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, m)| self.mount(m, &format!("{path}.volumeMounts[{i}]"), volumes, host))
            .collect();

        let ports = c.ports.clone().unwrap_or_default();
        let host_ports = ports
            .iter()
            .enumerate()
            .filter_map(|(i, port)| self.host_port(port, &format!("{path}.ports[{i}]")))
            .collect();

        let probe = |v: &mut Self, p: &Option<K8sProbe>, field: &str| {
            p.as_ref().and_then(|p| {
                v.probe(
                    p,
                    &format!("{path}.{field}"),
                    &ports,
                    field != "readinessProbe",
                )
            })
        };
        let startup_probe = probe(self, &c.startup_probe, "startupProbe");
        let liveness_probe = probe(self, &c.liveness_probe, "livenessProbe");
        let readiness_probe = probe(self, &c.readiness_probe, "readinessProbe");
        if init && !sidecar {
            for (p, field) in [
                (&c.startup_probe, "startupProbe"),
                (&c.liveness_probe, "livenessProbe"),
                (&c.readiness_probe, "readinessProbe"),
            ] {
                if p.is_some() {
                    self.bad(
                        &format!("{path}.{field}"),
                        "init containers (other than native sidecars) may not have probes",
                    );
                }
            }
        }

        let (mut post_start, mut pre_stop) = (None, None);
        if let Some(lifecycle) = &c.lifecycle {
            let lpath = format!("{path}.lifecycle");
            let lvalue = value.get("lifecycle").cloned().unwrap_or(Value::Null);
            self.keys(&lvalue, &lpath, &["postStart", "preStop"], &[]);
            post_start = lifecycle
                .post_start
                .as_ref()
                .and_then(|h| self.hook(h, &format!("{lpath}.postStart"), &ports));
            pre_stop = lifecycle
                .pre_stop
                .as_ref()
                .and_then(|h| self.hook(h, &format!("{lpath}.preStop"), &ports));
        }

        let termination_message = self.termination_message(c, path, host);
        let (resources, devices, hugepages) = self.resources(c, path, host);

        Member {
            name: c.name.clone(),
            image: c.image.clone(),
            termination_message,
            runs,
            path: path.to_owned(),
            sidecar,
            argv,
            env,
            working_dir,
            run_as_user,
            run_as_group,
            mounts,
            startup_probe,
            liveness_probe,
            readiness_probe,
            post_start,
            pre_stop,
            host_ports,
            resources,
            host_security,
            env_from,
            devices,
            stdio: Stdio {
                stdin: c.stdin.unwrap_or(false),
                stdin_once: c.stdin_once.unwrap_or(false),
                tty: c.tty.unwrap_or(false),
            },
            hugepages,
        }
    }

    /// The name of a ConfigMap or Secret a pod refers to: required, a DNS subdomain.
    fn object_name(&mut self, name: &str, path: &str) {
        if name.is_empty() {
            self.bad(path, "required");
        } else if let Err(why) = dns_subdomain(name) {
            self.bad(path, format!("{name:?} {why}"));
        }
    }

    /// One `envFrom` entry: exactly one of configMapRef and secretRef, a prefix without `=`.
    fn env_from(
        &mut self,
        e: &k8s_openapi::api::core::v1::EnvFromSource,
        path: &str,
    ) -> Option<EnvFrom> {
        let (kind, name, optional, field) = match (&e.config_map_ref, &e.secret_ref) {
            (Some(r), None) => (ObjectKind::ConfigMap, &r.name, r.optional, "configMapRef"),
            (None, Some(r)) => (ObjectKind::Secret, &r.name, r.optional, "secretRef"),
            (None, None) => {
                self.bad(path, "must specify one of: `configMapRef` or `secretRef`");
                return None;
            }
            (Some(_), Some(_)) => {
                self.bad(path, "may not have more than one field specified at a time");
                return None;
            }
        };
        self.object_name(name, &format!("{path}.{field}.name"));
        let prefix = e.prefix.clone().unwrap_or_default();
        if prefix.contains('=') || prefix.chars().any(|c| !c.is_ascii_graphic()) {
            self.bad(
                &format!("{path}.prefix"),
                format!("{prefix:?}: a valid environment variable prefix has printable ASCII characters other than '=' and space"),
            );
        }
        Some(EnvFrom {
            kind,
            name: name.clone(),
            prefix,
            optional: optional.unwrap_or(false),
        })
    }

    /// `securityContext.capabilities.add` or `.drop` (`field`) of the container at `path`,
    /// checked to be capability names; the runtime (or, for a host process, the supervisor)
    /// knows which exist.
    fn capability_names(
        &mut self,
        list: Option<Vec<String>>,
        path: &str,
        field: &str,
    ) -> Vec<String> {
        let list = list.unwrap_or_default();
        for (i, cap) in list.iter().enumerate() {
            // Case does not matter, as containerd upper-cases the names (`drop: [all]`).
            let upper = cap.to_ascii_uppercase();
            let name = upper.trim_start_matches("CAP_");
            let known = name == "ALL"
                || (!name.is_empty() && name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'));
            if !known {
                self.bad(
                    &format!("{path}.securityContext.capabilities.{field}[{i}]"),
                    format!("{cap:?} is not a capability name (NET_ADMIN, CHOWN, ALL, ...)"),
                );
            }
        }
        list
    }

    /// `resources`, read and checked as the API server does (`ValidateResourceRequirements`),
    /// requests defaulted from limits: cpu and memory, which the OCI runtime applies to an
    /// image container's cgroup. What podkit cannot honour is refused with its reason.
    /// `resources`: cpu and memory, and the extended resources (`vendor.com/class: N`) the host's
    /// CDI devices serve, as the API server checks them (`ValidateResourceRequirements`).
    fn resources(
        &mut self,
        c: &Container,
        path: &str,
        host: bool,
    ) -> (Resources, Vec<(String, u32)>, BTreeMap<u64, u64>) {
        let Some(requirements) = &c.resources else {
            return (Resources::default(), Vec::new(), BTreeMap::new());
        };
        let rpath = format!("{path}.resources");
        if requirements.claims.as_ref().is_some_and(|c| !c.is_empty()) {
            self.bad(
                &format!("{rpath}.claims"),
                "not supported by podkit: resource claims are allocated by a dynamic resource \
                 allocation driver of a cluster",
            );
        }
        // Extended resources: (in limits, name, count, as written).
        let mut extended: Vec<(bool, String, u32, String)> = Vec::new();
        // Huge pages: (in limits, name, bytes, as written).
        let mut huge: Vec<(bool, String, u64, String)> = Vec::new();
        // (cpu in millicores, memory in bytes) of `requests` or `limits`.
        let mut read = |kind: &str, map: Option<&BTreeMap<String, K8sQuantity>>| {
            let (mut cpu, mut memory) = (None, None);
            for (name, text) in map.into_iter().flatten() {
                let field = format!("{rpath}.{kind}.{name}");
                let text = &text.0;
                match name.as_str() {
                    "cpu" | "memory" | "ephemeral-storage" => {}
                    n if n.starts_with("hugepages-") => {
                        if let Some(bytes) = self.huge_pages(n, text, &field) {
                            huge.push((kind == "limits", n.to_owned(), bytes, text.clone()));
                        }
                        continue;
                    }
                    n if n.contains('/') => {
                        if let Some(count) = self.extended(n, text, &field) {
                            extended.push((kind == "limits", n.to_owned(), count, text.clone()));
                        }
                        continue;
                    }
                    _ => {
                        self.bad(
                            &field,
                            "must be a standard resource for containers (cpu, memory, \
                             ephemeral-storage, hugepages-<size>)",
                        );
                        continue;
                    }
                }
                let Some(quantity) = self.quantity(text, &field) else {
                    continue;
                };
                let value = match name.as_str() {
                    "cpu" => quantity.millis(),
                    "memory" => quantity.units(),
                    // kubelet evicts a pod over its ephemeral-storage limit; a request only
                    // places it on a node.
                    _ if kind == "limits" => {
                        self.bad(
                            &field,
                            "not supported by podkit: kubelet enforces it by evicting the pod, \
                             which podkit does not do",
                        );
                        continue;
                    }
                    _ => {
                        self.ignored.push(field);
                        continue;
                    }
                };
                let Some(value) = value else {
                    self.bad(&field, format!("{text:?} is too large"));
                    continue;
                };
                if name == "cpu" {
                    cpu = Some(value);
                } else {
                    memory = Some(value);
                }
            }
            (cpu, memory)
        };
        let (cpu_request, memory_request) = read("requests", requirements.requests.as_ref());
        let (cpu_limit, memory_limit) = read("limits", requirements.limits.as_ref());
        for (name, request, limit) in [
            ("cpu", cpu_request, cpu_limit),
            ("memory", memory_request, memory_limit),
        ] {
            if let (Some(request), Some(limit)) = (request, limit)
                && request > limit
            {
                let text = |map: &Option<BTreeMap<String, K8sQuantity>>| {
                    map.as_ref()
                        .and_then(|m| m.get(name))
                        .map(|q| q.0.clone())
                        .unwrap_or_default()
                };
                self.bad(
                    &format!("{rpath}.requests.{name}"),
                    format!(
                        "{:?} must be less than or equal to the {name} limit of {:?}",
                        text(&requirements.requests),
                        text(&requirements.limits)
                    ),
                );
            }
        }
        // Extended resources cannot be overcommitted: a request is its limit.
        let mut devices = Vec::new();
        for (in_limits, name, count, text) in &extended {
            let limit = extended
                .iter()
                .find(|(l, n, ..)| *l && n == name)
                .map(|(_, _, count, text)| (*count, text));
            match (in_limits, limit) {
                (true, _) => devices.push((name.clone(), *count)),
                (false, None) => self.bad(
                    &format!("{rpath}.limits"),
                    "Required value: Limit must be set for non overcommitable resources",
                ),
                (false, Some((limit, limit_text))) if limit != *count => self.bad(
                    &format!("{rpath}.requests.{name}"),
                    format!("{text:?} must be equal to {name} limit of {limit_text:?}"),
                ),
                (false, Some(_)) => {}
            }
        }
        // Huge pages cannot be overcommitted either; a limit alone is also the request.
        let mut hugepages = BTreeMap::new();
        for (in_limits, name, bytes, text) in &huge {
            let limit = huge
                .iter()
                .find(|(l, n, ..)| *l && n == name)
                .map(|(_, _, bytes, text)| (*bytes, text));
            match (in_limits, limit) {
                (true, _) => {
                    if let Some(size) = huge_page_size(name) {
                        hugepages.insert(size, *bytes);
                    }
                }
                (false, None) => self.bad(
                    &format!("{rpath}.limits"),
                    "Required value: Limit must be set for non overcommitable resources",
                ),
                (false, Some((limit, limit_text))) if limit != *bytes => self.bad(
                    &format!("{rpath}.requests.{name}"),
                    format!("{text:?} must be equal to {name} limit of {limit_text:?}"),
                ),
                (false, Some(_)) => {}
            }
        }
        let cpu_or_memory = [&requirements.requests, &requirements.limits]
            .into_iter()
            .flatten()
            .any(|m| m.contains_key("cpu") || m.contains_key("memory"));
        if !huge.is_empty() && !cpu_or_memory {
            self.bad(&rpath, "Forbidden: HugePages require cpu or memory");
        }
        if host && !devices.is_empty() {
            self.bad(
                &format!("{rpath}.limits"),
                format!(
                    "extended resources are not supported for host-process container {:?}: \
                     a host process already sees the host's /dev; podkit serves devices from \
                     the host's CDI specs to image containers only",
                    c.name
                ),
            );
        }
        let resources = Resources {
            cpu_request,
            cpu_limit,
            memory_request,
            memory_limit,
        }
        .defaulted();
        if host && !hugepages.is_empty() && cpu_limit.is_none() && memory_limit.is_none() {
            // The API server wants cpu or memory beside huge pages; a request only places the
            // pod on a node and weighs its cgroup, and podkit puts a host process in no cpu or
            // memory cgroup: listed as ignored, so the manifest runs unchanged.
            for (name, request) in [("cpu", cpu_request), ("memory", memory_request)] {
                if request.is_some() {
                    self.ignored.push(format!(
                        "{rpath}.requests.{name} (host-process container {:?}: no cpu or memory \
                         cgroup; its huge pages are limited)",
                        c.name
                    ));
                }
            }
        } else if host && resources != Resources::default() {
            self.bad(
                &rpath,
                format!(
                    "not supported for host-process container {:?}: podkit applies cpu and \
                     memory through the OCI runtime, to image containers only (huge pages \
                     with cpu or memory requests only are honoured)",
                    c.name
                ),
            );
        }
        (resources, devices, hugepages)
    }

    /// The page size of each HugePages emptyDir, from the pod's containers as kubelet finds it
    /// when it mounts the volume (`getPageSizeMountOption`): for `HugePages`, the one size the
    /// containers ask; for `HugePages-<size>`, a container must ask that size. Refused with
    /// kubelet's words otherwise (kubelet fails the mount; the pod never starts).
    fn huge_page_volumes(
        &mut self,
        volumes: &mut [Volume],
        containers: &[Member],
        init: &[Member],
    ) {
        let sizes: Vec<u64> = containers
            .iter()
            .chain(init)
            .flat_map(|m| m.hugepages.keys().copied())
            .collect();
        for (i, vol) in volumes.iter_mut().enumerate() {
            let VolumeSource::HugePages { page_size } = &mut vol.source else {
                continue;
            };
            let path = format!("spec.volumes[{i}].emptyDir.medium");
            let medium = if *page_size == 0 {
                "HugePages".to_owned()
            } else {
                format!(
                    "HugePages-{}",
                    super::resources::binary_quantity(*page_size)
                )
            };
            if *page_size == 0 {
                let mut distinct = sizes.clone();
                distinct.sort();
                distinct.dedup();
                match distinct.as_slice() {
                    [one] => *page_size = *one,
                    [] => {}
                    _ => {
                        self.bad(
                            &path,
                            format!(
                                "medium: {medium} can't be used if container requests multiple \
                                 huge page sizes"
                            ),
                        );
                        continue;
                    }
                }
            } else if !sizes.contains(page_size) {
                *page_size = 0;
            }
            if *page_size == 0 {
                self.bad(
                    &path,
                    format!(
                        "medium {medium}: hugePages storage requested, but there is no resource \
                         request for huge pages"
                    ),
                );
            }
        }
    }

    /// A resource quantity at `field`, which must parse and not be negative (the API server's
    /// `ValidateNonnegativeQuantity`).
    fn quantity(&mut self, text: &str, field: &str) -> Option<Quantity> {
        match Quantity::parse(text) {
            Ok(q) if q.is_negative() => {
                self.bad(
                    field,
                    format!("{text:?} must be greater than or equal to 0"),
                );
                None
            }
            Ok(q) => Some(q),
            Err(why) => {
                self.bad(field, format!("{text:?}: {why}"));
                None
            }
        }
    }

    /// A `hugepages-<size>` quantity (`validateResourceQuantityHugePageValue`): not negative and
    /// a whole number of pages of its size. Its bytes.
    fn huge_pages(&mut self, name: &str, text: &str, field: &str) -> Option<u64> {
        let quantity = self.quantity(text, field)?;
        let bytes = quantity.units();
        match (huge_page_size(name), bytes) {
            (Some(size), Some(bytes)) if bytes % size == 0 => Some(bytes),
            _ => {
                self.bad(
                    field,
                    format!("{text:?}: {text} is not positive integer multiple of {name}"),
                );
                None
            }
        }
    }

    /// An extended resource's name and quantity (`validateContainerResourceName`,
    /// `validateResourceQuantityValue`): a qualified name with a domain prefix outside
    /// `kubernetes.io`, the CDI kind of the devices that serve it, and a whole number.
    fn extended(&mut self, name: &str, text: &str, field: &str) -> Option<u32> {
        if let Err(why) = qualified_name(name) {
            self.bad(field, format!("{name:?}: {why}"));
            return None;
        }
        let domain = name.split_once('/').map_or("", |(d, _)| d);
        if domain == "kubernetes.io" || domain.ends_with(".kubernetes.io") {
            self.bad(
                field,
                "must be a standard resource for containers (cpu, memory, ephemeral-storage, \
                 hugepages-<size>)",
            );
            return None;
        }
        if let Err(why) = crate::cdi::valid_kind(name) {
            self.bad(
                field,
                format!(
                    "not supported by podkit: the name is no CDI kind (vendor.com/class), so \
                     no device of the host's CDI specs can serve it: {why}"
                ),
            );
            return None;
        }
        let quantity = self.quantity(text, field)?;
        // `MilliValue() % 1000`, as the API server checks integer resources.
        match quantity.millis() {
            Some(m) if m % 1000 != 0 => {
                self.bad(field, format!("{text:?} must be an integer"));
                None
            }
            Some(m) => match u32::try_from(m / 1000) {
                Ok(count) => Some(count),
                Err(_) => {
                    self.bad(field, format!("{text:?} is more devices than a host has"));
                    None
                }
            },
            None => {
                self.bad(field, format!("{text:?} is too large"));
                None
            }
        }
    }

    /// `terminationMessagePath` and `terminationMessagePolicy`. A host process sees the host's
    /// filesystem, where podkit cannot put a file of the pod's at a path (it would write the
    /// host's `/dev`): only the default path is accepted there, unmounted, and its policy
    /// `FallbackToLogsOnError` still takes the message from the logs.
    fn termination_message(&mut self, c: &Container, path: &str, host: bool) -> TerminationMessage {
        let from_logs = match c.termination_message_policy.as_deref() {
            None | Some("File") => false,
            Some("FallbackToLogsOnError") => true,
            Some(other) => {
                self.bad(
                    &format!("{path}.terminationMessagePolicy"),
                    format!("{other:?}: must be File or FallbackToLogsOnError"),
                );
                false
            }
        };
        let file = PathBuf::from(
            c.termination_message_path
                .as_deref()
                .unwrap_or(DEFAULT_TERMINATION_MESSAGE_PATH),
        );
        let field = format!("{path}.terminationMessagePath");
        if !file.is_absolute() || file.components().any(|c| c == Component::ParentDir) {
            self.bad(
                &field,
                format!("{file:?} must be an absolute path without '..'"),
            );
        } else if file.as_os_str().len() > 4096 {
            self.bad(&field, "must be at most 4096 characters");
        } else if host && file != Path::new(DEFAULT_TERMINATION_MESSAGE_PATH) {
            self.bad(
                &field,
                format!(
                    "{file:?}: a host process sees the host's filesystem, where podkit puts no \
                     file of the pod's (run the container from its image, or use \
                     terminationMessagePolicy: FallbackToLogsOnError)"
                ),
            );
        }
        TerminationMessage {
            file: (!host).then_some(file),
            from_logs,
        }
    }

    /// A port with a `hostPort`, checked; `None` for one without (informational only).
    fn host_port(&mut self, port: &ContainerPort, path: &str) -> Option<HostPort> {
        let udp = match port.protocol.as_deref() {
            None | Some("TCP") => false,
            Some("UDP") => true,
            Some(other) => {
                self.bad(
                    &format!("{path}.protocol"),
                    format!("{other:?}: podkit supports TCP and UDP"),
                );
                return None;
            }
        };
        let container_port = match u16::try_from(port.container_port) {
            Ok(p) if p > 0 => p,
            _ => {
                self.bad(
                    &format!("{path}.containerPort"),
                    format!("{}: must be between 1 and 65535", port.container_port),
                );
                return None;
            }
        };
        // With the host's network the app's port is the host's: a hostPort can only name it
        // again (the API server's rule), and nothing is published.
        if self.host_network {
            if port.host_port.is_some_and(|p| p != port.container_port) {
                self.bad(
                    &format!("{path}.hostPort"),
                    "must match containerPort when hostNetwork is true",
                );
            }
            return None;
        }
        let host_port = match port.host_port {
            None => return None,
            Some(p) => match u16::try_from(p) {
                Ok(p) if p > 0 => p,
                _ => {
                    self.bad(
                        &format!("{path}.hostPort"),
                        format!("{p}: must be between 1 and 65535"),
                    );
                    return None;
                }
            },
        };
        let host_ip = match port.host_ip.as_deref().filter(|ip| !ip.is_empty()) {
            None => None,
            Some(ip) => match ip.parse() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    self.bad(
                        &format!("{path}.hostIP"),
                        format!("{ip:?} is not an IP address"),
                    );
                    return None;
                }
            },
        };
        Some(HostPort {
            host_port,
            container_port,
            udp,
            host_ip,
            proxy_protocol: None,
            relay: true,
        })
    }

    /// How the pod's hostPorts reach it, by the [`HOST_PORTS_ANNOTATION`], as (NAT to its IP,
    /// the connect hook for the host's clients too): unset, both; `nat`, the DNAT alone;
    /// `relay`, neither (the relay into its loopback).
    fn host_ports_mode(&mut self, annotations: Option<&BTreeMap<String, String>>) -> (bool, bool) {
        match annotations
            .and_then(|a| a.get(HOST_PORTS_ANNOTATION))
            .map(|v| v.trim())
        {
            None => (true, true),
            Some("nat") => (true, false),
            Some("relay") => (false, false),
            Some(other) => {
                self.bad(
                    &format!("metadata.annotations[{HOST_PORTS_ANNOTATION:?}]"),
                    format!(
                        "{other:?}: must be \"nat\" (DNAT to the pod's IP, without the connect \
                         hook that the default adds for the host's own clients) or \"relay\" \
                         (into the pod's loopback); leave it out for the default"
                    ),
                );
                (true, true)
            }
        }
    }

    /// Whether the pod gets an address of its own, by the [`NETWORK_ANNOTATION`]: `pod` or
    /// unset, yes, unless it is on the host's network; `none`, no.
    fn pod_network(
        &mut self,
        annotations: Option<&BTreeMap<String, String>>,
        host_network: bool,
    ) -> bool {
        let field = format!("metadata.annotations[{NETWORK_ANNOTATION:?}]");
        match annotations
            .and_then(|a| a.get(NETWORK_ANNOTATION))
            .map(|v| v.trim())
        {
            None | Some("pod") => !host_network,
            Some("none") => {
                if host_network {
                    self.bad(&field, "\"none\" contradicts hostNetwork: true");
                }
                false
            }
            Some(other) => {
                self.bad(
                    &field,
                    format!(
                        "{other:?}: must be \"pod\" (an IP of its own) or \"none\" (loopback only)"
                    ),
                );
                false
            }
        }
    }

    /// Applies the [`PROXY_PROTOCOL_ANNOTATION`] to the pod's TCP hostPorts, and warns of each
    /// one other hosts can reach whose app cannot tell them from the host itself.
    fn proxy_protocol(
        &mut self,
        annotations: Option<&BTreeMap<String, String>>,
        members: &mut [&mut Member],
        nat: bool,
    ) {
        let field = format!("metadata.annotations[{PROXY_PROTOCOL_ANNOTATION:?}]");
        let parse = |v: &str| match v.trim() {
            "v1" => Some(ProxyProtocol::V1),
            "v2" => Some(ProxyProtocol::V2),
            _ => None,
        };
        let mut every = None;
        let mut by_port: Vec<(u16, ProxyProtocol)> = Vec::new();
        if let Some(value) = annotations.and_then(|a| a.get(PROXY_PROTOCOL_ANNOTATION)) {
            if let Some(version) = parse(value) {
                every = Some(version);
            } else {
                for item in value.split(',').filter(|i| !i.trim().is_empty()) {
                    let parsed = item.split_once('=').and_then(|(port, version)| {
                        Some((port.trim().parse::<u16>().ok()?, parse(version)?))
                    });
                    match parsed {
                        Some(pair) => by_port.push(pair),
                        None => {
                            self.bad(
                                &field,
                                format!(
                                    "{item:?}: must be v1 or v2, or a list of HOSTPORT=v1|v2 \
                                     (\"8080=v2,8443=v1\")"
                                ),
                            );
                            return;
                        }
                    }
                }
            }
        }
        for (port, _) in &by_port {
            let published = members
                .iter()
                .flat_map(|m| &m.host_ports)
                .any(|p| p.host_port == *port && !p.udp);
            if !published {
                self.bad(&field, format!("{port}: no TCP hostPort {port} in the pod"));
            }
        }
        for member in members.iter_mut() {
            let path = member.path.clone();
            for port in member.host_ports.iter_mut() {
                if !port.udp {
                    port.proxy_protocol = every.or_else(|| {
                        by_port
                            .iter()
                            .find(|(p, _)| *p == port.host_port)
                            .map(|(_, v)| *v)
                    });
                }
                // NAT to the pod's IP (the app sees each client's address), unless the pod has
                // no IP, asks for the relay, wants a PROXY header (which only the relay
                // writes), or names an IPv6 host address (the NAT is IPv4 only).
                port.relay = !nat
                    || port.proxy_protocol.is_some()
                    || port.host_ip.is_some_and(|ip| ip.is_ipv6());
                let local_only = port.host_ip.is_some_and(|ip| ip.is_loopback());
                if port.relay && !port.udp && port.proxy_protocol.is_none() && !local_only {
                    self.warnings.push(format!(
                        "{path}: hostPort {} is open to other hosts, and podkit relays it: the \
                         app sees every client as 127.0.0.1, so an app that trusts localhost \
                         trusts them too. Set hostIP: 127.0.0.1, or have the app read the \
                         client's address from a PROXY protocol header (annotation {}: v1|v2)",
                        port.host_port, PROXY_PROTOCOL_ANNOTATION
                    ));
                }
            }
        }
    }

    fn id(&mut self, id: Option<i64>, path: &str) -> Option<u32> {
        let id = id?;
        match u32::try_from(id) {
            Ok(id) => Some(id),
            Err(_) => {
                self.bad(path, format!("{id}: must be between 0 and {}", u32::MAX));
                None
            }
        }
    }

    fn env(&mut self, e: &K8sEnvVar, path: &str, own: &str) -> Option<EnvVar> {
        if e.name.is_empty() || e.name.contains('=') {
            self.bad(
                &format!("{path}.name"),
                format!("{:?} is not a valid variable name", e.name),
            );
            return None;
        }
        let value = match (&e.value, &e.value_from) {
            (Some(_), Some(_)) => {
                self.bad(path, "value and valueFrom are mutually exclusive");
                return None;
            }
            (value, None) => EnvValue::Literal(value.clone().unwrap_or_default()),
            (None, Some(from))
                if from.config_map_key_ref.is_some() || from.secret_key_ref.is_some() =>
            {
                let vpath = format!("{path}.valueFrom");
                let set = [
                    from.field_ref.is_some(),
                    from.resource_field_ref.is_some(),
                    from.config_map_key_ref.is_some(),
                    from.secret_key_ref.is_some(),
                ];
                if set.iter().filter(|s| **s).count() > 1 {
                    self.bad(
                        &vpath,
                        "may not have more than one field specified at a time",
                    );
                    return None;
                }
                let (kind, name, key, optional, field) =
                    match (&from.config_map_key_ref, &from.secret_key_ref) {
                        (Some(r), _) => (
                            ObjectKind::ConfigMap,
                            &r.name,
                            &r.key,
                            r.optional,
                            "configMapKeyRef",
                        ),
                        (_, Some(r)) => (
                            ObjectKind::Secret,
                            &r.name,
                            &r.key,
                            r.optional,
                            "secretKeyRef",
                        ),
                        (None, None) => return None,
                    };
                let rpath = format!("{vpath}.{field}");
                self.object_name(name, &format!("{rpath}.name"));
                if let Err(why) = data_key(key) {
                    self.bad(&format!("{rpath}.key"), format!("{key:?}: {why}"));
                }
                EnvValue::Key(KeyRef {
                    kind,
                    name: name.clone(),
                    key: key.clone(),
                    optional: optional.unwrap_or(false),
                })
            }
            (None, Some(from)) if from.resource_field_ref.is_some() && from.field_ref.is_none() => {
                let selector = from.resource_field_ref.as_ref()?;
                let reference = self.resource_ref(
                    selector,
                    &format!("{path}.valueFrom.resourceFieldRef"),
                    Some(own),
                )?;
                EnvValue::ResourceRef(reference)
            }
            (None, Some(from)) => {
                let Some(field) = &from.field_ref else {
                    self.bad(
                        &format!("{path}.valueFrom"),
                        "not supported by podkit: only fieldRef, resourceFieldRef, \
                         configMapKeyRef and secretKeyRef",
                    );
                    return None;
                };
                let wanted = field.field_path.as_str();
                // The whole of labels or annotations is for downwardAPI files only.
                let whole_map = matches!(wanted, "metadata.labels" | "metadata.annotations");
                if whole_map || !(FIELD_REFS.contains(&wanted) || one_label_or_annotation(wanted)) {
                    self.bad(
                        &format!("{path}.valueFrom.fieldRef.fieldPath"),
                        format!(
                            "{:?} is not supported by podkit (supported: {}, \
                             metadata.labels['KEY'], metadata.annotations['KEY'])",
                            field.field_path,
                            FIELD_REFS
                                .iter()
                                .filter(|f| !matches!(
                                    **f,
                                    "metadata.labels" | "metadata.annotations"
                                ))
                                .copied()
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    );
                    return None;
                }
                EnvValue::FieldRef(field.field_path.clone())
            }
        };
        Some(EnvVar {
            name: e.name.clone(),
            value,
        })
    }

    /// AppArmor, from `securityContext.appArmorProfile` (pod and containers) or the annotations
    /// before it (`container.apparmor.security.beta.kubernetes.io/NAME`): Unconfined is what
    /// podkit's containers run as, so it is accepted; any other profile is refused with the
    /// reason, as kubelet refuses a pod whose profile it cannot enforce: never dropped.
    fn app_armor(&mut self, pod: &Pod, names: &[&str]) {
        // The host is asked only when a profile is to be refused.
        let refusal = || {
            if app_armor_enabled() {
                "podkit does not load or apply AppArmor profiles yet: only Unconfined is accepted"
            } else {
                "AppArmor is not enabled on this host (/sys/module/apparmor/parameters/enabled), \
                 so the profile cannot be enforced (kubelet refuses such a pod); only Unconfined \
                 is accepted"
            }
        };
        const ANNOTATION: &str = "container.apparmor.security.beta.kubernetes.io/";
        for (key, value) in pod.metadata.annotations.iter().flatten() {
            let Some(name) = key.strip_prefix(ANNOTATION) else {
                continue;
            };
            let field = format!("metadata.annotations[{key:?}]");
            if !names.contains(&name) {
                self.bad(&field, format!("{name:?} is no container of the pod"));
            } else if value != "unconfined" {
                self.bad(&field, format!("{value:?}: {}", refusal()));
            }
        }
        let Some(spec) = &pod.spec else {
            return;
        };
        let profile = |sc: Option<&k8s_openapi::api::core::v1::SecurityContext>| {
            sc.and_then(|s| s.app_armor_profile.clone())
        };
        let mut profiles = vec![(
            "spec.securityContext".to_owned(),
            spec.security_context
                .as_ref()
                .and_then(|s| s.app_armor_profile.clone()),
        )];
        for (i, c) in spec.init_containers.iter().flatten().enumerate() {
            let field = format!("spec.initContainers[{i}].securityContext");
            profiles.push((field, profile(c.security_context.as_ref())));
        }
        for (i, c) in spec.containers.iter().enumerate() {
            let field = format!("spec.containers[{i}].securityContext");
            profiles.push((field, profile(c.security_context.as_ref())));
        }
        for (field, profile) in profiles {
            if let Some(profile) = profile
                && profile.type_ != "Unconfined"
            {
                let field = format!("{field}.appArmorProfile.type");
                self.bad(&field, format!("{:?}: {}", profile.type_, refusal()));
            }
        }
    }

    /// The containers [`HOST_PROCESS_ANNOTATION`] runs as host processes.
    fn host_process(
        &mut self,
        annotations: Option<&BTreeMap<String, String>>,
        names: &[&str],
    ) -> Vec<String> {
        let field = format!("metadata.annotations[{HOST_PROCESS_ANNOTATION:?}]");
        let Some(value) = annotations.and_then(|a| a.get(HOST_PROCESS_ANNOTATION)) else {
            return Vec::new();
        };
        match value.trim() {
            "true" => return names.iter().map(|n| (*n).to_owned()).collect(),
            "false" | "" => return Vec::new(),
            _ => {}
        }
        let mut host = Vec::new();
        for name in value.split(',').map(str::trim) {
            if names.contains(&name) {
                host.push(name.to_owned());
            } else {
                self.bad(
                    &field,
                    format!(
                        "{name:?} is no container of the pod: give \"true\" (every container) or \
                         container names separated by commas"
                    ),
                );
            }
        }
        host
    }

    /// An image container's image, pull policy and security settings.
    fn image_run(
        &mut self,
        c: &Container,
        path: &str,
        security: &k8s_openapi::api::core::v1::SecurityContext,
        pod_security: &PodSecurity,
    ) -> Option<ImageRun> {
        let image = c.image.clone().unwrap_or_default();
        let reference = if image.trim().is_empty() {
            self.bad(
                &format!("{path}.image"),
                format!(
                    "required: the container runs from its image (or mark it a host process \
                     with the {HOST_PROCESS_ANNOTATION} annotation and give its command)"
                ),
            );
            None
        } else {
            match oci::Reference::parse(&image) {
                Ok(reference) => Some(reference),
                Err(err) => {
                    self.bad(&format!("{path}.image"), format!("InvalidImageName: {err}"));
                    None
                }
            }
        };
        // Kubernetes' default: Always for :latest or no tag (and no digest), else IfNotPresent.
        let pull_policy = match c.image_pull_policy.as_deref() {
            Some("Always") => PullPolicy::Always,
            Some("IfNotPresent") => PullPolicy::IfNotPresent,
            Some("Never") => PullPolicy::Never,
            Some(other) => {
                self.bad(
                    &format!("{path}.imagePullPolicy"),
                    format!("{other:?}: must be Always, IfNotPresent or Never"),
                );
                PullPolicy::IfNotPresent
            }
            None => match &reference {
                Some(r) if r.digest().is_none() && r.tag().is_none_or(|t| t == "latest") => {
                    PullPolicy::Always
                }
                _ => PullPolicy::IfNotPresent,
            },
        };
        let capabilities = security.capabilities.clone().unwrap_or_default();
        let add_capabilities = self.capability_names(capabilities.add, path, "add");
        let drop_capabilities = self.capability_names(capabilities.drop, path, "drop");
        let privileged = security.privileged.unwrap_or(false);
        let no_new_privileges = security.allow_privilege_escalation == Some(false);
        if privileged && no_new_privileges {
            self.bad(
                &format!("{path}.securityContext.allowPrivilegeEscalation"),
                "false cannot be set with privileged: true (Kubernetes refuses the pair too)",
            );
        }
        match security.proc_mount.as_deref() {
            None | Some("Default") => {}
            Some("Unmasked") => self.bad(
                &format!("{path}.securityContext.procMount"),
                "Unmasked needs the pod in a user namespace of its own (hostUsers: false), \
                 which podkit does not make yet",
            ),
            Some(other) => self.bad(
                &format!("{path}.securityContext.procMount"),
                format!("{other:?}: must be Default or Unmasked"),
            ),
        }
        let seccomp = match &security.seccomp_profile {
            Some(profile) => {
                self.seccomp(profile, &format!("{path}.securityContext.seccompProfile"))
            }
            None => pod_security.seccomp.clone().unwrap_or_default(),
        };
        reference?;
        Some(ImageRun {
            seccomp,
            image,
            command: c.command.clone().unwrap_or_default(),
            args: c.args.clone().unwrap_or_default(),
            pull_policy,
            run_as_non_root: false,
            // kubelet adds fsGroup to every container's supplementary groups.
            supplemental_groups: pod_security
                .supplemental_groups
                .iter()
                .copied()
                .chain(pod_security.fs_group)
                .collect(),
            strict_groups: pod_security.strict_groups,
            add_capabilities,
            drop_capabilities,
            privileged,
            read_only_root: security.read_only_root_filesystem.unwrap_or(false),
            no_new_privileges,
        })
    }

    /// A `seccompProfile`, with the API server's rules: `localhostProfile` with `Localhost`
    /// only, a relative path that stays in the seccomp directory.
    fn seccomp(
        &mut self,
        profile: &k8s_openapi::api::core::v1::SeccompProfile,
        path: &str,
    ) -> Seccomp {
        let localhost = profile.localhost_profile.as_deref();
        match (profile.type_.as_str(), localhost) {
            ("Unconfined", None) => Seccomp::Unconfined,
            ("RuntimeDefault", None) => Seccomp::RuntimeDefault,
            ("Localhost", Some(file)) => {
                let file = PathBuf::from(file);
                let inside = !file.as_os_str().is_empty()
                    && file.components().all(|c| matches!(c, Component::Normal(_)));
                if !inside {
                    self.bad(
                        &format!("{path}.localhostProfile"),
                        format!("{file:?} must be a relative path without '..'"),
                    );
                }
                Seccomp::Localhost(file)
            }
            ("Localhost", None) => {
                self.bad(
                    &format!("{path}.localhostProfile"),
                    "required when type is Localhost",
                );
                Seccomp::Unconfined
            }
            ("Unconfined" | "RuntimeDefault", Some(_)) => {
                self.bad(
                    &format!("{path}.localhostProfile"),
                    "may only be set when type is Localhost",
                );
                Seccomp::Unconfined
            }
            (other, _) => {
                self.bad(
                    &format!("{path}.type"),
                    format!("{other:?}: must be RuntimeDefault, Unconfined or Localhost"),
                );
                Seccomp::Unconfined
            }
        }
    }

    fn mount(
        &mut self,
        m: &VolumeMount,
        path: &str,
        volumes: &[Volume],
        host: bool,
    ) -> Option<Mount> {
        let value = serde_json::to_value(m).unwrap_or(Value::Null);
        self.keys(
            &value,
            path,
            &["name", "mountPath", "readOnly", "subPath"],
            &["mountPropagation"],
        );
        if self.refused_volumes.contains(&m.name) {
            return None;
        }
        let mut ok = true;
        if !volumes.iter().any(|v| v.name == m.name) {
            self.bad(
                &format!("{path}.name"),
                format!("no volume named {:?} in spec.volumes", m.name),
            );
            ok = false;
        }
        let mount_path = PathBuf::from(&m.mount_path);
        if !mount_path.is_absolute() || has_dot_dot(&mount_path) {
            self.bad(
                &format!("{path}.mountPath"),
                format!("{:?} must be an absolute path without '..'", m.mount_path),
            );
            ok = false;
        } else if !host && mount_path.components().count() == 1 {
            self.bad(
                &format!("{path}.mountPath"),
                format!(
                    "{:?} would hide the container's whole filesystem",
                    m.mount_path
                ),
            );
            ok = false;
        } else if let Some(why) = hides_the_host(&mount_path).filter(|_| host) {
            self.bad(
                &format!("{path}.mountPath"),
                format!("{:?} {why}", m.mount_path),
            );
            ok = false;
        }
        let sub_path = m
            .sub_path
            .as_ref()
            .filter(|s| !s.is_empty())
            .map(PathBuf::from);
        if let Some(sub) = &sub_path
            && (sub.is_absolute() || has_dot_dot(sub))
        {
            self.bad(
                &format!("{path}.subPath"),
                format!("{sub:?} must be a relative path without '..'"),
            );
            ok = false;
        }
        ok.then(|| Mount {
            volume: m.name.clone(),
            mount_path,
            read_only: m.read_only.unwrap_or(false),
            sub_path,
        })
    }

    /// A `resourceFieldRef` (`ValidateContainerResourceFieldSelector` and its divisor rules):
    /// `own` is the container an env var belongs to (a volume's must name one).
    fn resource_ref(
        &mut self,
        selector: &k8s_openapi::api::core::v1::ResourceFieldSelector,
        path: &str,
        own: Option<&str>,
    ) -> Option<ResourceRef> {
        let container = match (
            selector.container_name.as_deref().filter(|n| !n.is_empty()),
            own,
        ) {
            (Some(name), _) => {
                if !self.containers.iter().any(|c| c == name) {
                    self.bad(
                        &format!("{path}.containerName"),
                        format!("{name:?} is not a container of this pod"),
                    );
                    return None;
                }
                name.to_owned()
            }
            (None, Some(own)) => own.to_owned(),
            (None, None) => {
                self.bad(&format!("{path}.containerName"), "required");
                return None;
            }
        };
        let resource = selector.resource.as_str();
        let cpu = match resource {
            "limits.cpu" | "requests.cpu" => true,
            "limits.memory" | "requests.memory" => false,
            "limits.ephemeral-storage" | "requests.ephemeral-storage" => {
                self.bad(
                    &format!("{path}.resource"),
                    format!("{resource:?}: not supported by podkit, which does not account ephemeral storage"),
                );
                return None;
            }
            other => {
                self.bad(
                    &format!("{path}.resource"),
                    format!(
                        "{other:?}: must be limits.cpu, limits.memory, requests.cpu or \
                         requests.memory"
                    ),
                );
                return None;
            }
        };
        let text = selector.divisor.as_ref().map_or("1", |d| d.0.as_str());
        let allowed: &[&str] = if cpu {
            &["1m", "1"]
        } else {
            &[
                "1", "1k", "1M", "1G", "1T", "1P", "1E", "1Ki", "1Mi", "1Gi", "1Ti", "1Pi", "1Ei",
            ]
        };
        let divisor = Quantity::parse(text)
            .ok()
            .filter(|_| allowed.contains(&text))
            .and_then(|q| if cpu { q.millis() } else { q.units() });
        let Some(divisor) = divisor else {
            self.bad(
                &format!("{path}.divisor"),
                format!("{text:?}: must be one of {}", allowed.join(", ")),
            );
            return None;
        };
        Some(ResourceRef {
            container,
            resource: resource.to_owned(),
            divisor,
        })
    }

    /// A `downwardAPI` volume's items (`validateDownwardAPIVolumeSource`): a relative path
    /// without `..` each, one of fieldRef (the fields a volume may hold) or resourceFieldRef.
    fn downward_api(
        &mut self,
        source: &k8s_openapi::api::core::v1::DownwardAPIVolumeSource,
        path: &str,
    ) -> Vec<DownwardFile> {
        let default_mode = self.file_mode(source.default_mode, &format!("{path}.defaultMode"));
        let mut files: Vec<DownwardFile> = Vec::new();
        for (i, item) in source.items.iter().flatten().enumerate() {
            let ipath = format!("{path}.items[{i}]");
            let file = PathBuf::from(&item.path);
            if item.path.is_empty()
                || file.is_absolute()
                || has_dot_dot(&file)
                || item.path.starts_with("..")
            {
                self.bad(
                    &format!("{ipath}.path"),
                    format!(
                        "{:?} must be a relative path without '..' and not start with '..'",
                        item.path
                    ),
                );
                continue;
            }
            if files.iter().any(|f| f.path == file) {
                self.bad(
                    &format!("{ipath}.path"),
                    format!("{:?} is given twice", item.path),
                );
                continue;
            }
            let mode = match item.mode {
                Some(m) => self.file_mode(Some(m), &format!("{ipath}.mode")),
                None => default_mode,
            };
            let value = match (&item.field_ref, &item.resource_field_ref) {
                (Some(field), None) => {
                    let f = field.field_path.as_str();
                    let one = |prefix: &str| {
                        f.strip_prefix(prefix)
                            .and_then(|rest| rest.strip_prefix("['"))
                            .and_then(|rest| rest.strip_suffix("']"))
                            .is_some_and(|key| !key.is_empty())
                    };
                    let whole = [
                        "metadata.name",
                        "metadata.namespace",
                        "metadata.uid",
                        "metadata.labels",
                        "metadata.annotations",
                    ];
                    if !(whole.contains(&f)
                        || one("metadata.labels")
                        || one("metadata.annotations"))
                    {
                        self.bad(
                            &format!("{ipath}.fieldRef.fieldPath"),
                            format!(
                                "{f:?}: a downwardAPI volume holds metadata.name, .namespace, .uid, \
                                 .labels, .annotations, or one label or annotation \
                                 (metadata.labels['key'])"
                            ),
                        );
                        continue;
                    }
                    DownwardValue::Field(f.to_owned())
                }
                (None, Some(selector)) => {
                    match self.resource_ref(selector, &format!("{ipath}.resourceFieldRef"), None) {
                        Some(r) => DownwardValue::Resource(r),
                        None => continue,
                    }
                }
                _ => {
                    self.bad(&ipath, "needs exactly one of fieldRef and resourceFieldRef");
                    continue;
                }
            };
            files.push(DownwardFile {
                path: file,
                mode,
                value,
            });
        }
        files
    }

    /// A configMap or secret volume (or projection): its object's name, its `items` (each key
    /// valid, each path relative without `..`, not one already in `paths`, the volume's paths
    /// so far).
    #[allow(clippy::too_many_arguments)]
    fn data_projection(
        &mut self,
        kind: ObjectKind,
        name: &str,
        name_field: &str,
        items: Option<&[k8s_openapi::api::core::v1::KeyToPath]>,
        default_mode: u32,
        optional: Option<bool>,
        path: &str,
        paths: &mut Vec<PathBuf>,
    ) -> Option<Projection> {
        self.object_name(name, &format!("{path}.{name_field}"));
        let items = items.map(|items| {
            let mut out = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let ipath = format!("{path}.items[{i}]");
                if let Err(why) = data_key(&item.key) {
                    self.bad(&format!("{ipath}.key"), format!("{:?}: {why}", item.key));
                }
                if item.user.is_some() {
                    self.bad(&format!("{ipath}.user"), "not supported by podkit");
                }
                let Some(file) = self.volume_file_path(&item.path, &format!("{ipath}.path"), paths)
                else {
                    continue;
                };
                let mode = item
                    .mode
                    .map(|m| self.file_mode(Some(m), &format!("{ipath}.mode")));
                out.push(KeyItem {
                    key: item.key.clone(),
                    path: file,
                    mode,
                });
            }
            out
        });
        Some(Projection::Data {
            kind,
            name: name.to_owned(),
            items,
            default_mode,
            optional: optional.unwrap_or(false),
        })
    }

    /// A file's path in a volume (`items[].path`): relative, without `..`, not starting with
    /// `..`, and not given before in the same volume (`paths`, to which it is added).
    fn volume_file_path(
        &mut self,
        text: &str,
        path: &str,
        paths: &mut Vec<PathBuf>,
    ) -> Option<PathBuf> {
        let file = PathBuf::from(text);
        if text.is_empty() || file.is_absolute() || has_dot_dot(&file) || text.starts_with("..") {
            self.bad(
                path,
                format!("{text:?} must be a relative path without '..' and not start with '..'"),
            );
            return None;
        }
        if paths.contains(&file) {
            self.bad(path, format!("{text:?}: conflicting duplicate paths"));
            return None;
        }
        paths.push(file.clone());
        Some(file)
    }

    /// A `projected` volume's sources: configMap, secret and downwardAPI. A service account
    /// token or a trust bundle needs an API server to issue it, which one host has not.
    fn projected(
        &mut self,
        source: &k8s_openapi::api::core::v1::ProjectedVolumeSource,
        value: &Value,
        path: &str,
    ) -> Vec<Projection> {
        self.keys(value, path, &["sources", "defaultMode"], &[]);
        let default_mode = self.file_mode(source.default_mode, &format!("{path}.defaultMode"));
        let mut paths = Vec::new();
        let mut out = Vec::new();
        for (i, projection) in source.sources.iter().flatten().enumerate() {
            let ppath = format!("{path}.sources[{i}]");
            let raw = &value["sources"][i];
            let set: Vec<&String> = raw
                .as_object()
                .map(|o| o.keys().collect())
                .unwrap_or_default();
            match set.as_slice() {
                [one] if one.as_str() == "configMap" || one.as_str() == "secret" => {
                    let (kind, name, items, optional) =
                        match (&projection.config_map, &projection.secret) {
                            (Some(c), _) => (ObjectKind::ConfigMap, &c.name, &c.items, c.optional),
                            (_, Some(c)) => (ObjectKind::Secret, &c.name, &c.items, c.optional),
                            (None, None) => continue,
                        };
                    let spath = format!("{ppath}.{one}");
                    self.keys(
                        &raw[one.as_str()],
                        &spath,
                        &["name", "items", "optional"],
                        &[],
                    );
                    out.extend(self.data_projection(
                        kind,
                        name,
                        "name",
                        items.as_deref(),
                        default_mode,
                        optional,
                        &spath,
                        &mut paths,
                    ));
                }
                [one] if one.as_str() == "downwardAPI" => {
                    let Some(d) = &projection.downward_api else {
                        continue;
                    };
                    let source = k8s_openapi::api::core::v1::DownwardAPIVolumeSource {
                        default_mode: Some(default_mode as i32),
                        items: d.items.clone(),
                        ..Default::default()
                    };
                    let files = self.downward_api(&source, &format!("{ppath}.downwardAPI"));
                    for f in &files {
                        if paths.contains(&f.path) {
                            self.bad(
                                &format!("{ppath}.downwardAPI"),
                                format!("{:?}: conflicting duplicate paths", f.path),
                            );
                        }
                        paths.push(f.path.clone());
                    }
                    out.push(Projection::Downward(files));
                }
                [one] => self.bad(
                    &format!("{ppath}.{one}"),
                    "not supported by podkit: a projected volume holds configMap, secret and \
                     downwardAPI sources (a service account token or a certificate needs an API \
                     server to issue it)",
                ),
                [] => self.bad(
                    &ppath,
                    "must specify one of: configMap, secret, downwardAPI",
                ),
                _ => self.bad(
                    &ppath,
                    "may not have more than one field specified at a time",
                ),
            }
        }
        out
    }

    /// A file mode of a volume (`defaultMode`, an item's `mode`): 0 to 0777, default 0644.
    fn file_mode(&mut self, mode: Option<i32>, path: &str) -> u32 {
        match mode {
            None => 0o644,
            Some(m) if (0..=0o777).contains(&m) => m as u32,
            Some(m) => {
                self.bad(
                    path,
                    format!("{m}: must be a number between 0 and 0777 (octal), both inclusive"),
                );
                0o644
            }
        }
    }

    fn volume(&mut self, vol: &K8sVolume, path: &str) -> Option<Volume> {
        if let Err(why) = dns_label(&vol.name) {
            self.bad(&format!("{path}.name"), format!("{:?} {why}", vol.name));
        }
        let value = serde_json::to_value(vol).unwrap_or(Value::Null);
        let sources: Vec<&String> = value
            .as_object()
            .map(|o| o.keys().filter(|k| *k != "name").collect())
            .unwrap_or_default();
        let source = match (sources.as_slice(), &vol.empty_dir, &vol.host_path) {
            ([_], Some(empty), None) => {
                let memory = match empty.medium.as_deref() {
                    None | Some("") => false,
                    Some("Memory") => true,
                    // The page size, for `HugePages` alone, comes from the pod's containers
                    // ([`Validator::huge_page_volumes`]); 0 until then.
                    Some("HugePages") => {
                        return Some(Volume {
                            name: vol.name.clone(),
                            source: VolumeSource::HugePages { page_size: 0 },
                        });
                    }
                    Some(medium) if medium.starts_with("HugePages-") => {
                        let size = medium.trim_start_matches("HugePages-");
                        let Some(page_size) = huge_page_size(&format!("hugepages-{size}")) else {
                            self.bad(
                                &format!("{path}.emptyDir.medium"),
                                format!("{medium:?}: {size:?} is not a page size (HugePages-2Mi, HugePages-1Gi)"),
                            );
                            return None;
                        };
                        return Some(Volume {
                            name: vol.name.clone(),
                            source: VolumeSource::HugePages { page_size },
                        });
                    }
                    Some(other) => {
                        self.bad(
                            &format!("{path}.emptyDir.medium"),
                            format!(
                                "{other:?}: must be \"\", \"Memory\", \"HugePages\" or \
                                 \"HugePages-<size>\""
                            ),
                        );
                        false
                    }
                };
                let size_limit = match &empty.size_limit {
                    None => None,
                    Some(q) => match parse_quantity(&q.0) {
                        // The kernel reads a tmpfs `size=0` as no limit at all.
                        Some(0) if memory => {
                            self.bad(
                                &format!("{path}.emptyDir.sizeLimit"),
                                "0 is not a size for a Memory emptyDir (a tmpfs of size 0 has no \
                                 limit): give a size such as 64Mi, or leave it out for podkit's \
                                 default",
                            );
                            None
                        }
                        Some(bytes) => Some(bytes),
                        None => {
                            self.bad(
                                &format!("{path}.emptyDir.sizeLimit"),
                                format!("{:?} is not a quantity (like 64Mi or 1G)", q.0),
                            );
                            None
                        }
                    },
                };
                VolumeSource::EmptyDir { memory, size_limit }
            }
            ([_], None, Some(host)) => {
                let kind = match host.type_.as_deref().unwrap_or("") {
                    "" => HostPathType::Unset,
                    "DirectoryOrCreate" => HostPathType::DirectoryOrCreate,
                    "Directory" => HostPathType::Directory,
                    "FileOrCreate" => HostPathType::FileOrCreate,
                    "File" => HostPathType::File,
                    "Socket" => HostPathType::Socket,
                    "CharDevice" => HostPathType::CharDevice,
                    "BlockDevice" => HostPathType::BlockDevice,
                    other => {
                        self.bad(
                            &format!("{path}.hostPath.type"),
                            format!("{other:?} is not a hostPath type"),
                        );
                        HostPathType::Unset
                    }
                };
                let host_path = PathBuf::from(&host.path);
                if !host_path.is_absolute() {
                    self.bad(
                        &format!("{path}.hostPath.path"),
                        format!("{:?} must be absolute", host.path),
                    );
                }
                VolumeSource::HostPath {
                    path: host_path,
                    kind,
                }
            }
            ([one], None, None) if one.as_str() == "downwardAPI" => {
                let source = vol.downward_api.as_ref()?;
                VolumeSource::DownwardApi {
                    files: self.downward_api(source, &format!("{path}.downwardAPI")),
                }
            }
            ([one], None, None) if one.as_str() == "configMap" || one.as_str() == "secret" => {
                // The two differ in the name's field and where kubelet keeps them (a secret
                // volume on a tmpfs).
                let (kind, name, name_field, items, mode, optional, memory) =
                    match (&vol.config_map, &vol.secret) {
                        (Some(c), _) => {
                            let name = c.name.as_str();
                            (
                                ObjectKind::ConfigMap,
                                name,
                                "name",
                                &c.items,
                                c.default_mode,
                                c.optional,
                                false,
                            )
                        }
                        (_, Some(c)) => {
                            let name = c.secret_name.as_deref().unwrap_or_default();
                            (
                                ObjectKind::Secret,
                                name,
                                "secretName",
                                &c.items,
                                c.default_mode,
                                c.optional,
                                true,
                            )
                        }
                        (None, None) => return None,
                    };
                let spath = format!("{path}.{one}");
                self.keys(
                    &value[one.as_str()],
                    &spath,
                    &[name_field, "items", "defaultMode", "optional"],
                    &[],
                );
                let default_mode = self.file_mode(mode, &format!("{spath}.defaultMode"));
                let data = self.data_projection(
                    kind,
                    name,
                    name_field,
                    items.as_deref(),
                    default_mode,
                    optional,
                    &spath,
                    &mut Vec::new(),
                );
                VolumeSource::Projected {
                    sources: data.into_iter().collect(),
                    memory,
                }
            }
            ([one], None, None) if one.as_str() == "persistentVolumeClaim" => {
                let source = vol.persistent_volume_claim.as_ref()?;
                let spath = format!("{path}.persistentVolumeClaim");
                self.keys(
                    &value["persistentVolumeClaim"],
                    &spath,
                    &["claimName", "readOnly"],
                    &[],
                );
                self.object_name(&source.claim_name, &format!("{spath}.claimName"));
                VolumeSource::Claim {
                    name: source.claim_name.clone(),
                    read_only: source.read_only.unwrap_or(false),
                }
            }
            ([one], None, None) if one.as_str() == "projected" => {
                let source = vol.projected.as_ref()?;
                VolumeSource::Projected {
                    sources: self.projected(
                        source,
                        &value["projected"],
                        &format!("{path}.projected"),
                    ),
                    memory: true,
                }
            }
            // The API server defaults a volume without a source to an emptyDir.
            ([], _, _) => VolumeSource::EmptyDir {
                memory: false,
                size_limit: None,
            },
            ([one], _, _) => {
                self.bad(
                    &format!("{path}.{one}"),
                    "not supported by podkit (supported volume sources: emptyDir, hostPath, configMap, \
                     secret, projected, downwardAPI, persistentVolumeClaim)",
                );
                self.refused_volumes.push(vol.name.clone());
                return None;
            }
            (many, _, _) => {
                let names: Vec<&str> = many.iter().map(|s| s.as_str()).collect();
                self.bad(
                    path,
                    format!(
                        "exactly one volume source allowed, found {}",
                        names.join(", ")
                    ),
                );
                self.refused_volumes.push(vol.name.clone());
                return None;
            }
        };
        Some(Volume {
            name: vol.name.clone(),
            source,
        })
    }

    fn probe(
        &mut self,
        p: &K8sProbe,
        path: &str,
        ports: &[ContainerPort],
        single_success: bool,
    ) -> Option<Probe> {
        let value = serde_json::to_value(p).unwrap_or(Value::Null);
        self.keys(&value, path, PROBE_HONOURED, &[]);
        let handler = match (&p.exec, &p.http_get, &p.tcp_socket, &p.grpc) {
            (Some(exec), None, None, None) => {
                self.exec(exec.command.clone(), &format!("{path}.exec"))
            }
            (None, Some(http), None, None) => self.http(http, &format!("{path}.httpGet"), ports),
            (None, None, Some(tcp), None) => self
                .port(&tcp.port, &format!("{path}.tcpSocket.port"), ports)
                .map(|port| Handler::TcpSocket {
                    host: tcp.host.clone(),
                    port,
                }),
            // A number only: the API has no named port for gRPC.
            (None, None, None, Some(grpc)) => match u16::try_from(grpc.port) {
                Ok(port) if port > 0 => Some(Handler::Grpc {
                    port,
                    service: grpc.service.clone().unwrap_or_default(),
                }),
                _ => {
                    self.bad(
                        &format!("{path}.grpc.port"),
                        format!("{}: must be between 1 and 65535, inclusive", grpc.port),
                    );
                    None
                }
            },
            (None, None, None, None) => {
                self.bad(path, "needs one handler: exec, httpGet, tcpSocket or grpc");
                None
            }
            _ => {
                self.bad(
                    path,
                    "exactly one handler allowed (exec, httpGet, tcpSocket or grpc)",
                );
                None
            }
        }?;
        let secs = |v: &mut Self, field: &str, value: Option<i32>, default: i32, min: i32| {
            let got = value.unwrap_or(default);
            if got < min {
                v.bad(
                    &format!("{path}.{field}"),
                    format!("{got}: must be >= {min}"),
                );
            }
            got.max(min) as u64
        };
        let initial_delay = secs(self, "initialDelaySeconds", p.initial_delay_seconds, 0, 0);
        let period = secs(self, "periodSeconds", p.period_seconds, 10, 1);
        let timeout = secs(self, "timeoutSeconds", p.timeout_seconds, 1, 1);
        let success = secs(self, "successThreshold", p.success_threshold, 1, 1);
        let failure = secs(self, "failureThreshold", p.failure_threshold, 3, 1);
        if single_success && success != 1 {
            self.bad(
                &format!("{path}.successThreshold"),
                "must be 1 for liveness and startup probes",
            );
        }
        // The grace period for stopping the container this probe fails (GA in 1.28): the API
        // server refuses it on a readiness probe, which restarts nothing, and below 1.
        let termination_grace_period = match p.termination_grace_period_seconds {
            None => None,
            Some(_) if !single_success => {
                self.bad(
                    &format!("{path}.terminationGracePeriodSeconds"),
                    "must not be set for readinessProbes (a readiness probe restarts nothing)",
                );
                None
            }
            Some(secs) if secs < 1 => {
                self.bad(
                    &format!("{path}.terminationGracePeriodSeconds"),
                    format!("{secs}: must be greater than 0"),
                );
                None
            }
            Some(secs) => Some(Duration::from_secs(secs as u64)),
        };
        Some(Probe {
            handler,
            initial_delay: Duration::from_secs(initial_delay),
            period: Duration::from_secs(period),
            timeout: Duration::from_secs(timeout),
            success_threshold: success as u32,
            failure_threshold: failure as u32,
            termination_grace_period,
        })
    }

    fn hook(
        &mut self,
        h: &LifecycleHandler,
        path: &str,
        ports: &[ContainerPort],
    ) -> Option<Handler> {
        match (&h.exec, &h.http_get, &h.sleep, &h.tcp_socket) {
            (Some(exec), None, None, None) => {
                self.exec(exec.command.clone(), &format!("{path}.exec"))
            }
            (None, Some(http), None, None) => self.http(http, &format!("{path}.httpGet"), ports),
            (None, None, Some(sleep), None) if sleep.seconds >= 0 => Some(Handler::Sleep {
                duration: Duration::from_secs(sleep.seconds as u64),
            }),
            (None, None, Some(sleep), None) => {
                self.bad(
                    &format!("{path}.sleep.seconds"),
                    format!("{}: must be >= 0", sleep.seconds),
                );
                None
            }
            (None, None, None, Some(_)) => {
                self.bad(
                    &format!("{path}.tcpSocket"),
                    "not supported (deprecated in Kubernetes): use exec",
                );
                None
            }
            _ => {
                self.bad(path, "needs exactly one handler: exec, httpGet or sleep");
                None
            }
        }
    }

    fn exec(&mut self, command: Option<Vec<String>>, path: &str) -> Option<Handler> {
        match command {
            Some(command) if !command.is_empty() => Some(Handler::Exec { command }),
            _ => {
                self.bad(&format!("{path}.command"), "required");
                None
            }
        }
    }

    fn http(
        &mut self,
        http: &HTTPGetAction,
        path: &str,
        ports: &[ContainerPort],
    ) -> Option<Handler> {
        let port = self.port(&http.port, &format!("{path}.port"), ports)?;
        let https = match http.scheme.as_deref() {
            None | Some("HTTP") => false,
            Some("HTTPS") => true,
            Some(other) => {
                self.bad(
                    &format!("{path}.scheme"),
                    format!("{other:?}: must be HTTP or HTTPS"),
                );
                false
            }
        };
        Some(Handler::HttpGet {
            host: http.host.clone(),
            port,
            path: http.path.clone().unwrap_or_else(|| "/".into()),
            https,
            headers: http
                .http_headers
                .iter()
                .flatten()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect(),
        })
    }

    /// A port number, or a port name resolved against the container's `ports`.
    fn port(&mut self, port: &IntOrString, path: &str, ports: &[ContainerPort]) -> Option<u16> {
        match port {
            IntOrString::Int(n) => match u16::try_from(*n) {
                Ok(p) if p > 0 => Some(p),
                _ => {
                    self.bad(path, format!("{n}: must be between 1 and 65535"));
                    None
                }
            },
            IntOrString::String(name) => {
                let found = ports
                    .iter()
                    .find(|p| p.name.as_deref() == Some(name.as_str()));
                match found.and_then(|p| u16::try_from(p.container_port).ok()) {
                    Some(p) => Some(p),
                    None => {
                        self.bad(path, format!("no container port named {name:?}"));
                        None
                    }
                }
            }
        }
    }
}

/// Reports keys of `raw` that `typed` (the same document after a round trip through the Pod
/// type) lacks.
fn unknown_fields(raw: &Value, typed: &Value, path: &str, problems: &mut Vec<String>) {
    match (raw, typed) {
        (Value::Object(raw), Value::Object(typed)) => {
            for (key, value) in raw {
                if value.is_null() {
                    continue;
                }
                let field = join(path, key);
                match typed.get(key) {
                    Some(inner) => unknown_fields(value, inner, &field, problems),
                    None => problems.push(format!("{field}: unknown field (a typo?)")),
                }
            }
        }
        (Value::Array(raw), Value::Array(typed)) => {
            for (i, (r, t)) in raw.iter().zip(typed).enumerate() {
                unknown_fields(r, t, &format!("{path}[{i}]"), problems);
            }
        }
        _ => {}
    }
}

/// Refuses every string (and key) with a NUL byte: nothing podkit passes to the kernel
/// (arguments, environment, paths) can hold one, and cutting it there would run something other
/// than what the manifest says.
fn nul_bytes(value: &Value, path: &str, problems: &mut Vec<String>) {
    match value {
        Value::String(text) if text.contains('\0') => {
            problems.push(format!("{path}: contains a NUL byte"));
        }
        Value::Object(map) => {
            for (key, inner) in map {
                if key.contains('\0') {
                    problems.push(format!("{}: a key contains a NUL byte", join(path, "")));
                    continue;
                }
                nul_bytes(inner, &join(path, key), problems);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                nul_bytes(item, &format!("{path}[{i}]"), problems);
            }
        }
        _ => {}
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// The host's directories a host-process container must not mount a volume over: its members
/// run the host's programs, with its libraries and configuration, so a volume there would hide
/// them (and `/` itself cannot be mounted over for a running process: the mount would do
/// nothing, and the member would write to the host's `/`). Mounting below them is fine
/// (`/etc/nginx/conf.d`, `/usr/share/nginx/html`, `/var/log/app`).
const HOST_SYSTEM_DIRS: &[&str] = &[
    "/",
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/proc",
    "/run",
    "/sbin",
    "/sys",
    "/usr",
    "/usr/bin",
    "/usr/lib",
    "/usr/lib64",
    "/usr/libexec",
    "/usr/local",
    "/usr/sbin",
    "/usr/share",
    "/var",
    "/var/lib",
];

/// Whether the kernel has AppArmor enabled (what kubelet checks before it admits a pod with a
/// profile).
fn app_armor_enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|v| v.trim() == "Y")
}

/// Whether a field asks for nothing, as the API server reads it: empty (`resources: {}`,
/// `envFrom: []`, also `resources: {limits: {}}`) or a field podkit does not honour set to the
/// API's default (`hostNetwork: false`, `hostUsers: true`, ...). Accepted
/// everywhere: manifests written for a cluster spell defaults out.
fn asks_for_nothing(key: &str, value: &Value) -> bool {
    fn empty(value: &Value) -> bool {
        match value {
            Value::Null => true,
            Value::Array(items) => items.is_empty(),
            Value::Object(map) => map.values().all(empty),
            _ => false,
        }
    }
    match value {
        Value::Bool(on) => match key {
            "hostUsers" | "enableServiceLinks" | "automountServiceAccountToken" => *on,
            "hostNetwork" | "hostPID" | "hostIPC" | "setHostnameAsFQDN" => !*on,
            _ => false,
        },
        _ => empty(value),
    }
}

/// A container securityContext field set to what it is when absent.
fn is_default_security(key: &str, value: &Value) -> bool {
    match key {
        "privileged" | "readOnlyRootFilesystem" => value == &Value::Bool(false),
        "allowPrivilegeEscalation" => value == &Value::Bool(true),
        "seccompProfile" => value.get("type") == Some(&Value::from("Unconfined")),
        "procMount" => value == &Value::from("Default"),
        "capabilities" => value
            .as_object()
            .is_some_and(|m| m.values().all(|v| v.as_array().is_some_and(Vec::is_empty))),
        _ => false,
    }
}

/// kubelet's safe sysctls (`pkg/kubelet/sysctl/safe_sysctls.go`, Kubernetes 1.32): allowed on
/// every node without `--allowed-unsafe-sysctls`.
const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
];

/// Whether a sysctl belongs to a network or IPC namespace (kubelet's
/// `pkg/kubelet/sysctl/namespace.go`).
fn namespaced_sysctl(name: &str) -> bool {
    name.starts_with("net.")
        || name.starts_with("kernel.shm")
        || name.starts_with("kernel.msg")
        || name == "kernel.sem"
        || name.starts_with("fs.mqueue.")
}

/// Why a volume must not be mounted at `path` in a host-process container, if so.
fn hides_the_host(path: &Path) -> Option<String> {
    let normal: PathBuf = path.components().collect();
    if normal == Path::new("/") {
        return Some(
            "is the root: a volume cannot replace a host-process container's `/` (the member \
             would still write to the host's); mount it at a directory of its own"
                .to_owned(),
        );
    }
    HOST_SYSTEM_DIRS
        .iter()
        .any(|dir| normal == Path::new(dir))
        .then(|| {
            "would hide the host's own directory from this host-process container (its \
             programs, libraries or configuration live there); mount the volume below it or \
             elsewhere"
                .to_owned()
        })
}

fn has_dot_dot(path: &Path) -> bool {
    path.components().any(|c| c == Component::ParentDir)
}

/// A DNS-1123 label: what container, volume and host names must be.
pub(super) fn dns_label(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("must not be empty");
    }
    if name.len() > 63 {
        return Err("is longer than 63 characters");
    }
    let ok = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let ends = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_alphanumeric());
    if !ok || !ends(name.as_bytes().first()) || !ends(name.as_bytes().last()) {
        return Err(
            "must consist of lower case letters, digits and '-', and start and end with a letter or digit",
        );
    }
    Ok(())
}

/// A key of a ConfigMap or Secret (apimachinery's `IsConfigMapKey`): `[-._a-zA-Z0-9]+`, at
/// most 253 characters, not `.` or `..` and not starting with `..`.
pub(super) fn data_key(key: &str) -> Result<(), &'static str> {
    if key.is_empty() {
        return Err("required");
    }
    if key.len() > 253 {
        return Err("must be no more than 253 characters");
    }
    if !key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err("a valid config key must consist of alphanumeric characters, '-', '_' or '.'");
    }
    match key {
        "." => Err("must not be '.'"),
        ".." => Err("must not be '..'"),
        _ if key.starts_with("..") => Err("must not start with '..'"),
        _ => Ok(()),
    }
}

/// A DNS-1123 subdomain: what pod names must be.
pub(super) fn dns_subdomain(name: &str) -> Result<(), &'static str> {
    if name.len() > 253 {
        return Err("is longer than 253 characters");
    }
    name.split('.').try_for_each(|label| {
        dns_label(label).map_err(|_| {
            "must consist of lower case letters, digits, '-' and '.', and start and end with a letter or digit"
        })
    })
}

/// A qualified name (apimachinery's `IsQualifiedName`), as label keys and scheduling gates are:
/// an optional DNS subdomain prefix and `/`, then at most 63 letters, digits, `-`, `_` and `.`,
/// starting and ending with a letter or digit.
pub(crate) fn qualified_name(name: &str) -> Result<(), &'static str> {
    let (prefix, short) = match name.split_once('/') {
        Some((prefix, short)) => (Some(prefix), short),
        None => (None, name),
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            return Err("prefix part must be non-empty");
        }
        dns_subdomain(prefix).map_err(
            |_| "prefix part must be a DNS subdomain: lower case letters, digits, '-' and '.'",
        )?;
    }
    if short.is_empty() {
        return Err("name part must be non-empty");
    }
    if short.len() > 63 {
        return Err("name part must be no more than 63 characters");
    }
    let inner = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    let bytes = short.as_bytes();
    if !bytes.iter().all(|&b| inner(b))
        || !bytes[0].is_ascii_alphanumeric()
        || !bytes[bytes.len() - 1].is_ascii_alphanumeric()
    {
        return Err(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start \
             and end with an alphanumeric character",
        );
    }
    Ok(())
}

/// kubelet's hostname for a pod: its name cut to 63 characters, without trailing '-' or '.'.
fn kubelet_hostname(name: &str) -> String {
    let cut: String = name.chars().take(63).collect();
    cut.trim_end_matches(['-', '.']).to_owned()
}

/// A Kubernetes quantity in bytes, rounded up: `1024`, `64Mi`, `1.5Gi`, `500M`, `1e3`. `None`
/// for a malformed or negative one.
pub(crate) fn parse_quantity(text: &str) -> Option<u64> {
    Quantity::parse(text)
        .ok()
        .filter(|q| !q.is_negative())
        .and_then(|q| q.units())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("64Mi"), Some(64 << 20));
        assert_eq!(parse_quantity("1.5Gi"), Some(3 << 29));
        assert_eq!(parse_quantity("500M"), Some(500_000_000));
        assert_eq!(parse_quantity("1e3"), Some(1000));
        assert_eq!(parse_quantity("1024"), Some(1024));
        assert_eq!(parse_quantity("12Q"), None);
        assert_eq!(parse_quantity("-1"), None);
    }

    #[test]
    fn hostnames_follow_kubelet() {
        assert_eq!(kubelet_hostname("web"), "web");
        let long = format!("{}-x", "a".repeat(62));
        assert_eq!(kubelet_hostname(&long), "a".repeat(62));
    }
}
