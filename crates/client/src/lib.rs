//! The Capsule API v2 client: Bearer auth (re-read when it expires or is refused), `perPage`
//! paging over `Link rel="next"`, requests claimed from the token's shared rate-limit budget,
//! 429s and long waits turned into [`SyncError::Throttled`], transient failures retried with
//! backoff.

pub mod access;
mod count;
mod page;
mod record;
mod retry;
mod write;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use backon::Retryable;
use reqwest::header::{ACCEPT, LINK, USER_AGENT};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use url::Url;

pub use count::{Counted, count_records, count_requests, with_page};
pub use page::next_link;
pub use record::{BodyError, ListingPage, RawRecord};
pub use retry::{Attempt, RetryPolicy};
pub use write::Write;

use crate::access::AccessPolicy;
use capsule_core::budget::{BudgetPolicy, Claim, MemoryBudgets, RateBudget, RateBudgetStore, budget_key};
use capsule_core::integration::Integration;
use capsule_core::manifest::RequestStats;
use capsule_core::observe::Event;
use capsule_core::ports::TokenProvider;
use capsule_core::progress::{Activity, ActivityFn};
use capsule_core::ratelimit::RateLimitStatus;
use capsule_core::runlog::RunLog;
use capsule_core::{Result, SyncError};
use page::with_own_params;
use retry::{StatusClass, classify_status};

const AUTH_HINT: &str = "Create a personal access token in Capsule under My Preferences > API Authentication \
                         Tokens (or re-authorise the OAuth app) and update the integration's token source";

/// Client settings; `ClientOptions::default()` suits production.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Per-request timeout (connect + headers + body).
    pub timeout: Duration,
    /// Retry schedule for transient failures.
    pub retry: RetryPolicy,
    /// How the token's rate-limit budget is shared out (the reserve left to other tools).
    pub budget: BudgetPolicy,
    /// Longest a request waits in place for the rate-limit window; a longer wait ends it with
    /// [`SyncError::Throttled`] so the run can checkpoint (Lambda: seconds; the CLI: the window).
    pub max_inline_wait: Duration,
    /// When every retry of a transient failure is spent: `Some(pause)` ends the request with
    /// [`SyncError::Throttled`] to resume after `pause` (an outage waited out between
    /// invocations); None fails it.
    pub outage_pause: Option<Duration>,
    /// How many 429s in a row one request may wait out before giving up.
    pub max_rate_limit_waits: u32,
    /// Which base URLs the deployment lets a client send its token to.
    pub access: AccessPolicy,
    /// The largest response body read; a larger one fails its request
    /// ([`SyncError::BadResponse`]) instead of exhausting a small function's memory.
    pub max_body_bytes: usize,
}

/// [`ClientOptions::max_body_bytes`] unless configured: a page of 100 Capsule records is well
/// under a megabyte.
pub(crate) const DEFAULT_MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// Error text kept from a response body in messages and run records.
const ERROR_BODY_CHARS: usize = 300;

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            timeout: Duration::from_secs(60),
            retry: RetryPolicy::default(),
            budget: BudgetPolicy::default(),
            max_inline_wait: Duration::from_secs(3660),
            outage_pause: None,
            max_rate_limit_waits: 10,
            access: AccessPolicy::default(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

/// Capsule's `since` format: UTC, seconds, `Z`.
pub fn since_param(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The rate-limit budget a client draws from: a store shared with other processes, and the key.
#[derive(Clone)]
pub(crate) struct SharedBudget {
    pub store: Arc<dyn RateBudgetStore>,
    pub key: String,
}

/// Request counts of one table run.
#[derive(Debug, Default)]
pub(crate) struct RequestCounters {
    requests: AtomicU64,
    retries: AtomicU64,
    rate_limited: AtomicU64,
}

impl RequestCounters {
    pub fn snapshot(&self) -> RequestStats {
        RequestStats {
            requests: self.requests.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            rate_limited: self.rate_limited.load(Ordering::Relaxed),
        }
    }
}

struct Inner {
    http: reqwest::Client,
    base: String,
    /// The token in use; re-read from `tokens` before each request (providers cache it).
    token: RwLock<SecretString>,
    tokens: Option<Arc<dyn TokenProvider>>,
    budget: SharedBudget,
    /// The budget as last stored, to skip writes that would change nothing.
    known: Mutex<Option<RateBudget>>,
    last_status: Mutex<Option<RateLimitStatus>>,
    /// Whether Capsule has answered this client at all: until it has, a connection that cannot
    /// be made is a wrong setup ([`SyncError::Unreachable`]), not an outage to retry.
    answered: AtomicBool,
    options: ClientOptions,
}

/// A Capsule API client. Cheap to clone; clones share the connection pool and rate-limit budget.
/// [`CapsuleClient::for_run_logged`] gives a clone with its own request counters and log.
#[derive(Clone)]
pub struct CapsuleClient {
    inner: Arc<Inner>,
    counters: Arc<RequestCounters>,
    /// Where retries and rate-limit waits of one table run are logged.
    log: Option<RunLog>,
    /// Told of retries and in-place rate-limit waits of one table run (a live view).
    activity: Option<Arc<ActivityFn>>,
    /// No wait (rate-limit window, retry backoff) is slept in place past this instant: the
    /// request ends with [`SyncError::Throttled`] instead, so the run checkpoints in time.
    deadline: Option<Instant>,
}

impl std::fmt::Debug for CapsuleClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CapsuleClient").field("base", &self.inner.base).finish_non_exhaustive()
    }
}

impl CapsuleClient {
    /// A client with a fixed token and a budget of its own (token checks, tests).
    pub fn new(base_url: &str, token: SecretString, options: ClientOptions) -> Result<CapsuleClient> {
        let budget = SharedBudget { store: Arc::new(MemoryBudgets::default()), key: "local".into() };
        CapsuleClient::build(base_url, token, None, budget, options)
    }

    /// The client an integration's runs use (the CLI's and table-sync's alike): the token read
    /// from `tokens` (and re-read when it expires or Capsule refuses it), requests claimed from
    /// the token's budget in `store` (keyed by the token source), the integration's reserve.
    pub async fn for_integration(
        integration: &Integration,
        tokens: Arc<dyn TokenProvider>,
        store: Arc<dyn RateBudgetStore>,
        mut options: ClientOptions,
    ) -> Result<CapsuleClient> {
        options.access.check(integration)?;
        options.budget.reserve = f64::from(integration.rate_reserve_percent) / 100.0;
        let key = budget_key(&integration.api_base_url, &integration.token.to_string());
        let token = tokens.token().await?;
        CapsuleClient::build(&integration.api_base_url, token, Some(tokens), SharedBudget { store, key }, options)
    }

    fn build(
        base_url: &str,
        token: SecretString,
        tokens: Option<Arc<dyn TokenProvider>>,
        budget: SharedBudget,
        options: ClientOptions,
    ) -> Result<CapsuleClient> {
        let base = options.access.check_api_url(base_url)?;
        capsule_core::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            // A redirect could carry the token elsewhere; Capsule's API does not redirect.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(options.timeout)
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(50))
            .build()
            .map_err(|e| SyncError::Internal(format!("building the HTTP client: {e}")))?;
        Ok(CapsuleClient {
            inner: Arc::new(Inner {
                http,
                base: base.as_str().trim_end_matches('/').to_string(),
                token: RwLock::new(token),
                tokens,
                budget,
                known: Mutex::new(None),
                last_status: Mutex::new(None),
                answered: AtomicBool::new(false),
                options,
            }),
            counters: Arc::default(),
            log: None,
            activity: None,
            deadline: None,
        })
    }

    /// A clone for one table run: its own request counters, and retries and rate-limit waits
    /// logged to the run's log.
    pub fn for_run_logged(&self, log: RunLog) -> CapsuleClient {
        CapsuleClient { counters: Arc::default(), log: Some(log), ..self.clone() }
    }

    /// A clone that tells `activity` of its retries and in-place rate-limit waits.
    pub fn with_activity(&self, activity: Arc<ActivityFn>) -> CapsuleClient {
        CapsuleClient { activity: Some(activity), ..self.clone() }
    }

    fn report(&self, activity: Activity) {
        if let Some(report) = &self.activity {
            report(activity);
        }
    }

    /// A clone that sleeps no wait in place past `deadline` (an invocation's working time).
    pub fn with_deadline(&self, deadline: Instant) -> CapsuleClient {
        CapsuleClient { deadline: Some(deadline), ..self.clone() }
    }

    /// Whether a wait of `wait` from now would end past the deadline.
    fn outlives_deadline(&self, wait: Duration) -> bool {
        self.deadline.is_some_and(|d| Instant::now() + wait > d)
    }

    fn warn(&self, event: Event, message: String, fields: Value) {
        match &self.log {
            Some(log) => log.warn(event, message, fields),
            None => tracing::warn!(event = event.as_str(), %fields, "{message}"),
        }
    }

    pub fn stats(&self) -> RequestStats {
        self.counters.snapshot()
    }

    /// The rate-limit state the server last reported.
    pub fn rate_limit(&self) -> Option<RateLimitStatus> {
        *self.inner.last_status.lock().unwrap()
    }

    /// `base + path` with query parameters.
    pub fn url(&self, path: &str, params: &[(&str, &str)]) -> Result<Url> {
        let mut url = Url::parse(&format!("{}{}", self.inner.base, path))
            .map_err(|e| SyncError::Internal(format!("bad API path `{path}`: {e}")))?;
        if !params.is_empty() {
            url.query_pairs_mut().extend_pairs(params);
        }
        Ok(url)
    }

    /// One page of a listing. `envelope` must be in the body; `extra_envelopes` may be absent.
    /// The page keeps its text: records are parsed as they are read ([`ListingPage::records`]).
    pub async fn get_listing_page(&self, url: &Url, envelope: &str, extra_envelopes: &[&str]) -> Result<ListingPage> {
        let request = describe(url);
        let parse = |text: String, next: Option<Url>| {
            ListingPage::new(text, envelope, extra_envelopes, request.clone(), next).map_err(|e| self.bad_body(url, e))
        };
        self.get(url, &parse).await
    }

    /// GETs `url` as a JSON object, waiting out 429s and retrying transient failures.
    /// Returns the body and the next page's URL (with our own query parameters kept).
    pub async fn get_json(&self, url: &Url) -> Result<(Map<String, Value>, Option<Url>)> {
        let parse = |text: String, next: Option<Url>| match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(map)) => Ok((map, next)),
            Ok(other) => {
                let message = format!("body is a JSON {} where an object was expected", json_kind(&other));
                Err(self.bad_body(url, BodyError::Shape(message)))
            }
            Err(e) => Err(self.bad_body(url, BodyError::Garbled(e.to_string()))),
        };
        self.get(url, &parse).await
    }

    /// What a body that cannot be read means: a cut or garbled body is what a flaky proxy or
    /// connection produces (try again); a well-formed one of the wrong shape is Capsule's answer.
    fn bad_body(&self, url: &Url, error: BodyError) -> Attempt {
        let request = describe(url);
        match error {
            BodyError::Garbled(message) => Attempt::Transient(SyncError::Transient {
                request,
                message: format!("body is not valid JSON: {message}"),
            }),
            BodyError::Shape(message) => Attempt::Fatal(SyncError::BadResponse { request, message }),
        }
    }

    /// GETs `url`, waiting out 429s and retrying transient failures, and reads the body with
    /// `parse` (given the text and the next page's URL, with our own query parameters kept).
    async fn get<T>(
        &self,
        url: &Url,
        parse: &(dyn Fn(String, Option<Url>) -> std::result::Result<T, Attempt> + Sync),
    ) -> Result<T> {
        let options = &self.inner.options;
        let mut rate_waits = 0;
        let mut token_reread = false;
        loop {
            // A retry whose backoff would outlive the deadline is not slept: the request pauses.
            let cut = std::sync::atomic::AtomicU64::new(0);
            let retries = std::sync::atomic::AtomicU32::new(0);
            let schedule = backon::BackoffBuilder::build(retry::backoff(&options.retry)).take_while(|wait| {
                let fits = !self.outlives_deadline(*wait);
                if !fits {
                    cut.store(wait.as_millis() as u64, Ordering::Relaxed);
                }
                fits
            });
            let outcome = (|| async { self.attempt(url).await.and_then(|(text, next)| parse(text, next)) })
                .retry(schedule)
                .when(|e| matches!(e, Attempt::Transient(_)))
                .notify(|e, wait| {
                    self.counters.retries.fetch_add(1, Ordering::Relaxed);
                    if let Attempt::Transient(error) = e {
                        let fields = serde_json::json!({"wait_ms": wait.as_millis() as u64});
                        self.warn(Event::CapsuleRetry, format!("retrying: {error}"), fields);
                        let attempt = retries.fetch_add(1, Ordering::Relaxed) + 1;
                        let (of, error) = (options.retry.max_retries, retry::cause(error));
                        self.report(Activity::Retrying { attempt, of, wait, error });
                    }
                })
                .await;
            match outcome {
                Ok(answer) => return Ok(answer),
                Err(Attempt::RateLimited(wait)) if rate_waits < options.max_rate_limit_waits => {
                    rate_waits += 1;
                    self.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
                    self.wait_for_window(url, wait, "429 from Capsule").await?;
                }
                Err(Attempt::RateLimited(_)) => {
                    return Err(SyncError::Unavailable {
                        request: describe(url),
                        attempts: rate_waits + 1,
                        last: "still rate limited (429) after waiting for every reset".into(),
                    });
                }
                Err(Attempt::Transient(last)) => match cut.load(Ordering::Relaxed) {
                    0 => return Err(self.outage(url, last)),
                    wait_ms => return Err(self.retry_later(url, last, Duration::from_millis(wait_ms))),
                },
                Err(Attempt::Fatal(SyncError::Auth { .. })) if !token_reread && self.inner.tokens.is_some() => {
                    // The token expired or was rotated under us: read it again (OAuth: refresh) once.
                    token_reread = true;
                    self.reread_token().await?;
                }
                Err(Attempt::Fatal(error)) => return Err(error),
            }
        }
    }

    /// A retry whose backoff would outlive the deadline: the run pauses and retries then.
    fn retry_later(&self, url: &Url, last: SyncError, wait: Duration) -> SyncError {
        let request = describe(url);
        let until = capsule_core::from_now(wait);
        let fields = serde_json::json!({"request": request, "wait_ms": wait.as_millis() as u64});
        self.warn(Event::CapsuleThrottled, format!("{last}: retrying after {until}, in the next invocation"), fields);
        SyncError::Throttled {
            until,
            reason: format!("{request} failed ({last}) and its retry would outlive this invocation"),
            failing: Some(request),
        }
    }

    /// Waits in place for a short rate-limit wait; a long one becomes [`SyncError::Throttled`].
    async fn wait_for_window(&self, url: &Url, wait: Duration, why: &str) -> Result<()> {
        let fields = serde_json::json!({"request": describe(url), "wait_ms": wait.as_millis() as u64});
        if wait > self.inner.options.max_inline_wait || self.outlives_deadline(wait) {
            let until = capsule_core::from_now(wait);
            self.warn(Event::CapsuleThrottled, format!("{why}: the next request must wait until {until}"), fields);
            let reason = format!("{why}: the token's rate-limit budget is spent until the window resets");
            return Err(SyncError::Throttled { until, reason, failing: None });
        }
        self.warn(Event::CapsuleRateLimited, format!("{why}: waiting for the rate-limit window to reset"), fields);
        self.report(Activity::RateLimitWait { until: capsule_core::from_now(wait) });
        tokio::time::sleep(wait).await;
        Ok(())
    }

    /// Every retry is spent: fail, or (when configured) pause the run until Capsule recovers.
    fn outage(&self, url: &Url, last: SyncError) -> SyncError {
        let attempts = self.inner.options.retry.max_retries + 1;
        match self.inner.options.outage_pause {
            Some(pause) => SyncError::Throttled {
                until: capsule_core::from_now(pause),
                reason: format!("Capsule kept failing for {} ({attempts} attempts: {last})", describe(url)),
                failing: Some(describe(url)),
            },
            None => SyncError::Unavailable { request: describe(url), attempts, last: last.to_string() },
        }
    }

    async fn reread_token(&self) -> Result<()> {
        let Some(tokens) = &self.inner.tokens else { return Ok(()) };
        let token = tokens.refresh().await?;
        *self.inner.token.write().unwrap() = token;
        self.warn(Event::CapsuleTokenReread, "Capsule refused the token: read it again".into(), Value::Null);
        Ok(())
    }

    /// Claims one request from the token's budget, waiting in place for short waits.
    async fn claim(&self, url: &Url) -> Result<()> {
        let (policy, budget) = (self.inner.options.budget, &self.inner.budget);
        loop {
            let known = self.inner.known.lock().unwrap().clone();
            let (claim, stored) = budget.store.claim(&budget.key, &policy, epoch_seconds(), known.as_ref()).await?;
            *self.inner.known.lock().unwrap() = stored;
            match claim {
                Claim::Granted => return Ok(()),
                Claim::WaitUntil(reset) => {
                    let wait = until_epoch(reset);
                    self.wait_for_window(url, wait, "the token's share of this rate-limit window is spent").await?;
                }
            }
        }
    }

    /// Feeds a response's rate-limit headers to the shared budget (a write only when they say
    /// more than the budget knows).
    async fn observe(&self, status: RateLimitStatus) {
        *self.inner.last_status.lock().unwrap() = Some(status);
        let policy = self.inner.options.budget;
        let known = self.inner.known.lock().unwrap().clone();
        if RateBudget::observe(known.as_ref(), &status, &policy).is_none() {
            return;
        }
        let change = |current: Option<&RateBudget>| RateBudget::observe(current, &status, &policy);
        match self.inner.budget.store.update_budget(&self.inner.budget.key, &change).await {
            Ok(stored) => *self.inner.known.lock().unwrap() = stored,
            Err(e) => tracing::warn!(event = Event::RateBudgetNotUpdated.as_str(), error = %e),
        }
    }

    /// The body, read a chunk at a time and refused past [`ClientOptions::max_body_bytes`]
    /// (announced or streamed): nothing larger than the limit is ever held.
    async fn read_body(&self, mut response: reqwest::Response, request: &str) -> std::result::Result<Vec<u8>, Attempt> {
        let limit = self.inner.options.max_body_bytes;
        let too_large = |size: String| {
            Attempt::Fatal(SyncError::BadResponse {
                request: request.to_string(),
                message: format!("the response body ({size}) is larger than the {limit}-byte limit"),
            })
        };
        if let Some(length) = response.content_length().filter(|l| *l > limit as u64) {
            return Err(too_large(format!("{length} bytes announced")));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| retry::classify_transport(&e, request))? {
            if body.len() + chunk.len() > limit {
                return Err(too_large(format!("over {limit} bytes sent")));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// A request that could not be sent: retried, unless Capsule has never answered this client
    /// and the failure points at the setup (the first request fails at once, with the fix).
    fn classify_transport(&self, error: &reqwest::Error, url: &Url, request: &str) -> Attempt {
        if !self.inner.answered.load(Ordering::Relaxed)
            && let Some((problem, fix)) = retry::setup_problem(error)
        {
            return Attempt::Fatal(SyncError::Unreachable { url: url.origin().ascii_serialization(), problem, fix });
        }
        retry::classify_transport(error, request)
    }

    async fn attempt(&self, url: &Url) -> std::result::Result<(String, Option<Url>), Attempt> {
        let inner = &self.inner;
        self.claim(url).await.map_err(Attempt::Fatal)?;
        if let Some(tokens) = &inner.tokens {
            // Providers cache the token and refresh it near its expiry (OAuth).
            *inner.token.write().unwrap() = tokens.token().await.map_err(Attempt::Fatal)?;
        }
        let token = inner.token.read().unwrap().clone();
        let request = describe(url);
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let response = inner
            .http
            .get(url.clone())
            .bearer_auth(token.expose_secret())
            .header(ACCEPT, "application/json")
            .header(USER_AGENT, concat!("capsule-sync/", env!("CARGO_PKG_VERSION")))
            .send()
            .await
            .map_err(|e| self.classify_transport(&e, url, &request))?;
        inner.answered.store(true, Ordering::Relaxed);
        let status = response.status();
        let headers = response.headers().clone();
        if let Some(s) = RateLimitStatus::from_headers(&headers) {
            self.observe(s).await;
        }
        let bytes = self.read_body(response, &request).await?;
        tracing::debug!(
            event = Event::CapsuleRequest.as_str(),
            %request,
            status = status.as_u16(),
            bytes = bytes.len(),
            ms = started.elapsed().as_millis() as u64
        );
        match classify_status(status) {
            StatusClass::Success => {}
            StatusClass::RateLimited => {
                // Until the reported reset (the budget now knows the window is spent).
                let wait = RateLimitStatus::from_headers(&headers)
                    .map_or(Duration::from_secs(30), |s| s.until_reset(SystemTime::now()).max(Duration::from_secs(1)));
                return Err(Attempt::RateLimited(wait));
            }
            StatusClass::Auth => {
                let challenge = headers.get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or("");
                let mut detail = error_message(&bytes);
                if !challenge.is_empty() {
                    detail = format!("{detail} (WWW-Authenticate: {challenge})");
                }
                return Err(Attempt::Fatal(SyncError::Auth { status: status.as_u16(), detail, hint: AUTH_HINT }));
            }
            StatusClass::Transient => {
                let message = format!("HTTP {}: {}", status.as_u16(), error_message(&bytes));
                return Err(Attempt::Transient(SyncError::Transient { request, message }));
            }
            StatusClass::Rejected => {
                let message = error_message(&bytes);
                return Err(Attempt::Fatal(SyncError::Rejected { request, status: status.as_u16(), message }));
            }
        }
        // A cut or garbled body is what a flaky proxy or connection produces: try again.
        let body = String::from_utf8(bytes).map_err(|e| {
            let message = format!("body is not valid UTF-8 ({} bytes): {}", e.as_bytes().len(), e.utf8_error());
            Attempt::Transient(SyncError::Transient { request, message })
        })?;
        let next = headers
            .get_all(LINK)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(next_link)
            .map(|next| with_own_params(next, url));
        if let Some(next) = &next {
            access::check_link(next, url).map_err(Attempt::Fatal)?;
        }
        Ok((body, next))
    }
}

fn epoch_seconds() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64
}

/// How long until the epoch second `at` begins (a little after, so the window has surely reset).
fn until_epoch(at: i64) -> Duration {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    Duration::from_secs(at.max(0) as u64).saturating_sub(now) + Duration::from_millis(50)
}

/// `GET /parties?page=2&perPage=100` — the request without scheme and host, for messages.
fn describe(url: &Url) -> String {
    match url.query() {
        Some(q) => format!("GET {}?{q}", url.path()),
        None => format!("GET {}", url.path()),
    }
}

/// The message of a Capsule error body (`{"message": …, "errors": [...]}` or `{"error": …}`).
fn error_message(bytes: &[u8]) -> String {
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(bytes) else {
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(ERROR_BODY_CHARS)]).trim().to_string();
        return if text.is_empty() { "no body".into() } else { text };
    };
    let mut message =
        body.get("message").or_else(|| body.get("error")).and_then(Value::as_str).unwrap_or("no message").to_string();
    if let Some(Value::Array(errors)) = body.get("errors") {
        let details: Vec<&str> = errors.iter().filter_map(|e| e.get("message").and_then(Value::as_str)).collect();
        if !details.is_empty() {
            message = format!("{message}: {}", details.join("; "));
        }
    }
    truncate_chars(message, ERROR_BODY_CHARS)
}

/// `text` cut to `max` characters (with a mark that it was).
fn truncate_chars(text: String, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}… (truncated)", &text[..at]),
        None => text,
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_read_both_documented_shapes() {
        let m = error_message(br#"{"message":"Validation Failed","errors":[{"message":"since is required"}]}"#);
        assert_eq!(m, "Validation Failed: since is required");
        assert_eq!(error_message(br#"{"error":"rate limit reached"}"#), "rate limit reached");
        assert_eq!(error_message(b"<html>oops</html>"), "<html>oops</html>");
        assert_eq!(error_message(b""), "no body");
    }
}
