//! Termination messages, as kubelet gives them: each run of a container gets an empty file of
//! the pod's, mounted at its `terminationMessagePath` (image containers); when the run ends, the
//! last 4 KiB of that file become `state.terminated.message`, or, under
//! `FallbackToLogsOnError` with an empty file and a non-zero exit, the end of the run's log
//! (its last 80 lines, at most their last 2 KiB: kubelet's `readLastStringFromContainerLogs`).

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::logs::{Query, Reader};
use crate::spec::Member;

/// kubelet's `MaxContainerTerminationMessageLength`.
const MAX_FILE: u64 = 4096;
/// kubelet's `MaxContainerTerminationMessageLogLines` and `...LogLength`.
const LOG_LINES: u32 = 80;
const LOG_BYTES: usize = 2048;

/// The file of container `name`'s current run: `termination/NAME` in the pod's directory.
fn path(pod_dir: &Path, name: &str) -> PathBuf {
    pod_dir.join("termination").join(name)
}

/// A new empty file for a run of `name`, writable by any user (the container's user may be
/// anyone; kubelet makes it 0666 too). A previous run's file is replaced, not truncated: a
/// process of that run that still holds it open writes into the old one.
pub(crate) fn fresh_file(pod_dir: &Path, name: &str) -> Result<PathBuf, String> {
    let file = path(pod_dir, name);
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("failed to create {}: {e}", dir.display()))?;
    }
    let _ = std::fs::remove_file(&file);
    let made = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&file)
        .and_then(|f| f.set_permissions(std::fs::Permissions::from_mode(0o666)));
    made.map_err(|e| format!("failed to create {}: {e}", file.display()))?;
    Ok(file)
}

/// The message of `member`'s run that just ended with `code`: its file's, else its log's when
/// its policy says so; `None` when there is none.
pub(crate) fn message(pod_dir: &Path, pod: &str, member: &Member, code: i32) -> Option<String> {
    let from_file = member
        .termination_message
        .file
        .as_ref()
        .and_then(|_| file_tail(&path(pod_dir, &member.name)))
        .filter(|m| !m.is_empty());
    if from_file.is_some() {
        return from_file;
    }
    if member.termination_message.from_logs && code != 0 {
        return log_tail(pod_dir, pod, &member.name).filter(|m| !m.is_empty());
    }
    None
}

/// The last [`MAX_FILE`] bytes of `file`, as text.
fn file_tail(file: &Path) -> Option<String> {
    let mut f = std::fs::File::open(file).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(MAX_FILE))).ok()?;
    let mut bytes = Vec::new();
    f.take(MAX_FILE).read_to_end(&mut bytes).ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// The last [`LOG_LINES`] lines of the container's latest run, at most their last
/// [`LOG_BYTES`] bytes.
fn log_tail(pod_dir: &Path, pod: &str, name: &str) -> Option<String> {
    let query = Query::parse(&format!("tailLines={LOG_LINES}")).ok()?;
    let mut reader = Reader::open(pod_dir, pod, name, &query).ok()?;
    let mut text = Vec::new();
    loop {
        let piece = reader.read().ok()?;
        if piece.is_empty() {
            break;
        }
        text.extend_from_slice(&piece);
    }
    let start = text.len().saturating_sub(LOG_BYTES);
    Some(String::from_utf8_lossy(&text[start..]).into_owned())
}
