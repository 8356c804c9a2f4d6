//! The run manifest: what a table run wrote, written after every part is durable and before the
//! bookmark moves. A loader can trust that the files it lists are the complete run.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Compression;
use crate::capsule::RequestStats;
use crate::catalog::Replication;
use crate::integration::RunId;

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
}
