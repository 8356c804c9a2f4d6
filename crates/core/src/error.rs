//! One error type for the engine. Every error says whose fault it is and whether a retry could
//! help, so callers (the CLI's exit message, the Lambda `Diagnostic`, run records) need not guess.
//! Messages never contain secrets: tokens are held in `SecretString` and never formatted.

use std::fmt;

/// Who has to act to fix an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fault {
    /// The operator: bad configuration, a rejected token, an invalid request they asked for.
    User,
    /// Something outside us: Capsule, the network, AWS.
    External,
    /// A bug or broken invariant in capsule-sync.
    Internal,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fault::User => "user",
            Fault::External => "external",
            Fault::Internal => "internal",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Capsule answered 401 or 403.
    #[error("Capsule rejected the API token (HTTP {status}): {detail}. {hint}")]
    Auth { status: u16, detail: String, hint: &'static str },

    /// Capsule refused the request itself (400, 404, 405, 422): retrying the same request won't help.
    #[error("Capsule refused {request} (HTTP {status}): {message}")]
    Rejected { request: String, status: u16, message: String },

    /// Capsule or the network kept failing after every retry.
    #[error("Capsule API unavailable for {request} after {attempts} attempts: {last}")]
    Unavailable { request: String, attempts: u32, last: String },

    /// The first request never reached Capsule (connection refused, host unknown, TLS handshake
    /// failed): a wrong setup, not an outage, so it is not retried. Once Capsule has answered,
    /// the same failures are transient.
    #[error("cannot reach Capsule at {url}: {problem}. Fix: {fix}")]
    Unreachable { url: String, problem: String, fix: &'static str },

    /// One attempt failed in a way a retry may fix (5xx, timeout, dropped connection, cut body).
    #[error("transient failure on {request}: {message}")]
    Transient { request: String, message: String },

    /// A 200 answer that is not what the API documents (missing envelope key, wrong types).
    #[error("unexpected response from {request}: {message}")]
    BadResponse { request: String, message: String },

    /// Invalid configuration or arguments.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// The token could not be read (missing env var, unreadable file, bad secret document).
    #[error("credentials: {0}")]
    Credentials(String),

    /// Another run of the same (integration, table) holds the lease.
    /// `until`: when the lease expires, and `holder`: who holds it (None: the lease was gone by the time the refusal was read).
    #[error("{integration}/{table} is being synced by {} (lease until {})",
            .holder.as_ref().map_or_else(|| "another run".to_string(), |h| format!("run {h}")),
            .until.map_or_else(|| "just now".to_string(), |t| t.to_rfc3339()))]
    LeaseHeld {
        integration: String,
        table: String,
        holder: Option<crate::ports::LeaseOwner>,
        until: Option<chrono::DateTime<chrono::Utc>>,
    },

    /// The state store (state file, DynamoDB) failed or refused a conditional write.
    #[error("state store: {0}")]
    State(String),

    /// The run's lease is no longer its own (taken over, or not renewed in time: self-fenced):
    /// it may write nothing more.
    #[error("lease lost: {0}")]
    LeaseLost(String),

    /// Writing output (local files, S3) failed.
    #[error("output: {0}")]
    Output(String),

    /// Nothing can be sent to Capsule before `until` (the token's rate-limit budget is spent, or
    /// Capsule kept failing): longer than this process waits in place, so the run checkpoints and
    /// resumes then.
    /// `failing` names the request when it is Capsule failing (not a rate-limit wait): such
    /// pauses are counted, and a run whose same request keeps failing ends.
    #[error("{reason}; resuming at {until}")]
    Throttled { until: chrono::DateTime<chrono::Utc>, reason: String, failing: Option<String> },

    /// A duplicate or out-of-date invocation of a run (an event delivered twice, a continuation
    /// the run has moved past): refused without writing or deleting anything.
    #[error("{0}")]
    Superseded(String),

    /// The table's bookmark changed under a running run (dropped for a backfill): its commit
    /// was refused; the next run starts from the new bookmark.
    #[error("{0}")]
    BookmarkMoved(String),

    /// The run tried as often as it may (killed every time, or one request failing in every
    /// invocation) and ends failed; a retry of the same thing would fail the same way.
    #[error("gave up: {0}")]
    GaveUp(String),

    /// A broken invariant.
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = SyncError> = std::result::Result<T, E>;

impl SyncError {
    pub fn fault(&self) -> Fault {
        match self {
            SyncError::Auth { .. }
            | SyncError::Config(_)
            | SyncError::Credentials(_)
            | SyncError::Unreachable { .. } => Fault::User,
            SyncError::Rejected { status, .. } if *status == 404 => Fault::Internal,
            SyncError::Rejected { .. } => Fault::User,
            SyncError::Unavailable { .. }
            | SyncError::Transient { .. }
            | SyncError::BadResponse { .. }
            | SyncError::LeaseHeld { .. }
            | SyncError::State(_)
            | SyncError::LeaseLost(_)
            | SyncError::Output(_)
            | SyncError::Throttled { .. }
            | SyncError::Superseded(_)
            | SyncError::GaveUp(_)
            | SyncError::BookmarkMoved(_) => Fault::External,
            SyncError::Internal(_) => Fault::Internal,
        }
    }

    /// Whether running the same thing again later could succeed without anyone acting.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            SyncError::Unavailable { .. }
                | SyncError::Transient { .. }
                | SyncError::LeaseHeld { .. }
                | SyncError::State(_)
                | SyncError::Output(_)
                | SyncError::Throttled { .. }
        )
    }

    /// A short stable name for logs, run records and Lambda's `errorType`.
    pub fn error_type(&self) -> &'static str {
        match self {
            SyncError::Auth { .. } => "CapsuleAuthError",
            SyncError::Rejected { .. } => "CapsuleRequestRejected",
            SyncError::Unavailable { .. } => "CapsuleUnavailable",
            SyncError::Unreachable { .. } => "CapsuleUnreachable",
            SyncError::Transient { .. } => "CapsuleTransientError",
            SyncError::BadResponse { .. } => "CapsuleBadResponse",
            SyncError::Config(_) => "ConfigError",
            SyncError::Credentials(_) => "CredentialsError",
            SyncError::LeaseHeld { .. } => "LeaseHeld",
            SyncError::State(_) => "StateStoreError",
            SyncError::LeaseLost(_) => "LeaseLost",
            SyncError::Output(_) => "OutputError",
            SyncError::Throttled { .. } => "CapsuleThrottled",
            SyncError::Superseded(_) => "StaleInvocation",
            SyncError::BookmarkMoved(_) => "BookmarkMoved",
            SyncError::GaveUp(_) => "GaveUp",
            SyncError::Internal(_) => "InternalError",
        }
    }
}
