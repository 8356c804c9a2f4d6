//! Lambda entry point: cold-start work here, the logic in `orchestrator::handler`.

use std::sync::Arc;

use capsule_aws::{AwsClients, AwsSettings, DynamoState, LambdaDispatcher};
use capsule_core::SyncError;
use lambda_runtime::{Diagnostic, Error, LambdaEvent, service_fn};
use orchestrator::{OrchestratorDeps, handler};

/// A `SyncError` as Lambda reports it: its type name and message.
#[derive(Debug)]
struct FunctionError(SyncError);

impl From<FunctionError> for Diagnostic {
    fn from(e: FunctionError) -> Diagnostic {
        Diagnostic { error_type: e.0.error_type().to_string(), error_message: e.0.to_string() }
    }
}

/// A configuration error at start-up, said in words (not `Debug`), with a failing exit code.
#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("orchestrator: {error}");
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
        .ok_or_else(|| SyncError::Config("CAPSULE_TABLE_SYNC_FUNCTION is not set".into()))?;
    let clients = AwsClients::from_env().await;
    let deps = OrchestratorDeps {
        state: Arc::new(
            DynamoState::new(clients.dynamodb.clone(), &settings.state_table).with_history(settings.history),
        ),
        dispatcher: Arc::new(LambdaDispatcher::new(clients.lambda.clone(), &function)),
        lease_ttl: capsule_engine::engine::DEFAULT_LEASE_TTL,
        overdue_after: capsule_engine::lifecycle::overdue_after_from_env()?,
        limits: orchestrator::limits_from_env()?,
    };
    lambda_runtime::run(service_fn(|event: LambdaEvent<serde_json::Value>| {
        let deps = deps.clone();
        async move { handler(event.payload, &deps).await.map_err(FunctionError) }
    }))
    .await
}
