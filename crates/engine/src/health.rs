//! Operational views computed from run records: per-table health, and a one-request probe of a
//! table's endpoint (for `capsule-sync check`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use capsule_client::CapsuleClient;
use capsule_client::since_param;
use capsule_core::Result;
use capsule_core::catalog::{Fetch, TableSpec};
use capsule_core::integration::RunId;
use capsule_core::ports::{ErrorRecord, RunState, TableRunRecord, TableState};

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
    /// The last run is recorded as running, but nothing runs it any more (its process was
    /// killed, or its invocation timed out): the next sync takes the table over. Known only
    /// once [`note_stranded`] has looked at the leases.
    pub stranded: bool,
    /// The table's run has been in progress since then, longer than the deployment allows
    /// (`CAPSULE_RUN_OVERDUE_HOURS`). Known once [`note_overdue`] has looked at the leases.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overdue_since: Option<DateTime<Utc>>,
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
            stranded: false,
            overdue_since: None,
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

/// Marks the tables whose last run is recorded as running while no live holder of that run
/// holds their lease ([`capsule_core::ports::Lease::can_be_taken_over`], or no lease of that run at all).
pub fn note_stranded(health: &mut BTreeMap<String, TableHealth>, states: &[TableState], now: DateTime<Utc>) {
    for h in health.values_mut().filter(|h| h.last_state == RunState::Running) {
        let lease = states.iter().find(|s| s.table == h.table).and_then(|s| s.lease.as_ref());
        let held = lease.is_some_and(|l| l.owner.run == h.last_run && !l.can_be_taken_over(now));
        h.stranded = !held;
    }
}

/// Marks the tables whose run has been in progress (a lease or checkpoint of it) for longer
/// than `after` ([`crate::lifecycle::overdue`]).
pub fn note_overdue(
    health: &mut BTreeMap<String, TableHealth>,
    states: &[TableState],
    after: std::time::Duration,
    now: DateTime<Utc>,
) {
    for run in crate::lifecycle::overdue(states, after, now) {
        if let Some(h) = health.get_mut(&run.table) {
            h.overdue_since = Some(run.since);
        }
    }
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
                fault: capsule_core::Fault::User,
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

    #[test]
    fn a_running_run_without_a_live_holder_is_stranded() {
        use capsule_core::ports::{Lease, LeaseOwner};
        let runs: Vec<TableRunRecord> = ["held", "expired", "taken", "unleased", "gone"]
            .iter()
            .map(|table| record(table, RunState::Running, 1))
            .chain([record("done", RunState::Succeeded, 1)])
            .collect();
        let run_id = runs[0].run_id.clone();
        let now = Utc::now();
        let lease =
            |table: &str, run: &RunId, ttl_secs: i64, process: Option<capsule_core::process::ProcessId>| TableState {
                table: table.into(),
                lease: Some(Lease {
                    expires_at: now + chrono::Duration::seconds(ttl_secs),
                    process,
                    ..Lease::first("acme", table, LeaseOwner::draw(run), now, std::time::Duration::ZERO)
                }),
                checkpoint: None,
            };
        let other_run = RunId::new(now);
        let states = vec![
            lease("held", &run_id, 300, None),
            lease("expired", &run_id, -1, None),
            lease("taken", &other_run, 300, None),
            // A process on this host that does not exist (pids never reach this).
            lease(
                "gone",
                &run_id,
                300,
                Some(capsule_core::process::ProcessId { host: capsule_core::process::this_host(), pid: u32::MAX }),
            ),
        ];
        let mut h = table_health(&runs);
        assert!(h.values().all(|h| !h.stranded), "nothing is known before the leases are read");
        note_stranded(&mut h, &states, now);
        let stranded: Vec<&str> = h.values().filter(|h| h.stranded).map(|h| h.table.as_str()).collect();
        assert_eq!(stranded, ["expired", "gone", "taken", "unleased"]);
    }
}
