//! `podkit logs`: a container's output from its CRI log files, as kubectl shows it.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::state::{self, PodState};

/// Print the logs of a container in a pod.
///
/// Reads the CRI-format files the supervisor writes (one per run of a container), so it works
/// after the pod ended, while its state is kept.
///
/// Examples:
///   podkit logs web
///   podkit logs web -c proxy -f
///   podkit logs web --previous --tail 20
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// The pod.
    pod: String,

    /// The container (default: the only one, or the first).
    #[arg(short, long)]
    container: Option<String>,

    /// Follow: print new lines as they come, across restarts, until the pod ends.
    #[arg(short, long)]
    follow: bool,

    /// The previous run of the container (after a restart).
    #[arg(short, long)]
    previous: bool,

    /// Only the last N lines.
    #[arg(long, value_name = "N")]
    tail: Option<usize>,

    /// Start each line with its time (RFC 3339).
    #[arg(long)]
    timestamps: bool,

    /// Every container of the pod, one after the other.
    #[arg(long)]
    all_containers: bool,

    /// Start each line with [pod/NAME/CONTAINER].
    #[arg(long)]
    prefix: bool,
}

pub fn logs(root: &Path, args: LogsArgs) -> anyhow::Result<()> {
    let pod = state::read(root, &args.pod)?;
    let containers = containers(&pod);
    let chosen: Vec<String> = if args.all_containers {
        containers.clone()
    } else {
        match &args.container {
            Some(name) if containers.contains(name) => vec![name.clone()],
            Some(name) => bail!(
                "container {name:?} is not valid for pod {:?}: choose one of: {}",
                pod.name,
                containers.join(", ")
            ),
            None => {
                let first = containers
                    .first()
                    .context("the pod has no containers")?
                    .clone();
                if containers.len() > 1 {
                    eprintln!(
                        "Defaulted container {first:?} out of: {}",
                        containers.join(", ")
                    );
                }
                vec![first]
            }
        }
    };
    let mut out = std::io::stdout().lock();
    for container in chosen {
        let prefix = args
            .prefix
            .then(|| format!("[pod/{}/{container}] ", pod.name));
        let runs = runs(&pod.dir.join("logs").join(&container));
        let run = if args.previous {
            match runs.len() {
                0 | 1 => bail!(
                    "previous terminated container {container:?} in pod {:?} not found",
                    pod.name
                ),
                n => runs[n - 2],
            }
        } else {
            match runs.last() {
                Some(run) => *run,
                None => continue, // not started yet
            }
        };
        let file = log_path(&pod, &container, run);
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("failed to read {}", file.display()))?;
        let mut lines = parse(&text, args.timestamps);
        if let Some(n) = args.tail {
            lines = lines.split_off(lines.len().saturating_sub(n));
        }
        for line in lines {
            writeln!(out, "{}{line}", prefix.as_deref().unwrap_or(""))?;
        }
        out.flush()?;
        if args.follow && !args.previous {
            follow(
                root,
                &pod,
                &container,
                run,
                text.len() as u64,
                args.timestamps,
                prefix.as_deref(),
            )?;
        }
    }
    Ok(())
}

/// The pod's containers, init containers first, as the manifest lists them.
fn containers(pod: &PodState) -> Vec<String> {
    let spec = &pod.manifest["spec"];
    ["initContainers", "containers"]
        .iter()
        .flat_map(|key| spec[*key].as_array().cloned().unwrap_or_default())
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect()
}

/// The run numbers that have a log file, in order.
fn runs(dir: &Path) -> Vec<u32> {
    let mut runs: Vec<u32> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".log")?.parse().ok())
        .collect();
    runs.sort_unstable();
    runs
}

fn log_path(pod: &PodState, container: &str, run: u32) -> PathBuf {
    pod.dir
        .join("logs")
        .join(container)
        .join(format!("{run}.log"))
}

/// The lines of a CRI log: partial (`P`) records joined to the full line they start.
fn parse(text: &str, timestamps: bool) -> Vec<String> {
    let mut lines = Vec::new();
    let mut partial = String::new();
    for record in text.lines() {
        let mut fields = record.splitn(4, ' ');
        let (Some(time), Some(_stream), Some(tag)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let content = fields.next().unwrap_or("");
        if partial.is_empty() && timestamps {
            partial.push_str(time);
            partial.push(' ');
        }
        partial.push_str(content);
        if tag == "F" {
            lines.push(std::mem::take(&mut partial));
        }
    }
    lines
}

/// Prints what is appended to the container's log from `offset` on, moving to the next run's
/// file after a restart, until the pod has ended and everything was printed.
fn follow(
    root: &Path,
    pod: &PodState,
    container: &str,
    mut run: u32,
    mut offset: u64,
    timestamps: bool,
    prefix: Option<&str>,
) -> anyhow::Result<()> {
    let mut pending = String::new();
    let mut out = std::io::stdout();
    loop {
        let path = log_path(pod, container, run);
        let mut grew = false;
        if let Ok(mut file) = std::fs::File::open(&path) {
            file.seek(SeekFrom::Start(offset))?;
            let mut chunk = String::new();
            let n = file.read_to_string(&mut chunk)?;
            if n > 0 {
                grew = true;
                offset += n as u64;
                pending.push_str(&chunk);
                // Only whole records; the rest waits for its newline.
                if let Some(end) = pending.rfind('\n') {
                    let complete: String = pending.drain(..=end).collect();
                    for line in parse(&complete, timestamps) {
                        writeln!(out, "{}{line}", prefix.unwrap_or(""))?;
                    }
                    out.flush()?;
                }
            }
        }
        if grew {
            continue;
        }
        let next = runs(&pod.dir.join("logs").join(container))
            .into_iter()
            .find(|r| *r > run);
        if let Some(next) = next {
            (run, offset) = (next, 0);
            continue;
        }
        // The pod ended (or was deleted) and the file is read to its end: done.
        match state::read(root, &pod.name) {
            Ok(now) if now.supervisor.is_some() => {}
            _ => return Ok(()),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
