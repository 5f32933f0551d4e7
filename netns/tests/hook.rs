//! The connect-time hostPort hook against the real kernel: loaded, pinned on a bpffs of its
//! own, filled, read back, emptied and removed.
//!
//! Network rule (DESIGN.md): the hook is attached to the host's cgroup v2 root (that is where
//! it must be), but it rewrites only the clients of the network namespace that loaded it, and
//! these tests load it from a namespace each test makes: the machine's own network is never
//! touched. Traffic goes to loopback addresses inside that namespace. Needs root.

mod common;
use common::pod;

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use netns::{ConnectHook, HostPort, Protocol};

/// The "pod": an address on the test namespace's loopback other than 127.0.0.1.
const POD: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

#[tokio::test]
async fn connects_to_a_host_port_are_sent_to_the_pod_and_undone_when_it_goes() {
    if !common::require_root() {
        return;
    }
    let host = pod("hook").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let pins = dir.path().join("bpf");
    let ran = host.ns().net().run_async(move || exercise(&pins)).await;
    // Removed even if a check failed, before the failure is reported: by gc's call once its
    // ports are gone (the checks end with none), else unconditionally.
    let unused = ConnectHook::remove_if_unused(dir.path().join("bpf"));
    if !matches!(unused, Ok(true)) {
        let _ = ConnectHook::remove(dir.path().join("bpf"));
    }
    ran.expect("enter the namespace").expect("the checks");
    assert!(
        unused.expect("remove"),
        "there was an unused hook to remove"
    );
    assert!(!dir.path().join("bpf").exists(), "its bpffs is gone");
    assert!(
        !ConnectHook::remove(dir.path().join("bpf")).expect("again"),
        "nothing the 2nd time"
    );
}

/// The checks, on a thread in the test's network namespace (whose clients the hook rewrites).
fn exercise(pins: &std::path::Path) -> Result<(), String> {
    let hook = ConnectHook::ensure(pins).map_err(|e| format!("ensure: {e:?}"))?;
    assert!(ConnectHook::open(pins).expect("open").is_some());
    // A second ensure finds it in place.
    ConnectHook::ensure(pins).map_err(|e| format!("ensure again: {e:?}"))?;

    let app = TcpListener::bind((POD, 0)).expect("app");
    let app_port = app.local_addr().expect("addr").port();
    let udp_app = UdpSocket::bind((POD, 0)).expect("udp app");
    let udp_port = udp_app.local_addr().expect("addr").port();
    let (host_port, udp_host_port) = (free_port(), free_port());
    hook.set(
        POD,
        &[
            HostPort::new(Protocol::Tcp, host_port, app_port),
            HostPort::new(Protocol::Udp, udp_host_port, udp_port),
        ],
    )
    .map_err(|e| format!("set: {e:?}"))?;
    // In use: gc's removal leaves it.
    assert!(!ConnectHook::remove_if_unused(pins).expect("remove_if_unused"));
    let mut expected = vec![
        (format!("{host_port}/tcp"), POD, app_port),
        (format!("{udp_host_port}/udp"), POD, udp_port),
    ];
    expected.sort();
    assert_eq!(hook.ports().expect("ports"), expected);

    // TCP: nothing listens on 127.0.0.1:host_port, yet the client reaches the app, which sees
    // a connection to its own address; getpeername() says what the client asked for. Any
    // 127/8 address counts as the host's loopback (hostIP unset).
    for asked in [Ipv4Addr::LOCALHOST, Ipv4Addr::new(127, 1, 2, 3)] {
        let target = SocketAddr::from((asked, host_port));
        let mut client =
            TcpStream::connect_timeout(&target, Duration::from_secs(5)).expect("connect");
        let (mut served, _) = app.accept().expect("accept");
        assert_eq!(
            served.local_addr().expect("local"),
            SocketAddr::from((POD, app_port))
        );
        assert_eq!(client.peer_addr().expect("peer"), target);
        served.write_all(b"hello").expect("write");
        drop(served);
        let mut text = String::new();
        client.read_to_string(&mut text).expect("read");
        assert_eq!(text, "hello");
    }
    // A socket bound to a loopback address is left alone (the DNAT's part).
    let bound = socket2_bound_connect(host_port);
    assert_eq!(bound, Some(ErrorKind::ConnectionRefused), "not rewritten");

    // UDP: sendto() rewritten, and the reply comes from the address the client sent to.
    let client = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("udp client");
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    client
        .send_to(b"ping", (Ipv4Addr::LOCALHOST, udp_host_port))
        .expect("send");
    let mut buf = [0u8; 16];
    let (n, from) = udp_app.recv_from(&mut buf).expect("the app gets it");
    assert_eq!(&buf[..n], b"ping");
    udp_app.send_to(b"pong", from).expect("reply");
    let (n, from) = client.recv_from(&mut buf).expect("the reply");
    assert_eq!(&buf[..n], b"pong");
    assert_eq!(from, SocketAddr::from((Ipv4Addr::LOCALHOST, udp_host_port)));

    // IPv6: a dual stack pod's port to clients at [::1], sent to its IPv6 address (here one
    // more address on the test namespace's loopback), getpeername() giving back [::1].
    let added = std::process::Command::new("ip")
        .args([
            "-6",
            "address",
            "add",
            "fd90:706f:646b::5/128",
            "dev",
            "lo",
            "nodad",
        ])
        .status()
        .expect("run ip");
    assert!(added.success(), "ip -6 address add");
    let pod6: Ipv6Addr = "fd90:706f:646b::5".parse().expect("address");
    let app6 = TcpListener::bind((pod6, 0)).expect("app6");
    let app6_port = app6.local_addr().expect("addr").port();
    let host_port6 = free_port();
    hook.set_dual_stack(
        POD,
        Some(pod6),
        &[HostPort::new(Protocol::Tcp, host_port6, app6_port)],
    )
    .map_err(|e| format!("set_dual_stack: {e:?}"))?;
    let target = SocketAddr::from((Ipv6Addr::LOCALHOST, host_port6));
    let mut client = TcpStream::connect_timeout(&target, Duration::from_secs(5)).expect("connect6");
    let (mut served, _) = app6.accept().expect("accept6");
    assert_eq!(
        served.local_addr().expect("local"),
        SocketAddr::from((pod6, app6_port))
    );
    assert_eq!(client.peer_addr().expect("peer"), target);
    served.write_all(b"hello6").expect("write");
    drop(served);
    let mut text = String::new();
    client.read_to_string(&mut text).expect("read");
    assert_eq!(text, "hello6");
    // The pod's IPv4 entry for the same port: 127.0.0.1 still reaches it over IPv4 (the app
    // listens on its IPv6 address only here: refused, but rewritten to the pod's IPv4 one).
    assert_eq!(hook.ports().expect("ports").len(), 1);

    // A hostIP names one address only (and a set without an IPv6 address takes the pod's
    // IPv6 entries off).
    let on_one = free_port();
    hook.set(
        POD,
        &[HostPort::new(Protocol::Tcp, on_one, app_port).on(Ipv4Addr::new(127, 0, 0, 9))],
    )
    .map_err(|e| format!("set: {e:?}"))?;
    assert_eq!(
        hook.ports().expect("ports").len(),
        1,
        "the pod's ports replaced"
    );
    TcpStream::connect((Ipv4Addr::new(127, 0, 0, 9), on_one)).expect("on its hostIP");
    app.accept().expect("accept");
    assert_eq!(
        TcpStream::connect((Ipv4Addr::LOCALHOST, on_one))
            .map_err(|e| e.kind())
            .err(),
        Some(ErrorKind::ConnectionRefused),
        "not on another address"
    );
    assert_eq!(
        TcpStream::connect((Ipv6Addr::LOCALHOST, host_port6))
            .map_err(|e| e.kind())
            .err(),
        Some(ErrorKind::ConnectionRefused),
        "the IPv6 entry is gone"
    );

    // A hook of an older podkit, without the IPv6 programs (its pins stood for here by this
    // one's less those of connect6): ensure loads the new one and carries its pods' ports over.
    std::fs::remove_file(pins.join("links").join("podkit_connect6")).expect("unpin connect6");
    std::fs::remove_file(pins.join("maps").join("hostports6")).expect("unpin hostports6");
    assert!(
        ConnectHook::open(pins).expect("open").is_none(),
        "not whole"
    );
    let hook =
        ConnectHook::ensure(pins).map_err(|e| format!("ensure over an older hook: {e:?}"))?;
    assert_eq!(hook.ports().expect("ports").len(), 1, "carried over");
    TcpStream::connect((Ipv4Addr::new(127, 0, 0, 9), on_one)).expect("still rewritten");
    app.accept().expect("accept");

    // Taken off (the pod gone): no longer rewritten.
    let gone = hook.retain(|| Ok(|ip| ip != POD)).expect("retain");
    assert_eq!(gone, vec![POD]);
    assert!(hook.ports().expect("ports").is_empty());
    assert_eq!(
        TcpStream::connect((Ipv4Addr::new(127, 0, 0, 9), on_one))
            .map_err(|e| e.kind())
            .err(),
        Some(ErrorKind::ConnectionRefused)
    );
    Ok(())
}

/// Connects from a socket bound to 127.0.0.1 to 127.0.0.1:`port`; the error kind, if any.
fn socket2_bound_connect(port: u16) -> Option<ErrorKind> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, socket};
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::empty(),
        None,
    )
    .expect("socket");
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::from(std::net::SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)),
    )
    .expect("bind");
    connect(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::from(std::net::SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)),
    )
    .err()
    .map(|e| std::io::Error::from(e).kind())
}

/// A port free on 127.0.0.1 for TCP and UDP in this namespace.
fn free_port() -> u16 {
    loop {
        let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let port = tcp.local_addr().expect("addr").port();
        if UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
}
