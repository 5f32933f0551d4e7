//! Runs every example of the crate as a user would, and checks what it prints.
//! Needs root, like the examples themselves.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

#[test]
fn pod_example_runs_a_command_in_a_new_pod_and_deletes_it() {
    let Some(name) = pod_name("expod") else {
        return;
    };
    let out = run("pod", &[&name]);
    assert!(out.contains(&format!("created pod {name}")), "{out}");
    assert!(out.contains("link lo UP"), "{out}");
    assert!(
        out.lines().any(|l| l == name),
        "uname -n prints the pod name: {out}"
    );
    assert!(
        out.contains(&format!("unmounted and removed /run/netns/{name}")),
        "{out}"
    );

    let out = run("pod", &[&name, "--pid", "--", "sh", "-c", "echo pid=$$"]);
    assert!(out.contains("pid=2"), "first process after PID 1: {out}");
    assert!(out.contains("(PID 1 of the pod)"), "{out}");
}

#[test]
fn spawn_example_connects_two_members_over_the_pods_loopback() {
    let Some(name) = pod_name("exspawn") else {
        return;
    };
    let out = run("spawn", &[&name, "--pid"]);
    assert!(
        out.contains(&format!(
            "client: {name} (pid 3) got: hello from {name} (pid 2)"
        )),
        "{out}"
    );
}

#[test]
fn sockets_example_serves_a_pod_listener_from_the_host() {
    let Some(name) = pod_name("exsock") else {
        return;
    };
    let out = run("sockets", &[&name]);
    assert!(out.contains("answered \"echo: ping\""), "{out}");
}

#[test]
fn veth_example_reaches_the_pod_address_from_the_host() {
    let Some(name) = pod_name("exveth") else {
        return;
    };
    let out = run("veth", &[&name]);
    assert!(
        out.contains("host -> 198.18.0.2:8080: hello 198.18.0.1:"),
        "{out}"
    );
}

#[test]
fn open_and_delete_examples_work_on_a_namespace_made_elsewhere() {
    let Some(name) = pod_name("exopen") else {
        return;
    };
    let status = Command::new("ip")
        .args(["netns", "add", &name])
        .status()
        .expect("ip");
    assert!(status.success());
    let out = run("open", &["name", &name]);
    let deleted = Command::new("ip").args(["netns", "del", &name]).status();
    assert!(
        out.contains(&format!("/run/netns/{name}")) && out.contains("1: lo DOWN"),
        "{out}"
    );
    assert!(deleted.is_ok_and(|s| s.success()));

    let err = run_failing("open", &["pid", "999999999"]);
    assert!(err.contains("no process with pid 999999999"), "{err}");
    let err = run_failing("open", &["name", "../etc"]);
    assert!(err.contains("invalid namespace name \"../etc\""), "{err}");

    // delete on a pod that is not there: nothing to do, nothing printed, success.
    let dir = std::env::temp_dir().join("podkit-example").join(&name);
    assert_eq!(run("delete", &[&name, dir.to_str().expect("utf-8")]), "");
}

fn run(example: &str, args: &[&str]) -> String {
    let out = Command::new(binary(example))
        .args(args)
        .output()
        .expect("run example");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "example {example} {args:?} failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn run_failing(example: &str, args: &[&str]) -> String {
    let out = Command::new(binary(example))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run example");
    assert!(
        !out.status.success(),
        "example {example} {args:?} should fail"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A fresh pod name, or `None` (skip) when not root outside CI.
fn pod_name(prefix: &str) -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "the examples need root; CI runs as root"
        );
        eprintln!("skipped: not root");
        return None;
    }
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    Some(format!("pkx-{prefix}-{}-{n}", std::process::id()))
}

fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} missing: run the tests with `cargo test`",
        path.display()
    );
    path
}
