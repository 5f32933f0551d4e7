//! The documents of a manifest besides Pods: ConfigMaps and Secrets (kept in podkit's object
//! store for the pods that read them), and the kinds that mean nothing on one host (accepted
//! and listed with the reason, never silently).
//!
//! Each is checked as the API server checks it (`ValidateConfigMap`, `ValidateSecret`): a DNS
//! subdomain name, keys as `IsConfigMapKey` allows them, base64 where the API takes bytes, at
//! most 1 MiB of data, the keys a typed Secret needs. What is stored is what the API server
//! would keep: a Secret's `stringData` merged into its `data` (base64), its `type` defaulted to
//! `Opaque`, the namespace filled in.

use serde_json::{Map, Value};

use super::validate::{self, Validator};
use super::{Object, ObjectKind};

/// The API server's bound on a ConfigMap's or Secret's data (`MaxSecretSize`,
/// `RuntimeObjectsSizeLimit`): 1 MiB.
const MAX_DATA: usize = 1024 * 1024;

/// Kinds a manifest may hold that mean nothing on one host, and why: accepted, and named in
/// what `apply` says, never dropped silently.
const IGNORED_KINDS: &[(&str, &str)] = &[
    (
        "ServiceAccount",
        "there is no API server for pods to call, so no identity to give them",
    ),
    (
        "Role",
        "there is no API server whose access it would control",
    ),
    (
        "ClusterRole",
        "there is no API server whose access it would control",
    ),
    (
        "RoleBinding",
        "there is no API server whose access it would control",
    ),
    (
        "ClusterRoleBinding",
        "there is no API server whose access it would control",
    ),
    (
        "Ingress",
        "there is no ingress controller: publish a hostPort (or put `podkit proxy` in front)",
    ),
    ("IngressClass", "there is no ingress controller"),
    (
        "HorizontalPodAutoscaler",
        "there are no metrics to scale on: replicas stay as given",
    ),
    (
        "PodDisruptionBudget",
        "one host has no voluntary evictions to budget",
    ),
    ("PriorityClass", "there is no scheduler to preempt with"),
    ("LimitRange", "podkit applies no namespace defaults"),
    ("ResourceQuota", "podkit enforces no namespace quotas"),
    (
        "StorageClass",
        "volumes are directories under podkit's storage",
    ),
    (
        "Namespace",
        "namespaces need no making: podkit keeps objects by their metadata.namespace",
    ),
];

/// Kinds podkit will run but does not yet: refused with that said.
const NOT_YET: &[&str] = &["PersistentVolume"];

/// What a document that is neither a Pod nor a RuntimeClass is.
pub(super) enum Other {
    Object(Object),
    /// `Kind/name: why it is ignored`.
    Ignored(String),
}

/// Reads a document that is not a Pod or RuntimeClass: a ConfigMap, a Secret, or a kind that is
/// ignored; anything else is refused naming its kind.
pub(super) fn other(raw: &Value) -> Option<Result<Other, Vec<String>>> {
    let kind = raw.get("kind").and_then(Value::as_str)?;
    Some(match kind {
        "ConfigMap" => config_map(raw).map(Other::Object),
        "Secret" => secret(raw).map(Other::Object),
        "PersistentVolumeClaim" => claim(raw).map(Other::Object),
        "Service" => service(raw).map(Other::Object),
        "NetworkPolicy" => network_policy(raw).map(Other::Object),
        _ => match ObjectKind::from_kind(kind).filter(|k| k.is_workload()) {
            Some(workload) => super::workloads::workload(workload, raw).map(Other::Object),
            None => {
                if let Some((_, why)) = IGNORED_KINDS.iter().find(|(k, _)| *k == kind) {
                    let name = raw
                        .pointer("/metadata/name")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    Ok(Other::Ignored(format!("{kind}/{name}: ignored: {why}")))
                } else if NOT_YET.contains(&kind) {
                    Err(vec![format!(
                        "kind: {kind:?} is not supported by podkit yet (it makes each \
                         PersistentVolumeClaim's volume itself, a directory under its storage)"
                    )])
                } else {
                    Err(vec![format!(
                        "kind: {kind:?} is not a kind podkit knows (it runs Pods, {}; keeps \
                         ConfigMaps, Secrets, PersistentVolumeClaims, Services and \
                         NetworkPolicies (not enforced); and ignores {} with the reason)",
                        ObjectKind::WORKLOADS
                            .iter()
                            .map(|k| format!("{}s", k.kind()))
                            .collect::<Vec<_>>()
                            .join(", "),
                        IGNORED_KINDS
                            .iter()
                            .map(|(k, _)| *k)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )])
                }
            }
        },
    })
}

/// The checks of both kinds: apiVersion, keys, metadata, name and namespace. The validator,
/// the name and the namespace.
fn common(raw: &Value, what: &str, fields: &[&str]) -> (Validator, String, String) {
    common_of(raw, "v1", what, fields)
}

/// [`common`] for another apiVersion (`apps/v1`).
pub(super) fn common_of(
    raw: &Value,
    api_version: &str,
    what: &str,
    fields: &[&str],
) -> (Validator, String, String) {
    let (mut v, name) = validate::object(raw, api_version, what, fields, &[]);
    let namespace = match raw.pointer("/metadata/namespace").and_then(Value::as_str) {
        None | Some("") => "default".to_owned(),
        Some(ns) => {
            if let Err(why) = validate::dns_label(ns) {
                v.bad("metadata.namespace", format!("{ns:?} {why}"));
            }
            ns.to_owned()
        }
    };
    (v, name, namespace)
}

/// The metadata kept: name, namespace, labels and annotations (the server's own fields are
/// made again when stored).
pub(super) fn metadata(raw: &Value, name: &str, namespace: &str) -> Value {
    let mut meta = Map::new();
    meta.insert("name".into(), name.into());
    meta.insert("namespace".into(), namespace.into());
    for key in ["labels", "annotations"] {
        if let Some(v) = raw.pointer(&format!("/metadata/{key}")) {
            meta.insert(key.into(), v.clone());
        }
    }
    Value::Object(meta)
}

/// A map of strings at `field` (`data`, `binaryData`, `stringData`): each key valid, each value a
/// string (base64 when `base64`, which is checked). The keys with their values' sizes in bytes.
fn string_map(
    v: &mut Validator,
    raw: &Value,
    field: &str,
    base64: bool,
) -> Vec<(String, String, usize)> {
    use base64::Engine as _;
    let Some(value) = raw.get(field) else {
        return Vec::new();
    };
    let Some(map) = value.as_object() else {
        if !value.is_null() {
            v.bad(field, "must be a map of strings");
        }
        return Vec::new();
    };
    let mut out = Vec::new();
    for (key, value) in map {
        let path = format!("{field}[{key:?}]");
        if let Err(why) = validate::data_key(key) {
            v.bad(&path, format!("{key:?}: {why}"));
            continue;
        }
        let Some(text) = value.as_str() else {
            v.bad(
                &path,
                format!("must be a string, not {value} (quote it: \"{value}\"), as the API server takes it"),
            );
            continue;
        };
        let size = if base64 {
            match base64::engine::general_purpose::STANDARD.decode(text) {
                Ok(bytes) => bytes.len(),
                Err(err) => {
                    v.bad(&path, format!("not base64: {err}"));
                    continue;
                }
            }
        } else {
            text.len()
        };
        out.push((key.clone(), text.to_owned(), size));
    }
    out
}

fn check_size(v: &mut Validator, what: &str, sizes: impl Iterator<Item = usize>) {
    let total: usize = sizes.sum();
    if total > MAX_DATA {
        v.bad(
            "data",
            format!("Too long: {what} may hold at most {MAX_DATA} bytes, this one {total}"),
        );
    }
}

fn immutable(v: &mut Validator, raw: &Value) -> bool {
    match raw.get("immutable") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            v.bad("immutable", "must be true or false");
            false
        }
    }
}

/// What `apply`, `get` and `describe` say of every NetworkPolicy.
pub const NETWORK_POLICY_NOT_ENFORCED: &str = "podkit filters no traffic between pods: every pod \
     still reaches every other, as on a cluster whose network plugin has no NetworkPolicy \
     support";

/// A networking.k8s.io/v1 NetworkPolicy: kept as the API server keeps it (its spec checked
/// against the API's types, `policyTypes` defaulted as the API server defaults them), and not
/// enforced.
pub(super) fn network_policy(raw: &Value) -> Result<Object, Vec<String>> {
    use k8s_openapi::api::networking::v1::NetworkPolicySpec;
    let (mut v, name, namespace) =
        common_of(raw, "networking.k8s.io/v1", "a NetworkPolicy", &["spec"]);
    let mut spec = raw.get("spec").cloned().unwrap_or(Value::Null);
    match serde_json::from_value::<NetworkPolicySpec>(spec.clone()) {
        Err(err) => v.bad("spec", format!("not a NetworkPolicy spec: {err}")),
        Ok(parsed) => {
            for (i, t) in parsed.policy_types.iter().flatten().enumerate() {
                if t != "Ingress" && t != "Egress" {
                    v.unsupported(&format!("spec.policyTypes[{i}]"), t, &["Ingress", "Egress"]);
                }
            }
            // The API server's default: Ingress, and Egress when the policy has egress rules.
            if parsed.policy_types.is_none() {
                let mut types = vec![Value::from("Ingress")];
                if parsed.egress.is_some() {
                    types.push("Egress".into());
                }
                spec["policyTypes"] = Value::Array(types);
            }
        }
    }
    if !v.problems.is_empty() {
        return Err(v.problems);
    }
    let mut value = Map::new();
    value.insert("apiVersion".into(), "networking.k8s.io/v1".into());
    value.insert("kind".into(), "NetworkPolicy".into());
    value.insert("metadata".into(), metadata(raw, &name, &namespace));
    value.insert("spec".into(), spec);
    Ok(Object {
        kind: ObjectKind::NetworkPolicy,
        namespace,
        name,
        value: Value::Object(value),
        immutable: false,
    })
}

/// A v1 ConfigMap.
pub(super) fn config_map(raw: &Value) -> Result<Object, Vec<String>> {
    let (mut v, name, namespace) = common(raw, "a ConfigMap", &["data", "binaryData", "immutable"]);
    let data = string_map(&mut v, raw, "data", false);
    let binary = string_map(&mut v, raw, "binaryData", true);
    for (key, _, _) in &binary {
        if data.iter().any(|(k, _, _)| k == key) {
            v.bad(
                &format!("data[{key:?}]"),
                "duplicate of key present in binaryData",
            );
        }
    }
    check_size(
        &mut v,
        "a ConfigMap",
        data.iter().chain(&binary).map(|(k, _, n)| k.len() + n),
    );
    let immutable = immutable(&mut v, raw);
    if !v.problems.is_empty() {
        return Err(v.problems);
    }
    let mut value = Map::new();
    value.insert("apiVersion".into(), "v1".into());
    value.insert("kind".into(), "ConfigMap".into());
    value.insert("metadata".into(), metadata(raw, &name, &namespace));
    let to_map = |items: &[(String, String, usize)]| {
        Value::Object(
            items
                .iter()
                .map(|(k, text, _)| (k.clone(), Value::String(text.clone())))
                .collect(),
        )
    };
    if !data.is_empty() {
        value.insert("data".into(), to_map(&data));
    }
    if !binary.is_empty() {
        value.insert("binaryData".into(), to_map(&binary));
    }
    if immutable {
        value.insert("immutable".into(), true.into());
    }
    Ok(Object {
        kind: ObjectKind::ConfigMap,
        namespace,
        name,
        value: Value::Object(value),
        immutable,
    })
}

/// The keys a Secret of a known type must have (`ValidateSecret`).
fn required_keys(kind: &str) -> &'static [&'static str] {
    match kind {
        "kubernetes.io/dockercfg" => &[".dockercfg"],
        "kubernetes.io/dockerconfigjson" => &[".dockerconfigjson"],
        "kubernetes.io/tls" => &["tls.crt", "tls.key"],
        "kubernetes.io/ssh-auth" => &["ssh-privatekey"],
        _ => &[],
    }
}

/// A v1 Secret.
pub(super) fn secret(raw: &Value) -> Result<Object, Vec<String>> {
    use base64::Engine as _;
    let (mut v, name, namespace) = common(
        raw,
        "a Secret",
        &["type", "data", "stringData", "immutable"],
    );
    let kind = match raw.get("type") {
        None | Some(Value::Null) => "Opaque".to_owned(),
        Some(Value::String(t)) if t.is_empty() => "Opaque".to_owned(),
        Some(Value::String(t)) => t.clone(),
        Some(_) => {
            v.bad("type", "must be a string");
            "Opaque".to_owned()
        }
    };
    if kind == "kubernetes.io/service-account-token" {
        v.bad(
            "type",
            "\"kubernetes.io/service-account-token\" is not supported by podkit: there is no \
             API server to issue the token",
        );
    }
    let data = string_map(&mut v, raw, "data", true);
    let strings = string_map(&mut v, raw, "stringData", false);
    // stringData wins over data for the same key, as the API server merges them.
    let mut merged: Vec<(String, String, usize)> = data
        .into_iter()
        .filter(|(k, _, _)| !strings.iter().any(|(s, _, _)| s == k))
        .collect();
    for (key, text, size) in strings {
        merged.push((
            key,
            base64::engine::general_purpose::STANDARD.encode(text),
            size,
        ));
    }
    merged.sort();
    for key in required_keys(&kind) {
        if !merged.iter().any(|(k, _, _)| k == key) {
            v.bad(
                &format!("data[{key:?}]"),
                format!("required for a Secret of type {kind:?}"),
            );
        }
    }
    if kind == "kubernetes.io/basic-auth"
        && !merged
            .iter()
            .any(|(k, _, _)| k == "username" || k == "password")
    {
        v.bad(
            "data",
            "a Secret of type \"kubernetes.io/basic-auth\" needs a username or a password",
        );
    }
    check_size(
        &mut v,
        "a Secret",
        merged.iter().map(|(k, _, n)| k.len() + n),
    );
    let immutable = immutable(&mut v, raw);
    if !v.problems.is_empty() {
        return Err(v.problems);
    }
    let mut value = Map::new();
    value.insert("apiVersion".into(), "v1".into());
    value.insert("kind".into(), "Secret".into());
    value.insert("metadata".into(), metadata(raw, &name, &namespace));
    value.insert("type".into(), kind.into());
    if !merged.is_empty() {
        value.insert(
            "data".into(),
            Value::Object(
                merged
                    .into_iter()
                    .map(|(k, text, _)| (k, Value::String(text)))
                    .collect(),
            ),
        );
    }
    if immutable {
        value.insert("immutable".into(), true.into());
    }
    Ok(Object {
        kind: ObjectKind::Secret,
        namespace,
        name,
        value: Value::Object(value),
        immutable,
    })
}

/// The access modes a claim may ask for.
const ACCESS_MODES: [&str; 4] = [
    "ReadWriteOnce",
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOncePod",
];

/// A v1 PersistentVolumeClaim: a directory under podkit's storage, made when the claim is
/// kept and bound at once, as a local-path provisioner with Immediate binding binds it. Its
/// size is the request, not enforced (a directory has none, as local-path's has none); a claim
/// that would bind to a given volume or be filled from a snapshot is refused.
pub(super) fn claim(raw: &Value) -> Result<Object, Vec<String>> {
    let (mut v, name, namespace) = common(raw, "a PersistentVolumeClaim", &["spec", "status"]);
    let spec = raw.get("spec").cloned().unwrap_or(Value::Null);
    v.keys(
        &spec,
        "spec",
        &["accessModes", "resources", "storageClassName", "volumeMode"],
        &[],
    );
    let modes: Vec<String> = match spec.get("accessModes").and_then(Value::as_array) {
        Some(list) if !list.is_empty() => list
            .iter()
            .filter_map(|m| {
                let m = m.as_str().unwrap_or_default();
                if ACCESS_MODES.contains(&m) {
                    Some(m.to_owned())
                } else {
                    v.bad(
                        "spec.accessModes",
                        format!("{m:?}: must be one of {}", ACCESS_MODES.join(", ")),
                    );
                    None
                }
            })
            .collect(),
        _ => {
            v.bad("spec.accessModes", "at least 1 access mode is required");
            Vec::new()
        }
    };
    let resources = spec.get("resources").cloned().unwrap_or(Value::Null);
    v.keys(&resources, "spec.resources", &["requests", "limits"], &[]);
    let storage = resources
        .pointer("/requests/storage")
        .and_then(|q| match q {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        });
    match &storage {
        None => v.bad("spec.resources.requests.storage", "required"),
        Some(q) => match super::quantity::Quantity::parse(q) {
            Ok(parsed) if !parsed.is_negative() && !parsed.is_zero() => {}
            Ok(_) => v.bad(
                "spec.resources.requests.storage",
                format!("{q:?}: must be greater than zero"),
            ),
            Err(why) => v.bad("spec.resources.requests.storage", format!("{q:?}: {why}")),
        },
    }
    match spec.get("volumeMode").and_then(Value::as_str) {
        None | Some("Filesystem") => {}
        Some("Block") => v.bad(
            "spec.volumeMode",
            "\"Block\" is not supported by podkit: its claims are directories",
        ),
        Some(other) => v.bad(
            "spec.volumeMode",
            format!("{other:?}: must be Filesystem or Block"),
        ),
    }
    if !v.problems.is_empty() {
        return Err(v.problems);
    }
    let mut kept = Map::new();
    kept.insert("accessModes".into(), modes.clone().into());
    kept.insert(
        "resources".into(),
        serde_json::json!({"requests": {"storage": storage.clone().unwrap_or_default()}}),
    );
    if let Some(class) = spec.get("storageClassName") {
        kept.insert("storageClassName".into(), class.clone());
    }
    kept.insert("volumeMode".into(), "Filesystem".into());
    let value = serde_json::json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": metadata(raw, &name, &namespace),
        "spec": Value::Object(kept),
        "status": {
            "phase": "Bound",
            "accessModes": modes,
            "capacity": {"storage": storage.unwrap_or_default()},
        },
    });
    Ok(Object {
        kind: ObjectKind::PersistentVolumeClaim,
        namespace,
        name,
        value,
        immutable: false,
    })
}

/// The Service types and what the API server calls them.
const SERVICE_TYPES: [&str; 4] = ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"];

/// A v1 Service, checked as `ValidateService` checks what podkit will act on: its type, its
/// ports (each a protocol, a port, a targetPort as a number or a container port's name, a
/// nodePort in 30000-32767 for NodePort and LoadBalancer; named, uniquely, when there are
/// several), its selector, `clusterIP: None` (headless) and an ExternalName's `externalName`.
/// Kept and listed (`get svc`); the traffic it stands for (an IP, a name, endpoints) is the pod
/// network's work, which `apply` and `describe` say.
pub(super) fn service(raw: &Value) -> Result<Object, Vec<String>> {
    let (mut v, name, namespace) = common(raw, "a Service", &["spec", "status"]);
    let spec = raw.get("spec").cloned().unwrap_or(Value::Null);
    v.keys(
        &spec,
        "spec",
        &[
            "type",
            "ports",
            "selector",
            "clusterIP",
            "clusterIPs",
            "externalName",
            "sessionAffinity",
            "publishNotReadyAddresses",
            "ipFamilies",
            "ipFamilyPolicy",
            "externalTrafficPolicy",
            "internalTrafficPolicy",
        ],
        &[
            "loadBalancerIP",
            "loadBalancerSourceRanges",
            "loadBalancerClass",
            "externalIPs",
            "allocateLoadBalancerNodePorts",
            "healthCheckNodePort",
            "sessionAffinityConfig",
            "trafficDistribution",
        ],
    );
    let kind = match spec.get("type").and_then(Value::as_str) {
        None => "ClusterIP",
        Some(t) => match SERVICE_TYPES.iter().find(|k| **k == t) {
            Some(k) => k,
            None => {
                v.unsupported("spec.type", t, &SERVICE_TYPES);
                "ClusterIP"
            }
        },
    };
    if kind == "ExternalName" {
        match spec.get("externalName").and_then(Value::as_str) {
            Some(host) if validate::dns_subdomain(host).is_ok() => {}
            Some(host) => v.bad("spec.externalName", format!("{host:?}: must be a DNS name")),
            None => v.bad("spec.externalName", "Required value"),
        }
    }
    let ports = spec
        .get("ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if ports.is_empty() && kind != "ExternalName" && spec.get("clusterIP") != Some(&"None".into()) {
        v.bad("spec.ports", "Required value");
    }
    let mut names = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let at = format!("spec.ports[{i}]");
        v.keys(
            port,
            &at,
            &[
                "name",
                "protocol",
                "port",
                "targetPort",
                "nodePort",
                "appProtocol",
            ],
            &[],
        );
        match port.get("name").and_then(Value::as_str) {
            Some(n) => {
                if let Err(why) = validate::dns_label(n) {
                    v.bad(&format!("{at}.name"), format!("{n:?} {why}"));
                }
                if names.contains(&n) {
                    v.bad(&format!("{at}.name"), format!("Duplicate value: {n:?}"));
                }
                names.push(n);
            }
            None if ports.len() > 1 => v.bad(
                &format!("{at}.name"),
                "Required value: each port must be named when there are several",
            ),
            None => {}
        }
        match port.get("protocol").and_then(Value::as_str) {
            None | Some("TCP" | "UDP" | "SCTP") => {}
            Some(p) => v.unsupported(&format!("{at}.protocol"), p, &["SCTP", "TCP", "UDP"]),
        }
        let number = |value: Option<&Value>| {
            value
                .and_then(Value::as_u64)
                .filter(|n| (1..=65535).contains(n))
        };
        if number(port.get("port")).is_none() {
            v.bad(
                &format!("{at}.port"),
                "must be between 1 and 65535, inclusive",
            );
        }
        match port.get("targetPort") {
            None | Some(Value::Null) => {}
            Some(Value::String(n)) if validate::dns_label(n).is_ok() && n.len() <= 15 => {}
            Some(n @ Value::Number(_)) if number(Some(n)).is_some() => {}
            Some(other) => v.bad(
                &format!("{at}.targetPort"),
                format!("{other}: must be a port number (1-65535) or a container port's name"),
            ),
        }
        if let Some(node) = port.get("nodePort").filter(|n| !n.is_null()) {
            if kind == "ClusterIP" {
                v.bad(
                    &format!("{at}.nodePort"),
                    "Forbidden: may not be used when `type` is 'ClusterIP'",
                );
            } else if !node.as_u64().is_some_and(|n| (30000..=32767).contains(&n)) {
                v.bad(
                    &format!("{at}.nodePort"),
                    format!("{node}: provided port is not in the valid range. The range of valid ports is 30000-32767"),
                );
            }
        }
    }
    // sessionAffinity, as the API server checks it (`validateServiceSessionAffinity`).
    let affinity = spec
        .get("sessionAffinity")
        .and_then(Value::as_str)
        .unwrap_or("None");
    let config = spec.get("sessionAffinityConfig").filter(|c| !c.is_null());
    match affinity {
        "None" if config.is_some() => v.bad(
            "spec.sessionAffinityConfig",
            "must not be set when `sessionAffinity` is None",
        ),
        "None" => {}
        "ClientIP" => {
            let timeout = config.and_then(|c| c["clientIP"].get("timeoutSeconds"));
            if let Some(timeout) = timeout.filter(|t| !t.is_null())
                && !timeout.as_i64().is_some_and(|t| (1..=86_400).contains(&t))
            {
                v.bad(
                    "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                    format!("Invalid value: {timeout}: must be greater than 0 and less than 86400"),
                );
            }
        }
        other => v.bad(
            "spec.sessionAffinity",
            format!("Unsupported value: {other:?}: supported values: \"ClientIP\", \"None\""),
        ),
    }
    let selector = spec.get("selector").cloned().unwrap_or(Value::Null);
    if !selector.is_null() {
        match selector.as_object() {
            Some(map) if map.values().all(Value::is_string) => {}
            _ => v.bad("spec.selector", "must be a map of label names to values"),
        }
    }
    if !v.problems.is_empty() {
        return Err(v.problems);
    }
    let mut kept = spec.as_object().cloned().unwrap_or_default();
    kept.insert("type".into(), kind.into());
    let value = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(raw, &name, &namespace),
        "spec": Value::Object(kept),
    });
    Ok(Object {
        kind: ObjectKind::Service,
        namespace,
        name,
        value,
        immutable: false,
    })
}
