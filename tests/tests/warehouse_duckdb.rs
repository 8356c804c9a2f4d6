//! The DuckDB warehouse kit, executed for real: a simulator account is synced, the database is
//! built only from the SQL the run wrote (with the DuckDB CLI: `duckdb` on PATH or
//! CAPSULE_DUCKDB; `scripts/test.sh` installs it), and the tables and views are checked against
//! the files and the account.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use capsule_core::catalog::{self, Replication};
use capsule_core::ports::RunState;
use capsule_engine::engine::RunOptions;
use capsule_engine::warehouse::{self, Engine, Location};
use capsule_sync_e2e::capsule_sim::{Entity, MutationKind, MutationOp};
use capsule_sync_e2e::duckdb::{count, load, query};
use capsule_sync_e2e::*;
use serde_json::Value;

const NAME: &str = "acme-crm";

fn raw_counts(cwd: &Path, db: &Path) -> BTreeMap<String, u64> {
    catalog::TABLES
        .iter()
        .map(|t| (t.name.to_string(), count(cwd, db, &format!("SELECT count(*) FROM acme_crm_{}", t.name))))
        .collect()
}

#[tokio::test]
async fn the_duckdb_kit_loads_every_committed_run_once_and_its_views_equal_the_account() {
    let sim = start_sim(300, |_| {}).await;
    let local = Local::new();
    let integration = integration_for(&sim, NAME, "UNUSED");
    let client = client_for(&sim, "test-token");
    let (_, first) = local.sync(&client, &integration, &[], RunOptions::default()).await;
    assert!(first.iter().all(|o| o.record.state == RunState::Succeeded));

    let script = local.output().join(format!("_meta/{NAME}/warehouse/duckdb/load.sql"));
    let location = Location::new(local.output().to_str().unwrap()).unwrap();
    let kit = warehouse::kit(Engine::DuckDb, &integration, &location).unwrap();
    assert_eq!(std::fs::read_to_string(&script).unwrap(), kit[0].body, "the run wrote the kit `warehouse` writes");

    let elsewhere = tempfile::tempdir().unwrap();
    let cwd = elsewhere.path();
    let db = cwd.join("warehouse.duckdb");
    load(cwd, &db, &script);

    // Raw tables hold exactly the rows the manifests list.
    let counts = raw_counts(cwd, &db);
    for outcome in &first {
        assert_eq!(counts[&outcome.record.table], outcome.record.rows, "raw rows of {}", outcome.record.table);
    }
    // Every column has the type the DDL declares.
    for table in warehouse::kit_tables(&integration).unwrap() {
        let rows = query(
            cwd,
            &db,
            &format!(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = '{}' ORDER BY ordinal_position",
                table.raw
            ),
        );
        let got: Vec<(String, String)> = rows
            .iter()
            .map(|r| (r["column_name"].as_str().unwrap().into(), r["data_type"].as_str().unwrap().into()))
            .collect();
        let want: Vec<(String, String)> = warehouse::duckdb_raw_types(&table)
            .into_iter()
            .map(|(n, t)| (n.to_string(), t.replace("TIMESTAMPTZ", "TIMESTAMP WITH TIME ZONE")))
            .collect();
        assert_eq!(got, want, "columns of {}", table.raw);
    }
    // Values were typed, not nulled: every party has its timestamps and its id.
    let parties = counts["parties"];
    assert_eq!(count(cwd, &db, "SELECT count(\"updatedAt\") FROM acme_crm_parties"), parties);
    assert_eq!(count(cwd, &db, "SELECT count(*) FROM acme_crm_parties WHERE dt IS NOT NULL AND id > 0"), parties);

    // A run that has not committed (its files written, its manifest still pending) is not loaded.
    let first_parties = first.iter().find(|o| o.record.table == "parties").unwrap();
    let manifest = local.manifest(NAME, "parties", &first_parties.record.run_id);
    let unfinished = capsule_core::integration::RunId::new(chrono::Utc::now());
    let out = local.output();
    let mut pending = manifest.clone();
    pending["run_id"] = Value::String(unfinished.to_string());
    for (n, file) in pending["files"].as_array_mut().unwrap().iter_mut().enumerate() {
        let key = capsule_engine::output::part_key(NAME, "parties", &unfinished, n as u32, Default::default());
        let target = out.join(&key);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(out.join(file["key"].as_str().unwrap()), &target).unwrap();
        file["key"] = Value::String(key);
    }
    let pending_key = capsule_engine::output::pending_manifest_key(NAME, "parties", &unfinished);
    std::fs::create_dir_all(out.join(&pending_key).parent().unwrap()).unwrap();
    std::fs::write(out.join(&pending_key), serde_json::to_vec(&pending).unwrap()).unwrap();
    load(cwd, &db, &script);
    assert_eq!(raw_counts(cwd, &db), counts, "an uncommitted run's files are not loaded");
    std::fs::remove_dir_all(out.join(capsule_engine::output::run_data_prefix(NAME, "parties", &unfinished))).unwrap();
    std::fs::remove_file(out.join(&pending_key)).unwrap();

    // Updates, creations, deletions and a restriction, then a second sync and load.
    let restricted = sim.mutate_n(MutationKind::Parties, MutationOp::Restrict, 1).unwrap().ids;
    for (kind, op, n) in [
        (MutationKind::Parties, MutationOp::Update, 7),
        (MutationKind::Parties, MutationOp::Create, 4),
        (MutationKind::Parties, MutationOp::Delete, 3),
        (MutationKind::Opportunities, MutationOp::Update, 3),
        (MutationKind::Opportunities, MutationOp::Delete, 2),
        (MutationKind::Kases, MutationOp::Create, 2),
        (MutationKind::Kases, MutationOp::Delete, 1),
        (MutationKind::Tasks, MutationOp::Create, 3),
        (MutationKind::Entries, MutationOp::Create, 5),
    ] {
        sim.mutate_n(kind, op, n).unwrap();
    }
    let left = sim.mutate_n(MutationKind::Parties, MutationOp::Leave, 3).unwrap().ids;
    let (_, second) = local.sync(&client, &integration, &[], RunOptions::default()).await;
    assert!(second.iter().all(|o| o.record.state == RunState::Succeeded));
    load(cwd, &db, &script);

    let expected = expected_counts(&sim);
    for table in catalog::TABLES {
        let view = format!("acme_crm_{}_current", table.name);
        let visible = match table.replication {
            Replication::Incremental => format!("SELECT count(*) FROM {view} WHERE NOT _restricted"),
            _ => format!("SELECT count(*) FROM {view}"),
        };
        assert_eq!(count(cwd, &db, &visible) as usize, expected[table.name], "{view}");
    }
    for (entity, table) in
        [(Entity::Parties, "parties"), (Entity::Opportunities, "opportunities"), (Entity::Kases, "cases")]
    {
        let account: BTreeMap<i64, String> = sim.with_account(|a| {
            a.records[&entity]
                .iter()
                .map(|(id, s)| (*id, s.body()["updatedAt"].as_str().unwrap().to_string()))
                .collect()
        });
        let rows = query(
            cwd,
            &db,
            &format!(
                "SELECT id, strftime(\"updatedAt\" AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%SZ') AS updated, _restricted FROM acme_crm_{table}_current"
            ),
        );
        let visible: BTreeMap<i64, String> = rows
            .iter()
            .filter(|r| r["_restricted"] == Value::Bool(false))
            .map(|r| (r["id"].as_i64().unwrap(), r["updated"].as_str().unwrap().to_string()))
            .collect();
        let normalised: BTreeMap<i64, String> = account
            .into_iter()
            .map(|(id, t)| (id, t.trim_end_matches(".000Z").trim_end_matches('Z').to_string() + "Z"))
            .collect();
        assert_eq!(visible, normalised, "{table}: the view is the account (ids and updatedAt)");
        if table == "parties" {
            let flagged: BTreeSet<i64> = rows
                .iter()
                .filter(|r| r["_restricted"] == Value::Bool(true))
                .map(|r| r["id"].as_i64().unwrap())
                .collect();
            assert_eq!(flagged, restricted.iter().copied().collect(), "the restricted party is kept, flagged");
        }
    }

    // Employees are incremental: the persons who left their organisation are gone from the view,
    // though their rows (flagged `_removed`) are in the raw table.
    let employees: BTreeSet<i64> = sim.with_account(|a| {
        a.records[&Entity::Parties]
            .iter()
            .filter(|(_, s)| capsule_sync_e2e::capsule_sim::dataset::is_employee(&s.body()))
            .map(|(id, _)| *id)
            .collect()
    });
    let rows = query(cwd, &db, "SELECT id FROM acme_crm_employees_current WHERE NOT _restricted");
    let visible: BTreeSet<i64> = rows.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(visible, employees, "the employees view is the account's persons with an organisation");
    let flagged = query(cwd, &db, "SELECT id, organisation IS NULL AS alone FROM acme_crm_employees WHERE _removed");
    let flagged_ids: BTreeSet<i64> = flagged.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert!(left.iter().all(|id| flagged_ids.contains(id)), "every leaver has a removed row: {left:?}");
    assert!(flagged.iter().all(|r| r["alone"] == Value::Bool(true)), "removed rows are persons without one");

    // Loading again adds nothing.
    let before = raw_counts(cwd, &db);
    let runs = count(cwd, &db, "SELECT count(*) FROM acme_crm__runs");
    assert_eq!(runs, 44, "two runs of 22 tables");
    load(cwd, &db, &script);
    assert_eq!(raw_counts(cwd, &db), before);
    assert_eq!(count(cwd, &db, "SELECT count(*) FROM acme_crm__runs"), runs);
}
