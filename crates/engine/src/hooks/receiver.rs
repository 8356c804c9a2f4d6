//! Admitting a delivery, the same in both runtimes (`capsule-sync hooks serve`, the
//! hook-receiver Lambda): the path names the integration and carries its secret
//! (`…/<integration>/<secret>`), the secret's digest must be the stored one, the body must fit
//! [`Limits`], the event must be one the integration subscribed to, and the integration may not
//! send faster than its rate. Every refusal is a 4xx that says what was wrong — never the secret.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use capsule_core::integration::{Integration, IntegrationName};
use capsule_core::ports::StateStore;
use capsule_core::{Result, SyncError};

use super::Delivery;

/// Why a delivery was refused; each is a 4xx ([`Rejection::status`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Rejection {
    /// The path is not `…/<integration>/<secret>`.
    NotFound,
    /// Not a POST.
    MethodNotAllowed,
    /// No integration of that name has a subscription, or the secret is not its: the two are
    /// answered alike, so a caller cannot learn which integrations exist.
    WrongSecret,
    /// The body is larger than [`Limits::max_body_bytes`].
    TooLarge { limit: usize },
    /// The body is not a delivery.
    Malformed(String),
    /// An event the integration did not subscribe to.
    NotSubscribed { event: String },
    /// More deliveries than [`Limits::per_second`] in this second.
    RateLimited { per_second: u32 },
}

impl Rejection {
    pub fn status(&self) -> u16 {
        match self {
            Rejection::NotFound => 404,
            Rejection::MethodNotAllowed => 405,
            Rejection::WrongSecret => 403,
            Rejection::TooLarge { .. } => 413,
            Rejection::Malformed(_) => 400,
            Rejection::NotSubscribed { .. } => 422,
            Rejection::RateLimited { .. } => 429,
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::NotFound => f.write_str("deliveries are POSTed to <receiver>/<integration>/<secret>"),
            Rejection::MethodNotAllowed => f.write_str("only POST delivers a REST hook"),
            Rejection::WrongSecret => {
                f.write_str("the secret in the URL is not the integration's (or it subscribed to no hooks)")
            }
            Rejection::TooLarge { limit } => write!(f, "the body is larger than the {limit}-byte limit"),
            Rejection::Malformed(why) => f.write_str(why),
            Rejection::NotSubscribed { event } => write!(f, "the integration did not subscribe to `{event}`"),
            Rejection::RateLimited { per_second } => {
                write!(f, "more than {per_second} deliveries in one second for this integration; retry later")
            }
        }
    }
}

/// What a receiver accepts.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest body accepted (a `batched` delivery of many records is the large case).
    pub max_body_bytes: usize,
    /// Deliveries per second accepted for one integration.
    pub per_second: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_body_bytes: 1024 * 1024, per_second: 500 }
    }
}

/// Deliveries counted per integration and second. A window per integration over one mutex is
/// all this needs (one process's share; on Lambda the function's reserved concurrency bounds
/// the rest), so no rate-limiting crate is brought in for it.
#[derive(Debug, Default)]
pub struct RateLimiter {
    seen: Mutex<HashMap<String, (i64, u32)>>,
}

impl RateLimiter {
    fn admit(&self, integration: &str, per_second: u32, now: DateTime<Utc>) -> std::result::Result<(), Rejection> {
        let second = now.timestamp();
        let mut seen = self.seen.lock().unwrap();
        let window = seen.entry(integration.to_string()).or_insert((second, 0));
        if window.0 != second {
            *window = (second, 0);
        }
        if window.1 >= per_second {
            return Err(Rejection::RateLimited { per_second });
        }
        window.1 += 1;
        Ok(())
    }
}

/// A refused delivery, or a failure on our side (the state store could not be read: a 5xx, so
/// Capsule tries again).
#[derive(Debug)]
pub enum Refusal {
    Rejected(Rejection),
    Failed(SyncError),
}

impl From<Rejection> for Refusal {
    fn from(r: Rejection) -> Refusal {
        Refusal::Rejected(r)
    }
}

impl From<SyncError> for Refusal {
    fn from(e: SyncError) -> Refusal {
        Refusal::Failed(e)
    }
}

/// The integration and secret a path names: its last two segments.
pub fn route(path: &str) -> std::result::Result<(IntegrationName, &str), Rejection> {
    let mut segments = path.trim_end_matches('/').rsplit('/');
    let (Some(secret), Some(name)) = (segments.next(), segments.next()) else { return Err(Rejection::NotFound) };
    let name: IntegrationName = name.parse().map_err(|_| Rejection::NotFound)?;
    if secret.is_empty() {
        return Err(Rejection::NotFound);
    }
    Ok((name, secret))
}

/// Admits a POST to `path` with `body`: the integration as stored now, and the delivery.
pub async fn admit(
    state: &dyn StateStore,
    limiter: &RateLimiter,
    limits: &Limits,
    path: &str,
    body: &[u8],
    now: DateTime<Utc>,
) -> std::result::Result<(Integration, Delivery), Refusal> {
    let (name, secret) = route(path)?;
    let integration = state.get_integration(&name).await?;
    let Some(integration) = integration.filter(|i| i.hooks.as_ref().is_some_and(|h| h.accepts(secret))) else {
        return Err(Rejection::WrongSecret.into());
    };
    limiter.admit(&integration.name, limits.per_second, now)?;
    if body.len() > limits.max_body_bytes {
        return Err(Rejection::TooLarge { limit: limits.max_body_bytes }.into());
    }
    let delivery = Delivery::parse(body, now)?;
    let subscribed = integration.hooks.as_ref().is_some_and(|h| h.subscribes(delivery.event.name));
    if !subscribed {
        return Err(Rejection::NotSubscribed { event: delivery.event.name.to_string() }.into());
    }
    Ok((integration, delivery))
}

/// What a receiver answers: a status and a JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl Answer {
    /// 202: the delivery's rows are durable.
    pub fn landed(delivery: &Delivery) -> Answer {
        let body = serde_json::json!({"landed": delivery.records.len(), "table": delivery.event.table.name});
        Answer { status: 202, body: body.to_string() }
    }

    /// The refusal's status and message, logged (by integration name at most: the path holds
    /// the secret and is never logged).
    pub fn refused(refusal: &Refusal, integration: Option<&str>) -> Answer {
        let (status, message) = match refusal {
            Refusal::Rejected(r) => {
                tracing::warn!(event = capsule_core::observe::Event::HookRejected.as_str(), integration, status = r.status(), reason = %r);
                (r.status(), r.to_string())
            }
            Refusal::Failed(e) => {
                tracing::error!(event = capsule_core::observe::Event::HookLandingFailed.as_str(), integration, error = %e);
                (503, "the delivery could not be landed; send it again".to_string())
            }
        };
        Answer { status, body: serde_json::json!({ "error": message }).to_string() }
    }
}

/// Lands through `land` what [`admit`] let in, and answers.
pub async fn receive<F, Fut>(
    state: &dyn StateStore,
    limiter: &RateLimiter,
    limits: &Limits,
    path: &str,
    body: &[u8],
    land: F,
) -> Answer
where
    F: FnOnce(Integration, Delivery) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let name = route(path).ok().map(|(n, _)| n.to_string());
    let outcome = match admit(state, limiter, limits, path, body, Utc::now()).await {
        Ok((integration, delivery)) => {
            let answer = Answer::landed(&delivery);
            land(integration, delivery).await.map(|()| answer).map_err(Refusal::Failed)
        }
        Err(refusal) => Err(refusal),
    };
    outcome.unwrap_or_else(|refusal| Answer::refused(&refusal, name.as_deref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_names_the_integration_and_its_secret() {
        let (name, secret) = route("/hooks/acme/abc123").unwrap();
        assert_eq!((&*name, secret), ("acme", "abc123"));
        assert_eq!(route("/acme/abc/").unwrap().1, "abc");
        assert_eq!(route("/abc").unwrap_err(), Rejection::NotFound);
        assert_eq!(route("/Not A Name/abc").unwrap_err(), Rejection::NotFound);
    }

    #[test]
    fn the_rate_is_counted_per_integration_and_second() {
        let limiter = RateLimiter::default();
        let now = Utc::now();
        assert!(limiter.admit("a", 2, now).is_ok() && limiter.admit("a", 2, now).is_ok());
        assert_eq!(limiter.admit("a", 2, now).unwrap_err(), Rejection::RateLimited { per_second: 2 });
        assert!(limiter.admit("b", 2, now).is_ok());
        assert!(limiter.admit("a", 2, now + chrono::Duration::seconds(1)).is_ok());
    }
}
