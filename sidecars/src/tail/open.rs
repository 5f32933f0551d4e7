//! Opening a matched path safely.
//!
//! The tailer often runs as root and reads directories that pod members can write, so a path
//! that matches a glob says nothing about what it names. What may be read is a regular file
//! below a `--path` base directory, reached without symbolic links; with `--follow-symlinks`,
//! links are followed only to a target that is itself below a base directory. Nothing else is
//! opened for reading: a FIFO's `open(2)` blocks until a writer comes, a device may act on
//! open, a link may name `/etc/shadow`.
//!
//! How:
//! - Each base directory is resolved once, at startup (the operator's own links, such as
//!   `/var/run -> /run`, are taken as they are then); later, a link anywhere below `/` on the
//!   way to a file is refused.
//! - The path is walked from `/` one component at a time with
//!   `openat(O_PATH | O_NOFOLLOW | O_DIRECTORY)`: a directory swapped for a link on the way
//!   fails (`ENOTDIR`), and nothing is opened for reading yet.
//! - The last component is opened `O_PATH | O_NOFOLLOW` and `fstat`ed: an `O_PATH` descriptor
//!   opens nothing (no FIFO wait, no driver call), so the kind of the file is known before it
//!   is opened. Only a regular file goes on.
//! - It is then opened for reading through `/proc/self/fd/N` (the same inode, whatever the path
//!   names by now) with `O_NONBLOCK | O_NOCTTY` as a second guard, checked again with `fstat`
//!   (same device and inode, a regular file), and `O_NONBLOCK` is cleared. Without `/proc`, the
//!   last component is opened directly with `O_NOFOLLOW | O_NONBLOCK | O_NOCTTY`.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl, open, openat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat};

/// Why a matched path is not followed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenError {
    /// The path is not below any base directory (e.g. a checkpoint from other `--path` globs).
    #[error("{path:?} is not under any --path base directory; skipping it")]
    OutsideBases {
        /// The path.
        path: PathBuf,
    },
    /// A symbolic link on the way, not followed without `--follow-symlinks`.
    #[error(
        "{path:?} is or goes through a symbolic link ({link:?}); not followed without --follow-symlinks"
    )]
    Symlink {
        /// The path.
        path: PathBuf,
        /// The link met.
        link: PathBuf,
    },
    /// With `--follow-symlinks`: the link leads out of every base directory.
    #[error(
        "{path:?} is a symbolic link to {target:?}, outside every --path base directory; not followed"
    )]
    Escapes {
        /// The path.
        path: PathBuf,
        /// Where it leads.
        target: PathBuf,
    },
    /// A FIFO, device, socket or directory.
    #[error("{path:?} is {kind}, not a regular file; skipping it")]
    NotRegular {
        /// The path.
        path: PathBuf,
        /// What it is.
        kind: &'static str,
    },
    /// The open failed (`EMFILE`, `EACCES`, gone, ...).
    #[error("failed to open {path:?}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
}

impl OpenError {
    /// Whether the process or the system is out of file descriptors.
    pub(crate) fn out_of_fds(&self) -> bool {
        matches!(self, OpenError::Io { source, .. } if source
            .raw_os_error()
            .is_some_and(|e| e == Errno::EMFILE as i32 || e == Errno::ENFILE as i32))
    }

    /// Whether the path simply vanished (renamed or deleted between the scan and the open).
    pub(crate) fn vanished(&self) -> bool {
        matches!(self, OpenError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }

    /// Whether this is a refusal (the path names something not to be read), not a failure.
    pub(crate) fn refused(&self) -> bool {
        !matches!(self, OpenError::Io { .. })
    }
}

/// Opens matched paths the safe way (see the module doc).
#[derive(Debug)]
pub(crate) struct Opener {
    /// Each base directory as given, and as resolved at startup.
    bases: Vec<(PathBuf, PathBuf)>,
    follow_symlinks: bool,
}

/// A file opened for reading, with its `fstat`.
#[derive(Debug)]
pub(crate) struct Opened {
    pub(crate) file: File,
    pub(crate) dev: u64,
    pub(crate) ino: u64,
}

impl Opener {
    /// Resolves each base directory now: its longest existing prefix through the links it has
    /// today, then the components that do not exist yet as they are written.
    pub(crate) fn new<'a>(
        bases: impl IntoIterator<Item = &'a Path>,
        follow_symlinks: bool,
    ) -> Self {
        let bases = bases
            .into_iter()
            .map(|base| (base.to_owned(), resolve_existing(base)))
            .collect();
        Opener {
            bases,
            follow_symlinks,
        }
    }

    /// The resolved base directories (for logs).
    pub(crate) fn resolved(&self) -> impl Iterator<Item = (&Path, &Path)> {
        self.bases
            .iter()
            .map(|(given, real)| (given.as_path(), real.as_path()))
    }

    /// Opens `path` for reading if it is a regular file reached without links below its base
    /// directory (or, with `--follow-symlinks`, through links that stay below one).
    pub(crate) fn open(&self, path: &Path) -> Result<Opened, OpenError> {
        let (real_base, rel) = self.split(path)?;
        match open_beneath(&real_base, &rel, path) {
            Err(OpenError::Symlink { .. }) if self.follow_symlinks => self.open_followed(path),
            other => other,
        }
    }

    /// `--follow-symlinks`: resolve every link, check that the target is below a base
    /// directory, then open the target with no link allowed (a link changed in between fails).
    fn open_followed(&self, path: &Path) -> Result<Opened, OpenError> {
        let target = std::fs::canonicalize(path).map_err(|source| OpenError::Io {
            path: path.to_owned(),
            source,
        })?;
        let Some((real_base, rel)) = self.bases.iter().find_map(|(_, real)| {
            let rel = target.strip_prefix(real).ok()?;
            Some((real.clone(), rel.to_owned()))
        }) else {
            return Err(OpenError::Escapes {
                path: path.to_owned(),
                target,
            });
        };
        open_beneath(&real_base, &rel, path)
    }

    /// The resolved base directory `path` is below, and the rest of it.
    fn split(&self, path: &Path) -> Result<(PathBuf, PathBuf), OpenError> {
        self.bases
            .iter()
            .filter_map(|(given, real)| {
                let rel = path.strip_prefix(given).ok()?;
                let plain = rel.components().all(|c| matches!(c, Component::Normal(_)));
                (plain && rel.components().next().is_some()).then_some((given, real, rel))
            })
            // The deepest base wins when bases nest.
            .max_by_key(|(given, _, _)| given.components().count())
            .map(|(_, real, rel)| (real.clone(), rel.to_owned()))
            .ok_or_else(|| OpenError::OutsideBases {
                path: path.to_owned(),
            })
    }
}

/// `path` with the links of its longest existing prefix resolved.
fn resolve_existing(path: &Path) -> PathBuf {
    let mut missing = Vec::new();
    let mut existing = path;
    loop {
        if let Ok(real) = std::fs::canonicalize(existing) {
            let mut real = real;
            for c in missing.iter().rev() {
                real.push(c);
            }
            return real;
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                missing.push(name.to_owned());
                existing = parent;
            }
            _ => return path.to_owned(),
        }
    }
}

/// Opens `base/rel` (`base` absolute and resolved, `rel` plain components) with no link
/// followed anywhere, for reading, if it is a regular file. `shown` names it in errors.
fn open_beneath(base: &Path, rel: &Path, shown: &Path) -> Result<Opened, OpenError> {
    let io = |source: Errno| OpenError::Io {
        path: shown.to_owned(),
        source: io::Error::from(source),
    };
    let dir_flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut dir = open("/", dir_flags, Mode::empty()).map_err(io)?;
    let mut walked = PathBuf::from("/");
    let components: Vec<_> = base
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .chain(rel.components())
        .collect();
    let Some((last, dirs)) = components.split_last() else {
        return Err(OpenError::NotRegular {
            path: shown.to_owned(),
            kind: "a directory",
        });
    };
    for c in dirs {
        walked.push(c);
        dir = match openat(&dir, c.as_os_str(), dir_flags, Mode::empty()) {
            Ok(fd) => fd,
            // `O_NOFOLLOW | O_DIRECTORY` on a link: ENOTDIR (ELOOP on some kernels).
            Err(Errno::ENOTDIR | Errno::ELOOP) if is_link(&walked) => {
                return Err(OpenError::Symlink {
                    path: shown.to_owned(),
                    link: walked,
                });
            }
            Err(Errno::ENOTDIR) => {
                return Err(OpenError::NotRegular {
                    path: shown.to_owned(),
                    kind: "below something that is not a directory",
                });
            }
            Err(err) => return Err(io(err)),
        };
    }
    walked.push(last);
    let handle = openat(
        &dir,
        last.as_os_str(),
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io)?;
    let stat = fstat(&handle).map_err(io)?;
    match kind(&stat) {
        None => {}
        Some("a symbolic link") => {
            return Err(OpenError::Symlink {
                path: shown.to_owned(),
                link: walked,
            });
        }
        Some(kind) => {
            return Err(OpenError::NotRegular {
                path: shown.to_owned(),
                kind,
            });
        }
    }
    let file = reopen(&handle)
        .or_else(|err| match err.kind() {
            // No /proc: the last component directly, not following a link, not blocking.
            io::ErrorKind::NotFound => openat(
                &dir,
                last.as_os_str(),
                OFlag::O_RDONLY
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_NONBLOCK
                    | OFlag::O_NOCTTY
                    | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map(File::from)
            .map_err(io::Error::from),
            _ => Err(err),
        })
        .map_err(|source| OpenError::Io {
            path: shown.to_owned(),
            source,
        })?;
    let opened = fstat(&file).map_err(io)?;
    if let Some(kind) = kind(&opened) {
        return Err(OpenError::NotRegular {
            path: shown.to_owned(),
            kind,
        });
    }
    if (opened.st_dev, opened.st_ino) != (stat.st_dev, stat.st_ino) {
        // Only the fallback can meet another file (swapped in between): next scan.
        return Err(io(Errno::EAGAIN));
    }
    // A regular file ignores O_NONBLOCK; clear it anyway, so reads mean what they say.
    let flags = fcntl(&file, FcntlArg::F_GETFL).map_err(io)?;
    let flags = OFlag::from_bits_truncate(flags) & !OFlag::O_NONBLOCK;
    fcntl(&file, FcntlArg::F_SETFL(flags)).map_err(io)?;
    Ok(Opened {
        file,
        dev: opened.st_dev,
        ino: opened.st_ino,
    })
}

/// Opens the file an `O_PATH` descriptor names, for reading.
fn reopen(handle: &OwnedFd) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NONBLOCK | OFlag::O_NOCTTY).bits())
        .open(format!("/proc/self/fd/{}", handle.as_raw_fd()))
}

fn is_link(path: &Path) -> bool {
    path.symlink_metadata().is_ok_and(|m| m.is_symlink())
}

/// What a file is, if not a regular file.
fn kind(stat: &FileStat) -> Option<&'static str> {
    let format = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT;
    Some(match format {
        SFlag::S_IFREG => return None,
        SFlag::S_IFLNK => "a symbolic link",
        SFlag::S_IFIFO => "a FIFO",
        SFlag::S_IFCHR => "a character device",
        SFlag::S_IFBLK => "a block device",
        SFlag::S_IFSOCK => "a socket",
        SFlag::S_IFDIR => "a directory",
        _ => "of an unknown kind",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn opener(base: &Path, follow: bool) -> Opener {
        Opener::new([base], follow)
    }

    #[test]
    fn regular_files_open_and_everything_else_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path().join("logs");
        std::fs::create_dir_all(base.join("sub")).expect("mkdir");
        std::fs::write(base.join("a.log"), "a\n").expect("write");
        std::fs::write(base.join("sub/b.log"), "b\n").expect("write");
        std::fs::write(dir.path().join("secret"), "s\n").expect("write");
        nix::unistd::mkfifo(&base.join("fifo.log"), Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        symlink("../secret", base.join("out.log")).expect("symlink");
        symlink("a.log", base.join("in.log")).expect("symlink");
        symlink(dir.path(), base.join("up")).expect("symlink");
        let o = opener(&base, false);
        assert!(o.open(&base.join("a.log")).is_ok());
        assert!(o.open(&base.join("sub/b.log")).is_ok());
        let fifo = o.open(&base.join("fifo.log")).expect_err("fifo");
        assert!(
            matches!(fifo, OpenError::NotRegular { kind: "a FIFO", .. }),
            "{fifo}"
        );
        for link in ["out.log", "in.log", "up/secret"] {
            let err = o.open(&base.join(link)).expect_err(link);
            assert!(matches!(err, OpenError::Symlink { .. }), "{err}");
        }
        let err = o.open(&dir.path().join("secret")).expect_err("outside");
        assert!(matches!(err, OpenError::OutsideBases { .. }), "{err}");
        let err = o.open(&base.join("../secret")).expect_err("dot-dot");
        assert!(matches!(err, OpenError::OutsideBases { .. }), "{err}");

        let o = opener(&base, true);
        assert!(o.open(&base.join("in.log")).is_ok());
        for link in ["out.log", "up/secret"] {
            let err = o.open(&base.join(link)).expect_err(link);
            assert!(matches!(err, OpenError::Escapes { .. }), "{err}");
        }
    }

    #[test]
    fn a_base_through_a_link_at_startup_is_resolved_then_fixed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let real = dir.path().join("real");
        std::fs::create_dir_all(&real).expect("mkdir");
        std::fs::write(real.join("a.log"), "a\n").expect("write");
        symlink(&real, dir.path().join("logs")).expect("symlink");
        let base = dir.path().join("logs");
        let o = opener(&base, false);
        assert!(o.open(&base.join("a.log")).is_ok());
        // Swapped for a link elsewhere after startup: refused.
        let other = dir.path().join("other");
        std::fs::create_dir_all(&other).expect("mkdir");
        std::fs::write(other.join("a.log"), "x\n").expect("write");
        std::fs::rename(&real, dir.path().join("moved")).expect("rename");
        symlink(&other, &real).expect("symlink");
        let err = o.open(&base.join("a.log")).expect_err("swapped");
        assert!(matches!(err, OpenError::Symlink { .. }), "{err}");
    }
}
