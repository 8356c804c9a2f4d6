//! Warehouse schemas generated from the catalog: a BigQuery JSON schema and a SQL `CREATE TABLE`.

use serde_json::{Value, json};

use super::{Column, ColumnType, METADATA_COLUMNS, TableSpec};

fn output_columns<'a>(table: &'a TableSpec, selected: &'a [&'static Column]) -> impl Iterator<Item = &'a Column> {
    selected.iter().copied().chain(table.added.iter()).chain(METADATA_COLUMNS.iter())
}

/// A BigQuery schema (`bq load --schema`): RECORD columns load as `JSON`.
pub fn bigquery_schema(table: &TableSpec, selected: &[&'static Column]) -> Value {
    let fields: Vec<Value> = output_columns(table, selected)
        .map(|c| {
            let ty = match c.ty {
                ColumnType::Numeric => "NUMERIC",
                ColumnType::String => "STRING",
                ColumnType::Record => "JSON",
                ColumnType::Timestamp => "TIMESTAMP",
                ColumnType::Date => "DATE",
                ColumnType::Boolean => "BOOLEAN",
            };
            let mode = if table.primary_key.contains(&c.name) { "REQUIRED" } else { "NULLABLE" };
            json!({"name": c.name, "type": ty, "mode": mode})
        })
        .collect();
    Value::Array(fields)
}

/// A portable `CREATE TABLE` (Snowflake/Redshift/DuckDB-style types; RECORD as `JSON`).
pub fn sql_ddl(table: &TableSpec, selected: &[&'static Column]) -> String {
    let mut lines: Vec<String> = output_columns(table, selected)
        .map(|c| {
            let ty = match c.ty {
                ColumnType::Numeric => "NUMERIC",
                ColumnType::String => "VARCHAR",
                ColumnType::Record => "JSON",
                ColumnType::Timestamp => "TIMESTAMP",
                ColumnType::Date => "DATE",
                ColumnType::Boolean => "BOOLEAN",
            };
            format!("  \"{}\" {ty}", c.name)
        })
        .collect();
    let key: Vec<String> = table.primary_key.iter().map(|k| format!("\"{k}\"")).collect();
    lines.push(format!("  PRIMARY KEY ({})", key.join(", ")));
    format!("CREATE TABLE IF NOT EXISTS \"{}\" (\n{}\n);\n", table.name, lines.join(",\n"))
}
