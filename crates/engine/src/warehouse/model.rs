//! What a kit is made of, engine-neutral: per selected table its raw and view names, its
//! columns, and the rule its current-state view follows — all read from the catalog, with no
//! branch on a table's name.

use super::Location;
use capsule_core::Result;
use capsule_core::catalog::{self, Column, Fetch, Replication, TableSpec};
use capsule_core::integration::Integration;

/// One integration's kit inputs.
pub(crate) struct Kit<'a> {
    pub integration: &'a str,
    pub tables: &'a [KitTable],
    pub location: &'a Location,
}

/// One selected table as the warehouse sees it.
#[derive(Debug, Clone)]
pub struct KitTable {
    pub spec: &'static TableSpec,
    /// Every column of a row, in file order: the selected record columns, the added columns,
    /// then `_run_id` and `_extracted_at`, then (a table Capsule sends REST hooks for) the hook
    /// columns. The raw table adds `dt` after these.
    pub columns: Vec<&'static Column>,
    /// `<integration>_<table>` (a `-` in the integration's name becomes `_`).
    pub raw: String,
    /// `<raw>_current`.
    pub view: String,
    pub rule: ViewRule,
    /// Capsule sends REST hooks for it: hook runs' rows (and tombstones) are merged in its view.
    pub hooked: bool,
}

/// How the current state of a table is derived from its raw rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewRule {
    /// Incremental tables: the latest row per key (by `updatedAt`, then `_extracted_at`), minus
    /// the keys whose deletion was seen at or after that row (in `deleted`, the raw table of its
    /// deleted feed, when selected), with `_restricted` set where a restriction was; for a table
    /// with a [`catalog::Membership`], minus the keys whose latest row has its `removed` flag set.
    Latest { deleted: Option<String>, removed: Option<&'static str> },
    /// Deleted feeds: every tombstone, the latest per key.
    Tombstones,
    /// Full tables: the rows of the latest committed run, one per key.
    Snapshot,
}

impl KitTable {
    pub fn key(&self) -> &'static [&'static str] {
        self.spec.primary_key
    }

    /// Whether rows carry `updatedAt` (the first ordering of "latest").
    pub(crate) fn has_updated_at(&self) -> bool {
        self.columns.iter().any(|c| c.name == "updatedAt")
    }
}

/// The warehouse name of a table of an integration.
pub(crate) fn raw_name(integration: &str, table: &str) -> String {
    format!("{}_{table}", integration.replace('-', "_"))
}

/// The kit tables of an integration's selection.
pub fn kit_tables(integration: &Integration) -> Result<Vec<KitTable>> {
    let selected = integration.selected_tables()?;
    selected
        .iter()
        .map(|spec| {
            let chosen = integration.column_selection(spec)?.columns;
            let hooked = catalog::hook_subject(spec.name).is_some();
            let hook_columns = if hooked { catalog::HOOK_COLUMNS } else { &[] };
            let columns = chosen
                .into_iter()
                .chain(spec.added.iter())
                .chain(catalog::METADATA_COLUMNS.iter())
                .chain(hook_columns.iter())
                .collect();
            let rule = match spec.replication {
                Replication::Full => ViewRule::Snapshot,
                Replication::DeletedFeed => ViewRule::Tombstones,
                Replication::Incremental => ViewRule::Latest {
                    deleted: deleted_feed_of(spec, &selected).map(|d| raw_name(&integration.name, d.name)),
                    removed: removed_flag_of(spec),
                },
            };
            let raw = raw_name(&integration.name, spec.name);
            Ok(KitTable { spec, columns, view: format!("{raw}_current"), raw, rule, hooked })
        })
        .collect()
}

/// The selected deleted-feed table that reports deletions of `spec`'s records: the one whose
/// listing is the path `spec`'s listing names as its deleted feed.
fn deleted_feed_of(spec: &TableSpec, selected: &[&'static TableSpec]) -> Option<&'static TableSpec> {
    let Fetch::Listings(listings) = spec.fetch else { return None };
    let feed = listings.iter().find_map(|l| l.deleted_feed)?;
    selected.iter().copied().find(|t| {
        t.replication == Replication::DeletedFeed
            && matches!(t.fetch, Fetch::Listings(ls) if ls.iter().any(|l| l.path == feed))
    })
}

/// The column flagging rows of records that stopped belonging to `spec` (see [`catalog::Membership`]).
fn removed_flag_of(spec: &TableSpec) -> Option<&'static str> {
    let Fetch::Listings(listings) = spec.fetch else { return None };
    listings.iter().find_map(|l| l.membership).map(|m| m.removed_flag)
}

#[cfg(test)]
mod tests {
    use super::*;
    use capsule_core::integration::TokenSource;

    #[test]
    fn every_incremental_table_finds_its_deleted_feed() {
        let integration =
            Integration::new("my-crm".parse().unwrap(), TokenSource::Env { var: "T".into() }, chrono::Utc::now());
        let tables = kit_tables(&integration).unwrap();
        let parties = tables.iter().find(|t| t.spec.name == "parties").unwrap();
        assert_eq!(parties.raw, "my_crm_parties");
        assert_eq!(parties.view, "my_crm_parties_current");
        assert_eq!(parties.rule, ViewRule::Latest { deleted: Some("my_crm_deleted_parties".into()), removed: None });
        let employees = tables.iter().find(|t| t.spec.name == "employees").unwrap();
        assert_eq!(
            employees.rule,
            ViewRule::Latest { deleted: Some("my_crm_deleted_parties".into()), removed: Some("_removed") }
        );
        for t in &tables {
            if t.spec.replication == Replication::Incremental {
                assert!(matches!(&t.rule, ViewRule::Latest { deleted: Some(_), .. }), "{}", t.spec.name);
            }
        }
        let mut only = integration.clone();
        only.tables = vec!["cases".into()].into();
        let cases = kit_tables(&only).unwrap();
        assert_eq!(cases[0].rule, ViewRule::Latest { deleted: None, removed: None });
    }
}
