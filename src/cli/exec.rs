//! `podkit exec`: a command inside a running container.

use std::path::Path;
use std::process::{Command, ExitCode};

use anyhow::{Context, bail};
use netns::{Namespace, Namespaces, NsKind, Setup};

use crate::state;

/// Run a command inside a container of a pod.
///
/// The command joins the container's namespaces (network, IPC, UTS, PID, mount: it sees the
/// container's volumes and processes), with its environment and working directory. Its exit code
/// is podkit's.
///
/// Examples:
///   podkit exec web -- cat /etc/hostname
///   podkit exec web -c proxy -- sh -c 'ls /content'
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct ExecArgs {
    /// The pod.
    pod: String,

    /// The container (default: the pod's first container).
    #[arg(short, long)]
    container: Option<String>,

    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

pub fn exec(root: &Path, args: ExecArgs) -> anyhow::Result<ExitCode> {
    let pod = state::read(root, &args.pod)?;
    let containers: Vec<String> = pod.manifest["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(
            pod.manifest["spec"]["initContainers"]
                .as_array()
                .into_iter()
                .flatten(),
        )
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect();
    let container = match args.container {
        Some(name) if containers.contains(&name) => name,
        Some(name) => bail!(
            "container {name:?} is not valid for pod {:?}: choose one of: {}",
            pod.name,
            containers.join(", ")
        ),
        None => containers
            .first()
            .context("the pod has no containers")?
            .clone(),
    };
    let pid_file = pod.dir.join("members").join(format!("{container}.pid"));
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .with_context(|| {
            format!(
                "container {container:?} of pod {:?} is not running",
                pod.name
            )
        })?;

    let mut kinds = vec![NsKind::Net, NsKind::Ipc, NsKind::Uts, NsKind::Mnt];
    if pod.dir.join("ns/pid").exists() {
        kinds.push(NsKind::Pid);
    }
    let namespaces = Namespaces::new(
        kinds
            .into_iter()
            .map(|kind| Namespace::from_pid(kind, pid))
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| {
                format!(
                    "container {container:?} of pod {:?} is not running",
                    pod.name
                )
            })?,
    );
    // The container's own environment and directory, as it has them now.
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    let env: Vec<(String, String)> = environ
        .split(|b| *b == 0)
        .filter_map(|kv| {
            let kv = String::from_utf8(kv.to_vec()).ok()?;
            let (k, v) = kv.split_once('=')?;
            Some((k.to_owned(), v.to_owned()))
        })
        .collect();
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_else(|_| "/".into());
    let uid_gid = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .map(|status| {
            let field = |name: &str| {
                status.lines().find_map(|l| {
                    l.strip_prefix(name)?
                        .split_whitespace()
                        .next()?
                        .parse::<u32>()
                        .ok()
                })
            };
            (field("Uid:"), field("Gid:"))
        });
    let (uid, gid) = uid_gid.unwrap_or((None, None));
    let setup = Setup::new()
        .chdir(&cwd)?
        .user(uid.filter(|u| *u != 0), gid.filter(|g| *g != 0));

    let mut cmd = Command::new(&args.command[0]);
    cmd.args(&args.command[1..]).env_clear().envs(env);
    let mut child = namespaces.spawn_with(&mut cmd, setup).with_context(|| {
        format!(
            "failed to run {:?} in container {container:?}",
            args.command[0]
        )
    })?;
    let status = child.wait()?;
    Ok(match status.code() {
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        // Killed by a signal: 128 + the signal, as shells report it.
        None => {
            let signal = std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0);
            ExitCode::from(u8::try_from(128 + signal).unwrap_or(1))
        }
    })
}
