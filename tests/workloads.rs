//! Workloads end to end, each kept by its controller process: a Deployment keeps `replicas`
//! pods (named as Kubernetes names them), replaces a deleted one, rolls a changed template one
//! pod at a time behind readiness, scales, survives being SIGKILLed (the next `get` starts it
//! again), and `delete -f` leaves nothing; a StatefulSet starts its pods in order with claims
//! of their own that outlive them; Jobs run to completion, retry with backoff up to their
//! limit, run out of time, index their pods and expire; a CronJob makes a Job when its
//! schedule is due; a DaemonSet and a ReplicaSet keep theirs. Pods of host processes.

mod common;
use common::Isolated as Env;

use std::time::{Duration, Instant};

use serde_json::Value;

impl Env {
    /// The pods, as `get pods -o json` lists them.
    fn pods(&self) -> Vec<Value> {
        let out = self.podkit(&["get", "pods", "-o", "json"]);
        let json: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        json["items"].as_array().cloned().unwrap_or_default()
    }

    fn controller_pid(&self, name: &str) -> Option<i32> {
        self.controller_pid_of("deployment", name)
    }

    fn controller_pid_of(&self, kind: &str, name: &str) -> Option<i32> {
        std::fs::read_to_string(
            self.state()
                .join("controllers/default")
                .join(kind)
                .join(name)
                .join("pid"),
        )
        .ok()?
        .trim()
        .parse()
        .ok()
    }

    fn wait(&self, what: &str, done: impl FnMut() -> bool) {
        self.wait_up_to(Duration::from_secs(40), what, done);
    }

    fn wait_up_to(&self, limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + limit;
        while !done() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {:#?}",
                self.pods()
                    .iter()
                    .map(|p| (p["metadata"]["name"].clone(), p["status"]["phase"].clone()))
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// One stored object, as `get KIND NAME -o json` shows it (`Null` when there is none).
    fn object(&self, kind: &str, name: &str) -> Value {
        let out = self.podkit(&["get", kind, name, "-o", "json"]);
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    /// The pods whose name starts with `prefix`.
    fn pods_of(&self, prefix: &str) -> Vec<Value> {
        self.pods()
            .into_iter()
            .filter(|p| name(p).starts_with(prefix))
            .collect()
    }
}

fn condition(object: &Value, kind: &str) -> Option<Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind && c["status"] == "True")
        .cloned()
}

fn phase(pod: &Value) -> &str {
    pod["status"]["phase"].as_str().unwrap_or("")
}

fn time(value: &Value) -> jiff::Timestamp {
    value.as_str().and_then(|t| t.parse().ok()).expect("a time")
}

fn ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

fn terminating(pod: &Value) -> bool {
    !pod["metadata"]["deletionTimestamp"].is_null()
}

fn hash(pod: &Value) -> String {
    pod["metadata"]["labels"]["pod-template-hash"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

fn name(pod: &Value) -> String {
    pod["metadata"]["name"].as_str().unwrap_or("").to_owned()
}

/// Everything the test made goes, also when it failed: the file's objects and pods, and the
/// controller.
struct Cleanup<'a>(&'a Env, String);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = self
            .0
            .podkit(&["delete", "-f", &self.1, "--grace-period", "0"]);
        for pod in self.0.pods() {
            let _ = self.0.podkit(&["delete", "pod", &name(&pod), "--force"]);
        }
    }
}

#[test]
fn a_deployment_keeps_rolls_and_scales_its_pods() {
    let Some(env) = Env::new() else { return };
    let manifest = |greeting: &str| {
        format!(
            "apiVersion: v1
kind: ConfigMap
metadata: {{name: web-config}}
data: {{greeting: {greeting}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, labels: {{app: web}}}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: web}}}}
  strategy:
    type: RollingUpdate
    rollingUpdate: {{maxSurge: 1, maxUnavailable: 0}}
  template:
    metadata:
      labels: {{app: web}}
      annotations: {{podkit.io/host-process: 'true'}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: app
        command: [sh, -c, 'exec sleep 1000']
        env:
        - name: GREETING
          value: {greeting}
        readinessProbe:
          exec: {{command: ['true']}}
          periodSeconds: 1
"
        )
    };
    let file = env.file("web.yaml", &manifest("hello"));
    let _cleanup = Cleanup(&env, file.clone());
    let applied = env.ok(&["apply", "-f", &file]);
    assert!(
        applied.contains("configmap/web-config created"),
        "{applied}"
    );
    assert!(applied.contains("deployment.apps/web created"), "{applied}");

    // Three pods, named as Kubernetes names them, Ready.
    env.wait("3 ready pods", || {
        let pods = env.pods();
        pods.len() == 3 && pods.iter().all(ready)
    });
    let first = env.pods();
    let first_hash = hash(&first[0]);
    for pod in &first {
        let n = name(pod);
        let rest = n.strip_prefix("web-").expect("named after the deployment");
        let (h, suffix) = rest.split_once('-').expect("web-HASH-SUFFIX");
        assert_eq!(h, first_hash, "{n}");
        assert_eq!(suffix.len(), 5, "{n}");
        assert!(
            suffix
                .bytes()
                .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b)),
            "{n}"
        );
        assert_eq!(
            pod["metadata"]["ownerReferences"][0]["name"],
            format!("web-{first_hash}")
        );
    }
    let table = env.ok(&["get", "deploy"]);
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .expect("a row")
        .split_whitespace()
        .collect();
    assert_eq!(&row[..4], ["web", "3/3", "3", "3"], "{table}");
    let described = env.ok(&["describe", "deployment", "web"]);
    assert!(
        described.contains("3 desired | 3 updated | 3 total | 3 available | 0 unavailable"),
        "{described}"
    );

    // A deleted pod is replaced.
    let gone = name(&first[0]);
    env.ok(&["delete", "pod", &gone]);
    env.wait("the deleted pod replaced", || {
        let pods = env.pods();
        pods.len() == 3 && pods.iter().all(ready) && !pods.iter().any(|p| name(p) == gone)
    });

    // A changed template rolls the pods one at a time (maxSurge 1, maxUnavailable 0): never
    // fewer than 3 Ready pods that are not terminating, never more than 4 pods not terminating.
    env.ok(&["apply", "-f", &env.file("web.yaml", &manifest("bonjour"))]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut least_ready, mut most) = (usize::MAX, 0);
    let new_hash = loop {
        let pods: Vec<Value> = env.pods().into_iter().filter(|p| !terminating(p)).collect();
        let ready_now = pods.iter().filter(|p| ready(p)).count();
        least_ready = least_ready.min(ready_now);
        most = most.max(pods.len());
        let hashes: std::collections::BTreeSet<String> = pods.iter().map(hash).collect();
        if pods.len() == 3
            && ready_now == 3
            && hashes.len() == 1
            && !hashes.contains(&first_hash)
            && env.pods().len() == 3
        {
            break hashes.into_iter().next().expect("one hash");
        }
        assert!(
            Instant::now() < deadline,
            "the rollout did not finish: {pods:#?}"
        );
        std::thread::sleep(Duration::from_millis(30));
    };
    assert!(
        least_ready >= 3,
        "only {least_ready} pods were ready during the rollout"
    );
    assert!(
        most <= 4,
        "{most} pods at once, more than replicas + maxSurge"
    );
    assert_ne!(new_hash, first_hash);
    let status = env.ok(&["rollout", "status", "deployment/web", "--timeout", "20s"]);
    assert!(status.contains("successfully rolled out"), "{status}");

    // Scaled down to one.
    assert!(
        env.ok(&["scale", "deployment", "web", "--replicas", "1"])
            .contains("scaled")
    );
    env.wait("one pod", || {
        let pods = env.pods();
        pods.len() == 1 && ready(&pods[0])
    });

    // The controller SIGKILLed: the next `get` starts it again, and it keeps the pods.
    let pid = env.controller_pid("web").expect("a controller");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the controller");
    env.wait("the controller to die", || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z "))
    });
    env.ok(&["get", "deploy", "web"]);
    env.wait("a new controller", || {
        env.controller_pid("web").is_some_and(|p| p != pid)
    });
    let only = name(&env.pods()[0]);
    env.ok(&["delete", "pod", &only]);
    env.wait("the pod replaced by the new controller", || {
        let pods = env.pods();
        pods.len() == 1 && name(&pods[0]) != only && ready(&pods[0])
    });

    // The whole file deleted: pods, controller, objects.
    let deleted = env.ok(&["delete", "-f", &file]);
    assert!(
        deleted.contains("deployment.apps \"web\" deleted"),
        "{deleted}"
    );
    assert!(env.pods().is_empty(), "{:#?}", env.pods());
    assert!(
        !env.state()
            .join("controllers/default/deployment/web")
            .exists()
    );
    let none = env.podkit(&["get", "deploy"]);
    assert!(String::from_utf8_lossy(&none.stderr).contains("No resources found"));
}

#[test]
fn a_statefulset_starts_its_pods_in_order_with_claims_of_their_own() {
    let Some(env) = Env::new() else { return };
    // Each pod is Ready once the test puts `ready` into its claim: the next waits for it.
    let file = env.file(
        "db.yaml",
        "apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  replicas: 3
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata:
      labels: {app: db}
      annotations: {podkit.io/host-process: 'true'}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: db
        command: [sh, -c, 'hostname >> /data/who; exec sleep 1000']
        volumeMounts: [{name: data, mountPath: /data}]
        readinessProbe:
          exec: {command: [test, -f, /data/ready]}
          periodSeconds: 1
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1Mi}}
",
    );
    let _cleanup = Cleanup(&env, file.clone());
    assert!(
        env.ok(&["apply", "-f", &file])
            .contains("statefulset.apps/db created")
    );
    let claim = |ordinal: u32| {
        env.storage()
            .join(format!("volumes/default/data-db-{ordinal}"))
    };
    for ordinal in 0..3u32 {
        let pod = format!("db-{ordinal}");
        env.wait(&format!("{pod} running"), || {
            env.pods_of(&pod)
                .first()
                .is_some_and(|p| phase(p) == "Running")
        });
        // Its claim made for it, its hostname its name; the next not started before it is
        // Ready.
        env.wait(&format!("{pod} to write its claim"), || {
            std::fs::read_to_string(claim(ordinal).join("who")).unwrap_or_default()
                == format!("{pod}\n")
        });
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(env.pods().len() as u32, ordinal + 1, "{:#?}", env.pods());
        std::fs::write(claim(ordinal).join("ready"), "").expect("ready");
        env.wait(&format!("{pod} ready"), || {
            env.pods_of(&pod).first().is_some_and(ready)
        });
    }
    let pod = &env.pods_of("db-1")[0];
    assert_eq!(
        pod["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"],
        "db-1"
    );
    assert_eq!(
        pod["metadata"]["labels"]["apps.kubernetes.io/pod-index"],
        "1"
    );
    assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "StatefulSet");
    let table = env.ok(&["get", "sts"]);
    assert!(
        table
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("db") && l.contains("3/3")),
        "{table}"
    );
    let claims = env.ok(&["get", "pvc"]);
    for ordinal in 0..3 {
        assert!(claims.contains(&format!("data-db-{ordinal}")), "{claims}");
    }
    // A deleted pod comes back under its name, with its claim's data.
    let uid = pod["metadata"]["uid"].clone();
    env.ok(&["delete", "pod", "db-1"]);
    env.wait("db-1 made again and ready", || {
        env.pods_of("db-1")
            .first()
            .is_some_and(|p| p["metadata"]["uid"] != uid && ready(p))
    });
    assert_eq!(
        std::fs::read_to_string(claim(1).join("who")).expect("who"),
        "db-1\ndb-1\n"
    );
    // Scaled down: the highest ordinals go; their claims stay (whenScaled: Retain).
    env.ok(&["scale", "sts", "db", "--replicas", "1"]);
    env.wait("one pod left", || {
        let pods = env.pods();
        pods.len() == 1 && name(&pods[0]) == "db-0"
    });
    assert!(claim(2).join("who").exists());
    // Deleted: the pods go, the claims stay (whenDeleted: Retain), as in a cluster.
    let deleted = env.ok(&["delete", "-f", &file]);
    assert!(
        deleted.contains("statefulset.apps \"db\" deleted"),
        "{deleted}"
    );
    assert!(env.pods().is_empty());
    assert!(claim(0).join("who").exists());
    for ordinal in 0..3 {
        env.ok(&["delete", "pvc", &format!("data-db-{ordinal}")]);
    }
    assert!(!claim(0).exists());
}

#[test]
fn jobs_run_to_completion_retry_index_their_pods_and_expire() {
    let Some(env) = Env::new() else { return };
    let job = |name: &str, spec: &str, policy: &str, command: &str| {
        format!(
            "apiVersion: batch/v1
kind: Job
metadata: {{name: {name}}}
spec:
{spec}  template:
    metadata:
      annotations: {{podkit.io/host-process: 'true'}}
    spec:
      restartPolicy: {policy}
      terminationGracePeriodSeconds: 1
      containers:
      - name: work
        command: [sh, -c, '{command}']
"
        )
    };
    let file = env.file(
        "jobs.yaml",
        &[
            job(
                "count",
                "  completions: 3\n  parallelism: 2\n",
                "Never",
                "echo done",
            ),
            job(
                "flaky",
                "  backoffLimit: 1\n",
                "Never",
                "echo failing; exit 3",
            ),
            job(
                "idx",
                "  completions: 3\n  parallelism: 3\n  completionMode: Indexed\n",
                "Never",
                "echo index $JOB_COMPLETION_INDEX host $(hostname)",
            ),
            job(
                "slow",
                "  activeDeadlineSeconds: 2\n",
                "OnFailure",
                "exec sleep 1000",
            ),
            job("short", "  ttlSecondsAfterFinished: 1\n", "Never", "true"),
        ]
        .join("---\n"),
    );
    let _cleanup = Cleanup(&env, file.clone());
    let applied = env.ok(&["apply", "-f", &file]);
    assert!(applied.contains("job.batch/count created"), "{applied}");

    // Three completions, two at a time; the pods kept, Completed, their logs readable.
    env.wait("job count complete", || {
        condition(&env.object("job", "count"), "Complete").is_some()
    });
    let count = env.object("job", "count");
    assert_eq!(count["status"]["succeeded"], 3, "{count:#}");
    let pods = env.pods_of("count-");
    assert_eq!(pods.len(), 3, "{pods:#?}");
    for pod in &pods {
        assert_eq!(phase(pod), "Succeeded");
        assert_eq!(
            pod["metadata"]["labels"]["batch.kubernetes.io/job-name"],
            "count"
        );
        assert_eq!(env.ok(&["logs", &name(pod)]), "done\n");
    }
    let table = env.ok(&["get", "jobs", "count"]);
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .expect("a row")
        .split_whitespace()
        .collect();
    assert_eq!(&row[..3], ["count", "Complete", "3/3"], "{table}");

    // Indexed: one pod per index, each with its index in env and hostname.
    env.wait("job idx complete", || {
        condition(&env.object("job", "idx"), "Complete").is_some()
    });
    assert_eq!(
        env.object("job", "idx")["status"]["completedIndexes"],
        "0-2"
    );
    let mut seen = Vec::new();
    for pod in env.pods_of("idx-") {
        let index = pod["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
            .as_str()
            .expect("an index")
            .to_owned();
        assert!(
            name(&pod).starts_with(&format!("idx-{index}-")),
            "{}",
            name(&pod)
        );
        assert_eq!(
            env.ok(&["logs", &name(&pod)]),
            format!("index {index} host idx-{index}\n")
        );
        seen.push(index);
    }
    seen.sort();
    assert_eq!(seen, ["0", "1", "2"]);

    // Past its deadline: failed, its pod stopped.
    env.wait("job slow past its deadline", || {
        condition(&env.object("job", "slow"), "Failed").is_some()
    });
    assert_eq!(
        condition(&env.object("job", "slow"), "Failed").expect("failed")["reason"],
        "DeadlineExceeded"
    );
    env.wait("job slow's pod gone", || env.pods_of("slow-").is_empty());

    // Expired a second after it finished: the Job and its pod gone.
    env.wait("job short expired", || {
        env.object("job", "short").is_null() && env.pods_of("short-").is_empty()
    });

    // Failing: a second pod 10 s after the first failed (the backoff), then the limit.
    env.wait_up_to(Duration::from_secs(60), "job flaky failed", || {
        condition(&env.object("job", "flaky"), "Failed").is_some()
    });
    let flaky = env.object("job", "flaky");
    assert_eq!(
        condition(&flaky, "Failed").expect("failed")["reason"],
        "BackoffLimitExceeded"
    );
    assert_eq!(flaky["status"]["failed"], 2, "{flaky:#}");
    let mut pods = env.pods_of("flaky-");
    assert_eq!(pods.len(), 2);
    assert!(pods.iter().all(|p| phase(p) == "Failed"));
    pods.sort_by_key(|p| time(&p["metadata"]["creationTimestamp"]));
    let failed_at =
        time(&pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]["finishedAt"]);
    let second = time(&pods[1]["metadata"]["creationTimestamp"]);
    assert!(
        second.duration_since(failed_at) >= jiff::SignedDuration::from_secs(9),
        "the second pod came {:?} after the first failed, not after the 10 s backoff",
        second.duration_since(failed_at)
    );
    let described = env.ok(&["describe", "job", "flaky"]);
    assert!(
        described.contains("0 Active (0 Ready) / 0 Succeeded / 2 Failed"),
        "{described}"
    );

    // Deleted with the file: every Job and pod (the expired one is no error, when said so).
    env.ok(&["delete", "-f", &file, "--ignore-not-found"]);
    assert!(env.pods().is_empty(), "{:#?}", env.pods());
    assert!(
        String::from_utf8_lossy(&env.podkit(&["get", "jobs"]).stderr)
            .contains("No resources found")
    );
}

#[test]
fn a_cronjob_makes_a_job_when_its_schedule_is_due() {
    let Some(env) = Env::new() else { return };
    let file = env.file(
        "tick.yaml",
        "apiVersion: batch/v1
kind: CronJob
metadata: {name: tick}
spec:
  schedule: '* * * * *'
  timeZone: Etc/UTC
  concurrencyPolicy: Forbid
  successfulJobsHistoryLimit: 1
  jobTemplate:
    metadata: {labels: {made-by: tick}}
    spec:
      template:
        metadata:
          annotations: {podkit.io/host-process: 'true'}
        spec:
          restartPolicy: OnFailure
          terminationGracePeriodSeconds: 1
          containers:
          - name: tick
            command: [echo, tick]
",
    );
    let _cleanup = Cleanup(&env, file.clone());
    assert!(
        env.ok(&["apply", "-f", &file])
            .contains("cronjob.batch/tick created")
    );
    // Run by hand at once, as `kubectl create job --from=cronjob/...` runs it.
    assert!(
        env.ok(&["create", "job", "tick-now", "--from", "cronjob/tick"])
            .contains("job.batch/tick-now created")
    );
    env.wait("the manual job complete", || {
        condition(&env.object("job", "tick-now"), "Complete").is_some()
    });
    let manual = env.object("job", "tick-now");
    assert_eq!(
        manual["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"],
        "manual"
    );
    assert_eq!(
        env.ok(&["logs", &name(&env.pods_of("tick-now-")[0])]),
        "tick\n"
    );
    // Due at the next minute: a Job named by its minute, which completes.
    env.wait_up_to(Duration::from_secs(75), "the first job", || {
        env.ok(&["get", "jobs", "-o", "name"])
            .lines()
            .any(|l| l.starts_with("job.batch/tick-") && l != "job.batch/tick-now")
    });
    let jobs: Value =
        serde_json::from_slice(&env.podkit(&["get", "jobs", "-o", "json"]).stdout).expect("json");
    let job = jobs["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|j| j["metadata"]["name"] != "tick-now")
        .cloned()
        .expect("the scheduled job");
    let job_name = job["metadata"]["name"].as_str().expect("a name").to_owned();
    let minute: i64 = job_name
        .strip_prefix("tick-")
        .expect("tick-MINUTE")
        .parse()
        .expect("a minute");
    assert_eq!(job["metadata"]["labels"]["made-by"], "tick");
    assert_eq!(job["metadata"]["ownerReferences"][0]["kind"], "CronJob");
    let scheduled =
        time(&job["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"]);
    assert_eq!(scheduled.as_second(), minute * 60);
    env.wait("the job complete", || {
        condition(&env.object("job", &job_name), "Complete").is_some()
    });
    // The history keeps one succeeded Job: the manual one, older, goes with its pod.
    env.wait("the manual job removed by the history limit", || {
        env.object("job", "tick-now").is_null() && env.pods_of("tick-now-").is_empty()
    });
    let pods = env.pods_of(&format!("{job_name}-"));
    assert_eq!(env.ok(&["logs", &name(&pods[0])]), "tick\n");
    env.wait("the cronjob's status", || {
        let cj = env.object("cronjob", "tick");
        !cj["status"]["lastScheduleTime"].is_null() && !cj["status"]["lastSuccessfulTime"].is_null()
    });
    let table = env.ok(&["get", "cj"]);
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .expect("a row")
        .split_whitespace()
        .collect();
    assert_eq!(&row[..4], ["tick", "*", "*", "*"], "{table}");
    assert!(
        table.contains("Etc/UTC") && table.contains("False"),
        "{table}"
    );
    // Deleted: its Jobs and their pods with it.
    env.ok(&["delete", "cronjob", "tick"]);
    assert!(env.pods().is_empty(), "{:#?}", env.pods());
    assert!(env.object("job", &job_name).is_null());
}

#[test]
fn a_daemonset_and_a_replicaset_keep_their_pods() {
    let Some(env) = Env::new() else { return };
    let template = |app: &str| {
        format!(
            "  selector: {{matchLabels: {{app: {app}}}}}
  template:
    metadata:
      labels: {{app: {app}}}
      annotations: {{podkit.io/host-process: 'true'}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: app
        command: [sh, -c, 'exec sleep 1000']
"
        )
    };
    let file = env.file(
        "set.yaml",
        &format!(
            "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {{name: agent}}\nspec:\n{}---\napiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {{name: front}}\nspec:\n  replicas: 2\n{}---\napiVersion: v1\nkind: Service\nmetadata: {{name: front}}\nspec:\n  selector: {{app: front}}\n  ports: [{{port: 80, targetPort: 8080}}]\n",
            template("agent"),
            template("front")
        ),
    );
    let _cleanup = Cleanup(&env, file.clone());
    let applied = env.podkit(&["apply", "-f", &file]);
    assert!(applied.status.success(), "{applied:?}");
    // A Service is kept and listed with the cluster IP it was given (tests/network.rs sends
    // it traffic).
    let services = env.ok(&["get", "svc"]);
    let row: Vec<&str> = services
        .lines()
        .nth(1)
        .expect("a row")
        .split_whitespace()
        .collect();
    assert_eq!(row[..2], ["front", "ClusterIP"], "{services}");
    assert!(row[2].starts_with("10.96."), "{services}");
    assert_eq!(row[3..5], ["<none>", "80/TCP"], "{services}");
    let described = env.ok(&["describe", "svc", "front"]);
    assert!(
        described.contains(&format!("IP:                {}", row[2])),
        "{described}"
    );
    env.wait("one agent and two front pods", || {
        let (agents, fronts) = (env.pods_of("agent-"), env.pods_of("front-"));
        agents.len() == 1
            && fronts.len() == 2
            && agents.iter().chain(&fronts).all(|p| phase(p) == "Running")
    });
    let agent = name(&env.pods_of("agent-")[0]);
    assert_eq!(agent.len(), "agent-".len() + 5, "{agent}");
    assert_eq!(
        env.pods_of("agent-")[0]["metadata"]["ownerReferences"][0]["kind"],
        "DaemonSet"
    );
    let front = name(&env.pods_of("front-")[0]);
    env.ok(&["delete", "pod", &front, &agent]);
    env.wait("both replaced", || {
        let pods = env.pods();
        pods.len() == 3
            && !pods.iter().any(|p| name(p) == front || name(p) == agent)
            && pods.iter().all(|p| phase(p) == "Running")
    });
    let ds = env.ok(&["get", "ds"]);
    assert!(
        ds.lines()
            .nth(1)
            .is_some_and(|l| l.split_whitespace().take(3).eq(["agent", "1", "1"])),
        "{ds}"
    );
    let rs = env.ok(&["get", "rs"]);
    assert!(
        rs.lines()
            .nth(1)
            .is_some_and(|l| l.split_whitespace().take(3).eq(["front", "2", "2"])),
        "{rs}"
    );
    let deleted = env.ok(&["delete", "-f", &file]);
    assert!(deleted.contains("service \"front\" deleted"), "{deleted}");
    assert!(env.pods().is_empty(), "{:#?}", env.pods());
}

/// Pods of one name in two namespaces are two pods: each reads its own namespace's ConfigMap,
/// `get` shows a namespace (`-n`) or all (`-A`), and `logs`, `exec`, `delete` take `-n`. A
/// Deployment in a namespace makes its pods there.
#[test]
fn namespaces_keep_pods_and_objects_apart() {
    let Some(env) = Env::new() else { return };
    let doc = |ns: &str| {
        format!(
            "apiVersion: v1
kind: ConfigMap
metadata: {{name: cfg, namespace: {ns}}}
data: {{who: {ns}-config}}
---
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: {ns}
  annotations: {{podkit.io/host-process: 'true'}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    command: [sh, -c, 'echo $WHO; exec sleep 1000']
    env:
    - name: WHO
      valueFrom: {{configMapKeyRef: {{name: cfg, key: who}}}}
"
        )
    };
    // Two files, applied by one command with two -f.
    let default_file = env.file("default.yaml", &doc("default"));
    let file = env.file(
        "shop.yaml",
        &format!(
            "{}---\napiVersion: apps/v1
kind: Deployment
metadata: {{name: api, namespace: shop}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: api}}}}
  template:
    metadata:
      labels: {{app: api}}
      annotations: {{podkit.io/host-process: 'true'}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: app
        command: [sh, -c, 'exec sleep 1000']
",
            doc("shop")
        ),
    );
    let _cleanup = Cleanup(&env, file.clone());
    let _cleanup_default = Cleanup(&env, default_file.clone());
    env.ok(&["apply", "-f", &default_file, "-f", &file]);
    env.wait("the shop's deployment pod", || {
        env.ok(&["get", "pods", "-n", "shop", "-o", "name"])
            .lines()
            .count()
            == 2
    });
    let default = env.ok(&["get", "pods"]);
    assert_eq!(default.lines().count(), 2, "only default's web: {default}");
    let all = env.ok(&["get", "pods", "-A"]);
    let rows: Vec<Vec<&str>> = all
        .lines()
        .map(|l| l.split_whitespace().take(2).collect())
        .collect();
    assert_eq!(rows[0], ["NAMESPACE", "NAME"], "{all}");
    assert!(rows.contains(&vec!["default", "web"]), "{all}");
    assert!(rows.contains(&vec!["shop", "web"]), "{all}");
    assert!(
        rows.iter()
            .any(|r| r[0] == "shop" && r[1].starts_with("api-")),
        "{all}"
    );
    for ns in ["default", "shop"] {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let logs = env.podkit(&["logs", "web", "-n", ns]);
            if String::from_utf8_lossy(&logs.stdout) == format!("{ns}-config\n") {
                break;
            }
            assert!(Instant::now() < deadline, "{ns}'s web logged {logs:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(
            env.ok(&["exec", "-n", ns, "web", "--", "sh", "-c", "echo $WHO"]),
            format!("{ns}-config\n")
        );
    }
    let missing = env.podkit(&["get", "pod", "web", "-n", "nowhere"]);
    assert!(
        String::from_utf8_lossy(&missing.stderr)
            .contains("pod \"web\" not found in namespace \"nowhere\""),
        "{missing:?}"
    );
    env.ok(&["delete", "pod", "web", "-n", "shop"]);
    assert!(
        env.podkit(&["get", "pod", "web", "-n", "shop"])
            .status
            .code()
            == Some(1)
    );
    assert!(env.ok(&["get", "pod", "web"]).contains("Running"));
    env.ok(&[
        "delete",
        "-f",
        &default_file,
        "-f",
        &file,
        "--ignore-not-found",
    ]);
    assert!(env.pods().is_empty() && env.ok(&["get", "pods", "-A"]).is_empty());
}
