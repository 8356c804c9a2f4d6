//! One contract suite per port, written once and run against every adapter (vector's
//! `assert_sink_compliance`): the state store on the state file and on DynamoDB, the object
//! sink on a directory and on S3, token providers on an environment variable, a file and
//! Secrets Manager. A behaviour one adapter has and the other lacks fails here first. The AWS
//! adapters run against moto_server over HTTP (the real SDK).

use std::time::Duration;

use bytes::Bytes;
use capsule_core::SyncError;
use capsule_core::integration::{Integration, IntegrationStatus, RunId, TokenSource};
use capsule_core::manifest::RequestStats;
use capsule_core::ports::{
    Bookmark, BookmarkBase, Checkpoint, Cursor, DispatchRecord, Lease, LeaseOwner, ObjectSink, Parking, RunState,
    StateStore, TableRunRecord, TokenProvider,
};
use chrono::Utc;
use secrecy::ExposeSecret;

/// Runs a `StateStore` contract against the state file and DynamoDB.
macro_rules! state_contract {
    ($contract:ident) => {
        mod $contract {
            #[tokio::test]
            async fn on_the_state_file() {
                super::$contract(&capsule_sync_e2e::Local::new().state).await
            }
            #[tokio::test]
            async fn on_dynamodb() {
                super::$contract(&capsule_sync_e2e::aws::AwsStack::new().await.state).await
            }
        }
    };
}

/// Runs an `ObjectSink` contract against a directory and an S3 bucket.
macro_rules! sink_contract {
    ($contract:ident) => {
        mod $contract {
            #[tokio::test]
            async fn on_a_directory() {
                let dir = tempfile::tempdir().unwrap();
                super::$contract(&capsule_local::LocalSink::new(dir.path())).await
            }
            #[tokio::test]
            async fn on_s3() {
                super::$contract(&capsule_sync_e2e::aws::AwsStack::new().await.sink).await
            }
        }
    };
}

state_contract!(integrations_are_created_once_and_updated_only_if_they_exist);
state_contract!(leases_exclude_other_runs_and_only_the_holder_commits);
state_contract!(a_stale_lease_is_taken_over_and_its_old_holder_cannot_commit);
state_contract!(checkpoints_fence_continuations);
state_contract!(commits_find_the_bookmark_they_started_from_and_are_idempotent);
state_contract!(run_records_come_newest_first_and_a_final_one_replaces_running);
state_contract!(dispatch_records_find_the_latest);
state_contract!(a_held_table_is_released_when_the_run_it_waits_for_ends);
state_contract!(fencing_numbers_rise_and_a_replaced_invocation_can_write_nothing);
state_contract!(a_lease_is_released_only_by_its_holder);
state_contract!(locks_exclude_other_holders_until_they_expire);
state_contract!(the_due_index_follows_every_write_that_changes_due_time);
sink_contract!(objects_appear_whole_or_not_at_all);

mod budgets_are_updated_atomically {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn on_the_state_file() {
        let local = capsule_sync_e2e::Local::new();
        super::budgets_are_updated_atomically(std::sync::Arc::new(local.state.clone())).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn on_dynamodb() {
        let stack = capsule_sync_e2e::aws::AwsStack::new().await;
        super::budgets_are_updated_atomically(std::sync::Arc::new(stack.state)).await;
    }
}

fn record(integration: &str, table: &str, run_id: &RunId, state: RunState) -> TableRunRecord {
    let mut r = TableRunRecord::new(integration, table, run_id, state, Utc::now());
    r.finished_at = Some(Utc::now());
    r
}

/// Integrations are created once, updated only if they exist, listed by name, deleted.
async fn integrations_are_created_once_and_updated_only_if_they_exist(state: &dyn StateStore) {
    let mut acme =
        Integration::new("acme".parse().unwrap(), TokenSource::SecretsManager { secret_id: "s".into() }, Utc::now());
    state.create_integration(&acme).await.unwrap();
    let err = state.create_integration(&acme).await.unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    acme.status = IntegrationStatus::Paused;
    state.update_integration(&acme).await.unwrap();
    assert_eq!(state.get_integration("acme").await.unwrap().unwrap().status, IntegrationStatus::Paused);
    let ghost = Integration::new("ghost".parse().unwrap(), TokenSource::Env { var: "X".into() }, Utc::now());
    assert!(state.update_integration(&ghost).await.unwrap_err().to_string().contains("no integration"));
    state.create_integration(&ghost).await.unwrap();
    let names: Vec<String> = state.list_integrations().await.unwrap().into_iter().map(|i| i.name.into()).collect();
    assert_eq!(names, vec!["acme", "ghost"]);
    // Deleting takes the integration's bookmarks, leases and checkpoints with it.
    let run: RunId = "20261128T080000Z-aaaaaa".parse().unwrap();
    let wanted = Lease::first("ghost", "parties", who(&run, "o"), Utc::now(), Duration::from_secs(600));
    let held = state.acquire_lease(&wanted).await.unwrap().lease;
    let saved = Checkpoint { integration: "ghost".into(), ..checkpoint(&run, "o", 1) };
    let parking = Parking { checkpoint: saved, hold_until: Utc::now() + chrono::Duration::minutes(10) };
    state.save_checkpoint(&held, &parking, &record("ghost", "parties", &run, RunState::Continued)).await.unwrap();
    assert_eq!(state.table_states("ghost").await.unwrap().len(), 1);
    assert!(state.delete_integration("ghost").await.unwrap());
    assert!(state.table_states("ghost").await.unwrap().is_empty(), "leases and checkpoints are gone");
    assert!(state.checkpoint("ghost", "parties", &run).await.unwrap().is_none());
    assert!(!state.delete_integration("ghost").await.unwrap());
    assert!(state.get_integration("ghost").await.unwrap().is_none());
}

fn lease(table: &str, owner: &str, run: &RunId, ttl: Duration) -> Lease {
    Lease::first("acme", table, who(run, owner), Utc::now(), ttl)
}

/// A lease owner of `run` named for the test (its nonce derived from `name`).
fn who(run: &RunId, name: &str) -> LeaseOwner {
    LeaseOwner {
        run: run.clone(),
        nonce: name.bytes().fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b))),
    }
}

/// The lease contract, run against every `StateStore` adapter.
async fn leases_exclude_other_runs_and_only_the_holder_commits(state: &dyn StateStore) {
    let run_a: RunId = "20261128T080000Z-aaaaaa".parse().unwrap();
    let run_b: RunId = "20261128T090000Z-bbbbbb".parse().unwrap();
    let ttl = Duration::from_secs(600);

    let a = state.acquire_lease(&lease("parties", "run-a", &run_a, ttl)).await.unwrap();
    assert!(a.displaced.is_none());
    let held = state.acquire_lease(&lease("parties", "run-b", &run_b, ttl)).await.unwrap_err();
    assert!(
        matches!(held, SyncError::LeaseHeld { ref holder, .. } if holder.as_ref() == Some(&who(&run_a, "run-a"))),
        "{held}"
    );
    let a = state.acquire_lease(&lease("parties", "run-a", &run_a, ttl)).await.expect("the holder may take it again");
    state.acquire_lease(&lease("tasks", "run-b", &run_b, ttl)).await.expect("another table is independent");

    let bookmark = first_bookmark(&run_a, Utc::now());
    state
        .commit(&a.lease, &bookmark, BookmarkBase::Unchecked, &record("acme", "parties", &run_a, RunState::Succeeded))
        .await
        .unwrap();
    assert_eq!(state.bookmark("acme", "parties").await.unwrap(), Some(bookmark.clone()));
    // Committing again without the lease changes nothing.
    let again = first_bookmark(&run_b, Utc::now());
    let err = state
        .commit(&a.lease, &again, BookmarkBase::Unchecked, &record("acme", "parties", &run_b, RunState::Succeeded))
        .await
        .unwrap_err();
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
    assert_eq!(fresh.lease.owner, who(&run, "new-run"));
    assert_eq!(fresh.displaced.map(|l| l.owner), Some(who(&run, "crashed-run")), "the takeover is reported");

    let bookmark = first_bookmark(&run, Utc::now());
    let err = state
        .commit(&stale, &bookmark, BookmarkBase::Unchecked, &record("acme", "parties", &run, RunState::Succeeded))
        .await;
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
        owner: who(run, owner),
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
        type_mismatches: vec![],
        requests: RequestStats { requests: 2, retries: 0, rate_limited: 0 },
        invocations,
        not_before: None,
        failures: 0,
        bookmark_base: BookmarkBase::Absent,
        stalls: Default::default(),
        backfill: 0,
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
    let intruder = Lease { owner: who(&run, "intruder"), ..first.clone() };
    assert!(state.save_checkpoint(&intruder, &parking, &continued).await.is_err());
    let fresh_run = state.acquire_lease(&lease("parties", "owner-2", &other, ttl)).await;
    assert!(fresh_run.is_err(), "a parked lease still excludes other runs");

    // Invocation 2 takes the parked lease; a duplicate 2, or a late 1, is refused.
    let second = state.resume_lease("acme", "parties", &who(&run, "owner-1"), 2, ttl).await.unwrap();
    assert_eq!(second.invocation, 2);
    for seq in [2, 1, 3] {
        let refused = state.resume_lease("acme", "parties", &who(&run, "owner-1"), seq, ttl).await.unwrap_err();
        assert!(matches!(refused, SyncError::Superseded(_)), "{seq}: {refused}");
    }
    // The first invocation can write nothing any more.
    let bookmark = first_bookmark(&run, saved.started_at);
    assert!(
        state
            .commit(&first, &bookmark, BookmarkBase::Unchecked, &record("acme", "parties", &run, RunState::Succeeded))
            .await
            .is_err()
    );

    // Invocation 2 fails retryably: the checkpoint stays and a retry of 2 may take the lease.
    let retry = Parking { checkpoint: Checkpoint { failures: 1, ..saved.clone() }, hold_until: Utc::now() };
    state.record_failure(&second, &record("acme", "parties", &run, RunState::Failed), Some(&retry)).await.unwrap();
    assert_eq!(state.checkpoint("acme", "parties", &run).await.unwrap().unwrap().failures, 1);
    let states = state.table_states("acme").await.unwrap();
    assert_eq!(states.len(), 1);
    assert_eq!(states[0].lease.as_ref().map(|l| (l.invocation, l.next)), Some((0, 2)), "parked for a retry of 2");
    let retried = state.resume_lease("acme", "parties", &who(&run, "owner-1"), 2, ttl).await.unwrap();
    state
        .commit(&retried, &bookmark, BookmarkBase::Unchecked, &record("acme", "parties", &run, RunState::Succeeded))
        .await
        .unwrap();
    assert!(state.checkpoint("acme", "parties", &run).await.unwrap().is_none(), "commit drops the checkpoint");
    assert!(state.table_states("acme").await.unwrap().is_empty(), "nothing left in progress");
}

/// Claims on one budget from many tasks at once never exceed the window's share.
async fn budgets_are_updated_atomically(state: std::sync::Arc<dyn StateStore>) {
    use capsule_core::budget::{BudgetPolicy, Claim};
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

/// A commit moves the bookmark only from the one its run started from: when an edit drops it
/// for a backfill while the run works, the commit is refused and nothing moves (the lease is
/// still the run's to release). Committing again what was committed (a transaction whose answer
/// was lost, retried) succeeds and changes nothing.
async fn commits_find_the_bookmark_they_started_from_and_are_idempotent(state: &dyn StateStore) {
    let ttl = Duration::from_secs(600);
    let runs: Vec<RunId> = ["20261128T080000Z-aaaaaa", "20261128T090000Z-bbbbbb", "20261128T100000Z-cccccc"]
        .iter()
        .map(|r| r.parse().unwrap())
        .collect();
    let bookmark = |run: &RunId, base: BookmarkBase| Bookmark {
        last_run_started: Utc::now(),
        run_id: run.clone(),
        previous: None,
        generation: base.next_generation(),
        backfill: 0,
    };

    let first = state.acquire_lease(&lease("parties", "o1", &runs[0], ttl)).await.unwrap().lease;
    let base = BookmarkBase::of(state.bookmark("acme", "parties").await.unwrap().as_ref());
    assert_eq!(base, BookmarkBase::Absent);
    let b1 = bookmark(&runs[0], base);
    let done = record("acme", "parties", &runs[0], RunState::Succeeded);
    state.commit(&first, &b1, base, &done).await.unwrap();
    state.commit(&first, &b1, base, &done).await.expect("the same commit again succeeds");
    assert_eq!(state.bookmark("acme", "parties").await.unwrap(), Some(b1.clone()));
    assert_eq!(state.runs(Some("acme"), 10).await.unwrap().len(), 1, "recorded once");

    // The next run starts from generation 1; an edit drops the bookmark while it works.
    let second = state.acquire_lease(&lease("parties", "o2", &runs[1], ttl)).await.unwrap().lease;
    let base = BookmarkBase::of(state.bookmark("acme", "parties").await.unwrap().as_ref());
    assert_eq!(base, BookmarkBase::Generation(1));
    state.delete_bookmark("acme", "parties").await.unwrap();
    let refused = state
        .commit(&second, &bookmark(&runs[1], base), base, &record("acme", "parties", &runs[1], RunState::Succeeded))
        .await
        .unwrap_err();
    assert!(matches!(refused, SyncError::BookmarkMoved(_)), "{refused}");
    assert!(!refused.is_retryable(), "its window is stale: the next run starts over");
    assert!(state.bookmark("acme", "parties").await.unwrap().is_none(), "the backfill is not skipped");
    let held = state.acquire_lease(&lease("parties", "o3", &runs[2], ttl)).await.unwrap_err();
    assert!(matches!(held, SyncError::LeaseHeld { .. }), "the refused run still holds its lease: {held}");
    state.record_failure(&second, &record("acme", "parties", &runs[1], RunState::Failed), None).await.unwrap();

    // The run after it reads from the history start and commits generation 1 again.
    let third = state.acquire_lease(&lease("parties", "o3", &runs[2], ttl)).await.unwrap().lease;
    let base = BookmarkBase::of(state.bookmark("acme", "parties").await.unwrap().as_ref());
    assert_eq!(base, BookmarkBase::Absent);
    let b3 = bookmark(&runs[2], base);
    state.commit(&third, &b3, base, &record("acme", "parties", &runs[2], RunState::Succeeded)).await.unwrap();
    assert_eq!(state.bookmark("acme", "parties").await.unwrap().map(|b| b.generation), Some(1));
}

/// Run records come newest first; a run's final record replaces its `running` one.
async fn run_records_come_newest_first_and_a_final_one_replaces_running(state: &dyn StateStore) {
    let older: RunId = "20261128T080000Z-aaaaaa".parse().unwrap();
    let newer: RunId = "20261128T090000Z-bbbbbb".parse().unwrap();
    let running = TableRunRecord::new("acme", "parties", &older, RunState::Running, Utc::now());
    state.record_run(&running).await.unwrap();
    assert_eq!(state.runs(Some("acme"), 10).await.unwrap()[0].state, RunState::Running);
    let failed = TableRunRecord { state: RunState::Failed, finished_at: Some(Utc::now()), ..running.clone() };
    state.record_run(&failed).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    state.record_run(&record("acme", "tasks", &newer, RunState::Succeeded)).await.unwrap();
    state.record_run(&record("other", "tasks", &newer, RunState::Succeeded)).await.unwrap();
    let runs = state.runs(Some("acme"), 10).await.unwrap();
    let seen: Vec<(&str, RunState)> = runs.iter().map(|r| (r.table.as_str(), r.state)).collect();
    assert_eq!(seen, vec![("tasks", RunState::Succeeded), ("parties", RunState::Failed)]);
    assert_eq!(state.runs(Some("acme"), 1).await.unwrap().len(), 1, "the limit keeps the newest");
}

/// An object is visible whole at its key once finished, or not at all: not while it is being
/// written, not after an abort (which leaves a previous object as it was). Listing, deleting
/// (a missing key included) and removing a folder behave the same everywhere.
async fn objects_appear_whole_or_not_at_all(sink: &dyn ObjectSink) {
    let part = "acme/parties/dt=2026-11-29/run=20261129T080000Z-aaaaaa/part-00000.ndjson.gz";
    let mut upload = sink.begin(part).await.unwrap();
    upload.write(Bytes::from_static(b"{\"id\":1}\n")).await.unwrap();
    upload.write(Bytes::from_static(b"{\"id\":2}\n")).await.unwrap();
    assert!(sink.list("acme/").await.unwrap().is_empty(), "nothing visible before finish");
    assert!(sink.get(part).await.unwrap().is_none());
    upload.finish().await.unwrap();
    assert_eq!(sink.get(part).await.unwrap().unwrap(), Bytes::from_static(b"{\"id\":1}\n{\"id\":2}\n"));

    let mut replaced_then_aborted = sink.begin(part).await.unwrap();
    replaced_then_aborted.write(Bytes::from_static(b"{\"id\":3}\n")).await.unwrap();
    replaced_then_aborted.abort().await;
    assert_eq!(sink.get(part).await.unwrap().unwrap().len(), 18, "an abort leaves the previous object");

    let second = part.replace("part-00000", "part-00001");
    sink.put(&second, Bytes::from_static(b"{}\n")).await.unwrap();
    sink.put("acme/tasks/dt=2026-11-29/run=x/part-00000.ndjson.gz", Bytes::from_static(b"{}\n")).await.unwrap();
    sink.put("_meta/acme/runs/x/tasks.json", Bytes::from_static(b"{}")).await.unwrap();
    assert_eq!(sink.list("acme/parties/").await.unwrap(), vec![part.to_string(), second.clone()]);
    assert_eq!(sink.list("acme/").await.unwrap().len(), 3);
    sink.delete(&second).await.unwrap();
    sink.delete("acme/parties/never-written.ndjson.gz").await.expect("deleting a missing key is fine");
    assert_eq!(sink.list("acme/parties/").await.unwrap(), vec![part.to_string()]);
    sink.remove_prefix("acme/parties/").await.unwrap();
    sink.remove_prefix("nothing/here/").await.unwrap();
    assert_eq!(sink.list("acme/").await.unwrap(), vec!["acme/tasks/dt=2026-11-29/run=x/part-00000.ndjson.gz"]);
    assert_eq!(sink.get("_meta/acme/runs/x/tasks.json").await.unwrap().unwrap(), Bytes::from_static(b"{}"));

    // Slices of an object, for reading a large one in flat memory.
    let big = "acme/entries/dt=2026-11-29/run=x/part-00000.ndjson.gz";
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    sink.put(big, Bytes::from(body.clone())).await.unwrap();
    let mut read = Vec::new();
    for start in (0..body.len() as u64).step_by(65_536) {
        let end = (start + 65_536).min(body.len() as u64);
        read.extend_from_slice(&sink.get_range(big, start..end).await.unwrap().unwrap());
    }
    assert_eq!(read, body, "the slices make up the object");
    assert_eq!(sink.get_range(big, 10..13).await.unwrap().unwrap(), Bytes::from(body[10..13].to_vec()));
    assert!(sink.get_range("acme/entries/never-written.ndjson.gz", 0..10).await.unwrap().is_none());
}

/// A token provider reads its source, reads it again when Capsule refused the last token
/// (`refresh`), and names the source, never a value, when the source holds no token.
async fn tokens_are_read_again_when_refreshed<F, Fut>(provider: &dyn TokenProvider, store: F)
where
    F: Fn(&'static str) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    store("tok-first").await;
    assert_eq!(provider.token().await.unwrap().expose_secret(), "tok-first");
    store("tok-rotated").await;
    assert_eq!(provider.refresh().await.unwrap().expose_secret(), "tok-rotated", "refresh reads past any cache");
    assert_eq!(provider.token().await.unwrap().expose_secret(), "tok-rotated");
    store("").await;
    let err = provider.refresh().await.unwrap_err();
    assert!(matches!(err, SyncError::Credentials(_)), "{err}");
    assert!(!err.to_string().contains("tok-"), "{err}");
}

mod tokens_are_read_again_when_refreshed {
    use capsule_local::{EnvToken, FileToken};

    #[tokio::test]
    async fn from_an_environment_variable() {
        let var = format!("CAPSULE_CONTRACT_TOKEN_{}", std::process::id());
        let provider = EnvToken { var: var.clone() };
        super::tokens_are_read_again_when_refreshed(&provider, |value| {
            // SAFETY: nothing else in this test process reads or writes this variable.
            unsafe { std::env::set_var(&var, value) };
            async {}
        })
        .await;
    }

    #[tokio::test]
    async fn from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let provider = FileToken { path: path.clone() };
        super::tokens_are_read_again_when_refreshed(&provider, |value| {
            std::fs::write(&path, format!("{value}\n")).unwrap();
            async {}
        })
        .await;
    }

    #[tokio::test]
    async fn from_secrets_manager() {
        use capsule_sync_e2e::aws::*;
        let clients = moto_clients().await;
        let name = create_secret(&clients, serde_json::json!({"token": "unused"})).await;
        let provider = capsule_aws::SecretsManagerToken::new(clients.secrets.clone(), name.clone(), capsule_oauth());
        super::tokens_are_read_again_when_refreshed(&provider, |value| {
            let (clients, name) = (clients.clone(), name.clone());
            async move {
                let doc = serde_json::json!({"token": value}).to_string();
                clients.secrets.put_secret_value().secret_id(name).secret_string(doc).send().await.unwrap();
            }
        })
        .await;
    }
}
/// The latest dispatch of an integration is the one dispatched last.
async fn dispatch_records_find_the_latest(state: &dyn StateStore) {
    for (run_id, minutes) in [("20261128T080000Z-aaaaaa", 60), ("20261128T090000Z-bbbbbb", 0)] {
        let d = DispatchRecord {
            integration: "acme".into(),
            run_id: run_id.parse().unwrap(),
            tables: vec!["parties".into()],
            dispatched_at: Utc::now() - chrono::Duration::minutes(minutes),
            failed: vec![],
            held: vec![],
            started_by: capsule_core::ports::StartedBy::Schedule,
        };
        state.record_dispatch(&d).await.unwrap();
    }
    assert_eq!(state.last_dispatch("acme").await.unwrap().unwrap().run_id.as_str(), "20261128T090000Z-bbbbbb");
    assert!(state.last_dispatch("nobody").await.unwrap().is_none());
    let all: Vec<String> = state.dispatches("acme", 10).await.unwrap().iter().map(|d| d.run_id.to_string()).collect();
    assert_eq!(all, ["20261128T090000Z-bbbbbb", "20261128T080000Z-aaaaaa"], "newest first");
    assert_eq!(state.dispatches("acme", 1).await.unwrap().len(), 1);
}

/// A table the orchestrator holds for another's run of the same sync (tracks for tasks) is sent
/// once that run has committed, or has left no trace two lease TTLs after the dispatch; never
/// while it holds a lease of this sync, or is itself still to be sent.
async fn a_held_table_is_released_when_the_run_it_waits_for_ends(state: &dyn StateStore) {
    use capsule_engine::lifecycle::held_table_released;
    let run: RunId = "20261128T080000Z-aaaaaa".parse().unwrap();
    let other: RunId = "20261127T080000Z-bbbbbb".parse().unwrap();
    let ttl = Duration::from_secs(60);
    let now = Utc::now();
    let later = now + chrono::Duration::minutes(3);
    let mut dispatch = DispatchRecord {
        integration: "acme".into(),
        run_id: run.clone(),
        tables: vec!["tasks".into(), "tracks".into()],
        dispatched_at: now,
        failed: vec![("tasks".to_string(), "throttled".to_string()).into()],
        held: vec![("tracks".to_string(), "tasks".to_string()).into()],
        started_by: capsule_core::ports::StartedBy::Schedule,
    };
    let released = |d: &DispatchRecord, at| {
        let d = d.clone();
        async move { held_table_released(state, &d, "tasks", ttl, at).await.unwrap() }
    };
    assert_eq!(released(&dispatch, later).await, None, "tasks itself is still to be sent");
    dispatch.failed.clear();
    assert_eq!(released(&dispatch, now).await, None, "tasks may not have started yet");
    // Another sync's lease on tasks says nothing of this one's run.
    let theirs = state.acquire_lease(&lease("tasks", "theirs", &other, ttl)).await.unwrap().lease;
    assert_eq!(released(&dispatch, later).await.as_deref(), Some("the run of tasks ended without committing"));
    state.record_failure(&theirs, &record("acme", "tasks", &other, RunState::Failed), None).await.unwrap();
    let ours = state.acquire_lease(&lease("tasks", "ours", &run, ttl)).await.unwrap().lease;
    assert_eq!(released(&dispatch, later).await, None, "tasks' run is going on, however long");
    let bookmark = first_bookmark(&run, now);
    let done = record("acme", "tasks", &run, RunState::Succeeded);
    state.commit(&ours, &bookmark, BookmarkBase::Unchecked, &done).await.unwrap();
    assert_eq!(released(&dispatch, now).await.as_deref(), Some("tasks committed"));
}

/// Every park, resume and recovery gives the lease a greater fencing number, and every write is
/// conditioned on it: an invocation presumed dead (stranded) and replaced under the *same*
/// invocation number — as a recovery does — can no longer renew, park or commit.
async fn fencing_numbers_rise_and_a_replaced_invocation_can_write_nothing(state: &dyn StateStore) {
    let run: RunId = "20261128T080000Z-aaaaaa".parse().unwrap();
    let ttl = Duration::from_secs(600);
    let first = state.acquire_lease(&lease("parties", "owner-1", &run, ttl)).await.unwrap().lease;
    let saved = checkpoint(&run, "owner-1", 1);
    let parking = Parking { checkpoint: saved.clone(), hold_until: Utc::now() + chrono::Duration::minutes(10) };
    state.save_checkpoint(&first, &parking, &record("acme", "parties", &run, RunState::Continued)).await.unwrap();
    let parked = state.table_states("acme").await.unwrap()[0].lease.clone().unwrap();
    assert!(parked.fence > first.fence, "parking raises the fence: {} -> {}", first.fence, parked.fence);

    let slow = state.resume_lease("acme", "parties", &who(&run, "owner-1"), 2, ttl).await.unwrap();
    assert!(slow.fence > parked.fence);
    // Presumed dead: its recovery parks the lease for a retry of the same invocation number 2.
    let retry = Parking { checkpoint: Checkpoint { failures: 1, ..saved.clone() }, hold_until: Utc::now() };
    state.record_failure(&slow, &record("acme", "parties", &run, RunState::Failed), Some(&retry)).await.unwrap();
    let replacement = state.resume_lease("acme", "parties", &who(&run, "owner-1"), 2, ttl).await.unwrap();
    assert_eq!(replacement.invocation, slow.invocation, "the same invocation number");
    assert!(replacement.fence > slow.fence, "but a greater fence: {} -> {}", slow.fence, replacement.fence);

    // The slow one wakes up: every write it tries is refused.
    let renewed = Lease { expires_at: Utc::now() + chrono::Duration::minutes(10), ..slow.clone() };
    let lost = state.renew_lease(&renewed).await.unwrap_err();
    assert!(capsule_core::ports::is_lease_lost(&lost), "{lost}");
    assert!(
        state.save_checkpoint(&slow, &parking, &record("acme", "parties", &run, RunState::Continued)).await.is_err()
    );
    let bookmark = first_bookmark(&run, saved.started_at);
    let done = record("acme", "parties", &run, RunState::Succeeded);
    assert!(state.commit(&slow, &bookmark, BookmarkBase::Absent, &done).await.is_err());
    assert!(state.bookmark("acme", "parties").await.unwrap().is_none(), "the slow one committed nothing");
    let held = state.table_states("acme").await.unwrap()[0].lease.clone().unwrap();
    assert_eq!(held.fence, replacement.fence, "the replacement still holds the lease");
    state.commit(&replacement, &bookmark, BookmarkBase::Absent, &done).await.unwrap();

    // A new run's lease starts above every fence before it.
    let next: RunId = "20261128T090000Z-bbbbbb".parse().unwrap();
    let again = state.acquire_lease(&lease("parties", "owner-2", &next, ttl)).await.unwrap().lease;
    assert!(again.fence > replacement.fence);
}

/// Releasing a lease frees the table, but only when the releasing invocation still holds it.
async fn a_lease_is_released_only_by_its_holder(state: &dyn StateStore) {
    let run: RunId = "20261128T080000Z-aaaaaa".parse().unwrap();
    let ttl = Duration::from_secs(600);
    let held = state.acquire_lease(&lease("parties", "owner-1", &run, ttl)).await.unwrap().lease;
    let stale = Lease { fence: held.fence - 1, ..held.clone() };
    state.release_lease(&stale).await.expect("a stale release is no error");
    assert_eq!(state.table_states("acme").await.unwrap().len(), 1, "and releases nothing");
    state.release_lease(&held).await.unwrap();
    assert!(state.table_states("acme").await.unwrap().is_empty());
}

/// A lock excludes other holders until it expires or is unlocked; its holder may take it again.
async fn locks_exclude_other_holders_until_they_expire(state: &dyn StateStore) {
    let ttl = Duration::from_secs(60);
    assert!(state.try_lock("acme", "oauth#s", "a", ttl).await.unwrap());
    assert!(!state.try_lock("acme", "oauth#s", "b", ttl).await.unwrap(), "held by a");
    assert!(state.try_lock("acme", "oauth#s", "a", ttl).await.unwrap(), "a extends it");
    assert!(state.try_lock("other", "oauth#s", "b", ttl).await.unwrap(), "another integration's lock");
    state.unlock("acme", "oauth#s", "b").await.unwrap();
    assert!(!state.try_lock("acme", "oauth#s", "b", ttl).await.unwrap(), "b cannot unlock a's lock");
    state.unlock("acme", "oauth#s", "a").await.unwrap();
    assert!(state.try_lock("acme", "oauth#s", "b", Duration::from_millis(300)).await.unwrap());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(state.try_lock("acme", "oauth#s", "c", ttl).await.unwrap(), "an expired lock is taken over");
}

/// The bookmark of a table's first commit (generation 1).
fn first_bookmark(run: &RunId, last_run_started: chrono::DateTime<Utc>) -> Bookmark {
    Bookmark { last_run_started, run_id: run.clone(), previous: None, generation: 1, backfill: 0 }
}

/// The due index: a new or edited integration is due at once; the scheduler's settle moves it
/// later, unless a write brought it forward since it read the entry; taking a lease brings it to
/// the lease's expiry, parking one to its `not_before`; earliest first; deleting removes it.
async fn the_due_index_follows_every_write_that_changes_due_time(state: &dyn StateStore) {
    let millis = |t: Option<chrono::DateTime<Utc>>| t.map(|t| t.timestamp_millis());
    let due_now = async |state: &dyn StateStore| -> Vec<String> {
        state.due(Utc::now(), 100).await.unwrap().into_iter().map(|w| w.integration).collect()
    };
    let mut acme = Integration::new("acme".parse().unwrap(), TokenSource::Env { var: "X".into() }, Utc::now());
    state.create_integration(&acme).await.unwrap();
    assert_eq!(due_now(state).await, vec!["acme"], "a new integration is due at once");

    let later = Utc::now() + chrono::Duration::hours(1);
    let seen = state.wake("acme").await.unwrap().unwrap();
    assert!(state.settle_wake("acme", Some(later), seen.version).await.unwrap());
    assert!(due_now(state).await.is_empty(), "settled for later");
    assert!(!state.settle_wake("acme", None, seen.version).await.unwrap(), "a stale version is refused");
    assert_eq!(millis(state.wake("acme").await.unwrap().unwrap().at), millis(Some(later)), "and changes nothing");

    acme.frequency_minutes = 60;
    state.update_integration(&acme).await.unwrap();
    assert_eq!(due_now(state).await, vec!["acme"], "an edit makes it due at once");
    let seen = state.wake("acme").await.unwrap().unwrap();
    assert!(state.settle_wake("acme", Some(later), seen.version).await.unwrap());

    let run: RunId = "20261128T080000Z-aaaaaa".parse().unwrap();
    let held = state.acquire_lease(&lease("parties", "o", &run, Duration::from_secs(120))).await.unwrap().lease;
    let wake = state.wake("acme").await.unwrap().unwrap();
    assert_eq!(millis(wake.at), millis(Some(held.expires_at)), "a lease: looked at when it would be stranded");
    assert!(!state.settle_wake("acme", Some(later), seen.version).await.unwrap(), "the lease moved it since");
    assert!(state.settle_wake("acme", Some(later), wake.version).await.unwrap());

    let not_before = Utc::now() + chrono::Duration::seconds(30);
    let saved = Checkpoint { not_before: Some(not_before), ..checkpoint(&run, "o", 1) };
    let parking = Parking { checkpoint: saved, hold_until: later };
    state.save_checkpoint(&held, &parking, &record("acme", "parties", &run, RunState::Continued)).await.unwrap();
    assert_eq!(millis(state.wake("acme").await.unwrap().unwrap().at), millis(Some(not_before)), "parked");
    let resumed = state.resume_lease("acme", "parties", &who(&run, "o"), 2, Duration::from_secs(10)).await.unwrap();
    assert_eq!(millis(state.wake("acme").await.unwrap().unwrap().at), millis(Some(resumed.expires_at)));

    let beta = Integration::new("beta".parse().unwrap(), TokenSource::Env { var: "X".into() }, Utc::now());
    state.create_integration(&beta).await.unwrap();
    let soon = state.due(Utc::now() + chrono::Duration::hours(2), 100).await.unwrap();
    let order: Vec<&str> = soon.iter().map(|w| w.integration.as_str()).collect();
    assert_eq!(order, vec!["beta", "acme"], "earliest first");
    assert_eq!(state.due(Utc::now() + chrono::Duration::hours(2), 1).await.unwrap().len(), 1, "at most `limit`");

    let seen = state.wake("beta").await.unwrap().unwrap();
    assert!(state.settle_wake("beta", None, seen.version).await.unwrap(), "paused: nothing to look at");
    assert!(!due_now(state).await.contains(&"beta".to_string()));
    assert!(state.delete_integration("beta").await.unwrap());
    assert!(state.wake("beta").await.unwrap().is_none(), "deleting removes its entry");
}
