//! The table-sync function: runs one table of one integration through the engine with the AWS
//! adapters. When its time budget runs low it re-invokes itself to continue the same run; when
//! the token's rate-limit window is spent it stops with a checkpoint that the orchestrator's tick
//! resumes once the window resets (no Lambda seconds spent waiting).

use std::sync::Arc;
use std::time::{Duration, Instant};

use capsule_aws::{AwsClients, token_provider};
use capsule_client::{CapsuleClient, ClientOptions};
use capsule_core::budget::RateBudgetStore;
use capsule_core::events::TableSyncEvent;
use capsule_core::integration::Integration;
use capsule_core::observe::Event;
use capsule_core::ports::{Dispatcher, ErrorRecord, ObjectSink, RunState, StateStore, TableRunRecord, TokenProvider};
use capsule_core::{Result, SyncError};
use capsule_engine::engine::{RunOptions, RunPorts, TableRun};
use capsule_engine::lifecycle::{self, Invocation, Recovery};
use chrono::{DateTime, Utc};
use serde::Serialize;

/// Lambda's hard limit.
const LAMBDA_MAX: Duration = Duration::from_secs(900);
/// Used when the runtime's deadline is missing or nonsense (local emulators report constants).
const DEFAULT_BUDGET: Duration = Duration::from_secs(840);

/// What table-sync needs, built once at cold start.
#[derive(Clone)]
pub struct TableSyncDeps {
    pub state: Arc<dyn StateStore>,
    pub sink: Arc<dyn ObjectSink>,
    pub dispatcher: Arc<dyn Dispatcher>,
    pub clients: AwsClients,
    pub options: RunOptions,
    pub client_options: ClientOptions,
}

/// The function's answer.
#[derive(Debug, Serialize, PartialEq)]
pub struct Summary {
    pub integration: String,
    pub table: String,
    pub run_id: String,
    pub state: RunState,
    pub rows: u64,
    pub files: u64,
    pub requests: u64,
    /// A continued run waiting for the rate-limit window: when the orchestrator resumes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumes_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Working time for this invocation: Lambda's remaining time (sane values only) minus a margin
/// to finish the current part and save the checkpoint, capped by the event's `max_seconds`.
pub fn time_budget(remaining: Option<Duration>, max_seconds: Option<u64>) -> Duration {
    let lambda = sane(remaining).unwrap_or(DEFAULT_BUDGET);
    let margin = (lambda / 5).min(Duration::from_secs(60));
    let mut budget = lambda.saturating_sub(margin);
    if let Some(max) = max_seconds {
        budget = budget.min(Duration::from_secs(max));
    }
    budget.max(Duration::from_secs(1))
}

/// When the runtime kills this invocation: now plus what Lambda says is left (sane values only).
pub fn kill_at(remaining: Option<Duration>) -> Option<DateTime<Utc>> {
    sane(remaining).map(capsule_core::from_now)
}

/// Lambda's remaining time, if it is one a real runtime reports (not zero, not past 15 minutes).
fn sane(remaining: Option<Duration>) -> Option<Duration> {
    remaining.filter(|r| !r.is_zero() && *r <= LAMBDA_MAX)
}

pub async fn handler(event: serde_json::Value, remaining: Option<Duration>, deps: &TableSyncDeps) -> Result<Summary> {
    let mut event = TableSyncEvent::parse(event)?;
    let integration = deps
        .state
        .get_integration(&event.integration)
        .await?
        .ok_or_else(|| SyncError::Config(format!("no integration named `{}` is registered", event.integration)))?;
    let table = event.table.spec();
    if let Some(stranded) = event.stranded {
        match recover(deps, &event, stranded).await {
            Ok(Some(next)) => event = next,
            Ok(None) => return Ok(Summary::without_run(&event, RunState::Failed, None)),
            Err(error @ SyncError::Superseded(_)) => {
                return Ok(Summary::without_run(&event, RunState::Skipped, Some(error)));
            }
            Err(error) => return Err(error),
        }
    }
    let client = match connect(&integration, deps).await {
        Ok(client) => client,
        Err(error) => {
            record_unstarted(deps, &event, &error).await;
            // Lambda retries only what could succeed later (an unreadable secret, say); a token
            // source or host the deployment refuses is recorded once.
            return if error.is_retryable() {
                Err(error)
            } else {
                Ok(Summary::without_run(&event, RunState::Failed, Some(error)))
            };
        }
    };
    let budget = time_budget(remaining, event.max_seconds);
    let kill_at = kill_at(remaining);
    let client = client.with_deadline(Instant::now() + budget);
    let run = TableRun {
        client: &client,
        deps: RunPorts { state: deps.state.as_ref(), sink: deps.sink.as_ref() },
        integration: &integration,
        table,
        run_id: &event.run_id,
        options: deps.options,
        progress: None,
        deadline: Some(Instant::now() + budget),
        kill_at,
        invocation: Invocation::of(&event),
    };
    let outcome = run.run().await;
    let r = &outcome.record;
    match r.state {
        RunState::Continued if r.resumes_at.is_none_or(|at| at <= Utc::now()) => continue_now(deps, &event).await,
        RunState::Succeeded => lifecycle::mark_active(deps.state.as_ref(), &integration.name).await,
        // Lambda retries what could succeed later (the checkpoint is kept for it); a bad token or
        // bad configuration ends here, recorded, without three identical failures.
        RunState::Failed if outcome.error.as_ref().is_some_and(SyncError::is_retryable) => {
            return Err(outcome.error.unwrap_or_else(|| SyncError::Internal("failed without an error".into())));
        }
        _ => {}
    }
    Ok(Summary {
        integration: integration.name.to_string(),
        table: table.name.to_string(),
        run_id: event.run_id.to_string(),
        state: r.state,
        rows: r.rows,
        files: r.files,
        requests: r.requests.requests,
        resumes_at: r.resumes_at,
        error: outcome.error.as_ref().map(ToString::to_string),
    })
}

impl Summary {
    /// The answer of an invocation that did not run the table.
    fn without_run(event: &TableSyncEvent, state: RunState, error: Option<SyncError>) -> Summary {
        Summary {
            integration: event.integration.to_string(),
            table: event.table.to_string(),
            run_id: event.run_id.to_string(),
            state,
            rows: 0,
            files: 0,
            requests: 0,
            resumes_at: None,
            error: error.map(|e| e.to_string()),
        }
    }
}

/// Records a stranded invocation failed; the event to continue as, or None when the run ended.
async fn recover(deps: &TableSyncDeps, event: &TableSyncEvent, stranded: u32) -> Result<Option<TableSyncEvent>> {
    let hold = deps.options.parked_hold;
    let (state, sink) = (deps.state.as_ref(), deps.sink.as_ref());
    match lifecycle::recover_stranded(state, sink, &event.integration, &event.table, stranded, hold).await? {
        Recovery::ContinueAs(seq) => Ok(Some(TableSyncEvent { seq: Some(seq), stranded: None, ..event.clone() })),
        Recovery::Ended => Ok(None),
    }
}

/// A Capsule client for the integration: its token from its source, requests drawn from the
/// token's budget in the state table.
async fn connect(integration: &Integration, deps: &TableSyncDeps) -> Result<CapsuleClient> {
    let tokens: Arc<dyn TokenProvider> =
        Arc::from(token_provider(integration, &deps.clients, &deps.client_options.access, deps.state.clone())?);
    let store: Arc<dyn RateBudgetStore> = deps.state.clone();
    CapsuleClient::for_integration(integration, tokens, store, deps.client_options.clone()).await
}

/// Invokes the run's next invocation now. If that fails the checkpoint still waits, parked: the
/// orchestrator's next tick continues it.
async fn continue_now(deps: &TableSyncDeps, event: &TableSyncEvent) {
    let next = match deps.state.checkpoint(&event.integration, &event.table, &event.run_id).await {
        Ok(Some(checkpoint)) => checkpoint.next_invocation(),
        Ok(None) => return,
        Err(error) => {
            tracing::warn!(event = Event::ContinuationNotDispatched.as_str(), %error, "the orchestrator's tick will continue the run");
            return;
        }
    };
    let next = TableSyncEvent { continuation: true, seq: Some(next), ..event.clone() };
    if let Err(error) = deps.dispatcher.dispatch(&next).await {
        tracing::warn!(event = Event::ContinuationNotDispatched.as_str(), %error, "the orchestrator's tick will continue the run");
    }
}

/// A run that failed before it could take its lease (e.g. no token) still leaves a record.
async fn record_unstarted(deps: &TableSyncDeps, event: &TableSyncEvent, error: &SyncError) {
    let now = Utc::now();
    let mut record = TableRunRecord::new(&event.integration, &event.table, &event.run_id, RunState::Failed, now);
    record.finished_at = Some(now);
    record.error = Some(ErrorRecord::from(error));
    if let Err(e) = deps.state.record_run(&record).await {
        tracing::error!(event = Event::RunRecordFailed.as_str(), error = %e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_clamped_to_sane_values() {
        let s = Duration::from_secs;
        assert_eq!(time_budget(Some(s(900)), None), s(840), "a 60 s margin at most");
        assert_eq!(time_budget(Some(s(100)), None), s(80), "a fifth of short budgets");
        assert_eq!(time_budget(Some(s(10_000_000)), None), s(840) - s(60), "nonsense deadlines ignored");
        assert_eq!(time_budget(None, None), s(780));
        assert_eq!(time_budget(Some(s(900)), Some(2)), s(2), "the event can force a small budget");
        assert_eq!(time_budget(Some(Duration::from_millis(10)), None), s(1), "never below a second");
    }
}
