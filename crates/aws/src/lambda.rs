//! Lambda as the dispatcher: one asynchronous (`Event`) invocation per table run.

use async_trait::async_trait;
use aws_sdk_lambda::Client;
use aws_sdk_lambda::error::DisplayErrorContext;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;

use capsule_core::events::TableSyncEvent;
use capsule_core::observe::Event;
use capsule_core::ports::Dispatcher;
use capsule_core::{Result, SyncError};

/// Invokes the table-sync function.
#[derive(Clone, Debug)]
pub struct LambdaDispatcher {
    client: Client,
    function: String,
}

impl LambdaDispatcher {
    pub fn new(client: Client, function: &str) -> LambdaDispatcher {
        LambdaDispatcher { client, function: function.to_string() }
    }
}

#[async_trait]
impl Dispatcher for LambdaDispatcher {
    async fn dispatch(&self, event: &TableSyncEvent) -> Result<()> {
        let payload = serde_json::to_vec(event).map_err(|e| SyncError::Internal(format!("encoding event: {e}")))?;
        let out = self
            .client
            .invoke()
            .function_name(&self.function)
            .invocation_type(InvocationType::Event)
            .payload(Blob::new(payload))
            .send()
            .await
            .map_err(|e| {
                SyncError::Output(format!(
                    "Lambda Invoke {} ({}): {}",
                    self.function,
                    event.table,
                    DisplayErrorContext(e)
                ))
            })?;
        if let Some(error) = out.function_error() {
            return Err(SyncError::Output(format!("Lambda Invoke {} reported {error}", self.function)));
        }
        tracing::info!(event = Event::TableSyncDispatched.as_str(), table = %event.table, run_id = %event.run_id,
                       continuation = event.continuation, status = out.status_code());
        Ok(())
    }
}
