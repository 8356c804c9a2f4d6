//! The demo itself: starts the Capsule simulator in-process, (re)creates the `demo` integration,
//! syncs all 22 tables, changes the account (updates, new records, deletions), syncs again,
//! shows both runs, and loads both into a DuckDB database with the kit the runs wrote (when the
//! DuckDB CLI is there).

use std::path::Path;
use std::time::Instant;

use capsule_core::integration::{Integration, TokenSource};
use capsule_core::ports::RunState;
use capsule_engine::output;
use capsule_sim::{MutationKind, MutationOp, SimConfig};
use chrono::Utc;

use super::DemoArgs;
use crate::backend::{Backend, BackendArgs};
use crate::commands::sync::{print_outcomes, sync_now};
use crate::report;

const DEMO: &str = "demo";

pub async fn run(data_dir: &Path, backend_args: &BackendArgs, args: DemoArgs) -> anyhow::Result<()> {
    let token = "demo-token";
    let sim = capsule_sim::start(SimConfig {
        parties: args.parties,
        seed: args.seed,
        token: token.into(),
        ..SimConfig::default()
    })
    .await?;
    println!("Capsule API simulator: {} ({} parties, seed {})", sim.base_url(), args.parties, args.seed);

    let backend = Backend::open(data_dir, backend_args).await?;
    let token_file = data_dir.join("demo.token");
    write_private(&token_file, token)?;
    if backend.state.delete_integration(DEMO).await? {
        println!("Replaced the previous `demo` integration (its bookmarks and files start over).");
    }
    // The demo's own files go too: its DuckDB load reads every published run of `demo`.
    backend.sink.remove_prefix(&format!("{DEMO}/")).await?;
    backend.sink.remove_prefix(&output::meta_prefix(DEMO)).await?;
    let mut integration =
        Integration::new(DEMO.parse()?, TokenSource::File { path: token_file.canonicalize()? }, Utc::now());
    integration.api_base_url = sim.base_url().to_string();
    backend.state.create_integration(&integration).await?;
    let tables = integration.selected_tables()?;

    println!("\n== Run 1: first sync of all {} tables ==", tables.len());
    let started = Instant::now();
    let first = sync_now(&backend, &integration, &tables, &args.run).await?;
    let first_secs = started.elapsed().as_secs_f64();
    print_outcomes(&backend, &first, args.run.json)?;
    if let Some(failures) = report::failures(&first) {
        anyhow::bail!(failures);
    }

    let n = (args.parties / 100).max(3);
    let changes = [
        (MutationKind::Parties, MutationOp::Update, n),
        (MutationKind::Parties, MutationOp::Create, n / 2),
        (MutationKind::Parties, MutationOp::Delete, n / 3),
        (MutationKind::Parties, MutationOp::Restrict, 1),
        (MutationKind::Opportunities, MutationOp::Update, n / 2),
        (MutationKind::Opportunities, MutationOp::Delete, 2),
        (MutationKind::Kases, MutationOp::Create, 2),
        (MutationKind::Kases, MutationOp::Delete, 1),
        (MutationKind::Tasks, MutationOp::Create, n / 2),
        (MutationKind::Entries, MutationOp::Create, n),
    ];
    println!("\n== Changing the account ==");
    for (kind, op, count) in changes {
        sim.mutate_n(kind, op, count).map_err(anyhow::Error::msg)?;
        println!("  {op} {count} {kind}");
    }

    println!("\n== Run 2: incremental tables read only the changes; deleted_* tables get the tombstones ==");
    let integration = backend.integration(DEMO).await?;
    let second = sync_now(&backend, &integration, &tables, &args.run).await?;
    print_outcomes(&backend, &second, args.run.json)?;
    if let Some(failures) = report::failures(&second) {
        anyhow::bail!(failures);
    }

    let rows: u64 = first.iter().map(|o| o.record.rows).sum();
    let ok = second.iter().all(|o| o.record.state == RunState::Succeeded);
    println!(
        "\nRun 1 wrote {rows} rows in {first_secs:.2}s ({:.0} rows/s). Status: {}.",
        rows as f64 / first_secs.max(0.001),
        if ok { "all tables succeeded" } else { "see above" }
    );
    let output = backend.sink.locate("");
    let output = output.trim_end_matches('/');
    println!("Data files: {output}/demo/<table>/dt=…/run=…/part-00000.ndjson.gz");
    println!("Manifests:  {output}/_meta/demo/runs/<run_id>/<table>.json");
    println!("Warehouse:  {output}/_meta/demo/warehouse/<engine>/ (duckdb, bigquery, snowflake, redshift, athena)");
    println!("Try:        zcat {output}/demo/parties/dt=*/run=*/part-00000.ndjson.gz | head -1");
    println!("            {} --data-dir {} status demo", report::this_command(), data_dir.display());
    sim.stop().await;
    load_into_duckdb(data_dir, &format!("{output}/_meta/demo/warehouse/duckdb/load.sql"))
}

/// What the demo asks the loaded database.
const DEMO_QUERIES: &str = "\
SELECT count(*) AS parties_now, count(*) FILTER (WHERE _restricted) AS restricted_now, \
(SELECT count(DISTINCT id) FROM demo_parties) AS parties_ever_loaded, \
(SELECT count(*) FROM demo_deleted_parties_current WHERE _deleted) AS deletions_seen FROM demo_parties_current; \
SELECT type, count(*) AS parties FROM demo_parties_current GROUP BY type ORDER BY type; \
SELECT table_name, count(*) AS runs_loaded, sum(\"rows\") AS rows_loaded FROM demo__runs \
WHERE table_name IN ('parties', 'deleted_parties', 'tasks', 'entries') GROUP BY table_name ORDER BY table_name;";

/// Loads both syncs into `<data-dir>/demo.duckdb` with the DuckDB kit and shows a few queries.
fn load_into_duckdb(data_dir: &Path, script: &str) -> anyhow::Result<()> {
    let database = data_dir.join("demo.duckdb");
    let _ = std::fs::remove_file(&database);
    println!("\n== Loading both runs into DuckDB with the warehouse kit ({script}) ==");
    match crate::commands::warehouse::run_duckdb(&database, Path::new(script), Some(DEMO_QUERIES)) {
        Ok(output) => {
            print!("{output}");
            println!("Database:   {} (views demo_<table>_current: deletions applied)", database.display());
            println!("            duckdb {} -c 'SELECT * FROM demo_parties_current LIMIT 5'", database.display());
        }
        Err(e) if which_duckdb_missing(&e) => {
            println!("Skipped: the DuckDB CLI is not installed (`python3 -m pip install duckdb-cli`, or use");
            println!("`bash scripts/demo.sh`, which installs it). The kit is ready: duckdb my.duckdb < {script}");
        }
        Err(e) => return Err(e),
    }
    Ok(())
}

/// Whether the error is the DuckDB CLI not being found (the demo still succeeds without it).
fn which_duckdb_missing(error: &anyhow::Error) -> bool {
    error.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound))
}

/// Writes a file only its owner can read (the demo's token).
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::File::options();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(text.as_bytes())
}
