//! The command-line front the three sidecars share: flags (already checked into a config) in,
//! a runtime and the signals, the exit code out. In the library so that `podkit tail|puller|proxy`
//! and the standalone `podkit-*` binaries are the same command.

use std::future::Future;
use std::process::ExitCode;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

/// Runs `run(config, shutdown)` until it ends or SIGTERM or SIGINT cancel `shutdown`. The exit
/// code: 0 after a clean shutdown, 2 when `config` is an error (bad flags: printed), 1 when `run`
/// fails. `command` names the sidecar in messages. The caller installs tracing.
pub(crate) fn main<C, E, R, Fut, Err>(command: &str, config: Result<C, E>, run: R) -> ExitCode
where
    E: std::fmt::Display,
    R: FnOnce(C, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), Err>>,
    Err: std::error::Error + Send + Sync + 'static,
{
    main_on(command, 2, config, run)
}

/// [`main`] on a runtime of `workers` threads (`1`: all on the calling thread).
pub(crate) fn main_on<C, E, R, Fut, Err>(
    command: &str,
    workers: usize,
    config: Result<C, E>,
    run: R,
) -> ExitCode
where
    E: std::fmt::Display,
    R: FnOnce(C, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), Err>>,
    Err: std::error::Error + Send + Sync + 'static,
{
    let config = match config {
        Ok(config) => config,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    match block_on_until_signal(command, workers, config, run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn block_on_until_signal<C, R, Fut, Err>(
    command: &str,
    workers: usize,
    config: C,
    run: R,
) -> anyhow::Result<()>
where
    R: FnOnce(C, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), Err>>,
    Err: std::error::Error + Send + Sync + 'static,
{
    // One worker: a current-thread runtime, with no work-stealing scheduler to pay for.
    let mut builder = match workers {
        0 | 1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
    };
    let runtime = builder
        .enable_all()
        .build()
        .context("failed to build the tokio runtime")?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let signals = {
            let shutdown = shutdown.clone();
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .context("failed to install the SIGTERM handler")?;
            tokio::spawn(async move {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
                    _ = shutdown.cancelled() => {}
                }
                shutdown.cancel();
            })
        };
        let result = run(config, shutdown.clone()).await;
        shutdown.cancel();
        let _ = signals.await;
        result.with_context(|| format!("{command} failed"))
    })
}

/// An error and its causes on one line (`client error (Connect): invalid peer certificate:
/// UnknownIssuer`), for the log: every sidecar's.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}

/// Raises the soft limit of open files to the hard one (often 1024 against 1048576), as nginx's
/// `worker_rlimit_nofile` does: the proxy holds a client and an upstream descriptor per
/// connection, the tailer one per followed file.
pub(crate) fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::debug!(from = soft, to = hard, "raised the open file limit"),
            Err(err) => tracing::warn!(%err, soft, hard, "failed to raise the open file limit"),
        },
        Ok(_) => {}
        Err(err) => tracing::warn!(%err, "failed to read the open file limit"),
    }
}
