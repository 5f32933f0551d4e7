//! A Service's controller: kube-proxy and the endpoints controller of a cluster, for one
//! Service. Each pass picks the pods its selector matches in its namespace, writes them as
//! the Service's Endpoints (`endpoints.json` in the controller's directory: what `get
//! endpoints` and `describe svc` show), and gives the pod network's NAT table (`netns::Nat`)
//! the Service's rules: connections to its cluster IP and port spread at random over the Ready
//! pods' IPs and target ports, as kube-proxy's nftables mode spreads them, and refused at once
//! when no pod is Ready. A pod's readiness is read from its status file each pass
//! ([`PASS`]), so endpoints follow readiness within that.
//!
//! Its cluster IP was given when the Service was kept (`objects::Store::put`). A headless
//! Service (`clusterIP: None`) gets Endpoints and names but no rules; an ExternalName one
//! neither. The names of every Service (`svc`, `svc.ns`, `svc.ns.svc.cluster.local`) are
//! written into one hosts file per podkit root ([`hosts_file`]) that each pod's supervisor
//! keeps its `/etc/hosts` in step with.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use super::{Control, Workload, controller_dir};
use crate::objects::Store;
use crate::spec::ObjectKind;
use crate::state::{self, PodState};

/// How often a Service's pods are read: endpoints follow a pod's readiness within it.
const PASS: Duration = Duration::from_millis(250);

/// `sessionAffinityConfig.clientIP.timeoutSeconds` when a ClientIP Service gives none: the
/// API server's default (3 hours).
const DEFAULT_AFFINITY_TIMEOUT: u32 = 10_800;

/// The cluster's DNS domain, as kubelet's default `clusterDomain`.
pub const CLUSTER_DOMAIN: &str = "cluster.local";

pub(super) struct Service {
    context: Workload,
    /// What the NAT table was last given, to write only changes.
    written: Option<Rules>,
    /// The Endpoints last written.
    endpoints: Option<Value>,
    /// The pod network's NAT table, opened once (a netlink socket) and kept for every pass.
    nat: Option<netns::Nat>,
}

/// A Service's rules: its cluster IP and, per port, the endpoints connections spread over.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rules {
    ip: Ipv4Addr,
    ports: Vec<netns::ServicePort>,
}

impl Service {
    pub(super) fn new(context: Workload) -> Service {
        Service {
            context,
            written: None,
            endpoints: None,
            nat: None,
        }
    }

    /// The owner of the Service's rules in the host's NAT table: its store and name, so
    /// Services of two stores (two podkit installs, tests) never take each other's rules.
    fn owner(&self) -> String {
        owner(
            &self.context.storage,
            &self.context.namespace,
            &self.context.name,
        )
    }
}

/// The owner of a Service's rules in the NAT table.
fn owner(storage: &Path, namespace: &str, name: &str) -> String {
    format!("{}:{namespace}/{name}", storage.display())
}

impl Control for Service {
    fn reconcile(&mut self, object: &Value) -> anyhow::Result<Option<Duration>> {
        let spec = &object["spec"];
        let pods = state::list_in(&self.context.root, Some(&self.context.namespace))?;
        let selected: Vec<&PodState> = match spec["selector"].as_object() {
            // A Service without a selector has the Endpoints its user writes: none here.
            None => Vec::new(),
            Some(selector) if selector.is_empty() => Vec::new(),
            Some(selector) => pods
                .iter()
                .filter(|p| {
                    let labels = &p.manifest["metadata"]["labels"];
                    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
                })
                .collect(),
        };
        let publish_not_ready = spec["publishNotReadyAddresses"] == true;
        let endpoints = endpoints_object(object, &selected, publish_not_ready);
        if self.endpoints.as_ref() != Some(&endpoints) {
            let dir = controller_dir(
                &self.context.root,
                ObjectKind::Service,
                &self.context.namespace,
                &self.context.name,
            );
            let path = dir.join("endpoints.json");
            let text = serde_json::to_vec_pretty(&endpoints).unwrap_or_default();
            crate::supervisor::status::write_atomic(&path, &text)
                .map_err(|e| anyhow::anyhow!("failed to write {}: {e}", path.display()))?;
            // The hosts file names a cluster IP, which a pass cannot change, or a headless
            // Service's Ready pods, which it can: written on the first pass, and after each
            // change of a headless one's Endpoints.
            let first = self.endpoints.is_none();
            self.endpoints = Some(endpoints);
            if first || spec["clusterIP"] == "None" {
                write_hosts_file(&self.context.root, &self.context.storage)?;
            }
        }
        // The rules, for a Service with a cluster IP.
        let Some(ip) = spec["clusterIP"]
            .as_str()
            .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
        else {
            return Ok(Some(PASS));
        };
        // `sessionAffinity: ClientIP`, for the API server's default 3 hours unless the
        // Service says.
        let affinity = (spec["sessionAffinity"] == "ClientIP").then(|| {
            spec["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"]
                .as_u64()
                .and_then(|t| u32::try_from(t).ok())
                .unwrap_or(DEFAULT_AFFINITY_TIMEOUT)
        });
        let rules = Rules {
            ip,
            ports: service_ports(spec)
                .into_iter()
                .map(|port| {
                    let targets: Vec<(Ipv4Addr, u16)> = selected
                        .iter()
                        .filter(|p| serves(p, publish_not_ready))
                        .filter_map(|p| Some((pod_ip(p)?, target_port(p, &port)?)))
                        .collect();
                    let mut rules = netns::ServicePort::new(port.protocol, port.port, targets);
                    if let Some(node_port) = port.node_port {
                        rules = rules.with_node_port(node_port);
                    }
                    if let Some(timeout) = affinity {
                        rules = rules.with_affinity(timeout);
                    }
                    rules
                })
                .collect(),
        };
        if self.nat.is_none() {
            let nat = crate::supervisor::network::nat_table()
                .map_err(|e| anyhow::anyhow!("the pod network: {e}"))?;
            self.nat = Some(nat);
        }
        let owner = self.owner();
        let Some(nat) = &self.nat else {
            return Ok(Some(PASS));
        };
        let present = match nat.has_service(&owner) {
            Ok(present) => present,
            // No table: no pod has an address (the first one to join makes it); nothing to
            // spread connections over yet.
            Err(netns::Error::NatNotReady { .. }) => {
                self.written = None;
                return Ok(Some(PASS));
            }
            Err(err) => return Err(err.into()),
        };
        if !present || self.written.as_ref() != Some(&rules) {
            match nat.set_service(&owner, ip, &rules.ports) {
                Ok(()) => {}
                // A table an older podkit made (its bridge still has pods): brought up to
                // date, then written; or no table yet.
                Err(netns::Error::NatNotReady { .. }) => {
                    let upgraded = crate::supervisor::network::upgrade_table()
                        .map_err(|e| anyhow::anyhow!("the pod network: {e}"))?;
                    if !upgraded {
                        self.written = None;
                        return Ok(Some(PASS));
                    }
                    eprintln!("brought the pod network's NAT table up to date");
                    nat.set_service(&owner, ip, &rules.ports)?;
                }
                Err(err) => return Err(err.into()),
            }
            let spread: Vec<String> = rules
                .ports
                .iter()
                .map(|p| {
                    let (port, protocol) = (p.port, p.protocol);
                    format!("{ip}:{port}/{protocol} -> {} endpoints", p.endpoints.len())
                })
                .collect();
            eprintln!("service {:?}: {}", self.context.name, spread.join(", "));
            self.written = Some(rules);
        }
        Ok(Some(PASS))
    }
}

/// Removes what a deleted Service left: its rules in the NAT table and its names in the hosts
/// file (its Endpoints go with its controller's directory).
pub fn clean_up(root: &Path, storage: &Path, namespace: &str, name: &str) {
    if let Ok(nat) = crate::supervisor::network::nat_table() {
        match nat.remove_service(&owner(storage, namespace, name)) {
            Ok(_) | Err(netns::Error::NatNotReady { .. }) => {}
            Err(err) => eprintln!("warning: service {name:?}: failed to remove its rules: {err}"),
        }
    }
    if let Err(err) = write_hosts_file(root, storage) {
        eprintln!("warning: {err:#}");
    }
}

/// Removes the rules of this store's Services that are gone (deleted while their controller
/// was not running); for `gc`. Returns a line for each.
pub fn sweep(root: &Path, storage: &Path) -> Vec<String> {
    let Ok(nat) = crate::supervisor::network::nat_table() else {
        return Vec::new();
    };
    let Ok(owners) = nat.services() else {
        return Vec::new();
    };
    let store = Store::new(storage);
    let prefix = format!("{}:", storage.display());
    let mut removed = Vec::new();
    for owner in owners {
        let Some((namespace, name)) = owner
            .strip_prefix(&prefix)
            .and_then(|rest| rest.split_once('/'))
        else {
            continue;
        };
        if matches!(store.get(ObjectKind::Service, namespace, name), Ok(None)) {
            clean_up(root, storage, namespace, name);
            removed.push(format!(
                "removed the rules of service {namespace}/{name} (the Service is gone)"
            ));
        }
    }
    removed
}

/// One port of a Service as its spec gives it.
struct Port {
    name: String,
    protocol: netns::Protocol,
    port: u16,
    /// A number, or a container port's name.
    target: Value,
    /// Its port on every address of the host (NodePort and LoadBalancer Services).
    node_port: Option<u16>,
}

/// The Service's TCP and UDP ports (SCTP has no rules).
fn service_ports(spec: &Value) -> Vec<Port> {
    spec["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let protocol = match p["protocol"].as_str().unwrap_or("TCP") {
                "TCP" => netns::Protocol::Tcp,
                "UDP" => netns::Protocol::Udp,
                _ => return None,
            };
            let port = u16::try_from(p["port"].as_u64()?).ok()?;
            Some(Port {
                name: p["name"].as_str().unwrap_or("").to_owned(),
                protocol,
                port,
                target: match &p["targetPort"] {
                    Value::Null => json!(port),
                    other => other.clone(),
                },
                node_port: p["nodePort"].as_u64().and_then(|n| u16::try_from(n).ok()),
            })
        })
        .collect()
}

/// The pod's IPv4 address on the pod network.
fn pod_ip(pod: &PodState) -> Option<Ipv4Addr> {
    pod.status.as_ref()?.pod_ip.as_ref()?.parse().ok()
}

/// Whether the pod's Ready condition is True.
fn ready(pod: &PodState) -> bool {
    pod.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

/// Whether a pod is an endpoint at all: running (its supervisor alive) and not being deleted.
fn running(pod: &PodState) -> bool {
    pod.deletion().is_none() && pod.supervisor.is_some() && pod.phase() == "Running"
}

/// Whether a pod is one connections go to: a running endpoint, and Ready (or the Service
/// publishes pods that are not).
fn serves(pod: &PodState, publish_not_ready: bool) -> bool {
    running(pod) && (publish_not_ready || ready(pod))
}

/// The pod's port for `port`: its number, or the number of the container port named so (of
/// the protocol), as the endpoints controller resolves it (`FindPort`).
fn target_port(pod: &PodState, port: &Port) -> Option<u16> {
    match &port.target {
        Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
        Value::String(name) => {
            let protocol = match port.protocol {
                netns::Protocol::Udp => "UDP",
                _ => "TCP",
            };
            let spec = &pod.manifest["spec"];
            spec["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .chain(spec["initContainers"].as_array().into_iter().flatten())
                .flat_map(|c| c["ports"].as_array().into_iter().flatten())
                .find(|p| {
                    p["name"].as_str() == Some(name)
                        && p["protocol"].as_str().unwrap_or("TCP") == protocol
                })
                .and_then(|p| p["containerPort"].as_u64())
                .and_then(|n| u16::try_from(n).ok())
        }
        _ => None,
    }
}

/// The Service's Endpoints, as the endpoints controller writes them: one subset per set of
/// resolved ports, Ready pods in `addresses`, the others in `notReadyAddresses`; pods being
/// deleted, ended or without an address left out.
fn endpoints_object(service: &Value, pods: &[&PodState], publish_not_ready: bool) -> Value {
    let ports = service_ports(&service["spec"]);
    let mut subsets: BTreeMap<String, (Value, Vec<Value>, Vec<Value>)> = BTreeMap::new();
    for pod in pods {
        let Some(ip) = pod_ip(pod) else { continue };
        if !running(pod) {
            continue;
        }
        let resolved: Vec<Value> = ports
            .iter()
            .filter_map(|p| {
                let number = target_port(pod, p)?;
                let mut entry = json!({
                    "port": number,
                    "protocol": match p.protocol { netns::Protocol::Udp => "UDP", _ => "TCP" },
                });
                if !p.name.is_empty() {
                    entry["name"] = p.name.clone().into();
                }
                Some(entry)
            })
            .collect();
        if resolved.is_empty() {
            continue;
        }
        let address = json!({
            "ip": ip.to_string(),
            "nodeName": crate::supervisor::node_name(),
            "targetRef": {
                "kind": "Pod",
                "namespace": pod.namespace,
                "name": pod.name,
                "uid": pod.manifest["metadata"]["uid"],
            },
        });
        let key = serde_json::to_string(&resolved).unwrap_or_default();
        let subset = subsets
            .entry(key)
            .or_insert_with(|| (Value::Array(resolved), Vec::new(), Vec::new()));
        if publish_not_ready || ready(pod) {
            subset.1.push(address);
        } else {
            subset.2.push(address);
        }
    }
    let subsets: Vec<Value> = subsets
        .into_values()
        .map(|(ports, ready, not_ready)| {
            let mut subset = json!({ "ports": ports });
            if !ready.is_empty() {
                subset["addresses"] = Value::Array(ready);
            }
            if !not_ready.is_empty() {
                subset["notReadyAddresses"] = Value::Array(not_ready);
            }
            subset
        })
        .collect();
    let meta = &service["metadata"];
    let mut labels = meta["labels"].clone();
    if labels.is_null() {
        labels = json!({});
    }
    labels["endpoints.kubernetes.io/managed-by"] = "endpoint-controller".into();
    json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "labels": labels,
            "creationTimestamp": meta["creationTimestamp"],
        },
        "subsets": subsets,
    })
}

/// A Service's Endpoints as its controller last wrote them.
pub fn endpoints(root: &Path, namespace: &str, name: &str) -> Option<Value> {
    let path = controller_dir(root, ObjectKind::Service, namespace, name).join("endpoints.json");
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// The file of every Service's names under `root`, which pods' supervisors keep their
/// `/etc/hosts` in step with.
pub fn hosts_file(root: &Path) -> PathBuf {
    root.join("services").join("hosts")
}

/// The hosts-file lines of every Service of the store, for a pod of `namespace` to read the
/// file's lines with (see [`hosts_for`]). Each line: `NAMESPACE IP NAME...` where the names
/// are `svc.ns`, `svc.ns.svc`, `svc.ns.svc.cluster.local` (the short name is added for pods
/// of the Service's own namespace): a cluster IP, or for a headless Service one line per
/// Ready endpoint, with the pod's own `pod.svc.ns.svc.cluster.local` when its
/// `spec.subdomain` names the Service (a StatefulSet's pods, whose hostname is theirs).
fn write_hosts_file(root: &Path, storage: &Path) -> anyhow::Result<()> {
    // One writer at a time: every Service's controller writes the whole file.
    let path = hosts_file(root);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path.with_extension("lock"))?;
    let _locked = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive).map_err(
        |(_, errno)| anyhow::anyhow!("failed to lock the Services' hosts file: {errno}"),
    )?;
    let store = Store::new(storage);
    let mut lines = String::new();
    for service in store.list(ObjectKind::Service, None)? {
        let meta = &service["metadata"];
        let (ns, name) = (
            meta["namespace"].as_str().unwrap_or("default"),
            meta["name"].as_str().unwrap_or(""),
        );
        let names = |prefix: &str| {
            let base = format!("{prefix}{name}.{ns}");
            format!("{base} {base}.svc {base}.svc.{CLUSTER_DOMAIN}")
        };
        match service["spec"]["clusterIP"].as_str() {
            Some("None") => {
                let Some(endpoints) = endpoints(root, ns, name) else {
                    continue;
                };
                for subset in endpoints["subsets"].as_array().into_iter().flatten() {
                    for address in subset["addresses"].as_array().into_iter().flatten() {
                        let ip = address["ip"].as_str().unwrap_or("");
                        lines.push_str(&format!("{ns} {ip} {name} {}\n", names("")));
                        let pod = address["targetRef"]["name"].as_str().unwrap_or("");
                        if let Ok(state) = state::read(root, ns, pod)
                            && state.manifest["spec"]["subdomain"].as_str() == Some(name)
                        {
                            let host = state.manifest["spec"]["hostname"].as_str().unwrap_or(pod);
                            lines.push_str(&format!(
                                "{ns} {ip} {host}.{name} {}\n",
                                names(&format!("{host}."))
                            ));
                        }
                    }
                }
            }
            Some(ip) if ip.parse::<Ipv4Addr>().is_ok() => {
                lines.push_str(&format!("{ns} {ip} {name} {}\n", names("")));
            }
            _ => {}
        }
    }
    if std::fs::read_to_string(&path).is_ok_and(|old| old == lines) {
        return Ok(());
    }
    crate::supervisor::status::write_atomic(&path, lines.as_bytes())
        .map_err(|e| anyhow::anyhow!("failed to write {}: {e}", path.display()))?;
    Ok(())
}

/// The `/etc/hosts` lines of every Service for a pod of `namespace`, from the hosts file's
/// text: a Service of the pod's own namespace is also found by its short name.
pub fn hosts_for(namespace: &str, file: &str) -> String {
    let mut out = String::new();
    for line in file.lines() {
        let mut words = line.split_whitespace();
        let (Some(ns), Some(ip), Some(short)) = (words.next(), words.next(), words.next()) else {
            continue;
        };
        let rest: Vec<&str> = words.collect();
        if ns == namespace {
            out.push_str(&format!("{ip}\t{short}\t{}\n", rest.join("\t")));
        } else {
            out.push_str(&format!("{ip}\t{}\n", rest.join("\t")));
        }
    }
    out
}

/// The environment variables kubelet gives a container for the Services of its pod's
/// namespace (`enableServiceLinks`, on by default; kubelet's `envvars.FromServices`): for each
/// Service with a cluster IP, `NAME_SERVICE_HOST`, `NAME_SERVICE_PORT` (its first port),
/// `NAME_SERVICE_PORT_PORTNAME` for named ports, and Docker's link variables (`NAME_PORT`,
/// `NAME_PORT_80_TCP`, `..._PROTO`, `..._PORT`, `..._ADDR`). Names are the Service's, upper
/// case, `-` as `_`.
pub fn service_env(storage: &Path, namespace: &str) -> Vec<(String, String)> {
    let services = Store::new(storage)
        .list(ObjectKind::Service, Some(namespace))
        .unwrap_or_default();
    services.iter().flat_map(env_of).collect()
}

/// One Service's variables (see [`service_env`]).
fn env_of(service: &Value) -> Vec<(String, String)> {
    let spec = &service["spec"];
    let Some(ip) = spec["clusterIP"]
        .as_str()
        .filter(|ip| ip.parse::<Ipv4Addr>().is_ok())
    else {
        return Vec::new();
    };
    let ports: Vec<&Value> = spec["ports"].as_array().into_iter().flatten().collect();
    let Some(first) = ports.first() else {
        return Vec::new();
    };
    let upper = |name: &str| name.to_uppercase().replace('-', "_");
    let prefix = upper(service["metadata"]["name"].as_str().unwrap_or(""));
    let mut env = vec![
        (format!("{prefix}_SERVICE_HOST"), ip.to_owned()),
        (format!("{prefix}_SERVICE_PORT"), first["port"].to_string()),
    ];
    for port in &ports {
        if let Some(name) = port["name"].as_str().filter(|n| !n.is_empty()) {
            env.push((
                format!("{prefix}_SERVICE_PORT_{}", upper(name)),
                port["port"].to_string(),
            ));
        }
    }
    for (i, port) in ports.iter().enumerate() {
        let protocol = port["protocol"].as_str().unwrap_or("TCP");
        let url = format!("{}://{ip}:{}", protocol.to_lowercase(), port["port"]);
        if i == 0 {
            env.push((format!("{prefix}_PORT"), url.clone()));
        }
        let at = format!("{prefix}_PORT_{}_{}", port["port"], protocol.to_uppercase());
        env.push((at.clone(), url));
        env.push((format!("{at}_PROTO"), protocol.to_lowercase()));
        env.push((format!("{at}_PORT"), port["port"].to_string()));
        env.push((format!("{at}_ADDR"), ip.to_owned()));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_links_are_named_as_kubelet_names_them() {
        let service = json!({
            "metadata": {"name": "redis-leader"},
            "spec": {"clusterIP": "10.96.0.11", "ports": [
                {"name": "redis", "port": 6379},
                {"name": "metrics", "port": 9121, "protocol": "TCP"},
            ]},
        });
        let env: Vec<String> = env_of(&service)
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        assert_eq!(
            env,
            [
                "REDIS_LEADER_SERVICE_HOST=10.96.0.11",
                "REDIS_LEADER_SERVICE_PORT=6379",
                "REDIS_LEADER_SERVICE_PORT_REDIS=6379",
                "REDIS_LEADER_SERVICE_PORT_METRICS=9121",
                "REDIS_LEADER_PORT=tcp://10.96.0.11:6379",
                "REDIS_LEADER_PORT_6379_TCP=tcp://10.96.0.11:6379",
                "REDIS_LEADER_PORT_6379_TCP_PROTO=tcp",
                "REDIS_LEADER_PORT_6379_TCP_PORT=6379",
                "REDIS_LEADER_PORT_6379_TCP_ADDR=10.96.0.11",
                "REDIS_LEADER_PORT_9121_TCP=tcp://10.96.0.11:9121",
                "REDIS_LEADER_PORT_9121_TCP_PROTO=tcp",
                "REDIS_LEADER_PORT_9121_TCP_PORT=9121",
                "REDIS_LEADER_PORT_9121_TCP_ADDR=10.96.0.11",
            ]
        );
        let headless = json!({"metadata": {"name": "db"}, "spec": {"clusterIP": "None", "ports": [{"port": 5432}]}});
        assert!(env_of(&headless).is_empty());
    }

    #[test]
    fn a_pod_finds_its_own_namespaces_services_by_their_short_name() {
        let file = "default 10.96.0.5 web web.default web.default.svc web.default.svc.cluster.local\n\
                    shop 10.96.0.9 db db.shop db.shop.svc db.shop.svc.cluster.local\n";
        assert_eq!(
            hosts_for("default", file),
            "10.96.0.5\tweb\tweb.default\tweb.default.svc\tweb.default.svc.cluster.local\n\
             10.96.0.9\tdb.shop\tdb.shop.svc\tdb.shop.svc.cluster.local\n"
        );
    }
}
