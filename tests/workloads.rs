//! Deployments end to end: `apply` keeps the object and starts its controller process, which
//! keeps `replicas` pods (named as Kubernetes names them), replaces a deleted one, rolls a
//! changed template one pod at a time behind readiness, scales, survives being SIGKILLed
//! (the next `get` starts it again), and `delete -f` leaves nothing. Pods of host processes.

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
        std::fs::read_to_string(
            self.state()
                .join("controllers/default/deployment")
                .join(name)
                .join("pid"),
        )
        .ok()?
        .trim()
        .parse()
        .ok()
    }

    fn wait(&self, what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(40);
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
