//! Operations: `status`, `check`, `runs`, `jobs`, `logs`.

use capsule_core::integration::{IntegrationStatus, RunId};
use capsule_core::ports::{RunState, TableRunRecord};
use capsule_core::runlog::parse_ndjson;
use capsule_engine::health::{note_overdue, note_stranded, probe_table, table_health, verify_token};
use capsule_engine::jobs::{self, StartedBy};
use capsule_engine::output;
use capsule_engine::schedule;
use chrono::{DateTime, Utc};
use clap::Args;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

use crate::backend::Backend;
use crate::report;

/// How many run records the views read.
const HISTORY: usize = 5000;

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Per-table health of this integration.
    pub name: Option<String>,
    /// JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    pub name: String,
}

#[derive(Args, Debug)]
pub struct RunsArgs {
    /// Only this integration.
    pub name: Option<String>,
    /// Only this table.
    #[arg(long)]
    pub table: Option<String>,
    /// How many table runs.
    #[arg(long, default_value_t = 30)]
    pub last: usize,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// The run; the newest one (of `--integration`, of `--table`) when absent.
    pub run_id: Option<RunId>,
    /// The newest run of this integration.
    #[arg(long)]
    pub integration: Option<String>,
    /// Only this table.
    #[arg(long)]
    pub table: Option<String>,
}

#[derive(Args, Debug)]
pub struct JobsArgs {
    pub name: String,
    /// How many jobs.
    #[arg(long, default_value_t = 20)]
    pub last: usize,
    #[arg(long)]
    pub json: bool,
}

fn when(t: Option<DateTime<Utc>>) -> String {
    t.map_or("-".into(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string())
}

fn state(s: RunState) -> String {
    s.as_str().to_string()
}

/// A table's state in `status`: parked, stranded or its last record's, and overdue.
fn run_state(h: &capsule_engine::health::TableHealth) -> String {
    let now = match h.resumes_at {
        Some(at) => format!("parked until {}", when(Some(at))),
        None if h.stranded => "stranded (the next sync takes it over)".into(),
        None => state(h.last_state),
    };
    match h.overdue_since {
        Some(since) => format!("{now}; overdue: in progress since {}", when(Some(since))),
        None => now,
    }
}

pub async fn status(backend: &Backend, args: StatusArgs) -> anyhow::Result<()> {
    if let Some(name) = args.name {
        let integration = backend.integration(&name).await?;
        let runs = backend.state.runs(Some(&name), HISTORY).await?;
        let mut health = table_health(&runs);
        if health.values().any(|h| matches!(h.last_state, RunState::Running | RunState::Continued)) {
            let states = backend.state.table_states(&name).await?;
            note_stranded(&mut health, &states, Utc::now());
            let after = capsule_engine::lifecycle::overdue_after_from_env()?;
            note_overdue(&mut health, &states, after, Utc::now());
        }
        if args.json {
            println!("{}", serde_json::to_string_pretty(&health)?);
            return Ok(());
        }
        println!("{}: {}", name, integration.status);
        let mut t = Table::new();
        t.load_preset(UTF8_FULL_CONDENSED);
        t.set_header([
            "table",
            "last run",
            "state",
            "last success",
            "rows",
            "last failure",
            "failures in a row",
            "error",
        ]);
        for spec in integration.selected_tables()? {
            match health.get(spec.name) {
                Some(h) => t.add_row(vec![
                    h.table.clone(),
                    h.last_run.to_string(),
                    run_state(h),
                    when(h.last_success),
                    h.last_rows.to_string(),
                    when(h.last_failure),
                    h.consecutive_failures.to_string(),
                    h.last_error.as_ref().map_or(String::new(), |e| format!("{}: {}", e.error_type, e.message)),
                ]),
                None => t.add_row(vec![spec.name.to_string(), "never run".into()]),
            };
        }
        println!("{t}");
        if let Some(hooks) = super::hooks::summary(backend, &integration).await? {
            println!("{hooks}");
        }
        return Ok(());
    }
    status_of_all(backend, args.json).await
}

/// One integration in the all-integrations `status`.
#[derive(serde::Serialize)]
struct IntegrationLine {
    integration: String,
    status: IntegrationStatus,
    tables: usize,
    last_job: Option<LastJob>,
    last_success: Option<DateTime<Utc>>,
    next_due: schedule::NextDue,
    /// Tables whose run waits (for the rate-limit window, or Capsule), with until when.
    waiting: Vec<(String, DateTime<Utc>)>,
    /// Tables whose last runs failed, with how many in a row.
    failing: Vec<(String, u32)>,
    /// Since when the scheduler's due index has named it due, if it does now: the backlog the
    /// next tick works through, earliest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    due_since: Option<DateTime<Utc>>,
}

#[derive(serde::Serialize)]
struct LastJob {
    run_id: RunId,
    started_by: StartedBy,
    started_at: DateTime<Utc>,
    /// `22 succeeded`, `20 succeeded, 2 failed`, …
    result: String,
}

/// Every integration on one screen: state, last job and its result, next due time and why,
/// tables waiting or failing; and the commands that say more.
async fn status_of_all(backend: &Backend, json: bool) -> anyhow::Result<()> {
    let now = Utc::now();
    let backlog: std::collections::BTreeMap<String, Option<DateTime<Utc>>> =
        backend.state.due(now, usize::MAX).await?.into_iter().map(|w| (w.integration, w.at)).collect();
    let mut lines = Vec::new();
    for integration in backend.state.list_integrations().await? {
        let name = integration.name.clone();
        let health = table_health(&backend.state.runs(Some(&name), HISTORY).await?);
        let last_job = jobs::jobs(backend.state.as_ref(), &name, 1).await?.into_iter().next().map(|job| LastJob {
            result: job_result(&job),
            run_id: job.run_id,
            started_by: job.started_by,
            started_at: job.started_at,
        });
        let last = backend.state.last_dispatch(&name).await?;
        lines.push(IntegrationLine {
            tables: integration.selected_tables()?.len(),
            last_job,
            last_success: health.values().filter_map(|h| h.last_success).max(),
            next_due: schedule::due_status(&integration, last.as_ref(), now),
            waiting: health.values().filter_map(|h| h.resumes_at.map(|at| (h.table.clone(), at))).collect(),
            failing: health
                .values()
                .filter(|h| h.consecutive_failures > 0)
                .map(|h| (h.table.clone(), h.consecutive_failures))
                .collect(),
            due_since: backlog.get(name.as_str()).copied().flatten(),
            status: integration.status,
            integration: name.into(),
        });
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&lines)?);
        return Ok(());
    }
    if lines.is_empty() {
        println!("no integrations in {}", backend.location);
        return Ok(());
    }
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(["integration", "status", "last job", "result", "next due", "waiting", "failing"]);
    for l in &lines {
        let job = l.last_job.as_ref();
        t.add_row(vec![
            l.integration.clone(),
            l.status.to_string(),
            job.map_or("never run".into(), |j| format!("{} ({})", j.run_id, j.started_by.as_str())),
            job.map_or(String::new(), |j| j.result.clone()),
            format!("{}\n{}", l.next_due.at.map_or("never".into(), |at| when(Some(at))), l.next_due.why),
            l.waiting.iter().map(|(t, at)| format!("{t} until {}", when(Some(*at)))).collect::<Vec<_>>().join("\n"),
            l.failing.iter().map(|(t, n)| format!("{t} ({n}×)")).collect::<Vec<_>>().join("\n"),
        ]);
    }
    println!("{t}");
    let oldest = backlog.values().flatten().min();
    match oldest {
        Some(since) => println!(
            "scheduler backlog: {} of {} integrations due now, the oldest since {}",
            backlog.len(),
            lines.len(),
            when(Some(*since))
        ),
        None => println!("scheduler backlog: none due now"),
    }
    println!("more: {0} status NAME (per table) · {0} jobs NAME · {0} runs NAME", report::this_command());
    Ok(())
}

/// A job's tables by state: `20 succeeded, 2 failed`.
fn job_result(job: &jobs::Job) -> String {
    let mut counts: Vec<String> =
        [RunState::Succeeded, RunState::Failed, RunState::Continued, RunState::Running, RunState::Skipped]
            .into_iter()
            .filter_map(|state| Some(job.count(state)).filter(|n| *n > 0).map(|n| format!("{n} {}", state.as_str())))
            .collect();
    if !job.to_send.is_empty() {
        counts.push(format!("{} to send", job.to_send.len()));
    }
    counts.join(", ")
}

pub async fn check(backend: &Backend, args: CheckArgs) -> anyhow::Result<()> {
    let integration = backend.integration(&args.name).await?;
    let client = match backend.client_for(&integration).await {
        Ok(c) => c,
        Err(e) => anyhow::bail!("token: cannot be read: {e:#}"),
    };
    if let Err(e) = verify_token(&client).await {
        anyhow::bail!("token / API: {e}");
    }
    println!("token:      accepted by {}", integration.api_base_url);
    match client.rate_limit() {
        Some(r) => {
            let reset = DateTime::<Utc>::from_timestamp(r.reset as i64, 0);
            println!("rate limit: {} of {} requests left until {}", r.remaining, r.limit, when(reset));
        }
        None => println!("rate limit: no X-RateLimit headers in the answer"),
    }
    let mut unreadable = Vec::new();
    for table in integration.selected_tables()? {
        match probe_table(&client, table).await {
            Ok(()) => println!("  ok        {}", table.name),
            Err(e) => {
                println!("  FAILED    {}: {e}", table.name);
                unreadable.push(table.name);
            }
        }
    }
    anyhow::ensure!(unreadable.is_empty(), "{} table(s) not readable: {}", unreadable.len(), unreadable.join(", "));
    println!("all {} tables readable", integration.selected_tables()?.len());
    Ok(())
}

pub async fn runs(backend: &Backend, args: RunsArgs) -> anyhow::Result<()> {
    if let Some(name) = &args.name {
        backend.integration(name).await?;
    }
    let mut runs = backend.state.runs(args.name.as_deref(), HISTORY).await?;
    if let Some(table) = &args.table {
        let table = capsule_core::catalog::table(table).ok_or_else(|| anyhow::anyhow!("unknown table `{table}`"))?;
        runs.retain(|r| r.table == table.name);
    }
    runs.truncate(args.last);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&runs)?);
        return Ok(());
    }
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header([
        "run",
        "integration",
        "table",
        "state",
        "rows",
        "files",
        "bytes",
        "requests",
        "retries",
        "429s",
        "seconds",
        "bookmark before → after",
        "error",
    ]);
    for r in &runs {
        t.add_row(vec![
            r.run_id.to_string(),
            r.integration.clone(),
            r.table.clone(),
            state(r.state),
            r.rows.to_string(),
            r.files.to_string(),
            r.bytes.to_string(),
            r.requests.requests.to_string(),
            r.requests.retries.to_string(),
            r.requests.rate_limited.to_string(),
            format!("{:.2}", r.seconds()),
            format!("{} → {}", when(r.bookmark_before), when(r.bookmark_after)),
            r.error.as_ref().map_or(String::new(), |e| format!("{} ({} fault): {}", e.error_type, e.fault, e.message)),
        ]);
    }
    println!("{t}");
    Ok(())
}

pub async fn logs(backend: &Backend, args: LogsArgs) -> anyhow::Result<()> {
    let table = match &args.table {
        Some(t) => Some(capsule_core::catalog::table(t).ok_or_else(|| anyhow::anyhow!("unknown table `{t}`"))?.name),
        None => None,
    };
    let runs: Vec<TableRunRecord> = backend.state.runs(args.integration.as_deref(), usize::MAX / 2).await?;
    // Newest first: with no run id, the newest run (of the table, when given).
    let found = runs.iter().find(|r| {
        args.run_id.as_ref().is_none_or(|id| &r.run_id == id)
            && (args.run_id.is_some() || table.is_none_or(|t| r.table == t))
    });
    let Some(found) = found else {
        match &args.run_id {
            Some(id) => anyhow::bail!("no run {id} in {}", backend.location),
            None => anyhow::bail!("no runs yet in {}", backend.location),
        }
    };
    let (integration, run_id) = (found.integration.clone(), found.run_id.clone());
    let prefix = output::log_prefix(&integration, &run_id);
    let mut keys = backend.sink.list(&prefix).await?;
    if let Some(table) = table {
        keys.retain(|k| k.strip_prefix(&prefix).is_some_and(|f| f.starts_with(&format!("{table}-"))));
    }
    anyhow::ensure!(
        !keys.is_empty(),
        "no logs stored for run {run_id}{}",
        table.map_or(String::new(), |t| format!(" table {t}"))
    );
    println!("run {run_id} of {integration}");
    for key in keys {
        let name = key.strip_prefix(&prefix).unwrap_or(&key).trim_end_matches(".ndjson").to_string();
        let Some(bytes) = backend.sink.get(&key).await? else { continue };
        for event in parse_ndjson(&String::from_utf8_lossy(&bytes)) {
            match event {
                Ok(e) => {
                    let fields = if e.fields.is_null() { String::new() } else { format!(" {}", e.fields) };
                    println!("{} {:<5} {:<14} {:<22} {}{fields}", e.at, e.level.as_str(), name, e.event, e.message);
                }
                Err(bad) => println!("{bad}"),
            }
        }
    }
    Ok(())
}

pub async fn jobs(backend: &Backend, args: JobsArgs) -> anyhow::Result<()> {
    let integration = backend.integration(&args.name).await?;
    let jobs = capsule_engine::jobs::jobs(backend.state.as_ref(), &args.name, args.last).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&jobs)?);
        return Ok(());
    }
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header([
        "run",
        "started by",
        "started",
        "succeeded",
        "failed",
        "continued",
        "skipped",
        "to send",
        "rows",
        "seconds",
    ]);
    for job in &jobs {
        t.add_row(vec![
            job.run_id.to_string(),
            job.started_by.as_str().to_string(),
            when(Some(job.started_at)),
            job.count(RunState::Succeeded).to_string(),
            job.count(RunState::Failed).to_string(),
            (job.count(RunState::Continued) + job.count(RunState::Running)).to_string(),
            job.count(RunState::Skipped).to_string(),
            job.to_send.join(","),
            job.rows.to_string(),
            job.seconds().map_or("-".into(), |s| format!("{s:.1}")),
        ]);
    }
    println!("{t}");
    if let Some(hooks) = super::hooks::summary(backend, &integration).await? {
        println!("{hooks}");
    }
    Ok(())
}
