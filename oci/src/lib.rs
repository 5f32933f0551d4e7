//! podkit's image store: OCI images pulled from registries or loaded from archives, kept in one
//! OCI image layout per host, with each layer unpacked once for overlayfs.
//!
//! Layout:
//! - `reference.rs`: [`Reference`], image names parsed and normalised as Docker and kubelet do;
//! - `digest.rs`: [`Digest`], the sha256 names of blobs and layers;
//! - `unpack.rs`: [`unpack()`], one layer tar applied to a fresh directory for overlayfs.

mod digest;
mod reference;
mod unpack;

pub use digest::{Digest, DigestProblem, InvalidDigest};
pub use reference::{DEFAULT_TAG, DOCKER_HUB, InvalidReference, Reference, ReferenceProblem};
pub use unpack::{Compression, UnpackError, Unpacked, UnsafeEntry, unpack};
