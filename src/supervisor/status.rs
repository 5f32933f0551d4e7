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

/// The pod's whole status, owned by the supervisor.
#[derive(Debug)]
pub struct Status {
    dir: PathBuf,
    pub phase: &'static str,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub start_time: Timestamp,
    pub initialized: bool,
    pub init: Vec<Record>,
    pub containers: Vec<Record>,
    pub events: Vec<Event>,
    /// Changed since status.json was written.
    pub unsaved: bool,
    /// How many of `events` events.json holds (`None`: not written yet).
    events_saved: Option<usize>,
    restart_policy: RestartPolicy,
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
        };
        let main_reason = if plan.init_containers.is_empty() {
            "ContainerCreating"
        } else {
            "PodInitializing"
        };
        Status {
            dir: dir.to_path_buf(),
            phase: "Pending",
            reason: None,
            message: None,
            start_time: Timestamp::now(),
            initialized: plan.init_containers.is_empty(),
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
            events: Vec::new(),
            unsaved: true,
            events_saved: None,
            restart_policy: plan.restart_policy,
        }
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

    /// The phase from the containers' states, by kubelet's rules (`getPhase`).
    pub fn update_phase(&mut self) {
        if self.phase == "Failed" && self.reason.is_some() {
            return; // Decided by the pod itself (DeadlineExceeded, an init failure).
        }
        if !self.initialized {
            self.phase = "Pending";
            return;
        }
        let (mut running, mut waiting, mut succeeded, mut failed) = (0, 0, 0, 0);
        for r in &self.containers {
            match &r.state {
                State::Running { .. } => running += 1,
                State::Waiting { .. } if r.last.is_some() => running += 1, // restarting
                State::Waiting { .. } => waiting += 1,
                State::Terminated(t) if t.exit_code == 0 => succeeded += 1,
                State::Terminated(_) => failed += 1,
            }
        }
        self.phase = if waiting > 0 {
            "Pending"
        } else if running > 0 {
            "Running"
        } else if failed == 0 && succeeded > 0 {
            if self.restart_policy == RestartPolicy::Always {
                "Running"
            } else {
                "Succeeded"
            }
        } else if self.restart_policy == RestartPolicy::Never
            || failed > 0 && self.restart_policy != RestartPolicy::Always
        {
            "Failed"
        } else {
            "Running"
        };
    }

    pub fn to_pod_status(&self) -> PodStatus {
        let all_ready = !self.containers.is_empty()
            && self.containers.iter().all(|r| r.ready)
            && self
                .init
                .iter()
                .filter(|r| matches!(r.state, State::Running { .. }))
                .all(|r| r.ready);
        let condition = |kind: &str, ok: bool| PodCondition {
            type_: kind.to_owned(),
            status: if ok { "True" } else { "False" }.to_owned(),
            last_transition_time: Some(Time(self.start_time)),
            ..Default::default()
        };
        PodStatus {
            phase: Some(self.phase.to_owned()),
            reason: self.reason.clone(),
            message: self.message.clone(),
            start_time: Some(Time(self.start_time)),
            pod_ip: None,
            host_ip: Some("127.0.0.1".to_owned()),
            conditions: Some(vec![
                condition("PodScheduled", true),
                condition("Initialized", self.initialized),
                condition("ContainersReady", all_ready),
                condition("Ready", all_ready),
            ]),
            init_container_statuses: Some(self.init.iter().map(container_status).collect()),
            container_statuses: Some(self.containers.iter().map(container_status).collect()),
            ..Default::default()
        }
    }

    /// Writes `status.json`, and `events.json` when there are new events, each atomically.
    pub fn save(&mut self) {
        let status = serde_json::to_vec_pretty(&self.to_pod_status());
        self.unsaved = !self.write("status.json", status);
        if self.events_saved != Some(self.events.len()) {
            let events = serde_json::to_vec_pretty(&self.events);
            if self.write("events.json", events) {
                self.events_saved = Some(self.events.len());
            }
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
