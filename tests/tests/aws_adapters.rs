//! The AWS adapters against moto_server over HTTP (the real SDK, no mocks).

use std::time::Duration;

use bytes::Bytes;
use capsule_shared::SyncError;
use capsule_shared::aws::{S3Sink, SecretsManagerToken};
use capsule_shared::capsule::RequestStats;
use capsule_shared::integration::{Integration, IntegrationStatus, RunId, TokenSource};
use capsule_shared::ports::{
    Bookmark, Checkpoint, Cursor, DispatchRecord, Lease, ObjectSink, Parking, RunState, StateStore, TableRunRecord,
    TokenProvider,
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

fn lease(table: &str, owner: &str, run: &RunId, ttl: Duration) -> Lease {
    Lease::first("acme", table, owner, run, Utc::now(), ttl)
}

/// The lease contract, run against every `StateStore` adapter.
async fn leases_exclude_other_runs_and_only_the_holder_commits(state: &dyn StateStore) {
    let run_a: RunId = "20261128T080000Z-aaaaaa".parse().unwrap();
    let run_b: RunId = "20261128T090000Z-bbbbbb".parse().unwrap();
    let ttl = Duration::from_secs(600);

    let a = state.acquire_lease(&lease("parties", "run-a", &run_a, ttl)).await.unwrap();
    assert!(a.displaced.is_none());
    let held = state.acquire_lease(&lease("parties", "run-b", &run_b, ttl)).await.unwrap_err();
    assert!(matches!(held, SyncError::LeaseHeld { ref holder, .. } if holder == "run-a"), "{held}");
    state.acquire_lease(&lease("parties", "run-a", &run_a, ttl)).await.expect("the holder may take it again");
    state.acquire_lease(&lease("tasks", "run-b", &run_b, ttl)).await.expect("another table is independent");

    let bookmark = Bookmark { last_run_started: Utc::now(), run_id: run_a.clone(), previous: None };
    state.commit(&a.lease, &bookmark, &record("acme", "parties", &run_a, RunState::Succeeded)).await.unwrap();
    assert_eq!(state.bookmark("acme", "parties").await.unwrap(), Some(bookmark.clone()));
    // Committing again without the lease changes nothing.
    let again = Bookmark { last_run_started: Utc::now(), run_id: run_b.clone(), previous: None };
    let err =
        state.commit(&a.lease, &again, &record("acme", "parties", &run_b, RunState::Succeeded)).await.unwrap_err();
    assert!(err.to_string().contains("no longer held"), "{err}");
    assert_eq!(state.bookmark("acme", "parties").await.unwrap(), Some(bookmark));
    let runs = state.runs(Some("acme"), 10).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].run_id, run_a);
}

/// A stale lease is taken over (and named as displaced); its old holder can commit nothing.
async fn a_stale_lease_is_taken_over_and_its_old_holder_cannot_commit(state: &dyn StateStore) {
    let run: RunId = "20261128T080000Z-aaaaaa".parse().unwrap();
    let stale = state.acquire_lease(&lease("parties", "crashed-run", &run, Duration::ZERO)).await.unwrap().lease;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let fresh = state.acquire_lease(&lease("parties", "new-run", &run, Duration::from_secs(600))).await.unwrap();
    assert_eq!(fresh.lease.owner, "new-run");
    assert_eq!(fresh.displaced.as_ref().map(|l| l.owner.as_str()), Some("crashed-run"), "the takeover is reported");

    let bookmark = Bookmark { last_run_started: Utc::now(), run_id: run.clone(), previous: None };
    let err = state.commit(&stale, &bookmark, &record("acme", "parties", &run, RunState::Succeeded)).await;
    assert!(err.is_err(), "the old holder lost the conditional write");
    assert!(state.bookmark("acme", "parties").await.unwrap().is_none());
    // A failure of the old holder is still recorded, and doesn't release the new lease.
    state.record_failure(&stale, &record("acme", "parties", &run, RunState::Failed), None).await.unwrap();
    assert!(state.acquire_lease(&lease("parties", "third", &run, Duration::from_secs(600))).await.is_err());
    assert_eq!(state.runs(Some("acme"), 5).await.unwrap()[0].state, RunState::Failed);
}

fn checkpoint(run: &RunId, owner: &str, invocations: u32) -> Checkpoint {
    Checkpoint {
        integration: "acme".into(),
        table: "parties".into(),
        run_id: run.clone(),
        owner: owner.into(),
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
        invocations,
        not_before: None,
        failures: 0,
    }
}

/// Checkpoints park the lease for exactly the next invocation: a duplicate or stale one is
/// refused; a retryable failure parks it for a retry of the same invocation.
async fn checkpoints_fence_continuations(state: &dyn StateStore) {
    let run: RunId = "20261128T080000Z-aaaaaa".parse().unwrap();
    let ttl = Duration::from_secs(600);
    let first = state.acquire_lease(&lease("parties", "owner-1", &run, ttl)).await.unwrap().lease;
    let saved = checkpoint(&run, "owner-1", 1);
    let parking = Parking { checkpoint: saved.clone(), hold_until: Utc::now() + chrono::Duration::minutes(10) };
    let continued = record("acme", "parties", &run, RunState::Continued);
    state.save_checkpoint(&first, &parking, &continued).await.unwrap();
    assert_eq!(state.checkpoint("acme", "parties", &run).await.unwrap(), Some(saved.clone()));
    let other: RunId = "20261128T090000Z-bbbbbb".parse().unwrap();
    assert!(state.checkpoint("acme", "parties", &other).await.unwrap().is_none(), "another run's checkpoint");
    let intruder = Lease { owner: "intruder".into(), ..first.clone() };
    assert!(state.save_checkpoint(&intruder, &parking, &continued).await.is_err());
    let fresh_run = state.acquire_lease(&lease("parties", "owner-2", &other, ttl)).await;
    assert!(fresh_run.is_err(), "a parked lease still excludes other runs");

    // Invocation 2 takes the parked lease; a duplicate 2, or a late 1, is refused.
    let second = state.resume_lease("acme", "parties", "owner-1", 2, ttl).await.unwrap();
    assert_eq!(second.invocation, 2);
    for seq in [2, 1, 3] {
        let refused = state.resume_lease("acme", "parties", "owner-1", seq, ttl).await.unwrap_err();
        assert!(matches!(refused, SyncError::Superseded(_)), "{seq}: {refused}");
    }
    // The first invocation can write nothing any more.
    let bookmark = Bookmark { last_run_started: saved.started_at, run_id: run.clone(), previous: None };
    assert!(state.commit(&first, &bookmark, &record("acme", "parties", &run, RunState::Succeeded)).await.is_err());

    // Invocation 2 fails retryably: the checkpoint stays and a retry of 2 may take the lease.
    let retry = Parking { checkpoint: Checkpoint { failures: 1, ..saved.clone() }, hold_until: Utc::now() };
    state.record_failure(&second, &record("acme", "parties", &run, RunState::Failed), Some(&retry)).await.unwrap();
    assert_eq!(state.checkpoint("acme", "parties", &run).await.unwrap().unwrap().failures, 1);
    let states = state.table_states("acme").await.unwrap();
    assert_eq!(states.len(), 1);
    assert_eq!(states[0].lease.as_ref().map(|l| (l.invocation, l.next)), Some((0, 2)), "parked for a retry of 2");
    let retried = state.resume_lease("acme", "parties", "owner-1", 2, ttl).await.unwrap();
    state.commit(&retried, &bookmark, &record("acme", "parties", &run, RunState::Succeeded)).await.unwrap();
    assert!(state.checkpoint("acme", "parties", &run).await.unwrap().is_none(), "commit drops the checkpoint");
    assert!(state.table_states("acme").await.unwrap().is_empty(), "nothing left in progress");
}

/// Claims on one budget from many tasks at once never exceed the window's share.
async fn budgets_are_updated_atomically(state: std::sync::Arc<dyn StateStore>) {
    use capsule_shared::capsule::{BudgetPolicy, Claim};
    let policy = BudgetPolicy { reserve: 0.1, default_limit: 40, window: Duration::from_secs(3600) };
    let now = Utc::now().timestamp();
    let claims = (0..30).map(|_| {
        let state = state.clone();
        tokio::spawn(async move {
            // As a client does: its own view of the budget makes the fast path apply (DynamoDB).
            let (first, known) = state.claim("k", &policy, now, None).await.unwrap();
            let (second, _) = state.claim("k", &policy, now, known.as_ref()).await.unwrap();
            [first, second].into_iter().filter(|c| *c == Claim::Granted).count()
        })
    });
    let granted: usize = futures::future::join_all(claims).await.into_iter().map(|g| g.unwrap()).sum();
    assert_eq!(granted, 36, "40 less the 10 % reserve, whatever the interleaving");
}

#[tokio::test]
async fn contract_leases_exclude_other_runs_on_the_state_file() {
    leases_exclude_other_runs_and_only_the_holder_commits(&capsule_sync_e2e::Local::new().state).await;
}

#[tokio::test]
async fn contract_leases_exclude_other_runs_on_dynamodb() {
    leases_exclude_other_runs_and_only_the_holder_commits(&AwsStack::new().await.state).await;
}

#[tokio::test]
async fn contract_stale_leases_are_taken_over_on_the_state_file() {
    a_stale_lease_is_taken_over_and_its_old_holder_cannot_commit(&capsule_sync_e2e::Local::new().state).await;
}

#[tokio::test]
async fn contract_stale_leases_are_taken_over_on_dynamodb() {
    a_stale_lease_is_taken_over_and_its_old_holder_cannot_commit(&AwsStack::new().await.state).await;
}

#[tokio::test]
async fn contract_checkpoints_fence_continuations_on_the_state_file() {
    checkpoints_fence_continuations(&capsule_sync_e2e::Local::new().state).await;
}

#[tokio::test]
async fn contract_checkpoints_fence_continuations_on_dynamodb() {
    checkpoints_fence_continuations(&AwsStack::new().await.state).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn contract_budgets_are_atomic_on_the_state_file() {
    let local = capsule_sync_e2e::Local::new();
    budgets_are_updated_atomically(std::sync::Arc::new(local.state.clone())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn contract_budgets_are_atomic_on_dynamodb() {
    budgets_are_updated_atomically(std::sync::Arc::new(AwsStack::new().await.state)).await;
}

#[tokio::test]
async fn dynamodb_dispatch_records() {
    let stack = AwsStack::new().await;
    let state = &stack.state;
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
    let provider = SecretsManagerToken::new(clients.secrets.clone(), name, capsule_oauth());
    assert_eq!(provider.token().await.unwrap().expose_secret(), "pat-123");
}

#[tokio::test]
async fn secrets_with_only_email_and_password_are_refused_with_what_to_do() {
    let clients = moto_clients().await;
    let name = create_secret(&clients, json!({"email": "me@example.com", "password": "hunter2"})).await;
    let err =
        SecretsManagerToken::new(clients.secrets.clone(), name.clone(), capsule_oauth()).token().await.unwrap_err();
    let message = err.to_string();
    assert!(message.contains("Bearer tokens") && message.contains("API Authentication Tokens"), "{message}");
    assert!(!message.contains("hunter2"), "the password never appears");
    assert_eq!(err.fault(), capsule_shared::Fault::User);

    let other = create_secret(&clients, json!({"api_key": "abc"})).await;
    let err = SecretsManagerToken::new(clients.secrets.clone(), other, capsule_oauth())
        .token()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("api_key") && !err.contains("abc"), "{err}");
    let missing = SecretsManagerToken::new(clients.secrets.clone(), "capsule-sync/missing".into(), capsule_oauth());
    let missing = missing.token().await;
    assert!(missing.unwrap_err().to_string().contains("capsule-sync/missing"));
}

#[tokio::test]
async fn oauth_secrets_refresh_and_write_the_rotated_refresh_token_back() {
    let clients = moto_clients().await;
    let endpoint = TokenEndpoint::start("access-new", "refresh-0").await;
    let name =
        create_secret(&clients, json!({"client_id": "cid", "client_secret": "csecret", "refresh_token": "refresh-0"}))
            .await;
    let provider = SecretsManagerToken::new(clients.secrets.clone(), name.clone(), endpoint.url());
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
    let cold = SecretsManagerToken::new(clients.secrets.clone(), name.clone(), endpoint.url());
    assert_eq!(cold.token().await.unwrap().expose_secret(), "access-new");
    assert_eq!(endpoint.calls.load(std::sync::atomic::Ordering::SeqCst), 1);

    // A revoked refresh token: a clear error, nothing overwritten.
    let revoked =
        create_secret(&clients, json!({"client_id": "cid", "client_secret": "csecret", "refresh_token": "stale"}))
            .await;
    let err = SecretsManagerToken::new(clients.secrets.clone(), revoked.clone(), endpoint.url())
        .token()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("refused") && err.contains("re-authorise"), "{err}");
    assert_eq!(read_secret(&clients, &revoked).await["refresh_token"], "stale");

    // A token URL in the secret is not where the client secret goes: refused, nothing sent.
    let calls = endpoint.calls.load(std::sync::atomic::Ordering::SeqCst);
    let redirected = create_secret(
        &clients,
        json!({"client_id": "cid", "client_secret": "csecret", "refresh_token": "refresh-0",
               "token_url": "https://collector.example/oauth/token"}),
    )
    .await;
    let err = SecretsManagerToken::new(clients.secrets.clone(), redirected, endpoint.url())
        .token()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("collector.example") && err.contains("CAPSULE_OAUTH_TOKEN_URL"), "{err}");
    assert_eq!(endpoint.calls.load(std::sync::atomic::Ordering::SeqCst), calls, "no refresh was attempted");
}

/// An OAuth access token that expires during a run (Capsule starts refusing it with 401) is
/// refreshed through its secret and the run goes on: one refresh, nothing lost.
#[tokio::test]
async fn an_oauth_token_expiring_mid_run_is_refreshed_and_the_run_goes_on() {
    use capsule_shared::capsule::{CapsuleClient, RateBudgetStore};
    use capsule_shared::engine::RunOptions;
    use capsule_sync_e2e::{Local, expected_counts, fast_client_options, slow_pages, start_sim};
    use std::sync::Arc;

    let clients = moto_clients().await;
    let sim = start_sim(600, |c| c.token = "access-old".into()).await;
    sim.add_fault(slow_pages("/entries", 200));
    let endpoint = TokenEndpoint::start("access-new", "refresh-0").await;
    let secret = json!({"client_id": "cid", "client_secret": "csecret", "refresh_token": "refresh-0",
                        "access_token": "access-old",
                        "expires_at": (Utc::now() + chrono::Duration::hours(1)).to_rfc3339()});
    let name = create_secret(&clients, secret).await;
    let mut integration = Integration::new("acme", TokenSource::SecretsManager { secret_id: name.clone() }, Utc::now());
    integration.api_base_url = sim.base_url().to_string();
    let local = Local::new();
    let tokens: Arc<dyn TokenProvider> =
        Arc::new(SecretsManagerToken::new(clients.secrets.clone(), name.clone(), endpoint.url()));
    let store: Arc<dyn RateBudgetStore> = Arc::new(local.state.clone());
    let client = CapsuleClient::for_integration(&integration, tokens, store, fast_client_options()).await.unwrap();

    let expire_mid_run = async {
        while sim.stats().count("GET /entries") < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sim.set_token("access-new"); // Capsule no longer accepts the old access token
    };
    let ((_, outcomes), ()) =
        tokio::join!(local.sync(&client, &integration, &["entries"], RunOptions::default()), expire_mid_run);
    let outcome = &outcomes[0];
    assert_eq!(outcome.record.state, RunState::Succeeded, "{:?}", outcome.error);
    assert_eq!(outcome.record.rows as usize, expected_counts(&sim)["entries"], "nothing lost");
    assert!(outcome.record.requests.requests > 2, "the token expired part way through the run");
    assert_eq!(sim.stats().by_status.get(&401).copied(), Some(1), "one refused request, then the new token");
    assert_eq!(endpoint.calls.load(std::sync::atomic::Ordering::SeqCst), 1, "refreshed once");
    let stored = read_secret(&clients, &name).await;
    assert_eq!(
        (stored["access_token"].as_str(), stored["refresh_token"].as_str()),
        (Some("access-new"), Some("refresh-1"))
    );
}
