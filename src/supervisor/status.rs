//! What the pod is doing, kept as kubelet keeps it and written to `status.json` (a v1
//! `PodStatus`, atomically) and `events.json` on every change.

use std::path::{Path, PathBuf};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, PodCondition, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::Serialize;

use crate::spec::{PodPlan, RestartPolicy};

/// One container's state, as in a v1 `ContainerStatus`.
#[derive(Debug, Clone)]
pub struct Record {
    pub name: String,
    pub image: String,
    /// The image run, as kubelet reports it (`docker.io/library/nginx@sha256:...`); empty for
    /// a host process or before the image is present.
    pub image_id: String,
    pub state: State,
    /// The previous run's end, for `describe` and `logs --previous`.
    pub last: Option<Terminated>,
    pub restarts: i32,
    pub ready: bool,
    /// Running and past its startup probe.
    pub started: bool,
    /// A native sidecar: an init container with `restartPolicy: Always`.
    pub sidecar: bool,
}

#[derive(Debug, Clone)]
pub enum State {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        since: Timestamp,
    },
    Terminated(Terminated),
}

#[derive(Debug, Clone)]
pub struct Terminated {
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub reason: String,
    pub started: Timestamp,
    pub finished: Timestamp,
    /// The termination message (see `termination.rs`), or a start's error.
    pub message: Option<String>,
}

impl Record {
    /// kubelet's `HasAnyRegularContainerStarted` for one container: it has left its first
    /// Waiting state.
    fn has_started(&self) -> bool {
        !matches!(self.state, State::Waiting { .. }) || self.last.is_some()
    }

    /// For the Initialized condition: a plain init container once it completed (ready), a
    /// sidecar once started (kubelet's `isInitContainerInitialized`).
    fn initialized(&self) -> bool {
        if self.sidecar {
            self.started
        } else {
            self.ready
        }
    }
}

/// An event, as `kubectl describe` lists them.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub time: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub reason: String,
    /// `spec.containers{web}` or the pod.
    pub object: String,
    pub message: String,
}

/// A pod condition kubelet owns, with the time its status last changed.
#[derive(Debug, Clone)]
struct Condition {
    kind: &'static str,
    status: bool,
    reason: Option<&'static str>,
    message: Option<String>,
    since: Timestamp,
}

/// The pod's whole status, owned by the supervisor.
#[derive(Debug)]
pub struct Status {
    dir: PathBuf,
    pub phase: &'static str,
    /// Set only for what the pod itself decided (`DeadlineExceeded`), as kubelet sets it.
    pub reason: Option<String>,
    pub message: Option<String>,
    pub start_time: Timestamp,
    pub init: Vec<Record>,
    pub containers: Vec<Record>,
    pub events: Vec<Event>,
    /// Changed since status.json was written.
    pub unsaved: bool,
    /// Every container has stopped for good (the pod was deleted or ran to its end): the phase
    /// is final (kubelet's `podIsTerminal`).
    terminal: bool,
    /// kubelet's conditions in its order, refreshed with the phase.
    conditions: Vec<Condition>,
    /// How many of `events` events.json holds (`None`: not written yet).
    events_saved: Option<usize>,
    restart_policy: RestartPolicy,
    /// `status.qosClass`.
    qos_class: &'static str,
    /// `status.podIPs`: its addresses on the pod network (the first is `status.podIP`), the
    /// host's with `hostNetwork`, none with only its loopback.
    pod_ips: Vec<String>,
    /// `status.hostIP`: the host's address, as a node's InternalIP.
    host_ip: Option<String>,
}

impl Status {
    pub fn new(plan: &PodPlan, dir: &Path) -> Status {
        let record = |m: &crate::spec::Member, reason: &str| Record {
            name: m.name.clone(),
            image: m.image.clone().unwrap_or_default(),
            image_id: String::new(),
            state: State::Waiting {
                reason: reason.to_owned(),
                message: None,
            },
            last: None,
            restarts: 0,
            ready: false,
            started: false,
            sidecar: m.sidecar,
        };
        let main_reason = if plan.init_containers.is_empty() {
            "ContainerCreating"
        } else {
            "PodInitializing"
        };
        let mut status = Status {
            dir: dir.to_path_buf(),
            phase: "Pending",
            reason: None,
            message: None,
            start_time: Timestamp::now(),
            init: plan
                .init_containers
                .iter()
                .map(|m| record(m, "PodInitializing"))
                .collect(),
            containers: plan
                .containers
                .iter()
                .map(|m| record(m, main_reason))
                .collect(),
            events: earlier_events(dir),
            unsaved: true,
            terminal: false,
            conditions: Vec::new(),
            events_saved: None,
            restart_policy: plan.restart_policy,
            qos_class: plan.qos.as_str(),
            pod_ips: super::pod_ips(plan),
            host_ip: super::host_ip(),
        };
        status.refresh();
        status
    }

    pub fn record(&mut self, name: &str) -> Option<&mut Record> {
        self.init
            .iter_mut()
            .chain(self.containers.iter_mut())
            .find(|r| r.name == name)
    }

    pub fn event(&mut self, kind: &'static str, reason: &str, object: &str, message: String) {
        tracing::info!(%reason, %object, "{message}");
        self.events.push(Event {
            time: Timestamp::now().to_string(),
            kind: kind.to_owned(),
            reason: reason.to_owned(),
            object: object.to_owned(),
            message,
        });
    }

    /// The pod ran its course (deleted, or every container done): what kubelet's
    /// `TerminatePod` does. A container that never reached a Terminated state is reported
    /// failed (137, `ContainerStatusUnknown`): the main containers once the pod got past its
    /// init containers, and the init containers that tried to start. The phase is then final:
    /// Succeeded when every main container ended with 0, else Failed.
    pub fn finish(&mut self) {
        let unknown = |r: &mut Record| {
            if !matches!(r.state, State::Terminated(_)) {
                let now = Timestamp::now();
                r.state = State::Terminated(Terminated {
                    exit_code: 137,
                    signal: None,
                    reason: "ContainerStatusUnknown".into(),
                    started: now,
                    finished: now,
                    message: Some(
                        "The container could not be located when the pod was terminated".into(),
                    ),
                });
                r.ready = false;
                r.started = false;
            }
        };
        if self.has_initialized() {
            self.containers.iter_mut().for_each(unknown);
        }
        // Every init container up to the last one that left Waiting (at least the first).
        let tried = self
            .init
            .iter()
            .rposition(|r| r.has_started())
            .map_or(1, |i| i + 1)
            .min(self.init.len());
        self.init[..tried].iter_mut().for_each(unknown);
        self.terminal = true;
        self.refresh();
        if !matches!(self.phase, "Succeeded" | "Failed") {
            self.phase = "Failed";
            self.refresh_conditions();
        }
    }

    /// kubelet's `hasPodInitialized`: no init containers, a main container that left Waiting,
    /// or the last init container done (a sidecar: started).
    fn has_initialized(&self) -> bool {
        let Some(last) = self.init.last() else {
            return true;
        };
        if self.containers.iter().any(Record::has_started) {
            return true;
        }
        let completed = |t: &Terminated| t.exit_code == 0;
        if last.sidecar {
            matches!(last.state, State::Running { .. }) && last.started
        } else {
            last.last.as_ref().is_some_and(completed)
                || matches!(&last.state, State::Terminated(t) if completed(t))
        }
    }

    /// The phase and the conditions from the containers' states; call after every change.
    pub fn refresh(&mut self) {
        self.phase = self.next_phase();
        self.refresh_conditions();
    }

    /// The phase by kubelet's rules (`getPhase`); a pod never leaves Succeeded or Failed.
    fn next_phase(&self) -> &'static str {
        if matches!(self.phase, "Succeeded" | "Failed") {
            return self.phase;
        }
        let (mut pending_init, mut failed_init) = (0, 0);
        let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
        for r in &self.init {
            match (&r.state, r.sidecar) {
                (State::Running { .. }, false) => pending_init += 1,
                (State::Terminated(t), false) if t.exit_code != 0 => failed_init += 1,
                (State::Waiting { .. }, false) => match &r.last {
                    Some(last) if last.exit_code != 0 => failed_init += 1,
                    Some(_) => {}
                    None => pending_init += 1,
                },
                (State::Terminated(_), _) => {}
                // A sidecar counts while it runs; one that stopped or restarts does not.
                (State::Running { .. }, true) => {
                    running += 1;
                    if !r.started {
                        pending_init += 1;
                    }
                }
                (State::Waiting { .. }, true) => {
                    if r.last.is_none() {
                        pending_init += 1;
                        waiting += 1;
                    }
                }
            }
        }
        for r in &self.containers {
            match &r.state {
                State::Running { .. } => running += 1,
                State::Terminated(t) => {
                    stopped += 1;
                    if t.exit_code == 0 {
                        succeeded += 1;
                    }
                }
                State::Waiting { .. } if r.last.is_some() => stopped += 1,
                State::Waiting { .. } => waiting += 1,
            }
        }
        if failed_init > 0 && self.restart_policy == RestartPolicy::Never {
            return "Failed";
        }
        let any_main_started = self.containers.iter().any(Record::has_started);
        if pending_init > 0 && !any_main_started || waiting > 0 {
            return "Pending";
        }
        if running > 0 {
            return "Running";
        }
        if stopped == 0 {
            return "Pending";
        }
        if self.terminal {
            return if stopped == succeeded {
                "Succeeded"
            } else {
                "Failed"
            };
        }
        match self.restart_policy {
            RestartPolicy::Always => "Running",
            _ if stopped == succeeded => "Succeeded",
            RestartPolicy::Never => "Failed",
            RestartPolicy::OnFailure => "Running",
        }
    }

    /// kubelet's conditions (`pkg/kubelet/status/generate.go`), each keeping the time of its
    /// last change of status (`updateLastTransitionTime`).
    fn refresh_conditions(&mut self) {
        let names = |records: Vec<&Record>| {
            // Go's %s of a []string: [a b]
            let names: Vec<&str> = records.iter().map(|r| r.name.as_str()).collect();
            format!("[{}]", names.join(" "))
        };
        let terminal_reason = match self.phase {
            "Succeeded" => Some("PodCompleted"),
            "Failed" => Some("PodFailed"),
            _ => None,
        };

        let incomplete: Vec<&Record> = self.init.iter().filter(|r| !r.initialized()).collect();
        let initialized = if self.phase == "Succeeded" {
            (true, Some("PodCompleted"), None)
        } else if self.containers.iter().any(Record::has_started) || incomplete.is_empty() {
            (true, None, None)
        } else {
            (
                false,
                Some("ContainersNotInitialized"),
                Some(format!(
                    "containers with incomplete status: {}",
                    names(incomplete)
                )),
            )
        };

        let unready: Vec<&Record> = self
            .init
            .iter()
            .filter(|r| r.sidecar)
            .chain(&self.containers)
            .filter(|r| !r.ready)
            .collect();
        let containers_ready = if let Some(reason) = terminal_reason {
            (false, Some(reason), None)
        } else if unready.is_empty() {
            (true, None, None)
        } else {
            (
                false,
                Some("ContainersNotReady"),
                Some(format!(
                    "containers with unready status: {}",
                    names(unready)
                )),
            )
        };

        let now = Timestamp::now();
        let wanted = [
            ("PodReadyToStartContainers", (true, None, None)),
            ("Initialized", initialized),
            ("Ready", containers_ready.clone()),
            ("ContainersReady", containers_ready),
            ("PodScheduled", (true, None, None)),
        ];
        for (kind, (status, reason, message)) in wanted {
            match self.conditions.iter_mut().find(|c| c.kind == kind) {
                Some(c) => {
                    if c.status != status {
                        c.since = now;
                    }
                    (c.status, c.reason, c.message) = (status, reason, message);
                }
                None => self.conditions.push(Condition {
                    kind,
                    status,
                    reason,
                    message,
                    since: self.start_time,
                }),
            }
        }
    }

    pub fn to_pod_status(&self) -> PodStatus {
        PodStatus {
            phase: Some(self.phase.to_owned()),
            reason: self.reason.clone(),
            message: self.message.clone(),
            start_time: Some(Time(self.start_time)),
            pod_ip: self.pod_ips.first().cloned(),
            pod_ips: (!self.pod_ips.is_empty()).then(|| {
                self.pod_ips
                    .iter()
                    .map(|ip| k8s_openapi::api::core::v1::PodIP { ip: ip.clone() })
                    .collect()
            }),
            host_ip: self.host_ip.clone(),
            host_ips: self
                .host_ip
                .clone()
                .map(|ip| vec![k8s_openapi::api::core::v1::HostIP { ip }]),
            qos_class: Some(self.qos_class.to_owned()),
            conditions: Some(
                self.conditions
                    .iter()
                    .map(|c| PodCondition {
                        type_: c.kind.to_owned(),
                        status: if c.status { "True" } else { "False" }.to_owned(),
                        reason: c.reason.map(str::to_owned),
                        message: c.message.clone(),
                        last_transition_time: Some(Time(c.since)),
                        ..Default::default()
                    })
                    .collect(),
            ),
            init_container_statuses: Some(self.init.iter().map(container_status).collect()),
            container_statuses: Some(self.containers.iter().map(container_status).collect()),
            ..Default::default()
        }
    }

    /// Writes `events.json` when there are new events, then `status.json`, each atomically.
    pub fn save(&mut self) {
        // Events first: whoever sees a status (apply returning on a container's waiting
        // reason, say) finds the events that led to it (`describe` right after; CI caught
        // one between the two writes).
        if self.events_saved != Some(self.events.len()) {
            let events = serde_json::to_vec_pretty(&self.events);
            if self.write("events.json", events) {
                self.events_saved = Some(self.events.len());
            }
        }
        let status = serde_json::to_vec_pretty(&self.to_pod_status());
        self.unsaved = !self.write("status.json", status);
        if !self.unsaved {
            notify();
        }
    }

    fn write(&self, name: &str, data: serde_json::Result<Vec<u8>>) -> bool {
        let written = data
            .map_err(std::io::Error::other)
            .and_then(|data| write_atomic(&self.dir.join(name), &data));
        if let Err(err) = &written {
            tracing::error!(file = name, %err, "failed to write pod status");
        }
        written.is_ok()
    }
}

/// The events written before the pod started (kube-scheduler's FailedScheduling while it
/// waited for devices): the head of its list, as `describe` shows them.
fn earlier_events(dir: &Path) -> Vec<Event> {
    std::fs::read(dir.join("events.json"))
        .ok()
        .and_then(|text| serde_json::from_slice(&text).ok())
        .unwrap_or_default()
}

/// Adds kube-scheduler's `FailedScheduling` warning to the events of a pod that cannot be
/// placed yet (each time the reason changes, as the scheduler records it).
pub fn failed_scheduling(dir: &Path, message: &str) {
    let mut events = earlier_events(dir);
    events.push(Event {
        time: Timestamp::now().to_string(),
        kind: "Warning".to_owned(),
        reason: "FailedScheduling".to_owned(),
        object: "pod".to_owned(),
        message: message.to_owned(),
    });
    if let Ok(text) = serde_json::to_vec_pretty(&events) {
        let _ = write_atomic(&dir.join("events.json"), &text);
    }
}

/// Why a gated pod is not scheduled, as kube-scheduler says it.
pub const SCHEDULING_GATED: &str = "SchedulingGated";

/// The status of a pod held by its `schedulingGates`, as kube-scheduler leaves it (kubelet has
/// not seen the pod yet): Pending, and PodScheduled false with the scheduler's reason.
pub fn gated(qos_class: &str) -> PodStatus {
    PodStatus {
        phase: Some("Pending".to_owned()),
        qos_class: Some(qos_class.to_owned()),
        conditions: Some(vec![PodCondition {
            type_: "PodScheduled".to_owned(),
            status: "False".to_owned(),
            reason: Some(SCHEDULING_GATED.to_owned()),
            message: Some("Scheduling is blocked due to non-empty scheduling gates".to_owned()),
            last_transition_time: Some(Time(Timestamp::now())),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

/// Why a pod no node has room for is not scheduled, as kube-scheduler says it.
pub const UNSCHEDULABLE: &str = "Unschedulable";

/// The status of a pod whose extended resources the host cannot serve now, as kube-scheduler
/// leaves it: Pending, and PodScheduled false with the scheduler's reason and `message`. The
/// host's CDI spec files that were not used, if any, are the pod's `status.message` (a cluster
/// would show them in the device plugin's log).
pub fn unschedulable(qos_class: &str, message: &str, spec_errors: &[String]) -> PodStatus {
    PodStatus {
        phase: Some("Pending".to_owned()),
        qos_class: Some(qos_class.to_owned()),
        message: (!spec_errors.is_empty())
            .then(|| format!("CDI spec files not used: {}", spec_errors.join("; "))),
        conditions: Some(vec![PodCondition {
            type_: "PodScheduled".to_owned(),
            status: "False".to_owned(),
            reason: Some(UNSCHEDULABLE.to_owned()),
            message: Some(message.to_owned()),
            last_transition_time: Some(Time(Timestamp::now())),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

fn container_status(r: &Record) -> ContainerStatus {
    ContainerStatus {
        name: r.name.clone(),
        image: r.image.clone(),
        image_id: r.image_id.clone(),
        ready: r.ready,
        restart_count: r.restarts,
        started: Some(r.started),
        state: Some(state(&r.state)),
        last_state: r
            .last
            .as_ref()
            .map(|t| state(&State::Terminated(t.clone()))),
        ..Default::default()
    }
}

fn state(s: &State) -> ContainerState {
    match s {
        State::Waiting { reason, message } => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.clone()),
                message: message.clone(),
            }),
            ..Default::default()
        },
        State::Running { since } => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(Time(*since)),
            }),
            ..Default::default()
        },
        State::Terminated(t) => ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: t.exit_code,
                signal: t.signal,
                reason: Some(t.reason.clone()),
                started_at: Some(Time(t.started)),
                finished_at: Some(Time(t.finished)),
                message: t.message.clone(),
                ..Default::default()
            }),
            ..Default::default()
        },
    }
}

/// The pipe of the `podkit apply` that started this supervisor (`--notify`): told after each
/// write of status.json, so that it reads the status at once (see `cli::apply::Changes`).
static NOTIFY: std::sync::Mutex<Option<std::fs::File>> = std::sync::Mutex::new(None);

/// Tells the pipe `pipe` (not blocking) of every write of status.json from now on.
pub fn notify_with(pipe: std::fs::File) {
    *NOTIFY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(pipe);
}

/// A byte to the notify pipe, if there is one. A full pipe already holds a wake-up; a reader
/// gone (apply returned) or any other error ends the telling.
pub fn notify() {
    use std::io::Write;
    let mut pipe = NOTIFY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(file) = pipe.as_mut() {
        match file.write(b".") {
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => *pipe = None,
        }
    }
}

/// Writes through a temporary file and a rename: readers see the old file or the new one.
///
/// A file that exists is swapped with the new one (`RENAME_EXCHANGE`) and the old one then
/// unlinked, rather than replaced by `rename`: ext4 (what /run is on some hosts) forces block
/// allocation and writeback of the new file on a replacing rename (`auto_da_alloc`), which cost
/// 130 us a write here against 25 us for the swap. The state under /run does not outlive the
/// machine, so that crash guard buys podkit nothing.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use nix::errno::Errno;
    use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};

    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data)?;
    match renameat2(AT_FDCWD, &tmp, AT_FDCWD, path, RenameFlags::RENAME_EXCHANGE) {
        // The new file is in place; an old one left behind is truncated by the next write.
        Ok(()) => {
            let _ = std::fs::remove_file(&tmp);
            Ok(())
        }
        // No file to swap with yet, or a filesystem without the exchange.
        Err(Errno::ENOENT | Errno::EINVAL) => std::fs::rename(&tmp, path),
        Err(err) => Err(err.into()),
    }
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;

    use super::{Record, RestartPolicy, State, Status, Terminated};

    fn record(name: &str, sidecar: bool, state: State) -> Record {
        Record {
            name: name.into(),
            image: String::new(),
            image_id: String::new(),
            state,
            last: None,
            restarts: 0,
            ready: false,
            started: false,
            sidecar,
        }
    }

    fn waiting() -> State {
        State::Waiting {
            reason: "PodInitializing".into(),
            message: None,
        }
    }

    fn running() -> State {
        State::Running {
            since: Timestamp::now(),
        }
    }

    fn exited(code: i32) -> State {
        State::Terminated(Terminated {
            exit_code: code,
            signal: None,
            reason: if code == 0 { "Completed" } else { "Error" }.into(),
            started: Timestamp::now(),
            finished: Timestamp::now(),
            message: None,
        })
    }

    fn status(policy: RestartPolicy, init: Vec<Record>, containers: Vec<Record>) -> Status {
        let mut status = Status {
            dir: std::path::PathBuf::new(),
            phase: "Pending",
            reason: None,
            message: None,
            start_time: Timestamp::now(),
            init,
            containers,
            events: Vec::new(),
            unsaved: false,
            terminal: false,
            conditions: Vec::new(),
            events_saved: None,
            restart_policy: policy,
            qos_class: "BestEffort",
            pod_ips: Vec::new(),
            host_ip: None,
        };
        status.refresh();
        status
    }

    /// (status, reason, message) of a condition.
    fn condition(status: &Status, kind: &str) -> (String, Option<String>, Option<String>) {
        let pod = status.to_pod_status();
        let c = pod
            .conditions
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == kind)
            .expect(kind);
        (c.status, c.reason, c.message)
    }

    #[test]
    fn a_running_sidecar_keeps_the_pod_running_until_it_stopped() {
        let mut sidecar = record("side", true, running());
        sidecar.started = true;
        let mut s = status(
            RestartPolicy::Never,
            vec![sidecar],
            vec![record("app", false, exited(0))],
        );
        assert_eq!(s.phase, "Running");
        s.init[0].state = exited(143);
        s.refresh();
        assert_eq!(s.phase, "Succeeded", "a stopped sidecar does not count");
        assert_eq!(
            condition(&s, "Ready"),
            ("False".into(), Some("PodCompleted".into()), None)
        );
        assert_eq!(
            condition(&s, "Initialized"),
            ("True".into(), Some("PodCompleted".into()), None)
        );
    }

    #[test]
    fn a_sidecar_not_yet_started_keeps_the_pod_pending_and_uninitialized() {
        let mut s = status(
            RestartPolicy::Always,
            vec![
                record("first", false, exited(0)),
                record("side", true, running()),
            ],
            vec![record("app", false, waiting())],
        );
        s.init[0].ready = true;
        s.refresh();
        assert_eq!(s.phase, "Pending");
        assert_eq!(
            condition(&s, "Initialized"),
            (
                "False".into(),
                Some("ContainersNotInitialized".into()),
                Some("containers with incomplete status: [side]".into())
            )
        );
        assert_eq!(
            condition(&s, "ContainersReady"),
            (
                "False".into(),
                Some("ContainersNotReady".into()),
                Some("containers with unready status: [side app]".into())
            )
        );
        assert_eq!(condition(&s, "Ready"), condition(&s, "ContainersReady"));
        s.init[1].started = true;
        s.refresh();
        assert_eq!(condition(&s, "Initialized").0, "True");
    }

    #[test]
    fn a_failed_init_container_fails_a_never_pod_without_a_reason() {
        let s = status(
            RestartPolicy::Never,
            vec![record("init", false, exited(3))],
            vec![record("app", false, waiting())],
        );
        assert_eq!(s.phase, "Failed");
        assert_eq!(s.to_pod_status().reason, None);
        let s = status(
            RestartPolicy::OnFailure,
            vec![record("init", false, exited(3))],
            vec![record("app", false, waiting())],
        );
        assert_eq!(s.phase, "Pending", "it is retried");
    }

    #[test]
    fn a_condition_keeps_its_time_until_its_status_changes() {
        let mut s = status(
            RestartPolicy::Always,
            Vec::new(),
            vec![record("app", false, running())],
        );
        let since = |s: &Status, kind: &str| {
            s.conditions
                .iter()
                .find(|c| c.kind == kind)
                .map(|c| c.since)
                .expect(kind)
        };
        let created = since(&s, "Ready");
        assert_eq!(created, s.start_time);
        std::thread::sleep(std::time::Duration::from_millis(5));
        s.refresh();
        assert_eq!(since(&s, "Ready"), created, "no change, same time");
        s.containers[0].ready = true;
        s.refresh();
        assert!(since(&s, "Ready") > created, "became ready: a new time");
        assert_eq!(since(&s, "PodScheduled"), created);
    }

    #[test]
    fn finishing_marks_what_never_ended_and_makes_the_phase_final() {
        // Deleted while one container ran and one waited on its image.
        let mut s = status(
            RestartPolicy::Always,
            Vec::new(),
            vec![
                record("app", false, exited(0)),
                record("pulling", false, waiting()),
            ],
        );
        assert_eq!(s.phase, "Pending");
        s.finish();
        assert_eq!(s.phase, "Failed");
        let State::Terminated(t) = &s.containers[1].state else {
            panic!("terminated: {:?}", s.containers[1].state);
        };
        assert_eq!(
            (t.exit_code, t.reason.as_str()),
            (137, "ContainerStatusUnknown")
        );

        // Every container ended with 0: Succeeded, whatever the restart policy.
        let mut s = status(
            RestartPolicy::Always,
            Vec::new(),
            vec![record("app", false, exited(0))],
        );
        assert_eq!(s.phase, "Running", "restarting");
        s.finish();
        assert_eq!(s.phase, "Succeeded");

        // An init container failed (Never): the main containers never started and stay so;
        // the later init containers that never tried stay Waiting.
        let mut s = status(
            RestartPolicy::Never,
            vec![record("a", false, exited(1)), record("b", false, waiting())],
            vec![record("app", false, waiting())],
        );
        s.finish();
        assert_eq!(s.phase, "Failed");
        assert!(matches!(s.init[1].state, State::Waiting { .. }));
        assert!(matches!(s.containers[0].state, State::Waiting { .. }));
    }
    #[test]
    fn an_atomic_write_creates_then_replaces_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("status.json");
        super::write_atomic(&path, b"first").expect("first write");
        assert_eq!(std::fs::read(&path).expect("read"), b"first");
        // A reader holding the old file keeps reading the old bytes.
        let mut old = std::fs::File::open(&path).expect("open");
        super::write_atomic(&path, b"second").expect("second write");
        assert_eq!(std::fs::read(&path).expect("read"), b"second");
        let mut text = String::new();
        std::io::Read::read_to_string(&mut old, &mut text).expect("read the old file");
        assert_eq!(text, "first");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["status.json"]);
    }
}
