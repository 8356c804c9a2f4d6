//! The serverless path end to end: the orchestrator handler invoked through the Lambda Invoke
//! API (real SDK over HTTP, a local endpoint running the real handlers), table-sync invocations
//! dispatched with `InvocationType::Event`, the Capsule simulator, and moto's S3, DynamoDB and
//! Secrets Manager.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aws_sdk_lambda::primitives::Blob;
use capsule_core::integration::{Integration, IntegrationStatus, RunId, TokenSource};
use capsule_core::ports::{RunState, StartedBy, StateStore};
use capsule_engine::engine::RunOptions;
use capsule_sync_e2e::aws::create_secret_named;
use capsule_sync_e2e::capsule_sim::{Fault, FaultRule, MutationKind, MutationOp};
use capsule_sync_e2e::serverless::*;
use capsule_sync_e2e::*;
use chrono::Utc;
use serde_json::{Value, json};

#[tokio::test]
async fn orchestrator_dispatches_every_table_and_a_second_run_is_incremental() {
    let w = world(300).await;
    let scheduled = json!({"version": "0", "source": "aws.events", "detail-type": "Scheduled Event", "detail": {}});
    let summary = w.invoke("orchestrator", scheduled.clone()).await;
    let dispatched = &summary["dispatched"][0];
    assert_eq!(dispatched["integration"], "acme");
    assert_eq!(dispatched["tables"].as_array().unwrap().len(), 20);
    assert!(dispatched["failed"].as_array().unwrap().is_empty());
    // Employees wait for parties' run and tracks for tasks', to read their snapshots rather than
    // `/parties` and `/tasks` again.
    assert_eq!(dispatched["held"], json!([["employees", "parties"], ["tracks", "tasks"]]));
    let run1 = dispatched["run_id"].as_str().unwrap().to_string();
    w.lambda.wait_idle().await;
    assert!(w.stack.state.bookmark("acme", "tracks").await.unwrap().is_none(), "not sent while held");
    let job = &capsule_engine::jobs::jobs(&w.stack.state, "acme", 1).await.unwrap()[0];
    assert_eq!((job.to_send.join(","), job.finished_at), ("employees,tracks".to_string(), None), "{job:?}");
    // The next tick sends them under the same run id (the integration is not due again).
    let summary = w.invoke("orchestrator", scheduled.clone()).await;
    let sent =
        json!([{"integration": "acme", "run_id": run1, "tables": ["employees", "tracks"], "failed": [], "held": []}]);
    assert_eq!(summary["dispatched"], sent);
    w.lambda.wait_idle().await;
    assert!(w.lambda.errors().is_empty(), "{:?}", w.lambda.errors());
    assert_eq!(w.lambda.invocations(), 1 + 20 + 1 + 2);
    let job = &capsule_engine::jobs::jobs(&w.stack.state, "acme", 1).await.unwrap()[0];
    assert!(job.to_send.is_empty() && job.finished_at.is_some() && job.tables.len() == 22, "{job:?}");
    let (tasks, tracks) = (w.manifest("tasks", &run1).await, w.manifest("tracks", &run1).await);
    assert_eq!(tracks["discovered_at"], tasks["extracted_at"], "tracks read the tasks snapshot");
    assert_eq!(w.sim.stats().count("GET /tasks"), tasks["requests"].as_u64().unwrap(), "read once");
    let (parties, employees) = (w.manifest("parties", &run1).await, w.manifest("employees", &run1).await);
    assert_eq!((employees["requests"].as_u64(), &employees["extracted_at"]), (Some(0), &parties["extracted_at"]));

    let expected = expected_counts(&w.sim);
    let state = &w.stack.state;
    for (table, count) in &expected {
        assert_eq!(w.rows(table, &run1).await.len(), *count, "{table}");
        let manifest = w.manifest(table, &run1).await;
        assert_eq!(manifest["rows"].as_u64().unwrap() as usize, *count);
        let bookmark = state.bookmark("acme", table).await.unwrap().expect("bookmark");
        assert_eq!(bookmark.run_id.as_str(), run1);
    }
    let runs = state.runs(Some("acme"), 100).await.unwrap();
    assert_eq!(runs.len(), 22, "one record per table; the running ones were replaced");
    assert!(runs.iter().all(|r| r.state == RunState::Succeeded && r.run_id.as_str() == run1));
    assert_eq!(state.get_integration("acme").await.unwrap().unwrap().status, IntegrationStatus::Active);
    let keys = w.stack.keys().await;
    for kit in [
        "duckdb/load.sql",
        "bigquery/parties.schema.json",
        "snowflake/load.sql",
        "redshift/load.sh",
        "athena/setup.sql",
    ] {
        assert!(keys.iter().any(|k| *k == format!("warehouse/_meta/acme/warehouse/{kit}")), "{kit} written");
    }
    // Beside each published manifest, its files as a Redshift COPY manifest (full s3:// URLs).
    let manifest = w.manifest("parties", &run1).await;
    let redshift: Value = serde_json::from_slice(
        &w.stack.object(&format!("warehouse/_meta/acme/runs/{run1}/parties.redshift.json")).await,
    )
    .unwrap();
    let urls: Vec<&str> = redshift["entries"].as_array().unwrap().iter().map(|e| e["url"].as_str().unwrap()).collect();
    let files: Vec<String> = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| format!("s3://{}/warehouse/{}", w.stack.bucket, f["key"].as_str().unwrap()))
        .collect();
    assert_eq!(urls, files);
    assert!(redshift["entries"].as_array().unwrap().iter().all(|e| e["mandatory"] == Value::Bool(true)));
    assert!(keys.iter().filter(|k| k.starts_with("warehouse/acme/")).all(|k| k.ends_with(".ndjson.gz")));

    // Not due again for a day: the due index does not even name it to the tick.
    let summary = w.invoke("orchestrator", scheduled).await;
    assert!(summary["dispatched"].as_array().unwrap().is_empty());
    assert!(summary.get("due").is_none(), "{summary}");
    let wake = w.stack.state.wake("acme").await.unwrap().unwrap().at.unwrap();
    assert!(wake > Utc::now(), "looked at next at {wake}");

    // Changes, then a forced manual run of three tables.
    let updated = w.sim.mutate_n(MutationKind::Parties, MutationOp::Update, 4).unwrap().ids;
    let deleted = w.sim.mutate_n(MutationKind::Parties, MutationOp::Delete, 2).unwrap().ids;
    let manual = json!({"integration": "acme", "tables": ["parties", "deleted_parties", "users"], "force": true});
    let summary = w.invoke("orchestrator", manual).await;
    let run2 = summary["dispatched"][0]["run_id"].as_str().unwrap().to_string();
    w.lambda.wait_idle().await;
    let ids = |rows: Vec<serde_json::Map<String, Value>>| -> BTreeSet<i64> {
        rows.iter().map(|r| r["id"].as_i64().unwrap()).collect()
    };
    let changed: BTreeSet<i64> = updated.iter().filter(|id| !deleted.contains(id)).copied().collect();
    assert_eq!(ids(w.rows("parties", &run2).await), changed);
    assert_eq!(ids(w.rows("deleted_parties", &run2).await), deleted.iter().copied().collect());
    assert_eq!(w.rows("users", &run2).await.len(), expected["users"], "full tables are full snapshots");
    let manifest = w.manifest("parties", &run2).await;
    assert_eq!(manifest["bookmark_before"], w.manifest("parties", &run1).await["extracted_at"]);

    // A paused integration is never dispatched, even when forced.
    let mut acme = state.get_integration("acme").await.unwrap().unwrap();
    acme.status = IntegrationStatus::Paused;
    state.update_integration(&acme).await.unwrap();
    let summary = w.invoke("orchestrator", json!({"integration": "acme", "force": true})).await;
    assert_eq!(summary["skipped"][0]["reason"], "paused");
}

#[tokio::test]
async fn a_run_continues_itself_across_a_small_time_budget() {
    let w = world(500).await;
    // Every page of /entries takes 600 ms, and each invocation may work for 1 second: a few
    // pages per invocation, then a checkpoint and a re-invocation of the same run.
    w.sim.add_fault(slow_pages("/entries", 600));
    let run_id = RunId::new(Utc::now());
    let event = json!({"integration": "acme", "table": "entries", "run_id": run_id, "max_seconds": 1});
    assert_eq!(w.send_event("table-sync", &event).await, 202);
    w.lambda.wait_idle().await;
    assert!(w.lambda.errors().is_empty(), "{:?}", w.lambda.errors());

    let state = &w.stack.state;
    let runs = state.runs(Some("acme"), 50).await.unwrap();
    let states: BTreeMap<String, usize> = runs.iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(format!("{:?}", r.state)).or_default() += 1;
        m
    });
    let continued = states.get("Continued").copied().unwrap_or(0);
    assert!(!states.contains_key("Running"), "running records are replaced: {states:?}");
    assert!(continued >= 2, "several continuations: {states:?}");
    assert_eq!(states.get("Succeeded"), Some(&1));
    assert_eq!(w.lambda.invocations(), continued + 1, "one invocation per slice of the run");
    assert!(runs.iter().all(|r| r.run_id == run_id), "one run id throughout");

    let rows = w.rows("entries", run_id.as_str()).await;
    assert_eq!(rows.len(), 500);
    let unique: BTreeSet<i64> = rows.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(unique.len(), 500, "nothing read twice, nothing skipped across continuations");
    let manifest = w.manifest("entries", run_id.as_str()).await;
    assert_eq!(manifest["files"].as_array().unwrap().len(), continued + 1, "a part per invocation");
    // Every request of every invocation: the five pages and the count of the listing (the
    // paging-shift check), as the simulator saw them.
    let requests = w.sim.stats().count("GET /entries");
    assert!(requests > 5, "{requests}");
    assert_eq!(manifest["requests"].as_u64().unwrap(), requests, "requests counted across invocations");
    let bookmark = state.bookmark("acme", "entries").await.unwrap().unwrap();
    assert_eq!(bookmark.run_id, run_id);
    assert!(state.checkpoint("acme", "entries", &run_id).await.unwrap().is_none());
}

#[tokio::test]
async fn bad_events_and_unknown_names_fail_clearly() {
    let w = world(20).await;
    for (event, needle) in [
        (json!({"integration": "acme", "tabels": ["parties"]}), "tabels"),
        (json!({"integration": "nobody"}), "no integration named `nobody`"),
        (json!({"integration": "acme", "tables": ["partys"]}), "unknown table `partys`"),
    ] {
        let out =
            w.client.invoke().function_name("orchestrator").payload(Blob::new(event.to_string())).send().await.unwrap();
        assert!(out.function_error().is_some(), "{event}");
        let body = String::from_utf8_lossy(out.payload().unwrap().as_ref()).to_string();
        assert!(body.contains(needle) && body.contains("ConfigError"), "{body}");
    }
    let deps_state = &w.stack.state;
    let bad = json!({"integration": "acme", "table": "parties"});
    let out = w.client.invoke().function_name("table-sync").payload(Blob::new(bad.to_string())).send().await.unwrap();
    assert!(String::from_utf8_lossy(out.payload().unwrap().as_ref()).contains("run_id"));
    assert!(deps_state.runs(Some("acme"), 5).await.unwrap().is_empty(), "no state changed");
}

/// A first load that needs many rate-limit windows, through the serverless path with Capsule's
/// limit scaled down to 40 requests per 4-second window and 3-second invocations.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_first_load_spans_rate_limit_windows_without_sleeping_in_lambda() {
    const LIMIT: u32 = 40;
    const WINDOW: Duration = Duration::from_secs(4);
    let mut setup = Setup::new(1500);
    setup.rate = Some((LIMIT, WINDOW));
    setup.remaining = Duration::from_secs(3);
    setup.client.budget.window = WINDOW;
    setup.client.budget.default_limit = LIMIT;
    setup.client.max_inline_wait = Duration::from_millis(500);
    // Killed like Lambda if an invocation overruns: 10 s, as a first sync's 20 first invocations
    // at once against moto on two cores took over 6 s (the kill proves nothing about waits here:
    // `exactly_once::a_2000_party_account_loads_with_10_second_timeouts_and_15_second_windows`
    // and the `bounds` tests prove waits end before the deadline). A 4 s lease so a killed
    // invocation's run is healed by the next ticks rather than after 5 minutes.
    setup.lambda.timeout = Some(Duration::from_secs(10));
    setup.run.lease_ttl = Duration::from_secs(4);
    let w = world_with(setup).await;

    let scheduled = json!({"version": "0", "source": "aws.events", "detail-type": "Scheduled Event", "detail": {}});
    let summary = w.invoke("orchestrator", scheduled).await;
    let run_id = summary["dispatched"][0]["run_id"].as_str().unwrap().to_string();
    let ticks = tick_until_done(&w, &run_id, 22, Duration::from_secs(240)).await;

    let runs = w.stack.state.runs(Some("acme"), 2000).await.unwrap();
    let finals: Vec<_> =
        runs.iter().filter(|r| r.run_id.as_str() == run_id && r.state != RunState::Continued).collect();
    let states: Vec<String> = finals.iter().map(|r| format!("{} {} {:?}", r.table, r.state, r.error)).collect();
    assert_eq!(finals.len(), 22, "one final record per table: {states:#?}");
    assert!(finals.iter().all(|r| r.state == RunState::Succeeded), "{finals:#?}");
    let waits = runs.iter().filter(|r| r.state == RunState::Continued && r.resumes_at.is_some()).count();
    assert!(waits > 0, "runs stopped for the window instead of sleeping");

    // Every window stayed within the share: 40 less the 10 % reserve, plus a margin of 2 for
    // claims made on a count a response was about to correct.
    let windows = w.sim.rate_windows();
    let requests: u32 = windows.iter().sum();
    let minimum = requests.div_ceil(36);
    // ~150 requests: tracks, held until tasks' run ended, find their parents in its snapshot.
    assert!(minimum >= 4 && windows.len() as u32 >= minimum, "the load spans windows: {windows:?}");
    let (tasks, tracks) = (w.manifest("tasks", &run_id).await, w.manifest("tracks", &run_id).await);
    assert_eq!(tracks["discovered_at"], tasks["extracted_at"], "tracks read the tasks snapshot");
    assert!(windows.iter().all(|&n| n <= 36 + 2), "{windows:?}");
    let rejected = w.sim.stats().by_status.get(&429).copied().unwrap_or(0);
    assert!(rejected <= 3, "{rejected} requests were refused with 429");
    // No invocation was killed.
    let (longest, what) = w.lambda.slowest().unwrap();
    assert!(longest < Duration::from_secs(10), "an invocation ran {longest:?}: {what}");
    assert!(w.lambda.errors().is_empty(), "{:?}", w.lambda.errors());

    // Every row landed exactly once per run, as the manifests list the files.
    for (table, count) in expected_counts(&w.sim) {
        let rows = manifest_rows(&w, &table, &run_id).await;
        assert_eq!(rows.len(), count, "{table}");
        let key = capsule_core::catalog::table(&table).unwrap().primary_key;
        let keys: BTreeSet<String> =
            rows.iter().map(|r| key.iter().map(|k| r[*k].to_string()).collect::<Vec<_>>().join("/")).collect();
        assert_eq!(keys.len(), count, "{table}: no row twice");
    }
    println!(
        "rate_limit_windows: {requests} requests in {} windows (minimum {minimum}), {} invocations, {ticks} ticks, \
         {rejected} 429s, windows {windows:?}",
        windows.len(),
        w.lambda.invocations()
    );
}

/// Stops `table`'s run after its first invocation (a 1 s budget with slow pages), and returns
/// the event of its continuation as the checkpoint waits for it.
#[tokio::test]
async fn entries_in_recent_window_mode_carry_older_rows_over_from_s3() {
    let w = world(500).await;
    let state = &w.stack.state;
    let mut integration = state.get_integration("acme").await.unwrap().unwrap();
    integration.recent_window = Some(capsule_core::integration::RecentWindow { full_refresh_days: 7 });
    state.update_integration(&integration).await.unwrap();
    let sync = |run_id: &RunId| json!({"integration": "acme", "table": "entries", "run_id": run_id});
    let first = RunId::new(Utc::now());
    assert_eq!(w.invoke("table-sync", sync(&first)).await["state"], "succeeded");
    let created = w.sim.mutate_n(MutationKind::Entries, MutationOp::Create, 30).unwrap().ids;

    let second = RunId::new(Utc::now());
    let out = w.invoke("table-sync", sync(&second)).await;
    assert_eq!(out["state"], "succeeded", "{out}");
    let manifest = w.manifest("entries", second.as_str()).await;
    assert_eq!(manifest["recent_window"]["base_run_id"], first.as_str(), "{manifest}");
    assert_eq!(manifest["recent_window"]["carried_rows"], 500, "every generated entry is older than the window");
    assert_eq!(manifest["requests"], 1, "one page of new entries");
    let rows = manifest_rows(&w, "entries", second.as_str()).await;
    let ids: BTreeSet<i64> = rows.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(ids.len(), rows.len(), "one row per entry");
    let backdated = created.iter().filter(|id| !ids.contains(id)).count();
    assert_eq!(rows.len(), 500 + created.len() - backdated, "the old snapshot plus the new entries dated now");
    assert!(backdated < created.len() / 2, "{backdated} of {} back-dated", created.len());
}

async fn a_parked_run(w: &World, table: &str) -> (RunId, Value) {
    w.sim.add_fault(slow_pages(&format!("/{table}"), 600));
    let run_id = RunId::new(Utc::now());
    let state = &w.stack.state;
    let integration = state.get_integration("acme").await.unwrap().unwrap();
    let client = capsule_sync_e2e::client_for(&w.sim, "test-token");
    let run = capsule_engine::engine::TableRun {
        client: &client,
        deps: capsule_engine::engine::RunPorts { state, sink: &w.stack.sink },
        integration: &integration,
        table: capsule_core::catalog::table(table).unwrap(),
        run_id: &run_id,
        options: RunOptions::default(),
        progress: None,
        deadline: Some(std::time::Instant::now() + Duration::from_secs(1)),
        kill_at: None,
        invocation: capsule_engine::lifecycle::Invocation::First,
    };
    assert_eq!(run.run().await.record.state, RunState::Continued);
    w.sim.clear_faults();
    let next = state.checkpoint("acme", table, &run_id).await.unwrap().unwrap().next_invocation();
    let event = json!({"integration": "acme", "table": table, "run_id": run_id, "continuation": true, "seq": next});
    (run_id, event)
}

#[tokio::test]
async fn a_continuation_delivered_twice_runs_once() {
    let w = world(500).await;
    let (run_id, event) = a_parked_run(&w, "entries").await;
    // The same event twice at once (at-least-once delivery), then once more after the run ended.
    for _ in 0..2 {
        assert_eq!(w.send_event("table-sync", &event).await, 202);
    }
    w.lambda.wait_idle().await;
    let late = w.invoke("table-sync", event.clone()).await;
    assert_eq!(late["state"], "skipped", "{late}");
    assert!(late["error"].as_str().unwrap().contains("no checkpoint"), "{late}");

    let runs = w.stack.state.runs(Some("acme"), 100).await.unwrap();
    let succeeded = runs.iter().filter(|r| r.run_id == run_id && r.state == RunState::Succeeded).count();
    assert_eq!(succeeded, 1);
    assert!(runs.iter().all(|r| r.state != RunState::Skipped), "a refused duplicate writes no record");
    let rows = manifest_rows(&w, "entries", run_id.as_str()).await;
    let ids: BTreeSet<i64> = rows.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!((rows.len(), ids.len()), (500, 500), "every row once");
    let files = w.stack.keys().await.into_iter().filter(|k| k.contains(&format!("/run={run_id}/"))).count();
    assert_eq!(files, w.manifest("entries", run_id.as_str()).await["files"].as_array().unwrap().len());
}

#[tokio::test]
async fn a_continuation_whose_invoke_fails_is_resumed_by_the_next_tick() {
    let w = world(500).await;
    let (run_id, _event) = a_parked_run(&w, "entries").await;
    // The invoke that should have continued the run never happened (the Invoke API failed):
    // nothing is running, the lease waits parked. The orchestrator's tick finds it.
    let scheduled = json!({"version": "0", "source": "aws.events", "detail-type": "Scheduled Event", "detail": {}});
    let summary = w.invoke("orchestrator", scheduled).await;
    let resumed = summary["resumed"].as_array().unwrap();
    assert_eq!(resumed.len(), 1, "{summary}");
    assert_eq!(resumed[0]["table"], "entries");
    assert_eq!(resumed[0]["invocation"], 2);
    w.lambda.wait_idle().await;
    let runs = w.stack.state.runs(Some("acme"), 100).await.unwrap();
    assert!(runs.iter().any(|r| r.run_id == run_id && r.state == RunState::Succeeded), "{runs:#?}");
    assert_eq!(manifest_rows(&w, "entries", run_id.as_str()).await.len(), 500);
}

fn scheduled_tick() -> Value {
    json!({"version": "0", "source": "aws.events", "detail-type": "Scheduled Event", "detail": {}})
}

#[tokio::test]
async fn a_stranded_invocation_is_continued_by_the_next_tick() {
    // A 4 s lease: the resumed invocation renews it while the tick's other table runs write
    // their outputs (and the warehouse kits) to the same moto server, with the rest of the suite
    // running on two cores; 1 s and 2 s each left too little room once.
    let mut setup = Setup::new(500);
    setup.run.lease_ttl = Duration::from_secs(4);
    let w = world_with(setup).await;
    let (run_id, _) = a_parked_run(&w, "entries").await;
    // Invocation 2 takes the lease and dies without a trace (killed: no renewal, no record).
    let state = &w.stack.state;
    let owner = state.checkpoint("acme", "entries", &run_id).await.unwrap().unwrap().owner;
    state.resume_lease("acme", "entries", &owner, 2, Duration::from_secs(4)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5200)).await; // past its TTL (DynamoDB: whole seconds)

    let summary = w.invoke("orchestrator", scheduled_tick()).await;
    let resumed = summary["resumed"].as_array().unwrap();
    assert_eq!(resumed.len(), 1, "{summary}");
    assert_eq!(resumed[0]["invocation"], 2, "the same invocation, again");
    // The tick's new run leaves the resumed table alone: it would race the continuation for the
    // stranded lease (and, winning it, abandon the run).
    let dispatched: Vec<&Value> = summary["dispatched"].as_array().unwrap().iter().collect();
    assert!(dispatched.iter().all(|d| !d["tables"].as_array().unwrap().contains(&json!("entries"))), "{summary}");
    w.lambda.wait_idle().await;
    let runs = state.runs(Some("acme"), 100).await.unwrap();
    // The stranded invocation's record (another table's run may have failed on its own: a
    // heartbeat starved of CPU on a loaded machine gives up its lease, and that is not this test).
    let stranded = runs
        .iter()
        .find(|r| r.table == "entries" && r.run_id == run_id && r.state == RunState::Failed)
        .expect("the stranded invocation is recorded");
    assert!(stranded.error.as_ref().unwrap().message.contains("stranded"), "{stranded:?}");
    assert!(runs.iter().any(|r| r.run_id == run_id && r.state == RunState::Succeeded), "{runs:#?}");
    let rows = manifest_rows(&w, "entries", run_id.as_str()).await;
    let ids: BTreeSet<i64> = rows.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!((rows.len(), ids.len()), (500, 500));
}

#[tokio::test]
async fn lambda_retries_what_could_succeed_and_only_that() {
    let w = world(50).await;
    // A rejected token: recorded once, not retried (it cannot succeed without someone acting).
    let own = format!("{}other", w.secret_prefix);
    let secret = create_secret_named(&w.stack.clients, &own, json!({"token": "wrong-token"})).await;
    let mut other =
        Integration::new("other".parse().unwrap(), TokenSource::SecretsManager { secret_id: secret }, Utc::now());
    other.api_base_url = w.sim.base_url().to_string();
    w.stack.state.create_integration(&other).await.unwrap();
    let event = json!({"integration": "other", "table": "users", "run_id": RunId::new(Utc::now())});
    assert_eq!(w.send_event("table-sync", &event).await, 202);
    w.lambda.wait_idle().await;
    assert_eq!(w.lambda.invocations(), 1, "no retry of a rejected token");
    let runs = w.stack.state.runs(Some("other"), 10).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].error.as_ref().unwrap().error_type, "CapsuleAuthError");

    // Capsule failing every retry: Lambda tries the event three times, then it fails for good.
    w.sim.add_fault(FaultRule {
        path: Some("/teams".into()),
        fault: Fault::Status { status: 503 },
        after: 0,
        times: None,
        probability: None,
    });
    let event = json!({"integration": "acme", "table": "teams", "run_id": RunId::new(Utc::now())});
    assert_eq!(w.send_event("table-sync", &event).await, 202);
    w.lambda.wait_idle().await;
    assert_eq!(w.lambda.invocations(), 1 + 3, "the first attempt and Lambda's two retries");
    assert_eq!(w.lambda.errors().len(), 3);
    assert!(w.lambda.errors().iter().all(|e| e.starts_with("CapsuleUnavailable")), "{:?}", w.lambda.errors());
}

#[tokio::test]
async fn a_failed_continuation_keeps_its_checkpoint_and_parts_for_the_retry() {
    let w = world(500).await;
    let (run_id, event) = a_parked_run(&w, "entries").await;
    let state = &w.stack.state;
    let saved = state.checkpoint("acme", "entries", &run_id).await.unwrap().unwrap();
    assert!(!saved.parts.is_empty(), "the first invocation finished a part");

    // Capsule fails the continuation and both of Lambda's retries.
    w.sim.add_fault(FaultRule {
        path: Some("/entries".into()),
        fault: Fault::Status { status: 503 },
        after: 0,
        times: None,
        probability: None,
    });
    assert_eq!(w.send_event("table-sync", &event).await, 202);
    w.lambda.wait_idle().await;
    assert_eq!(w.lambda.errors().len(), 3, "{:?}", w.lambda.errors());
    let kept = state.checkpoint("acme", "entries", &run_id).await.unwrap().expect("the checkpoint is kept");
    assert_eq!(kept.failures, 3);
    assert_eq!(kept.parts, saved.parts, "the retries resumed from it, not from scratch");
    let keys = w.stack.keys().await;
    for part in &saved.parts {
        assert!(keys.contains(&format!("warehouse/{}", part.key)), "{} was deleted by an abort", part.key);
    }

    // Capsule recovers: the next tick continues the run from the kept checkpoint.
    w.sim.clear_faults();
    let summary = w.invoke("orchestrator", scheduled_tick()).await;
    assert_eq!(summary["resumed"][0]["invocation"], 2, "{summary}");
    w.lambda.wait_idle().await;
    let rows = manifest_rows(&w, "entries", run_id.as_str()).await;
    let ids: BTreeSet<i64> = rows.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!((rows.len(), ids.len()), (500, 500), "every row once");
}

/// A scheduled run records what it really dispatched: tables whose invoke failed stay pending
/// and the next tick sends them under the same run id (no new run of the whole integration);
/// a tick that died after recording its intent is finished the same way; forced and partial
/// manual runs do not move the schedule.
#[tokio::test]
async fn dispatch_records_hold_what_was_sent_and_the_next_tick_sends_the_rest() {
    let w = world(50).await;
    let state = &w.stack.state;
    w.lambda.refuse_tables(&["users", "teams"]);
    let summary = w.invoke("orchestrator", scheduled_tick()).await;
    let run_id = summary["dispatched"][0]["run_id"].as_str().unwrap().to_string();
    let failed: Vec<&str> =
        summary["dispatched"][0]["failed"].as_array().unwrap().iter().map(|f| f[0].as_str().unwrap()).collect();
    assert_eq!(failed, ["teams", "users"], "{summary}");
    assert_eq!(summary["dispatched"][0]["held"], json!([["employees", "parties"], ["tracks", "tasks"]]));
    w.lambda.wait_idle().await;
    let record = state.last_dispatch("acme").await.unwrap().unwrap();
    assert_eq!(record.run_id.as_str(), run_id);
    assert_eq!(record.failed.iter().map(|u| u.table.as_str()).collect::<Vec<_>>(), ["teams", "users"]);

    // The next tick: only the two pending tables, same run id; the integration is not due again.
    w.lambda.refuse_tables(&[]);
    let summary = w.invoke("orchestrator", scheduled_tick()).await;
    let dispatched = summary["dispatched"].as_array().unwrap();
    assert_eq!(dispatched.len(), 1, "{summary}");
    assert_eq!(dispatched[0]["run_id"], run_id.as_str());
    // Employees and tracks, held at the first tick for parties' and tasks' runs, go too now
    // that those have committed.
    assert_eq!(dispatched[0]["tables"], json!(["teams", "users", "employees", "tracks"]));
    w.lambda.wait_idle().await;
    let record = state.last_dispatch("acme").await.unwrap().unwrap();
    assert!(record.failed.is_empty() && record.held.is_empty(), "{record:?}");
    let runs = state.runs(Some("acme"), 100).await.unwrap();
    let succeeded = runs.iter().filter(|r| r.run_id.as_str() == run_id && r.state == RunState::Succeeded).count();
    assert_eq!(succeeded, 22, "every table of the one run");

    // Forced and partial manual runs leave the schedule alone.
    w.invoke("orchestrator", json!({"integration": "acme", "tables": ["users"], "force": true})).await;
    w.lambda.wait_idle().await;
    assert_eq!(state.last_dispatch("acme").await.unwrap().unwrap().run_id.as_str(), run_id);

    // An orchestrator that died after recording its intent: the next tick sends it all, same run id.
    let intent: RunId = RunId::new(Utc::now());
    let tables = vec!["users".to_string(), "teams".to_string()];
    let pending = tables.iter().map(|t| (t.clone(), "not dispatched yet".to_string()).into()).collect();
    let record = capsule_core::ports::DispatchRecord {
        integration: "acme".into(),
        run_id: intent.clone(),
        tables,
        dispatched_at: Utc::now(),
        failed: pending,
        held: vec![],
        started_by: StartedBy::Schedule,
    };
    state.record_dispatch(&record).await.unwrap();
    // The tick that died never settled the integration's entry in the due index: it is due still.
    state.wake_by("acme", Utc::now()).await.unwrap();
    let summary = w.invoke("orchestrator", scheduled_tick()).await;
    assert_eq!(summary["dispatched"][0]["run_id"], intent.as_str(), "{summary}");
    w.lambda.wait_idle().await;
    let runs = state.runs(Some("acme"), 200).await.unwrap();
    assert_eq!(runs.iter().filter(|r| r.run_id == intent && r.state == RunState::Succeeded).count(), 2);

    // A forced run of every table counts as the last run (started by hand), unless asked not to.
    let unscheduled = json!({"integration": "acme", "force": true, "no_schedule": true});
    w.invoke("orchestrator", unscheduled).await;
    w.lambda.wait_idle().await;
    assert_eq!(state.last_dispatch("acme").await.unwrap().unwrap().run_id, intent, "no_schedule moves nothing");
    let forced = w.invoke("orchestrator", json!({"integration": "acme", "force": true})).await;
    let forced_run = forced["dispatched"][0]["run_id"].as_str().unwrap().to_string();
    assert_eq!(forced["dispatched"][0]["held"], json!([]), "a forced run sends every table now: {forced}");
    w.lambda.wait_idle().await;
    let last = state.last_dispatch("acme").await.unwrap().unwrap();
    assert_eq!((last.run_id.as_str(), last.started_by), (forced_run.as_str(), StartedBy::Manual));
}
