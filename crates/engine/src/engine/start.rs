//! Starting a table run: the first invocation takes the lease (refusing a duplicate of a run
//! that committed, taking a stranded one over), a continuation resumes its checkpoint's lease.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::*;
use crate::lifecycle::{self, Invocation};
use capsule_core::integration::IntegrationStatus;
use capsule_core::manifest::RequestStats;
use capsule_core::observe::Event;
use capsule_core::ports::{Bookmark, Checkpoint, ErrorRecord, Lease, LeaseOwner, RunState, TableRunRecord};
use capsule_core::runlog::RunLog;
use capsule_core::{Result, SyncError};

/// A first invocation that finds its table held by a late duplicate of a committed run waits
/// this often, this long each, for the duplicate to refuse itself (an acquire, a read and a
/// release) before it counts the table as held.
pub(super) const LATE_COPY_WAITS: u32 = 10;

pub(super) const LATE_COPY_WAIT: Duration = Duration::from_millis(200);

/// Where an invocation starts: its lease, the run's T0, and the checkpoint it resumes from.
pub(super) struct Start {
    pub(super) lease: Lease,
    pub(super) started: DateTime<Utc>,
    pub(super) checkpoint: Option<Checkpoint>,
    /// A first invocation's bookmark, read once it held the lease (its window starts there).
    pub(super) bookmark: Option<Bookmark>,
}

impl Start {
    pub(super) fn seq(&self) -> u32 {
        self.lease.invocation
    }

    /// Requests of the run's earlier invocations.
    pub(super) fn earlier_requests(&self) -> RequestStats {
        self.checkpoint.as_ref().map(|c| c.requests).unwrap_or_default()
    }
}

impl TableRun<'_> {
    /// Takes the lease: a first invocation as a new owner (cleaning up after a run it took the
    /// table over from), a continuation as the invocation its checkpoint waits for.
    pub(super) async fn start(&self, log: &RunLog) -> Result<Start> {
        if let Some(reason) = lifecycle::refuse_paused(self.integration, self.invocation) {
            return Err(SyncError::Config(reason));
        }
        match self.invocation {
            Invocation::First => self.start_first(false, log).await,
            Invocation::Redo => self.start_first(true, log).await,
            Invocation::Continue { seq } => self.start_continuation(seq, log).await,
        }
    }

    /// A run's first invocation. Unless it is an operator's `redo`, an invocation of a run that
    /// already committed, or was superseded by a later one, is refused as a duplicate: when
    /// another invocation of its run (or a later run) holds the lease, or by the bookmark read
    /// once it holds the lease (a commit releases the lease in the same write as it moves the
    /// bookmark, so that read cannot miss one). The refusal writes nothing but the lease it gives
    /// back; the bookmark read is the one the run's window starts from.
    pub(super) async fn start_first(&self, redo: bool, log: &RunLog) -> Result<Start> {
        let (state, name, table) = (self.deps.state, &self.integration.name, self.table.name);
        let owner = LeaseOwner::draw(self.run_id);
        let started = Utc::now(); // T0: before the first request
        let ttl = self.lease_timing().ttl_now();
        let mut waited = 0;
        let grant = loop {
            match state.acquire_lease(&Lease::first(name, table, owner.clone(), started, ttl)).await {
                Err(SyncError::LeaseHeld { holder: Some(holder), .. })
                    if !redo && self.not_older_than_run_of(&holder) =>
                {
                    return Err(self.duplicate(&format!("run {holder} holds the table")));
                }
                // A late copy of a committed run's event holds the lease only while it reads the
                // bookmark that refuses it: wait for it rather than skip this run's table.
                Err(SyncError::LeaseHeld { holder: Some(holder), .. })
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
            self.finish_publishing(bookmark.as_ref(), log).await;
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
    pub(super) async fn give_up(&self, lease: &Lease, started: DateTime<Utc>) -> SyncError {
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

    pub(super) fn lease_timing(&self) -> lifecycle::LeaseTiming {
        lifecycle::LeaseTiming { ttl: self.options.lease_ttl, kill_at: self.kill_at, grace: self.options.kill_grace }
    }

    /// A duplicate first invocation's refusal: [`SyncError::Superseded`], nothing written.
    pub(super) fn duplicate(&self, why: &str) -> SyncError {
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
    pub(super) fn refuse_committed(&self, bookmark: Option<&Bookmark>) -> Result<()> {
        let Some(bookmark) = bookmark else { return Ok(()) };
        if &bookmark.run_id == self.run_id {
            return Err(self.duplicate("it committed"));
        }
        if bookmark.run_id.started_at() > self.run_id.started_at() {
            return Err(self.duplicate(&format!("a later run, {}, committed", bookmark.run_id)));
        }
        Ok(())
    }

    /// A copy of the event of a run that committed and was killed before publishing its manifest
    /// (Lambda retries a killed event): the copy publishes it, so loaders see the run within a
    /// minute, not at the table's next run. Publishing is idempotent; nothing else is written.
    pub(super) async fn finish_publishing(&self, bookmark: Option<&Bookmark>, log: &RunLog) {
        if bookmark.is_some_and(|b| &b.run_id == self.run_id) {
            self.publish_manifest(self.run_id, true, log).await;
        }
    }

    /// Whether the lease `holder` is of a run the bookmark has already moved past (committed or
    /// superseded): a late duplicate, about to refuse itself and give the lease back.
    pub(super) async fn held_by_a_committed_run(&self, holder: &LeaseOwner) -> Result<bool> {
        let bookmark = self.deps.state.bookmark(&self.integration.name, self.table.name).await?;
        Ok(bookmark.is_some_and(|b| b.run_id.started_at() >= holder.run.started_at()))
    }

    /// Whether the lease `holder` belongs to this run or a later one.
    pub(super) fn not_older_than_run_of(&self, holder: &LeaseOwner) -> bool {
        &holder.run == self.run_id || holder.run.started_at() >= self.run_id.started_at()
    }

    /// A continuation: takes the parked lease for the invocation its checkpoint waits for.
    pub(super) async fn start_continuation(&self, seq: Option<u32>, log: &RunLog) -> Result<Start> {
        let (state, name, table) = (self.deps.state, &self.integration.name, self.table.name);
        let Some(checkpoint) = state.checkpoint(name, table, self.run_id).await? else {
            self.finish_publishing(state.bookmark(name, table).await?.as_ref(), log).await;
            return Err(SyncError::Superseded(format!(
                "run {} of {name}/{table} has no checkpoint to continue from (it finished, or was taken over)",
                self.run_id
            )));
        };
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

    pub(super) async fn record_running(&self, record: &TableRunRecord, seq: u32, log: &RunLog) {
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
    pub(super) async fn not_started(
        &self,
        mut record: TableRunRecord,
        error: SyncError,
        log: &RunLog,
    ) -> TableRunOutcome {
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
}
