//! Adding blobs and layers to the store: locks, temporary names, checks, fsync, rename.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::{Store, StoreError, io_err};
use crate::digest::Digest;
use crate::unpack::unpack;

/// A held flock(2); released when dropped, or when the process dies.
#[derive(Debug)]
pub(crate) struct Lock {
    _file: File,
}

impl Lock {
    /// Waits for `path` exclusively.
    pub(crate) fn exclusive(path: &Path) -> Result<Lock, StoreError> {
        let file = open_lock_file(path)?;
        file.lock().map_err(io_err("lock", path))?;
        Ok(Lock { _file: file })
    }

    /// Waits for `path`, sharing it with other shared holders.
    pub(crate) fn shared(path: &Path) -> Result<Lock, StoreError> {
        let file = open_lock_file(path)?;
        file.lock_shared().map_err(io_err("lock", path))?;
        Ok(Lock { _file: file })
    }
}

fn open_lock_file(path: &Path) -> Result<File, StoreError> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io_err("open", path))
}

/// A name under `tmp/` no other process uses: `<prefix>.<pid>.<random>`.
fn temp_name(store: &Store, prefix: &str) -> PathBuf {
    store.tmp_dir().join(format!(
        "{prefix}.{}.{:016x}",
        std::process::id(),
        fastrand::u64(..)
    ))
}

/// Writes a small file whole: to a temporary name in the store's `tmp/` (next to `path`), fsync,
/// rename, fsync the directory.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let temp = dir.join("tmp").join(format!(
        "{name}.{}.{:016x}",
        std::process::id(),
        fastrand::u64(..)
    ));
    let result = (|| {
        let mut file = File::create(&temp).map_err(io_err("create", &temp))?;
        file.write_all(bytes).map_err(io_err("write", &temp))?;
        file.sync_all().map_err(io_err("fsync", &temp))?;
        fs::rename(&temp, path).map_err(io_err("rename into place", path))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync", dir))
}

/// Removes a file or a whole tree (std's `remove_dir_all` does not follow symlinks).
pub(crate) fn remove_any(path: &Path) -> Result<(), StoreError> {
    let result = match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    result.map_err(io_err("remove", path))
}

/// Adds content to the store. Holds the store lock shared for its life, so garbage collection
/// does not remove what it has written before an image names it.
#[derive(Debug)]
pub(crate) struct Writer {
    store: Store,
    _shared: Lock,
}

/// The right to write one blob or layer; whatever `tmp/` holds for it is stale.
#[derive(Debug)]
pub(crate) struct ItemLock {
    _lock: Lock,
}

/// A blob being written to its temporary name.
#[derive(Debug)]
pub(crate) struct BlobTemp {
    path: PathBuf,
    file: File,
    hasher: Sha256,
    size: u64,
}

impl BlobTemp {
    pub(crate) fn write(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
        self.file
            .write_all(bytes)
            .map_err(io_err("write", &self.path))
    }

    pub(crate) fn size(&self) -> u64 {
        self.size
    }
}

impl Drop for BlobTemp {
    fn drop(&mut self) {
        // Committed temps were renamed away; this removes an abandoned one.
        let _ = fs::remove_file(&self.path);
    }
}

impl Writer {
    pub(crate) fn new(store: Store) -> Result<Writer, StoreError> {
        let shared = Lock::shared(&store.locks_dir().join("store.lock"))?;
        Ok(Writer {
            store,
            _shared: shared,
        })
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    pub(crate) fn has_blob(&self, digest: &Digest) -> bool {
        self.store.blob_path(digest).is_file()
    }

    /// Waits for the right to write a blob; `None` when, once granted, the blob is there (another
    /// process wrote it meanwhile). Removes what an earlier, killed writer left for it.
    pub(crate) fn lock_blob(&self, digest: &Digest) -> Result<Option<ItemLock>, StoreError> {
        self.lock_item("blob", digest, |d| self.has_blob(d))
    }

    fn lock_item(
        &self,
        kind: &str,
        digest: &Digest,
        present: impl Fn(&Digest) -> bool,
    ) -> Result<Option<ItemLock>, StoreError> {
        if present(digest) {
            return Ok(None);
        }
        let lock = Lock::exclusive(
            &self
                .store
                .locks_dir()
                .join(format!("{kind}-{}.lock", digest.hex())),
        )?;
        if present(digest) {
            return Ok(None);
        }
        let stale = format!("{kind}-{}.", digest.hex());
        let tmp = self.store.tmp_dir();
        for entry in fs::read_dir(&tmp).map_err(io_err("list", &tmp))? {
            let entry = entry.map_err(io_err("list", &tmp))?;
            if entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(&stale))
            {
                tracing::info!(path = ?entry.path(), "removing what an interrupted write left");
                remove_any(&entry.path())?;
            }
        }
        Ok(Some(ItemLock { _lock: lock }))
    }

    /// A temporary file for the blob `digest`, whose lock the caller holds.
    pub(crate) fn blob_temp(
        &self,
        digest: &Digest,
        _lock: &ItemLock,
    ) -> Result<BlobTemp, StoreError> {
        let path = temp_name(&self.store, &format!("blob-{}", digest.hex()));
        let file = File::create(&path).map_err(io_err("create", &path))?;
        Ok(BlobTemp {
            path,
            file,
            hasher: Sha256::new(),
            size: 0,
        })
    }

    /// Checks the blob's digest (and size, when known), fsyncs it and gives it its name.
    pub(crate) fn commit_blob(
        &self,
        digest: &Digest,
        mut temp: BlobTemp,
        expected_size: Option<u64>,
    ) -> Result<(), StoreError> {
        let actual = Digest::from_hasher(std::mem::take(&mut temp.hasher));
        if &actual != digest || expected_size.is_some_and(|s| s != temp.size) {
            return Err(StoreError::DigestMismatch {
                what: "blob",
                expected: digest.clone(),
                actual,
                size: temp.size,
            });
        }
        temp.file.sync_all().map_err(io_err("fsync", &temp.path))?;
        let path = self.store.blob_path(digest);
        fs::rename(&temp.path, &path).map_err(io_err("rename into place", &path))?;
        sync_dir(&self.store.blobs_dir())
    }

    /// Adds a blob read whole from `reader`; with `expected`, checked against it, else named by
    /// what it hashes to. Returns its digest and size.
    pub(crate) fn write_blob_from(
        &self,
        expected: Option<&Digest>,
        mut reader: impl Read,
    ) -> Result<(Digest, u64), StoreError> {
        if let Some(digest) = expected {
            let Some(lock) = self.lock_blob(digest)? else {
                let size = fs::metadata(self.store.blob_path(digest))
                    .map(|m| m.len())
                    .unwrap_or(0);
                return Ok((digest.clone(), size));
            };
            let mut temp = self.blob_temp(digest, &lock)?;
            copy_into(&mut reader, &mut temp)?;
            let size = temp.size();
            self.commit_blob(digest, temp, None)?;
            return Ok((digest.clone(), size));
        }
        // Unknown digest: hash into an anonymous temp, then lock by the digest found.
        let path = temp_name(&self.store, "anon");
        let mut temp = BlobTemp {
            file: File::create(&path).map_err(io_err("create", &path))?,
            path,
            hasher: Sha256::new(),
            size: 0,
        };
        copy_into(&mut reader, &mut temp)?;
        let digest = Digest::from_hasher(temp.hasher.clone());
        let size = temp.size();
        if let Some(_lock) = self.lock_blob(&digest)? {
            self.commit_blob(&digest, temp, None)?;
        }
        Ok((digest, size))
    }

    /// Adds a small blob (a manifest, a config) and returns its digest.
    pub(crate) fn write_blob_bytes(&self, bytes: &[u8]) -> Result<Digest, StoreError> {
        let digest = Digest::of(bytes);
        if let Some(lock) = self.lock_blob(&digest)? {
            let mut temp = self.blob_temp(&digest, &lock)?;
            temp.write(bytes)?;
            self.commit_blob(&digest, temp, Some(bytes.len() as u64))?;
        }
        Ok(digest)
    }

    /// Whether the layer of this diff_id is unpacked.
    pub(crate) fn has_layer(&self, diff_id: &Digest) -> bool {
        self.store.layer_path(diff_id).is_dir()
    }

    /// Unpacks the blob `blob` (in the store) into the layer directory of `diff_id`, unless it is
    /// there: into a temporary directory, checked against `diff_id`, synced, then renamed.
    pub(crate) fn ensure_layer(
        &self,
        blob: &Digest,
        media_type: Option<&str>,
        diff_id: &Digest,
    ) -> Result<(), StoreError> {
        let Some(_lock) = self.lock_item("layer", diff_id, |d| self.has_layer(d))? else {
            return Ok(());
        };
        let temp = temp_name(&self.store, &format!("layer-{}", diff_id.hex()));
        let result = self.unpack_into(blob, media_type, diff_id, &temp);
        if result.is_err()
            && let Err(cleanup) = remove_any(&temp)
        {
            tracing::warn!(error = %cleanup, path = ?temp, "failed to remove a failed unpack");
        }
        result
    }

    fn unpack_into(
        &self,
        blob: &Digest,
        media_type: Option<&str>,
        diff_id: &Digest,
        temp: &Path,
    ) -> Result<(), StoreError> {
        fs::create_dir(temp).map_err(io_err("create", temp))?;
        let blob_path = self.store.blob_path(blob);
        let file = File::open(&blob_path).map_err(io_err("open", &blob_path))?;
        let unpacked = unpack(file, media_type, temp).map_err(|source| StoreError::Unpack {
            layer: blob.clone(),
            source,
        })?;
        if &unpacked.diff_id != diff_id {
            return Err(StoreError::DiffIdMismatch {
                layer: blob.clone(),
                expected: diff_id.clone(),
                actual: unpacked.diff_id,
            });
        }
        // One syncfs for the whole tree instead of an fsync per file: the layer is durable
        // before its name says it is complete.
        let dir = File::open(temp).map_err(io_err("open", temp))?;
        nix::unistd::syncfs(&dir).map_err(|e| StoreError::Io {
            op: "syncfs",
            path: temp.to_owned(),
            source: e.into(),
        })?;
        let path = self.store.layer_path(diff_id);
        fs::rename(temp, &path).map_err(io_err("rename into place", &path))?;
        sync_dir(&self.store.layers_dir())
    }

    /// A fresh directory under `tmp/` for a load to extract an archive into; removed by the
    /// caller, or by the next garbage collection if the process dies.
    pub(crate) fn scratch_dir(&self) -> Result<PathBuf, StoreError> {
        let path = temp_name(&self.store, "load");
        fs::create_dir(&path).map_err(io_err("create", &path))?;
        Ok(path)
    }
}

fn copy_into(reader: &mut impl Read, temp: &mut BlobTemp) -> Result<(), StoreError> {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(StoreError::Io {
                    op: "read",
                    path: temp.path.clone(),
                    source: e,
                });
            }
        };
        temp.write(&buf[..n])?;
    }
}
