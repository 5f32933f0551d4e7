//! Pods' NAT on the host, as CNI's `bridge` plugin (`ipMasq`) and `portmap` plugin do it,
//! and Kubernetes Services' cluster IPs, as kube-proxy's nftables mode does it, in one
//! nftables table of podkit's own (`ip podkit`), never touching another table:
//!
//! - masquerade: pods' traffic leaving the host gets the host's address;
//! - hostPorts: a pod's `hostPort` mappings DNAT traffic to a local address of the host (or
//!   to the mapping's `hostIP`) to the pod, from outside the host, from other pods and from
//!   the host itself, `127.0.0.1` included;
//! - masquerade of what would not find its way back otherwise: pods reaching a hostPort
//!   or a Service (their own, "hairpin", or another pod's on the same bridge, whose answer
//!   would go straight back over the bridge) and the host's clients from `127.0.0.0/8`;
//! - Services (`nat/service.rs`): a connection to a cluster IP and port goes to one of the
//!   port's endpoints, picked at random, or, when it has none, is refused at once (a TCP
//!   reset, an ICMP port unreachable), as kube-proxy does;
//! - node ports: a connection to a Service's node port on any local address of the host
//!   (`127.0.0.1` included, as for hostPorts) goes to the same endpoints, or is refused
//!   at once; a hostPort on the same port and protocol wins.
//!
//! The table, written by [`Nat::ensure`] through `nft -f -` (one transaction), is (v3):
//!
//! ```text
//! table ip podkit {
//!     map hostports        { type inet_proto . inet_service : ipv4_addr . inet_service }
//!     map hostip_hostports { type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service }
//!     map services         { type ipv4_addr . inet_proto . inet_service : verdict }
//!     map no_endpoints     { type ipv4_addr . inet_proto . inet_service : verdict }
//!     map nodeports        { type inet_proto . inet_service : verdict }
//!     map no_endpoint_nodeports { type inet_proto . inet_service : verdict }
//!     chain reject_no_endpoints { meta l4proto tcp reject with tcp reset; reject }
//!     chain hostports {
//!         dnat ip to ip daddr . meta l4proto . th dport map @hostip_hostports
//!         dnat ip to meta l4proto . th dport map @hostports
//!     }
//!     chain nodeports       { meta l4proto . th dport vmap @nodeports }
//!     chain clusterips      { ip daddr . meta l4proto . th dport vmap @services }
//!     chain endpoints_check { ip daddr . meta l4proto . th dport vmap @no_endpoints }
//!     chain nodeport_endpoints_check { meta l4proto . th dport vmap @no_endpoint_nodeports }
//!     chain prerouting  { type nat hook prerouting priority dstnat;
//!         fib daddr type local jump hostports
//!         fib daddr type local jump nodeports
//!         fib daddr type != local jump clusterips
//!     }
//!     chain output      { type nat hook output priority -100;
//!         fib daddr type local jump hostports
//!         fib daddr type local jump nodeports
//!         fib daddr type != local jump clusterips
//!     }
//!     chain filter_output  { type filter hook output priority filter;  ct state new jump endpoints_check }
//!     chain filter_forward { type filter hook forward priority filter; ct state new jump endpoints_check }
//!     chain filter_input   { type filter hook input priority filter;
//!         ct state new fib daddr type local jump nodeport_endpoints_check
//!     }
//!     chain postrouting { type nat hook postrouting priority srcnat;
//!         ip saddr SUBNET ip daddr != SUBNET masquerade
//!         ct status dnat ip saddr SUBNET ip daddr SUBNET masquerade
//!         ct status dnat ip saddr 127.0.0.0/8 oifname BRIDGE masquerade
//!     }
//!     chain localnet    { type filter hook prerouting priority raw;
//!         iifname != "lo" ip daddr 127.0.0.0/8 drop
//!     }
//!     chain owner-HASH  { comment "OWNER" }   (one per owner with mappings)
//!     chain svc-HASH    { comment "OWNER" }   (one per Service, by [`Nat::set_service`])
//!     chain svc-HASH-PROTO-PORT { comment "OWNER"   (one per port of a Service with endpoints)
//!         meta l4proto PROTO dnat ip to numgen random mod N map { 0 : POD_IP . POD_PORT, ... }
//!     }
//! }
//! ```
//!
//! with the elements `CLUSTER_IP . PROTO . PORT comment "OWNER" : goto svc-HASH-PROTO-PORT`
//! in `services` and `... : goto reject_no_endpoints` in `no_endpoints`. Reject is valid only
//! in filter chains, hence the second map, looked up on the `output` hook (the host's own
//! clients) and the `forward` hook (a pod's packet to a cluster IP, which no DNAT took and
//! the host routes on).
//!
//! A node port is the element `PROTO . NODE_PORT comment "OWNER" : goto svc-HASH-PROTO-PORT`
//! in `nodeports` (the cluster IP port's own chain), or `... : goto reject_no_endpoints` in
//! `no_endpoint_nodeports`, as kube-proxy's `service-nodeports` and `no-endpoint-nodeports`.
//! Its jump comes after the hostPorts' DNAT, which ends the chain when it maps the packet:
//! a hostPort on the same port wins. A connection to a node port without endpoints is
//! local, so it reaches the `input` hook (from the host's own clients too, over `lo`), where
//! only an exact protocol and port in the map is refused: other local traffic passes. No
//! masquerade is needed for an external client: the endpoint's answer goes to its default
//! route, the host, which undoes the DNAT, so the endpoint sees the client's own address
//! (`externalTrafficPolicy: Cluster` on one node). Clients on the host at `127.0.0.1` and
//! pods are masqueraded by the rules hostPorts already need.
//!
//! and [`Nat::ensure`] sets `net.ipv4.ip_forward=1` and `net.ipv4.conf.BRIDGE.route_localnet=1`
//! (without which the kernel drops a packet from 127.0.0.1 routed to the bridge). The
//! `localnet` chain is what makes `route_localnet` safe: nothing from outside the host (a pod
//! included) may reach the host's `127.0.0.0/8` services, as Kubernetes' kube-proxy drops it.
//!
//! A mapping is an element of one of the two maps, its owner (a pod's state directory, say)
//! in the element's comment (or, for an owner longer than 128 bytes, which the kernel has no
//! room for there, the name of the owner's chain below), so a packet costs one hash lookup
//! however many pods there are,
//! and the kernel itself refuses a second mapping of a taken host port (`EEXIST`, reported
//! as [`Error::PortInUse`]). Each owner with mappings also has an empty chain
//! `owner-<hash of the owner>`, with the owner as its comment: [`Nat::owners`] lists them,
//! and [`Nat::unpublish`] deletes an owner's elements together with that chain in one
//! transaction, which the kernel aborts if the chain is gone already. So a late second
//! unpublish of the same owner can never delete the elements of another owner who took the
//! same ports in between (the race that made CNI's portmap keep a rule per mapping).
//!
//! Names are those an `ip6` table of the same name could use beside this one (the family
//! tells them apart); only the `ip` family is written yet.
//!
//! # Why netlink for a pod, and `nft` for the table
//!
//! A pod's start has a budget of about 2 ms for networking. Measured on the 2-core
//! development machine under another engineer's builds (`cargo bench -p netns --bench nat`):
//! one publish + unpublish of two mappings through `nft -f -` (two processes) took a median
//! of 39 ms (p90 55 ms), the same through this module's netlink messages 0.11 ms (p90
//! 0.15 ms), 349 times less; an unloaded `nft` run is still several milliseconds. So the
//! per-pod steps (publish, unpublish, owners, remove) speak nf_tables netlink themselves
//! (`nat/nftables.rs`, only set elements, chains and tables: no rule expressions), while the
//! rules, written once per host (and checked in microseconds afterwards by a comment), go
//! through Debian's `nft`, whose text is easier to read and review than encoded
//! expressions. No crate fitted: `rustables` is GPL-3.0, `nftnl` binds the C libnftnl and
//! libmnl, and `nftables` runs `nft` too. A Service's rules ([`Nat::set_service`]) go
//! through `nft` as well: they are written by a Service's controller when its endpoints
//! change, off any pod's start path, and hold DNAT rules; their removal and the checks a
//! controller repeats ([`Nat::has_service`]) are netlink.
//!
//! Every call blocks (on the kernel, or on `nft` in [`Nat::ensure`]): from async code, call
//! it through `tokio::task::spawn_blocking`.

mod nftables;
mod service;

use std::fmt;
use std::io::{self, Write};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};

use tracing::debug;

use self::nftables::{Conn, Element, NFPROTO_IPV4, NFPROTO_IPV6, Refused};
pub use self::service::ServicePort;
use crate::bridge::validate_link_name;
use crate::ipam::validate_owner;
use crate::{Error, Namespace, Namespaces, NsKind, Result, Subnet, Subnet6};

/// The map of mappings on every local address: `PROTO . PORT : POD_IP . POD_PORT`.
const HOSTPORTS: &str = "hostports";

/// The map of mappings on one address: `HOST_IP . PROTO . PORT : POD_IP . POD_PORT`.
const HOSTIP_HOSTPORTS: &str = "hostip_hostports";

/// Owners' chains are named this and a hash of the owner.
const OWNER_PREFIX: &str = "owner-";

/// The verdict map of Services' ports with endpoints: `CLUSTER_IP . PROTO . PORT : goto
/// svc-HASH-PROTO-PORT`.
const SERVICES: &str = "services";

/// The verdict map of Services' ports without endpoints: `CLUSTER_IP . PROTO . PORT : goto
/// reject_no_endpoints`.
const NO_ENDPOINTS: &str = "no_endpoints";

/// The chain that refuses a connection to a Service's port without endpoints.
const REJECT_CHAIN: &str = "reject_no_endpoints";

/// The verdict map of Services' node ports with endpoints: `PROTO . NODE_PORT : goto
/// svc-HASH-PROTO-PORT`, looked up for local destinations.
const NODEPORTS: &str = "nodeports";

/// The verdict map of Services' node ports without endpoints: `PROTO . NODE_PORT : goto
/// reject_no_endpoints`, looked up for local destinations in the `input` hook.
const NO_ENDPOINT_NODEPORTS: &str = "no_endpoint_nodeports";

/// The longest owner kept as an element's comment. The kernel keeps at most 255 bytes for
/// an element's key, data and user data together (`-EINVAL` beyond, measured on Linux 6.18
/// with a 253-byte comment), so a longer owner is named there by its chain's name instead.
const ELEMENT_COMMENT_MAX: usize = 128;

/// The chain whose comment tells what [`Nat::ensure`] wrote last.
const MARKER_CHAIN: &str = "postrouting";

/// Bumped whenever the rules [`Nat::ensure`] writes change, so that hosts get the new ones.
const RULES_VERSION: u32 = 3;

/// The transport protocol of a host port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// The IP protocol number, as `meta l4proto` loads it.
    fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
        }
    }

    fn from_number(number: u8) -> Option<Self> {
        match number {
            6 => Some(Protocol::Tcp),
            17 => Some(Protocol::Udp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// One `hostPort` of a pod: traffic to `host_port` (on `host_ip`, or on every local address
/// of the host) goes to the pod's `container_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HostPort {
    pub protocol: Protocol,
    /// A Kubernetes `hostIP`; `None` (or 0.0.0.0) for every local address of the host.
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub container_port: u16,
}

impl HostPort {
    /// `host_port` on every local address to the pod's `container_port`.
    pub fn new(protocol: Protocol, host_port: u16, container_port: u16) -> Self {
        HostPort {
            protocol,
            host_ip: None,
            host_port,
            container_port,
        }
    }

    /// The same mapping, on `host_ip` only.
    pub fn on(mut self, host_ip: Ipv4Addr) -> Self {
        self.host_ip = Some(host_ip);
        self
    }

    /// The host's side, as `8080/tcp` or `198.18.0.1:8080/tcp`.
    pub fn host_side(&self) -> String {
        match self.host_ip() {
            Some(ip) => format!("{ip}:{}/{}", self.host_port, self.protocol),
            None => format!("{}/{}", self.host_port, self.protocol),
        }
    }

    /// The host IP, with 0.0.0.0 taken as none (as Kubernetes does).
    fn host_ip(&self) -> Option<Ipv4Addr> {
        self.host_ip.filter(|ip| !ip.is_unspecified())
    }

    /// The map the mapping goes in, and its key there.
    fn key(&self) -> (&'static str, Vec<u8>) {
        // Each field of a concatenation takes a whole number of 32-bit registers.
        let mut key = Vec::with_capacity(12);
        let map = match self.host_ip() {
            Some(ip) => {
                key.extend_from_slice(&ip.octets());
                HOSTIP_HOSTPORTS
            }
            None => HOSTPORTS,
        };
        key.extend_from_slice(&[self.protocol.number(), 0, 0, 0]);
        key.extend_from_slice(&self.host_port.to_be_bytes());
        key.extend_from_slice(&[0, 0]);
        (map, key)
    }

    fn check(&self, owner: &str) -> Result<()> {
        let reason = if self.host_port == 0 {
            Some("the host port must be 1 to 65535")
        } else if self.container_port == 0 {
            Some("the container port must be 1 to 65535")
        } else if self
            .host_ip()
            .is_some_and(|ip| ip.is_multicast() || ip.is_broadcast())
        {
            Some("the host IP must be an address of the host, not multicast or broadcast")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(Error::InvalidHostPort {
                port: self.to_string(),
                owner: owner.to_owned(),
                reason,
            }),
            None => Ok(()),
        }
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}", self.host_side(), self.container_port)
    }
}

/// A mapping as [`Nat::published`] finds it in the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub owner: String,
    pub pod_ip: Ipv4Addr,
    pub port: HostPort,
}

/// Pods' NAT in one network namespace (the host's): its nftables table and sysctls.
#[derive(Debug)]
pub struct Nat {
    table: String,
    /// Where `nft` and the sysctl writes run; its path names it in errors.
    ns: Namespace,
    /// A netfilter netlink socket made inside `ns`. Behind a lock so that a `Nat` can be
    /// shared between threads; each call holds it for a request and its answers.
    conn: Mutex<Conn>,
}

impl Nat {
    /// The default table name: `ip podkit` (an `ip6 podkit` beside it later).
    pub const DEFAULT_TABLE: &str = "podkit";

    /// Pods' NAT in the network namespace `host`, in table [`Nat::DEFAULT_TABLE`].
    pub fn open(host: &Namespace) -> Result<Self> {
        host.expect_kind(NsKind::Net)?;
        let conn = host
            .run(Conn::new)?
            .map_err(|source| Error::NetlinkSocket {
                path: host.path().to_path_buf(),
                source,
            })?;
        Ok(Nat {
            table: Self::DEFAULT_TABLE.to_owned(),
            ns: host.clone(),
            conn: Mutex::new(conn),
        })
    }

    /// Pods' NAT in the calling thread's network namespace (the host's, for podkit).
    pub fn current() -> Result<Self> {
        Nat::open(&Namespace::current(NsKind::Net)?)
    }

    /// Uses table `name` (letters, digits, `_` and `-`, starting with a letter, at most 64
    /// bytes) instead of the default.
    pub fn with_table(mut self, name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        validate_table_name(&name)?;
        self.table = name;
        Ok(self)
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The network namespace this acts in.
    pub fn namespace(&self) -> &Namespace {
        &self.ns
    }

    /// Makes the table exist with the rules for pods of `subnet` on bridge `bridge` (which
    /// must exist: [`crate::Bridge::ensure`]), and sets `net.ipv4.ip_forward=1` and
    /// `net.ipv4.conf.BRIDGE.route_localnet=1`. Equal to `nft -f -` of the rules in the
    /// module's doc, run in the namespace, and two `sysctl -w`.
    ///
    /// Idempotent: when the table already holds these rules (a comment on its `postrouting`
    /// chain says so) no `nft` runs: a thread enters the namespace to check the sysctls, and
    /// the chains are listed, 0.8 ms median (p90 2.6 ms) on the busy development machine,
    /// so call it when the bridge is made rather than for every pod. Otherwise the rules are
    /// replaced in one transaction and the mappings and Services kept; that needs the `nft`
    /// program ([`Error::NftMissing`]). One table serves one bridge and subnet.
    ///
    /// A table an older podkit wrote (v1: hostPorts only; v2: no node ports) is upgraded in
    /// place, while pods run: the new maps and chains are added, the rules replaced, the
    /// hostPorts and Services kept. The other way does not hold: an older podkit's `ensure`
    /// on this table would drop the jumps to `nodeports` (v2: node ports stop answering) or
    /// `clusterips` too (v1: Services stop answering) and leave the rest.
    pub fn ensure(&self, subnet: Subnet, bridge: &str) -> Result<()> {
        validate_rules_bridge(bridge)?;
        subnet.check_pod_network()?;
        self.set_sysctls(bridge)?;
        let marker = format!("podkit nat v{RULES_VERSION}: pods of {subnet} on {bridge}");
        if self.has_rules(NFPROTO_IPV4, &marker)? {
            return Ok(());
        }
        self.run_nft(&rules(&self.table, subnet, bridge, &marker))?;
        debug!(table = %self.table, %subnet, %bridge, ns = ?self.ns.path(), "wrote NAT rules");
        Ok(())
    }

    /// Publishes the `ports` of the pod at `pod_ip` for `owner` (printable, no whitespace, at
    /// most 253 bytes: a pod's state directory, say), in one transaction: equal to
    /// `nft add chain ip podkit owner-HASH { comment OWNER }` and `nft create element ip
    /// podkit hostports { PROTO . PORT comment OWNER : POD_IP . POD_PORT }` (or
    /// `hostip_hostports` for a mapping with a host IP).
    ///
    /// A host port taken already is [`Error::PortInUse`], naming its holder, and nothing is
    /// published; publishing again what `owner` holds already is no error. The table must
    /// exist ([`Nat::ensure`], else [`Error::NatNotReady`]).
    pub fn publish(&self, owner: &str, pod_ip: Ipv4Addr, ports: &[HostPort]) -> Result<()> {
        validate_owner(owner)?;
        let mut seen = std::collections::HashSet::new();
        for port in ports {
            port.check(owner)?;
            if !seen.insert(port.key()) {
                return Err(Error::InvalidHostPort {
                    port: port.to_string(),
                    owner: owner.to_owned(),
                    reason: "the same host port is mapped twice",
                });
            }
        }
        if ports.is_empty() {
            return Ok(());
        }
        let mut todo: Vec<HostPort> = ports.to_vec();
        // The second round publishes what the first found missing, after a conflict that
        // was only with the owner's own mappings.
        for _ in 0..2 {
            // Bound first: a guard in a match's scrutinee would live through its arms, and
            // `missing` takes the lock again.
            let result = self
                .conn()
                .transact(self.publish_messages(owner, pod_ip, &todo));
            match result {
                Ok(()) => {
                    debug!(owner, %pod_ip, ?ports, table = %self.table, "published host ports");
                    return Ok(());
                }
                Err(Refused { source, .. }) if source.raw_os_error() == Some(libc::EEXIST) => {
                    todo = self.missing(owner, pod_ip, &todo)?;
                    if todo.is_empty() {
                        return Ok(());
                    }
                }
                Err(refused) => return Err(self.refused(format!("publish for {owner:?}"), refused)),
            }
        }
        Err(self.error(
            format!("publish for {owner:?}"),
            io::Error::from_raw_os_error(libc::EEXIST),
        ))
    }

    /// Removes every mapping of `owner`, and its chain, in one transaction; returns whether
    /// there was any. Equal to `nft delete element ...` of each and `nft delete chain ip podkit
    /// owner-HASH`. Other owners' mappings are never touched; no table is no error.
    pub fn unpublish(&self, owner: &str) -> Result<bool> {
        validate_owner(owner)?;
        let chain = owner_chain(owner);
        let op = || format!("unpublish {owner:?}");
        // Most owners (pods without hostPorts) have nothing here: one look at their chain
        // (ENOENT, also with no table) spares them a transaction the kernel would refuse,
        // whose abort waits for an RCU grace period: 50-60 ms measured at every pod's end.
        if self
            .conn()
            .chain(NFPROTO_IPV4, &self.table, &chain)
            .map_err(|source| self.error(op(), source))?
            .is_none()
        {
            return Ok(false);
        }
        let tag = element_tag(owner);
        // The owner's IPv6 mappings first: its chain is what `owners` finds it by, so were it
        // gone first, a process killed in between would leave those for no `gc` to find.
        self.unpublish_ipv6(&tag)?;
        // Another writer's change between the listing and the deletion makes the kernel
        // refuse it; then look again.
        for _ in 0..3 {
            let Some(published) = self.list()? else {
                return Ok(false);
            };
            let mut messages = vec![nftables::del_chain(NFPROTO_IPV4, &self.table, &chain)];
            for map in [HOSTPORTS, HOSTIP_HOSTPORTS] {
                let keys: Vec<Vec<u8>> = published
                    .iter()
                    .filter(|(m, p)| *m == map && p.owner == tag)
                    .map(|(_, p)| p.port.key().1)
                    .collect();
                if !keys.is_empty() {
                    messages.push(nftables::del_elements(
                        NFPROTO_IPV4,
                        &self.table,
                        map,
                        keys.iter().map(Vec::as_slice),
                    ));
                }
            }
            let result = self.conn().transact(messages);
            match result {
                Ok(()) => {
                    debug!(owner, table = %self.table, "unpublished host ports");
                    return Ok(true);
                }
                // The owner's chain is gone: nothing of it is left (or another unpublish is
                // removing it right now).
                Err(Refused {
                    index: Some(0),
                    source,
                }) if source.raw_os_error() == Some(libc::ENOENT) => return Ok(false),
                Err(Refused { source, .. }) if source.raw_os_error() == Some(libc::ENOENT) => {}
                Err(refused) => return Err(self.refused(op(), refused)),
            }
        }
        Err(self.error(op(), io::Error::from_raw_os_error(libc::ENOENT)))
    }

    /// The owners that have mappings, sorted: for a garbage collector to unpublish those
    /// whose pods are gone. Equal to `nft list chains ip` and reading the comments of
    /// podkit's `owner-` chains. No table is no owner.
    pub fn owners(&self) -> Result<Vec<String>> {
        let mut owners: Vec<String> = self
            .family_chains(NFPROTO_IPV4)?
            .into_iter()
            .filter(|c| c.name.starts_with(OWNER_PREFIX))
            .filter_map(|c| c.comment)
            .collect();
        owners.sort();
        owners.dedup();
        Ok(owners)
    }

    /// Every mapping in the table, with its owner and pod. Equal to `nft list map ip podkit
    /// hostports` and `... hostip_hostports`. No table is no mapping.
    pub fn published(&self) -> Result<Vec<Published>> {
        let mut published: Vec<Published> = self
            .list()?
            .unwrap_or_default()
            .into_iter()
            .map(|(_, p)| p)
            .collect();
        if published.iter().any(|p| p.owner.starts_with(OWNER_PREFIX)) {
            for p in &mut published {
                p.owner = self.owner_of(&p.owner)?;
            }
        }
        Ok(published)
    }

    /// Deletes the whole table, every owner's mappings with it: for when the last pod has
    /// left. Equal to `nft delete table ip podkit` and `nft delete table ip6 podkit` (the
    /// IPv6 masquerade of [`Nat::ensure_ipv6`]); returns whether there was either. The
    /// sysctls stay as they are.
    pub fn remove(&self) -> Result<bool> {
        let mut removed = false;
        for family in [NFPROTO_IPV4, NFPROTO_IPV6] {
            // Looked for first (a dump): a deletion the kernel refuses (no IPv6 table on an
            // IPv4-only host) aborts its transaction, which waits for an RCU grace period.
            if self.family_chains(family)?.is_empty() {
                continue;
            }
            let name = family_name(family);
            let message = nftables::del_table(family, &self.table);
            let result = self.conn().transact(vec![message]);
            match result {
                Ok(()) => {
                    debug!(table = %self.table, family = name, ns = ?self.ns.path(), "removed NAT table");
                    removed = true;
                }
                Err(Refused { source, .. }) if source.raw_os_error() == Some(libc::ENOENT) => {}
                Err(refused) => {
                    return Err(
                        self.refused(format!("delete table {name} {}", self.table), refused)
                    );
                }
            }
        }
        Ok(removed)
    }

    /// The IPv6 side of a dual stack bridge's pods, in a second table of the same name in the
    /// `ip6` family: their IPv6 traffic leaving the host masqueraded, and hostPorts (those
    /// without a host IP, [`Nat::publish_ipv6`]) DNAT to the pod's IPv6 address for IPv6
    /// clients on the host's own addresses, as the CNI portmap plugin does for IPv6. Equal to
    /// `nft -f -` of
    ///
    /// ```text
    /// table ip6 podkit {
    ///     map hostports { type inet_proto . inet_service : ipv6_addr . inet_service }
    ///     chain hostports   { dnat ip6 to meta l4proto . th dport map @hostports }
    ///     chain prerouting  { type nat hook prerouting priority dstnat;
    ///         fib daddr type local jump hostports
    ///     }
    ///     chain output      { type nat hook output priority -100;
    ///         ip6 daddr != ::1 fib daddr type local jump hostports
    ///     }
    ///     chain postrouting { type nat hook postrouting priority srcnat;
    ///         ip6 saddr SUBNET6 ip6 daddr != SUBNET6 masquerade
    ///         ct status dnat ip6 saddr SUBNET6 ip6 daddr SUBNET6 masquerade
    ///     }
    /// }
    /// ```
    ///
    /// `::1` is left out: IPv6 has no `route_localnet`, so a packet from the loopback cannot
    /// be sent to a pod (on a cluster neither). Services stay IPv4. Idempotent as
    /// [`Nat::ensure`] (a comment on the chain says which rules it holds; the hostPorts
    /// published are kept). [`Nat::remove`] removes this table with the other.
    ///
    /// Returns whether the namespace forwards IPv6 (`net.ipv6.conf.all.forwarding` is 1),
    /// without which the pods' IPv6 reaches the host and each other but never leaves the
    /// host. Unlike IPv4's `ip_forward` this one is not turned on: it also stops the host
    /// from taking its own IPv6 routes from router advertisements (unless `accept_ra` is 2
    /// on its uplink), which Docker and netavark accept only for networks where IPv6 was
    /// asked for, and podkit's pods have IPv6 by default. It is the host's admin's to set.
    pub fn ensure_ipv6(&self, subnet6: Subnet6, bridge: &str) -> Result<bool> {
        validate_rules_bridge(bridge)?;
        subnet6.check_pod_network()?;
        let forwarding = self.ns.run(|| {
            std::fs::read_to_string("/proc/sys/net/ipv6/conf/all/forwarding")
                .is_ok_and(|text| text.trim() == "1")
        })?;
        let marker = format!("podkit nat6 v1: pods of {subnet6} on {bridge}");
        if self.has_rules(NFPROTO_IPV6, &marker)? {
            return Ok(forwarding);
        }
        self.run_nft(&rules6(&self.table, subnet6, &marker))?;
        debug!(table = %self.table, %subnet6, %bridge, ns = ?self.ns.path(), "wrote IPv6 NAT rules");
        Ok(forwarding)
    }

    /// Publishes to IPv6 clients the `ports` of `owner` that have no host IP (a host IP is
    /// of one family: IPv4 ones stay IPv4), to the pod's IPv6 address `pod_ip6`: elements of
    /// the `ip6` table's `hostports` map ([`Nat::ensure_ipv6`], else [`Error::NatNotReady`]).
    /// Call it after [`Nat::publish`] of the same ports, which registers the owner, so
    /// [`Nat::unpublish`] removes these too. A port another owner holds is
    /// [`Error::PortInUse`]; the same mapping again is no error.
    pub fn publish_ipv6(&self, owner: &str, pod_ip6: Ipv6Addr, ports: &[HostPort]) -> Result<()> {
        validate_owner(owner)?;
        let tag = element_tag(owner);
        let elements: Vec<Element> = ports
            .iter()
            .filter(|p| p.host_ip().is_none())
            .map(|p| Element {
                key: p.key().1,
                data: Some(pod_value6(pod_ip6, p.container_port)),
                comment: Some(tag.clone()),
            })
            .collect();
        if elements.is_empty() {
            return Ok(());
        }
        let op = || format!("publish for {owner:?} (IPv6)");
        let result = self.conn().transact(vec![nftables::new_elements(
            NFPROTO_IPV6,
            &self.table,
            HOSTPORTS,
            &elements,
        )]);
        let Err(refused) = result else {
            debug!(owner, %pod_ip6, ?ports, table = %self.table, "published host ports to IPv6");
            return Ok(());
        };
        if refused.source.raw_os_error() != Some(libc::EEXIST) {
            return Err(self.refused(op(), refused));
        }
        // Held already: by this owner with the same mappings (published before), or by
        // another owner, which is named. Then the rest are published one at a time.
        let held = self.list_ipv6()?;
        for element in elements {
            match held.iter().find(|m| m.key == element.key) {
                Some(m) if m.tag == tag && Some(&m.data) == element.data.as_ref() => {}
                Some(m) => {
                    let port = ports
                        .iter()
                        .find(|p| p.key().1 == m.key)
                        .map_or_else(String::new, HostPort::host_side);
                    return Err(Error::PortInUse {
                        port,
                        owner: owner.to_owned(),
                        holder: self.owner_of(&m.tag)?,
                        ns: self.ns.path().to_path_buf(),
                    });
                }
                None => {
                    let message =
                        nftables::new_elements(NFPROTO_IPV6, &self.table, HOSTPORTS, &[element]);
                    let result = self.conn().transact(vec![message]);
                    result.map_err(|refused| self.refused(op(), refused))?;
                }
            }
        }
        Ok(())
    }

    /// Removes the IPv6 hostPorts whose element comment is `tag` (one owner's); no `ip6`
    /// table is nothing to remove.
    fn unpublish_ipv6(&self, tag: &str) -> Result<()> {
        let keys: Vec<Vec<u8>> = self
            .list_ipv6()?
            .into_iter()
            .filter(|m| m.tag == tag)
            .map(|m| m.key)
            .collect();
        if keys.is_empty() {
            return Ok(());
        }
        let message = nftables::del_elements(
            NFPROTO_IPV6,
            &self.table,
            HOSTPORTS,
            keys.iter().map(Vec::as_slice),
        );
        let result = self.conn().transact(vec![message]);
        match result {
            Ok(()) => Ok(()),
            // Gone meanwhile (another unpublish of the same owner, or the table's removal).
            Err(Refused { source, .. }) if source.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            Err(refused) => Err(self.refused(format!("unpublish {tag:?} (IPv6)"), refused)),
        }
    }

    /// The `ip6` table's hostPorts; none without the table.
    fn list_ipv6(&self) -> Result<Vec<Mapping6>> {
        let result = self.conn().elements(NFPROTO_IPV6, &self.table, HOSTPORTS);
        match result {
            Ok(elements) => Ok(elements
                .into_iter()
                .map(|e| Mapping6 {
                    key: e.key,
                    tag: e.comment.unwrap_or_default(),
                    data: e.data.unwrap_or_default(),
                })
                .collect()),
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => Ok(Vec::new()),
            Err(source) => {
                Err(self.error(format!("list map ip6 {} {HOSTPORTS}", self.table), source))
            }
        }
    }

    /// Whether the table of `family` holds the rules `marker` names (the comment on its
    /// marker chain).
    fn has_rules(&self, family: u8, marker: &str) -> Result<bool> {
        Ok(self
            .family_chains(family)?
            .into_iter()
            .any(|c| c.name == MARKER_CHAIN && c.comment.as_deref() == Some(marker)))
    }

    /// This table's chains in `family` (`nft list chains ip|ip6`, kept to this table's); none
    /// without the table.
    fn family_chains(&self, family: u8) -> Result<Vec<nftables::Chain>> {
        let chains = self
            .conn()
            .chains(family)
            .map_err(|source| self.error(format!("list chains {}", family_name(family)), source))?;
        Ok(chains
            .into_iter()
            .filter(|c| c.table == self.table)
            .collect())
    }

    fn conn(&self) -> MutexGuard<'_, Conn> {
        // A panic while holding the lock leaves nothing half done: every request is atomic,
        // and answers to it that were left unread are skipped by their sequence numbers.
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn publish_messages(
        &self,
        owner: &str,
        pod_ip: Ipv4Addr,
        ports: &[HostPort],
    ) -> Vec<nftables::Message> {
        let mut messages = vec![nftables::new_chain(
            NFPROTO_IPV4,
            &self.table,
            &owner_chain(owner),
            owner,
        )];
        for map in [HOSTPORTS, HOSTIP_HOSTPORTS] {
            let elements: Vec<Element> = ports
                .iter()
                .filter(|p| p.key().0 == map)
                .map(|p| Element {
                    key: p.key().1,
                    data: Some(pod_value(pod_ip, p.container_port)),
                    comment: Some(element_tag(owner)),
                })
                .collect();
            if !elements.is_empty() {
                messages.push(nftables::new_elements(
                    NFPROTO_IPV4,
                    &self.table,
                    map,
                    &elements,
                ));
            }
        }
        messages
    }

    /// After an EEXIST: the `ports` not yet published; [`Error::PortInUse`] if one is held
    /// by another owner, or by `owner` for another pod or port.
    fn missing(&self, owner: &str, pod_ip: Ipv4Addr, ports: &[HostPort]) -> Result<Vec<HostPort>> {
        let published = self.list()?.unwrap_or_default();
        let mut missing = Vec::new();
        for port in ports {
            let held = published.iter().find(|(_, p)| p.port.key() == port.key());
            match held {
                None => missing.push(*port),
                Some((_, p))
                    if p.owner == element_tag(owner) && p.pod_ip == pod_ip && p.port == *port => {}
                Some((_, p)) => {
                    return Err(Error::PortInUse {
                        port: port.host_side(),
                        owner: owner.to_owned(),
                        holder: self.owner_of(&p.owner)?,
                        ns: self.ns.path().to_path_buf(),
                    });
                }
            }
        }
        Ok(missing)
    }

    /// Every mapping, with the map it is in and its element's comment as the owner (see
    /// [`element_tag`]); `None` when there is no table.
    fn list(&self) -> Result<Option<Vec<(&'static str, Published)>>> {
        let mut all = Vec::new();
        for map in [HOSTPORTS, HOSTIP_HOSTPORTS] {
            let result = self.conn().elements(NFPROTO_IPV4, &self.table, map);
            let elements = match result {
                Ok(elements) => elements,
                Err(err) if err.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
                Err(source) => {
                    return Err(self.error(format!("list map ip {} {map}", self.table), source));
                }
            };
            all.extend(
                elements
                    .into_iter()
                    .filter_map(|e| Some((map, parse_element(map, e)?))),
            );
        }
        Ok(Some(all))
    }

    /// The owner an element's comment names: itself, or the comment of the owner's chain
    /// when it names one.
    fn owner_of(&self, tag: &str) -> Result<String> {
        if !tag.starts_with(OWNER_PREFIX) {
            return Ok(tag.to_owned());
        }
        Ok(self
            .family_chains(NFPROTO_IPV4)?
            .into_iter()
            .find(|c| c.name == tag)
            .and_then(|c| c.comment)
            .filter(|owner| element_tag(owner) == tag)
            .unwrap_or_else(|| tag.to_owned()))
    }

    /// Sets the sysctls the rules need, inside the namespace: `/proc/sys/net` shows the
    /// network namespace of the thread that opens it, so this runs on a thread that has
    /// entered it.
    fn set_sysctls(&self, bridge: &str) -> Result<()> {
        let ns = self.ns.path().to_path_buf();
        let bridge = bridge.to_owned();
        self.ns.run(move || -> Result<()> {
            for (name, path) in [
                (
                    "net.ipv4.ip_forward".to_owned(),
                    PathBuf::from("/proc/sys/net/ipv4/ip_forward"),
                ),
                (
                    format!("net.ipv4.conf.{bridge}.route_localnet"),
                    Path::new("/proc/sys/net/ipv4/conf")
                        .join(&bridge)
                        .join("route_localnet"),
                ),
            ] {
                match write_sysctl(&path) {
                    Ok(()) => {}
                    Err(err) if err.kind() == io::ErrorKind::NotFound => {
                        return Err(Error::LinkNotFound {
                            name: bridge.clone(),
                            ns: ns.clone(),
                        });
                    }
                    Err(source) => {
                        return Err(Error::Sysctl {
                            name,
                            ns: ns.clone(),
                            source,
                        });
                    }
                }
            }
            Ok(())
        })?
    }

    /// Runs `nft -f -` with `script` on its stdin, inside the namespace.
    fn run_nft(&self, script: &str) -> Result<()> {
        let spawn = |program: &str| {
            let mut cmd = Command::new(program);
            cmd.args(["-f", "-"])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            Namespaces::new([self.ns.clone()]).command(&mut cmd);
            cmd.spawn()
        };
        // Debian keeps nft in /usr/sbin, which a user's PATH may lack.
        let child = match spawn("nft") {
            Err(err) if err.kind() == io::ErrorKind::NotFound => spawn("/usr/sbin/nft"),
            other => other,
        };
        let mut child = match child {
            Ok(child) => child,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Err(Error::NftMissing),
            Err(source) => {
                return Err(Error::Spawn {
                    program: "nft".into(),
                    path: self.ns.path().to_path_buf(),
                    source,
                });
            }
        };
        let written = child
            .stdin
            .take()
            .map_or(Ok(()), |mut stdin| stdin.write_all(script.as_bytes()));
        let output = child.wait_with_output();
        let output = output.map_err(|source| Error::Spawn {
            program: "nft".into(),
            path: self.ns.path().to_path_buf(),
            source,
        })?;
        if !output.status.success() {
            return Err(Error::Nft {
                ns: self.ns.path().to_path_buf(),
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
        // A write error with a successful exit cannot be, but do not hide it.
        written.map_err(|source| Error::Spawn {
            program: "nft".into(),
            path: self.ns.path().to_path_buf(),
            source,
        })
    }

    fn error(&self, op: String, source: io::Error) -> Error {
        Error::Nftables {
            op,
            ns: self.ns.path().to_path_buf(),
            source,
        }
    }

    /// A refused batch: ENOENT means the table (or a map in it) is missing.
    fn refused(&self, op: String, refused: Refused) -> Error {
        if refused.source.raw_os_error() == Some(libc::ENOENT) {
            return Error::NatNotReady {
                table: self.table.clone(),
                ns: self.ns.path().to_path_buf(),
            };
        }
        self.error(op, refused.source)
    }
}

/// The rules of the module's doc, as one `nft -f` transaction: static chains are created,
/// deleted and created again (so that the script works whether they exist or not), maps and
/// the chains their elements jump to are only created (the reject chain flushed and filled
/// again), so their elements stay. Chains that jump come before those they jump to in the
/// deletions: the kernel refuses to delete a chain still jumped to.
///
/// Applied to a table of an older version (v1: no Service maps or chains; v2: no node port
/// maps or chains) this adds what is new and replaces the rules, in place: published
/// hostPorts and Services are kept.
fn rules(table: &str, subnet: Subnet, bridge: &str, marker: &str) -> String {
    let chains = [
        "prerouting",
        "output",
        "filter_output",
        "filter_forward",
        "filter_input",
        "hostports",
        "nodeports",
        "clusterips",
        "endpoints_check",
        "nodeport_endpoints_check",
        "postrouting",
        "localnet",
    ];
    let key = "ipv4_addr . inet_proto . inet_service";
    let mut s = format!(
        "add table ip {table} {{ comment \"podkit: pods' NAT, hostPorts and Services (netns::Nat)\"; }}\n\
         add map ip {table} {HOSTPORTS} {{ type inet_proto . inet_service : ipv4_addr . inet_service; }}\n\
         add map ip {table} {HOSTIP_HOSTPORTS} {{ type {key} : ipv4_addr . inet_service; }}\n\
         add map ip {table} {SERVICES} {{ type {key} : verdict; }}\n\
         add map ip {table} {NO_ENDPOINTS} {{ type {key} : verdict; }}\n\
         add map ip {table} {NODEPORTS} {{ type inet_proto . inet_service : verdict; }}\n\
         add map ip {table} {NO_ENDPOINT_NODEPORTS} {{ type inet_proto . inet_service : verdict; }}\n\
         add chain ip {table} {REJECT_CHAIN}\n\
         flush chain ip {table} {REJECT_CHAIN}\n\
         add rule ip {table} {REJECT_CHAIN} meta l4proto tcp reject with tcp reset\n\
         add rule ip {table} {REJECT_CHAIN} reject\n"
    );
    s += &drop_chains("ip", table, &chains);
    s += &format!(
        "add chain ip {table} hostports\n\
         add rule ip {table} hostports dnat ip to ip daddr . meta l4proto . th dport map @{HOSTIP_HOSTPORTS}\n\
         add rule ip {table} hostports dnat ip to meta l4proto . th dport map @{HOSTPORTS}\n\
         add chain ip {table} nodeports\n\
         add rule ip {table} nodeports meta l4proto . th dport vmap @{NODEPORTS}\n\
         add chain ip {table} clusterips\n\
         add rule ip {table} clusterips ip daddr . meta l4proto . th dport vmap @{SERVICES}\n\
         add chain ip {table} endpoints_check\n\
         add rule ip {table} endpoints_check ip daddr . meta l4proto . th dport vmap @{NO_ENDPOINTS}\n\
         add chain ip {table} nodeport_endpoints_check\n\
         add rule ip {table} nodeport_endpoints_check meta l4proto . th dport vmap @{NO_ENDPOINT_NODEPORTS}\n\
         add chain ip {table} prerouting {{ type nat hook prerouting priority dstnat; }}\n\
         add rule ip {table} prerouting fib daddr type local jump hostports\n\
         add rule ip {table} prerouting fib daddr type local jump nodeports\n\
         add rule ip {table} prerouting fib daddr type != local jump clusterips\n\
         add chain ip {table} output {{ type nat hook output priority -100; }}\n\
         add rule ip {table} output fib daddr type local jump hostports\n\
         add rule ip {table} output fib daddr type local jump nodeports\n\
         add rule ip {table} output fib daddr type != local jump clusterips\n\
         add chain ip {table} filter_output {{ type filter hook output priority filter; }}\n\
         add rule ip {table} filter_output ct state new jump endpoints_check\n\
         add chain ip {table} filter_forward {{ type filter hook forward priority filter; }}\n\
         add rule ip {table} filter_forward ct state new jump endpoints_check\n\
         add chain ip {table} filter_input {{ type filter hook input priority filter; }}\n\
         add rule ip {table} filter_input ct state new fib daddr type local jump nodeport_endpoints_check\n\
         add chain ip {table} postrouting {{ type nat hook postrouting priority srcnat; comment \"{marker}\"; }}\n\
         add rule ip {table} postrouting ip saddr {subnet} ip daddr != {subnet} masquerade\n\
         add rule ip {table} postrouting ct status dnat ip saddr {subnet} ip daddr {subnet} masquerade\n\
         add rule ip {table} postrouting ct status dnat ip saddr 127.0.0.0/8 oifname \"{bridge}\" masquerade\n\
         add chain ip {table} localnet {{ type filter hook prerouting priority raw; }}\n\
         add rule ip {table} localnet iifname != \"lo\" ip daddr 127.0.0.0/8 drop\n"
    );
    s
}

/// The `ip6` table of [`Nat::ensure_ipv6`], as one `nft -f` transaction, made as [`rules`]
/// makes the `ip` one: the map kept, the chains replaced.
fn rules6(table: &str, subnet6: Subnet6, marker: &str) -> String {
    // Jumping chains before the one they jump to, in the deletions.
    let chains = ["prerouting", "output", MARKER_CHAIN, "hostports"];
    let mut s = format!(
        "add table ip6 {table} {{ comment \"podkit: pods' IPv6 NAT and hostPorts (netns::Nat)\"; }}\n\
         add map ip6 {table} {HOSTPORTS} {{ type inet_proto . inet_service : ipv6_addr . inet_service; }}\n"
    );
    s += &drop_chains("ip6", table, &chains);
    s += &format!(
        "add chain ip6 {table} hostports\n\
         add rule ip6 {table} hostports dnat ip6 to meta l4proto . th dport map @{HOSTPORTS}\n\
         add chain ip6 {table} prerouting {{ type nat hook prerouting priority dstnat; }}\n\
         add rule ip6 {table} prerouting fib daddr type local jump hostports\n\
         add chain ip6 {table} output {{ type nat hook output priority -100; }}\n\
         add rule ip6 {table} output ip6 daddr != ::1 fib daddr type local jump hostports\n\
         add chain ip6 {table} {MARKER_CHAIN} {{ type nat hook postrouting priority srcnat; comment \"{marker}\"; }}\n\
         add rule ip6 {table} {MARKER_CHAIN} ip6 saddr {subnet6} ip6 daddr != {subnet6} masquerade\n\
         add rule ip6 {table} {MARKER_CHAIN} ct status dnat ip6 saddr {subnet6} ip6 daddr {subnet6} masquerade\n"
    );
    s
}

/// An element of the `ip6` table's `hostports` map: its key (`PROTO . PORT`), its comment
/// (the owner's tag) and data (`POD_IP6 . POD_PORT`).
struct Mapping6 {
    key: Vec<u8>,
    tag: String,
    data: Vec<u8>,
}

/// `chains` of the `family` table made if missing, then deleted, so the script can add them
/// again as they are now, whether or not they were there.
fn drop_chains(family: &str, table: &str, chains: &[&str]) -> String {
    let mut s = String::new();
    for chain in chains {
        s += &format!("add chain {family} {table} {chain}\n");
    }
    for chain in chains {
        s += &format!("delete chain {family} {table} {chain}\n");
    }
    s
}

/// The data of an IPv6 mapping: `POD_IP6 . POD_PORT`, the address in four 32-bit registers,
/// the port in one.
fn pod_value6(ip: Ipv6Addr, port: u16) -> Vec<u8> {
    let mut value = ip.octets().to_vec();
    value.extend_from_slice(&port.to_be_bytes());
    value.extend_from_slice(&[0, 0]);
    value
}

/// The data of a mapping: `POD_IP . POD_PORT`, each field in a 32-bit register.
fn pod_value(ip: Ipv4Addr, port: u16) -> Vec<u8> {
    let mut value = ip.octets().to_vec();
    value.extend_from_slice(&port.to_be_bytes());
    value.extend_from_slice(&[0, 0]);
    value
}

/// A mapping from an element of `map`; `None` for one this module would not have written.
fn parse_element(map: &str, element: Element) -> Option<Published> {
    let key = element.key.as_slice();
    let (host_ip, rest) = match map {
        HOSTIP_HOSTPORTS => (Some(ipv4(key.get(0..4)?)?), key.get(4..)?),
        _ => (None, key),
    };
    let protocol = Protocol::from_number(*rest.first()?)?;
    let host_port = u16::from_be_bytes(rest.get(4..6)?.try_into().ok()?);
    let data = element.data?;
    let pod_ip = ipv4(data.get(0..4)?)?;
    let container_port = u16::from_be_bytes(data.get(4..6)?.try_into().ok()?);
    Some(Published {
        owner: element.comment.unwrap_or_default(),
        pod_ip,
        port: HostPort {
            protocol,
            host_ip,
            host_port,
            container_port,
        },
    })
}

fn ipv4(bytes: &[u8]) -> Option<Ipv4Addr> {
    Some(Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?))
}

/// `owner-` and a 64-bit FNV-1a hash of the owner, in hex: short, stable across versions
/// and machines, and printable whatever the owner holds. The owner itself is the chain's
/// comment.
fn owner_chain(owner: &str) -> String {
    format!("{OWNER_PREFIX}{:016x}", owner_hash(owner))
}

/// The 64-bit FNV-1a hash of an owner, which names its chains.
fn owner_hash(owner: &str) -> u64 {
    owner.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// What an element's comment holds to name its owner: the owner, or, for an owner too long
/// to fit ([`ELEMENT_COMMENT_MAX`]), the name of its chain, whose comment is the owner.
fn element_tag(owner: &str) -> String {
    if owner.len() <= ELEMENT_COMMENT_MAX {
        owner.to_owned()
    } else {
        owner_chain(owner)
    }
}

/// Writes `1` to a sysctl file unless it holds it already.
fn write_sysctl(path: &Path) -> io::Result<()> {
    if std::fs::read_to_string(path)?.trim() == "1" {
        return Ok(());
    }
    std::fs::write(path, "1\n")
}

/// The name `nft` gives a table family of this crate: `ip` or `ip6`.
fn family_name(family: u8) -> &'static str {
    if family == NFPROTO_IPV6 { "ip6" } else { "ip" }
}

/// A bridge name the rules can quote: a link name with no quote or backslash.
fn validate_rules_bridge(bridge: &str) -> Result<()> {
    validate_link_name(bridge)?;
    if bridge.contains(['"', '\\']) {
        return Err(Error::InvalidLinkName {
            name: bridge.to_owned(),
            reason: "must not contain quotes or backslashes",
        });
    }
    Ok(())
}

fn validate_table_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("must not be empty")
    } else if name.len() > 64 {
        Some("longer than 64 bytes")
    } else if !name.as_bytes()[0].is_ascii_alphabetic() {
        Some("must start with a letter")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
    {
        Some("may contain only letters, digits, '_' and '-'")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidTableName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_are_laid_out_as_nft_writes_them() {
        // `nft --debug=netlink add element ip podkit hostports { tcp . 8080 : 10.90.0.2 . 80 }`
        // shows the key as words 00000006 0000901f and the data as 02005a0a 00005000.
        let port = HostPort::new(Protocol::Tcp, 8080, 80);
        assert_eq!(port.key(), (HOSTPORTS, vec![6, 0, 0, 0, 0x1f, 0x90, 0, 0]));
        assert_eq!(
            pod_value(Ipv4Addr::new(10, 90, 0, 2), 80),
            vec![10, 90, 0, 2, 0, 80, 0, 0]
        );
        // { 198.18.0.1 . udp . 53 : ... }: 010012c6 00000011 00003500.
        let port = HostPort::new(Protocol::Udp, 53, 5353).on(Ipv4Addr::new(198, 18, 0, 1));
        let (map, key) = port.key();
        assert_eq!(map, HOSTIP_HOSTPORTS);
        assert_eq!(key, vec![198, 18, 0, 1, 17, 0, 0, 0, 0, 53, 0, 0]);
        let element = Element {
            key,
            data: Some(pod_value(Ipv4Addr::new(10, 90, 0, 2), 5353)),
            comment: Some("pod".into()),
        };
        let published = parse_element(map, element).expect("parsed");
        assert_eq!(published.port, port);
        assert_eq!(published.owner, "pod");
        // 0.0.0.0 is every address, as in Kubernetes.
        let any = HostPort::new(Protocol::Tcp, 80, 80).on(Ipv4Addr::UNSPECIFIED);
        assert_eq!(any.key().0, HOSTPORTS);
        assert_eq!(any.host_side(), "80/tcp");
    }

    #[test]
    fn owner_chains_are_stable() {
        assert_eq!(owner_chain(""), "owner-cbf29ce484222325");
        assert_eq!(owner_chain("a"), "owner-af63dc4c8601ec8c");
        assert_ne!(
            owner_chain("/run/podkit/pods/a"),
            owner_chain("/run/podkit/pods/b")
        );
    }
}
