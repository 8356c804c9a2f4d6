//! Operational views computed from run records: per-table health, and a one-request probe of a
//! table's endpoint (for `capsule-sync check`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::Result;
use crate::capsule::CapsuleClient;
use crate::catalog::{Fetch, TableSpec};
use crate::engine::since_param;
use crate::integration::RunId;
use crate::ports::{ErrorRecord, RunState, TableRunRecord};

/// How one table of an integration is doing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TableHealth {
    pub table: String,
    pub last_state: RunState,
    pub last_run: RunId,
    pub last_success: Option<DateTime<Utc>>,
    pub last_failure: Option<DateTime<Utc>>,
    pub last_error: Option<ErrorRecord>,
    /// Failed runs since the last success.
    pub consecutive_failures: u32,
    /// Rows of the last successful run.
    pub last_rows: u64,
    /// The last run is continued and waits for the rate-limit window (or Capsule) until then.
    pub resumes_at: Option<DateTime<Utc>>,
}

/// Health per table from run records (any order).
pub fn table_health(runs: &[TableRunRecord]) -> BTreeMap<String, TableHealth> {
    let mut sorted: Vec<&TableRunRecord> = runs.iter().collect();
    sorted.sort_by_key(|r| (r.finished_at.unwrap_or(r.started_at), r.run_id.clone()));
    let mut health: BTreeMap<String, TableHealth> = BTreeMap::new();
    for r in sorted {
        let at = r.finished_at.unwrap_or(r.started_at);
        let h = health.entry(r.table.clone()).or_insert_with(|| TableHealth {
            table: r.table.clone(),
            last_state: r.state,
            last_run: r.run_id.clone(),
            last_success: None,
            last_failure: None,
            last_error: None,
            consecutive_failures: 0,
            last_rows: 0,
            resumes_at: None,
        });
        h.last_state = r.state;
        h.last_run = r.run_id.clone();
        h.resumes_at = r.resumes_at.filter(|_| r.state == RunState::Continued);
        match r.state {
            RunState::Succeeded => {
                h.last_success = Some(at);
                h.consecutive_failures = 0;
                h.last_rows = r.rows;
            }
            RunState::Failed => {
                h.last_failure = Some(at);
                h.last_error = r.error.clone();
                h.consecutive_failures += 1;
            }
            RunState::Skipped | RunState::Continued | RunState::Running => {}
        }
    }
    health
}

/// One cheap authenticated request (`GET /users?perPage=1`): proves the token and the base URL.
pub async fn verify_token(client: &CapsuleClient) -> Result<()> {
    let url = client.url("/users", &[("perPage", "1")])?;
    client.get_json(&url).await.map(|_| ())
}

/// One request to the table's first endpoint (`perPage=1`): can this token read it?
pub async fn probe_table(client: &CapsuleClient, table: &TableSpec) -> Result<()> {
    let listing = match table.fetch {
        Fetch::Listings(listings) => listings[0],
        Fetch::FanOut { discover, .. } => discover[0].listing,
    };
    let since = since_param(Utc::now());
    let mut params: Vec<(&str, &str)> = listing.params.to_vec();
    params.push(("perPage", "1"));
    if table.replication.uses_since() {
        params.push(("since", &since));
    }
    let url = client.url(listing.path, &params)?;
    client.get_listing_page(&url, listing.envelope, &[]).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(table: &str, state: RunState, minute: u32) -> TableRunRecord {
        let at = chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 11, 28, 8, minute, 0).unwrap();
        TableRunRecord {
            integration: "acme".into(),
            table: table.into(),
            run_id: RunId::new(at),
            state,
            started_at: at,
            finished_at: Some(at),
            rows: 5,
            files: 1,
            bytes: 1,
            requests: Default::default(),
            since: None,
            bookmark_before: None,
            bookmark_after: None,
            resumes_at: None,
            manifest_key: None,
            error: (state == RunState::Failed).then(|| ErrorRecord {
                error_type: "CapsuleAuthError".into(),
                fault: crate::Fault::User,
                retryable: false,
                message: "401".into(),
            }),
        }
    }

    #[test]
    fn consecutive_failures_reset_on_success() {
        let runs = vec![
            record("parties", RunState::Failed, 1),
            record("parties", RunState::Succeeded, 2),
            record("parties", RunState::Failed, 3),
            record("parties", RunState::Skipped, 4),
            record("parties", RunState::Failed, 5),
            record("users", RunState::Succeeded, 5),
        ];
        let h = table_health(&runs);
        assert_eq!(h["parties"].consecutive_failures, 2);
        assert_eq!(h["parties"].last_state, RunState::Failed);
        assert_eq!(h["parties"].last_error.as_ref().unwrap().error_type, "CapsuleAuthError");
        assert!(h["parties"].last_success.unwrap() < h["parties"].last_failure.unwrap());
        assert_eq!(h["users"].consecutive_failures, 0);
    }
}
