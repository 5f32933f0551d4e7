//! The CNI path of the pod network: when the user points podkit at a CNI configuration
//! directory (`PODKIT_CNI_CONF_DIR`), a pod's network is made by that network's plugins, run as
//! kubelet's container runtime (containerd's go-cni, with libcni) runs them, instead of podkit's
//! own bridge.
//!
//! - ADD when the pod's network namespace is made: each plugin of the list in order, with the
//!   CNI environment (`CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS` = the pod's
//!   `/run/netns/<namespace>_<name>`, `CNI_IFNAME=eth0`, `CNI_PATH`, and `CNI_ARGS` with
//!   kubelet's `K8S_POD_*`) and on stdin its configuration with the network's `name` and
//!   `cniVersion`, the previous plugin's result as `prevResult`, and in `runtimeConfig` the
//!   capabilities it declares that podkit has arguments for (`portMappings` from the pod's
//!   hostPorts, `bandwidth` from kubernetes.io/ingress-bandwidth and egress-bandwidth,
//!   `io.kubernetes.cri.pod-annotations`). The last result gives the pod its IP. A failed ADD
//!   is followed by a DEL, as kubelet does, so nothing is left.
//! - What DEL needs (the list, the arguments, the result, where the plugins are) is cached in
//!   the pod's state directory before the first plugin runs and again with the result, as
//!   libcni caches it under /var/lib/cni/results: DEL runs at the pod's end, and from
//!   `podkit gc` or `delete` for a pod whose supervisor was killed.
//! - DEL runs the plugins in reverse order, each with the cached result as `prevResult`; every
//!   plugin gets its DEL even when an earlier one failed.
//! - CHECK (CNI 0.4.0 and later, unless the list has `disableCheck`) runs the plugins in order
//!   with the cached result; `podkit describe` shows its outcome.
//!
//! Plugins are children of the caller; in the supervisor (the child subreaper) each whole
//! command runs inside `Reaper::paused`, as the `nft` runs of the bridge path do.

mod config;

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tracing::debug;

pub use self::config::NetworkList;

/// The interface the pod gets, as kubelet names it.
pub const IF_NAME: &str = "eth0";

/// Where kubelet, then Debian's `containernetworking-plugins`, keep the plugins.
pub const DEFAULT_BIN_DIRS: &[&str] = &["/opt/cni/bin", "/usr/lib/cni"];

/// The cache of a pod's attachment, in its state directory.
pub const CACHE_FILE: &str = "cni.json";

const CACHE_KIND: &str = "podkitCniCacheV1";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to read the CNI configuration directory {dir} (PODKIT_CNI_CONF_DIR)")]
    ReadDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "no CNI network configuration in {dir} (PODKIT_CNI_CONF_DIR): no file ends in \
         .conflist, .conf or .json"
    )]
    NoConfig { dir: PathBuf },

    #[error("failed to read the CNI configuration {file}")]
    ReadConfig {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("CNI configuration {file}: {what}")]
    BadConfig { file: PathBuf, what: String },

    #[error(
        "CNI plugin {plugin:?} of network {network:?} ({file}) is not in {searched} \
         (PODKIT_CNI_BIN_DIR; Debian's plugins are in the containernetworking-plugins package)"
    )]
    NotFound {
        plugin: String,
        network: String,
        file: PathBuf,
        searched: String,
    },

    #[error("failed to run CNI plugin {path} ({command} of network {network:?}, {file})")]
    Run {
        path: PathBuf,
        command: &'static str,
        network: String,
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("CNI plugin {plugin:?} failed {command} of network {network:?} ({file}): {error}")]
    Plugin {
        plugin: String,
        command: &'static str,
        network: String,
        file: PathBuf,
        error: Box<PluginError>,
    },

    #[error(
        "CNI plugin {plugin:?} ({command} of network {network:?}, {file}) printed a result \
         podkit cannot read: {what}"
    )]
    BadResult {
        plugin: String,
        command: &'static str,
        network: String,
        file: PathBuf,
        what: String,
    },

    #[error("CNI network {network:?} ({file}) gave the pod no IP address: its result is {result}")]
    NoAddress {
        network: String,
        file: PathBuf,
        result: String,
    },

    #[error("CNI CHECK needs cniVersion 0.4.0 or later; network {network:?} ({file}) is {version}")]
    CheckUnsupported {
        network: String,
        file: PathBuf,
        version: String,
    },

    #[error("{add}; and its DEL failed too: {del}")]
    AddThenDel { add: Box<Error>, del: Box<Error> },

    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Several(Vec<Error>),

    #[error("failed to write the pod's CNI cache {path}")]
    WriteCache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("the pod's CNI cache {path} cannot be read: {what}")]
    BadCache { path: PathBuf, what: String },
}

/// A plugin's failure: the CNI error it printed (`code`, `msg`, `details`), or, when it printed
/// none, how it exited and its stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginError {
    pub code: Option<u64>,
    pub msg: String,
    pub details: String,
    /// Its exit status and stderr when stdout held no CNI error.
    pub other: String,
}

impl std::fmt::Display for PluginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.code {
            Some(code) => {
                write!(f, "error code {code}")?;
                if let Some(meaning) = code_meaning(code) {
                    write!(f, " ({meaning})")?;
                }
                write!(f, ": {}", self.msg)?;
                if !self.details.is_empty() {
                    write!(f, " ({})", self.details)?;
                }
                Ok(())
            }
            None => f.write_str(&self.other),
        }
    }
}

/// The CNI spec's well-known error codes.
fn code_meaning(code: u64) -> Option<&'static str> {
    Some(match code {
        1 => "incompatible CNI version",
        2 => "unsupported field in network configuration",
        3 => "container unknown or does not exist",
        4 => "invalid necessary environment variables",
        5 => "I/O failure",
        6 => "failed to decode content",
        7 => "invalid network config",
        11 => "try again later",
        50 => "plugin not available",
        51 => "plugin not available, existing containers may be damaged",
        _ => return None,
    })
}

/// The CNI network the environment points podkit at: `PODKIT_CNI_CONF_DIR` (none: podkit's own
/// bridge) and `PODKIT_CNI_BIN_DIR` (a `:`-separated list; default [`DEFAULT_BIN_DIRS`]).
#[derive(Debug, Clone)]
pub struct Cni {
    pub list: NetworkList,
    pub bin_dirs: Vec<PathBuf>,
}

impl Cni {
    /// `None` when `PODKIT_CNI_CONF_DIR` is unset or empty; an error names a missing
    /// directory, a malformed first file or a plugin found in none of the bin directories.
    pub fn from_env() -> Result<Option<Cni>, Error> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let Some(dir) = var("PODKIT_CNI_CONF_DIR") else {
            return Ok(None);
        };
        let bin_dirs = match var("PODKIT_CNI_BIN_DIR") {
            Some(dirs) => std::env::split_paths(&dirs).collect(),
            None => DEFAULT_BIN_DIRS.iter().map(PathBuf::from).collect(),
        };
        let cni = Cni {
            list: NetworkList::load(Path::new(dir.trim()))?,
            bin_dirs,
        };
        // Every plugin found before any runs, as kubelet validates a network before using it:
        // a missing one makes nothing.
        for plugin in &cni.list.plugins {
            find_plugin(&cni.list, &cni.bin_dirs, plugin)?;
        }
        Ok(Some(cni))
    }

    /// Whether a plugin of the network publishes hostPorts (declares `portMappings`, as
    /// `portmap` does): podkit then leaves the pod's hostPorts to it.
    pub fn publishes_ports(&self) -> bool {
        self.list.has_capability("portMappings")
    }
}

/// Who the pod is, for `CNI_CONTAINERID` and `CNI_ARGS`.
#[derive(Debug, Clone)]
pub struct PodRef<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
    /// The pod's state directory: with `uid`, it makes the container ID.
    pub dir: &'a Path,
    /// Its network namespace's path (`/run/netns/...`).
    pub netns: PathBuf,
    pub annotations: Option<&'a Map<String, Value>>,
}

/// A hostPort as the portmap plugin's `portMappings` capability takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    pub udp: bool,
    pub host_ip: Option<IpAddr>,
}

/// A pod's attachment to the CNI network: everything ADD was given and its result, which is
/// all DEL and CHECK need. Saved as [`CACHE_FILE`] in the pod's state directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    kind: String,
    pub list: NetworkList,
    pub bin_dirs: Vec<PathBuf>,
    pub container_id: String,
    pub netns: PathBuf,
    pub if_name: String,
    pub cni_args: Vec<(String, String)>,
    pub capability_args: Map<String, Value>,
    /// The ADD's result; none until it succeeded (or if the supervisor died during it).
    pub result: Option<Value>,
}

impl Attachment {
    /// What ADD will be given for `pod` on network `cni`, with `ports` (its NAT'd hostPorts).
    pub fn new(cni: &Cni, pod: &PodRef<'_>, ports: &[PortMapping]) -> Result<Attachment, Error> {
        let container_id = container_id(pod.dir, pod.uid);
        let cni_args = [
            ("IgnoreUnknown", "1"),
            ("K8S_POD_NAMESPACE", pod.namespace),
            ("K8S_POD_NAME", pod.name),
            ("K8S_POD_INFRA_CONTAINER_ID", &container_id),
            ("K8S_POD_UID", pod.uid),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let mut capability_args = Map::new();
        if !ports.is_empty() {
            let mappings = ports
                .iter()
                .map(|p| {
                    let mut m = json!({
                        "hostPort": p.host_port,
                        "containerPort": p.container_port,
                        "protocol": if p.udp { "udp" } else { "tcp" },
                    });
                    if let Some(ip) = p.host_ip {
                        m["hostIP"] = ip.to_string().into();
                    }
                    m
                })
                .collect();
            capability_args.insert("portMappings".into(), Value::Array(mappings));
        }
        if let Some(annotations) = pod.annotations {
            if let Some(bandwidth) = bandwidth(annotations).map_err(|what| Error::BadConfig {
                file: cni.list.file.clone(),
                what,
            })? {
                capability_args.insert("bandwidth".into(), bandwidth);
            }
            capability_args.insert(
                "io.kubernetes.cri.pod-annotations".into(),
                Value::Object(annotations.clone()),
            );
        }
        Ok(Attachment {
            kind: CACHE_KIND.to_owned(),
            list: cni.list.clone(),
            bin_dirs: cni.bin_dirs.clone(),
            container_id,
            netns: pod.netns.clone(),
            if_name: IF_NAME.to_owned(),
            cni_args,
            capability_args,
            result: None,
        })
    }

    /// The attachment cached in the pod's state directory `dir`, if any.
    pub fn load(dir: &Path) -> Result<Option<Attachment>, Error> {
        let path = dir.join(CACHE_FILE);
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => {
                return Err(Error::BadCache {
                    path,
                    what: err.to_string(),
                });
            }
        };
        let attachment: Attachment =
            serde_json::from_slice(&text).map_err(|e| Error::BadCache {
                path: path.clone(),
                what: e.to_string(),
            })?;
        if attachment.kind != CACHE_KIND {
            return Err(Error::BadCache {
                path,
                what: format!("kind {:?}, not {CACHE_KIND:?}", attachment.kind),
            });
        }
        Ok(Some(attachment))
    }

    /// Writes the attachment to `dir` (atomically: a DEL never reads half of it).
    pub fn save(&self, dir: &Path) -> Result<(), Error> {
        let path = dir.join(CACHE_FILE);
        let text = serde_json::to_vec_pretty(self).map_err(|e| Error::BadCache {
            path: path.clone(),
            what: e.to_string(),
        })?;
        super::status::write_atomic(&path, &text)
            .map_err(|source| Error::WriteCache { path, source })
    }

    /// Removes the cache from `dir` (none is fine).
    pub fn forget(dir: &Path) {
        let _ = std::fs::remove_file(dir.join(CACHE_FILE));
    }

    /// ADD: runs the plugins in order, each given the previous one's result; keeps and returns
    /// the last result. On failure, DEL runs (as kubelet tears a failed sandbox's network
    /// down), and its failure is reported with the ADD's.
    pub fn add(&mut self) -> Result<&Value, Error> {
        let mut previous: Option<Value> = None;
        for plugin in &self.list.plugins {
            let ran = self.invoke("ADD", plugin, previous.as_ref());
            match ran {
                Ok(result) => previous = result,
                Err(add) => {
                    return Err(match self.del() {
                        Ok(()) => add,
                        Err(del) => Error::AddThenDel {
                            add: Box::new(add),
                            del: Box::new(del),
                        },
                    });
                }
            }
        }
        self.result = previous;
        // A result there is: every plugin's ADD printed one, or `invoke` failed.
        self.result.as_ref().ok_or_else(|| Error::NoAddress {
            network: self.list.name.clone(),
            file: self.list.file.clone(),
            result: "none".to_owned(),
        })
    }

    /// DEL: every plugin in reverse order, with the cached result (CNI 0.4.0 on), even when one
    /// fails; a network namespace that is gone is passed as none, as the spec allows.
    pub fn del(&self) -> Result<(), Error> {
        let previous = self.result.as_ref().filter(|_| self.list.at_least_0_4());
        let mut errors: Vec<Error> = self
            .list
            .plugins
            .iter()
            .rev()
            .filter_map(|plugin| self.invoke("DEL", plugin, previous).err())
            .collect();
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(Error::Several(errors)),
        }
    }

    /// CHECK: every plugin in order with the cached result; needs CNI 0.4.0 or later, and does
    /// nothing for a list with `disableCheck`.
    pub fn check(&self) -> Result<(), Error> {
        if !self.list.at_least_0_4() {
            return Err(Error::CheckUnsupported {
                network: self.list.name.clone(),
                file: self.list.file.clone(),
                version: self.list.cni_version.clone(),
            });
        }
        if self.list.disable_check {
            return Ok(());
        }
        for plugin in &self.list.plugins {
            self.invoke("CHECK", plugin, self.result.as_ref())?;
        }
        Ok(())
    }

    /// The pod's addresses in the result: those of its `eth0` (or of any interface in its
    /// namespace, or of none named), IPv4 first, as containerd picks the pod's IPs.
    pub fn addresses(&self) -> Result<Vec<IpAddr>, Error> {
        let result = self.result.as_ref().unwrap_or(&Value::Null);
        let found = addresses(result, &self.if_name);
        if found.is_empty() {
            return Err(Error::NoAddress {
                network: self.list.name.clone(),
                file: self.list.file.clone(),
                result: result.to_string(),
            });
        }
        Ok(found)
    }

    /// Runs `command` of one plugin; ADD's result (`None` for DEL and CHECK).
    fn invoke(
        &self,
        command: &'static str,
        plugin: &Value,
        previous: Option<&Value>,
    ) -> Result<Option<Value>, Error> {
        let kind = plugin["type"].as_str().unwrap_or_default().to_owned();
        let path = find_plugin(&self.list, &self.bin_dirs, plugin)?;
        let stdin = self.plugin_config(plugin, previous);
        // A namespace that is gone (the host rebooted, or it was removed by hand) is none to
        // a DEL: plugins then release what is outside it.
        let netns = if command == "DEL" && !self.netns.exists() {
            String::new()
        } else {
            self.netns.display().to_string()
        };
        let cni_args: Vec<String> = self
            .cni_args
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let cni_path = std::env::join_paths(&self.bin_dirs)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut cmd = Command::new(&path);
        // The caller's environment (PATH: portmap runs iptables), with the CNI variables
        // replaced, as libcni's invoke does.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("CNI_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", &self.container_id)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", &self.if_name)
            .env("CNI_ARGS", cni_args.join(";"))
            .env("CNI_PATH", cni_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = std::time::Instant::now();
        let output = run(&mut cmd, &stdin).map_err(|source| Error::Run {
            path: path.clone(),
            command,
            network: self.list.name.clone(),
            file: self.list.file.clone(),
            source,
        })?;
        debug!(
            plugin = %kind,
            command,
            elapsed = ?started.elapsed(),
            stderr = %String::from_utf8_lossy(&output.stderr).trim(),
            "ran a CNI plugin"
        );
        if !output.status.success() {
            return Err(Error::Plugin {
                plugin: kind,
                command,
                network: self.list.name.clone(),
                file: self.list.file.clone(),
                error: Box::new(plugin_error(&output)),
            });
        }
        if command != "ADD" {
            return Ok(None);
        }
        let bad = |what: String| Error::BadResult {
            plugin: kind.clone(),
            command,
            network: self.list.name.clone(),
            file: self.list.file.clone(),
            what,
        };
        match serde_json::from_slice::<Value>(&output.stdout) {
            Ok(result @ Value::Object(_)) => Ok(Some(result)),
            Ok(other) => Err(bad(format!("not a JSON object: {other}"))),
            Err(err) => Err(bad(format!(
                "{err}: {:?}",
                String::from_utf8_lossy(&output.stdout)
            ))),
        }
    }

    /// The configuration a plugin reads on stdin: its own, with the network's `name` and
    /// `cniVersion`, `prevResult`, and `runtimeConfig` holding the capabilities it declares
    /// (libcni's buildOneConfig and injectRuntimeConfig).
    fn plugin_config(&self, plugin: &Value, previous: Option<&Value>) -> Vec<u8> {
        let mut config = plugin.clone();
        config["name"] = self.list.name.clone().into();
        config["cniVersion"] = self.list.cni_version.clone().into();
        if let Some(previous) = previous {
            config["prevResult"] = previous.clone();
        }
        let mut runtime = Map::new();
        if let Some(caps) = plugin["capabilities"].as_object() {
            for (capability, wanted) in caps {
                if wanted.as_bool() == Some(true)
                    && let Some(args) = self.capability_args.get(capability)
                {
                    runtime.insert(capability.clone(), args.clone());
                }
            }
        }
        if !runtime.is_empty() {
            config["runtimeConfig"] = Value::Object(runtime);
        }
        // Serialising a Value cannot fail.
        serde_json::to_vec(&config).unwrap_or_default()
    }
}

/// A plugin's binary: the first of `bin_dirs` holding a file of its `type`.
fn find_plugin(list: &NetworkList, bin_dirs: &[PathBuf], plugin: &Value) -> Result<PathBuf, Error> {
    use std::os::unix::fs::PermissionsExt;
    let kind = plugin["type"].as_str().unwrap_or_default();
    bin_dirs
        .iter()
        .map(|dir| dir.join(kind))
        .find(|path| {
            std::fs::metadata(path)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| Error::NotFound {
            plugin: kind.to_owned(),
            network: list.name.clone(),
            file: list.file.clone(),
            searched: bin_dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// How long one plugin command may take before it is killed: kubelet's default runtime request
/// timeout (`--runtime-request-timeout`, 2 minutes), which bounds containerd's CNI calls. A
/// plugin that hangs must not hang the pod's start (or its teardown, or `gc`).
const PLUGIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Starts `cmd`, writes `stdin` to it and waits for it with its output, killing it after
/// [`PLUGIN_TIMEOUT`] (a timed-out error then). The caller makes sure no one else reaps it (in
/// the supervisor: inside `Reaper::paused`).
fn run(cmd: &mut Command, stdin: &[u8]) -> std::io::Result<Output> {
    run_for(cmd, stdin, PLUGIN_TIMEOUT)
}

fn run_for(cmd: &mut Command, stdin: &[u8], limit: std::time::Duration) -> std::io::Result<Output> {
    let mut child = cmd.spawn()?;
    // A pidfd: the watchdog's signal reaches this process or none, even once it is reaped.
    let pidfd = netns::PidFd::open(child.id());
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        let timed_out =
            finished.recv_timeout(limit) == Err(std::sync::mpsc::RecvTimeoutError::Timeout);
        if timed_out && let Ok(pidfd) = &pidfd {
            let _ = pidfd.signal(nix::sys::signal::Signal::SIGKILL);
        }
        timed_out
    });
    if let Some(mut input) = child.stdin.take() {
        // A plugin that exits without reading its stdin closes the pipe: its exit tells.
        let _ = input.write_all(stdin);
    }
    let output = child.wait_with_output();
    drop(done);
    if watchdog.join().unwrap_or(false) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "it did not finish within {} s and was killed",
                limit.as_secs()
            ),
        ));
    }
    output
}

/// The error a failed plugin printed on stdout, as the spec has it; else its exit and stderr.
fn plugin_error(output: &Output) -> PluginError {
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    if let Ok(error) = serde_json::from_slice::<Value>(&output.stdout)
        && let Some(code) = error["code"].as_u64()
    {
        let mut details = error["details"].as_str().unwrap_or_default().to_owned();
        if details.is_empty() && !stderr.is_empty() {
            details = stderr;
        }
        return PluginError {
            code: Some(code),
            msg: error["msg"].as_str().unwrap_or_default().to_owned(),
            details,
            other: String::new(),
        };
    }
    let stdout = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let said = [stdout, stderr]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    PluginError {
        code: None,
        msg: String::new(),
        details: String::new(),
        other: if said.is_empty() {
            output.status.to_string()
        } else {
            format!("{}: {said}", output.status)
        },
    }
}

/// The pod's addresses in a CNI result (0.3.0 on: `ips[].address` with `interface` an index
/// into `interfaces`; 0.1.0 and 0.2.0: `ip4.ip`, `ip6.ip`), IPv4 first.
fn addresses(result: &Value, if_name: &str) -> Vec<IpAddr> {
    let parse = |cidr: &str| {
        cidr.split('/')
            .next()
            .and_then(|ip| ip.parse::<IpAddr>().ok())
    };
    let interfaces = result["interfaces"].as_array().cloned().unwrap_or_default();
    let ips = result["ips"].as_array().cloned().unwrap_or_default();
    let interface_of = |ip: &Value| {
        ip["interface"]
            .as_u64()
            .and_then(|i| interfaces.get(i as usize))
    };
    // The pod's eth0 first; else any address in the pod's namespace or on no interface named.
    let on_if: Vec<&Value> = ips
        .iter()
        .filter(|ip| interface_of(ip).is_some_and(|i| i["name"] == if_name && sandboxed(i)))
        .collect();
    let chosen: Vec<&Value> = if on_if.is_empty() {
        ips.iter()
            .filter(|ip| interface_of(ip).is_none_or(sandboxed))
            .collect()
    } else {
        on_if
    };
    let mut found: Vec<IpAddr> = chosen
        .iter()
        .filter_map(|ip| ip["address"].as_str().and_then(parse))
        .collect();
    if ips.is_empty() {
        found.extend(
            ["ip4", "ip6"]
                .iter()
                .filter_map(|v| result[v]["ip"].as_str().and_then(parse)),
        );
    }
    found.sort_by_key(|ip| ip.is_ipv6());
    found.dedup();
    found
}

fn sandboxed(interface: &Value) -> bool {
    interface["sandbox"].as_str().is_some_and(|s| !s.is_empty())
}

/// A container ID as containerd's sandbox IDs look (64 hex digits), unique to this pod's run:
/// the sha256 of its state directory and uid.
fn container_id(dir: &Path, uid: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    hash.update(dir.as_os_str().as_encoded_bytes());
    hash.update([0]);
    hash.update(uid.as_bytes());
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The bandwidth plugin's capability from kubelet's annotations
/// (`kubernetes.io/ingress-bandwidth`, `kubernetes.io/egress-bandwidth`: bits per second as a
/// quantity), with containerd's burst; `None` without either.
fn bandwidth(annotations: &Map<String, Value>) -> Result<Option<Value>, String> {
    let mut out = Map::new();
    for (annotation, rate, burst) in [
        (
            "kubernetes.io/ingress-bandwidth",
            "ingressRate",
            "ingressBurst",
        ),
        (
            "kubernetes.io/egress-bandwidth",
            "egressRate",
            "egressBurst",
        ),
    ] {
        let Some(text) = annotations.get(annotation).and_then(Value::as_str) else {
            continue;
        };
        let bits = crate::spec::parse_quantity(text)
            .filter(|b| *b > 0)
            .ok_or_else(|| {
                format!("the pod's annotation {annotation}: {text:?} is not a bandwidth (as 10M)")
            })?;
        out.insert(rate.into(), bits.into());
        out.insert(burst.into(), u64::from(u32::MAX).into());
    }
    Ok((!out.is_empty()).then_some(Value::Object(out)))
}

/// DEL of the attachment cached in the pod's state directory `dir`, for a pod whose supervisor
/// is gone (`gc`, `delete`); the cache goes once DEL succeeded, and is kept for `gc` to try
/// again (see [`keep_for_retry`]) when it failed. Lines saying what it did.
pub fn release(dir: &Path) -> Vec<String> {
    let attachment = match Attachment::load(dir) {
        Ok(Some(attachment)) => attachment,
        Ok(None) => return Vec::new(),
        Err(err) => return vec![super::image::error_chain(&err)],
    };
    match attachment.del() {
        Ok(()) => {
            Attachment::forget(dir);
            vec![format!(
                "ran CNI DEL of network {:?} ({})",
                attachment.list.name,
                attachment.list.file.display()
            )]
        }
        Err(err) => {
            let mut lines = vec![super::image::error_chain(&err)];
            lines.extend(keep_for_retry(dir, &attachment).err());
            lines
        }
    }
}

/// Where attachments whose DEL failed wait for `gc` to try again: the pod's directory goes with
/// the pod, and what the plugins made (a host-local lease, portmap's rules) must not be
/// forgotten with it, as libcni keeps its cache until a DEL succeeds.
pub const RETRY_DIR: &str = "/run/podkit/cni";

/// Moves the attachment cached in `dir` (whose DEL failed) to [`RETRY_DIR`], named by its
/// container ID.
pub fn keep_for_retry(dir: &Path, attachment: &Attachment) -> Result<(), String> {
    let retry = Path::new(RETRY_DIR);
    std::fs::create_dir_all(retry)
        .map_err(|e| format!("failed to create {}: {e}", retry.display()))?;
    attachment
        .save(retry)
        .map_err(|e| super::image::error_chain(&e))?;
    let saved = retry.join(CACHE_FILE);
    let named = retry.join(format!("{}.json", attachment.container_id));
    std::fs::rename(&saved, &named)
        .map_err(|e| format!("failed to keep {} for gc: {e}", named.display()))?;
    Attachment::forget(dir);
    Ok(())
}

/// `gc`: DEL again of every attachment kept in [`RETRY_DIR`]; each goes once its DEL succeeds.
/// Lines saying what it did.
pub fn retry_kept() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(RETRY_DIR) else {
        return Vec::new();
    };
    let mut lines = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let attachment = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|text| {
                serde_json::from_slice::<Attachment>(&text).map_err(|e| e.to_string())
            });
        let attachment = match attachment {
            Ok(attachment) => attachment,
            Err(err) => {
                lines.push(format!("{}: {err}", path.display()));
                continue;
            }
        };
        match attachment.del() {
            Ok(()) => {
                let _ = std::fs::remove_file(&path);
                lines.push(format!(
                    "ran CNI DEL of network {:?} ({}) again: it succeeded",
                    attachment.list.name,
                    attachment.list.file.display()
                ));
            }
            Err(err) => lines.push(format!(
                "CNI DEL kept in {} failed again: {}",
                path.display(),
                super::image::error_chain(&err)
            )),
        }
    }
    let _ = std::fs::remove_dir(RETRY_DIR);
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plugin_that_hangs_is_killed_at_the_limit() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "exec sleep 600"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let err =
            run_for(&mut cmd, b"{}", std::time::Duration::from_millis(100)).expect_err("killed");
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert!(err.to_string().contains("did not finish within"), "{err}");
        // One that finishes in time gives its output.
        let mut cmd = Command::new("cat");
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let output = run_for(&mut cmd, b"{\"cniVersion\":\"1.0.0\"}", PLUGIN_TIMEOUT).expect("cat");
        assert_eq!(output.stdout, b"{\"cniVersion\":\"1.0.0\"}");
    }

    #[test]
    fn addresses_of_each_result_version() {
        let v1 = json!({"cniVersion": "1.0.0",
            "interfaces": [{"name": "cni0"}, {"name": "veth1"}, {"name": "eth0", "sandbox": "/run/netns/x"}],
            "ips": [{"address": "fd00::5/64", "interface": 2}, {"address": "10.99.0.5/24", "interface": 2, "gateway": "10.99.0.1"}]});
        assert_eq!(
            addresses(&v1, "eth0"),
            [
                "10.99.0.5".parse::<IpAddr>().expect("test value"),
                "fd00::5".parse().expect("test value")
            ]
        );
        let v04 = json!({"cniVersion": "0.4.0",
            "ips": [{"version": "4", "address": "10.99.0.6/24"}]});
        assert_eq!(
            addresses(&v04, "eth0"),
            ["10.99.0.6".parse::<IpAddr>().expect("test value")]
        );
        let on_host = json!({"interfaces": [{"name": "br0"}],
            "ips": [{"address": "10.99.0.1/24", "interface": 0}]});
        assert!(addresses(&on_host, "eth0").is_empty());
        let v02 = json!({"cniVersion": "0.2.0", "ip4": {"ip": "10.99.0.7/24"}});
        assert_eq!(
            addresses(&v02, "eth0"),
            ["10.99.0.7".parse::<IpAddr>().expect("test value")]
        );
    }

    #[test]
    fn plugin_configs_get_name_version_previous_result_and_their_capabilities() {
        let list = NetworkList {
            file: "/x/10-n.conflist".into(),
            name: "n".into(),
            cni_version: "1.0.0".into(),
            disable_check: false,
            plugins: vec![
                json!({"type": "bridge"}),
                json!({"type": "portmap", "capabilities": {"portMappings": true, "bandwidth": false}}),
            ],
        };
        let cni = Cni {
            list,
            bin_dirs: vec!["/nowhere".into()],
        };
        let annotations: Map<String, Value> =
            serde_json::from_value(json!({"kubernetes.io/ingress-bandwidth": "10M"}))
                .expect("test value");
        let pod = PodRef {
            namespace: "default",
            name: "web",
            uid: "u-1",
            dir: Path::new("/run/podkit/pods/default_web"),
            netns: "/run/netns/default_web".into(),
            annotations: Some(&annotations),
        };
        let ports = [PortMapping {
            host_port: 8080,
            container_port: 80,
            udp: false,
            host_ip: None,
        }];
        let attachment = Attachment::new(&cni, &pod, &ports).expect("attachment");
        assert_eq!(attachment.container_id.len(), 64);
        assert_eq!(attachment.cni_args[3].1, attachment.container_id);
        assert_eq!(
            attachment.capability_args["bandwidth"],
            json!({"ingressRate": 10_000_000, "ingressBurst": u32::MAX})
        );
        let previous = json!({"cniVersion": "1.0.0", "ips": []});
        let bridge: Value =
            serde_json::from_slice(&attachment.plugin_config(&cni.list.plugins[0], None))
                .expect("test value");
        assert_eq!(
            bridge,
            json!({"type": "bridge", "name": "n", "cniVersion": "1.0.0"})
        );
        let portmap: Value = serde_json::from_slice(
            &attachment.plugin_config(&cni.list.plugins[1], Some(&previous)),
        )
        .expect("test value");
        assert_eq!(portmap["prevResult"], previous);
        assert_eq!(
            portmap["runtimeConfig"],
            json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]})
        );
        // Not found: named, with where it was looked for.
        let err =
            find_plugin(&cni.list, &cni.bin_dirs, &cni.list.plugins[0]).expect_err("not found");
        assert!(
            err.to_string().contains("\"bridge\"") && err.to_string().contains("/nowhere"),
            "{err}"
        );
    }

    #[test]
    fn plugin_errors_read_as_the_spec_has_them() {
        use std::os::unix::process::ExitStatusExt;
        let output = Output {
            status: std::process::ExitStatus::from_raw(1 << 8),
            stdout:
                br#"{"cniVersion":"1.0.0","code":7,"msg":"bad bridge","details":"name too long"}"#
                    .to_vec(),
            stderr: Vec::new(),
        };
        assert_eq!(
            plugin_error(&output).to_string(),
            "error code 7 (invalid network config): bad bridge (name too long)"
        );
        let output = Output {
            status: std::process::ExitStatus::from_raw(2 << 8),
            stdout: Vec::new(),
            stderr: b"panic: oops".to_vec(),
        };
        assert_eq!(
            plugin_error(&output).to_string(),
            "exit status: 2: panic: oops"
        );
    }
}
