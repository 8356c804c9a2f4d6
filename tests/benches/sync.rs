//! Connector throughput: syncs every table of a simulated account through the local adapters
//! and prints rows/s, requests per table and the process's peak memory.
//! Run: `cargo bench -p capsule-sync-e2e --bench sync [-- PARTIES]`.

use std::time::Instant;

use capsule_engine::engine::RunOptions;
use capsule_sync_e2e::capsule_sim::stats::peak_rss_mib;
use capsule_sync_e2e::*;

#[tokio::main]
async fn main() {
    let parties: usize =
        std::env::args().skip(1).find(|a| !a.starts_with("--")).and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let sim = start_sim(parties, |c| c.rate_limit = u32::MAX).await;
    println!("account: {parties} parties; peak RSS after generating it: {:.1} MiB", peak_rss_mib());
    let local = Local::new();
    let integration = integration_for(&sim, "bench", "UNUSED");
    let client = client_for(&sim, "test-token");
    let started = Instant::now();
    let (_, outcomes) = local.sync(&client, &integration, &[], RunOptions::default()).await;
    let secs = started.elapsed().as_secs_f64();
    let rows: u64 = outcomes.iter().map(|o| o.record.rows).sum();
    let bytes: u64 = outcomes.iter().map(|o| o.record.bytes).sum();
    let requests: u64 = outcomes.iter().map(|o| o.record.requests.requests).sum();
    assert!(outcomes.iter().all(|o| o.error.is_none()), "every table succeeded");
    println!("{:<22} {:>8} {:>9}", "table", "rows", "requests");
    for o in &outcomes {
        println!("{:<22} {:>8} {:>9}", o.record.table, o.record.rows, o.record.requests.requests);
    }
    println!(
        "synced {rows} rows ({:.1} MiB gzip) in {requests} requests in {secs:.2}s: {:.0} rows/s; peak RSS {:.1} MiB (simulator included)",
        bytes as f64 / 1048576.0,
        rows as f64 / secs,
        peak_rss_mib()
    );
}
