//! The store without a registry: loads of the archives `docker save` and `podman save` write
//! (made here by skopeo from a layout built at test time), names, removal, pruning, and what a
//! killed writer leaves behind.

use std::path::{Path, PathBuf};

use oci::{Digest, LoadError, PruneOptions, Reference, Store, StoreError};
use oci_testing::images;
use oci_testing::images::{Compress, ImageDef, Layout, Written, skopeo};

fn reference(text: &str) -> Reference {
    Reference::parse(text).expect(text)
}

fn digest(text: &str) -> Digest {
    Digest::parse(text).expect(text)
}

struct Fixture {
    dir: tempfile::TempDir,
    app: Written,
    other: Written,
}

/// A layout with `app` (busybox + app layer with whiteouts) and `other` (busybox + another app
/// layer), sharing the busybox layer.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut layout = Layout::new(&dir.path().join("layout"));
    let app = layout.image(&ImageDef {
        architecture: "amd64",
        layers: vec![
            images::busybox_layer(Compress::Gzip),
            images::app_layer(Compress::Gzip, "hello\n"),
        ],
    });
    layout.tag("app", &app);
    let other = layout.image(&ImageDef {
        architecture: "amd64",
        layers: vec![
            images::busybox_layer(Compress::Gzip),
            images::app_layer(Compress::Zstd, "other\n"),
        ],
    });
    layout.tag("other", &other);
    Fixture { dir, app, other }
}

impl Fixture {
    fn layout(&self) -> PathBuf {
        self.dir.path().join("layout")
    }

    fn store(&self) -> Store {
        Store::open(self.dir.path().join("store")).expect("store")
    }
}

fn layer_dirs(store: &Store) -> usize {
    std::fs::read_dir(store.root().join("layers/sha256"))
        .expect("layers")
        .count()
}

fn blobs(store: &Store) -> usize {
    std::fs::read_dir(store.root().join("blobs/sha256"))
        .expect("blobs")
        .count()
}

#[test]
fn loads_a_docker_archive_as_docker_save_writes_it() {
    let f = fixture();
    let archive = f.dir.path().join("app.tar");
    skopeo(&[
        "copy",
        &format!("oci:{}:app", f.layout().display()),
        &format!("docker-archive:{}:busybox-app:1.0", archive.display()),
    ]);
    let store = f.store();
    let loaded = oci::load(&store, &archive).expect("load docker-archive");
    assert_eq!(loaded.len(), 1);
    let name = reference("docker.io/library/busybox-app:1.0");
    assert_eq!(
        loaded[0].references,
        std::slice::from_ref(&name),
        "RepoTags normalised as Docker does"
    );
    assert_eq!(
        loaded[0].id,
        digest(&f.app.config_digest),
        "the image id is the config's digest"
    );
    let image = store.resolve(&name).expect("resolve").expect("loaded");
    assert_eq!(image.layers.len(), 2);
    assert_eq!(
        image.layers[0],
        store.layer_path(&digest(&f.app.diff_ids[0]))
    );
    assert!(
        image.layers[1].join("etc/motd").exists(),
        "the whiteout, as a device"
    );
    // The extracted archive does not stay in tmp/.
    assert_eq!(
        std::fs::read_dir(store.root().join("tmp"))
            .expect("tmp")
            .count(),
        0
    );
    // skopeo reads the store.
    let inspect = skopeo(&["inspect", &format!("oci:{}:{name}", store.root().display())]);
    assert!(
        inspect.contains(&f.app.diff_ids[0]) || inspect.contains("Layers"),
        "{inspect}"
    );
}

#[test]
fn loads_an_oci_archive_and_a_layout_directory() {
    let f = fixture();
    let archive = f.dir.path().join("app-oci.tar");
    skopeo(&[
        "copy",
        &format!("oci:{}:app", f.layout().display()),
        &format!("oci-archive:{}:quay.io/team/app:2", archive.display()),
    ]);
    let store = f.store();
    let loaded = oci::load(&store, &archive).expect("load oci-archive");
    assert_eq!(loaded[0].references, [reference("quay.io/team/app:2")]);
    assert_eq!(
        loaded[0].manifest_digest,
        digest(&f.app.manifest_digest),
        "the manifest digest is kept"
    );

    // The layout directory: names that are only tags (`app`, `other`) load as unnamed images.
    let loaded = oci::load(&store, &f.layout()).expect("load layout");
    assert_eq!(loaded.len(), 2);
    assert!(loaded.iter().all(|l| l.references.is_empty()));
    let images = store.images().expect("images");
    assert_eq!(images.len(), 2, "{images:?}");
    let unnamed = images
        .iter()
        .find(|i| i.references.is_empty())
        .expect("an unnamed image");
    assert_eq!(unnamed.manifest_digest, digest(&f.other.manifest_digest));
    store
        .tag(&unnamed.manifest_digest, &reference("other:1"))
        .expect("tag");
    assert!(
        store
            .resolve(&reference("docker.io/library/other:1"))
            .expect("resolve")
            .is_some()
    );
    // The busybox layer is shared: three layer directories for four layers.
    assert_eq!(layer_dirs(&store), 3);
}

#[test]
fn refuses_what_is_not_an_archive() {
    let f = fixture();
    let store = f.store();
    let not_tar = f.dir.path().join("junk.tar");
    std::fs::write(&not_tar, b"this is not a tar").expect("write");
    assert!(oci::load(&store, &not_tar).is_err());
    let empty = f.dir.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    let err = oci::load(&store, &empty).expect_err("empty dir");
    assert!(matches!(err, LoadError::Format { .. }), "{err}");
}

#[test]
fn archive_paths_stay_inside_the_archive() {
    let f = fixture();
    let store = f.store();
    // A manifest.json whose config path climbs out: resolved inside the archive, so not found.
    let secret = f.dir.path().join("secret.json");
    std::fs::write(
        &secret,
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
    )
    .expect("secret");
    let manifest = serde_json::json!([{"Config": format!("../../../../../..{}", secret.display()), "RepoTags": ["x:1"], "Layers": []}]);
    let tar = images::TarBuilder::new()
        .file("manifest.json", 0o644, manifest.to_string().as_bytes())
        .build();
    let archive = f.dir.path().join("hostile.tar");
    std::fs::write(&archive, tar).expect("archive");
    let err = oci::load(&store, &archive).expect_err("hostile");
    assert!(matches!(err, LoadError::Read { .. }), "{err}");
    assert!(store.images().expect("images").is_empty());
}

#[test]
fn names_move_and_removal_and_prune_collect_garbage() {
    let f = fixture();
    let store = f.store();
    let app_archive = f.dir.path().join("app.tar");
    let other_archive = f.dir.path().join("other.tar");
    skopeo(&[
        "copy",
        &format!("oci:{}:app", f.layout().display()),
        &format!("oci-archive:{}:r.io/x:1", app_archive.display()),
    ]);
    skopeo(&[
        "copy",
        &format!("oci:{}:other", f.layout().display()),
        &format!("oci-archive:{}:r.io/x:1", other_archive.display()),
    ]);
    let name = reference("r.io/x:1");
    oci::load(&store, &app_archive).expect("load app");
    let app_id = digest(&f.app.config_digest);
    assert_eq!(
        store.resolve(&name).expect("resolve").expect("app").id,
        app_id
    );
    oci::load(&store, &other_archive).expect("load other");
    // The name moved; the app image stays, unnamed, until pruned.
    assert_eq!(
        store.resolve(&name).expect("resolve").expect("other").id,
        digest(&f.other.config_digest)
    );
    let images = store.images().expect("images");
    assert_eq!(images.len(), 2);
    assert!(
        images
            .iter()
            .any(|i| i.id == app_id && i.references.is_empty())
    );
    // skopeo sees only named images by name, and the layout stays valid for it.
    skopeo(&["inspect", &format!("oci:{}:{name}", store.root().display())]);

    // In use: kept by prune.
    let in_use = PruneOptions {
        all: false,
        in_use: [app_id.clone()].into(),
    };
    let report = store.prune(&in_use).expect("prune in use");
    assert!(
        report.images.is_empty() && report.blobs == 0 && report.layers == 0,
        "{report:?}"
    );
    assert_eq!(layer_dirs(&store), 3);

    // Not in use: the app image, its manifest, config, app layer blob and layer directory go;
    // the shared busybox layer stays.
    let report = store.prune(&PruneOptions::default()).expect("prune");
    assert_eq!(report.images, std::slice::from_ref(&app_id));
    assert_eq!((report.blobs, report.layers), (3, 1), "{report:?}");
    assert_eq!(layer_dirs(&store), 2);
    assert!(store.lookup(app_id.hex()).expect("lookup").is_none());

    // rmi: the name goes, and with it everything.
    assert_eq!(
        store.remove(&name).expect("remove"),
        Some(digest(&f.other.manifest_digest))
    );
    assert_eq!(store.remove(&name).expect("remove again"), None);
    assert!(store.images().expect("images").is_empty());
    assert_eq!((layer_dirs(&store), blobs(&store)), (0, 0));
}

#[test]
fn prune_all_keeps_images_in_use() {
    let f = fixture();
    let store = f.store();
    oci::load(&store, &f.layout()).expect("load");
    store
        .tag(&digest(&f.app.manifest_digest), &reference("app:1"))
        .expect("tag");
    store
        .tag(&digest(&f.other.manifest_digest), &reference("other:1"))
        .expect("tag");
    let keep = PruneOptions {
        all: true,
        in_use: [digest(&f.other.config_digest)].into(),
    };
    let report = store.prune(&keep).expect("prune -a");
    assert_eq!(report.images, [digest(&f.app.config_digest)]);
    let left = store.images().expect("images");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].references, [reference("other:1")]);
    assert!(
        store
            .resolve(&reference("other:1"))
            .expect("resolve")
            .is_some(),
        "its layers are all there"
    );
}

#[test]
fn what_a_killed_writer_left_is_never_trusted() {
    let f = fixture();
    let store = f.store();
    // What a pull killed half-way leaves: a partial blob and a partial layer, under tmp/ only.
    let layer_hex = f.app.layer_digests[0].trim_start_matches("sha256:");
    let diff_hex = f.app.diff_ids[0].trim_start_matches("sha256:");
    let stale_blob = store
        .root()
        .join(format!("tmp/blob-{layer_hex}.99999.0123456789abcdef"));
    std::fs::write(&stale_blob, b"half a layer").expect("stale blob");
    let stale_layer = store
        .root()
        .join(format!("tmp/layer-{diff_hex}.99999.0123456789abcdef"));
    std::fs::create_dir_all(stale_layer.join("bin")).expect("stale layer");
    assert!(store.images().expect("images").is_empty());

    oci::load(&store, &f.layout()).expect("load");
    assert!(
        !stale_blob.exists(),
        "the next writer of that blob removed the stale temp"
    );
    assert!(
        !stale_layer.exists(),
        "the next writer of that layer removed the stale temp"
    );
    // A leftover of something nobody writes again goes with the next garbage collection.
    let orphan = store.root().join("tmp/blob-unrelated.1.2");
    std::fs::write(&orphan, b"x").expect("orphan");
    store
        .prune(&PruneOptions {
            all: false,
            in_use: Default::default(),
        })
        .expect("prune");
    assert!(!orphan.exists());
}

#[test]
fn a_missing_layer_is_reported_not_trusted() {
    let f = fixture();
    let store = f.store();
    oci::load(&store, &f.layout()).expect("load");
    store
        .tag(&digest(&f.app.manifest_digest), &reference("app:1"))
        .expect("tag");
    std::fs::remove_dir_all(store.layer_path(&digest(&f.app.diff_ids[1]))).expect("remove a layer");
    let err = store.resolve(&reference("app:1")).expect_err("incomplete");
    assert!(matches!(err, StoreError::Incomplete { .. }), "{err}");
}

#[test]
fn a_corrupt_layer_is_refused_by_its_diff_id() {
    let f = fixture();
    // A layout whose config names the wrong diff_id for its layer.
    let dir = f.dir.path().join("corrupt");
    copy_dir(&f.layout(), &dir);
    let config_path = dir
        .join("blobs/sha256")
        .join(f.app.config_digest.trim_start_matches("sha256:"));
    let config = std::fs::read_to_string(&config_path).expect("config");
    let wrong = format!("sha256:{}", "ab".repeat(32));
    let forged = config.replace(&f.app.diff_ids[1], &wrong);
    let forged_digest = images::sha256(forged.as_bytes());
    std::fs::write(
        dir.join("blobs/sha256")
            .join(forged_digest.trim_start_matches("sha256:")),
        &forged,
    )
    .expect("config");
    let manifest_path = dir
        .join("blobs/sha256")
        .join(f.app.manifest_digest.trim_start_matches("sha256:"));
    let manifest = std::fs::read_to_string(&manifest_path)
        .expect("manifest")
        .replace(&f.app.config_digest, &forged_digest);
    let manifest_digest = images::sha256(manifest.as_bytes());
    std::fs::write(
        dir.join("blobs/sha256")
            .join(manifest_digest.trim_start_matches("sha256:")),
        &manifest,
    )
    .expect("manifest");
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": manifest_digest, "size": manifest.len(),
        "annotations": {"org.opencontainers.image.ref.name": "r.io/corrupt:1"}
    }]});
    std::fs::write(dir.join("index.json"), index.to_string()).expect("index");
    let store = f.store();
    let err = oci::load(&store, &dir).expect_err("corrupt");
    assert!(
        matches!(err, LoadError::Store(StoreError::DiffIdMismatch { .. })),
        "{err}"
    );
    assert!(store.images().expect("images").is_empty());
    assert!(
        !store.layer_path(&digest(&wrong)).exists(),
        "no layer published under a wrong name"
    );
    assert!(!store.layer_path(&digest(&f.app.diff_ids[1])).exists());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("ls") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}
