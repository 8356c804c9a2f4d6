//! The table-sync function: runs one table of one integration through the engine with the AWS
//! adapters, and re-invokes itself to continue the same run when its time budget runs low.

use std::sync::Arc;
use std::time::{Duration, Instant};

use capsule_shared::aws::{AwsClients, token_provider};
use capsule_shared::capsule::{CapsuleClient, ClientOptions};
use capsule_shared::catalog;
use capsule_shared::engine::{self, Deps as EngineDeps, RunOptions, TableRun};
use capsule_shared::events::TableSyncEvent;
use capsule_shared::integration::IntegrationStatus;
use capsule_shared::ports::{Dispatcher, ErrorRecord, ObjectSink, RunState, StateStore, TableRunRecord};
use capsule_shared::{Result, SyncError};
use chrono::Utc;
use serde::Serialize;

/// Lambda's hard limit.
const LAMBDA_MAX: Duration = Duration::from_secs(900);
/// Used when the runtime's deadline is missing or nonsense (local emulators report constants).
const DEFAULT_BUDGET: Duration = Duration::from_secs(840);

/// What table-sync needs, built once at cold start.
#[derive(Clone)]
pub struct Deps {
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
}

/// Working time for this invocation: Lambda's remaining time (sane values only) minus a margin
/// to finish the current part and save the checkpoint, capped by the event's `max_seconds`.
pub fn time_budget(remaining: Option<Duration>, max_seconds: Option<u64>) -> Duration {
    let lambda = remaining.filter(|r| !r.is_zero() && *r <= LAMBDA_MAX).unwrap_or(DEFAULT_BUDGET);
    let margin = (lambda / 5).min(Duration::from_secs(60));
    let mut budget = lambda.saturating_sub(margin);
    if let Some(max) = max_seconds {
        budget = budget.min(Duration::from_secs(max));
    }
    budget.max(Duration::from_secs(1))
}

pub async fn handler(event: serde_json::Value, remaining: Option<Duration>, deps: &Deps) -> Result<Summary> {
    let event = TableSyncEvent::parse(event)?;
    let integration = deps
        .state
        .get_integration(&event.integration)
        .await?
        .ok_or_else(|| SyncError::Config(format!("no integration named `{}` is registered", event.integration)))?;
    let table = catalog::table(&event.table).ok_or_else(|| {
        SyncError::Config(format!(
            "unknown table `{}`; valid tables: {}",
            event.table,
            catalog::table_names().join(", ")
        ))
    })?;
    let summary = |state, rows, files, requests| Summary {
        integration: integration.name.clone(),
        table: table.name.to_string(),
        run_id: event.run_id.to_string(),
        state,
        rows,
        files,
        requests,
    };
    if integration.status == IntegrationStatus::Paused && !event.continuation {
        tracing::info!(event = "table_sync_skipped", reason = "integration paused");
        return Ok(summary(RunState::Skipped, 0, 0, 0));
    }
    let client = match token_provider(&integration.token, &deps.clients).token().await {
        Ok(token) => CapsuleClient::new(&integration.api_base_url, token, deps.client_options.clone())?,
        Err(error) => {
            record_unstarted(deps, &event, &error).await;
            return Err(error);
        }
    };
    let budget = time_budget(remaining, event.max_seconds);
    let run = TableRun {
        client: &client,
        deps: EngineDeps { state: deps.state.as_ref(), sink: deps.sink.as_ref() },
        integration: &integration,
        table,
        run_id: &event.run_id,
        options: deps.options,
        progress: None,
        deadline: Some(Instant::now() + budget),
        continuation: event.continuation,
    };
    let outcome = run.run().await;
    let r = &outcome.record;
    match r.state {
        RunState::Continued => {
            let next = TableSyncEvent { continuation: true, ..event.clone() };
            deps.dispatcher.dispatch(&next).await?;
        }
        RunState::Succeeded => engine::mark_active(deps.state.as_ref(), &integration.name).await,
        RunState::Failed => {
            return Err(outcome.error.unwrap_or_else(|| SyncError::Internal("failed without an error".into())));
        }
        RunState::Skipped | RunState::Running => {}
    }
    Ok(summary(r.state, r.rows, r.files, r.requests.requests))
}

/// A run that failed before it could take its lease (e.g. no token) still leaves a record.
async fn record_unstarted(deps: &Deps, event: &TableSyncEvent, error: &SyncError) {
    let now = Utc::now();
    let mut record = TableRunRecord::new(&event.integration, &event.table, &event.run_id, RunState::Failed, now);
    record.finished_at = Some(now);
    record.error = Some(ErrorRecord::from(error));
    if let Err(e) = deps.state.record_run(&record).await {
        tracing::error!(event = "run_record_failed", error = %e);
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
