//! Lambda entry point: cold-start work here, the logic in `table_sync::handler`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use capsule_aws::{AwsClients, AwsSettings, DynamoState, LambdaDispatcher, S3Sink};
use capsule_client::ClientOptions;
use capsule_client::access::AccessPolicy;
use capsule_core::SyncError;
use capsule_engine::engine::RunOptions;
use lambda_runtime::{Diagnostic, Error, LambdaEvent, service_fn};
use table_sync::{TableSyncDeps, handler};

/// A `SyncError` as Lambda reports it: its type name and message.
#[derive(Debug)]
struct FunctionError(SyncError);

impl From<FunctionError> for Diagnostic {
    fn from(e: FunctionError) -> Diagnostic {
        Diagnostic { error_type: e.0.error_type().to_string(), error_message: e.0.to_string() }
    }
}

/// On Lambda a long wait is not slept: past 20 s the run checkpoints and the orchestrator's tick
/// resumes it when the window resets; a Capsule outage is waited out the same way, 5 min at a time.
fn lambda_client_options(access: AccessPolicy) -> ClientOptions {
    ClientOptions {
        max_inline_wait: Duration::from_secs(20),
        outage_pause: Some(Duration::from_secs(300)),
        access,
        ..ClientOptions::default()
    }
}

/// A configuration error at start-up, said in words (not `Debug`), with a failing exit code.
#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("table-sync: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let settings = AwsSettings::from_env()?;
    let function = settings
        .table_sync_function
        .clone()
        .ok_or_else(|| SyncError::Config("AWS_LAMBDA_FUNCTION_NAME is not set".into()))?;
    let clients = AwsClients::from_env().await;
    let deps = TableSyncDeps {
        state: Arc::new(
            DynamoState::new(clients.dynamodb.clone(), &settings.state_table).with_history(settings.history),
        ),
        sink: Arc::new(S3Sink::new(
            clients.s3.clone(),
            &settings.bucket,
            &settings.prefix,
            settings.kms_key_id.clone(),
        )),
        dispatcher: Arc::new(LambdaDispatcher::new(clients.lambda.clone(), &function)),
        clients,
        options: RunOptions::default(),
        client_options: lambda_client_options(settings.access.clone()),
    };
    lambda_runtime::run(service_fn(|event: LambdaEvent<serde_json::Value>| {
        let deps = deps.clone();
        async move {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
            let remaining = Duration::from_millis(event.context.deadline).checked_sub(now);
            handler(event.payload, remaining, &deps).await.map_err(FunctionError)
        }
    }))
    .await
}
