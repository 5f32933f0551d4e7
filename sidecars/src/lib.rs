//! The sidecars that run as pod members: `puller` (keeps a shared volume up to date), `tail`
//! (follows log files through rotation) and `proxy` (TLS, HTTP/1.1 and HTTP/2 in front of an app).
//!
//! Not built yet: see the sidecar issues. The crate exists so the workspace has its fixed shape.
