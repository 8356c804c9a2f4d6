//! Stored documents — integrations, bookmarks, leases, checkpoints, run and dispatch records —
//! the schema version each is written with, and the one place where a document an older
//! capsule-sync wrote is brought up to date before it is read.
//!
//! Both state stores go through here: DynamoDB keeps the version in each item's `schema`
//! attribute beside its `doc`, the state file in its top-level `version`. Version 0 is a
//! DynamoDB item written before the version was recorded; it has the shape of version 1 (every
//! field added since the first release has a default: a bookmark's `generation` 0, a lease's
//! `attempt` 0, …), so its step changes nothing. A document of a newer version than this build
//! knows is refused with an error naming it, never half-read: an older binary (a rollback)
//! would otherwise drop the fields it does not know on its next write.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::integration::Integration;
use crate::ports::{Bookmark, Checkpoint, DispatchRecord, Lease, TableRunRecord};
use crate::{Result, SyncError};

/// The schema version this build writes and reads up to.
pub const SCHEMA_VERSION: u32 = 1;

/// The kinds of stored document (what a migration step applies to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Integration,
    Bookmark,
    Lease,
    Checkpoint,
    RunRecord,
    Dispatch,
}

/// A type stored as a document.
pub trait Stored: Serialize + DeserializeOwned {
    const KIND: Kind;
}

macro_rules! stored {
    ($($document:ty => $kind:ident),* $(,)?) => {
        $(impl Stored for $document {
            const KIND: Kind = Kind::$kind;
        })*
    };
}

stored! {
    Integration => Integration,
    Bookmark => Bookmark,
    Lease => Lease,
    Checkpoint => Checkpoint,
    TableRunRecord => RunRecord,
    DispatchRecord => Dispatch,
}

/// Refuses what a newer capsule-sync wrote. `what` names the document or file for the error.
pub fn check_version(what: &str, version: u32) -> Result<()> {
    if version > SCHEMA_VERSION {
        return Err(SyncError::State(format!(
            "{what} was written by a newer capsule-sync (schema version {version}; this one reads up to \
             {SCHEMA_VERSION}): run that version or newer"
        )));
    }
    Ok(())
}

/// Brings a `kind` document written with schema `from` up to [`SCHEMA_VERSION`], one step per
/// version. Every migration there will ever be is a step here.
#[expect(unused_variables, reason = "the first step that reshapes a document uses `doc`")]
pub fn upgrade(kind: Kind, doc: &mut Value, from: u32) {
    for step in from..SCHEMA_VERSION {
        match (step, kind) {
            // 0 → 1: the version is recorded; the shape is unchanged.
            (0, _) => {}
            (step, kind) => unreachable!("no migration from schema {step} for {kind:?}"),
        }
    }
}

/// Reads a stored document written with schema `version` (None: before versions were
/// recorded). `what` names it for errors (a DynamoDB key, a file).
pub fn decode<T: Stored>(what: &str, version: Option<u32>, text: &str) -> Result<T> {
    let version = version.unwrap_or(0);
    check_version(what, version)?;
    if version == SCHEMA_VERSION {
        // Nothing to upgrade: read straight into the type, without a `Value` in between.
        return serde_json::from_str(text).map_err(|e| SyncError::State(format!("{what} is not valid: {e}")));
    }
    let mut doc: Value =
        serde_json::from_str(text).map_err(|e| SyncError::State(format!("{what} is not valid JSON: {e}")))?;
    upgrade(T::KIND, &mut doc, version);
    serde_json::from_value(doc).map_err(|e| SyncError::State(format!("{what} is not valid: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_from_before_versions_reads_and_a_newer_one_is_refused() {
        let text = r#"{"last_run_started":"2026-11-28T08:00:00Z","run_id":"20261128T080000Z-aaaaaa"}"#;
        let old: Bookmark = decode("INT#acme/BOOKMARK#parties", None, text).unwrap();
        assert_eq!((old.generation, old.backfill), (0, 0), "fields added since read as their defaults");
        let current: Bookmark = decode("INT#acme/BOOKMARK#parties", Some(SCHEMA_VERSION), text).unwrap();
        assert_eq!(current, old);

        let err = decode::<Bookmark>("INT#acme/BOOKMARK#parties", Some(SCHEMA_VERSION + 1), text).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("INT#acme/BOOKMARK#parties") && message.contains("newer capsule-sync"), "{message}");
        let err = decode::<Bookmark>("INT#acme/BOOKMARK#parties", Some(1), r#"{"run_id": 3}"#).unwrap_err();
        assert!(err.to_string().contains("INT#acme/BOOKMARK#parties is not valid"), "{err}");
    }
}
