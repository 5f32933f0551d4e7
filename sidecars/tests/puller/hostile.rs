//! Hostile archives and bodies (issue #16, items 1 and 6), each built here and served for real:
//! zip and tar entries that try to write through a chain of their own symlinks, modes that would
//! publish world-writable or setuid files, a tar.gz bomb, an overlapping-entries zip bomb, an
//! archive of 300,000 files, an endless HTTP body and a filesystem too small for the version.
//! Every one is refused with the old version still published, nothing left behind, and nothing
//! changed outside DEST.

use std::os::unix::fs::PermissionsExt;

use super::*;
use support::{Endless, Tmpfs, ZipItem, tree_snapshot, zip_items};

/// `podkit-puller --one-time` (the binary: the bounds come from `PODKIT_PULLER_*` variables,
/// as a pod manifest would set them); its exit code and stderr.
async fn one_time_bin(
    url: &str,
    dest: &Path,
    env: &[(&str, &str)],
) -> anyhow::Result<(Option<i32>, String)> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_podkit-puller"));
    command
        .args(["--url", url, "--one-time", "--dest"])
        .arg(dest)
        .env("PODKIT_LOG", "warn");
    for (key, value) in env {
        command.env(key, value);
    }
    let out = tokio::task::spawn_blocking(move || command.output()).await??;
    Ok((
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// The entries of a symlink chain that climbs out of the staging directory of `dest` up to
/// `/` and down into `outside`, each link inside the version when read on its own:
/// `d/l -> ..` makes `d/l/d/l/.../m` the root's `m`, whose `../../...` goes up as many levels
/// as its name is deep. Then `m/made-outside/x` and `./f` (through `f -> m/written-outside`)
/// try to create and write files in `outside`.
fn escape_chain(dest: &Path, outside: &Path) -> (String, String) {
    // DEST/.versions/.staging-<id>/ is two levels below DEST.
    let depth = dest
        .components()
        .filter(|c| matches!(c, std::path::Component::Normal(_)))
        .count()
        + 2;
    let pairs = depth / 2 + 1;
    let link = format!("{}m", "d/l/".repeat(pairs));
    let target = format!(
        "{}{}",
        "../".repeat(2 * pairs),
        outside.strip_prefix("/").unwrap_or(outside).display()
    );
    (link, target)
}

/// Zip entries written through a chain of the archive's own symlinks must never reach outside
/// DEST: the archive is refused before anything is written there, the old version stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zip_symlink_chains_cannot_write_outside() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let dest = dir.path().join("vol");
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside)?;
    let origin = Origin::start(
        zip_items(&[ZipItem::File("good.txt", b"good", 0o644)])?,
        None,
    )
    .await?;
    let url = origin.url("/site.zip");
    sidecars::puller::run(
        config(&url, &dest, &["--one-time"])?,
        CancellationToken::new(),
    )
    .await?;
    let published = std::fs::read_link(dest.join("current"))?;
    let before = tree_snapshot(dir.path())?;

    let (link, target) = escape_chain(&dest, &outside);
    let outside_abs = outside.display().to_string();
    let outside_file = outside.join("x").display().to_string();
    let through = format!("refused archive entry {link:?}: path leads through a symlink");
    let cases: Vec<(&str, &str, Vec<ZipItem<'_>>)> = vec![
        (
            "chain of relative links",
            &through,
            vec![
                ZipItem::Dir("d/", 0o755),
                ZipItem::Symlink("d/l", ".."),
                ZipItem::Symlink(&link, &target),
                ZipItem::Symlink("f", "m/written-outside"),
                ZipItem::File("./f", b"pwned", 0o644),
                ZipItem::Dir("m/made-outside/", 0o755),
                ZipItem::File("m/made-outside/x", b"pwned", 0o644),
            ],
        ),
        (
            "absolute link",
            "refused archive entry \"a\": symlink with an absolute target",
            vec![
                ZipItem::Symlink("a", &outside_abs),
                ZipItem::File("a/x", b"pwned", 0o644),
            ],
        ),
        (
            "file through a link to an absolute file",
            "refused archive entry \"b\": symlink with an absolute target",
            vec![
                ZipItem::Symlink("b", &outside_file),
                ZipItem::File("./b", b"pwned", 0o644),
            ],
        ),
        (
            "directory link then a directory below it",
            "refused archive entry \"d/l/d/l/new/\": path leads through a symlink",
            vec![
                ZipItem::Dir("d/", 0o755),
                ZipItem::Symlink("d/l", ".."),
                ZipItem::Dir("d/l/d/l/new/", 0o755),
                ZipItem::File("d/l/y", b"y", 0o644),
            ],
        ),
    ];
    for (what, expected, items) in cases {
        origin.set(zip_items(&items)?, None);
        let err = sidecars::puller::run(
            config(&url, &dest, &["--one-time"])?,
            CancellationToken::new(),
        )
        .await
        .err()
        .with_context(|| format!("zip with a {what} was published"))?;
        ensure!(
            std::fs::read_dir(&outside)?.count() == 0,
            "{what}: written outside DEST: {:?}",
            tree_snapshot(&outside)?
        );
        let message = chain(&err);
        ensure!(message.contains(expected), "{what}: {message}");
        ensure!(std::fs::read_link(dest.join("current"))? == published);
        let after = tree_snapshot(dir.path())?;
        ensure!(
            after == before,
            "{what}: the tree changed:\n{before:#?}\n{after:#?}"
        );
    }
    Ok(())
}

/// The same chains as a tar: no entry is written through a symlink either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tar_symlink_chains_cannot_write_outside() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let dest = dir.path().join("vol");
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside)?;
    let archive = dir.path().join("site.tar");
    let url = format!("file://{}", archive.display());
    let entry = |name, kind, link, content| RawEntry {
        name,
        kind,
        link,
        content,
    };
    use tar::EntryType::{Directory, Regular, Symlink};
    std::fs::write(
        &archive,
        raw_tar(&[entry("good.txt", Regular, None, b"good")]),
    )?;
    sidecars::puller::run(
        config(&url, &dest, &["--one-time"])?,
        CancellationToken::new(),
    )
    .await?;
    let published = std::fs::read_link(dest.join("current"))?;
    let before = tree_snapshot(dir.path())?;

    let (link, target) = escape_chain(&dest, &outside);
    let through = format!("refused archive entry {link:?}: path leads through a symlink");
    let cases: Vec<(&str, Vec<RawEntry<'_>>)> = vec![
        (
            "chain, then a file below the link",
            vec![
                entry("d/", Directory, None, b""),
                entry("d/l", Symlink, Some(".."), b""),
                entry(&link, Symlink, Some(&target), b""),
                entry("m/made-outside/x", Regular, None, b"pwned"),
            ],
        ),
        (
            "chain, then a file over a link",
            vec![
                entry("d/", Directory, None, b""),
                entry("d/l", Symlink, Some(".."), b""),
                entry(&link, Symlink, Some(&target), b""),
                entry("f", Symlink, Some("m/written-outside"), b""),
                entry("./f", Regular, None, b"pwned"),
                entry("m/made-outside/", Directory, None, b""),
            ],
        ),
    ];
    for (what, entries) in cases {
        std::fs::write(&archive, raw_tar(&entries))?;
        let err = sidecars::puller::run(
            config(&url, &dest, &["--one-time"])?,
            CancellationToken::new(),
        )
        .await
        .err()
        .with_context(|| format!("tar with a {what} was published"))?;
        ensure!(
            std::fs::read_dir(&outside)?.count() == 0,
            "{what}: written outside DEST: {:?}",
            tree_snapshot(&outside)?
        );
        let message = chain(&err);
        ensure!(message.contains(&through), "{what}: {message}");
        ensure!(std::fs::read_link(dest.join("current"))? == published);
        let mut after = tree_snapshot(dir.path())?;
        // The archive itself is rewritten for every case.
        after.remove("site.tar");
        let mut expected = before.clone();
        expected.remove("site.tar");
        ensure!(
            after == expected,
            "{what}: the tree changed:\n{expected:#?}\n{after:#?}"
        );
    }
    Ok(())
}

/// Published modes keep the archive's permission bits within `--umask` (default 022): no
/// world- or group-writable files, no setuid, setgid or sticky bits, for tar and zip alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_modes_are_masked() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let files: [(&str, u32); 5] = [
        ("open.sh", 0o777),
        ("setuid", 0o4755),
        ("setgid", 0o2775),
        ("private", 0o600),
        ("shared", 0o664),
    ];
    let dirs: [(&str, u32); 2] = [("tmp/", 0o1777), ("group/", 0o2777)];
    let tar = {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, mode) in dirs {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Directory);
            header.set_size(0);
            header.set_mode(mode);
            builder.append_data(&mut header, name, std::io::empty())?;
        }
        for (name, mode) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(1);
            header.set_mode(mode);
            builder.append_data(&mut header, name, &b"x"[..])?;
        }
        builder.into_inner()?
    };
    let zip = {
        let mut items: Vec<ZipItem<'_>> = dirs.iter().map(|(n, m)| ZipItem::Dir(n, *m)).collect();
        items.extend(files.iter().map(|(n, m)| ZipItem::File(n, b"x", *m)));
        zip_items(&items)?
    };
    let origin = Origin::start(tar, None).await?;
    let zip_origin = Origin::start(zip, None).await?;
    for (umask, expect) in [
        (None, [0o755, 0o755, 0o755, 0o600, 0o644, 0o755, 0o755]),
        (
            Some("027"),
            [0o750, 0o750, 0o750, 0o600, 0o640, 0o750, 0o750],
        ),
    ] {
        for url in [origin.url("/site.tar"), zip_origin.url("/site.zip")] {
            let dest = dir.path().join(format!("vol-{}", fastrand::u32(..)));
            let mut extra = vec!["--one-time"];
            if let Some(umask) = umask {
                extra.extend(["--umask", umask]);
            }
            sidecars::puller::run(config(&url, &dest, &extra)?, CancellationToken::new()).await?;
            let names = files
                .iter()
                .map(|(n, _)| *n)
                .chain(dirs.iter().map(|(n, _)| *n));
            for (name, mode) in names.zip(expect) {
                let path = dest.join("current").join(name);
                let got = std::fs::metadata(&path)?.permissions().mode() & 0o7777;
                ensure!(
                    got == mode,
                    "{url} --umask {umask:?}: {name} has mode {got:o}, expected {mode:o}"
                );
            }
        }
    }
    Ok(())
}

/// What a bounded failure must leave: the old version published, no staging tree, no
/// temporary download.
fn old_version_stays(dest: &Path, published: &Path, content: &str) -> anyhow::Result<()> {
    ensure!(std::fs::read_link(dest.join("current"))? == published);
    ensure!(read(dest.join("current/good.txt")).as_deref() == Some(content));
    let versions = versions(dest)?;
    ensure!(versions.len() == 1, "versions left: {versions:?}");
    let tmp: Vec<_> = std::fs::read_dir(dest.join(".tmp"))?.collect();
    ensure!(tmp.is_empty(), "temporary files left: {tmp:?}");
    Ok(())
}

/// A 4 GiB tar.gz of zeros (about 4 MiB on the wire) stops at `--max-unpacked-bytes`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tar_gz_bomb_is_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let dest = dir.path().join("vol");
    let origin = Origin::start(tar_gz(&[("good.txt", b"good")])?, None).await?;
    let url = origin.url("/site.tar.gz");
    let env = [("PODKIT_PULLER_MAX_UNPACKED_BYTES", "64Mi")];
    let (code, stderr) = one_time_bin(&url, &dest, &env).await?;
    ensure!(code == Some(0), "{stderr}");
    let published = std::fs::read_link(dest.join("current"))?;

    let bomb = support::tar_gz_bomb("zeros", 4 << 30)?;
    ensure!(bomb.len() < 8 << 20, "the bomb is {} bytes", bomb.len());
    origin.set(bomb, None);
    let (code, stderr) = one_time_bin(&url, &dest, &env).await?;
    ensure!(code == Some(1), "the bomb was published: {stderr}");
    ensure!(stderr.contains("--max-unpacked-bytes 67108864"), "{stderr}");
    old_version_stays(&dest, &published, "good")
}

/// 64 zip entries that all point at one 64 MiB file of zeros (about 69 KB in all) are refused
/// before anything is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zip_bomb_is_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let dest = dir.path().join("vol");
    let origin = Origin::start(
        zip_items(&[ZipItem::File("good.txt", b"good", 0o644)])?,
        None,
    )
    .await?;
    let url = origin.url("/site.zip");
    let env = [("PODKIT_PULLER_MAX_UNPACKED_BYTES", "256Mi")];
    let (code, stderr) = one_time_bin(&url, &dest, &env).await?;
    ensure!(code == Some(0), "{stderr}");
    let published = std::fs::read_link(dest.join("current"))?;

    let bomb = support::zip_overlap_bomb(64, 64 << 20)?;
    ensure!(bomb.len() < 100_000, "the bomb is {} bytes", bomb.len());
    origin.set(bomb, None);
    let (code, stderr) = one_time_bin(&url, &dest, &env).await?;
    ensure!(code == Some(1), "the bomb was published: {stderr}");
    ensure!(stderr.contains("refused zip archive"), "{stderr}");
    old_version_stays(&dest, &published, "good")
}

/// A tar.gz of 30,000 empty files stops at `--max-entries` (1,000 here; the default, 100,000,
/// is checked with the other defaults in `args.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entry_count_bomb_is_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let dest = dir.path().join("vol");
    let origin = Origin::start(tar_gz(&[("good.txt", b"good")])?, None).await?;
    let url = origin.url("/site.tgz");
    let env = [("PODKIT_PULLER_MAX_ENTRIES", "1000")];
    let (code, stderr) = one_time_bin(&url, &dest, &env).await?;
    ensure!(code == Some(0), "{stderr}");
    let published = std::fs::read_link(dest.join("current"))?;

    origin.set(support::many_files_tar_gz(30_000)?, None);
    let (code, stderr) = one_time_bin(&url, &dest, &env).await?;
    ensure!(code == Some(1), "30,000 files were published: {stderr}");
    ensure!(stderr.contains("--max-entries 1000"), "{stderr}");
    old_version_stays(&dest, &published, "good")
}

/// A body that never ends is cut at `--max-bytes` (16 MiB here: the default, 1 GiB, is checked
/// with the other defaults in `args.rs`; downloading it took 4.5 minutes of a CI run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_body_is_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let dest = dir.path().join("vol");
    let origin = Origin::start("good", None).await?;
    let (code, stderr) = one_time_bin(&origin.url("/good.txt"), &dest, &[]).await?;
    ensure!(code == Some(0), "{stderr}");
    let published = std::fs::read_link(dest.join("current"))?;

    let endless = Endless::start().await?;
    let url = endless.url("/good.txt");
    let env = [("PODKIT_PULLER_MAX_BYTES", "16777216")];
    let (code, stderr) = one_time_bin(&url, &dest, &env).await?;
    ensure!(code == Some(1), "the endless body ended well: {stderr}");
    ensure!(
        stderr.contains("larger than --max-bytes 16777216"),
        "{stderr}"
    );
    old_version_stays(&dest, &published, "good")
}

/// On a filesystem too small for the new version (a 16 MiB tmpfs), an archive and a plain
/// download are refused with the free space named, before the filesystem is full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_filesystem_is_refused_with_a_clear_error() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let dest = dir.path().join("vol");
    let _tmpfs = Tmpfs::mount(&dest, "16m")?;
    let origin = Origin::start(tar_gz(&[("good.txt", b"good")])?, None).await?;
    sidecars::puller::run(
        config(&origin.url("/site.tgz"), &dest, &["--one-time"])?,
        CancellationToken::new(),
    )
    .await?;
    let published = std::fs::read_link(dest.join("current"))?;

    // 32 MiB unpacked from a few KiB.
    origin.set(support::tar_gz_bomb("big", 32 << 20)?, None);
    let err = sidecars::puller::run(
        config(&origin.url("/site.tgz"), &dest, &["--one-time"])?,
        CancellationToken::new(),
    )
    .await
    .err()
    .context("a version larger than the filesystem was published")?;
    let message = chain(&err);
    ensure!(
        message.contains("not enough free space") && message.contains("--min-free"),
        "{message}"
    );
    old_version_stays(&dest, &published, "good")?;

    // A 32 MiB download (the temporary file is on the same filesystem).
    origin.set(vec![b'x'; 32 << 20], None);
    let err = sidecars::puller::run(
        config(&origin.url("/big.bin"), &dest, &["--one-time"])?,
        CancellationToken::new(),
    )
    .await
    .err()
    .context("a download larger than the filesystem was published")?;
    let message = chain(&err);
    ensure!(
        message.contains("not enough free space") && message.contains("--min-free"),
        "{message}"
    );
    old_version_stays(&dest, &published, "good")
}
