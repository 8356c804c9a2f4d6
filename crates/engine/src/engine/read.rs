//! Reading a table run's rows: the read mode (whole, recent window, or the same job's snapshot),
//! the extraction, and the checkpoint a parked run leaves.

use chrono::{DateTime, SecondsFormat, Utc};

use super::*;
use crate::lifecycle;
use crate::output::{self, PartWriter};
use crate::warehouse;
use capsule_client::CapsuleClient;
use capsule_core::Result;
use capsule_core::catalog;
use capsule_core::manifest::RequestStats;
use capsule_core::manifest::{PartFile, RunManifest};
use capsule_core::observe::Event;
use capsule_core::ports::{BookmarkBase, Checkpoint, Cursor, TableRunRecord};
use capsule_core::runlog::RunLog;

/// What the API sent that the catalog did not expect: reported in the manifest and the run log.
pub(super) struct Drift {
    pub(super) unknown_fields: Vec<String>,
    pub(super) type_mismatches: Vec<String>,
}

impl Drift {
    fn of(rows: &RowBuilder) -> Drift {
        Drift {
            unknown_fields: rows.unknown_fields.iter().cloned().collect(),
            type_mismatches: rows.type_mismatches.iter().cloned().collect(),
        }
    }

    fn log(&self, log: &RunLog) {
        if !self.unknown_fields.is_empty() {
            log.warn(
                Event::UnknownFields,
                format!("Capsule returned fields the catalog doesn't know: {:?}", self.unknown_fields),
                serde_json::json!({ "fields": self.unknown_fields }),
            );
        }
        if !self.type_mismatches.is_empty() {
            log.warn(
                Event::TypeMismatch,
                format!(
                    "values not of their column's type (written as null, or as JSON text in a text column) in: {}",
                    self.type_mismatches.join(", ")
                ),
                serde_json::json!({ "columns": self.type_mismatches }),
            );
        }
    }
}

/// Where a parked invocation left off.
pub(super) struct Resume {
    pub(super) cursor: Cursor,
    pub(super) parts: Vec<PartFile>,
    pub(super) unknown_fields: Vec<String>,
    pub(super) type_mismatches: Vec<String>,
    pub(super) not_before: Option<DateTime<Utc>>,
    pub(super) base: BookmarkBase,
    pub(super) stalls: capsule_core::ports::Stalls,
}

/// How the extract-and-publish step ended: the manifest and the bookmark the commit expects.
pub(super) enum Published {
    Done(Box<RunManifest>, BookmarkBase),
    Parked(Box<Checkpoint>),
}

impl TableRun<'_> {
    /// The incremental window: a continuation's from its checkpoint, a first invocation's from
    /// the bookmark (a redo of a committed run id reads the window that run read); and the
    /// bookmark it starts from, which the commit must still find.
    pub(super) async fn window(
        &self,
        start: &Start,
        record: &mut TableRunRecord,
        log: &RunLog,
    ) -> Result<(Option<DateTime<Utc>>, BookmarkBase)> {
        if let Some(c) = &start.checkpoint {
            record.bookmark_before = c.bookmark_before;
            return Ok((c.since, c.bookmark_base));
        }
        let bookmark = start.bookmark.clone();
        let base = BookmarkBase::of(bookmark.as_ref());
        if let Some(committed) = &bookmark {
            self.publish_manifest(&committed.run_id, true, log).await;
        }
        record.bookmark_before = match &bookmark {
            // A backfill was ordered since it was written: read from the history start.
            Some(b) if !b.current_for(self.integration, self.table.name) => None,
            Some(b) if &b.run_id == self.run_id => b.previous,
            Some(b) => Some(b.last_run_started),
            None => None,
        };
        let lookback = chrono::Duration::minutes(i64::from(self.integration.lookback_minutes));
        let since = self.table.replication.uses_since().then(|| match record.bookmark_before {
            Some(before) => (before - lookback).max(self.integration.history_start),
            None => self.integration.history_start,
        });
        Ok((since, base))
    }

    pub(super) async fn extract_and_publish(
        &self,
        client: &CapsuleClient,
        start: &Start,
        record: &mut TableRunRecord,
        log: &RunLog,
    ) -> Result<Published> {
        let (integration, table, run_id, sink) = (self.integration, self.table, self.run_id, self.deps.sink);
        let columns = integration.column_selection(table)?;
        let column_names: Vec<String> = columns.names().into_iter().map(str::to_string).collect();
        let (since, base) = self.window(start, record, log).await?;
        record.since = since;
        let window = (since, record.bookmark_before.is_some());
        let listing_snapshot = self.listing_snapshot(start, since, &column_names).await;
        let as_of = as_of(start, table, listing_snapshot.as_ref());
        let mut extraction = self.extraction(client, start, as_of, window, columns.columns.clone(), log);
        extraction.recent = self.read_mode(start, &column_names, log).await?.map(|w| recent::RecentRead::new(*w));
        extraction.listing_snapshot = listing_snapshot;
        let mut writer = PartWriter::new(sink, &integration.name, table.name, run_id, self.options.writer);
        writer.resume_after(start.checkpoint.as_ref().map(|c| c.parts.clone()).unwrap_or_default());
        let extracted = match extraction.run(&mut writer).await {
            Ok(extracted) => extracted,
            Err(e) => {
                writer.abort().await;
                return Err(e);
            }
        };
        let drift = Drift::of(&extraction.rows);
        if let Extracted::Parked { cursor, not_before, failing } = extracted {
            let stalls = match lifecycle::stalls_after(start.checkpoint.as_ref(), failing) {
                Ok(stalls) => stalls,
                Err(gave_up) => {
                    writer.abort().await;
                    return Err(gave_up);
                }
            };
            let parts = writer.checkpoint().await?;
            count_files(record, &parts);
            let (unknown_fields, type_mismatches) = (drift.unknown_fields, drift.type_mismatches);
            let resume = Resume { cursor: *cursor, parts, unknown_fields, type_mismatches, not_before, base, stalls };
            return Ok(Published::Parked(Box::new(self.checkpoint(start, since, record, resume))));
        }
        let files = writer.finish().await?;
        remove_stale_parts(sink, &integration.name, table.name, run_id, &files, log).await?;
        drift.log(log);
        count_files(record, &files);
        record.bookmark_after = Some(as_of);
        let written = Written {
            extracted_at: as_of,
            columns: column_names,
            files,
            drift,
            recent: extraction.recent.as_ref(),
            discovered_at: extraction.discovered_at,
        };
        let manifest = self.manifest(client, start, record, written);
        sink.put(
            &output::pending_manifest_key(&integration.name, table.name, run_id),
            capsule_core::manifest::manifest_body(&manifest),
        )
        .await?;
        record.manifest_key = Some(output::manifest_key(&integration.name, table.name, run_id));
        warehouse::write_kits_once(self.deps.state, sink, integration).await?;
        Ok(Published::Done(Box::new(manifest), base))
    }

    /// For a run's first invocation, of a table whose listing (or discovery listing, when it
    /// discovers) another table reads: that table's snapshot of this sync, or why it cannot
    /// stand in ([`snapshot::of_same_listing`]).
    pub(super) async fn listing_snapshot(
        &self,
        start: &Start,
        since: Option<DateTime<Utc>>,
        columns: &[String],
    ) -> Option<std::result::Result<capsule_core::manifest::RunManifest, String>> {
        let exhaustive = matches!(self.table.fetch, catalog::Fetch::FanOut { .. })
            && self.integration.fan_out != capsule_core::integration::FanOutMode::Discover;
        if start.checkpoint.is_some() || exhaustive || self.table.snapshot_source().is_none() {
            return None;
        }
        let stores = (self.deps.state, self.deps.sink);
        let run = (self.integration, self.table, self.run_id);
        Some(snapshot::of_same_listing(stores, run, since, columns).await)
    }

    /// A full table's read: a recent window if the integration asks for one and it can be used
    /// ([`recent::choose`]); why not is logged.
    pub(super) async fn read_mode(
        &self,
        start: &Start,
        columns: &[String],
        log: &RunLog,
    ) -> Result<Option<Box<recent::Window>>> {
        let stores = (self.deps.state, self.deps.sink);
        let when = (start.started, columns);
        match recent::choose(stores, self.integration, self.table, self.run_id, when).await? {
            recent::ReadMode::Recent(window) => Ok(Some(window)),
            recent::ReadMode::Whole { why: Some(why) } => {
                log.info(
                    Event::FullRefresh,
                    format!("reading the whole table: {why}"),
                    serde_json::json!({"why": why}),
                );
                Ok(None)
            }
            recent::ReadMode::Whole { why: None } => Ok(None),
        }
    }

    pub(super) fn extraction<'e>(
        &'e self,
        client: &'e CapsuleClient,
        start: &Start,
        as_of: DateTime<Utc>,
        (since, from_bookmark): (Option<DateTime<Utc>>, bool),
        columns: Vec<&'static catalog::Column>,
        log: &RunLog,
    ) -> fetch::Extraction<'e> {
        let extracted_at = as_of.to_rfc3339_opts(SecondsFormat::Millis, true);
        let mut rows = RowBuilder::new(self.table, columns, self.run_id.as_str(), &extracted_at);
        if let Some(c) = &start.checkpoint {
            rows.unknown_fields.extend(c.unknown_fields.iter().cloned());
            rows.type_mismatches.extend(c.type_mismatches.iter().cloned());
        }
        fetch::Extraction {
            client,
            sink: self.deps.sink,
            integration: &self.integration.name,
            run_id: self.run_id,
            table: self.table,
            since,
            from_bookmark,
            recent: None,
            fan_out: self.integration.fan_out,
            rows,
            progress: self.progress.as_deref(),
            deadline: self.deadline,
            resume: start.checkpoint.as_ref().map(|c| c.cursor.clone()).unwrap_or_default(),
            pages_read: 0,
            log: log.clone(),
            started: start.started,
            listing_snapshot: None,
            discovered_at: None,
        }
    }

    pub(super) fn checkpoint(
        &self,
        start: &Start,
        since: Option<DateTime<Utc>>,
        record: &TableRunRecord,
        resume: Resume,
    ) -> Checkpoint {
        Checkpoint {
            integration: self.integration.name.to_string(),
            table: self.table.name.to_string(),
            run_id: self.run_id.clone(),
            owner: start.lease.owner.clone(),
            started_at: start.started,
            since,
            bookmark_before: record.bookmark_before,
            cursor: resume.cursor,
            parts: resume.parts,
            unknown_fields: resume.unknown_fields,
            type_mismatches: resume.type_mismatches,
            requests: RequestStats::default(),
            invocations: start.seq(),
            not_before: resume.not_before,
            failures: 0,
            bookmark_base: resume.base,
            stalls: resume.stalls,
            backfill: self.backfill_generation(start),
        }
    }
}
