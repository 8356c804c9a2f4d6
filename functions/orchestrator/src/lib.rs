//! The orchestrator: decides which integrations are due and dispatches one table-sync
//! invocation per selected table under one new run id.

use std::sync::Arc;

use capsule_shared::catalog;
use capsule_shared::events::{ManualRun, OrchestratorEvent, TableSyncEvent};
use capsule_shared::integration::{Integration, IntegrationStatus, RunId};
use capsule_shared::ports::{DispatchRecord, Dispatcher, StateStore};
use capsule_shared::{Result, SyncError};
use chrono::{DateTime, Utc};
use serde::Serialize;

/// Scheduler ticks are not exact: an integration counts as due this much before its time.
const SCHEDULE_SLACK_MINUTES: i64 = 2;

/// What the orchestrator needs, built once at cold start.
#[derive(Clone)]
pub struct Deps {
    pub state: Arc<dyn StateStore>,
    pub dispatcher: Arc<dyn Dispatcher>,
}

/// The orchestrator's answer.
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Summary {
    pub dispatched: Vec<Dispatched>,
    pub skipped: Vec<Skipped>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Dispatched {
    pub integration: String,
    pub run_id: RunId,
    pub tables: Vec<String>,
    /// Tables whose invocation could not be started, with why.
    pub failed: Vec<(String, String)>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Skipped {
    pub integration: String,
    pub reason: String,
}

pub async fn handler(event: serde_json::Value, deps: &Deps) -> Result<Summary> {
    let (request, scheduled) = match OrchestratorEvent::parse(event)? {
        OrchestratorEvent::Scheduled => (ManualRun::default(), true),
        OrchestratorEvent::Manual(run) => (run, false),
    };
    let integrations = match &request.integration {
        Some(name) => vec![
            deps.state
                .get_integration(name)
                .await?
                .ok_or_else(|| SyncError::Config(format!("no integration named `{name}` is registered")))?,
        ],
        None => deps.state.list_integrations().await?,
    };
    let tables_asked = if request.tables.is_empty() { None } else { Some(catalog::resolve_tables(&request.tables)?) };
    let now = Utc::now();
    let mut summary = Summary::default();
    for integration in integrations {
        if let Some(reason) = why_not_due(&integration, deps, now, request.force && !scheduled).await? {
            tracing::info!(event = "integration_skipped", integration = %integration.name, %reason);
            summary.skipped.push(Skipped { integration: integration.name.clone(), reason });
            continue;
        }
        let tables = match &tables_asked {
            Some(tables) => tables.clone(),
            None => integration.selected_tables()?,
        };
        summary.dispatched.push(dispatch(&integration, &tables, deps, now).await?);
    }
    Ok(summary)
}

/// Paused integrations never run; others run when their frequency has elapsed (or forced).
async fn why_not_due(
    integration: &Integration,
    deps: &Deps,
    now: DateTime<Utc>,
    force: bool,
) -> Result<Option<String>> {
    if integration.status == IntegrationStatus::Paused {
        return Ok(Some("paused".into()));
    }
    if force {
        return Ok(None);
    }
    let Some(last) = deps.state.last_dispatch(&integration.name).await? else { return Ok(None) };
    let due_at = last.dispatched_at + chrono::Duration::minutes(i64::from(integration.frequency_minutes))
        - chrono::Duration::minutes(SCHEDULE_SLACK_MINUTES);
    Ok((now < due_at).then(|| format!("not due until {}", due_at.to_rfc3339())))
}

async fn dispatch(
    integration: &Integration,
    tables: &[&'static catalog::TableSpec],
    deps: &Deps,
    now: DateTime<Utc>,
) -> Result<Dispatched> {
    let run_id = RunId::new(now);
    let mut failed = Vec::new();
    for table in tables {
        let event = TableSyncEvent {
            integration: integration.name.clone(),
            table: table.name.to_string(),
            run_id: run_id.clone(),
            continuation: false,
            max_seconds: None,
        };
        if let Err(e) = deps.dispatcher.dispatch(&event).await {
            tracing::error!(event = "dispatch_failed", table = table.name, error = %e);
            failed.push((table.name.to_string(), e.to_string()));
        }
    }
    let names: Vec<String> = tables.iter().map(|t| t.name.to_string()).collect();
    let record = DispatchRecord {
        integration: integration.name.clone(),
        run_id: run_id.clone(),
        tables: names.clone(),
        dispatched_at: now,
        failed: failed.clone(),
    };
    deps.state.record_dispatch(&record).await?;
    tracing::info!(event = "integration_dispatched", integration = %integration.name, run_id = %run_id, tables = names.len());
    Ok(Dispatched { integration: integration.name.clone(), run_id, tables: names, failed })
}
