//! A container run as podkit will run it: an image loaded into the store, its layers mounted as
//! an overlay with a writable layer of its own, `config.json` built by `oci::bundle`, and runc
//! (Debian's package, as CI installs it) running it. What the process sees is checked from
//! inside: its command, environment, user, capabilities, read-only root, masked paths, the
//! image's whiteouts and seccomp filters.

use std::path::{Path, PathBuf};
use std::process::Command;

use oci::bundle::{self, BindMount, Container, Security, UserRequest};
use oci::{Rootfs, Store, seccomp};
use oci_testing::images;
use oci_testing::images::{Compress, ImageDef, Layout};

struct Fixture {
    dir: tempfile::TempDir,
    image: oci::Image,
}

/// The tests' image (busybox, then an app layer that deletes /etc/motd and makes /var/cache
/// opaque; Entrypoint `/bin/sh -c`, Cmd `echo hello from $GREETING`, User 65534:65534,
/// WorkingDir /app), loaded into a store of its own.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut layout = Layout::new(&dir.path().join("layout"));
    let app = layout.image(&ImageDef {
        architecture: "amd64",
        layers: vec![
            images::busybox_layer(Compress::Gzip),
            images::app_layer(Compress::None, "hello\n"),
        ],
    });
    layout.tag("app", &app);
    let store = Store::open(dir.path().join("store")).expect("store");
    // A layout's short names are no references: the image is found by its manifest digest.
    let loaded = oci::load(&store, &layout.dir).expect("load");
    let image = store.image(&loaded[0].manifest_digest).expect("loaded");
    Fixture { dir, image }
}

/// runc, as the supervisor will run it: its own state root; `run` here (create + start and wait).
/// The container's stdout and the runtime's exit status.
fn runc_run(root: &Path, bundle: &Path, id: &str) -> (bool, String, String) {
    let out = Command::new("runc")
        .arg("--root")
        .arg(root)
        .args(["run", "--bundle"])
        .arg(bundle)
        .arg(id)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("runc must be installed (Debian's runc package)");
    // runc removes the container's state and cgroup when `run` returns; make sure.
    let _ = Command::new("runc")
        .arg("--root")
        .arg(root)
        .args(["delete", "-f", id])
        .output();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn container(rootfs: PathBuf) -> Container {
    Container {
        name: "app".into(),
        rootfs,
        hostname: "web".into(),
        env: vec![("GREETING".into(), "the pod".into())],
        ..Default::default()
    }
}

fn unique_id() -> String {
    format!("t{}-{}", std::process::id(), rand_suffix())
}

fn rand_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The overlay shows the image as its layers make it: the top layer's whiteouts hide the
/// base's files; writes go to the container's own layer and vanish with it.
#[test]
fn the_root_filesystem_is_the_images_layers_under_a_layer_of_its_own() {
    let f = fixture();
    let dir = f.dir.path().join("ctr");
    let rootfs = Rootfs::mount(&f.image.layers, &dir).expect("mount");
    let root = rootfs.path();
    assert_eq!(
        std::fs::read_to_string(root.join("app/greeting")).expect("app"),
        "hello\n"
    );
    assert!(!root.join("etc/motd").exists(), "a whiteout hides the file");
    assert!(!root.join("var/cache/old").exists(), "an opaque directory");
    assert!(root.join("var/cache/new").exists());
    std::fs::write(root.join("tmp/written"), b"x").expect("write");
    assert!(dir.join("upper/tmp/written").exists());
    // Nothing written reaches the shared layers.
    for layer in &f.image.layers {
        assert!(!layer.join("tmp/written").exists());
    }
    rootfs.remove().expect("remove");
    assert!(!dir.exists());
}

/// No command in the pod: the image's Entrypoint and Cmd run, as the image's user, in its
/// WorkingDir, with HOSTNAME, the image's and the pod's variables.
#[test]
fn the_images_entrypoint_runs_as_the_images_user() {
    let f = fixture();
    let rootfs = Rootfs::mount(&f.image.layers, &f.dir.path().join("ctr")).expect("mount");
    let mut c = container(rootfs.path());
    c.command = vec![];
    c.args = vec!["echo $GREETING; id -u; id -g; pwd; echo $HOSTNAME; echo $PATH".into()];
    let spec = bundle::spec(&c, f.image.config.config().as_ref()).expect("spec");
    let bundle_dir = f.dir.path().join("bundle");
    std::fs::create_dir(&bundle_dir).expect("bundle");
    bundle::write(&bundle_dir, &spec).expect("write");
    let (ok, out, err) = runc_run(&f.dir.path().join("runc"), &bundle_dir, &unique_id());
    assert!(ok, "runc failed: {err}");
    assert_eq!(out, "the pod\n65534\n65534\n/app\nweb\n/usr/bin:/bin\n");
    rootfs.remove().expect("remove");
}

/// securityContext: runAsUser, capabilities dropped (chown fails even as root), the root
/// filesystem read-only, kubelet's masked paths, a read-only volume.
#[test]
fn the_security_context_is_applied_by_the_runtime() {
    let f = fixture();
    let rootfs = Rootfs::mount(&f.image.layers, &f.dir.path().join("ctr")).expect("mount");
    let volume = f.dir.path().join("volume");
    std::fs::create_dir(&volume).expect("volume");
    std::fs::write(volume.join("data"), b"from the host\n").expect("data");
    let mut c = container(rootfs.path());
    c.command = vec!["/bin/sh".into(), "-c".into()];
    c.args = vec![concat!(
        "id -u; ",
        "busybox grep CapEff /proc/self/status; ",
        "busybox chown 1 /tmp 2>/dev/null && echo chown-worked || echo chown-refused; ",
        "echo x > /root-file 2>/dev/null && echo root-writable || echo root-read-only; ",
        "echo x > /tmp/x 2>/dev/null && echo tmp-writable || echo tmp-read-only; ",
        "cat /data/data; echo x > /data/data 2>/dev/null && echo volume-writable || echo volume-read-only; ",
        "busybox wc -c < /proc/keys"
    )
    .into()];
    c.user = UserRequest {
        uid: Some(0),
        ..Default::default()
    };
    c.security = Security {
        drop_capabilities: vec!["ALL".into()],
        read_only_root: true,
        no_new_privileges: true,
        ..Default::default()
    };
    c.mounts = vec![BindMount {
        source: volume.clone(),
        destination: "/data".into(),
        read_only: true,
    }];
    let spec = bundle::spec(&c, f.image.config.config().as_ref()).expect("spec");
    let bundle_dir = f.dir.path().join("bundle");
    std::fs::create_dir(&bundle_dir).expect("bundle");
    bundle::write(&bundle_dir, &spec).expect("write");
    let (ok, out, err) = runc_run(&f.dir.path().join("runc"), &bundle_dir, &unique_id());
    assert!(ok, "runc failed: {err}\n{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "0",
            "CapEff:\t0000000000000000",
            "chown-refused",
            "root-read-only",
            // /tmp is in the read-only root too: an emptyDir is how a pod gets a writable one.
            "tmp-read-only",
            "from the host",
            "volume-read-only",
            "0",
        ],
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(volume.join("data")).expect("data"),
        "from the host\n"
    );
    rootfs.remove().expect("remove");
}

/// runAsNonRoot with runAsUser 0 is refused before anything runs.
#[test]
fn run_as_non_root_refuses_run_as_user_0() {
    let f = fixture();
    let rootfs = Rootfs::mount(&f.image.layers, &f.dir.path().join("ctr")).expect("mount");
    let mut c = container(rootfs.path());
    c.user = UserRequest {
        uid: Some(0),
        run_as_non_root: true,
        ..Default::default()
    };
    let err = bundle::spec(&c, f.image.config.config().as_ref()).expect_err("root");
    assert_eq!(
        err.to_string(),
        "container app: container's runAsUser breaks non-root policy"
    );
    rootfs.remove().expect("remove");
}

/// Runs `script` in the container `c` with its own bundle and runc root under `dir`: the
/// container's stdout (the scripts send their stderr there with `2>&1`).
fn run_script(dir: &Path, c: &Container, script: &str) -> String {
    let mut c = c.clone();
    c.command = vec!["/bin/sh".into(), "-c".into(), script.into()];
    let spec = bundle::spec(&c, None).expect("spec");
    std::fs::create_dir(dir).expect("bundle");
    bundle::write(dir, &spec).expect("write");
    let (ok, out, err) = runc_run(&dir.join("runc"), dir, &unique_id());
    assert!(ok, "runc failed: {err}\n{out}");
    out
}

/// The capabilities `bundle::spec` gives (Docker's), by name, plus `add`.
fn capability_names(add: &[&str]) -> Vec<String> {
    bundle::DEFAULT_CAPABILITIES
        .iter()
        .map(|c| c.to_string())
        .chain(add.iter().map(|c| c.to_string()))
        .collect()
}

/// seccompProfile RuntimeDefault: unshare(2) works unconfined and is refused with EPERM under
/// containerd's default profile, unless the container has CAP_SYS_ADMIN (given to both the
/// process and the filter). A user namespace needs no capability, so only seccomp refuses it.
#[test]
fn the_runtime_default_profile_refuses_unshare_without_cap_sys_admin() {
    let f = fixture();
    let rootfs = Rootfs::mount(&f.image.layers, &f.dir.path().join("ctr")).expect("mount");
    let script = "busybox unshare -U busybox true 2>&1 && echo unshare-worked || echo \
                  unshare-refused; id -u";
    let mut c = container(rootfs.path());
    c.user = UserRequest {
        uid: Some(0),
        ..Default::default()
    };

    let unconfined = run_script(&f.dir.path().join("unconfined"), &c, script);
    assert_eq!(unconfined, "unshare-worked\n0\n");

    c.security.seccomp = Some(seccomp::runtime_default(&capability_names(&[])));
    let confined = run_script(&f.dir.path().join("default"), &c, script);
    assert!(
        confined.contains("Operation not permitted\nunshare-refused\n0\n"),
        "{confined}"
    );

    c.security.add_capabilities = vec!["SYS_ADMIN".into()];
    c.security.seccomp = Some(seccomp::runtime_default(&capability_names(&["SYS_ADMIN"])));
    let admin = run_script(&f.dir.path().join("admin"), &c, script);
    assert_eq!(admin, "unshare-worked\n0\n");
    rootfs.remove().expect("remove");
}

/// seccompProfile Localhost: a Docker-format profile that refuses mkdir(2) unless
/// CAP_SYS_ADMIN, and rmdir(2) only with CAP_SYS_BOOT; the container has neither, so mkdir is
/// refused and rmdir works.
#[test]
fn a_localhost_profile_refuses_mkdir() {
    let f = fixture();
    let rootfs = Rootfs::mount(&f.image.layers, &f.dir.path().join("ctr")).expect("mount");
    std::fs::create_dir(rootfs.path().join("tmp/old")).expect("old");
    let profile = f.dir.path().join("profile.json");
    std::fs::write(
        &profile,
        r#"{
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                 "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
                {"name": "rmdir", "action": "SCMP_ACT_ERRNO",
                 "includes": {"caps": ["CAP_SYS_BOOT"]}}
            ]
        }"#,
    )
    .expect("profile");
    let mut c = container(rootfs.path());
    c.security.seccomp =
        Some(seccomp::localhost(&profile, &capability_names(&[])).expect("localhost profile"));
    let out = run_script(
        &f.dir.path().join("bundle"),
        &c,
        "busybox mkdir /tmp/new 2>&1 || echo mkdir-refused; busybox rmdir /tmp/old && echo \
         rmdir-worked",
    );
    assert_eq!(
        out,
        "mkdir: can't create directory '/tmp/new': Operation not permitted\nmkdir-refused\n\
         rmdir-worked\n"
    );
    assert!(!rootfs.path().join("tmp/new").exists());
    assert!(!rootfs.path().join("tmp/old").exists());
    rootfs.remove().expect("remove");
}
