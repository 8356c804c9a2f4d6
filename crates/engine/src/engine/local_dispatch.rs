//! The local dispatcher: a job's tables run in this process, a few at once, each continuing
//! itself in place when it parks (in AWS each table is its own Lambda invocation).

use std::sync::Arc;

use chrono::Utc;
use futures::StreamExt;

use super::*;
use crate::lifecycle::{self, Invocation};
use capsule_client::CapsuleClient;
use capsule_core::catalog::{self, TableSpec};
use capsule_core::integration::{Integration, RunId};
use capsule_core::ports::RunState;
use capsule_core::progress::{Activity, ActivityFn};

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
/// dispatcher; in AWS each table is its own Lambda invocation). A table that parks (a rate-limit
/// wait longer than the client waits in place) is continued here once its window resets. A table
/// whose discovery listing another selected table reads (tracks: tasks) waits for that table's
/// run to end, so it finds its snapshot and does not read the listing again. Marks the
/// integration Active after its first successful table run. Outcomes come in the order of `tables`.
pub async fn run_tables(
    client: &CapsuleClient,
    deps: RunPorts<'_>,
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
pub(super) async fn run_table(
    client: &CapsuleClient,
    deps: RunPorts<'_>,
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
            report(Activity::Parked { until: at });
            tokio::time::sleep((at - Utc::now()).to_std().unwrap_or_default()).await;
        }
        outcome = run(Invocation::Continue { seq: None }).run().await;
    }
    report(Activity::Finished { state: outcome.record.state, rows: outcome.record.rows });
    outcome
}
