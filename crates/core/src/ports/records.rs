//! The records the state stores keep: bookmarks, table run records, dispatch records, table
//! states and the due index's entries.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::integration::{Integration, RunId};
use crate::manifest::RequestStats;
use crate::{Fault, SyncError};

use super::*;

/// An integration's entry in the due index: when the scheduler must look at it next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wake {
    pub integration: String,
    /// None: nothing to look at (paused, or a state written before the index was built).
    pub at: Option<DateTime<Utc>>,
    /// Raised by every change, so the scheduler's settle never undoes one it did not see.
    pub version: u64,
}

/// A table with a run in progress or waiting: its lease and checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct TableState {
    pub table: String,
    pub lease: Option<Lease>,
    pub checkpoint: Option<Checkpoint>,
}

/// A table of a job not sent yet, and why (stored as `[table, why]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "(String, String)", into = "(String, String)")]
pub struct Unsent {
    pub table: String,
    pub why: String,
}

/// A table of a job held back until another table's run of the same job ends (stored as
/// `[table, waits_for]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "(String, String)", into = "(String, String)")]
pub struct Held {
    pub table: String,
    pub waits_for: String,
}

impl From<(String, String)> for Unsent {
    fn from((table, why): (String, String)) -> Unsent {
        Unsent { table, why }
    }
}

impl From<Unsent> for (String, String) {
    fn from(unsent: Unsent) -> (String, String) {
        (unsent.table, unsent.why)
    }
}

impl From<(String, String)> for Held {
    fn from((table, waits_for): (String, String)) -> Held {
        Held { table, waits_for }
    }
}

impl From<Held> for (String, String) {
    fn from(held: Held) -> (String, String) {
        (held.table, held.waits_for)
    }
}

/// One scheduler decision: a run id dispatched for an integration's tables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DispatchRecord {
    pub integration: String,
    pub run_id: RunId,
    pub tables: Vec<String>,
    pub dispatched_at: DateTime<Utc>,
    /// Tables not dispatched yet, with why (every table, until their invocations are sent):
    /// the next tick dispatches them under the same run id.
    #[serde(default)]
    pub failed: Vec<Unsent>,
    /// Tables held back until another table's run of the same sync ends (tracks until tasks:
    /// [`crate::catalog::TableSpec::waits_for`]), each with the table it waits for: a later tick
    /// sends them (the engine's `lifecycle::held_table_released`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<Held>,
    /// Who started the run. Either way it is the integration's last run for the schedule: a
    /// complete manual sync is recorded too (records written before this field are the
    /// scheduler's).
    #[serde(default)]
    pub started_by: StartedBy,
}

impl DispatchRecord {
    /// Tables still to send (not dispatched yet, or held): the scheduler must look again.
    pub fn has_pending(&self) -> bool {
        !self.failed.is_empty() || !self.held.is_empty()
    }

    /// Whether writing this record must make the integration due now: a manual run's, with
    /// tables still to send. The scheduler's own records are followed by its settle of the
    /// entry (a tick that dies before it leaves the entry due as it found it).
    pub fn needs_a_look(&self) -> bool {
        self.started_by == StartedBy::Manual && self.has_pending()
    }
}

/// What started a run of an integration's tables.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartedBy {
    /// The scheduler (the orchestrator's tick, `run-due`, `schedule`, or a due manual full run
    /// on Lambda).
    #[default]
    Schedule,
    /// By hand: `sync`, or a forced or partial manual run.
    Manual,
}

impl StartedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            StartedBy::Schedule => "schedule",
            StartedBy::Manual => "manual",
        }
    }
}

/// Where incremental replication of one table stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bookmark {
    /// When the last successful run started (its T0, taken before its first request): the
    /// next run asks for changes since this minus the lookback. Capsule calls it lastRunDate.
    pub last_run_started: DateTime<Utc>,
    pub run_id: RunId,
    /// The bookmark this run started from, so a redo of the same run id reads the same window.
    #[serde(default)]
    pub previous: Option<DateTime<Utc>>,
    /// Counts the commits of this table since its bookmark was last dropped (0: written before
    /// generations existed).
    #[serde(default)]
    pub generation: u64,
    /// The integration's backfill count for this table when the committing run started
    /// ([`Integration::backfill_generation`]); below the current count, the bookmark is not read from.
    #[serde(default)]
    pub backfill: u64,
}

impl Bookmark {
    /// Whether runs read from this bookmark: no backfill was ordered since it was written.
    pub fn current_for(&self, integration: &Integration, table: &str) -> bool {
        self.backfill >= integration.backfill_generation(table)
    }
}

/// The bookmark a run started from, which its commit must still find.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BookmarkBase {
    /// Not known (a checkpoint saved before bases were recorded): the commit does not check.
    #[default]
    Unchecked,
    /// The table had no bookmark.
    Absent,
    /// The bookmark of this generation.
    Generation(u64),
}

impl BookmarkBase {
    pub fn of(bookmark: Option<&Bookmark>) -> BookmarkBase {
        bookmark.map_or(BookmarkBase::Absent, |b| BookmarkBase::Generation(b.generation))
    }

    /// The generation the commit writes.
    pub fn next_generation(self) -> u64 {
        match self {
            BookmarkBase::Generation(g) => g + 1,
            BookmarkBase::Absent | BookmarkBase::Unchecked => 1,
        }
    }

    /// Whether `stored` is still this base.
    pub fn matches(self, stored: Option<&Bookmark>) -> bool {
        match (self, stored) {
            (BookmarkBase::Unchecked, _) => true,
            (BookmarkBase::Absent, None) => true,
            (BookmarkBase::Generation(g), Some(b)) => b.generation == g,
            _ => false,
        }
    }

    /// The refusal when it is not.
    pub fn moved(self, integration: &str, table: &str) -> SyncError {
        SyncError::BookmarkMoved(format!(
            "the bookmark of {integration}/{table} changed while this run was running (an edit dropped it for a \
             backfill, or it was moved by hand); nothing was committed, and the next run reads from the new bookmark"
        ))
    }
}

/// How long run and dispatch history is kept unless configured (`CAPSULE_HISTORY_DAYS`).
pub const DEFAULT_HISTORY: Duration = Duration::from_secs(90 * 24 * 3600);

/// How a table run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Running,
    Succeeded,
    Failed,
    /// Another run held the lease.
    Skipped,
    /// Checkpointed (near the time limit, or waiting for the rate-limit window); another
    /// invocation continues the same run.
    Continued,
}

impl RunState {
    /// The word users read (the same as in JSON output).
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Skipped => "skipped",
            RunState::Continued => "continued",
        }
    }
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error as stored in run records: no secrets, whose fault, retryable or not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorRecord {
    pub error_type: String,
    pub fault: Fault,
    pub retryable: bool,
    pub message: String,
}

impl From<&SyncError> for ErrorRecord {
    fn from(e: &SyncError) -> ErrorRecord {
        ErrorRecord {
            error_type: e.error_type().to_string(),
            fault: e.fault(),
            retryable: e.is_retryable(),
            message: e.to_string(),
        }
    }
}

/// One table run's history record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableRunRecord {
    pub integration: String,
    pub table: String,
    pub run_id: RunId,
    pub state: RunState,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub rows: u64,
    pub files: u64,
    pub bytes: u64,
    #[serde(flatten)]
    pub requests: RequestStats,
    pub since: Option<DateTime<Utc>>,
    pub bookmark_before: Option<DateTime<Utc>>,
    pub bookmark_after: Option<DateTime<Utc>>,
    pub manifest_key: Option<String>,
    pub error: Option<ErrorRecord>,
    /// A continued run waiting for the rate-limit window (or Capsule): when it resumes.
    #[serde(default)]
    pub resumes_at: Option<DateTime<Utc>>,
}

impl TableRunRecord {
    /// A record with nothing counted yet.
    pub fn new(integration: &str, table: &str, run_id: &RunId, state: RunState, at: DateTime<Utc>) -> TableRunRecord {
        TableRunRecord {
            integration: integration.to_string(),
            table: table.to_string(),
            run_id: run_id.clone(),
            state,
            started_at: at,
            finished_at: None,
            rows: 0,
            files: 0,
            bytes: 0,
            requests: RequestStats::default(),
            since: None,
            bookmark_before: None,
            bookmark_after: None,
            manifest_key: None,
            error: None,
            resumes_at: None,
        }
    }

    pub fn seconds(&self) -> f64 {
        self.finished_at.map(|f| (f - self.started_at).num_milliseconds() as f64 / 1000.0).unwrap_or(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsent_and_held_tables_are_stored_as_the_pairs_they_were() {
        let unsent = Unsent { table: "tasks".into(), why: "throttled".into() };
        let held = Held { table: "tracks".into(), waits_for: "tasks".into() };
        assert_eq!(serde_json::to_string(&unsent).unwrap(), r#"["tasks","throttled"]"#);
        assert_eq!(serde_json::to_string(&held).unwrap(), r#"["tracks","tasks"]"#);
        assert_eq!(serde_json::from_str::<Unsent>(r#"["tasks","throttled"]"#).unwrap(), unsent);
        assert_eq!(serde_json::from_str::<Held>(r#"["tracks","tasks"]"#).unwrap(), held);
    }
}
