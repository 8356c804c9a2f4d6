//! `run-due` (one pass, for cron or a systemd timer) and `schedule` (stays up and runs each
//! integration as it comes due): the orchestrator's scheduling rules (`capsule_engine::schedule`),
//! run locally. Ctrl-C stops `schedule` cleanly: the syncs in progress finish (so they release
//! their leases) and it exits; a second Ctrl-C stops at once.

use std::time::Duration;

use capsule_core::integration::{Integration, RunId};
use capsule_core::ports::RunState;
use capsule_engine::schedule::{self, PassOutcome, SystemClock};
use chrono::Utc;
use clap::Args;

use super::sync::{RunArgs, print_outcomes, sync_now};
use crate::backend::Backend;

#[derive(Args, Debug)]
pub struct RunDueArgs {
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Args, Debug)]
pub struct ScheduleArgs {
    /// Look for due integrations at least this often (seconds).
    #[arg(long, default_value_t = 60)]
    pub tick: u64,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Syncs every selected table of an integration under the scheduler's run id.
fn syncer<'a>(backend: &'a Backend, run: &'a RunArgs) -> impl AsyncFnMut(&Integration, &RunId) -> bool + 'a {
    async move |integration: &Integration, run_id: &RunId| {
        let args = RunArgs { run_id: Some(run_id.clone()), ..run.clone() };
        let tables = match integration.selected_tables() {
            Ok(tables) => tables,
            Err(e) => {
                eprintln!("{}: {e}", integration.name);
                return false;
            }
        };
        match sync_now(backend, integration, &tables, &args).await {
            Ok(outcomes) => {
                if let Err(e) = print_outcomes(backend, &outcomes, run.json) {
                    eprintln!("{e:#}");
                }
                outcomes.iter().all(|o| o.record.state == RunState::Succeeded)
            }
            Err(e) => {
                eprintln!("{}: {e:#}", integration.name);
                false
            }
        }
    }
}

fn print_pass(outcomes: &[PassOutcome]) {
    for outcome in outcomes {
        match outcome {
            PassOutcome::Synced { integration, run_id, ok } => {
                let how = if *ok { "every table succeeded" } else { "some tables failed (see above)" };
                println!("{integration}: synced as run {run_id}: {how}");
            }
            PassOutcome::Skipped { integration, reason } => println!("{integration}: {reason}"),
        }
    }
}

pub async fn run_due(backend: &Backend, args: RunDueArgs) -> anyhow::Result<()> {
    let mut sync = syncer(backend, &args.run);
    let now = Utc::now();
    let outcomes = schedule::run_due(backend.state.as_ref(), now, &mut sync).await?;
    print_pass(&outcomes);
    print_pass(&schedule::not_looked_at(backend.state.as_ref(), &outcomes, now).await?);
    let failed: Vec<&str> = outcomes
        .iter()
        .filter_map(|o| match o {
            PassOutcome::Synced { integration, ok: false, .. } => Some(integration.as_str()),
            _ => None,
        })
        .collect();
    anyhow::ensure!(failed.is_empty(), "integrations with failed tables: {}", failed.join(", "));
    Ok(())
}

pub async fn schedule(backend: &Backend, args: ScheduleArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.tick >= 1, "--tick must be at least 1 second");
    println!("scheduling the integrations in {} (Ctrl-C stops)", backend.location);
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
        eprintln!("stopping: finishing the syncs in progress (Ctrl-C again stops at once)");
        tokio::spawn(async {
            let _ = tokio::signal::ctrl_c().await;
            std::process::exit(130);
        });
    };
    let mut sync = syncer(backend, &args.run);
    let tick = Duration::from_secs(args.tick);
    schedule::run_schedule(backend.state.as_ref(), &SystemClock, tick, stop, &mut sync, &mut |o| print_pass(o)).await?;
    println!("stopped");
    Ok(())
}
