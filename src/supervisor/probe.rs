//! Probes and lifecycle hooks, as kubelet runs them.
//!
//! A handler (exec, httpGet, tcpSocket, grpc, sleep) runs against one run of a container: exec
//! inside the container's own namespaces (its mount namespace too, so it sees the container's
//! volumes), httpGet, tcpSocket and grpc from a socket made in the pod's network namespace (to
//! the pod's loopback unless the probe names a host). The probe loop runs postStart, then the startup
//! probe, then liveness and readiness side by side; it marks the container started and ready in
//! the status, and asks `kill` for a restart when the container must be restarted.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use netns::{Namespace, NsKind, Process, Setup, Stdio};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

mod grpc;
mod insecure;

use super::Pod;
use super::member::{Turn, environment};
use super::reaper::Exit;
use super::runtime;
use crate::spec::{Handler, Member, Probe, Runs};

/// How much of an exec handler's output goes into an event message.
const OUTPUT_LIMIT: u64 = 1024;

/// Runs `handler` for the run of `member` whose main process is `leader`, within `timeout`.
/// The error says why it failed, for the event.
pub async fn run_handler(
    pod: &Pod,
    member: &Member,
    leader: u32,
    handler: &Handler,
    timeout: Duration,
) -> Result<(), String> {
    let work = async {
        match handler {
            // Bounded by its own timeout, which also ends the command.
            Handler::Exec { command } => return exec(pod, member, leader, command, timeout).await,
            Handler::HttpGet {
                host,
                port,
                path,
                headers,
                https,
            } => http_get(pod, host.as_deref(), *port, path, headers, *https).await,
            Handler::TcpSocket { host, port } => {
                connect(pod, host.as_deref(), *port).await.map(drop)
            }
            Handler::Grpc { port, service } => grpc::check(pod, *port, service, timeout).await,
            Handler::Sleep { duration } => {
                tokio::time::sleep(*duration).await;
                Ok(())
            }
        }
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(result) => result,
        Err(_) => Err(format!("timed out after {}s", timeout.as_secs_f32())),
    }
}

async fn exec(
    pod: &Pod,
    member: &Member,
    leader: u32,
    command: &[String],
    timeout: Duration,
) -> Result<(), String> {
    let (read, write) = nix::unistd::pipe().map_err(|e| format!("failed to make a pipe: {e}"))?;
    let write_err = write
        .try_clone()
        .map_err(|e| format!("failed to make a pipe: {e}"))?;
    let (namespaces, mut process, setup) = if matches!(member.runs, Runs::Image(_)) {
        // In the container, through its runtime: its root, user, capabilities and cgroup.
        let rt = pod.runtime.as_ref().ok_or_else(|| {
            "no OCI runtime: the pod was planned without image containers".to_owned()
        })?;
        let id = runtime::container_id(&pod.plan.key(), &member.name);
        let host = netns::Namespaces::new(std::iter::empty());
        (host, rt.exec(&id, command), rt.setup().new_session())
    } else {
        let mut namespaces = pod.ns.namespaces().clone();
        // The container's own mount namespace, when it has one (it has volumes, or a /proc).
        if let Ok(mnt) = Namespace::from_pid(NsKind::Mnt, leader) {
            namespaces.insert(mnt);
        }
        let process = Process::new(&command[0])
            .args(&command[1..])
            .envs(environment(pod, member, true));
        let mut setup = Setup::new().new_session();
        if let Some(dir) = &member.working_dir {
            setup = setup.chdir(dir).map_err(|e| e.to_string())?;
        }
        setup = super::member::host_security(setup, member)?;
        setup = setup.user(member.run_as_user, member.run_as_group);
        (namespaces, process, setup)
    };
    process = process
        .stdin(Stdio::Null)
        .stdout(Stdio::Fd(write))
        .stderr(Stdio::Fd(write_err));
    // In the container's cgroup, as kubelet's exec probes are: it ends with the container.
    if let Some(cgroup) = &pod.cgroup
        && let Ok(dir) = cgroup.container(&member.name)
    {
        process = process.cgroup(dir);
    }
    let failed = |e: netns::Error| format!("failed to run {:?}: {e}", command[0]);
    // Forked here, exec'd meanwhile: the supervisor's other tasks go on. Our copies of the
    // write end go with `process`, so the read below sees the end.
    // The pidfd is opened under the reaper's lock, before the child can be reaped.
    let ((pending, pidfd), exit) = pod
        .reaper
        .spawn(|| {
            let pending = namespaces.begin(process, setup)?;
            let pidfd = netns::PidFd::open(pending.pid());
            Ok::<_, netns::Error>((pending.pid(), (pending, pidfd)))
        })
        .map_err(failed)?;
    let pid = pending.pid();
    let output = async {
        let mut text = String::new();
        if let Ok(pipe) = tokio::net::unix::pipe::Receiver::from_owned_fd(read) {
            let _ = pipe.take(OUTPUT_LIMIT).read_to_string(&mut text).await;
        }
        text
    };
    // The timeout covers the way to exec too: a command stuck before it is killed as well.
    let ran = tokio::time::timeout(timeout, async {
        pending.exec().await.map_err(failed)?;
        Ok::<_, String>(tokio::join!(exit, output))
    })
    .await;
    match ran {
        Ok(Err(message)) => Err(message),
        Ok(Ok((Ok(Exit::Code(0)), _))) => Ok(()),
        Ok(Ok((Ok(exit), output))) => Err(format!("{exit}: {}", output.trim())),
        Ok(Ok((Err(_), _))) => Err("the reaper stopped".into()),
        Err(_) => {
            if let Ok(pidfd) = &pidfd {
                let _ = pidfd.signal(Signal::SIGKILL);
            }
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
            Err(format!(
                "command timed out after {}s",
                timeout.as_secs_f32()
            ))
        }
    }
}

/// A connection to `host:port` inside the pod; `localhost` when no host is given (the pod has no
/// address of its own: its members listen on loopback).
pub(super) async fn connect(
    pod: &Pod,
    host: Option<&str>,
    port: u16,
) -> Result<tokio::net::TcpStream, String> {
    let dialer = pod.dialer()?;
    let result = match host.map(str::parse::<IpAddr>) {
        None => dialer.connect_localhost(port).await,
        Some(Ok(ip)) => dialer.connect(SocketAddr::new(ip, port)).await,
        Some(Err(_)) => {
            return Err(format!(
                "host {:?} is not an IP address (names are not resolved in a pod)",
                host.unwrap_or("")
            ));
        }
    };
    result.map_err(|e| {
        let mut text = e.to_string();
        if let Some(cause) = std::error::Error::source(&e) {
            text = format!("{text}: {cause}");
        }
        text
    })
}

async fn http_get(
    pod: &Pod,
    host: Option<&str>,
    port: u16,
    path: &str,
    headers: &[(String, String)],
    https: bool,
) -> Result<(), String> {
    let stream = connect(pod, host, port).await?;
    let mut sender = if https {
        let tls = insecure::connect(stream, host.unwrap_or("localhost")).await?;
        http1_handshake(tls).await?
    } else {
        http1_handshake(stream).await?
    };
    let mut request = hyper::Request::get(path)
        .header(
            hyper::header::HOST,
            format!("{}:{port}", host.unwrap_or("localhost")),
        )
        .header(hyper::header::USER_AGENT, "kube-probe/podkit");
    for (name, value) in headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("bad probe request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("HTTP request failed: {e}"))?;
    let status = response.status();
    // kubelet: 200 <= code < 400 is success.
    if (200..400).contains(&status.as_u16()) {
        Ok(())
    } else {
        Err(format!(
            "HTTP probe failed with statuscode: {}",
            status.as_u16()
        ))
    }
}

/// An HTTP/1.1 client connection over `io`, its connection task spawned.
async fn http1_handshake<T>(
    io: T,
) -> Result<hyper::client::conn::http1::SendRequest<Empty<Bytes>>, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    tokio::spawn(connection);
    Ok(sender)
}

/// A probe's or hook's request to restart a run, with the grace period to stop it in: the
/// failed probe's own `terminationGracePeriodSeconds`, else (`None`) the pod's.
#[derive(Debug, Default)]
pub struct Kill {
    pub token: CancellationToken,
    grace: std::sync::Mutex<Option<Duration>>,
}

impl Kill {
    fn request(&self, grace: Option<Duration>) {
        *self.grace.lock().unwrap_or_else(|e| e.into_inner()) = grace;
        self.token.cancel();
    }

    pub fn grace(&self) -> Option<Duration> {
        *self.grace.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Runs postStart and the probes of one run. Marks the container started and ready, passes
/// its `turn` (a main container's after postStart, a sidecar's once started), and asks `kill`
/// for a restart when postStart fails or the startup or liveness probe gives up. The run's
/// owner aborts it when the run stops: no probe runs during termination.
pub async fn watch(
    pod: Arc<Pod>,
    member: Member,
    leader: u32,
    object: String,
    turn: Turn,
    kill: Arc<Kill>,
) {
    if let Some(hook) = &member.post_start {
        // kubelet gives postStart no timeout of its own; the pod's grace period bounds it here.
        let limit = pod
            .plan
            .termination_grace_period
            .max(Duration::from_secs(1));
        // kubelet runs postStart within the container's start: the next container waits.
        if let Err(err) = run_handler(&pod, &member, leader, hook, limit).await {
            turn.tried();
            pod.update(|s| {
                s.event(
                    "Warning",
                    "FailedPostStartHook",
                    &object,
                    format!("PostStartHook failed: {err}"),
                )
            });
            kill.request(None);
            return;
        }
    }
    turn.tried();
    if let Some(probe) = &member.startup_probe
        && !probe_until(&pod, &member, leader, &object, probe, "Startup", true).await
    {
        pod.update(|s| {
            s.event(
                "Normal",
                "Killing",
                &object,
                format!(
                    "Container {} failed startup probe, will be restarted",
                    member.name
                ),
            )
        });
        kill.request(probe.termination_grace_period);
        return;
    }
    pod.update(|s| {
        if let Some(r) = s.record(&member.name) {
            r.started = true;
        }
        // A plain init container is ready once it completed, as in kubelet: it is there to
        // finish.
        if member.readiness_probe.is_none() && !member.is_plain_init() {
            set_ready(s, &member.name, true);
        }
    });
    turn.started();
    let liveness = async {
        if let Some(probe) = &member.liveness_probe
            && !probe_until(&pod, &member, leader, &object, probe, "Liveness", false).await
        {
            pod.update(|s| {
                s.event(
                    "Normal",
                    "Killing",
                    &object,
                    format!(
                        "Container {} failed liveness probe, will be restarted",
                        member.name
                    ),
                )
            });
            kill.request(probe.termination_grace_period);
        }
    };
    let readiness = async {
        if let Some(probe) = &member.readiness_probe {
            readiness(&pod, &member, leader, &object, probe).await;
        }
    };
    tokio::join!(liveness, readiness);
}

/// Probes until `failureThreshold` failures in a row (false), or, when `until_success` (a
/// startup probe), until the first success (true). A liveness probe never succeeds for good: a
/// success only resets the count.
async fn probe_until(
    pod: &Pod,
    member: &Member,
    leader: u32,
    object: &str,
    probe: &Probe,
    kind: &str,
    until_success: bool,
) -> bool {
    tokio::time::sleep(probe.initial_delay).await;
    let mut failures = 0;
    loop {
        match run_handler(pod, member, leader, &probe.handler, probe.timeout).await {
            Ok(()) if until_success => return true,
            Ok(()) => failures = 0,
            Err(err) => {
                failures += 1;
                let message = format!("{kind} probe failed: {err}");
                pod.update(|s| s.event("Warning", "Unhealthy", object, message));
                if failures >= probe.failure_threshold {
                    return false;
                }
            }
        }
        tokio::time::sleep(probe.period).await;
    }
}

/// Readiness: ready after `successThreshold` successes in a row, not ready after
/// `failureThreshold` failures in a row; for the run's whole life.
async fn readiness(pod: &Pod, member: &Member, leader: u32, object: &str, probe: &Probe) {
    tokio::time::sleep(probe.initial_delay).await;
    let (mut successes, mut failures, mut ready) = (0, 0, false);
    loop {
        match run_handler(pod, member, leader, &probe.handler, probe.timeout).await {
            Ok(()) => {
                (successes, failures) = (successes + 1, 0);
                if !ready && successes >= probe.success_threshold {
                    ready = true;
                    pod.update(|s| set_ready(s, &member.name, true));
                }
            }
            Err(err) => {
                (successes, failures) = (0, failures + 1);
                pod.update(|s| {
                    s.event(
                        "Warning",
                        "Unhealthy",
                        object,
                        format!("Readiness probe failed: {err}"),
                    )
                });
                if ready && failures >= probe.failure_threshold {
                    ready = false;
                    pod.update(|s| set_ready(s, &member.name, false));
                }
            }
        }
        tokio::time::sleep(probe.period).await;
    }
}

fn set_ready(status: &mut super::status::Status, name: &str, ready: bool) {
    if let Some(r) = status.record(name) {
        r.ready = ready;
    }
    // Progress for `podkit run`; kubelet records no event for it, so neither does podkit.
    let state = if ready { "ready" } else { "not ready" };
    tracing::info!(container = %name, "container {name} is {state}");
}
