//! Ending a table run: the commit (the bookmark moves once every part and the manifest are
//! durable, fenced on the lease), publishing the manifest, parking, and failing without a trace.

use chrono::Utc;

use super::*;
use crate::lifecycle;
use crate::output;
use capsule_core::integration::RunId;
use capsule_core::manifest::{PartFile, RunManifest};
use capsule_core::observe::Event;
use capsule_core::ports::{
    Bookmark, BookmarkBase, Checkpoint, ErrorRecord, ObjectSink, Parking, RunState, TableRunRecord,
};
use capsule_core::runlog::RunLog;
use capsule_core::{Result, SyncError};

/// What a commit that reported an error really did.
pub(super) enum CommitOutcome {
    Landed,
    Refused(SyncError),
    /// Neither the commit's answer nor the bookmark could be read.
    Unknown(SyncError),
}

/// Whether a failed run's unpublished outputs go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outputs {
    Remove,
    Keep,
}

/// Deletes data files under this run's prefix that this attempt did not write (left by an
/// earlier failed attempt of the same run id that had more parts).
pub(super) async fn remove_stale_parts(
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

impl TableRun<'_> {
    /// Success: the bookmark moves to T0, the lease is released.
    pub(super) async fn commit(
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
        self.publish_manifest(self.run_id, false, log).await;
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
    pub(super) fn backfill_generation(&self, start: &Start) -> u64 {
        start.checkpoint.as_ref().map_or(self.integration.backfill_generation(self.table.name), |c| c.backfill)
    }

    /// Publishes a committed run's manifest for loaders: by its commit, or `late` by a copy of
    /// its event or the table's next run. If that fails the run is still committed: its
    /// manifest waits for one of those.
    pub(super) async fn publish_manifest(&self, run: &RunId, late: bool, log: &RunLog) {
        let (sink, name, table) = (self.deps.sink, &self.integration.name, self.table.name);
        match output::publish_pending_manifest(sink, name, table, run).await {
            Ok(Some(manifest)) if late => {
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
    pub(super) async fn record_committed(&self, manifest: &RunManifest) {
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
    pub(super) async fn commit_outcome(&self, bookmark: &Bookmark, error: SyncError, log: &RunLog) -> CommitOutcome {
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

    /// Parked: the checkpoint is saved and the lease parked for the next invocation.
    pub(super) async fn park(
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
    pub(super) async fn fail(
        &self,
        start: &Start,
        record: TableRunRecord,
        error: SyncError,
        log: &RunLog,
    ) -> TableRunOutcome {
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

    pub(super) async fn end_failed(
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
    pub(super) async fn remove_run_outputs(&self, log: &RunLog) {
        let (sink, name, table) = (self.deps.sink, &self.integration.name, self.table.name);
        if let Err(e) = output::remove_run_outputs(sink, name, table, self.run_id).await {
            let fields = serde_json::json!({"run_id": self.run_id});
            log.warn(Event::RunCleanupFailed, format!("removing the failed run's files: {e}"), fields);
        }
    }
}
