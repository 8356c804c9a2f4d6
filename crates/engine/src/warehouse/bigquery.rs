//! BigQuery: external tables over the files and over the manifests, native raw tables
//! partitioned by `dt` (taken from each file's path), a `load.sql` that copies in the rows of committed runs
//! not loaded yet (only files a published manifest lists, by `_FILE_NAME`), and the views.
//! Files must be in Cloud Storage: for an S3 layout, give `--location gs://…` where a Storage
//! Transfer job mirrors the bucket. Run the files with
//! `bq query --use_legacy_sql=false --dataset_id=PROJECT:DATASET < FILE`.

use crate::output;
use serde_json::{Value, json};

use super::model::{Kit, KitTable};
use super::views::{self, Dialect};
use super::{KitFile, literal};
use capsule_core::catalog::{Column, ColumnType, TableSpec};

struct BigQuery;

impl Dialect for BigQuery {
    fn ident(&self, name: &str) -> String {
        format!("`{}`", name.replace('`', ""))
    }
}

fn type_of(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Integer => "INT64",
        ColumnType::String => "STRING",
        ColumnType::Record => "JSON",
        ColumnType::Timestamp => "TIMESTAMP",
        ColumnType::Date => "DATE",
        ColumnType::Boolean => "BOOL",
    }
}

/// A BigQuery schema for `bq load --schema` of one table's files.
pub(crate) fn bigquery_schema(table: &TableSpec, columns: &[&'static Column]) -> Value {
    let fields: Vec<Value> = columns
        .iter()
        .map(|c| {
            let mode = if table.primary_key.contains(&c.name) { "REQUIRED" } else { "NULLABLE" };
            json!({"name": c.name, "type": type_of(c.ty), "mode": mode})
        })
        .collect();
    Value::Array(fields)
}

fn column_list(d: &BigQuery, table: &KitTable, with_types: bool) -> String {
    let columns: Vec<String> = table
        .columns
        .iter()
        .map(|c| if with_types { format!("  {} {}", d.ident(c.name), type_of(c.ty)) } else { d.ident(c.name) })
        .collect();
    columns.join(if with_types { ",\n" } else { ", " })
}

pub(super) fn kit(kit: &Kit<'_>) -> Vec<KitFile> {
    let d = BigQuery;
    let runs = d.ident(&views::runs_table(kit));
    let manifests = d.ident(&format!("{}__manifests", kit.integration.replace('-', "_")));
    let mut header = format!(
        "-- capsule-sync warehouse kit for BigQuery, integration `{}`, reading {}.\n\
         -- bq query --use_legacy_sql=false --dataset_id=PROJECT:DATASET < FILE\n",
        kit.integration,
        kit.location.as_str()
    );
    if !kit.location.as_str().starts_with("gs://") {
        header.push_str(
            "-- BigQuery reads Cloud Storage: mirror the files to gs:// (Storage Transfer Service, or\n\
             -- `gcloud storage rsync`) and write this kit again with `--location gs://BUCKET/PREFIX`.\n",
        );
    }
    header.push('\n');
    let mut setup = header.clone();
    setup.push_str(&format!(
        "-- Every manifest of the integration; only published ones (`<table>.json`) are used.\n\
         CREATE OR REPLACE EXTERNAL TABLE {manifests} (\n  `table` STRING,\n  run_id STRING,\n  extracted_at TIMESTAMP,\n  `rows` INT64,\n  files ARRAY<STRUCT<key STRING, `rows` INT64>>\n)\n\
         OPTIONS (format = 'NEWLINE_DELIMITED_JSON', ignore_unknown_values = true, max_bad_records = 1000000, uris = [{}]);\n\
         CREATE TABLE IF NOT EXISTS {runs} (table_name STRING, run_id STRING, extracted_at TIMESTAMP, `rows` INT64, manifest STRING, loaded_at TIMESTAMP);\n",
        literal(&kit.location.of(&format!("{}*", output::manifests_prefix(kit.integration))))
    ));
    for table in kit.tables {
        let prefix = kit.location.of(&format!("{}/{}", kit.integration, table.spec.name));
        let files = d.ident(&format!("{}__files", table.raw));
        let key: Vec<String> = table.key().iter().map(|k| d.ident(k)).collect();
        setup.push_str(&format!(
            "\nCREATE OR REPLACE EXTERNAL TABLE {files} (\n{}\n)\n\
             OPTIONS (format = 'NEWLINE_DELIMITED_JSON', compression = 'GZIP', ignore_unknown_values = true, uris = [{}]);\n\
             CREATE TABLE IF NOT EXISTS {} (\n{},\n  dt DATE\n)\nPARTITION BY dt\nCLUSTER BY {};\n",
            column_list(&d, table, true),
            literal(&format!("{prefix}/*")),
            d.ident(&table.raw),
            column_list(&d, table, true),
            key.join(", "),
        ));
    }
    let mut load = header.clone();
    load.push_str(&format!(
        "-- Loads each committed run once: the files its published manifest lists.\n\
         BEGIN TRANSACTION;\n\
         CREATE TEMP TABLE capsule_new_runs AS\n\
         SELECT m.`table` AS table_name, m.run_id, m.extracted_at, m.`rows`, m.files, m._FILE_NAME AS manifest\n\
         FROM {manifests} AS m\n\
         WHERE REGEXP_CONTAINS(m._FILE_NAME, r'/runs/[^/]+/[a-z_]+[.]json$')\n  AND m._FILE_NAME NOT IN (SELECT manifest FROM {runs});\n"
    ));
    for table in kit.tables {
        let root = literal(&format!("{}/", kit.location.as_str()));
        load.push_str(&format!(
            "INSERT INTO {raw} ({cols}, dt)\nSELECT {cols}, PARSE_DATE('%Y-%m-%d', REGEXP_EXTRACT(_FILE_NAME, r'/dt=([0-9-]+)/')) FROM {files}\n\
             WHERE _FILE_NAME IN (SELECT CONCAT({root}, f.key) FROM capsule_new_runs AS n, UNNEST(n.files) AS f WHERE n.table_name = {name});\n",
            raw = d.ident(&table.raw),
            cols = column_list(&d, table, false),
            files = d.ident(&format!("{}__files", table.raw)),
            name = literal(table.spec.name),
        ));
    }
    load.push_str(&format!(
        "INSERT INTO {runs} (table_name, run_id, extracted_at, `rows`, manifest, loaded_at)\n\
         SELECT table_name, run_id, extracted_at, `rows`, manifest, CURRENT_TIMESTAMP() FROM capsule_new_runs;\n\
         COMMIT TRANSACTION;\n"
    ));
    let mut view_sql = header;
    for table in kit.tables {
        view_sql.push_str(&views::current_view(&d, kit, table));
    }
    let mut files = vec![
        KitFile { name: "setup.sql".into(), body: setup },
        KitFile { name: "load.sql".into(), body: load },
        KitFile { name: "views.sql".into(), body: view_sql },
    ];
    for table in kit.tables {
        let schema = bigquery_schema(table.spec, &table.columns);
        let body = serde_json::to_string_pretty(&schema).unwrap_or_default() + "\n";
        files.push(KitFile { name: format!("{}.schema.json", table.spec.name), body });
    }
    files
}
