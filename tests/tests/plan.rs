//! The quota plan against the simulator: its per-table request estimates are what a sync then
//! spends (exactly for listed tables, roughly for the fan-out table before its first run, exactly
//! after), and a scheduled run's estimate sees the account's recent changes.

use std::collections::BTreeMap;

use capsule_core::integration::RecentWindow;
use capsule_core::ports::StateStore;
use capsule_engine::engine::RunOptions;
use capsule_engine::plan::plan;
use capsule_sync_e2e::capsule_sim::{MutationKind, MutationOp};
use capsule_sync_e2e::*;
use chrono::Utc;

#[tokio::test]
async fn the_plan_predicts_what_a_sync_spends() {
    let sim = start_sim(3000, |_| {}).await;
    let local = Local::new();
    let mut integration = integration_for(&sim, "acme", "UNUSED");
    integration.frequency_minutes = 24 * 60;
    let client = client_for(&sim, "test-token");

    let before = plan(&client, &integration, &[], Utc::now()).await.unwrap();
    let (_, outcomes) = local.sync(&client, &integration, &[], RunOptions::default()).await;
    let spent: BTreeMap<&str, u64> =
        outcomes.iter().map(|o| (o.record.table.as_str(), o.record.requests.requests)).collect();
    let rows: BTreeMap<&str, u64> = outcomes.iter().map(|o| (o.record.table.as_str(), o.record.rows)).collect();
    for t in &before.tables {
        if t.table == "tracks" {
            let ratio = t.first_load_requests as f64 / spent[t.table] as f64;
            assert!((0.5..=1.5).contains(&ratio), "tracks estimated {} for {}", t.first_load_requests, spent[t.table]);
        } else {
            assert_eq!(t.first_load_requests, spent[t.table], "requests of {}", t.table);
        }
        if let Some(estimate) = t.rows.filter(|_| t.table != "milestones") {
            assert_eq!(estimate, rows[t.table], "rows of {}", t.table);
        }
    }
    // Counting costs about 2·log2(pages) per big listing, a request per small one.
    assert!((22..=150).contains(&before.probe_requests), "the plan cost {} requests", before.probe_requests);
    let usable = before.usable_per_hour as f64;
    assert!((before.first_load_hours - before.first_load_requests as f64 / usable).abs() < 1e-9);

    // After a run, tracks are planned from it; a day's changes show in the scheduled estimate.
    sim.mutate_n(MutationKind::Parties, MutationOp::Update, 250).unwrap();
    let history = local.state.runs(Some("acme"), 100).await.unwrap();
    let after = plan(&client, &integration, &history, Utc::now()).await.unwrap();
    let tracks = after.tables.iter().find(|t| t.table == "tracks").unwrap();
    assert_eq!(tracks.scheduled_requests, spent["tracks"]);
    let parties = after.tables.iter().find(|t| t.table == "parties").unwrap();
    assert_eq!(parties.scheduled_rows, Some(250));
    assert_eq!(parties.scheduled_requests, 3 + 2, "three pages and the guard's two deleted-feed reads");
    assert!((after.runs_per_day - 1.0).abs() < 1e-9);
    let employees = after.tables.iter().find(|t| t.table == "employees").unwrap();
    assert_eq!(employees.scheduled_requests, 0, "employees come from the parties snapshot");

    // Entries in recent-window mode: a run reads the new pages, a whole read every 7 days.
    let whole = after.tables.iter().find(|t| t.table == "entries").unwrap().scheduled_requests;
    sim.mutate_n(MutationKind::Entries, MutationOp::Create, 150).unwrap();
    integration.recent_window = Some(RecentWindow { full_refresh_days: 7 });
    let windowed = plan(&client, &integration, &history, Utc::now()).await.unwrap();
    let entries = windowed.tables.iter().find(|t| t.table == "entries").unwrap();
    assert!(entries.basis.starts_with("recent window"), "{}", entries.basis);
    let window_pages = 2; // ~120 entries dated now (the rest back-dated), read until a page reaches older ones
    let expected = (whole + 6 * window_pages).div_ceil(7);
    assert!(entries.scheduled_requests.abs_diff(expected) <= 1, "{} vs {expected}", entries.scheduled_requests);
}
