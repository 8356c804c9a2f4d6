//! The orchestrator: decides which integrations are due and dispatches one table-sync
//! invocation per selected table under one new run id. Each scheduled tick also resumes runs
//! that wait for a rate-limit window which has now reset, and runs whose invocation stopped
//! renewing its lease (killed, timed out): the rules are in `capsule_engine::lifecycle`.
//! A scheduled tick looks only at the integrations the due index names ([`due_tick`]); a manual
//! event at the integration it names, or at all of them.

mod due_tick;

use std::collections::BTreeSet;
use std::sync::Arc;

use std::time::Duration;

pub use due_tick::{TickLimits, limits_from_env};

use capsule_core::catalog;
use capsule_core::events::{ManualRun, OrchestratorEvent, TableSyncEvent};
use capsule_core::integration::{Integration, IntegrationStatus, RunId};
use capsule_core::observe::Event;
use capsule_core::ports::{DispatchRecord, Dispatcher, Held, StartedBy, StateStore, Unsent};
use capsule_core::{Result, SyncError};
use capsule_engine::lifecycle;
use capsule_engine::schedule;
use chrono::{DateTime, Utc};
use serde::Serialize;

/// What the orchestrator needs, built once at cold start.
#[derive(Clone)]
pub struct OrchestratorDeps {
    pub state: Arc<dyn StateStore>,
    pub dispatcher: Arc<dyn Dispatcher>,
    /// The table-sync functions' lease TTL (a stranded run's retry is parked this long).
    pub lease_ttl: Duration,
    /// A run in progress longer than this is overdue: logged as an error (`run_overdue`, which
    /// the stack's alarm counts) and listed in the tick's summary.
    pub overdue_after: Duration,
    /// How much one scheduled tick takes on ([`TickLimits`]).
    pub limits: TickLimits,
}

/// The orchestrator's answer.
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Summary {
    pub dispatched: Vec<Dispatched>,
    pub skipped: Vec<Skipped>,
    /// Waiting or stranded runs this tick continued (or ended).
    pub resumed: Vec<Resumed>,
    /// Integrations this tick could not handle (their state unreadable, say), with why: the
    /// others went on; the next tick tries these again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<Skipped>,
    /// Runs in progress for longer than the deployment allows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overdue: Vec<OverdueRun>,
    /// Integrations the due index named as due this tick (scheduled ticks).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub due: usize,
    /// Due integrations this tick left to the next (its invocation cap or time budget was
    /// reached): the next tick takes them first, earliest due first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deferred: Vec<String>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Debug, Serialize, PartialEq)]
pub struct OverdueRun {
    pub integration: String,
    #[serde(flatten)]
    pub run: lifecycle::Overdue,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Resumed {
    pub integration: String,
    pub table: String,
    pub run_id: RunId,
    /// The invocation continued; None when a stranded run has nothing to resume (it is ended).
    pub invocation: Option<u32>,
    /// The stranded invocation the continuation records failed first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stranded: Option<u32>,
    /// Why the continuation could not be invoked (the next tick tries again).
    pub error: Option<String>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Dispatched {
    pub integration: String,
    pub run_id: RunId,
    pub tables: Vec<String>,
    /// Tables whose invocation could not be started, with why.
    pub failed: Vec<Unsent>,
    /// Tables held back until another table's run of this sync ends, each with that table: a
    /// later tick sends them (tracks wait for tasks, to read its snapshot instead of `/tasks`).
    pub held: Vec<Held>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Skipped {
    pub integration: String,
    pub reason: String,
}

pub async fn handler(event: serde_json::Value, deps: &OrchestratorDeps) -> Result<Summary> {
    match OrchestratorEvent::parse(event)? {
        OrchestratorEvent::Scheduled => due_tick::run(deps).await,
        OrchestratorEvent::Manual(run) => manual(run, deps).await,
    }
}

/// A run asked for by hand: the integration it names, or every registered one.
async fn manual(request: ManualRun, deps: &OrchestratorDeps) -> Result<Summary> {
    let integrations = match &request.integration {
        Some(name) => vec![
            deps.state
                .get_integration(name)
                .await?
                .ok_or_else(|| SyncError::Config(format!("no integration named `{name}` is registered")))?,
        ],
        None => deps.state.list_integrations().await?,
    };
    let tables_asked = (!request.tables.is_empty()).then(|| catalog::TableName::specs(&request.tables));
    let now = Utc::now();
    let mut summary = Summary::default();
    let tick = Tick { deps, request: &request, tables_asked: tables_asked.as_deref(), scheduled: false, now };
    for integration in integrations {
        // Each integration on its own: an error is logged and reported for it, and the others
        // go on.
        if let Err(error) = tick.integration(&integration, &mut summary, &Unlimited).await {
            integration_failed(&integration.name, &error, &mut summary);
        }
    }
    Ok(summary)
}

fn integration_failed(name: &str, error: &SyncError, summary: &mut Summary) {
    tracing::error!(event = Event::IntegrationTickFailed.as_str(), integration = %name,
                    error_type = error.error_type(), %error, "the next tick tries it again");
    summary.failed.push(Skipped { integration: name.to_string(), reason: error.to_string() });
}

/// Table-sync invocations a look may start (the scheduled tick's cap, shared by its workers).
trait Allowance: Sync {
    /// Takes `n` invocations; false when the cap would be passed (nothing is taken then).
    async fn take(&self, n: usize) -> bool;
}

/// A manual run is not capped: the operator asked for it.
struct Unlimited;

impl Allowance for Unlimited {
    async fn take(&self, _: usize) -> bool {
        true
    }
}

/// What one look at an integration did.
enum Looked {
    /// Its work was sent (or there was none); the due index settles from these.
    Done { sent: usize, last: Option<DispatchRecord>, states: Vec<capsule_core::ports::TableState> },
    /// Its work would pass the tick's cap: left for the next tick, nothing sent.
    Deferred,
}

/// One tick's request, applied to each integration in turn.
struct Tick<'a> {
    deps: &'a OrchestratorDeps,
    request: &'a ManualRun,
    tables_asked: Option<&'a [&'static catalog::TableSpec]>,
    scheduled: bool,
    now: DateTime<Utc>,
}

impl Tick<'_> {
    /// Resumes the integration's waiting runs, sends its pending tables, and dispatches a new
    /// run if it is due — all of it, or nothing when `allowance` cannot take it.
    async fn integration(
        &self,
        integration: &Integration,
        summary: &mut Summary,
        allowance: &impl Allowance,
    ) -> Result<Looked> {
        let (deps, now) = (self.deps, self.now);
        // Read once: the pending tables it names and when the integration is next due.
        let last = deps.state.last_dispatch(&integration.name).await?;
        let (view, pending) = if self.scheduled {
            let view =
                lifecycle::resume_due(deps.state.as_ref(), integration, (deps.lease_ttl, deps.overdue_after)).await?;
            (view, pending_tables(integration, last.clone(), deps, now).await?)
        } else {
            (lifecycle::TickView::default(), None)
        };
        // Tables whose run this tick continues are busy: a new run of one would race the
        // continuation for the stranded lease, and abandon the run it could have finished.
        let busy: BTreeSet<String> =
            view.resume.iter().filter(|e| !e.continuation || e.seq.is_some()).map(|e| e.table.to_string()).collect();
        if let Err(e) = schedule::check_frequency(integration, schedule::deployment_tick()) {
            tracing::warn!(event = Event::FrequencyBelowTick.as_str(), integration = %integration.name, error = %e);
        }
        let force = self.request.force && !self.scheduled;
        let not_due = schedule::why_not_due(integration, last.as_ref(), now, force);
        let tables = match (&not_due, self.tables_asked) {
            (Some(_), _) => vec![],
            (None, Some(tables)) => tables.to_vec(),
            (None, None) => integration.selected_tables()?,
        };
        let tables: Vec<_> = tables.into_iter().filter(|t| !busy.contains(t.name)).collect();
        let sends = view.resume.len() + pending.as_ref().map_or(0, |p| p.tables.len()) + tables.len();
        if !allowance.take(sends).await {
            return Ok(Looked::Deferred);
        }
        let mut latest = last;
        summary.overdue.extend(report_overdue(integration, view.overdue));
        summary.resumed.extend(resume(view.resume, deps).await);
        if let Some(pending) = pending {
            let (dispatched, record) = send_pending(integration, pending, deps).await?;
            summary.dispatched.push(dispatched);
            latest = Some(record);
        }
        if let Some(reason) = not_due {
            tracing::info!(event = Event::IntegrationSkipped.as_str(), integration = %integration.name, %reason);
            summary.skipped.push(Skipped { integration: integration.name.to_string(), reason: reason.to_string() });
            return Ok(Looked::Done { sent: sends, last: latest, states: view.states });
        }
        // A run of every table counts for the schedule, forced or not (a first load started by
        // hand is not repeated by the next tick); a partial manual run leaves it as it was.
        let complete = self.tables_asked.is_none() && !self.request.no_schedule;
        let started_by = complete.then_some(if force { StartedBy::Manual } else { StartedBy::Schedule });
        let (dispatched, record) = dispatch(integration, &tables, deps, now, started_by).await?;
        summary.dispatched.push(dispatched);
        Ok(Looked::Done { sent: sends, last: started_by.map(|_| record).or(latest), states: view.states })
    }
}

/// Runs going on for too long, logged as errors (the stack's alarm counts them).
fn report_overdue(integration: &Integration, overdue: Vec<lifecycle::Overdue>) -> Vec<OverdueRun> {
    overdue
        .into_iter()
        .map(|run| {
            tracing::error!(event = Event::RunOverdue.as_str(), integration = %integration.name, table = %run.table,
                            run_id = %run.run_id, since = %run.since, "a run has been in progress for too long");
            OverdueRun { integration: integration.name.to_string(), run }
        })
        .collect()
}

/// Sends the continuations [`lifecycle::resume_due`] decided: runs whose window has reset, and
/// stranded ones (table-sync records the stranded invocation: the orchestrator only reads run
/// state).
async fn resume(events: Vec<TableSyncEvent>, deps: &OrchestratorDeps) -> Vec<Resumed> {
    let mut resumed = Vec::new();
    for event in events {
        let error = deps.dispatcher.dispatch(&event).await.err().map(|e| e.to_string());
        tracing::info!(event = Event::RunResumed.as_str(), integration = %event.integration, table = %event.table,
                       run_id = %event.run_id, invocation = ?event.seq, stranded = ?event.stranded, ?error);
        resumed.push(Resumed {
            integration: event.integration.into(),
            table: event.table.into(),
            run_id: event.run_id,
            // A redo of a first invocation is invocation 1 again.
            invocation: if event.continuation { event.seq } else { Some(1) },
            stranded: event.stranded,
            error,
        });
    }
    resumed
}

/// Dispatches one table-sync invocation per table under a new run id. A run of every table
/// (`started_by` given) records its intent first (every table pending), then what is still
/// pending after the invokes: a crash or a retry of this invocation re-sends nothing that was
/// sent, and a table whose invoke failed is sent by the next tick under the same run id. A run
/// of the scheduler's also holds back a table that waits for another's run of the sync (tracks
/// for tasks), for a later tick to send; a forced one sends every table now. Partial manual runs
/// record nothing: they never postpone the schedule, and hold nothing back.
async fn dispatch(
    integration: &Integration,
    tables: &[&'static catalog::TableSpec],
    deps: &OrchestratorDeps,
    now: DateTime<Utc>,
    started_by: Option<StartedBy>,
) -> Result<(Dispatched, DispatchRecord)> {
    let run_id = RunId::new(now);
    let held: Vec<Held> = tables
        .iter()
        .filter(|_| started_by == Some(StartedBy::Schedule))
        .filter_map(|t| {
            t.waits_for(tables).map(|awaited| Held { table: t.name.to_string(), waits_for: awaited.into() })
        })
        .collect();
    let names: Vec<String> =
        tables.iter().map(|t| t.name.to_string()).filter(|t| !held.iter().any(|h| &h.table == t)).collect();
    let mut record = DispatchRecord {
        integration: integration.name.to_string(),
        run_id: run_id.clone(),
        tables: tables.iter().map(|t| t.name.to_string()).collect(),
        dispatched_at: now,
        failed: names.iter().map(|t| Unsent { table: t.clone(), why: "not dispatched yet".into() }).collect(),
        held,
        started_by: started_by.unwrap_or(StartedBy::Manual),
    };
    if started_by.is_some() {
        deps.state.record_dispatch(&record).await?;
    }
    record.failed = send(integration, &names, &run_id, deps).await;
    if started_by.is_some() {
        deps.state.record_dispatch(&record).await?;
    }
    tracing::info!(event = Event::IntegrationDispatched.as_str(), integration = %integration.name, run_id = %run_id,
                   tables = names.len(), failed = record.failed.len());
    if !record.held.is_empty() {
        tracing::info!(event = Event::TablesHeld.as_str(), integration = %integration.name, run_id = %run_id,
                       held = ?record.held);
    }
    let dispatched = Dispatched {
        integration: integration.name.to_string(),
        run_id,
        tables: names,
        failed: record.failed.clone(),
        held: record.held.clone(),
    };
    Ok((dispatched, record))
}

/// Invokes table-sync for each table of a run, a few at once; the tables whose invoke failed,
/// with why.
async fn send(integration: &Integration, tables: &[String], run_id: &RunId, deps: &OrchestratorDeps) -> Vec<Unsent> {
    use futures::StreamExt;
    futures::stream::iter(tables.to_vec())
        .map(|table| async move {
            // Names come from a dispatch record: one this build's catalog lacks cannot be sent.
            let name = match table.parse() {
                Ok(name) => name,
                Err(e) => return Some(Unsent { why: SyncError::to_string(&e), table }),
            };
            let event = TableSyncEvent {
                integration: integration.name.clone(),
                table: name,
                run_id: run_id.clone(),
                continuation: false,
                max_seconds: None,
                seq: None,
                stranded: None,
            };
            let result = deps.dispatcher.dispatch(&event).await;
            result.err().map(|e| {
                tracing::error!(event = Event::DispatchFailed.as_str(), %table, error = %e);
                Unsent { table, why: e.to_string() }
            })
        })
        .buffered(INVOKES_AT_ONCE)
        .filter_map(std::future::ready)
        .collect()
        .await
}

/// Invokes one integration's run sends at once.
const INVOKES_AT_ONCE: usize = 8;

/// What the last scheduled run has left to send: the tables it could not dispatch, and those it
/// held back whose awaited run has ended ([`lifecycle::held_table_released`]).
struct Pending {
    record: DispatchRecord,
    tables: Vec<String>,
    released: Vec<(String, String)>,
}

async fn pending_tables(
    integration: &Integration,
    last: Option<DispatchRecord>,
    deps: &OrchestratorDeps,
    now: DateTime<Utc>,
) -> Result<Option<Pending>> {
    let Some(mut record) = last else { return Ok(None) };
    if integration.status == IntegrationStatus::Paused {
        return Ok(None);
    }
    let mut released = Vec::new();
    let mut still_held = Vec::new();
    for held in record.held.clone() {
        match lifecycle::held_table_released(deps.state.as_ref(), &record, &held.waits_for, deps.lease_ttl, now).await?
        {
            Some(why) => released.push((held.table, why)),
            None => still_held.push(held),
        }
    }
    if record.failed.is_empty() && released.is_empty() {
        return Ok(None);
    }
    let tables = record.failed.iter().map(|u| u.table.clone()).chain(released.iter().map(|(t, _)| t.clone())).collect();
    record.held = still_held;
    Ok(Some(Pending { record, tables, released }))
}

/// Sends the pending tables under the last run's id, and records what is still pending.
async fn send_pending(
    integration: &Integration,
    pending: Pending,
    deps: &OrchestratorDeps,
) -> Result<(Dispatched, DispatchRecord)> {
    let Pending { mut record, tables, released } = pending;
    record.failed = send(integration, &tables, &record.run_id, deps).await;
    deps.state.record_dispatch(&record).await?;
    tracing::info!(event = Event::PendingTablesDispatched.as_str(), integration = %integration.name, run_id = %record.run_id,
                   tables = tables.len(), failed = record.failed.len(), ?released);
    let dispatched = Dispatched {
        integration: integration.name.to_string(),
        run_id: record.run_id.clone(),
        tables,
        failed: record.failed.clone(),
        held: record.held.clone(),
    };
    Ok((dispatched, record))
}
