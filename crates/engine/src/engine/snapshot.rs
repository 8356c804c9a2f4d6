//! A committed snapshot's rows read back from the output, one at a time: what a recent read
//! carries over from the previous run, and what a discovery reads instead of a listing another
//! table of the same sync has just read ([`of_same_listing`]). Files are fetched a 256 KiB slice at a time
//! ([`ObjectSink::get_range`]) and decompressed as they come, so memory stays flat whatever
//! the snapshot's size.

use std::io::Write;

use chrono::{DateTime, Utc};
use flate2::write::MultiGzDecoder;

use crate::output;
use capsule_client::RawRecord;
use capsule_core::catalog::{self, TableSpec};
use capsule_core::integration::{Integration, RunId};
use capsule_core::manifest::{Compression, RunManifest};
use capsule_core::ports::{ObjectSink, StateStore};
use capsule_core::{Result, SyncError};

/// The snapshot the table named by `table.snapshot_source()` committed earlier in this sync
/// (`run_id`), if it can stand in for `table`'s listings or discovery listing: committed by this
/// very run, read over at least this run's window (`since`; None: the whole table), and keeping
/// every field this run reads ([`TableSpec::fields_from_snapshot`] of the `selected` columns).
/// Why not, otherwise.
pub(crate) async fn of_same_listing(
    (state, sink): (&dyn StateStore, &dyn ObjectSink),
    (integration, table, run_id): (&Integration, &TableSpec, &RunId),
    since: Option<DateTime<Utc>>,
    selected: &[String],
) -> std::result::Result<RunManifest, String> {
    let Some(source) = table.snapshot_source().and_then(catalog::table) else {
        return Err("no other table reads its listing".into());
    };
    let not_yet = || format!("{} has not committed in this sync (yet)", source.name);
    let bookmark = state.bookmark(&integration.name, source.name).await.map_err(|e| e.to_string())?;
    if bookmark.is_none_or(|b| &b.run_id != run_id) {
        return Err(not_yet());
    }
    let key = output::manifest_key(&integration.name, source.name, run_id);
    let body = sink.get(&key).await.map_err(|e| e.to_string())?.ok_or_else(not_yet)?;
    let snapshot: RunManifest =
        serde_json::from_slice(&body).map_err(|e| format!("{key} is not a run manifest: {e}"))?;
    let needed = table.fields_from_snapshot(selected);
    if let Some(missing) = needed.into_iter().find(|f| !snapshot.columns.iter().any(|c| c == f)) {
        return Err(format!("the column selection of {} leaves out `{missing}`", source.name));
    }
    let covers = match (snapshot.since, since) {
        (None, _) => true,
        (Some(theirs), Some(ours)) => theirs <= ours,
        (Some(_), None) => false,
    };
    if !covers {
        let theirs = snapshot.since.map_or_else(String::new, |t| t.to_rfc3339());
        let ours = since.map_or_else(|| "the whole table".to_string(), |t| format!("changes since {}", t.to_rfc3339()));
        return Err(format!("{} read changes since {theirs} only, and this run needs {ours}", source.name));
    }
    Ok(snapshot)
}

/// Compressed bytes read from a file at a time (about 3 MiB once decompressed).
const SLICE_BYTES: u64 = 256 << 10;

/// The rows of a snapshot's files, in file order.
pub(crate) struct SnapshotRows<'a> {
    sink: &'a dyn ObjectSink,
    snapshot: &'a RunManifest,
    /// The file being read, and how many of its bytes were fetched.
    file: usize,
    fetched: u64,
    /// Its decompressed text so far, and where the first unread line starts.
    decoder: Decoder,
    start: usize,
    finished: bool,
}

impl<'a> SnapshotRows<'a> {
    pub fn new(sink: &'a dyn ObjectSink, snapshot: &'a RunManifest) -> SnapshotRows<'a> {
        let decoder = Decoder::new(snapshot.compression);
        SnapshotRows { sink, snapshot, file: 0, fetched: 0, decoder, start: 0, finished: false }
    }

    /// The next row (borrowed from the text read: its fields' values are left raw), or `None`
    /// after the last file's last row. A file that is missing, shorter than the manifest says,
    /// not decompressible, or holds a line that is not a JSON object is an error naming it.
    pub async fn next(&mut self) -> Result<Option<RawRecord<'_>>> {
        let line = loop {
            let Some(file) = self.snapshot.files.get(self.file) else { return Ok(None) };
            if let Some(line) = self.next_line() {
                break line;
            }
            if self.fetched < file.bytes {
                self.fetch_slice(&file.key, file.bytes).await?;
            } else if !self.finished {
                self.decoder.finish(&file.key)?;
                self.finished = true;
            } else if self.start < self.decoder.output().len() {
                return Err(SyncError::Output(format!("{} does not end with a newline", file.key)));
            } else {
                self.file += 1;
                (self.fetched, self.start, self.finished) = (0, 0, false);
                self.decoder = Decoder::new(self.snapshot.compression);
            }
        };
        let key = &self.snapshot.files[self.file].key;
        let not_a_row =
            |e: &dyn std::fmt::Display| SyncError::Output(format!("a row of {key} is not a JSON object: {e}"));
        let text = std::str::from_utf8(&self.decoder.output()[line]).map_err(|e| not_a_row(&e))?;
        RawRecord::parse(text).map(Some).map_err(|e| not_a_row(&e))
    }

    /// Where the next complete, non-empty line of the current file's text is.
    fn next_line(&mut self) -> Option<std::ops::Range<usize>> {
        let text = self.decoder.output();
        while let Some(end) = text[self.start..].iter().position(|b| *b == b'\n') {
            let line = self.start..self.start + end;
            self.start += end + 1;
            if !line.is_empty() {
                return Some(line);
            }
        }
        None
    }

    async fn fetch_slice(&mut self, key: &str, bytes: u64) -> Result<()> {
        let end = (self.fetched + SLICE_BYTES).min(bytes);
        let slice = self.sink.get_range(key, self.fetched..end).await?.ok_or_else(|| {
            SyncError::Output(format!("{key} (listed by run {}'s manifest) is missing", self.snapshot.run_id))
        })?;
        if slice.is_empty() {
            return Err(SyncError::Output(format!("{key} is shorter than its manifest says")));
        }
        self.fetched += slice.len() as u64;
        // The lines already read go before more text is added.
        self.decoder.output().drain(..self.start);
        self.start = 0;
        self.decoder.write(&slice, key)
    }
}

/// Undoes a part file's compression, slice by slice.
enum Decoder {
    Gzip(Box<MultiGzDecoder<Vec<u8>>>),
    Plain(Vec<u8>),
}

impl Decoder {
    fn new(compression: Compression) -> Decoder {
        match compression {
            Compression::Gzip => Decoder::Gzip(Box::new(MultiGzDecoder::new(Vec::new()))),
            Compression::None => Decoder::Plain(Vec::new()),
        }
    }

    fn write(&mut self, slice: &[u8], key: &str) -> Result<()> {
        match self {
            Decoder::Gzip(d) => d.write_all(slice).map_err(|e| corrupt(key, e)),
            Decoder::Plain(out) => {
                out.extend_from_slice(slice);
                Ok(())
            }
        }
    }

    fn finish(&mut self, key: &str) -> Result<()> {
        match self {
            Decoder::Gzip(d) => d.try_finish().map_err(|e| corrupt(key, e)),
            Decoder::Plain(_) => Ok(()),
        }
    }

    fn output(&mut self) -> &mut Vec<u8> {
        match self {
            Decoder::Gzip(d) => d.get_mut(),
            Decoder::Plain(out) => out,
        }
    }
}

fn corrupt(key: &str, e: std::io::Error) -> SyncError {
    SyncError::Output(format!("{key} cannot be decompressed: {e}"))
}
