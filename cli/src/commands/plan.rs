//! `capsule-sync plan NAME`: the requests and hours of the token's quota a first load and each
//! scheduled run will take, per table, from the account's sizes (see `capsule_engine::plan`).

use capsule_engine::plan;
use chrono::Utc;
use clap::Args;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

use crate::backend::Backend;

#[derive(Args, Debug)]
pub struct PlanArgs {
    pub name: String,
    /// JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(backend: &Backend, args: PlanArgs) -> anyhow::Result<()> {
    let integration = backend.integration(&args.name).await?;
    let client = backend.client_for(&integration).await?;
    let history = backend.state.runs(Some(&integration.name), 5000).await?;
    let plan = plan::plan(&client, &integration, &history, Utc::now()).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
        return Ok(());
    }
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header([
        "table",
        "replication",
        "rows",
        "first load requests",
        "rows per run",
        "requests per run",
        "how",
    ]);
    let shown = |n: Option<u64>| n.map_or_else(|| "?".to_string(), |n| n.to_string());
    for t in &plan.tables {
        table.add_row([
            t.table.to_string(),
            t.replication.to_string(),
            shown(t.rows),
            t.first_load_requests.to_string(),
            shown(t.scheduled_rows),
            t.scheduled_requests.to_string(),
            t.basis.clone(),
        ]);
    }
    println!("{table}");
    println!(
        "First load: {} requests, {:.1} hours of quota ({} usable per hour: {} less the {} % reserve).",
        plan.first_load_requests,
        plan.first_load_hours,
        plan.usable_per_hour,
        plan::HOURLY_LIMIT,
        integration.rate_reserve_percent
    );
    println!(
        "Each run (every {} min): {} requests, {:.1} hours of quota; {:.1} runs a day: {} requests a day ({:.0} % of the day's quota).",
        integration.frequency_minutes,
        plan.scheduled_requests,
        plan.scheduled_hours,
        plan.runs_per_day,
        plan.daily_requests,
        100.0 * plan.daily_requests as f64 / (plan.usable_per_hour as f64 * 24.0)
    );
    if plan.scheduled_hours * 60.0 > f64::from(integration.frequency_minutes) {
        println!(
            "Warning: a run takes longer than the interval between runs; runs will overlap their windows. Lower the frequency or select fewer tables."
        );
    }
    println!("This plan used {} requests.", plan.probe_requests);
    Ok(())
}
