//! Runs one table of one integration: lease → bookmark → page and write → manifest → commit.
//!
//! The commit protocol: the bookmark moves only after every part file and the manifest are
//! durable, and only while this run still holds the lease. On failure nothing moves, the parts
//! of this attempt are deleted, and a retry of the same run id writes the same keys (stale keys
//! of an earlier attempt are removed when the retry commits), so retries never duplicate files.

mod fetch;
mod row;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use futures::StreamExt;
use rand::Rng;

pub use fetch::{Pager, since_param};
pub use row::{RowBuilder, coerce};

use crate::capsule::CapsuleClient;
use crate::catalog::{self, TableSpec};
use crate::integration::{Integration, IntegrationStatus, RunId};
use crate::output::{self, PartWriter, RunManifest, WriterOptions};
use crate::ports::{Bookmark, ErrorRecord, ObjectSink, RunState, StateStore, TableRunRecord};
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

/// How the in-process dispatcher runs an integration's tables.
#[derive(Clone, Default)]
pub struct LocalDispatch {
    /// Tables run at the same time (they share the token's rate limit); 0 counts as 1.
    pub concurrency: usize,
    pub progress: Option<TablesProgress>,
}

/// What a table run did. `error` is set when `record.state` is failed (or skipped).
#[derive(Debug)]
pub struct TableRunOutcome {
    pub record: TableRunRecord,
    pub manifest: Option<RunManifest>,
    pub error: Option<SyncError>,
}

/// Runs one table. Never panics on bad input; every failure ends in a failed run record.
pub async fn run_table(
    client: &CapsuleClient,
    deps: Deps<'_>,
    integration: &Integration,
    table: &'static TableSpec,
    run_id: &RunId,
    options: RunOptions,
    progress: Option<&ProgressFn>,
) -> TableRunOutcome {
    let started = Utc::now(); // T0: before the first request
    let client = client.for_run();
    let mut record = TableRunRecord {
        integration: integration.name.clone(),
        table: table.name.to_string(),
        run_id: run_id.clone(),
        state: RunState::Running,
        started_at: started,
        finished_at: None,
        rows: 0,
        files: 0,
        bytes: 0,
        requests: Default::default(),
        since: None,
        bookmark_before: None,
        bookmark_after: None,
        manifest_key: None,
        error: None,
    };
    let owner = format!("{run_id}/{:08x}", rand::rng().random::<u32>());
    let lease = match deps.state.acquire_lease(&integration.name, table.name, &owner, options.lease_ttl).await {
        Ok(lease) => lease,
        Err(error) => {
            record.state =
                if matches!(error, SyncError::LeaseHeld { .. }) { RunState::Skipped } else { RunState::Failed };
            record.finished_at = Some(Utc::now());
            record.error = Some(ErrorRecord::from(&error));
            tracing::warn!(event = "table_run_not_started", table = table.name, %error);
            if let Err(e) = deps.state.record_run(&record).await {
                tracing::error!(event = "run_record_failed", error = %e);
            }
            return TableRunOutcome { record, manifest: None, error: Some(error) };
        }
    };
    tracing::info!(event = "table_run_started", integration = %integration.name, table = table.name, run_id = %run_id);

    let result =
        extract_and_publish(&client, deps, integration, table, run_id, started, options, progress, &mut record).await;
    record.requests = client.stats();
    record.finished_at = Some(Utc::now());
    match result {
        Ok(manifest) => {
            record.state = RunState::Succeeded;
            let bookmark =
                Bookmark { last_run_started: started, run_id: run_id.clone(), previous: record.bookmark_before };
            match deps.state.commit(&lease, &bookmark, &record).await {
                Ok(()) => {
                    tracing::info!(
                        event = "table_run_succeeded",
                        table = table.name,
                        rows = record.rows,
                        files = record.files,
                        requests = record.requests.requests,
                    );
                    TableRunOutcome { record, manifest: Some(manifest), error: None }
                }
                Err(error) => fail(deps, &lease, record, error).await,
            }
        }
        Err(error) => fail(deps, &lease, record, error).await,
    }
}

async fn fail(
    deps: Deps<'_>,
    lease: &crate::ports::Lease,
    mut record: TableRunRecord,
    error: SyncError,
) -> TableRunOutcome {
    record.state = RunState::Failed;
    record.bookmark_after = record.bookmark_before;
    record.error = Some(ErrorRecord::from(&error));
    tracing::error!(event = "table_run_failed", table = %record.table, error_type = error.error_type(), %error);
    if let Err(e) = deps.state.record_failure(lease, &record).await {
        tracing::error!(event = "run_record_failed", error = %e);
    }
    TableRunOutcome { record, manifest: None, error: Some(error) }
}

#[allow(clippy::too_many_arguments)]
async fn extract_and_publish(
    client: &CapsuleClient,
    deps: Deps<'_>,
    integration: &Integration,
    table: &'static TableSpec,
    run_id: &RunId,
    started: DateTime<Utc>,
    options: RunOptions,
    progress: Option<&ProgressFn>,
    record: &mut TableRunRecord,
) -> Result<RunManifest> {
    let columns = integration.column_selection(table)?;
    let bookmark = deps.state.bookmark(&integration.name, table.name).await?;
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
    record.since = since;

    let extracted_at = started.to_rfc3339_opts(SecondsFormat::Millis, true);
    let mut extraction = fetch::Extraction {
        client,
        table,
        since,
        fan_out: integration.fan_out,
        rows: RowBuilder::new(table, columns.columns.clone(), run_id.as_str(), &extracted_at),
        progress,
    };
    let mut writer = PartWriter::new(deps.sink, &integration.name, table.name, run_id, options.writer);
    if let Err(e) = extraction.run(&mut writer).await {
        writer.abort().await;
        return Err(e);
    }
    let files = writer.finish().await?;
    remove_stale_parts(deps.sink, &integration.name, table.name, run_id, &files).await?;

    record.rows = files.iter().map(|f| f.rows).sum();
    record.bytes = files.iter().map(|f| f.bytes).sum();
    record.files = files.len() as u64;
    record.bookmark_after = Some(started);
    let manifest = RunManifest {
        integration: integration.name.clone(),
        table: table.name.to_string(),
        run_id: run_id.clone(),
        replication: table.replication,
        compression: options.writer.compression,
        extracted_at: started,
        finished_at: Utc::now(),
        since,
        bookmark_before: record.bookmark_before,
        bookmark_after: record.bookmark_after,
        columns: columns.names().into_iter().map(str::to_string).collect(),
        rows: record.rows,
        bytes: record.bytes,
        files,
        requests: client.stats(),
        unknown_fields: extraction.rows.unknown_fields.iter().cloned().collect(),
    };
    let key = output::manifest_key(&integration.name, table.name, run_id);
    let body = serde_json::to_vec_pretty(&manifest).map_err(|e| SyncError::Internal(format!("manifest: {e}")))?;
    deps.sink.put(&key, Bytes::from(body)).await?;
    record.manifest_key = Some(key);
    write_schemas(deps.sink, &integration.name, table, &columns.columns).await?;
    Ok(manifest)
}

/// Deletes data files under this run's prefix that this attempt did not write (left by an
/// earlier failed attempt of the same run id that had more parts).
async fn remove_stale_parts(
    sink: &dyn ObjectSink,
    integration: &str,
    table: &str,
    run_id: &RunId,
    files: &[output::PartFile],
) -> Result<()> {
    let prefix = output::run_data_prefix(integration, table, run_id);
    for key in sink.list(&prefix).await? {
        if !files.iter().any(|f| f.key == key) {
            tracing::info!(event = "stale_part_removed", %key);
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
            run_table(client, deps, integration, table, run_id, options, per_table.as_deref()).await
        }
    });
    let outcomes: Vec<TableRunOutcome> =
        futures::stream::iter(runs).buffered(dispatch.concurrency.max(1)).collect().await;
    if integration.status == IntegrationStatus::Pending
        && outcomes.iter().any(|o| o.record.state == RunState::Succeeded)
        && let Err(e) = mark_active(deps.state, &integration.name).await
    {
        tracing::warn!(event = "status_update_failed", error = %e);
    }
    outcomes
}

async fn mark_active(state: &dyn StateStore, name: &str) -> Result<()> {
    if let Some(mut current) = state.get_integration(name).await?
        && current.status == IntegrationStatus::Pending
    {
        current.status = IntegrationStatus::Active;
        current.updated_at = Utc::now();
        state.update_integration(&current).await?;
    }
    Ok(())
}
