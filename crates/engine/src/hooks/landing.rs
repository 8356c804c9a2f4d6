//! Landing deliveries: their records become rows of each event's table — the selected columns
//! as the batch sync writes them, plus `_event`, `_received_at`, `_source = hook` and, for a
//! deletion, `_deleted = true` (a tombstone) — in a hook run per table: its part file, then its
//! manifest, published at once (there is no bookmark to commit). A loader therefore sees a
//! hook run whole or not at all, and each exactly once: every landing is a new run.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{SecondsFormat, Utc};
use serde_json::Value;

use capsule_client::RawRecord;
use capsule_core::catalog::{HOOK_SOURCE, TableSpec};
use capsule_core::integration::{Integration, RunId};
use capsule_core::manifest::{self, HookSummary, RequestStats, RunManifest};
use capsule_core::observe::Event;
use capsule_core::ports::ObjectSink;
use capsule_core::{Result, SyncError};

use super::Delivery;
use crate::engine::row::RowBuilder;
use crate::output::{self, PartWriter, WriterOptions};

/// Lands `deliveries` of one integration: one hook run per table they touch. Returns the
/// published manifests.
pub async fn land(
    sink: &dyn ObjectSink,
    integration: &Integration,
    deliveries: &[Delivery],
) -> Result<Vec<RunManifest>> {
    let mut by_table: BTreeMap<&str, Vec<&Delivery>> = BTreeMap::new();
    for d in deliveries {
        by_table.entry(d.event.table.name).or_default().push(d);
    }
    let mut manifests = Vec::new();
    for deliveries in by_table.values() {
        manifests.push(land_table(sink, integration, deliveries[0].event.table, deliveries).await?);
    }
    Ok(manifests)
}

/// One table's hook run.
async fn land_table(
    sink: &dyn ObjectSink,
    integration: &Integration,
    table: &'static TableSpec,
    deliveries: &[&Delivery],
) -> Result<RunManifest> {
    let first = deliveries.iter().map(|d| d.received_at).min().unwrap_or_else(Utc::now);
    let last = deliveries.iter().map(|d| d.received_at).max().unwrap_or(first);
    let run = RunId::hook(first);
    let selection = integration.column_selection(table)?;
    let options = WriterOptions { compression: capsule_core::manifest::Compression::Gzip, ..WriterOptions::default() };
    let mut writer = PartWriter::new(sink, &integration.name, table.name, &run, options);
    let (mut unknown, mut mismatched) = (BTreeSet::new(), BTreeSet::new());
    for delivery in deliveries {
        let received = delivery.received_at.to_rfc3339_opts(SecondsFormat::Millis, true);
        let mut rows = RowBuilder::new(table, selection.columns.clone(), run.as_str(), &received);
        let hook_fields = hook_fields(delivery, &received);
        for record in &delivery.records {
            let record = RawRecord::parse(record.get())
                .map_err(|e| SyncError::Internal(format!("a checked delivery record is not an object: {e}")))?;
            let line = rows.write(&record, &[], &hook_fields, !delivery.event.deletion);
            if let Err(e) = writer.write_line(line).await {
                writer.abort().await;
                return Err(e);
            }
        }
        unknown.append(&mut rows.unknown_fields);
        mismatched.append(&mut rows.type_mismatches);
    }
    let files = writer.finish().await?;
    let manifest = RunManifest {
        integration: integration.name.to_string(),
        table: table.name.to_string(),
        run_id: run.clone(),
        replication: table.replication,
        compression: options.compression,
        extracted_at: first,
        finished_at: Utc::now(),
        since: None,
        bookmark_before: None,
        bookmark_after: None,
        columns: selection.columns.iter().map(|c| c.name.to_string()).collect(),
        rows: files.iter().map(|f| f.rows).sum(),
        bytes: files.iter().map(|f| f.bytes).sum(),
        files,
        requests: RequestStats::default(),
        unknown_fields: unknown.into_iter().collect(),
        type_mismatches: mismatched.into_iter().collect(),
        full_refresh_at: None,
        slices_refreshed_at: None,
        discovered_at: None,
        recent_window: None,
        hooks: Some(HookSummary {
            deliveries: deliveries.len() as u64,
            first_received_at: first,
            last_received_at: last,
        }),
    };
    publish(sink, &manifest).await?;
    tracing::info!(event = Event::HookLanded.as_str(), integration = %integration.name, table = table.name,
                   run_id = %run, deliveries = deliveries.len(), rows = manifest.rows, "hook run published");
    Ok(manifest)
}

/// The hook columns of every row of a delivery.
fn hook_fields(delivery: &Delivery, received: &str) -> [(&'static str, Value); 4] {
    [
        ("_event", Value::from(delivery.event.name)),
        ("_received_at", Value::from(received)),
        ("_source", Value::from(HOOK_SOURCE)),
        ("_deleted", Value::from(delivery.event.deletion)),
    ]
}

/// Its Redshift manifest, then the manifest loaders list: the files were all written before.
async fn publish(sink: &dyn ObjectSink, manifest: &RunManifest) -> Result<()> {
    let (integration, table, run) = (&manifest.integration, &manifest.table, &manifest.run_id);
    let redshift = manifest::redshift_manifest(manifest, |key| sink.locate(key));
    sink.put(&output::redshift_manifest_key(integration, table, run), redshift).await?;
    sink.put(&output::manifest_key(integration, table, run), manifest::manifest_body(manifest)).await
}
