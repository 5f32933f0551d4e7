//! `podkit-tail`: the log tailer sidecar on its own, the same as `podkit tail`.
//!
//! Thin: parse the flags, install tracing to stderr, run until SIGTERM or SIGINT, map errors to
//! the exit code (0 after a clean shutdown, 2 for bad flags, 1 otherwise).

#![forbid(unsafe_code)]

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use sidecars::tail::{Args, Config};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PODKIT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
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
        let result = sidecars::tail::run(config, shutdown.clone()).await;
        shutdown.cancel();
        let _ = signals.await;
        result.context("podkit tail failed")
    })
}
