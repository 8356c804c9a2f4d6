//! What keeps a run from outliving, overlapping or looping: self-fencing when the lease cannot
//! be renewed, waits bounded by the invocation's deadline, a bound on invocations that end on
//! the same failing request, a bound on response bodies, an unknown commit outcome that keeps
//! the outputs, a backfill ordered during a first load, and OAuth refreshes serialised across
//! invocations. Each test fails with its mechanism taken out.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use capsule_aws::{DynamoState, RefreshLock, SecretsManagerToken};
use capsule_client::{CapsuleClient, ClientOptions, RetryPolicy};
use capsule_core::SyncError;
use capsule_core::integration::RunId;
use capsule_core::ports::{RunState, StateStore, TokenProvider};
use capsule_engine::engine::{self, LocalDispatch, RunOptions, RunPorts};
use capsule_engine::lifecycle::MAX_STALLED_INVOCATIONS;
use capsule_sync_e2e::aws::*;
use capsule_sync_e2e::capsule_sim::{Fault, FaultRule, MutationKind, MutationOp};
use capsule_sync_e2e::faults::{Broken, Fault as Injected, FaultyState, Injection, Step};
use capsule_sync_e2e::loader::{Settled, load};
use capsule_sync_e2e::*;
use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

fn always(path: &str, fault: Fault) -> FaultRule {
    FaultRule { path: Some(path.into()), fault, after: 0, times: None, probability: None }
}

async fn run_parties(
    client: &CapsuleClient,
    integration: &capsule_core::integration::Integration,
    deps: RunPorts<'_>,
    options: RunOptions,
) -> engine::TableRunOutcome {
    let tables = capsule_core::catalog::resolve_tables(&["parties".to_string()]).unwrap();
    let dispatch = LocalDispatch { concurrency: 1, progress: None, redo: false };
    let run = RunId::new(Utc::now());
    engine::run_tables(client, deps, integration, &tables, &run, options, dispatch).await.remove(0)
}

/// A heartbeat that cannot reach the state store stops the run before its lease expires (after
/// which another invocation may take the table): it writes nothing more, publishes nothing,
/// and the bookmark stays. Without self-fencing, the run would go on past the lease and commit.
#[tokio::test]
async fn a_run_that_cannot_renew_its_lease_stops_before_it_expires() {
    let sim = start_sim(800, |_| {}).await;
    sim.add_fault(slow_pages("/parties", 400));
    let local = Local::new();
    let integration = integration_for(&sim, "acme", "UNUSED");
    let client = client_for(&sim, "test-token");
    let broken = Broken { renewals: true, ..Broken::default() };
    let state = FaultyState { inner: Arc::new(local.state.clone()), injection: Injection::none(), broken };
    let ttl = Duration::from_secs(3);
    let options = RunOptions { lease_ttl: ttl, ..RunOptions::default() };
    let started = Instant::now();
    let outcome = run_parties(&client, &integration, RunPorts { state: &state, sink: &local.sink }, options).await;
    let stopped = started.elapsed();
    assert_eq!(outcome.record.state, RunState::Failed);
    let error = outcome.error.unwrap();
    assert!(matches!(error, SyncError::LeaseLost(_)), "{error}");
    assert!(error.to_string().contains("could not be renewed"), "{error}");
    assert!(stopped < ttl, "stopped after {stopped:?}, before the {ttl:?} lease could pass to another invocation");
    let requests = sim.stats().count("GET /parties");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(sim.stats().count("GET /parties"), requests, "nothing is sent after the fence");
    assert!(local.state.bookmark("acme", "parties").await.unwrap().is_none());
}

/// A rate-limit wait that would end past the invocation's deadline is not slept: the request
/// ends at once with a pause (the run checkpoints) — even though the client would otherwise
/// wait up to an hour in place.
#[tokio::test]
async fn a_rate_limit_wait_past_the_deadline_pauses_instead() {
    let sim = start_sim(50, |c| {
        c.rate_limit = 3;
        c.rate_window = Duration::from_secs(20);
    })
    .await;
    let client = client_for(&sim, "test-token").with_deadline(Instant::now() + Duration::from_secs(2));
    let url = client.url("/users", &[]).unwrap();
    let started = Instant::now();
    let mut paused = None;
    for _ in 0..6 {
        if let Err(error) = client.get_json(&url).await {
            paused = Some(error);
            break;
        }
    }
    let paused = paused.expect("the window ran out");
    assert!(matches!(paused, SyncError::Throttled { failing: None, .. }), "{paused}");
    assert!(started.elapsed() < Duration::from_secs(2), "not slept: {:?}", started.elapsed());
}

/// A retry whose backoff would outlive the deadline is not slept either: the request pauses,
/// naming itself as the failing request (such pauses are counted).
#[tokio::test]
async fn a_retry_backoff_past_the_deadline_pauses_instead() {
    let sim = start_sim(50, |_| {}).await;
    sim.add_fault(always("/users", Fault::Status { status: 503 }));
    let options = ClientOptions {
        retry: RetryPolicy { max_retries: 4, min_delay: Duration::from_secs(2), max_delay: Duration::from_secs(4) },
        ..fast_client_options()
    };
    let client = CapsuleClient::new(sim.base_url(), SecretString::from("test-token".to_string()), options).unwrap();
    let client = client.with_deadline(Instant::now() + Duration::from_secs(1));
    let started = Instant::now();
    let error = client.get_json(&client.url("/users", &[]).unwrap()).await.unwrap_err();
    assert!(
        matches!(&error, SyncError::Throttled { failing: Some(request), .. } if request.contains("/users")),
        "{error}"
    );
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
}

/// A page that fails in every invocation (Capsule's outages are waited out between invocations)
/// ends the run after a bounded number of them, failed, naming the request; the bookmark stays.
#[tokio::test]
async fn a_request_that_fails_in_every_invocation_ends_the_run() {
    let sim = start_sim(300, |_| {}).await;
    sim.add_fault(FaultRule { after: 1, ..always("/parties", Fault::Status { status: 503 }) });
    let local = Local::new();
    let integration = integration_for(&sim, "acme", "UNUSED");
    let options = ClientOptions { outage_pause: Some(Duration::from_millis(50)), ..fast_client_options() };
    let client = CapsuleClient::new(sim.base_url(), SecretString::from("test-token".to_string()), options).unwrap();
    let run = run_parties(&client, &integration, local.deps(), RunOptions::default());
    let outcome = tokio::time::timeout(Duration::from_secs(60), run).await.expect("the loop is bounded");
    assert_eq!(outcome.record.state, RunState::Failed);
    let error = outcome.error.unwrap();
    assert!(matches!(error, SyncError::GaveUp(_)), "{error}");
    let message = error.to_string();
    let bound = format!("{MAX_STALLED_INVOCATIONS} invocations");
    assert!(message.contains("/parties?page=2") && message.contains(&bound), "{message}");
    let continued = local.state.runs(Some("acme"), 100).await.unwrap();
    let pauses = continued.iter().filter(|r| r.state == RunState::Continued).count();
    assert!(pauses >= MAX_STALLED_INVOCATIONS as usize - 1, "{pauses} pauses");
    assert!(local.state.bookmark("acme", "parties").await.unwrap().is_none());
}

/// A response body larger than the limit fails its request with a clear error, before more
/// than the limit is held.
#[tokio::test]
async fn an_oversized_page_fails_clearly() {
    let sim = start_sim(300, |_| {}).await;
    let options = ClientOptions { max_body_bytes: 4096, ..fast_client_options() };
    let client = CapsuleClient::new(sim.base_url(), SecretString::from("test-token".to_string()), options).unwrap();
    let url = client.url("/parties", &[("perPage", "100")]).unwrap();
    let error = client.get_json(&url).await.unwrap_err();
    assert!(matches!(error, SyncError::BadResponse { .. }), "{error}");
    assert!(error.to_string().contains("larger than the 4096-byte limit"), "{error}");
    let small = client.url("/users", &[]).unwrap();
    client.get_json(&small).await.expect("a page under the limit reads");
}

/// A commit whose answer is lost, and whose confirming read fails too, has an unknown outcome:
/// the run keeps its outputs (the commit may have landed, and the bookmark moved past them),
/// and the next run publishes the manifest from the stored bookmark. Nothing is lost.
#[tokio::test]
async fn a_commit_of_unknown_outcome_keeps_its_outputs() {
    let sim = start_sim(300, |_| {}).await;
    let local = Local::new();
    let integration = integration_for(&sim, "acme", "UNUSED");
    let client = client_for(&sim, "test-token");
    let broken = Broken { bookmark_reads_after_commit: true, ..Broken::default() };
    let injection = Injection::new(Step::AfterCommit, Injected::Fail);
    let state = FaultyState { inner: Arc::new(local.state.clone()), injection, broken };
    let lost =
        run_parties(&client, &integration, RunPorts { state: &state, sink: &local.sink }, RunOptions::default()).await;
    assert_eq!(lost.record.state, RunState::Failed, "its outcome is unknown");
    assert!(lost.error.unwrap().to_string().contains("outputs are kept"));
    assert!(!local.run_files("acme", "parties", &lost.record.run_id).is_empty(), "its files are kept");
    assert!(local.state.bookmark("acme", "parties").await.unwrap().is_some(), "the commit had landed");
    sim.mutate_n(MutationKind::Parties, MutationOp::Update, 5).unwrap();
    let next = run_parties(&client, &integration, local.deps(), RunOptions::default()).await;
    assert_eq!(next.record.state, RunState::Succeeded);
    // The loader sees the first run (published late) and the second: every party.
    let current = load(&local.sink, &local.state, "acme", "parties", Settled::Yes).await.current(&Default::default());
    assert_eq!(current.len(), expected_counts(&sim)["parties"], "no party lost");
    let history = local.state.runs(Some("acme"), 10).await.unwrap();
    let latest = history.iter().find(|r| r.run_id == lost.record.run_id).unwrap();
    assert_eq!(latest.state, RunState::Succeeded, "the history tells it committed");
}

/// A backfill ordered (the history start moved earlier) while the table's first load is in
/// flight — there is no bookmark yet to drop — takes effect: the run after it reads from the
/// new history start.
#[tokio::test]
async fn a_backfill_ordered_during_a_first_load_takes_effect() {
    let sim = start_sim(300, |_| {}).await;
    let local = Local::new();
    let mut integration = integration_for(&sim, "acme", "UNUSED");
    integration.history_start = Utc::now() - chrono::Duration::days(30);
    local.state.create_integration(&integration).await.unwrap();
    let client = client_for(&sim, "test-token");
    sim.add_fault(slow_pages("/parties", 150));
    let first = run_parties(&client, &integration, local.deps(), RunOptions::default());
    let edit = async {
        while sim.stats().count("GET /parties") < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // What `integrations edit --history-start` does: one write of the integration.
        let mut edited = local.state.get_integration("acme").await.unwrap().unwrap();
        edited.history_start = chrono::DateTime::parse_from_rfc3339("2000-01-01T00:00:00Z").unwrap().to_utc();
        edited.order_backfill("parties");
        local.state.update_integration(&edited).await.unwrap();
        edited
    };
    let (first, edited) = tokio::join!(first, edit);
    assert_eq!(first.record.state, RunState::Succeeded, "the first load commits as it was");
    assert_eq!(first.record.since, Some(integration.history_start));
    sim.clear_faults();
    let next = run_parties(&client, &edited, local.deps(), RunOptions::default()).await;
    assert_eq!(next.record.state, RunState::Succeeded);
    assert_eq!(next.record.since, Some(edited.history_start), "the backfill read from the new history start");
    let after = run_parties(&client, &edited, local.deps(), RunOptions::default()).await;
    assert_ne!(after.record.since, Some(edited.history_start), "and only once");
}

/// Many invocations find the OAuth access token expired at once: one refreshes (Capsule rotates
/// the refresh token, so a second refresh with the old one would be refused), the others wait
/// under the lock and read the refreshed token from the secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_oauth_refreshes_of_one_secret_are_serialised() {
    let stack = AwsStack::new().await;
    let endpoint = TokenEndpoint::start("access-new", "refresh-0").await;
    let expired = (Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let name = create_secret(
        &stack.clients,
        json!({"client_id": "cid", "client_secret": "cs", "refresh_token": "refresh-0",
               "access_token": "access-old", "expires_at": expired}),
    )
    .await;
    let state: Arc<dyn StateStore> = Arc::new(DynamoState::new(stack.clients.dynamodb.clone(), &stack.table));
    let providers: Vec<SecretsManagerToken> = (0..8)
        .map(|_| {
            SecretsManagerToken::new(stack.clients.secrets.clone(), name.clone(), endpoint.url())
                .with_refresh_lock(RefreshLock { state: state.clone(), integration: "acme".into() })
        })
        .collect();
    let tokens = futures::future::join_all(providers.iter().map(|p| p.token())).await;
    for token in tokens {
        assert_eq!(token.expect("every invocation gets a token").expose_secret(), "access-new");
    }
    assert_eq!(endpoint.calls.load(Ordering::SeqCst), 1, "one refresh");
    assert_eq!(read_secret(&stack.clients, &name).await["refresh_token"], "refresh-1");
}
