//! A CronJob's Jobs, made as the CronJob controller of a cluster makes them
//! (`pkg/controller/cronjob`, v2): at each time of `schedule` (in `timeZone`, else the host's)
//! after the last one it scheduled (or its creation), a Job `<cronjob>-<minutes since the
//! epoch>` from `jobTemplate`, owned by it. Only the most recent missed time runs, and not when
//! it is older than `startingDeadlineSeconds`; `concurrencyPolicy` Forbid skips a time while a
//! Job of it runs (it runs when that Job ends, as in a cluster, unless the deadline passed),
//! Replace removes the running ones first; `suspend` makes none. Finished Jobs beyond
//! `successfulJobsHistoryLimit` and `failedJobsHistoryLimit` are removed, oldest first, with
//! their pods. Its status (`active`, `lastScheduleTime`, `lastSuccessfulTime`) is written into
//! the stored CronJob.

use std::time::Duration;

use serde_json::Value;

use super::{Control, Workload, job, owned_jobs, owner_ref, parse_time};
use crate::cron::{Schedule, time_zone};
use crate::spec::{Object, ObjectKind};

/// Beyond this many missed times the controller says so (`too many missed start times`), as
/// a cluster's does; it still runs the latest.
const MANY_MISSED: u32 = 100;

pub(super) struct CronJob {
    context: Workload,
    /// The last time a too-late or too-many warning was said, not to say it every pass.
    warned: Option<jiff::Timestamp>,
}

impl CronJob {
    pub(super) fn new(context: Workload) -> CronJob {
        CronJob {
            context,
            warned: None,
        }
    }
}

/// When a Job started (made, if it has not yet): the history's order, oldest first, as the
/// CronJob controller sorts it (`byJobStartTime`).
fn started(job: &Value) -> (String, String) {
    let time = job["status"]["startTime"]
        .as_str()
        .or(job["metadata"]["creationTimestamp"].as_str())
        .unwrap_or("")
        .to_owned();
    (
        time,
        job["metadata"]["name"].as_str().unwrap_or("").to_owned(),
    )
}

fn succeeded(job: &Value) -> bool {
    job["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Complete" && c["status"] == "True")
}

impl Control for CronJob {
    fn reconcile(&mut self, object: &Value) -> anyhow::Result<Option<Duration>> {
        let store = self.context.store();
        let (root, storage) = (&self.context.root, &self.context.storage);
        let (ns, name) = (&self.context.namespace, &self.context.name);
        let spec = &object["spec"];
        let uid = object["metadata"]["uid"].as_str().unwrap_or("");
        let schedule = Schedule::parse(spec["schedule"].as_str().unwrap_or(""))
            .map_err(|why| anyhow::anyhow!("spec.schedule: {why}"))?;
        let zone = time_zone(spec["timeZone"].as_str())
            .map_err(|why| anyhow::anyhow!("spec.timeZone: {why}"))?;
        let mut jobs = owned_jobs(storage, ns, uid);
        jobs.sort_by_key(started);
        // The history: the oldest finished Jobs beyond each limit go, with their pods.
        for (ok, limit) in [
            (
                true,
                spec["successfulJobsHistoryLimit"].as_u64().unwrap_or(3),
            ),
            (false, spec["failedJobsHistoryLimit"].as_u64().unwrap_or(1)),
        ] {
            let done: Vec<&Value> = jobs
                .iter()
                .filter(|j| job::finished(j) && succeeded(j) == ok)
                .collect();
            for old in done.iter().take(done.len().saturating_sub(limit as usize)) {
                let job_name = old["metadata"]["name"].as_str().unwrap_or("");
                eprintln!("cronjob {name:?}: removed job {job_name:?} (history limit)");
                super::remove(root, storage, ObjectKind::Job, ns, job_name)?;
            }
        }
        let jobs: Vec<Value> = owned_jobs(storage, ns, uid);
        let running: Vec<&Value> = jobs.iter().filter(|j| !job::finished(j)).collect();
        let mut status = object["status"].clone();
        if !status.is_object() {
            status = serde_json::json!({});
        }
        let refs = |list: &[&Value]| -> Value {
            list.iter()
                .map(|j| {
                    serde_json::json!({
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": j["metadata"]["name"],
                        "namespace": ns,
                        "uid": j["metadata"]["uid"],
                    })
                })
                .collect::<Vec<_>>()
                .into()
        };
        status["active"] = refs(&running);
        if let Some(last) = jobs
            .iter()
            .filter(|j| succeeded(j))
            .filter_map(|j| j["status"]["completionTime"].as_str())
            .max()
        {
            status["lastSuccessfulTime"] = last.into();
        }
        let now = jiff::Timestamp::now();
        let last = parse_time(&status["lastScheduleTime"])
            .or_else(|| parse_time(&object["metadata"]["creationTimestamp"]))
            .unwrap_or(now);
        // The most recent time due since the last scheduled one.
        let mut due = None;
        let mut missed = 0u32;
        let mut next = schedule.next_after(last, &zone);
        while let Some(t) = next.filter(|t| *t <= now) {
            due = Some(t);
            missed += 1;
            next = schedule.next_after(t, &zone);
            if missed > 500_000 {
                break;
            }
        }
        let until_next =
            next.map(|t| Duration::try_from(now.duration_until(t)).unwrap_or(Duration::ZERO));
        let Some(due) = due.filter(|_| spec["suspend"] != true) else {
            store.set_status(ObjectKind::CronJob, ns, name, status)?;
            return Ok(until_next.or(Some(Duration::from_secs(60))));
        };
        if missed > MANY_MISSED && self.warned != Some(due) {
            eprintln!(
                "cronjob {name:?}: too many missed start times ({missed}): starting the latest; \
                 set or lower startingDeadlineSeconds, or check the clock"
            );
        }
        if let Some(deadline) = spec["startingDeadlineSeconds"].as_i64()
            && now.duration_since(due) > jiff::SignedDuration::from_secs(deadline)
        {
            if self.warned != Some(due) {
                eprintln!(
                    "cronjob {name:?}: missed scheduled time {due} (startingDeadlineSeconds {deadline})"
                );
                self.warned = Some(due);
            }
            store.set_status(ObjectKind::CronJob, ns, name, status)?;
            return Ok(until_next);
        }
        match spec["concurrencyPolicy"].as_str() {
            Some("Forbid") if !running.is_empty() => {
                // Skipped for now: it runs when the running Job ends, if still in time.
                if self.warned != Some(due) {
                    eprintln!(
                        "cronjob {name:?}: time {due} waits: a job of it still runs (concurrencyPolicy Forbid)"
                    );
                    self.warned = Some(due);
                }
                store.set_status(ObjectKind::CronJob, ns, name, status)?;
                return Ok(None);
            }
            Some("Replace") => {
                for job in &running {
                    let job_name = job["metadata"]["name"].as_str().unwrap_or("");
                    eprintln!(
                        "cronjob {name:?}: replaced job {job_name:?} (concurrencyPolicy Replace)"
                    );
                    super::remove(root, storage, ObjectKind::Job, ns, job_name)?;
                }
            }
            _ => {}
        }
        let job_name = format!("{name}-{}", due.as_second().div_euclid(60));
        let template = &spec["jobTemplate"];
        let mut meta = serde_json::json!({
            "name": job_name,
            "namespace": ns,
            "ownerReferences": [owner_ref(object, "CronJob", "batch/v1", name)],
        });
        if let Some(labels) = template["metadata"].get("labels") {
            meta["labels"] = labels.clone();
        }
        let mut annotations = template["metadata"]["annotations"].clone();
        if !annotations.is_object() {
            annotations = serde_json::json!({});
        }
        annotations["batch.kubernetes.io/cronjob-scheduled-timestamp"] = due
            .to_zoned(zone.clone())
            .strftime("%Y-%m-%dT%H:%M:%S%:z")
            .to_string()
            .into();
        meta["annotations"] = annotations;
        let value = serde_json::json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": meta,
            "spec": template["spec"],
        });
        if store.get(ObjectKind::Job, ns, &job_name)?.is_none() {
            store.put(&Object {
                kind: ObjectKind::Job,
                namespace: ns.clone(),
                name: job_name.clone(),
                value,
                immutable: false,
            })?;
            eprintln!("cronjob {name:?}: created job {job_name:?} for {due}");
        }
        super::ensure(root, storage, ObjectKind::Job, ns, &job_name)?;
        status["lastScheduleTime"] = due.strftime("%Y-%m-%dT%H:%M:%SZ").to_string().into();
        let jobs = owned_jobs(storage, ns, uid);
        let running: Vec<&Value> = jobs.iter().filter(|j| !job::finished(j)).collect();
        status["active"] = refs(&running);
        store.set_status(ObjectKind::CronJob, ns, name, status)?;
        Ok(until_next)
    }
}
