//! A container's stdin and terminal (`stdin`, `stdinOnce`, `tty`) and `podkit attach`'s
//! sessions, as containerd's CRI plugin keeps them (`internal/cri/io/container_io.go`):
//!
//! - `tty: true`: a pty is the container's stdin, stdout and stderr (a host process's made
//!   here, an image container's received from the runtime's console socket); its master is
//!   read for the log (stream `stdout`, as CRI logs a terminal) and written for stdin;
//! - `stdin: true` without a tty: a pipe whose write end the supervisor holds for the run's
//!   life, so the container sees no EOF while nobody is attached;
//! - each run gets its own ([`RunIo`]), closed when it ends;
//! - an attach session gets what the container writes from then on (no history: the log has
//!   it), and writes to its stdin. When the client's stdin ends, the container's stdin is closed
//!   if `stdinOnce` and not `tty`, and the session then lasts until the container ends; else
//!   the session ends (containerd's rule). A client that goes away ends its session.
//!
//! The session's stream, after `POST /attach` is upgraded (`Upgrade: podkit-attach`), is frames
//! both ways: one byte of channel (Kubernetes' remotecommand numbering), four of length (big
//! endian), the payload. Client to supervisor: [`STDIN`] (an empty one: stdin ended) and
//! [`RESIZE`] (columns, rows: two u16 each). Supervisor to client: [`STDOUT`] and [`STDERR`];
//! the stream's end is the session's.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::{Pod, lock};
use crate::spec;

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const RESIZE: u8 = 4;

/// The `Upgrade` protocol of `POST /attach`.
pub const PROTOCOL: &str = "podkit-attach";

/// The largest frame either side sends or takes.
pub const MAX_FRAME: usize = 64 * 1024;

/// A chunk of a container's output: its channel ([`STDOUT`], [`STDERR`]) and bytes.
pub(crate) type Chunk = (u8, Bytes);

/// How many chunks an attached client may fall behind before it loses some: the log keeps
/// them; a client that slow must not slow the container.
const OUTPUT_BACKLOG: usize = 1024;

/// The containers' current runs that can be attached to, by container name.
pub(crate) type Attachable = Mutex<HashMap<String, Arc<RunIo>>>;

/// The supervisor's ends of one run's stdio.
#[derive(Debug)]
pub(crate) struct RunIo {
    tty: bool,
    stdin_once: bool,
    /// Feeds the task that writes the container's stdin; `None` without `stdin: true`. A
    /// `None` sent closes the stdin once what came before is written (`stdinOnce`).
    stdin: Option<mpsc::Sender<Option<Bytes>>>,
    /// Cancelled when the container's stdin is closed (`stdinOnce`, or the run ended): the
    /// writer task ends and drops the pipe's write end (EOF) or its copy of the pty master.
    stdin_closed: CancellationToken,
    /// The pty's master, for window size changes; taken when the run ends.
    resize: Mutex<Option<OwnedFd>>,
    /// What the log capture tees the output to; taken when the run ends, so sessions end once
    /// the capture has sent its last chunk.
    output: Mutex<Option<broadcast::Sender<Chunk>>>,
}

impl RunIo {
    /// Ends the run's stdio for attach: stdin closed, no new session, no more resizes.
    pub(crate) fn close(&self) {
        self.stdin_closed.cancel();
        lock(&self.output).take();
        lock(&self.resize).take();
    }
}

/// The fds of one run's stdio before its start: what the container gets, and the
/// supervisor's ends (see [`Plumbing::start`]).
#[derive(Debug, Default)]
pub(crate) struct Plumbing {
    stdio: spec::Stdio,
    /// The pty's master (`tty`).
    master: Option<OwnedFd>,
    /// The write end of the stdin pipe (`stdin` without `tty`).
    stdin_writer: Option<OwnedFd>,
}

/// A host process's three stdio for `stdio`, and the supervisor's ends: a pty's slave end
/// thrice (the child makes it its controlling terminal), or a stdin pipe and the log pipes.
pub(crate) fn host_stdio(stdio: spec::Stdio) -> std::io::Result<([netns::Stdio; 3], Plumbing)> {
    use netns::Stdio;
    if stdio.tty {
        let pty = netns::open_pty(None)?;
        let child = [
            Stdio::Fd(pty.slave.try_clone()?),
            Stdio::Fd(pty.slave.try_clone()?),
            Stdio::Fd(pty.slave),
        ];
        let plumbing = Plumbing {
            stdio,
            master: Some(pty.master),
            stdin_writer: None,
        };
        return Ok((child, plumbing));
    }
    let (stdin, plumbing) = image_stdin(stdio)?;
    Ok(([stdin, Stdio::Pipe, Stdio::Pipe], plumbing))
}

/// An image container's stdin, as the OCI runtime passes its own on (`create` without a
/// terminal): the read end of a pipe with `stdin`, else `/dev/null`. With `tty` the runtime
/// makes the pty: see [`Plumbing::set_console`].
pub(crate) fn image_stdin(stdio: spec::Stdio) -> std::io::Result<(netns::Stdio, Plumbing)> {
    let mut plumbing = Plumbing {
        stdio,
        ..Plumbing::default()
    };
    if !stdio.stdin || stdio.tty {
        return Ok((netns::Stdio::Null, plumbing));
    }
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    plumbing.stdin_writer = Some(write);
    Ok((netns::Stdio::Fd(read), plumbing))
}

/// The output streams a run's log is captured from.
pub(crate) type Reader = Box<dyn AsyncRead + Unpin + Send>;

/// The supervisor's side of a started run's stdio (see [`Plumbing::start`]).
pub(crate) struct Started {
    /// What the log is read from: the pipes, or the pty's master and nothing.
    pub stdout: Reader,
    pub stderr: Reader,
    /// Where the log capture tees the output for attached clients.
    pub tee: broadcast::Sender<Chunk>,
    pub io: Arc<RunIo>,
}

impl Plumbing {
    /// The pty master the runtime sent for a `terminal: true` container.
    pub(crate) fn set_console(&mut self, master: OwnedFd) {
        self.master = Some(master);
    }

    /// Starts the supervisor's side once the container runs: what its log is read from
    /// (`stdout` and `stderr` are the log pipes' read ends; with a tty, the pty's master and
    /// nothing), the task writing its stdin, and the [`RunIo`] attach sessions use. The
    /// capture must tee its output to [`Started::tee`].
    pub(crate) fn start(
        self,
        stdout: Option<OwnedFd>,
        stderr: Option<OwnedFd>,
    ) -> Result<Started, String> {
        let failed = |e: std::io::Error| format!("failed to set up the container's stdio: {e}");
        let (output, _) = broadcast::channel(OUTPUT_BACKLOG);
        let stdin_closed = CancellationToken::new();
        let (out, err, writer, resize): (Reader, Reader, Option<OwnedFd>, Option<OwnedFd>) =
            match self.master {
                Some(master) => {
                    nix::fcntl::fcntl(
                        &master,
                        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
                    )
                    .map_err(|e| failed(e.into()))?;
                    let reader = pipe::Receiver::from_owned_fd_unchecked(
                        master.try_clone().map_err(failed)?,
                    )
                    .map_err(failed)?;
                    let writer = self
                        .stdio
                        .stdin
                        .then(|| master.try_clone())
                        .transpose()
                        .map_err(failed)?;
                    (
                        Box::new(reader),
                        Box::new(tokio::io::empty()),
                        writer,
                        Some(master),
                    )
                }
                None => {
                    let pipe = |fd: Option<OwnedFd>| -> Result<Reader, String> {
                        let fd = fd.ok_or_else(|| "no pipe".to_owned())?;
                        Ok(Box::new(
                            pipe::Receiver::from_owned_fd(fd).map_err(|e| e.to_string())?,
                        ))
                    };
                    (pipe(stdout)?, pipe(stderr)?, self.stdin_writer, None)
                }
            };
        let stdin = match writer {
            Some(fd) => {
                let sender = if self.stdio.tty {
                    pipe::Sender::from_owned_fd_unchecked(fd)
                } else {
                    pipe::Sender::from_owned_fd(fd)
                }
                .map_err(failed)?;
                let (tx, rx) = mpsc::channel(16);
                tokio::spawn(write_stdin(sender, rx, stdin_closed.clone()));
                Some(tx)
            }
            None => None,
        };
        let io = Arc::new(RunIo {
            tty: self.stdio.tty,
            stdin_once: self.stdio.stdin_once,
            stdin,
            stdin_closed,
            resize: Mutex::new(resize),
            output: Mutex::new(Some(output.clone())),
        });
        Ok(Started {
            stdout: out,
            stderr: err,
            tee: output,
            io,
        })
    }
}

/// Writes what sessions send to the container's stdin until it is closed. Dropping `stdin`
/// then closes the pipe (the container reads EOF) or this copy of the pty's master.
async fn write_stdin(
    mut stdin: pipe::Sender,
    mut chunks: mpsc::Receiver<Option<Bytes>>,
    closed: CancellationToken,
) {
    loop {
        let chunk = tokio::select! {
            chunk = chunks.recv() => match chunk {
                Some(Some(chunk)) => chunk,
                Some(None) | None => return,
            },
            () = closed.cancelled() => return,
        };
        tokio::select! {
            written = stdin.write_all(&chunk) => if written.is_err() {
                return; // the container closed its stdin
            },
            () = closed.cancelled() => return,
        }
    }
}

/// `POST /attach?container=NAME[&stdin=true]`: checks the container and upgrades the
/// connection to a session.
pub(crate) fn request(
    pod: &Arc<Pod>,
    mut req: Request<hyper::body::Incoming>,
    stop: &CancellationToken,
) -> Result<Response<super::api::Body>, (StatusCode, String)> {
    let mut container = None;
    let mut stdin = false;
    for pair in req.uri().query().unwrap_or("").split('&') {
        match pair.split_once('=') {
            Some(("container", name)) => container = Some(name.to_owned()),
            Some(("stdin", value)) => stdin = value == "true",
            Some(("stdout" | "stderr" | "tty", _)) => {}
            _ if pair.is_empty() => {}
            _ => {
                return Err((
                    StatusCode::BAD_REQUEST,
                    format!("unknown parameter {pair:?}"),
                ));
            }
        }
    }
    let member = super::api::find_container(pod, container)?;
    let name = &member.name;
    if stdin && !member.stdio.stdin {
        return Err((
            StatusCode::BAD_REQUEST,
            format!(
                "container {name:?} of pod {:?} does not take stdin: its spec has no `stdin: \
                 true` (attach without -i to see its output)",
                pod.plan.name
            ),
        ));
    }
    let upgrade = req
        .headers()
        .get(hyper::header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(PROTOCOL.as_bytes()));
    if !upgrade {
        return Err((
            StatusCode::BAD_REQUEST,
            format!(
                "attach takes an upgraded connection: Connection: Upgrade, Upgrade: {PROTOCOL}"
            ),
        ));
    }
    let io = lock(&pod.attachable).get(name).cloned();
    // Subscribed now: the client gets everything written after it is told it is attached.
    let output = io
        .as_ref()
        .and_then(|io| lock(&io.output).as_ref().map(broadcast::Sender::subscribe));
    let (Some(io), Some(output)) = (io, output) else {
        return Err((
            StatusCode::CONFLICT,
            format!(
                "container {name:?} of pod {:?} is not running",
                pod.plan.name
            ),
        ));
    };
    let stop = stop.clone();
    let container = name.clone();
    tokio::spawn(async move {
        match hyper::upgrade::on(&mut req).await {
            Ok(upgraded) => {
                let stream = hyper_util::rt::TokioIo::new(upgraded);
                session(io, stream, output, stdin, stop).await;
                debug!(container, "attach session ended");
            }
            Err(err) => debug!(%err, "attach: the upgrade failed"),
        }
    });
    let mut response = Response::new(super::api::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("Upgrade"),
    );
    headers.insert(
        hyper::header::UPGRADE,
        hyper::header::HeaderValue::from_static(PROTOCOL),
    );
    Ok(response)
}

/// How a client's input ended.
enum InputEnd {
    /// It said its stdin ended.
    Eof,
    /// The connection closed (or broke).
    Gone,
}

/// One attach session: the container's output to the client, the client's stdin (when
/// `stdin`) and resizes to the container, until either side ends (see the module's comment).
async fn session<S>(
    io: Arc<RunIo>,
    stream: S,
    mut output: broadcast::Receiver<Chunk>,
    stdin: bool,
    stop: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut from_client, mut to_client) = tokio::io::split(stream);
    let send_output = async {
        loop {
            match output.recv().await {
                Ok((channel, bytes)) => {
                    if write_frame(&mut to_client, channel, &bytes).await.is_err() {
                        return; // the client left
                    }
                }
                Err(broadcast::error::RecvError::Lagged(lost)) => {
                    debug!(lost, "attach: a slow client lost output");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    };
    let take_input = async {
        loop {
            let Ok((channel, payload)) = read_frame(&mut from_client).await else {
                return InputEnd::Gone;
            };
            match channel {
                STDIN if !stdin => {}
                STDIN if payload.is_empty() => return InputEnd::Eof,
                STDIN => {
                    if let Some(tx) = &io.stdin {
                        tokio::select! {
                            _ = tx.send(Some(Bytes::from(payload))) => {}
                            () = io.stdin_closed.cancelled() => {}
                        }
                    }
                }
                RESIZE => {
                    if let Some(size) = window_size(&payload)
                        && let Some(master) = lock(&io.resize).as_ref()
                    {
                        let _ = netns::set_window_size(master, &size);
                    }
                }
                _ => {}
            }
        }
    };
    tokio::pin!(send_output);
    let end = tokio::select! {
        end = take_input => end,
        () = &mut send_output => return,
        () = stop.cancelled() => return,
    };
    if stdin && io.stdin_once && !io.tty {
        // The first attach's stdin is the container's whole stdin: closed once what it sent
        // is written.
        if let Some(tx) = &io.stdin {
            tokio::select! {
                _ = tx.send(None) => {}
                () = io.stdin_closed.cancelled() => {}
            }
        }
        if matches!(end, InputEnd::Eof) {
            // Its output goes on to the client until the container ends (or the client goes).
            tokio::select! {
                () = send_output => {}
                () = stop.cancelled() => {}
            }
        }
    }
}

/// A [`RESIZE`] payload: columns and rows, big-endian u16 each.
fn window_size(payload: &[u8]) -> Option<netns::Winsize> {
    let [c0, c1, r0, r1] = payload.try_into().ok()?;
    Some(netns::Winsize {
        ws_col: u16::from_be_bytes([c0, c1]),
        ws_row: u16::from_be_bytes([r0, r1]),
        ws_xpixel: 0,
        ws_ypixel: 0,
    })
}

/// A [`RESIZE`] payload for a terminal of `columns` x `rows`.
pub fn resize_payload(columns: u16, rows: u16) -> [u8; 4] {
    let (c, r) = (columns.to_be_bytes(), rows.to_be_bytes());
    [c[0], c[1], r[0], r[1]]
}

/// Writes one frame and flushes it.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    to: &mut W,
    channel: u8,
    payload: &[u8],
) -> std::io::Result<()> {
    for part in payload.chunks(MAX_FRAME) {
        let mut head = [channel, 0, 0, 0, 0];
        head[1..].copy_from_slice(&(part.len() as u32).to_be_bytes());
        to.write_all(&head).await?;
        to.write_all(part).await?;
    }
    if payload.is_empty() {
        to.write_all(&[channel, 0, 0, 0, 0]).await?;
    }
    to.flush().await
}

/// Reads one frame: its channel and payload. An error at the stream's end or on a frame over
/// [`MAX_FRAME`].
pub async fn read_frame<R: AsyncRead + Unpin>(from: &mut R) -> std::io::Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 5];
    from.read_exact(&mut head).await?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("an attach frame of {len} bytes (at most {MAX_FRAME})"),
        ));
    }
    let mut payload = vec![0u8; len];
    from.read_exact(&mut payload).await?;
    Ok((head[0], payload))
}
