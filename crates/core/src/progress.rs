//! What each table of a sync is doing as it happens: the activities the engine and the Capsule
//! client report, for a live view. A model only: the CLI draws it; Lambda reports nothing.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::ports::RunState;

/// One table's latest activity.
#[derive(Debug, Clone, PartialEq)]
pub enum Activity {
    /// Waiting for another table's run of this sync to end: its snapshot stands in for a
    /// listing this table would otherwise read.
    AwaitingSnapshot { of: &'static str },
    /// Reading pages: what it has read and written so far in this process.
    Reading { rows: u64, pages: u64, requests: u64 },
    /// Waiting in place for the token's rate-limit window to reset.
    RateLimitWait { until: DateTime<Utc> },
    /// A request failed; retry `attempt` of `of` is sent after `wait`.
    Retrying { attempt: u32, of: u32, wait: Duration, error: String },
    /// The run parked: checkpointed, continuing at `until` (in this process).
    Parked { until: DateTime<Utc> },
    /// The run ended.
    Finished { state: RunState, rows: u64 },
}

/// Told each activity of one table.
pub type ActivityFn = dyn Fn(Activity) + Send + Sync;

/// Told each activity of every table of a sync, with the table's name.
pub type TablesProgress = Arc<dyn Fn(&'static str, Activity) + Send + Sync>;
