//! `capsule-sync hooks subscribe|list|unsubscribe`: the integration's REST hooks at Capsule.
//! Capsule lets only a registered (OAuth) application subscribe, so these calls take the app's
//! token, not the integration's. Subscribing is idempotent: the hooks already there for this
//! receiver and secret are kept, missing ones are added, ones of an earlier secret or an
//! event no longer wanted are removed; at most [`MAX_HOOKS`] per account, checked before any
//! change. Each hook is `batched` and asks for the `embed` of the table's batch listing, so a
//! delivered record has the columns a synced one has.

use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};

use capsule_client::{CapsuleClient, Write};
use capsule_core::catalog::{self, HOOK_SUBJECTS};
use capsule_core::hooks::{self, HookSettings};
use capsule_core::integration::Integration;
use capsule_core::ports::StateStore;
use capsule_core::{Result, SyncError};

/// Hooks an account may hold (Capsule's limit).
pub const MAX_HOOKS: usize = 20;

/// One REST hook as `GET /resthooks` lists it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestHook {
    pub id: i64,
    pub event: String,
    pub target_url: String,
    #[serde(default)]
    pub embed: Option<String>,
    #[serde(default)]
    pub batched: Option<bool>,
}

impl RestHook {
    /// The secret of a hook sent to `<receiver>/<integration>/<secret>`.
    fn secret_for(&self, receiver: &str, integration: &str) -> Option<&str> {
        let prefix = format!("{}/{integration}/", receiver.trim_end_matches('/'));
        self.target_url.strip_prefix(&prefix).filter(|s| !s.is_empty() && !s.contains('/'))
    }

    /// Whether it delivers to the integration under its stored secret.
    fn is_of(&self, integration: &Integration) -> bool {
        let Some(settings) = &integration.hooks else { return false };
        self.secret_for(&settings.receiver, &integration.name).is_some_and(|s| settings.accepts(s))
    }
}

/// What subscribing did.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscribed {
    pub created: Vec<String>,
    pub kept: Vec<String>,
    /// Hooks of an earlier secret or an event no longer wanted.
    pub removed: usize,
}

/// The events wanted for an integration: those of its selected tables that Capsule hooks,
/// only of `only`'s tables when it names any.
pub fn wanted_events(integration: &Integration, only: &[String]) -> Result<Vec<&'static str>> {
    let selected = integration.selected_tables()?;
    for table in only {
        if !HOOK_SUBJECTS.iter().any(|s| s.table == table) {
            let hooked: Vec<&str> = HOOK_SUBJECTS.iter().map(|s| s.table).collect();
            return Err(SyncError::Config(format!(
                "--tables: Capsule sends no REST hooks for `{table}`; it does for {}",
                hooked.join(", ")
            )));
        }
    }
    Ok(HOOK_SUBJECTS
        .iter()
        .filter(|s| selected.iter().any(|t| t.name == s.table))
        .filter(|s| only.is_empty() || only.iter().any(|t| t == s.table))
        .flat_map(|s| s.events().map(|e| e.name))
        .collect())
}

/// The account's hooks (the app's own, when the token is an app's).
pub async fn list(client: &CapsuleClient) -> Result<Vec<RestHook>> {
    let (body, _) = client.get_json(&client.url("/resthooks", &[])?).await?;
    let hooks = body.get("restHooks").cloned().unwrap_or(Value::Array(Vec::new()));
    serde_json::from_value(hooks).map_err(|e| SyncError::BadResponse {
        request: "GET /resthooks".into(),
        message: format!("restHooks is not a list of hooks: {e}"),
    })
}

/// The hooks delivering to the integration (under its stored secret).
pub async fn list_of(client: &CapsuleClient, integration: &Integration) -> Result<Vec<RestHook>> {
    Ok(list(client).await?.into_iter().filter(|h| h.is_of(integration)).collect())
}

/// Subscribes the integration's events for `receiver` (of `only`'s tables, when it names any);
/// see the module doc.
pub async fn subscribe(
    client: &CapsuleClient,
    state: &dyn StateStore,
    name: &str,
    receiver: &str,
    only: &[String],
) -> Result<Subscribed> {
    let receiver = receiver.trim_end_matches('/');
    url::Url::parse(receiver).map_err(|e| SyncError::Config(format!("--receiver `{receiver}` is not a URL: {e}")))?;
    let mut integration = get(state, name).await?;
    let wanted = wanted_events(&integration, only)?;
    if wanted.is_empty() {
        return Err(SyncError::Config(format!(
            "integration `{name}` selects none of the tables Capsule sends REST hooks for (parties, cases, opportunities, tasks, users)"
        )));
    }
    let all = list(client).await?;
    let mine: Vec<&RestHook> = all.iter().filter(|h| h.secret_for(receiver, name).is_some()).collect();
    let stored = integration.hooks.as_ref().filter(|s| s.receiver == receiver);
    let secret: SecretString = mine
        .iter()
        .filter_map(|h| h.secret_for(receiver, name))
        .find(|s| stored.is_some_and(|settings| settings.accepts(s)))
        .map_or_else(hooks::new_secret, |s| SecretString::from(s.to_string()));
    let current = |h: &&&RestHook| h.secret_for(receiver, name) == Some(secret.expose_secret());
    let stale: Vec<&RestHook> =
        mine.iter().copied().filter(|h| !current(&h) || !wanted.contains(&h.event.as_str())).collect();
    let kept: Vec<String> =
        mine.iter().filter(current).filter(|h| wanted.contains(&h.event.as_str())).map(|h| h.event.clone()).collect();
    let missing: Vec<&str> = wanted.iter().copied().filter(|e| !kept.iter().any(|k| k == e)).collect();
    let after = all.len() - stale.len() + missing.len();
    if after > MAX_HOOKS {
        return Err(SyncError::Config(format!(
            "subscribing `{name}` needs {} more REST hooks; the account has {} of Capsule's {MAX_HOOKS} — unsubscribe others first, or select fewer tables",
            missing.len(),
            all.len() - stale.len()
        )));
    }
    integration.hooks = Some(HookSettings {
        receiver: receiver.to_string(),
        secret_sha256: hooks::digest(secret.expose_secret()),
        events: wanted.iter().map(|e| e.to_string()).collect(),
        subscribed_at: Utc::now(),
    });
    state.update_integration(&integration).await?;
    for hook in &stale {
        delete(client, hook.id).await?;
    }
    let target = hooks::target_url(receiver, name, &secret);
    for event in &missing {
        create(client, event, &target, name).await.map_err(|e| redact(e, &secret))?;
    }
    Ok(Subscribed { created: missing.iter().map(|e| e.to_string()).collect(), kept, removed: stale.len() })
}

/// Removes the integration's hooks and forgets its secret; the number of hooks removed.
pub async fn unsubscribe(client: &CapsuleClient, state: &dyn StateStore, name: &str) -> Result<usize> {
    let mut integration = get(state, name).await?;
    let Some(settings) = integration.hooks.clone() else { return Ok(0) };
    let mine: Vec<RestHook> =
        list(client).await?.into_iter().filter(|h| h.secret_for(&settings.receiver, name).is_some()).collect();
    for hook in &mine {
        delete(client, hook.id).await?;
    }
    integration.hooks = None;
    state.update_integration(&integration).await?;
    Ok(mine.len())
}

async fn get(state: &dyn StateStore, name: &str) -> Result<Integration> {
    state.get_integration(name).await?.ok_or_else(|| SyncError::Config(format!("no integration named `{name}`")))
}

async fn create(client: &CapsuleClient, event: &str, target: &str, name: &str) -> Result<()> {
    let embed = catalog::hook_event(event).and_then(|e| catalog::hook_subject(e.table.name)).and_then(|s| s.embed());
    let mut hook =
        json!({"event": event, "targetUrl": target, "batched": true, "description": format!("capsule-sync {name}")});
    if let Some(embed) = embed {
        hook["embed"] = Value::from(embed);
    }
    client.send(&client.url("/resthooks", &[])?, Write::Post(json!({ "restHook": hook }))).await.map(|_| ())
}

async fn delete(client: &CapsuleClient, id: i64) -> Result<()> {
    match client.send(&client.url(&format!("/resthooks/{id}"), &[])?, Write::Delete).await {
        Err(SyncError::Rejected { status: 404, .. }) => Ok(()),
        other => other.map(|_| ()),
    }
}

/// A refusal whose message might echo the target URL, with the secret taken out.
fn redact(error: SyncError, secret: &SecretString) -> SyncError {
    match error {
        SyncError::Rejected { request, status, message } => {
            SyncError::Rejected { request, status, message: message.replace(secret.expose_secret(), "<secret>") }
        }
        other => other,
    }
}
