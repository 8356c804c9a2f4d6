//! `capsule-sync integrations ...`: the integration registry in the data directory.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use capsule_shared::integration::{
    FanOutMode, Integration, TokenSource, parse_frequency, parse_history_start, validate_name,
};
use capsule_shared::ports::StateStore;
use chrono::Utc;
use clap::{Args, Subcommand, ValueEnum};

use crate::backend::{LocalBackend, client_for};

#[derive(Subcommand, Debug)]
pub enum IntegrationsCommand {
    /// Register a Capsule account to sync.
    Create(CreateArgs),
    /// One line per integration.
    List,
    /// An integration's settings as JSON.
    Show { name: String },
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Unique name (lower-case letters, digits, - and _); also the output prefix. Immutable.
    pub name: String,
    /// Where the Capsule token is read: env:VAR or file:PATH.
    #[arg(long)]
    pub token: TokenSource,
    /// Capsule API base URL.
    #[arg(long, default_value = capsule_shared::capsule::DEFAULT_BASE_URL)]
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
    /// How often the scheduler syncs it: 30m, 6h, 1d.
    #[arg(long, default_value = "24h")]
    pub frequency: String,
    /// How tracks find their parents.
    #[arg(long, value_enum, default_value_t = FanOutArg::Discover)]
    pub fan_out: FanOutArg,
    /// Don't call the API to check the token.
    #[arg(long)]
    pub no_check: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FanOutArg {
    Discover,
    Exhaustive,
}

/// Parses repeated `TABLE=col1,col2` flags.
pub fn parse_columns(specs: &[String]) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
    let mut columns = BTreeMap::new();
    for spec in specs {
        let (table, cols) =
            spec.split_once('=').with_context(|| format!("--columns `{spec}` is not TABLE=col1,col2"))?;
        let cols: Vec<String> = cols.split(',').map(|c| c.trim().to_string()).filter(|c| !c.is_empty()).collect();
        anyhow::ensure!(!cols.is_empty(), "--columns `{spec}` names no columns");
        columns.insert(table.trim().to_string(), cols);
    }
    Ok(columns)
}

pub async fn run(data_dir: &Path, cmd: IntegrationsCommand) -> anyhow::Result<()> {
    let backend = LocalBackend::open(data_dir);
    match cmd {
        IntegrationsCommand::Create(args) => create(&backend, args).await,
        IntegrationsCommand::List => {
            for i in backend.state.list_integrations().await? {
                println!(
                    "{:<24} {:<8} tables={:<3} every {}m  {}",
                    i.name,
                    format!("{:?}", i.status).to_lowercase(),
                    i.selected_tables()?.len(),
                    i.frequency_minutes,
                    i.api_base_url
                );
            }
            Ok(())
        }
        IntegrationsCommand::Show { name } => {
            println!("{}", serde_json::to_string_pretty(&backend.integration(&name).await?)?);
            Ok(())
        }
    }
}

async fn create(backend: &LocalBackend, args: CreateArgs) -> anyhow::Result<()> {
    validate_name(&args.name)?;
    let mut integration = Integration::new(&args.name, args.token, Utc::now());
    integration.api_base_url = args.api_base_url;
    integration.tables = args.tables;
    integration.columns = parse_columns(&args.columns)?;
    if let Some(start) = &args.history_start {
        integration.history_start = parse_history_start(start)?;
    }
    integration.lookback_minutes = args.lookback_minutes;
    integration.frequency_minutes = parse_frequency(&args.frequency)?;
    integration.fan_out = match args.fan_out {
        FanOutArg::Discover => FanOutMode::Discover,
        FanOutArg::Exhaustive => FanOutMode::Exhaustive,
    };
    integration.validate()?;
    if !args.no_check {
        check_token(&integration).await?;
    }
    backend.state.create_integration(&integration).await?;
    println!("created integration `{}` (pending until its first successful load)", integration.name);
    Ok(())
}

/// One cheap authenticated request: proves the token and the base URL work.
pub async fn check_token(integration: &Integration) -> anyhow::Result<()> {
    let client = client_for(integration).await?;
    let url = client.url("/users", &[("perPage", "1")])?;
    client.get_json(&url).await.context("checking the token against the Capsule API (use --no-check to skip)")?;
    Ok(())
}
