//! AWS test wiring: clients pointed at `moto_server` (started by `scripts/test.sh`), fresh
//! resources per test, a local Lambda Invoke endpoint that runs the real handlers, and a local
//! OAuth token endpoint.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType,
};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use capsule_aws::{AwsClients, DynamoState, S3Sink, sdk_config};
use rand::Rng;
use tokio::sync::Notify;

/// SDK clients against moto. Refuses to run unless the endpoint is on loopback: tests never
/// talk to real AWS.
pub async fn moto_clients() -> AwsClients {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    assert!(
        endpoint.starts_with("http://127.0.0.1:") || endpoint.starts_with("http://localhost:"),
        "AWS tests need moto_server on loopback: run them with `bash scripts/test.sh` (AWS_ENDPOINT_URL=`{endpoint}`)"
    );
    AwsClients::from_env().await
}

/// A unique lower-case name for a test resource.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::rng().random::<u32>())
}

pub async fn create_bucket(clients: &AwsClients) -> String {
    let bucket = unique("capsule-test");
    clients.s3.create_bucket().bucket(&bucket).send().await.expect("create bucket");
    bucket
}

/// The state table as template.yaml defines it: `pk`/`sk` strings, on-demand, and the due index.
pub async fn create_state_table(clients: &AwsClients) -> String {
    let table = unique("capsule-state");
    let attr = |name: &str| {
        AttributeDefinition::builder().attribute_name(name).attribute_type(ScalarAttributeType::S).build().unwrap()
    };
    let key = |name: &str, t| KeySchemaElement::builder().attribute_name(name).key_type(t).build().unwrap();
    clients
        .dynamodb
        .create_table()
        .table_name(&table)
        .attribute_definitions(attr("pk"))
        .attribute_definitions(attr("sk"))
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .attribute_definitions(attr("due"))
        .attribute_definitions(attr("wake_at"))
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name("due")
                .key_schema(key("due", KeyType::Hash))
                .key_schema(key("wake_at", KeyType::Range))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::Include)
                        .non_key_attributes("integration")
                        .non_key_attributes("ver")
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .expect("create table");
    table
}

pub async fn create_secret(clients: &AwsClients, document: serde_json::Value) -> String {
    create_secret_named(clients, &unique("capsule-sync/test"), document).await
}

/// Creates the secret, or gives an existing one this value (a fixed name, as a deployment's
/// default prefix gives, is left behind by an earlier run against the same moto).
pub async fn create_secret_named(clients: &AwsClients, name: &str, document: serde_json::Value) -> String {
    let created = clients.secrets.create_secret().name(name).secret_string(document.to_string()).send().await;
    if let Err(e) = created {
        let exists = e.as_service_error().is_some_and(|e| e.is_resource_exists_exception());
        assert!(exists, "secret {name}: {e:?}");
        clients.secrets.put_secret_value().secret_id(name).secret_string(document.to_string()).send().await.unwrap();
    }
    name.to_string()
}

pub async fn read_secret(clients: &AwsClients, name: &str) -> serde_json::Value {
    let out = clients.secrets.get_secret_value().secret_id(name).send().await.unwrap();
    serde_json::from_str(out.secret_string().unwrap()).unwrap()
}

/// A bucket, a state table and the adapters on them.
pub struct AwsStack {
    pub clients: AwsClients,
    pub bucket: String,
    pub table: String,
    pub state: DynamoState,
    pub sink: S3Sink,
}

impl AwsStack {
    pub async fn new() -> AwsStack {
        let clients = moto_clients().await;
        let bucket = create_bucket(&clients).await;
        let table = create_state_table(&clients).await;
        let state = DynamoState::new(clients.dynamodb.clone(), &table);
        let sink = S3Sink::new(clients.s3.clone(), &bucket, "warehouse", None);
        AwsStack { clients, bucket, table, state, sink }
    }

    /// Every object key in the bucket.
    pub async fn keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        let mut pages = self.clients.s3.list_objects_v2().bucket(&self.bucket).into_paginator().send();
        while let Some(page) = pages.next().await {
            keys.extend(page.unwrap().contents().iter().filter_map(|o| o.key().map(str::to_string)));
        }
        keys.sort();
        keys
    }

    pub async fn object(&self, key: &str) -> Vec<u8> {
        let out = self.clients.s3.get_object().bucket(&self.bucket).key(key).send().await.unwrap();
        out.body.collect().await.unwrap().into_bytes().to_vec()
    }

    /// Every row of the data files under `prefix`, decoded.
    pub async fn rows(&self, prefix: &str) -> Vec<serde_json::Map<String, serde_json::Value>> {
        let mut rows = Vec::new();
        for key in self.keys().await.into_iter().filter(|k| k.starts_with(prefix)) {
            let bytes = self.object(&key).await;
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(key.rsplit('/').next().unwrap());
            std::fs::write(&path, bytes).unwrap();
            rows.extend(crate::read_ndjson(&path));
        }
        rows
    }
}

/// A function the local Lambda endpoint runs: the event in, the JSON answer (or error text) out.
pub type Function = Arc<
    dyn Fn(serde_json::Value) -> Pin<Box<dyn Future<Output = Result<serde_json::Value, String>> + Send>> + Send + Sync,
>;

/// What the local endpoint does like Lambda: kill an invocation at its timeout (no cleanup),
/// and retry a failed or killed `Event` invocation twice (Lambda: about 1 and 2 minutes later).
#[derive(Debug, Clone)]
pub struct LambdaBehaviour {
    pub timeout: Option<std::time::Duration>,
    pub retry_delays: Vec<std::time::Duration>,
    /// At-least-once delivery: every asynchronous event is delivered a second time, after
    /// these delays in turn (some while the first copy runs, some after it finished).
    pub duplicate_after: Vec<std::time::Duration>,
}

impl Default for LambdaBehaviour {
    fn default() -> Self {
        LambdaBehaviour {
            timeout: None,
            retry_delays: vec![std::time::Duration::from_millis(200), std::time::Duration::from_millis(400)],
            duplicate_after: Vec::new(),
        }
    }
}

struct Invoker {
    functions: HashMap<String, Function>,
    behaviour: LambdaBehaviour,
    in_flight: AtomicUsize,
    idle: Notify,
    invocations: AtomicUsize,
    errors: std::sync::Mutex<Vec<String>>,
    /// Wall time of every invocation (what Lambda bills), with its function and event.
    durations: std::sync::Mutex<Vec<(std::time::Duration, String)>>,
    /// Asynchronous events delivered so far (picks each duplicate's delay).
    delivered: AtomicUsize,
    /// Events for these tables are refused by the Invoke API itself (as when it is throttled
    /// or denied), before anything runs.
    refused_tables: std::sync::Mutex<Vec<String>>,
}

/// The Lambda Invoke API (`POST /2015-03-31/functions/{name}/invocations`) on loopback, running
/// the real handlers. `Event` invocations answer 202 at once and run in the background, as
/// Lambda does; `RequestResponse` ones answer with the result.
pub struct LocalLambda {
    pub url: String,
    invoker: Arc<Invoker>,
    _server: tokio::task::JoinHandle<()>,
}

impl LocalLambda {
    pub async fn start(functions: HashMap<String, Function>) -> LocalLambda {
        LocalLambda::start_with(functions, LambdaBehaviour::default()).await
    }

    pub async fn start_with(functions: HashMap<String, Function>, behaviour: LambdaBehaviour) -> LocalLambda {
        let invoker = Arc::new(Invoker {
            functions,
            behaviour,
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            invocations: AtomicUsize::new(0),
            delivered: AtomicUsize::new(0),
            errors: Default::default(),
            durations: Default::default(),
            refused_tables: Default::default(),
        });
        let app =
            Router::new().route("/2015-03-31/functions/{name}/invocations", post(invoke)).with_state(invoker.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        LocalLambda { url, invoker, _server: server }
    }

    /// A Lambda client (real SDK) pointed at this endpoint.
    pub async fn client(&self) -> aws_sdk_lambda::Client {
        let config = sdk_config().await;
        aws_sdk_lambda::Client::from_conf(
            aws_sdk_lambda::config::Builder::from(&config).endpoint_url(&self.url).build(),
        )
    }

    /// Waits until no invocation is running (background ones included).
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.invoker.idle.notified();
            if self.invoker.in_flight.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Invocations running now (background ones and their retries included).
    pub fn in_flight(&self) -> usize {
        self.invoker.in_flight.load(Ordering::SeqCst)
    }

    pub fn invocations(&self) -> usize {
        self.invoker.invocations.load(Ordering::SeqCst)
    }

    /// Errors that background invocations returned.
    pub fn errors(&self) -> Vec<String> {
        self.invoker.errors.lock().unwrap().clone()
    }

    /// Makes the Invoke API refuse events for these tables (none: accept everything again).
    pub fn refuse_tables(&self, tables: &[&str]) {
        *self.invoker.refused_tables.lock().unwrap() = tables.iter().map(|t| t.to_string()).collect();
    }

    /// How long each invocation ran.
    pub fn durations(&self) -> Vec<std::time::Duration> {
        self.invoker.durations.lock().unwrap().iter().map(|(took, _)| *took).collect()
    }

    /// The longest invocation: how long it ran, its function and its event.
    pub fn slowest(&self) -> Option<(std::time::Duration, String)> {
        self.invoker.durations.lock().unwrap().iter().max_by_key(|(took, _)| *took).cloned()
    }
}

/// One invocation: the function, killed at the timeout like Lambda (its future is dropped).
async fn run_once(
    invoker: &Invoker,
    name: &str,
    function: &Function,
    event: serde_json::Value,
) -> Result<serde_json::Value, String> {
    let what = format!("{name} {event}");
    invoker.invocations.fetch_add(1, Ordering::SeqCst);
    let started = std::time::Instant::now();
    let result = match invoker.behaviour.timeout {
        Some(limit) => match tokio::time::timeout(limit, function(event)).await {
            Ok(result) => result,
            Err(_) => Err(format!("Task timed out after {:.2} seconds", limit.as_secs_f64())),
        },
        None => function(event).await,
    };
    invoker.durations.lock().unwrap().push((started.elapsed(), what));
    if let Err(e) = &result {
        invoker.errors.lock().unwrap().push(e.clone());
    }
    result
}

async fn invoke(
    State(invoker): State<Arc<Invoker>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let Some(function) = invoker.functions.get(&name).cloned() else {
        return (StatusCode::NOT_FOUND, format!("{{\"Type\":\"User\",\"message\":\"Function not found: {name}\"}}"))
            .into_response();
    };
    let event: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("invalid payload: {e}")).into_response(),
    };
    let asynchronous = headers.get("x-amz-invocation-type").and_then(|v| v.to_str().ok()) == Some("Event");
    let table = event.get("table").and_then(|t| t.as_str()).unwrap_or_default();
    if invoker.refused_tables.lock().unwrap().iter().any(|t| t == table) {
        let body =
            serde_json::json!({"Type": "User", "message": "The role defined for the function cannot be assumed"});
        let mut r = (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
        r.headers_mut().insert("x-amzn-errortype", "InvalidParameterValueException".parse().unwrap());
        return r;
    }
    let copies = if asynchronous && !invoker.behaviour.duplicate_after.is_empty() {
        let delays = &invoker.behaviour.duplicate_after;
        vec![std::time::Duration::ZERO, delays[invoker.delivered.fetch_add(1, Ordering::SeqCst) % delays.len()]]
    } else {
        vec![std::time::Duration::ZERO]
    };
    let mut runs = Vec::new();
    for delay in copies {
        invoker.in_flight.fetch_add(1, Ordering::SeqCst);
        let invoker = invoker.clone();
        let (function, event, name) = (function.clone(), event.clone(), name.clone());
        runs.push(async move {
            tokio::time::sleep(delay).await;
            let mut result = run_once(&invoker, &name, &function, event.clone()).await;
            if asynchronous {
                // Lambda retries a failed asynchronous event, the same event, twice.
                for delay in invoker.behaviour.retry_delays.clone() {
                    if result.is_ok() {
                        break;
                    }
                    tokio::time::sleep(delay).await;
                    result = run_once(&invoker, &name, &function, event.clone()).await;
                }
            }
            if invoker.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
                invoker.idle.notify_waiters();
            }
            result
        });
    }
    if asynchronous {
        for run in runs {
            tokio::spawn(run);
        }
        return StatusCode::ACCEPTED.into_response();
    }
    let run = runs.pop().expect("one copy");
    match run.await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => {
            let mut r = axum::Json(serde_json::json!({"errorMessage": e})).into_response();
            r.headers_mut().insert("x-amz-function-error", "Unhandled".parse().unwrap());
            r
        }
    }
}

/// A local OAuth2 token endpoint: answers refresh-token grants with a new access token and a
/// rotated refresh token, and counts the calls.
pub struct TokenEndpoint {
    pub url: String,
    pub calls: Arc<AtomicUsize>,
    _server: tokio::task::JoinHandle<()>,
}

impl TokenEndpoint {
    /// `access_token` is what the endpoint hands out; refresh tokens rotate to `refresh-N`.
    pub async fn start(access_token: &str, expected_refresh: &str) -> TokenEndpoint {
        let calls = Arc::new(AtomicUsize::new(0));
        let state = (calls.clone(), access_token.to_string(), expected_refresh.to_string());
        let app = Router::new()
            .route(
                "/oauth/token",
                post(|State((calls, access, expected)): State<(Arc<AtomicUsize>, String, String)>, body: String| async move {
                    let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                    let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes()).into_owned().collect();
                    let ok = form.get("grant_type").map(String::as_str) == Some("refresh_token")
                        && form.get("refresh_token") == Some(&expected)
                        && form.contains_key("client_id")
                        && form.contains_key("client_secret");
                    if !ok {
                        let body = serde_json::json!({"error": "invalid_grant"});
                        return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
                    }
                    axum::Json(serde_json::json!({
                        "access_token": access, "refresh_token": format!("refresh-{n}"),
                        "expires_in": 604_799, "token_type": "bearer", "scope": "read write"
                    }))
                    .into_response()
                }),
            )
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/oauth/token", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        TokenEndpoint { url, calls, _server: server }
    }

    /// The endpoint's URL, as a deployment's `CAPSULE_OAUTH_TOKEN_URL` would give it.
    pub fn url(&self) -> url::Url {
        url::Url::parse(&self.url).expect("a valid URL")
    }
}

/// Capsule's own OAuth token endpoint (for providers whose secrets never refresh).
pub fn capsule_oauth() -> url::Url {
    capsule_client::access::AccessPolicy::default().oauth_token_url
}
