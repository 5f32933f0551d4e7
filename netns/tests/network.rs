//! Pod addresses against the real kernel: a bridge, veth pairs into pods, and the leases of
//! host-local-style IPAM.
//!
//! Network rule (DESIGN.md): the bridge never goes in the machine's own network namespace.
//! Each test makes a fresh namespace that plays "the host", puts the bridge there and the
//! pods behind it, and sends traffic only to addresses inside those namespaces. Every
//! namespace is deleted when the test ends, pass or fail (the `Pod` guard), which also
//! removes every link in it. The bridge tests need root (CI runs as root); the IPAM tests
//! need only a temporary directory.

mod common;
use common::{Pod, pod};

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use netns::{Bridge, Error, Ipam, Netlink, POD_INTERFACE, Subnet, Subnet6};
use rtnetlink::RouteMessageBuilder;

const TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn pods_on_the_bridge_reach_each_other_the_gateway_and_beyond_it() {
    let Some(host) = Pod::create("host").await else {
        return;
    };
    let (a, b) = (pod("a").await, pod("b").await);
    let bridge = Bridge::default();
    let net = host.netlink().await;
    bridge.ensure(&net).await.expect("ensure");
    let (ip_a, ip_b) = (Ipv4Addr::new(10, 90, 0, 2), Ipv4Addr::new(10, 90, 0, 3));
    bridge
        .attach(&net, a.ns().net(), "veth-a", ip_a)
        .await
        .expect("attach a");
    bridge
        .attach(&net, b.ns().net(), "veth-b", ip_b)
        .await
        .expect("attach b");

    // The host side: the bridge up with the gateway address and its MTU, both veths its ports.
    let links = net.links().await.expect("links");
    let br = links.iter().find(|l| l.name == "podkit0").expect("bridge");
    assert_eq!(br.kind.as_deref(), Some("bridge"));
    assert!(br.up, "{br:?}");
    assert_eq!(br.mtu, Some(65535));
    for name in ["veth-a", "veth-b"] {
        let port = links.iter().find(|l| l.name == name).expect("port");
        assert_eq!(port.kind.as_deref(), Some("veth"), "{port:?}");
        assert_eq!(port.controller, Some(br.index), "{port:?}");
        assert!(port.up, "{port:?}");
        assert_eq!(port.mtu, Some(65535), "{port:?}");
    }
    // The bridge keeps its own MAC address (the pods' gateway) even when a port has a lower
    // one, which a bridge would otherwise take.
    net.set_mac("veth-a", &[0x02, 0, 0, 0, 0, 1])
        .await
        .expect("a low MAC on a port");
    let after = net.link("podkit0").await.expect("bridge");
    assert_eq!(after.mac, br.mac, "the bridge's MAC changed");

    let addresses = net.addresses().await.expect("addresses");
    assert!(
        addresses.iter().any(|a| a.link_index == br.index
            && a.address == IpAddr::V4(bridge.gateway())
            && a.prefix_len == 16),
        "{addresses:?}"
    );

    // The pod side: eth0 up, with the address and the MTU.
    let inside = a.ns().netlink().await.expect("pod netlink");
    let eth0 = inside.link(POD_INTERFACE).await.expect("eth0");
    assert!(eth0.up && eth0.mtu == Some(65535), "{eth0:?}");
    let addresses = inside.addresses().await.expect("pod addresses");
    assert!(
        addresses.iter().any(|x| x.link_index == eth0.index
            && x.address == IpAddr::V4(ip_a)
            && x.prefix_len == 16),
        "{addresses:?}"
    );

    // Pod to pod across the bridge, pod to the gateway, and pod to an address outside the
    // subnet that only the default route leads to: 198.18.0.1 (RFC 2544's test range) on the
    // test host's `lo`.
    let outside = Ipv4Addr::new(198, 18, 0, 1);
    net.add_address("lo", IpAddr::V4(outside), 32)
        .await
        .expect("address on the test host's lo");
    net.link_up("lo").await.expect("lo up");
    let b_addr = echo_server(b.ns().net(), ip_b);
    exchange(a.ns().net(), b_addr, ip_a);
    let a_addr = echo_server(a.ns().net(), ip_a);
    exchange(b.ns().net(), a_addr, ip_b);
    let gateway = echo_server(host.ns().net(), bridge.gateway());
    exchange(a.ns().net(), gateway, ip_a);
    let beyond = echo_server(host.ns().net(), outside);
    exchange(a.ns().net(), beyond, ip_a);
}

#[tokio::test]
async fn dual_stack_pods_reach_each_other_and_the_gateway_over_ipv6() {
    let Some(host) = Pod::create("host6").await else {
        return;
    };
    let (a, b) = (pod("a6").await, pod("b6").await);
    let subnet6: Subnet6 = "fd90:706f:646b::/64".parse().expect("subnet6");
    assert_eq!(subnet6, Bridge::DEFAULT_SUBNET6);
    let bridge = Bridge::default().with_ipv6(subnet6).expect("ipv6");
    let net = host.netlink().await;
    assert!(bridge.ensure(&net).await.expect("ensure"), "made");
    let (ip_a, ip_b) = (Ipv4Addr::new(10, 90, 0, 2), Ipv4Addr::new(10, 90, 0, 3));
    let ip6 = |last| Ipv6Addr::new(0xfd90, 0x706f, 0x646b, 0, 0, 0, 0, last);
    let (ip6_a, ip6_b) = (ip6(2), ip6(3));
    bridge
        .attach_dual_stack(&net, a.ns().net(), "veth-a", ip_a, Some(ip6_a))
        .await
        .expect("attach a");
    bridge
        .attach_dual_stack(&net, b.ns().net(), "veth-b", ip_b, Some(ip6_b))
        .await
        .expect("attach b");

    // The bridge has both gateways, neither tentative (no duplicate address detection).
    let br = net.link("podkit0").await.expect("bridge");
    let addresses = net.addresses().await.expect("addresses");
    for (gateway, prefix_len) in [(IpAddr::V4(bridge.gateway()), 16), (ip6(1).into(), 64)] {
        assert!(
            addresses.iter().any(|x| x.link_index == br.index
                && x.address == gateway
                && x.prefix_len == prefix_len),
            "{gateway}: {addresses:?}"
        );
    }
    // A bridge made before with no IPv6 gateway is given one by the next ensure, which says
    // so (its NAT rules are then the caller's to bring up to date); then nothing more.
    net.handle()
        .address()
        .del({
            let mut message = rtnetlink::packet_route::address::AddressMessage::default();
            message.header.family = rtnetlink::packet_route::AddressFamily::Inet6;
            message.header.prefix_len = 64;
            message.header.index = br.index;
            message
                .attributes
                .push(rtnetlink::packet_route::address::AddressAttribute::Address(
                    ip6(1).into(),
                ));
            message
        })
        .execute()
        .await
        .expect("delete the IPv6 gateway");
    assert!(bridge.ensure(&net).await.expect("ensure"), "gateway added");
    assert!(!bridge.ensure(&net).await.expect("ensure"), "nothing to do");

    // Each pod: both addresses on eth0, and a default route of each family.
    let inside = a.ns().netlink().await.expect("pod netlink");
    let eth0 = inside.link(POD_INTERFACE).await.expect("eth0");
    let addresses = inside.addresses().await.expect("pod addresses");
    assert!(
        addresses.iter().any(|x| x.link_index == eth0.index
            && x.address == IpAddr::V6(ip6_a)
            && x.prefix_len == 64),
        "{addresses:?}"
    );

    // Pod to pod over IPv6 (and still over IPv4), pod to the IPv6 gateway, and pod to an
    // address beyond it that only the IPv6 default route leads to: 2001:db8::1
    // (documentation range) on the test host's `lo`.
    let outside = "2001:db8::1".parse::<Ipv6Addr>().expect("address");
    net.add_address("lo", IpAddr::V6(outside), 128)
        .await
        .expect("address on the test host's lo");
    net.link_up("lo").await.expect("lo up");
    let b_addr = echo_server(b.ns().net(), ip6_b);
    exchange(a.ns().net(), b_addr, ip6_a);
    let b_addr = echo_server(b.ns().net(), ip_b);
    exchange(a.ns().net(), b_addr, ip_a);
    let gateway = echo_server(host.ns().net(), ip6(1));
    exchange(a.ns().net(), gateway, ip6_a);
    let beyond = echo_server(host.ns().net(), outside);
    exchange(b.ns().net(), beyond, ip6_b);

    // An IPv6 address outside the subnet, its gateway, or on a bridge without IPv6 is
    // refused before any link is made.
    let c = pod("c6").await;
    for (bridge, ip6, reason) in [
        (&bridge, Ipv6Addr::LOCALHOST, "outside the subnet"),
        (&bridge, ip6(1), "the gateway"),
        (&Bridge::default(), ip6(4), "no IPv6 subnet"),
    ] {
        let err = bridge
            .attach_dual_stack(
                &net,
                c.ns().net(),
                "veth-c",
                Ipv4Addr::new(10, 90, 0, 4),
                Some(ip6),
            )
            .await
            .expect_err("refused");
        assert!(
            matches!(err, Error::InvalidPodAddress { .. }) && err.to_string().contains(reason),
            "{err}"
        );
    }
    assert!(net.link("veth-c").await.is_err(), "no link made");
}

#[tokio::test]
async fn ensure_is_idempotent_and_safe_when_racing() {
    let Some(host) = Pod::create("race").await else {
        return;
    };
    let bridge = Bridge::new("br-test", "10.90.4.0/24".parse().expect("subnet"))
        .expect("bridge")
        .with_mtu(9000)
        .expect("mtu");
    // Four callers at once, each on a connection of its own, as separate processes would be.
    let mut connections = Vec::new();
    for _ in 0..4 {
        connections.push(host.netlink().await);
    }
    let results = futures::future::join_all(connections.iter().map(|n| bridge.ensure(n))).await;
    let made: Vec<bool> = results.into_iter().map(|r| r.expect("ensure")).collect();
    assert_eq!(
        made.iter().filter(|m| **m).count(),
        1,
        "one caller made it: {made:?}"
    );
    let net = host.netlink().await;
    assert!(
        !bridge.ensure(&net).await.expect("ensure again"),
        "made before"
    );
    let links = net.links().await.expect("links");
    let bridges: Vec<_> = links.iter().filter(|l| l.name == "br-test").collect();
    assert_eq!(bridges.len(), 1, "{links:?}");
    assert_eq!(bridges[0].mtu, Some(9000));
    assert!(bridges[0].up);
    let addresses = net.addresses().await.expect("addresses");
    let on_bridge: Vec<_> = addresses
        .iter()
        .filter(|a| a.link_index == bridges[0].index && a.address.is_ipv4())
        .collect();
    assert_eq!(on_bridge.len(), 1, "one gateway address: {addresses:?}");
    assert_eq!(
        on_bridge[0].address,
        IpAddr::V4(Ipv4Addr::new(10, 90, 4, 1))
    );

    // A link of the bridge's name that is not a bridge is refused, not taken over.
    let err = Bridge::new("lo", Bridge::DEFAULT_SUBNET)
        .expect("bridge")
        .ensure(&net)
        .await
        .expect_err("lo is no bridge");
    assert!(
        matches!(&err, Error::NotABridge { name, .. } if name == "lo"),
        "{err}"
    );
}

#[tokio::test]
async fn detach_removes_the_pair_and_leaves_other_links_alone() {
    let Some(host) = Pod::create("detach").await else {
        return;
    };
    let a = pod("a").await;
    let bridge = Bridge::default();
    let net = host.netlink().await;
    bridge.ensure(&net).await.expect("ensure");
    bridge
        .attach(&net, a.ns().net(), "veth-a", Ipv4Addr::new(10, 90, 0, 9))
        .await
        .expect("attach");

    bridge.detach(&net, "veth-a").await.expect("detach");
    assert_no_veth(&net).await;
    let inside = a.ns().netlink().await.expect("pod netlink");
    let links = inside.links().await.expect("pod links");
    assert!(links.iter().all(|l| l.name != POD_INTERFACE), "{links:?}");
    // Again: already gone is no error.
    bridge.detach(&net, "veth-a").await.expect("detach again");

    // Neither the bridge nor `lo` is a pod's veth: both are refused and stay.
    for name in ["lo", "podkit0"] {
        let err = bridge.detach(&net, name).await.expect_err("not a port");
        assert!(matches!(&err, Error::NotAPort { .. }), "{err}");
        net.link(name).await.expect("still there");
    }

    // The pod can be attached again, with the same names.
    bridge
        .attach(&net, a.ns().net(), "veth-a", Ipv4Addr::new(10, 90, 0, 9))
        .await
        .expect("attach again");
}

#[tokio::test]
async fn a_failed_attach_leaves_no_veth_and_never_deletes_anothers() {
    let Some(host) = Pod::create("undo").await else {
        return;
    };
    let (a, b) = (pod("a").await, pod("b").await);
    let bridge = Bridge::default();
    let net = host.netlink().await;
    bridge.ensure(&net).await.expect("ensure");

    // Pod B has a default route already, so the last step of its attach fails: the pair
    // made before must go again.
    let inside = b.ns().netlink().await.expect("pod netlink");
    // (A veth pair inside the pod: this kernel has no dummy links.)
    inside
        .add_veth("x0", "x1", b.ns().net())
        .await
        .expect("a pair inside pod b");
    inside.link_up("x0").await.expect("x0 up");
    inside
        .add_address("x0", IpAddr::V4(Ipv4Addr::new(198, 18, 1, 1)), 24)
        .await
        .expect("x0 address");
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .gateway(Ipv4Addr::new(198, 18, 1, 2))
        .build();
    inside
        .handle()
        .route()
        .add(route)
        .execute()
        .await
        .expect("default route");
    let err = bridge
        .attach(&net, b.ns().net(), "veth-b", Ipv4Addr::new(10, 90, 0, 3))
        .await
        .expect_err("a second default route");
    assert!(
        matches!(&err, Error::Netlink { op, .. } if op.contains("route")),
        "{err}"
    );
    assert_no_veth(&net).await;
    let links = inside.links().await.expect("pod links");
    assert!(links.iter().all(|l| l.name != POD_INTERFACE), "{links:?}");

    // A host_if in use already fails before anything is made, and the existing pair stays.
    bridge
        .attach(&net, a.ns().net(), "veth-a", Ipv4Addr::new(10, 90, 0, 2))
        .await
        .expect("attach a");
    let c = pod("c").await;
    bridge
        .attach(&net, c.ns().net(), "veth-a", Ipv4Addr::new(10, 90, 0, 4))
        .await
        .expect_err("veth-a exists");
    net.link("veth-a").await.expect("a's veth stays");
    // And a pod that has an eth0 already is refused, with nothing left over.
    bridge
        .attach(&net, a.ns().net(), "veth-a2", Ipv4Addr::new(10, 90, 0, 5))
        .await
        .expect_err("a has eth0");
    let err = net.link("veth-a2").await.expect_err("no veth-a2");
    assert!(matches!(err, Error::LinkNotFound { .. }), "{err}");

    // Addresses the bridge's pods cannot have are refused before any link is made.
    for ip in [
        [10, 90, 0, 0],
        [10, 90, 0, 1],
        [10, 90, 255, 255],
        [10, 91, 0, 2],
    ] {
        let err = bridge
            .attach(&net, c.ns().net(), "veth-c", Ipv4Addr::from(ip))
            .await
            .expect_err("invalid address");
        assert!(matches!(err, Error::InvalidPodAddress { .. }), "{err}");
    }
    let err = net.link("veth-c").await.expect_err("no veth-c");
    assert!(matches!(err, Error::LinkNotFound { .. }), "{err}");
}

#[test]
fn configuration_is_checked() {
    let bridge = Bridge::default();
    assert_eq!(bridge.name(), "podkit0");
    assert_eq!(bridge.subnet().to_string(), "10.90.0.0/16");
    assert_eq!(bridge.gateway(), Ipv4Addr::new(10, 90, 0, 1));
    assert_eq!(bridge.mtu(), 65535);
    let subnet: Subnet = "10.90.0.0/16".parse().expect("subnet");
    assert!(matches!(
        Bridge::new("a-name-too-long-0", subnet),
        Err(Error::InvalidLinkName { .. })
    ));
    assert!(matches!(
        Bridge::new("br0", "10.90.0.0/31".parse().expect("subnet")),
        Err(Error::InvalidSubnet { .. })
    ));
    assert!(matches!(
        Bridge::default().with_mtu(65536),
        Err(Error::InvalidMtu { .. })
    ));
    let err = "10.90.1.0/16".parse::<Subnet>().expect_err("host bits");
    assert!(
        err.to_string().contains("did you mean 10.90.0.0/16"),
        "{err}"
    );
    assert!("10.90.0.0".parse::<Subnet>().is_err());
    assert!("10.90.0.0/33".parse::<Subnet>().is_err());
    let all: Subnet = "0.0.0.0/0".parse().expect("everything");
    assert_eq!(all.broadcast(), Ipv4Addr::BROADCAST);
}

#[test]
fn leases_skip_the_gateway_continue_after_the_last_and_wrap() {
    let root = tempfile::tempdir().expect("tempdir");
    // 10.90.0.0/29: .0 network, .1 gateway, .7 broadcast; pods get .2 to .6.
    let subnet: Subnet = "10.90.0.0/29".parse().expect("subnet");
    let ipam = Ipam::open(root.path(), subnet).expect("open");
    let ip = |last| Ipv4Addr::new(10, 90, 0, last);
    assert_eq!(ipam.allocate("pod-a").expect("a"), ip(2));
    assert_eq!(ipam.allocate("pod-b").expect("b"), ip(3));
    // The same owner gets its own lease back.
    assert_eq!(ipam.allocate("pod-a").expect("a again"), ip(2));
    // A released address is not reused at once: the next starts after the last one.
    assert_eq!(ipam.release("pod-a").expect("release"), vec![ip(2)]);
    assert_eq!(ipam.allocate("pod-c").expect("c"), ip(4));
    assert_eq!(ipam.allocate("pod-d").expect("d"), ip(5));
    assert_eq!(ipam.allocate("pod-e").expect("e"), ip(6));
    // Past the end it wraps to the first free address.
    assert_eq!(ipam.allocate("pod-f").expect("f"), ip(2));
    let err = ipam.allocate("pod-g").expect_err("full");
    assert!(matches!(err, Error::SubnetFull { leases: 5, .. }), "{err}");
    assert!(err.to_string().contains("10.90.0.0/29"), "{err}");

    assert_eq!(
        ipam.release_ip(ip(4)).expect("release_ip"),
        Some("pod-c".to_owned())
    );
    assert_eq!(ipam.release_ip(ip(4)).expect("again"), None);
    assert!(ipam.release("nobody").expect("release").is_empty());
    assert_eq!(ipam.allocate("pod-g").expect("g"), ip(4));
    let leases = ipam.leases().expect("leases");
    let expected: Vec<_> = [
        (2, "pod-f"),
        (3, "pod-b"),
        (4, "pod-g"),
        (5, "pod-d"),
        (6, "pod-e"),
    ]
    .into_iter()
    .map(|(last, owner)| (ip(last), owner.to_owned()))
    .collect();
    assert_eq!(leases, expected);

    // The files are host-local's: DIR/<subnet>/<ip> holding the owner.
    let file = root.path().join("10.90.0.0-29").join("10.90.0.3");
    assert_eq!(std::fs::read_to_string(file).expect("lease file"), "pod-b");

    // A second handle (another process) sees the same leases and the same position.
    let again = Ipam::open(root.path(), subnet).expect("reopen");
    assert_eq!(again.leases().expect("leases"), expected);
    again.release_ip(ip(5)).expect("release");
    again.release_ip(ip(2)).expect("release");
    assert_eq!(again.allocate("pod-h").expect("h"), ip(5));
}

#[test]
fn a_pods_ipv6_address_follows_from_its_ipv4_one() {
    let subnet: Subnet = "10.90.0.0/16".parse().expect("subnet");
    let subnet6 = Bridge::DEFAULT_SUBNET6;
    let pod = |ip: [u8; 4]| subnet6.pod_address(subnet, Ipv4Addr::from(ip));
    let ip6 = |text: &str| text.parse::<Ipv6Addr>().expect("address");
    assert_eq!(pod([10, 90, 0, 2]).expect("a"), ip6("fd90:706f:646b::2"));
    assert_eq!(
        pod([10, 90, 2, 114]).expect("b"),
        ip6("fd90:706f:646b::272")
    );
    assert_eq!(
        pod([10, 90, 255, 254]).expect("c"),
        ip6("fd90:706f:646b::fffe")
    );
    // The gateways match.
    assert_eq!(pod([10, 90, 0, 1]).expect("gateway"), subnet6.gateway());
    let err = pod([10, 91, 0, 2]).expect_err("outside");
    assert!(matches!(err, Error::InvalidPodAddress { .. }), "{err}");
    // An IPv6 subnet with fewer host bits than the IPv4 one is refused, naming the size.
    let small: Subnet6 = "fd90:706f:646b::/120".parse().expect("subnet");
    let err = Bridge::default().with_ipv6(small).expect_err("too small");
    assert!(
        matches!(&err, Error::InvalidSubnet { reason, .. } if reason.contains("/112 or larger")),
        "{err}"
    );
    // Subnets that cannot hold a pod, or are no IPv6 network, are refused.
    for text in [
        "fd90::/127",
        "fd90::1/64",
        "10.90.0.0/16",
        "fd90::/129",
        "fd90::",
    ] {
        let err = text
            .parse::<Subnet6>()
            .and_then(|subnet6| Bridge::default().with_ipv6(subnet6).map(drop));
        assert!(
            matches!(err, Err(Error::InvalidSubnet { .. })),
            "{text}: {err:?}"
        );
    }
}

#[test]
fn leftovers_of_a_crash_are_no_leases() {
    let root = tempfile::tempdir().expect("tempdir");
    let ipam = Ipam::open(
        root.path(),
        "10.90.0.0/24".parse::<Subnet>().expect("subnet"),
    )
    .expect("open");
    // A write cut short before its rename, and a file that is no lease.
    std::fs::write(ipam.dir().join(".tmp-10.90.0.2"), "pod-x").expect("tmp");
    std::fs::write(ipam.dir().join("notes"), "hello").expect("foreign file");
    std::fs::write(ipam.dir().join("192.0.2.7"), "pod-y").expect("another subnet's address");
    assert!(ipam.leases().expect("leases").is_empty());
    assert_eq!(
        ipam.allocate("pod-a").expect("a"),
        Ipv4Addr::new(10, 90, 0, 2)
    );
    assert!(!ipam.dir().join(".tmp-10.90.0.2").exists(), "swept");
    assert!(ipam.dir().join("notes").exists(), "not ours to remove");

    for owner in ["", "two words", "line\nbreak"] {
        let err = ipam.allocate(owner).expect_err("invalid owner");
        assert!(matches!(err, Error::InvalidOwner { .. }), "{err}");
    }
    let err = Ipam::open(
        root.path(),
        "10.90.0.0/31".parse::<Subnet>().expect("subnet"),
    )
    .expect_err("too small");
    assert!(matches!(err, Error::InvalidSubnet { .. }), "{err}");
}

#[test]
fn concurrent_allocations_get_distinct_addresses() {
    let root = tempfile::tempdir().expect("tempdir");
    let subnet: Subnet = "10.90.0.0/24".parse().expect("subnet");
    let (threads, each) = (8, 20);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let root = root.path().to_path_buf();
            std::thread::spawn(move || {
                // A handle of its own, and so a lock file description of its own, as a
                // separate process would have.
                let ipam = Ipam::open(&root, subnet).expect("open");
                (0..each)
                    .map(|i| ipam.allocate(&format!("pod-{t}-{i}")).expect("allocate"))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all = Vec::new();
    for handle in handles {
        all.extend(handle.join().expect("thread"));
    }
    let distinct: HashSet<_> = all.iter().collect();
    assert_eq!(distinct.len(), threads * each, "{all:?}");
    assert!(all.iter().all(|ip| subnet.contains(*ip)
        && *ip != subnet.gateway()
        && *ip != subnet.network()
        && *ip != subnet.broadcast()));
    let ipam = Ipam::open(root.path(), subnet).expect("open");
    assert_eq!(ipam.leases().expect("leases").len(), threads * each);
}

/// Starts a thread that accepts one connection on `ip` inside `ns`, reads a line and writes
/// it back with the peer's address. Returns where it listens.
fn echo_server(ns: &netns::Namespace, ip: impl Into<IpAddr>) -> SocketAddr {
    let listener = ns
        .listen_tcp(SocketAddr::new(ip.into(), 0))
        .expect("listen");
    listener.set_nonblocking(false).expect("blocking");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || -> std::io::Result<()> {
        let (mut conn, peer) = listener.accept()?;
        conn.set_read_timeout(Some(TIMEOUT))?;
        let mut buf = [0; 4];
        conn.read_exact(&mut buf)?;
        write!(conn, "{} {peer}", String::from_utf8_lossy(&buf))
    });
    addr
}

/// Connects from inside `ns` to `addr`, and checks the echo and that the server saw `from`.
fn exchange(ns: &netns::Namespace, addr: SocketAddr, from: impl Into<IpAddr>) {
    let from = from.into();
    let mut conn = ns
        .connect_tcp(addr, TIMEOUT)
        .unwrap_or_else(|err| panic!("connect to {addr}: {err}"));
    conn.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    conn.write_all(b"ping").expect("write");
    let mut reply = String::new();
    conn.read_to_string(&mut reply).expect("read");
    let (word, peer) = reply.split_once(' ').expect("echo");
    assert_eq!(word, "ping");
    let peer: SocketAddr = peer.parse().expect("peer address");
    assert_eq!(peer.ip(), from, "{addr} saw the pod's own address");
}

async fn assert_no_veth(net: &Netlink) {
    let links = net.links().await.expect("links");
    let veths: Vec<_> = links
        .iter()
        .filter(|l| l.kind.as_deref() == Some("veth"))
        .collect();
    assert!(veths.is_empty(), "veths remain: {veths:?}");
}
