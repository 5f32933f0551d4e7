//! Publishing, as git-sync does: each version is built in `DEST/.versions/.staging-<id>/`,
//! renamed to `DEST/.versions/<id>/` once complete, and made visible by pointing the symlink
//! `DEST/<link>` at it with a relative target: a temporary symlink renamed over the old one, so
//! a reader resolves either the old tree or the new one. Versions beyond `--keep` old ones are
//! removed. Any failure leaves the published version as it was and removes the staging tree.
//!
//! With `--mode copy` the version is staged the same way, then moved into the directory
//! `DEST/<link>` one entry at a time (a rename each, so every file is whole), entries the new
//! version lacks are removed, and the id is recorded in `DEST/.versions/.copied`.
//!
//! A version id is `<unix millis>-<first 16 hex digits of the content's sha256>`, or for a git
//! source `<unix millis>-<the commit's 40 hex digits>`: ids sort by age and tell, after a
//! restart, which content is published.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::{debug, warn};

use crate::puller::fetch::Download;
use crate::puller::unpack;
use crate::puller::{Config, Limits, Mode};

/// Why a publish failed; the published version is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The archive was refused or could not be unpacked.
    #[error("failed to unpack the download")]
    Unpack(#[from] unpack::Error),
    /// A filesystem step failed (disk full, permission denied, ...).
    #[error("failed to {op} {path:?}")]
    Io {
        /// The step.
        op: &'static str,
        /// Where.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The blocking publish task panicked or was cancelled.
    #[error("the publish task did not finish")]
    Join(#[source] tokio::task::JoinError),
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_owned();
    move |source| Error::Io { op, path, source }
}

/// The destination directory and what is published in it.
#[derive(Debug)]
pub struct Publisher {
    dest: PathBuf,
    versions: PathBuf,
    tmp: PathBuf,
    link: String,
    file_name: String,
    keep: usize,
    mode: Mode,
    limits: Limits,
    /// The published version's id, read back from the link at startup, so identical content
    /// is not published again after a restart either.
    current: Option<String>,
}

impl Publisher {
    /// Creates `DEST`, `DEST/.versions` and `DEST/.tmp`, and removes leftovers of an
    /// interrupted run (temporary downloads, staging trees).
    pub fn open(config: &Config) -> std::io::Result<Self> {
        let dest = config.dest.clone();
        let versions = dest.join(".versions");
        let tmp = dest.join(".tmp");
        std::fs::create_dir_all(&versions)?;
        std::fs::create_dir_all(&tmp)?;
        let current = match config.mode {
            Mode::Symlink => std::fs::read_link(dest.join(&config.link))
                .ok()
                .and_then(|target| Some(target.file_name()?.to_str()?.to_owned())),
            Mode::Copy => std::fs::read_to_string(versions.join(".copied"))
                .ok()
                .map(|id| id.trim().to_owned()),
        };
        let publisher = Self {
            current,
            mode: config.mode,
            limits: config.limits,
            dest,
            versions,
            tmp,
            link: config.link.clone(),
            file_name: config.file_name.clone(),
            keep: config.keep,
        };
        publisher.cleanup_tmp();
        for entry in std::fs::read_dir(&publisher.versions)?.flatten() {
            if entry.file_name().to_string_lossy().starts_with(".staging-") {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        Ok(publisher)
    }

    /// Where downloads go: on the same filesystem as the versions, so a rename places them.
    pub fn tmp_dir(&self) -> PathBuf {
        self.tmp.clone()
    }

    /// Removes every temporary download or checkout (after a failed or cut-off sync).
    pub fn cleanup_tmp(&self) {
        if let Ok(entries) = std::fs::read_dir(&self.tmp) {
            for entry in entries.flatten() {
                let _ = match entry.file_type() {
                    Ok(kind) if kind.is_dir() => std::fs::remove_dir_all(entry.path()),
                    _ => std::fs::remove_file(entry.path()),
                };
            }
        }
    }

    /// Whether content with this digest (a sha256, or a git commit) is the published version.
    pub fn is_current(&self, digest: &str) -> bool {
        self.current_digest()
            .is_some_and(|prefix| digest.starts_with(prefix))
    }

    /// The digest part of the published version's id: 16 hex digits of a sha256, or the 40 of
    /// a git commit.
    pub fn current_digest(&self) -> Option<&str> {
        let (_, digest) = self.current.as_deref()?.split_once('-')?;
        (digest.len() >= 16).then_some(digest)
    }

    /// The directory of version `id` (with `--mode copy`, the updated directory).
    pub fn version_path(&self, id: &str) -> PathBuf {
        match self.mode {
            Mode::Symlink => self.versions.join(id),
            Mode::Copy => self.dest.join(&self.link),
        }
    }

    /// A new version id for content with this digest.
    fn new_id(&self, digest: &str) -> String {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        let id = format!("{millis:013}-{digest}");
        if self.current.as_deref() == Some(id.as_str()) || self.versions.join(&id).exists() {
            return format!("{:013}-{digest}", millis + 1);
        }
        id
    }

    fn job(&self, id: &str) -> Job {
        Job {
            dest: self.dest.clone(),
            versions: self.versions.clone(),
            link: self.link.clone(),
            file_name: self.file_name.clone(),
            keep: self.keep,
            mode: self.mode,
            limits: self.limits,
            id: id.to_owned(),
        }
    }

    /// Publishes the directory `tree` (built under [`Self::tmp_dir`], moved by a rename) as a
    /// new version of git commit `commit`, and prunes old ones.
    pub async fn publish_tree(&mut self, tree: PathBuf, commit: &str) -> Result<String, Error> {
        let id = self.new_id(commit);
        let job = self.job(&id);
        let result = tokio::task::spawn_blocking(move || job.run(&tree, Content::Tree))
            .await
            .map_err(Error::Join)
            .and_then(|r| r);
        // A failed rename leaves the checkout in the temporary directory, removed by the caller.
        result?;
        self.current = Some(id.clone());
        Ok(id)
    }

    /// Places (or unpacks) `download` as a new version, publishes it and prunes old ones.
    pub async fn publish(
        &mut self,
        download: Download,
        archive: Option<unpack::Kind>,
    ) -> Result<String, Error> {
        let id = self.new_id(&download.sha256[..16]);
        let job = self.job(&id);
        let download_path = download.path.clone();
        let content = match archive {
            Some(kind) => Content::Archive(kind),
            None => Content::File,
        };
        let result = tokio::task::spawn_blocking(move || job.run(&download.path, content))
            .await
            .map_err(Error::Join)
            .and_then(|r| r);
        let _ = std::fs::remove_file(&download_path);
        result?;
        self.current = Some(id.clone());
        Ok(id)
    }
}

/// What a publish starts from.
#[derive(Debug, Clone, Copy)]
enum Content {
    /// A download placed as one file.
    File,
    /// A download unpacked.
    Archive(unpack::Kind),
    /// A directory already built (a git checkout), renamed into place.
    Tree,
}

/// The blocking part of a publish.
struct Job {
    dest: PathBuf,
    versions: PathBuf,
    link: String,
    file_name: String,
    keep: usize,
    mode: Mode,
    limits: Limits,
    id: String,
}

impl Job {
    fn run(&self, download: &Path, content: Content) -> Result<(), Error> {
        let staging = self.versions.join(format!(".staging-{}", self.id));
        let result = self.build(&staging, download, content);
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&staging);
            return result;
        }
        if self.mode == Mode::Copy {
            let result = self.copy_in(&staging);
            let _ = std::fs::remove_dir_all(&staging);
            return result;
        }
        let final_dir = self.versions.join(&self.id);
        std::fs::rename(&staging, &final_dir).map_err(|err| {
            let _ = std::fs::remove_dir_all(&staging);
            io("rename the staged version to", &final_dir)(err)
        })?;
        if let Err(err) = self.swap_link() {
            let _ = std::fs::remove_dir_all(&final_dir);
            return Err(err);
        }
        self.prune();
        Ok(())
    }

    fn build(&self, staging: &Path, download: &Path, content: Content) -> Result<(), Error> {
        if let Content::Tree = content {
            std::fs::rename(download, staging)
                .map_err(io("rename the checkout to the staging directory", staging))?;
        } else {
            std::fs::create_dir(staging).map_err(io("create the staging directory", staging))?;
            // The version's root gets its mode as any directory does, whatever the umask of
            // the process (an archive's `./` entry may set it again).
            use std::os::unix::fs::PermissionsExt;
            let mode = (0o755 & !self.limits.umask) | 0o700;
            std::fs::set_permissions(staging, std::fs::Permissions::from_mode(mode))
                .map_err(io("set the mode of", staging))?;
        }
        match content {
            Content::Tree => {}
            Content::Archive(kind) => {
                unpack::unpack(download, kind, staging, &self.limits)?;
            }
            Content::File => {
                let target = staging.join(&self.file_name);
                std::fs::rename(download, &target).map_err(io("place the download at", &target))?;
                use std::os::unix::fs::PermissionsExt;
                let mode = 0o644 & !self.limits.umask;
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))
                    .map_err(io("set the mode of", &target))?;
            }
        }
        // The tree is durable before any reader can reach it.
        if let Ok(dir) = std::fs::File::open(staging) {
            let _ = dir.sync_all();
        }
        Ok(())
    }

    /// Points `DEST/<link>` at the new version: a temporary symlink renamed over the old one.
    fn swap_link(&self) -> Result<(), Error> {
        let target = Path::new(".versions").join(&self.id);
        let tmp_link = self
            .dest
            .join(format!(".{}.tmp-{:016x}", self.link, fastrand::u64(..)));
        std::os::unix::fs::symlink(&target, &tmp_link)
            .map_err(io("create the temporary symlink", &tmp_link))?;
        let link = self.dest.join(&self.link);
        std::fs::rename(&tmp_link, &link).map_err(|err| {
            let _ = std::fs::remove_file(&tmp_link);
            io("rename the temporary symlink over", &link)(err)
        })?;
        if let Ok(dir) = std::fs::File::open(&self.dest) {
            let _ = dir.sync_all();
        }
        Ok(())
    }

    /// `--mode copy`: moves the staged tree into `DEST/<link>` entry by entry, removes what the
    /// new version lacks, records the id.
    fn copy_in(&self, staging: &Path) -> Result<(), Error> {
        let target = self.dest.join(&self.link);
        // A symlink left by `--mode symlink` is replaced by a directory.
        if std::fs::symlink_metadata(&target).is_ok_and(|m| !m.is_dir()) {
            std::fs::remove_file(&target).map_err(io("remove the old link", &target))?;
        }
        std::fs::create_dir_all(&target).map_err(io("create", &target))?;
        move_tree(staging, &target)?;
        let record = self.versions.join(".copied");
        let tmp = self.versions.join(".copied.tmp");
        std::fs::write(&tmp, &self.id).map_err(io("write", &tmp))?;
        std::fs::rename(&tmp, &record).map_err(io("rename the version record to", &record))?;
        Ok(())
    }

    /// Removes versions older than the newest `keep` old ones; never the published one.
    fn prune(&self) {
        let Ok(entries) = std::fs::read_dir(&self.versions) else {
            return;
        };
        let mut ids: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| !name.starts_with('.') && *name != self.id)
            .collect();
        ids.sort();
        let excess = ids.len().saturating_sub(self.keep);
        for old in &ids[..excess] {
            let path = self.versions.join(old);
            match std::fs::remove_dir_all(&path) {
                Ok(()) => debug!(version = %old, "removed old version"),
                Err(err) => warn!(?err, version = %old, "failed to remove an old version"),
            }
        }
    }
}

/// Moves every entry of `from` into `to` (a rename each, replacing files in place), then removes
/// the entries of `to` that `from` did not have.
fn move_tree(from: &Path, to: &Path) -> Result<(), Error> {
    let mut names = std::collections::HashSet::new();
    for entry in std::fs::read_dir(from).map_err(io("read", from))? {
        let entry = entry.map_err(io("read", from))?;
        let name = entry.file_name();
        let (src, dst) = (entry.path(), to.join(&name));
        names.insert(name);
        let src_is_dir = entry.file_type().map_err(io("stat", &src))?.is_dir();
        let dst_meta = std::fs::symlink_metadata(&dst).ok();
        match (src_is_dir, dst_meta.map(|m| m.is_dir())) {
            (true, Some(true)) => move_tree(&src, &dst)?,
            (true, Some(false)) => {
                std::fs::remove_file(&dst).map_err(io("remove", &dst))?;
                std::fs::rename(&src, &dst).map_err(io("rename into", &dst))?;
            }
            (false, Some(true)) => {
                std::fs::remove_dir_all(&dst).map_err(io("remove", &dst))?;
                std::fs::rename(&src, &dst).map_err(io("rename into", &dst))?;
            }
            (_, _) => std::fs::rename(&src, &dst).map_err(io("rename into", &dst))?,
        }
    }
    for entry in std::fs::read_dir(to).map_err(io("read", to))? {
        let entry = entry.map_err(io("read", to))?;
        if names.contains(&entry.file_name()) {
            continue;
        }
        let path = entry.path();
        let is_dir = entry.file_type().map_err(io("stat", &path))?.is_dir();
        if is_dir {
            std::fs::remove_dir_all(&path).map_err(io("remove", &path))?;
        } else {
            std::fs::remove_file(&path).map_err(io("remove", &path))?;
        }
    }
    Ok(())
}
