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

use crate::observe::Event;
use crate::ports::TokenProvider;
use crate::{Result, SyncError};

/// Refresh this long before the access token expires.
const EXPIRY_MARGIN_SECS: i64 = 300;

/// Reads (and for OAuth, refreshes and writes back) the token in one secret.
pub struct SecretsManagerToken {
    client: Client,
    secret_id: String,
    http: reqwest::Client,
    /// Where refresh tokens are exchanged (the deployment's choice).
    token_url: Url,
    /// The last token handed out and when it expires (None: a PAT, no expiry known).
    cached: Mutex<Option<(SecretString, Option<DateTime<Utc>>)>>,
}

impl SecretsManagerToken {
    pub fn new(client: Client, secret_id: String, token_url: Url) -> SecretsManagerToken {
        crate::tls::install_crypto_provider();
        // No redirects: the form carries the client secret and the refresh token.
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap_or_default();
        SecretsManagerToken { client, secret_id, http, token_url, cached: Mutex::new(None) }
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
        let response = self
            .http
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
            let expires_at = text("expires_at").and_then(|t| DateTime::parse_from_rfc3339(t).ok()).map(|t| t.to_utc());
            let is_refused = |access: &str| refused_token.as_ref().is_some_and(|t| t.expose_secret() == access);
            match text("access_token") {
                Some(access) if expires_at.is_some() && still_valid(expires_at) && !is_refused(access) => {
                    (SecretString::from(access.to_string()), expires_at)
                }
                _ => {
                    let (token, at) = self.refresh(doc.clone()).await?;
                    (token, Some(at))
                }
            }
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
