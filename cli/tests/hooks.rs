//! REST hooks on the local runtime, end to end through the real binary: `hooks serve` receives
//! what the simulator delivers, `hooks subscribe|list|unsubscribe` manage the subscriptions,
//! and the DuckDB current views follow the account within seconds with no batch sync; with
//! deliveries dropped and duplicated, the next batch sync heals them. Refused deliveries land
//! nothing.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use capsule_core::integration::{Integration, TokenSource};
use capsule_sync_e2e::capsule_sim::hooks::DeliveryFaults;
use capsule_sync_e2e::hooks::{a_target_url, await_views_equal, change_the_account, refused_deliveries, views};
use capsule_sync_e2e::start_sim;
use tokio::io::{AsyncBufReadExt, BufReader};

const TABLES: &str = "parties,opportunities,cases,tasks,deleted_parties,deleted_opportunities,deleted_cases";
const ENV: [(&str, &str); 2] = [("HOOK_TEST_TOKEN", "test-token"), ("CAPSULE_APP_TOKEN", "test-token")];

async fn ok(dir: &Path, args: &[&str]) -> String {
    let out = support::capsule_sync(dir, args, &ENV).await;
    assert!(out.ok, "capsule-sync {args:?} failed:\n{}\n{}", out.stdout, out.stderr);
    out.stdout
}

/// The published hook runs' manifests under the data directory.
fn hook_manifests(dir: &Path) -> usize {
    let Ok(runs) = std::fs::read_dir(dir.join("output/_meta/acme/runs")) else { return 0 };
    runs.filter_map(|run| run.ok())
        .filter(|run| run.file_name().to_string_lossy().contains("-hook"))
        .flat_map(|run| std::fs::read_dir(run.path()).unwrap())
        .map(|file| file.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".json") && !name.ends_with(".redshift.json"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hooks_serve_lands_changes_within_seconds_and_the_batch_sync_heals_what_was_lost() {
    let sim = start_sim(150, |_| {}).await;
    let data = tempfile::tempdir().unwrap();
    let dir = data.path();
    let base = sim.base_url();
    ok(
        dir,
        &[
            "integrations",
            "create",
            "acme",
            "--token",
            "env:HOOK_TEST_TOKEN",
            "--api-base-url",
            base,
            "--tables",
            TABLES,
        ],
    )
    .await;
    ok(dir, &["sync", "acme"]).await;

    let mut serve = tokio::process::Command::new(env!("CARGO_BIN_EXE_capsule-sync"))
        .arg("--data-dir")
        .arg(dir)
        .args(["hooks", "serve", "--listen", "127.0.0.1:0", "--roll-every-ms", "300"])
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(serve.stdout.take().unwrap()).lines();
    let first = lines.next_line().await.unwrap().unwrap();
    let addr = first.split("http://").nth(1).and_then(|s| s.split('/').next()).unwrap().to_string();
    let receiver = format!("http://{addr}");

    // Subscribing twice changes nothing the second time; `list` shows every event.
    let subscribed = ok(dir, &["hooks", "subscribe", "acme", "--receiver", &receiver]).await;
    assert!(subscribed.contains("16 REST hooks subscribed (16 added, 0 already there, 0 removed)"), "{subscribed}");
    let again = ok(dir, &["hooks", "subscribe", "acme", "--receiver", &receiver]).await;
    assert!(again.contains("(0 added, 16 already there, 0 removed)"), "{again}");
    let listed = ok(dir, &["hooks", "list", "acme"]).await;
    for event in ["party/updated", "kase/deleted", "opportunity/moved", "task/completed"] {
        assert!(listed.contains(event), "{listed}");
    }
    assert!(listed.contains("embed=tags,fields"), "the batch listing's embed: {listed}");

    let mut integration = Integration::new(
        "acme".parse().unwrap(),
        TokenSource::Env { var: "HOOK_TEST_TOKEN".into() },
        chrono::Utc::now(),
    );
    integration.tables = TABLES.split(',').map(String::from).collect::<Vec<_>>().into();
    let work = tempfile::tempdir().unwrap();
    let output = dir.join("output");
    let view = || views(work.path(), &output, &integration);

    // Changes reach the views with no batch sync.
    change_the_account(&sim);
    let fresh = await_views_equal(&sim, Duration::from_secs(30), view);
    println!("delivery to queryable view (load included): {:.2} s", fresh.as_secs_f64());
    let landed = hook_manifests(dir);
    assert!(landed > 0, "hook runs were published");

    // Refused deliveries: each a clear 4xx, nothing landed.
    let target = a_target_url(&sim).await;
    let answers = refused_deliveries(&target, "user/updated").await;
    let statuses: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
    assert_eq!(statuses, [403, 422, 413, 400], "{answers:?}");
    assert!(answers[1].1.contains("did not subscribe to `user/updated`"), "{answers:?}");
    for (_, body) in &answers {
        assert!(!body.contains(target.rsplit('/').next().unwrap()), "an answer never echoes the secret: {body}");
    }
    assert_eq!(hook_manifests(dir), landed, "a refused delivery lands nothing");

    // Deliveries dropped and duplicated: the views fall behind, the next batch sync heals them.
    sim.set_hook_faults(DeliveryFaults { drop: 0.3, duplicate: 0.5 });
    change_the_account(&sim);
    change_the_account(&sim);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stats = sim.hook_stats();
    assert!(stats.dropped > 0 && stats.duplicated > 0, "{stats:?}");
    ok(dir, &["sync", "acme"]).await;
    await_views_equal(&sim, Duration::from_secs(10), view);

    let status = ok(dir, &["status", "acme"]).await;
    assert!(status.contains("REST hooks: 16 events"), "{status}");
    assert!(!status.contains("0 deliveries"), "{status}");
    let jobs = ok(dir, &["jobs", "acme"]).await;
    assert!(jobs.contains("last delivery: 20"), "{jobs}");

    // Unsubscribing removes the hooks and the secret: the old URL is refused.
    let gone = ok(dir, &["hooks", "unsubscribe", "acme"]).await;
    assert!(gone.contains("16 REST hooks removed"), "{gone}");
    let party = r#"{"event":"party/updated","payload":[{"id":1}]}"#;
    assert_eq!(capsule_sync_e2e::hooks::post(&target, party).await.0, 403);
    let status = ok(dir, &["status", "acme"]).await;
    assert!(!status.contains("REST hooks"), "{status}");

    // Ctrl-C: the server stops cleanly after landing what it holds.
    let pid = serve.id().unwrap().to_string();
    std::process::Command::new("kill").args(["-INT", &pid]).status().unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(10), serve.wait()).await.unwrap().unwrap();
    assert!(exit.success(), "{exit}");
    let last = lines.next_line().await.unwrap().unwrap_or_default();
    let last =
        if last.starts_with("subscribe with") { lines.next_line().await.unwrap().unwrap_or_default() } else { last };
    assert!(last.contains("stopped; every delivery answered 2xx has landed"), "{last}");
    sim.stop().await;
}
