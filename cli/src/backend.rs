//! Where the CLI keeps state and output: the local data directory (default) or AWS (the same
//! DynamoDB table and bucket the Lambda functions use).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use capsule_aws::{self as aws, AwsClients, DynamoState, S3Sink, history_from_env};
use capsule_client::access::AccessPolicy;
use capsule_client::{CapsuleClient, ClientOptions};
use capsule_core::budget::RateBudgetStore;
use capsule_core::integration::Integration;
use capsule_core::ports::{ObjectSink, StateStore, TokenProvider};
use capsule_engine::engine::RunPorts;
use capsule_local::{FileModes, LocalSink, StateFile, local_token_provider};
use clap::{Args, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// `state.json` and `output/` in the data directory.
    Local,
    /// DynamoDB (`--state-table`) and S3 (`--bucket`, `--prefix`), credentials from the AWS environment.
    Aws,
}

/// Backend selection flags (global).
#[derive(Args, Debug, Clone)]
pub struct BackendArgs {
    /// Where integrations, bookmarks, run history and files live.
    #[arg(long, global = true, value_enum, env = "CAPSULE_SYNC_BACKEND", default_value_t = BackendKind::Local)]
    pub backend: BackendKind,
    /// The DynamoDB state table (aws backend).
    #[arg(long, global = true, env = "CAPSULE_STATE_TABLE")]
    pub state_table: Option<String>,
    /// The output bucket (aws backend).
    #[arg(long, global = true, env = "CAPSULE_BUCKET")]
    pub bucket: Option<String>,
    /// Key prefix in the bucket (aws backend).
    #[arg(long, global = true, env = "CAPSULE_PREFIX", default_value = "")]
    pub prefix: String,
    /// Permissions of output files and logs (local backend, octal). The state file is always 600.
    #[arg(long, global = true, env = "CAPSULE_FILE_MODE", default_value = "600")]
    pub file_mode: String,
    /// Permissions of directories the local backend creates (octal).
    #[arg(long, global = true, env = "CAPSULE_DIR_MODE", default_value = "700")]
    pub dir_mode: String,
}

pub struct Backend {
    pub state: Arc<dyn StateStore>,
    pub sink: Arc<dyn ObjectSink>,
    aws: Option<AwsClients>,
    /// Which API hosts and token sources this backend allows (see `capsule_client::access`).
    pub access: AccessPolicy,
    /// For messages: the data directory or `s3://bucket/prefix`.
    pub location: String,
}

/// The local backend's modes; the data directory is created with them (so a wider directory
/// mode lets a loader's group reach `output/`).
fn local_modes(data_dir: &Path, args: &BackendArgs) -> anyhow::Result<FileModes> {
    let modes = FileModes::parse(&args.file_mode, &args.dir_mode)?;
    modes.create_dir_all(data_dir).with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    Ok(modes)
}

impl Backend {
    pub async fn open(data_dir: &Path, args: &BackendArgs) -> anyhow::Result<Backend> {
        match args.backend {
            BackendKind::Local => Ok(Backend {
                state: Arc::new(StateFile::new(data_dir).with_history(history_from_env()?)),
                sink: Arc::new(LocalSink::new(data_dir.join("output")).with_modes(local_modes(data_dir, args)?)),
                aws: None,
                access: AccessPolicy::local_from_env()?,
                location: data_dir.display().to_string(),
            }),
            BackendKind::Aws => {
                let table =
                    args.state_table.clone().context("--backend aws needs --state-table (or CAPSULE_STATE_TABLE)")?;
                let bucket = args.bucket.clone().context("--backend aws needs --bucket (or CAPSULE_BUCKET)")?;
                let clients = AwsClients::from_env().await;
                let sink = S3Sink::new(clients.s3.clone(), &bucket, &args.prefix, None);
                Ok(Backend {
                    state: Arc::new(
                        DynamoState::new(clients.dynamodb.clone(), &table).with_history(history_from_env()?),
                    ),
                    location: sink.locate(""),
                    sink: Arc::new(sink),
                    aws: Some(clients),
                    access: AccessPolicy::aws_from_env()?,
                })
            }
        }
    }

    /// The tick of the scheduler that runs this backend's integrations: the deployment's
    /// `ScheduleExpression` on AWS (`CAPSULE_SCHEDULE_EXPRESSION`); unknown locally (cron or
    /// `schedule --tick` decide).
    pub fn scheduler_tick(&self) -> Option<std::time::Duration> {
        self.aws.as_ref().and_then(|_| capsule_engine::schedule::deployment_tick())
    }

    pub fn deps(&self) -> RunPorts<'_> {
        RunPorts { state: self.state.as_ref(), sink: self.sink.as_ref() }
    }

    pub async fn integration(&self, name: &str) -> anyhow::Result<Integration> {
        self.state.get_integration(name).await?.with_context(|| {
            format!("no integration named `{name}` in {} (see `capsule-sync integrations list`)", self.location)
        })
    }

    fn token_provider(&self, integration: &Integration) -> anyhow::Result<Box<dyn TokenProvider>> {
        Ok(match &self.aws {
            Some(clients) => aws::token_provider(integration, clients, &self.access, self.state.clone())?,
            None => local_token_provider(&integration.token)?,
        })
    }

    /// A Capsule client for an integration: its token read from its token source (again when
    /// it expires), its requests drawn from the token's budget in the state store, which every
    /// process syncing with that token shares.
    pub async fn client_for(&self, integration: &Integration) -> anyhow::Result<CapsuleClient> {
        let tokens: Arc<dyn TokenProvider> = Arc::from(self.token_provider(integration)?);
        let store: Arc<dyn RateBudgetStore> = self.state.clone();
        let options = ClientOptions { access: self.access.clone(), ..ClientOptions::default() };
        Ok(CapsuleClient::for_integration(integration, tokens, store, options).await?)
    }
}
