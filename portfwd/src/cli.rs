//! The command line of a forward: the arguments and output of `portfwd` and of
//! `podkit port-forward`, which are the same command. A front for binaries (it prints, and uses
//! anyhow for its messages), kept in the library so both binaries share it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::{Config, Event, Forwarder, ListenAddress, PortMapping, ProxyProtocol, Stopped, Target};

/// Runs the forward `args` describe until Ctrl-C, SIGTERM or the target's deletion; prints
/// kubectl's lines, and errors on stderr. The exit code: 0 after a signal, 1 otherwise.
pub fn run(args: Args) -> ExitCode {
    match forward(args) {
        Ok(Stopped::Shutdown) => ExitCode::SUCCESS,
        Ok(Stopped::TargetGone { target }) => {
            eprintln!("error: the network namespace of {target} was deleted: forwarding stopped");
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Forward host ports into a pod's network namespace.
///
/// Each connection to a local port is dialed to localhost:REMOTE inside the pod (127.0.0.1,
/// then ::1) and relayed both ways with splice(2). A refused dial closes that connection
/// only. Forwarding ends on Ctrl-C or SIGTERM, or when the pod's network namespace is deleted.
///
/// Examples: `portfwd 8080:8080` (the only running pod), `portfwd web 8080:80`,
/// `portfwd web :80` (random local port),
/// `portfwd --netns blue 8053:53/udp`, `portfwd --pid 4242 --address 0.0.0.0 9000`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The pod (its network namespace pinned at /run/netns/NAMESPACE_POD; when left out, the
    /// only running podkit pod), unless --netns or --pid is given; then the port mappings:
    /// [LOCAL:]REMOTE[/tcp|/udp]. LOCAL empty or 0 picks a free port.
    #[arg(value_name = "[POD] [LOCAL:]REMOTE", required = true)]
    args: Vec<String>,

    /// The pod's namespace.
    #[arg(short = 'n', long, env = "PODKIT_NAMESPACE", default_value = "default")]
    namespace: String,

    /// Forward into this network namespace: a name under /run/netns, or a path.
    #[arg(long, env = "PODKIT_PORTFWD_NETNS", conflicts_with = "pid")]
    netns: Option<String>,

    /// Forward into the network namespace of this process.
    #[arg(long, env = "PODKIT_PORTFWD_PID")]
    pid: Option<u32>,

    /// Addresses to listen on, comma separated: `localhost` (127.0.0.1 and ::1), or IP
    /// addresses (0.0.0.0 listens on every interface).
    #[arg(
        long,
        env = "PODKIT_PORTFWD_ADDRESS",
        value_delimiter = ',',
        default_value = "localhost"
    )]
    address: Vec<ListenAddress>,

    /// A UDP flow with no datagram either way for this long is ended.
    #[arg(long, env = "PODKIT_PORTFWD_UDP_IDLE_TIMEOUT", default_value = "60s", value_parser = crate::parse_duration)]
    udp_idle_timeout: Duration,

    /// The most UDP flows (a socket each) per mapping and address; a new client when it is full
    /// ends the least recently active flow.
    #[arg(long, env = "PODKIT_PORTFWD_UDP_MAX_FLOWS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    udp_max_flows: u32,

    /// Start each TCP connection into the pod with a PROXY protocol header (v1: text, v2:
    /// binary) carrying the client's address, for apps that expect one (nginx
    /// `listen ... proxy_protocol`, HAProxy `accept-proxy`).
    #[arg(long, env = "PODKIT_PORTFWD_PROXY_PROTOCOL", value_name = "v1|v2")]
    proxy_protocol: Option<ProxyProtocol>,

    /// On Ctrl-C or SIGTERM, open connections get this long to finish.
    #[arg(long, env = "PODKIT_PORTFWD_DRAIN_TIMEOUT", default_value = "10s", value_parser = crate::parse_duration)]
    drain_timeout: Duration,

    /// Worker threads relaying connections; 1 runs everything on the main thread, which is
    /// the fastest with few cores (splice leaves little work outside the kernel).
    #[arg(long, env = "PODKIT_PORTFWD_THREADS", default_value_t = 1)]
    threads: usize,

    /// The pipe size asked for each direction of a connection (bytes moved per splice call).
    #[arg(long, env = "PODKIT_PORTFWD_PIPE_SIZE", default_value_t = 256 * 1024)]
    pipe_size: usize,

    /// Print kubectl's `Handling connection for PORT` line for each connection and UDP flow
    /// (and, from the `portfwd` binary, log each connection's end at debug level).
    #[arg(short, long, conflicts_with = "quiet")]
    verbose: bool,

    /// No line per connection: the default now; kept so that scripts passing it still work.
    #[arg(short, long, hide = true)]
    quiet: bool,
}

impl Args {
    fn config(&self) -> anyhow::Result<Config> {
        let (target, ports) = match (&self.netns, self.pid) {
            (Some(netns), _) => (Target::Netns(netns.clone()), &self.args[..]),
            (None, Some(pid)) => (Target::Pid(pid), &self.args[..]),
            // `portfwd 8080:8080`: no pod named, the only running one (as kubectl's current
            // context names one for it).
            (None, None)
                if self.args[0].parse::<PortMapping>().is_ok()
                    && !is_pod(&self.namespace, &self.args[0]) =>
            {
                let (namespace, name) = only_running_pod(&pods_dir())?;
                (Target::Pod { namespace, name }, &self.args[..])
            }
            (None, None) => (
                Target::Pod {
                    namespace: self.namespace.clone(),
                    name: self.args[0].clone(),
                },
                &self.args[1..],
            ),
        };
        if ports.is_empty() {
            bail!("no port mappings given: expected [LOCAL:]REMOTE after the pod's name");
        }
        let ports = ports
            .iter()
            .map(|spec| spec.parse::<PortMapping>())
            .collect::<Result<Vec<_>, _>>()?;
        let config = Config::new(target, ports)
            .addresses(self.address.clone())
            .udp_idle_timeout(self.udp_idle_timeout)
            .udp_max_flows(self.udp_max_flows as usize)
            .drain_timeout(self.drain_timeout)
            .pipe_size(self.pipe_size);
        Ok(match self.proxy_protocol {
            Some(version) => config.proxy_protocol(version),
            None => config,
        })
    }

    /// Whether `-v` was given: a line per connection.
    pub fn verbose(&self) -> bool {
        self.verbose
    }
}

/// Where podkit keeps its pods: `$PODKIT_ROOT/pods`, by default /run/podkit/pods.
fn pods_dir() -> PathBuf {
    std::env::var_os("PODKIT_ROOT")
        .map_or_else(|| PathBuf::from("/run/podkit"), PathBuf::from)
        .join("pods")
}

fn is_pod(namespace: &str, name: &str) -> bool {
    pods_dir().join(format!("{namespace}_{name}")).is_dir()
}

/// The one podkit pod whose network namespace is up (its namespace and name); an error naming
/// them when there are several, or saying so when there is none.
fn only_running_pod(pods: &Path) -> anyhow::Result<(String, String)> {
    let mut running: Vec<String> = match std::fs::read_dir(pods) {
        Ok(entries) => entries
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| entry.file_name().into_string().ok())
            // Hidden names are pods being created or removed.
            .filter(|name| !name.starts_with('.') && pods.join(name).join("ns/net").exists())
            .collect(),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(err) => return Err(err).with_context(|| format!("failed to list {}", pods.display())),
    };
    running.sort();
    match running.len() {
        0 => bail!(
            "no pod is running (none in {}): name a pod, or use --netns or --pid",
            pods.display()
        ),
        1 => {
            // A pod's directory is named `<namespace>_<name>`.
            let key = running.remove(0);
            let (namespace, name) = key.split_once('_').unwrap_or(("default", &key));
            Ok((namespace.to_owned(), name.to_owned()))
        }
        _ => {
            // As the user names them: `web`, or `web -n shop` outside the default namespace.
            let named: Vec<String> = running
                .iter()
                .map(|key| match key.split_once('_') {
                    Some(("default", name)) => name.to_owned(),
                    Some((namespace, name)) => format!("{name} -n {namespace}"),
                    None => key.clone(),
                })
                .collect();
            bail!(
                "{} pods are running ({}): name one, as in `portfwd {} 8080:8080`",
                named.len(),
                named.join(", "),
                named[0]
            )
        }
    }
}

fn forward(args: Args) -> anyhow::Result<Stopped> {
    let config = args.config()?;
    raise_fd_limit();
    let mut runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(args.threads);
        builder
    };
    let runtime = runtime
        .enable_all()
        .build()
        .context("failed to start the tokio runtime")?;
    runtime.block_on(async move {
        let mut forwarder = Forwarder::bind(config).await?;
        let mut stdout = std::io::stdout().lock();
        for listening in forwarder.listeners() {
            writeln!(stdout, "{listening}").context("failed to write to stdout")?;
        }
        stdout.flush().context("failed to write to stdout")?;
        drop(stdout);
        if args.verbose {
            let printer = Printer::start().context("failed to start the output thread")?;
            forwarder = forwarder.on_event(move |event| printer.event(event));
        }
        let shutdown = CancellationToken::new();
        tokio::spawn(cancel_on_signal(shutdown.clone()));
        Ok(forwarder.run(shutdown).await?)
    })
}

/// Prints kubectl's `Handling connection for 8080` lines from a thread of its own: a stdout
/// that nobody reads (a full pipe) must not stall forwarding, so lines it cannot take are
/// dropped.
struct Printer {
    lines: std::sync::mpsc::SyncSender<u16>,
}

impl Printer {
    fn start() -> std::io::Result<Self> {
        let (lines, inbox) = std::sync::mpsc::sync_channel::<u16>(1024);
        std::thread::Builder::new()
            .name("portfwd-stdout".into())
            .spawn(move || {
                for port in inbox {
                    // A closed stdout must not stop forwarding either.
                    let _ = writeln!(std::io::stdout(), "Handling connection for {port}");
                }
            })?;
        Ok(Printer { lines })
    }

    fn event(&self, event: &Event<'_>) {
        if let Event::Connection { local, .. } | Event::UdpFlow { local, .. } = event {
            let _ = self.lines.try_send(local.port());
        }
    }
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        warn!("failed to install signal handlers: stop with SIGKILL");
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    shutdown.cancel();
}

/// Each connection holds six descriptors (two sockets, two pipes): take the hard limit.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && let Err(err) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        warn!(%err, "failed to raise the open file limit");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_only_running_pod_is_the_target_and_several_are_named() {
        let pods = tempfile::tempdir().expect("tempdir");
        let err = only_running_pod(pods.path()).expect_err("none");
        assert!(err.to_string().starts_with("no pod is running"), "{err}");
        for name in ["default_web", ".hidden", "default_ended"] {
            std::fs::create_dir_all(pods.path().join(name).join("ns")).expect("mkdir");
        }
        std::fs::write(pods.path().join("default_web/ns/net"), "").expect("pin");
        std::fs::create_dir_all(pods.path().join(".hidden/ns/net")).expect("pin");
        assert_eq!(
            only_running_pod(pods.path()).expect("one"),
            ("default".to_owned(), "web".to_owned())
        );
        std::fs::write(pods.path().join("default_ended/ns/net"), "").expect("pin");
        let err = only_running_pod(pods.path()).expect_err("two");
        assert_eq!(
            err.to_string(),
            "2 pods are running (ended, web): name one, as in `portfwd ended 8080:8080`"
        );
    }
}
