//! What a warehouse loader that follows the output contract sees: it reads run manifests, loads
//! the files they list, and builds the current state of each table from them. The checks a
//! loader relies on are asserted on the way (every data file listed by exactly one manifest,
//! every manifest from a run recorded `succeeded`, row counts as the manifest says).

use std::collections::{BTreeMap, BTreeSet};

use capsule_core::integration::RunId;
use capsule_core::manifest::RunManifest;
use capsule_core::ports::{ObjectSink, RunState, StateStore};
use serde_json::{Map, Value};

use crate::capsule_sim::{Entity, SimHandle};
use crate::ndjson_rows;

pub type Row = Map<String, Value>;

/// One table as a loader has it: each succeeded run's manifest and rows, oldest first.
pub struct LoadedTable {
    pub runs: Vec<(RunManifest, Vec<Row>)>,
}

/// The final state of every table run of an integration, from its run records (newest first).
pub async fn final_states(state: &dyn StateStore, integration: &str) -> BTreeMap<(RunId, String), RunState> {
    let mut last = BTreeMap::new();
    for r in state.runs(Some(integration), 100_000).await.unwrap() {
        last.entry((r.run_id.clone(), r.table.clone())).or_insert(r.state);
    }
    last
}

/// Whether the table's runs have all settled (nothing killed and not yet taken over): then no
/// data file may lie outside a published manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    Yes,
    /// Just after a fault: a killed run's files (and a committed run's still-waiting manifest)
    /// remain until the table's next run; loaders read manifests, so they don't see them.
    NotYet,
}

/// Loads a table through its published manifests, asserting what a loader relies on.
pub async fn load(
    sink: &dyn ObjectSink,
    state: &dyn StateStore,
    integration: &str,
    table: &str,
    settled: Settled,
) -> LoadedTable {
    let last = final_states(state, integration).await;
    let mut listed: BTreeSet<String> = BTreeSet::new();
    let mut runs = Vec::new();
    for key in sink.list(&format!("_meta/{integration}/runs/")).await.unwrap() {
        if !key.ends_with(&format!("/{table}.json")) {
            continue;
        }
        let manifest: RunManifest = serde_json::from_slice(&sink.get(&key).await.unwrap().unwrap()).unwrap();
        let run_state = last.get(&(manifest.run_id.clone(), table.to_string()));
        assert_eq!(run_state, Some(&RunState::Succeeded), "{key} belongs to a run that did not succeed");
        let mut rows = Vec::new();
        for file in &manifest.files {
            assert!(listed.insert(file.key.clone()), "{} is listed by two manifests", file.key);
            let bytes = sink.get(&file.key).await.unwrap().unwrap_or_else(|| panic!("{} is missing", file.key));
            let file_rows = ndjson_rows(&bytes, file.key.ends_with(".gz"));
            assert_eq!(file_rows.len() as u64, file.rows, "{}", file.key);
            rows.extend(file_rows);
        }
        runs.push((manifest, rows));
    }
    if settled == Settled::Yes {
        let on_disk: BTreeSet<String> =
            sink.list(&format!("{integration}/{table}/")).await.unwrap().into_iter().collect();
        assert_eq!(on_disk, listed, "{table}: data files no manifest lists (left by a failed attempt)");
    }
    runs.sort_by_key(|(m, _)| m.extracted_at);
    LoadedTable { runs }
}

fn id(row: &Row) -> i64 {
    row["id"].as_i64().expect("every row has an id")
}

impl LoadedTable {
    /// Every id ever loaded.
    pub fn ids(&self) -> BTreeSet<i64> {
        self.runs.iter().flat_map(|(_, rows)| rows.iter().map(id)).collect()
    }

    /// An incremental table now: the latest row of each id (by `updatedAt`, then the later
    /// run), minus the ids in `gone` (its deleted feed's tombstones and restrictions).
    pub fn current(&self, gone: &BTreeSet<i64>) -> BTreeMap<i64, Row> {
        let mut current: BTreeMap<i64, Row> = BTreeMap::new();
        for (_, rows) in &self.runs {
            for row in rows {
                let newer = current.get(&id(row)).is_none_or(|seen| updated(row) >= updated(seen));
                if newer {
                    current.insert(id(row), row.clone());
                }
            }
        }
        current.retain(|id, _| !gone.contains(id));
        current
    }

    /// A full table now: the rows of its latest snapshot.
    pub fn latest_snapshot(&self) -> BTreeSet<i64> {
        self.runs.last().map(|(_, rows)| rows.iter().map(id).collect()).unwrap_or_default()
    }
}

fn updated(row: &Row) -> chrono::DateTime<chrono::Utc> {
    let text = row.get("updatedAt").and_then(Value::as_str).unwrap_or("1970-01-01T00:00:00Z");
    chrono::DateTime::parse_from_rfc3339(text).map(|t| t.to_utc()).unwrap_or_default()
}

/// The tables [`assert_current_state_is_the_account`] reads.
pub const ACCOUNT_TABLES: [&str; 8] = [
    "parties",
    "deleted_parties",
    "opportunities",
    "deleted_opportunities",
    "cases",
    "deleted_cases",
    "tasks",
    "entries",
];

/// The incremental tables with their deleted feeds and the account's collection.
pub const INCREMENTAL: [(&str, &str, Entity); 3] = [
    ("parties", "deleted_parties", Entity::Parties),
    ("opportunities", "deleted_opportunities", Entity::Opportunities),
    ("cases", "deleted_cases", Entity::Kases),
];

/// What a loader builds from every published manifest equals the account: each incremental
/// table's latest rows minus its tombstones (ids and `updatedAt`), and the tasks' and entries'
/// latest snapshots.
pub async fn assert_current_state_is_the_account(
    sim: &SimHandle,
    state: &dyn StateStore,
    sink: &dyn ObjectSink,
    context: &str,
) {
    for (table, deleted, entity) in INCREMENTAL {
        let gone = load(sink, state, "acme", deleted, Settled::Yes).await.ids();
        let current = load(sink, state, "acme", table, Settled::Yes).await.current(&gone);
        let account: Vec<(i64, chrono::DateTime<chrono::Utc>)> =
            sim.with_account(|a| a.entity(entity).iter().map(|(id, r)| (*id, r.updated)).collect());
        let loaded: BTreeSet<i64> = current.keys().copied().collect();
        let expected: BTreeSet<i64> = account.iter().map(|(id, _)| *id).collect();
        assert_eq!(
            loaded,
            expected,
            "{context}: {table} ids (missing, then extra): {:?} {:?}",
            expected.difference(&loaded).collect::<Vec<_>>(),
            loaded.difference(&expected).collect::<Vec<_>>()
        );
        for (id, updated) in account {
            let row = &current[&id];
            let seen = chrono::DateTime::parse_from_rfc3339(row["updatedAt"].as_str().unwrap()).unwrap();
            assert_eq!(seen.timestamp(), updated.timestamp(), "{context}: {table} {id} is not the latest version");
        }
    }
    let tasks: BTreeSet<i64> = sim.with_account(|a| a.tasks.keys().copied().collect());
    let entries: BTreeSet<i64> = sim.with_account(|a| a.entries.keys().copied().collect());
    for (table, expected) in [("tasks", tasks), ("entries", entries)] {
        let snapshot = load(sink, state, "acme", table, Settled::Yes).await.latest_snapshot();
        assert_eq!(snapshot, expected, "{context}: {table}");
    }
}
