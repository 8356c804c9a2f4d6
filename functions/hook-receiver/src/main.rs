//! Lambda entry point: cold-start work here, the logic in `hook_receiver::handler`.

use std::sync::Arc;

use capsule_aws::{AwsClients, AwsSettings, DynamoState, S3Sink};
use capsule_engine::hooks::{Limits, RateLimiter};
use hook_receiver::{HookReceiverDeps, handler};
use lambda_runtime::{Error, LambdaEvent, service_fn};

/// A configuration error at start-up, said in words (not `Debug`), with a failing exit code.
#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("hook-receiver: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let settings = AwsSettings::from_env()?;
    let clients = AwsClients::from_env().await;
    let deps = HookReceiverDeps {
        state: Arc::new(DynamoState::new(clients.dynamodb.clone(), &settings.state_table)),
        sink: Arc::new(S3Sink::new(
            clients.s3.clone(),
            &settings.bucket,
            &settings.prefix,
            settings.kms_key_id.clone(),
        )),
        limiter: Arc::new(RateLimiter::default()),
        limits: Limits::default(),
    };
    lambda_runtime::run(service_fn(|event: LambdaEvent<serde_json::Value>| {
        let deps = deps.clone();
        async move { Ok::<_, Error>(handler(event.payload, &deps).await) }
    }))
    .await
}
