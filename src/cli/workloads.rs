//! `podkit scale`, `podkit rollout status`, and workloads (Deployments, ReplicaSets,
//! ReplicationControllers, StatefulSets, DaemonSets, Jobs, CronJobs) as `get` and `describe`
//! show them, with kubectl's columns.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::controller;
use crate::objects::Store;
use crate::spec::ObjectKind;
use crate::state::PodState;

use super::get::Kind;
use super::parse_duration;

/// Set the number of replicas of a Deployment, ReplicaSet, ReplicationController or
/// StatefulSet; its controller adds or removes pods.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  podkit scale deployment web --replicas 5
  podkit scale deploy/web --replicas 0
  podkit scale statefulset db --replicas 3")]
pub struct ScaleArgs {
    /// `KIND NAME` or `KIND/NAME`: deployment (deploy), replicaset (rs),
    /// replicationcontroller (rc) or statefulset (sts).
    #[arg(value_name = "KIND NAME", num_args = 1..=2, required = true)]
    what: Vec<String>,

    /// The new number of pods.
    #[arg(long, value_name = "N")]
    replicas: u32,

    #[arg(short = 'n', long, value_name = "NAMESPACE", default_value = "default")]
    namespace: String,
}

/// Follow a rollout until the pods are all of the template and available.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  podkit rollout status deployment/web
  podkit rollout status deploy web --timeout 2m
  podkit rollout status statefulset/db
  podkit rollout status ds/log-agent

Exit codes: 0 when the rollout is complete, 1 when the timeout passed first.")]
pub struct RolloutArgs {
    /// `status`.
    #[arg(value_parser = ["status"])]
    action: String,

    /// `KIND NAME` or `KIND/NAME`: deployment, statefulset or daemonset.
    #[arg(value_name = "KIND NAME", num_args = 1..=2, required = true)]
    what: Vec<String>,

    #[arg(short = 'n', long, value_name = "NAMESPACE", default_value = "default")]
    namespace: String,

    /// How long to wait, like 30s or 5m.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    timeout: Duration,
}

/// Run a CronJob's Job now, as `kubectl create job --from=cronjob/NAME` does: a Job of its
/// jobTemplate, owned by it (its history limits count it), annotated
/// `cronjob.kubernetes.io/instantiate: manual`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  podkit create job backup-now --from cronjob/backup
  podkit create job test-run --from=cronjob/report -n jobs")]
pub struct CreateArgs {
    /// `job`.
    #[arg(value_parser = ["job"])]
    kind: String,

    /// The new Job's name.
    name: String,

    /// The CronJob whose jobTemplate the Job takes: `cronjob/NAME`.
    #[arg(long, value_name = "cronjob/NAME")]
    from: String,

    #[arg(short = 'n', long, value_name = "NAMESPACE", default_value = "default")]
    namespace: String,
}

pub fn create(root: &Path, storage: &Path, args: CreateArgs) -> anyhow::Result<ExitCode> {
    let (kind, source) = named(
        std::slice::from_ref(&args.from),
        "creates jobs from",
        &[ObjectKind::CronJob],
    )?;
    let store = Store::new(storage);
    let Some(cron_job) = store.get(kind, &args.namespace, &source)? else {
        bail!(
            "cronjob {source:?} not found in namespace {:?}",
            args.namespace
        );
    };
    if let Err(why) = crate::spec::validate_name(&args.name) {
        bail!("job name {:?} {why}", args.name);
    }
    if store
        .get(ObjectKind::Job, &args.namespace, &args.name)?
        .is_some()
    {
        bail!(
            "job {:?} already exists in namespace {:?}",
            args.name,
            args.namespace
        );
    }
    let template = &cron_job["spec"]["jobTemplate"];
    let mut annotations = template["metadata"]["annotations"].clone();
    if !annotations.is_object() {
        annotations = serde_json::json!({});
    }
    annotations["cronjob.kubernetes.io/instantiate"] = "manual".into();
    let mut meta = serde_json::json!({
        "name": args.name,
        "namespace": args.namespace,
        "annotations": annotations,
        "ownerReferences": [{
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "name": source,
            "uid": cron_job["metadata"]["uid"],
            "controller": true,
        }],
    });
    if let Some(labels) = template["metadata"].get("labels") {
        meta["labels"] = labels.clone();
    }
    let job = crate::spec::Object {
        kind: ObjectKind::Job,
        namespace: args.namespace.clone(),
        name: args.name.clone(),
        value: serde_json::json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": meta,
            "spec": template["spec"],
        }),
        immutable: false,
    };
    store.put(&job)?;
    controller::ensure(root, storage, ObjectKind::Job, &args.namespace, &args.name)?;
    println!("job.batch/{} created", args.name);
    Ok(ExitCode::SUCCESS)
}

/// The kind and name of `KIND NAME` or `KIND/NAME`, one of `allowed`.
fn named(
    what: &[String],
    verb: &str,
    allowed: &[ObjectKind],
) -> anyhow::Result<(ObjectKind, String)> {
    let (kind, name) = match what {
        [one] => one
            .split_once('/')
            .map(|(k, n)| (k.to_owned(), n.to_owned()))
            .with_context(|| format!("{one:?}: say KIND/NAME or KIND NAME"))?,
        [kind, name] => (kind.clone(), name.clone()),
        _ => bail!("say KIND/NAME or KIND NAME"),
    };
    match Kind::parse(&kind)? {
        Kind::Object(kind) if allowed.contains(&kind) => Ok((kind, name)),
        _ => bail!(
            "podkit {verb} {} only, not {kind:?}",
            allowed
                .iter()
                .map(|k| format!("{}s", k.lower()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

pub fn scale(root: &Path, storage: &Path, args: ScaleArgs) -> anyhow::Result<ExitCode> {
    let (kind, name) = named(
        &args.what,
        "scales",
        &[
            ObjectKind::Deployment,
            ObjectKind::ReplicaSet,
            ObjectKind::ReplicationController,
            ObjectKind::StatefulSet,
        ],
    )?;
    let store = Store::new(storage);
    let Some(mut object) = store.get(kind, &args.namespace, &name)? else {
        bail!(
            "{} {name:?} not found in namespace {:?}",
            kind.lower(),
            args.namespace
        );
    };
    object["spec"]["replicas"] = args.replicas.into();
    let kept = crate::spec::Object {
        kind,
        namespace: args.namespace.clone(),
        name: name.clone(),
        value: object,
        immutable: false,
    };
    store.put(&kept)?;
    controller::ensure(root, storage, kind, &args.namespace, &name)?;
    println!("{}/{name} scaled", kind.printed());
    Ok(ExitCode::SUCCESS)
}

/// What a workload's pods are.
pub struct Counts {
    /// Desired.
    pub replicas: u32,
    /// Of the current template.
    pub updated: u32,
    /// Pending or Running, not being deleted.
    pub total: u32,
    /// Ready.
    pub available: u32,
}

/// A workload's pods that run or are on their way (not being deleted).
fn live_pods(root: &Path, workload: &Value) -> Vec<PodState> {
    let uid = workload["metadata"]["uid"].as_str().unwrap_or("");
    controller::owned_pods(root, uid)
        .into_iter()
        .filter(|p| p.deletion().is_none() && matches!(p.phase(), "Pending" | "Running"))
        .collect()
}

fn ready(p: &PodState) -> bool {
    p.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

pub fn counts(root: &Path, kind: ObjectKind, workload: &Value) -> Counts {
    let hash = controller::template_hash(workload);
    let name = workload["metadata"]["name"].as_str().unwrap_or("");
    // The label and value that mark a pod of the current template.
    let current = match kind {
        ObjectKind::Deployment => Some(("pod-template-hash", hash.clone())),
        ObjectKind::DaemonSet => Some(("controller-revision-hash", hash.clone())),
        ObjectKind::StatefulSet => Some(("controller-revision-hash", format!("{name}-{hash}"))),
        _ => None,
    };
    let pods = live_pods(root, workload);
    Counts {
        replicas: match kind {
            ObjectKind::DaemonSet => 1,
            _ => workload["spec"]["replicas"].as_u64().unwrap_or(1) as u32,
        },
        updated: pods
            .iter()
            .filter(|p| {
                current.as_ref().is_none_or(|(label, value)| {
                    p.manifest["metadata"]["labels"][label] == value.as_str()
                })
            })
            .count() as u32,
        total: pods.len() as u32,
        available: pods.iter().filter(|p| ready(p)).count() as u32,
    }
}

pub fn rollout(root: &Path, storage: &Path, args: RolloutArgs) -> anyhow::Result<ExitCode> {
    let (kind, name) = named(
        &args.what,
        "rolls out",
        &[
            ObjectKind::Deployment,
            ObjectKind::StatefulSet,
            ObjectKind::DaemonSet,
        ],
    )?;
    let store = Store::new(storage);
    controller::ensure_all(root, storage);
    let deadline = Instant::now() + args.timeout;
    let mut said = String::new();
    let what = kind.lower();
    loop {
        let Some(object) = store.get(kind, &args.namespace, &name)? else {
            bail!(
                "{what} {name:?} not found in namespace {:?}",
                args.namespace
            );
        };
        let c = counts(root, kind, &object);
        let line = if c.updated < c.replicas {
            format!(
                "Waiting for {what} {name:?} rollout to finish: {} out of {} new replicas have been updated...",
                c.updated, c.replicas
            )
        } else if c.total > c.updated {
            format!(
                "Waiting for {what} {name:?} rollout to finish: {} old replicas are pending termination...",
                c.total - c.updated
            )
        } else if c.available < c.updated {
            format!(
                "Waiting for {what} {name:?} rollout to finish: {} of {} updated replicas are available...",
                c.available, c.updated
            )
        } else {
            match kind {
                ObjectKind::StatefulSet => println!(
                    "partitioned roll out complete: {} new pods have been updated...",
                    c.updated
                ),
                _ => println!("{what} {name:?} successfully rolled out"),
            }
            return Ok(ExitCode::SUCCESS);
        };
        if line != said {
            println!("{line}");
            said = line;
        }
        if Instant::now() > deadline {
            eprintln!(
                "error: timed out waiting for the rollout of {what} {name:?} ({}s)",
                args.timeout.as_secs()
            );
            return Ok(ExitCode::FAILURE);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A Job's STATUS column, as kubectl 1.28+ prints it.
fn job_status(job: &Value) -> &'static str {
    let conditions = job["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let has = |t: &str| {
        conditions
            .iter()
            .any(|c| c["type"] == t && c["status"] == "True")
    };
    if has("Complete") {
        "Complete"
    } else if has("Failed") {
        "Failed"
    } else if has("Suspended") {
        "Suspended"
    } else {
        "Running"
    }
}

/// A Job's COMPLETIONS column: `1/3`; a work queue's `0/1 of 2`.
fn job_completions(job: &Value) -> String {
    let succeeded = job["status"]["succeeded"].as_u64().unwrap_or(0);
    match job["spec"]["completions"].as_u64() {
        Some(c) => format!("{succeeded}/{c}"),
        None => match job["spec"]["parallelism"].as_u64().unwrap_or(1) {
            p if p > 1 => format!("{succeeded}/1 of {p}"),
            _ => format!("{succeeded}/1"),
        },
    }
}

/// How long a Job ran (or runs): start to completion, or to now.
fn job_duration(job: &Value) -> String {
    let time = |v: &Value| v.as_str().and_then(|t| t.parse::<jiff::Timestamp>().ok());
    let Some(start) = time(&job["status"]["startTime"]) else {
        return String::new();
    };
    let end = time(&job["status"]["completionTime"]).unwrap_or_else(jiff::Timestamp::now);
    short_duration(end.duration_since(start).as_secs().max(0) as u64)
}

/// kubectl's short durations: 45s, 3m12s, 2h5m, 4d.
fn short_duration(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s if s < 8 * 3600 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        s if s < 2 * 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// kubectl's table of a workload kind.
pub fn table(
    root: &Path,
    kind: ObjectKind,
    objects: &[Value],
    namespaces: bool,
    age: &dyn Fn(&Value) -> String,
) -> String {
    if objects.is_empty() {
        return String::new();
    }
    let columns: &[&str] = match kind {
        ObjectKind::Deployment => &["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        ObjectKind::ReplicaSet | ObjectKind::ReplicationController => {
            &["NAME", "DESIRED", "CURRENT", "READY", "AGE"]
        }
        ObjectKind::StatefulSet => &["NAME", "READY", "AGE"],
        ObjectKind::DaemonSet => &[
            "NAME",
            "DESIRED",
            "CURRENT",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "NODE SELECTOR",
            "AGE",
        ],
        ObjectKind::Job => &["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"],
        _ => &[
            "NAME",
            "SCHEDULE",
            "TIMEZONE",
            "SUSPEND",
            "ACTIVE",
            "LAST SCHEDULE",
            "AGE",
        ],
    };
    let mut header: Vec<String> = columns.iter().map(|c| (*c).to_owned()).collect();
    if namespaces {
        header.insert(0, "NAMESPACE".to_owned());
    }
    let mut rows = vec![header];
    for o in objects {
        let mut row = Vec::new();
        if namespaces {
            row.push(o["metadata"]["namespace"].as_str().unwrap_or("").to_owned());
        }
        row.push(o["metadata"]["name"].as_str().unwrap_or("").to_owned());
        let c = || counts(root, kind, o);
        match kind {
            ObjectKind::Deployment => {
                let c = c();
                row.push(format!("{}/{}", c.available, c.replicas));
                row.push(c.updated.to_string());
                row.push(c.available.to_string());
            }
            ObjectKind::ReplicaSet | ObjectKind::ReplicationController => {
                let c = c();
                row.push(c.replicas.to_string());
                row.push(c.total.to_string());
                row.push(c.available.to_string());
            }
            ObjectKind::StatefulSet => {
                let c = c();
                row.push(format!("{}/{}", c.available, c.replicas));
            }
            ObjectKind::DaemonSet => {
                let c = c();
                row.push(c.replicas.to_string());
                row.push(c.total.to_string());
                row.push(c.available.to_string());
                row.push(c.updated.to_string());
                row.push(c.available.to_string());
                row.push("<none>".to_owned());
            }
            ObjectKind::Job => {
                row.push(job_status(o).to_owned());
                row.push(job_completions(o));
                row.push(job_duration(o));
            }
            _ => {
                row.push(o["spec"]["schedule"].as_str().unwrap_or("").to_owned());
                row.push(
                    o["spec"]["timeZone"]
                        .as_str()
                        .unwrap_or("<none>")
                        .to_owned(),
                );
                row.push(
                    if o["spec"]["suspend"] == true {
                        "True"
                    } else {
                        "False"
                    }
                    .to_owned(),
                );
                row.push(
                    o["status"]["active"]
                        .as_array()
                        .map_or(0, Vec::len)
                        .to_string(),
                );
                row.push(
                    o["status"]["lastScheduleTime"]
                        .as_str()
                        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                        .map_or_else(
                            || "<none>".to_owned(),
                            |t| {
                                short_duration(
                                    jiff::Timestamp::now().duration_since(t).as_secs().max(0)
                                        as u64,
                                )
                            },
                        ),
                );
            }
        }
        row.push(age(o));
        rows.push(row);
    }
    super::render_table(&rows, "   ")
}

/// `kubectl describe` of a workload, with its controller and pods (a CronJob's: its Jobs).
pub fn describe(root: &Path, storage: &Path, kind: ObjectKind, d: &Value) -> String {
    let mut out = String::new();
    let ns = d["metadata"]["namespace"].as_str().unwrap_or("default");
    let name = d["metadata"]["name"].as_str().unwrap_or("");
    let spec = &d["spec"];
    let pairs = |v: &Value| -> String {
        let list: Vec<String> = v
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
            .collect();
        if list.is_empty() {
            "<none>".to_owned()
        } else {
            list.join(",")
        }
    };
    let mut line = |label: &str, value: String| {
        let _ = writeln!(out, "{:<24}{value}", format!("{label}:"));
    };
    line("Name", name.to_owned());
    line("Namespace", ns.to_owned());
    line(
        "CreationTimestamp",
        d["metadata"]["creationTimestamp"]
            .as_str()
            .unwrap_or("")
            .to_owned(),
    );
    line("Labels", pairs(&d["metadata"]["labels"]));
    match kind {
        ObjectKind::Job => {
            line("Parallelism", spec["parallelism"].to_string());
            line(
                "Completions",
                spec["completions"]
                    .as_u64()
                    .map_or("<unset>".to_owned(), |c| c.to_string()),
            );
            line(
                "Completion Mode",
                spec["completionMode"].as_str().unwrap_or("").to_owned(),
            );
            line("Suspend", spec["suspend"].to_string());
            line("Backoff Limit", spec["backoffLimit"].to_string());
            if let Some(ttl) = spec["ttlSecondsAfterFinished"].as_u64() {
                line("TTL Seconds After Finished", ttl.to_string());
            }
            if let Some(d) = spec["activeDeadlineSeconds"].as_u64() {
                line("Active Deadline Seconds", d.to_string());
            }
            line(
                "Start Time",
                d["status"]["startTime"]
                    .as_str()
                    .unwrap_or("<none>")
                    .to_owned(),
            );
            if let Some(t) = d["status"]["completionTime"].as_str() {
                line("Completed At", t.to_owned());
            }
            line("Duration", job_duration(d));
            line(
                "Pods Statuses",
                format!(
                    "{} Active ({} Ready) / {} Succeeded / {} Failed",
                    d["status"]["active"].as_u64().unwrap_or(0),
                    d["status"]["ready"].as_u64().unwrap_or(0),
                    d["status"]["succeeded"].as_u64().unwrap_or(0),
                    d["status"]["failed"].as_u64().unwrap_or(0)
                ),
            );
            if let Some(done) = d["status"]["completedIndexes"].as_str() {
                line(
                    "Completed Indexes",
                    if done.is_empty() { "<none>" } else { done }.to_owned(),
                );
            }
            for c in d["status"]["conditions"].as_array().into_iter().flatten() {
                line(
                    "Condition",
                    format!(
                        "{} ({}): {}",
                        c["type"].as_str().unwrap_or(""),
                        c["reason"].as_str().unwrap_or(""),
                        c["message"].as_str().unwrap_or("")
                    ),
                );
            }
        }
        ObjectKind::CronJob => {
            line(
                "Schedule",
                spec["schedule"].as_str().unwrap_or("").to_owned(),
            );
            line(
                "Time Zone",
                spec["timeZone"].as_str().unwrap_or("<unset>").to_owned(),
            );
            line(
                "Concurrency Policy",
                spec["concurrencyPolicy"].as_str().unwrap_or("").to_owned(),
            );
            line("Suspend", spec["suspend"].to_string());
            line(
                "Successful Job History Limit",
                spec["successfulJobsHistoryLimit"].to_string(),
            );
            line(
                "Failed Job History Limit",
                spec["failedJobsHistoryLimit"].to_string(),
            );
            line(
                "Starting Deadline Seconds",
                spec["startingDeadlineSeconds"]
                    .as_u64()
                    .map_or("<unset>".to_owned(), |s| format!("{s}s")),
            );
            line(
                "Last Schedule Time",
                d["status"]["lastScheduleTime"]
                    .as_str()
                    .unwrap_or("<unset>")
                    .to_owned(),
            );
            let uid = d["metadata"]["uid"].as_str().unwrap_or("");
            let jobs: Vec<String> = controller::owned_jobs(storage, ns, uid)
                .iter()
                .map(|j| {
                    format!(
                        "{} ({})",
                        j["metadata"]["name"].as_str().unwrap_or(""),
                        job_status(j)
                    )
                })
                .collect();
            line(
                "Jobs",
                if jobs.is_empty() {
                    "<none>".to_owned()
                } else {
                    jobs.join(", ")
                },
            );
        }
        _ => {
            let c = counts(root, kind, d);
            let selector = match kind {
                ObjectKind::ReplicationController => &spec["selector"],
                _ => &spec["selector"]["matchLabels"],
            };
            line("Selector", pairs(selector));
            line(
                "Replicas",
                format!(
                    "{} desired | {} updated | {} total | {} available | {} unavailable",
                    c.replicas,
                    c.updated,
                    c.total,
                    c.available,
                    c.total.saturating_sub(c.available)
                ),
            );
            let strategy = match kind {
                ObjectKind::Deployment => &spec["strategy"],
                _ => &spec["updateStrategy"],
            };
            if let Some(t) = strategy["type"].as_str() {
                line("StrategyType", t.to_owned());
            }
            let text = |v: &Value| v.to_string().trim_matches('"').to_owned();
            if kind != ObjectKind::StatefulSet && strategy["type"] == "RollingUpdate" {
                line(
                    "RollingUpdateStrategy",
                    format!(
                        "{} max unavailable, {} max surge",
                        text(&strategy["rollingUpdate"]["maxUnavailable"]),
                        text(&strategy["rollingUpdate"]["maxSurge"])
                    ),
                );
            }
            if kind == ObjectKind::StatefulSet {
                line(
                    "Pod Management Policy",
                    spec["podManagementPolicy"]
                        .as_str()
                        .unwrap_or("")
                        .to_owned(),
                );
                if strategy["type"] == "RollingUpdate" {
                    line("Partition", text(&strategy["rollingUpdate"]["partition"]));
                }
                let claims: Vec<String> = spec["volumeClaimTemplates"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| {
                        format!(
                            "{} ({})",
                            t["metadata"]["name"].as_str().unwrap_or(""),
                            t["spec"]["resources"]["requests"]["storage"]
                                .as_str()
                                .unwrap_or("")
                        )
                    })
                    .collect();
                line(
                    "Volume Claims",
                    if claims.is_empty() {
                        "<none>".to_owned()
                    } else {
                        claims.join(", ")
                    },
                );
            }
            if kind == ObjectKind::Deployment {
                line("Pod template hash", controller::template_hash(d));
            }
        }
    }
    line(
        "Controller",
        controller::pid(root, kind, ns, name).map_or_else(
            || {
                if kind == ObjectKind::Job && controller::job_finished(d) {
                    "done: the Job finished".to_owned()
                } else {
                    "not running (the next podkit get or apply starts it)".to_owned()
                }
            },
            |pid| {
                format!(
                    "pid {pid} (log: {})",
                    controller::controller_dir(root, kind, ns, name)
                        .join("controller.log")
                        .display()
                )
            },
        ),
    );
    if kind != ObjectKind::CronJob {
        let uid = d["metadata"]["uid"].as_str().unwrap_or("");
        let pods: Vec<String> = controller::owned_pods(root, uid)
            .iter()
            .map(|p| format!("{} ({})", p.name, p.phase()))
            .collect();
        line(
            "Pods",
            if pods.is_empty() {
                "<none>".to_owned()
            } else {
                pods.join(", ")
            },
        );
    }
    out
}
