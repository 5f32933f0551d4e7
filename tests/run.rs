//! `podkit run` end to end: real pods of host processes, checked through what a user sees
//! (status.json, the CRI logs, the process table, the mount table). Needs root; every test
//! deletes its pod, also when it fails (the `Running` guard).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::{Running, next, pod_cgroup, podkit, podkit_fails};

#[test]
fn two_members_talk_over_the_pods_localhost() {
    let Some(pod) = Running::start("talk", |name| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, annotations: {{podkit.io/host-process: 'true'}}}}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: server
    command: [socat, "TCP-LISTEN:8080,bind=127.0.0.1,reuseaddr,fork", "SYSTEM:echo hello from $$(uname -n)"]
  - name: client
    command: [sh, -c, "socat -u TCP:127.0.0.1:8080,retry=100,interval=0.05 -"]
"#
        )
    }) else {
        return;
    };
    pod.wait_for("the client's reply", || {
        pod.log("client", 0)
            .contains(&format!("hello from {}", pod.name))
    });
    // The host's own 127.0.0.1:8080 is a different one.
    let host = std::net::TcpStream::connect_timeout(
        &"127.0.0.1:8080".parse().expect("addr"),
        Duration::from_millis(200),
    );
    if let Ok(mut conn) = host {
        let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
        let mut reply = String::new();
        let _ = std::io::Read::read_to_string(&mut conn, &mut reply);
        assert!(
            !reply.contains("hello from"),
            "the pod's port leaked to the host: {reply}"
        );
    }
    pod.delete_and_check();
}

#[test]
fn init_container_prepares_a_volume_that_the_main_container_reads() {
    let Some(pod) = Running::start("init", |name| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, annotations: {{podkit.io/host-process: 'true'}}}}
spec:
  restartPolicy: Never
  volumes: [{{name: content, emptyDir: {{}}}}]
  initContainers:
  - name: fetch
    command: [sh, -c, "echo 'page of $(POD)' > /content/index.html"]
    env: [{{name: POD, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}]
    volumeMounts: [{{name: content, mountPath: /content}}]
  containers:
  - name: web
    command: [cat, /srv/podkit-test-{name}/index.html]
    volumeMounts: [{{name: content, mountPath: /srv/podkit-test-{name}, readOnly: true}}]
"#
        )
    }) else {
        return;
    };
    let code = pod.wait_exit();
    assert_eq!(code, Some(0), "the pod succeeded");
    assert_eq!(
        pod.log("web", 0).trim_end(),
        format!("page of {}", pod.name).as_str()
    );
    assert!(
        !Path::new(&format!("/srv/podkit-test-{}", pod.name)).exists(),
        "the mount point podkit made is gone"
    );
    let status = pod.status();
    assert_eq!(status["phase"], "Succeeded", "{status}");
    pod.delete_and_check();
}

#[test]
fn a_native_sidecar_starts_first_and_stops_after_the_main_container() {
    let Some(pod) = Running::start("sidecar", |name| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, annotations: {{podkit.io/host-process: 'true'}}}}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 5
  volumes: [{{name: shared, emptyDir: {{}}}}]
  initContainers:
  - name: helper
    restartPolicy: Always
    command: [sh, -c, "touch /shared/up; trap 'echo helper stopping; exit 0' TERM; while true; do sleep 0.1; done"]
    volumeMounts: [{{name: shared, mountPath: /shared}}]
  containers:
  - name: app
    command: [sh, -c, "for i in $$(seq 100); do test -e /shared/up && echo sidecar was up && exit 0; sleep 0.05; done; exit 1"]
    volumeMounts: [{{name: shared, mountPath: /shared}}]
"#
        )
    }) else {
        return;
    };
    assert_eq!(pod.wait_exit(), Some(0));
    assert!(
        pod.log("app", 0).contains("sidecar was up"),
        "{}",
        pod.log("app", 0)
    );
    assert!(
        pod.log("helper", 0).contains("helper stopping"),
        "the sidecar got SIGTERM after the app"
    );
    let events = pod.events();
    let position = |needle: &str| {
        events
            .iter()
            .position(|e| e.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in {events:#?}"))
    };
    assert!(
        position("Container app exited") < position("Stopping container helper"),
        "{events:#?}"
    );
    pod.delete_and_check();
}

#[test]
fn a_crashing_container_is_restarted_with_backoff() {
    let Some(pod) = Running::start("crash", |name| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, annotations: {{podkit.io/host-process: 'true'}}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: crasher
    command: [sh, -c, "echo run; exit 3"]
"#
        )
    }) else {
        return;
    };
    // kubelet's schedule: the first restart at once, then a 10 s back-off.
    pod.wait_for("CrashLoopBackOff", || {
        let c = &pod.status()["containerStatuses"][0];
        c["state"]["waiting"]["reason"] == "CrashLoopBackOff" && c["restartCount"] == 1
    });
    let c = &pod.status()["containerStatuses"][0];
    assert_eq!(c["lastState"]["terminated"]["exitCode"], 3, "{c}");
    assert!(
        c["state"]["waiting"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("back-off 10s")),
        "{c}"
    );
    assert_eq!(
        pod.log("crasher", 1).lines().count(),
        1,
        "one log file per run"
    );
    pod.delete_and_check();
}

#[test]
fn a_process_ignoring_sigterm_is_killed_when_the_grace_period_ends() {
    let Some(pod) = Running::start("stubborn", |name| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, annotations: {{podkit.io/host-process: 'true'}}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: stubborn
    command: [sh, -c, "trap 'echo ignoring TERM' TERM; echo ready; while true; do sleep 0.1; done"]
"#
        )
    }) else {
        return;
    };
    pod.wait_for("the container to run", || {
        pod.log("stubborn", 0).contains("ready")
    });
    pod.delete_and_check();
    let output = pod.output();
    assert!(
        output.contains("did not stop within the grace period: SIGKILL"),
        "{output}"
    );
}

#[test]
fn orphans_are_reaped_and_do_not_outlive_the_pod() {
    let marker = format!("{}.{}", 900 + std::process::id() % 99, next());
    let Some(pod) = Running::start("orphan", |name| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, annotations: {{podkit.io/host-process: 'true'}}}}
spec:
  restartPolicy: Never
  containers:
  - name: parent
    command: [sh, -c, "setsid sleep {marker} & sleep 0.5 & echo started; exit 0"]
"#
        )
    }) else {
        return;
    };
    assert_eq!(pod.wait_exit(), Some(0));
    assert!(
        processes_with(&marker).is_empty(),
        "the orphaned grandchild was killed"
    );
    pod.delete_and_check();
}

#[test]
fn a_process_that_left_its_group_ends_with_its_container_in_a_cgroup() {
    let mounted = std::fs::read_to_string("/proc/self/mountinfo")
        .is_ok_and(|m| m.lines().any(|l| l.contains(" - cgroup2 ")));
    if !mounted {
        eprintln!("skipped: no cgroup v2 mounted");
        return;
    }
    let marker = format!("{}.{}", 800 + std::process::id() % 99, next());
    let Some(pod) = Running::start("cgroup", |name| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, annotations: {{podkit.io/host-process: 'true'}}}}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: leaver
    command: [sh, -c, "setsid sleep {marker} & echo started"]
  - name: stay
    command: [sleep, "1000"]
    # Ready only when its exec probe runs in the container's cgroup, as kubelet's do.
    readinessProbe:
      exec: {{command: [grep, -q, "^0::.*/podkit-default_{name}/stay$", /proc/self/cgroup]}}
      periodSeconds: 1
"#
        )
    }) else {
        return;
    };
    let state = |container: &str| {
        let status = pod.status();
        let all = status["containerStatuses"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        all.into_iter()
            .find(|c| c["name"] == container)
            .map(|c| c["state"].clone())
            .unwrap_or(Value::Null)
    };
    pod.wait_for("leaver to exit", || {
        state("leaver")["terminated"].is_object()
    });
    // Its setsid'd child is out of its process group, but not out of its cgroup.
    pod.wait_for(
        "the escaped process to be killed with its container",
        || processes_with(&marker).is_empty(),
    );
    assert!(state("stay")["running"].is_object(), "the pod goes on");
    let stay = std::fs::read_to_string(pod.dir().join("members/stay.pid")).expect("stay's pid");
    let cgroup = std::fs::read_to_string(format!("/proc/{}/cgroup", stay.trim())).expect("cgroup");
    let own = cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("a cgroup v2 line")
        .to_owned();
    assert!(
        own.ends_with(&format!("/podkit-default_{}/stay", pod.name)),
        "each container in its own cgroup: {own}"
    );
    pod.wait_for("the exec probe to pass", || {
        let status = pod.status();
        status["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["name"] == "stay" && c["ready"] == true)
    });
    let out = Command::new(env!("CARGO_BIN_EXE_podkit"))
        .args([
            "exec",
            &pod.name,
            "-c",
            "stay",
            "--",
            "cat",
            "/proc/self/cgroup",
        ])
        .output()
        .expect("exec");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("0::")
                && l.ends_with(&format!("/podkit-default_{}/stay", pod.name))),
        "podkit exec runs in the container's cgroup: {text}"
    );
    let recorded = std::fs::read_to_string(pod.dir().join("cgroup")).expect("recorded cgroup");
    assert_eq!(
        Some(PathBuf::from(recorded.trim())),
        pod_cgroup(&pod.name),
        "delete_and_check looks for the cgroup where it is"
    );
    pod.delete_and_check();
    assert!(
        !Path::new(recorded.trim()).exists(),
        "the pod's cgroup is removed with it"
    );
}

#[test]
fn a_command_that_cannot_start_is_reported_with_its_cause() {
    let Some(pod) = Running::start("nostart", |name| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, annotations: {{podkit.io/host-process: 'true'}}}}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: missing
    command: [/nonexistent/podkit-test-program]
  - name: baddir
    command: ["true"]
    workingDir: /nonexistent/podkit-test-dir
  - name: fine
    command: [sleep, "1000"]
"#
        )
    }) else {
        return;
    };
    let terminated = |container: &str| {
        pod.status()["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["name"] == container)
            .map(|c| c["state"]["terminated"].clone())
            .unwrap_or(Value::Null)
    };
    pod.wait_for("both failed starts", || {
        terminated("missing").is_object() && terminated("baddir").is_object()
    });
    for container in ["missing", "baddir"] {
        let state = terminated(container);
        assert_eq!(state["reason"], "StartError", "{container}: {state}");
        assert_eq!(state["exitCode"], 128, "{container}: {state}");
    }
    let events = pod.events().join("\n");
    assert!(
        events.contains("failed to start \"/nonexistent/podkit-test-program\"")
            && events.contains("No such file or directory"),
        "{events}"
    );
    // The children that failed before exec were reaped: no zombie stays with the supervisor.
    let supervisor = std::fs::read_to_string(pod.dir().join("supervisor.pid")).expect("pid");
    let zombies = || {
        let children =
            std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", supervisor.trim()))
                .unwrap_or_default();
        children
            .split_whitespace()
            .filter(|child| {
                std::fs::read_to_string(format!("/proc/{child}/stat"))
                    .is_ok_and(|stat| stat.contains(") Z "))
            })
            .count()
    };
    pod.wait_for("the failed children to be reaped", || zombies() == 0);
    pod.delete_and_check();
}

#[test]
fn an_https_readiness_probe_skips_certificate_checks_as_kubelet_does() {
    let Some(pod) = Running::start("https", |name| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, annotations: {{podkit.io/host-process: 'true'}}}}
spec:
  terminationGracePeriodSeconds: 1
  volumes: [{{name: tls, emptyDir: {{}}}}]
  containers:
  - name: tls
    # A self-signed certificate that no one trusts: kubelet's probes do not check it.
    command:
    - sh
    - -c
    - >-
      cd /tls && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1
      -subj /CN=nobody -keyout k.pem -out c.pem 2>/dev/null &&
      exec openssl s_server -quiet -accept 8443 -cert c.pem -key k.pem -www
    readinessProbe: {{httpGet: {{scheme: HTTPS, port: 8443, path: /}}, periodSeconds: 1}}
    volumeMounts: [{{name: tls, mountPath: /tls}}]
"#
        )
    }) else {
        return;
    };
    pod.wait_for("ready through an HTTPS probe", || {
        pod.status()["containerStatuses"][0]["ready"] == true
    });
    pod.delete_and_check();
}

#[test]
fn shared_process_namespace_has_podkit_pause_as_pid_1() {
    let Some(pod) = Running::start("pidns", |name| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, annotations: {{podkit.io/host-process: 'true'}}}}
spec:
  shareProcessNamespace: true
  restartPolicy: Never
  containers:
  - name: look
    command: [sh, -c, "tr '\\0' ' ' < /proc/1/cmdline; echo; ls /proc | grep -c '^[0-9]'"]
"#
        )
    }) else {
        return;
    };
    assert_eq!(pod.wait_exit(), Some(0));
    let log = pod.log("look", 0);
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines[0].ends_with("pause "), "PID 1: {log}");
    let count: u32 = lines[1].parse().expect("count");
    assert!(count <= 5, "only the pod's processes are visible: {log}");
    pod.delete_and_check();
}

#[test]
fn memory_emptydir_is_a_tmpfs_and_read_only_mounts_refuse_writes() {
    let Some(pod) = Running::start("tmpfs", |name| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, annotations: {{podkit.io/host-process: 'true'}}}}
spec:
  restartPolicy: Never
  volumes:
  - {{name: scratch, emptyDir: {{medium: Memory, sizeLimit: 8Mi}}}}
  - {{name: unsized, emptyDir: {{medium: Memory}}}}
  containers:
  - name: check
    command: [sh, -c, "stat -f -c %T /scratch; df -k /scratch | tail -1; touch /ro/x 2>&1 || echo read-only; df -k /unsized | tail -1"]
    volumeMounts:
    - {{name: scratch, mountPath: /scratch}}
    - {{name: scratch, mountPath: /ro, readOnly: true}}
    - {{name: unsized, mountPath: /unsized}}
"#
        )
    }) else {
        return;
    };
    assert_eq!(pod.wait_exit(), Some(0));
    let log = pod.log("check", 0);
    assert!(log.starts_with("tmpfs"), "{log}");
    assert!(log.contains(" 8192 "), "sizeLimit 8Mi: {log}");
    assert!(log.contains("read-only"), "{log}");
    // Without a sizeLimit: half the host's memory, as the kernel gives a tmpfs, set explicitly.
    let total_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .expect("meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("MemTotal");
    let unsized_kib: u64 = log
        .lines()
        .last()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("df of /unsized");
    assert!(
        unsized_kib > 0 && unsized_kib <= total_kib / 2 + 4,
        "a Memory emptyDir without sizeLimit is bounded: {unsized_kib} KiB of {total_kib}"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        !mounts.contains(&pod.name),
        "no mount of the pod remains on the host"
    );
    pod.delete_and_check();
}

#[test]
fn a_failing_pod_with_restart_never_fails_the_run() {
    let Some(pod) = Running::start("fail", |name| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, annotations: {{podkit.io/host-process: 'true'}}}}\nspec:\n  restartPolicy: Never\n  securityContext: {{sysctls: [{{name: net.ipv4.tcp_fin_timeout, value: '17'}}]}}\n  containers:\n  - {{name: bad, command: [sh, -c, 'echo first; echo why it failed; cat /proc/sys/net/ipv4/tcp_fin_timeout; exit 7'], terminationMessagePolicy: FallbackToLogsOnError}}\n"
        )
    }) else {
        return;
    };
    assert_eq!(
        pod.wait_exit(),
        Some(1),
        "podkit run exits 1 for a Failed pod"
    );
    let status = pod.status();
    assert_eq!(status["phase"], "Failed");
    let terminated = &status["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(terminated["exitCode"], 7);
    // A host process's termination message comes from its log (FallbackToLogsOnError); the
    // pod's sysctl is set in its network namespace, which host processes share too.
    assert_eq!(terminated["message"], "first\nwhy it failed\n17\n");
    pod.delete_and_check();
}

#[test]
fn a_bad_manifest_is_refused_before_anything_starts() {
    let dir = std::env::temp_dir().join("podkit-run-test");
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join(format!("bad-{}.yaml", std::process::id()));
    std::fs::write(&file, "apiVersion: v1\nkind: Pod\nmetadata: {name: bad, annotations: {podkit.io/host-process: 'true'}}\nspec:\n  containers:\n  - {name: x, image: nginx}\n").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_podkit"))
        .args(["run", "-f"])
        .arg(&file)
        .output()
        .expect("run");
    let _ = std::fs::remove_file(&file);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("spec.containers[0].command: required"),
        "{err}"
    );
    assert!(!Path::new("/run/podkit/pods/default_bad").exists());
}

#[test]
fn a_failing_liveness_probe_restarts_the_container() {
    let Some(pod) = Running::start("live", |name| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, annotations: {{podkit.io/host-process: 'true'}}}}
spec:
  terminationGracePeriodSeconds: 1
  volumes: [{{name: state, emptyDir: {{}}}}]
  containers:
  - name: app
    command: [sh, -c, "if test -e /state/ran; then echo second run; else touch /state/ran; echo first run; fi; exec sleep 1000"]
    volumeMounts: [{{name: state, mountPath: /state}}]
    livenessProbe:
      # Healthy until the test makes it sick (the first probe may run before the shell does).
      exec: {{command: [sh, -c, "! test -e /state/sick"]}}
      periodSeconds: 1
      failureThreshold: 1
"#
        )
    }) else {
        return;
    };
    pod.wait_for("the first run", || pod.log("app", 0).contains("first run"));
    std::fs::write(pod.dir().join("volumes/state/sick"), "").expect("make it sick");
    pod.wait_for("a restart", || {
        pod.status()["containerStatuses"][0]["restartCount"] == 1
    });
    std::fs::remove_file(pod.dir().join("volumes/state/sick")).expect("heal it");
    pod.wait_for("the second run", || {
        pod.log("app", 1).contains("second run")
    });
    assert!(
        pod.events()
            .iter()
            .any(|e| e.contains("failed liveness probe, will be restarted")),
        "{:#?}",
        pod.events()
    );
    pod.delete_and_check();
}

#[test]
fn readiness_probe_gates_the_ready_condition() {
    let Some(pod) = Running::start("ready", |name| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, annotations: {{podkit.io/host-process: 'true'}}}}
spec:
  terminationGracePeriodSeconds: 1
  volumes: [{{name: state, emptyDir: {{}}}}]
  containers:
  - name: web
    command: [sh, -c, "while ! test -e /state/go; do sleep 0.1; done; printf 'HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nok' > /state/response; exec socat TCP-LISTEN:8080,bind=127.0.0.1,reuseaddr,fork SYSTEM:'cat /state/response'"]
    volumeMounts: [{{name: state, mountPath: /state}}]
    readinessProbe:
      httpGet: {{path: /healthz, port: http}}
      periodSeconds: 1
    ports: [{{name: http, containerPort: 8080}}]
"#
        )
    }) else {
        return;
    };
    let ready = |pod: &Running| {
        let status = pod.status();
        let conditions = status["conditions"].as_array().cloned().unwrap_or_default();
        conditions
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    };
    pod.wait_for("a failed readiness probe", || {
        pod.events()
            .iter()
            .any(|e| e.contains("Readiness probe failed"))
    });
    assert!(!ready(&pod), "not ready while the server is down");
    assert_eq!(pod.status()["phase"], "Running");
    std::fs::write(pod.dir().join("volumes/state/go"), "").expect("start the server");
    pod.wait_for("Ready", || ready(&pod));
    pod.delete_and_check();
}

#[test]
fn pre_stop_runs_before_the_stop_signal() {
    let out =
        std::env::temp_dir().join(format!("podkit-prestop-{}-{}", std::process::id(), next()));
    std::fs::create_dir_all(&out).expect("out dir");
    let Some(pod) = Running::start("prestop", |name| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, annotations: {{podkit.io/host-process: 'true'}}}}
spec:
  terminationGracePeriodSeconds: 10
  volumes: [{{name: out, hostPath: {{path: {out}, type: Directory}}}}]
  containers:
  - name: app
    command: [sh, -c, "trap 'if test -e /out/prestop; then echo TERM after preStop; else echo TERM first; fi > /out/order; exit 0' TERM; echo up; while true; do sleep 0.1; done"]
    volumeMounts: [{{name: out, mountPath: /out}}]
    lifecycle:
      preStop: {{exec: {{command: [sh, -c, "touch /out/prestop"]}}}}
"#,
            out = out.display()
        )
    }) else {
        return;
    };
    pod.wait_for("the container", || pod.log("app", 0).contains("up"));
    pod.delete_and_check();
    let order = std::fs::read_to_string(out.join("order")).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&out);
    assert_eq!(order.trim(), "TERM after preStop");
}

#[test]
fn a_failing_post_start_hook_restarts_the_container() {
    let Some(pod) = Running::start("poststart", |name| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, annotations: {{podkit.io/host-process: 'true'}}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    command: [sleep, "1000"]
    lifecycle:
      postStart: {{exec: {{command: [sh, -c, "echo no config; exit 2"]}}}}
"#
        )
    }) else {
        return;
    };
    pod.wait_for("the hook's failure", || {
        pod.events()
            .iter()
            .any(|e| e.contains("PostStartHook failed: exit code 2: no config"))
    });
    pod.wait_for("a restart", || {
        pod.status()["containerStatuses"][0]["restartCount"] == 1
    });
    pod.delete_and_check();
}

#[test]
fn a_tcp_socket_probe_marks_ready_once_the_port_listens() {
    let Some(pod) = Running::start("tcp", |name| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, annotations: {{podkit.io/host-process: 'true'}}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: late
    command: [sh, -c, "sleep 1; exec socat TCP-LISTEN:9090,bind=127.0.0.1,reuseaddr,fork EXEC:cat"]
    readinessProbe: {{tcpSocket: {{port: 9090}}, periodSeconds: 1}}
"#
        )
    }) else {
        return;
    };
    pod.wait_for("ready", || {
        pod.status()["containerStatuses"][0]["ready"] == true
    });
    assert!(
        pod.events()
            .iter()
            .any(|e| e.contains("Readiness probe failed") && e.contains("Connection refused")),
        "the first probe found nothing listening: {:#?}",
        pod.events()
    );
    pod.delete_and_check();
}

/// A gRPC probe calls the Health Checking Protocol's `Check` in the pod, as kubelet's does: not
/// ready while nothing listens, ready once the service answers SERVING, unready with kubelet's
/// message when it answers NOT_SERVING. The health server is this test's, on a socket it makes
/// in the pod's network namespace.
#[test]
fn a_grpc_probe_calls_the_health_service() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU8, Ordering};

    let Some(pod) = Running::start("grpc", |name| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, annotations: {{podkit.io/host-process: 'true'}}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    command: [sleep, "1000"]
    readinessProbe: {{grpc: {{port: 50051, service: db}}, periodSeconds: 1}}
"#
        )
    }) else {
        return;
    };
    let ready = || pod.status()["containerStatuses"][0]["ready"] == true;
    pod.wait_for("a probe that found nothing listening", || {
        pod.events().iter().any(|e| {
            e.contains("Readiness probe failed: failed to connect service \"localhost:50051\"")
        })
    });
    assert!(!ready());

    let ns = netns::Namespace::open(netns::NsKind::Net, pod.dir().join("ns/net")).expect("netns");
    let listener = ns
        .listen_tcp("127.0.0.1:50051".parse().expect("addr"))
        .expect("listen in the pod");
    let serving = Arc::new(AtomicU8::new(1));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let status = serving.clone();
    runtime.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let status = status.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |request: hyper::Request<hyper::body::Incoming>| {
                        let status = status.load(Ordering::SeqCst);
                        async move {
                            use http_body_util::BodyExt;
                            let path = request.uri().path().to_owned();
                            // The request names the service: field 1, "db".
                            let body = request.into_body().collect().await?.to_bytes();
                            let mut trailers = hyper::HeaderMap::new();
                            let message: Vec<u8> = if path == "/grpc.health.v1.Health/Check"
                                && body[..] == [0, 0, 0, 0, 4, 0x0a, 2, b'd', b'b']
                            {
                                trailers.insert("grpc-status", "0".parse().expect("value"));
                                vec![0, 0, 0, 0, 2, 0x08, status]
                            } else {
                                trailers.insert("grpc-status", "5".parse().expect("value"));
                                Vec::new()
                            };
                            let body = http_body_util::Full::new(hyper::body::Bytes::from(message))
                                .with_trailers(async move { Some(Ok(trailers)) });
                            Ok::<_, hyper::Error>(
                                hyper::Response::builder()
                                    .header("content-type", "application/grpc")
                                    .body(body)
                                    .expect("response"),
                            )
                        }
                    },
                );
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
            });
        }
    });
    pod.wait_for("ready once the service is SERVING", ready);
    serving.store(2, Ordering::SeqCst);
    pod.wait_for("unready once it is NOT_SERVING", || !ready());
    assert!(
        pod.events().iter().any(|e| e.contains(
            "Readiness probe failed: service unhealthy (responded with \"NOT_SERVING\")"
        )),
        "{:#?}",
        pod.events()
    );
    pod.delete_and_check();
    runtime.shutdown_background();
}

/// A host process's `capabilities` (over the host root's full set) and
/// `allowPrivilegeEscalation: false`: its bounding and effective sets and no_new_privs, as
/// /proc shows them; `podkit exec` into it gets the same; a capability the supervisor lacks
/// cannot be added.
#[test]
fn host_process_capabilities_and_no_new_privileges() {
    // The host root's full set: this test's (a sandbox may lack some capabilities).
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let own = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .expect("CapBnd");
    let all = u64::from_str_radix(own.trim(), 16).expect("hex");
    // A capability this test's root lacks, if any (this sandbox lacks CAP_SYS_RESOURCE): adding
    // it must fail the start, naming it; else one it has, which starts.
    let lacking = [
        (24, "SYS_RESOURCE"),
        (21, "SYS_ADMIN"),
        (12, "NET_ADMIN"),
        (16, "SYS_MODULE"),
    ]
    .into_iter()
    .find(|(n, _)| all & (1 << n) == 0)
    .map(|(_, name)| name);
    let more = lacking.unwrap_or("NET_ADMIN");
    let Some(pod) = Running::start("caps", |name| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, annotations: {{podkit.io/host-process: 'true'}}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: some
    command: [sh, -c, "grep -E '^(CapBnd|CapEff|NoNewPrivs)' /proc/self/status; exec sleep 1000"]
    securityContext:
      allowPrivilegeEscalation: false
      capabilities: {{drop: [NET_RAW, chown]}}
  - name: one
    command: [sh, -c, "grep -E '^(CapBnd|CapEff|NoNewPrivs)' /proc/self/status; exec sleep 1000"]
    securityContext:
      capabilities: {{drop: [ALL], add: [CAP_NET_BIND_SERVICE]}}
  - name: more
    command: [sh, -c, "echo started; exec sleep 1000"]
    securityContext:
      capabilities: {{add: [{more}]}}
"#
        )
    }) else {
        return;
    };
    match lacking {
        Some(name) => pod.wait_for("the start refused", || {
            pod.events().iter().any(|e| {
                e.contains(&format!(
                    "spec.containers[2].securityContext.capabilities: {name} cannot be added: \
                     podkit's supervisor does not have it"
                ))
            })
        }),
        None => pod.wait_for("more started", || pod.log("more", 0) == "started\n"),
    }
    pod.wait_for("both logged", || {
        pod.log("some", 0).lines().count() == 3 && pod.log("one", 0).lines().count() == 3
    });
    let some = all & !(1 << 13) & !1; // CAP_NET_RAW, CAP_CHOWN
    assert_eq!(
        pod.log("some", 0),
        format!("CapEff:\t{some:016x}\nCapBnd:\t{some:016x}\nNoNewPrivs:\t1\n")
    );
    assert_eq!(
        pod.log("one", 0),
        format!(
            "CapEff:\t{:016x}\nCapBnd:\t{:016x}\nNoNewPrivs:\t0\n",
            1 << 10,
            1 << 10
        )
    );
    let exec = podkit(&[
        "exec",
        &pod.name,
        "-c",
        "some",
        "--",
        "grep",
        "-E",
        "^(CapBnd|NoNewPrivs)",
        "/proc/self/status",
    ]);
    assert_eq!(exec, format!("CapBnd:\t{some:016x}\nNoNewPrivs:\t1\n"));
    pod.delete_and_check();
}

#[test]
fn a_startup_probe_gates_the_next_init_container() {
    let Some(pod) = Running::start("startup", |name| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, annotations: {{podkit.io/host-process: 'true'}}}}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  volumes: [{{name: state, emptyDir: {{}}}}]
  initContainers:
  - name: slow-sidecar
    restartPolicy: Always
    command: [sh, -c, "sleep 0.5; touch /state/up; exec sleep 1000"]
    volumeMounts: [{{name: state, mountPath: /state}}]
    startupProbe: {{exec: {{command: [test, -e, /state/up]}}, periodSeconds: 1, failureThreshold: 10}}
  containers:
  - name: app
    command: [test, -e, /state/up]
    volumeMounts: [{{name: state, mountPath: /state}}]
"#
        )
    }) else {
        return;
    };
    assert_eq!(
        pod.wait_exit(),
        Some(0),
        "the app found the sidecar started: {}",
        pod.output()
    );
    pod.delete_and_check();
}

#[test]
fn active_deadline_fails_the_pod() {
    let Some(pod) = Running::start("deadline", |name| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, annotations: {{podkit.io/host-process: 'true'}}}}\nspec:\n  activeDeadlineSeconds: 1\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {{name: long, command: [sleep, '1000']}}\n"
        )
    }) else {
        return;
    };
    assert_eq!(pod.wait_exit(), Some(1));
    assert_eq!(pod.status()["reason"], "DeadlineExceeded");
    pod.delete_and_check();
}

#[test]
fn run_as_user_and_working_dir_apply() {
    let Some(pod) = Running::start("user", |name| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, annotations: {{podkit.io/host-process: 'true'}}}}\nspec:\n  restartPolicy: Never\n  securityContext: {{runAsUser: 65534, runAsGroup: 65534}}\n  containers:\n  - {{name: who, workingDir: /tmp, command: [sh, -c, 'id -u; id -g; pwd']}}\n"
        )
    }) else {
        return;
    };
    assert_eq!(pod.wait_exit(), Some(0));
    assert_eq!(pod.log("who", 0), "65534\n65534\n/tmp\n");
    pod.delete_and_check();
}

#[test]
fn a_missing_host_path_fails_the_start_and_leaves_nothing() {
    let Some(pod) = Running::start("hostpath", |name| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, annotations: {{podkit.io/host-process: 'true'}}}}\nspec:\n  volumes: [{{name: data, hostPath: {{path: /nonexistent/podkit, type: Directory}}}}]\n  containers:\n  - {{name: x, command: [sleep, '1']}}\n"
        )
    }) else {
        return;
    };
    assert_eq!(pod.wait_exit(), Some(1));
    let output = pod.output();
    assert!(
        output
            .contains("volume \"data\": \"/nonexistent/podkit\" does not exist (type: Directory)"),
        "{output}"
    );
    assert!(
        !pod.dir().exists(),
        "a pod that never started leaves no state"
    );
    pod.delete_and_check();
}

#[test]
fn several_pods_in_one_file_each_get_a_supervisor() {
    let second = format!("pkr-second-{}-{}", std::process::id(), next());
    let other = second.clone();
    let Some(pod) = Running::start("first", move |name| {
        let pod = |n: &str| {
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {n}, annotations: {{podkit.io/host-process: 'true'}}}}\nspec:\n  restartPolicy: Never\n  containers:\n  - {{name: say, command: [uname, -n]}}\n"
            )
        };
        format!("{}---\n{}", pod(name), pod(&other))
    }) else {
        return;
    };
    assert_eq!(pod.wait_exit(), Some(0), "{}", pod.output());
    assert_eq!(pod.log("say", 0), format!("{}\n", pod.name));
    let other_log = Path::new("/run/podkit/pods")
        .join(format!("default_{second}"))
        .join("logs/say/0.log");
    let text = std::fs::read_to_string(&other_log).unwrap_or_default();
    assert!(text.ends_with(&format!(" stdout F {second}\n")), "{text}");
    let _ =
        std::fs::remove_dir_all(Path::new("/run/podkit/pods").join(format!("default_{second}")));
    pod.delete_and_check();
}

/// A container's private mount namespace copies the host's mounts, other pods' namespace pins
/// and tmpfs volumes included; `/` is a private mount here, so unmounts do not propagate. What
/// removes the copies is that podkit unlinks every pin file and volume directory: since Linux
/// 3.18, unlinking a mount point detaches the mounts on it in every mount namespace. Without
/// that, a deleted pod's namespaces would live on inside other pods' containers.
#[test]
fn a_deleted_pod_leaves_no_mount_in_another_pods_containers() {
    let Some(holder) = Running::start("holder", |name| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, annotations: {{podkit.io/host-process: 'true'}}}}\nspec:\n  terminationGracePeriodSeconds: 1\n  volumes: [{{name: v, emptyDir: {{}}}}]\n  containers:\n  - {{name: c, command: [sleep, '1000'], volumeMounts: [{{name: v, mountPath: /podkit-holder-{name}}}]}}\n"
        )
    }) else {
        return;
    };
    let Some(other) = Running::start("other", |name| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, annotations: {{podkit.io/host-process: 'true'}}}}\nspec:\n  terminationGracePeriodSeconds: 1\n  volumes: [{{name: m, emptyDir: {{medium: Memory}}}}]\n  containers:\n  - {{name: c, command: [sleep, '1000'], volumeMounts: [{{name: m, mountPath: /podkit-other-{name}}}]}}\n"
        )
    }) else {
        return;
    };
    holder.wait_for("the holder's container", || {
        holder.dir().join("members/c.pid").exists()
    });
    other.wait_for("the other's container", || {
        other.dir().join("members/c.pid").exists()
    });
    // A container started after `other` was created: its mount namespace copied other's pins.
    let pid = std::fs::read_to_string(holder.dir().join("members/c.pid")).expect("pid");
    let mountinfo = format!("/proc/{}/mountinfo", pid.trim());
    assert!(
        std::fs::read_to_string(&mountinfo)
            .expect("mountinfo")
            .contains(&other.name),
        "setup: the copy exists"
    );
    other.delete_and_check();
    let left: Vec<String> = std::fs::read_to_string(&mountinfo)
        .expect("mountinfo")
        .lines()
        .filter(|l| l.contains(&other.name))
        .map(str::to_owned)
        .collect();
    assert!(
        left.is_empty(),
        "the deleted pod's mounts live on in another pod's container: {left:#?}"
    );
    holder.delete_and_check();
}

#[test]
fn the_log_tailer_example_ships_every_line_through_rotation() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/log-tailer.yaml");
    let Some(pod) = Running::start_file("log-tailer", example) else {
        return;
    };
    // 60 lines: past a rotation (every 50).
    pod.wait_for("request 60 through the tailer", || {
        pod.log("tail", 0).contains("request 60 served\n")
    });
    let shipped = pod.log("tail", 0);
    let numbers: Vec<u32> = shipped
        .lines()
        .filter_map(|l| {
            l.strip_prefix("request ")?
                .strip_suffix(" served")?
                .parse()
                .ok()
        })
        .collect();
    let first_60: Vec<u32> = numbers.iter().copied().filter(|n| *n <= 60).collect();
    let mut sorted = first_60.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(
        sorted,
        (1..=60).collect::<Vec<_>>(),
        "no line lost across rotations"
    );
    assert_eq!(sorted.len(), first_60.len(), "no line twice");
    pod.delete_and_check();
}

#[test]
fn the_web_example_serves_what_the_puller_publishes() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/web.yaml");
    let Some(pod) = Running::start_file("web", example) else {
        return;
    };
    let get = || -> String {
        use std::io::{Read, Write};
        let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", 8081)) else {
            return String::new();
        };
        // A reply that never comes fails the wait, not the whole run.
        let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = conn.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        let mut reply = String::new();
        let _ = conn.read_to_string(&mut reply);
        reply
    };
    pod.wait_for("version 1 through hostPort 8081", || {
        get().contains("<h1>version 1</h1>")
    });
    // The origin changes; the puller publishes the new version; the server serves it.
    std::fs::write(
        pod.dir().join("volumes/origin/index.html"),
        "<h1>version 2</h1>\n",
    )
    .expect("change the origin");
    pod.wait_for("version 2", || get().contains("<h1>version 2</h1>"));
    let versions = std::fs::read_dir(pod.dir().join("volumes/content/.versions"))
        .expect("versions")
        .count();
    assert!(
        versions >= 2,
        "each version published under .versions: {versions}"
    );
    pod.delete_and_check();
}

#[test]
fn the_hello_example_runs_to_completion() {
    let Some(pod) = Running::start_file(
        "hello",
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hello.yaml"),
    ) else {
        return;
    };
    assert_eq!(pod.wait_exit(), Some(0), "{}", pod.output());
    assert_eq!(
        pod.log("read", 0),
        "hello from pod hello\nmy hostname: hello\n"
    );
    assert!(
        pod.log("look", 0).contains(" pause"),
        "{}",
        pod.log("look", 0)
    );
    pod.delete_and_check();
}

#[test]
fn the_reverse_proxy_example_fronts_the_app_over_http_and_tls() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/reverse-proxy.yaml");
    let Some(pod) = Running::start_file("reverse-proxy", example) else {
        return;
    };
    let curl = |args: &[&str]| -> String {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "5"])
            .args(args)
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Through hostPort 8880 -> the proxy's :80 -> the app on the pod's 127.0.0.1:2368.
    pod.wait_for("the app through the proxy on hostPort 8880", || {
        curl(&["http://127.0.0.1:8880/over-http"]).contains(r#""path": "/over-http""#)
    });
    let plain = curl(&["http://127.0.0.1:8880/over-http"]);
    assert!(plain.contains(r#""pod": "reverse-proxy""#), "{plain}");
    assert!(plain.contains(r#""scheme": "http""#), "{plain}");
    // TLS and HTTP/2 on :443 (hostPort 8443), with the certificate the init container made.
    let tls = curl(&[
        "--cacert",
        &pod.dir().join("volumes/tls/tls.crt").to_string_lossy(),
        "--http2",
        "-w",
        "%{http_version}",
        "https://localhost:8443/over-tls",
    ]);
    assert!(tls.contains(r#""scheme": "https""#), "{tls}");
    assert!(tls.ends_with("\n2"), "HTTP/2 over TLS: {tls}");
    // The app itself listens only inside the pod; port-forward reaches it for debugging.
    assert!(
        !curl(&["http://127.0.0.1:2368/"]).contains("reverse-proxy"),
        "the app must not be reachable on the host's 127.0.0.1:2368"
    );
    let (mut forward, port) = port_forward(&pod.name, 2368);
    let direct = curl(&[&format!("http://127.0.0.1:{port}/direct")]);
    let _ = forward.kill();
    let _ = forward.wait();
    assert!(direct.contains(r#""path": "/direct""#), "{direct}");
    assert!(
        !pod.log("proxy", 0).contains("/direct"),
        "port-forward goes to the app, not through the proxy"
    );
    pod.delete_and_check();
}

// ---- get, describe, logs, delete, gc ----

#[test]
fn get_describe_logs_and_delete_a_running_pod() {
    let Some(pod) = Running::start("verbs", |name| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: verbs}}, annotations: {{podkit.io/host-process: 'true'}}}}
spec:
  terminationGracePeriodSeconds: 2
  tolerations: [{{operator: Exists}}]
  containers:
  - name: ticker
    image: busybox
    command: [sh, -c, "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.05; done"]
  - name: idle
    command: [sleep, "1000"]
"#
        )
    }) else {
        return;
    };
    pod.wait_for("two ticks", || pod.log("ticker", 0).contains("tick 2\n"));
    let table = podkit(&["get", "pods", &pod.name]);
    let row = table.lines().nth(1).unwrap_or_default();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        table
            .lines()
            .next()
            .map(|h| h.split_whitespace().collect::<Vec<_>>()),
        Some(vec!["NAME", "READY", "STATUS", "RESTARTS", "AGE"])
    );
    assert_eq!(
        &cells[..4],
        [pod.name.as_str(), "2/2", "Running", "0"],
        "{table}"
    );

    let yaml = podkit(&["get", "pod", &pod.name, "-o", "yaml"]);
    assert!(
        yaml.contains("apiVersion: v1") && yaml.contains("kind: Pod"),
        "{yaml}"
    );
    assert!(
        yaml.contains("phase: Running") && yaml.contains("app: verbs"),
        "{yaml}"
    );
    let json: Value =
        serde_json::from_str(&podkit(&["get", "pod", &pod.name, "-o", "json"])).expect("json");
    assert_eq!(json["status"]["containerStatuses"][0]["name"], "ticker");
    assert_eq!(
        podkit(&["get", "pods", &pod.name, "-o", "name"]).trim(),
        format!("pod/{}", pod.name)
    );

    let described = podkit(&["describe", "pod", &pod.name]);
    for want in [
        "Status:       Running",
        "ticker:",
        "Restart Count: 0",
        "Ready             True",
        "spec.tolerations",
        "Created container: ticker",
        "Started container ticker",
    ] {
        assert!(
            described.contains(want),
            "{want:?} missing in:\n{described}"
        );
    }

    let tail = podkit(&[
        "logs",
        &pod.name,
        "-c",
        "ticker",
        "--tail",
        "1",
        "--timestamps",
    ]);
    let line = tail.trim_end();
    assert_eq!(line.lines().count(), 1, "{tail}");
    assert!(
        line.contains(" tick ") && line.starts_with("20"),
        "timestamped: {line}"
    );
    let err = podkit_fails(&["logs", &pod.name, "-c", "nope"]);
    assert!(
        err.contains("container \"nope\" is not valid") && err.contains("ticker, idle"),
        "{err}"
    );

    let deleted = podkit(&["delete", "pod", &pod.name]);
    assert_eq!(deleted.trim(), format!("pod \"{}\" deleted", pod.name));
    assert_eq!(pod.wait_exit(), Some(0), "the supervisor ended");
    assert!(!pod.dir().exists());
    let err = podkit_fails(&["delete", "pod", &pod.name]);
    assert!(
        err.contains(&format!("pod \"{}\" not found", pod.name)),
        "{err}"
    );
    pod.delete_and_check();
}

#[test]
fn logs_previous_shows_the_run_before_a_restart() {
    let Some(pod) = Running::start("previous", |name| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, annotations: {{podkit.io/host-process: 'true'}}}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {{name: c, command: [sh, -c, 'echo run at $$(date +%s%N); exit 1']}}\n"
        )
    }) else {
        return;
    };
    pod.wait_for("a restart", || pod.log("c", 1).contains("run at"));
    let current = podkit(&["logs", &pod.name]);
    let previous = podkit(&["logs", &pod.name, "--previous"]);
    assert_eq!(previous, pod.log("c", 0), "the first run");
    assert_ne!(current, previous);
    pod.delete_and_check();
}

#[test]
fn logs_stream_from_the_api_across_a_restart_and_come_from_the_files_once_the_pod_ended() {
    let Some(pod) = Running::start("logapi", |name| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, annotations: {{podkit.io/host-process: 'true'}}}}
spec:
  restartPolicy: OnFailure
  terminationGracePeriodSeconds: 1
  volumes: [{{name: vol, emptyDir: {{}}}}]
  containers:
  - name: c
    command: [sh, -c, "if [ -e /podkit-logs-test/{name}/ran ]; then echo second; echo third; exit 0; fi; touch /podkit-logs-test/{name}/ran; echo first; while [ ! -e /podkit-logs-test/{name}/go ]; do sleep 0.05; done; exit 1"]
    volumeMounts: [{{name: vol, mountPath: /podkit-logs-test/{name}}}]
  - name: idle
    command: [sh, -c, "echo idle up; while [ ! -e /podkit-logs-test/{name}/end ]; do sleep 0.05; done"]
    volumeMounts: [{{name: vol, mountPath: /podkit-logs-test/{name}}}]
"#
        )
    }) else {
        return;
    };
    pod.wait_for("the first run", || pod.log("c", 0).contains("first"));
    let socket = pod.dir().join("api.sock");
    let socket = socket.to_str().expect("utf-8");

    // Following through the API: the first run's line comes while it runs, the next run's
    // after the restart, and the stream ends once the container is done (the pod runs on).
    let mut follower = Command::new(env!("CARGO_BIN_EXE_podkit"))
        .args(["logs", "-f", &pod.name, "-c", "c"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("podkit logs -f");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(
        follower.stdout.take().expect("stdout"),
    ));
    let first = lines.next().map(|l| l.expect("read"));
    assert_eq!(
        first.as_deref(),
        Some("first"),
        "streamed while the run runs"
    );
    std::fs::write(pod.dir().join("volumes/vol/go"), "").expect("go");
    let rest: Vec<String> = lines.map(|l| l.expect("read")).collect();
    assert_eq!(rest, ["second", "third"], "across the restart, to the end");
    assert!(follower.wait().expect("wait").success());
    assert_eq!(pod.status()["phase"], "Running", "{}", pod.status());

    let curl = |query: &str| {
        let out = Command::new("curl")
            .args(["-sS", "-i", "--unix-socket", socket])
            .arg(format!("http://podkit/logs?{query}"))
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n")
    };
    let previous = curl("container=c&previous=true");
    assert!(
        previous.starts_with("HTTP/1.1 200 OK") && previous.contains("transfer-encoding: chunked"),
        "{previous}"
    );
    assert!(previous.ends_with("\n\nfirst\n"), "{previous}");
    let wrong = curl("container=nope");
    assert!(
        wrong.starts_with("HTTP/1.1 404")
            && wrong.contains("container \"nope\" is not valid for pod")
            && wrong.contains("choose one of: c, idle"),
        "{wrong}"
    );
    let unnamed = curl("tailLines=1");
    assert!(
        unnamed.starts_with("HTTP/1.1 400")
            && unnamed.contains("a container name must be specified"),
        "{unnamed}"
    );
    let bad = curl("container=c&tailLines=many");
    assert!(
        bad.starts_with("HTTP/1.1 400")
            && bad.contains("invalid log option tailLines=\"many\": a whole number"),
        "{bad}"
    );

    // --since-time from the second line's own time: that line on. --since 1h: everything.
    let stamped = podkit(&["logs", &pod.name, "-c", "c", "--timestamps"]);
    let third_time = stamped
        .lines()
        .nth(1)
        .and_then(|l| l.split(' ').next())
        .expect("a timestamped line");
    assert_eq!(
        podkit(&["logs", &pod.name, "-c", "c", "--since-time", third_time]),
        "third\n"
    );
    assert_eq!(
        podkit(&["logs", &pod.name, "-c", "c", "--since", "1h"]),
        "second\nthird\n"
    );
    assert_eq!(
        podkit(&[
            "logs",
            &pod.name,
            "-c",
            "c",
            "--since-time",
            "2999-01-01T00:00:00Z"
        ]),
        ""
    );
    let usage = Command::new(env!("CARGO_BIN_EXE_podkit"))
        .args(["logs", &pod.name, "--since", "10 minutes"])
        .output()
        .expect("podkit logs");
    let err = String::from_utf8_lossy(&usage.stderr);
    assert_eq!(usage.status.code(), Some(2), "a usage error: {err}");
    assert!(err.contains("is not a duration like"), "{err}");

    // The pod ends; its state is kept and the logs come from its files.
    std::fs::write(pod.dir().join("volumes/vol/end"), "").expect("end");
    assert_eq!(pod.wait_exit(), Some(0), "{}", pod.output());
    assert!(
        !pod.dir().join("api.sock").exists(),
        "no supervisor any more"
    );
    assert_eq!(
        podkit(&["logs", &pod.name]),
        "second\nthird\n",
        "the first container"
    );
    assert_eq!(podkit(&["logs", &pod.name, "-p"]), "first\n");
    assert_eq!(podkit(&["logs", &pod.name, "-f", "--tail", "1"]), "third\n");
    assert_eq!(
        podkit(&["logs", &pod.name, "--all-containers", "--prefix"]),
        format!(
            "[pod/{0}/c] second\n[pod/{0}/c] third\n[pod/{0}/idle] idle up\n",
            pod.name
        )
    );
    let mut followed: Vec<String> = podkit(&["logs", &pod.name, "--all-containers", "-f"])
        .lines()
        .map(str::to_owned)
        .collect();
    followed.sort();
    assert_eq!(followed, ["idle up", "second", "third"], "all at once");
    let err = podkit_fails(&["logs", &pod.name, "-c", "idle", "--previous"]);
    assert!(
        err.contains("previous terminated container \"idle\" in pod"),
        "{err}"
    );
    pod.delete_and_check();
}

#[test]
fn a_pod_whose_supervisor_died_shows_unknown_and_gc_removes_everything() {
    let Some(pod) = Running::start("gc", |name| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, annotations: {{podkit.io/host-process: 'true'}}}}\nspec:\n  shareProcessNamespace: true\n  volumes: [{{name: m, emptyDir: {{medium: Memory}}}}]\n  containers:\n  - {{name: c, command: [sleep, '1000'], volumeMounts: [{{name: m, mountPath: /podkit-gc-{name}}}]}}\n"
        )
    }) else {
        return;
    };
    pod.wait_for("the container", || {
        pod.status()["containerStatuses"][0]["state"]["running"].is_object()
    });
    // "Started container c (pid N)"
    let member: u32 = pod
        .events()
        .iter()
        .find_map(|e| {
            e.strip_prefix("Started container c (pid ")?
                .strip_suffix(')')?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    assert!(member > 0, "member pid from the events");
    let cgroup = std::fs::read_to_string(pod.dir().join("cgroup")).unwrap_or_default();
    pod.kill_supervisor();
    let table = podkit(&["get", "pods", &pod.name]);
    assert!(table.contains("Unknown"), "{table}");
    let cleaned = podkit(&["gc"]);
    if !cgroup.is_empty() {
        assert!(
            cleaned.contains(&format!("removed cgroup {}", cgroup.trim())),
            "{cleaned}"
        );
    }
    assert!(
        cleaned.contains(&format!("pod \"{}\"", pod.name)),
        "{cleaned}"
    );
    assert!(cleaned.contains("killed pid"), "{cleaned}");
    assert!(
        cleaned.contains(&format!(
            "unmounted and removed /run/netns/default_{}",
            pod.name
        )),
        "{cleaned}"
    );
    let mount_point = format!("/podkit-gc-{}", pod.name);
    assert!(
        cleaned.contains(&format!("removed mount point {mount_point}")),
        "{cleaned}"
    );
    assert!(
        !Path::new(&format!("/proc/{member}")).exists()
            || std::fs::read_to_string(format!("/proc/{member}/stat"))
                .is_ok_and(|s| s.contains(") Z")),
        "member {member} is gone"
    );
    assert!(
        !Path::new(&mount_point).exists(),
        "the mount point podkit made is gone"
    );
    pod.delete_and_check();
}

#[test]
fn apply_starts_a_pod_in_the_background_once_and_refuses_a_changed_manifest() {
    if !nix::unistd::geteuid().is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "needs root; CI runs as root"
        );
        return;
    }
    let name = format!("pka-{}-{}", std::process::id(), next());
    let _cleanup = Applied(name.clone());
    let dir = std::env::temp_dir().join("podkit-run-test");
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join(format!("{name}.yaml"));
    let manifest = |sleep: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, annotations: {{podkit.io/host-process: 'true'}}}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {{name: app, command: [sleep, '{sleep}']}}\n"
        )
    };
    std::fs::write(&file, manifest("1000")).expect("write");
    let f = file.to_str().expect("utf-8");

    let dry = podkit(&["apply", "-f", f, "--dry-run"]);
    assert!(dry.contains("container app: sleep 1000"), "{dry}");
    assert!(
        !Path::new("/run/podkit/pods")
            .join(format!("default_{name}"))
            .exists(),
        "a dry run starts nothing"
    );

    assert_eq!(
        podkit(&["apply", "-f", f]).trim(),
        format!("pod/{name} created")
    );
    let table = podkit(&["get", "pods", &name]);
    assert!(
        table.contains("Running"),
        "apply returns once the pod runs: {table}"
    );
    assert_eq!(
        podkit(&["apply", "-f", f]).trim(),
        format!("pod/{name} unchanged")
    );
    std::fs::write(&file, manifest("999")).expect("write");
    let err = podkit_fails(&["apply", "-f", f]);
    assert!(err.contains("pods are immutable; delete it first"), "{err}");

    assert_eq!(
        podkit(&["delete", "-f", f]).trim(),
        format!("pod \"{name}\" deleted")
    );
    assert!(
        !Path::new("/run/podkit/pods")
            .join(format!("default_{name}"))
            .exists()
    );
    assert!(
        !Path::new("/run/netns")
            .join(format!("default_{name}"))
            .exists()
    );
    let _ = std::fs::remove_file(&file);
}

#[test]
fn apply_reports_why_a_pod_failed_to_start() {
    if !nix::unistd::geteuid().is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "needs root; CI runs as root"
        );
        return;
    }
    let name = format!("pkf-{}-{}", std::process::id(), next());
    let _cleanup = Applied(name.clone());
    let file = std::env::temp_dir().join(format!("podkit-{name}.yaml"));
    std::fs::write(&file, format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, annotations: {{podkit.io/host-process: 'true'}}}}\nspec:\n  volumes: [{{name: d, hostPath: {{path: /nonexistent/podkit, type: Directory}}}}]\n  containers:\n  - {{name: app, command: [sleep, '1000']}}\n")).expect("write");
    let err = podkit_fails(&["apply", "-f", file.to_str().expect("utf-8")]);
    let _ = std::fs::remove_file(&file);
    assert!(
        err.contains("\"/nonexistent/podkit\" does not exist (type: Directory)"),
        "{err}"
    );
    assert!(
        !Path::new("/run/podkit/pods")
            .join(format!("default_{name}"))
            .exists()
    );
}

#[test]
fn port_forward_reaches_the_pod_and_ends_when_it_is_deleted() {
    use std::io::{Read, Write};
    let Some(pod) = Running::start("fwd", |name| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, annotations: {{podkit.io/host-process: 'true'}}}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {{name: echo, command: [socat, 'TCP-LISTEN:7070,bind=127.0.0.1,reuseaddr,fork', 'EXEC:cat']}}\n"
        )
    }) else {
        return;
    };
    pod.wait_for("the server", || {
        pod.status()["containerStatuses"][0]["state"]["running"].is_object()
    });
    let (forward, port) = port_forward(&pod.name, 7070);
    let mut reply = String::new();
    for _ in 0..100 {
        // The server may still be binding: a refused dial closes only that connection.
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
        conn.write_all(b"through the forward").expect("write");
        conn.shutdown(std::net::Shutdown::Write)
            .expect("half-close");
        reply.clear();
        let _ = conn.read_to_string(&mut reply);
        if !reply.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(reply, "through the forward");
    pod.delete_and_check();
    let out = forward.wait_with_output().expect("port-forward ends");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("was deleted: forwarding stopped"), "{err}");
}

#[test]
fn a_tail_member_ships_the_apps_log_lines_to_podkit_logs() {
    let podkit_bin = env!("CARGO_BIN_EXE_podkit");
    let Some(pod) = Running::start("tailer", |name| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, annotations: {{podkit.io/host-process: 'true'}}}}
spec:
  terminationGracePeriodSeconds: 2
  volumes: [{{name: logs, emptyDir: {{}}}}]
  containers:
  - name: app
    command: [sh, -c, "for i in $$(seq 1 50); do echo line $i >> /logs/app.log; done; exec sleep 1000"]
    volumeMounts: [{{name: logs, mountPath: /logs}}]
  - name: tail
    command: [{podkit_bin}, tail, --path, "/logs/*.log", --read-from, head]
    volumeMounts: [{{name: logs, mountPath: /logs, readOnly: true}}]
"#
        )
    }) else {
        return;
    };
    pod.wait_for("line 50 through the tailer", || {
        let out = Command::new(podkit_bin)
            .args(["logs", &pod.name, "-c", "tail"])
            .output();
        out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("line 50\n"))
    });
    let shipped = podkit(&["logs", &pod.name, "-c", "tail"]);
    let numbers: Vec<u32> = shipped
        .lines()
        .filter_map(|l| l.strip_prefix("line ")?.parse().ok())
        .collect();
    assert_eq!(
        numbers,
        (1..=50).collect::<Vec<_>>(),
        "every line, once, in order"
    );
    pod.delete_and_check();
}

#[test]
fn exec_runs_in_the_containers_namespaces_and_passes_the_exit_code_through() {
    let Some(pod) = Running::start("exec", |name| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, annotations: {{podkit.io/host-process: 'true'}}}}
spec:
  terminationGracePeriodSeconds: 1
  volumes: [{{name: data, emptyDir: {{}}}}]
  containers:
  - name: app
    command: [sleep, "1000"]
    env: [{{name: GREETING, value: hello}}]
    volumeMounts: [{{name: data, mountPath: /podkit-exec-test/{name}}}]
"#
        )
    }) else {
        return;
    };
    pod.wait_for("the container", || {
        pod.dir().join("members/app.pid").exists()
    });
    let script = format!(
        "uname -n; echo $GREETING; pwd; touch /podkit-exec-test/{}/made; exit 7",
        pod.name
    );
    let out = Command::new(env!("CARGO_BIN_EXE_podkit"))
        .args(["exec", &pod.name, "--", "sh", "-c", &script])
        .output()
        .expect("exec");
    assert_eq!(out.status.code(), Some(7), "the exit code passes through");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text, format!("{}\nhello\n/\n", pod.name));
    assert!(
        pod.dir().join("volumes/data/made").exists(),
        "exec wrote through the container's mount"
    );
    let err = podkit_fails(&["exec", &pod.name, "-c", "nope", "--", "true"]);
    assert!(err.contains("choose one of: app"), "{err}");
    // A command that cannot run: the shells' codes, and the cause.
    std::fs::write(pod.dir().join("volumes/data/not-executable"), "").expect("write");
    let not_executable = format!("/podkit-exec-test/{}/not-executable", pod.name);
    for (command, code, cause) in [
        ("podkit-no-such-command", 127, "No such file or directory"),
        (not_executable.as_str(), 126, "Permission denied"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_podkit"))
            .args(["exec", &pod.name, "--", command])
            .output()
            .expect("exec");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{command}: {err}");
        assert!(err.contains(command) && err.contains(cause), "{err}");
    }
    pod.delete_and_check();
}

#[test]
fn exec_it_gives_the_command_a_terminal_and_restores_the_local_one() {
    let Some(pod) = Running::start("tty", |name| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, annotations: {{podkit.io/host-process: 'true'}}}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {{name: app, command: [sleep, '1000']}}\n"
        )
    }) else {
        return;
    };
    pod.wait_for("the container", || {
        pod.dir().join("members/app.pid").exists()
    });
    // script(1) runs the shell line on a pty of its own: the local terminal podkit sees. The
    // command inside must get a pty of its own, as its controlling terminal, the local one's
    // size; podkit's exit code is the command's, and the local terminal's mode comes back.
    let line = format!(
        "stty cols 123 rows 45; before=$(stty -g); {} exec -it {} -- sh -c 'tty; stty size; \
         exec 3</dev/tty && echo controlling terminal; exit 3'; code=$?; \
         [ \"$before\" = \"$(stty -g)\" ] && echo mode restored; echo exit code $code",
        env!("CARGO_BIN_EXE_podkit"),
        pod.name
    );
    let out = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("script (util-linux)");
    // (script may echo the EOF it reads from /dev/null as ^@ before podkit makes it raw.)
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    assert!(text.contains("/dev/pts/"), "tty prints a pty: {text}");
    for want in [
        "45 123\n",
        "controlling terminal\n",
        "mode restored\n",
        "exit code 3\n",
    ] {
        assert!(text.contains(want), "{want:?} missing in: {text}");
    }

    // -i alone: stdin reaches the command; without -i it reads nothing.
    let with_stdin = |flags: &[&str]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_podkit"))
            .arg("exec")
            .args(flags)
            .args([&pod.name, "--", "sh", "-c", "cat; exit 4"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("podkit exec");
        let mut stdin = child.stdin.take().expect("stdin");
        let _ = std::io::Write::write_all(&mut stdin, b"through stdin\n");
        drop(stdin);
        let out = child.wait_with_output().expect("wait");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    assert_eq!(with_stdin(&["-i"]), (Some(4), "through stdin\n".into()));
    assert_eq!(with_stdin(&[]), (Some(4), String::new()));
    pod.delete_and_check();
}

#[test]
fn several_cli_calls_at_once_on_one_pod_all_succeed() {
    let Some(pod) = Running::start("busy", |name| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, annotations: {{podkit.io/host-process: 'true'}}}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {{name: app, command: [sh, -c, 'echo up; exec sleep 1000']}}\n"
        )
    }) else {
        return;
    };
    pod.wait_for("the container", || {
        pod.dir().join("members/app.pid").exists() && pod.log("app", 0).contains("up")
    });
    let name = pod.name.as_str();
    let calls: Vec<Vec<&str>> = vec![
        vec!["get", "pods", name],
        vec!["get", "pod", name, "-o", "json"],
        vec!["describe", "pod", name],
        vec!["logs", name],
        vec!["logs", name, "--tail", "1", "--timestamps"],
        vec!["exec", name, "--", "uname", "-n"],
        vec!["exec", name, "--", "sh", "-c", "echo $0", "inside"],
        vec!["get", "pods"],
    ];
    // Eight threads, each making every call five times, in its own order.
    let results: Vec<Vec<(String, bool, String)>> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let calls = &calls;
                scope.spawn(move || {
                    let mut done = Vec::new();
                    for i in 0..calls.len() * 5 {
                        let call = &calls[(t + i) % calls.len()];
                        let out = Command::new(env!("CARGO_BIN_EXE_podkit"))
                            .args(call)
                            .output()
                            .expect("run podkit");
                        let text = String::from_utf8_lossy(&out.stdout).into_owned()
                            + &String::from_utf8_lossy(&out.stderr);
                        done.push((call.join(" "), out.status.success(), text));
                    }
                    done
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("thread"))
            .collect()
    });
    let mut count = 0;
    for (call, ok, text) in results.iter().flatten() {
        count += 1;
        assert!(ok, "podkit {call} failed: {text}");
        let want = match call.split(' ').next() {
            Some("logs") => "up\n",
            Some("exec") if call.contains("uname") => pod.name.as_str(),
            Some("exec") => "inside",
            _ => pod.name.as_str(),
        };
        assert!(
            text.contains(want),
            "podkit {call}: {want:?} missing in {text}"
        );
    }
    assert_eq!(count, 8 * 8 * 5);
    let deleted = podkit(&["delete", "pod", &pod.name]);
    assert_eq!(deleted.trim(), format!("pod \"{}\" deleted", pod.name));
    assert_eq!(pod.wait_exit(), Some(0));
    pod.delete_and_check();
}

#[test]
fn completion_scripts_and_every_verbs_help_with_examples() {
    let bash = podkit(&["completion", "bash"]);
    for verb in [
        "apply",
        "get",
        "describe",
        "logs",
        "exec",
        "attach",
        "delete",
        "gc",
        "port-forward",
        "completion",
    ] {
        assert!(bash.contains(verb), "{verb} missing in the bash completion");
    }
    assert!(
        bash.contains("complete -F _podkit"),
        "a bash completion script"
    );
    assert!(podkit(&["completion", "zsh"]).contains("#compdef podkit"));
    assert!(podkit(&["completion", "fish"]).contains("complete -c podkit"));
    for verb in [
        "run",
        "apply",
        "get",
        "describe",
        "logs",
        "exec",
        "attach",
        "delete",
        "gc",
        "port-forward",
        "tail",
        "puller",
        "proxy",
        "completion",
    ] {
        let help = podkit(&[verb, "--help"]);
        assert!(
            help.contains("Examples:\n  podkit") || help.contains("Examples:\n  source"),
            "podkit {verb} --help has no examples:\n{help}"
        );
    }
}

#[test]
fn the_pod_api_serves_status_and_takes_a_delete_with_a_grace_period() {
    use std::os::unix::fs::PermissionsExt;
    let Some(pod) = Running::start("api", |name| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, annotations: {{podkit.io/host-process: 'true'}}}}\nspec:\n  terminationGracePeriodSeconds: 60\n  containers:\n  - {{name: stubborn, command: [sh, -c, \"trap '' TERM; echo up; while true; do sleep 0.1; done\"]}}\n"
        )
    }) else {
        return;
    };
    pod.wait_for("the container", || pod.log("stubborn", 0).contains("up"));
    let socket = pod.dir().join("api.sock");
    let mode = std::fs::metadata(&socket)
        .expect("api.sock")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "owner only");
    let out = Command::new("curl")
        .args([
            "-s",
            "--unix-socket",
            socket.to_str().expect("utf-8"),
            "http://podkit/status",
        ])
        .output()
        .expect("curl");
    let status: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(status["phase"], "Running", "{status}");
    // 60 s of grace, cut to 1 by the delete (which waits until the pod is gone).
    let deleted = podkit(&["delete", "pod", &pod.name, "--grace-period", "1"]);
    assert_eq!(deleted.trim(), format!("pod \"{}\" deleted", pod.name));
    assert!(
        pod.output()
            .contains("did not stop within the grace period"),
        "{}",
        pod.output()
    );
    pod.delete_and_check();
}

#[test]
fn host_ports_are_published_for_the_pods_life_and_a_port_in_use_fails_the_start() {
    use std::io::{Read, Write};
    // A port free right now, for the pod to publish.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    // NAT to the pod's IP: the app listens on the pod's every address, as on a cluster.
    let Some(pod) = Running::start("hostport", |name| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, annotations: {{podkit.io/host-process: 'true'}}}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: echo\n    command: [socat, 'TCP-LISTEN:7171,reuseaddr,fork', 'EXEC:cat']\n    ports: [{{containerPort: 7171, hostPort: {port}, hostIP: 127.0.0.1}}]\n"
        )
    }) else {
        return;
    };
    pod.wait_for("the container", || {
        pod.dir().join("members/echo.pid").exists()
    });
    let mut reply = String::new();
    for _ in 0..100 {
        // Until socat inside listens, a connection is closed at once (the forward stays up).
        if let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = conn.write_all(b"published");
            let _ = conn.shutdown(std::net::Shutdown::Write);
            reply.clear();
            let _ = conn.read_to_string(&mut reply);
            if !reply.is_empty() {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(reply, "published", "through hostPort {port}");

    // The same hostPort for a second pod: its start fails, naming the port.
    let Some(second) = Running::start("hostport2", |name| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, annotations: {{podkit.io/host-process: 'true'}}}}\nspec:\n  containers:\n  - name: c\n    command: [sleep, '1000']\n    ports: [{{containerPort: 80, hostPort: {port}, hostIP: 127.0.0.1}}]\n"
        )
    }) else {
        return;
    };
    assert_eq!(second.wait_exit(), Some(1));
    let output = second.output();
    let want = format!("port {port} (tcp) on 127.0.0.1 is already in use");
    assert!(output.contains(&want), "{output}");
    assert!(!second.dir().exists(), "nothing of the second pod remains");
    second.delete_and_check();
    pod.delete_and_check();
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
        "the hostPort is free again"
    );
}

#[test]
fn a_host_port_with_the_proxy_protocol_annotation_tells_the_app_the_clients_address() {
    use std::io::{Read, Write};
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port()
    };
    let (with, without) = (free(), free());
    // Two echo servers on the pod's loopback, both relayed: the app on 7171 gets a PROXY header
    // before each client's bytes (only hostPort `with` is named in the annotation), the one on
    // 7272 gets the bytes alone.
    let Some(pod) = Running::start("proxyproto", |name| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  annotations: {{podkit.io/proxy-protocol: '{with}=v1', podkit.io/host-ports: relay, podkit.io/host-process: 'true'}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: a\n    command: [socat, 'TCP-LISTEN:7171,bind=127.0.0.1,reuseaddr,fork', 'EXEC:cat']\n    ports: [{{containerPort: 7171, hostPort: {with}, hostIP: 127.0.0.1}}]\n  - name: b\n    command: [socat, 'TCP-LISTEN:7272,bind=127.0.0.1,reuseaddr,fork', 'EXEC:cat']\n    ports: [{{containerPort: 7272, hostPort: {without}, hostIP: 127.0.0.1}}]\n"
        )
    }) else {
        return;
    };
    // Sends `hello` through `port` once the app listens; the app's echo and the client's port.
    let exchange = |port: u16| {
        for _ in 0..100 {
            if let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let client = conn.local_addr().expect("local address").port();
                let _ = conn.write_all(b"hello");
                let _ = conn.shutdown(std::net::Shutdown::Write);
                let mut reply = String::new();
                let _ = conn.read_to_string(&mut reply);
                if !reply.is_empty() {
                    return (reply, client);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no echo through hostPort {port}: {}", pod.output());
    };
    let (reply, client) = exchange(with);
    assert_eq!(
        reply,
        format!("PROXY TCP4 127.0.0.1 127.0.0.1 {client} {with}\r\nhello"),
        "the app on hostPort {with} is told the client's address and port"
    );
    let (reply, _) = exchange(without);
    assert_eq!(reply, "hello", "hostPort {without} is relayed as it was");
    pod.delete_and_check();
}

/// Deletes an applied pod when dropped, whatever the test did.
struct Applied(String);

impl Drop for Applied {
    fn drop(&mut self) {
        let _ = Command::new(env!("CARGO_BIN_EXE_podkit"))
            .args(["delete", "pod", &self.0])
            .output();
        let dir = Path::new("/run/podkit/pods").join(format!("default_{}", self.0));
        let _ = netns::PodNamespaces::remove(&self.0, &dir.join("ns"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// `podkit port-forward POD :REMOTE` on 127.0.0.1, and the random local port it printed.
fn port_forward(pod: &str, remote: u16) -> (Child, u16) {
    use std::io::BufRead;
    let mut forward = Command::new(env!("CARGO_BIN_EXE_podkit"))
        .args([
            "port-forward",
            pod,
            &format!(":{remote}"),
            "--address",
            "127.0.0.1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("port-forward");
    let mut first = String::new();
    std::io::BufReader::new(forward.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("line");
    // "Forwarding from 127.0.0.1:PORT -> REMOTE"
    let port: u16 = first
        .split(':')
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{first}"));
    assert!(first.ends_with(&format!("-> {remote}\n")), "{first}");
    (forward, port)
}

// ---- attacks (issue #16) ----

/// A member that never reaches exec (here: its cgroup was frozen in advance by an init
/// container, so its process is born frozen; before, glibc's setuid could hang the same way)
/// must not hold up the pod's deletion: `podkit delete` and SIGTERM to `podkit run` both end
/// it, and nothing is left.
#[test]
fn a_member_stuck_before_exec_is_killed_by_delete_and_by_sigterm() {
    if pod_cgroup("x").is_none() {
        eprintln!("skipped: no cgroup v2 mounted");
        return;
    }
    // The init container makes the main container's cgroup beside its own and freezes it.
    let manifest = |name: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, annotations: {{podkit.io/host-process: 'true'}}}}\nspec:\n  terminationGracePeriodSeconds: 30\n  initContainers:\n  - name: freeze\n    command: [sh, -c, 'm=$(grep -m1 ^cgroup2 /proc/mounts | cut -d\" \" -f2); d=$(dirname \"$m$(sed -n s/^0:://p /proc/self/cgroup)\")/main; mkdir \"$d\" && echo 1 > \"$d/cgroup.freeze\"']\n  containers:\n  - {{name: main, command: [sleep, infinity]}}\n"
        )
    };
    for how in ["delete", "sigterm"] {
        let Some(pod) = Running::start(&format!("frozen-{how}"), manifest) else {
            return;
        };
        let cgroup = pod_cgroup(&pod.name).expect("cgroup v2").join("main");
        let _thaw = Thaw(cgroup.clone());
        pod.wait_for("the main container's process, frozen before exec", || {
            std::fs::read_to_string(cgroup.join("cgroup.procs")).is_ok_and(|p| !p.is_empty())
        });
        let frozen: Vec<u32> = std::fs::read_to_string(cgroup.join("cgroup.procs"))
            .expect("procs")
            .lines()
            .filter_map(|l| l.parse().ok())
            .collect();
        if how == "delete" {
            let out = Command::new("timeout")
                .args([
                    "60",
                    env!("CARGO_BIN_EXE_podkit"),
                    "delete",
                    "pod",
                    &pod.name,
                ])
                .output()
                .expect("podkit delete");
            assert!(
                out.status.success(),
                "podkit delete of a pod whose member never reached exec: {} {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(pod.wait_exit(), Some(0), "{}", pod.output());
        }
        pod.delete_and_check();
        for pid in frozen {
            assert!(
                !Path::new(&format!("/proc/{pid}")).exists(),
                "the frozen process {pid} is gone"
            );
        }
    }
}

/// A member that can write a volume plants symbolic links in it; a later container's `subPath`
/// through them must not make podkit (root, on the host) create files outside the volume, nor
/// bind-mount a host directory into the member. A link that stays inside the volume still works,
/// as under kubelet.
#[test]
fn a_sub_path_through_a_link_planted_by_a_member_is_refused() {
    for (case, sub_path) in [("create", "link/adv-subpath-made"), ("bind", "link")] {
        let Some(pod) = Running::start(&format!("subpath-{case}"), |name| {
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, annotations: {{podkit.io/host-process: 'true'}}}}\nspec:\n  restartPolicy: Never\n  volumes: [{{name: data, emptyDir: {{}}}}]\n  initContainers:\n  - name: plant\n    securityContext: {{runAsUser: 65534, runAsGroup: 65534}}\n    command: [sh, -c, 'cd /tmp/{name}-init && ln -s /etc link && mkdir real && echo inside > real/f && ln -s real alias']\n    volumeMounts: [{{name: data, mountPath: /tmp/{name}-init}}]\n  containers:\n  - name: inside\n    command: [cat, /tmp/{name}-alias/f]\n    volumeMounts: [{{name: data, mountPath: /tmp/{name}-alias, subPath: alias}}]\n  - name: victim\n    command: [ls, /tmp/{name}-x]\n    volumeMounts: [{{name: data, mountPath: /tmp/{name}-x, subPath: {sub_path}}}]\n"
            )
        }) else {
            return;
        };
        pod.wait_for("both containers to end", || {
            let init = &pod.status()["initContainerStatuses"][0]["state"]["terminated"];
            if init["exitCode"].as_i64().is_some_and(|code| code != 0) {
                panic!("the init container failed: {}", pod.status());
            }
            let status = pod.status();
            ["inside", "victim"].iter().all(|c| {
                status["containerStatuses"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|s| s["name"] == *c && s["state"]["terminated"].is_object())
            })
        });
        assert_eq!(
            pod.log("inside", 0),
            "inside\n",
            "a link inside the volume is followed: {:?} {}",
            pod.events(),
            pod.status()
        );
        let events = pod.events().join("\n");
        assert!(
            events.contains("subPath \"link") && events.contains("leads outside the volume"),
            "{events}"
        );
        assert!(
            !Path::new("/etc/adv-subpath-made").exists(),
            "podkit created a file outside the volume"
        );
        let victim = pod.log("victim", 0);
        assert!(victim.is_empty(), "the victim never ran: {victim}");
        assert_eq!(pod.wait_exit(), Some(1), "the pod failed: {}", pod.output());
        pod.delete_and_check();
    }
}

/// The pod API refuses a delete whose grace period it cannot read (it deleted with the
/// manifest's grace period before), and the pod goes on running.
#[test]
fn a_delete_with_a_bad_grace_period_is_refused_by_the_api() {
    let Some(pod) = Running::start("api-grace", |name| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, annotations: {{podkit.io/host-process: 'true'}}}}\nspec:\n  containers:\n  - {{name: app, command: [sleep, infinity]}}\n"
        )
    }) else {
        return;
    };
    pod.wait_for("the pod to run", || pod.status()["phase"] == "Running");
    let socket = pod.dir().join("api.sock");
    for query in [
        "gracePeriodSeconds=abc",
        "gracePeriodSeconds=-1",
        "gracePeriod=1",
    ] {
        let out = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/stderr",
                "-w",
                "%{http_code}",
                "-X",
                "DELETE",
            ])
            .arg("--unix-socket")
            .arg(&socket)
            .arg(format!("http://podkit/pod?{query}"))
            .output()
            .expect("curl");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "400", "{query}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("gracePeriod"),
            "the answer names the parameter: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(pod.status()["phase"], "Running", "the pod was not deleted");
    pod.delete_and_check();
}

/// Thaws and kills what is left in a cgroup a test froze, and removes it, pass or fail.
struct Thaw(PathBuf);

impl Drop for Thaw {
    fn drop(&mut self) {
        let _ = std::fs::write(self.0.join("cgroup.kill"), "1");
        let _ = std::fs::write(self.0.join("cgroup.freeze"), "0");
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.0.exists() && std::fs::remove_dir(&self.0).is_err() && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(parent) = self.0.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

/// Pids of live processes whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .collect()
}
