//! The route table: which upstream serves a request, by host and longest path prefix.

use std::path::PathBuf;
use std::sync::Arc;

/// How a route speaks to an HTTP upstream, from its URL's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `http://`: HTTP/1.1 over TCP.
    Http,
    /// `h2c://`: HTTP/2 over TCP with prior knowledge (gRPC servers and other h2-only apps).
    H2c,
    /// `https://`: TLS, HTTP/2 or HTTP/1.1 as the server picks by ALPN.
    Https,
}

/// Where a route sends its requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// An HTTP server; the request path is forwarded unchanged.
    Http {
        /// The protocol.
        scheme: Scheme,
        /// `host:port` to connect to (the port defaults to 80, or 443 for `https://`).
        authority: hyper::http::uri::Authority,
    },
    /// An HTTP/1.1 server on a unix socket (`unix:/PATH`).
    Unix(PathBuf),
    /// Static files under a directory.
    File(PathBuf),
}

impl Upstream {
    /// How the access log names it: `127.0.0.1:8081` (as nginx's `$upstream_addr`),
    /// `h2c://...`, `https://...`, `unix:/PATH`, `file:///DIR`.
    pub fn label(&self) -> String {
        match self {
            Self::Http {
                scheme: Scheme::Http,
                authority,
            } => authority.to_string(),
            Self::Http {
                scheme: Scheme::H2c,
                authority,
            } => format!("h2c://{authority}"),
            Self::Http {
                scheme: Scheme::Https,
                authority,
            } => format!("https://{authority}"),
            Self::Unix(path) => format!("unix:{}", path.display()),
            Self::File(dir) => format!("file://{}", dir.display()),
        }
    }
}

/// One `--route` (or `--upstream`, which is the route `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Lower-case host the request's Host must equal (port ignored); `None` matches any host.
    pub host: Option<String>,
    /// Path prefix, matched on segment boundaries (`/api` matches `/api` and `/api/x`, not
    /// `/apix`).
    pub prefix: String,
    /// Where matching requests go.
    pub upstream: Upstream,
}

impl Route {
    fn matches_path(&self, path: &str) -> bool {
        let prefix = self.prefix.trim_end_matches('/');
        match path.strip_prefix(prefix) {
            Some(rest) => rest.is_empty() || rest.starts_with('/') || prefix.is_empty(),
            None => false,
        }
    }
}

/// The routes, ordered so the first match is the best one.
#[derive(Debug, Clone)]
pub struct Table {
    routes: Vec<Route>,
    /// `Upstream::label` of each route, made once.
    labels: Vec<Arc<str>>,
}

impl Table {
    /// Orders the routes: host routes first, then the longest prefix.
    pub fn new(mut routes: Vec<Route>) -> Self {
        routes.sort_by_key(|r| {
            (
                std::cmp::Reverse(r.host.is_some()),
                std::cmp::Reverse(r.prefix.trim_end_matches('/').len()),
            )
        });
        let labels = routes.iter().map(|r| r.upstream.label().into()).collect();
        Self { routes, labels }
    }

    /// The route for a request with this Host header (may carry a port) and path.
    #[cfg(test)]
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<&Route> {
        self.find_labeled(host, path).map(|(route, _)| route)
    }

    /// The route for a request with this Host header (may carry a port) and path, with its
    /// upstream's label.
    pub fn find_labeled(&self, host: Option<&str>, path: &str) -> Option<(&Route, &Arc<str>)> {
        // The name without its port, compared without case (no allocation per request).
        let host = host.map(|h| match h.rsplit_once(':') {
            Some((name, port)) if !name.ends_with(']') || port.is_empty() => {
                if port.bytes().all(|b| b.is_ascii_digit()) {
                    name
                } else {
                    h
                }
            }
            Some((name, _)) => name,
            None => h,
        });
        self.routes.iter().zip(&self.labels).find(|(r, _)| {
            r.host
                .as_deref()
                .is_none_or(|want| host.is_some_and(|h| h.eq_ignore_ascii_case(want)))
                && r.matches_path(path)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(host: Option<&str>, prefix: &str, port: u16) -> Route {
        Route {
            host: host.map(str::to_owned),
            prefix: prefix.to_owned(),
            upstream: Upstream::Http {
                scheme: Scheme::Http,
                authority: format!("127.0.0.1:{port}").parse().expect("authority"),
            },
        }
    }

    fn port(table: &Table, host: Option<&str>, path: &str) -> Option<u16> {
        table.find(host, path).map(|r| match &r.upstream {
            Upstream::Http { authority, .. } => authority.port_u16().expect("port"),
            Upstream::File(_) | Upstream::Unix(_) => 0,
        })
    }

    #[test]
    fn longest_prefix_and_host_first() {
        let table = Table::new(vec![
            route(None, "/", 1),
            route(None, "/api", 2),
            route(None, "/api/v2/", 3),
            route(Some("admin.local"), "/", 4),
        ]);
        assert_eq!(port(&table, Some("x"), "/"), Some(1));
        assert_eq!(port(&table, Some("x"), "/apix"), Some(1));
        assert_eq!(port(&table, Some("x"), "/api"), Some(2));
        assert_eq!(port(&table, Some("x"), "/api/v1/users"), Some(2));
        assert_eq!(port(&table, Some("x"), "/api/v2"), Some(3));
        assert_eq!(port(&table, Some("x"), "/api/v2/a"), Some(3));
        assert_eq!(port(&table, Some("Admin.Local:8080"), "/api"), Some(4));
        assert_eq!(port(&table, None, "/api"), Some(2));
        let table = Table::new(vec![route(None, "/api", 2)]);
        assert_eq!(port(&table, Some("x"), "/other"), None);
    }
}
