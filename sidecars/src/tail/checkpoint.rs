//! The state file: one entry per followed file (device, inode, fingerprint, path, offset),
//! written atomically (temp file, fsync, rename, fsync of the directory).
//!
//! Offsets here only ever advance after the sink accepted the records before them, so a restart
//! from this file re-ships at most what was in flight, and loses nothing.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Why the state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading failed.
    #[error("failed to read {path:?}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The content is not a podkit tail state file.
    #[error("failed to parse {path:?}; move it away to start without checkpoints")]
    Parse {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// Writing failed.
    #[error("failed to write {path:?}")]
    Write {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// How many leading bytes identify a file's content, besides its device and inode (inodes are
/// reused after a deletion; the first bytes of two log files almost never are).
pub(crate) const FINGERPRINT_MAX: u64 = 256;

/// A checksum (FNV-1a, stable across versions) of a file's first `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub(crate) struct Fingerprint {
    pub(crate) len: u64,
    pub(crate) hash: u64,
}

impl Fingerprint {
    /// Fingerprint of `data` (the first bytes of a file).
    pub(crate) fn of(data: &[u8]) -> Self {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for b in data {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        Fingerprint {
            len: data.len() as u64,
            hash,
        }
    }

    /// Fingerprints up to `len` first bytes of `file` with positioned reads (fewer if the file
    /// is shorter).
    pub(crate) fn read(file: &File, len: u64) -> std::io::Result<Self> {
        crate::tail::reader::read_head(file, len).map(|head| Fingerprint::of(&head))
    }
}

/// One followed file in the state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    /// Where it was last seen (after a rename the reader looks next to it).
    pub(crate) path: PathBuf,
    pub(crate) dev: u64,
    pub(crate) ino: u64,
    pub(crate) fingerprint: Fingerprint,
    /// Bytes before this were accepted by the sink.
    pub(crate) offset: u64,
    /// Read to its end and closed (ms since the epoch): kept a while so that a restart does not
    /// read a rotated file again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) closed_at_ms: Option<u64>,
}

/// How long closed files stay in the state file.
const CLOSED_MEMORY_MS: u64 = 10 * 60 * 1000;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[derive(Debug, Serialize, Deserialize)]
struct StateFile {
    version: u32,
    /// When it was written (ms since the epoch): a rotated file modified after this may hold
    /// lines that were never checkpointed.
    #[serde(default)]
    saved_at_ms: Option<u64>,
    files: Vec<Entry>,
}

/// What a state file holds.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) entries: Vec<Entry>,
    pub(crate) saved_at: Option<std::time::SystemTime>,
}

/// Loads `path`; a missing file means no checkpoints yet.
pub(crate) fn load(path: &Path) -> Result<State, Error> {
    let data = match std::fs::read(path) {
        Ok(data) => data,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
        Err(source) => {
            return Err(Error::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    let state: StateFile = serde_json::from_slice(&data).map_err(|source| Error::Parse {
        path: path.to_owned(),
        source,
    })?;
    Ok(State {
        entries: state.files,
        saved_at: state
            .saved_at_ms
            .map(|ms| std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)),
    })
}

/// Writes `entries` to `path` atomically.
pub(crate) fn save(path: &Path, entries: Vec<Entry>) -> Result<(), Error> {
    let write_err = |source| Error::Write {
        path: path.to_owned(),
        source,
    };
    let saved_at_ms = now_ms();
    let state = StateFile {
        version: 1,
        saved_at_ms: Some(saved_at_ms),
        files: entries,
    };
    let data = serde_json::to_vec_pretty(&state).map_err(|err| write_err(err.into()))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = File::create(&tmp).map_err(write_err)?;
    file.write_all(&data).map_err(write_err)?;
    file.sync_all().map_err(write_err)?;
    std::fs::rename(&tmp, path).map_err(write_err)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(write_err)?;
    }
    Ok(())
}

/// The sink side's view: accepted offsets per stream (one stream per file content; a truncated
/// file becomes a new stream).
#[derive(Debug)]
pub(crate) struct Checkpoints {
    path: Option<PathBuf>,
    entries: HashMap<u64, Entry>,
    dirty: bool,
}

impl Checkpoints {
    pub(crate) fn new(path: Option<PathBuf>) -> Self {
        Checkpoints {
            path,
            entries: HashMap::new(),
            dirty: false,
        }
    }

    /// A stream starts (or its fingerprint/path changed): keep the larger offset.
    pub(crate) fn open(&mut self, id: u64, entry: Entry) {
        match self.entries.get_mut(&id) {
            Some(old) => {
                old.path = entry.path;
                old.fingerprint = entry.fingerprint;
                old.offset = old.offset.max(entry.offset);
            }
            None => {
                self.entries.insert(id, entry);
            }
        }
        self.dirty = true;
    }

    /// Records up to `offset` of stream `id` were accepted.
    pub(crate) fn advance(&mut self, id: u64, offset: u64) {
        if let Some(entry) = self.entries.get_mut(&id)
            && offset > entry.offset
        {
            entry.offset = offset;
            self.dirty = true;
        }
    }

    /// The stream was read to its end and closed: remembered for a while, then dropped.
    pub(crate) fn close(&mut self, id: u64) {
        if let Some(entry) = self.entries.get_mut(&id) {
            entry.closed_at_ms = Some(now_ms());
            self.dirty = true;
        }
        let now = now_ms();
        self.entries.retain(|_, e| {
            e.closed_at_ms
                .is_none_or(|at| now.saturating_sub(at) < CLOSED_MEMORY_MS)
        });
    }

    /// Writes the state file if anything changed.
    pub(crate) fn save(&mut self) -> Result<(), Error> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        if !self.dirty {
            return Ok(());
        }
        let mut entries: Vec<Entry> = self.entries.values().cloned().collect();
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        save(path, entries)?;
        self.dirty = false;
        Ok(())
    }

    /// The `--state` path, for error messages.
    pub(crate) fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_then_load_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        assert!(
            load(&path)
                .expect("missing file is empty")
                .entries
                .is_empty()
        );
        let entry = Entry {
            path: "/x/app.log".into(),
            dev: 1,
            ino: 2,
            fingerprint: Fingerprint::of(b"hello"),
            offset: 42,
            closed_at_ms: None,
        };
        save(&path, vec![entry.clone()]).expect("save");
        let state = load(&path).expect("load");
        assert_eq!(state.entries, vec![entry]);
        assert!(state.saved_at.is_some());
    }

    #[test]
    fn garbage_state_names_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        std::fs::write(&path, b"not json").expect("write");
        let err = load(&path).expect_err("garbage");
        assert!(err.to_string().contains("state.json"), "{err}");
    }
}
