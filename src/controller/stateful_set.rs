//! A StatefulSet's pods, kept as the StatefulSet controller of a cluster keeps them
//! (`pkg/controller/statefulset`): `<set>-<ordinal>` for each ordinal from `ordinals.start`,
//! each with its own PersistentVolumeClaims from `volumeClaimTemplates`
//! (`<template>-<set>-<ordinal>`, made before the pod and kept when it goes, so a pod made
//! again finds its data). OrderedReady (the default) makes one pod at a time, each Running
//! and Ready before the next, and removes them from the highest ordinal down, one at a time;
//! Parallel makes and removes them all at once. A changed template rolls the pods from the
//! highest ordinal down to `partition`, one at a time, each Ready before the next
//! (RollingUpdate), or only as they are deleted (OnDelete). A pod that ended, failed or lost its
//! supervisor is made again under the same name once the old one is gone.
//!
//! Each pod has its name as hostname and the labels `statefulset.kubernetes.io/pod-name`,
//! `apps.kubernetes.io/pod-index` and `controller-revision-hash` (`<set>-<template hash>`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::{
    Control, Creations, Workload, available, delete_pod, leaving, owned_pods, owner_ref,
    template_hash,
};
use crate::spec::{Object, ObjectKind};
use crate::state::PodState;

pub(super) struct StatefulSet {
    context: Workload,
    creations: Creations,
}

impl StatefulSet {
    pub(super) fn new(context: Workload) -> StatefulSet {
        StatefulSet {
            context,
            creations: Creations::default(),
        }
    }
}

/// The claims of the set's pods, by ordinal: `<template>-<set>-<ordinal>`.
fn claim_names(set: &Value, ordinal: u64) -> Vec<String> {
    let name = set["metadata"]["name"].as_str().unwrap_or("");
    set["spec"]["volumeClaimTemplates"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["metadata"]["name"].as_str())
        .map(|t| format!("{t}-{name}-{ordinal}"))
        .collect()
}

/// The claims to delete when the set is deleted: all of its pods' claims that exist, with
/// `persistentVolumeClaimRetentionPolicy.whenDeleted: Delete`; none with Retain (the default).
pub(super) fn claims_deleted_with(set: &Value) -> Vec<String> {
    if set["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] != "Delete" {
        return Vec::new();
    }
    let start = set["spec"]["ordinals"]["start"].as_u64().unwrap_or(0);
    let replicas = set["spec"]["replicas"].as_u64().unwrap_or(1);
    (start..start + replicas)
        .flat_map(|o| claim_names(set, o))
        .collect()
}

/// The ordinal of a set's pod (`<set>-<ordinal>`).
fn ordinal_of(set: &str, pod: &PodState) -> Option<u64> {
    pod.name.strip_prefix(set)?.strip_prefix('-')?.parse().ok()
}

impl Control for StatefulSet {
    fn reconcile(&mut self, object: &Value) -> anyhow::Result<Option<Duration>> {
        let store = self.context.store();
        let (ns, name) = (&self.context.namespace, &self.context.name);
        let spec = &object["spec"];
        let uid = object["metadata"]["uid"].as_str().unwrap_or("");
        let start = spec["ordinals"]["start"].as_u64().unwrap_or(0);
        let replicas = spec["replicas"].as_u64().unwrap_or(1);
        let parallel = spec["podManagementPolicy"] == "Parallel";
        let min_ready = Duration::from_secs(spec["minReadySeconds"].as_u64().unwrap_or(0));
        let revision = format!("{name}-{}", template_hash(object));
        let all = owned_pods(&self.context.root, uid);
        let _pending = self.creations.seen(&all, &format!("statefulset {name:?}"));
        let pods: BTreeMap<u64, &PodState> = all
            .iter()
            .filter_map(|p| Some((ordinal_of(name, p)?, p)))
            .collect();
        let wanted = start..start + replicas;
        let ready = |p: &PodState| !leaving(p) && p.phase() == "Running" && available(p, min_ready);
        let revision_of = |p: &PodState| {
            p.manifest["metadata"]["labels"]["controller-revision-hash"]
                .as_str()
                .map(str::to_owned)
        };
        // Pods that ended, failed or lost their supervisor are made again (once gone).
        for pod in pods
            .values()
            .filter(|p| p.deletion().is_none() && leaving(p))
        {
            delete_pod(pod);
        }
        // Ordinals outside the range go: all at once (Parallel), else the highest first, one
        // at a time and only while the rest are Ready.
        let condemned: Vec<&&PodState> = pods
            .iter()
            .rev()
            .filter(|(o, _)| !wanted.contains(o))
            .map(|(_, p)| p)
            .collect();
        let scaled_claims = spec["persistentVolumeClaimRetentionPolicy"]["whenScaled"] == "Delete";
        for pod in &condemned {
            if pod.deletion().is_some() {
                if parallel {
                    continue;
                }
                break;
            }
            if !parallel && pods.values().any(|p| p.deletion().is_some()) {
                break;
            }
            delete_pod(pod);
            if !parallel {
                break;
            }
        }
        if scaled_claims {
            // Claims of ordinals scaled away whose pods are gone.
            let highest = start + replicas;
            for ordinal in highest..highest + 1000 {
                let claims = claim_names(object, ordinal);
                if claims.is_empty() || pods.contains_key(&ordinal) {
                    break;
                }
                let mut any = false;
                for claim in &claims {
                    if store
                        .get(ObjectKind::PersistentVolumeClaim, ns, claim)?
                        .is_some()
                    {
                        any = true;
                        store.delete(ObjectKind::PersistentVolumeClaim, ns, claim)?;
                        eprintln!(
                            "statefulset {name:?}: deleted claim {claim:?} (whenScaled: Delete)"
                        );
                    }
                }
                if !any {
                    break;
                }
            }
        }
        // Make what is missing, in order: OrderedReady waits for each to be Running and Ready.
        let mut blocked = false;
        for ordinal in wanted.clone() {
            let pod_name = format!("{name}-{ordinal}");
            match pods.get(&ordinal) {
                Some(pod) => {
                    if !parallel && !ready(pod) {
                        blocked = true;
                        break;
                    }
                }
                None => {
                    if self.creations.pending(&pod_name) {
                        blocked = !parallel;
                        if blocked {
                            break;
                        }
                        continue;
                    }
                    // A pod of the name still there (not the set's: another's) waits.
                    if crate::state::read(&self.context.root, ns, &pod_name).is_ok() {
                        blocked = !parallel;
                        if blocked {
                            break;
                        }
                        continue;
                    }
                    if !self.creations.may_create() {
                        blocked = true;
                        break;
                    }
                    self.make_claims(object, ordinal)?;
                    let mut workload = crate::spec::workloads::stateful_template(object, ordinal);
                    // As the StatefulSet controller names its pods: hostname the pod's name,
                    // subdomain the governing Service (`pod.service.ns.svc.cluster.local`).
                    let service = object["spec"]["serviceName"]
                        .as_str()
                        .unwrap_or("")
                        .to_owned();
                    if let Some(pod_spec) = workload.pointer_mut("/spec/template/spec") {
                        pod_spec["hostname"] = pod_name.clone().into();
                        if !service.is_empty() {
                            pod_spec["subdomain"] = service.into();
                        }
                    }
                    let index = ordinal.to_string();
                    let labels = [
                        ("statefulset.kubernetes.io/pod-name", pod_name.as_str()),
                        ("apps.kubernetes.io/pod-index", index.as_str()),
                        ("controller-revision-hash", revision.as_str()),
                    ];
                    let owner = owner_ref(object, "StatefulSet", "apps/v1", name);
                    self.context.create(&workload, &pod_name, &labels, owner)?;
                    self.creations.made(pod_name);
                    if !parallel {
                        blocked = true;
                        break;
                    }
                }
            }
        }
        // A changed template: from the highest ordinal down to the partition, one pod at a
        // time, when every pod is there and Ready.
        let rolling = spec["updateStrategy"]["type"] != "OnDelete";
        let partition = spec["updateStrategy"]["rollingUpdate"]["partition"]
            .as_u64()
            .unwrap_or(0);
        let all_ready = wanted
            .clone()
            .all(|o| pods.get(&o).is_some_and(|p| ready(p)));
        let outdated = wanted
            .clone()
            .rev()
            .filter(|o| *o >= partition)
            .filter_map(|o| pods.get(&o))
            .find(|p| revision_of(p).as_deref() != Some(revision.as_str()));
        if rolling
            && !blocked
            && all_ready
            && let Some(pod) = outdated
        {
            eprintln!(
                "statefulset {name:?}: updating pod {:?} to revision {revision}",
                pod.name
            );
            delete_pod(pod);
        }
        // The status, as `get statefulset` and `rollout status` read it.
        let present: Vec<&&PodState> = pods
            .iter()
            .filter(|(o, _)| wanted.contains(o))
            .map(|(_, p)| p)
            .collect();
        let updated = present
            .iter()
            .filter(|p| revision_of(p).as_deref() == Some(revision.as_str()))
            .count();
        let status = serde_json::json!({
            "observedGeneration": 1,
            "replicas": present.len(),
            "readyReplicas": present.iter().filter(|p| ready(p)).count(),
            "availableReplicas": present.iter().filter(|p| ready(p)).count(),
            "currentReplicas": updated,
            "updatedReplicas": updated,
            "currentRevision": revision,
            "updateRevision": revision,
        });
        store.set_status(ObjectKind::StatefulSet, ns, name, status)?;
        Ok(None)
    }
}

impl StatefulSet {
    /// Makes the claims of the pod at `ordinal` that do not exist (an existing one is kept
    /// with its data, as a cluster keeps it).
    fn make_claims(&self, set: &Value, ordinal: u64) -> anyhow::Result<()> {
        let store = self.context.store();
        let (ns, name) = (&self.context.namespace, &self.context.name);
        for template in set["spec"]["volumeClaimTemplates"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let Some(t) = template["metadata"]["name"].as_str() else {
                continue;
            };
            let claim = format!("{t}-{name}-{ordinal}");
            if store
                .get(ObjectKind::PersistentVolumeClaim, ns, &claim)?
                .is_some()
            {
                continue;
            }
            let mut value = template.clone();
            value["apiVersion"] = "v1".into();
            value["kind"] = "PersistentVolumeClaim".into();
            value["metadata"]["name"] = claim.clone().into();
            value["metadata"]["namespace"] = ns.clone().into();
            // The set's selector labels, as the controller labels the claims it makes.
            let mut labels = value["metadata"]["labels"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            for (k, v) in set["spec"]["selector"]["matchLabels"]
                .as_object()
                .into_iter()
                .flatten()
            {
                labels.insert(k.clone(), v.clone());
            }
            value["metadata"]["labels"] = Value::Object(labels);
            value["status"] = serde_json::json!({
                "phase": "Bound",
                "accessModes": value["spec"]["accessModes"],
                "capacity": {"storage": value["spec"]["resources"]["requests"]["storage"]},
            });
            store.put(&Object {
                kind: ObjectKind::PersistentVolumeClaim,
                namespace: ns.clone(),
                name: claim.clone(),
                value,
                immutable: false,
            })?;
            eprintln!("statefulset {name:?}: created claim {claim:?}");
        }
        Ok(())
    }
}
