//! The HTTP sinks: JSON lines (gzip) to any URL, the Loki push API, and the Elasticsearch
//! `_bulk` API, over `http://` or `https://` (TLS through [`crate::client_tls`]). A 2xx answer
//! means accepted; anything else is retried by the caller.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Uri;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use crate::client_tls::ClientTls;
use crate::tail::SinkConfig;
use crate::tail::lines::Record;
use crate::tail::sink::{Error, SendError, encode};

#[derive(Debug)]
enum Kind {
    JsonLines,
    Loki { labels: Vec<(String, String)> },
    Elasticsearch { index: String },
}

/// A client for the sink's scheme.
#[derive(Debug)]
enum Clients {
    Http(Client<HttpConnector, Full<Bytes>>),
    Https(Client<HttpsConnector<HttpConnector>, Full<Bytes>>),
}

impl Clients {
    async fn request(
        &self,
        request: hyper::Request<Full<Bytes>>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, hyper_util::client::legacy::Error> {
        match self {
            Clients::Http(c) => c.request(request).await,
            Clients::Https(c) => c.request(request).await,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Http {
    client: Clients,
    url: Uri,
    kind: Kind,
    timeout: Duration,
}

/// `url` with `path` when it has none.
fn with_default_path(flag: &'static str, url: &Uri, path: &str) -> Result<Uri, Error> {
    let Some(scheme @ ("http" | "https")) = url.scheme_str() else {
        return Err(Error::Scheme {
            flag,
            url: url.to_string(),
        });
    };
    if url.path() != "/" || path.is_empty() {
        return Ok(url.clone());
    }
    let scheme_authority = format!(
        "{scheme}://{}{path}",
        url.authority().map(|a| a.as_str()).unwrap_or_default()
    );
    scheme_authority.parse().map_err(|_| Error::Scheme {
        flag,
        url: url.to_string(),
    })
}

impl Http {
    pub(crate) fn new(
        config: &SinkConfig,
        tls: &ClientTls,
        timeout: Duration,
    ) -> Result<Self, Error> {
        let (url, kind) = match config {
            SinkConfig::Http { url } => (with_default_path("--http", url, "")?, Kind::JsonLines),
            SinkConfig::Loki { url, labels } => (
                with_default_path("--loki", url, "/loki/api/v1/push")?,
                Kind::Loki {
                    labels: labels.clone(),
                },
            ),
            SinkConfig::Elasticsearch { url, index } => (
                with_default_path("--elasticsearch", url, "/_bulk")?,
                Kind::Elasticsearch {
                    index: index.clone(),
                },
            ),
            SinkConfig::Stdout { .. } => unreachable!("stdout is not an HTTP sink"),
        };
        let client = if url.scheme_str() == Some("https") {
            // The CA file and client identity are read once, at startup, so a bad file stops
            // the tailer with its name instead of failing every send.
            let connector = tls
                .connector(HttpConnector::new(), false)
                .map_err(|source| Error::Tls {
                    url: url.to_string(),
                    source,
                })?;
            Clients::Https(Client::builder(TokioExecutor::new()).build(connector))
        } else {
            // No TLS set-up for http://: a host without CA certificates must still work.
            Clients::Http(Client::builder(TokioExecutor::new()).build_http())
        };
        Ok(Http {
            client,
            url,
            kind,
            timeout,
        })
    }

    fn body(&self, records: &[&Record]) -> Result<(Vec<u8>, &'static str, bool), SendError> {
        let mut out = Vec::new();
        match &self.kind {
            Kind::JsonLines => {
                encode::json_lines(records, &mut out);
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(&out).map_err(SendError::Gzip)?;
                Ok((
                    gz.finish().map_err(SendError::Gzip)?,
                    "application/x-ndjson",
                    true,
                ))
            }
            Kind::Loki { labels } => {
                // One Loki stream per (file, CRI stream): labels must be few and stable.
                let mut streams: BTreeMap<(&str, Option<&str>), Vec<Value>> = BTreeMap::new();
                for rec in records {
                    streams
                        .entry((&rec.path, rec.source))
                        .or_default()
                        .push(json!([encode::unix_nanos(rec.time), rec.message]));
                }
                let streams: Vec<Value> = streams
                    .into_iter()
                    .map(|((file, source), values)| {
                        let mut stream = serde_json::Map::new();
                        for (k, v) in labels {
                            stream.insert(k.clone(), json!(v));
                        }
                        stream.insert("filename".into(), json!(file));
                        if let Some(source) = source {
                            stream.insert("stream".into(), json!(source));
                        }
                        json!({"stream": stream, "values": values})
                    })
                    .collect();
                let _ = serde_json::to_writer(&mut out, &json!({ "streams": streams }));
                Ok((out, "application/json", false))
            }
            Kind::Elasticsearch { index } => {
                let action =
                    serde_json::to_vec(&json!({"index": {"_index": index}})).unwrap_or_default();
                for rec in records {
                    let mut doc = encode::object(rec);
                    doc.insert("@timestamp".into(), json!(encode::rfc3339(rec.time)));
                    out.extend_from_slice(&action);
                    out.push(b'\n');
                    let _ = serde_json::to_writer(&mut out, &doc);
                    out.push(b'\n');
                }
                Ok((out, "application/x-ndjson", false))
            }
        }
    }

    pub(crate) async fn send(&mut self, records: &[&Record]) -> Result<(), SendError> {
        let url = self.url.to_string();
        let (body, content_type, gzip) = self.body(records)?;
        let mut request = hyper::Request::post(self.url.clone())
            .header(hyper::header::CONTENT_TYPE, content_type)
            .header(hyper::header::USER_AGENT, "podkit-tail");
        if gzip {
            request = request.header(hyper::header::CONTENT_ENCODING, "gzip");
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|source| SendError::Build {
                url: url.clone(),
                source,
            })?;
        let exchange = async {
            let response =
                self.client
                    .request(request)
                    .await
                    .map_err(|source| SendError::Request {
                        url: url.clone(),
                        source,
                    })?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|source| SendError::Response {
                    url: url.clone(),
                    source,
                })?
                .to_bytes();
            Ok::<_, SendError>((status, body))
        };
        let (status, body) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| SendError::Timeout {
                url: url.clone(),
                timeout: self.timeout,
            })??;
        let excerpt = || String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
        if !status.is_success() {
            return Err(SendError::Status {
                url,
                status,
                body: excerpt(),
            });
        }
        if matches!(self.kind, Kind::Elasticsearch { .. }) {
            let errors = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("errors").and_then(Value::as_bool))
                .unwrap_or(false);
            if errors {
                // Re-sending the whole batch may index some documents twice: at least once.
                return Err(SendError::Bulk {
                    url,
                    body: excerpt(),
                });
            }
        }
        Ok(())
    }
}
