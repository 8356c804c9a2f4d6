//! REST hooks as Capsule delivers them. Subscriptions come through `POST /resthooks` (only the
//! documented events, at most 20 per account), are listed by `GET /resthooks` beside the
//! account's generated ones and removed by `DELETE /resthooks/{id}`. Every change to the
//! account is then `POST`ed to each subscription of its event: `{"event": "party/updated",
//! "payload": [record]}` — one record per delivery, or the change's records together when the
//! subscription is `batched`. A delivery that gets no 2xx is retried ([`ATTEMPTS`] in all,
//! backing off); [`DeliveryFaults`] drop or duplicate deliveries, as a real network may.
//!
//! UNCONFIRMED, so chosen to be the harder case for a receiver: a deletion's payload carries
//! `{"id": …}` only; Capsule signs nothing and sends no secret of its own.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The events Capsule documents for REST hooks.
pub const EVENTS: [&str; 19] = [
    "party/created",
    "party/updated",
    "party/deleted",
    "kase/created",
    "kase/updated",
    "kase/deleted",
    "kase/closed",
    "kase/moved",
    "opportunity/created",
    "opportunity/updated",
    "opportunity/deleted",
    "opportunity/closed",
    "opportunity/moved",
    "task/created",
    "task/updated",
    "task/completed",
    "user/created",
    "user/updated",
    "user/deleted",
];

/// Subscriptions an account may hold at once.
pub const MAX_HOOKS: usize = 20;

/// Tries per delivery, the first included.
pub const ATTEMPTS: u32 = 4;

/// The wait before the first retry; each later one waits twice as long.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// One subscription, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestHook {
    #[serde(default)]
    pub id: i64,
    pub event: String,
    pub target_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embed: Option<String>,
    #[serde(default)]
    pub batched: bool,
}

/// What the delivery network does to deliveries: the share dropped (never sent) and the share
/// sent twice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct DeliveryFaults {
    #[serde(default)]
    pub drop: f64,
    #[serde(default)]
    pub duplicate: f64,
}

/// Deliveries so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeliveryStats {
    /// Answered 2xx.
    pub delivered: u64,
    /// Dropped by [`DeliveryFaults`].
    pub dropped: u64,
    /// Sent a second time by [`DeliveryFaults`].
    pub duplicated: u64,
    /// Tries that got no 2xx (each retried until [`ATTEMPTS`]).
    pub failed_tries: u64,
    /// Deliveries that failed every try.
    pub given_up: u64,
}

/// The subscriptions and the deliveries in flight.
pub struct Hooks {
    subscribed: Mutex<Vec<RestHook>>,
    next_id: Mutex<i64>,
    faults: Mutex<(DeliveryFaults, ChaCha8Rng)>,
    stats: Arc<Mutex<DeliveryStats>>,
    in_flight: Arc<tokio::sync::Semaphore>,
    client: reqwest::Client,
}

/// Deliveries in flight at most; more wait (as Capsule's own queue would).
const IN_FLIGHT: usize = 64;

impl Hooks {
    pub fn new(seed: u64) -> Hooks {
        // The process's TLS provider (reqwest is built without one); targets are plain http here.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Hooks {
            subscribed: Mutex::new(Vec::new()),
            next_id: Mutex::new(1000),
            faults: Mutex::new((DeliveryFaults::default(), ChaCha8Rng::seed_from_u64(seed))),
            stats: Arc::default(),
            in_flight: Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT)),
            client: reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("an HTTP client"),
        }
    }

    pub fn list(&self) -> Vec<RestHook> {
        self.subscribed.lock().unwrap().clone()
    }

    /// `POST /resthooks` with `{"restHook": {...}}`: the stored hook, or the status and message
    /// Capsule would answer.
    pub fn subscribe(&self, body: &[u8]) -> Result<RestHook, (StatusCode, String)> {
        let invalid = |message: String| (StatusCode::UNPROCESSABLE_ENTITY, message);
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        struct Body {
            rest_hook: RestHook,
        }
        let Body { rest_hook: mut hook } = serde_json::from_slice(body)
            .map_err(|e| (StatusCode::BAD_REQUEST, format!("the body must be {{\"restHook\": {{...}}}}: {e}")))?;
        if !EVENTS.contains(&hook.event.as_str()) {
            return Err(invalid(format!("event `{}` is not one of: {}", hook.event, EVENTS.join(", "))));
        }
        let url = url::Url::parse(&hook.target_url).map_err(|e| invalid(format!("targetUrl is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid("targetUrl must be an http(s) URL".into()));
        }
        let mut subscribed = self.subscribed.lock().unwrap();
        if subscribed.len() >= MAX_HOOKS {
            return Err(invalid(format!("an account may have at most {MAX_HOOKS} REST hooks")));
        }
        let mut next = self.next_id.lock().unwrap();
        *next += 1;
        hook.id = *next;
        subscribed.push(hook.clone());
        Ok(hook)
    }

    /// `DELETE /resthooks/{id}`: whether there was one.
    pub fn unsubscribe(&self, id: i64) -> bool {
        let mut subscribed = self.subscribed.lock().unwrap();
        let before = subscribed.len();
        subscribed.retain(|h| h.id != id);
        subscribed.len() < before
    }

    pub fn set_faults(&self, faults: DeliveryFaults) {
        self.faults.lock().unwrap().0 = faults;
    }

    pub fn stats(&self) -> DeliveryStats {
        self.stats.lock().unwrap().clone()
    }

    /// Sends `records` to every subscription of `event`, in the background (a change is not
    /// held up by its deliveries). Outside a Tokio runtime nothing is sent.
    pub fn deliver(&self, event: &str, records: Vec<Value>) {
        if records.is_empty() {
            return;
        }
        let hooks: Vec<RestHook> =
            self.subscribed.lock().unwrap().iter().filter(|h| h.event == event).cloned().collect();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        for hook in hooks {
            let bodies: Vec<Value> = match hook.batched {
                true => vec![json!({"event": event, "payload": records})],
                false => records.iter().map(|r| json!({"event": event, "payload": [r]})).collect(),
            };
            for body in bodies {
                let copies = self.copies();
                for _ in 0..copies {
                    let send = Delivery {
                        client: self.client.clone(),
                        url: hook.target_url.clone(),
                        body: body.clone(),
                        stats: self.stats.clone(),
                        in_flight: self.in_flight.clone(),
                    };
                    runtime.spawn(send.run());
                }
            }
        }
    }

    /// How many times the network sends one delivery: 0 (dropped), 1 or 2 (duplicated).
    fn copies(&self) -> usize {
        let mut faults = self.faults.lock().unwrap();
        let (settings, rng) = &mut *faults;
        let mut stats = self.stats.lock().unwrap();
        if settings.drop > 0.0 && rng.random_bool(settings.drop.min(1.0)) {
            stats.dropped += 1;
            return 0;
        }
        if settings.duplicate > 0.0 && rng.random_bool(settings.duplicate.min(1.0)) {
            stats.duplicated += 1;
            return 2;
        }
        1
    }
}

/// One delivery: sent until a 2xx answer, [`ATTEMPTS`] times at most.
struct Delivery {
    client: reqwest::Client,
    url: String,
    body: Value,
    stats: Arc<Mutex<DeliveryStats>>,
    in_flight: Arc<tokio::sync::Semaphore>,
}

impl Delivery {
    async fn run(self) {
        let Ok(_permit) = self.in_flight.acquire().await else { return };
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=ATTEMPTS {
            let sent = self.client.post(&self.url).json(&self.body).send().await;
            if sent.is_ok_and(|r| r.status().is_success()) {
                self.stats.lock().unwrap().delivered += 1;
                return;
            }
            self.stats.lock().unwrap().failed_tries += 1;
            if attempt < ATTEMPTS {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
        }
        self.stats.lock().unwrap().given_up += 1;
        tracing::warn!(url = %self.url, "a REST hook delivery failed every try");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(event: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({"restHook": {"event": event, "targetUrl": "http://127.0.0.1:9/h"}})).unwrap()
    }

    #[test]
    fn subscriptions_take_documented_events_up_to_twenty() {
        let hooks = Hooks::new(1);
        let first = hooks.subscribe(&hook("party/updated")).unwrap();
        assert!(first.id > 0 && !first.batched);
        let (status, message) = hooks.subscribe(&hook("party/renamed")).unwrap_err();
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(message.contains("party/renamed"), "{message}");
        let (status, _) = hooks.subscribe(b"{\"event\": \"party/updated\"}").unwrap_err();
        assert_eq!(status, StatusCode::BAD_REQUEST, "not wrapped in restHook");
        for _ in 1..MAX_HOOKS {
            hooks.subscribe(&hook("task/created")).unwrap();
        }
        let (status, message) = hooks.subscribe(&hook("task/created")).unwrap_err();
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(message.contains("at most 20"), "{message}");
        assert!(hooks.unsubscribe(first.id));
        assert!(!hooks.unsubscribe(first.id), "gone already");
        assert_eq!(hooks.list().len(), MAX_HOOKS - 1);
    }
}
