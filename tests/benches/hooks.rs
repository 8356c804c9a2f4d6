//! REST hook latency and throughput on both runtimes, the simulator delivering over HTTP: the
//! local one through the real `capsule-sync hooks serve` process (the data directory's state
//! file and files), the serverless one through the Function URL into the real hook-receiver
//! handler and S3 on moto. A delivery counts once the receiver answered 2xx, which it does only
//! when its rows and manifest are written. Prints, per runtime, the time from a change to that
//! answer over ROUNDS single changes (p50, p95, max), and deliveries landed per second when
//! BURST changes come at once.
//! Run: `cargo build --release --bin capsule-sync &&
//!       bash scripts/with-moto.sh cargo bench -p capsule-sync-e2e --bench hooks [-- ROUNDS]`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use capsule_core::ports::StateStore;
use capsule_engine::hooks::subscriptions;
use capsule_sync_e2e::capsule_sim::{MutationKind, MutationOp, SimHandle};
use capsule_sync_e2e::serverless::{Setup, world_with};
use capsule_sync_e2e::{Local, client_for, integration_for, start_sim};
use tokio::io::{AsyncBufReadExt, BufReader};

const BURST: u64 = 100;
const PARTIES: usize = 1000;

struct Figures {
    runtime: String,
    latencies: Vec<Duration>,
    burst: Duration,
}

impl Figures {
    fn print(&mut self) {
        self.latencies.sort();
        let at = |q: f64| self.latencies[((self.latencies.len() - 1) as f64 * q).round() as usize];
        println!(
            "{:<34} {:>8.0} {:>8.0} {:>8.0} {:>12.0}",
            self.runtime,
            at(0.5).as_secs_f64() * 1000.0,
            at(0.95).as_secs_f64() * 1000.0,
            at(1.0).as_secs_f64() * 1000.0,
            BURST as f64 / self.burst.as_secs_f64()
        );
    }
}

/// Waits until the simulator has had `n` deliveries answered 2xx.
async fn delivered(sim: &SimHandle, n: u64) {
    let started = Instant::now();
    while sim.hook_stats().delivered < n {
        assert!(started.elapsed() < Duration::from_secs(60), "{:?}", sim.hook_stats());
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// ROUNDS single changes one after another, then BURST at once.
async fn measure(sim: &SimHandle, runtime: String, rounds: usize) -> Figures {
    let mut latencies = Vec::new();
    for _ in 0..rounds {
        let before = sim.hook_stats().delivered;
        let changed = Instant::now();
        sim.mutate_n(MutationKind::Parties, MutationOp::Update, 1).unwrap();
        delivered(sim, before + 1).await;
        latencies.push(changed.elapsed());
    }
    let before = sim.hook_stats().delivered;
    let changed = Instant::now();
    for _ in 0..BURST {
        sim.mutate_n(MutationKind::Parties, MutationOp::Update, 1).unwrap();
    }
    delivered(sim, before + BURST).await;
    Figures { runtime, latencies, burst: changed.elapsed() }
}

fn cli_binary() -> PathBuf {
    let path = std::env::var_os("CAPSULE_SYNC_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/capsule-sync"),
        PathBuf::from,
    );
    assert!(path.is_file(), "{} is missing: cargo build --release --bin capsule-sync", path.display());
    path
}

async fn local(rounds: usize, roll_ms: u64) -> Figures {
    let sim = start_sim(PARTIES, |_| {}).await;
    let local = Local::new();
    let integration = integration_for(&sim, "acme", "HOOK_BENCH_TOKEN");
    local.state.create_integration(&integration).await.unwrap();
    let mut serve = tokio::process::Command::new(cli_binary())
        .arg("--data-dir")
        .arg(local.dir.path())
        .args(["hooks", "serve", "--listen", "127.0.0.1:0", "--roll-every-ms", &roll_ms.to_string()])
        .stdout(Stdio::piped())
        // Refusals and landing failures only (each hook run's line would drown the table).
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let first = BufReader::new(serve.stdout.take().unwrap()).lines().next_line().await.unwrap().unwrap();
    let addr = first.split("http://").nth(1).and_then(|s| s.split('/').next()).unwrap();
    let app = client_for(&sim, &sim.token());
    subscriptions::subscribe(&app, &local.state, "acme", &format!("http://{addr}"), &["parties".into()]).await.unwrap();
    let figures = measure(&sim, format!("hooks serve --roll-every-ms {roll_ms}"), rounds).await;
    sim.stop().await;
    figures
}

async fn serverless(rounds: usize) -> Figures {
    let w = world_with(Setup::new(PARTIES)).await;
    let app = client_for(&w.sim, &w.sim.token());
    subscriptions::subscribe(&app, &w.stack.state, "acme", &w.hook_url, &["parties".into()]).await.unwrap();
    measure(&w.sim, "hook-receiver (Function URL, S3)".into(), rounds).await
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let rounds: usize =
        std::env::args().skip(1).find(|a| !a.starts_with("--")).and_then(|a| a.parse().ok()).unwrap_or(50);
    println!("{rounds} single party updates, then {BURST} at once; a delivery counts when answered 2xx (landed)");
    println!("{:<34} {:>8} {:>8} {:>8} {:>12}", "runtime", "p50 ms", "p95 ms", "max ms", "burst dlv/s");
    local(rounds, 100).await.print();
    local(rounds, 1000).await.print();
    serverless(rounds).await.print();
}
