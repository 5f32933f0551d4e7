//! Pins: bind mounts of `/proc/.../ns/*` files that keep a namespace alive with no process in it.
//! Equal to what `ip netns add` does for network namespaces.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::mount::{MntFlags, MsFlags};

use crate::namespace::NETNS_RUN_DIR;
use crate::{Error, Result};

/// Creates an empty file at `pin`, refusing one that exists, and bind-mounts `ns_file` on it.
/// On failure nothing is left at `pin`.
pub(crate) fn pin(ns_file: &Path, pin: &Path) -> Result<()> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(pin)
        .map_err(|source| match source.kind() {
            io::ErrorKind::AlreadyExists => Error::AlreadyExists {
                path: pin.to_path_buf(),
            },
            _ => Error::CreatePin {
                path: pin.to_path_buf(),
                source,
            },
        })?;
    nix::mount::mount(
        Some(ns_file),
        pin,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|source| {
        // The file is ours (create_new) and empty; losing it is harmless, keeping it is a leak.
        let _ = fs::remove_file(pin);
        Error::BindMount {
            src: ns_file.to_path_buf(),
            dst: pin.to_path_buf(),
            source,
        }
    })
}

/// Unmounts everything stacked on `path` and removes the file. Returns whether there was
/// anything to remove; a missing `path` is not an error, so a cut-short delete can be re-run.
/// A symlink is removed, never followed: what it points to is not ours.
pub(crate) fn unpin(path: &Path) -> Result<bool> {
    let mut removed = false;
    loop {
        match nix::mount::umount2(path, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW) {
            Ok(()) => removed = true,
            // Not (or no longer) a mount point.
            Err(nix::Error::EINVAL) => break,
            Err(nix::Error::ENOENT) => return Ok(removed),
            Err(source) => {
                return Err(Error::Unmount {
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(removed),
        Err(source) => Err(Error::Remove {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Makes `/run/netns` exist and be a shared mount, as iproute2's `netns_add` does, so that pins
/// made there propagate to mount namespaces created later and their unmounts do too.
pub(crate) fn ensure_netns_run_dir() -> Result<()> {
    // Done once per process: nothing in podkit undoes it, and it costs two syscalls otherwise.
    static DONE: AtomicBool = AtomicBool::new(false);
    if DONE.load(Ordering::Acquire) {
        return Ok(());
    }
    let dir = Path::new(NETNS_RUN_DIR);
    fs::create_dir_all(dir).map_err(|source| Error::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let shared = MsFlags::MS_SHARED | MsFlags::MS_REC;
    let mut bound = false;
    loop {
        match nix::mount::mount(None::<&str>, dir, None::<&str>, shared, None::<&str>) {
            Ok(()) => break,
            // Not a mount point yet: bind it on itself once, then make that shared.
            Err(nix::Error::EINVAL) if !bound => {
                let bind = MsFlags::MS_BIND | MsFlags::MS_REC;
                nix::mount::mount(Some(dir), dir, None::<&str>, bind, None::<&str>).map_err(
                    |source| Error::BindMount {
                        src: dir.to_path_buf(),
                        dst: dir.to_path_buf(),
                        source,
                    },
                )?;
                bound = true;
            }
            Err(source) => {
                return Err(Error::MakeShared {
                    path: dir.to_path_buf(),
                    source,
                });
            }
        }
    }
    DONE.store(true, Ordering::Release);
    Ok(())
}
