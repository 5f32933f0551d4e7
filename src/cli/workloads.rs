//! `podkit scale`, `podkit rollout status`, and Deployments as `get` and `describe` show them.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::controller;
use crate::objects::Store;
use crate::spec::ObjectKind;
use crate::state::PodState;

use super::parse_duration;

/// Set the number of replicas of a Deployment; its controller adds or removes pods.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  podkit scale deployment web --replicas 5
  podkit scale deploy/web --replicas 0")]
pub struct ScaleArgs {
    /// `deployment NAME` or `deployment/NAME` (also `deploy`).
    #[arg(value_name = "KIND NAME", num_args = 1..=2, required = true)]
    what: Vec<String>,

    /// The new number of pods.
    #[arg(long, value_name = "N")]
    replicas: u32,

    #[arg(short = 'n', long, value_name = "NAMESPACE", default_value = "default")]
    namespace: String,
}

/// Follow a Deployment's rollout until its pods are all of its template and available.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  podkit rollout status deployment/web
  podkit rollout status deploy web --timeout 2m

Exit codes: 0 when the rollout is complete, 1 when the timeout passed first.")]
pub struct RolloutArgs {
    /// `status`.
    #[arg(value_parser = ["status"])]
    action: String,

    /// `deployment NAME` or `deployment/NAME`.
    #[arg(value_name = "KIND NAME", num_args = 1..=2, required = true)]
    what: Vec<String>,

    #[arg(short = 'n', long, value_name = "NAMESPACE", default_value = "default")]
    namespace: String,

    /// How long to wait, like 30s or 5m.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    timeout: Duration,
}

/// The Deployment's name from `deployment NAME` or `deployment/NAME`.
fn deployment_name(what: &[String]) -> anyhow::Result<String> {
    let (kind, name) = match what {
        [one] => one
            .split_once('/')
            .map(|(k, n)| (k.to_owned(), n.to_owned()))
            .with_context(|| format!("{one:?}: say deployment/NAME or deployment NAME"))?,
        [kind, name] => (kind.clone(), name.clone()),
        _ => bail!("say deployment/NAME or deployment NAME"),
    };
    match kind.as_str() {
        "deployment" | "deployments" | "deploy" => Ok(name),
        other => bail!("podkit scales and rolls out deployments only, not {other:?}"),
    }
}

pub fn scale(root: &Path, storage: &Path, args: ScaleArgs) -> anyhow::Result<ExitCode> {
    let name = deployment_name(&args.what)?;
    let store = Store::new(storage);
    let Some(mut object) = store.get(ObjectKind::Deployment, &args.namespace, &name)? else {
        bail!(
            "deployment {name:?} not found in namespace {:?}",
            args.namespace
        );
    };
    object["spec"]["replicas"] = args.replicas.into();
    let kept = crate::spec::Object {
        kind: ObjectKind::Deployment,
        namespace: args.namespace.clone(),
        name: name.clone(),
        value: object,
        immutable: false,
    };
    store.put(&kept)?;
    controller::ensure(
        root,
        storage,
        ObjectKind::Deployment,
        &args.namespace,
        &name,
    )?;
    println!("deployment.apps/{name} scaled");
    Ok(ExitCode::SUCCESS)
}

/// What a Deployment's pods are: (desired, updated, total, ready/available).
pub struct Counts {
    pub replicas: u32,
    pub updated: u32,
    pub total: u32,
    pub available: u32,
}

pub fn counts(root: &Path, deployment: &Value) -> Counts {
    let namespace = deployment["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default");
    let name = deployment["metadata"]["name"].as_str().unwrap_or("");
    let hash = controller::template_hash(deployment);
    let pods: Vec<PodState> = controller::owned_pods(root, namespace, name)
        .into_iter()
        .filter(|p| p.deletion().is_none() && matches!(p.phase(), "Pending" | "Running"))
        .collect();
    let ready = |p: &PodState| {
        p.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
    };
    Counts {
        replicas: deployment["spec"]["replicas"].as_u64().unwrap_or(1) as u32,
        updated: pods
            .iter()
            .filter(|p| p.manifest["metadata"]["labels"]["pod-template-hash"] == hash.as_str())
            .count() as u32,
        total: pods.len() as u32,
        available: pods.iter().filter(|p| ready(p)).count() as u32,
    }
}

pub fn rollout(root: &Path, storage: &Path, args: RolloutArgs) -> anyhow::Result<ExitCode> {
    let name = deployment_name(&args.what)?;
    let store = Store::new(storage);
    controller::ensure_all(root, storage);
    let deadline = Instant::now() + args.timeout;
    let mut said = String::new();
    loop {
        let Some(object) = store.get(ObjectKind::Deployment, &args.namespace, &name)? else {
            bail!(
                "deployment {name:?} not found in namespace {:?}",
                args.namespace
            );
        };
        let c = counts(root, &object);
        let line = if c.updated < c.replicas {
            format!(
                "Waiting for deployment {name:?} rollout to finish: {} out of {} new replicas have been updated...",
                c.updated, c.replicas
            )
        } else if c.total > c.updated {
            format!(
                "Waiting for deployment {name:?} rollout to finish: {} old replicas are pending termination...",
                c.total - c.updated
            )
        } else if c.available < c.updated {
            format!(
                "Waiting for deployment {name:?} rollout to finish: {} of {} updated replicas are available...",
                c.available, c.updated
            )
        } else {
            println!("deployment {name:?} successfully rolled out");
            return Ok(ExitCode::SUCCESS);
        };
        if line != said {
            println!("{line}");
            said = line;
        }
        if Instant::now() > deadline {
            eprintln!(
                "error: timed out waiting for the rollout of deployment {name:?} ({}s)",
                args.timeout.as_secs()
            );
            return Ok(ExitCode::FAILURE);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// kubectl's table of Deployments: NAME READY UP-TO-DATE AVAILABLE AGE.
pub fn table(
    root: &Path,
    deployments: &[Value],
    namespaces: bool,
    age: &dyn Fn(&Value) -> String,
) -> String {
    if deployments.is_empty() {
        return String::new();
    }
    let mut header: Vec<String> = ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
        .map(str::to_owned)
        .to_vec();
    if namespaces {
        header.insert(0, "NAMESPACE".to_owned());
    }
    let mut rows = vec![header];
    for d in deployments {
        let c = counts(root, d);
        let mut row = Vec::new();
        if namespaces {
            row.push(d["metadata"]["namespace"].as_str().unwrap_or("").to_owned());
        }
        row.push(d["metadata"]["name"].as_str().unwrap_or("").to_owned());
        row.push(format!("{}/{}", c.available, c.replicas));
        row.push(c.updated.to_string());
        row.push(c.available.to_string());
        row.push(age(d));
        rows.push(row);
    }
    super::render_table(&rows, "   ")
}

/// `kubectl describe deployment`, with its controller and pods.
pub fn describe(root: &Path, d: &Value) -> String {
    let mut out = String::new();
    let ns = d["metadata"]["namespace"].as_str().unwrap_or("default");
    let name = d["metadata"]["name"].as_str().unwrap_or("");
    let c = counts(root, d);
    let selector: Vec<String> = d["spec"]["selector"]["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    let _ = writeln!(out, "Name:                   {name}");
    let _ = writeln!(out, "Namespace:              {ns}");
    let _ = writeln!(out, "Selector:               {}", selector.join(","));
    let _ = writeln!(
        out,
        "Replicas:               {} desired | {} updated | {} total | {} available | {} unavailable",
        c.replicas,
        c.updated,
        c.total,
        c.available,
        c.total.saturating_sub(c.available)
    );
    let strategy = &d["spec"]["strategy"];
    let _ = writeln!(
        out,
        "StrategyType:           {}",
        strategy["type"].as_str().unwrap_or("")
    );
    if strategy["type"] == "RollingUpdate" {
        let _ = writeln!(
            out,
            "RollingUpdateStrategy:  {} max unavailable, {} max surge",
            strategy["rollingUpdate"]["maxUnavailable"]
                .to_string()
                .trim_matches('"'),
            strategy["rollingUpdate"]["maxSurge"]
                .to_string()
                .trim_matches('"')
        );
    }
    let _ = writeln!(
        out,
        "Pod template hash:      {}",
        controller::template_hash(d)
    );
    let _ = writeln!(
        out,
        "Controller:             {}",
        controller::pid(root, ObjectKind::Deployment, ns, name).map_or_else(
            || "not running (the next podkit get or apply starts it)".to_owned(),
            |pid| format!(
                "pid {pid} (log: {})",
                controller::controller_dir(root, ObjectKind::Deployment, ns, name)
                    .join("controller.log")
                    .display()
            )
        )
    );
    let pods: Vec<String> = controller::owned_pods(root, ns, name)
        .iter()
        .map(|p| format!("{} ({})", p.name, p.phase()))
        .collect();
    let _ = writeln!(
        out,
        "Pods:                   {}",
        if pods.is_empty() {
            "<none>".to_owned()
        } else {
            pods.join(", ")
        }
    );
    out
}
