//! The front of `podkit proxy` and `podkit-proxy`: flags in, runtime and signals, exit code out.
//! Kept in the library so both binaries are one command.

use std::process::ExitCode;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::{Args, Config};

/// Runs the proxy the flags describe until SIGTERM or SIGINT. The exit code: 0 after a clean
/// shutdown, 2 for bad flags, 1 otherwise. The caller installs tracing.
pub fn main(args: Args) -> ExitCode {
    let config = match Config::try_from(args) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: Config) -> anyhow::Result<()> {
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
        let result = super::run(config, shutdown.clone()).await;
        shutdown.cancel();
        let _ = signals.await;
        result.context("podkit proxy failed")
    })
}
