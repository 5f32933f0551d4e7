//! podkit: Kubernetes-style pods on one Linux host, and the `podkit` command.
//!
//! Layout:
//! - `cdi.rs`: the host's CDI specs, the devices that serve extended resources;
//! - `spec.rs`: Pod manifests (YAML) into validated [`spec::PodPlan`]s;
//! - `supervisor.rs`: one pod's pause process and kubelet;
//! - `pause.rs`: PID 1 of a pod's PID namespace;
//! - `state.rs`: pods as their state directories show them (what the CLI reads);
//! - `objects.rs`: the ConfigMaps, Secrets, claims and workloads `apply` keeps;
//! - `controller.rs`: one small process per workload (Deployment, StatefulSet, Job, ...),
//!   keeping its pods;
//! - `cron.rs`: CronJob schedules, read as Kubernetes reads them;
//! - `logs.rs`: containers' logs as kubectl shows them (the supervisor's `GET /logs` and the
//!   CLI without a supervisor);
//! - `cli.rs`: the command line.
//!
//! The namespaces come from the `netns` crate; the sidecars from `sidecars`.

pub mod cdi;
pub mod cli;
pub mod controller;
pub mod cron;
pub mod logs;
pub mod objects;
mod pause;
pub mod spec;
pub mod state;
pub mod supervisor;
