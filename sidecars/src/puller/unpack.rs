//! Unpacks a tar, tar.gz or zip download into a fresh version directory, refusing any entry that
//! could write outside it or create a device: absolute paths, `..`, symlinks or hard links whose
//! target leaves the version directory, character/block devices and FIFOs. The error names the
//! entry. Runs on a blocking thread.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Component, Path, PathBuf};

use tar::EntryType;

/// How the archive is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Plain tar.
    Tar,
    /// gzip-compressed tar.
    TarGz,
    /// A zip archive.
    Zip,
    /// A zip archive when it starts with `PK\x03\x04`, else a tar archive, gzip-compressed
    /// when it starts with the gzip magic.
    Sniff,
}

impl Kind {
    /// Recognises `.tar`, `.tar.gz`, `.tgz` and `.zip` names.
    pub fn from_name(name: &str) -> Option<Self> {
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".tar.gz") || lower.ends_with(".tgz") {
            Some(Kind::TarGz)
        } else if lower.ends_with(".tar") {
            Some(Kind::Tar)
        } else if lower.ends_with(".zip") {
            Some(Kind::Zip)
        } else {
            None
        }
    }
}

/// Why unpacking failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The downloaded archive could not be opened or read.
    #[error("failed to read the archive {path:?}")]
    Read {
        /// The temporary download.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The zip archive is corrupt.
    #[error("failed to read the zip archive {path:?}")]
    Zip {
        /// The temporary download.
        path: PathBuf,
        /// Cause.
        #[source]
        source: zip::result::ZipError,
    },
    /// An entry is refused.
    #[error("refused archive entry {entry:?}: {reason}")]
    Unsafe {
        /// The entry's path as the archive names it.
        entry: String,
        /// Why.
        reason: &'static str,
    },
    /// An entry could not be written (disk full, permissions, a corrupt archive).
    #[error("failed to unpack archive entry {entry:?}")]
    Entry {
        /// The entry's path.
        entry: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// Unpacks `archive` into the existing, empty directory `dest`.
pub fn unpack(archive: &Path, kind: Kind, dest: &Path) -> Result<(), Error> {
    let read_err = |source| Error::Read {
        path: archive.to_owned(),
        source,
    };
    let mut file = BufReader::new(File::open(archive).map_err(read_err)?);
    let kind = match kind {
        Kind::Sniff => {
            let mut magic = [0u8; 4];
            let n = File::open(archive)
                .and_then(|mut f| f.read(&mut magic))
                .map_err(read_err)?;
            if n == 4 && magic == *b"PK\x03\x04" {
                Kind::Zip
            } else if n >= 2 && magic[..2] == [0x1f, 0x8b] {
                Kind::TarGz
            } else {
                Kind::Tar
            }
        }
        kind => kind,
    };
    if kind == Kind::Zip {
        return unpack_zip(file, archive, dest);
    }
    let gzip = kind == Kind::TarGz;
    if gzip {
        let reader: Box<dyn Read> = Box::new(flate2::read::GzDecoder::new(&mut file));
        unpack_tar(tar::Archive::new(reader), archive, dest)
    } else {
        unpack_tar(tar::Archive::new(&mut file), archive, dest)
    }
}

fn unpack_tar<R: Read>(
    mut archive: tar::Archive<R>,
    path: &Path,
    dest: &Path,
) -> Result<(), Error> {
    // Modes are kept but masked to 0o777: no setuid, setgid or sticky bits from a download.
    archive.set_preserve_permissions(false);
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    let read_err = |source| Error::Read {
        path: path.to_owned(),
        source,
    };
    // Symlinks written, checked again on disk at the end: a lexical check alone misses a chain
    // of links (`d/a -> ..`, then `e -> d/a/..`).
    let mut symlinks = Vec::new();
    for entry in archive.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let refuse = |reason| Error::Unsafe {
            entry: name.clone(),
            reason,
        };
        let entry_path = entry.path().map_err(read_err)?.into_owned();
        let depth = checked_depth(&entry_path).map_err(refuse)?;
        match entry.header().entry_type() {
            EntryType::Regular | EntryType::Continuous | EntryType::Directory => {}
            EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(read_err)?
                    .ok_or_else(|| refuse("symlink without a target"))?;
                check_symlink(depth, &target).map_err(refuse)?;
                symlinks.push((name.clone(), entry_path.clone()));
            }
            EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(read_err)?
                    .ok_or_else(|| refuse("hard link without a target"))?;
                checked_depth(&target).map_err(|_| refuse("hard link escapes the destination"))?;
            }
            EntryType::Char | EntryType::Block => return Err(refuse("device file")),
            EntryType::Fifo => return Err(refuse("FIFO")),
            EntryType::XGlobalHeader => continue,
            _ => return Err(refuse("unsupported entry type")),
        }
        let unpacked = entry.unpack_in(dest).map_err(|source| Error::Entry {
            entry: name.clone(),
            source,
        })?;
        if !unpacked {
            return Err(refuse("path escapes the destination"));
        }
    }
    check_on_disk(dest, symlinks, path)
}

/// Unpacks a zip archive with the same rules as a tar: symlinks (unix mode) must stay inside,
/// devices and FIFOs are refused.
fn unpack_zip(file: BufReader<File>, path: &Path, dest: &Path) -> Result<(), Error> {
    let zip_err = |source| Error::Zip {
        path: path.to_owned(),
        source,
    };
    let mut archive = zip::ZipArchive::new(file).map_err(zip_err)?;
    let mut symlinks = Vec::new();
    for index in 0..archive.len() {
        let mut entry = archive.by_index(index).map_err(zip_err)?;
        let name = String::from_utf8_lossy(entry.name_raw()).into_owned();
        let refuse = |reason| Error::Unsafe {
            entry: name.clone(),
            reason,
        };
        let write_err = |source| Error::Entry {
            entry: name.clone(),
            source,
        };
        let entry_path = PathBuf::from(&name);
        let depth = checked_depth(&entry_path).map_err(refuse)?;
        if name.contains('\\') {
            return Err(refuse("backslash in the path"));
        }
        let target = dest.join(&entry_path);
        let mode = entry.unix_mode().unwrap_or(0o644);
        match mode & 0o170000 {
            0 | 0o100000 | 0o040000 | 0o120000 => {}
            0o020000 | 0o060000 => return Err(refuse("device file")),
            0o010000 => return Err(refuse("FIFO")),
            _ => return Err(refuse("unsupported entry type")),
        }
        if entry.is_dir() {
            std::fs::create_dir_all(&target).map_err(write_err)?;
            continue;
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(write_err)?;
            // A parent reached through an earlier symlink must still be inside.
            let parent = parent.canonicalize().map_err(write_err)?;
            if !parent.starts_with(dest.canonicalize().map_err(write_err)?) {
                return Err(refuse("path escapes the destination"));
            }
        }
        if entry.is_symlink() {
            let mut link = String::new();
            entry.read_to_string(&mut link).map_err(write_err)?;
            check_symlink(depth, Path::new(&link)).map_err(refuse)?;
            std::os::unix::fs::symlink(&link, &target).map_err(write_err)?;
            symlinks.push((name.clone(), entry_path));
            continue;
        }
        let mut out = File::create(&target).map_err(write_err)?;
        std::io::copy(&mut entry, &mut out).map_err(write_err)?;
        use std::os::unix::fs::PermissionsExt;
        let perms = std::fs::Permissions::from_mode(if mode & 0o777 == 0 {
            0o644
        } else {
            mode & 0o777
        });
        out.set_permissions(perms).map_err(write_err)?;
    }
    check_on_disk(dest, symlinks, path)
}

/// Every symlink written resolves (if it resolves at all) inside `dest`.
pub(super) fn check_on_disk(
    dest: &Path,
    symlinks: Vec<(String, PathBuf)>,
    archive: &Path,
) -> Result<(), Error> {
    let root = dest.canonicalize().map_err(|source| Error::Read {
        path: archive.to_owned(),
        source,
    })?;
    for (name, path) in symlinks {
        // A dangling link resolves to nothing and reads nothing; only existing targets count.
        if let Ok(resolved) = dest.join(&path).canonicalize()
            && !resolved.starts_with(&root)
        {
            return Err(Error::Unsafe {
                entry: name,
                reason: "symlink escapes the destination",
            });
        }
    }
    Ok(())
}

/// The number of normal components of a relative path without `..`.
fn checked_depth(path: &Path) -> Result<usize, &'static str> {
    let mut depth = 0;
    for component in path.components() {
        match component {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => return Err("`..` in the path"),
            Component::RootDir | Component::Prefix(_) => return Err("absolute path"),
        }
    }
    Ok(depth)
}

/// A symlink of `depth` components pointing to `target` must stay inside the
/// version directory, resolving `..` lexically from the link's own directory.
pub(super) fn check_symlink(depth: usize, target: &Path) -> Result<(), &'static str> {
    let mut level = depth.saturating_sub(1) as isize;
    for component in target.components() {
        match component {
            Component::Normal(_) => level += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                level -= 1;
                if level < 0 {
                    return Err("symlink escapes the destination");
                }
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err("symlink with an absolute target");
            }
        }
    }
    Ok(())
}
