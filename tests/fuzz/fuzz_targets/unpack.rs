//! The puller's archive unpacker: any bytes as a tar, tar.gz or zip download must be unpacked
//! or refused, never panic, and never create, change or remove anything outside DEST. The
//! first byte picks the format (0 tar, 1 tar.gz, 2 zip, else sniffed), the rest is the archive.
//! DEST sits two levels down in a scratch directory beside the archive and a sentinel tree;
//! the whole scratch directory is compared before and after (DEST itself left out: types,
//! modes, sizes, link counts, ctimes, link targets). Whatever the result, DEST holds only
//! directories, regular files and symlinks, with modes within the umask (022, no setuid,
//! setgid or sticky bit), and every hard link of a file is beneath DEST; a version that was
//! accepted has no symlink that resolves outside DEST.
#![no_main]

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;

static SCRATCH: LazyLock<tempfile::TempDir> =
    LazyLock::new(|| tempfile::tempdir().expect("a scratch directory"));

/// Every path under `root` (but `skip`) with its type, mode, size, link count, ctime and link
/// target, without following links: a write, chmod or new link anywhere changes it.
fn snapshot(root: &Path, skip: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path == skip {
                continue;
            }
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let link = std::fs::read_link(&path).ok();
            if meta.is_dir() {
                stack.push(path.clone());
            }
            let what = format!(
                "{:o} {} {} {}.{} {:?}",
                meta.mode(),
                meta.len(),
                meta.nlink(),
                meta.ctime(),
                meta.ctime_nsec(),
                link
            );
            out.insert(path, what);
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, archive)) = data.split_first() else {
        return;
    };
    let run = SCRATCH.path().join("run");
    let _ = std::fs::remove_dir_all(&run);
    let dest = run.join("vol/.versions/version");
    std::fs::create_dir_all(&dest).expect("DEST");
    std::fs::create_dir_all(run.join("outside/dir")).expect("the sentinel tree");
    std::fs::write(run.join("outside/file"), b"sentinel").expect("the sentinel file");
    std::os::unix::fs::symlink("../outside", run.join("vol/link")).expect("a sentinel link");
    let path = run.join("vol/archive");
    std::fs::write(&path, archive).expect("the archive");

    let before = snapshot(SCRATCH.path(), &dest);
    let result = sidecars::puller::fuzz::unpack(&path, kind, &dest);
    let after = snapshot(SCRATCH.path(), &dest);
    assert_eq!(
        before, after,
        "changed outside DEST; unpack said {result:?}"
    );

    // Each inode of a regular file: its link count and the names it has beneath DEST.
    let mut inodes: BTreeMap<u64, (u64, Vec<PathBuf>)> = BTreeMap::new();
    let root = dest.canonicalize().expect("DEST");
    for path in snapshot(&dest, Path::new("")).into_keys() {
        let meta = std::fs::symlink_metadata(&path).expect("an entry of DEST");
        let kind = meta.file_type();
        let mode = meta.mode() & 0o7777;
        if kind.is_dir() {
            assert!(
                mode & 0o7022 == 0 && mode & 0o700 == 0o700,
                "{path:?} has mode {mode:o}; unpack said {result:?}"
            );
        } else if kind.is_file() {
            assert!(
                mode & 0o7022 == 0,
                "{path:?} has mode {mode:o}; unpack said {result:?}"
            );
            inodes
                .entry(meta.ino())
                .or_insert((meta.nlink(), Vec::new()))
                .1
                .push(path);
        } else if kind.is_symlink() {
            if result.is_ok()
                && let Ok(resolved) = path.canonicalize()
            {
                assert!(
                    resolved.starts_with(&root),
                    "{path:?} resolves to {resolved:?}, outside DEST"
                );
            }
        } else {
            panic!("{path:?} is a {kind:?}; unpack said {result:?}");
        }
    }
    for (nlink, names) in inodes.values() {
        assert!(
            *nlink == names.len() as u64,
            "{names:?} have {nlink} links, only these beneath DEST; unpack said {result:?}"
        );
    }
    // Directories without write permission for the owner cannot stop the next run's cleanup:
    // the unpacker always leaves them u+rwx, and the fuzzer runs as root.
    let _ = std::fs::remove_dir_all(&run);
});
