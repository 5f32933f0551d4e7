//! The flags of `podkit puller` (and `podkit-puller`), with `PODKIT_PULLER_*` environment
//! fallbacks, and their conversion into a validated [`Config`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use hyper::header::{HeaderName, HeaderValue};

use crate::puller::space::{MinFree, parse_size};
use crate::puller::{Config, Extract, Limits, Mode, Source};

/// Keep a shared volume up to date with a remote file or archive, published atomically.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "podkit-puller", version)]
pub struct Args {
    /// What to fetch: `http://` or `https://host/path` (a file, or a .tar/.tar.gz/.tgz/.zip
    /// archive) or `file:///path` (a file, or a directory published as a tree).
    #[arg(
        long,
        value_name = "URL",
        env = "PODKIT_PULLER_URL",
        required_unless_present = "git",
        conflicts_with = "git"
    )]
    pub url: Option<String>,

    /// Or a git repository to check out: `https://host/repo.git`, `ssh://host/repo`,
    /// `user@host:repo`, `git://host/repo`, `file:///path` or `/path` (ssh and local
    /// repositories need the `ssh` and `git-upload-pack` programs).
    #[arg(long, value_name = "URL", env = "PODKIT_PULLER_GIT")]
    pub git: Option<String>,

    /// With `--git`: the branch, tag or commit to publish; `HEAD` is the remote's default branch.
    #[arg(
        long = "ref",
        value_name = "REF",
        default_value = "HEAD",
        requires = "git",
        env = "PODKIT_PULLER_REF"
    )]
    pub reference: String,

    /// With `--git`: history fetched, in commits; 0 fetches all of it.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1,
        requires = "git",
        env = "PODKIT_PULLER_DEPTH"
    )]
    pub depth: u32,

    /// Trust only the CA certificates in this PEM file for `https://` (instead of the system's
    /// roots).
    #[arg(long, value_name = "FILE", env = "PODKIT_PULLER_CA_FILE")]
    pub ca_file: Option<PathBuf>,

    /// Client certificate chain (PEM) for servers that ask for one (mutual TLS); needs
    /// `--client-key`.
    #[arg(
        long,
        value_name = "FILE",
        requires = "client_key",
        env = "PODKIT_PULLER_CLIENT_CERT"
    )]
    pub client_cert: Option<PathBuf>,

    /// Private key (PEM) of `--client-cert`.
    #[arg(
        long,
        value_name = "FILE",
        requires = "client_cert",
        env = "PODKIT_PULLER_CLIENT_KEY"
    )]
    pub client_key: Option<PathBuf>,

    /// The volume to keep up to date: versions go to `DEST/.versions/`, readers use
    /// `DEST/<link>`.
    #[arg(long, value_name = "DIR", env = "PODKIT_PULLER_DEST")]
    pub dest: PathBuf,

    /// Name of the symlink (inside `--dest`) that points at the published version.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "current",
        env = "PODKIT_PULLER_LINK"
    )]
    pub link: String,

    /// `symlink`: publish whole versions by swapping the `--link` symlink (atomic); `copy`:
    /// update the `--link` directory in place, one rename per file.
    #[arg(
        long,
        value_enum,
        default_value = "symlink",
        env = "PODKIT_PULLER_MODE"
    )]
    pub mode: Mode,

    /// Unpack archives: `auto` by the URL's suffix, `never`, or `always` (zip, tar, gzip
    /// sniffed). Not with `--git`.
    #[arg(
        long,
        value_enum,
        default_value = "auto",
        conflicts_with = "git",
        env = "PODKIT_PULLER_EXTRACT"
    )]
    pub extract: Extract,

    /// File name of a downloaded file that is not unpacked; default: the URL's last segment.
    /// Not with `--git`.
    #[arg(
        long,
        value_name = "NAME",
        conflicts_with = "git",
        env = "PODKIT_PULLER_FILE_NAME"
    )]
    pub file_name: Option<String>,

    /// Old versions kept besides the published one (readers may still be inside them).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 2,
        env = "PODKIT_PULLER_KEEP"
    )]
    pub keep: usize,

    /// Time between syncs, e.g. `10s`; up to 10% jitter is added.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration, env = "PODKIT_PULLER_PERIOD")]
    pub period: Duration,

    /// Exit 0 after the first successful sync (init-container pattern); a failure exits 1 with
    /// the reason (with `--max-failures`, after that many attempts).
    #[arg(long, env = "PODKIT_PULLER_ONE_TIME")]
    pub one_time: bool,

    /// Exit non-zero after this many consecutive failed syncs; default: retry forever.
    #[arg(long, value_name = "N", env = "PODKIT_PULLER_MAX_FAILURES")]
    pub max_failures: Option<u32>,

    /// First wait after a failed sync; it doubles up to `--retry-max`.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration, env = "PODKIT_PULLER_RETRY_INITIAL")]
    pub retry_initial: Duration,

    /// Longest wait after a failed sync.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration, env = "PODKIT_PULLER_RETRY_MAX")]
    pub retry_max: Duration,

    /// Bound on one sync's download (a started publish always finishes) and its `--exec` hook.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration, env = "PODKIT_PULLER_TIMEOUT")]
    pub timeout: Duration,

    /// Refuse downloads larger than this (bytes, or with K, M, G, T: powers of 1024). Not with
    /// `--git`.
    #[arg(
        long,
        value_name = "SIZE",
        default_value = "1G",
        value_parser = parse_size,
        conflicts_with = "git",
        env = "PODKIT_PULLER_MAX_BYTES"
    )]
    pub max_bytes: u64,

    /// Refuse an archive (or a git commit) whose files hold more than this in all, unpacked.
    #[arg(long, value_name = "SIZE", default_value = "2G", value_parser = parse_size, env = "PODKIT_PULLER_MAX_UNPACKED_BYTES")]
    pub max_unpacked_bytes: u64,

    /// Refuse an archive (or a git commit) with more files, directories and links than this.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 100_000,
        env = "PODKIT_PULLER_MAX_ENTRIES"
    )]
    pub max_entries: u64,

    /// Stop a download or a version before the filesystem of `--dest` has less than this free:
    /// a size (e.g. `512M`) or a percentage of the filesystem (e.g. `5%`).
    #[arg(
        long,
        value_name = "SIZE|PCT",
        default_value = "5%",
        env = "PODKIT_PULLER_MIN_FREE"
    )]
    pub min_free: MinFree,

    /// Permission bits (octal) cleared from every published file and directory, as a shell's
    /// umask; setuid, setgid and sticky bits are never published.
    #[arg(long, value_name = "OCTAL", default_value = "022", value_parser = parse_umask, env = "PODKIT_PULLER_UMASK")]
    pub umask: u32,

    /// Expected sha256 of the download (hex); anything else is not published. Not with `--git`.
    #[arg(
        long,
        value_name = "HEX",
        conflicts_with = "git",
        env = "PODKIT_PULLER_SHA256"
    )]
    pub sha256: Option<String>,

    /// Extra request header `K: V` (repeatable).
    #[arg(long = "header", value_name = "K: V", env = "PODKIT_PULLER_HEADER")]
    pub headers: Vec<String>,

    /// File holding a bearer token, read again before every sync.
    #[arg(long, value_name = "FILE", env = "PODKIT_PULLER_BEARER_TOKEN_FILE")]
    pub bearer_token_file: Option<PathBuf>,

    /// Shell command run after each publish, in the new version's directory, with
    /// `PODKIT_VERSION` and `PODKIT_PATH` set.
    #[arg(long, value_name = "CMD", env = "PODKIT_PULLER_EXEC")]
    pub exec: Option<String>,

    /// POST `{"version": ID, "path": DIR}` here after each publish (retried 5 times with
    /// backoff), e.g. `http://127.0.0.1:8080/reload`.
    #[arg(long, value_name = "URL", env = "PODKIT_PULLER_WEBHOOK")]
    pub webhook: Option<String>,

    /// Send a signal after each publish to the process whose pid is in a file, e.g.
    /// `HUP:/run/nginx.pid`.
    #[arg(long, value_name = "SIG:PIDFILE", env = "PODKIT_PULLER_SIGNAL")]
    pub signal: Option<String>,

    /// Serve `/healthz`, `/readyz` and `/metrics` here, e.g. `127.0.0.1:9103`.
    #[arg(long, value_name = "ADDR", env = "PODKIT_PULLER_HEALTH_ADDR")]
    pub health_addr: Option<SocketAddr>,
}

/// A flag whose value is valid on its own but not usable.
#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    /// `--url` is neither `http://`, `https://` nor `file://`.
    #[error(
        "invalid --url {url:?}: expected http(s)://host[:port]/path or file:///absolute/path ({why})"
    )]
    Url {
        /// The value.
        url: String,
        /// What is wrong.
        why: &'static str,
    },
    /// A name that must be one path component.
    #[error("invalid {flag} {value:?}: must be a single file name without `/`")]
    Name {
        /// The flag.
        flag: &'static str,
        /// The value.
        value: String,
    },
    /// `--header` is not `K: V`.
    #[error("invalid --header {header:?}: expected `Name: value`")]
    Header {
        /// The value.
        header: String,
    },
    /// `--sha256` is not 64 hex digits.
    #[error("invalid --sha256 {value:?}: expected 64 hex digits")]
    Sha256 {
        /// The value.
        value: String,
    },
    /// `--webhook` is not an `http://` URL.
    #[error(
        "invalid --webhook {url:?}: expected an http:// URL such as http://127.0.0.1:8080/reload"
    )]
    Webhook {
        /// The value.
        url: String,
    },
    /// `--signal` is not `SIG:PIDFILE`.
    #[error("invalid --signal {value:?}: expected SIG:PIDFILE such as HUP:/run/app.pid")]
    Signal {
        /// The value.
        value: String,
    },
    /// A zero where a positive number or duration is needed.
    #[error("invalid {flag} 0: must be positive")]
    Zero {
        /// The flag.
        flag: &'static str,
    },
    /// `--git` is not a repository URL or path.
    #[error(
        "invalid --git {url:?}: expected https://host/repo.git, ssh://host/repo, user@host:repo, file:///path or /path ({why})"
    )]
    Git {
        /// The value.
        url: String,
        /// What is wrong.
        why: String,
    },
    /// `--ref` cannot name a git ref or commit.
    #[error(
        "invalid --ref {value:?}: expected a branch, a tag, a full ref (refs/...) or a 40-digit commit"
    )]
    Ref {
        /// The value.
        value: String,
    },
    /// `--ca-file`, `--client-cert` or `--client-key` cannot be used.
    #[error("invalid TLS flags (--ca-file, --client-cert, --client-key)")]
    Tls(#[source] crate::client_tls::Error),
    /// A relative `--dest` needs the working directory.
    #[error("failed to resolve relative --dest {dest:?} against the working directory")]
    WorkingDir {
        /// The value.
        dest: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// An octal umask such as `022` or `0027`.
fn parse_umask(value: &str) -> Result<u32, String> {
    match u32::from_str_radix(value, 8) {
        Ok(mask) if mask <= 0o777 => Ok(mask),
        _ => Err(format!(
            "{value:?} is not an octal umask from 000 to 777, such as 022"
        )),
    }
}

fn git_source(url: &str, reference: &str, depth: u32) -> Result<Source, ArgsError> {
    let err = |why: String| ArgsError::Git {
        url: url.to_owned(),
        why,
    };
    let parsed = gix::url::parse(gix::bstr::BStr::new(url)).map_err(|e| err(e.to_string()))?;
    use gix::url::Scheme;
    match parsed.scheme {
        Scheme::Http | Scheme::Https | Scheme::Ssh | Scheme::File | Scheme::Git => {}
        other => return Err(err(format!("the {other} scheme is not supported"))),
    }
    let bad_ref = reference.is_empty()
        || reference.starts_with('-')
        || reference.contains([':', ' ', '\\', '^', '~', '?', '*', '['])
        || reference.contains("..");
    if bad_ref {
        return Err(ArgsError::Ref {
            value: reference.to_owned(),
        });
    }
    Ok(Source::Git {
        url: url.to_owned(),
        reference: reference.to_owned(),
        depth,
    })
}

fn source(url: &str) -> Result<Source, ArgsError> {
    let err = |why| ArgsError::Url {
        url: url.to_owned(),
        why,
    };
    if let Some(path) = url.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(err("a file:// path must be absolute"));
        }
        return Ok(Source::File(PathBuf::from(path)));
    }
    let uri: hyper::Uri = url.parse().map_err(|_| err("not a URL"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
        return Err(err("unsupported scheme or no host"));
    }
    Ok(Source::Http(uri))
}

fn single_name(flag: &'static str, value: &str) -> Result<(), ArgsError> {
    if value.is_empty() || value.contains('/') || value == "." || value == ".." {
        return Err(ArgsError::Name {
            flag,
            value: value.to_owned(),
        });
    }
    Ok(())
}

impl TryFrom<Args> for Config {
    type Error = ArgsError;

    fn try_from(args: Args) -> Result<Self, ArgsError> {
        let source = match (&args.url, &args.git) {
            (_, Some(git)) => git_source(git, &args.reference, args.depth)?,
            (Some(url), None) => source(url)?,
            // clap requires one of them; a Config built by hand from Args may lack both.
            (None, None) => {
                return Err(ArgsError::Url {
                    url: String::new(),
                    why: "one of --url and --git is needed",
                });
            }
        };
        let tls = crate::client_tls::ClientTls {
            ca_file: args.ca_file,
            identity: args.client_cert.zip(args.client_key),
        };
        let https = match &source {
            Source::Http(uri) => uri.scheme_str() == Some("https"),
            Source::Git { url, .. } => url.starts_with("https://"),
            Source::File(_) => false,
        };
        // Read the files now so a wrong path is a flag error (exit 2), not a failing sync.
        if https || tls != Default::default() {
            tls.config(&[]).map_err(ArgsError::Tls)?;
        }
        single_name("--link", &args.link)?;
        if args.link.starts_with('.') {
            return Err(ArgsError::Name {
                flag: "--link",
                value: args.link,
            });
        }
        let file_name = match args.file_name {
            Some(name) => name,
            None => match &source {
                Source::Http(uri) => uri.path().rsplit('/').find(|s| !s.is_empty()),
                Source::File(path) => path.file_name().and_then(|n| n.to_str()),
                Source::Git { .. } => None,
            }
            .unwrap_or("index")
            .to_owned(),
        };
        single_name("--file-name", &file_name)?;
        let mut headers = Vec::new();
        for header in &args.headers {
            let err = || ArgsError::Header {
                header: header.clone(),
            };
            let (name, value) = header.split_once(':').ok_or_else(err)?;
            let name = HeaderName::try_from(name.trim()).map_err(|_| err())?;
            let value = HeaderValue::try_from(value.trim()).map_err(|_| err())?;
            headers.push((name, value));
        }
        let sha256 = match args.sha256 {
            Some(value) => {
                let lower = value.to_ascii_lowercase();
                if lower.len() != 64 || !lower.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(ArgsError::Sha256 { value });
                }
                Some(lower)
            }
            None => None,
        };
        for (flag, value) in [
            ("--period", args.period),
            ("--timeout", args.timeout),
            ("--retry-initial", args.retry_initial),
            ("--retry-max", args.retry_max),
        ] {
            if value.is_zero() {
                return Err(ArgsError::Zero { flag });
            }
        }
        for (flag, value) in [
            ("--max-bytes", args.max_bytes),
            ("--max-unpacked-bytes", args.max_unpacked_bytes),
            ("--max-entries", args.max_entries),
        ] {
            if value == 0 {
                return Err(ArgsError::Zero { flag });
            }
        }
        if args.max_failures == Some(0) {
            return Err(ArgsError::Zero {
                flag: "--max-failures",
            });
        }
        let webhook = match args.webhook {
            Some(url) => {
                let uri: Option<hyper::Uri> = url.parse().ok();
                match uri {
                    Some(uri) if uri.scheme_str() == Some("http") && uri.authority().is_some() => {
                        Some(uri)
                    }
                    _ => return Err(ArgsError::Webhook { url }),
                }
            }
            None => None,
        };
        let signal = match args.signal {
            Some(value) => {
                let err = || ArgsError::Signal {
                    value: value.clone(),
                };
                let (sig, pidfile) = value.split_once(':').ok_or_else(err)?;
                let sig = sig.trim_start_matches("SIG").to_ascii_uppercase();
                if sig.is_empty()
                    || !sig.bytes().all(|b| b.is_ascii_alphanumeric())
                    || pidfile.is_empty()
                {
                    return Err(err());
                }
                Some((sig, PathBuf::from(pidfile)))
            }
            None => None,
        };
        let dest = if args.dest.is_absolute() {
            args.dest
        } else {
            std::env::current_dir()
                .map_err(|source| ArgsError::WorkingDir {
                    dest: args.dest.clone(),
                    source,
                })?
                .join(args.dest)
        };
        Ok(Config {
            source,
            tls,
            extract: args.extract,
            dest,
            link: args.link,
            mode: args.mode,
            file_name,
            keep: args.keep,
            period: args.period,
            one_time: args.one_time,
            max_failures: args.max_failures,
            retry_initial: args.retry_initial,
            retry_max: args.retry_max,
            timeout: args.timeout,
            limits: Limits {
                max_bytes: args.max_bytes,
                max_unpacked_bytes: args.max_unpacked_bytes,
                max_entries: args.max_entries,
                min_free: args.min_free,
                umask: args.umask,
            },
            sha256,
            headers,
            bearer_token_file: args.bearer_token_file,
            exec: args.exec,
            webhook,
            signal,
            health_addr: args.health_addr,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn parse(extra: &[&str]) -> Result<Config, String> {
        let argv = [
            "podkit-puller",
            "--url",
            "http://127.0.0.1:1/a.tgz",
            "--dest",
            "/d",
        ];
        let args = Args::try_parse_from(argv.iter().chain(extra)).map_err(|e| e.to_string())?;
        Config::try_from(args).map_err(|e| e.to_string())
    }

    /// Every sync is bounded without a flag: a download, what it unpacks to, its entries, the
    /// free space it leaves, and the modes it publishes.
    #[test]
    fn bounds_have_defaults() {
        let config = parse(&[]).expect("defaults");
        assert_eq!(
            config.limits,
            Limits {
                max_bytes: 1 << 30,
                max_unpacked_bytes: 2 << 30,
                max_entries: 100_000,
                min_free: MinFree::Percent(5),
                umask: 0o022,
            }
        );
        let config = parse(&[
            "--max-bytes",
            "64Mi",
            "--max-unpacked-bytes",
            "1G",
            "--max-entries",
            "10",
            "--min-free",
            "100M",
            "--umask",
            "0027",
        ])
        .expect("flags");
        assert_eq!(
            config.limits,
            Limits {
                max_bytes: 64 << 20,
                max_unpacked_bytes: 1 << 30,
                max_entries: 10,
                min_free: MinFree::Bytes(100 << 20),
                umask: 0o027,
            }
        );
    }

    #[test]
    fn bad_bounds_are_flag_errors() {
        for (flag, value) in [
            ("--max-bytes", "0"),
            ("--max-bytes", "lots"),
            ("--max-unpacked-bytes", "0"),
            ("--max-entries", "0"),
            ("--min-free", "100%"),
            ("--umask", "0999"),
            ("--umask", "1777"),
        ] {
            let err = parse(&[flag, value]).expect_err(value);
            assert!(
                err.contains(flag) || err.contains(value),
                "{flag} {value}: {err}"
            );
        }
    }
}
