//! Exactly-once effect on Lambda: Lambda delivers every asynchronous event at least once, kills
//! an invocation at its deadline without cleanup, and retries a failed or killed event twice.
//! Through the serverless path (the real handlers behind a local Invoke endpoint, the simulator,
//! moto), these tests deliver every event twice, deliver a committed run's event again after the
//! account changed, and kill first invocations: every table commits once, nothing published is
//! ever rewritten or removed, and a loader that loads each published manifest once ends with the
//! account.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use capsule_aws::S3Sink;
use capsule_core::integration::RunId;
use capsule_core::ports::{LeaseOwner, ObjectSink, RunState, StateStore};
use capsule_sync_e2e::aws::LambdaBehaviour;
use capsule_sync_e2e::capsule_sim::{FaultRule, MutationKind, MutationOp};
use capsule_sync_e2e::loader::{ACCOUNT_TABLES, assert_current_state_is_the_account};
use capsule_sync_e2e::runtime::KillPlan;
use capsule_sync_e2e::serverless::*;
use capsule_sync_e2e::*;
use chrono::Utc;
use serde_json::{Value, json};

fn scheduled_tick() -> Value {
    json!({"version": "0", "source": "aws.events", "detail-type": "Scheduled Event", "detail": {}})
}

/// The output as loaders read it (the world's bucket under `warehouse/`).
fn sink(w: &World) -> S3Sink {
    S3Sink::new(w.stack.clients.s3.clone(), &w.stack.bucket, "warehouse", None)
}

/// Every published manifest and every file it lists, by key, with its bytes: what a loader that
/// loads each manifest once has loaded.
async fn published(sink: &dyn ObjectSink) -> BTreeMap<String, Vec<u8>> {
    let mut seen = BTreeMap::new();
    for key in sink.list("_meta/acme/runs/").await.unwrap() {
        let name = key.rsplit('/').next().unwrap();
        if !name.ends_with(".json") || name.ends_with(".pending.json") || name.ends_with(".redshift.json") {
            continue;
        }
        let manifest = sink.get(&key).await.unwrap().unwrap();
        let files: Value = serde_json::from_slice(&manifest).unwrap();
        for file in files["files"].as_array().unwrap() {
            let file = file["key"].as_str().unwrap();
            let bytes = sink.get(file).await.unwrap().unwrap_or_else(|| panic!("{key} lists {file}, which is missing"));
            seen.insert(file.to_string(), bytes.to_vec());
        }
        seen.insert(key, manifest.to_vec());
    }
    seen
}

/// A warehouse that loads after each sync with the DuckDB kit (each published manifest once,
/// through the kit's `__runs` table), from a copy of the bucket: DuckDB here cannot read S3.
struct Warehouse {
    copy: tempfile::TempDir,
    db: std::path::PathBuf,
}

impl Warehouse {
    fn new() -> Warehouse {
        let copy = tempfile::tempdir().unwrap();
        let db = copy.path().join("warehouse.duckdb");
        Warehouse { copy, db }
    }

    /// Copies what is published to S3 (new objects only: a loaded file is never fetched again),
    /// writes the DuckDB kit for the copy's location and runs it.
    async fn load(&self, w: &World, sink: &S3Sink) {
        let data = self.copy.path().join("data");
        for key in sink.list("").await.unwrap() {
            let path = data.join(&key);
            if !path.exists() {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, sink.get(&key).await.unwrap().unwrap()).unwrap();
            }
        }
        let integration = w.stack.state.get_integration("acme").await.unwrap().unwrap();
        let location = capsule_engine::warehouse::Location::new(data.to_str().unwrap()).unwrap();
        let kit = capsule_engine::warehouse::kit(capsule_engine::warehouse::Engine::DuckDb, &integration, &location);
        let script = self.copy.path().join("load.sql");
        std::fs::write(&script, &kit.unwrap()[0].body).unwrap();
        capsule_sync_e2e::duckdb::load(self.copy.path(), &self.db, &script);
    }

    /// Each table's current view (visible rows) against the account.
    fn assert_is_the_account(&self, w: &World, context: &str) {
        for (table, expected) in expected_counts(&w.sim) {
            let spec = capsule_core::catalog::table(&table).unwrap();
            let view = format!("acme_{table}_current");
            let visible = match spec.replication {
                capsule_core::catalog::Replication::Incremental => {
                    format!("SELECT count(*) FROM {view} WHERE NOT _restricted")
                }
                _ => format!("SELECT count(*) FROM {view}"),
            };
            let loaded = capsule_sync_e2e::duckdb::count(self.copy.path(), &self.db, &visible) as usize;
            assert_eq!(loaded, expected, "{context}: {view}");
        }
        let account: BTreeMap<i64, i64> = w.sim.with_account(|a| {
            let parties = a.entity(capsule_sync_e2e::capsule_sim::Entity::Parties);
            parties.iter().map(|(id, r)| (*id, r.updated.timestamp())).collect()
        });
        let rows = capsule_sync_e2e::duckdb::query(
            self.copy.path(),
            &self.db,
            "SELECT id, epoch(\"updatedAt\")::BIGINT AS updated FROM acme_parties_current WHERE NOT _restricted",
        );
        let loaded: BTreeMap<i64, i64> =
            rows.iter().map(|r| (r["id"].as_i64().unwrap(), r["updated"].as_i64().unwrap())).collect();
        assert_eq!(loaded, account, "{context}: parties (ids and updatedAt)");
    }
}

/// Nothing a loader loaded before was rewritten or removed since.
fn assert_unchanged(before: &BTreeMap<String, Vec<u8>>, now: &BTreeMap<String, Vec<u8>>, context: &str) {
    for (key, bytes) in before {
        match now.get(key) {
            None => panic!("{context}: {key} was published, and is gone"),
            Some(after) => assert!(after == bytes, "{context}: {key} was published, and was rewritten"),
        }
    }
}

/// Each (run, table) has at most one `succeeded` record.
async fn assert_committed_once(state: &dyn StateStore) -> usize {
    let mut succeeded: BTreeMap<(RunId, String), usize> = BTreeMap::new();
    for r in state.runs(Some("acme"), 10_000).await.unwrap() {
        if r.state == RunState::Succeeded {
            *succeeded.entry((r.run_id, r.table)).or_default() += 1;
        }
    }
    let twice: Vec<_> = succeeded.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "runs committed more than once: {twice:?}");
    succeeded.len()
}

/// The latest record of each table of `run` (newest first in the history).
async fn latest_states(state: &dyn StateStore, run: &str) -> BTreeMap<String, RunState> {
    let mut latest = BTreeMap::new();
    for r in state.runs(Some("acme"), 10_000).await.unwrap() {
        if r.run_id.as_str() == run {
            latest.entry(r.table.clone()).or_insert(r.state);
        }
    }
    latest
}

/// Every asynchronous event — dispatches, continuations, held tables — is delivered twice: some
/// copies while the first runs, some long after it committed, with the account changing between
/// syncs. Every table commits each run once, nothing published changes, no duplicate leaves a
/// `skipped` record as a table's latest state, and the loader's current state is the account.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_event_delivered_twice_commits_each_table_once() {
    let mut setup = Setup::new(300);
    setup.lambda = LambdaBehaviour {
        duplicate_after: [0, 300, 3000, 9000].map(Duration::from_millis).to_vec(),
        ..LambdaBehaviour::default()
    };
    let w = world_with(setup).await;
    let (state, sink) = (&w.stack.state, sink(&w));

    let first = w.invoke("orchestrator", scheduled_tick()).await;
    let run1 = first["dispatched"][0]["run_id"].as_str().unwrap().to_string();
    tick_until_done(&w, &run1, 22, Duration::from_secs(120)).await;
    w.lambda.wait_idle().await;
    assert_eq!(assert_committed_once(state).await, 22);
    let loaded = published(&sink).await;
    assert_current_state_is_the_account(&w.sim, state, &sink, "first sync").await;
    let warehouse = Warehouse::new();
    warehouse.load(&w, &sink).await;
    warehouse.assert_is_the_account(&w, "DuckDB after the first sync");

    // The account changes; a forced run; every event of it, and late copies of the first
    // sync's, arrive twice.
    w.sim.mutate_n(MutationKind::Parties, MutationOp::Update, 30).unwrap();
    w.sim.mutate_n(MutationKind::Parties, MutationOp::Create, 8).unwrap();
    w.sim.mutate_n(MutationKind::Parties, MutationOp::Delete, 3).unwrap();
    w.sim.mutate_n(MutationKind::Opportunities, MutationOp::Update, 10).unwrap();
    let forced = w.invoke("orchestrator", json!({"integration": "acme", "force": true})).await;
    let run2 = forced["dispatched"][0]["run_id"].as_str().unwrap().to_string();
    tick_until_done(&w, &run2, 22, Duration::from_secs(120)).await;
    w.lambda.wait_idle().await;

    assert_committed_once(state).await;
    assert_unchanged(&loaded, &published(&sink).await, "after the second sync");
    assert_current_state_is_the_account(&w.sim, state, &sink, "second sync").await;
    warehouse.load(&w, &sink).await;
    warehouse.assert_is_the_account(&w, "DuckDB after the second sync");
    for (table, latest) in latest_states(state, &run2).await {
        assert_eq!(latest, RunState::Succeeded, "{table}: the latest record of run {run2}");
    }
    for (table, latest) in latest_states(state, &run1).await {
        assert_eq!(latest, RunState::Succeeded, "{table}: the latest record of run {run1}");
    }
    let events = w.lambda.invocations();
    assert!(events >= 2 * 44, "every event was delivered twice: {events} invocations");
    assert!(w.lambda.errors().is_empty(), "{:?}", w.lambda.errors());
}

/// The loss the issue showed: run R1 commits and is loaded; parties change; R1's event arrives
/// again 70 "seconds" later. It is refused — no second record, no file touched, the bookmark
/// where it was — and run R2 reads every change since R1: the loader has the account.
#[tokio::test]
async fn a_late_copy_of_a_committed_event_changes_nothing() {
    let w = world(300).await;
    let (state, sink) = (&w.stack.state, sink(&w));
    let event = |run: &RunId, table: &str| json!({"integration": "acme", "table": table, "run_id": run});
    let r1 = RunId::new(Utc::now());
    for table in ["parties", "deleted_parties"] {
        assert_eq!(w.invoke("table-sync", event(&r1, table)).await["state"], "succeeded");
    }
    let loaded = published(&sink).await;
    let bookmark = state.bookmark("acme", "parties").await.unwrap().unwrap();
    w.sim.mutate_n(MutationKind::Parties, MutationOp::Update, 30).unwrap();
    w.sim.mutate_n(MutationKind::Parties, MutationOp::Create, 8).unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let late = w.invoke("table-sync", event(&r1, "parties")).await;
    assert_eq!(late["state"], "skipped", "{late}");
    assert!(late["error"].as_str().unwrap().contains("duplicate"), "{late}");
    assert_eq!(state.bookmark("acme", "parties").await.unwrap().unwrap(), bookmark, "the bookmark stayed");
    assert_unchanged(&loaded, &published(&sink).await, "after the late copy");
    let records: Vec<_> =
        state.runs(Some("acme"), 100).await.unwrap().into_iter().filter(|r| r.table == "parties").collect();
    assert_eq!(records.len(), 1, "no second record: {records:#?}");

    let r2 = RunId::new(Utc::now());
    for table in ["parties", "deleted_parties"] {
        assert_eq!(w.invoke("table-sync", event(&r2, table)).await["state"], "succeeded");
    }
    // An event of an older run arriving after a newer one committed is refused too.
    let stale = w.invoke("table-sync", event(&r1, "deleted_parties")).await;
    assert_eq!(stale["state"], "skipped", "{stale}");
    assert_unchanged(&loaded, &published(&sink).await, "after R2");
    let gone =
        capsule_sync_e2e::loader::load(&sink, state, "acme", "deleted_parties", loader::Settled::Yes).await.ids();
    let current = capsule_sync_e2e::loader::load(&sink, state, "acme", "parties", loader::Settled::Yes).await;
    let account: BTreeMap<i64, i64> = w.sim.with_account(|a| {
        a.entity(capsule_sync_e2e::capsule_sim::Entity::Parties)
            .iter()
            .map(|(id, r)| (*id, r.updated.timestamp()))
            .collect()
    });
    let loaded_now: BTreeMap<i64, i64> = current
        .current(&gone)
        .iter()
        .map(|(id, row)| {
            let at = chrono::DateTime::parse_from_rfc3339(row["updatedAt"].as_str().unwrap()).unwrap();
            (*id, at.timestamp())
        })
        .collect();
    assert_eq!(loaded_now, account, "no party stale or missing");
}

/// A first invocation killed before its first checkpoint (one request outlasts the function's
/// time) is taken over by Lambda's own retry: its lease never outlives the invocation's kill
/// time, so the retry a moment later finds it free, and redoes the run under the same run id —
/// although the lease TTL is the default five minutes.
#[tokio::test]
async fn a_killed_first_invocation_is_redone_by_lambdas_retry() {
    let run = RunId::new(Utc::now());
    let w = killed_first_world(&run, vec![Duration::from_millis(4000), Duration::from_millis(4000)]).await;
    let event = json!({"integration": "acme", "table": "parties", "run_id": run});
    assert_eq!(w.send_event("table-sync", &event).await, 202);
    w.lambda.wait_idle().await;
    assert_redone(&w, &run).await;
}

/// Without Lambda's retries, the orchestrator's next tick redoes a first invocation that was
/// killed before its first checkpoint, under the same run id (it is not recorded failed and
/// left for tomorrow's run).
#[tokio::test]
async fn a_first_invocation_stranded_before_its_checkpoint_is_redone_by_the_tick() {
    let run = RunId::new(Utc::now());
    let w = killed_first_world(&run, Vec::new()).await;
    let event = json!({"integration": "acme", "table": "parties", "run_id": run});
    assert_eq!(w.send_event("table-sync", &event).await, 202);
    w.lambda.wait_idle().await;
    assert!(state_of(&w, &run).await != Some(RunState::Succeeded), "killed");
    tokio::time::sleep(Duration::from_millis(1500)).await; // past the kill time, its grace, a whole second
    let summary = w.invoke("orchestrator", scheduled_tick()).await;
    let resumed = &summary["resumed"][0];
    assert_eq!((resumed["table"].as_str(), resumed["invocation"].as_u64()), (Some("parties"), Some(1)), "{summary}");
    w.lambda.wait_idle().await;
    // Continuations left to the tick (none should be, but a busy machine may need one).
    for _ in 0..10 {
        if state_of(&w, &run).await == Some(RunState::Succeeded) {
            break;
        }
        w.invoke("orchestrator", scheduled_tick()).await;
        w.lambda.wait_idle().await;
    }
    assert_redone(&w, &run).await;
}

/// A world whose table-sync is killed at 3 s (and told so), with the first `/parties` request
/// taking 5 s once: the first invocation of `run` dies before its first checkpoint. The
/// integration was dispatched just now (a tick sends no other run).
async fn killed_first_world(run: &RunId, retry_delays: Vec<Duration>) -> World {
    let mut setup = Setup::new(300);
    setup.remaining = Duration::from_secs(3);
    setup.run.kill_grace = Duration::from_millis(200);
    setup.lambda = LambdaBehaviour { timeout: Some(Duration::from_secs(3)), retry_delays, ..Default::default() };
    let w = world_with(setup).await;
    let dispatched = capsule_core::ports::DispatchRecord {
        integration: "acme".into(),
        run_id: run.clone(),
        tables: vec!["parties".into()],
        dispatched_at: Utc::now(),
        failed: Vec::new(),
        held: Vec::new(),
        started_by: capsule_core::ports::StartedBy::Schedule,
    };
    w.stack.state.record_dispatch(&dispatched).await.unwrap();
    w.sim.add_fault(FaultRule { times: Some(1), ..slow_pages("/parties", 5000) });
    w
}

async fn state_of(w: &World, run: &RunId) -> Option<RunState> {
    latest_states(&w.stack.state, run.as_str()).await.get("parties").copied()
}

/// The run committed once under its own run id, with one record (the redo replaced the killed
/// attempt's `running` one), and its rows are every party once.
async fn assert_redone(w: &World, run: &RunId) {
    let state = &w.stack.state;
    assert_eq!(state_of(w, run).await, Some(RunState::Succeeded), "{:#?}", state.runs(Some("acme"), 50).await.unwrap());
    assert_eq!(state.bookmark("acme", "parties").await.unwrap().unwrap().run_id, *run);
    let runs = state.runs(Some("acme"), 100).await.unwrap();
    let parties: Vec<_> = runs.iter().filter(|r| r.table == "parties").map(|r| r.state).collect();
    assert_eq!(parties[0], RunState::Succeeded);
    assert!(!parties.contains(&RunState::Failed), "the killed attempt was redone, not recorded failed: {parties:?}");
    assert!(!parties.contains(&RunState::Running), "its `running` record was replaced: {parties:?}");
    assert_committed_once(state).await;
    let rows = manifest_rows(w, "parties", run.as_str()).await;
    let ids: BTreeSet<i64> = rows.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(ids.len(), expected_counts(&w.sim)["parties"]);
}

/// One integration whose state cannot be read (a corrupt lease item) does not stop the tick:
/// it is reported with why, and every other integration is dispatched.
#[tokio::test]
async fn one_broken_integration_does_not_stop_the_tick() {
    let w = world(50).await;
    let state = &w.stack.state;
    let mut broken = state.get_integration("acme").await.unwrap().unwrap();
    broken.name = "broken".parse().unwrap();
    state.create_integration(&broken).await.unwrap();
    w.stack
        .clients
        .dynamodb
        .put_item()
        .table_name(&w.stack.table)
        .item("pk", aws_sdk_dynamodb::types::AttributeValue::S("INT#broken".into()))
        .item("sk", aws_sdk_dynamodb::types::AttributeValue::S("LEASE#parties".into()))
        .item("doc", aws_sdk_dynamodb::types::AttributeValue::S("not a lease".into()))
        .send()
        .await
        .unwrap();
    let summary = w.invoke("orchestrator", scheduled_tick()).await;
    assert_eq!(summary["failed"][0]["integration"], "broken", "{summary}");
    assert!(summary["failed"][0]["reason"].as_str().unwrap().contains("not valid"), "{summary}");
    let dispatched: Vec<&str> =
        summary["dispatched"].as_array().unwrap().iter().map(|d| d["integration"].as_str().unwrap()).collect();
    assert_eq!(dispatched, ["acme"], "{summary}");
    w.lambda.wait_idle().await;
}

/// The stress setting below the template's minimum timeout that proves the wait bound: 10-second
/// invocations (killed then, like Lambda's), Capsule allowing 40 requests per 15-second window,
/// a 2,000-party account, and table-sync's production client settings (it would wait up to 20 s
/// in place). A window wait outlives every invocation, so only parking can get through; killed
/// invocations are retried by Lambda (scaled: 1 and 2 s) and healed by the ticks. All 22 tables
/// load, every row once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_2000_party_account_loads_with_10_second_timeouts_and_15_second_windows() {
    const LIMIT: u32 = 40;
    const WINDOW: Duration = Duration::from_secs(15);
    let mut setup = Setup::new(2000);
    setup.rate = Some((LIMIT, WINDOW));
    setup.remaining = Duration::from_secs(10);
    setup.client.budget.window = WINDOW;
    setup.client.budget.default_limit = LIMIT;
    setup.client.max_inline_wait = Duration::from_secs(20);
    setup.client.outage_pause = Some(Duration::from_secs(5));
    setup.run.kill_grace = Duration::from_secs(1);
    setup.lambda = LambdaBehaviour {
        timeout: Some(Duration::from_secs(10)),
        retry_delays: vec![Duration::from_secs(1), Duration::from_secs(2)],
        ..LambdaBehaviour::default()
    };
    let w = world_with(setup).await;
    let started = std::time::Instant::now();
    let summary = w.invoke("orchestrator", scheduled_tick()).await;
    let run = summary["dispatched"][0]["run_id"].as_str().unwrap().to_string();
    let ticks = tick_until_done(&w, &run, 22, Duration::from_secs(420)).await;
    let latest = latest_states(&w.stack.state, &run).await;
    assert_eq!(latest.len(), 22);
    for (table, state) in &latest {
        assert_eq!(*state, RunState::Succeeded, "{table}");
    }
    for (table, count) in expected_counts(&w.sim) {
        let rows = manifest_rows(&w, &table, &run).await;
        assert_eq!(rows.len(), count, "{table}: every row once");
    }
    let windows = w.sim.rate_windows();
    assert!(windows.iter().all(|&n| n <= 36 + 2), "every window within the share: {windows:?}");
    let killed = w.lambda.durations().iter().filter(|d| **d >= Duration::from_secs(10)).count();
    println!(
        "stress: 22/22 tables, {} requests in {} windows, {} invocations ({killed} killed), {ticks} ticks, {:.0} s",
        windows.iter().sum::<u32>(),
        windows.len(),
        w.lambda.invocations(),
        started.elapsed().as_secs_f64()
    );
}

/// The real table-sync bootstrap, one process per invocation behind the Runtime API, killed with
/// SIGKILL at random instants of first invocations and continuations (and at its 5 s deadline),
/// retried by Lambda 6 and 12 "minutes" later (scaled to seconds), while the orchestrator ticks:
/// every table succeeds within a bounded time, nothing ends `failed`, nothing is lost, and each
/// table commits once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bootstrap_processes_killed_at_random_instants_lose_nothing() {
    let plan = Arc::new(KillPlan::new(20261207, 0.6, (Duration::from_millis(100), Duration::from_millis(2000)), 10));
    let mut setup = Setup::new(2000);
    setup.remaining = Duration::from_secs(5);
    setup.bootstrap = Some(plan.clone());
    setup.lambda = LambdaBehaviour {
        retry_delays: vec![Duration::from_secs(6), Duration::from_secs(12)],
        ..LambdaBehaviour::default()
    };
    let w = world_with(setup).await;
    let mut acme = w.stack.state.get_integration("acme").await.unwrap().unwrap();
    acme.tables = ACCOUNT_TABLES.map(String::from).to_vec().into();
    w.stack.state.update_integration(&acme).await.unwrap();
    // Slow listings: the big tables need several invocations, so continuations get killed too.
    for path in ["/parties", "/opportunities", "/kases", "/tasks", "/entries"] {
        w.sim.add_fault(slow_pages(path, 200));
    }

    let summary = w.invoke("orchestrator", scheduled_tick()).await;
    let run = summary["dispatched"][0]["run_id"].as_str().unwrap().to_string();
    let started = std::time::Instant::now();
    let ticks = tick_until_settled(&w, &run, ACCOUNT_TABLES.len(), Duration::from_secs(300)).await;
    let kills = plan.kills.load(std::sync::atomic::Ordering::SeqCst);
    assert!(kills >= 4, "processes were killed: {kills}");
    let history = w.stack.state.runs(Some("acme"), 1000).await.unwrap();
    for (table, state) in latest_states(&w.stack.state, &run).await {
        let errors: Vec<_> = history.iter().filter(|r| r.table == table).filter_map(|r| r.error.as_ref()).collect();
        assert_eq!(state, RunState::Succeeded, "{table}: nothing is failed that could be redone: {errors:#?}");
    }
    assert_committed_once(&w.stack.state).await;
    assert_current_state_is_the_account(&w.sim, &w.stack.state, &sink(&w), "after the kills").await;
    println!(
        "bootstrap kills: {} tables succeeded, {kills} SIGKILLs, {} invocations, {ticks} ticks, {:.0} s",
        ACCOUNT_TABLES.len(),
        w.lambda.invocations(),
        started.elapsed().as_secs_f64()
    );
}

/// Ticks (every 300 ms, as a scaled-down schedule) until every table of `run` has a final latest
/// record, no lease or checkpoint is left and nothing is in flight; returns the ticks used.
/// (Counting final records would stop early: a stranded invocation's recovery records it
/// `failed` while its run goes on.)
async fn tick_until_settled(w: &World, run: &str, tables: usize, limit: Duration) -> usize {
    let started = std::time::Instant::now();
    let mut ticks = 0;
    loop {
        let latest = latest_states(&w.stack.state, run).await;
        let settled =
            latest.len() == tables && latest.values().all(|s| matches!(s, RunState::Succeeded | RunState::Failed));
        if settled && w.stack.state.table_states("acme").await.unwrap().is_empty() && w.lambda.in_flight() == 0 {
            return ticks;
        }
        assert!(started.elapsed() < limit, "not settled after {limit:?}: {latest:?}");
        w.invoke("orchestrator", scheduled_tick()).await;
        ticks += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A run in progress for longer than the deployment allows (`CAPSULE_RUN_OVERDUE_HOURS`, here
/// scaled to a second) is reported by every tick: an error log line `run_overdue` (which the
/// stack's `OverdueRunsAlarm` counts) and an `overdue` entry in the tick's summary.
#[tokio::test]
async fn a_run_in_progress_too_long_is_reported_overdue() {
    let mut setup = Setup::new(300);
    setup.overdue_after = Duration::from_secs(1);
    let w = world_with(setup).await;
    let state = &w.stack.state;
    let run = RunId::new(Utc::now());
    let lease = capsule_core::ports::Lease::first(
        "acme",
        "parties",
        LeaseOwner::draw(&run),
        Utc::now(),
        Duration::from_secs(600),
    );
    state.acquire_lease(&lease).await.unwrap();
    let summary = w.invoke("orchestrator", scheduled_tick()).await;
    assert!(summary.get("overdue").is_none(), "not yet: {summary}");
    w.lambda.wait_idle().await; // the sync's other tables end (parties is held by the slow run)
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let summary = w.invoke("orchestrator", scheduled_tick()).await;
    let overdue = summary["overdue"].as_array().unwrap();
    assert_eq!(overdue.len(), 1, "{summary}");
    assert_eq!((overdue[0]["integration"].as_str(), overdue[0]["table"].as_str()), (Some("acme"), Some("parties")));
    assert_eq!(overdue[0]["run_id"], json!(run));
}
