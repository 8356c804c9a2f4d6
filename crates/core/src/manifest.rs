//! The run manifest: what a table run wrote, written after every part is durable and before the
//! bookmark moves. A loader can trust that the files it lists are the complete run.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::catalog::Replication;
use crate::integration::RunId;

/// Part file compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Gzip,
    None,
}

impl Compression {
    pub fn extension(self) -> &'static str {
        match self {
            Compression::Gzip => "ndjson.gz",
            Compression::None => "ndjson",
        }
    }
}

/// Requests one table run made (a snapshot of the client's counters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestStats {
    pub requests: u64,
    pub retries: u64,
    pub rate_limited: u64,
}

/// One part file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartFile {
    pub key: String,
    pub rows: u64,
    pub bytes: u64,
}

/// `_meta/<integration>/runs/<run_id>/<table>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunManifest {
    pub integration: String,
    pub table: String,
    pub run_id: RunId,
    pub replication: Replication,
    pub compression: Compression,
    /// T0: taken before the first request; rows are as of this instant or later.
    pub extracted_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// The `since` sent (incremental tables and deleted feeds).
    pub since: Option<DateTime<Utc>>,
    pub bookmark_before: Option<DateTime<Utc>>,
    pub bookmark_after: Option<DateTime<Utc>>,
    /// Record columns written (added and metadata columns come on top).
    pub columns: Vec<String>,
    pub files: Vec<PartFile>,
    pub rows: u64,
    pub bytes: u64,
    #[serde(flatten)]
    pub requests: RequestStats,
    /// Fields Capsule returned that the catalog doesn't know (schema drift to look at).
    pub unknown_fields: Vec<String>,
    /// Columns that received values not of their catalog type (written as null; see
    /// `engine::coerce`). Empty when every value fit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub type_mismatches: Vec<String>,
    /// Full tables: when the whole table was last read from Capsule (this run's T0, or for a
    /// recent-window run the whole read its snapshot descends from).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_refresh_at: Option<DateTime<Utc>>,
    /// A changed-parents table with a recent window (tracks): when each slice of its parents was
    /// last all asked (see `engine::recent::Slices`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slices_refreshed_at: Option<Vec<DateTime<Utc>>>,
    /// A fan-out table whose parents came from another table's snapshot of the same sync (tracks
    /// from tasks'): that snapshot's T0, the instant the discovery saw the account at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovered_at: Option<DateTime<Utc>>,
    /// A recent-window run: what it read and what it carried over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recent_window: Option<WindowSummary>,
    /// A hook run: the REST hook deliveries its rows came in (no bookmark, no request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<HookSummary>,
}

/// What a hook run landed: rows of REST hook deliveries received between two instants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookSummary {
    pub deliveries: u64,
    pub first_received_at: DateTime<Utc>,
    pub last_received_at: DateTime<Utc>,
}

/// How a recent-window run made its snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSummary {
    /// Records at or after this were read from Capsule (the previous run's T0 less the lookback).
    pub cutoff: DateTime<Utc>,
    /// The run whose older rows were carried over.
    pub base_run_id: RunId,
    /// Rows carried over from it.
    pub carried_rows: u64,
}

/// A manifest as stored: one line of JSON (warehouses that read manifests as tables — BigQuery,
/// Athena — want one object per line).
pub fn manifest_body(manifest: &RunManifest) -> Bytes {
    let mut body = serde_json::to_vec(manifest).unwrap_or_default();
    body.push(b'\n');
    Bytes::from(body)
}

/// The run's files as a Redshift `COPY … MANIFEST` file, each named by `locate` (its `s3://`
/// URL on S3). Every file is mandatory: a missing one fails the load rather than loading part
/// of a run.
pub fn redshift_manifest(manifest: &RunManifest, locate: impl Fn(&str) -> String) -> Bytes {
    let entries: Vec<serde_json::Value> =
        manifest.files.iter().map(|f| json!({"url": locate(&f.key), "mandatory": true})).collect();
    let mut body = serde_json::to_vec(&json!({ "entries": entries })).unwrap_or_default();
    body.push(b'\n');
    Bytes::from(body)
}
