//! Column selection: which catalog columns an integration writes for a table.

use super::{Column, TableSpec};
use crate::{Result, SyncError};

/// The record columns chosen for one table, in catalog order. Added and metadata columns are
/// always written on top of these.
#[derive(Debug, Clone)]
pub struct ColumnSelection {
    pub columns: Vec<&'static Column>,
}

impl ColumnSelection {
    pub fn names(&self) -> Vec<&'static str> {
        self.columns.iter().map(|c| c.name).collect()
    }
}

/// Resolves requested column names (real names or aliases, any case) against the catalog.
/// Empty means every column. The primary key is always kept: rows without it can't be merged.
/// An unknown name is an error that lists the valid names.
pub fn resolve_columns(table: &TableSpec, requested: &[String]) -> Result<ColumnSelection> {
    if requested.is_empty() {
        return Ok(ColumnSelection { columns: table.columns.iter().collect() });
    }
    let mut wanted: Vec<&'static str> = Vec::new();
    for name in requested {
        let column = find(table, name).ok_or_else(|| {
            if let Some(missing) = super::spec::not_provided(table.name, name) {
                return SyncError::Config(format!(
                    "column `{name}` of table `{}` is not provided by Capsule API v2: {}",
                    table.name, missing.reason
                ));
            }
            let valid: Vec<&str> = table.columns.iter().map(|c| c.name).collect();
            SyncError::Config(format!(
                "unknown column `{name}` for table `{}`; valid columns: {}",
                table.name,
                valid.join(", ")
            ))
        })?;
        wanted.push(column.name);
    }
    let columns =
        table.columns.iter().filter(|c| wanted.contains(&c.name) || table.primary_key.contains(&c.name)).collect();
    Ok(ColumnSelection { columns })
}

fn find(table: &TableSpec, name: &str) -> Option<&'static Column> {
    let name = name.trim();
    let exact = |c: &&'static Column| c.name == name || c.aliases.contains(&name);
    let folded = |c: &&'static Column| {
        c.name.eq_ignore_ascii_case(name) || c.aliases.iter().any(|a| a.eq_ignore_ascii_case(name))
    };
    let columns: &'static [Column] = table.columns;
    columns.iter().find(exact).or_else(|| columns.iter().find(folded))
}
