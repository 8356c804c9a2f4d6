//! The property: whatever happens to the account and to the runs, the current state a loader
//! builds from the files equals the account after every clean sync.
//!
//! Each case is a random schedule (seeded, so a failure names its seed and replays) of account
//! changes — creations, updates, deletions and restrictions of parties, opportunities, cases,
//! tasks and entries — and syncs of eight tables, some with Capsule failing at random or the run
//! failing or killed at a random step of its commit protocol (a killed run is followed by the
//! takeover after its lease's TTL). After every sync: the loader's invariants (every file in
//! exactly one manifest, every manifest from a succeeded run). After every clean sync: each
//! incremental table's latest rows minus its tombstones, and each full table's latest snapshot,
//! equal the account — ids and `updatedAt`.
//!
//! Cases alternate between the local backend and the AWS backend (moto_server). CI runs
//! `CAPSULE_PROPERTY_CASES` cases (default 4); set it higher to search longer, and
//! `CAPSULE_PROPERTY_SEED` to replay one case.

use std::sync::Arc;
use std::time::Duration;

use capsule_core::integration::RunId;
use capsule_core::ports::{ObjectSink, StateStore};
use capsule_engine::engine::{self, LocalDispatch, RunOptions, RunPorts};
use capsule_engine::output::WriterOptions;
use capsule_sync_e2e::capsule_sim::{Fault as SimFault, FaultRule, Mutation, MutationKind, MutationOp};
use capsule_sync_e2e::faults::{Fault, FaultySink, FaultyState, Injection, Step};
use capsule_sync_e2e::loader::{ACCOUNT_TABLES, Settled, assert_current_state_is_the_account, load};
use capsule_sync_e2e::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const TABLES: [&str; 8] = ACCOUNT_TABLES;

/// How one sync of the schedule goes wrong, if it does.
#[derive(Debug, Clone, Copy)]
enum Trouble {
    None,
    CapsuleFlaky,
    Injected(Step, Fault),
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loaded_state_equals_the_account_whatever_happens() {
    let cases = env_number("CAPSULE_PROPERTY_CASES", 4);
    let first_seed = env_number("CAPSULE_PROPERTY_SEED", 0x5eed);
    let only_one = std::env::var_os("CAPSULE_PROPERTY_SEED").is_some();
    for case in 0..if only_one { 1 } else { cases } {
        let seed = first_seed + case;
        let aws = seed % 2 == 1;
        eprintln!("property case seed {seed} ({})", if aws { "aws" } else { "local" });
        run_case(seed, aws).await;
    }
}

async fn run_case(seed: u64, aws: bool) {
    let mut rng = StdRng::seed_from_u64(seed);
    let sim = start_sim(120, |c| c.seed = seed).await;
    let integration = integration_for(&sim, "acme", "UNUSED");
    let client = client_for(&sim, "test-token");
    let (state, sink, _keep): (Arc<dyn StateStore>, Arc<dyn ObjectSink>, Box<dyn std::any::Any>) = if aws {
        let stack = capsule_sync_e2e::aws::AwsStack::new().await;
        (Arc::new(stack.state.clone()), Arc::new(stack.sink.clone()), Box::new(stack))
    } else {
        let local = Local::new();
        (Arc::new(local.state.clone()), Arc::new(local.sink.clone()), Box::new(local))
    };
    // moto answers in hundreds of milliseconds when other tests share it: a one-second lease
    // could fail to renew there, so the AWS cases hold theirs for three.
    let lease_ttl = Duration::from_secs(if aws { 3 } else { 1 });
    let options = RunOptions {
        writer: WriterOptions { part_max_bytes: 32 * 1024, chunk_bytes: 8 * 1024, ..WriterOptions::default() },
        lease_ttl,
        ..RunOptions::default()
    };
    let tables = capsule_core::catalog::resolve_tables(&TABLES.map(String::from)).unwrap();
    let sync = async |state: &dyn StateStore, sink: &dyn ObjectSink| {
        let dispatch = LocalDispatch { concurrency: 2, progress: None, redo: false };
        let run_id = RunId::new(chrono::Utc::now());
        engine::run_tables(&client, RunPorts { state, sink }, &integration, &tables, &run_id, options, dispatch).await
    };

    for step in 0..6 {
        for _ in 0..rng.random_range(0..4) {
            let mutation = random_mutation(&mut rng);
            sim.mutate(mutation.clone()).unwrap_or_else(|e| panic!("seed {seed}: {mutation:?}: {e}"));
        }
        let trouble = random_trouble(&mut rng);
        let context = format!("seed {seed}, step {step}, {trouble:?}");
        match trouble {
            Trouble::None => {}
            Trouble::CapsuleFlaky => {
                let fault = SimFault::Status { status: 503 };
                sim.add_fault(FaultRule { path: None, fault, after: 0, times: None, probability: Some(0.15) });
                sync(state.as_ref(), sink.as_ref()).await;
                sim.clear_faults();
            }
            Trouble::Injected(at, fault) => {
                let injection = Injection::new(at, fault);
                let faulty_state =
                    FaultyState { inner: state.clone(), injection: injection.clone(), broken: Default::default() };
                let faulty_sink = FaultySink { inner: sink.clone(), injection: injection.clone() };
                let crashed = tokio::select! {
                    _ = sync(&faulty_state, &faulty_sink) => false,
                    () = injection.crashed() => true,
                };
                if crashed {
                    // The killed run's lease expires (DynamoDB: whole seconds).
                    tokio::time::sleep(lease_ttl + Duration::from_millis(1200)).await;
                }
            }
        }
        for table in TABLES {
            load(sink.as_ref(), state.as_ref(), "acme", table, Settled::NotYet).await; // the loader's invariants
        }
        // A clean sync: every table loads, and the state a loader builds is the account.
        let outcomes = sync(state.as_ref(), sink.as_ref()).await;
        for o in &outcomes {
            assert!(o.error.is_none(), "{context}: {}: {:?}", o.record.table, o.error);
        }
        assert_current_state_is_the_account(&sim, state.as_ref(), sink.as_ref(), &context).await;
    }
}

fn random_mutation(rng: &mut StdRng) -> Mutation {
    let kinds = [
        MutationKind::Parties,
        MutationKind::Opportunities,
        MutationKind::Kases,
        MutationKind::Tasks,
        MutationKind::Entries,
    ];
    let kind = kinds[rng.random_range(0..kinds.len())];
    let restrictable = !matches!(kind, MutationKind::Tasks | MutationKind::Entries);
    let ops: &[MutationOp] = if restrictable {
        &[MutationOp::Create, MutationOp::Update, MutationOp::Delete, MutationOp::Restrict]
    } else {
        &[MutationOp::Create, MutationOp::Update, MutationOp::Delete]
    };
    let op = ops[rng.random_range(0..ops.len())];
    Mutation { kind, op, count: rng.random_range(1..4), ids: vec![] }
}

fn random_trouble(rng: &mut StdRng) -> Trouble {
    match rng.random_range(0..10) {
        0..=3 => Trouble::None,
        4..=5 => Trouble::CapsuleFlaky,
        n => {
            let step = Step::ALL[rng.random_range(0..Step::ALL.len())];
            // Kills cost a lease TTL of waiting: one in four injections.
            Trouble::Injected(step, if n == 9 { Fault::Crash } else { Fault::Fail })
        }
    }
}
