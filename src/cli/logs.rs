//! `podkit logs`: a container's output, as kubectl shows it.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::logs::{Prefixer, Query, Reader};
use crate::state::{self, PodState};

/// Print the logs of a container in a pod.
///
/// Asks the pod's supervisor (GET /logs on its api.sock), which streams new lines as they are
/// written when following; once the pod ended (its state kept), reads its CRI log files, the
/// same way. Exit code: 0, or 1 when the pod, the container or the previous run is not found.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  podkit logs web
  podkit logs web -c proxy -f
  podkit logs web --previous --tail 20
  podkit logs web --since 10m --timestamps
  podkit logs web --since-time 2025-01-02T15:04:05Z
  podkit logs web --all-containers --prefix")]
pub struct LogsArgs {
    /// The pod.
    pod: String,

    /// The container (default: the pod's first container).
    #[arg(short, long)]
    container: Option<String>,

    /// Follow: print new lines as they come, across restarts, until the container runs no
    /// more.
    #[arg(short, long)]
    follow: bool,

    /// The previous run of the container (after a restart).
    #[arg(short, long)]
    previous: bool,

    /// Only the last N lines (-1: all).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    tail: Option<i64>,

    /// Only lines newer than this, like 10s, 5m, 1h or 1h30m.
    #[arg(long, value_name = "DURATION", value_parser = super::parse_duration)]
    since: Option<Duration>,

    /// Only lines written at or after this time (RFC 3339, like 2025-01-02T15:04:05Z).
    #[arg(long, value_name = "TIME", conflicts_with = "since")]
    since_time: Option<jiff::Timestamp>,

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
            // kubectl's default: the first (main) container.
            None => {
                let first = pod.manifest["spec"]["containers"][0]["name"]
                    .as_str()
                    .context("the pod has no containers")?
                    .to_owned();
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
        let query = Query {
            container: Some(container.clone()),
            follow: args.follow,
            previous: args.previous,
            tail_lines: args.tail.and_then(|n| u64::try_from(n).ok()),
            since_seconds: args.since.map(|d| d.as_secs().max(1)),
            since_time: args.since_time,
            timestamps: args.timestamps,
        };
        let mut prefixer = Prefixer::new(
            args.prefix
                .then(|| format!("[pod/{}/{container}] ", pod.name)),
        );
        let uri = format!("/logs?{}", query.to_query_string());
        let from_api =
            super::client::request(&pod.dir, hyper::Method::GET, &uri, async |response| {
                use http_body_util::BodyExt;
                if !response.status().is_success() {
                    bail!("{}", super::client::error_text(response).await);
                }
                let mut body = response.into_body();
                while let Some(frame) = body.frame().await {
                    let frame = frame.context("the pod's API cut the log")?;
                    if let Some(data) = frame.data_ref() {
                        out.write_all(&prefixer.apply(data))?;
                        out.flush()?;
                    }
                }
                Ok(())
            });
        match from_api {
            Ok(streamed) => streamed?,
            // No supervisor (the pod ended, its state kept) or no API: the files.
            Err(_) => from_files(root, &pod, &container, &query, &mut prefixer, &mut out)?,
        }
    }
    Ok(())
}

/// The log read from the pod's files with the reader `GET /logs` uses. Following goes on
/// while a supervisor (one whose API did not answer) is still there to write.
fn from_files(
    root: &Path,
    pod: &PodState,
    container: &str,
    query: &Query,
    prefixer: &mut Prefixer,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let mut reader = Reader::open(&pod.dir, &pod.name, container, query)?;
    loop {
        // Asked before the read: a supervisor gone by then wrote everything this read gets.
        let writing =
            query.follow && state::read(root, &pod.name).is_ok_and(|now| now.supervisor.is_some());
        let chunk = reader.read()?;
        if !chunk.is_empty() {
            out.write_all(&prefixer.apply(&chunk))?;
            out.flush()?;
            continue;
        }
        if !writing {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
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
