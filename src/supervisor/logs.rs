//! Container logs in the CRI format kubelet writes, one file per run of a container:
//! `<RFC 3339 time> <stdout|stderr> <F|P> <line>`, `P` marking a part of a line longer than
//! [`MAX_LINE`] whose rest follows.

use std::path::Path;

use hyper::body::Bytes;
use jiff::Timestamp;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;

use super::attach::{self, Chunk};

/// Longest line written as one record, as CRI runtimes do (containerd uses 16 KiB).
pub const MAX_LINE: usize = 16 * 1024;

struct Record {
    stream: &'static str,
    partial: bool,
    line: Vec<u8>,
}

/// Copies `stdout` and `stderr` into the log file at `path` until both end, and when `echo` is
/// set also to podkit's own stdout as `echo | line` (as `docker compose up` shows its services).
/// The task ends after the last line is written and flushed: await it before reporting the
/// run's exit, and no line is lost. `written` is told after each flush (`GET /logs` followers
/// wait on it). With `tee`, what is read is also sent there as it comes (to attached clients:
/// the bytes as written, not lines), dropped when nobody listens.
pub fn capture<O, E>(
    path: &Path,
    stdout: O,
    stderr: E,
    echo: Option<String>,
    written: watch::Sender<()>,
    tee: Option<broadcast::Sender<Chunk>>,
) -> std::io::Result<JoinHandle<()>>
where
    O: AsyncRead + Unpin + Send + 'static,
    E: AsyncRead + Unpin + Send + 'static,
{
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let (tx, rx) = mpsc::channel::<Record>(256);
    let readers = [
        tokio::spawn(read_lines("stdout", stdout, tx.clone(), tee.clone())),
        tokio::spawn(read_lines("stderr", stderr, tx, tee)),
    ];
    let path = path.to_path_buf();
    Ok(tokio::spawn(async move {
        let result = write_records(tokio::fs::File::from_std(file), rx, echo, &written).await;
        written.send_replace(());
        if let Err(err) = result {
            tracing::error!(path = %path.display(), %err, "failed to write container log");
        }
        for reader in readers {
            let _ = reader.await;
        }
    }))
}

async fn read_lines<R: AsyncRead + Unpin>(
    stream: &'static str,
    mut src: R,
    tx: mpsc::Sender<Record>,
    tee: Option<broadcast::Sender<Chunk>>,
) {
    let channel = if stream == "stdout" {
        attach::STDOUT
    } else {
        attach::STDERR
    };
    let mut buf = Vec::with_capacity(8192);
    let mut chunk = vec![0u8; 8192];
    loop {
        let n = match src.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(tee) = &tee
            && tee.receiver_count() > 0
        {
            let _ = tee.send((channel, Bytes::copy_from_slice(&chunk[..n])));
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut start = 0;
        while let Some(pos) = buf[start..].iter().position(|&b| b == b'\n') {
            let line = buf[start..start + pos].to_vec();
            start += pos + 1;
            if send(&tx, stream, false, line).await.is_err() {
                return;
            }
        }
        buf.drain(..start);
        while buf.len() >= MAX_LINE {
            let part: Vec<u8> = buf.drain(..MAX_LINE).collect();
            if send(&tx, stream, true, part).await.is_err() {
                return;
            }
        }
    }
    // The last line, even without its newline.
    if !buf.is_empty() {
        let _ = send(&tx, stream, false, buf).await;
    }
}

async fn send(
    tx: &mpsc::Sender<Record>,
    stream: &'static str,
    partial: bool,
    line: Vec<u8>,
) -> Result<(), ()> {
    tx.send(Record {
        stream,
        partial,
        line,
    })
    .await
    .map_err(drop)
}

async fn write_records(
    file: tokio::fs::File,
    mut rx: mpsc::Receiver<Record>,
    echo: Option<String>,
    written: &watch::Sender<()>,
) -> std::io::Result<()> {
    let mut out = BufWriter::new(file);
    let mut console = tokio::io::stdout();
    while let Some(record) = rx.recv().await {
        if let Some(prefix) = &echo {
            let mut line = format!("{prefix} | ").into_bytes();
            line.extend_from_slice(&record.line);
            if !record.partial {
                line.push(b'\n');
            }
            // The console is a convenience; the log file is the record, so its errors count and
            // these do not.
            let _ = console.write_all(&line).await;
        }
        let tag = if record.partial { "P" } else { "F" };
        out.write_all(format!("{} {} {tag} ", Timestamp::now(), record.stream).as_bytes())
            .await?;
        out.write_all(&record.line).await?;
        out.write_all(b"\n").await?;
        // Flush when nothing else is queued: cheap under load, prompt when idle.
        if rx.is_empty() {
            out.flush().await?;
            written.send_replace(());
        }
    }
    out.flush().await
}
