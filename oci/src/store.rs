//! The persistent image store: one OCI image layout per host, plus each layer unpacked once.
//!
//! ```text
//! <root>/oci-layout                  {"imageLayoutVersion": "1.0.0"}
//! <root>/index.json                  one descriptor per image name (see below)
//! <root>/blobs/sha256/<hex>          manifests, configs and layer blobs, named by digest
//! <root>/layers/sha256/<diff_id>/    a layer unpacked for overlayfs, named by its diff_id
//! <root>/tmp/                        downloads and unpacks under way (never trusted)
//! <root>/locks/                      the lock files
//! ```
//!
//! `index.json` holds a manifest descriptor for each name of an image, its
//! `org.opencontainers.image.ref.name` annotation holding the full normalised reference
//! (`docker.io/library/nginx:1.25`), so `skopeo inspect oci:<root>:docker.io/library/nginx:1.25`
//! reads it; OCI's grammar for that annotation allows the registry, `/`, `:` and `@`. An image
//! whose name moved to another image stays as a descriptor without the annotation (podman's
//! `<none>` image) until pruned, so a pod running it keeps its layers.
//!
//! Everything is published by rename only once complete and checked: a blob once its digest
//! matched and it was fsynced, a layer once its diff_id matched and the file system was synced,
//! `index.json` as a whole. A process killed half-way leaves only names under `tmp/`, which the
//! next writer of the same blob or layer removes (it holds that item's lock, so they are stale)
//! and garbage collection empties. Readers take no lock.
//!
//! Locks (flock, released when the process dies): `store.lock` is held shared by every writer
//! adding content (pull, load) and exclusively by garbage collection, which therefore never
//! removes a blob a pull has written but not yet named; `blob-<hex>.lock` and
//! `layer-<hex>.lock` make two processes that want the same blob download it once (the second
//! waits, then finds it); `index.lock` serialises the read-modify-write of `index.json`.

mod content;
mod index;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use oci_spec::image::{ImageConfiguration, ImageManifest};

use crate::digest::{Digest, InvalidDigest};
use crate::reference::Reference;
use crate::unpack::UnpackError;

pub(crate) use content::{Writer, remove_any};
use index::Index;
pub(crate) use index::REF_NAME;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file system operation failed.
    #[error("failed to {op} {path:?}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// A JSON document of the store (or one about to enter it) is not what it should be.
    #[error("failed to parse {what} {path:?}")]
    Json {
        /// `index.json`, `image manifest`, `image config`.
        what: &'static str,
        /// Where it is (or its digest).
        path: PathBuf,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// A digest in a document is not a sha256 digest.
    #[error("{what} names an unusable digest")]
    Digest {
        /// Which document.
        what: &'static str,
        /// Cause.
        #[source]
        source: InvalidDigest,
    },
    /// Content did not hash to the digest that names it.
    #[error("{what} {expected} has the wrong content: it hashes to {actual} ({size} bytes)")]
    DigestMismatch {
        /// `blob`, `layer`.
        what: &'static str,
        /// The digest it should have.
        expected: Digest,
        /// The digest it has.
        actual: Digest,
        /// Its size.
        size: u64,
    },
    /// A layer's uncompressed content is not what the image config says.
    #[error("layer {layer} unpacks to diff_id {actual}, but the image config says {expected}")]
    DiffIdMismatch {
        /// The layer blob.
        layer: Digest,
        /// The config's rootfs.diff_ids entry.
        expected: Digest,
        /// What it unpacked to.
        actual: Digest,
    },
    /// The manifest and the config disagree on the number of layers.
    #[error("the manifest lists {layers} layers but the config lists {diff_ids} diff_ids")]
    LayerCount {
        /// Layers in the manifest.
        layers: usize,
        /// diff_ids in the config.
        diff_ids: usize,
    },
    /// A layer could not be unpacked.
    #[error("failed to unpack layer {layer}")]
    Unpack {
        /// The layer blob.
        layer: Digest,
        /// Cause.
        #[source]
        source: UnpackError,
    },
    /// Something an image in the index needs is missing from the store.
    #[error(
        "image {image} is incomplete in the store: {missing:?} is missing (pull or load it again)"
    )]
    Incomplete {
        /// The image's manifest digest.
        image: Digest,
        /// The missing file or directory.
        missing: PathBuf,
    },
    /// An image id prefix matches several images.
    #[error("image id prefix {prefix:?} matches {count} images; give more of it")]
    Ambiguous {
        /// The prefix given.
        prefix: String,
        /// How many images it matches.
        count: usize,
    },
}

pub(crate) fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// podkit's image store on one host.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// An image ready to run: its manifest, its config, and its unpacked layers.
#[derive(Debug, Clone)]
pub struct Image {
    /// The manifest's digest (what `podman images --digests` shows).
    pub manifest_digest: Digest,
    /// The image id: the digest of its config, as Docker, podman and CRI report it.
    pub id: Digest,
    /// The manifest.
    pub manifest: ImageManifest,
    /// The config: Entrypoint, Cmd, Env, User, WorkingDir, ...
    pub config: ImageConfiguration,
    /// The unpacked layer directories, bottom layer first (overlayfs' `lowerdir` lists them the
    /// other way round).
    pub layers: Vec<PathBuf>,
}

/// One image as `podkit images` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSummary {
    /// Its names; empty for an image whose name moved to another (`<none>`).
    pub references: Vec<Reference>,
    /// The image id (config digest).
    pub id: Digest,
    /// The manifest digest.
    pub manifest_digest: Digest,
    /// When the image was built, from its config.
    pub created: Option<jiff::Timestamp>,
    /// Bytes of its manifest, config and layer blobs, as the manifest gives them (compressed
    /// layers: what crictl shows for containerd).
    pub size: u64,
}

/// What `prune` may remove.
#[derive(Debug, Clone, Default)]
pub struct PruneOptions {
    /// Also images that still have a name (`podman image prune -a`); by default only images
    /// without one.
    pub all: bool,
    /// Image ids in use (by pods): never removed.
    pub in_use: HashSet<Digest>,
}

/// What garbage collection removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Image ids whose last descriptor was removed.
    pub images: Vec<Digest>,
    /// Blobs removed.
    pub blobs: usize,
    /// Layer directories removed.
    pub layers: usize,
    /// Bytes of blobs freed (layer directories not counted).
    pub blob_bytes: u64,
}

impl Store {
    /// Opens the store at `root` (podkit's is `/var/lib/podkit/images`, `DIR/images` with
    /// `podkit --storage DIR`), creating an empty layout if there is none.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store, StoreError> {
        let store = Store { root: root.into() };
        for dir in [
            store.blobs_dir(),
            store.layers_dir(),
            store.tmp_dir(),
            store.locks_dir(),
        ] {
            fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        }
        let layout = store.root.join("oci-layout");
        if !layout.exists() {
            content::write_atomic(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        if !store.index_path().exists() {
            let _lock = store.lock_index()?;
            if !store.index_path().exists() {
                Index::default().save(&store.index_path())?;
            }
        }
        Ok(store)
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs/sha256")
    }

    pub(crate) fn layers_dir(&self) -> PathBuf {
        self.root.join("layers/sha256")
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub(crate) fn locks_dir(&self) -> PathBuf {
        self.root.join("locks")
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    /// The path of a blob (present or not).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir().join(digest.hex())
    }

    /// The directory of the layer with this diff_id (present or not).
    pub fn layer_path(&self, diff_id: &Digest) -> PathBuf {
        self.layers_dir().join(diff_id.hex())
    }

    fn lock_index(&self) -> Result<content::Lock, StoreError> {
        content::Lock::exclusive(&self.locks_dir().join("index.lock"))
    }

    /// Starts adding content: holds the store lock shared until dropped, so that garbage
    /// collection waits.
    pub(crate) fn writer(&self) -> Result<Writer, StoreError> {
        Writer::new(self.clone())
    }

    /// Every image, with its names.
    pub fn images(&self) -> Result<Vec<ImageSummary>, StoreError> {
        let index = Index::load(&self.index_path())?;
        let mut by_manifest: HashMap<Digest, Vec<Reference>> = HashMap::new();
        let mut order = Vec::new();
        for entry in &index.entries {
            let names = by_manifest
                .entry(entry.manifest.clone())
                .or_insert_with(|| {
                    order.push(entry.manifest.clone());
                    Vec::new()
                });
            names.extend(entry.reference.clone());
        }
        let mut images = Vec::new();
        for manifest_digest in order {
            let (manifest, manifest_size) = self.read_manifest(&manifest_digest)?;
            let config_digest = config_digest(&manifest)?;
            let config = self.read_config(&config_digest)?;
            let created = config.created().as_deref().and_then(|c| c.parse().ok());
            let size = manifest_size
                + manifest.config().size()
                + manifest.layers().iter().map(|l| l.size()).sum::<u64>();
            let references = by_manifest.remove(&manifest_digest).unwrap_or_default();
            images.push(ImageSummary {
                references,
                id: config_digest,
                manifest_digest,
                created,
                size,
            });
        }
        Ok(images)
    }

    /// Finds an image by reference: its exact name, or for `name@sha256:...` the image of that
    /// manifest in that repository.
    pub fn resolve(&self, reference: &Reference) -> Result<Option<Image>, StoreError> {
        let index = Index::load(&self.index_path())?;
        match index.find(reference) {
            Some(manifest) => self.image(&manifest).map(Some),
            None => Ok(None),
        }
    }

    /// Finds an image by reference or by image id (`sha256:...`, or a hex prefix of at least
    /// 3 digits as `podman rmi` takes), as the CLI verbs name images.
    pub fn lookup(&self, name: &str) -> Result<Option<Image>, StoreError> {
        let hex = name.strip_prefix("sha256:").unwrap_or(name);
        if hex.len() >= 3 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            let matching: HashSet<Digest> = self
                .images()?
                .into_iter()
                .filter(|image| image.id.hex().starts_with(hex))
                .map(|image| image.manifest_digest)
                .collect();
            match matching.len() {
                0 => {}
                1 => {
                    return self
                        .image(matching.iter().next().expect("one element"))
                        .map(Some);
                }
                count => {
                    return Err(StoreError::Ambiguous {
                        prefix: name.to_owned(),
                        count,
                    });
                }
            }
        }
        match Reference::parse(name) {
            Ok(reference) => self.resolve(&reference),
            Err(_) => Ok(None),
        }
    }

    /// The image of a manifest in the store, with its layer directories checked.
    pub fn image(&self, manifest_digest: &Digest) -> Result<Image, StoreError> {
        let (manifest, _) = self.read_manifest(manifest_digest)?;
        let id = config_digest(&manifest)?;
        let config = self.read_config(&id)?;
        let diff_ids = diff_ids(&config)?;
        if diff_ids.len() != manifest.layers().len() {
            return Err(StoreError::LayerCount {
                layers: manifest.layers().len(),
                diff_ids: diff_ids.len(),
            });
        }
        let mut layers = Vec::with_capacity(diff_ids.len());
        for diff_id in &diff_ids {
            let path = self.layer_path(diff_id);
            if !path.is_dir() {
                return Err(StoreError::Incomplete {
                    image: manifest_digest.clone(),
                    missing: path,
                });
            }
            layers.push(path);
        }
        Ok(Image {
            manifest_digest: manifest_digest.clone(),
            id,
            manifest,
            config,
            layers,
        })
    }

    /// Gives the image of `manifest` (already in the store) the name `reference`, taking the
    /// name from any image that had it.
    pub fn tag(&self, manifest: &Digest, reference: &Reference) -> Result<(), StoreError> {
        let (parsed, size) = self.read_manifest(manifest)?;
        let media_type = manifest_media_type(&parsed);
        let _lock = self.lock_index()?;
        let mut index = Index::load(&self.index_path())?;
        index.add(manifest, size, &media_type, Some(reference));
        index.save(&self.index_path())
    }

    /// Removes a name (`podkit rmi`); the image goes with its last name, and then so do its
    /// blobs and layers that no other image uses. Returns the manifest digest the name had.
    /// Whether a pod still uses the image is the caller's to check first.
    pub fn remove(&self, reference: &Reference) -> Result<Option<Digest>, StoreError> {
        let _gc = content::Lock::exclusive(&self.locks_dir().join("store.lock"))?;
        let removed = {
            let _lock = self.lock_index()?;
            let mut index = Index::load(&self.index_path())?;
            let removed = index.remove(reference);
            if removed.is_some() {
                index.save(&self.index_path())?;
            }
            removed
        };
        if removed.is_some() {
            self.collect_garbage()?;
        }
        Ok(removed)
    }

    /// Removes an image with every name it has (`podkit rmi IMAGE-ID`), then its blobs and
    /// layers that no other image uses. Returns the names it had; `None` when the store has no
    /// such manifest. Whether a pod still uses the image is the caller's to check first.
    pub fn remove_image(&self, manifest: &Digest) -> Result<Option<Vec<Reference>>, StoreError> {
        let _gc = content::Lock::exclusive(&self.locks_dir().join("store.lock"))?;
        let names = {
            let _lock = self.lock_index()?;
            let mut index = Index::load(&self.index_path())?;
            if !index.entries.iter().any(|e| &e.manifest == manifest) {
                return Ok(None);
            }
            let (gone, kept) = std::mem::take(&mut index.entries)
                .into_iter()
                .partition(|e| &e.manifest == manifest);
            index.entries = kept;
            index.save(&self.index_path())?;
            let gone: Vec<index::Entry> = gone;
            gone.into_iter().filter_map(|e| e.reference).collect()
        };
        self.collect_garbage()?;
        Ok(Some(names))
    }

    /// Removes the images without a name (or, with `all`, every image) that no pod uses, then
    /// every blob and layer no remaining image needs, and whatever an interrupted pull left.
    pub fn prune(&self, options: &PruneOptions) -> Result<PruneReport, StoreError> {
        let _gc = content::Lock::exclusive(&self.locks_dir().join("store.lock"))?;
        let mut removed_images = Vec::new();
        {
            let _lock = self.lock_index()?;
            let mut index = Index::load(&self.index_path())?;
            let mut keep = Vec::new();
            for entry in std::mem::take(&mut index.entries) {
                let (manifest, _) = self.read_manifest(&entry.manifest)?;
                let id = config_digest(&manifest)?;
                let removable =
                    (options.all || entry.reference.is_none()) && !options.in_use.contains(&id);
                if removable {
                    removed_images.push((entry.manifest.clone(), id));
                } else {
                    keep.push(entry);
                }
            }
            index.entries = keep;
            index.save(&self.index_path())?;
            // An image named twice loses only the names pruned; it is gone only with its last.
            removed_images
                .retain(|(manifest, _)| !index.entries.iter().any(|e| &e.manifest == manifest));
        }
        let mut report = self.collect_garbage()?;
        let mut ids: Vec<Digest> = removed_images.into_iter().map(|(_, id)| id).collect();
        ids.sort();
        ids.dedup();
        report.images = ids;
        Ok(report)
    }

    /// Removes unreferenced blobs and layers and everything under `tmp/`. The caller holds the
    /// store lock exclusively.
    fn collect_garbage(&self) -> Result<PruneReport, StoreError> {
        let index = Index::load(&self.index_path())?;
        let mut blobs = HashSet::new();
        let mut layers = HashSet::new();
        for entry in &index.entries {
            blobs.insert(entry.manifest.hex().to_owned());
            let Ok((manifest, _)) = self.read_manifest(&entry.manifest) else {
                continue;
            };
            let Ok(config) = config_digest(&manifest) else {
                continue;
            };
            blobs.insert(config.hex().to_owned());
            for layer in manifest.layers() {
                blobs.insert(layer.digest().digest().to_owned());
            }
            if let Ok(diff_ids) = self.read_config(&config).and_then(|c| diff_ids(&c)) {
                layers.extend(diff_ids.iter().map(|d| d.hex().to_owned()));
            }
        }
        let mut report = PruneReport::default();
        for item in read_dir_names(&self.blobs_dir())? {
            if !blobs.contains(&item) {
                let path = self.blobs_dir().join(&item);
                report.blob_bytes += fs::symlink_metadata(&path).map(|m| m.len()).unwrap_or(0);
                fs::remove_file(&path).map_err(io_err("remove", &path))?;
                report.blobs += 1;
            }
        }
        for item in read_dir_names(&self.layers_dir())? {
            if !layers.contains(&item) {
                // Out of its trusted name first: a removal cut short leaves only tmp/.
                let path = self.layers_dir().join(&item);
                let doomed = self.tmp_dir().join(format!("gc-{item}"));
                fs::rename(&path, &doomed).map_err(io_err("move aside", &path))?;
                report.layers += 1;
            }
        }
        for item in read_dir_names(&self.tmp_dir())? {
            remove_any(&self.tmp_dir().join(item))?;
        }
        for item in read_dir_names(&self.locks_dir())? {
            if item.starts_with("blob-") || item.starts_with("layer-") {
                let path = self.locks_dir().join(item);
                fs::remove_file(&path).map_err(io_err("remove", &path))?;
            }
        }
        Ok(report)
    }

    pub(crate) fn read_manifest(
        &self,
        digest: &Digest,
    ) -> Result<(ImageManifest, u64), StoreError> {
        let path = self.blob_path(digest);
        let bytes = fs::read(&path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => StoreError::Incomplete {
                image: digest.clone(),
                missing: path.clone(),
            },
            _ => StoreError::Io {
                op: "read",
                path: path.clone(),
                source,
            },
        })?;
        let manifest = serde_json::from_slice(&bytes).map_err(|source| StoreError::Json {
            what: "image manifest",
            path,
            source,
        })?;
        Ok((manifest, bytes.len() as u64))
    }

    pub(crate) fn read_config(&self, digest: &Digest) -> Result<ImageConfiguration, StoreError> {
        let path = self.blob_path(digest);
        let bytes = fs::read(&path).map_err(io_err("read", &path))?;
        serde_json::from_slice(&bytes).map_err(|source| StoreError::Json {
            what: "image config",
            path,
            source,
        })
    }

    /// Records `reference` (or, with `None`, an unnamed image) for a manifest whose blobs and
    /// layers are all in the store.
    pub(crate) fn add_image(
        &self,
        manifest: &Digest,
        size: u64,
        media_type: &str,
        reference: Option<&Reference>,
    ) -> Result<(), StoreError> {
        let _lock = self.lock_index()?;
        let mut index = Index::load(&self.index_path())?;
        index.add(manifest, size, media_type, reference);
        index.save(&self.index_path())
    }
}

/// The digest of an image's config.
pub(crate) fn config_digest(manifest: &ImageManifest) -> Result<Digest, StoreError> {
    Digest::parse(manifest.config().digest().as_ref()).map_err(|source| StoreError::Digest {
        what: "the manifest's config",
        source,
    })
}

/// The config's rootfs.diff_ids, bottom layer first.
pub(crate) fn diff_ids(config: &ImageConfiguration) -> Result<Vec<Digest>, StoreError> {
    config
        .rootfs()
        .diff_ids()
        .iter()
        .map(|d| {
            Digest::parse(d).map_err(|source| StoreError::Digest {
                what: "the config's rootfs.diff_ids",
                source,
            })
        })
        .collect()
}

pub(crate) fn manifest_media_type(manifest: &ImageManifest) -> String {
    manifest.media_type().as_ref().map_or_else(
        || "application/vnd.oci.image.manifest.v1+json".to_owned(),
        |m| m.to_string(),
    )
}

fn read_dir_names(dir: &Path) -> Result<Vec<String>, StoreError> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("list", dir))? {
        let entry = entry.map_err(io_err("list", dir))?;
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}
