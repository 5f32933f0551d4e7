//! A pod's supervisor (and its PID 1, `pause`) as a binary of its own, exec'd by `podkit run`
//! and `podkit apply` when it sits beside `podkit`: the same code as `podkit supervise`, linked
//! without the CLI, the YAML and Kubernetes deserializers and the sidecars, so a pod's
//! long-lived processes map less code (bench/pod.sh measures their RSS).
//!
//! Its command lines are podkit's internal ones: `podkit-supervise supervise [--quiet]
//! [--detach]` (the plan as JSON on stdin) and `podkit-supervise pause`.

use std::process::ExitCode;

use podkit::cli;

fn main() -> ExitCode {
    let Some(command) = cli::internal(std::env::args_os().skip(1)) else {
        eprintln!(
            "error: {} is started by podkit (podkit run, podkit apply), not by hand",
            cli::SUPERVISOR_BIN
        );
        return ExitCode::from(2);
    };
    cli::install_tracing();
    match cli::run_internal(command) {
        Ok(code) => code,
        Err(err) => {
            cli::print_error(&err);
            ExitCode::FAILURE
        }
    }
}
