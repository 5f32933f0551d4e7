//! Kubernetes Services' cluster IPs in the table of [`Nat`], as kube-proxy's nftables mode
//! writes them: an element per port of a Service in the verdict map `services` (a port with
//! endpoints: `goto` its chain, which DNATs to one endpoint picked at random) or in
//! `no_endpoints` (a port without: `goto reject_no_endpoints`), its node port, if it has one,
//! in `nodeports` (the same `goto`) or `no_endpoint_nodeports`, and the chains the module's
//! doc lists, named by a hash of the Service's owner, the owner in their comments.
//!
//! [`Nat::set_service`] writes through `nft -f -`, one transaction: it runs in a Service's
//! controller when endpoints change, not on a pod's start path, and DNAT rules are easier to
//! read as nft text than as encoded expressions. What only deletes or reads
//! ([`Nat::remove_service`], [`Nat::services`], [`Nat::has_service`]) speaks netlink, with
//! no process.
//!
//! For the host's own clients to reach a cluster IP, the host needs a route to it (the
//! kernel picks the source address and checks reachability before the `output` hook's DNAT):
//! podkit routes the cluster IP range on the bridge (`ip route add 10.96.0.0/16 dev
//! podkit0`), which makes the bridge's address the source, one the endpoints answer. Pods
//! need nothing more than their default route through the host. A node port needs no route:
//! it is on the host's own addresses.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use tracing::debug;

use super::nftables::{self, Chain, Element, NFPROTO_IPV4, Refused};
use super::{
    NO_ENDPOINT_NODEPORTS, NO_ENDPOINTS, NODEPORTS, Nat, Protocol, REJECT_CHAIN, SERVICES, ipv4,
    owner_hash,
};
use crate::ipam::validate_owner;
use crate::{Error, Result};

/// Services' chains are named this, a hash of the owner and, for a port's chain, the port.
const SERVICE_PREFIX: &str = "svc-";

/// The longest owner of a Service: nft keeps at most 128 bytes as a comment
/// (`NFTNL_UDATA_COMMENT_MAXLEN`). A Kubernetes `namespace/name` has at most 63 + 1 + 63.
const SERVICE_OWNER_MAX: usize = 128;

/// How many times a write is tried when the table changed between reading it and writing.
const ATTEMPTS: usize = 3;

/// The maps a Service's elements go in, in the order they are listed and deleted.
const SERVICE_MAPS: [&str; 4] = [SERVICES, NO_ENDPOINTS, NODEPORTS, NO_ENDPOINT_NODEPORTS];

/// One port of a Service: its protocol, its port on the cluster IP, its node port if it has
/// one, and the endpoints (pod IP, target port) it spreads connections over. No endpoints:
/// connections are refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServicePort {
    pub protocol: Protocol,
    pub port: u16,
    /// A Kubernetes `nodePort`: the same endpoints on this port of every local address of
    /// the host, `127.0.0.1` included. `None` for a port of the cluster IP only.
    pub node_port: Option<u16>,
    pub endpoints: Vec<(Ipv4Addr, u16)>,
    /// `sessionAffinity: ClientIP`: how long, in seconds, a client's address keeps going to
    /// the endpoint its last connection went to. `None`: each connection picks at random.
    pub affinity: Option<u32>,
}

impl ServicePort {
    /// Port `port` of the cluster IP, over `protocol`, to `endpoints`.
    pub fn new(
        protocol: Protocol,
        port: u16,
        endpoints: impl IntoIterator<Item = (Ipv4Addr, u16)>,
    ) -> Self {
        ServicePort {
            protocol,
            port,
            node_port: None,
            endpoints: endpoints.into_iter().collect(),
            affinity: None,
        }
    }

    /// The same port, each client's connections going to the endpoint its last one went to
    /// for `timeout` seconds after it (a Service's `sessionAffinity: ClientIP` with
    /// `sessionAffinityConfig.clientIP.timeoutSeconds`), as kube-proxy's nftables mode keeps
    /// it: a set of client addresses per endpoint, with that timeout, checked before the
    /// random pick and refreshed by each connection the endpoint gets.
    pub fn with_affinity(mut self, timeout: u32) -> Self {
        self.affinity = Some(timeout);
        self
    }

    /// The same port, also on node port `port` of every local address of the host (a
    /// Service of type `NodePort`).
    pub fn with_node_port(mut self, port: u16) -> Self {
        self.node_port = Some(port);
        self
    }

    /// The cluster's side, as `10.96.0.10:80/tcp`.
    fn side(&self, ip: Ipv4Addr) -> String {
        format!("{ip}:{}/{}", self.port, self.protocol)
    }

    /// The chain of this port of `owner`'s Service: `svc-HASH-PROTO-PORT`.
    fn chain(&self, owner: &str) -> String {
        format!("{}-{}-{}", service_chain(owner), self.protocol, self.port)
    }

    /// The host's side of its node port, as `30080/tcp`.
    fn node_side(&self, node_port: u16) -> String {
        format!("{node_port}/{}", self.protocol)
    }

    /// The map the port's element goes in.
    fn map(&self) -> &'static str {
        if self.endpoints.is_empty() {
            NO_ENDPOINTS
        } else {
            SERVICES
        }
    }

    /// The map the port's node port element goes in.
    fn node_map(&self) -> &'static str {
        if self.endpoints.is_empty() {
            NO_ENDPOINT_NODEPORTS
        } else {
            NODEPORTS
        }
    }

    /// The key of its node port's element, if it has one: `PROTO . NODE_PORT`, each field in
    /// a 32-bit register.
    fn node_key(&self) -> Option<Vec<u8>> {
        let node_port = self.node_port?;
        let mut key = vec![self.protocol.number(), 0, 0, 0];
        key.extend_from_slice(&node_port.to_be_bytes());
        key.extend_from_slice(&[0, 0]);
        Some(key)
    }

    /// The element's key: `CLUSTER_IP . PROTO . PORT`, each field in a 32-bit register.
    fn key(&self, ip: Ipv4Addr) -> Vec<u8> {
        let mut key = ip.octets().to_vec();
        key.extend_from_slice(&[self.protocol.number(), 0, 0, 0]);
        key.extend_from_slice(&self.port.to_be_bytes());
        key.extend_from_slice(&[0, 0]);
        key
    }

    /// Why the port cannot be written, if it cannot.
    fn problem(&self) -> Option<String> {
        if self.port == 0 {
            return Some(format!("port 0/{}: must be 1 to 65535", self.protocol));
        }
        if let Some(timeout) = self.affinity
            && !(1..=86_400).contains(&timeout)
        {
            return Some(format!(
                "port {}/{}: its session affinity timeout must be 1 to 86400 seconds",
                self.port, self.protocol
            ));
        }
        if self.node_port == Some(0) {
            return Some(format!(
                "port {}/{}: its node port must be 1 to 65535",
                self.port, self.protocol
            ));
        }
        self.endpoints.iter().find_map(|&(ip, port)| {
            let reason = if port == 0 {
                "its target port must be 1 to 65535"
            } else if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() {
                "it must be a pod's address, not 0.0.0.0, multicast or broadcast"
            } else {
                return None;
            };
            Some(format!(
                "port {}/{}, endpoint {ip}:{port}: {reason}",
                self.port, self.protocol
            ))
        })
    }
}

/// The Service maps' elements, as [`Nat::service_elements`] found them.
#[derive(Debug)]
struct Listed {
    /// Each element, with its map.
    elements: Vec<(&'static str, Element)>,
    /// Every map was there: no map is missing, as in an older table (v1 has none of them,
    /// v2 no node port maps) or when there is no table at all.
    complete: bool,
}

/// What the table holds of one owner's Service.
#[derive(Debug, Default)]
struct Held {
    /// Its chain `svc-HASH` is there.
    marker: bool,
    /// Its ports' chains.
    chains: Vec<String>,
    /// The keys of its elements, with their maps.
    elements: Vec<(&'static str, Vec<u8>)>,
    /// Its ports' session affinity sets (named as its ports' chains are).
    sets: Vec<String>,
}

impl Nat {
    /// Sets all of `owner`'s rules (a Service, named by its owner string, e.g.
    /// "default/web": printable, no whitespace, no `"` or `\`, at most 128 bytes) for
    /// cluster IP `ip`, replacing what it had, in one nft transaction (atomic: a connection
    /// never sees a half-written service). Equal to `nft -f -` of `add chain ip podkit
    /// svc-HASH { comment OWNER }`, the deletion of the owner's old elements and port
    /// chains, and for each port either a chain `svc-HASH-PROTO-PORT` with `meta l4proto
    /// PROTO dnat ip to numgen random mod N map { 0 : POD_IP . POD_PORT, ... }` and the
    /// element `IP . PROTO . PORT comment OWNER : goto` it in map `services`, or, without
    /// endpoints, the element `... : goto reject_no_endpoints` in map `no_endpoints`; a port
    /// with a node port ([`ServicePort::with_node_port`]) also gets the element `PROTO .
    /// NODE_PORT comment OWNER` with the same `goto` in map `nodeports` (or, without
    /// endpoints, `no_endpoint_nodeports`).
    ///
    /// A port (cluster IP, protocol and port) another owner holds is
    /// [`Error::ServicePortInUse`], a node port (protocol and port) another owner holds
    /// [`Error::NodePortInUse`], naming it, and nothing is written. No ports keeps the owner
    /// listed ([`Nat::services`]) with no rules. The table must be of this version
    /// ([`Nat::ensure`], else [`Error::NatNotReady`]); needs the `nft` program.
    ///
    /// A node port is not checked against hostPorts ([`Nat::publish`]): a hostPort on the
    /// same port and protocol (on every address, or on the address a client asks for) wins,
    /// its DNAT coming first, and the node port answers again once it is unpublished.
    ///
    /// The host's own clients need a route to `ip` (see the module's doc: the cluster IP
    /// range on the bridge); pods need none beyond their default route; `ip` must not be an
    /// address of the host (only non-local destinations are looked up, so that hostPorts keep
    /// the host's own). Connections open already keep their endpoint, conntrack's UDP flows
    /// included (kube-proxy deletes those of a removed UDP endpoint; this does not): only
    /// new ones see the new rules.
    pub fn set_service(&self, owner: &str, ip: Ipv4Addr, ports: &[ServicePort]) -> Result<()> {
        validate_service_owner(owner)?;
        let invalid = |reason: String| Error::InvalidService {
            owner: owner.to_owned(),
            ip,
            reason,
        };
        if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() || ip.is_loopback() {
            return Err(invalid(
                "a cluster IP must not be 0.0.0.0, loopback, multicast or broadcast".into(),
            ));
        }
        let (mut seen, mut seen_node_ports) = (HashSet::new(), HashSet::new());
        for port in ports {
            if let Some(reason) = port.problem() {
                return Err(invalid(reason));
            }
            if !seen.insert((port.protocol, port.port)) {
                return Err(invalid(format!(
                    "port {}/{} is listed twice",
                    port.port, port.protocol
                )));
            }
            if let Some(node_port) = port.node_port
                && !seen_node_ports.insert((port.protocol, node_port))
            {
                return Err(invalid(format!(
                    "node port {} is given to two ports",
                    port.node_side(node_port)
                )));
            }
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let listed = self.service_elements()?;
            if !listed.complete {
                return Err(self.not_ready());
            }
            let elements = listed.elements;
            for port in ports {
                if let (Some(node_port), Some(key)) = (port.node_port, port.node_key()) {
                    let holder = elements
                        .iter()
                        .filter(|(map, _)| matches!(*map, NODEPORTS | NO_ENDPOINT_NODEPORTS))
                        .map(|(_, e)| e)
                        .find(|e| e.key == key && e.comment.as_deref() != Some(owner));
                    if let Some(holder) = holder {
                        return Err(Error::NodePortInUse {
                            port: port.node_side(node_port),
                            owner: owner.to_owned(),
                            holder: holder.comment.clone().unwrap_or_default(),
                            ns: self.ns.path().to_path_buf(),
                        });
                    }
                }
                let key = port.key(ip);
                let holder = elements
                    .iter()
                    .filter(|(map, _)| matches!(*map, SERVICES | NO_ENDPOINTS))
                    .map(|(_, e)| e)
                    .find(|e| e.key == key && e.comment.as_deref() != Some(owner));
                if let Some(holder) = holder {
                    return Err(Error::ServicePortInUse {
                        port: port.side(ip),
                        owner: owner.to_owned(),
                        holder: holder.comment.clone().unwrap_or_default(),
                        ns: self.ns.path().to_path_buf(),
                    });
                }
            }
            let chains = self.table_chains()?;
            let marker = service_chain(owner);
            if let Some(other) = chains
                .iter()
                .find(|c| c.name == marker && c.comment.as_deref() != Some(owner))
            {
                // Two owners with one 64-bit hash: never seen, but never overwrite.
                return Err(invalid(format!(
                    "its chain {marker} is taken by {:?} (a hash collision): rename the Service",
                    other.comment.as_deref().unwrap_or_default()
                )));
            }
            let held = held(owner, &chains, &elements, &self.table_sets()?);
            let script = self.service_script(owner, ip, ports, &held);
            match self.run_nft(&script) {
                Ok(()) => {
                    debug!(owner, %ip, ?ports, table = %self.table, "set service");
                    return Ok(());
                }
                // Most likely another writer changed the table since it was read (an owner
                // took one of the ports, or this owner's rules changed): read it again.
                Err(err @ Error::Nft { .. }) if attempt < ATTEMPTS => {
                    debug!(owner, %err, attempt, "nft refused a service's rules; reading again");
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// Removes `owner`'s rules (elements and chains), in one transaction; whether it had
    /// any. Equal to `nft delete element ...` of each of its elements and `nft delete chain
    /// ...` of each of its chains, through netlink (no process). Other owners' rules are
    /// never touched; no table is no error.
    pub fn remove_service(&self, owner: &str) -> Result<bool> {
        validate_service_owner(owner)?;
        let op = || format!("remove service {owner:?}");
        for _ in 0..ATTEMPTS {
            let elements = self.service_elements()?.elements;
            let held = held(owner, &self.table_chains()?, &elements, &self.table_sets()?);
            if !held.marker
                && held.chains.is_empty()
                && held.elements.is_empty()
                && held.sets.is_empty()
            {
                return Ok(false);
            }
            let mut messages = Vec::new();
            if held.marker {
                messages.push(nftables::del_chain(
                    NFPROTO_IPV4,
                    &self.table,
                    &service_chain(owner),
                ));
            }
            // Elements first: the kernel refuses to delete a chain an element jumps to.
            for map in SERVICE_MAPS {
                let keys: Vec<&[u8]> = held
                    .elements
                    .iter()
                    .filter(|(m, _)| *m == map)
                    .map(|(_, key)| key.as_slice())
                    .collect();
                if !keys.is_empty() {
                    messages.push(nftables::del_elements(NFPROTO_IPV4, &self.table, map, keys));
                }
            }
            for chain in &held.chains {
                messages.push(nftables::del_chain(NFPROTO_IPV4, &self.table, chain));
            }
            // Sets last: the rules of the chains above refer to them.
            for set in &held.sets {
                messages.push(nftables::del_set(NFPROTO_IPV4, &self.table, set));
            }
            let result = self.conn().transact(messages);
            match result {
                Ok(()) => {
                    debug!(owner, table = %self.table, "removed service");
                    return Ok(true);
                }
                // Something of it went in between (another remove): look again.
                Err(Refused { source, .. }) if source.raw_os_error() == Some(libc::ENOENT) => {}
                Err(refused) => return Err(self.refused(op(), refused)),
            }
        }
        Err(self.error(op(), std::io::Error::from_raw_os_error(libc::ENOENT)))
    }

    /// The owners with Service rules, sorted: for a garbage collector to remove those whose
    /// Services are gone. Equal to `nft list chains ip` and reading the comments of the
    /// `svc-HASH` chains. Never lists hostPort owners ([`Nat::owners`]); no table is no owner.
    pub fn services(&self) -> Result<Vec<String>> {
        let mut owners: Vec<String> = self
            .table_chains()?
            .into_iter()
            .filter(|c| is_service_chain(&c.name))
            .filter_map(|c| c.comment)
            .collect();
        owners.sort();
        owners.dedup();
        Ok(owners)
    }

    /// Whether `owner`'s rules are in the table: one netlink request for its chain
    /// `svc-HASH`, no process, so a controller can check often and set its Service again
    /// after the table was deleted and made again. Equal to `nft list chain ip podkit
    /// svc-HASH`.
    pub fn has_service(&self, owner: &str) -> Result<bool> {
        validate_service_owner(owner)?;
        let name = service_chain(owner);
        let chain = self
            .conn()
            .chain(NFPROTO_IPV4, &self.table, &name)
            .map_err(|source| self.error(format!("list chain ip {} {name}", self.table), source))?;
        Ok(chain.is_some_and(|c| c.comment.as_deref() == Some(owner)))
    }

    /// The script of [`Nat::set_service`]: the owner's chain, the deletion of what it `held`,
    /// and its new chains and elements.
    fn service_script(
        &self,
        owner: &str,
        ip: Ipv4Addr,
        ports: &[ServicePort],
        held: &Held,
    ) -> String {
        let table = &self.table;
        let mut s = format!(
            "add chain ip {table} {} {{ comment \"{owner}\"; }}\n",
            service_chain(owner)
        );
        for map in SERVICE_MAPS {
            let keys: Vec<String> = held
                .elements
                .iter()
                .filter(|(m, _)| *m == map)
                .filter_map(|(_, key)| key_text(map, key))
                .collect();
            if !keys.is_empty() {
                let _ = writeln!(
                    s,
                    "delete element ip {table} {map} {{ {} }}",
                    keys.join(", ")
                );
            }
        }
        for chain in &held.chains {
            let _ = writeln!(s, "delete chain ip {table} {chain}");
        }
        for set in &held.sets {
            let _ = writeln!(s, "delete set ip {table} {set}");
        }
        for port in ports {
            let (proto, number) = (port.protocol, port.port);
            let verdict = if port.endpoints.is_empty() {
                REJECT_CHAIN.to_owned()
            } else if let Some(timeout) = port.affinity {
                // kube-proxy's nftables mode: a client in an endpoint's set goes to it; else
                // one is picked at random, and the endpoint's chain adds the client to its
                // set (or refreshes its timeout).
                let chain = port.chain(owner);
                let _ = writeln!(s, "add chain ip {table} {chain} {{ comment \"{owner}\"; }}");
                let mut picks = Vec::new();
                for (i, (pod_ip, pod_port)) in port.endpoints.iter().enumerate() {
                    let endpoint = format!("{chain}-{i}");
                    let set = format!("{chain}-a{i}");
                    let _ = write!(
                        s,
                        "add set ip {table} {set} {{ type ipv4_addr; flags dynamic,timeout; \
                         timeout {timeout}s; }}\n\
                         add chain ip {table} {endpoint} {{ comment \"{owner}\"; }}\n\
                         add rule ip {table} {endpoint} update @{set} {{ ip saddr }} meta \
                         l4proto {proto} dnat ip to {pod_ip}:{pod_port}\n\
                         add rule ip {table} {chain} ip saddr @{set} goto {endpoint}\n"
                    );
                    picks.push(format!("{i} : goto {endpoint}"));
                }
                let _ = writeln!(
                    s,
                    "add rule ip {table} {chain} numgen random mod {} vmap {{ {} }}",
                    picks.len(),
                    picks.join(", ")
                );
                chain
            } else {
                let chain = port.chain(owner);
                let endpoints: Vec<String> = port
                    .endpoints
                    .iter()
                    .enumerate()
                    .map(|(i, (pod_ip, pod_port))| format!("{i} : {pod_ip} . {pod_port}"))
                    .collect();
                let _ = write!(
                    s,
                    "add chain ip {table} {chain} {{ comment \"{owner}\"; }}\n\
                     add rule ip {table} {chain} meta l4proto {proto} dnat ip to numgen random \
                     mod {} map {{ {} }}\n",
                    endpoints.len(),
                    endpoints.join(", ")
                );
                chain
            };
            let _ = writeln!(
                s,
                "create element ip {table} {} {{ {ip} . {proto} . {number} comment \"{owner}\" : \
                 goto {verdict} }}",
                port.map()
            );
            if let Some(node_port) = port.node_port {
                let _ = writeln!(
                    s,
                    "create element ip {table} {} {{ {proto} . {node_port} comment \"{owner}\" : \
                     goto {verdict} }}",
                    port.node_map()
                );
            }
        }
        s
    }

    /// Every element of the Service maps (`services`, `no_endpoints`, `nodeports` and
    /// `no_endpoint_nodeports`) there are, with its map.
    fn service_elements(&self) -> Result<Listed> {
        let mut listed = Listed {
            elements: Vec::new(),
            complete: true,
        };
        for map in SERVICE_MAPS {
            let result = self.conn().elements(NFPROTO_IPV4, &self.table, map);
            match result {
                Ok(elements) => listed
                    .elements
                    .extend(elements.into_iter().map(|e| (map, e))),
                Err(err) if err.raw_os_error() == Some(libc::ENOENT) => listed.complete = false,
                Err(source) => {
                    return Err(self.error(format!("list map ip {} {map}", self.table), source));
                }
            }
        }
        Ok(listed)
    }

    /// The chains of the table (none when there is no table).
    /// The names of the table's sets.
    fn table_sets(&self) -> Result<Vec<String>> {
        let sets = self
            .conn()
            .sets(NFPROTO_IPV4)
            .map_err(|source| self.error("list sets ip".into(), source))?;
        Ok(sets
            .into_iter()
            .filter(|(table, _)| *table == self.table)
            .map(|(_, name)| name)
            .collect())
    }

    fn table_chains(&self) -> Result<Vec<Chain>> {
        self.family_chains(NFPROTO_IPV4)
    }

    fn not_ready(&self) -> Error {
        Error::NatNotReady {
            table: self.table.clone(),
            ns: self.ns.path().to_path_buf(),
        }
    }
}

/// What `owner` holds among the table's `chains` and Service `elements`.
fn held(
    owner: &str,
    chains: &[Chain],
    elements: &[(&'static str, Element)],
    sets: &[String],
) -> Held {
    let marker = service_chain(owner);
    let ports = format!("{marker}-");
    Held {
        // Sets carry no comment: the hash in their name is the owner's (set_service refuses
        // an owner whose chain `svc-HASH` another owner holds).
        sets: sets
            .iter()
            .filter(|name| name.starts_with(&ports))
            .cloned()
            .collect(),
        marker: chains
            .iter()
            .any(|c| c.name == marker && c.comment.as_deref() == Some(owner)),
        chains: chains
            .iter()
            .filter(|c| c.name.starts_with(&ports) && c.comment.as_deref() == Some(owner))
            .map(|c| c.name.clone())
            .collect(),
        elements: elements
            .iter()
            .filter(|(_, e)| e.comment.as_deref() == Some(owner))
            .map(|(map, e)| (*map, e.key.clone()))
            .collect(),
    }
}

/// `svc-` and the 64-bit FNV-1a hash of the owner, in hex: the owner's chain, and the start
/// of its ports' chains.
fn service_chain(owner: &str) -> String {
    format!("{SERVICE_PREFIX}{:016x}", owner_hash(owner))
}

/// Whether `name` is an owner's chain `svc-HASH` (not a port's chain).
fn is_service_chain(name: &str) -> bool {
    name.strip_prefix(SERVICE_PREFIX)
        .is_some_and(|hash| hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A key of `map` as nft reads it: `10.96.0.10 . 6 . 80` in `services` and
/// `no_endpoints`, `6 . 30080` in `nodeports` and `no_endpoint_nodeports`.
fn key_text(map: &str, key: &[u8]) -> Option<String> {
    if matches!(map, NODEPORTS | NO_ENDPOINT_NODEPORTS) {
        let proto = *key.first()?;
        let port = u16::from_be_bytes(key.get(4..6)?.try_into().ok()?);
        return Some(format!("{proto} . {port}"));
    }
    let ip = ipv4(key.get(0..4)?)?;
    let proto = *key.get(4)?;
    let port = u16::from_be_bytes(key.get(8..10)?.try_into().ok()?);
    Some(format!("{ip} . {proto} . {port}"))
}

/// An owner [`Nat::set_service`] can write into nft's text: that of a hostPort's owner, at
/// most 128 bytes (nft's longest comment), without quotes or backslashes.
fn validate_service_owner(owner: &str) -> Result<()> {
    validate_owner(owner)?;
    let reason = if owner.len() > SERVICE_OWNER_MAX {
        Some("longer than 128 bytes, the longest comment nft keeps")
    } else if owner.contains(['"', '\\']) {
        Some("must not contain quotes or backslashes")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidOwner {
            owner: owner.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_laid_out_as_nft_writes_them() {
        // `nft --debug=netlink list map ip t services`: element 0a00600a 00000006 00005000.
        let port = ServicePort::new(Protocol::Tcp, 80, [(Ipv4Addr::new(10, 90, 0, 5), 8080)]);
        let key = port.key(Ipv4Addr::new(10, 96, 0, 10));
        assert_eq!(key, vec![10, 96, 0, 10, 6, 0, 0, 0, 0, 80, 0, 0]);
        assert_eq!(
            key_text(SERVICES, &key).as_deref(),
            Some("10.96.0.10 . 6 . 80")
        );
        assert_eq!(port.map(), SERVICES);
        assert_eq!(port.node_key(), None);
        assert_eq!(ServicePort::new(Protocol::Udp, 53, []).map(), NO_ENDPOINTS);
        // `nft --debug=netlink list map ip t nodeports`: element 00000006 00007576.
        let port = port.with_node_port(30325);
        let key = port.node_key().expect("a node port");
        assert_eq!(key, vec![6, 0, 0, 0, 0x76, 0x75, 0, 0]);
        assert_eq!(key_text(NODEPORTS, &key).as_deref(), Some("6 . 30325"));
        assert_eq!(port.node_map(), NODEPORTS);
        let port = ServicePort::new(Protocol::Udp, 53, []).with_node_port(30053);
        assert_eq!(port.node_map(), NO_ENDPOINT_NODEPORTS);
    }

    #[test]
    fn service_chains_are_apart_from_owner_chains() {
        let marker = service_chain("default/web");
        assert!(is_service_chain(&marker), "{marker}");
        let port = ServicePort::new(Protocol::Udp, 53, []);
        assert_eq!(port.chain("default/web"), format!("{marker}-udp-53"));
        assert!(!is_service_chain(&port.chain("default/web")));
        assert!(!is_service_chain(&super::super::owner_chain("default/web")));
    }
}
