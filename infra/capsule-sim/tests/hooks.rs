//! The simulator's REST hooks over real HTTP: subscriptions through the API as Capsule
//! documents them, a `POST` to the target on every change (one record each, or batched),
//! retries when the target fails, and the faults that drop or duplicate deliveries.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use capsule_sim::hooks::DeliveryFaults;
use capsule_sim::{MutationKind, MutationOp, SimConfig, SimHandle};
use serde_json::{Value, json};

const TOKEN: &str = "sim-test-token";

async fn sim() -> SimHandle {
    capsule_sim::start(SimConfig { parties: 50, token: TOKEN.into(), ..SimConfig::default() }).await.unwrap()
}

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// A hook target on loopback: records every body; answers 500 to the first `fail_first`.
struct Target {
    url: String,
    received: Arc<Mutex<Vec<Value>>>,
    _server: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct TargetState {
    received: Arc<Mutex<Vec<Value>>>,
    failures_left: Arc<Mutex<u32>>,
}

async fn receive(State(s): State<TargetState>, body: axum::Json<Value>) -> StatusCode {
    let mut left = s.failures_left.lock().unwrap();
    if *left > 0 {
        *left -= 1;
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    s.received.lock().unwrap().push(body.0);
    StatusCode::OK
}

async fn target(fail_first: u32) -> Target {
    let received = Arc::new(Mutex::new(Vec::new()));
    let state = TargetState { received: received.clone(), failures_left: Arc::new(Mutex::new(fail_first)) };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = axum::Router::new().route("/hook", post(receive)).with_state(state);
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Target { url, received, _server: server }
}

impl Target {
    /// Waits until `n` bodies have arrived (or 10 s pass), then a little longer for strays.
    async fn bodies(&self, n: usize) -> Vec<Value> {
        let started = Instant::now();
        while self.received.lock().unwrap().len() < n && started.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.after(Duration::from_millis(300)).await
    }

    /// Every body received once `wait` has passed (for what must not arrive: deliveries take
    /// milliseconds on loopback, so a second is ample).
    async fn after(&self, wait: Duration) -> Vec<Value> {
        tokio::time::sleep(wait).await;
        self.received.lock().unwrap().clone()
    }
}

async fn subscribe(sim: &SimHandle, event: &str, url: &str, batched: bool) -> reqwest::Response {
    let body = json!({"restHook": {"event": event, "targetUrl": url, "description": "test", "batched": batched}});
    http().post(format!("{}/resthooks", sim.base_url())).bearer_auth(TOKEN).json(&body).send().await.unwrap()
}

fn ids(bodies: &[Value], event: &str) -> Vec<i64> {
    let mut ids: Vec<i64> = bodies
        .iter()
        .filter(|b| b["event"] == event)
        .flat_map(|b| b["payload"].as_array().unwrap().iter().map(|r| r["id"].as_i64().unwrap()))
        .collect();
    ids.sort_unstable();
    ids
}

fn sorted(mut ids: Vec<i64>) -> Vec<i64> {
    ids.sort_unstable();
    ids
}

#[tokio::test]
async fn a_change_is_posted_to_each_subscription_of_its_event() {
    let sim = sim().await;
    let target = target(0).await;
    let created = subscribe(&sim, "party/updated", &target.url, false).await;
    assert_eq!(created.status(), 201);
    let hook: Value = created.json().await.unwrap();
    assert_eq!(hook["restHook"]["event"], "party/updated");
    subscribe(&sim, "party/deleted", &target.url, false).await;
    subscribe(&sim, "opportunity/created", &target.url, true).await;

    let listed: Value = http()
        .get(format!("{}/resthooks", sim.base_url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed = listed["restHooks"].as_array().unwrap();
    assert!(listed.iter().any(|h| h["id"] == hook["restHook"]["id"] && h["targetUrl"] == target.url.as_str()));

    let updated = sim.mutate_n(MutationKind::Parties, MutationOp::Update, 3).unwrap().ids;
    let bodies = target.bodies(3).await;
    assert_eq!(ids(&bodies, "party/updated"), sorted(updated.clone()), "one delivery per record");
    assert_eq!(bodies.len(), 3);
    for body in &bodies {
        let party = &body["payload"][0];
        let id = party["id"].as_i64().unwrap();
        let now = sim.with_account(|a| a.entity(capsule_sim::Entity::Parties)[&id].body());
        assert_eq!(party, &now, "the record as the API returns it");
    }

    let deleted = sim.mutate_n(MutationKind::Parties, MutationOp::Delete, 2).unwrap().ids;
    let opportunities = sim.mutate_n(MutationKind::Opportunities, MutationOp::Create, 4).unwrap().ids;
    sim.mutate_n(MutationKind::Tasks, MutationOp::Update, 2).unwrap(); // nobody subscribed
    let bodies = target.bodies(3 + 2 + 1).await;
    assert_eq!(ids(&bodies, "party/deleted"), sorted(deleted));
    assert_eq!(ids(&bodies, "opportunity/created"), sorted(opportunities));
    assert_eq!(bodies.iter().filter(|b| b["event"] == "opportunity/created").count(), 1, "batched: one delivery");
    assert_eq!(bodies.len(), 6, "nothing for unsubscribed events: {bodies:#?}");

    let id = hook["restHook"]["id"].as_i64().unwrap();
    let url = format!("{}/resthooks/{id}", sim.base_url());
    assert_eq!(http().delete(&url).bearer_auth(TOKEN).send().await.unwrap().status(), 204);
    assert_eq!(http().delete(&url).bearer_auth(TOKEN).send().await.unwrap().status(), 404);
    sim.mutate_n(MutationKind::Parties, MutationOp::Update, 2).unwrap();
    assert_eq!(target.after(Duration::from_secs(1)).await.len(), 6, "unsubscribed: no more deliveries");
}

#[tokio::test]
async fn subscriptions_follow_the_documented_rules() {
    let sim = sim().await;
    let url = "http://127.0.0.1:9/hook";
    let bad = subscribe(&sim, "party/renamed", url, false).await;
    assert_eq!(bad.status(), 422);
    assert!(bad.text().await.unwrap().contains("party/renamed"));
    let not_wrapped = http()
        .post(format!("{}/resthooks", sim.base_url()))
        .bearer_auth(TOKEN)
        .json(&json!({"event": "party/created", "targetUrl": url}))
        .send()
        .await
        .unwrap();
    assert_eq!(not_wrapped.status(), 400);
    for _ in 0..20 {
        assert_eq!(subscribe(&sim, "task/completed", url, false).await.status(), 201);
    }
    let over = subscribe(&sim, "task/completed", url, false).await;
    assert_eq!(over.status(), 422);
    assert!(over.text().await.unwrap().contains("at most 20"));
    let anonymous = http()
        .post(format!("{}/resthooks", sim.base_url()))
        .json(&json!({"restHook": {"event": "party/created", "targetUrl": url}}))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let elsewhere = http().post(format!("{}/parties", sim.base_url())).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(elsewhere.status(), 405, "the rest of the API stays read-only");
}

#[tokio::test]
async fn a_failing_target_is_retried_until_it_answers() {
    let sim = sim().await;
    let target = target(2).await;
    subscribe(&sim, "task/created", &target.url, false).await;
    let created = sim.mutate_n(MutationKind::Tasks, MutationOp::Create, 1).unwrap().ids;
    let bodies = target.bodies(1).await;
    assert_eq!(ids(&bodies, "task/created"), created, "delivered once, on the third try");
    let stats = sim.hook_stats();
    assert_eq!((stats.delivered, stats.failed_tries, stats.given_up), (1, 2, 0), "{stats:?}");
}

#[tokio::test]
async fn the_network_faults_drop_and_duplicate_deliveries() {
    let sim = sim().await;
    let target = target(0).await;
    subscribe(&sim, "kase/updated", &target.url, false).await;
    sim.set_hook_faults(DeliveryFaults { drop: 1.0, duplicate: 0.0 });
    sim.mutate_n(MutationKind::Kases, MutationOp::Update, 3).unwrap();
    assert!(target.after(Duration::from_secs(1)).await.is_empty(), "every delivery dropped");
    assert_eq!(sim.hook_stats().dropped, 3);

    sim.set_hook_faults(DeliveryFaults { drop: 0.0, duplicate: 1.0 });
    let updated = sim.mutate_n(MutationKind::Kases, MutationOp::Update, 2).unwrap().ids;
    let bodies = target.bodies(4).await;
    let twice: Vec<i64> = sorted(updated.iter().flat_map(|id| [*id, *id]).collect());
    assert_eq!(ids(&bodies, "kase/updated"), twice, "each delivered twice");

    let admin = http()
        .post(format!("{}/_admin/hooks/faults", sim.root_url()))
        .json(&json!({"drop": 0.0, "duplicate": 0.0}))
        .send()
        .await
        .unwrap();
    assert!(admin.status().is_success());
    let stats: Value =
        http().get(format!("{}/_admin/hooks", sim.root_url())).send().await.unwrap().json().await.unwrap();
    assert_eq!(stats["stats"]["duplicated"], 2);
    assert_eq!(stats["subscriptions"].as_array().unwrap().len(), 1);
}
