//! The pod's volumes on the host, and the mount points members need.
//!
//! An `emptyDir` is a directory under the pod's state dir (`volumes/NAME`), on a tmpfs of its own
//! for `medium: Memory`. A `hostPath` is checked against its `type`. Members see volumes through
//! bind mounts in their own mount namespace, so the host's mount table only ever gains the
//! tmpfs mounts, which teardown removes.
//!
//! A `mountPath` must exist to be mounted on. When it does not exist on the host, podkit creates
//! it (an empty directory, or an empty file for a file volume) before the member starts, records
//! it, and removes it at teardown if it is still empty: nothing is left behind.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::SFlag;
use tracing::warn;

use crate::objects::{self, Store};
use crate::spec::{
    DownwardValue, HostPathType, Member, ObjectKind, Projection, Volume, VolumeSource,
};

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("volume {volume:?}: {path:?} {reason}")]
    Check {
        volume: String,
        path: PathBuf,
        reason: &'static str,
    },

    #[error("volume {volume:?}: failed to prepare {path:?}")]
    Io {
        volume: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "volume {volume:?}: subPath {sub_path:?} {reason}: podkit resolves a subPath only beneath \
         its volume (a member can write the volume, so a link there could point anywhere on the host)"
    )]
    SubPath {
        volume: String,
        sub_path: PathBuf,
        reason: String,
    },

    #[error("volume {volume:?}: failed to mount a tmpfs on {path:?}")]
    Tmpfs {
        volume: String,
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("volume {volume:?}: failed to mount a hugetlbfs ({options}) on {path:?}")]
    Hugetlbfs {
        volume: String,
        path: PathBuf,
        options: String,
        #[source]
        source: nix::Error,
    },

    /// A configMap, secret or projected volume whose object (or key) is missing: kubelet's
    /// FailedMount message. The pod waits for it.
    #[error("MountVolume.SetUp failed for volume {volume:?} : {message}")]
    Objects { volume: String, message: String },
}

/// One file of a volume kubelet's atomic writer lays out: relative path, mode, content.
type File = (PathBuf, u32, Vec<u8>);

/// A configMap, secret or projected volume: what it is made of, and what was written last.
#[derive(Debug)]
struct ObjectVolume {
    name: String,
    path: PathBuf,
    sources: Vec<Projection>,
    /// `None` until its objects were all there once.
    written: Option<Vec<File>>,
}

/// Where a pod's volumes read ConfigMaps and Secrets: podkit's store, the pod's namespace.
#[derive(Debug, Clone)]
pub struct ObjectSource {
    pub store: Store,
    pub namespace: String,
}

/// The volumes of a running pod and what was made for them.
#[derive(Debug, Default)]
pub struct Volumes {
    /// Volume name -> its directory (or file) on the host.
    roots: HashMap<String, PathBuf>,
    /// Volumes every mount of which is read-only (downwardAPI, as kubelet mounts it).
    read_only: Vec<String>,
    /// tmpfs mounts made for `medium: Memory` (and hugetlbfs ones for `medium: HugePages`),
    /// unmounted at teardown.
    tmpfs: Vec<PathBuf>,
    /// Mount points created on the host because they were missing, removed at teardown.
    created: Vec<PathBuf>,
    /// Where `created` is also written down (one path a line, before each is made), so that
    /// `podkit gc` can remove them after a supervisor died.
    journal: PathBuf,
    /// configMap, secret and projected volumes, rewritten when their objects change.
    objects: Vec<ObjectVolume>,
    /// persistentVolumeClaim volumes: (volume, claim, bound), bound once the claim is there.
    claims: Vec<(String, String, bool)>,
    source: Option<ObjectSource>,
    fs_group: Option<u32>,
}

impl Volumes {
    /// Makes or checks every volume; `dir` is the pod's `volumes/` directory. `render` gives
    /// what a downwardAPI file holds.
    /// configMap, secret and projected volumes whose objects are missing are made empty and
    /// wait for them: [`Volumes::sync_objects`].
    pub fn prepare(
        volumes: &[Volume],
        dir: &Path,
        fs_group: Option<u32>,
        source: ObjectSource,
        render: &dyn Fn(&DownwardValue) -> String,
    ) -> Result<Volumes, VolumeError> {
        let mut made = Volumes {
            journal: dir.with_file_name(MOUNT_POINTS),
            source: Some(source),
            fs_group,
            ..Volumes::default()
        };
        for volume in volumes {
            match made.prepare_one(volume, dir, fs_group, render) {
                Ok(Some(root)) => {
                    made.roots.insert(volume.name.clone(), root);
                }
                Ok(None) => {}
                Err(err) => {
                    made.cleanup();
                    return Err(err);
                }
            }
        }
        // configMap, secret, projected and claim volumes, all at once: written (or bound) now
        // when their objects are there; else they wait, and so do the containers
        // (sync_objects before each start).
        let _ = made.sync_objects(render);
        Ok(made)
    }

    fn prepare_one(
        &mut self,
        volume: &Volume,
        dir: &Path,
        fs_group: Option<u32>,
        render: &dyn Fn(&DownwardValue) -> String,
    ) -> Result<Option<PathBuf>, VolumeError> {
        let io = |path: &Path| {
            let (volume, path) = (volume.name.clone(), path.to_path_buf());
            move |source| VolumeError::Io {
                volume,
                path,
                source,
            }
        };
        match &volume.source {
            VolumeSource::EmptyDir { memory, size_limit } => {
                let path = dir.join(&volume.name);
                fs::create_dir_all(&path).map_err(io(&path))?;
                // Kubernetes makes emptyDirs world-writable, so members of any uid can use them.
                fs::set_permissions(&path, fs::Permissions::from_mode(0o777)).map_err(io(&path))?;
                if *memory {
                    // Always an explicit size (validation refused 0, which the kernel reads
                    // as no limit): the sizeLimit, else half the host's memory, which is what a
                    // tmpfs gets without one, written out so every mount shows its bound.
                    let bytes = size_limit.unwrap_or_else(default_memory_limit).max(1);
                    self.mount_tmpfs(&volume.name, &path, bytes, 0o777)?;
                }
                // fsGroup, as kubelet's SetVolumeOwnership leaves a new emptyDir: owned by the
                // group, setgid (what is made inside inherits the group), group-writable.
                if let Some(gid) = fs_group {
                    nix::unistd::chown(&path, None, Some(nix::unistd::Gid::from_raw(gid)))
                        .map_err(|e| io(&path)(e.into()))?;
                    fs::set_permissions(&path, fs::Permissions::from_mode(0o2777))
                        .map_err(io(&path))?;
                }
                Ok(Some(path))
            }
            VolumeSource::HugePages { page_size } => {
                let path = dir.join(&volume.name);
                fs::create_dir_all(&path).map_err(io(&path))?;
                // kubelet's mount: hugetlbfs with the page size alone (`pagesize=2Mi`), no
                // size: the pod's hugetlb cgroup bounds what its pages take.
                let options = format!(
                    "pagesize={}",
                    crate::spec::resources::binary_quantity(*page_size)
                );
                nix::mount::mount(
                    Some("nodev"),
                    &path,
                    Some("hugetlbfs"),
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                    Some(options.as_str()),
                )
                .map_err(|source| VolumeError::Hugetlbfs {
                    volume: volume.name.clone(),
                    path: path.clone(),
                    options,
                    source,
                })?;
                self.tmpfs.push(path.clone());
                // Its root is root's, 0755, as kubelet leaves it; fsGroup as for any emptyDir.
                if let Some(gid) = fs_group {
                    nix::unistd::chown(&path, None, Some(nix::unistd::Gid::from_raw(gid)))
                        .map_err(|e| io(&path)(e.into()))?;
                    fs::set_permissions(&path, fs::Permissions::from_mode(0o2775))
                        .map_err(io(&path))?;
                }
                Ok(Some(path))
            }
            VolumeSource::HostPath { path, kind } => {
                check_host_path(&volume.name, path, *kind)?;
                Ok(Some(path.clone()))
            }
            VolumeSource::Claim { name, read_only } => {
                if *read_only {
                    self.read_only.push(volume.name.clone());
                }
                // Bound to its claim's directory by sync_objects (below, in prepare).
                self.claims.push((volume.name.clone(), name.clone(), false));
                Ok(None)
            }
            VolumeSource::DownwardApi { files } => {
                let path = dir.join(&volume.name);
                let files: Vec<File> = files
                    .iter()
                    .map(|f| (f.path.clone(), f.mode, render(&f.value).into_bytes()))
                    .collect();
                atomic_write(&path, &files, fs_group).map_err(io(&path))?;
                self.read_only.push(volume.name.clone());
                Ok(Some(path))
            }
            VolumeSource::Projected { sources, memory } => {
                let path = dir.join(&volume.name);
                fs::create_dir_all(&path).map_err(io(&path))?;
                if *memory {
                    // kubelet keeps secrets (and projected volumes, which may hold them) off
                    // the disk: a tmpfs of the volume's own.
                    self.mount_tmpfs(&volume.name, &path, default_memory_limit(), 0o755)?;
                }
                self.read_only.push(volume.name.clone());
                self.objects.push(ObjectVolume {
                    name: volume.name.clone(),
                    path: path.clone(),
                    sources: sources.clone(),
                    written: None,
                });
                // Written by sync_objects (below, in prepare).
                Ok(Some(path))
            }
        }
    }

    fn mount_tmpfs(
        &mut self,
        volume: &str,
        path: &Path,
        bytes: u64,
        mode: u32,
    ) -> Result<(), VolumeError> {
        let options = format!("mode={mode:04o},size={bytes}");
        let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        nix::mount::mount(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            flags,
            Some(options.as_str()),
        )
        .map_err(|source| VolumeError::Tmpfs {
            volume: volume.to_owned(),
            path: path.to_path_buf(),
            source,
        })?;
        self.tmpfs.push(path.to_path_buf());
        Ok(())
    }

    /// Whether the pod has configMap, secret, projected or persistentVolumeClaim volumes.
    pub fn has_objects(&self) -> bool {
        !self.objects.is_empty() || !self.claims.is_empty()
    }

    /// Writes each configMap, secret and projected volume whose objects changed since it was
    /// last written (or were missing), as kubelet's atomic writer updates one: the new files in
    /// a new timestamped directory, then the `..data` link swapped to it by a rename, so a
    /// reader sees the old files or the new, never a mix. A volume written once keeps its files
    /// when its object goes (as kubelet keeps them). A persistentVolumeClaim volume is bound to
    /// its claim's directory once the claim is there. The first volume that cannot be made
    /// yet (an object or key missing) is the error; the others are made all the same.
    pub fn sync_objects(
        &mut self,
        render: &dyn Fn(&DownwardValue) -> String,
    ) -> Result<(), VolumeError> {
        let Some(source) = self.source.clone() else {
            return Ok(());
        };
        let mut first = None;
        for volume in &mut self.objects {
            match payload(&volume.sources, &source, render) {
                Ok(files) if volume.written.as_ref() == Some(&files) => {}
                Ok(files) => match atomic_write(&volume.path, &files, self.fs_group) {
                    Ok(()) => volume.written = Some(files),
                    Err(source) => {
                        let err = VolumeError::Io {
                            volume: volume.name.clone(),
                            path: volume.path.clone(),
                            source,
                        };
                        warn!(%err, "failed to write a volume");
                        if volume.written.is_none() {
                            first.get_or_insert(err);
                        }
                    }
                },
                Err(message) if volume.written.is_none() => {
                    first.get_or_insert(VolumeError::Objects {
                        volume: volume.name.clone(),
                        message,
                    });
                }
                Err(message) => {
                    warn!(volume = %volume.name, %message, "kept the volume's files: its objects cannot be read now");
                }
            }
        }
        for (volume, claim, bound) in &mut self.claims {
            if *bound {
                continue;
            }
            let kind = ObjectKind::PersistentVolumeClaim;
            match source.store.get(kind, &source.namespace, claim) {
                Ok(Some(_)) => {
                    let dir = source.store.claim_dir(&source.namespace, claim);
                    if dir.is_dir() {
                        self.roots.insert(volume.clone(), dir);
                        *bound = true;
                        continue;
                    }
                    first.get_or_insert(VolumeError::Objects {
                        volume: volume.clone(),
                        message: format!("the volume of persistentvolumeclaim {claim:?} is missing: {dir:?} (apply the claim again)"),
                    });
                }
                Ok(None) => {
                    first.get_or_insert(VolumeError::Objects {
                        volume: volume.clone(),
                        message: format!("persistentvolumeclaim {claim:?} not found"),
                    });
                }
                Err(err) => {
                    first.get_or_insert(VolumeError::Objects {
                        volume: volume.clone(),
                        message: format!("{err:#}"),
                    });
                }
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// The bind mounts `member` needs, as (source on the host, mount path, read-only), after
    /// making the sources (`subPath`s, like kubelet) and the mount points that are missing.
    pub fn mounts_for(&mut self, member: &Member) -> Result<Vec<BindMount>, VolumeError> {
        let mut mounts = Vec::new();
        for mount in &member.mounts {
            let Some(root) = self.roots.get(&mount.volume) else {
                // Validation checked every mount names a volume.
                continue;
            };
            let io = |path: &Path| {
                let (volume, path) = (mount.volume.clone(), path.to_path_buf());
                move |source| VolumeError::Io {
                    volume,
                    path,
                    source,
                }
            };
            let (source, is_dir) = match &mount.sub_path {
                Some(sub) => {
                    let fd = open_sub_path(root, sub).map_err(|reason| VolumeError::SubPath {
                        volume: mount.volume.clone(),
                        sub_path: sub.clone(),
                        reason,
                    })?;
                    let is_dir = nix::sys::stat::fstat(&fd).is_ok_and(|st| {
                        SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
                    });
                    (Source::Fd(fd), is_dir)
                }
                None => (Source::Path(root.clone()), root.is_dir()),
            };
            if !mount.mount_path.exists() {
                self.create_mount_point(&mount.mount_path, is_dir)
                    .map_err(io(&mount.mount_path))?;
            }
            mounts.push(BindMount {
                source,
                target: mount.mount_path.clone(),
                read_only: mount.read_only || self.read_only.contains(&mount.volume),
            });
        }
        Ok(mounts)
    }

    fn create_mount_point(&mut self, path: &Path, dir: bool) -> io::Result<()> {
        // Everything missing, outermost first (the last is `path` itself); each is written down
        // before it is made, so teardown (or gc after a crash) removes them all.
        let mut missing: Vec<PathBuf> = path
            .ancestors()
            .take_while(|p| !p.exists())
            .map(Path::to_path_buf)
            .collect();
        missing.reverse();
        let mut journal = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.journal)?;
        for (i, d) in missing.iter().enumerate() {
            use std::io::Write;
            writeln!(journal, "{}", d.display())?;
            if !dir && i == missing.len() - 1 {
                fs::File::create(d)?;
            } else {
                fs::create_dir(d)?;
            }
            self.created.push(d.clone());
        }
        Ok(())
    }

    /// Unmounts the tmpfs volumes and removes the mount points made on the host. Best effort:
    /// each failure is logged and the rest goes on.
    pub fn cleanup(&mut self) {
        for path in self.tmpfs.drain(..) {
            if let Err(err) = nix::mount::umount2(&path, MntFlags::MNT_DETACH) {
                warn!(path = %path.display(), %err, "failed to unmount a tmpfs volume");
            }
        }
        for path in remove_mount_points(self.created.drain(..).collect()) {
            warn!(path = %path.display(), "left a mount point podkit created: it is not empty");
        }
        let _ = fs::remove_file(&self.journal);
    }
}

/// One bind mount a member needs.
#[derive(Debug)]
pub struct BindMount {
    pub source: Source,
    pub target: PathBuf,
    pub read_only: bool,
}

/// What a bind mount mounts.
#[derive(Debug)]
pub enum Source {
    /// A volume's root, which podkit made or the manifest named (a hostPath).
    Path(PathBuf),
    /// A `subPath`, resolved beneath its volume and held open: the member mounts what was
    /// resolved, not a path a member could have changed since.
    Fd(std::os::fd::OwnedFd),
}

/// Opens `sub` beneath the volume directory `root` (`O_PATH`), making the directories that are
/// missing, as kubelet's subpath code does (`doSafeMakeDir`, `doSafeOpen`): every step is
/// resolved by openat2(2) with `RESOLVE_BENEATH`, so a symbolic link may point elsewhere inside
/// the volume, but nothing that resolves outside it (an absolute link, `..` past the root, a
/// `/proc` magic link) is ever followed or created through. The error is the reason, for
/// [`VolumeError::SubPath`].
fn open_sub_path(root: &Path, sub: &Path) -> Result<std::os::fd::OwnedFd, String> {
    use nix::errno::Errno;
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
    use nix::sys::stat::Mode;

    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let base = nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("cannot be resolved: failed to open the volume {root:?}: {e}"))?;
    let why = |at: &Path, err: Errno| match err {
        Errno::EXDEV | Errno::ELOOP => format!(
            "leads outside the volume at {at:?} (a symbolic link to an absolute path, or past \
             the volume's root)"
        ),
        Errno::ENOTDIR => format!("cannot be made: {at:?} is not a directory"),
        other => format!("cannot be resolved at {at:?}: {other}"),
    };
    let open = |path: &Path| nix::fcntl::openat2(&base, path, how);
    match open(sub) {
        Ok(fd) => return Ok(fd),
        Err(Errno::ENOENT) => {}
        Err(err) => return Err(why(sub, err)),
    }
    // Make what is missing, one directory at a time, each inside its parent as resolved.
    let mut prefix = PathBuf::new();
    for part in sub.components() {
        let parent = if prefix.as_os_str().is_empty() {
            base.try_clone()
                .map_err(|e| format!("cannot be resolved: {e}"))?
        } else {
            open(&prefix).map_err(|e| why(&prefix, e))?
        };
        prefix.push(part);
        match open(&prefix) {
            Ok(_) => continue,
            Err(Errno::ENOENT) => {}
            Err(err) => return Err(why(&prefix, err)),
        }
        // mkdirat(2) does not follow a link in its last component: a link made meanwhile is
        // EEXIST, and the open after it refuses where it leads.
        match nix::sys::stat::mkdirat(&parent, part.as_os_str(), Mode::from_bits_truncate(0o755)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(err) => return Err(why(&prefix, err)),
        }
    }
    open(sub).map_err(|e| why(sub, e))
}

/// The size of a `medium: Memory` emptyDir without a sizeLimit: half of the host's memory (the
/// kernel's default for a tmpfs). kubelet uses the pod's memory limit where every container has
/// one; podkit does not apply memory limits yet.
/// The files of a configMap, secret or projected volume, as kubelet's volume plugins make its
/// payload: every key of an object at its own name, or its `items`; a missing object or key is
/// kubelet's error unless `optional`.
fn payload(
    sources: &[Projection],
    source: &ObjectSource,
    render: &dyn Fn(&DownwardValue) -> String,
) -> Result<Vec<File>, String> {
    let mut files: Vec<File> = Vec::new();
    for projection in sources {
        match projection {
            Projection::Data {
                kind,
                name,
                items,
                default_mode,
                optional,
            } => {
                let value = match source.store.get(*kind, &source.namespace, name) {
                    Ok(Some(value)) => value,
                    Ok(None) if *optional => continue,
                    Ok(None) => return Err(format!("{} {name:?} not found", kind.lower())),
                    Err(err) => return Err(format!("{err:#}")),
                };
                let data = objects::data(*kind, &value);
                match items {
                    None => files.extend(
                        data.entries
                            .into_iter()
                            .map(|(k, v)| (PathBuf::from(k), *default_mode, v)),
                    ),
                    Some(items) => {
                        for item in items {
                            match data.entries.get(&item.key) {
                                Some(bytes) => files.push((
                                    item.path.clone(),
                                    item.mode.unwrap_or(*default_mode),
                                    bytes.clone(),
                                )),
                                None if *optional => {}
                                None => {
                                    let what = match kind {
                                        ObjectKind::ConfigMap => {
                                            "configmap references non-existent config key"
                                        }
                                        _ => "secret references non-existent secret key",
                                    };
                                    return Err(format!("{what}: {}", item.key));
                                }
                            }
                        }
                    }
                }
            }
            Projection::Downward(items) => files.extend(
                items
                    .iter()
                    .map(|f| (f.path.clone(), f.mode, render(&f.value).into_bytes())),
            ),
        }
    }
    Ok(files)
}

/// Writes `files` (path, mode, content) into the directory `root` as kubelet's atomic writer
/// lays out a downwardAPI, configMap, secret or projected volume, which apps that watch such
/// files expect: the files in a new timestamped directory `..2026_12_02_10_00_00.123456789`, a
/// symlink `..data` to it (made under another name and renamed over the old one: the switch is
/// atomic), a symlink for each top-level name into `..data`; then the names no longer there
/// and the previous directory are removed. With `fsGroup` the files and directories are the
/// group's and group-readable (kubelet's SetVolumeOwnership for a read-only volume).
fn atomic_write(root: &Path, files: &[File], fs_group: Option<u32>) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let owned = |path: &Path, mode: u32, extra: u32| -> io::Result<()> {
        if let Some(gid) = fs_group {
            nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(gid)))?;
            fs::set_permissions(path, fs::Permissions::from_mode(mode | extra))?;
        } else {
            fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
        }
        Ok(())
    };
    match fs::DirBuilder::new().mode(0o755).create(root) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let link = root.join("..data");
    let old = fs::read_link(&link).ok();
    let stamp = jiff::Timestamp::now()
        .strftime("..%Y_%m_%d_%H_%M_%S.%f")
        .to_string();
    let data = root.join(&stamp);
    fs::DirBuilder::new().mode(0o755).create(&data)?;
    owned(&data, 0o755, 0o2050)?;
    let mut top: Vec<&std::ffi::OsStr> = Vec::new();
    for (path, mode, content) in files {
        let file = data.join(path);
        if let Some(parent) = file.parent().filter(|p| !p.exists()) {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)?;
        }
        fs::write(&file, content)?;
        owned(&file, *mode, 0o440)?;
        if let Some(first) = path.components().next().map(|c| c.as_os_str())
            && !top.contains(&first)
        {
            top.push(first);
        }
    }
    let tmp = root.join("..data_tmp");
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&stamp, &tmp)?;
    fs::rename(&tmp, &link)?;
    for name in &top {
        let user = root.join(name);
        if fs::symlink_metadata(&user).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(name), &user)?;
        }
    }
    // The user-visible names of the payload before, gone from this one.
    for entry in fs::read_dir(root)?.flatten() {
        let name = entry.file_name();
        let hidden = name.as_encoded_bytes().starts_with(b"..");
        if !hidden && !top.contains(&name.as_os_str()) && entry.path().is_symlink() {
            fs::remove_file(entry.path())?;
        }
    }
    if let Some(old) = old.filter(|o| o.as_os_str() != stamp.as_str()) {
        fs::remove_dir_all(root.join(old))?;
    }
    Ok(())
}

fn default_memory_limit() -> u64 {
    let total_kib = fs::read_to_string("/proc/meminfo").ok().and_then(|text| {
        text.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    });
    // 1 GiB when /proc/meminfo cannot be read: a bound all the same.
    total_kib.map_or(1 << 30, |kib| kib * 1024 / 2)
}

/// The file in a pod's directory listing the mount points podkit created on the host.
pub const MOUNT_POINTS: &str = "mountpoints";

/// Removes mount points podkit created (given outermost first): innermost first, each only if
/// still empty (a user may have put something there). Returns those left.
pub fn remove_mount_points(created: Vec<PathBuf>) -> Vec<PathBuf> {
    let mut left = Vec::new();
    for path in created.into_iter().rev() {
        let removed = if path.is_dir() {
            fs::remove_dir(&path)
        } else {
            remove_empty_file(&path)
        };
        match removed {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(_) => left.push(path),
        }
    }
    left
}

fn remove_empty_file(path: &Path) -> io::Result<()> {
    if fs::metadata(path)?.len() == 0 {
        fs::remove_file(path)
    } else {
        Err(io::Error::other("not empty"))
    }
}

/// Checks (or creates) a hostPath as its `type` says, as kubelet does.
fn check_host_path(volume: &str, path: &Path, kind: HostPathType) -> Result<(), VolumeError> {
    let check = |reason| VolumeError::Check {
        volume: volume.to_owned(),
        path: path.to_path_buf(),
        reason,
    };
    let io = |source| VolumeError::Io {
        volume: volume.to_owned(),
        path: path.to_path_buf(),
        source,
    };
    let meta = fs::metadata(path);
    match kind {
        HostPathType::Unset => Ok(()),
        HostPathType::DirectoryOrCreate => match meta {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(check("exists and is not a directory")),
            Err(_) => {
                fs::create_dir_all(path).map_err(io)?;
                fs::set_permissions(path, fs::Permissions::from_mode(0o755)).map_err(io)
            }
        },
        HostPathType::FileOrCreate => match meta {
            Ok(m) if m.is_file() => Ok(()),
            Ok(_) => Err(check("exists and is not a regular file")),
            Err(_) => fs::File::create(path).map(drop).map_err(io),
        },
        HostPathType::Directory => match meta {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(check("is not a directory (type: Directory)")),
            Err(_) => Err(check("does not exist (type: Directory)")),
        },
        HostPathType::File => match meta {
            Ok(m) if m.is_file() => Ok(()),
            Ok(_) => Err(check("is not a regular file (type: File)")),
            Err(_) => Err(check("does not exist (type: File)")),
        },
        HostPathType::Socket => match meta {
            Ok(m) if m.file_type().is_socket() => Ok(()),
            _ => Err(check("is not a unix socket (type: Socket)")),
        },
        HostPathType::CharDevice => match meta {
            Ok(m) if m.file_type().is_char_device() => Ok(()),
            _ => Err(check("is not a character device (type: CharDevice)")),
        },
        HostPathType::BlockDevice => match meta {
            Ok(m) if m.file_type().is_block_device() => Ok(()),
            _ => Err(check("is not a block device (type: BlockDevice)")),
        },
    }
}
