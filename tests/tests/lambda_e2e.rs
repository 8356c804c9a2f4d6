//! The serverless path end to end: the orchestrator handler invoked through the Lambda Invoke
//! API (real SDK over HTTP, a local endpoint running the real handlers), table-sync invocations
//! dispatched with `InvocationType::Event`, the Capsule simulator, and moto's S3, DynamoDB and
//! Secrets Manager.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use capsule_shared::aws::{DynamoState, LambdaDispatcher, S3Sink};
use capsule_shared::engine::RunOptions;
use capsule_shared::integration::{Integration, IntegrationStatus, RunId, TokenSource};
use capsule_shared::ports::{RunState, StateStore};
use capsule_sync_e2e::aws::*;
use capsule_sync_e2e::capsule_sim::{Fault, FaultRule, MutationKind, MutationOp, SimHandle};
use capsule_sync_e2e::*;
use chrono::Utc;
use serde_json::{Value, json};

struct World {
    sim: SimHandle,
    stack: AwsStack,
    lambda: LocalLambda,
    client: aws_sdk_lambda::Client,
}

/// Registers `orchestrator` and `table-sync` on a local Invoke endpoint, wired like template.yaml.
async fn world(parties: usize) -> World {
    let sim = start_sim(parties, |_| {}).await;
    let stack = AwsStack::new().await;
    let secret = create_secret(&stack.clients, json!({"token": "test-token"})).await;
    let mut integration = Integration::new("acme", TokenSource::SecretsManager { secret_id: secret }, Utc::now());
    integration.api_base_url = sim.base_url().to_string();
    stack.state.create_integration(&integration).await.unwrap();

    // The endpoint must exist before the dispatcher's client is built; functions are added after.
    let functions: Arc<std::sync::Mutex<HashMap<String, Function>>> = Arc::default();
    let registry = functions.clone();
    let proxy = |name: &'static str| -> Function {
        let registry = registry.clone();
        Arc::new(move |event: Value| {
            let f = registry.lock().unwrap().get(name).cloned().expect("registered");
            f(event)
        })
    };
    let lambda = LocalLambda::start(HashMap::from([
        ("orchestrator".to_string(), proxy("orchestrator")),
        ("table-sync".to_string(), proxy("table-sync")),
    ]))
    .await;
    let client = lambda.client().await;
    let state = Arc::new(DynamoState::new(stack.clients.dynamodb.clone(), &stack.table));
    let dispatcher = Arc::new(LambdaDispatcher::new(client.clone(), "table-sync"));
    let table_sync_deps = table_sync::Deps {
        state: state.clone(),
        sink: Arc::new(S3Sink::new(stack.clients.s3.clone(), &stack.bucket, "warehouse", None)),
        dispatcher: dispatcher.clone(),
        clients: stack.clients.clone(),
        options: RunOptions::default(),
        client_options: fast_client_options(),
    };
    let orchestrator_deps = orchestrator::Deps { state, dispatcher };
    let table_sync_fn: Function = Arc::new(move |event| {
        let deps = table_sync_deps.clone();
        Box::pin(async move {
            // The runtime's deadline: a full Lambda timeout.
            let summary = table_sync::handler(event, Some(Duration::from_secs(900)), &deps).await;
            summary.map(|s| serde_json::to_value(s).unwrap()).map_err(|e| format!("{}: {e}", e.error_type()))
        })
    });
    let orchestrator_fn: Function = Arc::new(move |event| {
        let deps = orchestrator_deps.clone();
        Box::pin(async move {
            let summary = orchestrator::handler(event, &deps).await;
            summary.map(|s| serde_json::to_value(s).unwrap()).map_err(|e| format!("{}: {e}", e.error_type()))
        })
    });
    functions.lock().unwrap().insert("table-sync".into(), table_sync_fn);
    functions.lock().unwrap().insert("orchestrator".into(), orchestrator_fn);
    World { sim, stack, lambda, client }
}

impl World {
    /// Invokes a function synchronously through the Invoke API and returns its JSON answer.
    async fn invoke(&self, function: &str, event: Value) -> Value {
        let out = self
            .client
            .invoke()
            .function_name(function)
            .invocation_type(InvocationType::RequestResponse)
            .payload(Blob::new(event.to_string()))
            .send()
            .await
            .unwrap();
        let body: Value = serde_json::from_slice(out.payload().unwrap().as_ref()).unwrap();
        assert!(out.function_error().is_none(), "{function} failed: {body}");
        body
    }

    async fn rows(&self, table: &str, run_id: &str) -> Vec<serde_json::Map<String, Value>> {
        let mut rows = Vec::new();
        for key in self.stack.keys().await {
            if key.starts_with(&format!("warehouse/acme/{table}/")) && key.contains(&format!("/run={run_id}/")) {
                let bytes = self.stack.object(&key).await;
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("part.ndjson.gz");
                std::fs::write(&path, bytes).unwrap();
                rows.extend(read_ndjson(&path));
            }
        }
        rows
    }

    async fn manifest(&self, table: &str, run_id: &str) -> Value {
        let key = format!("warehouse/_meta/acme/runs/{run_id}/{table}.json");
        serde_json::from_slice(&self.stack.object(&key).await).unwrap()
    }
}

#[tokio::test]
async fn orchestrator_dispatches_every_table_and_a_second_run_is_incremental() {
    let w = world(300).await;
    let scheduled = json!({"version": "0", "source": "aws.events", "detail-type": "Scheduled Event", "detail": {}});
    let summary = w.invoke("orchestrator", scheduled.clone()).await;
    let dispatched = &summary["dispatched"][0];
    assert_eq!(dispatched["integration"], "acme");
    assert_eq!(dispatched["tables"].as_array().unwrap().len(), 22);
    assert!(dispatched["failed"].as_array().unwrap().is_empty());
    let run1 = dispatched["run_id"].as_str().unwrap().to_string();
    w.lambda.wait_idle().await;
    assert!(w.lambda.errors().is_empty(), "{:?}", w.lambda.errors());
    assert_eq!(w.lambda.invocations(), 1 + 22);

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
    assert!(keys.iter().any(|k| k == "warehouse/_meta/acme/schemas/parties.bigquery.json"));
    assert!(keys.iter().filter(|k| k.starts_with("warehouse/acme/")).all(|k| k.ends_with(".ndjson.gz")));

    // Not due again for a day.
    let summary = w.invoke("orchestrator", scheduled).await;
    assert!(summary["dispatched"].as_array().unwrap().is_empty());
    assert!(summary["skipped"][0]["reason"].as_str().unwrap().starts_with("not due"));

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
    w.sim.add_fault(FaultRule {
        path: Some("/entries".into()),
        fault: Fault::Slow { millis: 600 },
        after: 0,
        times: None,
        probability: None,
    });
    let run_id = RunId::new(Utc::now());
    let event = json!({"integration": "acme", "table": "entries", "run_id": run_id, "max_seconds": 1});
    let out = w
        .client
        .invoke()
        .function_name("table-sync")
        .invocation_type(InvocationType::Event)
        .payload(Blob::new(event.to_string()))
        .send()
        .await
        .unwrap();
    assert_eq!(out.status_code(), 202);
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
    assert_eq!(manifest["requests"].as_u64().unwrap(), 5, "requests counted across invocations");
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
