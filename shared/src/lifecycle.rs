//! A table run's lifecycle, in one place for the CLI and both Lambda functions: which
//! invocation may start (paused integrations, leases, fenced continuations), the lease's
//! heartbeat, taking over from a run whose holder stopped, what a failure leaves for a retry,
//! which waiting or stranded runs the scheduler's tick resumes, and activation.
//!
//! Timeline of a run: its first invocation takes the lease (invocation 1). It renews the lease
//! every third of its TTL while it works. When it must stop (deadline, spent rate-limit window)
//! it saves a checkpoint and *parks* the lease for invocation 2, until the checkpoint's
//! `not_before` plus a TTL. Invocation 2 takes the parked lease only if the lease waits for
//! exactly number 2: a duplicate of 2 finds it taken, a late copy of 1 finds it waiting for
//! another number, and both are refused without writing anything. A retryable failure keeps the
//! checkpoint and parks the lease for a retry of the same number.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::events::TableSyncEvent;
use crate::integration::{Integration, IntegrationStatus, RunId};
use crate::ports::{
    ErrorRecord, Lease, ObjectSink, Parking, RunState, StateStore, TableRunRecord, TableState, is_lease_lost,
};
use crate::{Result, SyncError, output};

/// Failed (or stranded) invocations in a row, resuming one checkpoint, before the run fails for good.
pub const MAX_RESUME_FAILURES: u32 = 5;

/// Which invocation of a run this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invocation {
    /// The run's first: a new lease owner and T0.
    First,
    /// A continuation from the run's checkpoint; `seq` fences it (None: whichever is next).
    Continue { seq: Option<u32> },
}

impl Invocation {
    pub fn of(event: &TableSyncEvent) -> Invocation {
        if event.continuation { Invocation::Continue { seq: event.seq } } else { Invocation::First }
    }
}

/// Whether a fresh run of the integration may start at all.
pub fn refuse_paused(integration: &Integration, invocation: Invocation) -> Option<String> {
    (integration.status == IntegrationStatus::Paused && invocation == Invocation::First)
        .then(|| format!("integration `{}` is paused", integration.name))
}

/// How long a parked lease waits for its next invocation: until `not_before` (or now), plus a TTL.
pub fn hold_until(not_before: Option<DateTime<Utc>>, ttl: Duration) -> DateTime<Utc> {
    let now = Utc::now();
    not_before.map_or(now, |t| t.max(now)) + chrono::Duration::from_std(ttl).unwrap_or_default()
}

/// Runs `work` while renewing `lease` every third of `ttl`. If the lease is lost (it expired and
/// another run took it) the work is dropped and the run fails: it may no longer write.
pub async fn with_heartbeat<T>(
    state: &dyn StateStore,
    lease: &Lease,
    ttl: Duration,
    work: impl Future<Output = Result<T>>,
) -> Result<T> {
    let beat = async {
        loop {
            tokio::time::sleep(ttl / 3).await;
            match state.renew_lease(&Lease { expires_at: crate::from_now(ttl), ..lease.clone() }).await {
                Ok(()) => {}
                Err(error) if is_lease_lost(&error) => return error,
                // A state store hiccup: the lease still has two thirds of its TTL; try again.
                Err(error) => tracing::warn!(event = "lease_renewal_failed", %error),
            }
        }
    };
    tokio::select! {
        result = work => result,
        error = beat => Err(error),
    }
}

/// After taking a lease from a run whose holder stopped: that run ends visibly (`failed`,
/// replacing its `running` record), its checkpoint goes, and so do the data files it left, so a
/// loader never reads half a run.
pub async fn clean_up_after(
    state: &dyn StateStore,
    sink: &dyn ObjectSink,
    displaced: &Lease,
    taken_by: &RunId,
) -> Result<()> {
    let (integration, table) = (&displaced.integration, &displaced.table);
    state.discard_checkpoint(integration, table).await?;
    let Some(run_id) = &displaced.run_id else { return Ok(()) };
    sink.remove_prefix(&output::run_data_prefix(integration, table, run_id)).await?;
    let started = displaced.started_at.unwrap_or(displaced.expires_at);
    let mut record = TableRunRecord::new(integration, table, run_id, RunState::Failed, started);
    record.finished_at = Some(Utc::now());
    let error = SyncError::State(format!(
        "abandoned: invocation {} stopped renewing its lease (killed, timed out or crashed); run {taken_by} took \
         the table over and removed this run's files",
        displaced.invocation
    ));
    record.error = Some(ErrorRecord::from(&error));
    tracing::warn!(event = "run_taken_over", %integration, %table, run_id = %run_id, by = %taken_by);
    state.record_run(&record).await
}

/// What a failed invocation leaves: a retryable failure of a continued run keeps its checkpoint
/// (one more failure counted) and parks the lease for a retry of the same invocation; anything
/// else ends the run.
pub fn retry_parking(
    checkpoint: Option<&crate::ports::Checkpoint>,
    error: &SyncError,
    ttl: Duration,
) -> Option<Parking> {
    let checkpoint = checkpoint?;
    if !error.is_retryable() || checkpoint.failures + 1 >= MAX_RESUME_FAILURES {
        return None;
    }
    let checkpoint =
        crate::ports::Checkpoint { failures: checkpoint.failures + 1, not_before: None, ..checkpoint.clone() };
    Some(Parking { checkpoint, hold_until: hold_until(None, ttl) })
}

/// What the scheduler's tick does for one waiting or stranded table.
#[derive(Debug, Clone, PartialEq)]
pub enum Resumption {
    /// Invoke this continuation (its window has reset, or its invocation stopped).
    Continue(TableSyncEvent),
    /// The run's invocation stopped with nothing to resume from: recorded failed, lease released.
    Failed { table: String, run_id: RunId },
}

/// The tick's decisions for an integration: parked runs whose `not_before` has passed are
/// continued; a run whose invocation stopped renewing its lease is recorded failed and
/// continued from its checkpoint (or, with none, ended so the next scheduled run redoes it).
pub async fn resume_due(state: &dyn StateStore, integration: &Integration, ttl: Duration) -> Result<Vec<Resumption>> {
    if integration.status == IntegrationStatus::Paused {
        return Ok(Vec::new());
    }
    let now = Utc::now();
    let mut out = Vec::new();
    for TableState { table, lease, checkpoint } in state.table_states(&integration.name).await? {
        let Some(lease) = lease else { continue };
        let checkpoint = checkpoint.filter(|c| c.owner == lease.owner);
        let event = |seq: u32, run_id: &RunId| TableSyncEvent {
            integration: integration.name.clone(),
            table: table.clone(),
            run_id: run_id.clone(),
            continuation: true,
            max_seconds: None,
            seq: Some(seq),
        };
        match (&checkpoint, lease.invocation) {
            (Some(c), 0) if c.not_before.is_none_or(|t| t <= now) => {
                out.push(Resumption::Continue(event(lease.next, &c.run_id)));
            }
            (_, invocation) if invocation > 0 && lease.expired(now) => {
                let run_id = lease.run_id.clone().or_else(|| checkpoint.as_ref().map(|c| c.run_id.clone()));
                let Some(run_id) = run_id else { continue };
                let error = SyncError::State(format!(
                    "stranded: invocation {invocation} stopped renewing its lease (killed or timed out)"
                ));
                let mut record = TableRunRecord::new(
                    &integration.name,
                    &table,
                    &run_id,
                    RunState::Failed,
                    lease.started_at.unwrap_or(lease.expires_at),
                );
                record.finished_at = Some(now);
                record.error = Some(ErrorRecord::from(&error));
                let parking = retry_parking(checkpoint.as_ref(), &error, ttl);
                state.record_failure(&lease, &record, parking.as_ref()).await?;
                tracing::warn!(event = "stranded_run", integration = %integration.name, %table, run_id = %run_id,
                               resumed = parking.is_some());
                out.push(match parking {
                    Some(p) => Resumption::Continue(event(p.checkpoint.next_invocation(), &run_id)),
                    None => Resumption::Failed { table: table.clone(), run_id },
                });
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Pending → Active after the first successful table load (a no-op otherwise).
pub async fn mark_active(state: &dyn StateStore, name: &str) {
    let result = async {
        if let Some(mut current) = state.get_integration(name).await?
            && current.status == IntegrationStatus::Pending
        {
            current.status = IntegrationStatus::Active;
            current.updated_at = Utc::now();
            state.update_integration(&current).await?;
        }
        Ok::<(), SyncError>(())
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(event = "status_update_failed", error = %e);
    }
}
