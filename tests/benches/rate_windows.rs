//! A first load that needs several of Capsule's rate-limit windows, with the window scaled down
//! to 40 requests per 4 seconds (10 % reserve: 36 usable), through the serverless path
//! (orchestrator ticking every 300 ms, 3-second table-sync invocations) and through the CLI's
//! engine (one process waiting in place). Prints windows used against the minimum
//! `ceil(requests / (limit × (1 − reserve)))`, requests, invocations and summed invocation
//! seconds (what Lambda bills).
//! Run: `bash scripts/with-moto.sh cargo bench -p capsule-sync-e2e --bench rate_windows [-- PARTIES]`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use capsule_client::{CapsuleClient, ClientOptions};
use capsule_core::budget::RateBudgetStore;
use capsule_core::integration::TokenSource;
use capsule_core::ports::TokenProvider;
use capsule_engine::engine::RunOptions;
use capsule_local::local_token_provider;
use capsule_sync_e2e::serverless::{Setup, tick_until_done, world_with};
use capsule_sync_e2e::*;
use serde_json::json;

const LIMIT: u32 = 40;
const WINDOW: Duration = Duration::from_secs(4);
const SHARE: u32 = 36;

struct Report {
    path: &'static str,
    windows: Vec<u32>,
    invocations: usize,
    billed: Duration,
    wall: Duration,
}

impl Report {
    fn print(&self) {
        let requests: u32 = self.windows.iter().sum();
        println!(
            "{:<10} {:>8} {:>7} {:>7} {:>11} {:>9.1} {:>7.1}  {:?}",
            self.path,
            requests,
            self.windows.len(),
            requests.div_ceil(SHARE),
            self.invocations,
            self.billed.as_secs_f64(),
            self.wall.as_secs_f64(),
            self.windows
        );
    }
}

fn scaled_client_options() -> ClientOptions {
    let mut options = fast_client_options();
    options.budget.window = WINDOW;
    options.budget.default_limit = LIMIT;
    options
}

async fn serverless(parties: usize) -> Report {
    let mut setup = Setup::new(parties);
    setup.rate = Some((LIMIT, WINDOW));
    setup.remaining = Duration::from_secs(3);
    setup.client = ClientOptions { max_inline_wait: Duration::from_millis(500), ..scaled_client_options() };
    setup.lambda.timeout = Some(Duration::from_secs(6));
    setup.run.lease_ttl = Duration::from_secs(2);
    let w = world_with(setup).await;
    let started = Instant::now();
    let scheduled = json!({"version": "0", "source": "aws.events", "detail-type": "Scheduled Event", "detail": {}});
    let summary = w.invoke("orchestrator", scheduled).await;
    let run_id = summary["dispatched"][0]["run_id"].as_str().unwrap().to_string();
    let ticks = tick_until_done(&w, &run_id, 22, Duration::from_secs(1800)).await;
    Report {
        path: "lambda",
        windows: w.sim.rate_windows(),
        invocations: w.lambda.invocations() - ticks - 1,
        billed: w.lambda.durations().into_iter().sum(),
        wall: started.elapsed(),
    }
}

async fn cli(parties: usize) -> Report {
    let sim = start_sim(parties, |c| {
        c.rate_limit = LIMIT;
        c.rate_window = WINDOW;
    })
    .await;
    let local = Local::new();
    let token_file = local.dir.path().join("token");
    std::fs::write(&token_file, "test-token").unwrap();
    let mut integration = integration_for(&sim, "acme", "UNUSED");
    integration.token = TokenSource::File { path: token_file };
    let tokens: Arc<dyn TokenProvider> = Arc::from(local_token_provider(&integration.token).unwrap());
    let store: Arc<dyn RateBudgetStore> = Arc::new(local.state.clone());
    let client = CapsuleClient::for_integration(&integration, tokens, store, scaled_client_options()).await.unwrap();
    let started = Instant::now();
    let (_, outcomes) = local.sync(&client, &integration, &[], RunOptions::default()).await;
    assert!(outcomes.iter().all(|o| o.error.is_none()), "every table succeeded");
    let wall = started.elapsed();
    Report { path: "cli", windows: sim.rate_windows(), invocations: 1, billed: wall, wall }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let parties: usize =
        std::env::args().skip(1).find(|a| !a.starts_with("--")).and_then(|a| a.parse().ok()).unwrap_or(1500);
    println!("{parties} parties; {LIMIT} requests per {WINDOW:?} window, {SHARE} usable (10 % reserve)");
    println!(
        "{:<10} {:>8} {:>7} {:>7} {:>11} {:>9} {:>7}  per window",
        "path", "requests", "windows", "minimum", "invocations", "billed s", "wall s"
    );
    serverless(parties).await.print();
    cli(parties).await.print();
}
