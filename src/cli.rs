//! The command line: the clap structs, and what each command does.

use std::io::{Read, Seek, Write};
use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::{pause, spec, supervisor};

mod apply;
mod attach;
mod client;
mod delete;
mod exec;
mod get;
mod images;
mod logs;
mod pull;
mod workloads;

pub(crate) use apply::{pull_secrets_from_store, start_supervisor};
pub(crate) use delete::request_delete;

/// Run Kubernetes-style pods on one Linux host, with no container engine and no daemon.
///
/// A pod is a group of processes sharing a network namespace (they talk over localhost), IPC
/// and UTS namespaces (one hostname) and volumes, described by ordinary Kubernetes Pod YAML.
#[derive(Debug, Parser)]
#[command(
    name = "podkit",
    version,
    about,
    long_about,
    arg_required_else_help = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Verb,

    /// Where podkit keeps what outlives a boot: the image store is DIR/images.
    #[arg(
        long,
        global = true,
        env = "PODKIT_STORAGE",
        value_name = "DIR",
        default_value = DEFAULT_STORAGE
    )]
    storage: PathBuf,
}

/// The persistent storage root (images), as DESIGN.md fixes it: not under /run.
pub const DEFAULT_STORAGE: &str = "/var/lib/podkit";

/// The storage root of this command line (`--storage`), for the supervisors it starts.
static STORAGE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

#[derive(Debug, Subcommand)]
enum Verb {
    Run(RunArgs),
    Apply(apply::ApplyArgs),
    Get(get::GetArgs),
    Describe(get::DescribeArgs),
    Logs(logs::LogsArgs),
    Exec(exec::ExecArgs),
    Attach(attach::AttachArgs),
    Delete(delete::DeleteArgs),
    Gc(delete::GcArgs),
    Pull(pull::PullArgs),
    Images(images::ImagesArgs),
    Rmi(images::RmiArgs),
    Load(images::LoadArgs),
    Image(images::ImageArgs),
    /// Forward host ports into a pod, as `kubectl port-forward` does.
    ///
    /// Each connection to a local port is dialed to localhost:REMOTE inside the pod (127.0.0.1,
    /// then ::1) and relayed both ways with splice(2); a refused dial closes that connection
    /// only. Ends on Ctrl-C, or when the pod is deleted.
    ///
    /// Examples:
    ///   podkit port-forward web 8080:80
    ///   podkit port-forward web :80            (a free local port, printed)
    ///   podkit port-forward web 8053:53/udp
    #[command(name = "port-forward", verbatim_doc_comment)]
    PortForward(portfwd::cli::Args),
    /// The log tailer sidecar: follow log files through rotation and ship every line.
    ///
    /// Examples:
    ///   podkit tail --path '/var/log/app/*.log' --state /var/lib/tail/state.json
    ///   podkit tail --path '/logs/*.log' --loki http://127.0.0.1:3100 --label app=web
    #[command(verbatim_doc_comment)]
    Tail(Box<sidecars::tail::Args>),
    /// The file puller sidecar: keep a directory (a shared volume) up to date from a remote,
    /// atomically.
    ///
    /// Examples:
    ///   podkit puller --url http://127.0.0.1:8000/site.tar.gz --dest /content --period 30s
    ///   podkit puller --url file:///srv/site --dest /content --one-time
    #[command(verbatim_doc_comment)]
    Puller(Box<sidecars::puller::Args>),
    /// The reverse proxy sidecar: TLS, HTTP/1.1 and HTTP/2 in front of an app on localhost.
    ///
    /// Examples:
    ///   podkit proxy --listen 0.0.0.0:80 --upstream http://127.0.0.1:2368
    ///   podkit proxy --listen 0.0.0.0:8080 --upstream file:///content/current
    #[command(verbatim_doc_comment)]
    Proxy(Box<sidecars::proxy::Args>),
    Completion(CompletionArgs),
    Scale(workloads::ScaleArgs),
    Rollout(workloads::RolloutArgs),
    Create(workloads::CreateArgs),
    /// The controller of one workload (started by `apply`, detached).
    #[command(hide = true)]
    Controller {
        kind: String,
        namespace: String,
        name: String,
    },
    /// PID 1 of a pod with `shareProcessNamespace: true`: reaps orphans, exits on SIGTERM.
    #[command(hide = true)]
    Pause,
    /// The supervisor of one pod, given its validated plan (JSON) on stdin by `podkit run`.
    #[command(hide = true)]
    Supervise {
        /// Do not print the containers' output.
        #[arg(short, long)]
        quiet: bool,
        /// Leave the caller's session (for `podkit apply`).
        #[arg(long)]
        detach: bool,
        /// stdout is a pipe: write a byte to it after each write of the pod's status.
        #[arg(long)]
        notify: bool,
    },
}

/// Run the pods of a manifest in the foreground until they end; Ctrl-C deletes them.
///
/// The containers' output goes to stdout, each line prefixed with its container's name, and to
/// the pod's log files (/run/podkit/pods/NAME/logs/CONTAINER/RESTART.log, CRI format). Progress
/// (containers started, exited, restarted; events) goes to stderr. The exit code is 0 when every
/// pod succeeded or was deleted, 1 when one failed.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  podkit run -f web.yaml
  PODKIT_LOG=debug podkit run -f web.yaml")]
struct RunArgs {
    /// The manifest: one or more v1 Pods, separated by `---`.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    file: PathBuf,

    /// Run only the pod of this name from the file.
    #[arg(long, value_name = "NAME")]
    pod: Option<String>,

    /// Do not print the containers' output (it is in the pod's log files either way).
    #[arg(short, long)]
    quiet: bool,
}

/// Rows as aligned columns (the first row is the header), `gap` between columns, no trailing
/// blanks: the tables of kubectl (3 spaces) and podman (2).
pub(crate) fn render_table(rows: &[Vec<String>], gap: &str) -> String {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join(gap).trim_end());
        out.push('\n');
    }
    out
}

/// Durations as kubectl takes them: `200ms`, `10s`, `5m`, `1h`, or several at once (`1h30m`).
pub(crate) fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let wrong =
        || format!("{text:?} is not a duration like 200ms, 10s, 5m, 1h30m (units: ms, s, m, h)");
    let mut total = std::time::Duration::ZERO;
    let mut rest = text;
    if rest.is_empty() {
        return Err(wrong());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let n: u64 = rest[..digits].parse().map_err(|_| wrong())?;
        rest = &rest[digits..];
        let unit = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let millis = match &rest[..unit] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return Err(wrong()),
        };
        rest = &rest[unit..];
        total += std::time::Duration::from_millis(n.checked_mul(millis).ok_or_else(wrong)?);
    }
    Ok(total)
}

/// Print a shell completion script: podkit's verbs and their flags complete on Tab.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  source <(podkit completion bash)                  (this shell; or put it in ~/.bashrc)
  podkit completion bash > /etc/bash_completion.d/podkit
  podkit completion zsh > \"${fpath[1]}/_podkit\"
  podkit completion fish > ~/.config/fish/completions/podkit.fish")]
struct CompletionArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    shell: clap_complete::Shell,
}

/// Writes the completion script for `shell` to stdout.
fn completion(args: CompletionArgs) -> anyhow::Result<ExitCode> {
    let mut command = <Cli as clap::CommandFactory>::command();
    clap_complete::generate(args.shell, &mut command, "podkit", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}

/// The storage root of this command (`--storage`, `PODKIT_STORAGE`).
fn storage() -> PathBuf {
    STORAGE
        .get()
        .cloned()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STORAGE))
}

/// The state root: `PODKIT_ROOT`, or /run/podkit.
fn root() -> PathBuf {
    std::env::var_os("PODKIT_ROOT")
        .map_or_else(|| PathBuf::from(supervisor::DEFAULT_ROOT), PathBuf::from)
}

/// The commands podkit runs itself, recognised before clap: `pause`, `supervise [--quiet]`.
#[derive(Debug, Clone, Copy)]
pub enum Internal {
    Pause,
    Supervise {
        quiet: bool,
        detach: bool,
        notify: bool,
    },
}

/// Recognises an internal command line (the whole of it, exactly as podkit writes it).
pub fn internal(mut args: impl Iterator<Item = std::ffi::OsString>) -> Option<Internal> {
    let first = args.next()?;
    let rest: Vec<_> = args.collect();
    match first.to_str()? {
        "pause" if rest.is_empty() => Some(Internal::Pause),
        "supervise" => {
            let (mut quiet, mut detach, mut notify) = (false, false, false);
            for flag in &rest {
                match flag.to_str()? {
                    "--quiet" => quiet = true,
                    "--detach" => detach = true,
                    "--notify" => notify = true,
                    _ => return None,
                }
            }
            Some(Internal::Supervise {
                quiet,
                detach,
                notify,
            })
        }
        _ => None,
    }
}

/// Logs to stderr at the level in `PODKIT_LOG` (default `info`). A plain level needs no
/// directive parser; anything else (`podkit=debug,netns=trace`) gets tracing's `EnvFilter`.
/// Prints `error: {err:#}` on stderr in one write: `apply` reads a detached supervisor's error
/// from its log while it is written, and `eprintln!` writes a message in pieces.
pub fn print_error(err: &anyhow::Error) {
    use std::io::Write;
    let line = format!("error: {err:#}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

pub fn install_tracing() {
    install_tracing_at(tracing_subscriber::filter::LevelFilter::INFO);
}

impl Cli {
    /// The log level without `PODKIT_LOG`: `warn` for the image verbs, whose progress and
    /// results are their output (the store's info events would repeat them, and `-q` must
    /// print nothing else), `info` for the rest.
    pub fn default_log_level(&self) -> tracing_subscriber::filter::LevelFilter {
        use tracing_subscriber::filter::LevelFilter;
        match self.command {
            Verb::Pull(_) | Verb::Images(_) | Verb::Rmi(_) | Verb::Load(_) | Verb::Image(_) => {
                LevelFilter::WARN
            }
            _ => LevelFilter::INFO,
        }
    }
}

/// [`install_tracing`] with another default level.
pub fn install_tracing_at(default: tracing_subscriber::filter::LevelFilter) {
    use tracing_subscriber::filter::{EnvFilter, LevelFilter};
    let spec = std::env::var("PODKIT_LOG").unwrap_or_default();
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match spec.parse::<LevelFilter>() {
        Ok(level) if !spec.is_empty() => builder.with_max_level(level).init(),
        _ if spec.is_empty() => builder.with_max_level(default).init(),
        _ => builder.with_env_filter(EnvFilter::new(spec)).init(),
    }
}

/// Runs an internal command.
pub fn run_internal(command: Internal) -> anyhow::Result<ExitCode> {
    match command {
        Internal::Pause => pause::run(),
        Internal::Supervise {
            quiet,
            detach,
            notify,
        } => supervise(quiet, detach, notify),
    }
}

/// Makes a write to a closed stdout or stderr end the command quietly, as kubectl (Go) ends:
/// killed by SIGPIPE, so `podkit get pods | head -1` prints no panic and no error. Rust ignores
/// SIGPIPE, which keeps the signal from killing podkit on a socket or another pipe (those
/// writes fail with EPIPE and are reported); only stdout and stderr end it. `print!` panics on
/// such a write: the hook catches a panic while they are closed; a command that writes with
/// `?` returns the error, which `main` passes to [`exit_if_output_closed`].
pub fn quiet_on_closed_output() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // `print!`'s "failed printing to stdout", clap_complete's "failed to write ...": a
        // panic with the output closed is that write's.
        if output_closed() {
            netns::die_of_sigpipe();
        }
        default(info);
    }));
}

/// Ends the process as SIGPIPE would (exit status 141 in a shell) when `err` is a broken pipe
/// and stdout or stderr is the closed pipe.
pub fn exit_if_output_closed(err: &anyhow::Error) {
    let broken = err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    });
    if broken && output_closed() {
        netns::die_of_sigpipe();
    }
}

/// Whether stdout or stderr is a pipe whose reader has gone (POLLERR on its write end).
fn output_closed() -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    [std::io::stdout().as_fd(), std::io::stderr().as_fd()]
        .into_iter()
        .any(|fd| {
            let mut fds = [PollFd::new(fd, PollFlags::POLLOUT)];
            poll(&mut fds, PollTimeout::ZERO).is_ok()
                && fds[0]
                    .revents()
                    .is_some_and(|r| r.contains(PollFlags::POLLERR))
        })
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // The store a pod's supervisor pulls into and runs images from: this command's.
    let _ = STORAGE.set(cli.storage.clone());
    match cli.command {
        Verb::Pause => pause::run(),
        Verb::Run(args) => run_pods(&cli.storage, args),
        Verb::Get(args) => get::get(&root(), &cli.storage, args).map(|()| ExitCode::SUCCESS),
        Verb::Describe(args) => {
            get::describe(&root(), &cli.storage, args).map(|()| ExitCode::SUCCESS)
        }
        Verb::Logs(args) => logs::logs(&root(), args).map(|()| ExitCode::SUCCESS),
        Verb::Exec(args) => exec::exec(&root(), args),
        Verb::Attach(args) => attach::attach(&root(), args),
        Verb::Delete(args) => delete::delete(&root(), &cli.storage, args),
        Verb::Gc(args) => delete::gc(&root(), &cli.storage, args).map(|()| ExitCode::SUCCESS),
        Verb::Pull(args) => pull::pull(&cli.storage, args),
        Verb::Images(args) => images::images(&cli.storage, args),
        Verb::Rmi(args) => images::rmi(&root(), &cli.storage, args),
        Verb::Load(args) => images::load(&cli.storage, args),
        Verb::Image(args) => images::image(&root(), &cli.storage, args),
        Verb::PortForward(args) => Ok(portfwd::cli::run(args)),
        Verb::Tail(args) => Ok(sidecars::tail::main(*args)),
        Verb::Puller(args) => Ok(sidecars::puller::main(*args)),
        Verb::Proxy(args) => Ok(sidecars::proxy::main(*args)),
        Verb::Supervise {
            quiet,
            detach,
            notify,
        } => supervise(quiet, detach, notify),
        Verb::Apply(args) => apply::apply(&root(), &cli.storage, args),
        Verb::Completion(args) => completion(args),
        Verb::Scale(args) => workloads::scale(&root(), &cli.storage, args),
        Verb::Create(args) => workloads::create(&root(), &cli.storage, args),
        Verb::Rollout(args) => workloads::rollout(&root(), &cli.storage, args),
        Verb::Controller {
            kind,
            namespace,
            name,
        } => {
            let Some(&kind) = spec::ObjectKind::CONTROLLED
                .iter()
                .find(|k| k.lower() == kind)
            else {
                bail!("no controller for {kind:?}");
            };
            crate::controller::run(&root(), &cli.storage, kind, &namespace, &name)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn run_pods(storage: &std::path::Path, args: RunArgs) -> anyhow::Result<ExitCode> {
    let manifest = spec::load_manifest(&args.file)?;
    if manifest.pods.is_empty() {
        bail!(
            "{}: no Pod in the file: podkit run runs Pods in the foreground (podkit apply runs \
             workloads (Deployments, StatefulSets, Jobs, ...), and keeps ConfigMaps, Secrets and PersistentVolumeClaims)",
            args.file.display()
        );
    }
    if let Some(d) = manifest.objects.iter().find(|o| o.kind.is_workload()) {
        bail!(
            "{}: {} {:?}: podkit run runs Pods in the foreground; a {}'s pods are kept by its \
             controller: podkit apply -f {}",
            args.file.display(),
            d.kind.lower(),
            d.name,
            d.kind.kind(),
            args.file.display()
        );
    }
    if !nix::unistd::geteuid().is_root() {
        bail!("podkit run needs root: it creates namespaces and mounts (try sudo)");
    }
    // Each pod of several is run by a podkit of its own (--pod): the first keeps the objects.
    if args.pod.is_none() {
        for line in apply::keep_objects(storage, &manifest)? {
            eprintln!("{line}");
        }
        // A Service of the file is kept by its controller, as `apply` keeps it: it stays
        // when the pods end, as the file's other objects do.
        for object in &manifest.objects {
            if object.kind == spec::ObjectKind::Service {
                crate::controller::ensure(
                    &root(),
                    storage,
                    object.kind,
                    &object.namespace,
                    &object.name,
                )?;
            }
        }
    }
    let mut plans = manifest.pods;
    for plan in &mut plans {
        pull_secrets_from_store(storage, plan)?;
    }
    if let Some(name) = &args.pod {
        plans.retain(|p| &p.name == name);
        if plans.is_empty() {
            bail!("no pod named {name:?} in {}", args.file.display());
        }
    }
    if plans.len() > 1 {
        return run_each(&args.file, plans.iter().map(|p| p.name.clone()).collect());
    }
    let plan = plans.remove(0);
    for field in &plan.ignored {
        eprintln!("note: {field} is ignored on one host");
    }
    for warning in &plan.warnings {
        eprintln!("warning: {warning}");
    }
    // The supervisor is a fresh exec of podkit, handed the validated plan: it never loads the
    // YAML and Kubernetes deserializers, most of this process's memory. Same pid, same terminal.
    let mut supervise = supervise_command(&plan)?;
    if args.quiet {
        supervise.arg("--quiet");
    }
    let err = std::os::unix::process::CommandExt::exec(&mut supervise);
    Err(err).context("failed to start the supervisor")
}

/// `podkit supervise` with `plan` as its stdin: a memfd holding the plan as JSON, which the
/// supervisor reads to its end (no pipe to fill, no file to clean up).
fn supervise_command(plan: &spec::PodPlan) -> anyhow::Result<Command> {
    let json = serde_json::to_vec(plan).context("failed to encode the pod plan")?;
    let memfd =
        nix::sys::memfd::memfd_create(c"podkit-plan", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
            .context("failed to hand the plan to the supervisor (memfd_create)")?;
    let mut stdin = std::fs::File::from(memfd);
    stdin.write_all(&json)?;
    stdin.seek(std::io::SeekFrom::Start(0))?;
    let exe = std::env::current_exe().context("failed to find the podkit binary")?;
    // The lean supervisor binary beside this one when it was installed (cargo builds both):
    // a pod's long-lived processes then map only the code they run.
    let lean = exe.with_file_name(SUPERVISOR_BIN);
    let mut supervise = Command::new(if lean.is_file() { lean } else { exe });
    supervise.arg("supervise").stdin(stdin);
    if let Some(storage) = STORAGE.get() {
        supervise.env("PODKIT_STORAGE", storage);
    }
    Ok(supervise)
}

/// The supervisor's own binary, `src/bin/podkit-supervise.rs`: `podkit supervise` without the
/// CLI, the manifest parser and the sidecars.
pub const SUPERVISOR_BIN: &str = "podkit-supervise";

/// Runs one pod's supervisor with the plan read from stdin: in the foreground, or in a session
/// of its own when `detach`. With `notify`, stdout is the caller's pipe (see
/// [`apply::start_supervisor`]): kept aside, and stdout becomes /dev/null.
fn supervise(quiet: bool, detach: bool, notify: bool) -> anyhow::Result<ExitCode> {
    if detach {
        nix::unistd::setsid().context("failed to start a session")?;
    }
    if notify {
        use std::os::fd::AsFd;
        // A duplicate closed on exec (F_DUPFD_CLOEXEC): runc and the containers never hold it,
        // so the caller sees end of file when this process ends.
        let pipe = std::io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .context("failed to keep the notify pipe")?;
        let null = std::fs::File::create("/dev/null").context("failed to open /dev/null")?;
        nix::unistd::dup2_stdout(&null).context("failed to point stdout at /dev/null")?;
        supervisor::status::notify_with(std::fs::File::from(pipe));
    }
    let mut plan = Vec::new();
    std::io::stdin().read_to_end(&mut plan)?;
    let plan: spec::PodPlan =
        serde_json::from_slice(&plan).context("stdin is not a podkit pod plan")?;
    let name = plan.name.clone();
    let exe = std::env::current_exe().context("failed to find the podkit binary")?;
    let mut pause = Command::new(exe);
    pause.arg("pause");
    let options = supervisor::Options {
        root: root(),
        pause,
        echo: !quiet,
    };

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    let outcome = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let signals = shutdown_on_signal(shutdown.clone())?;
        let outcome = supervisor::run(plan, options, shutdown).await;
        signals.abort();
        anyhow::Ok(outcome?)
    })?;
    eprintln!(
        "pod {name:?} {}: {}",
        if outcome.deleted { "deleted" } else { "ended" },
        outcome.phase
    );
    Ok(if outcome.phase == "Failed" && !outcome.deleted {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// One supervisor process per pod: runs `podkit run -f FILE --pod NAME` for each and waits,
/// passing SIGTERM on. (Ctrl-C reaches them all through the terminal already.)
fn run_each(file: &std::path::Path, names: Vec<String>) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe().context("failed to find the podkit binary")?;
    let mut children = Vec::new();
    for name in &names {
        let child = Command::new(&exe)
            .args(["run", "-f"])
            .arg(file)
            .args(["--pod", name])
            .spawn()
            .with_context(|| format!("failed to start the supervisor of pod {name:?}"))?;
        children.push(child);
    }
    let pids: Vec<i32> = children.iter().map(|c| c.id() as i32).collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let forward = runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        anyhow::Ok(tokio::spawn(async move {
            while term.recv().await.is_some() {
                for pid in &pids {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(*pid),
                        nix::sys::signal::Signal::SIGTERM,
                    );
                }
            }
        }))
    })?;
    let mut code = ExitCode::SUCCESS;
    for mut child in children {
        let status = runtime
            .block_on(async { tokio::task::spawn_blocking(move || child.wait()).await })??;
        if !status.success() {
            code = ExitCode::FAILURE;
        }
    }
    forward.abort();
    Ok(code)
}

/// Cancels `shutdown` on SIGINT or SIGTERM.
fn shutdown_on_signal(shutdown: CancellationToken) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    Ok(tokio::spawn(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        tracing::info!("deleting the pod (signal received)");
        shutdown.cancel();
    }))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn durations_as_kubectl_takes_them() {
        let parse = super::parse_duration;
        assert_eq!(parse("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        for wrong in ["", "10", "5 m", "1d", "m5"] {
            let err = parse(wrong).expect_err(wrong);
            assert!(err.contains("is not a duration like"), "{err}");
        }
    }
}
