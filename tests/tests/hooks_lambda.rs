//! REST hooks on the serverless runtime: the simulator POSTs to the hook-receiver's Function
//! URL (a loopback URL invoking the real handler through the Invoke API, as AWS does), the
//! receiver lands hook runs in S3 (moto), and the DuckDB current views built from the bucket
//! follow the account within seconds with no batch sync; dropped and duplicated deliveries are
//! healed by the next batch sync; refused deliveries land nothing.

use std::time::{Duration, Instant};

use capsule_core::ports::StateStore;
use capsule_engine::hooks::subscriptions;
use capsule_sync_e2e::capsule_sim::hooks::DeliveryFaults;
use capsule_sync_e2e::client_for;
use capsule_sync_e2e::hooks::{a_target_url, account, change_the_account, differences, refused_deliveries, views};
use capsule_sync_e2e::serverless::{Setup, World, tick_until_done, world_with};
use serde_json::json;

/// The bucket's objects under the world's prefix, mirrored into `root`.
async fn mirror(w: &World, root: &std::path::Path) {
    let prefix = format!("{}/", w.prefix);
    for key in w.stack.keys().await {
        let Some(relative) = key.strip_prefix(&prefix) else { continue };
        let path = root.join(relative);
        if path.exists() {
            continue;
        }
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, w.stack.object(&key).await).unwrap();
    }
}

async fn hook_manifests(w: &World) -> usize {
    let published = |k: &&String| k.ends_with(".json") && !k.ends_with(".redshift.json");
    w.stack.keys().await.iter().filter(|k| k.contains("/runs/") && k.contains("-hook")).filter(published).count()
}

/// Waits until the views built from the bucket equal the account; the time it took.
async fn await_views_equal(w: &World, limit: Duration) -> Duration {
    let integration = w.stack.state.get_integration("acme").await.unwrap().unwrap();
    let started = Instant::now();
    // One mirror and one database, loaded again and again: what a loader on a timer does.
    let (root, work) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    loop {
        mirror(w, root.path()).await;
        let problems = differences(&account(&w.sim), &views(work.path(), root.path(), &integration));
        if problems.is_empty() {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "the views are not the account after {limit:?}:\n{}", problems.join("\n"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn batch_sync(w: &World) {
    let forced = w.invoke("orchestrator", json!({"integration": "acme", "force": true})).await;
    let run = forced["dispatched"][0]["run_id"].as_str().unwrap().to_string();
    tick_until_done(w, &run, 22, Duration::from_secs(180)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_hook_receiver_lands_deliveries_through_its_url_and_the_batch_sync_heals_what_was_lost() {
    let w = world_with(Setup::new(150)).await;
    batch_sync(&w).await;
    let app = client_for(&w.sim, &w.sim.token());
    let hooked: Vec<String> = ["parties", "opportunities", "cases", "tasks"].map(String::from).into();
    let done = subscriptions::subscribe(&app, &w.stack.state, "acme", &w.hook_url, &hooked).await.unwrap();
    assert_eq!(done.created.len(), 16, "every event of the hooked tables: {done:?}");

    let changed = Instant::now();
    change_the_account(&w.sim);
    // Nine changes, each one batched delivery, each landed as its own hook run on Lambda.
    while hook_manifests(&w).await < 9 {
        assert!(changed.elapsed() < Duration::from_secs(30), "{} hook runs landed", hook_manifests(&w).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let landed_in = changed.elapsed();
    let fresh = await_views_equal(&w, Duration::from_secs(30)).await;
    println!(
        "changes to published hook runs in S3: {:.2} s; then to views equal to the account (bucket copied down, load.sql run): {:.2} s",
        landed_in.as_secs_f64(),
        fresh.as_secs_f64()
    );
    let landed = hook_manifests(&w).await;
    assert_eq!(landed, 9, "a delivery is landed once");

    // Users' events were left out of the subscription.
    let target = a_target_url(&w.sim).await;
    let answers = refused_deliveries(&target, "user/updated").await;
    let statuses: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
    assert_eq!(statuses, [403, 422, 413, 400], "{answers:?}");
    assert_eq!(hook_manifests(&w).await, landed, "a refused delivery lands nothing");

    w.sim.set_hook_faults(DeliveryFaults { drop: 0.3, duplicate: 0.5 });
    change_the_account(&w.sim);
    change_the_account(&w.sim);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stats = w.sim.hook_stats();
    assert!(stats.dropped > 0 && stats.duplicated > 0, "{stats:?}");
    batch_sync(&w).await;
    await_views_equal(&w, Duration::from_secs(10)).await;
    w.lambda.wait_idle().await;
    assert!(w.lambda.errors().is_empty(), "{:?}", w.lambda.errors());
}
