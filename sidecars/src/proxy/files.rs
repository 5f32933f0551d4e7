//! The `file:///DIR` upstream: static files with `index.html`, ETags and Last-Modified
//! (weak while the file is less than a second old) with `If-None-Match` and
//! `If-Modified-Since`, single byte ranges and content types by extension. GET and HEAD only.

use std::path::{Component, Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::proxy::forward::ProxyBody;

fn status(status: StatusCode) -> Response<ProxyBody> {
    let body = format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let mut response = Response::new(Full::new(Bytes::from(body)).map_err(Into::into).boxed());
    *response.status_mut() = status;
    response
}

/// Decodes `%XX` escapes; `None` when the result is not UTF-8 or contains NUL.
fn percent_decode(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let s = String::from_utf8(out).ok()?;
    (!s.contains('\0')).then_some(s)
}

/// The file under `root` a URL path names, refusing anything that would leave `root`.
fn resolve(root: &Path, path: &str) -> Option<PathBuf> {
    let decoded = percent_decode(path)?;
    let mut file = root.to_path_buf();
    for component in Path::new(&decoded).components() {
        match component {
            Component::Normal(part) => file.push(part),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(file)
}

/// Content type by file extension.
pub fn content_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("json") => "application/json",
        Some("txt") => "text/plain; charset=utf-8",
        Some("xml") => "application/xml",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        Some("woff") => "font/woff",
        Some("wasm") => "application/wasm",
        Some("pdf") => "application/pdf",
        Some("mp4") => "video/mp4",
        _ => "application/octet-stream",
    }
}

/// Parses a single `bytes=` range against a file of `len` bytes: `Some(Ok((first, last)))`,
/// `Some(Err(()))` when unsatisfiable, `None` to ignore the header (several ranges, bad syntax).
fn range(value: &str, len: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        let suffix: u64 = last.parse().ok()?;
        if suffix == 0 || len == 0 {
            return Some(Err(()));
        }
        return Some(Ok((len.saturating_sub(suffix), len - 1)));
    }
    let first: u64 = first.parse().ok()?;
    let last: u64 = if last.is_empty() {
        u64::MAX
    } else {
        last.parse().ok()?
    };
    if last < first {
        return None;
    }
    if first >= len {
        return Some(Err(()));
    }
    Some(Ok((first, last.min(len - 1))))
}

/// A file's validators. Strong only when the file has not changed for a second: a file
/// rewritten within the same second (same size, same modification time, as filesystems with
/// coarse timestamps or tools that keep the time give) must not be answered 304 from the
/// validators of its previous content. So, as RFC 9110 section 8.8.2.2 has it, a modification
/// time (or inode change time) less than a second before the answer's date makes them weak:
/// the ETag is sent as `W/`, and neither `If-None-Match`, `If-Modified-Since` nor `If-Range`
/// is honoured against it. The ETag also holds the inode and the change time in nanoseconds,
/// which a rewrite changes even when it keeps the modification time.
#[derive(Debug)]
struct Validators {
    /// The quoted entity tag, without `W/`.
    etag: String,
    /// `Last-Modified` as an HTTP date, and its seconds since the epoch.
    last_modified: Option<String>,
    modified_secs: Option<i64>,
    weak: bool,
}

impl Validators {
    fn of(meta: &std::fs::Metadata, now: SystemTime) -> Self {
        use std::os::unix::fs::MetadataExt;
        let nanos = |secs: i64, nsec: i64| i128::from(secs) * 1_000_000_000 + i128::from(nsec);
        let mtime = nanos(meta.mtime(), meta.mtime_nsec());
        let ctime = nanos(meta.ctime(), meta.ctime_nsec());
        let now_nanos = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i128::try_from(d.as_nanos()).unwrap_or(i128::MAX));
        let weak = mtime.max(ctime) > now_nanos - 1_000_000_000;
        let etag = format!("\"{:x}-{mtime:x}-{:x}-{ctime:x}\"", meta.len(), meta.ino());
        let modified_secs = Some(meta.mtime());
        let last_modified = jiff::Timestamp::from_second(meta.mtime())
            .ok()
            .map(|t| t.strftime("%a, %d %b %Y %H:%M:%S GMT").to_string());
        Self {
            etag,
            last_modified,
            modified_secs,
            weak,
        }
    }

    fn etag_header(&self) -> String {
        match self.weak {
            true => format!("W/{}", self.etag),
            false => self.etag.clone(),
        }
    }

    /// Whether the request's conditions let it be answered 304 (RFC 9110 section 13.2.2:
    /// `If-None-Match` first, `If-Modified-Since` only without it).
    fn not_modified(&self, headers: &hyper::HeaderMap) -> bool {
        if self.weak {
            return false;
        }
        if let Some(inm) = headers.get(header::IF_NONE_MATCH) {
            return inm.to_str().is_ok_and(|inm| etag_matches(inm, &self.etag));
        }
        let since = headers
            .get(header::IF_MODIFIED_SINCE)
            .and_then(|v| v.to_str().ok())
            .and_then(http_date);
        match (since, self.modified_secs) {
            // A date in the future is not a valid one (RFC 9110 section 13.1.3).
            (Some(since), Some(modified)) => {
                since >= modified && since <= jiff::Timestamp::now().as_second()
            }
            _ => false,
        }
    }
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) as seconds since the epoch.
fn http_date(value: &str) -> Option<i64> {
    let civil = jiff::civil::DateTime::strptime(
        "%a, %d %b %Y %H:%M:%S",
        value.trim().strip_suffix(" GMT")?,
    )
    .ok()?;
    Some(
        civil
            .to_zoned(jiff::tz::TimeZone::UTC)
            .ok()?
            .timestamp()
            .as_second(),
    )
}

fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    if_none_match.trim() == "*"
        || if_none_match
            .split(',')
            .any(|t| t.trim().trim_start_matches("W/") == etag)
}

/// Answers `req` from the files under `root`.
pub async fn serve<B>(root: &Path, req: &Request<B>) -> Response<ProxyBody> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut response = status(StatusCode::METHOD_NOT_ALLOWED);
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let Some(mut path) = resolve(root, req.uri().path()) else {
        return status(StatusCode::NOT_FOUND);
    };
    let mut meta = match tokio::fs::metadata(&path).await {
        Ok(meta) => meta,
        Err(_) => return status(StatusCode::NOT_FOUND),
    };
    if meta.is_dir() {
        if !req.uri().path().ends_with('/') {
            let mut response = status(StatusCode::MOVED_PERMANENTLY);
            let location = format!("{}/", req.uri().path());
            if let Ok(value) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(header::LOCATION, value);
            }
            return response;
        }
        path.push("index.html");
        meta = match tokio::fs::metadata(&path).await {
            Ok(meta) if meta.is_file() => meta,
            _ => return status(StatusCode::NOT_FOUND),
        };
    }
    let len = meta.len();
    let validators = Validators::of(&meta, SystemTime::now());
    let mut builder = Response::builder()
        .header(header::ETAG, validators.etag_header())
        .header(header::CONTENT_TYPE, content_type(&path))
        .header(header::ACCEPT_RANGES, "bytes");
    if let Some(date) = &validators.last_modified {
        builder = builder.header(header::LAST_MODIFIED, date);
    }
    if validators.not_modified(req.headers()) {
        return builder
            .status(StatusCode::NOT_MODIFIED)
            .body(Empty::new().map_err(Into::into).boxed())
            .unwrap_or_else(|_| status(StatusCode::INTERNAL_SERVER_ERROR));
    }
    let etag = &validators.etag;
    // If-Range: serve the range only while the validator still matches.
    let range_applies = req
        .headers()
        .get(header::IF_RANGE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| !validators.weak && v.trim() == etag);
    let (first, count) = match req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .filter(|_| range_applies)
        .and_then(|v| range(v, len))
    {
        None => {
            builder = builder.status(StatusCode::OK);
            (0, len)
        }
        Some(Ok((first, last))) => {
            builder = builder
                .status(StatusCode::PARTIAL_CONTENT)
                .header(header::CONTENT_RANGE, format!("bytes {first}-{last}/{len}"));
            (first, last - first + 1)
        }
        Some(Err(())) => {
            let mut response = status(StatusCode::RANGE_NOT_SATISFIABLE);
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{len}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            return response;
        }
    };
    builder = builder.header(header::CONTENT_LENGTH, count);
    let body = if req.method() == Method::HEAD {
        Empty::new().map_err(Into::into).boxed()
    } else {
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(_) => return status(StatusCode::NOT_FOUND),
        };
        if first > 0 && file.seek(std::io::SeekFrom::Start(first)).await.is_err() {
            return status(StatusCode::INTERNAL_SERVER_ERROR);
        }
        let stream = tokio_util::io::ReaderStream::with_capacity(file.take(count), 64 * 1024)
            .map(|chunk| chunk.map(Frame::data).map_err(Into::into));
        BodyExt::boxed(StreamBody::new(stream))
    };
    builder
        .body(body)
        .unwrap_or_else(|_| status(StatusCode::INTERNAL_SERVER_ERROR))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(range("bytes=0-9", 100), Some(Ok((0, 9))));
        assert_eq!(range("bytes=90-", 100), Some(Ok((90, 99))));
        assert_eq!(range("bytes=-10", 100), Some(Ok((90, 99))));
        assert_eq!(range("bytes=50-500", 100), Some(Ok((50, 99))));
        assert_eq!(range("bytes=100-", 100), Some(Err(())));
        assert_eq!(range("bytes=0-1,5-6", 100), None);
        assert_eq!(range("items=0-1", 100), None);
    }

    #[test]
    fn http_dates() {
        assert_eq!(
            http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(http_date("Sunday, 06-Nov-94 08:49:37 GMT"), None);
        assert_eq!(http_date("Sun, 06 Nov 1994 08:49:37"), None);
    }

    #[test]
    fn paths_stay_under_the_root() {
        let root = Path::new("/srv");
        assert_eq!(
            resolve(root, "/a/b.txt"),
            Some(PathBuf::from("/srv/a/b.txt"))
        );
        assert_eq!(resolve(root, "/a%20b"), Some(PathBuf::from("/srv/a b")));
        assert_eq!(resolve(root, "/../etc/passwd"), None);
        assert_eq!(resolve(root, "/%2e%2e/etc/passwd"), None);
    }
}
