//! A Job's pods, run to completion as the Job controller of a cluster runs them
//! (`pkg/controller/job`): up to `parallelism` at once until `completions` succeeded (each
//! index of an Indexed Job once; a work queue, without completions, until one succeeded and
//! the rest ended), a failed pod replaced after a backoff (10 s doubling to 10 minutes, from
//! its failure, as `DefaultJobPodFailureBackOff` and `MaxJobPodFailureBackOff`), the Job
//! failed when more than `backoffLimit` pods failed (with restartPolicy OnFailure: when its
//! containers restarted that many times) or it ran past `activeDeadlineSeconds`; removed with
//! its pods `ttlSecondsAfterFinished` after it finished. Its status (`startTime`, `active`,
//! `ready`, `succeeded`, `failed`, `completedIndexes`, the Complete or Failed condition,
//! `completionTime`) is written into the stored Job; a finished Job is never run again.
//!
//! Pods are named as Kubernetes names them, `<job>-<5 letters>` (Indexed: `<job>-<index>-<5
//! letters>`, with the index as the `batch.kubernetes.io/job-completion-index` annotation and
//! label, `JOB_COMPLETION_INDEX` in every container's env, and the hostname `<job>-<index>`),
//! with the `batch.kubernetes.io/job-name` and `controller-uid` labels. Ended pods are kept
//! (`get pods` shows them Completed or Error, their logs readable) until the Job goes.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::{
    Control, Creations, Workload, delete_pod, now_text, owned_pods, owner_ref, parse_time, suffix,
};
use crate::spec::ObjectKind;
use crate::state::PodState;

/// The annotation (and label) of an Indexed Job's pod's index.
pub const INDEX_ANNOTATION: &str = "batch.kubernetes.io/job-completion-index";

/// `DefaultJobPodFailureBackOff` and `MaxJobPodFailureBackOff`.
const FAILURE_BACKOFF: Duration = Duration::from_secs(10);
const MAX_FAILURE_BACKOFF: Duration = Duration::from_secs(600);

pub(super) struct Job {
    context: Workload,
    creations: Creations,
}

impl Job {
    pub(super) fn new(context: Workload) -> Job {
        Job {
            context,
            creations: Creations::default(),
        }
    }
}

/// The Job's Complete or Failed condition, when it is True: the Job finished.
fn end_condition(job: &Value) -> Option<&Value> {
    job["status"]["conditions"].as_array()?.iter().find(|c| {
        matches!(c["type"].as_str(), Some("Complete" | "Failed")) && c["status"] == "True"
    })
}

/// Whether the Job finished.
pub fn finished(job: &Value) -> bool {
    end_condition(job).is_some()
}

/// When the Job finished (its condition's lastTransitionTime).
fn finished_at(job: &Value) -> Option<jiff::Timestamp> {
    end_condition(job).and_then(|c| parse_time(&c["lastTransitionTime"]))
}

/// The index of an Indexed Job's pod.
fn index_of(pod: &PodState) -> Option<u64> {
    pod.manifest["metadata"]["annotations"][INDEX_ANNOTATION]
        .as_str()?
        .parse()
        .ok()
}

/// When the pod's last container ended (its failure or success time); its age otherwise.
fn ended_at(pod: &PodState) -> SystemTime {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| SystemTime::from(t.0))
        .max()
        .unwrap_or(pod.created)
}

/// Restarts of the pod's containers (what backoffLimit counts with restartPolicy OnFailure).
fn restarts(pod: &PodState) -> u64 {
    pod.status.as_ref().map_or(0, |s| {
        s.container_statuses
            .iter()
            .chain(s.init_container_statuses.iter())
            .flatten()
            .map(|c| c.restart_count.max(0) as u64)
            .sum()
    })
}

/// Indexes as the API lists them: `0-2,4,6-7`.
pub fn format_indexes(set: &BTreeSet<u64>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut iter = set.iter().copied().peekable();
    while let Some(first) = iter.next() {
        let mut last = first;
        while iter.peek() == Some(&(last + 1)) {
            last = iter.next().unwrap_or(last);
        }
        out.push(if first == last {
            first.to_string()
        } else {
            format!("{first}-{last}")
        });
    }
    out.join(",")
}

fn condition(kind: &str, reason: &str, message: &str, now: &str) -> Value {
    serde_json::json!({
        "type": kind,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastProbeTime": now,
        "lastTransitionTime": now,
    })
}

impl Control for Job {
    fn reconcile(&mut self, object: &Value) -> anyhow::Result<Option<Duration>> {
        let store = self.context.store();
        let (ns, name) = (&self.context.namespace, &self.context.name);
        let spec = &object["spec"];
        let uid = object["metadata"]["uid"].as_str().unwrap_or("");
        let pods = owned_pods(&self.context.root, uid);
        let mut status = object["status"].clone();
        if !status.is_object() {
            status = serde_json::json!({});
        }
        if let Some(at) = finished_at(object) {
            // Nothing runs any more; the Job waits for its TTL, if it has one.
            for pod in pods.iter().filter(|p| running(p) && p.deletion().is_none()) {
                delete_pod(pod);
            }
            let Some(ttl) = spec["ttlSecondsAfterFinished"].as_u64() else {
                return Ok(Some(Duration::from_secs(3600)));
            };
            let expires = at + jiff::SignedDuration::from_secs(ttl as i64);
            let left = jiff::Timestamp::now().duration_until(expires);
            if left.is_negative() || left.is_zero() {
                eprintln!("job {name:?}: finished {ttl}s ago (ttlSecondsAfterFinished): deleted");
                store.delete(ObjectKind::Job, ns, name)?;
                return Ok(None);
            }
            return Ok(Some(
                Duration::try_from(left).unwrap_or(Duration::from_secs(1)),
            ));
        }
        // A pod whose supervisor died will not end: it goes, and another takes its place.
        for pod in pods.iter().filter(|p| p.phase() == "Unknown") {
            delete_pod(pod);
        }
        let now = now_text();
        if status["startTime"].is_null() && spec["suspend"] != true {
            status["startTime"] = now.clone().into();
        }
        let active: Vec<&PodState> = pods.iter().filter(|p| running(p)).collect();
        let succeeded: Vec<&PodState> = pods.iter().filter(|p| p.phase() == "Succeeded").collect();
        let failed: Vec<&PodState> = pods.iter().filter(|p| p.phase() == "Failed").collect();
        let indexed = spec["completionMode"] == "Indexed";
        let completions = spec["completions"].as_u64();
        let parallelism = spec["parallelism"].as_u64().unwrap_or(1);
        let backoff_limit = spec["backoffLimit"].as_u64().unwrap_or(6);
        let done_indexes: BTreeSet<u64> = succeeded.iter().filter_map(|p| index_of(p)).collect();
        let restart_failures: u64 = if object
            .pointer("/spec/template/spec/restartPolicy")
            .and_then(Value::as_str)
            == Some("OnFailure")
        {
            active.iter().map(|p| restarts(p)).sum()
        } else {
            0
        };
        let complete = if indexed {
            (0..completions.unwrap_or(0)).all(|i| done_indexes.contains(&i))
        } else if let Some(c) = completions {
            succeeded.len() as u64 >= c
        } else {
            !succeeded.is_empty() && active.is_empty()
        };
        let past_backoff = failed.len() as u64 > backoff_limit
            || (restart_failures > 0 && restart_failures >= backoff_limit.max(1));
        let past_deadline = spec["activeDeadlineSeconds"].as_i64().is_some_and(|d| {
            parse_time(&status["startTime"]).is_some_and(|start| {
                jiff::Timestamp::now().duration_since(start) >= jiff::SignedDuration::from_secs(d)
            })
        });
        let ready = active
            .iter()
            .filter(|p| super::available(p, Duration::ZERO))
            .count();
        status["active"] =
            (active.len() - active.iter().filter(|p| p.deletion().is_some()).count()).into();
        status["ready"] = ready.into();
        status["succeeded"] = succeeded.len().into();
        status["failed"] = failed.len().into();
        status["terminating"] = active
            .iter()
            .filter(|p| p.deletion().is_some())
            .count()
            .into();
        if indexed {
            status["completedIndexes"] = format_indexes(&done_indexes).into();
        }
        let end = if complete {
            Some((
                "Complete",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
            ))
        } else if past_backoff {
            Some((
                "Failed",
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            ))
        } else if past_deadline {
            Some((
                "Failed",
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
            ))
        } else {
            None
        };
        if let Some((kind, reason, message)) = end {
            for pod in &active {
                delete_pod(pod);
            }
            status["active"] = 0.into();
            status["ready"] = 0.into();
            let mut conditions = vec![];
            // The interim condition a cluster sets first (SuccessCriteriaMet / FailureTarget).
            let interim = if kind == "Complete" {
                "SuccessCriteriaMet"
            } else {
                "FailureTarget"
            };
            conditions.push(condition(interim, reason, message, &now));
            conditions.push(condition(kind, reason, message, &now));
            status["conditions"] = conditions.into();
            if kind == "Complete" {
                status["completionTime"] = now.clone().into();
            }
            eprintln!("job {name:?}: {kind}: {message}");
            store.set_status(ObjectKind::Job, ns, name, status)?;
            return Ok(None);
        }
        if spec["suspend"] == true {
            for pod in &active {
                delete_pod(pod);
            }
            status["conditions"] = vec![condition(
                "Suspended",
                "JobSuspended",
                "Job suspended",
                &now,
            )]
            .into();
            store.set_status(ObjectKind::Job, ns, name, status)?;
            return Ok(None);
        }
        if status["conditions"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["type"] == "Suspended"))
        {
            status.as_object_mut().map(|s| s.remove("conditions"));
            status["startTime"] = now.clone().into();
        }
        let pending = self.creations.seen(&pods, &format!("job {name:?}"));
        let running_now: Vec<&&PodState> =
            active.iter().filter(|p| p.deletion().is_none()).collect();
        // What should run: for an Indexed Job, the indexes neither done nor running.
        let mut missing_indexes: Vec<u64> = Vec::new();
        let want = if indexed {
            let busy: BTreeSet<u64> = running_now.iter().filter_map(|p| index_of(p)).collect();
            missing_indexes = (0..completions.unwrap_or(0))
                .filter(|i| !done_indexes.contains(i) && !busy.contains(i))
                .filter(|i| {
                    !self
                        .creations
                        .pending_prefix(&format!("{}-", index_prefix(name, *i)))
                })
                .collect();
            (running_now.len() as u64 + pending as u64 + missing_indexes.len() as u64)
                .min(parallelism)
        } else if let Some(c) = completions {
            c.saturating_sub(succeeded.len() as u64).min(parallelism)
        } else if succeeded.is_empty() {
            parallelism
        } else {
            // A work queue with a success: the others finish, none is added.
            running_now.len() as u64 + u64::from(pending)
        };
        let have = running_now.len() as u64 + u64::from(pending);
        if have > want {
            // Parallelism lowered: the newest go.
            let mut extra: Vec<&&PodState> = running_now.clone();
            extra.sort_by_key(|p| std::cmp::Reverse(p.created));
            for pod in extra.into_iter().take((have - want) as usize) {
                delete_pod(pod);
            }
        }
        // A failed pod is replaced after a backoff from its failure: 10 s doubling with each
        // failure since the last success.
        let last_success = succeeded.iter().map(|p| ended_at(p)).max();
        let recent: Vec<SystemTime> = failed
            .iter()
            .map(|p| ended_at(p))
            .filter(|t| last_success.is_none_or(|s| *t > s))
            .collect();
        let wait = recent.iter().max().and_then(|last| {
            let delay = FAILURE_BACKOFF
                .saturating_mul(1 << (recent.len() - 1).min(16))
                .min(MAX_FAILURE_BACKOFF);
            let until = *last + delay;
            until.duration_since(SystemTime::now()).ok()
        });
        store.set_status(ObjectKind::Job, ns, name, status)?;
        if let Some(wait) = wait {
            return Ok(Some(wait));
        }
        if want > have && self.creations.may_create() {
            let owner = owner_ref(object, "Job", "batch/v1", name);
            for i in 0..(want - have) as usize {
                let mut workload = object.clone();
                let mut labels = vec![
                    ("batch.kubernetes.io/controller-uid", uid.to_owned()),
                    ("batch.kubernetes.io/job-name", name.clone()),
                    ("controller-uid", uid.to_owned()),
                    ("job-name", name.clone()),
                ];
                let pod = if indexed {
                    let Some(index) = missing_indexes.get(i).copied() else {
                        break;
                    };
                    with_index(&mut workload, name, index);
                    labels.push((INDEX_ANNOTATION, index.to_string()));
                    format!("{}-{}", index_prefix(name, index), suffix())
                } else {
                    format!("{name}-{}", suffix())
                };
                let labels: Vec<(&str, &str)> =
                    labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
                self.context
                    .create(&workload, &pod, &labels, owner.clone())?;
                self.creations.made(pod);
            }
        }
        Ok(None)
    }
}

/// Whether a pod still runs (not ended, its supervisor there).
fn running(pod: &PodState) -> bool {
    !matches!(pod.phase(), "Succeeded" | "Failed" | "Unknown")
}

fn index_prefix(job: &str, index: u64) -> String {
    format!("{job}-{index}")
}

/// An Indexed Job's template for `index`: the index annotation, `JOB_COMPLETION_INDEX` in
/// every container's env (read from the annotation, as the Job controller adds it), and the
/// hostname `<job>-<index>` unless the template sets one.
fn with_index(workload: &mut Value, job: &str, index: u64) {
    let Some(template) = workload.pointer_mut("/spec/template") else {
        return;
    };
    if !template["metadata"].is_object() {
        template["metadata"] = serde_json::json!({});
    }
    if !template["metadata"]["annotations"].is_object() {
        template["metadata"]["annotations"] = serde_json::json!({});
    }
    template["metadata"]["annotations"][INDEX_ANNOTATION] = index.to_string().into();
    let env = serde_json::json!({
        "name": "JOB_COMPLETION_INDEX",
        "valueFrom": {"fieldRef": {"fieldPath": format!("metadata.annotations['{INDEX_ANNOTATION}']")}},
    });
    for list in ["initContainers", "containers"] {
        for container in template["spec"][list].as_array_mut().into_iter().flatten() {
            if !container["env"].is_array() {
                container["env"] = Value::Array(Vec::new());
            }
            if let Some(vars) = container["env"].as_array_mut()
                && !vars.iter().any(|v| v["name"] == "JOB_COMPLETION_INDEX")
            {
                vars.push(env.clone());
            }
        }
    }
    if template["spec"]["hostname"].is_null() {
        template["spec"]["hostname"] = format!("{job}-{index}").into();
    }
}
