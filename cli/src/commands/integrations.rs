//! `capsule-sync integrations ...`: the integration registry, on either backend.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};

use anyhow::Context;
use capsule_core::catalog;
use capsule_core::integration::{
    FanOutMode, Integration, IntegrationName, TableSelection, TokenSource, parse_frequency, parse_history_start,
    parse_recent_window,
};
use chrono::Utc;
use clap::{Args, Subcommand, ValueEnum};

use capsule_engine::health::verify_token;
use capsule_engine::integrations::{self, Edit, EditPlan, PauseChange};
use capsule_engine::schedule;

use crate::backend::Backend;

#[derive(Subcommand, Debug)]
pub enum IntegrationsCommand {
    /// Register a Capsule account to sync (status: pending until its first load).
    Create(CreateArgs),
    /// One line per integration.
    List,
    /// An integration's settings and change history as JSON.
    Show { name: String },
    /// Change tables, columns, frequency, history start, lookback (the name cannot change).
    Edit(EditArgs),
    /// Stop scheduling it; runs resume from the bookmarks after `resume`.
    Pause { name: String },
    /// Schedule it again.
    Resume { name: String },
    /// Stop scheduling it and remove its state; `--purge-data` also removes its files.
    Delete(DeleteArgs),
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Unique name (lower-case letters, digits, - and _); also the output prefix. Immutable.
    pub name: String,
    /// Where the Capsule token is read: env:VAR, file:PATH, or secretsmanager:SECRET_ID (aws backend).
    #[arg(long)]
    /// (Parsed by the command, so a mistyped secret is never echoed back in clap's error.)
    pub token: String,
    /// Capsule API base URL.
    #[arg(long, default_value = capsule_core::integration::DEFAULT_BASE_URL)]
    pub api_base_url: String,
    /// Tables to sync (comma separated); default all 22.
    #[arg(long, value_delimiter = ',')]
    pub tables: Vec<String>,
    /// Columns of one table, as TABLE=col1,col2 (repeatable); default every column.
    #[arg(long = "columns", value_name = "TABLE=COLS")]
    pub columns: Vec<String>,
    /// First run of incremental tables reads changes since this date (default: everything).
    #[arg(long)]
    pub history_start: Option<String>,
    /// Re-read this many minutes before the previous run's start on incremental runs.
    #[arg(long, default_value_t = 10)]
    pub lookback_minutes: u32,
    /// Per cent of Capsule's hourly rate limit left unused for the account's other tools.
    #[arg(long, default_value_t = 10)]
    pub rate_reserve: u8,
    /// How often the scheduler syncs it: 30m, 6h, 1d.
    #[arg(long, default_value = "24h")]
    pub frequency: String,
    /// How tracks find their parents.
    #[arg(long, value_enum, default_value_t = FanOutArg::Discover)]
    pub fan_out: FanOutArg,
    /// Entries and tracks: read only what changed since the previous run and carry the rest
    /// over; everything read again every DAYS days (`7`: entries whole, tracks a slice of their
    /// parents a day); `off` reads them whole every run.
    #[arg(long, value_name = "DAYS|off", default_value = "off")]
    pub recent_window: String,
    /// Don't call the API to check the token.
    #[arg(long)]
    pub no_check: bool,
}

#[derive(Args, Debug)]
pub struct EditArgs {
    pub name: String,
    /// Replace the table list (comma separated).
    #[arg(long, value_delimiter = ',')]
    pub tables: Option<Vec<String>>,
    /// Add tables (they backfill from the history start on the next run).
    #[arg(long, value_delimiter = ',')]
    pub add_tables: Vec<String>,
    /// Remove tables.
    #[arg(long, value_delimiter = ',')]
    pub remove_tables: Vec<String>,
    /// Set a table's columns, TABLE=col1,col2 (repeatable); affects new files only.
    #[arg(long = "columns", value_name = "TABLE=COLS")]
    pub columns: Vec<String>,
    /// Go back to every column of these tables.
    #[arg(long, value_delimiter = ',')]
    pub all_columns: Vec<String>,
    #[arg(long)]
    pub frequency: Option<String>,
    /// Moving it earlier backfills the incremental tables on the next run.
    #[arg(long)]
    pub history_start: Option<String>,
    #[arg(long)]
    pub lookback_minutes: Option<u32>,
    /// Per cent of Capsule's hourly rate limit left unused for the account's other tools.
    #[arg(long)]
    pub rate_reserve: Option<u8>,
    #[arg(long, value_enum)]
    pub fan_out: Option<FanOutArg>,
    /// Entries' and tracks' recent-window mode: days between whole reads, or `off`.
    #[arg(long, value_name = "DAYS|off")]
    pub recent_window: Option<String>,
    #[arg(long)]
    pub api_base_url: Option<String>,
    #[arg(long)]
    pub token: Option<String>,
    /// Don't call the API to check a changed token or base URL.
    #[arg(long)]
    pub no_check: bool,
}

#[derive(Args, Debug)]
pub struct DeleteArgs {
    pub name: String,
    /// Also delete every file it wrote (data, manifests, schemas, logs).
    #[arg(long)]
    pub purge_data: bool,
    /// Don't ask before purging.
    #[arg(long)]
    pub yes: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FanOutArg {
    Discover,
    Exhaustive,
}

impl From<FanOutArg> for FanOutMode {
    fn from(a: FanOutArg) -> FanOutMode {
        match a {
            FanOutArg::Discover => FanOutMode::Discover,
            FanOutArg::Exhaustive => FanOutMode::Exhaustive,
        }
    }
}

/// Parses repeated `TABLE=col1,col2` flags.
pub fn parse_columns(specs: &[String]) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
    let mut columns = BTreeMap::new();
    for spec in specs {
        let (table, cols) =
            spec.split_once('=').with_context(|| format!("--columns `{spec}` is not TABLE=col1,col2"))?;
        let cols: Vec<String> = cols.split(',').map(|c| c.trim().to_string()).filter(|c| !c.is_empty()).collect();
        anyhow::ensure!(!cols.is_empty(), "--columns `{spec}` names no columns");
        let table = catalog::table(table).map(|t| t.name.to_string()).with_context(|| {
            format!("--columns: unknown table `{table}`; valid tables: {}", catalog::table_names().join(", "))
        })?;
        columns.insert(table, cols);
    }
    Ok(columns)
}

pub async fn run(backend: &Backend, cmd: IntegrationsCommand) -> anyhow::Result<()> {
    match cmd {
        IntegrationsCommand::Create(args) => create(backend, args).await,
        IntegrationsCommand::List => {
            for i in backend.state.list_integrations().await? {
                println!(
                    "{:<24} {:<8} tables={:<3} every {:<6} {}",
                    i.name,
                    i.status.as_str(),
                    i.selected_tables()?.len(),
                    format!("{}m", i.frequency_minutes),
                    i.api_base_url
                );
            }
            Ok(())
        }
        IntegrationsCommand::Show { name } => {
            println!("{}", serde_json::to_string_pretty(&backend.integration(&name).await?)?);
            Ok(())
        }
        IntegrationsCommand::Edit(args) => edit(backend, args).await,
        IntegrationsCommand::Pause { name } => set_paused(backend, &name, true).await,
        IntegrationsCommand::Resume { name } => set_paused(backend, &name, false).await,
        IntegrationsCommand::Delete(args) => delete(backend, args).await,
    }
}

async fn create(backend: &Backend, args: CreateArgs) -> anyhow::Result<()> {
    let name: IntegrationName = args.name.parse()?;
    let token: TokenSource = args.token.parse()?;
    let mut integration = Integration::new(name, token, Utc::now());
    integration.api_base_url = args.api_base_url;
    integration.tables = match args.tables.is_empty() {
        true => TableSelection::All,
        false => catalog::resolve_tables(&args.tables)?.iter().map(|t| t.name.to_string()).collect(),
    };
    integration.columns = parse_columns(&args.columns)?;
    if let Some(start) = &args.history_start {
        integration.history_start = parse_history_start(start)?;
    }
    integration.lookback_minutes = args.lookback_minutes;
    integration.rate_reserve_percent = args.rate_reserve;
    integration.frequency_minutes = parse_frequency(&args.frequency)?;
    integration.fan_out = args.fan_out.into();
    integration.recent_window = parse_recent_window(&args.recent_window)?;
    integration.validate()?;
    backend.access.check(&integration)?;
    schedule::check_frequency(&integration, backend.scheduler_tick())?;
    if !args.no_check {
        check_token(backend, &integration).await?;
    }
    backend.state.create_integration(&integration).await?;
    println!("created integration `{}` (pending until its first successful load)", integration.name);
    Ok(())
}

/// One cheap authenticated request: proves the token and the base URL work.
async fn check_token(backend: &Backend, integration: &Integration) -> anyhow::Result<()> {
    let client = backend.client_for(integration).await?;
    verify_token(&client).await.context("checking the token against the Capsule API (use --no-check to skip)")?;
    Ok(())
}

async fn edit(backend: &Backend, args: EditArgs) -> anyhow::Result<()> {
    let before = backend.integration(&args.name).await?;
    let edit = Edit {
        tables: args.tables,
        add_tables: args.add_tables,
        remove_tables: args.remove_tables,
        columns: parse_columns(&args.columns)?,
        all_columns: args.all_columns,
        frequency_minutes: args.frequency.as_deref().map(parse_frequency).transpose()?,
        history_start: args.history_start.as_deref().map(parse_history_start).transpose()?,
        lookback_minutes: args.lookback_minutes,
        rate_reserve_percent: args.rate_reserve,
        fan_out: args.fan_out.map(FanOutMode::from),
        recent_window: args.recent_window.as_deref().map(parse_recent_window).transpose()?,
        api_base_url: args.api_base_url,
        token: args.token.as_deref().map(str::parse::<TokenSource>).transpose()?,
    };
    let after = edit.apply(&before)?;
    backend.access.check(&after)?;
    schedule::check_frequency(&after, backend.scheduler_tick())?;
    // A new token or base URL is proven before it is stored, as `create` does.
    if (after.token != before.token || after.api_base_url != before.api_base_url) && !args.no_check {
        check_token(backend, &after).await?;
    }
    let plan = EditPlan::new(&before, after)?;
    if plan.is_empty() {
        println!("nothing to change");
        return Ok(());
    }
    let (changes, backfill) = (plan.changes.join("; "), plan.backfill.join(", "));
    let stored = plan.store(backend.state.as_ref(), Utc::now()).await?;
    println!("updated `{}`: {changes}", stored.name);
    if !backfill.is_empty() {
        println!("backfill on the next run: {backfill}");
    }
    Ok(())
}

async fn set_paused(backend: &Backend, name: &str, pause: bool) -> anyhow::Result<()> {
    let integration = backend.integration(name).await?;
    match integrations::set_paused(backend.state.as_ref(), integration, pause).await? {
        PauseChange::Already => println!("`{name}` is already {}", if pause { "paused" } else { "running" }),
        PauseChange::Now(status) => println!("`{name}` is now {status}"),
    }
    Ok(())
}

async fn delete(backend: &Backend, args: DeleteArgs) -> anyhow::Result<()> {
    let integration = backend.integration(&args.name).await?;
    let files = match args.purge_data {
        true => integrations::files_of(backend.sink.as_ref(), &integration.name).await?,
        false => Vec::new(),
    };
    let question = format!("delete {} files of `{}` in {}?", files.len(), integration.name, backend.location);
    if args.purge_data && !args.yes && !confirm(&question)? {
        anyhow::bail!("nothing deleted");
    }
    integrations::delete(backend.state.as_ref(), backend.sink.as_ref(), &integration.name, &files).await?;
    if args.purge_data {
        println!("deleted {} files", files.len());
    }
    println!("deleted integration `{}`: it will not be scheduled again (run history is kept)", integration.name);
    Ok(())
}

fn confirm(question: &str) -> anyhow::Result<bool> {
    anyhow::ensure!(std::io::stdin().is_terminal(), "{question} Not on a terminal: pass --yes to confirm");
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}
