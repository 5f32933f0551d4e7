//! Unpacks a tar, tar.gz or zip download into a fresh version directory through [`Tree`],
//! which writes every entry relative to the version's directory and never through a symlink
//! (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, `O_EXCL | O_NOFOLLOW` creates).
//! Refused, naming the entry: absolute paths, `..`, a path through a symlink or a file,
//! symlinks whose target leaves the version (on its face, or through a chain of links once all
//! are made), hard links to anything but a regular file of the version, character/block
//! devices and FIFOs. Bounded: `--max-entries`, `--max-unpacked-bytes` (an overlapping-entries
//! zip is refused outright, and a zip's declared sizes are checked before anything is
//! written), `--min-free`, and at most [`TAR_META_MAX`] of tar headers (long names, PAX
//! records) held in memory per entry. Runs on a blocking thread.

use std::cell::Cell;
use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use tar::EntryType;

use crate::puller::Limits;

mod tree;

pub use tree::Tree;

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

/// Why unpacking (or writing a git tree) failed; nothing of it is published.
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
    /// The archive as a whole is refused.
    #[error("refused {format} archive {path:?}: {reason}")]
    UnsafeArchive {
        /// "zip" or "tar".
        format: &'static str,
        /// The temporary download.
        path: PathBuf,
        /// Why.
        reason: &'static str,
    },
    /// An entry is refused.
    #[error("refused {noun} {entry:?}: {reason}")]
    Unsafe {
        /// "archive entry" or "tree entry".
        noun: &'static str,
        /// The entry's path as the archive names it.
        entry: String,
        /// Why.
        reason: &'static str,
    },
    /// More entries than `--max-entries`.
    #[error(
        "more than --max-entries {max} files, directories and links in one version; raise --max-entries if that is expected"
    )]
    TooManyEntries {
        /// The bound.
        max: u64,
    },
    /// More content than `--max-unpacked-bytes`.
    #[error(
        "unpacks to more than --max-unpacked-bytes {max}; raise --max-unpacked-bytes if that is expected"
    )]
    TooLarge {
        /// The bound.
        max: u64,
    },
    /// Writing on would eat into `--min-free`.
    #[error(transparent)]
    Space(#[from] crate::puller::space::Error),
    /// The version directory could not be opened.
    #[error("failed to open the version directory {path:?}")]
    Root {
        /// The directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// An entry could not be written (disk full, permissions, a corrupt archive).
    #[error("failed to unpack {noun} {entry:?}")]
    Entry {
        /// "archive entry" or "tree entry".
        noun: &'static str,
        /// The entry's path.
        entry: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// An entry's content could not be read (a truncated or corrupt archive).
    #[error("failed to read the content of {noun} {entry:?}")]
    Content {
        /// "archive entry" or "tree entry".
        noun: &'static str,
        /// The entry's path.
        entry: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// The noun of archive entries in errors.
const NOUN: &str = "archive entry";

/// Tar headers of one entry (GNU long names, PAX records, sparse maps), which the tar crate
/// reads into memory whole: more than this is refused rather than allocated.
pub const TAR_META_MAX: u64 = 1 << 20;

/// Unpacks `archive` into the existing, empty directory `dest`; the bytes of content written.
pub fn unpack(archive: &Path, kind: Kind, dest: &Path, limits: &Limits) -> Result<u64, Error> {
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
    let mut tree = Tree::open(dest, NOUN, limits)?;
    if kind == Kind::Zip {
        unpack_zip(file, archive, &mut tree)?;
    } else if kind == Kind::TarGz {
        // Several gzip members one after the other are one stream, as for gzip and tar.
        unpack_tar(
            flate2::read::MultiGzDecoder::new(&mut file),
            archive,
            &mut tree,
        )?;
    } else {
        unpack_tar(&mut file, archive, &mut tree)?;
    }
    tree.finish()
}

/// The tar stream, counting what the tar crate reads for itself (headers, long names, PAX
/// records) while `meta_left` is set: it holds those in memory whole.
struct Metered<R> {
    inner: R,
    /// Bytes of headers still allowed for the entry being parsed; `None` while its data is read.
    meta_left: Rc<Cell<Option<u64>>>,
    /// Set when the headers went over, to say so instead of an I/O error.
    over: Rc<Cell<bool>>,
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(left) = self.meta_left.get() {
            match left.checked_sub(n as u64) {
                Some(left) => self.meta_left.set(Some(left)),
                None => {
                    self.over.set(true);
                    return Err(std::io::Error::other("tar headers too large"));
                }
            }
        }
        Ok(n)
    }
}

fn unpack_tar<R: Read>(reader: R, path: &Path, tree: &mut Tree) -> Result<(), Error> {
    let meta_left = Rc::new(Cell::new(Some(TAR_META_MAX)));
    let over = Rc::new(Cell::new(false));
    let mut archive = tar::Archive::new(Metered {
        inner: reader,
        meta_left: meta_left.clone(),
        over: over.clone(),
    });
    let read_err = |source| Error::Read {
        path: path.to_owned(),
        source,
    };
    let mut entries = archive.entries().map_err(read_err)?;
    loop {
        meta_left.set(Some(TAR_META_MAX));
        let entry = match entries.next() {
            None => return Ok(()),
            Some(entry) => entry,
        };
        meta_left.set(None);
        let mut entry = entry.map_err(|source| {
            if over.get() {
                Error::UnsafeArchive {
                    format: "tar",
                    path: path.to_owned(),
                    reason: "the headers of one entry (long names, PAX records) are over 1 MiB",
                }
            } else {
                read_err(source)
            }
        })?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let refuse = |reason| Error::Unsafe {
            noun: NOUN,
            entry: name.clone(),
            reason,
        };
        let entry_path = entry.path().map_err(read_err)?.into_owned();
        let header = entry.header();
        let (mode, mtime, kind) = (
            header.mode().unwrap_or(0o644),
            header.mtime().ok(),
            header.entry_type(),
        );
        match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                tree.file(&name, &entry_path, mode, mtime, &mut entry)?;
            }
            EntryType::Directory => tree.dir(&name, &entry_path, mode)?,
            EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(read_err)?
                    .ok_or_else(|| refuse("symlink without a target"))?;
                tree.symlink(&name, &entry_path, &target)?;
            }
            EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(read_err)?
                    .ok_or_else(|| refuse("hard link without a target"))?;
                tree.hard_link(&name, &entry_path, &target)?;
            }
            EntryType::Char | EntryType::Block => return Err(refuse("device file")),
            EntryType::Fifo => return Err(refuse("FIFO")),
            EntryType::XGlobalHeader => {}
            _ => return Err(refuse("unsupported entry type")),
        }
        // Whatever the entry carries beyond what was written is read here, and counted.
        tree.skip(&name, &mut entry)?;
    }
}

/// Unpacks a zip archive with the same rules as a tar: symlinks (unix mode) must stay inside,
/// devices and FIFOs are refused. The whole archive is refused before anything is written when
/// its entries overlap (a zip bomb: many names for one compressed stream), when it has too
/// many entries, or when the sizes it declares are over the bounds.
fn unpack_zip(file: BufReader<File>, path: &Path, tree: &mut Tree) -> Result<(), Error> {
    let zip_err = |source| Error::Zip {
        path: path.to_owned(),
        source,
    };
    let refuse_zip = |reason| Error::UnsafeArchive {
        format: "zip",
        path: path.to_owned(),
        reason,
    };
    let mut archive = zip::ZipArchive::new(file).map_err(zip_err)?;
    tree.expect_entries(archive.len() as u64)?;
    if archive.has_overlapping_entries().map_err(zip_err)? {
        return Err(refuse_zip(
            "entries overlap (a zip bomb: many names for the same data)",
        ));
    }
    if let Some(declared) = archive.decompressed_size() {
        tree.expect(u64::try_from(declared).unwrap_or(u64::MAX))?;
    }
    let options = zip::ZipReadOptions::new().enforce_header_consistency(true);
    for index in 0..archive.len() {
        let mut entry = archive
            .by_index_with_options(index, options.clone())
            .map_err(zip_err)?;
        let raw = entry.name_raw().to_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let refuse = |reason| Error::Unsafe {
            noun: NOUN,
            entry: name.clone(),
            reason,
        };
        if raw.contains(&b'\\') {
            return Err(refuse("backslash in the path"));
        }
        let entry_path = Path::new(std::ffi::OsStr::from_bytes(&raw));
        let mode = entry.unix_mode();
        match mode.unwrap_or(0) & 0o170000 {
            0 | 0o100000 | 0o040000 | 0o120000 => {}
            0o020000 | 0o060000 => return Err(refuse("device file")),
            0o010000 => return Err(refuse("FIFO")),
            _ => return Err(refuse("unsupported entry type")),
        }
        if entry.is_dir() {
            tree.dir(&name, entry_path, mode.unwrap_or(0o755))?;
        } else if entry.is_symlink() {
            let mut target = Vec::new();
            (&mut entry)
                .take(4096)
                .read_to_end(&mut target)
                .map_err(|source| Error::Content {
                    noun: NOUN,
                    entry: name.clone(),
                    source,
                })?;
            tree.symlink(
                &name,
                entry_path,
                Path::new(std::ffi::OsStr::from_bytes(&target)),
            )?;
        } else {
            // Without unix permission bits (a zip made on Windows), the usual 0644.
            let mode = match mode {
                Some(mode) if mode & 0o777 != 0 => mode,
                _ => 0o644,
            };
            tree.file(&name, entry_path, mode, None, &mut entry)?;
        }
        tree.skip(&name, &mut entry)?;
    }
    Ok(())
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
