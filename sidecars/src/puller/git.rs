//! `--git`: one sync of a git repository with gix, on a blocking thread. A bare repository in
//! `DEST/.repo/` keeps what was fetched; each sync lists the remote's refs, and when `--ref`
//! names the published commit it stops there (the `304` of git: no pack, nothing written).
//! Otherwise it fetches that one ref (`--depth 1` by default) and writes the commit's tree
//! (without `.git`) into a directory under `DEST/.tmp/`, which the publisher renames into place.
//!
//! The tree is written by hand rather than by a gix checkout, which would pull in gix's
//! worktree, status and index machinery for what is a walk over one tree: directories, files
//! (mode 0644, or 0755 when executable), symlinks (refused when they leave the version, as in
//! archives), and an empty directory for a submodule (its commit is not fetched). No
//! `.gitattributes` filter or LFS smudging is applied.
//!
//! Transports: `https://` and `http://` through gix's reqwest backend configured with the
//! puller's own rustls configuration (`--ca-file`, `--client-cert`, ring: no second TLS stack),
//! `ssh://` and `user@host:path` through the `ssh` program, `file://` and paths through the
//! `git-upload-pack` program, `git://` over TCP. Credentials are never prompted for: use
//! `--header` or `--bearer-token-file` for https, keys or an agent for ssh.

use std::num::NonZeroU32;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use gix::bstr::ByteSlice;
use gix::remote::Direction;
use tracing::{debug, warn};

use crate::client_tls::ClientTls;
use crate::puller::{Config, Limits, Source, unpack};

/// A gix failure, kept with its whole chain of causes.
type GixError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a git sync failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The local repository could not be created or opened.
    #[error("failed to open the repository cache {path:?}")]
    Cache {
        /// `DEST/.repo`.
        path: PathBuf,
        /// Cause.
        #[source]
        source: GixError,
    },
    /// The remote could not be reached or listed.
    #[error("failed to list the refs of {url}")]
    Connect {
        /// The repository.
        url: String,
        /// Cause.
        #[source]
        source: GixError,
    },
    /// The remote has no such ref.
    #[error(
        "{url} has no ref {reference:?} (--ref takes a branch, a tag, refs/... or a 40-digit commit)"
    )]
    NoSuchRef {
        /// The repository.
        url: String,
        /// `--ref`.
        reference: String,
    },
    /// The pack could not be fetched.
    #[error("failed to fetch {reference:?} from {url}")]
    Fetch {
        /// The repository.
        url: String,
        /// `--ref`.
        reference: String,
        /// Cause.
        #[source]
        source: GixError,
    },
    /// The fetched commit or one of its objects could not be read.
    #[error("failed to read {what} of commit {commit}")]
    Read {
        /// The object.
        what: String,
        /// The commit.
        commit: String,
        /// Cause.
        #[source]
        source: GixError,
    },
    /// A tree entry that could write outside the version directory.
    #[error("refused tree entry {path:?} of commit {commit}: {reason}")]
    Unsafe {
        /// The entry's path in the tree.
        path: String,
        /// The commit.
        commit: String,
        /// Why.
        reason: &'static str,
    },
    /// The tree could not be written, or is refused: a symlink leaving the version, over
    /// `--max-entries`, `--max-unpacked-bytes` or `--min-free`.
    #[error("failed to write the tree of commit {commit}")]
    Tree {
        /// The commit.
        commit: String,
        /// Cause.
        #[source]
        source: unpack::Error,
    },
    /// The checkout could not be written (disk full, permissions).
    #[error("failed to write {path:?}")]
    Write {
        /// Where.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// `--bearer-token-file` could not be read.
    #[error("failed to read --bearer-token-file {path:?}")]
    Token {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Shutdown or `--timeout` interrupted the sync.
    #[error("interrupted")]
    Interrupted,
    /// The blocking task panicked.
    #[error("the git task did not finish")]
    Join(#[source] tokio::task::JoinError),
}

/// A fetched commit, written out as a directory.
#[derive(Debug)]
pub struct Checkout {
    /// The commit's 40 hex digits.
    pub commit: String,
    /// The tree, under `DEST/.tmp/`.
    pub dir: PathBuf,
    /// Bytes of the files written.
    pub bytes: u64,
}

/// The `--git` source and what a sync needs to reach it.
#[derive(Debug, Clone)]
pub struct Git {
    url: String,
    reference: String,
    depth: u32,
    /// The bare repository that keeps the fetched objects between syncs.
    cache: PathBuf,
    /// Bounds and modes of the written tree.
    limits: Limits,
    tls: ClientTls,
    headers: Vec<String>,
    bearer_token_file: Option<PathBuf>,
}

impl Git {
    /// The git source of `config`, if it has one.
    pub fn new(config: &Config) -> Option<Self> {
        let Source::Git {
            url,
            reference,
            depth,
        } = &config.source
        else {
            return None;
        };
        Some(Self {
            url: url.clone(),
            reference: reference.clone(),
            depth: *depth,
            cache: config.dest.join(".repo"),
            limits: config.limits,
            tls: config.tls.clone(),
            headers: config
                .headers
                .iter()
                .filter_map(|(k, v)| Some(format!("{}: {}", k, v.to_str().ok()?)))
                .collect(),
            bearer_token_file: config.bearer_token_file.clone(),
        })
    }

    /// One sync on a blocking thread: `None` when `--ref` still names `current` (the published
    /// commit). Setting `interrupt` stops it at its next check.
    pub async fn sync(
        &self,
        current: Option<String>,
        tmp: PathBuf,
        interrupt: Arc<AtomicBool>,
    ) -> Result<Option<Checkout>, Error> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            this.sync_blocking(current.as_deref(), &tmp, &interrupt)
        })
        .await
        .map_err(Error::Join)?
    }

    fn refspec(&self) -> String {
        // Forced: with a shallow history every new commit looks unrelated to the last one.
        format!("+{}:refs/podkit/sync", self.reference)
    }

    fn sync_blocking(
        &self,
        current: Option<&str>,
        tmp: &Path,
        interrupt: &AtomicBool,
    ) -> Result<Option<Checkout>, Error> {
        let cache_err = |source: GixError| Error::Cache {
            path: self.cache.clone(),
            source,
        };
        // A cache that cannot be opened (never made, or damaged) is made anew: it only holds
        // what the next fetch brings again.
        let repo = match gix::open(&self.cache) {
            Ok(repo) => repo,
            Err(err) => {
                if self.cache.exists() {
                    warn!(cache = ?self.cache, err = %err, "repository cache unusable; made anew");
                }
                let _ = std::fs::remove_dir_all(&self.cache);
                gix::init_bare(&self.cache).map_err(|e| cache_err(e.into()))?
            }
        };
        let connect_err = |source: GixError| Error::Connect {
            url: self.url.clone(),
            source,
        };
        let remote = repo
            .remote_at(self.url.as_str())
            .map_err(|e| connect_err(e.into()))?
            .with_refspecs(Some(self.refspec().as_str()), Direction::Fetch)
            .map_err(|e| connect_err(e.into()))?
            .with_fetch_tags(gix::remote::fetch::Tags::None);
        let url = self.url.clone();
        let mut connection = remote
            .connect(Direction::Fetch)
            .map_err(|e| connect_err(e.into()))?
            .with_credentials(move |_action| {
                Err(gix::error::message!(
                    "{url} asks for credentials: give them with --header or --bearer-token-file (https) or an ssh key"
                )
                .into())
            });
        if self.url.starts_with("https://") || self.url.starts_with("http://") {
            connection.set_transport_options(Box::new(self.http_options()?));
        }
        let prepare = connection
            .prepare_fetch(gix::progress::Discard, Default::default())
            .map_err(|e| connect_err(e.into()))?;
        let Some(wanted) = prepare
            .ref_map()
            .mappings
            .iter()
            .find_map(|m| m.remote.peeled_id().or(m.remote.as_id()))
            .map(|id| id.to_owned())
        else {
            return Err(self.no_such_ref());
        };
        if current == Some(wanted.to_string().as_str()) {
            debug!(commit = %wanted, "ref unchanged");
            return Ok(None);
        }
        let shallow = match NonZeroU32::new(self.depth) {
            Some(depth) => gix::remote::fetch::Shallow::DepthAtRemote(depth),
            None => gix::remote::fetch::Shallow::NoChange,
        };
        let outcome = prepare
            .with_shallow(shallow)
            .receive(gix::progress::Discard, interrupt);
        if interrupt.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
        outcome.map_err(|e| Error::Fetch {
            url: self.url.clone(),
            reference: self.reference.clone(),
            source: e.into(),
        })?;

        let read_err = |what: &str, commit: String| {
            let what = what.to_owned();
            move |e: gix::Error| Error::Read {
                what,
                commit,
                source: e.into(),
            }
        };
        let object = repo
            .find_object(wanted)
            .map_err(read_err("the object", wanted.to_string()))?;
        let commit = object
            .peel_to_commit()
            .map_err(|e| match self.reference.len() {
                // A commit named by hash that the server sent as something else.
                40 => self.no_such_ref(),
                _ => read_err("the commit", wanted.to_string())(e),
            })?;
        let commit_id = commit.id.to_string();
        if current == Some(commit_id.as_str()) {
            return Ok(None);
        }
        let tree = commit
            .tree_id()
            .map_err(read_err("the tree", commit_id.clone()))?;
        let dir = tmp.join(format!("git-{}", &commit_id[..16]));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).map_err(|source| Error::Write {
            path: dir.clone(),
            source,
        })?;
        let tree_err = |source| Error::Tree {
            commit: commit_id.clone(),
            source,
        };
        let written = unpack::Tree::open(&dir, "tree entry", &self.limits)
            .map_err(tree_err)
            .and_then(|mut out| {
                // The checkout's root is a directory like any other (mode 0755 within --umask).
                out.dir("", Path::new(""), 0o755).map_err(tree_err)?;
                let mut writer = TreeWriter {
                    repo: &repo,
                    commit: &commit_id,
                    interrupt,
                    out: &mut out,
                };
                writer.write(tree.detach(), Path::new(""))?;
                out.finish().map_err(tree_err)
            });
        let bytes = match written {
            Ok(bytes) => bytes,
            Err(err) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(err);
            }
        };
        Ok(Some(Checkout {
            bytes,
            commit: commit_id,
            dir,
        }))
    }

    fn no_such_ref(&self) -> Error {
        Error::NoSuchRef {
            url: self.url.clone(),
            reference: self.reference.clone(),
        }
    }

    /// The https transport: the puller's rustls configuration and headers (the bearer token is
    /// read again for every sync, as for `--url`).
    fn http_options(
        &self,
    ) -> Result<gix::protocol::transport::client::blocking_io::http::Options, Error> {
        use gix::protocol::transport::client::blocking_io::http;
        let mut headers = self.headers.clone();
        if let Some(path) = &self.bearer_token_file {
            let token = std::fs::read_to_string(path).map_err(|source| Error::Token {
                path: path.clone(),
                source,
            })?;
            headers.push(format!("Authorization: Bearer {}", token.trim()));
        }
        let tls = self.tls.clone();
        let backend = http::reqwest::Options {
            configure_client: Some(Box::new(move |builder| {
                // Checked when the flags were read; a file changed since fails the sync here.
                let config = tls
                    .config(&[b"http/1.1"])
                    .map_err(|e| gix::error::message!("{}", crate::cli::error_chain(&e)))?;
                Ok(builder.tls_backend_preconfigured(config))
            })),
            configure_request: None,
        };
        Ok(http::Options {
            extra_headers: headers,
            user_agent: Some(concat!("podkit-puller/", env!("CARGO_PKG_VERSION")).to_owned()),
            backend: Some(Arc::new(Mutex::new(backend))),
            ..Default::default()
        })
    }
}

/// Writes one commit's tree, recursively, through the version's [`unpack::Tree`].
struct TreeWriter<'a> {
    repo: &'a gix::Repository,
    commit: &'a str,
    interrupt: &'a AtomicBool,
    out: &'a mut unpack::Tree,
}

impl TreeWriter<'_> {
    fn write(&mut self, tree: gix::ObjectId, dir: &Path) -> Result<(), Error> {
        use gix::objs::tree::EntryKind;
        if self.interrupt.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
        let prefix = dir.display().to_string();
        let tree = self.repo.find_tree(tree).map_err(|e| Error::Read {
            what: format!("the tree {prefix:?}"),
            commit: self.commit.to_owned(),
            source: e.into(),
        })?;
        let entries = tree.decode().map_err(|e| Error::Read {
            what: format!("the tree {prefix:?}"),
            commit: self.commit.to_owned(),
            source: e.into(),
        })?;
        for entry in &entries.entries {
            let name = entry.filename.as_bytes();
            let path = dir.join(std::ffi::OsStr::from_bytes(name));
            let path_in_tree = path.display().to_string();
            let unsafe_entry = |reason| Error::Unsafe {
                path: path_in_tree.clone(),
                commit: self.commit.to_owned(),
                reason,
            };
            if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
                return Err(unsafe_entry("not a single path component"));
            }
            if name.eq_ignore_ascii_case(b".git") {
                return Err(unsafe_entry("a .git entry"));
            }
            let tree_err = |source| Error::Tree {
                commit: self.commit.to_owned(),
                source,
            };
            match entry.mode.kind() {
                EntryKind::Tree => {
                    self.out
                        .dir(&path_in_tree, &path, 0o755)
                        .map_err(tree_err)?;
                    self.write(entry.oid.to_owned(), &path)?;
                }
                EntryKind::Blob | EntryKind::BlobExecutable => {
                    let data = self.blob(entry.oid, &path_in_tree)?;
                    let mode = if entry.mode.kind() == EntryKind::BlobExecutable {
                        0o755
                    } else {
                        0o644
                    };
                    self.out
                        .file(&path_in_tree, &path, mode, None, &mut &data[..])
                        .map_err(tree_err)?;
                }
                EntryKind::Link => {
                    let target = self.blob(entry.oid, &path_in_tree)?;
                    let target = Path::new(std::ffi::OsStr::from_bytes(&target));
                    self.out
                        .symlink(&path_in_tree, &path, target)
                        .map_err(tree_err)?;
                }
                EntryKind::Commit => {
                    warn!(path = %path_in_tree, commit = %self.commit, "submodule not fetched: published as an empty directory");
                    self.out
                        .dir(&path_in_tree, &path, 0o755)
                        .map_err(tree_err)?;
                }
            }
        }
        Ok(())
    }

    fn blob(&self, id: &gix::oid, path: &str) -> Result<Vec<u8>, Error> {
        self.repo
            .find_blob(id)
            .map(|mut blob| blob.take_data())
            .map_err(|e| Error::Read {
                what: format!("the file {path:?}"),
                commit: self.commit.to_owned(),
                source: e.into(),
            })
    }
}
