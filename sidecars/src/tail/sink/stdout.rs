//! The stdout sink: what `podkit logs` shows for the tail member.
//!
//! It writes to its own duplicate of fd 1, not through `std::io::stdout()` (a `LineWriter`
//! that would split a batch at newlines): one `writev(2)` per batch in the common case, with
//! the fast path's [`Lines`](crate::tail::lines::Lines) passed as they are.

use std::fs::File;
use std::io::{IoSlice, Write};
use std::os::fd::AsFd;
use std::sync::Arc;

use bytes::Bytes;
use tokio::runtime::RuntimeFlavor;

use crate::tail::Output;
use crate::tail::reader::Event;
use crate::tail::sink::SendError;
use crate::tail::sink::encode;

#[derive(Debug)]
pub(crate) struct Stdout {
    output: Output,
    /// A duplicate of fd 1, shared with the blocking thread that writes.
    file: Arc<File>,
}

impl Stdout {
    /// Fails only when fd 1 cannot be duplicated (closed, or out of descriptors).
    pub(crate) fn new(output: Output) -> std::io::Result<Self> {
        let fd = std::io::stdout().as_fd().try_clone_to_owned()?;
        Ok(Stdout {
            output,
            file: Arc::new(File::from(fd)),
        })
    }

    /// Writes the batch: once this returns, the lines are in the pipe. Records are encoded into
    /// one buffer, lines are passed without a copy.
    pub(crate) async fn send(&mut self, batch: &[Event]) -> Result<(), SendError> {
        let mut segments: Vec<Bytes> = Vec::new();
        let mut buf = Vec::new();
        for event in batch {
            match event {
                Event::Record(rec) => match self.output {
                    Output::Raw => {
                        buf.extend_from_slice(rec.message.as_bytes());
                        buf.push(b'\n');
                    }
                    Output::Json => encode::json_line(rec, &mut buf),
                },
                Event::Lines(lines) => {
                    if !buf.is_empty() {
                        segments.push(Bytes::from(std::mem::take(&mut buf)));
                    }
                    segments.push(lines.bytes.clone());
                }
                Event::Open { .. } | Event::Close { .. } => {}
            }
        }
        if !buf.is_empty() {
            segments.push(Bytes::from(buf));
        }
        // The write may block on a full pipe. On a multi-thread runtime it blocks this worker in
        // place (tokio moves the worker's other tasks away): one thread handoff less per batch
        // than `spawn_blocking`, which matters when every core is busy.
        if tokio::runtime::Handle::current().runtime_flavor() == RuntimeFlavor::MultiThread {
            return tokio::task::block_in_place(|| write_all(&self.file, &segments))
                .map_err(SendError::Stdout);
        }
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || write_all(&file, &segments))
            .await
            .map_err(|err| SendError::Stdout(std::io::Error::other(err)))?
            .map_err(SendError::Stdout)
    }
}

/// `write_all` over several buffers with `writev(2)`.
fn write_all(mut out: &File, segments: &[Bytes]) -> std::io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = segments.iter().map(|s| IoSlice::new(s)).collect();
    let mut slices = &mut slices[..];
    // Drops leading empty buffers.
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        match out.write_vectored(slices) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}
