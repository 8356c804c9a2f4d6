//! Many integrations on one stack: the scheduled tick finds due work by one query of the due
//! index, not by a walk of every integration, and fans it out in due-time order within its
//! limits. The real orchestrator against moto's DynamoDB over HTTP, every state-store call
//! counted by the recording proxy, dispatching to the local Invoke endpoint.

use std::collections::BTreeSet;
use std::time::Duration;

use capsule_sync_e2e::fleet::Fleet;
use chrono::Utc;
use futures::StreamExt;
use orchestrator::TickLimits;

/// Invocations a new scheduled run sends at once: its 22 tables, but the two held until the
/// table whose snapshot they read has run.
const SENT_PER_RUN: usize = 20;

fn names(summary: &serde_json::Value, field: &str) -> Vec<String> {
    summary[field].as_array().map_or(vec![], |a| {
        a.iter().map(|d| d["integration"].as_str().or(d.as_str()).unwrap_or_default().to_string()).collect()
    })
}

/// A fleet of `registered` integrations of which the first `due` are due.
async fn fleet(registered: usize, due: usize) -> Fleet {
    let fleet = Fleet::new(TickLimits::default()).await;
    fleet.register(0, registered).await;
    fleet.not_due(due..registered).await;
    fleet
}

/// The tick's state-store calls grow with the integrations due, not with those registered:
/// 20 due among 100 and among 1,000 cost the same calls, one query finds them, and only they
/// are dispatched. One integration whose item is unreadable is reported; the others go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tick_reads_what_is_due_not_what_is_registered() {
    let mut calls = Vec::new();
    for registered in [100, 1_000] {
        let fleet = fleet(registered, 20).await;
        // Integration 0's item is corrupted in place: its look fails, alone.
        fleet
            .stack
            .clients
            .dynamodb
            .update_item()
            .table_name(&fleet.stack.table)
            .key("pk", aws_sdk_dynamodb::types::AttributeValue::S(format!("INT#{}", Fleet::name(0))))
            .key("sk", aws_sdk_dynamodb::types::AttributeValue::S("INTEGRATION".into()))
            .update_expression("SET doc = :junk")
            .expression_attribute_values(":junk", aws_sdk_dynamodb::types::AttributeValue::S("{not json".into()))
            .send()
            .await
            .unwrap();
        let tick = fleet.tick().await;
        assert_eq!(tick.summary["due"], 20, "{registered}: {}", tick.summary);
        let dispatched: BTreeSet<String> = names(&tick.summary, "dispatched").into_iter().collect();
        let expected: BTreeSet<String> = (1..20).map(Fleet::name).collect();
        assert_eq!(dispatched, expected, "{registered} registered: exactly the due ones, but the unreadable one");
        assert_eq!(names(&tick.summary, "failed"), vec![Fleet::name(0)]);
        let sent = fleet.sent();
        assert_eq!(sent.len(), 19);
        let sizes: BTreeSet<usize> = sent.values().map(Vec::len).collect();
        assert_eq!(sizes, BTreeSet::from([SENT_PER_RUN]), "every table of each");
        assert!(tick.state_calls() <= 20 * 12, "{registered}: a dozen calls a due integration: {:?}", tick.calls);
        assert!(!tick.calls.contains_key("Scan"), "{:?}", tick.calls);
        calls.push(tick.calls);
        // Looked at, and settled: the next tick dispatches nothing new. (Each run it started
        // holds two tables back until the tables they wait for have run: it looks at those.)
        let again = fleet.tick().await;
        assert!(names(&again.summary, "dispatched").is_empty(), "{}", again.summary);
        assert_eq!(names(&again.summary, "failed"), vec![Fleet::name(0)], "the failed one is tried again");
    }
    assert_eq!(calls[0], calls[1], "the same calls whatever the number registered");
}

/// 1,000 integrations due at once, with a cap of 12,000 invocations a tick: the first tick
/// dispatches those due earliest and leaves the rest, the second dispatches the rest, and no
/// integration is dispatched twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_due_are_dispatched_within_two_ticks_none_twice() {
    // The cap decides here, not the time budget (this machine is slower than Lambda and DynamoDB).
    let limits =
        TickLimits { max_invocations: Some(12_000), budget: Duration::from_secs(600), ..TickLimits::default() };
    let fleet = Fleet::new(limits).await;
    let t = std::time::Instant::now();
    fleet.register(0, 1_000).await;
    eprintln!("registered in {:?}", t.elapsed());
    // Due one second apart, so due-time order is known: integration 0 is due earliest.
    let start = Utc::now() - chrono::Duration::hours(1);
    futures::stream::iter(0..1_000)
        .map(|i| {
            let fleet = &fleet;
            async move { fleet.settle(&Fleet::name(i), Some(start + chrono::Duration::seconds(i as i64))).await }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;

    let first = fleet.tick().await;
    eprintln!("first tick: {:?}, {:?}", first.took, first.calls);
    let deferred = names(&first.summary, "deferred");
    let dispatched = names(&first.summary, "dispatched");
    assert_eq!(first.summary["due"], 1_000);
    // Each run counts all its 22 tables against the cap, the two held back included.
    assert_eq!(dispatched.len(), 12_000 / 22, "as many as the cap takes whole");
    assert_eq!(dispatched.len() + deferred.len(), 1_000);
    let latest_dispatched = dispatched.iter().max().unwrap();
    let earliest_deferred = deferred.iter().min().unwrap();
    assert!(latest_dispatched < earliest_deferred, "due-time order: {latest_dispatched} before {earliest_deferred}");

    let second = fleet.tick().await;
    eprintln!("second tick: {:?}, {:?}", second.took, second.calls);
    let second_dispatched: BTreeSet<String> = names(&second.summary, "dispatched").into_iter().collect();
    assert_eq!(second_dispatched, deferred.iter().cloned().collect(), "what was left, and only that");
    assert!(names(&second.summary, "deferred").is_empty());
    let sent = fleet.sent();
    assert_eq!(sent.len(), 1_000, "every due integration within two ticks");
    for (integration, events) in &sent {
        let runs: BTreeSet<&String> = events.iter().map(|(_, run)| run).collect();
        assert_eq!((events.len(), runs.len()), (SENT_PER_RUN, 1), "{integration}: dispatched once, every table");
    }
}
