//! The host's devices as its Container Device Interface specs describe them (the files podman
//! and containerd read: `/etc/cdi`, then `/var/run/cdi`), read as the CDI library reads them
//! (`tags.cncf.io/container-device-interface`, `pkg/cdi`): `*.json` and `*.yaml` (and `*.yml`)
//! files, each a spec of one kind (`vendor.com/class`) with its devices and the container edits
//! each device (and any device of the spec) asks of a container. A device in a later directory
//! replaces one of the same name in an earlier one; two files of one directory naming the same
//! device make it unavailable, as the library's cache marks it conflicting.
//!
//! `PODKIT_CDI_SPEC_DIRS` (colon-separated) replaces the two directories, as containerd's
//! `cdi_spec_dirs` setting does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The directories read when `PODKIT_CDI_SPEC_DIRS` is not set: static specs, then generated.
pub const DEFAULT_SPEC_DIRS: [&str; 2] = ["/etc/cdi", "/var/run/cdi"];

/// The variable that replaces [`DEFAULT_SPEC_DIRS`].
pub const SPEC_DIRS_ENV: &str = "PODKIT_CDI_SPEC_DIRS";

/// The spec versions the CDI library knows (`specs-go/version.go`).
const VERSIONS: [&str; 10] = [
    "0.1.0", "0.2.0", "0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0", "1.0.0", "1.1.0",
];

/// The hook names a spec may use (the OCI runtime spec's).
const HOOK_NAMES: [&str; 6] = [
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

/// Why a spec file is not used.
#[derive(Debug, thiserror::Error)]
pub enum CdiError {
    #[error("failed to read CDI spec {path:?}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to parse CDI spec {path:?}: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("invalid CDI spec {path:?}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("CDI device {device:?} is in both {first:?} and {second:?}: neither is used")]
    Conflict {
        device: String,
        first: PathBuf,
        second: PathBuf,
    },
}

/// A spec file (`specs-go/config.go`). Unknown fields are refused, as the library's strict
/// unmarshalling refuses them.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Spec {
    pub cdi_version: String,
    pub kind: String,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub devices: Vec<Device>,
    #[serde(default)]
    pub container_edits: ContainerEdits,
}

/// One device of a spec.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Device {
    pub name: String,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub container_edits: ContainerEdits,
}

/// What a device asks of a container's OCI spec.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerEdits {
    /// `NAME=value`, appended to the process's environment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_nodes: Vec<DeviceNode>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<Hook>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional_gids: Vec<u32>,
    /// Refused: podkit sets no RDT class.
    #[serde(default, skip_serializing)]
    pub intel_rdt: Option<serde_json::Value>,
    /// Refused: podkit moves no host interface into a pod.
    #[serde(default, skip_serializing)]
    pub net_devices: Option<serde_json::Value>,
}

/// A device node made in the container (`linux.devices`) and allowed by its device cgroup.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeviceNode {
    /// In the container.
    pub path: String,
    /// On the host (`path` when empty): where type and numbers are read from.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host_path: String,
    /// `b`, `c`, `u` or `p`; read from the host node when empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub r#type: String,
    #[serde(default)]
    pub major: i64,
    #[serde(default)]
    pub minor: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_mode: Option<u32>,
    /// The cgroup access, `rwm` by default; `none` for none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub permissions: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
}

/// A mount added to the container.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Mount {
    pub host_path: String,
    pub container_path: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub r#type: String,
}

/// An OCI hook, run by the runtime at `hook_name`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Hook {
    pub hook_name: String,
    pub path: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
}

impl ContainerEdits {
    fn is_empty(&self) -> bool {
        self.env.is_empty()
            && self.device_nodes.is_empty()
            && self.mounts.is_empty()
            && self.hooks.is_empty()
            && self.additional_gids.is_empty()
            && self.intel_rdt.is_none()
            && self.net_devices.is_none()
    }

    /// The library's `ContainerEdits.Validate`, and podkit's refusals.
    fn validate(&self) -> Result<(), String> {
        if self.intel_rdt.is_some() {
            return Err("intelRdt: not supported by podkit (it sets no RDT class)".to_owned());
        }
        if self.net_devices.is_some() {
            return Err(
                "netDevices: not supported by podkit (it moves no host interface into a pod)"
                    .to_owned(),
            );
        }
        env(&self.env)?;
        for d in &self.device_nodes {
            if d.path.is_empty() {
                return Err("invalid (empty) device path".to_owned());
            }
            if !matches!(d.r#type.as_str(), "" | "b" | "c" | "u" | "p") {
                return Err(format!("device {:?}: invalid type {:?}", d.path, d.r#type));
            }
            if d.permissions != "none" && d.permissions.chars().any(|c| !"rwm".contains(c)) {
                return Err(format!(
                    "device {:?}: invalid permissions {:?}",
                    d.path, d.permissions
                ));
            }
        }
        for h in &self.hooks {
            if !HOOK_NAMES.contains(&h.hook_name.as_str()) {
                return Err(format!("invalid hook name {:?}", h.hook_name));
            }
            if h.path.is_empty() {
                return Err(format!("invalid hook {:?} with empty path", h.hook_name));
            }
            env(&h.env).map_err(|e| format!("invalid hook {:?}: {e}", h.hook_name))?;
        }
        for m in &self.mounts {
            if m.host_path.is_empty() {
                return Err("invalid mount, empty host path".to_owned());
            }
            if m.container_path.is_empty() {
                return Err("invalid mount, empty container path".to_owned());
            }
        }
        Ok(())
    }

    /// `other`'s edits after these (the library's `Append`).
    pub fn append(&mut self, other: &ContainerEdits) {
        self.env.extend(other.env.iter().cloned());
        self.device_nodes.extend(other.device_nodes.iter().cloned());
        self.mounts.extend(other.mounts.iter().cloned());
        self.hooks.extend(other.hooks.iter().cloned());
        self.additional_gids
            .extend(other.additional_gids.iter().copied());
    }
}

fn env(env: &[String]) -> Result<(), String> {
    match env.iter().find(|v| v.find('=').is_none_or(|i| i == 0)) {
        Some(v) => Err(format!("invalid environment variable {v:?}")),
        None => Ok(()),
    }
}

/// A vendor or class name: a letter, then letters, digits, `_`, `-`, `.`, ending with a letter
/// or digit (the library's `validateVendorOrClassName`).
fn vendor_or_class(name: &str) -> Result<(), String> {
    let b = name.as_bytes();
    let Some(&first) = b.first() else {
        return Err("empty name".to_owned());
    };
    if !first.is_ascii_alphabetic() {
        return Err(format!("{name:?}, should start with letter"));
    }
    if let Some(c) = b
        .iter()
        .skip(1)
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.')))
    {
        return Err(format!(
            "invalid character '{}' in name {name:?}",
            char::from(*c)
        ));
    }
    if !b[b.len() - 1].is_ascii_alphanumeric() {
        return Err(format!("{name:?}, should end with a letter or digit"));
    }
    Ok(())
}

/// A device name: letters, digits, `_`, `-`, `.`, `:`, starting and ending with a letter or
/// digit (the library's `ValidateDeviceName`).
fn device_name(name: &str) -> Result<(), String> {
    let b = name.as_bytes();
    let (Some(first), Some(last)) = (b.first(), b.last()) else {
        return Err("invalid (empty) device name".to_owned());
    };
    if !first.is_ascii_alphanumeric() || !last.is_ascii_alphanumeric() {
        return Err(format!(
            "invalid name {name:?}, should start and end with a letter or digit"
        ));
    }
    if let Some(c) = b
        .iter()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b':')))
    {
        return Err(format!(
            "invalid character '{}' in device name {name:?}",
            char::from(*c)
        ));
    }
    Ok(())
}

/// Whether `kind` is a CDI kind, `vendor/class`: what an extended resource's name must be to
/// be served from a spec.
pub fn valid_kind(kind: &str) -> Result<(), String> {
    let Some((vendor, class)) = kind.split_once('/') else {
        return Err(format!("{kind:?} is not vendor/class"));
    };
    vendor_or_class(vendor).map_err(|e| format!("invalid vendor. {e}"))?;
    vendor_or_class(class).map_err(|e| format!("invalid class. {e}"))
}

impl Spec {
    /// Parses the text of spec file `path` (JSON for `*.json`, YAML otherwise) and checks it
    /// as the library does (`Spec.validate`).
    pub fn parse(path: &Path, text: &[u8]) -> Result<Spec, CdiError> {
        let parse_err = |reason: String| CdiError::Parse {
            path: path.to_owned(),
            reason,
        };
        let spec: Spec = if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_slice(text).map_err(|e| parse_err(e.to_string()))?
        } else {
            let text = std::str::from_utf8(text).map_err(|e| parse_err(e.to_string()))?;
            // YAML 1.1 octal (`fileMode: 0666`), as the library's YAML parser reads it.
            let mut options = serde_saphyr::Options::default();
            options.legacy_octal_numbers = true;
            serde_saphyr::from_str_with_options(text, options)
                .map_err(|e| parse_err(e.to_string()))?
        };
        spec.validate().map_err(|reason| CdiError::Invalid {
            path: path.to_owned(),
            reason,
        })?;
        Ok(spec)
    }

    fn validate(&self) -> Result<(), String> {
        if !VERSIONS.contains(&self.cdi_version.as_str()) {
            return Err(format!("invalid version {:?}", self.cdi_version));
        }
        valid_kind(&self.kind)?;
        self.container_edits.validate()?;
        let mut seen = std::collections::HashSet::new();
        for d in &self.devices {
            device_name(&d.name).map_err(|e| format!("failed add device {:?}: {e}", d.name))?;
            if d.container_edits.is_empty() {
                return Err(format!(
                    "failed add device {:?}: invalid device, empty device edits",
                    d.name
                ));
            }
            d.container_edits
                .validate()
                .map_err(|e| format!("failed add device {:?}: invalid device: {e}", d.name))?;
            if !seen.insert(d.name.as_str()) {
                return Err(format!("invalid spec, multiple device {:?}", d.name));
            }
        }
        if self.devices.is_empty() {
            return Err("invalid spec, no devices".to_owned());
        }
        Ok(())
    }
}

/// One device the host's specs offer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Offered {
    /// `vendor.com/class`.
    pub kind: String,
    pub name: String,
    /// The spec file it is in.
    pub spec: PathBuf,
    /// The device's edits.
    pub edits: ContainerEdits,
    /// Its spec's edits, made once for any number of its devices, before theirs.
    pub spec_edits: ContainerEdits,
}

impl Offered {
    /// `vendor.com/class=name`, the CDI qualified name.
    pub fn qualified(&self) -> String {
        format!("{}={}", self.kind, self.name)
    }
}

/// Every device the specs in `dirs` offer, by kind then name, and the files not used.
#[derive(Debug, Default)]
pub struct Registry {
    pub devices: BTreeMap<String, BTreeMap<String, Offered>>,
    pub errors: Vec<CdiError>,
}

/// The directories to read: `PODKIT_CDI_SPEC_DIRS` or [`DEFAULT_SPEC_DIRS`].
pub fn spec_dirs() -> Vec<PathBuf> {
    match std::env::var_os(SPEC_DIRS_ENV) {
        Some(dirs) => std::env::split_paths(&dirs)
            .filter(|d| !d.as_os_str().is_empty())
            .collect(),
        None => DEFAULT_SPEC_DIRS.iter().map(PathBuf::from).collect(),
    }
}

impl Registry {
    /// Reads every spec file in `dirs` (not recursing; a missing directory has none).
    pub fn load(dirs: &[PathBuf]) -> Registry {
        let mut registry = Registry::default();
        for dir in dirs {
            let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
                Ok(entries) => entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        p.extension()
                            .is_some_and(|e| e == "json" || e == "yaml" || e == "yml")
                    })
                    .collect(),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => {
                    registry.errors.push(CdiError::Read {
                        path: dir.clone(),
                        source,
                    });
                    continue;
                }
            };
            files.sort();
            // This directory's devices, by kind and name; conflicts drop both.
            let mut here: BTreeMap<(String, String), Option<Offered>> = BTreeMap::new();
            for path in files {
                if !path.is_file() {
                    continue;
                }
                let spec = std::fs::read(&path)
                    .map_err(|source| CdiError::Read {
                        path: path.clone(),
                        source,
                    })
                    .and_then(|text| Spec::parse(&path, &text));
                let spec = match spec {
                    Ok(spec) => spec,
                    Err(err) => {
                        registry.errors.push(err);
                        continue;
                    }
                };
                for device in &spec.devices {
                    let offered = Offered {
                        kind: spec.kind.clone(),
                        name: device.name.clone(),
                        spec: path.clone(),
                        edits: device.container_edits.clone(),
                        spec_edits: spec.container_edits.clone(),
                    };
                    let key = (spec.kind.clone(), device.name.clone());
                    match here.get_mut(&key) {
                        None => {
                            here.insert(key, Some(offered));
                        }
                        Some(slot) => {
                            if let Some(first) = slot.take() {
                                registry.errors.push(CdiError::Conflict {
                                    device: offered.qualified(),
                                    first: first.spec,
                                    second: path.clone(),
                                });
                            }
                        }
                    }
                }
            }
            for ((kind, name), offered) in here {
                let kind_devices = registry.devices.entry(kind).or_default();
                match offered {
                    Some(offered) => {
                        kind_devices.insert(name, offered);
                    }
                    // Conflicting in a later directory: the earlier one's is not used either.
                    None => {
                        kind_devices.remove(&name);
                    }
                }
            }
        }
        registry.devices.retain(|_, devices| !devices.is_empty());
        registry
    }

    /// The devices of `kind` that serve one unit of its extended resource: all but `all`
    /// (NVIDIA's generated specs have it; it means every device at once).
    pub fn units(&self, kind: &str) -> Vec<&Offered> {
        self.devices
            .get(kind)
            .into_iter()
            .flat_map(|d| d.values())
            .filter(|d| d.name != "all")
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write spec");
        path
    }

    const YAML: &str = "cdiVersion: 0.6.0
kind: example.com/device
devices:
- name: dev0
  containerEdits:
    deviceNodes:
    - {path: /dev/example0, hostPath: /dev/null, permissions: rw}
- name: dev1
  containerEdits:
    env: [WHICH=1]
    deviceNodes:
    - path: /dev/example1
      hostPath: /dev/zero
      type: c
      major: 1
      minor: 5
      fileMode: 438
      uid: 0
      gid: 0
    mounts:
    - {hostPath: /tmp/x, containerPath: /x, type: bind, options: [ro, rbind]}
    hooks:
    - {hookName: createContainer, path: /bin/true, args: [true], env: [A=b], timeout: 5}
    additionalGids: [0, 44]
- name: all
  containerEdits:
    deviceNodes: [{path: /dev/example0}, {path: /dev/example1}]
containerEdits:
  env: [EXAMPLE=yes]
";

    #[test]
    fn yaml_and_json_specs_are_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "example.yaml", YAML);
        write(
            dir.path(),
            "other.json",
            r#"{"cdiVersion": "1.0.0", "kind": "vendor.io/gpu",
                "devices": [{"name": "0", "containerEdits": {"env": ["GPU=0"]}}]}"#,
        );
        write(dir.path(), "ignored.txt", "not a spec");
        let registry = Registry::load(&[dir.path().to_owned()]);
        assert!(registry.errors.is_empty(), "{:?}", registry.errors);
        let units: Vec<_> = registry
            .units("example.com/device")
            .iter()
            .map(|d| d.qualified())
            .collect();
        assert_eq!(
            units,
            ["example.com/device=dev0", "example.com/device=dev1"]
        );
        let dev1 = &registry.devices["example.com/device"]["dev1"];
        assert_eq!(dev1.edits.env, ["WHICH=1"]);
        assert_eq!(dev1.spec_edits.env, ["EXAMPLE=yes"]);
        assert_eq!(dev1.edits.device_nodes[0].major, 1);
        assert_eq!(dev1.edits.device_nodes[0].file_mode, Some(438));
        assert_eq!(dev1.edits.mounts[0].options, ["ro", "rbind"]);
        assert_eq!(dev1.edits.hooks[0].timeout, Some(5));
        assert_eq!(dev1.edits.additional_gids, [0, 44]);
        assert_eq!(registry.units("vendor.io/gpu")[0].edits.env, ["GPU=0"]);
        assert!(registry.units("vendor.io/none").is_empty());
    }

    #[test]
    fn a_later_directory_wins_and_one_directory_may_not_name_a_device_twice() {
        let (a, b) = (
            tempfile::tempdir().expect("tempdir"),
            tempfile::tempdir().expect("tempdir"),
        );
        let spec = |env: &str| {
            format!(
                "cdiVersion: 0.5.0\nkind: a.com/b\ndevices:\n- name: d\n  containerEdits: {{env: [{env}]}}\n"
            )
        };
        write(a.path(), "1.yaml", &spec("FROM=a"));
        write(b.path(), "1.yaml", &spec("FROM=b"));
        let registry = Registry::load(&[a.path().to_owned(), b.path().to_owned()]);
        assert_eq!(registry.units("a.com/b")[0].edits.env, ["FROM=b"]);
        write(b.path(), "2.yml", &spec("FROM=b2"));
        let registry = Registry::load(&[a.path().to_owned(), b.path().to_owned()]);
        assert!(registry.units("a.com/b").is_empty());
        assert!(
            matches!(&registry.errors[..], [CdiError::Conflict { device, .. }] if device == "a.com/b=d"),
            "{:?}",
            registry.errors
        );
    }

    #[test]
    fn malformed_specs_are_errors_naming_the_file_and_what_is_wrong() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cases = [
            ("a.yaml", "cdiVersion: [", "failed to parse"),
            ("b.json", "{\"cdiVersion\": \"0.6.0\"", "failed to parse"),
            (
                "c.yaml",
                "cdiVersion: 0.6.0\nkind: a.com/b\ndevices: [{name: d, containerEdits: {env: [X=1]}}]\nextra: 1\n",
                "unknown field",
            ),
            (
                "d.yaml",
                "cdiVersion: 9.9.9\nkind: a.com/b\ndevices: [{name: d, containerEdits: {env: [X=1]}}]\n",
                "invalid version",
            ),
            (
                "e.yaml",
                "cdiVersion: 0.6.0\nkind: nokind\ndevices: [{name: d, containerEdits: {env: [X=1]}}]\n",
                "is not vendor/class",
            ),
            (
                "f.yaml",
                "cdiVersion: 0.6.0\nkind: a.com/b\ndevices: [{name: d, containerEdits: {}}]\n",
                "empty device edits",
            ),
            (
                "g.yaml",
                "cdiVersion: 0.6.0\nkind: a.com/b\ndevices: [{name: d, containerEdits: {env: [=1]}}]\n",
                "invalid environment variable",
            ),
            (
                "h.yaml",
                "cdiVersion: 0.6.0\nkind: a.com/b\ndevices: [{name: d, containerEdits: {deviceNodes: [{path: /dev/x, permissions: rwx}]}}]\n",
                "invalid permissions",
            ),
            (
                "i.yaml",
                "cdiVersion: 0.6.0\nkind: a.com/b\ndevices: [{name: d, containerEdits: {hooks: [{hookName: later, path: /x}]}}]\n",
                "invalid hook name",
            ),
            (
                "j.yaml",
                "cdiVersion: 0.7.0\nkind: a.com/b\ndevices: [{name: d, containerEdits: {intelRdt: {closID: x}}}]\n",
                "intelRdt: not supported by podkit",
            ),
            (
                "k.yaml",
                "cdiVersion: 1.1.0\nkind: a.com/b\ndevices: [{name: d, containerEdits: {netDevices: [{hostInterfaceName: eth9, name: eth0}]}}]\n",
                "netDevices: not supported by podkit",
            ),
            (
                "l.yaml",
                "cdiVersion: 0.6.0\nkind: a.com/b\ndevices: []\n",
                "no devices",
            ),
            (
                "m.yaml",
                "cdiVersion: 0.6.0\nkind: a.com/b\ndevices: [{name: -d, containerEdits: {env: [X=1]}}]\n",
                "should start and end",
            ),
            (
                "n.yaml",
                "cdiVersion: 0.6.0\nkind: a.com/b\ndevices: [{name: d, containerEdits: {mounts: [{hostPath: /x, containerPath: ''}]}}]\n",
                "empty container path",
            ),
        ];
        for (name, text, wanted) in cases {
            let path = write(dir.path(), name, text);
            let err = Spec::parse(&path, text.as_bytes())
                .expect_err(name)
                .to_string();
            assert!(err.contains(&format!("{path:?}")), "{name}: {err}");
            assert!(err.contains(wanted), "{name}: {err}");
        }
        let registry = Registry::load(&[dir.path().to_owned()]);
        assert_eq!(registry.errors.len(), cases.len());
        assert!(registry.devices.is_empty());
    }
}
