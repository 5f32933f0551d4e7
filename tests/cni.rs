//! The CNI path of the pod network end to end, with Debian's `containernetworking-plugins`
//! (`bridge`, `host-local`, `portmap`, `tuning` in /usr/lib/cni): podkit pointed at a
//! configuration directory runs its plugins instead of its own bridge. Pods get their address
//! from the plugins' result, reach each other by it, publish hostPorts through portmap, and
//! give everything back when deleted, also after their supervisor was killed (`gc` runs DEL);
//! a bad configuration, a missing plugin and a failing plugin are named, leaving nothing.
//!
//! Each test has a bridge and a subnet of its own. Debian's plugins (1.1.1) leave the bridge
//! and portmap's shared chains (CNI-HOSTPORT-*) behind on DEL, as kubelet's hosts keep them:
//! [`Net`]'s drop removes exactly what the test made, also when it fails. The tests share the
//! host's `nat` table, so they run one at a time.
//!
//! Network rule (DESIGN.md): traffic goes only to 127.0.0.1 and to the pods' addresses.

mod common;
use common::Isolated as Env;

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Where Debian's package puts the plugins (podkit's default after /opt/cni/bin).
const DEBIAN_PLUGINS: &str = "/usr/lib/cni";

/// The tests share the host's iptables `nat` table (portmap's chains): one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// A test's CNI network: its configuration directory, bridge, subnet and host-local's data
/// directory; dropped, it removes what the plugins left of it on the host.
struct Net {
    dir: tempfile::TempDir,
    name: String,
    bridge: String,
    /// The first three octets of its /24.
    prefix: [u8; 3],
    /// What was on the host before, so that only what the test made goes.
    had_nat: bool,
    had_nat6: bool,
    had_hostport_chains: bool,
    _serial: std::sync::MutexGuard<'static, ()>,
}

impl Net {
    /// A network of index `n` (each test its own), or `None` when not root or the plugins
    /// are missing (CI has both).
    fn new(n: u8) -> Option<Net> {
        if !nix::unistd::geteuid().is_root() {
            assert!(std::env::var_os("CI").is_none(), "CI runs as root");
            eprintln!("skipped: not root");
            return None;
        }
        if !Path::new(DEBIAN_PLUGINS).join("bridge").exists() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI installs containernetworking-plugins"
            );
            eprintln!("skipped: no CNI plugins in {DEBIAN_PLUGINS}");
            return None;
        }
        let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let pid = std::process::id();
        // 10.200-10.204.x: clear of podkit's 10.90/16 and the Services' 10.96/16.
        let prefix = [10, 200 + n, (pid % 256) as u8];
        Some(Net {
            dir: tempfile::tempdir().expect("tempdir"),
            name: format!("pkcni{n}-{pid}"),
            bridge: format!("pkc{n}{}", pid % 100_000),
            prefix,
            had_nat: table_exists("ip"),
            had_nat6: table_exists("ip6"),
            had_hostport_chains: nat_rules("iptables-save").contains(":CNI-HOSTPORT-DNAT "),
            _serial: serial,
        })
    }

    fn conf_dir(&self) -> PathBuf {
        self.dir.path().join("net.d")
    }

    /// host-local's leases: `<dataDir>/<network>/<ip>`.
    fn leases_dir(&self) -> PathBuf {
        self.dir.path().join("ipam").join(&self.name)
    }

    fn subnet(&self) -> String {
        let [a, b, c] = self.prefix;
        format!("{a}.{b}.{c}.0/24")
    }

    /// An IPv6 /64 of the test's own (a ULA prefix clear of the host's fd00::/64).
    fn subnet6(&self) -> String {
        let [_, b, c] = self.prefix;
        format!("fd9d:{b}:{c}::/64")
    }

    /// The bridge + host-local plugin, then `more` plugins.
    fn write_list(&self, more: &[&str]) {
        self.write_ranges(&[self.subnet()], more);
    }

    /// The bridge + host-local plugin with a range per subnet (`subnets`), then `more`.
    fn write_ranges(&self, subnets: &[String], more: &[&str]) {
        let ranges: Vec<String> = subnets
            .iter()
            .map(|s| format!(r#"[{{"subnet": "{s}"}}]"#))
            .collect();
        let routes: Vec<&str> = subnets
            .iter()
            .map(|s| {
                if s.contains(':') {
                    r#"{"dst": "::/0"}"#
                } else {
                    r#"{"dst": "0.0.0.0/0"}"#
                }
            })
            .collect();
        let mut plugins = vec![format!(
            r#"{{"type": "bridge", "bridge": "{bridge}", "isGateway": true, "hairpinMode": true,
              "ipam": {{"type": "host-local", "dataDir": "{data}",
                        "ranges": [{ranges}], "routes": [{routes}]}}}}"#,
            bridge = self.bridge,
            data = self.dir.path().join("ipam").display(),
            ranges = ranges.join(", "),
            routes = routes.join(", "),
        )];
        plugins.extend(more.iter().map(|p| (*p).to_owned()));
        self.write(
            "10-test.conflist",
            &format!(
                r#"{{"cniVersion": "1.0.0", "name": "{}", "plugins": [{}]}}"#,
                self.name,
                plugins.join(",\n")
            ),
        );
    }

    fn write(&self, file: &str, text: &str) -> PathBuf {
        std::fs::create_dir_all(self.conf_dir()).expect("conf dir");
        let path = self.conf_dir().join(file);
        std::fs::write(&path, text).expect("write conf");
        path
    }

    /// `podkit ARGS` pointed at the network.
    fn podkit(&self, env: &Env, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_podkit"))
            .args(args)
            .env("PODKIT_STORAGE", env.storage())
            .env("PODKIT_ROOT", env.state())
            .env("PODKIT_CNI_CONF_DIR", self.conf_dir())
            .output()
            .expect("run podkit")
    }

    fn ok(&self, env: &Env, args: &[&str]) -> String {
        let out = self.podkit(env, args);
        assert!(
            out.status.success(),
            "podkit {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// host-local's leased addresses.
    fn leases(&self) -> Vec<Ipv4Addr> {
        std::fs::read_dir(self.leases_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect()
    }

    /// The links enslaved to the bridge (the pods' host ends).
    fn ports(&self) -> Vec<String> {
        let out = Command::new("ip")
            .args(["-o", "link", "show", "master", &self.bridge])
            .output()
            .expect("run ip");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|name| name.split('@').next().unwrap_or(name).to_owned())
            .collect()
    }

    /// portmap's rules for this network (its DNAT rules carry the network's name).
    fn port_rules(&self) -> Vec<String> {
        nat_rules("iptables-save")
            .lines()
            .filter(|l| l.contains(&format!("\\\"{}\\\"", self.name)))
            .map(str::to_owned)
            .collect()
    }
}

/// A sysctl's value, written back when the test ends, pass or fail.
struct Sysctl(&'static str, Option<String>);

impl Sysctl {
    fn keep(path: &'static str) -> Sysctl {
        Sysctl(path, std::fs::read_to_string(path).ok())
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        if let Some(value) = &self.1 {
            let _ = std::fs::write(self.0, value);
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
        let _ = std::fs::remove_dir_all(Path::new("/var/lib/cni/networks").join(&self.name));
        // portmap's shared chains, when this test made them and no pod uses them any more.
        let rules = nat_rules("iptables-save");
        if !self.had_hostport_chains && !rules.contains(":CNI-DN-") {
            let iptables = |args: &[&str]| {
                let _ = Command::new("iptables")
                    .args(["-t", "nat"])
                    .args(args)
                    .output();
            };
            for chain in ["PREROUTING", "OUTPUT"] {
                iptables(&[
                    "-D",
                    chain,
                    "-m",
                    "addrtype",
                    "--dst-type",
                    "LOCAL",
                    "-j",
                    "CNI-HOSTPORT-DNAT",
                ]);
            }
            iptables(&[
                "-D",
                "POSTROUTING",
                "-m",
                "comment",
                "--comment",
                "CNI portfwd requiring masquerade",
                "-j",
                "CNI-HOSTPORT-MASQ",
            ]);
            for chain in [
                "CNI-HOSTPORT-DNAT",
                "CNI-HOSTPORT-MASQ",
                "CNI-HOSTPORT-SETMARK",
            ] {
                iptables(&["-F", chain]);
                iptables(&["-X", chain]);
            }
        }
        // The nat tables iptables-nft made for portmap, when they were not there and are
        // left empty.
        for (family, had, save) in [
            ("ip", self.had_nat, "iptables-save"),
            ("ip6", self.had_nat6, "ip6tables-save"),
        ] {
            if !had && table_exists(family) && nat_is_empty(&nat_rules(save)) {
                let _ = Command::new("nft")
                    .args(["delete", "table", family, "nat"])
                    .output();
            }
        }
    }
}

fn table_exists(family: &str) -> bool {
    Command::new("nft")
        .args(["list", "table", family, "nat"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn nat_rules(save: &str) -> String {
    Command::new(save)
        .args(["-t", "nat"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// No rule and no chain but the base ones.
fn nat_is_empty(rules: &str) -> bool {
    rules.lines().all(|l| {
        !l.starts_with("-A")
            && (!l.starts_with(':')
                || [":PREROUTING ", ":INPUT ", ":OUTPUT ", ":POSTROUTING "]
                    .iter()
                    .any(|base| l.starts_with(base)))
    })
}

impl Net {
    fn pod_ip(&self, env: &Env, pod: &str) -> Option<Ipv4Addr> {
        let out = self.podkit(env, &["get", "pod", pod, "-o", "json"]);
        let json: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        json["status"]["podIP"]
            .as_str()
            .and_then(|ip| ip.parse().ok())
    }

    fn in_subnet(&self, ip: Ipv4Addr) -> bool {
        ip.octets()[..3] == self.prefix
    }

    /// Whether `ip` is in `subnet6()`, by its first four groups: the text of an address
    /// drops a zero group (`fd9d:204:0::2` prints as `fd9d:204::2`), so a prefix of strings
    /// does not say it.
    fn in_subnet6(&self, ip: std::net::Ipv6Addr) -> bool {
        let net: std::net::Ipv6Addr = self
            .subnet6()
            .trim_end_matches("/64")
            .parse()
            .expect("an IPv6 network");
        ip.segments()[..4] == net.segments()[..4]
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// What a TCP server at `addr` says, once it listens.
fn read_from(addr: SocketAddr) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(mut stream) => {
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .expect("timeout");
                let mut text = String::new();
                stream.read_to_string(&mut text).expect("read");
                return text;
            }
            Err(err) => {
                assert!(Instant::now() < deadline, "{addr} never answered: {err}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// A pod whose app says `says` on every connection to port 7000 (published on `host_port`).
fn server(name: &str, says: &str, host_port: Option<u16>) -> String {
    let ports = match host_port {
        Some(port) => format!("\n    ports: [{{containerPort: 7000, hostPort: {port}}}]"),
        None => String::new(),
    };
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
  annotations: {{podkit.io/host-process: 'true'}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    command: [socat, 'TCP-LISTEN:7000,fork,reuseaddr', 'SYSTEM:echo {says}']{ports}
"
    )
}

/// The pod's network namespace entry.
fn netns_exists(pod: &str) -> bool {
    Path::new("/run/netns")
        .join(format!("default_{pod}"))
        .exists()
}

#[test]
fn cni_pods_get_addresses_reach_each_other_publish_host_ports_and_give_everything_back() {
    let Some(net) = Net::new(0) else { return };
    let Some(env) = Env::new() else { return };
    net.write_list(&[r#"{"type": "portmap", "capabilities": {"portMappings": true}}"#]);
    let id = std::process::id();
    let (a, b) = (format!("cni-a-{id}"), format!("cni-b-{id}"));
    let port = free_port();
    let file = env.file(
        "pods.yaml",
        &format!(
            "{}---\n{}",
            server(&a, "from-a", Some(port)),
            server(&b, "from-b", None)
        ),
    );
    net.ok(&env, &["apply", "-f", &file]);

    // status.podIP is the address in the plugins' result, in the network's subnet.
    let ip_a = net.pod_ip(&env, &a).expect("pod a has an IP");
    let ip_b = net.pod_ip(&env, &b).expect("pod b has an IP");
    assert!(net.in_subnet(ip_a) && net.in_subnet(ip_b), "{ip_a} {ip_b}");
    assert_ne!(ip_a, ip_b);
    let mut leased = net.leases();
    leased.sort();
    let mut ips = vec![ip_a, ip_b];
    ips.sort();
    assert_eq!(leased, ips, "host-local leased exactly the pods' addresses");
    let cached: Value = serde_json::from_str(
        &std::fs::read_to_string(env.state().join(format!("pods/default_{a}/cni.json")))
            .expect("the attachment is cached with the pod"),
    )
    .expect("json");
    assert_eq!(cached["netns"], format!("/run/netns/default_{a}"));
    assert!(
        cached["cniArgs"]
            .to_string()
            .contains(&format!("[\"K8S_POD_NAME\",\"{a}\"]")),
        "{cached}"
    );
    assert!(
        cached["result"]["ips"]
            .to_string()
            .contains(&ip_a.to_string()),
        "{cached}"
    );
    let wide = net.ok(&env, &["get", "pods", "-o", "wide"]);
    assert!(wide.contains(&ip_a.to_string()), "{wide}");
    assert_eq!(net.ports().len(), 2, "a veth per pod on the bridge");

    // describe names the network and CHECKs the attachment (pod b: portmap 1.1.1's CHECK
    // of a pod with hostPorts looks for IPv6 rules it never made, containernetworking/plugins
    // issue 819, so the CHECK is looked at on the pod without).
    let described = net.ok(&env, &["describe", "pod", &b]);
    assert!(
        described.contains(&format!("Network:      CNI network \"{}\"", net.name))
            && described.contains("10-test.conflist")
            && described.contains("CNI Check:    passed"),
        "{described}"
    );

    // The host reaches pod a at its address, and at its hostPort on 127.0.0.1 (portmap's
    // DNAT: podkit holds no socket of its own for it); pod b reaches pod a by its IP.
    assert_eq!(read_from(SocketAddr::from((ip_a, 7000))), "from-a\n");
    assert_eq!(
        read_from(SocketAddr::from((Ipv4Addr::LOCALHOST, port))),
        "from-a\n"
    );
    assert_eq!(net.port_rules().len(), 1, "{:?}", net.port_rules());
    assert!(
        TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok(),
        "podkit holds no socket of its own for a hostPort portmap publishes"
    );
    let reply = net.ok(
        &env,
        &[
            "exec",
            &b,
            "--",
            "socat",
            "-T5",
            "-",
            &format!("TCP:{ip_a}:7000"),
        ],
    );
    assert_eq!(reply, "from-a\n");

    // CHECK finds what was broken: pod b's interface taken away.
    let removed = Command::new("ip")
        .args(["-n", &format!("default_{b}"), "link", "del", "eth0"])
        .status()
        .expect("run ip");
    assert!(removed.success());
    let described = net.ok(&env, &["describe", "pod", &b]);
    assert!(
        described.contains("CNI Check:    failed: CNI plugin \"bridge\" failed CHECK"),
        "{described}"
    );

    // Deleted, the pods give back their addresses, veths, rules and namespaces.
    net.ok(&env, &["delete", "-f", &file]);
    assert!(net.leases().is_empty(), "{:?}", net.leases());
    assert!(net.ports().is_empty(), "{:?}", net.ports());
    assert!(net.port_rules().is_empty(), "{:?}", net.port_rules());
    assert!(!netns_exists(&a) && !netns_exists(&b));
    assert!(!env.state().join(format!("pods/default_{a}")).exists());
}

#[test]
fn cni_gc_runs_del_for_a_killed_supervisor() {
    let Some(net) = Net::new(1) else { return };
    let Some(env) = Env::new() else { return };
    net.write_list(&[r#"{"type": "portmap", "capabilities": {"portMappings": true}}"#]);
    let pod = format!("cni-kill-{}", std::process::id());
    let port = free_port();
    let file = env.file("pod.yaml", &server(&pod, "hi", Some(port)));
    net.ok(&env, &["apply", "-f", &file]);
    let ip = net.pod_ip(&env, &pod).expect("an IP");
    assert_eq!(
        read_from(SocketAddr::from((Ipv4Addr::LOCALHOST, port))),
        "hi\n"
    );
    let dir = env.state().join("pods").join(format!("default_{pod}"));
    // No other test's gc between the kill and this test's own.
    let gc = common::gc_lock();
    env.kill_pod_supervisor(&pod);
    assert_eq!(
        net.leases(),
        [ip],
        "the lease stays with a killed supervisor"
    );
    assert_eq!(net.ports().len(), 1);
    assert_eq!(net.port_rules().len(), 1);

    // gc runs the network's DEL from the cached attachment (without PODKIT_CNI_CONF_DIR).
    let said = env.ok(&["gc"]);
    drop(gc);
    assert!(
        said.contains(&format!("ran CNI DEL of network \"{}\"", net.name)),
        "{said}"
    );
    assert!(net.leases().is_empty(), "{:?}", net.leases());
    assert!(net.ports().is_empty(), "{:?}", net.ports());
    assert!(net.port_rules().is_empty(), "{:?}", net.port_rules());
    assert!(!netns_exists(&pod));
    assert!(!dir.exists());
}

#[test]
fn cni_errors_name_the_file_and_plugin_and_leave_nothing() {
    let Some(net) = Net::new(2) else { return };
    let Some(env) = Env::new() else { return };
    let pod = format!("cni-err-{}", std::process::id());
    let file = env.file("pod.yaml", &server(&pod, "hi", None));
    let fails = |want: &[&str]| {
        let out = net.podkit(&env, &["apply", "-f", &file]);
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "{said}");
        for want in want {
            assert!(said.contains(want), "wanted {want:?} in: {said}");
        }
        // Nothing of the pod is left.
        assert!(net.leases().is_empty(), "{:?}", net.leases());
        assert!(net.ports().is_empty(), "{:?}", net.ports());
        assert!(!netns_exists(&pod));
        let _ = net.podkit(&env, &["delete", "pod", &pod, "--grace-period", "0"]);
    };

    // A malformed list: the file and what is wrong.
    let bad = net.write(
        "10-test.conflist",
        r#"{"cniVersion": "1.0.0", "name": "x", "plugin": []}"#,
    );
    fails(&[&bad.display().to_string(), "no `plugins`"]);

    // A plugin that is not installed: named, with where it was looked for.
    net.write_list(&[r#"{"type": "no-such-plugin"}"#]);
    fails(&[
        "\"no-such-plugin\"",
        "/opt/cni/bin, /usr/lib/cni",
        "10-test.conflist",
    ]);

    // A plugin that fails ADD after bridge made the pod's veth and host-local leased its
    // address: its CNI error (code, msg) is shown with its name and file, and the DEL that
    // follows gives the address and veth back.
    net.write_list(&[
        r#"{"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.no_such_setting": "1"}}"#,
    ]);
    fails(&[
        "CNI plugin \"tuning\" failed ADD",
        &format!("network \"{}\"", net.name),
        "10-test.conflist",
        "no_such_setting",
    ]);
}

/// A DEL that fails when its pod ends is not forgotten with the pod's directory: its attachment
/// is kept under /run/podkit/cni, and `gc` runs DEL again until it succeeds (as libcni keeps
/// its cache until a DEL succeeds). The plugin that fails is a shell script chained after
/// Debian's bridge: it passes its prevResult on at ADD and refuses DEL while a flag file exists.
#[test]
fn a_failed_del_is_kept_for_gc_to_try_again() {
    use std::os::unix::fs::PermissionsExt;
    let Some(net) = Net::new(3) else { return };
    let Some(env) = Env::new() else { return };
    let bin = net.dir.path().join("bin");
    std::fs::create_dir_all(&bin).expect("bin dir");
    let flag = net.dir.path().join("refuse-del");
    std::fs::write(&flag, "").expect("flag");
    let script = bin.join("flaky");
    std::fs::write(
        &script,
        format!(
            r#"#!/bin/sh
input=$(cat)
case "$CNI_COMMAND" in
ADD) printf '%s' "$input" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["prevResult"]))' ;;
DEL) if [ -e {flag} ]; then echo '{{"cniVersion":"1.0.0","code":11,"msg":"flaky: DEL refused"}}'; exit 1; fi ;;
VERSION) echo '{{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}}' ;;
esac
"#,
            flag = flag.display()
        ),
    )
    .expect("script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    net.write_list(&[r#"{"type": "flaky"}"#]);
    let pod = format!("cni-flaky-{}", std::process::id());
    let file = env.file("pod.yaml", &server(&pod, "hi", None));
    let podkit = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_podkit"))
            .args(args)
            .env("PODKIT_STORAGE", env.storage())
            .env("PODKIT_ROOT", env.state())
            .env("PODKIT_CNI_CONF_DIR", net.conf_dir())
            .env(
                "PODKIT_CNI_BIN_DIR",
                format!("{}:{DEBIAN_PLUGINS}", bin.display()),
            )
            .output()
            .expect("run podkit");
        assert!(
            out.status.success(),
            "podkit {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    podkit(&["apply", "-f", &file]);
    let ip = net.pod_ip(&env, &pod).expect("an IP");
    assert!(net.in_subnet(ip), "{ip}");
    podkit(&["delete", "pod", &pod]);
    // The record the failed DEL left, named by the pod's container ID.
    let kept = || -> Vec<PathBuf> {
        std::fs::read_dir("/run/podkit/cni")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                std::fs::read_to_string(p).is_ok_and(|t| t.contains(&format!("\"{}\"", net.name)))
            })
            .collect()
    };
    assert_eq!(kept().len(), 1, "kept for gc");
    // The other plugins got their DEL all the same.
    assert!(net.leases().is_empty(), "{:?}", net.leases());
    // Still refused: kept again.
    let said = env.ok(&["gc"]);
    assert!(
        said.contains("failed again") && said.contains("flaky: DEL refused"),
        "{said}"
    );
    assert_eq!(kept().len(), 1);
    // Accepted: gone (another test's gc may have been first).
    std::fs::remove_file(&flag).expect("flag");
    env.ok(&["gc"]);
    assert!(kept().is_empty(), "{:?}", kept());
}

/// A dual-stack network (host-local with an IPv4 and an IPv6 range): the pod gets both
/// addresses, IPv4 first as kubelet orders them on an IPv4 host: `status.podIP` the IPv4
/// one, `status.podIPs` both, the downward API's `status.podIPs` both joined by a comma,
/// describe's IPs both; the pod is reached at each, and gives both back.
#[test]
fn a_dual_stack_cni_network_gives_the_pod_both_addresses() {
    let Some(net) = Net::new(4) else { return };
    let Some(env) = Env::new() else { return };
    // The bridge plugin turns on the host's IPv6 forwarding for an IPv6 range; put back.
    let _forwarding = Sysctl::keep("/proc/sys/net/ipv6/conf/all/forwarding");
    net.write_ranges(&[net.subnet(), net.subnet6()], &[]);
    let pod = format!("cni-dual-{}", std::process::id());
    let file = env.file(
        "dual.yaml",
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
    command: [socat, 'TCP6-LISTEN:7000,fork,reuseaddr', 'SYSTEM:echo $POD_IPS']
    env:
    - name: POD_IPS
      valueFrom: {{fieldRef: {{fieldPath: status.podIPs}}}}
"
        ),
    );
    net.ok(&env, &["apply", "-f", &file]);

    let json: Value =
        serde_json::from_str(&net.ok(&env, &["get", "pod", &pod, "-o", "json"])).expect("json");
    let status = &json["status"];
    let ips: Vec<std::net::IpAddr> = status["podIPs"]
        .as_array()
        .expect("podIPs")
        .iter()
        .map(|ip| ip["ip"].as_str().expect("ip").parse().expect("an address"))
        .collect();
    let [std::net::IpAddr::V4(v4), std::net::IpAddr::V6(v6)] = ips[..] else {
        panic!("an IPv4 then an IPv6 address: {status}");
    };
    assert!(net.in_subnet(v4), "{v4}");
    assert!(net.in_subnet6(v6), "{v6} in {}", net.subnet6());
    assert_eq!(status["podIP"], v4.to_string());
    let described = net.ok(&env, &["describe", "pod", &pod]);
    assert!(
        described.contains(&format!(
            "IP:           {v4}\nIPs:\n  IP:  {v4}\n  IP:  {v6}\n"
        )),
        "{described}"
    );

    // Reached at each address; the app read both from the downward API.
    let says = format!("{v4},{v6}\n");
    assert_eq!(read_from(SocketAddr::from((v4, 7000))), says);
    assert_eq!(read_from(SocketAddr::from((v6, 7000))), says);

    net.ok(&env, &["delete", "-f", &file]);
    let leased: Vec<std::net::IpAddr> = std::fs::read_dir(net.leases_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    assert!(leased.is_empty(), "{leased:?}");
    assert!(net.ports().is_empty(), "{:?}", net.ports());
    assert!(!netns_exists(&pod));
}
