//! Test images built at test time from Debian's busybox-static: layers made with the tar crate,
//! written as an OCI layout that skopeo copies to a registry or into an archive.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::json;
use sha2::{Digest as _, Sha256};

pub const BUSYBOX: &str = "/bin/busybox";

pub fn sha256(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// How a layer blob is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compress {
    None,
    Gzip,
    Zstd,
}

/// A layer: its uncompressed tar and how the blob is compressed.
#[derive(Clone, Debug)]
pub struct Layer {
    pub tar: Vec<u8>,
    pub compress: Compress,
}

impl Layer {
    pub fn diff_id(&self) -> String {
        sha256(&self.tar)
    }

    pub fn blob(&self) -> (Vec<u8>, &'static str) {
        match self.compress {
            Compress::None => (self.tar.clone(), "application/vnd.oci.image.layer.v1.tar"),
            Compress::Gzip => {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(&self.tar).expect("gzip");
                (
                    gz.finish().expect("gzip"),
                    "application/vnd.oci.image.layer.v1.tar+gzip",
                )
            }
            Compress::Zstd => (
                zstd::encode_all(&self.tar[..], 3).expect("zstd"),
                "application/vnd.oci.image.layer.v1.tar+zstd",
            ),
        }
    }
}

/// A tar built entry by entry.
pub struct TarBuilder {
    builder: tar::Builder<Vec<u8>>,
}

impl TarBuilder {
    pub fn new() -> TarBuilder {
        TarBuilder {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1_700_000_000);
        header.set_size(size);
        header
    }

    pub fn dir(mut self, path: &str, mode: u32) -> Self {
        let mut header = Self::header(tar::EntryType::Directory, mode, 0);
        self.builder
            .append_data(&mut header, path, &[][..])
            .expect("dir");
        self
    }

    pub fn file(mut self, path: &str, mode: u32, data: &[u8]) -> Self {
        let mut header = Self::header(tar::EntryType::Regular, mode, data.len() as u64);
        self.builder
            .append_data(&mut header, path, data)
            .expect("file");
        self
    }

    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        let mut header = Self::header(tar::EntryType::Symlink, 0o777, 0);
        self.builder
            .append_link(&mut header, path, target)
            .expect("symlink");
        self
    }

    pub fn build(self) -> Vec<u8> {
        self.builder.into_inner().expect("tar")
    }
}

impl Default for TarBuilder {
    fn default() -> Self {
        TarBuilder::new()
    }
}

/// The base layer: busybox, `sh` and a few applets, `/etc/passwd`, `/tmp`.
pub fn busybox_layer(compress: Compress) -> Layer {
    let busybox = std::fs::read(BUSYBOX).expect("busybox-static must be installed (/bin/busybox)");
    let mut tar = TarBuilder::new()
        .dir("bin", 0o755)
        .file("bin/busybox", 0o755, &busybox)
        .dir("etc", 0o755)
        .file(
            "etc/passwd",
            0o644,
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n",
        )
        .file("etc/motd", 0o644, b"welcome\n")
        .dir("var/cache", 0o755)
        .file("var/cache/old", 0o644, b"stale\n")
        .dir("tmp", 0o1777);
    for applet in ["sh", "ls", "cat", "echo", "id", "env"] {
        tar = tar.symlink(&format!("bin/{applet}"), "busybox");
    }
    Layer {
        tar: tar.build(),
        compress,
    }
}

/// A layer with the app and whiteouts: `/etc/motd` deleted, `/var/cache` made opaque.
pub fn app_layer(compress: Compress, greeting: &str) -> Layer {
    let tar = TarBuilder::new()
        .dir("app", 0o755)
        .file("app/greeting", 0o644, greeting.as_bytes())
        .dir("etc", 0o755)
        .file("etc/.wh.motd", 0o644, b"")
        .dir("var/cache", 0o755)
        .file("var/cache/.wh..wh..opq", 0o644, b"")
        .file("var/cache/new", 0o644, b"fresh\n")
        .build();
    Layer { tar, compress }
}

/// A layer of `size` bytes of data that gzip cannot shrink, for tests that stop a download.
/// gzip-compressed: skopeo compresses a plain layer when it pushes it, which would change its
/// digest.
pub fn big_layer(size: usize, seed: u64) -> Layer {
    let mut data = vec![0u8; size];
    let mut state = seed | 1;
    for chunk in data.chunks_mut(8) {
        // xorshift64: cheap and incompressible enough.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let bytes = state.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
    let tar = TarBuilder::new()
        .dir("data", 0o755)
        .file("data/blob", 0o644, &data)
        .build();
    Layer {
        tar,
        compress: Compress::Gzip,
    }
}

/// One image's description.
pub struct ImageDef {
    pub architecture: &'static str,
    pub layers: Vec<Layer>,
}

/// A manifest written to a layout.
#[derive(Clone, Debug)]
pub struct Written {
    pub manifest_digest: String,
    pub manifest_size: u64,
    pub config_digest: String,
    pub layer_digests: Vec<String>,
    pub diff_ids: Vec<String>,
    pub architecture: &'static str,
}

/// An OCI image layout directory being written.
pub struct Layout {
    pub dir: PathBuf,
    index: Vec<serde_json::Value>,
}

impl Layout {
    pub fn new(dir: &Path) -> Layout {
        std::fs::create_dir_all(dir.join("blobs/sha256")).expect("layout");
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
            .expect("oci-layout");
        Layout {
            dir: dir.to_owned(),
            index: Vec::new(),
        }
    }

    pub fn blob(&self, bytes: &[u8]) -> String {
        let digest = sha256(bytes);
        let hex = digest.trim_start_matches("sha256:");
        std::fs::write(self.dir.join("blobs/sha256").join(hex), bytes).expect("blob");
        digest
    }

    /// Writes an image's layers, config and manifest.
    pub fn image(&self, image: &ImageDef) -> Written {
        let mut layers = Vec::new();
        let mut layer_digests = Vec::new();
        let mut diff_ids = Vec::new();
        for layer in &image.layers {
            let (blob, media_type) = layer.blob();
            let digest = self.blob(&blob);
            layers.push(json!({"mediaType": media_type, "digest": digest, "size": blob.len()}));
            layer_digests.push(digest);
            diff_ids.push(layer.diff_id());
        }
        let config = json!({
            "created": "2024-05-01T12:00:00Z",
            "architecture": image.architecture,
            "os": "linux",
            "config": {
                "Entrypoint": ["/bin/sh", "-c"],
                "Cmd": ["echo hello from $GREETING"],
                "Env": ["PATH=/usr/bin:/bin", "GREETING=podkit"],
                "User": "65534:65534",
                "WorkingDir": "/app"
            },
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created_by": "podkit tests"}]
        });
        let config_bytes = serde_json::to_vec(&config).expect("config");
        let config_digest = self.blob(&config_bytes);
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config_bytes.len()
            },
            "layers": layers
        });
        let manifest_bytes = serde_json::to_vec(&manifest).expect("manifest");
        let manifest_digest = self.blob(&manifest_bytes);
        Written {
            manifest_digest,
            manifest_size: manifest_bytes.len() as u64,
            config_digest,
            layer_digests,
            diff_ids,
            architecture: image.architecture,
        }
    }

    /// Names a single image `name` in index.json.
    pub fn tag(&mut self, name: &str, written: &Written) {
        self.index.push(json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": written.manifest_digest,
            "size": written.manifest_size,
            "annotations": {"org.opencontainers.image.ref.name": name}
        }));
        self.save();
    }

    /// Names an index of several images `name` in index.json; returns the index digest.
    pub fn tag_index(&mut self, name: &str, images: &[Written]) -> String {
        let manifests: Vec<_> = images
            .iter()
            .map(|w| {
                json!({
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": w.manifest_digest,
                    "size": w.manifest_size,
                    "platform": {"os": "linux", "architecture": w.architecture}
                })
            })
            .collect();
        let index = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests
        });
        let bytes = serde_json::to_vec(&index).expect("index");
        let digest = self.blob(&bytes);
        self.index.push(json!({
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": digest,
            "size": bytes.len(),
            "annotations": {"org.opencontainers.image.ref.name": name}
        }));
        self.save();
        digest
    }

    fn save(&self) {
        let index = json!({"schemaVersion": 2, "manifests": self.index});
        std::fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&index).expect("index"),
        )
        .expect("index.json");
    }
}

/// Runs skopeo (with a policy that accepts anything, so no /etc/containers/policy.json is
/// needed) and fails the test with its output if it fails.
pub fn skopeo(args: &[&str]) -> String {
    let output = std::process::Command::new("skopeo")
        .arg("--insecure-policy")
        .args(args)
        .output()
        .expect("skopeo must be installed");
    assert!(
        output.status.success(),
        "skopeo {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
