//! The writes capsule-sync makes to Capsule — only REST hook subscriptions (`POST` and
//! `DELETE /resthooks`). A write is sent once and never retried: a retried POST could subscribe
//! twice, and its callers are idempotent when run again instead.

use std::time::Instant;

use reqwest::header::{ACCEPT, USER_AGENT};
use secrecy::ExposeSecret;
use serde_json::Value;
use url::Url;

use capsule_core::observe::Event;
use capsule_core::{Result, SyncError};

use crate::retry::{StatusClass, classify_status};
use crate::{AUTH_HINT, CapsuleClient, error_message};

/// One write.
#[derive(Debug, Clone)]
pub enum Write {
    /// POST with a JSON body.
    Post(Value),
    Delete,
}

impl CapsuleClient {
    /// Sends `write` to `url` once; the answer's JSON (`Null` for an empty body). The body is
    /// never logged (a subscription's body holds its target URL and so its secret).
    pub async fn send(&self, url: &Url, write: Write) -> Result<Value> {
        let inner = &self.inner;
        let (method, body) = match write {
            Write::Post(body) => (reqwest::Method::POST, Some(body)),
            Write::Delete => (reqwest::Method::DELETE, None),
        };
        let request = format!("{method} {}", url.path());
        let token = inner.token.read().unwrap().clone();
        let mut builder = inner
            .http
            .request(method, url.clone())
            .bearer_auth(token.expose_secret())
            .header(ACCEPT, "application/json")
            .header(USER_AGENT, concat!("capsule-sync/", env!("CARGO_PKG_VERSION")));
        if let Some(body) = &body {
            builder = builder.json(body);
        }
        let started = Instant::now();
        let response = builder
            .send()
            .await
            .map_err(|e| SyncError::Transient { request: request.clone(), message: format!("request failed: {e}") })?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| SyncError::Transient {
            request: request.clone(),
            message: format!("connection dropped while reading the body: {e}"),
        })?;
        tracing::debug!(event = Event::CapsuleRequest.as_str(), %request, status = status.as_u16(),
                        ms = started.elapsed().as_millis() as u64);
        match classify_status(status) {
            StatusClass::Success if bytes.is_empty() => Ok(Value::Null),
            StatusClass::Success => serde_json::from_slice(&bytes)
                .map_err(|e| SyncError::BadResponse { request, message: format!("body is not JSON: {e}") }),
            StatusClass::Auth => {
                Err(SyncError::Auth { status: status.as_u16(), detail: error_message(&bytes), hint: AUTH_HINT })
            }
            StatusClass::Transient | StatusClass::RateLimited => Err(SyncError::Transient {
                request,
                message: format!("HTTP {}: {}", status.as_u16(), error_message(&bytes)),
            }),
            StatusClass::Rejected => {
                Err(SyncError::Rejected { request, status: status.as_u16(), message: error_message(&bytes) })
            }
        }
    }
}
