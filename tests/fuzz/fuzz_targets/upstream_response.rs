//! podkit's HTTP/1.1 upstream client (`sidecars/src/proxy/upstream.rs`): any bytes as an
//! upstream's answer, read through its head parser and body framing (Content-Length, chunked
//! with trailers, close-delimited, HEAD/204/304). No panic, no hang, and the framing holds:
//! - a body that ended cleanly under a Content-Length has exactly that many bytes;
//! - a connection goes back to the pool only after a clean end, under HTTP/1.1 without
//!   `Connection: close`, and never for a close-delimited body;
//! - trailers come only after chunked framing, the framing headers passed on are never both;
//! - a chunk-size line parses to what its hex digits say.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sidecars::proxy::fuzz;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((len, size))) = fuzz::chunk_size(data) {
        assert!(len <= data.len() && data[..len].ends_with(b"\r\n"));
        let digits: Vec<u8> = data.iter().copied().take_while(u8::is_ascii_hexdigit).collect();
        let digits = std::str::from_utf8(&digits).expect("hex");
        let parsed = u128::from_str_radix(digits, 16).expect("at most 16 significant digits");
        assert_eq!(parsed, u128::from(size));
    }
    let head_only = data.first().is_some_and(|b| b & 1 == 1);
    let answer = fuzz::upstream_answer(data, head_only).expect("socket pair");
    let Ok((status, version, headers)) = &answer.head else {
        assert!(answer.data.is_empty() && !answer.pooled);
        return;
    };
    let total: usize = answer.data.iter().map(|d| d.len()).sum();
    let chunked = headers.contains_key("transfer-encoding");
    let length = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.trim().parse::<usize>().ok());
    let no_body = head_only || *status == 204 || *status == 304 || *status == 101;
    if no_body {
        assert_eq!(total, 0);
    }
    if answer.body_error.is_none() && !no_body && !chunked
        && let Some(length) = length
    {
        assert_eq!(total, length, "{headers:?}");
    }
    if chunked {
        assert!(!headers.contains_key("content-length"), "both framings passed on");
    }
    if answer.trailers.is_some() {
        assert!(chunked, "trailers without chunked framing");
    }
    if answer.pooled {
        assert!(answer.body_error.is_none());
        assert_eq!(*version, hyper_version_11());
        assert!(no_body || chunked || length.is_some(), "close-delimited body pooled");
        let close = headers
            .get_all("connection")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("close"));
        assert!(!close, "pooled after Connection: close");
    }
});

fn hyper_version_11() -> sidecars::proxy::fuzz::Version {
    sidecars::proxy::fuzz::Version::HTTP_11
}
