//! The sidecars that run as pod members: `puller` (keeps a shared volume up to date), `tail`
//! (follows log files through rotation) and `proxy` (TLS, HTTP/1.1 and HTTP/2 in front of an app).
//!
//! Layout:
//! - [`tail`]: the log tailer (`podkit tail`), library plus the `podkit-tail` binary in
//!   `src/bin/podkit-tail.rs`.
//!
//! `puller` and `proxy` are not built yet: see their issues.

#![forbid(unsafe_code)]

pub mod tail;
