//! A container's root filesystem: an overlay mount of its image's unpacked layers (read-only,
//! shared by every container of the image) under a writable layer of its own, as containerd's
//! overlayfs snapshotter gives it. A restart gets a new writable layer; the pod removes it.
//!
//! `mount(2)` takes its options in one page (4096 bytes), and 60 layer paths of the store
//! (`/var/lib/podkit/layers/sha256/<64 hex>`) do not fit. Like containerd, which then mounts
//! from a child that changed its working directory, the lower directories are named relative to
//! the layers' common directory: here from a thread of its own that `unshare(CLONE_FS)`s first,
//! so its working directory is not the process's.

use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

/// A mounted root filesystem: `DIR/rootfs` over `DIR/upper` and `DIR/work`.
#[derive(Debug)]
pub struct Rootfs {
    dir: PathBuf,
    mounted: bool,
}

/// The most lower directories overlayfs stacks (`OVL_MAX_STACK`).
pub const MAX_LAYERS: usize = 500;

/// Why a root filesystem could not be made or removed.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// No layer: an image always has one.
    #[error("an image with no layers cannot be mounted")]
    NoLayers,
    /// More than overlayfs stacks.
    #[error("the image has {0} layers, more than overlayfs stacks ({MAX_LAYERS})")]
    TooManyLayers(usize),
    /// A system call failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was done.
        what: &'static str,
        /// On what.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> RootfsError + 'a {
    move |source| RootfsError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

impl Rootfs {
    /// Mounts `layers` (bottom first, as [`crate::Image::layers`] lists them) under a new,
    /// empty writable layer at `dir/rootfs`; `dir` is created, and must not hold an earlier
    /// one (see [`Rootfs::remove`]).
    pub fn mount(layers: &[PathBuf], dir: &Path) -> Result<Rootfs, RootfsError> {
        if layers.is_empty() {
            return Err(RootfsError::NoLayers);
        }
        if layers.len() > MAX_LAYERS {
            return Err(RootfsError::TooManyLayers(layers.len()));
        }
        std::fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
        let mut rootfs = Rootfs {
            dir: dir.to_owned(),
            mounted: false,
        };
        for sub in ["upper", "work", "rootfs"] {
            let path = dir.join(sub);
            std::fs::create_dir(&path).map_err(io_err("creating", &path))?;
        }
        // The layers' common parent (the store keeps them in one directory), else none.
        let parent = layers[0].parent().map(Path::to_owned);
        let relative = parent
            .as_ref()
            .filter(|p| layers.iter().all(|l| l.parent() == Some(p)));
        let lower: Vec<String> = layers
            .iter()
            .rev()
            .map(|l| match relative {
                Some(_) => l
                    .file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into()),
                None => l.to_string_lossy().into_owned(),
            })
            .collect();
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.join(":"),
            dir.join("upper").display(),
            dir.join("work").display()
        );
        let target = dir.join("rootfs");
        let cwd = relative.cloned();
        let mount = {
            let target = target.clone();
            move || -> io::Result<()> {
                if let Some(cwd) = cwd {
                    // This thread's working directory only: the process's stays.
                    nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS)?;
                    nix::unistd::chdir(&cwd)?;
                }
                nix::mount::mount(
                    Some("overlay"),
                    &target,
                    Some("overlay"),
                    MsFlags::empty(),
                    Some(options.as_str()),
                )?;
                Ok(())
            }
        };
        std::thread::spawn(mount)
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the mount thread panicked")))
            .map_err(io_err("mounting overlay at", &target))?;
        rootfs.mounted = true;
        Ok(rootfs)
    }

    /// The mounted root filesystem.
    pub fn path(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    /// The directory that holds it.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Unmounts it and removes its directory with the writable layer.
    pub fn remove(mut self) -> Result<(), RootfsError> {
        let dir = std::mem::take(&mut self.dir);
        self.mounted = false;
        remove(&dir)
    }
}

impl Drop for Rootfs {
    fn drop(&mut self) {
        if self.mounted {
            let _ = remove(&self.dir);
        }
    }
}

/// Unmounts `dir/rootfs` if mounted and removes `dir`: also what gc does with the root
/// filesystem of a pod whose supervisor was killed. Nothing there is no error.
pub fn remove(dir: &Path) -> Result<(), RootfsError> {
    let target = dir.join("rootfs");
    match nix::mount::umount2(&target, MntFlags::UMOUNT_NOFOLLOW) {
        // EINVAL: not a mount point; ENOENT: gone.
        Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
        Err(nix::errno::Errno::EBUSY) => {
            // Still used (a process of the container holds it): detach it, the kernel frees
            // it with the last user.
            nix::mount::umount2(&target, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW)
                .map_err(|e| io_err("unmounting", &target)(e.into()))?;
        }
        Err(err) => return Err(io_err("unmounting", &target)(err.into())),
    }
    // Never remove through a mount that is still there (a lower layer is never written
    // through the overlay, but a mount someone else made there could be anything).
    use std::os::unix::fs::MetadataExt;
    if let (Ok(outer), Ok(inner)) = (std::fs::metadata(dir), std::fs::symlink_metadata(&target))
        && outer.dev() != inner.dev()
    {
        return Err(io_err("removing", &target)(io::Error::other(
            "still a mount point after unmounting",
        )));
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(io_err("removing", dir)(err)),
    }
}
