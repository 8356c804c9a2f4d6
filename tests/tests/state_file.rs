//! What only the state file does: readers never wait for a writer (the file is replaced by an
//! atomic rename, so a read needs no lock), and history older than the retention is dropped
//! when the file is written, except each integration's latest dispatch (its schedule counts
//! from it).

use std::time::Duration;

use capsule_core::integration::RunId;
use capsule_core::ports::{DispatchRecord, RunState, StateStore, TableRunRecord};
use capsule_local::StateFile;
use chrono::Utc;

#[tokio::test]
async fn readers_do_not_wait_for_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateFile::new(dir.path());
    let run: RunId = "20261128T080000Z-aaaaaa".parse().unwrap();
    let mut record = TableRunRecord::new("acme", "parties", &run, RunState::Succeeded, Utc::now());
    record.finished_at = Some(Utc::now());
    state.record_run(&record).await.unwrap();

    // Another process holds the lock (a writer part way through): reads go on.
    let lock = std::fs::File::options().write(true).open(dir.path().join("state.lock")).unwrap();
    lock.lock().unwrap();
    let read = tokio::time::timeout(Duration::from_secs(2), state.runs(Some("acme"), 10)).await;
    assert_eq!(read.expect("a read waited for the writer's lock").unwrap().len(), 1);
    let write = tokio::time::timeout(Duration::from_millis(300), state.record_run(&record)).await;
    assert!(write.is_err(), "writers still take turns");
    drop(lock);
}

#[tokio::test]
async fn history_older_than_the_retention_is_dropped_but_the_latest_dispatch_stays() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateFile::new(dir.path()).with_history(Duration::from_secs(7 * 24 * 3600));
    let old = Utc::now() - chrono::Duration::days(30);
    let runs: Vec<RunId> = ["20261028T080000Z-aaaaaa", "20261029T080000Z-bbbbbb", "20261129T080000Z-cccccc"]
        .iter()
        .map(|r| r.parse().unwrap())
        .collect();
    for (run, at) in [(&runs[0], old), (&runs[1], old + chrono::Duration::days(1)), (&runs[2], Utc::now())] {
        let mut record = TableRunRecord::new("acme", "parties", run, RunState::Succeeded, at);
        record.finished_at = Some(at);
        state.record_run(&record).await.unwrap();
    }
    for (integration, run, at) in
        [("acme", &runs[0], old), ("acme", &runs[1], old + chrono::Duration::days(1)), ("quiet", &runs[1], old)]
    {
        let d = DispatchRecord {
            integration: integration.into(),
            run_id: run.clone(),
            tables: vec![],
            dispatched_at: at,
            failed: vec![],
            held: vec![],
            started_by: capsule_core::ports::StartedBy::Schedule,
        };
        state.record_dispatch(&d).await.unwrap();
    }
    let kept: Vec<RunId> = state.runs(Some("acme"), 10).await.unwrap().into_iter().map(|r| r.run_id).collect();
    assert_eq!(kept, vec![runs[2].clone()], "runs older than a week are gone");
    let latest = state.last_dispatch("acme").await.unwrap().expect("the latest dispatch stays, however old");
    assert_eq!(latest.run_id, runs[1]);
    assert_eq!(state.last_dispatch("quiet").await.unwrap().unwrap().run_id, runs[1]);
    let text = std::fs::read_to_string(state.path()).unwrap();
    assert_eq!(text.matches("\"dispatched_at\"").count(), 2, "one per integration: {text}");
}

/// A state file written before the due index existed has no `wakes`: every integration in it is
/// due at once, and the first write keeps the index.
#[tokio::test]
async fn a_state_file_from_before_the_due_index_makes_every_integration_due() {
    use capsule_core::integration::{Integration, TokenSource};
    let dir = tempfile::tempdir().unwrap();
    let state = StateFile::new(dir.path());
    for name in ["acme", "beta"] {
        let token = TokenSource::Env { var: "X".into() };
        state.create_integration(&Integration::new(name.parse().unwrap(), token, Utc::now())).await.unwrap();
    }
    let path = dir.path().join("state.json");
    let mut doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    doc.as_object_mut().unwrap().remove("wakes").expect("the index is stored");
    std::fs::write(&path, serde_json::to_vec(&doc).unwrap()).unwrap();
    let due: Vec<String> = state
        .due(Utc::now() + chrono::Duration::seconds(1), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.integration)
        .collect();
    assert_eq!(due, vec!["acme", "beta"]);
    let seen = state.wake("beta").await.unwrap().unwrap();
    assert!(state.settle_wake("beta", None, seen.version).await.unwrap());
    assert_eq!(state.due(Utc::now(), 10).await.unwrap().len(), 1, "kept once written");
}

/// The file records the schema version of its documents; one written by a newer capsule-sync is
/// refused, naming the file, and left as it was.
#[tokio::test]
async fn a_state_file_written_by_a_newer_version_is_refused_unchanged() {
    use capsule_core::stored::SCHEMA_VERSION;
    let dir = tempfile::tempdir().unwrap();
    let state = StateFile::new(dir.path());
    let run: RunId = "20261128T080000Z-aaaaaa".parse().unwrap();
    let record = TableRunRecord::new("acme", "parties", &run, RunState::Succeeded, Utc::now());
    state.record_run(&record).await.unwrap();
    let path = dir.path().join("state.json");
    let mut file: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(file["version"], SCHEMA_VERSION, "written with this build's schema version");

    file["version"] = (SCHEMA_VERSION + 1).into();
    let newer = serde_json::to_vec_pretty(&file).unwrap();
    std::fs::write(&path, &newer).unwrap();
    for err in [state.runs(Some("acme"), 10).await.unwrap_err(), state.record_run(&record).await.unwrap_err()] {
        let message = err.to_string();
        assert!(message.contains("newer capsule-sync") && message.contains("state.json"), "{message}");
    }
    assert_eq!(std::fs::read(&path).unwrap(), newer, "not rewritten");
}
