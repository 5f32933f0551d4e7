//! The proxy's own checks and rewriting of a client's request head (hyper parses it; this is
//! what podkit does with it): Host validation, the refusals of RFC 9112 (Host twice or missing,
//! transfer codings, CONNECT, asterisk-form), hop-by-hop removal, X-Forwarded-* and Forwarded,
//! quoted-strings, forbidden trailer fields. Any bytes: no panic, and
//! - a request not refused has a valid Host, and the Forwarded it gets is one element of
//!   `for`, `proto` and `host` (its value that Host), whatever the Host was;
//! - no hop-by-hop field is forwarded, X-Forwarded-For is the peer alone;
//! - a quoted-string unquotes to its input (less the bytes it cannot hold);
//! - no forbidden trailer field survives.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sidecars::proxy::fuzz;

/// Splits on `sep` outside quoted-strings; `None` when a quote is left open.
fn split_outside_quotes(value: &str, sep: char) -> Option<Vec<&str>> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                parts.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&value[start..]);
    (!quoted).then_some(parts)
}

/// The content of a quoted-string.
fn unquote(value: &str) -> Option<String> {
    let inner = value.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

fuzz_target!(|data: &[u8]| {
    // A quoted-string of any bytes.
    let quoted = fuzz::quote(data);
    let kept: String = data
        .iter()
        .filter(|&&b| b == b'\t' || (b' '..=b'~').contains(&b))
        .map(|&b| char::from(b))
        .collect();
    assert_eq!(unquote(&quoted).as_deref(), Some(kept.as_str()), "{quoted:?}");

    let peer = "192.0.2.7:5000".parse().expect("address");
    let Some(head) = fuzz::request_head(data, peer, false) else {
        return;
    };
    // Trailers: the same fields as a trailer section.
    let mut trailers = head.forwarded.clone();
    fuzz::strip_forbidden_trailers(&mut trailers);
    for name in trailers.keys() {
        let name = name.as_str();
        assert!(
            !["content-length", "transfer-encoding", "host", "authorization", "cookie", "te"]
                .contains(&name)
                && !name.starts_with("proxy-"),
            "{name} kept in trailers"
        );
    }
    if head.refused.is_some() {
        return;
    }
    for gone in ["connection", "keep-alive", "te", "transfer-encoding", "upgrade", "proxy-connection"] {
        assert!(!head.forwarded.contains_key(gone), "{gone} forwarded");
    }
    assert_eq!(head.forwarded["x-forwarded-for"], "192.0.2.7");
    let forwarded = head.forwarded["forwarded"].to_str().expect("ASCII Forwarded");
    let elements = split_outside_quotes(forwarded, ',').expect("balanced quotes");
    assert_eq!(elements.len(), 1, "{forwarded}");
    let params = split_outside_quotes(elements[0], ';').expect("balanced quotes");
    let mut keys = Vec::new();
    for param in params {
        let (key, value) = param.split_once('=').expect("key=value");
        assert!(["for", "proto", "host"].contains(&key), "{forwarded}");
        assert!(!keys.contains(&key), "{forwarded}");
        keys.push(key);
        if key == "host" {
            let host = head.host.as_ref().expect("a host param needs a Host");
            assert!(fuzz::valid_authority(host.as_bytes()), "{host:?}");
            assert_eq!(unquote(value).as_deref(), host.to_str().ok(), "{forwarded}");
        }
    }
});
