//! What the network tests of the `netns` crate share: a namespace set made for one test,
//! deleted when it ends, pass or fail.

// Each test binary uses part of this.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use netns::{Netlink, PodNamespaces};

/// A namespace set made for one test (a pod, the stand-in for the host, an external client),
/// deleted when the test ends, pass or fail; its links and nftables tables go with it.
pub struct Pod {
    name: String,
    dir: PathBuf,
    ns: Option<PodNamespaces>,
}

impl Pod {
    /// `None` when not root (outside CI): the test is skipped.
    pub async fn create(prefix: &str) -> Option<Pod> {
        if !require_root() {
            return None;
        }
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        // The test binary's name (nat, network) keeps the suites' namespaces apart.
        let suite = env!("CARGO_CRATE_NAME");
        let name = format!("pkt-{suite}-{prefix}-{}-{n}", std::process::id());
        let dir = std::env::temp_dir().join("podkit-test").join(&name);
        // No /run/netns pin: nothing outside the test needs to find these.
        let ns = PodNamespaces::builder(&name, &dir)
            .run_netns(false)
            .create()
            .await
            .expect("create namespaces");
        Some(Pod {
            name,
            dir,
            ns: Some(ns),
        })
    }

    pub fn ns(&self) -> &PodNamespaces {
        self.ns.as_ref().expect("not deleted yet")
    }

    pub async fn netlink(&self) -> Netlink {
        self.ns().netlink().await.expect("netlink")
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        if let Some(ns) = self.ns.take() {
            let _ = ns.delete();
        }
        let _ = PodNamespaces::remove(&self.name, &self.dir);
    }
}

/// A pod for a test that has checked for root already.
pub async fn pod(prefix: &str) -> Pod {
    Pod::create(prefix).await.expect("root was checked")
}

/// These tests need root: they make real namespaces (and nftables tables in them). In CI that
/// is a failure; elsewhere a skip.
pub fn require_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "these tests create namespaces and need root; CI runs them as root"
    );
    eprintln!("skipped: not root (these tests create real namespaces)");
    false
}
