//! The simulator against the documented facts (`../shared/docs/capsule-api.md`), over real HTTP.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use capsule_sim::{Fault, FaultRule, LinkStyle, Mutation, MutationKind, MutationOp, SimConfig, SimHandle};
use serde_json::{Value, json};

const TOKEN: &str = "sim-test-token";

async fn sim(parties: usize, tweak: impl FnOnce(&mut SimConfig)) -> SimHandle {
    let mut c = SimConfig { parties, token: TOKEN.into(), ..SimConfig::default() };
    tweak(&mut c);
    capsule_sim::start(c).await.unwrap()
}

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

async fn get(sim: &SimHandle, path_and_query: &str) -> reqwest::Response {
    http().get(format!("{}{path_and_query}", sim.base_url())).bearer_auth(TOKEN).send().await.unwrap()
}

async fn get_json(sim: &SimHandle, path_and_query: &str) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Value) {
    let r = get(sim, path_and_query).await;
    let (status, headers) = (r.status(), r.headers().clone());
    (status, headers, r.json().await.unwrap())
}

fn next_link(headers: &reqwest::header::HeaderMap) -> Option<String> {
    let link = headers.get("link")?.to_str().unwrap();
    let target = link.split(';').next()?.trim();
    assert!(link.contains("rel=\"next\""), "{link}");
    Some(target.trim_start_matches('<').trim_end_matches('>').to_string())
}

/// Every page body from a first URL, following `Link rel="next"`. Like the connector, re-adds
/// the first request's parameters the link leaves out, unless `naive`.
async fn read_pages(sim: &SimHandle, first: &str, naive: bool) -> Vec<Value> {
    let first_url = url::Url::parse(&format!("{}{first}", sim.base_url())).unwrap();
    let mut url = Some(first_url.clone());
    let mut bodies = Vec::new();
    while let Some(u) = url {
        let r = http().get(u.clone()).bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(r.status(), 200, "{u}");
        url = next_link(r.headers()).map(|n| {
            let mut n = url::Url::parse(&n).unwrap();
            if !naive {
                let present: Vec<String> = n.query_pairs().map(|(k, _)| k.into_owned()).collect();
                let missing: Vec<(String, String)> = first_url
                    .query_pairs()
                    .filter(|(k, _)| k != "page" && !present.contains(&k.to_string()))
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect();
                n.query_pairs_mut().extend_pairs(missing);
            }
            n
        });
        bodies.push(r.json::<Value>().await.unwrap());
    }
    bodies
}

/// Every item under `envelope` across pages, and the number of pages.
async fn read_all(sim: &SimHandle, first: &str, envelope: &str) -> (Vec<Value>, usize) {
    let bodies = read_pages(sim, first, false).await;
    let items = bodies.iter().flat_map(|b| b[envelope].as_array().cloned().unwrap_or_default()).collect();
    (items, bodies.len())
}

#[tokio::test]
async fn bearer_auth_is_required() {
    let sim = sim(20, |_| {}).await;
    let url = format!("{}/parties", sim.base_url());
    for request in
        [http().get(&url), http().get(&url).bearer_auth("wrong"), http().get(&url).basic_auth("me", Some("pw"))]
    {
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), 401);
        assert!(r.headers()["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
        let body: Value = r.json().await.unwrap();
        assert!(body["message"].as_str().unwrap().contains("token"));
    }
    assert_eq!(get(&sim, "/parties").await.status(), 200);
}

#[tokio::test]
async fn pages_default_to_50_allow_100_reject_more_and_link_to_the_next() {
    let sim = sim(230, |_| {}).await;
    let (_, headers, body) = get_json(&sim, "/parties").await;
    assert_eq!(body["parties"].as_array().unwrap().len(), 50);
    let next = next_link(&headers).unwrap();
    assert_eq!(next, format!("{}/parties?page=2", sim.base_url()), "page-only link, like the docs' example");

    let (items, pages) = read_all(&sim, "/parties?perPage=100", "parties").await;
    assert_eq!((items.len(), pages), (230, 3));
    let ids: BTreeSet<i64> = items.iter().map(|p| p["id"].as_i64().unwrap()).collect();
    assert_eq!(ids.len(), 230, "no record twice, none skipped");
    // A client that follows the page-only link verbatim falls back to 50 per page and reads
    // overlapping windows: the trap the connector must avoid.
    let naive: Vec<Value> = read_pages(&sim, "/parties?perPage=100", true)
        .await
        .iter()
        .flat_map(|b| b["parties"].as_array().cloned().unwrap())
        .collect();
    let naive_ids: BTreeSet<i64> = naive.iter().map(|p| p["id"].as_i64().unwrap()).collect();
    assert!(naive.len() > naive_ids.len(), "verbatim link-following re-reads records");

    let (status, _, body) = get_json(&sim, "/parties?perPage=101").await;
    assert_eq!(status, 422);
    assert_eq!(body["errors"][0]["field"], "perPage");
    assert_eq!(get(&sim, "/parties?page=0").await.status(), 422);
    let (_, headers, body) = get_json(&sim, "/parties?page=3&perPage=100").await;
    assert_eq!(body["parties"].as_array().unwrap().len(), 30);
    assert!(headers.get("link").is_none(), "no next link on the last page");
    // Per-entity entries allow 50 per page at most (the current Entry docs).
    let party = sim.with_account(|a| *a.entity(capsule_sim::Entity::Parties).keys().next().unwrap());
    let (status, _, body) = get_json(&sim, &format!("/parties/{party}/entries?perPage=51")).await;
    assert_eq!((status.as_u16(), &body["errors"][0]["field"]), (422, &json!("perPage")));
    assert_eq!(get(&sim, &format!("/parties/{party}/entries?perPage=50")).await.status(), 200);
    assert_eq!(get(&sim, "/parties/1/entries").await.status(), 404);
}

#[tokio::test]
async fn full_link_style_keeps_every_parameter() {
    let sim = sim(120, |c| c.link_style = LinkStyle::Full).await;
    let (_, headers, _) = get_json(&sim, "/parties?perPage=100&embed=tags").await;
    let next = next_link(&headers).unwrap();
    assert!(next.contains("perPage=100") && next.contains("embed=tags") && next.contains("page=2"), "{next}");
    let (items, pages) = read_all(&sim, "/parties?perPage=100", "parties").await;
    assert_eq!((items.len(), pages), (120, 2));
}

#[tokio::test]
async fn since_filters_changed_records_and_deleted_feeds_require_it() {
    let sim = sim(200, |_| {}).await;
    let before = chrono::Utc::now() - chrono::Duration::seconds(2);
    let since = before.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (_, _, body) = get_json(&sim, &format!("/parties?since={since}")).await;
    assert!(body["parties"].as_array().unwrap().is_empty(), "generated history is all in the past");

    let updated = sim.mutate_n(MutationKind::Parties, MutationOp::Update, 3).unwrap().ids;
    let deleted = sim.mutate_n(MutationKind::Parties, MutationOp::Delete, 2).unwrap().ids;
    let (_, _, body) = get_json(&sim, &format!("/parties?since={since}")).await;
    let ids: BTreeSet<i64> = body["parties"].as_array().unwrap().iter().map(|p| p["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, updated.iter().copied().filter(|id| !deleted.contains(id)).collect());

    for entity in ["parties", "opportunities", "kases"] {
        let (status, _, body) = get_json(&sim, &format!("/{entity}/deleted")).await;
        assert_eq!(status, 422);
        assert_eq!(body["errors"][0]["message"], "since is required");
    }
    let (_, _, body) = get_json(&sim, &format!("/parties/deleted?since={since}")).await;
    let tombstones: BTreeSet<i64> =
        body["parties"].as_array().unwrap().iter().map(|p| p["id"].as_i64().unwrap()).collect();
    assert_eq!(tombstones, deleted.iter().copied().collect());
    assert!(body.get("restrictedParties").is_none(), "only present if any");

    let (_, _, body) = get_json(&sim, "/parties/deleted?since=1970-01-01T00:00:00Z").await;
    assert!(!body["restrictedParties"].as_array().unwrap().is_empty());
    assert_eq!(get(&sim, "/parties?since=yesterday").await.status(), 422);
}

#[tokio::test]
async fn tasks_default_to_open_and_tracks_cannot_be_listed_globally() {
    let sim = sim(300, |_| {}).await;
    let (open, _) = read_all(&sim, "/tasks?perPage=100", "tasks").await;
    assert!(open.iter().all(|t| t["status"] == "OPEN"));
    let (all, _) = read_all(&sim, "/tasks?perPage=100&status=open,completed,pending", "tasks").await;
    let statuses: BTreeSet<&str> = all.iter().map(|t| t["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, BTreeSet::from(["OPEN", "COMPLETED", "PENDING"]));
    assert!(all.len() > open.len());
    assert!(all.iter().any(|t| t["hasTrack"] == true));
    assert_eq!(get(&sim, "/tasks?status=done").await.status(), 422);

    let (status, _, body) = get_json(&sim, "/tracks").await;
    assert_eq!((status.as_u16(), body), (405, json!({"message": "Method not allowed"})));
    let (status, _, body) = get_json(&sim, "/customfields").await;
    assert_eq!((status.as_u16(), body), (404, json!({"message": "Could not find resource"})));
}

#[tokio::test]
async fn milestones_legacy_endpoint_covers_only_the_oldest_active_pipeline() {
    let sim = sim(50, |_| {}).await;
    let (_, _, active) = get_json(&sim, "/pipelines").await;
    let (_, _, all) = get_json(&sim, "/pipelines?includeDeleted=true").await;
    assert_eq!(active["pipelines"].as_array().unwrap().len() + 1, all["pipelines"].as_array().unwrap().len());
    let mut per_pipeline = 0;
    for p in all["pipelines"].as_array().unwrap() {
        let (_, _, ms) = get_json(&sim, &format!("/pipelines/{}/milestones", p["id"])).await;
        per_pipeline += ms["milestones"].as_array().unwrap().len();
    }
    let (_, _, legacy) = get_json(&sim, "/milestones").await;
    let legacy = legacy["milestones"].as_array().unwrap();
    assert!(legacy.len() < per_pipeline);
    assert!(legacy.iter().all(|m| m.get("pipeline").is_none()));
}

#[tokio::test]
async fn entries_come_newest_first_and_embed_controls_tags_and_fields() {
    let sim = sim(200, |_| {}).await;
    let (entries, _) = read_all(&sim, "/entries?perPage=100", "entries").await;
    let times: Vec<&str> = entries.iter().map(|e| e["entryAt"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "descending entryAt");
    let types: BTreeSet<&str> = entries.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, BTreeSet::from(["email", "note", "task"]));

    let (_, _, plain) = get_json(&sim, "/parties?perPage=5").await;
    assert!(plain["parties"][0].get("fields").is_none() && plain["parties"][0].get("tags").is_none());
    let (_, _, embedded) = get_json(&sim, "/parties?perPage=5&embed=tags,fields,nonsense").await;
    assert!(embedded["parties"][0]["fields"].is_array() && embedded["parties"][0]["tags"].is_array());
}

#[tokio::test]
async fn entries_stay_newest_first_and_records_read_the_same_listed_or_alone_as_the_account_changes() {
    let sim = sim(150, |_| {}).await;
    sim.mutate_n(MutationKind::Entries, MutationOp::Create, 40).unwrap();
    let deleted = sim.mutate_n(MutationKind::Entries, MutationOp::Delete, 15).unwrap().ids;
    sim.mutate_n(MutationKind::Entries, MutationOp::Update, 10).unwrap();
    let (entries, _) = read_all(&sim, "/entries?perPage=100", "entries").await;
    let keys: Vec<(String, i64)> =
        entries.iter().map(|e| (e["entryAt"].as_str().unwrap().to_string(), e["id"].as_i64().unwrap())).collect();
    assert!(keys.windows(2).all(|w| w[0] > w[1]), "newest entryAt first, ties higher id first");
    let listed: BTreeSet<i64> = keys.iter().map(|(_, id)| *id).collect();
    let held: BTreeSet<i64> = sim.with_account(|a| a.entries.keys().copied().collect());
    assert_eq!(listed, held, "every entry listed once, the deleted ones gone");
    assert!(deleted.iter().all(|id| !listed.contains(id)));
    // The admin view of every entry's `updatedAt` (what the scale benchmark compares with).
    let admin: Value =
        http().get(format!("{}/_admin/entries", sim.root_url())).send().await.unwrap().json().await.unwrap();
    let updated: serde_json::Map<String, Value> =
        entries.iter().map(|e| (e["id"].to_string(), e["updatedAt"].clone())).collect();
    assert_eq!(admin, Value::Object(updated));

    // A listed record (its stored text copied into the page) equals the record read alone
    // (parsed and answered as a value) and the account's record.
    sim.mutate_n(MutationKind::Tasks, MutationOp::Update, 5).unwrap();
    let (tasks, _) = read_all(&sim, "/tasks?perPage=100&status=open,completed,pending", "tasks").await;
    assert_eq!(tasks.len(), sim.with_account(|a| a.tasks.len()));
    for task in tasks.iter().step_by(7) {
        let id = task["id"].as_i64().unwrap();
        let (_, _, alone) = get_json(&sim, &format!("/tasks/{id}")).await;
        assert_eq!(&alone["task"], task);
        assert_eq!(sim.with_account(|a| a.tasks[&id].body()), *task);
    }
}

#[tokio::test]
async fn rate_limit_headers_on_every_response_and_429_when_spent() {
    let sim = sim(20, |c| {
        c.rate_limit = 5;
        c.rate_window = Duration::from_secs(2);
    })
    .await;
    let mut remaining = Vec::new();
    for _ in 0..5 {
        let r = get(&sim, "/users").await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-ratelimit-limit"], "5");
        let reset: u64 = r.headers()["x-ratelimit-reset"].to_str().unwrap().parse().unwrap();
        assert!(reset >= chrono::Utc::now().timestamp() as u64);
        remaining.push(r.headers()["x-ratelimit-remaining"].to_str().unwrap().parse::<u32>().unwrap());
    }
    assert_eq!(remaining, vec![4, 3, 2, 1, 0]);
    let r = get(&sim, "/users").await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_none());
    assert_eq!(r.headers()["x-ratelimit-remaining"], "0");
    let reset: i64 = r.headers()["x-ratelimit-reset"].to_str().unwrap().parse().unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"error": "rate limit reached"}));
    let wait = (reset - chrono::Utc::now().timestamp()).max(0) as u64;
    tokio::time::sleep(Duration::from_millis(wait * 1000 + 100)).await;
    assert_eq!(get(&sim, "/users").await.status(), 200, "allowed again after the reset");
}

#[tokio::test]
async fn faults_fire_as_configured_and_stats_count_requests() {
    let sim = sim(100, |_| {}).await;
    sim.add_fault(FaultRule {
        path: Some("/users".into()),
        fault: Fault::Status { status: 503 },
        after: 1,
        times: Some(2),
        probability: None,
    });
    let statuses: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(get(&sim, "/users").await.status().as_u16());
        }
        v
    };
    assert_eq!(statuses, vec![200, 503, 503, 200]);
    sim.clear_faults();

    for (fault, check) in [
        (Fault::Truncated, "truncated"),
        (Fault::Malformed, "malformed"),
        (Fault::Drop, "drop"),
        (Fault::RateLimited, "429"),
    ] {
        sim.add_fault(FaultRule { path: Some("/teams".into()), fault, after: 0, times: Some(1), probability: None });
        let r = http().get(format!("{}/teams", sim.base_url())).bearer_auth(TOKEN).send().await;
        match check {
            "truncated" | "malformed" => {
                let r = r.unwrap();
                assert_eq!(r.status(), 200);
                assert!(serde_json::from_slice::<Value>(&r.bytes().await.unwrap()).is_err(), "{check}");
            }
            "drop" => assert!(r.is_err() || r.unwrap().bytes().await.is_err(), "connection dropped"),
            _ => assert_eq!(r.unwrap().status(), 429),
        }
        assert_eq!(get(&sim, "/teams").await.status(), 200, "{check} fired once");
    }
    sim.add_fault(FaultRule {
        path: Some("/currencies".into()),
        fault: Fault::Slow { millis: 300 },
        after: 0,
        times: Some(1),
        probability: None,
    });
    let t = Instant::now();
    assert_eq!(get(&sim, "/currencies").await.status(), 200);
    assert!(t.elapsed() >= Duration::from_millis(300));

    let stats = sim.stats();
    assert_eq!(stats.count("GET /users"), 4);
    assert_eq!(stats.count("GET /teams"), 8);
    assert_eq!(stats.by_status[&503], 2);
    let _ = get(&sim, "/parties/123/people").await;
    assert_eq!(sim.stats().count("GET /parties/{id}/people"), 1);
}

#[tokio::test]
async fn admin_api_mutates_injects_faults_and_reports() {
    let sim = sim(100, |_| {}).await;
    let admin = |p: &str| format!("{}/_admin{p}", sim.root_url());
    let counts: Value = http().get(admin("/counts")).send().await.unwrap().json().await.unwrap();
    assert_eq!(counts["parties"], 100);
    assert_eq!(counts.as_object().unwrap().len(), 22);

    let r = http()
        .post(admin("/mutate"))
        .json(&json!({"kind": "parties", "op": "create", "count": 4}))
        .send()
        .await
        .unwrap();
    let created: Value = r.json().await.unwrap();
    assert_eq!(created["ids"].as_array().unwrap().len(), 4);
    let counts: Value = http().get(admin("/counts")).send().await.unwrap().json().await.unwrap();
    assert_eq!(counts["parties"], 104);
    let r = http()
        .post(admin("/mutate"))
        .json(&json!({"kind": "parties", "op": "delete", "count": 1000}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422, "more than exist");
    let r =
        http().post(admin("/mutate")).json(&json!({"kind": "nope", "op": "delete", "count": 1})).send().await.unwrap();
    assert!(r.status().is_client_error());

    let r = http()
        .post(admin("/faults"))
        .json(&json!({"path": "/users", "fault": {"type": "status", "status": 500}, "times": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(get(&sim, "/users").await.status(), 500);
    assert_eq!(get(&sim, "/users").await.status(), 200);
    let stats: Value = http().get(admin("/stats")).send().await.unwrap().json().await.unwrap();
    assert_eq!(stats["by_endpoint"]["GET /users"], 2);
    http().post(admin("/stats/reset")).send().await.unwrap();
    http().delete(admin("/faults")).send().await.unwrap();
    let stats: Value = http().get(admin("/stats")).send().await.unwrap().json().await.unwrap();
    assert_eq!(stats["total"], 0);
    let mutation: Mutation = serde_json::from_value(json!({"kind": "tasks", "op": "update", "count": 1})).unwrap();
    assert_eq!(sim.mutate(mutation).unwrap().ids.len(), 1);
}

#[tokio::test]
async fn the_same_seed_gives_the_same_account() {
    let a = sim(150, |_| {}).await;
    let b = sim(150, |_| {}).await;
    let (pa, _) = read_all(&a, "/parties?perPage=100&embed=tags,fields", "parties").await;
    let (pb, _) = read_all(&b, "/parties?perPage=100&embed=tags,fields", "parties").await;
    assert_eq!(pa, pb);
    let c = sim(150, |c| c.seed = 7).await;
    let (pc, _) = read_all(&c, "/parties?perPage=100", "parties").await;
    assert_ne!(pa, pc, "another seed gives another account");
}

// ---- Shapes: every response kind matches its sample in tests/fixtures/capsule-api-samples/ ----
// (a copy of the project's API samples, so a bare clone runs this; CAPSULE_API_SAMPLES overrides)

fn samples_dir() -> std::path::PathBuf {
    let dir = std::env::var("CAPSULE_API_SAMPLES").map(std::path::PathBuf::from).unwrap_or_else(|_| {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/capsule-api-samples")
    });
    assert!(dir.is_dir(), "API samples not found at {} (set CAPSULE_API_SAMPLES)", dir.display());
    dir
}

fn sample(name: &str) -> Value {
    let path = samples_dir().join(name);
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Every key of `sample` appears in some candidate, with the same JSON kind where both are set;
/// nested objects and arrays are checked the same way.
fn assert_shape(sample: &Value, candidates: &[&Value], at: &str) {
    match sample {
        Value::Object(map) => {
            for (key, sv) in map {
                let here = format!("{at}.{key}");
                let values: Vec<&Value> = candidates.iter().filter_map(|c| c.get(key)).collect();
                assert!(!values.is_empty(), "the simulator never returns {here}");
                if sv.is_null() {
                    continue;
                }
                let same: Vec<&Value> = values.iter().copied().filter(|v| kind(v) == kind(sv)).collect();
                assert!(
                    !same.is_empty(),
                    "{here}: sample is {}, simulator gives {:?}",
                    kind(sv),
                    values.iter().map(|v| kind(v)).collect::<BTreeSet<_>>()
                );
                assert_shape(sv, &same, &here);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            let elements: Vec<&Value> = candidates.iter().filter_map(|c| c.as_array()).flatten().collect();
            assert!(!elements.is_empty(), "{at}: the simulator never fills this array");
            for item in items {
                assert_shape(item, &elements, &format!("{at}[]"));
            }
        }
        _ => {}
    }
}

async fn check_list(sim: &SimHandle, sample_file: &str, path: &str, envelopes: &[&str]) {
    let body = sample(sample_file);
    let pages = read_pages(sim, path, false).await;
    for envelope in envelopes {
        let items: Vec<&Value> = pages
            .iter()
            .flat_map(|p| p[envelope].as_array().unwrap_or_else(|| panic!("{path}: no `{envelope}`")).iter())
            .collect();
        for item in body[envelope].as_array().unwrap() {
            assert_shape(item, &items, &format!("{sample_file}:{envelope}"));
        }
    }
}

#[tokio::test]
async fn responses_have_the_shape_of_the_real_samples() {
    let sim = sim(1500, |_| {}).await;
    let since = "since=1970-01-01T00:00:00Z";
    for (file, path, envelopes) in [
        ("GET_parties.docs.json", "/parties?perPage=100&embed=tags,fields".to_string(), vec!["parties"]),
        ("GET_parties.real-page1.json", "/parties?perPage=100&embed=fields".into(), vec!["parties"]),
        ("GET_parties.real-lastpage.json", "/parties?perPage=100".into(), vec!["parties"]),
        ("GET_kases.real.json", "/kases?perPage=100&embed=fields".into(), vec!["kases"]),
        ("GET_parties_deleted.json", format!("/parties/deleted?{since}"), vec!["parties", "restrictedParties"]),
        ("GET_opportunities_deleted.json", format!("/opportunities/deleted?{since}"), vec!["opportunities"]),
        ("GET_kases_deleted.json", format!("/kases/deleted?{since}"), vec!["kases", "restrictedKases"]),
        ("GET_parties_fields_definitions.json", "/parties/fields/definitions".into(), vec!["definitions"]),
        ("GET_kases_fields_definitions.real.json", "/parties/fields/definitions".into(), vec!["definitions"]),
        ("GET_parties_tags.json", "/parties/tags".into(), vec!["tags"]),
        ("GET_lostreasons.json", "/lostreasons".into(), vec!["lostReasons"]),
        ("GET_pipelines.json", "/pipelines".into(), vec!["pipelines"]),
        ("GET_milestones.json", "/milestones".into(), vec!["milestones"]),
        ("GET_categories.json", "/categories".into(), vec!["categories"]),
        ("GET_activitytypes.json", "/activitytypes".into(), vec!["activityTypes"]),
        ("GET_countries.json", "/countries".into(), vec!["countries"]),
        ("GET_currencies.json", "/currencies".into(), vec!["currencies"]),
        ("GET_resthooks.json", "/resthooks".into(), vec!["restHooks"]),
        ("GET_teams.json", "/teams".into(), vec!["teams"]),
        ("GET_users.json", "/users".into(), vec!["users"]),
    ] {
        check_list(&sim, file, &path, &envelopes).await;
    }

    // Tasks: the list items have the shape of the single-task samples.
    let (tasks, _) = read_all(&sim, "/tasks?perPage=100&status=open,completed,pending", "tasks").await;
    let refs: Vec<&Value> = tasks.iter().collect();
    assert_shape(&sample("GET_tasks_id.docs.json")["task"], &refs, "GET_tasks_id");
    assert_shape(&sample("POST_tasks.real-response.json")["task"], &refs, "POST_tasks");
    let (kases, _) = read_all(&sim, "/kases?perPage=100", "kases").await;
    let refs: Vec<&Value> = kases.iter().collect();
    assert_shape(&sample("POST_kases.real-response.json")["kase"], &refs, "POST_kases");

    // Tracks of a case that has some, and one track by id.
    let (kase_id, track_id) = sim.with_account(|a| {
        let t = a.tracks.values().find(|t| t.parent == capsule_sim::Entity::Kases).unwrap();
        (t.parent_id, t.record.body()["id"].as_i64().unwrap())
    });
    check_list(&sim, "GET_kases_id_tracks.json", &format!("/kases/{kase_id}/tracks"), &["tracks"]).await;
    let (_, _, track) = get_json(&sim, &format!("/tracks/{track_id}")).await;
    assert_shape(&sample("GET_tracks_id.json")["track"], &[&track["track"]], "GET_tracks_id");

    // Error bodies.
    let (_, _, e404) = get_json(&sim, "/nothing-here").await;
    assert_shape(&sample("error_404.real.json"), &[&e404], "404");
    let (_, _, e405) = get_json(&sim, "/tracks").await;
    assert_shape(&sample("error_405.real.json"), &[&e405], "405");
    let (_, _, e422) = get_json(&sim, "/kases/deleted").await;
    assert_shape(&sample("error_422.real.json"), &[&e422], "422");
}
