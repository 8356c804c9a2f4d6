//! Capsule tokens from AWS Secrets Manager. The secret is a JSON document, one of:
//!
//! - a personal access token: `{"token": "…"}` (or `{"access_token": "…"}`);
//! - an OAuth2 app: `{"client_id": "…", "client_secret": "…", "refresh_token": "…"}`, plus the
//!   `access_token` and `expires_at` this adapter caches there. An expired (or missing) access
//!   token is refreshed at `https://api.capsulecrm.com/oauth/token` (or the deployment's
//!   `CAPSULE_OAUTH_TOKEN_URL`: never a URL in the secret, which would receive the client secret),
//!   and the new access token and the rotated refresh token are written back to this secret only ("refresh tokens may be rotated; always store the most
//!   recent version").
//!
//! A secret with only an email/username and password — the original spec's parameters — is
//! refused with what to do instead: Capsule API v2 accepts Bearer tokens only.

use async_trait::async_trait;
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::DisplayErrorContext;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use tokio::sync::Mutex;
use url::Url;

use capsule_core::observe::Event;
use capsule_core::ports::{StateStore, TokenProvider};
use capsule_core::{Result, SyncError};

/// Refresh this long before the access token expires.
const EXPIRY_MARGIN_SECS: i64 = 300;

/// Reads (and for OAuth, refreshes and writes back) the token in one secret.
pub struct SecretsManagerToken {
    client: Client,
    secret_id: String,
    http: std::result::Result<reqwest::Client, String>,
    /// Where refresh tokens are exchanged (the deployment's choice).
    token_url: Url,
    /// The last token handed out and when it expires (None: a PAT, no expiry known).
    cached: Mutex<Option<(SecretString, Option<DateTime<Utc>>)>>,
    /// Serialises OAuth refreshes of this secret across invocations (None: this process only).
    lock: Option<RefreshLock>,
}

/// Where the OAuth refresh lock of a secret is taken: the integration's lock in the state store.
#[derive(Clone)]
pub struct RefreshLock {
    pub state: std::sync::Arc<dyn StateStore>,
    pub integration: String,
}

/// A refresh lock lasts this long (a refresh is one POST and one secret write).
const LOCK_TTL: std::time::Duration = std::time::Duration::from_secs(30);
/// How long an invocation waits for another's refresh before giving up (retryably).
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(40);

impl SecretsManagerToken {
    pub fn new(client: Client, secret_id: String, token_url: Url) -> SecretsManagerToken {
        capsule_core::tls::install_crypto_provider();
        SecretsManagerToken { client, secret_id, http: oauth_http(), token_url, cached: Mutex::new(None), lock: None }
    }

    /// Refreshes take `lock` first and read the secret again under it: up to 22 invocations
    /// of one sync may find the access token expired at once, and Capsule rotates the refresh
    /// token, so only one of them may spend it.
    pub fn with_refresh_lock(self, lock: RefreshLock) -> SecretsManagerToken {
        SecretsManagerToken { lock: Some(lock), ..self }
    }

    /// A refresh, serialised by the lock when there is one: under it the secret is read again,
    /// and a token another invocation refreshed meanwhile is used instead.
    async fn refresh_serialised(
        &self,
        doc: Map<String, Value>,
        refused: Option<&SecretString>,
    ) -> Result<(SecretString, DateTime<Utc>)> {
        let Some(lock) = &self.lock else { return self.refresh(doc).await };
        let (name, holder) = (format!("oauth#{}", self.secret_id), format!("{:016x}", rand::random::<u64>()));
        let give_up = std::time::Instant::now() + LOCK_WAIT;
        loop {
            if lock.state.try_lock(&lock.integration, &name, &holder, LOCK_TTL).await? {
                let result = match usable_access(&self.read().await?, refused) {
                    Some(fresh) => Ok(fresh),
                    None => self.refresh(self.read().await?).await,
                };
                if let Err(e) = lock.state.unlock(&lock.integration, &name, &holder).await {
                    tracing::warn!(event = Event::OauthTokenRefreshed.as_str(), error = %e, "the refresh lock expires by itself");
                }
                return result;
            }
            // Another invocation is refreshing: its token shows up in the secret.
            tokio::time::sleep(std::time::Duration::from_millis(200 + rand::random::<u64>() % 300)).await;
            if let Some(fresh) = usable_access(&self.read().await?, refused) {
                return Ok(fresh);
            }
            if std::time::Instant::now() > give_up {
                return Err(SyncError::Transient {
                    request: format!("OAuth refresh of secret `{}`", self.secret_id),
                    message: format!("another invocation held the refresh lock for over {LOCK_WAIT:?}"),
                });
            }
        }
    }

    fn err(&self, message: impl std::fmt::Display) -> SyncError {
        SyncError::Credentials(format!("secret `{}`: {message}", self.secret_id))
    }

    async fn read(&self) -> Result<Map<String, Value>> {
        let out = self
            .client
            .get_secret_value()
            .secret_id(&self.secret_id)
            .send()
            .await
            .map_err(|e| self.err(format_args!("cannot read it: {}", DisplayErrorContext(e))))?;
        let text = out.secret_string().ok_or_else(|| self.err("it holds binary data, not a JSON document"))?;
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => Ok(map),
            // Never echo the content: it may be the token itself.
            _ => Err(self.err("it is not a JSON object (expected {\"token\": \"…\"} or an OAuth client document)")),
        }
    }

    async fn refresh(&self, mut doc: Map<String, Value>) -> Result<(SecretString, DateTime<Utc>)> {
        let field = |name: &str| doc.get(name).and_then(Value::as_str).map(str::to_string);
        let app = OAuthApp::from_doc(&doc)
            .ok_or_else(|| self.err("an OAuth secret needs client_id, client_secret and refresh_token"))?;
        let token_url = self.token_url.as_str();
        if let Some(asked) = field("token_url")
            && Url::parse(&asked).ok().as_ref() != Some(&self.token_url)
        {
            return Err(self.err(format_args!(
                "its token_url `{asked}` is not used: the OAuth client secret goes only to {token_url} \
                 (a deployment sets another with CAPSULE_OAUTH_TOKEN_URL); remove token_url from the secret"
            )));
        }
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", app.refresh_token.expose_secret()),
            ("client_id", app.client_id.as_str()),
            ("client_secret", app.client_secret.expose_secret()),
        ];
        let http = self.http.as_ref().map_err(|e| self.err(format_args!("no HTTP client for {token_url}: {e}")))?;
        let response = http
            .post(token_url)
            .form(&form)
            .send()
            .await
            .map_err(|e| SyncError::Transient { request: format!("POST {token_url}"), message: e.to_string() })?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let reason = body.get("error_description").or_else(|| body.get("error")).and_then(Value::as_str);
            let reason = app.redact(reason.unwrap_or("no reason given"));
            return Err(self.err(format_args!(
                "the OAuth token refresh was refused (HTTP {status}: {reason}); re-authorise the Capsule app and store a new refresh token"
            )));
        }
        let access = body
            .get("access_token")
            .and_then(Value::as_str)
            .ok_or_else(|| self.err("the OAuth token response has no access_token"))?
            .to_string();
        let expires_in = body.get("expires_in").and_then(Value::as_i64).unwrap_or(3600);
        let expires_at = Utc::now() + chrono::Duration::seconds(expires_in);
        doc.insert("access_token".into(), Value::String(access.clone()));
        doc.insert("expires_at".into(), Value::String(expires_at.to_rfc3339()));
        if let Some(rotated) = body.get("refresh_token").and_then(Value::as_str) {
            doc.insert("refresh_token".into(), Value::String(rotated.to_string()));
        }
        self.client
            .put_secret_value()
            .secret_id(&self.secret_id)
            .secret_string(Value::Object(doc).to_string())
            .send()
            .await
            .map_err(|e| self.err(format_args!("cannot write the refreshed token back: {}", DisplayErrorContext(e))))?;
        tracing::info!(event = Event::OauthTokenRefreshed.as_str(), secret = %self.secret_id, %expires_at);
        Ok((SecretString::from(access), expires_at))
    }
}

/// The token endpoint's HTTP client: no redirects (the form carries the client secret and the
/// refresh token) and a timeout. If it cannot be built, refreshes fail with why: there is no
/// fallback client (a default one would follow redirects).
fn oauth_http() -> std::result::Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(OAUTH_TIMEOUT)
        .connect_timeout(std::time::Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())
}

/// The token endpoint's answer must come within this.
const OAUTH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// The OAuth app's credentials in a secret; `Debug` shows neither secret.
#[derive(Debug)]
struct OAuthApp {
    client_id: String,
    client_secret: SecretString,
    refresh_token: SecretString,
}

impl OAuthApp {
    fn from_doc(doc: &Map<String, Value>) -> Option<OAuthApp> {
        let field = |name: &str| doc.get(name).and_then(Value::as_str).filter(|v| !v.trim().is_empty());
        Some(OAuthApp {
            client_id: field("client_id")?.to_string(),
            client_secret: SecretString::from(field("client_secret")?.to_string()),
            refresh_token: SecretString::from(field("refresh_token")?.to_string()),
        })
    }

    /// A message from the token endpoint, with anything secret of ours it echoes removed.
    fn redact(&self, text: &str) -> String {
        [self.client_secret.expose_secret(), self.refresh_token.expose_secret()]
            .iter()
            .fold(text.to_string(), |text, secret| text.replace(secret, "[redacted]"))
    }
}

/// The secret's cached access token, if it is still valid and not the one Capsule refused.
fn usable_access(doc: &Map<String, Value>, refused: Option<&SecretString>) -> Option<(SecretString, DateTime<Utc>)> {
    let access = doc.get("access_token").and_then(Value::as_str).filter(|v| !v.trim().is_empty())?;
    let expires_at = doc.get("expires_at").and_then(Value::as_str).and_then(|t| DateTime::parse_from_rfc3339(t).ok());
    let expires_at = expires_at?.to_utc();
    let refused = refused.is_some_and(|t| t.expose_secret() == access);
    (still_valid(Some(expires_at)) && !refused).then(|| (SecretString::from(access.to_string()), expires_at))
}

fn still_valid(expires_at: Option<DateTime<Utc>>) -> bool {
    expires_at.is_none_or(|at| at - chrono::Duration::seconds(EXPIRY_MARGIN_SECS) > Utc::now())
}

#[async_trait]
impl TokenProvider for SecretsManagerToken {
    async fn token(&self) -> Result<SecretString> {
        self.read_token(false).await
    }

    /// Capsule refused the token: read the secret again (another process may have refreshed it)
    /// and, for OAuth, refresh unless the secret's token is newer than the refused one.
    async fn refresh(&self) -> Result<SecretString> {
        self.read_token(true).await
    }
}

impl SecretsManagerToken {
    async fn read_token(&self, refused: bool) -> Result<SecretString> {
        let mut cached = self.cached.lock().await;
        if let Some((token, expires_at)) = cached.as_ref()
            && still_valid(*expires_at)
            && !refused
        {
            return Ok(token.clone());
        }
        let refused_token = if refused { cached.take().map(|(t, _)| t) } else { None };
        let doc = self.read().await?;
        let text = |k: &str| doc.get(k).and_then(Value::as_str).filter(|v| !v.trim().is_empty());
        let is_oauth = doc.contains_key("refresh_token") || doc.contains_key("client_id");
        let (token, expires_at) = if !is_oauth && let Some(pat) = text("token").or_else(|| text("access_token")) {
            (SecretString::from(pat.trim().to_string()), None)
        } else if is_oauth {
            let (token, at) = match usable_access(&doc, refused_token.as_ref()) {
                Some(found) => found,
                None => self.refresh_serialised(doc.clone(), refused_token.as_ref()).await?,
            };
            (token, Some(at))
        } else if doc.contains_key("password") {
            return Err(self.err(
                "it holds a username/email and password, but Capsule API v2 only accepts Bearer tokens. \
                 Create a personal access token in Capsule (My Preferences > API Authentication Tokens) and store \
                 {\"token\": \"<the token>\"} in the secret instead",
            ));
        } else {
            let keys: Vec<&String> = doc.keys().collect();
            return Err(self.err(format_args!(
                "no token in it: expected {{\"token\": …}} or client_id, client_secret and refresh_token (keys present: {keys:?})"
            )));
        };
        *cached = Some((token.clone(), expires_at));
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oauth_credentials_never_show_in_debug_or_echoed_errors() {
        let doc = serde_json::json!({"client_id": "app", "client_secret": "cs-42", "refresh_token": "rt-42"});
        let app = OAuthApp::from_doc(doc.as_object().unwrap()).unwrap();
        let debug = format!("{app:?}");
        assert!(debug.contains("app") && !debug.contains("cs-42") && !debug.contains("rt-42"), "{debug}");
        assert_eq!(app.redact("invalid refresh token rt-42"), "invalid refresh token [redacted]");
        let partial = serde_json::json!({"client_id": "app", "client_secret": "", "refresh_token": "rt"});
        assert!(OAuthApp::from_doc(partial.as_object().unwrap()).is_none(), "an empty client secret is missing");
    }
}
