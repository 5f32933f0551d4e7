//! A pod's hostPorts, published for its whole life: by DNAT to the pod's IP (the pod network's
//! NAT, as the CNI portmap plugin does it: the app sees each client's address; for clients on
//! the host itself, a BPF hook on connect() where the kernel allows it), or by podkit's
//! relay into the pod's loopback (portfwd) for a pod without an IP, for ports that ask for it
//! (`podkit.io/host-ports: relay`, a PROXY protocol header) and for an app found listening on
//! the pod's loopback only, which NAT to the pod's IP cannot reach.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Error;
use super::network::Network;
use crate::spec::{HostPort, PodPlan, ProxyProtocol};

/// How often a pod's listening sockets are read until each NAT'd TCP port's app listens.
const LISTEN_POLL: Duration = Duration::from_millis(250);

/// The pod's hostPorts while it runs.
pub(super) struct HostPorts {
    /// The relays' tasks, until their `stop`.
    relays: Vec<JoinHandle<()>>,
    /// Sockets that hold NAT ports no app can move to the relay (UDP).
    reserved: Vec<Reserved>,
    /// Watches the NAT'd TCP ports' apps and relays those on the pod's loopback only; holds
    /// those ports' sockets.
    watcher: Option<JoinHandle<()>>,
}

impl HostPorts {
    /// Once `stop` (given to [`publish`]) is cancelled: waits for the relays and lets the
    /// ports go. The NAT rules go with the pod's network ([`Network::leave`]).
    pub(super) async fn stop(self) {
        for relay in self.relays {
            let _ = relay.await;
        }
        if let Some(watcher) = self.watcher {
            let _ = watcher.await;
        }
        for held in self.reserved {
            held.release().await;
        }
    }
}

/// For each port published by NAT, a socket bound to it on the host that is never read, as
/// kubelet's hostport manager held them: a port in use on the host fails the pod's start
/// instead of being taken from under its process, no process binds it while the pod has it,
/// and `ss -ltnp` names the supervisor as its holder.
enum Reserved {
    Tcp(HeldTcp),
    Udp(#[allow(dead_code)] std::net::UdpSocket),
}

impl Reserved {
    /// Lets the port go; once this returns, it can be bound again.
    async fn release(self) {
        if let Reserved::Tcp(held) = self {
            held.release().await;
        }
    }
}

/// A NAT'd TCP port's socket on the host. It listens, so that no app takes the port, with
/// SO_REUSEADDR or without (a socket only bound would let one that sets it bind and listen);
/// and a task resets every connection that reaches it. One reaches it only in the moments the
/// pod's DNAT element is not in place yet or no more (between the hold and the publish, or
/// while a port moves to the relay): the client must then be refused, not left connected to a
/// socket nobody ever answers (CI saw a test's client wait there for an hour).
struct HeldTcp {
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl HeldTcp {
    /// Holds `listener` (bound and listening) in a task of the current runtime.
    fn new(listener: std::net::TcpListener) -> std::io::Result<HeldTcp> {
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(refuse_all(listener, stop.clone()));
        Ok(HeldTcp {
            stop,
            task: Some(task),
        })
    }

    /// Closes the socket; once this returns, the port can be bound again.
    async fn release(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for HeldTcp {
    fn drop(&mut self) {
        // Not released (an error path): the task ends on its own at its next poll.
        self.stop.cancel();
    }
}

/// Resets each connection `listener` accepts, until `stop`.
async fn refuse_all(listener: tokio::net::TcpListener, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => {
                if let Ok((conn, _)) = accepted {
                    // A zero linger makes the close a reset: the client sees a refusal at
                    // once instead of an empty reply.
                    let linger = nix::libc::linger { l_onoff: 1, l_linger: 0 };
                    let _ = nix::sys::socket::setsockopt(
                        &conn,
                        nix::sys::socket::sockopt::Linger,
                        &linger,
                    );
                }
            }
        }
    }
}

/// A TCP port published by NAT, with the socket that holds it.
struct NatPort {
    port: HostPort,
    mapping: netns::HostPort,
    held: Option<Reserved>,
    /// Moved to the relay: its app listens on the pod's loopback only.
    relayed: bool,
}

/// Publishes every `hostPort` of the pod whose network namespace is `pod_net` (pinned in `dir`)
/// until `stop`: by DNAT to its IP through `network`, or through the relay. With `cni_ports`,
/// the pod's CNI network publishes them (portmap): only those that ask for the relay are
/// podkit's.
pub(super) async fn publish(
    plan: &PodPlan,
    dir: &Path,
    pod_net: &netns::Namespace,
    network: Option<&Network>,
    cni_ports: bool,
    stop: &CancellationToken,
) -> Result<HostPorts, Error> {
    let all = || {
        plan.init_containers
            .iter()
            .chain(&plan.containers)
            .flat_map(|m| &m.host_ports)
            .filter(move |p| p.relay || !cni_ports)
    };
    // Where NAT ports go; a pod without an IP (not root) has its ports relayed after all.
    let target = match plan.pod_ip() {
        Some(IpAddr::V4(ip)) => network.map(|network| (network, ip)),
        _ => None,
    };
    // A dual stack pod's ports without a host IP are published to IPv6 clients too.
    let ip6 = target.and(plan.pod_ips.iter().find_map(|ip| match ip {
        IpAddr::V6(ip6) => Some(*ip6),
        IpAddr::V4(_) => None,
    }));
    let mut reserved = Vec::new();
    let mut tcp = Vec::new();
    let mut mappings = Vec::new();
    for port in all().filter(|p| !p.relay && target.is_some()) {
        let host_ip = match port.host_ip {
            Some(IpAddr::V4(ip)) => ip,
            _ => Ipv4Addr::UNSPECIFIED,
        };
        let held = hold(port, host_ip).map_err(Error::Network)?;
        if ip6.is_some() && port.host_ip.is_none() {
            // For the pod's life: a port moved to the relay stays IPv4 (the relay's), and its
            // IPv6 clients are refused here.
            reserved.push(hold6(port).map_err(Error::Network)?);
        }
        let protocol = if port.udp {
            netns::Protocol::Udp
        } else {
            netns::Protocol::Tcp
        };
        let mut mapping = netns::HostPort::new(protocol, port.host_port, port.container_port);
        if !host_ip.is_unspecified() {
            mapping = mapping.on(host_ip);
        }
        mappings.push(mapping);
        if port.udp {
            reserved.push(held);
        } else {
            tcp.push(NatPort {
                port: port.clone(),
                mapping,
                held: Some(held),
                relayed: false,
            });
        }
    }
    let mut watcher = None;
    if let Some((network, pod_ip)) = target
        && !mappings.is_empty()
    {
        let listed: Vec<String> = mappings
            .iter()
            .map(|m| format!("{} -> {pod_ip}:{}", m.host_side(), m.container_port))
            .collect();
        let udp: Vec<netns::HostPort> = mappings
            .iter()
            .filter(|m| m.protocol == netns::Protocol::Udp)
            .copied()
            .collect();
        let hooked = network
            .publish(dir, pod_ip, ip6, mappings, plan.host_port_hook)
            .await
            .map_err(|e| Error::Network(format!("hostPort: {e}")))?;
        let how = if hooked {
            "NAT and connect hook"
        } else {
            "NAT"
        };
        for port in listed {
            info!(pod = %plan.name, "hostPort: {how} {port}");
        }
        if !tcp.is_empty() {
            let watch = Watch {
                pod_net: pod_net.clone(),
                network: network.clone(),
                dir: dir.to_path_buf(),
                pod: plan.name.clone(),
                pod_ip,
                pod_ip6: ip6,
                udp,
                hook: plan.host_port_hook,
            };
            watcher = Some(tokio::spawn(watch.run(tcp, stop.clone())));
        }
    }
    let mut relays = Vec::new();
    let relayed: Vec<&HostPort> = all().filter(|p| p.relay || target.is_none()).collect();
    // One forwarder per listen address and PROXY protocol version: both are per forwarder.
    let mut groups: BTreeMap<(IpAddr, Option<ProxyProtocol>), Vec<&HostPort>> = BTreeMap::new();
    for port in relayed {
        let ip = port.host_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        groups
            .entry((ip, port.proxy_protocol))
            .or_default()
            .push(port);
    }
    for ((ip, proxy_protocol), ports) in groups {
        match relay(&plan.name, dir, ip, proxy_protocol, &ports, stop).await {
            Ok(task) => relays.push(task),
            Err(err) => {
                stop.cancel();
                for relay in relays {
                    let _ = relay.await;
                }
                if let Some(watcher) = watcher {
                    let _ = watcher.await;
                }
                return Err(Error::HostPort(err));
            }
        }
    }
    Ok(HostPorts {
        relays,
        reserved,
        watcher,
    })
}

/// Holds `port` on the host at `host_ip` for the pod; an error names a port in use.
fn hold(port: &HostPort, host_ip: Ipv4Addr) -> Result<Reserved, String> {
    let address = (host_ip, port.host_port);
    let held = if port.udp {
        std::net::UdpSocket::bind(address).map(Reserved::Udp)
    } else {
        std::net::TcpListener::bind(address)
            .and_then(HeldTcp::new)
            .map(Reserved::Tcp)
    };
    held.map_err(|err| not_held(port, &host_ip.to_string(), &err))
}

/// Why `port` could not be held on the host address `on`: in use (by whom `ss -ltnp` tells),
/// or the bind's own error.
fn not_held(port: &HostPort, on: &str, err: &std::io::Error) -> String {
    let proto = if port.udp { "udp" } else { "tcp" };
    let why = if err.kind() == std::io::ErrorKind::AddrInUse {
        "is already in use".to_owned()
    } else {
        format!("cannot be bound: {err}")
    };
    format!("hostPort: port {} ({proto}) on {on} {why}", port.host_port)
}

/// Holds `port` (no host IP) on the host's IPv6 addresses, `[::]`, for the pod: a socket of
/// IPv6 only (IPV6_V6ONLY), beside the IPv4 one of [`hold`].
fn hold6(port: &HostPort) -> Result<Reserved, String> {
    use socket2::{Domain, Socket, Type};
    let bound = || -> std::io::Result<Reserved> {
        let kind = if port.udp { Type::DGRAM } else { Type::STREAM };
        // Close-on-exec, as socket2 makes every socket.
        let socket = Socket::new(Domain::IPV6, kind, None)?;
        socket.set_only_v6(true)?;
        let address = std::net::SocketAddr::from((Ipv6Addr::UNSPECIFIED, port.host_port));
        if port.udp {
            socket.bind(&address.into())?;
            return Ok(Reserved::Udp(socket.into()));
        }
        // As std's TcpListener::bind does for the IPv4 one.
        socket.set_reuse_address(true)?;
        socket.bind(&address.into())?;
        socket.listen(128)?;
        HeldTcp::new(socket.into()).map(Reserved::Tcp)
    };
    bound().map_err(|err| not_held(port, "[::]", &err))
}

/// Starts podkit's relay of `ports` on the host address `ip` into the pod's loopback, until
/// `stop`.
async fn relay(
    pod: &str,
    dir: &Path,
    ip: IpAddr,
    proxy_protocol: Option<ProxyProtocol>,
    ports: &[&HostPort],
    stop: &CancellationToken,
) -> Result<JoinHandle<()>, portfwd::Error> {
    let mappings = ports
        .iter()
        .map(|port| {
            if port.udp {
                portfwd::PortMapping::udp(port.host_port, port.container_port)
            } else {
                portfwd::PortMapping::tcp(port.host_port, port.container_port)
            }
        })
        .collect();
    let target = portfwd::Target::Netns(dir.join("ns/net").display().to_string());
    let mut config =
        portfwd::Config::new(target, mappings).addresses(vec![portfwd::ListenAddress::Ip(ip)]);
    if let Some(version) = proxy_protocol {
        config = config.proxy_protocol(match version {
            ProxyProtocol::V1 => portfwd::ProxyProtocol::V1,
            ProxyProtocol::V2 => portfwd::ProxyProtocol::V2,
        });
    }
    let forwarder = portfwd::Forwarder::bind(config).await?;
    for listening in forwarder.listeners() {
        info!(%pod, "hostPort: {listening}");
    }
    let stop = stop.clone();
    Ok(tokio::spawn(async move {
        if let Err(err) = forwarder.run(stop).await {
            warn!(%err, "hostPort forwarding stopped");
        }
    }))
}

/// What the watcher of NAT'd TCP ports needs of the pod.
struct Watch {
    pod_net: netns::Namespace,
    network: Network,
    dir: PathBuf,
    pod: String,
    pod_ip: Ipv4Addr,
    /// Its IPv6 address, for a dual stack pod.
    pod_ip6: Option<Ipv6Addr>,
    /// The pod's UDP mappings, published again with the TCP ones that stay NAT.
    udp: Vec<netns::HostPort>,
    /// The NAT'd ports are on the connect hook too.
    hook: bool,
}

impl Watch {
    /// Until `stop`: reads the pod's listening TCP sockets every [`LISTEN_POLL`] until each
    /// port's app listens. One on the pod's every address (or its IP) keeps the NAT; one on
    /// its loopback only, which the NAT cannot reach, gets the relay instead (its app then sees
    /// every client as 127.0.0.1, and a warning says so).
    async fn run(self, mut ports: Vec<NatPort>, stop: CancellationToken) {
        let mut relays = Vec::new();
        let mut pending: Vec<usize> = (0..ports.len()).collect();
        while !pending.is_empty() {
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(LISTEN_POLL) => {}
            }
            let Ok(listening) = self.pod_net.run_async(read_listeners).await else {
                continue;
            };
            let mut switch = Vec::new();
            pending.retain(|&i| match bound(&listening, ports[i].port.container_port) {
                None => true,
                Some(Bound::Reachable) => false,
                Some(Bound::LoopbackOnly) => {
                    switch.push(i);
                    false
                }
            });
            if switch.is_empty() {
                continue;
            }
            for &i in &switch {
                ports[i].relayed = true;
            }
            let keep: Vec<netns::HostPort> = ports
                .iter()
                .filter(|p| !p.relayed)
                .map(|p| p.mapping)
                .chain(self.udp.iter().copied())
                .collect();
            if let Err(err) = self
                .network
                .publish(&self.dir, self.pod_ip, self.pod_ip6, keep, self.hook)
                .await
            {
                warn!(%err, "failed to take hostPorts off the NAT for the relay");
                continue;
            }
            for i in switch {
                let port = &mut ports[i];
                // The relay binds the port the socket held.
                if let Some(held) = port.held.take() {
                    held.release().await;
                }
                let ip = port
                    .port
                    .host_ip
                    .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
                warn!(
                    pod = %self.pod,
                    "hostPort {}: the app listens on the pod's loopback only, which NAT to the \
                     pod's IP cannot reach: relayed into it instead (the app sees every client \
                     as 127.0.0.1); listen on 0.0.0.0 as on a cluster, or say \
                     podkit.io/host-ports: relay",
                    port.port.host_port
                );
                let dir = &self.dir;
                match relay(&self.pod, dir, ip, None, &[&port.port], &stop).await {
                    Ok(task) => relays.push(task),
                    Err(err) => warn!(%err, "failed to relay hostPort {}", port.port.host_port),
                }
            }
        }
        stop.cancelled().await;
        for relay in relays {
            let _ = relay.await;
        }
        for held in ports.into_iter().filter_map(|p| p.held) {
            held.release().await;
        }
    }
}

/// How an app listens on a port of the pod.
#[derive(Debug, PartialEq, Eq)]
enum Bound {
    /// On an address NAT to the pod's IP reaches (any address, or the pod's own).
    Reachable,
    /// On 127.0.0.1 or ::1 only.
    LoopbackOnly,
}

/// The listening TCP sockets of this thread's network namespace, as (address, port), from
/// `/proc/thread-self/net/tcp` and `tcp6` (the thread's, not the process's, namespace).
fn read_listeners() -> Vec<(IpAddr, u16)> {
    let mut found = Vec::new();
    for file in ["tcp", "tcp6"] {
        let text =
            std::fs::read_to_string(format!("/proc/thread-self/net/{file}")).unwrap_or_default();
        found.extend(parse_listeners(&text));
    }
    found
}

/// The LISTEN sockets of a `/proc/net/tcp` or `tcp6` table: local addresses are the kernel's
/// bytes as 32-bit words in hex, each printed in host order (little-endian here), the port
/// in hex.
fn parse_listeners(text: &str) -> Vec<(IpAddr, u16)> {
    const LISTEN: &str = "0A";
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut cols = line.split_whitespace();
            let local = cols.nth(1)?;
            let state = cols.nth(1)?;
            if state != LISTEN {
                return None;
            }
            let (addr, port) = local.split_once(':')?;
            let port = u16::from_str_radix(port, 16).ok()?;
            let mut bytes = Vec::with_capacity(16);
            for word in addr.as_bytes().chunks(8) {
                let word = u32::from_str_radix(std::str::from_utf8(word).ok()?, 16).ok()?;
                bytes.extend(word.to_le_bytes());
            }
            let ip = match bytes.len() {
                4 => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
                16 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?)),
                _ => return None,
            };
            Some((ip, port))
        })
        .collect()
}

/// How `port` is listened on, if it is.
fn bound(listening: &[(IpAddr, u16)], port: u16) -> Option<Bound> {
    let on: Vec<&IpAddr> = listening
        .iter()
        .filter(|(_, p)| *p == port)
        .map(|(ip, _)| ip)
        .collect();
    if on.is_empty() {
        None
    } else if on.iter().all(|ip| ip.is_loopback()) {
        Some(Bound::LoopbackOnly)
    } else {
        Some(Bound::Reachable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_held_port_resets_what_reaches_it_and_is_free_once_released() {
        use tokio::io::AsyncReadExt;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        let held = HeldTcp::new(listener).expect("hold");
        // No one else takes it, not even with SO_REUSEADDR (which std sets).
        assert!(std::net::TcpListener::bind(address).is_err());
        // A client that reaches it (no DNAT element yet) is refused, not left waiting.
        let mut conn = tokio::net::TcpStream::connect(address)
            .await
            .expect("connect");
        let mut reply = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut reply))
            .await
            .expect("an answer, not a hang");
        assert_eq!(
            read.map_err(|e| e.kind()),
            Err(std::io::ErrorKind::ConnectionReset)
        );
        held.release().await;
        assert!(std::net::TcpListener::bind(address).is_ok(), "free again");
    }

    #[test]
    fn listeners_are_read_from_the_kernels_tables() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1C02 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0
   2: 0100007F:1C02 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 20 4 30 10 -1
";
        let tcp6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:1C03 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4 1 0 100 0 0 10 0
";
        let mut found = parse_listeners(tcp);
        found.extend(parse_listeners(tcp6));
        assert_eq!(
            found,
            [
                (IpAddr::V4(Ipv4Addr::LOCALHOST), 7170),
                (IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8080),
                (IpAddr::V6(Ipv6Addr::LOCALHOST), 7171),
            ]
        );
        assert_eq!(bound(&found, 7170), Some(Bound::LoopbackOnly));
        assert_eq!(bound(&found, 7171), Some(Bound::LoopbackOnly));
        assert_eq!(bound(&found, 8080), Some(Bound::Reachable));
        assert_eq!(bound(&found, 9090), None);
    }
}
