//! [`ConnectHook`]: hostPorts for clients on the host itself without NAT. A BPF program on the
//! host's cgroup v2 root (`cgroup/connect4`, with `sendmsg4` for unconnected UDP and
//! `getpeername4`/`recvmsg4` to give the client back the address it asked for) rewrites a
//! connect() to a hostPort into a connect() to the pod's IP and port, once per socket, as
//! Cilium's socket load balancer does for Services: the packets then carry no NAT and need no
//! conntrack entry. `connect6` and its three siblings do the same for IPv6 clients at `::1`
//! of a dual stack pod's ports (no hostIP), sent to its IPv6 address: the only way such a
//! client reaches the pod, as IPv6 has no `route_localnet` for a DNAT from the loopback. The DNAT rules of [`crate::Nat`] stay in place for every other client (other
//! pods, other hosts, a socket bound to a loopback address), and for every client when the
//! kernel refuses the hook.
//!
//! podkit has no daemon to hold the programs, so they live pinned: the links, and the maps the
//! pods' supervisors fill, on a bpffs instance of podkit's own mounted at the hook's directory
//! (`/run/podkit/bpf` for podkit), made by the first pod that publishes a hostPort and removed by
//! [`ConnectHook::remove`] (podkit's `gc`, when no pod is left). The program is C
//! (`netns/bpf/hostports.bpf.c`), built by `netns/bpf/build.sh` with clang and checked in: a
//! build of podkit needs no clang. aya loads it.

use std::fs::File;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use aya::maps::{Array, HashMap, Map, MapData};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::{CgroupAttachMode, CgroupSockAddr};
use nix::fcntl::{Flock, FlockArg};

use crate::{Error, HostPort, Protocol, Result};

/// The program, as `netns/bpf/build.sh` builds it (little-endian BPF).
static OBJECT: &[u8] = include_bytes!("../bpf/hostports.bpf.o");

/// The object's programs, each pinned as a link under `links/` of the hook's directory.
const PROGRAMS: [&str; 8] = [
    "podkit_connect4",
    "podkit_sendmsg4",
    "podkit_recvmsg4",
    "podkit_getpeername4",
    "podkit_connect6",
    "podkit_sendmsg6",
    "podkit_recvmsg6",
    "podkit_getpeername6",
];

/// The object's maps, pinned under `maps/`: hostPort -> pod address; rewritten socket -> the
/// address it asked for; the host's network namespace cookie.
const HOSTPORTS: &str = "hostports";
const REWRITES: &str = "rewrites";
const CONFIG: &str = "config";
/// The same for IPv6 clients (at `::1`) of dual stack pods.
const HOSTPORTS6: &str = "hostports6";
const REWRITES6: &str = "rewrites6";
const MAPS: [&str; 5] = [HOSTPORTS, REWRITES, CONFIG, HOSTPORTS6, REWRITES6];

/// The connect-time hostPort hook, loaded and attached (see the module's documentation).
#[derive(Debug)]
pub struct ConnectHook {
    dir: PathBuf,
}

/// A hostPort's map key: its address (network order, 0 for every loopback address), port
/// (network order) and IP protocol, as `struct hostport` of the program.
fn key(port: &HostPort) -> [u8; 8] {
    let ip = port
        .host_ip
        .filter(|ip| !ip.is_unspecified())
        .map_or([0; 4], |ip| ip.octets());
    let [p0, p1] = port.host_port.to_be_bytes();
    let protocol = match port.protocol {
        Protocol::Tcp => libc::IPPROTO_TCP as u8,
        Protocol::Udp => libc::IPPROTO_UDP as u8,
    };
    [ip[0], ip[1], ip[2], ip[3], p0, p1, protocol, 0]
}

/// A pod address as the program's `struct address`.
fn address(ip: Ipv4Addr, port: u16) -> [u8; 8] {
    let [a, b, c, d] = ip.octets();
    let [p0, p1] = port.to_be_bytes();
    [a, b, c, d, p0, p1, 0, 0]
}

/// The pod IP of an address value.
fn address_ip(value: &[u8; 8]) -> Ipv4Addr {
    Ipv4Addr::new(value[0], value[1], value[2], value[3])
}

/// A hostPort's IPv6 map key, as `struct hostport6`: address 0 (`::1`; a port with a hostIP
/// is IPv4 only), port (network order), IP protocol.
fn key6(port: &HostPort) -> [u8; 20] {
    let mut key = [0; 20];
    key[16..18].copy_from_slice(&port.host_port.to_be_bytes());
    key[18] = match port.protocol {
        Protocol::Tcp => libc::IPPROTO_TCP as u8,
        Protocol::Udp => libc::IPPROTO_UDP as u8,
    };
    key
}

/// A dual stack pod's IPv6 address and port, and its IPv4 address (which podkit finds the
/// pod's entries by), as `struct address6`.
fn address6(ip6: Ipv6Addr, port: u16, ip: Ipv4Addr) -> [u8; 24] {
    let mut value = [0; 24];
    value[..16].copy_from_slice(&ip6.octets());
    value[16..18].copy_from_slice(&port.to_be_bytes());
    value[20..].copy_from_slice(&ip.octets());
    value
}

/// The pod's IPv4 address of an IPv6 address value.
fn address6_ip(value: &[u8; 24]) -> Ipv4Addr {
    Ipv4Addr::new(value[20], value[21], value[22], value[23])
}

fn hook_error(
    what: impl Into<String>,
    source: impl std::error::Error + Send + Sync + 'static,
) -> Error {
    Error::Hook {
        what: what.into(),
        source: Box::new(source),
    }
}

impl ConnectHook {
    /// podkit's directory for the hook: a bpffs of its own (so that nothing of it is left in the
    /// host's `/sys/fs/bpf`, and `gc` removes all of it with one unmount).
    pub const DEFAULT_DIR: &str = "/run/podkit/bpf";

    /// The hook whose pins are in `dir`, if it is loaded.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Option<ConnectHook>> {
        let hook = ConnectHook { dir: dir.into() };
        Ok(hook.loaded().then_some(hook))
    }

    /// The hook pinned in `dir`, loaded and attached to the host's cgroup v2 root first if it is
    /// not: `dir` mounted as a bpffs if it is not one, the program loaded, its maps and links
    /// pinned, under a lock beside `dir`. Fails (leaving nothing) where the kernel refuses: no
    /// cgroup v2 hierarchy, a kernel older than 5.8 (getpeername hooks), no BPF for root, a
    /// big-endian host.
    pub fn ensure(dir: impl Into<PathBuf>) -> Result<ConnectHook> {
        let hook = ConnectHook { dir: dir.into() };
        if hook.loaded() {
            return Ok(hook);
        }
        if cfg!(target_endian = "big") {
            return Err(Error::Hook {
                what: "the program is built for little-endian hosts".to_owned(),
                source: Box::new(std::io::Error::from(std::io::ErrorKind::Unsupported)),
            });
        }
        let _lock = hook.lock()?;
        if hook.loaded() {
            return Ok(hook);
        }
        hook.mount()?;
        // The IPv4 hostPorts of a hook an older podkit loaded (without the IPv6 programs),
        // which its pods still use: carried over to the new one.
        let kept: Vec<([u8; 8], [u8; 8])> = hook
            .hostports()
            .map(|map| map.iter().flatten().collect())
            .unwrap_or_default();
        // Pins of a load cut short (a SIGKILL between two pins) or of an older hook: gone
        // before a new load.
        hook.unpin();
        let loaded = hook.load().and_then(|()| {
            let mut map = hook.hostports()?;
            for (key, value) in kept {
                map.insert(key, value, 0)
                    .map_err(|e| hook_error("failed to carry a hostPort over", e))?;
            }
            Ok(())
        });
        if loaded.is_err() {
            hook.unpin();
        }
        loaded.map(|()| hook)
    }

    /// The pins' directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Sends the host's clients of `ports` straight to `pod_ip`, in place of what went to
    /// `pod_ip` before (so an empty `ports` takes the pod's hostPorts off the hook). Under the
    /// hook's lock, so that [`ConnectHook::remove_if_unused`] never removes the hook between
    /// this pod's `ensure` and its ports: an error if the hook was removed since (`ensure`
    /// again).
    pub fn set(&self, pod_ip: Ipv4Addr, ports: &[HostPort]) -> Result<()> {
        self.set_dual_stack(pod_ip, None, ports)
    }

    /// [`ConnectHook::set`], and for a dual stack pod (`pod_ip6`) its `ports` without a
    /// hostIP to IPv6 clients at `::1` too, sent to `pod_ip6`; the pod's IPv6 entries are
    /// found by its IPv4 address, so [`ConnectHook::retain`] and an empty `set` take them.
    pub fn set_dual_stack(
        &self,
        pod_ip: Ipv4Addr,
        pod_ip6: Option<Ipv6Addr>,
        ports: &[HostPort],
    ) -> Result<()> {
        let _lock = self.lock()?;
        if !self.loaded() {
            return Err(self.gone());
        }
        let mut map = self.hostports()?;
        remove_where(&mut map, |value| address_ip(value) == pod_ip)?;
        let mut map6 = self.hostports6()?;
        remove_where(&mut map6, |value| address6_ip(value) == pod_ip)?;
        for port in ports {
            let failed = |e| hook_error(format!("failed to add hostPort {}", port.host_side()), e);
            map.insert(key(port), address(pod_ip, port.container_port), 0)
                .map_err(failed)?;
            if let Some(ip6) = pod_ip6
                && port.host_ip.is_none()
            {
                map6.insert(key6(port), address6(ip6, port.container_port, pod_ip), 0)
                    .map_err(failed)?;
            }
        }
        Ok(())
    }

    /// Takes every hostPort whose pod address `keep` refuses off the hook (`gc`: those of pods
    /// that are gone); returns the addresses it took off. `keep` is made by `judge` under the
    /// hook's lock: a pod leases its address before it sets its ports, so leases read there
    /// hold every pod whose ports are on the hook. (Read before the lock, a pod that leased and
    /// set its ports meanwhile would lose them, and the hook with them: CI saw it.)
    pub fn retain<K: Fn(Ipv4Addr) -> bool>(
        &self,
        judge: impl FnOnce() -> Result<K>,
    ) -> Result<Vec<Ipv4Addr>> {
        let _lock = self.lock()?;
        if !self.loaded() {
            return Ok(Vec::new());
        }
        let keep = judge()?;
        let mut gone = Vec::new();
        let mut take = |ip: Ipv4Addr| {
            let remove = !keep(ip);
            if remove && !gone.contains(&ip) {
                gone.push(ip);
            }
            remove
        };
        remove_where(&mut self.hostports()?, |value| take(address_ip(value)))?;
        remove_where(&mut self.hostports6()?, |value| take(address6_ip(value)))?;
        Ok(gone)
    }

    /// Each hostPort on the hook and its pod's IP and port, as (`8080/tcp`, ip, port).
    pub fn ports(&self) -> Result<Vec<(String, Ipv4Addr, u16)>> {
        let map = self.hostports()?;
        let mut found = Vec::new();
        for entry in map.iter() {
            let (key, value) =
                entry.map_err(|e| hook_error("failed to read the hostPorts map", e))?;
            let ip = Ipv4Addr::new(key[0], key[1], key[2], key[3]);
            let port = u16::from_be_bytes([key[4], key[5]]);
            let protocol = if i32::from(key[6]) == libc::IPPROTO_UDP {
                "udp"
            } else {
                "tcp"
            };
            let side = if ip.is_unspecified() {
                format!("{port}/{protocol}")
            } else {
                format!("{ip}:{port}/{protocol}")
            };
            found.push((
                side,
                address_ip(&value),
                u16::from_be_bytes([value[4], value[5]]),
            ));
        }
        found.sort();
        Ok(found)
    }

    /// Detaches the hook and removes its pins and bpffs. Sockets it rewrote keep their
    /// connections. Returns whether there was a hook to remove.
    pub fn remove(dir: impl Into<PathBuf>) -> Result<bool> {
        Self::remove_when(dir.into(), |_| Ok(true))
    }

    /// [`ConnectHook::remove`] once no hostPort is on the hook (`gc`), under its lock, so that
    /// no pod between its `ensure` and its [`ConnectHook::set`] loses it. Whether it removed one.
    pub fn remove_if_unused(dir: impl Into<PathBuf>) -> Result<bool> {
        Self::remove_when(dir.into(), |hook| {
            Ok(!hook.loaded()
                || (hook.hostports()?.keys().next().is_none()
                    && hook.hostports6()?.keys().next().is_none()))
        })
    }

    fn remove_when(dir: PathBuf, now: impl Fn(&ConnectHook) -> Result<bool>) -> Result<bool> {
        let hook = ConnectHook { dir };
        if !hook.dir.exists() {
            return Ok(false);
        }
        let _lock = hook.lock()?;
        if !now(&hook)? {
            return Ok(false);
        }
        let was = hook.loaded();
        hook.unpin();
        if is_bpffs(&hook.dir) {
            nix::mount::umount2(&hook.dir, nix::mount::MntFlags::MNT_DETACH)
                .map_err(|e| hook_error(format!("failed to unmount {}", hook.dir.display()), e))?;
        }
        // The lock file stays: one that another process waits on must not be replaced by a
        // new file (two holders at once).
        let _ = std::fs::remove_dir(&hook.dir);
        Ok(was)
    }

    /// The error of a hook removed since it was opened.
    fn gone(&self) -> Error {
        Error::Hook {
            what: format!(
                "no hook is loaded in {} (removed meanwhile)",
                self.dir.display()
            ),
            source: Box::new(std::io::Error::from(std::io::ErrorKind::NotFound)),
        }
    }

    fn lock_path(&self) -> PathBuf {
        let mut name = self.dir.as_os_str().to_owned();
        name.push(".lock");
        PathBuf::from(name)
    }

    /// The hook's lock, held while it is loaded or removed.
    fn lock(&self) -> Result<Flock<File>> {
        let path = self.lock_path();
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| Error::CreateDir {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| hook_error(format!("failed to open {}", path.display()), e))?;
        Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, e)| hook_error(format!("failed to lock {}", path.display()), e))
    }

    /// Whether every link and map is pinned (a load completed).
    fn loaded(&self) -> bool {
        PROGRAMS
            .iter()
            .map(|p| self.dir.join("links").join(p))
            .chain(MAPS.map(|m| self.dir.join("maps").join(m)))
            .all(|p| p.exists())
    }

    /// `dir` made a bpffs of its own, unless it is one.
    fn mount(&self) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(|source| Error::CreateDir {
            path: self.dir.clone(),
            source,
        })?;
        if is_bpffs(&self.dir) {
            return Ok(());
        }
        nix::mount::mount(
            Some("bpf"),
            &self.dir,
            Some("bpf"),
            nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
            Some("mode=0700"),
        )
        .map_err(|e| {
            hook_error(
                format!("failed to mount a bpffs at {}", self.dir.display()),
                e,
            )
        })
    }

    /// Removes every pin (unpinned, the links detach once no one holds them).
    fn unpin(&self) {
        for sub in ["links", "maps"] {
            let dir = self.dir.join(sub);
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for entry in entries.flatten() {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
            let _ = std::fs::remove_dir(&dir);
        }
    }

    /// Loads the object, pins its maps, attaches its programs to the cgroup v2 root and pins
    /// the links; the maps first, so that a pinned link always has its maps.
    fn load(&self) -> Result<()> {
        let cgroup_root = cgroup2_root()?;
        let cgroup = File::open(&cgroup_root)
            .map_err(|e| hook_error(format!("failed to open {}", cgroup_root.display()), e))?;
        let host = crate::sys::netns_cookie()
            .map_err(|e| hook_error("failed to read the host network namespace's cookie", e))?;
        let mut bpf =
            aya::Ebpf::load(OBJECT).map_err(|e| hook_error("failed to load the BPF object", e))?;
        {
            let config = bpf.map_mut(CONFIG).ok_or_else(|| missing("map", CONFIG))?;
            let mut config: Array<&mut MapData, u64> =
                Array::try_from(config).map_err(|e| hook_error("the config map", e))?;
            config
                .set(0, host, 0)
                .map_err(|e| hook_error("failed to write the config map", e))?;
        }
        for sub in ["maps", "links"] {
            let dir = self.dir.join(sub);
            std::fs::create_dir_all(&dir).map_err(|source| Error::CreateDir {
                path: dir.clone(),
                source,
            })?;
        }
        for name in MAPS {
            let map = bpf.map(name).ok_or_else(|| missing("map", name))?;
            map.pin(self.dir.join("maps").join(name))
                .map_err(|e| hook_error(format!("failed to pin map {name}"), e))?;
        }
        for name in PROGRAMS {
            let program: &mut CgroupSockAddr = bpf
                .program_mut(name)
                .ok_or_else(|| missing("program", name))?
                .try_into()
                .map_err(|e| hook_error(format!("program {name}"), e))?;
            program
                .load()
                .map_err(|e| hook_error(format!("the kernel refused program {name}"), e))?;
            // A bpf_link (Linux 5.7, what aya makes there) takes no attach flags (the kernel
            // refuses BPF_F_ALLOW_MULTI with EINVAL) and sits beside every other program on
            // the cgroup anyway: "Single" is the empty flags.
            let id = program
                .attach(cgroup.as_fd(), CgroupAttachMode::Single)
                .map_err(|e| {
                    hook_error(
                        format!("failed to attach {name} to {}", cgroup_root.display()),
                        e,
                    )
                })?;
            let link: FdLink = program
                .take_link(id)
                .map_err(|e| hook_error(format!("program {name}'s link"), e))?
                .try_into()
                .map_err(|e| hook_error(format!("program {name}'s link"), e))?;
            let pinned: PinnedLink = link
                .pin(self.dir.join("links").join(name))
                .map_err(|e| hook_error(format!("failed to pin program {name}'s link"), e))?;
            drop(pinned);
        }
        Ok(())
    }

    /// The pinned hostPorts map.
    fn hostports(&self) -> Result<HashMap<MapData, [u8; 8], [u8; 8]>> {
        self.map(HOSTPORTS)
    }

    /// The pinned IPv6 hostPorts map.
    fn hostports6(&self) -> Result<HashMap<MapData, [u8; 20], [u8; 24]>> {
        self.map(HOSTPORTS6)
    }

    fn map<K: aya::Pod, V: aya::Pod>(&self, name: &str) -> Result<HashMap<MapData, K, V>> {
        let path = self.dir.join("maps").join(name);
        let data = MapData::from_pin(&path)
            .map_err(|e| hook_error(format!("failed to open {}", path.display()), e))?;
        let map = Map::from_map_data(data)
            .map_err(|e| hook_error(format!("failed to open {}", path.display()), e))?;
        HashMap::try_from(map).map_err(|e| hook_error(format!("{}", path.display()), e))
    }
}

fn missing(what: &str, name: &str) -> Error {
    Error::Hook {
        what: format!("the BPF object has no {what} {name}"),
        source: Box::new(std::io::Error::from(std::io::ErrorKind::NotFound)),
    }
}

/// Removes the entries of `map` whose value `remove` picks.
fn remove_where<K: aya::Pod, V: aya::Pod>(
    map: &mut HashMap<MapData, K, V>,
    mut remove: impl FnMut(&V) -> bool,
) -> Result<()> {
    let mut doomed = Vec::new();
    for entry in map.iter() {
        let (key, value) = entry.map_err(|e| hook_error("failed to read the hostPorts map", e))?;
        if remove(&value) {
            doomed.push(key);
        }
    }
    for key in doomed {
        match map.remove(&key) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
            Err(e) => return Err(hook_error("failed to remove a hostPort", e)),
        }
    }
    Ok(())
}

/// Whether `dir` is a bpffs mount.
fn is_bpffs(dir: &Path) -> bool {
    nix::sys::statfs::statfs(dir)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::BPF_FS_MAGIC)
}

/// Where the host's cgroup v2 hierarchy is mounted: `/sys/fs/cgroup` on a pure v2 host,
/// `/sys/fs/cgroup/unified` on a hybrid one (systemd's layout), from `/proc/self/mountinfo`.
fn cgroup2_root() -> Result<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| hook_error("failed to read /proc/self/mountinfo", e))?;
    cgroup2_mount(&info).ok_or_else(|| Error::Hook {
        what: "the host has no cgroup v2 hierarchy mounted (the hook attaches to its root)"
            .to_owned(),
        source: Box::new(std::io::Error::from(std::io::ErrorKind::NotFound)),
    })
}

/// The mount point of the root of a cgroup2 mount in `mountinfo`'s lines.
fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        let mut fields = left.split_whitespace();
        let root = fields.nth(3)?;
        let point = fields.next()?;
        (fstype == "cgroup2" && root == "/").then(|| PathBuf::from(point.replace("\\040", " ")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_addresses_are_the_programs_structs() {
        let port = HostPort::new(Protocol::Tcp, 8080, 80);
        assert_eq!(key(&port), [0, 0, 0, 0, 0x1f, 0x90, 6, 0]);
        let port = HostPort::new(Protocol::Udp, 53, 5353).on(Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(key(&port), [127, 0, 0, 2, 0, 53, 17, 0]);
        let value = address(Ipv4Addr::new(10, 90, 0, 7), 80);
        assert_eq!(value, [10, 90, 0, 7, 0, 80, 0, 0]);
        assert_eq!(address_ip(&value), Ipv4Addr::new(10, 90, 0, 7));
    }

    #[test]
    fn the_cgroup2_root_is_found_on_hybrid_and_pure_hosts() {
        let hybrid = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 25 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
32 31 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw
33 31 0:28 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
";
        assert_eq!(
            cgroup2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let pure = "\
35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate
";
        assert_eq!(cgroup2_mount(pure), Some(PathBuf::from("/sys/fs/cgroup")));
        // A container's view of a sub-hierarchy is not the host's root.
        let nested = "\
40 30 0:30 /user.slice /sys/fs/cgroup rw - cgroup2 cgroup2 rw
";
        assert_eq!(cgroup2_mount(nested), None);
        assert_eq!(cgroup2_mount(""), None);
    }
}
