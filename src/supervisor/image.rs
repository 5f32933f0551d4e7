//! Image containers: the image made present as `imagePullPolicy` says, with kubelet's events,
//! and each run's root filesystem and runtime bundle.
//!
//! Pulls run `podkit pull` as a child process: the supervisor, which lives as long as its pod,
//! links no registry client and keeps none of a pull's memory. The store's lock makes two pods
//! pulling one image download it once.

use std::path::{Path, PathBuf};
use std::time::Instant;

use netns::Process;
use tokio_util::sync::CancellationToken;

use super::runtime::{self, Runtime};
use super::{Pod, volumes};
use crate::spec::{self, ImageRun, Member, PullPolicy};

/// The image store's root: `PODKIT_STORAGE` (which `podkit run` and `apply` pass on from their
/// `--storage`), or /var/lib/podkit.
pub(crate) fn storage() -> PathBuf {
    std::env::var_os("PODKIT_STORAGE")
        .map_or_else(|| PathBuf::from(crate::cli::DEFAULT_STORAGE), PathBuf::from)
}

/// The pod's record of where its `containers/` directory lives on disk (see
/// [`containers_on_disk`]).
pub(crate) const DISK_RECORD: &str = "containers.disk";

/// Puts the pod's `containers/` directory (each run's writable layer, overlay work directory and
/// bundle) on the image store's disk, as containerd keeps its snapshots under /var/lib: a new
/// directory `<storage>/containers/POD-XXXXXX` bind-mounted at `containers/` in the pod's
/// directory, recorded in [`DISK_RECORD`] for [`remove_containers_dir`] and `gc`. The pod's
/// directory is on /run, a tmpfs: a container writing gigabytes there would fill the host's
/// memory.
pub(crate) fn containers_on_disk(pod_dir: &Path, pod: &str) -> Result<(), String> {
    let parent = storage().join("containers");
    std::fs::create_dir_all(&parent)
        .map_err(|e| format!("failed to create {}: {e}", parent.display()))?;
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        ^ std::process::id();
    let backing = loop {
        seed = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        let candidate = parent.join(format!("{pod}-{seed:08x}"));
        match std::fs::create_dir(&candidate) {
            Ok(()) => break candidate,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("failed to create {}: {e}", candidate.display())),
        }
    };
    let record = pod_dir.join(DISK_RECORD);
    let target = pod_dir.join("containers");
    let made = std::fs::write(&record, backing.as_os_str().as_encoded_bytes())
        .map_err(|e| format!("failed to write {}: {e}", record.display()))
        .and_then(|()| {
            std::fs::create_dir_all(&target)
                .map_err(|e| format!("failed to create {}: {e}", target.display()))
        })
        .and_then(|()| {
            use nix::mount::MsFlags;
            nix::mount::mount(
                Some(&backing),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| {
                format!(
                    "failed to bind-mount {} at {}: {e}",
                    backing.display(),
                    target.display()
                )
            })
        });
    if let Err(err) = made {
        let _ = std::fs::remove_dir(&backing);
        let _ = std::fs::remove_file(&record);
        return Err(err);
    }
    Ok(())
}

/// Unmounts the pod's on-disk `containers/` and removes it and its directory on disk (the
/// runs' root filesystems must be unmounted first). What was done, for `gc`'s list.
pub(crate) fn remove_containers_dir(pod_dir: &Path) -> Vec<String> {
    let mut done = Vec::new();
    let target = pod_dir.join("containers");
    if nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH).is_ok() {
        done.push(format!("unmounted {}", target.display()));
    }
    let Ok(recorded) = std::fs::read_to_string(pod_dir.join(DISK_RECORD)) else {
        return done;
    };
    let backing = PathBuf::from(recorded.trim());
    // Only a directory of the store's `containers/` (the record is the pod's own file, but
    // never trusted to name anything else).
    let parent = storage().join("containers");
    let ours = backing.parent() == Some(parent.as_path())
        && backing
            .file_name()
            .is_some_and(|n| n.to_string_lossy().contains('-'));
    if !ours {
        done.push(format!(
            "not removing {}: not a directory of {}",
            backing.display(),
            parent.display()
        ));
        return done;
    }
    match std::fs::remove_dir_all(&backing) {
        Ok(()) => done.push(format!("removed {}", backing.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => done.push(format!("failed to remove {}: {e}", backing.display())),
    }
    let _ = std::fs::remove_file(pod_dir.join(DISK_RECORD));
    done
}

/// The size of the pod's `/dev/shm`: containerd's and Docker's default.
const SHM_SIZE: u64 = 64 << 20;

/// Makes the files the pod owns and bind-mounts into each image container, as containerd's
/// sandbox does: `etc/hosts` (kubelet's, with the pod's hostname on its IP, or on the loopback
/// address when it has only that, then `hostAliases`), `etc/hostname`, `etc/resolv.conf` (see
/// [`resolv_conf`]) and a 64 MiB tmpfs for `/dev/shm`.
pub(crate) fn pod_files(dir: &Path, plan: &spec::PodPlan, root: &Path) -> Result<(), String> {
    let etc = dir.join("etc");
    std::fs::create_dir_all(&etc)
        .map_err(|e| format!("failed to create {}: {e}", etc.display()))?;
    let hosts = pod_hosts(plan, root)?;
    let hostname = &plan.hostname;
    let resolv = resolv_conf(&plan.dns, &host_resolv_conf());
    for (name, text) in [
        ("hosts", hosts),
        ("hostname", format!("{hostname}\n")),
        ("resolv.conf", resolv),
    ] {
        let path = etc.join(name);
        super::status::write_atomic(&path, text.as_bytes())
            .map_err(|e| format!("failed to write {}: {e}", path.display()))?;
    }
    let shm = dir.join("shm");
    std::fs::create_dir_all(&shm)
        .map_err(|e| format!("failed to create {}: {e}", shm.display()))?;
    use nix::mount::MsFlags;
    // hostIPC: the host's /dev/shm, as containerd mounts it for such a pod.
    if plan.host_ipc {
        return nix::mount::mount(
            Some("/dev/shm"),
            &shm,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| {
            format!(
                "failed to bind the host's /dev/shm at {}: {e}",
                shm.display()
            )
        });
    }
    nix::mount::mount(
        Some("shm"),
        &shm,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(format!("mode=1777,size={SHM_SIZE}").as_str()),
    )
    .map_err(|e| {
        format!(
            "failed to mount the pod's /dev/shm at {}: {e}",
            shm.display()
        )
    })
}

/// The pod's `/etc/hosts` as kubelet writes it, with the Services' names after.
fn pod_hosts(plan: &spec::PodPlan, root: &Path) -> Result<String, String> {
    let hostname = &plan.hostname;
    // kubelet: a pod on the host's network gets the host's /etc/hosts (`ensureHostsFile`).
    let host_hosts = || {
        std::fs::read_to_string("/etc/hosts").map_err(|e| format!("failed to read /etc/hosts: {e}"))
    };
    // kubelet puts the hostname on each of the pod's IPs; a pod with only its loopback has
    // that.
    let mut own: Vec<String> = plan.pod_ips.iter().map(|ip| ip.to_string()).collect();
    if own.is_empty() {
        own.push("127.0.0.1".to_owned());
    }
    // With a subdomain (a StatefulSet's pods: their governing Service), kubelet puts the
    // pod's fully qualified name first.
    let names = match plan.manifest["spec"]["subdomain"].as_str() {
        Some(sub) if !sub.is_empty() => format!(
            "{hostname}.{sub}.{}.svc.{}\t{hostname}",
            plan.namespace,
            crate::controller::service::CLUSTER_DOMAIN
        ),
        _ => hostname.clone(),
    };
    let mut hosts = if plan.host_network {
        host_hosts()?
    } else {
        let mut hosts = "# Kubernetes-managed hosts file (podkit).\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n".to_owned();
        for ip in own {
            hosts.push_str(&format!("{ip}\t{names}\n"));
        }
        hosts
    };
    if !plan.host_aliases.is_empty() {
        // kubelet's hostsEntriesFromHostAliases.
        hosts.push_str("\n# Entries added by HostAliases.\n");
        for (ip, names) in &plan.host_aliases {
            hosts.push_str(&format!("{ip}\t{}\n", names.join("\t")));
        }
    }
    // The Services' names, which a cluster's DNS answers: podkit has no DNS server, and keeps
    // them here instead (see [`keep_service_names`]).
    if !plan.host_network {
        let file = std::fs::read_to_string(crate::controller::service::hosts_file(root))
            .unwrap_or_default();
        let services = crate::controller::service::hosts_for(&plan.namespace, &file);
        if !services.is_empty() {
            hosts.push_str(SERVICES_HEADER);
            hosts.push_str(&services);
        }
    }
    Ok(hosts)
}

/// What comes before the Services' names in a pod's `/etc/hosts`.
const SERVICES_HEADER: &str = "\n# Services (podkit keeps these current).\n";

/// Keeps the Services' names in the pod's `/etc/hosts` in step with the root's hosts file
/// (which Services' controllers write) until the pod's directory is gone: checked every
/// second, and rewritten in place when it changed, since each container has the file's inode
/// bind-mounted (a renamed new file would not reach them). The file is written whole before
/// it is cut to length, so a reader never finds it empty.
pub(crate) async fn keep_service_names(dir: PathBuf, plan: spec::PodPlan, root: PathBuf) {
    let source = crate::controller::service::hosts_file(&root);
    let target = dir.join("etc/hosts");
    let stamp = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let mut seen = stamp(&source);
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        if !target.exists() {
            return;
        }
        let now = stamp(&source);
        if now == seen {
            continue;
        }
        seen = now;
        let Ok(text) = pod_hosts(&plan, &root) else {
            continue;
        };
        if std::fs::read_to_string(&target).is_ok_and(|old| old == text) {
            continue;
        }
        let written = std::fs::OpenOptions::new()
            .write(true)
            .open(&target)
            .and_then(|mut file| {
                use std::io::Write;
                file.write_all(text.as_bytes())?;
                file.set_len(text.len() as u64)
            });
        if let Err(err) = written {
            tracing::warn!(%err, "failed to update the pod's /etc/hosts with the Services' names");
        }
    }
}

/// The pod's resolv.conf as kubelet writes it: the host's `nameserver`s, `search` domains and
/// `options` (none for `dnsPolicy: None`), with `dnsConfig` merged in: its nameservers and
/// searches appended where new, its options replacing the host's of the same name. `host` is
/// the host's resolv.conf text.
pub(crate) fn resolv_conf(dns: &spec::Dns, host: &str) -> String {
    let mut nameservers: Vec<String> = Vec::new();
    let mut searches: Vec<String> = Vec::new();
    let mut options: Vec<(String, Option<String>)> = Vec::new();
    if !dns.policy_none {
        for line in host.lines() {
            let mut fields = line.split_whitespace();
            match fields.next() {
                Some("nameserver") => nameservers.extend(fields.next().map(str::to_owned)),
                // The last search line wins, as in the resolver.
                Some("search" | "domain") => searches = fields.map(str::to_owned).collect(),
                Some("options") => options.extend(fields.map(|o| match o.split_once(':') {
                    Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
                    None => (o.to_owned(), None),
                })),
                _ => {}
            }
        }
    }
    for ns in &dns.nameservers {
        if !nameservers.contains(ns) {
            nameservers.push(ns.clone());
        }
    }
    for search in &dns.searches {
        if !searches.contains(search) {
            searches.push(search.clone());
        }
    }
    for (name, value) in &dns.options {
        match options.iter_mut().find(|(n, _)| n == name) {
            Some(option) => option.1 = value.clone(),
            None => options.push((name.clone(), value.clone())),
        }
    }
    let mut text = String::new();
    for ns in &nameservers {
        text.push_str(&format!("nameserver {ns}\n"));
    }
    if !searches.is_empty() {
        text.push_str(&format!("search {}\n", searches.join(" ")));
    }
    if !options.is_empty() {
        let options: Vec<String> = options
            .iter()
            .map(|(name, value)| match value {
                Some(value) => format!("{name}:{value}"),
                None => name.clone(),
            })
            .collect();
        text.push_str(&format!("options {}\n", options.join(" ")));
    }
    text
}

/// The host's resolv.conf, or systemd-resolved's upstream one when the host's names only its
/// local stub (127.0.0.53 is unreachable from the pod's network namespace; kubelet does the
/// same).
fn host_resolv_conf() -> String {
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let stub_only = host
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver"))
        .all(|ns| ns.trim().starts_with("127."));
    if stub_only && let Ok(upstream) = std::fs::read_to_string("/run/systemd/resolve/resolv.conf") {
        return upstream;
    }
    host
}

/// The pod's own files, mounted into an image container (see [`pod_files`]).
fn pod_file_mounts(dir: &Path, read_only_root: bool) -> Vec<oci::bundle::BindMount> {
    let file = |name: &str, destination: &str| oci::bundle::BindMount {
        source: dir.join("etc").join(name),
        destination: destination.to_owned(),
        read_only: read_only_root,
    };
    vec![
        file("hosts", "/etc/hosts"),
        file("hostname", "/etc/hostname"),
        file("resolv.conf", "/etc/resolv.conf"),
        oci::bundle::BindMount {
            source: dir.join("shm"),
            destination: "/dev/shm".to_owned(),
            read_only: false,
        },
    ]
}

/// Why the image is not there to run: the container waits with this reason and tries again
/// after a back-off, as kubelet does.
pub(crate) struct Missing {
    /// `ErrImagePull` or `ErrImageNeverPull`.
    pub reason: &'static str,
    pub message: String,
}

/// The image of `run`, pulled first if its policy says so. `None` when `stop` came first.
pub(crate) async fn ensure(
    pod: &Pod,
    run: &ImageRun,
    object: &str,
    stop: &CancellationToken,
) -> Result<Option<oci::Image>, Missing> {
    let pull_error = |message: String| Missing {
        reason: "ErrImagePull",
        message,
    };
    let reference = oci::Reference::parse(&run.image).map_err(|e| pull_error(e.to_string()))?;
    let present = || -> Result<Option<oci::Image>, String> {
        let store = oci::Store::open(storage().join("images")).map_err(|e| error_chain(&e))?;
        store.resolve(&reference).map_err(|e| error_chain(&e))
    };
    match run.pull_policy {
        PullPolicy::Never => {
            return match present().map_err(pull_error)? {
                Some(image) => {
                    already_present(pod, run, object);
                    Ok(Some(image))
                }
                None => Err(Missing {
                    reason: "ErrImageNeverPull",
                    message: format!(
                        "Container image {:?} is not present with pull policy of Never",
                        run.image
                    ),
                }),
            };
        }
        PullPolicy::IfNotPresent => {
            if let Some(image) = present().map_err(pull_error)? {
                already_present(pod, run, object);
                return Ok(Some(image));
            }
        }
        PullPolicy::Always => {}
    }
    let plan = &pod.plan;
    let missing: Vec<&str> = plan
        .pull_secret_names
        .iter()
        .filter(|name| !plan.pull_secrets.0.iter().any(|(n, _)| n == *name))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        // kubelet's words for a Secret it cannot read: the pull goes on without it.
        let message = format!(
            "Unable to retrieve some image pull secrets ({}); attempting to pull the image may \
             not succeed. (podkit reads a Secret from the manifest's own file.)",
            missing.join(", ")
        );
        pod.update(|s| {
            s.event(
                "Warning",
                "FailedToRetrieveImagePullSecret",
                object,
                message,
            )
        });
    }
    let message = format!("Pulling image {:?}", run.image);
    pod.update(|s| s.event("Normal", "Pulling", object, message));
    let began = Instant::now();
    let Some(podkit) = super::member::own_podkit() else {
        return Err(pull_error(
            "the podkit binary to pull with is not found".to_owned(),
        ));
    };
    let mut process = Process::new(podkit)
        .args(["pull", "-q"])
        .arg(&run.image)
        .env("PODKIT_STORAGE", storage())
        .env("PODKIT_LOG", "error");
    // The pull secrets' credentials reach the pull on its stdin, a memfd: never on disk, not
    // in its command line or environment.
    let mut stdin = netns::Stdio::Null;
    if !plan.pull_secrets.0.is_empty() {
        let configs: Vec<&serde_json::Value> = plan.pull_secrets.0.iter().map(|(_, c)| c).collect();
        stdin = secrets_memfd(&configs).map_err(|e| {
            pull_error(format!(
                "failed to hand the image pull secrets to the pull: {e}"
            ))
        })?;
        process = process.arg("--pull-secrets-on-stdin");
    }
    let process = pass_env(process);
    let Some(out) = runtime::output_until(pod, process.stdin(stdin), stop)
        .await
        .map_err(pull_error)?
    else {
        return Ok(None);
    };
    if out.exit != super::Exit::Code(0) {
        let text = String::from_utf8_lossy(&out.stderr);
        let why = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("podkit pull failed")
            .trim();
        let message = if why.starts_with("Failed to pull image") {
            why.to_owned()
        } else {
            format!("Failed to pull image {:?}: {why}", run.image)
        };
        return Err(pull_error(message));
    }
    let taken = began.elapsed().as_secs_f64();
    let image = present().map_err(pull_error)?.ok_or_else(|| {
        pull_error(format!(
            "image {:?} was pulled but is not in the store",
            run.image
        ))
    })?;
    let size: u64 = image.manifest.layers().iter().map(|l| l.size()).sum();
    let message = format!(
        "Successfully pulled image {:?} in {taken:.3}s. Image size: {size} bytes.",
        run.image
    );
    pod.update(|s| s.event("Normal", "Pulled", object, message));
    Ok(Some(image))
}

fn already_present(pod: &Pod, run: &ImageRun, object: &str) {
    let message = format!("Container image {:?} already present on machine", run.image);
    pod.update(|s| s.event("Normal", "Pulled", object, message));
}

/// A memfd holding `configs` as a JSON array, at offset 0, for a pull's stdin.
fn secrets_memfd(configs: &[&serde_json::Value]) -> std::io::Result<netns::Stdio> {
    use std::io::{Seek, Write};
    let json = serde_json::to_vec(configs)?;
    let memfd = nix::sys::memfd::memfd_create(
        c"podkit-pull-secrets",
        nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
    )?;
    let mut file = std::fs::File::from(memfd);
    file.write_all(&json)?;
    file.seek(std::io::SeekFrom::Start(0))?;
    Ok(netns::Stdio::Fd(file.into()))
}

/// The variables a pull reads where registries and credentials are configured.
fn pass_env(mut process: Process) -> Process {
    for key in [
        "HOME",
        "XDG_RUNTIME_DIR",
        "REGISTRY_AUTH_FILE",
        "DOCKER_CONFIG",
        "CONTAINERS_REGISTRIES_CONF",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
    ] {
        if let Some(value) = std::env::var_os(key) {
            process = process.env(key, value);
        }
    }
    process
}

/// `kubelet`'s `imageID` for a container status: `REPOSITORY@MANIFEST-DIGEST`.
pub(crate) fn image_id(run: &ImageRun, image: &oci::Image) -> String {
    match oci::Reference::parse(&run.image) {
        Ok(reference) => format!("{}@{}", reference.name(), image.manifest_digest),
        Err(_) => image.manifest_digest.to_string(),
    }
}

/// One run of an image container, made by the runtime: started already when `made` is
/// [`runtime::Make::Run`], else waiting for `start`.
pub(crate) struct Prepared {
    pub id: String,
    pub bundle: PathBuf,
    pub rootfs: oci::Rootfs,
    pub created: runtime::Created,
    pub made: runtime::Make,
    /// The supervisor's ends of the container's stdin and pty (`stdin`, `tty`).
    pub plumbing: super::attach::Plumbing,
}

/// Mounts a fresh root filesystem for run `restart` of `member`, writes its bundle and has the
/// runtime make it: started at once if `gate` (the previous container's turn) is passed by
/// then, else created to wait for it. On failure everything made is removed.
pub(crate) async fn prepare(
    pod: &Pod,
    member: &Member,
    run: &ImageRun,
    image: &oci::Image,
    rt: &Runtime,
    env: &[(String, String)],
    gate: Option<&super::member::Gate>,
) -> Result<Prepared, String> {
    let id = runtime::container_id(&pod.plan.key(), &member.name);
    // A run's root filesystem and bundle: `containers/NAME/`, new for each run.
    let dir = pod.dir.join("containers").join(&member.name);
    if dir.exists() {
        // Left by a run whose removal failed: it must not become this run's.
        rt.delete(pod, &id).await;
        oci::remove_rootfs(&dir).map_err(|e| {
            format!(
                "failed to remove the previous run's root filesystem: {}",
                error_chain(&e)
            )
        })?;
    }
    unstage(&pod.dir, &member.name);
    // On a thread of the blocking pool: the pod's containers, prepared side by side, mount
    // their overlays at once instead of one after the other (0.3-0.8 ms each on the 2-core
    // machine). A prepare dropped meanwhile drops the mount's result, which unmounts it.
    let (layers, target) = (image.layers.clone(), dir.clone());
    let rootfs = tokio::task::spawn_blocking(move || oci::Rootfs::mount(&layers, &target))
        .await
        .map_err(|e| format!("the root filesystem's mount task failed: {e}"))?
        .map_err(|e| format!("failed to mount the root filesystem: {}", error_chain(&e)))?;
    let made = async {
        let container = bundle_container(pod, member, run, &rootfs, env)?;
        let spec = oci::bundle::spec(&container.0, image.config.config().as_ref())
            .map_err(|e| error_chain(&e))?;
        oci::bundle::write(&dir, &spec).map_err(|e| error_chain(&e))?;
        let cgroup = match &pod.cgroup {
            Some(cgroup) => {
                // Written before the runtime joins the cgroup (see set_container_huge_pages).
                cgroup.set_container_huge_pages(&member.name, &member.hugepages)?;
                Some(
                    cgroup
                        .container(&member.name)
                        .map_err(|e| format!("failed to make the container's cgroup: {e}"))?,
                )
            }
            None => None,
        };
        // The pod's other containers get to write their bundles first: once a runtime process
        // runs, the supervisor shares the CPU with it (runc's create is ~100 ms of CPU), and
        // the runtime processes then start together instead of one bundle-write apart.
        tokio::task::yield_now().await;
        let make = if gate.is_none_or(|g| *g.borrow()) {
            runtime::Make::Run
        } else {
            runtime::Make::Create
        };
        // The subPath fds (container.1) stay open until the runtime has mounted them.
        let (stdin, mut plumbing) = super::attach::image_stdin(member.stdio)
            .map_err(|e| format!("failed to make the container's stdin: {e}"))?;
        let console = member.stdio.tty;
        let created = rt
            .create(pod, &id, &dir, cgroup, make, stdin, console)
            .await;
        drop(container.1);
        created.map(|mut created| {
            if let Some(master) = created.console.take() {
                plumbing.set_console(master);
            }
            (created, make, plumbing)
        })
    }
    .await;
    match made {
        Ok((created, made, plumbing)) => Ok(Prepared {
            id,
            bundle: dir,
            rootfs,
            created,
            made,
            plumbing,
        }),
        Err(err) => {
            rt.delete(pod, &id).await;
            remove_run(&pod.dir, &member.name, rootfs);
            Err(err)
        }
    }
}

/// What the bundle asks for, and the subPath fds its mounts name.
fn bundle_container(
    pod: &Pod,
    member: &Member,
    run: &ImageRun,
    rootfs: &oci::Rootfs,
    env: &[(String, String)],
) -> Result<(oci::bundle::Container, Vec<std::os::fd::OwnedFd>), String> {
    let lookup = |name: &str| {
        env.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let expand =
        |list: &[String]| -> Vec<String> { list.iter().map(|a| spec::expand(a, lookup)).collect() };
    let mut fds = Vec::new();
    let mut mounts = pod_file_mounts(&pod.dir, run.read_only_root);
    let volume_mounts = pod
        .volumes()
        .mounts_for(member)
        .map_err(|e| e.to_string())?;
    for (i, mount) in volume_mounts.into_iter().enumerate() {
        let source = match mount.source {
            volumes::Source::Path(path) => path,
            // A subPath: what the supervisor resolved beneath the volume is bind-mounted at a
            // staging path of the pod's (as kubelet's volume-subpaths), which the runtime
            // mounts: never a path a member could have changed meanwhile. (The runtime cannot
            // mount the fd's /proc path itself: it is in another mount namespace.)
            volumes::Source::Fd(fd) => {
                let staging = pod
                    .dir
                    .join("subpaths")
                    .join(&member.name)
                    .join(i.to_string());
                stage(&fd, &staging)?;
                fds.push(fd);
                staging
            }
        };
        mounts.push(oci::bundle::BindMount {
            source,
            destination: mount.target.to_string_lossy().into_owned(),
            read_only: mount.read_only,
        });
    }
    if let Some(path) = &member.termination_message.file {
        mounts.push(oci::bundle::BindMount {
            source: super::termination::fresh_file(&pod.dir, &member.name)?,
            destination: path.to_string_lossy().into_owned(),
            read_only: false,
        });
    }
    let ns = pod.dir.join("ns");
    let namespaces = oci::bundle::Namespaces {
        net: Some(ns.join("net")),
        ipc: Some(ns.join("ipc")),
        uts: Some(ns.join("uts")),
        pid: pod.plan.share_process_namespace.then(|| ns.join("pid")),
        host_pid: pod.plan.host_pid,
    };
    let container = oci::bundle::Container {
        name: member.name.clone(),
        rootfs: rootfs.path(),
        command: expand(&run.command),
        args: expand(&run.args),
        env: env.to_vec(),
        working_dir: member
            .working_dir
            .as_ref()
            .map(|d| d.to_string_lossy().into_owned()),
        hostname: pod.plan.hostname.clone(),
        user: oci::bundle::UserRequest {
            uid: member.run_as_user,
            gid: member.run_as_group,
            supplemental_groups: run.supplemental_groups.clone(),
            strict_groups: run.strict_groups,
            run_as_non_root: run.run_as_non_root,
        },
        namespaces,
        mounts,
        security: oci::bundle::Security {
            privileged: run.privileged,
            add_capabilities: run.add_capabilities.clone(),
            drop_capabilities: run.drop_capabilities.clone(),
            read_only_root: run.read_only_root,
            no_new_privileges: run.no_new_privileges,
            ..Default::default()
        },
        cgroups_path: pod
            .cgroup
            .as_ref()
            .and_then(|c| c.container_path(&member.name)),
        resources: linux_resources(pod, member),
        // containerd: `process.terminal` is the container's `tty`.
        terminal: member.stdio.tty,
        oom_score_adj: Some(spec::resources::oom_score_adj(
            pod.plan.qos,
            member.resources.memory_request,
            spec::resources::memory_capacity(),
        )),
        ..Default::default()
    };
    let mut container = container;
    set_seccomp(&mut container, &run.seccomp)?;
    if let Some(devices) = pod.devices.get(&member.name) {
        super::devices::apply(devices, &mut container)?;
    }
    Ok((container, fds))
}

/// A container's cpu and memory as kubelet hands them to a CRI runtime and containerd writes
/// them into `linux.resources` (`generateLinuxContainerResources`, `WithResources`): cpu shares
/// from the request (2 without one), a CFS quota over 100 ms from the limit, the memory limit,
/// and memory+swap equal to it where swap is accounted (no swap: kubelet's default). `None` for
/// a container without requests or limits: kubelet's 2 shares then compete only inside the
/// pods' own cgroup, and podkit's pod cgroup sits beside the host's processes, so none are
/// set (the runtime's default, 1024).
fn linux_resources(pod: &Pod, member: &Member) -> Option<oci_spec::runtime::LinuxResources> {
    use oci_spec::runtime::{LinuxCpu, LinuxMemory, LinuxResources};
    use spec::resources::{cpu_quota, cpu_shares};
    let r = member.resources;
    if r == spec::Resources::default() {
        return None;
    }
    let mut cpu = LinuxCpu::default();
    cpu.set_shares(Some(cpu_shares(r.cpu_request)));
    if let Some((quota, period)) = cpu_quota(r.cpu_limit) {
        cpu.set_quota(i64::try_from(quota).ok());
        cpu.set_period(Some(period));
    }
    let mut resources = LinuxResources::default();
    resources.set_cpu(Some(cpu));
    if let Some(limit) = r.memory_limit.filter(|l| *l > 0) {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut memory = LinuxMemory::default();
        memory.set_limit(Some(limit));
        if pod.cgroup.as_ref().is_some_and(|c| c.swap_accounting()) {
            memory.set_swap(Some(limit));
        }
        resources.set_memory(Some(memory));
    }
    Some(resources)
}

/// Gives `container` the seccomp filter of `seccomp`, whose conditional rules its capabilities
/// decide; none for a privileged container (containerd applies none either).
fn set_seccomp(
    container: &mut oci::bundle::Container,
    seccomp: &spec::Seccomp,
) -> Result<(), String> {
    if container.security.privileged {
        return Ok(());
    }
    let capabilities = || -> Result<Vec<String>, String> {
        let set = oci::bundle::capabilities(container).map_err(|e| e.to_string())?;
        Ok(set.iter().map(ToString::to_string).collect())
    };
    let filter = match seccomp {
        spec::Seccomp::Unconfined => return Ok(()),
        spec::Seccomp::RuntimeDefault => oci::seccomp::runtime_default(&capabilities()?),
        spec::Seccomp::Localhost(file) => {
            let path = storage().join("seccomp").join(file);
            oci::seccomp::localhost(&path, &capabilities()?).map_err(|e| error_chain(&e))?
        }
    };
    container.security.seccomp = Some(filter);
    Ok(())
}

/// Bind-mounts what `fd` is open on at `staging` (made: a file for a file, else a directory).
fn stage(fd: &std::os::fd::OwnedFd, staging: &Path) -> Result<(), String> {
    use std::os::fd::AsFd;
    let failed =
        |e: std::io::Error| format!("failed to mount a subPath at {}: {e}", staging.display());
    let is_file = nix::sys::stat::fstat(fd.as_fd())
        .map(|st| st.st_mode & nix::libc::S_IFMT == nix::libc::S_IFREG)
        .map_err(|e| failed(e.into()))?;
    if let Some(parent) = staging.parent() {
        std::fs::create_dir_all(parent).map_err(failed)?;
    }
    if is_file {
        std::fs::File::create(staging).map_err(failed)?;
    } else {
        std::fs::create_dir(staging).map_err(failed)?;
    }
    netns::bind_mount_fd_at(fd.as_fd(), staging).map_err(failed)
}

/// Unmounts and removes container `name`'s subPath staging mounts (see [`stage`]).
pub(crate) fn unstage(pod_dir: &Path, name: &str) {
    let dir = pod_dir.join("subpaths").join(name);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let _ = nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH);
        // Never through a mount: only an empty directory or file is removed.
        let removed = if path.is_dir() {
            std::fs::remove_dir(&path)
        } else {
            std::fs::remove_file(&path)
        };
        if let Err(err) = removed {
            tracing::warn!(path = %path.display(), %err, "failed to remove a subPath staging point");
        }
    }
    let _ = std::fs::remove_dir(&dir);
}

/// Removes what a run of container `name` mounted and wrote on the host (its subPath staging
/// mounts, its root filesystem with the writable layer), once the runtime deleted it.
pub(crate) fn remove_run(pod_dir: &Path, name: &str, rootfs: oci::Rootfs) {
    unstage(pod_dir, name);
    let dir = rootfs.dir().to_path_buf();
    if let Err(err) = rootfs.remove() {
        tracing::warn!(dir = %dir.display(), err = %error_chain(&err), "failed to remove a container's root filesystem");
    }
}

/// The runtime state roots under a pod's directory, for `podkit gc`: `(handler, root)`.
pub(crate) fn runtime_roots(pod_dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(pod_dir.join("runtime")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
        .collect()
}

pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::{pod_hosts, resolv_conf};
    use crate::spec::Dns;

    /// kubelet's `/etc/hosts` names the pod on each of its addresses (both of a dual-stack
    /// pod, IPv4 first), and on 127.0.0.1 when it has only its loopback.
    #[test]
    fn the_hosts_file_names_the_pod_on_each_address() {
        let root = tempfile::tempdir().expect("tempdir");
        let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  containers:\n  - {name: c, image: busybox}\n";
        let mut plan = crate::spec::parse("pod.yaml", text)
            .expect("valid")
            .remove(0);
        let hosts = pod_hosts(&plan, root.path()).expect("hosts");
        assert!(hosts.ends_with("\n127.0.0.1\tweb\n"), "{hosts}");
        let (v4, v6) = (
            "10.0.0.5".parse().expect("ip"),
            "fd9d::5".parse().expect("ip"),
        );
        plan.pod_ips = vec![v4, v6];
        let hosts = pod_hosts(&plan, root.path()).expect("hosts");
        assert!(
            hosts.ends_with("\n10.0.0.5\tweb\nfd9d::5\tweb\n"),
            "{hosts}"
        );
    }

    /// kubelet's merge: the host's servers, search list and options, then dnsConfig's appended
    /// where new, its options replacing the host's of the same name.
    #[test]
    fn dns_config_merges_into_the_hosts_resolv_conf() {
        let host = "# a comment\nnameserver 10.0.0.2\nnameserver 10.0.0.3\nsearch a.example b.example\noptions ndots:1 edns0\n";
        assert_eq!(
            resolv_conf(&Dns::default(), host),
            "nameserver 10.0.0.2\nnameserver 10.0.0.3\nsearch a.example b.example\noptions ndots:1 edns0\n"
        );
        let dns = Dns {
            policy_none: false,
            nameservers: vec!["10.0.0.3".into(), "10.0.0.9".into()],
            searches: vec!["c.example".into(), "a.example".into()],
            options: vec![("ndots".into(), Some("5".into())), ("rotate".into(), None)],
        };
        assert_eq!(
            resolv_conf(&dns, host),
            "nameserver 10.0.0.2\nnameserver 10.0.0.3\nnameserver 10.0.0.9\nsearch a.example b.example c.example\noptions ndots:5 edns0 rotate\n"
        );
        let none = Dns {
            policy_none: true,
            ..dns
        };
        assert_eq!(
            resolv_conf(&none, host),
            "nameserver 10.0.0.3\nnameserver 10.0.0.9\nsearch c.example a.example\noptions ndots:5 rotate\n"
        );
    }
}
