//! The stdout sink: what `podkit logs` shows for the tail member.

use tokio::io::AsyncWriteExt;

use crate::tail::Output;
use crate::tail::lines::Record;
use crate::tail::sink::SendError;
use crate::tail::sink::encode;

#[derive(Debug)]
pub(crate) struct Stdout {
    output: Output,
    out: tokio::io::Stdout,
    buf: Vec<u8>,
}

impl Stdout {
    pub(crate) fn new(output: Output) -> Self {
        Stdout {
            output,
            out: tokio::io::stdout(),
            buf: Vec::new(),
        }
    }

    /// Writes and flushes the batch: once this returns, the lines are in the pipe.
    pub(crate) async fn send(&mut self, records: &[&Record]) -> Result<(), SendError> {
        self.buf.clear();
        match self.output {
            Output::Raw => {
                for rec in records {
                    self.buf.extend_from_slice(rec.message.as_bytes());
                    self.buf.push(b'\n');
                }
            }
            Output::Json => encode::json_lines(records, &mut self.buf),
        }
        self.out
            .write_all(&self.buf)
            .await
            .map_err(SendError::Stdout)?;
        self.out.flush().await.map_err(SendError::Stdout)
    }
}
