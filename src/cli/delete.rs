//! `podkit delete` and `podkit gc`.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::spec;
use crate::state::{self, PodState, TERMINATING};

/// Delete pods (gracefully, as kubelet would: preStop hooks, SIGTERM, SIGKILL at the grace
/// period; then everything the pod made is removed), ConfigMaps and Secrets.
///
/// A pod whose supervisor died (shown as Unknown) is cleaned up at once: its processes killed,
/// its mounts and namespace pins removed, with a line for each thing removed. `-f` deletes
/// everything the manifest holds: its pods first, then its ConfigMaps and Secrets.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  podkit delete pod web
  podkit delete -f web.yaml
  podkit delete configmap app-config
  podkit delete secret db-password -n shop
  podkit delete pvc data            (its data too; refused while a pod mounts it)
  podkit delete pod web --wait=false
  podkit delete pod web --grace-period 5
  podkit delete pod web --now

Exit codes: 0 when everything named was deleted (or was not there, with --ignore-not-found), \
1 when one was not found or could not be \
deleted.")]
pub struct DeleteArgs {
    /// The kind (`pod`, `configmap`, `secret`, `persistentvolumeclaim`, or kubectl's short
    /// names `po`, `cm`, `pvc`), then the names.
    #[arg(value_name = "KIND NAME")]
    what: Vec<String>,

    /// The namespace of what is named.
    #[arg(short = 'n', long, value_name = "NAMESPACE", default_value = "default")]
    namespace: String,

    /// Delete everything this manifest holds (several `-f`: each).
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "FILE",
        conflicts_with = "what"
    )]
    file: Vec<std::path::PathBuf>,

    /// Wait until the pods are gone.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    wait: bool,

    /// Seconds the pods get to stop, instead of their terminationGracePeriodSeconds.
    #[arg(long, value_name = "SECONDS")]
    grace_period: Option<u64>,

    /// Stop at once: a grace period of 1 second.
    #[arg(long, conflicts_with = "grace_period")]
    now: bool,

    /// Stop without waiting at all: a grace period of 0 (SIGKILL after preStop hooks).
    #[arg(long, conflicts_with_all = ["grace_period", "now"])]
    force: bool,

    /// What is not there is no error (a Job its TTL removed, a pod deleted before).
    #[arg(long)]
    ignore_not_found: bool,
}

/// Remove what pods whose supervisor died left behind (processes, mounts, namespace pins,
/// state), with a line for each thing removed; start again the controllers of workloads
/// that died.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  podkit gc")]
pub struct GcArgs {}

pub fn delete(
    root: &Path,
    storage: &Path,
    args: DeleteArgs,
) -> anyhow::Result<std::process::ExitCode> {
    // The objects to delete after the pods: (kind, namespace, name).
    let mut objects: Vec<(spec::ObjectKind, String, String)> = Vec::new();
    // The pods: (namespace, name).
    let names: Vec<(String, String)> = match (args.file.first(), args.what.split_first()) {
        (Some(_), _) => {
            let manifest = spec::load_manifests(&args.file)?;
            objects = manifest
                .objects
                .iter()
                .map(|o| (o.kind, o.namespace.clone(), o.name.clone()))
                .collect();
            manifest
                .pods
                .into_iter()
                .map(|p| (p.namespace, p.name))
                .collect()
        }
        (None, Some((kind, names))) => match (super::get::Kind::parse(kind)?, names) {
            (super::get::Kind::Pod, []) => {
                bail!("name the pods to delete: podkit delete pod NAME")
            }
            (super::get::Kind::Endpoints, _) => {
                bail!(
                    "a Service's Endpoints are kept by its controller and go with the \
                     Service: podkit delete svc NAME"
                )
            }
            (super::get::Kind::Pod, names) => names
                .iter()
                .map(|n| (args.namespace.clone(), n.clone()))
                .collect(),
            (super::get::Kind::Object(kind), []) => {
                bail!(
                    "name the {}s to delete: podkit delete {} NAME",
                    kind.kind(),
                    kind.lower()
                )
            }
            (super::get::Kind::Object(kind), names) => {
                objects = names
                    .iter()
                    .map(|n| (kind, args.namespace.clone(), n.clone()))
                    .collect();
                Vec::new()
            }
        },
        (None, None) => bail!("name what to delete (podkit delete pod NAME), or give -f FILE"),
    };
    // Workloads before what their pods read (a claim is refused while a pod mounts it).
    objects.sort_by_key(|(kind, _, _)| !kind.is_workload());
    let mut failed = false;
    for (namespace, name) in names {
        let pod = match state::read(root, &namespace, &name) {
            Ok(pod) => pod,
            Err(err @ state::StateError::NotFound { .. }) => {
                if !args.ignore_not_found {
                    eprintln!("{err}");
                    failed = true;
                }
                continue;
            }
            Err(err) => return Err(err.into()),
        };
        let grace = match (args.force, args.now) {
            (true, _) => Some(0),
            (_, true) => Some(1),
            _ => args.grace_period,
        };
        match delete_one(root, &pod, args.wait, grace) {
            Ok(()) => println!("pod {name:?} deleted"),
            Err(err) => {
                eprintln!("error: pod {name:?}: {err:#}");
                failed = true;
            }
        }
    }
    // Pods that read a deleted object keep what they read, as under kubelet.
    let store = crate::objects::Store::new(storage);
    for (kind, namespace, name) in objects {
        // A claim's data goes with it: never while a pod mounts it (a cluster keeps such a
        // claim Terminating until the pod is gone).
        if kind == spec::ObjectKind::PersistentVolumeClaim {
            let users = super::get::claim_users(root, &namespace, &name);
            if !users.is_empty() {
                eprintln!(
                    "error: persistentvolumeclaim {name:?} is in use by pod {}: delete the pod \
                     first (its data is removed with the claim)",
                    users.join(", ")
                );
                failed = true;
                continue;
            }
        }
        if kind.is_workload() {
            // Its controller stopped first (it would replace the pods), then every pod told,
            // then waited for: they stop side by side.
            match crate::controller::remove(root, storage, kind, &namespace, &name) {
                Ok(removed) if removed.found => {
                    // A StatefulSet's claims go once its pods are gone: waited for then too.
                    if args.wait || !removed.claims.is_empty() {
                        for pod in &removed.pods {
                            if let Err(err) = wait_gone(root, pod) {
                                eprintln!("error: pod {:?}: {err:#}", pod.name);
                                failed = true;
                            }
                        }
                    }
                    println!("{} {name:?} deleted", kind.printed());
                    // A StatefulSet's claims with whenDeleted: Delete, once its pods are gone.
                    for claim in removed.claims {
                        match store.delete(
                            spec::ObjectKind::PersistentVolumeClaim,
                            &namespace,
                            &claim,
                        ) {
                            Ok(true) => println!("persistentvolumeclaim {claim:?} deleted"),
                            Ok(false) => {}
                            Err(err) => {
                                eprintln!("error: persistentvolumeclaim {claim:?}: {err:#}");
                                failed = true;
                            }
                        }
                    }
                }
                Ok(_) if args.ignore_not_found => {}
                Ok(_) => {
                    eprintln!(
                        "{} {name:?} not found in namespace {namespace:?}",
                        kind.lower()
                    );
                    failed = true;
                }
                Err(err) => {
                    eprintln!("error: {} {name:?}: {err:#}", kind.lower());
                    failed = true;
                }
            }
            continue;
        }
        let removed = if kind == spec::ObjectKind::Service {
            // Its controller stopped, its rules and names removed with it.
            crate::controller::remove(root, storage, kind, &namespace, &name).map(|r| r.found)
        } else {
            store
                .delete(kind, &namespace, &name)
                .map_err(anyhow::Error::from)
        };
        match removed {
            Ok(true) => println!("{} {name:?} deleted", kind.printed()),
            Ok(false) if args.ignore_not_found => {}
            Ok(false) => {
                eprintln!(
                    "{} {name:?} not found in namespace {namespace:?}",
                    kind.lower()
                );
                failed = true;
            }
            Err(err) => {
                eprintln!("error: {} {name:?}: {err:#}", kind.lower());
                failed = true;
            }
        }
    }
    Ok(if failed {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    })
}

fn delete_one(root: &Path, pod: &PodState, wait: bool, grace: Option<u64>) -> anyhow::Result<()> {
    if pod.supervisor.is_none() {
        // No supervisor: an ended pod's kept state, or a crashed pod's leftovers.
        for line in state::clean_up(pod) {
            println!("{line}");
        }
        return Ok(());
    }
    request_delete(pod, grace)?;
    if !wait {
        return Ok(());
    }
    wait_gone(root, pod)
}

/// Waits until the pod being deleted is gone (its state removed by its supervisor, or by this
/// when the supervisor ended without).
fn wait_gone(root: &Path, pod: &PodState) -> anyhow::Result<()> {
    // The supervisor bounds the stop by the grace period; the margin covers hooks and teardown.
    let grace = pod.manifest["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap_or(30);
    let deadline = Instant::now() + Duration::from_secs(grace + 30);
    // Woken by the supervisor's exit (it removes the pod's directory, then ends): not by
    // inotify, whose descriptor takes 8 to 16 ms to close on a busy host (see `Changes`).
    let mut changes = pod
        .supervisor
        .and_then(super::apply::Changes::until_exit)
        .unwrap_or_else(|| super::apply::Changes::new(root, &pod.namespace, &pod.name));
    loop {
        match state::read(root, &pod.namespace, &pod.name) {
            Err(state::StateError::NotFound { .. }) => return Ok(()),
            // Gone, and another pod made under its name (a StatefulSet's).
            Ok(now) if now.manifest["metadata"]["uid"] != pod.manifest["metadata"]["uid"] => {
                return Ok(());
            }
            Ok(now) if now.supervisor.is_none() => {
                // The supervisor ended without removing the pod (it was killed): finish for it.
                for line in state::clean_up(&now) {
                    println!("{line}");
                }
                return Ok(());
            }
            _ if Instant::now() > deadline => bail!(
                "still terminating after {}s; try again, or podkit gc once its supervisor is gone",
                grace + 30
            ),
            // Woken when the pod's directory is renamed away (its supervisor removes it so).
            _ => changes.wait(),
        }
    }
}

/// Asks the pod's supervisor to delete it (with `grace`, else its own grace period), without
/// waiting: the Terminating marker `get` shows, then the pod's API, or SIGTERM when the API does
/// not answer. A pod (or supervisor) gone meanwhile, deleted by another (a Deployment's
/// controller), is no error.
pub(crate) fn request_delete(pod: &PodState, grace: Option<u64>) -> anyhow::Result<()> {
    let Some(pid) = pod.supervisor else {
        return Ok(());
    };
    match std::fs::write(pod.dir.join(TERMINATING), "") {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err.into()),
    }
    if let Err(err) = api_delete(&pod.dir, grace) {
        if grace.is_some() {
            eprintln!(
                "warning: pod {:?}: the API did not answer ({err:#}): deleting with its own grace period",
                pod.name
            );
        }
        let supervisor = nix::unistd::Pid::from_raw(pid as i32);
        match nix::sys::signal::kill(supervisor, nix::sys::signal::Signal::SIGTERM) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok(())
}

/// `DELETE /pod[?gracePeriodSeconds=N]` on the pod's `api.sock`.
fn api_delete(dir: &Path, grace: Option<u64>) -> anyhow::Result<()> {
    let uri = match grace {
        Some(seconds) => format!("/pod?gracePeriodSeconds={seconds}"),
        None => "/pod".to_owned(),
    };
    super::client::request(dir, hyper::Method::DELETE, &uri, async |response| {
        anyhow::ensure!(
            response.status() == hyper::StatusCode::ACCEPTED,
            "{}",
            super::client::error_text(response).await
        );
        Ok(())
    })?
}

pub fn gc(root: &Path, storage: &Path, _args: GcArgs) -> anyhow::Result<()> {
    // Controllers that died are started again first: they own pods gc must not take for
    // orphans, and they clean up after their own.
    crate::controller::ensure_all(root, storage);
    let mut cleaned = 0;
    for pod in state::list(root)? {
        if pod.phase() != "Unknown" {
            continue;
        }
        println!("pod {:?} (its supervisor is gone):", pod.name);
        for line in state::clean_up(&pod) {
            println!("  {line}");
        }
        cleaned += 1;
    }
    // Addresses of pods whose supervisor was killed before it could give them back, of
    // every podkit root on the host (a lease's owner is its pod's state directory).
    let mut released =
        crate::supervisor::network::release_gone(|owner| state::supervisor_of(owner).is_none());
    // And devices.
    released.extend(crate::supervisor::devices::release_gone(|owner| {
        state::supervisor_of(owner).is_none()
    }));
    // CNI DELs that failed when their pod ended, tried again.
    released.extend(crate::supervisor::cni::retry_kept());
    for line in &released {
        println!("{line}");
    }
    let swept = crate::controller::service::sweep(root, storage);
    for line in &swept {
        println!("{line}");
    }
    if cleaned == 0 && released.is_empty() && swept.is_empty() {
        println!("nothing to clean up");
    }
    Ok(())
}
