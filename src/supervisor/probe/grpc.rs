//! gRPC probes: the Health Checking Protocol's `Check` (`grpc.health.v1.Health`) over HTTP/2
//! without TLS, to the pod's loopback, as kubelet's prober calls it (`pkg/probe/grpc`), with its
//! messages: "service unhealthy (responded with \"NOT_SERVING\")", "this server does not
//! implement the grpc health protocol", ...
//!
//! The two messages are encoded here by hand: `HealthCheckRequest` is one string field and
//! `HealthCheckResponse` one enum field, a few lines of protobuf's wire format, where a gRPC
//! stack (tonic, prost and their code generation) would add a large dependency to every pod's
//! supervisor for them.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::HeaderMap;
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::supervisor::Pod;

/// `HealthCheckResponse.ServingStatus` values.
const SERVING: u64 = 1;

/// Calls `Check` for `service` on the pod's `port`; the error is kubelet's probe message.
pub(super) async fn check(
    pod: &Pod,
    port: u16,
    service: &str,
    timeout: Duration,
) -> Result<(), String> {
    let target = format!("localhost:{port}");
    let unreachable =
        |e: &dyn std::fmt::Display| format!("failed to connect service {target:?}: {e}");
    let stream = super::connect(pod, None, port)
        .await
        .map_err(|e| unreachable(&e))?;
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(&e))?;
    tokio::spawn(connection);
    let failed = |e: &dyn std::fmt::Display| format!("error: health rpc probe failed: {e}");
    let request = hyper::Request::post(format!("http://{target}/grpc.health.v1.Health/Check"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("user-agent", "kube-probe/podkit")
        .header("grpc-timeout", format!("{}m", timeout.as_millis()))
        .body(Full::new(Bytes::from(frame(&request(service)))))
        .map_err(|e| failed(&e))?;
    let response = sender.send_request(request).await.map_err(|e| failed(&e))?;
    if response.status() != hyper::StatusCode::OK {
        return Err(failed(&format!("HTTP status {}", response.status())));
    }
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| failed(&e))?;
    // A "trailers-only" response carries the status in its headers.
    let trailers = body.trailers().cloned().unwrap_or_default();
    let header = |name: &str| {
        let value = |h: &HeaderMap| h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        value(&trailers).or_else(|| value(&headers))
    };
    let message = header("grpc-message").unwrap_or_default();
    match header("grpc-status").and_then(|c| c.parse::<u32>().ok()) {
        Some(0) => {}
        Some(12) => {
            return Err(format!(
                "this server does not implement the grpc health protocol \
                 (grpc.health.v1.Health): {message}"
            ));
        }
        Some(4) => {
            return Err(format!(
                "timeout: health rpc did not complete within {}s",
                timeout.as_secs_f32()
            ));
        }
        Some(code) => {
            return Err(failed(&format!(
                "rpc error: code = {} desc = {message}",
                code_name(code)
            )));
        }
        None => return Err(failed(&"the response has no grpc-status")),
    }
    match serving_status(&body.to_bytes()) {
        Ok(SERVING) => Ok(()),
        Ok(status) => Err(format!(
            "service unhealthy (responded with {:?})",
            status_name(status)
        )),
        Err(why) => Err(failed(&why)),
    }
}

/// `HealthCheckRequest { service }`: field 1, length-delimited; left out when empty (proto3).
fn request(service: &str) -> Vec<u8> {
    let mut message = Vec::new();
    if !service.is_empty() {
        message.push(0x0a);
        varint(&mut message, service.len() as u64);
        message.extend_from_slice(service.as_bytes());
    }
    message
}

/// A gRPC message on the wire: uncompressed, its length, the message.
fn frame(message: &[u8]) -> Vec<u8> {
    let mut framed = vec![0];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message);
    framed
}

fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn read_varint(bytes: &[u8], at: &mut usize) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at).ok_or("a truncated response message")?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("a malformed varint in the response message".to_owned())
}

/// `HealthCheckResponse.status` from the response body (one framed message): field 1, a
/// varint; absent means 0 (UNKNOWN). Other fields are skipped by their wire type.
fn serving_status(body: &[u8]) -> Result<u64, String> {
    let (head, rest) = body
        .split_at_checked(5)
        .ok_or("the response has no message")?;
    if head[0] != 0 {
        return Err("the response message is compressed, which the probe did not ask for".into());
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let message = rest.get(..len).ok_or("a truncated response message")?;
    let mut at = 0;
    let mut status = 0;
    while at < message.len() {
        let key = read_varint(message, &mut at)?;
        let skip = match key & 7 {
            0 => {
                let value = read_varint(message, &mut at)?;
                if key >> 3 == 1 {
                    status = value;
                }
                0
            }
            1 => 8,
            2 => read_varint(message, &mut at)? as usize,
            5 => 4,
            other => return Err(format!("wire type {other} in the response message")),
        };
        at = at
            .checked_add(skip)
            .filter(|&end| end <= message.len())
            .ok_or("a truncated response message")?;
    }
    Ok(status)
}

fn status_name(status: u64) -> String {
    match status {
        0 => "UNKNOWN".to_owned(),
        1 => "SERVING".to_owned(),
        2 => "NOT_SERVING".to_owned(),
        3 => "SERVICE_UNKNOWN".to_owned(),
        other => other.to_string(),
    }
}

/// gRPC's status code names, as grpc-go prints them.
fn code_name(code: u32) -> String {
    const NAMES: [&str; 17] = [
        "OK",
        "Canceled",
        "Unknown",
        "InvalidArgument",
        "DeadlineExceeded",
        "NotFound",
        "AlreadyExists",
        "PermissionDenied",
        "ResourceExhausted",
        "FailedPrecondition",
        "Aborted",
        "OutOfRange",
        "Unimplemented",
        "Internal",
        "Unavailable",
        "DataLoss",
        "Unauthenticated",
    ];
    NAMES
        .get(code as usize)
        .map_or_else(|| format!("Code({code})"), |n| (*n).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_in_protobufs_wire_format() {
        assert_eq!(request(""), Vec::<u8>::new());
        assert_eq!(request("db"), vec![0x0a, 2, b'd', b'b']);
        assert_eq!(frame(&[1, 2]), vec![0, 0, 0, 0, 2, 1, 2]);
        assert_eq!(serving_status(&frame(&[0x08, 1])), Ok(1));
        assert_eq!(
            serving_status(&frame(&[])),
            Ok(0),
            "an empty message is UNKNOWN"
        );
        // An unknown string field (2) and fixed32 (3) skipped, then status NOT_SERVING.
        let message = [0x12, 1, b'x', 0x1d, 0, 0, 0, 0, 0x08, 2];
        assert_eq!(serving_status(&frame(&message)), Ok(2));
        assert!(serving_status(&frame(&[0x08])).is_err(), "truncated");
        assert!(serving_status(&[0, 0, 0]).is_err(), "no message");
        let mut long = Vec::new();
        varint(&mut long, 300);
        assert_eq!(long, vec![0xac, 0x02]);
        assert_eq!(read_varint(&long, &mut 0), Ok(300));
        assert_eq!(code_name(12), "Unimplemented");
        assert_eq!(status_name(2), "NOT_SERVING");
    }
}
