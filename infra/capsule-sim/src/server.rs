//! The HTTP server: `/api/v2/*` behind the guard (stats → auth → rate limit → faults), and the
//! admin API under `/_admin`.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;

use crate::api::{self, ListContext};
use crate::config::SimConfig;
use crate::dataset::{Account, Mutation};
use crate::faults::{Fault, FaultPlan, FaultRule};
use crate::ratelimit::RateWindow;
use crate::stats::Stats;

/// State shared by every request and by the [`crate::SimHandle`].
pub struct Shared {
    pub config: SimConfig,
    /// The Bearer token accepted now (`config.token` at start; tests revoke it mid-run).
    pub token: RwLock<String>,
    pub base_url: String,
    /// Where next-page links point, when not at this server (a hostile or misconfigured API).
    pub link_base: RwLock<Option<String>>,
    pub account: RwLock<Account>,
    pub limiter: Mutex<RateWindow>,
    pub faults: Mutex<FaultPlan>,
    pub stats: Mutex<Stats>,
    /// Counts mutations so each picks different records, deterministically.
    pub mutations: Mutex<u64>,
    /// REST hook subscriptions and their deliveries.
    pub hooks: crate::hooks::Hooks,
}

/// Largest request body accepted (a REST hook subscription is a few hundred bytes).
const MAX_BODY: usize = 64 * 1024;

impl Shared {
    pub fn mutate(&self, m: &Mutation) -> Result<crate::dataset::MutationOutcome, String> {
        let mut n = self.mutations.lock().unwrap();
        *n += 1;
        let seed = self.config.seed.wrapping_mul(1_000_003).wrapping_add(*n);
        let outcome = self.account.write().unwrap().apply(m, seed, Utc::now())?;
        if let Some(event) = m.hook_event() {
            let payload = self.account.read().unwrap().hook_payload(m, &outcome.ids);
            self.hooks.deliver(&event, payload);
        }
        Ok(outcome)
    }
}

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/v2/{*rest}", any(capsule_api))
        .route("/_admin/stats", get(admin_stats))
        .route("/_admin/stats/reset", post(admin_stats_reset))
        .route("/_admin/faults", get(admin_faults).post(admin_add_fault).delete(admin_clear_faults))
        .route("/_admin/mutate", post(admin_mutate))
        .route("/_admin/counts", get(admin_counts))
        .route("/_admin/hooks", get(admin_hooks))
        .route("/_admin/hooks/faults", post(admin_hook_faults))
        .route("/_admin/entries", get(admin_entries))
        .with_state(shared)
}

/// Every `/api/v2` request: counted, authenticated, rate limited, maybe faulted, then answered.
async fn capsule_api(
    State(s): State<Arc<Shared>>,
    Query(query): Query<Vec<(String, String)>>,
    request: Request,
) -> Response {
    let path = request.uri().path().trim_start_matches("/api/v2").to_string();
    s.stats.lock().unwrap().record_request(request.method().as_str(), &path);
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
        return api::error(StatusCode::PAYLOAD_TOO_LARGE, "the request body is too large");
    };
    let response = guarded(&s, &path, query, (&parts.method, &body), &parts.headers).await;
    s.stats.lock().unwrap().record_status(response.status().as_u16());
    response
}

async fn guarded(
    s: &Shared,
    path: &str,
    query: Vec<(String, String)>,
    request: (&Method, &Bytes),
    headers: &HeaderMap,
) -> Response {
    let expected = format!("Bearer {}", s.token.read().unwrap());
    if headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return unauthorized();
    }
    let verdict = s.limiter.lock().unwrap().admit();
    let mut response = if !verdict.allowed {
        rate_limited()
    } else {
        let fault = s.faults.lock().unwrap().fire(path);
        match fault {
            Some(Fault::Slow { millis }) => {
                tokio::time::sleep(Duration::from_millis(millis)).await;
                answer(s, path, query, request)
            }
            Some(fault) => faulted(fault, || answer(s, path, query, request)).await,
            None => answer(s, path, query, request),
        }
    };
    let h = response.headers_mut();
    h.insert("x-ratelimit-limit", HeaderValue::from(verdict.limit));
    h.insert("x-ratelimit-remaining", HeaderValue::from(verdict.remaining));
    h.insert("x-ratelimit-reset", HeaderValue::from(verdict.reset));
    response
}

fn answer(s: &Shared, path: &str, query: Vec<(String, String)>, (method, body): (&Method, &Bytes)) -> Response {
    let hook_id = path.strip_prefix("/resthooks/");
    match (method, path) {
        (&Method::POST, "/resthooks") => return subscribe(s, body),
        (&Method::DELETE, _) if hook_id.is_some() => return unsubscribe(s, hook_id.unwrap_or_default()),
        (&Method::GET, _) => {}
        _ => return api::error(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed"),
    }
    let link_base = s.link_base.read().unwrap().clone();
    let base_url = link_base.as_deref().unwrap_or(&s.base_url);
    let ctx = ListContext { base_url, path, link_style: s.config.link_style };
    let hooks: Vec<serde_json::Value> = s.hooks.list().iter().map(|h| json!(h)).collect();
    let account = s.account.read().unwrap();
    api::dispatch(&account, &ctx, query, &hooks)
}

/// `POST /resthooks`: 201 with the stored hook, or Capsule's 400 / 422.
fn subscribe(s: &Shared, body: &Bytes) -> Response {
    match s.hooks.subscribe(body) {
        Ok(hook) => (StatusCode::CREATED, Json(json!({"restHook": hook}))).into_response(),
        Err((StatusCode::UNPROCESSABLE_ENTITY, message)) => api::unprocessable("restHook", "restHook", &message),
        Err((status, message)) => api::error(status, &message),
    }
}

/// `DELETE /resthooks/{id}`: 204, or 404 for a hook that is not there.
fn unsubscribe(s: &Shared, id: &str) -> Response {
    match id.parse() {
        Ok(id) if s.hooks.unsubscribe(id) => StatusCode::NO_CONTENT.into_response(),
        _ => api::error(StatusCode::NOT_FOUND, "Could not find resource"),
    }
}

fn unauthorized() -> Response {
    let mut r = (
        StatusCode::UNAUTHORIZED,
        Json(json!({"message": "Authentication failed: the access token is missing, invalid or expired"})),
    )
        .into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"Capsule API\", error=\"invalid_token\""),
    );
    r
}

fn rate_limited() -> Response {
    (StatusCode::TOO_MANY_REQUESTS, Json(json!({"error": "rate limit reached"}))).into_response()
}

/// Turns the real answer into the requested failure.
async fn faulted(fault: Fault, real: impl FnOnce() -> Response) -> Response {
    match fault {
        Fault::Status { status } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, Json(json!({"message": status.canonical_reason().unwrap_or("error")}))).into_response()
        }
        Fault::RateLimited => rate_limited(),
        Fault::Truncated => {
            let bytes = body_bytes(real()).await;
            let cut = Bytes::copy_from_slice(&bytes[..bytes.len() / 2]);
            ([(header::CONTENT_TYPE, "application/json")], cut).into_response()
        }
        Fault::Malformed => {
            ([(header::CONTENT_TYPE, "application/json")], "<html><body>Bad gateway</body></html>").into_response()
        }
        Fault::Drop => {
            let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
                Ok(Bytes::from_static(b"{\"data\": [")),
                Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "simulated drop")),
            ];
            Response::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from_stream(futures::stream::iter(chunks)))
                .expect("static response")
        }
        Fault::Slow { .. } => real(),
    }
}

async fn body_bytes(response: Response) -> Bytes {
    axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap_or_default()
}

async fn admin_stats(State(s): State<Arc<Shared>>) -> Response {
    Json(s.stats.lock().unwrap().clone()).into_response()
}

async fn admin_stats_reset(State(s): State<Arc<Shared>>) -> Response {
    *s.stats.lock().unwrap() = Stats::default();
    StatusCode::NO_CONTENT.into_response()
}

async fn admin_faults(State(s): State<Arc<Shared>>) -> Response {
    Json(s.faults.lock().unwrap().rules()).into_response()
}

async fn admin_add_fault(State(s): State<Arc<Shared>>, Json(rule): Json<FaultRule>) -> Response {
    s.faults.lock().unwrap().add(rule);
    StatusCode::CREATED.into_response()
}

async fn admin_clear_faults(State(s): State<Arc<Shared>>) -> Response {
    s.faults.lock().unwrap().clear();
    StatusCode::NO_CONTENT.into_response()
}

async fn admin_mutate(State(s): State<Arc<Shared>>, Json(m): Json<Mutation>) -> Response {
    match s.mutate(&m) {
        Ok(outcome) => Json(outcome).into_response(),
        Err(message) => (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({"message": message}))).into_response(),
    }
}

/// The subscriptions and what became of their deliveries.
async fn admin_hooks(State(s): State<Arc<Shared>>) -> Response {
    Json(json!({"subscriptions": s.hooks.list(), "stats": s.hooks.stats()})).into_response()
}

/// `{"drop": 0.1, "duplicate": 0.1}`: the share of deliveries dropped and sent twice.
async fn admin_hook_faults(State(s): State<Arc<Shared>>, Json(faults): Json<crate::hooks::DeliveryFaults>) -> Response {
    s.hooks.set_faults(faults);
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
struct CountsQuery {
    since: Option<DateTime<Utc>>,
}

/// Every entry's `updatedAt` by id: what a benchmark compares a snapshot with.
async fn admin_entries(State(s): State<Arc<Shared>>) -> Response {
    #[derive(Deserialize)]
    struct Updated {
        #[serde(rename = "updatedAt")]
        updated_at: serde_json::Value,
    }
    // Written as text: a million entries as one `Map` of values took ~200 MiB for a moment.
    let account = s.account.read().unwrap();
    let mut body = Vec::with_capacity(account.entries.len() * 36 + 2);
    body.push(b'{');
    for (i, (id, record)) in account.entries.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        let updated = record.read::<Updated>().updated_at;
        body.extend_from_slice(format!("\"{id}\":{updated}").as_bytes());
    }
    body.push(b'}');
    ([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn admin_counts(State(s): State<Arc<Shared>>, Query(q): Query<CountsQuery>) -> Response {
    Json(s.account.read().unwrap().table_counts(q.since)).into_response()
}
