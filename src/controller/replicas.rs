//! A count of interchangeable pods of one template: the Deployment (with the ReplicaSet it
//! would make), ReplicaSet, ReplicationController and DaemonSet (one pod: this host is its
//! only node) controllers of a cluster, in one reconciliation.
//!
//! Pods are named as Kubernetes names them: a Deployment's `<deployment>-<hash>-<5 letters>`,
//! the hash of the template (FNV-32a, encoded as `rand.SafeEncodeString` encodes it) also
//! their `pod-template-hash` label; the others' `<name>-<5 letters>` (a DaemonSet's with the
//! hash as `controller-revision-hash`). A changed template rolls a Deployment's and a
//! DaemonSet's pods: RollingUpdate (new pods up to `maxSurge` over `replicas`, old ones removed
//! while at most `maxUnavailable` are not Ready), Recreate (every old pod gone before a new one
//! starts), or OnDelete (a DaemonSet's: new pods only for those deleted). A ReplicaSet's and a
//! ReplicationController's template is for the pods made after it changed. A pod that failed,
//! ended or whose supervisor died is replaced.

use std::time::Duration;

use serde_json::Value;

use super::{
    Control, Creations, Workload, available, delete_pod, leaving, owned_pods, owner_ref, suffix,
    template_hash,
};
use crate::state::PodState;

pub(super) struct Replicas {
    context: Workload,
    creations: Creations,
}

/// How a kind's pods are counted, named and rolled.
struct Shape {
    replicas: u32,
    /// The label that carries the template's hash, for kinds that roll.
    hash_label: Option<&'static str>,
    /// The update strategy (RollingUpdate, Recreate); `None` for kinds and strategies that
    /// never roll.
    strategy: Option<Value>,
    /// Pods are named `<prefix>-<5 letters>`.
    prefix: String,
    owner: Value,
}

impl Shape {
    fn of(object: &Value, name: &str, hash: &str) -> Shape {
        let spec = &object["spec"];
        let kind = object["kind"].as_str().unwrap_or("");
        let replicas = spec["replicas"].as_u64().unwrap_or(1) as u32;
        match kind {
            "Deployment" => {
                let rs = format!("{name}-{hash}");
                Shape {
                    replicas,
                    hash_label: Some("pod-template-hash"),
                    strategy: Some(spec["strategy"].clone()),
                    owner: owner_ref(object, "ReplicaSet", "apps/v1", &rs),
                    prefix: rs,
                }
            }
            "DaemonSet" => Shape {
                replicas: 1,
                hash_label: Some("controller-revision-hash"),
                strategy: Some(spec["updateStrategy"].clone()).filter(|s| s["type"] != "OnDelete"),
                owner: owner_ref(object, "DaemonSet", "apps/v1", name),
                prefix: name.to_owned(),
            },
            other => Shape {
                replicas,
                hash_label: None,
                strategy: None,
                owner: owner_ref(
                    object,
                    other,
                    object["apiVersion"].as_str().unwrap_or("apps/v1"),
                    name,
                ),
                prefix: name.to_owned(),
            },
        }
    }
}

/// A count or percentage of `replicas` (`maxSurge` rounds up, `maxUnavailable` down).
fn scaled(value: &Value, replicas: u32, round_up: bool) -> u32 {
    match value {
        Value::Number(n) => n.as_u64().map_or(0, |n| n as u32),
        Value::String(s) => {
            let percent: u32 = s.trim_end_matches('%').parse().unwrap_or(0);
            let exact = replicas * percent;
            if round_up {
                exact.div_ceil(100)
            } else {
                exact / 100
            }
        }
        _ => 0,
    }
}

impl Replicas {
    pub(super) fn new(context: Workload) -> Replicas {
        Replicas {
            context,
            creations: Creations::default(),
        }
    }
}

impl Control for Replicas {
    fn reconcile(&mut self, object: &Value) -> anyhow::Result<Option<Duration>> {
        let spec = &object["spec"];
        let min_ready = Duration::from_secs(spec["minReadySeconds"].as_u64().unwrap_or(0));
        let hash = template_hash(object);
        let shape = Shape::of(object, &self.context.name, &hash);
        let replicas = shape.replicas;
        let uid = object["metadata"]["uid"].as_str().unwrap_or("");
        let all = owned_pods(&self.context.root, uid);
        // Pods that ended, failed or lost their supervisor are replaced, as a ReplicaSet
        // replaces them.
        for pod in all.iter().filter(|p| p.deletion().is_none() && leaving(p)) {
            delete_pod(pod);
        }
        let active: Vec<&PodState> = all.iter().filter(|p| !leaving(p)).collect();
        let what = format!(
            "{} {:?}",
            object["kind"].as_str().unwrap_or("").to_lowercase(),
            self.context.name
        );
        // Pods on their way (their supervisors still making them) count as new pods.
        let pending = self.creations.seen(&all, &what);
        let is_new = |p: &PodState| {
            shape.strategy.is_none()
                || shape.hash_label.is_none_or(|label| {
                    p.manifest["metadata"]["labels"][label].as_str() == Some(hash.as_str())
                })
        };
        let (new, old): (Vec<&PodState>, Vec<&PodState>) = active.iter().partition(|p| is_new(p));
        let new_count = new.len() as u32 + pending;
        let want_new = match &shape.strategy {
            None => replicas,
            Some(strategy) if strategy["type"] == "Recreate" => {
                if !old.is_empty() || all.iter().any(|p| !is_new(p)) {
                    // Every old pod gone, also those still terminating, before a new one
                    // starts.
                    for pod in &old {
                        delete_pod(pod);
                    }
                    return Ok(None);
                }
                replicas
            }
            Some(strategy) => {
                let surge = scaled(&strategy["rollingUpdate"]["maxSurge"], replicas, true);
                let unavailable = scaled(
                    &strategy["rollingUpdate"]["maxUnavailable"],
                    replicas,
                    false,
                );
                let total = active.len() as u32 + pending;
                // New pods up to replicas, and the whole at most replicas + maxSurge.
                let room = (replicas + surge).saturating_sub(total);
                let wanted = replicas.saturating_sub(new_count).min(room);
                // Old pods down while at least replicas - maxUnavailable stay available:
                // those not available go first (they take nothing away).
                let min_available = replicas.saturating_sub(unavailable);
                let mut available_now =
                    active.iter().filter(|p| available(p, min_ready)).count() as u32;
                let mut old_sorted = old.clone();
                old_sorted.sort_by_key(|p| available(p, min_ready));
                for pod in old_sorted {
                    if available(pod, min_ready) {
                        if available_now <= min_available {
                            break;
                        }
                        available_now -= 1;
                    }
                    delete_pod(pod);
                }
                // Scaled down: the new pods beyond replicas go (below).
                if new_count > replicas {
                    replicas
                } else {
                    new_count + wanted
                }
            }
        };
        // Too many new pods (scaled down): the not-ready and newest go first.
        if new_count > want_new {
            let mut extra = new.clone();
            extra.sort_by_key(|p| (available(p, min_ready), std::cmp::Reverse(p.created)));
            for pod in extra.iter().take((new_count - want_new) as usize) {
                delete_pod(pod);
            }
        }
        let missing = want_new.saturating_sub(new_count);
        if missing > 0 && self.creations.may_create() {
            let labels: Vec<(&str, &str)> = shape
                .hash_label
                .map(|label| (label, hash.as_str()))
                .into_iter()
                .collect();
            for _ in 0..missing {
                let pod = format!("{}-{}", shape.prefix, suffix());
                self.context
                    .create(object, &pod, &labels, shape.owner.clone())?;
                self.creations.made(pod);
            }
        }
        self.report(object, &active, new.len(), min_ready)?;
        Ok(None)
    }
}

impl Replicas {
    /// The object's status as its controllers in a cluster write it (`get -o yaml`); the
    /// kind's own fields for a DaemonSet.
    fn report(
        &self,
        object: &Value,
        active: &[&PodState],
        updated: usize,
        min_ready: Duration,
    ) -> anyhow::Result<()> {
        let ready = active
            .iter()
            .filter(|p| available(p, Duration::ZERO))
            .count();
        let available_now = active.iter().filter(|p| available(p, min_ready)).count();
        let status = if object["kind"] == "DaemonSet" {
            serde_json::json!({
                "currentNumberScheduled": active.len(),
                "desiredNumberScheduled": 1,
                "numberMisscheduled": 0,
                "numberReady": ready,
                "numberAvailable": available_now,
                "updatedNumberScheduled": updated,
                "observedGeneration": 1,
            })
        } else {
            serde_json::json!({
                "replicas": active.len(),
                "readyReplicas": ready,
                "availableReplicas": available_now,
                "updatedReplicas": updated,
                "observedGeneration": 1,
            })
        };
        let context = &self.context;
        context
            .store()
            .set_status(context.kind, &context.namespace, &context.name, status)?;
        Ok(())
    }
}
