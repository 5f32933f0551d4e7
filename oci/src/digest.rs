//! Content digests (`sha256:<64 hex>`), the names of everything in the store, and a reader that
//! computes one while the content streams through.

use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// A sha256 content digest, `sha256:` and 64 lowercase hex digits. The store names blobs and
/// layers by it; other algorithms (sha512 is allowed by the OCI spec, seen nowhere in practice)
/// are refused when parsed.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

/// Why a string is not a digest the store can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid digest {input:?}: {problem}")]
pub struct InvalidDigest {
    /// The text that was given.
    pub input: String,
    /// What is wrong with it.
    pub problem: DigestProblem,
}

/// What is wrong with a digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestProblem {
    /// No `algorithm:` part.
    NoAlgorithm,
    /// An algorithm other than sha256.
    Algorithm,
    /// The hex part is not 64 lowercase hex digits.
    Hex,
}

impl fmt::Display for DigestProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DigestProblem::NoAlgorithm => "expected ALGORITHM:HEX, as in sha256:<64 hex digits>",
            DigestProblem::Algorithm => "only sha256 digests are supported",
            DigestProblem::Hex => "a sha256 digest is 64 lowercase hex digits",
        })
    }
}

impl Digest {
    /// Parses `sha256:<64 lowercase hex>`.
    pub fn parse(input: &str) -> Result<Digest, InvalidDigest> {
        let invalid = |problem| InvalidDigest {
            input: input.to_owned(),
            problem,
        };
        let (algorithm, hex) = input
            .split_once(':')
            .ok_or(invalid(DigestProblem::NoAlgorithm))?;
        if algorithm != "sha256" {
            return Err(invalid(DigestProblem::Algorithm));
        }
        Digest::from_hex(hex).ok_or(invalid(DigestProblem::Hex))
    }

    /// The digest whose hex part is `hex`, if that is 64 lowercase hex digits.
    pub fn from_hex(hex: &str) -> Option<Digest> {
        let valid = hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        valid.then(|| Digest {
            hex: hex.to_owned(),
        })
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest::from_hasher(Sha256::new_with_prefix(bytes))
    }

    pub(crate) fn from_hasher(hasher: Sha256) -> Digest {
        let hash = hasher.finalize();
        let mut hex = String::with_capacity(64);
        for byte in hash {
            hex.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
            hex.push(char::from(b"0123456789abcdef"[usize::from(byte & 0xf)]));
        }
        Digest { hex }
    }

    /// The 64 hex digits, as used in file names (`blobs/sha256/<hex>`).
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The first 12 hex digits, as `docker images` and `podman images` show an image id.
    pub fn short(&self) -> &str {
        &self.hex[..12]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Digest {
    type Err = InvalidDigest;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Digest::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A reader that hashes and counts what passes through it.
#[derive(Debug)]
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Reads what is left up to EOF (a tar's trailing blocks are part of its diff_id), then
    /// returns the digest and byte count of everything read.
    pub(crate) fn finish(mut self) -> io::Result<(Digest, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((Digest::from_hasher(self.hasher), self.count))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let text = format!("sha256:{}", "ab".repeat(32));
        let digest = Digest::parse(&text).expect("valid");
        assert_eq!(digest.to_string(), text);
        assert_eq!(digest.short(), "abababababab");
        assert_eq!(
            Digest::of(b"").hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn refuses_others() {
        let problem = |s: &str| Digest::parse(s).expect_err(s).problem;
        assert_eq!(problem("abc"), DigestProblem::NoAlgorithm);
        assert_eq!(
            problem(&format!("sha512:{}", "a".repeat(128))),
            DigestProblem::Algorithm
        );
        assert_eq!(problem("sha256:abc"), DigestProblem::Hex);
        assert_eq!(
            problem(&format!("sha256:{}", "A".repeat(64))),
            DigestProblem::Hex
        );
    }

    #[test]
    fn hashing_reader_reads_to_the_end() {
        let mut reader = HashingReader::new(&b"hello world"[..]);
        let mut first = [0u8; 5];
        reader.read_exact(&mut first).expect("read");
        let (digest, count) = reader.finish().expect("finish");
        assert_eq!(count, 11);
        assert_eq!(digest, Digest::of(b"hello world"));
    }
}
