//! podkit's image store: OCI images pulled from registries or loaded from archives, kept in one
//! OCI image layout per host, with each layer unpacked once for overlayfs.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use oci::{PullOptions, Reference, Store};
//! let store = Store::open("/var/lib/podkit/images")?;
//! // Equal to `podman pull nginx:1.25`: docker.io/library/nginx:1.25 for this host's platform.
//! let reference = Reference::parse("nginx:1.25")?;
//! let pulled = oci::pull(&store, &reference, &PullOptions::from_env()?).await?;
//! println!("{} {}", pulled.image.id, pulled.image.layers.len());
//! // What a container's overlay mount needs: the config and the layer directories.
//! let image = store.resolve(&reference)?.expect("just pulled");
//! # let _ = image; Ok(()) }
//! ```
//!
//! Layout:
//! - `reference.rs`: [`Reference`], image names parsed and normalised as Docker and kubelet do;
//! - `digest.rs`: [`Digest`], the sha256 names of blobs and layers;
//! - `unpack.rs`: [`unpack()`], one layer tar applied to a fresh directory for overlayfs;
//! - `store.rs`: [`Store`], the OCI image layout and the unpacked layers, with its locks and
//!   garbage collection (`store/index.rs`: `index.json`; `store/content.rs`: writing blobs and
//!   layers);
//! - `platform.rs`: [`Platform`], this host's (or a chosen) OS and architecture, and picking
//!   its manifest from a multi-platform index;
//! - `pull.rs`: [`pull()`] through the OCI distribution API (`pull/auth.rs`: auth files;
//!   `pull/registries.rs`: registries.conf);
//! - `load.rs`: [`load()`] of docker-archive and oci-archive files and OCI layout directories;
//! - `bundle.rs`: [`bundle::spec`], a container's runtime `config.json` from what kubelet asks
//!   and the image's config;
//! - `seccomp.rs`: [`seccomp::runtime_default`] and [`seccomp::localhost`], the seccomp filter
//!   of `seccompProfile` (RuntimeDefault as containerd's default profile, Localhost from a
//!   Docker or runtime-spec profile file);
//! - `rootfs.rs`: [`Rootfs`], a container's overlay root filesystem.

pub mod bundle;
mod digest;
mod load;
mod platform;
mod pull;
mod reference;
mod rootfs;
pub mod seccomp;
mod store;
mod unpack;

pub use digest::{Digest, DigestProblem, InvalidDigest};
pub use load::{LoadError, Loaded, load};
pub use platform::Platform;
pub use pull::{
    AuthFiles, CredentialSource, Credentials, Endpoint, Progress, ProgressFn, PullError,
    PullOptions, Pulled, RegistriesConf, credentials_from_docker_config, pull,
};
pub use reference::{DEFAULT_TAG, DOCKER_HUB, InvalidReference, Reference, ReferenceProblem};
pub use rootfs::{MAX_LAYERS, Rootfs, RootfsError, remove as remove_rootfs};
pub use store::{Image, ImageSummary, PruneOptions, PruneReport, Store, StoreError};
pub use unpack::{Compression, UnpackError, Unpacked, UnsafeEntry, unpack};
