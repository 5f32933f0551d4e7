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
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Where the default pod network (bridge podkit0, 10.90.0.0/16) keeps its leases.
const LEASES: &str = "/run/podkit/networks/podkit0/10.90.0.0-16";

/// Whether this host has IPv6, so pods get an IPv6 address too (dual stack).
fn host_has_ipv6() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv6/conf/all/disable_ipv6")
        .is_ok_and(|text| text.trim() == "0")
}

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

    /// The pod's IPv6 address, the second of its podIPs.
    fn pod_ip6(&self, pod: &str) -> Option<Ipv6Addr> {
        self.pod_json(pod)["status"]["podIPs"][1]["ip"]
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
        let _gc = common::gc_lock();
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
    let ipv6 = host_has_ipv6();
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
    command: [sh, -c, 'echo $POD_IP > {out}/a-ip; echo $POD_IPS > {out}/a-ips; exec socat TCP-LISTEN:7000,fork,reuseaddr SYSTEM:\"echo from-a\"']
    env:
    - name: POD_IP
      valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}
    - name: POD_IPS
      valueFrom: {{fieldRef: {{fieldPath: status.podIPs}}}}
{server6}---
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
            out = out.display(),
            server6 = if ipv6 {
                "  - name: server6
    command: [socat, 'TCP6-LISTEN:7006,fork,reuseaddr', 'SYSTEM:\"echo from-a6\"']
"
            } else {
                ""
            },
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

    // Where the host has IPv6, each pod has an IPv6 address too (dual stack), second in
    // podIPs, on eth0 with a default route, shown by describe and the downward API, and
    // reached from the host and from the other pod.
    if ipv6 {
        let ip6_a = env.pod_ip6(&a).expect("pod a has an IPv6 address");
        let ip6_b = env.pod_ip6(&b).expect("pod b has an IPv6 address");
        for ip6 in [ip6_a, ip6_b] {
            assert_eq!(ip6.segments()[..4], [0xfd90, 0x706f, 0x646b, 0], "{ip6}");
        }
        assert_ne!(ip6_a, ip6_b);
        assert_eq!(env.pod_ip6(&c), None);
        let described = env.ok(&["describe", "pod", &a]);
        assert!(
            described.contains(&format!("IPs:\n  IP:  {ip_a}\n  IP:  {ip6_a}\n")),
            "{described}"
        );
        let ips = std::fs::read_to_string(out.join("a-ips")).unwrap_or_default();
        assert_eq!(ips.trim(), format!("{ip_a},{ip6_a}"));
        let route = env.ok(&["exec", &b, "--", "cat", "/proc/net/ipv6_route"]);
        assert!(
            route.lines().any(|l| l.starts_with(
                "00000000000000000000000000000000 00 00000000000000000000000000000000 00 \
                 fd90706f646b00000000000000000001"
            ) && l.ends_with("eth0")),
            "a default route via fd90:706f:646b::1: {route}"
        );
        let at = SocketAddr::from((ip6_a, 7006));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&at, Duration::from_secs(1)).is_err() {
            assert!(
                Instant::now() < deadline,
                "pod a's IPv6 server never listened"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(read_from(at), "from-a6\n");
        let reply = env.ok(&[
            "exec",
            &b,
            "--",
            "socat",
            "-T5",
            "-",
            &format!("TCP6:[{ip6_a}]:7006"),
        ]);
        assert_eq!(reply, "from-a6\n");
        // It follows from the IPv4 lease: the subnet's network plus the IPv4 offset.
        for (ip, ip6) in [(ip_a, ip6_a), (ip_b, ip6_b)] {
            let offset = u32::from(ip) - u32::from(Ipv4Addr::new(10, 90, 0, 0));
            assert_eq!(
                u128::from(ip6) & 0xffff_ffff,
                u128::from(offset),
                "{ip} {ip6}"
            );
        }
    }

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
    // The leases go before the pods' directories, so before `delete` returns.
    assert!(env.leases().is_empty(), "{:?}", env.leases());
    // The veth pair goes when the kernel has finished with the pod's namespace.
    let deadline = Instant::now() + Duration::from_secs(10);
    while host_link_exists(peer_a) {
        assert!(Instant::now() < deadline, "the veth pair is left");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A supervisor killed with SIGKILL cannot give its pod's address and hostPorts back: `gc`
/// does, and removes its veth pair with the pod's namespaces.
#[test]
fn gc_releases_the_address_of_a_killed_supervisor() {
    let Some(env) = Env::new() else { return };
    let pod = format!("net-kill-{}", std::process::id());
    let port = free_port();
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
    ports: [{{containerPort: 80, hostPort: {port}}}]
"
        ),
    );
    let _cleanup = Cleanup(&env, vec![pod.clone()]);
    env.ok(&["apply", "-f", &file]);
    let ip = env.pod_ip(&pod).expect("an IP");
    let ip6 = env.pod_ip6(&pod);
    assert_eq!(
        ip6.is_some(),
        host_has_ipv6(),
        "an IPv6 address where the host has IPv6"
    );
    let peer = host_peer_index(&pod);
    let dir = env.state().join("pods").join(format!("default_{pod}"));
    // No other test's gc between the kill and this test's own.
    let _gc = common::gc_lock();
    env.kill_pod_supervisor(&pod);
    assert_eq!(
        env.leases().len(),
        1,
        "the lease stays with a killed supervisor"
    );
    let said = env.ok(&["gc"]);
    assert!(
        said.contains(&format!("released pod address {ip}"))
            && said.contains(&format!("removed the hostPorts of {}", dir.display())),
        "{said}"
    );
    assert!(env.leases().is_empty(), "{:?}", env.leases());
    if let Some(ip6) = ip6 {
        // Its hostPort's IPv6 mapping went with the IPv4 one.
        let rules6 = nft_table("ip6");
        assert!(!rules6.contains(&ip6.to_string()), "{rules6}");
    }
    assert!(!host_link_exists(peer), "the veth pair is gone");
}

/// A pod made again under its name while its last run's veth is still on the bridge (the kernel
/// removes it only once the old namespace is torn down): that veth is replaced, not an error.
#[test]
fn a_pod_made_again_replaces_its_last_runs_veth() {
    let Some(env) = Env::new() else { return };
    let pod = format!("net-again-{}", std::process::id());
    let file = env.file(
        "again.yaml",
        &format!(
            "apiVersion: v1
kind: Pod
metadata:
  name: {pod}
  annotations: {{podkit.io/host-process: 'true'}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: app
    command: [sleep, '1000']
"
        ),
    );
    let _cleanup = Cleanup(&env, vec![pod.clone()]);
    env.ok(&["apply", "-f", &file]);
    let index = host_peer_index(&pod);
    let name = link_name(index);
    env.ok(&["delete", "-f", &file]);
    // The last run's veth, as the kernel may still hold it: one of that name on the bridge.
    let deadline = Instant::now() + Duration::from_secs(10);
    while host_link_exists(index) {
        assert!(Instant::now() < deadline, "the old veth stays");
        std::thread::sleep(Duration::from_millis(20));
    }
    let made = Command::new("ip")
        .args([
            "link",
            "add",
            &name,
            "master",
            "podkit0",
            "type",
            "veth",
            "peer",
            "name",
            &format!("{name}x"),
        ])
        .status()
        .expect("run ip");
    assert!(made.success(), "a stand-in veth {name}");
    env.ok(&["apply", "-f", &file]);
    let again = host_peer_index(&pod);
    assert_eq!(link_name(again), name, "the pod's own veth, made again");
    assert!(env.pod_ip(&pod).is_some());
}

/// The name of the host's link of index `index`.
fn link_name(index: u32) -> String {
    let out = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .expect("run ip");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{index}: ")))
        .and_then(|rest| rest.split([':', '@']).next())
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no link {index} in {text}"))
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

/// A free TCP and UDP port on 127.0.0.1 for a hostPort, from the kernel.
fn free_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = tcp.local_addr().expect("addr").port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// hostPorts of a pod with an IP are DNAT to it (the CNI portmap plugin's rules in podkit's
/// nftables table), held on the host by the supervisor while the pod runs; a host client at
/// 127.0.0.1 is masqueraded to the bridge's address, as portmap does. A pod that asks for the
/// relay (an app on its loopback only) keeps it. Deleted, the pod's rules and ports go.
#[test]
fn host_ports_are_nat_to_the_pod_ip_unless_relayed() {
    let Some(env) = Env::new() else { return };
    let id = std::process::id();
    let (nat, relayed, found) = (
        format!("net-hp-{id}"),
        format!("net-relay-{id}"),
        format!("net-lo-{id}"),
    );
    let (tcp, udp, relay_port, lo_port) = (free_port(), free_port(), free_port(), free_port());
    let file = env.file(
        "ports.yaml",
        &format!(
            "apiVersion: v1
kind: Pod
metadata:
  name: {nat}
  annotations: {{podkit.io/host-process: 'true'}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: tcp
    command: [socat, 'TCP-LISTEN:7100,fork,reuseaddr', 'SYSTEM:echo $SOCAT_PEERADDR']
    ports: [{{containerPort: 7100, hostPort: {tcp}}}]
  - name: udp
    command: [socat, 'UDP-RECVFROM:7200,fork,reuseaddr', 'SYSTEM:echo udp-$SOCAT_PEERADDR']
    ports: [{{containerPort: 7200, hostPort: {udp}, protocol: UDP}}]
---
apiVersion: v1
kind: Pod
metadata:
  name: {relayed}
  annotations: {{podkit.io/host-process: 'true', podkit.io/host-ports: relay}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    command: [socat, 'TCP-LISTEN:7100,bind=127.0.0.1,fork,reuseaddr', 'SYSTEM:echo $SOCAT_PEERADDR']
    ports: [{{containerPort: 7100, hostPort: {relay_port}}}]
---
apiVersion: v1
kind: Pod
metadata:
  name: {found}
  annotations: {{podkit.io/host-process: 'true'}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    command: [socat, 'TCP-LISTEN:7100,bind=127.0.0.1,fork,reuseaddr', 'SYSTEM:echo $SOCAT_PEERADDR']
    ports: [{{containerPort: 7100, hostPort: {lo_port}}}]
"
        ),
    );
    let _cleanup = Cleanup(&env, vec![nat.clone(), relayed.clone(), found.clone()]);
    env.ok(&["apply", "-f", &file]);
    let ip = env.pod_ip(&nat).expect("an IP");

    // Through the NAT: the app sees the client masqueraded to the bridge's address.
    let ask = |port: u16| ask_local(port).text;
    assert_eq!(ask(tcp), "10.90.0.1\n");
    // UDP the same way.
    assert_eq!(ask_local_udp(udp).0, "udp-10.90.0.1\n");
    // The relay: the app on the pod's loopback is reached, and sees 127.0.0.1.
    assert_eq!(ask(relay_port), "127.0.0.1\n");
    // An app found listening on its pod's loopback only, which NAT cannot reach, is relayed
    // too, with a warning in the supervisor's log.
    assert_eq!(ask(lo_port), "127.0.0.1\n");
    let log = std::fs::read_to_string(
        env.state()
            .join("pods")
            .join(format!("default_{found}"))
            .join("supervisor.log"),
    )
    .unwrap_or_default();
    assert!(
        log.contains(&format!(
            "hostPort {lo_port}: the app listens on the pod's loopback only"
        )),
        "{log}"
    );
    // The rules name the pod's address; the supervisor holds the ports on the host.
    let rules = Command::new("nft")
        .args(["list", "table", "ip", "podkit0"])
        .output()
        .expect("nft");
    let rules = String::from_utf8_lossy(&rules.stdout).into_owned();
    for (proto, port, target) in [("tcp", tcp, 7100), ("udp", udp, 7200)] {
        let element = rules
            .lines()
            .flat_map(|l| l.split(','))
            .find(|e| e.contains(&format!("{proto} . {port} ")))
            .unwrap_or_else(|| panic!("no {proto} {port} in {rules}"));
        assert!(element.contains(&format!(": {ip} . {target}")), "{rules}");
    }
    assert!(std::net::TcpListener::bind(("0.0.0.0", tcp)).is_err());
    assert!(std::net::UdpSocket::bind(("0.0.0.0", udp)).is_err());
    // A dual stack pod's ports are published to IPv6 clients too, by DNAT to its IPv6
    // address (the table's IPv6 half; reached with real traffic in netns/tests/nat.rs, in
    // namespaces of the test's own), and held on [::] as well.
    let ip6 = env.pod_ip6(&nat);
    if let Some(ip6) = ip6 {
        let rules6 = nft_table("ip6");
        for (proto, port, target) in [("tcp", tcp, 7100), ("udp", udp, 7200)] {
            let element = rules6
                .lines()
                .flat_map(|l| l.split(','))
                .find(|e| e.contains(&format!("{proto} . {port} ")))
                .unwrap_or_else(|| panic!("no {proto} {port} in {rules6}"));
            assert!(element.contains(&format!(": {ip6} . {target}")), "{rules6}");
        }
        for (file, port) in [("tcp6", tcp), ("udp6", udp)] {
            assert!(held_on_any6(file, port), "{port} held on [::] ({file})");
        }
        // The relayed pods' ports are not: the relay is IPv4.
        assert!(!rules6.contains(&format!(" . {relay_port} ")), "{rules6}");
    }

    // A second pod asking for the same port is refused, naming it.
    let second = env.file(
        "second.yaml",
        &format!(
            "apiVersion: v1
kind: Pod
metadata:
  name: {nat}-2
  annotations: {{podkit.io/host-process: 'true'}}
spec:
  containers:
  - name: c
    command: [sleep, '1000']
    ports: [{{containerPort: 80, hostPort: {tcp}}}]
"
        ),
    );
    let refused = env.podkit(&["apply", "-f", &second]);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains(&format!("port {tcp} (tcp) on 0.0.0.0 is already in use")),
        "{said}"
    );

    env.ok(&["delete", "-f", &file]);
    let rules = Command::new("nft")
        .args(["list", "table", "ip", "podkit0"])
        .output()
        .expect("nft");
    let rules = String::from_utf8_lossy(&rules.stdout).into_owned();
    assert!(!rules.contains(&ip.to_string()), "{rules}");
    if let Some(ip6) = ip6 {
        let rules6 = nft_table("ip6");
        assert!(!rules6.contains(&ip6.to_string()), "{rules6}");
        assert!(!held_on_any6("tcp6", tcp) && !held_on_any6("udp6", udp));
    }
    assert!(
        std::net::TcpListener::bind(("0.0.0.0", tcp)).is_ok(),
        "the port is free"
    );
}

/// `nft list table FAMILY podkit0` (empty when there is none).
fn nft_table(family: &str) -> String {
    let out = Command::new("nft")
        .args(["list", "table", family, "podkit0"])
        .output()
        .expect("nft");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether a socket of the host's /proc/net/`file` (tcp6, udp6) is bound to [::]:`port`.
fn held_on_any6(file: &str, port: u16) -> bool {
    let table = std::fs::read_to_string(format!("/proc/net/{file}")).unwrap_or_default();
    let local = format!("00000000000000000000000000000000:{port:04X}");
    table
        .lines()
        .skip(1)
        .any(|l| l.split_whitespace().nth(1) == Some(local.as_str()))
}

/// What an app behind a hostPort said to a client on the host, and where the client's socket
/// went: the kernel's peer (from /proc/net/tcp) and the one getpeername() gives.
struct Reply {
    text: String,
    kernel: Vec<SocketAddr>,
    peer: SocketAddr,
}

/// Connects to 127.0.0.1:`port` until the app there answers (bounded).
fn ask_local(port: u16) -> Reply {
    ask_at(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
}

/// Connects to `asked` until the app there answers (bounded).
fn ask_at(asked: SocketAddr) -> Reply {
    let port = asked.port();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = TcpStream::connect_timeout(&asked, Duration::from_secs(2))
            .ok()
            .and_then(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
                let kernel = kernel_peers(s.local_addr().ok()?.port());
                let peer = s.peer_addr().ok()?;
                let mut text = String::new();
                s.read_to_string(&mut text).ok()?;
                (!text.is_empty()).then_some(Reply { text, kernel, peer })
            });
        if let Some(reply) = reply {
            return reply;
        }
        assert!(Instant::now() < deadline, "no reply on port {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends a datagram to 127.0.0.1:`port` until a reply comes (bounded): the reply and whom it
/// came from.
fn ask_local_udp(port: u16) -> (String, SocketAddr) {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        socket.send_to(b"ping", ("127.0.0.1", port)).expect("send");
        let mut buf = [0u8; 64];
        if let Ok((n, from)) = socket.recv_from(&mut buf) {
            return (String::from_utf8_lossy(&buf[..n]).into_owned(), from);
        }
        assert!(Instant::now() < deadline, "no UDP reply");
    }
}

/// The remote addresses the kernel holds for the host's TCP sockets whose local port is
/// `local` (from /proc/net/tcp): where a connection really goes, whatever getpeername() says.
/// Several: the kernel gives one ephemeral port to connections to different peers at once (a
/// CI run found another test's connection on the same local port).
fn kernel_peers(local: u16) -> Vec<SocketAddr> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut cols = line.split_whitespace();
            let (ours, theirs) = (cols.nth(1)?, cols.next()?);
            let port = |hex: &str| u16::from_str_radix(hex.split(':').nth(1)?, 16).ok();
            if port(ours)? != local {
                return None;
            }
            let ip = u32::from_str_radix(theirs.split(':').next()?, 16).ok()?;
            Some(SocketAddr::from((
                Ipv4Addr::from(ip.swap_bytes()),
                port(theirs)?,
            )))
        })
        .collect()
}

/// A client on the host that connects to a hostPort is sent straight to the pod's IP by the
/// connect hook (the kernel's socket shows the pod's address, getpeername() the one asked for;
/// the app sees the bridge's address, as through the NAT); UDP the same. A pod that says
/// `podkit.io/host-ports: nat` is reached through the DNAT alone, and a client in another
/// pod's network namespace is not rewritten (its 127.0.0.1 is its own). `describe` says which
/// ports the hook has. Deleted, or its supervisor killed then `gc`, the pod's ports leave the
/// hook (a server bound to the port on the host is then reached, not the old pod).
#[test]
fn the_hosts_own_clients_reach_host_ports_through_the_connect_hook() {
    let Some(env) = Env::new() else { return };
    let id = std::process::id();
    let (hooked, nat) = (format!("net-hook-{id}"), format!("net-nohook-{id}"));
    let (tcp, udp, nat_port, tcp6) = (free_port(), free_port(), free_port(), free_port());
    let file = env.file(
        "hook.yaml",
        &format!(
            "apiVersion: v1
kind: Pod
metadata:
  name: {hooked}
  annotations: {{podkit.io/host-process: 'true'}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: tcp
    command: [socat, 'TCP-LISTEN:7100,fork,reuseaddr', 'SYSTEM:echo $SOCAT_PEERADDR']
    ports: [{{containerPort: 7100, hostPort: {tcp}}}]
  - name: udp
    command: [socat, 'UDP-RECVFROM:7200,fork,reuseaddr', 'SYSTEM:echo udp-$SOCAT_PEERADDR']
    ports: [{{containerPort: 7200, hostPort: {udp}, protocol: UDP}}]
  - name: tcp6
    command: [socat, 'TCP6-LISTEN:7106,fork,reuseaddr', 'SYSTEM:echo $SOCAT_PEERADDR']
    ports: [{{containerPort: 7106, hostPort: {tcp6}}}]
---
apiVersion: v1
kind: Pod
metadata:
  name: {nat}
  annotations: {{podkit.io/host-process: 'true', podkit.io/host-ports: nat}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: tcp
    command: [socat, 'TCP-LISTEN:7100,fork,reuseaddr', 'SYSTEM:echo $SOCAT_PEERADDR']
    ports: [{{containerPort: 7100, hostPort: {nat_port}}}]
"
        ),
    );
    let cleanup = Cleanup(&env, vec![hooked.clone(), nat.clone()]);
    env.ok(&["apply", "-f", &file]);
    let ip = env.pod_ip(&hooked).expect("an IP");
    assert!(
        Path::new("/run/podkit/bpf/links/podkit_connect4").exists(),
        "the hook is pinned"
    );

    let Reply { text, kernel, peer } = ask_local(tcp);
    assert_eq!(text, "10.90.0.1\n");
    assert!(
        kernel.contains(&SocketAddr::from((ip, 7100))),
        "rewritten at connect(): {kernel:?}"
    );
    assert_eq!(
        peer,
        SocketAddr::from((Ipv4Addr::LOCALHOST, tcp)),
        "getpeername"
    );
    // UDP: sendmsg() rewritten, recvmsg() gives the reply from the address the client used.
    let (reply, from) = ask_local_udp(udp);
    assert_eq!(reply, "udp-10.90.0.1\n");
    assert_eq!(from, SocketAddr::from((Ipv4Addr::LOCALHOST, udp)));
    // A dual stack pod's port to a client at [::1]: connect6 sends it to the pod's IPv6
    // address (no DNAT can: IPv6 has no route_localnet); the app sees the bridge's IPv6
    // address, getpeername() what the client asked for.
    if let Some(ip6) = env.pod_ip6(&hooked) {
        assert!(
            Path::new("/run/podkit/bpf/links/podkit_connect6").exists(),
            "the IPv6 hook is pinned"
        );
        let asked = SocketAddr::from((Ipv6Addr::LOCALHOST, tcp6));
        let Reply { text, peer, .. } = ask_at(asked);
        // socat writes it in full, in brackets.
        let seen = text
            .trim()
            .trim_matches(['[', ']'])
            .parse::<Ipv6Addr>()
            .ok();
        assert_eq!(
            seen,
            "fd90:706f:646b::1".parse().ok(),
            "{text} (the pod: {ip6})"
        );
        assert_eq!(peer, asked, "getpeername");
    }

    // The DNAT alone for the pod that asks for it: the kernel's socket is to 127.0.0.1.
    let nat_ip = env.pod_ip(&nat).expect("an IP");
    let Reply { text, kernel, .. } = ask_local(nat_port);
    assert_eq!(text, "10.90.0.1\n");
    assert!(
        kernel.contains(&SocketAddr::from((Ipv4Addr::LOCALHOST, nat_port))),
        "{kernel:?}"
    );

    // describe says which.
    let described = env.ok(&["describe", "pod", &hooked]);
    assert!(
        described.contains(&format!(
            "{tcp}/tcp -> {ip}:7100  DNAT; connect hook for the host's own clients"
        )) && described.contains(&format!("{udp}/udp -> {ip}:7200  DNAT; connect hook")),
        "{described}"
    );
    let described = env.ok(&["describe", "pod", &nat]);
    assert!(
        described.contains(&format!("{nat_port}/tcp -> {nat_ip}:7100  DNAT\n")),
        "{described}"
    );

    // From another pod's network namespace, 127.0.0.1 is that pod's own: not rewritten, and
    // nothing listens there.
    let inside = Command::new("ip")
        .args(["netns", "exec", &format!("default_{nat}")])
        .args([
            "socat",
            "-T2",
            "-",
            &format!("TCP:127.0.0.1:{tcp},connect-timeout=2"),
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("ip netns exec");
    assert!(
        !inside.status.success(),
        "{}",
        String::from_utf8_lossy(&inside.stdout)
    );

    // Killed, then gc: the hook lets the port go. A server of the host's own on it is reached.
    let gc = common::gc_lock();
    env.kill_pod_supervisor(&hooked);
    env.ok(&["gc"]);
    drop(gc);
    let server = std::net::TcpListener::bind(("127.0.0.1", tcp)).expect("the port is free");
    let client = TcpStream::connect_timeout(
        &SocketAddr::from((Ipv4Addr::LOCALHOST, tcp)),
        Duration::from_secs(2),
    )
    .expect("the host's own server");
    let local = client.local_addr().expect("local").port();
    let peers = kernel_peers(local);
    assert!(
        peers.contains(&SocketAddr::from((Ipv4Addr::LOCALHOST, tcp))),
        "no longer rewritten: {peers:?}"
    );
    drop((client, server));
    drop(cleanup);
    // No pod left on the host: the hook is gone with the bridge (unless another test's pod
    // came meanwhile and loaded it again: no lease before the look and none after).
    let none_leased = || std::fs::read_dir(LEASES).map_or(true, |mut d| d.next().is_none());
    if none_leased() {
        let hook = Path::new("/run/podkit/bpf").exists();
        if none_leased() {
            assert!(!hook, "the hook's bpffs is gone");
        }
    }
}

/// Deletes what the test's file made when it ends, also when it failed.
struct Down<'a>(&'a Env, String);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = self.0.podkit(&["delete", "-f", &self.1]);
        let _gc = common::gc_lock();
        let _ = self.0.podkit(&["gc"]);
    }
}

/// Connects to `addr` and reads what the server says before it closes (empty on failure).
fn answer(addr: SocketAddr) -> String {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return String::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text.trim().to_owned()
}

#[test]
fn a_service_spreads_connections_over_its_ready_pods_and_follows_readiness() {
    let Some(env) = Env::new() else { return };
    let id = std::process::id();
    let app = format!("svc-{id}");
    let flags = env.tmp.path().join("flags");
    std::fs::create_dir_all(&flags).expect("flags dir");
    // Three replicas answer each connection with their name (their hostname), on a port the
    // Service names; each is Ready until the test drops a file named after it.
    let file = env.file(
        "service.yaml",
        &format!(
            "apiVersion: apps/v1
kind: Deployment
metadata: {{name: {app}}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: {app}}}}}
  template:
    metadata:
      labels: {{app: {app}}}
      annotations: {{podkit.io/host-process: 'true'}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: server
        command: [socat, 'TCP-LISTEN:8080,fork,reuseaddr', 'SYSTEM:hostname']
        ports: [{{name: http, containerPort: 8080}}]
        readinessProbe:
          exec: {{command: [sh, -c, 'test ! -e {flags}/unready-$(hostname)']}}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {{name: {app}}}
spec:
  type: NodePort
  selector: {{app: {app}}}
  ports: [{{name: web, port: 80, targetPort: http}}]
",
            flags = flags.display()
        ),
    );
    let _down = Down(&env, file.clone());
    env.ok(&["apply", "-f", &file]);
    let service: Value =
        serde_json::from_str(&env.ok(&["get", "svc", &app, "-o", "json"])).expect("json");
    let ip: Ipv4Addr = service["spec"]["clusterIP"]
        .as_str()
        .and_then(|ip| ip.parse().ok())
        .expect("a cluster IP");
    assert!(ip.octets()[..2] == [10, 96], "{ip}");
    let node_port = service["spec"]["ports"][0]["nodePort"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .expect("a node port");
    assert!((30000..=32767).contains(&node_port), "{node_port}");
    // The Endpoints: each Ready pod's IP and the named port's number.
    let endpoints = || -> Value {
        serde_json::from_str(&env.ok(&["get", "endpoints", &app, "-o", "json"]))
            .unwrap_or(Value::Null)
    };
    let ready = |e: &Value| -> Vec<String> {
        e["subsets"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["addresses"].as_array().into_iter().flatten())
            .filter_map(|a| a["targetRef"]["name"].as_str().map(str::to_owned))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while ready(&endpoints()).len() < 3 {
        assert!(Instant::now() < deadline, "endpoints: {}", endpoints());
        std::thread::sleep(Duration::from_millis(200));
    }
    let e = endpoints();
    assert_eq!(e["subsets"][0]["ports"][0]["port"], 8080, "{e}");
    assert_eq!(e["subsets"][0]["ports"][0]["name"], "web", "{e}");
    let mut pods = ready(&e);
    pods.sort();
    let table = env.ok(&["get", "ep", &app]);
    assert!(table.contains(":8080"), "{table}");
    // A hundred connections from the host reach all three.
    let target = SocketAddr::from((ip, 80));
    let mut seen = std::collections::BTreeMap::<String, u32>::new();
    for _ in 0..100 {
        *seen.entry(answer(target)).or_default() += 1;
    }
    let names: Vec<&String> = seen.keys().collect();
    let why = || {
        let log = std::fs::read_to_string(
            env.state()
                .join(format!("controllers/default/service/{app}/controller.log")),
        )
        .unwrap_or_default();
        let table = Command::new("nft")
            .args(["list", "table", "ip", "podkit0"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        format!(
            "{seen:?}\ncontroller:\n{log}\nendpoints: {}\n{table}",
            endpoints()
        )
    };
    assert_eq!(names, pods.iter().collect::<Vec<_>>(), "{}", why());
    // Through the node port on the host's 127.0.0.1 too.
    let mut through_node = std::collections::BTreeSet::new();
    for _ in 0..40 {
        through_node.insert(answer(SocketAddr::from(([127, 0, 0, 1], node_port))));
    }
    assert_eq!(
        through_node.iter().collect::<Vec<_>>(),
        pods.iter().collect::<Vec<_>>(),
        "through node port {node_port}"
    );
    // From a pod too, its own included (hairpin).
    let from_pod = env.ok(&[
        "exec",
        &pods[0],
        "--",
        "sh",
        "-c",
        &format!("for i in $(seq 30); do socat -T2 - TCP:{ip}:80 </dev/null; done"),
    ]);
    let mut names: Vec<&str> = from_pod.lines().collect();
    names.sort();
    names.dedup();
    assert_eq!(names, pods.iter().map(String::as_str).collect::<Vec<_>>());
    // One turns unready: it leaves the Endpoints, and no new connection reaches it.
    std::fs::write(flags.join(format!("unready-{}", pods[0])), "").expect("flag");
    let deadline = Instant::now() + Duration::from_secs(30);
    while ready(&endpoints()).contains(&pods[0]) {
        assert!(Instant::now() < deadline, "endpoints: {}", endpoints());
        std::thread::sleep(Duration::from_millis(100));
    }
    let e = endpoints();
    assert_eq!(
        e["subsets"][0]["notReadyAddresses"][0]["targetRef"]["name"], pods[0],
        "{e}"
    );
    // The rules follow the Endpoints within a pass of the controller.
    std::thread::sleep(Duration::from_millis(600));
    for _ in 0..60 {
        let who = answer(target);
        assert!(who != pods[0] && !who.is_empty(), "{who:?}");
    }
    // None Ready: a connection is refused at once, not left to time out.
    for pod in &pods {
        std::fs::write(flags.join(format!("unready-{pod}")), "").expect("flag");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready(&endpoints()).is_empty() {
        assert!(Instant::now() < deadline, "endpoints: {}", endpoints());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(600));
    let start = Instant::now();
    let refused = TcpStream::connect_timeout(&target, Duration::from_secs(5));
    assert!(refused.is_err(), "connected to a Service with no endpoint");
    assert!(start.elapsed() < Duration::from_secs(2), "{refused:?}");
    let start = Instant::now();
    let refused = TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], node_port)),
        Duration::from_secs(5),
    );
    assert!(
        refused.is_err(),
        "connected to a node port with no endpoint"
    );
    assert!(start.elapsed() < Duration::from_secs(2), "{refused:?}");
    assert!(
        env.ok(&["describe", "svc", &app])
            .contains("Endpoints:         <none>")
    );
    // Deleted: its rules go with it.
    env.ok(&["delete", "svc", &app]);
    let nat = netns::Nat::current()
        .and_then(|n| n.with_table("podkit0"))
        .expect("the NAT table");
    let owners = nat.services().expect("services");
    let storage = env.storage();
    assert!(
        !owners
            .iter()
            .any(|o| o.starts_with(&*storage.to_string_lossy())),
        "{owners:?}"
    );
}

/// A headless Service of a StatefulSet: Endpoints but no rules, and names for each Ready pod,
/// its own `pod.service...` included, in the root's Services hosts file that pods' /etc/hosts
/// follow (tests/images.rs reads it from inside a container).
#[test]
fn a_headless_service_names_each_pod_of_its_stateful_set() {
    let Some(env) = Env::new() else { return };
    let app = format!("hl-{}", std::process::id());
    let file = env.file(
        "headless.yaml",
        &format!(
            "apiVersion: v1
kind: Service
metadata: {{name: {app}}}
spec:
  clusterIP: None
  selector: {{app: {app}}}
  ports: [{{port: 5432}}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: {app}}}
spec:
  serviceName: {app}
  replicas: 2
  selector: {{matchLabels: {{app: {app}}}}}
  template:
    metadata:
      labels: {{app: {app}}}
      annotations: {{podkit.io/host-process: 'true'}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: db
        command: [sleep, '1000']
"
        ),
    );
    let _down = Down(&env, file.clone());
    env.ok(&["apply", "-f", &file]);
    let hosts = env.state().join("services/hosts");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(&hosts).unwrap_or_default();
        let ips: Vec<Option<Ipv4Addr>> =
            (0..2).map(|i| env.pod_ip(&format!("{app}-{i}"))).collect();
        let done = ips.iter().enumerate().all(|(i, ip)| {
            ip.is_some_and(|ip| {
                text.contains(&format!(
                    "default {ip} {app}-{i}.{app} {app}-{i}.{app}.default {app}-{i}.{app}.default.svc {app}-{i}.{app}.default.svc.cluster.local"
                )) && text.contains(&format!("default {ip} {app} {app}.default "))
            })
        });
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "{text}\n{ips:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let service: Value =
        serde_json::from_str(&env.ok(&["get", "svc", &app, "-o", "json"])).expect("json");
    assert_eq!(service["spec"]["clusterIP"], "None");
    let table = env.ok(&["get", "svc", &app]);
    assert!(table.contains(" None "), "{table}");
    let endpoints = env.ok(&["get", "ep", &app]);
    assert!(endpoints.contains(":5432"), "{endpoints}");
    // No rules: a headless Service has no address to DNAT.
    let nat = netns::Nat::current()
        .and_then(|n| n.with_table("podkit0"))
        .expect("the NAT table");
    let storage = env.storage();
    let owners = nat.services().expect("services");
    assert!(
        !owners
            .iter()
            .any(|o| o.starts_with(&*storage.to_string_lossy())),
        "{owners:?}"
    );
    env.ok(&["delete", "svc", &app]);
    let text = std::fs::read_to_string(&hosts).unwrap_or_default();
    assert!(!text.contains(&app), "{text}");
}
