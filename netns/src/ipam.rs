//! Pod addresses leased from a subnet, as CNI's `host-local` IPAM plugin keeps them: one file
//! per lease, `DIR/<subnet>/<ip>`, holding its owner's id; `last_reserved_ip` remembers where
//! the last allocation ended, so the next one starts after it and an address just released is
//! not handed out again at once. An exclusive `flock(2)` on `DIR/<subnet>/lock` serialises
//! every change, between threads and processes alike.
//!
//! Files are written to a temporary name and renamed into place, so a crash leaves a lease
//! or none, never a half-written one. Pod addresses mean nothing after a reboot (the pods
//! are gone), so `DIR` belongs on a tmpfs such as `/run/podkit/ipam`: nothing is fsynced.
//!
//! Every call blocks on the lock and the file system: from async code, call it through
//! `tokio::task::spawn_blocking`.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use tracing::debug;

use crate::{Error, Result, Subnet};

/// The file whose lock serialises changes.
const LOCK_FILE: &str = "lock";

/// The file holding the address the last allocation returned (host-local's
/// `last_reserved_ip.0`).
const LAST_RESERVED: &str = "last_reserved_ip";

/// Temporary files start with this, so no listing takes them for leases.
const TMP_PREFIX: &str = ".tmp-";

/// The longest owner id taken: a pod's name or uid fits.
const MAX_OWNER_LEN: usize = 253;

/// The leases of one subnet, kept under `DIR/<subnet>/` (the subnet written `10.90.0.0-16`).
#[derive(Debug, Clone)]
pub struct Ipam {
    subnet: Subnet,
    /// `DIR/<subnet>`: the leases, the lock and `last_reserved_ip`.
    dir: PathBuf,
}

impl Ipam {
    /// The leases of `subnet` (a /30 or larger) under `root`, which is created if missing.
    /// Addresses handed out skip the network address, the gateway (the first address) and
    /// the broadcast address.
    pub fn open(root: impl AsRef<Path>, subnet: Subnet) -> Result<Self> {
        subnet.check_pod_network()?;
        let dir = root
            .as_ref()
            .join(format!("{}-{}", subnet.network(), subnet.prefix_len()));
        fs::create_dir_all(&dir).map_err(|source| Error::CreateDir {
            path: dir.clone(),
            source,
        })?;
        Ok(Ipam { subnet, dir })
    }

    /// The subnet addresses come from.
    pub fn subnet(&self) -> Subnet {
        self.subnet
    }

    /// The directory holding the leases.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Leases an address to `owner` (a pod's name or uid: printable, no whitespace, at most
    /// 253 bytes) and returns it. An owner that holds a lease already gets that one back, so
    /// retrying after a crash does not leak an address. Otherwise the first free address after
    /// the last one allocated, wrapping at the end of the subnet, as host-local does;
    /// [`Error::SubnetFull`] when there is none.
    pub fn allocate(&self, owner: &str) -> Result<Ipv4Addr> {
        self.lock()?.allocate(owner)
    }

    /// Releases every lease `owner` holds (normally one) and returns their addresses; none
    /// is no error, so a retried delete succeeds.
    pub fn release(&self, owner: &str) -> Result<Vec<Ipv4Addr>> {
        self.lock()?.release(owner)
    }

    /// Releases the lease on `ip` and returns its owner; `None` when it was not leased.
    pub fn release_ip(&self, ip: Ipv4Addr) -> Result<Option<String>> {
        self.lock()?.release_ip(ip)
    }

    /// Every lease, as (address, owner), in address order.
    pub fn leases(&self) -> Result<Vec<(Ipv4Addr, String)>> {
        self.lock()?.leases()
    }

    /// Takes the subnet's lock, blocking while another thread or process holds it, and keeps
    /// it until the [`IpamLock`] is dropped: what the holder does meanwhile (making the bridge
    /// with the first lease, removing it with the last) no other process sees half done.
    pub fn lock(&self) -> Result<IpamLock> {
        Ok(IpamLock {
            ipam: self.clone(),
            _lock: self.lock_file()?,
        })
    }
}

/// The leases of one subnet with its lock held ([`Ipam::lock`]); dropped, the lock is let go.
#[derive(Debug)]
pub struct IpamLock {
    ipam: Ipam,
    _lock: Flock<File>,
}

impl IpamLock {
    /// [`Ipam::allocate`], under this lock.
    pub fn allocate(&self, owner: &str) -> Result<Ipv4Addr> {
        validate_owner(owner)?;
        let ipam = &self.ipam;
        let leases = ipam.read_leases(true)?;
        if let Some((&ip, _)) = leases.iter().find(|(_, held_by)| *held_by == owner) {
            debug!(%ip, owner, "lease already held");
            return Ok(ip);
        }
        let range = ipam.subnet.pod_range();
        let (first, last) = (*range.start(), *range.end());
        // In u64: a large subnet's offsets would overflow a u32.
        let size = u64::from(last - first) + 1;
        // Start after the last allocation, if it is still in the range.
        let start = ipam
            .last_reserved()
            .map(u32::from)
            .filter(|ip| range.contains(ip))
            .map_or(0, |ip| u64::from(ip - first) + 1);
        let free = (0..size)
            .map(|offset| {
                let ip = u64::from(first) + (start + offset) % size;
                // Below `first + size`, which is a u32 address.
                Ipv4Addr::from(u32::try_from(ip).unwrap_or(first))
            })
            .find(|ip| !leases.contains_key(ip));
        let Some(ip) = free else {
            return Err(Error::SubnetFull {
                subnet: ipam.subnet.to_string(),
                leases: leases.len(),
                dir: ipam.dir.clone(),
            });
        };
        ipam.write_atomic(&ip.to_string(), owner)?;
        // Only a hint for where to start next: losing it costs nothing but reuse order. So it
        // is overwritten in place, neither renamed over nor truncated to zero: ext4 answers
        // both (auto_da_alloc) by writing the new file out at once, 0.1-0.5 ms measured on a
        // `/run` of ext4. A write cut short leaves a hint that does not parse: no hint.
        let hint = ipam.dir.join(LAST_RESERVED);
        let text = ip.to_string();
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&hint)
            .and_then(|file| {
                std::os::unix::fs::FileExt::write_all_at(&file, text.as_bytes(), 0)?;
                file.set_len(text.len() as u64)
            })
            .map_err(|source| Error::Write { path: hint, source })?;
        debug!(%ip, owner, subnet = %ipam.subnet, "leased address");
        Ok(ip)
    }

    /// [`Ipam::release`], under this lock.
    pub fn release(&self, owner: &str) -> Result<Vec<Ipv4Addr>> {
        validate_owner(owner)?;
        let ipam = &self.ipam;
        let mut released = Vec::new();
        for (ip, held_by) in ipam.read_leases(false)? {
            if held_by == owner {
                ipam.remove(&ip.to_string())?;
                released.push(ip);
            }
        }
        debug!(?released, owner, "released leases");
        Ok(released)
    }

    /// [`Ipam::release_ip`], under this lock.
    pub fn release_ip(&self, ip: Ipv4Addr) -> Result<Option<String>> {
        let ipam = &self.ipam;
        let owner = ipam.read_lease(&ip.to_string())?;
        if owner.is_some() {
            ipam.remove(&ip.to_string())?;
            debug!(%ip, ?owner, "released lease");
        }
        Ok(owner)
    }

    /// [`Ipam::leases`], under this lock.
    pub fn leases(&self) -> Result<Vec<(Ipv4Addr, String)>> {
        Ok(self.ipam.read_leases(false)?.into_iter().collect())
    }
}

impl Ipam {
    /// Holds the subnet's lock until dropped. Blocks while another thread or process holds it.
    fn lock_file(&self) -> Result<Flock<File>> {
        let path = self.dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| Error::Write {
                path: path.clone(),
                source,
            })?;
        Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, source)| Error::Lock { path, source })
    }

    /// The leases on disk. With `sweep`, also removes temporary files a crash left behind:
    /// under the lock, nobody is writing one.
    fn read_leases(&self, sweep: bool) -> Result<BTreeMap<Ipv4Addr, String>> {
        let entries = fs::read_dir(&self.dir).map_err(|source| Error::Read {
            path: self.dir.clone(),
            source,
        })?;
        let mut leases = BTreeMap::new();
        for entry in entries {
            let entry = entry.map_err(|source| Error::Read {
                path: self.dir.clone(),
                source,
            })?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                continue;
            };
            if name.starts_with(TMP_PREFIX) {
                if sweep {
                    self.remove(name)?;
                }
                continue;
            }
            // Other files (the lock, `last_reserved_ip`, anything foreign, an address of
            // another subnet put here by hand) are no leases.
            let Ok(ip) = name.parse::<Ipv4Addr>() else {
                continue;
            };
            if !self.subnet.contains(ip) {
                continue;
            }
            if let Some(owner) = self.read_lease(name)? {
                leases.insert(ip, owner);
            }
        }
        Ok(leases)
    }

    /// The owner in lease file `name`; `None` when there is no such file.
    fn read_lease(&self, name: &str) -> Result<Option<String>> {
        let path = self.dir.join(name);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).trim().to_owned())),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::Read { path, source }),
        }
    }

    fn last_reserved(&self) -> Option<Ipv4Addr> {
        fs::read_to_string(self.dir.join(LAST_RESERVED))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Writes `text` to `DIR/name` through a temporary file and a rename.
    fn write_atomic(&self, name: &str, text: &str) -> Result<()> {
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!("{TMP_PREFIX}{name}"));
        fs::write(&tmp, text)
            .and_then(|()| fs::rename(&tmp, &path))
            .map_err(|source| {
                let _ = fs::remove_file(&tmp);
                Error::Write { path, source }
            })
    }

    fn remove(&self, name: &str) -> Result<()> {
        let path = self.dir.join(name);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(Error::Remove { path, source }),
        }
    }
}

/// Checks an owner id: printable, no whitespace, 1 to 253 bytes. [`crate::Nat`] takes the
/// same owners.
pub(crate) fn validate_owner(owner: &str) -> Result<()> {
    let reason = if owner.is_empty() {
        Some("must not be empty")
    } else if owner.len() > MAX_OWNER_LEN {
        Some("longer than 253 bytes")
    } else if owner.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("must not contain whitespace or control characters")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidOwner {
            owner: owner.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}
