//! The pod network end to end: every pod gets an address of its own on podkit's host bridge,
//! shown where kubectl shows it (status.podIP, `get -o wide`, `describe`, the downward API),
//! reachable from the host and from other pods; a pod can keep only its loopback; and an
//! address goes back when its pod is deleted, also after its supervisor was killed (`gc`).
//!
//! Network rule (DESIGN.md): traffic goes only to the pods' addresses, inside the network
//! namespaces these tests made (through podkit). Pods of host processes: what is tested is
//! podkit's network, not a runtime's.

mod common;
use common::Isolated as Env;

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Where the default pod network (bridge podkit0, 10.90.0.0/16) keeps its leases.
const LEASES: &str = "/run/podkit/networks/podkit0/10.90.0.0-16";

impl Env {
    fn pod_json(&self, pod: &str) -> Value {
        let out = self.podkit(&["get", "pod", pod, "-o", "json"]);
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    fn pod_ip(&self, pod: &str) -> Option<Ipv4Addr> {
        self.pod_json(pod)["status"]["podIP"]
            .as_str()
            .and_then(|ip| ip.parse().ok())
    }

    /// The leases held by this test's pods: (address, owner).
    fn leases(&self) -> Vec<(String, String)> {
        let Ok(entries) = std::fs::read_dir(LEASES) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.parse::<Ipv4Addr>().ok()?;
                let owner = std::fs::read_to_string(e.path()).ok()?;
                Path::new(owner.trim())
                    .starts_with(self.state())
                    .then(|| (name, owner.trim().to_owned()))
            })
            .collect()
    }
}

/// Deletes the test's pods when it ends, also when it failed.
struct Cleanup<'a>(&'a Env, Vec<String>);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for pod in &self.1 {
            let _ = self
                .0
                .podkit(&["delete", "pod", pod, "--grace-period", "0"]);
        }
        let _ = self.0.podkit(&["gc"]);
    }
}

/// The host-side index of the pod's `eth0` peer (`eth0@ifN` as `ip` shows it), read through
/// the pod's pinned network namespace.
fn host_peer_index(pod: &str) -> u32 {
    let out = Command::new("ip")
        .args([
            "-n",
            &format!("default_{pod}"),
            "-o",
            "link",
            "show",
            "eth0",
        ])
        .output()
        .expect("run ip");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split("eth0@if")
        .nth(1)
        .and_then(|rest| rest.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no eth0@ifN in {text:?} {:?}", out.stderr))
}

/// Whether the host has a link of index `index`.
fn host_link_exists(index: u32) -> bool {
    let out = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .expect("run ip");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.starts_with(&format!("{index}: ")))
}

fn read_from(addr: SocketAddr) -> String {
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to the pod");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("read");
    text
}

#[test]
fn pods_get_addresses_reach_each_other_and_give_them_back() {
    let Some(env) = Env::new() else { return };
    let id = std::process::id();
    let (a, b, c) = (
        format!("net-a-{id}"),
        format!("net-b-{id}"),
        format!("net-c-{id}"),
    );
    let out = env.tmp.path().join("out");
    std::fs::create_dir_all(&out).expect("out dir");
    let file = env.file(
        "pods.yaml",
        &format!(
            "apiVersion: v1
kind: Pod
metadata:
  name: {a}
  annotations: {{podkit.io/host-process: 'true'}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: server
    command: [sh, -c, 'echo $POD_IP > {out}/a-ip; exec socat TCP-LISTEN:7000,fork,reuseaddr SYSTEM:\"echo from-a\"']
    env:
    - name: POD_IP
      valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}
---
apiVersion: v1
kind: Pod
metadata:
  name: {b}
  annotations: {{podkit.io/host-process: 'true'}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: client
    command: [sleep, '1000']
---
apiVersion: v1
kind: Pod
metadata:
  name: {c}
  annotations: {{podkit.io/host-process: 'true', podkit.io/network: none}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: alone
    command: [sleep, '1000']
    env:
    - name: POD_IP
      valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}
",
            out = out.display()
        ),
    );
    let _cleanup = Cleanup(&env, vec![a.clone(), b.clone(), c.clone()]);
    env.ok(&["apply", "-f", &file]);

    // Each pod has an address of the default subnet, its own, shown as kubectl shows it.
    let ip_a = env.pod_ip(&a).expect("pod a has an IP");
    let ip_b = env.pod_ip(&b).expect("pod b has an IP");
    for ip in [ip_a, ip_b] {
        assert_eq!(ip.octets()[..2], [10, 90], "{ip}");
    }
    assert_ne!(ip_a, ip_b);
    let json = env.pod_json(&a);
    assert_eq!(
        json["status"]["podIPs"][0]["ip"],
        ip_a.to_string(),
        "{json}"
    );
    assert_eq!(env.pod_ip(&c), None, "a pod with network none has no IP");
    let wide = env.ok(&["get", "pods", "-o", "wide"]);
    let row = wide.lines().find(|l| l.starts_with(&a)).expect("row");
    assert!(row.contains(&ip_a.to_string()), "{wide}");
    let row = wide.lines().find(|l| l.starts_with(&c)).expect("row");
    assert!(row.contains("<none>"), "{wide}");
    let described = env.ok(&["describe", "pod", &a]);
    assert!(
        described.contains(&format!("IP:           {ip_a}\n"))
            && described.contains(&format!("IPs:\n  IP:  {ip_a}\n"))
            && described.contains("Network:      pod network"),
        "{described}"
    );
    assert!(
        env.ok(&["describe", "pod", &c])
            .contains("Network:      loopback only (podkit.io/network: none"),
    );
    // The downward API gives it too.
    let deadline = Instant::now() + Duration::from_secs(10);
    let written = loop {
        let text = std::fs::read_to_string(out.join("a-ip")).unwrap_or_default();
        if !text.is_empty() || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(written.trim(), ip_a.to_string());
    // The pod's side: eth0 up with the address and a default route via the bridge; the
    // loopback-only pod has no eth0.
    let addr = env.ok(&["exec", &b, "--", "cat", "/proc/net/fib_trie"]);
    assert!(addr.contains(&ip_b.to_string()), "{addr}");
    let route = env.ok(&["exec", &b, "--", "cat", "/proc/net/route"]);
    assert!(
        route
            .lines()
            .any(|l| l.starts_with("eth0\t00000000\t01005A0A")),
        "a default route via 10.90.0.1: {route}"
    );
    let devices = env.ok(&["exec", &c, "--", "cat", "/proc/net/dev"]);
    assert!(!devices.contains("eth0"), "{devices}");

    // The host reaches pod a at its address, and so does pod b.
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&SocketAddr::from((ip_a, 7000)), Duration::from_secs(1))
        .is_err()
    {
        assert!(Instant::now() < deadline, "pod a's server never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(read_from(SocketAddr::from((ip_a, 7000))), "from-a\n");
    let reply = env.ok(&[
        "exec",
        &b,
        "--",
        "socat",
        "-T5",
        "-",
        &format!("TCP:{ip_a}:7000"),
    ]);
    assert_eq!(reply, "from-a\n");

    // Leases: one per pod with an address, owned by its state directory.
    let leases = env.leases();
    assert_eq!(leases.len(), 2, "{leases:?}");
    for (ip, pod) in [(ip_a, &a), (ip_b, &b)] {
        assert!(
            leases.iter().any(
                |(l, owner)| *l == ip.to_string() && owner.ends_with(&format!("default_{pod}"))
            ),
            "{leases:?}"
        );
    }

    // Deleted, a pod gives its address and its veth pair back.
    let peer_a = host_peer_index(&a);
    assert!(host_link_exists(peer_a));
    env.ok(&["delete", "-f", &file]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !env.leases().is_empty() || host_link_exists(peer_a) {
        assert!(
            Instant::now() < deadline,
            "leases or veth left: {:?}",
            env.leases()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A supervisor killed with SIGKILL cannot give its pod's address back: `gc` does, and
/// removes its veth pair with the pod's namespaces.
#[test]
fn gc_releases_the_address_of_a_killed_supervisor() {
    let Some(env) = Env::new() else { return };
    let pod = format!("net-kill-{}", std::process::id());
    let file = env.file(
        "pod.yaml",
        &format!(
            "apiVersion: v1
kind: Pod
metadata:
  name: {pod}
  annotations: {{podkit.io/host-process: 'true'}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    command: [sleep, '1000']
"
        ),
    );
    let _cleanup = Cleanup(&env, vec![pod.clone()]);
    env.ok(&["apply", "-f", &file]);
    let ip = env.pod_ip(&pod).expect("an IP");
    let peer = host_peer_index(&pod);
    let dir = env.state().join("pods").join(format!("default_{pod}"));
    let pid: i32 = std::fs::read_to_string(dir.join("supervisor.pid"))
        .expect("supervisor.pid")
        .trim()
        .parse()
        .expect("pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the supervisor");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(Instant::now() < deadline, "the supervisor did not die");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        env.leases().len(),
        1,
        "the lease stays with a killed supervisor"
    );
    let said = env.ok(&["gc"]);
    assert!(
        said.contains(&format!("released pod address {ip}")),
        "{said}"
    );
    assert!(env.leases().is_empty(), "{:?}", env.leases());
    assert!(!host_link_exists(peer), "the veth pair is gone");
}

/// Fifty pods up at once get fifty addresses, and give every one back.
#[test]
fn fifty_pods_leave_no_address_behind() {
    let Some(env) = Env::new() else { return };
    let id = std::process::id();
    let names: Vec<String> = (0..50).map(|i| format!("net-many-{id}-{i}")).collect();
    let text: Vec<String> = names
        .iter()
        .map(|name| {
            format!(
                "apiVersion: v1
kind: Pod
metadata:
  name: {name}
  annotations: {{podkit.io/host-process: 'true'}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: app
    command: [sleep, '1000']
"
            )
        })
        .collect();
    let file = env.file("many.yaml", &text.join("---\n"));
    let _cleanup = Cleanup(&env, names.clone());
    env.ok(&["apply", "-f", &file]);
    let mut ips: Vec<Ipv4Addr> = names
        .iter()
        .map(|n| env.pod_ip(n).expect("an IP"))
        .collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 50, "fifty distinct addresses");
    assert_eq!(env.leases().len(), 50);
    env.ok(&["delete", "-f", &file]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !env.leases().is_empty() {
        assert!(Instant::now() < deadline, "leases left: {:?}", env.leases());
        std::thread::sleep(Duration::from_millis(20));
    }
}
