//! `portfwd`: forwards host ports into a pod's network namespace, as `kubectl port-forward`
//! does into a cluster's pods. Thin: parse args, install tracing, run `portfwd::cli`.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

/// Forward host ports into a pod's network namespace.
#[derive(Debug, Parser)]
#[command(name = "portfwd", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    args: portfwd::cli::Args,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Warnings by default (rate-limited per kind); `-v` adds each connection's lines.
    let default = if cli.args.verbose() {
        "warn,portfwd=debug"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
        )
        .init();
    portfwd::cli::run(cli.args)
}
