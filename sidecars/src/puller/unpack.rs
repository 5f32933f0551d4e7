//! Unpacks a tar or tar.gz download into a fresh version directory, refusing any entry that
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
    /// A tar archive, gzip-compressed when it starts with the gzip magic.
    Sniff,
}

impl Kind {
    /// Recognises `.tar`, `.tar.gz` and `.tgz` names.
    pub fn from_name(name: &str) -> Option<Self> {
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".tar.gz") || lower.ends_with(".tgz") {
            Some(Kind::TarGz)
        } else if lower.ends_with(".tar") {
            Some(Kind::Tar)
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
    let gzip = match kind {
        Kind::Tar => false,
        Kind::TarGz => true,
        Kind::Sniff => {
            let mut magic = [0u8; 2];
            let n = File::open(archive)
                .and_then(|mut f| f.read(&mut magic))
                .map_err(read_err)?;
            n == 2 && magic == [0x1f, 0x8b]
        }
    };
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
    archive.set_preserve_permissions(true);
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
    let root = dest.canonicalize().map_err(read_err)?;
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
fn check_symlink(depth: usize, target: &Path) -> Result<(), &'static str> {
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
