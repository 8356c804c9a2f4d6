//! Jobs: one run id across its tables, as an operator thinks of a sync ("last night's run"),
//! built from the run records and dispatch records of either backend.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use capsule_core::Result;
use capsule_core::integration::RunId;
use capsule_core::ports::{RunState, StateStore, TableRunRecord};

pub use capsule_core::ports::StartedBy;

/// One run id of one integration across its tables.
#[derive(Debug, Clone, Serialize)]
pub struct Job {
    pub integration: String,
    pub run_id: RunId,
    pub started_by: StartedBy,
    pub started_at: DateTime<Utc>,
    /// When its last table ended; None while a table is still running or waiting.
    pub finished_at: Option<DateTime<Utc>>,
    /// Tables by their latest state.
    pub tables: BTreeMap<String, RunState>,
    /// Tables the scheduler is still to send under this run id (held until another table's run
    /// ends, or whose invoke failed): the latest dispatch's only, as a newer run supersedes it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub to_send: Vec<String>,
    pub rows: u64,
}

impl Job {
    /// How many tables are in `state`.
    pub fn count(&self, state: RunState) -> usize {
        self.tables.values().filter(|s| **s == state).count()
    }

    pub fn seconds(&self) -> Option<f64> {
        self.finished_at.map(|end| (end - self.started_at).num_milliseconds() as f64 / 1000.0)
    }
}

/// The newest `limit` jobs of an integration, newest first.
pub async fn jobs(state: &dyn StateStore, integration: &str, limit: usize) -> Result<Vec<Job>> {
    let records = state.runs(Some(integration), 100_000).await?;
    let dispatches = state.dispatches(integration, 100_000).await?;
    let to_send: Vec<String> = dispatches.first().map_or_else(Vec::new, |latest| {
        let unsent = latest.failed.iter().map(|u| u.table.clone());
        unsent.chain(latest.held.iter().map(|h| h.table.clone())).collect()
    });
    let latest = dispatches.first().map(|d| d.run_id.clone());
    let started_by: BTreeMap<RunId, StartedBy> = dispatches.into_iter().map(|d| (d.run_id, d.started_by)).collect();
    let mut by_run: BTreeMap<RunId, Vec<TableRunRecord>> = BTreeMap::new();
    for r in records {
        by_run.entry(r.run_id.clone()).or_default().push(r); // each newest first
    }
    let mut jobs: Vec<Job> = by_run
        .into_iter()
        .map(|(run_id, records)| {
            let to_send = if latest.as_ref() == Some(&run_id) { to_send.clone() } else { Vec::new() };
            job(integration, run_id, records, &started_by, to_send)
        })
        .collect();
    jobs.sort_by_key(|j| std::cmp::Reverse(j.started_at));
    jobs.truncate(limit);
    Ok(jobs)
}

fn job(
    integration: &str,
    run_id: RunId,
    records: Vec<TableRunRecord>,
    started_by: &BTreeMap<RunId, StartedBy>,
    to_send: Vec<String>,
) -> Job {
    let mut latest: BTreeMap<String, &TableRunRecord> = BTreeMap::new();
    for r in &records {
        latest.entry(r.table.clone()).or_insert(r);
    }
    let open =
        !to_send.is_empty() || latest.values().any(|r| matches!(r.state, RunState::Running | RunState::Continued));
    Job {
        integration: integration.to_string(),
        // A run with no dispatch record was a partial or `--no-schedule` manual one.
        started_by: started_by.get(&run_id).copied().unwrap_or(StartedBy::Manual),
        run_id,
        started_at: records.iter().map(|r| r.started_at).min().unwrap_or_default(),
        finished_at: if open { None } else { latest.values().filter_map(|r| r.finished_at).max() },
        rows: latest.values().filter(|r| r.state == RunState::Succeeded).map(|r| r.rows).sum(),
        tables: latest.into_iter().map(|(t, r)| (t, r.state)).collect(),
        to_send,
    }
}
