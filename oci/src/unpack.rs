//! Applying one layer (a tar, plain or gzip or zstd) to a fresh directory in the form overlayfs
//! reads as a lower layer: `.wh.NAME` becomes a 0/0 character device `NAME`, `.wh..wh..opq`
//! becomes the xattr `trusted.overlay.opaque=y` on its directory (as containerd's
//! `OverlayConvertWhiteout`). Owners (when run as root, as `tar` does), modes with their
//! setuid/setgid/sticky bits, mtimes, xattrs, symlinks, hard links, device nodes and FIFOs are
//! kept.
//!
//! Nothing is ever written outside the directory or through a symlink: every parent directory is
//! opened with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` and the entry made relative to it
//! (`mkdirat`, `mknodat`, `symlinkat`, `linkat`, ...); names with `..` or a leading `/` are
//! refused, as is an entry under a symlink and a hard link to anything but an entry of this
//! layer. The diff_id (sha256 of the uncompressed tar, trailing blocks included) is computed on
//! the way and returned for the caller to check before it publishes the directory.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{
    FchmodatFlags, Mode, SFlag, UtimensatFlags, fchmod, fchmodat, fstatat, futimens, makedev,
    mkdirat, mknodat, utimensat,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchown, fchownat, linkat, symlinkat, unlinkat};

use crate::digest::{Digest, HashingReader};

const WHITEOUT_PREFIX: &str = ".wh.";
const WHITEOUT_META_PREFIX: &str = ".wh..wh.";
const WHITEOUT_OPAQUE: &str = ".wh..wh..opq";
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const PAX_XATTR: &str = "SCHILY.xattr.";

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip (`+gzip`, Docker's `.tar.gzip`).
    Gzip,
    /// zstd (`+zstd`).
    Zstd,
}

impl Compression {
    /// Reads the compression off the first bytes of a blob (gzip `1f 8b`, zstd `28 b5 2f fd`);
    /// anything else is taken for a plain tar.
    pub fn sniff(magic: &[u8]) -> Compression {
        if magic.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// What a layer media type says, or `None` for a media type that is not a container image
    /// layer (a Helm chart, an encrypted layer, a Wasm module, ...).
    pub fn from_media_type(media_type: &str) -> Option<Compression> {
        match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Some(Compression::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
                Some(Compression::Gzip)
            }
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => {
                Some(Compression::Zstd)
            }
            _ => None,
        }
    }
}

/// Why a layer could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The media type is not that of an image layer.
    #[error("unsupported layer media type {media_type:?}")]
    MediaType {
        /// The media type.
        media_type: String,
    },
    /// The blob could not be read or decompressed, or is not a tar.
    #[error("failed to read the layer")]
    Read(#[source] io::Error),
    /// An entry would escape the directory or write through a link.
    #[error("refused layer entry {path:?}: {problem}")]
    Unsafe {
        /// The entry's name in the tar.
        path: PathBuf,
        /// Why.
        problem: UnsafeEntry,
    },
    /// A tar entry type that has no meaning in a root filesystem.
    #[error("layer entry {path:?} has unsupported tar type {kind:?}")]
    EntryType {
        /// The entry's name.
        path: PathBuf,
        /// The tar type flag.
        kind: u8,
    },
    /// A file system operation failed.
    #[error("failed to {op} {path:?} in the layer")]
    Apply {
        /// What was being done (`create`, `chown`, ...).
        op: &'static str,
        /// The entry's name.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
}

/// Why an entry was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnsafeEntry {
    /// A `..` component.
    ParentDir,
    /// An absolute name.
    Absolute,
    /// A parent directory is a symlink (or, for a hard link, the target is reached through one).
    ThroughSymlink,
    /// A hard link whose target is not an entry of this layer.
    LinkTarget,
}

impl std::fmt::Display for UnsafeEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UnsafeEntry::ParentDir => "a '..' component would leave the layer",
            UnsafeEntry::Absolute => "an absolute name would leave the layer",
            UnsafeEntry::ThroughSymlink => "a parent directory is a symbolic link",
            UnsafeEntry::LinkTarget => {
                "a hard link must point to an earlier entry of the same layer"
            }
        })
    }
}

/// What applying a layer found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    /// sha256 of the uncompressed tar: the layer's diff_id in the image config.
    pub diff_id: Digest,
    /// Size of the uncompressed tar in bytes.
    pub size: u64,
}

/// Applies the layer read from `blob` to `dest`, an existing empty directory. `media_type`, when
/// given, must be a layer type; the compression itself is read off the blob's first bytes (a
/// `docker save` archive calls gzip layers plain tars).
pub fn unpack(
    blob: impl Read,
    media_type: Option<&str>,
    dest: &Path,
) -> Result<Unpacked, UnpackError> {
    if let Some(media_type) = media_type
        && Compression::from_media_type(media_type).is_none()
    {
        return Err(UnpackError::MediaType {
            media_type: media_type.to_owned(),
        });
    }
    let mut blob = BufReader::with_capacity(256 * 1024, blob);
    let compression = Compression::sniff(blob.fill_buf().map_err(UnpackError::Read)?);
    let tar: Box<dyn Read> = match compression {
        Compression::None => Box::new(blob),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(blob)),
        Compression::Zstd => Box::new(zstd::Decoder::with_buffer(blob).map_err(UnpackError::Read)?),
    };
    let root = File::open(dest).map_err(|source| UnpackError::Apply {
        op: "open",
        path: dest.to_owned(),
        source,
    })?;
    let mut tree = Tree::new(root.into());
    let mut archive = tar::Archive::new(HashingReader::new(tar));
    for entry in archive.entries().map_err(UnpackError::Read)? {
        let entry = entry.map_err(UnpackError::Read)?;
        tree.apply(entry)?;
    }
    tree.finish()?;
    let (diff_id, size) = archive.into_inner().finish().map_err(UnpackError::Read)?;
    Ok(Unpacked { diff_id, size })
}

/// Metadata of a directory, applied once every entry is in (an entry made inside a directory
/// changes its mtime).
#[derive(Debug, Clone, Copy)]
struct DirMeta {
    mode: u32,
    mtime: i64,
}

/// Owner, mode and times of one entry.
#[derive(Debug)]
struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: i64,
    xattrs: Vec<(String, Vec<u8>)>,
}

/// The directory being filled, and what this layer has made in it so far.
#[derive(Debug)]
struct Tree {
    root: OwnedFd,
    /// Whether to chown: only root may, and `tar` too keeps owners only as root.
    same_owner: bool,
    /// Whiteouts this layer made (as opposed to character devices it carries), so that a later
    /// entry of the same name replaces them and a hard link to one is refused.
    whiteouts: HashSet<PathBuf>,
    /// Directories explicitly in the layer, with the metadata to set at the end.
    dirs: HashMap<PathBuf, DirMeta>,
    /// The last parent directory opened: a tar lists a directory's entries together.
    parent: Option<(PathBuf, OwnedFd)>,
}

impl Tree {
    fn new(root: OwnedFd) -> Tree {
        Tree {
            root,
            same_owner: nix::unistd::geteuid().is_root(),
            whiteouts: HashSet::new(),
            dirs: HashMap::new(),
            parent: None,
        }
    }

    fn apply<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let raw = entry.path().map_err(UnpackError::Read)?.into_owned();
        let Some(path) = clean(&raw)? else {
            return Ok(()); // the root directory itself: the layer directory is made by the store
        };
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader
        ) {
            return Ok(());
        }
        let name = path.file_name().map(OsStr::to_owned).unwrap_or_default();
        let parent_path = path.parent().unwrap_or(Path::new("")).to_owned();
        let name_bytes = name.as_bytes();

        if name_bytes == WHITEOUT_OPAQUE.as_bytes() {
            let parent = self.open_parent(&raw, &parent_path)?;
            return set_xattr_fd(&parent, OPAQUE_XATTR, b"y")
                .map_err(|source| apply_err("mark opaque", &raw, source));
        }
        if name_bytes.starts_with(WHITEOUT_META_PREFIX.as_bytes()) {
            return Ok(()); // aufs bookkeeping (`.wh..wh.plnk`, ...), meaningless to overlayfs
        }
        let meta = self.meta(&mut entry)?;
        if let Some(hidden) = name_bytes.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            let hidden = OsStr::from_bytes(hidden);
            let target = parent_path.join(hidden);
            let parent = self.open_parent(&raw, &parent_path)?;
            let parent = &parent;
            match stat_at(parent, hidden) {
                // An entry of this layer hides the lower ones already; a directory must also
                // stop showing their contents.
                Some(st) if is_dir(st.st_mode) && !self.whiteouts.contains(&target) => {
                    let dir =
                        open_dir_at(parent, hidden).map_err(|e| apply_err("open", &raw, e))?;
                    set_xattr_fd(&dir, OPAQUE_XATTR, b"y")
                        .map_err(|e| apply_err("mark opaque", &raw, e))?;
                }
                Some(_) => {}
                None => {
                    mknodat(parent, hidden, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))
                        .map_err(|e| apply_err("create whiteout", &raw, e.into()))?;
                    // An explicit mode: mknod's is cut by the umask.
                    fchmodat(parent, hidden, Mode::empty(), FchmodatFlags::FollowSymlink)
                        .map_err(|e| apply_err("chmod whiteout", &raw, e.into()))?;
                    self.chown_at(parent, hidden, &meta, &raw)?;
                    self.whiteouts.insert(target);
                }
            }
            return Ok(());
        }

        let was_whiteout = self.whiteouts.remove(&path);
        let is_dir_entry = kind == tar::EntryType::Directory;
        // Hard links are resolved before anything is removed: a link to itself is refused.
        let link_target = if kind == tar::EntryType::Link {
            let target = entry
                .link_name()
                .map_err(UnpackError::Read)?
                .unwrap_or_default()
                .into_owned();
            let Some(target) = clean(&target)? else {
                return Err(UnpackError::Unsafe {
                    path: raw,
                    problem: UnsafeEntry::LinkTarget,
                });
            };
            if self.whiteouts.contains(&target) || target == path {
                return Err(UnpackError::Unsafe {
                    path: raw,
                    problem: UnsafeEntry::LinkTarget,
                });
            }
            Some(target)
        } else {
            None
        };
        self.make_room(&raw, &parent_path, &name, is_dir_entry)?;
        let parent = &self.open_parent(&raw, &parent_path)?;
        let parent_fd = parent.as_raw_fd();
        match kind {
            tar::EntryType::Directory => {
                match mkdirat(parent, name.as_os_str(), Mode::from_bits_truncate(0o700)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(apply_err("create", &raw, e.into())),
                }
                let dir = open_dir_at(parent, &name).map_err(|e| apply_err("open", &raw, e))?;
                self.chown_fd(&dir, &meta, &raw)?;
                set_xattrs_fd(&dir, &meta, &raw)?;
                if was_whiteout {
                    set_xattr_fd(&dir, OPAQUE_XATTR, b"y")
                        .map_err(|e| apply_err("mark opaque", &raw, e))?;
                }
                self.dirs.insert(
                    path,
                    DirMeta {
                        mode: meta.mode,
                        mtime: meta.mtime,
                    },
                );
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let flags = OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC;
                let fd = nix::fcntl::openat(
                    parent,
                    name.as_os_str(),
                    flags,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(|e| apply_err("create", &raw, e.into()))?;
                let mut file = File::from(fd);
                io::copy(&mut entry, &mut file).map_err(|e| apply_err("write", &raw, e))?;
                self.chown_fd(&file, &meta, &raw)?;
                set_xattrs_fd(&file, &meta, &raw)?;
                // After chown, which clears setuid and setgid.
                fchmod(&file, Mode::from_bits_truncate(meta.mode & 0o7777))
                    .map_err(|e| apply_err("chmod", &raw, e.into()))?;
                let time = TimeSpec::new(meta.mtime, 0);
                futimens(&file, &time, &time)
                    .map_err(|e| apply_err("set times of", &raw, e.into()))?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(UnpackError::Read)?
                    .unwrap_or_default()
                    .into_owned();
                symlinkat(target.as_os_str(), parent, name.as_os_str())
                    .map_err(|e| apply_err("create symlink", &raw, e.into()))?;
                self.chown_at(parent, &name, &meta, &raw)?;
                for (key, value) in &meta.xattrs {
                    // No fd can be opened on a symlink for writing; its directory is held open.
                    let at = proc_path(parent_fd, &name);
                    xattr::set(&at, key, value).map_err(|e| apply_err("set xattrs of", &raw, e))?;
                }
                set_times_at(parent, &name, meta.mtime)
                    .map_err(|e| apply_err("set times of", &raw, e))?;
            }
            tar::EntryType::Link => {
                let Some(target) = link_target else {
                    unreachable!("resolved above")
                };
                let target_parent = target.parent().unwrap_or(Path::new(""));
                let target_name = target.file_name().unwrap_or_default();
                let target_dir = match open_beneath(&self.root, target_parent) {
                    Ok(dir) => dir,
                    Err(Errno::ELOOP | Errno::EXDEV) => {
                        return Err(UnpackError::Unsafe {
                            path: raw,
                            problem: UnsafeEntry::ThroughSymlink,
                        });
                    }
                    Err(Errno::ENOENT | Errno::ENOTDIR) => {
                        return Err(UnpackError::Unsafe {
                            path: raw,
                            problem: UnsafeEntry::LinkTarget,
                        });
                    }
                    Err(e) => return Err(apply_err("open link target of", &raw, e.into())),
                };
                match linkat(
                    &target_dir,
                    target_name,
                    parent,
                    name.as_os_str(),
                    AtFlags::empty(),
                ) {
                    Ok(()) => {}
                    Err(Errno::ENOENT | Errno::EPERM) => {
                        return Err(UnpackError::Unsafe {
                            path: raw,
                            problem: UnsafeEntry::LinkTarget,
                        });
                    }
                    Err(e) => return Err(apply_err("link", &raw, e.into())),
                }
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let sflag = match kind {
                    tar::EntryType::Char => SFlag::S_IFCHR,
                    tar::EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                let header = entry.header();
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                let mode = Mode::from_bits_truncate(meta.mode & 0o7777);
                mknodat(
                    parent,
                    name.as_os_str(),
                    sflag,
                    mode,
                    makedev(major.into(), minor.into()),
                )
                .map_err(|e| apply_err("create node", &raw, e.into()))?;
                self.chown_at(parent, &name, &meta, &raw)?;
                // The node was just made by this process in a directory held open: following
                // the name cannot reach anything else.
                fchmodat(parent, name.as_os_str(), mode, FchmodatFlags::FollowSymlink)
                    .map_err(|e| apply_err("chmod", &raw, e.into()))?;
                for (key, value) in &meta.xattrs {
                    let at = proc_path(parent_fd, &name);
                    xattr::set(&at, key, value).map_err(|e| apply_err("set xattrs of", &raw, e))?;
                }
                set_times_at(parent, &name, meta.mtime)
                    .map_err(|e| apply_err("set times of", &raw, e))?;
            }
            other => {
                return Err(UnpackError::EntryType {
                    path: raw,
                    kind: other.as_byte(),
                });
            }
        }
        Ok(())
    }

    /// Owner, mode, mtime and xattrs of an entry, PAX records taking precedence.
    fn meta<R: Read>(&self, entry: &mut tar::Entry<'_, R>) -> Result<Meta, UnpackError> {
        let header = entry.header();
        let number = |value: io::Result<u64>| value.map_err(UnpackError::Read);
        let mut meta = Meta {
            uid: u32::try_from(number(header.uid())?).unwrap_or(u32::MAX),
            gid: u32::try_from(number(header.gid())?).unwrap_or(u32::MAX),
            mode: header.mode().map_err(UnpackError::Read)?,
            mtime: i64::try_from(number(header.mtime())?).unwrap_or(0),
            xattrs: Vec::new(),
        };
        if let Some(extensions) = entry.pax_extensions().map_err(UnpackError::Read)? {
            for extension in extensions {
                let extension = extension.map_err(UnpackError::Read)?;
                let Ok(key) = extension.key() else { continue };
                let value = extension.value_bytes();
                let text = std::str::from_utf8(value).unwrap_or("");
                match key {
                    "uid" => meta.uid = text.parse().unwrap_or(meta.uid),
                    "gid" => meta.gid = text.parse().unwrap_or(meta.gid),
                    "mtime" => {
                        let seconds = text.split('.').next().unwrap_or("");
                        meta.mtime = seconds.parse().unwrap_or(meta.mtime);
                    }
                    _ => {
                        if let Some(name) = key.strip_prefix(PAX_XATTR) {
                            // overlayfs reads its own trusted.overlay.* xattrs off lower layers
                            // (redirects, metacopy): a layer does not get to set them.
                            if name.starts_with("trusted.overlay.") {
                                tracing::warn!(
                                    xattr = name,
                                    "ignored an overlayfs xattr in a layer"
                                );
                                continue;
                            }
                            meta.xattrs.push((name.to_owned(), value.to_vec()));
                        }
                    }
                }
            }
        }
        Ok(meta)
    }

    /// Removes whatever is at `parent/name` unless both it and the new entry are directories
    /// (then the new metadata merges into the old directory, as tar does).
    fn make_room(
        &mut self,
        raw: &Path,
        parent_path: &Path,
        name: &OsStr,
        new_is_dir: bool,
    ) -> Result<(), UnpackError> {
        let path = parent_path.join(name);
        let parent = &self.open_parent(raw, parent_path)?;
        let Some(st) = stat_at(parent, name) else {
            return Ok(());
        };
        if is_dir(st.st_mode) {
            if new_is_dir {
                return Ok(());
            }
            let parent_fd = parent.as_raw_fd();
            std::fs::remove_dir_all(proc_path(parent_fd, name))
                .map_err(|e| apply_err("replace", raw, e))?;
            self.whiteouts.retain(|p| !p.starts_with(&path));
            self.dirs.retain(|p, _| !p.starts_with(&path));
            // The cached parent may have been inside what was removed.
            self.parent = None;
        } else {
            unlinkat(parent, name, UnlinkatFlags::NoRemoveDir)
                .map_err(|e| apply_err("replace", raw, e.into()))?;
            self.dirs.remove(&path);
        }
        Ok(())
    }

    /// Opens the parent directory of an entry, creating missing directories (0755, root's) as
    /// tar does, never through a symlink.
    fn open_parent(&mut self, raw: &Path, parent_path: &Path) -> Result<OwnedFd, UnpackError> {
        let cached = matches!(&self.parent, Some((path, _)) if path == parent_path);
        if !cached {
            let fd = match open_beneath(&self.root, parent_path) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => self.create_dirs(raw, parent_path)?,
                Err(e) => return Err(open_err(raw, e)),
            };
            self.parent = Some((parent_path.to_owned(), fd));
        }
        match &self.parent {
            Some((_, fd)) => fd
                .try_clone()
                .map_err(|e| apply_err("open the parent of", raw, e)),
            None => unreachable!("set above"),
        }
    }

    fn create_dirs(&self, raw: &Path, parent_path: &Path) -> Result<OwnedFd, UnpackError> {
        let mut dir = open_beneath(&self.root, Path::new("")).map_err(|e| open_err(raw, e))?;
        for component in parent_path.components() {
            let name = component.as_os_str();
            dir = match open_beneath(&dir, Path::new(name)) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => {
                    match mkdirat(&dir, name, Mode::from_bits_truncate(0o755)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(apply_err("create parent of", raw, e.into())),
                    }
                    let created =
                        open_beneath(&dir, Path::new(name)).map_err(|e| open_err(raw, e))?;
                    fchmod(&created, Mode::from_bits_truncate(0o755))
                        .map_err(|e| apply_err("chmod parent of", raw, e.into()))?;
                    created
                }
                Err(e) => return Err(open_err(raw, e)),
            };
        }
        Ok(dir)
    }

    fn chown_fd(&self, fd: impl AsFd, meta: &Meta, raw: &Path) -> Result<(), UnpackError> {
        if self.same_owner {
            fchown(
                fd,
                Some(Uid::from_raw(meta.uid)),
                Some(Gid::from_raw(meta.gid)),
            )
            .map_err(|e| apply_err("chown", raw, e.into()))?;
        }
        Ok(())
    }

    fn chown_at(
        &self,
        dir: &OwnedFd,
        name: &OsStr,
        meta: &Meta,
        raw: &Path,
    ) -> Result<(), UnpackError> {
        if self.same_owner {
            let (uid, gid) = (Some(Uid::from_raw(meta.uid)), Some(Gid::from_raw(meta.gid)));
            fchownat(dir, name, uid, gid, AtFlags::AT_SYMLINK_NOFOLLOW)
                .map_err(|e| apply_err("chown", raw, e.into()))?;
        }
        Ok(())
    }

    /// Sets the directories' modes and mtimes, last, so that entries made in them do not change
    /// them again.
    fn finish(&mut self) -> Result<(), UnpackError> {
        self.parent = None;
        for (path, meta) in &self.dirs {
            let dir = match open_beneath(&self.root, path) {
                Ok(dir) => dir,
                Err(e) => return Err(open_err(path, e)),
            };
            fchmod(&dir, Mode::from_bits_truncate(meta.mode & 0o7777))
                .map_err(|e| apply_err("chmod", path, e.into()))?;
            let time = TimeSpec::new(meta.mtime, 0);
            futimens(&dir, &time, &time).map_err(|e| apply_err("set times of", path, e.into()))?;
        }
        Ok(())
    }
}

/// A tar name as a relative path of normal components; `None` for the root itself.
fn clean(raw: &Path) -> Result<Option<PathBuf>, UnpackError> {
    let mut path = PathBuf::new();
    for component in raw.components() {
        match component {
            Component::Normal(name) => path.push(name),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(UnpackError::Unsafe {
                    path: raw.to_owned(),
                    problem: UnsafeEntry::ParentDir,
                });
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(UnpackError::Unsafe {
                    path: raw.to_owned(),
                    problem: UnsafeEntry::Absolute,
                });
            }
        }
    }
    Ok((!path.as_os_str().is_empty()).then_some(path))
}

/// Opens the directory `path` beneath `dir`, refusing symlinks and `..` anywhere on the way
/// (ELOOP or EXDEV). No O_NOFOLLOW: with it a trailing symlink is not followed and so not
/// refused by RESOLVE_NO_SYMLINKS, and O_DIRECTORY then fails with ENOTDIR instead.
/// [openat2(2)](https://man7.org/linux/man-pages/man2/openat2.2.html)
pub(crate) fn open_beneath(dir: &OwnedFd, path: &Path) -> nix::Result<OwnedFd> {
    let path = if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    };
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        );
    openat2(dir, path, how)
}

fn open_dir_at(dir: &OwnedFd, name: &OsStr) -> io::Result<OwnedFd> {
    open_beneath(dir, Path::new(name)).map_err(io::Error::from)
}

fn stat_at(dir: &OwnedFd, name: &OsStr) -> Option<nix::sys::stat::FileStat> {
    fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW).ok()
}

fn is_dir(mode: u32) -> bool {
    mode & SFlag::S_IFMT.bits() == SFlag::S_IFDIR.bits()
}

fn set_times_at(dir: &OwnedFd, name: &OsStr, mtime: i64) -> io::Result<()> {
    let time = TimeSpec::new(mtime, 0);
    utimensat(dir, name, &time, &time, UtimensatFlags::NoFollowSymlink).map_err(io::Error::from)
}

/// `/proc/self/fd/<dir>/<name>`: the entry `name` of a directory held open, for the calls that
/// take only a path (lsetxattr, remove_dir_all). The magic link resolves to that very
/// directory, and neither call follows the last component.
fn proc_path(dir: i32, name: &OsStr) -> PathBuf {
    Path::new("/proc/self/fd").join(dir.to_string()).join(name)
}

fn set_xattr_fd(fd: &OwnedFd, key: &str, value: &[u8]) -> io::Result<()> {
    use xattr::FileExt as _;
    // `FileExt` is implemented for File; borrow the fd as one without taking ownership.
    let file = File::from(fd.try_clone()?);
    file.set_xattr(key, value)
}

fn set_xattrs_fd(fd: &impl AsFd, meta: &Meta, raw: &Path) -> Result<(), UnpackError> {
    if meta.xattrs.is_empty() {
        return Ok(());
    }
    let owned = fd
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| apply_err("set xattrs of", raw, e))?;
    for (key, value) in &meta.xattrs {
        set_xattr_fd(&owned, key, value).map_err(|e| apply_err("set xattrs of", raw, e))?;
    }
    Ok(())
}

fn open_err(raw: &Path, errno: Errno) -> UnpackError {
    match errno {
        Errno::ELOOP | Errno::EXDEV => UnpackError::Unsafe {
            path: raw.to_owned(),
            problem: UnsafeEntry::ThroughSymlink,
        },
        e => apply_err("open the parent of", raw, e.into()),
    }
}

fn apply_err(op: &'static str, path: &Path, source: io::Error) -> UnpackError {
    UnpackError::Apply {
        op,
        path: path.to_owned(),
        source,
    }
}
