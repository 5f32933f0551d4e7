//! `podkit attach`: a running container's output, and its stdin and terminal with `-i` and
//! `-t`, as `kubectl attach` gives them: through the pod's supervisor, which holds them
//! (`POST /attach` on the pod's API, upgraded to a session: `crate::supervisor::attach`).

use std::io::{IsTerminal, Read, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use http_body_util::Empty;
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use tokio::sync::mpsc;

use super::exec::RawMode;
use crate::state;
use crate::supervisor::attach::{
    PROTOCOL, RESIZE, STDERR, STDIN, STDOUT, read_frame, resize_payload, write_frame,
};

/// Attach to a running container: its output from now on, and with -i your input.
///
/// podkit attach shows what the container's main process writes from now on (its log has what
/// came before: podkit logs). With -i your stdin goes to the container's, which must have
/// `stdin: true`. A container with `tty: true` writes to a terminal: with -it, and your stdin a
/// terminal, yours is in raw mode while attached and its window size is the container's, resized
/// with it. Detach with Ctrl-P Ctrl-Q (-t), or by ending podkit attach (Ctrl-C without -t): the
/// container keeps running. With `stdinOnce: true` (and no tty) the container's stdin is closed
/// when the first attach's input ends.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  podkit attach web                              (its output from now on; Ctrl-C leaves)
  podkit attach -it shell                        (a `stdin: true, tty: true` container's shell;
                                                  Ctrl-P Ctrl-Q detaches)
  podkit attach -i worker -c reader < jobs.txt   (to a container's stdin)

Exit codes: 0 when the container ended or you detached; 1 when the pod or container was not
found or not running, or the session failed.")]
pub struct AttachArgs {
    /// The pod.
    pod: String,

    /// The container (default: the pod's first container).
    #[arg(short, long)]
    container: Option<String>,

    /// Pass stdin to the container.
    #[arg(short = 'i', long)]
    stdin: bool,

    /// Stdin is a TTY: your terminal in raw mode, its size passed on.
    #[arg(short = 't', long)]
    tty: bool,

    /// Print only the container's output (no "If you don't see a command prompt" note).
    #[arg(short, long)]
    quiet: bool,

    /// The pod's namespace.
    #[arg(short = 'n', long, value_name = "NAMESPACE", default_value = "default")]
    namespace: String,
}

/// Ctrl-P, Ctrl-Q: docker's and podman's detach keys.
const DETACH_KEYS: [u8; 2] = [0x10, 0x11];

pub fn attach(root: &Path, args: AttachArgs) -> anyhow::Result<ExitCode> {
    let pod = state::read(root, &args.namespace, &args.pod)?;
    let spec = &pod.manifest["spec"];
    let containers: Vec<&serde_json::Value> = spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(spec["initContainers"].as_array().into_iter().flatten())
        .collect();
    let names: Vec<&str> = containers
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    let container = match &args.container {
        Some(name) => containers
            .iter()
            .find(|c| c["name"] == name.as_str())
            .with_context(|| {
                format!(
                    "container {name:?} is not valid for pod {:?}: choose one of: {}",
                    pod.name,
                    names.join(", ")
                )
            })?,
        None => {
            let first = containers.first().context("the pod has no containers")?;
            if names.len() > 1 && !args.quiet {
                eprintln!(
                    "Defaulted container {:?} out of: {}",
                    names[0],
                    names.join(", ")
                );
            }
            first
        }
    };
    let name = container["name"].as_str().unwrap_or_default().to_owned();
    let (has_stdin, has_tty) = (container["stdin"] == true, container["tty"] == true);
    if args.stdin && !has_stdin {
        bail!(
            "container {name:?} of pod {:?} does not take stdin: its spec has no `stdin: true` \
             (attach without -i to see its output)",
            pod.name
        );
    }
    // kubectl's rules: a terminal only where the container has one (its output is a
    // terminal's either way), raw mode only with -i and a terminal as stdin.
    let mut tty = args.tty;
    if tty && !has_tty {
        eprintln!("error: Unable to use a TTY - container {name} did not allocate one");
        tty = false;
    } else if !tty && has_tty {
        tty = true;
    }
    let raw = if tty && args.stdin {
        if std::io::stdin().is_terminal() {
            true
        } else {
            if !args.quiet && args.tty {
                eprintln!(
                    "Unable to use a TTY - input is not a terminal or the right kind of file"
                );
            }
            false
        }
    } else {
        false
    };
    if pod.supervisor.is_none() {
        bail!(
            "container {name:?} of pod {:?} is not running (the pod's supervisor is gone: podkit \
             gc removes what it left)",
            pod.name
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(session(&pod, &name, args.stdin, raw, args.quiet))?;
    Ok(ExitCode::SUCCESS)
}

/// What the local side of a session sends.
enum Input {
    Data(Vec<u8>),
    Eof,
    Detach,
}

/// Connects, then relays until the supervisor ends the session or the user detaches.
async fn session(
    pod: &state::PodState,
    container: &str,
    stdin: bool,
    raw: bool,
    quiet: bool,
) -> anyhow::Result<()> {
    let socket = pod.dir.join(crate::supervisor::API_SOCKET);
    let stream = tokio::net::UnixStream::connect(&socket)
        .await
        .with_context(|| {
            format!(
                "failed to reach the supervisor of pod {:?} at {}",
                pod.name,
                socket.display()
            )
        })?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .with_context(|| format!("failed to talk to {}", socket.display()))?;
    tokio::spawn(connection.with_upgrades());
    let uri =
        format!("/attach?container={container}&stdin={stdin}&stdout=true&stderr=true&tty={raw}");
    let request = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header(hyper::header::HOST, "podkit")
        .header(hyper::header::CONNECTION, "Upgrade")
        .header(hyper::header::UPGRADE, PROTOCOL)
        .body(Empty::<Bytes>::new())?;
    let response = sender
        .send_request(request)
        .await
        .with_context(|| format!("{} did not answer", socket.display()))?;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        bail!("{}", super::client::error_text(response).await);
    }
    let upgraded = hyper::upgrade::on(response)
        .await
        .context("the supervisor did not open the attach session")?;
    let (mut from_pod, mut to_pod) = tokio::io::split(hyper_util::rt::TokioIo::new(upgraded));

    let _raw = if raw {
        Some(RawMode::enter(&std::io::stdin())?)
    } else {
        None
    };
    if raw && !quiet {
        // kubectl's hint: the prompt was printed before we came.
        eprint!("If you don't see a command prompt, try pressing enter.\r\n");
    }
    let (input_tx, mut input) = mpsc::channel::<Input>(16);
    if stdin {
        std::thread::spawn(move || read_stdin(&input_tx, raw));
    }
    let mut winch = if raw {
        let size = netns::window_size(std::io::stdin().as_fd())?;
        write_frame(
            &mut to_pod,
            RESIZE,
            &resize_payload(size.ws_col, size.ws_row),
        )
        .await?;
        Some(tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::window_change(),
        )?)
    } else {
        None
    };
    let mut stdin_open = stdin;
    loop {
        tokio::select! {
            frame = read_frame(&mut from_pod) => {
                // The session's end: the container ended, or the supervisor ended it.
                let Ok((channel, payload)) = frame else { return Ok(()) };
                let written = match channel {
                    STDOUT => write_out(&mut std::io::stdout().lock(), &payload),
                    STDERR => write_out(&mut std::io::stderr().lock(), &payload),
                    _ => Ok(()),
                };
                written.context("failed to write the container's output")?;
            }
            got = input.recv(), if stdin_open => match got {
                Some(Input::Data(bytes)) => write_frame(&mut to_pod, STDIN, &bytes).await?,
                Some(Input::Eof) | None => {
                    stdin_open = false;
                    write_frame(&mut to_pod, STDIN, &[]).await?;
                }
                Some(Input::Detach) => {
                    if !quiet {
                        eprint!("\r\nread escape sequence\r\n");
                    }
                    return Ok(());
                }
            },
            Some(()) = async { winch.as_mut()?.recv().await } => {
                if let Ok(size) = netns::window_size(std::io::stdin().as_fd()) {
                    let payload = resize_payload(size.ws_col, size.ws_row);
                    write_frame(&mut to_pod, RESIZE, &payload).await?;
                }
            }
        }
    }
}

fn write_out(out: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    out.write_all(bytes)?;
    out.flush()
}

/// Reads stdin to its end, passing it on; on a raw terminal, Ctrl-P Ctrl-Q detaches (a
/// Ctrl-P followed by anything else is passed on with it, as docker does).
fn read_stdin(tx: &mpsc::Sender<Input>, raw: bool) {
    let mut stdin = std::io::stdin().lock();
    let mut buf = [0u8; 4096];
    let mut held = false;
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) | Err(_) => {
                let _ = tx.blocking_send(Input::Eof);
                return;
            }
            Ok(n) => n,
        };
        let mut out = Vec::with_capacity(n + 1);
        for &byte in &buf[..n] {
            if !raw {
                out.push(byte);
            } else if held {
                held = false;
                if byte == DETACH_KEYS[1] {
                    if !out.is_empty() {
                        let _ = tx.blocking_send(Input::Data(std::mem::take(&mut out)));
                    }
                    let _ = tx.blocking_send(Input::Detach);
                    return;
                }
                out.extend_from_slice(&[DETACH_KEYS[0], byte]);
            } else if byte == DETACH_KEYS[0] {
                held = true;
            } else {
                out.push(byte);
            }
        }
        if !out.is_empty() && tx.blocking_send(Input::Data(out)).is_err() {
            return;
        }
    }
}
