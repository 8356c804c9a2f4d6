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

use crate::output;
use capsule_core::events::TableSyncEvent;
use capsule_core::integration::{Integration, IntegrationStatus, RunId};
use capsule_core::observe::Event;
use capsule_core::ports::{
    DispatchRecord, ErrorRecord, Lease, ObjectSink, Parking, RunState, StateStore, TableRunRecord, TableState,
    is_lease_lost,
};
use capsule_core::{Result, SyncError};

/// Failed (or stranded) invocations in a row, resuming one checkpoint, before the run fails for good.
pub(crate) const MAX_RESUME_FAILURES: u32 = 5;

/// Invocations in a row that may end on the same failing request before the run ends failed
/// (on Lambda, with Capsule's outages waited out 5 minutes at a time: about half an hour).
pub const MAX_STALLED_INVOCATIONS: u32 = 6;

/// The stall count after an invocation parked (`failing`: the request that kept failing, None
/// for a rate-limit wait or the time budget); past [`MAX_STALLED_INVOCATIONS`] on the same
/// request the run gives up, naming it.
pub(crate) fn stalls_after(
    checkpoint: Option<&capsule_core::ports::Checkpoint>,
    failing: Option<String>,
) -> Result<capsule_core::ports::Stalls> {
    let Some(request) = failing else { return Ok(capsule_core::ports::Stalls::default()) };
    let before = checkpoint.map(|c| &c.stalls).filter(|s| s.request.as_deref() == Some(request.as_str()));
    let count = before.map_or(0, |s| s.count) + 1;
    if count >= MAX_STALLED_INVOCATIONS {
        tracing::error!(event = Event::RunStalled.as_str(), %request, invocations = count);
        return Err(SyncError::GaveUp(format!(
            "{request} kept failing in {count} invocations in a row; the run ends here without moving the bookmark"
        )));
    }
    Ok(capsule_core::ports::Stalls { request: Some(request), count })
}

/// Which invocation of a run this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invocation {
    /// The run's first: a new lease owner and T0. Refused, writing nothing, if the run already
    /// committed or a later run did (a duplicate event).
    First,
    /// An operator re-running a run id on purpose (`capsule-sync sync --run-id`): a first
    /// invocation that may redo even a committed run, overwriting its files.
    Redo,
    /// A continuation from the run's checkpoint; `seq` fences it (None: whichever is next).
    Continue { seq: Option<u32> },
}

impl Invocation {
    pub fn of(event: &TableSyncEvent) -> Invocation {
        if event.continuation { Invocation::Continue { seq: event.seq } } else { Invocation::First }
    }
}

/// Whether a fresh run of the integration may start at all.
pub(crate) fn refuse_paused(integration: &Integration, invocation: Invocation) -> Option<String> {
    (integration.status == IntegrationStatus::Paused && matches!(invocation, Invocation::First | Invocation::Redo))
        .then(|| format!("integration `{}` is paused", integration.name))
}

/// How long a parked lease waits for its next invocation: until `not_before` (or now), plus
/// `hold` (the engine's `RunOptions::parked_hold`: as long as Lambda may keep the
/// continuation's event queued, so a newer run never takes a waiting run's table away).
pub fn hold_until(not_before: Option<DateTime<Utc>>, hold: Duration) -> DateTime<Utc> {
    let now = Utc::now();
    not_before.map_or(now, |t| t.max(now)) + chrono::Duration::from_std(hold).unwrap_or_default()
}

/// How long an invocation's lease lasts: `ttl` from each renewal, but never past the instant the
/// runtime kills the invocation (`kill_at`) plus `grace` (clock skew between hosts). So the lease
/// of an invocation killed at its deadline is free for Lambda's retry a minute later.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LeaseTiming {
    pub ttl: Duration,
    pub kill_at: Option<DateTime<Utc>>,
    pub grace: Duration,
}

impl LeaseTiming {
    /// The lease time to ask for now; at least a second.
    pub(crate) fn ttl_now(&self) -> Duration {
        let Some(kill_at) = self.kill_at else { return self.ttl };
        let until_kill = (kill_at - Utc::now()).to_std().unwrap_or_default() + self.grace;
        self.ttl.min(until_kill).max(Duration::from_secs(1))
    }
}

/// Attempts of a run's first invocation (Lambda's retries of a killed one, the tick's redo of one
/// stranded before its first checkpoint) before the run ends failed.
pub(crate) const MAX_FIRST_ATTEMPTS: u32 = 5;

/// Runs `work` while renewing `lease` every third of its TTL (never past the kill time: see
/// [`LeaseTiming`]). The work is dropped, and the run fails without writing anything more, when
/// the lease is lost (another invocation took it) or when it could not be renewed before it
/// would expire (self-fencing: past its expiry another invocation may take it, and two writers
/// must never overlap).
pub(crate) async fn with_heartbeat<T>(
    state: &dyn StateStore,
    lease: &Lease,
    timing: LeaseTiming,
    work: impl Future<Output = Result<T>>,
) -> Result<T> {
    let ttl = timing.ttl;
    let beat = async {
        let margin = chrono::Duration::from_std(ttl / 10).unwrap_or_default();
        let mut held_until = lease.expires_at;
        let mut failing = false;
        loop {
            // After a failed renewal, try again sooner, and give up in time.
            let wait = if failing {
                (held_until - margin - Utc::now()).to_std().unwrap_or_default().min(ttl / 10)
            } else {
                ttl / 3
            };
            tokio::time::sleep(wait).await;
            if failing && Utc::now() >= held_until - margin {
                return self_fenced(lease, held_until);
            }
            let renewed = Lease { expires_at: capsule_core::from_now(timing.ttl_now()), ..lease.clone() };
            // A renewal that hangs is a failed one once the margin is reached.
            let time_left = (held_until - margin - Utc::now()).to_std().unwrap_or_default();
            let answer = tokio::time::timeout(time_left, state.renew_lease(&renewed)).await;
            match answer.unwrap_or_else(|_| Err(SyncError::State("the lease renewal did not answer in time".into()))) {
                Ok(()) => (held_until, failing) = (renewed.expires_at, false),
                Err(error) if is_lease_lost(&error) => return error,
                Err(error) => {
                    tracing::warn!(event = Event::LeaseRenewalFailed.as_str(), %error);
                    failing = true;
                }
            }
        }
    };
    tokio::select! {
        result = work => result,
        error = beat => Err(error),
    }
}

/// The error of a heartbeat that could not renew its lease before it would expire.
fn self_fenced(lease: &Lease, held_until: DateTime<Utc>) -> SyncError {
    tracing::error!(event = Event::LeaseSelfFenced.as_str(), integration = %lease.integration, table = %lease.table,
                    owner = %lease.owner, %held_until);
    SyncError::LeaseLost(format!(
        "the lease on {}/{} could not be renewed before it expires at {held_until} (the state store kept failing): \
         this invocation stopped writing, so that no other may overlap it",
        lease.integration, lease.table
    ))
}

/// After taking a lease from a run whose holder stopped: that run ends visibly (`failed`,
/// replacing its `running` record), its checkpoint goes, and so do the data files it left, so a
/// loader never reads half a run.
pub(crate) async fn clean_up_after(
    state: &dyn StateStore,
    sink: &dyn ObjectSink,
    displaced: &Lease,
    taken_by: &RunId,
) -> Result<()> {
    let (integration, table) = (&displaced.integration, &displaced.table);
    state.discard_checkpoint(integration, table).await?;
    let run_id = &displaced.owner.run;
    output::remove_run_outputs(sink, integration, table, run_id).await?;
    let started = displaced.started_at.unwrap_or(displaced.expires_at);
    let mut record = TableRunRecord::new(integration, table, run_id, RunState::Failed, started);
    record.finished_at = Some(Utc::now());
    let error = SyncError::State(format!(
        "abandoned: invocation {} stopped renewing its lease (killed, timed out or crashed); run {taken_by} took \
         the table over and removed this run's unpublished files",
        displaced.invocation
    ));
    record.error = Some(ErrorRecord::from(&error));
    tracing::warn!(event = Event::RunTakenOver.as_str(), %integration, %table, run_id = %run_id, by = %taken_by);
    state.record_run(&record).await
}

/// After taking the lease from a killed earlier attempt of the same run's first invocation: its
/// checkpoint (if any) and unpublished files go; the run goes on as this attempt, recorded once.
pub(crate) async fn clean_up_attempt(state: &dyn StateStore, sink: &dyn ObjectSink, displaced: &Lease) -> Result<()> {
    let (integration, table) = (&displaced.integration, &displaced.table);
    state.discard_checkpoint(integration, table).await?;
    output::remove_run_outputs(sink, integration, table, &displaced.owner.run).await?;
    tracing::warn!(event = Event::RunTakenOver.as_str(), %integration, %table, owner = %displaced.owner,
                   attempt = displaced.attempt, "an earlier attempt of this run was killed; redone");
    Ok(())
}

/// What a failed invocation leaves: a retryable failure of a continued run keeps its checkpoint
/// (one more failure counted) and parks the lease for a retry of the same invocation; anything
/// else ends the run.
pub(crate) fn retry_parking(
    checkpoint: Option<&capsule_core::ports::Checkpoint>,
    error: &SyncError,
    hold: Duration,
) -> Option<Parking> {
    let checkpoint = checkpoint?;
    if !error.is_retryable() || checkpoint.failures + 1 >= MAX_RESUME_FAILURES {
        return None;
    }
    let checkpoint =
        capsule_core::ports::Checkpoint { failures: checkpoint.failures + 1, not_before: None, ..checkpoint.clone() };
    Some(Parking { checkpoint, hold_until: hold_until(None, hold) })
}

/// The tick's decisions for an integration, read-only (the orchestrator writes nothing but its
/// dispatch records): parked runs whose `not_before` has passed are continued; a run whose
/// invocation stopped renewing its lease gets a continuation that first records that invocation
/// failed ([`recover_stranded`], in table-sync) and then goes on from the checkpoint (or ends the
/// run after too many failures); one stranded before its first checkpoint gets its first
/// invocation again, under the same run id.
/// Also returns the runs in progress for longer than `overdue_after` (see [`overdue`]).
pub async fn resume_due(
    state: &dyn StateStore,
    integration: &Integration,
    (ttl, overdue_after): (Duration, Duration),
) -> Result<TickView> {
    if integration.status == IntegrationStatus::Paused {
        return Ok(TickView::default());
    }
    let now = Utc::now();
    let states = state.table_states(&integration.name).await?;
    let overdue = overdue(&states, overdue_after, now);
    let mut out = Vec::new();
    for TableState { table, lease, checkpoint } in states.iter().cloned() {
        let Some(lease) = lease else { continue };
        // A lease on a table this build's catalog lacks (written by another version) has no
        // invocation to send: a table-sync event must name a catalog table.
        let Ok(table) = table.parse::<capsule_core::catalog::TableName>() else { continue };
        let checkpoint = checkpoint.filter(|c| c.owner == lease.owner);
        let event = |seq: Option<u32>, run_id: &RunId, stranded: Option<u32>| TableSyncEvent {
            integration: integration.name.clone(),
            table,
            run_id: run_id.clone(),
            continuation: true,
            max_seconds: None,
            seq,
            stranded,
        };
        match (&checkpoint, lease.invocation) {
            (Some(c), 0) if c.not_before.is_none_or(|t| t <= now) => {
                out.push(event(Some(lease.next), &c.run_id, None));
            }
            (None, invocation) if invocation > 0 && lease.expired(now) => {
                // Stranded before its first checkpoint: its first invocation is redone, same run
                // id (it takes the dead attempt's lease over, up to MAX_FIRST_ATTEMPTS).
                out.push(TableSyncEvent { continuation: false, ..event(None, &lease.owner.run, None) });
            }
            (_, invocation) if invocation > 0 && lease.expired(now) => {
                let run_id = lease.owner.run.clone();
                let next = retry_parking(checkpoint.as_ref(), &stranded_error(invocation), ttl)
                    .map(|p| p.checkpoint.next_invocation());
                out.push(event(next, &run_id, Some(invocation)));
            }
            _ => {}
        }
    }
    Ok(TickView { resume: out, overdue, states })
}

/// What the tick found for an integration: invocations to send, runs going on too long, and
/// the table states it read (the due index's next look counts from them).
#[derive(Debug, Default)]
pub struct TickView {
    pub resume: Vec<TableSyncEvent>,
    pub overdue: Vec<Overdue>,
    pub states: Vec<TableState>,
}

/// A run in progress (parked between invocations, or running) since longer than the deployment
/// allows (`CAPSULE_RUN_OVERDUE_HOURS`, default 24).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Overdue {
    pub table: String,
    pub run_id: RunId,
    pub since: DateTime<Utc>,
}

/// How long a run may be in progress before it counts as overdue, unless configured.
pub const DEFAULT_OVERDUE_AFTER: Duration = Duration::from_secs(24 * 3600);

/// `CAPSULE_RUN_OVERDUE_HOURS` (a positive number of hours), or the default.
pub fn overdue_after_from_env() -> Result<Duration> {
    let Some(text) = std::env::var("CAPSULE_RUN_OVERDUE_HOURS").ok().filter(|v| !v.trim().is_empty()) else {
        return Ok(DEFAULT_OVERDUE_AFTER);
    };
    match text.trim().parse::<f64>() {
        Ok(hours) if hours > 0.0 && hours.is_finite() => Ok(Duration::from_secs_f64(hours * 3600.0)),
        _ => Err(SyncError::Config(format!(
            "CAPSULE_RUN_OVERDUE_HOURS must be a positive number of hours, not `{text}`"
        ))),
    }
}

/// The tables whose run has been in progress (a lease or a checkpoint of it) since before
/// `now - after`: from its T0 as the checkpoint or the lease records it.
pub fn overdue(states: &[TableState], after: Duration, now: DateTime<Utc>) -> Vec<Overdue> {
    let limit = now - chrono::Duration::from_std(after).unwrap_or_default();
    states
        .iter()
        .filter_map(|s| {
            let from_checkpoint = s.checkpoint.as_ref().map(|c| (c.run_id.clone(), c.started_at));
            let from_lease = s.lease.as_ref().and_then(|l| Some((l.owner.run.clone(), l.started_at?)));
            let (run_id, since) = from_checkpoint.or(from_lease)?;
            (since < limit).then(|| Overdue { table: s.table.clone(), run_id, since })
        })
        .collect()
}

fn stranded_error(invocation: u32) -> SyncError {
    SyncError::State(format!("stranded: invocation {invocation} stopped renewing its lease (killed or timed out)"))
}

/// What a stranded invocation's recovery left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Recorded failed; the run continues with this invocation.
    ContinueAs(u32),
    /// Recorded failed with nothing to resume from (or too many failures): the run is over.
    Ended,
}

/// Records the stranded invocation `invocation` of a table's run failed and parks its lease for
/// the next invocation (or ends the run and removes its files), exactly as [`resume_due`]
/// predicted. Refused
/// ([`SyncError::Superseded`], nothing written) unless that invocation still holds the expired
/// lease: a duplicate recovery event finds it already handled.
pub async fn recover_stranded(
    state: &dyn StateStore,
    sink: &dyn ObjectSink,
    integration: &str,
    table: &str,
    invocation: u32,
    ttl: Duration,
) -> Result<Recovery> {
    let now = Utc::now();
    let found = state.table_states(integration).await?.into_iter().find(|t| t.table == table);
    let Some(TableState { lease: Some(lease), checkpoint, .. }) = found else {
        return Err(SyncError::Superseded(format!("{integration}/{table}: no lease to recover")));
    };
    if lease.invocation != invocation || !lease.expired(now) {
        return Err(SyncError::Superseded(format!(
            "{integration}/{table}: invocation {invocation} is no longer stranded (already recovered, or alive)"
        )));
    }
    let checkpoint = checkpoint.filter(|c| c.owner == lease.owner);
    let run_id = lease.owner.run.clone();
    let error = stranded_error(invocation);
    let mut record = TableRunRecord::new(
        integration,
        table,
        &run_id,
        RunState::Failed,
        lease.started_at.unwrap_or(lease.expires_at),
    );
    record.finished_at = Some(now);
    record.error = Some(ErrorRecord::from(&error));
    let parking = retry_parking(checkpoint.as_ref(), &error, ttl);
    state.record_failure(&lease, &record, parking.as_ref()).await?;
    tracing::warn!(event = Event::StrandedRun.as_str(), %integration, %table, run_id = %run_id, resumed = parking.is_some());
    match parking {
        Some(p) => Ok(Recovery::ContinueAs(p.checkpoint.next_invocation())),
        None => {
            // The run is over: nothing it wrote may be loaded.
            output::remove_run_outputs(sink, integration, table, &run_id).await?;
            Ok(Recovery::Ended)
        }
    }
}

/// Whether a table the orchestrator held back for `awaited`'s run of the same sync (tracks for
/// tasks: [`capsule_core::catalog::TableSpec::waits_for`]) may be sent now, and why; None holds it
/// another tick. The awaited run is going on while it holds a lease or a checkpoint of that run
/// (a stranded one is healed by the same tick); it is over when it committed, or when no trace of
/// it is left two lease TTLs after the dispatch: it failed, was skipped, or never started. Either
/// way the held table then runs, reading the listing itself if there is no snapshot.
pub async fn held_table_released(
    state: &dyn StateStore,
    record: &DispatchRecord,
    awaited: &str,
    ttl: Duration,
    now: DateTime<Utc>,
) -> Result<Option<String>> {
    if record.failed.iter().any(|unsent| unsent.table == awaited) {
        return Ok(None);
    }
    let of_this_run = |run_id: Option<&RunId>| run_id == Some(&record.run_id);
    let going_on = state.table_states(&record.integration).await?.into_iter().any(|t| {
        t.table == awaited
            && (t.lease.is_some_and(|l| of_this_run(Some(&l.owner.run)))
                || t.checkpoint.is_some_and(|c| of_this_run(Some(&c.run_id))))
    });
    if going_on {
        return Ok(None);
    }
    if state.bookmark(&record.integration, awaited).await?.is_some_and(|b| of_this_run(Some(&b.run_id))) {
        return Ok(Some(format!("{awaited} committed")));
    }
    let grace = chrono::Duration::from_std(ttl * 2).unwrap_or_default();
    Ok((now - record.dispatched_at >= grace).then(|| format!("the run of {awaited} ended without committing")))
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
        tracing::warn!(event = Event::StatusUpdateFailed.as_str(), error = %e);
    }
}
