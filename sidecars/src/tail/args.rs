//! The flags of `podkit tail` (and `podkit-tail`), with `PODKIT_TAIL_*` environment fallbacks,
//! and their conversion into a validated [`Config`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::client_tls::ClientTls;
use crate::tail::{BatchConfig, Config, Format, Output, ReadFrom, RetryConfig, SinkConfig};

/// Follow log files through rotation and ship every line.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "podkit-tail", version)]
pub struct Args {
    /// Glob of files to follow (repeatable; `**` crosses directories). Files that appear later
    /// are picked up.
    #[arg(
        long = "path",
        value_name = "GLOB",
        required = true,
        env = "PODKIT_TAIL_PATH",
        value_delimiter = ','
    )]
    pub paths: Vec<String>,

    /// Glob of files never to follow (repeatable), e.g. `*.gz`.
    #[arg(
        long,
        value_name = "GLOB",
        env = "PODKIT_TAIL_EXCLUDE",
        value_delimiter = ','
    )]
    pub exclude: Vec<String>,

    /// Where to start in files found at startup; a checkpoint in `--state` wins.
    #[arg(
        long,
        value_enum,
        default_value = "head",
        env = "PODKIT_TAIL_READ_FROM"
    )]
    pub read_from: ReadFrom,

    /// State file keeping the offsets, so a restart resumes where it stopped.
    #[arg(long, value_name = "FILE", env = "PODKIT_TAIL_STATE")]
    pub state: Option<PathBuf>,

    /// Ship a partial last line (no newline yet) or a multiline record once it has not grown for
    /// this long, e.g. `5s`. Without it partial lines wait for their newline and multiline
    /// records wait `1s`.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, env = "PODKIT_TAIL_FLUSH_AFTER")]
    pub flush_after: Option<Duration>,

    /// A line matching this regex starts a record; other lines are joined to it (stack traces).
    #[arg(long, value_name = "REGEX", env = "PODKIT_TAIL_MULTILINE_START")]
    pub multiline_start: Option<String>,

    /// Longer lines are split into parts of at most this many bytes (none is dropped).
    #[arg(long, value_name = "BYTES", default_value_t = 256 * 1024, env = "PODKIT_TAIL_MAX_LINE_BYTES")]
    pub max_line_bytes: usize,

    /// Input format.
    #[arg(long, value_enum, default_value = "raw", env = "PODKIT_TAIL_FORMAT")]
    pub format: Format,

    /// How the stdout sink prints records (`json` adds file, offset and time).
    #[arg(long, value_enum, default_value = "raw", env = "PODKIT_TAIL_OUTPUT")]
    pub output: Output,

    /// Ship to this URL (`http://` or `https://`) as gzip-compressed JSON lines (POST), instead
    /// of stdout.
    #[arg(long, value_name = "URL", env = "PODKIT_TAIL_HTTP", conflicts_with_all = ["loki", "elasticsearch"])]
    pub http: Option<String>,

    /// Ship to Loki (push API, JSON), e.g. `http://127.0.0.1:3100` or `https://...`.
    #[arg(
        long,
        value_name = "URL",
        env = "PODKIT_TAIL_LOKI",
        conflicts_with = "elasticsearch"
    )]
    pub loki: Option<String>,

    /// A Loki stream label `k=v` (repeatable); `filename` is always set.
    #[arg(
        long = "label",
        value_name = "K=V",
        env = "PODKIT_TAIL_LABEL",
        value_delimiter = ','
    )]
    pub labels: Vec<String>,

    /// Ship to Elasticsearch (`_bulk`, NDJSON), e.g. `http://127.0.0.1:9200` or `https://...`.
    #[arg(long, value_name = "URL", env = "PODKIT_TAIL_ELASTICSEARCH")]
    pub elasticsearch: Option<String>,

    /// Elasticsearch index.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "podkit-logs",
        env = "PODKIT_TAIL_ES_INDEX"
    )]
    pub es_index: String,

    /// For an `https://` sink: trust only the CA certificates of this PEM file (default: the
    /// system's roots).
    #[arg(long, value_name = "FILE", env = "PODKIT_TAIL_CA_FILE")]
    pub ca_file: Option<PathBuf>,

    /// For an `https://` sink that asks for one: a PEM client certificate (chain).
    #[arg(
        long,
        value_name = "FILE",
        env = "PODKIT_TAIL_CLIENT_CERT",
        requires = "client_key"
    )]
    pub client_cert: Option<PathBuf>,

    /// The PEM private key of `--client-cert`.
    #[arg(
        long,
        value_name = "FILE",
        env = "PODKIT_TAIL_CLIENT_KEY",
        requires = "client_cert"
    )]
    pub client_key: Option<PathBuf>,

    /// Most records in one batch.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1000,
        env = "PODKIT_TAIL_BATCH_LINES"
    )]
    pub batch_lines: usize,

    /// Most message bytes in one batch.
    #[arg(long, value_name = "BYTES", default_value_t = 1024 * 1024, env = "PODKIT_TAIL_BATCH_BYTES")]
    pub batch_bytes: usize,

    /// How long a batch waits for more records; default `0s` for stdout, `200ms` for HTTP sinks.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, env = "PODKIT_TAIL_BATCH_TIMEOUT")]
    pub batch_timeout: Option<Duration>,

    /// First wait before retrying a failed send; it doubles up to `--retry-max`.
    #[arg(long, value_name = "DURATION", default_value = "100ms", value_parser = humantime::parse_duration, env = "PODKIT_TAIL_RETRY_INITIAL")]
    pub retry_initial: Duration,

    /// Longest wait between retries (sends are retried forever; reading pauses meanwhile).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration, env = "PODKIT_TAIL_RETRY_MAX")]
    pub retry_max: Duration,

    /// Timeout of one HTTP request.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration, env = "PODKIT_TAIL_REQUEST_TIMEOUT")]
    pub request_timeout: Duration,

    /// Rescan and read everything this often (inotify wakes the tailer sooner).
    #[arg(long, value_name = "DURATION", default_value = "250ms", value_parser = humantime::parse_duration, env = "PODKIT_TAIL_POLL_INTERVAL")]
    pub poll_interval: Duration,

    /// A rotated (renamed or deleted) file is read until it has been quiet this long.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration, env = "PODKIT_TAIL_ROTATE_WAIT")]
    pub rotate_wait: Duration,

    /// A followed file at its end that has not grown for this long has its descriptor closed
    /// (it is opened again as soon as it changes).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration, env = "PODKIT_TAIL_CLOSE_INACTIVE")]
    pub close_inactive: Duration,

    /// Follow symbolic links to files, only to targets inside a base directory of the `--path`
    /// globs (the part before the first `*`). Off by default: a pod member that can write the
    /// log directory could link any file there.
    #[arg(long, env = "PODKIT_TAIL_FOLLOW_SYMLINKS")]
    pub follow_symlinks: bool,

    /// `/healthz` fails when an open or a read of a log file has not returned for this long
    /// (a hung network file system, a FUSE server that does not answer).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration, env = "PODKIT_TAIL_STALL_TIMEOUT")]
    pub stall_timeout: Duration,

    /// How often `--state` is written (also on shutdown).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration, env = "PODKIT_TAIL_CHECKPOINT_INTERVAL")]
    pub checkpoint_interval: Duration,

    /// On SIGTERM, how long read lines may take to reach the sink before the tailer exits.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration, env = "PODKIT_TAIL_DRAIN_TIMEOUT")]
    pub drain_timeout: Duration,

    /// Read chunks (1024 records or 256 KiB each, plus at most one read) that may wait for the
    /// sink.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 16,
        env = "PODKIT_TAIL_BUFFER_CHUNKS"
    )]
    pub buffer_chunks: usize,

    /// Serve `/healthz`, `/readyz` and `/metrics` here, e.g. `127.0.0.1:9102`.
    #[arg(long, value_name = "ADDR", env = "PODKIT_TAIL_HEALTH_ADDR")]
    pub health_addr: Option<SocketAddr>,
}

/// A flag whose value is valid on its own but not usable.
#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    /// A glob does not parse.
    #[error("invalid {flag} {glob:?}: {source}")]
    Glob {
        /// `--path` or `--exclude`.
        flag: &'static str,
        /// The glob.
        glob: String,
        /// Cause.
        #[source]
        source: globset::Error,
    },
    /// A relative glob needs the working directory.
    #[error("failed to resolve relative {flag} {glob:?} against the working directory")]
    WorkingDir {
        /// `--path` or `--exclude`.
        flag: &'static str,
        /// The glob.
        glob: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// `--multiline-start` is not a regex.
    #[error("invalid --multiline-start {regex:?}")]
    Regex {
        /// The value.
        regex: String,
        /// Cause.
        #[source]
        source: regex::Error,
    },
    /// A sink URL does not parse or is not `http://` or `https://`.
    #[error(
        "invalid {flag} {url:?}: expected an http:// or https:// URL such as http://127.0.0.1:3100"
    )]
    Url {
        /// The flag.
        flag: &'static str,
        /// The value.
        url: String,
    },
    /// `--label` without `=`.
    #[error("invalid --label {label:?}: expected k=v")]
    Label {
        /// The value.
        label: String,
    },
    /// `--label` without `--loki`.
    #[error("--label only applies to --loki")]
    LabelWithoutLoki,
    /// A TLS flag without an `https://` sink.
    #[error("{flag} only applies to an https:// --http, --loki or --elasticsearch URL")]
    TlsWithoutHttps {
        /// The flag.
        flag: &'static str,
    },
    /// A zero where a positive number is needed.
    #[error("invalid {flag} 0: must be at least 1")]
    Zero {
        /// The flag.
        flag: &'static str,
    },
}

fn absolute(flag: &'static str, glob: String) -> Result<String, ArgsError> {
    if glob.starts_with('/') {
        return Ok(glob);
    }
    let cwd = std::env::current_dir().map_err(|source| ArgsError::WorkingDir {
        flag,
        glob: glob.clone(),
        source,
    })?;
    Ok(format!(
        "{}/{}",
        cwd.display(),
        glob.trim_start_matches("./")
    ))
}

fn check_glob(flag: &'static str, glob: &str) -> Result<(), ArgsError> {
    globset::Glob::new(glob)
        .map(drop)
        .map_err(|source| ArgsError::Glob {
            flag,
            glob: glob.to_owned(),
            source,
        })
}

fn url(flag: &'static str, url: &str) -> Result<hyper::Uri, ArgsError> {
    let err = || ArgsError::Url {
        flag,
        url: url.to_owned(),
    };
    let uri: hyper::Uri = url.parse().map_err(|_| err())?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
        return Err(err());
    }
    Ok(uri)
}

impl TryFrom<Args> for Config {
    type Error = ArgsError;

    fn try_from(args: Args) -> Result<Self, ArgsError> {
        let mut paths = Vec::new();
        for glob in args.paths {
            check_glob("--path", &glob)?;
            paths.push(absolute("--path", glob)?);
        }
        let mut exclude = Vec::new();
        for glob in args.exclude {
            check_glob("--exclude", &glob)?;
            // `*.gz` should exclude in any directory, as a user expects.
            exclude.push(if glob.contains('/') {
                absolute("--exclude", glob)?
            } else {
                format!("**/{glob}")
            });
        }
        let multiline_start = args
            .multiline_start
            .map(|r| regex::Regex::new(&r).map_err(|source| ArgsError::Regex { regex: r, source }))
            .transpose()?;
        let mut labels = Vec::new();
        for label in &args.labels {
            let (k, v) = label.split_once('=').ok_or_else(|| ArgsError::Label {
                label: label.clone(),
            })?;
            labels.push((k.to_owned(), v.to_owned()));
        }
        if !labels.is_empty() && args.loki.is_none() {
            return Err(ArgsError::LabelWithoutLoki);
        }
        let sink = if let Some(u) = &args.http {
            SinkConfig::Http {
                url: url("--http", u)?,
            }
        } else if let Some(u) = &args.loki {
            SinkConfig::Loki {
                url: url("--loki", u)?,
                labels,
            }
        } else if let Some(u) = &args.elasticsearch {
            SinkConfig::Elasticsearch {
                url: url("--elasticsearch", u)?,
                index: args.es_index.clone(),
            }
        } else {
            SinkConfig::Stdout {
                output: args.output,
            }
        };
        let https = match &sink {
            SinkConfig::Stdout { .. } => false,
            SinkConfig::Http { url }
            | SinkConfig::Loki { url, .. }
            | SinkConfig::Elasticsearch { url, .. } => url.scheme_str() == Some("https"),
        };
        for (flag, given) in [
            ("--ca-file", args.ca_file.is_some()),
            ("--client-cert", args.client_cert.is_some()),
        ] {
            if given && !https {
                return Err(ArgsError::TlsWithoutHttps { flag });
            }
        }
        let tls = ClientTls {
            ca_file: args.ca_file,
            identity: args.client_cert.zip(args.client_key),
        };
        for (flag, value) in [
            ("--max-line-bytes", args.max_line_bytes),
            ("--batch-lines", args.batch_lines),
            ("--batch-bytes", args.batch_bytes),
            ("--buffer-chunks", args.buffer_chunks),
        ] {
            if value == 0 {
                return Err(ArgsError::Zero { flag });
            }
        }
        let default_timeout = match sink {
            SinkConfig::Stdout { .. } => Duration::ZERO,
            _ => Duration::from_millis(200),
        };
        Ok(Config {
            paths,
            exclude,
            read_from: args.read_from,
            state: args.state,
            flush_after: args.flush_after,
            multiline_start,
            max_line_bytes: args.max_line_bytes,
            format: args.format,
            sink,
            tls,
            batch: BatchConfig {
                max_lines: args.batch_lines,
                max_bytes: args.batch_bytes,
                timeout: args.batch_timeout.unwrap_or(default_timeout),
            },
            retry: RetryConfig {
                initial: args.retry_initial,
                max: args.retry_max.max(args.retry_initial),
            },
            poll_interval: args.poll_interval,
            rotate_wait: args.rotate_wait,
            close_inactive: args.close_inactive,
            follow_symlinks: args.follow_symlinks,
            stall_timeout: args.stall_timeout,
            checkpoint_interval: args.checkpoint_interval,
            drain_timeout: args.drain_timeout,
            request_timeout: args.request_timeout,
            health_addr: args.health_addr,
            buffer_chunks: args.buffer_chunks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn config(argv: &[&str]) -> Result<Config, ArgsError> {
        let mut full = vec!["podkit-tail"];
        full.extend_from_slice(argv);
        Config::try_from(Args::parse_from(full))
    }

    #[test]
    fn errors_name_the_flag() {
        let err = config(&["--path", "/x/["]).expect_err("glob");
        assert!(err.to_string().contains("--path"), "{err}");
        let err = config(&["--path", "/x/*.log", "--loki", "ftp://x"]).expect_err("scheme");
        assert!(err.to_string().contains("--loki"), "{err}");
        let err = config(&["--path", "/x/*.log", "--multiline-start", "("]).expect_err("regex");
        assert!(err.to_string().contains("--multiline-start"), "{err}");
        let err = config(&["--path", "/x/*.log", "--label", "k=v"]).expect_err("label");
        assert!(err.to_string().contains("--label"), "{err}");
        let err = config(&[
            "--path",
            "/x/*.log",
            "--http",
            "http://127.0.0.1:1",
            "--ca-file",
            "/ca.pem",
        ])
        .expect_err("--ca-file without https");
        assert!(
            err.to_string().starts_with("--ca-file only applies"),
            "{err}"
        );
    }

    #[test]
    fn https_sinks_take_tls_flags() {
        let c = config(&[
            "--path",
            "/x/*.log",
            "--elasticsearch",
            "https://127.0.0.1:9200",
            "--ca-file",
            "/ca.pem",
            "--client-cert",
            "/c.pem",
            "--client-key",
            "/k.pem",
        ])
        .expect("valid");
        assert_eq!(
            c.tls.ca_file.as_deref(),
            Some(std::path::Path::new("/ca.pem"))
        );
        assert!(c.tls.identity.is_some());
    }

    #[test]
    fn defaults_and_durations() {
        let c = config(&[
            "--path",
            "/x/*.log",
            "--flush-after",
            "200ms",
            "--loki",
            "http://127.0.0.1:3100",
            "--label",
            "app=web",
        ])
        .expect("valid");
        assert_eq!(c.flush_after, Some(Duration::from_millis(200)));
        assert_eq!(c.batch.timeout, Duration::from_millis(200));
        assert!(
            matches!(c.sink, SinkConfig::Loki { ref labels, .. } if labels == &[("app".to_owned(), "web".to_owned())])
        );
        let c = config(&["--path", "rel/*.log", "--exclude", "*.gz"]).expect("valid");
        assert!(c.paths[0].starts_with('/'));
        assert_eq!(c.exclude, ["**/*.gz"]);
    }
}
