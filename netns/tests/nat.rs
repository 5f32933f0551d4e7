//! Pods' NAT against the real kernel: masquerade and hostPorts in an nftables table, reached
//! from the host (at 127.0.0.1 and at its own addresses), from other pods, from an external
//! client and from the pod itself; Services' cluster IPs, reached from the host and from pods.
//!
//! Network rule (DESIGN.md): nothing here touches the machine's own network namespace, its
//! links or its nftables. Each test makes a namespace that plays "the host" (the bridge and
//! the table go there), pods behind its bridge, and an "external client" namespace joined
//! to the host by a veth on 198.18.0.0/30 (RFC 2544's test range); traffic goes only to
//! addresses inside those namespaces. The `Pod` guards delete every namespace, and with it
//! every link and table, when the test ends, pass or fail. Needs root (CI runs as root) and
//! Debian's `nftables` package (`nft`).

mod common;
use common::{Pod, pod};

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use netns::{Bridge, Error, HostPort, Namespace, Namespaces, Nat, Protocol, ServicePort};

const TIMEOUT: Duration = Duration::from_secs(5);

/// The host's address towards the external client, and the client's.
const HOST_EXT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const EXT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 90, 0, 1);
const POD_A: Ipv4Addr = Ipv4Addr::new(10, 90, 0, 2);
const POD_B: Ipv4Addr = Ipv4Addr::new(10, 90, 0, 3);
const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

#[tokio::test]
async fn a_tcp_host_port_reaches_the_pod_from_everywhere() {
    let Some(lab) = Lab::create("tcp").await else {
        return;
    };
    let server = TcpServer::start(lab.a.ns().net(), 80);
    lab.nat
        .publish("pod-a", POD_A, &[HostPort::new(Protocol::Tcp, 8080, 80)])
        .expect("publish");

    // From the host itself: at 127.0.0.1 (masqueraded to the bridge's address, which is
    // what lets the answer find its way back), at its address on the bridge and at its
    // address towards the outside.
    assert_eq!(lab.host_tcp(LOCALHOST, 8080), GATEWAY);
    assert_eq!(lab.host_tcp(GATEWAY, 8080), GATEWAY);
    assert_eq!(lab.host_tcp(HOST_EXT, 8080), HOST_EXT);
    // From another pod on the bridge, through either address of the host: masqueraded, or
    // the pod's answer would go straight back over the bridge, un-NATed.
    assert_eq!(tcp(lab.b.ns().net(), GATEWAY, 8080), GATEWAY);
    assert_eq!(tcp(lab.b.ns().net(), HOST_EXT, 8080), GATEWAY);
    // From outside the host: the pod sees the client's own address.
    assert_eq!(tcp(lab.ext.ns().net(), HOST_EXT, 8080), EXT);
    // Hairpin: the pod through its own hostPort.
    assert_eq!(tcp(lab.a.ns().net(), GATEWAY, 8080), GATEWAY);
    assert_eq!(tcp(lab.a.ns().net(), HOST_EXT, 8080), GATEWAY);
    // Another port of the host is no hostPort: nothing listens there.
    assert_refused(lab.ext.ns().net(), HOST_EXT, 8081);
    server.stop();

    // Masquerade: a pod's traffic leaving the host has the host's address.
    let outside = TcpServer::start(lab.ext.ns().net(), 7000);
    assert_eq!(tcp(lab.a.ns().net(), EXT, 7000), HOST_EXT);
    outside.stop();

    // The rule that keeps route_localnet safe: nothing from outside reaches 127.0.0.0/8.
    let ruleset = nft(lab.host.ns().net(), &["list", "table", "ip", "podkit"]);
    assert!(
        ruleset.contains("iifname != \"lo\" ip daddr 127.0.0.0/8 drop"),
        "{ruleset}"
    );
}

#[tokio::test]
async fn a_udp_host_port_reaches_the_pod() {
    let Some(lab) = Lab::create("udp").await else {
        return;
    };
    let server = UdpServer::start(lab.a.ns().net(), 53);
    lab.nat
        .publish("pod-a", POD_A, &[HostPort::new(Protocol::Udp, 5353, 53)])
        .expect("publish");
    assert_eq!(udp(lab.ext.ns().net(), HOST_EXT, 5353), EXT);
    assert_eq!(udp(lab.b.ns().net(), GATEWAY, 5353), GATEWAY);
    assert_eq!(udp(lab.host.ns().net(), HOST_EXT, 5353), HOST_EXT);
    assert_eq!(udp(lab.host.ns().net(), LOCALHOST, 5353), GATEWAY);
    // The same port number over TCP is not published.
    assert_refused(lab.ext.ns().net(), HOST_EXT, 5353);
    server.stop();
}

#[tokio::test]
async fn a_host_ip_restricts_the_mapping_to_that_address() {
    let Some(lab) = Lab::create("hostip").await else {
        return;
    };
    let server = TcpServer::start(lab.b.ns().net(), 80);
    let port = HostPort::new(Protocol::Tcp, 9090, 80).on(HOST_EXT);
    lab.nat.publish("pod-b", POD_B, &[port]).expect("publish");
    assert_eq!(tcp(lab.ext.ns().net(), HOST_EXT, 9090), EXT);
    assert_eq!(lab.host_tcp(HOST_EXT, 9090), HOST_EXT);
    assert_eq!(tcp(lab.a.ns().net(), HOST_EXT, 9090), GATEWAY);
    // The host's other addresses do not have it.
    assert_refused(lab.a.ns().net(), GATEWAY, 9090);
    assert_refused(lab.host.ns().net(), LOCALHOST, 9090);

    // The same port on every address can be published beside it (by another pod); the
    // mapping with the host IP wins on its address.
    let other = TcpServer::start(lab.a.ns().net(), 81);
    lab.nat
        .publish("pod-a", POD_A, &[HostPort::new(Protocol::Tcp, 9090, 81)])
        .expect("publish on every address");
    assert_eq!(tcp(lab.ext.ns().net(), HOST_EXT, 9090), EXT);
    assert_eq!(server.served(), 4);
    assert_eq!(lab.host_tcp(GATEWAY, 9090), GATEWAY);
    assert_eq!(other.served(), 1);
    server.stop();
    other.stop();
}

#[tokio::test]
async fn unpublish_removes_exactly_one_owners_mappings() {
    let Some(lab) = Lab::create("unpublish").await else {
        return;
    };
    let (server_a, server_b) = (
        TcpServer::start(lab.a.ns().net(), 80),
        TcpServer::start(lab.b.ns().net(), 80),
    );
    let owner_a = "/run/podkit/pods/a";
    // An owner as long as allowed: its comment just fits the kernel's user data.
    let owner_b = format!("/run/podkit/pods/{}", "b".repeat(253 - 17));
    let ports_a = [
        HostPort::new(Protocol::Tcp, 8080, 80),
        HostPort::new(Protocol::Udp, 8080, 80),
        HostPort::new(Protocol::Tcp, 8443, 80).on(HOST_EXT),
    ];
    let ports_b = [HostPort::new(Protocol::Tcp, 9080, 80)];
    lab.nat
        .publish(owner_a, POD_A, &ports_a)
        .expect("publish a");
    lab.nat
        .publish(&owner_b, POD_B, &ports_b)
        .expect("publish b");
    assert_eq!(
        lab.nat.owners().expect("owners"),
        vec![owner_a.to_owned(), owner_b.clone()]
    );
    let mut published = lab.nat.published().expect("published");
    published.sort_by_key(|p| (p.port.host_port, p.port.protocol.to_string()));
    let listed: Vec<_> = published
        .iter()
        .map(|p| (p.owner.as_str(), p.pod_ip, p.port))
        .collect();
    assert_eq!(
        listed,
        vec![
            (owner_a, POD_A, ports_a[0]),
            (owner_a, POD_A, ports_a[1]),
            (owner_a, POD_A, ports_a[2]),
            (owner_b.as_str(), POD_B, ports_b[0]),
        ]
    );

    // Publishing again what an owner holds is no error; a port another owner holds is
    // refused, naming the holder, and nothing of the request is published.
    lab.nat
        .publish(owner_a, POD_A, &ports_a)
        .expect("publish a again");
    let err = lab
        .nat
        .publish(
            "pod-c",
            Ipv4Addr::new(10, 90, 0, 4),
            &[HostPort::new(Protocol::Tcp, 7070, 80), ports_b[0]],
        )
        .expect_err("port taken");
    assert!(
        matches!(&err, Error::PortInUse { port, holder, .. } if port == "9080/tcp" && *holder == owner_b),
        "{err}"
    );
    assert!(err.to_string().contains("9080/tcp"), "{err}");
    assert_eq!(lab.nat.published().expect("published").len(), 4);
    assert_eq!(lab.nat.owners().expect("owners").len(), 2);

    assert_eq!(tcp(lab.ext.ns().net(), HOST_EXT, 8080), EXT);
    assert!(lab.nat.unpublish(owner_a).expect("unpublish a"));
    assert_refused(lab.ext.ns().net(), HOST_EXT, 8080);
    assert_refused(lab.ext.ns().net(), HOST_EXT, 8443);
    assert_eq!(tcp(lab.ext.ns().net(), HOST_EXT, 9080), EXT);
    assert_eq!(lab.nat.owners().expect("owners"), vec![owner_b.clone()]);
    assert!(!lab.nat.unpublish(owner_a).expect("again: nothing left"));
    assert!(!lab.nat.unpublish("never-published").expect("nobody"));
    // A's ports are free for another owner now.
    lab.nat
        .publish("pod-c", POD_B, &[HostPort::new(Protocol::Tcp, 8080, 80)])
        .expect("8080 is free");
    assert_eq!(tcp(lab.ext.ns().net(), HOST_EXT, 8080), EXT);

    // remove() takes the whole table, and every mapping with it.
    assert!(lab.nat.remove().expect("remove"));
    let tables = nft(lab.host.ns().net(), &["list", "tables"]);
    assert!(tables.trim().is_empty(), "{tables}");
    assert!(lab.nat.owners().expect("owners").is_empty());
    assert!(lab.nat.published().expect("published").is_empty());
    assert!(!lab.nat.unpublish(&owner_b).expect("no table"));
    assert!(!lab.nat.remove().expect("remove again"));
    let err = lab
        .nat
        .publish(owner_a, POD_A, &ports_a)
        .expect_err("no table");
    assert!(matches!(err, Error::NatNotReady { .. }), "{err}");
    assert!(err.to_string().contains("Nat::ensure"), "{err}");
    server_a.stop();
    server_b.stop();
}

#[tokio::test]
async fn ensure_is_idempotent_sets_sysctls_in_its_namespace_only_and_keeps_mappings() {
    let Some(lab) = Lab::create("ensure").await else {
        return;
    };
    let own_forward = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").expect("read");
    let sysctl = |path: &'static str| {
        lab.host
            .ns()
            .net()
            .run(move || std::fs::read_to_string(path).expect("read sysctl"))
            .expect("run in the host namespace")
    };
    assert_eq!(sysctl("/proc/sys/net/ipv4/ip_forward").trim(), "1");
    assert_eq!(
        sysctl("/proc/sys/net/ipv4/conf/podkit0/route_localnet").trim(),
        "1"
    );
    // The test process's own namespace is untouched.
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").expect("read"),
        own_forward
    );

    let server = TcpServer::start(lab.a.ns().net(), 80);
    let port = HostPort::new(Protocol::Tcp, 8080, 80);
    lab.nat.publish("pod-a", POD_A, &[port]).expect("publish");
    let before = nft(lab.host.ns().net(), &["list", "table", "ip", "podkit"]);
    lab.nat
        .ensure(Bridge::DEFAULT_SUBNET, "podkit0")
        .expect("ensure again");
    assert_eq!(
        nft(lab.host.ns().net(), &["list", "table", "ip", "podkit"]),
        before
    );
    // Other rules (another subnet) replace the old ones and keep the mappings.
    lab.nat
        .ensure("10.90.0.0/17".parse().expect("subnet"), "podkit0")
        .expect("ensure with another subnet");
    let after = nft(lab.host.ns().net(), &["list", "table", "ip", "podkit"]);
    assert!(
        after.contains("10.90.0.0/17") && !after.contains("10.90.0.0/16"),
        "{after}"
    );
    assert_eq!(lab.nat.published().expect("published").len(), 1);
    assert_eq!(tcp(lab.ext.ns().net(), HOST_EXT, 8080), EXT);
    server.stop();

    // Other tables are never touched: one of someone else's survives remove().
    nft(lab.host.ns().net(), &["add", "table", "ip", "someone-else"]);
    assert!(lab.nat.remove().expect("remove"));
    let tables = nft(lab.host.ns().net(), &["list", "tables"]);
    assert_eq!(tables.trim(), "table ip someone-else");

    // A table name of its own sits beside it.
    let other = Nat::open(lab.host.ns().net())
        .expect("open")
        .with_table("podkit-test")
        .expect("table name");
    other
        .ensure(Bridge::DEFAULT_SUBNET, "podkit0")
        .expect("ensure");
    assert_eq!(other.table(), "podkit-test");
    assert!(other.remove().expect("remove"));

    // No bridge of that name: the sysctl cannot be set.
    let err = lab
        .nat
        .ensure(Bridge::DEFAULT_SUBNET, "nosuchbridge")
        .expect_err("no bridge");
    assert!(
        matches!(&err, Error::LinkNotFound { name, .. } if name == "nosuchbridge"),
        "{err}"
    );
}

/// A dual stack pod's IPv6 traffic leaving the host is masqueraded to the host's address by
/// the `ip6` table of the same name, once the host forwards IPv6 (which `ensure_ipv6` says,
/// and leaves to the host's admin); `remove` takes both tables.
#[tokio::test]
async fn ipv6_traffic_leaving_the_host_is_masqueraded() {
    let Some(host) = Pod::create("nat6-host").await else {
        return;
    };
    let (a, ext) = (pod("nat6-a").await, pod("nat6-ext").await);
    let net = host.netlink().await;
    let bridge = Bridge::default()
        .with_ipv6(Bridge::DEFAULT_SUBNET6)
        .expect("ipv6");
    bridge.ensure(&net).await.expect("bridge");
    let pod_a6: Ipv6Addr = "fd90:706f:646b::2".parse().expect("address");
    bridge
        .attach_dual_stack(&net, a.ns().net(), "veth-a", POD_A, Some(pod_a6))
        .await
        .expect("attach a");
    // The external client on 2001:db8:18::/64 (documentation range) behind ext0.
    let (host_ext6, ext6): (Ipv6Addr, Ipv6Addr) = (
        "2001:db8:18::1".parse().expect("address"),
        "2001:db8:18::2".parse().expect("address"),
    );
    net.add_veth("ext0", "eth0", ext.ns().net())
        .await
        .expect("veth to the external client");
    net.link_up("ext0").await.expect("ext0 up");
    net.add_address("ext0", IpAddr::V6(host_ext6), 64)
        .await
        .expect("ext0 address");
    let outside = ext.netlink().await;
    outside.link_up("eth0").await.expect("eth0 up");
    outside
        .add_address("eth0", IpAddr::V6(ext6), 64)
        .await
        .expect("eth0 address");

    let nat = Nat::open(host.ns().net()).expect("open");
    nat.ensure(bridge.subnet(), bridge.name()).expect("ensure");
    let forwarding = |value: &'static str| {
        host.ns()
            .net()
            .run(move || {
                std::fs::write("/proc/sys/net/ipv6/conf/all/forwarding", value).expect("sysctl")
            })
            .expect("run in the host namespace");
    };
    // A new namespace does not forward IPv6, and ensure_ipv6 leaves it so, saying it.
    assert!(
        !nat.ensure_ipv6(Bridge::DEFAULT_SUBNET6, "podkit0")
            .expect("ensure_ipv6")
    );
    let table = nft(host.ns().net(), &["list", "table", "ip6", "podkit"]);
    assert!(
        table.contains("ip6 saddr fd90:706f:646b::/64 ip6 daddr != fd90:706f:646b::/64 masquerade"),
        "{table}"
    );
    forwarding("1");
    assert!(
        nat.ensure_ipv6(Bridge::DEFAULT_SUBNET6, "podkit0")
            .expect("again")
    );
    assert_eq!(
        nft(host.ns().net(), &["list", "table", "ip6", "podkit"]),
        table,
        "unchanged"
    );

    // The external server sees the host's address, not the pod's.
    let listener = ext
        .ns()
        .net()
        .listen_tcp(SocketAddr::new(IpAddr::V6(ext6), 0))
        .expect("listen");
    listener.set_nonblocking(false).expect("blocking");
    let server = listener.local_addr().expect("addr");
    let accepted = std::thread::spawn(move || -> std::io::Result<SocketAddr> {
        let (mut conn, peer) = listener.accept()?;
        conn.write_all(b"hi")?;
        Ok(peer)
    });
    let mut conn = a.ns().net().connect_tcp(server, TIMEOUT).expect("connect");
    let mut reply = String::new();
    conn.read_to_string(&mut reply).expect("read");
    assert_eq!(reply, "hi");
    let peer = accepted.join().expect("thread").expect("accept");
    assert_eq!(peer.ip(), IpAddr::V6(host_ext6), "masqueraded");

    // hostPorts to IPv6 clients: the external client at the host's address, and the host's
    // own client at that address, reach the pod's IPv6 address; the app sees the external
    // client's own address.
    nat.publish("pod-a", POD_A, &[HostPort::new(Protocol::Tcp, 8080, 80)])
        .expect("publish");
    nat.publish_ipv6("pod-a", pod_a6, &[HostPort::new(Protocol::Tcp, 8080, 80)])
        .expect("publish IPv6");
    nat.publish_ipv6("pod-a", pod_a6, &[HostPort::new(Protocol::Tcp, 8080, 80)])
        .expect("the same again");
    let app = a
        .ns()
        .net()
        .listen_tcp(SocketAddr::new(IpAddr::V6(pod_a6), 80))
        .expect("listen");
    app.set_nonblocking(false).expect("blocking");
    let answering = std::thread::spawn(move || -> std::io::Result<()> {
        for _ in 0..2 {
            let (mut conn, peer) = app.accept()?;
            write!(conn, "{}", peer.ip())?;
        }
        Ok(())
    });
    let ask = |ns: &Namespace| {
        let mut conn = ns
            .connect_tcp(SocketAddr::new(IpAddr::V6(host_ext6), 8080), TIMEOUT)
            .expect("connect to the hostPort");
        let mut seen = String::new();
        conn.read_to_string(&mut seen).expect("read");
        seen.parse::<IpAddr>().expect("an address")
    };
    assert_eq!(
        ask(ext.ns().net()),
        IpAddr::V6(ext6),
        "the client's own address"
    );
    assert_eq!(
        ask(host.ns().net()),
        IpAddr::V6(host_ext6),
        "the host's own client"
    );
    answering.join().expect("thread").expect("answered");
    // Another owner's port is refused, naming its holder; unpublish takes the IPv6 mapping.
    let err = nat
        .publish_ipv6(
            "pod-b",
            "fd90:706f:646b::3".parse().expect("ip"),
            &[HostPort::new(Protocol::Tcp, 8080, 81)],
        )
        .expect_err("in use");
    assert!(
        matches!(&err, Error::PortInUse { holder, .. } if holder == "pod-a"),
        "{err}"
    );
    let map = |ns: &Namespace| nft(ns, &["list", "map", "ip6", "podkit", "hostports"]);
    assert!(
        map(host.ns().net()).contains("fd90:706f:646b::2 . 80"),
        "{}",
        map(host.ns().net())
    );
    assert!(nat.unpublish("pod-a").expect("unpublish"));
    assert!(
        !map(host.ns().net()).contains("fd90:706f:646b::2"),
        "{}",
        map(host.ns().net())
    );
    forwarding("0");

    // Both tables go with remove.
    assert!(nat.remove().expect("remove"));
    assert_eq!(nft(host.ns().net(), &["list", "tables"]).trim(), "");
    assert!(!nat.remove().expect("nothing left"));
}

#[tokio::test]
async fn bad_input_is_refused_before_anything_changes() {
    let Some(lab) = Lab::create("input").await else {
        return;
    };
    let good = HostPort::new(Protocol::Tcp, 8080, 80);
    for owner in ["", "two words", "tab\there", &"x".repeat(254)] {
        let err = lab
            .nat
            .publish(owner, POD_A, &[good])
            .expect_err("bad owner");
        assert!(matches!(err, Error::InvalidOwner { .. }), "{err}");
        let err = lab.nat.unpublish(owner).expect_err("bad owner");
        assert!(matches!(err, Error::InvalidOwner { .. }), "{err}");
    }
    for (ports, says) in [
        (vec![HostPort::new(Protocol::Tcp, 0, 80)], "host port"),
        (vec![HostPort::new(Protocol::Udp, 53, 0)], "container port"),
        (
            vec![good.on(Ipv4Addr::new(224, 0, 0, 1))],
            "multicast or broadcast",
        ),
        (
            vec![good, HostPort::new(Protocol::Tcp, 8080, 81)],
            "mapped twice",
        ),
    ] {
        let err = lab
            .nat
            .publish("pod-a", POD_A, &ports)
            .expect_err("bad mapping");
        assert!(matches!(err, Error::InvalidHostPort { .. }), "{err}");
        assert!(err.to_string().contains(says), "{err}");
        assert!(err.to_string().contains("pod-a"), "{err}");
    }
    assert!(lab.nat.owners().expect("owners").is_empty());
    // No mappings is nothing to publish.
    lab.nat.publish("pod-a", POD_A, &[]).expect("nothing");
    assert!(lab.nat.owners().expect("owners").is_empty());

    for name in ["", "1st", "has space", "semi;colon", &"t".repeat(65)] {
        let err = Nat::open(lab.host.ns().net())
            .expect("open")
            .with_table(name)
            .expect_err("bad table name");
        assert!(matches!(err, Error::InvalidTableName { .. }), "{err}");
    }
    for bridge in ["bad\"name", "a-name-too-long-0"] {
        let err = lab
            .nat
            .ensure(Bridge::DEFAULT_SUBNET, bridge)
            .expect_err("bad bridge name");
        assert!(matches!(err, Error::InvalidLinkName { .. }), "{err}");
    }
    let err = Nat::open(
        lab.a
            .ns()
            .namespaces()
            .get(netns::NsKind::Uts)
            .expect("uts"),
    )
    .expect_err("not a network namespace");
    assert!(matches!(err, Error::WrongKind { .. }), "{err}");
}

/// The host (bridge, table, a veth to the external client), two pods on its bridge, and
/// the external client.
struct Lab {
    nat: Nat,
    // Dropped after `nat` (fields drop in order), pods before the host.
    a: Pod,
    b: Pod,
    ext: Pod,
    host: Pod,
}

impl Lab {
    /// `None` when not root (outside CI): the test is skipped.
    async fn create(name: &str) -> Option<Lab> {
        let host = Pod::create(&format!("{name}-host")).await?;
        let (a, b, ext) = (
            pod(&format!("{name}-a")).await,
            pod(&format!("{name}-b")).await,
            pod(&format!("{name}-ext")).await,
        );
        let net = host.netlink().await;
        let bridge = Bridge::default();
        bridge.ensure(&net).await.expect("bridge");
        bridge
            .attach(&net, a.ns().net(), "veth-a", POD_A)
            .await
            .expect("attach a");
        bridge
            .attach(&net, b.ns().net(), "veth-b", POD_B)
            .await
            .expect("attach b");

        join_external(&net, &ext).await;

        let nat = Nat::open(host.ns().net()).expect("open");
        nat.ensure(bridge.subnet(), bridge.name()).expect("ensure");
        Some(Lab {
            nat,
            a,
            b,
            ext,
            host,
        })
    }

    fn host_tcp(&self, ip: Ipv4Addr, port: u16) -> Ipv4Addr {
        tcp(self.host.ns().net(), ip, port)
    }
}

/// Joins the external client `ext` to the host (`net`) by a veth: `ext0` at [`HOST_EXT`] on
/// the host, `eth0` at [`EXT`] in the client.
async fn join_external(net: &netns::Netlink, ext: &Pod) {
    net.add_veth("ext0", "eth0", ext.ns().net())
        .await
        .expect("veth to the external client");
    net.link_up("ext0").await.expect("ext0 up");
    net.add_address("ext0", IpAddr::V4(HOST_EXT), 30)
        .await
        .expect("ext0 address");
    let outside = ext.netlink().await;
    outside.link_up("eth0").await.expect("eth0 up");
    outside
        .add_address("eth0", IpAddr::V4(EXT), 30)
        .await
        .expect("eth0 address");
}

/// A TCP server in a namespace that answers each connection with the address it saw the
/// client come from; stopped by `stop` (or when the test ends).
struct TcpServer {
    stop: Arc<AtomicBool>,
    served: Arc<AtomicU32>,
    thread: Option<JoinHandle<()>>,
}

/// What a [`TcpServer`] answers a connection with.
enum Answer {
    /// The address it saw the client come from.
    Peer,
    /// Its name.
    Name(String),
    /// Its name and the client's address, as `a 198.18.0.2`.
    NameAndPeer(String),
}

impl TcpServer {
    fn start(ns: &Namespace, port: u16) -> Self {
        Self::answering(ns, port, Answer::Peer)
    }

    /// A server that answers each connection with `name` instead.
    fn named(ns: &Namespace, port: u16, name: &str) -> Self {
        Self::answering(ns, port, Answer::Name(name.to_owned()))
    }

    /// A server that answers each connection with `name` and the client's address.
    fn telling(ns: &Namespace, port: u16, name: &str) -> Self {
        Self::answering(ns, port, Answer::NameAndPeer(name.to_owned()))
    }

    fn answering(ns: &Namespace, port: u16, answer: Answer) -> Self {
        let listener: TcpListener = ns
            .listen_tcp(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port))
            .expect("listen");
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicU32::new(0));
        let (stopping, counter) = (Arc::clone(&stop), Arc::clone(&served));
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut conn, peer)) => {
                        counter.fetch_add(1, Ordering::Relaxed);
                        let _ = conn.set_nonblocking(false);
                        let _ = conn.set_read_timeout(Some(TIMEOUT));
                        let mut buf = [0; 4];
                        if conn.read_exact(&mut buf).is_ok() {
                            let _ = match &answer {
                                Answer::Peer => write!(conn, "{}", peer.ip()),
                                Answer::Name(name) => conn.write_all(name.as_bytes()),
                                Answer::NameAndPeer(name) => write!(conn, "{name} {}", peer.ip()),
                            };
                        }
                    }
                    Err(err) if err.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => return,
                }
            }
        });
        TcpServer {
            stop,
            served,
            thread: Some(thread),
        }
    }

    fn served(&self) -> u32 {
        self.served.load(Ordering::Relaxed)
    }

    fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.halt();
    }
}

/// A UDP server in a namespace that answers each datagram with the sender's address.
struct UdpServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpServer {
    fn start(ns: &Namespace, port: u16) -> Self {
        let socket: UdpSocket = ns
            .bind_udp(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port))
            .expect("bind");
        socket.set_nonblocking(false).expect("blocking");
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .expect("timeout");
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut buf = [0; 64];
            while !stopping.load(Ordering::Relaxed) {
                if let Ok((_, peer)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(peer.ip().to_string().as_bytes(), peer);
                }
            }
        });
        UdpServer {
            stop,
            thread: Some(thread),
        }
    }

    fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for UdpServer {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Connects from inside `ns` to `ip:port` and returns the address the server saw.
fn tcp(ns: &Namespace, ip: Ipv4Addr, port: u16) -> Ipv4Addr {
    let addr = SocketAddr::new(IpAddr::V4(ip), port);
    let mut conn = ns
        .connect_tcp(addr, TIMEOUT)
        .unwrap_or_else(|err| panic!("connect to {addr} from {:?}: {err}", ns.path()));
    conn.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    conn.write_all(b"ping").expect("write");
    let mut reply = String::new();
    conn.read_to_string(&mut reply).expect("read");
    reply
        .parse()
        .unwrap_or_else(|_| panic!("{addr} answered {reply:?}"))
}

/// Checks that nothing answers at `ip:port` from `ns`: the host itself refuses it.
fn assert_refused(ns: &Namespace, ip: Ipv4Addr, port: u16) {
    let addr = SocketAddr::new(IpAddr::V4(ip), port);
    match ns.connect_tcp(addr, TIMEOUT) {
        Err(Error::Connect { source, .. }) if source.kind() == ErrorKind::ConnectionRefused => {}
        other => panic!(
            "{addr} from {:?}: expected refused, got {other:?}",
            ns.path()
        ),
    }
}

/// Sends a datagram from inside `ns` to `ip:port` and returns the address the server saw.
/// UDP may lose a datagram: tries a few times.
fn udp(ns: &Namespace, ip: Ipv4Addr, port: u16) -> Ipv4Addr {
    let socket = ns
        .bind_udp(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0))
        .expect("bind");
    socket.set_nonblocking(false).expect("blocking");
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let addr = SocketAddr::new(IpAddr::V4(ip), port);
    let mut buf = [0; 64];
    for _ in 0..10 {
        socket.send_to(b"ping", addr).expect("send");
        if let Ok((len, _)) = socket.recv_from(&mut buf) {
            let reply = String::from_utf8_lossy(&buf[..len]).into_owned();
            return reply
                .parse()
                .unwrap_or_else(|_| panic!("{addr} answered {reply:?}"));
        }
    }
    panic!("no answer from {addr} over UDP from {:?}", ns.path());
}

/// Runs `nft ARGS` inside `ns` and returns what it printed.
fn nft(ns: &Namespace, args: &[&str]) -> String {
    let mut cmd = Command::new("nft");
    cmd.args(args);
    Namespaces::new([ns.clone()]).command(&mut cmd);
    let output = cmd.output().expect("run nft (install Debian's nftables)");
    assert!(
        output.status.success(),
        "nft {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A Service's cluster IP, in the range the host routes on its bridge.
const CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const POD_C: Ipv4Addr = Ipv4Addr::new(10, 90, 0, 4);
const POD_D: Ipv4Addr = Ipv4Addr::new(10, 90, 0, 5);

#[tokio::test]
async fn a_service_spreads_connections_over_its_endpoints_and_refuses_without_any() {
    let Some(lab) = ServiceLab::create("svc").await else {
        return;
    };
    let servers: Vec<TcpServer> = [("a", &lab.a), ("b", &lab.b), ("c", &lab.c)]
        .into_iter()
        .map(|(name, pod)| TcpServer::named(pod.ns().net(), 8080, name))
        .collect();
    let web = |endpoints: &[Ipv4Addr]| {
        ServicePort::new(Protocol::Tcp, 80, endpoints.iter().map(|&ip| (ip, 8080)))
    };
    lab.nat
        .set_service("default/web", CLUSTER_IP, &[web(&[POD_A, POD_B, POD_C])])
        .expect("set service");

    // From the host (routed on the bridge) and from a pod behind it (its default route,
    // then DNAT on the host, then back out the bridge, masqueraded), 100 connections each:
    // every one answered, by each endpoint some of the time.
    for client in [lab.host.ns().net(), lab.d.ns().net()] {
        let answers = names(client, 100);
        for name in ["a", "b", "c"] {
            let count = answers.iter().filter(|n| *n == name).count();
            // Picked at random: fewer than 5 of 100 for one of three is ~1e-10 likely.
            assert!(
                count >= 5,
                "{name} answered {count} of 100 from {client:?}: {answers:?}"
            );
        }
        assert_eq!(answers.len(), 100);
    }
    // An endpoint reaching the Service lands on itself sometimes ("hairpin"): answered too.
    assert_eq!(names(lab.a.ns().net(), 20).len(), 20);

    // One endpoint removed: no new connection reaches it.
    lab.nat
        .set_service("default/web", CLUSTER_IP, &[web(&[POD_A, POD_B])])
        .expect("set service without c");
    let served_c = servers[2].served();
    for client in [lab.host.ns().net(), lab.d.ns().net()] {
        let answers = names(client, 50);
        assert!(answers.iter().all(|n| n != "c"), "{answers:?}");
        assert!(answers.iter().any(|n| n == "a") && answers.iter().any(|n| n == "b"));
    }
    assert_eq!(servers[2].served(), served_c);

    // No endpoints: refused at once (a reset), from the host and from a pod, not left to
    // time out.
    lab.nat
        .set_service("default/web", CLUSTER_IP, &[web(&[])])
        .expect("set service without endpoints");
    for client in [lab.host.ns().net(), lab.d.ns().net()] {
        assert_refused_at_once(client, CLUSTER_IP, 80);
    }
    let ruleset = nft(lab.host.ns().net(), &["list", "table", "ip", "podkit"]);
    assert!(ruleset.contains("goto reject_no_endpoints"), "{ruleset}");
    assert!(!ruleset.contains("10.90.0.2 . 8080"), "{ruleset}");

    // Endpoints again: answered again.
    lab.nat
        .set_service("default/web", CLUSTER_IP, &[web(&[POD_B])])
        .expect("set service with b");
    assert_eq!(names(lab.d.ns().net(), 5), vec!["b"; 5]);
    drop(servers);
}

/// `sessionAffinity: ClientIP`: each client keeps its endpoint (the host's and a pod's, each
/// its own), another Service without affinity still spreads, and removing the Service leaves
/// none of its sets.
#[tokio::test]
async fn session_affinity_keeps_each_client_on_one_endpoint() {
    let Some(lab) = ServiceLab::create("aff").await else {
        return;
    };
    let _servers: Vec<TcpServer> = [("a", &lab.a), ("b", &lab.b), ("c", &lab.c)]
        .into_iter()
        .map(|(name, pod)| TcpServer::named(pod.ns().net(), 8080, name))
        .collect();
    let endpoints = [POD_A, POD_B, POD_C].map(|ip| (ip, 8080));
    lab.nat
        .set_service(
            "default/sticky",
            CLUSTER_IP,
            &[ServicePort::new(Protocol::Tcp, 80, endpoints).with_affinity(600)],
        )
        .expect("set service");
    for client in [lab.host.ns().net(), lab.d.ns().net()] {
        let answers = names(client, 30);
        assert!(
            answers.iter().all(|n| *n == answers[0]),
            "{:?}: {answers:?}",
            client.path()
        );
    }
    let ruleset = nft(lab.host.ns().net(), &["list", "table", "ip", "podkit"]);
    assert!(ruleset.contains("timeout 10m"), "{ruleset}");
    assert!(ruleset.contains("update @svc-"), "{ruleset}");

    // Written again (endpoints changed): the sets are made afresh, the clients pick again
    // among what is left.
    lab.nat
        .set_service(
            "default/sticky",
            CLUSTER_IP,
            &[
                ServicePort::new(Protocol::Tcp, 80, [(POD_A, 8080), (POD_B, 8080)])
                    .with_affinity(600),
            ],
        )
        .expect("set service again");
    let answers = names(lab.d.ns().net(), 20);
    assert!(
        answers.iter().all(|n| *n == answers[0] && n != "c"),
        "{answers:?}"
    );

    // Without affinity: spread again.
    lab.nat
        .set_service(
            "default/sticky",
            CLUSTER_IP,
            &[ServicePort::new(Protocol::Tcp, 80, endpoints)],
        )
        .expect("set service without affinity");
    let answers = names(lab.d.ns().net(), 45);
    for name in ["a", "b", "c"] {
        assert!(answers.iter().any(|n| n == name), "{name}: {answers:?}");
    }
    let ruleset = nft(lab.host.ns().net(), &["list", "table", "ip", "podkit"]);
    assert!(!ruleset.contains("set svc-"), "{ruleset}");

    lab.nat
        .set_service(
            "default/sticky",
            CLUSTER_IP,
            &[ServicePort::new(Protocol::Tcp, 80, endpoints).with_affinity(30)],
        )
        .expect("set service with affinity");
    assert!(lab.nat.remove_service("default/sticky").expect("remove"));
    let ruleset = nft(lab.host.ns().net(), &["list", "table", "ip", "podkit"]);
    assert!(!ruleset.contains("svc-"), "{ruleset}");
    assert!(
        lab.nat
            .set_service(
                "default/sticky",
                CLUSTER_IP,
                &[ServicePort::new(Protocol::Tcp, 80, endpoints).with_affinity(0)],
            )
            .is_err()
    );
}

#[tokio::test]
async fn a_udp_service_port_reaches_its_endpoint() {
    let Some(lab) = ServiceLab::create("svcudp").await else {
        return;
    };
    let server = UdpServer::start(lab.a.ns().net(), 5353);
    let dns = [
        ServicePort::new(Protocol::Udp, 53, [(POD_A, 5353)]),
        ServicePort::new(Protocol::Tcp, 53, []),
    ];
    lab.nat
        .set_service("kube-system/dns", CLUSTER_IP, &dns)
        .expect("set service");
    // The host's source is the bridge's address; a pod's is masqueraded to it only when
    // its endpoint is on the same bridge (it is).
    assert_eq!(udp(lab.host.ns().net(), CLUSTER_IP, 53), GATEWAY);
    assert_eq!(udp(lab.d.ns().net(), CLUSTER_IP, 53), GATEWAY);
    // The same port over TCP has no endpoints: refused.
    assert_refused_at_once(lab.d.ns().net(), CLUSTER_IP, 53);
    server.stop();
}

#[tokio::test]
async fn remove_service_removes_exactly_one_owners_rules() {
    let Some(lab) = ServiceLab::create("svcrm").await else {
        return;
    };
    let (server_a, server_b) = (
        TcpServer::named(lab.a.ns().net(), 8080, "a"),
        TcpServer::named(lab.b.ns().net(), 8080, "b"),
    );
    let other_ip = Ipv4Addr::new(10, 96, 0, 11);
    lab.nat
        .set_service(
            "default/web",
            CLUSTER_IP,
            &[
                ServicePort::new(Protocol::Tcp, 80, [(POD_A, 8080)]),
                ServicePort::new(Protocol::Tcp, 443, []),
            ],
        )
        .expect("set web");
    lab.nat
        .set_service(
            "default/api",
            other_ip,
            &[ServicePort::new(Protocol::Tcp, 80, [(POD_B, 8080)])],
        )
        .expect("set api");
    lab.nat
        .publish("pod-b", POD_B, &[HostPort::new(Protocol::Tcp, 9080, 8080)])
        .expect("publish");
    assert_eq!(
        lab.nat.services().expect("services"),
        vec!["default/api".to_owned(), "default/web".to_owned()]
    );
    // Services are no hostPort owners, and hostPort owners no Services.
    assert_eq!(lab.nat.owners().expect("owners"), vec!["pod-b".to_owned()]);
    assert!(lab.nat.has_service("default/web").expect("has web"));
    assert!(!lab.nat.has_service("pod-b").expect("has pod-b"));
    assert!(!lab.nat.has_service("default/none").expect("has none"));

    // A port another Service holds is refused, naming it, and nothing changes.
    let before = nft(lab.host.ns().net(), &["list", "table", "ip", "podkit"]);
    let err = lab
        .nat
        .set_service(
            "default/copy",
            CLUSTER_IP,
            &[
                ServicePort::new(Protocol::Tcp, 8443, [(POD_A, 8080)]),
                ServicePort::new(Protocol::Tcp, 443, [(POD_A, 8080)]),
            ],
        )
        .expect_err("port taken");
    assert!(
        matches!(&err, Error::ServicePortInUse { port, holder, .. }
            if port == "10.96.0.10:443/tcp" && holder == "default/web"),
        "{err}"
    );
    assert_eq!(
        nft(lab.host.ns().net(), &["list", "table", "ip", "podkit"]),
        before
    );

    assert!(lab.nat.remove_service("default/web").expect("remove web"));
    let ruleset = nft(lab.host.ns().net(), &["list", "table", "ip", "podkit"]);
    assert!(!ruleset.contains("default/web"), "{ruleset}");
    assert!(!ruleset.contains("10.96.0.10"), "{ruleset}");
    assert_eq!(
        lab.nat.services().expect("services"),
        vec!["default/api".to_owned()]
    );
    assert!(!lab.nat.has_service("default/web").expect("has web"));
    assert!(!lab.nat.remove_service("default/web").expect("again"));
    // The other Service and the hostPort still work.
    assert_eq!(names_at(lab.d.ns().net(), other_ip, 80, 3), vec!["b"; 3]);
    assert_eq!(name(lab.host.ns().net(), GATEWAY, 9080), "b");
    // The removed Service's ports are free for another.
    lab.nat
        .set_service(
            "default/copy",
            CLUSTER_IP,
            &[ServicePort::new(Protocol::Tcp, 443, [(POD_A, 8080)])],
        )
        .expect("443 is free");
    assert_eq!(names_at(lab.d.ns().net(), CLUSTER_IP, 443, 3), vec!["a"; 3]);

    // A Service with no ports is still listed; the table made again has none, which
    // has_service tells a controller.
    lab.nat
        .set_service("default/empty", other_ip, &[])
        .expect("no ports");
    assert!(lab.nat.has_service("default/empty").expect("has empty"));
    assert!(lab.nat.remove().expect("remove table"));
    assert!(!lab.nat.has_service("default/api").expect("no table"));
    assert!(lab.nat.services().expect("no table").is_empty());
    assert!(!lab.nat.remove_service("default/api").expect("no table"));
    let err = lab
        .nat
        .set_service("default/api", other_ip, &[])
        .expect_err("no table");
    assert!(matches!(err, Error::NatNotReady { .. }), "{err}");
    lab.nat
        .ensure(Bridge::DEFAULT_SUBNET, "podkit0")
        .expect("ensure");
    assert!(!lab.nat.has_service("default/api").expect("made again"));
    server_a.stop();
    server_b.stop();
}

#[tokio::test]
async fn bad_services_are_refused_before_anything_changes() {
    let Some(lab) = ServiceLab::create("svcbad").await else {
        return;
    };
    let good = ServicePort::new(Protocol::Tcp, 80, [(POD_A, 8080)]);
    for owner in ["", "two words", "quo\"te", "back\\slash", &"x".repeat(129)] {
        let err = lab
            .nat
            .set_service(owner, CLUSTER_IP, std::slice::from_ref(&good))
            .expect_err("bad owner");
        assert!(matches!(err, Error::InvalidOwner { .. }), "{owner}: {err}");
    }
    for (ip, ports, says) in [
        (Ipv4Addr::UNSPECIFIED, vec![good.clone()], "cluster IP"),
        (LOCALHOST, vec![good.clone()], "cluster IP"),
        (
            CLUSTER_IP,
            vec![ServicePort::new(Protocol::Tcp, 0, [])],
            "1 to 65535",
        ),
        (
            CLUSTER_IP,
            vec![ServicePort::new(Protocol::Tcp, 80, [(POD_A, 0)])],
            "target port",
        ),
        (CLUSTER_IP, vec![good.clone(), good.clone()], "twice"),
        (
            CLUSTER_IP,
            vec![good.clone().with_node_port(0)],
            "node port must be 1 to 65535",
        ),
        (
            CLUSTER_IP,
            vec![
                good.clone().with_node_port(NODE_PORT),
                ServicePort::new(Protocol::Tcp, 81, []).with_node_port(NODE_PORT),
            ],
            "node port 30080/tcp is given to two ports",
        ),
    ] {
        let err = lab
            .nat
            .set_service("default/web", ip, &ports)
            .expect_err("bad service");
        assert!(matches!(err, Error::InvalidService { .. }), "{err}");
        assert!(err.to_string().contains(says), "{err}");
    }
    assert!(lab.nat.services().expect("services").is_empty());
}

#[tokio::test]
async fn ensure_upgrades_a_v1_table_in_place_and_keeps_host_ports() {
    let Some(lab) = ServiceLab::create("svcv1").await else {
        return;
    };
    // The table as podkit's v1 wrote it, with a hostPort published in it.
    assert!(lab.nat.remove().expect("remove"));
    nft_script(lab.host.ns().net(), V1_RULES);
    let server = TcpServer::named(lab.a.ns().net(), 8080, "a");
    lab.nat
        .publish("pod-a", POD_A, &[HostPort::new(Protocol::Tcp, 9080, 8080)])
        .expect("publish in v1");
    let err = lab
        .nat
        .set_service("default/web", CLUSTER_IP, &[])
        .expect_err("v1 has no Service maps");
    assert!(matches!(err, Error::NatNotReady { .. }), "{err}");

    lab.nat
        .ensure(Bridge::DEFAULT_SUBNET, "podkit0")
        .expect("upgrade");
    assert_eq!(lab.nat.owners().expect("owners"), vec!["pod-a".to_owned()]);
    assert_eq!(lab.nat.published().expect("published").len(), 1);
    assert_eq!(name(lab.d.ns().net(), GATEWAY, 9080), "a");
    lab.nat
        .set_service(
            "default/web",
            CLUSTER_IP,
            &[ServicePort::new(Protocol::Tcp, 80, [(POD_A, 8080)])],
        )
        .expect("set service in v2");
    assert_eq!(name(lab.d.ns().net(), CLUSTER_IP, 80), "a");
    let ruleset = nft(lab.host.ns().net(), &["list", "table", "ip", "podkit"]);
    assert!(ruleset.contains("podkit nat v3"), "{ruleset}");

    // Rules written again over Services (another subnet) keep them too.
    lab.nat
        .ensure("10.90.0.0/17".parse().expect("subnet"), "podkit0")
        .expect("ensure with another subnet");
    assert_eq!(name(lab.d.ns().net(), CLUSTER_IP, 80), "a");
    assert_eq!(name(lab.d.ns().net(), GATEWAY, 9080), "a");
    assert!(lab.nat.has_service("default/web").expect("kept"));
    server.stop();
}

/// A Service's node port, as a NodePort Service's `spec.ports[].nodePort`.
const NODE_PORT: u16 = 30080;

#[tokio::test]
async fn a_node_port_reaches_every_endpoint_from_the_host_and_from_outside() {
    let Some(lab) = ServiceLab::create("np").await else {
        return;
    };
    let servers: Vec<TcpServer> = [("a", &lab.a), ("b", &lab.b), ("c", &lab.c)]
        .into_iter()
        .map(|(name, pod)| TcpServer::telling(pod.ns().net(), 8080, name))
        .collect();
    let web = |endpoints: &[Ipv4Addr]| {
        ServicePort::new(Protocol::Tcp, 80, endpoints.iter().map(|&ip| (ip, 8080)))
            .with_node_port(NODE_PORT)
    };
    lab.nat
        .set_service("default/web", CLUSTER_IP, &[web(&[POD_A, POD_B, POD_C])])
        .expect("set service");

    // Every local address of the host, from the host itself, from a pod and from outside:
    // each answered by every endpoint some of the time, which sees the source it should.
    // From outside that is the client's own address (no masquerade: the endpoint's answer
    // goes back through the host, its default route, which undoes the DNAT); from the host
    // at 127.0.0.1 and from a pod it is the bridge's address (masqueraded, as for hostPorts);
    // from the host at its own address, that address.
    for (client, ip, seen) in [
        (lab.ext.ns().net(), HOST_EXT, EXT),
        (lab.host.ns().net(), LOCALHOST, GATEWAY),
        (lab.host.ns().net(), HOST_EXT, HOST_EXT),
        (lab.host.ns().net(), GATEWAY, GATEWAY),
        (lab.d.ns().net(), GATEWAY, GATEWAY),
    ] {
        assert_spread(client, ip, NODE_PORT, &["a", "b", "c"], seen);
    }
    // The cluster IP's port is there as before.
    assert_eq!(names(lab.d.ns().net(), 10).len(), 10);
    // Only that port: the host's other ports are untouched.
    assert_refused(lab.ext.ns().net(), HOST_EXT, NODE_PORT + 1);
    let ruleset = nft(lab.host.ns().net(), &["list", "table", "ip", "podkit"]);
    assert!(
        ruleset.contains("tcp . 30080 comment \"default/web\" : goto svc-"),
        "{ruleset}"
    );

    // None ready: refused at once on every address, from everywhere, by the rules (a
    // process of the host listens on the node port, which would answer otherwise); a
    // service of the host on another port is still reached, so the no-endpoints check
    // takes exactly the node port.
    lab.nat
        .set_service("default/web", CLUSTER_IP, &[web(&[])])
        .expect("set service without endpoints");
    let host_server = TcpServer::start(lab.host.ns().net(), 7070);
    let squatter = TcpServer::start(lab.host.ns().net(), NODE_PORT);
    for (client, ip, seen) in [
        (lab.ext.ns().net(), HOST_EXT, EXT),
        (lab.host.ns().net(), LOCALHOST, LOCALHOST),
        (lab.host.ns().net(), HOST_EXT, HOST_EXT),
        (lab.d.ns().net(), GATEWAY, POD_D),
    ] {
        assert_refused_at_once(client, ip, NODE_PORT);
        assert_eq!(tcp(client, ip, 7070), seen);
    }
    assert_eq!(squatter.served(), 0);
    host_server.stop();
    let ruleset = nft(lab.host.ns().net(), &["list", "table", "ip", "podkit"]);
    assert!(
        ruleset.contains("tcp . 30080 comment \"default/web\" : goto reject_no_endpoints"),
        "{ruleset}"
    );

    // Ready again: answered again.
    lab.nat
        .set_service("default/web", CLUSTER_IP, &[web(&[POD_B])])
        .expect("set service with b");
    assert_eq!(
        names_at(lab.ext.ns().net(), HOST_EXT, NODE_PORT, 3),
        vec![format!("b {EXT}"); 3]
    );

    // Removed: the node port is the host's own port again (its listener answers), and in
    // no map.
    assert!(lab.nat.remove_service("default/web").expect("remove"));
    assert_eq!(tcp(lab.ext.ns().net(), HOST_EXT, NODE_PORT), EXT);
    assert_eq!(tcp(lab.host.ns().net(), LOCALHOST, NODE_PORT), LOCALHOST);
    squatter.stop();
    // Its listener is closed; a connection of the moment before may still be in the kernel's
    // tables (CI once got one more accept): refused within a second.
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    while lab
        .ext
        .ns()
        .net()
        .connect_tcp(SocketAddr::new(IpAddr::V4(HOST_EXT), NODE_PORT), TIMEOUT)
        .is_ok()
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_refused(lab.ext.ns().net(), HOST_EXT, NODE_PORT);
    let ruleset = nft(lab.host.ns().net(), &["list", "table", "ip", "podkit"]);
    assert!(!ruleset.contains("30080"), "{ruleset}");
    drop(servers);
}

#[tokio::test]
async fn a_node_port_is_held_by_one_service_and_a_host_port_wins_over_it() {
    let Some(lab) = ServiceLab::create("npheld").await else {
        return;
    };
    let (server_a, server_b) = (
        TcpServer::named(lab.a.ns().net(), 8080, "a"),
        TcpServer::named(lab.b.ns().net(), 8080, "b"),
    );
    let web = [ServicePort::new(Protocol::Tcp, 80, [(POD_A, 8080)]).with_node_port(NODE_PORT)];
    lab.nat
        .set_service("default/web", CLUSTER_IP, &web)
        .expect("set web");
    // Setting it again is no conflict with itself.
    lab.nat
        .set_service("default/web", CLUSTER_IP, &web)
        .expect("set web again");

    // Another Service asking for the node port (on another cluster IP) is refused, naming
    // the holder, and nothing is written.
    let before = nft(lab.host.ns().net(), &["list", "table", "ip", "podkit"]);
    let other_ip = Ipv4Addr::new(10, 96, 0, 11);
    let err = lab
        .nat
        .set_service(
            "default/api",
            other_ip,
            &[
                ServicePort::new(Protocol::Tcp, 81, [(POD_B, 8080)]).with_node_port(30081),
                ServicePort::new(Protocol::Tcp, 80, [(POD_B, 8080)]).with_node_port(NODE_PORT),
            ],
        )
        .expect_err("node port taken");
    assert!(
        matches!(&err, Error::NodePortInUse { port, holder, owner, .. }
            if port == "30080/tcp" && holder == "default/web" && owner == "default/api"),
        "{err}"
    );
    assert!(err.to_string().contains("nodePort"), "{err}");
    assert_eq!(
        nft(lab.host.ns().net(), &["list", "table", "ip", "podkit"]),
        before
    );
    // The same number over UDP is another node port.
    lab.nat
        .set_service(
            "default/api",
            other_ip,
            &[ServicePort::new(Protocol::Udp, 80, [(POD_B, 8080)]).with_node_port(NODE_PORT)],
        )
        .expect("udp 30080 is free");

    // A hostPort on the same port and protocol wins (its DNAT comes first); the node port
    // answers again when the hostPort is gone.
    assert_eq!(name(lab.ext.ns().net(), HOST_EXT, NODE_PORT), "a");
    lab.nat
        .publish(
            "pod-b",
            POD_B,
            &[HostPort::new(Protocol::Tcp, NODE_PORT, 8080)],
        )
        .expect("publish");
    assert_eq!(
        names_at(lab.ext.ns().net(), HOST_EXT, NODE_PORT, 3),
        vec!["b"; 3]
    );
    assert_eq!(name(lab.host.ns().net(), LOCALHOST, NODE_PORT), "b");
    assert!(lab.nat.unpublish("pod-b").expect("unpublish"));
    assert_eq!(name(lab.ext.ns().net(), HOST_EXT, NODE_PORT), "a");

    // The holder moving to another node port frees the old one for the other Service.
    lab.nat
        .set_service(
            "default/web",
            CLUSTER_IP,
            &[ServicePort::new(Protocol::Tcp, 80, [(POD_A, 8080)]).with_node_port(30090)],
        )
        .expect("move web");
    lab.nat
        .set_service(
            "default/api",
            other_ip,
            &[ServicePort::new(Protocol::Tcp, 80, [(POD_B, 8080)]).with_node_port(NODE_PORT)],
        )
        .expect("30080 is free now");
    assert_eq!(name(lab.ext.ns().net(), HOST_EXT, NODE_PORT), "b");
    assert_eq!(name(lab.ext.ns().net(), HOST_EXT, 30090), "a");
    server_a.stop();
    server_b.stop();
}

#[tokio::test]
async fn a_udp_node_port_reaches_its_endpoint() {
    let Some(lab) = ServiceLab::create("npudp").await else {
        return;
    };
    let server = UdpServer::start(lab.a.ns().net(), 5353);
    lab.nat
        .set_service(
            "kube-system/dns",
            CLUSTER_IP,
            &[ServicePort::new(Protocol::Udp, 53, [(POD_A, 5353)]).with_node_port(30053)],
        )
        .expect("set service");
    assert_eq!(udp(lab.ext.ns().net(), HOST_EXT, 30053), EXT);
    assert_eq!(udp(lab.host.ns().net(), LOCALHOST, 30053), GATEWAY);
    assert_eq!(udp(lab.host.ns().net(), HOST_EXT, 30053), HOST_EXT);
    assert_eq!(udp(lab.d.ns().net(), GATEWAY, 30053), GATEWAY);
    // The same number over TCP is no node port.
    assert_refused(lab.ext.ns().net(), HOST_EXT, 30053);
    server.stop();
}

#[tokio::test]
async fn ensure_upgrades_a_v2_table_in_place_and_keeps_host_ports_and_services() {
    let Some(lab) = ServiceLab::create("npv2").await else {
        return;
    };
    // The table as podkit's v2 wrote it, with a hostPort and a Service in it.
    assert!(lab.nat.remove().expect("remove"));
    nft_script(lab.host.ns().net(), V2_RULES);
    nft_script(
        lab.host.ns().net(),
        &v2_service("default/web", CLUSTER_IP, 80, POD_A, 8080),
    );
    let server = TcpServer::named(lab.a.ns().net(), 8080, "a");
    lab.nat
        .publish("pod-a", POD_A, &[HostPort::new(Protocol::Tcp, 9080, 8080)])
        .expect("publish in v2");
    assert_eq!(name(lab.d.ns().net(), CLUSTER_IP, 80), "a");
    let node_port =
        [ServicePort::new(Protocol::Tcp, 80, [(POD_A, 8080)]).with_node_port(NODE_PORT)];
    let err = lab
        .nat
        .set_service("default/web", CLUSTER_IP, &node_port)
        .expect_err("v2 has no node port maps");
    assert!(matches!(err, Error::NatNotReady { .. }), "{err}");

    lab.nat
        .ensure(Bridge::DEFAULT_SUBNET, "podkit0")
        .expect("upgrade");
    let ruleset = nft(lab.host.ns().net(), &["list", "table", "ip", "podkit"]);
    assert!(ruleset.contains("podkit nat v3"), "{ruleset}");
    assert_eq!(lab.nat.owners().expect("owners"), vec!["pod-a".to_owned()]);
    assert_eq!(
        lab.nat.services().expect("services"),
        vec!["default/web".to_owned()]
    );
    assert!(lab.nat.has_service("default/web").expect("kept"));
    assert_eq!(name(lab.d.ns().net(), GATEWAY, 9080), "a");
    assert_eq!(name(lab.d.ns().net(), CLUSTER_IP, 80), "a");
    // The Service v2 wrote is replaced by one with a node port.
    lab.nat
        .set_service("default/web", CLUSTER_IP, &node_port)
        .expect("set service in v3");
    assert_eq!(name(lab.ext.ns().net(), HOST_EXT, NODE_PORT), "a");
    assert_eq!(name(lab.d.ns().net(), CLUSTER_IP, 80), "a");
    assert_eq!(name(lab.ext.ns().net(), HOST_EXT, 9080), "a");
    assert!(lab.nat.remove_service("default/web").expect("remove"));
    assert_refused(lab.ext.ns().net(), HOST_EXT, NODE_PORT);
    server.stop();
}

/// `count` connections from `ns` to `ip:port`, each answered by a [`TcpServer::telling`]:
/// checks that every one of `names` answered some, and that each saw the client as `seen`.
fn assert_spread(ns: &Namespace, ip: Ipv4Addr, port: u16, names: &[&str], seen: Ipv4Addr) {
    let count = 45;
    let answers = names_at(ns, ip, port, count);
    for answer in &answers {
        assert!(
            answer.ends_with(&format!(" {seen}")),
            "{ip}:{port} from {:?}: the endpoint saw {answer:?}, not {seen}",
            ns.path()
        );
    }
    for name in names {
        // Picked at random: one of three never picked in 45 is ~3e-8 likely.
        assert!(
            answers.iter().any(|a| a.starts_with(&format!("{name} "))),
            "{ip}:{port} from {:?}: {name} never answered: {answers:?}",
            ns.path()
        );
    }
}

/// The rules podkit's v2 wrote (`Nat::ensure` before node ports), for table `podkit`.
const V2_RULES: &str = r#"add table ip podkit { comment "podkit: pods' NAT, hostPorts and Services (netns::Nat)"; }
add map ip podkit hostports { type inet_proto . inet_service : ipv4_addr . inet_service; }
add map ip podkit hostip_hostports { type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service; }
add map ip podkit services { type ipv4_addr . inet_proto . inet_service : verdict; }
add map ip podkit no_endpoints { type ipv4_addr . inet_proto . inet_service : verdict; }
add chain ip podkit reject_no_endpoints
add rule ip podkit reject_no_endpoints meta l4proto tcp reject with tcp reset
add rule ip podkit reject_no_endpoints reject
add chain ip podkit hostports
add rule ip podkit hostports dnat ip to ip daddr . meta l4proto . th dport map @hostip_hostports
add rule ip podkit hostports dnat ip to meta l4proto . th dport map @hostports
add chain ip podkit clusterips
add rule ip podkit clusterips ip daddr . meta l4proto . th dport vmap @services
add chain ip podkit endpoints_check
add rule ip podkit endpoints_check ip daddr . meta l4proto . th dport vmap @no_endpoints
add chain ip podkit prerouting { type nat hook prerouting priority dstnat; }
add rule ip podkit prerouting fib daddr type local jump hostports
add rule ip podkit prerouting fib daddr type != local jump clusterips
add chain ip podkit output { type nat hook output priority -100; }
add rule ip podkit output fib daddr type local jump hostports
add rule ip podkit output fib daddr type != local jump clusterips
add chain ip podkit filter_output { type filter hook output priority filter; }
add rule ip podkit filter_output ct state new jump endpoints_check
add chain ip podkit filter_forward { type filter hook forward priority filter; }
add rule ip podkit filter_forward ct state new jump endpoints_check
add chain ip podkit postrouting { type nat hook postrouting priority srcnat; comment "podkit nat v2: pods of 10.90.0.0/16 on podkit0"; }
add rule ip podkit postrouting ip saddr 10.90.0.0/16 ip daddr != 10.90.0.0/16 masquerade
add rule ip podkit postrouting ct status dnat ip saddr 10.90.0.0/16 ip daddr 10.90.0.0/16 masquerade
add rule ip podkit postrouting ct status dnat ip saddr 127.0.0.0/8 oifname "podkit0" masquerade
add chain ip podkit localnet { type filter hook prerouting priority raw; }
add rule ip podkit localnet iifname != "lo" ip daddr 127.0.0.0/8 drop
"#;

/// The rules podkit's v2 `Nat::set_service` wrote for `owner`'s Service with one TCP port
/// and one endpoint, its chains named `svc-` and the FNV-1a hash of the owner, as netns
/// names them.
fn v2_service(owner: &str, ip: Ipv4Addr, port: u16, pod_ip: Ipv4Addr, pod_port: u16) -> String {
    let hash = owner.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let chain = format!("svc-{hash:016x}");
    format!(
        "add chain ip podkit {chain} {{ comment \"{owner}\"; }}\n\
         add chain ip podkit {chain}-tcp-{port} {{ comment \"{owner}\"; }}\n\
         add rule ip podkit {chain}-tcp-{port} meta l4proto tcp dnat ip to numgen random mod 1 \
         map {{ 0 : {pod_ip} . {pod_port} }}\n\
         create element ip podkit services {{ {ip} . tcp . {port} comment \"{owner}\" : goto \
         {chain}-tcp-{port} }}\n"
    )
}

/// The rules podkit's v1 wrote (`Nat::ensure` before Services), for table `podkit`.
const V1_RULES: &str = r#"add table ip podkit { comment "podkit: pods' NAT and hostPorts (netns::Nat)"; }
add map ip podkit hostports { type inet_proto . inet_service : ipv4_addr . inet_service; }
add map ip podkit hostip_hostports { type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service; }
add chain ip podkit hostports
add rule ip podkit hostports dnat ip to ip daddr . meta l4proto . th dport map @hostip_hostports
add rule ip podkit hostports dnat ip to meta l4proto . th dport map @hostports
add chain ip podkit prerouting { type nat hook prerouting priority dstnat; }
add rule ip podkit prerouting fib daddr type local jump hostports
add chain ip podkit output { type nat hook output priority -100; }
add rule ip podkit output fib daddr type local jump hostports
add chain ip podkit postrouting { type nat hook postrouting priority srcnat; comment "podkit nat v1: pods of 10.90.0.0/16 on podkit0"; }
add rule ip podkit postrouting ip saddr 10.90.0.0/16 ip daddr != 10.90.0.0/16 masquerade
add rule ip podkit postrouting ct status dnat ip saddr 10.90.0.0/16 ip daddr 10.90.0.0/16 masquerade
add rule ip podkit postrouting ct status dnat ip saddr 127.0.0.0/8 oifname "podkit0" masquerade
add chain ip podkit localnet { type filter hook prerouting priority raw; }
add rule ip podkit localnet iifname != "lo" ip daddr 127.0.0.0/8 drop
"#;

/// The host (bridge, table, a route for the cluster IP range on the bridge, as podkit adds
/// it), four pods on its bridge (three endpoints and a client) and the external client.
struct ServiceLab {
    nat: Nat,
    // Dropped after `nat` (fields drop in order), pods before the host.
    a: Pod,
    b: Pod,
    c: Pod,
    d: Pod,
    ext: Pod,
    host: Pod,
}

impl ServiceLab {
    /// `None` when not root (outside CI): the test is skipped.
    async fn create(name: &str) -> Option<ServiceLab> {
        let host = Pod::create(&format!("{name}-host")).await?;
        let (a, b, c, d, ext) = (
            pod(&format!("{name}-a")).await,
            pod(&format!("{name}-b")).await,
            pod(&format!("{name}-c")).await,
            pod(&format!("{name}-d")).await,
            pod(&format!("{name}-ext")).await,
        );
        let net = host.netlink().await;
        let bridge = Bridge::default();
        bridge.ensure(&net).await.expect("bridge");
        for (pod, link, ip) in [
            (&a, "veth-a", POD_A),
            (&b, "veth-b", POD_B),
            (&c, "veth-c", POD_C),
            (&d, "veth-d", POD_D),
        ] {
            bridge
                .attach(&net, pod.ns().net(), link, ip)
                .await
                .expect("attach");
        }
        join_external(&net, &ext).await;
        // Without a route the host's own clients get ENETUNREACH before any hook runs.
        run(
            host.ns().net(),
            "ip",
            &["route", "add", "10.96.0.0/16", "dev", bridge.name()],
        );
        let nat = Nat::open(host.ns().net()).expect("open");
        nat.ensure(bridge.subnet(), bridge.name()).expect("ensure");
        Some(ServiceLab {
            nat,
            a,
            b,
            c,
            d,
            ext,
            host,
        })
    }
}

/// `count` connections from `ns` to the Service at [`CLUSTER_IP`]:80: who answered each.
fn names(ns: &Namespace, count: usize) -> Vec<String> {
    names_at(ns, CLUSTER_IP, 80, count)
}

fn names_at(ns: &Namespace, ip: Ipv4Addr, port: u16, count: usize) -> Vec<String> {
    (0..count).map(|_| name(ns, ip, port)).collect()
}

/// Connects from inside `ns` to `ip:port` and returns what the server answered.
fn name(ns: &Namespace, ip: Ipv4Addr, port: u16) -> String {
    let addr = SocketAddr::new(IpAddr::V4(ip), port);
    let mut conn = ns
        .connect_tcp(addr, TIMEOUT)
        .unwrap_or_else(|err| panic!("connect to {addr} from {:?}: {err}", ns.path()));
    conn.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    conn.write_all(b"ping").expect("write");
    let mut reply = String::new();
    conn.read_to_string(&mut reply).expect("read");
    reply
}

/// Checks that a connection from `ns` to `ip:port` is refused within a second, by a reset
/// or an ICMP error, rather than left to time out.
fn assert_refused_at_once(ns: &Namespace, ip: Ipv4Addr, port: u16) {
    let addr = SocketAddr::new(IpAddr::V4(ip), port);
    let start = std::time::Instant::now();
    match ns.connect_tcp(addr, TIMEOUT) {
        Err(Error::Connect { source, .. }) if source.kind() == ErrorKind::ConnectionRefused => {}
        other => panic!(
            "{addr} from {:?}: expected refused, got {other:?}",
            ns.path()
        ),
    }
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{addr} from {:?}: refused only after {:?}",
        ns.path(),
        start.elapsed()
    );
}

/// Runs `nft -f -` with `script` inside `ns`.
fn nft_script(ns: &Namespace, script: &str) {
    let mut cmd = Command::new("nft");
    cmd.args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    Namespaces::new([ns.clone()]).command(&mut cmd);
    let mut child = cmd.spawn().expect("run nft (install Debian's nftables)");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(script.as_bytes())
        .expect("write the script");
    let output = child.wait_with_output().expect("wait for nft");
    assert!(
        output.status.success(),
        "nft -f -: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs `program ARGS` inside `ns`, which must succeed.
fn run(ns: &Namespace, program: &str, args: &[&str]) {
    let mut cmd = Command::new(program);
    cmd.args(args);
    Namespaces::new([ns.clone()]).command(&mut cmd);
    let output = cmd
        .output()
        .unwrap_or_else(|err| panic!("run {program}: {err}"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
