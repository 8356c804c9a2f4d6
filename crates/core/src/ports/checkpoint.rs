//! Where a run stopped, stored for its next invocation: the cursor, the parking (`not_before`)
//! and the stalls that end a run which makes no progress.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::integration::RunId;
use crate::manifest::{PartFile, RequestStats};

use super::*;

/// Where a paused run resumes: the listing (or parent) and the page to read next.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Cursor {
    /// Index of the listing in the table's fetch plan.
    pub listing: usize,
    /// The fanned-out parent being read: (child path template, parent id).
    pub parent: Option<(String, i64)>,
    /// The next page to read; None = the start of the listing or parent.
    pub next_url: Option<String>,
    /// Re-reads of the current listing so far (deletions shifted its pages).
    #[serde(default)]
    pub pass: u32,
    /// When the current pass over the listing started.
    #[serde(default)]
    pub pass_started: Option<DateTime<Utc>>,
    /// Ids the deleted feed listed just before the pass's first page; others appearing by the
    /// end of the pass mean its pages shifted.
    #[serde(default)]
    pub baseline: Vec<i64>,
    /// Every page of the pass is read; only the check for shifted pages remains.
    #[serde(default)]
    pub checking: bool,
    /// The current pass's record counts (listings with no deleted feed).
    #[serde(default)]
    pub count: PassCount,
    /// Fan-out tables: the object holding the parents found so far (beside the run's manifest:
    /// 100k parents would not fit a DynamoDB item). Complete unless `discovery` is set; never
    /// rediscovered by a continuation.
    #[serde(default)]
    pub parents_key: Option<String>,
    /// Fan-out tables: discovery part way through.
    #[serde(default)]
    pub discovery: Option<Discovery>,
    /// Recent-window runs: how many of the previous snapshot's older rows were carried over,
    /// once they are (they go first, so a continuation never writes them twice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carried_rows: Option<u64>,
    /// Fan-out tables whose parents came from another table's snapshot of the same sync: that
    /// snapshot's T0 (what the discovery saw; the next recent read's cutoff starts from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovered_at: Option<DateTime<Utc>>,
}

/// Parent discovery of a fan-out table, part way through its listings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Discovery {
    /// Index of the discovery route being read.
    pub route: usize,
    /// Its next page; None = the start of the route.
    pub next_url: Option<String>,
    /// Re-reads of the route so far (deletions shifted its pages).
    #[serde(default)]
    pub pass: u32,
    /// The current pass's record counts.
    #[serde(default)]
    pub count: PassCount,
}

/// How a pass over a listing with no deleted feed notices deletions while it pages: it counts
/// the records the listing holds after its first page (when there are more pages), and compares
/// with what its pages showed by the end. Fewer means records were deleted from pages already
/// read, and offset paging may have skipped one. (A creation in the same pass can hide a
/// deletion from this count: the documented limit.)
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassCount {
    /// Records the listing held as the pass began; None when it fitted one page.
    pub at_start: Option<usize>,
    /// Records per full page (as the first page showed).
    pub per_page: usize,
    /// Pages read in this pass.
    pub pages: u32,
    /// Records on the latest page read.
    pub last_items: usize,
}

impl PassCount {
    pub fn read_page(&mut self, items: usize) {
        if self.pages == 0 {
            self.per_page = items;
        }
        self.pages += 1;
        self.last_items = items;
    }

    /// Whether the listing held fewer records by the end of the pass than at its start.
    pub fn shrank(&self) -> bool {
        let at_end = (self.pages.saturating_sub(1) as usize) * self.per_page + self.last_items;
        self.at_start.is_some_and(|start| at_end < start)
    }
}

/// What a continued run needs to carry on as the same run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub integration: String,
    pub table: String,
    pub run_id: RunId,
    /// The lease owner: the continuation takes the lease over as the same owner.
    pub owner: super::LeaseOwner,
    /// T0 of the run (becomes the bookmark on success).
    pub started_at: DateTime<Utc>,
    pub since: Option<DateTime<Utc>>,
    pub bookmark_before: Option<DateTime<Utc>>,
    pub cursor: Cursor,
    /// Parts already durable.
    pub parts: Vec<PartFile>,
    pub unknown_fields: Vec<String>,
    /// Columns that received values not of their type so far.
    #[serde(default)]
    pub type_mismatches: Vec<String>,
    /// Requests of the earlier invocations.
    pub requests: RequestStats,
    /// How many invocations this run has had so far; the next one is number `invocations + 1`.
    pub invocations: u32,
    /// Not to be resumed before this (the rate-limit window resets, Capsule recovers).
    #[serde(default)]
    pub not_before: Option<DateTime<Utc>>,
    /// Invocations in a row that failed (or were stranded) resuming from this checkpoint.
    #[serde(default)]
    pub failures: u32,
    /// The bookmark the run started from (its commit checks it is still there).
    #[serde(default)]
    pub bookmark_base: BookmarkBase,
    /// The integration's backfill count for the table when the run started (its bookmark carries it).
    #[serde(default)]
    pub backfill: u64,
    /// Invocations in a row that paused because the same request kept failing.
    #[serde(default, skip_serializing_if = "Stalls::is_none")]
    pub stalls: Stalls,
}

/// How many invocations in a row ended on the same failing request (a page that fails every
/// time: persistent 5xx, a malformed body): a checkpoint does not reset it, so the count
/// holds across continuations and the run ends once it reaches
/// the engine's `lifecycle::MAX_STALLED_INVOCATIONS`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Stalls {
    pub request: Option<String>,
    pub count: u32,
}

impl Stalls {
    pub fn is_none(&self) -> bool {
        self.count == 0
    }
}

impl Checkpoint {
    /// The sequence number of the invocation that resumes from it.
    pub fn next_invocation(&self) -> u32 {
        self.invocations + 1
    }
}

/// A checkpoint handed to a run's next invocation, and how long the lease waits for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Parking {
    pub checkpoint: Checkpoint,
    /// The parked lease expires then (after `not_before`, with time to take it).
    pub hold_until: DateTime<Utc>,
}
