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
    let config = match config {
        Ok(config) => config,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    match block_on_until_signal(command, config, run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn block_on_until_signal<C, R, Fut, Err>(command: &str, config: C, run: R) -> anyhow::Result<()>
where
    R: FnOnce(C, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), Err>>,
    Err: std::error::Error + Send + Sync + 'static,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
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
