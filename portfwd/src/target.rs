//! Which network namespace to forward into: a pod, a pinned netns, or a process's.

use std::fmt;
use std::path::Path;

use netns::{Namespace, NsKind};

use crate::{Error, Result};

/// The network namespace a forward dials into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A podkit pod by namespace and name: the network namespace pinned at
    /// `/run/netns/NAMESPACE_NAME`, where every podkit pod pins its own (its key).
    Pod { namespace: String, name: String },
    /// A network namespace by name (pinned at `/run/netns/NAME`, as `ip netns add` does) or, when
    /// it contains a `/`, by path (a pin, or `/proc/PID/ns/net`).
    Netns(String),
    /// The network namespace of the process with this pid.
    Pid(u32),
}

impl Target {
    /// The pod `name` of the `default` namespace.
    pub fn pod(name: &str) -> Target {
        Target::Pod {
            namespace: "default".to_owned(),
            name: name.to_owned(),
        }
    }

    /// Opens the target's network namespace.
    pub(crate) fn open(&self) -> Result<Namespace> {
        let opened = match self {
            Target::Pod { namespace, name } => {
                Namespace::named_netns(&format!("{namespace}_{name}"))
            }
            Target::Netns(path) if path.contains('/') => {
                Namespace::open(NsKind::Net, Path::new(path))
            }
            Target::Netns(name) => Namespace::named_netns(name),
            Target::Pid(pid) => Namespace::from_pid(NsKind::Net, *pid),
        };
        opened.map_err(|source| Error::OpenTarget {
            target: self.to_string(),
            source: Box::new(source),
        })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Pod { namespace, name } if namespace == "default" => write!(f, "pod {name}"),
            Target::Pod { namespace, name } => write!(f, "pod {namespace}/{name}"),
            Target::Netns(name) => write!(f, "netns {name}"),
            Target::Pid(pid) => write!(f, "pid {pid}"),
        }
    }
}
