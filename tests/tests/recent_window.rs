//! Recent-window mode on the simulator. Entries: a window run reads only the newest pages and
//! carries older rows over, so its snapshot is complete except for exactly the blind spots the
//! README lists (back-dated creations, edits and deletions of entries older than the cutoff),
//! which the next whole read repairs. Tracks: only the parents whose track tasks changed are
//! asked, the others' tracks carried over. Continued runs write nothing twice.

use std::collections::{BTreeMap, BTreeSet};

use capsule_core::integration::{Integration, RecentWindow, RunId};
use capsule_core::manifest::RunManifest;
use capsule_core::ports::{ObjectSink, RunState};
use capsule_engine::engine::RunOptions;
use capsule_sync_e2e::capsule_sim::{Mutation, MutationKind, MutationOp, SimHandle};
use capsule_sync_e2e::*;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

fn windowed(sim: &SimHandle) -> Integration {
    let mut integration = integration_for(sim, "acme", "UNUSED");
    integration.tables = vec!["entries".into()].into();
    integration.recent_window = Some(RecentWindow { full_refresh_days: 7 });
    integration
}

/// The account's entries: id → (entryAt, updatedAt).
fn account_entries(sim: &SimHandle) -> BTreeMap<i64, (DateTime<Utc>, String)> {
    sim.with_account(|a| {
        a.entries
            .iter()
            .map(|(id, s)| {
                let body = s.body();
                let at = DateTime::parse_from_rfc3339(body["entryAt"].as_str().unwrap()).unwrap().to_utc();
                (*id, (at, body["updatedAt"].as_str().unwrap().to_string()))
            })
            .collect()
    })
}

fn by_id(rows: &[Map<String, Value>]) -> BTreeMap<i64, String> {
    rows.iter().map(|r| (r["id"].as_i64().unwrap(), r["updatedAt"].as_str().unwrap().to_string())).collect()
}

fn manifest_of(local: &Local, run: &RunId) -> RunManifest {
    manifest_of_table(local, "entries", run)
}

/// Rows whose `entryAt` is before `cutoff`.
fn older_than(rows: &[Map<String, Value>], cutoff: DateTime<Utc>) -> u64 {
    let at = |r: &Map<String, Value>| DateTime::parse_from_rfc3339(r["entryAt"].as_str().unwrap()).unwrap();
    rows.iter().filter(|r| at(r) < cutoff).count() as u64
}

/// Capsule sends `…Z` or `….000Z`; the files hold RFC 3339 seconds.
fn same_instant(a: &str, b: &str) -> bool {
    DateTime::parse_from_rfc3339(a).unwrap() == DateTime::parse_from_rfc3339(b).unwrap()
}

#[tokio::test]
async fn a_window_run_reads_only_new_pages_and_misses_exactly_the_documented_blind_spots() {
    let sim = start_sim(1200, |_| {}).await;
    let local = Local::new();
    let client = client_for(&sim, "test-token");
    let integration = windowed(&sim);
    // Entries dated now, so that one of them is inside the next run's window.
    let recent = sim.mutate(Mutation { kind: MutationKind::Entries, op: MutationOp::Create, count: 12, ids: vec![] });
    let recent: Vec<i64> = recent.unwrap().ids;

    let (first, outcomes) = local.sync(&client, &integration, &[], RunOptions::default()).await;
    assert_eq!(outcomes[0].record.state, RunState::Succeeded);
    let whole = manifest_of(&local, &first);
    assert!(whole.recent_window.is_none(), "the first run reads everything");
    assert_eq!(whole.full_refresh_at, Some(whole.extracted_at));
    let whole_requests = whole.requests.requests;
    assert_eq!(whole.rows as usize, account_entries(&sim).len());

    // A day's changes: new entries (some back-dated), old ones edited and deleted, a recent one deleted.
    let now = account_entries(&sim);
    let cutoff = whole.extracted_at - chrono::Duration::minutes(i64::from(integration.lookback_minutes));
    let old: Vec<i64> = now.iter().filter(|(_, (at, _))| *at < cutoff).map(|(id, _)| *id).take(40).collect();
    let mutate = |op, ids: &[i64]| {
        sim.mutate(Mutation { kind: MutationKind::Entries, op, count: ids.len(), ids: ids.to_vec() }).unwrap()
    };
    let created = sim.mutate_n(MutationKind::Entries, MutationOp::Create, 60).unwrap().ids;
    mutate(MutationOp::Update, &old[..5]);
    mutate(MutationOp::Delete, &old[5..8]);
    mutate(MutationOp::Delete, &recent[..1]);

    let (second, outcomes) = local.sync(&client, &integration, &[], RunOptions::default()).await;
    assert_eq!(outcomes[0].record.state, RunState::Succeeded, "{:?}", outcomes[0].error);
    let window = manifest_of(&local, &second);
    let summary = window.recent_window.clone().expect("a window run");
    assert_eq!(summary.base_run_id, first);
    assert_eq!(summary.cutoff, cutoff);
    assert_eq!(window.full_refresh_at, whole.full_refresh_at, "the snapshot still descends from the whole read");
    assert!(window.requests.requests <= 2, "{} requests against {whole_requests}", window.requests.requests);
    assert!(whole_requests >= 15, "the whole read took {whole_requests} requests");

    let account = account_entries(&sim);
    let rows = local.rows("acme", "entries", &second);
    let snapshot = by_id(&rows);
    assert_eq!(snapshot.len(), rows.len(), "one row per entry");
    assert_eq!(rows.len() as u64, window.rows);
    assert!(summary.carried_rows > 0);
    assert_eq!(summary.carried_rows, older_than(&rows, cutoff), "the older rows are the carried ones");
    assert!(rows.iter().all(|r| r["_run_id"] == second.as_str()), "carried rows belong to the new run");

    // The blind spots, exactly.
    let backdated: BTreeSet<i64> = created.iter().copied().filter(|id| account[id].0 < cutoff).collect();
    let missing: BTreeSet<i64> = account.keys().filter(|id| !snapshot.contains_key(id)).copied().collect();
    assert_eq!(missing, backdated, "only back-dated creations are missing");
    assert!(created.len() > backdated.len(), "most new entries are dated now and were read");
    let ghosts: BTreeSet<i64> = snapshot.keys().filter(|id| !account.contains_key(id)).copied().collect();
    assert_eq!(ghosts, old[5..8].iter().copied().collect(), "only deletions older than the cutoff linger");
    assert!(!snapshot.contains_key(&recent[0]), "a deletion inside the window is seen");
    let stale: BTreeSet<i64> = snapshot
        .iter()
        .filter(|(id, updated)| account.get(id).is_some_and(|(_, now)| !same_instant(updated, now)))
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(stale, old[..5].iter().copied().collect(), "only edits of older entries are stale");

    // A week later the whole read is due (the last one is aged by its manifest) and repairs all.
    let mut aged = window.clone();
    aged.full_refresh_at = Some(window.extracted_at - chrono::Duration::days(8));
    put_manifest(&local, "entries", &second, &aged).await;
    let (third, outcomes) = local.sync(&client, &integration, &[], RunOptions::default()).await;
    assert_eq!(outcomes[0].record.state, RunState::Succeeded);
    let refreshed = manifest_of(&local, &third);
    assert!(refreshed.recent_window.is_none(), "a full refresh");
    assert_eq!(refreshed.full_refresh_at, Some(refreshed.extracted_at));
    let snapshot = by_id(&local.rows("acme", "entries", &third));
    assert_eq!(snapshot.keys().collect::<Vec<_>>(), account.keys().collect::<Vec<_>>());
    assert!(snapshot.iter().all(|(id, updated)| same_instant(updated, &account[id].1)));
    let log = std::fs::read_to_string(local.output().join(format!("_meta/acme/logs/{third}/entries-001.ndjson")));
    assert!(log.unwrap().contains("full_refresh"), "the whole read says why");
}

#[tokio::test]
async fn a_window_run_continued_across_invocations_writes_every_row_once() {
    let sim = start_sim(300, |_| {}).await;
    let local = Local::new();
    let client = client_for(&sim, "test-token");
    let integration = windowed(&sim);
    let (first, _) = local.sync(&client, &integration, &[], RunOptions::default()).await;
    let whole = manifest_of(&local, &first);
    // Enough new entries for a window of several pages.
    sim.mutate_n(MutationKind::Entries, MutationOp::Create, 350).unwrap();

    let run_id = RunId::new(Utc::now());
    // Every invocation reads one page, then checkpoints.
    let invocations = local.run_in_slices(&client, &integration, "entries", &run_id).await;
    assert!(invocations >= 3, "{invocations} invocations");
    let manifest = manifest_of(&local, &run_id);
    let summary = manifest.recent_window.expect("a window run");
    assert_eq!(summary.base_run_id, first);
    let rows = local.rows("acme", "entries", &run_id);
    let ids: BTreeSet<i64> = rows.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(ids.len(), rows.len(), "no row written twice across invocations");
    let account: BTreeSet<i64> = account_entries(&sim).keys().copied().collect();
    let backdated = account.difference(&ids).count();
    assert!(backdated < 350 / 2, "the new entries are in, but the back-dated ({backdated})");
    assert!(whole.rows as usize + 350 - backdated == ids.len());
    assert_eq!(summary.carried_rows, older_than(&rows, summary.cutoff), "carried once, counted once");
}

#[tokio::test]
async fn a_window_is_not_used_when_its_snapshot_cannot_serve_and_the_log_says_why() {
    let sim = start_sim(300, |_| {}).await;
    let local = Local::new();
    let client = client_for(&sim, "test-token");
    let mut integration = windowed(&sim);
    let (first, _) = local.sync(&client, &integration, &[], RunOptions::default()).await;
    let reason = |run: &RunId| {
        let log = std::fs::read_to_string(local.output().join(format!("_meta/acme/logs/{run}/entries-001.ndjson")));
        let log = log.unwrap();
        let line = log.lines().find(|l| l.contains("\"full_refresh\"")).map(str::to_string);
        line.unwrap_or_default()
    };
    assert!(reason(&first).contains("no earlier snapshot"), "{}", reason(&first));

    // Other columns than the snapshot's: the older rows could not be carried as they are.
    integration.columns.insert("entries".into(), vec!["id".into(), "entryAt".into(), "updatedAt".into()]);
    let (second, outcomes) = local.sync(&client, &integration, &[], RunOptions::default()).await;
    assert_eq!(outcomes[0].record.state, RunState::Succeeded);
    assert!(manifest_of(&local, &second).recent_window.is_none());
    assert!(reason(&second).contains("column selection changed"), "{}", reason(&second));

    // The previous snapshot's manifest is unreadable: read whole, and say so.
    let key = capsule_engine::output::manifest_key("acme", "entries", &second);
    local.sink.put(&key, bytes::Bytes::from_static(b"{not json")).await.unwrap();
    let (third, outcomes) = local.sync(&client, &integration, &[], RunOptions::default()).await;
    assert_eq!(outcomes[0].record.state, RunState::Succeeded);
    assert!(manifest_of(&local, &third).recent_window.is_none());
    assert!(reason(&third).contains("cannot be used"), "{}", reason(&third));

    // Back to a usable snapshot: the next run is a window again.
    let (fourth, outcomes) = local.sync(&client, &integration, &[], RunOptions::default()).await;
    assert_eq!(outcomes[0].record.state, RunState::Succeeded, "{:?}", outcomes[0].error);
    assert_eq!(manifest_of(&local, &fourth).recent_window.unwrap().base_run_id, third);
    assert!(reason(&fourth).is_empty(), "a window run logs no full_refresh");
}

#[tokio::test]
async fn tracks_ask_only_the_parents_whose_track_tasks_changed_and_carry_the_rest() {
    let TracksLoaded { sim, local, client, integration, first } = tracks_loaded_once().await;
    let whole = manifest_of_table(&local, "tracks", &first);
    let whole_rows = local.rows("acme", "tracks", &first);

    // Tasks change; those on tracks name the parents whose tracks may have changed.
    let updated = sim.mutate_n(MutationKind::Tasks, MutationOp::Update, 60).unwrap().ids;
    let changed: BTreeSet<(String, i64)> = sim.with_account(|a| {
        updated
            .iter()
            .map(|id| a.tasks[id].body())
            .filter(|t| t["hasTrack"] == true)
            .filter_map(|t| match (t["opportunity"]["id"].as_i64(), t["kase"]["id"].as_i64()) {
                (Some(id), _) => Some(("opportunities".to_string(), id)),
                (_, Some(id)) => Some(("kases".to_string(), id)),
                _ => None,
            })
            .collect()
    });
    assert!(!changed.is_empty(), "some updated tasks are on tracks");
    let parents: BTreeSet<(String, i64)> = whole_rows
        .iter()
        .map(|r| (r["entity"].as_str().unwrap().to_string(), r["entityId"].as_i64().unwrap()))
        .collect();

    let (second, outcomes) = local.sync(&client, &integration, &[], RunOptions::default()).await;
    assert_eq!(outcomes[0].record.state, RunState::Succeeded, "{:?}", outcomes[0].error);
    let recent = serde_json::from_value::<RunManifest>(local.manifest("acme", "tracks", &second)).unwrap();
    let summary = recent.recent_window.clone().expect("a recent read");
    // The discovery is read as before; only the changed parents are asked.
    let asked = recent.requests.requests as i64;
    let saved = (parents.len() - parents.intersection(&changed).count()) as i64;
    assert_eq!(
        asked,
        whole.requests.requests as i64 - saved,
        "{asked} requests: the whole read's less the unchanged parents"
    );
    // The snapshot is the same tracks, each once, the unchanged parents' carried over.
    let rows = local.rows("acme", "tracks", &second);
    let ids = |rows: &[Map<String, Value>]| rows.iter().map(|r| r["id"].as_i64().unwrap()).collect::<BTreeSet<_>>();
    assert_eq!(ids(&rows).len(), rows.len(), "one row per track");
    assert_eq!(ids(&rows), ids(&whole_rows));
    let of_changed = rows
        .iter()
        .filter(|r| changed.contains(&(r["entity"].as_str().unwrap().to_string(), r["entityId"].as_i64().unwrap())))
        .count() as u64;
    assert_eq!(summary.carried_rows, rows.len() as u64 - of_changed);
    assert!(rows.iter().all(|r| r["_run_id"] == second.as_str()));
}

#[tokio::test]
async fn a_recent_tracks_run_continued_across_invocations_carries_once_and_asks_once() {
    let TracksLoaded { sim, local, client, integration, first } = tracks_loaded_once().await;
    let whole_rows = local.rows("acme", "tracks", &first);
    sim.mutate_n(MutationKind::Tasks, MutationOp::Update, 200).unwrap();

    // Every invocation reads one discovery page or one batch of parents, then checkpoints.
    let run_id = RunId::new(Utc::now());
    let invocations = local.run_in_slices(&client, &integration, "tracks", &run_id).await;
    assert!(invocations > 5, "{invocations} invocations");
    let manifest = manifest_of_table(&local, "tracks", &run_id);
    let summary = manifest.recent_window.expect("a recent read");
    let rows = local.rows("acme", "tracks", &run_id);
    let ids: BTreeSet<i64> = rows.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(ids.len(), rows.len(), "no track written twice across invocations");
    let whole: BTreeSet<i64> = whole_rows.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, whole, "every track, carried or asked");
    assert!(summary.carried_rows > 0 && summary.carried_rows < rows.len() as u64, "{summary:?}");
}

#[tokio::test]
async fn tracks_are_refreshed_a_slice_of_parents_a_day_and_never_read_whole_again() {
    let TracksLoaded { sim: _sim, local, client, integration, first } = tracks_loaded_once().await;
    let whole = manifest_of_table(&local, "tracks", &first);
    let whole_rows = local.rows("acme", "tracks", &first);
    let parents: BTreeSet<(String, i64)> = whole_rows
        .iter()
        .map(|r| (r["entity"].as_str().unwrap().to_string(), r["entityId"].as_i64().unwrap()))
        .collect();
    let discovery = whole.requests.requests - parents.len() as u64;
    let day = chrono::Duration::days(1);
    // The whole read dates its seven slices a day apart: one comes due each day.
    let slices = whole.slices_refreshed_at.clone().expect("a rolling refresh");
    assert_eq!(slices, (0..7).map(|k| whole.extracted_at - day * k).collect::<Vec<_>>());

    // The same day, nothing changed: no slice is due and no parent is asked.
    let (second, outcomes) = local.sync(&client, &integration, &[], RunOptions::default()).await;
    assert_eq!(outcomes[0].record.state, RunState::Succeeded, "{:?}", outcomes[0].error);
    let same_day = manifest_of_table(&local, "tracks", &second);
    assert_eq!(same_day.requests.requests, discovery);
    assert_eq!(same_day.slices_refreshed_at.as_ref(), Some(&slices));

    // A day later (the snapshot's dates moved a day back), slice 6 is due: its parents are
    // asked, changed or not; the others' tracks are carried over.
    let age = |manifest: &RunManifest, by: chrono::Duration| {
        let mut aged = manifest.clone();
        aged.extracted_at -= by;
        aged.full_refresh_at = aged.full_refresh_at.map(|t| t - by);
        aged.slices_refreshed_at = aged.slices_refreshed_at.map(|v| v.into_iter().map(|t| t - by).collect());
        aged
    };
    let aged = age(&same_day, day);
    put_manifest(&local, "tracks", &second, &aged).await;
    let (third, outcomes) = local.sync(&client, &integration, &[], RunOptions::default()).await;
    assert_eq!(outcomes[0].record.state, RunState::Succeeded, "{:?}", outcomes[0].error);
    let next_day = manifest_of_table(&local, "tracks", &third);
    let in_slice_6 = parents.iter().filter(|(_, id)| id.rem_euclid(7) == 6).count() as u64;
    assert!(in_slice_6 > 0 && in_slice_6 < parents.len() as u64);
    assert_eq!(next_day.requests.requests, discovery + in_slice_6, "the discovery and slice 6's parents");
    let mut expected = aged.slices_refreshed_at.clone().unwrap();
    expected[6] = next_day.extracted_at;
    assert_eq!(next_day.slices_refreshed_at, Some(expected));
    assert_eq!(next_day.full_refresh_at, aged.full_refresh_at, "not every slice has turned over yet");
    let rows = local.rows("acme", "tracks", &third);
    let ids = |rows: &[Map<String, Value>]| rows.iter().map(|r| r["id"].as_i64().unwrap()).collect::<BTreeSet<_>>();
    assert_eq!(ids(&rows).len(), rows.len(), "one row per track");
    assert_eq!(ids(&rows), ids(&whole_rows), "every track, carried or asked");
    let asked_rows = rows.iter().filter(|r| r["entityId"].as_i64().unwrap().rem_euclid(7) == 6).count() as u64;
    assert_eq!(next_day.recent_window.as_ref().unwrap().carried_rows, rows.len() as u64 - asked_rows);
    let log = std::fs::read_to_string(local.output().join(format!("_meta/acme/logs/{third}/tracks-001.ndjson")));
    assert!(log.unwrap().contains("rolling refresh"), "the log says which parents the refresh asked");

    // After a week without runs every slice is due: every parent is asked, still by a recent
    // read (no whole read), and the snapshot now descends from this run.
    put_manifest(&local, "tracks", &third, &age(&next_day, day * 8)).await;
    let (fourth, outcomes) = local.sync(&client, &integration, &[], RunOptions::default()).await;
    assert_eq!(outcomes[0].record.state, RunState::Succeeded, "{:?}", outcomes[0].error);
    let week_later = manifest_of_table(&local, "tracks", &fourth);
    assert_eq!(week_later.requests.requests, whole.requests.requests, "every parent asked");
    assert!(week_later.recent_window.is_some(), "a recent read, not a whole one");
    assert_eq!(week_later.full_refresh_at, Some(week_later.extracted_at));
    assert_eq!(ids(&local.rows("acme", "tracks", &fourth)), ids(&whole_rows));

    // Another refresh period slices the parents anew: one whole read, which says why.
    let mut every_5_days = integration.clone();
    every_5_days.recent_window = Some(RecentWindow { full_refresh_days: 5 });
    let (fifth, _) = local.sync(&client, &every_5_days, &[], RunOptions::default()).await;
    let resliced = manifest_of_table(&local, "tracks", &fifth);
    assert!(resliced.recent_window.is_none(), "a whole read");
    assert_eq!(resliced.slices_refreshed_at.map(|s| s.len()), Some(5));
    let log = std::fs::read_to_string(local.output().join(format!("_meta/acme/logs/{fifth}/tracks-001.ndjson")));
    assert!(log.unwrap().contains("refresh period changed"));
}

/// An account whose tracks were loaded once, whole, by an integration in recent-window mode.
struct TracksLoaded {
    sim: SimHandle,
    local: Local,
    client: capsule_client::CapsuleClient,
    integration: Integration,
    first: RunId,
}

async fn tracks_loaded_once() -> TracksLoaded {
    let sim = start_sim(600, |_| {}).await;
    let local = Local::new();
    let client = client_for(&sim, "test-token");
    let mut integration = windowed(&sim);
    integration.tables = vec!["tracks".into()].into();
    let (first, _) = local.sync(&client, &integration, &[], RunOptions::default()).await;
    TracksLoaded { sim, local, client, integration, first }
}

/// Replaces a run's manifest (to make its snapshot look older).
async fn put_manifest(local: &Local, table: &str, run: &RunId, manifest: &RunManifest) {
    let key = capsule_engine::output::manifest_key("acme", table, run);
    local.sink.put(&key, capsule_core::manifest::manifest_body(manifest)).await.unwrap();
}

fn manifest_of_table(local: &Local, table: &str, run: &RunId) -> RunManifest {
    serde_json::from_value(local.manifest("acme", table, run)).unwrap()
}
