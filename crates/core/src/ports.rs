//! The engine's ports: small traits with a local adapter each (in `capsule-local`) and an AWS
//! adapter each (DynamoDB, S3, Secrets Manager). And the records that cross them.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::budget::RateBudgetStore;
use crate::events::TableSyncEvent;
use crate::integration::{Integration, RunId};
use crate::manifest::{PartFile, RequestStats};
use crate::{Fault, Result, SyncError};

/// Supplies the Capsule token of one integration.
#[async_trait]
pub trait TokenProvider: Send + Sync {
    /// The current token (providers may cache it until it expires).
    async fn token(&self) -> Result<SecretString>;
    /// The token read again, past any cache (OAuth: refreshed), after Capsule refused the last one.
    async fn refresh(&self) -> Result<SecretString> {
        self.token().await
    }
}

/// Where output objects go (a directory, an S3 bucket). Keys use `/` separators.
#[async_trait]
pub trait ObjectSink: Send + Sync {
    /// Starts streaming an object; nothing is visible at `key` until [`ObjectUpload::finish`].
    async fn begin(&self, key: &str) -> Result<Box<dyn ObjectUpload>>;
    /// Writes a small object at once (manifests, schemas).
    async fn put(&self, key: &str, body: Bytes) -> Result<()>;
    /// Reads a whole (small) object; None when absent.
    async fn get(&self, key: &str) -> Result<Option<Bytes>>;
    /// Reads bytes `range` of an object (fewer at its end), so a large object is read a slice at
    /// a time in flat memory; None when absent. `range` must be within the object's size.
    async fn get_range(&self, key: &str, range: std::ops::Range<u64>) -> Result<Option<Bytes>>;
    /// Keys under a prefix.
    async fn list(&self, prefix: &str) -> Result<Vec<String>>;
    /// Removes an object; removing a missing one is not an error.
    async fn delete(&self, key: &str) -> Result<()>;
    /// Removes everything under a folder-like prefix (ending in `/`), unfinished objects included
    /// where the sink can see them (a killed run's `.partial` files locally; S3 keeps incomplete
    /// multipart uploads invisible and its lifecycle rule aborts them).
    async fn remove_prefix(&self, prefix: &str) -> Result<()> {
        for key in self.list(prefix).await? {
            self.delete(&key).await?;
        }
        Ok(())
    }
    /// Where `key` lives, for people (a path, an `s3://` URL).
    fn locate(&self, key: &str) -> String;
}

/// One object being written.
#[async_trait]
pub trait ObjectUpload: Send {
    async fn write(&mut self, chunk: Bytes) -> Result<()>;
    /// Makes the object durable and visible at its key (replacing any previous one).
    async fn finish(self: Box<Self>) -> Result<()>;
    /// Drops everything written; the key is left as it was.
    async fn abort(self: Box<Self>);
}

/// Integrations, bookmarks, leases, checkpoints, run history and the tokens' rate-limit budgets.
/// Every change that could race is conditional.
///
/// A lease belongs to a run (`owner`) and, while an invocation of the run works, to that
/// invocation (`invocation`, its sequence number): every write of a run is fenced on both, so a
/// duplicate or stale invocation can write nothing. Between invocations the lease is *parked*
/// (`invocation` 0) for the one numbered `next`.
#[async_trait]
pub trait StateStore: RateBudgetStore + Send + Sync {
    async fn get_integration(&self, name: &str) -> Result<Option<Integration>>;
    /// Fails if an integration of that name exists.
    async fn create_integration(&self, integration: &Integration) -> Result<()>;
    /// Fails if it does not exist.
    async fn update_integration(&self, integration: &Integration) -> Result<()>;
    async fn list_integrations(&self) -> Result<Vec<Integration>>;
    /// Removes the integration and its bookmarks and leases (run history is kept for audit).
    /// Returns whether it existed.
    async fn delete_integration(&self, name: &str) -> Result<bool>;

    async fn bookmark(&self, integration: &str, table: &str) -> Result<Option<Bookmark>>;

    /// Forgets a table's bookmark: its next run starts from the integration's history start
    /// (a backfill).
    async fn delete_bookmark(&self, integration: &str, table: &str) -> Result<()>;

    /// Takes the lease `wanted` describes for a run's first invocation, unless another run holds
    /// an unexpired one ([`SyncError::LeaseHeld`]). A lease whose holder is gone (expired, or
    /// locally a process that no longer exists) is taken over and returned as `displaced`.
    async fn acquire_lease(&self, wanted: &Lease) -> Result<LeaseGrant>;

    /// Takes a parked lease for invocation `seq` of the run `owner`: only if the lease waits for
    /// exactly that invocation (or its holder stopped renewing it). Anything else is a duplicate
    /// or stale invocation: [`SyncError::Superseded`], nothing written.
    async fn resume_lease(&self, integration: &str, table: &str, owner: &str, seq: u32, ttl: Duration)
    -> Result<Lease>;

    /// Extends a held lease to `lease.expires_at` (the heartbeat); fails if it is no longer held.
    async fn renew_lease(&self, lease: &Lease) -> Result<()>;

    /// Gives a held lease up without a record (a first invocation that found its run already
    /// committed); nothing happens if it is no longer held.
    async fn release_lease(&self, lease: &Lease) -> Result<()>;

    /// Success: stores the bookmark and the run record and releases the lease — all only if
    /// `lease` is still held ([`Lease::lost`] otherwise) and the stored bookmark is still `base`,
    /// the one the run started from ([`SyncError::BookmarkMoved`] otherwise: an edit dropped it
    /// for a backfill). Nothing changes when either fails. Idempotent: committing again what
    /// was committed (a transaction retried after it succeeded) succeeds.
    async fn commit(
        &self,
        lease: &Lease,
        bookmark: &Bookmark,
        base: BookmarkBase,
        record: &TableRunRecord,
    ) -> Result<()>;

    /// Failure: stores the run record. With `retry`, the checkpoint is kept (as given) and the lease
    /// parked for a retry of the same invocation; without, the lease is released and the
    /// checkpoint dropped. The bookmark is untouched either way.
    async fn record_failure(&self, lease: &Lease, record: &TableRunRecord, retry: Option<&Parking>) -> Result<()>;

    /// Stores a run record that holds no lease (a skipped run).
    async fn record_run(&self, record: &TableRunRecord) -> Result<()>;

    /// Run records, newest first; all integrations when `integration` is None.
    async fn runs(&self, integration: Option<&str>, limit: usize) -> Result<Vec<TableRunRecord>>;

    /// Saves where a run stopped (near its time limit, or waiting for the rate-limit window) and
    /// parks the lease for the next invocation — only while `lease` is held — and records the
    /// `continued` run record.
    async fn save_checkpoint(&self, lease: &Lease, parking: &Parking, record: &TableRunRecord) -> Result<()>;

    /// The checkpoint of a run, if it was continued.
    async fn checkpoint(&self, integration: &str, table: &str, run_id: &RunId) -> Result<Option<Checkpoint>>;

    /// Drops a table's checkpoint (of a run that was taken over).
    async fn discard_checkpoint(&self, integration: &str, table: &str) -> Result<()>;

    /// Tables of an integration with a lease or a checkpoint: runs in progress or waiting.
    async fn table_states(&self, integration: &str) -> Result<Vec<TableState>>;

    /// Takes the lock `name` of an integration for `holder` until `ttl` passes, unless another
    /// holder's unexpired lock stands (then false). Taking it again as its holder extends it.
    async fn try_lock(&self, integration: &str, name: &str, holder: &str, ttl: Duration) -> Result<bool>;

    /// Releases the lock if `holder` still holds it.
    async fn unlock(&self, integration: &str, name: &str, holder: &str) -> Result<()>;

    /// Records a scheduled run's dispatch; a record of the same run replaces the earlier one.
    /// A manual run's with tables still to send makes the integration due now in the due index
    /// ([`DispatchRecord::needs_a_look`]).
    async fn record_dispatch(&self, dispatch: &DispatchRecord) -> Result<()>;

    /// The latest dispatch of an integration.
    async fn last_dispatch(&self, integration: &str) -> Result<Option<DispatchRecord>>;

    /// An integration's dispatches, newest first (what the schedule started).
    async fn dispatches(&self, integration: &str, limit: usize) -> Result<Vec<DispatchRecord>>;

    /// The due index: integrations whose wake time is at or before `now`, earliest first, at
    /// most `limit` — one query, however many integrations are registered (the engine's `due` module).
    async fn due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Wake>>;

    /// An integration's entry in the due index (None: not registered, or nothing to look at).
    async fn wake(&self, integration: &str) -> Result<Option<Wake>>;

    /// Brings an integration's wake time forward to `at`; a wake already at or before it stays.
    /// The stores call it themselves from every write that gives the scheduler something to do
    /// (registering or editing an integration, taking or parking a lease).
    async fn wake_by(&self, integration: &str, at: DateTime<Utc>) -> Result<()>;

    /// Sets the wake time the scheduler computed after looking at the integration (None: nothing
    /// to look at until something changes, e.g. paused), only if its entry is still the version
    /// `seen`: a change in between brought it forward, and it stays so (false is returned).
    async fn settle_wake(&self, integration: &str, at: Option<DateTime<Utc>>, seen: u64) -> Result<bool>;
}

/// An integration's entry in the due index: when the scheduler must look at it next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wake {
    pub integration: String,
    /// None: nothing to look at (paused, or a state written before the index was built).
    pub at: Option<DateTime<Utc>>,
    /// Raised by every change, so the scheduler's settle never undoes one it did not see.
    pub version: u64,
}

/// Starts table runs somewhere else (another Lambda invocation; in-process tasks locally).
#[async_trait]
pub trait Dispatcher: Send + Sync {
    async fn dispatch(&self, event: &TableSyncEvent) -> Result<()>;
}

/// Where a paused run resumes: the listing (or parent) and the page to read next.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Cursor {
    /// Index of the listing in the table's fetch plan.
    pub listing: usize,
    /// The fanned-out parent being read: (child path template, parent id).
    pub parent: Option<(String, i64)>,
    /// The next page to read; None = the start of the listing or parent.
    pub next_url: Option<String>,
    /// Re-reads of the current listing so far (deletions shifted its pages).
    #[serde(default)]
    pub pass: u32,
    /// When the current pass over the listing started.
    #[serde(default)]
    pub pass_started: Option<DateTime<Utc>>,
    /// Ids the deleted feed listed just before the pass's first page; others appearing by the
    /// end of the pass mean its pages shifted.
    #[serde(default)]
    pub baseline: Vec<i64>,
    /// Every page of the pass is read; only the check for shifted pages remains.
    #[serde(default)]
    pub checking: bool,
    /// The current pass's record counts (listings with no deleted feed).
    #[serde(default)]
    pub count: PassCount,
    /// Fan-out tables: the object holding the parents found so far (beside the run's manifest:
    /// 100k parents would not fit a DynamoDB item). Complete unless `discovery` is set; never
    /// rediscovered by a continuation.
    #[serde(default)]
    pub parents_key: Option<String>,
    /// Fan-out tables: discovery part way through.
    #[serde(default)]
    pub discovery: Option<Discovery>,
    /// Recent-window runs: how many of the previous snapshot's older rows were carried over,
    /// once they are (they go first, so a continuation never writes them twice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carried_rows: Option<u64>,
    /// Fan-out tables whose parents came from another table's snapshot of the same sync: that
    /// snapshot's T0 (what the discovery saw; the next recent read's cutoff starts from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovered_at: Option<DateTime<Utc>>,
}

/// Parent discovery of a fan-out table, part way through its listings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Discovery {
    /// Index of the discovery route being read.
    pub route: usize,
    /// Its next page; None = the start of the route.
    pub next_url: Option<String>,
    /// Re-reads of the route so far (deletions shifted its pages).
    #[serde(default)]
    pub pass: u32,
    /// The current pass's record counts.
    #[serde(default)]
    pub count: PassCount,
}

/// How a pass over a listing with no deleted feed notices deletions while it pages: it counts
/// the records the listing holds after its first page (when there are more pages), and compares
/// with what its pages showed by the end. Fewer means records were deleted from pages already
/// read, and offset paging may have skipped one. (A creation in the same pass can hide a
/// deletion from this count: the documented limit.)
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassCount {
    /// Records the listing held as the pass began; None when it fitted one page.
    pub at_start: Option<usize>,
    /// Records per full page (as the first page showed).
    pub per_page: usize,
    /// Pages read in this pass.
    pub pages: u32,
    /// Records on the latest page read.
    pub last_items: usize,
}

impl PassCount {
    pub fn read_page(&mut self, items: usize) {
        if self.pages == 0 {
            self.per_page = items;
        }
        self.pages += 1;
        self.last_items = items;
    }

    /// Whether the listing held fewer records by the end of the pass than at its start.
    pub fn shrank(&self) -> bool {
        let at_end = (self.pages.saturating_sub(1) as usize) * self.per_page + self.last_items;
        self.at_start.is_some_and(|start| at_end < start)
    }
}

/// What a continued run needs to carry on as the same run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub integration: String,
    pub table: String,
    pub run_id: RunId,
    /// The lease owner: the continuation takes the lease over as the same owner.
    pub owner: String,
    /// T0 of the run (becomes the bookmark on success).
    pub started_at: DateTime<Utc>,
    pub since: Option<DateTime<Utc>>,
    pub bookmark_before: Option<DateTime<Utc>>,
    pub cursor: Cursor,
    /// Parts already durable.
    pub parts: Vec<PartFile>,
    pub unknown_fields: Vec<String>,
    /// Columns that received values not of their type so far.
    #[serde(default)]
    pub type_mismatches: Vec<String>,
    /// Requests of the earlier invocations.
    pub requests: RequestStats,
    /// How many invocations this run has had so far; the next one is number `invocations + 1`.
    pub invocations: u32,
    /// Not to be resumed before this (the rate-limit window resets, Capsule recovers).
    #[serde(default)]
    pub not_before: Option<DateTime<Utc>>,
    /// Invocations in a row that failed (or were stranded) resuming from this checkpoint.
    #[serde(default)]
    pub failures: u32,
    /// The bookmark the run started from (its commit checks it is still there).
    #[serde(default)]
    pub bookmark_base: BookmarkBase,
    /// The integration's backfill count for the table when the run started (its bookmark carries it).
    #[serde(default)]
    pub backfill: u64,
    /// Invocations in a row that paused because the same request kept failing.
    #[serde(default, skip_serializing_if = "Stalls::is_none")]
    pub stalls: Stalls,
}

/// How many invocations in a row ended on the same failing request (a page that fails every
/// time: persistent 5xx, a malformed body): a checkpoint does not reset it, so the count
/// holds across continuations and the run ends once it reaches
/// the engine's `lifecycle::MAX_STALLED_INVOCATIONS`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Stalls {
    pub request: Option<String>,
    pub count: u32,
}

impl Stalls {
    pub fn is_none(&self) -> bool {
        self.count == 0
    }
}

impl Checkpoint {
    /// The sequence number of the invocation that resumes from it.
    pub fn next_invocation(&self) -> u32 {
        self.invocations + 1
    }
}

/// A checkpoint handed to a run's next invocation, and how long the lease waits for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Parking {
    pub checkpoint: Checkpoint,
    /// The parked lease expires then (after `not_before`, with time to take it).
    pub hold_until: DateTime<Utc>,
}

/// What taking a lease found.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseGrant {
    pub lease: Lease,
    /// Another run's lease that was taken over (its holder had stopped).
    pub displaced: Option<Lease>,
}

/// A table with a run in progress or waiting: its lease and checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct TableState {
    pub table: String,
    pub lease: Option<Lease>,
    pub checkpoint: Option<Checkpoint>,
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
    pub failed: Vec<(String, String)>,
    /// Tables held back until another table's run of the same sync ends (tracks until tasks:
    /// [`crate::catalog::TableSpec::waits_for`]), each with the table it waits for: a later tick
    /// sends them (the engine's `lifecycle::held_table_released`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<(String, String)>,
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

/// A lease on (integration, table): held by one run, and by one invocation of it at a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub integration: String,
    pub table: String,
    /// The run holding it (`<run id>/<random>`).
    pub owner: String,
    pub expires_at: DateTime<Utc>,
    #[serde(default)]
    pub run_id: Option<RunId>,
    /// T0 of the holding run (the key of its `running` record).
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    /// The invocation working under it; 0 while parked between invocations.
    #[serde(default)]
    pub invocation: u32,
    /// The invocation allowed to take it next (while parked), or the holder's own number.
    #[serde(default)]
    pub next: u32,
    /// `host:pid` of a local process holding it: once that process is gone, the lease is free.
    #[serde(default)]
    pub process: Option<String>,
    /// The fencing number: set when a run takes the lease (the instant, in microseconds) and
    /// one higher at every park, resume and recovery, so no two holdings ever share one. Every
    /// write of a run is conditioned on it (with `owner`): an invocation that was presumed dead
    /// and replaced can write nothing, even when it carries the same invocation number.
    #[serde(default)]
    pub fence: u64,
    /// Attempts of this run's first invocation so far: a Lambda retry or the tick's redo of a
    /// killed first invocation takes the lease over as attempt + 1.
    #[serde(default)]
    pub attempt: u32,
}

impl Lease {
    /// The lease a run's first invocation asks for.
    pub fn first(
        integration: &str,
        table: &str,
        owner: &str,
        run_id: &RunId,
        started_at: DateTime<Utc>,
        ttl: Duration,
    ) -> Lease {
        Lease {
            integration: integration.to_string(),
            table: table.to_string(),
            owner: owner.to_string(),
            expires_at: crate::from_now(ttl),
            run_id: Some(run_id.clone()),
            started_at: Some(started_at),
            invocation: 1,
            next: 1,
            process: None,
            fence: Utc::now().timestamp_micros().max(1) as u64,
            attempt: 1,
        }
    }

    /// Whether `other` is this same holding (run, invocation and fencing number).
    pub fn same_holder(&self, other: &Lease) -> bool {
        self.owner == other.owner && self.fence == other.fence
    }

    /// Whether `other` is a holding of the same run (an earlier attempt of its first invocation).
    pub fn same_run(&self, other: &Lease) -> bool {
        self.run_id.is_some() && self.run_id == other.run_id
    }

    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at <= now
    }

    /// Whether its holder has stopped: the lease expired, or the local process that held it is
    /// gone from this host. Such a lease can be taken over, and its run is no longer running.
    pub fn holder_stopped(&self, now: DateTime<Utc>) -> bool {
        self.expired(now) || self.process.as_deref().is_some_and(crate::process::gone)
    }

    /// The lease a parking leaves: no invocation, waiting for the checkpoint's next one.
    pub fn parked(&self, parking: &Parking) -> Lease {
        Lease {
            invocation: 0,
            next: parking.checkpoint.next_invocation(),
            expires_at: parking.hold_until,
            fence: self.fence + 1,
            ..self.clone()
        }
    }

    /// The lease taken for invocation `seq` from a parked (or stranded) one: a new fencing number.
    pub fn resumed(&self, seq: u32, expires_at: DateTime<Utc>) -> Lease {
        Lease { invocation: seq, expires_at, fence: self.fence + 1, ..self.clone() }
    }

    /// The error of a write fenced on this lease after it was lost.
    pub fn lost(&self) -> SyncError {
        SyncError::LeaseLost(format!(
            "the lease on {}/{} is no longer held by {} (fence {}; it expired and another invocation took it); \
             nothing was committed",
            self.integration, self.table, self.owner, self.fence
        ))
    }
}

/// How long run and dispatch history is kept unless configured (`CAPSULE_HISTORY_DAYS`).
pub const DEFAULT_HISTORY: Duration = Duration::from_secs(90 * 24 * 3600);

/// The attempt number of a first invocation taking `previous` over: one more than an earlier
/// attempt of the same run, else 1.
pub fn attempt_after(previous: Option<&Lease>, wanted: &Lease) -> u32 {
    match previous {
        Some(p) if p.same_run(wanted) && p.owner != wanted.owner => p.attempt.max(1) + 1,
        _ => 1,
    }
}

/// Whether `error` is [`Lease::lost`]'s (or a self-fenced heartbeat's): the run may no longer write.
pub fn is_lease_lost(error: &SyncError) -> bool {
    matches!(error, SyncError::LeaseLost(_))
}

/// The refusal of a continuation the lease is not waiting for (a duplicate or stale invocation).
pub fn not_waiting_for(integration: &str, table: &str, owner: &str, seq: u32) -> SyncError {
    SyncError::Superseded(format!(
        "invocation {seq} of {owner} on {integration}/{table} is a duplicate or out of date: the lease is not waiting for it"
    ))
}

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
