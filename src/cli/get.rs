//! `podkit get` and `podkit describe`: pods as kubectl shows them.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::PodStatus;

use crate::state::{self, PodState};

/// Show pods.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  podkit get pods
  podkit get pod web -o yaml
  podkit get pods -o name")]
pub struct GetArgs {
    /// What to get: `pods` (also `pod`, `po`).
    #[arg(value_name = "pods")]
    kind: String,

    /// Only these pods.
    names: Vec<String>,

    /// Output format: wide, json, yaml or name (default: a table).
    #[arg(short, long, value_name = "FORMAT")]
    output: Option<String>,
}

/// Show the details of pods: containers, conditions, ignored fields, events.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  podkit describe pod web
  podkit describe pods          (every pod)")]
pub struct DescribeArgs {
    /// `pod` (also `pods`, `po`).
    #[arg(value_name = "pod")]
    kind: String,

    /// The pods to describe (all when none is named).
    names: Vec<String>,
}

pub fn get(root: &Path, args: GetArgs) -> anyhow::Result<()> {
    check_kind(&args.kind)?;
    let pods = select(root, &args.names)?;
    if pods.is_empty() {
        eprintln!("No resources found");
        return Ok(());
    }
    match args.output.as_deref() {
        None => print!("{}", table(&pods, false)),
        Some("wide") => print!("{}", table(&pods, true)),
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
            if format == "json" {
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                print!(
                    "{}",
                    serde_saphyr::to_string(&value).context("failed to write YAML")?
                );
            }
        }
        Some(other) => bail!("unknown output format {other:?}: use wide, json, yaml or name"),
    }
    Ok(())
}

pub fn describe(root: &Path, args: DescribeArgs) -> anyhow::Result<()> {
    check_kind(&args.kind)?;
    let pods = select(root, &args.names)?;
    let texts: Vec<String> = pods.iter().map(describe_one).collect();
    print!("{}", texts.join("\n\n"));
    Ok(())
}

fn check_kind(kind: &str) -> anyhow::Result<()> {
    match kind {
        "pod" | "pods" | "po" => Ok(()),
        other => bail!("podkit knows only pods, not {other:?}"),
    }
}

/// The named pods (each must exist), or all of them.
pub fn select(root: &Path, names: &[String]) -> anyhow::Result<Vec<PodState>> {
    if names.is_empty() {
        return Ok(state::list(root)?);
    }
    names
        .iter()
        .map(|name| Ok(state::read(root, name)?))
        .collect()
}

fn table(pods: &[PodState], wide: bool) -> String {
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
        if wide {
            row.extend(["<none>".into(), node.clone()]);
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
            None => crate::supervisor::runtime::DEFAULT_HANDLER.to_owned(),
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
            write_resources(&mut out, &c["resources"]);
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
