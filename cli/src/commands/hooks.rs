//! `capsule-sync hooks`: receive an integration's REST hooks (`serve`) and manage its
//! subscriptions at Capsule (`subscribe`, `list`, `unsubscribe`). See the README's "REST
//! hooks" section.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::body::{Body, to_bytes};
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use clap::{Args, Subcommand};
use secrecy::SecretString;

use capsule_client::{CapsuleClient, ClientOptions};
use capsule_core::integration::Integration;
use capsule_engine::hooks::receiver::{self, Answer};
use capsule_engine::hooks::roller::{RollPolicy, Roller};
use capsule_engine::hooks::{Limits, RateLimiter, Rejection, activity, subscriptions};

use crate::backend::Backend;

#[derive(Subcommand, Debug)]
pub enum HooksCommand {
    /// Receive REST hooks on this machine and land them beside the synced files.
    Serve(ServeArgs),
    /// Subscribe the integration's tables' events at Capsule (idempotent).
    Subscribe(SubscribeArgs),
    /// The integration's subscriptions at Capsule and what its hooks landed.
    List(ListArgs),
    /// Remove the integration's subscriptions at Capsule and forget its secret.
    Unsubscribe(AppArgs),
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Deliveries are POSTed to http://ADDR/<integration>/<secret> (any integration of the data
    /// directory that subscribed).
    #[arg(long, default_value = "127.0.0.1:8787")]
    pub listen: SocketAddr,
    /// Deliveries received within this many milliseconds land as one file per table.
    #[arg(long, default_value_t = 1000)]
    pub roll_every_ms: u64,
    /// A file is landed early once its records reach this many bytes.
    #[arg(long, default_value_t = 8 << 20)]
    pub roll_bytes: usize,
    /// The largest delivery body accepted (413 above it).
    #[arg(long, default_value_t = Limits::default().max_body_bytes)]
    pub max_body_bytes: usize,
    /// Deliveries accepted per second and integration (429 above it).
    #[arg(long, default_value_t = Limits::default().per_second)]
    pub per_second: u32,
}

/// The registered application's token: Capsule lets only an application subscribe to hooks.
#[derive(Args, Debug)]
pub struct AppArgs {
    /// The integration.
    pub name: String,
    /// The environment variable holding the OAuth access token of your registered Capsule
    /// application.
    #[arg(long, default_value = "CAPSULE_APP_TOKEN", conflicts_with = "app_token_file")]
    pub app_token_env: String,
    /// A file holding that token instead.
    #[arg(long)]
    pub app_token_file: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct SubscribeArgs {
    #[command(flatten)]
    pub app: AppArgs,
    /// The receiver's base URL: `hooks serve`'s address as Capsule reaches it, or the stack's
    /// HookReceiverUrl output.
    #[arg(long)]
    pub receiver: String,
    /// Only these tables' events (comma separated); default every selected table Capsule sends
    /// hooks for (parties, cases, opportunities, tasks, users: 19 events of the account's 20).
    #[arg(long, value_delimiter = ',')]
    pub tables: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub app: AppArgs,
    #[arg(long)]
    pub json: bool,
}

pub async fn run(backend: &Backend, command: HooksCommand) -> anyhow::Result<()> {
    match command {
        HooksCommand::Serve(args) => serve(backend, args).await,
        HooksCommand::Subscribe(args) => subscribe(backend, args).await,
        HooksCommand::List(args) => list(backend, args).await,
        HooksCommand::Unsubscribe(args) => unsubscribe(backend, args).await,
    }
}

struct Receiving {
    state: Arc<dyn capsule_core::ports::StateStore>,
    roller: Roller,
    limiter: RateLimiter,
    limits: Limits,
}

async fn serve(backend: &Backend, args: ServeArgs) -> anyhow::Result<()> {
    let policy = RollPolicy { every: Duration::from_millis(args.roll_every_ms), max_bytes: args.roll_bytes };
    let (roller, rolling) = Roller::start(backend.sink.clone(), policy);
    let limits = Limits { max_body_bytes: args.max_body_bytes, per_second: args.per_second };
    let receiving =
        Arc::new(Receiving { state: backend.state.clone(), roller, limiter: RateLimiter::default(), limits });
    let app = axum::Router::new().fallback(deliver).with_state(receiving);
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;
    println!("receiving REST hooks at http://{addr}/<integration>/<secret>; files land in {}", backend.location);
    println!("subscribe with: capsule-sync hooks subscribe NAME --receiver http://{addr}  (Ctrl-C stops)");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    // Every handle is gone with the server: the last group lands before the task ends.
    rolling.await.context("the hook roller stopped")?;
    println!("stopped; every delivery answered 2xx has landed");
    Ok(())
}

/// Every request: a POST to `/<integration>/<secret>` is a delivery; anything else is refused.
async fn deliver(State(receiving): State<Arc<Receiving>>, method: Method, uri: Uri, body: Body) -> Response {
    let path = uri.path().to_string();
    if method != Method::POST {
        return respond(Answer::refused(&Rejection::MethodNotAllowed.into(), None));
    }
    let limit = receiving.limits.max_body_bytes;
    let Ok(body) = to_bytes(body, limit + 1).await else {
        return respond(Answer::refused(&Rejection::TooLarge { limit }.into(), None));
    };
    let roller = receiving.roller.clone();
    let land = |integration, delivery| async move { roller.land(integration, delivery).await };
    respond(
        receiver::receive(receiving.state.as_ref(), &receiving.limiter, &receiving.limits, &path, &body, land).await,
    )
}

fn respond(answer: Answer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(header::CONTENT_TYPE, "application/json")], answer.body).into_response()
}

/// A client for the app's token, sending it only where the integration's API is.
async fn app_client(backend: &Backend, app: &AppArgs, integration: &Integration) -> anyhow::Result<CapsuleClient> {
    let token = match &app.app_token_file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading the app token from --app-token-file {}", path.display()))?,
        None => std::env::var(&app.app_token_env).with_context(|| {
            format!(
                "the app token: set {} (--app-token-env) to your registered Capsule application's OAuth access token",
                app.app_token_env
            )
        })?,
    };
    let options = ClientOptions { access: backend.access.clone(), ..ClientOptions::default() };
    let token = SecretString::from(token.trim().to_string());
    Ok(CapsuleClient::new(&integration.api_base_url, token, options)?)
}

async fn subscribe(backend: &Backend, args: SubscribeArgs) -> anyhow::Result<()> {
    let client = app_client(backend, &args.app, &backend.integration(&args.app.name).await?).await?;
    let name = &args.app.name;
    let done = subscriptions::subscribe(&client, backend.state.as_ref(), name, &args.receiver, &args.tables).await?;
    println!(
        "{name}: {} REST hooks subscribed ({} added, {} already there, {} removed) → {}/{name}/<secret>",
        done.created.len() + done.kept.len(),
        done.created.len(),
        done.kept.len(),
        done.removed,
        args.receiver.trim_end_matches('/'),
    );
    Ok(())
}

async fn unsubscribe(backend: &Backend, args: AppArgs) -> anyhow::Result<()> {
    let client = app_client(backend, &args, &backend.integration(&args.name).await?).await?;
    let removed = subscriptions::unsubscribe(&client, backend.state.as_ref(), &args.name).await?;
    println!("{}: {removed} REST hooks removed; deliveries to the old URL are refused from now on", args.name);
    Ok(())
}

async fn list(backend: &Backend, args: ListArgs) -> anyhow::Result<()> {
    let integration = backend.integration(&args.app.name).await?;
    let client = app_client(backend, &args.app, &integration).await?;
    let hooks = subscriptions::list_of(&client, &integration).await?;
    if args.json {
        let rows: Vec<serde_json::Value> = hooks
            .iter()
            .map(|h| serde_json::json!({"id": h.id, "event": h.event, "embed": h.embed, "batched": h.batched}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    for hook in &hooks {
        println!("{:>8}  {:<22} embed={}", hook.id, hook.event, hook.embed.as_deref().unwrap_or("-"));
    }
    println!("{}", summary(backend, &integration).await?.unwrap_or_else(|| "not subscribed".into()));
    Ok(())
}

/// One line on an integration's hooks for `status` and `jobs`: what it subscribed, and the
/// last day's deliveries. None when it has no subscription.
pub async fn summary(
    backend: &Backend,
    integration: &capsule_core::integration::Integration,
) -> anyhow::Result<Option<String>> {
    let Some(settings) = &integration.hooks else { return Ok(None) };
    let day =
        activity::activity(backend.sink.as_ref(), &integration.name, Utc::now() - chrono::Duration::hours(24)).await?;
    let last = day.last_received_at.map_or_else(|| "none yet".into(), |t| t.format("%Y-%m-%d %H:%M:%SZ").to_string());
    Ok(Some(format!(
        "REST hooks: {} events → {}; last 24 h: {} deliveries, {} rows in {} hook runs; last delivery: {last}",
        settings.events.len(),
        settings.receiver,
        day.deliveries,
        day.rows,
        day.runs,
    )))
}
