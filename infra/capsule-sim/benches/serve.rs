//! How fast the simulator serves records: pages through /parties, /entries and /tasks
//! (perPage=100) with several concurrent clients and prints records/s and requests/s.
//! Run: `cargo bench -p capsule-sim --bench serve [-- PARTIES CLIENTS]`.

use std::time::Instant;

use capsule_sim::SimConfig;
use capsule_sim::stats::peak_rss_mib;
use serde_json::Value;

/// The allocator the `capsule-sim` binary uses, so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let parties: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let clients: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(4);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let started = Instant::now();
    let sim = capsule_sim::start(SimConfig { parties, rate_limit: u32::MAX, ..SimConfig::default() }).await.unwrap();
    let generated = started.elapsed().as_secs_f64();
    let (records, kept) = sim.with_account(|a| a.kept_size());
    println!(
        "generated {parties} parties in {generated:.2}s; {records} records, {kept} kept as text; peak RSS {:.0} MiB",
        peak_rss_mib()
    );

    let http = reqwest::Client::new();
    let endpoints = ["parties?embed=tags,fields", "entries", "tasks?status=open,completed,pending"];
    let started = Instant::now();
    let mut handles = Vec::new();
    for c in 0..clients {
        let (http, base, token) = (http.clone(), sim.base_url().to_string(), sim.token().to_string());
        let endpoint = endpoints[c % endpoints.len()];
        handles.push(tokio::spawn(async move {
            let (mut records, mut requests, mut page) = (0usize, 0usize, 1);
            let sep = if endpoint.contains('?') { '&' } else { '?' };
            loop {
                let url = format!("{base}/{endpoint}{sep}perPage=100&page={page}");
                let r = http.get(&url).bearer_auth(&token).send().await.unwrap();
                let more = r.headers().contains_key("link");
                let body: Value = r.json().await.unwrap();
                let key = endpoint.split('?').next().unwrap();
                records += body[key].as_array().unwrap().len();
                requests += 1;
                page += 1;
                if !more {
                    return (records, requests);
                }
            }
        }));
    }
    let (mut records, mut requests) = (0, 0);
    for h in handles {
        let (r, q) = h.await.unwrap();
        records += r;
        requests += q;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "served {records} records in {requests} requests with {clients} clients in {secs:.2}s: {:.0} records/s, \
         {:.0} requests/s; peak RSS {:.0} MiB",
        records as f64 / secs,
        requests as f64 / secs,
        peak_rss_mib()
    );
    sim.stop().await;
}
