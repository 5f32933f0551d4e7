//! A cgroup for each container, where cgroup v2 is mounted (at /sys/fs/cgroup on a v2 host, at
//! /sys/fs/cgroup/unified on a hybrid one): `<the supervisor's cgroup>/podkit-POD/CONTAINER`.
//! The cgroup is how a container's every process is found and ended, as a container runtime
//! does, also one that left the container's process group (`setsid`, a daemonizing server): when
//! the container's main process exits, and when the pod is deleted or garbage-collected. An
//! image container's cpu and memory limits are the OCI runtime's to write (runc writes them in
//! the v1 hierarchies of a hybrid host, in this tree on a v2 one); podkit makes the controllers
//! available on a v2 host ([`PodCgroup::enable_controllers`]) and reads the OOM kills after a
//! container ends ([`PodCgroup::oom_kills`]).
//!
//! The pod's cgroup is recorded in its state directory (`cgroup`), where `podkit gc` finds it
//! when the supervisor is gone. Without cgroup v2 the process group and the pod-wide sweep of
//! descendants do the work, and a process that left its group lives until the pod ends.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

/// The file in the pod's state directory naming its cgroup.
pub const RECORD: &str = "cgroup";

/// How long a removal waits for the killed processes of a cgroup to be gone.
const EMPTY_WAIT: Duration = Duration::from_secs(2);

/// The pod's cgroup.
#[derive(Debug)]
pub struct PodCgroup {
    dir: PathBuf,
    /// Where cgroup v2 is mounted: `dir` below it is the path an OCI runtime's
    /// `linux.cgroupsPath` names.
    mount: PathBuf,
    /// Where the cgroup v1 memory hierarchy is mounted, on a hybrid host: the OCI runtime puts
    /// a container's memory cgroup there, at its `linux.cgroupsPath`.
    memory_v1: Option<PathBuf>,
}

impl PodCgroup {
    /// Makes the pod's cgroup below the supervisor's own and records it in `state_dir`. `None`
    /// where no cgroup v2 is mounted, or it cannot be written (logged).
    pub fn create(pod: &str, state_dir: &Path) -> Option<PodCgroup> {
        let (mount, own, memory_v1) = own_cgroup()?;
        let dir = own.join(format!("podkit-{pod}"));
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            // Left by a supervisor that died before `podkit gc` ran: nothing else makes it.
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                remove_tree(&dir);
                if let Err(err) = std::fs::create_dir(&dir) {
                    warn!(dir = %dir.display(), %err, "failed to make the pod's cgroup; containers run without one");
                    return None;
                }
            }
            Err(err) => {
                warn!(dir = %dir.display(), %err, "failed to make the pod's cgroup; containers run without one");
                return None;
            }
        }
        let record = state_dir.join(RECORD);
        if let Err(err) = super::status::write_atomic(&record, dir.to_string_lossy().as_bytes()) {
            warn!(%err, "failed to record the pod's cgroup; podkit gc will not find it");
        }
        Some(PodCgroup {
            dir,
            mount,
            memory_v1,
        })
    }

    /// Whether the kernel counts swap per cgroup here: then a memory limit is given to the
    /// runtime as the limit of memory and swap together, and the container swaps nothing
    /// (kubelet's default, NoSwap; containerd sets it only where the swap controller is).
    pub fn swap_accounting(&self) -> bool {
        match &self.memory_v1 {
            Some(mount) => mount.join("memory.memsw.limit_in_bytes").exists(),
            None => self.dir.join("memory.swap.max").exists(),
        }
    }

    /// On a cgroup v2 host, makes the cpu and memory controllers available to the pod's
    /// containers (their limits are written in their cgroups below the pod's): enabled in the
    /// pod's cgroup, and in the supervisor's where it may (the root cgroup, or a delegated one
    /// with no process of its own). An error says what is missing. Nothing to do on a hybrid
    /// host, where the runtime writes the limits in the v1 hierarchies.
    pub fn enable_controllers(&self) -> Result<(), String> {
        if self.memory_v1.is_some() {
            return Ok(());
        }
        let wanted = ["cpu", "memory"];
        let available = |dir: &Path| {
            let list = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
            wanted
                .iter()
                .all(|c| list.split_whitespace().any(|have| have == *c))
        };
        if !available(&self.dir)
            && let Some(own) = self.dir.parent()
        {
            let _ = std::fs::write(own.join("cgroup.subtree_control"), "+cpu +memory");
        }
        if !available(&self.dir) {
            return Err(format!(
                "cpu and memory limits need the cgroup v2 controllers cpu and memory in {} \
                 (the supervisor's cgroup delegates them: start podkit from a cgroup with \
                 them enabled, e.g. `systemd-run --scope -p Delegate=yes podkit ...`)",
                self.dir.display()
            ));
        }
        std::fs::write(self.dir.join("cgroup.subtree_control"), "+cpu +memory").map_err(|e| {
            format!(
                "failed to enable the cpu and memory controllers in {}: {e}",
                self.dir.display()
            )
        })
    }

    /// The pod's huge page limits, as kubelet sets its pod cgroup (`HugePageLimits` of the pod's
    /// requests): for each page size the kernel offers, `hugetlb.<size>.max` (and
    /// `hugetlb.<size>.rsvd.max` where the kernel has it, as runc writes both) the pod's bytes
    /// of that size, 0 for a size it does not ask. The hugetlb controller is enabled for the pod
    /// (in the supervisor's cgroup where it may, and in the pod's for its containers). An error
    /// when the pod asks a size and the controller is not to be had here; a pod asking none
    /// then runs without the limits (logged).
    pub fn set_pod_huge_pages(&self, pages: &BTreeMap<u64, u64>) -> Result<(), String> {
        let has = |dir: &Path| {
            std::fs::read_to_string(dir.join("cgroup.controllers"))
                .unwrap_or_default()
                .split_whitespace()
                .any(|c| c == "hugetlb")
        };
        if !has(&self.dir)
            && let Some(own) = self.dir.parent()
        {
            let _ = std::fs::write(own.join("cgroup.subtree_control"), "+hugetlb");
        }
        let enabled = has(&self.dir)
            && std::fs::write(self.dir.join("cgroup.subtree_control"), "+hugetlb").is_ok();
        if !enabled {
            if let Some(size) = pages.keys().next() {
                return Err(format!(
                    "{} needs the cgroup v2 hugetlb controller in {} to limit the pod's huge \
                     pages, and it is not available there (the supervisor's cgroup delegates \
                     it: start podkit from a cgroup with it enabled, e.g. `systemd-run --scope \
                     -p Delegate=yes podkit ...`)",
                    crate::spec::resources::huge_page_name(*size),
                    self.dir.display()
                ));
            }
            debug!(dir = %self.dir.display(), "no hugetlb controller: the pod's huge pages are not limited");
            return Ok(());
        }
        write_huge_page_limits(&self.dir, pages)
    }

    /// Container `name`'s huge page limits (kubelet gives the runtime a limit per page size the
    /// host has: the container's, 0 for a size it does not ask), written in its cgroup, made if
    /// needed, before any of its processes is in it: an image container's runtime joins the
    /// cgroup as it is (on a hybrid host runc cannot write them itself: it knows only the v1
    /// hugetlb hierarchy, absent here, and refuses `hugepageLimits` with "cannot set hugetlb
    /// limit: container could not join or create cgroup", runc 1.1.5). Nothing where the
    /// pod's cgroup has no hugetlb controller ([`PodCgroup::set_pod_huge_pages`] refused a pod
    /// asking any).
    pub fn set_container_huge_pages(
        &self,
        name: &str,
        pages: &BTreeMap<u64, u64>,
    ) -> Result<(), String> {
        if !std::fs::read_to_string(self.dir.join("cgroup.subtree_control"))
            .unwrap_or_default()
            .split_whitespace()
            .any(|c| c == "hugetlb")
        {
            return Ok(());
        }
        let dir = self.dir.join(name);
        match std::fs::create_dir(&dir) {
            Err(err) if err.kind() != io::ErrorKind::AlreadyExists => {
                return Err(format!("failed to make the container's cgroup: {err}"));
            }
            _ => {}
        }
        write_huge_page_limits(&dir, pages)
    }

    /// How many processes of container `name` the kernel's OOM killer has killed (`oom_kill`
    /// of the container's memory cgroup: `memory.oom_control` on v1, `memory.events` on v2),
    /// read before the runtime removes the cgroup. `None` where it cannot be read (no such
    /// cgroup, or a kernel before 4.13).
    pub fn oom_kills(&self, name: &str) -> Option<u64> {
        let file = match &self.memory_v1 {
            Some(mount) => mount
                .join(self.container_path(name)?.strip_prefix("/").ok()?)
                .join("memory.oom_control"),
            None => self.dir.join(name).join("memory.events"),
        };
        let text = std::fs::read_to_string(file).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
    }

    /// Container `name`'s cgroup as `linux.cgroupsPath` names it: absolute from the cgroup v2
    /// root (`/podkit-POD/NAME`, below the supervisor's own cgroup). On a hybrid host runc
    /// also makes the same path in each v1 hierarchy; [`remove_v1_leftovers`] removes them.
    pub fn container_path(&self, name: &str) -> Option<PathBuf> {
        let relative = self.dir.join(name);
        let relative = relative.strip_prefix(&self.mount).ok()?;
        Some(Path::new("/").join(relative))
    }

    /// Container `name`'s cgroup directory, made if needed and opened for
    /// [`netns::Process::cgroup`]: its processes are created in it.
    pub fn container(&self, name: &str) -> io::Result<Arc<OwnedFd>> {
        let dir = self.dir.join(name);
        match std::fs::create_dir(&dir) {
            Err(err) if err.kind() != io::ErrorKind::AlreadyExists => return Err(err),
            _ => {}
        }
        open_dir(&dir)
    }

    /// SIGKILLs every process in container `name`'s cgroup, pid by pid until a pass finds no
    /// new one (a process forked meanwhile shows in the next pass; one SIGKILLed mid-fork does
    /// not fork). Not with `cgroup.kill`: Linux (seen on 6.18) then SIGKILLs every process
    /// later created in that cgroup by clone3(CLONE_INTO_CGROUP), so the container's next run
    /// would die at birth; fork compares the kill count of the target cgroup with the one it
    /// read from the parent's cgroup, and the two differ once the target was killed.
    pub fn kill(&self, name: &str) {
        let dir = self.dir.join(name);
        let mut killed = std::collections::HashSet::new();
        loop {
            let new: Vec<u32> = procs_below(&dir)
                .into_iter()
                .filter(|pid| killed.insert(*pid))
                .collect();
            if new.is_empty() {
                break;
            }
            sigkill(new);
        }
    }

    /// Kills what is left in the pod's cgroups and removes them.
    pub fn remove(&self) -> Vec<String> {
        remove_tree(&self.dir)
    }
}

/// Writes `hugetlb.<size>.max` (and `.rsvd.max` where present) in cgroup `dir` for every page
/// size the kernel offers: `pages`' bytes for the size, else 0.
fn write_huge_page_limits(dir: &Path, pages: &BTreeMap<u64, u64>) -> Result<(), String> {
    let sizes = crate::spec::resources::host_huge_pages();
    for size in sizes.keys().chain(pages.keys()) {
        let limit = pages.get(size).copied().unwrap_or(0);
        let kernel = crate::spec::resources::hugetlb_size_name(*size);
        let max = dir.join(format!("hugetlb.{kernel}.max"));
        if !max.exists() {
            if limit > 0 {
                return Err(format!(
                    "{} needs {} and the kernel has no such hugetlb file (no {kernel} pages \
                     on this host)",
                    crate::spec::resources::huge_page_name(*size),
                    max.display()
                ));
            }
            continue;
        }
        let rsvd = dir.join(format!("hugetlb.{kernel}.rsvd.max"));
        for file in [max, rsvd] {
            if file.exists() {
                std::fs::write(&file, limit.to_string())
                    .map_err(|e| format!("failed to write {limit} to {}: {e}", file.display()))?;
            }
        }
    }
    Ok(())
}

/// The cgroup of container `name` of the pod whose state directory is `state_dir`, opened for
/// [`netns::Process::cgroup`], if the pod has one and the container's cgroup exists: for
/// `podkit exec`, whose command joins the container's cgroup as its other processes are in.
pub fn open_container(state_dir: &Path, name: &str) -> Option<Arc<OwnedFd>> {
    let pod = std::fs::read_to_string(state_dir.join(RECORD)).ok()?;
    open_dir(&Path::new(pod.trim()).join(name)).ok()
}

fn open_dir(dir: &Path) -> io::Result<Arc<OwnedFd>> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_DIRECTORY)
        .open(dir)?;
    Ok(Arc::new(OwnedFd::from(file)))
}

/// Where cgroup v2 is mounted and the supervisor's own cgroup v2 directory, if cgroup v2 is
/// mounted; and where the v1 memory hierarchy is mounted, if it is (a hybrid host).
fn own_cgroup() -> Option<(PathBuf, PathBuf, Option<PathBuf>)> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    // "40 31 0:35 / /sys/fs/cgroup/memory rw,... shared:18 - cgroup cgroup rw,memory"
    let memory_v1 = mountinfo.lines().find_map(|line| {
        let (fields, fs) = line.split_once(" - ")?;
        let mut fs = fs.split(' ');
        if fs.next()? != "cgroup" || !fs.nth(1)?.split(',').any(|o| o == "memory") {
            return None;
        }
        Some(PathBuf::from(fields.split(' ').nth(4)?))
    });
    // "36 25 0:31 / /sys/fs/cgroup/unified rw,relatime shared:10 - cgroup2 cgroup2 rw"
    let mount = mountinfo.lines().find_map(|line| {
        let (fields, fs) = line.split_once(" - ")?;
        if fs.split(' ').next()? != "cgroup2" {
            return None;
        }
        let mut fields = fields.split(' ');
        let root = fields.nth(3)?;
        let point = fields.next()?;
        Some((root.to_owned(), PathBuf::from(point)))
    });
    let Some((root, point)) = mount else {
        debug!("no cgroup v2 mounted: containers run without a cgroup");
        return None;
    };
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let own = cgroups.lines().find_map(|l| l.strip_prefix("0::"))?;
    // The mount shows the hierarchy from `root` down (a cgroup namespace's view).
    let relative = Path::new(own).strip_prefix(&root).ok()?;
    Some((point.clone(), point.join(relative), memory_v1))
}

/// The empty `podkit-POD` directories runc leaves in each cgroup v1 hierarchy of a hybrid host
/// after deleting the containers it made below them (measured with runc 1.1.5): removed once
/// the pod's containers are gone. Returns a line for each directory removed.
pub fn remove_v1_leftovers(pod: &str) -> Vec<String> {
    let mut removed = Vec::new();
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return removed;
    };
    for hierarchy in hierarchies.flatten() {
        let path = hierarchy.path();
        // The v1 hierarchies only: a name like `memory` or `cpu,cpuacct`, not cgroup2's mount.
        if hierarchy.file_name() == "unified" || path.join("cgroup.controllers").exists() {
            continue;
        }
        let dir = path.join(format!("podkit-{pod}"));
        if !dir.is_dir() {
            continue;
        }
        // Children first (containers runc did not get to delete), deepest first.
        let mut dirs = vec![dir.clone()];
        let mut i = 0;
        while i < dirs.len() {
            if let Ok(entries) = std::fs::read_dir(&dirs[i]) {
                dirs.extend(
                    entries
                        .flatten()
                        .filter(|e| e.path().is_dir())
                        .map(|e| e.path()),
                );
            }
            i += 1;
        }
        for d in dirs.iter().rev() {
            if std::fs::remove_dir(d).is_ok() {
                removed.push(format!("removed cgroup {}", d.display()));
            }
        }
    }
    removed
}

/// SIGKILLs every process in cgroup `dir` and below: `cgroup.kill` (Linux 5.14), or each pid.
fn kill(dir: &Path) -> io::Result<()> {
    match std::fs::write(dir.join("cgroup.kill"), "1") {
        Ok(()) => return Ok(()),
        Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
        Err(_) => {}
    }
    sigkill(procs_below(dir));
    Ok(())
}

/// SIGKILLs each of `pids`; one already gone is no error.
pub(crate) fn sigkill(pids: impl IntoIterator<Item = u32>) {
    for pid in pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// The pids in cgroup `dir` and its descendants.
fn procs_below(dir: &Path) -> Vec<u32> {
    let mut pids: Vec<u32> = std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect();
    for child in subdirs(dir) {
        pids.extend(procs_below(&child));
    }
    pids
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until cgroup `dir` and its descendants have no process, for at most `timeout`:
/// woken by the kernel when `cgroup.events` changes (poll(2) reports POLLPRI), not by a timer.
fn wait_empty(dir: &Path, timeout: Duration) {
    use std::io::{Read, Seek};
    use std::os::fd::AsFd;
    let deadline = Instant::now() + timeout;
    let Ok(mut events) = std::fs::File::open(dir.join("cgroup.events")) else {
        while populated(dir) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        return;
    };
    loop {
        let mut text = String::new();
        let read = events
            .rewind()
            .and_then(|()| events.read_to_string(&mut text));
        if read.is_err() || !text.lines().any(|l| l == "populated 1") {
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(left) = nix::poll::PollTimeout::try_from(left) else {
            return;
        };
        if left == nix::poll::PollTimeout::ZERO {
            return;
        }
        let mut fds = [nix::poll::PollFd::new(
            events.as_fd(),
            nix::poll::PollFlags::POLLPRI,
        )];
        if let Err(err) = nix::poll::poll(&mut fds, left)
            && err != nix::Error::EINTR
        {
            return;
        }
    }
}

/// Whether cgroup `dir` or a descendant still has a process.
fn populated(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("cgroup.events")).map_or_else(
        |_| !procs_below(dir).is_empty(),
        |events| events.lines().any(|l| l == "populated 1"),
    )
}

/// Kills everything in cgroup `dir` and below, waits (bounded) until the processes are gone,
/// and removes the cgroups, children first. Returns a line for each thing done.
pub fn remove_tree(dir: &Path) -> Vec<String> {
    let mut done = Vec::new();
    if !dir.exists() {
        return done;
    }
    let left = procs_below(dir);
    if !left.is_empty() {
        match kill(dir) {
            Ok(()) => done.push(format!(
                "killed {} process(es) left in cgroup {}",
                left.len(),
                dir.display()
            )),
            Err(err) => done.push(format!("failed to kill cgroup {}: {err}", dir.display())),
        }
    }
    wait_empty(dir, EMPTY_WAIT);
    match remove_dirs(dir) {
        Ok(()) => done.push(format!("removed cgroup {}", dir.display())),
        Err(err) => done.push(format!("failed to remove cgroup {}: {err}", dir.display())),
    }
    done
}

/// Removes cgroup `dir` and its descendants, deepest first (a cgroup goes with rmdir, though
/// it lists files).
fn remove_dirs(dir: &Path) -> io::Result<()> {
    for child in subdirs(dir) {
        remove_dirs(&child)?;
    }
    std::fs::remove_dir(dir)
}
