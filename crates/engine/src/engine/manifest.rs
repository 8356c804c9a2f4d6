//! Assembling a run's manifest from what it wrote.

use chrono::{DateTime, Utc};

use super::*;
use capsule_client::CapsuleClient;
use capsule_core::catalog::{self, TableSpec};
use capsule_core::manifest::RequestStats;
use capsule_core::manifest::{PartFile, RunManifest};
use capsule_core::ports::TableRunRecord;

/// What a run wrote, for its manifest.
pub(super) struct Written<'a> {
    /// The instant its rows are as of: T0, or the T0 of the snapshot they came from.
    pub(super) extracted_at: DateTime<Utc>,
    pub(super) columns: Vec<String>,
    pub(super) files: Vec<capsule_core::manifest::PartFile>,
    pub(super) drift: Drift,
    pub(super) recent: Option<&'a recent::RecentRead>,
    pub(super) discovered_at: Option<DateTime<Utc>>,
}

/// The instant a run's rows are as of: its T0, unless they are another table's snapshot of the
/// same sync (employees from parties), whose T0 they then carry, so the bookmark does not pass
/// changes made after that snapshot. (A discovery from a snapshot only finds parents: the rows
/// are read now.)
pub(super) fn as_of(
    start: &Start,
    table: &TableSpec,
    snapshot: Option<&std::result::Result<RunManifest, String>>,
) -> DateTime<Utc> {
    match (table.fetch, snapshot) {
        (catalog::Fetch::Listings(_), Some(Ok(snapshot))) => snapshot.extracted_at,
        _ => start.started,
    }
}

pub(super) fn add(a: RequestStats, b: RequestStats) -> RequestStats {
    RequestStats {
        requests: a.requests + b.requests,
        retries: a.retries + b.retries,
        rate_limited: a.rate_limited + b.rate_limited,
    }
}

pub(super) fn count_files(record: &mut TableRunRecord, files: &[PartFile]) {
    record.rows = files.iter().map(|f| f.rows).sum();
    record.files = files.len() as u64;
    record.bytes = files.iter().map(|f| f.bytes).sum();
}

impl TableRun<'_> {
    /// The manifest of a run whose files are all durable.
    pub(super) fn manifest(
        &self,
        client: &CapsuleClient,
        start: &Start,
        record: &TableRunRecord,
        written: Written,
    ) -> RunManifest {
        let full = self.table.replication == catalog::Replication::Full;
        RunManifest {
            integration: self.integration.name.to_string(),
            table: self.table.name.to_string(),
            run_id: self.run_id.clone(),
            replication: self.table.replication,
            compression: self.options.writer.compression,
            extracted_at: written.extracted_at,
            finished_at: Utc::now(),
            since: record.since,
            bookmark_before: record.bookmark_before,
            bookmark_after: record.bookmark_after,
            columns: written.columns,
            rows: record.rows,
            bytes: record.bytes,
            files: written.files,
            requests: add(start.earlier_requests(), client.stats()),
            unknown_fields: written.drift.unknown_fields,
            type_mismatches: written.drift.type_mismatches,
            full_refresh_at: full.then_some(written.recent.map_or(start.started, |r| r.window.full_refresh_at)),
            slices_refreshed_at: recent::slices_after(self.integration, self.table, start.started, written.recent),
            discovered_at: written.discovered_at,
            recent_window: written.recent.map(recent::RecentRead::summary),
            hooks: None,
        }
    }
}
