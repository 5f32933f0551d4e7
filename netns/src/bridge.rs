//! Pods on a host bridge, as CNI's `bridge` plugin wires them: one Linux bridge with the
//! subnet's gateway address, and per pod a veth pair whose host end is a port of the bridge
//! and whose other end is the pod's `eth0`, with the pod's address and a default route via the
//! gateway. Everything goes through rtnetlink; no `ip` program is run.
//!
//! Addresses come from [`crate::Ipam`]; this module only puts them on links.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use tracing::debug;

use crate::pod::undo;
use crate::{Error, Namespace, Netlink, Result, Subnet, Subnet6};

/// The name of a pod's end of its veth pair, as on Kubernetes.
pub const POD_INTERFACE: &str = "eth0";

/// The longest link name the kernel takes (`IFNAMSIZ` - 1).
const MAX_LINK_NAME: usize = 15;

/// A bridge for pods on one host: its name, subnet (the gateway is the subnet's first
/// address), its IPv6 subnet if it has one (dual stack: every pod an address of each), and
/// MTU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bridge {
    name: String,
    subnet: Subnet,
    subnet6: Option<Subnet6>,
    /// Of the bridge and both ends of every pod's veth pair: traffic between pods never
    /// leaves the host, so nothing on a wire limits it.
    mtu: u32,
}

impl Bridge {
    /// The bridge's default name.
    pub const DEFAULT_NAME: &str = "podkit0";

    /// The default subnet, 10.90.0.0/16: clear of podman's default network (10.88.0.0/16)
    /// and of the /24s it carves for `podman network create` (10.89.0.0/16), of Docker's
    /// pools (172.17.0.0/16 and up, 192.168.0.0/16), of Kubernetes' default service range
    /// (10.96.0.0/12) and of the common pod ranges of kind and flannel (10.244.0.0/16),
    /// so podkit can run next to any of them.
    pub const DEFAULT_SUBNET: Subnet = Subnet::new_unchecked(Ipv4Addr::new(10, 90, 0, 0), 16);

    /// The default IPv6 subnet, `fd90:706f:646b::/64`: a unique local (ULA) /64 of podkit's
    /// own (`706f:646b` is "podk" in ASCII), clear of the `fd00::/64` hosts and VMs often
    /// take, of podman's `fd00::/8` defaults chosen at random and of Docker's `fd00::/80`s.
    pub const DEFAULT_SUBNET6: Subnet6 =
        Subnet6::new_unchecked(Ipv6Addr::new(0xfd90, 0x706f, 0x646b, 0, 0, 0, 0, 0), 64);

    /// The default MTU, the largest a veth takes: on a bridge that only joins pods of one
    /// host, fewer and larger packets move the same bytes with less per-packet work.
    pub const DEFAULT_MTU: u32 = 65535;

    /// A bridge named `name` (at most 15 bytes) for pods of `subnet` (a /30 or larger).
    pub fn new(name: impl Into<String>, subnet: Subnet) -> Result<Self> {
        let name = name.into();
        validate_link_name(&name)?;
        subnet.check_pod_network()?;
        Ok(Bridge {
            name,
            subnet,
            subnet6: None,
            mtu: Self::DEFAULT_MTU,
        })
    }

    /// Gives the bridge an IPv6 subnet beside its IPv4 one, with at least as many host bits
    /// (a pod's IPv6 address follows from its IPv4 one: [`Subnet6::pod_address`]): its
    /// gateway goes on the bridge, and [`Bridge::attach_dual_stack`] gives pods an address of
    /// each.
    pub fn with_ipv6(mut self, subnet6: Subnet6) -> Result<Self> {
        subnet6.check_pod_network()?;
        subnet6.check_room_for(self.subnet)?;
        self.subnet6 = Some(subnet6);
        Ok(self)
    }

    /// Sets the MTU of the bridge and of the pods' links (68 to 65535).
    pub fn with_mtu(mut self, mtu: u32) -> Result<Self> {
        if !(68..=65535).contains(&mtu) {
            return Err(Error::InvalidMtu {
                bridge: self.name,
                mtu,
            });
        }
        self.mtu = mtu;
        Ok(self)
    }

    /// The bridge's link name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The subnet its pods' addresses come from.
    pub fn subnet(&self) -> Subnet {
        self.subnet
    }

    /// The bridge's own address, the pods' default gateway.
    pub fn gateway(&self) -> Ipv4Addr {
        self.subnet.gateway()
    }

    /// Its IPv6 subnet, if it has one.
    pub fn subnet6(&self) -> Option<Subnet6> {
        self.subnet6
    }

    /// The MTU of the bridge and of the pods' links.
    pub fn mtu(&self) -> u32 {
        self.mtu
    }

    /// Makes the bridge exist as configured in the namespace of `host`: equal to
    /// `ip link add NAME type bridge` unless it exists, then `ip link set NAME mtu MTU address
    /// (its own) up`, `ip address add GATEWAY/PREFIX dev NAME` and, with an IPv6 subnet,
    /// `ip address add GATEWAY6/PREFIX6 dev NAME nodad`.
    ///
    /// Idempotent, and safe when several processes race: a bridge or address someone else
    /// added first is taken as it is. An existing link of that name that is not a bridge is
    /// [`Error::NotABridge`]. Returns whether this call made the bridge, or gave a bridge made
    /// before its IPv6 gateway (what goes with them, such as the NAT rules, is then the
    /// caller's to make).
    pub async fn ensure(&self, host: &Netlink) -> Result<bool> {
        // The usual case, a bridge the first pod set up whole (it is brought up last, after
        // its MTU, MAC and addresses): one request instead of five, two of them changes (and
        // with IPv6 one more, its gateway's add, refused as there already).
        if let Ok(link) = host.link(&self.name).await
            && link.kind.as_deref() == Some("bridge")
            && link.mtu == Some(self.mtu)
            && link.up
        {
            return self.ensure_gateway6(host).await;
        }
        let created = match host.add_bridge(&self.name, self.mtu).await {
            Ok(()) => {
                debug!(bridge = %self.name, mtu = self.mtu, "created bridge");
                true
            }
            Err(err) if err.netlink_errno() == Some(libc::EEXIST) => false,
            Err(err) => return Err(err),
        };
        let link = host.link(&self.name).await?;
        if link.kind.as_deref() != Some("bridge") {
            return Err(Error::NotABridge {
                name: self.name.clone(),
                ns: host.namespace_path().to_path_buf(),
                kind: link.kind.unwrap_or_else(|| "link of no kind".into()),
            });
        }
        if link.mtu != Some(self.mtu) {
            host.set_mtu(&self.name, self.mtu).await?;
        }
        // Left alone, a bridge takes the lowest MAC address of its ports, and pods' ARP
        // caches would hold a stale gateway each time that port leaves. CNI pins it too.
        if !link.mac.is_empty() {
            host.set_mac(&self.name, &link.mac).await?;
        }
        let gateway = IpAddr::V4(self.gateway());
        match host
            .add_address(&self.name, gateway, self.subnet.prefix_len())
            .await
        {
            Ok(()) => {}
            Err(err) if err.netlink_errno() == Some(libc::EEXIST) => {}
            Err(err) => return Err(err),
        }
        self.ensure_gateway6(host).await?;
        if !link.up {
            host.link_up(&self.name).await?;
        }
        Ok(created)
    }

    /// Puts the IPv6 gateway on the bridge, without duplicate address detection (the address
    /// is podkit's, on a bridge of its own: waiting a second for DAD would only delay the
    /// pods); returns whether it was missing. No IPv6 subnet: nothing to do.
    async fn ensure_gateway6(&self, host: &Netlink) -> Result<bool> {
        let Some(subnet6) = self.subnet6 else {
            return Ok(false);
        };
        match host
            .add_address(
                &self.name,
                IpAddr::V6(subnet6.gateway()),
                subnet6.prefix_len(),
            )
            .await
        {
            Ok(()) => {
                debug!(bridge = %self.name, gateway = %subnet6.gateway(), "IPv6 gateway added");
                Ok(true)
            }
            Err(err) if err.netlink_errno() == Some(libc::EEXIST) => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Puts the pod whose network namespace is `pod` on the bridge with address `ip`: a veth
    /// pair whose end `host_if` (at most 15 bytes, unique on the host) is a port of the
    /// bridge in `host`'s namespace, and whose other end is the pod's `eth0`, both up with
    /// the bridge's MTU, the port in hairpin mode; then `ip`/PREFIX on `eth0` and a default
    /// route via the gateway.
    /// Equal to `ip link add HOST_IF master BRIDGE up type veth peer name eth0 netns POD`,
    /// `ip link set HOST_IF type bridge_slave hairpin on`,
    /// `ip -n POD link set eth0 up`, `ip -n POD address add IP/PREFIX dev eth0` and
    /// `ip -n POD route add default via GATEWAY`.
    ///
    /// The bridge must exist ([`Bridge::ensure`]). On failure, or if the future is dropped
    /// half way, the pair is deleted again; a `host_if` or `eth0` that existed before is
    /// never touched.
    pub async fn attach(
        &self,
        host: &Netlink,
        pod: &Namespace,
        host_if: &str,
        ip: Ipv4Addr,
    ) -> Result<()> {
        self.attach_dual_stack(host, pod, host_if, ip, None).await
    }

    /// [`Bridge::attach`], and with `ip6` (an address of the bridge's IPv6 subnet) that
    /// address on `eth0` too, without duplicate address detection (the IPAM hands each out
    /// once), and a default IPv6 route via the bridge's IPv6 gateway: equal to adding
    /// `ip -n POD address add IP6/PREFIX6 dev eth0 nodad` and
    /// `ip -n POD -6 route add default via GATEWAY6`. An `ip6` on a bridge with no IPv6
    /// subnet is [`Error::InvalidPodAddress`].
    pub async fn attach_dual_stack(
        &self,
        host: &Netlink,
        pod: &Namespace,
        host_if: &str,
        ip: Ipv4Addr,
        ip6: Option<Ipv6Addr>,
    ) -> Result<()> {
        validate_link_name(host_if)?;
        self.subnet.check_pod_ip(ip)?;
        let v6 = match (ip6, self.subnet6) {
            (Some(ip6), Some(subnet6)) => {
                subnet6.check_pod_ip(ip6)?;
                Some((ip6, subnet6))
            }
            (Some(ip6), None) => {
                return Err(Error::InvalidPodAddress {
                    ip: ip6.into(),
                    subnet: self.subnet.to_string(),
                    reason: "the bridge has no IPv6 subnet",
                });
            }
            (None, _) => None,
        };
        let bridge = host.link_index(&self.name).await?;
        host.add_veth_port(host_if, bridge, self.mtu, POD_INTERFACE, pod)
            .await?;
        // The pair is ours from here on: a failure or a dropped future deletes it.
        let made = MadeVeth {
            host: Some(host.clone()),
            name: host_if.to_owned(),
        };
        let result = async {
            // A pod reaching itself through a hostPort (crate::Nat) gets its own packets back
            // over its own port when the host's bridge netfilter (br_netfilter) hands bridged
            // frames to nftables, as CNI's `hairpinMode` and kubelet's hairpin-veth allow.
            host.set_hairpin(host_if, true).await?;
            let inside = pod.netlink().await?;
            inside.link_up(POD_INTERFACE).await?;
            inside
                .add_address(POD_INTERFACE, IpAddr::V4(ip), self.subnet.prefix_len())
                .await?;
            inside.add_default_route(IpAddr::V4(self.gateway())).await?;
            if let Some((ip6, subnet6)) = v6 {
                inside
                    .add_address(POD_INTERFACE, IpAddr::V6(ip6), subnet6.prefix_len())
                    .await?;
                inside
                    .add_default_route(IpAddr::V6(subnet6.gateway()))
                    .await?;
            }
            Ok(())
        }
        .await;
        let result = match result {
            Ok(()) => Ok(()),
            Err(error) => Err(undo(error, delete_if_present(host, host_if).await)),
        };
        made.disarm();
        if result.is_ok() {
            debug!(bridge = %self.name, %host_if, %ip, ?ip6, pod = ?pod.path(), "attached pod");
        }
        result
    }

    /// Takes a pod off the bridge: deletes its veth `host_if` in `host`'s namespace, and with
    /// it the pod's `eth0`. Equal to `ip link del HOST_IF`. A `host_if` already gone (the
    /// pod's namespace was deleted first) is no error; a link of that name that is not a
    /// veth, or is a port of another link, is [`Error::NotAPort`] and left alone.
    ///
    /// The kernel answers only once the links are unregistered, which waits for RCU grace
    /// periods: about 15 to 35 ms on a busy 2-core machine, as for `ip link del`. Deleting the
    /// pod's network namespace removes the pair as well, without making the caller wait.
    pub async fn detach(&self, host: &Netlink, host_if: &str) -> Result<()> {
        validate_link_name(host_if)?;
        let link = match host.link(host_if).await {
            Ok(link) => link,
            Err(Error::LinkNotFound { .. }) => return Ok(()),
            Err(err) => return Err(err),
        };
        let not_a_port = |reason: String| Error::NotAPort {
            name: host_if.to_owned(),
            bridge: self.name.clone(),
            ns: host.namespace_path().to_path_buf(),
            reason,
        };
        if link.kind.as_deref() != Some("veth") {
            let kind = link.kind.as_deref().unwrap_or("link of no kind");
            return Err(not_a_port(format!("it is a {kind}")));
        }
        let bridge = host.link_index(&self.name).await.ok();
        if link.controller.is_none() || link.controller != bridge {
            let reason = match link.controller {
                Some(index) => format!("it is a port of link index {index}"),
                None => "it is a port of no bridge".to_owned(),
            };
            return Err(not_a_port(reason));
        }
        delete_if_present(host, host_if).await?;
        debug!(bridge = %self.name, %host_if, "detached pod");
        Ok(())
    }
}

impl Default for Bridge {
    /// `podkit0` on 10.90.0.0/16 with MTU 65535.
    fn default() -> Self {
        Bridge {
            name: Self::DEFAULT_NAME.to_owned(),
            subnet: Self::DEFAULT_SUBNET,
            subnet6: None,
            mtu: Self::DEFAULT_MTU,
        }
    }
}

/// A veth pair an attach made and has not finished with: dropped with `host` still set (the
/// attach future was dropped half way), it deletes the pair on the runtime.
struct MadeVeth {
    host: Option<Netlink>,
    name: String,
}

impl MadeVeth {
    /// The attach is over, done or undone: nothing left to delete.
    fn disarm(mut self) {
        self.host = None;
    }
}

impl Drop for MadeVeth {
    fn drop(&mut self) {
        let Some(host) = self.host.take() else {
            return;
        };
        let name = std::mem::take(&mut self.name);
        // The runtime may be shutting down; then the namespace's teardown removes the pair.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = delete_if_present(&host, &name).await;
            });
        }
    }
}

/// Equal to `ip link del NAME`, where a link already gone is no error.
async fn delete_if_present(host: &Netlink, name: &str) -> Result<()> {
    match host.del_link(name).await {
        Ok(()) | Err(Error::LinkNotFound { .. }) => Ok(()),
        Err(err) => Err(err),
    }
}

/// Checks a link name as the kernel would (`dev_valid_name`): 1 to 15 bytes, not `.` or
/// `..`, no `/`, `:` or whitespace.
pub(crate) fn validate_link_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("must not be empty")
    } else if name.len() > MAX_LINK_NAME {
        Some("longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("must not be '.' or '..'")
    } else if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b.is_ascii_control())
    {
        Some("must not contain '/', ':', whitespace or control characters")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidLinkName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}
