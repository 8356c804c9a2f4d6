//! `capsule-sync sync NAME`: run an integration's tables now, in this process.

use std::collections::BTreeMap;

use capsule_client::CapsuleClient;
use capsule_core::SyncError;
use capsule_core::catalog::{self, TableSpec};
use capsule_core::integration::{Integration, IntegrationStatus, RunId};
use capsule_core::manifest::Compression;
use capsule_core::ports::{ErrorRecord, RunState, StartedBy, TableRunRecord};
use capsule_engine::engine::{self, RunOptions, TableRunOutcome};
use capsule_engine::output::{self, WriterOptions};
use capsule_engine::{plan, schedule};
use chrono::Utc;
use clap::Args;

use crate::backend::Backend;
use crate::live::{self, LiveView};
use crate::report;
use capsule_core::observe::Event;

#[derive(Args, Debug)]
pub struct SyncArgs {
    /// The integration to sync.
    pub name: String,
    /// Only these tables (comma separated); default: the integration's tables.
    #[arg(long, value_delimiter = ',')]
    pub tables: Vec<String>,
    /// Do not count this sync as the integration's last run: `run-due`, `schedule` and the
    /// orchestrator run it when its frequency says, as if this sync had not happened. (A sync of
    /// every table counts otherwise; a sync of some tables never does.)
    #[arg(long)]
    pub no_schedule: bool,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Settings of a local run shared by `sync` and `demo`.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Tables synced at the same time (they share the token's rate limit).
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Re-run this run id (overwrites its files instead of adding new ones).
    #[arg(long)]
    pub run_id: Option<RunId>,
    /// Write plain .ndjson instead of .ndjson.gz.
    #[arg(long)]
    pub no_compress: bool,
    /// Roll to a new part file at this many MiB (compressed).
    #[arg(long, default_value_t = 128)]
    pub part_size_mb: u64,
    /// Print the run records as JSON on stdout instead of the summary table.
    #[arg(long)]
    pub json: bool,
    /// First count what the sync will take (as `plan` does: 22 to 150 requests), so the live
    /// view shows progress against it with an ETA even for a first load. Without it the view
    /// compares with each table's last comparable run.
    #[arg(long)]
    pub plan: bool,
}

impl RunArgs {
    pub fn options(&self) -> RunOptions {
        RunOptions {
            writer: WriterOptions {
                compression: if self.no_compress { Compression::None } else { Compression::Gzip },
                part_max_bytes: self.part_size_mb.max(1) << 20,
                ..WriterOptions::default()
            },
            ..RunOptions::default()
        }
    }
}

pub async fn run(backend: &Backend, args: SyncArgs) -> anyhow::Result<()> {
    let integration = backend.integration(&args.name).await?;
    anyhow::ensure!(
        integration.status != IntegrationStatus::Paused,
        "integration `{}` is paused; `capsule-sync integrations resume {}` first",
        integration.name,
        integration.name
    );
    let tables = tables_to_sync(&integration, &args.tables)?;
    let mut run = args.run.clone();
    // A sync of every table is the integration's last run for the schedule (a redo of an old
    // run id is not a new run).
    if args.tables.is_empty() && !args.no_schedule && run.run_id.is_none() {
        let now = Utc::now();
        let run_id = RunId::new(now);
        schedule::record_run_of_every_table(backend.state.as_ref(), &integration, &run_id, now, StartedBy::Manual)
            .await?;
        run.run_id = Some(run_id);
    }
    let outcomes = sync_now(backend, &integration, &tables, &run).await?;
    print_outcomes(backend, &outcomes, args.run.json)?;
    match report::failures(&outcomes) {
        Some(failures) => anyhow::bail!(failures),
        None => Ok(()),
    }
}

/// The integration's tables, or those of them asked for; a table it does not select is refused.
fn tables_to_sync(integration: &Integration, asked: &[String]) -> anyhow::Result<Vec<&'static TableSpec>> {
    let selected = integration.selected_tables()?;
    if asked.is_empty() {
        return Ok(selected);
    }
    let tables = catalog::resolve_tables(asked)?;
    let unselected: Vec<&str> =
        tables.iter().filter(|t| !selected.iter().any(|s| s.name == t.name)).map(|t| t.name).collect();
    anyhow::ensure!(
        unselected.is_empty(),
        "integration `{}` does not sync {}; add with `integrations edit {} --add-tables {}`",
        integration.name,
        unselected.join(", "),
        integration.name,
        unselected.join(",")
    );
    Ok(tables)
}

/// Syncs `tables` of `integration` now and returns every table's outcome.
pub async fn sync_now(
    backend: &Backend,
    integration: &Integration,
    tables: &[&'static TableSpec],
    args: &RunArgs,
) -> anyhow::Result<Vec<TableRunOutcome>> {
    integration.validate()?;
    let run_id = args.run_id.clone().unwrap_or_else(|| RunId::new(Utc::now()));
    let client = match backend.client_for(integration).await {
        Ok(client) => client,
        Err(error) => {
            record_unstarted(backend, integration, tables, &run_id, &error).await;
            return Err(error);
        }
    };
    tracing::info!(event = Event::SyncStarted.as_str(), integration = %integration.name, run_id = %run_id, tables = tables.len());
    let view = match live::wanted() {
        true => LiveView::start(
            &integration.name,
            tables,
            expected(backend, integration, tables, &client, args).await?,
            &client,
        ),
        false => None,
    };
    let callback = view.as_ref().map(LiveView::callback);
    let outcomes = engine::run_tables(
        &client,
        backend.deps(),
        integration,
        tables,
        &run_id,
        args.options(),
        engine::LocalDispatch { concurrency: args.concurrency, progress: callback, redo: args.run_id.is_some() },
    )
    .await;
    if let Some(view) = view {
        view.finish().await;
    }
    Ok(outcomes)
}

/// What each table's run is expected to spend, for the live view: from the last comparable
/// runs, and from a fresh plan with `--plan`.
async fn expected(
    backend: &Backend,
    integration: &Integration,
    tables: &[&'static TableSpec],
    client: &CapsuleClient,
    args: &RunArgs,
) -> anyhow::Result<BTreeMap<&'static str, u64>> {
    let history = backend.state.runs(Some(&integration.name), 5000).await?;
    let plan = match args.plan {
        true => Some(plan::plan(client, integration, &history, Utc::now()).await?),
        false => None,
    };
    Ok(plan::expected_requests(tables, &history, plan.as_ref()))
}

pub fn print_outcomes(backend: &Backend, outcomes: &[TableRunOutcome], json: bool) -> anyhow::Result<()> {
    if json {
        let records: Vec<_> = outcomes.iter().map(|o| &o.record).collect();
        println!("{}", serde_json::to_string_pretty(&records)?);
        return Ok(());
    }
    println!("{}", report::summary_table(outcomes));
    if let Some(run) = outcomes.first() {
        let r = &run.record;
        let data = backend.sink.locate(&format!(
            "{}/<table>/dt={}/run={}/",
            r.integration,
            r.run_id.partition_date(),
            r.run_id
        ));
        let meta = backend.sink.locate(&output::run_manifests_prefix(&r.integration, r.run_id.as_str()));
        println!("files: {data}   manifests: {meta}   logs: {} logs {}", report::this_command(), r.run_id);
    }
    Ok(())
}

/// A sync that could not start (the token could not be read, the host is not allowed) still
/// leaves a failed record per table, so `status` and `runs` show why nothing ran.
async fn record_unstarted(
    backend: &Backend,
    integration: &Integration,
    tables: &[&'static TableSpec],
    run_id: &RunId,
    error: &anyhow::Error,
) {
    let error = match error.downcast_ref::<SyncError>() {
        Some(e) => ErrorRecord::from(e),
        None => ErrorRecord::from(&SyncError::Config(format!("{error:#}"))),
    };
    for table in tables {
        let now = Utc::now();
        let mut record = TableRunRecord::new(&integration.name, table.name, run_id, RunState::Failed, now);
        record.finished_at = Some(now);
        record.error = Some(error.clone());
        if let Err(e) = backend.state.record_run(&record).await {
            tracing::warn!(event = Event::RunRecordFailed.as_str(), error = %e);
        }
    }
}
