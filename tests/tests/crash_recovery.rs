//! A table run killed mid-page (its future dropped: no cleanup, as kill -9 or a Lambda timeout
//! leaves it), then a rerun after the lease's TTL, on both backends: nothing lost, no file of
//! the killed run left for a loader, the history says what happened.

use std::collections::BTreeSet;
use std::time::Duration;

use capsule_core::integration::RunId;
use capsule_core::manifest::Compression;
use capsule_core::ports::{ObjectSink, RunState, StateStore};
use capsule_engine::engine::{RunOptions, RunPorts, TableRun};
use capsule_engine::lifecycle::Invocation;
use capsule_engine::output::{self, WriterOptions};
use capsule_sync_e2e::aws::AwsStack;
use capsule_sync_e2e::*;
use chrono::Utc;

/// Small parts (so the killed run has finished some) and a one-second lease.
fn options() -> RunOptions {
    RunOptions {
        writer: WriterOptions { part_max_bytes: 4096, compression: Compression::None, ..WriterOptions::default() },
        lease_ttl: Duration::from_secs(1),
        ..RunOptions::default()
    }
}

async fn killed_mid_page_then_taken_over(deps: RunPorts<'_>) {
    let sim = start_sim(800, |_| {}).await;
    sim.add_fault(slow_pages("/parties", 150));
    let integration = integration_for(&sim, "acme", "UNUSED");
    let client = client_for(&sim, "test-token");
    let table = capsule_core::catalog::table("parties").unwrap();
    let run = |run_id| TableRun {
        client: &client,
        deps,
        integration: &integration,
        table,
        run_id,
        options: options(),
        progress: None,
        deadline: None,
        kill_at: None,
        invocation: Invocation::First,
    };
    let killed: RunId = RunId::new(Utc::now() - chrono::Duration::seconds(5));
    let cut = tokio::time::timeout(Duration::from_millis(1000), run(&killed).run()).await;
    assert!(cut.is_err(), "the run was still paging when it was killed");
    let prefix = output::run_data_prefix("acme", "parties", &killed);
    assert!(!deps.sink.list(&prefix).await.unwrap().is_empty(), "the killed run had finished parts");
    let held = deps.state.table_states("acme").await.unwrap();
    assert_eq!(held.len(), 1, "its lease is still there");

    // Past the lease's TTL (DynamoDB compares expiry in whole seconds).
    tokio::time::sleep(Duration::from_millis(2200)).await;
    sim.clear_faults();
    let rerun = RunId::new(Utc::now());
    let outcome = run(&rerun).run().await;
    assert_eq!(outcome.record.state, RunState::Succeeded, "{:?}", outcome.error);

    let manifest = outcome.manifest.unwrap();
    let mut ids = BTreeSet::new();
    let mut rows = 0;
    for file in &manifest.files {
        let body = deps.sink.get(&file.key).await.unwrap().unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        for line in text.lines() {
            let row: serde_json::Value = serde_json::from_str(line).unwrap();
            ids.insert(row["id"].as_i64().unwrap());
            rows += 1;
        }
    }
    assert_eq!(rows, expected_counts(&sim)["parties"], "nothing lost");
    assert_eq!(ids.len(), rows, "nothing twice");
    assert!(deps.sink.list(&prefix).await.unwrap().is_empty(), "no file of the killed run is left for a loader");
    let runs = deps.state.runs(Some("acme"), 10).await.unwrap();
    let killed_record = runs.iter().find(|r| r.run_id == killed).expect("the killed run is in the history");
    assert_eq!(killed_record.state, RunState::Failed);
    assert!(killed_record.error.as_ref().unwrap().message.contains("abandoned"), "{killed_record:?}");
    assert!(runs.iter().all(|r| r.state != RunState::Running), "no run left `running`: {runs:#?}");
    assert!(deps.state.table_states("acme").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_run_killed_mid_page_is_taken_over_on_the_local_backend() {
    let local = Local::new();
    killed_mid_page_then_taken_over(local.deps()).await;
}

#[tokio::test]
async fn a_run_killed_mid_page_is_taken_over_on_the_aws_backend() {
    let stack = AwsStack::new().await;
    let deps = RunPorts { state: &stack.state as &dyn StateStore, sink: &stack.sink as &dyn ObjectSink };
    killed_mid_page_then_taken_over(deps).await;
}
