//! Pulling an image from a registry into the store, through the OCI distribution API
//! (`oci-client` on rustls with ring): the manifest by tag or digest (an index or manifest list
//! resolved to this host's platform), the config, then each layer not yet in the store,
//! downloaded to a temporary file with its digest checked, unpacked and checked against the
//! config's diff_id. Docker v2 schema 2 and OCI manifests; gzip, zstd and plain layers.
//!
//! Credentials: the caller's (an imagePullSecret) first, else the first auth file that has
//! some (see [`AuthFiles`]), else anonymous; oci-client answers a registry's bearer challenge
//! with them (or anonymously) and falls back to basic auth. Endpoints come from
//! `registries.conf` (see [`RegistriesConf`]): mirrors in order, then the registry itself;
//! `insecure` means plain http. Extra CA certificates for a registry are read from
//! `<certs dir>/<host[:port]>/*.crt`, as podman reads `/etc/containers/certs.d`.

mod auth;
mod registries;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_spec::image::{ImageIndex, ImageManifest};

pub use auth::{AuthFiles, CredentialSource, Credentials, credentials_from_docker_config};
pub use registries::{Endpoint, RegistriesConf};

use crate::digest::Digest;
use crate::platform::Platform;
use crate::reference::Reference;
use crate::store::{self, Image, Store, StoreError, Writer};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const CONFIG_TYPES: [&str; 2] = [
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];
/// Layers downloaded at once, as containerd and podman do by default (3).
const PARALLEL_LAYERS: usize = 3;

/// Why a pull failed.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// registries.conf is not valid TOML of the expected shape.
    #[error("failed to parse {path:?}")]
    RegistriesConf {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// registries.conf could not be read.
    #[error("failed to read {path:?}")]
    RegistriesConfRead {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A `[[registry]]` entry is unusable.
    #[error("{path:?}: {problem}")]
    RegistryEntry {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: &'static str,
    },
    /// A registries.conf location does not make an image name.
    #[error("registries.conf location {location:?} does not make a valid image name")]
    Location {
        /// The location.
        location: String,
        /// Cause.
        #[source]
        source: crate::reference::InvalidReference,
    },
    /// registries.conf blocks the registry.
    #[error("pulling {reference} is blocked by registries.conf (prefix {prefix:?})")]
    Blocked {
        /// The image.
        reference: String,
        /// The blocking entry's prefix.
        prefix: String,
    },
    /// An auth file is not JSON of the docker config shape.
    #[error("failed to parse the auth file {path:?}")]
    AuthFile {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// An auth file could not be read.
    #[error("failed to read the auth file {path:?}")]
    AuthFileRead {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// An `auth` entry is not base64 of `user:password`.
    #[error("an \"auth\" entry in {path:?} is not base64 of user:password")]
    AuthEntry {
        /// The file.
        path: PathBuf,
    },
    /// A CA certificate for a registry could not be read.
    #[error("failed to read the CA certificates in {path:?}")]
    Certs {
        /// The file or directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The registry refused the credentials (or anonymous access).
    #[error(
        "unauthorized to pull {reference}: {registry} refused {credentials}; log in with `podman login {registry}` \
         (or give an imagePullSecret) with credentials that may pull it"
    )]
    Unauthorized {
        /// The image, as pulled from that endpoint.
        reference: String,
        /// The registry host.
        registry: String,
        /// What was sent.
        credentials: CredentialSource,
        /// The client's error.
        #[source]
        source: Box<OciDistributionError>,
    },
    /// The registry has no such image.
    #[error("image {reference} not found: the registry has no such repository, tag or digest")]
    NotFound {
        /// The image, as pulled from that endpoint.
        reference: String,
        /// The client's error.
        #[source]
        source: Box<OciDistributionError>,
    },
    /// Talking to the registry failed.
    #[error("failed to pull {reference}")]
    Registry {
        /// The image, as pulled from that endpoint.
        reference: String,
        /// The client's error.
        #[source]
        source: Box<OciDistributionError>,
    },
    /// The registry's answer is not an image this host can run.
    #[error("{reference} is not a container image: {problem}")]
    NotAnImage {
        /// The image.
        reference: String,
        /// What it is instead.
        problem: String,
    },
    /// A multi-platform image has no manifest for this host.
    #[error("{reference} has no image for {platform} (it has: {available})")]
    NoPlatform {
        /// The image.
        reference: String,
        /// The platform wanted.
        platform: Platform,
        /// The platforms it has.
        available: String,
    },
    /// Writing to the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A blocking task of the pull panicked or was cancelled.
    #[error("a pull task failed")]
    Task(#[source] tokio::task::JoinError),
}

/// What happened to a pull, for a progress display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The image manifest is known: its digest and how many layers it has.
    Resolved {
        /// The manifest digest.
        manifest: Digest,
        /// Number of layers.
        layers: usize,
    },
    /// A layer is in the store already and is not downloaded.
    LayerPresent {
        /// Its position, 0 = bottom.
        index: usize,
        /// The layer blob's digest.
        digest: Digest,
    },
    /// Bytes of a layer received so far (sent after each chunk).
    LayerBytes {
        /// Its position, 0 = bottom.
        index: usize,
        /// The layer blob's digest.
        digest: Digest,
        /// Bytes so far.
        downloaded: u64,
        /// Its size, from the manifest.
        size: u64,
    },
    /// A layer is downloaded and being unpacked.
    LayerUnpacking {
        /// Its position.
        index: usize,
        /// The layer blob's digest.
        digest: Digest,
    },
    /// A layer is in the store.
    LayerDone {
        /// Its position.
        index: usize,
        /// The layer blob's digest.
        digest: Digest,
    },
}

/// A callback told of a pull's progress; called from the pull's tasks.
pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// How to pull.
#[derive(Clone, Default)]
pub struct PullOptions {
    /// Credentials given by the caller (from an imagePullSecret); tried before the auth files.
    pub credentials: Option<Credentials>,
    /// The auth files to search.
    pub auth_files: AuthFiles,
    /// Mirrors, insecure registries, blocked registries.
    pub registries: RegistriesConf,
    /// Directories of per-registry CA certificates (`<dir>/<host[:port]>/*.crt`).
    pub certs_dirs: Vec<PathBuf>,
    /// The platform to pick from a multi-platform image; `None` for this host's.
    pub platform: Option<Platform>,
    /// Told of progress.
    pub progress: Option<ProgressFn>,
}

impl fmt::Debug for PullOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PullOptions")
            .field("credentials", &self.credentials)
            .field("auth_files", &self.auth_files)
            .field("registries", &self.registries)
            .field("certs_dirs", &self.certs_dirs)
            .field("platform", &self.platform)
            .field("progress", &self.progress.as_ref().map(|_| "<callback>"))
            .finish()
    }
}

impl PullOptions {
    /// What podman would use: the auth files and registries.conf from the environment, and the
    /// certificates of `/etc/containers/certs.d` and `/etc/docker/certs.d`.
    pub fn from_env() -> Result<PullOptions, PullError> {
        Ok(PullOptions {
            auth_files: AuthFiles::from_env(),
            registries: RegistriesConf::from_env()?,
            certs_dirs: vec![
                "/etc/containers/certs.d".into(),
                "/etc/docker/certs.d".into(),
            ],
            ..PullOptions::default()
        })
    }

    fn report(&self, progress: Progress) {
        if let Some(callback) = &self.progress {
            callback(&progress);
        }
    }
}

/// What a pull did.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The image, ready to run.
    pub image: Image,
    /// Where it came from (a mirror's name, or the registry's).
    pub source: Reference,
    /// Layers downloaded.
    pub layers_downloaded: usize,
    /// Layers already in the store.
    pub layers_present: usize,
    /// Bytes downloaded (layers, config and manifests).
    pub bytes: u64,
}

/// Pulls `reference` into `store` and names it so there. Equal to `podman pull REFERENCE`.
pub async fn pull(
    store: &Store,
    reference: &Reference,
    options: &PullOptions,
) -> Result<Pulled, PullError> {
    let endpoints = options.registries.endpoints(reference)?;
    let mut last = None;
    for endpoint in endpoints {
        match pull_from(store, reference, &endpoint, options).await {
            Ok(pulled) => return Ok(pulled),
            Err(err) if endpoint.mirror => {
                tracing::warn!(error = %err, mirror = %endpoint.reference, "failed to pull from a mirror, trying the next");
                last = Some(err);
            }
            Err(err) => return Err(err),
        }
    }
    Err(last.expect("endpoints always end with the registry itself"))
}

/// One endpoint's client, reference and credentials.
struct Remote {
    client: oci_client::Client,
    reference: oci_client::Reference,
    auth: RegistryAuth,
    credentials: CredentialSource,
    name: String,
}

impl Remote {
    fn new(endpoint: &Endpoint, options: &PullOptions) -> Result<Remote, PullError> {
        // reqwest is built without a crypto provider: ring is podkit's (see Cargo.toml). Already
        // installed is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let target = &endpoint.reference;
        let registry = target.registry().to_owned();
        let config = ClientConfig {
            protocol: if endpoint.insecure {
                ClientProtocol::HttpsExcept(vec![registry.clone()])
            } else {
                ClientProtocol::Https
            },
            extra_root_certificates: certificates(&options.certs_dirs, &registry)?,
            platform_resolver: None,
            ..ClientConfig::default()
        };
        let client =
            oci_client::Client::try_from(config).map_err(|source| PullError::Registry {
                reference: target.to_string(),
                source: Box::new(source),
            })?;
        let repository = target.repository().to_owned();
        let reference = match (target.tag(), target.digest()) {
            (Some(tag), Some(digest)) => oci_client::Reference::with_tag_and_digest(
                registry.clone(),
                repository,
                tag.to_owned(),
                digest.to_string(),
            ),
            (_, Some(digest)) => {
                oci_client::Reference::with_digest(registry.clone(), repository, digest.to_string())
            }
            (tag, None) => oci_client::Reference::with_tag(
                registry.clone(),
                repository,
                tag.unwrap_or(crate::reference::DEFAULT_TAG).to_owned(),
            ),
        };
        let (auth, credentials) = match &options.credentials {
            Some(c) => (
                RegistryAuth::Basic(c.username.clone(), c.password.clone()),
                CredentialSource::Explicit,
            ),
            None => match options.auth_files.find(target)? {
                Some((c, path)) => (
                    RegistryAuth::Basic(c.username, c.password),
                    CredentialSource::File(path),
                ),
                None => (RegistryAuth::Anonymous, CredentialSource::Anonymous),
            },
        };
        Ok(Remote {
            client,
            reference,
            auth,
            credentials,
            name: target.to_string(),
        })
    }

    fn error(&self, source: OciDistributionError) -> PullError {
        let reference = self.name.clone();
        let codes: Vec<&OciErrorCode> = match &source {
            OciDistributionError::RegistryError { envelope, .. } => {
                envelope.errors.iter().map(|e| &e.code).collect()
            }
            _ => Vec::new(),
        };
        let unauthorized = matches!(
            source,
            OciDistributionError::UnauthorizedError { .. }
                | OciDistributionError::AuthenticationFailure(_)
        ) || codes
            .iter()
            .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            || matches!(
                &source,
                OciDistributionError::ServerError {
                    code: 401 | 403,
                    ..
                }
            );
        let not_found = codes.iter().any(|c| {
            matches!(
                c,
                OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown | OciErrorCode::NotFound
            )
        }) || matches!(
            &source,
            OciDistributionError::ImageManifestNotFoundError(_)
        ) || matches!(&source, OciDistributionError::ServerError { code: 404, .. });
        if unauthorized {
            return PullError::Unauthorized {
                reference,
                registry: self.reference.registry().to_owned(),
                credentials: self.credentials.clone(),
                source: Box::new(source),
            };
        }
        if not_found {
            return PullError::NotFound {
                reference,
                source: Box::new(source),
            };
        }
        PullError::Registry {
            reference,
            source: Box::new(source),
        }
    }

    async fn manifest(
        &self,
        reference: &oci_client::Reference,
    ) -> Result<(bytes::Bytes, Digest), PullError> {
        let accept = [OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX, DOCKER_LIST];
        let (bytes, digest) = self
            .client
            .pull_manifest_raw(reference, &self.auth, &accept)
            .await
            .map_err(|e| self.error(e))?;
        let digest = Digest::parse(&digest).map_err(|source| StoreError::Digest {
            what: "the registry's manifest",
            source,
        })?;
        Ok((bytes, digest))
    }

    async fn small_blob(&self, digest: &Digest) -> Result<Vec<u8>, PullError> {
        let mut out = Vec::new();
        let digest_text = digest.to_string();
        self.client
            .pull_blob(&self.reference, digest_text.as_str(), &mut out)
            .await
            .map_err(|e| self.error(e))?;
        Ok(out)
    }
}

#[derive(serde::Deserialize)]
struct MediaTypeOnly {
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    manifests: Option<serde_json::Value>,
}

async fn pull_from(
    store: &Store,
    reference: &Reference,
    endpoint: &Endpoint,
    options: &PullOptions,
) -> Result<Pulled, PullError> {
    let remote = Remote::new(endpoint, options)?;
    let name = endpoint.reference.to_string();
    tracing::info!(image = %reference, from = %name, "pulling");
    let mut bytes_total = 0u64;

    // The manifest, through an index to this platform's when it is one.
    let (mut manifest_bytes, mut manifest_digest) = remote.manifest(&remote.reference).await?;
    bytes_total += manifest_bytes.len() as u64;
    let head: MediaTypeOnly =
        serde_json::from_slice(&manifest_bytes).map_err(|source| StoreError::Json {
            what: "image manifest",
            path: PathBuf::from(&name),
            source,
        })?;
    let is_index = match head.media_type.as_deref() {
        Some(OCI_INDEX | DOCKER_LIST) => true,
        Some(_) => false,
        None => head.manifests.is_some(),
    };
    if is_index {
        let index: ImageIndex =
            serde_json::from_slice(&manifest_bytes).map_err(|source| StoreError::Json {
                what: "image index",
                path: PathBuf::from(&name),
                source,
            })?;
        let platform = options.platform.clone().unwrap_or_else(Platform::host);
        let Some(chosen) = platform.choose(index.manifests()) else {
            return Err(PullError::NoPlatform {
                reference: name,
                platform,
                available: Platform::list(index.manifests()),
            });
        };
        let chosen =
            Digest::parse(chosen.digest().as_ref()).map_err(|source| StoreError::Digest {
                what: "the image index",
                source,
            })?;
        let by_digest = remote.reference.clone_with_digest(chosen.to_string());
        (manifest_bytes, manifest_digest) = remote.manifest(&by_digest).await?;
        bytes_total += manifest_bytes.len() as u64;
        if manifest_digest != chosen {
            return Err(StoreError::DigestMismatch {
                what: "manifest",
                expected: chosen,
                actual: manifest_digest,
                size: manifest_bytes.len() as u64,
            }
            .into());
        }
    }
    let manifest: ImageManifest =
        serde_json::from_slice(&manifest_bytes).map_err(|source| StoreError::Json {
            what: "image manifest",
            path: PathBuf::from(&name),
            source,
        })?;
    let config_type = manifest.config().media_type().to_string();
    if !CONFIG_TYPES.contains(&config_type.as_str()) {
        return Err(PullError::NotAnImage {
            reference: name,
            problem: format!("its config is {config_type}"),
        });
    }
    options.report(Progress::Resolved {
        manifest: manifest_digest.clone(),
        layers: manifest.layers().len(),
    });

    let writer = {
        let store = store.clone();
        Arc::new(
            tokio::task::spawn_blocking(move || store.writer())
                .await
                .map_err(PullError::Task)??,
        )
    };

    // The config: it names the layers' diff_ids.
    let config_digest = store::config_digest(&manifest)?;
    let config_bytes = if writer.has_blob(&config_digest) {
        std::fs::read(store.blob_path(&config_digest)).map_err(|source| StoreError::Io {
            op: "read",
            path: store.blob_path(&config_digest),
            source,
        })?
    } else {
        let bytes = remote.small_blob(&config_digest).await?;
        bytes_total += bytes.len() as u64;
        let written = writer.write_blob_bytes(&bytes)?;
        if written != config_digest {
            return Err(StoreError::DigestMismatch {
                what: "config",
                expected: config_digest,
                actual: written,
                size: bytes.len() as u64,
            }
            .into());
        }
        bytes
    };
    let config = serde_json::from_slice(&config_bytes).map_err(|source| StoreError::Json {
        what: "image config",
        path: store.blob_path(&config_digest),
        source,
    })?;
    let diff_ids = store::diff_ids(&config)?;
    if diff_ids.len() != manifest.layers().len() {
        return Err(StoreError::LayerCount {
            layers: manifest.layers().len(),
            diff_ids: diff_ids.len(),
        }
        .into());
    }

    // The layers, a few at a time.
    let remote = Arc::new(remote);
    let jobs =
        manifest
            .layers()
            .iter()
            .zip(diff_ids)
            .enumerate()
            .map(|(index, (layer, diff_id))| {
                let remote = remote.clone();
                let writer = writer.clone();
                let media_type = layer.media_type().to_string();
                let size = layer.size();
                let digest = Digest::parse(layer.digest().as_ref());
                async move {
                    let digest = digest.map_err(|source| StoreError::Digest {
                        what: "the manifest's layers",
                        source,
                    })?;
                    fetch_layer(
                        &remote,
                        &writer,
                        options,
                        index,
                        &digest,
                        size,
                        &media_type,
                        &diff_id,
                    )
                    .await
                }
            });
    let fetched: Vec<u64> = futures::stream::iter(jobs)
        .buffered(PARALLEL_LAYERS)
        .try_collect()
        .await?;
    let layers_downloaded = fetched.iter().filter(|b| **b > 0).count();
    bytes_total += fetched.iter().sum::<u64>();

    // Last the manifest, and then the name: the image is complete before anything names it.
    let written = writer.write_blob_bytes(&manifest_bytes)?;
    if written != manifest_digest {
        return Err(StoreError::DigestMismatch {
            what: "manifest",
            expected: manifest_digest,
            actual: written,
            size: manifest_bytes.len() as u64,
        }
        .into());
    }
    let media_type = head
        .media_type
        .filter(|_| !is_index)
        .unwrap_or_else(|| store::manifest_media_type(&manifest));
    store.add_image(
        &manifest_digest,
        manifest_bytes.len() as u64,
        &media_type,
        Some(reference),
    )?;
    drop(writer);
    let image = store.image(&manifest_digest)?;
    tracing::info!(image = %reference, id = %image.id, layers_downloaded, bytes = bytes_total, "pulled");
    Ok(Pulled {
        layers_present: image.layers.len() - layers_downloaded,
        image,
        source: endpoint.reference.clone(),
        layers_downloaded,
        bytes: bytes_total,
    })
}

/// Downloads (unless present) and unpacks one layer; returns the bytes downloaded.
#[allow(clippy::too_many_arguments)]
async fn fetch_layer(
    remote: &Remote,
    writer: &Arc<Writer>,
    options: &PullOptions,
    index: usize,
    digest: &Digest,
    size: u64,
    media_type: &str,
    diff_id: &Digest,
) -> Result<u64, PullError> {
    if writer.has_layer(diff_id) && writer.has_blob(digest) {
        options.report(Progress::LayerPresent {
            index,
            digest: digest.clone(),
        });
        return Ok(0);
    }
    let mut downloaded = 0;
    let lock = {
        let (writer, digest) = (writer.clone(), digest.clone());
        tokio::task::spawn_blocking(move || writer.lock_blob(&digest))
            .await
            .map_err(PullError::Task)??
    };
    if let Some(lock) = lock {
        let mut temp = writer.blob_temp(digest, &lock)?;
        let digest_text = digest.to_string();
        let mut stream = remote
            .client
            .pull_blob_stream(&remote.reference, digest_text.as_str())
            .await
            .map_err(|e| remote.error(e))?;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| remote.error(OciDistributionError::IoError(e)))?;
            temp.write(&chunk)?;
            downloaded = temp.size();
            options.report(Progress::LayerBytes {
                index,
                digest: digest.clone(),
                downloaded,
                size,
            });
        }
        let (writer, digest) = (writer.clone(), digest.clone());
        tokio::task::spawn_blocking(move || {
            writer
                .commit_blob(&digest, temp, Some(size))
                .map(|()| drop(lock))
        })
        .await
        .map_err(PullError::Task)??;
    }
    // The blob is in the store now (another process may have written it meanwhile, and may be
    // unpacking it too: the layer's lock sorts that out).
    options.report(Progress::LayerUnpacking {
        index,
        digest: digest.clone(),
    });
    {
        let (writer, digest, diff_id, media_type) = (
            writer.clone(),
            digest.clone(),
            diff_id.clone(),
            media_type.to_owned(),
        );
        tokio::task::spawn_blocking(move || {
            writer.ensure_layer(&digest, Some(&media_type), &diff_id)
        })
        .await
        .map_err(PullError::Task)??;
    }
    options.report(Progress::LayerDone {
        index,
        digest: digest.clone(),
    });
    Ok(downloaded)
}

/// The PEM certificates of `<dir>/<registry>/*.crt` for each directory.
fn certificates(dirs: &[PathBuf], registry: &str) -> Result<Vec<Certificate>, PullError> {
    let mut certificates = Vec::new();
    for dir in dirs {
        let dir = dir.join(registry);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(PullError::Certs { path: dir, source }),
        };
        for entry in entries {
            let path = entry
                .map_err(|source| PullError::Certs {
                    path: dir.clone(),
                    source,
                })?
                .path();
            if path.extension().is_some_and(|e| e == "crt") {
                let data = std::fs::read(&path).map_err(|source| PullError::Certs {
                    path: path.clone(),
                    source,
                })?;
                certificates.push(Certificate {
                    encoding: CertificateEncoding::Pem,
                    data,
                });
            }
        }
    }
    Ok(certificates)
}
