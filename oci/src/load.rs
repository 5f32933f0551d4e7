//! Loading images from the archives `docker save` and `podman save` write, and from OCI layout
//! directories, into the store with the names they carry. Equal to `podman load -i FILE`.
//!
//! - docker-archive: a tar with `manifest.json` (`[{"Config", "RepoTags", "Layers"}]`), the
//!   config and one tar per layer. The store gets an OCI manifest made for it (so its manifest
//!   digest is new, as with podman); names come from `RepoTags`, normalised (`busybox:1.36` is
//!   `docker.io/library/busybox:1.36`).
//! - oci-archive: a tar of an OCI layout. Docker 25 and later writes both forms in one tar; the
//!   OCI layout is then used, which keeps the registry's manifest digests.
//! - an OCI layout directory.
//!
//! An OCI layout names images by the `io.containerd.image.name` annotation (a full name, as
//! Docker writes it) or else `org.opencontainers.image.ref.name` when that is a name with a
//! repository; a bare `latest` names only a tag, so such an image is loaded without a name (as
//! podman's `<none>`), to be tagged. A multi-platform index loads this host's image.
//!
//! An archive is extracted under the store's `tmp/` with the same code as layers (nothing
//! written outside, no links followed), and every path it names is opened with
//! `RESOLVE_IN_ROOT`, so `../../etc/shadow` in a `manifest.json` stays inside it.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use oci_spec::image::{
    Descriptor, DescriptorBuilder, ImageIndex, ImageManifest, ImageManifestBuilder, MediaType,
};

use crate::digest::Digest;
use crate::platform::Platform;
use crate::reference::{InvalidReference, Reference};
use crate::store::{self, Store, StoreError, Writer};
use crate::unpack::{self, Compression, UnpackError};

const CONTAINERD_NAME: &str = "io.containerd.image.name";

/// Why a load failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The source is neither an archive nor a layout podkit knows.
    #[error("{path:?} is not a docker-archive, oci-archive or OCI layout: {problem}")]
    Format {
        /// The source.
        path: PathBuf,
        /// What is missing or wrong.
        problem: String,
    },
    /// A file of the source could not be read.
    #[error("failed to read {path:?} in {source_path:?}")]
    Read {
        /// The path inside the archive or layout.
        path: PathBuf,
        /// The archive or layout.
        source_path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A JSON document of the source is not what it should be.
    #[error("failed to parse {path:?} in {source_path:?}")]
    Json {
        /// The path inside the archive or layout.
        path: PathBuf,
        /// The archive or layout.
        source_path: PathBuf,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// An image name in the source is not a valid reference.
    #[error("{source_path:?} names an image {name:?} that is not a valid image name")]
    Name {
        /// The name.
        name: String,
        /// The archive or layout.
        source_path: PathBuf,
        /// Cause.
        #[source]
        source: InvalidReference,
    },
    /// The archive could not be extracted.
    #[error("failed to extract {path:?}")]
    Extract {
        /// The archive.
        path: PathBuf,
        /// Cause.
        #[source]
        source: UnpackError,
    },
    /// A multi-platform image in the source has no image for this host.
    #[error("{source_path:?} has no image for {platform} (it has: {available})")]
    NoPlatform {
        /// The archive or layout.
        source_path: PathBuf,
        /// This host's platform.
        platform: Platform,
        /// The platforms it has.
        available: String,
    },
    /// Writing to the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One image loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// Its manifest digest in the store.
    pub manifest_digest: Digest,
    /// Its image id (config digest).
    pub id: Digest,
    /// The names it was given; empty when the source named none.
    pub references: Vec<Reference>,
}

/// Loads every image of `source` (an archive file, or an OCI layout or extracted docker-archive
/// directory) into `store`. Blocking: run it on a blocking thread from async code.
pub fn load(store: &Store, source: &Path) -> Result<Vec<Loaded>, LoadError> {
    let writer = store.writer()?;
    let meta = std::fs::metadata(source).map_err(|e| read_err(source, Path::new(""), e))?;
    if meta.is_dir() {
        return load_dir(&writer, source, source);
    }
    let scratch = writer.scratch_dir()?;
    let result = (|| {
        let file = File::open(source).map_err(|e| read_err(source, Path::new(""), e))?;
        unpack::unpack(file, None, &scratch).map_err(|e| LoadError::Extract {
            path: source.to_owned(),
            source: e,
        })?;
        load_dir(&writer, &scratch, source)
    })();
    if let Err(e) = store::remove_any(&scratch) {
        tracing::warn!(error = %e, path = ?scratch, "failed to remove an extracted archive");
    }
    result
}

/// The layout or archive being read: its root held open, and its name for messages.
struct Source<'a> {
    root: OwnedFd,
    name: &'a Path,
}

impl Source<'_> {
    /// Opens `path` inside the source, symlinks and `..` resolved as if it were `/`.
    fn open(&self, path: &Path) -> Result<File, LoadError> {
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        let fd = openat2(&self.root, path, how).map_err(|e| read_err(self.name, path, e.into()))?;
        Ok(File::from(fd))
    }

    fn exists(&self, path: &str) -> bool {
        self.open(Path::new(path)).is_ok()
    }

    fn read(&self, path: &Path) -> Result<Vec<u8>, LoadError> {
        let mut bytes = Vec::new();
        self.open(path)?
            .read_to_end(&mut bytes)
            .map_err(|e| read_err(self.name, path, e))?;
        Ok(bytes)
    }

    fn json<T: serde::de::DeserializeOwned>(&self, path: &Path) -> Result<T, LoadError> {
        let bytes = self.read(path)?;
        serde_json::from_slice(&bytes).map_err(|source| LoadError::Json {
            path: path.to_owned(),
            source_path: self.name.to_owned(),
            source,
        })
    }

    fn blob_path(digest: &Digest) -> PathBuf {
        PathBuf::from("blobs/sha256").join(digest.hex())
    }

    fn reference(&self, name: &str) -> Result<Reference, LoadError> {
        Reference::parse(name).map_err(|source| LoadError::Name {
            name: name.to_owned(),
            source_path: self.name.to_owned(),
            source,
        })
    }
}

fn load_dir(writer: &Writer, dir: &Path, name: &Path) -> Result<Vec<Loaded>, LoadError> {
    let root = File::open(dir).map_err(|e| read_err(name, Path::new(""), e))?;
    let source = Source {
        root: root.into(),
        name,
    };
    if source.exists("oci-layout") && source.exists("index.json") {
        load_layout(writer, &source)
    } else if source.exists("manifest.json") {
        load_docker(writer, &source)
    } else {
        Err(LoadError::Format {
            path: name.to_owned(),
            problem: "it has neither oci-layout and index.json nor manifest.json".to_owned(),
        })
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifest {
    config: PathBuf,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<PathBuf>,
}

fn load_docker(writer: &Writer, source: &Source<'_>) -> Result<Vec<Loaded>, LoadError> {
    let entries: Vec<DockerManifest> = source.json(Path::new("manifest.json"))?;
    let mut loaded = Vec::new();
    for entry in entries {
        let config_bytes = source.read(&entry.config)?;
        let config_digest = writer.write_blob_bytes(&config_bytes)?;
        let config = serde_json::from_slice(&config_bytes).map_err(|e| LoadError::Json {
            path: entry.config.clone(),
            source_path: source.name.to_owned(),
            source: e,
        })?;
        let diff_ids = store::diff_ids(&config)?;
        if diff_ids.len() != entry.layers.len() {
            return Err(StoreError::LayerCount {
                layers: entry.layers.len(),
                diff_ids: diff_ids.len(),
            }
            .into());
        }
        let mut layers = Vec::new();
        for (path, diff_id) in entry.layers.iter().zip(&diff_ids) {
            let mut file = BufReader::new(source.open(path)?);
            let magic = file
                .fill_buf()
                .map_err(|e| read_err(source.name, path, e))?;
            let media_type = match Compression::sniff(magic) {
                Compression::None => "application/vnd.oci.image.layer.v1.tar",
                Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
                Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
            };
            // An uncompressed layer's blob digest is its diff_id: a present layer is not
            // copied again.
            let known =
                (media_type.ends_with(".tar") && writer.has_blob(diff_id)).then_some(diff_id);
            let (digest, size) = match known {
                Some(digest) => (
                    digest.clone(),
                    std::fs::metadata(writer.store().blob_path(digest)).map_or(0, |m| m.len()),
                ),
                None => writer.write_blob_from(None, file)?,
            };
            writer.ensure_layer(&digest, Some(media_type), diff_id)?;
            layers.push(descriptor(media_type, size, &digest));
        }
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(descriptor(
                "application/vnd.oci.image.config.v1+json",
                config_bytes.len() as u64,
                &config_digest,
            ))
            .layers(layers)
            .build()
            .expect("every required field of the manifest is set");
        let manifest_bytes = serde_json::to_vec(&manifest).expect("a manifest serializes");
        let manifest_digest = writer.write_blob_bytes(&manifest_bytes)?;
        let mut references = Vec::new();
        for tag in entry.repo_tags.unwrap_or_default() {
            references.push(source.reference(&tag)?);
        }
        record(
            writer,
            &manifest_digest,
            manifest_bytes.len() as u64,
            OCI_MANIFEST,
            &references,
        )?;
        loaded.push(Loaded {
            manifest_digest,
            id: config_digest,
            references,
        });
    }
    Ok(loaded)
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn descriptor(media_type: &str, size: u64, digest: &Digest) -> Descriptor {
    DescriptorBuilder::default()
        .media_type(MediaType::from(media_type))
        .size(size)
        .digest(
            digest
                .to_string()
                .parse::<oci_spec::image::Digest>()
                .expect("a sha256 digest is an OCI digest"),
        )
        .build()
        .expect("every required field of the descriptor is set")
}

fn load_layout(writer: &Writer, source: &Source<'_>) -> Result<Vec<Loaded>, LoadError> {
    let index: ImageIndex = source.json(Path::new("index.json"))?;
    let mut loaded: Vec<Loaded> = Vec::new();
    for top in index.manifests() {
        let annotations = top.annotations().clone().unwrap_or_default();
        let name = annotations.get(CONTAINERD_NAME).or_else(|| {
            annotations
                .get(store::REF_NAME)
                .filter(|n| n.contains(['/', ':', '@']))
        });
        let reference = name.map(|n| source.reference(n)).transpose()?;
        if reference.is_none() {
            tracing::warn!(source = ?source.name, "an image of the layout has no name: loaded as <none>");
        }
        let descriptor = resolve_index(source, top)?;
        let digest = layout_digest(&descriptor)?;
        let manifest_bytes = read_blob(source, &digest)?;
        let manifest: ImageManifest =
            serde_json::from_slice(&manifest_bytes).map_err(|e| LoadError::Json {
                path: Source::blob_path(&digest),
                source_path: source.name.to_owned(),
                source: e,
            })?;
        let config_digest = store::config_digest(&manifest)?;
        let config_bytes = read_blob(source, &config_digest)?;
        writer.write_blob_bytes(&config_bytes)?;
        let config = serde_json::from_slice(&config_bytes).map_err(|e| LoadError::Json {
            path: Source::blob_path(&config_digest),
            source_path: source.name.to_owned(),
            source: e,
        })?;
        let diff_ids = store::diff_ids(&config)?;
        if diff_ids.len() != manifest.layers().len() {
            return Err(StoreError::LayerCount {
                layers: manifest.layers().len(),
                diff_ids: diff_ids.len(),
            }
            .into());
        }
        for (layer, diff_id) in manifest.layers().iter().zip(&diff_ids) {
            let layer_digest = layout_digest(layer)?;
            if !writer.has_blob(&layer_digest) {
                let file = source.open(&Source::blob_path(&layer_digest))?;
                writer.write_blob_from(Some(&layer_digest), file)?;
            }
            writer.ensure_layer(&layer_digest, Some(layer.media_type().as_ref()), diff_id)?;
        }
        let manifest_digest = writer.write_blob_bytes(&manifest_bytes)?;
        let media_type = store::manifest_media_type(&manifest);
        let references: Vec<Reference> = reference.into_iter().collect();
        record(
            writer,
            &manifest_digest,
            manifest_bytes.len() as u64,
            &media_type,
            &references,
        )?;
        match loaded
            .iter_mut()
            .find(|l| l.manifest_digest == manifest_digest)
        {
            Some(known) => known.references.extend(references),
            None => loaded.push(Loaded {
                manifest_digest,
                id: config_digest,
                references,
            }),
        }
    }
    Ok(loaded)
}

/// A manifest descriptor, through nested indexes to this host's platform.
fn resolve_index(source: &Source<'_>, descriptor: &Descriptor) -> Result<Descriptor, LoadError> {
    let mut descriptor = descriptor.clone();
    for _ in 0..8 {
        if *descriptor.media_type() != MediaType::ImageIndex
            && descriptor.media_type().to_string()
                != "application/vnd.docker.distribution.manifest.list.v2+json"
        {
            return Ok(descriptor);
        }
        let digest = layout_digest(&descriptor)?;
        let index: ImageIndex =
            serde_json::from_slice(&read_blob(source, &digest)?).map_err(|e| LoadError::Json {
                path: Source::blob_path(&digest),
                source_path: source.name.to_owned(),
                source: e,
            })?;
        let platform = Platform::host();
        descriptor = match platform.choose(index.manifests()) {
            Some(chosen) => chosen.clone(),
            None => {
                let available = Platform::list(index.manifests());
                return Err(LoadError::NoPlatform {
                    source_path: source.name.to_owned(),
                    platform,
                    available,
                });
            }
        };
    }
    Err(LoadError::Format {
        path: source.name.to_owned(),
        problem: "image indexes nested too deep".to_owned(),
    })
}

fn layout_digest(descriptor: &Descriptor) -> Result<Digest, LoadError> {
    Ok(
        Digest::parse(descriptor.digest().as_ref()).map_err(|source| StoreError::Digest {
            what: "the layout's descriptors",
            source,
        })?,
    )
}

/// A small blob of the layout, checked against its digest.
fn read_blob(source: &Source<'_>, digest: &Digest) -> Result<Vec<u8>, LoadError> {
    let path = Source::blob_path(digest);
    let bytes = source.read(&path)?;
    let actual = Digest::of(&bytes);
    if &actual != digest {
        let size = bytes.len() as u64;
        return Err(StoreError::DigestMismatch {
            what: "blob",
            expected: digest.clone(),
            actual,
            size,
        }
        .into());
    }
    Ok(bytes)
}

fn record(
    writer: &Writer,
    manifest: &Digest,
    size: u64,
    media_type: &str,
    references: &[Reference],
) -> Result<(), LoadError> {
    if references.is_empty() {
        writer.store().add_image(manifest, size, media_type, None)?;
    }
    for reference in references {
        writer
            .store()
            .add_image(manifest, size, media_type, Some(reference))?;
    }
    Ok(())
}

fn read_err(source_path: &Path, path: &Path, source: std::io::Error) -> LoadError {
    LoadError::Read {
        path: path.to_owned(),
        source_path: source_path.to_owned(),
        source,
    }
}
