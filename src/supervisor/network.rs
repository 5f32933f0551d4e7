//! The pod network: every pod (unless it is on the host's network or asks for none) gets an
//! address of its own on one bridge of the host, as the CNI `bridge` and `host-local` plugins
//! give kubelet's pods theirs: a veth pair whose pod end is `eth0` with the address and a
//! default route via the bridge, the address leased from a subnet (the `netns` crate does both
//! through rtnetlink). Pods reach each other and the host reaches them by these addresses.
//!
//! Where the host has IPv6, the bridge is dual stack: it has an IPv6 subnet too (a ULA /64 by
//! default), and every pod an address of each family (IPv4 first, as `status.podIPs` lists
//! them; the IPv6 one follows from the IPv4 lease, [`Subnet6::pod_address`]), with a default
//! route of each, its IPv6 traffic leaving the host masqueraded and its hostPorts published to
//! IPv6 clients too. Services stay IPv4, as on a cluster whose Services are single stack.
//!
//! The bridge and the leases are the host's, not one podkit root's: every pod on the host
//! shares them, whatever its `PODKIT_ROOT`, so the leases live under [`LEASES_DIR`]. A lease's
//! owner is the pod's state directory, which tells `gc` whether the pod still has a
//! supervisor. The bridge (and its NAT table) is made by the first pod that finds none and
//! deleted by `gc` when no lease is left, both under the leases' lock, so a pod joining never
//! finds it half gone.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use netns::{Bridge, Ipam, Netlink, Subnet, Subnet6};
use tracing::{debug, warn};

/// Where every podkit root's pods lease their addresses: `<LEASES_DIR>/<bridge>/<subnet>/`.
/// Pod addresses mean nothing after a reboot, so it is on `/run` (a tmpfs on most hosts).
pub const LEASES_DIR: &str = "/run/podkit/networks";

/// Where the hostPorts' connect hook is pinned (a bpffs of podkit's own), shared by every
/// podkit root as the bridge is.
pub const HOOK_DIR: &str = netns::ConnectHook::DEFAULT_DIR;

/// The host's pod network: its bridge and the leases of its subnet.
#[derive(Debug, Clone)]
pub struct Network {
    bridge: Bridge,
    ipam: Ipam,
}

impl Network {
    /// The network as the environment configures it: `PODKIT_BRIDGE` (the bridge's name,
    /// default `podkit0`), `PODKIT_POD_SUBNET` (default 10.90.0.0/16), `PODKIT_POD_SUBNET6`
    /// (default fd90:706f:646b::/64 where the host has IPv6, none where it has not; `none`:
    /// IPv4 only) and `PODKIT_POD_MTU` (default 65535: the pods' traffic never leaves the
    /// host on this bridge).
    pub fn from_env() -> Result<Network, String> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let name = var("PODKIT_BRIDGE").unwrap_or_else(|| Bridge::DEFAULT_NAME.to_owned());
        let subnet = match var("PODKIT_POD_SUBNET") {
            Some(text) => text
                .trim()
                .parse::<Subnet>()
                .map_err(|e| format!("PODKIT_POD_SUBNET={text:?}: {e}"))?,
            None => Bridge::DEFAULT_SUBNET,
        };
        let mut bridge = Bridge::new(name.clone(), subnet)
            .map_err(|e| format!("PODKIT_BRIDGE={name:?}: {e}"))?;
        if let Some(text) = var("PODKIT_POD_MTU") {
            let mtu = text
                .trim()
                .parse::<u32>()
                .map_err(|_| format!("PODKIT_POD_MTU={text:?}: not a number"))?;
            bridge = bridge
                .with_mtu(mtu)
                .map_err(|e| format!("PODKIT_POD_MTU={text:?}: {e}"))?;
        }
        let subnet6 = match var("PODKIT_POD_SUBNET6") {
            Some(text) if text.trim() == "none" => None,
            Some(text) => {
                let subnet6 = text
                    .trim()
                    .parse::<Subnet6>()
                    .map_err(|e| format!("PODKIT_POD_SUBNET6={text:?}: {e}"))?;
                if !host_has_ipv6() {
                    return Err(format!(
                        "PODKIT_POD_SUBNET6={text:?}: this host has IPv6 disabled \
                         (net.ipv6.conf.all.disable_ipv6 is not 0); set it to none"
                    ));
                }
                Some(subnet6)
            }
            None => host_has_ipv6().then_some(Bridge::DEFAULT_SUBNET6),
        };
        if let Some(subnet6) = subnet6 {
            bridge = bridge
                .with_ipv6(subnet6)
                .map_err(|e| format!("PODKIT_POD_SUBNET6={subnet6}: {e}"))?;
        }
        let ipam = Ipam::open(Path::new(LEASES_DIR).join(bridge.name()), subnet)
            .map_err(|e| format!("failed to open the pod network's leases: {e}"))?;
        Ok(Network { bridge, ipam })
    }

    /// Gives the pod whose network namespace is `pod` an address (and an IPv6 one on a dual
    /// stack bridge), leased to `owner` (the pod's state directory): the bridge made if this
    /// is the first pod, then the pod's veth pair, addresses and default routes. Returns the
    /// addresses, IPv4 first. On failure nothing is left: no lease, no link.
    pub async fn join(
        &self,
        pod: &netns::Namespace,
        owner: &Path,
        reaper: &super::reaper::Reaper,
    ) -> Result<Vec<IpAddr>, String> {
        let owner = owner_id(owner)?;
        let host =
            Netlink::host().map_err(|e| format!("failed to reach the host's netlink: {e}"))?;
        let ipam = self.ipam.clone();
        let leased = owner.clone();
        // The lock and the lease files block: off the runtime's threads.
        let (lock, ip) = tokio::task::spawn_blocking(move || {
            let lock = ipam.lock()?;
            let ip = lock.allocate(&leased)?;
            Ok::<_, netns::Error>((lock, ip))
        })
        .await
        .map_err(|e| format!("the lease task failed: {e}"))?
        .map_err(|e| format!("failed to lease a pod address: {e}"))?;
        // A dual stack pod's IPv6 address follows from its IPv4 one: the one lease holds both.
        let ip6 = match self.bridge.subnet6() {
            Some(subnet6) => match subnet6.pod_address(self.bridge.subnet(), ip) {
                Ok(ip6) => Some(ip6),
                Err(err) => {
                    drop(lock);
                    let _ = self.release(Some(&owner), &host).await;
                    return Err(format!("no IPv6 address for {ip}: {err}"));
                }
            },
            None => None,
        };
        // Under the lock: `gc` cannot delete the bridge meanwhile (it does only when no lease
        // is left), and once the lock is let go this pod's lease keeps it.
        let ensured = match self.bridge.ensure(&host).await {
            // The pod that makes the bridge sets up its NAT table too: pods' traffic leaving
            // the host masqueraded, and the chains hostPorts go through (an `nft` run, 20 ms
            // or more: once, not for every pod).
            Ok(true) => {
                let (subnet, bridge) = (self.bridge.subnet(), self.bridge.name().to_owned());
                let subnet6 = self.bridge.subnet6();
                // `nft` is a child the supervisor's reaper must leave to `ensure`'s wait.
                let reaper = reaper.clone();
                let table = blocking(move || {
                    reaper.paused(|| {
                        let nat = nat(&bridge)?;
                        nat.ensure(subnet, &bridge)?;
                        if let Some(subnet6) = subnet6
                            && !nat.ensure_ipv6(subnet6, &bridge)?
                        {
                            warn!(
                                "this host does not forward IPv6 (net.ipv6.conf.all.forwarding \
                                 is 0): pods' IPv6 reaches the host and other pods, not beyond; \
                                 podkit leaves that switch to the host's admin (turned on, the \
                                 host stops taking IPv6 routes from router advertisements unless \
                                 accept_ra=2)"
                            );
                        }
                        Ok(())
                    })
                })
                .await;
                // Services' cluster IPs are reached through the bridge (their DNAT happens
                // on the way): one with no rule (yet) never goes out the default route.
                match crate::objects::service_subnet() {
                    Ok(services) => {
                        if let Err(err) =
                            host.replace_link_route(services, self.bridge.name()).await
                        {
                            warn!(%err, "failed to route the Services' cluster IPs to the bridge");
                        }
                    }
                    Err(err) => warn!(%err, "no route for the Services' cluster IPs"),
                }
                table
            }
            Ok(false) => Ok(()),
            Err(err) => Err(super::image::error_chain(&err)),
        };
        drop(lock);
        let attached = match ensured {
            Ok(()) => self.attach(&host, pod, &owner, ip, ip6).await,
            Err(err) => Err(err),
        };
        if let Err(err) = attached {
            let _ = self.release(Some(&owner), &host).await;
            return Err(format!(
                "failed to put the pod on bridge {} ({}): {err}",
                self.bridge.name(),
                self.bridge.subnet()
            ));
        }
        debug!(%ip, ?ip6, owner, bridge = %self.bridge.name(), "pod joined the network");
        Ok(std::iter::once(IpAddr::V4(ip))
            .chain(ip6.map(IpAddr::V6))
            .collect())
    }

    /// Puts the pod on the bridge as `owner`'s veth. Its host end's name comes from the owner,
    /// so a pod made again under the same name right after it was deleted can find the last
    /// one's veth still there: the kernel removes it only once the old network namespace is
    /// torn down, after RCU grace periods (longer with the pod's IPv6 addresses; CI saw it).
    /// That one, a veth port of this bridge and no other link, is deleted and the attach made
    /// once more.
    async fn attach(
        &self,
        host: &Netlink,
        pod: &netns::Namespace,
        owner: &str,
        ip: Ipv4Addr,
        ip6: Option<Ipv6Addr>,
    ) -> Result<(), String> {
        let host_if = host_interface(owner);
        let first = self
            .bridge
            .attach_dual_stack(host, pod, &host_if, ip, ip6)
            .await;
        let retried = match first {
            Err(err) if err.netlink_errno() == Some(nix::libc::EEXIST) => {
                debug!(%host_if, "a veth of the pod's last run is still there: deleted");
                match self.bridge.detach(host, &host_if).await {
                    Ok(()) => {
                        self.bridge
                            .attach_dual_stack(host, pod, &host_if, ip, ip6)
                            .await
                    }
                    Err(_) => Err(err),
                }
            }
            other => other,
        };
        retried.map_err(|e| super::image::error_chain(&e))
    }

    /// Publishes the pod's hostPorts by DNAT to its address `ip` (and to IPv6 clients, those
    /// without a host IP, by DNAT to its IPv6 address `ip6`), as the CNI portmap plugin
    /// does, under `owner` (its state directory), in place of any it had (none: removes them;
    /// a port moved to the relay goes so); a port another pod holds is refused, naming it.
    ///
    /// With `hook`, the host's own clients of the ports skip the NAT: the [`netns::ConnectHook`]
    /// sends their connect() straight to the pod (loaded by the first pod that asks). Where the
    /// kernel refuses the hook, a warning says so once per pod and the DNAT serves them too.
    /// Returns whether the hook serves the ports.
    pub async fn publish(
        &self,
        owner: &Path,
        ip: Ipv4Addr,
        ip6: Option<Ipv6Addr>,
        ports: Vec<netns::HostPort>,
        hook: bool,
    ) -> Result<bool, String> {
        let owner = owner_id(owner)?;
        let bridge = self.bridge.name().to_owned();
        let on_hook = if hook { ports.clone() } else { Vec::new() };
        blocking(move || {
            let nat = nat(&bridge)?;
            nat.unpublish(&owner)?;
            if !ports.is_empty() {
                nat.publish(&owner, ip, &ports)?;
                if let Some(ip6) = ip6 {
                    nat.publish_ipv6(&owner, ip6, &ports)?;
                }
            }
            Ok(())
        })
        .await?;
        if on_hook.is_empty() {
            // Off the hook, if it had them (a port moved to the relay, or the last one).
            blocking(move || match netns::ConnectHook::open(HOOK_DIR)? {
                Some(hook) => hook.set(ip, &[]),
                None => Ok(()),
            })
            .await?;
            return Ok(false);
        }
        // The hook gone between its `ensure` and the `set` (`gc` removing it as the last pod
        // left): loaded again, once.
        let hooked = blocking(move || {
            netns::ConnectHook::ensure(HOOK_DIR)
                .and_then(|hook| hook.set_dual_stack(ip, ip6, &on_hook))
                .or_else(|_| {
                    netns::ConnectHook::ensure(HOOK_DIR)?.set_dual_stack(ip, ip6, &on_hook)
                })
        })
        .await;
        match hooked {
            Ok(()) => Ok(true),
            Err(err) => {
                warn!(%err, "the host's own clients of the pod's hostPorts go through the DNAT");
                Ok(false)
            }
        }
    }

    /// Takes `owner`'s hostPorts off the NAT and releases its address, once its pod's network
    /// namespace is gone (which took its veth pair with it). The bridge and its NAT table stay
    /// for the next pod, as docker0 and CNI's bridges do: making them costs a pod start 20 ms
    /// and more (an `nft` run), deleting the bridge 15-35 ms; `gc` deletes them when no pod
    /// is left on them.
    pub async fn leave(&self, owner: &Path) -> Result<(), String> {
        let owner = owner_id(owner)?;
        self.unpublish(&owner).await?;
        // Off the connect hook before the address goes back: once released, a new pod may
        // lease it and put its own ports on the hook, which this must not take off.
        let (ipam, leased) = (self.ipam.clone(), owner.clone());
        let ips = blocking(move || ipam.leases())
            .await
            .map_err(|e| format!("failed to read the pod addresses' leases: {e}"))?
            .into_iter()
            .filter(|(_, o)| *o == leased)
            .map(|(ip, _)| ip)
            .collect();
        unhook(ips).await?;
        let ipam = self.ipam.clone();
        blocking(move || ipam.release(&owner))
            .await
            .map(drop)
            .map_err(|e| format!("failed to release the pod's address: {e}"))
    }

    /// Removes `owner`'s hostPorts from the NAT table, if it has any (and the table exists).
    async fn unpublish(&self, owner: &str) -> Result<bool, String> {
        let (bridge, owner) = (self.bridge.name().to_owned(), owner.to_owned());
        blocking(move || match nat(&bridge)?.unpublish(&owner) {
            Err(netns::Error::NatNotReady { .. }) => Ok(false),
            other => other,
        })
        .await
        .map_err(|e| format!("failed to remove the pod's hostPorts: {e}"))
    }

    /// Releases every lease whose owner `alive` says is gone (a supervisor that was killed),
    /// deleting each one's veth if its namespace is somehow still there, and the hostPorts of
    /// such owners; then deletes the bridge and its NAT table when no lease is left. Returns
    /// what it did, one line each, for `gc`.
    pub async fn sweep(&self, alive: impl Fn(&Path) -> bool) -> Result<Vec<String>, String> {
        let host =
            Netlink::host().map_err(|e| format!("failed to reach the host's netlink: {e}"))?;
        let ipam = self.ipam.clone();
        let leases = blocking(move || ipam.leases())
            .await
            .map_err(|e| format!("failed to read the pod addresses' leases: {e}"))?;
        let mut done = Vec::new();
        // hostPorts of pods that are gone (also of one whose lease went first).
        let bridge = self.bridge.name().to_owned();
        let owners = blocking(move || match nat(&bridge)?.owners() {
            Err(netns::Error::NatNotReady { .. }) => Ok(Vec::new()),
            other => other,
        })
        .await?;
        for owner in owners.iter().filter(|o| !alive(Path::new(o))) {
            if self.unpublish(owner).await? {
                done.push(format!(
                    "removed the hostPorts of {owner} (its supervisor is gone)"
                ));
            }
        }
        for (ip, owner) in leases {
            if alive(Path::new(&owner)) {
                continue;
            }
            let _ = self.bridge.detach(&host, &host_interface(&owner)).await;
            unhook(vec![ip]).await?;
            self.release(Some(&owner), &host).await?;
            done.push(format!(
                "released pod address {ip} (of {owner}, whose supervisor is gone)"
            ));
        }
        // A bridge no pod is on any more, with its NAT table.
        if self.release(None, &host).await? {
            done.push(format!(
                "deleted bridge {} (no pod is on it)",
                self.bridge.name()
            ));
        }
        // The connect hook's ports of this network's addresses that no pod holds (a pod killed
        // between its lease's release and its ports' removal), then the hook if no port is left
        // on it (pods of other bridges may still use it).
        let (ipam, subnet) = (self.ipam.clone(), self.bridge.subnet());
        let stale = blocking(move || {
            let Some(hook) = netns::ConnectHook::open(HOOK_DIR)? else {
                return Ok(Vec::new());
            };
            hook.retain(|| {
                let leased: Vec<Ipv4Addr> = ipam.leases()?.into_iter().map(|(ip, _)| ip).collect();
                Ok(move |ip| !subnet.contains(ip) || leased.contains(&ip))
            })
        })
        .await?;
        for ip in stale {
            done.push(format!(
                "removed the connect hook's hostPorts of {ip} (no pod has it)"
            ));
        }
        if remove_unused_hook().await? {
            done.push("removed the hostPorts' connect hook (no hostPort is left)".to_owned());
        }
        Ok(done)
    }

    /// Releases `owner`'s lease, if one is given, then deletes the bridge if no lease is
    /// left, all under the lock. Returns whether it deleted the bridge.
    async fn release(&self, owner: Option<&str>, host: &Netlink) -> Result<bool, String> {
        let ipam = self.ipam.clone();
        let owner = owner.map(str::to_owned);
        let (lock, released, empty) = tokio::task::spawn_blocking(move || {
            let lock = ipam.lock()?;
            let released = match &owner {
                Some(owner) => lock.release(owner)?,
                None => Vec::new(),
            };
            let empty = lock.leases()?.is_empty();
            Ok::<_, netns::Error>((lock, released, empty))
        })
        .await
        .map_err(|e| format!("the lease task failed: {e}"))?
        .map_err(|e| format!("failed to release the pod's address: {e}"))?;
        debug!(?released, "released pod address");
        let mut deleted = false;
        // Only a bridge: a link of that name of another kind is not podkit's (join refuses it).
        let bridge = host.link(self.bridge.name()).await.ok();
        if empty && bridge.is_some_and(|l| l.kind.as_deref() == Some("bridge")) {
            match host.del_link(self.bridge.name()).await {
                Ok(()) => {
                    debug!(bridge = %self.bridge.name(), "deleted the bridge: no pod is on it");
                    deleted = true;
                    // And its NAT table, which only its pods use.
                    let bridge = self.bridge.name().to_owned();
                    if let Err(err) = blocking(move || nat(&bridge)?.remove()).await {
                        warn!(%err, "failed to remove the pod network's nftables table");
                    }
                }
                Err(netns::Error::LinkNotFound { .. }) => {}
                Err(err) => {
                    warn!(bridge = %self.bridge.name(), %err, "failed to delete the bridge")
                }
            }
        }
        drop(lock);
        Ok(deleted)
    }
}

/// Releases, in every pod network on the host (each bridge with leases under [`LEASES_DIR`],
/// whatever its configuration), the leases of pods that `gone` names, deleting what is left
/// of their veth pairs, and each bridge left with no pod. For `delete` and `gc` of pods whose
/// supervisor died. Runs on a thread and a runtime of its own, so it can be called from any
/// code, async or not. Returns what it did, one line each.
pub fn release_gone(gone: impl Fn(&Path) -> bool + Send + Sync + 'static) -> Vec<String> {
    let networks = match on_host() {
        Ok(networks) => networks,
        Err(err) => return vec![err],
    };
    if networks.is_empty() {
        return Vec::new();
    }
    let work = std::thread::spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(err) => {
                return vec![format!(
                    "failed to start a runtime for the pod network: {err}"
                )];
            }
        };
        runtime.block_on(async {
            let mut done = Vec::new();
            for network in networks {
                match network.sweep(|owner| !gone(owner)).await {
                    Ok(lines) => done.extend(lines),
                    Err(err) => done.push(err),
                }
            }
            done
        })
    });
    work.join()
        .unwrap_or_else(|_| vec!["releasing pod addresses failed (a panic)".to_owned()])
}

/// Every pod network with leases on this host, as its directories under [`LEASES_DIR`] name
/// it: `<bridge>/<network>-<prefix length>`.
fn on_host() -> Result<Vec<Network>, String> {
    let mut networks = Vec::new();
    let bridges = match std::fs::read_dir(LEASES_DIR) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(networks),
        Err(err) => return Err(format!("failed to read {LEASES_DIR}: {err}")),
    };
    for bridge_dir in bridges.flatten() {
        let Some(name) = bridge_dir.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let Ok(subnets) = std::fs::read_dir(bridge_dir.path()) else {
            continue;
        };
        for subnet_dir in subnets.flatten() {
            let text = subnet_dir
                .file_name()
                .to_string_lossy()
                .replacen('-', "/", 1);
            let Ok(subnet) = text.parse::<Subnet>() else {
                continue;
            };
            let (Ok(bridge), Ok(ipam)) = (
                Bridge::new(name.clone(), subnet),
                Ipam::open(bridge_dir.path(), subnet),
            ) else {
                continue;
            };
            networks.push(Network { bridge, ipam });
        }
    }
    Ok(networks)
}

/// The NAT of the pod network on `bridge`, in the host's (this thread's) network namespace:
/// the nftables table of the bridge's name, so a second pod network has its own.
/// Brings the NAT table of the configured pod network's bridge, if the bridge exists, to this
/// podkit's rules: a bridge an older podkit made has a table without the Services' chains
/// (`Nat::ensure` adds them in place, keeping the hostPorts published), and no route of the
/// Services' cluster IPs to it. Under the leases' lock, so `gc` does not delete the bridge
/// meanwhile. Returns whether the bridge exists. For the Services' controllers, which run no
/// async runtime.
pub fn upgrade_table() -> Result<bool, String> {
    let network = Network::from_env()?;
    let _lock = network
        .ipam
        .lock()
        .map_err(|e| format!("failed to lock the pod addresses' leases: {e}"))?;
    let bridge = network.bridge.name().to_owned();
    if !Path::new("/sys/class/net").join(&bridge).exists() {
        return Ok(false);
    }
    nat(&bridge)
        .and_then(|nat| nat.ensure(network.bridge.subnet(), &bridge))
        .map_err(|e| format!("failed to bring the NAT table of {bridge} up to date: {e}"))?;
    let services = crate::objects::service_subnet()?;
    let routed = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|runtime| {
            runtime.block_on(async {
                let host = Netlink::host().map_err(|e| e.to_string())?;
                host.replace_link_route(services, &bridge)
                    .await
                    .map_err(|e| e.to_string())
            })
        });
    if let Err(err) = routed {
        warn!(%err, "failed to route the Services' cluster IPs to the bridge");
    }
    Ok(true)
}

/// The NAT table of the pod network the environment configures (see [`Network::from_env`]),
/// for the Services' controllers.
pub fn nat_table() -> Result<netns::Nat, String> {
    let network = Network::from_env()?;
    nat(network.bridge.name()).map_err(|e| e.to_string())
}

fn nat(bridge: &str) -> netns::Result<netns::Nat> {
    netns::Nat::current()?.with_table(bridge)
}

/// Takes the hostPorts of the pods at `ips` (released) off the connect hook, if it is loaded.
async fn unhook(ips: Vec<Ipv4Addr>) -> Result<(), String> {
    if ips.is_empty() {
        return Ok(());
    }
    blocking(move || match netns::ConnectHook::open(HOOK_DIR)? {
        Some(hook) => hook.retain(|| Ok(|ip| !ips.contains(&ip))).map(drop),
        None => Ok(()),
    })
    .await
    .map_err(|e| format!("failed to take the pod's hostPorts off the connect hook: {e}"))
}

/// Removes the connect hook once no hostPort is on it (`gc`, when no pod is left on a bridge).
async fn remove_unused_hook() -> Result<bool, String> {
    blocking(|| netns::ConnectHook::remove_if_unused(HOOK_DIR)).await
}

/// Runs a blocking call of the `netns` crate (its nftables and lease files) off the runtime's
/// threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> netns::Result<T> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("a blocking task failed: {e}"))?
        .map_err(|e| super::image::error_chain(&e))
}

/// Whether the host has IPv6: its `net.ipv6.conf.all.disable_ipv6` is 0 (the file is missing
/// where the kernel has no IPv6 at all).
fn host_has_ipv6() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv6/conf/all/disable_ipv6")
        .is_ok_and(|text| text.trim() == "0")
}

/// A lease's owner: the pod's state directory, as text (leases are text files).
fn owner_id(dir: &Path) -> Result<String, String> {
    dir.to_str().map(str::to_owned).ok_or_else(|| {
        format!(
            "the pod's state directory {} is not UTF-8, which the pod network's leases need",
            dir.display()
        )
    })
}

/// The host end of the pod's veth pair: `pk` and 12 hex digits of the FNV-1a hash of its
/// owner, so `gc` finds it again from the lease alone (CNI's bridge plugin names its
/// `veth` + 8 random hex digits and must keep the name in its cache). 15 bytes at most.
fn host_interface(owner: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in owner.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("pk{:012x}", hash >> 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_interfaces_are_short_distinct_and_stable() {
        let a = host_interface("/run/podkit/pods/default_web");
        let b = host_interface("/run/podkit/pods/default_web2");
        assert_eq!(a.len(), 14);
        assert!(a.starts_with("pk"));
        assert_ne!(a, b);
        assert_eq!(a, host_interface("/run/podkit/pods/default_web"));
    }
}
