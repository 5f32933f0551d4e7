//! The workloads of a manifest: Deployment, ReplicaSet, ReplicationController, StatefulSet,
//! DaemonSet, Job and CronJob, each checked and defaulted as the API server checks and
//! defaults it (`ValidateDeployment`, `ValidateJob`, ... and `SetDefaults_*`), and its pod
//! template checked as a Pod podkit runs. What is stored is the object with its defaults
//! filled in; a controller process of its own keeps it (`crate::controller`).

use serde_json::{Map, Value};

use super::objects::{claim, common_of, metadata};
use super::validate::{self, Validator};
use super::{Object, ObjectKind};

/// The template of a workload as a Pod podkit validates (`name` for the pod's name, which the
/// controller gives each pod): the template's metadata and spec. Problems are named under
/// the template's path (`at`).
pub(super) fn template_pod(
    raw: &Value,
    at: &str,
    name: &str,
) -> Result<super::PodPlan, Vec<String>> {
    let template = raw.pointer(at).cloned().unwrap_or(Value::Null);
    let mut metadata = template
        .get("metadata")
        .cloned()
        .unwrap_or_else(|| serde_json::json!({}));
    if let Some(meta) = metadata.as_object_mut() {
        meta.insert("name".into(), name.into());
        if let Some(ns) = raw.pointer("/metadata/namespace") {
            meta.insert("namespace".into(), ns.clone());
        }
    }
    let pod = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": template.get("spec").cloned().unwrap_or(Value::Null),
    });
    let prefix = at.trim_start_matches('/').replace('/', ".");
    validate::document(pod).map_err(|problems| {
        problems
            .into_iter()
            .map(|p| format!("{prefix}.{p}"))
            .collect()
    })
}

/// Reads a workload document of `kind`.
pub(super) fn workload(kind: ObjectKind, raw: &Value) -> Result<Object, Vec<String>> {
    match kind {
        ObjectKind::Deployment => deployment(raw),
        ObjectKind::ReplicaSet | ObjectKind::ReplicationController => replica_set(kind, raw),
        ObjectKind::DaemonSet => daemon_set(raw),
        ObjectKind::StatefulSet => stateful_set(raw),
        ObjectKind::Job => job(raw),
        ObjectKind::CronJob => cron_job(raw),
        other => Err(vec![format!("kind: {:?} is not a workload", other.kind())]),
    }
}

/// A count at `spec.<field>` (an int32 >= 0), or `default` when absent.
fn count(v: &mut Validator, spec: &Value, path: &str, field: &str) -> Option<u64> {
    match spec.get(field) {
        None | Some(Value::Null) => None,
        Some(n) => match n.as_u64().filter(|n| *n <= i32::MAX as u64) {
            Some(n) => Some(n),
            None => {
                v.bad(
                    &format!("{path}.{field}"),
                    format!("{n}: must be greater than or equal to 0"),
                );
                None
            }
        },
    }
}

/// `spec.selector` as a label selector (`matchLabels` and `matchExpressions`, checked as
/// `ValidateLabelSelector` checks them), which must not be empty and must select the
/// template's labels (the API server's "`selector` does not match template `labels`"). The
/// selector as kept.
fn label_selector(v: &mut Validator, spec: &Value, template_labels: &str) -> Value {
    let selector = spec.get("selector").cloned().unwrap_or(Value::Null);
    v.keys(
        &selector,
        "spec.selector",
        &["matchLabels", "matchExpressions"],
        &[],
    );
    let match_labels = selector
        .get("matchLabels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let expressions: Vec<Value> = selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (i, e) in expressions.iter().enumerate() {
        let at = format!("spec.selector.matchExpressions[{i}]");
        v.keys(e, &at, &["key", "operator", "values"], &[]);
        if e["key"].as_str().is_none_or(str::is_empty) {
            v.bad(&format!("{at}.key"), "Required value");
        }
        let values = e["values"].as_array().map_or(0, Vec::len);
        match e["operator"].as_str() {
            Some("In" | "NotIn") if values == 0 => v.bad(
                &format!("{at}.values"),
                "Required value: must be specified when `operator` is 'In' or 'NotIn'",
            ),
            Some("Exists" | "DoesNotExist") if values > 0 => v.bad(
                &format!("{at}.values"),
                "Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            ),
            Some("In" | "NotIn" | "Exists" | "DoesNotExist") => {}
            other => v.unsupported(
                &format!("{at}.operator"),
                other.unwrap_or(""),
                &["In", "NotIn", "Exists", "DoesNotExist"],
            ),
        }
    }
    if match_labels.is_empty() && expressions.is_empty() {
        v.bad(
            "spec.selector",
            "Invalid value: empty selector is invalid: give matchLabels (or matchExpressions)",
        );
    }
    let labels = spec
        .pointer(template_labels)
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if !expressions_select(&expressions, &labels) {
        v.bad(
            "spec.template.metadata.labels",
            "`selector` does not match template `labels`",
        );
    } else {
        matches_template(v, spec, &match_labels, template_labels);
    }
    let mut kept = Map::new();
    if !match_labels.is_empty() {
        kept.insert("matchLabels".into(), Value::Object(match_labels));
    }
    if !expressions.is_empty() {
        kept.insert("matchExpressions".into(), expressions.into());
    }
    Value::Object(kept)
}

/// Whether every `matchExpressions` requirement holds for `labels` (an operator not known
/// holds: validation refuses it).
fn expressions_select(expressions: &[Value], labels: &Map<String, Value>) -> bool {
    expressions.iter().all(|e| {
        let key = e["key"].as_str().unwrap_or("");
        let among = |value: Option<&Value>| {
            value.is_some_and(|l| e["values"].as_array().into_iter().flatten().any(|x| x == l))
        };
        match e["operator"].as_str() {
            Some("In") => among(labels.get(key)),
            Some("NotIn") => !among(labels.get(key)),
            Some("Exists") => labels.contains_key(key),
            Some("DoesNotExist") => !labels.contains_key(key),
            _ => true,
        }
    })
}

/// Whether a label selector (`matchLabels` and `matchExpressions`) selects an object with
/// `labels`: an empty selector selects everything, as a NetworkPolicy's `podSelector: {}`.
pub fn selects(selector: &Value, labels: &Map<String, Value>) -> bool {
    let matched = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, want)| labels.get(k) == Some(want));
    let expressions = selector["matchExpressions"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    matched && expressions_select(expressions, labels)
}

fn matches_template(
    v: &mut Validator,
    spec: &Value,
    selector: &Map<String, Value>,
    template_labels: &str,
) {
    let labels = spec
        .pointer(template_labels)
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if selector.iter().any(|(k, want)| labels.get(k) != Some(want)) {
        v.bad(
            "spec.template.metadata.labels",
            "`selector` does not match template `labels`",
        );
    }
}

/// The template's `restartPolicy`, which the kind allows only some of.
fn restart_policy(v: &mut Validator, spec: &Value, at: &str, allowed: &[&str]) {
    let policy = spec
        .pointer("/template/spec/restartPolicy")
        .and_then(Value::as_str)
        .unwrap_or("Always");
    if !allowed.contains(&policy) {
        let path = format!("{at}.template.spec.restartPolicy");
        v.unsupported(&path, policy, allowed);
    }
}

/// An intOrString of a rolling update (`maxSurge`, `maxUnavailable`): a count, or a percentage
/// of the replicas.
fn int_or_percent(v: &mut Validator, value: Option<&Value>, path: &str, default: &str) -> Value {
    match value {
        None | Some(Value::Null) => int_or_string(default),
        Some(Value::Number(n)) if n.as_u64().is_some() => Value::Number(n.clone()),
        Some(Value::String(s))
            if s.strip_suffix('%')
                .is_some_and(|n| n.parse::<u32>().is_ok_and(|n| n <= 100)) =>
        {
            s.as_str().into()
        }
        Some(other) => {
            v.bad(
                path,
                format!("{other}: must be a non-negative count or a percentage like 25%"),
            );
            int_or_string(default)
        }
    }
}

fn int_or_string(text: &str) -> Value {
    text.parse::<u64>()
        .map_or_else(|_| text.into(), Value::from)
}

fn is_zero(x: &Value) -> bool {
    x == &Value::from(0) || x == &Value::from("0%")
}

/// A rolling update's `maxSurge` and `maxUnavailable` at `path`, defaulted; not both zero.
fn rolling(
    v: &mut Validator,
    rolling: &Value,
    path: &str,
    surge_default: &str,
    unavailable_default: &str,
) -> Value {
    v.keys(rolling, path, &["maxSurge", "maxUnavailable"], &[]);
    let surge = int_or_percent(
        v,
        rolling.get("maxSurge"),
        &format!("{path}.maxSurge"),
        surge_default,
    );
    let unavailable = int_or_percent(
        v,
        rolling.get("maxUnavailable"),
        &format!("{path}.maxUnavailable"),
        unavailable_default,
    );
    if is_zero(&surge) && is_zero(&unavailable) {
        v.bad(
            &format!("{path}.maxUnavailable"),
            "may not be 0 when `maxSurge` is 0",
        );
    }
    serde_json::json!({"maxSurge": surge, "maxUnavailable": unavailable})
}

/// `minReadySeconds`, 0 when absent.
fn min_ready(v: &mut Validator, spec: &Value) -> u64 {
    count(v, spec, "spec", "minReadySeconds").unwrap_or(0)
}

fn finish(
    v: Validator,
    kind: ObjectKind,
    raw: &Value,
    name: String,
    namespace: String,
    spec: Value,
) -> Result<Object, Vec<String>> {
    if !v.problems.is_empty() {
        return Err(v.problems);
    }
    let value = serde_json::json!({
        "apiVersion": kind.api_version(),
        "kind": kind.kind(),
        "metadata": metadata(raw, &name, &namespace),
        "spec": spec,
    });
    Ok(Object {
        kind,
        namespace,
        name,
        value,
        immutable: false,
    })
}

/// An `apps/v1` Deployment: `replicas` (1), a selector that matches the template's labels, a
/// template that podkit runs (checked as a Pod; `restartPolicy` Always), the strategy
/// (RollingUpdate 25%/25%, or Recreate).
fn deployment(raw: &Value) -> Result<Object, Vec<String>> {
    let kind = ObjectKind::Deployment;
    let (mut v, name, namespace) =
        common_of(raw, kind.api_version(), "a Deployment", &["spec", "status"]);
    let spec = raw.get("spec").cloned().unwrap_or(Value::Null);
    v.keys(
        &spec,
        "spec",
        &[
            "replicas",
            "selector",
            "template",
            "strategy",
            "minReadySeconds",
        ],
        &["revisionHistoryLimit", "progressDeadlineSeconds"],
    );
    let replicas = count(&mut v, &spec, "spec", "replicas").unwrap_or(1);
    let selector = label_selector(&mut v, &spec, "/template/metadata/labels");
    restart_policy(&mut v, &spec, "spec", &["Always"]);
    if let Err(problems) = template_pod(raw, "/spec/template", &format!("{name}-0")) {
        v.problems.extend(problems);
    }
    let strategy = spec.get("strategy").cloned().unwrap_or(Value::Null);
    v.keys(&strategy, "spec.strategy", &["type", "rollingUpdate"], &[]);
    let strategy = match strategy.get("type").and_then(Value::as_str) {
        None | Some("RollingUpdate") => {
            let update = rolling(
                &mut v,
                strategy.get("rollingUpdate").unwrap_or(&Value::Null),
                "spec.strategy.rollingUpdate",
                "25%",
                "25%",
            );
            serde_json::json!({"type": "RollingUpdate", "rollingUpdate": update})
        }
        Some("Recreate") => {
            if strategy.get("rollingUpdate").is_some_and(|r| !r.is_null()) {
                v.bad(
                    "spec.strategy.rollingUpdate",
                    "may not be specified when strategy `type` is 'Recreate'",
                );
            }
            serde_json::json!({"type": "Recreate"})
        }
        Some(other) => {
            v.unsupported("spec.strategy.type", other, &["Recreate", "RollingUpdate"]);
            Value::Null
        }
    };
    let min_ready = min_ready(&mut v, &spec);
    let spec = serde_json::json!({
        "replicas": replicas,
        "selector": selector,
        "template": spec.get("template").cloned().unwrap_or(Value::Null),
        "strategy": strategy,
        "minReadySeconds": min_ready,
    });
    finish(v, kind, raw, name, namespace, spec)
}

/// An `apps/v1` ReplicaSet or a v1 ReplicationController: `replicas` pods of the template,
/// which never roll (a changed template is for the pods made after). A ReplicationController's
/// selector is a plain map, the template's labels when left out.
fn replica_set(kind: ObjectKind, raw: &Value) -> Result<Object, Vec<String>> {
    let what = format!("a {}", kind.kind());
    let (mut v, name, namespace) = common_of(raw, kind.api_version(), &what, &["spec", "status"]);
    let spec = raw.get("spec").cloned().unwrap_or(Value::Null);
    v.keys(
        &spec,
        "spec",
        &["replicas", "selector", "template", "minReadySeconds"],
        &[],
    );
    let replicas = count(&mut v, &spec, "spec", "replicas").unwrap_or(1);
    let selector = if kind == ObjectKind::ReplicationController {
        let given = spec
            .get("selector")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let selector = if given.is_empty() {
            spec.pointer("/template/metadata/labels")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default()
        } else {
            given
        };
        if selector.is_empty() {
            v.bad("spec.selector", "required: the labels of the pods");
        }
        matches_template(&mut v, &spec, &selector, "/template/metadata/labels");
        Value::Object(selector)
    } else {
        label_selector(&mut v, &spec, "/template/metadata/labels")
    };
    restart_policy(&mut v, &spec, "spec", &["Always"]);
    if let Err(problems) = template_pod(raw, "/spec/template", &format!("{name}-0")) {
        v.problems.extend(problems);
    }
    let min_ready = min_ready(&mut v, &spec);
    let spec = serde_json::json!({
        "replicas": replicas,
        "selector": selector,
        "template": spec.get("template").cloned().unwrap_or(Value::Null),
        "minReadySeconds": min_ready,
    });
    finish(v, kind, raw, name, namespace, spec)
}

/// An `apps/v1` DaemonSet: one pod, this host being the only node. `updateStrategy`
/// RollingUpdate (maxUnavailable 1, maxSurge 0) or OnDelete.
fn daemon_set(raw: &Value) -> Result<Object, Vec<String>> {
    let kind = ObjectKind::DaemonSet;
    let (mut v, name, namespace) =
        common_of(raw, kind.api_version(), "a DaemonSet", &["spec", "status"]);
    let spec = raw.get("spec").cloned().unwrap_or(Value::Null);
    v.keys(
        &spec,
        "spec",
        &["selector", "template", "updateStrategy", "minReadySeconds"],
        &["revisionHistoryLimit"],
    );
    let selector = label_selector(&mut v, &spec, "/template/metadata/labels");
    restart_policy(&mut v, &spec, "spec", &["Always"]);
    if let Err(problems) = template_pod(raw, "/spec/template", &format!("{name}-0")) {
        v.problems.extend(problems);
    }
    let strategy = spec.get("updateStrategy").cloned().unwrap_or(Value::Null);
    v.keys(
        &strategy,
        "spec.updateStrategy",
        &["type", "rollingUpdate"],
        &[],
    );
    let strategy = match strategy.get("type").and_then(Value::as_str) {
        None | Some("RollingUpdate") => {
            let update = rolling(
                &mut v,
                strategy.get("rollingUpdate").unwrap_or(&Value::Null),
                "spec.updateStrategy.rollingUpdate",
                "0",
                "1",
            );
            serde_json::json!({"type": "RollingUpdate", "rollingUpdate": update})
        }
        Some("OnDelete") => serde_json::json!({"type": "OnDelete"}),
        Some(other) => {
            v.unsupported(
                "spec.updateStrategy.type",
                other,
                &["OnDelete", "RollingUpdate"],
            );
            Value::Null
        }
    };
    let min_ready = min_ready(&mut v, &spec);
    let spec = serde_json::json!({
        "selector": selector,
        "template": spec.get("template").cloned().unwrap_or(Value::Null),
        "updateStrategy": strategy,
        "minReadySeconds": min_ready,
    });
    finish(v, kind, raw, name, namespace, spec)
}

/// A StatefulSet pod's template: the set's template with a `persistentVolumeClaim` volume
/// for each of `volumeClaimTemplates` (`<template>-<set>-<ordinal>`), which replaces a volume
/// of the same name, as the StatefulSet controller's `updateStorage` makes it.
pub fn stateful_template(set: &Value, ordinal: u64) -> Value {
    let mut set = set.clone();
    let name = set["metadata"]["name"].as_str().unwrap_or("").to_owned();
    let claims: Vec<String> = set["spec"]["volumeClaimTemplates"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["metadata"]["name"].as_str().map(str::to_owned))
        .collect();
    if claims.is_empty() {
        return set;
    }
    let Some(pod_spec) = set
        .pointer_mut("/spec/template/spec")
        .and_then(Value::as_object_mut)
    else {
        return set;
    };
    let volumes = pod_spec
        .entry("volumes")
        .or_insert_with(|| Value::Array(Vec::new()));
    if !volumes.is_array() {
        *volumes = Value::Array(Vec::new());
    }
    if let Some(list) = volumes.as_array_mut() {
        list.retain(|v| !claims.iter().any(|c| v["name"] == c.as_str()));
        for claim in &claims {
            list.push(serde_json::json!({
                "name": claim,
                "persistentVolumeClaim": {"claimName": format!("{claim}-{name}-{ordinal}")},
            }));
        }
    }
    set
}

/// An `apps/v1` StatefulSet: `name-0..N-1` (from `ordinals.start`), one at a time and each
/// Ready before the next (OrderedReady) or all at once (Parallel), each with its own claims
/// from `volumeClaimTemplates`; updates roll from the highest ordinal down to `partition`
/// (RollingUpdate) or wait for pods to be deleted (OnDelete).
fn stateful_set(raw: &Value) -> Result<Object, Vec<String>> {
    let kind = ObjectKind::StatefulSet;
    let (mut v, name, namespace) = common_of(
        raw,
        kind.api_version(),
        "a StatefulSet",
        &["spec", "status"],
    );
    let spec = raw.get("spec").cloned().unwrap_or(Value::Null);
    v.keys(
        &spec,
        "spec",
        &[
            "replicas",
            "selector",
            "template",
            "serviceName",
            "podManagementPolicy",
            "updateStrategy",
            "volumeClaimTemplates",
            "persistentVolumeClaimRetentionPolicy",
            "minReadySeconds",
            "ordinals",
        ],
        &["revisionHistoryLimit"],
    );
    let replicas = count(&mut v, &spec, "spec", "replicas").unwrap_or(1);
    let selector = label_selector(&mut v, &spec, "/template/metadata/labels");
    restart_policy(&mut v, &spec, "spec", &["Always"]);
    let policy = match spec.get("podManagementPolicy").and_then(Value::as_str) {
        None | Some("OrderedReady") => "OrderedReady",
        Some("Parallel") => "Parallel",
        Some(other) => {
            v.unsupported(
                "spec.podManagementPolicy",
                other,
                &["OrderedReady", "Parallel"],
            );
            "OrderedReady"
        }
    };
    let strategy = spec.get("updateStrategy").cloned().unwrap_or(Value::Null);
    v.keys(
        &strategy,
        "spec.updateStrategy",
        &["type", "rollingUpdate"],
        &[],
    );
    let strategy = match strategy.get("type").and_then(Value::as_str) {
        None | Some("RollingUpdate") => {
            let update = strategy
                .get("rollingUpdate")
                .cloned()
                .unwrap_or(Value::Null);
            v.keys(
                &update,
                "spec.updateStrategy.rollingUpdate",
                &["partition", "maxUnavailable"],
                &[],
            );
            let partition = count(
                &mut v,
                &update,
                "spec.updateStrategy.rollingUpdate",
                "partition",
            )
            .unwrap_or(0);
            match update.get("maxUnavailable") {
                None | Some(Value::Null) => {}
                Some(n) if n == &Value::from(1) => {}
                Some(n) => v.bad(
                    "spec.updateStrategy.rollingUpdate.maxUnavailable",
                    format!(
                        "{n}: not supported by podkit (an alpha feature of Kubernetes): pods \
                         are updated one at a time"
                    ),
                ),
            }
            serde_json::json!({"type": "RollingUpdate", "rollingUpdate": {"partition": partition}})
        }
        Some("OnDelete") => serde_json::json!({"type": "OnDelete"}),
        Some(other) => {
            v.unsupported(
                "spec.updateStrategy.type",
                other,
                &["OnDelete", "RollingUpdate"],
            );
            Value::Null
        }
    };
    let retention = spec
        .get("persistentVolumeClaimRetentionPolicy")
        .cloned()
        .unwrap_or(Value::Null);
    let path = "spec.persistentVolumeClaimRetentionPolicy";
    v.keys(&retention, path, &["whenDeleted", "whenScaled"], &[]);
    let mut kept_retention = Map::new();
    for field in ["whenDeleted", "whenScaled"] {
        let value = match retention.get(field).and_then(Value::as_str) {
            None | Some("Retain") => "Retain",
            Some("Delete") => "Delete",
            Some(other) => {
                v.unsupported(&format!("{path}.{field}"), other, &["Retain", "Delete"]);
                "Retain"
            }
        };
        kept_retention.insert(field.into(), value.into());
    }
    let start = spec
        .get("ordinals")
        .map(|o| {
            v.keys(o, "spec.ordinals", &["start"], &[]);
            count(&mut v, o, "spec.ordinals", "start").unwrap_or(0)
        })
        .unwrap_or(0);
    let mut templates = Vec::new();
    for (i, t) in spec
        .get("volumeClaimTemplates")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let at = format!("spec.volumeClaimTemplates[{i}]");
        let claim_name = t["metadata"]["name"].as_str().unwrap_or("").to_owned();
        let raw_claim = serde_json::json!({
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": t.get("metadata").cloned().unwrap_or(Value::Null),
            "spec": t.get("spec").cloned().unwrap_or(Value::Null),
        });
        match claim(&raw_claim) {
            Ok(kept) => {
                if templates
                    .iter()
                    .any(|(n, _): &(String, Value)| *n == claim_name)
                {
                    v.bad(
                        &format!("{at}.metadata.name"),
                        format!("Duplicate value: {claim_name:?}"),
                    );
                }
                let mut value = kept.value;
                if let Some(map) = value.as_object_mut() {
                    map.remove("status");
                    map.remove("apiVersion");
                    map.remove("kind");
                }
                if let Some(meta) = value["metadata"].as_object_mut() {
                    meta.remove("namespace");
                }
                templates.push((claim_name, value));
            }
            Err(problems) => v
                .problems
                .extend(problems.into_iter().map(|p| format!("{at}.{p}"))),
        }
    }
    let mut kept = serde_json::json!({
        "replicas": replicas,
        "selector": selector,
        "template": spec.get("template").cloned().unwrap_or(Value::Null),
        "podManagementPolicy": policy,
        "updateStrategy": strategy,
        "persistentVolumeClaimRetentionPolicy": kept_retention,
        "minReadySeconds": min_ready(&mut v, &spec),
        "volumeClaimTemplates": templates.into_iter().map(|(_, t)| t).collect::<Vec<_>>(),
    });
    if let Some(service) = spec.get("serviceName").and_then(Value::as_str) {
        kept["serviceName"] = service.into();
    }
    if start > 0 {
        kept["ordinals"] = serde_json::json!({"start": start});
    }
    // The template as each pod gets it: the claims' volumes in (so its mounts of them check).
    let whole = serde_json::json!({
        "metadata": {"name": name, "namespace": namespace},
        "spec": kept,
    });
    let pod = stateful_template(&whole, start);
    if let Err(problems) = template_pod(&pod, "/spec/template", &format!("{name}-{start}")) {
        v.problems.extend(problems);
    }
    finish(v, kind, raw, name, namespace, kept)
}

/// The `spec` of a Job (also a CronJob's `jobTemplate.spec`, at `path`), checked and
/// defaulted: parallelism and completions (both 1 when neither is given; completions left
/// out makes a work queue), backoffLimit 6, completionMode NonIndexed, suspend false; the
/// template's `restartPolicy` OnFailure or Never. The fields that change how pods fail or
/// succeed beyond these are refused, naming them.
fn job_spec(v: &mut Validator, raw: &Value, at: &str, name: &str) -> Value {
    let path = at.trim_start_matches('/').replace('/', ".");
    let spec = raw.pointer(at).cloned().unwrap_or(Value::Null);
    v.keys(
        &spec,
        &path,
        &[
            "parallelism",
            "completions",
            "activeDeadlineSeconds",
            "backoffLimit",
            "ttlSecondsAfterFinished",
            "completionMode",
            "suspend",
            "selector",
            "manualSelector",
            "template",
            "podReplacementPolicy",
            "managedBy",
            // Refused below with the reason.
            "podFailurePolicy",
            "successPolicy",
            "backoffLimitPerIndex",
            "maxFailedIndexes",
        ],
        &[],
    );
    for (field, why) in [
        (
            "podFailurePolicy",
            "pod failure policies are not supported by podkit yet",
        ),
        (
            "successPolicy",
            "success policies are not supported by podkit yet",
        ),
        (
            "backoffLimitPerIndex",
            "per-index backoff limits are not supported by podkit yet",
        ),
        (
            "maxFailedIndexes",
            "per-index backoff limits are not supported by podkit yet",
        ),
    ] {
        if spec.get(field).is_some_and(|f| !f.is_null()) {
            v.bad(&format!("{path}.{field}"), why);
        }
    }
    if let Some(by) = spec.get("managedBy").and_then(Value::as_str)
        && by != "kubernetes.io/job-controller"
    {
        v.bad(
            &format!("{path}.managedBy"),
            format!("{by:?}: podkit's own Job controller runs every Job"),
        );
    }
    let parallelism = count(v, &spec, &path, "parallelism");
    let mut completions = count(v, &spec, &path, "completions");
    if parallelism.is_none() && completions.is_none() {
        completions = Some(1);
    }
    let indexed = match spec.get("completionMode").and_then(Value::as_str) {
        None | Some("NonIndexed") => false,
        Some("Indexed") => true,
        Some(other) => {
            v.unsupported(
                &format!("{path}.completionMode"),
                other,
                &["NonIndexed", "Indexed"],
            );
            false
        }
    };
    if indexed {
        match completions {
            None => v.bad(
                &format!("{path}.completions"),
                "Required value: when completion mode is Indexed",
            ),
            Some(n) if n > 100_000 => v.bad(
                &format!("{path}.completions"),
                "must be less than or equal to 100000 when completion mode is Indexed",
            ),
            Some(_) => {}
        }
    }
    let deadline = count(v, &spec, &path, "activeDeadlineSeconds");
    if deadline == Some(0) {
        v.bad(
            &format!("{path}.activeDeadlineSeconds"),
            "must be greater than 0",
        );
    }
    let backoff = count(v, &spec, &path, "backoffLimit").unwrap_or(6);
    let ttl = count(v, &spec, &path, "ttlSecondsAfterFinished");
    let suspend = match spec.get("suspend") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            v.bad(&format!("{path}.suspend"), "must be true or false");
            false
        }
    };
    let manual = spec.get("manualSelector") == Some(&Value::Bool(true));
    let mut kept = Map::new();
    if spec.get("selector").is_some_and(|s| !s.is_null()) {
        if manual {
            let selector = label_selector(v, &spec, "/template/metadata/labels");
            kept.insert("selector".into(), selector);
            kept.insert("manualSelector".into(), true.into());
        } else {
            v.bad(
                &format!("{path}.selector"),
                "`selector` will be auto-generated: leave it out (or set manualSelector: true)",
            );
        }
    }
    match spec.get("podReplacementPolicy").and_then(Value::as_str) {
        None | Some("TerminatingOrFailed") | Some("Failed") => {}
        Some(other) => v.unsupported(
            &format!("{path}.podReplacementPolicy"),
            other,
            &["TerminatingOrFailed", "Failed"],
        ),
    }
    restart_policy(v, &spec, &path, &["OnFailure", "Never"]);
    if let Err(problems) = template_pod(raw, &format!("{at}/template"), &format!("{name}-0")) {
        v.problems.extend(problems);
    }
    kept.insert("parallelism".into(), parallelism.unwrap_or(1).into());
    if let Some(c) = completions {
        kept.insert("completions".into(), c.into());
    }
    kept.insert("backoffLimit".into(), backoff.into());
    kept.insert(
        "completionMode".into(),
        if indexed { "Indexed" } else { "NonIndexed" }.into(),
    );
    kept.insert("suspend".into(), suspend.into());
    if let Some(d) = deadline {
        kept.insert("activeDeadlineSeconds".into(), d.into());
    }
    if let Some(t) = ttl {
        kept.insert("ttlSecondsAfterFinished".into(), t.into());
    }
    kept.insert(
        "template".into(),
        spec.get("template").cloned().unwrap_or(Value::Null),
    );
    Value::Object(kept)
}

/// A `batch/v1` Job: pods of the template run to completion.
fn job(raw: &Value) -> Result<Object, Vec<String>> {
    let kind = ObjectKind::Job;
    let (mut v, name, namespace) = common_of(raw, kind.api_version(), "a Job", &["spec", "status"]);
    let spec = job_spec(&mut v, raw, "/spec", &name);
    finish(v, kind, raw, name, namespace, spec)
}

/// A `batch/v1` CronJob: a Job of `jobTemplate` at each time of `schedule` (cron syntax, in
/// `timeZone` or the host's), with `concurrencyPolicy`, `suspend`, `startingDeadlineSeconds`
/// and the history limits (3 succeeded, 1 failed).
fn cron_job(raw: &Value) -> Result<Object, Vec<String>> {
    let kind = ObjectKind::CronJob;
    let (mut v, name, namespace) =
        common_of(raw, kind.api_version(), "a CronJob", &["spec", "status"]);
    // Its Jobs are named `<name>-<minutes since the epoch>` (11 more characters).
    if name.len() > 52 {
        v.bad("metadata.name", "must be no more than 52 characters");
    }
    let spec = raw.get("spec").cloned().unwrap_or(Value::Null);
    v.keys(
        &spec,
        "spec",
        &[
            "schedule",
            "timeZone",
            "startingDeadlineSeconds",
            "concurrencyPolicy",
            "suspend",
            "jobTemplate",
            "successfulJobsHistoryLimit",
            "failedJobsHistoryLimit",
        ],
        &[],
    );
    let schedule = spec.get("schedule").and_then(Value::as_str).unwrap_or("");
    if schedule.is_empty() {
        v.bad("spec.schedule", "Required value");
    } else if let Err(why) = crate::cron::Schedule::parse(schedule) {
        v.bad(
            "spec.schedule",
            format!("Invalid value: {schedule:?}: {why}"),
        );
    }
    let zone = spec.get("timeZone").and_then(Value::as_str);
    if let Err(why) = crate::cron::time_zone(zone) {
        v.bad("spec.timeZone", why);
    }
    let policy = match spec.get("concurrencyPolicy").and_then(Value::as_str) {
        None | Some("Allow") => "Allow",
        Some("Forbid") => "Forbid",
        Some("Replace") => "Replace",
        Some(other) => {
            v.unsupported(
                "spec.concurrencyPolicy",
                other,
                &["Allow", "Forbid", "Replace"],
            );
            "Allow"
        }
    };
    let suspend = match spec.get("suspend") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            v.bad("spec.suspend", "must be true or false");
            false
        }
    };
    let deadline = count(&mut v, &spec, "spec", "startingDeadlineSeconds");
    let succeeded = count(&mut v, &spec, "spec", "successfulJobsHistoryLimit").unwrap_or(3);
    let failed = count(&mut v, &spec, "spec", "failedJobsHistoryLimit").unwrap_or(1);
    let template = spec.get("jobTemplate").cloned().unwrap_or(Value::Null);
    v.keys(&template, "spec.jobTemplate", &["metadata", "spec"], &[]);
    let job = job_spec(&mut v, raw, "/spec/jobTemplate/spec", &format!("{name}-0"));
    let mut job_template = serde_json::json!({"spec": job});
    let mut meta = Map::new();
    for key in ["labels", "annotations"] {
        if let Some(value) = template.pointer(&format!("/metadata/{key}")) {
            meta.insert(key.into(), value.clone());
        }
    }
    if !meta.is_empty() {
        job_template["metadata"] = Value::Object(meta);
    }
    let mut kept = serde_json::json!({
        "schedule": schedule,
        "concurrencyPolicy": policy,
        "suspend": suspend,
        "jobTemplate": job_template,
        "successfulJobsHistoryLimit": succeeded,
        "failedJobsHistoryLimit": failed,
    });
    if let Some(zone) = zone {
        kept["timeZone"] = zone.into();
    }
    if let Some(d) = deadline {
        kept["startingDeadlineSeconds"] = d.into();
    }
    finish(v, kind, raw, name, namespace, kept)
}
