//! `capsule-sync`: sync Capsule CRM into NDJSON files, locally (this binary) or on AWS (the
//! Lambda functions run the same engine). Start with `capsule-sync demo`.

mod backend;
mod commands;
mod report;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

/// Capsule CRM → warehouse-ready NDJSON.
#[derive(Parser, Debug)]
#[command(name = "capsule-sync", version, about)]
struct Cli {
    /// Where integrations, bookmarks, run history (state.json) and output files (output/) live.
    #[arg(long, global = true, env = "CAPSULE_SYNC_DATA_DIR", default_value = "./capsule-data")]
    data_dir: PathBuf,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// More log detail (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start a simulated Capsule account, sync all 22 tables, change the account, sync again.
    Demo(commands::demo::DemoArgs),
    /// Sync an integration's tables now.
    Sync(commands::sync::SyncArgs),
    /// List the 22 tables: replication, key, columns.
    Catalog(commands::catalog::CatalogArgs),
    /// Manage integrations.
    #[command(subcommand)]
    Integrations(commands::integrations::IntegrationsCommand),
}

fn init_tracing(format: LogFormat, verbose: u8, quiet_for_progress_bars: bool) {
    let default = match verbose {
        0 if quiet_for_progress_bars => "warn",
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!("warn,capsule_shared={default},capsule_sync={default},capsule_sim=warn"))
    });
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_target(false).init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let bars = report::use_progress_bars() && matches!(cli.command, Command::Demo(_) | Command::Sync(_));
    init_tracing(cli.log_format, cli.verbose, bars);
    let result = match cli.command {
        Command::Demo(args) => commands::demo::run(&cli.data_dir, args).await,
        Command::Sync(args) => commands::sync::run(&cli.data_dir, args).await,
        Command::Catalog(args) => commands::catalog::run(args),
        Command::Integrations(cmd) => commands::integrations::run(&cli.data_dir, cmd).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
