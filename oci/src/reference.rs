//! Image references as Kubernetes manifests and `docker pull` write them, parsed with the grammar
//! of distribution/reference and normalised as Docker (and so kubelet) does: `nginx` is
//! `docker.io/library/nginx:latest`, `user/app` is `docker.io/user/app:latest`, a first component
//! with a `.` or a `:`, or `localhost`, is a registry host.

use std::fmt;
use std::str::FromStr;

use crate::digest::{Digest, InvalidDigest};

/// Docker Hub, the registry of names without a host.
pub const DOCKER_HUB: &str = "docker.io";
/// The tag of a reference that names neither a tag nor a digest.
pub const DEFAULT_TAG: &str = "latest";
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// A normalised image reference: registry host, repository path, and a tag, a digest or both.
/// Its `Display` is the full form (`docker.io/library/nginx:1.25`), which is also the name the
/// store records (`org.opencontainers.image.ref.name`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

/// An image name that cannot be parsed; kubelet reports it as `InvalidImageName`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("couldn't parse image name {input:?}: invalid reference format: {problem}")]
pub struct InvalidReference {
    /// The name as given.
    pub input: String,
    /// Which part is wrong, and how.
    pub problem: ReferenceProblem,
}

/// The part of an image name that is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReferenceProblem {
    /// An empty name, or an empty component (`a//b`, a trailing `/`).
    Empty,
    /// Upper case in the repository path (hosts may have it, paths may not).
    Uppercase {
        /// The repository path.
        repository: String,
    },
    /// A path component outside `[a-z0-9]+` joined by `.`, `_`, `__` or `-`s.
    Component {
        /// The component.
        component: String,
    },
    /// A registry host that is not `host[:port]`.
    Registry {
        /// The host part.
        registry: String,
    },
    /// A tag outside `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
    Tag {
        /// The tag.
        tag: String,
    },
    /// A bad `@digest`.
    Digest(InvalidDigest),
    /// A name over 255 characters.
    TooLong {
        /// Its length.
        len: usize,
    },
}

impl fmt::Display for ReferenceProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReferenceProblem::Empty => {
                f.write_str("repository name must have at least one component")
            }
            ReferenceProblem::Uppercase { repository } => {
                write!(f, "repository name ({repository}) must be lowercase")
            }
            ReferenceProblem::Component { component } => write!(
                f,
                "path component {component:?} must be lowercase letters and digits, separated by \
                 '.', '_', '__' or '-'"
            ),
            ReferenceProblem::Registry { registry } => {
                write!(
                    f,
                    "registry {registry:?} is not a host name or address with an optional :port"
                )
            }
            ReferenceProblem::Tag { tag } => write!(
                f,
                "tag {tag:?} must be 1 to 128 letters, digits, '_', '.' or '-', not starting with \
                 '.' or '-'"
            ),
            ReferenceProblem::Digest(err) => write!(f, "{err}"),
            ReferenceProblem::TooLong { len } => {
                write!(
                    f,
                    "repository name must not be more than 255 characters (it has {len})"
                )
            }
        }
    }
}

impl Reference {
    /// Parses and normalises an image name.
    pub fn parse(input: &str) -> Result<Reference, InvalidReference> {
        let invalid = |problem| InvalidReference {
            input: input.to_owned(),
            problem,
        };
        let (rest, digest) = match input.split_once('@') {
            Some((rest, digest)) => (
                rest,
                Some(Digest::parse(digest).map_err(|e| invalid(ReferenceProblem::Digest(e)))?),
            ),
            None => (input, None),
        };
        // A tag is after the last ':' that follows the last '/' (`host:5000/app` has none).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let tag = &rest[last_slash + i + 1..];
                if !valid_tag(tag) {
                    return Err(invalid(ReferenceProblem::Tag {
                        tag: tag.to_owned(),
                    }));
                }
                (&rest[..last_slash + i], Some(tag.to_owned()))
            }
            None => (rest, None),
        };
        if name.is_empty() {
            return Err(invalid(ReferenceProblem::Empty));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(invalid(ReferenceProblem::TooLong { len: name.len() }));
        }
        let (registry, path) = match name.split_once('/') {
            // As Docker: a host has a '.' or a ':', is `localhost`, or has upper case.
            Some((first, path))
                if first.contains(['.', ':'])
                    || first == "localhost"
                    || first.contains(|c: char| c.is_ascii_uppercase()) =>
            {
                (first, path)
            }
            _ => (DOCKER_HUB, name),
        };
        if !valid_registry(registry) {
            return Err(invalid(ReferenceProblem::Registry {
                registry: registry.to_owned(),
            }));
        }
        if path.contains(|c: char| c.is_ascii_uppercase()) {
            return Err(invalid(ReferenceProblem::Uppercase {
                repository: path.to_owned(),
            }));
        }
        for component in path.split('/') {
            if component.is_empty() {
                return Err(invalid(ReferenceProblem::Empty));
            }
            if !valid_component(component) {
                let component = component.to_owned();
                return Err(invalid(ReferenceProblem::Component { component }));
            }
        }
        let registry = if registry == "index.docker.io" {
            DOCKER_HUB
        } else {
            registry
        };
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_owned()
        };
        let tag = match (tag, &digest) {
            (None, None) => Some(DEFAULT_TAG.to_owned()),
            (tag, _) => tag,
        };
        Ok(Reference {
            registry: registry.to_owned(),
            repository,
            tag,
            digest,
        })
    }

    /// The registry host (`docker.io`, `quay.io`, `localhost:5000`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path in the registry (`library/nginx`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// `registry/repository`, what `podman images` shows as REPOSITORY.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The tag: the given one, `latest` when neither a tag nor a digest was given, `None` for a
    /// digest-only reference.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest of `name@sha256:...`.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// The same repository at another tag or digest.
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// The same tag or digest in another registry and repository (a mirror's name for it).
    pub fn at(&self, registry: &str, repository: &str) -> Reference {
        Reference {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            ..self.clone()
        }
    }

    /// The short form Docker prints: `nginx:1.25` for `docker.io/library/nginx:1.25`.
    pub fn familiar(&self) -> String {
        let full = self.to_string();
        let short = full
            .strip_prefix("docker.io/library/")
            .or_else(|| full.strip_prefix("docker.io/"));
        short.map_or(full.clone(), str::to_owned)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Reference {
    type Err = InvalidReference;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

/// `[a-z0-9]+` joined by `.`, `_`, `__` or one or more `-`.
fn valid_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    while i < bytes.len() {
        if !alnum(bytes[i]) {
            return false;
        }
        while i < bytes.len() && alnum(bytes[i]) {
            i += 1;
        }
        if i == bytes.len() {
            return true;
        }
        let separator_start = i;
        match bytes[i] {
            b'.' => i += 1,
            b'_' if bytes.get(i + 1) == Some(&b'_') => i += 2,
            b'_' => i += 1,
            b'-' => {
                while bytes.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == bytes.len() || i == separator_start {
            return false;
        }
    }
    !bytes.is_empty()
}

/// `host[:port]`: DNS labels of letters, digits and inner `-`, joined by `.`, or a bracketed
/// IPv6 address.
fn valid_registry(registry: &str) -> bool {
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        let Some((address, after)) = rest.split_once(']') else {
            return false;
        };
        if address.is_empty()
            || !address
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return false;
        }
        match after {
            "" => return true,
            port => match port.strip_prefix(':') {
                Some(port) => ("", Some(port)),
                None => return false,
            },
        }
    } else {
        match registry.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (registry, None),
        }
    };
    if let Some(port) = port
        && (port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return false;
    }
    if registry.starts_with('[') {
        return true;
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            let bytes = label.as_bytes();
            !bytes.is_empty()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
                && bytes[0] != b'-'
                && bytes[bytes.len() - 1] != b'-'
        })
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn valid_tag(tag: &str) -> bool {
    let word = |b: &u8| b.is_ascii_alphanumeric() || *b == b'_';
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_TAG_LEN
        && word(&bytes[0])
        && bytes.iter().all(|b| word(b) || *b == b'.' || *b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(input: &str) -> String {
        Reference::parse(input)
            .unwrap_or_else(|e| panic!("{input}: {e}"))
            .to_string()
    }

    fn problem(input: &str) -> ReferenceProblem {
        Reference::parse(input).expect_err(input).problem
    }

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn docker_hub_names() {
        assert_eq!(full("nginx"), "docker.io/library/nginx:latest");
        assert_eq!(full("nginx:1.14.2"), "docker.io/library/nginx:1.14.2");
        assert_eq!(full("library/nginx"), "docker.io/library/nginx:latest");
        assert_eq!(full("user/app"), "docker.io/user/app:latest");
        assert_eq!(full("user/app/sub:v1"), "docker.io/user/app/sub:v1");
        assert_eq!(full("docker.io/nginx"), "docker.io/library/nginx:latest");
        assert_eq!(
            full("index.docker.io/library/nginx:1"),
            "docker.io/library/nginx:1"
        );
        assert_eq!(full("docker.io/user/app"), "docker.io/user/app:latest");
    }

    #[test]
    fn other_registries() {
        assert_eq!(full("quay.io/coreos/etcd:v3.5"), "quay.io/coreos/etcd:v3.5");
        assert_eq!(full("host:5000/a/b:tag"), "host:5000/a/b:tag");
        assert_eq!(full("host:5000/a"), "host:5000/a:latest");
        assert_eq!(full("localhost/app"), "localhost/app:latest");
        assert_eq!(full("localhost:5000/app:1"), "localhost:5000/app:1");
        assert_eq!(full("127.0.0.1:5000/app"), "127.0.0.1:5000/app:latest");
        assert_eq!(full("[::1]:5000/app:v2"), "[::1]:5000/app:v2");
        assert_eq!(
            full("Registry.Example.COM/app"),
            "Registry.Example.COM/app:latest"
        );
        assert_eq!(full("MyHost/app"), "MyHost/app:latest");
        // `localhost:5000` alone is the repository `localhost` at tag 5000, as for Docker.
        assert_eq!(full("localhost:5000"), "docker.io/library/localhost:5000");
    }

    #[test]
    fn digests() {
        let digest_only = Reference::parse(&format!("nginx@sha256:{HEX}")).expect("digest");
        assert_eq!(digest_only.tag(), None);
        assert_eq!(digest_only.digest().map(Digest::hex), Some(HEX));
        assert_eq!(
            digest_only.to_string(),
            format!("docker.io/library/nginx@sha256:{HEX}")
        );
        let both = Reference::parse(&format!("host:5000/a/b:v1@sha256:{HEX}")).expect("both");
        assert_eq!(both.tag(), Some("v1"));
        assert_eq!(both.to_string(), format!("host:5000/a/b:v1@sha256:{HEX}"));
        assert_eq!(both.registry(), "host:5000");
        assert_eq!(both.repository(), "a/b");
        assert_eq!(both.name(), "host:5000/a/b");
    }

    #[test]
    fn component_separators() {
        assert_eq!(
            full("docker.io/a.b_c__d---e/f-g"),
            "docker.io/a.b_c__d---e/f-g:latest"
        );
        for bad in ["a..b", "a___b", "-a", "a-", "a_", ".a", "a b", "a$b"] {
            assert!(
                matches!(problem(bad), ReferenceProblem::Component { .. }),
                "{bad}"
            );
        }
    }

    #[test]
    fn errors_name_the_bad_part() {
        assert_eq!(problem(""), ReferenceProblem::Empty);
        assert_eq!(problem(":tag"), ReferenceProblem::Empty);
        assert_eq!(problem("a//b"), ReferenceProblem::Empty);
        assert_eq!(problem("host:5000/"), ReferenceProblem::Empty);
        assert_eq!(
            problem("Nginx"),
            ReferenceProblem::Uppercase {
                repository: "Nginx".into()
            }
        );
        assert_eq!(
            problem("quay.io/Org/app"),
            ReferenceProblem::Uppercase {
                repository: "Org/app".into()
            }
        );
        assert_eq!(
            problem("nginx:-bad"),
            ReferenceProblem::Tag { tag: "-bad".into() }
        );
        assert_eq!(problem("nginx:"), ReferenceProblem::Tag { tag: "".into() });
        assert_eq!(
            problem(&format!("nginx:{}", "a".repeat(129))),
            ReferenceProblem::Tag {
                tag: "a".repeat(129)
            }
        );
        assert!(matches!(
            problem("nginx@sha256:abc"),
            ReferenceProblem::Digest(_)
        ));
        assert!(matches!(
            problem("nginx@md5:abc"),
            ReferenceProblem::Digest(_)
        ));
        assert_eq!(
            problem("host_x.io/app"),
            ReferenceProblem::Registry {
                registry: "host_x.io".into()
            }
        );
        assert_eq!(
            problem("host.io:50a0/app"),
            ReferenceProblem::Registry {
                registry: "host.io:50a0".into()
            }
        );
        assert_eq!(
            problem("-host.io/app"),
            ReferenceProblem::Registry {
                registry: "-host.io".into()
            }
        );
        assert_eq!(
            problem(&"a".repeat(256)),
            ReferenceProblem::TooLong { len: 256 }
        );
    }

    #[test]
    fn message_reads_like_kubelets() {
        let err = Reference::parse("nginx:Latest!").expect_err("bad tag");
        assert_eq!(
            err.to_string(),
            "couldn't parse image name \"nginx:Latest!\": invalid reference format: tag \
             \"Latest!\" must be 1 to 128 letters, digits, '_', '.' or '-', not starting with \
             '.' or '-'"
        );
    }

    #[test]
    fn familiar_names() {
        let familiar = |s: &str| Reference::parse(s).expect(s).familiar();
        assert_eq!(familiar("nginx"), "nginx:latest");
        assert_eq!(familiar("user/app:1"), "user/app:1");
        assert_eq!(familiar("quay.io/a/b:1"), "quay.io/a/b:1");
    }
}
