//! The AWS adapters against moto_server over HTTP (the real SDK, no mocks).

use std::time::Duration;

use bytes::Bytes;
use capsule_shared::SyncError;
use capsule_shared::aws::{S3Sink, SecretsManagerToken};
use capsule_shared::capsule::RequestStats;
use capsule_shared::integration::{Integration, IntegrationStatus, RunId, TokenSource};
use capsule_shared::ports::{
    Bookmark, Checkpoint, Cursor, DispatchRecord, ObjectSink, RunState, StateStore, TableRunRecord, TokenProvider,
};
use capsule_sync_e2e::aws::*;
use chrono::Utc;
use secrecy::ExposeSecret;
use serde_json::json;

fn pseudo_random(n: usize) -> Vec<u8> {
    // Incompressible-ish bytes so part sizes are what they look like.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test]
async fn s3_streams_large_objects_in_multipart_and_small_ones_in_one_put() {
    let stack = AwsStack::new().await;
    let sink = S3Sink::new(stack.clients.s3.clone(), &stack.bucket, "wh", None).with_part_bytes(5 << 20);
    let data = pseudo_random(12 << 20);
    let mut upload = sink.begin("acme/parties/part-00000.ndjson.gz").await.unwrap();
    for chunk in data.chunks(1 << 20) {
        upload.write(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    let pending = stack.clients.s3.list_multipart_uploads().bucket(&stack.bucket).send().await.unwrap();
    assert_eq!(pending.uploads().len(), 1, "a multipart upload is under way before finish");
    assert!(sink.list("acme/").await.unwrap().is_empty(), "nothing visible before finish");
    upload.finish().await.unwrap();

    let key = "wh/acme/parties/part-00000.ndjson.gz";
    assert_eq!(stack.object(key).await, data);
    let head = stack.clients.s3.head_object().bucket(&stack.bucket).key(key).send().await.unwrap();
    assert!(head.e_tag().unwrap().contains("-3"), "three parts: {:?}", head.e_tag());
    assert_eq!(head.server_side_encryption().map(|s| s.as_str()), Some("AES256"), "SSE requested explicitly");

    sink.put("_meta/acme/x.json", Bytes::from_static(b"{}")).await.unwrap();
    assert_eq!(sink.list("acme/").await.unwrap(), vec!["acme/parties/part-00000.ndjson.gz"]);
    assert_eq!(sink.locate("_meta/acme/x.json"), format!("s3://{}/wh/_meta/acme/x.json", stack.bucket));
    sink.delete("_meta/acme/x.json").await.unwrap();
    sink.delete("_meta/acme/never-existed.json").await.unwrap();
    assert_eq!(stack.keys().await, vec![key.to_string()]);
}

#[tokio::test]
async fn s3_abort_leaves_nothing_behind() {
    let stack = AwsStack::new().await;
    let sink = S3Sink::new(stack.clients.s3.clone(), &stack.bucket, "", None).with_part_bytes(5 << 20);
    let mut upload = sink.begin("acme/tasks/part-00000.ndjson.gz").await.unwrap();
    upload.write(Bytes::from(pseudo_random(6 << 20))).await.unwrap();
    upload.abort().await;
    let pending = stack.clients.s3.list_multipart_uploads().bucket(&stack.bucket).send().await.unwrap();
    assert!(pending.uploads().is_empty(), "the multipart upload was aborted");
    assert!(stack.keys().await.is_empty());

    let mut small = sink.begin("acme/tasks/part-00001.ndjson.gz").await.unwrap();
    small.write(Bytes::from_static(b"{\"id\":1}\n")).await.unwrap();
    small.abort().await;
    assert!(stack.keys().await.is_empty(), "a small object never started is not written either");
}

fn record(integration: &str, table: &str, run_id: &RunId, state: RunState) -> TableRunRecord {
    let mut r = TableRunRecord::new(integration, table, run_id, state, Utc::now());
    r.finished_at = Some(Utc::now());
    r
}

#[tokio::test]
async fn dynamodb_integrations_are_created_once_and_updated_only_if_they_exist() {
    let stack = AwsStack::new().await;
    let state = &stack.state;
    let mut acme = Integration::new("acme", TokenSource::SecretsManager { secret_id: "s".into() }, Utc::now());
    state.create_integration(&acme).await.unwrap();
    let err = state.create_integration(&acme).await.unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    acme.status = IntegrationStatus::Paused;
    state.update_integration(&acme).await.unwrap();
    assert_eq!(state.get_integration("acme").await.unwrap().unwrap().status, IntegrationStatus::Paused);
    let ghost = Integration::new("ghost", TokenSource::Env { var: "X".into() }, Utc::now());
    assert!(state.update_integration(&ghost).await.unwrap_err().to_string().contains("no integration"));
    state.create_integration(&ghost).await.unwrap();
    let names: Vec<String> = state.list_integrations().await.unwrap().into_iter().map(|i| i.name).collect();
    assert_eq!(names, vec!["acme", "ghost"]);
    assert!(state.delete_integration("ghost").await.unwrap());
    assert!(!state.delete_integration("ghost").await.unwrap());
    assert!(state.get_integration("ghost").await.unwrap().is_none());
}

#[tokio::test]
async fn dynamodb_leases_exclude_other_runs_and_only_the_holder_commits() {
    let stack = AwsStack::new().await;
    let state = &stack.state;
    let run_a: RunId = "20261128T080000Z-aaaaaa".parse().unwrap();
    let run_b: RunId = "20261128T090000Z-bbbbbb".parse().unwrap();
    let ttl = Duration::from_secs(600);

    let a = state.acquire_lease("acme", "parties", "run-a", ttl).await.unwrap();
    let held = state.acquire_lease("acme", "parties", "run-b", ttl).await.unwrap_err();
    assert!(matches!(held, SyncError::LeaseHeld { ref holder, .. } if holder == "run-a"), "{held}");
    state.acquire_lease("acme", "parties", "run-a", ttl).await.expect("the holder may take it again");
    state.acquire_lease("acme", "tasks", "run-b", ttl).await.expect("another table is independent");

    let bookmark = Bookmark { last_run_started: Utc::now(), run_id: run_a.clone(), previous: None };
    state.commit(&a, &bookmark, &record("acme", "parties", &run_a, RunState::Succeeded)).await.unwrap();
    assert_eq!(state.bookmark("acme", "parties").await.unwrap(), Some(bookmark.clone()));
    // Committing again without the lease changes nothing.
    let again = Bookmark { last_run_started: Utc::now(), run_id: run_b.clone(), previous: None };
    let err = state.commit(&a, &again, &record("acme", "parties", &run_b, RunState::Succeeded)).await.unwrap_err();
    assert!(err.to_string().contains("no longer held"), "{err}");
    assert_eq!(state.bookmark("acme", "parties").await.unwrap(), Some(bookmark));
    let runs = state.runs(Some("acme"), 10).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].run_id, run_a);
}

#[tokio::test]
async fn dynamodb_a_stale_lease_is_taken_over_and_its_old_holder_cannot_commit() {
    let stack = AwsStack::new().await;
    let state = &stack.state;
    let run: RunId = "20261128T080000Z-aaaaaa".parse().unwrap();
    let stale = state.acquire_lease("acme", "parties", "crashed-run", Duration::from_secs(0)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let fresh = state.acquire_lease("acme", "parties", "new-run", Duration::from_secs(600)).await.unwrap();
    assert_eq!(fresh.owner, "new-run");

    let bookmark = Bookmark { last_run_started: Utc::now(), run_id: run.clone(), previous: None };
    let err = state.commit(&stale, &bookmark, &record("acme", "parties", &run, RunState::Succeeded)).await;
    assert!(err.is_err(), "the old holder lost the conditional write");
    assert!(state.bookmark("acme", "parties").await.unwrap().is_none());
    // A failure of the old holder is still recorded, and doesn't release the new lease.
    state.record_failure(&stale, &record("acme", "parties", &run, RunState::Failed)).await.unwrap();
    assert!(state.acquire_lease("acme", "parties", "third", Duration::from_secs(600)).await.is_err());
    assert_eq!(state.runs(Some("acme"), 5).await.unwrap()[0].state, RunState::Failed);
}

#[tokio::test]
async fn dynamodb_checkpoints_and_dispatch_records() {
    let stack = AwsStack::new().await;
    let state = &stack.state;
    let run: RunId = "20261128T080000Z-aaaaaa".parse().unwrap();
    let lease = state.acquire_lease("acme", "parties", "owner-1", Duration::from_secs(600)).await.unwrap();
    let checkpoint = Checkpoint {
        integration: "acme".into(),
        table: "parties".into(),
        run_id: run.clone(),
        owner: "owner-1".into(),
        started_at: Utc::now(),
        since: None,
        bookmark_before: None,
        cursor: Cursor {
            next_url: Some("http://127.0.0.1/api/v2/parties?page=3".into()),
            pass_started: Some(Utc::now()),
            ..Cursor::default()
        },
        parts: vec![],
        unknown_fields: vec![],
        requests: RequestStats { requests: 2, retries: 0, rate_limited: 0 },
        invocations: 1,
    };
    state.save_checkpoint(&lease, &checkpoint, &record("acme", "parties", &run, RunState::Continued)).await.unwrap();
    assert_eq!(state.checkpoint("acme", "parties", &run).await.unwrap(), Some(checkpoint.clone()));
    let other: RunId = "20261128T090000Z-bbbbbb".parse().unwrap();
    assert!(state.checkpoint("acme", "parties", &other).await.unwrap().is_none(), "another run's checkpoint");
    let intruder = capsule_shared::ports::Lease { owner: "intruder".into(), ..lease.clone() };
    assert!(
        state
            .save_checkpoint(&intruder, &checkpoint, &record("acme", "parties", &run, RunState::Continued))
            .await
            .is_err()
    );

    let bookmark = Bookmark { last_run_started: checkpoint.started_at, run_id: run.clone(), previous: None };
    state.commit(&lease, &bookmark, &record("acme", "parties", &run, RunState::Succeeded)).await.unwrap();
    assert!(state.checkpoint("acme", "parties", &run).await.unwrap().is_none(), "commit drops the checkpoint");

    for (run_id, minutes) in [("20261128T080000Z-aaaaaa", 60), ("20261128T090000Z-bbbbbb", 0)] {
        let d = DispatchRecord {
            integration: "acme".into(),
            run_id: run_id.parse().unwrap(),
            tables: vec!["parties".into()],
            dispatched_at: Utc::now() - chrono::Duration::minutes(minutes),
            failed: vec![],
        };
        state.record_dispatch(&d).await.unwrap();
    }
    assert_eq!(state.last_dispatch("acme").await.unwrap().unwrap().run_id.as_str(), "20261128T090000Z-bbbbbb");
    assert!(state.last_dispatch("nobody").await.unwrap().is_none());
}

#[tokio::test]
async fn secrets_hold_a_personal_access_token() {
    let clients = moto_clients().await;
    let name = create_secret(&clients, json!({"token": " pat-123 "})).await;
    let provider = SecretsManagerToken::new(clients.secrets.clone(), name);
    assert_eq!(provider.token().await.unwrap().expose_secret(), "pat-123");
}

#[tokio::test]
async fn secrets_with_only_email_and_password_are_refused_with_what_to_do() {
    let clients = moto_clients().await;
    let name = create_secret(&clients, json!({"email": "me@example.com", "password": "hunter2"})).await;
    let err = SecretsManagerToken::new(clients.secrets.clone(), name.clone()).token().await.unwrap_err();
    let message = err.to_string();
    assert!(message.contains("Bearer tokens") && message.contains("API Authentication Tokens"), "{message}");
    assert!(!message.contains("hunter2"), "the password never appears");
    assert_eq!(err.fault(), capsule_shared::Fault::User);

    let other = create_secret(&clients, json!({"api_key": "abc"})).await;
    let err = SecretsManagerToken::new(clients.secrets.clone(), other).token().await.unwrap_err().to_string();
    assert!(err.contains("api_key") && !err.contains("abc"), "{err}");
    let missing = SecretsManagerToken::new(clients.secrets.clone(), "capsule-sync/missing".into()).token().await;
    assert!(missing.unwrap_err().to_string().contains("capsule-sync/missing"));
}

#[tokio::test]
async fn oauth_secrets_refresh_and_write_the_rotated_refresh_token_back() {
    let clients = moto_clients().await;
    let endpoint = TokenEndpoint::start("access-new", "refresh-0").await;
    let name = create_secret(
        &clients,
        json!({"client_id": "cid", "client_secret": "csecret", "refresh_token": "refresh-0", "token_url": endpoint.url}),
    )
    .await;
    let provider = SecretsManagerToken::new(clients.secrets.clone(), name.clone());
    assert_eq!(provider.token().await.unwrap().expose_secret(), "access-new");
    assert_eq!(provider.token().await.unwrap().expose_secret(), "access-new");
    assert_eq!(endpoint.calls.load(std::sync::atomic::Ordering::SeqCst), 1, "the fresh token is cached");

    let stored = read_secret(&clients, &name).await;
    assert_eq!(stored["refresh_token"], "refresh-1", "the rotated refresh token was written back");
    assert_eq!(stored["access_token"], "access-new");
    assert_eq!(stored["client_secret"], "csecret");
    let expires = chrono::DateTime::parse_from_rfc3339(stored["expires_at"].as_str().unwrap()).unwrap();
    assert!(expires > Utc::now() + chrono::Duration::days(6));

    // Another process (a cold start) uses the stored access token without refreshing.
    let cold = SecretsManagerToken::new(clients.secrets.clone(), name.clone());
    assert_eq!(cold.token().await.unwrap().expose_secret(), "access-new");
    assert_eq!(endpoint.calls.load(std::sync::atomic::Ordering::SeqCst), 1);

    // A revoked refresh token: a clear error, nothing overwritten.
    let revoked = create_secret(
        &clients,
        json!({"client_id": "cid", "client_secret": "csecret", "refresh_token": "stale", "token_url": endpoint.url}),
    )
    .await;
    let err = SecretsManagerToken::new(clients.secrets.clone(), revoked.clone()).token().await.unwrap_err().to_string();
    assert!(err.contains("refused") && err.contains("re-authorise"), "{err}");
    assert_eq!(read_secret(&clients, &revoked).await["refresh_token"], "stale");
}
