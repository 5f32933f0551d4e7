//! podkit: Kubernetes-style pods on one Linux host, and the `podkit` command.
//!
//! Layout:
//! - `spec.rs`: Pod manifests (YAML) into validated [`spec::PodPlan`]s;
//! - `cli.rs`: the command line.
//!
//! The namespaces come from the `netns` crate; the sidecars from `sidecars`.

pub mod cli;
pub mod spec;
