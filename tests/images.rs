//! The image verbs of the `podkit` binary (pull, images, rmi, image prune, load) against
//! Debian's docker-registry on 127.0.0.1, with images built at test time from busybox-static
//! and a storage directory of each test's own.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use oci_testing::images::{self, Compress, ImageDef, Layout, Written, skopeo};
use oci_testing::registry::{Options, Proxy, Registry, push, wait_for};

mod common;

/// A registry with images pushed to it, and a podkit storage and state root to use it from.
struct Env {
    tmp: tempfile::TempDir,
    registry: Registry,
    /// `user:password` the registry requires, if any.
    creds: Option<String>,
}

impl Env {
    fn new() -> Env {
        Env::with(Options::default())
    }

    fn with(options: Options) -> Env {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the image tests unpack layers as root (owners, device whiteouts): run them as root"
        );
        let tmp = tempfile::tempdir().expect("tempdir");
        let creds = options.user.as_ref().map(|(u, p)| format!("{u}:{p}"));
        let registry = Registry::start(options);
        std::fs::write(
            tmp.path().join("registries.conf"),
            format!(
                "[[registry]]\nlocation = \"{}\"\ninsecure = true\n",
                registry.addr
            ),
        )
        .expect("registries.conf");
        Env {
            tmp,
            registry,
            creds,
        }
    }

    /// Builds an image (busybox, then an app layer saying `greeting`) and pushes it as `name`
    /// (`test/app:1`) to the registry.
    fn push(&self, name: &str, greeting: &str) -> Written {
        let dir = self.tmp.path().join(format!("layout-{}", unique()));
        let mut layout = Layout::new(&dir);
        let written = layout.image(&ImageDef {
            architecture: host_arch(),
            layers: vec![
                images::busybox_layer(Compress::Gzip),
                images::app_layer(Compress::Gzip, greeting),
            ],
        });
        layout.tag("app", &written);
        push(&dir, "app", &self.name(name), self.creds.as_deref(), false);
        written
    }

    /// `127.0.0.1:<port>/<name>`.
    fn name(&self, name: &str) -> String {
        format!("{}/{name}", self.registry.addr)
    }

    fn storage(&self) -> PathBuf {
        self.tmp.path().join("storage")
    }

    fn state(&self) -> PathBuf {
        self.tmp.path().join("state")
    }

    /// `podkit ARGS` with this test's storage, state root, registries.conf and no auth file of
    /// the host's.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_podkit"));
        command
            .args(args)
            .env("PODKIT_STORAGE", self.storage())
            .env("PODKIT_ROOT", self.state())
            .env(
                "CONTAINERS_REGISTRIES_CONF",
                self.tmp.path().join("registries.conf"),
            )
            .env("REGISTRY_AUTH_FILE", self.tmp.path().join("no-auth.json"))
            .env_remove("PODKIT_LOG");
        command
    }

    /// Runs `podkit ARGS` (see [`Env::command`]).
    fn podkit(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run podkit")
    }

    /// `podkit ARGS` on a terminal (script(1)'s pty): what the terminal showed.
    fn on_terminal(&self, args: &str) -> String {
        let out = Command::new("script")
            .args(["-qec", &format!("{} {args}", env!("CARGO_BIN_EXE_podkit"))])
            .arg("/dev/null")
            .env("PODKIT_STORAGE", self.storage())
            .env("PODKIT_ROOT", self.state())
            .env(
                "CONTAINERS_REGISTRIES_CONF",
                self.tmp.path().join("registries.conf"),
            )
            .env("REGISTRY_AUTH_FILE", self.tmp.path().join("no-auth.json"))
            .output()
            .expect("run script(1) from util-linux");
        assert!(
            out.status.success(),
            "podkit {args} on a pty: {}",
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `podkit ARGS`, which must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.podkit(args);
        assert!(
            out.status.success(),
            "podkit {args:?} failed: {}",
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Layer directories in the store.
    fn layers(&self) -> usize {
        std::fs::read_dir(self.storage().join("images/layers/sha256"))
            .map_or(0, |entries| entries.count())
    }
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn hex(digest: &str) -> &str {
    digest.trim_start_matches("sha256:")
}

/// GOARCH of this host, what the store picks and the test images claim.
fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => panic!("no test image architecture for {other}"),
    }
}

/// A fresh name for a directory of the test's temp dir.
fn unique() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    NEXT.fetch_add(1, Ordering::SeqCst).to_string()
}

#[test]
fn pull_then_images_as_podman_shows_them() {
    let env = Env::new();
    let app = env.push("test/app:1", "hello\n");
    let name = env.name("test/app:1");
    let id = hex(&app.config_digest);

    // Not a terminal: a line per layer on stderr, the image ID on stdout.
    let out = env.podkit(&["pull", &name]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{id}\n"));
    let err = stderr(&out);
    assert!(err.contains(&format!("Trying to pull {name}...")), "{err}");
    for layer in &app.layer_digests {
        let line = format!("Copying blob {} done", &hex(layer)[..12]);
        assert!(err.contains(&line), "no {line:?} in {err}");
    }
    assert!(
        !err.contains('\x1b'),
        "escape codes without a terminal: {err:?}"
    );

    // The table: podman's columns, a row per name.
    let table = env.ok(&["images"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    let header: Vec<&str> = lines[0].split("  ").filter(|c| !c.is_empty()).collect();
    assert_eq!(
        header.iter().map(|c| c.trim()).collect::<Vec<_>>(),
        ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"],
        "{table}"
    );
    let row: Vec<&str> = lines[1]
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(row[0], env.name("test/app"), "{table}");
    assert_eq!(row[1], "1", "{table}");
    assert_eq!(row[2], &id[..12], "{table}");
    assert!(row[3].ends_with(" ago"), "{table}"); // built 2024-05-01
    assert!(
        row[4].ends_with(" MB") || row[4].ends_with(" kB"),
        "{table}"
    );
    // The IMAGE ID column starts where its header does.
    assert_eq!(
        lines[0].find("IMAGE ID"),
        lines[1].find(&id[..12]),
        "{table}"
    );

    assert_eq!(env.ok(&["images", "-q"]), format!("{}\n", &id[..12]));
    let json: serde_json::Value =
        serde_json::from_str(&env.ok(&["images", "-o", "json"])).expect("json");
    assert_eq!(json[0]["Id"], id);
    assert_eq!(json[0]["Digest"], app.manifest_digest);
    assert_eq!(json[0]["RepoTags"], serde_json::json!([name]));
    assert_eq!(json[0]["Created"], 1_714_564_800);
    assert!(json[0]["Size"].as_u64().expect("size") > 100_000, "{json}");

    // The IMAGE argument: a repository matches every tag; another name nothing.
    assert_eq!(
        env.ok(&["images", "-q", &env.name("test/app")])
            .lines()
            .count(),
        1
    );
    assert_eq!(env.ok(&["images", "-q", &name]).lines().count(), 1);
    assert_eq!(env.ok(&["images", "-q", &env.name("test/app:2")]), "");
    assert_eq!(env.ok(&["images", "-q", &env.name("test/other")]), "");
    assert_eq!(env.ok(&["image", "ls", "-q"]), format!("{}\n", &id[..12]));

    // By digest: the same image, its layers found in the store; -q prints the ID alone.
    let by_digest = format!("{}@{}", env.name("test/app"), app.manifest_digest);
    let out = env.podkit(&["pull", &by_digest]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        stderr(&out).contains("skipped: already exists"),
        "{}",
        text(&out)
    );
    let out = env.podkit(&["pull", "-q", &by_digest]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{id}\n"));
    assert_eq!(stderr(&out), "");
    let table = env.ok(&["images"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&env.name("test/app")) && l.contains("<none>")),
        "a digest-only name has TAG <none>: {table}"
    );
    assert_eq!(
        env.ok(&["images", "-q"]).lines().count(),
        1,
        "one image, two names"
    );

    // On a terminal the layer lines are redrawn in place.
    let shown = env.on_terminal(&format!("pull {name}"));
    assert!(shown.contains("\x1b[2KCopying blob"), "{shown:?}");
    assert!(shown.contains("skipped: already exists"), "{shown:?}");
    assert!(shown.contains(id), "{shown:?}");
}

#[test]
fn a_failed_pull_says_what_kubelet_says() {
    let env = Env::new();
    let name = env.name("test/nope:1");
    let out = env.podkit(&["pull", &name]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("Failed to pull image {name:?}")) && err.contains("not found"),
        "{err}"
    );
    assert!(
        err.contains(&env.registry.addr),
        "names the registry: {err}"
    );

    // Nothing listening: the registry named, the cause given.
    let port = oci_testing::registry::free_port();
    let nowhere = format!("127.0.0.1:{port}/test/app:1");
    let out = env.podkit(&["pull", &nowhere]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("Failed to pull image {nowhere:?}")),
        "{err}"
    );

    let out = env.podkit(&["pull", "Bad/Name"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("Failed to pull image \"Bad/Name\""),
        "{}",
        text(&out)
    );
    assert_eq!(env.ok(&["images", "-q"]), "");
}

#[test]
fn rmi_untags_then_deletes_by_name_or_id_prefix() {
    let env = Env::new();
    let app = env.push("test/app:1", "hello\n");
    env.push("test/app:2", "hello\n"); // the same image under a second name
    let id = hex(&app.config_digest);
    let (one, two) = (env.name("test/app:1"), env.name("test/app:2"));
    env.ok(&["pull", "-q", &one]);
    env.ok(&["pull", "-q", &two]);
    assert_eq!(env.ok(&["images", "-q"]).lines().count(), 1);
    assert_eq!(env.layers(), 2);

    // By ID while it has two names: refused without -f, as podman does.
    let out = env.podkit(&["rmi", &id[..8]]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("more than one name"),
        "{}",
        text(&out)
    );

    // By name: untagged only, the other name keeps the image.
    assert_eq!(env.ok(&["rmi", &one]), format!("Untagged: {one}\n"));
    assert_eq!(env.ok(&["images", "-q"]), format!("{}\n", &id[..12]));
    assert_eq!(env.layers(), 2);

    // By ID prefix: its last name and the image, its layers with it.
    assert_eq!(
        env.ok(&["rmi", &id[..6]]),
        format!("Untagged: {two}\nDeleted: {id}\n")
    );
    assert_eq!(env.ok(&["images", "-q"]), "");
    assert_eq!(env.layers(), 0);

    // -f by ID: every name.
    env.ok(&["pull", "-q", &one]);
    env.ok(&["pull", "-q", &two]);
    let out = env.ok(&["rmi", "-f", id]);
    assert!(out.contains(&format!("Untagged: {one}\n")), "{out}");
    assert!(out.contains(&format!("Untagged: {two}\n")), "{out}");
    assert!(out.ends_with(&format!("Deleted: {id}\n")), "{out}");

    let out = env.podkit(&["rmi", &one, "abcdef"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stderr(&out).contains("image not known"), "{}", text(&out));
}

#[test]
fn prune_removes_unnamed_images_then_all_unused() {
    let env = Env::new();
    let old = env.push("test/app:1", "old\n");
    let name = env.name("test/app:1");
    env.ok(&["pull", "-q", &name]);
    // The name moves to a new image: the old one is left unnamed.
    let new = env.push("test/app:1", "new\n");
    env.ok(&["pull", "-q", &name]);
    let table = env.ok(&["images"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("<none>") && l.contains(&hex(&old.config_digest)[..12])),
        "{table}"
    );
    assert_eq!(env.layers(), 3, "busybox shared, two app layers");

    let out = env.ok(&["image", "prune"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], hex(&old.config_digest), "{out}");
    assert!(lines[1].starts_with("Total reclaimed space: "), "{out}");
    assert!(lines[1].contains("1 unpacked layers"), "{out}");
    assert_eq!(
        env.ok(&["images", "-q"]),
        format!("{}\n", &hex(&new.config_digest)[..12])
    );
    assert_eq!(env.layers(), 2);

    // Nothing unnamed left: prune removes nothing, -a everything no pod uses.
    assert!(
        env.ok(&["image", "prune"])
            .starts_with("Total reclaimed space: 0 B")
    );
    let out = env.ok(&["image", "prune", "-a"]);
    assert!(
        out.starts_with(&format!("{}\n", hex(&new.config_digest))),
        "{out}"
    );
    assert_eq!(env.ok(&["images", "-q"]), "");
    assert_eq!(env.layers(), 0);
}

/// A pod using the image. Pods do not run from images yet (their containers are host
/// processes, whose status has no imageID), so the test writes the state record a pod's
/// supervisor would: pods/NAME/pod.json and status.json under the state root.
fn fake_pod(state: &Path, name: &str, image: &str, image_id: &str) {
    let dir = state.join("pods").join(format!("default_{name}"));
    std::fs::create_dir_all(&dir).expect("pod dir");
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": image}]}
    });
    let status = serde_json::json!({
        "phase": "Running",
        "containerStatuses": [{
            "name": "app", "image": image, "imageID": image_id,
            "ready": true, "restartCount": 0, "state": {"running": {}}
        }]
    });
    std::fs::write(dir.join("pod.json"), pod.to_string()).expect("pod.json");
    std::fs::write(dir.join("status.json"), status.to_string()).expect("status.json");
}

#[test]
fn an_image_a_pod_uses_is_not_removed() {
    let env = Env::new();
    let app = env.push("test/app:1", "hello\n");
    let name = env.name("test/app:1");
    let id = hex(&app.config_digest);
    env.ok(&["pull", "-q", &name]);

    // imageID as an image id.
    fake_pod(&env.state(), "web", &name, &app.config_digest);
    for args in [vec!["rmi", name.as_str()], vec!["rmi", "-f", id]] {
        let out = env.podkit(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        assert!(stderr(&out).contains("in use by pod web"), "{}", text(&out));
    }
    let out = env.ok(&["image", "prune", "-a"]);
    assert!(out.starts_with("Total reclaimed space: 0 B"), "{out}");
    assert_eq!(env.ok(&["images", "-q"]), format!("{}\n", &id[..12]));

    // imageID as a repo digest (containerd's and CRI-O's form).
    std::fs::remove_dir_all(env.state().join("pods/default_web")).expect("remove pod");
    let repo_digest = format!("{}@{}", env.name("test/app"), app.manifest_digest);
    fake_pod(&env.state(), "api", &name, &repo_digest);
    let out = env.podkit(&["rmi", &name]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stderr(&out).contains("in use by pod api"), "{}", text(&out));

    // The pod gone, the image goes.
    std::fs::remove_dir_all(env.state().join("pods/default_api")).expect("remove pod");
    assert!(env.ok(&["rmi", &name]).contains(&format!("Deleted: {id}")));
}

#[test]
fn loads_docker_and_oci_archives() {
    let env = Env::new();
    let app = env.push("test/app:1", "hello\n");
    let source = format!("docker://{}", env.name("test/app:1"));
    let docker = env.tmp.path().join("app.tar");
    let oci = env.tmp.path().join("app.oci.tar");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &source,
        &format!("docker-archive:{}:busybox-app:1.0", docker.display()),
    ]);
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &source,
        &format!("oci-archive:{}:quay.io/team/app:2", oci.display()),
    ]);
    let id = hex(&app.config_digest);

    let docker_path = docker.to_str().expect("utf-8");
    assert_eq!(
        env.ok(&["load", "-i", docker_path]),
        "Loaded image: docker.io/library/busybox-app:1.0\n"
    );
    assert_eq!(
        env.ok(&["load", "-i", oci.to_str().expect("utf-8")]),
        "Loaded image: quay.io/team/app:2\n"
    );
    let table = env.ok(&["images"]);
    for (repository, tag) in [
        ("docker.io/library/busybox-app", "1.0"),
        ("quay.io/team/app", "2"),
    ] {
        assert!(
            table.lines().any(|l| {
                let cells: Vec<&str> = l.split_whitespace().collect();
                cells[..3] == [repository, tag, &id[..12]]
            }),
            "no {repository}:{tag} {id} in {table}"
        );
    }

    let out = env.podkit(&["load", "-i", "/nonexistent.tar"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stderr(&out).contains("/nonexistent.tar"), "{}", text(&out));
}

#[test]
fn the_image_verbs_have_help_and_completion() {
    let env = Env::new();
    for verb in [
        vec!["pull"],
        vec!["images"],
        vec!["rmi"],
        vec!["load"],
        vec!["image", "prune"],
    ] {
        let mut args = verb.clone();
        args.push("--help");
        let help = env.ok(&args);
        assert!(help.contains("Examples:"), "{verb:?}: {help}");
        assert!(help.contains("--storage <DIR>"), "{verb:?}: {help}");
    }
    let bash = env.ok(&["completion", "bash"]);
    for word in ["pull", "images", "rmi", "load", "prune", "--storage"] {
        assert!(bash.contains(word), "{word} not completed");
    }

    // --storage beats PODKIT_STORAGE; the store is DIR/images.
    let other = env.tmp.path().join("other");
    env.ok(&[
        "--storage",
        other.to_str().expect("utf-8"),
        "image",
        "prune",
    ]);
    assert!(other.join("images/index.json").is_file());
    assert!(!env.storage().exists());
}

/// Mount points under `dir` (overlays, tmpfs volumes), from this process's mount table.
fn mounts_under(dir: &Path) -> Vec<String> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    table
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|point| Path::new(point).starts_with(dir))
        .map(str::to_owned)
        .collect()
}

/// What a deleted image pod must not leave: a mount under the state root, runtime state, a
/// cgroup directory (v2, or the v1 ones runc makes on a hybrid host), a `/run/netns` entry.
fn assert_nothing_left(env: &Env, pod: &str) {
    // This pod's (its directory, or that directory renamed while it is removed), not those of
    // another pod of the test that may be starting meanwhile.
    let key = format!("default_{pod}");
    let mounts: Vec<String> = mounts_under(&env.state())
        .into_iter()
        .filter(|m| m.contains(&key))
        .collect();
    assert_eq!(mounts, Vec::<String>::new(), "mounts left");
    assert!(
        !env.state()
            .join("pods")
            .join(format!("default_{pod}"))
            .exists(),
        "the pod's state directory is gone"
    );
    assert!(
        !Path::new("/run/netns")
            .join(format!("default_{pod}"))
            .exists()
    );
    // The pod's writable layers on the store's disk (other pods' may be there: one may be
    // starting now that this one's resources are free).
    let prefix = format!("default_{pod}-");
    let on_disk: Vec<PathBuf> = std::fs::read_dir(env.storage().join("containers"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name().to_str().is_some_and(|n| {
                n.strip_prefix(&prefix)
                    .is_some_and(|seed| seed.len() == 8 && !seed.contains('-'))
            })
        })
        .map(|e| e.path())
        .collect();
    assert_eq!(on_disk, Vec::<PathBuf>::new(), "containers left on disk");
    let cgroups: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .map(|h| h.path().join(format!("podkit-default_{pod}")))
        .filter(|d| d.exists())
        .collect();
    assert_eq!(cgroups, Vec::<PathBuf>::new(), "cgroups left");
}

/// Waits (bounded) until `podkit get pod NAME -o json` satisfies `check`; the last JSON.
fn wait_for_pod(
    env: &Env,
    pod: &str,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let out = env.podkit(&["get", "pod", pod, "-o", "json"]);
        let json: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        if check(&json) {
            return json;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "pod {pod} not {what} after 60s: {json:#}\n{}",
            String::from_utf8_lossy(&env.podkit(&["describe", "pod", pod]).stdout)
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The seed's pod: a container named only by its image (`image: nginx:1.14.2`-style: no
/// command) runs the image's Entrypoint and Cmd as the image's user in its WorkingDir, from a
/// root filesystem of its own, started by runc; kubelet's pull events, the imageID in the
/// status; a second run finds the image present (IfNotPresent for a tag) and fetches no blob;
/// nothing is left after the delete.
#[test]
fn a_pod_that_names_only_an_image_runs_its_entrypoint() {
    let env = Env::new();
    env.push("test/app:1", "hello\n");
    let image = env.name("test/app:1");
    let pod = format!("img-{}", std::process::id());
    let manifest = env.tmp.path().join("pod.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}}}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: app\n    image: {image}\n    env: [{{name: GREETING, value: the pod}}]\n"
        ),
    )
    .expect("manifest");
    let file = manifest.to_str().expect("utf-8");
    let run = |env: &Env| {
        let out = env.podkit(&["run", "-f", file]);
        assert!(out.status.success(), "podkit run: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("hello from the pod"),
            "{}",
            text(&out)
        );
        assert_eq!(env.ok(&["logs", &pod, "-c", "app"]), "hello from the pod\n");
        env.ok(&["describe", "pod", &pod])
    };

    let described = run(&env);
    assert!(
        described.contains(&format!("Pulling image \"{image}\"")),
        "{described}"
    );
    assert!(
        described.contains(&format!("Successfully pulled image \"{image}\" in ")),
        "{described}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&env.ok(&["get", "pod", &pod, "-o", "json"])).expect("json");
    let status = &json["status"]["containerStatuses"][0];
    assert_eq!(
        status["state"]["terminated"]["reason"], "Completed",
        "{json:#}"
    );
    let image_id = status["imageID"].as_str().expect("imageID");
    assert!(
        image_id.starts_with(&format!("{image}@sha256:").replace(":1@", "@")),
        "{image_id}"
    );
    env.ok(&["delete", "pod", &pod]);
    assert_nothing_left(&env, &pod);

    let gets = env.registry.all_blob_gets();
    let described = run(&env);
    assert!(
        described.contains(&format!(
            "Container image \"{image}\" already present on machine"
        )),
        "{described}"
    );
    assert_eq!(
        env.registry.all_blob_gets(),
        gets,
        "IfNotPresent fetched nothing"
    );
    env.ok(&["delete", "pod", &pod]);
    assert_nothing_left(&env, &pod);
}

/// Two pods started at once with one image, a multi-arch index whose layers have whiteouts:
/// their supervisors' pulls share the store's lock, so each blob is fetched once (the first
/// pull is held half-way by a proxy until the second waits for its lock); each container runs
/// the host platform's image, with the whiteouts applied.
#[test]
fn two_pods_started_at_once_fetch_a_multi_arch_image_once() {
    let env = Env::new();
    let other_arch = if host_arch() == "amd64" {
        "arm64"
    } else {
        "amd64"
    };
    let dir = env.tmp.path().join("layout-multi");
    let mut layout = Layout::new(&dir);
    let built: Vec<Written> = [host_arch(), other_arch]
        .iter()
        .enumerate()
        .map(|(seed, arch)| {
            layout.image(&ImageDef {
                architecture: arch,
                layers: vec![
                    images::busybox_layer(Compress::Gzip),
                    images::app_layer(Compress::Gzip, &format!("built for {arch}\n")),
                    images::big_layer(4 << 20, seed as u64 + 1),
                ],
            })
        })
        .collect();
    layout.tag_index("multi", &built);
    push(&dir, "multi", &env.name("test/multi:1"), None, true);
    let proxy = Proxy::start(&env.registry.addr, 256 << 10);
    std::fs::write(
        env.tmp.path().join("registries.conf"),
        format!(
            "[[registry]]\nlocation = \"{}\"\ninsecure = true\n\n[[registry]]\nlocation = \"{}\"\ninsecure = true\n",
            env.registry.addr, proxy.addr
        ),
    )
    .expect("registries.conf");
    let image = format!("{}/test/multi:1", proxy.addr);
    let pods: Vec<String> = ["a", "b"]
        .iter()
        .map(|p| format!("multi-{p}-{}", std::process::id()))
        .collect();
    let files: Vec<String> = pods
        .iter()
        .map(|pod| {
            let path = env.tmp.path().join(format!("{pod}.yaml"));
            std::fs::write(
                &path,
                format!(
                    "apiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}}}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: app\n    image: {image}\n    command: [sh, -c, 'cat /app/greeting; ls /etc; echo cache: $(ls /var/cache)']\n"
                ),
            )
            .expect("manifest");
            path.to_str().expect("utf-8").to_owned()
        })
        .collect();

    let runs: std::sync::Mutex<Vec<std::process::Child>> = std::sync::Mutex::new(Vec::new());
    let _cleanup = scopeguard(|| {
        for run in runs.lock().expect("runs").iter_mut() {
            let _ = run.kill();
            let _ = run.wait();
        }
        for pod in &pods {
            let _ = env.podkit(&["delete", "pod", pod, "--grace-period", "0"]);
        }
        let _ = env.podkit(&["gc"]);
    });
    let spawn = |file: &str| {
        let child = env
            .command(&["run", "-f", file])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("podkit run");
        runs.lock().expect("runs").push(child);
    };
    // The store's temp files while a pull downloads; the pulls (children of the supervisors)
    // waiting for a lock.
    let downloading = || {
        std::fs::read_dir(env.storage().join("images/tmp"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.metadata().is_ok_and(|m| m.len() > 0))
    };
    let a_pull_waits = || {
        let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
        locks
            .lines()
            .filter(|l| l.contains("->") && l.contains("FLOCK"))
            .filter_map(|l| l.split_whitespace().nth(5))
            .any(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&image))
            })
    };

    proxy.close();
    spawn(&files[0]);
    wait_for("the first pod's pull to be downloading", downloading);
    spawn(&files[1]);
    wait_for(
        "the second pod's pull to wait for the first's lock",
        a_pull_waits,
    );
    proxy.open();
    let outputs: Vec<Output> = std::mem::take(&mut *runs.lock().expect("runs"))
        .into_iter()
        .map(|run| run.wait_with_output().expect("podkit run"))
        .collect();
    for (pod, out) in pods.iter().zip(&outputs) {
        assert!(out.status.success(), "podkit run {pod}: {}", text(out));
        let logs = env.ok(&["logs", pod, "-c", "app"]);
        assert!(
            logs.starts_with(&format!("built for {}\n", host_arch())),
            "{pod}: {logs}"
        );
        assert!(
            logs.contains("passwd") && !logs.contains("motd"),
            "{pod}: a whiteout hides /etc/motd: {logs}"
        );
        assert!(
            logs.ends_with("cache: new\n"),
            "{pod}: an opaque directory hides the lower /var/cache: {logs}"
        );
    }

    env.registry.sync_log();
    for layer in &built[0].layer_digests {
        assert_eq!(
            env.registry.blob_gets(layer),
            1,
            "layer {layer} fetched once for two pods"
        );
    }
    for layer in &built[1].layer_digests[1..] {
        assert_eq!(
            env.registry.blob_gets(layer),
            0,
            "the other platform's layer {layer} is not fetched"
        );
    }
    for pod in &pods {
        env.ok(&["delete", "pod", pod]);
        assert_nothing_left(&env, pod);
    }
}

/// An image app beside a host-process container (the podkit.io/host-process annotation naming
/// it): they share the pod's localhost and an emptyDir; the app's exec probe runs inside the
/// container (its root filesystem: /app/greeting is the image's), its httpGet probe over the
/// pod's network; delete stops it within the grace period and leaves nothing.
#[test]
fn an_image_app_and_a_host_process_share_localhost_and_a_volume() {
    let env = Env::new();
    env.push("test/app:1", "hello\n");
    let image = env.name("test/app:1");
    let pod = format!("mix-{}", std::process::id());
    let port = oci_testing::registry::free_port();
    let manifest = env.tmp.path().join("mixed.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: v1
kind: Pod
metadata:
  name: {pod}
  annotations: {{podkit.io/host-process: side}}
spec:
  terminationGracePeriodSeconds: 5
  volumes: [{{name: shared, emptyDir: {{}}}}]
  containers:
  - name: app
    image: {image}
    command: [/bin/sh, -c]
    args: ['echo written by the app > /data/file && exec busybox httpd -f -p 127.0.0.1:{port} -h /data']
    volumeMounts: [{{name: shared, mountPath: /data}}]
    readinessProbe: {{exec: {{command: [cat, /app/greeting]}}, periodSeconds: 1}}
    livenessProbe: {{httpGet: {{path: /file, port: {port}}}, periodSeconds: 1}}
  - name: side
    command: [sh, -c, 'until cat /tmp/{pod}-shared/file 2>/dev/null; do sleep 0.1; done; exec sleep 1000']
    volumeMounts: [{{name: shared, mountPath: /tmp/{pod}-shared}}]
"
        ),
    )
    .expect("manifest");
    let file = manifest.to_str().expect("utf-8");
    let applied = env.podkit(&["apply", "-f", file]);
    let cleanup = scopeguard(|| {
        let _ = env.podkit(&["delete", "pod", &pod, "--grace-period", "0"]);
    });
    assert!(applied.status.success(), "apply: {}", text(&applied));
    wait_for_pod(&env, &pod, "Ready", ready);
    assert_eq!(
        env.ok(&["logs", &pod, "-c", "side"]),
        "written by the app\n"
    );
    // exec goes through the runtime: the image's files, the container's user.
    assert_eq!(
        env.ok(&["exec", &pod, "-c", "app", "--", "cat", "/app/greeting"]),
        "hello\n"
    );
    assert_eq!(
        env.ok(&["exec", &pod, "-c", "app", "--", "id", "-u"]),
        "65534\n",
        "the image's user"
    );
    let described = env.ok(&["describe", "pod", &pod]);
    assert!(
        described.contains(&format!("Image:         {image}")),
        "{described}"
    );
    assert!(described.contains("Image ID:      "), "{described}");
    assert!(described.contains("Runtime:       runc"), "{described}");
    let deleted = env.ok(&["delete", "pod", &pod]);
    assert!(deleted.contains("deleted"), "{deleted}");
    drop(cleanup);
    assert_nothing_left(&env, &pod);
}

/// SIGKILLs the pod's supervisor (its containers keep running) and waits until `get` says the
/// pod is Unknown.
fn kill_supervisor(env: &Env, pod: &str) {
    let supervisor: i32 = std::fs::read_to_string(
        env.state()
            .join("pods")
            .join(format!("default_{pod}"))
            .join("supervisor.pid"),
    )
    .expect("supervisor.pid")
    .trim()
    .parse()
    .expect("pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(supervisor),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("SIGKILL the supervisor");
    wait_for_pod(env, pod, "Unknown", |json| {
        json["status"]["phase"] == "Unknown"
    });
}

/// Whether the pod's Ready condition is True in `get -o json`.
fn ready(json: &serde_json::Value) -> bool {
    json["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// Runs `f` when dropped (a test's cleanup, also when it fails).
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

/// A restarted image container starts from a fresh writable layer (what its first run wrote
/// to its root filesystem is gone; a volume keeps what it should); then the supervisor is
/// SIGKILLed with the container running, and `podkit gc` removes the container's processes,
/// runtime state, overlay, cgroups and the pod's /dev/shm.
#[test]
fn a_restart_gets_a_fresh_root_filesystem_and_gc_cleans_up_after_a_killed_supervisor() {
    let env = Env::new();
    env.push("test/app:1", "hello\n");
    let image = env.name("test/app:1");
    let pod = format!("rst-{}", std::process::id());
    let manifest = env.tmp.path().join("restart.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: v1
kind: Pod
metadata: {{name: {pod}}}
spec:
  restartPolicy: OnFailure
  terminationGracePeriodSeconds: 2
  volumes: [{{name: runs, emptyDir: {{}}}}]
  containers:
  - name: app
    image: {image}
    command: [/bin/sh, -c]
    args:
    - |
      echo run >> /runs/log
      cat /tmp/mark 2>/dev/null || echo fresh
      echo written by an earlier run > /tmp/mark
      [ \"$(busybox wc -l < /runs/log)\" -gt 1 ] || exit 1
      exec busybox sleep 1000
    volumeMounts: [{{name: runs, mountPath: /runs}}]
"
        ),
    )
    .expect("manifest");
    let file = manifest.to_str().expect("utf-8");
    let applied = env.podkit(&["apply", "-f", file]);
    let _cleanup = scopeguard(|| {
        let _ = env.podkit(&["delete", "pod", &pod, "--grace-period", "0"]);
        let _ = env.podkit(&["gc"]);
    });
    assert!(applied.status.success(), "apply: {}", text(&applied));
    wait_for_pod(&env, &pod, "restarted once and running", |json| {
        let status = &json["status"]["containerStatuses"][0];
        status["restartCount"] == 1 && status["state"]["running"].is_object()
    });
    assert_eq!(env.ok(&["logs", &pod, "-c", "app", "-p"]), "fresh\n");
    assert_eq!(
        env.ok(&["logs", &pod, "-c", "app"]),
        "fresh\n",
        "a new writable layer"
    );
    // The writable layer is on the store's disk, not the state root's tmpfs.
    let on_disk: Vec<PathBuf> = std::fs::read_dir(env.storage().join("containers"))
        .expect("the store's containers directory")
        .flatten()
        .map(|e| e.path().join("app/upper/tmp/mark"))
        .collect();
    assert!(
        on_disk.len() == 1 && on_disk[0].is_file(),
        "the writable layer on disk: {on_disk:?}"
    );

    kill_supervisor(&env, &pod);
    assert!(
        !mounts_under(&env.state()).is_empty(),
        "the overlay is still mounted"
    );
    let gc = env.ok(&["gc"]);
    assert!(gc.contains("deleted container"), "{gc}");
    assert_nothing_left(&env, &pod);
}

/// An image that cannot be had: `apply --dry-run` says what it would pull; `apply` says at once
/// why the container waits (kubelet's reasons: `ImagePullBackOff` with the pull's error behind
/// it, `ErrImageNeverPull`) while the pod goes on retrying, and `describe` shows the events.
#[test]
fn a_missing_image_is_reported_with_kubelets_reasons() {
    let env = Env::new();
    let missing = env.name("test/none:1");
    let pod = format!("miss-{}", std::process::id());
    let manifest = env.tmp.path().join("missing.yaml");
    let write = |image: &str, policy: &str| {
        std::fs::write(
            &manifest,
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}}}\nspec:\n  containers:\n  - {{name: app, image: '{image}', imagePullPolicy: {policy}}}\n"
            ),
        )
        .expect("manifest");
    };
    let file = manifest.to_str().expect("utf-8");
    let _cleanup = scopeguard(|| {
        let _ = env.podkit(&["delete", "pod", &pod, "--grace-period", "0"]);
    });

    write(&missing, "IfNotPresent");
    let dry = env.ok(&["apply", "--dry-run", "-f", file]);
    assert!(
        dry.contains(&format!("container app: image {missing}, pulled unless present (IfNotPresent): the image's entrypoint")),
        "{dry}"
    );
    let out = env.podkit(&["apply", "-f", file]);
    assert!(!out.status.success(), "{}", text(&out));
    let err = stderr(&out);
    assert!(
        err.contains("container app: ErrImagePull")
            || err.contains("container app: ImagePullBackOff"),
        "{err}"
    );
    assert!(
        err.contains(&format!("Failed to pull image \"{missing}\"")),
        "{err}"
    );
    let described = env.ok(&["describe", "pod", &pod]);
    assert!(described.contains("Error: ErrImagePull"), "{described}");
    env.ok(&["delete", "pod", &pod]);

    let present_elsewhere = env.name("test/app:1");
    write(&present_elsewhere, "Never");
    let out = env.podkit(&["apply", "-f", file]);
    assert!(!out.status.success(), "{}", text(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "container app: ErrImageNeverPull: Container image \"{present_elsewhere}\" is not present with pull policy of Never"
        )),
        "{err}"
    );
    env.ok(&["delete", "pod", &pod]);
    assert_nothing_left(&env, &pod);
}

/// The container `app` of `pod` was made by crun: its state is under the pod's crun root, and
/// the pod has no runc root.
fn assert_ran_with_crun(env: &Env, pod: &str) {
    let root = env
        .state()
        .join("pods")
        .join(format!("default_{pod}"))
        .join("runtime");
    assert!(
        root.join("crun")
            .join(format!("default_{pod}_app"))
            .exists(),
        "crun's state for the container is under the pod"
    );
    assert!(!root.join("runc").exists(), "runc was not used");
}

/// `runtimeClassName` naming a RuntimeClass of the same file whose handler is crun: the pod runs
/// under crun (on this hybrid cgroup host in the mount namespace crun needs, which `exec`, the
/// exec probe and `gc` use too); the pod's /etc/hosts has kubelet's hostAliases section and its
/// resolv.conf is `dnsConfig` alone under `dnsPolicy: None`; after the supervisor is SIGKILLed,
/// `gc` deletes crun's container and leaves nothing.
#[test]
fn a_runtime_class_runs_the_pod_with_crun() {
    let env = Env::new();
    env.push("test/app:1", "hello\n");
    let image = env.name("test/app:1");
    let pod = format!("crun-{}", std::process::id());
    let manifest = env.tmp.path().join("crun.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata: {{name: fast}}
handler: crun
overhead: {{podFixed: {{memory: 10Mi}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: {pod}}}
spec:
  runtimeClassName: fast
  terminationGracePeriodSeconds: 2
  hostAliases:
  - {{ip: 10.1.2.3, hostnames: [foo.local, bar.local]}}
  dnsPolicy: None
  dnsConfig:
    nameservers: [192.0.2.53]
    searches: [ns1.svc.cluster.local]
    options: [{{name: ndots, value: '2'}}, {{name: edns0}}]
  containers:
  - name: app
    image: {image}
    command: [/bin/sh, -c, 'exec busybox sleep 1000']
    readinessProbe: {{exec: {{command: [cat, /app/greeting]}}, periodSeconds: 1}}
"
        ),
    )
    .expect("manifest");
    let file = manifest.to_str().expect("utf-8");
    let applied = env.podkit(&["apply", "-f", file]);
    let _cleanup = scopeguard(|| {
        let _ = env.podkit(&["delete", "pod", &pod, "--grace-period", "0"]);
        let _ = env.podkit(&["gc"]);
    });
    assert!(applied.status.success(), "apply: {}", text(&applied));
    assert!(
        text(&applied).contains("RuntimeClass \"fast\": overhead"),
        "the class's overhead is listed as ignored: {}",
        text(&applied)
    );
    wait_for_pod(&env, &pod, "Ready", ready);
    assert_ran_with_crun(&env, &pod);
    let hosts = env.ok(&["exec", &pod, "-c", "app", "--", "cat", "/etc/hosts"]);
    assert!(
        hosts.ends_with("\n# Entries added by HostAliases.\n10.1.2.3\tfoo.local\tbar.local\n"),
        "{hosts}"
    );
    // kubelet's file puts the pod's hostname on its IP, and the image container is on the
    // pod network: its eth0 has that address.
    let status: serde_json::Value =
        serde_json::from_str(&env.ok(&["get", "pod", &pod, "-o", "json"])).expect("json");
    let ip = status["status"]["podIP"]
        .as_str()
        .expect("a pod IP")
        .to_owned();
    assert!(hosts.contains(&format!("\n{ip}\t{pod}\n")), "{hosts}");
    let trie = env.ok(&["exec", &pod, "-c", "app", "--", "cat", "/proc/net/fib_trie"]);
    assert!(trie.contains(&ip), "{trie}");
    assert_eq!(
        env.ok(&["exec", &pod, "-c", "app", "--", "cat", "/etc/resolv.conf"]),
        "nameserver 192.0.2.53\nsearch ns1.svc.cluster.local\noptions ndots:2 edns0\n"
    );
    let described = env.ok(&["describe", "pod", &pod]);
    assert!(
        described.contains("Runtime Class Name:  fast"),
        "{described}"
    );
    assert!(described.contains("Runtime:       crun"), "{described}");

    kill_supervisor(&env, &pod);
    let gc = env.ok(&["gc"]);
    assert!(
        gc.contains("deleted container") && gc.contains("(crun)"),
        "{gc}"
    );
    assert_nothing_left(&env, &pod);

    // On a hybrid host crun runs without a cgroup manager: limits it would not apply are
    // refused at start, naming why.
    if Path::new("/sys/fs/cgroup/unified").is_dir() {
        let limited = std::fs::read_to_string(&manifest)
            .expect("manifest")
            .replace(
                "    command: [/bin/sh",
                "    resources: {limits: {memory: 64Mi}}\n    command: [/bin/sh",
            );
        std::fs::write(&manifest, limited).expect("manifest");
        let refused = env.podkit(&["apply", "-f", file]);
        assert!(!refused.status.success(), "{}", text(&refused));
        assert!(
            text(&refused).contains(
                "the OCI runtime \"crun\" runs with --cgroup-manager=disabled on this hybrid \
                 cgroup host and would apply no cpu or memory limit"
            ),
            "{}",
            text(&refused)
        );
        assert_nothing_left(&env, &pod);
    }
}

/// `PODKIT_RUNTIME` chooses the runtime of pods that name no RuntimeClass (as containerd's
/// `default_runtime_name`): crun runs the pod, `describe` says so; a name that is no handler,
/// or a runtime not installed, is refused naming the variable, and leaves nothing.
#[test]
fn podkit_runtime_chooses_the_runtime_of_pods_without_a_class() {
    let env = Env::new();
    env.push("test/app:1", "hello\n");
    let image = env.name("test/app:1");
    let pod = format!("default-rt-{}", std::process::id());
    let manifest = env.tmp.path().join("default-rt.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: v1
kind: Pod
metadata: {{name: {pod}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: {image}
    command: [/bin/sh, -c, 'exec busybox sleep 1000']
"
        ),
    )
    .expect("manifest");
    let file = manifest.to_str().expect("utf-8");
    let _cleanup = scopeguard(|| {
        let _ = env.podkit(&["delete", "pod", &pod, "--grace-period", "0"]);
    });
    let with = |runtime: &str| {
        env.command(&["apply", "-f", file])
            .env("PODKIT_RUNTIME", runtime)
            .output()
            .expect("run podkit")
    };

    let applied = with("crun");
    assert!(applied.status.success(), "apply: {}", text(&applied));
    wait_for_pod(&env, &pod, "Ready", ready);
    assert_ran_with_crun(&env, &pod);
    let described = env.ok(&["describe", "pod", &pod]);
    assert!(described.contains("Runtime:       crun"), "{described}");
    env.ok(&["delete", "pod", &pod]);
    assert_nothing_left(&env, &pod);

    for (runtime, says) in [
        ("Crun", "PODKIT_RUNTIME=\"Crun\" "),
        (
            "no-such-runtime",
            "the OCI runtime \"no-such-runtime\", named by PODKIT_RUNTIME, is not installed",
        ),
    ] {
        let refused = with(runtime);
        assert!(!refused.status.success(), "{}", text(&refused));
        assert!(text(&refused).contains(says), "{}", text(&refused));
        let _ = env.podkit(&["delete", "pod", &pod, "--grace-period", "0"]);
        assert_nothing_left(&env, &pod);
    }
}

/// Termination messages, as kubelet reads them: the file mounted at `terminationMessagePath`
/// (the default /dev/termination-log, also under a read-only root; a path of the container's
/// choosing, written by a non-root user), or under `FallbackToLogsOnError` the last 80 lines of
/// a failed run's log; nothing for a run that succeeded with an empty file.
#[test]
fn termination_messages_come_from_the_file_or_the_log() {
    let env = Env::new();
    env.push("test/app:1", "hello\n");
    let image = env.name("test/app:1");
    let pod = format!("term-{}", std::process::id());
    let manifest = env.tmp.path().join("term.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: v1
kind: Pod
metadata: {{name: {pod}}}
spec:
  restartPolicy: Never
  containers:
  - name: file
    image: {image}
    command: [/bin/sh, -c, 'printf \"bye from the file\" > /dev/termination-log; exit 3']
    securityContext: {{readOnlyRootFilesystem: true}}
  - name: custom
    image: {image}
    command: [/bin/sh, -c, 'echo custom path > /tmp/message']
    terminationMessagePath: /tmp/message
    securityContext: {{runAsUser: 1000}}
  - name: logs
    image: {image}
    command: [/bin/sh, -c, 'for i in $(busybox seq 1 100); do echo line $i; done; exit 1']
    terminationMessagePolicy: FallbackToLogsOnError
  - name: fine
    image: {image}
    command: [/bin/sh, -c, 'echo all good']
    terminationMessagePolicy: FallbackToLogsOnError
"
        ),
    )
    .expect("manifest");
    let file = manifest.to_str().expect("utf-8");
    let _cleanup = scopeguard(|| {
        let _ = env.podkit(&["delete", "pod", &pod, "--grace-period", "0"]);
    });
    // apply waits for the pod to run, and says it failed (its containers end at once).
    let out = env.podkit(&["apply", "-f", file]);
    assert!(
        stderr(&out).contains("the pod failed"),
        "apply: {}",
        text(&out)
    );
    let json = wait_for_pod(&env, &pod, "Failed", |json| {
        json["status"]["phase"] == "Failed"
    });
    let statuses = json["status"]["containerStatuses"]
        .as_array()
        .expect("statuses");
    let terminated = |name: &str| {
        statuses
            .iter()
            .find(|s| s["name"] == name)
            .map(|s| s["state"]["terminated"].clone())
            .expect(name)
    };
    assert_eq!(terminated("file")["exitCode"], 3);
    assert_eq!(terminated("file")["message"], "bye from the file");
    assert_eq!(terminated("custom")["message"], "custom path\n");
    let from_logs = terminated("logs")["message"]
        .as_str()
        .expect("a message from the log")
        .to_owned();
    let want: String = (21..=100).map(|i| format!("line {i}\n")).collect();
    assert_eq!(from_logs, want, "the last 80 lines");
    assert!(
        terminated("fine").get("message").is_none(),
        "no message for a success: {json:#}"
    );
    env.ok(&["delete", "pod", &pod]);
    assert_nothing_left(&env, &pod);
}

/// seccompProfile, the pod's unless the container sets its own: RuntimeDefault (containerd's
/// profile) refuses unshare(2), which needs no capability for a user namespace; Unconfined
/// allows it; a Localhost profile from `<storage>/seccomp/` refuses mkdir(2); a Localhost
/// profile that is not there fails the start with StartError naming the file.
#[test]
fn seccomp_profiles_are_applied_by_the_runtime() {
    let env = Env::new();
    env.push("test/app:1", "hello\n");
    let image = env.name("test/app:1");
    let profiles = env.storage().join("seccomp/team");
    std::fs::create_dir_all(&profiles).expect("mkdir");
    std::fs::write(
        profiles.join("no-mkdir.json"),
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}"#,
    )
    .expect("profile");
    let pod = format!("sec-{}", std::process::id());
    let manifest = env.tmp.path().join("seccomp.yaml");
    let unshare =
        "busybox unshare -U busybox true 2>&1 && echo unshare-worked || echo unshare-refused";
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: v1
kind: Pod
metadata: {{name: {pod}}}
spec:
  restartPolicy: Never
  securityContext: {{seccompProfile: {{type: RuntimeDefault}}}}
  containers:
  - name: default
    image: {image}
    command: [/bin/sh, -c, '{unshare}']
  - name: unconfined
    image: {image}
    command: [/bin/sh, -c, '{unshare}']
    securityContext: {{seccompProfile: {{type: Unconfined}}}}
  - name: local
    image: {image}
    command: [/bin/sh, -c, 'busybox mkdir /tmp/x 2>&1 || echo mkdir-refused']
    securityContext: {{seccompProfile: {{type: Localhost, localhostProfile: team/no-mkdir.json}}}}
  - name: missing
    image: {image}
    command: [/bin/true]
    securityContext: {{seccompProfile: {{type: Localhost, localhostProfile: team/none.json}}}}
"
        ),
    )
    .expect("manifest");
    let file = manifest.to_str().expect("utf-8");
    let _cleanup = scopeguard(|| {
        let _ = env.podkit(&["delete", "pod", &pod, "--grace-period", "0"]);
    });
    let _ = env.podkit(&["apply", "-f", file]);
    let json = wait_for_pod(&env, &pod, "Failed", |json| {
        json["status"]["phase"] == "Failed"
    });
    assert_eq!(
        env.ok(&["logs", &pod, "-c", "default"]),
        "unshare: unshare(0x10000000): Operation not permitted\nunshare-refused\n"
    );
    assert_eq!(
        env.ok(&["logs", &pod, "-c", "unconfined"]),
        "unshare-worked\n"
    );
    assert_eq!(
        env.ok(&["logs", &pod, "-c", "local"]),
        "mkdir: can't create directory '/tmp/x': Operation not permitted\nmkdir-refused\n"
    );
    let missing = json["status"]["containerStatuses"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "missing"))
        .map(|s| s["state"]["terminated"].clone())
        .expect("missing");
    assert_eq!(missing["reason"], "StartError", "{json:#}");
    let message = missing["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!(
            "{}",
            env.storage().join("seccomp/team/none.json").display()
        )),
        "{message}"
    );
    env.ok(&["delete", "pod", &pod]);
    assert_nothing_left(&env, &pod);
}

/// The pod's sysctls are set in its namespaces (the host's values untouched), an unsafe one
/// with a warning; fsGroup makes an emptyDir the group's (setgid, group-writable) and a
/// supplementary group of the container; procMount Default is accepted.
#[test]
fn sysctls_and_fs_group() {
    let env = Env::new();
    env.push("test/app:1", "hello\n");
    let image = env.name("test/app:1");
    let pod = format!("sys-{}", std::process::id());
    let host_somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn").expect("host");
    let wanted = if host_somaxconn.trim() == "1234" {
        "1235"
    } else {
        "1234"
    };
    let manifest = env.tmp.path().join("sysctl.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: v1
kind: Pod
metadata: {{name: {pod}}}
spec:
  restartPolicy: Never
  securityContext:
    fsGroup: 2000
    sysctls:
    - {{name: net.ipv4.ip_unprivileged_port_start, value: '80'}}
    - {{name: kernel/shm_rmid_forced, value: '1'}}
    - {{name: net.core.somaxconn, value: '{wanted}'}}
  volumes: [{{name: data, emptyDir: {{}}}}]
  containers:
  - name: app
    image: {image}
    securityContext: {{runAsUser: 1000, procMount: Default}}
    volumeMounts: [{{name: data, mountPath: /data}}]
    command:
    - /bin/sh
    - -c
    - |
      busybox id -G
      busybox stat -c %g:%a /data
      busybox touch /data/f && busybox stat -c %g /data/f
      cat /proc/sys/net/ipv4/ip_unprivileged_port_start /proc/sys/kernel/shm_rmid_forced /proc/sys/net/core/somaxconn
"
        ),
    )
    .expect("manifest");
    let file = manifest.to_str().expect("utf-8");
    let _cleanup = scopeguard(|| {
        let _ = env.podkit(&["delete", "pod", &pod, "--grace-period", "0"]);
    });
    let out = env.podkit(&["run", "-f", file]);
    assert!(out.status.success(), "run: {}", text(&out));
    assert!(
        stderr(&out).contains("net.core.somaxconn is not in kubelet's safe set"),
        "{}",
        text(&out)
    );
    assert_eq!(
        env.ok(&["logs", &pod, "-c", "app"]),
        // uid 1000 is not in the image's /etc/passwd: its group is 0, as containerd gives it.
        format!("0 2000\n2000:2777\n2000\n80\n1\n{wanted}\n")
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/core/somaxconn").expect("host"),
        host_somaxconn,
        "the host's value is untouched"
    );
    env.ok(&["delete", "pod", &pod]);
    assert_nothing_left(&env, &pod);
}

/// `resources` as kubelet applies them through the runtime: cpu shares from the request, a CFS
/// quota from the limit, the memory limit (with memory+swap equal to it where swap is counted),
/// the OOM score of a Burstable container, `status.qosClass` and describe's Limits/Requests; a
/// container killed at its memory limit ends `OOMKilled` with exit code 137.
#[test]
fn resources_become_cgroup_limits_and_an_oom_kill_is_reported() {
    let env = Env::new();
    env.push("test/app:1", "hello\n");
    let image = env.name("test/app:1");
    let pod = format!("res-{}", std::process::id());
    let manifest = env.tmp.path().join("resources.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: v1
kind: Pod
metadata: {{name: {pod}}}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 2
  containers:
  - name: app
    image: {image}
    command: [/bin/sh, -c, 'exec busybox sleep 1000']
    resources:
      requests: {{cpu: 250m, memory: 32Mi}}
      limits: {{cpu: 500m, memory: 64Mi}}
  - name: hog
    image: {image}
    command: [busybox, dd, if=/dev/zero, of=/dev/null, bs=64M, count=1]
    resources:
      limits: {{memory: 16Mi}}
"
        ),
    )
    .expect("manifest");
    let file = manifest.to_str().expect("utf-8");
    let _cleanup = scopeguard(|| {
        let _ = env.podkit(&["delete", "pod", &pod, "--grace-period", "0"]);
    });
    let applied = env.podkit(&["apply", "-f", file]);
    assert!(applied.status.success(), "apply: {}", text(&applied));
    let json = wait_for_pod(&env, &pod, "with app running and hog ended", |j| {
        let states = &j["status"]["containerStatuses"];
        states[0]["state"]["running"].is_object() && states[1]["state"]["terminated"].is_object()
    });
    let hog = &json["status"]["containerStatuses"][1]["state"]["terminated"];
    assert_eq!(hog["reason"], "OOMKilled", "{json:#}");
    assert_eq!(hog["exitCode"], 137, "{json:#}");
    assert_eq!(json["status"]["qosClass"], "Burstable");

    // The container's cgroup, where runc made it: below the supervisor's (this test's) cgroup,
    // in each v1 hierarchy on a hybrid host, in the v2 tree on a v2 host.
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").expect("cgroup");
    let own = cgroups
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("cgroup v2 mounted")
        .trim_start_matches('/');
    let below = |root: &str| {
        Path::new(root)
            .join(own)
            .join(format!("podkit-default_{pod}"))
            .join("app")
    };
    let read = |dir: PathBuf, file: &str| {
        std::fs::read_to_string(dir.join(file))
            .unwrap_or_else(|e| panic!("{}/{file}: {e}", dir.display()))
            .trim()
            .to_owned()
    };
    if Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists() {
        assert_eq!(read(below("/sys/fs/cgroup/cpu"), "cpu.shares"), "256");
        assert_eq!(
            read(below("/sys/fs/cgroup/cpu"), "cpu.cfs_quota_us"),
            "50000"
        );
        assert_eq!(
            read(below("/sys/fs/cgroup/cpu"), "cpu.cfs_period_us"),
            "100000"
        );
        let memory = below("/sys/fs/cgroup/memory");
        assert_eq!(read(memory.clone(), "memory.limit_in_bytes"), "67108864");
        if memory.join("memory.memsw.limit_in_bytes").exists() {
            assert_eq!(read(memory, "memory.memsw.limit_in_bytes"), "67108864");
        }
    } else {
        assert_eq!(read(below("/sys/fs/cgroup"), "cpu.max"), "50000 100000");
        assert_eq!(read(below("/sys/fs/cgroup"), "memory.max"), "67108864");
    }
    // Burstable: 1000 - 1000 * request / the host's memory, within 3..=999.
    let meminfo = std::fs::read_to_string("/proc/meminfo").expect("meminfo");
    let total_kib: i64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("MemTotal");
    let want = (1000 - 1000 * (32i64 << 20) / (total_kib * 1024)).clamp(3, 999);
    assert_eq!(
        env.ok(&[
            "exec",
            &pod,
            "-c",
            "app",
            "--",
            "cat",
            "/proc/1/oom_score_adj"
        ])
        .trim(),
        want.to_string()
    );
    let described = env.ok(&["describe", "pod", &pod]);
    for line in [
        "    Limits:\n      cpu:           500m\n      memory:        64Mi\n",
        "    Requests:\n      memory:        16Mi\n",
        "QoS Class:    Burstable\n",
        "State:         Terminated (OOMKilled, exit code 137)",
    ] {
        assert!(described.contains(line), "{line:?} in:\n{described}");
    }
    env.ok(&["delete", "pod", &pod]);
    assert_nothing_left(&env, &pod);
}

/// A downwardAPI volume as kubelet writes it (the atomic writer's `..data` layout, the labels
/// and annotations as `key="value"` lines, item modes, resources over their divisors, a limit
/// not set read as the host's allocatable amount), mounted read-only; `resourceFieldRef` env.
#[test]
fn downward_api_volumes_and_resource_env() {
    let env = Env::new();
    env.push("test/app:1", "hello\n");
    let image = env.name("test/app:1");
    let pod = format!("dapi-{}", std::process::id());
    let manifest = env.tmp.path().join("dapi.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: v1
kind: Pod
metadata:
  name: {pod}
  labels: {{tier: front, app: web}}
  annotations: {{build: \"two\\nlines \\\"quoted\\\"\"}}
spec:
  terminationGracePeriodSeconds: 2
  volumes:
  - name: podinfo
    downwardAPI:
      defaultMode: 0644
      items:
      - {{path: labels, fieldRef: {{fieldPath: metadata.labels}}}}
      - {{path: annotations, fieldRef: {{fieldPath: metadata.annotations}}}}
      - {{path: meta/name, fieldRef: {{fieldPath: metadata.name}}}}
      - {{path: secret, fieldRef: {{fieldPath: metadata.uid}}, mode: 0400}}
      - {{path: app, fieldRef: {{fieldPath: \"metadata.labels['app']\"}}}}
      - path: cpu_limit
        resourceFieldRef: {{containerName: app, resource: limits.cpu, divisor: 1m}}
      - path: mem_request
        resourceFieldRef: {{containerName: app, resource: requests.memory, divisor: 1Mi}}
  containers:
  - name: app
    image: {image}
    command: [/bin/sh, -c, 'exec busybox sleep 1000']
    resources: {{requests: {{memory: 32Mi}}, limits: {{cpu: 500m, memory: 64Mi}}}}
    volumeMounts: [{{name: podinfo, mountPath: /etc/podinfo}}]
    env:
    - name: MEM_LIMIT
      valueFrom: {{resourceFieldRef: {{resource: limits.memory, divisor: 1Mi}}}}
    - name: OTHER_CPUS
      valueFrom: {{resourceFieldRef: {{containerName: other, resource: limits.cpu}}}}
  - name: other
    image: {image}
    command: [/bin/sh, -c, 'exec busybox sleep 1000']
"
        ),
    )
    .expect("manifest");
    let file = manifest.to_str().expect("utf-8");
    let _cleanup = scopeguard(|| {
        let _ = env.podkit(&["delete", "pod", &pod, "--grace-period", "0"]);
    });
    let applied = env.podkit(&["apply", "-f", file]);
    assert!(applied.status.success(), "apply: {}", text(&applied));
    let exec = |cmd: &[&str]| {
        let mut args = vec!["exec", pod.as_str(), "-c", "app", "--"];
        args.extend_from_slice(cmd);
        env.ok(&args)
    };
    let cat = |file: &str| exec(&["cat", &format!("/etc/podinfo/{file}")]);
    assert_eq!(cat("labels"), "app=\"web\"\ntier=\"front\"");
    assert_eq!(cat("annotations"), "build=\"two\\nlines \\\"quoted\\\"\"");
    assert_eq!(cat("meta/name"), pod);
    assert_eq!(cat("app"), "web");
    assert_eq!(cat("cpu_limit"), "500");
    assert_eq!(cat("mem_request"), "32");
    let listing = exec(&["ls", "-a", "/etc/podinfo"]);
    let names: Vec<&str> = listing.split_whitespace().collect();
    assert!(names.contains(&"..data"), "{listing}");
    assert!(
        names.iter().any(|n| n.starts_with("..20")),
        "a timestamped data directory: {listing}"
    );
    assert_eq!(
        exec(&[
            "busybox",
            "stat",
            "-L",
            "-c",
            "%a %U",
            "/etc/podinfo/secret",
            "/etc/podinfo/labels"
        ]),
        "400 root\n644 root\n",
        "0400 as its item says (the image's user cannot read it, as under kubelet)"
    );
    assert_eq!(
        exec(&["busybox", "readlink", "/etc/podinfo/labels"]),
        "..data/labels\n"
    );
    let write = env.podkit(&[
        "exec",
        &pod,
        "-c",
        "app",
        "--",
        "/bin/sh",
        "-c",
        "echo x > /etc/podinfo/new",
    ]);
    assert!(
        !write.status.success(),
        "the volume is read-only: {}",
        text(&write)
    );
    assert!(
        stderr(&write).contains("Read-only file system"),
        "{}",
        text(&write)
    );
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").expect("cpus");
    let cpus: u64 = online
        .trim()
        .split(',')
        .map(|r| match r.split_once('-') {
            Some((a, b)) => b.parse::<u64>().expect("cpu") + 1 - a.parse::<u64>().expect("cpu"),
            None => 1,
        })
        .sum();
    assert_eq!(
        exec(&["/bin/sh", "-c", "echo $MEM_LIMIT $OTHER_CPUS"]),
        format!("64 {cpus}\n"),
        "the other container has no cpu limit: the host's CPUs"
    );
    env.ok(&["delete", "pod", &pod]);
    assert_nothing_left(&env, &pod);
}

/// An image container reads a ConfigMap and a Secret of its file as kubelet gives them: env
/// from `secretKeyRef` and `envFrom`, a configMap volume (read-only, updated in place when the
/// ConfigMap changes), a `subPath` mount of one key (which, as in Kubernetes, does not update),
/// and a secret volume on a tmpfs the image's user cannot read at 0400.
#[test]
fn config_maps_and_secrets_in_an_image_container() {
    let env = Env::new();
    env.push("test/app:1", "hello\n");
    let image = env.name("test/app:1");
    let pod = format!("cmsec-{}", std::process::id());
    let manifest = |level: &str| {
        format!(
            "apiVersion: v1
kind: ConfigMap
metadata: {{name: {pod}-cfg}}
data: {{level: {level}, nginx.conf: 'worker_processes 1;'}}
---
apiVersion: v1
kind: Secret
metadata: {{name: {pod}-db}}
stringData: {{password: hunter2}}
---
apiVersion: v1
kind: Pod
metadata: {{name: {pod}}}
spec:
  terminationGracePeriodSeconds: 2
  volumes:
  - {{name: cfg, configMap: {{name: {pod}-cfg}}}}
  - {{name: db, secret: {{secretName: {pod}-db, defaultMode: 0400}}}}
  containers:
  - name: app
    image: {image}
    command: [/bin/sh, -c, 'exec busybox sleep 1000']
    envFrom: [{{configMapRef: {{name: {pod}-cfg}}, prefix: CFG_}}]
    env:
    - name: DB_PASSWORD
      valueFrom: {{secretKeyRef: {{name: {pod}-db, key: password}}}}
    volumeMounts:
    - {{name: cfg, mountPath: /etc/app}}
    - {{name: cfg, mountPath: /etc/nginx/nginx.conf, subPath: nginx.conf}}
    - {{name: db, mountPath: /run/secrets/db}}
"
        )
    };
    let file = env.tmp.path().join("cmsec.yaml");
    std::fs::write(&file, manifest("info")).expect("manifest");
    let file = file.to_str().expect("utf-8");
    let _cleanup = scopeguard(|| {
        let _ = env.podkit(&["delete", "-f", file, "--grace-period", "0"]);
    });
    let applied = env.podkit(&["apply", "-f", file]);
    assert!(applied.status.success(), "apply: {}", text(&applied));
    let exec = |cmd: &str| env.ok(&["exec", &pod, "--", "/bin/sh", "-c", cmd]);
    assert_eq!(exec("echo $CFG_level $DB_PASSWORD"), "info hunter2\n");
    assert_eq!(exec("cat /etc/app/level"), "info");
    assert_eq!(exec("cat /etc/nginx/nginx.conf"), "worker_processes 1;");
    assert_eq!(
        exec("busybox stat -L -c '%a %U' /run/secrets/db/password"),
        "400 root\n"
    );
    assert!(
        exec("grep ' /run/secrets/db ' /proc/mounts").contains("tmpfs"),
        "a secret volume is a tmpfs"
    );
    let write = env.podkit(&["exec", &pod, "--", "/bin/sh", "-c", "echo x > /etc/app/new"]);
    assert!(
        stderr(&write).contains("Read-only file system"),
        "{}",
        text(&write)
    );
    // The ConfigMap changes: the volume follows, the subPath file and the env do not.
    std::fs::write(file, manifest("debug")).expect("manifest");
    env.ok(&["apply", "-f", file]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while exec("cat /etc/app/level") != "debug" {
        assert!(
            std::time::Instant::now() < deadline,
            "the volume was not updated"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(exec("echo $CFG_level"), "info\n");
    env.ok(&["delete", "-f", file]);
    assert_nothing_left(&env, &pod);
    assert!(
        !env.storage()
            .join(format!("objects/default/configmaps/{pod}-cfg.json"))
            .exists()
    );
}

/// Services seen from an image container: its `/etc/hosts` has their names (kept current),
/// its env their kubelet variables, and its clients reach a Service by name through the
/// cluster IP (here the pod's own: hairpin).
#[test]
fn services_are_found_by_name_and_in_the_env_of_an_image_container() {
    let env = Env::new();
    env.push("test/app:1", "hello\n");
    let image = env.name("test/app:1");
    let pod = format!("svcname-{}", std::process::id());
    let file = env.tmp.path().join("svc.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: v1
kind: Service
metadata: {{name: {pod}}}
spec:
  selector: {{app: {pod}}}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: {pod}, labels: {{app: {pod}}}}}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: app
    image: {image}
    command: [/bin/sh, -c, 'mkdir -p /tmp/www && echo served > /tmp/www/index.html && exec busybox httpd -f -p 8080 -h /tmp/www']
    readinessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1}}
"
        ),
    )
    .expect("manifest");
    let file = file.to_str().expect("utf-8");
    let _cleanup = scopeguard(|| {
        let _ = env.podkit(&["delete", "-f", file, "--grace-period", "0"]);
    });
    let applied = env.podkit(&["apply", "-f", file]);
    assert!(applied.status.success(), "apply: {}", text(&applied));
    let service: serde_json::Value =
        serde_json::from_str(&env.ok(&["get", "svc", &pod, "-o", "json"])).expect("json");
    let ip = service["spec"]["clusterIP"]
        .as_str()
        .expect("a cluster IP")
        .to_owned();
    wait_for_pod(&env, &pod, "Ready", ready);
    let exec = |cmd: &str| env.ok(&["exec", &pod, "--", "/bin/sh", "-c", cmd]);
    let prefix = pod.to_uppercase().replace('-', "_");
    assert_eq!(
        exec(&format!(
            "echo ${prefix}_SERVICE_HOST ${prefix}_SERVICE_PORT_HTTP ${prefix}_PORT"
        )),
        format!("{ip} 80 tcp://{ip}:80\n")
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let line =
        format!("{ip}\t{pod}\t{pod}.default\t{pod}.default.svc\t{pod}.default.svc.cluster.local");
    loop {
        let hosts = exec("cat /etc/hosts");
        if hosts.contains(&line) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{hosts}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // Through the address its name has there (the test image's static busybox cannot use
    // glibc's resolver, which a real image's libc does), from the pod itself: hairpin.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let fetch = format!(
        "ip=$(busybox awk '$NF == \"{pod}.default.svc.cluster.local\" {{print $1}}' /etc/hosts)
         [ \"$ip\" = {ip} ] || exit 3
         printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 2 \"$ip\" 80"
    );
    loop {
        let got = env.podkit(&["exec", &pod, "--", "/bin/sh", "-c", &fetch]);
        if text(&got).contains("served") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", text(&got));
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // The Service deleted: its names leave the pod's /etc/hosts.
    env.ok(&["delete", "svc", &pod]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while exec("cat /etc/hosts").contains(&ip) {
        assert!(std::time::Instant::now() < deadline, "the names stayed");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    env.ok(&["delete", "-f", file, "--ignore-not-found"]);
    assert_nothing_left(&env, &pod);
}

/// `hostNetwork`, `hostIPC` and `hostPID`: the container is in the host's network, UTS, IPC and
/// PID namespaces (the same namespace inodes as this test's), has the host's hostname, and
/// serves on the host's own loopback; the host's hostname is untouched and nothing is left.
#[test]
fn host_namespaces_are_the_hosts() {
    let env = Env::new();
    env.push("test/app:1", "hello\n");
    let image = env.name("test/app:1");
    let pod = format!("hostns-{}", std::process::id());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let host_name = nix::unistd::gethostname().expect("hostname");
    let manifest = env.tmp.path().join("hostns.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: v1
kind: Pod
metadata: {{name: {pod}}}
spec:
  hostNetwork: true
  hostIPC: true
  hostPID: true
  terminationGracePeriodSeconds: 2
  containers:
  - name: app
    image: {image}
    ports: [{{containerPort: {port}, hostPort: {port}}}]
    readinessProbe: {{tcpSocket: {{port: {port}}}, periodSeconds: 1}}
    command:
    - /bin/sh
    - -c
    - |
      for n in net ipc uts pid; do busybox readlink /proc/self/ns/$n; done
      busybox hostname
      cat /proc/1/comm
      exec busybox httpd -f -p 127.0.0.1:{port} -h /app
"
        ),
    )
    .expect("manifest");
    let file = manifest.to_str().expect("utf-8");
    let _cleanup = scopeguard(|| {
        let _ = env.podkit(&["delete", "pod", &pod, "--grace-period", "0"]);
    });
    let applied = env.podkit(&["apply", "-f", file, "--wait=ready"]);
    assert!(applied.status.success(), "apply: {}", text(&applied));
    let ours = |kind: &str| {
        std::fs::read_link(format!("/proc/self/ns/{kind}"))
            .expect("ns")
            .to_string_lossy()
            .into_owned()
    };
    let init = std::fs::read_to_string("/proc/1/comm").expect("comm");
    assert_eq!(
        env.ok(&["logs", &pod, "-c", "app"]),
        format!(
            "{}\n{}\n{}\n{}\n{}\n{init}",
            ours("net"),
            ours("ipc"),
            ours("uts"),
            ours("pid"),
            host_name.to_string_lossy()
        )
    );
    // Served on the host's own loopback: no relay in between.
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    std::io::Write::write_all(&mut stream, b"GET /greeting HTTP/1.0\r\n\r\n").expect("send");
    let mut reply = String::new();
    std::io::Read::read_to_string(&mut stream, &mut reply).expect("reply");
    assert!(reply.ends_with("\r\n\r\nhello\n"), "{reply}");
    env.ok(&["delete", "pod", &pod]);
    assert_eq!(nix::unistd::gethostname().expect("hostname"), host_name);
    assert_nothing_left(&env, &pod);
}

/// imagePullSecrets: a `kubernetes.io/dockerconfigjson` Secret in the manifest's file gives the
/// pull its credentials for a registry that requires them (handed to the pull on a memfd, never
/// on disk); a Secret the file does not hold is reported with kubelet's event and the pull goes
/// on without it; wrong credentials end in ErrImagePull, then ImagePullBackOff.
#[test]
fn image_pull_secrets_from_the_same_file() {
    use base64::Engine as _;
    let env = Env::with(Options {
        user: Some(("alice".into(), "s3cret".into())),
        ..Options::default()
    });
    env.push("private/app:1", "hello from a private image\n");
    let image = env.name("private/app:1");
    let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
    let config = |password: &str| {
        b64(&format!(
            "{{\"auths\": {{\"{}\": {{\"auth\": \"{}\"}}}}}}",
            env.registry.addr,
            b64(&format!("alice:{password}"))
        ))
    };
    let pod = format!("sec-{}", std::process::id());
    let manifest = env.tmp.path().join("secret.yaml");
    let write = |secrets: &str| {
        std::fs::write(
            &manifest,
            format!(
                "apiVersion: v1
kind: Secret
metadata: {{name: good}}
type: kubernetes.io/dockerconfigjson
data: {{.dockerconfigjson: {good}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: wrong}}
type: kubernetes.io/dockerconfigjson
data: {{.dockerconfigjson: {wrong}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: {pod}}}
spec:
  restartPolicy: Never
  imagePullSecrets: {secrets}
  containers:
  - {{name: app, image: '{image}', command: [/bin/cat, /app/greeting]}}
",
                good = config("s3cret"),
                wrong = config("guess"),
            ),
        )
        .expect("manifest");
    };
    let file = manifest.to_str().expect("utf-8");
    let _cleanup = scopeguard(|| {
        let _ = env.podkit(&["delete", "pod", &pod, "--grace-period", "0"]);
    });

    write("[{name: missing}, {name: good}]");
    let out = env.podkit(&["run", "-f", file]);
    assert!(out.status.success(), "run: {}", text(&out));
    assert_eq!(
        env.ok(&["logs", &pod, "-c", "app"]),
        "hello from a private image\n"
    );
    let described = env.ok(&["describe", "pod", &pod]);
    assert!(
        described.contains("FailedToRetrieveImagePullSecret")
            && described.contains("Unable to retrieve some image pull secrets (missing)"),
        "{described}"
    );
    env.ok(&["delete", "pod", &pod]);
    env.ok(&["rmi", &image]);

    write("[{name: wrong}]");
    let out = env.podkit(&["apply", "-f", file]);
    assert!(!out.status.success(), "{}", text(&out));
    let err = stderr(&out);
    assert!(
        err.contains("container app: ErrImagePull")
            || err.contains("container app: ImagePullBackOff"),
        "{err}"
    );
    env.ok(&["delete", "pod", &pod]);
    assert_nothing_left(&env, &pod);
}

/// An image layer holding the podkit binary and the shared libraries it loads (as `ldd` lists
/// them, at the same paths): podkit's own sidecar image, built from the binary under test.
fn podkit_layer() -> images::Layer {
    // Without its debug sections (half its size): the image is pulled and unpacked by the
    // podkit under test, a debug build.
    let bin = std::env::temp_dir().join(format!("podkit-stripped-{}", std::process::id()));
    let stripped = Command::new("strip")
        .arg("-o")
        .arg(&bin)
        .arg(env!("CARGO_BIN_EXE_podkit"))
        .status()
        .expect("strip (binutils)");
    assert!(stripped.success(), "strip failed");
    let binary = std::fs::read(&bin).expect("the stripped podkit");
    let _ = std::fs::remove_file(&bin);
    let ldd = Command::new("ldd")
        .arg(env!("CARGO_BIN_EXE_podkit"))
        .output()
        .expect("ldd");
    let mut tar = images::TarBuilder::new()
        .dir("usr", 0o755)
        .dir("usr/bin", 0o755)
        .file("usr/bin/podkit", 0o755, &binary)
        .dir("tmp", 0o1777);
    let mut dirs: Vec<String> = Vec::new();
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = line
            .split("=>")
            .last()
            .and_then(|p| p.split_whitespace().next())
            .filter(|p| p.starts_with('/'));
        let Some(path) = path else { continue };
        let relative = path.trim_start_matches('/');
        let mut dir = String::new();
        for part in Path::new(relative)
            .parent()
            .into_iter()
            .flat_map(|p| p.iter())
        {
            if !dir.is_empty() {
                dir.push('/');
            }
            dir.push_str(&part.to_string_lossy());
            if !dirs.contains(&dir) {
                tar = tar.dir(&dir, 0o755);
                dirs.push(dir.clone());
            }
        }
        tar = tar.file(relative, 0o755, &std::fs::read(path).expect("a library"));
    }
    images::Layer {
        tar: tar.build(),
        compress: Compress::Gzip,
    }
}

/// The pod pattern with images only: an origin (busybox httpd from its image) serves a file on
/// the pod's localhost, podkit's puller from podkit's own image (built from the binary under
/// test) keeps an emptyDir in step with it, and a web container reads what the puller
/// published, all three from their images through the runtime.
#[test]
fn an_image_app_with_a_podkit_puller_sidecar_from_podkits_image() {
    let env = Env::new();
    env.push("test/app:1", "pulled by the sidecar\n");
    let dir = env.tmp.path().join("layout-podkit");
    let mut layout = Layout::new(&dir);
    let written = layout.image(&ImageDef {
        architecture: host_arch(),
        layers: vec![podkit_layer()],
    });
    layout.tag("podkit", &written);
    push(&dir, "podkit", &env.name("podkit/podkit:test"), None, false);
    let app = env.name("test/app:1");
    let podkit = env.name("podkit/podkit:test");
    let pod = format!("side-{}", std::process::id());
    let port = oci_testing::registry::free_port();
    let manifest = env.tmp.path().join("sidecar.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: v1
kind: Pod
metadata: {{name: {pod}}}
spec:
  terminationGracePeriodSeconds: 5
  volumes: [{{name: content, emptyDir: {{}}}}]
  containers:
  - name: origin
    image: {app}
    command: [/bin/busybox, httpd, -f, -p, '127.0.0.1:{port}', -h, /app]
  - name: puller
    image: {podkit}
    command: [/usr/bin/podkit, puller, --url, 'http://127.0.0.1:{port}/greeting', --dest, /content, --period, 1s]
    volumeMounts: [{{name: content, mountPath: /content}}]
  - name: web
    image: {app}
    command: [/bin/sh, -c, 'until cat /content/current/greeting 2>/dev/null; do busybox sleep 0.2; done; exec busybox sleep 1000']
    volumeMounts: [{{name: content, mountPath: /content, readOnly: true}}]
"
        ),
    )
    .expect("manifest");
    let file = manifest.to_str().expect("utf-8");
    let _cleanup = scopeguard(|| {
        let _ = env.podkit(&["delete", "pod", &pod, "--grace-period", "0"]);
    });
    let out = env.podkit(&["apply", "-f", file]);
    assert!(
        out.status.success(),
        "apply: {}\n{}",
        text(&out),
        text(&env.podkit(&["describe", "pod", &pod]))
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let logs = env.podkit(&["logs", &pod, "-c", "web"]);
        if String::from_utf8_lossy(&logs.stdout) == "pulled by the sidecar\n" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the web container never read the pulled file: {}\npuller: {}",
            text(&logs),
            text(&env.podkit(&["logs", &pod, "-c", "puller"]))
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let described = env.ok(&["describe", "pod", &pod]);
    assert!(
        described.contains(&format!("Image:         {podkit}")),
        "{described}"
    );
    env.ok(&["delete", "pod", &pod]);
    assert_nothing_left(&env, &pod);
}

/// Extended resources served from the host's CDI specs (here a spec directory of the test's own
/// through `PODKIT_CDI_SPEC_DIRS`), as podman and containerd serve CDI devices: a container
/// asking `example.com/device: 1` gets one device of that kind with its device node (here the
/// host's /dev/null), its spec's env and mount edits; devices are exclusive, so a pod asking 2
/// stays Pending with kube-scheduler's message until the first pod is deleted; a kind no spec
/// has keeps its pod Pending; nothing of a waiting pod is made, and no lease outlives its pod
/// (`gc` gives back those of a killed supervisor).
#[test]
fn extended_resources_are_served_from_the_hosts_cdi_specs() {
    let env = Env::new();
    env.push("test/app:1", "hello\n");
    let image = env.name("test/app:1");
    let id = std::process::id();
    let specs = env.tmp.path().join("cdi");
    std::fs::create_dir(&specs).expect("spec dir");
    let shared = env.tmp.path().join("shared.txt");
    std::fs::write(&shared, "from the host\n").expect("shared file");
    // Device names of this run's own: the leases are the host's.
    let (dev0, dev1) = (format!("t{id}-0"), format!("t{id}-1"));
    std::fs::write(
        specs.join("example.yaml"),
        format!(
            "cdiVersion: 0.6.0
kind: example.com/device
devices:
- name: {dev0}
  containerEdits:
    deviceNodes: [{{path: /dev/example0, hostPath: /dev/null}}]
- name: {dev1}
  containerEdits:
    deviceNodes: [{{path: /dev/example1, hostPath: /dev/zero}}]
containerEdits:
  env: [EXAMPLE_DEVICE=yes]
  mounts:
  - {{hostPath: {}, containerPath: /etc/example.txt, type: bind, options: [bind, ro]}}
",
            shared.display()
        ),
    )
    .expect("spec");
    let pod = |name: &str, resources: &str| {
        let manifest = env.tmp.path().join(format!("{name}.yaml"));
        std::fs::write(
            &manifest,
            format!(
                "apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: {image}
    resources: {{limits: {{{resources}}}}}
    command:
    - /bin/sh
    - -c
    - |
      for d in /dev/example*; do
        echo $d
        echo data > $d && busybox head -c 4 $d | busybox wc -c
      done
      echo EXAMPLE_DEVICE=$EXAMPLE_DEVICE
      cat /etc/example.txt
      echo done
      exec busybox sleep 3600
"
            ),
        )
        .expect("manifest");
        manifest
    };
    let (one, two, none) = (
        format!("cdi-one-{id}"),
        format!("cdi-two-{id}"),
        format!("cdi-none-{id}"),
    );
    let with_specs = |args: &[&str]| {
        env.command(args)
            .env("PODKIT_CDI_SPEC_DIRS", &specs)
            .output()
            .expect("run podkit")
    };
    let _cleanup = scopeguard(|| {
        for pod in [&one, &two, &none] {
            let _ = env.podkit(&["delete", "pod", pod, "--grace-period", "0"]);
        }
        let _ = env.podkit(&["gc"]);
    });
    let leases = || -> Vec<String> {
        let state = env.state().to_string_lossy().into_owned();
        std::fs::read_dir("/run/podkit/devices")
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                std::fs::read_to_string(e.path()).is_ok_and(|owner| owner.starts_with(&state))
            })
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    };
    let logs = |pod: &str, what: &str| -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let out = env.podkit(&["logs", pod, "-c", "app"]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if text.contains("done\n") {
                return text;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "pod {pod} did not {what}: {}\n{}",
                text,
                String::from_utf8_lossy(&env.podkit(&["describe", "pod", pod]).stdout)
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    let unschedulable = |json: &serde_json::Value, kind: &str| {
        json["status"]["phase"] == "Pending"
            && json["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter().any(|c| {
                    c["type"] == "PodScheduled"
                        && c["status"] == "False"
                        && c["reason"] == "Unschedulable"
                        && c["message"]
                            == format!(
                                "0/1 nodes are available: 1 Insufficient {kind}. preemption: \
                                 0/1 nodes are available: 1 No preemption victims found for \
                                 incoming pod."
                            )
                })
            })
    };

    // One device: its node (a null device: written, reads nothing), the env, the mount.
    let file = pod(&one, "example.com/device: 1");
    let out = with_specs(&["apply", "-f", file.to_str().expect("utf-8")]);
    assert!(out.status.success(), "apply: {}", text(&out));
    assert_eq!(
        logs(&one, "run"),
        "/dev/example0\n0\nEXAMPLE_DEVICE=yes\nfrom the host\ndone\n"
    );
    let described = env.ok(&["describe", "pod", &one]);
    assert!(
        described.contains("example.com/device:1") || described.contains("example.com/device: 1"),
        "{described}"
    );
    assert!(
        described.contains(&format!("CDI Devices:   example.com/device={dev0}\n")),
        "{described}"
    );
    assert_eq!(leases(), [format!("example.com+device={dev0}")]);

    // Two: one is taken, so the pod waits, Pending as kube-scheduler leaves it, nothing made.
    let file = pod(&two, "example.com/device: 2");
    let out = with_specs(&["apply", "-f", file.to_str().expect("utf-8")]);
    assert!(out.status.success(), "apply: {}", text(&out));
    assert!(
        stderr(&out).contains(&format!(
            "note: pod \"{two}\" is Pending (Unschedulable): 0/1 nodes are available: 1 \
             Insufficient example.com/device. preemption"
        )),
        "{}",
        text(&out)
    );
    let json = wait_for_pod(&env, &two, "Unschedulable", |j| {
        unschedulable(j, "example.com/device")
    });
    assert!(json["status"]["containerStatuses"].is_null(), "{json:#}");
    let table = env.ok(&["get", "pod", &two]);
    assert!(table.contains("Pending"), "{table}");
    let described = env.ok(&["describe", "pod", &two]);
    assert!(
        described.contains("FailedScheduling") && described.contains("Insufficient"),
        "{described}"
    );
    assert!(
        !Path::new("/run/netns")
            .join(format!("default_{two}"))
            .exists(),
        "no namespaces for a waiting pod"
    );

    // A kind no spec has: Pending too (a malformed spec file, which might have held it, is
    // named in the pod's status), and deleted it leaves nothing.
    let broken = specs.join("broken.json");
    std::fs::write(
        &broken,
        "{\"cdiVersion\": \"0.6.0\", \"kind\": \"example.com/nothing\"",
    )
    .expect("broken spec");
    let file = pod(&none, "example.com/nothing: 1");
    let out = with_specs(&["apply", "-f", file.to_str().expect("utf-8")]);
    assert!(out.status.success(), "apply: {}", text(&out));
    assert!(
        stderr(&out).contains(&format!("failed to parse CDI spec {broken:?}")),
        "{}",
        text(&out)
    );
    let json = wait_for_pod(&env, &none, "Unschedulable", |j| {
        unschedulable(j, "example.com/nothing")
    });
    assert!(
        json["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(&format!("failed to parse CDI spec {broken:?}"))),
        "{json:#}"
    );
    env.ok(&["delete", "pod", &none]);
    assert!(
        !env.state()
            .join("pods")
            .join(format!("default_{none}"))
            .exists(),
        "a deleted waiting pod leaves nothing"
    );

    // The first pod deleted, its device goes back and the second pod starts with both.
    env.ok(&["delete", "pod", &one]);
    assert_nothing_left(&env, &one);
    assert_eq!(
        logs(&two, "start once the devices were free"),
        "/dev/example0\n0\n/dev/example1\n4\nEXAMPLE_DEVICE=yes\nfrom the host\ndone\n"
    );
    // Its events keep the scheduler's warning ahead of the start's.
    let described = env.ok(&["describe", "pod", &two]);
    let warned = described.find("FailedScheduling");
    let started = described.find("Started");
    assert!(
        warned.is_some() && started.is_some() && warned < started,
        "{described}"
    );
    let mut held = leases();
    held.sort();
    assert_eq!(
        held,
        [
            format!("example.com+device={dev0}"),
            format!("example.com+device={dev1}")
        ]
    );
    // Its supervisor killed, `gc` gives its devices back with the rest.
    kill_supervisor(&env, &two);
    assert_eq!(leases().len(), 2, "held until gc");
    let swept = env.ok(&["gc"]);
    assert!(
        swept.contains(&format!("released device example.com/device={dev0}")),
        "{swept}"
    );
    assert_eq!(leases(), Vec::<String>::new(), "no lease outlives its pod");
    assert_eq!(
        mounts_under(&env.state()),
        Vec::<String>::new(),
        "mounts left after gc: {swept}"
    );
    assert_nothing_left(&env, &two);
}

/// `stdin: true, tty: true` and `stdinOnce` in image containers, as containerd gives them: the
/// bundle's `process.terminal` with runc's console socket, whose pty the supervisor holds; a
/// shell reached with `attach -it` on a terminal (its size passed on), detached with Ctrl-P
/// Ctrl-Q and still running, its terminal's output in `podkit logs`; a `stdinOnce` cat that
/// reads EOF once the first attach's input ends; the pty closed once the shell exits; nothing
/// left after the delete.
#[test]
fn attach_reaches_an_image_containers_tty_and_stdin_once() {
    let env = Env::new();
    env.push("test/app:1", "hello\n");
    let image = env.name("test/app:1");
    let pod = format!("att-{}", std::process::id());
    let manifest = env.tmp.path().join("attach.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: v1
kind: Pod
metadata: {{name: {pod}}}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 2
  containers:
  - name: shell
    image: {image}
    command: [/bin/sh]
    stdin: true
    tty: true
  - name: once
    image: {image}
    command: [/bin/cat]
    stdin: true
    stdinOnce: true
"
        ),
    )
    .expect("manifest");
    let applied = env.podkit(&["apply", "-f", manifest.to_str().expect("utf-8")]);
    let _cleanup = scopeguard(|| {
        let _ = env.podkit(&["delete", "pod", &pod, "--grace-period", "0"]);
        let _ = env.podkit(&["gc"]);
    });
    assert!(applied.status.success(), "apply: {}", text(&applied));
    let state = |json: &serde_json::Value, name: &str| {
        json["status"]["containerStatuses"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["name"] == name))
            .map(|c| c["state"].clone())
            .unwrap_or_default()
    };
    wait_for_pod(&env, &pod, "running", |json| {
        state(json, "shell")["running"].is_object() && state(json, "once")["running"].is_object()
    });

    let mut session = common::Attached::on_terminal(
        env.command(&["attach", "-it", &pod, "-c", "shell"]),
        40,
        100,
    );
    session.wait_for("If you don't see a command prompt, try pressing enter.");
    session.write(b"echo hel''lo from the image; /bin/busybox stty size\r");
    session.wait_for("hello from the image");
    session.wait_for("40 100");
    session.write(&[0x10, 0x11]);
    assert!(session.wait_exit().success(), "{}", session.output());
    let json = wait_for_pod(&env, &pod, "listed", |json| json.is_object());
    assert!(
        state(&json, "shell")["running"].is_object(),
        "detaching leaves the shell running: {json:#}"
    );
    wait_for_pod(&env, &pod, "the tty's output in its log", |_| {
        String::from_utf8_lossy(&env.podkit(&["logs", &pod, "-c", "shell"]).stdout)
            .contains("hello from the image")
    });

    let mut once = common::Attached::piped(env.command(&["attach", "-i", &pod, "-c", "once"]));
    once.write(b"to cat\n");
    once.wait_for("to cat");
    once.close_input();
    assert!(once.wait_exit().success(), "{}", once.errors());
    wait_for_pod(&env, &pod, "cat completed", |json| {
        state(json, "once")["terminated"]["reason"] == "Completed"
    });
    assert_eq!(env.ok(&["logs", &pod, "-c", "once"]), "to cat\n");

    let dir = env.state().join("pods").join(format!("default_{pod}"));
    let supervisor: u32 = std::fs::read_to_string(dir.join("supervisor.pid"))
        .expect("supervisor.pid")
        .trim()
        .parse()
        .expect("pid");
    assert!(common::pty_masters(supervisor) > 0, "the shell's pty");
    let mut last = common::Attached::piped(env.command(&["attach", "-i", &pod, "-c", "shell"]));
    last.write(b"exit\n");
    assert!(last.wait_exit().success(), "{}", last.errors());
    wait_for_pod(&env, &pod, "the shell ended", |json| {
        state(json, "shell")["terminated"].is_object()
    });
    last.wait_until("no pty left in the supervisor", |_| {
        common::pty_masters(supervisor) == 0
    });
    env.ok(&["delete", "pod", &pod]);
    assert_nothing_left(&env, &pod);
}

/// `hugepages-2Mi` of an image container run by runc on this hybrid host, where runc cannot
/// write hugetlb limits itself (it knows only the v1 hugetlb hierarchy, absent here): podkit
/// writes them in the container's cgroup before runc joins it. The container allocates its one
/// page in its `medium: HugePages-2Mi` emptyDir (root's as kubelet mounts it, the pod's fsGroup
/// given write to it, the image's user being nobody) and is refused a second; nothing is left.
#[test]
fn an_image_container_gets_its_huge_pages_and_no_more() {
    let Some(_pages) = common::HugePages::set_aside(2) else {
        return;
    };
    let env = Env::new();
    env.push("test/app:1", "hello\n");
    let image = env.name("test/app:1");
    let name = format!("huge-image-{}", std::process::id());
    let manifest = env.tmp.path().join("huge.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 1
  securityContext: {{fsGroup: 2000}}
  volumes: [{{name: huge, emptyDir: {{medium: HugePages-2Mi}}}}]
  containers:
  - name: app
    image: {image}
    resources: {{limits: {{hugepages-2Mi: 2Mi, memory: 64Mi}}}}
    volumeMounts: [{{name: huge, mountPath: /huge}}]
    command:
    - /bin/sh
    - -c
    - |
      busybox fallocate -l 2097152 /huge/f && echo allocated
      busybox fallocate -l 2097152 /huge/g 2>/dev/null || echo refused
      busybox grep -o '/huge hugetlbfs' /proc/mounts
      echo done
      exec busybox sleep 3600
"
        ),
    )
    .expect("manifest");
    let _cleanup = scopeguard(|| {
        let _ = env.podkit(&["delete", "pod", &name, "--grace-period", "0"]);
    });
    env.ok(&["apply", "-f", manifest.to_str().expect("utf-8")]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let logs = loop {
        let text =
            String::from_utf8_lossy(&env.podkit(&["logs", &name, "-c", "app"]).stdout).into_owned();
        if text.contains("done\n") {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the container did not finish: {text}\n{}",
            env.ok(&["describe", "pod", &name])
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(logs, "allocated\nrefused\n/huge hugetlbfs\ndone\n");
    let cgroup = common::pod_cgroup(&name).expect("cgroup v2");
    for file in [
        "hugetlb.2MB.max",
        "app/hugetlb.2MB.max",
        "app/hugetlb.2MB.current",
    ] {
        let text = std::fs::read_to_string(cgroup.join(file)).expect("hugetlb file");
        assert_eq!(text.trim(), "2097152", "{file}");
    }
    // The second page was refused by the limit, not for want of pages (one more is set aside).
    let events = std::fs::read_to_string(cgroup.join("app/hugetlb.2MB.events")).expect("events");
    assert_eq!(events, "max 1\n");
    env.ok(&["delete", "pod", &name]);
    assert!(!cgroup.exists(), "cgroup left: {}", cgroup.display());
    assert_nothing_left(&env, &name);
}
