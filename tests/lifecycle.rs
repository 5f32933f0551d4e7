//! The pod lifecycle as kubelet runs it, one test per behaviour, modelled on what Kubernetes'
//! own node e2e tests assert (`test/e2e_node/container_lifecycle_test.go`, and
//! `test/e2e/common/node/{init_container,container_probe,lifecycle_hook}.go`), on pods of host
//! processes: start order, postStart, sidecar gating, the phase with sidecars, termination
//! order and its grace periods, conditions, probes during termination, probe-level grace
//! periods, the stop signal. Needs root.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

mod common;
use common::{Running, next, podkit};

/// A directory of the host for a test's markers (host processes see the host's /tmp), removed
/// when dropped: what a pod wrote stays readable after the pod is gone.
struct Markers(PathBuf);

impl Markers {
    fn new(test: &str) -> Markers {
        let dir = std::env::temp_dir().join(format!(
            "podkit-lifecycle-{test}-{}-{}",
            std::process::id(),
            next()
        ));
        std::fs::create_dir_all(&dir).expect("markers dir");
        Markers(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.0.join(name)).unwrap_or_default()
    }

    /// A nanosecond time a container wrote with `date +%s%N`.
    fn time(&self, name: &str) -> u128 {
        let text = self.read(name);
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("marker {name}: {text:?}"))
    }
}

impl Drop for Markers {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `podkit get pods NAME`'s row, split into its columns (NAME READY STATUS RESTARTS AGE).
fn get_row(name: &str) -> Vec<String> {
    let table = podkit(&["get", "pods", name]);
    let row = table
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no row for {name}: {table}"));
    row.split_whitespace().map(str::to_owned).collect()
}

fn condition<'a>(status: &'a Value, kind: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == kind))
        .unwrap_or(&Value::Null)
}

fn container<'a>(status: &'a Value, list: &str, name: &str) -> &'a Value {
    status[list]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == name))
        .unwrap_or(&Value::Null)
}

/// Issue item 1: kubelet starts containers one by one and runs each one's postStart hook within its
/// start: the next container starts only once the hook is done.
#[test]
fn a_post_start_hook_finishes_before_the_next_container_starts() {
    let marks = Markers::new("poststart");
    let dir = marks.path().display().to_string();
    let Some(pod) = Running::start("poststart", |name| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, annotations: {{podkit.io/host-process: 'true'}}}}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: first
    command: [sh, -c, "while true; do sleep 0.1; done"]
    lifecycle:
      postStart:
        exec: {{command: [sh, -c, "sleep 1; touch {dir}/hook-done"]}}
  - name: second
    command: [sh, -c, "if test -e {dir}/hook-done; then echo after the hook; else echo before the hook; fi; while true; do sleep 0.1; done"]
"#
        )
    }) else {
        return;
    };
    pod.wait_for("the second container's line", || {
        !pod.log("second", 0).is_empty()
    });
    assert_eq!(pod.log("second", 0), "after the hook\n");
    pod.delete_and_check();
}

/// Issue item 2: a native sidecar whose startup probe has not succeeded holds back every later
/// container, across its restarts: the pod stays Pending and not Initialized, naming it.
#[test]
fn a_sidecar_that_never_starts_holds_back_the_pod() {
    let Some(pod) = Running::start("gated", |name| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, annotations: {{podkit.io/host-process: 'true'}}}}
spec:
  terminationGracePeriodSeconds: 2
  initContainers:
  - name: side
    restartPolicy: Always
    command: [sh, -c, "while true; do sleep 0.1; done"]
    startupProbe:
      exec: {{command: ["false"]}}
      periodSeconds: 1
      failureThreshold: 1
  containers:
  - name: app
    command: [sh, -c, "echo app started; while true; do sleep 0.1; done"]
"#
        )
    }) else {
        return;
    };
    pod.wait_for("the sidecar restarted by its startup probe", || {
        container(&pod.status(), "initContainerStatuses", "side")["restartCount"]
            .as_i64()
            .is_some_and(|n| n >= 1)
    });
    let status = pod.status();
    assert_eq!(status["phase"], "Pending", "{status:#}");
    let app = container(&status, "containerStatuses", "app");
    assert!(app["state"]["waiting"].is_object(), "{status:#}");
    assert_eq!(pod.log("app", 0), "", "the app never started");
    let initialized = condition(&status, "Initialized");
    assert_eq!(initialized["status"], "False");
    assert_eq!(initialized["reason"], "ContainersNotInitialized");
    assert_eq!(
        initialized["message"],
        "containers with incomplete status: [side]"
    );
    pod.delete_and_check();
}

/// Issue item 3: the phase counts a running sidecar (kubelet's getPhase): with the main container
/// done, the pod is Running until its sidecar has stopped, then Succeeded.
#[test]
fn the_phase_waits_for_the_sidecars_to_stop() {
    let Some(pod) = Running::start("phase", |name| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, annotations: {{podkit.io/host-process: 'true'}}}}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 10
  initContainers:
  - name: side
    restartPolicy: Always
    command: [sh, -c, "trap 'sleep 1; exit 0' TERM; while true; do sleep 0.1; done"]
  containers:
  - name: app
    command: [sh, -c, "sleep 0.5; echo done"]
"#
        )
    }) else {
        return;
    };
    // Every status written on the way: Succeeded only once the sidecar is terminated.
    let mut seen_running_with_app_done = false;
    pod.wait_for("the pod to succeed", || {
        let status = pod.status();
        let app_done =
            container(&status, "containerStatuses", "app")["state"]["terminated"].is_object();
        let side_done =
            container(&status, "initContainerStatuses", "side")["state"]["terminated"].is_object();
        if status["phase"] == "Succeeded" {
            assert!(side_done, "Succeeded while the sidecar runs: {status:#}");
            return true;
        }
        if app_done && !side_done {
            assert_eq!(status["phase"], "Running", "{status:#}");
            seen_running_with_app_done = true;
        }
        false
    });
    assert!(
        seen_running_with_app_done,
        "the sidecar took a second to stop: that was seen"
    );
    assert_eq!(pod.wait_exit(), Some(0));
    // kubectl's columns: the sidecar counts as a container.
    assert_eq!(get_row(&pod.name)[1..4], ["0/2", "Completed", "0"]);
    pod.delete_and_check();
}

/// Issue item 4: termination: every preStop hook starts at once (a sidecar's does not wait for the
/// others), then the main container gets its stop signal, then the sidecars in reverse order.
#[test]
fn sidecars_stop_in_reverse_order_after_their_pre_stop_hooks_ran_together() {
    let marks = Markers::new("order");
    let dir = marks.path().display().to_string();
    let sidecar = |n: &str| {
        format!(
            r#"
  - name: {n}
    restartPolicy: Always
    command: [sh, -c, "trap 'date +%s%N > {dir}/term-{n}; exit 0' TERM; while true; do sleep 0.1; done"]
    lifecycle:
      preStop:
        exec: {{command: [sh, -c, "date +%s%N > {dir}/prestop-{n}; sleep 1"]}}"#
        )
    };
    let (s1, s2) = (sidecar("s1"), sidecar("s2"));
    let Some(pod) = Running::start("order", |name| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, annotations: {{podkit.io/host-process: 'true'}}}}
spec:
  terminationGracePeriodSeconds: 20
  initContainers:{s1}{s2}
  containers:
  - name: app
    command: [sh, -c, "trap 'date +%s%N > {dir}/term-app; exit 0' TERM; while true; do sleep 0.1; done"]
"#
        )
    }) else {
        return;
    };
    pod.wait_for("the app to run", || {
        container(&pod.status(), "containerStatuses", "app")["state"]["running"].is_object()
    });
    pod.delete_and_check();
    let (pre1, pre2) = (marks.time("prestop-s1"), marks.time("prestop-s2"));
    let (app, t1, t2) = (
        marks.time("term-app"),
        marks.time("term-s1"),
        marks.time("term-s2"),
    );
    assert!(
        pre1 < t2 && pre2 < t2,
        "the preStop hooks ran at once, before any sidecar's stop signal"
    );
    assert!(
        app < t2 && t2 < t1,
        "app, then s2, then s1: {app} {t2} {t1}"
    );
}

/// Issue item 5: once the grace period is spent, a container still gets 2 s between its stop signal
/// and SIGKILL: sidecars that take 1.5 s and 1 s to exit after SIGTERM, stopped one after the other
/// under a 1 s grace period, end Completed (0), not killed.
#[test]
fn every_container_gets_two_seconds_after_its_stop_signal() {
    let Some(pod) = Running::start("window", |name| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, annotations: {{podkit.io/host-process: 'true'}}}}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  initContainers:
  - name: s1
    restartPolicy: Always
    command: [sh, -c, "trap 'sleep 1; exit 0' TERM; while true; do sleep 0.1; done"]
  - name: s2
    restartPolicy: Always
    command: [sh, -c, "trap 'sleep 1.5; exit 0' TERM; while true; do sleep 0.1; done"]
  containers:
  - name: app
    command: [sh, -c, "sleep 0.5"]
"#
        )
    }) else {
        return;
    };
    assert_eq!(pod.wait_exit(), Some(0), "{}", pod.output());
    let status = pod.status();
    for side in ["s1", "s2"] {
        let ended = &container(&status, "initContainerStatuses", side)["state"]["terminated"];
        assert_eq!(ended["exitCode"], 0, "{side}: {status:#}");
        assert_eq!(ended["reason"], "Completed", "{side}: {status:#}");
    }
    assert_eq!(status["phase"], "Succeeded", "{status:#}");
    pod.delete_and_check();
}

/// Issue items 6, 7 and 13: a failed init container under `restartPolicy: Never` fails the pod with
/// no status.reason (kubelet sets none); a completed init container is ready; a container that
/// stopped is not `started`.
#[test]
fn init_containers_report_as_kubelet_reports_them() {
    let Some(pod) = Running::start("initfail", |name| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, annotations: {{podkit.io/host-process: 'true'}}}}
spec:
  restartPolicy: Never
  initContainers:
  - name: fine
    command: ["true"]
  - name: broken
    command: [sh, -c, "exit 3"]
  containers:
  - name: app
    command: ["true"]
"#
        )
    }) else {
        return;
    };
    assert_eq!(pod.wait_exit(), Some(1), "{}", pod.output());
    let status = pod.status();
    assert_eq!(status["phase"], "Failed", "{status:#}");
    assert!(status["reason"].is_null(), "{status:#}");
    let fine = container(&status, "initContainerStatuses", "fine");
    assert_eq!(fine["ready"], true, "{status:#}");
    assert_eq!(fine["started"], false, "{status:#}");
    let broken = container(&status, "initContainerStatuses", "broken");
    assert_eq!(broken["state"]["terminated"]["exitCode"], 3);
    assert_eq!(broken["ready"], false);
    assert!(
        container(&status, "containerStatuses", "app")["state"]["waiting"].is_object(),
        "the app never started: {status:#}"
    );
    let initialized = condition(&status, "Initialized");
    assert_eq!(initialized["status"], "False");
    assert_eq!(
        initialized["message"],
        "containers with incomplete status: [broken]"
    );
    assert_eq!(condition(&status, "Ready")["reason"], "PodFailed");
    // kubectl's columns: the first init container not done, by its reason.
    assert_eq!(get_row(&pod.name)[1..4], ["0/1", "Init:Error", "0"]);
    pod.delete_and_check();
}

/// Issue items 8 and 9: containersReady and Ready carry kubelet's reason and message while a
/// container is not ready, and each condition's lastTransitionTime moves when (and only when) its
/// status changes.
#[test]
fn conditions_carry_reasons_and_the_time_they_changed() {
    let marks = Markers::new("ready");
    let ready_file = marks.path().join("ready");
    let file = ready_file.display().to_string();
    let Some(pod) = Running::start("conds", |name| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, annotations: {{podkit.io/host-process: 'true'}}}}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: app
    command: [sh, -c, "while true; do sleep 0.1; done"]
    readinessProbe:
      exec: {{command: [test, -e, "{file}"]}}
      periodSeconds: 1
"#
        )
    }) else {
        return;
    };
    pod.wait_for("the app to run", || {
        container(&pod.status(), "containerStatuses", "app")["state"]["running"].is_object()
    });
    let before = pod.status();
    for kind in ["ContainersReady", "Ready"] {
        let c = condition(&before, kind);
        assert_eq!(c["status"], "False", "{before:#}");
        assert_eq!(c["reason"], "ContainersNotReady");
        assert_eq!(c["message"], "containers with unready status: [app]");
    }
    let unready_since = condition(&before, "Ready")["lastTransitionTime"].clone();
    let initialized_since = condition(&before, "Initialized")["lastTransitionTime"].clone();
    // RFC 3339 times of one second's resolution: a change must land in a later second.
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(&ready_file, "").expect("ready file");
    pod.wait_for("Ready", || {
        condition(&pod.status(), "Ready")["status"] == "True"
    });
    let after = pod.status();
    let ready = condition(&after, "Ready");
    assert!(
        ready["reason"].is_null() && ready["message"].is_null(),
        "{after:#}"
    );
    let ready_since = ready["lastTransitionTime"].as_str().expect("time");
    assert!(
        ready_since > unready_since.as_str().expect("time"),
        "{ready_since} after {unready_since}"
    );
    assert_eq!(
        condition(&after, "Initialized")["lastTransitionTime"],
        initialized_since,
        "unchanged status, unchanged time"
    );
    pod.delete_and_check();
}

/// Issue item 10: a terminating pod's liveness probe no longer runs (no restart of a container
/// being stopped), and its container turns unready at once.
#[test]
fn probes_stop_and_readiness_turns_false_while_the_pod_terminates() {
    let marks = Markers::new("probes");
    let dir = marks.path().display().to_string();
    let Some(pod) = Running::start("terminating", |name| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, annotations: {{podkit.io/host-process: 'true'}}}}
spec:
  terminationGracePeriodSeconds: 10
  containers:
  - name: app
    command: [sh, -c, "trap 'exit 0' TERM; while true; do sleep 0.1; done"]
    livenessProbe:
      exec: {{command: [test, '!', -e, "{dir}/stopping"]}}
      periodSeconds: 1
      failureThreshold: 1
    lifecycle:
      preStop:
        exec: {{command: [sh, -c, "touch {dir}/stopping; sleep 3"]}}
"#
        )
    }) else {
        return;
    };
    pod.wait_for("ready", || {
        container(&pod.status(), "containerStatuses", "app")["ready"] == true
    });
    pod.begin_delete();
    pod.wait_for("the preStop hook", || {
        marks.path().join("stopping").exists()
    });
    let status = pod.status();
    assert_eq!(
        container(&status, "containerStatuses", "app")["ready"],
        false,
        "unready while terminating: {status:#}"
    );
    // Three liveness periods inside the hook's three seconds.
    std::thread::sleep(Duration::from_millis(2500));
    let events = pod.events();
    assert!(
        !events.iter().any(|e| e.contains("Liveness probe failed")),
        "{events:#?}"
    );
    pod.delete_and_check();
}

/// Issue item 11: a liveness probe's own terminationGracePeriodSeconds is the grace period for the
/// restart it causes, instead of the pod's (a minute here): a container ignoring SIGTERM is killed
/// one second after its stop signal.
#[test]
fn a_probes_grace_period_replaces_the_pods_for_its_restart() {
    let Some(pod) = Running::start("probegrace", |name| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, annotations: {{podkit.io/host-process: 'true'}}}}
spec:
  terminationGracePeriodSeconds: 60
  containers:
  - name: app
    command: [sh, -c, "trap '' TERM; while true; do sleep 0.1; done"]
    livenessProbe:
      exec: {{command: ["false"]}}
      # A second for the shell to set its trap: a SIGTERM before it would end the app at
      # once (seen in CI on a busy machine), not after the probe's grace period.
      initialDelaySeconds: 1
      periodSeconds: 1
      failureThreshold: 1
      terminationGracePeriodSeconds: 1
"#
        )
    }) else {
        return;
    };
    pod.wait_for("the restart", || {
        container(&pod.status(), "containerStatuses", "app")["restartCount"]
            .as_i64()
            .is_some_and(|n| n >= 1)
    });
    let events = pod.events();
    assert!(
        events
            .iter()
            .any(|e| e.contains("did not stop within the grace period: SIGKILL")),
        "{events:#?}"
    );
    // Not the pod's minute for the delete either.
    podkit(&["delete", "pod", &pod.name, "--grace-period", "1"]);
    pod.delete_and_check();
}

/// Issue item 12: the stop signal reaches the container's main process once, and not the processes
/// it started (they end with it, killed when it exits).
#[test]
fn the_stop_signal_reaches_the_main_process_once() {
    let marks = Markers::new("signal");
    let dir = marks.path().display().to_string();
    let Some(pod) = Running::start("signal", |name| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, annotations: {{podkit.io/host-process: 'true'}}}}
spec:
  terminationGracePeriodSeconds: 10
  containers:
  - name: app
    command:
    - sh
    - -c
    - |
      sh -c "trap 'echo child >> {dir}/signals' TERM; while true; do sleep 0.1; done" &
      trap 'echo main >> {dir}/signals; stopping=1' TERM
      echo up
      while [ -z "$$stopping" ]; do sleep 0.1; done
      sleep 0.5
      exit 0
"#
        )
    }) else {
        return;
    };
    pod.wait_for("the app to run", || pod.log("app", 0).contains("up"));
    pod.delete_and_check();
    assert_eq!(marks.read("signals"), "main\n");
}

/// Issue item 13: the phase is always one of the API's five: a pod being deleted keeps its phase
/// and gets a deletionTimestamp (kubectl, and `podkit get`, show it as Terminating); `podkit get`
/// piped into a reader that stops early ends quietly.
#[test]
fn a_terminating_pod_keeps_its_phase_and_a_closed_pipe_ends_get_quietly() {
    let marks = Markers::new("phase");
    let dir = marks.path().display().to_string();
    let Some(pod) = Running::start("deleting", |name| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, annotations: {{podkit.io/host-process: 'true'}}}}
spec:
  terminationGracePeriodSeconds: 10
  containers:
  - name: app
    command: [sh, -c, "trap 'exit 0' TERM; while true; do sleep 0.1; done"]
    lifecycle:
      preStop:
        exec: {{command: [sh, -c, "touch {dir}/stopping; sleep 3"]}}
"#
        )
    }) else {
        return;
    };
    pod.wait_for("the app to run", || {
        container(&pod.status(), "containerStatuses", "app")["state"]["running"].is_object()
    });
    // A reader gone before podkit writes: podkit dies of SIGPIPE, as kubectl does, and says
    // nothing.
    for args in [vec!["get", "pods"], vec!["completion", "bash"]] {
        let (reader, writer) = nix::unistd::pipe().expect("pipe");
        drop(reader);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_podkit"))
            .args(&args)
            .stdout(writer)
            .output()
            .expect("podkit");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(out.status.signal(), Some(13), "{args:?}: {:?}", out.status);
        assert_eq!(String::from_utf8_lossy(&out.stderr), "", "{args:?}");
    }

    pod.begin_delete();
    pod.wait_for("the preStop hook", || {
        marks.path().join("stopping").exists()
    });
    let json: Value =
        serde_json::from_str(&podkit(&["get", "pod", &pod.name, "-o", "json"])).expect("json");
    assert_eq!(json["status"]["phase"], "Running", "{json:#}");
    assert!(
        json["metadata"]["deletionTimestamp"].is_string(),
        "{json:#}"
    );
    let table = podkit(&["get", "pods"]);
    let row = table
        .lines()
        .find(|l| l.starts_with(&pod.name))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains("Terminating"), "{table}");
    pod.delete_and_check();
}

/// `schedulingGates`: a gated pod is kept Pending (SchedulingGated, as kube-scheduler leaves it)
/// and nothing of it runs; a re-apply may remove gates, never add one; once the last is removed
/// the pod starts. A gated pod deleted while it waits leaves nothing.
#[test]
fn a_gated_pod_waits_until_its_scheduling_gates_are_removed() {
    let Some(env) = common::Isolated::new() else {
        return;
    };
    let marks = Markers::new("gates");
    let dir = marks.path().display().to_string();
    let manifest = |gates: &str| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata:
  name: gated
  annotations: {{podkit.io/host-process: 'true', podkit.io/network: none}}
spec:
  schedulingGates: [{gates}]
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    command: [sh, -c, "touch {dir}/ran; trap 'exit 0' TERM; while true; do sleep 0.1; done"]
"#
        )
    };
    let file = env.file(
        "gated.yaml",
        &manifest("{name: example.com/quota}, {name: review}"),
    );
    let out = env.podkit(&["apply", "-f", &file]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("SchedulingGated"),
        "{out:?}"
    );
    let status = |env: &common::Isolated| -> Value {
        let json: Value =
            serde_json::from_str(&env.ok(&["get", "pod", "gated", "-o", "json"])).expect("json");
        json["status"].clone()
    };
    let held = status(&env);
    assert_eq!(held["phase"], "Pending", "{held:#}");
    let scheduled = condition(&held, "PodScheduled");
    assert_eq!(scheduled["status"], "False", "{held:#}");
    assert_eq!(scheduled["reason"], "SchedulingGated", "{held:#}");
    assert!(env.ok(&["get", "pods"]).contains("SchedulingGated"));

    // Gates may only be removed.
    let added = env.file(
        "added.yaml",
        &manifest("{name: example.com/quota}, {name: review}, {name: more}"),
    );
    let out = env.podkit(&["apply", "-f", &added]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("only deletion is allowed, but found new scheduling gate 'more'"),
        "{out:?}"
    );
    let one = env.file("one.yaml", &manifest("{name: review}"));
    assert_eq!(env.ok(&["apply", "-f", &one]), "pod/gated configured\n");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(status(&env)["phase"], "Pending");
    assert!(!marks.path().join("ran").exists(), "a gated pod ran");

    // The last gate removed: it starts, and apply waits for it to run.
    let none = env.file("none.yaml", &manifest(""));
    let out = env.ok(&["apply", "-f", &none]);
    assert!(out.contains("pod/gated configured"), "{out}");
    let running = status(&env);
    assert_eq!(running["phase"], "Running", "{running:#}");
    assert_eq!(condition(&running, "PodScheduled")["status"], "True");
    let mut waited = 0;
    while !marks.path().join("ran").exists() && waited < 100 {
        std::thread::sleep(Duration::from_millis(50));
        waited += 1;
    }
    assert!(marks.path().join("ran").exists(), "the pod did not run");
    let kept: Value =
        serde_json::from_str(&env.ok(&["get", "pod", "gated", "-o", "json"])).expect("json");
    assert!(kept["spec"].get("schedulingGates").is_none(), "{kept:#}");
    env.ok(&["delete", "pod", "gated"]);

    // Deleted while gated: nothing is left, no supervisor waits on.
    let file = env.file("again.yaml", &manifest("{name: review}"));
    env.ok(&["apply", "-f", &file]);
    env.ok(&["delete", "pod", "gated"]);
    // `delete` returns once the pod is gone from `get`; its supervisor may still be removing
    // the renamed directory and its early log.
    let left = || -> Vec<String> {
        std::fs::read_dir(env.state().join("pods"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut waited = 0;
    while !left().is_empty() && waited < 100 {
        std::thread::sleep(Duration::from_millis(50));
        waited += 1;
    }
    assert_eq!(left(), Vec::<String>::new(), "left in the pods directory");
}

/// `podkit attach` as the binary under test.
fn attach_command(args: &[&str]) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_podkit"));
    command.arg("attach").args(args);
    command
}

/// `stdin: true, tty: true`, `stdinOnce` and `podkit attach`, on host processes as a CRI runtime
/// gives them to kubelet: a shell on a pty of its own, reached with `attach -it` (the local
/// terminal's size passed on), detached with Ctrl-P Ctrl-Q and by a client that vanishes while
/// the shell keeps running, its terminal's output in its log as stdout; a `stdinOnce` cat that
/// reads EOF once the first attach's input ends; kubectl's refusals and notes; nothing of the
/// pty left in the supervisor once the shell exited.
#[test]
fn attach_reaches_a_tty_shell_and_stdin_once_ends_with_the_first_attach() {
    let Some(pod) = Running::start("attach", |name| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, annotations: {{podkit.io/host-process: 'true'}}}}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 2
  containers:
  - name: shell
    command: [busybox, sh]
    stdin: true
    tty: true
  - name: once
    command: [busybox, cat]
    stdin: true
    stdinOnce: true
  - name: plain
    command: [busybox, sleep, "1000"]
"#
        )
    }) else {
        return;
    };
    let name = pod.name.clone();
    let running = |container: &str| {
        container_state(&pod.status(), container)
            .get("running")
            .is_some()
    };
    pod.wait_for("every container running", || {
        ["shell", "once", "plain"].iter().all(|c| running(c))
    });
    let json: Value =
        serde_json::from_str(&podkit(&["get", "pod", &name, "-o", "json"])).expect("json");
    let shell = &json["spec"]["containers"][0];
    assert_eq!(
        (&shell["stdin"], &shell["tty"]),
        (&Value::Bool(true), &Value::Bool(true))
    );
    assert_eq!(json["spec"]["containers"][1]["stdinOnce"], true);
    let described = podkit(&["describe", "pod", &name]);
    for line in [
        "    Stdin:         true",
        "    StdinOnce:     true",
        "    TTY:           true",
    ] {
        assert!(
            described.contains(line),
            "{line:?} in describe: {described}"
        );
    }

    // -it on a terminal of 40x100 (its controlling terminal, as a shell's is: setsid(1)): the
    // shell's own pty gets that size, and the new one when the terminal is resized.
    let mut on_terminal = std::process::Command::new("setsid");
    on_terminal
        .args(["--ctty", env!("CARGO_BIN_EXE_podkit"), "attach", "-it"])
        .args([name.as_str(), "-c", "shell"]);
    let mut session = common::Attached::on_terminal(on_terminal, 40, 100);
    session.wait_for("If you don't see a command prompt, try pressing enter.");
    session.write(b"echo hel''lo from the tty; busybox stty size\r");
    session.wait_for("hello from the tty");
    session.wait_for("40 100");
    session.resize(50, 120);
    // SIGWINCH and the keys take separate ways to the shell: asked until the size arrived.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !session.output().contains("50 120") {
        assert!(
            std::time::Instant::now() < deadline,
            "the resize did not reach the shell: {}",
            session.output()
        );
        session.write(b"busybox stty size\r");
        std::thread::sleep(Duration::from_millis(100));
    }
    session.write(&[0x10, 0x11]);
    assert!(session.wait_exit().success(), "{}", session.output());
    assert!(session.output().contains("read escape sequence"));
    assert!(running("shell"), "detaching leaves the shell running");

    // Without -t on a tty container (kubectl forces the tty, not raw mode); a client that
    // vanishes leaves it running too.
    let mut piped = common::Attached::piped(attach_command(&["-i", &name, "-c", "shell"]));
    piped.write(b"echo a''gain\n");
    piped.wait_for("again");
    piped.kill();
    assert!(
        running("shell"),
        "a vanished client leaves the shell running"
    );
    // Its terminal's output is its log, as stdout (written there just after attach got it).
    let log_line = || {
        let log = std::fs::read_to_string(pod.dir().join("logs/shell/0.log")).unwrap_or_default();
        log.split('\n')
            .find(|l| l.ends_with("hello from the tty\r"))
            .map(str::to_owned)
    };
    pod.wait_for("the tty's line in the log", || log_line().is_some());
    let line = log_line().unwrap_or_default();
    assert_eq!(line.split(' ').nth(1), Some("stdout"), "{line}");
    assert!(podkit(&["logs", &name, "-c", "shell"]).contains("again"));

    // stdinOnce: the first attach's input is all it gets; then EOF, and cat ends.
    let mut once = common::Attached::piped(attach_command(&["-i", &name, "-c", "once"]));
    once.write(b"to cat\n");
    once.wait_for("to cat");
    once.close_input();
    assert!(once.wait_exit().success(), "{}", once.errors());
    pod.wait_for("cat completed", || {
        container_state(&pod.status(), "once")["terminated"]["reason"] == "Completed"
    });
    assert_eq!(pod.log("once", 0), "to cat\n");

    // The refusals, as kubectl words them where it has words.
    let fails = |args: &[&str]| {
        let out = attach_command(args).output().expect("run podkit attach");
        assert_eq!(out.status.code(), Some(1), "attach {args:?} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = fails(&[&name, "-c", "once"]);
    assert!(
        err.contains("container \"once\" of pod") && err.contains("is not running"),
        "{err}"
    );
    let err = fails(&["-i", &name, "-c", "plain"]);
    assert!(err.contains("does not take stdin"), "{err}");
    let err = fails(&[&name, "-c", "nope"]);
    assert!(
        err.contains("container \"nope\" is not valid for pod"),
        "{err}"
    );
    let err = fails(&["no-such-pod"]);
    assert!(err.contains("not found"), "{err}");
    let mut plain = common::Attached::piped(attach_command(&["-t", &name, "-c", "plain"]));
    plain.wait_until("kubectl's TTY note", |a| {
        a.errors()
            .contains("Unable to use a TTY - container plain did not allocate one")
    });
    plain.kill();

    // The shell exits: its pty is closed with it.
    let supervisor: u32 = std::fs::read_to_string(pod.dir().join("supervisor.pid"))
        .expect("supervisor.pid")
        .trim()
        .parse()
        .expect("pid");
    assert!(common::pty_masters(supervisor) > 0, "the shell's pty");
    let mut last = common::Attached::piped(attach_command(&["-i", &name, "-c", "shell"]));
    last.write(b"exit\n");
    assert!(last.wait_exit().success(), "{}", last.errors());
    pod.wait_for("the shell ended", || {
        container_state(&pod.status(), "shell")
            .get("terminated")
            .is_some()
    });
    pod.wait_for("no pty left in the supervisor", || {
        common::pty_masters(supervisor) == 0
    });
    pod.delete_and_check();
}

fn container_state(status: &Value, name: &str) -> Value {
    container(status, "containerStatuses", name)["state"].clone()
}

/// `hugepages-2Mi` as kubelet honours it, on host processes: the pod's and the container's
/// hugetlb cgroup limit (0 for the sizes not asked), a `medium: HugePages` emptyDir that is a
/// hugetlbfs of 2 MiB pages the container maps a page of (and no more than its limit), and a
/// pod asking more pages than are set aside and free of other pods kept Pending with
/// kube-scheduler's reason until the first pod is deleted. Nothing is left: no mount, no
/// cgroup, no lease; the host's pages are given back.
#[test]
fn huge_pages_are_limited_mounted_and_scheduled() {
    let Some(env) = common::Isolated::new() else {
        return;
    };
    let Some(pages) = common::HugePages::set_aside(2) else {
        return;
    };
    let marks = Markers::new("hugepages");
    let dir = marks.path().display().to_string();
    let id = format!("{}-{}", std::process::id(), next());
    let (first, second) = (format!("huge-a-{id}"), format!("huge-b-{id}"));
    let map = |file: &str| {
        format!(
            "python3 -c \\\"import mmap, os; f = os.open('{dir}/huge/{file}', os.O_CREAT | \
             os.O_RDWR); os.ftruncate(f, 2097152); m = mmap.mmap(f, 2097152); m[0] = 1; \
             print('mapped {file}')\\\""
        )
    };
    let manifest = |name: &str, bytes: u64, script: &str| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  annotations: {{podkit.io/host-process: 'true', podkit.io/network: none}}
spec:
  terminationGracePeriodSeconds: 1
  volumes: [{{name: huge, emptyDir: {{medium: HugePages}}}}]
  containers:
  - name: app
    resources: {{limits: {{hugepages-2Mi: '{bytes}'}}, requests: {{memory: 16Mi}}}}
    volumeMounts: [{{name: huge, mountPath: {dir}/huge}}]
    command: [sh, -c, "{script}; echo done; trap 'exit 0' TERM; while true; do sleep 0.1; done"]
"#
        )
    };
    let logs = |pod: &str| -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let text = String::from_utf8_lossy(&env.podkit(&["logs", pod, "-c", "app"]).stdout)
                .into_owned();
            if text.contains("done\n") {
                return text;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "pod {pod} did not finish its script: {text}\n{}",
                String::from_utf8_lossy(&env.podkit(&["describe", "pod", pod]).stdout)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };

    // One page: mapped in the hugetlbfs; a second page is over the limit.
    let script = format!(
        "{} && mount | grep {dir}/huge; {}; echo over=$?",
        map("f"),
        map("g")
    );
    let file = env.file("a.yaml", &manifest(&first, 2 << 20, &script));
    env.ok(&["apply", "-f", &file]);
    let out = logs(&first);
    assert!(out.contains("mapped f\n"), "{out}");
    assert!(
        out.contains(&format!("on {dir}/huge type hugetlbfs")) && out.contains("pagesize=2M"),
        "{out}"
    );
    assert!(!out.contains("mapped g"), "over the limit: {out}");
    assert!(!out.contains("over=0"), "{out}");
    let cgroup = common::pod_cgroup(&first).expect("cgroup v2");
    let read = |file: &Path| {
        std::fs::read_to_string(file)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
            .trim()
            .to_owned()
    };
    for dir in [cgroup.clone(), cgroup.join("app")] {
        assert_eq!(read(&dir.join("hugetlb.2MB.max")), "2097152");
        assert_eq!(read(&dir.join("hugetlb.2MB.rsvd.max")), "2097152");
        if dir.join("hugetlb.1GB.max").exists() {
            assert_eq!(read(&dir.join("hugetlb.1GB.max")), "0", "not asked: none");
        }
    }
    assert_eq!(read(&cgroup.join("app/hugetlb.2MB.current")), "2097152");
    let described = env.ok(&["describe", "pod", &first]);
    assert!(described.contains("hugepages-2Mi: 2097152"), "{described}");
    assert!(described.contains("Medium:"), "{described}");

    // Every page set aside: one is the first pod's, so the second waits as kube-scheduler
    // leaves it, and `apply` says so.
    let all = pages.total * (2 << 20);
    let file = env.file("b.yaml", &manifest(&second, all, "true"));
    let out = env.podkit(&["apply", "-f", &file]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{out:?}");
    let reason = "0/1 nodes are available: 1 Insufficient hugepages-2Mi.";
    assert!(stderr.contains(reason), "{stderr}");
    let status: Value =
        serde_json::from_str(&env.ok(&["get", "pod", &second, "-o", "json"])).expect("json");
    let scheduled = condition(&status["status"], "PodScheduled");
    assert_eq!(status["status"]["phase"], "Pending", "{status:#}");
    assert_eq!(scheduled["reason"], "Unschedulable", "{status:#}");
    assert!(
        scheduled["message"]
            .as_str()
            .is_some_and(|m| m.starts_with(reason)),
        "{status:#}"
    );
    let described = env.ok(&["describe", "pod", &second]);
    assert!(described.contains("FailedScheduling"), "{described}");

    // The first pod deleted, its pages go back: the second starts.
    env.ok(&["delete", "pod", &first]);
    assert!(!cgroup.exists(), "cgroup left: {}", cgroup.display());
    assert_eq!(logs(&second), "done\n");
    let cgroup = common::pod_cgroup(&second).expect("cgroup v2");
    assert_eq!(read(&cgroup.join("hugetlb.2MB.max")), all.to_string());
    // Its supervisor killed, `gc` gives its pages back with the rest (no other test's gc
    // between).
    let gc = common::gc_lock();
    env.kill_pod_supervisor(&second);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !env.ok(&["get", "pod", &second]).contains("Unknown") {
        assert!(std::time::Instant::now() < deadline, "not Unknown");
        std::thread::sleep(Duration::from_millis(50));
    }
    let swept = env.ok(&["gc"]);
    drop(gc);
    assert!(
        swept.contains(&format!("released {all} bytes of hugepages-2Mi")),
        "{swept}"
    );
    assert!(!cgroup.exists(), "cgroup left: {}", cgroup.display());
    let state = env.state().display().to_string();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        !mounts.contains(&state) && !mounts.contains(&format!("{dir}/huge")),
        "{mounts}"
    );
    let leases: Vec<String> = std::fs::read_dir("/run/podkit/devices")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| std::fs::read_to_string(e.path()).is_ok_and(|o| o.starts_with(&state)))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(leases.is_empty(), "{leases:?}");
}
