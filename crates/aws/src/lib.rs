//! AWS adapters of the ports: S3 (object sink), DynamoDB (state), Secrets Manager (tokens),
//! Lambda (dispatcher). Every SDK client shares one HTTP client: rustls on `ring`.
//!
//! Local endpoints (moto_server, MinIO) come from the standard `AWS_ENDPOINT_URL` /
//! `AWS_ENDPOINT_URL_<SERVICE>` variables; when an S3 endpoint is overridden, path-style
//! addressing is used (custom endpoints rarely serve virtual-hosted buckets).

mod dynamo;
mod lambda;
mod s3;
mod secrets;

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_smithy_http_client::{Builder, tls};

pub use dynamo::DynamoState;

use capsule_core::ports::DEFAULT_HISTORY;
pub use lambda::LambdaDispatcher;
pub use s3::S3Sink;
pub use secrets::{RefreshLock, SecretsManagerToken};

use capsule_client::access::AccessPolicy;
use capsule_core::integration::{Integration, TokenSource};
use capsule_core::ports::TokenProvider;

/// Every AWS call gives up after these (each attempt, and the call with its retries): a hung
/// call must not outlive a lease's renewal margin or an invocation's deadline. The attempt
/// timeout leaves room for an 8 MiB multipart part on a slow link, and covers connecting (a
/// separate connect timeout made the SDK retry requests a loaded endpoint had already taken:
/// a rate-limit claim, an increment, counted twice).
pub(crate) const SDK_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
pub(crate) const SDK_OPERATION_TIMEOUT: Duration = Duration::from_secs(60);

/// The shared SDK configuration (region, credentials, endpoints from the environment), with
/// attempt and operation timeouts on every client.
pub async fn sdk_config() -> SdkConfig {
    capsule_core::tls::install_crypto_provider();
    let http = Builder::new().tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring)).build_https();
    aws_config::defaults(BehaviorVersion::latest()).http_client(http).timeout_config(sdk_timeouts()).load().await
}

/// The timeouts [`sdk_config`] sets.
pub(crate) fn sdk_timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .operation_attempt_timeout(SDK_ATTEMPT_TIMEOUT)
        .operation_timeout(SDK_OPERATION_TIMEOUT)
        .build()
}

/// The SDK clients the adapters need, built once (at cold start in Lambda).
#[derive(Clone, Debug)]
pub struct AwsClients {
    pub s3: aws_sdk_s3::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
    pub lambda: aws_sdk_lambda::Client,
}

impl AwsClients {
    pub fn new(config: &SdkConfig) -> AwsClients {
        let endpoint_overridden =
            std::env::var_os("AWS_ENDPOINT_URL_S3").is_some() || std::env::var_os("AWS_ENDPOINT_URL").is_some();
        let s3 = aws_sdk_s3::config::Builder::from(config).force_path_style(endpoint_overridden).build();
        AwsClients {
            s3: aws_sdk_s3::Client::from_conf(s3),
            dynamodb: aws_sdk_dynamodb::Client::new(config),
            secrets: aws_sdk_secretsmanager::Client::new(config),
            lambda: aws_sdk_lambda::Client::new(config),
        }
    }

    pub async fn from_env() -> AwsClients {
        AwsClients::new(&sdk_config().await)
    }
}

/// The token provider of an integration on the AWS backend: its own secret only (the policy
/// refuses anything else first).
/// OAuth refreshes of the secret are serialised by a lock in `state`.
pub fn token_provider(
    integration: &Integration,
    clients: &AwsClients,
    access: &AccessPolicy,
    state: std::sync::Arc<dyn capsule_core::ports::StateStore>,
) -> capsule_core::Result<Box<dyn TokenProvider>> {
    access.check_token_source(integration)?;
    match &integration.token {
        TokenSource::SecretsManager { secret_id } => Ok(Box::new(
            SecretsManagerToken::new(clients.secrets.clone(), secret_id.clone(), access.oauth_token_url.clone())
                .with_refresh_lock(RefreshLock { state, integration: integration.name.to_string() }),
        )),
        other => Err(capsule_core::SyncError::Config(format!("token source {other} needs the local backend"))),
    }
}

/// Where the functions (and the CLI's AWS backend) keep things, from the environment.
#[derive(Debug, Clone)]
pub struct AwsSettings {
    /// `CAPSULE_STATE_TABLE`: the DynamoDB table.
    pub state_table: String,
    /// `CAPSULE_BUCKET`: the output bucket.
    pub bucket: String,
    /// `CAPSULE_PREFIX`: key prefix in the bucket (may be empty).
    pub prefix: String,
    /// `CAPSULE_KMS_KEY_ID`: SSE-KMS key; SSE-S3 (AES256) when unset.
    pub kms_key_id: Option<String>,
    /// `CAPSULE_TABLE_SYNC_FUNCTION` (else `AWS_LAMBDA_FUNCTION_NAME`): the table-sync function.
    pub table_sync_function: Option<String>,
    /// Allowed API hosts, token secrets and OAuth endpoint (`CAPSULE_ALLOWED_API_URLS`,
    /// `CAPSULE_SECRET_PREFIX`, `CAPSULE_SECRET_ALLOW_LIST`, `CAPSULE_OAUTH_TOKEN_URL`).
    pub access: AccessPolicy,
    /// `CAPSULE_HISTORY_DAYS`: how long run and dispatch records are kept.
    pub history: std::time::Duration,
}

/// `CAPSULE_HISTORY_DAYS` (1 to 3650; default 90): how long run and dispatch history is kept,
/// by both backends.
pub fn history_from_env() -> capsule_core::Result<std::time::Duration> {
    let Some(text) = std::env::var("CAPSULE_HISTORY_DAYS").ok().filter(|v| !v.trim().is_empty()) else {
        return Ok(DEFAULT_HISTORY);
    };
    match text.trim().parse::<u64>() {
        Ok(days) if (1..=3650).contains(&days) => Ok(std::time::Duration::from_secs(days * 24 * 3600)),
        _ => Err(capsule_core::SyncError::Config(format!(
            "CAPSULE_HISTORY_DAYS `{text}` must be a number of days between 1 and 3650"
        ))),
    }
}

impl AwsSettings {
    pub fn from_env() -> capsule_core::Result<AwsSettings> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let required = |name: &str| {
            var(name).ok_or_else(|| capsule_core::SyncError::Config(format!("environment variable {name} is not set")))
        };
        Ok(AwsSettings {
            state_table: required("CAPSULE_STATE_TABLE")?,
            bucket: required("CAPSULE_BUCKET")?,
            prefix: var("CAPSULE_PREFIX").unwrap_or_default(),
            kms_key_id: var("CAPSULE_KMS_KEY_ID"),
            table_sync_function: var("CAPSULE_TABLE_SYNC_FUNCTION").or_else(|| var("AWS_LAMBDA_FUNCTION_NAME")),
            access: AccessPolicy::aws_from_env()?,
            history: history_from_env()?,
        })
    }
}
