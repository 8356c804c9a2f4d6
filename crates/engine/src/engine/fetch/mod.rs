//! Executes a table's fetch plan: page through its listings (or discover parents, then page
//! through each parent's children) and hand every row to the part writer. One code path for
//! all 22 tables; what differs is the catalog entry.
//!
//! A read can stop at any request: near the deadline (between pages), or when the request is
//! throttled (the token's rate-limit budget is spent, Capsule is down). Either way it returns
//! the cursor where the next invocation picks up, so no page is read twice within a run.

mod carry_over;
mod fan_out;
mod listing;
mod pager;

use std::time::Instant;

use chrono::{DateTime, Utc};
use url::Url;

use crate::engine::recent::RecentRead;
use crate::engine::row::RowBuilder;
use crate::output::PartWriter;
use capsule_client::CapsuleClient;
use capsule_core::catalog::{Fetch, TableSpec};
use capsule_core::integration::{FanOutMode, RunId};
use capsule_core::manifest::RunManifest;
use capsule_core::ports::{Cursor, ObjectSink};
use capsule_core::progress::{Activity, ActivityFn};
use capsule_core::runlog::RunLog;
use capsule_core::{Result, SyncError};
use fan_out::*;

pub(crate) use pager::Pager;

/// How an extraction ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Extracted {
    Done,
    /// Stopped: near the deadline (`not_before` None), or because nothing may be sent to Capsule
    /// before `not_before`. Resume at `cursor`.
    Parked {
        cursor: Box<Cursor>,
        not_before: Option<DateTime<Utc>>,
        /// The request Capsule kept failing, when that is why (not a rate-limit wait).
        failing: Option<String>,
    },
}

/// Why reading stopped early: a park (continued from the cursor) or a failure.
enum Halt {
    Park(Box<Cursor>, Option<Wait>),
    Fail(SyncError),
}

/// What a park waits for: an instant, and the request that kept failing if that is why.
struct Wait {
    pub(super) until: DateTime<Utc>,
    pub(super) failing: Option<String>,
}

impl From<SyncError> for Halt {
    fn from(e: SyncError) -> Halt {
        Halt::Fail(e)
    }
}

/// A request's error, as a halt: a throttled request parks the run at `cursor` (the request
/// is made again on resume); anything else fails it.
fn halt_at(error: SyncError, cursor: &Cursor) -> Halt {
    match error {
        SyncError::Throttled { until, failing, .. } => {
            Halt::Park(Box::new(cursor.clone()), Some(Wait { until, failing }))
        }
        other => Halt::Fail(other),
    }
}

/// A fanned-out parent, saved beside the checkpoint as `[child_path, entity, id]`. Ordered by
/// child path, then entity, then id: the order children are read in, and a cursor resumes at.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(from = "(String, Option<String>, i64)", into = "(String, Option<String>, i64)")]
struct Parent {
    /// Where its children are listed, with `{id}` for the parent's id.
    child_path: String,
    /// The parent's entity (`opportunities`, `kases`), where the children name it.
    entity: Option<String>,
    id: i64,
}

impl From<(String, Option<String>, i64)> for Parent {
    fn from((child_path, entity, id): (String, Option<String>, i64)) -> Parent {
        Parent { child_path, entity, id }
    }
}

impl From<Parent> for (String, Option<String>, i64) {
    fn from(parent: Parent) -> (String, Option<String>, i64) {
        (parent.child_path, parent.entity, parent.id)
    }
}

/// Everything an extraction needs.
pub(crate) struct Extraction<'a> {
    pub client: &'a CapsuleClient,
    pub sink: &'a dyn ObjectSink,
    pub integration: &'a str,
    pub run_id: &'a RunId,
    pub table: &'static TableSpec,
    pub since: Option<DateTime<Utc>>,
    /// The run continues from a bookmark (not a first load): see [`capsule_core::catalog::Membership`].
    pub from_bookmark: bool,
    /// A recent-window read ([`crate::engine::recent`]); None reads the whole table.
    pub recent: Option<RecentRead>,
    pub fan_out: FanOutMode,
    pub rows: RowBuilder,
    pub progress: Option<&'a ActivityFn>,
    /// Park (between pages) once this instant has passed.
    pub deadline: Option<Instant>,
    /// Where to start: the default cursor for a fresh run, a checkpoint's for a continuation.
    pub resume: Cursor,
    /// Pages read by this invocation: at least one before parking, so every invocation progresses.
    pub pages_read: u64,
    pub log: RunLog,
    /// T0 of the run.
    pub started: DateTime<Utc>,
    /// Another table's snapshot of this sync that stands in for the discovery listing, or why it
    /// cannot ([`crate::engine::snapshot::of_same_listing`]); a fresh run of a fan-out table only.
    pub listing_snapshot: Option<std::result::Result<RunManifest, String>>,
    /// The instant the parents were discovered at, when that snapshot's (its T0).
    pub discovered_at: Option<DateTime<Utc>>,
}

fn parse_cursor_url(url: &Option<String>) -> Result<Option<Url>> {
    url.as_deref()
        .map(|u| Url::parse(u).map_err(|e| SyncError::Internal(format!("checkpoint holds a bad URL `{u}`: {e}"))))
        .transpose()
}

impl Extraction<'_> {
    /// Tells the live view (if any) what has been read so far.
    fn report_reading(&self, rows: u64) {
        if let Some(progress) = self.progress {
            progress(Activity::Reading { rows, pages: self.pages_read, requests: self.client.stats().requests });
        }
    }

    /// Reads the table from the resume cursor to the end, or until it parks.
    pub async fn run(&mut self, writer: &mut PartWriter<'_>) -> Result<Extracted> {
        let resume = std::mem::take(&mut self.resume);
        let read = match self.table.fetch {
            Fetch::Listings(listings) => self.read_listings(listings, resume, writer).await,
            Fetch::FanOut { discover, exhaustive, envelope, parent_id_column, max_per_page } => {
                let routes = match self.fan_out {
                    FanOutMode::Exhaustive if !exhaustive.is_empty() => exhaustive,
                    _ => discover,
                };
                let children = Children { envelope, parent_id_column, max_per_page };
                self.read_fan_out(routes, children, resume, writer).await
            }
        };
        match read {
            Ok(()) => Ok(Extracted::Done),
            Err(Halt::Park(cursor, wait)) => Ok(Extracted::Parked {
                cursor,
                not_before: wait.as_ref().map(|w| w.until),
                failing: wait.and_then(|w| w.failing),
            }),
            Err(Halt::Fail(e)) => Err(e),
        }
    }

    fn should_park(&self) -> bool {
        self.pages_read > 0 && self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_are_saved_as_the_triples_they_were_and_keep_their_order() {
        let parent = |path: &str, entity: Option<&str>, id| Parent {
            child_path: path.into(),
            entity: entity.map(str::to_string),
            id,
        };
        let saved = r#"["/opportunities/{id}/tracks","opportunities",7]"#;
        assert_eq!(
            serde_json::to_string(&parent("/opportunities/{id}/tracks", Some("opportunities"), 7)).unwrap(),
            saved
        );
        assert_eq!(
            serde_json::from_str::<Parent>(saved).unwrap(),
            parent("/opportunities/{id}/tracks", Some("opportunities"), 7)
        );
        let mut parents = [parent("/b/{id}", None, 1), parent("/a/{id}", None, 9), parent("/a/{id}", None, 2)];
        parents.sort();
        let ids: Vec<i64> = parents.iter().map(|p| p.id).collect();
        assert_eq!(ids, [2, 9, 1], "by child path, then id, as the tuples sorted");
    }
}
