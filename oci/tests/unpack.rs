//! Applying layers to a directory as overlayfs reads them: whiteouts, opaque directories,
//! metadata, links, and hostile layers that try to write outside.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use oci::{Digest, UnpackError, UnsafeEntry, unpack};

/// One tar entry, with its name written as given (the tar crate's `set_path` refuses `..` and
/// absolute names, which the hostile layers need).
struct Entry<'a> {
    name: &'a str,
    kind: tar::EntryType,
    mode: u32,
    uid: u64,
    link: &'a str,
    data: &'a [u8],
    device: (u32, u32),
    xattrs: &'a [(&'a str, &'a [u8])],
}

fn entry(name: &str, kind: tar::EntryType) -> Entry<'_> {
    let mode = if kind == tar::EntryType::Directory {
        0o755
    } else {
        0o644
    };
    Entry {
        name,
        kind,
        mode,
        uid: 0,
        link: "",
        data: b"",
        device: (0, 0),
        xattrs: &[],
    }
}

fn file<'a>(name: &'a str, data: &'a [u8]) -> Entry<'a> {
    Entry {
        data,
        ..entry(name, tar::EntryType::Regular)
    }
}

fn dir(name: &str) -> Entry<'_> {
    entry(name, tar::EntryType::Directory)
}

fn link<'a>(name: &'a str, kind: tar::EntryType, target: &'a str) -> Entry<'a> {
    Entry {
        link: target,
        ..entry(name, kind)
    }
}

fn layer(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for e in entries {
        if !e.xattrs.is_empty() {
            let records = e
                .xattrs
                .iter()
                .map(|(k, v)| (format!("SCHILY.xattr.{k}"), *v));
            let records: Vec<(String, &[u8])> = records.collect();
            builder
                .append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), *v)))
                .expect("pax");
        }
        let mut header = tar::Header::new_ustar();
        let name = e.name.as_bytes();
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        header.set_entry_type(e.kind);
        header.set_mode(e.mode);
        header.set_uid(e.uid);
        header.set_gid(e.uid);
        header.set_mtime(1_600_000_000);
        header.set_size(e.data.len() as u64);
        if !e.link.is_empty() {
            let link = e.link.as_bytes();
            header.as_old_mut().linkname[..link.len()].copy_from_slice(link);
        }
        if matches!(e.kind, tar::EntryType::Char | tar::EntryType::Block) {
            header.set_device_major(e.device.0).expect("major");
            header.set_device_minor(e.device.1).expect("minor");
        }
        header.set_cksum();
        builder.append(&header, e.data).expect("append");
    }
    builder.into_inner().expect("finish")
}

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the unpack tests make device nodes and trusted.* xattrs: run them as root"
    );
}

struct Dirs {
    _tmp: tempfile::TempDir,
    dest: std::path::PathBuf,
    outside: std::path::PathBuf,
}

fn dirs() -> Dirs {
    require_root();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dest = tmp.path().join("layer");
    let outside = tmp.path().join("outside");
    fs::create_dir(&dest).expect("dest");
    fs::create_dir(&outside).expect("outside");
    Dirs {
        _tmp: tmp,
        dest,
        outside,
    }
}

fn xattr_of(path: &Path, name: &str) -> Option<Vec<u8>> {
    xattr::get(path, name).expect("getxattr")
}

#[test]
fn metadata_links_and_nodes_are_kept() {
    let d = dirs();
    let tar = layer(&[
        dir("./"),
        Entry {
            mode: 0o750,
            uid: 1000,
            ..dir("./etc")
        },
        Entry {
            uid: 1000,
            ..file("./etc/app.conf", b"key=value\n")
        },
        Entry {
            mode: 0o4755,
            ..file("bin/su", b"#!/bin/true\n")
        },
        Entry {
            mode: 0o1777,
            ..dir("tmp")
        },
        link("bin/sh", tar::EntryType::Symlink, "/bin/busybox"),
        link("bin/su2", tar::EntryType::Link, "bin/su"),
        entry("run/fifo", tar::EntryType::Fifo),
        Entry {
            device: (1, 3),
            mode: 0o666,
            ..entry("dev/null", tar::EntryType::Char)
        },
        Entry {
            xattrs: &[("user.origin", b"test")],
            ..file("data", b"x")
        },
    ]);
    let unpacked = unpack(
        &tar[..],
        Some("application/vnd.oci.image.layer.v1.tar"),
        &d.dest,
    )
    .expect("unpack");
    assert_eq!(unpacked.diff_id, Digest::of(&tar));
    assert_eq!(unpacked.size, tar.len() as u64);

    let meta =
        |p: &str| fs::symlink_metadata(d.dest.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    assert_eq!(meta("etc").mode() & 0o7777, 0o750);
    assert_eq!(meta("etc").uid(), 1000);
    assert_eq!(
        meta("etc").mtime(),
        1_600_000_000,
        "directory mtime set after its entries"
    );
    assert_eq!(
        fs::read(d.dest.join("etc/app.conf")).expect("read"),
        b"key=value\n"
    );
    assert_eq!(
        (meta("etc/app.conf").uid(), meta("etc/app.conf").gid()),
        (1000, 1000)
    );
    assert_eq!(meta("etc/app.conf").mtime(), 1_600_000_000);
    assert_eq!(meta("bin/su").mode() & 0o7777, 0o4755, "setuid kept");
    assert_eq!(
        meta("bin").mode() & 0o7777,
        0o755,
        "implicit parents are 0755"
    );
    assert_eq!(meta("tmp").mode() & 0o7777, 0o1777, "sticky bit kept");
    assert_eq!(
        fs::read_link(d.dest.join("bin/sh")).expect("readlink"),
        Path::new("/bin/busybox")
    );
    assert_eq!(meta("bin/su2").ino(), meta("bin/su").ino(), "hard link");
    assert!(meta("run/fifo").file_type().is_fifo());
    assert!(meta("dev/null").file_type().is_char_device());
    assert_eq!(meta("dev/null").rdev(), nix::sys::stat::makedev(1, 3));
    assert_eq!(meta("dev/null").mode() & 0o7777, 0o666);
    assert_eq!(
        xattr_of(&d.dest.join("data"), "user.origin").as_deref(),
        Some(&b"test"[..])
    );
}

#[test]
fn gzip_and_zstd_layers_have_the_plain_tars_diff_id() {
    let tar = layer(&[dir("a"), file("a/b", b"hello")]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).expect("gzip");
    let gz = gz.finish().expect("gzip");
    let zst = zstd::encode_all(&tar[..], 3).expect("zstd");
    for (blob, media_type) in [
        (gz, "application/vnd.oci.image.layer.v1.tar+gzip"),
        (zst, "application/vnd.oci.image.layer.v1.tar+zstd"),
        // `docker save` names every layer a plain tar: the magic decides.
        (tar.clone(), "application/vnd.docker.image.rootfs.diff.tar"),
    ] {
        let d = dirs();
        let unpacked = unpack(&blob[..], Some(media_type), &d.dest).expect(media_type);
        assert_eq!(unpacked.diff_id, Digest::of(&tar), "{media_type}");
        assert_eq!(fs::read(d.dest.join("a/b")).expect("read"), b"hello");
    }
}

#[test]
fn unknown_media_types_are_refused() {
    let d = dirs();
    let err = unpack(
        &b""[..],
        Some("application/vnd.cncf.helm.chart.content.v1.tar+gzip"),
        &d.dest,
    )
    .expect_err("helm chart");
    assert!(matches!(err, UnpackError::MediaType { .. }), "{err}");
}

#[test]
fn whiteouts_become_overlay_whiteouts() {
    let d = dirs();
    let tar = layer(&[
        dir("etc"),
        file("etc/.wh.passwd", b""),
        dir("var/cache"),
        file("var/cache/.wh..wh..opq", b""),
        file("var/cache/new", b"n"),
        // Whiteouts only hide lower layers: an entry of this layer stays, and a directory of
        // this layer becomes opaque.
        file("keep", b"k"),
        file(".wh.keep", b""),
        dir("kept-dir"),
        file(".wh.kept-dir", b""),
        // An entry after its whiteout replaces it; a directory then hides the lower one.
        file(".wh.again", b""),
        dir("again"),
        file(".wh..wh.plnk", b""),
    ]);
    unpack(&tar[..], None, &d.dest).expect("unpack");

    let whiteout = fs::symlink_metadata(d.dest.join("etc/passwd")).expect("whiteout");
    assert!(whiteout.file_type().is_char_device());
    assert_eq!(whiteout.rdev(), 0);
    assert!(!d.dest.join("etc/.wh.passwd").exists());
    assert_eq!(
        xattr_of(&d.dest.join("var/cache"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert!(!d.dest.join("var/cache/.wh..wh..opq").exists());
    assert_eq!(fs::read(d.dest.join("var/cache/new")).expect("read"), b"n");
    assert_eq!(fs::read(d.dest.join("keep")).expect("read"), b"k");
    assert_eq!(
        xattr_of(&d.dest.join("kept-dir"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert!(
        fs::symlink_metadata(d.dest.join("again"))
            .expect("again")
            .is_dir()
    );
    assert_eq!(
        xattr_of(&d.dest.join("again"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert!(!d.dest.join(".wh..wh.plnk").exists());
    assert!(xattr_of(&d.dest.join("etc"), "trusted.overlay.opaque").is_none());
}

#[test]
fn later_entries_replace_earlier_ones() {
    let d = dirs();
    let tar = layer(&[
        dir("x"),
        file("x/inner", b"1"),
        file("x", b"now a file"),
        file("y", b"old"),
        file("y", b"new"),
        link("z", tar::EntryType::Symlink, "y"),
        dir("z"),
    ]);
    unpack(&tar[..], None, &d.dest).expect("unpack");
    assert_eq!(fs::read(d.dest.join("x")).expect("x"), b"now a file");
    assert_eq!(fs::read(d.dest.join("y")).expect("y"), b"new");
    assert!(fs::symlink_metadata(d.dest.join("z")).expect("z").is_dir());
}

#[test]
fn overlay_xattrs_from_the_layer_are_dropped() {
    let d = dirs();
    let tar = layer(&[Entry {
        xattrs: &[("trusted.overlay.redirect", b"/etc"), ("user.ok", b"1")],
        ..dir("d")
    }]);
    unpack(&tar[..], None, &d.dest).expect("unpack");
    assert!(xattr_of(&d.dest.join("d"), "trusted.overlay.redirect").is_none());
    assert_eq!(
        xattr_of(&d.dest.join("d"), "user.ok").as_deref(),
        Some(&b"1"[..])
    );
}

/// A hostile layer: what it tries, the tar (given the outside directory), what refuses it.
type Hostile = (&'static str, Box<dyn Fn(&Path) -> Vec<u8>>, UnsafeEntry);

/// Every hostile layer is refused, and nothing appears outside the directory.
#[test]
fn hostile_layers_write_nothing_outside() {
    let cases: Vec<Hostile> = vec![
        (
            "dot-dot",
            Box::new(|_| layer(&[file("../outside/evil", b"x")])),
            UnsafeEntry::ParentDir,
        ),
        (
            "dot-dot inside",
            Box::new(|_| layer(&[dir("a"), file("a/../../outside/evil", b"x")])),
            UnsafeEntry::ParentDir,
        ),
        (
            "absolute",
            Box::new(|o| {
                let name = format!("{}/evil", o.display());
                layer(&[file(&name, b"x")])
            }),
            UnsafeEntry::Absolute,
        ),
        (
            "through a symlink",
            Box::new(|o| {
                let target = o.display().to_string();
                layer(&[
                    link("escape", tar::EntryType::Symlink, &target),
                    file("escape/evil", b"x"),
                ])
            }),
            UnsafeEntry::ThroughSymlink,
        ),
        (
            "through a relative symlink",
            Box::new(|_| {
                layer(&[
                    link("escape", tar::EntryType::Symlink, "../outside"),
                    file("escape/evil", b"x"),
                ])
            }),
            UnsafeEntry::ThroughSymlink,
        ),
        (
            "a whiteout through a symlink",
            Box::new(|o| {
                let target = o.display().to_string();
                layer(&[
                    link("escape", tar::EntryType::Symlink, &target),
                    file("escape/.wh.victim", b""),
                ])
            }),
            UnsafeEntry::ThroughSymlink,
        ),
        (
            "a hard link out",
            Box::new(|_| layer(&[link("evil", tar::EntryType::Link, "../outside/victim")])),
            UnsafeEntry::ParentDir,
        ),
        (
            "a hard link to an absolute path",
            Box::new(|o| {
                let target = format!("{}/victim", o.display());
                layer(&[link("evil", tar::EntryType::Link, &target)])
            }),
            UnsafeEntry::Absolute,
        ),
        (
            "a hard link through a symlink",
            Box::new(|o| {
                let target = o.display().to_string();
                layer(&[
                    link("escape", tar::EntryType::Symlink, &target),
                    link("evil", tar::EntryType::Link, "escape/victim"),
                ])
            }),
            UnsafeEntry::ThroughSymlink,
        ),
        (
            "a hard link to a missing entry",
            Box::new(|_| layer(&[link("evil", tar::EntryType::Link, "nothing")])),
            UnsafeEntry::LinkTarget,
        ),
        (
            "a hard link to a whiteout",
            Box::new(|_| {
                layer(&[
                    file(".wh.gone", b""),
                    link("evil", tar::EntryType::Link, "gone"),
                ])
            }),
            UnsafeEntry::LinkTarget,
        ),
    ];
    for (what, make, expected) in cases {
        let d = dirs();
        // A victim outside, which a hard link would share and a write would change.
        fs::write(d.outside.join("victim"), b"untouched").expect("victim");
        fs::set_permissions(d.outside.join("victim"), fs::Permissions::from_mode(0o600))
            .expect("chmod");
        let tar = make(&d.outside);
        let err = unpack(&tar[..], None, &d.dest).expect_err(what);
        match err {
            UnpackError::Unsafe { problem, .. } => assert_eq!(problem, expected, "{what}: {err}"),
            other => panic!("{what}: {other}"),
        }
        let outside: Vec<_> = fs::read_dir(&d.outside)
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(outside, ["victim"], "{what}: something was written outside");
        let victim = fs::metadata(d.outside.join("victim")).expect("victim");
        assert_eq!(victim.nlink(), 1, "{what}: the victim was linked");
        assert_eq!(
            fs::read(d.outside.join("victim")).expect("victim"),
            b"untouched"
        );
    }
}
