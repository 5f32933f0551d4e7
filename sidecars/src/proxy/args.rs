//! The flags of `podkit proxy` (and `podkit-proxy`), with `PODKIT_PROXY_*` environment
//! fallbacks, and their conversion into a validated [`Config`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::client_tls::ClientTls;
use crate::proxy::route::{Route, Scheme, Upstream};
use crate::proxy::{AccessLog, Config, Limits, Timeouts, TlsFiles};

/// Reverse proxy in front of an app on localhost: HTTP/1.1, HTTP/2, TLS, routes by host and path prefix,
/// streamed bodies, an upstream keep-alive pool, access log and graceful drain.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "podkit-proxy", version)]
pub struct Args {
    /// Address to serve plain HTTP on (repeatable), e.g. `0.0.0.0:80` or `[::]:80`.
    #[arg(
        long = "listen",
        value_name = "ADDR",
        env = "PODKIT_PROXY_LISTEN",
        value_delimiter = ','
    )]
    pub listen: Vec<SocketAddr>,

    /// Address to serve HTTPS on (repeatable), HTTP/2 and HTTP/1.1 by ALPN; needs `--cert` and
    /// `--key`.
    #[arg(
        long = "listen-tls",
        value_name = "ADDR",
        env = "PODKIT_PROXY_LISTEN_TLS",
        value_delimiter = ',',
        requires_all = ["cert", "key"]
    )]
    pub listen_tls: Vec<SocketAddr>,

    /// PEM certificate chain for `--listen-tls`, leaf first; reloaded when the file changes.
    #[arg(long, value_name = "FILE", env = "PODKIT_PROXY_CERT")]
    pub cert: Option<PathBuf>,

    /// PEM private key for `--cert`; reloaded when the file changes.
    #[arg(long, value_name = "FILE", env = "PODKIT_PROXY_KEY")]
    pub key: Option<PathBuf>,

    /// Default upstream for requests no `--route` matches: `http://HOST:PORT` (HTTP/1.1),
    /// `h2c://HOST:PORT` (HTTP/2 with prior knowledge, e.g. gRPC), `https://HOST[:PORT]` (TLS,
    /// HTTP/2 or HTTP/1.1 by ALPN), `unix:/PATH` (HTTP/1.1 on a unix socket) or `file:///DIR`.
    #[arg(long, value_name = "URL", env = "PODKIT_PROXY_UPSTREAM")]
    pub upstream: Option<String>,

    /// A route `[HOST]/PREFIX=URL` (repeatable); the longest matching prefix wins, a route with
    /// a host wins over one without. E.g. `api.example.com/v1=http://127.0.0.1:8081`.
    #[arg(
        long = "route",
        value_name = "[HOST]/PREFIX=URL",
        env = "PODKIT_PROXY_ROUTE",
        value_delimiter = ','
    )]
    pub routes: Vec<String>,

    /// PEM CA certificates that `https://` upstreams' certificates must chain to, instead of
    /// the system's roots (/etc/ssl/certs).
    #[arg(long, value_name = "FILE", env = "PODKIT_PROXY_UPSTREAM_CA")]
    pub upstream_ca: Option<PathBuf>,

    /// PEM client certificate chain shown to `https://` upstreams that ask for one (mutual TLS).
    #[arg(
        long,
        value_name = "FILE",
        env = "PODKIT_PROXY_UPSTREAM_CLIENT_CERT",
        requires = "upstream_client_key"
    )]
    pub upstream_client_cert: Option<PathBuf>,

    /// PEM private key of `--upstream-client-cert`.
    #[arg(
        long,
        value_name = "FILE",
        env = "PODKIT_PROXY_UPSTREAM_CLIENT_KEY",
        requires = "upstream_client_cert"
    )]
    pub upstream_client_key: Option<PathBuf>,

    /// Access log on stdout: `combined` (nginx combined plus duration and flags), `json` or `off`.
    #[arg(
        long,
        value_enum,
        default_value = "combined",
        env = "PODKIT_PROXY_ACCESS_LOG"
    )]
    pub access_log: AccessLog,

    /// Keep X-Forwarded-For/-Proto/-Host sent by the client (only behind another trusted proxy);
    /// by default they are replaced.
    #[arg(long, env = "PODKIT_PROXY_TRUST_FORWARDED")]
    pub trust_forwarded: bool,

    /// How long a client may take to send a request head: the first one counted from the
    /// connection's start (after TLS), each later one from its first byte (nginx's
    /// `client_header_timeout`; slowloris guard).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration, env = "PODKIT_PROXY_HEADER_TIMEOUT")]
    pub header_timeout: Duration,

    /// How long a client may take to complete the TLS handshake on `--listen-tls` (nginx's
    /// `ssl_handshake_timeout`).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration, env = "PODKIT_PROXY_HANDSHAKE_TIMEOUT")]
    pub handshake_timeout: Duration,

    /// How long a client connection may stay open with no request in flight: HTTP/1.1 between
    /// requests, HTTP/2 without a stream (then GOAWAY) (nginx's `keepalive_timeout`).
    #[arg(long, value_name = "DURATION", default_value = "75s", value_parser = humantime::parse_duration, env = "PODKIT_PROXY_KEEPALIVE_TIMEOUT")]
    pub keepalive_timeout: Duration,

    /// How long writing a response to a client may make no progress before its connection
    /// (HTTP/1.1) or stream (HTTP/2) is closed and the upstream connection with it (nginx's
    /// `send_timeout`): a client that does not read cannot hold an upstream connection.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration, env = "PODKIT_PROXY_SEND_TIMEOUT")]
    pub send_timeout: Duration,

    /// Most requests (HTTP/2 streams) one client connection may carry; then it is closed
    /// after its last answer (HTTP/1.1) or told GOAWAY (HTTP/2) (nginx's `keepalive_requests`).
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..), env = "PODKIT_PROXY_MAX_REQUESTS_PER_CONNECTION")]
    pub max_requests_per_connection: u64,

    /// How long connecting to an upstream may take before 502.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration, env = "PODKIT_PROXY_CONNECT_TIMEOUT")]
    pub connect_timeout: Duration,

    /// How long an upstream may take to send its response headers before 504: for `http://`
    /// and `unix:`, any wait without progress (request head or body not taken, no head, then
    /// no more of the body, which cuts it); for `h2c://` and `https://`, from the start.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration, env = "PODKIT_PROXY_UPSTREAM_TIMEOUT")]
    pub upstream_timeout: Duration,

    /// Idle upstream connections are closed after this long. Keep it below the app's keep-alive
    /// timeout (Node 5s, gunicorn 2s) so the proxy never reuses a connection the app is closing.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration, env = "PODKIT_PROXY_UPSTREAM_IDLE_TIMEOUT")]
    pub upstream_idle_timeout: Duration,

    /// Largest request head (request line plus headers) in bytes; larger gets 431.
    #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024, env = "PODKIT_PROXY_MAX_HEADER_BYTES")]
    pub max_header_bytes: usize,

    /// Most header fields in a request head; more get 431.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 100,
        env = "PODKIT_PROXY_MAX_HEADERS"
    )]
    pub max_headers: usize,

    /// Most client connections open at once; more wait in the listen backlog.
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..), env = "PODKIT_PROXY_MAX_CONNECTIONS")]
    pub max_connections: u32,

    /// Largest request body in bytes; a larger Content-Length gets 413, a larger streamed body
    /// is cut. `0` means no limit.
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = 0,
        env = "PODKIT_PROXY_MAX_BODY_BYTES"
    )]
    pub max_body_bytes: u64,

    /// On SIGTERM, how long requests in flight may take to finish before their connections
    /// are cut.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration, env = "PODKIT_PROXY_DRAIN_TIMEOUT")]
    pub drain_timeout: Duration,

    /// YAML file of settings, keys named as the flags (`listen: [":80"]`, `drain-timeout: 20s`,
    /// `route: ["/api=http://127.0.0.1:8081"]`); flags and `PODKIT_PROXY_*` win over it. Read by
    /// [`Args::load_from`].
    #[arg(long, value_name = "FILE", env = "PODKIT_PROXY_CONFIG")]
    pub config: Option<PathBuf>,

    /// Threads serving connections; `0` is one per CPU this process may run on (its affinity,
    /// as `taskset` sets it).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 0,
        env = "PODKIT_PROXY_WORKERS"
    )]
    pub workers: usize,

    /// Serve `/healthz`, `/readyz` and `/metrics` on this address.
    #[arg(long, value_name = "ADDR", env = "PODKIT_PROXY_HEALTH_ADDR")]
    pub health_addr: Option<SocketAddr>,
}

/// Why `--config` could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The flags themselves are wrong (clap's message, with usage).
    #[error(transparent)]
    Flags(#[from] clap::Error),
    /// The file could not be read.
    #[error("failed to read --config {path:?}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a YAML mapping of flag names to values.
    #[error("failed to parse --config {path:?} as YAML")]
    Yaml {
        /// The file.
        path: PathBuf,
        /// Cause (boxed: the parser's error is large).
        #[source]
        source: Box<serde_saphyr::Error>,
    },
    /// A key names no flag, or its value has the wrong shape.
    #[error("invalid key {key:?} in --config {path:?}: {reason}")]
    Key {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// What is wrong.
        reason: &'static str,
    },
}

impl Args {
    /// Parses `argv` (program name first) and fills every setting that neither a flag nor a
    /// `PODKIT_PROXY_*` variable gave from the YAML file of `--config`, if any.
    pub fn load_from<I, T>(argv: I) -> Result<Self, LoadError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::{CommandFactory, FromArgMatches};

        let mut argv: Vec<std::ffi::OsString> = argv.into_iter().map(Into::into).collect();
        let matches = Self::command().try_get_matches_from(&argv)?;
        let Some(path) = matches.get_one::<PathBuf>("config").cloned() else {
            return Ok(Self::from_arg_matches(&matches)?);
        };
        let text = std::fs::read_to_string(&path).map_err(|source| LoadError::Read {
            path: path.clone(),
            source,
        })?;
        let settings: std::collections::BTreeMap<String, serde_json::Value> =
            serde_saphyr::from_str(&text).map_err(|source| LoadError::Yaml {
                path: path.clone(),
                source: Box::new(source),
            })?;
        let command = Self::command();
        for (key, value) in settings {
            let bad = |reason| LoadError::Key {
                path: path.clone(),
                key: key.clone(),
                reason,
            };
            let long = key.replace('_', "-");
            let arg = command
                .get_arguments()
                .find(|a| a.get_long() == Some(long.as_str()))
                .ok_or_else(|| bad("no such flag"))?;
            let id = arg.get_id().as_str();
            if id == "config" {
                return Err(bad("a config file cannot name another"));
            }
            // Flags and the environment win over the file.
            if matches!(
                matches.value_source(id),
                Some(
                    clap::parser::ValueSource::CommandLine | clap::parser::ValueSource::EnvVariable
                )
            ) {
                continue;
            }
            let flag = format!("--{}", arg.get_long().unwrap_or_default());
            let scalar = |v: &serde_json::Value| match v {
                serde_json::Value::String(s) => Ok(s.clone()),
                serde_json::Value::Number(n) => Ok(n.to_string()),
                _ => Err(bad("expected a string or number")),
            };
            match value {
                serde_json::Value::Bool(true) if !arg.get_action().takes_values() => {
                    argv.push(flag.into());
                }
                serde_json::Value::Bool(false) if !arg.get_action().takes_values() => {}
                serde_json::Value::Array(items) => {
                    for item in &items {
                        argv.push(flag.clone().into());
                        argv.push(scalar(item)?.into());
                    }
                }
                other => {
                    argv.push(flag.into());
                    argv.push(scalar(&other)?.into());
                }
            }
        }
        Ok(Self::from_arg_matches(
            &Self::command().try_get_matches_from(&argv)?,
        )?)
    }
}

/// A flag that does not make a valid configuration.
#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    /// A `--route` is not `[HOST]/PREFIX=URL`.
    #[error(
        "invalid --route {route:?}: expected [HOST]/PREFIX=URL, e.g. /api=http://127.0.0.1:8081"
    )]
    Route {
        /// The flag's value.
        route: String,
    },
    /// An upstream URL is not usable.
    #[error("invalid {flag} URL {url:?}: {reason}")]
    Upstream {
        /// `--upstream` or `--route`.
        flag: &'static str,
        /// The URL.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Only one of the pair.
    #[error("--cert and --key go together")]
    CertWithoutKey,
    /// Only one of the pair.
    #[error("--upstream-client-cert and --upstream-client-key go together")]
    ClientCertWithoutKey,
    /// Nothing to listen on.
    #[error("no listener: give --listen ADDR or --listen-tls ADDR")]
    NoListener,
    /// Nothing to forward to.
    #[error("no upstream: give --upstream URL or at least one --route")]
    NoUpstream,
}

/// Parses an upstream URL: `http://`, `h2c://` or `https://HOST[:PORT]` (path empty or `/`),
/// `unix:/PATH` or `file:///DIR`.
fn upstream(flag: &'static str, url: &str) -> Result<Upstream, ArgsError> {
    let err = |reason| ArgsError::Upstream {
        flag,
        url: url.to_owned(),
        reason,
    };
    if let Some(path) = url.strip_prefix("unix:") {
        if !path.starts_with('/') {
            return Err(err(
                "a unix upstream needs an absolute socket path: unix:/PATH",
            ));
        }
        return Ok(Upstream::Unix(PathBuf::from(path)));
    }
    if let Some(dir) = url.strip_prefix("file://") {
        if !dir.starts_with('/') {
            return Err(err("a file upstream needs an absolute path: file:///DIR"));
        }
        return Ok(Upstream::File(PathBuf::from(dir)));
    }
    let uri: hyper::Uri = url.parse().map_err(|_| err("not a URL"))?;
    let (scheme, default_port) = match uri.scheme_str() {
        Some("http") => (Scheme::Http, 80),
        Some("h2c") => (Scheme::H2c, 80),
        Some("https") => (Scheme::Https, 443),
        Some(_) => {
            return Err(err(
                "only http://, h2c://, https://, unix:/ and file:/// upstreams are supported",
            ));
        }
        None => return Err(err("missing scheme: use http://HOST:PORT")),
    };
    let Some(authority) = uri.authority() else {
        return Err(err("missing host"));
    };
    if authority.as_str().contains('@') {
        return Err(err("an upstream takes no user name or password"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(err(
            "an http upstream takes no path: the request path is forwarded unchanged",
        ));
    }
    // The port made explicit: the connectors dial what the authority says.
    let authority = match authority.port_u16() {
        Some(_) => authority.clone(),
        None => format!("{}:{default_port}", authority.host())
            .parse()
            .map_err(|_| err("not a valid host"))?,
    };
    Ok(Upstream::Http { scheme, authority })
}

fn route(value: &str) -> Result<Route, ArgsError> {
    let bad = || ArgsError::Route {
        route: value.to_owned(),
    };
    let (matcher, url) = value.split_once('=').ok_or_else(bad)?;
    let slash = matcher.find('/').ok_or_else(bad)?;
    let (host, prefix) = matcher.split_at(slash);
    Ok(Route {
        host: (!host.is_empty()).then(|| host.to_ascii_lowercase()),
        prefix: prefix.to_owned(),
        upstream: upstream("--route", url)?,
    })
}

impl TryFrom<Args> for Config {
    type Error = ArgsError;

    fn try_from(args: Args) -> Result<Self, ArgsError> {
        let mut routes = args
            .routes
            .iter()
            .map(|r| route(r))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(url) = &args.upstream {
            routes.push(Route {
                host: None,
                prefix: "/".to_owned(),
                upstream: upstream("--upstream", url)?,
            });
        }
        if routes.is_empty() {
            return Err(ArgsError::NoUpstream);
        }
        if args.listen.is_empty() && args.listen_tls.is_empty() {
            return Err(ArgsError::NoListener);
        }
        let upstream_tls = ClientTls {
            ca_file: args.upstream_ca,
            identity: match (args.upstream_client_cert, args.upstream_client_key) {
                (Some(cert), Some(key)) => Some((cert, key)),
                (None, None) => None,
                _ => return Err(ArgsError::ClientCertWithoutKey),
            },
        };
        let tls = match (args.cert, args.key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            _ => return Err(ArgsError::CertWithoutKey),
        };
        Ok(Config {
            listen: args.listen,
            listen_tls: args.listen_tls,
            tls,
            routes,
            upstream_tls,
            access_log: args.access_log,
            trust_forwarded: args.trust_forwarded,
            timeouts: Timeouts {
                header: args.header_timeout,
                handshake: args.handshake_timeout,
                keepalive: args.keepalive_timeout,
                send: args.send_timeout,
                connect: args.connect_timeout,
                upstream: args.upstream_timeout,
                upstream_idle: args.upstream_idle_timeout,
            },
            limits: Limits {
                max_header_bytes: args.max_header_bytes,
                max_headers: args.max_headers,
                max_connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
                max_requests_per_connection: args.max_requests_per_connection,
                max_body_bytes: (args.max_body_bytes > 0).then_some(args.max_body_bytes),
            },
            drain_timeout: args.drain_timeout,
            health_addr: args.health_addr,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn config(argv: &[&str]) -> Result<Config, ArgsError> {
        let mut full = vec!["podkit-proxy", "--listen", "127.0.0.1:0"];
        full.extend_from_slice(argv);
        Config::try_from(Args::try_parse_from(full).expect("flags parse"))
    }

    #[test]
    fn routes_and_upstream() {
        let config = config(&[
            "--upstream",
            "http://127.0.0.1:2368",
            "--route",
            "Api.Example.com/v1=http://127.0.0.1:8081/",
            "--route",
            "/static=file:///srv/www",
        ])
        .expect("valid");
        assert_eq!(config.routes.len(), 3);
        assert_eq!(config.routes[0].host.as_deref(), Some("api.example.com"));
        assert_eq!(config.routes[0].prefix, "/v1");
        assert_eq!(
            config.routes[1].upstream,
            Upstream::File(PathBuf::from("/srv/www"))
        );
        assert_eq!(config.routes[2].prefix, "/");
    }

    #[test]
    fn upstream_schemes_and_default_ports() {
        for (url, want_scheme, want) in [
            ("http://app", Scheme::Http, "app:80"),
            ("h2c://127.0.0.1:50051", Scheme::H2c, "127.0.0.1:50051"),
            (
                "https://api.example.com/",
                Scheme::Https,
                "api.example.com:443",
            ),
            ("https://[::1]:8443", Scheme::Https, "[::1]:8443"),
        ] {
            match upstream("--upstream", url).expect(url) {
                Upstream::Http { scheme, authority } => {
                    assert_eq!((scheme, authority.as_str()), (want_scheme, want), "{url}");
                }
                other => panic!("{url}: {other:?}"),
            }
        }
        let err = upstream("--upstream", "https://user:pw@x").expect_err("credentials");
        assert!(err.to_string().contains("user name"), "{err}");
    }

    #[test]
    fn config_file_fills_what_flags_and_env_leave() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("proxy.yaml");
        std::fs::write(
            &file,
            "listen: [\"127.0.0.1:8080\", \"127.0.0.1:8081\"]\n\
             upstream: http://127.0.0.1:2368\n\
             route:\n  - /static=file:///srv/www\n\
             drain-timeout: 20s\n\
             max-headers: 50\n\
             trust-forwarded: true\n",
        )
        .expect("write");
        let path = file.to_str().expect("utf-8");
        let args = Args::load_from(["podkit-proxy", "--config", path, "--max-headers", "70"])
            .expect("loads");
        assert_eq!(args.listen.len(), 2);
        assert_eq!(args.routes, ["/static=file:///srv/www"]);
        assert_eq!(args.drain_timeout, Duration::from_secs(20));
        assert_eq!(args.max_headers, 70, "the flag wins");
        assert!(args.trust_forwarded);
        let config = Config::try_from(args).expect("valid");
        assert_eq!(config.routes.len(), 2);

        std::fs::write(&file, "listn: [\":80\"]\n").expect("write");
        let err = Args::load_from(["podkit-proxy", "--config", path]).expect_err("typo");
        assert!(err.to_string().contains("\"listn\""), "{err}");
    }

    #[test]
    fn errors_name_the_flag() {
        let err = config(&["--upstream", "ftp://x:1"]).expect_err("ftp refused");
        assert!(err.to_string().contains("--upstream"), "{err}");
        let err = config(&["--route", "nope"]).expect_err("bad route");
        assert!(err.to_string().contains("--route"), "{err}");
        let err = config(&["--upstream", "http://x:1/app"]).expect_err("path refused");
        assert!(err.to_string().contains("path"), "{err}");
        assert!(matches!(config(&[]), Err(ArgsError::NoUpstream)));
    }
}
