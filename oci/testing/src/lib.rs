//! Test support shared by the image store's tests (`oci/tests/`) and the image verbs' end-to-end
//! tests (`tests/images.rs`): nothing here ships in podkit.
//!
//! Layout:
//! - `registry.rs`: Debian's `docker-registry` on 127.0.0.1, pushes to it with skopeo, and a
//!   proxy that can hold a download half-way;
//! - `token.rs`: a token server as Docker Hub's auth service works (JWTs for the registry);
//! - `images.rs`: test images built at test time from busybox-static, as OCI layouts.

// Test fixtures (tar and layout builders, a registry process) that no test prints.
#![allow(missing_debug_implementations)]

pub mod images;
pub mod registry;
pub mod token;
