//! `podkit get` and `podkit describe`: pods, ConfigMaps and Secrets as kubectl shows them.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::PodStatus;

use crate::spec::ObjectKind;
use crate::state::{self, PodState};
use crate::supervisor::status::SCHEDULING_GATED;

/// Show pods, ConfigMaps, Secrets and PersistentVolumeClaims.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  podkit get pods
  podkit get pod web -o yaml
  podkit get pods -o name
  podkit get configmaps            (also cm; secrets)
  podkit get cm,secret -A
  podkit get secret db-password -o yaml
  podkit get pvc")]
pub struct GetArgs {
    /// What to get: `pods` (`pod`, `po`), `configmaps` (`cm`), `secrets`,
    /// `persistentvolumeclaims` (`pvc`); several with commas.
    #[arg(value_name = "KIND")]
    kind: String,

    /// Only these (of one kind).
    names: Vec<String>,

    /// Output format: wide, json, yaml or name (default: a table).
    #[arg(short, long, value_name = "FORMAT")]
    output: Option<String>,

    /// The namespace (default: `default`).
    #[arg(short = 'n', long, value_name = "NAMESPACE", default_value = "default")]
    namespace: String,

    /// Of every namespace.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
}

/// Show the details of pods (containers, conditions, ignored fields, events), ConfigMaps and
/// Secrets (the sizes of their keys, never their values).
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  podkit describe pod web
  podkit describe pods          (every pod)
  podkit describe configmap app-config")]
pub struct DescribeArgs {
    /// `pod` (`pods`, `po`), `configmap` (`cm`), `secret` or `persistentvolumeclaim` (`pvc`).
    #[arg(value_name = "KIND")]
    kind: String,

    /// What to describe (all of the kind when none is named).
    names: Vec<String>,

    /// The namespace (default: `default`).
    #[arg(short = 'n', long, value_name = "NAMESPACE", default_value = "default")]
    namespace: String,
}

/// A kind the CLI's verbs take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Pod,
    Object(ObjectKind),
    /// A Service's Endpoints, which its controller writes.
    Endpoints,
}

impl Kind {
    /// kubectl's names of a kind: singular, plural, short.
    pub fn parse(word: &str) -> anyhow::Result<Kind> {
        Ok(match word {
            "pod" | "pods" | "po" => Kind::Pod,
            "configmap" | "configmaps" | "cm" => Kind::Object(ObjectKind::ConfigMap),
            "secret" | "secrets" => Kind::Object(ObjectKind::Secret),
            "persistentvolumeclaim" | "persistentvolumeclaims" | "pvc" => {
                Kind::Object(ObjectKind::PersistentVolumeClaim)
            }
            "service" | "services" | "svc" => Kind::Object(ObjectKind::Service),
            "networkpolicy" | "networkpolicies" | "netpol" => {
                Kind::Object(ObjectKind::NetworkPolicy)
            }
            "endpoints" | "ep" => Kind::Endpoints,
            "deployment" | "deployments" | "deploy" => Kind::Object(ObjectKind::Deployment),
            "replicaset" | "replicasets" | "rs" => Kind::Object(ObjectKind::ReplicaSet),
            "replicationcontroller" | "replicationcontrollers" | "rc" => {
                Kind::Object(ObjectKind::ReplicationController)
            }
            "statefulset" | "statefulsets" | "sts" => Kind::Object(ObjectKind::StatefulSet),
            "daemonset" | "daemonsets" | "ds" => Kind::Object(ObjectKind::DaemonSet),
            "job" | "jobs" => Kind::Object(ObjectKind::Job),
            "cronjob" | "cronjobs" | "cj" => Kind::Object(ObjectKind::CronJob),
            other => bail!(
                "podkit knows pods (po), deployments (deploy), replicasets (rs), \
                 replicationcontrollers (rc), statefulsets (sts), daemonsets (ds), jobs, \
                 cronjobs (cj), configmaps (cm), secrets, persistentvolumeclaims (pvc), \
                 services (svc), endpoints (ep) and networkpolicies (netpol), not {other:?}"
            ),
        })
    }
}

pub fn get(root: &Path, storage: &Path, args: GetArgs) -> anyhow::Result<()> {
    let kinds = args
        .kind
        .split(',')
        .map(Kind::parse)
        .collect::<anyhow::Result<Vec<_>>>()?;
    if kinds.len() > 1 && !args.names.is_empty() {
        bail!("name objects of one kind only (podkit get cm NAME)");
    }
    // A workload's controller that died is started again by the next look at its pods.
    crate::controller::ensure_all(root, storage);
    let namespace = (!args.all_namespaces).then_some(args.namespace.as_str());
    if kinds != [Kind::Pod] {
        let mut first = true;
        let mut any = false;
        for kind in kinds {
            let text = match kind {
                Kind::Pod => {
                    let pods = select(root, namespace, &args.names)?;
                    any |= !pods.is_empty();
                    table(
                        &pods,
                        args.output.as_deref() == Some("wide"),
                        args.all_namespaces,
                    )
                }
                Kind::Object(kind) => {
                    let found = select_objects(storage, kind, namespace, &args.names)?;
                    any |= !found.is_empty();
                    let table = || {
                        if kind.is_workload() {
                            super::workloads::table(
                                root,
                                kind,
                                &found,
                                args.all_namespaces,
                                &object_age,
                            )
                        } else {
                            object_table(kind, &found, args.all_namespaces)
                        }
                    };
                    match output(&args, kind.printed(), &found, table)? {
                        Some(text) => text,
                        None => continue,
                    }
                }
                Kind::Endpoints => {
                    let services =
                        select_objects(storage, ObjectKind::Service, namespace, &args.names)?;
                    let found: Vec<serde_json::Value> =
                        services.iter().map(|s| endpoints_of(root, s)).collect();
                    any |= !found.is_empty();
                    let table = || endpoints_table(&found, args.all_namespaces);
                    match output(&args, "endpoints", &found, table)? {
                        Some(text) => text,
                        None => continue,
                    }
                }
            };
            if !text.is_empty() {
                if !first {
                    println!();
                }
                first = false;
                print!("{text}");
            }
        }
        if !any {
            eprintln!("No resources found");
        }
        return Ok(());
    }
    let pods = select(root, namespace, &args.names)?;
    if pods.is_empty() {
        eprintln!("No resources found");
        return Ok(());
    }
    match args.output.as_deref() {
        None => print!("{}", table(&pods, false, args.all_namespaces)),
        Some("wide") => print!("{}", table(&pods, true, args.all_namespaces)),
        Some("name") => pods.iter().for_each(|p| println!("pod/{}", p.name)),
        Some(format @ ("json" | "yaml")) => {
            let value = if args.names.len() == 1 {
                serde_json::to_value(pods[0].to_pod())?
            } else {
                serde_json::json!({
                    "apiVersion": "v1",
                    "kind": "List",
                    "items": pods.iter().map(PodState::to_pod).collect::<Vec<_>>(),
                })
            };
            print_value(format, &value)?;
        }
        Some(other) => bail!("unknown output format {other:?}: use wide, json, yaml or name"),
    }
    Ok(())
}

/// Objects as `-o` asks: a table (from `table`), names (`printed/NAME`), or the objects
/// printed here as JSON or YAML (`None` returned: nothing left to print).
fn output(
    args: &GetArgs,
    printed: &str,
    found: &[serde_json::Value],
    table: impl FnOnce() -> String,
) -> anyhow::Result<Option<String>> {
    Ok(Some(match args.output.as_deref() {
        None | Some("wide") => table(),
        Some("name") => found
            .iter()
            .map(|o| {
                format!(
                    "{printed}/{}\n",
                    o["metadata"]["name"].as_str().unwrap_or("")
                )
            })
            .collect(),
        Some(format @ ("json" | "yaml")) => {
            let value = if args.names.len() == 1 {
                found[0].clone()
            } else {
                serde_json::json!({"apiVersion": "v1", "kind": "List", "items": found})
            };
            print_value(format, &value)?;
            return Ok(None);
        }
        Some(other) => bail!("unknown output format {other:?}: use wide, json, yaml or name"),
    }))
}

/// A Service's Endpoints as its controller wrote them, or none yet.
fn endpoints_of(root: &Path, service: &serde_json::Value) -> serde_json::Value {
    let meta = &service["metadata"];
    let (ns, name) = (
        meta["namespace"].as_str().unwrap_or("default"),
        meta["name"].as_str().unwrap_or(""),
    );
    crate::controller::service::endpoints(root, ns, name).unwrap_or_else(|| {
        serde_json::json!({
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": meta["creationTimestamp"]},
        })
    })
}

/// The Ready addresses of Endpoints as kubectl prints them: `10.90.0.5:80,10.90.0.6:80 + 2
/// more...` (three at most), or `<none>`.
fn endpoint_addresses(endpoints: &serde_json::Value) -> String {
    let mut all = Vec::new();
    for subset in endpoints["subsets"].as_array().into_iter().flatten() {
        for address in subset["addresses"].as_array().into_iter().flatten() {
            let ip = address["ip"].as_str().unwrap_or("");
            let ports: Vec<&serde_json::Value> =
                subset["ports"].as_array().into_iter().flatten().collect();
            if ports.is_empty() {
                all.push(ip.to_owned());
            }
            for port in ports {
                all.push(format!("{ip}:{}", port["port"]));
            }
        }
    }
    match all.len() {
        0 => "<none>".to_owned(),
        1..=3 => all.join(","),
        n => format!("{} + {} more...", all[..3].join(","), n - 3),
    }
}

/// kubectl's table of Endpoints: NAME ENDPOINTS AGE.
fn endpoints_table(found: &[serde_json::Value], namespaces: bool) -> String {
    if found.is_empty() {
        return String::new();
    }
    let mut header = vec!["NAME".to_owned(), "ENDPOINTS".to_owned(), "AGE".to_owned()];
    if namespaces {
        header.insert(0, "NAMESPACE".to_owned());
    }
    let mut rows = vec![header];
    for e in found {
        let mut row = Vec::new();
        if namespaces {
            row.push(e["metadata"]["namespace"].as_str().unwrap_or("").to_owned());
        }
        row.push(e["metadata"]["name"].as_str().unwrap_or("").to_owned());
        row.push(endpoint_addresses(e));
        row.push(object_age(e));
        rows.push(row);
    }
    super::render_table(&rows, "   ")
}

fn print_value(format: &str, value: &serde_json::Value) -> anyhow::Result<()> {
    if format == "json" {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        print!(
            "{}",
            serde_saphyr::to_string(value).context("failed to write YAML")?
        );
    }
    Ok(())
}

pub fn describe(root: &Path, storage: &Path, args: DescribeArgs) -> anyhow::Result<()> {
    let texts: Vec<String> = match Kind::parse(&args.kind)? {
        Kind::Pod => select(root, Some(&args.namespace), &args.names)?
            .iter()
            .map(describe_one)
            .collect(),
        Kind::Object(kind) if kind.is_workload() => {
            select_objects(storage, kind, Some(&args.namespace), &args.names)?
                .iter()
                .map(|d| super::workloads::describe(root, storage, kind, d))
                .collect()
        }
        Kind::Object(kind) => select_objects(storage, kind, Some(&args.namespace), &args.names)?
            .iter()
            .map(|o| describe_object(root, kind, o))
            .collect(),
        Kind::Endpoints => select_objects(
            storage,
            ObjectKind::Service,
            Some(&args.namespace),
            &args.names,
        )?
        .iter()
        .map(|s| {
            let e = endpoints_of(root, s);
            format!(
                "Name:         {}\nNamespace:    {}\nAddresses:    {}\n",
                e["metadata"]["name"].as_str().unwrap_or(""),
                e["metadata"]["namespace"].as_str().unwrap_or(""),
                endpoint_addresses(&e)
            )
        })
        .collect(),
    };
    print!("{}", texts.join("\n\n"));
    Ok(())
}

/// The named objects (each must exist), or all of the kind in `namespace` (all namespaces
/// when `None`).
fn select_objects(
    storage: &Path,
    kind: ObjectKind,
    namespace: Option<&str>,
    names: &[String],
) -> anyhow::Result<Vec<serde_json::Value>> {
    let store = crate::objects::Store::new(storage);
    if names.is_empty() {
        return Ok(store.list(kind, namespace)?);
    }
    let namespace = namespace.unwrap_or("default");
    names
        .iter()
        .map(|name| {
            store.get(kind, namespace, name)?.ok_or_else(|| {
                anyhow::anyhow!(
                    "{} {name:?} not found in namespace {namespace:?}",
                    kind.lower()
                )
            })
        })
        .collect()
}

/// The number of keys of an object (kubectl's DATA column).
fn data_count(object: &serde_json::Value) -> usize {
    ["data", "binaryData"]
        .iter()
        .filter_map(|f| object[f].as_object())
        .map(serde_json::Map::len)
        .sum()
}

/// The age of a stored object, from its creationTimestamp.
fn object_age(object: &serde_json::Value) -> String {
    object["metadata"]["creationTimestamp"]
        .as_str()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .and_then(|t| std::time::SystemTime::from(t).elapsed().ok())
        .map_or_else(|| "<unknown>".to_owned(), short_duration)
}

/// kubectl's table of ConfigMaps (NAME DATA AGE), Secrets (NAME TYPE DATA AGE) or claims
/// (NAME STATUS VOLUME CAPACITY ACCESS MODES STORAGECLASS AGE).
fn object_table(kind: ObjectKind, objects: &[serde_json::Value], namespaces: bool) -> String {
    if objects.is_empty() {
        return String::new();
    }
    if kind == ObjectKind::PersistentVolumeClaim {
        return claim_table(objects, namespaces);
    }
    if kind == ObjectKind::Service {
        return service_table(objects, namespaces);
    }
    if kind == ObjectKind::NetworkPolicy {
        return network_policy_table(objects, namespaces);
    }
    let mut header = vec!["NAME".to_owned()];
    if namespaces {
        header.insert(0, "NAMESPACE".to_owned());
    }
    if kind == ObjectKind::Secret {
        header.push("TYPE".into());
    }
    header.extend(["DATA".into(), "AGE".into()]);
    let mut rows = vec![header];
    for o in objects {
        let text = |v: &serde_json::Value| v.as_str().unwrap_or("").to_owned();
        let mut row = Vec::new();
        if namespaces {
            row.push(text(&o["metadata"]["namespace"]));
        }
        row.push(text(&o["metadata"]["name"]));
        if kind == ObjectKind::Secret {
            row.push(text(&o["type"]));
        }
        row.push(data_count(o).to_string());
        row.push(object_age(o));
        rows.push(row);
    }
    super::render_table(&rows, "   ")
}

/// kubectl's table of NetworkPolicies (NAME POD-SELECTOR AGE), with podkit's ENFORCED column:
/// `no`, always.
fn network_policy_table(objects: &[serde_json::Value], namespaces: bool) -> String {
    let mut header = vec!["NAME", "POD-SELECTOR", "ENFORCED", "AGE"];
    if namespaces {
        header.insert(0, "NAMESPACE");
    }
    let mut rows = vec![header.into_iter().map(str::to_owned).collect::<Vec<_>>()];
    for o in objects {
        let text = |v: &serde_json::Value| v.as_str().unwrap_or("").to_owned();
        let mut row = Vec::new();
        if namespaces {
            row.push(text(&o["metadata"]["namespace"]));
        }
        row.push(text(&o["metadata"]["name"]));
        row.push(selector_text(&o["spec"]["podSelector"]));
        row.push("no".to_owned());
        row.push(object_age(o));
        rows.push(row);
    }
    super::render_table(&rows, "   ")
}

/// A label selector as kubectl prints it (`FormatLabelSelector`): `app=web,tier in (a,b)`,
/// `<none>` for an empty one.
fn selector_text(selector: &serde_json::Value) -> String {
    let mut parts: Vec<String> = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    for e in selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let key = e["key"].as_str().unwrap_or("");
        let values: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str())
            .collect();
        parts.push(match e["operator"].as_str().unwrap_or("") {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_owned(),
            "DoesNotExist" => format!("!{key}"),
            other => format!("{key} {other}"),
        });
    }
    if parts.is_empty() {
        "<none>".to_owned()
    } else {
        parts.join(",")
    }
}

/// The NetworkPolicies of `namespace` whose podSelector selects a pod with `labels`.
fn network_policies_of(namespace: &str, labels: &serde_json::Value) -> Vec<String> {
    let empty = serde_json::Map::new();
    let labels = labels.as_object().unwrap_or(&empty);
    crate::objects::Store::new(&super::storage())
        .list(ObjectKind::NetworkPolicy, Some(namespace))
        .unwrap_or_default()
        .iter()
        .filter(|p| crate::spec::workloads::selects(&p["spec"]["podSelector"], labels))
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_owned))
        .collect()
}

/// A Service's PORT(S) column: `80/TCP`, `80:30080/TCP` with a nodePort.
fn service_ports(service: &serde_json::Value) -> String {
    let ports: Vec<String> = service["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let protocol = p["protocol"].as_str().unwrap_or("TCP");
            match p["nodePort"].as_u64() {
                Some(node) => format!("{}:{node}/{protocol}", p["port"]),
                None => format!("{}/{protocol}", p["port"]),
            }
        })
        .collect();
    if ports.is_empty() {
        "<none>".to_owned()
    } else {
        ports.join(",")
    }
}

/// kubectl's table of Services: CLUSTER-IP is the cluster IP, `None` for a headless one.
fn service_table(services: &[serde_json::Value], namespaces: bool) -> String {
    let mut header: Vec<String> = [
        "NAME",
        "TYPE",
        "CLUSTER-IP",
        "EXTERNAL-IP",
        "PORT(S)",
        "AGE",
    ]
    .map(str::to_owned)
    .to_vec();
    if namespaces {
        header.insert(0, "NAMESPACE".to_owned());
    }
    let mut rows = vec![header];
    for o in services {
        let text = |v: &serde_json::Value| v.as_str().unwrap_or("").to_owned();
        let mut row = Vec::new();
        if namespaces {
            row.push(text(&o["metadata"]["namespace"]));
        }
        row.push(text(&o["metadata"]["name"]));
        let kind = o["spec"]["type"].as_str().unwrap_or("ClusterIP");
        row.push(kind.to_owned());
        row.push(match o["spec"]["clusterIP"].as_str() {
            Some(ip) if !ip.is_empty() => ip.to_owned(),
            _ => "<none>".to_owned(),
        });
        row.push(match kind {
            "ExternalName" => text(&o["spec"]["externalName"]),
            "LoadBalancer" => "<pending>".to_owned(),
            _ => "<none>".to_owned(),
        });
        row.push(service_ports(o));
        row.push(object_age(o));
        rows.push(row);
    }
    super::render_table(&rows, "   ")
}

/// A claim's volume, as kubectl names a dynamically provisioned one: `pvc-<uid>`.
fn claim_volume(claim: &serde_json::Value) -> String {
    format!("pvc-{}", claim["metadata"]["uid"].as_str().unwrap_or(""))
}

/// Access modes as kubectl abbreviates them: `RWO,ROX`.
fn access_modes(claim: &serde_json::Value) -> String {
    claim["spec"]["accessModes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| {
            Some(match m.as_str()? {
                "ReadWriteOnce" => "RWO",
                "ReadOnlyMany" => "ROX",
                "ReadWriteMany" => "RWX",
                "ReadWriteOncePod" => "RWOP",
                other => other,
            })
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn claim_table(claims: &[serde_json::Value], namespaces: bool) -> String {
    let mut header: Vec<String> = [
        "NAME",
        "STATUS",
        "VOLUME",
        "CAPACITY",
        "ACCESS MODES",
        "STORAGECLASS",
        "AGE",
    ]
    .map(str::to_owned)
    .to_vec();
    if namespaces {
        header.insert(0, "NAMESPACE".to_owned());
    }
    let mut rows = vec![header];
    for c in claims {
        let text = |v: &serde_json::Value| v.as_str().unwrap_or("").to_owned();
        let mut row = Vec::new();
        if namespaces {
            row.push(text(&c["metadata"]["namespace"]));
        }
        row.push(text(&c["metadata"]["name"]));
        row.push(text(&c["status"]["phase"]));
        row.push(claim_volume(c));
        row.push(text(&c["status"]["capacity"]["storage"]));
        row.push(access_modes(c));
        row.push(
            c["spec"]["storageClassName"]
                .as_str()
                .unwrap_or("<unset>")
                .to_owned(),
        );
        row.push(object_age(c));
        rows.push(row);
    }
    super::render_table(&rows, "   ")
}

/// `kubectl describe networkpolicy`: its selector and rules as kubectl words them, then what
/// podkit does with it (nothing: it is not enforced) and the pods it selects.
fn describe_network_policy(out: &mut String, root: &Path, o: &serde_json::Value) {
    let spec = &o["spec"];
    let _ = writeln!(
        out,
        "Enforced:     no: {}",
        crate::spec::NETWORK_POLICY_NOT_ENFORCED
    );
    let _ = writeln!(out, "Spec:");
    let selector = selector_text(&spec["podSelector"]);
    if selector == "<none>" {
        let _ = writeln!(
            out,
            "  PodSelector:     <none> (Allowing the specific traffic to all pods in this namespace)"
        );
    } else {
        let _ = writeln!(out, "  PodSelector:     {selector}");
    }
    let types: Vec<&str> = spec["policyTypes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_str())
        .collect();
    for (kind, rules, peers, verb) in [
        ("Ingress", "ingress", "from", "ingress"),
        ("Egress", "egress", "to", "egress"),
    ] {
        if !types.contains(&kind) {
            let _ = writeln!(out, "  Not affecting {verb} traffic");
            continue;
        }
        let _ = writeln!(out, "  Allowing {verb} traffic:");
        let list = spec[rules].as_array().map_or(&[][..], Vec::as_slice);
        if list.is_empty() {
            let _ = writeln!(
                out,
                "    <none> (Selected pods are isolated for {verb} connectivity)"
            );
        }
        for (i, rule) in list.iter().enumerate() {
            if i > 0 {
                let _ = writeln!(out, "    ----------");
            }
            let ports: Vec<String> = rule["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    let protocol = p["protocol"].as_str().unwrap_or("TCP");
                    match &p["port"] {
                        serde_json::Value::Null => {
                            format!("<any> (traffic allowed to all ports)/{protocol}")
                        }
                        port => format!(
                            "{}/{protocol}",
                            port.as_str()
                                .map_or_else(|| port.to_string(), str::to_owned)
                        ),
                    }
                })
                .collect();
            let _ = writeln!(
                out,
                "    To Port: {}",
                if ports.is_empty() {
                    "<any> (traffic allowed to all ports)".to_owned()
                } else {
                    ports.join(", ")
                }
            );
            let from = rule[peers].as_array().map_or(&[][..], Vec::as_slice);
            let title = if peers == "from" { "From" } else { "To" };
            if from.is_empty() {
                let _ = writeln!(out, "    {title}: <any> (traffic not restricted by source)");
            }
            for peer in from {
                let _ = writeln!(out, "    {title}:");
                if let Some(block) = peer["ipBlock"].as_object() {
                    let _ = writeln!(
                        out,
                        "      IPBlock:\n        CIDR: {}",
                        block.get("cidr").and_then(|c| c.as_str()).unwrap_or("")
                    );
                }
                if !peer["namespaceSelector"].is_null() {
                    let _ = writeln!(
                        out,
                        "      NamespaceSelector: {}",
                        selector_text(&peer["namespaceSelector"])
                    );
                }
                if !peer["podSelector"].is_null() {
                    let _ = writeln!(
                        out,
                        "      PodSelector: {}",
                        selector_text(&peer["podSelector"])
                    );
                }
            }
        }
    }
    let _ = writeln!(out, "  Policy Types: {}", types.join(", "));
    let namespace = o["metadata"]["namespace"].as_str().unwrap_or("default");
    let empty = serde_json::Map::new();
    let selected: Vec<String> = state::list_in(root, Some(namespace))
        .unwrap_or_default()
        .iter()
        .filter(|p| {
            let labels = p.manifest["metadata"]["labels"]
                .as_object()
                .unwrap_or(&empty);
            crate::spec::workloads::selects(&spec["podSelector"], labels)
        })
        .map(|p| p.name.clone())
        .collect();
    let _ = writeln!(
        out,
        "Selected Pods:  {}",
        if selected.is_empty() {
            "<none>".to_owned()
        } else {
            selected.join(", ")
        }
    );
}

/// `kubectl describe` of a ConfigMap (its data shown, binary data as sizes), a Secret (the
/// sizes of its keys only) or a claim (its volume's directory, the pods using it).
fn describe_object(root: &Path, kind: ObjectKind, o: &serde_json::Value) -> String {
    let mut out = String::new();
    let map_text = |v: &serde_json::Value| match v.as_object() {
        Some(map) if !map.is_empty() => map
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
            .collect::<Vec<_>>()
            .join("\n              "),
        _ => "<none>".to_owned(),
    };
    let _ = writeln!(
        out,
        "Name:         {}",
        o["metadata"]["name"].as_str().unwrap_or("")
    );
    let _ = writeln!(
        out,
        "Namespace:    {}",
        o["metadata"]["namespace"].as_str().unwrap_or("")
    );
    let _ = writeln!(out, "Labels:       {}", map_text(&o["metadata"]["labels"]));
    let _ = writeln!(
        out,
        "Annotations:  {}",
        map_text(&o["metadata"]["annotations"])
    );
    let data = crate::objects::data(kind, o);
    match kind {
        ObjectKind::ConfigMap => {
            let _ = writeln!(out, "\nData\n====");
            for (key, value) in &data.env {
                let _ = writeln!(out, "{key}:\n----\n{value}\n");
            }
            let binary = o["binaryData"].as_object();
            if binary.is_some_and(|b| !b.is_empty()) {
                let _ = writeln!(out, "\nBinaryData\n====");
                for key in binary.into_iter().flat_map(|b| b.keys()) {
                    let n = data.entries.get(key).map_or(0, Vec::len);
                    let _ = writeln!(out, "{key}: {n} bytes");
                }
            }
        }
        ObjectKind::PersistentVolumeClaim => {
            let ns = o["metadata"]["namespace"].as_str().unwrap_or("default");
            let name = o["metadata"]["name"].as_str().unwrap_or("");
            let _ = writeln!(
                out,
                "StorageClass:  {}",
                o["spec"]["storageClassName"].as_str().unwrap_or("<unset>")
            );
            let _ = writeln!(
                out,
                "Status:        {}",
                o["status"]["phase"].as_str().unwrap_or("")
            );
            let _ = writeln!(out, "Volume:        {}", claim_volume(o));
            let _ = writeln!(
                out,
                "Capacity:      {} (requested; a directory, not enforced)",
                o["status"]["capacity"]["storage"].as_str().unwrap_or("")
            );
            let _ = writeln!(out, "Access Modes:  {}", access_modes(o));
            let _ = writeln!(out, "VolumeMode:    Filesystem");
            let _ = writeln!(out, "Directory:     {}", claim_dir_of(ns, name).display());
            let users = claim_users(&super::root(), ns, name);
            let _ = writeln!(
                out,
                "Used By:       {}",
                if users.is_empty() {
                    "<none>".to_owned()
                } else {
                    users.join(", ")
                }
            );
        }
        ObjectKind::NetworkPolicy => describe_network_policy(&mut out, root, o),
        ObjectKind::Secret => {
            let _ = writeln!(out, "\nType:  {}\n", o["type"].as_str().unwrap_or("Opaque"));
            let _ = writeln!(out, "Data\n====");
            for (key, bytes) in &data.entries {
                let _ = writeln!(out, "{key}:  {} bytes", bytes.len());
            }
        }
        ObjectKind::Service => {
            let selector: Vec<String> = o["spec"]["selector"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect();
            let _ = writeln!(
                out,
                "Selector:          {}",
                if selector.is_empty() {
                    "<none>".to_owned()
                } else {
                    selector.join(",")
                }
            );
            let _ = writeln!(
                out,
                "Type:              {}",
                o["spec"]["type"].as_str().unwrap_or("ClusterIP")
            );
            let ip = o["spec"]["clusterIP"].as_str().unwrap_or("<none>");
            let _ = writeln!(out, "IP:                {ip}");
            let _ = writeln!(out, "IPs:               {ip}");
            let endpoints = endpoints_of(root, o);
            for port in o["spec"]["ports"].as_array().into_iter().flatten() {
                let protocol = port["protocol"].as_str().unwrap_or("TCP");
                let name = port["name"].as_str().unwrap_or("<unset>");
                let target = match &port["targetPort"] {
                    serde_json::Value::Null => port["port"].to_string(),
                    serde_json::Value::String(t) => t.clone(),
                    other => other.to_string(),
                };
                let _ = writeln!(
                    out,
                    "Port:              {name}  {}/{protocol}",
                    port["port"]
                );
                let _ = writeln!(out, "TargetPort:        {target}/{protocol}");
                if let Some(node) = port["nodePort"].as_u64() {
                    let _ = writeln!(out, "NodePort:          {name}  {node}/{protocol}");
                }
                let _ = writeln!(out, "Endpoints:         {}", endpoint_addresses(&endpoints));
            }
            let _ = writeln!(
                out,
                "Session Affinity:  {}",
                o["spec"]["sessionAffinity"].as_str().unwrap_or("None")
            );
        }
        // Workloads are described by `workloads::describe`.
        _ => {}
    }
    if o.get("immutable") == Some(&serde_json::Value::Bool(true)) {
        let _ = writeln!(out, "\nImmutable:  true");
    }
    out
}

/// The named pods (each must exist), or all of them.
/// The named pods of `namespace` (each must exist), or all of it (of every namespace when
/// `None`).
pub fn select(
    root: &Path,
    namespace: Option<&str>,
    names: &[String],
) -> anyhow::Result<Vec<PodState>> {
    if names.is_empty() {
        return Ok(state::list_in(root, namespace)?);
    }
    let namespace = namespace.unwrap_or("default");
    names
        .iter()
        .map(|name| Ok(state::read(root, namespace, name)?))
        .collect()
}

/// kubectl's table of pods; with a NAMESPACE column for `-A`.
fn table(pods: &[PodState], wide: bool, namespaces: bool) -> String {
    if pods.is_empty() {
        return String::new();
    }
    let mut rows = vec![vec![
        "NAME".to_owned(),
        "READY".into(),
        "STATUS".into(),
        "RESTARTS".into(),
        "AGE".into(),
    ]];
    if namespaces {
        rows[0].insert(0, "NAMESPACE".into());
    }
    if wide {
        rows[0].extend(["IP".into(), "NODE".into()]);
    }
    let node = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    for pod in pods {
        let status = pod.status.clone().unwrap_or_default();
        let columns = Columns::of(pod, &status);
        let mut row = vec![
            pod.name.clone(),
            format!("{}/{}", columns.ready, columns.total),
            columns.status,
            columns.restarts.to_string(),
            short_duration(pod.age()),
        ];
        if namespaces {
            row.insert(0, pod.namespace.clone());
        }
        if wide {
            let ip = status.pod_ip.clone().filter(|ip| !ip.is_empty());
            row.extend([ip.unwrap_or_else(|| "<none>".into()), node.clone()]);
        }
        rows.push(row);
    }
    super::render_table(&rows, "   ")
}

/// kubectl's READY, STATUS and RESTARTS columns, computed as kubectl's `printPod` does: the
/// phase, or the reason that says more (the first init container not done: `Init:1/2`,
/// `Init:Error`, `Init:CrashLoopBackOff`; then the last main container's waiting or terminated
/// reason); started sidecars count as containers; `Terminating` while being deleted.
struct Columns {
    ready: usize,
    total: usize,
    status: String,
    restarts: i32,
}

impl Columns {
    fn of(pod: &PodState, status: &PodStatus) -> Columns {
        let spec = &pod.manifest["spec"];
        let sidecars: Vec<&str> = spec["initContainers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["restartPolicy"] == "Always")
            .filter_map(|c| c["name"].as_str())
            .collect();
        let init_total = spec["initContainers"].as_array().map_or(0, Vec::len);
        let mut columns = Columns {
            ready: 0,
            total: spec["containers"].as_array().map_or(0, Vec::len) + sidecars.len(),
            status: pod.phase().to_owned(),
            restarts: 0,
        };
        if let Some(reason) = &status.reason {
            columns.status.clone_from(reason);
        }
        // A pod held by its scheduling gates.
        if status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "PodScheduled" && c.reason.as_deref() == Some(SCHEDULING_GATED))
        {
            columns.status = SCHEDULING_GATED.to_owned();
        }
        let init = status
            .init_container_statuses
            .as_deref()
            .unwrap_or_default();
        let mut initializing = false;
        let mut sidecar_restarts = 0;
        for (i, c) in init.iter().enumerate() {
            columns.restarts += c.restart_count;
            let state = c.state.clone().unwrap_or_default();
            let sidecar = sidecars.contains(&c.name.as_str());
            if sidecar {
                sidecar_restarts += c.restart_count;
            }
            if state.terminated.as_ref().is_some_and(|t| t.exit_code == 0) {
                continue;
            }
            if sidecar && c.started == Some(true) {
                columns.ready += usize::from(c.ready);
                continue;
            }
            initializing = true;
            columns.status = if let Some(t) = &state.terminated {
                match t.reason.as_deref() {
                    Some(reason) if !reason.is_empty() => format!("Init:{reason}"),
                    _ => match t.signal {
                        Some(signal) if signal != 0 => format!("Init:Signal:{signal}"),
                        _ => format!("Init:ExitCode:{}", t.exit_code),
                    },
                }
            } else if let Some(reason) = state
                .waiting
                .and_then(|w| w.reason)
                .filter(|r| !r.is_empty() && r != "PodInitializing")
            {
                format!("Init:{reason}")
            } else {
                format!("Init:{i}/{init_total}")
            };
            break;
        }
        let initialized = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Initialized" && c.status == "True");
        if !initializing || initialized {
            columns.restarts = sidecar_restarts;
            let mut running = false;
            for c in status.container_statuses.iter().flatten().rev() {
                columns.restarts += c.restart_count;
                let state = c.state.clone().unwrap_or_default();
                if let Some(reason) = state
                    .waiting
                    .and_then(|w| w.reason)
                    .filter(|r| !r.is_empty())
                {
                    columns.status = reason;
                } else if let Some(t) = &state.terminated {
                    columns.status = match t.reason.as_deref() {
                        Some(reason) if !reason.is_empty() => reason.to_owned(),
                        _ => match t.signal {
                            Some(signal) if signal != 0 => format!("Signal:{signal}"),
                            _ => format!("ExitCode:{}", t.exit_code),
                        },
                    };
                } else if c.ready && state.running.is_some() {
                    running = true;
                    columns.ready += 1;
                }
            }
            // A container still runs: not Completed.
            if columns.status == "Completed" && running {
                let ready = status
                    .conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                columns.status = if ready { "Running" } else { "NotReady" }.to_owned();
            }
        }
        // podkit's own: the supervisor died before the pod ended.
        if pod.phase() == "Unknown" {
            columns.status = "Unknown".to_owned();
        } else if pod.deletion().is_some() && !matches!(pod.phase(), "Succeeded" | "Failed") {
            columns.status = "Terminating".to_owned();
        }
        columns
    }
}

/// kubectl's short durations: 45s, 12m, 3h, 5d.
pub fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..120 => format!("{s}s"),
        120..7200 => format!("{}m", s / 60),
        7200..172_800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// A container's `Limits:` and `Requests:`, as `kubectl describe` prints them: requests with
/// the API server's defaulting (a limit without a request is the request).
fn write_resources(out: &mut String, resources: &serde_json::Value) {
    let limits = resources["limits"].as_object();
    let mut requests = resources["requests"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    for (name, value) in limits.into_iter().flatten() {
        requests
            .entry(name.clone())
            .or_insert_with(|| value.clone());
    }
    for (title, map) in [("Limits", limits), ("Requests", Some(&requests))] {
        let Some(map) = map.filter(|m| !m.is_empty()) else {
            continue;
        };
        let _ = writeln!(out, "    {title}:");
        for (name, value) in map {
            let value = value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_owned);
            let _ = writeln!(out, "      {:<15}{value}", format!("{name}:"));
        }
    }
}

/// The CNI network of a pod on one, and the outcome of a CNI CHECK of its attachment, run
/// here (CHECK changes nothing) while the pod's supervisor lives.
fn describe_cni(
    cached: &Result<Option<crate::supervisor::cni::Attachment>, crate::supervisor::cni::Error>,
    pod: &PodState,
) -> String {
    let attachment = match cached {
        Ok(Some(attachment)) => attachment,
        Ok(None) => return "CNI".to_owned(),
        Err(err) => return format!("CNI ({err})"),
    };
    let check = if pod.supervisor.is_none() {
        "not run (the pod's supervisor is gone)".to_owned()
    } else if attachment.result.is_none() {
        "not run (its ADD has not finished)".to_owned()
    } else if !nix::unistd::geteuid().is_root() {
        "not run (CNI plugins need root)".to_owned()
    } else if !attachment.list.at_least_0_4() {
        format!(
            "not run (cniVersion {} has no CHECK)",
            attachment.list.cni_version
        )
    } else if attachment.list.disable_check {
        "not run (the network list has disableCheck)".to_owned()
    } else {
        match attachment.check() {
            Ok(()) => "passed".to_owned(),
            Err(err) => format!("failed: {}", crate::supervisor::image::error_chain(&err)),
        }
    };
    format!(
        "CNI network {:?} ({}), interface {}\nCNI Check:    {check}",
        attachment.list.name,
        attachment.list.file.display(),
        attachment.if_name
    )
}

fn describe_one(pod: &PodState) -> String {
    let mut out = String::new();
    let status = pod.status.clone().unwrap_or_default();
    let spec = &pod.manifest["spec"];
    let _ = writeln!(out, "Name:         {}", pod.name);
    let _ = writeln!(
        out,
        "Namespace:    {}",
        pod.manifest["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
    );
    match pod.deletion() {
        // kubectl describe: `Terminating (lasts 5s)`.
        Some(since) => {
            let lasts = since.elapsed().unwrap_or_default().as_secs();
            let _ = writeln!(out, "Status:       Terminating (lasts {lasts}s)");
        }
        None => {
            let _ = writeln!(out, "Status:       {}", pod.phase());
        }
    }
    let plan = revalidate(pod);
    if let Some(reason) = &status.reason {
        let _ = writeln!(out, "Reason:       {reason}");
    }
    if let Some(message) = &status.message {
        let _ = writeln!(out, "Message:      {message}");
    }
    // kubectl's IP and IPs, and which network podkit gave the pod.
    let ip = status.pod_ip.as_deref().filter(|ip| !ip.is_empty());
    let _ = writeln!(out, "IP:           {}", ip.unwrap_or(""));
    if let Some(ips) = status.pod_ips.as_ref().filter(|ips| !ips.is_empty()) {
        let _ = writeln!(out, "IPs:");
        for ip in ips {
            let _ = writeln!(out, "  IP:  {}", ip.ip);
        }
    }
    let cni = crate::supervisor::cni::Attachment::load(&pod.dir);
    let network = match &plan {
        Some(plan) if plan.host_network => "the host's (hostNetwork)".to_owned(),
        Some(_) if matches!(cni, Ok(Some(_)) | Err(_)) => describe_cni(&cni, pod),
        Some(plan) if plan.pod_network => {
            "pod network (an address of its own on the host's bridge)".to_owned()
        }
        Some(_) => format!(
            "loopback only ({}: none; hostPorts through the relay)",
            crate::spec::NETWORK_ANNOTATION
        ),
        None => "unknown (the manifest no longer validates)".to_owned(),
    };
    let _ = writeln!(out, "Network:      {network}");
    // NetworkPolicies that select the pod, which podkit does not enforce.
    let policies = network_policies_of(
        pod.manifest["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default"),
        &pod.manifest["metadata"]["labels"],
    );
    if !policies.is_empty() {
        let _ = writeln!(
            out,
            "Network Policies:  {} (NOT ENFORCED: podkit filters no traffic between pods)",
            policies.join(", ")
        );
    }
    if let Some(plan) = &plan {
        describe_host_ports(&mut out, plan, ip);
    }
    let class = spec["runtimeClassName"].as_str();
    if let Some(class) = class {
        let _ = writeln!(out, "Runtime Class Name:  {class}");
    }
    // The runtime the supervisor found (its state root is made then), else the one it will use.
    let runtime = crate::supervisor::image::runtime_roots(&pod.dir)
        .into_iter()
        .next()
        .map(|(handler, _)| handler)
        .or_else(|| plan.as_ref().and_then(|p| p.runtime_handler.clone()))
        .unwrap_or_else(|| match class {
            Some(class) => format!("the handler of RuntimeClass {class:?}"),
            None => crate::supervisor::runtime::configured_handler()
                .ok()
                .flatten()
                .unwrap_or_else(|| crate::supervisor::runtime::DEFAULT_HANDLER.to_owned()),
        });
    let _ = writeln!(out, "State dir:    {}", pod.dir.display());
    match pod.supervisor {
        Some(pid) => {
            let _ = writeln!(out, "Supervisor:   pid {pid}");
        }
        None => {
            let _ = writeln!(out, "Supervisor:   not running");
        }
    }
    let devices = crate::supervisor::devices::allocated(&pod.dir);
    for (title, key, statuses) in [
        (
            "Init Containers",
            "initContainers",
            status.init_container_statuses.clone().unwrap_or_default(),
        ),
        (
            "Containers",
            "containers",
            status.container_statuses.clone().unwrap_or_default(),
        ),
    ] {
        let Some(list) = spec[key].as_array().filter(|l| !l.is_empty()) else {
            continue;
        };
        let _ = writeln!(out, "{title}:");
        for c in list {
            let name = c["name"].as_str().unwrap_or("");
            let _ = writeln!(out, "  {name}:");
            let command: Vec<&str> = c["command"]
                .as_array()
                .into_iter()
                .flatten()
                .chain(c["args"].as_array().into_iter().flatten())
                .filter_map(|v| v.as_str())
                .collect();
            let image = c["image"].as_str().unwrap_or("");
            let _ = writeln!(out, "    Image:         {image}");
            let runs = plan.as_ref().and_then(|plan| {
                plan.init_containers
                    .iter()
                    .chain(&plan.containers)
                    .find(|m| m.name == name)
                    .map(|m| &m.runs)
            });
            if runs == Some(&crate::spec::Runs::Host) {
                let _ = writeln!(
                    out,
                    "    Runs as:       a host process ({})",
                    crate::spec::HOST_PROCESS_ANNOTATION
                );
            } else {
                let id = statuses
                    .iter()
                    .find(|s| s.name == name)
                    .map_or("", |s| s.image_id.as_str());
                let _ = writeln!(out, "    Image ID:      {id}");
                let _ = writeln!(out, "    Runtime:       {runtime}");
            }
            if !command.is_empty() {
                let _ = writeln!(out, "    Command:       {}", command.join(" "));
            }
            // What `podkit attach` reaches: shown when set, as the spec has them.
            for (field, title) in [
                ("stdin", "Stdin"),
                ("stdinOnce", "StdinOnce"),
                ("tty", "TTY"),
            ] {
                if c[field] == true {
                    let _ = writeln!(out, "    {title}:{:pad$}true", "", pad = 14 - title.len());
                }
            }
            write_resources(&mut out, &c["resources"]);
            // The CDI devices that serve its extended resources.
            if let Some(names) = devices.0.get(name).filter(|n| !n.is_empty()) {
                let _ = writeln!(out, "    CDI Devices:   {}", names.join(", "));
            }
            if let Some(s) = statuses.iter().find(|s| s.name == name) {
                let _ = writeln!(out, "    State:         {}", state_text(s.state.as_ref()));
                if s.last_state
                    .as_ref()
                    .is_some_and(|l| l.terminated.is_some())
                {
                    let _ = writeln!(
                        out,
                        "    Last State:    {}",
                        state_text(s.last_state.as_ref())
                    );
                }
                let _ = writeln!(out, "    Ready:         {}", s.ready);
                let _ = writeln!(out, "    Restart Count: {}", s.restart_count);
            }
            for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
                if c[probe].is_object() {
                    let _ = writeln!(out, "    {}: {}", probe_title(probe), compact(&c[probe]));
                }
            }
            write_env(&mut out, c);
            for m in c["volumeMounts"].as_array().into_iter().flatten() {
                let ro = if m["readOnly"].as_bool() == Some(true) {
                    "ro"
                } else {
                    "rw"
                };
                let _ = writeln!(
                    out,
                    "    Mount:         {} from {} ({ro})",
                    m["mountPath"].as_str().unwrap_or(""),
                    m["name"].as_str().unwrap_or("")
                );
            }
        }
    }
    write_volumes(&mut out, &pod.manifest["spec"]["volumes"]);
    let _ = writeln!(out, "Conditions:\n  Type              Status");
    for c in status.conditions.iter().flatten() {
        let _ = writeln!(out, "  {:<17} {}", c.type_, c.status);
    }
    let qos = status
        .qos_class
        .clone()
        .or_else(|| plan.as_ref().map(|p| p.qos.as_str().to_owned()));
    if let Some(qos) = qos {
        let _ = writeln!(out, "QoS Class:    {qos}");
    }
    let (ignored, warnings) = plan
        .map(|plan| (plan.ignored, plan.warnings))
        .unwrap_or_default();
    if !ignored.is_empty() {
        let _ = writeln!(
            out,
            "Ignored fields (no meaning on one host): {}",
            ignored.join(", ")
        );
    }
    if !warnings.is_empty() {
        let _ = writeln!(out, "Warnings:");
        for warning in warnings {
            let _ = writeln!(out, "  {warning}");
        }
    }
    let events = state::events(pod);
    let _ = writeln!(out, "Events:");
    if events.is_empty() {
        let _ = writeln!(out, "  <none>");
    } else {
        let _ = writeln!(
            out,
            "  {:<8} {:<20} {:<30} {:<32} Message",
            "Type", "Reason", "Time", "From"
        );
        for e in events {
            let _ = writeln!(
                out,
                "  {:<8} {:<20} {:<30} {:<32} {}",
                e.kind, e.reason, e.time, e.object, e.message
            );
        }
    }
    out
}

/// The manifest's fields podkit ignores and its warnings, found by validating it again.
/// The pod's plan, validated again from its manifest: what `describe` says beyond the status.
fn revalidate(pod: &PodState) -> Option<crate::spec::PodPlan> {
    let text = pod.manifest.to_string();
    crate::spec::parse("pod.json", &text)
        .ok()
        .and_then(|plans| plans.into_iter().next())
}

fn probe_title(key: &str) -> &'static str {
    match key {
        "startupProbe" => "Startup",
        "livenessProbe" => "Liveness",
        _ => "Readiness",
    }
}

fn compact(value: &serde_json::Value) -> String {
    value.to_string()
}

fn state_text(state: Option<&k8s_openapi::api::core::v1::ContainerState>) -> String {
    let Some(state) = state else {
        return "Unknown".into();
    };
    if let Some(r) = &state.running {
        return format!(
            "Running (since {})",
            r.started_at
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_default()
        );
    }
    if let Some(w) = &state.waiting {
        return format!("Waiting ({})", w.reason.clone().unwrap_or_default());
    }
    if let Some(t) = &state.terminated {
        return format!(
            "Terminated ({}, exit code {})",
            t.reason.clone().unwrap_or_default(),
            t.exit_code
        );
    }
    "Unknown".into()
}

/// Where a claim's volume lives (this command's storage).
fn claim_dir_of(namespace: &str, name: &str) -> std::path::PathBuf {
    crate::objects::Store::new(&super::storage()).claim_dir(namespace, name)
}

/// The pods (of `namespace`) that mount the claim `name`, by name.
pub(super) fn claim_users(root: &Path, namespace: &str, name: &str) -> Vec<String> {
    let Ok(pods) = state::list(root) else {
        return Vec::new();
    };
    pods.iter()
        .filter(|p| {
            p.manifest["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                == namespace
        })
        .filter(|p| {
            p.manifest["spec"]["volumes"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|v| v["persistentVolumeClaim"]["claimName"].as_str() == Some(name))
        })
        .map(|p| p.name.clone())
        .collect()
}

/// A container's environment as `kubectl describe` shows it: literals, and where each
/// reference reads from (never a Secret's value).
fn write_env(out: &mut String, c: &serde_json::Value) {
    let optional = |r: &serde_json::Value| r["optional"].as_bool().unwrap_or(false);
    let env = c["env"].as_array().cloned().unwrap_or_default();
    if !env.is_empty() {
        let _ = writeln!(out, "    Environment:");
        for e in env {
            let name = e["name"].as_str().unwrap_or("");
            let from = &e["valueFrom"];
            let value = if let Some(v) = e["value"].as_str() {
                v.to_owned()
            } else if from["configMapKeyRef"].is_object() {
                let r = &from["configMapKeyRef"];
                format!(
                    "<set to the key '{}' of config map '{}'>  Optional: {}",
                    r["key"].as_str().unwrap_or(""),
                    r["name"].as_str().unwrap_or(""),
                    optional(r)
                )
            } else if from["secretKeyRef"].is_object() {
                let r = &from["secretKeyRef"];
                format!(
                    "<set to the key '{}' in secret '{}'>  Optional: {}",
                    r["key"].as_str().unwrap_or(""),
                    r["name"].as_str().unwrap_or(""),
                    optional(r)
                )
            } else if from["fieldRef"].is_object() {
                format!(
                    "(v1:{})",
                    from["fieldRef"]["fieldPath"].as_str().unwrap_or("")
                )
            } else if from["resourceFieldRef"].is_object() {
                let r = &from["resourceFieldRef"];
                format!(
                    "{} ({})",
                    r["containerName"].as_str().unwrap_or(""),
                    r["resource"].as_str().unwrap_or("")
                )
            } else {
                String::new()
            };
            let _ = writeln!(out, "      {name}:  {value}");
        }
    }
    let from = c["envFrom"].as_array().cloned().unwrap_or_default();
    if !from.is_empty() {
        let _ = writeln!(out, "    Environment Variables from:");
        for f in from {
            let (r, kind) = if f["configMapRef"].is_object() {
                (&f["configMapRef"], "ConfigMap")
            } else {
                (&f["secretRef"], "Secret")
            };
            let prefix = f["prefix"]
                .as_str()
                .map(|p| format!(" with prefix '{p}'"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "      {}  {kind}{prefix}  Optional: {}",
                r["name"].as_str().unwrap_or(""),
                optional(r)
            );
        }
    }
}

/// The pod's volumes as `kubectl describe` lists them: each one's type and what it reads.
fn write_volumes(out: &mut String, volumes: &serde_json::Value) {
    let volumes = volumes.as_array().cloned().unwrap_or_default();
    if volumes.is_empty() {
        return;
    }
    let _ = writeln!(out, "Volumes:");
    for v in volumes {
        let _ = writeln!(out, "  {}:", v["name"].as_str().unwrap_or(""));
        let text = |x: &serde_json::Value| x.as_str().unwrap_or("").to_owned();
        let lines: Vec<(&str, String)> = if v["configMap"].is_object() {
            vec![
                (
                    "Type",
                    "ConfigMap (a volume populated by a ConfigMap)".into(),
                ),
                ("Name", text(&v["configMap"]["name"])),
                (
                    "Optional",
                    v["configMap"]["optional"]
                        .as_bool()
                        .unwrap_or(false)
                        .to_string(),
                ),
            ]
        } else if v["secret"].is_object() {
            vec![
                ("Type", "Secret (a volume populated by a Secret)".into()),
                ("SecretName", text(&v["secret"]["secretName"])),
                (
                    "Optional",
                    v["secret"]["optional"]
                        .as_bool()
                        .unwrap_or(false)
                        .to_string(),
                ),
            ]
        } else if v["projected"].is_object() {
            let sources: Vec<String> = v["projected"]["sources"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| {
                    if s["configMap"].is_object() {
                        format!("ConfigMap {}", text(&s["configMap"]["name"]))
                    } else if s["secret"].is_object() {
                        format!("Secret {}", text(&s["secret"]["name"]))
                    } else {
                        "DownwardAPI".to_owned()
                    }
                })
                .collect();
            vec![
                (
                    "Type",
                    "Projected (a volume that contains injected data from multiple sources)".into(),
                ),
                ("Sources", sources.join(", ")),
            ]
        } else if v["persistentVolumeClaim"].is_object() {
            vec![
                ("Type", "PersistentVolumeClaim (a reference to a PersistentVolumeClaim in the same namespace)".into()),
                ("ClaimName", text(&v["persistentVolumeClaim"]["claimName"])),
                ("ReadOnly", v["persistentVolumeClaim"]["readOnly"].as_bool().unwrap_or(false).to_string()),
            ]
        } else if v["hostPath"].is_object() {
            vec![
                ("Type", "HostPath (bare host directory volume)".into()),
                ("Path", text(&v["hostPath"]["path"])),
                ("HostPathType", text(&v["hostPath"]["type"])),
            ]
        } else if v["downwardAPI"].is_object() {
            vec![(
                "Type",
                "DownwardAPI (a volume populated by information about the pod)".into(),
            )]
        } else {
            let medium = text(&v["emptyDir"]["medium"]);
            vec![
                (
                    "Type",
                    "EmptyDir (a temporary directory that shares a pod's lifetime)".into(),
                ),
                ("Medium", medium),
            ]
        };
        for (key, value) in lines {
            let _ = writeln!(out, "    {:<14}{value}", format!("{key}:"));
        }
    }
}

/// The pod's hostPorts and how each reaches it: the relay, the DNAT, and the connect hook for
/// the host's own clients where the hook has the port.
fn describe_host_ports(out: &mut String, plan: &crate::spec::PodPlan, ip: Option<&str>) {
    let ports: Vec<&crate::spec::HostPort> = plan
        .init_containers
        .iter()
        .chain(&plan.containers)
        .flat_map(|m| &m.host_ports)
        .collect();
    if ports.is_empty() {
        return;
    }
    let pod_ip: Option<std::net::Ipv4Addr> = ip.and_then(|ip| ip.parse().ok());
    let hooked: Vec<String> = match (pod_ip, plan.host_port_hook) {
        (Some(pod_ip), true) => netns::ConnectHook::open(crate::supervisor::network::HOOK_DIR)
            .ok()
            .flatten()
            .and_then(|hook| hook.ports().ok())
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, to, _)| *to == pod_ip)
            .map(|(side, _, _)| side)
            .collect(),
        _ => Vec::new(),
    };
    let _ = writeln!(out, "Host Ports:");
    for port in ports {
        let protocol = if port.udp { "udp" } else { "tcp" };
        let side = match port.host_ip {
            Some(host) if !host.is_unspecified() => format!("{host}:{}/{protocol}", port.host_port),
            _ => format!("{}/{protocol}", port.host_port),
        };
        let how = if port.relay || pod_ip.is_none() {
            "relay into the pod's loopback"
        } else if hooked.contains(&side) {
            "DNAT; connect hook for the host's own clients"
        } else {
            "DNAT"
        };
        let target = match (port.relay, pod_ip) {
            (false, Some(pod_ip)) => format!("{pod_ip}:{}", port.container_port),
            _ => format!("127.0.0.1:{}", port.container_port),
        };
        let _ = writeln!(out, "  {side} -> {target}  {how}");
    }
}
