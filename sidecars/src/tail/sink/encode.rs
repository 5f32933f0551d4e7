//! Record encodings shared by the sinks.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use crate::tail::lines::Record;

/// RFC 3339 with nanoseconds, UTC.
pub(crate) fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_nanos(time).to_string()
}

/// Nanoseconds since the epoch, as Loki wants them (a string).
pub(crate) fn unix_nanos(time: SystemTime) -> String {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
        .to_string()
}

/// The JSON object of one record: `file`, `offset`, `time`, `message`, and `stream`/`fields`
/// when known.
pub(crate) fn object(rec: &Record) -> Map<String, Value> {
    let mut obj = Map::new();
    obj.insert("file".into(), json!(&*rec.path));
    obj.insert("offset".into(), json!(rec.offset));
    obj.insert("time".into(), json!(rfc3339(rec.time)));
    obj.insert("message".into(), json!(rec.message));
    if let Some(source) = rec.source {
        obj.insert("stream".into(), json!(source));
    }
    if let Some(fields) = &rec.fields {
        obj.insert("fields".into(), Value::Object(fields.clone()));
    }
    obj
}

/// JSON lines: one object per record.
pub(crate) fn json_lines(records: &[&Record], out: &mut Vec<u8>) {
    for rec in records {
        json_line(rec, out);
    }
}

/// One JSON object and its newline.
pub(crate) fn json_line(rec: &Record, out: &mut Vec<u8>) {
    // Serializing a Map of plain values cannot fail.
    let _ = serde_json::to_writer(&mut *out, &object(rec));
    out.push(b'\n');
}
