//! `capsule-sync`: sync Capsule CRM into NDJSON files, locally (this binary) or on AWS (the
//! Lambda functions run the same engine). Start with `capsule-sync demo`.

mod backend;
mod commands;
mod live;
mod report;

use std::io::IsTerminal;
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
    /// Colour in log lines: auto (only when stderr is a terminal and NO_COLOR is unset), always
    /// or never.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    color: ColorChoice,
    #[command(flatten)]
    backend: backend::BackendArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ColorChoice {
    Auto,
    Always,
    Never,
}

impl ColorChoice {
    /// Whether log lines carry ANSI colour codes. `--color always` wins over `NO_COLOR`
    /// (a flag given for this run is more specific than the environment); auto colours only a
    /// terminal, and never when `NO_COLOR` is set to anything but the empty string.
    fn colors(self) -> bool {
        match self {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            }
        }
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start a simulated Capsule account, sync all 22 tables, change the account, sync again.
    Demo(commands::demo::DemoArgs),
    /// Sync an integration's tables now.
    Sync(commands::sync::SyncArgs),
    /// One pass: sync every integration whose frequency has elapsed (for cron or a systemd timer).
    RunDue(commands::schedule::RunDueArgs),
    /// Stay up and sync each integration as it comes due; Ctrl-C stops cleanly.
    Schedule(commands::schedule::ScheduleArgs),
    /// List the 22 tables: replication, key, columns.
    Catalog(commands::catalog::CatalogArgs),
    /// Manage integrations: create, list, show, edit, pause, resume, delete.
    #[command(subcommand)]
    Integrations(commands::integrations::IntegrationsCommand),
    /// One line per integration; with NAME, the health of each of its tables.
    Status(commands::ops::StatusArgs),
    /// Check an integration's token, API reachability, rate-limit headroom and readable tables.
    Check(commands::ops::CheckArgs),
    /// Table runs, newest first.
    Runs(commands::ops::RunsArgs),
    /// Jobs of an integration (one run id across its tables), newest first.
    Jobs(commands::ops::JobsArgs),
    /// The process log of a run.
    Logs(commands::ops::LogsArgs),
    /// Requests and hours of quota a first load and each scheduled run will take, per table.
    Plan(commands::plan::PlanArgs),
    /// REST hooks: receive them (serve), subscribe, list, unsubscribe.
    #[command(subcommand)]
    Hooks(commands::hooks::HooksCommand),
    /// Write an integration's warehouse kit: raw tables, loads and current-state views.
    Warehouse(commands::warehouse::WarehouseArgs),
    /// Check a deployed stack (--backend aws): functions, table, bucket, schedule, and each
    /// integration's API URL and secret; prints every problem with its fix.
    Doctor(commands::doctor::DoctorArgs),
}

/// Logs on stderr (above the live view, when one is drawn). `quiet` (a live view on screen, or the demo, whose screen is its steps and
/// summaries) shows warnings and errors only unless `-v` asks for more: every run's log is stored
/// with its files anyway (`capsule-sync logs`).
/// The crates whose events are capsule-sync's own (ARCHITECTURE.md), as tracing names them.
const LAYERS: [&str; 5] = ["capsule_core", "capsule_client", "capsule_engine", "capsule_local", "capsule_aws"];

fn init_tracing(format: LogFormat, verbose: u8, quiet: bool, color: bool) {
    let default = match verbose {
        0 if quiet => "warn",
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        let layers = LAYERS.iter().map(|layer| format!(",{layer}={default}")).collect::<String>();
        EnvFilter::new(format!("warn{layers},capsule_sync={default},capsule_sim=warn"))
    });
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(live::AboveTheView).with_ansi(color);
    match format {
        LogFormat::Text => builder.with_target(false).init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Catalog(args) = cli.command {
        return commands::catalog::run(args);
    }
    if let Command::Demo(args) = cli.command {
        anyhow::ensure!(
            cli.backend.backend == backend::BackendKind::Local,
            "the demo runs on the local backend only (it starts its own simulated Capsule account)"
        );
        return commands::demo::run(&cli.data_dir, &cli.backend, args).await;
    }
    if let Command::Doctor(args) = &cli.command {
        anyhow::ensure!(
            cli.backend.backend == backend::BackendKind::Aws,
            "doctor checks a deployed stack: run it with --backend aws"
        );
        return commands::doctor::run(args).await;
    }
    let backend = backend::Backend::open(&cli.data_dir, &cli.backend).await?;
    match cli.command {
        Command::Sync(args) => commands::sync::run(&backend, args).await,
        Command::RunDue(args) => commands::schedule::run_due(&backend, args).await,
        Command::Schedule(args) => commands::schedule::schedule(&backend, args).await,
        Command::Integrations(cmd) => commands::integrations::run(&backend, cmd).await,
        Command::Status(args) => commands::ops::status(&backend, args).await,
        Command::Check(args) => commands::ops::check(&backend, args).await,
        Command::Runs(args) => commands::ops::runs(&backend, args).await,
        Command::Jobs(args) => commands::ops::jobs(&backend, args).await,
        Command::Logs(args) => commands::ops::logs(&backend, args).await,
        Command::Plan(args) => commands::plan::run(&backend, args).await,
        Command::Warehouse(args) => commands::warehouse::run(&backend, args).await,
        Command::Hooks(cmd) => commands::hooks::run(&backend, cmd).await,
        Command::Catalog(_) | Command::Demo(_) | Command::Doctor(_) => unreachable!("handled above"),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let bars = live::wanted() && matches!(cli.command, Command::Sync(_));
    let quiet = bars || matches!(cli.command, Command::Demo(_));
    init_tracing(cli.log_format, cli.verbose, quiet, cli.color.colors());
    let result = run(cli).await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
