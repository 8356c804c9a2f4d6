//! REST hooks end to end, shared by both runtimes' tests: the account's state beside what the
//! DuckDB current views show, the changes a test makes, and deliveries posted by hand.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use capsule_core::integration::Integration;
use capsule_engine::warehouse::{self, Engine, Location};
use capsule_sim::{Entity, MutationKind, MutationOp, SimHandle};

use crate::duckdb;

/// The tables checked: (view table, the account's records).
const CHECKED: [&str; 4] = ["parties", "opportunities", "cases", "tasks"];

/// `id → updatedAt (epoch seconds)` per checked table.
pub type State = BTreeMap<&'static str, BTreeMap<i64, i64>>;

/// The account as it is now.
pub fn account(sim: &SimHandle) -> State {
    sim.with_account(|a| {
        let of = |records: &BTreeMap<i64, capsule_sim::dataset::Stored>| -> BTreeMap<i64, i64> {
            records.iter().map(|(id, r)| (*id, r.updated.timestamp())).collect()
        };
        BTreeMap::from([
            ("parties", of(a.entity(Entity::Parties))),
            ("opportunities", of(a.entity(Entity::Opportunities))),
            ("cases", of(a.entity(Entity::Kases))),
            ("tasks", of(&a.tasks)),
        ])
    })
}

/// Loads the output under `root` with the integration's DuckDB kit (written for `root`, run
/// from `cwd`) and reads the current views.
pub fn views(cwd: &Path, root: &Path, integration: &Integration) -> State {
    let kit =
        warehouse::kit(Engine::DuckDb, integration, &Location::new(&root.display().to_string()).unwrap()).unwrap();
    let script = cwd.join("load.sql");
    std::fs::write(&script, &kit[0].body).unwrap();
    let db = cwd.join("warehouse.duckdb");
    duckdb::load(cwd, &db, &script);
    let raw = |table: &str| format!("{}_{table}_current", integration.name.replace('-', "_"));
    CHECKED
        .into_iter()
        .map(|table| {
            let sql = format!("SELECT id, epoch(\"updatedAt\")::BIGINT AS u FROM {}", raw(table));
            let rows = duckdb::query(cwd, &db, &sql);
            let ids = rows.iter().map(|r| (r["id"].as_i64().unwrap(), r["u"].as_i64().unwrap_or(0))).collect();
            (table, ids)
        })
        .collect()
}

/// The differences between two states, readable (empty when equal).
pub fn differences(want: &State, got: &State) -> Vec<String> {
    let mut out = Vec::new();
    for (table, want) in want {
        let got = &got[table];
        let missing: Vec<&i64> = want.keys().filter(|id| !got.contains_key(id)).collect();
        let extra: Vec<&i64> = got.keys().filter(|id| !want.contains_key(id)).collect();
        let stale: Vec<&i64> =
            want.iter().filter(|(id, u)| got.get(id).is_some_and(|g| g != *u)).map(|(id, _)| id).collect();
        if !(missing.is_empty() && extra.is_empty() && stale.is_empty()) {
            out.push(format!("{table}: missing {missing:?}, extra {extra:?}, stale {stale:?}"));
        }
    }
    out
}

/// Waits until `views` equals the account; the time it took.
pub fn await_views_equal(sim: &SimHandle, limit: Duration, views: impl Fn() -> State) -> Duration {
    let started = Instant::now();
    loop {
        let problems = differences(&account(sim), &views());
        if problems.is_empty() {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "the views are not the account after {limit:?}:\n{}", problems.join("\n"));
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Changes to parties, opportunities, cases and tasks (updates, creations, deletions; Capsule
/// sends no hook for a task's deletion, so tasks are not deleted).
pub fn change_the_account(sim: &SimHandle) {
    for (kind, op, n) in [
        (MutationKind::Parties, MutationOp::Update, 8),
        (MutationKind::Parties, MutationOp::Create, 4),
        (MutationKind::Parties, MutationOp::Delete, 3),
        (MutationKind::Opportunities, MutationOp::Update, 5),
        (MutationKind::Opportunities, MutationOp::Delete, 2),
        (MutationKind::Kases, MutationOp::Update, 4),
        (MutationKind::Kases, MutationOp::Delete, 1),
        (MutationKind::Tasks, MutationOp::Update, 4),
        (MutationKind::Tasks, MutationOp::Create, 2),
    ] {
        sim.mutate_n(kind, op, n).unwrap();
    }
}

/// The target URL of one of the account's hooks (with the secret), as Capsule lists it.
pub async fn a_target_url(sim: &SimHandle) -> String {
    let body: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/resthooks", sim.base_url()))
        .bearer_auth(sim.token())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let hooks = body["restHooks"].as_array().unwrap();
    let ours = hooks.iter().rev().find(|h| h["description"].as_str().is_some_and(|d| d.starts_with("capsule-sync")));
    ours.expect("a subscription of capsule-sync")["targetUrl"].as_str().unwrap().to_string()
}

/// POSTs `body` to `url`; the status and the answer's text.
pub async fn post(url: &str, body: impl Into<reqwest::Body>) -> (u16, String) {
    let answer = reqwest::Client::new().post(url).body(body).send().await.unwrap();
    (answer.status().as_u16(), answer.text().await.unwrap())
}

/// What a wrong secret, an unsubscribed event, an oversized and a malformed body are answered,
/// posted to the integration's `target` (whose last segment is its secret).
pub async fn refused_deliveries(target: &str, unsubscribed: &str) -> Vec<(u16, String)> {
    let wrong = format!("{}{}", &target[..target.len() - 1], if target.ends_with('0') { '1' } else { '0' });
    let party = r#"{"event":"party/updated","payload":[{"id":1,"updatedAt":"2026-01-01T00:00:00Z"}]}"#;
    let other = format!(r#"{{"event":"{unsubscribed}","payload":[{{"id":1}}]}}"#);
    let oversized =
        format!(r#"{{"event":"party/updated","payload":[{{"id":1,"about":"{}"}}]}}"#, "x".repeat((1 << 20) + 100_000));
    vec![
        post(&wrong, party).await,
        post(target, other).await,
        post(target, oversized).await,
        post(target, "{not json").await,
    ]
}
