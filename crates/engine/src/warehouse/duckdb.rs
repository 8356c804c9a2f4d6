//! DuckDB: one script, `load.sql`, that creates the tables, loads every committed run not
//! loaded yet (reading the published manifests for the list of files), and (re)creates the
//! views. It runs as it is from any directory: `duckdb warehouse.duckdb < load.sql`.
//!
//! A list of files to read is only known once the manifests are read, and `read_json` wants
//! its files when the statement is planned, so each load builds its statement as text and runs
//! it with `query()` (DuckDB ≥ 1.1); an empty list becomes a statement that reads nothing.

use super::model::{Kit, KitTable};
use super::views::{self, Dialect};
use super::{KitFile, literal};
use crate::output;
use capsule_core::catalog::ColumnType;

struct DuckDb;

impl Dialect for DuckDb {}

fn type_of(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Integer => "BIGINT",
        ColumnType::String => "VARCHAR",
        ColumnType::Record => "JSON",
        ColumnType::Timestamp => "TIMESTAMPTZ",
        ColumnType::Date => "DATE",
        ColumnType::Boolean => "BOOLEAN",
    }
}

/// The DuckDB type of each raw column, as the DDL declares it (tests compare the database).
pub fn raw_types(table: &KitTable) -> Vec<(&'static str, &'static str)> {
    let mut types: Vec<(&str, &str)> = table.columns.iter().map(|c| (c.name, type_of(c.ty))).collect();
    types.push(("dt", "DATE"));
    types
}

const MANIFEST_COLUMNS: &str = "{'table': 'VARCHAR', 'run_id': 'VARCHAR', 'extracted_at': 'TIMESTAMPTZ', 'rows': 'BIGINT', 'files': 'STRUCT(key VARCHAR, \"rows\" BIGINT)[]'}";

pub(super) fn kit(kit: &Kit<'_>) -> Vec<KitFile> {
    let d = DuckDb;
    let runs = d.ident(&views::runs_table(kit));
    let mut sql = format!(
        "-- capsule-sync warehouse kit for DuckDB (≥ 1.1), integration `{integration}`.\n\
         -- Reads {location}. Run it from any directory, after every sync:\n\
         --   duckdb warehouse.duckdb < load.sql\n\
         -- It loads each committed run once (runs already in {runs} are skipped).\n\n",
        integration = kit.integration,
        location = kit.location.as_str(),
    );
    if kit.location.is_s3() {
        sql.push_str(
            "INSTALL httpfs; LOAD httpfs; INSTALL aws; LOAD aws;\n\
             CREATE SECRET IF NOT EXISTS capsule_s3 (TYPE s3, PROVIDER credential_chain);\n\n",
        );
    }
    sql.push_str(&format!(
        "CREATE TABLE IF NOT EXISTS {runs} (table_name VARCHAR, run_id VARCHAR, extracted_at TIMESTAMPTZ, \"rows\" BIGINT, manifest VARCHAR, loaded_at TIMESTAMPTZ);\n"
    ));
    for table in kit.tables {
        let columns: Vec<String> = raw_types(table).iter().map(|(n, t)| format!("  {} {t}", d.ident(n))).collect();
        sql.push_str(&format!("CREATE TABLE IF NOT EXISTS {} (\n{}\n);\n", d.ident(&table.raw), columns.join(",\n")));
        if table.hooked {
            // A table made before hooks were landed gets their columns (loads insert by name).
            for c in capsule_core::catalog::HOOK_COLUMNS {
                sql.push_str(&format!(
                    "ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {};\n",
                    d.ident(&table.raw),
                    d.ident(c.name),
                    type_of(c.ty)
                ));
            }
        }
    }
    sql.push_str(
        "\n-- A list of paths as the text of a SQL list literal (quotes doubled; chr(1) never occurs in a path).\n\
         CREATE OR REPLACE MACRO capsule_sql_list(paths) AS\n  \
         '[''' || replace(replace(array_to_string(paths, chr(1)), '''', ''''''), chr(1), ''', ''') || ''']';\n\n\
         BEGIN TRANSACTION;\n",
    );
    sql.push_str(&new_runs(kit, &runs));
    for table in kit.tables {
        sql.push_str(&load_table(kit, table));
    }
    sql.push_str(&format!(
        "\nINSERT INTO {runs} SELECT table_name, run_id, extracted_at, \"rows\", manifest, now() FROM capsule_new_runs;\nCOMMIT;\n\n-- Current state: {}\n",
        "the latest row per key; deletions applied; restricted rows flagged."
    ));
    for table in kit.tables {
        sql.push_str(&views::current_view(&d, kit, table));
    }
    vec![KitFile { name: "load.sql".into(), body: sql }]
}

/// The published manifests not loaded yet, read into `capsule_new_runs`.
fn new_runs(kit: &Kit<'_>, runs: &str) -> String {
    let glob = literal(&kit.location.of(&format!("{}*/*.json", output::manifests_prefix(kit.integration))));
    let read = format!(
        "SELECT \"table\" AS table_name, run_id, extracted_at, \"rows\", files, filename AS manifest FROM read_json(' || capsule_sql_list(getvariable('capsule_manifests')) || ', columns = {}, filename = true)",
        MANIFEST_COLUMNS.replace('\'', "''")
    );
    format!(
        "-- Published manifests not loaded yet (`<table>.json`; not `.pending`, `.parents` or `.redshift`).\n\
         SET VARIABLE capsule_manifests = (\n  SELECT coalesce(list(file ORDER BY file), []::VARCHAR[]) FROM glob({glob})\n  \
         WHERE regexp_matches(file, '/runs/[^/]+/[a-z_]+[.]json$') AND file NOT IN (SELECT manifest FROM {runs})\n);\n\
         SET VARIABLE capsule_sql = CASE WHEN len(getvariable('capsule_manifests')) = 0\n  \
         THEN 'SELECT NULL::VARCHAR AS table_name, NULL::VARCHAR AS run_id, NULL::TIMESTAMPTZ AS extracted_at, NULL::BIGINT AS \"rows\", NULL::STRUCT(key VARCHAR, \"rows\" BIGINT)[] AS files, NULL::VARCHAR AS manifest WHERE false'\n  \
         ELSE '{read}' END;\n\
         CREATE OR REPLACE TEMP TABLE capsule_new_runs AS SELECT * FROM query(getvariable('capsule_sql'));\n"
    )
}

/// Loads the files of the table's new runs.
fn load_table(kit: &Kit<'_>, table: &KitTable) -> String {
    let d = DuckDb;
    let root = literal(&format!("{}/", kit.location.as_str()));
    let select: Vec<String> = raw_types(table).iter().map(|(n, _)| d.ident(n)).collect();
    let columns: Vec<String> = table.columns.iter().map(|c| format!("'{}': '{}'", c.name, type_of(c.ty))).collect();
    let read = format!(
        "SELECT {} FROM read_json(' || capsule_sql_list(getvariable('capsule_files')) || ', format = ''newline_delimited'', columns = {{{}}}, hive_partitioning = true, hive_types = {{''dt'': ''DATE''}})",
        select.join(", ").replace('\'', "''"),
        columns.join(", ").replace('\'', "''"),
    );
    format!(
        "\n-- {name}\n\
         SET VARIABLE capsule_files = (\n  SELECT coalesce(list({root} || f.key ORDER BY f.key), []::VARCHAR[])\n  \
         FROM (SELECT unnest(files) AS f FROM capsule_new_runs WHERE table_name = {table})\n);\n\
         SET VARIABLE capsule_sql = CASE WHEN len(getvariable('capsule_files')) = 0\n  \
         THEN 'SELECT * FROM {raw} LIMIT 0'\n  ELSE '{read}' END;\n\
         INSERT INTO {raw} BY NAME SELECT * FROM query(getvariable('capsule_sql'));\n",
        name = table.spec.name,
        table = literal(table.spec.name),
        raw = d.ident(&table.raw).replace('\'', "''"),
    )
}
