//! portfwd against the real kernel: real pod namespaces, real sockets, real data both ways.
//! Needs root (CI runs as root); each test makes its own pod and removes it, also when it fails
//! (the `Pod` guard), and stops the servers and forwards it started (their guards).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use netns::{Namespace, PodNamespaces};
use portfwd::{
    Config, Error, Forwarder, ListenAddress, PortMapping, ProxyProtocol, Stats, Stopped, Target,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long any awaited condition may take before the test fails: generous, never a speed
/// assertion.
const DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_each_way_arrives_byte_exact() {
    let Some(pod) = Pod::create("gib").await else {
        return;
    };
    const BLOCKS: u64 = 1024; // of 1 MiB: 1 GiB each way
    let listener = pod.listen(0);
    let port = listener.local_addr().expect("addr").port();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("accept in pod");
        let (mut rx, mut tx) = stream.into_split();
        let (received, sent) = tokio::join!(receive_blocks(&mut rx, 0xA, BLOCKS), async {
            send_blocks(&mut tx, 0xB, BLOCKS).await;
            tx.shutdown().await.expect("server half-close");
        });
        let () = sent;
        received
    });
    let fwd = Forward::start(
        &pod,
        Config::new(pod.target(), vec![PortMapping::tcp(0, port)]),
    )
    .await;
    let client = TcpStream::connect(fwd.v4()).await.expect("connect");
    let (mut rx, mut tx) = client.into_split();
    let (received, ()) = tokio::join!(receive_blocks(&mut rx, 0xB, BLOCKS), async {
        send_blocks(&mut tx, 0xA, BLOCKS).await;
        tx.shutdown().await.expect("client half-close");
    });
    assert_eq!(received, BLOCKS << 20, "client received");
    assert_eq!(
        server.await.expect("server"),
        BLOCKS << 20,
        "server received"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_connections() {
    let Some(pod) = Pod::create("many").await else {
        return;
    };
    raise_fd_limit();
    const N: usize = 1000;
    let server = EchoServer::start(&pod, 0);
    let fwd = Forward::start(
        &pod,
        Config::new(pod.target(), vec![PortMapping::tcp(0, server.port)]),
    )
    .await;
    let mut clients = Vec::with_capacity(N);
    for _ in 0..N {
        clients.push(TcpStream::connect(fwd.v4()).await.expect("connect"));
    }
    // Every connection talks while all of them are open.
    for (i, client) in clients.iter_mut().enumerate() {
        client
            .write_all(format!("{i:08}").as_bytes())
            .await
            .expect("write");
    }
    for (i, client) in clients.iter_mut().enumerate() {
        let mut buf = [0u8; 8];
        client.read_exact(&mut buf).await.expect("echo");
        assert_eq!(&buf, format!("{i:08}").as_bytes());
    }
    assert_eq!(fwd.stats.connections_open(), N);
    assert_eq!(server.open.load(Ordering::Relaxed), N, "all dialed at once");
    drop(clients);
    wait_for("every connection closed", || {
        fwd.stats.connections_open() == 0
    })
    .await;
}

#[tokio::test]
async fn half_close_passes_through_and_the_reply_still_arrives() {
    let Some(pod) = Pod::create("half").await else {
        return;
    };
    // The server answers only once the client is done sending: it needs the half-close.
    let listener = pod.listen(0);
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let mut request = Vec::new();
        stream.read_to_end(&mut request).await.expect("read to EOF");
        let reply = format!("got {} bytes", request.len());
        stream.write_all(reply.as_bytes()).await.expect("reply");
    });
    let fwd = Forward::start(
        &pod,
        Config::new(pod.target(), vec![PortMapping::tcp(0, port)]),
    )
    .await;
    let mut client = TcpStream::connect(fwd.v4()).await.expect("connect");
    client.write_all(&vec![7u8; 300_000]).await.expect("write");
    client.shutdown().await.expect("shutdown write");
    let mut reply = String::new();
    deadline(client.read_to_string(&mut reply))
        .await
        .expect("read reply");
    assert_eq!(reply, "got 300000 bytes");
}

#[tokio::test]
async fn refused_dial_closes_that_connection_and_forwarding_goes_on() {
    let Some(pod) = Pod::create("refuse").await else {
        return;
    };
    let port = pod.free_port();
    let fwd = Forward::start(
        &pod,
        Config::new(pod.target(), vec![PortMapping::tcp(0, port)]),
    )
    .await;
    // The forward resets the connection; the reset can beat `connect` to its result.
    match TcpStream::connect(fwd.v4()).await {
        Ok(mut client) => {
            let mut buf = [0u8; 1];
            let read = deadline(client.read(&mut buf)).await;
            assert!(
                matches!(read, Ok(0) | Err(_)),
                "no data from a refused dial: {read:?}"
            );
        }
        Err(err) => assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}"),
    }
    wait_for("the dial failure counted", || {
        fwd.stats.dial_failures() == 1
    })
    .await;

    let server = EchoServer::start(&pod, port);
    assert_eq!(echo(fwd.v4(), b"after").await, b"after");
    assert_eq!(fwd.stats.dial_failures(), 1);
    drop(server);
}

#[tokio::test]
async fn a_server_on_ipv6_loopback_only_is_dialed_at_its_address() {
    let Some(pod) = Pod::create("v6").await else {
        return;
    };
    let listener = TcpListener::from_std(
        pod.net()
            .listen_tcp(SocketAddr::from((Ipv6Addr::LOCALHOST, 0)))
            .expect("listen on ::1 in pod"),
    )
    .expect("tokio listener");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        stream.write_all(b"v6 here").await.expect("write");
    });
    let fwd = Forward::start(
        &pod,
        Config::new(pod.target(), vec![PortMapping::tcp(0, port)]),
    )
    .await;
    let mut client = TcpStream::connect(fwd.v4()).await.expect("connect");
    let mut reply = String::new();
    deadline(client.read_to_string(&mut reply))
        .await
        .expect("read");
    assert_eq!(reply, "v6 here");
}

#[tokio::test]
async fn a_refused_dial_is_reported_with_the_port_and_both_loopbacks() {
    let Some(pod) = Pod::create("why").await else {
        return;
    };
    let port = pod.free_port();
    let config = Config::new(pod.target(), vec![PortMapping::tcp(0, port)])
        .addresses(vec![ListenAddress::Ip(Ipv4Addr::LOCALHOST.into())]);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let forwarder = Forwarder::bind(config)
        .await
        .expect("bind")
        .on_event(move |event| {
            if let portfwd::Event::DialFailed { error, .. } = event {
                let _ = tx.send(error.to_string());
            }
        });
    let addr = forwarder.listeners()[0].local;
    let shutdown = CancellationToken::new();
    let _running = AbortOnDrop(tokio::spawn(forwarder.run(shutdown.clone())));
    let _client = TcpStream::connect(addr).await.expect("connect");
    let message = deadline(rx.recv()).await.expect("a DialFailed event");
    assert!(
        message.contains(&format!("localhost port {port}"))
            && message.contains("127.0.0.1: Connection refused")
            && message.contains("[::1]: Connection refused")
            && message.contains(&pod.name),
        "{message}"
    );
    shutdown.cancel();
}

#[tokio::test]
async fn server_restart_inside_the_pod_is_survived() {
    let Some(pod) = Pod::create("restart").await else {
        return;
    };
    let first = EchoServer::start(&pod, 0);
    let port = first.port;
    let fwd = Forward::start(
        &pod,
        Config::new(pod.target(), vec![PortMapping::tcp(0, port)]),
    )
    .await;
    assert_eq!(echo(fwd.v4(), b"one").await, b"one");
    first.stop().await;
    // The same port, a new listener: as a restarted member would do.
    let second = EchoServer::start(&pod, port);
    assert_eq!(echo(fwd.v4(), b"two").await, b"two");
    assert_eq!(second.accepted.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn udp_echo_with_a_flow_per_client_and_an_idle_timeout() {
    let Some(pod) = Pod::create("udp").await else {
        return;
    };
    let inside = UdpSocket::from_std(
        pod.net()
            .bind_udp(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .expect("udp in pod"),
    )
    .expect("tokio udp");
    let port = inside.local_addr().expect("addr").port();
    let server = tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        loop {
            let (n, from) = inside.recv_from(&mut buf).await.expect("recv in pod");
            inside.send_to(&buf[..n], from).await.expect("echo in pod");
        }
    });
    let _server = AbortOnDrop(server);
    let config = Config::new(pod.target(), vec![PortMapping::udp(0, port)])
        .udp_idle_timeout(Duration::from_millis(200));
    let fwd = Forward::start(&pod, config).await;
    let mut clients = Vec::new();
    for i in 0..2 {
        let client = UdpSocket::bind("127.0.0.1:0").await.expect("client");
        for round in 0..3 {
            let message = format!("client {i} round {round}");
            client
                .send_to(message.as_bytes(), fwd.v4())
                .await
                .expect("send");
            let mut buf = [0u8; 64];
            let (n, from) = deadline(client.recv_from(&mut buf)).await.expect("echo");
            assert_eq!(&buf[..n], message.as_bytes());
            assert_eq!(from, fwd.v4(), "replies come from the forwarded port");
        }
        clients.push(client);
    }
    assert_eq!(fwd.stats.udp_flows_open(), 2, "one flow per client");
    wait_for("idle flows ended", || fwd.stats.udp_flows_open() == 0).await;
    // A new datagram opens a new flow.
    clients[0].send_to(b"again", fwd.v4()).await.expect("send");
    let mut buf = [0u8; 16];
    let (n, _) = deadline(clients[0].recv_from(&mut buf))
        .await
        .expect("echo");
    assert_eq!(&buf[..n], b"again");
}

#[tokio::test]
async fn udp_finds_a_server_on_ipv6_loopback_after_port_unreachable() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("portfwd=debug")
        .try_init();
    let Some(pod) = Pod::create("udp6").await else {
        return;
    };
    let inside = UdpSocket::from_std(
        pod.net()
            .bind_udp(SocketAddr::from((Ipv6Addr::LOCALHOST, 0)))
            .expect("udp on ::1 in pod"),
    )
    .expect("tokio udp");
    let port = inside.local_addr().expect("addr").port();
    let _server = AbortOnDrop(tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        loop {
            let (n, from) = inside.recv_from(&mut buf).await.expect("recv in pod");
            inside.send_to(&buf[..n], from).await.expect("echo in pod");
        }
    }));
    let fwd = Forward::start(
        &pod,
        Config::new(pod.target(), vec![PortMapping::udp(0, port)]),
    )
    .await;
    let client = UdpSocket::bind("127.0.0.1:0").await.expect("client");
    // The first datagram goes to 127.0.0.1 and is lost, as UDP may lose any: a client resends.
    let end = Instant::now() + DEADLINE;
    let mut buf = [0u8; 16];
    loop {
        assert!(Instant::now() < end, "no reply from the ::1 server");
        client.send_to(b"ping6", fwd.v4()).await.expect("send");
        let reply =
            tokio::time::timeout(Duration::from_millis(200), client.recv_from(&mut buf)).await;
        if let Ok(received) = reply {
            let (n, _) = received.expect("recv");
            assert_eq!(&buf[..n], b"ping6");
            break;
        }
    }
}

#[tokio::test]
async fn address_localhost_binds_both_loopbacks_and_an_ip_binds_only_itself() {
    let Some(pod) = Pod::create("addr").await else {
        return;
    };
    let server = EchoServer::start(&pod, 0);
    let both = Forward::start(
        &pod,
        Config::new(pod.target(), vec![PortMapping::tcp(0, server.port)]),
    )
    .await;
    let local: Vec<_> = both.listening.iter().map(|l| l.local).collect();
    assert_eq!(local.len(), 2, "{local:?}");
    assert_eq!(local[0].ip(), Ipv4Addr::LOCALHOST);
    assert_eq!(local[1].ip(), Ipv6Addr::LOCALHOST);
    assert_eq!(local[0].port(), local[1].port(), "one random port for both");
    for addr in &local {
        assert_eq!(echo(*addr, b"hi").await, b"hi", "through {addr}");
    }

    let config = Config::new(pod.target(), vec![PortMapping::tcp(0, server.port)])
        .addresses(vec!["127.0.0.1".parse().expect("address")]);
    let v4_only = Forward::start(&pod, config).await;
    assert_eq!(v4_only.listening.len(), 1);
    let port = v4_only.v4().port();
    assert_eq!(echo(v4_only.v4(), b"v4").await, b"v4");
    let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
    let refused = TcpStream::connect(v6).await.expect_err("::1 not bound");
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
}

#[tokio::test]
async fn port_in_use_is_an_error_naming_the_port() {
    let Some(pod) = Pod::create("inuse").await else {
        return;
    };
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("host listener");
    let port = taken.local_addr().expect("addr").port();
    let config = Config::new(pod.target(), vec![PortMapping::tcp(port, 80)])
        .addresses(vec![ListenAddress::Ip(Ipv4Addr::LOCALHOST.into())]);
    let err = Forwarder::bind(config).await.expect_err("port in use");
    assert!(
        matches!(err, Error::PortInUse { addr, .. } if addr.port() == port),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains(&format!("port {port}")) && message.contains("in use"),
        "{message}"
    );

    let taken = std::net::UdpSocket::bind("127.0.0.1:0").expect("host udp");
    let port = taken.local_addr().expect("addr").port();
    let config = Config::new(pod.target(), vec![PortMapping::udp(port, 53)])
        .addresses(vec![ListenAddress::Ip(Ipv4Addr::LOCALHOST.into())]);
    let err = Forwarder::bind(config).await.expect_err("udp port in use");
    assert!(
        matches!(err, Error::PortInUse { addr, .. } if addr.port() == port),
        "{err:?}"
    );
}

#[tokio::test]
async fn deleting_the_pod_ends_the_forward() {
    let Some(mut pod) = Pod::create("gone").await else {
        return;
    };
    let server = EchoServer::start(&pod, 0);
    let config = Config::new(pod.target(), vec![PortMapping::tcp(0, server.port)])
        .watch_interval(Duration::from_millis(20));
    let mut fwd = Forward::start(&pod, config).await;
    let addr = fwd.v4();
    let open = TcpStream::connect(addr).await.expect("connect");
    assert_eq!(echo(addr, b"x").await, b"x");
    pod.delete();
    let stopped = deadline(fwd.task.take().expect("running"))
        .await
        .expect("run task");
    assert!(
        matches!(&stopped, Ok(Stopped::TargetGone { target }) if target.contains(&pod.name)),
        "{stopped:?}"
    );
    assert_eq!(fwd.stats.connections_open(), 0, "connections cut");
    let refused = TcpStream::connect(addr)
        .await
        .expect_err("no longer listening");
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    drop(open);
}

#[tokio::test]
async fn a_pid_target_forwards_until_that_process_exits() {
    let Some(pod) = Pod::create("pid").await else {
        return;
    };
    let server = EchoServer::start(&pod, 0);
    let member = pod
        .ns
        .as_ref()
        .expect("pod")
        .spawn(Command::new("sleep").arg("infinity"))
        .expect("start a member in the pod");
    let mut member = KillOnDrop(member);
    let config = Config::new(
        Target::Pid(member.0.id()),
        vec![PortMapping::tcp(0, server.port)],
    )
    .watch_interval(Duration::from_millis(20));
    let mut fwd = Forward::start(&pod, config).await;
    assert_eq!(echo(fwd.v4(), b"pid").await, b"pid");
    member.0.kill().expect("kill the member");
    member.0.wait().expect("reap the member");
    let stopped = deadline(fwd.task.take().expect("running"))
        .await
        .expect("run task");
    assert!(
        matches!(&stopped, Ok(Stopped::TargetGone { target }) if target.starts_with("pid ")),
        "{stopped:?}"
    );
}

#[tokio::test]
async fn shutdown_closes_the_ports_and_drains_then_cuts_connections() {
    let Some(pod) = Pod::create("shut").await else {
        return;
    };
    let server = EchoServer::start(&pod, 0);
    let config = Config::new(pod.target(), vec![PortMapping::tcp(0, server.port)])
        .drain_timeout(Duration::from_millis(100));
    let mut fwd = Forward::start(&pod, config).await;
    let addr = fwd.v4();
    let mut idle = TcpStream::connect(addr).await.expect("connect");
    idle.write_all(b"x").await.expect("write");
    let mut buf = [0u8; 1];
    idle.read_exact(&mut buf).await.expect("echo");
    fwd.shutdown.cancel();
    let stopped = deadline(fwd.task.take().expect("running"))
        .await
        .expect("run task");
    assert!(matches!(stopped, Ok(Stopped::Shutdown)), "{stopped:?}");
    let refused = TcpStream::connect(addr)
        .await
        .expect_err("no longer listening");
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    let end = deadline(idle.read(&mut buf)).await;
    assert!(
        matches!(end, Ok(0) | Err(_)),
        "the idle connection was cut: {end:?}"
    );
}

#[tokio::test]
async fn cli_random_port_prints_kubectl_lines_and_forwards() {
    let Some(pod) = Pod::create("cli").await else {
        return;
    };
    let server = EchoServer::start(&pod, 0);
    let netns_path = format!("/run/netns/default_{}", pod.name);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_portfwd"))
        .args(["-v", "--netns", &netns_path, "--address", "127.0.0.1,::1"])
        .arg(format!(":{}", server.port))
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start portfwd");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = tokio::io::BufReader::new(stdout);
    let mut line = String::new();
    use tokio::io::AsyncBufReadExt;
    deadline(lines.read_line(&mut line))
        .await
        .expect("first line");
    let prefix = "Forwarding from 127.0.0.1:";
    let suffix = format!(" -> {}\n", server.port);
    assert!(
        line.starts_with(prefix) && line.ends_with(&suffix),
        "{line:?}"
    );
    let port: u16 = line[prefix.len()..line.len() - suffix.len()]
        .parse()
        .expect("port");
    assert_ne!(port, 0);
    line.clear();
    deadline(lines.read_line(&mut line))
        .await
        .expect("second line");
    assert_eq!(
        line,
        format!("Forwarding from [::1]:{port} -> {}\n", server.port)
    );

    assert_eq!(
        echo(SocketAddr::from((Ipv6Addr::LOCALHOST, port)), b"cli").await,
        b"cli"
    );
    line.clear();
    deadline(lines.read_line(&mut line))
        .await
        .expect("connection line");
    assert_eq!(line, format!("Handling connection for {port}\n"));

    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id().expect("pid")).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let status = deadline(child.wait()).await.expect("exit");
    assert!(status.success(), "{status}");
}

#[test]
fn cli_rejects_bad_arguments_with_a_clear_message() {
    let run = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_portfwd"))
            .args(args)
            .output()
            .expect("run portfwd");
        assert!(!output.status.success(), "{args:?} must fail");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    assert!(run(&["web"]).contains("no port mappings"));
    assert!(run(&["web", "80:0"]).contains("\"80:0\""));
    let missing = run(&["pkt-no-such-pod", "8080:80"]);
    assert!(missing.contains("pod pkt-no-such-pod"), "{missing}");
}

// ---- attacks (issue #16, items 15 and 7) ----

/// 400 UDP clients, one datagram each, against the binary limited to 200 descriptors (as
/// `ulimit -n 200` sets it, hard and soft) with `--udp-max-flows 16`. Before the cap each client
/// took a socket until none was left: every later datagram was a warning, and TCP on the same
/// forward stalled until the flows expired. Now the newest client is answered, TCP is relayed,
/// and the log stays short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_udp_spray_cannot_take_the_descriptors_tcp_needs() {
    let Some(pod) = Pod::create("spray").await else {
        return;
    };
    let tcp = EchoServer::start(&pod, 0);
    let udp = UdpEcho::start(&pod, false);
    let fwd = Binary::start(
        &pod,
        Some(200),
        &[("PODKIT_PORTFWD_UDP_MAX_FLOWS", "16")],
        &[
            "--udp-idle-timeout".into(),
            "10m".into(),
            format!(":{}", tcp.port),
            format!(":{}/udp", udp.port),
        ],
        2,
    )
    .await;
    let (tcp_addr, udp_addr) = (fwd.local(0), fwd.local(1));
    let mut clients = Vec::new();
    for i in 0..400 {
        let client = UdpSocket::bind("127.0.0.1:0").await.expect("client");
        client
            .send_to(format!("spray {i}").as_bytes(), udp_addr)
            .await
            .expect("send");
        clients.push(client);
    }
    // The newest client sends again until answered, as UDP clients do (the burst may overflow
    // the host socket's buffer); it gives up once the forward is out of descriptors.
    let newest = &clients[399];
    let mut buf = [0u8; 64];
    let newest_reply = deadline(async {
        loop {
            newest.send_to(b"spray 399", udp_addr).await.expect("send");
            let wait = tokio::time::timeout(Duration::from_millis(100), newest.recv_from(&mut buf));
            if let Ok(got) = wait.await {
                let (n, _) = got.expect("recv");
                return Some(buf[..n].to_vec());
            }
            if fwd.stderr().contains("Too many open files") {
                return None;
            }
        }
    })
    .await;
    for i in 0..5 {
        let message = format!("tcp {i}");
        let reply = within(DEADLINE, echo_once(tcp_addr, message.as_bytes())).await;
        assert_eq!(
            reply.flatten().as_deref(),
            Some(message.as_bytes()),
            "TCP stalled behind the UDP flows:\n{}",
            fwd.stderr()
        );
    }
    assert_eq!(
        newest_reply.as_deref(),
        Some(&b"spray 399"[..]),
        "the newest client was not answered:\n{}",
        fwd.stderr()
    );
    let stderr = fwd.stderr();
    let warnings = stderr.lines().filter(|l| l.contains("WARN")).count();
    assert!(warnings <= 10, "{warnings} warnings:\n{stderr}");
}

/// With `Config::udp_max_flows(2)`, a third client ends the flow idle the longest, not the one
/// in use: the server in the pod sees the active client's datagrams still come from the same
/// socket, and one flow was evicted per new client over the cap.
#[tokio::test]
async fn udp_flows_are_capped_and_the_least_recently_active_is_ended() {
    let Some(pod) = Pod::create("lru").await else {
        return;
    };
    let server = UdpEcho::start(&pod, true);
    let config = Config::new(pod.target(), vec![PortMapping::udp(0, server.port)]).udp_max_flows(2);
    let fwd = Forward::start(&pod, config).await;
    let to = fwd.v4();
    let (a, b, c) = (udp_client().await, udp_client().await, udp_client().await);
    let a_flow = source_port_seen(&a, to).await;
    source_port_seen(&b, to).await;
    assert_eq!(source_port_seen(&a, to).await, a_flow);
    // C: the cap is reached, B is the idlest.
    source_port_seen(&c, to).await;
    assert_eq!(fwd.stats.udp_flows_evicted(), 1);
    wait_for("B's flow closed", || fwd.stats.udp_flows_open() == 2).await;
    assert_eq!(source_port_seen(&a, to).await, a_flow, "A's flow was ended");
    assert_eq!(fwd.stats.udp_flows_evicted(), 1);
    // B again: a new flow, and C's (now the idlest) ends.
    source_port_seen(&b, to).await;
    assert_eq!(fwd.stats.udp_flows_evicted(), 2);
    assert_eq!(source_port_seen(&a, to).await, a_flow, "A's flow was ended");
    wait_for("two flows", || fwd.stats.udp_flows_open() == 2).await;
}

/// Clients hold connections until the binary, limited to 120 descriptors, cannot accept. It
/// used to warn on every retry, ten lines a second for as long as that lasted; now the retries
/// back off and at most 3 lines are logged per 10 s. Once the clients let go it serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_accept_backs_off_at_the_fd_limit_and_recovers() {
    let Some(pod) = Pod::create("emfile").await else {
        return;
    };
    let server = EchoServer::start(&pod, 0);
    let fwd = Binary::start(&pod, Some(120), &[], &[format!(":{}", server.port)], 1).await;
    let addr = fwd.local(0);
    let started = Instant::now();
    let mut held = Vec::new();
    while !fwd.stderr().contains("failed to accept") {
        // About 6 descriptors per relayed connection: 20 would do.
        assert!(
            held.len() < 500,
            "never ran out of descriptors:\n{}",
            fwd.stderr()
        );
        held.push(TcpStream::connect(addr).await.expect("connect"));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The attack goes on: the descriptors stay taken for a while.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stderr = fwd.stderr();
    let warnings = stderr.matches("failed to accept").count() as u64;
    assert!(
        warnings <= 3 * throttle_windows(started),
        "{warnings} accept warnings in {:?}:\n{stderr}",
        started.elapsed()
    );
    drop(held);
    // Connections queued while it was out of descriptors come first; a new one then gets
    // through.
    deadline(async {
        while echo_once(addr, b"after").await.as_deref() != Some(&b"after"[..]) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// Without `-v` a connection prints nothing (kubectl's `Handling connection` line and the
/// per-connection log lines are `-v`); 50 connections to a port nothing listens on, which
/// used to log 50 warnings, log at most 3 per 10 s.
#[tokio::test]
async fn connections_are_quiet_and_failed_dials_are_rate_limited() {
    let Some(pod) = Pod::create("quiet").await else {
        return;
    };
    let port = pod.free_port();
    let fwd = Binary::start(&pod, None, &[], &[format!(":{port}")], 1).await;
    let started = Instant::now();
    for _ in 0..50 {
        // The forward resets each connection; the reset can beat `connect` to its result.
        let mut client = match TcpStream::connect(fwd.local(0)).await {
            Ok(client) => client,
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => continue,
            Err(err) => panic!("connect: {err}"),
        };
        let mut buf = [0u8; 1];
        let read = deadline(client.read(&mut buf)).await;
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    let windows = throttle_windows(started);
    let (status, stdout, stderr) = fwd.stop().await;
    assert!(status.success(), "{status}");
    assert!(
        !stdout.iter().any(|l| l.starts_with("Handling connection")),
        "{stdout:?}"
    );
    let warnings = stderr.matches("failed to dial into the target").count() as u64;
    assert!(
        (1..=3 * windows).contains(&warnings),
        "{warnings} dial warnings:\n{stderr}"
    );
}

/// With `Config::proxy_protocol`, the server in the pod gets a PROXY protocol header (parsed by
/// the `ppp` crate, an independent implementation) naming the real client and the host
/// address it connected to, for IPv4 and IPv6 clients, in versions 1 and 2; the payload
/// follows unchanged. Before, the server saw only the relay's own connection from 127.0.0.1.
#[tokio::test]
async fn proxy_protocol_headers_name_the_real_client() {
    let Some(pod) = Pod::create("ppp").await else {
        return;
    };
    let server = ProxyHeaderServer::start(&pod);
    for version in [ProxyProtocol::V1, ProxyProtocol::V2] {
        let config = Config::new(pod.target(), vec![PortMapping::tcp(0, server.port)])
            .proxy_protocol(version);
        let fwd = Forward::start(&pod, config).await;
        assert!(!fwd.listening.is_empty(), "no listener");
        for listening in &fwd.listening {
            let addr = listening.local;
            let mut client = TcpStream::connect(addr).await.expect("connect");
            let me = client.local_addr().expect("local addr");
            client.write_all(b"hello").await.expect("write");
            client.shutdown().await.expect("half-close");
            let mut reply = String::new();
            deadline(client.read_to_string(&mut reply))
                .await
                .expect("reply");
            assert_eq!(reply, format!("{version} {me} {addr} hello"));
        }
    }
}

/// `--proxy-protocol v2` on the command line: the binary writes the header too; a version
/// it does not know is refused with the versions it does.
#[tokio::test]
async fn cli_proxy_protocol_flag() {
    let Some(pod) = Pod::create("pppcli").await else {
        return;
    };
    let server = ProxyHeaderServer::start(&pod);
    let fwd = Binary::start(
        &pod,
        None,
        &[],
        &[
            "--proxy-protocol".into(),
            "v2".into(),
            format!(":{}", server.port),
        ],
        1,
    )
    .await;
    let addr = fwd.local(0);
    let mut client = TcpStream::connect(addr).await.expect("connect");
    let me = client.local_addr().expect("local addr");
    client.write_all(b"cli").await.expect("write");
    client.shutdown().await.expect("half-close");
    let mut reply = String::new();
    deadline(client.read_to_string(&mut reply))
        .await
        .expect("reply");
    assert_eq!(reply, format!("v2 {me} {addr} cli"));
    let output = Command::new(env!("CARGO_BIN_EXE_portfwd"))
        .args(["--proxy-protocol", "v3", "web", "80"])
        .output()
        .expect("run portfwd");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("expected v1 or v2"), "{stderr}");
}

/// A server inside a pod that reads a PROXY protocol header with `ppp`, then the payload to
/// EOF, and replies `VERSION SOURCE DESTINATION PAYLOAD` (or `bad header: ...`).
struct ProxyHeaderServer {
    port: u16,
    _task: AbortOnDrop<()>,
}

impl ProxyHeaderServer {
    fn start(pod: &Pod) -> ProxyHeaderServer {
        let listener = pod.listen(0);
        let port = listener.local_addr().expect("addr").port();
        let task = tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.expect("accept in pod");
                tokio::spawn(async move {
                    let reply = match read_proxy_header(&mut stream).await {
                        Ok((described, mut payload)) => {
                            stream.read_to_end(&mut payload).await.expect("payload");
                            format!("{described} {}", String::from_utf8_lossy(&payload))
                        }
                        Err(err) => format!("bad header: {err}"),
                    };
                    stream.write_all(reply.as_bytes()).await.expect("reply");
                });
            }
        });
        ProxyHeaderServer {
            port,
            _task: AbortOnDrop(task),
        }
    }
}

/// The header as `VERSION SOURCE DESTINATION`, and the bytes read after it.
async fn read_proxy_header(stream: &mut TcpStream) -> Result<(String, Vec<u8>), String> {
    use ppp::{HeaderResult, PartialResult};
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 512];
        let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err(format!("EOF before a complete header: {buf:?}"));
        }
        buf.extend_from_slice(&chunk[..n]);
        let parsed = HeaderResult::parse(&buf);
        if parsed.is_incomplete() {
            continue;
        }
        let (described, len) = match parsed {
            HeaderResult::V1(Ok(header)) => {
                let (src, dst) = match header.addresses {
                    ppp::v1::Addresses::Tcp4(a) => (
                        SocketAddr::from((a.source_address, a.source_port)),
                        SocketAddr::from((a.destination_address, a.destination_port)),
                    ),
                    ppp::v1::Addresses::Tcp6(a) => (
                        SocketAddr::from((a.source_address, a.source_port)),
                        SocketAddr::from((a.destination_address, a.destination_port)),
                    ),
                    other => return Err(format!("v1 addresses {other:?}")),
                };
                (format!("v1 {src} {dst}"), header.header.len())
            }
            HeaderResult::V2(Ok(header)) => {
                if header.command != ppp::v2::Command::Proxy
                    || header.protocol != ppp::v2::Protocol::Stream
                {
                    return Err(format!("v2 {:?} {:?}", header.command, header.protocol));
                }
                let (src, dst) = match header.addresses {
                    ppp::v2::Addresses::IPv4(a) => (
                        SocketAddr::from((a.source_address, a.source_port)),
                        SocketAddr::from((a.destination_address, a.destination_port)),
                    ),
                    ppp::v2::Addresses::IPv6(a) => (
                        SocketAddr::from((a.source_address, a.source_port)),
                        SocketAddr::from((a.destination_address, a.destination_port)),
                    ),
                    other => return Err(format!("v2 addresses {other:?}")),
                };
                (format!("v2 {src} {dst}"), header.header.len())
            }
            other => return Err(format!("{other:?}")),
        };
        return Ok((described, buf[len..].to_vec()));
    }
}

// ---- helpers ----

/// A pod made for one test, deleted when the test ends, pass or fail.
struct Pod {
    name: String,
    dir: PathBuf,
    ns: Option<PodNamespaces>,
}

impl Pod {
    async fn create(prefix: &str) -> Option<Pod> {
        if !require_root() {
            return None;
        }
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("pf-{prefix}-{}-{n}", std::process::id());
        let dir = std::env::temp_dir().join("podkit-portfwd-test").join(&name);
        // Named as podkit names a pod's: `<namespace>_<name>`.
        let ns = PodNamespaces::builder(format!("default_{name}"), &dir)
            .create()
            .await
            .expect("create pod namespaces");
        Some(Pod {
            name,
            dir,
            ns: Some(ns),
        })
    }

    fn net(&self) -> &Namespace {
        self.ns.as_ref().expect("pod not deleted yet").net()
    }

    fn target(&self) -> Target {
        Target::pod(&self.name)
    }

    /// A TCP listener on 127.0.0.1:`port` inside the pod.
    fn listen(&self, port: u16) -> TcpListener {
        let listener = self
            .net()
            .listen_tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
            .expect("listen in pod");
        TcpListener::from_std(listener).expect("tokio listener")
    }

    /// A port nothing listens on inside the pod: below the ephemeral range, where the pod's
    /// servers (bound to port 0) never are. Not a listener bound and closed: a child that a
    /// concurrent test forks holds a copy until its exec, and a dial meanwhile meets a reset.
    fn free_port(&self) -> u16 {
        9
    }

    fn delete(&mut self) {
        self.ns
            .take()
            .expect("pod not deleted yet")
            .delete()
            .expect("delete pod");
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        if let Some(ns) = self.ns.take() {
            let _ = ns.delete();
        }
        let _ = PodNamespaces::remove(&self.name, &self.dir);
    }
}

/// An echo server inside a pod, counting the connections it has open.
struct EchoServer {
    port: u16,
    open: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl EchoServer {
    fn start(pod: &Pod, port: u16) -> EchoServer {
        let listener = pod.listen(port);
        let port = listener.local_addr().expect("addr").port();
        let open = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let (counter, total, token) = (Arc::clone(&open), Arc::clone(&accepted), stop.clone());
        let task = tokio::spawn(async move {
            let connections = tokio_util::task::TaskTracker::new();
            loop {
                let (mut stream, _) = tokio::select! {
                    () = token.cancelled() => break,
                    accepted = listener.accept() => accepted.expect("accept in pod"),
                };
                total.fetch_add(1, Ordering::Relaxed);
                let (counter, token) = (Arc::clone(&counter), token.clone());
                connections.spawn(async move {
                    counter.fetch_add(1, Ordering::Relaxed);
                    let (mut rx, mut tx) = stream.split();
                    tokio::select! {
                        () = token.cancelled() => {}
                        _ = async {
                            tokio::io::copy(&mut rx, &mut tx).await?;
                            tx.shutdown().await
                        } => {}
                    }
                    counter.fetch_sub(1, Ordering::Relaxed);
                });
            }
            drop(listener);
            connections.close();
            connections.wait().await;
        });
        EchoServer {
            port,
            open,
            accepted,
            stop,
            task: Some(task),
        }
    }

    /// Stops it and waits until its listener and connections are closed.
    async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            deadline(task).await.expect("server task");
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A running forward, shut down when the test ends.
struct Forward {
    listening: Vec<portfwd::Listening>,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
    task: Option<JoinHandle<portfwd::Result<Stopped>>>,
}

impl Forward {
    async fn start(_pod: &Pod, config: Config) -> Forward {
        let forwarder = Forwarder::bind(config).await.expect("bind forward");
        let shutdown = CancellationToken::new();
        Forward {
            listening: forwarder.listeners(),
            stats: forwarder.stats(),
            shutdown: shutdown.clone(),
            task: Some(tokio::spawn(forwarder.run(shutdown))),
        }
    }

    /// The 127.0.0.1 host address of the first mapping.
    fn v4(&self) -> SocketAddr {
        self.listening
            .iter()
            .map(|l| l.local)
            .find(SocketAddr::is_ipv4)
            .expect("listening on 127.0.0.1")
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A process this test started, killed and reaped when the test ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A UDP server on 127.0.0.1 inside a pod: an echo, or (`source_port`) a reply with the port
/// each datagram came from, which tells the forward's flows apart.
struct UdpEcho {
    port: u16,
    _task: AbortOnDrop<()>,
}

impl UdpEcho {
    fn start(pod: &Pod, source_port: bool) -> UdpEcho {
        let inside = UdpSocket::from_std(
            pod.net()
                .bind_udp(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
                .expect("udp in pod"),
        )
        .expect("tokio udp");
        let port = inside.local_addr().expect("addr").port();
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            loop {
                let (n, from) = inside.recv_from(&mut buf).await.expect("recv in pod");
                let reply = if source_port {
                    from.port().to_string().into_bytes()
                } else {
                    buf[..n].to_vec()
                };
                let _ = inside.send_to(&reply, from).await;
            }
        });
        UdpEcho {
            port,
            _task: AbortOnDrop(task),
        }
    }
}

async fn udp_client() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.expect("client")
}

/// Sends a datagram through the forward at `to` and returns the reply of a
/// `UdpEcho::start(_, true)` server: the port of the flow's socket in the pod.
async fn source_port_seen(client: &UdpSocket, to: SocketAddr) -> u16 {
    client.send_to(b"who", to).await.expect("send");
    let mut buf = [0u8; 16];
    let (n, _) = deadline(client.recv_from(&mut buf)).await.expect("reply");
    std::str::from_utf8(&buf[..n])
        .expect("utf-8")
        .parse()
        .expect("a port")
}

/// How many of the forward's warning windows (10 s each, 3 lines at most) can have started
/// since `since`: windows start only at a warning and do not overlap.
fn throttle_windows(since: Instant) -> u64 {
    since.elapsed().as_secs() / 10 + 1
}

/// The `portfwd` binary forwarding into a pod on 127.0.0.1, optionally under an open-file
/// limit (hard and soft, as `ulimit -n` sets them); killed when dropped.
struct Binary {
    child: tokio::process::Child,
    locals: Vec<SocketAddr>,
    stdout: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    stderr: tempfile::NamedTempFile,
}

impl Binary {
    /// Starts it with `args` (mappings and flags) and waits for its `mappings` "Forwarding
    /// from" lines.
    async fn start(
        pod: &Pod,
        limit: Option<u32>,
        env: &[(&str, &str)],
        args: &[String],
        mappings: usize,
    ) -> Binary {
        use tokio::io::AsyncBufReadExt;
        let binary = env!("CARGO_BIN_EXE_portfwd");
        let mut command = match limit {
            Some(n) => {
                let mut c = tokio::process::Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(binary);
                c
            }
            None => tokio::process::Command::new(binary),
        };
        let stderr = tempfile::NamedTempFile::new().expect("stderr file");
        command
            .args(["--netns", &format!("/run/netns/default_{}", pod.name)])
            .args(["--address", "127.0.0.1"])
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr.reopen().expect("stderr file"))
            .kill_on_drop(true);
        let mut child = command.spawn().expect("start portfwd");
        let mut stdout = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut locals = Vec::new();
        while locals.len() < mappings {
            let line = deadline(stdout.next_line())
                .await
                .expect("read stdout")
                .unwrap_or_else(|| {
                    panic!(
                        "portfwd exited: {}",
                        std::fs::read_to_string(stderr.path()).unwrap_or_default()
                    )
                });
            let addr = line
                .strip_prefix("Forwarding from ")
                .and_then(|rest| rest.split(' ').next())
                .unwrap_or_else(|| panic!("unexpected line {line:?}"));
            locals.push(addr.parse().expect("address"));
        }
        Binary {
            child,
            locals,
            stdout,
            stderr,
        }
    }

    fn local(&self, i: usize) -> SocketAddr {
        self.locals[i]
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.stderr.path()).unwrap_or_default()
    }

    /// SIGTERM, then the exit status, the rest of stdout and all of stderr.
    async fn stop(mut self) -> (std::process::ExitStatus, Vec<String>, String) {
        let pid =
            nix::unistd::Pid::from_raw(i32::try_from(self.child.id().expect("pid")).expect("pid"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        let status = deadline(self.child.wait()).await.expect("exit");
        let mut rest = Vec::new();
        while let Ok(Some(line)) = deadline(self.stdout.next_line()).await {
            rest.push(line);
        }
        (status, rest, self.stderr())
    }
}

/// `future`'s output, or `None` after `limit`.
async fn within<F: IntoFuture>(limit: Duration, future: F) -> Option<F::Output> {
    tokio::time::timeout(limit, future).await.ok()
}

/// Sends `message` through a new connection to `addr`, half-closes, and returns the reply;
/// `None` if the connection fails.
async fn echo_once(addr: SocketAddr, message: &[u8]) -> Option<Vec<u8>> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    stream.write_all(message).await.ok()?;
    stream.shutdown().await.ok()?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await.ok()?;
    Some(reply)
}

/// Sends `message` through a new connection to `addr`, half-closes, and returns the reply.
async fn echo(addr: SocketAddr, message: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(message).await.expect("write");
    stream.shutdown().await.expect("half-close");
    let mut reply = Vec::new();
    deadline(stream.read_to_end(&mut reply))
        .await
        .expect("read reply");
    reply
}

/// 1 MiB of pseudo-random bytes, different per `seed`.
fn base_block(seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut block = Vec::with_capacity(1 << 20);
    while block.len() < 1 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        block.extend_from_slice(&x.to_le_bytes());
    }
    block
}

/// Block `i` of stream `seed`: the base block with its index in the first 8 bytes, so a lost,
/// repeated or reordered block does not compare equal.
fn stamp(block: &mut [u8], i: u64) {
    block[..8].copy_from_slice(&i.to_le_bytes());
}

async fn send_blocks(tx: &mut (impl AsyncWriteExt + Unpin), seed: u64, blocks: u64) {
    let mut block = base_block(seed);
    for i in 0..blocks {
        stamp(&mut block, i);
        tx.write_all(&block).await.expect("send block");
    }
}

/// Reads `blocks` blocks of stream `seed`, compares each byte, checks EOF follows; returns the
/// bytes received.
async fn receive_blocks(rx: &mut (impl AsyncReadExt + Unpin), seed: u64, blocks: u64) -> u64 {
    let mut expected = base_block(seed);
    let mut got = vec![0u8; expected.len()];
    for i in 0..blocks {
        rx.read_exact(&mut got).await.expect("receive block");
        stamp(&mut expected, i);
        assert!(got == expected, "block {i} of stream {seed:#x} differs");
    }
    let mut tail = [0u8; 1];
    assert_eq!(
        rx.read(&mut tail).await.expect("read EOF"),
        0,
        "EOF after the data"
    );
    blocks << 20
}

async fn deadline<F: IntoFuture>(future: F) -> F::Output {
    tokio::time::timeout(DEADLINE, future)
        .await
        .expect("deadline passed")
}

async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !condition() {
        assert!(Instant::now() < end, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("setrlimit");
}

/// Tests need root: they make real namespaces. In CI that is a failure; elsewhere a skip.
fn require_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "these tests create namespaces and need root; CI runs them as root"
    );
    eprintln!("skipped: not root (these tests create real namespaces)");
    false
}
