//! The file puller sidecar: keeps a shared volume up to date with a remote file, archive or git
//! repository, atomically (what kubernetes/git-sync does).
//!
//! Every sync fetches the source (`http://` or `https://` with conditional requests, or
//! `file://`) into a temporary file under `DEST/.tmp/`, hashing it while it streams to disk; a
//! `--git` source is synced by `git.rs` into a directory there instead, skipped when the ref
//! still names the published commit. Unchanged content (a `304`, or the sha256 of the published
//! version) is not published again. New content is unpacked (or placed) into
//! `DEST/.versions/<id>/`, then the symlink `DEST/<link>` is swapped to it with a temporary
//! symlink and a `rename`, so a reader sees either the old tree or the new one, never a
//! half-written one. Old versions beyond `--keep` are removed.
//!
//! Layout:
//! - `args.rs`: the clap flags ([`Args`]) and their conversion into the typed [`Config`].
//! - [`main`]: the front shared by `podkit-puller` and `podkit puller` (see `crate::cli`).
//! - `fetch.rs`: one download (HTTP(S) or file) into a temporary file, with sha256, a size
//!   bound, and validators that never hide an update (a `Last-Modified` within a second of
//!   its `Date` is not sent back).
//! - `git.rs`: one sync of a `--git` repository (gix, on a blocking thread) into a directory.
//! - `unpack.rs`: tar, tar.gz and zip extraction that refuses unsafe entries, naming them;
//!   `unpack/tree.rs`: the writer of a version's tree (archives and git), beneath its
//!   directory (`openat2`), never through a symlink, bounded in entries, bytes and free space.
//! - `space.rs`: `--min-free`, free space checked with `fstatvfs` while writing.
//! - `publish.rs`: versions directory, the atomic symlink swap, pruning.
//! - `hooks.rs`: what runs once per published version: `--exec`, `--webhook`, `--signal`.
//! - `health.rs`: the `/healthz` + `/metrics` server and the counters behind it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, error, info, info_span, warn};

mod args;
mod fetch;
mod git;
mod health;
mod hooks;
mod publish;
mod space;
mod unpack;

pub use args::{Args, ArgsError};
pub use health::Metrics;
pub use space::MinFree;

/// Whether a download is unpacked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Extract {
    /// Unpack when the URL path ends in `.tar`, `.tar.gz`, `.tgz` or `.zip`.
    Auto,
    /// Never: publish the file as it is.
    Never,
    /// Always: the download is a zip or tar archive, gzip-compressed or not (sniffed).
    Always,
}

/// How a version is made visible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// `DEST/<link>` is a symlink swapped to each complete version (atomic for the whole tree).
    Symlink,
    /// `DEST/<link>` is a directory updated in place, file by file with renames: each file is
    /// atomic, the tree is not (a reader may see old and new files side by side).
    Copy,
}

/// Where the content comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// An `http://` or `https://` URL.
    Http(hyper::Uri),
    /// A local file (`file:///path`).
    File(PathBuf),
    /// A git repository, published as the tree of one commit.
    Git {
        /// The repository as `git clone` takes it.
        url: String,
        /// Branch, tag, full ref or commit; `HEAD` for the remote's default branch.
        reference: String,
        /// Commits of history fetched; 0 for all of it.
        depth: u32,
    },
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Http(uri) => write!(f, "{uri}"),
            Source::File(path) => write!(f, "file://{}", path.display()),
            Source::Git { url, reference, .. } => write!(f, "{url} ({reference})"),
        }
    }
}

/// A validated puller configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// What to fetch.
    pub source: Source,
    /// Trust and client certificate for `https://` sources (`--ca-file`, `--client-cert`).
    pub tls: crate::client_tls::ClientTls,
    /// Unpacking.
    pub extract: Extract,
    /// The shared volume: versions live in `dest/.versions/`, the link is `dest/<link>`.
    pub dest: PathBuf,
    /// Name of the symlink (or, with [`Mode::Copy`], the directory) readers use.
    pub link: String,
    /// Symlink swap or in-place copy.
    pub mode: Mode,
    /// File name of a single (not unpacked) download inside its version directory.
    pub file_name: String,
    /// Old versions kept besides the published one (readers may still be inside them).
    pub keep: usize,
    /// Time between syncs (plus up to 10% jitter).
    pub period: Duration,
    /// Exit after the first successful sync.
    pub one_time: bool,
    /// Stop after this many consecutive failures.
    pub max_failures: Option<u32>,
    /// First wait after a failure; doubles up to `retry_max`.
    pub retry_initial: Duration,
    /// Longest wait after a failure.
    pub retry_max: Duration,
    /// Bound on the download of one sync, and on its `--exec` hook.
    pub timeout: Duration,
    /// Bounds on a download and a version, and the modes published.
    pub limits: Limits,
    /// Expected sha256 (lowercase hex) of the download.
    pub sha256: Option<String>,
    /// Extra request headers.
    pub headers: Vec<(hyper::header::HeaderName, hyper::header::HeaderValue)>,
    /// File holding a bearer token, read again for every sync (rotated tokens work).
    pub bearer_token_file: Option<PathBuf>,
    /// Shell command run after each publish, with `PODKIT_VERSION` and `PODKIT_PATH`.
    pub exec: Option<String>,
    /// URL POSTed `{"version","path"}` after each publish, retried.
    pub webhook: Option<hyper::Uri>,
    /// Signal (name without `SIG`, e.g. `HUP`) sent after each publish to the pid in the file.
    pub signal: Option<(String, PathBuf)>,
    /// Address of the `/healthz` + `/metrics` server.
    pub health_addr: Option<SocketAddr>,
}

/// Bounds on one sync, and the modes of what it publishes. The defaults (see `args.rs`) bound
/// what a hostile or broken source can cost: disk, inodes, time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes one download may have (`--max-bytes`).
    pub max_bytes: u64,
    /// Most bytes of file content one version may unpack to, for archives and git trees
    /// (`--max-unpacked-bytes`).
    pub max_unpacked_bytes: u64,
    /// Most files, directories and links in one version (`--max-entries`).
    pub max_entries: u64,
    /// Space kept free on DEST's filesystem while downloading and unpacking (`--min-free`).
    pub min_free: MinFree,
    /// Permission bits cleared from every published file and directory (`--umask`); setuid,
    /// setgid and sticky bits are never published.
    pub umask: u32,
}

/// Why the puller stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The destination could not be prepared.
    #[error("failed to prepare the destination {path:?}")]
    PrepareDest {
        /// `--dest`.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The health server's address could not be bound.
    #[error("failed to bind the health server to {addr}")]
    BindHealth {
        /// `--health-addr`.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The TLS client for `https://` sources could not be built.
    #[error("failed to set up TLS for {source_url}")]
    Tls {
        /// The source.
        source_url: String,
        /// Cause.
        #[source]
        source: crate::client_tls::Error,
    },
    /// `--one-time` and the sync failed.
    #[error("the sync of {source_url} failed")]
    OneTime {
        /// The source.
        source_url: String,
        /// Cause.
        #[source]
        source: SyncError,
    },
    /// `--max-failures` consecutive syncs failed.
    #[error("{failures} consecutive syncs of {source_url} failed, the last one")]
    TooManyFailures {
        /// How many.
        failures: u32,
        /// The source.
        source_url: String,
        /// The last failure.
        #[source]
        source: SyncError,
    },
    /// Shutdown came before the first successful sync of a `--one-time` run.
    #[error("shut down before the first successful sync")]
    ShutdownBeforeSync,
}

/// Why one sync failed; the published version stays as it was.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The download failed.
    #[error("failed to fetch")]
    Fetch(#[from] fetch::Error),
    /// The download's digest is not `--sha256`.
    #[error("sha256 mismatch: expected {expected}, got {actual}")]
    Digest {
        /// `--sha256`.
        expected: String,
        /// What arrived.
        actual: String,
    },
    /// The git sync failed.
    #[error("failed to sync the git repository")]
    Git(#[from] git::Error),
    /// Unpacking or publishing failed.
    #[error("failed to publish")]
    Publish(#[from] publish::Error),
    /// The download took longer than `--timeout`.
    #[error("the download took longer than {0:?} (--timeout)")]
    Timeout(Duration),
    /// Shutdown came during the download.
    #[error("shut down during the download")]
    Cancelled,
}

/// What one successful sync did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The server answered `304 Not Modified`: nothing written.
    NotModified,
    /// The content is the published one (same sha256): nothing published.
    Unchanged,
    /// A new version was published under this id.
    Published(String),
}

/// Runs the puller until `shutdown` (or, with `one_time`, until the first successful sync).
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    run_with_metrics(config, Arc::new(Metrics::default()), shutdown).await
}

/// [`run`] with the caller's counters, e.g. to read them in a test.
pub async fn run_with_metrics(
    config: Config,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let tracker = TaskTracker::new();
    // The health server stops with the puller, also when it returns on its own (`--one-time`).
    let health_stop = shutdown.child_token();
    let span = info_span!("puller", source = %config.source, dest = ?config.dest);
    let result = run_inner(&config, &metrics, &tracker, &shutdown, &health_stop)
        .instrument(span)
        .await;
    health_stop.cancel();
    tracker.close();
    tracker.wait().await;
    result
}

async fn run_inner(
    config: &Config,
    metrics: &Arc<Metrics>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
    health_stop: &CancellationToken,
) -> Result<(), Error> {
    let mut publisher = publish::Publisher::open(config).map_err(|source| Error::PrepareDest {
        path: config.dest.clone(),
        source,
    })?;
    if let Some(addr) = config.health_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| Error::BindHealth { addr, source })?;
        info!(addr = %listener.local_addr().unwrap_or(addr), "health server listening");
        let (metrics, stop) = (metrics.clone(), health_stop.clone());
        tracker.spawn(async move { health::run(listener, metrics, stop).await });
    }
    metrics
        .max_failures
        .store(config.max_failures.unwrap_or(0).into(), Ordering::Relaxed);

    let fetcher = fetch::Fetcher::new(config).map_err(|source| Error::Tls {
        source_url: config.source.to_string(),
        source,
    })?;
    let git = git::Git::new(config);
    let hooks = hooks::Hooks::new(config);
    let mut failures: u32 = 0;
    loop {
        let deadline = tokio::time::Instant::now() + config.timeout;
        let result = sync_once(
            config,
            git.as_ref(),
            &fetcher,
            &mut publisher,
            &hooks,
            metrics,
            deadline,
            shutdown,
        )
        .await;
        if let Err(SyncError::Cancelled) = result {
            publisher.cleanup_tmp();
            info!("shutdown during a download: the published version stays");
            return if config.one_time {
                Err(Error::ShutdownBeforeSync)
            } else {
                Ok(())
            };
        }
        metrics.syncs.fetch_add(1, Ordering::Relaxed);
        let wait = match result {
            Ok(outcome) => {
                failures = 0;
                metrics.record_success();
                match &outcome {
                    Outcome::Published(id) => {
                        info!(source = %config.source, version = %id, "published")
                    }
                    Outcome::NotModified => debug!(source = %config.source, "not modified"),
                    Outcome::Unchanged => debug!(source = %config.source, "content unchanged"),
                }
                if config.one_time {
                    return Ok(());
                }
                jittered(config.period)
            }
            Err(err) => {
                failures = failures.saturating_add(1);
                metrics.record_failure(failures);
                publisher.cleanup_tmp();
                error!(source = %config.source, failures, err = %crate::cli::error_chain(&err), "sync failed; the published version stays");
                let source_url = config.source.to_string();
                match config.max_failures {
                    Some(max) if failures >= max => {
                        return Err(Error::TooManyFailures {
                            failures,
                            source_url,
                            source: err,
                        });
                    }
                    None if config.one_time => {
                        return Err(Error::OneTime {
                            source_url,
                            source: err,
                        });
                    }
                    _ => {}
                }
                backoff(config, failures)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => {
                return if config.one_time { Err(Error::ShutdownBeforeSync) } else { Ok(()) };
            }
        }
    }
}

/// One fetch, and a publish when the content is new.
///
/// Shutdown and `deadline` cut the download only: a publish, once started, runs to its end
/// (its blocking filesystem work cannot be stopped halfway, and a second sync must never run
/// beside it); the hook is bounded by `deadline`.
#[allow(clippy::too_many_arguments)]
async fn sync_once(
    config: &Config,
    git: Option<&git::Git>,
    fetcher: &fetch::Fetcher,
    publisher: &mut publish::Publisher,
    hooks: &hooks::Hooks,
    metrics: &Metrics,
    deadline: tokio::time::Instant,
    shutdown: &CancellationToken,
) -> Result<Outcome, SyncError> {
    let tmp = publisher.tmp_dir();
    if let Some(git) = git {
        let current = publisher.current_digest().map(str::to_owned);
        let Some(checkout) = git_sync(config, git, current, tmp, deadline, shutdown).await? else {
            metrics.not_modified.fetch_add(1, Ordering::Relaxed);
            return Ok(Outcome::NotModified);
        };
        metrics.bytes.fetch_add(checkout.bytes, Ordering::Relaxed);
        let id = publisher
            .publish_tree(checkout.dir, &checkout.commit)
            .await?;
        return Ok(published(config, id, publisher, hooks, metrics, deadline).await);
    }
    let fetched = tokio::select! {
        fetched = tokio::time::timeout_at(deadline, fetcher.fetch(&tmp)) => fetched,
        _ = shutdown.cancelled() => return Err(SyncError::Cancelled),
    };
    let fetched = fetched.map_err(|_| SyncError::Timeout(config.timeout))?;
    let Some(download) = fetched? else {
        metrics.not_modified.fetch_add(1, Ordering::Relaxed);
        return Ok(Outcome::NotModified);
    };
    metrics.bytes.fetch_add(download.bytes, Ordering::Relaxed);
    if let Some(expected) = &config.sha256
        && *expected != download.sha256
    {
        let _ = std::fs::remove_file(&download.path);
        return Err(SyncError::Digest {
            expected: expected.clone(),
            actual: download.sha256,
        });
    }
    if publisher.is_current(&download.sha256) {
        let _ = std::fs::remove_file(&download.path);
        fetcher.remember(download.validators);
        return Ok(Outcome::Unchanged);
    }
    let archive = match config.extract {
        Extract::Never => None,
        Extract::Always => Some(unpack::Kind::Sniff),
        Extract::Auto => unpack::Kind::from_name(&download.name),
    };
    let validators = download.validators.clone();
    let id = publisher.publish(download, archive).await?;
    fetcher.remember(validators);
    Ok(published(config, id, publisher, hooks, metrics, deadline).await)
}

/// Counts a published version and fires its hooks, bounded by `deadline`.
async fn published(
    config: &Config,
    id: String,
    publisher: &publish::Publisher,
    hooks: &hooks::Hooks,
    metrics: &Metrics,
    deadline: tokio::time::Instant,
) -> Outcome {
    metrics.publishes.fetch_add(1, Ordering::Relaxed);
    let path = publisher.version_path(&id);
    if tokio::time::timeout_at(deadline, hooks.fire(&id, &path, metrics))
        .await
        .is_err()
    {
        metrics.hook_failures.fetch_add(1, Ordering::Relaxed);
        warn!(version = %id, timeout = ?config.timeout, "hooks cut at the sync's --timeout");
    }
    Outcome::Published(id)
}

/// How long an interrupted git sync is waited for: gix checks the flag while it receives and
/// writes, but not inside a blocking read from a silent server.
const GIT_INTERRUPT_GRACE: Duration = Duration::from_secs(5);

/// The git fetch and checkout, cut by shutdown and `deadline` like a download. A sync stuck in a
/// read past [`GIT_INTERRUPT_GRACE`] is left to finish on its blocking thread; its checkout
/// directory is removed with the other temporary files.
async fn git_sync(
    config: &Config,
    git: &git::Git,
    current: Option<String>,
    tmp: PathBuf,
    deadline: tokio::time::Instant,
    shutdown: &CancellationToken,
) -> Result<Option<git::Checkout>, SyncError> {
    let interrupt = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let task = git.sync(current, tmp, interrupt.clone());
    tokio::pin!(task);
    let cut = tokio::select! {
        result = &mut task => return Ok(result?),
        _ = tokio::time::sleep_until(deadline) => SyncError::Timeout(config.timeout),
        _ = shutdown.cancelled() => SyncError::Cancelled,
    };
    interrupt.store(true, Ordering::Relaxed);
    if tokio::time::timeout(GIT_INTERRUPT_GRACE, &mut task)
        .await
        .is_err()
    {
        warn!(source = %config.source, "the interrupted git sync is still blocked; left to finish in the background");
    }
    Err(cut)
}

/// `period` plus up to 10% random jitter, so many pullers do not hit a server in step.
fn jittered(period: Duration) -> Duration {
    period + period.mul_f64(fastrand::f64() * 0.1)
}

/// Exponential backoff after `failures` consecutive failures.
fn backoff(config: &Config, failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(20));
    config
        .retry_initial
        .saturating_mul(factor)
        .min(config.retry_max)
}

/// Runs the puller the flags describe until SIGTERM or SIGINT: `podkit puller` and
/// `podkit-puller`. The exit code: 0 after a clean shutdown, 2 for bad flags, 1 otherwise. The
/// caller installs tracing.
pub fn main(args: Args) -> std::process::ExitCode {
    crate::cli::main("podkit puller", Config::try_from(args), run)
}

/// Thin wrappers for the fuzz targets in `tests/fuzz/` (not an API).
#[doc(hidden)]
pub mod fuzz {
    use std::path::Path;

    /// Unpacks `archive` into the empty directory `dest` as a version would be (kind 0: tar,
    /// 1: tar.gz, 2: zip, else sniffed), with small bounds (64 MiB, 10,000 entries, no free
    /// space reserve); the bytes written, or the error chain as text.
    pub fn unpack(archive: &Path, kind: u8, dest: &Path) -> Result<u64, String> {
        let kind = match kind {
            0 => super::unpack::Kind::Tar,
            1 => super::unpack::Kind::TarGz,
            2 => super::unpack::Kind::Zip,
            _ => super::unpack::Kind::Sniff,
        };
        let limits = super::Limits {
            max_bytes: 64 << 20,
            max_unpacked_bytes: 64 << 20,
            max_entries: 10_000,
            min_free: super::MinFree::Bytes(0),
            umask: 0o022,
        };
        super::unpack::unpack(archive, kind, dest, &limits).map_err(|e| crate::cli::error_chain(&e))
    }
}
