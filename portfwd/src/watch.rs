//! Noticing that the target's network namespace is gone: its pin at `/run/netns/NAME` was
//! removed (the pod was deleted), or its process exited.
//!
//! The forwarder holds the namespace open, which keeps it alive in the kernel; so "gone" means
//! that the path it was opened from no longer names that same namespace. A poll of `stat(2)`
//! is enough: deleting a pod is rare and a delay of one interval is harmless.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use netns::Namespace;
use tracing::warn;

/// Returns once `ns.path()` no longer names `ns`. Never returns if `ns` cannot be inspected.
pub(crate) async fn gone(ns: &Namespace, interval: Duration) {
    let id = match nix::sys::stat::fstat(ns) {
        Ok(st) => (st.st_dev, st.st_ino),
        Err(err) => {
            warn!(path = ?ns.path(), ?err, "cannot inspect the target namespace; not watching it");
            return std::future::pending().await;
        }
    };
    let path = ns.path().to_path_buf();
    while names(&path, id) {
        tokio::time::sleep(interval).await;
    }
}

/// Whether `path` (followed, as `/proc/PID/ns/net` must be) is the namespace `id`.
fn names(path: &Path, (dev, ino): (u64, u64)) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}
