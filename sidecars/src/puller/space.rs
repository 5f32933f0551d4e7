//! Free space on DEST's filesystem (`--min-free`): a download or a version being written checks
//! `fstatvfs(2)` before it starts (against what it is known to need) and again after every
//! [`SLICE`] it writes, so it is refused with a clear error while `--min-free` is still free,
//! never by `ENOSPC` halfway through (which would also fail every other writer of the volume).
//!
//! Available space is `f_bavail`: what an unprivileged writer may still use (ext4 keeps its
//! root reserve out of it), so the puller stops short of that reserve too.

use std::os::fd::AsFd;
use std::path::PathBuf;

/// How much of DEST's filesystem is kept free (`--min-free`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MinFree {
    /// This many bytes.
    Bytes(u64),
    /// This percentage of the filesystem's size.
    Percent(u8),
}

impl std::fmt::Display for MinFree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MinFree::Bytes(bytes) => write!(f, "{bytes}"),
            MinFree::Percent(percent) => write!(f, "{percent}%"),
        }
    }
}

impl std::str::FromStr for MinFree {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        match value.strip_suffix('%') {
            Some(percent) => match percent.trim().parse::<u8>() {
                Ok(percent) if percent < 100 => Ok(MinFree::Percent(percent)),
                _ => Err(format!(
                    "{value:?} is not a percentage from 0% to 99% (or a size such as 512Mi)"
                )),
            },
            None => parse_size(value).map(MinFree::Bytes),
        }
    }
}

/// A size in bytes: a number, optionally followed by `K`, `M`, `G` or `T` (powers of 1024,
/// also written `Ki`, `Mi`, `Gi`, `Ti` as Kubernetes quantities are).
pub fn parse_size(value: &str) -> Result<u64, String> {
    let value = value.trim();
    let digits = value.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &value[digits.len()..];
    let shift = match unit {
        "" => 0,
        "K" | "Ki" => 10,
        "M" | "Mi" => 20,
        "G" | "Gi" => 30,
        "T" | "Ti" => 40,
        _ => {
            return Err(format!(
                "{value:?}: unknown unit {unit:?} (use K, M, G or T)"
            ));
        }
    };
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("{value:?} is not a size such as 1073741824, 512Mi or 2G"))?;
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{value:?} is too large"))
}

/// How often free space is checked while writing, in bytes written (rounded up to whole
/// blocks): `fstatvfs` costs about a microsecond, a MiB of writes about a millisecond.
pub const SLICE: u64 = 1 << 20;

/// The block size bytes are rounded up to: a one-byte file still takes a block.
pub const BLOCK: u64 = 4096;

/// Why writing must stop.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Writing on would leave less than `--min-free`.
    #[error(
        "not enough free space on the filesystem of {path:?}: {available} bytes available, \
         {needed} more needed while --min-free {min_free} ({reserve} bytes) stays free; \
         free some space or lower the bounds (--max-bytes, --max-unpacked-bytes, --min-free)"
    )]
    NoSpace {
        /// The directory or file being written.
        path: PathBuf,
        /// `f_bavail * f_frsize`.
        available: u64,
        /// What the next write needs besides the reserve.
        needed: u64,
        /// `--min-free`.
        min_free: MinFree,
        /// `--min-free` in bytes.
        reserve: u64,
    },
    /// `fstatvfs` failed.
    #[error("failed to read the free space of {path:?} (fstatvfs)")]
    Statvfs {
        /// The directory or file being written.
        path: PathBuf,
        /// Cause.
        #[source]
        source: nix::Error,
    },
}

/// The free-space account of one download or one version being written.
#[derive(Debug)]
pub struct Space {
    min_free: MinFree,
    /// Named in errors.
    path: PathBuf,
    /// Bytes written since the last check; the next check comes once they pass [`SLICE`].
    since_check: u64,
    checked: bool,
}

impl Space {
    /// An account for writes to `path` (named in errors) that keeps `min_free` free.
    pub fn new(min_free: MinFree, path: PathBuf) -> Self {
        Self {
            min_free,
            path,
            since_check: 0,
            checked: false,
        }
    }

    /// Refuses now if `needed` bytes (known before writing: a `Content-Length`, the sizes a
    /// zip declares) would not fit above the reserve.
    pub fn expect(&self, fd: impl AsFd, needed: u64) -> Result<(), Error> {
        self.check(fd, needed)
    }

    /// Accounts for `bytes` about to be written (rounded up to whole blocks by the caller where
    /// it creates files); every [`SLICE`] the filesystem must still have a slice free above the
    /// reserve, so the reserve is never written into.
    pub fn charge(&mut self, fd: impl AsFd, bytes: u64) -> Result<(), Error> {
        if self.checked && self.since_check.saturating_add(bytes) <= SLICE {
            self.since_check += bytes;
            return Ok(());
        }
        self.check(fd, bytes.max(SLICE))?;
        self.checked = true;
        self.since_check = bytes;
        Ok(())
    }

    fn check(&self, fd: impl AsFd, needed: u64) -> Result<(), Error> {
        let stat = nix::sys::statvfs::fstatvfs(fd).map_err(|source| Error::Statvfs {
            path: self.path.clone(),
            source,
        })?;
        let fragment = stat.fragment_size();
        let available = stat.blocks_available().saturating_mul(fragment);
        let total = stat.blocks().saturating_mul(fragment);
        let reserve = match self.min_free {
            MinFree::Bytes(bytes) => bytes,
            MinFree::Percent(percent) => total / 100 * u64::from(percent),
        };
        if available < reserve.saturating_add(needed) {
            return Err(Error::NoSpace {
                path: self.path.clone(),
                available,
                needed,
                min_free: self.min_free,
                reserve,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_percentages() {
        assert_eq!(parse_size("1073741824"), Ok(1 << 30));
        assert_eq!(parse_size("64Mi"), Ok(64 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("1Ki"), Ok(1024));
        assert!(parse_size("1.5G").is_err());
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999T").is_err());
        assert_eq!("5%".parse::<MinFree>(), Ok(MinFree::Percent(5)));
        assert_eq!("1Mi".parse::<MinFree>(), Ok(MinFree::Bytes(1 << 20)));
        assert!("100%".parse::<MinFree>().is_err());
        assert_eq!(MinFree::Percent(5).to_string(), "5%");
    }
}
