//! The one writer of a version's tree, for archives and git commits alike: every entry is made
//! relative to an open directory of the version, never through a symlink.
//!
//! Each entry's parent directory is opened with `openat2(2)` and
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` from the version's root, so the kernel refuses a
//! path that leaves the version or passes through any symlink (the archive's own links
//! included), and missing parents are made one `mkdirat` at a time. Files are created with
//! `O_CREAT | O_EXCL | O_NOFOLLOW` in that parent: an existing name (a link, or an earlier file
//! of the same name) is unlinked first, so nothing is ever written into an inode the archive
//! did not just create. Symlinks are only ever made (`symlinkat`), never followed while
//! unpacking; a target that leaves the version lexically is refused at once, and once every
//! entry is written each link is resolved by the kernel with `RESOLVE_BENEATH`, which refuses
//! the version when a chain of links leads out. Hard links must name a regular file already in
//! the version.
//!
//! Bounds: `--max-entries` objects (files, directories, links; directories made for a deeper
//! path count too), `--max-unpacked-bytes` of content, and `--min-free` on the filesystem,
//! checked as the bytes are written. Modes keep the archive's permission bits within
//! `--umask`; setuid, setgid and sticky bits are dropped; directories always let the puller
//! itself in (`u+rwx`) so an old version can be removed.
//!
//! `openat2` needs Linux 5.6; where it is missing (or a seccomp filter answers `ENOSYS`) the
//! walk falls back to one `openat(O_NOFOLLOW)` per path component, which is as strict here:
//! every component is a plain name, never `..`.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{Mode, SFlag};

use super::Error;
use crate::puller::Limits;
use crate::puller::space::{BLOCK, Space};

/// How every path below the root is resolved: beneath it, through no symlink of any kind, on
/// no other mount.
const RESOLVE: ResolveFlag = ResolveFlag::RESOLVE_BENEATH
    .union(ResolveFlag::RESOLVE_NO_SYMLINKS)
    .union(ResolveFlag::RESOLVE_NO_MAGICLINKS)
    .union(ResolveFlag::RESOLVE_NO_XDEV);

/// A version directory being written.
#[derive(Debug)]
pub struct Tree {
    /// The version's root, opened once; every entry is made relative to it.
    root: Rc<OwnedFd>,
    /// The root's path, for errors.
    path: PathBuf,
    /// "archive entry" or "tree entry", in errors.
    noun: &'static str,
    limits: Limits,
    space: Space,
    /// Bytes of content written (or read and skipped), bounded by `--max-unpacked-bytes`.
    bytes: u64,
    /// Objects made, bounded by `--max-entries`.
    entries: u64,
    /// The last parent directory opened: archives list a directory's entries together.
    cached: Option<(PathBuf, Rc<OwnedFd>)>,
    /// `(entry, path)` of every symlink made, resolved once all entries are written.
    symlinks: Vec<(String, PathBuf)>,
}

/// A relative path split into its parent's components and its last one.
struct Split<'a> {
    parent: Vec<&'a OsStr>,
    name: Option<&'a OsStr>,
}

impl Tree {
    /// Opens the existing, empty directory `dir` for writing a version.
    pub fn open(dir: &Path, noun: &'static str, limits: &Limits) -> Result<Self, Error> {
        let root = nix::fcntl::open(
            dir,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|errno| Error::Root {
            path: dir.to_owned(),
            source: errno.into(),
        })?;
        Ok(Self {
            root: Rc::new(root),
            path: dir.to_owned(),
            noun,
            limits: *limits,
            space: Space::new(limits.min_free, dir.to_owned()),
            bytes: 0,
            entries: 0,
            cached: None,
            symlinks: Vec::new(),
        })
    }

    /// Refuses now when `bytes` of content, known before anything is written (the sizes a zip
    /// declares), are over `--max-unpacked-bytes` or would not fit above `--min-free`.
    pub fn expect(&self, bytes: u64) -> Result<(), Error> {
        if bytes > self.limits.max_unpacked_bytes {
            return Err(Error::TooLarge {
                max: self.limits.max_unpacked_bytes,
            });
        }
        Ok(self.space.expect(self.root.as_fd(), bytes)?)
    }

    /// Refuses now when `count` entries, known before anything is written, are too many.
    pub fn expect_entries(&self, count: u64) -> Result<(), Error> {
        if count > self.limits.max_entries {
            return Err(Error::TooManyEntries {
                max: self.limits.max_entries,
            });
        }
        Ok(())
    }

    /// A directory `path` with `mode` (the version's root for an empty path, as `./`).
    pub fn dir(&mut self, entry: &str, path: &Path, mode: u32) -> Result<(), Error> {
        let split = self.split(entry, path)?;
        self.count()?;
        let mode = self.dir_mode(mode);
        let Some(name) = split.name else {
            return self.chmod(entry, &self.root, mode);
        };
        let parent = self.parent(entry, &split.parent, true)?;
        match mkdirat(&parent, name) {
            Err(Errno::EEXIST) if self.kind(entry, &parent, name)? != SFlag::S_IFDIR => {
                // A file or link of an earlier entry is replaced, as tar does.
                self.unlink(entry, &parent, name)?;
                mkdirat(&parent, name)
            }
            Err(Errno::EEXIST) => Ok(()),
            made => made,
        }
        .map_err(|errno| self.entry_err(entry, errno))?;
        let dir = open_beneath(&parent, name, DIR_FLAGS, Mode::empty())
            .map_err(|errno| self.entry_err(entry, errno))?;
        self.chmod(entry, &dir, mode)?;
        self.cached = Some((path_of(&split), Rc::new(dir)));
        Ok(())
    }

    /// A regular file `path` with `mode` and, if given, `mtime` (seconds since the epoch),
    /// its content read from `content`.
    pub fn file(
        &mut self,
        entry: &str,
        path: &Path,
        mode: u32,
        mtime: Option<u64>,
        content: &mut dyn Read,
    ) -> Result<(), Error> {
        let (parent, name) = self.leaf(entry, path)?;
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC;
        let create = || open_beneath(&parent, name, flags, Mode::from_bits_truncate(0o600));
        let fd = match create() {
            Err(Errno::EEXIST) => {
                self.replace(entry, &parent, name)?;
                create()
            }
            other => other,
        }
        .map_err(|errno| self.entry_err(entry, errno))?;
        let mut file = std::fs::File::from(fd);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match content.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(Error::Content {
                        noun: self.noun,
                        entry: entry.to_owned(),
                        source,
                    });
                }
            };
            self.add_bytes(n as u64)?;
            self.space.charge(file.as_fd(), n as u64)?;
            file.write_all(&buf[..n]).map_err(|source| Error::Entry {
                noun: self.noun,
                entry: entry.to_owned(),
                source,
            })?;
        }
        use std::os::unix::fs::PermissionsExt;
        let io_err = |source| Error::Entry {
            noun: self.noun,
            entry: entry.to_owned(),
            source,
        };
        file.set_permissions(std::fs::Permissions::from_mode(self.file_mode(mode)))
            .map_err(io_err)?;
        if let Some(mtime) = mtime {
            let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime);
            file.set_modified(time).map_err(io_err)?;
        }
        Ok(())
    }

    /// A symlink `path -> target`, refused when the target leaves the version on its face
    /// (absolute, or more `..` than the link is deep); never followed here.
    pub fn symlink(&mut self, entry: &str, path: &Path, target: &Path) -> Result<(), Error> {
        let depth = self.split(entry, path)?.parent.len() + 1;
        if target.as_os_str().is_empty() {
            return Err(self.refuse(entry, "symlink without a target"));
        }
        super::check_symlink(depth, target).map_err(|reason| self.refuse(entry, reason))?;
        let (parent, name) = self.leaf(entry, path)?;
        let make = || nix::unistd::symlinkat(target, &*parent, name);
        match make() {
            Err(Errno::EEXIST) => {
                self.replace(entry, &parent, name)?;
                make()
            }
            other => other,
        }
        .map_err(|errno| self.entry_err(entry, errno))?;
        self.symlinks.push((entry.to_owned(), path.to_owned()));
        Ok(())
    }

    /// A hard link `path` to the regular file `target`, both in the version.
    pub fn hard_link(&mut self, entry: &str, path: &Path, target: &Path) -> Result<(), Error> {
        let to = self.split(entry, target)?;
        let Some(to_name) = to.name else {
            return Err(self.refuse(entry, "hard link to the root"));
        };
        let to_parent = self.parent(entry, &to.parent, false)?;
        match self.kind(entry, &to_parent, to_name)? {
            SFlag::S_IFREG => {}
            // A second name for a symlink would carry its target to another depth.
            SFlag::S_IFLNK => return Err(self.refuse(entry, "hard link to a symlink")),
            _ => return Err(self.refuse(entry, "hard link to something not a regular file")),
        }
        let (parent, name) = self.leaf(entry, path)?;
        let link = || nix::unistd::linkat(&*to_parent, to_name, &*parent, name, AtFlags::empty());
        match link() {
            Err(Errno::EEXIST) => {
                self.replace(entry, &parent, name)?;
                link()
            }
            other => other,
        }
        .map_err(|errno| self.entry_err(entry, errno))
    }

    /// Reads and drops what an entry carries but nothing is made of (a directory's data, a
    /// PAX global header): it costs as much to inflate as a file, so it counts as content.
    pub fn skip(&mut self, entry: &str, content: &mut dyn Read) -> Result<(), Error> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match content.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => self.add_bytes(n as u64)?,
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(Error::Content {
                        noun: self.noun,
                        entry: entry.to_owned(),
                        source,
                    });
                }
            }
        }
    }

    /// Once every entry is written: each symlink, resolved by the kernel beneath the root
    /// through whatever other links it meets, must stay inside. A dangling link is inert.
    pub fn finish(self) -> Result<u64, Error> {
        for (entry, path) in &self.symlinks {
            let how = OpenHow::new()
                .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
                .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
            match nix::fcntl::openat2(&*self.root, path.as_path(), how) {
                Ok(_) | Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) => {}
                Err(Errno::EXDEV) => {
                    return Err(self.refuse(entry, "symlink escapes the destination"));
                }
                Err(Errno::ENOSYS) => {
                    let root = self.path.canonicalize().map_err(|source| Error::Root {
                        path: self.path.clone(),
                        source,
                    })?;
                    if let Ok(resolved) = self.path.join(path).canonicalize()
                        && !resolved.starts_with(&root)
                    {
                        return Err(self.refuse(entry, "symlink escapes the destination"));
                    }
                }
                Err(errno) => return Err(self.entry_err(entry, errno)),
            }
        }
        Ok(self.bytes)
    }

    /// Counts one object against `--max-entries`, and a block of free space.
    fn count(&mut self) -> Result<(), Error> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(Error::TooManyEntries {
                max: self.limits.max_entries,
            });
        }
        Ok(self.space.charge(self.root.as_fd(), BLOCK)?)
    }

    fn add_bytes(&mut self, n: u64) -> Result<(), Error> {
        self.bytes = self.bytes.saturating_add(n);
        if self.bytes > self.limits.max_unpacked_bytes {
            return Err(Error::TooLarge {
                max: self.limits.max_unpacked_bytes,
            });
        }
        Ok(())
    }

    fn file_mode(&self, mode: u32) -> u32 {
        mode & 0o777 & !self.limits.umask
    }

    fn dir_mode(&self, mode: u32) -> u32 {
        (mode & 0o777 & !self.limits.umask) | 0o700
    }

    /// The parent directory of a new entry `path`, counted, and its last component.
    fn leaf<'p>(&mut self, entry: &str, path: &'p Path) -> Result<(Rc<OwnedFd>, &'p OsStr), Error> {
        let split = self.split(entry, path)?;
        let Some(name) = split.name else {
            return Err(self.refuse(entry, "empty path"));
        };
        self.count()?;
        Ok((self.parent(entry, &split.parent, true)?, name))
    }

    /// `path`'s components: plain names only (`.` is dropped).
    fn split<'p>(&self, entry: &str, path: &'p Path) -> Result<Split<'p>, Error> {
        let mut names = Vec::new();
        for component in path.components() {
            match component {
                Component::Normal(name) => names.push(name),
                Component::CurDir => {}
                Component::ParentDir => return Err(self.refuse(entry, "`..` in the path")),
                Component::RootDir | Component::Prefix(_) => {
                    return Err(self.refuse(entry, "absolute path"));
                }
            }
        }
        let name = names.pop();
        Ok(Split {
            parent: names,
            name,
        })
    }

    /// The directory `components` below the root, opened without following any link; with
    /// `create`, missing directories are made (and counted).
    fn parent(
        &mut self,
        entry: &str,
        components: &[&OsStr],
        create: bool,
    ) -> Result<Rc<OwnedFd>, Error> {
        if components.is_empty() {
            return Ok(self.root.clone());
        }
        let path: PathBuf = components.iter().collect();
        if let Some((cached, fd)) = &self.cached
            && *cached == path
        {
            return Ok(fd.clone());
        }
        // One call for the whole path in the usual case; the walk below, one component at a
        // time, makes what is missing and tells why anything else failed.
        let how = OpenHow::new().flags(DIR_FLAGS).resolve(RESOLVE);
        let fd = match nix::fcntl::openat2(&*self.root, path.as_path(), how) {
            Ok(fd) => Rc::new(fd),
            Err(_) => self.walk(entry, components, create)?,
        };
        self.cached = Some((path, fd.clone()));
        Ok(fd)
    }

    fn walk(
        &mut self,
        entry: &str,
        components: &[&OsStr],
        create: bool,
    ) -> Result<Rc<OwnedFd>, Error> {
        let mut dir = self.root.clone();
        for name in components {
            let open = |dir: &OwnedFd| open_beneath(dir, name, DIR_FLAGS, Mode::empty());
            let next = match open(&dir) {
                Err(Errno::ENOENT) if create => {
                    self.count()?;
                    match mkdirat(&dir, name) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(errno) => return Err(self.entry_err(entry, errno)),
                    }
                    let fd = open(&dir).map_err(|errno| self.entry_err(entry, errno))?;
                    self.chmod(entry, &fd, self.dir_mode(0o755))?;
                    fd
                }
                Err(Errno::ELOOP | Errno::ENOTDIR) => {
                    return Err(match self.kind(entry, &dir, name)? {
                        SFlag::S_IFLNK => self.refuse(entry, "path leads through a symlink"),
                        _ => self.refuse(entry, "path leads through a file"),
                    });
                }
                Err(Errno::EXDEV) => {
                    return Err(self.refuse(entry, "path escapes the destination"));
                }
                other => other.map_err(|errno| self.entry_err(entry, errno))?,
            };
            dir = Rc::new(next);
        }
        Ok(dir)
    }

    fn chmod(&self, entry: &str, fd: &OwnedFd, mode: u32) -> Result<(), Error> {
        nix::sys::stat::fchmod(fd, Mode::from_bits_truncate(mode))
            .map_err(|errno| self.entry_err(entry, errno))
    }

    /// The type of `name` in `parent`, without following it.
    fn kind(&self, entry: &str, parent: &OwnedFd, name: &OsStr) -> Result<SFlag, Error> {
        let stat = nix::sys::stat::fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|errno| self.entry_err(entry, errno))?;
        Ok(SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT)
    }

    /// Makes room for a new file or link where an earlier entry made one; a directory stays.
    fn replace(&mut self, entry: &str, parent: &OwnedFd, name: &OsStr) -> Result<(), Error> {
        if self.kind(entry, parent, name)? == SFlag::S_IFDIR {
            return Err(self.refuse(entry, "replaces a directory of the same archive"));
        }
        self.unlink(entry, parent, name)
    }

    fn unlink(&self, entry: &str, parent: &OwnedFd, name: &OsStr) -> Result<(), Error> {
        nix::unistd::unlinkat(parent, name, nix::unistd::UnlinkatFlags::NoRemoveDir)
            .map_err(|errno| self.entry_err(entry, errno))
    }

    fn refuse(&self, entry: &str, reason: &'static str) -> Error {
        Error::Unsafe {
            noun: self.noun,
            entry: entry.to_owned(),
            reason,
        }
    }

    fn entry_err(&self, entry: &str, errno: Errno) -> Error {
        Error::Entry {
            noun: self.noun,
            entry: entry.to_owned(),
            source: errno.into(),
        }
    }
}

/// The path of a split (parent and name joined again).
fn path_of(split: &Split<'_>) -> PathBuf {
    split.parent.iter().chain(split.name.iter()).collect()
}

/// Opening a directory below another.
const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// `mkdirat(2)`; the mode is set by `fchmod` afterwards, whatever the process umask.
fn mkdirat(parent: &OwnedFd, name: &OsStr) -> nix::Result<()> {
    nix::sys::stat::mkdirat(parent, name, Mode::from_bits_truncate(0o700))
}

/// Opens the single plain name `name` in `dir` with `openat2(2)` resolved by [`RESOLVE`], or
/// where the kernel lacks it (`ENOSYS`, also what seccomp filters answer), with `openat(2)`
/// and `O_NOFOLLOW`: for one plain name (never `..`) that is as strict.
fn open_beneath(dir: &OwnedFd, name: &OsStr, flags: OFlag, mode: Mode) -> nix::Result<OwnedFd> {
    let how = OpenHow::new().flags(flags).mode(mode).resolve(RESOLVE);
    match nix::fcntl::openat2(dir, name, how) {
        Err(Errno::ENOSYS) => nix::fcntl::openat(dir, name, flags | OFlag::O_NOFOLLOW, mode),
        other => other,
    }
}
