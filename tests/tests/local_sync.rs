//! The engine with the local adapters against the Capsule simulator over real HTTP.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use capsule_client::RetryPolicy;
use capsule_core::catalog::{self, METADATA_COLUMNS};
use capsule_core::integration::{FanOutMode, RunId};
use capsule_core::manifest::Compression;
use capsule_core::ports::{Lease, LeaseOwner, RunState, StateStore};
use capsule_engine::engine::RunOptions;
use capsule_engine::output::WriterOptions;
use capsule_sync_e2e::capsule_sim::{Fault, FaultRule, Mutation, MutationKind, MutationOp};
use capsule_sync_e2e::*;
use serde_json::Value;

#[tokio::test]
async fn every_table_lands_with_the_simulators_row_count_and_its_columns() {
    let sim = start_sim(400, |_| {}).await;
    let local = Local::new();
    let integration = integration_for(&sim, "acme", "UNUSED");
    let client = client_for(&sim, "test-token");
    let (run_id, outcomes) = local.sync(&client, &integration, &[], RunOptions::default()).await;

    let expected = expected_counts(&sim);
    assert_eq!(outcomes.len(), 22);
    assert_eq!(expected.len(), 22, "the simulator counts all 22 tables");
    for outcome in &outcomes {
        let table = catalog::table(&outcome.record.table).unwrap();
        assert_eq!(outcome.record.state, RunState::Succeeded, "{}: {:?}", table.name, outcome.error);
        let rows = local.rows("acme", table.name, &run_id);
        assert_eq!(rows.len(), expected[table.name], "row count of {}", table.name);
        assert!(!rows.is_empty(), "{} has rows in the demo account", table.name);
        assert_eq!(outcome.record.rows as usize, rows.len());

        let want: BTreeSet<&str> = table.all_columns().map(|c| c.name).collect();
        for row in &rows {
            let got: BTreeSet<&str> = row.keys().map(String::as_str).collect();
            assert_eq!(got, want, "columns of {}", table.name);
            assert_eq!(row["_run_id"], Value::String(run_id.to_string()));
        }
        // Primary keys are unique within a full snapshot.
        if table.replication == catalog::Replication::Full {
            let keys: BTreeSet<String> = rows
                .iter()
                .map(|r| table.primary_key.iter().map(|k| r[*k].to_string()).collect::<Vec<_>>().join("|"))
                .collect();
            assert_eq!(keys.len(), rows.len(), "duplicate keys in {}", table.name);
        }
        let manifest = local.manifest("acme", table.name, &run_id);
        assert_eq!(manifest["rows"].as_u64().unwrap() as usize, rows.len());
        assert_eq!(manifest["files"].as_array().unwrap().len(), local.run_files("acme", table.name, &run_id).len());
        // Employees are the parties snapshot's persons with an organisation: no request.
        let from_snapshot = matches!(table.fetch, catalog::Fetch::Listings(_)) && table.snapshot_source().is_some();
        assert_eq!(outcome.record.requests.requests == 0, from_snapshot, "requests of {}", table.name);
    }
    // Teams carry their memberships as the API embeds them, an empty team as `[]`.
    let memberships: BTreeMap<String, Value> = local
        .rows("acme", "teams", &run_id)
        .into_iter()
        .map(|r| (r["id"].to_string(), r["memberships"].clone()))
        .collect();
    let embedded: BTreeMap<String, Value> = sim.with_account(|a| {
        a.reference().teams.iter().map(|t| (t["id"].to_string(), t["memberships"].clone())).collect()
    });
    assert_eq!(memberships, embedded);
    assert!(memberships.values().any(|m| m.as_array().is_some_and(|m| !m.is_empty())), "{memberships:?}");
    // Bookmarks moved for every table, to the run's T0; employees' to the parties snapshot's.
    let started: BTreeMap<&str, _> = outcomes.iter().map(|o| (o.record.table.as_str(), o.record.started_at)).collect();
    for outcome in &outcomes {
        let b = local.state.bookmark("acme", &outcome.record.table).await.unwrap().expect("bookmark");
        let table = catalog::table(&outcome.record.table).unwrap();
        let rows_of = match table.fetch {
            catalog::Fetch::Listings(_) => table.snapshot_source().unwrap_or(table.name),
            catalog::Fetch::FanOut { .. } => table.name,
        };
        assert_eq!(b.last_run_started, started[rows_of], "{}", table.name);
        assert_eq!(local.manifest("acme", table.name, &run_id)["extracted_at"], serde_json::json!(started[rows_of]));
    }
    let status = local.state.get_integration("acme").await.unwrap();
    assert!(status.is_none(), "run_tables doesn't create integrations");
}

#[tokio::test]
async fn tasks_include_every_status_and_custom_field_ids_repeat_across_entities() {
    let sim = start_sim(300, |_| {}).await;
    let local = Local::new();
    let integration = integration_for(&sim, "acme", "UNUSED");
    let client = client_for(&sim, "test-token");
    let (run, _) = local
        .sync(&client, &integration, &["tasks", "custom_fields", "milestones", "employees"], RunOptions::default())
        .await;

    let statuses: BTreeSet<String> =
        local.rows("acme", "tasks", &run).iter().map(|r| r["status"].as_str().unwrap().to_string()).collect();
    assert_eq!(statuses, BTreeSet::from(["OPEN".into(), "COMPLETED".into(), "PENDING".into()]));

    let fields = local.rows("acme", "custom_fields", &run);
    let ids_with_entity: BTreeSet<(String, i64)> =
        fields.iter().map(|r| (r["entity"].as_str().unwrap().to_string(), r["id"].as_i64().unwrap())).collect();
    assert_eq!(ids_with_entity.len(), fields.len(), "(entity, id) is unique");
    let ids: BTreeSet<i64> = fields.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert!(ids.len() < fields.len(), "the same id appears under several entities");

    let pipelines: BTreeSet<i64> =
        local.rows("acme", "milestones", &run).iter().map(|r| r["pipelineId"].as_i64().unwrap()).collect();
    assert_eq!(pipelines.len(), 3, "milestones of every pipeline, the archived one included");

    for row in local.rows("acme", "employees", &run) {
        assert_eq!(row["type"], "person");
        assert!(row["organisation"]["id"].is_i64());
    }
}

#[tokio::test]
async fn employees_are_incremental_a_daily_run_reads_only_changed_parties_and_flags_leavers() {
    let sim = start_sim(600, |_| {}).await;
    let local = Local::new();
    let integration = integration_for(&sim, "acme", "UNUSED");
    let client = client_for(&sim, "test-token");
    let (first, outcomes) = local.sync(&client, &integration, &["employees"], RunOptions::default()).await;
    let first_requests = outcomes[0].record.requests.requests;
    let rows = local.rows("acme", "employees", &first);
    assert_eq!(rows.len(), expected_counts(&sim)["employees"], "a first load writes members only");
    assert!(rows.iter().all(|r| r["_removed"] == false && r["organisation"]["id"].is_i64()));

    let left = sim.mutate_n(MutationKind::Parties, MutationOp::Leave, 2).unwrap().ids;
    let updated = sim.mutate_n(MutationKind::Parties, MutationOp::Update, 5).unwrap().ids;
    let (second, outcomes) = local.sync(&client, &integration, &["employees"], RunOptions::default()).await;
    let record = &outcomes[0].record;
    assert_eq!(record.state, RunState::Succeeded);
    assert!(record.bookmark_before.is_some());
    // One page of changed parties, plus the deleted feed asked before and after it (the paging guard).
    assert!(record.requests.requests <= 3, "{} requests (first load: {first_requests})", record.requests.requests);
    assert!(first_requests >= 7, "the first load read every party page: {first_requests}");

    let rows = local.rows("acme", "employees", &second);
    let persons: BTreeSet<i64> = sim.with_account(|a| {
        updated
            .iter()
            .chain(&left)
            .copied()
            .filter(|id| a.entity(capsule_sim::Entity::Parties)[id].body()["type"] == "person")
            .collect()
    });
    let written: BTreeSet<i64> = rows.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(written, persons, "every changed person, and nobody else");
    for row in &rows {
        let member = row["organisation"].is_object();
        assert_eq!(row["_removed"], !member, "{row:?}");
    }
    let leavers: BTreeSet<i64> =
        rows.iter().filter(|r| r["_removed"] == true).map(|r| r["id"].as_i64().unwrap()).collect();
    assert!(left.iter().all(|id| leavers.contains(id)), "the leavers are flagged: {left:?} in {leavers:?}");
}

#[tokio::test]
async fn second_run_lands_changes_and_deletions_including_a_change_made_while_paging() {
    let sim = start_sim(600, |_| {}).await;
    let local = Local::new();
    let integration = integration_for(&sim, "acme", "UNUSED");
    let client = client_for(&sim, "test-token");
    let tables = ["parties", "opportunities", "cases", "deleted_parties", "deleted_opportunities", "deleted_cases"];

    // Run 1, slowed on the second page of /parties; meanwhile a party on page 1 changes.
    let first_party = sim.with_account(|a| *a.entity(capsule_sim::Entity::Parties).keys().next().unwrap());
    sim.add_fault(FaultRule {
        path: Some("/parties".into()),
        fault: Fault::Slow { millis: 600 },
        after: 1,
        times: Some(1),
        probability: None,
    });
    let run1 = {
        let sync = local.sync(&client, &integration, &tables, RunOptions::default());
        // Change a page-1 party once the (slowed) request for page 2 has arrived: page 1 has
        // certainly been read by then, and the run is still paging.
        let change = async {
            let t = std::time::Instant::now();
            while sim.stats().count("GET /parties") < 2 {
                assert!(t.elapsed() < Duration::from_secs(10), "page 2 was never requested");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            sim.mutate(Mutation {
                kind: MutationKind::Parties,
                op: MutationOp::Update,
                count: 1,
                ids: vec![first_party],
            })
            .unwrap();
        };
        let ((run1, outcomes), ()) = tokio::join!(sync, change);
        assert!(outcomes.iter().all(|o| o.record.state == RunState::Succeeded));
        run1
    };
    let run1_parties = local.rows("acme", "parties", &run1);
    let old = run1_parties.iter().find(|r| r["id"] == first_party).expect("page 1 was read before the change");

    // Changes after run 1.
    let updated = sim.mutate_n(MutationKind::Parties, MutationOp::Update, 5).unwrap().ids;
    let created = sim.mutate_n(MutationKind::Parties, MutationOp::Create, 3).unwrap().ids;
    let deleted = sim.mutate_n(MutationKind::Parties, MutationOp::Delete, 2).unwrap().ids;
    let restricted = sim.mutate_n(MutationKind::Parties, MutationOp::Restrict, 1).unwrap().ids;
    let opp_updated = sim.mutate_n(MutationKind::Opportunities, MutationOp::Update, 2).unwrap().ids;
    let kase_deleted = sim.mutate_n(MutationKind::Kases, MutationOp::Delete, 1).unwrap().ids;

    let (run2, outcomes) = local.sync(&client, &integration, &tables, RunOptions::default()).await;
    assert!(outcomes.iter().all(|o| o.record.state == RunState::Succeeded));
    let ids = |table: &str| -> BTreeSet<i64> {
        local.rows("acme", table, &run2).iter().map(|r| r["id"].as_i64().unwrap()).collect()
    };
    let parties = ids("parties");
    let alive_changed: BTreeSet<i64> = updated
        .iter()
        .chain(&created)
        .chain([&first_party])
        .filter(|id| !deleted.contains(id) && !restricted.contains(id))
        .copied()
        .collect();
    assert_eq!(parties, alive_changed, "exactly the changed parties, the one changed mid-run 1 included");
    let row = local.rows("acme", "parties", &run2).into_iter().find(|r| r["id"] == first_party).unwrap();
    assert_ne!(row["updatedAt"], old["updatedAt"], "run 2 carries the newer version");

    let tombstones = local.rows("acme", "deleted_parties", &run2);
    let deleted_ids: BTreeSet<i64> =
        tombstones.iter().filter(|r| r["_deleted"] == true).map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(deleted_ids, deleted.iter().copied().collect());
    let restricted_ids: BTreeSet<i64> =
        tombstones.iter().filter(|r| r["_restricted"] == true).map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(restricted_ids, restricted.iter().copied().collect());
    assert!(tombstones.iter().filter(|r| r["_deleted"] == true).all(|r| r["deletedAt"].is_string()));

    assert_eq!(ids("opportunities"), opp_updated.iter().copied().collect());
    assert_eq!(ids("deleted_cases"), kase_deleted.iter().copied().collect());
    assert!(ids("deleted_opportunities").is_empty());

    let manifest = local.manifest("acme", "parties", &run2);
    let since = chrono::DateTime::parse_from_rfc3339(manifest["since"].as_str().unwrap()).unwrap();
    let before = chrono::DateTime::parse_from_rfc3339(manifest["bookmark_before"].as_str().unwrap()).unwrap();
    assert_eq!(before - since, chrono::Duration::minutes(10), "since = bookmark minus the lookback");
}

#[tokio::test]
async fn a_failed_run_moves_nothing_and_its_rerun_leaves_no_duplicate_files() {
    let sim = start_sim(500, |_| {}).await;
    let local = Local::new();
    let integration = integration_for(&sim, "acme", "UNUSED");
    let client = client_for(&sim, "test-token");
    let small_parts = RunOptions {
        writer: WriterOptions { part_max_bytes: 8 * 1024, chunk_bytes: 1024, ..WriterOptions::default() },
        ..RunOptions::default()
    };

    // Attempt 1: page 3 of /parties keeps failing with 503 after two pages were written.
    sim.add_fault(FaultRule {
        path: Some("/parties".into()),
        fault: Fault::Status { status: 503 },
        after: 2,
        times: None,
        probability: None,
    });
    let run_id = capsule_core::integration::RunId::new(chrono::Utc::now());
    let outcomes = local.sync_as(&client, &integration, &["parties"], small_parts, &run_id).await;
    let failed = &outcomes[0];
    assert_eq!(failed.record.state, RunState::Failed);
    let error = failed.error.as_ref().unwrap();
    assert!(error.is_retryable(), "{error}");
    assert!(error.to_string().contains("503"), "{error}");
    assert!(local.run_files("acme", "parties", &run_id).is_empty(), "no partial files published");
    assert!(local.state.bookmark("acme", "parties").await.unwrap().is_none(), "bookmark did not move");
    let runs = local.state.runs(Some("acme"), 10).await.unwrap();
    assert_eq!(runs[0].state, RunState::Failed);
    assert_eq!(runs[0].error.as_ref().unwrap().error_type, "CapsuleUnavailable");

    // Rerun of the same run id succeeds; then again with bigger parts: fewer files, no leftovers.
    sim.clear_faults();
    let outcomes = local.sync_as(&client, &integration, &["parties"], small_parts, &run_id).await;
    assert_eq!(outcomes[0].record.state, RunState::Succeeded);
    let many = local.run_files("acme", "parties", &run_id);
    assert!(many.len() > 3, "small parts roll: {} files", many.len());
    let outcomes = local.sync_as(&client, &integration, &["parties"], RunOptions::default(), &run_id).await;
    assert_eq!(outcomes[0].record.state, RunState::Succeeded);
    let files = local.run_files("acme", "parties", &run_id);
    assert_eq!(files.len(), 1, "stale parts of the earlier attempt were removed: {files:?}");
    assert_eq!(local.rows("acme", "parties", &run_id).len(), 500);
    let manifest = local.manifest("acme", "parties", &run_id);
    assert_eq!(manifest["files"].as_array().unwrap().len(), 1);
    assert!(manifest["bookmark_before"].is_null(), "a redo of a committed run reads the same window");
}

#[tokio::test]
async fn a_rejected_token_fails_clearly_and_moves_no_bookmark() {
    let sim = start_sim(50, |_| {}).await;
    let local = Local::new();
    let integration = integration_for(&sim, "acme", "UNUSED");
    let client = client_for(&sim, "wrong-token");
    let (run_id, outcomes) = local.sync(&client, &integration, &["parties", "users"], RunOptions::default()).await;
    for o in &outcomes {
        assert_eq!(o.record.state, RunState::Failed);
        let message = o.error.as_ref().unwrap().to_string();
        assert!(message.contains("401") && message.contains("personal access token"), "{message}");
        assert!(!message.contains("wrong-token"), "the token never appears in errors");
        assert_eq!(o.error.as_ref().unwrap().fault(), capsule_core::Fault::User);
        assert!(local.state.bookmark("acme", &o.record.table).await.unwrap().is_none());
        assert!(local.run_files("acme", &o.record.table, &run_id).is_empty());
    }
    let state = std::fs::read_to_string(local.state.path()).unwrap();
    assert!(!state.contains("wrong-token"));
}

#[tokio::test]
async fn rate_limits_and_bursts_of_server_errors_are_survived() {
    // 25 requests per 2-second window: a 22-table sync needs several windows.
    let sim = start_sim(300, |c| {
        c.rate_limit = 25;
        c.rate_window = Duration::from_secs(2);
    })
    .await;
    for (fault, probability) in [
        (Fault::Status { status: 500 }, 0.08),
        (Fault::Status { status: 502 }, 0.05),
        (Fault::Drop, 0.04),
        (Fault::Truncated, 0.04),
        (Fault::Malformed, 0.03),
    ] {
        sim.add_fault(FaultRule { path: None, fault, after: 0, times: None, probability: Some(probability) });
    }
    let local = Local::new();
    let integration = integration_for(&sim, "acme", "UNUSED");
    let mut options = fast_client_options();
    options.retry = RetryPolicy { max_retries: 10, ..options.retry };
    let client = capsule_client::CapsuleClient::new(
        sim.base_url(),
        secrecy::SecretString::from("test-token".to_string()),
        options,
    )
    .unwrap();
    let (run_id, outcomes) = local.sync(&client, &integration, &[], RunOptions::default()).await;
    let expected = expected_counts(&sim);
    let mut retries = 0;
    let mut rate_limited = 0;
    for o in &outcomes {
        assert_eq!(o.record.state, RunState::Succeeded, "{}: {:?}", o.record.table, o.error);
        assert_eq!(local.rows("acme", &o.record.table, &run_id).len(), expected[&o.record.table], "{}", o.record.table);
        retries += o.record.requests.retries;
        rate_limited += o.record.requests.rate_limited;
    }
    let stats = sim.stats();
    assert!(retries > 0, "faults were injected and retried");
    assert!(stats.by_status.get(&429).copied().unwrap_or(0) == rate_limited, "every 429 was waited out: {stats:?}");
}

#[tokio::test]
async fn column_selection_with_aliases_and_plain_ndjson() {
    let sim = start_sim(100, |_| {}).await;
    let local = Local::new();
    let mut integration = integration_for(&sim, "acme", "UNUSED");
    integration.columns.insert("parties".into(), vec!["updateAt".into(), "wbesites".into(), "name".into()]);
    integration.columns.insert("opportunities".into(), vec!["loastReason".into()]);
    integration.columns.insert("lost_reasons".into(), vec!["includeForCoversion".into()]);
    integration.validate().unwrap();
    let client = client_for(&sim, "test-token");
    let plain = RunOptions {
        writer: WriterOptions { compression: Compression::None, ..WriterOptions::default() },
        ..RunOptions::default()
    };
    let (run, outcomes) = local.sync(&client, &integration, &["parties", "opportunities", "lost_reasons"], plain).await;
    assert!(outcomes.iter().all(|o| o.record.state == RunState::Succeeded));
    let meta: Vec<&str> = METADATA_COLUMNS.iter().map(|c| c.name).collect();
    let keys = |table: &str| -> BTreeSet<String> {
        let files = local.run_files("acme", table, &run);
        assert!(files.iter().all(|f| f.to_string_lossy().ends_with(".ndjson")), "{files:?}");
        local.rows("acme", table, &run)[0].keys().cloned().collect()
    };
    let expect =
        |cols: &[&str]| -> BTreeSet<String> { cols.iter().chain(meta.iter()).map(|s| s.to_string()).collect() };
    assert_eq!(keys("parties"), expect(&["id", "name", "updatedAt", "websites"]));
    assert_eq!(keys("opportunities"), expect(&["id", "lostReason"]));
    assert_eq!(keys("lost_reasons"), expect(&["id", "includedForConversion"]));
    let manifest = local.manifest("acme", "parties", &run);
    assert_eq!(manifest["columns"], serde_json::json!(["id", "name", "updatedAt", "websites"]));
}

#[tokio::test]
async fn tracks_discovery_finds_every_track_with_fewer_requests_than_the_exhaustive_mode() {
    let sim = start_sim(800, |_| {}).await;
    let client = client_for(&sim, "test-token");
    let mut requests = BTreeMap::new();
    let mut rows = BTreeMap::new();
    for mode in [FanOutMode::Discover, FanOutMode::Exhaustive] {
        let local = Local::new();
        let mut integration = integration_for(&sim, "acme", "UNUSED");
        integration.fan_out = mode;
        let (run, outcomes) = local.sync(&client, &integration, &["tracks"], RunOptions::default()).await;
        assert_eq!(outcomes[0].record.state, RunState::Succeeded);
        requests.insert(format!("{mode:?}"), outcomes[0].record.requests.requests);
        let tracks = local.rows("acme", "tracks", &run);
        for t in &tracks {
            assert!(t["entity"] == "opportunities" || t["entity"] == "kases");
            assert!(t["entityId"].is_i64());
        }
        rows.insert(format!("{mode:?}"), tracks.len());
    }
    assert_eq!(rows["Discover"], expected_counts(&sim)["tracks"]);
    assert_eq!(rows["Discover"], rows["Exhaustive"]);
    assert!(requests["Discover"] < requests["Exhaustive"], "{requests:?}");
}

#[tokio::test]
async fn a_table_whose_lease_is_held_is_skipped() {
    let sim = start_sim(50, |_| {}).await;
    let local = Local::new();
    let integration = integration_for(&sim, "acme", "UNUSED");
    let other = RunId::new(chrono::Utc::now());
    let lease = Lease::first("acme", "users", LeaseOwner::draw(&other), chrono::Utc::now(), Duration::from_secs(60));
    local.state.acquire_lease(&lease).await.unwrap();
    let client = client_for(&sim, "test-token");
    let (_, outcomes) = local.sync(&client, &integration, &["users", "teams"], RunOptions::default()).await;
    let by_table: BTreeMap<&str, RunState> =
        outcomes.iter().map(|o| (o.record.table.as_str(), o.record.state)).collect();
    assert_eq!(by_table["users"], RunState::Skipped);
    assert_eq!(by_table["teams"], RunState::Succeeded);
    assert!(local.state.bookmark("acme", "users").await.unwrap().is_none());
}

#[tokio::test]
async fn a_run_in_progress_is_recorded_as_running_then_replaced_by_its_outcome() {
    let sim = start_sim(50, |_| {}).await;
    sim.add_fault(FaultRule {
        path: Some("/users".into()),
        fault: Fault::Slow { millis: 800 },
        after: 0,
        times: Some(1),
        probability: None,
    });
    let local = Local::new();
    let integration = integration_for(&sim, "acme", "UNUSED");
    let client = client_for(&sim, "test-token");
    let sync = local.sync(&client, &integration, &["users"], RunOptions::default());
    let peek = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        local.state.runs(Some("acme"), 10).await.unwrap()
    };
    let ((_, outcomes), during) = tokio::join!(sync, peek);
    assert_eq!(during.len(), 1);
    assert_eq!(during[0].state, RunState::Running);
    assert!(during[0].finished_at.is_none());
    assert_eq!(outcomes[0].record.state, RunState::Succeeded);
    let after = local.state.runs(Some("acme"), 10).await.unwrap();
    assert_eq!(after.len(), 1, "the running record was replaced: {after:?}");
    assert_eq!(after[0].state, RunState::Succeeded);
}

#[tokio::test]
async fn a_fanned_out_table_continues_across_many_invocations_without_duplicates() {
    let sim = start_sim(600, |_| {}).await;
    let local = Local::new();
    let integration = integration_for(&sim, "acme", "UNUSED");
    let client = client_for(&sim, "test-token");
    let run_id = capsule_core::integration::RunId::new(chrono::Utc::now());
    // Every invocation writes one batch of parents, then checkpoints.
    let invocations = local.run_in_slices(&client, &integration, "tracks", &run_id).await;
    assert!(invocations > 5, "{invocations} invocations");
    let rows = local.rows("acme", "tracks", &run_id);
    let ids: BTreeSet<i64> = rows.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(rows.len(), expected_counts(&sim)["tracks"]);
    assert_eq!(ids.len(), rows.len(), "no track written twice");
    let manifest = local.manifest("acme", "tracks", &run_id);
    assert_eq!(manifest["files"].as_array().unwrap().len(), local.run_files("acme", "tracks", &run_id).len());
    assert!(local.state.checkpoint("acme", "tracks", &run_id).await.unwrap().is_none());
    let runs = local.state.runs(Some("acme"), 2000).await.unwrap();
    assert_eq!(runs.iter().filter(|r| r.state == RunState::Continued).count(), invocations - 1);

    // Discovery (the /tasks listing) was read once across all those invocations: as often as a
    // run that never pauses reads it.
    let discovery_pages = sim.stats().count("GET /tasks");
    assert!(discovery_pages > 0);
    sim.reset_stats();
    let (_, once) = local.sync(&client, &integration, &["tracks"], RunOptions::default()).await;
    assert_eq!(once[0].record.state, RunState::Succeeded);
    assert_eq!(discovery_pages, sim.stats().count("GET /tasks"), "discovery is kept in the checkpoint, not redone");
}

#[tokio::test]
async fn a_deletion_on_an_earlier_page_while_paging_does_not_lose_a_later_record() {
    // Offset paging: deleting a page-1 record while page 2 is requested shifts every later
    // record back by one, so the first record of the old page 2 lands on page 1 — already read.
    let sim = start_sim(500, |_| {}).await;
    let local = Local::new();
    let integration = integration_for(&sim, "acme", "UNUSED");
    let client = client_for(&sim, "test-token");
    let first = sim.with_account(|a| *a.entity(capsule_sim::Entity::Parties).keys().next().unwrap());
    sim.add_fault(FaultRule {
        path: Some("/parties".into()),
        fault: Fault::Slow { millis: 400 },
        after: 1,
        times: Some(1),
        probability: None,
    });
    let sync = local.sync(&client, &integration, &["parties"], RunOptions::default());
    let delete = async {
        let t = std::time::Instant::now();
        while sim.stats().count("GET /parties") < 2 {
            assert!(t.elapsed() < Duration::from_secs(10), "page 2 was never requested");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        sim.mutate(Mutation { kind: MutationKind::Parties, op: MutationOp::Delete, count: 1, ids: vec![first] })
            .unwrap();
    };
    let ((run, outcomes), ()) = tokio::join!(sync, delete);
    assert_eq!(outcomes[0].record.state, RunState::Succeeded, "{:?}", outcomes[0].error);
    let written: BTreeSet<i64> =
        local.rows("acme", "parties", &run).iter().map(|r| r["id"].as_i64().unwrap()).collect();
    let alive: BTreeSet<i64> = sim.with_account(|a| a.entity(capsule_sim::Entity::Parties).keys().copied().collect());
    let missing: Vec<&i64> = alive.difference(&written).collect();
    assert!(missing.is_empty(), "records lost to the page shift: {missing:?}");
    let log =
        std::fs::read_to_string(local.output().join(format!("_meta/acme/logs/{run}/parties-001.ndjson"))).unwrap();
    assert!(log.contains("paging_shift_reread"), "{log}");
}

/// Entries have no deleted feed: the guard reads the pass's last page again and finds it
/// shorter when records were deleted from earlier pages meanwhile, then reads the listing again.
#[tokio::test]
async fn a_deletion_while_paging_a_listing_without_a_deleted_feed_loses_nothing() {
    let sim = start_sim(500, |_| {}).await;
    let local = Local::new();
    let integration = integration_for(&sim, "acme", "UNUSED");
    let client = client_for(&sim, "test-token");
    // A quiet run first: its requests are the pages plus the count after page 1.
    let (_, quiet) = local.sync(&client, &integration, &["entries"], RunOptions::default()).await;
    let pages = expected_counts(&sim)["entries"].div_ceil(100) as u64;
    let counting = quiet[0].record.requests.requests - pages;
    assert!(counting > 0 && counting <= 2 * pages.ilog2() as u64 + 2, "{counting} requests to count {pages} pages");
    sim.reset_stats();

    // The first entry `GET /entries` lists (newest first) is on page 1: delete it once page 2
    // has been asked for (after page 1 and the count).
    let first = sim.with_account(|a| a.newest_entries().next().unwrap());
    sim.add_fault(slow_pages("/entries", 300));
    let sync = local.sync(&client, &integration, &["entries"], RunOptions::default());
    let delete = async {
        while sim.stats().count("GET /entries") < 2 + counting {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        sim.mutate(Mutation { kind: MutationKind::Entries, op: MutationOp::Delete, count: 1, ids: vec![first] })
            .unwrap();
    };
    let ((run, outcomes), ()) = tokio::join!(sync, delete);
    assert_eq!(outcomes[0].record.state, RunState::Succeeded, "{:?}", outcomes[0].error);
    let written: BTreeSet<i64> =
        local.rows("acme", "entries", &run).iter().map(|r| r["id"].as_i64().unwrap()).collect();
    let alive: BTreeSet<i64> = sim.with_account(|a| a.entries.keys().copied().collect());
    let missing: Vec<&i64> = alive.difference(&written).collect();
    assert!(missing.is_empty(), "records lost to the page shift: {missing:?}");
    let log =
        std::fs::read_to_string(local.output().join(format!("_meta/acme/logs/{run}/entries-001.ndjson"))).unwrap();
    assert!(log.contains("paging_shift_reread"), "{log}");
}

/// Deletions that go on through every re-read: the run fails (retryable), logged, and its
/// bookmark stays, so the next run reads the window again; nothing is published.
#[tokio::test]
async fn pages_that_keep_shifting_fail_the_run_without_moving_the_bookmark() {
    let sim = start_sim(500, |_| {}).await;
    let local = Local::new();
    let integration = integration_for(&sim, "acme", "UNUSED");
    let client = client_for(&sim, "test-token");
    sim.add_fault(slow_pages("/entries", 100));
    let done = std::sync::atomic::AtomicBool::new(false);
    let sync = async {
        let result = local.sync(&client, &integration, &["entries"], RunOptions::default()).await;
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        result
    };
    let keep_deleting = async {
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            let newest = sim.with_account(|a| a.newest_entries().next().unwrap());
            sim.mutate(Mutation { kind: MutationKind::Entries, op: MutationOp::Delete, count: 1, ids: vec![newest] })
                .unwrap();
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    };
    let ((run, outcomes), ()) = tokio::join!(sync, keep_deleting);
    let outcome = &outcomes[0];
    assert_eq!(outcome.record.state, RunState::Failed);
    let error = outcome.error.as_ref().unwrap();
    assert!(error.is_retryable() && error.to_string().contains("kept being deleted"), "{error}");
    assert!(local.state.bookmark("acme", "entries").await.unwrap().is_none(), "the bookmark did not move");
    assert!(local.run_files("acme", "entries", &run).is_empty(), "nothing published");
    let log =
        std::fs::read_to_string(local.output().join(format!("_meta/acme/logs/{run}/entries-001.ndjson"))).unwrap();
    assert_eq!(log.matches("paging_shift_reread").count(), 2, "two re-reads first: {log}");
    assert!(log.contains("paging_shift_persisted"), "{log}");
}

/// A table's bookmark dropped by hand to backfill it (edits order backfills by count instead:
/// `bounds::a_backfill_ordered_during_a_first_load_takes_effect`); a run already in progress must
/// not commit its bookmark over that (the backfill would silently never happen). The run's
/// commit is refused, its files go, and the next run reads from the history start.
#[tokio::test]
async fn a_backfill_ordered_while_a_run_is_in_progress_is_not_skipped() {
    let sim = start_sim(300, |_| {}).await;
    let local = Local::new();
    let integration = integration_for(&sim, "acme", "UNUSED");
    let client = client_for(&sim, "test-token");
    let (_, first) = local.sync(&client, &integration, &["parties"], RunOptions::default()).await;
    assert_eq!(first[0].record.state, RunState::Succeeded);
    // Enough changes for the next incremental run to read several pages.
    sim.mutate_n(MutationKind::Parties, MutationOp::Update, 250).unwrap();
    sim.reset_stats();

    sim.add_fault(slow_pages("/parties", 200));
    let sync = local.sync(&client, &integration, &["parties"], RunOptions::default());
    let edit = async {
        let t = std::time::Instant::now();
        while sim.stats().count("GET /parties") < 2 {
            assert!(t.elapsed() < Duration::from_secs(10), "page 2 was never requested");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        local.state.delete_bookmark("acme", "parties").await.unwrap(); // dropped by hand
    };
    let ((during, outcomes), ()) = tokio::join!(sync, edit);
    let outcome = &outcomes[0];
    assert_eq!(outcome.record.state, RunState::Failed);
    assert!(matches!(outcome.error, Some(capsule_core::SyncError::BookmarkMoved(_))), "{:?}", outcome.error);
    assert!(local.state.bookmark("acme", "parties").await.unwrap().is_none(), "the backfill is still ordered");
    assert!(local.run_files("acme", "parties", &during).is_empty(), "the refused run published nothing");

    sim.clear_faults();
    let (backfill, outcomes) = local.sync(&client, &integration, &["parties"], RunOptions::default()).await;
    assert_eq!(outcomes[0].record.state, RunState::Succeeded);
    assert_eq!(outcomes[0].record.since, Some(integration.history_start), "read from the history start");
    assert_eq!(local.rows("acme", "parties", &backfill).len(), expected_counts(&sim)["parties"]);
}
