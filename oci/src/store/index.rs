//! `index.json`: the store's list of images, one manifest descriptor per name (and one without
//! a name for an image that lost its last one).

use std::collections::HashMap;
use std::path::Path;

use oci_spec::image::{Descriptor, ImageIndex, MediaType};

use super::{StoreError, content, io_err};
use crate::digest::Digest;
use crate::reference::Reference;

/// The annotation that names a descriptor in an OCI layout.
pub(crate) const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// One descriptor of `index.json`.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) manifest: Digest,
    pub(crate) size: u64,
    pub(crate) media_type: String,
    /// The full normalised name, or `None` for an unnamed image.
    pub(crate) reference: Option<Reference>,
}

/// `index.json` as the store reads it.
#[derive(Debug, Default)]
pub(crate) struct Index {
    pub(crate) entries: Vec<Entry>,
}

impl Index {
    pub(crate) fn load(path: &Path) -> Result<Index, StoreError> {
        let bytes = std::fs::read(path).map_err(io_err("read", path))?;
        let index: ImageIndex =
            serde_json::from_slice(&bytes).map_err(|source| StoreError::Json {
                what: "index.json",
                path: path.to_owned(),
                source,
            })?;
        let mut entries = Vec::new();
        for descriptor in index.manifests() {
            // What the store cannot use (another tool's descriptors: indexes, other digests, names
            // that are not image references) is skipped, not an error: the layout is shared.
            let Ok(manifest) = Digest::parse(descriptor.digest().as_ref()) else {
                continue;
            };
            let name = descriptor
                .annotations()
                .as_ref()
                .and_then(|a| a.get(REF_NAME));
            let reference = match name {
                Some(name) => match Reference::parse(name) {
                    Ok(reference) if reference.to_string() == *name => Some(reference),
                    _ => continue,
                },
                None => None,
            };
            entries.push(Entry {
                manifest,
                size: descriptor.size(),
                media_type: descriptor.media_type().to_string(),
                reference,
            });
        }
        Ok(Index { entries })
    }

    pub(crate) fn save(&self, path: &Path) -> Result<(), StoreError> {
        let manifests: Vec<Descriptor> = self
            .entries
            .iter()
            .map(|entry| {
                let digest: oci_spec::image::Digest = entry
                    .manifest
                    .to_string()
                    .parse()
                    .expect("a sha256 digest is an OCI digest");
                let mut descriptor = Descriptor::new(
                    MediaType::from(entry.media_type.as_str()),
                    entry.size,
                    digest,
                );
                if let Some(reference) = &entry.reference {
                    descriptor.set_annotations(Some(HashMap::from([(
                        REF_NAME.to_owned(),
                        reference.to_string(),
                    )])));
                }
                descriptor
            })
            .collect();
        let mut index = ImageIndex::default();
        index.set_media_type(Some(MediaType::ImageIndex));
        index.set_manifests(manifests);
        let json = serde_json::to_vec_pretty(&index).map_err(|source| StoreError::Json {
            what: "index.json",
            path: path.to_owned(),
            source,
        })?;
        content::write_atomic(path, &json)
    }

    /// The manifest a reference names: its exact name, else (for `repo@digest`) a manifest of
    /// that digest under any name of the same repository, or unnamed.
    pub(crate) fn find(&self, reference: &Reference) -> Option<Digest> {
        if let Some(entry) = self
            .entries
            .iter()
            .find(|e| e.reference.as_ref() == Some(reference))
        {
            return Some(entry.manifest.clone());
        }
        let digest = reference.digest()?;
        self.entries
            .iter()
            .find(|e| {
                &e.manifest == digest
                    && e.reference
                        .as_ref()
                        .is_none_or(|r| r.name() == reference.name())
            })
            .map(|e| e.manifest.clone())
    }

    /// Names `manifest` `reference` (or records it unnamed). An image that loses its last name
    /// to it stays, unnamed.
    pub(crate) fn add(
        &mut self,
        manifest: &Digest,
        size: u64,
        media_type: &str,
        reference: Option<&Reference>,
    ) {
        let entry = Entry {
            manifest: manifest.clone(),
            size,
            media_type: media_type.to_owned(),
            reference: reference.cloned(),
        };
        let Some(reference) = reference else {
            if !self.entries.iter().any(|e| &e.manifest == manifest) {
                self.entries.push(entry);
            }
            return;
        };
        if let Some(old) = self
            .entries
            .iter()
            .position(|e| e.reference.as_ref() == Some(reference))
        {
            if &self.entries[old].manifest == manifest {
                return;
            }
            let previous = self.entries.remove(old);
            if !self.entries.iter().any(|e| e.manifest == previous.manifest) {
                self.entries.push(Entry {
                    reference: None,
                    ..previous
                });
            }
        }
        self.entries
            .retain(|e| !(e.reference.is_none() && &e.manifest == manifest));
        self.entries.push(entry);
    }

    /// Removes a name; returns the manifest it named.
    pub(crate) fn remove(&mut self, reference: &Reference) -> Option<Digest> {
        let manifest = self.find(reference)?;
        let exact = self
            .entries
            .iter()
            .position(|e| e.reference.as_ref() == Some(reference));
        match exact {
            Some(at) => {
                self.entries.remove(at);
            }
            // `repo@digest` names every name of that manifest in that repository.
            None => self.entries.retain(|e| {
                !(e.manifest == manifest
                    && e.reference
                        .as_ref()
                        .is_none_or(|r| r.name() == reference.name()))
            }),
        }
        Some(manifest)
    }
}
