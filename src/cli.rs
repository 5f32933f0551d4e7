//! The command line: one clap struct, and what each command does.

use std::process::ExitCode;

use clap::Parser;

/// Run Kubernetes-style pods on one Linux host, with no container engine and no daemon.
///
/// A pod is a group of processes sharing a network namespace (they talk over localhost), IPC
/// and UTS namespaces (one hostname) and volumes, described by ordinary Kubernetes Pod YAML.
/// The pod verbs (run, apply, get, describe, logs, exec, delete, port-forward) are being built;
/// today podkit ships the namespace layer they stand on: see the `netns` crate.
#[derive(Debug, Parser)]
#[command(
    name = "podkit",
    version,
    about,
    long_about,
    arg_required_else_help = true
)]
pub struct Cli {}

/// Runs the parsed command line.
pub fn run(_cli: Cli) -> anyhow::Result<ExitCode> {
    Ok(ExitCode::SUCCESS)
}
