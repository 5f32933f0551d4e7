//! `podkit-proxy`: the reverse proxy sidecar on its own, the same as `podkit proxy`.
//!
//! Thin: parse the flags (and `--config`), install tracing to stderr, run
//! `sidecars::proxy::main`.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use sidecars::proxy::{Args, LoadError};

fn main() -> ExitCode {
    let args = match Args::load_from(std::env::args_os()) {
        Ok(args) => args,
        Err(LoadError::Flags(err)) => err.exit(),
        Err(err) => {
            eprintln!("error: {:#}", anyhow::Error::from(err));
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PODKIT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    sidecars::proxy::main(args)
}
