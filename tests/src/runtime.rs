//! The Lambda Runtime API on loopback, running the real table-sync bootstrap (the release's
//! `bootstrap`, built here as `target/<profile>/table-sync`) as one process per invocation, as a
//! cold start would: the process asks `/2018-06-01/runtime/invocation/next` for its event (with
//! Lambda's deadline header), answers on `…/response` or `…/error`, and is killed with SIGKILL at
//! its deadline — or earlier, at an instant a [`KillPlan`] picks — with no cleanup, as Lambda
//! kills. Registered as a [`Function`] on [`crate::aws::LocalLambda`], whose Invoke API delivers
//! the events (and retries a failed or killed one).

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use tokio::sync::{Mutex as AsyncMutex, oneshot};

use crate::aws::Function;

/// When invocations are killed before their deadline: each with `probability`, at an instant
/// drawn uniformly from `within` (seeded), until `most` have been.
pub struct KillPlan {
    rng: Mutex<StdRng>,
    pub probability: f64,
    pub within: (Duration, Duration),
    pub most: usize,
    planned: AtomicUsize,
    /// Invocations killed so far (early kills and deadline kills).
    pub kills: AtomicUsize,
}

impl KillPlan {
    pub fn new(seed: u64, probability: f64, within: (Duration, Duration), most: usize) -> KillPlan {
        let rng = Mutex::new(StdRng::seed_from_u64(seed));
        KillPlan { rng, probability, within, most, planned: AtomicUsize::new(0), kills: AtomicUsize::new(0) }
    }

    fn pick(&self, timeout: Duration) -> Duration {
        let mut rng = self.rng.lock().unwrap();
        if rng.random_bool(self.probability) && self.planned.fetch_add(1, Ordering::SeqCst) < self.most {
            let (from, to) = self.within;
            from + (to - from).mul_f64(rng.random::<f64>())
        } else {
            timeout
        }
    }
}

/// The bootstrap of table-sync as cargo built it beside this test binary.
pub fn table_sync_bootstrap() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>/deps");
    let bootstrap = dir.join("table-sync");
    assert!(
        bootstrap.exists(),
        "{} is not built: run the tests with `bash scripts/test.sh` (the workspace's test build builds it, \
         for functions/table-sync/tests/bootstrap.rs)",
        bootstrap.display()
    );
    bootstrap
}

/// One invocation's exchange with its process.
struct Exchange {
    event: Mutex<Option<Value>>,
    deadline_ms: u64,
    answer: AsyncMutex<Option<oneshot::Sender<Result<Value, String>>>>,
}

/// A [`Function`] that runs each invocation in a new process of `binary` with `env`, killed at
/// `timeout` or at the instant `plan` picks.
pub fn process_function(
    binary: PathBuf,
    env: Vec<(String, String)>,
    timeout: Duration,
    plan: Arc<KillPlan>,
) -> Function {
    Arc::new(move |event: Value| {
        let (binary, env, plan) = (binary.clone(), env.clone(), plan.clone());
        Box::pin(async move { run_process(&binary, &env, event, timeout, &plan).await })
    })
}

async fn run_process(
    binary: &std::path::Path,
    env: &[(String, String)],
    event: Value,
    timeout: Duration,
    plan: &KillPlan,
) -> Result<Value, String> {
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    let (tx, rx) = oneshot::channel();
    let exchange = Arc::new(Exchange {
        event: Mutex::new(Some(event)),
        deadline_ms: now_ms + timeout.as_millis() as u64,
        answer: AsyncMutex::new(Some(tx)),
    });
    let app = Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route("/2018-06-01/runtime/invocation/{id}/response", post(response))
        .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
        .route("/2018-06-01/runtime/init/error", post(error_init))
        .with_state(exchange);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = listener.local_addr().unwrap().to_string();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let mut child = tokio::process::Command::new(binary)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("AWS_LAMBDA_RUNTIME_API", &api)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(if std::env::var_os("CAPSULE_BOOTSTRAP_LOGS").is_some() {
            std::process::Stdio::inherit()
        } else {
            std::process::Stdio::null()
        })
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("starting {}: {e}", binary.display()))?;
    let kill_after = plan.pick(timeout);
    let result = tokio::select! {
        answer = rx => answer.unwrap_or_else(|_| Err("the runtime API closed".into())),
        () = tokio::time::sleep(kill_after) => {
            plan.kills.fetch_add(1, Ordering::SeqCst);
            Err(format!("Task timed out (SIGKILL after {:.2} s)", kill_after.as_secs_f64()))
        }
    };
    // Lambda freezes or kills the environment; here the process goes either way: SIGKILL, no
    // cleanup of any kind.
    let _ = child.start_kill();
    let _ = child.wait().await;
    server.abort();
    result
}

/// The event, once; later calls wait for ever (the process is killed before long).
async fn next(State(exchange): State<Arc<Exchange>>) -> axum::response::Response {
    let Some(event) = exchange.event.lock().unwrap().take() else {
        std::future::pending::<()>().await;
        unreachable!()
    };
    let mut headers = HeaderMap::new();
    headers.insert("lambda-runtime-aws-request-id", "req-1".parse().unwrap());
    headers.insert("lambda-runtime-deadline-ms", exchange.deadline_ms.to_string().parse().unwrap());
    headers.insert(
        "lambda-runtime-invoked-function-arn",
        "arn:aws:lambda:us-east-1:000000000000:function:table-sync".parse().unwrap(),
    );
    headers.insert("lambda-runtime-trace-id", "Root=1-00000000-000000000000000000000000".parse().unwrap());
    (StatusCode::OK, headers, axum::Json(event)).into_response()
}

async fn response(State(exchange): State<Arc<Exchange>>, Path(_id): Path<String>, body: String) -> StatusCode {
    let answer = serde_json::from_str(&body).map_err(|e| format!("the bootstrap answered no JSON: {e}"));
    if let Some(tx) = exchange.answer.lock().await.take() {
        let _ = tx.send(answer);
    }
    StatusCode::ACCEPTED
}

async fn error(State(exchange): State<Arc<Exchange>>, Path(_id): Path<String>, body: String) -> StatusCode {
    if let Some(tx) = exchange.answer.lock().await.take() {
        let _ = tx.send(Err(body));
    }
    StatusCode::ACCEPTED
}

async fn error_init(State(exchange): State<Arc<Exchange>>, body: String) -> StatusCode {
    if let Some(tx) = exchange.answer.lock().await.take() {
        let _ = tx.send(Err(format!("init error: {body}")));
    }
    StatusCode::ACCEPTED
}
