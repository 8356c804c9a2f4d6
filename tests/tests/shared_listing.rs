//! Listings read once per sync. Tracks' parents come from the tasks table's snapshot of the same
//! sync, and employees are the persons of the parties table's: `/tasks` and `/parties` are not
//! read again. A snapshot gives the same rows as reading the listing; a change made after it is
//! seen by the next run, however long after it the reading table ran; a column selection that
//! leaves out a field used, or a snapshot over a shorter window, reads the listing, and the log
//! says why.

use std::collections::BTreeSet;

use capsule_core::integration::{Integration, RecentWindow, RunId};
use capsule_core::manifest::RunManifest;
use capsule_core::ports::{ObjectSink, RunState, StateStore};
use capsule_engine::engine::{self, RunOptions};
use capsule_sync_e2e::capsule_sim::{Entity, MutationKind, MutationOp, SimHandle};
use capsule_sync_e2e::*;
use chrono::Utc;
use serde_json::{Map, Value};

fn tasks_and_tracks(sim: &SimHandle) -> Integration {
    let mut integration = integration_for(sim, "acme", "UNUSED");
    integration.tables = vec!["tasks".into(), "tracks".into()].into();
    integration
}

/// A simulated account and an integration reading tasks and tracks in recent-window mode.
struct Recent {
    sim: SimHandle,
    client: capsule_client::CapsuleClient,
    local: Local,
    integration: Integration,
}

async fn recent_tasks_and_tracks() -> Recent {
    let sim = start_sim(600, |_| {}).await;
    let client = client_for(&sim, "test-token");
    let mut integration = tasks_and_tracks(&sim);
    integration.recent_window = Some(RecentWindow { full_refresh_days: 7 });
    Recent { sim, client, local: Local::new(), integration }
}

fn manifest(local: &Local, table: &str, run: &RunId) -> RunManifest {
    serde_json::from_value(local.manifest("acme", table, run)).unwrap()
}

fn ids(rows: &[Map<String, Value>]) -> BTreeSet<i64> {
    rows.iter().map(|r| r["id"].as_i64().unwrap()).collect()
}

/// The parents a run's track rows hang on.
fn parents(rows: &[Map<String, Value>]) -> BTreeSet<(String, i64)> {
    rows.iter().map(|r| (r["entity"].as_str().unwrap().to_string(), r["entityId"].as_i64().unwrap())).collect()
}

fn log_of(local: &Local, run: &RunId, table: &str) -> String {
    std::fs::read_to_string(local.output().join(format!("_meta/acme/logs/{run}/{table}-001.ndjson"))).unwrap()
}

#[tokio::test]
async fn tracks_read_their_parents_from_the_tasks_snapshot_of_the_same_sync_and_find_the_same_tracks() {
    let sim = start_sim(600, |_| {}).await;
    let client = client_for(&sim, "test-token");
    let alone = Local::new();
    let mut tracks_only = tasks_and_tracks(&sim);
    tracks_only.tables = vec!["tracks".into()].into();
    let (by_listing, _) = alone.sync(&client, &tracks_only, &[], RunOptions::default()).await;

    let local = Local::new();
    sim.reset_stats();
    let (run, outcomes) = local.sync(&client, &tasks_and_tracks(&sim), &[], RunOptions::default()).await;
    assert!(outcomes.iter().all(|o| o.record.state == RunState::Succeeded), "{outcomes:?}");
    let (tasks, tracks) = (manifest(&local, "tasks", &run), manifest(&local, "tracks", &run));
    // `/tasks` is read once, by the tasks table; tracks asks only its parents.
    assert_eq!(sim.stats().count("GET /tasks"), tasks.requests.requests);
    let rows = local.rows("acme", "tracks", &run);
    assert_eq!(tracks.requests.requests, parents(&rows).len() as u64, "one request per parent, none for discovery");
    let whole = manifest(&alone, "tracks", &by_listing);
    assert!(whole.requests.requests > tracks.requests.requests, "the listing read alone costs its pages");
    assert_eq!(ids(&rows), ids(&alone.rows("acme", "tracks", &by_listing)), "the same tracks");
    assert_eq!(tracks.discovered_at, Some(tasks.extracted_at));
    assert!(log_of(&local, &run, "tracks").contains("parents found in the snapshot `tasks` committed in this sync"));

    // Named the other way round and run one table at a time, tasks still goes first (no wait
    // for a table not started yet) and the outcomes come in the order asked.
    let one_at_a_time = Local::new();
    let specs = capsule_core::catalog::resolve_tables(&["tracks".into(), "tasks".into()]).unwrap();
    let run = RunId::new(Utc::now());
    let dispatch = engine::LocalDispatch { concurrency: 1, progress: None, redo: false };
    let integration = tasks_and_tracks(&sim);
    let deps = one_at_a_time.deps();
    let outcomes = engine::run_tables(&client, deps, &integration, &specs, &run, RunOptions::default(), dispatch).await;
    let order: Vec<&str> = outcomes.iter().map(|o| o.record.table.as_str()).collect();
    assert_eq!(order, ["tracks", "tasks"]);
    assert!(manifest(&one_at_a_time, "tracks", &run).discovered_at.is_some());
}

#[tokio::test]
async fn a_change_after_the_tasks_snapshot_is_asked_by_the_next_recent_run_however_late_tracks_ran() {
    let Recent { sim, client, local, integration } = recent_tasks_and_tracks().await;
    let (first, _) = local.sync(&client, &integration, &[], RunOptions::default()).await;
    let all_parents = parents(&local.rows("acme", "tracks", &first));

    // tasks commits; then tasks on tracks change; then tracks runs in the same sync. Its
    // parents come from the snapshot taken before the change, so it asks none of them.
    let run = RunId::new(Utc::now());
    local.sync_as(&client, &integration, &["tasks"], RunOptions::default(), &run).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let updated = sim.mutate_n(MutationKind::Tasks, MutationOp::Update, 80).unwrap().ids;
    let changed: BTreeSet<(String, i64)> = sim.with_account(|a| {
        let on_tracks = updated.iter().map(|id| a.tasks[id].body()).filter(|t| t["hasTrack"] == true);
        on_tracks
            .filter_map(|t| match (t["opportunity"]["id"].as_i64(), t["kase"]["id"].as_i64()) {
                (Some(id), _) => Some(("opportunities".to_string(), id)),
                (_, Some(id)) => Some(("kases".to_string(), id)),
                _ => None,
            })
            .collect()
    });
    let asked_next = changed.intersection(&all_parents).count() as u64;
    assert!(asked_next > 0, "some updated tasks are on tracks");
    local.sync_as(&client, &integration, &["tracks"], RunOptions::default(), &run).await;
    let late = manifest(&local, "tracks", &run);
    assert_eq!(late.requests.requests, 0, "nothing had changed in the snapshot it read");
    assert_eq!(late.discovered_at, Some(manifest(&local, "tasks", &run).extracted_at));

    // As on a big account, tracks ran hours after the tasks snapshot: its next run still asks
    // the parents changed since that snapshot, not since tracks ran.
    let mut hours_later = late.clone();
    hours_later.extracted_at += chrono::Duration::hours(2);
    let key = capsule_engine::output::manifest_key("acme", "tracks", &run);
    local.sink.put(&key, capsule_core::manifest::manifest_body(&hours_later)).await.unwrap();
    let (next, outcomes) = local.sync(&client, &integration, &[], RunOptions::default()).await;
    assert!(outcomes.iter().all(|o| o.record.state == RunState::Succeeded), "{outcomes:?}");
    assert_eq!(manifest(&local, "tracks", &next).requests.requests, asked_next, "the changed parents are asked");
    assert_eq!(ids(&local.rows("acme", "tracks", &next)), ids(&local.rows("acme", "tracks", &first)));
}

#[tokio::test]
async fn tracks_continued_one_batch_of_parents_an_invocation_keep_the_snapshot_they_discovered_from() {
    let Recent { sim, client, local, integration } = recent_tasks_and_tracks().await;
    let run = RunId::new(Utc::now());
    local.sync_as(&client, &integration, &["tasks"], RunOptions::default(), &run).await;
    sim.reset_stats();
    // As a table-sync Lambda whose every invocation is past its deadline: one batch of parents,
    // a checkpoint, the next invocation.
    let invocations = local.run_in_slices(&client, &integration, "tracks", &run).await;
    assert!(invocations > 3, "{invocations} invocations");
    assert_eq!(sim.stats().count("GET /tasks"), 0, "the listing is not read by any invocation");
    let tracks = manifest(&local, "tracks", &run);
    assert_eq!(tracks.discovered_at, Some(manifest(&local, "tasks", &run).extracted_at), "kept across invocations");
    let rows = local.rows("acme", "tracks", &run);
    assert_eq!(ids(&rows).len(), rows.len(), "no track written twice");
    assert_eq!(rows.len(), expected_counts(&sim)["tracks"], "every track of the account");
}

#[tokio::test]
async fn a_tasks_column_selection_without_a_field_discovery_needs_reads_the_listing_and_says_why() {
    let sim = start_sim(300, |_| {}).await;
    let client = client_for(&sim, "test-token");
    let local = Local::new();
    let mut integration = tasks_and_tracks(&sim);
    integration.columns.insert("tasks".into(), vec!["id".into(), "description".into(), "updatedAt".into()]);
    let (run, outcomes) = local.sync(&client, &integration, &[], RunOptions::default()).await;
    assert!(outcomes.iter().all(|o| o.record.state == RunState::Succeeded), "{outcomes:?}");
    let tracks = manifest(&local, "tracks", &run);
    assert_eq!(tracks.discovered_at, None);
    assert!(tracks.requests.requests > parents(&local.rows("acme", "tracks", &run)).len() as u64);
    assert!(log_of(&local, &run, "tracks").contains("the column selection of tasks leaves out `hasTrack`"));
}

fn parties_and_employees(sim: &SimHandle) -> Integration {
    let mut integration = integration_for(sim, "acme", "UNUSED");
    integration.tables = vec!["parties".into(), "employees".into()].into();
    integration.lookback_minutes = 1;
    integration
}

/// Rows without the columns a run stamps on them.
fn contents(rows: Vec<Map<String, Value>>) -> BTreeSet<String> {
    rows.into_iter()
        .map(|mut r| {
            r.remove("_run_id");
            r.remove("_extracted_at");
            serde_json::to_string(&r).unwrap()
        })
        .collect()
}

#[tokio::test]
async fn employees_come_from_the_parties_snapshot_of_the_same_sync_as_the_listing_would_give_them() {
    let sim = start_sim(600, |_| {}).await;
    let client = client_for(&sim, "test-token");
    let (alone, together) = (Local::new(), Local::new());
    let mut employees_only = parties_and_employees(&sim);
    employees_only.tables = vec!["employees".into()].into();
    let (by_listing, _) = alone.sync(&client, &employees_only, &[], RunOptions::default()).await;
    sim.reset_stats();
    let (run, outcomes) = together.sync(&client, &parties_and_employees(&sim), &[], RunOptions::default()).await;
    assert!(outcomes.iter().all(|o| o.record.state == RunState::Succeeded), "{outcomes:?}");
    let (parties, employees) = (manifest(&together, "parties", &run), manifest(&together, "employees", &run));
    let parties_read = sim.stats().count("GET /parties") + sim.stats().count("GET /parties/deleted");
    assert_eq!(parties_read, parties.requests.requests, "read once, by parties");
    assert_eq!(employees.requests.requests, 0);
    let rows = together.rows("acme", "employees", &run);
    assert!(rows.len() > 100, "{} employees", rows.len());
    assert_eq!(contents(rows), contents(alone.rows("acme", "employees", &by_listing)), "the same rows");
    // As of the parties snapshot: rows, manifest and bookmark.
    assert_eq!((employees.extracted_at, employees.discovered_at), (parties.extracted_at, Some(parties.extracted_at)));
    let bookmark = together.state.bookmark("acme", "employees").await.unwrap().unwrap();
    assert_eq!(bookmark.last_run_started, parties.extracted_at);
    assert!(log_of(&together, &run, "employees").contains("records of the snapshot `parties` committed in this sync"));

    // A day later: a change after the parties snapshot of the same sync is the next run's.
    sim.mutate_n(MutationKind::Parties, MutationOp::Update, 40).unwrap();
    let (next_alone, _) = alone.sync(&client, &employees_only, &[], RunOptions::default()).await;
    let next = RunId::new(Utc::now());
    let integration = parties_and_employees(&sim);
    together.sync_as(&client, &integration, &["parties"], RunOptions::default(), &next).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let late = sim.mutate_n(MutationKind::Parties, MutationOp::Update, 40).unwrap().ids;
    together.sync_as(&client, &integration, &["employees"], RunOptions::default(), &next).await;
    let daily = together.rows("acme", "employees", &next);
    assert_eq!(manifest(&together, "employees", &next).requests.requests, 0);
    assert_eq!(contents(daily), contents(alone.rows("acme", "employees", &next_alone)), "the changed persons, flagged");
    let (last, _) = together.sync(&client, &integration, &[], RunOptions::default()).await;
    let persons: BTreeSet<i64> = sim.with_account(|a| {
        late.iter().filter(|id| a.records[&Entity::Parties][*id].body()["type"] == "person").copied().collect()
    });
    assert!(!persons.is_empty());
    assert!(persons.is_subset(&ids(&together.rows("acme", "employees", &last))), "changed after the snapshot");
}

#[tokio::test]
async fn employees_read_the_listing_when_the_parties_snapshot_cannot_stand_in_and_say_why() {
    let sim = start_sim(300, |_| {}).await;
    let client = client_for(&sim, "test-token");
    let local = Local::new();
    let integration = parties_and_employees(&sim);
    local.sync(&client, &integration, &[], RunOptions::default()).await;
    // Parties alone moves on: its next snapshot covers less than employees' window.
    let changed = sim.mutate_n(MutationKind::Parties, MutationOp::Update, 30).unwrap().ids;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    local.sync(&client, &integration, &["parties"], RunOptions::default()).await;
    let (run, _) = local.sync(&client, &integration, &[], RunOptions::default()).await;
    let employees = manifest(&local, "employees", &run);
    assert!(employees.requests.requests > 0 && employees.discovered_at.is_none());
    assert!(
        log_of(&local, &run, "employees").contains("parties read changes since"),
        "{}",
        log_of(&local, &run, "employees")
    );
    let persons: BTreeSet<i64> = sim.with_account(|a| {
        changed.iter().filter(|id| a.records[&Entity::Parties][*id].body()["type"] == "person").copied().collect()
    });
    assert!(persons.is_subset(&ids(&local.rows("acme", "employees", &run))), "the changes parties read earlier");

    // A parties selection without employees' columns cannot give their rows.
    let other = Local::new();
    let mut narrow = parties_and_employees(&sim);
    narrow.columns.insert("parties".into(), vec!["id".into(), "type".into(), "updatedAt".into()]);
    let (run, _) = other.sync(&client, &narrow, &[], RunOptions::default()).await;
    assert!(manifest(&other, "employees", &run).requests.requests > 0);
    assert!(log_of(&other, &run, "employees").contains("the column selection of parties leaves out `about`"));
}
