//! The serverless path as tests and benchmarks drive it: the orchestrator and table-sync
//! handlers behind a local Lambda Invoke endpoint (real SDK over HTTP), the Capsule simulator,
//! and moto's S3, DynamoDB and Secrets Manager.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use capsule_aws::{AwsClients, DynamoState, LambdaDispatcher, S3Sink, sdk_config};
use capsule_client::ClientOptions;
use capsule_client::access::{AccessPolicy, TokenRule};
use capsule_core::integration::{Integration, TokenSource};
use capsule_core::ports::{RunState, StateStore};
use capsule_engine::engine::RunOptions;
use capsule_sim::SimHandle;
use chrono::Utc;
use serde_json::{Value, json};

use crate::aws::*;
use crate::{fast_client_options, read_ndjson, start_sim};

/// The serverless deployment on loopback: simulator, moto, and the local Invoke endpoint running
/// the real orchestrator and table-sync handlers.
pub struct World {
    pub sim: SimHandle,
    pub stack: AwsStack,
    pub lambda: LocalLambda,
    pub client: aws_sdk_lambda::Client,
    /// This world's `CAPSULE_SECRET_PREFIX`: integration `x` reads its token from `<prefix>x`.
    pub secret_prefix: String,
    /// This world's `CAPSULE_PREFIX`: where everything lands in the bucket.
    pub prefix: String,
    /// Every AWS call the functions made, when [`Setup::record_calls`] is set.
    pub recorder: Option<crate::iam::Recorder>,
    /// The hook-receiver's Function URL ([`crate::function_url`]), as the stack outputs it.
    pub hook_url: String,
}

/// How a test's world differs from production's.
pub struct Setup {
    pub parties: usize,
    /// Capsule's rate limit: requests per window.
    pub rate: Option<(u32, Duration)>,
    /// What the Lambda runtime tells table-sync is left of its time.
    pub remaining: Duration,
    pub client: ClientOptions,
    pub run: RunOptions,
    pub lambda: LambdaBehaviour,
    /// The token Capsule accepts.
    pub capsule_token: String,
    /// The integration's secret (`<prefix>acme`).
    pub secret: Value,
    /// The deployment's `CAPSULE_OAUTH_TOKEN_URL`.
    pub oauth_token_url: Option<url::Url>,
    /// Run table-sync as its real bootstrap, one process per invocation behind the Runtime API,
    /// killed at `remaining` or earlier as the plan says ([`crate::runtime`]); the production
    /// client and run settings then apply (`client` and `run` are not used for it).
    pub bootstrap: Option<Arc<crate::runtime::KillPlan>>,
    /// The orchestrator's `CAPSULE_RUN_OVERDUE_HOURS`.
    pub overdue_after: Duration,
    /// `CAPSULE_PREFIX` (template: `OutputPrefix`).
    pub output_prefix: String,
    /// `CAPSULE_SECRET_PREFIX` (template: `SecretPrefix`); None: one of the world's own.
    pub secret_prefix: Option<String>,
    /// `CAPSULE_KMS_KEY_ID` (template: `OutputKmsKeyArn`).
    pub kms_key: Option<String>,
    /// Route the functions' AWS calls through a recorder ([`crate::iam::Recorder`]), each
    /// function signing with its own name as access key id.
    pub record_calls: bool,
}

impl Setup {
    pub fn new(parties: usize) -> Setup {
        Setup {
            parties,
            rate: None,
            remaining: Duration::from_secs(900),
            client: fast_client_options(),
            run: RunOptions::default(),
            lambda: LambdaBehaviour::default(),
            capsule_token: "test-token".into(),
            secret: json!({"token": "test-token"}),
            oauth_token_url: None,
            bootstrap: None,
            overdue_after: capsule_engine::lifecycle::DEFAULT_OVERDUE_AFTER,
            output_prefix: "warehouse".into(),
            secret_prefix: None,
            kms_key: None,
            record_calls: false,
        }
    }
}

pub async fn world(parties: usize) -> World {
    world_with(Setup::new(parties)).await
}

/// Registers `orchestrator` and `table-sync` on a local Invoke endpoint, wired like template.yaml.
pub async fn world_with(setup: Setup) -> World {
    let sim = start_sim(setup.parties, |c| {
        c.token = setup.capsule_token.clone();
        if let Some((limit, window)) = setup.rate {
            c.rate_limit = limit;
            c.rate_window = window;
        }
    })
    .await;
    let stack = AwsStack::new().await;
    // A deployment of its own: its secret prefix, the simulator as its allowed API host.
    let secret_prefix = setup.secret_prefix.clone().unwrap_or_else(|| format!("{}/", unique("capsule-sync/world")));
    let prefix = setup.output_prefix.clone();
    let mut access = AccessPolicy {
        tokens: TokenRule::OwnSecret { prefix: secret_prefix.clone(), allowed: Default::default() },
        ..AccessPolicy::default()
    }
    .allowing(&[sim.base_url()])
    .unwrap();
    if let Some(url) = &setup.oauth_token_url {
        access.oauth_token_url = url.clone();
    }
    let secret = create_secret_named(&stack.clients, &format!("{secret_prefix}acme"), setup.secret.clone()).await;
    let mut integration =
        Integration::new("acme".parse().unwrap(), TokenSource::SecretsManager { secret_id: secret }, Utc::now());
    integration.api_base_url = sim.base_url().to_string();
    stack.state.create_integration(&integration).await.unwrap();

    // The endpoint must exist before the dispatcher's client is built; functions are added after.
    let functions: Arc<std::sync::Mutex<HashMap<String, Function>>> = Arc::default();
    let registry = functions.clone();
    let proxy = |name: &'static str| -> Function {
        let registry = registry.clone();
        Arc::new(move |event: Value| {
            let f = registry.lock().unwrap().get(name).cloned().expect("registered");
            f(event)
        })
    };
    let lambda = LocalLambda::start_with(
        HashMap::from([
            ("orchestrator".to_string(), proxy("orchestrator")),
            ("table-sync".to_string(), proxy("table-sync")),
            ("hook-receiver".to_string(), proxy("hook-receiver")),
        ]),
        setup.lambda.clone(),
    )
    .await;
    let client = lambda.client().await;
    let recorder = match setup.record_calls {
        true => Some(crate::iam::Recorder::start(&moto_endpoint(), &lambda.url).await),
        false => None,
    };
    // Each function's clients: signed with its own name through the recorder, or the test's.
    let (orchestrator_clients, table_sync_clients, receiver_clients) = match &recorder {
        Some(r) => (
            clients_signed_as("orchestrator", &r.url).await,
            clients_signed_as("table-sync", &r.url).await,
            clients_signed_as("hook-receiver", &r.url).await,
        ),
        None => {
            let clients = AwsClients { lambda: client.clone(), ..stack.clients.clone() };
            (clients.clone(), clients.clone(), clients)
        }
    };
    let receiver_deps = hook_receiver::HookReceiverDeps {
        state: Arc::new(DynamoState::new(receiver_clients.dynamodb.clone(), &stack.table)),
        sink: Arc::new(S3Sink::new(receiver_clients.s3.clone(), &stack.bucket, &prefix, setup.kms_key.clone())),
        limiter: Arc::default(),
        limits: capsule_engine::hooks::Limits::default(),
    };
    let state = Arc::new(DynamoState::new(table_sync_clients.dynamodb.clone(), &stack.table));
    let dispatcher = Arc::new(LambdaDispatcher::new(table_sync_clients.lambda.clone(), "table-sync"));
    let table_sync_deps = table_sync::TableSyncDeps {
        state: state.clone(),
        sink: Arc::new(S3Sink::new(table_sync_clients.s3.clone(), &stack.bucket, &prefix, setup.kms_key.clone())),
        dispatcher,
        clients: table_sync_clients.clone(),
        options: setup.run,
        client_options: ClientOptions { access, ..setup.client.clone() },
    };
    let orchestrator_deps = orchestrator::OrchestratorDeps {
        state: Arc::new(DynamoState::new(orchestrator_clients.dynamodb.clone(), &stack.table)),
        dispatcher: Arc::new(LambdaDispatcher::new(orchestrator_clients.lambda.clone(), "table-sync")),
        lease_ttl: setup.run.lease_ttl,
        overdue_after: setup.overdue_after,
        limits: orchestrator::TickLimits::default(),
    };
    let remaining = setup.remaining;
    let mut bootstrap_env = vec![
        ("CAPSULE_STATE_TABLE".to_string(), stack.table.clone()),
        ("CAPSULE_BUCKET".to_string(), stack.bucket.clone()),
        ("CAPSULE_PREFIX".to_string(), prefix.clone()),
        ("CAPSULE_SECRET_PREFIX".to_string(), secret_prefix.clone()),
        ("CAPSULE_ALLOWED_API_URLS".to_string(), sim.base_url().to_string()),
        ("AWS_LAMBDA_FUNCTION_NAME".to_string(), "table-sync".to_string()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE".to_string(), "512".to_string()),
        ("AWS_LAMBDA_FUNCTION_VERSION".to_string(), "$LATEST".to_string()),
        ("AWS_ENDPOINT_URL_LAMBDA".to_string(), lambda.url.clone()),
    ];
    if let Some(r) = &recorder {
        for (name, value) in [("AWS_ENDPOINT_URL", &r.url), ("AWS_ENDPOINT_URL_LAMBDA", &r.url)] {
            bootstrap_env.retain(|(n, _)| n != name);
            bootstrap_env.push((name.to_string(), value.clone()));
        }
        bootstrap_env.push(("AWS_ACCESS_KEY_ID".to_string(), "table-sync".to_string()));
    }
    if let Some(key) = &setup.kms_key {
        bootstrap_env.push(("CAPSULE_KMS_KEY_ID".to_string(), key.clone()));
    }
    let in_process: Function = Arc::new(move |event| {
        let deps = table_sync_deps.clone();
        Box::pin(async move {
            // The runtime's deadline: what is left of the function's timeout.
            let summary = table_sync::handler(event, Some(remaining), &deps).await;
            summary.map(|s| serde_json::to_value(s).unwrap()).map_err(|e| format!("{}: {e}", e.error_type()))
        })
    });
    let table_sync_fn = match &setup.bootstrap {
        Some(plan) => {
            let bootstrap = crate::runtime::table_sync_bootstrap();
            crate::runtime::process_function(bootstrap, bootstrap_env, remaining, plan.clone())
        }
        None => in_process,
    };
    let orchestrator_fn: Function = Arc::new(move |event| {
        let deps = orchestrator_deps.clone();
        Box::pin(async move {
            let summary = orchestrator::handler(event, &deps).await;
            summary.map(|s| serde_json::to_value(s).unwrap()).map_err(|e| format!("{}: {e}", e.error_type()))
        })
    });
    functions.lock().unwrap().insert("table-sync".into(), table_sync_fn);
    let receiver_fn: Function = Arc::new(move |event| {
        let deps = receiver_deps.clone();
        Box::pin(async move { Ok(serde_json::to_value(hook_receiver::handler(event, &deps).await).unwrap()) })
    });
    functions.lock().unwrap().insert("orchestrator".into(), orchestrator_fn);
    functions.lock().unwrap().insert("hook-receiver".into(), receiver_fn);
    let (hook_url, _) = crate::function_url::start(client.clone(), "hook-receiver").await;
    World { sim, stack, lambda, client, secret_prefix, prefix, recorder, hook_url }
}

impl World {
    /// Invokes a function synchronously through the Invoke API and returns its JSON answer.
    pub async fn invoke(&self, function: &str, event: Value) -> Value {
        let out = self
            .client
            .invoke()
            .function_name(function)
            .invocation_type(InvocationType::RequestResponse)
            .payload(Blob::new(event.to_string()))
            .send()
            .await
            .unwrap();
        let body: Value = serde_json::from_slice(out.payload().unwrap().as_ref()).unwrap();
        assert!(out.function_error().is_none(), "{function} failed: {body}");
        body
    }

    /// Invokes a function asynchronously (`Event`), as the orchestrator does; returns the status.
    pub async fn send_event(&self, function: &str, event: &Value) -> i32 {
        let out = self
            .client
            .invoke()
            .function_name(function)
            .invocation_type(InvocationType::Event)
            .payload(Blob::new(event.to_string()))
            .send()
            .await
            .unwrap();
        out.status_code()
    }

    pub async fn rows(&self, table: &str, run_id: &str) -> Vec<serde_json::Map<String, Value>> {
        let mut rows = Vec::new();
        for key in self.stack.keys().await {
            if key.starts_with(&format!("{}/acme/{table}/", self.prefix)) && key.contains(&format!("/run={run_id}/")) {
                let bytes = self.stack.object(&key).await;
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("part.ndjson.gz");
                std::fs::write(&path, bytes).unwrap();
                rows.extend(read_ndjson(&path));
            }
        }
        rows
    }

    pub async fn manifest(&self, table: &str, run_id: &str) -> Value {
        let key = format!("{}/_meta/acme/runs/{run_id}/{table}.json", self.prefix);
        serde_json::from_slice(&self.stack.object(&key).await).unwrap()
    }
}

/// Invokes the orchestrator as its schedule would (scaled down: every 300 ms) until every run
/// record of `run_id` is final and nothing is in flight; returns the ticks used.
pub async fn tick_until_done(w: &World, run_id: &str, tables: usize, limit: Duration) -> usize {
    let scheduled = json!({"version": "0", "source": "aws.events", "detail-type": "Scheduled Event", "detail": {}});
    let started = std::time::Instant::now();
    let mut ticks = 0;
    loop {
        let runs = w.stack.state.runs(Some("acme"), 1000).await.unwrap();
        let done = runs
            .iter()
            .filter(|r| r.run_id.as_str() == run_id && matches!(r.state, RunState::Succeeded | RunState::Failed))
            .count();
        if done >= tables && w.lambda.in_flight() == 0 {
            return ticks;
        }
        assert!(started.elapsed() < limit, "not done after {limit:?}: {done}/{tables} tables final");
        w.invoke("orchestrator", scheduled.clone()).await;
        ticks += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The rows of one table run, read through its manifest's file list.
pub async fn manifest_rows(w: &World, table: &str, run_id: &str) -> Vec<serde_json::Map<String, Value>> {
    let manifest = w.manifest(table, run_id).await;
    let mut rows = Vec::new();
    for file in manifest["files"].as_array().unwrap() {
        let key = format!("{}/{}", w.prefix, file["key"].as_str().unwrap());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(key.rsplit('/').next().unwrap());
        std::fs::write(&path, w.stack.object(&key).await).unwrap();
        rows.extend(read_ndjson(&path));
    }
    rows
}

/// The loopback endpoint the tests' AWS clients use (moto).
pub(crate) fn moto_endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL: run the tests with `bash scripts/test.sh`")
}

/// SDK clients that sign as `function` (its name as access key id, as its role's credentials
/// would identify it) and send everything to `endpoint`. The endpoint is set on each service's
/// config: there the environment's `AWS_ENDPOINT_URL` would win over the shared config's.
pub(crate) async fn clients_signed_as(function: &str, endpoint: &str) -> AwsClients {
    use aws_sdk_dynamodb::config::{Credentials, SharedCredentialsProvider};
    let credentials = Credentials::new(function, "recorded", None, None, "recorder");
    let config =
        sdk_config().await.into_builder().credentials_provider(SharedCredentialsProvider::new(credentials)).build();
    AwsClients {
        s3: aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&config).endpoint_url(endpoint).force_path_style(true).build(),
        ),
        dynamodb: aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(&config).endpoint_url(endpoint).build(),
        ),
        secrets: aws_sdk_secretsmanager::Client::from_conf(
            aws_sdk_secretsmanager::config::Builder::from(&config).endpoint_url(endpoint).build(),
        ),
        lambda: aws_sdk_lambda::Client::from_conf(
            aws_sdk_lambda::config::Builder::from(&config).endpoint_url(endpoint).build(),
        ),
    }
}
