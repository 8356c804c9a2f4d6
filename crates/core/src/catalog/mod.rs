//! The catalog: the 22 Capsule tables as declarative data. Everything that differs per table —
//! which endpoints, which envelope key, replication, key, columns, added columns — lives in
//! [`tables`]; the engine reads it and has no per-table branches. How the original integration
//! spec's columns map onto it (aliases, columns Capsule does not provide) is [`spec`].

mod columns;
mod hooks;
mod name;
pub mod spec;
mod tables;

use std::collections::BTreeSet;

use serde::Serialize;

pub use columns::{ColumnSelection, resolve_columns};
pub use hooks::{
    HOOK_COLUMNS, HOOK_SOURCE, HOOK_SUBJECTS, HookEvent, HookSubject, hook_event, hook_events, hook_subject,
};
pub use name::TableName;
pub use tables::TABLES;

/// Warehouse type of a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ColumnType {
    /// A whole number (ids, counts, probabilities): every numeric field Capsule sends at the top
    /// level of a record is one.
    Integer,
    String,
    /// A JSON object or array, loaded as-is (BigQuery `JSON`, Snowflake `VARIANT`).
    Record,
    Timestamp,
    Date,
    Boolean,
}

/// One output column.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Column {
    /// The real Capsule field name (`updatedAt`, `websites`, ...).
    pub name: &'static str,
    pub ty: ColumnType,
    /// Other spellings accepted in column selection (the original spec's misspellings).
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub aliases: &'static [&'static str],
}

/// How a table is kept up to date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Replication {
    /// Changed rows since the bookmark (`since` on the listing).
    Incremental,
    /// Tombstones since the bookmark (`since` always sent, the API requires it).
    DeletedFeed,
    /// A complete snapshot every run.
    Full,
}

impl Replication {
    /// The snake-case name used in manifests and summaries.
    pub fn as_str(self) -> &'static str {
        match self {
            Replication::Incremental => "incremental",
            Replication::DeletedFeed => "deleted_feed",
            Replication::Full => "full",
        }
    }

    /// Whether the listing takes `since` from the bookmark.
    pub fn uses_since(self) -> bool {
        !matches!(self, Replication::Full)
    }
}

/// A row filter applied to a listing's records (for tables derived from another listing).
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Filter {
    /// `field` equals this string.
    Equals(&'static str, &'static str),
    /// `field` is a JSON object (e.g. a person's `organisation` is set).
    IsObject(&'static str),
    /// `field` is `true`.
    IsTrue(&'static str),
}

impl Filter {
    /// The top-level field it reads.
    pub fn field(&self) -> &'static str {
        let (Filter::Equals(path, _) | Filter::IsObject(path) | Filter::IsTrue(path)) = *self;
        path.split('.').next().unwrap_or(path)
    }
}

/// Membership of an incremental table derived from another table's listing (employees are the
/// persons of `/parties` with an organisation). Reading only changed records, a run cannot tell
/// "never a member" from "no longer a member" (a person who left their organisation), so on a run
/// with a bookmark a changed record that is not a member is written too, flagged in
/// `removed_flag`, and the current-state view drops ids whose latest row is flagged. A first load
/// (no bookmark) writes members only.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Membership {
    /// A record is a row of the table when it matches all of these.
    pub conditions: &'static [Filter],
    /// The added boolean column: `true` on a changed record that is not (or no longer) a member.
    pub removed_flag: &'static str,
}

/// Values the engine adds to every row of a listing (e.g. `_deleted: true`).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Constant {
    pub column: &'static str,
    pub value: ConstantValue,
}

#[derive(Debug, Clone, Copy, Serialize)]
#[serde(untagged)]
pub enum ConstantValue {
    Bool(bool),
    Str(&'static str),
}

/// A second array in the same response body (the deleted feeds' `restricted*`).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ExtraEnvelope {
    pub key: &'static str,
    /// Columns set on rows from this array.
    pub constants: &'static [Constant],
}

/// One paged GET.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Listing {
    /// Path below the API base, e.g. `/parties`.
    pub path: &'static str,
    /// The array key in the response body, e.g. `parties`, `lostReasons`.
    pub envelope: &'static str,
    /// Fixed query parameters (`embed`, `status`, `includeDeleted`, ...).
    pub params: &'static [(&'static str, &'static str)],
    /// Columns set on every row of this listing.
    pub constants: &'static [Constant],
    /// Other arrays in the body that also become rows.
    pub extra_envelopes: &'static [ExtraEnvelope],
    /// Keep only records matching all of these.
    pub filters: &'static [Filter],
    /// The field the listing is ordered by, newest first, if the API documents an order
    /// (`/entries`: `entryAt`). Such a full table can be read in recent-window mode.
    pub newest_first: Option<&'static str>,
    /// For an incremental table derived from another table's listing: what makes a record one of
    /// this table's rows (a person with an organisation is an employee). See [`Membership`].
    pub membership: Option<Membership>,
    /// Largest `perPage` the endpoint accepts.
    pub max_per_page: u32,
    /// The deleted feed of this listing's records. Capsule pages by offset, so a record deleted
    /// from an earlier page while the listing is read shifts later records back and one can be
    /// skipped; after reading, the engine asks this feed and re-reads the listing if anything
    /// was deleted meanwhile.
    pub deleted_feed: Option<&'static str>,
    /// Another table that reads this very listing (same path and parameters, every record) and
    /// keeps every column: when that table's run of the same sync has committed, over at least
    /// this run's window, its snapshot is read instead of the listing, saving every page
    /// ([`TableSpec::snapshot_source`]; employees from parties, tracks' discovery from tasks).
    pub same_listing_as: Option<&'static str>,
}

impl Listing {
    /// A listing of `path` under `envelope` with nothing else set.
    pub const fn plain(path: &'static str, envelope: &'static str, max_per_page: u32) -> Listing {
        Listing {
            path,
            envelope,
            params: &[],
            constants: &[],
            extra_envelopes: &[],
            filters: &[],
            newest_first: None,
            membership: None,
            max_per_page,
            deleted_feed: None,
            same_listing_as: None,
        }
    }
}

/// How parents of a fanned-out table are found, and which child listing each parent gets.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ParentDiscovery {
    /// The listing whose records name the parents.
    pub listing: Listing,
    pub targets: &'static [ParentTarget],
    /// A field of the discovery records that changes whenever their parent's children do (a
    /// track's tasks' `updatedAt`): with it, a recent read asks only the parents named by a
    /// record changed since the previous run, and carries the others' children over.
    pub changed_by: Option<&'static str>,
}

impl TableSpec {
    /// The table whose snapshot of the same sync can stand in for this table's listings
    /// (employees: parties; its rows are then that snapshot's records) or its discovery listing
    /// (tracks: tasks; only the parents come from it), when every one of them reads that table's.
    pub fn snapshot_source(&self) -> Option<&'static str> {
        let listings: Vec<&Listing> = match self.fetch {
            Fetch::Listings(listings) => listings.iter().collect(),
            Fetch::FanOut { discover, .. } => discover.iter().map(|r| &r.listing).collect(),
        };
        let first = listings.first()?.same_listing_as?;
        listings.iter().all(|l| l.same_listing_as == Some(first)).then_some(first)
    }

    /// The top-level fields a snapshot standing in for this table's listings must keep: what
    /// discovery reads, or the selected columns plus what filters, membership and the window
    /// read (`updatedAt`).
    pub fn fields_from_snapshot<'c>(&self, selected: &'c [String]) -> BTreeSet<&'c str> {
        match self.fetch {
            Fetch::FanOut { discover, .. } => discover.iter().flat_map(|r| r.fields()).collect(),
            Fetch::Listings(listings) => {
                let read = listings.iter().flat_map(|l| {
                    let conditions = l.membership.map_or(&[][..], |m| m.conditions);
                    l.filters.iter().chain(conditions).map(Filter::field)
                });
                let window = self.replication.uses_since().then_some("updatedAt");
                let mut fields: BTreeSet<&'c str> = selected.iter().map(String::as_str).collect();
                for field in read.chain(window) {
                    fields.insert(field);
                }
                fields
            }
        }
    }

    /// The table of `selection` whose run this table's run waits for in the same sync, to read
    /// its snapshot rather than the listing again (tracks wait for tasks, when both are synced).
    /// The local dispatcher and the orchestrator both hold the table back by this rule.
    pub fn waits_for(&self, selection: &[&TableSpec]) -> Option<&'static str> {
        self.snapshot_source().filter(|from| selection.iter().any(|t| t.name == *from))
    }
}

impl ParentDiscovery {
    /// The top-level fields discovery reads from a record: filters, parent ids, `changed_by`.
    pub fn fields(&self) -> BTreeSet<&'static str> {
        let top = |path: &'static str| path.split('.').next().unwrap_or(path);
        let filters = self.listing.filters.iter().map(Filter::field);
        let targets = self.targets.iter().map(|t| top(t.id_field));
        filters.chain(targets).chain(self.changed_by.map(top)).collect()
    }
}

/// One kind of parent found in a discovery listing.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ParentTarget {
    /// Dotted path to the parent id in a discovered record (`id`, `opportunity.id`).
    pub id_field: &'static str,
    /// The child listing path with `{id}` for the parent id.
    pub child_path: &'static str,
    /// Value of the table's entity column for this kind of parent, if the table has one.
    pub entity: Option<&'static str>,
}

/// How a table is fetched.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fetch {
    /// One or more listings read in order (several = a union, told apart by constants).
    Listings(&'static [Listing]),
    /// Find parents, then list each parent's children.
    FanOut {
        /// The cheap route: finds only parents that can have children.
        discover: &'static [ParentDiscovery],
        /// Every possible parent: correct even where the cheap route's assumption fails.
        exhaustive: &'static [ParentDiscovery],
        /// Envelope of the child listings.
        envelope: &'static str,
        /// Column holding the parent id on each child row.
        parent_id_column: &'static str,
        max_per_page: u32,
    },
}

/// One table of the catalog.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct TableSpec {
    /// Snake-case table name (`deleted_parties`).
    pub name: &'static str,
    pub description: &'static str,
    pub replication: Replication,
    pub fetch: Fetch,
    /// Primary key columns (union tables key on `entity` too).
    pub primary_key: &'static [&'static str],
    /// Columns taken from the API record; selectable.
    pub columns: &'static [Column],
    /// Columns the engine adds from the request (entity, parent id, tombstone flags); always written.
    pub added: &'static [Column],
}

/// Metadata columns on every row of every table.
pub const METADATA_COLUMNS: &[Column] = &[
    Column { name: "_run_id", ty: ColumnType::String, aliases: &[] },
    Column { name: "_extracted_at", ty: ColumnType::Timestamp, aliases: &[] },
];

/// The table with this name (case-insensitive; `Cases` and `cases` both work).
pub fn table(name: &str) -> Option<&'static TableSpec> {
    let wanted = name.trim().to_ascii_lowercase().replace('-', "_");
    TABLES.iter().find(|t| t.name == wanted || t.name.replace('_', "") == wanted)
}

/// Every table name, in catalog order.
pub fn table_names() -> Vec<&'static str> {
    TABLES.iter().map(|t| t.name).collect()
}

/// Resolves table names given by a user; an unknown name is an error listing the valid ones.
pub fn resolve_tables(names: &[String]) -> crate::Result<Vec<&'static TableSpec>> {
    if names.is_empty() {
        return Ok(TABLES.iter().collect());
    }
    let names = names.iter().map(|name| name.parse()).collect::<crate::Result<Vec<TableName>>>()?;
    Ok(TableName::specs(&names))
}

impl TableSpec {
    /// All column names a row of this table can have, in schema order.
    pub fn all_columns(&self) -> impl Iterator<Item = &'static Column> + '_ {
        self.columns.iter().chain(self.added.iter()).chain(METADATA_COLUMNS.iter())
    }
}

#[cfg(test)]
mod spec_tests {
    use super::*;

    fn select(table: &str, column: &str) -> Result<Vec<&'static str>, String> {
        let spec = super::table(table).unwrap();
        resolve_columns(spec, &[column.to_string()]).map(|s| s.names()).map_err(|e| e.to_string())
    }

    #[test]
    fn the_specs_misspellings_are_accepted() {
        for (table, spec_name, column) in [
            ("parties", "lastContactAt", "lastContactedAt"),
            ("cases", "lastContactAt", "lastContactedAt"),
            ("opportunities", "lastContactAt", "lastContactedAt"),
            ("employees", "lastContactAt", "lastContactedAt"),
            ("opportunities", "expectedClosedOn", "expectedCloseOn"),
            ("users", "clickToCallPrefrence", "clickToCallPreference"),
            ("users", "taskRemainder", "taskReminder"),
            ("milestones", "daysUntilState", "daysUntilStale"),
            ("parties", "updateAt", "updatedAt"),
            ("parties", "wbesites", "websites"),
        ] {
            let names = select(table, spec_name).unwrap_or_else(|e| panic!("{table}.{spec_name}: {e}"));
            assert!(names.contains(&column), "{table}.{spec_name} → {names:?}");
        }
        let task_definition = TABLES.iter().find(|t| t.columns.iter().any(|c| c.name == "overrideToCurrentUser"));
        let table = task_definition.expect("a table has overrideToCurrentUser").name;
        assert!(select(table, "overrideToCirrentUser").unwrap().contains(&"overrideToCurrentUser"));
    }

    #[test]
    fn the_nested_references_are_record_columns_and_docs_tables_lists_them() {
        let tables_doc = include_str!("../../../../docs/tables.md");
        for name in spec::NESTED_REFERENCES {
            let tables: Vec<&str> = TABLES
                .iter()
                .filter(|t| t.columns.iter().any(|c| c.name == *name && c.ty == ColumnType::Record))
                .map(|t| t.name)
                .collect();
            assert!(!tables.is_empty(), "`{name}` is a RECORD column of some table");
            assert!(
                tables_doc.contains(&format!("| `{name}` | {} |", tables.join(", "))),
                "docs/tables.md's row for `{name}`: {tables:?}"
            );
        }
        assert!(spec::spec_type_of("team").unwrap().contains("`team.id`"));
        assert_eq!(spec::spec_type_of("name"), None);
    }

    #[test]
    fn spec_columns_capsule_does_not_provide_are_refused_with_their_reason() {
        for missing in spec::NOT_PROVIDED {
            assert!(super::table(missing.table).is_some(), "{} is a table", missing.table);
            for column in missing.columns {
                let err = select(missing.table, column).unwrap_err();
                assert!(err.contains("not provided by Capsule API v2") && err.contains(missing.reason), "{err}");
            }
        }
        let err = select("entries", "firstname").unwrap_err();
        assert!(err.contains("join `parties`"), "{err}");
        let err = select("parties", "nonsense").unwrap_err();
        assert!(err.contains("unknown column") && err.contains("valid columns"), "{err}");
    }

    /// Every column name of the original spec's 22 tables (the fixture is the spec's own list)
    /// selects a column or is refused with its reason: none gets the generic "unknown column".
    #[test]
    fn every_one_of_the_specs_213_column_names_is_known() {
        let spec: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(include_str!("../../tests/fixtures/original-spec-tables.json")).unwrap();
        assert_eq!(spec.len(), 22, "the spec's tables");
        let mut walked = 0;
        for (spec_table, definition) in &spec {
            let table = snake_case(spec_table);
            assert!(super::table(&table).is_some(), "the spec's {spec_table} is the catalog's {table}");
            for column in definition["columns"].as_array().unwrap() {
                let name = column["name"].as_str().unwrap();
                if let Err(err) = select(&table, name) {
                    assert!(err.contains("not provided by Capsule API v2"), "{spec_table}.{name}: {err}");
                }
                walked += 1;
            }
        }
        assert_eq!(walked, 213, "the spec's column names");
    }

    /// `DeletedCases` → `deleted_cases`.
    fn snake_case(name: &str) -> String {
        let mut out = String::new();
        for (i, c) in name.chars().enumerate() {
            if c.is_ascii_uppercase() && i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        }
        out
    }

    #[test]
    fn a_shared_listing_names_an_earlier_table_reading_it_whole_with_every_field_used() {
        let mut shared = BTreeSet::new();
        for table in TABLES {
            let Some(source) = table.snapshot_source() else { continue };
            let other = super::table(source).expect("a table");
            let position = |name: &str| TABLES.iter().position(|t| t.name == name);
            assert!(position(other.name) < position(table.name), "the local dispatcher starts {} first", other.name);
            let listings: Vec<&Listing> = match table.fetch {
                Fetch::Listings(listings) => {
                    assert_eq!(listings.len(), 1, "{}: a shared listing is the table's only one", table.name);
                    assert!(listings[0].extra_envelopes.is_empty(), "{}: rows come from records only", table.name);
                    listings.iter().collect()
                }
                Fetch::FanOut { discover, .. } => discover.iter().map(|r| &r.listing).collect(),
            };
            let Fetch::Listings(theirs) = other.fetch else { panic!("{} is a listing table", other.name) };
            for listing in listings {
                let same = |l: &&Listing| {
                    (l.path, l.envelope, l.params) == (listing.path, listing.envelope, listing.params)
                        && l.filters.is_empty()
                        && l.membership.is_none()
                };
                assert!(theirs.iter().any(|l| same(&l)), "{} reads {} whole", other.name, listing.path);
            }
            // With every column selected, the other table keeps every field this one reads.
            let all: Vec<String> = table.columns.iter().map(|c| c.name.to_string()).collect();
            let columns: BTreeSet<&str> = other.columns.iter().map(|c| c.name).collect();
            let needed = table.fields_from_snapshot(&all);
            assert!(needed.is_subset(&columns), "{} keeps {needed:?}", other.name);
            shared.insert((table.name, other.name));
        }
        assert_eq!(shared, BTreeSet::from([("employees", "parties"), ("tracks", "tasks")]));
        let Fetch::FanOut { discover, .. } = super::table("tracks").unwrap().fetch else { unreachable!() };
        assert_eq!(discover[0].fields(), BTreeSet::from(["hasTrack", "opportunity", "kase", "updatedAt"]));
    }
}
