//! One download: an `http://` GET (conditional on the last published version's validators) or
//! a local file, streamed into a temporary file with its sha256 computed on the way, its size
//! bounded by `--max-bytes` and the filesystem's free space by `--min-free`. Memory stays at
//! one body frame (or 64 KiB).
//!
//! Validators never hide an update (RFC 9110 §8.8.2.2, §13.1): an `ETag` is sent back as
//! `If-None-Match` (alone: a server must then ignore `If-Modified-Since` anyway); without one, a
//! `Last-Modified` is sent back as `If-Modified-Since` only when it is strong, at least one
//! second older than the answer's `Date` (or than its arrival, without a `Date`). A
//! `Last-Modified` within that second may be shared by a later version written in the same
//! second, which a conditional request would then never fetch; instead the next poll fetches
//! again and the sha256 tells whether anything changed. A `file://` source is skipped while its
//! inode, size and nanosecond mtime are those of the published version, and likewise only once
//! that mtime is a second old (filesystem timestamps come from a coarse clock: two writes in one
//! tick share an mtime).

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Request, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::debug;

use crate::puller::space::Space;
use crate::puller::{Config, Limits, Source};

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request could not be sent or no answer came.
    #[error("failed to GET {url}")]
    Request {
        /// The URL.
        url: String,
        /// Cause.
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// The request could not be built.
    #[error("failed to build the GET request for {url}")]
    BuildRequest {
        /// The URL.
        url: String,
        /// Cause.
        #[source]
        source: hyper::http::Error,
    },
    /// The server answered with an error status.
    #[error("GET {url} answered {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status.
        status: StatusCode,
    },
    /// The body broke off.
    #[error("failed to read the body of {url}")]
    Body {
        /// The URL.
        url: String,
        /// Cause.
        #[source]
        source: hyper::Error,
    },
    /// Writing on would eat into `--min-free`.
    #[error(transparent)]
    Space(#[from] crate::puller::space::Error),
    /// The download is larger than `--max-bytes`.
    #[error("{url} is larger than --max-bytes {max}; raise --max-bytes if that is expected")]
    TooLarge {
        /// The source.
        url: String,
        /// The bound.
        max: u64,
    },
    /// The local source could not be read.
    #[error("failed to read {path:?}")]
    ReadFile {
        /// The `file://` path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The temporary file could not be written (disk full, permissions).
    #[error("failed to write the download to {path:?}")]
    Write {
        /// The temporary file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// `--bearer-token-file` could not be read.
    #[error("failed to read --bearer-token-file {path:?}")]
    Token {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The token is not a valid header value.
    #[error("--bearer-token-file {path:?} holds characters not allowed in a header")]
    TokenValue {
        /// The file.
        path: PathBuf,
    },
}

/// The validators of a published download: what tells the next sync that nothing changed.
#[derive(Debug, Clone, Default)]
pub struct Validators {
    /// The `ETag`, sent back as `If-None-Match` (a weak `W/` one too: RFC 9110 §13.1.2 allows
    /// weak comparison for a GET).
    etag: Option<HeaderValue>,
    /// A strong `Last-Modified` (see the module doc), sent back as `If-Modified-Since` when
    /// there is no `ETag`.
    last_modified: Option<HeaderValue>,
    /// A `file://` source's stamp, once its mtime is a second old.
    file: Option<FileStamp>,
}

/// What identifies one version of a local file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_sec: i64,
    mtime_nsec: i64,
}

impl FileStamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_sec: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
        }
    }

    /// Whether the mtime is at least a second before `now`: a later write lands in a later
    /// tick of the filesystem's clock, so it changes the stamp.
    fn settled(&self, now: SystemTime) -> bool {
        let Ok(nsec) = u32::try_from(self.mtime_nsec) else {
            return false;
        };
        let mtime = match u64::try_from(self.mtime_sec) {
            Ok(sec) => SystemTime::UNIX_EPOCH + Duration::new(sec, nsec),
            // Before 1970: long settled.
            Err(_) => return true,
        };
        mtime + Duration::from_secs(1) <= now
    }
}

/// The `Last-Modified` of an answer if it is strong (RFC 9110 §8.8.2.2): at least one second
/// before the answer's `Date`, or before `received` when there is no `Date`. One that is not
/// may be shared by a later version made within the same second.
fn strong_last_modified(headers: &hyper::HeaderMap, received: SystemTime) -> Option<HeaderValue> {
    let value = headers.get(header::LAST_MODIFIED)?;
    let modified = http_date(value)?;
    let date = match headers.get(header::DATE) {
        Some(date) => http_date(date)?,
        None => jiff::Timestamp::try_from(received).ok()?,
    };
    (modified + jiff::SignedDuration::from_secs(1) <= date).then(|| value.clone())
}

/// An HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`); the obsolete RFC 850 and asctime forms are
/// not parsed, so a `Last-Modified` in them is never used.
fn http_date(value: &HeaderValue) -> Option<jiff::Timestamp> {
    jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(value.to_str().ok()?)
        .ok()
}

/// A finished download in a temporary file.
#[derive(Debug)]
pub struct Download {
    /// The temporary file (under `DEST/.tmp/`).
    pub path: PathBuf,
    /// The last segment of the source's path, used to recognise archives.
    pub name: String,
    /// Lowercase hex sha256 of the content.
    pub sha256: String,
    /// Size.
    pub bytes: u64,
    /// To remember once the content is published.
    pub validators: Validators,
}

/// Removes the temporary file unless the download completed.
struct TmpGuard(Option<PathBuf>);

impl Drop for TmpGuard {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The HTTP client: plain for `http://` sources, so they need no CA certificates at all.
#[derive(Debug)]
enum HttpClient {
    Plain(Client<HttpConnector, Empty<Bytes>>),
    Tls(Client<HttpsConnector<HttpConnector>, Empty<Bytes>>),
}

impl HttpClient {
    async fn request(
        &self,
        request: Request<Empty<Bytes>>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, hyper_util::client::legacy::Error> {
        match self {
            HttpClient::Plain(client) => client.request(request).await,
            HttpClient::Tls(client) => client.request(request).await,
        }
    }
}

/// Fetches the configured source; keeps the validators of the published version.
#[derive(Debug)]
pub struct Fetcher {
    client: HttpClient,
    source: Source,
    headers: Vec<(HeaderName, HeaderValue)>,
    bearer_token_file: Option<PathBuf>,
    limits: Limits,
    /// Validators of the version now published; empty until the first publish.
    validators: Mutex<Validators>,
}

impl Fetcher {
    /// A fetcher for `config.source`; TLS is set up (and its files read) for `https://` only.
    pub fn new(config: &Config) -> Result<Self, crate::client_tls::Error> {
        let https =
            matches!(&config.source, Source::Http(uri) if uri.scheme_str() == Some("https"));
        let client = if https {
            let connector = config.tls.connector(HttpConnector::new(), false)?;
            HttpClient::Tls(Client::builder(TokioExecutor::new()).build(connector))
        } else {
            HttpClient::Plain(Client::builder(TokioExecutor::new()).build_http())
        };
        Ok(Self {
            client,
            source: config.source.clone(),
            headers: config.headers.clone(),
            bearer_token_file: config.bearer_token_file.clone(),
            limits: config.limits,
            validators: Mutex::new(Validators::default()),
        })
    }

    /// Keeps `validators` for the next conditional request.
    pub fn remember(&self, validators: Validators) {
        // A poisoned lock only means a panic elsewhere; the value is still a plain pair.
        let mut slot = self.validators.lock().unwrap_or_else(|e| e.into_inner());
        *slot = validators;
    }

    /// Downloads into a new file under `tmp_dir`; `None` on `304 Not Modified`.
    pub async fn fetch(&self, tmp_dir: &Path) -> Result<Option<Download>, Error> {
        let path = tmp_dir.join(format!("download-{:016x}", fastrand::u64(..)));
        match &self.source {
            Source::Http(uri) => self.fetch_http(uri, path).await,
            Source::File(file) => self.fetch_file(file, path).await,
            // A git source is synced by `git.rs`; nothing to download here.
            Source::Git { .. } => Ok(None),
        }
    }

    async fn fetch_http(&self, uri: &Uri, path: PathBuf) -> Result<Option<Download>, Error> {
        let url = uri.to_string();
        let mut request = Request::get(uri.clone());
        let sent_validators = {
            let validators = self.validators.lock().unwrap_or_else(|e| e.into_inner());
            match (&validators.etag, &validators.last_modified) {
                (Some(etag), _) => {
                    request = request.header(header::IF_NONE_MATCH, etag.clone());
                    true
                }
                (None, Some(modified)) => {
                    request = request.header(header::IF_MODIFIED_SINCE, modified.clone());
                    true
                }
                (None, None) => false,
            }
        };
        for (name, value) in &self.headers {
            request = request.header(name.clone(), value.clone());
        }
        if let Some(file) = &self.bearer_token_file {
            let token = tokio::fs::read_to_string(file)
                .await
                .map_err(|source| Error::Token {
                    path: file.clone(),
                    source,
                })?;
            let value = HeaderValue::try_from(format!("Bearer {}", token.trim()))
                .map_err(|_| Error::TokenValue { path: file.clone() })?;
            request = request.header(header::AUTHORIZATION, value);
        }
        let request = request
            .body(Empty::new())
            .map_err(|source| Error::BuildRequest {
                url: url.clone(),
                source,
            })?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|source| Error::Request {
                url: url.clone(),
                source,
            })?;
        let received = SystemTime::now();
        let status = response.status();
        if status == StatusCode::NOT_MODIFIED && sent_validators {
            debug!(%url, "304 not modified");
            return Ok(None);
        }
        if !status.is_success() {
            return Err(Error::Status { url, status });
        }
        let length = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if let Some(length) = length
            && length > self.limits.max_bytes
        {
            return Err(Error::TooLarge {
                url,
                max: self.limits.max_bytes,
            });
        }
        let validators = Validators {
            etag: response.headers().get(header::ETAG).cloned(),
            last_modified: strong_last_modified(response.headers(), received),
            file: None,
        };
        let mut sink = Sink::create(path, &self.limits, &url, length).await?;
        let mut body = response.into_body();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|source| Error::Body {
                url: url.clone(),
                source,
            })?;
            if let Ok(data) = frame.into_data() {
                sink.write(&data).await?;
            }
        }
        let name = last_segment(uri.path());
        Ok(Some(sink.finish(name, validators).await?))
    }

    /// A local file (`None` while its stamp is the published one's), or a local directory.
    async fn fetch_file(&self, file: &Path, path: PathBuf) -> Result<Option<Download>, Error> {
        let read_err = |source| Error::ReadFile {
            path: file.to_owned(),
            source,
        };
        let url = format!("file://{}", file.display());
        if tokio::fs::metadata(file).await.map_err(read_err)?.is_dir() {
            let (dir, limits) = (file.to_owned(), self.limits);
            return tokio::task::spawn_blocking(move || tar_dir(&dir, path, &limits, &url))
                .await
                .map_err(|err| Error::ReadFile {
                    path: file.to_owned(),
                    source: std::io::Error::other(err),
                })?
                .map(Some);
        }
        let mut input = tokio::fs::File::open(file).await.map_err(read_err)?;
        let stamped = SystemTime::now();
        let stamp = FileStamp::of(&input.metadata().await.map_err(read_err)?);
        {
            let validators = self.validators.lock().unwrap_or_else(|e| e.into_inner());
            if validators.file == Some(stamp) {
                debug!(%url, "file unchanged");
                return Ok(None);
            }
        }
        let mut sink = Sink::create(path, &self.limits, &url, Some(stamp.size)).await?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = input.read(&mut buf).await.map_err(read_err)?;
            if n == 0 {
                break;
            }
            sink.write(&buf[..n]).await?;
        }
        // A file written while it was read is read again at the next sync, whatever its stamp.
        let unchanged = FileStamp::of(&input.metadata().await.map_err(read_err)?) == stamp;
        let validators = Validators {
            file: (unchanged && stamp.settled(stamped)).then_some(stamp),
            ..Validators::default()
        };
        let name = last_segment(&file.to_string_lossy());
        sink.finish(name, validators).await.map(Some)
    }
}

/// A local directory becomes a tar (symlinks kept as links) named `<dir>.tar`, so it is
/// unpacked as a tree and deduplicated by digest like any download. `--max-bytes` and
/// `--min-free` stop it as it is written.
fn tar_dir(dir: &Path, path: PathBuf, limits: &Limits, url: &str) -> Result<Download, Error> {
    /// The tar file, hashed and bounded as it is written.
    struct Hashing {
        file: std::fs::File,
        hasher: Sha256,
        bytes: u64,
        max: u64,
        space: Space,
        /// Why a write was refused, to report instead of the I/O error the tar builder sees.
        stop: Option<Error>,
        url: String,
    }
    impl std::io::Write for Hashing {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let len = buf.len() as u64;
            if self.bytes + len > self.max {
                self.stop = Some(Error::TooLarge {
                    url: self.url.clone(),
                    max: self.max,
                });
                return Err(std::io::Error::other("over --max-bytes"));
            }
            if let Err(err) = self.space.charge(self.file.as_fd(), len) {
                self.stop = Some(err.into());
                return Err(std::io::Error::other("over --min-free"));
            }
            let n = self.file.write(buf)?;
            self.hasher.update(&buf[..n]);
            self.bytes += n as u64;
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.file.flush()
        }
    }
    let guard = TmpGuard(Some(path.clone()));
    let write_err = |source| Error::Write {
        path: path.clone(),
        source,
    };
    let read_err = |source| Error::ReadFile {
        path: dir.to_owned(),
        source,
    };
    let file = std::fs::File::create(&path).map_err(write_err)?;
    let mut builder = tar::Builder::new(Hashing {
        file,
        hasher: Sha256::new(),
        bytes: 0,
        max: limits.max_bytes,
        space: Space::new(limits.min_free, path.clone()),
        stop: None,
        url: url.to_owned(),
    });
    builder.follow_symlinks(false);
    let appended = builder.append_dir_all(".", dir);
    if let Some(stop) = builder.get_mut().stop.take() {
        return Err(stop);
    }
    appended.map_err(read_err)?;
    let hashing = builder.into_inner().map_err(write_err)?;
    hashing.file.sync_all().map_err(write_err)?;
    let mut guard = guard;
    guard.0 = None;
    let name = format!("{}.tar", last_segment(&dir.to_string_lossy()));
    Ok(Download {
        path,
        name,
        sha256: hex(&hashing.hasher.finalize()),
        bytes: hashing.bytes,
        validators: Validators::default(),
    })
}

/// The temporary file being written, with the running digest and size.
struct Sink {
    file: tokio::fs::File,
    guard: TmpGuard,
    path: PathBuf,
    hasher: Sha256,
    bytes: u64,
    max_bytes: u64,
    space: Space,
    url: String,
}

impl Sink {
    /// A new temporary file; refused at once when `expected` bytes (a `Content-Length`, a
    /// file's size) would not fit above `--min-free`.
    async fn create(
        path: PathBuf,
        limits: &Limits,
        url: &str,
        expected: Option<u64>,
    ) -> Result<Self, Error> {
        let file = tokio::fs::File::create(&path)
            .await
            .map_err(|source| Error::Write {
                path: path.clone(),
                source,
            })?;
        let guard = TmpGuard(Some(path.clone()));
        let space = Space::new(limits.min_free, path.clone());
        if let Some(expected) = expected {
            space.expect(file.as_fd(), expected)?;
        }
        Ok(Self {
            file,
            guard,
            path,
            hasher: Sha256::new(),
            bytes: 0,
            max_bytes: limits.max_bytes,
            space,
            url: url.to_owned(),
        })
    }

    async fn write(&mut self, data: &[u8]) -> Result<(), Error> {
        self.bytes += data.len() as u64;
        if self.bytes > self.max_bytes {
            return Err(Error::TooLarge {
                url: self.url.clone(),
                max: self.max_bytes,
            });
        }
        self.space.charge(self.file.as_fd(), data.len() as u64)?;
        self.hasher.update(data);
        self.file
            .write_all(data)
            .await
            .map_err(|source| Error::Write {
                path: self.path.clone(),
                source,
            })
    }

    async fn finish(mut self, name: String, validators: Validators) -> Result<Download, Error> {
        let write_err = |source| Error::Write {
            path: self.path.clone(),
            source,
        };
        self.file.flush().await.map_err(write_err)?;
        self.file.sync_all().await.map_err(write_err)?;
        self.guard.0 = None;
        let sha256 = hex(&self.hasher.finalize());
        Ok(Download {
            path: self.path,
            name,
            sha256,
            bytes: self.bytes,
            validators,
        })
    }
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// The last non-empty segment of a path, or `index`.
fn last_segment(path: &str) -> String {
    path.rsplit('/')
        .find(|s| !s.is_empty())
        .unwrap_or("index")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(HeaderName, &str)]) -> hyper::HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| (name.clone(), HeaderValue::from_str(value).expect("value")))
            .collect()
    }

    /// RFC 9110 §8.8.2.2: strong only when at least a second older than `Date`.
    #[test]
    fn last_modified_is_strong_only_a_second_before_date() {
        let received = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let lm = "Wed, 18 May 2033 03:33:19 GMT"; // 1_999_999_999
        let same = "Wed, 18 May 2033 03:33:20 GMT"; // 2_000_000_000
        let later = "Wed, 18 May 2033 03:33:21 GMT";
        let strong = |pairs: &[(HeaderName, &str)]| {
            strong_last_modified(&headers(pairs), received).is_some()
        };
        assert!(strong(&[(header::LAST_MODIFIED, lm), (header::DATE, same)]));
        assert!(!strong(&[
            (header::LAST_MODIFIED, same),
            (header::DATE, same)
        ]));
        assert!(!strong(&[
            (header::LAST_MODIFIED, later),
            (header::DATE, same)
        ]));
        // Without a Date, the time it arrived.
        assert!(strong(&[(header::LAST_MODIFIED, lm)]));
        assert!(!strong(&[(header::LAST_MODIFIED, same)]));
        // Dates that do not parse are never trusted.
        assert!(!strong(&[
            (header::LAST_MODIFIED, "yesterday"),
            (header::DATE, same)
        ]));
        assert!(!strong(&[
            (header::LAST_MODIFIED, lm),
            (header::DATE, "now")
        ]));
        assert!(!strong(&[(header::DATE, same)]));
    }

    #[test]
    fn a_file_stamp_settles_a_second_after_its_mtime() {
        let stamp = FileStamp {
            dev: 1,
            ino: 2,
            size: 3,
            mtime_sec: 1_000,
            mtime_nsec: 500_000_000,
        };
        let at = |secs: u64, nanos: u32| SystemTime::UNIX_EPOCH + Duration::new(secs, nanos);
        assert!(!stamp.settled(at(1_000, 600_000_000)));
        assert!(!stamp.settled(at(1_001, 499_999_999)));
        assert!(stamp.settled(at(1_001, 500_000_000)));
        // An mtime in the future (a clock set back) never settles early.
        assert!(!stamp.settled(at(999, 0)));
    }
}
