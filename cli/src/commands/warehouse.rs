//! `capsule-sync warehouse NAME --engine E`: writes the integration's warehouse kit (tables,
//! loads, current-state views) for one engine; `--load DB` also runs the DuckDB kit.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use capsule_engine::warehouse::{self, Engine, Location};
use clap::Args;

use crate::backend::Backend;

#[derive(Args, Debug)]
pub struct WarehouseArgs {
    pub name: String,
    /// duckdb, bigquery, snowflake, redshift or athena.
    #[arg(long)]
    pub engine: Engine,
    /// Where to write the kit (default: ./warehouse/NAME/ENGINE).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Where the warehouse reads the files, when not where they are written (e.g. a
    /// gs://bucket/prefix mirror of the S3 bucket for BigQuery).
    #[arg(long)]
    pub location: Option<String>,
    /// DuckDB only: run the kit against this database file (created if missing) with the
    /// DuckDB CLI (`duckdb` on PATH, or CAPSULE_DUCKDB).
    #[arg(long)]
    pub load: Option<PathBuf>,
}

pub async fn run(backend: &Backend, args: WarehouseArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.load.is_none() || args.engine == Engine::DuckDb,
        "--load runs the DuckDB kit; for {} run the files it writes",
        args.engine
    );
    let integration = backend.integration(&args.name).await?;
    let location = Location::new(args.location.as_deref().unwrap_or(&backend.sink.locate("")))?;
    let out =
        args.out.unwrap_or_else(|| Path::new("warehouse").join(integration.name.as_str()).join(args.engine.as_str()));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    for file in warehouse::kit(args.engine, &integration, &location)? {
        let path = out.join(&file.name);
        std::fs::write(&path, file.body).with_context(|| format!("writing {}", path.display()))?;
        println!("{}", path.display());
    }
    if let Some(database) = args.load {
        let output = run_duckdb(&database, &out.join("load.sql"), None)?;
        print!("{output}");
        println!("Loaded into {}", database.display());
    }
    Ok(())
}

/// The DuckDB CLI: `CAPSULE_DUCKDB`, else `duckdb` on PATH.
pub fn duckdb_binary() -> PathBuf {
    std::env::var_os("CAPSULE_DUCKDB").map_or_else(|| PathBuf::from("duckdb"), PathBuf::from)
}

/// Runs a SQL script (and then `query`, if given) against a DuckDB database file; its output.
pub fn run_duckdb(database: &Path, script: &Path, query: Option<&str>) -> anyhow::Result<String> {
    let binary = duckdb_binary();
    let mut command = Command::new(&binary);
    command
        .arg(database)
        .arg("-bail")
        .arg("-init")
        .arg("/dev/null")
        .arg("-c")
        .arg(format!(".read {}", script.display()));
    if let Some(query) = query {
        command.arg("-c").arg(query);
    }
    let output = command.output().with_context(|| {
        format!(
            "running {} (install it with `python3 -m pip install duckdb-cli`, or set CAPSULE_DUCKDB)",
            binary.display()
        )
    })?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    anyhow::ensure!(
        output.status.success(),
        "duckdb failed on {}: {}{}",
        script.display(),
        String::from_utf8_lossy(&output.stderr),
        stdout
    );
    Ok(stdout)
}
