//! The sidecars that run as pod members: `puller` (keeps a shared volume up to date), `tail`
//! (follows log files through rotation) and `proxy` (TLS, HTTP/1.1 and HTTP/2 in front of an app).
//!
//! Layout:
//! - [`proxy`]: the reverse proxy (`podkit proxy`), library plus the `podkit-proxy` binary in
//!   `src/bin/podkit-proxy.rs`.
//! - [`puller`]: the file puller (`podkit puller`), library plus the `podkit-puller` binary in
//!   `src/bin/podkit-puller.rs`.
//! - [`tail`]: the log tailer (`podkit tail`), library plus the `podkit-tail` binary in
//!   `src/bin/podkit-tail.rs`.
//! - `cli.rs`: the command-line front the three share (runtime, signals, exit codes);
//! - `health.rs`: the health server the three share (each answers with its own metrics);
//! - [`client_tls`]: the TLS client configuration of their `https://` upstreams, sources and sinks.

#![forbid(unsafe_code)]

mod cli;
mod health;

pub mod client_tls;

pub mod proxy;
pub mod puller;
pub mod tail;
