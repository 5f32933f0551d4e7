//! The stdout sink: what `podkit logs` shows for the tail member.

use std::io::Write;

use crate::tail::Output;
use crate::tail::lines::Record;
use crate::tail::sink::SendError;
use crate::tail::sink::encode;

#[derive(Debug)]
pub(crate) struct Stdout {
    output: Output,
    /// Reused between batches.
    buf: Vec<u8>,
}

impl Stdout {
    pub(crate) fn new(output: Output) -> Self {
        Stdout {
            output,
            buf: Vec::new(),
        }
    }

    /// Writes and flushes the batch: once this returns, the lines are in the pipe. The write
    /// runs on a blocking thread with the buffer moved there (no copy into tokio's buffer).
    pub(crate) async fn send(&mut self, records: &[&Record]) -> Result<(), SendError> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        match self.output {
            Output::Raw => {
                for rec in records {
                    buf.extend_from_slice(rec.message.as_bytes());
                    buf.push(b'\n');
                }
            }
            Output::Json => encode::json_lines(records, &mut buf),
        }
        let (result, buf) = tokio::task::spawn_blocking(move || {
            let mut out = std::io::stdout().lock();
            let result = out.write_all(&buf).and_then(|()| out.flush());
            (result, buf)
        })
        .await
        .map_err(|err| SendError::Stdout(std::io::Error::other(err)))?;
        self.buf = buf;
        result.map_err(SendError::Stdout)
    }
}
