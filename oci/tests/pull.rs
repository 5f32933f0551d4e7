//! Pulls from a real registry (Debian's docker-registry on 127.0.0.1) of images built at test
//! time from busybox-static: plain http through registries.conf, basic auth, bearer tokens from a
//! token server, TLS with a test CA, multi-arch indexes, mirrors, a pull SIGKILLed half-way, two
//! processes pulling at once.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use oci::{
    AuthFiles, Credentials, Digest, Platform, Progress, PullError, PullOptions, Reference,
    RegistriesConf, Store,
};
use oci_testing::images;
use oci_testing::images::{Compress, ImageDef, Layout, Written};
use oci_testing::registry::{Options, Proxy, Registry, push, wait_for};
use oci_testing::token::TokenServer;

/// A layout with `test/app:1` (busybox gzip, app zstd with whiteouts) and `test/multi:1` (an
/// index of amd64 and arm64 images).
struct Fixture {
    dir: tempfile::TempDir,
    app: Written,
    multi: Vec<Written>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut layout = Layout::new(&dir.path().join("layout"));
    let app = layout.image(&ImageDef {
        architecture: "amd64",
        layers: vec![
            images::busybox_layer(Compress::Gzip),
            images::app_layer(Compress::Zstd, "hello\n"),
        ],
    });
    layout.tag("app", &app);
    let multi: Vec<Written> = ["amd64", "arm64"]
        .iter()
        .map(|arch| {
            let marker = images::TarBuilder::new()
                .file("arch", 0o644, arch.as_bytes())
                .build();
            layout.image(&ImageDef {
                architecture: arch,
                layers: vec![
                    images::busybox_layer(Compress::Gzip),
                    images::Layer {
                        tar: marker,
                        compress: Compress::Gzip,
                    },
                ],
            })
        })
        .collect();
    layout.tag_index("multi", &multi);
    Fixture { dir, app, multi }
}

impl Fixture {
    fn layout(&self) -> PathBuf {
        self.dir.path().join("layout")
    }
}

/// registries.conf marking `addrs` insecure (plain http), in a temp file.
fn insecure_conf(dir: &Path, addrs: &[&str]) -> RegistriesConf {
    let mut text = String::new();
    for addr in addrs {
        text += &format!("[[registry]]\nlocation = \"{addr}\"\ninsecure = true\n\n");
    }
    let path = dir.join("registries.conf");
    std::fs::write(&path, text).expect("registries.conf");
    RegistriesConf::load(&path, &[]).expect("load registries.conf")
}

fn options(registries: RegistriesConf) -> PullOptions {
    PullOptions {
        registries,
        auth_files: AuthFiles::new(Vec::new()),
        ..PullOptions::default()
    }
}

fn reference(text: &str) -> Reference {
    Reference::parse(text).expect(text)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// An auth file as `podman login` writes it, for `user` at `registry`.
fn write_auth_file(path: &Path, registry: &str, user: &str, password: &str) {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let json = format!(r#"{{"auths": {{"{registry}": {{"auth": "{auth}"}}}}}}"#);
    std::fs::write(path, json).expect("auth.json");
}

fn digest(text: &str) -> Digest {
    Digest::parse(text).expect(text)
}

#[test]
fn pulls_over_plain_http_with_whiteouts_zstd_and_progress() {
    let fixture = fixture();
    let registry = Registry::start(Options::default());
    push(
        &fixture.layout(),
        "app",
        &format!("{}/test/app:1", registry.addr),
        None,
        false,
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = Store::open(tmp.path().join("store")).expect("store");
    let image_ref = reference(&format!("{}/test/app:1", registry.addr));

    // Without registries.conf the registry is spoken to over https, which it does not serve.
    let err = runtime()
        .block_on(oci::pull(
            &store,
            &image_ref,
            &options(RegistriesConf::default()),
        ))
        .expect_err("https");
    assert!(matches!(err, PullError::Registry { .. }), "{err}");

    let events = Arc::new(Mutex::new(Vec::new()));
    let mut opts = options(insecure_conf(tmp.path(), &[&registry.addr]));
    let seen = events.clone();
    opts.progress = Some(Arc::new(move |p: &Progress| {
        seen.lock().expect("events").push(p.clone())
    }));
    let pulled = runtime()
        .block_on(oci::pull(&store, &image_ref, &opts))
        .expect("pull");
    assert_eq!(pulled.image.id, digest(&fixture.app.config_digest));
    assert_eq!(
        pulled.image.manifest_digest,
        digest(&fixture.app.manifest_digest)
    );
    assert_eq!((pulled.layers_downloaded, pulled.layers_present), (2, 0));
    let process = pulled.image.config.config().clone().expect("config");
    assert_eq!(
        process.entrypoint().as_deref(),
        Some(&["/bin/sh".to_owned(), "-c".to_owned()][..])
    );
    assert_eq!(process.user().as_deref(), Some("65534:65534"));

    // The layers, unpacked: busybox below, the app's whiteouts above.
    let [base, app] = &pulled.image.layers[..] else {
        panic!("two layers")
    };
    assert_eq!(*base, store.layer_path(&digest(&fixture.app.diff_ids[0])));
    assert_eq!(
        std::fs::read(base.join("bin/busybox")).expect("busybox"),
        std::fs::read(images::BUSYBOX).expect("busybox")
    );
    let whiteout = std::fs::symlink_metadata(app.join("etc/motd")).expect("whiteout");
    assert!(whiteout.file_type().is_char_device() && whiteout.rdev() == 0);
    assert_eq!(
        xattr::get(app.join("var/cache"), "trusted.overlay.opaque")
            .expect("xattr")
            .as_deref(),
        Some(&b"y"[..])
    );

    let events = events.lock().expect("events").clone();
    assert!(
        matches!(events.first(), Some(Progress::Resolved { layers: 2, .. })),
        "{events:?}"
    );
    for index in 0..2 {
        let last_bytes = events.iter().rev().find_map(|e| match e {
            Progress::LayerBytes {
                index: i,
                downloaded,
                size,
                ..
            } if *i == index => Some((*downloaded, *size)),
            _ => None,
        });
        let (downloaded, size) = last_bytes.expect("bytes reported");
        assert_eq!(downloaded, size, "layer {index} fully reported");
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Progress::LayerDone { index: i, .. } if *i == index))
        );
    }

    // Listed, resolved, found by id; pulled again, nothing is downloaded.
    let listed = store.images().expect("images");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].references, std::slice::from_ref(&image_ref));
    assert_eq!(
        listed[0].created.map(|t| t.to_string()).as_deref(),
        Some("2024-05-01T12:00:00Z")
    );
    let resolved = store.resolve(&image_ref).expect("resolve").expect("found");
    assert_eq!(resolved.layers, pulled.image.layers);
    let by_id = store
        .lookup(pulled.image.id.short())
        .expect("lookup")
        .expect("by id");
    assert_eq!(by_id.manifest_digest, pulled.image.manifest_digest);
    registry.sync_log();
    let gets = registry.all_blob_gets();
    let again = runtime()
        .block_on(oci::pull(&store, &image_ref, &opts))
        .expect("pull again");
    assert_eq!((again.layers_downloaded, again.layers_present), (0, 2));
    registry.sync_log();
    assert_eq!(registry.all_blob_gets(), gets, "no blob downloaded again");

    // skopeo reads the store as an OCI layout, by the full name.
    let inspect = images::skopeo(&[
        "inspect",
        &format!("oci:{}:{image_ref}", store.root().display()),
    ]);
    let inspect: serde_json::Value = serde_json::from_str(&inspect).expect("skopeo json");
    assert_eq!(inspect["Digest"], fixture.app.manifest_digest);
    assert_eq!(inspect["Architecture"], "amd64");
    let config = images::skopeo(&[
        "inspect",
        "--config",
        &format!("oci:{}:{image_ref}", store.root().display()),
    ]);
    assert!(config.contains("GREETING=podkit"), "{config}");
}

#[test]
fn pulls_by_digest_and_resolves_multi_arch_indexes() {
    let fixture = fixture();
    let registry = Registry::start(Options::default());
    push(
        &fixture.layout(),
        "multi",
        &format!("{}/test/multi:1", registry.addr),
        None,
        true,
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = Store::open(tmp.path().join("store")).expect("store");
    let mut opts = options(insecure_conf(tmp.path(), &[&registry.addr]));
    let rt = runtime();

    let multi = reference(&format!("{}/test/multi:1", registry.addr));
    let host = rt
        .block_on(oci::pull(&store, &multi, &opts))
        .expect("pull host platform");
    let host_arch = Platform::host().architecture;
    let expected = fixture
        .multi
        .iter()
        .find(|w| w.architecture == host_arch)
        .expect("test images for this host");
    assert_eq!(
        host.image.manifest_digest,
        digest(&expected.manifest_digest)
    );
    assert_eq!(
        std::fs::read(host.image.layers[1].join("arch")).expect("marker"),
        host_arch.as_bytes()
    );

    opts.platform = Some(Platform::new("linux", "arm64", None));
    let arm = reference(&format!("{}/test/multi:1", registry.addr));
    let arm_image = rt
        .block_on(oci::pull(&store, &arm, &opts))
        .expect("pull arm64");
    assert_eq!(
        std::fs::read(arm_image.image.layers[1].join("arch")).expect("marker"),
        b"arm64"
    );
    assert_eq!(
        arm_image.layers_present, 1,
        "the shared busybox layer is not downloaded twice"
    );

    opts.platform = Some(Platform::new("linux", "s390x", None));
    let err = rt
        .block_on(oci::pull(&store, &multi, &opts))
        .expect_err("no s390x");
    let message = err.to_string();
    assert!(matches!(err, PullError::NoPlatform { .. }), "{message}");
    assert!(message.contains("linux/amd64, linux/arm64"), "{message}");

    // By the digest of one manifest.
    opts.platform = None;
    let amd = &fixture.multi[0];
    let by_digest = reference(&format!(
        "{}/test/multi@{}",
        registry.addr, amd.manifest_digest
    ));
    let pulled = rt
        .block_on(oci::pull(&store, &by_digest, &opts))
        .expect("pull by digest");
    assert_eq!(pulled.image.id, digest(&amd.config_digest));
    assert!(store.resolve(&by_digest).expect("resolve").is_some());
    let names: Vec<String> = store
        .images()
        .expect("images")
        .iter()
        .flat_map(|i| i.references.iter().map(|r| r.to_string()))
        .collect();
    assert!(names.contains(&by_digest.to_string()), "{names:?}");

    // A tag the registry does not have.
    let missing = reference(&format!("{}/test/multi:nope", registry.addr));
    let err = rt
        .block_on(oci::pull(&store, &missing, &opts))
        .expect_err("missing");
    assert!(matches!(err, PullError::NotFound { .. }), "{err}");
}

#[test]
fn basic_auth_from_auth_files_and_explicit_credentials() {
    let fixture = fixture();
    let registry = Registry::start(Options {
        user: Some(("alice".into(), "s3cret".into())),
        ..Options::default()
    });
    push(
        &fixture.layout(),
        "app",
        &format!("{}/private/app:1", registry.addr),
        Some("alice:s3cret"),
        false,
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = Store::open(tmp.path().join("store")).expect("store");
    let image_ref = reference(&format!("{}/private/app:1", registry.addr));
    let rt = runtime();
    let base = options(insecure_conf(tmp.path(), &[&registry.addr]));

    // Anonymous: refused, and the message says so.
    let err = rt
        .block_on(oci::pull(&store, &image_ref, &base))
        .expect_err("anonymous");
    assert!(matches!(err, PullError::Unauthorized { .. }), "{err}");
    assert!(err.to_string().contains("anonymous access"), "{err}");

    // Wrong password in an auth file: refused, naming the file.
    let auth_file = tmp.path().join("auth.json");
    let write_auth = |user: &str, password: &str| {
        write_auth_file(&auth_file, &registry.addr, user, password);
    };
    write_auth("alice", "wrong");
    let with_file = PullOptions {
        auth_files: AuthFiles::new(vec![auth_file.clone()]),
        ..base.clone()
    };
    let err = rt
        .block_on(oci::pull(&store, &image_ref, &with_file))
        .expect_err("wrong password");
    let message = err.to_string();
    assert!(matches!(err, PullError::Unauthorized { .. }), "{message}");
    assert!(
        message.contains(&auth_file.display().to_string()) && message.contains("podman login"),
        "{message}"
    );

    write_auth("alice", "s3cret");
    let pulled = rt
        .block_on(oci::pull(&store, &image_ref, &with_file))
        .expect("pull with auth.json");
    assert_eq!(pulled.image.id, digest(&fixture.app.config_digest));

    // Explicit credentials (an imagePullSecret) come before the files.
    write_auth("alice", "wrong");
    let explicit = PullOptions {
        credentials: Some(Credentials {
            username: "alice".into(),
            password: "s3cret".into(),
        }),
        ..with_file.clone()
    };
    let fresh = Store::open(tmp.path().join("store2")).expect("store");
    rt.block_on(oci::pull(&fresh, &image_ref, &explicit))
        .expect("pull with explicit credentials");
    let explicit_wrong = PullOptions {
        credentials: Some(Credentials {
            username: "alice".into(),
            password: "nope".into(),
        }),
        ..with_file
    };
    let err = rt
        .block_on(oci::pull(&fresh, &image_ref, &explicit_wrong))
        .expect_err("explicit wrong");
    assert!(err.to_string().contains("imagePullSecrets"), "{err}");
}

/// Token authentication as Docker Hub uses it: the registry's 401 names a token server; an
/// anonymous token pulls a public repository, a private one needs the user's credentials (from
/// an auth file), and the token server refuses wrong ones.
#[test]
fn bearer_tokens_anonymous_and_with_credentials() {
    let fixture = fixture();
    let tmp = tempfile::tempdir().expect("tempdir");
    let tokens = TokenServer::start(tmp.path(), ("alice", "s3cret"));
    let registry = Registry::start(Options {
        token: Some((tokens.realm.clone(), tokens.cert.clone())),
        ..Options::default()
    });
    for name in ["public/app:1", "private/app:1"] {
        push(
            &fixture.layout(),
            "app",
            &format!("{}/{name}", registry.addr),
            Some("alice:s3cret"),
            false,
        );
    }
    let store = Store::open(tmp.path().join("store")).expect("store");
    let rt = runtime();
    let base = options(insecure_conf(tmp.path(), &[&registry.addr]));
    let granted = |user: Option<&str>, scope: &str| {
        tokens
            .requests()
            .iter()
            .any(|r| r.granted && r.user.as_deref() == user && r.scopes.iter().any(|s| s == scope))
    };

    // A public repository: an anonymous token.
    let public = reference(&format!("{}/public/app:1", registry.addr));
    let pulled = rt
        .block_on(oci::pull(&store, &public, &base))
        .expect("anonymous pull of a public repository");
    assert_eq!(pulled.image.id, digest(&fixture.app.config_digest));
    assert!(
        granted(None, "repository:public/app:pull"),
        "{:?}",
        tokens.requests()
    );

    // A private one: the anonymous token does not let it pull.
    let private = reference(&format!("{}/private/app:1", registry.addr));
    let fresh = Store::open(tmp.path().join("store2")).expect("store");
    let err = rt
        .block_on(oci::pull(&fresh, &private, &base))
        .expect_err("anonymous pull of a private repository");
    assert!(matches!(err, PullError::Unauthorized { .. }), "{err}");
    assert!(err.to_string().contains("anonymous access"), "{err}");

    // Wrong credentials: the token server refuses them; the error names the auth file.
    let auth_file = tmp.path().join("auth.json");
    let write_auth = |password: &str| {
        write_auth_file(&auth_file, &registry.addr, "alice", password);
    };
    write_auth("wrong");
    let with_file = PullOptions {
        auth_files: AuthFiles::new(vec![auth_file.clone()]),
        ..base.clone()
    };
    let err = rt
        .block_on(oci::pull(&fresh, &private, &with_file))
        .expect_err("wrong password");
    assert!(matches!(err, PullError::Unauthorized { .. }), "{err}");
    assert!(
        err.to_string().contains(&auth_file.display().to_string()),
        "{err}"
    );
    assert!(
        tokens
            .requests()
            .iter()
            .any(|r| !r.granted && r.user.as_deref() == Some("alice")),
        "{:?}",
        tokens.requests()
    );

    // The right ones: a token for alice, and the image.
    write_auth("s3cret");
    let pulled = rt
        .block_on(oci::pull(&fresh, &private, &with_file))
        .expect("pull with a token for alice");
    assert_eq!(pulled.image.id, digest(&fixture.app.config_digest));
    assert!(
        granted(Some("alice"), "repository:private/app:pull"),
        "{:?}",
        tokens.requests()
    );
}

#[test]
fn tls_with_a_test_ca() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "podkit test CA");
    let ca = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let server_key = rcgen::KeyPair::generate().expect("key");
    let server_params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
    let server = server_params
        .signed_by(&server_key, &issuer)
        .expect("server cert");
    let (cert, key) = (tmp.path().join("server.crt"), tmp.path().join("server.key"));
    std::fs::write(&cert, server.pem()).expect("cert");
    std::fs::write(&key, server_key.serialize_pem()).expect("key");

    let fixture = fixture();
    let registry = Registry::start(Options {
        tls: Some((cert, key)),
        ..Options::default()
    });
    push(
        &fixture.layout(),
        "app",
        &format!("{}/test/app:1", registry.addr),
        None,
        false,
    );
    let store = Store::open(tmp.path().join("store")).expect("store");
    let image_ref = reference(&format!("{}/test/app:1", registry.addr));
    let rt = runtime();

    let err = rt
        .block_on(oci::pull(
            &store,
            &image_ref,
            &options(RegistriesConf::default()),
        ))
        .expect_err("unknown CA");
    assert!(matches!(err, PullError::Registry { .. }), "{err}");

    let certs = tmp.path().join("certs.d");
    std::fs::create_dir_all(certs.join(&registry.addr)).expect("certs.d");
    std::fs::write(certs.join(&registry.addr).join("ca.crt"), ca.pem()).expect("ca.crt");
    let opts = PullOptions {
        certs_dirs: vec![certs],
        ..options(RegistriesConf::default())
    };
    let pulled = rt
        .block_on(oci::pull(&store, &image_ref, &opts))
        .expect("pull over TLS");
    assert_eq!(pulled.image.id, digest(&fixture.app.config_digest));
}

#[test]
fn mirrors_are_tried_first_and_fall_back() {
    let fixture = fixture();
    let primary = Registry::start(Options::default());
    let mirror = Registry::start(Options::default());
    push(
        &fixture.layout(),
        "app",
        &format!("{}/hub/team/app:1", mirror.addr),
        None,
        false,
    );
    push(
        &fixture.layout(),
        "multi",
        &format!("{}/team/multi:1", primary.addr),
        None,
        true,
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let conf = format!(
        "[[registry]]\nlocation = \"{p}\"\ninsecure = true\n[[registry.mirror]]\nlocation = \"{m}/hub\"\ninsecure = true\n",
        p = primary.addr,
        m = mirror.addr
    );
    std::fs::write(tmp.path().join("registries.conf"), conf).expect("conf");
    let registries = RegistriesConf::load(&tmp.path().join("registries.conf"), &[]).expect("conf");
    let store = Store::open(tmp.path().join("store")).expect("store");
    let rt = runtime();

    // Only the mirror has it.
    let app = reference(&format!("{}/team/app:1", primary.addr));
    let pulled = rt
        .block_on(oci::pull(&store, &app, &options(registries.clone())))
        .expect("from the mirror");
    assert_eq!(
        pulled.source.to_string(),
        format!("{}/hub/team/app:1", mirror.addr)
    );
    assert!(
        store.resolve(&app).expect("resolve").is_some(),
        "named as asked, not as the mirror calls it"
    );
    // Only the primary has it: the mirror's failure falls through.
    let multi = reference(&format!("{}/team/multi:1", primary.addr));
    let pulled = rt
        .block_on(oci::pull(&store, &multi, &options(registries)))
        .expect("from the primary");
    assert_eq!(pulled.source, multi);
}

/// Environment of a pull run in a child process (the `child_pull` test below).
const CHILD_STORE: &str = "PODKIT_TEST_STORE";
const CHILD_IMAGE: &str = "PODKIT_TEST_IMAGE";
const CHILD_CONF: &str = "PODKIT_TEST_REGISTRIES_CONF";

/// Not a test by itself: the pull that `pull_killed_half_way` and `two_processes` run in a
/// child process (this test binary, re-invoked with `--ignored --exact child_pull`).
#[test]
#[ignore = "run as a child by the tests below"]
fn child_pull() {
    let store = Store::open(std::env::var(CHILD_STORE).expect("store")).expect("store");
    let image = reference(&std::env::var(CHILD_IMAGE).expect("image"));
    let registries =
        RegistriesConf::load(Path::new(&std::env::var(CHILD_CONF).expect("conf")), &[])
            .expect("conf");
    runtime()
        .block_on(oci::pull(&store, &image, &options(registries)))
        .expect("child pull");
}

/// A child process, killed (by its pid) and reaped when dropped, also when the test fails.
struct ChildGuard(std::process::Child);

impl ChildGuard {
    fn id(&self) -> u32 {
        self.0.id()
    }

    fn kill(&mut self) {
        self.0.kill().expect("SIGKILL the child");
        self.0.wait().expect("reap the child");
    }

    fn wait(&mut self) -> std::process::ExitStatus {
        self.0.wait().expect("wait for the child")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_child_pull(store: &Path, image: &Reference, conf: &Path) -> ChildGuard {
    let child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--ignored",
            "--exact",
            "child_pull",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_STORE, store)
        .env(CHILD_IMAGE, image.to_string())
        .env(CHILD_CONF, conf)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the child pull");
    ChildGuard(child)
}

/// A registry with a big image, and a proxy in front that holds downloads past 256 KiB.
struct BigImage {
    registry: Registry,
    proxy: Proxy,
    written: Written,
    tmp: tempfile::TempDir,
    image: Reference,
    conf: PathBuf,
}

fn big_image() -> BigImage {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut layout = Layout::new(&tmp.path().join("layout"));
    let written = layout.image(&ImageDef {
        architecture: "amd64",
        layers: vec![
            images::busybox_layer(Compress::Gzip),
            images::big_layer(8 << 20, 7),
        ],
    });
    layout.tag("big", &written);
    let registry = Registry::start(Options::default());
    push(
        &layout.dir,
        "big",
        &format!("{}/test/big:1", registry.addr),
        None,
        false,
    );
    let proxy = Proxy::start(&registry.addr, 256 << 10);
    let conf = tmp.path().join("registries.conf");
    std::fs::write(
        &conf,
        format!(
            "[[registry]]\nlocation = \"{}\"\ninsecure = true\n",
            proxy.addr
        ),
    )
    .expect("conf");
    let image = reference(&format!("{}/test/big:1", proxy.addr));
    BigImage {
        registry,
        proxy,
        written,
        tmp,
        image,
        conf,
    }
}

/// Names under the store's tmp/ that start with `prefix`, with their sizes.
fn temps(store: &Path, prefix: &str) -> Vec<(String, u64)> {
    std::fs::read_dir(store.join("tmp"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    let size = e.metadata().ok()?.len();
                    name.starts_with(prefix).then_some((name, size))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn pull_killed_half_way_is_repeated_cleanly() {
    let big = big_image();
    let store_dir = big.tmp.path().join("store");
    let big_layer = &big.written.layer_digests[1];
    let big_hex = big_layer.trim_start_matches("sha256:");
    big.proxy.close();
    let mut child = spawn_child_pull(&store_dir, &big.image, &big.conf);
    let blob_temp = format!("blob-{big_hex}.");
    wait_for("the child to be half-way through the big layer", || {
        temps(&store_dir, &blob_temp)
            .iter()
            .any(|(_, size)| *size > 0)
    });
    child.kill();
    big.proxy.open();

    let store = Store::open(&store_dir).expect("store");
    assert!(
        store.resolve(&big.image).expect("resolve").is_none(),
        "nothing named after a killed pull"
    );
    assert!(
        !store.blob_path(&digest(big_layer)).exists(),
        "no half blob under its name"
    );
    assert!(
        !temps(&store_dir, &blob_temp).is_empty(),
        "the killed pull's temp file is still there"
    );

    let pulled = runtime()
        .block_on(oci::pull(
            &store,
            &big.image,
            &options(RegistriesConf::load(&big.conf, &[]).expect("conf")),
        ))
        .expect("pull again");
    assert_eq!(pulled.image.id, digest(&big.written.config_digest));
    assert!(
        temps(&store_dir, &blob_temp).is_empty(),
        "the stale temp file was removed by the next writer"
    );
    let data = std::fs::metadata(pulled.image.layers[1].join("data/blob")).expect("big file");
    assert_eq!(data.len(), 8 << 20);
}

/// The pids blocked on a flock, from /proc/locks (`N: -> FLOCK ... PID ...`).
fn blocked_on_flock() -> Vec<u32> {
    let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    locks
        .lines()
        .filter(|l| l.contains("->") && l.contains("FLOCK"))
        .filter_map(|l| l.split_whitespace().nth(5)?.parse().ok())
        .collect()
}

#[test]
fn two_processes_pulling_one_image_download_it_once() {
    let big = big_image();
    let store_dir = big.tmp.path().join("store");
    Store::open(&store_dir).expect("store");
    let big_layer = &big.written.layer_digests[1];
    let big_hex = big_layer.trim_start_matches("sha256:");
    big.proxy.close();
    let mut first = spawn_child_pull(&store_dir, &big.image, &big.conf);
    wait_for("the first pull to be downloading the big layer", || {
        temps(&store_dir, &format!("blob-{big_hex}."))
            .iter()
            .any(|(_, size)| *size > 0)
    });
    let mut second = spawn_child_pull(&store_dir, &big.image, &big.conf);
    let second_pid = second.id();
    wait_for("the second pull to wait for the first's lock", || {
        blocked_on_flock().contains(&second_pid)
    });
    big.proxy.open();
    assert!(first.wait().success(), "first pull");
    assert!(second.wait().success(), "second pull");

    big.registry.sync_log();
    assert_eq!(
        big.registry.blob_gets(big_layer),
        1,
        "the big layer was downloaded once"
    );
    let store = Store::open(&store_dir).expect("store");
    let image = store.resolve(&big.image).expect("resolve").expect("pulled");
    assert_eq!(image.id, digest(&big.written.config_digest));
    assert!(
        temps(&store_dir, "").is_empty(),
        "nothing left in tmp/: {:?}",
        temps(&store_dir, "")
    );
}
