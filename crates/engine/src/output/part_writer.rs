//! Streams rows into NDJSON part files: encode (gzip or plain) into a small buffer, hand full
//! chunks to the sink's upload while paging continues, roll to a new part at a size limit.
//! Memory stays at about one chunk whatever the table's size.

use std::io::Write;

use bytes::Bytes;
use flate2::write::GzEncoder;

use super::part_key;
use capsule_core::integration::RunId;
use capsule_core::manifest::{Compression, PartFile};
use capsule_core::observe::Event;
use capsule_core::ports::{ObjectSink, ObjectUpload};
use capsule_core::{Result, SyncError};

/// Part writer settings.
#[derive(Debug, Clone, Copy)]
pub struct WriterOptions {
    pub compression: Compression,
    /// Start a new part once a part reaches this many (compressed) bytes.
    pub part_max_bytes: u64,
    /// Hand the upload a chunk once this many bytes are buffered: S3's smallest part (5 MiB),
    /// since a sync holds about one chunk per table it writes at once.
    pub chunk_bytes: usize,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions { compression: Compression::Gzip, part_max_bytes: 128 << 20, chunk_bytes: 5 << 20 }
    }
}

/// Room above a chunk in its buffer: what one write (a row, a deflate block) may add after the
/// buffer reached a chunk.
const CHUNK_SLACK: usize = 1 << 20;

/// One per open part: the gzip state is boxed so the enum stays small either way.
enum Encoder {
    Gzip(Box<GzEncoder<Vec<u8>>>),
    Plain(Vec<u8>),
}

impl Encoder {
    fn new(c: Compression) -> Encoder {
        match c {
            Compression::Gzip => Encoder::Gzip(Box::new(GzEncoder::new(Vec::new(), flate2::Compression::default()))),
            Compression::None => Encoder::Plain(Vec::new()),
        }
    }

    fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.write_all(data),
            Encoder::Plain(v) => v.write_all(data),
        }
    }

    /// Pushes everything compressed so far into the buffer (a sync flush: deflate otherwise
    /// holds whole blocks back, and part sizes would be unknown until the part closes).
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.flush(),
            Encoder::Plain(_) => Ok(()),
        }
    }

    fn buffered(&self) -> usize {
        match self {
            Encoder::Gzip(e) => e.get_ref().len(),
            Encoder::Plain(v) => v.len(),
        }
    }

    /// Takes the encoded bytes so far; the encoder keeps appending to a fresh buffer of
    /// `capacity`: sized for a whole chunk up front, a buffer never doubles past it, and a
    /// sync's memory stays at about one chunk per table being written, whatever the table size.
    fn take(&mut self, capacity: usize) -> Vec<u8> {
        let fresh = Vec::with_capacity(capacity);
        match self {
            Encoder::Gzip(e) => std::mem::replace(e.get_mut(), fresh),
            Encoder::Plain(v) => std::mem::replace(v, fresh),
        }
    }

    fn finish(self) -> std::io::Result<Vec<u8>> {
        match self {
            Encoder::Gzip(e) => e.finish(),
            Encoder::Plain(v) => Ok(v),
        }
    }
}

struct OpenPart {
    key: String,
    upload: Box<dyn ObjectUpload>,
    encoder: Encoder,
    rows: u64,
    /// Encoded bytes already handed to the upload.
    sent: u64,
    /// Raw bytes written since the last encoder flush.
    raw_since_flush: usize,
}

/// Writes one table run's rows as part files under deterministic keys.
pub(crate) struct PartWriter<'a> {
    sink: &'a dyn ObjectSink,
    integration: String,
    table: String,
    run: RunId,
    options: WriterOptions,
    open: Option<OpenPart>,
    done: Vec<PartFile>,
    /// How many of `done` an earlier invocation finished (a checkpoint lists them).
    resumed: usize,
    line: Vec<u8>,
}

impl<'a> PartWriter<'a> {
    pub fn new(sink: &'a dyn ObjectSink, integration: &str, table: &str, run: &RunId, options: WriterOptions) -> Self {
        PartWriter {
            sink,
            integration: integration.to_string(),
            table: table.to_string(),
            run: run.clone(),
            options,
            open: None,
            done: Vec::new(),
            resumed: 0,
            line: Vec::with_capacity(4096),
        }
    }

    /// Continues numbering after parts an earlier invocation of the same run finished.
    pub(crate) fn resume_after(&mut self, finished: Vec<PartFile>) {
        self.resumed = finished.len();
        self.done = finished;
    }

    pub fn rows(&self) -> u64 {
        self.done.iter().map(|p| p.rows).sum::<u64>() + self.open.as_ref().map_or(0, |p| p.rows)
    }

    /// Appends one row, given as a line of JSON without its newline.
    pub(crate) async fn write_line(&mut self, row: &[u8]) -> Result<()> {
        self.line.clear();
        self.line.extend_from_slice(row);
        self.line.push(b'\n');
        if self.open.is_none() {
            self.open_part().await?;
        }
        let part = self.open.as_mut().expect("opened above");
        part.encoder.write_all(&self.line).map_err(|e| SyncError::Output(format!("compressing {}: {e}", part.key)))?;
        part.rows += 1;
        part.raw_since_flush += self.line.len();
        if part.raw_since_flush >= self.options.chunk_bytes {
            part.encoder.flush().map_err(|e| SyncError::Output(format!("compressing {}: {e}", part.key)))?;
            part.raw_since_flush = 0;
        }
        if part.encoder.buffered() >= self.options.chunk_bytes {
            let chunk = part.encoder.take(self.options.chunk_bytes + CHUNK_SLACK);
            part.sent += chunk.len() as u64;
            part.upload.write(Bytes::from(chunk)).await?;
        }
        if part.sent + part.encoder.buffered() as u64 >= self.options.part_max_bytes {
            self.close_part().await?;
        }
        Ok(())
    }

    /// Closes the open part (if any) and returns every part written; after this the parts are
    /// durable at their keys.
    pub async fn finish(mut self) -> Result<Vec<PartFile>> {
        self.close_part().await?;
        Ok(std::mem::take(&mut self.done))
    }

    /// Finishes the open part so a continuation can resume after it.
    pub async fn checkpoint(&mut self) -> Result<Vec<PartFile>> {
        self.close_part().await?;
        Ok(self.done.clone())
    }

    /// Drops the open part and deletes the parts this invocation finished. Parts of earlier
    /// invocations stay: a checkpoint lists them and a retry resumes after them.
    pub async fn abort(mut self) {
        if let Some(part) = self.open.take() {
            part.upload.abort().await;
        }
        for part in &self.done[self.resumed..] {
            if let Err(e) = self.sink.delete(&part.key).await {
                tracing::warn!(event = Event::PartCleanupFailed.as_str(), key = %part.key, error = %e);
            }
        }
    }

    async fn open_part(&mut self) -> Result<()> {
        let n = self.done.len() as u32;
        let key = part_key(&self.integration, &self.table, &self.run, n, self.options.compression);
        let upload = self.sink.begin(&key).await?;
        self.open = Some(OpenPart {
            key,
            upload,
            encoder: Encoder::new(self.options.compression),
            rows: 0,
            sent: 0,
            raw_since_flush: 0,
        });
        Ok(())
    }

    async fn close_part(&mut self) -> Result<()> {
        let Some(mut part) = self.open.take() else {
            return Ok(());
        };
        let rest = match part.encoder.finish() {
            Ok(rest) => rest,
            Err(e) => {
                part.upload.abort().await;
                return Err(SyncError::Output(format!("finishing {}: {e}", part.key)));
            }
        };
        part.sent += rest.len() as u64;
        if !rest.is_empty() {
            part.upload.write(Bytes::from(rest)).await?;
        }
        part.upload.finish().await?;
        tracing::debug!(event = Event::PartWritten.as_str(), key = %part.key, rows = part.rows, bytes = part.sent);
        self.done.push(PartFile { key: part.key, rows: part.rows, bytes: part.sent });
        Ok(())
    }
}
