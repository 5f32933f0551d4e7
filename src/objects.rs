//! podkit's object store: the ConfigMaps, Secrets and PersistentVolumeClaims `apply` keeps for
//! the pods that use them, as a cluster keeps them in its API server. One JSON file per object
//! under the persistent storage root, `<storage>/objects/<namespace>/<resource>/<name>.json`,
//! each written whole and renamed into place (a reader, a pod's supervisor watching the
//! directory, never sees half of one). Secrets are readable by root only: their directory is
//! 0700, their files 0600. A claim's volume is a directory, `<storage>/volumes/<namespace>/<name>`,
//! made when the claim is kept and removed with it (the Delete reclaim policy of a dynamically
//! provisioned volume).

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::spec::{Object, ObjectKind};

#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("failed to {what} {path:?}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path:?} is damaged: {reason}")]
    Damaged { path: PathBuf, reason: String },

    #[error(
        "PersistentVolumeClaim {name:?} in namespace {namespace:?}: spec is immutable after \
         creation except resources.requests (as the API server keeps it); delete the claim \
         (and its data) to make it again"
    )]
    ClaimChanged { namespace: String, name: String },

    #[error(
        "{kind} {name:?} in namespace {namespace:?} is immutable (immutable: true): its data \
         cannot change; delete it and apply it again (pods that use it keep what they read)"
    )]
    Immutable {
        kind: &'static str,
        namespace: String,
        name: String,
    },

    #[error(
        "Service {name:?} in namespace {namespace:?}: spec.ports[{index}].nodePort: Invalid \
         value: {port}: {why}"
    )]
    NodePort {
        namespace: String,
        name: String,
        index: usize,
        port: u64,
        why: String,
    },

    #[error(
        "Service {name:?} in namespace {namespace:?}: spec.clusterIP: Invalid value: {ip:?}: {why}"
    )]
    ClusterIp {
        namespace: String,
        name: String,
        ip: String,
        why: String,
    },

    #[error(
        "{kind} {name:?} in namespace {namespace:?}: spec.{field} is immutable (as the API \
         server keeps it): delete the {kind} and apply it again"
    )]
    FieldImmutable {
        kind: &'static str,
        namespace: String,
        name: String,
        field: String,
    },
}

/// The spec fields of a kind that may change after creation (`None`: all may). The others are
/// immutable, as the API server's update validation keeps them.
fn mutable_spec(kind: ObjectKind) -> Option<&'static [&'static str]> {
    match kind {
        // ValidateJobSpecUpdate: the template and completions are fixed once the Job runs.
        ObjectKind::Job => Some(&[
            "parallelism",
            "suspend",
            "activeDeadlineSeconds",
            "ttlSecondsAfterFinished",
        ]),
        // ValidateStatefulSetUpdate's list.
        ObjectKind::StatefulSet => Some(&[
            "replicas",
            "ordinals",
            "template",
            "updateStrategy",
            "persistentVolumeClaimRetentionPolicy",
            "minReadySeconds",
        ]),
        _ => None,
    }
}

/// What [`Store::put`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Created,
    Configured,
    Unchanged,
}

impl Change {
    /// As kubectl prints it: `configmap/app created`.
    pub fn word(self) -> &'static str {
        match self {
            Change::Created => "created",
            Change::Configured => "configured",
            Change::Unchanged => "unchanged",
        }
    }
}

/// The object store at `<storage>/objects`.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// The metadata the store itself sets: kept across updates, left out when comparing. An
/// object's `status` is the server's too (a workload's controller writes it).
const SERVER_FIELDS: [&str; 2] = ["uid", "creationTimestamp"];

impl Store {
    pub fn new(storage: &Path) -> Store {
        Store {
            root: storage.join("objects"),
        }
    }

    /// The directory of one kind in one namespace.
    pub fn dir(&self, kind: ObjectKind, namespace: &str) -> PathBuf {
        self.root.join(namespace).join(kind.resource())
    }

    fn path(&self, kind: ObjectKind, namespace: &str, name: &str) -> PathBuf {
        self.dir(kind, namespace).join(format!("{name}.json"))
    }

    /// Makes the directory of `kind` in `namespace` (a Secret's 0700), for a writer or a
    /// watcher.
    pub fn make_dir(&self, kind: ObjectKind, namespace: &str) -> Result<PathBuf, ObjectError> {
        let dir = self.dir(kind, namespace);
        let mode = match kind {
            ObjectKind::Secret => 0o700,
            _ => 0o755,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(&dir)
            .map_err(|source| ObjectError::Io {
                what: "create",
                path: dir.clone(),
                source,
            })?;
        Ok(dir)
    }

    /// Keeps `object`: created, configured (changed), or unchanged. An immutable object that
    /// exists may not change.
    pub fn put(&self, object: &Object) -> Result<Change, ObjectError> {
        let _locked = self.lock(object.kind, &object.namespace)?;
        let existing = self.get(object.kind, &object.namespace, &object.name)?;
        let mut value = object.value.clone();
        // A Service's manifest seldom names its cluster IP: it keeps the one it was given.
        if let Some(old) = &existing
            && object.kind == ObjectKind::Service
            && value["spec"]["clusterIP"].is_null()
            && old["spec"]["clusterIP"] != "None"
        {
            for field in ["clusterIP", "clusterIPs"] {
                if let Some(kept) = old["spec"].get(field) {
                    value["spec"][field] = kept.clone();
                }
            }
        }
        // And the node ports it was given, port by port.
        if let Some(old) = &existing
            && object.kind == ObjectKind::Service
            && matches!(
                value["spec"]["type"].as_str(),
                Some("NodePort" | "LoadBalancer")
            )
            && let Some(ports) = value["spec"]["ports"].as_array_mut()
        {
            let protocol = |p: &Value| p["protocol"].as_str().unwrap_or("TCP").to_owned();
            for port in ports.iter_mut().filter(|p| p["nodePort"].is_null()) {
                let kept = old["spec"]["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|o| o["port"] == port["port"] && protocol(o) == protocol(port))
                    .and_then(|o| o.get("nodePort"))
                    .filter(|n| !n.is_null());
                if let Some(kept) = kept {
                    port["nodePort"] = kept.clone();
                }
            }
        }
        let change = match &existing {
            None => Change::Created,
            Some(old) => {
                if without_server_fields(old) == without_server_fields(&value) {
                    return Ok(Change::Unchanged);
                }
                if let Some(mutable) = mutable_spec(object.kind) {
                    let spec = |v: &Value| v["spec"].as_object().cloned().unwrap_or_default();
                    let (before, after) = (spec(old), spec(&value));
                    let changed = before.keys().chain(after.keys()).find(|k| {
                        !mutable.contains(&k.as_str()) && before.get(*k) != after.get(*k)
                    });
                    if let Some(field) = changed {
                        return Err(ObjectError::FieldImmutable {
                            kind: object.kind.kind(),
                            namespace: object.namespace.clone(),
                            name: object.name.clone(),
                            field: field.clone(),
                        });
                    }
                }
                if let Some(status) = old.get("status") {
                    value["status"] = status.clone();
                }
                if object.kind == ObjectKind::PersistentVolumeClaim {
                    let fixed = |v: &Value| {
                        let mut spec = v["spec"].clone();
                        if let Some(map) = spec.as_object_mut() {
                            map.remove("resources");
                        }
                        spec
                    };
                    if fixed(old) != fixed(&value) {
                        return Err(ObjectError::ClaimChanged {
                            namespace: object.namespace.clone(),
                            name: object.name.clone(),
                        });
                    }
                }
                if old.get("immutable") == Some(&Value::Bool(true)) {
                    return Err(ObjectError::Immutable {
                        kind: object.kind.kind(),
                        namespace: object.namespace.clone(),
                        name: object.name.clone(),
                    });
                }
                Change::Configured
            }
        };
        // The server's fields: kept from the object this one replaces, else made now.
        let meta = value["metadata"].as_object_mut();
        if let Some(meta) = meta {
            for field in SERVER_FIELDS {
                let kept = existing
                    .as_ref()
                    .and_then(|old| old["metadata"].get(field))
                    .cloned();
                let made = match field {
                    "uid" => kept.unwrap_or_else(|| new_uid().into()),
                    _ => kept.unwrap_or_else(|| {
                        jiff::Timestamp::now()
                            .strftime("%Y-%m-%dT%H:%M:%SZ")
                            .to_string()
                            .into()
                    }),
                };
                meta.insert(field.into(), made);
            }
        }
        if object.kind == ObjectKind::PersistentVolumeClaim {
            // The volume first: a claim that is kept is bound, its directory there. 0777, as
            // local-path provisioners make theirs: a pod's user of any uid can write it.
            let volume = self.claim_dir(&object.namespace, &object.name);
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o777)
                .create(&volume)
                .and_then(|()| {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(&volume, std::fs::Permissions::from_mode(0o777))
                })
                .map_err(|source| ObjectError::Io {
                    what: "create",
                    path: volume.clone(),
                    source,
                })?;
        }
        // A Service's cluster IP, allocated as the API server allocates it, under the lock of
        // every namespace's addresses until the Service that has it is written.
        let _addresses = match object.kind {
            ObjectKind::Service => Some(self.assign_addresses(&mut value, existing.as_ref())?),
            _ => None,
        };
        let dir = self.make_dir(object.kind, &object.namespace)?;
        let path = self.path(object.kind, &object.namespace, &object.name);
        let text = serde_json::to_vec_pretty(&value).unwrap_or_default();
        write_atomic(&dir, &path, &text, object.kind == ObjectKind::Secret)?;
        Ok(change)
    }

    /// Replaces the object's `status` (a controller's report); false when the object is gone.
    pub fn set_status(
        &self,
        kind: ObjectKind,
        namespace: &str,
        name: &str,
        status: Value,
    ) -> Result<bool, ObjectError> {
        let _locked = self.lock(kind, namespace)?;
        let Some(mut value) = self.get(kind, namespace, name)? else {
            return Ok(false);
        };
        if value.get("status") == Some(&status) {
            return Ok(true);
        }
        value["status"] = status;
        let dir = self.make_dir(kind, namespace)?;
        let path = self.path(kind, namespace, name);
        let text = serde_json::to_vec_pretty(&value).unwrap_or_default();
        write_atomic(&dir, &path, &text, kind == ObjectKind::Secret)?;
        Ok(true)
    }

    /// Holds the lock of one kind's directory in a namespace: `put` and `set_status` read,
    /// change and write an object under it, so neither loses the other's write (`apply` of a
    /// changed spec while the controller writes the status).
    fn lock(
        &self,
        kind: ObjectKind,
        namespace: &str,
    ) -> Result<nix::fcntl::Flock<std::fs::File>, ObjectError> {
        let dir = self.make_dir(kind, namespace)?;
        self.lock_path(&dir.join(".lock"))
    }

    /// Holds the lock file `path` (made if missing).
    fn lock_path(&self, path: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, ObjectError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| ObjectError::Io {
                what: "create",
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let path = path.to_path_buf();
        // Read-only once it exists (flock needs no write access): closing a file opened for
        // writing is an IN_CLOSE_WRITE event, which would wake every controller watching the
        // directory at each pass of the one holding the lock, itself included.
        let file = std::fs::File::open(&path)
            .or_else(|_| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .mode(0o600)
                    .open(&path)
            })
            .map_err(|source| ObjectError::Io {
                what: "open",
                path: path.clone(),
                source,
            })?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, errno)| {
            ObjectError::Io {
                what: "lock",
                path,
                source: errno.into(),
            }
        })
    }

    /// Gives `service` its cluster IP as the API server does: the one it had (a cluster IP
    /// cannot change), the one its manifest asks for if it is free and in the service subnet,
    /// or a free one (first free after a hash of the Service's name, so one deleted and made
    /// again usually gets its address back); none for a headless (`clusterIP: None`) or
    /// ExternalName Service. Returns the lock of the addresses, held until the Service is
    /// written.
    fn assign_addresses(
        &self,
        service: &mut Value,
        existing: Option<&Value>,
    ) -> Result<nix::fcntl::Flock<std::fs::File>, ObjectError> {
        let locked = self.lock_path(&self.root.join(".cluster-ips.lock"))?;
        let key = |s: &Value| {
            (
                s["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("default")
                    .to_owned(),
                s["metadata"]["name"].as_str().unwrap_or("").to_owned(),
            )
        };
        let me = key(service);
        let others: Vec<Value> = self
            .list(ObjectKind::Service, None)?
            .into_iter()
            .filter(|s| key(s) != me)
            .collect();
        self.assign_cluster_ip(service, existing, &others)?;
        assign_node_ports(service, &others)?;
        Ok(locked)
    }

    /// The cluster IP part of [`Store::assign_addresses`].
    fn assign_cluster_ip(
        &self,
        service: &mut Value,
        existing: Option<&Value>,
        others: &[Value],
    ) -> Result<(), ObjectError> {
        let invalid = |ip: &str, why: String| ObjectError::ClusterIp {
            namespace: service["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_owned(),
            name: service["metadata"]["name"]
                .as_str()
                .unwrap_or("")
                .to_owned(),
            ip: ip.to_owned(),
            why,
        };
        let asked = service["spec"]["clusterIP"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let had = existing
            .and_then(|old| old["spec"]["clusterIP"].as_str())
            .unwrap_or("")
            .to_owned();
        if service["spec"]["type"] == "ExternalName" || asked == "None" {
            if !had.is_empty() && had != asked && had != "None" && !asked.is_empty() {
                return Err(invalid(&asked, "field is immutable".into()));
            }
            return Ok(());
        }
        if !had.is_empty() && had != "None" {
            if !asked.is_empty() && asked != had {
                return Err(invalid(
                    &asked,
                    format!("field is immutable (the Service has {had})"),
                ));
            }
            service["spec"]["clusterIP"] = had.clone().into();
            service["spec"]["clusterIPs"] = serde_json::json!([had]);
            return Ok(());
        }
        let subnet = service_subnet().map_err(|why| invalid(&asked, why))?;
        let taken: Vec<std::net::Ipv4Addr> = others
            .iter()
            .filter_map(|s| s["spec"]["clusterIP"].as_str()?.parse().ok())
            .collect();
        // The store's place in the key: Services of two stores on one host (tests, two
        // installs) share the host's NAT table and seldom pick the same address.
        let key = format!(
            "{}:{}/{}",
            self.root.display(),
            service["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default"),
            service["metadata"]["name"].as_str().unwrap_or("")
        );
        let ip = if asked.is_empty() {
            free_cluster_ip(subnet, &taken, &key).ok_or_else(|| {
                invalid(
                    "",
                    format!("failed to allocate a cluster IP: the range {subnet} is full"),
                )
            })?
        } else {
            let ip: std::net::Ipv4Addr = asked
                .parse()
                .map_err(|_| invalid(&asked, "must be a valid IPv4 address, or None".into()))?;
            if !subnet.contains(ip) || ip == subnet.network() || ip == subnet.broadcast() {
                return Err(invalid(
                    &asked,
                    format!(
                        "provided IP is not in the valid range. The range of valid IPs is \
                         {subnet} (PODKIT_SERVICE_SUBNET)"
                    ),
                ));
            }
            if taken.contains(&ip) {
                return Err(invalid(&asked, "provided IP is already allocated".into()));
            }
            ip
        };
        service["spec"]["clusterIP"] = ip.to_string().into();
        service["spec"]["clusterIPs"] = serde_json::json!([ip.to_string()]);
        Ok(())
    }

    /// The object named so, as kept (with its uid and creationTimestamp).
    pub fn get(
        &self,
        kind: ObjectKind,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Value>, ObjectError> {
        let path = self.path(kind, namespace, name);
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(ObjectError::Io {
                    what: "read",
                    path,
                    source,
                });
            }
        };
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|err| ObjectError::Damaged {
                path,
                reason: err.to_string(),
            })
    }

    /// The directory of a PersistentVolumeClaim's volume.
    pub fn claim_dir(&self, namespace: &str, name: &str) -> PathBuf {
        self.root
            .with_file_name("volumes")
            .join(namespace)
            .join(name)
    }

    /// Removes the object (a claim with its volume's data); whether it was there.
    pub fn delete(
        &self,
        kind: ObjectKind,
        namespace: &str,
        name: &str,
    ) -> Result<bool, ObjectError> {
        let path = self.path(kind, namespace, name);
        if kind == ObjectKind::PersistentVolumeClaim {
            let volume = self.claim_dir(namespace, name);
            match std::fs::remove_dir_all(&volume) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(ObjectError::Io {
                        what: "remove",
                        path: volume,
                        source,
                    });
                }
            }
        }
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(ObjectError::Io {
                what: "remove",
                path,
                source,
            }),
        }
    }

    /// Every object of `kind`, in `namespace` or in all of them, by namespace and name.
    pub fn list(
        &self,
        kind: ObjectKind,
        namespace: Option<&str>,
    ) -> Result<Vec<Value>, ObjectError> {
        let namespaces: Vec<String> = match namespace {
            Some(ns) => vec![ns.to_owned()],
            None => match std::fs::read_dir(&self.root) {
                Ok(entries) => entries
                    .flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect(),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(source) => {
                    return Err(ObjectError::Io {
                        what: "read",
                        path: self.root.clone(),
                        source,
                    });
                }
            },
        };
        let mut found = Vec::new();
        for ns in namespaces {
            let dir = self.dir(kind, &ns);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut names: Vec<String> = entries
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| !n.starts_with('.'))
                .filter_map(|n| n.strip_suffix(".json").map(str::to_owned))
                .collect();
            names.sort();
            for name in names {
                if let Some(value) = self.get(kind, &ns, &name)? {
                    found.push(value);
                }
            }
        }
        found.sort_by(|a, b| {
            let key = |v: &Value| {
                (
                    v["metadata"]["namespace"].as_str().unwrap_or("").to_owned(),
                    v["metadata"]["name"].as_str().unwrap_or("").to_owned(),
                )
            };
            key(a).cmp(&key(b))
        });
        Ok(found)
    }
}

fn without_server_fields(value: &Value) -> Value {
    let mut value = value.clone();
    if let Some(map) = value.as_object_mut() {
        map.remove("status");
    }
    if let Some(meta) = value["metadata"].as_object_mut() {
        for field in SERVER_FIELDS {
            meta.remove(field);
        }
    }
    value
}

/// A new object uid: the kernel's random UUID, as the API server gives each object one.
pub fn new_uid() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .map(|u| u.trim().to_owned())
        .unwrap_or_else(|_| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            format!("{nanos:032x}")
        })
}

/// Whether an inotify event in a store directory may be an object's change: not one of a
/// dot-name (the store's lock files, and the temporary files [`write_atomic`] renames into
/// place), whose writes would otherwise wake a watcher at each write of its own.
pub fn changes(event: &nix::sys::inotify::InotifyEvent) -> bool {
    event
        .name
        .as_ref()
        .is_none_or(|name| !name.as_encoded_bytes().starts_with(b"."))
}

/// Writes `path` whole: a temporary file in `dir` (0600 when `private`), synced, renamed into
/// place, the directory synced: after a crash the object is the old one or the new one.
fn write_atomic(dir: &Path, path: &Path, text: &[u8], private: bool) -> Result<(), ObjectError> {
    let io = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| ObjectError::Io { what, path, source }
    };
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("object");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(if private { 0o600 } else { 0o644 })
            .open(&tmp)?;
        file.write_all(text)?;
        file.sync_all()
    })();
    if let Err(source) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io("write", &tmp)(source));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io("rename into place", path)(e)
    })?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// What a pod reads of an object: every key with its bytes (a ConfigMap's `data` and
/// `binaryData`, a Secret's `data` decoded), and which keys are a ConfigMap's `data` (the only
/// ones its env references and `envFrom` see, as kubelet reads them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Data {
    pub entries: BTreeMap<String, Vec<u8>>,
    /// For env: a ConfigMap's `data`, a Secret's `data` as text.
    pub env: BTreeMap<String, String>,
}

/// The data of a stored object.
pub fn data(kind: ObjectKind, value: &Value) -> Data {
    use base64::Engine as _;
    let decode = |text: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap_or_default()
    };
    let map = |field: &str| {
        value[field]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
            .collect::<Vec<_>>()
    };
    let mut out = Data::default();
    match kind {
        ObjectKind::ConfigMap => {
            for (k, v) in map("data") {
                out.entries.insert(k.clone(), v.clone().into_bytes());
                out.env.insert(k, v);
            }
            for (k, v) in map("binaryData") {
                out.entries.insert(k, decode(&v));
            }
        }
        ObjectKind::Secret => {
            for (k, v) in map("data") {
                let bytes = decode(&v);
                out.env
                    .insert(k.clone(), String::from_utf8_lossy(&bytes).into_owned());
                out.entries.insert(k, bytes);
            }
        }
        _ => {}
    }
    out
}

/// The range node ports come from: kube-apiserver's default `--service-node-port-range`.
const NODE_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;

/// Gives each port of a NodePort or LoadBalancer `service` its node port as the API server
/// does: the one asked for (or kept from the Service it replaces, which `Store::put` copied
/// in) if no other Service has it, else a free one of [`NODE_PORTS`]. A Service of another
/// type has none.
fn assign_node_ports(service: &mut Value, others: &[Value]) -> Result<(), ObjectError> {
    let kind = service["spec"]["type"].as_str().unwrap_or("ClusterIP");
    if !matches!(kind, "NodePort" | "LoadBalancer") {
        return Ok(());
    }
    let protocol = |p: &Value| p["protocol"].as_str().unwrap_or("TCP").to_owned();
    let mut taken: Vec<(String, u64)> = others
        .iter()
        .flat_map(|s| s["spec"]["ports"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| Some((protocol(&p), p["nodePort"].as_u64()?)))
        .collect();
    let (namespace, name) = (
        service["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_owned(),
        service["metadata"]["name"]
            .as_str()
            .unwrap_or("")
            .to_owned(),
    );
    let Some(ports) = service["spec"]["ports"].as_array_mut() else {
        return Ok(());
    };
    // Asked-for ports first, so a free one picked for another port never takes them.
    for (i, port) in ports.iter().enumerate() {
        if let Some(asked) = port["nodePort"].as_u64() {
            let key = (protocol(port), asked);
            if taken.contains(&key) {
                return Err(ObjectError::NodePort {
                    namespace,
                    name,
                    index: i,
                    port: asked,
                    why: "provided port is already allocated".into(),
                });
            }
            taken.push(key);
        }
    }
    for (i, port) in ports.iter_mut().enumerate() {
        if !port["nodePort"].is_null() {
            continue;
        }
        let picked = {
            // The first free one after a hash of the Service and port, so a deleted and
            // re-applied Service usually gets the same.
            let seed = format!("{namespace}/{name}/{}/{}", port["port"], protocol(port))
                .bytes()
                .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                    (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
                });
            let size = u64::from(NODE_PORTS.end() - NODE_PORTS.start()) + 1;
            (0..size)
                .map(|k| u64::from(*NODE_PORTS.start()) + (seed % size + k) % size)
                .find(|n| !taken.contains(&(protocol(port), *n)))
        };
        let Some(picked) = picked else {
            return Err(ObjectError::NodePort {
                namespace,
                name,
                index: i,
                port: 0,
                why: format!(
                    "failed to allocate a node port: the range {}-{} is full",
                    NODE_PORTS.start(),
                    NODE_PORTS.end()
                ),
            });
        };
        taken.push((protocol(port), picked));
        port["nodePort"] = picked.into();
    }
    Ok(())
}

/// The subnet Services' cluster IPs come from: `PODKIT_SERVICE_SUBNET`, default 10.96.0.0/16
/// (the start of kube-apiserver's default `--service-cluster-ip-range`, 10.96.0.0/12).
pub fn service_subnet() -> Result<netns::Subnet, String> {
    match std::env::var("PODKIT_SERVICE_SUBNET") {
        Ok(text) if !text.trim().is_empty() => text
            .trim()
            .parse()
            .map_err(|e| format!("PODKIT_SERVICE_SUBNET={text:?}: {e}")),
        _ => {
            netns::Subnet::new(std::net::Ipv4Addr::new(10, 96, 0, 0), 16).map_err(|e| e.to_string())
        }
    }
}

/// A free address of `subnet` (not its network or broadcast address, nor its first, which
/// a cluster gives the `kubernetes` Service), the first free one from a hash of `key`.
fn free_cluster_ip(
    subnet: netns::Subnet,
    taken: &[std::net::Ipv4Addr],
    key: &str,
) -> Option<std::net::Ipv4Addr> {
    let base = u32::from(subnet.network());
    let size = 1u64 << (32 - u32::from(subnet.prefix_len()));
    // Usable: offsets 2 ..= size - 2.
    let usable = size.checked_sub(3).filter(|n| *n > 0)?;
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    (0..usable)
        .map(|i| std::net::Ipv4Addr::from(base + 2 + ((hash % usable + i) % usable) as u32))
        .find(|ip| !taken.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(kind: ObjectKind, name: &str, value: Value) -> Object {
        Object {
            kind,
            namespace: "default".into(),
            name: name.into(),
            immutable: value.get("immutable") == Some(&Value::Bool(true)),
            value,
        }
    }

    #[test]
    fn services_get_cluster_ips_and_node_ports_as_the_api_server_gives_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path());
        let service = |name: &str, spec: Value| {
            object(
                ObjectKind::Service,
                name,
                serde_json::json!({"kind": "Service", "metadata": {"name": name, "namespace": "default"}, "spec": spec}),
            )
        };
        let get = |name: &str| {
            store
                .get(ObjectKind::Service, "default", name)
                .expect("store")
                .expect("kept")
        };
        let web = service(
            "web",
            serde_json::json!({"type": "NodePort", "ports": [{"port": 80}, {"port": 443}]}),
        );
        assert_eq!(store.put(&web).expect("put"), Change::Created);
        let kept = get("web");
        let ip: std::net::Ipv4Addr = kept["spec"]["clusterIP"]
            .as_str()
            .expect("ip")
            .parse()
            .expect("an address");
        assert_eq!(ip.octets()[..2], [10, 96]);
        assert_eq!(kept["spec"]["clusterIPs"][0], kept["spec"]["clusterIP"]);
        let node_ports: Vec<u64> = (0..2)
            .map(|i| {
                kept["spec"]["ports"][i]["nodePort"]
                    .as_u64()
                    .expect("a node port")
            })
            .collect();
        assert!(node_ports.iter().all(|p| (30000..=32767).contains(p)));
        assert_ne!(node_ports[0], node_ports[1]);
        // A re-apply of the same manifest keeps both and changes nothing.
        assert_eq!(store.put(&web).expect("put"), Change::Unchanged);
        assert_eq!(get("web")["spec"], kept["spec"]);
        // Another Service cannot have them, nor pick an address out of range.
        let taken = service(
            "db",
            serde_json::json!({"clusterIP": ip.to_string(), "ports": [{"port": 5432}]}),
        );
        let err = store.put(&taken).expect_err("taken").to_string();
        assert!(err.contains("provided IP is already allocated"), "{err}");
        let outside = service(
            "db",
            serde_json::json!({"clusterIP": "10.1.2.3", "ports": [{"port": 5432}]}),
        );
        let err = store.put(&outside).expect_err("out of range").to_string();
        assert!(err.contains("not in the valid range"), "{err}");
        let port = service(
            "db",
            serde_json::json!({"type": "NodePort", "ports": [{"port": 5432, "nodePort": node_ports[0]}]}),
        );
        let err = store.put(&port).expect_err("taken").to_string();
        assert!(
            err.contains("spec.ports[0].nodePort: Invalid value")
                && err.contains("already allocated"),
            "{err}"
        );
        // Headless: none; and a cluster IP cannot change.
        let headless = service(
            "db",
            serde_json::json!({"clusterIP": "None", "ports": [{"port": 5432}]}),
        );
        store.put(&headless).expect("put");
        assert_eq!(get("db")["spec"]["clusterIP"], "None");
        let moved = service(
            "web",
            serde_json::json!({"type": "NodePort", "clusterIP": "10.96.0.77", "ports": [{"port": 80}, {"port": 443}]}),
        );
        let err = store.put(&moved).expect_err("immutable").to_string();
        assert!(err.contains("field is immutable"), "{err}");
    }

    #[test]
    fn put_keeps_server_fields_and_says_what_changed() {
        let dir = std::env::temp_dir().join(format!("podkit-objects-{}", std::process::id()));
        let store = Store::new(&dir);
        let v1 = serde_json::json!({"kind": "ConfigMap", "metadata": {"name": "a", "namespace": "default"}, "data": {"k": "1"}});
        let v2 = serde_json::json!({"kind": "ConfigMap", "metadata": {"name": "a", "namespace": "default"}, "data": {"k": "2"}});
        let a1 = object(ObjectKind::ConfigMap, "a", v1.clone());
        assert_eq!(store.put(&a1).expect("store"), Change::Created);
        let uid = store
            .get(ObjectKind::ConfigMap, "default", "a")
            .expect("store")
            .expect("store")["metadata"]["uid"]
            .clone();
        assert_eq!(store.put(&a1).expect("store"), Change::Unchanged);
        assert_eq!(
            store
                .put(&object(ObjectKind::ConfigMap, "a", v2))
                .expect("store"),
            Change::Configured
        );
        let kept = store
            .get(ObjectKind::ConfigMap, "default", "a")
            .expect("store")
            .expect("store");
        assert_eq!(kept["metadata"]["uid"], uid);
        assert_eq!(kept["data"]["k"], "2");
        assert_eq!(
            store
                .list(ObjectKind::ConfigMap, None)
                .expect("store")
                .len(),
            1
        );

        let mut frozen = v1;
        frozen["immutable"] = true.into();
        let s = object(ObjectKind::Secret, "s", frozen.clone());
        assert_eq!(store.put(&s).expect("store"), Change::Created);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(store.path(ObjectKind::Secret, "default", "s"))
                .expect("store")
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        frozen["data"]["k"] = "3".into();
        let err = store
            .put(&object(ObjectKind::Secret, "s", frozen))
            .expect_err("refused");
        assert!(err.to_string().contains("immutable"), "{err}");
        assert!(
            store
                .delete(ObjectKind::Secret, "default", "s")
                .expect("store")
        );
        assert!(
            !store
                .delete(ObjectKind::Secret, "default", "s")
                .expect("store")
        );
        std::fs::remove_dir_all(&dir).expect("store");
    }

    #[test]
    fn data_reads_as_kubelet_does() {
        let cm = serde_json::json!({"data": {"a": "x"}, "binaryData": {"b": "AAE="}});
        let d = data(ObjectKind::ConfigMap, &cm);
        assert_eq!(d.entries["b"], vec![0, 1]);
        assert_eq!(d.env.keys().collect::<Vec<_>>(), ["a"]);
        let secret = serde_json::json!({"data": {"p": "aHVudGVyMg=="}});
        let d = data(ObjectKind::Secret, &secret);
        assert_eq!(d.env["p"], "hunter2");
    }
}
