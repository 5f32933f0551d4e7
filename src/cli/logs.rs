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

    /// The pod's namespace.
    #[arg(short = 'n', long, value_name = "NAMESPACE", default_value = "default")]
    namespace: String,

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

    /// Every container of the pod: one after the other, or all at once when following.
    #[arg(long)]
    all_containers: bool,

    /// Start each line with [pod/NAME/CONTAINER].
    #[arg(long)]
    prefix: bool,
}

pub fn logs(root: &Path, args: LogsArgs) -> anyhow::Result<()> {
    let pod = state::read(root, &args.namespace, &args.pod)?;
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
    let query = |container: &str| Query {
        container: Some(container.to_owned()),
        follow: args.follow,
        previous: args.previous,
        tail_lines: args.tail.and_then(|n| u64::try_from(n).ok()),
        since_seconds: args.since.map(|d| d.as_secs().max(1)),
        since_time: args.since_time,
        timestamps: args.timestamps,
    };
    let prefixer = |container: &str| {
        Prefixer::new(
            args.prefix
                .then(|| format!("[pod/{}/{container}] ", pod.name)),
        )
    };
    if args.follow && chosen.len() > 1 {
        // Following several containers: all at once, as kubectl does, whole lines each.
        let stdout = std::sync::Mutex::new(std::io::stdout());
        let pod = &pod;
        return std::thread::scope(|scope| {
            let threads: Vec<_> = chosen
                .iter()
                .map(|container| {
                    let (query, mut prefixer, stdout) =
                        (query(container), prefixer(container), &stdout);
                    scope.spawn(move || {
                        let mut out = WholeLines {
                            to: stdout,
                            pending: Vec::new(),
                        };
                        show(root, pod, &query, &mut prefixer, &mut out)
                    })
                })
                .collect();
            threads.into_iter().try_for_each(|thread| {
                thread
                    .join()
                    .map_err(|_| anyhow::anyhow!("a log follower panicked"))?
            })
        });
    }
    let mut out = std::io::stdout().lock();
    for container in &chosen {
        show(
            root,
            &pod,
            &query(container),
            &mut prefixer(container),
            &mut out,
        )?;
    }
    Ok(())
}

/// Writes one container's log to `out`: from the pod's API, or from its files when there is no
/// supervisor (the pod ended, its state kept) or it does not serve its API.
fn show(
    root: &Path,
    pod: &PodState,
    query: &Query,
    prefixer: &mut Prefixer,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let uri = format!("/logs?{}", query.to_query_string());
    let from_api = super::client::request(&pod.dir, hyper::Method::GET, &uri, async |response| {
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
        Ok(streamed) => streamed,
        Err(_) => {
            let container = query.container.as_deref().unwrap_or_default();
            from_files(root, pod, container, query, prefixer, out)
        }
    }
}

/// A writer that passes on whole lines only, each at once, to a stdout shared by several
/// followers: their lines interleave, never their bytes.
struct WholeLines<'a> {
    to: &'a std::sync::Mutex<std::io::Stdout>,
    pending: Vec<u8>,
}

impl Write for WholeLines<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(buf);
        if let Some(end) = self.pending.iter().rposition(|b| *b == b'\n') {
            let mut out = self.to.lock().unwrap_or_else(|p| p.into_inner());
            out.write_all(&self.pending[..=end])?;
            out.flush()?;
            self.pending.drain(..=end);
        }
        Ok(buf.len())
    }

    /// Whole lines are flushed as they are written; a part waits for its end (a log's output
    /// always ends with one).
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
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
        let writing = query.follow
            && state::read(root, &pod.namespace, &pod.name)
                .is_ok_and(|now| now.supervisor.is_some());
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
