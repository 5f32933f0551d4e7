//! The netns crate against the real kernel: namespaces, pins, processes, sockets and links.
//! Needs root (CI runs as root); each test uses its own pod name and removes what it made, also
//! when it fails (the `Pod` guard).

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use netns::{Error, Namespace, Netlink, NsKind, PodNamespaces, Setup};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn new_pod_has_lo_up_and_both_loopbacks_reachable() {
    let Some(pod) = Pod::create("lo", false).await else {
        return;
    };
    let links = pod
        .ns()
        .netlink()
        .await
        .expect("netlink")
        .links()
        .await
        .expect("links");
    let lo = links.iter().find(|l| l.name == "lo").expect("lo exists");
    assert!(lo.up, "lo must be up: {links:?}");
    assert_eq!(links.len(), 1, "a new pod has only lo: {links:?}");

    let dialer = pod.ns().net().dialer().expect("dialer");
    for ip in [
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ] {
        let listener = pod
            .ns()
            .net()
            .listen_tcp(SocketAddr::new(ip, 0))
            .expect("listen");
        let addr = listener.local_addr().expect("addr");
        let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
        let (client, server) = tokio::join!(dialer.connect(addr), listener.accept());
        let (mut client, (mut server, _)) = (client.expect("connect"), server.expect("accept"));
        client.write_all(b"ping").await.expect("write");
        let mut buf = [0; 4];
        server.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"ping", "over {ip}");
    }
}

/// `share_host`: the pod's net and UTS pins are the host's namespaces (hostNetwork), its IPC
/// one its own; the host's hostname is not set, no `/run/netns/NAME` is made, and deleting the
/// pod removes only its pins.
#[tokio::test]
async fn shared_host_namespaces_are_pinned_not_made() {
    if !require_root() {
        return;
    }
    let name = unique("host");
    let dir = std::env::temp_dir().join("podkit-test").join(&name);
    let hostname = nix::unistd::gethostname().expect("hostname");
    let pod = PodNamespaces::builder(&name, &dir)
        .hostname("not-the-host")
        .share_host(NsKind::Net)
        .share_host(NsKind::Uts)
        .create()
        .await
        .expect("create");
    let inode = |path: &Path| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).expect("ns").ino()
    };
    for (kind, host) in [("net", true), ("uts", true), ("ipc", false)] {
        let same = inode(&dir.join(kind)) == inode(Path::new(&format!("/proc/self/ns/{kind}")));
        assert_eq!(same, host, "{kind}");
    }
    assert_eq!(nix::unistd::gethostname().expect("hostname"), hostname);
    assert!(!Path::new("/run/netns").join(&name).exists());
    let removed = pod.delete().expect("delete");
    assert!(!dir.exists(), "{removed:?}");
    assert_eq!(nix::unistd::gethostname().expect("hostname"), hostname);
}

#[tokio::test]
async fn pod_and_host_do_not_see_each_others_listeners() {
    let Some(pod) = Pod::create("iso", false).await else {
        return;
    };
    let inside = pod
        .ns()
        .net()
        .listen_tcp(loopback(0))
        .expect("listen inside");
    let port = inside.local_addr().expect("addr").port();
    // The same port is free on the host: the pod has its own port space.
    let host = TcpListener::bind(loopback(port)).expect("host port free while pod uses it");
    drop(host);
    let _attempt = std::net::TcpStream::connect_timeout(&loopback(port), Duration::from_secs(2));
    // A connect that succeeds reached something else of the host's: a TCP self-connect (the
    // port is free there and in the ephemeral range) or a listener another test bound to it
    // meanwhile; seen once in CI. What must hold is that the pod's listener got nothing.
    inside.set_nonblocking(true).expect("nonblocking");
    let reached = inside
        .accept()
        .map_or_else(|e| e.kind() != std::io::ErrorKind::WouldBlock, |_| true);
    assert!(
        !reached,
        "the pod's listener must not be reachable from the host"
    );

    let host = TcpListener::bind(loopback(0)).expect("host listener");
    let host_port = host.local_addr().expect("addr").port();
    let dialer = pod.ns().net().dialer().expect("dialer");
    let err = dialer
        .connect(loopback(host_port))
        .await
        .expect_err("host port from inside");
    assert!(
        matches!(&err, Error::Connect { source, .. } if source.kind() == std::io::ErrorKind::ConnectionRefused),
        "expected refused, got {err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&host_port.to_string()) && msg.contains("/net"),
        "{msg}"
    );
}

#[tokio::test]
async fn members_share_loopback_hostname_and_ipc() {
    let Some(pod) = Pod::create("share", false).await else {
        return;
    };
    let spawn_example = example("spawn");
    let mut server = pod
        .ns()
        .spawn(
            Command::new(&spawn_example)
                .arg("serve")
                .stdout(Stdio::piped()),
        )
        .expect("spawn server");
    let mut line = [0u8; 9];
    server
        .stdout
        .take()
        .expect("stdout")
        .read_exact(&mut line)
        .expect("server ready");
    assert_eq!(&line, b"listening");
    let client = pod
        .ns()
        .spawn(
            Command::new(&spawn_example)
                .arg("call")
                .stdout(Stdio::piped()),
        )
        .expect("spawn client")
        .wait_with_output()
        .expect("client output");
    server.wait().expect("server exit");
    let reply = String::from_utf8_lossy(&client.stdout);
    assert!(client.status.success(), "client failed: {reply}");
    // "<client hostname> (pid N) got: hello from <server hostname> (pid M)"
    let name = pod.name.as_str();
    assert!(reply.starts_with(&format!("{name} ")), "{reply}");
    assert!(reply.contains(&format!("hello from {name} ")), "{reply}");

    // SysV IPC: a queue made by one member is seen by another, not by the host. Ids restart
    // at 0 in every IPC namespace, so compare the queue's random key.
    let made = run_in(&pod, "ipcmk -Q");
    let id: String = made.chars().filter(char::is_ascii_digit).collect();
    let listed = run_in(&pod, "ipcs -q");
    let key = listed
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cols| cols.len() > 2 && cols[1] == id)
        .map(|cols| cols[0].to_owned())
        .unwrap_or_else(|| panic!("another member sees queue {id}: {listed}"));
    let host = output(Command::new("ipcs").arg("-q"));
    let host = String::from_utf8_lossy(&host.stdout);
    assert!(
        !host.contains(&key),
        "the host must not see queue {key}: {host}"
    );
}

#[tokio::test]
async fn members_join_every_namespace_of_the_pod() {
    let Some(pod) = Pod::create("join", true).await else {
        return;
    };
    for kind in [NsKind::Net, NsKind::Ipc, NsKind::Uts, NsKind::Pid] {
        let link = run_in(&pod, &format!("readlink /proc/self/ns/{kind}"));
        let want = pod.ns().namespaces().get(kind).expect("kind").inode();
        assert_eq!(link.trim(), format!("{kind}:[{want}]"), "{kind} namespace");
        let host = Namespace::current(kind).expect("host ns").inode();
        assert_ne!(want, host, "{kind} must differ from the host's");
    }
    // The first process after the pause is PID 2 inside.
    let pid = run_in(&pod, "echo $$");
    assert!(
        pid.trim().parse::<u32>().is_ok_and(|p| p < 100),
        "pid inside: {pid}"
    );
}

#[tokio::test]
async fn delete_kills_every_process_of_the_pid_namespace() {
    let Some(mut pod) = Pod::create("pidkill", true).await else {
        return;
    };
    let mut member = pod
        .ns()
        .spawn(Command::new("sleep").arg("1000"))
        .expect("spawn");
    let init = pod.ns().init_pid().expect("init pid");
    pod.delete();
    let status = member.wait().expect("wait");
    assert!(
        !status.success(),
        "member must have been killed with its PID namespace"
    );
    // The kernel lets the killed PID 1 go once its members are reaped; delete's reaper does it.
    wait_until("the pod's PID 1 to be reaped", || {
        !Path::new(&format!("/proc/{init}")).exists()
    })
    .await;
}

#[tokio::test]
async fn ip_netns_lists_the_pod_until_delete_leaves_nothing() {
    let Some(mut pod) = Pod::create("list", false).await else {
        return;
    };
    assert!(
        ip_netns_list().contains(&pod.name),
        "ip netns list: {:?}",
        ip_netns_list()
    );
    // `ip netns exec` enters the network namespace only: it sees the pod's links (just lo).
    let exec = output(Command::new("ip").args(["netns", "exec", &pod.name, "ip", "-o", "link"]));
    let links = String::from_utf8_lossy(&exec.stdout);
    assert!(
        exec.status.success() && links.lines().count() == 1,
        "ip netns exec: {links}"
    );
    assert!(links.contains(": lo:"), "{links}");
    let removed = pod.delete();
    assert!(
        removed.iter().any(|l| l.contains("/run/netns/")),
        "{removed:?}"
    );
    pod.assert_gone();
}

#[tokio::test]
async fn delete_after_the_creator_was_killed_leaves_nothing() {
    if !require_root() {
        return;
    }
    let name = unique("crash");
    let dir = std::env::temp_dir().join("podkit-example").join(&name);
    let _cleanup = Cleanup(name.clone(), dir.clone());
    let mut creator = Command::new(example("pod"))
        .args([&name, "--pid", "--hold"])
        .stdout(Stdio::null())
        .spawn()
        .expect("start the pod example");
    wait_until("the example to create the pod", || {
        dir.join("init.pid").exists()
    })
    .await;
    let init: u32 = std::fs::read_to_string(dir.join("init.pid"))
        .expect("init.pid")
        .trim()
        .parse()
        .expect("pid");
    creator.kill().expect("SIGKILL the creator");
    creator.wait().expect("reap the creator");
    assert!(
        Path::new(&format!("/run/netns/{name}")).exists(),
        "pins outlive their creator"
    );

    let removed = PodNamespaces::remove(&name, &dir).expect("remove");
    assert!(
        removed
            .iter()
            .any(|l| l.contains(&format!("killed pid {init}"))),
        "{removed:?}"
    );
    assert_gone(&name, &dir);
    wait_until("the orphaned init to die", || {
        !Path::new(&format!("/proc/{init}/ns/pid")).exists()
    })
    .await;
    assert!(
        PodNamespaces::remove(&name, &dir)
            .expect("again")
            .is_empty(),
        "idempotent"
    );
}

#[tokio::test]
async fn remove_finishes_a_half_done_create_or_delete() {
    if !require_root() {
        return;
    }
    // Half-created: the net pin is mounted, uts is an empty file, no /run/netns entry.
    let name = unique("half");
    let dir = std::env::temp_dir().join("podkit-test").join(&name);
    let _cleanup = Cleanup(name.clone(), dir.clone());
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("net"), "").expect("net pin file");
    let status = Command::new("mount")
        .args(["--bind", "/proc/self/ns/net"])
        .arg(dir.join("net"))
        .status()
        .expect("mount");
    assert!(status.success());
    std::fs::write(dir.join("uts"), "").expect("uts pin file");
    let removed = PodNamespaces::remove(&name, &dir).expect("remove");
    assert_eq!(removed.len(), 3, "net, uts, dir: {removed:?}");
    assert_gone(&name, &dir);

    // Half-deleted: a real pod whose delete stopped after /run/netns/NAME and the uts pin
    // (delete goes in that order: the shared entry first, the pod's own pins after).
    let Some(mut pod) = Pod::create("halfdel", false).await else {
        return;
    };
    for path in [Path::new("/run/netns").join(&pod.name), pod.dir.join("uts")] {
        nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH).expect("umount");
        std::fs::remove_file(&path).expect("rm");
    }
    pod.delete();
    pod.assert_gone();
}

#[tokio::test]
async fn a_name_in_use_is_refused_and_left_intact() {
    let Some(pod) = Pod::create("taken", false).await else {
        return;
    };
    let other_dir = std::env::temp_dir()
        .join("podkit-test")
        .join(unique("other"));
    let err = PodNamespaces::builder(&pod.name, &other_dir)
        .create()
        .await
        .expect_err("same name twice");
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("/run/netns/{}", pod.name)),
        "{err}"
    );
    // The first pod is untouched.
    let ns = Namespace::named_netns(&pod.name).expect("still pinned");
    assert_eq!(ns.inode(), pod.ns().net().inode());
    let _ = std::fs::remove_dir_all(&other_dir);

    // A namespace that `ip netns add` made is not ours to delete either.
    let theirs = unique("ipadd");
    let added = output(Command::new("ip").args(["netns", "add", &theirs]));
    assert!(added.status.success());
    let dir = std::env::temp_dir().join("podkit-test").join(&theirs);
    let err = PodNamespaces::builder(&theirs, &dir)
        .create()
        .await
        .expect_err("taken");
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
    assert!(ip_netns_list().contains(&theirs), "ip's netns survives");
    assert!(!dir.join("net").exists(), "our half is cleaned up");
    let _ = Command::new("ip").args(["netns", "del", &theirs]).status();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn bad_input_gets_an_error_naming_it_and_leaves_nothing() {
    if !require_root() {
        return;
    }
    let long = "a".repeat(254);
    for (name, why) in [
        ("a/b", "'/'"),
        ("..", "'..'"),
        (".", "'.'"),
        ("", "empty"),
        (long.as_str(), "253"),
        ("-x", "start"),
        ("sp ace", "letters"),
    ] {
        let dir = std::env::temp_dir().join("podkit-test").join(unique("bad"));
        let err = PodNamespaces::builder(name, &dir)
            .create()
            .await
            .expect_err(name);
        let msg = err.to_string();
        assert!(matches!(err, Error::InvalidName { .. }), "{name:?}: {msg}");
        assert!(
            msg.contains(why) && msg.contains(&format!("{name:?}")),
            "{name:?}: {msg}"
        );
        assert!(!dir.exists(), "nothing made for {name:?}");
    }

    let name = unique("host");
    let dir = std::env::temp_dir().join("podkit-test").join(&name);
    let err = PodNamespaces::builder(&name, &dir)
        .hostname("x".repeat(65))
        .create()
        .await
        .expect_err("long hostname");
    assert!(matches!(err, Error::InvalidHostname { .. }), "{err}");
    assert_gone(&name, &dir);

    let missing = Path::new("/nonexistent/podkit/net");
    let err = Namespace::open(NsKind::Net, missing).expect_err("missing path");
    assert!(err.to_string().contains("/nonexistent/podkit/net"), "{err}");
    let err = Namespace::open(NsKind::Net, "/etc/hostname").expect_err("not a namespace");
    assert!(matches!(err, Error::NotANamespace { .. }), "{err}");
    let err = Namespace::open(NsKind::Net, "/proc/self/ns/uts").expect_err("wrong kind");
    assert!(err.to_string().contains("kind uts, not net"), "{err}");

    let mut gone = Command::new("true").spawn().expect("true");
    let pid = gone.id();
    gone.wait().expect("reap");
    let err = Namespace::from_pid(NsKind::Net, pid).expect_err("dead pid");
    assert!(
        matches!(err, Error::NoSuchProcess { pid: p } if p == pid),
        "{err}"
    );
    assert!(err.to_string().contains(&pid.to_string()), "{err}");
    let err = Namespace::named_netns(&unique("absent")).expect_err("absent name");
    assert!(err.to_string().contains("/run/netns/"), "{err}");
}

#[tokio::test]
async fn host_reaches_the_pod_over_a_veth_pair() {
    let Some(pod) = Pod::create("veth", false).await else {
        return;
    };
    // 198.18.0.0/15 is set aside for tests (RFC 2544); a /30 per test process.
    let subnet = (std::process::id() % 250) as u8;
    let host_ip = IpAddr::V4(Ipv4Addr::new(198, 18, subnet, 1));
    let pod_ip = IpAddr::V4(Ipv4Addr::new(198, 18, subnet, 2));
    let host_end: String = format!("pkt{}", std::process::id())
        .chars()
        .take(15)
        .collect();

    let host = Netlink::host().expect("host netlink");
    host.add_veth(&host_end, "eth0", pod.ns().net())
        .await
        .expect("veth");
    host.add_address(&host_end, host_ip, 30)
        .await
        .expect("host address");
    host.link_up(&host_end).await.expect("host end up");
    let inside = pod.ns().netlink().await.expect("pod netlink");
    inside
        .add_address("eth0", pod_ip, 30)
        .await
        .expect("pod address");
    inside.link_up("eth0").await.expect("eth0 up");
    inside
        .add_default_route(host_ip)
        .await
        .expect("default route");

    let addresses = inside.addresses().await.expect("addresses");
    assert!(
        addresses
            .iter()
            .any(|a| a.address == pod_ip && a.prefix_len == 30),
        "{addresses:?}"
    );
    let err = inside.link_up("nope0").await.expect_err("missing link");
    assert!(
        matches!(&err, Error::LinkNotFound { name, .. } if name == "nope0"),
        "{err}"
    );

    let listener = pod
        .ns()
        .net()
        .listen_tcp(SocketAddr::new(pod_ip, 0))
        .expect("listen");
    let addr = listener.local_addr().expect("addr");
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio");
    let (conn, accepted) = tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
    let (mut conn, (mut server, peer)) = (conn.expect("connect"), accepted.expect("accept"));
    assert_eq!(peer.ip(), host_ip, "the pod sees the host end's address");
    server.write_all(b"pong").await.expect("write");
    let mut buf = [0; 4];
    conn.read_exact(&mut buf).await.expect("read");
    assert_eq!(&buf, b"pong");
    drop((conn, server, listener, inside));

    drop(pod);
    wait_until("the host end of the veth to go with the pod", || {
        !Path::new("/sys/class/net").join(&host_end).exists()
    })
    .await;
}

#[tokio::test]
async fn a_create_abandoned_half_way_removes_itself() {
    if !require_root() {
        return;
    }
    let name = unique("cancel");
    let dir = std::env::temp_dir().join("podkit-test").join(&name);
    let _cleanup = Cleanup(name.clone(), dir.clone());
    let mut init = Command::new("sleep");
    init.arg("infinity");
    let create = PodNamespaces::builder(&name, &dir)
        .pid_namespace(init)
        .create();
    // Polled once (the creating thread is spawned), then dropped: the caller gave up.
    let abandoned = tokio::time::timeout(Duration::ZERO, create).await;
    assert!(abandoned.is_err(), "a zero timeout abandons the create");
    // The thread creates the pod and, finding nobody waiting, removes it; it has done both once
    // it has ended. (Other tests' creating threads are short-lived too.) Until it first runs,
    // which a loaded machine may delay, it has not named itself yet and bears this thread's name.
    let me = std::fs::read_to_string("/proc/thread-self/comm").expect("own name");
    let my_tid = nix::unistd::gettid().as_raw().to_string();
    wait_until("the creating thread to end", || {
        !threads_named("podkit-ns-creat")
            .iter()
            .chain(&threads_named(me.trim()))
            .any(|tid| *tid != my_tid)
    })
    .await;
    assert_gone(&name, &dir);
}

#[tokio::test]
async fn setup_gives_a_member_private_mounts_its_own_proc_and_user() {
    let Some(pod) = Pod::create("setup", true).await else {
        return;
    };
    let volume = tempdir("vol");
    std::fs::write(volume.join("index.html"), "hi").expect("write");
    let target = tempdir("target");
    let setup = Setup::new()
        .new_session()
        .new_mount_namespace()
        .bind_mount(&volume, &target, true)
        .expect("paths")
        .mount_proc()
        .chdir(&target)
        .expect("path")
        .user(Some(65534), Some(65534));
    let script = "cat index.html; echo; id -u; id -g; ls /proc | grep -c '^[0-9]'; \
                  touch x 2>/dev/null && echo writable || echo read-only; ps -o pgid= -p $$";
    let child = pod
        .ns()
        .spawn_with(
            Command::new("sh")
                .args(["-c", script])
                .stdout(Stdio::piped()),
            setup,
        )
        .expect("spawn");
    let out = child.wait_with_output().expect("wait");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    assert!(out.status.success(), "{text}");
    assert_eq!(
        lines[..3],
        ["hi", "65534", "65534"],
        "file through the bind mount; uid; gid"
    );
    let pids: u32 = lines[3].parse().expect("count");
    assert!(
        pids <= 4,
        "/proc shows the pod's few processes, not the host's: {pids}"
    );
    assert_eq!(lines[4], "read-only");
    assert_eq!(
        lines[5], "2",
        "own process group (the shell is PID 2, after the pause)"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        !mounts.contains(target.to_str().expect("utf-8")),
        "the host's mount table is unchanged"
    );
    let _ = std::fs::remove_dir_all(volume);
    let _ = std::fs::remove_dir_all(target);
}

/// `bind_mount_fd` mounts what was opened, not what its path names when the child mounts: a
/// directory swapped for a symbolic link after it was opened does not redirect the mount.
#[tokio::test]
async fn a_bind_mount_of_an_open_directory_ignores_a_later_swap_of_its_path() {
    let Some(pod) = Pod::create("bindfd", false).await else {
        return;
    };
    let volume = tempdir("vol");
    std::fs::create_dir(volume.join("sub")).expect("mkdir");
    std::fs::write(volume.join("sub/f"), "opened").expect("write");
    let opened = nix::fcntl::open(
        &volume.join("sub"),
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .expect("open");
    let target = tempdir("target");
    let setup = Setup::new()
        .new_mount_namespace()
        .bind_mount_fd(std::os::fd::AsFd::as_fd(&opened), &target, true)
        .expect("clone the tree");
    // Swapped after the tree was taken: the mount must still show the opened directory.
    std::fs::rename(volume.join("sub"), volume.join("moved")).expect("rename");
    std::os::unix::fs::symlink("/etc", volume.join("sub")).expect("symlink");
    let script = format!(
        "cat {0}/f; test -e {0}/passwd && echo host",
        target.display()
    );
    let child = pod
        .ns()
        .spawn_with(
            Command::new("sh")
                .args(["-c", &script])
                .stdout(Stdio::piped()),
            setup,
        )
        .expect("spawn");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "opened");
    let _ = std::fs::remove_dir_all(volume);
    let _ = std::fs::remove_dir_all(target);
}

#[tokio::test]
async fn a_process_starts_in_its_cgroup_with_its_pipes_and_only_its_environment() {
    let Some(pod) = Pod::create("proc", true).await else {
        return;
    };
    let Some(cgroup) = TestCgroup::create(&pod.name) else {
        eprintln!("skipped: no cgroup v2 mounted");
        return;
    };
    let script = "cat /proc/self/cgroup; echo \"home=[$HOME] path=[$PATH] x=[$X]\"; \
                  cat; echo err >&2";
    let process = netns::Process::new("sh")
        .args(["-c", script])
        .env("X", "1")
        .env("X", "2")
        .env("PATH", "/nonexistent:/usr/bin:/bin")
        .stdin(netns::Stdio::Pipe)
        .stdout(netns::Stdio::Pipe)
        .stderr(netns::Stdio::Pipe)
        .cgroup(cgroup.open());
    let mut started = pod.ns().start(process, Setup::new()).expect("start");
    let mut stdin = std::fs::File::from(started.stdin.take().expect("stdin pipe"));
    std::io::Write::write_all(&mut stdin, b"from stdin\n").expect("write");
    drop(stdin);
    let mut out = String::new();
    std::fs::File::from(started.stdout.take().expect("stdout pipe"))
        .read_to_string(&mut out)
        .expect("read");
    let mut err = String::new();
    std::fs::File::from(started.stderr.take().expect("stderr pipe"))
        .read_to_string(&mut err)
        .expect("read");
    let status = started.wait().expect("wait");
    assert!(status.success(), "{out}{err}");
    // cgroup v1 hierarchies (a hybrid host) come first, then "0::PATH".
    let lines: Vec<&str> = out.lines().skip_while(|l| !l.starts_with("0::")).collect();
    assert_eq!(
        lines[0],
        format!("0::{}", cgroup.relative),
        "born in the cgroup: {out}"
    );
    assert_eq!(
        lines[1..],
        [
            "home=[] path=[/nonexistent:/usr/bin:/bin] x=[2]",
            "from stdin"
        ]
    );
    assert_eq!(err, "err\n");

    // A program that is nowhere: the error names it and the cause; the child is reaped.
    let missing = netns::Process::new("podkit-no-such-program").cgroup(cgroup.open());
    let err = pod
        .ns()
        .start(missing, Setup::new())
        .expect_err("missing program");
    let text = format!("{err}: {}", std::error::Error::source(&err).expect("cause"));
    assert!(
        text.contains("podkit-no-such-program") && text.contains("No such file"),
        "{text}"
    );
    // A setup step that fails in the child reports its errno too.
    let bad_dir = Setup::new()
        .chdir(Path::new("/nonexistent-dir"))
        .expect("path");
    let err = pod
        .ns()
        .start(netns::Process::new("true"), bad_dir)
        .expect_err("bad working directory");
    assert!(
        std::error::Error::source(&err).is_some_and(|e| e.to_string().contains("No such file")),
        "{err:?}"
    );
    assert_eq!(
        std::fs::read_to_string(cgroup.dir.join("cgroup.procs")).expect("procs"),
        "",
        "nothing left in the cgroup"
    );
}

/// A child created by clone3 (into a cgroup) that changes its user must not wait on the
/// parent's threads: glibc's setgroups/setgid/setuid did (`__nptl_setxid`), and hung for good
/// when a thread of the parent was being created at the clone. Here a thread creates threads
/// without pause while children that run as another user are started one after another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_changes_its_user_execs_while_the_parent_creates_threads() {
    let Some(pod) = Pod::create("setxid", false).await else {
        return;
    };
    let Some(cgroup) = TestCgroup::create(&pod.name) else {
        eprintln!("skipped: no cgroup v2 mounted");
        return;
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = std::thread::spawn(|| {}).join();
            }
        })
    };
    let ns = pod.ns().namespaces().clone();
    let dir = cgroup.open();
    let (done, results) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for i in 0..200 {
            let process = netns::Process::new("true").cgroup(dir.clone());
            let setup = Setup::new().new_session().user(Some(65534), Some(65534));
            let started = ns.begin(process, setup).and_then(|p| {
                let pid = p.pid();
                p.wait_exec().map(|s| (pid, s))
            });
            let ok = match started {
                Ok((_, started)) => started.wait().is_ok_and(|s| s.success()),
                Err(_) => false,
            };
            if done.send((i, ok)).is_err() {
                return;
            }
        }
    });
    let mut count = 0;
    while count < 200 {
        match results.recv_timeout(Duration::from_secs(30)) {
            Ok((i, ok)) => {
                assert!(ok, "start {i} as uid 65534 failed");
                count += 1;
            }
            Err(_) => {
                stop.store(true, Ordering::Relaxed);
                let stuck =
                    std::fs::read_to_string(cgroup.dir.join("cgroup.procs")).unwrap_or_default();
                // TestCgroup's drop kills the stuck child, which frees the starting thread.
                panic!("start {count} never reached exec in 30 s (stuck in the cgroup: {stuck:?})");
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    churn.join().expect("churn thread");
}

#[tokio::test]
async fn open_by_name_path_and_pid_agree() {
    let Some(pod) = Pod::create("open", false).await else {
        return;
    };
    let by_name = Namespace::named_netns(&pod.name).expect("by name");
    let by_path = Namespace::open(NsKind::Net, pod.dir.join("net")).expect("by path");
    let mut member = pod
        .ns()
        .spawn(Command::new("sleep").arg("100"))
        .expect("member");
    let by_pid = Namespace::from_pid(NsKind::Net, member.id()).expect("by pid");
    member.kill().expect("kill");
    member.wait().expect("reap");
    let want = pod.ns().net().inode();
    assert_eq!(
        [by_name.inode(), by_path.inode(), by_pid.inode()],
        [want; 3]
    );
    let reopened = PodNamespaces::open(&pod.name, &pod.dir).expect("open the pod");
    assert_eq!(reopened.net().inode(), want);
}

// ---- helpers ----

/// A cgroup v2 below this test process's own, removed when the test ends.
struct TestCgroup {
    dir: PathBuf,
    /// Its path as /proc/PID/cgroup shows it.
    relative: String,
}

impl TestCgroup {
    fn create(name: &str) -> Option<TestCgroup> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        let mount = mountinfo.lines().find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            right
                .starts_with("cgroup2 ")
                .then(|| left.split(' ').nth(4).map(PathBuf::from))?
        })?;
        let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let own = own.lines().find_map(|l| l.strip_prefix("0::"))?.to_owned();
        let relative = format!("{}/podkit-test-{name}", own.trim_end_matches('/'));
        let dir = mount.join(relative.trim_start_matches('/'));
        std::fs::create_dir(&dir).ok()?;
        Some(TestCgroup { dir, relative })
    }

    fn open(&self) -> std::sync::Arc<std::os::fd::OwnedFd> {
        let dir = std::fs::File::open(&self.dir).expect("open the cgroup");
        std::sync::Arc::new(dir.into())
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::write(self.dir.join("cgroup.kill"), "1");
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::remove_dir(&self.dir).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A pod made for one test, deleted when the test ends, pass or fail.
struct Pod {
    name: String,
    dir: PathBuf,
    ns: Option<PodNamespaces>,
}

impl Pod {
    async fn create(prefix: &str, pid: bool) -> Option<Pod> {
        if !require_root() {
            return None;
        }
        let name = unique(prefix);
        let dir = std::env::temp_dir().join("podkit-test").join(&name);
        let mut builder = PodNamespaces::builder(&name, &dir);
        if pid {
            let mut init = Command::new("sleep");
            init.arg("infinity");
            builder = builder.pid_namespace(init);
        }
        let ns = builder.create().await.expect("create pod namespaces");
        Some(Pod {
            name,
            dir,
            ns: Some(ns),
        })
    }

    fn ns(&self) -> &PodNamespaces {
        self.ns.as_ref().expect("pod not deleted yet")
    }

    fn delete(&mut self) -> Vec<String> {
        self.ns
            .take()
            .expect("pod not deleted yet")
            .delete()
            .expect("delete")
    }

    fn assert_gone(&self) {
        assert_gone(&self.name, &self.dir);
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

/// Removes a pod by name and dir when dropped: for tests that make one without `Pod`.
struct Cleanup(String, PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = PodNamespaces::remove(&self.0, &self.1);
    }
}

fn assert_gone(name: &str, dir: &Path) {
    assert!(
        !ip_netns_list().contains(&name.to_owned()),
        "{name} still in ip netns list"
    );
    assert!(
        !Path::new("/run/netns").join(name).exists(),
        "/run/netns/{name} remains"
    );
    assert!(!dir.exists(), "{} remains", dir.display());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let dir = dir.to_string_lossy();
    let leaked: Vec<_> = mounts
        .lines()
        .filter(|l| l.contains(dir.as_ref()) || l.contains(&format!("/run/netns/{name} ")))
        .collect();
    assert!(leaked.is_empty(), "mounts remain: {leaked:#?}");
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

fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("pkt-{prefix}-{}-{n}", std::process::id())
}

/// Whether a thread of this process has this name (as /proc shows it: 15 bytes at most).
/// The tids of this process's threads named `name`.
fn threads_named(name: &str) -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm")).is_ok_and(|comm| comm.trim() == name)
        })
        .map(|task| task.file_name().to_string_lossy().into_owned())
        .collect()
}

fn tempdir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join("podkit-test").join(unique(what));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// Runs `sh -c script` as a member of the pod and returns its stdout.
fn run_in(pod: &Pod, script: &str) -> String {
    let child = pod
        .ns()
        .spawn(
            Command::new("sh")
                .args(["-c", script])
                .stdout(Stdio::piped()),
        )
        .expect("spawn sh");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{script:?} failed: {}", out.status);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn output(cmd: &mut Command) -> std::process::Output {
    cmd.output()
        .unwrap_or_else(|err| panic!("failed to run {cmd:?}: {err}"))
}

fn ip_netns_list() -> Vec<String> {
    let out = output(Command::new("ip").args(["netns", "list"]));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// The binary of one of this crate's examples; `cargo test` builds them next to the tests.
fn example(name: &str) -> PathBuf {
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

/// Waits for `cond` with a deadline. Async, so the runtime's other tasks (a netlink connection
/// that still holds a socket in a pod, say) go on meanwhile.
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
