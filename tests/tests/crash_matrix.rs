//! The crash matrix: a table run fails, or is killed, at every step of its commit protocol, on
//! the local backend (state file + directory) and the AWS backend (DynamoDB + S3 on
//! moto_server); then the next run of the table goes. Each case checks what a loader and an
//! operator see afterwards:
//!
//! - every data file is listed by exactly one manifest, and every manifest belongs to a run
//!   recorded `succeeded`: nothing a loader reads is duplicated or left by a failed attempt;
//! - the current state built from the manifests' files is the simulator's account;
//! - the run history tells what happened: the faulted run ends `failed` or `succeeded` as the
//!   table below says, no run is left `running`, the rerun succeeds.
//!
//! `docs/reliability.md` is generated from the same table and checked here (set
//! `UPDATE_RELIABILITY_DOC=1` to rewrite it).

use std::sync::Arc;
use std::time::Duration;

use capsule_core::integration::RunId;
use capsule_core::ports::{ObjectSink, RunState, StateStore};
use capsule_engine::engine::{self, LocalDispatch, RunOptions, RunPorts};
use capsule_engine::output::WriterOptions;
use capsule_sync_e2e::faults::{Fault, FaultySink, FaultyState, Injection, Step};
use capsule_sync_e2e::loader::{Settled, final_states, load};
use capsule_sync_e2e::*;

#[derive(Debug, Clone, Copy)]
enum Backend {
    Local,
    Aws,
}

/// How the faulted run must end.
fn expected(step: Step, fault: Fault) -> RunState {
    match (step, fault) {
        // Committed before the fault: the bookmark moved, the files are the run's.
        (Step::AfterCommit | Step::ManifestPublished | Step::LogWritten, _) => RunState::Succeeded,
        // The `running` record is informational: failing to write it changes nothing.
        (Step::RunningRecord, Fault::Fail) => RunState::Succeeded,
        _ => RunState::Failed,
    }
}

fn how(step: Step, fault: Fault) -> &'static str {
    match (step, fault) {
        (Step::AfterCommit, Fault::Fail) => {
            "the commit landed but reported an error (a lost answer): the run confirms it and succeeds"
        }
        (Step::AfterCommit, Fault::Crash) => {
            "committed, manifest not yet published (loaders see nothing of it yet): a copy of its event (Lambda's retry) or the next run publishes it"
        }
        (Step::ManifestPublished, Fault::Fail) => {
            "logged; the waiting manifest is cleaned up (and republished) by the next run"
        }
        (_, Fault::Crash) if expected(step, fault) == RunState::Failed => {
            "the next run takes the lease over after its TTL, records the killed run `failed` (abandoned) and removes its unpublished manifest and files"
        }
        (_, Fault::Crash) => "nothing to repair: the next run starts from the moved bookmark",
        (Step::RunningRecord | Step::LogWritten, Fault::Fail) => "logged as a warning; the run goes on",
        (_, Fault::Fail) => "the run fails; its unpublished manifest and files are removed; the bookmark stays",
    }
}

const PARTIES: usize = 250;

async fn adapters(backend: Backend) -> (Arc<dyn StateStore>, Arc<dyn ObjectSink>, Box<dyn std::any::Any>) {
    match backend {
        Backend::Local => {
            let local = Local::new();
            let state: Arc<dyn StateStore> = Arc::new(local.state.clone());
            let sink: Arc<dyn ObjectSink> = Arc::new(local.sink.clone());
            (state, sink, Box::new(local))
        }
        Backend::Aws => {
            let stack = capsule_sync_e2e::aws::AwsStack::new().await;
            let state: Arc<dyn StateStore> = Arc::new(stack.state.clone());
            let sink: Arc<dyn ObjectSink> = Arc::new(stack.sink.clone());
            (state, sink, Box::new(stack))
        }
    }
}

async fn sync_parties(
    client: &capsule_client::CapsuleClient,
    integration: &capsule_core::integration::Integration,
    tables: &[&'static capsule_core::catalog::TableSpec],
    deps: RunPorts<'_>,
    run_id: RunId,
    options: RunOptions,
) -> Vec<engine::TableRunOutcome> {
    let dispatch = LocalDispatch { concurrency: 1, progress: None, redo: false };
    engine::run_tables(client, deps, integration, tables, &run_id, options, dispatch).await
}

async fn case(step: Step, fault: Fault, backend: Backend) {
    let sim = start_sim(PARTIES, |_| {}).await;
    let integration = integration_for(&sim, "acme", "UNUSED");
    let client = client_for(&sim, "test-token");
    let (state, sink, _keep) = adapters(backend).await;
    let options = RunOptions {
        writer: WriterOptions { part_max_bytes: 16 * 1024, chunk_bytes: 4 * 1024, ..WriterOptions::default() },
        lease_ttl: Duration::from_secs(1),
        ..RunOptions::default()
    };
    let tables = capsule_core::catalog::resolve_tables(&["parties".to_string()]).unwrap();
    let sync =
        |state, sink, run_id| sync_parties(&client, &integration, &tables, RunPorts { state, sink }, run_id, options);

    // The faulted run.
    let injection = Injection::new(step, fault);
    let faulty_state = FaultyState { inner: state.clone(), injection: injection.clone(), broken: Default::default() };
    let faulty_sink = FaultySink { inner: sink.clone(), injection: injection.clone() };
    let faulted = RunId::new(chrono::Utc::now());
    let crashed = tokio::select! {
        _ = sync(&faulty_state, &faulty_sink, faulted.clone()) => false,
        () = injection.crashed() => true,
    };
    assert!(injection.fired(), "{step:?} was reached");
    assert_eq!(crashed, fault == Fault::Crash);
    if crashed {
        // A killed run's lease is taken over once it expires (DynamoDB: whole seconds).
        tokio::time::sleep(Duration::from_millis(2200)).await;
    }

    // The next run, with nothing injected.
    let rerun = RunId::new(chrono::Utc::now());
    let outcomes = sync(state.as_ref(), sink.as_ref(), rerun.clone()).await;
    assert_eq!(outcomes[0].record.state, RunState::Succeeded, "the rerun: {:?}", outcomes[0].error);

    // The history tells what happened.
    let last = final_states(state.as_ref(), "acme").await;
    let table_state = |run: &RunId| last.get(&(run.clone(), "parties".to_string())).copied();
    assert_eq!(table_state(&faulted), Some(expected(step, fault)), "the faulted run's record: {last:#?}");
    assert_eq!(table_state(&rerun), Some(RunState::Succeeded));
    assert!(last.values().all(|s| *s != RunState::Running), "no run left `running`: {last:#?}");

    // What a loader reads: manifests of succeeded runs, each file in one manifest, the account.
    let loaded = load(sink.as_ref(), state.as_ref(), "acme", "parties", Settled::Yes).await;
    let waiting = sink.list("_meta/acme/runs/").await.unwrap();
    assert!(waiting.iter().all(|k| !k.ends_with(".pending.json")), "no manifest left waiting: {waiting:?}");
    assert_eq!(loaded.ids().len(), expected_counts(&sim)["parties"], "the current state is the account");
}

macro_rules! matrix {
    ($($name:ident: $step:ident, $fault:ident;)*) => {
        mod local {
            use super::*;
            $(#[tokio::test] async fn $name() { case(Step::$step, Fault::$fault, Backend::Local).await })*
        }
        mod aws {
            use super::*;
            $(#[tokio::test] async fn $name() { case(Step::$step, Fault::$fault, Backend::Aws).await })*
        }
        /// Every case, in the order the tests and the document list them.
        const CASES: &[(Step, Fault)] = &[$((Step::$step, Fault::$fault)),*];
    };
}

matrix! {
    crash_after_a_part: PartWritten, Crash;
    fail_after_a_part: PartWritten, Fail;
    crash_after_the_last_part: LastPartWritten, Crash;
    fail_after_the_last_part: LastPartWritten, Fail;
    crash_after_the_manifest: ManifestWritten, Crash;
    fail_after_the_manifest: ManifestWritten, Fail;
    crash_after_publishing_the_manifest: ManifestPublished, Crash;
    fail_after_publishing_the_manifest: ManifestPublished, Fail;
    crash_after_the_warehouse_kits: KitWritten, Crash;
    fail_after_the_warehouse_kits: KitWritten, Fail;
    crash_before_the_commit: BeforeCommit, Crash;
    fail_before_the_commit: BeforeCommit, Fail;
    crash_after_the_commit: AfterCommit, Crash;
    fail_after_the_commit: AfterCommit, Fail;
    crash_at_the_running_record: RunningRecord, Crash;
    fail_at_the_running_record: RunningRecord, Fail;
    crash_after_the_log: LogWritten, Crash;
    fail_after_the_log: LogWritten, Fail;
}

fn reliability_doc() -> String {
    let mut doc = String::from(
        "# Reliability: every fault tried\n\n\
         Generated from `tests/tests/crash_matrix.rs` (the test fails when this file and the cases differ;\n\
         `UPDATE_RELIABILITY_DOC=1` rewrites it). Each case runs on both backends — the state file with a\n\
         directory, and DynamoDB with S3 on moto_server — as its own test: a `parties` run of a 250-party\n\
         account (16 KiB parts, so several) is faulted at the step, then the table's next run goes.\n\
         Injection: `tests/src/faults.rs` wraps the real adapters; *fail* makes the call return an error\n\
         (after its effect, for \"after\" steps), *crash* makes it never return and drops the run there,\n\
         as a killed process stops. Every case asserts, on both backends: the rerun succeeds; every data\n\
         file is listed by exactly one manifest and every manifest belongs to a `succeeded` run; the\n\
         current state built from the manifests equals the simulator's account; no run is left\n\
         `running`; the faulted run's record is as below.\n\n\
         | # | step | fault | faulted run ends | what happens | tests |\n\
         |---|---|---|---|---|---|\n",
    );
    for (i, (step, fault)) in CASES.iter().enumerate() {
        let name = test_name(*step, *fault);
        doc.push_str(&format!(
            "| {} | {} | {} | `{}` | {} | `local::{name}`, `aws::{name}` |\n",
            i + 1,
            step.describe(),
            match fault {
                Fault::Fail => "fail",
                Fault::Crash => "crash",
            },
            expected(*step, *fault).as_str(),
            how(*step, *fault),
        ));
    }
    doc.push_str(&format!("\n{} cases, {} tests.\n", CASES.len(), CASES.len() * 2));
    doc.push_str(
        "\n## Other faults\n\n\
         Tried by other tests (this test checks that each still exists under that name).\n\n\
         | fault | how it is injected | expected (asserted) | test |\n|---|---|---|---|\n",
    );
    for (file, test, how, expected) in OTHER_FAULTS {
        doc.push_str(&format!("| {} | {how} | {expected} | `{file}::{test}` |\n", test.replace('_', " ")));
    }
    doc.push_str(
        "\n## The delivery model: what Lambda does, and what the design guarantees\n\n\
         Lambda delivers asynchronous events at least once (any event may come again, even after its\n\
         first copy finished), kills an invocation at its deadline without cleanup, and retries a\n\
         failed or killed event twice, about 1 and 2 minutes later (and may hold an event queued up to\n\
         6 hours). The state store may fail or answer late; a lease renewal may be lost. Each row is\n\
         asserted by the test named (this test checks that each still exists under that name).\n\n\
         | what happens | what the design guarantees | test |\n|---|---|---|\n",
    );
    for (what, guarantee, file, test) in DELIVERY_MODEL {
        doc.push_str(&format!("| {what} | {guarantee} | `{file}::{test}` |\n"));
    }
    doc
}

/// The delivery model: (what Lambda or the state store does, what the design guarantees, test
/// file, test).
const DELIVERY_MODEL: &[(&str, &str, &str, &str)] = &[
    (
        "every event delivered twice, some copies long after the first committed, the account changing between syncs",
        "a first invocation of a run that committed, or that a later run superseded (the bookmark, read once it holds the lease, names it), or that finds its own run or a later one holding the lease, is refused: no record, no file, manifest or bookmark touched; each table commits once per run; no published file changes; a DuckDB load after each sync equals the account",
        "tests/tests/exactly_once.rs",
        "every_event_delivered_twice_commits_each_table_once",
    ),
    (
        "an invocation killed after its commit, before publishing its manifest, retried (a first invocation's or a continuation's event)",
        "the retry is refused as a duplicate and publishes the waiting manifest: loaders see the run a minute later, not at the next scheduled run; nothing else is written",
        "tests/tests/crash_matrix.rs",
        "a_retried_continuation_publishes_a_killed_commit_on_aws",
    ),
    (
        "a committed run's event arrives again after the account changed",
        "refused; the next run reads every change since the committed one: a loader that loads each manifest once has the account",
        "tests/tests/exactly_once.rs",
        "a_late_copy_of_a_committed_event_changes_nothing",
    ),
    (
        "a duplicate continuation",
        "the parked lease waits for one invocation number: the copy is refused without writing",
        "tests/tests/lambda_e2e.rs",
        "a_continuation_delivered_twice_runs_once",
    ),
    (
        "a first invocation killed at its deadline before its first checkpoint, Lambda retrying it",
        "a lease never outlives its invocation's kill time (plus a grace for clock skew): Lambda's retry takes it over and redoes the run under the same run id",
        "tests/tests/exactly_once.rs",
        "a_killed_first_invocation_is_redone_by_lambdas_retry",
    ),
    (
        "the real table-sync bootstrap process killed with SIGKILL at random instants of first invocations and continuations, Lambda retrying 6 and 12 (scaled) minutes later, the orchestrator ticking",
        "every table succeeds, none ends `failed`, each commits once, and the loader's current state equals the account",
        "tests/tests/exactly_once.rs",
        "bootstrap_processes_killed_at_random_instants_lose_nothing",
    ),
    (
        "the same, and no retry comes",
        "the orchestrator's next tick redoes the first invocation under the same run id (at most 5 attempts, then the run ends `failed`, visibly)",
        "tests/tests/exactly_once.rs",
        "a_first_invocation_stranded_before_its_checkpoint_is_redone_by_the_tick",
    ),
    (
        "a continuation killed or stranded (its holder stopped renewing)",
        "the next tick records it `failed` and continues the run from its checkpoint (at most 5 failures in a row)",
        "tests/tests/lambda_e2e.rs",
        "a_stranded_invocation_is_continued_by_the_next_tick",
    ),
    (
        "an invocation presumed dead is only slow, and wakes up after it was replaced",
        "every take, park, resume and recovery raises the lease's fencing number, and every write is conditioned on it: the old invocation can renew, park or commit nothing",
        "tests/tests/contracts.rs",
        "fencing_numbers_rise_and_a_replaced_invocation_can_write_nothing",
    ),
    (
        "lease renewals fail (the state store unreachable or hanging)",
        "the invocation stops writing before its lease can expire (self-fencing); AWS calls have connect, attempt and operation timeouts",
        "tests/tests/bounds.rs",
        "a_run_that_cannot_renew_its_lease_stops_before_it_expires",
    ),
    (
        "a rate-limit wait or a retry backoff longer than the invocation has left",
        "not slept: the run checkpoints and the tick resumes it when the wait is over",
        "tests/tests/bounds.rs",
        "a_rate_limit_wait_past_the_deadline_pauses_instead",
    ),
    (
        "a continuation's event held in Lambda's queue (up to 6 hours)",
        "a parked lease and its checkpoint wait that long: no newer run takes the table from it",
        "tests/tests/lambda_e2e.rs",
        "a_continuation_whose_invoke_fails_is_resumed_by_the_next_tick",
    ),
    (
        "a run continued for longer than the deployment allows (a multi-day first load, a stuck continuation)",
        "every tick logs it `run_overdue` (the stack's OverdueRunsAlarm counts it) and lists it under `overdue`; `status` shows it",
        "tests/tests/exactly_once.rs",
        "a_run_in_progress_too_long_is_reported_overdue",
    ),
    (
        "a request that fails in every invocation (persistent 5xx, a malformed body)",
        "counted across continuations: after 6 invocations in a row the run ends `failed`, naming the request",
        "tests/tests/bounds.rs",
        "a_request_that_fails_in_every_invocation_ends_the_run",
    ),
    (
        "a commit whose answer is lost, and whose confirming read fails too",
        "the outputs are kept; the next run publishes them if the stored bookmark names the run, and records it `succeeded`",
        "tests/tests/bounds.rs",
        "a_commit_of_unknown_outcome_keeps_its_outputs",
    ),
    (
        "one integration's state cannot be read",
        "the tick reports it and goes on with the others",
        "tests/tests/exactly_once.rs",
        "one_broken_integration_does_not_stop_the_tick",
    ),
    (
        "a backfill ordered while a first load runs",
        "ordered in the same write as the edit (a per-table count): the load commits, and the run after it reads from the new history start",
        "tests/tests/bounds.rs",
        "a_backfill_ordered_during_a_first_load_takes_effect",
    ),
    (
        "many invocations find the OAuth access token expired at once",
        "one refreshes under a lock (the secret read again under it); the others use its token",
        "tests/tests/bounds.rs",
        "concurrent_oauth_refreshes_of_one_secret_are_serialised",
    ),
    (
        "a page larger than the limit (32 MiB by default)",
        "that request fails with a clear error; error bodies kept in records are truncated",
        "tests/tests/bounds.rs",
        "an_oversized_page_fails_clearly",
    ),
];

/// Faults other tests inject: (test file, test, how, what they assert).
const OTHER_FAULTS: &[(&str, &str, &str, &str)] = &[
    (
        "tests/tests/local_sync.rs",
        "rate_limits_and_bursts_of_server_errors_are_survived",
        "simulator: 429s and random 500/502, dropped connections, cut and garbled bodies",
        "every table succeeds with exact row counts; every 429 waited out",
    ),
    (
        "tests/tests/local_sync.rs",
        "a_failed_run_moves_nothing_and_its_rerun_leaves_no_duplicate_files",
        "simulator: 503 on page 3 for good",
        "no file published, bookmark unmoved; the rerun leaves one set of files",
    ),
    (
        "tests/tests/local_sync.rs",
        "a_deletion_on_an_earlier_page_while_paging_does_not_lose_a_later_record",
        "a party deleted from page 1 while page 2 is in flight",
        "re-read; no record lost",
    ),
    (
        "tests/tests/local_sync.rs",
        "a_deletion_while_paging_a_listing_without_a_deleted_feed_loses_nothing",
        "an entry deleted from page 1 while page 2 is in flight (no deleted feed)",
        "counted, re-read; no record lost",
    ),
    (
        "tests/tests/local_sync.rs",
        "pages_that_keep_shifting_fail_the_run_without_moving_the_bookmark",
        "entries deleted continuously while paging",
        "two re-reads, then the run fails; bookmark unmoved, nothing published",
    ),
    (
        "tests/tests/local_sync.rs",
        "a_backfill_ordered_while_a_run_is_in_progress_is_not_skipped",
        "the bookmark dropped by hand while a run pages",
        "the commit is refused; the next run reads from the history start",
    ),
    (
        "tests/tests/aws_adapters.rs",
        "an_oauth_token_expiring_mid_run_is_refreshed_and_the_run_goes_on",
        "simulator: the access token stops being accepted mid-run",
        "one 401, one refresh, nothing lost",
    ),
    (
        "tests/tests/crash_recovery.rs",
        "a_run_killed_mid_page_is_taken_over_on_the_aws_backend",
        "a run's task aborted mid-page (DynamoDB + S3)",
        "taken over after the TTL; nothing lost; the killed run `failed`",
    ),
    (
        "cli/tests/lifecycle.rs",
        "a_sync_killed_with_sigkill_is_taken_over_at_once",
        "`kill -9` of the `capsule-sync sync` process",
        "the next sync takes over at once; every table loads",
    ),
    (
        "tests/tests/lambda_e2e.rs",
        "a_continuation_delivered_twice_runs_once",
        "the same continuation event delivered twice",
        "one succeeds, the duplicate writes nothing",
    ),
    (
        "tests/tests/lambda_e2e.rs",
        "a_stranded_invocation_is_continued_by_the_next_tick",
        "an invocation that took the lease and died without a trace",
        "recorded `failed`; continued from the checkpoint",
    ),
    (
        "tests/tests/lambda_e2e.rs",
        "a_failed_continuation_keeps_its_checkpoint_and_parts_for_the_retry",
        "Capsule failing a continuation and both Lambda retries",
        "checkpoint and parts kept; the next tick finishes the run",
    ),
    (
        "tests/tests/lambda_e2e.rs",
        "dispatch_records_hold_what_was_sent_and_the_next_tick_sends_the_rest",
        "the Invoke API refusing two tables; an orchestrator dead after recording its intent",
        "the next tick sends exactly what is pending, same run id",
    ),
    (
        "tests/tests/lambda_e2e.rs",
        "a_first_load_spans_rate_limit_windows_without_sleeping_in_lambda",
        "40 requests per 4 s window; invocations killed at a 3 s timeout",
        "minimum windows, no 429 burst, every row once",
    ),
    (
        "tests/tests/property.rs",
        "the_loaded_state_equals_the_account_whatever_happens",
        "random account changes, Capsule faults, injected failures and kills",
        "the loaded state equals the account",
    ),
];

fn test_name(step: Step, fault: Fault) -> String {
    let fault = match fault {
        Fault::Fail => "fail",
        Fault::Crash => "crash",
    };
    let step = match step {
        Step::PartWritten => "after_a_part",
        Step::LastPartWritten => "after_the_last_part",
        Step::ManifestWritten => "after_the_manifest",
        Step::ManifestPublished => "after_publishing_the_manifest",
        Step::KitWritten => "after_the_warehouse_kits",
        Step::BeforeCommit => "before_the_commit",
        Step::AfterCommit => "after_the_commit",
        Step::RunningRecord => "at_the_running_record",
        Step::LogWritten => "after_the_log",
    };
    format!("{fault}_{step}")
}

#[test]
fn the_reliability_document_lists_every_case() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/reliability.md");
    let wanted = reliability_doc();
    if std::env::var_os("UPDATE_RELIABILITY_DOC").is_some() {
        std::fs::write(path, &wanted).unwrap();
    }
    let found = std::fs::read_to_string(path).unwrap_or_default();
    assert!(found == wanted, "docs/reliability.md is out of date: run with UPDATE_RELIABILITY_DOC=1");
    assert!(Step::ALL.iter().all(|s| CASES.iter().any(|(c, _)| c == s)), "every step has a case");
    let named = OTHER_FAULTS.iter().map(|(file, test, _, _)| (file, test));
    for (file, test) in named.chain(DELIVERY_MODEL.iter().map(|(_, _, file, test)| (file, test))) {
        let path = format!("{}/../{file}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(text.contains(&format!("fn {test}(")), "{file} has no test `{test}` any more");
    }
}

/// Lambda retries a killed invocation's event (and may deliver any event again). A run killed
/// after its commit, before publishing its manifest, is published by that copy — a first
/// invocation's or a continuation's — within the retry's minute, not at the table's next run:
/// the copy is refused as a duplicate, writes nothing else, and loaders see every row.
async fn a_copy_publishes(invocation: capsule_engine::lifecycle::Invocation, backend: Backend) {
    let sim = start_sim(PARTIES, |_| {}).await;
    let integration = integration_for(&sim, "acme", "UNUSED");
    let client = client_for(&sim, "test-token");
    let (state, sink, _keep) = adapters(backend).await;
    let table = capsule_core::catalog::table("parties").unwrap();
    let run_id = RunId::new(chrono::Utc::now());
    let run = |state, sink, invocation| engine::TableRun {
        client: &client,
        deps: RunPorts { state, sink },
        integration: &integration,
        table,
        run_id: &run_id,
        options: RunOptions::default(),
        progress: None,
        deadline: None,
        kill_at: None,
        invocation,
    };

    let injection = Injection::new(Step::AfterCommit, Fault::Crash);
    let faulty_state = FaultyState { inner: state.clone(), injection: injection.clone(), broken: Default::default() };
    let faulty_sink = FaultySink { inner: sink.clone(), injection: injection.clone() };
    let first = capsule_engine::lifecycle::Invocation::First;
    tokio::select! {
        _ = run(&faulty_state, &faulty_sink, first).run() => panic!("the run was to be killed after its commit"),
        () = injection.crashed() => {}
    }
    let waiting = sink.list("_meta/acme/runs/").await.unwrap();
    assert!(waiting.iter().any(|k| k.ends_with("parties.pending.json")), "killed before publishing: {waiting:?}");

    let copy = run(state.as_ref(), sink.as_ref(), invocation).run().await;
    assert!(matches!(copy.error, Some(capsule_core::SyncError::Superseded(_))), "refused: {:?}", copy.error);
    let waiting = sink.list("_meta/acme/runs/").await.unwrap();
    assert!(waiting.iter().all(|k| !k.ends_with(".pending.json")), "published: {waiting:?}");
    let last = final_states(state.as_ref(), "acme").await;
    assert_eq!(last.len(), 1, "the copy recorded nothing: {last:#?}");
    assert_eq!(last.get(&(run_id.clone(), "parties".to_string())), Some(&RunState::Succeeded));
    let loaded = load(sink.as_ref(), state.as_ref(), "acme", "parties", Settled::Yes).await;
    assert_eq!(loaded.ids().len(), expected_counts(&sim)["parties"], "loaders see the whole run");
}

#[tokio::test]
async fn a_retried_first_invocation_publishes_a_killed_commit_locally() {
    a_copy_publishes(capsule_engine::lifecycle::Invocation::First, Backend::Local).await;
}

#[tokio::test]
async fn a_retried_first_invocation_publishes_a_killed_commit_on_aws() {
    a_copy_publishes(capsule_engine::lifecycle::Invocation::First, Backend::Aws).await;
}

#[tokio::test]
async fn a_retried_continuation_publishes_a_killed_commit_on_aws() {
    a_copy_publishes(capsule_engine::lifecycle::Invocation::Continue { seq: Some(2) }, Backend::Aws).await;
}
