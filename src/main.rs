//! The `podkit` command: Kubernetes-style pods on one Linux host.
//!
//! Thin by design: parse the arguments, install tracing, run the command, map errors to exit
//! codes. The commands live in `cli.rs`.

use std::process::ExitCode;

use podkit::cli;

fn main() -> ExitCode {
    // The processes that live as long as a pod (its supervisor, its PID 1) are started by podkit
    // itself with fixed arguments: they skip building clap's whole command tree, whose code
    // would otherwise stay resident in every pod (bench/pod.sh measures the supervisor's RSS).
    let internal = cli::internal(std::env::args_os().skip(1));
    let args = match internal {
        Some(_) => None,
        None => Some(<cli::Cli as clap::Parser>::parse()),
    };
    match &args {
        Some(args) => {
            cli::install_tracing_at(args.default_log_level());
            cli::quiet_on_closed_output();
        }
        None => cli::install_tracing(),
    }
    let result = match (internal, args) {
        (Some(command), _) => cli::run_internal(command),
        (None, Some(args)) => cli::run(args),
        (None, None) => unreachable!("one of the two is set"),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            cli::exit_if_output_closed(&err);
            cli::print_error(&err);
            ExitCode::FAILURE
        }
    }
}
