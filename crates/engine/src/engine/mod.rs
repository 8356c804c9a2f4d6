//! Runs one table of one integration: lease → bookmark → page and write → manifest → commit.
//!
//! The commit protocol: the bookmark moves only after every part file and the (pending) manifest
//! are durable, only while this run still holds the lease, and only from the bookmark generation
//! the run started from; then the manifest is published for loaders. On failure nothing moves,
//! the attempt's manifests and parts are deleted, and a retry of the same run id writes the same
//! keys (stale keys of an earlier attempt are removed when the retry commits), so retries never
//! duplicate files. A commit whose answer is lost is confirmed against the stored bookmark.
//!
//! Near a deadline (Lambda's time limit), or when the token's rate-limit window is spent for
//! longer than the client waits in place, a run finishes its current part, saves a checkpoint
//! and ends as `continued`; the continuation (same run id, same lease owner, the next
//! invocation number) resumes at the cursor. Who may start, renew, resume and take over is
//! [`crate::lifecycle`]'s business.

mod fetch;
pub mod recent;
mod row;
mod snapshot;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use futures::StreamExt;
use rand::Rng;

pub use fetch::{Extracted, Pager, since_param};
pub use row::{RowBuilder, coerce, matches_all};

use crate::lifecycle::{self, Invocation};
use crate::output::{self, PartFile, PartWriter, RunManifest, WriterOptions};
use crate::warehouse;
use capsule_client::{CapsuleClient, RequestStats};
use capsule_core::catalog::{self, TableSpec};
use capsule_core::integration::{Integration, IntegrationStatus, RunId};
use capsule_core::observe::Event;
use capsule_core::ports::{
    Bookmark, BookmarkBase, Checkpoint, Cursor, ErrorRecord, Lease, ObjectSink, Parking, RunState, StateStore,
    TableRunRecord,
};
use capsule_core::progress::{Activity, ActivityFn};
use capsule_core::runlog::RunLog;
use capsule_core::{Result, SyncError};

/// The adapters a run writes through.
#[derive(Clone, Copy)]
pub struct Deps<'a> {
    pub state: &'a dyn StateStore,
    pub sink: &'a dyn ObjectSink,
}

/// A lease lasts this long unless renewed; the heartbeat renews it every third of it. A run
/// whose process died is taken over after this (locally at once, when its pid is gone).
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(300);

/// How long a parked lease waits for its continuation unless configured: Lambda keeps an
/// asynchronous event queued for up to six hours (its maximum event age), and a newer run must
/// not take the table from a run whose continuation is still on its way.
pub const DEFAULT_PARKED_HOLD: Duration = Duration::from_secs(6 * 3600);

/// A first invocation that finds its table held by a late duplicate of a committed run waits
/// this often, this long each, for the duplicate to refuse itself (an acquire, a read and a
/// release) before it counts the table as held.
const LATE_COPY_WAITS: u32 = 10;
const LATE_COPY_WAIT: Duration = Duration::from_millis(200);

/// Knobs of a table run that aren't integration settings.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    pub writer: WriterOptions,
    /// How long a lease lasts before another run may take it over.
    pub lease_ttl: Duration,
    /// How long a parked lease (and its checkpoint) waits for the continuation past `not_before`.
    pub parked_hold: Duration,
    /// How long past its kill time an invocation's lease may last (clock skew between hosts).
    pub kill_grace: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            writer: WriterOptions::default(),
            lease_ttl: DEFAULT_LEASE_TTL,
            parked_hold: DEFAULT_PARKED_HOLD,
            kill_grace: Duration::from_secs(5),
        }
    }
}

pub use capsule_core::progress::TablesProgress;

/// One table run to do.
pub struct TableRun<'a> {
    pub client: &'a CapsuleClient,
    pub deps: Deps<'a>,
    pub integration: &'a Integration,
    pub table: &'static TableSpec,
    pub run_id: &'a RunId,
    pub options: RunOptions,
    /// Told what the run is doing (pages read, retries, waits), for a live view.
    pub progress: Option<Arc<ActivityFn>>,
    /// Checkpoint and stop once this instant passes (between pages); None runs to the end.
    pub deadline: Option<Instant>,
    /// When the runtime kills this invocation (Lambda's deadline): no lease outlives it, and no
    /// wait is slept in place past the working `deadline`.
    pub kill_at: Option<DateTime<Utc>>,
    /// The run's first invocation, or a continuation from its checkpoint.
    pub invocation: Invocation,
}

/// What a table run did. `error` is set when `record.state` is failed (or skipped).
#[derive(Debug)]
pub struct TableRunOutcome {
    pub record: TableRunRecord,
    pub manifest: Option<RunManifest>,
    pub error: Option<SyncError>,
}

/// What a run wrote, for its manifest.
struct Written<'a> {
    /// The instant its rows are as of: T0, or the T0 of the snapshot they came from.
    extracted_at: DateTime<Utc>,
    columns: Vec<String>,
    files: Vec<output::PartFile>,
    drift: Drift,
    recent: Option<&'a recent::RecentRead>,
    discovered_at: Option<DateTime<Utc>>,
}

/// What the API sent that the catalog did not expect: reported in the manifest and the run log.
struct Drift {
    unknown_fields: Vec<String>,
    type_mismatches: Vec<String>,
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

/// Where an invocation starts: its lease, the run's T0, and the checkpoint it resumes from.
struct Start {
    lease: Lease,
    started: DateTime<Utc>,
    checkpoint: Option<Checkpoint>,
    /// A first invocation's bookmark, read once it held the lease (its window starts there).
    bookmark: Option<Bookmark>,
}

impl Start {
    fn seq(&self) -> u32 {
        self.lease.invocation
    }

    /// Requests of the run's earlier invocations.
    fn earlier_requests(&self) -> RequestStats {
        self.checkpoint.as_ref().map(|c| c.requests).unwrap_or_default()
    }
}

impl TableRun<'_> {
    /// Runs the table. Never panics on bad input; every failure ends in a failed run record.
    /// The run's process log is saved with it, whatever the outcome — except for a refused
    /// duplicate, which writes nothing at all.
    pub async fn run(self) -> TableRunOutcome {
        let log = RunLog::new();
        let (outcome, invocation) = self.run_logged(&log).await;
        if matches!(outcome.error, Some(SyncError::Superseded(_))) {
            return outcome;
        }
        let key = output::log_key(&self.integration.name, self.table.name, self.run_id, invocation);
        if let Err(e) = self.deps.sink.put(&key, Bytes::from(log.to_ndjson())).await {
            tracing::warn!(event = Event::RunLogNotSaved.as_str(), %key, error = %e);
        }
        outcome
    }

    async fn run_logged(&self, log: &RunLog) -> (TableRunOutcome, u32) {
        let mut client = self.client.for_run_logged(log.clone());
        if let Some(progress) = &self.progress {
            client = client.with_activity(progress.clone());
        }
        let mut record =
            TableRunRecord::new(&self.integration.name, self.table.name, self.run_id, RunState::Running, Utc::now());
        let start = match self.start(log).await {
            Ok(start) => start,
            Err(error) => return (self.not_started(record, error, log).await, 1),
        };
        let seq = start.seq();
        record.started_at = start.started;
        self.record_running(&record, seq, log).await;
        let work = self.extract_and_publish(&client, &start, &mut record, log);
        let result = lifecycle::with_heartbeat(self.deps.state, &start.lease, self.lease_timing(), work).await;
        record.requests = add(start.earlier_requests(), client.stats());
        record.finished_at = Some(Utc::now());
        let outcome = match result {
            Ok(Published::Done(manifest, base)) => self.commit(&start, record, *manifest, base, log).await,
            Ok(Published::Paused(checkpoint)) => self.park(&start, record, *checkpoint, log).await,
            Err(error) => self.fail(&start, record, error, log).await,
        };
        (outcome, seq)
    }

    /// Takes the lease: a first invocation as a new owner (cleaning up after a run it took the
    /// table over from), a continuation as the invocation its checkpoint waits for.
    async fn start(&self, log: &RunLog) -> Result<Start> {
        if let Some(reason) = lifecycle::refuse_paused(self.integration, self.invocation) {
            return Err(SyncError::Config(reason));
        }
        match self.invocation {
            Invocation::First => self.start_first(false, log).await,
            Invocation::Redo => self.start_first(true, log).await,
            Invocation::Continue { seq } => self.start_continuation(seq).await,
        }
    }

    /// A run's first invocation. Unless it is an operator's `redo`, an invocation of a run that
    /// already committed, or was superseded by a later one, is refused as a duplicate: when
    /// another invocation of its run (or a later run) holds the lease, or by the bookmark read
    /// once it holds the lease (a commit releases the lease in the same write as it moves the
    /// bookmark, so that read cannot miss one). The refusal writes nothing but the lease it gives
    /// back; the bookmark read is the one the run's window starts from.
    async fn start_first(&self, redo: bool, log: &RunLog) -> Result<Start> {
        let (state, name, table) = (self.deps.state, &self.integration.name, self.table.name);
        let owner = format!("{}/{:08x}", self.run_id, rand::rng().random::<u32>());
        let started = Utc::now(); // T0: before the first request
        let ttl = self.lease_timing().ttl_now();
        let mut waited = 0;
        let grant = loop {
            match state.acquire_lease(&Lease::first(name, table, &owner, self.run_id, started, ttl)).await {
                Err(SyncError::LeaseHeld { holder, .. }) if !redo && self.not_older_than_run_of(&holder) => {
                    return Err(self.duplicate(&format!("run {holder} holds the table")));
                }
                // A late copy of a committed run's event holds the lease only while it reads the
                // bookmark that refuses it: wait for it rather than skip this run's table.
                Err(SyncError::LeaseHeld { holder, .. })
                    if waited < LATE_COPY_WAITS && self.held_by_a_committed_run(&holder).await? =>
                {
                    waited += 1;
                    tokio::time::sleep(LATE_COPY_WAIT).await;
                }
                other => break other?,
            }
        };
        let bookmark = state.bookmark(name, table).await?;
        if !redo && let Err(refused) = self.refuse_committed(bookmark.as_ref()) {
            // A stopped holder this took the lease from is cleaned up after, as by any takeover.
            if let Some(displaced) = grant.displaced.as_ref().filter(|d| !d.same_run(&grant.lease)) {
                lifecycle::clean_up_after(state, self.deps.sink, displaced, self.run_id).await?;
            }
            if let Err(e) = state.release_lease(&grant.lease).await {
                tracing::warn!(event = Event::RunRecordFailed.as_str(), error = %e, "the lease expires by itself");
            }
            return Err(refused);
        }
        let (mut lease, mut started) = (grant.lease, started);
        if let Some(displaced) = &grant.displaced {
            let message = format!("took {table} over from run {} (its holder stopped)", displaced.owner);
            log.warn(Event::LeaseTakenOver, message, serde_json::json!({"from": displaced.owner}));
            if displaced.same_run(&lease) {
                // An earlier attempt of this first invocation, killed: redone from its T0 (an
                // earlier bookmark is safe), so its `running` record is this attempt's too. The
                // stored lease gets that T0 and the attempt count.
                started = displaced.started_at.unwrap_or(started);
                lease.started_at = Some(started);
                state.renew_lease(&lease).await?;
                lifecycle::clean_up_attempt(state, self.deps.sink, displaced).await?;
            } else {
                lifecycle::clean_up_after(state, self.deps.sink, displaced, self.run_id).await?;
                // Removing a big run's files can outlast a short lease: held again from now,
                // before the heartbeat counts from it (refused if another run took it meanwhile).
                lease.expires_at = capsule_core::from_now(self.lease_timing().ttl_now());
                state.renew_lease(&lease).await?;
            }
        }
        if lease.attempt > lifecycle::MAX_FIRST_ATTEMPTS {
            return Err(self.give_up(&lease, started).await);
        }
        Ok(Start { lease, started, checkpoint: None, bookmark })
    }

    /// Ends a run whose first invocation was killed too often: recorded `failed` (replacing its
    /// `running` record), the lease released.
    async fn give_up(&self, lease: &Lease, started: DateTime<Utc>) -> SyncError {
        let (name, table) = (&self.integration.name, self.table.name);
        let error = SyncError::GaveUp(format!(
            "the first invocation of run {} on {name}/{table} was killed {} times before its first checkpoint \
             (each was redone); the run ends here and the next scheduled run starts afresh",
            self.run_id,
            lease.attempt - 1
        ));
        let mut record = TableRunRecord::new(name, table, self.run_id, RunState::Failed, started);
        record.finished_at = Some(Utc::now());
        record.error = Some(ErrorRecord::from(&error));
        if let Err(e) = self.deps.state.record_failure(lease, &record, None).await {
            tracing::error!(event = Event::RunRecordFailed.as_str(), error = %e);
        }
        error
    }

    fn lease_timing(&self) -> lifecycle::LeaseTiming {
        lifecycle::LeaseTiming { ttl: self.options.lease_ttl, kill_at: self.kill_at, grace: self.options.kill_grace }
    }

    /// A duplicate first invocation's refusal: [`SyncError::Superseded`], nothing written.
    fn duplicate(&self, why: &str) -> SyncError {
        let (name, table) = (&self.integration.name, self.table.name);
        tracing::info!(event = Event::DuplicateRefused.as_str(), integration = %name, %table, run_id = %self.run_id, %why);
        SyncError::Superseded(format!(
            "run {} of {name}/{table} was delivered again after {why}: a duplicate event, refused without writing anything",
            self.run_id
        ))
    }

    /// Refuses a first invocation whose run, or a later one, the stored `bookmark` names (read
    /// under the lease). A committed run's bookmark names it until a later run commits: edits
    /// order backfills by count and never drop a bookmark, so the bookmark is the record of
    /// every commit, and a published manifest is never without one naming its run or a later one.
    fn refuse_committed(&self, bookmark: Option<&Bookmark>) -> Result<()> {
        let Some(bookmark) = bookmark else { return Ok(()) };
        if &bookmark.run_id == self.run_id {
            return Err(self.duplicate("it committed"));
        }
        if bookmark.run_id.started_at() > self.run_id.started_at() {
            return Err(self.duplicate(&format!("a later run, {}, committed", bookmark.run_id)));
        }
        Ok(())
    }

    /// Whether the lease holder `holder` (`<run id>/<random>`) belongs to this run or a later one.
    /// Whether the lease `holder` is of a run the bookmark has already moved past (committed or
    /// superseded): a late duplicate, about to refuse itself and give the lease back.
    async fn held_by_a_committed_run(&self, holder: &str) -> Result<bool> {
        let Some(run) = holder.split('/').next().and_then(|id| id.parse::<RunId>().ok()) else { return Ok(false) };
        let bookmark = self.deps.state.bookmark(&self.integration.name, self.table.name).await?;
        Ok(bookmark.is_some_and(|b| b.run_id.started_at() >= run.started_at()))
    }

    fn not_older_than_run_of(&self, holder: &str) -> bool {
        let run = holder.split('/').next().and_then(|id| id.parse::<RunId>().ok());
        run.is_some_and(|run| &run == self.run_id || run.started_at() >= self.run_id.started_at())
    }

    /// A continuation: takes the parked lease for the invocation its checkpoint waits for.
    async fn start_continuation(&self, seq: Option<u32>) -> Result<Start> {
        let (state, name, table) = (self.deps.state, &self.integration.name, self.table.name);
        let checkpoint = state.checkpoint(name, table, self.run_id).await?.ok_or_else(|| {
            SyncError::Superseded(format!(
                "run {} of {name}/{table} has no checkpoint to continue from (it finished, or was taken over)",
                self.run_id
            ))
        })?;
        let seq = seq.unwrap_or(checkpoint.next_invocation());
        if seq != checkpoint.next_invocation() {
            return Err(SyncError::Superseded(format!(
                "invocation {seq} of run {} is out of date: the checkpoint waits for invocation {}",
                self.run_id,
                checkpoint.next_invocation()
            )));
        }
        let ttl = self.lease_timing().ttl_now();
        let lease = state.resume_lease(name, table, &checkpoint.owner, seq, ttl).await?;
        Ok(Start { lease, started: checkpoint.started_at, checkpoint: Some(checkpoint), bookmark: None })
    }

    async fn record_running(&self, record: &TableRunRecord, seq: u32, log: &RunLog) {
        let running = TableRunRecord { since: None, ..record.clone() };
        if let Err(e) = self.deps.state.record_run(&running).await {
            log.warn(
                Event::RunRecordFailed,
                format!("could not record the run as running: {e}"),
                serde_json::Value::Null,
            );
        }
        log.info(
            Event::TableRunStarted,
            format!("{} of {}: run {} (invocation {seq})", self.table.name, self.integration.name, self.run_id),
            serde_json::json!({"integration": self.integration.name, "table": self.table.name,
                               "run_id": self.run_id, "invocation": seq}),
        );
    }

    /// A run that never took its lease: skipped (held by another run, or paused), refused (a
    /// duplicate invocation: nothing written), or failed.
    async fn not_started(&self, mut record: TableRunRecord, error: SyncError, log: &RunLog) -> TableRunOutcome {
        record.state = match error {
            SyncError::LeaseHeld { .. } | SyncError::Superseded(_) => RunState::Skipped,
            SyncError::Config(_) if self.integration.status == IntegrationStatus::Paused => RunState::Skipped,
            _ => RunState::Failed,
        };
        record.finished_at = Some(Utc::now());
        record.error = Some(ErrorRecord::from(&error));
        let fields = serde_json::json!({"error_type": error.error_type(), "state": record.state});
        log.warn(Event::TableRunNotStarted, error.to_string(), fields);
        // A refused duplicate writes nothing; a run that gave up has its record already.
        if !matches!(error, SyncError::Superseded(_) | SyncError::GaveUp(_))
            && let Err(e) = self.deps.state.record_run(&record).await
        {
            tracing::error!(event = Event::RunRecordFailed.as_str(), error = %e);
        }
        TableRunOutcome { record, manifest: None, error: Some(error) }
    }

    /// Success: the bookmark moves to T0, the lease is released.
    async fn commit(
        &self,
        start: &Start,
        mut record: TableRunRecord,
        manifest: RunManifest,
        base: BookmarkBase,
        log: &RunLog,
    ) -> TableRunOutcome {
        record.state = RunState::Succeeded;
        let bookmark = Bookmark {
            // T0, or the T0 of the snapshot the rows came from: later changes are the next run's.
            last_run_started: record.bookmark_after.unwrap_or(start.started),
            run_id: self.run_id.clone(),
            previous: record.bookmark_before,
            generation: base.next_generation(),
            backfill: self.backfill_generation(start),
        };
        if let Err(error) = self.deps.state.commit(&start.lease, &bookmark, base, &record).await {
            match self.commit_outcome(&bookmark, error, log).await {
                CommitOutcome::Landed => {}
                CommitOutcome::Refused(error) => return self.fail(start, record, error, log).await,
                CommitOutcome::Unknown(error) => {
                    return self.end_failed(start, record, error, Outputs::Keep, log).await;
                }
            }
        }
        self.publish_manifest(self.run_id, log).await;
        if let Some(parents) = start.checkpoint.as_ref().and_then(|c| c.cursor.parents_key.as_ref())
            && let Err(e) = self.deps.sink.delete(parents).await
        {
            log.warn(Event::ParentsNotRemoved, format!("{parents}: {e}"), serde_json::Value::Null);
        }
        log.info(
            Event::TableRunSucceeded,
            format!("{} rows in {} files; bookmark moved to {}", record.rows, record.files, bookmark.last_run_started),
            serde_json::json!({"rows": record.rows, "files": record.files, "bytes": record.bytes,
                               "requests": record.requests}),
        );
        TableRunOutcome { record, manifest: Some(manifest), error: None }
    }

    /// The integration's backfill count for the table as the run started (a continuation's
    /// from its checkpoint): what its bookmark will carry.
    fn backfill_generation(&self, start: &Start) -> u64 {
        start.checkpoint.as_ref().map_or(self.integration.backfill_generation(self.table.name), |c| c.backfill)
    }

    /// Publishes a committed run's manifest for loaders. If that fails the run is still
    /// committed: its manifest waits, and the table's next run publishes it.
    async fn publish_manifest(&self, run: &RunId, log: &RunLog) {
        let (sink, name, table) = (self.deps.sink, &self.integration.name, self.table.name);
        match output::publish_pending_manifest(sink, name, table, run).await {
            Ok(Some(manifest)) if run != self.run_id => {
                let message = format!("published the manifest of run {run}, which committed but stopped before");
                log.warn(Event::ManifestPublishedLate, message, serde_json::json!({"run_id": run}));
                self.record_committed(&manifest).await;
            }
            Ok(_) => {}
            Err(e) => {
                let fields = serde_json::json!({"run_id": run});
                log.warn(Event::ManifestNotPublished, format!("{e}; the table's next run publishes it"), fields);
            }
        }
    }

    /// A run whose manifest is published late committed (the bookmark names it): unless its
    /// latest record says so already, a `succeeded` record tells the history (its commit's
    /// outcome was unknown when it ended, and it was recorded failed).
    async fn record_committed(&self, manifest: &RunManifest) {
        let state = self.deps.state;
        let recorded = state.runs(Some(&self.integration.name), 200).await.unwrap_or_default();
        let latest = recorded.iter().find(|r| r.run_id == manifest.run_id && r.table == manifest.table);
        if latest.is_some_and(|r| r.state == RunState::Succeeded) {
            return;
        }
        let (name, run) = (&self.integration.name, &manifest.run_id);
        let mut record = TableRunRecord::new(name, self.table.name, run, RunState::Succeeded, manifest.extracted_at);
        record.finished_at = Some(Utc::now());
        record.requests = manifest.requests;
        (record.rows, record.files, record.bytes) = (manifest.rows, manifest.files.len() as u64, manifest.bytes);
        (record.since, record.bookmark_before, record.bookmark_after) =
            (manifest.since, manifest.bookmark_before, manifest.bookmark_after);
        record.manifest_key = Some(output::manifest_key(name, self.table.name, run));
        if let Err(e) = state.record_run(&record).await {
            tracing::error!(event = Event::RunRecordFailed.as_str(), error = %e);
        }
    }

    /// Whether a commit that reported `error` landed all the same (its answer was lost): then
    /// the run succeeded, and treating it as failed would delete the files its bookmark covers.
    /// When the bookmark cannot be read either, nobody knows: the outputs must stay.
    async fn commit_outcome(&self, bookmark: &Bookmark, error: SyncError, log: &RunLog) -> CommitOutcome {
        match self.deps.state.bookmark(&self.integration.name, self.table.name).await {
            Ok(Some(stored)) if &stored == bookmark => {
                log.warn(
                    Event::CommitConfirmed,
                    format!("the commit reported `{error}` but had landed"),
                    serde_json::Value::Null,
                );
                CommitOutcome::Landed
            }
            Ok(_) => CommitOutcome::Refused(error),
            Err(read) => {
                let message = format!(
                    "the commit reported `{error}` and the bookmark could not be read to confirm it ({read}): its \
                     outputs are kept, and the table's next run publishes them if the bookmark moved"
                );
                log.error(Event::CommitOutcomeUnknown, message.clone(), serde_json::Value::Null);
                CommitOutcome::Unknown(SyncError::State(message))
            }
        }
    }

    /// Paused: the checkpoint is saved and the lease parked for the next invocation.
    async fn park(
        &self,
        start: &Start,
        mut record: TableRunRecord,
        mut checkpoint: Checkpoint,
        log: &RunLog,
    ) -> TableRunOutcome {
        record.state = RunState::Continued;
        record.resumes_at = checkpoint.not_before;
        checkpoint.requests = record.requests;
        let hold_until = lifecycle::hold_until(checkpoint.not_before, self.options.parked_hold);
        let parking = Parking { checkpoint, hold_until };
        if let Err(error) = self.deps.state.save_checkpoint(&start.lease, &parking, &record).await {
            return self.fail(start, record, error, log).await;
        }
        let why = match parking.checkpoint.not_before {
            Some(at) => format!("nothing may be sent to Capsule before {at}"),
            None => "time budget spent".to_string(),
        };
        log.info(
            Event::TableRunContinued,
            format!("{why}: checkpoint saved after {} rows; continuing", record.rows),
            serde_json::json!({"rows": record.rows, "cursor": parking.checkpoint.cursor,
                               "not_before": parking.checkpoint.not_before}),
        );
        TableRunOutcome { record, manifest: None, error: None }
    }

    /// Failure: the bookmark stays. A retryable failure of a continued run keeps its checkpoint
    /// for a retry; otherwise the run ends and its unpublished files are removed — unless its
    /// lease was lost (the keys belong to whoever holds it now: another attempt of this run).
    async fn fail(&self, start: &Start, record: TableRunRecord, error: SyncError, log: &RunLog) -> TableRunOutcome {
        let outputs = match capsule_core::ports::is_lease_lost(&error) {
            // Self-fenced, or a write found the lease gone: the outputs are removed only if a
            // fenced renewal shows the lease is still this invocation's; otherwise whoever holds
            // it (or takes it over next) owns them.
            true if self.deps.state.renew_lease(&start.lease).await.is_ok() => Outputs::Remove,
            true => Outputs::Keep,
            false => Outputs::Remove,
        };
        self.end_failed(start, record, error, outputs, log).await
    }

    async fn end_failed(
        &self,
        start: &Start,
        mut record: TableRunRecord,
        error: SyncError,
        outputs: Outputs,
        log: &RunLog,
    ) -> TableRunOutcome {
        record.state = RunState::Failed;
        record.bookmark_after = record.bookmark_before;
        record.resumes_at = None;
        record.error = Some(ErrorRecord::from(&error));
        let retry = lifecycle::retry_parking(start.checkpoint.as_ref(), &error, self.options.parked_hold);
        let fields = serde_json::json!({"error_type": error.error_type(), "fault": error.fault(),
                                        "retryable": error.is_retryable(), "checkpoint_kept": retry.is_some()});
        log.error(Event::TableRunFailed, format!("{error}; the bookmark did not move"), fields);
        if retry.is_none() && outputs == Outputs::Remove {
            self.remove_run_outputs(log).await;
        }
        if let Err(e) = self.deps.state.record_failure(&start.lease, &record, retry.as_ref()).await {
            tracing::error!(event = Event::RunRecordFailed.as_str(), error = %e);
        }
        TableRunOutcome { record, manifest: None, error: Some(error) }
    }

    /// A run that ended in failure publishes nothing: its unpublished manifest and data files go.
    async fn remove_run_outputs(&self, log: &RunLog) {
        let (sink, name, table) = (self.deps.sink, &self.integration.name, self.table.name);
        if let Err(e) = output::remove_run_outputs(sink, name, table, self.run_id).await {
            let fields = serde_json::json!({"run_id": self.run_id});
            log.warn(Event::RunCleanupFailed, format!("removing the failed run's files: {e}"), fields);
        }
    }

    /// The incremental window: a continuation's from its checkpoint, a first invocation's from
    /// the bookmark (a redo of a committed run id reads the window that run read); and the
    /// bookmark it starts from, which the commit must still find.
    async fn window(
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
            self.publish_manifest(&committed.run_id, log).await;
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

    async fn extract_and_publish(
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
        if let Extracted::Paused { cursor, not_before, failing } = extracted {
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
            return Ok(Published::Paused(Box::new(self.checkpoint(start, since, record, resume))));
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
            output::manifest_body(&manifest),
        )
        .await?;
        record.manifest_key = Some(output::manifest_key(&integration.name, table.name, run_id));
        warehouse::write_kits_once(self.deps.state, sink, integration).await?;
        Ok(Published::Done(Box::new(manifest), base))
    }

    /// The manifest of a run whose files are all durable.
    fn manifest(
        &self,
        client: &CapsuleClient,
        start: &Start,
        record: &TableRunRecord,
        written: Written,
    ) -> RunManifest {
        let full = self.table.replication == catalog::Replication::Full;
        RunManifest {
            integration: self.integration.name.clone(),
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
        }
    }

    /// For a run's first invocation, of a table whose listing (or discovery listing, when it
    /// discovers) another table reads: that table's snapshot of this sync, or why it cannot
    /// stand in ([`snapshot::of_same_listing`]).
    async fn listing_snapshot(
        &self,
        start: &Start,
        since: Option<DateTime<Utc>>,
        columns: &[String],
    ) -> Option<std::result::Result<output::RunManifest, String>> {
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
    async fn read_mode(&self, start: &Start, columns: &[String], log: &RunLog) -> Result<Option<Box<recent::Window>>> {
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

    fn extraction<'e>(
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

    fn checkpoint(
        &self,
        start: &Start,
        since: Option<DateTime<Utc>>,
        record: &TableRunRecord,
        resume: Resume,
    ) -> Checkpoint {
        Checkpoint {
            integration: self.integration.name.clone(),
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

/// Where a paused invocation left off.
struct Resume {
    cursor: Cursor,
    parts: Vec<PartFile>,
    unknown_fields: Vec<String>,
    type_mismatches: Vec<String>,
    not_before: Option<DateTime<Utc>>,
    base: BookmarkBase,
    stalls: capsule_core::ports::Stalls,
}

/// What a commit that reported an error really did.
enum CommitOutcome {
    Landed,
    Refused(SyncError),
    /// Neither the commit's answer nor the bookmark could be read.
    Unknown(SyncError),
}

/// Whether a failed run's unpublished outputs go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outputs {
    Remove,
    Keep,
}

/// How the extract-and-publish step ended: the manifest and the bookmark the commit expects.
enum Published {
    Done(Box<RunManifest>, BookmarkBase),
    Paused(Box<Checkpoint>),
}

/// The instant a run's rows are as of: its T0, unless they are another table's snapshot of the
/// same sync (employees from parties), whose T0 they then carry, so the bookmark does not pass
/// changes made after that snapshot. (A discovery from a snapshot only finds parents: the rows
/// are read now.)
fn as_of(
    start: &Start,
    table: &TableSpec,
    snapshot: Option<&std::result::Result<RunManifest, String>>,
) -> DateTime<Utc> {
    match (table.fetch, snapshot) {
        (catalog::Fetch::Listings(_), Some(Ok(snapshot))) => snapshot.extracted_at,
        _ => start.started,
    }
}

fn add(a: RequestStats, b: RequestStats) -> RequestStats {
    RequestStats {
        requests: a.requests + b.requests,
        retries: a.retries + b.retries,
        rate_limited: a.rate_limited + b.rate_limited,
    }
}

fn count_files(record: &mut TableRunRecord, files: &[PartFile]) {
    record.rows = files.iter().map(|f| f.rows).sum();
    record.files = files.len() as u64;
    record.bytes = files.iter().map(|f| f.bytes).sum();
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
                Event::StalePartRemoved,
                format!("removed {key}, left by an earlier attempt"),
                serde_json::Value::Null,
            );
            sink.delete(&key).await?;
        }
    }
    Ok(())
}

/// How the in-process dispatcher runs an integration's tables.
#[derive(Clone, Default)]
pub struct LocalDispatch {
    /// Tables run at the same time (they share the token's rate limit); 0 counts as 1.
    pub concurrency: usize,
    /// The run id is an operator's re-run of one (`--run-id`): committed tables are redone
    /// ([`Invocation::Redo`]) instead of refused as duplicates.
    pub redo: bool,
    pub progress: Option<TablesProgress>,
}

/// Runs the given tables of an integration with bounded concurrency in this process (the local
/// dispatcher; in AWS each table is its own Lambda invocation). A table that pauses (a rate-limit
/// wait longer than the client waits in place) is continued here once its window resets. A table
/// whose discovery listing another selected table reads (tracks: tasks) waits for that table's
/// run to end, so it finds its snapshot and does not read the listing again. Marks the
/// integration Active after its first successful table run. Outcomes come in the order of `tables`.
pub async fn run_tables(
    client: &CapsuleClient,
    deps: Deps<'_>,
    integration: &Integration,
    tables: &[&'static TableSpec],
    run_id: &RunId,
    options: RunOptions,
    dispatch: LocalDispatch,
) -> Vec<TableRunOutcome> {
    // Started in catalog order, where a table precedes those that discover from its snapshot
    // (a catalog test checks it): a waiting table's source has always started before it.
    let position = |table: &TableSpec| catalog::TABLES.iter().position(|t| t.name == table.name);
    let mut order: Vec<usize> = (0..tables.len()).collect();
    order.sort_by_key(|i| position(tables[*i]));
    let sources: std::collections::BTreeMap<&str, tokio::sync::watch::Sender<bool>> = tables
        .iter()
        .filter_map(|t| t.waits_for(tables))
        .map(|from| (from, tokio::sync::watch::Sender::new(false)))
        .collect();
    let runs = order.into_iter().map(|i| {
        let table = tables[i];
        let source_done = table.waits_for(tables).and_then(|from| sources.get(from)).map(|done| done.subscribe());
        let done = sources.get(table.name);
        let first = if dispatch.redo { Invocation::Redo } else { Invocation::First };
        let progress = dispatch.progress.clone();
        let run = run_table(client, deps, integration, table, (run_id, first), options, progress.clone());
        async move {
            if let Some(mut source_done) = source_done {
                if let (Some(progress), Some(of)) = (&progress, table.waits_for(tables)) {
                    progress(table.name, Activity::AwaitingSnapshot { of });
                }
                // Only its end matters (committed or not): the snapshot is used if it is there.
                let _ = source_done.wait_for(|done| *done).await;
            }
            let outcome = run.await;
            if let Some(done) = done {
                done.send_replace(true);
            }
            (i, outcome)
        }
    });
    // Unordered: a table that finished frees its slot at once, not when every table started
    // before it has (a slow first table held three finished ones and left the rest queued).
    let mut outcomes: Vec<(usize, TableRunOutcome)> =
        futures::stream::iter(runs).buffer_unordered(dispatch.concurrency.max(1)).collect().await;
    outcomes.sort_by_key(|(i, _)| *i);
    let outcomes: Vec<TableRunOutcome> = outcomes.into_iter().map(|(_, outcome)| outcome).collect();
    if outcomes.iter().any(|o| o.record.state == RunState::Succeeded) {
        lifecycle::mark_active(deps.state, &integration.name).await;
    }
    outcomes
}

/// One table's run in this process, continued here until it ends.
async fn run_table(
    client: &CapsuleClient,
    deps: Deps<'_>,
    integration: &Integration,
    table: &'static TableSpec,
    (run_id, first): (&RunId, Invocation),
    options: RunOptions,
    progress: Option<TablesProgress>,
) -> TableRunOutcome {
    let per_table = progress.map(|p| {
        let name = table.name;
        Arc::new(move |activity: Activity| p(name, activity)) as Arc<ActivityFn>
    });
    let report = |activity| {
        if let Some(report) = &per_table {
            report(activity);
        }
    };
    let run = |invocation| TableRun {
        client,
        deps,
        integration,
        table,
        run_id,
        options,
        progress: per_table.clone(),
        deadline: None,
        kill_at: None,
        invocation,
    };
    let mut outcome = run(first).run().await;
    while outcome.record.state == RunState::Continued {
        if let Some(at) = outcome.record.resumes_at {
            report(Activity::Paused { until: at });
            tokio::time::sleep((at - Utc::now()).to_std().unwrap_or_default()).await;
        }
        outcome = run(Invocation::Continue { seq: None }).run().await;
    }
    report(Activity::Finished { state: outcome.record.state, rows: outcome.record.rows });
    outcome
}
