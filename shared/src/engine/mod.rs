//! Runs one table of one integration: lease → bookmark → page and write → manifest → commit.
//!
//! The commit protocol: the bookmark moves only after every part file and the manifest are
//! durable, and only while this run still holds the lease. On failure nothing moves, the parts
//! of this attempt are deleted, and a retry of the same run id writes the same keys (stale keys
//! of an earlier attempt are removed when the retry commits), so retries never duplicate files.
//!
//! Near a deadline (Lambda's time limit) a run finishes its current part, saves a checkpoint and
//! ends as `continued`; the continuation (same run id, same lease owner) resumes at the cursor.

mod fetch;
mod row;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use futures::StreamExt;
use rand::Rng;

pub use fetch::{Extracted, Pager, since_param};
pub use row::{RowBuilder, coerce};

use crate::capsule::{CapsuleClient, RequestStats};
use crate::catalog::{self, TableSpec};
use crate::integration::{Integration, IntegrationStatus, RunId};
use crate::output::{self, PartFile, PartWriter, RunManifest, WriterOptions};
use crate::ports::{
    Bookmark, Checkpoint, Cursor, ErrorRecord, Lease, ObjectSink, RunState, StateStore, TableRunRecord,
};
use crate::runlog::RunLog;
use crate::{Result, SyncError};

/// The adapters a run writes through.
#[derive(Clone, Copy)]
pub struct Deps<'a> {
    pub state: &'a dyn StateStore,
    pub sink: &'a dyn ObjectSink,
}

/// Knobs of a table run that aren't integration settings.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    pub writer: WriterOptions,
    /// How long a lease lasts before another run may take it over.
    pub lease_ttl: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions { writer: WriterOptions::default(), lease_ttl: Duration::from_secs(2 * 3600) }
    }
}

/// Called with the rows written so far, after every page.
pub type ProgressFn = dyn Fn(u64) + Send + Sync;

/// Called with a table's name and its rows written so far.
pub type TablesProgress = Arc<dyn Fn(&str, u64) + Send + Sync>;

/// One table run to do.
pub struct TableRun<'a> {
    pub client: &'a CapsuleClient,
    pub deps: Deps<'a>,
    pub integration: &'a Integration,
    pub table: &'static TableSpec,
    pub run_id: &'a RunId,
    pub options: RunOptions,
    pub progress: Option<&'a ProgressFn>,
    /// Checkpoint and stop once this instant passes (between pages); None runs to the end.
    pub deadline: Option<Instant>,
    /// Resume from the run's checkpoint (a continuation invocation).
    pub continuation: bool,
}

/// What a table run did. `error` is set when `record.state` is failed (or skipped).
#[derive(Debug)]
pub struct TableRunOutcome {
    pub record: TableRunRecord,
    pub manifest: Option<RunManifest>,
    pub error: Option<SyncError>,
}

/// Where an invocation starts: fresh, or from a checkpoint.
struct Start {
    owner: String,
    started: DateTime<Utc>,
    checkpoint: Option<Checkpoint>,
}

impl TableRun<'_> {
    /// Runs the table. Never panics on bad input; every failure ends in a failed run record.
    /// The run's process log is saved with it, whatever the outcome.
    pub async fn run(self) -> TableRunOutcome {
        let log = RunLog::new();
        let (outcome, invocation) = self.run_logged(&log).await;
        let key = output::log_key(&self.integration.name, self.table.name, self.run_id, invocation);
        if let Err(e) = self.deps.sink.put(&key, Bytes::from(log.to_ndjson())).await {
            tracing::warn!(event = "run_log_not_saved", %key, error = %e);
        }
        outcome
    }

    async fn run_logged(&self, log: &RunLog) -> (TableRunOutcome, u32) {
        let client = self.client.for_run_logged(log.clone());
        let mut record =
            TableRunRecord::new(&self.integration.name, self.table.name, self.run_id, RunState::Running, Utc::now());
        let start = match self.start().await {
            Ok(start) => start,
            Err(error) => return (self.not_started(record, error, log).await, 1),
        };
        let invocation = start.checkpoint.as_ref().map_or(1, |c| c.invocations + 1);
        record.started_at = start.started;
        let lease = match self
            .deps
            .state
            .acquire_lease(&self.integration.name, self.table.name, &start.owner, self.options.lease_ttl)
            .await
        {
            Ok(lease) => lease,
            Err(error) => return (self.not_started(record, error, log).await, invocation),
        };
        let running = TableRunRecord { since: None, ..record.clone() };
        if let Err(e) = self.deps.state.record_run(&running).await {
            log.warn("run_record_failed", format!("could not record the run as running: {e}"), serde_json::Value::Null);
        }
        log.info(
            "table_run_started",
            format!("{} of {}: run {} (invocation {invocation})", self.table.name, self.integration.name, self.run_id),
            serde_json::json!({"integration": self.integration.name, "table": self.table.name,
                               "run_id": self.run_id, "invocation": invocation}),
        );
        let earlier = start.checkpoint.as_ref().map(|c| c.requests).unwrap_or_default();
        let result = self.extract_and_publish(&client, &start, &lease, &mut record, log).await;
        let now = client.stats();
        record.requests = RequestStats {
            requests: earlier.requests + now.requests,
            retries: earlier.retries + now.retries,
            rate_limited: earlier.rate_limited + now.rate_limited,
        };
        record.finished_at = Some(Utc::now());
        match result {
            Ok(Published::Done(manifest)) => {
                record.state = RunState::Succeeded;
                let bookmark = Bookmark {
                    last_run_started: start.started,
                    run_id: self.run_id.clone(),
                    previous: record.bookmark_before,
                };
                match self.deps.state.commit(&lease, &bookmark, &record).await {
                    Ok(()) => {
                        log.info(
                            "table_run_succeeded",
                            format!(
                                "{} rows in {} files; bookmark moved to {}",
                                record.rows, record.files, start.started
                            ),
                            serde_json::json!({"rows": record.rows, "files": record.files, "bytes": record.bytes,
                                               "requests": record.requests}),
                        );
                        (TableRunOutcome { record, manifest: Some(*manifest), error: None }, invocation)
                    }
                    Err(error) => (fail(self.deps, &lease, record, error, log).await, invocation),
                }
            }
            Ok(Published::Paused(mut checkpoint)) => {
                record.state = RunState::Continued;
                checkpoint.requests = record.requests;
                match self.deps.state.save_checkpoint(&lease, &checkpoint, &record).await {
                    Ok(()) => {
                        log.info(
                            "table_run_continued",
                            format!("time budget spent: checkpoint saved after {} rows; continuing", record.rows),
                            serde_json::json!({"rows": record.rows, "cursor": checkpoint.cursor}),
                        );
                        (TableRunOutcome { record, manifest: None, error: None }, invocation)
                    }
                    Err(error) => (fail(self.deps, &lease, record, error, log).await, invocation),
                }
            }
            Err(error) => (fail(self.deps, &lease, record, error, log).await, invocation),
        }
    }

    /// Fresh runs get a new lease owner and T0; continuations take both from the checkpoint.
    async fn start(&self) -> Result<Start> {
        if !self.continuation {
            let owner = format!("{}/{:08x}", self.run_id, rand::rng().random::<u32>());
            return Ok(Start { owner, started: Utc::now(), checkpoint: None }); // T0: before the first request
        }
        let checkpoint =
            self.deps.state.checkpoint(&self.integration.name, self.table.name, self.run_id).await?.ok_or_else(
                || {
                    SyncError::State(format!(
                        "no checkpoint for run {} of {}/{} to continue from (already finished or never paused)",
                        self.run_id, self.integration.name, self.table.name
                    ))
                },
            )?;
        Ok(Start { owner: checkpoint.owner.clone(), started: checkpoint.started_at, checkpoint: Some(checkpoint) })
    }

    async fn not_started(&self, mut record: TableRunRecord, error: SyncError, log: &RunLog) -> TableRunOutcome {
        record.state = if matches!(error, SyncError::LeaseHeld { .. }) { RunState::Skipped } else { RunState::Failed };
        record.finished_at = Some(Utc::now());
        record.error = Some(ErrorRecord::from(&error));
        let fields = serde_json::json!({"error_type": error.error_type(), "state": record.state});
        log.warn("table_run_not_started", error.to_string(), fields);
        if let Err(e) = self.deps.state.record_run(&record).await {
            tracing::error!(event = "run_record_failed", error = %e);
        }
        TableRunOutcome { record, manifest: None, error: Some(error) }
    }

    async fn extract_and_publish(
        &self,
        client: &CapsuleClient,
        start: &Start,
        lease: &Lease,
        record: &mut TableRunRecord,
        log: &RunLog,
    ) -> Result<Published> {
        let (integration, table, run_id, sink) = (self.integration, self.table, self.run_id, self.deps.sink);
        let columns = integration.column_selection(table)?;
        let (since, cursor, parts) = match &start.checkpoint {
            Some(c) => {
                record.bookmark_before = c.bookmark_before;
                (c.since, c.cursor.clone(), c.parts.clone())
            }
            None => {
                let bookmark = self.deps.state.bookmark(&integration.name, table.name).await?;
                // A redo of a run that already committed starts from where that run started.
                record.bookmark_before = match &bookmark {
                    Some(b) if &b.run_id == run_id => b.previous,
                    Some(b) => Some(b.last_run_started),
                    None => None,
                };
                let lookback = chrono::Duration::minutes(i64::from(integration.lookback_minutes));
                let since = table.replication.uses_since().then(|| match record.bookmark_before {
                    Some(before) => (before - lookback).max(integration.history_start),
                    None => integration.history_start,
                });
                (since, Cursor::default(), Vec::new())
            }
        };
        record.since = since;

        let extracted_at = start.started.to_rfc3339_opts(SecondsFormat::Millis, true);
        let mut rows = RowBuilder::new(table, columns.columns.clone(), run_id.as_str(), &extracted_at);
        if let Some(c) = &start.checkpoint {
            rows.unknown_fields.extend(c.unknown_fields.iter().cloned());
        }
        let mut extraction = fetch::Extraction {
            client,
            table,
            since,
            fan_out: integration.fan_out,
            rows,
            progress: self.progress,
            deadline: self.deadline,
            resume: cursor,
            pages_read: 0,
            log: log.clone(),
            started: start.started,
        };
        let mut writer = PartWriter::new(sink, &integration.name, table.name, run_id, self.options.writer);
        writer.resume_after(parts);
        let extracted = match extraction.run(&mut writer).await {
            Ok(extracted) => extracted,
            Err(e) => {
                writer.abort().await;
                return Err(e);
            }
        };
        if let Extracted::Paused(cursor) = extracted {
            let parts = writer.checkpoint().await?;
            record.rows = parts.iter().map(|f| f.rows).sum();
            record.files = parts.len() as u64;
            record.bytes = parts.iter().map(|f| f.bytes).sum();
            let invocations = start.checkpoint.as_ref().map_or(1, |c| c.invocations + 1);
            return Ok(Published::Paused(Box::new(Checkpoint {
                integration: integration.name.clone(),
                table: table.name.to_string(),
                run_id: run_id.clone(),
                owner: lease.owner.clone(),
                started_at: start.started,
                since,
                bookmark_before: record.bookmark_before,
                cursor,
                parts,
                unknown_fields: extraction.rows.unknown_fields.iter().cloned().collect(),
                requests: RequestStats::default(),
                invocations,
            })));
        }
        let files = writer.finish().await?;
        remove_stale_parts(sink, &integration.name, table.name, run_id, &files, log).await?;
        if !extraction.rows.unknown_fields.is_empty() {
            let fields: Vec<&String> = extraction.rows.unknown_fields.iter().collect();
            log.warn(
                "unknown_fields",
                format!("Capsule returned fields the catalog doesn't know: {fields:?}"),
                serde_json::json!({ "fields": fields }),
            );
        }

        record.rows = files.iter().map(|f| f.rows).sum();
        record.bytes = files.iter().map(|f| f.bytes).sum();
        record.files = files.len() as u64;
        record.bookmark_after = Some(start.started);
        let earlier = start.checkpoint.as_ref().map(|c| c.requests).unwrap_or_default();
        let now = client.stats();
        let manifest = RunManifest {
            integration: integration.name.clone(),
            table: table.name.to_string(),
            run_id: run_id.clone(),
            replication: table.replication,
            compression: self.options.writer.compression,
            extracted_at: start.started,
            finished_at: Utc::now(),
            since,
            bookmark_before: record.bookmark_before,
            bookmark_after: record.bookmark_after,
            columns: columns.names().into_iter().map(str::to_string).collect(),
            rows: record.rows,
            bytes: record.bytes,
            files,
            requests: RequestStats {
                requests: earlier.requests + now.requests,
                retries: earlier.retries + now.retries,
                rate_limited: earlier.rate_limited + now.rate_limited,
            },
            unknown_fields: extraction.rows.unknown_fields.iter().cloned().collect(),
        };
        let key = output::manifest_key(&integration.name, table.name, run_id);
        let body = serde_json::to_vec_pretty(&manifest).map_err(|e| SyncError::Internal(format!("manifest: {e}")))?;
        sink.put(&key, Bytes::from(body)).await?;
        record.manifest_key = Some(key);
        write_schemas(sink, &integration.name, table, &columns.columns).await?;
        Ok(Published::Done(Box::new(manifest)))
    }
}

/// How the extract-and-publish step ended.
enum Published {
    Done(Box<RunManifest>),
    Paused(Box<Checkpoint>),
}

async fn fail(
    deps: Deps<'_>,
    lease: &Lease,
    mut record: TableRunRecord,
    error: SyncError,
    log: &RunLog,
) -> TableRunOutcome {
    record.state = RunState::Failed;
    record.bookmark_after = record.bookmark_before;
    record.error = Some(ErrorRecord::from(&error));
    let fields = serde_json::json!({"error_type": error.error_type(), "fault": error.fault(),
                                    "retryable": error.is_retryable()});
    log.error("table_run_failed", format!("{error}; the bookmark did not move"), fields);
    if let Err(e) = deps.state.record_failure(lease, &record).await {
        tracing::error!(event = "run_record_failed", error = %e);
    }
    TableRunOutcome { record, manifest: None, error: Some(error) }
}

/// Deletes data files under this run's prefix that this attempt did not write (left by an
/// earlier failed attempt of the same run id that had more parts).
async fn remove_stale_parts(
    sink: &dyn ObjectSink,
    integration: &str,
    table: &str,
    run_id: &RunId,
    files: &[PartFile],
    log: &RunLog,
) -> Result<()> {
    let prefix = output::run_data_prefix(integration, table, run_id);
    for key in sink.list(&prefix).await? {
        if !files.iter().any(|f| f.key == key) {
            log.info(
                "stale_part_removed",
                format!("removed {key}, left by an earlier attempt"),
                serde_json::Value::Null,
            );
            sink.delete(&key).await?;
        }
    }
    Ok(())
}

async fn write_schemas(
    sink: &dyn ObjectSink,
    integration: &str,
    table: &TableSpec,
    columns: &[&'static catalog::Column],
) -> Result<()> {
    let (bq_key, sql_key) = output::schema_keys(integration, table.name);
    let bq = serde_json::to_vec_pretty(&catalog::bigquery_schema(table, columns))
        .map_err(|e| SyncError::Internal(format!("schema: {e}")))?;
    sink.put(&bq_key, Bytes::from(bq)).await?;
    sink.put(&sql_key, Bytes::from(catalog::sql_ddl(table, columns))).await
}

/// How the in-process dispatcher runs an integration's tables.
#[derive(Clone, Default)]
pub struct LocalDispatch {
    /// Tables run at the same time (they share the token's rate limit); 0 counts as 1.
    pub concurrency: usize,
    pub progress: Option<TablesProgress>,
}

/// Runs the given tables of an integration with bounded concurrency in this process (the local
/// dispatcher; in AWS each table is its own Lambda invocation). Marks the integration Active
/// after its first successful table run.
pub async fn run_tables(
    client: &CapsuleClient,
    deps: Deps<'_>,
    integration: &Integration,
    tables: &[&'static TableSpec],
    run_id: &RunId,
    options: RunOptions,
    dispatch: LocalDispatch,
) -> Vec<TableRunOutcome> {
    let runs = tables.iter().map(|table| {
        let progress = dispatch.progress.clone();
        async move {
            let per_table = progress.map(|p| {
                let name = table.name;
                Box::new(move |rows: u64| p(name, rows)) as Box<ProgressFn>
            });
            let run = TableRun {
                client,
                deps,
                integration,
                table,
                run_id,
                options,
                progress: per_table.as_deref(),
                deadline: None,
                continuation: false,
            };
            run.run().await
        }
    });
    let outcomes: Vec<TableRunOutcome> =
        futures::stream::iter(runs).buffered(dispatch.concurrency.max(1)).collect().await;
    if outcomes.iter().any(|o| o.record.state == RunState::Succeeded) {
        mark_active(deps.state, &integration.name).await;
    }
    outcomes
}

/// Pending → Active after the first successful table load (a no-op otherwise).
pub async fn mark_active(state: &dyn StateStore, name: &str) {
    let result = async {
        if let Some(mut current) = state.get_integration(name).await?
            && current.status == IntegrationStatus::Pending
        {
            current.status = IntegrationStatus::Active;
            current.updated_at = Utc::now();
            state.update_integration(&current).await?;
        }
        Ok::<(), SyncError>(())
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(event = "status_update_failed", error = %e);
    }
}
