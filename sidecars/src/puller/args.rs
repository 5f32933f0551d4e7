//! The flags of `podkit puller` (and `podkit-puller`), with `PODKIT_PULLER_*` environment
//! fallbacks, and their conversion into a validated [`Config`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use hyper::header::{HeaderName, HeaderValue};

use crate::puller::{Config, Extract, Mode, Source};

/// Keep a shared volume up to date with a remote file or archive, published atomically.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "podkit-puller", version)]
pub struct Args {
    /// What to fetch: `http://host/path` (a file, or a .tar/.tar.gz/.tgz/.zip archive) or
    /// `file:///path` (a file, or a directory published as a tree).
    #[arg(long, value_name = "URL", env = "PODKIT_PULLER_URL")]
    pub url: String,

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
    /// sniffed).
    #[arg(
        long,
        value_enum,
        default_value = "auto",
        env = "PODKIT_PULLER_EXTRACT"
    )]
    pub extract: Extract,

    /// File name of a downloaded file that is not unpacked; default: the URL's last segment.
    #[arg(long, value_name = "NAME", env = "PODKIT_PULLER_FILE_NAME")]
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

    /// Refuse downloads larger than this many bytes.
    #[arg(long, value_name = "BYTES", env = "PODKIT_PULLER_MAX_BYTES")]
    pub max_bytes: Option<u64>,

    /// Expected sha256 of the download (hex); anything else is not published.
    #[arg(long, value_name = "HEX", env = "PODKIT_PULLER_SHA256")]
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
    /// `--url` is neither `http://` nor `file://`.
    #[error(
        "invalid --url {url:?}: expected http://host[:port]/path or file:///absolute/path ({why})"
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
    if url.starts_with("https://") {
        return Err(err("https:// is not supported yet"));
    }
    let uri: hyper::Uri = url.parse().map_err(|_| err("not a URL"))?;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
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
        let source = source(&args.url)?;
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
            max_bytes: args.max_bytes,
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
